//! The PodDisruptionBudget status controller (kube-controller-manager's `disruption`
//! controller): what the eviction API reads before it lets a pod go.
//!
//! For each budget, the pods of its namespace matching its selector (an empty selector
//! matches every pod) give:
//! * `expectedPods`: with an integer `minAvailable`, the number of those pods; with a
//!   percentage or with `maxUnavailable`, the sum of the `spec.replicas` of their
//!   controllers, read through the scale subresource (a ReplicaSet of a Deployment counts
//!   as its Deployment; StatefulSets, ReplicationControllers and any kind with a scale
//!   subresource as themselves). A matching pod without a controller makes that impossible:
//!   the status says so (`SyncFailed`) and allows no disruption.
//! * `desiredHealthy`: `minAvailable` (percentages rounded up), or `expectedPods -
//!   maxUnavailable` (percentages rounded up), never below 0.
//! * `currentHealthy`: Ready pods that are not being deleted and were not just evicted
//!   (`disruptedPods`, entries expire after two minutes as in kube).
//! * `disruptionsAllowed` = `currentHealthy - desiredHealthy` (0 when negative or nothing
//!   is expected), `observedGeneration`, and the `DisruptionAllowed` condition
//!   (`SufficientPods` / `InsufficientPods`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::cluster;
use crate::{Context, Error};

/// How long an evicted pod listed in `disruptedPods` is not counted healthy while waiting
/// for its deletion (kube's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default();
    // One pod watch, caching and triggering (the controller polls it).
    let informer = ctx.informers.pods(&client);
    let (pods, pod_events) = (informer.store(), informer.touched());
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client.clone()), cfg.clone());
    let pdbs = controller.store();
    let resync = ctx.timers.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    let state = Arc::new(State {
        client: client.clone(),
        pods,
    });
    controller
        .reconcile_on(
            pod_events.flat_map(move |pod| futures::stream::iter(budgets_of(&pdbs, &pod))),
        )
        .reconcile_all_on(ticks)
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "disruption controller");
            }
        })
        .await;
    Err(Error::Stopped { name: "pdb" })
}

/// The budgets whose selector matches a pod.
fn budgets_of(pdbs: &Store<PodDisruptionBudget>, pod: &Pod) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.namespace();
    pdbs.state()
        .into_iter()
        .filter(|b| b.namespace() == ns && selector(b).is_some_and(|s| s.matches(pod.labels())))
        .map(|b| ObjectRef::from_obj(&*b))
        .collect()
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

fn error_policy(_b: Arc<PodDisruptionBudget>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "disruption reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// A budget's selector; `None` when it has none or it is invalid (it matches nothing).
pub fn selector(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let sel = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(sel).ok()
}

/// The pods a budget counts: its namespace's pods matching its selector.
pub fn matching_pods<'a>(pdb: &PodDisruptionBudget, pods: &'a [Arc<Pod>]) -> Vec<&'a Pod> {
    let Some(sel) = selector(pdb) else {
        return vec![];
    };
    let ns = pdb.namespace();
    pods.iter()
        .map(|p| &**p)
        .filter(|p| p.namespace() == ns && sel.matches(p.labels()))
        .collect()
}

/// A pod's controller: its ownerReference with `controller: true`.
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Why expected pods could not be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("{0}")]
    Lookup(String),
    #[error("invalid {field} {value:?}: must be an integer or a percentage")]
    Invalid { field: &'static str, value: String },
}

/// An int or a percentage (`"50%"`) scaled against `total`, rounded up (kube's
/// `GetScaledValueFromIntOrPercent(…, roundUp=true)`).
pub fn scaled(v: &IntOrString, total: i32, field: &'static str) -> Result<i32, CountError> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let invalid = || CountError::Invalid {
                field,
                value: s.clone(),
            };
            let pct: i64 = s
                .strip_suffix('%')
                .ok_or_else(invalid)?
                .parse()
                .map_err(|_| invalid())?;
            let v = pct.saturating_mul(i64::from(total)).saturating_add(99) / 100;
            Ok(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// What a budget's arithmetic needs from outside: the pods, and per controller (by uid)
/// its scale.
pub struct Observed<'a> {
    pub pods: Vec<&'a Pod>,
    /// `spec.replicas` of each controller, by the controller's uid, as resolved for the
    /// pods (a ReplicaSet of a Deployment maps to the Deployment).
    pub scales: Result<BTreeMap<String, i32>, CountError>,
    /// Unix seconds now.
    pub now: i64,
}

