//! Kubernetes' LimitRanger: a namespace's LimitRanges fill default requests and limits
//! into a pod's containers (init containers too) and refuse pods and claims outside
//! their `min`, `max` and `maxLimitRequestRatio`, with kube-apiserver's messages.
//!
//! Pods are checked on create only (their containers cannot change afterwards, as in
//! Kubernetes); claims on create and update (expansion).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use h8s_types::quota::{pod_resources, Amount, Usage};
use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use serde::Deserialize as _;
use serde_json::{json, Map, Value};

use crate::admission::{LimitRangeHook, Operation, Request};
use crate::error::{ApiError, Subject};
use crate::obj;

/// The annotation recording what the plugin defaulted.
pub const LIMIT_RANGER_ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// h8s's [`LimitRangeHook`]: Kubernetes' LimitRanger.
pub struct LimitRanges;

impl LimitRangeHook for LimitRanges {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: &'a mut Value,
        ranges: &'a [Value],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let subject = Subject {
                group: req.res.group,
                resource: req.res.plural,
                name: req.name,
            };
            // Objects being deleted are left alone.
            if req.old.is_some_and(obj::is_deleting) {
                return Ok(());
            }
            let ranges: Vec<LimitRange> = ranges
                .iter()
                .filter_map(|r| LimitRange::deserialize(r).ok())
                .collect();
            let errors = match req.res.plural {
                "pods" if req.op == Operation::Create => {
                    apply_defaults(obj, &ranges);
                    let pod = Pod::deserialize(&*obj).map_err(|e| {
                        ApiError::bad_request(format!("the pod is not well-formed: {e}"))
                    })?;
                    validate_pod(&pod, &ranges)
                }
                "persistentvolumeclaims" => {
                    let pvc = PersistentVolumeClaim::deserialize(&*obj).map_err(|e| {
                        ApiError::bad_request(format!("the claim is not well-formed: {e}"))
                    })?;
                    validate_claim(&pvc, &ranges)
                }
                _ => Vec::new(),
            };
            match aggregate(errors) {
                None => Ok(()),
                Some(msg) => Err(ApiError::forbidden_about(&subject, &msg)),
            }
        })
    }
}

