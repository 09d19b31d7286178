//! The kinds the control loop shares: EndpointSlice, RuntimeClass, PriorityClass,
//! PodDisruptionBudget, CertificateSigningRequest and `events.k8s.io` Event, with
//! kube-apiserver's rules and wording.

use super::*;
use base64::Engine as _;

/// Values above this are reserved for the system PriorityClasses.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The system PriorityClasses: (name, value).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

pub(super) fn priority_class(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let name = str_at(obj, "/metadata/name").unwrap_or_default();
    let value = obj.get("value");
    let n = match value {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => n,
            _ => {
                e.push(FieldError::invalid(
                    "value",
                    v.clone(),
                    "must be a 32-bit integer",
                ));
                return;
            }
        },
    };
    let global = obj
        .get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if name.starts_with("system-") {
        let known = SYSTEM_PRIORITY_CLASSES.iter().find(|(s, _)| *s == name);
        let err = match known {
            None => Some(format!("{name} is not a known system priority class")),
            Some((_, v)) if *v != n => Some(format!("value of {name} PriorityClass must be {v}")),
            Some(_) if global => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(err) = err {
            e.push(FieldError::forbidden(
                "metadata.name",
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {err}"),
            ));
        }
    } else if n > HIGHEST_USER_DEFINABLE_PRIORITY {
        e.push(FieldError::forbidden(
            "value",
            &format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    if let Some(p) = str_at(obj, "/preemptionPolicy") {
        one_of(e, "preemptionPolicy", p, &["Never", "PreemptLowerPriority"]);
    }
    if let Some(old) = old {
        if changed(obj, old, "/value") {
            e.push(FieldError::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        immutable(e, obj, Some(old), "/preemptionPolicy", "preemptionPolicy");
    }
}

fn tolerations(list: &[Value], path: &str, e: &mut FieldErrors) {
    for (i, t) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(op) = t.get("operator").and_then(Value::as_str) {
            one_of(e, &format!("{p}.operator"), op, &["Equal", "Exists"]);
        }
        if let Some(eff) = t
            .get("effect")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            one_of(
                e,
                &format!("{p}.effect"),
                eff,
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            );
        }
    }
}

pub(super) fn runtime_class(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let handler = str_at(obj, "/handler").unwrap_or_default();
    if handler.is_empty() {
        e.push(FieldError::required("handler", ""));
    } else {
        name_with(e, "handler", handler, names::dns1123_label);
    }
    immutable(e, obj, old, "/handler", "handler");
    if let Some(m) = obj.pointer("/overhead/podFixed").and_then(Value::as_object) {
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    e.push(FieldError::invalid(
                        format!("overhead.podFixed[{k}]"),
                        other.clone(),
                        "must be a quantity",
                    ));
                    continue;
                }
            };
            match crate::quantity::Quantity::parse(&text) {
                Ok(q) if q.is_negative() => e.push(FieldError::invalid(
                    format!("overhead.podFixed[{k}]"),
                    text.as_str(),
                    "must be greater than or equal to 0",
                )),
                Ok(_) => {}
                Err(_) => e.push(FieldError::invalid(
                    format!("overhead.podFixed[{k}]"),
                    text.as_str(),
                    crate::quantity::QUANTITY_MSG,
                )),
            }
        }
    }
    if let Some(ns) = obj.pointer("/scheduling/nodeSelector") {
        validate_labels(ns, "scheduling.nodeSelector", e);
    }
    tolerations(
        arr(obj, "/scheduling/tolerations"),
        "scheduling.tolerations",
        e,
    );
}