/// The status a budget should have (the condition keeps its transition time while its
/// status does not change).
pub fn compute_status(pdb: &PodDisruptionBudget, obs: &Observed<'_>) -> PodDisruptionBudgetStatus {
    let spec = pdb.spec.clone().unwrap_or_default();
    let prev = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation;
    // disruptedPods: recent evictions of pods not yet being deleted are not healthy.
    let mut disrupted = BTreeMap::new();
    for (name, t) in prev.disrupted_pods.iter().flatten() {
        let Some(pod) = obs.pods.iter().find(|p| p.name_any() == *name) else {
            continue;
        };
        if cluster::pod_terminating(pod) {
            continue;
        }
        if t.0.as_second() + DELETION_TIMEOUT.as_secs() as i64 > obs.now {
            disrupted.insert(name.clone(), t.clone());
        }
    }
    let healthy = obs
        .pods
        .iter()
        .filter(|p| !cluster::pod_terminating(p) && cluster::pod_ready(p))
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .count() as i32;

    let counted: Result<(i32, i32), CountError> = (|| {
        if let Some(max) = &spec.max_unavailable {
            let expected = total(&obs.scales.clone()?);
            let max = scaled(max, expected, "maxUnavailable")?;
            Ok((expected, expected.saturating_sub(max).max(0)))
        } else if let Some(min) = &spec.min_available {
            match min {
                IntOrString::Int(n) => Ok((obs.pods.len() as i32, *n)),
                IntOrString::String(_) => {
                    let expected = total(&obs.scales.clone()?);
                    Ok((expected, scaled(min, expected, "minAvailable")?))
                }
            }
        } else {
            Ok((0, 0))
        }
    })();

    let (expected, desired, condition) = match counted {
        Ok((expected, desired)) => {
            let allowed = if expected <= 0 {
                0
            } else {
                healthy.saturating_sub(desired).max(0)
            };
            let (status, reason) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            (expected, desired, (status, reason, String::new(), allowed))
        }
        Err(e) => (0, 0, ("False", "SyncFailed", e.to_string(), 0)),
    };
    let (cstatus, reason, message, allowed) = condition;
    let transition = prev
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed" && c.status == cstatus)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| {
            Time(k8s_openapi::jiff::Timestamp::from_second(obs.now).unwrap_or_default())
        });
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: cstatus.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }]),
    }
}

/// The replicas of all controllers (saturating: API data may be absurd).
fn total(scales: &BTreeMap<String, i32>) -> i32 {
    scales
        .values()
        .fold(0i32, |a, b| a.saturating_add((*b).max(0)))
}

/// The earliest time (Unix seconds) a `disruptedPods` entry expires, to look again then.
fn next_expiry(st: &PodDisruptionBudgetStatus) -> Option<i64> {
    st.disrupted_pods
        .iter()
        .flatten()
        .map(|(_, t)| t.0.as_second() + DELETION_TIMEOUT.as_secs() as i64)
        .min()
}

