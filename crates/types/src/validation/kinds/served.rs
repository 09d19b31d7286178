//! The rest of the built-in kinds (issue 12): `networking.k8s.io` Ingress, IngressClass,
//! ServiceCIDR and IPAddress, `autoscaling` HorizontalPodAutoscaler, `storage.k8s.io`
//! CSIDriver, CSINode and CSIStorageCapacity, `flowcontrol.apiserver.k8s.io` FlowSchema
//! and PriorityLevelConfiguration, and core PodTemplate and Binding — the rules users
//! meet, with kube-apiserver's wording.

use super::*;

// ---------- networking.k8s.io ----------

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

/// A host of an Ingress rule or TLS entry: a DNS subdomain, optionally with a leading
/// `*.` wildcard label; never an IP address.
fn ingress_host(e: &mut FieldErrors, path: &str, host: &str) {
    if is_ip(host) {
        e.push(FieldError::invalid(
            path,
            host,
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        e.push(FieldError::invalid(path, host, "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
        return;
    }
    name_with(e, path, rest, dns_subdomain);
}

fn ingress_backend(b: &Value, path: &str, e: &mut FieldErrors) {
    let svc = b.get("service").filter(|v| !v.is_null());
    let res = b.get("resource").filter(|v| !v.is_null());
    match (svc, res) {
        (Some(_), Some(_)) => e.push(FieldError::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => e.push(FieldError::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
        (Some(s), None) => {
            let sp = format!("{path}.service");
            match nonempty_str(s, "/name") {
                Some(n) => name_with(e, &format!("{sp}.name"), n, names::dns1035_label),
                None => e.push(FieldError::required(format!("{sp}.name"), "")),
            }
            let port = s.get("port").cloned().unwrap_or(Value::Null);
            let name = nonempty_str(&port, "/name");
            let number = port
                .get("number")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => e.push(FieldError::invalid(
                    format!("{sp}.port"),
                    port.clone(),
                    "cannot set both port name & port number",
                )),
                (Some(n), None) => name_with(e, &format!("{sp}.port.name"), n, names::port_name),
                (None, Some(n)) => port_range(e, &format!("{sp}.port.number"), n),
                (None, None) => e.push(FieldError::required(
                    format!("{sp}.port"),
                    "port name or number is required",
                )),
            }
        }
        (None, Some(r)) => {
            let rp = format!("{path}.resource");
            for f in ["kind", "name"] {
                if nonempty_str(r, &format!("/{f}")).is_none() {
                    e.push(FieldError::required(format!("{rp}.{f}"), ""));
                }
            }
        }
    }
}

pub(super) fn ingress(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let rules = arr(&spec, "/rules");
    let default = spec.get("defaultBackend").filter(|v| !v.is_null());
    if rules.is_empty() && default.is_none() {
        e.push(FieldError::invalid(
            "spec",
            "",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default {
        ingress_backend(b, "spec.defaultBackend", e);
    }
    if let Some(c) = str_at(&spec, "/ingressClassName") {
        name_with(e, "spec.ingressClassName", c, dns_subdomain);
    }
    for (i, r) in rules.iter().enumerate() {
        let p = format!("spec.rules[{i}]");
        if let Some(h) = nonempty_str(r, "/host") {
            ingress_host(e, &format!("{p}.host"), h);
        }
        let Some(http) = r.get("http").filter(|v| !v.is_null()) else {
            continue;
        };
        let paths = arr(http, "/paths");
        if paths.is_empty() {
            e.push(FieldError::required(format!("{p}.http.paths"), ""));
        }
        for (j, hp) in paths.iter().enumerate() {
            let pp = format!("{p}.http.paths[{j}]");
            let path = str_at(hp, "/path").unwrap_or("");
            match str_at(hp, "/pathType") {
                None => e.push(FieldError::required(
                    format!("{pp}.pathType"),
                    "pathType must be specified",
                )),
                Some(t) => {
                    one_of(e, &format!("{pp}.pathType"), t, PATH_TYPES);
                    if matches!(t, "Exact" | "Prefix") {
                        if !path.starts_with('/') {
                            e.push(FieldError::invalid(
                                format!("{pp}.path"),
                                path,
                                "must be an absolute path",
                            ));
                        } else if path.contains("//") {
                            e.push(FieldError::invalid(
                                format!("{pp}.path"),
                                path,
                                "must not contain '//'",
                            ));
                        }
                    } else if !path.is_empty() && !path.starts_with('/') {
                        e.push(FieldError::invalid(
                            format!("{pp}.path"),
                            path,
                            "must be an absolute path",
                        ));
                    }
                }
            }
            match hp.get("backend").filter(|v| !v.is_null()) {
                Some(b) => ingress_backend(b, &format!("{pp}.backend"), e),
                None => e.push(FieldError::required(format!("{pp}.backend"), "")),
            }
        }
    }
    for (i, t) in arr(&spec, "/tls").iter().enumerate() {
        for (j, h) in arr(t, "/hosts").iter().enumerate() {
            if let Some(h) = h.as_str() {
                ingress_host(e, &format!("spec.tls[{i}].hosts[{j}]"), h);
            }
        }
    }
}

pub(super) fn ingress_class(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    const MAX_CONTROLLER: usize = 250;
    match nonempty_str(obj, "/spec/controller") {
        None => e.push(FieldError::required("spec.controller", "")),
        Some(c) if c.len() > MAX_CONTROLLER => {
            e.push(FieldError::too_long("spec.controller", MAX_CONTROLLER))
        }
        Some(c) => match c.split_once('/') {
            Some((domain, rest)) if !rest.is_empty() => {
                name_with(e, "spec.controller", domain, dns_subdomain)
            }
            _ => e.push(FieldError::invalid(
                "spec.controller",
                c,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        },
    }
    immutable(e, obj, old, "/spec/controller", "spec.controller");
    if let Some(p) = obj.pointer("/spec/parameters").filter(|v| !v.is_null()) {
        for f in ["kind", "name"] {
            if nonempty_str(p, &format!("/{f}")).is_none() {
                e.push(FieldError::required(format!("spec.parameters.{f}"), ""));
            }
        }
        if let Some(s) = str_at(p, "/scope") {
            one_of(e, "spec.parameters.scope", s, &["Cluster", "Namespace"]);
            let ns = nonempty_str(p, "/namespace");
            if s == "Namespace" && ns.is_none() {
                e.push(FieldError::required(
                    "spec.parameters.namespace",
                    "`parameters.scope` is set to 'Namespace'",
                ));
            }
            if s == "Cluster" && ns.is_some() {
                e.push(FieldError::forbidden(
                    "spec.parameters.namespace",
                    "`parameters.scope` is set to 'Cluster'",
                ));
            }
        }
    }
}

pub(super) fn service_cidr(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let cidrs = arr(obj, "/spec/cidrs");
    if cidrs.is_empty() {
        e.push(FieldError::required("spec.cidrs", ""));
    }
    if cidrs.len() > 2 {
        e.push(FieldError::too_many("spec.cidrs", cidrs.len(), 2));
    }
    let mut families = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        let p = format!("spec.cidrs[{i}]");
        let s = c.as_str().unwrap_or("");
        match super::super::parse_cidr(s) {
            None => e.push(FieldError::invalid(
                &p,
                s,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
            Some(cidr) => {
                let v4 = cidr.addr.is_ipv4();
                if families.contains(&v4) {
                    e.push(FieldError::invalid(
                        &p,
                        s,
                        "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
                    ));
                }
                families.push(v4);
            }
        }
    }
    // Updates may only add the other family to a single-stack ServiceCIDR.
    if let Some(old) = old {
        let before = arr(old, "/spec/cidrs");
        let kept = before.len() <= cidrs.len() && before.iter().zip(cidrs).all(|(a, b)| a == b);
        if !kept || (before.len() == 2 && cidrs.len() != 2) {
            e.push(FieldError::immutable(
                "spec.cidrs",
                obj.pointer("/spec/cidrs").cloned().unwrap_or(Value::Null),
            ));
        }
    }
}

pub(super) fn ip_address(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let name = str_at(obj, "/metadata/name").unwrap_or("");
    match name.parse::<IpAddr>() {
        Err(_) => e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be a valid ip address",
        )),
        Ok(ip) if ip.to_string() != name => e.push(FieldError::invalid(
            "metadata.name",
            name,
            &format!("must be in canonical form (\"{ip}\")"),
        )),
        Ok(_) => {}
    }
    match obj.pointer("/spec/parentRef").filter(|v| !v.is_null()) {
        None => e.push(FieldError::required("spec.parentRef", "")),
        Some(p) => {
            for f in ["resource", "name"] {
                if nonempty_str(p, &format!("/{f}")).is_none() {
                    e.push(FieldError::required(format!("spec.parentRef.{f}"), ""));
                }
            }
            if let Some(ns) = nonempty_str(p, "/namespace") {
                name_with(e, "spec.parentRef.namespace", ns, names::dns1123_label);
            }
        }
    }
    immutable(e, obj, old, "/spec/parentRef", "spec.parentRef");
}

// ---------- autoscaling ----------

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];
const TARGET_TYPES: &[&str] = &["AverageValue", "Utilization", "Value"];

fn metric_target(t: Option<&Value>, path: &str, e: &mut FieldErrors) {
    let Some(t) = t.filter(|t| t.is_object()) else {
        e.push(FieldError::required(path, "must specify a metric target"));
        return;
    };
    match str_at(t, "/type") {
        None => e.push(FieldError::required(
            format!("{path}.type"),
            "must specify a metric target type",
        )),
        Some(ty) => {
            one_of(e, &format!("{path}.type"), ty, TARGET_TYPES);
            let (field, set) = match ty {
                "Utilization" => ("averageUtilization", t.get("averageUtilization")),
                "Value" => ("value", t.get("value")),
                _ => ("averageValue", t.get("averageValue")),
            };
            if set.is_none_or(Value::is_null) {
                e.push(FieldError::required(
                    format!("{path}.{field}"),
                    &format!("must set {field} when metric target type is {ty}"),
                ));
            }
        }
    }
    if let Some(u) = t.get("averageUtilization").and_then(Value::as_i64) {
        if u < 1 {
            e.push(FieldError::invalid(
                format!("{path}.averageUtilization"),
                u,
                "must be greater than 0",
            ));
        }
    }
}

fn scaling_rules(r: &Value, path: &str, e: &mut FieldErrors) {
    if let Some(w) = r.get("stabilizationWindowSeconds").and_then(Value::as_i64) {
        if !(0..=3600).contains(&w) {
            e.push(FieldError::invalid(
                format!("{path}.stabilizationWindowSeconds"),
                w,
                "must be less than or equal to 3600",
            ));
        }
    }
    if let Some(s) = str_at(r, "/selectPolicy") {
        one_of(
            e,
            &format!("{path}.selectPolicy"),
            s,
            &["Disabled", "Max", "Min"],
        );
    }
    let policies = arr(r, "/policies");
    if r.get("policies").is_some() && policies.is_empty() {
        e.push(FieldError::required(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        match str_at(p, "/type") {
            Some(t) => one_of(e, &format!("{pp}.type"), t, &["Percent", "Pods"]),
            None => e.push(FieldError::required(format!("{pp}.type"), "")),
        }
        let v = p.get("value").and_then(Value::as_i64).unwrap_or(0);
        if v <= 0 {
            e.push(FieldError::invalid(
                format!("{pp}.value"),
                v,
                "must be greater than zero",
            ));
        }
        let period = p.get("periodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if period <= 0 {
            e.push(FieldError::invalid(
                format!("{pp}.periodSeconds"),
                period,
                "must be greater than zero",
            ));
        } else if period > 1800 {
            e.push(FieldError::invalid(
                format!("{pp}.periodSeconds"),
                period,
                "must be less than or equal to 1800",
            ));
        }
    }
}

/// An `autoscaling/v2` HorizontalPodAutoscaler (`v1` objects are converted first).
pub(super) fn horizontal_pod_autoscaler(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let r = spec.get("scaleTargetRef").cloned().unwrap_or(json!({}));
    match nonempty_str(&r, "/kind") {
        None => e.push(FieldError::required("spec.scaleTargetRef.kind", "")),
        Some(k) => name_with(e, "spec.scaleTargetRef.kind", k, |s| {
            names::path_segment(s, false)
        }),
    }
    match nonempty_str(&r, "/name") {
        None => e.push(FieldError::required("spec.scaleTargetRef.name", "")),
        Some(n) => name_with(e, "spec.scaleTargetRef.name", n, |s| {
            names::path_segment(s, false)
        }),
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(m) = min {
        if m < 1 {
            e.push(FieldError::invalid(
                "spec.minReplicas",
                m,
                "must be greater than or equal to 1",
            ));
        }
    }
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if max < 1 {
        e.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        e.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for (i, m) in arr(&spec, "/metrics").iter().enumerate() {
        let p = format!("spec.metrics[{i}]");
        let Some(t) = str_at(m, "/type") else {
            e.push(FieldError::required(
                format!("{p}.type"),
                "must specify a metric source type",
            ));
            continue;
        };
        one_of(e, &format!("{p}.type"), t, METRIC_TYPES);
        let (key, name_ptr) = match t {
            "Resource" => ("resource", "/name"),
            "ContainerResource" => ("containerResource", "/name"),
            "Pods" => ("pods", "/metric/name"),
            "Object" => ("object", "/metric/name"),
            "External" => ("external", "/metric/name"),
            _ => continue,
        };
        let Some(src) = m.get(key).filter(|v| v.is_object()) else {
            e.push(FieldError::required(
                format!("{p}.{key}"),
                &format!("must populate information for the given metric source (type {t})"),
            ));
            continue;
        };
        let sp = format!("{p}.{key}");
        if nonempty_str(src, name_ptr).is_none() {
            let field = name_ptr.trim_start_matches('/').replace('/', ".");
            e.push(FieldError::required(
                format!("{sp}.{field}"),
                "must specify a metric name",
            ));
        }
        if t == "Resource" || t == "ContainerResource" {
            if let Some(ty) = str_at(src, "/target/type") {
                if ty == "Value" {
                    e.push(FieldError::invalid(
                        format!("{sp}.target.type"),
                        ty,
                        "must be either Utilization or AverageValue",
                    ));
                }
            }
        }
        if t == "ContainerResource" && nonempty_str(src, "/container").is_none() {
            e.push(FieldError::required(
                format!("{sp}.container"),
                "must specify a container",
            ));
        }
        if t == "Object" && nonempty_str(src, "/describedObject/kind").is_none() {
            e.push(FieldError::required(
                format!("{sp}.describedObject.kind"),
                "",
            ));
        }
        metric_target(src.get("target"), &format!("{sp}.target"), e);
    }
    if let Some(b) = spec.get("behavior").filter(|b| b.is_object()) {
        for k in ["scaleUp", "scaleDown"] {
            if let Some(r) = b.get(k).filter(|r| r.is_object()) {
                scaling_rules(r, &format!("spec.behavior.{k}"), e);
            }
        }
    }
}

// ---------- storage.k8s.io ----------

pub(super) fn csi_driver(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    for (i, m) in arr(&spec, "/volumeLifecycleModes").iter().enumerate() {
        one_of(
            e,
            &format!("spec.volumeLifecycleModes[{i}]"),
            m.as_str().unwrap_or(""),
            &["Ephemeral", "Persistent"],
        );
    }
    if let Some(p) = str_at(&spec, "/fsGroupPolicy") {
        one_of(
            e,
            "spec.fsGroupPolicy",
            p,
            &["File", "None", "ReadWriteOnceWithFSType"],
        );
    }
    let mut seen = Vec::new();
    for (i, t) in arr(&spec, "/tokenRequests").iter().enumerate() {
        let a = str_at(t, "/audience").unwrap_or("");
        if seen.contains(&a) {
            e.push(FieldError::duplicate(
                format!("spec.tokenRequests[{i}].audience"),
                a,
            ));
        }
        seen.push(a);
        if let Some(x) = t.get("expirationSeconds").and_then(Value::as_i64) {
            if x < 600 {
                e.push(FieldError::invalid(
                    format!("spec.tokenRequests[{i}].expirationSeconds"),
                    x,
                    "may not specify a duration less than 10 minutes",
                ));
            }
        }
    }
    // attachRequired, podInfoOnMount, volumeLifecycleModes and fsGroupPolicy are set once.
    for f in [
        "attachRequired",
        "podInfoOnMount",
        "volumeLifecycleModes",
        "fsGroupPolicy",
    ] {
        immutable(e, obj, old, &format!("/spec/{f}"), &format!("spec.{f}"));
    }
}

pub(super) fn csi_node(obj: &Value, e: &mut FieldErrors) {
    let mut seen = Vec::new();
    for (i, d) in arr(obj, "/spec/drivers").iter().enumerate() {
        let p = format!("spec.drivers[{i}]");
        match nonempty_str(d, "/name") {
            None => e.push(FieldError::required(format!("{p}.name"), "")),
            Some(n) => {
                if seen.contains(&n) {
                    e.push(FieldError::duplicate(format!("{p}.name"), n));
                }
                seen.push(n);
                name_with(e, &format!("{p}.name"), n, dns_subdomain);
            }
        }
        match nonempty_str(d, "/nodeID") {
            None => e.push(FieldError::required(format!("{p}.nodeID"), "")),
            Some(id) if id.len() > 192 => e.push(FieldError::too_long(format!("{p}.nodeID"), 192)),
            Some(_) => {}
        }
        if let Some(c) = d.pointer("/allocatable/count").and_then(Value::as_i64) {
            non_negative(e, &format!("{p}.allocatable.count"), c);
        }
    }
}

pub(super) fn csi_storage_capacity(obj: &Value, e: &mut FieldErrors) {
    match nonempty_str(obj, "/storageClassName") {
        None => e.push(FieldError::required("storageClassName", "")),
        Some(s) => name_with(e, "storageClassName", s, dns_subdomain),
    }
}

// ---------- flowcontrol.apiserver.k8s.io ----------

const APF_VERBS_ALL: &str = "*";

fn subjects(rule: &Value, path: &str, e: &mut FieldErrors) {
    let subjects = arr(rule, "/subjects");
    if subjects.is_empty() {
        e.push(FieldError::required(
            format!("{path}.subjects"),
            "subjects must contain at least one value",
        ));
    }
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("{path}.subjects[{i}]");
        match str_at(s, "/kind") {
            Some("User") if nonempty_str(s, "/user/name").is_none() => e.push(
                FieldError::required(format!("{p}.user.name"), "username is required"),
            ),
            Some("Group") if nonempty_str(s, "/group/name").is_none() => e.push(
                FieldError::required(format!("{p}.group.name"), "group name is required"),
            ),
            Some("ServiceAccount") => {
                for f in ["namespace", "name"] {
                    if nonempty_str(s, &format!("/serviceAccount/{f}")).is_none() {
                        e.push(FieldError::required(format!("{p}.serviceAccount.{f}"), ""));
                    }
                }
            }
            Some(k) => one_of(
                e,
                &format!("{p}.kind"),
                k,
                &["Group", "ServiceAccount", "User"],
            ),
            None => e.push(FieldError::required(format!("{p}.kind"), "")),
        }
    }
}

fn non_empty_list(v: &Value, ptr: &str, path: &str, what: &str, e: &mut FieldErrors) -> bool {
    let l = arr(v, ptr);
    if l.is_empty() {
        e.push(FieldError::required(
            path,
            &format!("{what} must contain at least one value"),
        ));
        return false;
    }
    let all = l.iter().any(|x| x.as_str() == Some(APF_VERBS_ALL));
    if all && l.len() > 1 {
        e.push(FieldError::invalid(
            path,
            Value::Array(l.to_vec()),
            &format!("if '*' is present, must not specify other {what}"),
        ));
    }
    true
}

pub(super) fn flow_schema(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    if nonempty_str(&spec, "/priorityLevelConfiguration/name").is_none() {
        e.push(FieldError::required(
            "spec.priorityLevelConfiguration.name",
            "must reference a priority level",
        ));
    }
    let p = spec
        .get("matchingPrecedence")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(1..=10000).contains(&p) {
        e.push(FieldError::invalid(
            "spec.matchingPrecedence",
            p,
            "must be between 1 and 10000, inclusive",
        ));
    }
    if let Some(t) = str_at(&spec, "/distinguisherMethod/type") {
        one_of(
            e,
            "spec.distinguisherMethod.type",
            t,
            &["ByNamespace", "ByUser"],
        );
    }
    for (i, r) in arr(&spec, "/rules").iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        subjects(r, &rp, e);
        let res = arr(r, "/resourceRules");
        let non = arr(r, "/nonResourceRules");
        if res.is_empty() && non.is_empty() {
            e.push(FieldError::required(
                rp.clone(),
                "at least one of resourceRules and nonResourceRules has to be non-empty",
            ));
        }
        for (j, rr) in res.iter().enumerate() {
            let p = format!("{rp}.resourceRules[{j}]");
            non_empty_list(rr, "/verbs", &format!("{p}.verbs"), "verbs", e);
            non_empty_list(rr, "/apiGroups", &format!("{p}.apiGroups"), "apiGroups", e);
            non_empty_list(rr, "/resources", &format!("{p}.resources"), "resources", e);
            let cluster = rr
                .get("clusterScope")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !cluster && arr(rr, "/namespaces").is_empty() {
                e.push(FieldError::required(
                    format!("{p}.namespaces"),
                    "resource rules that are not cluster scoped must supply at least one namespace",
                ));
            }
        }
        for (j, nr) in non.iter().enumerate() {
            let p = format!("{rp}.nonResourceRules[{j}]");
            non_empty_list(nr, "/verbs", &format!("{p}.verbs"), "verbs", e);
            non_empty_list(
                nr,
                "/nonResourceURLs",
                &format!("{p}.nonResourceURLs"),
                "nonResourceURLs",
                e,
            );
        }
    }
}

pub(super) fn priority_level(obj: &Value, e: &mut FieldErrors) {
    let name = str_at(obj, "/metadata/name").unwrap_or("");
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let ty = str_at(&spec, "/type").unwrap_or("");
    let limited = spec.get("limited").filter(|v| !v.is_null());
    let exempt = spec.get("exempt").filter(|v| !v.is_null());
    if name == "exempt" && ty != "Exempt" {
        e.push(FieldError::invalid(
            "spec.type",
            ty,
            "type must be 'Exempt' if and only if name is 'exempt'",
        ));
    }
    match ty {
        "Exempt" => {
            if limited.is_some() {
                e.push(FieldError::forbidden(
                    "spec.limited",
                    "must be nil if the type is not Limited",
                ));
            }
            if let Some(x) = exempt {
                if let Some(p) = x.get("lendablePercent").and_then(Value::as_i64) {
                    lendable(e, "spec.exempt.lendablePercent", p);
                }
            }
        }
        "Limited" => {
            if exempt.is_some() {
                e.push(FieldError::forbidden(
                    "spec.exempt",
                    "must be nil if the type is Limited",
                ));
            }
            let Some(l) = limited else {
                e.push(FieldError::required(
                    "spec.limited",
                    "must not be empty when type is Limited",
                ));
                return;
            };
            if let Some(n) = l.get("nominalConcurrencyShares").and_then(Value::as_i64) {
                non_negative(e, "spec.limited.nominalConcurrencyShares", n);
            }
            if let Some(p) = l.get("lendablePercent").and_then(Value::as_i64) {
                lendable(e, "spec.limited.lendablePercent", p);
            }
            if let Some(b) = l.get("borrowingLimitPercent").and_then(Value::as_i64) {
                non_negative(e, "spec.limited.borrowingLimitPercent", b);
            }
            match str_at(l, "/limitResponse/type") {
                None => e.push(FieldError::required("spec.limited.limitResponse.type", "")),
                Some("Queuing") => {
                    let q = l
                        .pointer("/limitResponse/queuing")
                        .cloned()
                        .unwrap_or(json!({}));
                    let p = "spec.limited.limitResponse.queuing";
                    let queues = q.get("queues").and_then(Value::as_i64).unwrap_or(0);
                    let hand = q.get("handSize").and_then(Value::as_i64).unwrap_or(0);
                    let len = q
                        .get("queueLengthLimit")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    positive(e, &format!("{p}.queues"), queues);
                    positive(e, &format!("{p}.handSize"), hand);
                    positive(e, &format!("{p}.queueLengthLimit"), len);
                    if hand > queues {
                        e.push(FieldError::invalid(
                            format!("{p}.handSize"),
                            hand,
                            &format!("should not be greater than queues ({queues})"),
                        ));
                    }
                }
                Some("Reject") => {
                    if l.pointer("/limitResponse/queuing")
                        .is_some_and(|v| !v.is_null())
                    {
                        e.push(FieldError::forbidden(
                            "spec.limited.limitResponse.queuing",
                            "must be nil if limited.limitResponse.type is not Limited",
                        ));
                    }
                }
                Some(t) => one_of(
                    e,
                    "spec.limited.limitResponse.type",
                    t,
                    &["Queuing", "Reject"],
                ),
            }
        }
        "" => e.push(FieldError::required("spec.type", "must not be empty")),
        t => one_of(e, "spec.type", t, &["Exempt", "Limited"]),
    }
}

fn lendable(e: &mut FieldErrors, path: &str, p: i64) {
    if !(0..=100).contains(&p) {
        e.push(FieldError::invalid(
            path,
            p,
            "must be between 0 and 100, inclusive",
        ));
    }
}

// ---------- core ----------

pub(super) fn pod_template(obj: &Value, e: &mut FieldErrors) {
    let Some(t) = obj.get("template").filter(|t| t.is_object()) else {
        e.push(FieldError::required("template", ""));
        return;
    };
    if let Some(l) = t.pointer("/metadata/labels") {
        validate_labels(l, "template.metadata.labels", e);
    }
    let spec = t.get("spec").cloned().unwrap_or(json!({}));
    pod_spec(&spec, "template.spec", e);
}

/// A core `Binding` (`POST …/bindings`): which pod, and the node it goes to.
pub(super) fn binding_v1(obj: &Value, e: &mut FieldErrors) {
    if nonempty_str(obj, "/metadata/name").is_none() {
        e.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if nonempty_str(obj, "/target/name").is_none() {
        e.push(FieldError::required("target.name", ""));
    }
    if let Some(k) = nonempty_str(obj, "/target/kind") {
        if k != "Node" {
            e.push(FieldError::not_supported("target.kind", k, &["Node"]));
        }
    }
}
