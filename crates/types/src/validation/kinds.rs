//! Per-kind rules: the ones users meet (required fields, enumerations, port
//! ranges, selectors matching templates, immutable fields), not all of
//! Kubernetes' validation.

use super::names::{self, NameRule};
use super::{network, string_list, tenancy, validate_labels, FieldError, FieldErrors};
use crate::resources::Resource;
use serde_json::{json, Value};
use std::net::IpAddr;

mod admission;
mod apiservice;
mod control;
mod served;
pub use admission::{ADMISSION_REVIEW_VERSIONS, MAX_MATCH_CONDITIONS};
pub use control::{HIGHEST_USER_DEFINABLE_PRIORITY, SYSTEM_PRIORITY_CLASSES};

const MAX_DATA_SIZE: usize = 1024 * 1024;

pub(super) fn validate_kind(r: &Resource, obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    match (r.group, r.kind) {
        ("", "Pod") => pod(obj, old, e),
        ("", "Namespace") => namespace(obj, old, e),
        ("", "Service") => service(obj, old, e),
        ("", "ConfigMap") => config_map(obj, old, e),
        ("", "Secret") => secret(obj, old, e),
        ("", "ServiceAccount") => service_account(obj, e),
        ("", "Event") => event(obj, e),
        ("", "Endpoints") => endpoints(obj, e),
        ("", "Node") => node(obj, e),
        ("", "PersistentVolume") => persistent_volume(obj, e),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(obj, old, e),
        ("", "LimitRange") => limit_range(obj, e),
        ("", "ReplicationController") => replication_controller(obj, e),
        ("", "Network") => network::validate(obj, old, e),
        ("tenancy.h8s.io", "Tenant") => tenancy::tenant(obj, e),
        ("tenancy.h8s.io", "User") => tenancy::user(obj, old, e),
        ("apps", "Deployment") => deployment(obj, old, e),
        ("apps", "ReplicaSet") => replica_set(obj, old, e),
        ("apps", "StatefulSet") => stateful_set(obj, old, e),
        ("apps", "DaemonSet") => daemon_set(obj, old, e),
        ("apps", "ControllerRevision") => controller_revision(obj, old, e),
        ("batch", "Job") => job(obj, old, e),
        ("batch", "CronJob") => cron_job(obj, e),
        ("rbac.authorization.k8s.io", "Role") => rules(obj, true, e),
        ("rbac.authorization.k8s.io", "ClusterRole") => rules(obj, false, e),
        ("rbac.authorization.k8s.io", "RoleBinding") => binding(obj, old, true, e),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => binding(obj, old, false, e),
        ("coordination.k8s.io", "Lease") => lease(obj, e),
        ("storage.k8s.io", "StorageClass") => storage_class(obj, old, e),
        ("storage.k8s.io", "VolumeAttachment") => volume_attachment(obj, old, e),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj, e),
        ("authorization.k8s.io", "SelfSubjectAccessReview") => ssar(obj, e),
        ("authorization.k8s.io", "LocalSubjectAccessReview") => sar(obj, e),
        ("authorization.k8s.io", "SubjectAccessReview") => sar(obj, e),
        ("scheduling.k8s.io", "PriorityClass") => control::priority_class(obj, old, e),
        ("node.k8s.io", "RuntimeClass") => control::runtime_class(obj, old, e),
        ("policy", "PodDisruptionBudget") => control::pod_disruption_budget(obj, e),
        ("discovery.k8s.io", "EndpointSlice") => control::endpoint_slice(obj, old, e),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            control::certificate_signing_request(obj, old, e)
        }
        ("events.k8s.io", "Event") => control::events_v1(obj, old, e),
        ("apiregistration.k8s.io", "APIService") => apiservice::api_service(obj, e),
        ("", "PodTemplate") => served::pod_template(obj, e),
        ("", "Binding") => served::binding_v1(obj, e),
        ("networking.k8s.io", "Ingress") => served::ingress(obj, e),
        ("networking.k8s.io", "IngressClass") => served::ingress_class(obj, old, e),
        ("networking.k8s.io", "ServiceCIDR") => served::service_cidr(obj, old, e),
        ("networking.k8s.io", "IPAddress") => served::ip_address(obj, old, e),
        ("autoscaling", "HorizontalPodAutoscaler") if r.version == "v1" => {
            served::horizontal_pod_autoscaler(&crate::autoscaling::v1_to_v2(obj.clone()), e)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => served::horizontal_pod_autoscaler(obj, e),
        ("storage.k8s.io", "CSIDriver") => served::csi_driver(obj, old, e),
        ("storage.k8s.io", "CSINode") => served::csi_node(obj, e),
        ("storage.k8s.io", "CSIStorageCapacity") => served::csi_storage_capacity(obj, e),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => served::flow_schema(obj, e),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            served::priority_level(obj, e)
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            admission::webhook_configuration(obj, false, e)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            admission::webhook_configuration(obj, true, e)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            admission::validating_admission_policy(obj, e)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            admission::validating_admission_policy_binding(obj, e)
        }
        _ => {}
    }
}

pub(super) fn validate_status(r: &Resource, obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    match (r.group, r.kind) {
        ("policy", "PodDisruptionBudget") => control::pod_disruption_budget_status(obj, e),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            control::csr_conditions(obj, old, e)
        }
        ("", "Pod") => {
            if let Some(p) = str_at(obj, "/status/phase") {
                one_of(
                    e,
                    "status.phase",
                    p,
                    &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
                );
            }
        }
        ("", "Namespace") => {
            if let Some(p) = str_at(obj, "/status/phase") {
                one_of(e, "status.phase", p, &["Active", "Terminating"]);
            }
        }
        ("", "Network") => network::validate_status(obj, e),
        ("tenancy.h8s.io", "Tenant") => {
            if let Some(p) = str_at(obj, "/status/phase") {
                one_of(e, "status.phase", p, &["Active", "Terminating"]);
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            for f in ["currentReplicas", "desiredReplicas"] {
                if let Some(n) = obj.pointer(&format!("/status/{f}")).and_then(Value::as_i64) {
                    non_negative(e, &format!("status.{f}"), n);
                }
            }
        }
        (_, _) => {
            for f in [
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
            ] {
                if let Some(n) = obj.pointer(&format!("/status/{f}")).and_then(Value::as_i64) {
                    non_negative(e, &format!("status.{f}"), n);
                }
            }
        }
    }
}

// ---------- helpers ----------

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn nonempty_str<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    str_at(v, ptr).filter(|s| !s.is_empty())
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn one_of(e: &mut FieldErrors, path: &str, v: &str, valid: &[&str]) {
    if !valid.contains(&v) {
        e.push(FieldError::not_supported(path, v, valid));
    }
}

