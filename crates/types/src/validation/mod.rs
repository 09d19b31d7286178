//! Validation of objects on create and update, as kube-apiserver's registry
//! strategies do it: name rules per kind, metadata syntax, required fields
//! with their paths, the important per-kind rules and immutable fields.
//!
//! Works on the JSON form (after defaulting), so a missing required field
//! becomes a field error with a path rather than a decoding failure.

mod errors;
mod kinds;
pub mod names;
mod network;
mod tenancy;

pub use errors::{ErrorType, FieldError, FieldErrors};
pub use kinds::{
    ADMISSION_REVIEW_VERSIONS, HIGHEST_USER_DEFINABLE_PRIORITY, MAX_MATCH_CONDITIONS,
    SYSTEM_PRIORITY_CLASSES,
};
pub use names::NameRule;
pub use network::{parse_cidr, Cidr};

use crate::resources::Resource;
use serde_json::Value;

/// Total size of all annotations on one object.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// How names of a kind are checked (`metadata.name`, `metadata.generateName`).
pub fn name_rule(r: &Resource) -> NameRule {
    match (r.group, r.kind) {
        ("", "Namespace") | ("", "Network") => NameRule::Dns1123Label,
        // A tenant's name is a label value (`tenancy.h8s.io/tenant=<name>`).
        ("tenancy.h8s.io", "Tenant") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => NameRule::PathSegment,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("certificates.k8s.io", _) => NameRule::PathSegment,
        // `v1.` is the core group's APIService.
        ("apiregistration.k8s.io", _) => NameRule::PathSegment,
        // IPv6 addresses are not subdomains; the kind checks the address itself.
        ("networking.k8s.io", "IPAddress") => NameRule::PathSegment,
        ("flowcontrol.apiserver.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Validates an object about to be created. Run after defaulting and after
/// the server has turned `generateName` into a name.
pub fn validate_create(r: &Resource, obj: &Value) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    if r.is_stored() {
        validate_object_meta(r, obj, &mut errs);
    }
    kinds::validate_kind(r, obj, None, &mut errs);
    errs.into_result()
}

/// Validates an update of `old` to `new` (the main resource, not a
/// subresource): everything [`validate_create`] checks, plus immutable fields.
pub fn validate_update(r: &Resource, new: &Value, old: &Value) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    validate_object_meta(r, new, &mut errs);
    validate_object_meta_update(new, old, &mut errs);
    kinds::validate_kind(r, new, Some(old), &mut errs);
    errs.into_result()
}

/// Validates a write through the status subresource: metadata rules and
/// the status fields h8s checks (phases and the like).
pub fn validate_status_update(r: &Resource, new: &Value, old: &Value) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    validate_object_meta(r, new, &mut errs);
    validate_object_meta_update(new, old, &mut errs);
    kinds::validate_status(r, new, Some(old), &mut errs);
    errs.into_result()
}

/// The object's name, for the 422 message.
pub fn object_name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr).and_then(Value::as_str)
}

/// Checks `metadata`: name or generateName per the kind's rule, namespace
/// presence, labels, annotations, finalizers and owner references.
pub fn validate_object_meta(r: &Resource, obj: &Value, errs: &mut FieldErrors) {
    let rule = name_rule(r);
    let name = str_at(obj, "/metadata/name").unwrap_or_default();
    let generate = str_at(obj, "/metadata/generateName").unwrap_or_default();
    if !generate.is_empty() {
        for m in rule.check(generate, true) {
            errs.push(FieldError::invalid("metadata.generateName", generate, &m));
        }
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for m in rule.check(name, false) {
            errs.push(FieldError::invalid("metadata.name", name, &m));
        }
    }
    let ns = str_at(obj, "/metadata/namespace").unwrap_or_default();
    if r.namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for m in names::dns1123_label(ns) {
                errs.push(FieldError::invalid("metadata.namespace", ns, &m));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        validate_labels(labels, "metadata.labels", errs);
    }
    if let Some(ann) = obj.pointer("/metadata/annotations") {
        validate_annotations(ann, "metadata.annotations", errs);
    }
    if let Some(fins) = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
    {
        let mut seen = Vec::new();
        for (i, f) in fins.iter().enumerate() {
            let path = format!("metadata.finalizers[{i}]");
            let Some(f) = f.as_str() else {
                errs.push(FieldError::invalid(&path, f.clone(), "must be a string"));
                continue;
            };
            for m in names::qualified_name(f) {
                errs.push(FieldError::invalid(&path, f, &m));
            }
            if seen.contains(&f) {
                errs.push(FieldError::duplicate(&path, f));
            }
            seen.push(f);
        }
    }
    if let Some(owners) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    {
        let mut controllers = 0;
        for (i, o) in owners.iter().enumerate() {
            let base = format!("metadata.ownerReferences[{i}]");
            for f in ["apiVersion", "kind", "name", "uid"] {
                if o.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    let detail = match f {
                        "apiVersion" => "version must not be empty",
                        "kind" => "kind must not be empty",
                        "name" => "name must not be empty",
                        _ => "uid must not be empty",
                    };
                    errs.push(FieldError::invalid(format!("{base}.{f}"), "", detail));
                }
            }
            if o.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                Value::Array(owners.clone()),
                "Only one reference can have Controller set to true",
            ));
        }
    }
}

/// Labels: qualified-name keys and label values.
pub fn validate_labels(labels: &Value, path: &str, errs: &mut FieldErrors) {
    let Some(map) = labels.as_object() else {
        if !labels.is_null() {
            errs.push(FieldError::invalid(path, labels.clone(), "must be a map"));
        }
        return;
    };
    for (k, v) in map {
        for m in names::qualified_name(k) {
            errs.push(FieldError::invalid(path, k.as_str(), &m));
        }
        match v.as_str() {
            Some(s) => {
                for m in names::label_value(s) {
                    errs.push(FieldError::invalid(path, s, &m));
                }
            }
            None => errs.push(FieldError::invalid(path, v.clone(), "must be a string")),
        }
    }
}

/// Annotations: qualified-name keys (compared in lower case) and a total
/// size limit of 256 KiB over keys and values.
pub fn validate_annotations(ann: &Value, path: &str, errs: &mut FieldErrors) {
    let Some(map) = ann.as_object() else {
        if !ann.is_null() {
            errs.push(FieldError::invalid(path, ann.clone(), "must be a map"));
        }
        return;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for m in names::qualified_name(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), &m));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// Metadata that may not change on update.
pub fn validate_object_meta_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    for (ptr, field) in [
        ("/metadata/name", "metadata.name"),
        ("/metadata/namespace", "metadata.namespace"),
        ("/metadata/uid", "metadata.uid"),
        ("/metadata/creationTimestamp", "metadata.creationTimestamp"),
    ] {
        let (n, o) = (new.pointer(ptr), old.pointer(ptr));
        // An update that leaves the field out keeps the old value (the
        // server fills it); only a different non-empty value is an error.
        if let (Some(n), Some(o)) = (n, o) {
            if n != o && !n.is_null() && n.as_str() != Some("") {
                errs.push(FieldError::immutable(field, n.clone()));
            }
        }
    }
    // Once deletion started, finalizers may only be removed.
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        let olds: Vec<&str> = string_list(old.pointer("/metadata/finalizers"));
        for f in string_list(new.pointer("/metadata/finalizers")) {
            if !olds.contains(&f) {
                errs.push(FieldError::forbidden(
                    "metadata.finalizers",
                    &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{f}\"}}"),
                ));
            }
        }
    }
}

pub(crate) fn string_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
