//! The runner: watches nodes, pods and namespaces, keeps the cluster view current, and
//! schedules queued pods one at a time in a single loop that owns all state (no locks, no
//! snapshot copies). API writes (bindings, failure events, status, preemption) run as tasks
//! with bounded concurrency and report back to the loop; `Scheduled` events follow the
//! bindings through a bounded queue of their own, off the binding path (dropped when it is
//! full, as client-go's event broadcaster does).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, info_span, warn};

use crate::api::{is_conflict, is_not_found, Writer};
use crate::cluster::Cluster;
use crate::filter::Plugin;
use crate::model::PodInfo;
use crate::preempt::preempt;
use crate::queue::{Queue, QueueTimers};
use crate::schedule::{all_plugins, Options, ScheduleError, Scheduler};
use crate::selector::Labels;
use crate::{Config, Error};

enum Msg {
    Node(Event<Box<Node>>),
    Pod(Event<Arc<PodInfo>>),
    Namespace(Event<(String, Labels)>),
    Claim(Event<ClaimInfo>),
    Volume(Event<(String, Option<String>)>),
    Bound {
        pod: Arc<PodInfo>,
        node: String,
        result: Result<(), kube::Error>,
    },
    /// A pod whose binding failed, to retry after its back-off.
    Retry(Arc<PodInfo>),
    Ended(&'static str),
}

/// What VolumeBinding needs of a claim: `namespace/name`, its volume, the node chosen for it.
type ClaimInfo = (String, Option<String>, Option<String>);

fn claim_info(c: PersistentVolumeClaim) -> ClaimInfo {
    let key = format!(
        "{}/{}",
        c.metadata.namespace.unwrap_or_default(),
        c.metadata.name.unwrap_or_default()
    );
    let node = c
        .metadata
        .annotations
        .and_then(|a| a.get("volume.kubernetes.io/selected-node").cloned());
    let vol = c.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty());
    (key, vol, node)
}

/// A volume's name and the node its required node affinity pins it to
/// (`kubernetes.io/hostname In [node]`).
fn volume_info(v: PersistentVolume) -> (String, Option<String>) {
    let node = v
        .spec
        .and_then(|s| s.node_affinity)
        .and_then(|a| a.required)
        .and_then(|r| {
            r.node_selector_terms.into_iter().find_map(|t| {
                t.match_expressions.into_iter().flatten().find_map(|e| {
                    (e.key == "kubernetes.io/hostname" && e.operator == "In")
                        .then(|| e.values.and_then(|v| v.into_iter().next()))
                        .flatten()
                })
            })
        });
    (v.metadata.name.unwrap_or_default(), node)
}

fn map_event<T, U>(e: Event<T>, f: impl Fn(T) -> U) -> Event<U> {
    match e {
        Event::Apply(x) => Event::Apply(f(x)),
        Event::Delete(x) => Event::Delete(f(x)),
        Event::Init => Event::Init,
        Event::InitApply(x) => Event::InitApply(f(x)),
        Event::InitDone => Event::InitDone,
    }
}

fn spawn_watch<K, U>(
    api: Api<K>,
    wc: watcher::Config,
    what: &'static str,
    tx: mpsc::Sender<Msg>,
    conv: fn(K) -> U,
    wrap: fn(Event<U>) -> Msg,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    U: Send + 'static,
{
    tokio::spawn(async move {
        let mut s = std::pin::pin!(watcher(api, wc).default_backoff());
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(map_event(ev, conv))).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "{what} watch failed; retrying"),
            }
        }
        let _ = tx.send(Msg::Ended(what)).await;
    });
}

/// Which filters an event may help (kube-scheduler's queueing hints, coarsely).
const ASSIGNED_POD_ADD: u16 =
    1 << (Plugin::InterPodAffinity as u16) | 1 << (Plugin::PodTopologySpread as u16);
const ASSIGNED_POD_DELETE: u16 = 1 << (Plugin::NodeResourcesFit as u16)
    | 1 << (Plugin::NodePorts as u16)
    | 1 << (Plugin::InterPodAffinity as u16)
    | 1 << (Plugin::PodTopologySpread as u16);
const NAMESPACE_CHANGE: u16 = 1 << (Plugin::InterPodAffinity as u16);

/// `Scheduled` events waiting to be written: like client-go's event broadcaster, a bounded
/// queue (1,000) that drops events when full rather than hold up scheduling.
const EVENT_QUEUE: usize = 1000;
/// Event writes in flight.
const EVENT_WRITERS: usize = 8;