/// Resolves the controllers of the pods to their scales (uid → replicas).
async fn scales(
    client: &kube::Client,
    ns: &str,
    pods: &[&Pod],
) -> Result<BTreeMap<String, i32>, CountError> {
    let lookup = |e: kube::Error| CountError::Lookup(format!("reading a controller's scale: {e}"));
    let mut out = BTreeMap::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_of(pod) else {
            return Err(CountError::NoController(pod.name_any()));
        };
        if seen.insert(owner.uid.clone(), ()).is_some() {
            continue;
        }
        let group = owner
            .api_version
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("");
        let (uid, replicas) = match (group, owner.kind.as_str()) {
            ("apps", "ReplicaSet") => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get(&owner.name)
                    .await
                    .map_err(lookup)?;
                let dep = rs
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .cloned();
                match dep {
                    Some(d) => {
                        if out.contains_key(&d.uid) {
                            continue;
                        }
                        let s = Api::<Deployment>::namespaced(client.clone(), ns)
                            .get_scale(&d.name)
                            .await
                            .map_err(lookup)?;
                        (d.uid, s.spec.and_then(|s| s.replicas).unwrap_or(0))
                    }
                    None => {
                        let s = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                            .get_scale(&owner.name)
                            .await
                            .map_err(lookup)?;
                        (
                            owner.uid.clone(),
                            s.spec.and_then(|s| s.replicas).unwrap_or(0),
                        )
                    }
                }
            }
            ("apps", "StatefulSet") => {
                let s = Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .get_scale(&owner.name)
                    .await
                    .map_err(lookup)?;
                (
                    owner.uid.clone(),
                    s.spec.and_then(|s| s.replicas).unwrap_or(0),
                )
            }
            ("", "ReplicationController") => {
                let s = Api::<ReplicationController>::namespaced(client.clone(), ns)
                    .get_scale(&owner.name)
                    .await
                    .map_err(lookup)?;
                (
                    owner.uid.clone(),
                    s.spec.and_then(|s| s.replicas).unwrap_or(0),
                )
            }
            _ => {
                // Any other kind with a scale subresource.
                let (g, v) = owner
                    .api_version
                    .split_once('/')
                    .unwrap_or(("", owner.api_version.as_str()));
                let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, &owner.kind));
                let s = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
                    .get_scale(&owner.name)
                    .await
                    .map_err(lookup)?;
                (
                    owner.uid.clone(),
                    s.spec.and_then(|s| s.replicas).unwrap_or(0),
                )
            }
        };
        out.insert(uid, replicas);
    }
    Ok(out)
}

fn needs_scales(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.is_some_and(|s| s.max_unavailable.is_some())
        || matches!(
            spec.and_then(|s| s.min_available.as_ref()),
            Some(IntOrString::String(_))
        )
}

