//! The scheduler's writes to the API: bindings, events, pod status (PodScheduled,
//! nominatedNodeName), preemption of victims. Every call goes through kube-rs.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Binding, Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::model::PodInfo;

/// kube-scheduler truncates event notes to this many bytes.
const NOTE_LIMIT: usize = 1024;

/// Event cache entries kept for repeat counting before the cache is reset.
const EVENT_CACHE_LIMIT: usize = 10_000;

/// (pod uid, reason, message) → (event name, count).
type EventCache = HashMap<(String, String, String), (String, i32)>;

/// How long a binding may take before the pod is retried.
const BIND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub struct Writer {
    client: kube::Client,
    component: String,
    instance: String,
    /// (pod uid, reason, message) → (event name, count): a repeated event is patched.
    events: Mutex<EventCache>,
}

fn pods(client: &kube::Client, ns: &str) -> Api<Pod> {
    Api::namespaced(client.clone(), ns)
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// kube-scheduler's `truncateMessage`.
pub fn truncate(msg: &str) -> String {
    if msg.len() <= NOTE_LIMIT {
        return msg.to_string();
    }
    let suffix = " ...";
    let mut end = NOTE_LIMIT - suffix.len();
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &msg[..end])
}

impl Writer {
    pub fn new(client: kube::Client, component: &str, instance: &str) -> Writer {
        Writer {
            client,
            component: component.to_string(),
            instance: instance.to_string(),
            events: Mutex::new(HashMap::new()),
        }
    }

    /// POST `pods/{name}/binding`.
    pub async fn bind(&self, p: &PodInfo, node: &str) -> Result<(), kube::Error> {
        let b = Binding {
            metadata: ObjectMeta {
                name: Some(p.name.clone()),
                namespace: Some(p.namespace.clone()),
                uid: Some(p.uid.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        // Bounded: a binding that never answers (the scheduler's HTTP/2 client has no read
        // timeout of its own) would leave the pod assumed, and Pending, forever. On timeout
        // the pod is retried; if the binding did land, the retry's 409 and the watch tell.
        let api = pods(&self.client, &p.namespace);
        let call = async {
            let _: serde_json::Value = api
                .create_subresource("binding", &p.name, &PostParams::default(), &b)
                .await?;
            Ok(())
        };
        match tokio::time::timeout(BIND_TIMEOUT, call).await {
            Ok(r) => r,
            Err(elapsed) => Err(kube::Error::Service(Box::new(elapsed))),
        }
    }

    /// Records an event about a pod (core/v1, as `kubectl describe` shows them); a repeat
    /// of the same event bumps its count.
    pub async fn event(
        &self,
        p: &PodInfo,
        type_: &str,
        reason: &str,
        action: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let message = truncate(message);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &p.namespace);
        let now = Time(jiff::Timestamp::now());
        let key = (p.uid.clone(), reason.to_string(), message.clone());
        let prior = self.events.lock().expect("event cache").get(&key).cloned();
        if let Some((name, count)) = prior {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.events
                        .lock()
                        .expect("event cache")
                        .insert(key, (name, count + 1));
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => {} // expired: create anew
                Err(e) => return Err(e),
            }
        }
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let name = format!("{}.{:x}", p.name, nanos as u128);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(p.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(p.name.clone()),
                namespace: Some(p.namespace.clone()),
                uid: Some(p.uid.clone()),
                resource_version: Some(p.resource_version.clone()).filter(|s| !s.is_empty()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        api.create(&PostParams::default(), &ev).await?;
        let mut cache = self.events.lock().expect("event cache");
        if cache.len() >= EVENT_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (name, 1));
        Ok(())
    }

    /// Forgets the repeat counts of a pod's events (it was scheduled or deleted).
    pub fn forget(&self, uid: &str) {
        self.events
            .lock()
            .expect("event cache")
            .retain(|k, _| k.0 != uid);
    }

    /// Sets PodScheduled=False (reason Unschedulable) and, when given, the nominated node
    /// (`Some("")` clears it).
    pub async fn unschedulable(
        &self,
        p: &PodInfo,
        message: &str,
        nominated: Option<&str>,
    ) -> Result<(), kube::Error> {
        let mut status = json!({
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Time(jiff::Timestamp::now()),
            }]
        });
        if let Some(n) = nominated {
            status["nominatedNodeName"] = if n.is_empty() {
                serde_json::Value::Null
            } else {
                json!(n)
            };
        }
        pods(&self.client, &p.namespace)
            .patch_status(
                &p.name,
                &PatchParams::default(),
                &Patch::Strategic(json!({ "status": status })),
            )
            .await?;
        Ok(())
    }

    /// Evicts a preemption victim: marks it (DisruptionTarget), deletes it gracefully and
    /// records `Preempted`.
    pub async fn preempt_victim(
        &self,
        victim: &PodInfo,
        preemptor: &PodInfo,
        node: &str,
    ) -> Result<(), kube::Error> {
        let api = pods(&self.client, &victim.namespace);
        let cond = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{}: preempting to accommodate a higher priority pod", self.component),
            "lastTransitionTime": Time(jiff::Timestamp::now()),
        }]}});
        match api
            .patch_status(
                &victim.name,
                &PatchParams::default(),
                &Patch::Strategic(cond),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        match api.delete(&victim.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.event(
            victim,
            "Normal",
            "Preempted",
            "Preempting",
            &format!("Preempted by pod {} on node {node}", preemptor.uid),
        )
        .await
    }
}
