//! Node lifecycle and taint-based eviction, as kube-controller-manager's
//! `node-lifecycle-controller` and `taint-eviction-controller` do it.
//!
//! * Health: every `node_monitor_period` each Node is checked. Its probe time moves to "now"
//!   whenever its Lease in `kube-node-lease` is renewed or its `Ready` condition's heartbeat
//!   changes (observed with this controller's own clock, so clock skew between nodes does not
//!   matter). A node not heard from for `node_monitor_grace_period` gets `Ready`,
//!   `MemoryPressure`, `DiskPressure` and `PIDPressure` set to `Unknown` (reason
//!   `NodeStatusUnknown`, "Kubelet stopped posting node status."); when that takes a Ready
//!   node down, its pods' `Ready` condition is set `False` (MarkPodsNotReady) and a
//!   `NodeNotReady` event is recorded.
//! * Taints: `Ready=Unknown` → `node.kubernetes.io/unreachable` NoExecute + NoSchedule,
//!   `Ready=False` → `node.kubernetes.io/not-ready` NoExecute + NoSchedule, pressure
//!   conditions and `spec.unschedulable` → their NoSchedule taints; taints of conditions that
//!   cleared are removed. Other taints are left alone.
//! * Eviction: a pod on a node with a NoExecute taint it does not tolerate is deleted at once;
//!   one whose tolerations carry `tolerationSeconds` is deleted that long after the taint was
//!   first seen (the shortest of its matching tolerations), and the deletion is cancelled if
//!   the taint goes first. Each deletion records `TaintManagerEviction` "Marking for deletion
//!   Pod ns/name" and sets the pod's `DisruptionTarget` condition.
//!
//! * Rate limiting ([`zones`]): a node that goes NotReady/Unknown is tainted NoExecute only
//!   when its zone's queue hands it out — 0.1 nodes/s in a healthy zone
//!   (`--node-eviction-rate`), slower or not at all in a zone mostly down
//!   (`--secondary-node-eviction-rate`, `--unhealthy-zone-threshold`,
//!   `--large-cluster-size-threshold`), and never while every zone is down (master
//!   disruption: the NoExecute taints are removed). A taint it has is kept, and swapped at
//!   once between `not-ready` and `unreachable` as its Ready condition changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cluster::{self, Events};
use crate::{Context, Error};

pub mod zones;

use zones::{Transition, ZoneTainter};

/// The namespace of node heartbeats.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Taint of a node whose `Ready` condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node whose `Ready` condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NO_EXECUTE: &str = "NoExecute";
const NO_SCHEDULE: &str = "NoSchedule";

/// Conditions a silent node has set to `Unknown` (kube's list).
const UNKNOWN_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Condition → (status → NoSchedule taint key), kube's `nodeConditionToTaintKeyStatusMap`.
const NO_SCHEDULE_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

/// Runs the node lifecycle and the taint eviction loops until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let wake = Arc::new(Notify::new());
    // The reflector tasks end with this future (named bindings keep them).
    let (nodes, _nodes_task) = cluster::reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        Some(wake.clone()),
    );
    let (leases, _leases_task) = cluster::reflect(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
        None,
    );
    let informer = ctx.informers.pods(&client);
    let (pods, _pods_task) = (informer.store(), informer.waking(wake.clone()));
    cluster::ready(&nodes).await;
    cluster::ready(&leases).await;
    cluster::ready(&pods).await;
    let monitor = Monitor {
        client: client.clone(),
        events: Events::new(client.clone(), "node-controller"),
        grace: ctx.timers.node_monitor_grace_period,
        health: HashMap::new(),
        mark_pending: HashSet::new(),
        tainter: ZoneTainter::new(ctx.timers.node_eviction),
    };
    let eviction = Eviction {
        client: client.clone(),
        events: Events::new(client, "taint-eviction-controller"),
        scheduled: HashMap::new(),
    };
    let period = ctx.timers.node_monitor_period;
    tokio::join!(
        monitor.run(nodes.clone(), leases, pods.clone(), period),
        eviction.run(nodes, pods, wake, period),
    );
    Err(Error::Stopped {
        name: "nodelifecycle",
    })
}

