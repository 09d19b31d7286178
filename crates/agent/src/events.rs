//! Events about pods, written as core/v1 Events (what `kubectl describe` and `kubectl get
//! events` read) with kubelet as their source. Repeats of the same event within a pod are
//! folded into one Event with a growing count, as kubelet's recorder does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::Mutex;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Normal,
    Warning,
}

/// (namespace, involved uid, fieldPath, reason, message).
type EventKey = (String, String, String, String, String);

/// Writes pod events for one node.
#[derive(Clone)]
pub(crate) struct Recorder {
    client: kube::Client,
    node: String,
    /// The key → (event name, count).
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

impl Recorder {
    pub fn new(client: kube::Client, node: String) -> Recorder {
        Recorder {
            client,
            node,
            seen: Default::default(),
        }
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
    /// `component`, folding repeats like [`Recorder::event`].
    pub async fn object_event(
        &self,
        involved: ObjectReference,
        component: &str,
        kind: Kind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message: String = message.into();
        let ns = involved.namespace.clone().unwrap_or_default();
        let uid = involved.uid.clone().unwrap_or_default();
        let name = involved.name.clone().unwrap_or_default();
        let field_path = involved.field_path.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(jiff::Timestamp::now());
        let key = (
            ns.clone(),
            uid.clone(),
            field_path.clone(),
            reason.to_string(),
            message.clone(),
        );
        let mut seen = self.seen.lock().await;
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
                return;
            }
        }
        let ev_name = format!("{name}.{:x}", jiff::Timestamp::now().as_nanosecond() as u64);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(ev_name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: involved,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(component.into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(component.into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            event_time: None::<MicroTime>,
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                seen.insert(key, (ev_name, 1));
            }
            Err(e) => tracing::debug!(error = %e, reason, "event not recorded"),
        }
    }
}