/// A `Scheduled` event to record: the pod and the node it was bound to.
type ScheduledEvent = (Arc<PodInfo>, String);

/// Records `Scheduled` events off the binding path: a binding's permit is released as soon
/// as the binding is written, and the event follows from this queue.
fn spawn_event_recorder(writer: Arc<Writer>) -> mpsc::Sender<ScheduledEvent> {
    let (tx, rx) = mpsc::channel::<ScheduledEvent>(EVENT_QUEUE);
    let stream = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
    );
    tokio::spawn(
        stream.for_each_concurrent(EVENT_WRITERS, move |(pod, node)| {
            let writer = Arc::clone(&writer);
            async move {
                let msg = format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace, pod.name
                );
                if let Err(e) = writer
                    .event(&pod, "Normal", "Scheduled", "Binding", &msg)
                    .await
                {
                    debug!(error = %e, pod = %pod.key(), "recording the Scheduled event failed");
                }
                writer.forget(&pod.uid);
            }
        }),
    );
    tx
}

struct Runner {
    cfg: Config,
    events: mpsc::Sender<ScheduledEvent>,
    cluster: Cluster,
    queue: Queue,
    sched: Scheduler,
    writer: Arc<Writer>,
    tx: mpsc::Sender<Msg>,
    sem: Arc<Semaphore>,
    nodes_synced: bool,
    pods_synced: bool,
    node_relist: Option<HashSet<String>>,
    pod_relist: Option<HashSet<String>>,
    ns_relist: Option<HashSet<String>>,
    namespaces: HashSet<String>,
    scheduled: u64,
    /// Pods whose binding failed, waiting for their failure to be recorded before a retry.
    retrying: HashSet<String>,
    /// VolumeBinding's view: claims (`ns/name` → volume, chosen node) and volumes' nodes.
    claims: HashMap<String, (Option<String>, Option<String>)>,
    volumes: HashMap<String, Option<String>>,
}

