//! Per-kind behaviour the registry calls: validation, defaulting, the status a new
//! object starts with, and Table rendering. Kinds are data (the `h8s_types` table);
//! what differs per kind lives in `h8s_types` and is called from here.

use h8s_types::Resource;
use serde_json::{json, Value};

use crate::error::Cause;
use crate::obj;

fn causes(e: h8s_types::FieldErrors) -> Vec<Cause> {
    e.iter()
        .map(|f| Cause {
            reason: f.kind.reason().to_string(),
            message: f.body(),
            field: f.field.clone(),
        })
        .collect()
}

/// Field errors of an object about to be written: `old` on updates, `status` for
/// writes through the status subresource.
pub fn validate(res: &Resource, o: &Value, old: Option<&Value>, status: bool) -> Vec<Cause> {
    use h8s_types::validation as v;
    let r = match (old, status) {
        (None, _) => v::validate_create(res, o),
        (Some(old), false) => v::validate_update(res, o, old),
        (Some(old), true) => v::validate_status_update(res, o, old),
    };
    r.err().map(causes).unwrap_or_default()
}

/// Fills defaults a new or updated object gets.
pub fn default(res: &Resource, o: &mut Value) {
    h8s_types::defaults::apply(res, o);
}

/// Resets what a create may not set and derives what Kubernetes derives then: the
/// status a new object starts with (the status subresource owns it afterwards).
pub fn initial_status(res: &Resource, o: &mut Value) {
    // A node registers with its own status (the agent reports it at once).
    let keep = (res.group.is_empty() && res.kind == "Node")
        .then(|| o.get("status").cloned())
        .flatten();
    h8s_types::defaults::prepare_for_create(res, o);
    if let (Some(s), Some(m)) = (keep, o.as_object_mut()) {
        m.insert("status".into(), s);
    }
}

/// Whether writes to the object's spec bump `metadata.generation`.
pub fn tracks_generation(res: &Resource) -> bool {
    res.has_status
        && !matches!(
            res.kind,
            "Namespace" | "Node" | "PersistentVolume" | "PersistentVolumeClaim"
        )
}

/// Deletions of these kinds answer with the object rather than a `Status`.
pub fn returns_deleted_object(res: &Resource) -> bool {
    res.group.is_empty() && matches!(res.kind, "Pod" | "Service" | "Namespace")
}

/// A `meta.k8s.io/v1 Table` of objects.
// TODO(types): per-kind columns from h8s_types::table.
pub fn table(_res: &Resource, objs: &[Value], include_object: &str, with_columns: bool) -> Value {
    let now = obj::now_secs();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let created = obj::parse_rfc3339(obj::meta_str(o, "creationTimestamp"));
            let age = created
                .map(|c| obj::human_duration(now - c))
                .unwrap_or_else(|| "<unknown>".into());
            json!({"cells": [obj::name(o), age], "object": row_object(o, include_object)})
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = json!([
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ]);
    }
    t
}

/// The `object` of a Table row: `includeObject=Object` embeds the object,
/// `None` nothing, and the default (`Metadata`) a PartialObjectMetadata.
pub fn row_object(o: &Value, include_object: &str) -> Value {
    match include_object {
        "Object" => o.clone(),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}
