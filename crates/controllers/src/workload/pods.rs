//! Pods made from templates, and what controllers read off pods: active, ready,
//! available, and which to delete first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Kubernetes' `GetPodFromTemplate`: labels, annotations, finalizers and spec of the
/// template, in `namespace`, controlled by `owner`.
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: Option<String>,
    name: Option<String>,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.into()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

pub(crate) fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished (Succeeded/Failed) nor being deleted (`controller.IsPodActive`).
pub(crate) fn is_active(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition is True; with the time it became so.
pub(crate) fn ready_since(p: &Pod) -> Option<Option<jiff::Timestamp>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

pub(crate) fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready_seconds` (`podutil.IsPodAvailable`).
pub(crate) fn is_available(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Orders pods so the ones to delete first come first (`controller.ActivePodsWithRanks`):
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before
/// ready, lower `pod-deletion-cost` first, more pods on the same node first, ready for a
/// shorter time first, more restarts first, newer first.
pub(crate) fn sort_for_deletion(pods: &mut [Arc<Pod>]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        if !node(p).is_empty() {
            *per_node.entry(node(p).to_string()).or_default() += 1;
        }
    }
    let rank = |p: &Pod| per_node.get(node(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| deletion_order(a, b, rank(a), rank(b)));
}

fn deletion_order(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize) -> Ordering {
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let ord = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    ord(a)
        .cmp(&ord(b))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(deletion_cost(a).cmp(&deletion_cost(b)))
        .then(rank_b.cmp(&rank_a))
        .then_with(
            || match (ready_since(a).flatten(), ready_since(b).flatten()) {
                // Ready for less time first: the later transition goes first.
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            },
        )
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let ca = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let cb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (ca, cb) {
                (None, None) => Ordering::Equal,
                (None, _) => Ordering::Less,
                (_, None) => Ordering::Greater,
                (Some(x), Some(y)) => y.cmp(&x),
            }
        })
}

#[cfg(test)]
pub(crate) mod test_pods {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A pod for tests: `name`, on `node` ("" unscheduled), `phase`, ready or not,
    /// created `age_secs` ago.
    pub(crate) fn pod(name: &str, node: &str, phase: &str, ready: bool, age_secs: i64) -> Pod {
        let now = jiff::Timestamp::now();
        let t = now - jiff::SignedDuration::from_secs(age_secs);
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(t)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(t)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pods::pod;
    use super::*;

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_newer() {
        let mut v: Vec<Arc<Pod>> = vec![
            Arc::new(pod("running-ready-old", "n1", "Running", true, 100)),
            Arc::new(pod("running-ready-new", "n2", "Running", true, 10)),
            Arc::new(pod("running-unready", "n3", "Running", false, 50)),
            Arc::new(pod("pending", "n4", "Pending", false, 50)),
            Arc::new(pod("unscheduled", "", "Pending", false, 500)),
        ];
        sort_for_deletion(&mut v);
        let names: Vec<_> = v.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "running-ready-new",
                "running-ready-old"
            ]
        );
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let p = pod("p", "n", "Running", true, 5);
        let now = jiff::Timestamp::now();
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 3, now));
        assert!(!is_available(&p, 30, now));
        assert!(!is_available(&pod("q", "n", "Running", false, 50), 0, now));
    }
}
