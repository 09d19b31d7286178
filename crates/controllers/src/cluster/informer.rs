//! Shared informers, as kube-controller-manager's `SharedInformerFactory`: one watch and one
//! reflector store per kind for the whole controller manager, with every event fanned out to
//! each controller that subscribed — deletes included, which kube-runtime's own shared
//! streams (`unstable-runtime-subscribe`) do not carry and the workload controllers need for
//! their expectations.
//!
//! - **One copy.** The store holds each object once; an `Apply` event hands subscribers the
//!   store's own `Arc`, so fanning out to N controllers costs N pointers, not N objects.
//! - **Trimmed.** Objects lose `metadata.managedFields` before they are stored (kube's
//!   informer transform `TransformStripManagedFields`): no controller reads them.
//! - **Lists.** A subscriber never sees a half list: at the end of every (re)list
//!   (`InitDone`) each subscriber gets the whole store as `Init`, `InitApply`…, `InitDone`,
//!   and objects the relist no longer returned as `Delete` (client-go's
//!   `DeletedFinalStateUnknown`), so a delete missed while the watch was down still reaches
//!   the controllers. A late subscriber gets the store as it is, then the live events.
//! - **Buffers.** Each subscriber has its own unbounded queue, as client-go's
//!   `processorListener` (a growing ring buffer): a slow controller delays only itself.
//!   What it holds is bounded by the events of objects that exist, and every consumer here
//!   is a `Controller` trigger or a loop that keeps polling.
//! - **Lifetime.** The watch runs as long as an [`Informer`] handle (or a subscription)
//!   lives; [`crate::run`] builds a fresh [`Informers`] per leadership term.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::Task;

/// A watch event as subscribers see it: objects shared, not copied.
pub(crate) type SharedEvent<K> = watcher::Event<Arc<K>>;

/// The shared informers of one controller manager (one per kind, built on first use).
/// Cloning shares them; [`Default`] is an empty set.
#[derive(Clone, Default)]
pub struct Informers {
    pods: Arc<OnceLock<Informer<Pod>>>,
}

impl Informers {
    /// The process's Pod informer (all namespaces), started on first use.
    pub(crate) fn pods(&self, client: &kube::Client) -> Informer<Pod> {
        self.pods
            .get_or_init(|| Informer::start(Api::all(client.clone()), watcher::Config::default()))
            .clone()
    }
}

/// One watch of a kind and its store, shared by every subscriber.
pub(crate) struct Informer<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    fanout: Arc<Mutex<Fanout<K>>>,
    _task: Arc<Task>,
}

impl<K: Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            fanout: self.fanout.clone(),
            _task: self._task.clone(),
        }
    }
}

/// The subscribers' queues and whether the store holds a complete list yet.
struct Fanout<K> {
    subs: Vec<mpsc::UnboundedSender<SharedEvent<K>>>,
    listed: bool,
}

impl<K> Fanout<K> {
    /// Sends `ev` to every subscriber, forgetting those that went away.
    fn send(&mut self, ev: &SharedEvent<K>) {
        self.subs.retain(|s| s.send(clone_event(ev)).is_ok());
    }
}

