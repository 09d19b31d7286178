//! Pods: graceful deletion while bound to a node, `pods/binding`, `pods/eviction` and
//! the disruption-budget rules eviction follows (kube-apiserver's `EvictionREST`).

use h8s_machinery::LabelSelector;
use h8s_types::{FieldErrors, Resource};
use serde_json::{json, Value};

use super::{Strategy, Sub};
use crate::error::{ApiError, Cause};
use crate::obj;

/// kube-apiserver refuses evictions while a budget has this many disruptions its
/// controller has not confirmed.
pub(crate) const MAX_DISRUPTED_PODS: usize = 2000;

/// The message of every eviction a disruption budget refuses.
pub(crate) const EVICTION_BLOCKED: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

pub(crate) struct Pod;

impl Strategy for Pod {
    fn subresource(&self, res: &Resource, name: &str) -> Option<Sub> {
        match name {
            "binding" => Some(Sub::Binding),
            "eviction" => Some(Sub::Eviction),
            _ => super::Generic.subresource(res, name),
        }
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }

    /// A binding only sets `spec.nodeName` (the binding handler checks it was unset);
    /// every other update is validated as usual.
    fn validate_update(
        &self,
        res: &Resource,
        sub: Option<Sub>,
        new: &Value,
        old: &Value,
    ) -> Result<(), FieldErrors> {
        match sub {
            Some(Sub::Binding) => Ok(()),
            _ => super::Generic.validate_update(res, sub, new, old),
        }
    }

    /// Pods bound to a node and not finished get a graceful period (their agent finishes
    /// the deletion): the request's, else `spec.terminationGracePeriodSeconds` (30).
    fn grace_period(&self, o: &Value, requested: Option<i64>) -> Option<i64> {
        let node = obj::at(o, "spec.nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let phase = obj::at(o, "status.phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            return None;
        }
        let g = requested.unwrap_or_else(|| {
            obj::at(o, "spec.terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        (g > 0).then_some(g)
    }
}

/// What an eviction does with a pod before any budget is consulted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// Delete the pod at once: it is finished, pending or already being deleted, so it
    /// disrupts nothing.
    IgnoreBudgets,
    /// Consult the pod's disruption budget.
    CheckBudget,
}

/// Kubernetes' `canIgnorePDB`.
pub(crate) fn eviction_of(pod: &Value) -> Eviction {
    let phase = obj::at(pod, "status.phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || obj::is_deleting(pod) {
        Eviction::IgnoreBudgets
    } else {
        Eviction::CheckBudget
    }
}

/// Whether a PodDisruptionBudget's selector covers a pod (policy/v1: an empty selector
/// covers every pod of the namespace, a missing one none).
pub(crate) fn budget_covers(pdb: &Value, pod: &Value) -> bool {
    match obj::at(pdb, "spec.selector") {
        None | Some(Value::Null) => false,
        Some(sel) => LabelSelector::from_json(sel)
            .map(|s| s.matches_object(pod))
            .unwrap_or(false),
    }
}

/// Whether the pod's `Ready` condition is true (how eviction judges health).
pub(crate) fn pod_ready(pod: &Value) -> bool {
    obj::at(pod, "status.conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn int(o: &Value, path: &str) -> i64 {
    obj::at(o, path).and_then(Value::as_i64).unwrap_or(0)
}

fn blocked(cause: String, retry_after: Option<u32>) -> ApiError {
    let mut e = ApiError::too_many_requests(EVICTION_BLOCKED);
    e.details.causes.push(Cause {
        reason: "DisruptionBudget".into(),
        message: cause,
        field: String::new(),
    });
    e.details.retry_after = retry_after;
    e
}

/// Whether an unready pod may go without spending the budget: always under
/// `unhealthyPodEvictionPolicy: AlwaysAllow`, and under the default `IfHealthyBudget`
/// while the budget has the healthy pods it needs.
pub(crate) fn unhealthy_pod_may_go(pdb: &Value, pod: &Value) -> bool {
    if pod_ready(pod) {
        return false;
    }
    let policy = obj::at(pdb, "spec.unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        .unwrap_or("IfHealthyBudget");
    if policy == "AlwaysAllow" {
        return true;
    }
    let desired = int(pdb, "status.desiredHealthy");
    int(pdb, "status.currentHealthy") >= desired && desired > 0
}

/// Kubernetes' `checkAndDecrement`: the budget's new state when the eviction of `pod`
/// is allowed (one disruption spent, the pod recorded in `status.disruptedPods` at
/// `now`), or the error that refuses it.
pub(crate) fn spend_budget(pdb: &Value, pod_name: &str, now: &str) -> Result<Value, ApiError> {
    let name = obj::name(pdb);
    let generation = obj::meta(pdb)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if int(pdb, "status.observedGeneration") < generation {
        return Err(blocked(
            format!("The disruption budget {name} is still being processed by the server."),
            Some(10),
        ));
    }
    let allowed = int(pdb, "status.disruptionsAllowed");
    let subject = crate::error::Subject {
        group: "policy",
        resource: "poddisruptionbudget",
        name,
    };
    if allowed < 0 {
        return Err(ApiError::forbidden_about(
            &subject,
            "pdb disruptions allowed is negative",
        ));
    }
    let disrupted = obj::at(pdb, "status.disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden_about(
            &subject,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(blocked(
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                int(pdb, "status.desiredHealthy"),
                int(pdb, "status.currentHealthy")
            ),
            None,
        ));
    }
    let mut new = pdb.clone();
    obj::set_at(&mut new, "status.disruptionsAllowed", json!(allowed - 1));
    if allowed - 1 == 0 {
        set_condition(
            &mut new,
            json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                   "message": "", "lastTransitionTime": now,
                   "observedGeneration": generation}),
        );
    }
    if !obj::at(&new, "status.disruptedPods").is_some_and(Value::is_object) {
        obj::set_at(&mut new, "status.disruptedPods", json!({}));
    }
    if let Some(m) = new
        .pointer_mut("/status/disruptedPods")
        .and_then(Value::as_object_mut)
    {
        m.insert(pod_name.to_string(), json!(now));
    }
    Ok(new)
}

/// Replaces (or adds) the condition of `cond["type"]` in `status.conditions`, keeping
/// its transition time when the status does not change.
fn set_condition(o: &mut Value, cond: Value) {
    if !obj::at(o, "status.conditions").is_some_and(Value::is_array) {
        obj::set_at(o, "status.conditions", json!([]));
    }
    let Some(list) = o
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    match list.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(c) if c["status"] == cond["status"] => {
            let t = c["lastTransitionTime"].clone();
            *c = cond;
            c["lastTransitionTime"] = t;
        }
        Some(c) => *c = cond,
        None => list.push(cond),
    }
}
