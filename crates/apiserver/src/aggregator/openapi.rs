//! OpenAPI of aggregated APIs, as kube-aggregator publishes it: after each passed
//! availability check the aggregated server's `/openapi/v3/apis/<group>/<version>` and
//! `/openapi/v2` are fetched (as `system:kube-aggregator`, each at most [`MAX_SPEC`]
//! bytes) and kept with the backend. `/openapi/v3` lists the group version next to the
//! built-in and custom ones and serves the kept document; `/openapi/v2` merges the
//! backend's paths under `/apis/<group>/<version>` and the definitions this server does
//! not already have (kube-aggregator's merge keeps the first definition of a name too).
//! So `kubectl explain` and kubectl's schema checks work for aggregated kinds. A backend
//! that does not serve a document (or answers something that is not JSON) simply adds
//! nothing; an APIService that is not available adds nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Aggregator, Backend};
use crate::crd::Registry;
use crate::state::Api;

/// The largest OpenAPI document kept from an aggregated server.
pub const MAX_SPEC: usize = 16 * 1024 * 1024;

/// What one aggregated server publishes.
#[derive(Debug, PartialEq)]
pub(crate) struct Spec {
    /// Its v3 document of the group version: (content hash, bytes).
    pub v3: Option<(String, Bytes)>,
    /// Its `/openapi/v2`, only the paths of the group version kept.
    pub v2: Option<Value>,
}

/// `/openapi/v2` merged with the aggregated servers' (JSON, protobuf).
pub(crate) type MergedV2 = Arc<(Vec<u8>, Vec<u8>)>;

fn is_json_object(b: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(b)
        .ok()
        .filter(Value::is_object)
}

/// Fetches the documents of a backend that has just passed its check and keeps them;
/// a change makes the merged documents be built again.
pub(crate) async fn refresh(api: &Api, b: &Backend) {
    let agg = &api.aggregator;
    let v3_path = format!("/openapi/v3/apis/{}/{}", b.group, b.version);
    let v3 = match agg.fetch(api, b, &v3_path, MAX_SPEC).await {
        Ok(bytes) if is_json_object(&bytes).is_some() => {
            Some((h8s_types::openapi::content_hash(&bytes), bytes))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(apiservice = %b.name, error = %e, "no OpenAPI v3 from the aggregated server");
            None
        }
    };
    let v2 = match agg.fetch(api, b, "/openapi/v2", MAX_SPEC).await {
        Ok(bytes) => is_json_object(&bytes).map(|d| only_group_version(d, b)),
        Err(e) => {
            tracing::debug!(apiservice = %b.name, error = %e, "no OpenAPI v2 from the aggregated server");
            None
        }
    };
    let spec = Spec { v3, v2 };
    let mut cur = b.openapi.write().unwrap_or_else(|e| e.into_inner());
    if cur.as_deref() != Some(&spec) {
        *cur = Some(Arc::new(spec));
        agg.openapi_gen.fetch_add(1, Ordering::Relaxed);
    }
}

/// A v2 document with only the paths of the backend's group version.
fn only_group_version(mut d: Value, b: &Backend) -> Value {
    let root = format!("/apis/{}/{}", b.group, b.version);
    if let Some(Value::Object(p)) = d.get_mut("paths") {
        p.retain(|k, _| k == &root || k.starts_with(&format!("{root}/")));
    }
    d
}

impl Aggregator {
    /// The published documents of the available backends.
    fn specs(&self) -> Vec<(Arc<Backend>, Arc<Spec>)> {
        let mut v: Vec<_> = self
            .all()
            .into_iter()
            .filter(|b| b.available().is_ok())
            .filter_map(|b| {
                let s = b
                    .openapi
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()?;
                Some((b, s))
            })
            .collect();
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }

    /// The v3 index entries (`apis/g/v`, hash) of the aggregated group versions.
    pub(crate) fn v3_entries(&self) -> Vec<(String, String)> {
        self.specs()
            .iter()
            .filter_map(|(b, s)| {
                let (h, _) = s.v3.as_ref()?;
                Some((format!("apis/{}/{}", b.group, b.version), h.clone()))
            })
            .collect()
    }

    /// The v3 document of an aggregated group version (`apis/g/v`): (hash, bytes).
    pub(crate) fn v3_document(&self, key: &str) -> Option<(String, Bytes)> {
        let mut parts = key.strip_prefix("apis/")?.split('/');
        let (g, v) = (parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let b = self.get(g, v)?;
        b.available().ok()?;
        let s = b
            .openapi
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        s.v3.clone()
    }

    /// `/openapi/v2` with the aggregated servers' paths and definitions merged into
    /// `base` (this server's document, JSON), or `None` when no aggregated server
    /// publishes one. Cached until the custom resources or the aggregated documents change.
    pub(crate) fn merged_v2(
        &self,
        crds: &Registry,
        base: impl FnOnce() -> Vec<u8>,
    ) -> Option<MergedV2> {
        let specs = self.specs();
        if !specs.iter().any(|(_, s)| s.v2.is_some()) {
            return None;
        }
        let key = (crds.generation(), self.openapi_gen.load(Ordering::Relaxed));
        let mut cache = self.v2_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, d)) = &*cache {
            if *k == key {
                return Some(d.clone());
            }
        }
        let mut doc: Value = serde_json::from_slice(&base()).unwrap_or_default();
        for (_, s) in &specs {
            let Some(v2) = &s.v2 else { continue };
            merge(&mut doc, v2);
        }
        let d = Arc::new(h8s_types::openapi::v2_encode(&doc));
        *cache = Some((key, d.clone()));
        Some(d)
    }
}

/// Adds `from`'s paths and the definitions `into` lacks.
fn merge(into: &mut Value, from: &Value) {
    for section in ["paths", "definitions"] {
        let Some(Value::Object(src)) = from.get(section) else {
            continue;
        };
        let dst = match into.get_mut(section) {
            Some(Value::Object(m)) => m,
            _ => {
                into[section] = Value::Object(Map::new());
                let Some(Value::Object(m)) = into.get_mut(section) else {
                    continue;
                };
                m
            }
        };
        for (k, v) in src {
            dst.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_adds_paths_and_missing_definitions_only() {
        let mut base = json!({"paths": {"/api/v1": {"get": {}}},
            "definitions": {"io.k8s.A": {"type": "object"}}});
        let agg = json!({"paths": {"/apis/w.example.com/v1/flunders": {"get": {"x": 1}}},
            "definitions": {"io.k8s.A": {"type": "string"}, "com.example.Flunder": {"type": "object"}}});
        merge(&mut base, &agg);
        assert_eq!(base["paths"].as_object().unwrap().len(), 2);
        assert_eq!(base["definitions"]["io.k8s.A"]["type"], "object");
        assert_eq!(base["definitions"]["com.example.Flunder"]["type"], "object");
    }
}
