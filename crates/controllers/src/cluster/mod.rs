//! Helpers shared by the cluster controllers (node lifecycle, endpoints, service accounts,
//! disruption budgets, quota): reflectors kept in sync in the background, event recording
//! that never fails a reconcile, and the small pieces of Kubernetes' pod semantics they all
//! read (readiness, terminal phases).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

pub(crate) mod informer;

/// A background task that ends when this handle is dropped — with the controller's future,
/// e.g. when leader election stops it — instead of outliving it.
pub(crate) struct Task(tokio::task::JoinHandle<()>);

impl Task {
    pub(crate) fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        Task(tokio::spawn(f))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reflector's store, kept up to date by a background task (alive as long as the returned
/// [`Task`]) that also pokes `wake` on every change (so a loop over the store can sleep
/// until something happens). Watch errors are retried with kube's default back-off; they
/// never end the task.
pub(crate) fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    wake: Option<Arc<Notify>>,
) -> (Store<K>, Task)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = watcher(api, cfg).default_backoff().reflect(writer);
    let task = Task::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => {
                    if let Some(w) = &wake {
                        w.notify_one();
                    }
                }
                Err(e) => tracing::debug!(%kind, error = %e, "watch failed; retrying"),
            }
        }
    });
    (store, task)
}

/// Waits until a store has seen its first full list. kube's `Store::wait_until_ready`
/// wakes only the last task that polled it, so with another waiter (a `Controller` waits on
/// its own store) a plain await could sleep forever: poll it again every 200 ms.
pub(crate) async fn ready<K>(store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(_) => return,
            Err(_) => continue,
        }
    }
}

/// A reflector whose store is filled by the returned stream of touched objects — for a
/// `Controller`'s `watches_stream` — so one watch both caches and triggers. The store is
/// filled only while the controller polls the stream: wait with [`ready`] inside the
/// reconcile, not before the controller runs.
pub(crate) fn reflect_stream<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// Records events for one controller (`reportingController`), as `events.k8s.io/v1` Events.
#[derive(Clone)]
pub(crate) struct Events {
    recorder: Recorder,
}

impl Events {
    pub(crate) fn new(client: kube::Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes an event about `regarding`; a failure is logged, never returned: an event
    /// is information, and a controller must not stop acting because it could not tell.
    pub(crate) async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            tracing::debug!(reason, error = %e, "recording an event failed");
        }
    }
}

/// Whether a pod's `Ready` condition is `True`.
pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether a pod is being deleted.
pub(crate) fn pod_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `namespace/name` of an object, as Kubernetes writes it in messages.
pub(crate) fn ns_name<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The current time as the API's `Time`.
pub(crate) fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Whether an API error is a 409 Conflict (a stale resourceVersion) or 404: the object moved
/// on, and the next pass sees its new state.
pub(crate) fn is_stale(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_ends_with_its_handle() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        let t = Task::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        drop(t);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!flag.load(std::sync::atomic::Ordering::SeqCst));
    }
}
