//! Helpers over objects in their JSON form, and the store key layout.

use bytes::Bytes;
use h8s_store::KeyValue;
use h8s_types::Resource;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The storage key prefix of a resource: `/registry/<group or core>/<plural>/`, plus
/// `<namespace>/` when `ns` is given. The group is the storage version's, so a kind
/// served in two groups (`events.k8s.io` Events) lives in one place.
pub fn prefix(r: &Resource, ns: Option<&str>) -> String {
    let group = r.storage.map_or(r.group, |(g, _, _)| g);
    let g = if group.is_empty() { "core" } else { group };
    match ns {
        Some(ns) => format!("/registry/{g}/{}/{ns}/", r.plural),
        None => format!("/registry/{g}/{}/", r.plural),
    }
}

/// The storage key of one object.
pub fn key(r: &Resource, ns: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(r, ns.filter(|_| r.namespaced)))
}

pub fn meta(o: &Value) -> Option<&Map<String, Value>> {
    o.get("metadata").and_then(Value::as_object)
}

/// `metadata`, created when missing or not an object.
pub fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.is_object() {
        *o = Value::Object(Map::new());
    }
    let m = o.as_object_mut().expect("object");
    let e = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    e.as_object_mut().expect("object")
}

pub fn meta_str<'a>(o: &'a Value, field: &str) -> &'a str {
    meta(o)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    meta_str(o, "name")
}
pub fn namespace(o: &Value) -> &str {
    meta_str(o, "namespace")
}
pub fn resource_version(o: &Value) -> &str {
    meta_str(o, "resourceVersion")
}
pub fn uid(o: &Value) -> &str {
    meta_str(o, "uid")
}

pub fn finalizers(o: &Value) -> Vec<String> {
    meta(o)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(o: &Value) -> bool {
    meta(o).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

/// Parses a stored value and sets `metadata.resourceVersion` from the revision.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut v, kv.mod_revision);
    Ok(v)
}

/// Sets `metadata.resourceVersion` to a store revision (the store keeps it out of values).
pub fn set_resource_version(o: &mut Value, rev: h8s_store::Revision) {
    meta_mut(o).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

/// Serialises an object for the store, without `resourceVersion`. Every write goes through
/// here, so it skips the field while serialising instead of copying the object first.
pub fn encode(o: &Value) -> Bytes {
    // A `Value` always serialises: its keys are strings and it holds no NaN.
    Bytes::from(serde_json::to_vec(&WithoutRv(o)).expect("a JSON value serialises"))
}

/// An object as stored: its `metadata` without `resourceVersion`.
struct WithoutRv<'a>(&'a Value);

/// `metadata` without `resourceVersion`.
struct MetaWithoutRv<'a>(&'a Map<String, Value>);

impl serde::Serialize for WithoutRv<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(m) = self.0 else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    out.serialize_entry(k, &MetaWithoutRv(meta))?
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        out.end()
    }
}

impl serde::Serialize for MetaWithoutRv<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| *k != "resourceVersion") {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// Checks (or fills in) `apiVersion` and `kind` against the URL's resource.
pub fn check_type_meta(res: &Resource, o: &mut Value) -> Result<(), ApiError> {
    let want_av = res.api_version();
    let m = o
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("apiVersion".into(), Value::String(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), Value::String(res.kind.into()));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
    }
    if let Some(md) = m.get("metadata") {
        if !md.is_object() && !md.is_null() {
            return Err(ApiError::bad_request(
                "metadata must be an object (ObjectMeta)",
            ));
        }
    }
    Ok(())
}

/// Value at a dotted path.
pub fn at<'a>(o: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(o, |v, seg| v.get(seg))
}

/// Sets the value at a dotted path, creating objects on the way.
pub fn set_at(o: &mut Value, dotted: &str, val: Value) {
    let mut cur = o;
    let segs: Vec<&str> = dotted.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let m = cur.as_object_mut().expect("object");
        if i == segs.len() - 1 {
            m.insert(seg.to_string(), val);
            return;
        }
        cur = m
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Everything but `metadata` and `status`: what a change to bumps `generation`.
pub fn spec_part(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let mut v = serde_json::json!({});
        set_at(&mut v, "spec.replicas", serde_json::json!(3));
        assert_eq!(at(&v, "spec.replicas"), Some(&serde_json::json!(3)));
    }

    /// What `encode` must equal: the object copied, its resourceVersion removed, serialised.
    fn encode_by_copy(o: &Value) -> Vec<u8> {
        let mut o = o.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        serde_json::to_vec(&o).unwrap()
    }

    #[test]
    fn encode_drops_only_the_resource_version() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "resourceVersion": "42", "labels": {"resourceVersion": "kept"}},
                   "data": {"resourceVersion": "kept too"}}),
            json!({"metadata": {"name": "no-rv"}, "spec": {"x": [1, 2, {"metadata": {"resourceVersion": "nested"}}]}}),
            json!({"metadata": "not an object", "a": 1}),
            json!({"kind": "NoMetadata"}),
            json!([1, 2, 3]),
        ];
        for o in &objects {
            assert_eq!(encode(o).as_ref(), encode_by_copy(o).as_slice(), "{o}");
        }
        let stored: Value = serde_json::from_slice(&encode(&objects[0])).unwrap();
        assert!(stored["metadata"].get("resourceVersion").is_none());
        assert_eq!(stored["metadata"]["labels"]["resourceVersion"], "kept");
    }

    #[test]
    fn decode_sets_the_revision() {
        let kv = KeyValue {
            key: "/registry/core/configmaps/default/a".into(),
            value: encode(&json!({"metadata": {"name": "a", "resourceVersion": "1"}})),
            create_revision: 3,
            mod_revision: 7,
        };
        assert_eq!(resource_version(&decode(&kv).unwrap()), "7");
    }
}
