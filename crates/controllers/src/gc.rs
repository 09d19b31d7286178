//! The garbage collector: kube-controller-manager's, through the API only.
//!
//! - One watcher per served resource that supports list, watch and delete (from
//!   discovery, refreshed every [`Timers::discovery_sync`](crate::Timers)) feeds a single
//!   graph builder that keeps the owner-uid → dependents index ([`graph::Graph`]).
//! - Every change that needs a decision puts the object's uid on one work queue; workers
//!   decide with [`graph::decide`] and act through the API: delete with a uid precondition
//!   and a propagation policy, remove owner references, drop the `foregroundDeletion` or
//!   `orphan` finalizer. Nothing is rescanned periodically.
//! - Background: the API server deletes the owner at once; its dependents are collected
//!   when the delete is observed. Foreground: the API server leaves the owner with
//!   `deletionTimestamp` and `foregroundDeletion`; dependents are deleted, and the finalizer
//!   is removed once no dependent with `blockOwnerDeletion: true` is left. Orphan: the owner
//!   keeps the `orphan` finalizer until its dependents no longer reference it.

mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::discover::{self, Resources};
use crate::queue::{Backoff, WorkQueue};
use crate::{Context, Error};

pub use graph::{
    decide, Decision, Graph, Identity, Observed, OwnerRef, OwnerState, Policy, RefClass, Work,
    FOREGROUND, ORPHAN,
};

/// Concurrent workers (kube-controller-manager's `--concurrent-gc-syncs`).
const WORKERS: usize = 20;
/// Resources the collector ignores (as kube-controller-manager: events never own).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// A change the graph builder applies, in watch order.
enum Change {
    /// A watcher (re)starts listing resource `source`.
    Init(usize),
    Apply(usize, Observed),
    /// An object is gone (a watch delete, or a worker found it absent).
    Delete(String),
    /// A watcher finished listing `source`.
    InitDone(usize),
}

struct Shared {
    client: kube::Client,
    graph: Mutex<Graph>,
    queue: WorkQueue<Work>,
    resources: RwLock<Arc<Resources>>,
    changes: mpsc::Sender<Change>,
}

#[derive(Debug, thiserror::Error)]
enum WorkError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("no served resource has kind {kind} in {api_version}")]
    UnknownKind { api_version: String, kind: String },
}

enum Outcome {
    Done,
    Requeue,
}

/// Runs the garbage collector until it fails fatally (or its future is dropped: every
/// task it started stops with it).
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let resources = discover_until_ok(&client, ctx.timers.discovery_sync).await;
    let (tx, rx) = mpsc::channel(1024);
    let shared = Arc::new(Shared {
        client: client.clone(),
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(Backoff {
            base: Duration::from_millis(5),
            max: ctx.timers.gc_max_backoff,
        }),
        resources: RwLock::new(Arc::new(resources)),
        changes: tx,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut watchers = Watchers::default();
    let wanted = watchable(&shared.resources());
    let initial: HashSet<usize> = wanted
        .iter()
        .map(|ar| watchers.start(&shared, ar))
        .collect();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    tasks.spawn(build_graph(shared.clone(), rx, initial, synced_tx));
    // Decisions need the dependents index: wait for the first lists (bounded, as
    // kube-controller-manager does; decisions re-check with the API anyway).
    let _ = tokio::time::timeout(ctx.timers.discovery_sync, synced_rx).await;
    tracing::info!(
        resources = wanted.len(),
        objects = shared.lock_graph().len(),
        "garbage collector synced"
    );
    for _ in 0..WORKERS {
        tasks.spawn(worker(shared.clone()));
    }
    let mut tick = tokio::time::interval(ctx.timers.discovery_sync);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = tasks.join_next() => {
                if let Some(Err(e)) = r {
                    if e.is_panic() {
                        tracing::error!(error = %e, "garbage collector task panicked");
                    }
                }
                return Err(Error::Stopped { name: "garbagecollector" });
            }
        }
        match discover::discover(&client).await {
            Ok(r) => {
                *shared.resources.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(r);
                watchers.sync(&shared, &watchable(&shared.resources()));
            }
            Err(e) => tracing::warn!(error = %e, "garbage collector: discovery failed"),
        }
    }
}