pub(super) fn pod_disruption_budget(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        e.push(FieldError::invalid(
            "spec",
            spec.clone(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    int_or_percent(min, "spec.minAvailable", e);
    int_or_percent(max, "spec.maxUnavailable", e);
    if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
        label_selector(sel, "spec.selector", e);
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
    {
        one_of(
            e,
            "spec.unhealthyPodEvictionPolicy",
            p,
            &["AlwaysAllow", "IfHealthyBudget"],
        );
    }
}

pub(super) fn pod_disruption_budget_status(obj: &Value, e: &mut FieldErrors) {
    for f in [
        "disruptionsAllowed",
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
    ] {
        if let Some(n) = obj.pointer(&format!("/status/{f}")).and_then(Value::as_i64) {
            non_negative(e, &format!("status.{f}"), n);
        }
    }
}

fn is_ipv4(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok()
}

pub(super) fn endpoint_slice(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let at = str_at(obj, "/addressType").unwrap_or_default();
    if at.is_empty() {
        e.push(FieldError::required("addressType", ""));
    } else {
        one_of(e, "addressType", at, &["FQDN", "IPv4", "IPv6"]);
    }
    immutable(e, obj, old, "/addressType", "addressType");
    let endpoints = arr(obj, "/endpoints");
    if endpoints.len() > 1000 {
        e.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let p = format!("endpoints[{i}]");
        let addrs = arr(ep, "/addresses");
        if addrs.is_empty() {
            e.push(FieldError::required(
                format!("{p}.addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            e.push(FieldError::too_many(
                format!("{p}.addresses"),
                addrs.len(),
                100,
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let ap = format!("{p}.addresses[{j}]");
            let s = a.as_str().unwrap_or_default();
            match at {
                "IPv4" if !is_ipv4(s) => {
                    e.push(FieldError::invalid(ap, s, "must be a valid IPv4 address"))
                }
                "IPv6" if !is_ipv6(s) => {
                    e.push(FieldError::invalid(ap, s, "must be a valid IPv6 address"))
                }
                "FQDN" => name_with(e, &ap, s, names::dns1123_subdomain),
                _ => {}
            }
        }
        if let Some(h) = nonempty_str(ep, "/hostname") {
            name_with(e, &format!("{p}.hostname"), h, names::dns1123_label);
        }
        if let Some(n) = nonempty_str(ep, "/nodeName") {
            name_with(e, &format!("{p}.nodeName"), n, names::dns1123_subdomain);
        }
        if let Some(t) = ep.get("deprecatedTopology") {
            validate_labels(t, &format!("{p}.deprecatedTopology"), e);
        }
    }
    let ports = arr(obj, "/ports");
    if ports.len() > 100 {
        e.push(FieldError::too_many("ports", ports.len(), 100));
    }
    let mut names_seen = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("ports[{i}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or_default();
        if !name.is_empty() {
            name_with(e, &format!("{p}.name"), name, names::dns1123_label);
        }
        if names_seen.contains(&name) {
            e.push(FieldError::duplicate(format!("{p}.name"), name));
        }
        names_seen.push(name);
        if let Some(n) = port.get("port").and_then(Value::as_i64) {
            port_range(e, &format!("{p}.port"), n);
        }
        protocol(e, &format!("{p}.protocol"), port);
    }
}

/// The key usages a CertificateSigningRequest may ask for.
const KEY_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Whether `request` (base64 of PEM, as JSON carries `[]byte`) holds a PEM
/// `CERTIFICATE REQUEST` block; the error is Kubernetes' wording.
fn csr_pem(request: &str) -> Result<(), &'static str> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(request)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST")?;
    let text = String::from_utf8_lossy(&raw);
    let begin = "-----BEGIN CERTIFICATE REQUEST-----";
    let end = "-----END CERTIFICATE REQUEST-----";
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(en)) if b < en => {
            let body: String = text[b + begin.len()..en]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map(|_| ())
                .map_err(|_| "PEM block type must be CERTIFICATE REQUEST")
        }
        _ => Err("PEM block type must be CERTIFICATE REQUEST"),
    }
}

pub(super) fn certificate_signing_request(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    if old.is_some() {
        // The spec is kept from the stored object on every update.
        csr_conditions(obj, old, e);
        return;
    }
    match nonempty_str(obj, "/spec/request") {
        None => e.push(FieldError::required("spec.request", "")),
        Some(r) => {
            if let Err(m) = csr_pem(r) {
                e.push(FieldError::invalid("spec.request", r, m));
            }
        }
    }
    match nonempty_str(obj, "/spec/signerName") {
        None => e.push(FieldError::required("spec.signerName", "")),
        Some(s) => {
            let ok = s.split_once('/').is_some_and(|(domain, path)| {
                !path.is_empty()
                    && names::dns1123_subdomain(domain).is_empty()
                    && domain.contains('.')
            });
            if !ok {
                e.push(FieldError::invalid(
                    "spec.signerName",
                    s,
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                ));
            }
        }
    }
    let usages = string_list(obj.pointer("/spec/usages"));
    if usages.is_empty() {
        e.push(FieldError::required(
            "spec.usages",
            "usages must be provided",
        ));
    }
    for (i, u) in usages.iter().enumerate() {
        one_of(e, &format!("spec.usages[{i}]"), u, KEY_USAGES);
    }
    if let Some(n) = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        if n < 600 {
            e.push(FieldError::invalid(
                "spec.expirationSeconds",
                n,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
}

/// The conditions of a CSR: known types, `Approved`/`Denied` true and exclusive, and
/// never removed once set.
pub(super) fn csr_conditions(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let conds = arr(obj, "/status/conditions");
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let p = format!("status.conditions[{i}]");
        let ty = c.get("type").and_then(Value::as_str).unwrap_or_default();
        if ty.is_empty() {
            e.push(FieldError::required(format!("{p}.type"), ""));
            continue;
        }
        let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
        match ty {
            "Approved" | "Denied" => {
                if status != "True" {
                    e.push(FieldError::not_supported(
                        format!("{p}.status"),
                        status,
                        &["True"],
                    ));
                }
            }
            _ => {
                if !matches!(status, "True" | "False" | "Unknown") {
                    e.push(FieldError::not_supported(
                        format!("{p}.status"),
                        status,
                        &["False", "True", "Unknown"],
                    ));
                }
            }
        }
        if seen.contains(&ty) && matches!(ty, "Approved" | "Denied" | "Failed") {
            e.push(FieldError::duplicate(format!("{p}.type"), ty));
        }
        seen.push(ty);
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        e.push(FieldError::invalid(
            "status.conditions",
            Value::Array(conds.to_vec()),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if let Some(old) = old {
        for ty in ["Approved", "Denied"] {
            let had = arr(old, "/status/conditions")
                .iter()
                .any(|c| c["type"] == ty);
            if had && !seen.contains(&ty) {
                e.push(FieldError::forbidden(
                    "status.conditions",
                    &format!("updates may not remove a condition of type \"{ty}\""),
                ));
            }
        }
    }
}

/// `events.k8s.io/v1` Events, strict on create (core `v1` Events stay lax).
pub(super) fn events_v1(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    if old.is_some() {
        if let Some(t) = nonempty_str(obj, "/type") {
            one_of(e, "type", t, &["Normal", "Warning"]);
        }
        return;
    }
    if nonempty_str(obj, "/eventTime").is_none() {
        e.push(FieldError::required("eventTime", ""));
    }
    let t = str_at(obj, "/type").unwrap_or_default();
    if t != "Normal" && t != "Warning" {
        e.push(FieldError::invalid(
            "type",
            "",
            &format!("has invalid value: {t}"),
        ));
    }
    match nonempty_str(obj, "/reportingController") {
        None => e.push(FieldError::required("reportingController", "")),
        Some(c) => name_with(e, "reportingController", c, names::qualified_name),
    }
    for (f, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        match nonempty_str(obj, &format!("/{f}")) {
            None => e.push(FieldError::required(f, "")),
            Some(v) if v.len() > max => e.push(FieldError::invalid(
                f,
                "",
                &format!("can have at most {max} characters"),
            )),
            Some(_) => {}
        }
    }
    if str_at(obj, "/note").is_some_and(|n| n.len() > 1024) {
        e.push(FieldError::invalid(
            "note",
            "",
            "can have at most 1024 characters",
        ));
    }
    for f in ["deprecatedFirstTimestamp", "deprecatedLastTimestamp"] {
        if nonempty_str(obj, &format!("/{f}")).is_some() {
            e.push(FieldError::invalid(f, "", "needs to be unset"));
        }
    }
    if obj
        .pointer("/deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        != 0
    {
        e.push(FieldError::invalid(
            "deprecatedCount",
            "",
            "needs to be unset",
        ));
    }
    if nonempty_str(obj, "/deprecatedSource/component").is_some()
        || nonempty_str(obj, "/deprecatedSource/host").is_some()
    {
        e.push(FieldError::invalid(
            "deprecatedSource",
            "",
            "needs to be unset",
        ));
    }
    if let Some(ns) = nonempty_str(obj, "/regarding/namespace") {
        let own = str_at(obj, "/metadata/namespace").unwrap_or_default();
        if ns != own {
            e.push(FieldError::invalid(
                "regarding.namespace",
                ns,
                "does not match event.namespace",
            ));
        }
    }
}
