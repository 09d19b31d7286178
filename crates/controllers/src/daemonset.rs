//! The DaemonSet controller, after kube-controller-manager's: one pod per eligible node
//! (nodeSelector, required node affinity, taints against the pod's tolerations plus the
//! ones every daemon pod gets), each pinned to its node through a required node affinity
//! on `metadata.name` so the scheduler binds it there; failed daemon pods replaced;
//! RollingUpdate with maxUnavailable/maxSurge and OnDelete; ControllerRevisions (the
//! `controller-revision-hash` label) so `kubectl rollout status|history|undo` work; status
//! counters. Events: SuccessfulCreate, SuccessfulDelete, FailedDaemonPod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Taint, Toleration,
};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use crate::workload::hash::compute_hash;
use crate::workload::pods::{self, pod_from_template};
use crate::workload::revisions::{self, HASH_LABEL};
use crate::workload::{
    self, claim, controller_ref, key_of, Claim, Events, Expectations, ReconcileError, SeenRevision,
};
use crate::{Context, Error};

const CONTROLLER: &str = "daemonset-controller";
const TEMPLATE_GENERATION: &str = "pod-template-generation";

/// The tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// `Toleration.ToleratesTaint`.
pub(crate) fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let exists = t.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists;
    }
    if key != taint.key {
        return false;
    }
    exists || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(x)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|x| x.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > x
            } else {
                v < x
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node (labels and `metadata.name`).
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// (should run, should continue running) of a daemon pod made from `ds` on `node`
/// (`NodeShouldRunDaemonPod`).
pub(crate) fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let Some(ps) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return (false, false);
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = ps
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let affinity_ok = ps
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|req| {
            req.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node))
        });
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let mut tols = ps.tolerations.clone().unwrap_or_default();
    tols.extend(daemon_tolerations(ps.host_network == Some(true)));
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tols.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    let no_schedule = untolerated("NoSchedule");
    (!no_execute && !no_schedule, !no_execute)
}

