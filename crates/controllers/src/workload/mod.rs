//! What the workload controllers (ReplicaSet/ReplicationController, Deployment, StatefulSet,
//! DaemonSet, Job, CronJob) share: controller references and adoption, pods made from
//! templates, pod readiness and availability, expectations (so a controller never acts
//! twice on a cache that has not caught up with its own writes), events, the child-watch
//! triggers and the template hash.
//!
//! Everything that decides is pure (snapshot in, plan out) so each controller's reconcile
//! decisions are unit-tested without an API server.

pub(crate) mod hash;
pub(crate) mod pods;
pub(crate) mod revisions;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;

use crate::cluster::informer::SharedEvent;
use serde_json::{json, Value};

/// How long an expectation waits for the cache before it is forgotten (Kubernetes'
/// `ExpectationsTimeout`).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// Why one reconcile failed (the object is requeued).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("invalid label selector")]
    Selector(#[source] kube::core::ParseExpressionError),
    #[error("{0}")]
    Invalid(String),
    #[error("serialising an object")]
    Json(#[from] serde_json::Error),
}

/// A label selector as Kubernetes reads it: `None` selects nothing, an empty one everything.
pub(crate) fn selector(sel: Option<&LabelSelector>) -> Result<Option<Selector>, ReconcileError> {
    match sel {
        None => Ok(None),
        Some(s) => Selector::try_from(s.clone())
            .map(Some)
            .map_err(ReconcileError::Selector),
    }
}

/// Whether `sel` selects these labels (`None` selects nothing).
pub(crate) fn selects(sel: Option<&Selector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    sel.is_some_and(|s| s.matches(labels.unwrap_or(&EMPTY)))
}

/// The controller reference a controller puts on what it creates.
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub(crate) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// What a controller does with one candidate child (ControllerRef semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Controlled by the owner and still selected.
    Owned,
    /// An orphan the owner should adopt.
    Adopt,
    /// Controlled by the owner but no longer selected: release it.
    Release,
    /// Not the owner's business.
    Ignore,
}

