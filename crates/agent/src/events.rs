//! Events about pods, written as core/v1 Events (what `kubectl describe` and `kubectl get
//! events` read) with kubelet as their source. Repeats of the same event within a pod are
//! folded into one Event with a growing count, as kubelet's recorder does. Recording queues
//! (bounded) and returns: one task per recorder writes.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::mpsc;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Normal,
    Warning,
}

/// (namespace, involved uid, fieldPath, reason, message).
type EventKey = (String, String, String, String, String);

/// How many events may wait for the writer; beyond that new ones are dropped (logged), as
/// client-go's event broadcaster drops when its queue is full. Recording never waits for the
/// API, so a pod's start does not pay for its events.
const QUEUE: usize = 1024;

/// One event to write.
struct Item {
    involved: ObjectReference,
    component: String,
    kind: Kind,
    reason: String,
    message: String,
    at: Time,
}

/// Writes pod events for one node: callers queue them (bounded, never waiting), one task
/// writes them in order.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<Item>,
}

impl Recorder {
    /// A recorder and its writer task (on the current tokio runtime; it ends when the last
    /// clone of the recorder is dropped).
    pub fn new(client: kube::Client, node: String) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(client, node, rx));
        Recorder { tx }
    }

    /// Records an event about `pod` (and, with `container`, about that container).
    pub async fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: Kind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message: String = message.into();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let field_path = container
            .map(|c| {
                let init = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.init_containers.as_ref())
                    .is_some_and(|ic| ic.iter().any(|x| x.name == c));
                if init {
                    format!("spec.initContainers{{{c}}}")
                } else {
                    format!("spec.containers{{{c}}}")
                }
            })
            .unwrap_or_default();
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns),
            uid: Some(uid),
            field_path: (!field_path.is_empty()).then_some(field_path),
            resource_version: None,
        };
        self.object_event(involved, "kubelet", kind, reason, message)
            .await
    }

    /// Records an event about any namespaced object (a PersistentVolumeClaim …) as
    /// `component`, folding repeats like [`Recorder::event`]. Queues it and returns at once
    /// (async only for its callers' sake).
    pub async fn object_event(
        &self,
        involved: ObjectReference,
        component: &str,
        kind: Kind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let item = Item {
            involved,
            component: component.to_string(),
            kind,
            reason: reason.to_string(),
            message: message.into(),
            at: Time(jiff::Timestamp::now()),
        };
        if let Err(e) = self.tx.try_send(item) {
            let reason = match &e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => {
                    i.reason.clone()
                }
            };
            tracing::debug!(reason, "event dropped: the event queue is full");
        }
    }
}

/// The writer: events in queue order, repeats of one (namespace, object, field, reason,
/// message) folded into one Event with a growing count.
async fn write(client: kube::Client, node: String, mut rx: mpsc::Receiver<Item>) {
    // The key → (event name, count).
    let mut seen: HashMap<EventKey, (String, i32)> = HashMap::new();
    while let Some(it) = rx.recv().await {
        let ns = it.involved.namespace.clone().unwrap_or_default();
        let uid = it.involved.uid.clone().unwrap_or_default();
        let name = it.involved.name.clone().unwrap_or_default();
        let field_path = it.involved.field_path.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let now = it.at;
        let key = (
            ns.clone(),
            uid.clone(),
            field_path.clone(),
            it.reason.clone(),
            it.message.clone(),
        );
        if seen.len() > 4096 {
            seen.clear();
        }
        if let Some((ev_name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": now});
            if api
                .patch(ev_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                continue;
            }
        }
        let ev_name = format!("{name}.{:x}", jiff::Timestamp::now().as_nanosecond() as u64);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(ev_name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: it.involved,
            reason: Some(it.reason.clone()),
            message: Some(it.message),
            type_: Some(
                match it.kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(it.component.clone()),
                host: Some(node.clone()),
            }),
            reporting_component: Some(it.component),
            reporting_instance: Some(node.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            event_time: None::<MicroTime>,
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                seen.insert(key, (ev_name, 1));
            }
            Err(e) => tracing::debug!(error = %e, reason = it.reason, "event not recorded"),
        }
    }
}