pub async fn run(client: kube::Client, cfg: Config) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::channel::<Msg>(8192);
    spawn_watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        "node",
        tx.clone(),
        Box::new,
        Msg::Node,
    );
    spawn_watch(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
        "pod",
        tx.clone(),
        |p| Arc::new(PodInfo::from_pod(&p)),
        Msg::Pod,
    );
    spawn_watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        "namespace",
        tx.clone(),
        |n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        },
        Msg::Namespace,
    );
    spawn_watch(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        "persistentvolumeclaim",
        tx.clone(),
        claim_info,
        Msg::Claim,
    );
    spawn_watch(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        "persistentvolume",
        tx.clone(),
        volume_info,
        Msg::Volume,
    );
    let seed = jiff::Timestamp::now().as_nanosecond() as u64;
    let writer = Arc::new(Writer::new(client, &cfg.scheduler_name, &cfg.instance));
    let mut r = Runner {
        queue: Queue::new(QueueTimers {
            initial_backoff: cfg.pod_initial_backoff,
            max_backoff: cfg.pod_max_backoff,
            max_unschedulable: cfg.max_unschedulable_duration,
        }),
        sched: Scheduler::new(
            Options {
                percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score,
            },
            seed,
        ),
        writer: Arc::clone(&writer),
        events: spawn_event_recorder(writer),
        sem: Arc::new(Semaphore::new(cfg.bind_concurrency.max(1))),
        cluster: Cluster::new(),
        tx,
        nodes_synced: false,
        pods_synced: false,
        node_relist: None,
        pod_relist: None,
        ns_relist: None,
        namespaces: HashSet::new(),
        scheduled: 0,
        retrying: HashSet::new(),
        claims: HashMap::new(),
        volumes: HashMap::new(),
        cfg,
    };
    info!(scheduler = %r.cfg.scheduler_name, "scheduler starting");
    let mut next_flush = Instant::now() + r.cfg.flush_interval;
    let mut since_yield = 0u32;
    loop {
        loop {
            match rx.try_recv() {
                Ok(m) => r.handle(m)?,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::WatchEnded("every"))
                }
            }
        }
        let mut deadline = next_flush;
        if r.nodes_synced && r.pods_synced {
            let now = Instant::now();
            if now >= next_flush {
                let n = r.queue.flush_unschedulable(now);
                if n > 0 {
                    debug!(
                        pods = n,
                        "unschedulable pods flushed back to the active queue"
                    );
                }
                next_flush = now + r.cfg.flush_interval;
                deadline = next_flush;
            }
            if let Some(w) = r.queue.flush(now) {
                deadline = deadline.min(w);
            }
            if let Some(p) = r.queue.pop() {
                r.schedule_one(p);
                since_yield += 1;
                if since_yield >= 16 {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
                continue;
            }
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => r.handle(m)?,
                None => return Err(Error::WatchEnded("every")),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

impl Runner {
    fn handle(&mut self, m: Msg) -> Result<(), Error> {
        match m {
            Msg::Node(e) => self.on_node(e),
            Msg::Pod(e) => self.on_pod_event(e),
            Msg::Namespace(e) => self.on_namespace(e),
            Msg::Claim(e) => {
                match e {
                    Event::Init => self.claims.clear(),
                    Event::InitApply((k, v, n)) | Event::Apply((k, v, n)) => {
                        self.claims.insert(k, (v, n));
                    }
                    Event::Delete((k, _, _)) => {
                        self.claims.remove(&k);
                    }
                    Event::InitDone => {}
                }
                self.claim_nodes_changed();
            }
            Msg::Volume(e) => {
                match e {
                    Event::Init => self.volumes.clear(),
                    Event::InitApply((k, n)) | Event::Apply((k, n)) => {
                        self.volumes.insert(k, n);
                    }
                    Event::Delete((k, _)) => {
                        self.volumes.remove(&k);
                    }
                    Event::InitDone => {}
                }
                self.claim_nodes_changed();
            }
            Msg::Bound { pod, node, result } => self.on_bound(pod, node, result),
            Msg::Retry(pod) => self.on_retry(pod),
            Msg::Ended(what) => return Err(Error::WatchEnded(what)),
        }
        Ok(())
    }

    /// Recomputes where each claim's volume is pinned; pods waiting on VolumeBinding are
    /// retried when that changed.
    fn claim_nodes_changed(&mut self) {
        let m: HashMap<String, String> = self
            .claims
            .iter()
            .filter_map(|(k, (vol, chosen))| {
                let pinned = vol
                    .as_ref()
                    .and_then(|v| self.volumes.get(v).cloned().flatten());
                pinned.or_else(|| chosen.clone()).map(|n| (k.clone(), n))
            })
            .collect();
        if self.cluster.set_claim_nodes(m) {
            self.queue.move_on_event(Plugin::VolumeBinding.bit());
        }
    }

    fn on_node(&mut self, e: Event<Box<Node>>) {
        match e {
            Event::Init => self.node_relist = Some(HashSet::new()),
            Event::InitApply(n) | Event::Apply(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                if let Some(seen) = &mut self.node_relist {
                    seen.insert(name);
                }
                if self.cluster.upsert_node(&n) {
                    self.queue.move_on_event(all_plugins());
                }
            }
            Event::Delete(n) => {
                self.cluster
                    .remove_node(n.metadata.name.as_deref().unwrap_or(""));
            }
            Event::InitDone => {
                if let Some(seen) = self.node_relist.take() {
                    let gone: Vec<String> = self
                        .cluster
                        .nodes()
                        .iter()
                        .filter(|n| n.present && !seen.contains(&n.name))
                        .map(|n| n.name.clone())
                        .collect();
                    for n in gone {
                        self.cluster.remove_node(&n);
                    }
                }
                if !self.nodes_synced {
                    info!(nodes = self.cluster.num_nodes(), "nodes synced");
                }
                self.nodes_synced = true;
                self.queue.move_on_event(all_plugins());
            }
        }
    }

    fn on_namespace(&mut self, e: Event<(String, Labels)>) {
        match e {
            Event::Init => self.ns_relist = Some(HashSet::new()),
            Event::InitApply((n, l)) | Event::Apply((n, l)) => {
                if let Some(seen) = &mut self.ns_relist {
                    seen.insert(n.clone());
                }
                if self.cluster.namespace_labels(&n).as_ref() != Some(&l) {
                    self.cluster.set_namespace(&n, l);
                    self.queue.move_on_event(NAMESPACE_CHANGE);
                }
                self.namespaces.insert(n);
            }
            Event::Delete((n, _)) => {
                self.cluster.remove_namespace(&n);
                self.namespaces.remove(&n);
            }
            Event::InitDone => {
                if let Some(seen) = self.ns_relist.take() {
                    let gone: Vec<String> = self.namespaces.difference(&seen).cloned().collect();
                    for n in gone {
                        self.cluster.remove_namespace(&n);
                        self.namespaces.remove(&n);
                    }
                }
            }
        }
    }

    fn on_pod_event(&mut self, e: Event<Arc<PodInfo>>) {
        match e {
            Event::Init => self.pod_relist = Some(HashSet::new()),
            Event::InitApply(p) | Event::Apply(p) => {
                if let Some(seen) = &mut self.pod_relist {
                    seen.insert(p.uid.clone());
                }
                self.on_pod(p);
            }
            Event::Delete(p) => self.on_pod_gone(&p.uid),
            Event::InitDone => {
                if let Some(seen) = self.pod_relist.take() {
                    let known: Vec<String> = self
                        .cluster
                        .all_pods()
                        .map(|(_, p)| p.uid.clone())
                        .collect();
                    for uid in known {
                        // Assumed pods are ours and may not be visible yet.
                        if !seen.contains(&uid)
                            && !self.cluster.placement(&uid).is_some_and(|(_, a)| a)
                        {
                            self.on_pod_gone(&uid);
                        }
                    }
                    let queued: Vec<String> = self.queue.uids();
                    for uid in queued {
                        if !seen.contains(&uid) {
                            self.on_pod_gone(&uid);
                        }
                    }
                }
                if !self.pods_synced {
                    info!(
                        pods = self.cluster.num_pods(),
                        pending = self.queue.len(),
                        "pods synced"
                    );
                }
                self.pods_synced = true;
            }
        }
    }

    fn on_pod(&mut self, p: Arc<PodInfo>) {
        if p.terminal {
            return self.on_pod_gone(&p.uid);
        }
        if !p.node_name.is_empty() {
            let prior = self.cluster.placement(&p.uid).map(|(_, a)| a);
            self.queue.remove(&p.uid);
            self.cluster.clear_nominated(&p.uid);
            self.cluster.add_bound_pod(Arc::clone(&p));
            // A pod bound by someone else (or newly seen) may satisfy others' affinity
            // or change spreading; our own confirmed assumption changes nothing.
            if prior.is_none() {
                self.queue.move_on_event(ASSIGNED_POD_ADD);
            }
            return;
        }
        if p.scheduler_name != self.cfg.scheduler_name {
            return;
        }
        if self.cluster.placement(&p.uid).is_some() {
            // Assumed: its binding is in flight.
            return;
        }
        if p.terminating || p.gated {
            self.queue.remove(&p.uid);
            self.cluster.clear_nominated(&p.uid);
            return;
        }
        if !p.nominated_node.is_empty() {
            self.cluster
                .nominate(Arc::clone(&p), &p.nominated_node.clone());
        }
        self.queue.add_or_update(p);
    }

    fn on_pod_gone(&mut self, uid: &str) {
        let was_placed = self.cluster.remove_pod(uid).is_some();
        self.queue.remove(uid);
        self.retrying.remove(uid);
        self.cluster.clear_nominated(uid);
        self.writer.forget(uid);
        if was_placed {
            self.queue.move_on_event(ASSIGNED_POD_DELETE);
        }
    }

    fn on_bound(&mut self, pod: Arc<PodInfo>, node: String, result: Result<(), kube::Error>) {
        let _s = info_span!("bound", pod = %pod.key(), node = %node).entered();
        let err = match result {
            Ok(()) => {
                self.scheduled += 1;
                return;
            }
            Err(e) => e,
        };
        // Only a binding still assumed is ours to undo: if the watch already showed the pod
        // bound (the binding landed despite the error), the assumption is confirmed.
        if !self.cluster.placement(&pod.uid).is_some_and(|(_, a)| a) {
            debug!(error = %err, "binding failed, but the pod is no longer assumed");
            return;
        }
        self.cluster.remove_pod(&pod.uid);
        self.queue.move_on_event(ASSIGNED_POD_DELETE);
        if is_not_found(&err) {
            return;
        }
        if is_conflict(&err) {
            // Usually already bound (by an earlier attempt whose answer was lost, or by
            // someone else): the watch will show it and take it out of the queue. If it is
            // not bound after all, the retry binds it. Either way the pod is never left
            // assumed, which would keep it Pending forever.
            debug!(error = %err, "binding conflict; retrying after back-off");
            self.queue.retry(pod);
            return;
        }
        warn!(error = %err, "binding failed; retrying after back-off");
        // The retry waits for the failure's event and PodScheduled=False to be written, so
        // that status cannot land after a later, successful binding.
        let msg = format!("running Bind plugin \"DefaultBinder\": {err}");
        self.retrying.insert(pod.uid.clone());
        self.record_failure(pod, msg, Vec::new(), None, String::new(), true);
    }

    /// Requeues a pod whose binding failed, unless it was bound or deleted meanwhile.
    fn on_retry(&mut self, pod: Arc<PodInfo>) {
        if !self.retrying.remove(&pod.uid) || self.cluster.placement(&pod.uid).is_some() {
            return;
        }
        self.queue.retry(pod);
    }

    fn schedule_one(&mut self, p: Arc<PodInfo>) {
        let _s = info_span!("schedule", pod = %p.key()).entered();
        if self.cluster.placement(&p.uid).is_some() {
            self.queue.done(&p.uid);
            return;
        }
        match self.sched.schedule(&self.cluster, &p) {
            Ok(d) => {
                debug!(node = %d.node, evaluated = d.evaluated, feasible = d.feasible, "placed");
                self.cluster.assume(&p, &d.node);
                self.queue.done(&p.uid);
                self.spawn_bind(p, d.node);
            }
            Err(err) => {
                let (plugins, msg, victims, nominated) = match err {
                    ScheduleError::NoNodes => (all_plugins(), err.message(), Vec::new(), None),
                    ScheduleError::Fit(mut fit) => {
                        let plugins = fit.plugins();
                        let mut victims = Vec::new();
                        let mut nominated = None;
                        if self.cfg.preemption {
                            match preempt(&self.cluster, &p, &fit) {
                                Ok(pre) => {
                                    info!(node = %pre.node, victims = pre.victims.len(), "preempting");
                                    let mut np = (*p).clone();
                                    np.nominated_node = pre.node.clone();
                                    self.cluster.nominate(Arc::new(np), &pre.node);
                                    victims = pre.victims;
                                    nominated = Some(pre.node);
                                }
                                Err(no) => {
                                    fit.post_filter_msg = format!("preemption: {}", no.message);
                                    if no.clear_nomination && !p.nominated_node.is_empty() {
                                        self.cluster.clear_nominated(&p.uid);
                                        nominated = Some(String::new());
                                    }
                                }
                            }
                        }
                        (plugins, fit.message(), victims, nominated)
                    }
                };
                debug!(message = %msg, "unschedulable");
                self.queue.unschedulable(&p.uid, plugins);
                let node = nominated.clone().unwrap_or_default();
                self.record_failure(p, msg, victims, nominated, node, false);
            }
        }
    }

    fn spawn_bind(&self, pod: Arc<PodInfo>, node: String) {
        let writer = Arc::clone(&self.writer);
        let sem = Arc::clone(&self.sem);
        let tx = self.tx.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let result = writer.bind(&pod, &node).await;
            drop(permit);
            if result.is_ok() {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    events.try_send((Arc::clone(&pod), node.clone()))
                {
                    debug!(pod = %pod.key(), "event queue full: Scheduled event dropped");
                    writer.forget(&pod.uid);
                }
            }
            let _ = tx.send(Msg::Bound { pod, node, result }).await;
        });
    }

    /// Evicts preemption victims, then records FailedScheduling and PodScheduled=False
    /// (with the nominated node when preemption chose one); with `retry`, hands the pod
    /// back to the loop for a retry after its back-off once that is written.
    fn record_failure(
        &self,
        pod: Arc<PodInfo>,
        msg: String,
        victims: Vec<Arc<PodInfo>>,
        nominated: Option<String>,
        node: String,
        retry: bool,
    ) {
        let writer = Arc::clone(&self.writer);
        let sem = Arc::clone(&self.sem);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            for v in &victims {
                if let Err(e) = writer.preempt_victim(v, &pod, &node).await {
                    warn!(error = %e, victim = %v.key(), "preempting a victim failed");
                }
            }
            let msg = crate::api::truncate(&msg);
            if let Err(e) = writer
                .event(&pod, "Warning", "FailedScheduling", "Scheduling", &msg)
                .await
            {
                if !is_not_found(&e) {
                    debug!(error = %e, pod = %pod.key(), "recording FailedScheduling failed");
                }
            }
            if pod.unschedulable_message.as_deref() != Some(msg.as_str()) || nominated.is_some() {
                if let Err(e) = writer.unschedulable(&pod, &msg, nominated.as_deref()).await {
                    if !is_not_found(&e) {
                        warn!(error = %e, pod = %pod.key(), "updating PodScheduled failed");
                    }
                }
            }
            drop(permit);
            if retry {
                let _ = tx.send(Msg::Retry(pod)).await;
            }
        });
    }
}
