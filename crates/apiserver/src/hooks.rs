//! Per-kind behaviour the registry calls: validation, defaulting, the status a new
//! object starts with, and Table rendering. Kinds are data (the `h8s_types` table);
//! what differs per kind lives in `h8s_types` and is called from here.

use h8s_types::Resource;
use serde_json::Value;

use crate::error::Cause;

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

/// A `meta.k8s.io/v1 Table` of objects with the kind's kubectl columns.
pub fn table(res: &Resource, objs: &[Value], include_object: &str, list_meta: Value) -> Value {
    use h8s_types::table::IncludeObject;
    let include = match include_object {
        "Object" => IncludeObject::Object,
        "None" => IncludeObject::None,
        _ => IncludeObject::Metadata,
    };
    h8s_types::table::table(res, objs, &list_meta, include, std::time::SystemTime::now())
}