/// Kubernetes' error aggregate: one message as it is, several deduplicated in brackets.
fn aggregate(errors: Vec<String>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => seen.pop(),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

type List = BTreeMap<String, KQuantity>;

/// A range's Container defaults: (requests, limits).
fn container_defaults(lr: &LimitRange) -> (List, List) {
    let mut requests = List::new();
    let mut limits = List::new();
    for item in lr.spec.iter().flat_map(|s| &s.limits) {
        if item.type_ == "Container" {
            requests.extend(item.default_request.clone().unwrap_or_default());
            limits.extend(item.default.clone().unwrap_or_default());
        }
    }
    (requests, limits)
}

/// Fills the ranges' default requests and limits into every container and init container
/// that leaves them out, and records what it set in `kubernetes.io/limit-ranger`.
pub fn apply_defaults(pod: &mut Value, ranges: &[LimitRange]) {
    let mut notes: Vec<String> = Vec::new();
    for lr in ranges {
        let (requests, limits) = container_defaults(lr);
        if requests.is_empty() && limits.is_empty() {
            continue;
        }
        for (list, what) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            let Some(Value::Array(cs)) = pod.pointer_mut(&format!("/spec/{list}")) else {
                continue;
            };
            for c in cs.iter_mut().filter(|c| c.is_object()) {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let set_limits = merge(c, "limits", &limits);
                let set_requests = merge(c, "requests", &requests);
                if !set_requests.is_empty() {
                    notes.push(format!(
                        "{} request for {what} {name}",
                        set_requests.join(", ")
                    ));
                }
                if !set_limits.is_empty() {
                    notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        // The create strategy derived the QoS class before admission; kube-apiserver
        // derives it after mutating admission, so from the defaults set here.
        if let Some(spec) = pod.get("spec") {
            let qos = h8s_types::defaults::pod_qos(spec);
            if let Some(st) = pod.get_mut("status").and_then(Value::as_object_mut) {
                st.insert("qosClass".into(), json!(qos));
            }
        }
        let meta = obj::meta_mut(pod);
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        ann[LIMIT_RANGER_ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Sets `defaults` missing from a container's `resources.<field>`; the names it set,
/// sorted.
fn merge(c: &mut Value, field: &str, defaults: &List) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let Some(cm) = c.as_object_mut() else {
        return Vec::new();
    };
    // A malformed container is left as sent, for validation to refuse.
    let res = cm
        .entry("resources")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(rm) = res.as_object_mut() else {
        return Vec::new();
    };
    let list = rm.entry(field).or_insert_with(|| Value::Object(Map::new()));
    let Some(lm) = list.as_object_mut() else {
        return Vec::new();
    };
    let mut set = Vec::new();
    for (k, v) in defaults {
        if !lm.contains_key(k) {
            lm.insert(k.clone(), json!(v.0));
            set.push(k.clone());
        }
    }
    set.sort();
    set
}

/// A resource list's amounts with their printed forms.
fn amounts(list: Option<&List>) -> BTreeMap<String, (Amount, String)> {
    list.into_iter()
        .flatten()
        .filter_map(|(k, q)| Amount::parse(&q.0).map(|a| (k.clone(), (a, a.to_string()))))
        .collect()
}

fn usage_amounts(u: &Usage) -> BTreeMap<String, (Amount, String)> {
    u.0.iter()
        .map(|(k, a)| (k.clone(), (*a, a.to_string())))
        .collect()
}

type Observed = BTreeMap<String, (Amount, String)>;

/// kube's `minConstraint`.
fn min_constraint(
    kind: &str,
    r: &str,
    enforced: &Amount,
    requests: &Observed,
    limits: &Observed,
) -> Option<String> {
    let Some((req, req_s)) = requests.get(r) else {
        return Some(format!(
            "minimum {r} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if req.milli < enforced.milli {
        return Some(format!(
            "minimum {r} usage per {kind} is {enforced}, but request is {req_s}"
        ));
    }
    match limits.get(r) {
        Some((lim, lim_s)) if lim.milli < enforced.milli => Some(format!(
            "minimum {r} usage per {kind} is {enforced}, but limit is {lim_s}"
        )),
        _ => None,
    }
}

/// kube's `maxConstraint`.
fn max_constraint(
    kind: &str,
    r: &str,
    enforced: &Amount,
    requests: &Observed,
    limits: &Observed,
) -> Option<String> {
    let Some((lim, lim_s)) = limits.get(r) else {
        return Some(format!(
            "maximum {r} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if lim.milli > enforced.milli {
        return Some(format!(
            "maximum {r} usage per {kind} is {enforced}, but limit is {lim_s}"
        ));
    }
    match requests.get(r) {
        Some((req, req_s)) if req.milli > enforced.milli => Some(format!(
            "maximum {r} usage per {kind} is {enforced}, but request is {req_s}"
        )),
        _ => None,
    }
}

/// kube's `maxRequestConstraint` (claims, which have no limits).
fn max_request_constraint(
    kind: &str,
    r: &str,
    enforced: &Amount,
    requests: &Observed,
) -> Option<String> {
    let Some((req, req_s)) = requests.get(r) else {
        return Some(format!(
            "maximum {r} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    (req.milli > enforced.milli)
        .then(|| format!("maximum {r} usage per {kind} is {enforced}, but request is {req_s}"))
}

/// kube's `limitRequestRatioConstraint`.
fn ratio_constraint(
    kind: &str,
    r: &str,
    enforced: &Amount,
    requests: &Observed,
    limits: &Observed,
) -> Option<String> {
    let req = requests.get(r).map_or(0, |(a, _)| a.milli);
    let lim = limits.get(r).map_or(0, |(a, _)| a.milli);
    if req == 0 {
        return Some(format!("{r} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"));
    }
    if lim == 0 {
        return Some(format!("{r} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"));
    }
    let ratio = lim as f64 / req as f64;
    (ratio * 1000.0 > enforced.milli as f64).then(|| {
        format!(
            "{r} max limit to request ratio per {kind} is {enforced}, but provided ratio is {ratio:.6}"
        )
    })
}

/// Checks `min`, `max` and `maxLimitRequestRatio` of one item against observed requests
/// and limits.
fn check_item(item: &LimitRangeItem, requests: &Observed, limits: &Observed) -> Vec<String> {
    let kind = item.type_.as_str();
    let mut out = Vec::new();
    for (k, (a, _)) in amounts(item.min.as_ref()) {
        out.extend(min_constraint(kind, &k, &a, requests, limits));
    }
    for (k, (a, _)) in amounts(item.max.as_ref()) {
        out.extend(max_constraint(kind, &k, &a, requests, limits));
    }
    for (k, (a, _)) in amounts(item.max_limit_request_ratio.as_ref()) {
        out.extend(ratio_constraint(kind, &k, &a, requests, limits));
    }
    out
}

/// kube's `PodValidateLimitFunc`: Container items against each container and init
/// container, Pod items against the pod's effective requests and limits (no overhead).
pub fn validate_pod(pod: &Pod, ranges: &[LimitRange]) -> Vec<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for item in ranges
        .iter()
        .flat_map(|lr| lr.spec.iter().flat_map(|s| &s.limits))
    {
        match item.type_.as_str() {
            "Container" => {
                for c in spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                {
                    let r = c.resources.as_ref();
                    let requests = amounts(r.and_then(|r| r.requests.as_ref()));
                    let limits = amounts(r.and_then(|r| r.limits.as_ref()));
                    out.extend(check_item(item, &requests, &limits));
                }
            }
            "Pod" => {
                let requests = usage_amounts(&pod_resources(pod, false, false));
                let limits = usage_amounts(&pod_resources(pod, true, false));
                out.extend(check_item(item, &requests, &limits));
            }
            _ => {}
        }
    }
    out
}

/// kube's PersistentVolumeClaim limits: `min` and `max` of the requested storage.
pub fn validate_claim(pvc: &PersistentVolumeClaim, ranges: &[LimitRange]) -> Vec<String> {
    let requests = amounts(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    );
    let mut out = Vec::new();
    for item in ranges
        .iter()
        .flat_map(|lr| lr.spec.iter().flat_map(|s| &s.limits))
        .filter(|i| i.type_ == "PersistentVolumeClaim")
    {
        let kind = item.type_.as_str();
        for (k, (a, _)) in amounts(item.min.as_ref()) {
            out.extend(min_constraint(kind, &k, &a, &requests, &Observed::new()));
        }
        for (k, (a, _)) in amounts(item.max.as_ref()) {
            out.extend(max_request_constraint(kind, &k, &a, &requests));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}}))
            .unwrap()
    }

    #[test]
    fn defaults_fill_containers_and_init_containers() {
        let lr = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}});
        apply_defaults(&mut pod, &[lr]);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "1", "memory": "128Mi"}})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"],
            json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}})
        );
        assert_eq!(
            pod["metadata"]["annotations"][LIMIT_RANGER_ANNOTATION],
            "LimitRanger plugin set: memory request for container c; memory limit for container c; cpu, memory request for init container i; cpu, memory limit for init container i"
        );
    }

    #[test]
    fn min_max_ratio_with_kubes_words() {
        let lr = range(json!([
            {"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "4"}},
            {"type": "Pod", "max": {"cpu": "2"}}]));
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "150m", "memory": "2Gi"}}},
            {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": "8", "memory": "64Mi"}}}]}}))
        .unwrap();
        let errs = validate_pod(&pod, &[lr]);
        assert_eq!(
            aggregate(errs).unwrap(),
            "[minimum cpu usage per Container is 100m, but request is 50m, \
             maximum memory usage per Container is 1Gi, but limit is 2Gi, \
             cpu max limit to request ratio per Container is 4, but provided ratio is 8.000000, \
             maximum cpu usage per Pod is 2, but limit is 8150m]"
        );
        let none = range(json!([{"type": "Container", "max": {"cpu": "1"}}]));
        let bare: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "a", "image": "i"}]}}))
                .unwrap();
        assert_eq!(
            validate_pod(&bare, &[none]),
            vec!["maximum cpu usage per Container is 1.  No limit is specified"]
        );
    }

    #[test]
    fn claims_min_and_max() {
        let lr = range(
            json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]),
        );
        let claim = |size: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({"spec": {"resources": {"requests": {"storage": size}}}}))
                .unwrap()
        };
        assert_eq!(
            validate_claim(&claim("500Mi"), std::slice::from_ref(&lr)),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        assert_eq!(
            validate_claim(&claim("20Gi"), std::slice::from_ref(&lr)),
            vec!["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
        assert!(validate_claim(&claim("5Gi"), &[lr]).is_empty());
    }
}
