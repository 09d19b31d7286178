//! `apiregistration.k8s.io/v1` APIService, with kube-aggregator's rules and wording.

use super::*;

pub(super) fn api_service(obj: &Value, e: &mut FieldErrors) {
    let name = str_at(obj, "/metadata/name").unwrap_or_default();
    let group = str_at(obj, "/spec/group").unwrap_or_default();
    let version = str_at(obj, "/spec/version").unwrap_or_default();
    if name != format!("{version}.{group}") {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be `spec.version+\".\"+spec.group`",
        ));
    }
    if group.is_empty() {
        if version != "v1" {
            e.push(FieldError::invalid(
                "spec.group",
                group,
                "only v1 may have an empty group and it better be legacy kube",
            ));
        }
    } else {
        name_with(e, "spec.group", group, dns_subdomain);
    }
    if version.is_empty() {
        e.push(FieldError::required("spec.version", ""));
    } else {
        name_with(e, "spec.version", version, names::dns1035_label);
    }
    let int = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let gpm = int("/spec/groupPriorityMinimum");
    if !(1..=20000).contains(&gpm) {
        e.push(FieldError::invalid(
            "spec.groupPriorityMinimum",
            gpm,
            "must be positive and less than 20000",
        ));
    }
    let vp = int("/spec/versionPriority");
    if !(1..=1000).contains(&vp) {
        e.push(FieldError::invalid(
            "spec.versionPriority",
            vp,
            "must be positive and less than 1000",
        ));
    }
    let skip = obj
        .pointer("/spec/insecureSkipTLSVerify")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ca = nonempty_str(obj, "/spec/caBundle").is_some();
    match obj.pointer("/spec/service").filter(|s| s.is_object()) {
        None => {
            if ca {
                e.push(FieldError::invalid(
                    "spec.caBundle",
                    "<bytes>",
                    "local APIServices may not have a caBundle",
                ));
            }
            if skip {
                e.push(FieldError::invalid(
                    "spec.insecureSkipTLSVerify",
                    true,
                    "local APIServices may not have insecureSkipTLSVerify",
                ));
            }
        }
        Some(s) => {
            for f in ["name", "namespace"] {
                match nonempty_str(s, &format!("/{f}")) {
                    None => e.push(FieldError::required(format!("spec.service.{f}"), "")),
                    Some(v) => name_with(e, &format!("spec.service.{f}"), v, names::dns1123_label),
                }
            }
            if let Some(p) = s.get("port").and_then(Value::as_i64) {
                port_range(e, "spec.service.port", p);
            }
            if skip && ca {
                e.push(FieldError::invalid(
                    "spec.insecureSkipTLSVerify",
                    true,
                    "may not be true if caBundle is present",
                ));
            }
        }
    }
}