// ---------------------------------------------------------------------------------------
// Health.

/// What the controller last saw of a node, and when (its own clock).
#[derive(Debug, Clone)]
pub struct NodeHealth {
    /// When the node was last heard from.
    pub probe: Instant,
    lease_renew: Option<Time>,
    heartbeat: Option<Time>,
}

impl NodeHealth {
    /// A node first seen at `now`: it has a full grace period from here.
    pub fn new(node: &Node, lease: Option<&Lease>, now: Instant) -> Self {
        NodeHealth {
            probe: now,
            lease_renew: lease_renew_time(lease),
            heartbeat: ready_heartbeat(node),
        }
    }

    /// Moves the probe time to `now` if the lease was renewed or the Ready heartbeat changed
    /// since the last look.
    pub fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Instant) {
        let renew = lease_renew_time(lease);
        if renew.is_some() && (self.lease_renew.is_none() || renew > self.lease_renew) {
            self.probe = now;
            self.lease_renew = renew;
        }
        let hb = ready_heartbeat(node);
        if hb.is_some() && hb != self.heartbeat {
            self.probe = now;
            self.heartbeat = hb;
        }
    }
}

fn lease_renew_time(lease: Option<&Lease>) -> Option<Time> {
    lease?.spec.as_ref()?.renew_time.as_ref().map(|t| Time(t.0))
}

fn ready_heartbeat(node: &Node) -> Option<Time> {
    condition(node, "Ready")?.last_heartbeat_time.clone()
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The `Ready` condition's status (`True`, `False`, `Unknown`), if the node has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The conditions of a node that has not been heard from within the grace period: each of
/// Ready/MemoryPressure/DiskPressure/PIDPressure `Unknown` (kube's reasons and messages).
/// `None` when they already are.
pub fn unknown_conditions(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for t in UNKNOWN_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == t) {
            None => {
                conds.push(NodeCondition {
                    type_: t.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conds)
}

// ---------------------------------------------------------------------------------------
// Taints.

/// What may happen to a node's NoExecute taint (`not-ready` or `unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExecute {
    /// None wanted: master disruption mode (every zone down), nothing is evicted.
    Remove,
    /// Keep the one the node has (swapped at once between `not-ready` and `unreachable` as
    /// its Ready condition says, as kube does), but add none: the node waits its turn in
    /// its zone's rate-limited queue.
    Keep,
    /// The node's turn came: add the taint its Ready condition calls for.
    Add,
}

/// The taints this controller manages that `node` should carry now, from its conditions and
/// `spec.unschedulable`; `no_execute` says whether a NoExecute taint may be added or kept.
pub fn wanted_taints(node: &Node, no_execute: NoExecute) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let has_no_execute = || {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.effect == NO_EXECUTE && managed(t)))
    };
    let allowed = match no_execute {
        NoExecute::Remove => false,
        NoExecute::Keep => has_no_execute(),
        NoExecute::Add => true,
    };
    match ready_status(node) {
        Some("False") if allowed => out.push((TAINT_NOT_READY.to_string(), NO_EXECUTE)),
        Some("Unknown") if allowed => out.push((TAINT_UNREACHABLE.to_string(), NO_EXECUTE)),
        _ => {}
    }
    for (cond, status, key) in NO_SCHEDULE_TAINTS {
        if condition(node, cond).is_some_and(|c| c.status == status) {
            out.push((key.to_string(), NO_SCHEDULE));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        out.push((TAINT_UNSCHEDULABLE.to_string(), NO_SCHEDULE));
    }
    out
}

fn managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        NO_EXECUTE => t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE,
        NO_SCHEDULE => {
            t.key == TAINT_UNSCHEDULABLE || NO_SCHEDULE_TAINTS.iter().any(|(_, _, k)| *k == t.key)
        }
        _ => false,
    }
}

/// The node's new `spec.taints`, or `None` if they are already right: the managed taints
/// that should be there are added (NoExecute ones stamped `timeAdded`), those that should not
/// are removed, everything else is kept as it is. See [`NoExecute`] for `no_execute`.
pub fn reconcile_taints(node: &Node, now: &Time, no_execute: NoExecute) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted_taints(node, no_execute);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || wanted.iter().any(|(k, e)| *k == t.key && *e == t.effect))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.clone(),
                effect: effect.to_string(),
                value: None,
                time_added: (*effect == NO_EXECUTE).then(|| now.clone()),
            });
        }
    }
    (out != current).then_some(out)
}