async fn discover_until_ok(client: &kube::Client, max_delay: Duration) -> Resources {
    let mut delay = Duration::from_millis(200);
    loop {
        match discover::discover(client).await {
            Ok(r) => return r,
            Err(e) => tracing::warn!(error = %e, "garbage collector: discovery failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// Resources to watch: list + watch + delete, not ignored.
fn watchable(r: &Resources) -> Vec<ApiResource> {
    r.supporting(&["list", "watch", "delete"])
        .filter(|s| {
            !IGNORED
                .iter()
                .any(|(g, p)| s.ar.group == *g && s.ar.plural == *p)
        })
        .map(|s| s.ar.clone())
        .collect()
}

/// The running watchers, by `group/version/plural`.
#[derive(Default)]
struct Watchers {
    next: usize,
    running: HashMap<String, (usize, tokio::task::AbortHandle)>,
    tasks: tokio::task::JoinSet<()>,
}

fn gvr(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

impl Watchers {
    fn start(&mut self, shared: &Arc<Shared>, ar: &ApiResource) -> usize {
        let source = self.next;
        self.next += 1;
        let h = self
            .tasks
            .spawn(watch_resource(shared.clone(), ar.clone(), source));
        self.running.insert(gvr(ar), (source, h));
        source
    }

    /// Starts watchers for new resources and stops those of resources no longer served.
    fn sync(&mut self, shared: &Arc<Shared>, wanted: &[ApiResource]) {
        let keys: HashSet<String> = wanted.iter().map(gvr).collect();
        self.running.retain(|k, (_, h)| {
            let keep = keys.contains(k);
            if !keep {
                tracing::info!(resource = %k, "garbage collector stops watching");
                h.abort();
            }
            keep
        });
        for ar in wanted {
            if !self.running.contains_key(&gvr(ar)) {
                tracing::info!(resource = %gvr(ar), "garbage collector starts watching");
                self.start(shared, ar);
            }
        }
    }
}

impl Shared {
    fn lock_graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resources(&self) -> Arc<Resources> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn api(&self, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }
}

fn observed(ar: &ApiResource, o: &PartialObjectMeta<DynamicObject>) -> Observed {
    let m = &o.metadata;
    Observed {
        identity: Identity {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: m.namespace.clone().filter(|n| !n.is_empty()),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        },
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|r| OwnerRef {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                block_owner_deletion: r.block_owner_deletion == Some(true),
            })
            .collect(),
        being_deleted: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
    }
}

async fn watch_resource(shared: Arc<Shared>, ar: ApiResource, source: usize) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(shared.client.clone(), &ar);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        let change = match ev {
            Ok(watcher::Event::Init) => Change::Init(source),
            Ok(watcher::Event::InitApply(o)) | Ok(watcher::Event::Apply(o)) => {
                Change::Apply(source, observed(&ar, &o))
            }
            Ok(watcher::Event::Delete(o)) => Change::Delete(o.metadata.uid.unwrap_or_default()),
            Ok(watcher::Event::InitDone) => Change::InitDone(source),
            Err(e) => {
                tracing::debug!(resource = %gvr(&ar), error = %e, "garbage collector watch");
                continue;
            }
        };
        if shared.changes.send(change).await.is_err() {
            return;
        }
    }
}

async fn build_graph(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Change>,
    mut unsynced: HashSet<usize>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    let mut gens: HashMap<usize, u64> = HashMap::new();
    let mut out = Vec::new();
    if unsynced.is_empty() {
        let _ = synced.take().map(|s| s.send(()));
    }
    while let Some(c) = rx.recv().await {
        {
            let mut g = shared.lock_graph();
            match c {
                Change::Init(s) => {
                    *gens.entry(s).or_insert(0) += 1;
                }
                Change::Apply(s, o) => {
                    let gen = *gens.entry(s).or_insert(0);
                    g.observe(o, s, gen, &mut out);
                }
                Change::Delete(uid) => g.remove(&uid, &mut out),
                Change::InitDone(s) => {
                    let gen = *gens.entry(s).or_insert(0);
                    g.sweep(s, gen, &mut out);
                    if unsynced.remove(&s) && unsynced.is_empty() {
                        let _ = synced.take().map(|s| s.send(()));
                    }
                }
            }
        }
        shared.queue.extend(out.drain(..));
    }
}

async fn worker(shared: Arc<Shared>) {
    loop {
        let w = shared.queue.get().await;
        let span = match &w {
            Work::Delete(uid) => tracing::debug_span!("gc attempt to delete", %uid),
            Work::Orphan(uid) => tracing::debug_span!("gc attempt to orphan", %uid),
        };
        let r = match &w {
            Work::Delete(uid) => attempt_delete(&shared, uid).instrument(span).await,
            Work::Orphan(uid) => attempt_orphan(&shared, uid).instrument(span).await,
        };
        match r {
            Ok(Outcome::Done) => shared.queue.forget(&w),
            Ok(Outcome::Requeue) => shared.queue.add_rate_limited(w.clone()),
            Err(e) => {
                let level_error = !matches!(
                    &e,
                    WorkError::Kube(kube::Error::Api(s)) if s.code == 409
                );
                if level_error {
                    tracing::warn!(work = ?w, error = %e, source = ?std::error::Error::source(&e), "garbage collection failed; retrying");
                } else {
                    tracing::debug!(work = ?w, "garbage collection conflict; retrying");
                }
                shared.queue.add_rate_limited(w.clone());
            }
        }
        shared.queue.done(&w);
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The live metadata of `id`, or `None` when it is gone or was replaced (another uid).
async fn get_live(
    shared: &Shared,
    id: &Identity,
) -> Result<Option<(Api<DynamicObject>, PartialObjectMeta<DynamicObject>)>, WorkError> {
    let (ar, namespaced) = shared
        .resources()
        .resolve(&id.api_version, &id.kind)
        .ok_or_else(|| WorkError::UnknownKind {
            api_version: id.api_version.clone(),
            kind: id.kind.clone(),
        })?;
    let ns = if namespaced {
        match id.namespace.as_deref() {
            Some(ns) => Some(ns),
            // A cluster-scoped dependent naming a namespaced owner: there is no such owner.
            None => return Ok(None),
        }
    } else {
        None
    };
    let api = shared.api(&ar, ns);
    let got = api.get_metadata_opt(&id.name).await?;
    Ok(got
        .filter(|o| o.metadata.uid.as_deref() == Some(id.uid.as_str()))
        .map(|o| (api, o)))
}

async fn attempt_delete(shared: &Arc<Shared>, uid: &str) -> Result<Outcome, WorkError> {
    let Some(view) = shared.lock_graph().view(uid) else {
        return Ok(Outcome::Done);
    };
    // Being deleted is a one-way trip: wait for the delete, then handle the dependents.
    if view.being_deleted && !view.deleting_dependents {
        return Ok(Outcome::Done);
    }
    let id = &view.identity;
    let Some((api, latest)) = get_live(shared, id).await? else {
        // Gone (or a virtual node for an owner that never existed): a virtual delete.
        let _ = shared.changes.send(Change::Delete(uid.to_string())).await;
        return Ok(Outcome::Done);
    };
    if view.deleting_dependents {
        let blocking = shared.lock_graph().blocking_dependents(uid);
        if blocking.is_empty() {
            tracing::debug!(object = %id.name, "dependents gone: removing foregroundDeletion");
            remove_finalizer(&api, &latest, FOREGROUND).await?;
        } else {
            shared.queue.extend(
                blocking
                    .into_iter()
                    .filter(|(_, deleting)| !deleting)
                    .map(|(d, _)| Work::Delete(d)),
            );
        }
        return Ok(Outcome::Done);
    }
    let refs = latest.metadata.owner_references.clone().unwrap_or_default();
    if refs.is_empty() {
        return Ok(if view.observed {
            Outcome::Done
        } else {
            Outcome::Requeue
        });
    }
    let mut classified = Vec::with_capacity(refs.len());
    for r in &refs {
        let r = OwnerRef {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            block_owner_deletion: r.block_owner_deletion == Some(true),
        };
        let Some(class) = classify(shared, id, &r).await? else {
            tracing::warn!(object = %id.name, owner = %r.name, kind = %r.kind,
                "a cluster-scoped object cannot have a namespaced owner; ignoring it");
            return Ok(Outcome::Done);
        };
        classified.push((r, class));
    }
    let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
    let decision = decide(
        &classified,
        view.dependents > 0,
        view.dependent_deleting_dependents,
        &finalizers,
    );
    let precondition = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(id.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match decision {
        Decision::Keep => {}
        Decision::RemoveRefs(uids) => {
            tracing::debug!(object = %id.name, ?uids, "removing references to absent or deleting owners");
            let keep: Vec<_> = refs.iter().filter(|r| !uids.contains(&r.uid)).collect();
            patch_meta(&api, &latest, json!({ "ownerReferences": keep })).await?;
        }
        Decision::DeleteForeground { unblock } => {
            if unblock {
                let unblocked: Vec<_> = refs
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        r.block_owner_deletion = Some(false);
                        r
                    })
                    .collect();
                patch_meta(&api, &latest, json!({ "ownerReferences": unblocked })).await?;
            }
            tracing::debug!(object = %id.name, "owner waits for it: deleting in the foreground");
            delete(&api, &id.name, precondition, PropagationPolicy::Foreground).await?;
        }
        Decision::Delete(policy) => {
            tracing::debug!(object = %id.name, ?policy, "no owner left: deleting");
            let p = match policy {
                Policy::Background => PropagationPolicy::Background,
                Policy::Foreground => PropagationPolicy::Foreground,
                Policy::Orphan => PropagationPolicy::Orphan,
            };
            delete(&api, &id.name, precondition, p).await?;
        }
    }
    Ok(if view.observed {
        Outcome::Done
    } else {
        Outcome::Requeue
    })
}

/// Classifies one owner reference of `item`; `None` when a cluster-scoped object names a
/// namespaced owner (an error that retrying does not fix).
async fn classify(
    shared: &Shared,
    item: &Identity,
    r: &OwnerRef,
) -> Result<Option<RefClass>, WorkError> {
    let ns = item.namespace.as_deref();
    if shared.lock_graph().known_absent(ns, &r.uid) {
        return Ok(Some(RefClass::Dangling));
    }
    let (ar, namespaced) = shared
        .resources()
        .resolve(&r.api_version, &r.kind)
        .ok_or_else(|| WorkError::UnknownKind {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
        })?;
    if namespaced && ns.is_none() {
        return Ok(None);
    }
    if let Some(state) = shared.lock_graph().owner_state(r) {
        return Ok(Some(match state {
            OwnerState::Solid => RefClass::Solid,
            OwnerState::Waiting => RefClass::Waiting,
        }));
    }
    let owner_ns = if namespaced { ns } else { None };
    let got = shared.api(&ar, owner_ns).get_metadata_opt(&r.name).await?;
    match got {
        Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
            let deleting = o.metadata.deletion_timestamp.is_some()
                && o.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == FOREGROUND);
            Ok(Some(if deleting {
                RefClass::Waiting
            } else {
                RefClass::Solid
            }))
        }
        _ => {
            shared.lock_graph().mark_absent(owner_ns, &r.uid);
            Ok(Some(RefClass::Dangling))
        }
    }
}

async fn delete(
    api: &Api<DynamicObject>,
    name: &str,
    mut dp: DeleteParams,
    policy: PropagationPolicy,
) -> Result<(), WorkError> {
    dp.propagation_policy = Some(policy);
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object of that name (uid precondition).
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A merge patch of `metadata` fields, conditional on the object's resourceVersion.
async fn patch_meta(
    api: &Api<DynamicObject>,
    latest: &PartialObjectMeta<DynamicObject>,
    mut fields: serde_json::Value,
) -> Result<(), WorkError> {
    let name = latest.metadata.name.clone().unwrap_or_default();
    fields["resourceVersion"] = json!(latest.metadata.resource_version);
    // An empty list is written as absent, as the strategic patches of Kubernetes leave it.
    if let Some(m) = fields.as_object_mut() {
        for v in m.values_mut() {
            if v.as_array().is_some_and(|a| a.is_empty()) {
                *v = serde_json::Value::Null;
            }
        }
    }
    let patch = json!({ "metadata": fields });
    match api
        .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn remove_finalizer(
    api: &Api<DynamicObject>,
    latest: &PartialObjectMeta<DynamicObject>,
    finalizer: &str,
) -> Result<(), WorkError> {
    let fins = latest.metadata.finalizers.clone().unwrap_or_default();
    if !fins.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let keep: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
    patch_meta(api, latest, json!({ "finalizers": keep })).await
}

async fn attempt_orphan(shared: &Arc<Shared>, uid: &str) -> Result<Outcome, WorkError> {
    let (owner, dependents) = {
        let g = shared.lock_graph();
        let Some(v) = g.view(uid) else {
            return Ok(Outcome::Done);
        };
        (v.identity, g.dependents(uid))
    };
    let results: Vec<Result<(), WorkError>> = futures::stream::iter(dependents)
        .map(|d| async move {
            let Some((api, latest)) = get_live(shared, &d).await? else {
                return Ok(());
            };
            let refs = latest.metadata.owner_references.clone().unwrap_or_default();
            if !refs.iter().any(|r| r.uid == uid) {
                return Ok(());
            }
            let keep: Vec<_> = refs.iter().filter(|r| r.uid != uid).collect();
            patch_meta(&api, &latest, json!({ "ownerReferences": keep })).await
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let Some((api, latest)) = get_live(shared, &owner).await? else {
        return Ok(Outcome::Done);
    };
    remove_finalizer(&api, &latest, ORPHAN).await?;
    Ok(Outcome::Done)
}