/// Kubernetes' `ClaimObject`: `owner_uid` with selector `sel`; `owner_deleting` stops
/// adoption (a deleting owner adopts nothing).
pub(crate) fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    sel: Option<&Selector>,
    child: &ObjectMeta,
) -> Claim {
    let matches = selects(sel, child.labels.as_ref());
    match controller_of(child) {
        Some(r) if r.uid == owner_uid => {
            if matches {
                Claim::Owned
            } else if owner_deleting {
                // Kubernetes keeps a deleting owner's children as they are.
                Claim::Ignore
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if matches && !owner_deleting && child.deletion_timestamp.is_none() {
                Claim::Adopt
            } else {
                Claim::Ignore
            }
        }
    }
}

/// Adds `owner` as the controller of `child` (a merge patch of its owner references).
pub(crate) async fn adopt<K>(
    api: &Api<K>,
    child: &K,
    owner: OwnerReference,
) -> Result<(), ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let m = child.meta();
    let mut refs = m.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": m.uid}});
    let name = m.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `owner_uid` from `child`'s owner references.
pub(crate) async fn release<K>(
    api: &Api<K>,
    child: &K,
    owner_uid: &str,
) -> Result<(), ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let m = child.meta();
    let mut refs = m.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": m.uid}});
    let name = m.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the pods a plan chose, each with a uid precondition (never a newer pod of the same
/// name), recording the expected deletion under `owner_key` first and a `SuccessfulDelete`
/// event (worded by `note`) after; a pod already gone is no error. On a failure the owner's
/// expectations are dropped so its next sync starts from what the cache shows.
pub(crate) async fn delete_pods(
    api: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    pods: &[std::sync::Arc<k8s_openapi::api::core::v1::Pod>],
    expectations: &Expectations<k8s_openapi::api::core::v1::Pod>,
    owner_key: &str,
    events: &Events,
    regarding: &ObjectReference,
    note: impl Fn(&str) -> String,
) -> Result<(), kube::Error> {
    use kube::api::{DeleteParams, Preconditions};
    use kube::ResourceExt;
    for p in pods {
        let pname = p.name_any();
        let puid = p.uid().unwrap_or_default();
        expectations.deleted(owner_key, &puid);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(puid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pname, &dp).await {
            Ok(_) => events.normal(regarding.clone(), "SuccessfulDelete", note(&pname)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                expectations.forget(owner_key);
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A merge patch that turns status `old` into `new`: what changed, recursively into
/// objects, with an explicit `null` for each field `new` dropped (k8s-openapi omits zero
/// values, so a plain patch could never clear `readyReplicas`); arrays are replaced whole.
/// `None` when nothing changes.
pub(crate) fn status_patch(old: &Value, new: &Value) -> Option<Value> {
    diff(old, new).map(|d| json!({ "status": d }))
}

fn diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return Some(new.clone());
    };
    let mut out = serde_json::Map::new();
    for (k, v) in n {
        match o.get(k) {
            Some(ov) if ov == v => {}
            Some(ov) if ov.is_object() && v.is_object() => {
                if let Some(d) = diff(ov, v) {
                    out.insert(k.clone(), d);
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for k in o.keys() {
        if !n.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Writes a status computed by a controller, if it differs from the object's; returns the
/// object as written.
pub(crate) async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<Option<K>, ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let old = match old {
        Some(o) => serde_json::to_value(o)?,
        None => json!({}),
    };
    let new = serde_json::to_value(new)?;
    let Some(patch) = status_patch(&old, &new) else {
        return Ok(None);
    };
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(k) => Ok(Some(k)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Events of one controller, published in the background (an event that cannot be
/// written never fails or slows a reconcile).
#[derive(Clone)]
pub(crate) struct Events {
    recorder: Recorder,
}

impl Events {
    pub(crate) fn new(client: kube::Client, controller: &str) -> Events {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: controller.into(),
                    instance: None,
                },
            ),
        }
    }

    pub(crate) fn normal(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Normal, regarding, reason, note)
    }

    pub(crate) fn warning(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Warning, regarding, reason, note)
    }

    fn publish(&self, type_: EventType, regarding: ObjectReference, reason: &str, note: String) {
        let rec = self.recorder.clone();
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = rec.publish(&ev, &regarding).await {
                tracing::debug!(error = %e, reason = %ev.reason, "event not recorded");
            }
        });
    }
}

/// The highest resourceVersion a child watch has delivered (h8s' resource versions are
/// store revisions: a cache that has seen revision R holds every write up to R).
#[derive(Default, Debug)]
pub(crate) struct SeenRevision(AtomicU64);

impl SeenRevision {
    pub(crate) fn observe(&self, meta: &ObjectMeta) {
        if let Some(rv) = parse_rv(meta) {
            self.0.fetch_max(rv, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) fn parse_rv(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// Children an owner created, changed or deleted that its cache has not shown yet
/// (Kubernetes' `ControllerExpectations`, kept by identity instead of by count so the
/// controller's view is exact: what it wrote, until the watch delivers it).
pub(crate) struct Expectations<C> {
    inner: Mutex<HashMap<String, Pending<C>>>,
}

struct Pending<C> {
    /// Created or updated children, by uid: the object the API returned and its revision.
    writes: HashMap<String, (Arc<C>, u64, Instant)>,
    deletes: HashMap<String, Instant>,
}

impl<C> Default for Pending<C> {
    fn default() -> Self {
        Pending {
            writes: HashMap::new(),
            deletes: HashMap::new(),
        }
    }
}

impl<C> Default for Expectations<C> {
    fn default() -> Self {
        Expectations {
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Resource> Expectations<C> {
    /// `child`, as the API returned it after a create or an update.
    pub(crate) fn created(&self, owner: &str, child: C) {
        let m = child.meta();
        let (Some(uid), rv) = (m.uid.clone(), parse_rv(m).unwrap_or(u64::MAX)) else {
            return;
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(owner.into())
            .or_default()
            .writes
            .insert(uid, (Arc::new(child), rv, Instant::now()));
    }

    pub(crate) fn deleted(&self, owner: &str, uid: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let p = g.entry(owner.into()).or_default();
        p.writes.remove(uid);
        p.deletes.insert(uid.into(), Instant::now());
    }

    pub(crate) fn forget(&self, owner: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.remove(owner);
    }

    /// The owner's children as they are once the cache has caught up: `cached` with what
    /// was written and not seen yet, minus what was deleted and is still cached. Drops
    /// the expectations the cache has met (`seen` is the cache's revision).
    pub(crate) fn view(&self, owner: &str, cached: Vec<Arc<C>>, seen: u64) -> Vec<Arc<C>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = g.get_mut(owner) else {
            return cached;
        };
        let by_uid: HashMap<&str, &Arc<C>> = cached
            .iter()
            .filter_map(|c| Some((c.meta().uid.as_deref()?, c)))
            .collect();
        p.writes.retain(|uid, (_, rv, at)| {
            let fresh = match by_uid.get(uid.as_str()) {
                Some(c) => parse_rv(c.meta()).is_some_and(|crv| crv < *rv),
                None => *rv > seen,
            };
            fresh && at.elapsed() < EXPECTATIONS_TIMEOUT
        });
        p.deletes.retain(|uid, at| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|c| c.meta().deletion_timestamp.is_none())
                && at.elapsed() < EXPECTATIONS_TIMEOUT
        });
        let gone: HashSet<&String> = p.deletes.keys().collect();
        let mut out: Vec<Arc<C>> = cached
            .iter()
            .filter(|c| {
                c.meta()
                    .uid
                    .as_ref()
                    .is_none_or(|u| !gone.contains(u) && !p.writes.contains_key(u))
            })
            .cloned()
            .collect();
        out.extend(p.writes.values().map(|(c, _, _)| c.clone()));
        if p.writes.is_empty() && p.deletes.is_empty() {
            g.remove(owner);
        }
        out
    }
}

/// The latest version of owners a controller wrote itself, so a sync never starts from a
/// cached owner older than its own last write (a Job's counters would go back).
pub(crate) struct Latest<K> {
    inner: Mutex<HashMap<String, Arc<K>>>,
}

impl<K> Default for Latest<K> {
    fn default() -> Self {
        Latest {
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Latest<K> {
    /// Remembers what the API returned for a write.
    pub(crate) fn wrote(&self, obj: K) {
        let Some(uid) = obj.meta().uid.clone() else {
            return;
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let newer = g
            .get(&uid)
            .is_none_or(|o| parse_rv(o.meta()) < parse_rv(obj.meta()));
        if newer {
            g.insert(uid, Arc::new(obj));
        }
    }

    /// `cached`, or what this controller wrote last if that is newer.
    pub(crate) fn fresh(&self, cached: Arc<K>) -> Arc<K> {
        let Some(uid) = cached.meta().uid.as_deref() else {
            return cached;
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(uid) {
            Some(w) if parse_rv(w.meta()) > parse_rv(cached.meta()) => w.clone(),
            Some(_) => {
                g.remove(uid);
                cached
            }
            None => cached,
        }
    }
}

/// `namespace/name`, the key of an owner in expectations.
pub(crate) fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The reconcile requests a child watch produces: the child's controller (when it is an
/// `O`), or for an orphan every `O` in its namespace that `selects` it (so it is adopted).
/// Records the highest revision seen in `seen`.
pub(crate) fn child_triggers<C, O, S, F>(
    events: S,
    owners: Store<O>,
    seen: Arc<SeenRevision>,
    selects_orphan: F,
) -> impl Stream<Item = ObjectRef<O>> + Send + 'static
where
    C: Resource + Send + 'static,
    O: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = SharedEvent<C>> + Send + 'static,
    F: Fn(&O, &C) -> bool + Send + Sync + 'static,
{
    let kind = O::kind(&()).into_owned();
    let api_group = O::group(&()).into_owned();
    events.flat_map(move |ev| {
        let mut out: Vec<ObjectRef<O>> = Vec::new();
        match ev {
            watcher::Event::Apply(c) | watcher::Event::Delete(c) | watcher::Event::InitApply(c) => {
                seen.observe(c.meta());
                let m = c.meta();
                let ns = m.namespace.clone();
                match controller_of(m) {
                    Some(r) => {
                        let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
                        if r.kind == kind && group == api_group {
                            let mut o = ObjectRef::new(&r.name);
                            if let Some(ns) = &ns {
                                o = o.within(ns);
                            }
                            out.push(o);
                        }
                    }
                    None => {
                        for o in owners.state() {
                            if o.meta().namespace == ns && selects_orphan(&o, &c) {
                                out.push(ObjectRef::from_obj(o.as_ref()));
                            }
                        }
                    }
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        futures::stream::iter(out)
    })
}

/// A controller's own child watch (kinds without a shared informer) as [`child_triggers`]
/// takes it: errors logged (the watcher retries), objects in `Arc`s.
pub(crate) fn own_events<C: Send + Sync + 'static>(
    events: impl Stream<Item = Result<watcher::Event<C>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = SharedEvent<C>> + Send + 'static {
    events.filter_map(|ev| async move {
        match ev {
            Ok(watcher::Event::Apply(c)) => Some(watcher::Event::Apply(Arc::new(c))),
            Ok(watcher::Event::Delete(c)) => Some(watcher::Event::Delete(Arc::new(c))),
            Ok(watcher::Event::InitApply(c)) => Some(watcher::Event::InitApply(Arc::new(c))),
            Ok(watcher::Event::Init) => Some(watcher::Event::Init),
            Ok(watcher::Event::InitDone) => Some(watcher::Event::InitDone),
            Err(e) => {
                tracing::warn!(error = %e, "child watch failed; retrying");
                None
            }
        }
    })
}

/// A stream that ticks every `period` (the informer resync).
pub(crate) fn ticks(period: Duration) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(period).await;
        Some(((), ()))
    })
}

/// Runs `count` calls of `f` in batches of 1, 2, 4, … (Kubernetes' `slowStartBatch`), so a
/// failing create (quota, admission) fails once rather than `count` times. Stops at the
/// first batch with an error; returns the successes and that error.
pub(crate) async fn slow_start<F, Fut, E>(count: usize, f: F) -> (usize, Option<E>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut done = 0;
    let mut batch = count.min(1);
    while batch > 0 {
        let results = futures::future::join_all((done..done + batch).map(&f)).await;
        let mut err = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(e) => err = err.or(Some(e)),
            }
        }
        let ok = batch - usize::from(err.is_some());
        if err.is_some() {
            return (done + ok, err);
        }
        done += batch;
        batch = (2 * batch).min(count - done);
    }
    (done, None)
}

/// The API's own message for an error (what Kubernetes puts in events).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// A create refused because the namespace is being deleted (not worth an event).
pub(crate) fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// Now, as the API's timestamps are.
pub(crate) fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an int, or a percentage of `total`
/// rounded up or down.
pub(crate) fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: i32,
) -> Result<i32, ReconcileError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        None => Ok(default),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ReconcileError::Invalid(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            let t = i64::from(total) * p;
            let v = if round_up {
                (t + 99).div_euclid(100)
            } else {
                t.div_euclid(100)
            };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percentages_round_as_kubernetes() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(Some(&p("25%")), 10, true, 0).unwrap(), 3);
        assert_eq!(scaled_value(Some(&p("25%")), 10, false, 0).unwrap(), 2);
        assert_eq!(
            scaled_value(Some(&IntOrString::Int(4)), 10, false, 0).unwrap(),
            4
        );
        assert_eq!(scaled_value(None, 10, false, 7).unwrap(), 7);
        assert!(scaled_value(Some(&p("x%")), 10, false, 0).is_err());
    }

    #[test]
    fn status_patch_clears_dropped_fields() {
        let old = json!({"replicas": 2, "readyReplicas": 2});
        let new = json!({"replicas": 2});
        assert_eq!(
            status_patch(&old, &new),
            Some(json!({"status": {"readyReplicas": null}}))
        );
        assert_eq!(status_patch(&new, &new), None);
        // Nested objects are diffed too: an emptied list inside one is written.
        let old = json!({"uncountedTerminatedPods": {"succeeded": ["u1"]}, "succeeded": 0});
        let new = json!({"uncountedTerminatedPods": {}, "succeeded": 1});
        assert_eq!(
            status_patch(&old, &new),
            Some(
                json!({"status": {"uncountedTerminatedPods": {"succeeded": null}, "succeeded": 1}})
            )
        );
    }

    #[test]
    fn latest_wins_over_an_older_cache_only() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cm = |rv: &str, v: &str| ConfigMap {
            metadata: ObjectMeta {
                uid: Some("u".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            data: Some([("k".to_string(), v.to_string())].into()),
            ..Default::default()
        };
        let l = Latest::<ConfigMap>::default();
        l.wrote(cm("10", "mine"));
        let got = l.fresh(Arc::new(cm("9", "stale")));
        assert_eq!(got.data.as_ref().unwrap()["k"], "mine");
        let got = l.fresh(Arc::new(cm("11", "newer")));
        assert_eq!(got.data.as_ref().unwrap()["k"], "newer");
        // Forgotten once the cache caught up.
        let got = l.fresh(Arc::new(cm("9", "stale")));
        assert_eq!(got.data.as_ref().unwrap()["k"], "stale");
    }

    #[test]
    fn expectations_show_updates_until_the_cache_has_them() {
        use k8s_openapi::api::core::v1::Pod;
        let pod = |rv: &str, fin: bool| Pod {
            metadata: ObjectMeta {
                uid: Some("p".into()),
                resource_version: Some(rv.into()),
                finalizers: fin.then(|| vec!["f".to_string()]),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Expectations::<Pod>::default();
        e.created("o", pod("20", false));
        let v = e.view("o", vec![Arc::new(pod("15", true))], 15);
        assert_eq!(v.len(), 1);
        assert!(v[0].metadata.finalizers.is_none());
        let v = e.view("o", vec![Arc::new(pod("20", false))], 20);
        assert_eq!(v[0].metadata.resource_version.as_deref(), Some("20"));
    }

    #[test]
    fn claims_follow_controller_ref_semantics() {
        let sel: Selector = [("app", "web")].into_iter().collect();
        let mut m = ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(claim("u1", false, Some(&sel), &m), Claim::Adopt);
        assert_eq!(claim("u1", true, Some(&sel), &m), Claim::Ignore);
        m.owner_references = Some(vec![OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(claim("u1", false, Some(&sel), &m), Claim::Owned);
        assert_eq!(claim("u2", false, Some(&sel), &m), Claim::Ignore);
        m.labels = None;
        assert_eq!(claim("u1", false, Some(&sel), &m), Claim::Release);
        assert_eq!(claim("u1", false, None, &m), Claim::Release);
    }
}