/// A node's zone as kube keys it (region and zone labels).
fn zone_of(node: &Node) -> String {
    let l = node.labels();
    format!(
        "{}:\u{0}:{}",
        l.get("topology.kubernetes.io/region")
            .map(String::as_str)
            .unwrap_or_default(),
        l.get("topology.kubernetes.io/zone")
            .map(String::as_str)
            .unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------
// Eviction decision.

/// Whether a toleration tolerates a taint (kube's `Toleration.ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// What the taint manager does with a pod on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No NoExecute taint, or all tolerated forever.
    Keep,
    /// A NoExecute taint is not tolerated (or a toleration's seconds are ≤ 0).
    EvictNow,
    /// Every NoExecute taint is tolerated, the shortest for this long.
    EvictAfter(Duration),
}

/// The taint manager's decision for a pod with `tolerations` on a node with `taints`: for
/// each NoExecute taint the first toleration that tolerates it counts; one untolerated
/// taint evicts at once, else the shortest `tolerationSeconds` of the counted ones.
pub fn eviction_verdict(taints: &[Taint], tolerations: &[Toleration]) -> Verdict {
    let mut min: Option<i64> = None;
    let mut any = false;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        any = true;
        let Some(tol) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        if let Some(s) = tol.toleration_seconds {
            if s <= 0 {
                return Verdict::EvictNow;
            }
            min = Some(min.map_or(s, |m| m.min(s)));
        }
    }
    match (any, min) {
        (false, _) | (true, None) => Verdict::Keep,
        (true, Some(s)) => Verdict::EvictAfter(Duration::from_secs(s as u64)),
    }
}

/// The pod's conditions with `Ready` set `False` (transition time `now`), or `None` if it
/// has no Ready condition or it already is False (kube's MarkPodsNotReady).
pub fn pod_not_ready_conditions(pod: &Pod, now: &Time) -> Option<Vec<PodCondition>> {
    let mut conds = pod.status.as_ref()?.conditions.clone()?;
    let c = conds.iter_mut().find(|c| c.type_ == "Ready")?;
    if c.status == "False" {
        return None;
    }
    c.status = "False".into();
    c.last_transition_time = Some(now.clone());
    Some(conds)
}

// ---------------------------------------------------------------------------------------
// The loops.

struct Monitor {
    client: kube::Client,
    events: Events,
    grace: Duration,
    health: HashMap<String, NodeHealth>,
    /// Nodes whose pods still have to be marked not ready (a failed attempt is retried).
    mark_pending: HashSet<String>,
    /// The per-zone, rate-limited queues of nodes waiting for their NoExecute taint.
    tainter: ZoneTainter,
}