fn non_negative(e: &mut FieldErrors, path: &str, n: i64) {
    if n < 0 {
        e.push(FieldError::invalid(
            path,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

fn positive(e: &mut FieldErrors, path: &str, n: i64) {
    if n <= 0 {
        e.push(FieldError::invalid(path, n, "must be greater than zero"));
    }
}

fn port_range(e: &mut FieldErrors, path: &str, n: i64) {
    if !(1..=65535).contains(&n) {
        e.push(FieldError::invalid(
            path,
            n,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

fn name_with(e: &mut FieldErrors, path: &str, v: &str, check: fn(&str) -> Vec<String>) {
    for m in check(v) {
        e.push(FieldError::invalid(path, v, &m));
    }
}

fn dns_subdomain(s: &str) -> Vec<String> {
    names::dns1123_subdomain(s)
}

fn changed(new: &Value, old: &Value, ptr: &str) -> bool {
    new.pointer(ptr) != old.pointer(ptr)
}

fn immutable(e: &mut FieldErrors, new: &Value, old: Option<&Value>, ptr: &str, path: &str) {
    if let Some(old) = old {
        if changed(new, old, ptr) {
            e.push(FieldError::immutable(
                path,
                new.pointer(ptr).cloned().unwrap_or(Value::Null),
            ));
        }
    }
}

fn protocol(e: &mut FieldErrors, path: &str, port: &Value) {
    if let Some(p) = port.get("protocol").and_then(Value::as_str) {
        one_of(e, path, p, &["SCTP", "TCP", "UDP"]);
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

// ---------- label selectors ----------

/// Validates a `LabelSelector` and says whether it selects `labels`.
fn label_selector(sel: &Value, path: &str, e: &mut FieldErrors) {
    if let Some(ml) = sel.get("matchLabels") {
        validate_labels(ml, &format!("{path}.matchLabels"), e);
    }
    for (i, req) in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = format!("{path}.matchExpressions[{i}]");
        let key = req.get("key").and_then(Value::as_str).unwrap_or_default();
        for m in names::qualified_name(key) {
            e.push(FieldError::invalid(format!("{p}.key"), key, &m));
        }
        let values = req
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match req
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" | "NotIn" => {
                if values == 0 {
                    e.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if values > 0 {
                    e.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => e.push(FieldError::not_supported(
                format!("{p}.operator"),
                op,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
}

fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
}

/// Whether a `LabelSelector` matches a label map.
pub(crate) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let ml_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let me_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|a| {
            a.iter().all(|req| {
                let key = req.get("key").and_then(Value::as_str).unwrap_or_default();
                let vals = string_list(req.get("values"));
                match req.get("operator").and_then(Value::as_str) {
                    Some("In") => get(key).is_some_and(|v| vals.contains(&v)),
                    Some("NotIn") => get(key).is_none_or(|v| !vals.contains(&v)),
                    Some("Exists") => get(key).is_some(),
                    Some("DoesNotExist") => get(key).is_none(),
                    _ => false,
                }
            })
        });
    ml_ok && me_ok
}

/// Selector + template rules shared by the workload kinds.
fn workload_selector(
    obj: &Value,
    kind_word: &str,
    template_ptr: &str,
    template_path: &str,
    e: &mut FieldErrors,
) {
    let sel = obj.pointer("/spec/selector");
    match sel {
        None | Some(Value::Null) => e.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            label_selector(sel, "spec.selector", e);
            if selector_is_empty(sel) {
                e.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    &format!("empty selector is invalid for {kind_word}"),
                ));
            } else {
                let labels = obj
                    .pointer(&format!("{template_ptr}/metadata/labels"))
                    .cloned()
                    .unwrap_or(json!({}));
                if !selector_matches(sel, &labels) {
                    e.push(FieldError::invalid(
                        format!("{template_path}.metadata.labels"),
                        labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
}

fn template(obj: &Value, ptr: &str, path: &str, restart: &[&str], e: &mut FieldErrors) {
    let Some(t) = obj.pointer(ptr).filter(|t| t.is_object()) else {
        e.push(FieldError::required(path, ""));
        return;
    };
    if let Some(l) = t.pointer("/metadata/labels") {
        validate_labels(l, &format!("{path}.metadata.labels"), e);
    }
    if let Some(a) = t.pointer("/metadata/annotations") {
        super::validate_annotations(a, &format!("{path}.metadata.annotations"), e);
    }
    let spec = t.get("spec").cloned().unwrap_or(json!({}));
    pod_spec(&spec, &format!("{path}.spec"), e);
    match spec.get("restartPolicy").and_then(Value::as_str) {
        Some(rp) => one_of(e, &format!("{path}.spec.restartPolicy"), rp, restart),
        None => {
            let quoted: Vec<String> = restart.iter().map(|s| format!("{s:?}")).collect();
            e.push(FieldError::required(
                format!("{path}.spec.restartPolicy"),
                &format!("valid values: {}", quoted.join(", ")),
            ))
        }
    }
}

// ---------- pods ----------

fn pod(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    pod_spec(&spec, "spec", e);
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
        one_of(
            e,
            "spec.restartPolicy",
            rp,
            &["Always", "OnFailure", "Never"],
        );
    }
    if let Some(old) = old {
        pod_update(obj, old, e);
    }
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A pod's spec is immutable except images, activeDeadlineSeconds, added
/// tolerations, terminationGracePeriodSeconds and removed scheduling gates.
fn pod_update(new: &Value, old: &Value, e: &mut FieldErrors) {
    let strip = |spec: &Value| -> Value {
        let mut s = spec.clone();
        if let Some(m) = s.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                m.remove(f);
            }
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = m.get_mut(list) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        s
    };
    let (ns, os) = (
        new.get("spec").cloned().unwrap_or(Value::Null),
        old.get("spec").cloned().unwrap_or(Value::Null),
    );
    if strip(&ns) != strip(&os) {
        let fields: Vec<String> = match (ns.as_object(), os.as_object()) {
            (Some(n), Some(o)) => {
                let mut keys: Vec<&String> = n.keys().chain(o.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .filter(|k| strip(&json!({*k: n.get(*k)})) != strip(&json!({*k: o.get(*k)})))
                    .map(|k| format!("spec.{k}"))
                    .collect()
            }
            _ => vec!["spec".into()],
        };
        e.push(FieldError::forbidden(
            "spec",
            &format!("{POD_UPDATE_MSG}\nchanged: {}", fields.join(", ")),
        ));
    }
    // Tolerations may only be added to.
    let old_t = arr(old, "/spec/tolerations");
    let new_t = arr(new, "/spec/tolerations");
    if old_t.iter().any(|t| !new_t.contains(t)) {
        e.push(FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    if let Some(ad) = new
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
    {
        if let Some(od) = old
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
        {
            if ad > od {
                e.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    ad,
                    "must be less than or equal to previous value",
                ));
            }
        }
    }
}

/// The rules of a PodSpec, also used inside workload templates.
pub(super) fn pod_spec(spec: &Value, path: &str, e: &mut FieldErrors) {
    let volumes = arr(spec, "/volumes");
    let mut vol_names: Vec<&str> = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        match v
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => e.push(FieldError::required(format!("{p}.name"), "")),
            Some(n) => {
                name_with(e, &format!("{p}.name"), n, names::dns1123_label);
                if vol_names.contains(&n) {
                    e.push(FieldError::duplicate(format!("{p}.name"), n));
                }
                vol_names.push(n);
            }
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        match sources.len() {
            0 => e.push(FieldError::required(
                p.clone(),
                "must specify a volume type",
            )),
            1 => {}
            _ => e.push(FieldError::forbidden(
                format!("{p}.{}", sources[1]),
                "may not specify more than 1 volume type",
            )),
        }
    }
    let containers = arr(spec, "/containers");
    if containers.is_empty() {
        e.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut all_names: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in arr(spec, &format!("/{list}")).iter().enumerate() {
            container(
                c,
                &format!("{path}.{list}[{i}]"),
                &vol_names,
                &mut all_names,
                e,
            );
        }
    }
    if let Some(p) = spec.get("dnsPolicy").and_then(Value::as_str) {
        one_of(
            e,
            &format!("{path}.dnsPolicy"),
            p,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        );
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            e.push(FieldError::invalid(
                format!("{path}.activeDeadlineSeconds"),
                n,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(n) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        non_negative(e, &format!("{path}.terminationGracePeriodSeconds"), n);
    }
    if let Some(sa) = nonempty_str(spec, "/serviceAccountName") {
        name_with(e, &format!("{path}.serviceAccountName"), sa, dns_subdomain);
    }
    for f in ["hostname", "subdomain"] {
        if let Some(h) = nonempty_str(spec, &format!("/{f}")) {
            name_with(e, &format!("{path}.{f}"), h, names::dns1123_label);
        }
    }
    if let Some(ns) = spec.get("nodeSelector") {
        validate_labels(ns, &format!("{path}.nodeSelector"), e);
    }
    for (i, t) in arr(spec, "/tolerations").iter().enumerate() {
        let p = format!("{path}.tolerations[{i}]");
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

fn container<'a>(
    c: &'a Value,
    path: &str,
    volumes: &[&str],
    seen: &mut Vec<&'a str>,
    e: &mut FieldErrors,
) {
    match c
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        None => e.push(FieldError::required(format!("{path}.name"), "")),
        Some(n) => {
            name_with(e, &format!("{path}.name"), n, names::dns1123_label);
            if seen.contains(&n) {
                e.push(FieldError::duplicate(format!("{path}.name"), n));
            }
            seen.push(n);
        }
    }
    if nonempty_str(c, "/image").is_none() {
        e.push(FieldError::required(format!("{path}.image"), ""));
    }
    if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
        one_of(
            e,
            &format!("{path}.imagePullPolicy"),
            p,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(p) = c.get("terminationMessagePolicy").and_then(Value::as_str) {
        one_of(
            e,
            &format!("{path}.terminationMessagePolicy"),
            p,
            &["File", "FallbackToLogsOnError"],
        );
    }
    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in arr(c, "/ports").iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        match p.get("containerPort").and_then(Value::as_i64) {
            Some(n) => port_range(e, &format!("{pp}.containerPort"), n),
            None => e.push(FieldError::required(format!("{pp}.containerPort"), "")),
        }
        if let Some(h) = p
            .get("hostPort")
            .and_then(Value::as_i64)
            .filter(|h| *h != 0)
        {
            port_range(e, &format!("{pp}.hostPort"), h);
        }
        if let Some(n) = p
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            name_with(e, &format!("{pp}.name"), n, names::port_name);
            if port_names.contains(&n) {
                e.push(FieldError::duplicate(format!("{pp}.name"), n));
            }
            port_names.push(n);
        }
        protocol(e, &format!("{pp}.protocol"), p);
    }
    for (i, env) in arr(c, "/env").iter().enumerate() {
        let p = format!("{path}.env[{i}].name");
        match env
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => e.push(FieldError::required(p, "")),
            Some(n) => name_with(e, &p, n, names::env_var_name),
        }
    }
    resources(c, path, e);
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "/volumeMounts").iter().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => e.push(FieldError::required(format!("{p}.name"), "")),
            Some(n) if !volumes.contains(&n) => {
                e.push(FieldError::not_found(format!("{p}.name"), n))
            }
            Some(_) => {}
        }
        match m
            .get("mountPath")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => e.push(FieldError::required(format!("{p}.mountPath"), "")),
            Some(mp) => {
                if mount_paths.contains(&mp) {
                    e.push(FieldError::invalid(
                        format!("{p}.mountPath"),
                        mp,
                        "must be unique",
                    ));
                }
                mount_paths.push(mp);
            }
        }
    }
}

/// Quantities are non-negative and requests do not exceed limits.
fn resources(c: &Value, path: &str, e: &mut FieldErrors) {
    use crate::quantity::Quantity;
    let get = |kind: &str| {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => return None,
                        };
                        Quantity::parse(&text).ok().map(|q| (k.clone(), text, q))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (requests, limits) = (get("requests"), get("limits"));
    for (kind, list) in [("requests", &requests), ("limits", &limits)] {
        for (name, text, q) in list {
            if q.is_negative() {
                e.push(FieldError::invalid(
                    format!("{path}.resources.{kind}[{name}]"),
                    text.as_str(),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    for (name, text, q) in &requests {
        if let Some((_, ltext, l)) = limits.iter().find(|(n, ..)| n == name) {
            if q > l {
                e.push(FieldError::invalid(
                    format!("{path}.resources.requests"),
                    text.as_str(),
                    &format!("must be less than or equal to {name} limit of {ltext}"),
                ));
            }
        }
    }
}

// ---------- core kinds ----------

fn namespace(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    for (i, f) in string_list(obj.pointer("/spec/finalizers"))
        .into_iter()
        .enumerate()
    {
        let p = format!("spec.finalizers[{i}]");
        if !f.contains('/') {
            if !["kubernetes", "orphan", "foregroundDeletion"].contains(&f) {
                e.push(FieldError::invalid(
                    p,
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        } else {
            name_with(e, &p, f, names::qualified_name);
        }
    }
    if let Some(n) = obj.pointer("/spec/network") {
        match n.as_str() {
            Some("") => {}
            Some(s) => name_with(e, "spec.network", s, names::dns1123_label),
            None => e.push(FieldError::invalid(
                "spec.network",
                n.clone(),
                "must be a string",
            )),
        }
    }
    // Re-homing a namespace onto another Network would strand its pods.
    if let Some(old) = old {
        if nonempty_str(old, "/spec/network").is_some() {
            immutable(e, obj, Some(old), "/spec/network", "spec.network");
        }
    }
}

fn service(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let ty = str_at(obj, "/spec/type").unwrap_or("ClusterIP");
    one_of(
        e,
        "spec.type",
        ty,
        &[
            "ClusterIP",
            "ExternalName",
            "LoadBalancer",
            "NodePort",
            crate::network::NETWORK_PROVIDER,
        ],
    );
    let cluster_ip = str_at(obj, "/spec/clusterIP").unwrap_or_default();
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && !is_ip(cluster_ip) {
        e.push(FieldError::invalid(
            "spec.clusterIP",
            cluster_ip,
            "must be empty, 'None', or a valid IP address",
        ));
    }
    let ports = arr(obj, "/spec/ports");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        e.push(FieldError::required("spec.ports", ""));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut seen_ports: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            if ports.len() > 1 {
                e.push(FieldError::required(format!("{pp}.name"), ""));
            }
        } else {
            name_with(e, &format!("{pp}.name"), name, names::dns1123_label);
            if seen.contains(&name) {
                e.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
            seen.push(name);
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        port_range(e, &format!("{pp}.port"), port);
        protocol(e, &format!("{pp}.protocol"), p);
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if seen_ports.contains(&(port, proto)) {
            e.push(FieldError::duplicate(
                pp.clone(),
                json!({"port": port, "protocol": proto}),
            ));
        }
        seen_ports.push((port, proto));
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                port_range(e, &format!("{pp}.targetPort"), n.as_i64().unwrap_or(0))
            }
            Some(Value::String(s)) => {
                name_with(e, &format!("{pp}.targetPort"), s, names::port_name)
            }
            _ => {}
        }
        if let Some(np) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            // A NetworkProvider Service has no node ports (its address leads into the
            // Network directly, as the seeds' provider load balancers did).
            if ty == "ClusterIP" || ty == "ExternalName" || ty == crate::network::NETWORK_PROVIDER {
                e.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                ));
            } else {
                port_range(e, &format!("{pp}.nodePort"), np);
            }
        }
    }
    if ty == "ExternalName" {
        match nonempty_str(obj, "/spec/externalName") {
            None => e.push(FieldError::required("spec.externalName", "")),
            Some(n) => name_with(
                e,
                "spec.externalName",
                n.trim_end_matches('.'),
                dns_subdomain,
            ),
        }
    }
    if let Some(sel) = obj.pointer("/spec/selector") {
        validate_labels(sel, "spec.selector", e);
    }
    for (i, ip) in arr(obj, "/spec/externalIPs").iter().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        match ip.as_str().map(|s| s.parse::<IpAddr>()) {
            Some(Ok(a)) if !(a.is_unspecified() || a.is_loopback() || a.is_multicast()) => {}
            _ => e.push(FieldError::invalid(
                path,
                ip.as_str().unwrap_or_default(),
                "must be a valid IP address, not unspecified, loopback or multicast",
            )),
        }
    }
    let ranges = arr(obj, "/spec/loadBalancerSourceRanges");
    if !ranges.is_empty() && !crate::network::load_balancer_type(Some(ty)) {
        e.push(FieldError::forbidden(
            "spec.loadBalancerSourceRanges",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    for (i, r) in ranges.iter().enumerate() {
        let ok = r.as_str().is_some_and(|r| {
            let (a, len) = r.trim().split_once('/').unwrap_or((r.trim(), "32"));
            a.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
        });
        if !ok {
            e.push(FieldError::invalid(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                r.as_str().unwrap_or_default(),
                "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ",
            ));
        }
    }
    if let Some(sa) = str_at(obj, "/spec/sessionAffinity") {
        one_of(e, "spec.sessionAffinity", sa, &["ClientIP", "None"]);
    }
    if let Some(old) = old {
        let oip = str_at(old, "/spec/clusterIP").unwrap_or_default();
        if !oip.is_empty() && !cluster_ip.is_empty() && oip != cluster_ip && ty != "ExternalName" {
            e.push(FieldError::immutable("spec.clusterIP", cluster_ip));
        }
    }
}

fn data_keys(obj: &Value, e: &mut FieldErrors) -> usize {
    let mut size = 0usize;
    let mut keys: Vec<&str> = Vec::new();
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for (k, v) in m {
                let p = format!("{field}[{k}]");
                name_with(e, &p, k, names::config_map_key);
                if field != "stringData" && keys.contains(&k.as_str()) {
                    e.push(FieldError::duplicate(p, k.as_str()));
                }
                keys.push(k);
                size += k.len() + v.as_str().map_or(0, str::len);
            }
        }
    }
    size
}

fn immutable_data(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let Some(old) = old else { return };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const MSG: &str = "field is immutable when `immutable` is set";
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        e.push(FieldError::forbidden("immutable", MSG));
    }
    for f in ["data", "binaryData"] {
        if changed(obj, old, &format!("/{f}")) {
            e.push(FieldError::forbidden(f, MSG));
        }
    }
}

fn config_map(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    if data_keys(obj, e) > MAX_DATA_SIZE {
        e.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
    immutable_data(obj, old, e);
}

fn secret(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    if data_keys(obj, e) > MAX_DATA_SIZE * 4 / 3 + 4 {
        e.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let has = |k: &str| {
        obj.pointer(&format!("/data/{k}"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
            || obj
                .pointer(&format!("/stringData/{k}"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
    };
    let ty = str_at(obj, "/type").unwrap_or("Opaque");
    match ty {
        "kubernetes.io/service-account-token"
            if nonempty_str(
                obj,
                "/metadata/annotations/kubernetes.io~1service-account.name",
            )
            .is_none() =>
        {
            e.push(FieldError::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            e.push(FieldError::required("data[.dockercfg]", ""))
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            e.push(FieldError::required("data[.dockerconfigjson]", ""))
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            e.push(FieldError::required("data[username]", ""));
            e.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            e.push(FieldError::required("data[ssh-privatekey]", ""))
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if obj.pointer(&format!("/data/{k}")).is_none()
                    && obj.pointer(&format!("/stringData/{k}")).is_none()
                {
                    e.push(FieldError::required(format!("data[{k}]"), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let oty = str_at(old, "/type").unwrap_or("Opaque");
        if oty != ty {
            e.push(FieldError::immutable("type", ty));
        }
    }
    immutable_data(obj, old, e);
}

fn service_account(obj: &Value, e: &mut FieldErrors) {
    for (i, s) in arr(obj, "/secrets").iter().enumerate() {
        if let Some(n) = s
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            name_with(e, &format!("secrets[{i}].name"), n, dns_subdomain);
        }
    }
}

fn event(obj: &Value, e: &mut FieldErrors) {
    let ns = str_at(obj, "/metadata/namespace").unwrap_or_default();
    if let Some(ins) = nonempty_str(obj, "/involvedObject/namespace") {
        if ins != ns {
            e.push(FieldError::invalid(
                "involvedObject.namespace",
                ins,
                "does not match event.namespace",
            ));
        }
    }
    if let Some(t) = nonempty_str(obj, "/type") {
        one_of(e, "type", t, &["Normal", "Warning"]);
    }
}

fn endpoints(obj: &Value, e: &mut FieldErrors) {
    for (i, s) in arr(obj, "/subsets").iter().enumerate() {
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(s, &format!("/{list}")).iter().enumerate() {
                let p = format!("subsets[{i}].{list}[{j}].ip");
                let ip = a.get("ip").and_then(Value::as_str).unwrap_or_default();
                if !is_ip(ip) {
                    e.push(FieldError::invalid(p, ip, "must be a valid IP address"));
                }
            }
        }
        for (j, p) in arr(s, "/ports").iter().enumerate() {
            let pp = format!("subsets[{i}].ports[{j}]");
            port_range(
                e,
                &format!("{pp}.port"),
                p.get("port").and_then(Value::as_i64).unwrap_or(0),
            );
            protocol(e, &format!("{pp}.protocol"), p);
        }
    }
}

fn node(obj: &Value, e: &mut FieldErrors) {
    if let Some(c) = nonempty_str(obj, "/spec/podCIDR") {
        if network::parse_cidr(c).is_none() {
            e.push(FieldError::invalid("spec.podCIDR", c, network::CIDR_MSG));
        }
    }
    for (i, t) in arr(obj, "/spec/taints").iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
        name_with(e, &format!("{p}.key"), key, names::qualified_name);
        let eff = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        if eff.is_empty() {
            e.push(FieldError::required(format!("{p}.effect"), ""));
        } else {
            one_of(
                e,
                &format!("{p}.effect"),
                eff,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(obj: &Value, e: &mut FieldErrors, detail: &str) {
    let modes = string_list(obj.pointer("/spec/accessModes"));
    if modes.is_empty() {
        e.push(FieldError::required("spec.accessModes", detail));
    }
    for m in modes {
        one_of(e, "spec.accessModes", m, ACCESS_MODES);
    }
}

fn persistent_volume(obj: &Value, e: &mut FieldErrors) {
    access_modes(obj, e, "");
    if obj
        .pointer("/spec/capacity")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
    {
        e.push(FieldError::required("spec.capacity", ""));
    }
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "mountOptions",
        "volumeMode",
        "nodeAffinity",
        "volumeAttributesClassName",
    ];
    let sources = obj
        .pointer("/spec")
        .and_then(Value::as_object)
        .map_or(0, |m| {
            m.keys()
                .filter(|k| !NOT_SOURCES.contains(&k.as_str()))
                .count()
        });
    if sources == 0 {
        e.push(FieldError::required("spec", "must specify a volume type"));
    } else if sources > 1 {
        e.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        ));
    }
    if let Some(p) = str_at(obj, "/spec/persistentVolumeReclaimPolicy") {
        one_of(
            e,
            "spec.persistentVolumeReclaimPolicy",
            p,
            &["Delete", "Recycle", "Retain"],
        );
    }
}

fn persistent_volume_claim(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    access_modes(obj, e, "at least 1 access mode is required");
    if obj.pointer("/spec/resources/requests/storage").is_none() {
        e.push(FieldError::required("spec.resources[storage]", ""));
    }
    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = s.as_object_mut() {
                m.remove("resources");
                m.remove("volumeAttributesClassName");
                // The binder fills volumeName once.
                if old.pointer("/spec/volumeName").is_none() {
                    m.remove("volumeName");
                }
            }
            s
        };
        if strip(obj) != strip(old) {
            e.push(FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }
}

fn limit_range(obj: &Value, e: &mut FieldErrors) {
    for (i, l) in arr(obj, "/spec/limits").iter().enumerate() {
        match l
            .get("type")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => e.push(FieldError::required(format!("spec.limits[{i}].type"), "")),
            Some(t) => one_of(
                e,
                &format!("spec.limits[{i}].type"),
                t,
                &["Container", "Pod", "PersistentVolumeClaim"],
            ),
        }
    }
}

fn replication_controller(obj: &Value, e: &mut FieldErrors) {
    if let Some(n) = obj.pointer("/spec/replicas").and_then(Value::as_i64) {
        non_negative(e, "spec.replicas", n);
    }
    let sel = obj.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if sel.as_object().is_none_or(|m| m.is_empty()) {
        e.push(FieldError::required("spec.selector", ""));
    } else {
        validate_labels(&sel, "spec.selector", e);
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if !selector_matches(&json!({"matchLabels": sel}), &labels) {
            e.push(FieldError::invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
    template(obj, "/spec/template", "spec.template", &["Always"], e);
}

// ---------- apps ----------

fn replicas_and_history(obj: &Value, e: &mut FieldErrors) {
    for f in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        if let Some(n) = obj.pointer(&format!("/spec/{f}")).and_then(Value::as_i64) {
            non_negative(e, &format!("spec.{f}"), n);
        }
    }
}

fn deployment(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    replicas_and_history(obj, e);
    workload_selector(obj, "deployment", "/spec/template", "spec.template", e);
    template(obj, "/spec/template", "spec.template", &["Always"], e);
    let st = str_at(obj, "/spec/strategy/type").unwrap_or("RollingUpdate");
    one_of(e, "spec.strategy.type", st, &["Recreate", "RollingUpdate"]);
    let ru = obj.pointer("/spec/strategy/rollingUpdate");
    if st == "Recreate" && ru.is_some_and(|v| !v.is_null()) {
        e.push(FieldError::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ));
    }
    if let Some(ru) = ru {
        let zero = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s == "0%" || s == "0",
            _ => false,
        };
        for f in ["maxUnavailable", "maxSurge"] {
            int_or_percent(ru.get(f), &format!("spec.strategy.rollingUpdate.{f}"), e);
        }
        if zero(ru.get("maxUnavailable")) && zero(ru.get("maxSurge")) {
            e.push(FieldError::invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.get("maxUnavailable").cloned().unwrap_or(Value::Null),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    if let (Some(pd), min) = (
        obj.pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_i64),
        obj.pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    ) {
        if pd <= min {
            e.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pd,
                "must be greater than minReadySeconds",
            ));
        }
    }
    immutable(e, obj, old, "/spec/selector", "spec.selector");
}

fn int_or_percent(v: Option<&Value>, path: &str, e: &mut FieldErrors) {
    match v {
        Some(Value::Number(n)) => non_negative(e, path, n.as_i64().unwrap_or(-1)),
        Some(Value::String(s)) => {
            let ok = s
                .strip_suffix('%')
                .and_then(|d| d.parse::<u32>().ok())
                .is_some_and(|p| p <= 100);
            if !ok {
                e.push(FieldError::invalid(path, s.as_str(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
            }
        }
        _ => {}
    }
}

fn replica_set(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    replicas_and_history(obj, e);
    workload_selector(obj, "replicaset", "/spec/template", "spec.template", e);
    if obj.pointer("/spec/template").is_some() {
        template(obj, "/spec/template", "spec.template", &["Always"], e);
    }
    immutable(e, obj, old, "/spec/selector", "spec.selector");
}

fn stateful_set(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    replicas_and_history(obj, e);
    workload_selector(obj, "statefulset", "/spec/template", "spec.template", e);
    template(obj, "/spec/template", "spec.template", &["Always"], e);
    if let Some(p) = str_at(obj, "/spec/podManagementPolicy") {
        one_of(
            e,
            "spec.podManagementPolicy",
            p,
            &["OrderedReady", "Parallel"],
        );
    }
    if let Some(t) = str_at(obj, "/spec/updateStrategy/type") {
        one_of(
            e,
            "spec.updateStrategy.type",
            t,
            &["OnDelete", "RollingUpdate"],
        );
    }
    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = s.as_object_mut() {
                for f in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                    "revisionHistoryLimit",
                ] {
                    m.remove(f);
                }
            }
            s
        };
        if strip(obj) != strip(old) {
            e.push(FieldError::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
}

fn daemon_set(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    replicas_and_history(obj, e);
    workload_selector(obj, "daemonset", "/spec/template", "spec.template", e);
    template(obj, "/spec/template", "spec.template", &["Always"], e);
    if let Some(t) = str_at(obj, "/spec/updateStrategy/type") {
        one_of(
            e,
            "spec.updateStrategy.type",
            t,
            &["OnDelete", "RollingUpdate"],
        );
    }
    immutable(e, obj, old, "/spec/selector", "spec.selector");
}

fn controller_revision(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    if let Some(n) = obj.get("revision").and_then(Value::as_i64) {
        non_negative(e, "revision", n);
    }
    immutable(e, obj, old, "/data", "data");
}

// ---------- batch ----------

fn job_spec(spec_owner: &Value, base_ptr: &str, base: &str, e: &mut FieldErrors) {
    let job = spec_owner.pointer(base_ptr).cloned().unwrap_or(json!({}));
    for f in ["parallelism", "completions", "backoffLimit"] {
        if let Some(n) = job.get(f).and_then(Value::as_i64) {
            non_negative(e, &format!("{base}.{f}"), n);
        }
    }
    if let Some(n) = job.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        positive(e, &format!("{base}.activeDeadlineSeconds"), n);
    }
    let int = |f: &str| job.get(f).and_then(Value::as_i64);
    let per_index = int("backoffLimitPerIndex");
    let max_failed = int("maxFailedIndexes");
    let completions = int("completions");
    let parallelism = int("parallelism");
    if let Some(n) = per_index {
        non_negative(e, &format!("{base}.backoffLimitPerIndex"), n);
    }
    if let Some(n) = max_failed {
        non_negative(e, &format!("{base}.maxFailedIndexes"), n);
        if per_index.is_none() {
            e.push(FieldError::required(
                format!("{base}.backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        }
    }
    let mode = job.get("completionMode").and_then(Value::as_str);
    if let Some(m) = mode {
        one_of(
            e,
            &format!("{base}.completionMode"),
            m,
            &["NonIndexed", "Indexed"],
        );
        if m == "Indexed" {
            if completions.is_none() {
                e.push(FieldError::required(
                    format!("{base}.completions"),
                    "when completion mode is Indexed",
                ));
            }
            job_indexed_limits(completions, parallelism, per_index, max_failed, base, e);
        }
    }
    if mode.is_none_or(|m| m == "NonIndexed") {
        for (f, v) in [
            ("backoffLimitPerIndex", per_index),
            ("maxFailedIndexes", max_failed),
        ] {
            if let Some(v) = v {
                e.push(FieldError::invalid(
                    format!("{base}.{f}"),
                    v,
                    "requires indexed completion mode",
                ));
            }
        }
    }
    if let Some(sp) = job.get("successPolicy").filter(|v| !v.is_null()) {
        if mode != Some("Indexed") {
            e.push(FieldError::invalid(
                format!("{base}.successPolicy"),
                sp.clone(),
                "requires indexed completion mode",
            ));
        } else {
            success_policy(sp, completions.unwrap_or(0), base, e);
        }
    }
    if let Some(rp) = job.get("podReplacementPolicy").and_then(Value::as_str) {
        let path = format!("{base}.podReplacementPolicy");
        if job.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
            if rp != "Failed" {
                e.push(FieldError::not_supported(path, rp, &["Failed"]));
            }
        } else {
            one_of(e, &path, rp, &["Failed", "TerminatingOrFailed"]);
        }
    }
    if job.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        let wrapped = json!({"spec": job});
        workload_selector(
            &wrapped,
            "job",
            "/spec/template",
            &format!("{base}.template"),
            e,
        );
    } else if let Some(sel) = job.get("selector").filter(|s| !s.is_null()) {
        label_selector(sel, &format!("{base}.selector"), e);
    }
    template(
        spec_owner,
        &format!("{base_ptr}/template"),
        &format!("{base}.template"),
        &["OnFailure", "Never"],
        e,
    );
    if let Some(policy) = job.get("podFailurePolicy").filter(|p| !p.is_null()) {
        pod_failure_policy(&job, policy, base, e);
    }
}

/// kube-apiserver's limits on Indexed jobs (they bound `completedIndexes` and
/// `failedIndexes`).
fn job_indexed_limits(
    completions: Option<i64>,
    parallelism: Option<i64>,
    per_index: Option<i64>,
    max_failed: Option<i64>,
    base: &str,
    e: &mut FieldErrors,
) {
    const MAX_PARALLELISM: i64 = 100_000;
    const MAX_FAILED_INDEXES: i64 = 100_000;
    const COMPLETIONS_SOFT_LIMIT: i64 = 100_000;
    const HIGH_COMPLETIONS_LIMIT: i64 = 10_000;
    if let Some(p) = parallelism.filter(|p| *p > MAX_PARALLELISM) {
        e.push(FieldError::invalid(
            format!("{base}.parallelism"),
            p,
            &format!(
                "must be less than or equal to {MAX_PARALLELISM} when completion mode is Indexed"
            ),
        ));
    }
    if let (Some(c), Some(m)) = (completions, max_failed) {
        if m > c {
            e.push(FieldError::invalid(
                format!("{base}.maxFailedIndexes"),
                m,
                "must be less than or equal to completions",
            ));
        }
    }
    if let Some(m) = max_failed.filter(|m| *m > MAX_FAILED_INDEXES) {
        e.push(FieldError::invalid(
            format!("{base}.maxFailedIndexes"),
            m,
            &format!("must be less than or equal to {MAX_FAILED_INDEXES}"),
        ));
    }
    if completions.is_some_and(|c| c > COMPLETIONS_SOFT_LIMIT) && per_index.is_some() {
        let high = format!(
            "must be less than or equal to {HIGH_COMPLETIONS_LIMIT} when completions are above {COMPLETIONS_SOFT_LIMIT} and used with backoff limit per index"
        );
        if max_failed.is_none() {
            e.push(FieldError::required(
                format!("{base}.maxFailedIndexes"),
                &format!("must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}"),
            ));
        }
        if let Some(p) = parallelism.filter(|p| *p > HIGH_COMPLETIONS_LIMIT) {
            e.push(FieldError::invalid(format!("{base}.parallelism"), p, &high));
        }
        if let Some(m) = max_failed.filter(|m| *m > HIGH_COMPLETIONS_LIMIT) {
            e.push(FieldError::invalid(
                format!("{base}.maxFailedIndexes"),
                m,
                &high,
            ));
        }
    }
}

/// kube's `parseIndexInterval`: one `x` or `x-y` of an index list.
fn index_interval(s: &str, completions: i64) -> Result<(i64, i64), String> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() > 2 {
        return Err(format!(
            "the fragment {} violates the requirement that an index interval can have at most two parts separated by '-'",
            serde_json::to_string(s).unwrap_or_default()
        ));
    }
    let num = |p: &str| -> Result<i64, String> {
        let q = serde_json::to_string(p).unwrap_or_default();
        let v: i64 = p
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {q}"))?;
        if v >= completions {
            return Err(format!("too large index: {q}"));
        }
        Ok(v)
    };
    let x = num(parts[0])?;
    if let Some(p) = parts.get(1) {
        let y = num(p)?;
        if x >= y {
            return Err(format!("non-increasing order, previous: {x}, current: {y}"));
        }
        return Ok((x, y));
    }
    Ok((x, x))
}

/// kube's `validateIndexesFormat`: how many indexes the list names.
fn indexes_format(s: &str, completions: i64) -> Result<i64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    let mut last: Option<i64> = None;
    let mut total = 0;
    for part in s.split(',') {
        let (x, y) = index_interval(part, completions)?;
        if let Some(l) = last.filter(|l| *l >= x) {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        total += y - x + 1;
        last = Some(y);
    }
    Ok(total)
}

/// `spec.successPolicy` of an Indexed job, with kube-apiserver's rules and words.
fn success_policy(sp: &Value, completions: i64, base: &str, e: &mut FieldErrors) {
    const MAX_RULES: usize = 20;
    const MAX_INDEXES_LEN: usize = 64 * 1024;
    let path = format!("{base}.successPolicy.rules");
    let rules = sp
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.is_empty() {
        e.push(FieldError::required(
            &path,
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_RULES {
        e.push(FieldError::too_many(&path, rules.len(), MAX_RULES));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{path}[{i}]");
        let idx = rule.get("succeededIndexes").and_then(Value::as_str);
        let count = rule.get("succeededCount").and_then(Value::as_i64);
        if idx.is_none() && count.is_none() {
            e.push(FieldError::required(
                &rp,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(idx) = idx {
            let ip = format!("{rp}.succeededIndexes");
            if idx.len() > MAX_INDEXES_LEN {
                e.push(FieldError::too_long(&ip, MAX_INDEXES_LEN));
            }
            match indexes_format(idx, completions) {
                Ok(n) => total = n,
                Err(m) => e.push(FieldError::invalid(
                    &ip,
                    idx,
                    &format!("error parsing succeededIndexes: {m}"),
                )),
            }
        }
        if let Some(c) = count {
            let cp = format!("{rp}.succeededCount");
            non_negative(e, &cp, c);
            if c > completions {
                e.push(FieldError::invalid(
                    &cp,
                    c,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if idx.is_some() && c > total {
                e.push(FieldError::invalid(
                    &cp,
                    c,
                    &format!("must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"),
                ));
            }
        }
    }
}

/// `spec.podFailurePolicy`, with kube-apiserver's rules and words.
fn pod_failure_policy(job: &Value, policy: &Value, base: &str, e: &mut FieldErrors) {
    let restart = job
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if restart != "Never" {
        e.push(FieldError::invalid(
            format!("{base}.template.spec.restartPolicy"),
            restart,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    let path = format!("{base}.podFailurePolicy.rules");
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.len() > 20 {
        e.push(FieldError::too_many(&path, rules.len(), 20));
    }
    let containers: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| job.pointer(&format!("/template/spec/{k}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str())
        .collect();
    let per_index = job
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{path}[{i}]");
        match rule.get("action").and_then(Value::as_str) {
            None | Some("") => e.push(FieldError::required(format!("{rp}.action"), "")),
            Some(a) => {
                one_of(
                    e,
                    &format!("{rp}.action"),
                    a,
                    &["Count", "FailIndex", "FailJob", "Ignore"],
                );
                if a == "FailIndex" && !per_index {
                    e.push(FieldError::invalid(
                        format!("{rp}.action"),
                        a,
                        "requires the backoffLimitPerIndex to be set",
                    ));
                }
            }
        }
        let codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conds = rule
            .get("onPodConditions")
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()));
        match (codes, conds) {
            (Some(_), Some(_)) => e.push(FieldError {
                kind: super::ErrorType::Invalid,
                field: rp.clone(),
                bad_value: None,
                detail: "specifying both OnExitCodes and OnPodConditions is not supported".into(),
            }),
            (None, None) => e.push(FieldError {
                kind: super::ErrorType::Invalid,
                field: rp.clone(),
                bad_value: None,
                detail: "specifying one of OnExitCodes and OnPodConditions is required".into(),
            }),
            _ => {}
        }
        if let Some(c) = codes {
            let cp = format!("{rp}.onExitCodes");
            if let Some(name) = c.get("containerName").and_then(Value::as_str) {
                if !containers.contains(&name) {
                    e.push(FieldError::invalid(
                        format!("{cp}.containerName"),
                        name,
                        "must be one of the container or initContainer names in the pod template",
                    ));
                }
            }
            let op = c
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            one_of(e, &format!("{cp}.operator"), op, &["In", "NotIn"]);
            let values: Vec<i64> = c
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let vp = format!("{cp}.values");
            if values.is_empty() {
                e.push(FieldError::required(&vp, "at least one value is required"));
            }
            if values.len() > 255 {
                e.push(FieldError::too_many(&vp, values.len(), 255));
            }
            for (j, v) in values.iter().enumerate() {
                if j > 0 && values[j - 1] == *v {
                    e.push(FieldError::duplicate(format!("{vp}[{j}]"), *v));
                } else if j > 0 && values[j - 1] > *v {
                    e.push(FieldError::invalid(
                        format!("{vp}[{j}]"),
                        *v,
                        "must be ordered",
                    ));
                }
                if op == "In" && *v == 0 {
                    e.push(FieldError::invalid(
                        format!("{vp}[{j}]"),
                        0,
                        "must not be 0 for the In operator",
                    ));
                }
            }
        }
        if let Some(c) = conds.and_then(Value::as_array) {
            for (j, pat) in c.iter().enumerate() {
                let pp = format!("{rp}.onPodConditions[{j}]");
                match pat.get("type").and_then(Value::as_str) {
                    None | Some("") => e.push(FieldError::required(format!("{pp}.type"), "")),
                    Some(_) => {}
                }
                if let Some(st) = pat.get("status").and_then(Value::as_str) {
                    one_of(
                        e,
                        &format!("{pp}.status"),
                        st,
                        &["True", "False", "Unknown"],
                    );
                }
            }
        }
    }
}

fn job(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    job_spec(obj, "/spec", "spec", e);
    if let Some(old) = old {
        immutable(e, obj, Some(old), "/spec/selector", "spec.selector");
        immutable(
            e,
            obj,
            Some(old),
            "/spec/completionMode",
            "spec.completionMode",
        );
        let suspended = old.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        if !suspended {
            immutable(e, obj, Some(old), "/spec/template", "spec.template");
        }
        if str_at(obj, "/spec/completionMode") != Some("Indexed") {
            immutable(e, obj, Some(old), "/spec/completions", "spec.completions");
        }
    }
}

fn cron_job(obj: &Value, e: &mut FieldErrors) {
    let name = str_at(obj, "/metadata/name").unwrap_or_default();
    if name.len() > 52 {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    match nonempty_str(obj, "/spec/schedule") {
        None => e.push(FieldError::required("spec.schedule", "")),
        Some(s) => {
            if let Err(m) = check_schedule(s) {
                e.push(FieldError::invalid("spec.schedule", s, &m));
            }
        }
    }
    if let Some(p) = str_at(obj, "/spec/concurrencyPolicy") {
        one_of(
            e,
            "spec.concurrencyPolicy",
            p,
            &["Allow", "Forbid", "Replace"],
        );
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        if let Some(n) = obj.pointer(&format!("/spec/{f}")).and_then(Value::as_i64) {
            non_negative(e, &format!("spec.{f}"), n);
        }
    }
    if obj.pointer("/spec/jobTemplate").is_none() {
        e.push(FieldError::required("spec.jobTemplate", ""));
    } else {
        job_spec(obj, "/spec/jobTemplate/spec", "spec.jobTemplate.spec", e);
    }
}

/// A cron schedule: a `@` macro or five fields of numbers, ranges, lists,
/// steps, `*`, `?`, or month/day names.
pub(super) fn check_schedule(s: &str) -> Result<(), String> {
    let s = s.trim();
    let s = if let Some(rest) = s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
        rest.split_once(' ').map(|x| x.1).unwrap_or_default()
    } else {
        s
    };
    if let Some(m) = s.strip_prefix('@') {
        return match m {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if m.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            fields.len()
        ));
    }
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    const NAMES: [&[&str]; 5] = [
        &[],
        &[],
        &[],
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ];
    for (i, f) in fields.iter().enumerate() {
        let (lo, hi) = bounds[i];
        let num = |t: &str| -> Result<u32, String> {
            if let Some(p) = NAMES[i].iter().position(|n| n.eq_ignore_ascii_case(t)) {
                return Ok(p as u32 + lo);
            }
            let n: u32 = t
                .parse()
                .map_err(|_| format!("failed to parse int from {t}"))?;
            if n < lo || n > hi {
                return Err(format!("end of range ({n}) above maximum ({hi}): {t}"));
            }
            Ok(n)
        };
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step {
                let st: u32 = st
                    .parse()
                    .map_err(|_| format!("failed to parse int from {st}"))?;
                if st == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!(
                            "beginning of range ({a}) beyond end of range ({b}): {part}"
                        ));
                    }
                }
                None => {
                    num(range)?;
                }
            }
        }
    }
    Ok(())
}

// ---------- rbac ----------

fn rules(obj: &Value, namespaced: bool, e: &mut FieldErrors) {
    for (i, r) in arr(obj, "/rules").iter().enumerate() {
        let p = format!("rules[{i}]");
        if string_list(r.get("verbs")).is_empty() {
            e.push(FieldError::required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = string_list(r.get("nonResourceURLs"));
        if namespaced && !urls.is_empty() {
            e.push(FieldError::invalid(
                format!("{p}.nonResourceURLs"),
                json!(urls),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        let resources = string_list(r.get("resources"));
        if !urls.is_empty()
            && (!resources.is_empty()
                || r.get("apiGroups")
                    .is_some_and(|g| !g.as_array().is_none_or(|a| a.is_empty())))
        {
            e.push(FieldError::invalid(
                format!("{p}.nonResourceURLs"),
                json!(urls),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        if urls.is_empty() {
            if r.get("apiGroups")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                e.push(FieldError::required(
                    format!("{p}.apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if resources.is_empty() {
                e.push(FieldError::required(
                    format!("{p}.resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
    }
}

fn binding(obj: &Value, old: Option<&Value>, namespaced: bool, e: &mut FieldErrors) {
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let rr = obj.get("roleRef").cloned().unwrap_or(json!({}));
    let ag = rr
        .get("apiGroup")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ag != "rbac.authorization.k8s.io" {
        e.push(FieldError::not_supported(
            "roleRef.apiGroup",
            ag,
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kind = rr.get("kind").and_then(Value::as_str).unwrap_or_default();
    one_of(e, "roleRef.kind", kind, kinds);
    match rr
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        None => e.push(FieldError::required("roleRef.name", "")),
        Some(n) => {
            for m in NameRule::PathSegment.check(n, false) {
                e.push(FieldError::invalid("roleRef.name", n, &m));
            }
        }
    }
    for (i, s) in arr(obj, "/subjects").iter().enumerate() {
        let p = format!("subjects[{i}]");
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or_default();
        one_of(
            e,
            &format!("{p}.kind"),
            kind,
            &["ServiceAccount", "User", "Group"],
        );
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            e.push(FieldError::required(format!("{p}.name"), ""));
        }
        if kind == "ServiceAccount" {
            if !name.is_empty() {
                name_with(e, &format!("{p}.name"), name, dns_subdomain);
            }
            if s.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
                && !namespaced
            {
                e.push(FieldError::required(format!("{p}.namespace"), ""));
            }
        } else if matches!(kind, "User" | "Group") {
            let g = s
                .get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if g != "rbac.authorization.k8s.io" {
                e.push(FieldError::not_supported(
                    format!("{p}.apiGroup"),
                    g,
                    &["rbac.authorization.k8s.io"],
                ));
            }
        }
    }
    if let Some(old) = old {
        if changed(obj, old, "/roleRef") {
            e.push(FieldError::invalid("roleRef", rr, "cannot change roleRef"));
        }
    }
}

// ---------- others ----------

fn lease(obj: &Value, e: &mut FieldErrors) {
    if let Some(n) = obj
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
    {
        positive(e, "spec.leaseDurationSeconds", n);
    }
    if let Some(n) = obj
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
    {
        non_negative(e, "spec.leaseTransitions", n);
    }
}

fn storage_class(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    match nonempty_str(obj, "/provisioner") {
        None => e.push(FieldError::required("provisioner", "")),
        Some(p) => name_with(e, "provisioner", p, names::qualified_name),
    }
    if let Some(p) = str_at(obj, "/reclaimPolicy") {
        one_of(e, "reclaimPolicy", p, &["Delete", "Retain"]);
    }
    if let Some(m) = str_at(obj, "/volumeBindingMode") {
        one_of(
            e,
            "volumeBindingMode",
            m,
            &["Immediate", "WaitForFirstConsumer"],
        );
    }
    if let Some(old) = old {
        for (f, msg) in [
            ("parameters", "updates to parameters are forbidden."),
            ("provisioner", "updates to provisioner are forbidden."),
            ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
        ] {
            if changed(obj, old, &format!("/{f}")) {
                e.push(FieldError::forbidden(f, msg));
            }
        }
        immutable(e, obj, Some(old), "/volumeBindingMode", "volumeBindingMode");
    }
}

/// Kubernetes' `ValidateVolumeAttachment` (+ `ValidateVolumeAttachmentUpdate`): the attacher
/// (a CSI driver name), the node and exactly one source are required, the spec never changes,
/// and the status' metadata and error messages are bounded.
fn volume_attachment(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    const MAX_METADATA: usize = 256 * 1024;
    const MAX_ERROR: usize = 1024;
    match nonempty_str(obj, "/spec/attacher") {
        None => e.push(FieldError::required("spec.attacher", "")),
        Some(a) => {
            if a.len() > 63 {
                e.push(FieldError::too_long("spec.attacher", 63));
            }
            name_with(e, "spec.attacher", &a.to_ascii_lowercase(), dns_subdomain);
        }
    }
    match nonempty_str(obj, "/spec/nodeName") {
        None => e.push(FieldError::required("spec.nodeName", "")),
        Some(n) => name_with(e, "spec.nodeName", n, dns_subdomain),
    }
    let pv = nonempty_str(obj, "/spec/source/persistentVolumeName");
    let inline = obj
        .pointer("/spec/source/inlineVolumeSpec")
        .is_some_and(|v| !v.is_null());
    match (pv, inline) {
        (Some(_), true) | (None, false) => e.push(FieldError::required(
            "spec.source",
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        )),
        (Some(p), false) => name_with(e, "spec.source.persistentVolumeName", p, dns_subdomain),
        (None, true) => {}
    }
    if let Some(m) = obj
        .pointer("/status/attachmentMetadata")
        .and_then(Value::as_object)
    {
        let size: usize = m
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > MAX_METADATA {
            e.push(FieldError::too_long(
                "status.attachmentMetadata",
                MAX_METADATA,
            ));
        }
    }
    for f in ["attachError", "detachError"] {
        if str_at(obj, &format!("/status/{f}/message")).is_some_and(|m| m.len() > MAX_ERROR) {
            e.push(FieldError::too_long(
                format!("status.{f}.message"),
                MAX_ERROR,
            ));
        }
    }
    immutable(e, obj, old, "/spec", "spec");
}

fn network_policy(obj: &Value, e: &mut FieldErrors) {
    if let Some(sel) = obj.pointer("/spec/podSelector") {
        label_selector(sel, "spec.podSelector", e);
    }
    for t in string_list(obj.pointer("/spec/policyTypes")) {
        one_of(e, "spec.policyTypes", t, &["Ingress", "Egress"]);
    }
    for dir in ["ingress", "egress"] {
        let peers = if dir == "ingress" { "from" } else { "to" };
        for (i, rule) in arr(obj, &format!("/spec/{dir}")).iter().enumerate() {
            let p = format!("spec.{dir}[{i}]");
            for (j, port) in arr(rule, "/ports").iter().enumerate() {
                protocol(e, &format!("{p}.ports[{j}].protocol"), port);
                if let Some(Value::Number(n)) = port.get("port") {
                    port_range(e, &format!("{p}.ports[{j}].port"), n.as_i64().unwrap_or(0));
                }
            }
            for (j, peer) in arr(rule, &format!("/{peers}")).iter().enumerate() {
                let pp = format!("{p}.{peers}[{j}]");
                if let Some(b) = peer.get("ipBlock") {
                    let cidr = b.get("cidr").and_then(Value::as_str).unwrap_or_default();
                    if network::parse_cidr(cidr).is_none() {
                        e.push(FieldError::invalid(
                            format!("{pp}.ipBlock.cidr"),
                            cidr,
                            network::CIDR_MSG,
                        ));
                    }
                    for (k, ex) in string_list(b.get("except")).into_iter().enumerate() {
                        if network::parse_cidr(ex).is_none() {
                            e.push(FieldError::invalid(
                                format!("{pp}.ipBlock.except[{k}]"),
                                ex,
                                network::CIDR_MSG,
                            ));
                        }
                    }
                }
                for s in ["podSelector", "namespaceSelector"] {
                    if let Some(sel) = peer.get(s) {
                        label_selector(sel, &format!("{pp}.{s}"), e);
                    }
                }
            }
        }
    }
}

/// A (Local)SubjectAccessReview: what a SelfSubjectAccessReview needs, and a subject.
fn sar(obj: &Value, e: &mut FieldErrors) {
    ssar(obj, e);
    let user = obj
        .pointer("/spec/user")
        .and_then(Value::as_str)
        .unwrap_or("");
    let groups = obj
        .pointer("/spec/groups")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty());
    if user.is_empty() && !groups {
        e.push(FieldError::invalid(
            "spec.user",
            json!(user),
            "at least one of user or group must be specified",
        ));
    }
}

fn ssar(obj: &Value, e: &mut FieldErrors) {
    let ra = obj
        .pointer("/spec/resourceAttributes")
        .is_some_and(|v| !v.is_null());
    let nra = obj
        .pointer("/spec/nonResourceAttributes")
        .is_some_and(|v| !v.is_null());
    if ra == nra {
        e.push(FieldError::invalid(
            "spec.resourceAttributes",
            obj.pointer("/spec").cloned().unwrap_or(Value::Null),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
}