fn clone_event<K>(ev: &SharedEvent<K>) -> SharedEvent<K> {
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.clone()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.clone()),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.clone()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The whole store as a list: `Init`, `InitApply` per object, `InitDone`.
fn replay<K>(objects: Vec<Arc<K>>) -> impl Iterator<Item = SharedEvent<K>> {
    std::iter::once(watcher::Event::Init)
        .chain(objects.into_iter().map(watcher::Event::InitApply))
        .chain(std::iter::once(watcher::Event::InitDone))
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Starts the watch (retried with kube's default back-off; errors never end it).
    pub(crate) fn start(api: Api<K>, cfg: watcher::Config) -> Self {
        let events = watcher(api, cfg)
            .default_backoff()
            .filter_map(|r| async move {
                match r {
                    Ok(ev) => Some(ev),
                    Err(e) => {
                        tracing::debug!(kind = %K::kind(&K::DynamicType::default()), error = %e,
                        "shared watch failed; retrying");
                        None
                    }
                }
            });
        Self::from_events(events)
    }

    /// An informer fed by any stream of watch events (the watch, or a test's events).
    pub(crate) fn from_events(
        events: impl Stream<Item = watcher::Event<K>> + Send + 'static,
    ) -> Self {
        let (store, mut writer) = reflector::store::<K>();
        let fanout = Arc::new(Mutex::new(Fanout {
            subs: Vec::new(),
            listed: false,
        }));
        let (f, reader) = (fanout.clone(), store.clone());
        let task = Task::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(mut ev) = events.next().await {
                if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = &mut ev {
                    o.meta_mut().managed_fields = None;
                }
                // The lock orders store updates and fan-out against `subscribe`, so a new
                // subscriber sees every change exactly once: in its replay or after it.
                let mut fan = f.lock().unwrap_or_else(|p| p.into_inner());
                match ev {
                    watcher::Event::Apply(o) => {
                        let key = ObjectRef::from_obj(&o);
                        writer.apply_watcher_event(&watcher::Event::Apply(o));
                        if let Some(shared) = reader.get(&key) {
                            fan.send(&watcher::Event::Apply(shared));
                        }
                    }
                    watcher::Event::Delete(o) => {
                        writer.apply_watcher_event(&watcher::Event::Delete(o.clone()));
                        fan.send(&watcher::Event::Delete(Arc::new(o)));
                    }
                    ev @ (watcher::Event::Init | watcher::Event::InitApply(_)) => {
                        writer.apply_watcher_event(&ev);
                    }
                    watcher::Event::InitDone => {
                        let before = reader.state();
                        writer.apply_watcher_event(&watcher::Event::InitDone);
                        let now = reader.state();
                        let gone: Vec<Arc<K>> = if fan.listed {
                            before
                                .into_iter()
                                .filter(|o| reader.get(&ObjectRef::from_obj(o.as_ref())).is_none())
                                .collect()
                        } else {
                            Vec::new()
                        };
                        fan.listed = true;
                        fan.subs.retain(|s| {
                            gone.iter()
                                .map(|o| watcher::Event::Delete(o.clone()))
                                .chain(replay(now.clone()))
                                .all(|ev| s.send(ev).is_ok())
                        });
                    }
                }
            }
        });
        Informer {
            store,
            fanout,
            _task: Arc::new(task),
        }
    }

    /// The shared store (complete once [`super::ready`] returns).
    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A stream of every change from now on, preceded by the store's current contents as a
    /// list when it has one. The stream keeps the informer running while it lives.
    pub(crate) fn subscribe(&self) -> impl Stream<Item = SharedEvent<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut fan = self.fanout.lock().unwrap_or_else(|p| p.into_inner());
            if fan.listed {
                for ev in replay(self.store.state()) {
                    let _ = tx.send(ev);
                }
            }
            fan.subs.push(tx);
        }
        let keep = self._task.clone();
        futures::stream::unfold((rx, keep), |(mut rx, keep)| async move {
            let ev = rx.recv().await?;
            Some((ev, (rx, keep)))
        })
    }

    /// Pokes `wake` on every change (for a loop over the store that sleeps until something
    /// happens), as long as the returned task lives.
    pub(crate) fn waking(&self, wake: Arc<tokio::sync::Notify>) -> Task {
        let mut events = Box::pin(self.subscribe());
        Task::spawn(async move {
            while events.next().await.is_some() {
                wake.notify_one();
            }
        })
    }

    /// The objects each change touched (applied or deleted), for a `Controller`'s
    /// `watches_shared_stream`-like trigger or a loop that wakes on any change.
    pub(crate) fn touched(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.subscribe().filter_map(|ev| async move {
            match ev {
                watcher::Event::Apply(o)
                | watcher::Event::InitApply(o)
                | watcher::Event::Delete(o) => Some(o),
                watcher::Event::Init | watcher::Event::InitDone => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{child_triggers, SeenRevision};
    use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
    use std::time::Duration;

    fn pod(name: &str, rv: u64, owner_kind: &str, owner: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "resourceVersion": rv.to_string(),
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind,
                    "name": owner, "uid": format!("uid-{owner}"), "controller": true}],
            },
        }))
        .expect("pod")
    }

    async fn next<T>(s: &mut (impl Stream<Item = T> + Unpin)) -> T {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an item within 5 s")
            .expect("stream open")
    }

    /// One shared pod stream feeds two workload controllers' triggers (a ReplicaSet's and a
    /// StatefulSet's): the list wakes each owner, and a delete reaches both — also one
    /// missed while the watch was down, found by the relist.
    #[tokio::test]
    async fn one_pod_stream_feeds_two_controllers_and_deletes_reach_them() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let informer = Informer::<Pod>::from_events(rx);
        let (rs_owners, _w1) = reflector::store::<ReplicaSet>();
        let (sts_owners, _w2) = reflector::store::<StatefulSet>();
        let (seen_rs, seen_sts) = (
            Arc::new(SeenRevision::default()),
            Arc::new(SeenRevision::default()),
        );
        let mut rs = Box::pin(child_triggers(
            informer.subscribe(),
            rs_owners,
            seen_rs.clone(),
            |_: &ReplicaSet, _: &Pod| false,
        ));
        let mut sts = Box::pin(child_triggers(
            informer.subscribe(),
            sts_owners,
            seen_sts.clone(),
            |_: &StatefulSet, _: &Pod| false,
        ));
        let web = || ObjectRef::<ReplicaSet>::new("web").within("ns");
        let db = || ObjectRef::<StatefulSet>::new("db").within("ns");

        // The list: each controller hears of its own pod only.
        tx.unbounded_send(watcher::Event::Init).unwrap();
        tx.unbounded_send(watcher::Event::InitApply(pod(
            "web-1",
            5,
            "ReplicaSet",
            "web",
        )))
        .unwrap();
        tx.unbounded_send(watcher::Event::InitApply(pod(
            "db-0",
            6,
            "StatefulSet",
            "db",
        )))
        .unwrap();
        tx.unbounded_send(watcher::Event::InitDone).unwrap();
        assert_eq!(next(&mut rs).await, web());
        assert_eq!(next(&mut sts).await, db());
        super::super::ready(&informer.store()).await;
        assert_eq!(informer.store().len(), 2);
        // Stored once, trimmed: no managedFields.
        let stored = informer.store().state();
        assert!(stored.iter().all(|p| p.metadata.managed_fields.is_none()));

        // A live delete reaches both subscribers' triggers.
        tx.unbounded_send(watcher::Event::Delete(pod("web-1", 7, "ReplicaSet", "web")))
            .unwrap();
        tx.unbounded_send(watcher::Event::Delete(pod("db-0", 8, "StatefulSet", "db")))
            .unwrap();
        assert_eq!(next(&mut rs).await, web());
        assert_eq!(next(&mut sts).await, db());
        assert!(informer.store().is_empty());
        // Each has seen the writes its stream delivered so far (the ReplicaSet's stream has
        // not been polled past web-1's delete yet).
        assert_eq!((seen_rs.get(), seen_sts.get()), (7, 8));

        // A late subscriber gets the store as a list, then live events (one shared object).
        tx.unbounded_send(watcher::Event::Apply(pod("web-2", 9, "ReplicaSet", "web")))
            .unwrap();
        assert_eq!(next(&mut rs).await, web());
        let mut late = Box::pin(informer.subscribe());
        assert!(matches!(next(&mut late).await, watcher::Event::Init));
        let watcher::Event::InitApply(p) = next(&mut late).await else {
            panic!("the stored pod")
        };
        assert!(
            Arc::ptr_eq(&p, &informer.store().state()[0]),
            "the store's own object"
        );
        assert!(matches!(next(&mut late).await, watcher::Event::InitDone));

        // The watch broke; web-2 went meanwhile. The relist reports it deleted.
        tx.unbounded_send(watcher::Event::Init).unwrap();
        tx.unbounded_send(watcher::Event::InitApply(pod(
            "db-1",
            11,
            "StatefulSet",
            "db",
        )))
        .unwrap();
        tx.unbounded_send(watcher::Event::InitDone).unwrap();
        assert_eq!(next(&mut rs).await, web(), "web-2's delete");
        assert_eq!(next(&mut sts).await, db(), "db-1 listed");
        let watcher::Event::Delete(gone) = next(&mut late).await else {
            panic!("web-2 reported deleted")
        };
        assert_eq!(gone.metadata.name.as_deref(), Some("web-2"));
        assert_eq!(informer.store().len(), 1);
    }
}