impl Monitor {
    async fn run(
        mut self,
        nodes: Store<Node>,
        leases: Store<Lease>,
        pods: Store<Pod>,
        period: Duration,
    ) {
        let mut next_pass = Instant::now();
        loop {
            if Instant::now() >= next_pass {
                self.pass(&nodes, &leases, &pods)
                    .instrument(tracing::debug_span!("node_monitor"))
                    .await;
                next_pass = Instant::now() + period;
            }
            self.taint_due(&nodes, &pods)
                .instrument(tracing::debug_span!("no_execute_tainting"))
                .await;
            // Wake for the next health pass, or sooner when a zone's queue hands out its next
            // node (not more often than kube's tainting pass, every 100 ms).
            let now = Instant::now();
            let wake = self
                .tainter
                .next_due(now)
                .map_or(next_pass, |d| d.min(next_pass));
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(100))).await;
        }
    }

    async fn pass(&mut self, nodes: &Store<Node>, leases: &Store<Lease>, pods: &Store<Pod>) {
        let now = Instant::now();
        let all = nodes.state();
        let names: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
        self.health.retain(|n, _| names.contains(n));
        self.mark_pending.retain(|n| names.contains(n));
        self.tainter.retain_nodes(|n| names.contains(n));
        // Health first: every node's status as of this pass.
        let mut current: Vec<Node> = Vec::with_capacity(all.len());
        for node in all {
            let name = node.name_any();
            let lease = leases.get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
            let h = self
                .health
                .entry(name.clone())
                .or_insert_with(|| NodeHealth::new(&node, lease.as_deref(), now));
            h.observe(&node, lease.as_deref(), now);
            let silent = now.duration_since(h.probe) > self.grace;
            match self.update_health(&node, silent).await {
                Ok(n) => current.push(n),
                Err(e) => {
                    log_write_error(&name, &e);
                    current.push((*node).clone());
                }
            }
        }
        // Zone states and their tainting rates.
        let mut by_zone: BTreeMap<String, Vec<Option<&str>>> = BTreeMap::new();
        for n in &current {
            by_zone.entry(zone_of(n)).or_default().push(ready_status(n));
        }
        match self.tainter.handle_disruption(&by_zone, now) {
            Transition::EnterMasterDisruption => tracing::warn!(
                "every node is not Ready: master disruption mode, no NoExecute taints (no evictions)"
            ),
            Transition::ExitMasterDisruption => {
                tracing::info!("some nodes are Ready again: leaving master disruption mode");
                // Every node gets a fresh grace period, as in kube.
                for h in self.health.values_mut() {
                    h.probe = now;
                }
            }
            Transition::None => {}
        }
        let disrupted = self.tainter.master_disrupted();
        // Then taints and pods: a node that is not Ready keeps (or swaps) the NoExecute taint
        // it has and otherwise waits in its zone's queue; a Ready one leaves the queue.
        for node in current {
            let name = node.name_any();
            let zone = zone_of(&node);
            let mode = if disrupted {
                NoExecute::Remove
            } else {
                match ready_status(&node) {
                    Some("True") => self.tainter.cancel(&zone, &name),
                    Some("False") | Some("Unknown") => {
                        self.tainter.enqueue(&zone, &name, now);
                    }
                    _ => {}
                }
                NoExecute::Keep
            };
            if let Err(e) = self.update_taints(node, mode, pods).await {
                log_write_error(&name, &e);
            }
        }
    }

    /// Taints NoExecute the nodes whose turn came in their zone's queue.
    async fn taint_due(&mut self, nodes: &Store<Node>, pods: &Store<Pod>) {
        for (zone, name) in self.tainter.take_due(Instant::now()) {
            let Some(node) = nodes.get(&ObjectRef::new(&name)) else {
                continue;
            };
            if !matches!(ready_status(&node), Some("False") | Some("Unknown")) {
                continue;
            }
            match self
                .update_taints((*node).clone(), NoExecute::Add, pods)
                .await
            {
                Ok(_) => tracing::info!(node = %name, zone = %zone, "node tainted NoExecute"),
                Err(e) => {
                    log_write_error(&name, &e);
                    self.tainter.retry(&zone, &name, Instant::now());
                }
            }
        }
    }

    /// Sets the node's conditions Unknown when it went silent; gives the node as it is now.
    async fn update_health(&mut self, node: &Node, silent: bool) -> Result<Node, kube::Error> {
        let mut node = node.clone();
        if !silent {
            return Ok(node);
        }
        let ts = cluster::now();
        let Some(conds) = unknown_conditions(&node, &ts) else {
            return Ok(node);
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let name = node.name_any();
        let was_ready = ready_status(&node) == Some("True");
        node.status.get_or_insert_with(Default::default).conditions = Some(conds);
        node = api
            .replace_status(&name, &PostParams::default(), &node)
            .await?;
        tracing::info!(node = %name, "node stopped posting status: Ready=Unknown");
        if was_ready {
            self.events
                .publish(
                    &node.object_ref(&()),
                    EventType::Normal,
                    "NodeNotReady",
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            self.mark_pending.insert(name);
        }
        Ok(node)
    }

    /// Brings the node's managed taints in line with its conditions (a node changed meanwhile
    /// is read again once, as kube's `SwapNodeControllerTaint`), and marks its pods not ready
    /// when it went down.
    async fn update_taints(
        &mut self,
        mut node: Node,
        no_execute: NoExecute,
        pods: &Store<Pod>,
    ) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = node.name_any();
        let mut fresh_read = false;
        while let Some(taints) = reconcile_taints(&node, &cluster::now(), no_execute) {
            let mut want = node.clone();
            want.spec.get_or_insert_with(Default::default).taints = Some(taints);
            match api.replace(&name, &PostParams::default(), &want).await {
                Ok(n) => {
                    node = n;
                    tracing::info!(node = %name, ready = ?ready_status(&node), "node taints updated");
                    break;
                }
                Err(e) if cluster::is_stale(&e) && !fresh_read => {
                    fresh_read = true;
                    node = api.get(&name).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let done = ready_status(&node) == Some("True")
            || (self.mark_pending.contains(&name) && self.mark_pods_not_ready(&name, pods).await);
        if done {
            self.mark_pending.remove(&name);
        }
        Ok(())
    }

    /// Sets Ready=False on the pods of a node; true when all succeeded.
    async fn mark_pods_not_ready(&self, node: &str, pods: &Store<Pod>) -> bool {
        let ts = cluster::now();
        let mut ok = true;
        for pod in pods
            .state_filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        {
            let Some(conds) = pod_not_ready_conditions(&pod, &ts) else {
                continue;
            };
            let mut p = (*pod).clone();
            p.status.get_or_insert_with(Default::default).conditions = Some(conds);
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            match api
                .replace_status(&pod.name_any(), &PostParams::default(), &p)
                .await
            {
                Ok(p) => {
                    self.events
                        .publish(
                            &p.object_ref(&()),
                            EventType::Warning,
                            "NodeNotReady",
                            "MarkPodNotReady",
                            "Node is not ready".into(),
                        )
                        .await
                }
                Err(e) if cluster::is_stale(&e) => ok = false,
                Err(e) => {
                    tracing::warn!(pod = %cluster::ns_name(&*pod), error = %e, "marking pod not ready failed");
                    ok = false;
                }
            }
        }
        ok
    }
}

fn log_write_error(node: &str, e: &kube::Error) {
    if cluster::is_stale(e) {
        tracing::debug!(node, "node changed meanwhile; next pass");
    } else {
        tracing::warn!(node, error = %e, "node update failed");
    }
}

/// A pending eviction: since when, and for how long the pod may stay.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    since: Instant,
    after: Duration,
}

struct Eviction {
    client: kube::Client,
    events: Events,
    /// Pods (namespace/name/uid) with a pending eviction.
    scheduled: HashMap<String, Scheduled>,
}

impl Eviction {
    async fn run(
        mut self,
        nodes: Store<Node>,
        pods: Store<Pod>,
        wake: Arc<Notify>,
        period: Duration,
    ) {
        loop {
            let next = self
                .pass(&nodes, &pods)
                .instrument(tracing::debug_span!("taint_eviction"))
                .await;
            let sleep = next.map_or(period, |d| d.min(period));
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One pass over the pods on NoExecute-tainted nodes; returns the time until the next
    /// scheduled eviction, if any.
    async fn pass(&mut self, nodes: &Store<Node>, pods: &Store<Pod>) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut seen = HashSet::new();
        // Only pods on NoExecute-tainted nodes (usually none) and pods with a pending
        // eviction need a look: a pass costs nothing while every node is healthy.
        let tainted: HashMap<String, Vec<Taint>> = nodes
            .state()
            .iter()
            .filter_map(|n| {
                let t = n.spec.as_ref()?.taints.clone()?;
                t.iter()
                    .any(|t| t.effect == NO_EXECUTE)
                    .then(|| (n.name_any(), t))
            })
            .collect();
        if tainted.is_empty() && self.scheduled.is_empty() {
            return None;
        }
        let key_of = |p: &Pod| format!("{}/{}", cluster::ns_name(p), p.uid().unwrap_or_default());
        let scheduled = &self.scheduled;
        let candidates = pods.state_filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| tainted.contains_key(n))
                || (!scheduled.is_empty() && scheduled.contains_key(&key_of(p)))
        });
        for pod in candidates {
            let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            if cluster::pod_terminating(&pod) {
                continue;
            }
            let key = key_of(&pod);
            let taints = tainted.get(node_name).cloned().unwrap_or_default();
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match eviction_verdict(&taints, &tolerations) {
                Verdict::Keep => {
                    if self.scheduled.remove(&key).is_some() {
                        self.events
                            .publish(
                                &pod.object_ref(&()),
                                EventType::Normal,
                                "TaintManagerEviction",
                                "Cancel",
                                format!("Cancelling deletion of Pod {}", cluster::ns_name(&*pod)),
                            )
                            .await;
                    }
                }
                Verdict::EvictNow => {
                    self.scheduled.remove(&key);
                    self.evict(&pod).await;
                }
                Verdict::EvictAfter(after) => {
                    seen.insert(key.clone());
                    let s = self
                        .scheduled
                        .entry(key.clone())
                        .or_insert(Scheduled { since: now, after });
                    s.after = after;
                    // Absurd tolerationSeconds (API data) mean "never", not a panic.
                    let Some(due) = s.since.checked_add(s.after) else {
                        continue;
                    };
                    if due <= now {
                        self.scheduled.remove(&key);
                        self.evict(&pod).await;
                    } else {
                        let left = due - now;
                        next = Some(next.map_or(left, |n| n.min(left)));
                    }
                }
            }
        }
        self.scheduled.retain(|k, _| seen.contains(k));
        next
    }

    async fn evict(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let who = cluster::ns_name(pod);
        tracing::info!(pod = %who, "evicting pod from a NoExecute-tainted node");
        self.events
            .publish(
                &pod.object_ref(&()),
                EventType::Normal,
                "TaintManagerEviction",
                "Delete",
                format!("Marking for deletion Pod {who}"),
            )
            .await;
        // The DisruptionTarget condition tells controllers and users why the pod goes
        // (best effort, as in kube: the deletion matters, the condition informs).
        let mut p = pod.clone();
        let conds = p
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new);
        if !conds.iter().any(|c| c.type_ == "DisruptionTarget") {
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByTaintManager".into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(cluster::now()),
                ..Default::default()
            });
            if let Err(e) = api.replace_status(&name, &PostParams::default(), &p).await {
                tracing::debug!(pod = %who, error = %e, "setting DisruptionTarget failed");
            }
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if cluster::is_stale(&e) => {}
            Err(e) => tracing::warn!(pod = %who, error = %e, "evicting pod failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec, PodStatus};

    fn ts(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn node(ready: Option<&str>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        last_heartbeat_time: Some(ts("2026-01-01T00:00:00Z")),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: Option<&str>, op: &str, effect: Option<&str>, secs: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            effect: effect.map(Into::into),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn silent_node_goes_unknown_with_kube_reasons() {
        let now = ts("2026-01-01T00:01:00Z");
        let conds = unknown_conditions(&node(Some("True"), vec![]), &now).unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(now.clone()));
        // The missing pressure conditions are added as never updated.
        let mem = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.status, "Unknown");
        assert_eq!(mem.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conds.len(), 4);
        // Once Unknown, nothing more to write.
        let mut n = node(None, vec![]);
        n.status.as_mut().unwrap().conditions = Some(conds);
        assert!(unknown_conditions(&n, &now).is_none());
    }

    #[test]
    fn health_follows_lease_renewals_and_heartbeats() {
        let t0 = Instant::now();
        let lease = |t: &str| Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    t.parse().unwrap(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let n = node(Some("True"), vec![]);
        let l1 = lease("2026-01-01T00:00:00Z");
        let mut h = NodeHealth::new(&n, Some(&l1), t0);
        let t1 = t0 + Duration::from_secs(10);
        h.observe(&n, Some(&l1), t1);
        assert_eq!(h.probe, t0, "same lease, same heartbeat: not heard from");
        let l2 = lease("2026-01-01T00:00:10Z");
        h.observe(&n, Some(&l2), t1);
        assert_eq!(h.probe, t1, "renewed lease");
        let t2 = t1 + Duration::from_secs(10);
        let mut n2 = n.clone();
        n2.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time =
            Some(ts("2026-01-01T00:00:20Z"));
        h.observe(&n2, Some(&l2), t2);
        assert_eq!(h.probe, t2, "new status heartbeat");
        // A lease going backwards (recreated) is not a renewal of the old one.
        h.observe(&n2, Some(&l1), t2 + Duration::from_secs(5));
        assert_eq!(h.probe, t2);
    }

    #[test]
    fn taints_follow_ready_condition() {
        let now = ts("2026-01-01T00:01:00Z");
        let keep = taint("dedicated", NO_SCHEDULE);
        let t = reconcile_taints(
            &node(Some("Unknown"), vec![keep.clone()]),
            &now,
            NoExecute::Add,
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.contains(&keep));
        let ne = t
            .iter()
            .find(|t| t.key == TAINT_UNREACHABLE && t.effect == NO_EXECUTE)
            .unwrap();
        assert_eq!(ne.time_added, Some(now.clone()));
        let ns = t
            .iter()
            .find(|t| t.key == TAINT_UNREACHABLE && t.effect == NO_SCHEDULE)
            .unwrap();
        assert_eq!(ns.time_added, None);
        // Already tainted: no change.
        assert!(
            reconcile_taints(&node(Some("Unknown"), t.clone()), &now, NoExecute::Add).is_none()
        );
        // Ready=False swaps unreachable for not-ready.
        let t2 = reconcile_taints(&node(Some("False"), t.clone()), &now, NoExecute::Add).unwrap();
        assert!(t2.iter().all(|t| t.key != TAINT_UNREACHABLE));
        assert!(t2
            .iter()
            .any(|t| t.key == TAINT_NOT_READY && t.effect == NO_EXECUTE));
        assert!(t2
            .iter()
            .any(|t| t.key == TAINT_NOT_READY && t.effect == NO_SCHEDULE));
        // Back to Ready: only the foreign taint stays.
        let t3 = reconcile_taints(&node(Some("True"), t2), &now, NoExecute::Add).unwrap();
        assert_eq!(t3, vec![keep]);
        // A healthy node without taints needs nothing.
        assert!(reconcile_taints(&node(Some("True"), vec![]), &now, NoExecute::Add).is_none());
    }

    #[test]
    fn unschedulable_and_pressure_taints() {
        let now = ts("2026-01-01T00:01:00Z");
        let mut n = node(Some("True"), vec![]);
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        n.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(NodeCondition {
                type_: "DiskPressure".into(),
                status: "True".into(),
                ..Default::default()
            });
        let t = reconcile_taints(&n, &now, NoExecute::Add).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t
            .iter()
            .any(|t| t.key == TAINT_UNSCHEDULABLE && t.effect == NO_SCHEDULE));
        assert!(t
            .iter()
            .any(|t| t.key == "node.kubernetes.io/disk-pressure"));
    }

    #[test]
    fn master_disruption_removes_no_execute_taints() {
        let now = ts("2026-01-01T00:01:00Z");
        // In disruption mode a silent node gets only the NoSchedule taint, and loses a
        // NoExecute one it had.
        let down = node(Some("Unknown"), vec![]);
        let t = reconcile_taints(&down, &now, NoExecute::Remove).unwrap();
        assert_eq!(
            t.iter().map(|t| t.effect.as_str()).collect::<Vec<_>>(),
            [NO_SCHEDULE]
        );
        let tainted = node(
            Some("Unknown"),
            reconcile_taints(&down, &now, NoExecute::Add).unwrap(),
        );
        assert_eq!(
            reconcile_taints(&tainted, &now, NoExecute::Remove).unwrap(),
            t
        );
    }

    #[test]
    fn a_node_waiting_its_turn_keeps_or_swaps_but_gets_no_new_no_execute_taint() {
        let now = ts("2026-01-01T00:01:00Z");
        // Not tainted yet: Keep adds only the NoSchedule taint.
        let down = node(Some("Unknown"), vec![]);
        let t = reconcile_taints(&down, &now, NoExecute::Keep).unwrap();
        assert_eq!(
            t.iter()
                .map(|t| (t.key.as_str(), t.effect.as_str()))
                .collect::<Vec<_>>(),
            [(TAINT_UNREACHABLE, NO_SCHEDULE)]
        );
        // Its turn: the NoExecute taint, kept afterwards.
        let t = reconcile_taints(&node(Some("Unknown"), t), &now, NoExecute::Add).unwrap();
        assert!(t
            .iter()
            .any(|t| t.key == TAINT_UNREACHABLE && t.effect == NO_EXECUTE));
        assert!(
            reconcile_taints(&node(Some("Unknown"), t.clone()), &now, NoExecute::Keep).is_none()
        );
        // Unknown → False swaps at once, without waiting for a turn.
        let swapped = reconcile_taints(&node(Some("False"), t), &now, NoExecute::Keep).unwrap();
        let mut keys: Vec<_> = swapped
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                (TAINT_NOT_READY, NO_EXECUTE),
                (TAINT_NOT_READY, NO_SCHEDULE)
            ]
        );
        // Ready again: both go.
        assert_eq!(
            reconcile_taints(&node(Some("True"), swapped), &now, NoExecute::Keep).unwrap(),
            vec![]
        );
    }

    #[test]
    fn toleration_matching() {
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: NO_EXECUTE.into(),
            time_added: None,
        };
        let mut eq = tol(Some("k"), "Equal", None, None);
        assert!(!tolerates(&eq, &t), "value differs");
        eq.value = Some("v".into());
        assert!(tolerates(&eq, &t));
        assert!(tolerates(
            &tol(Some("k"), "Exists", Some(NO_EXECUTE), None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), "Exists", Some(NO_SCHEDULE), None),
            &t
        ));
        assert!(
            tolerates(&tol(None, "Exists", None, None), &t),
            "tolerate everything"
        );
        assert!(!tolerates(&tol(Some("other"), "Exists", None, None), &t));
        assert!(!tolerates(&tol(Some("k"), "Gt", None, None), &t));
    }

    #[test]
    fn eviction_verdicts() {
        let unreach = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        let sched = taint("x", NO_SCHEDULE);
        assert_eq!(
            eviction_verdict(std::slice::from_ref(&sched), &[]),
            Verdict::Keep
        );
        assert_eq!(
            eviction_verdict(std::slice::from_ref(&unreach), &[]),
            Verdict::EvictNow
        );
        let defaults = [
            tol(Some(TAINT_NOT_READY), "Exists", Some(NO_EXECUTE), Some(300)),
            tol(
                Some(TAINT_UNREACHABLE),
                "Exists",
                Some(NO_EXECUTE),
                Some(300),
            ),
        ];
        assert_eq!(
            eviction_verdict(&[unreach.clone(), sched], &defaults),
            Verdict::EvictAfter(Duration::from_secs(300))
        );
        let short = [
            tol(Some(TAINT_UNREACHABLE), "Exists", Some(NO_EXECUTE), Some(2)),
            tol(None, "Exists", None, Some(100)),
        ];
        let other = taint("other", NO_EXECUTE);
        // unreachable → first match (2 s); other → the catch-all (100 s): the shortest wins.
        assert_eq!(
            eviction_verdict(&[unreach.clone(), other.clone()], &short),
            Verdict::EvictAfter(Duration::from_secs(2))
        );
        // One untolerated NoExecute taint evicts at once.
        assert_eq!(
            eviction_verdict(&[unreach.clone(), other], &defaults),
            Verdict::EvictNow
        );
        // Tolerated forever.
        assert_eq!(
            eviction_verdict(
                std::slice::from_ref(&unreach),
                &[tol(None, "Exists", None, None)]
            ),
            Verdict::Keep
        );
        assert_eq!(
            eviction_verdict(&[unreach], &[tol(None, "Exists", None, Some(0))]),
            Verdict::EvictNow
        );
    }

    #[test]
    fn mark_pod_not_ready() {
        let now = ts("2026-01-01T00:01:00Z");
        let pod = |ready: &str| Pod {
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                conditions: Some(vec![
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = pod_not_ready_conditions(&pod("True"), &now).unwrap();
        assert_eq!(c[1].status, "False");
        assert_eq!(c[1].last_transition_time, Some(now.clone()));
        assert_eq!(c[0].status, "True");
        assert!(pod_not_ready_conditions(&pod("False"), &now).is_none());
        assert!(pod_not_ready_conditions(&Pod::default(), &now).is_none());
    }
}