#[tracing::instrument(level = "debug", skip_all, fields(pdb = %cluster::ns_name(&*pdb)))]
async fn reconcile(pdb: Arc<PodDisruptionBudget>, s: Arc<State>) -> Result<Action, ReconcileError> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.namespace().unwrap_or_default();
    // Every pod must be known, not an empty cache at start.
    cluster::ready(&s.pods).await;
    let all = s.pods.state();
    let pods = matching_pods(&pdb, &all);
    let scales = if needs_scales(&pdb) {
        scales(&s.client, &ns, &pods).await
    } else {
        Ok(BTreeMap::new())
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let obs = Observed { pods, scales, now };
    let status = compute_status(&pdb, &obs);
    let next = next_expiry(&status);
    if pdb.status.as_ref() != Some(&status) {
        let mut out = (*pdb).clone();
        out.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(s.client.clone(), &ns);
        match api
            .replace_status(&pdb.name_any(), &PostParams::default(), &out)
            .await
        {
            Ok(_) => {}
            // Changed meanwhile (e.g. an eviction recorded a disrupted pod): the watch
            // brings it back.
            Err(e) if cluster::is_stale(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match next {
        Some(t) => Action::requeue(Duration::from_secs((t - now).max(1) as u64)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "namespace": "ns", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, ready: bool, labels: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    fn obs<'a>(pods: Vec<&'a Pod>, scales: &[(&str, i32)]) -> Observed<'a> {
        Observed {
            pods,
            scales: Ok(scales.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            now: 1_000_000,
        }
    }

    fn cond(st: &PodDisruptionBudgetStatus) -> (String, String) {
        let c = &st.conditions.as_ref().unwrap()[0];
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 5, "x"), Ok(3));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 3, "x"), Ok(1));
        assert_eq!(scaled(&IntOrString::String("0%".into()), 3, "x"), Ok(0));
        assert_eq!(scaled(&IntOrString::Int(2), 9, "x"), Ok(2));
        assert!(scaled(&IntOrString::String("half".into()), 3, "x").is_err());
        // Absurd API data saturates instead of overflowing.
        assert_eq!(
            scaled(
                &IntOrString::String("9223372036854775807%".into()),
                i32::MAX,
                "x"
            ),
            Ok(i32::MAX)
        );
        let b = pdb(serde_json::json!({"minAvailable": i32::MIN, "selector": {}}));
        let all = vec![pod("a", true, serde_json::json!({}))];
        let st = compute_status(&b, &obs(matching_pods(&b, &all), &[]));
        assert_eq!(st.disruptions_allowed, i32::MAX);
        let b = pdb(serde_json::json!({"maxUnavailable": i32::MIN, "selector": {}}));
        let st = compute_status(
            &b,
            &obs(matching_pods(&b, &all), &[("a", i32::MAX), ("b", i32::MAX)]),
        );
        assert_eq!(st.expected_pods, i32::MAX);
    }

    #[test]
    fn min_available_int_counts_pods() {
        let b = pdb(
            serde_json::json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
        );
        let all = vec![
            pod("a", true, serde_json::json!({"app": "web"})),
            pod("b", true, serde_json::json!({"app": "web"})),
            pod("c", true, serde_json::json!({"app": "web"})),
            pod("d", false, serde_json::json!({"app": "web"})),
            pod("e", true, serde_json::json!({"app": "db"})),
        ];
        let pods = matching_pods(&b, &all);
        assert_eq!(pods.len(), 4);
        let st = compute_status(&b, &obs(pods, &[]));
        assert_eq!(
            (
                st.current_healthy,
                st.desired_healthy,
                st.expected_pods,
                st.disruptions_allowed
            ),
            (3, 2, 4, 1)
        );
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(cond(&st), ("True".into(), "SufficientPods".into()));
        let pods = matching_pods(&b, &all[..2]);
        let st = compute_status(&b, &obs(pods, &[]));
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(cond(&st), ("False".into(), "InsufficientPods".into()));
    }

    #[test]
    fn max_unavailable_uses_controller_scale() {
        let b = pdb(
            serde_json::json!({"maxUnavailable": "34%", "selector": {"matchLabels": {"app": "web"}}}),
        );
        let all: Vec<Arc<Pod>> = (0..3)
            .map(|i| pod(&format!("p{i}"), true, serde_json::json!({"app": "web"})))
            .collect();
        let pods = matching_pods(&b, &all);
        // The deployment wants 3: 34% of 3 rounds up to 2 unavailable → 1 desired.
        let st = compute_status(&b, &obs(pods.clone(), &[("dep", 3)]));
        assert_eq!(
            (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
            (3, 1, 2)
        );
        // Scale unknown (a pod without a controller): no disruption, SyncFailed.
        let o = Observed {
            pods,
            scales: Err(CountError::NoController("p0".into())),
            now: 0,
        };
        let st = compute_status(&b, &o);
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(cond(&st), ("False".into(), "SyncFailed".into()));
    }

    #[test]
    fn min_available_percent_and_empty_selector() {
        let b = pdb(serde_json::json!({"minAvailable": "50%", "selector": {}}));
        let all: Vec<Arc<Pod>> = (0..4)
            .map(|i| pod(&format!("p{i}"), i != 0, serde_json::json!({"x": "y"})))
            .collect();
        let pods = matching_pods(&b, &all);
        assert_eq!(pods.len(), 4, "an empty selector matches every pod");
        let st = compute_status(&b, &obs(pods, &[("rs", 4)]));
        assert_eq!(
            (
                st.expected_pods,
                st.desired_healthy,
                st.current_healthy,
                st.disruptions_allowed
            ),
            (4, 2, 3, 1)
        );
        // No selector at all: nothing.
        let none = pdb(serde_json::json!({"minAvailable": 1}));
        assert!(matching_pods(&none, &all).is_empty());
    }

    #[test]
    fn disrupted_pods_are_not_healthy_until_they_expire() {
        let mut b = pdb(
            serde_json::json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
        );
        let now = 1_000_000i64;
        let t = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("a".to_string(), t(now - 10)),
                ("b".to_string(), t(now - 500)),
                ("gone".to_string(), t(now - 10)),
            ])),
            ..Default::default()
        });
        let all = vec![
            pod("a", true, serde_json::json!({"app": "web"})),
            pod("b", true, serde_json::json!({"app": "web"})),
        ];
        let st = compute_status(&b, &obs(matching_pods(&b, &all), &[]));
        assert_eq!(st.current_healthy, 1, "a was just evicted");
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(
            st.disrupted_pods
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(next_expiry(&st), Some(now - 10 + 120));
    }
}