/// The node a daemon pod is for: its `nodeName`, or the `metadata.name` its required node
/// affinity pins (`GetTargetNodeName`).
pub(crate) fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`.
fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    a
}

/// The pod `ds` runs on `node`, of revision `hash`.
pub(crate) fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.as_ref().expect("checked before planning");
    let mut pod = pod_from_template(
        &spec.template,
        ds.namespace().as_deref().unwrap_or_default(),
        Some(format!("{}-", ds.name_any())),
        None,
        controller_ref(ds),
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION.into(),
        ds.metadata.generation.unwrap_or(0).to_string(),
    );
    if let Some(ps) = pod.spec.as_mut() {
        ps.affinity = Some(pin_to_node(ps.affinity.take(), node));
        let mut tols = ps.tolerations.take().unwrap_or_default();
        for t in daemon_tolerations(ps.host_network == Some(true)) {
            if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
                tols.push(t);
            }
        }
        ps.tolerations = Some(tols);
    }
    pod
}

/// What one sync of a DaemonSet does.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Nodes to create a daemon pod on.
    pub(crate) create: Vec<String>,
    pub(crate) delete: Vec<Arc<Pod>>,
    pub(crate) status: DaemonSetStatus,
    pub(crate) events: Vec<(bool, &'static str, String)>,
}

/// A node that should run a daemon pod, with its pod of an old revision and of the
/// current one.
type NodePods = (String, Option<Arc<Pod>>, Option<Arc<Pod>>);

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The sync of `ds` (current revision `hash`) over `nodes` and the pods it controls.
pub(crate) fn plan(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    hash: &str,
    now: jiff::Timestamp,
) -> Result<Plan, ReconcileError> {
    let mut p = Plan::default();
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(p);
    };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for pod in owned {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match target_node(pod) {
            Some(n) => by_node.entry(n).or_default().push(pod.clone()),
            None => p.delete.push(pod.clone()),
        }
    }
    let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    // Pods for nodes that are gone.
    for (n, ps) in &by_node {
        if !known.contains(n) {
            p.delete.extend(ps.iter().cloned());
        }
    }
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let mut desired = 0;
    let mut current = 0;
    let mut misscheduled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut updated = 0;
    // (node, old pod, new pod) of nodes that should run a pod, for the rolling update.
    let mut runs: Vec<NodePods> = Vec::new();
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(ds, node);
        let mut pods_here = by_node.remove(&name).unwrap_or_default();
        if !pods_here.is_empty() && !run {
            misscheduled += 1;
        }
        if run {
            desired += 1;
        }
        if !keep {
            p.delete.extend(pods_here);
            continue;
        }
        // Failed pods are replaced.
        let (failed, live): (Vec<_>, Vec<_>) = pods_here
            .drain(..)
            .partition(|x| pods::phase(x) == "Failed");
        for f in failed {
            p.events.push((
                true,
                "FailedDaemonPod",
                format!(
                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                    f.namespace().unwrap_or_default(),
                    f.name_any()
                ),
            ));
            p.delete.push(f);
        }
        if !run {
            continue;
        }
        if live.is_empty() {
            p.create.push(name.clone());
            runs.push((name, None, None));
            continue;
        }
        current += 1;
        let mut live = live;
        live.sort_by_key(|x| x.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let new = live.iter().find(|x| pod_hash(x) == Some(hash)).cloned();
        let old = live.iter().find(|x| pod_hash(x) != Some(hash)).cloned();
        // More than one pod of a revision on a node: keep the oldest.
        let mut seen_new = false;
        let mut seen_old = false;
        for x in &live {
            let is_new = pod_hash(x) == Some(hash);
            let dup = if is_new { seen_new } else { seen_old };
            if dup {
                p.delete.push(x.clone());
            }
            if is_new {
                seen_new = true
            } else {
                seen_old = true
            }
        }
        let shown = new.as_ref().or(old.as_ref()).cloned();
        if let Some(x) = &shown {
            if pods::is_ready(x) {
                ready += 1;
            }
            if pods::is_available(x, min_ready, now) {
                available += 1;
            }
        }
        if new.is_some() {
            updated += 1;
        }
        runs.push((name, old, new));
    }
    if rolling {
        let n = desired.max(0);
        let surge = workload::scaled_value(ru.and_then(|r| r.max_surge.as_ref()), n, true, 0)?;
        let mut max_unavailable =
            workload::scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), n, true, 1)?;
        if surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let avail = |x: &Pod| pods::is_available(x, min_ready, now);
        if surge == 0 {
            let mut unavailable = 0;
            let mut free: Vec<Arc<Pod>> = Vec::new();
            let mut candidates: Vec<Arc<Pod>> = Vec::new();
            for (_, old, new) in &runs {
                match (old, new) {
                    (Some(o), None) => {
                        if !avail(o) {
                            free.push(o.clone());
                        } else {
                            candidates.push(o.clone());
                        }
                    }
                    (_, Some(nw)) => {
                        if !avail(nw) {
                            unavailable += 1;
                        }
                    }
                    (None, None) => unavailable += 1,
                }
            }
            let budget = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
            p.delete.extend(free);
            p.delete.extend(candidates.into_iter().take(budget));
        } else {
            // Surge: a new pod beside the old one, the old one deleted once the new is
            // available; nodes whose old pod is unavailable are replaced at once.
            let mut surging = 0;
            let mut start: Vec<String> = Vec::new();
            for (node, old, new) in &runs {
                match (old, new) {
                    (Some(o), None) => {
                        if !avail(o) {
                            p.delete.push(o.clone());
                        } else {
                            start.push(node.clone());
                        }
                    }
                    (Some(o), Some(nw)) => {
                        if avail(nw) {
                            p.delete.push(o.clone());
                        } else {
                            surging += 1;
                        }
                    }
                    _ => {}
                }
            }
            let room = usize::try_from(surge - surging).unwrap_or(0);
            p.create.extend(start.into_iter().take(room));
        }
    }
    let mut seen = HashSet::new();
    p.delete.retain(|x| seen.insert(x.uid()));
    let old = ds.status.clone().unwrap_or_default();
    p.status = DaemonSetStatus {
        collision_count: old.collision_count,
        conditions: old.conditions,
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_available: Some(available).filter(|v| *v > 0),
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_unavailable: Some(desired - available).filter(|v| *v > 0),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(updated).filter(|v| *v > 0),
    };
    Ok(p)
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    seen: Arc<SeenRevision>,
    expectations: Expectations<Pod>,
    events: Events,
}

/// Runs the DaemonSet controller.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let pods = ctx.informers.pods(&client);
    let pod_store = pods.store();
    let (node_store, node_writer) = reflector::store::<Node>();
    let seen = Arc::new(SeenRevision::default());
    let pod_events = pods.subscribe();
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(4));
    let ds_store = controller.store();
    let triggers = workload::child_triggers(
        pod_events,
        ds_store.clone(),
        seen.clone(),
        |d: &DaemonSet, p: &Pod| {
            workload::selector(d.spec.as_ref().map(|s| &s.selector))
                .ok()
                .flatten()
                .is_some_and(|s| workload::selects(Some(&s), p.metadata.labels.as_ref()))
        },
    );
    // A node whose labels, taints or schedulability change (or that comes or goes)
    // concerns every DaemonSet; heartbeats do not.
    let last: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let node_triggers = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .flat_map(move |ev| {
            let mut changed = false;
            match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let key = serde_json::to_string(&(
                        &n.metadata.labels,
                        n.spec.as_ref().map(|s| (&s.taints, s.unschedulable)),
                    ))
                    .unwrap_or_default();
                    let mut g = last.lock().unwrap_or_else(|e| e.into_inner());
                    changed = g.insert(n.name_any(), key.clone()).as_ref() != Some(&key);
                }
                Ok(watcher::Event::Delete(n)) => {
                    let mut g = last.lock().unwrap_or_else(|e| e.into_inner());
                    g.remove(&n.name_any());
                    changed = true;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            }
            let refs: Vec<ObjectRef<DaemonSet>> = if changed {
                ds_store
                    .state()
                    .iter()
                    .map(|d| ObjectRef::from_obj(d.as_ref()))
                    .collect()
            } else {
                Vec::new()
            };
            futures::stream::iter(refs)
        });
    let state = Arc::new(State {
        client: client.clone(),
        pods: pod_store,
        nodes: node_store,
        seen,
        expectations: Expectations::default(),
        events: Events::new(client, CONTROLLER),
    });
    controller
        .reconcile_on(triggers)
        .reconcile_on(node_triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped { name: CONTROLLER })
}

fn error_policy(_: Arc<DaemonSet>, e: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(error = %e, "daemonset sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = ds.namespace(), name = ds.name_any()))]
async fn reconcile(ds: Arc<DaemonSet>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let _ = st.pods.wait_until_ready().await;
    let _ = st.nodes.wait_until_ready().await;
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = key_of(&ds.metadata);
    let uid = ds.uid().unwrap_or_default();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let Some(sel) = workload::selector(Some(&spec.selector))? else {
        return Ok(Action::await_change());
    };
    let api: Api<Pod> = Api::namespaced(st.client.clone(), &ns);
    let (mine, others): (Vec<_>, Vec<_>) = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .partition(|p| workload::controller_of(&p.metadata).is_some_and(|r| r.uid == uid));
    let mut owned = Vec::new();
    for p in st
        .expectations
        .view(&key, mine, st.seen.get())
        .into_iter()
        .chain(others)
    {
        match claim(&uid, deleting, Some(&sel), &p.metadata) {
            Claim::Owned => owned.push(p),
            Claim::Adopt => {
                workload::adopt(&api, p.as_ref(), controller_ref(ds.as_ref())).await?;
                owned.push(p);
            }
            Claim::Release => workload::release(&api, p.as_ref(), &uid).await?,
            Claim::Ignore => {}
        }
    }
    let status = ds.status.clone().unwrap_or_default();
    let hash = compute_hash(&spec.template, status.collision_count);
    let ds_api: Api<DaemonSet> = Api::namespaced(st.client.clone(), &ns);
    if deleting {
        return Ok(Action::await_change());
    }
    let cr_api: Api<ControllerRevision> = Api::namespaced(st.client.clone(), &ns);
    let (_, all_revs) = revisions::ensure(
        &cr_api,
        controller_ref(ds.as_ref()),
        &sel,
        &spec.template,
        &hash,
    )
    .await?;
    let nodes = st.nodes.state();
    let plan = plan(&ds, &nodes, &owned, &hash, workload::now())?;
    for (warning, reason, note) in &plan.events {
        if *warning {
            st.events.warning(ds.object_ref(&()), reason, note.clone());
        }
    }
    let mut failure = None;
    if !plan.create.is_empty() {
        let (_, err) = workload::slow_start(plan.create.len(), |i| {
            let pod = daemon_pod(&ds, &plan.create[i], &hash);
            let (api, st, key, ds) = (&api, &st, &key, &ds);
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        st.events.normal(
                            ds.object_ref(&()),
                            "SuccessfulCreate",
                            format!("Created pod: {}", created.name_any()),
                        );
                        st.expectations.created(key, created);
                        Ok(())
                    }
                    Err(e) => {
                        st.events.warning(
                            ds.object_ref(&()),
                            "FailedCreate",
                            format!("Error creating: {}", workload::api_message(&e)),
                        );
                        Err(e)
                    }
                }
            }
        })
        .await;
        failure = err;
    }
    workload::delete_pods(
        &api,
        &plan.delete,
        &st.expectations,
        &key,
        &st.events,
        &ds.object_ref(&()),
        |pname| format!("Deleted pod: {pname}"),
    )
    .await?;
    workload::write_status(&ds_api, &name, ds.status.as_ref(), &plan.status).await?;
    let live: HashSet<String> = owned
        .iter()
        .filter_map(|p| pod_hash(p).map(|h| format!("{name}-{h}")))
        .chain([format!("{name}-{hash}")])
        .collect();
    revisions::cleanup(
        &cr_api,
        &all_revs,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    // Availability after minReadySeconds changes no object.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && plan.status.number_ready > plan.status.number_available.unwrap_or(0) {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::pods::test_pods::pod;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{Container, NodeSpec, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn ds(node_selector: Option<BTreeMap<String, String>>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("ds-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector::default(),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        node_selector,
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    fn on(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = pod(name, node, "Running", ready, 100);
        p.metadata.labels = Some([(HASH_LABEL.to_string(), hash.to_string())].into());
        Arc::new(p)
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(Some([("disk".to_string(), "ssd".to_string())].into()));
        let nodes = vec![
            node("a", &[("disk", "ssd")], vec![]),
            node("b", &[("disk", "hdd")], vec![]),
            node(
                "c",
                &[("disk", "ssd")],
                vec![taint("dedicated", "NoSchedule")],
            ),
            node(
                "d",
                &[("disk", "ssd")],
                vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
            ),
        ];
        let p = plan(&d, &nodes, &[], "h1", jiff::Timestamp::now()).unwrap();
        assert_eq!(p.create, ["a", "d"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
    }

    #[test]
    fn pods_are_pinned_with_node_affinity_and_tolerate_node_conditions() {
        let pod = daemon_pod(&ds(None), "a", "h1");
        assert_eq!(target_node(&pod).as_deref(), Some("a"));
        assert!(pod.spec.as_ref().unwrap().node_name.is_none());
        let tols = pod.spec.unwrap().tolerations.unwrap();
        assert!(tols
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")));
        assert_eq!(pod.metadata.labels.unwrap()[HASH_LABEL], "h1");
    }

    #[test]
    fn untolerated_no_execute_evicts_and_misscheduled_pods_go() {
        let d = ds(None);
        let nodes = vec![
            node("a", &[], vec![taint("gpu", "NoExecute")]),
            node("b", &[], vec![]),
        ];
        let owned = vec![on("pa", "a", "h1", true), on("pb", "b", "h1", true)];
        let p = plan(&d, &nodes, &owned, "h1", jiff::Timestamp::now()).unwrap();
        assert_eq!(
            p.delete.iter().map(|x| x.name_any()).collect::<Vec<_>>(),
            ["pa"]
        );
        assert_eq!(p.status.number_misscheduled, 1);
        assert!(p.create.is_empty());
    }

    #[test]
    fn rolling_update_replaces_max_unavailable_at_a_time() {
        let d = ds(None);
        let nodes = vec![
            node("a", &[], vec![]),
            node("b", &[], vec![]),
            node("c", &[], vec![]),
        ];
        let owned = vec![
            on("pa", "a", "old", true),
            on("pb", "b", "old", true),
            on("pc", "c", "old", true),
        ];
        let p = plan(&d, &nodes, &owned, "new", jiff::Timestamp::now()).unwrap();
        assert_eq!(p.delete.len(), 1);
        // One node updating (its new pod not ready yet): nothing more goes.
        let owned = vec![
            on("pa", "a", "new", false),
            on("pb", "b", "old", true),
            on("pc", "c", "old", true),
        ];
        let p = plan(&d, &nodes, &owned, "new", jiff::Timestamp::now()).unwrap();
        assert!(p.delete.is_empty());
        assert_eq!(p.status.updated_number_scheduled, Some(1));
    }

    #[test]
    fn failed_daemon_pods_are_replaced() {
        let d = ds(None);
        let nodes = vec![node("a", &[], vec![])];
        let mut f = pod("pa", "a", "Failed", false, 1);
        f.metadata.labels = Some([(HASH_LABEL.to_string(), "h1".to_string())].into());
        let p = plan(&d, &nodes, &[Arc::new(f)], "h1", jiff::Timestamp::now()).unwrap();
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.create, ["a"]);
        assert_eq!(p.events[0].1, "FailedDaemonPod");
    }

    #[test]
    fn toleration_semantics() {
        let t =
            |key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>| Toleration {
                key: key.map(Into::into),
                operator: Some(op.into()),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            };
        let tn = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        assert!(tolerates(&t(None, "Exists", None, None), &tn));
        assert!(tolerates(&t(Some("k"), "Equal", Some("v"), None), &tn));
        assert!(!tolerates(&t(Some("k"), "Equal", Some("w"), None), &tn));
        assert!(!tolerates(
            &t(Some("k"), "Exists", None, Some("NoExecute")),
            &tn
        ));
    }
}
