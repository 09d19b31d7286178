//! Per-kind behaviour the registry calls: validation, defaulting, the status a new
//! object starts with, and Table rendering. Kinds are data (the `h8s_types` table);
//! what differs per kind lives in `h8s_types` and is called from here.

use h8s_types::Resource;
use serde_json::{json, Value};

use crate::error::Cause;
use crate::obj;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kubernetes' rule for a kind's `metadata.name`.
// TODO(types): use h8s_types::validation once its per-kind name rules land.
pub fn validate_name(res: &Resource, name: &str) -> Option<Cause> {
    let (ok, msg) = match res.plural {
        "namespaces" | "services" | "networks" => (
            is_dns_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => (
            !name.contains('/') && !name.contains('%') && name != "." && name != "..",
            "may not contain '/' or '%' and may not be '.' or '..'",
        ),
        _ => (
            is_dns_subdomain(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
    };
    (!ok).then(|| Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{name}\": {msg}"),
        field: "metadata.name".into(),
    })
}

/// Field errors of an object about to be written (`old` on updates).
pub fn validate(res: &Resource, o: &Value, _old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(c) = validate_name(res, obj::name(o)) {
        causes.push(c);
    }
    // TODO(types): per-kind required fields and Network checks from h8s_types::validation.
    causes
}

/// Fills defaults a new or updated object gets.
pub fn default(res: &Resource, o: &mut Value) {
    if res.plural == "namespaces" && res.group.is_empty() {
        let name = obj::name(o).to_string();
        let m = obj::meta_mut(o);
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        let spec = obj::at(o, "spec.finalizers").cloned();
        if spec.is_none() {
            obj::set_at(o, "spec.finalizers", json!(["kubernetes"]));
        }
    }
}

/// The status a newly created object starts with (the status subresource owns it
/// afterwards): most kinds start empty, some with a phase.
pub fn initial_status(res: &Resource, o: &mut Value) {
    if !res.has_status {
        return;
    }
    let m = match o.as_object_mut() {
        Some(m) => m,
        None => return,
    };
    let status = match (res.group, res.kind) {
        ("", "Namespace") => Some(json!({"phase": "Active"})),
        ("", "Pod") => {
            let qos = "BestEffort";
            Some(json!({"phase": "Pending", "qosClass": qos}))
        }
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {
            Some(json!({"phase": "Pending"}))
        }
        ("", "Network") => Some(json!({"phase": "Pending"})),
        // A node registers with its own status.
        ("", "Node") => return,
        _ => None,
    };
    match status {
        Some(s) => m.insert("status".into(), s),
        None => m.remove("status"),
    };
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
