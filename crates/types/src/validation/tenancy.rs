//! Validation of `tenancy.h8s.io/v1` Tenant and User: a user's tenant is a valid
//! tenant name and never changes; groups may not claim the reserved `system:` and
//! `h8s:` prefixes (a tenant comes only from `spec.tenant`, cluster-admin only from
//! the cloud-admin tenant's `admin` role); roles are Keystone's bootstrap roles.

use super::{names, FieldError, FieldErrors};
use crate::quantity::Quantity;
use crate::tenancy::ROLES;
use serde_json::Value;

const MAX_TEXT: usize = 1024;
const MAX_GROUPS: usize = 64;

fn text(obj: &Value, ptr: &str, path: &str, e: &mut FieldErrors) {
    if let Some(v) = obj.pointer(ptr) {
        match v.as_str() {
            Some(s) if s.len() > MAX_TEXT => e.push(FieldError::too_long(path, MAX_TEXT)),
            Some(_) => {}
            None => e.push(FieldError::invalid(path, v.clone(), "must be a string")),
        }
    }
}

fn boolean(obj: &Value, ptr: &str, path: &str, e: &mut FieldErrors) {
    if let Some(v) = obj.pointer(ptr) {
        if !v.is_boolean() {
            e.push(FieldError::invalid(path, v.clone(), "must be a boolean"));
        }
    }
}

/// A Tenant: texts, `enabled`, and quota quantities that parse.
pub(super) fn tenant(obj: &Value, e: &mut FieldErrors) {
    text(obj, "/spec/displayName", "spec.displayName", e);
    text(obj, "/spec/description", "spec.description", e);
    boolean(obj, "/spec/enabled", "spec.enabled", e);
    if let Some(hard) = obj.pointer("/spec/quota/hard") {
        let Some(hard) = hard.as_object() else {
            e.push(FieldError::invalid(
                "spec.quota.hard",
                hard.clone(),
                "must be a map of resource names to quantities",
            ));
            return;
        };
        for (k, v) in hard {
            let path = format!("spec.quota.hard[{k}]");
            for m in names::qualified_name(k) {
                e.push(FieldError::invalid(&path, k.as_str(), &m));
            }
            let q = v.as_str().map(Quantity::parse);
            match q {
                Some(Ok(q)) if q.is_negative() => e.push(FieldError::invalid(
                    &path,
                    v.clone(),
                    "must be greater than or equal to 0",
                )),
                Some(Ok(_)) => {}
                _ => e.push(FieldError::invalid(
                    &path,
                    v.clone(),
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
            }
        }
    }
}

/// A User: tenant required, a DNS label, immutable; e-mail, groups and roles.
pub(super) fn user(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    match obj.pointer("/spec/tenant").and_then(Value::as_str) {
        None | Some("") => e.push(FieldError::required("spec.tenant", "")),
        Some(t) => {
            for m in names::dns1123_label(t) {
                e.push(FieldError::invalid("spec.tenant", t, &m));
            }
        }
    }
    if let Some(old) = old {
        if obj.pointer("/spec/tenant") != old.pointer("/spec/tenant") {
            e.push(FieldError::immutable(
                "spec.tenant",
                obj.pointer("/spec/tenant").cloned().unwrap_or(Value::Null),
            ));
        }
    }
    text(obj, "/spec/displayName", "spec.displayName", e);
    text(obj, "/spec/email", "spec.email", e);
    if let Some(mail) = obj.pointer("/spec/email").and_then(Value::as_str) {
        let ok = mail.len() <= 254
            && mail.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && !d.is_empty() && !mail[l.len() + 1..].contains('@')
            });
        if !mail.is_empty() && !ok {
            e.push(FieldError::invalid(
                "spec.email",
                mail,
                "must be an e-mail address (local@domain)",
            ));
        }
    }
    boolean(obj, "/spec/enabled", "spec.enabled", e);
    list(obj, "/spec/groups", "spec.groups", e, |path, g, e| {
        if g.is_empty() {
            e.push(FieldError::invalid(path, g, "must not be empty"));
        } else if g.starts_with("system:") || g.starts_with("h8s:") {
            e.push(FieldError::invalid(
                path,
                g,
                "group names starting with \"system:\" or \"h8s:\" are reserved",
            ));
        } else if g.len() > 253 {
            e.push(FieldError::too_long(path, 253));
        }
    });
    list(obj, "/spec/roles", "spec.roles", e, |path, r, e| {
        if !ROLES.contains(&r) {
            e.push(FieldError::not_supported(path, r, ROLES));
        }
    });
}

fn list(
    obj: &Value,
    ptr: &str,
    path: &str,
    e: &mut FieldErrors,
    each: impl Fn(&str, &str, &mut FieldErrors),
) {
    let Some(v) = obj.pointer(ptr) else {
        return;
    };
    let Some(items) = v.as_array() else {
        e.push(FieldError::invalid(
            path,
            v.clone(),
            "must be a list of strings",
        ));
        return;
    };
    if items.len() > MAX_GROUPS {
        e.push(FieldError::too_many(path, items.len(), MAX_GROUPS));
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match item.as_str() {
            Some(s) if !seen.insert(s) => e.push(FieldError::duplicate(&p, s)),
            Some(s) => each(&p, s, e),
            None => e.push(FieldError::invalid(&p, item.clone(), "must be a string")),
        }
    }
}
