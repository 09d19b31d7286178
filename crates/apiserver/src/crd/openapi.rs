//! OpenAPI from the definitions' schemas, as kube-apiserver publishes them: one v3
//! document per custom group version (listed in the `/openapi/v3` index next to the
//! built-in ones) and the custom kinds merged into `/openapi/v2`, so `kubectl explain`
//! and kubectl's server-side field validation work on custom resources. Built on demand
//! and cached until the served definitions change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use h8s_types::openapi::{self, CustomKind};
use serde_json::{json, Value};

use super::{CustomResource, Registry};

const META_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `/openapi/v2` as JSON and as protobuf.
type V2 = Arc<(Vec<u8>, Vec<u8>)>;

/// The documents for one state of the registry.
#[derive(Default)]
pub(crate) struct Docs {
    /// v3 documents by index key (`apis/g/v`): (hash, bytes).
    pub v3: BTreeMap<String, (String, Vec<u8>)>,
    /// The v3 index with the custom group versions.
    pub index: Vec<u8>,
    /// `/openapi/v2` (JSON, protobuf), built on first use.
    v2: Mutex<Option<V2>>,
}

/// The cache: the registry generation the documents were built for.
#[derive(Default)]
pub(crate) struct Cache(Mutex<Option<(u64, Arc<Docs>)>>);

/// The definition name kube-apiserver gives a custom kind: the group reversed, then the
/// version and kind (`com.example.stable.v1.CronTab`).
pub(crate) fn definition_name(group: &str, version: &str, kind: &str) -> String {
    let rev: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", rev.join("."))
}

/// A version's schema as published: `apiVersion`, `kind` and `metadata` (ObjectMeta)
/// filled in, CEL rules left out, the group-version-kind extension added.
fn published_schema(c: &CustomResource) -> Value {
    let mut s = strip(&c.version().raw_schema);
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    let props = s
        .as_object_mut()
        .map(|m| m.entry("properties").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = props {
        p.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
        );
        p.insert(
            "kind".into(),
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
        );
        p.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": META_REF}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
        );
    }
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": c.res.group, "version": c.res.version, "kind": c.res.kind}]);
    s
}

/// The schema without what OpenAPI clients must not see (CEL rules).
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "x-kubernetes-validations")
                .map(|(k, x)| (k.clone(), strip(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

fn kinds(all: &[Arc<CustomResource>]) -> Vec<CustomKind<'_>> {
    all.iter()
        .map(|c| CustomKind {
            res: c.res,
            name: definition_name(c.res.group, c.res.version, c.res.kind),
            schema: published_schema(c),
        })
        .collect()
}

fn build(reg: &Registry) -> Docs {
    let all = reg.all();
    let mut by_gv: BTreeMap<(String, String), Vec<Arc<CustomResource>>> = BTreeMap::new();
    for c in &all {
        by_gv
            .entry((c.res.group.to_string(), c.res.version.to_string()))
            .or_default()
            .push(c.clone());
    }
    let mut v3 = BTreeMap::new();
    let mut extra = Vec::new();
    for ((g, v), crs) in by_gv {
        let doc = openapi::custom_v3_document(&g, &v, &kinds(&crs));
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let h = openapi::content_hash(&bytes);
        let key = format!("apis/{g}/{v}");
        extra.push((key.clone(), h.clone()));
        v3.insert(key, (h, bytes));
    }
    Docs {
        index: openapi::v3_index_with(&extra),
        v3,
        v2: Mutex::new(None),
    }
}

impl Docs {
    /// `/openapi/v2` with the custom kinds (JSON, protobuf).
    pub(crate) fn v2(&self, reg: &Registry) -> V2 {
        let mut g = self.v2.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = &*g {
            return d.clone();
        }
        let all = reg.all();
        let d = Arc::new(openapi::v2_with_custom(&kinds(&all)));
        *g = Some(d.clone());
        d
    }
}

impl Registry {
    /// The custom OpenAPI documents, or `None` when no custom resource is served.
    pub(crate) fn openapi(&self) -> Option<Arc<Docs>> {
        let gen = self.generation();
        if self.all().is_empty() {
            return None;
        }
        let mut cache = self
            .openapi_cache()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((g, d)) = &*cache {
            if *g == gen {
                return Some(d.clone());
            }
        }
        let d = Arc::new(build(self));
        *cache = Some((gen, d.clone()));
        Some(d)
    }
}
