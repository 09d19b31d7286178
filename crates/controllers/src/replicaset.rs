//! The ReplicaSet and ReplicationController controller (one code, as in
//! kube-controller-manager): keeps `spec.replicas` active pods made from the template,
//! each controlled by its owner; adopts orphans its selector matches and releases pods it
//! no longer selects; deletes the pods that matter least first; creates in slow-start
//! batches (1, 2, 4, …, at most 500 per sync) and remembers what it created or deleted
//! until its pod cache shows it (expectations), so it never acts twice on a stale cache.
//! Events: SuccessfulCreate, SuccessfulDelete, FailedCreate, FailedDelete.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::Selector;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::workload::pods::{self, pod_from_template};
use crate::workload::{
    self, claim, controller_ref, key_of, Claim, Events, Expectations, ReconcileError, SeenRevision,
};
use crate::{Context, Error};

/// Kubernetes' `BurstReplicas`: at most this many creates or deletes per sync.
pub(crate) const BURST_REPLICAS: usize = 500;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub(crate) trait ReplicaOwner:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    const CONTROLLER: &'static str;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn pod_selector(&self) -> Result<Option<Selector>, ReconcileError>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn status_value(&self) -> Value;
}

impl ReplicaOwner for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<Option<Selector>, ReconcileError> {
        workload::selector(self.spec.as_ref().map(|s| &s.selector))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

impl ReplicaOwner for ReplicationController {
    const CONTROLLER: &'static str = "replicationcontroller-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<Option<Selector>, ReconcileError> {
        // An RC without a selector selects its template's labels (API defaulting).
        let map = self
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| self.template()?.metadata.as_ref()?.labels.clone())
            .filter(|m| !m.is_empty());
        Ok(map.map(|m| m.into_iter().collect()))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_value(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

struct State<K> {
    client: kube::Client,
    pods: Store<Pod>,
    seen: Arc<SeenRevision>,
    expectations: Expectations<Pod>,
    events: Events,
    _owner: std::marker::PhantomData<fn() -> K>,
}

/// Runs the ReplicaSet and the ReplicationController controllers.
pub async fn run(ctx: Context) -> Result<(), Error> {
    futures::try_join!(
        run_for::<ReplicaSet>(ctx.clone()),
        run_for::<ReplicationController>(ctx)
    )
    .map(|_| ())
}

async fn run_for<K: ReplicaOwner>(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let owners: Api<K> = Api::all(client.clone());
    let pods = ctx.informers.pods(&client);
    let pod_store = pods.store();
    let seen = Arc::new(SeenRevision::default());
    let pod_events = pods.subscribe();
    let controller = Controller::new(owners, watcher::Config::default())
        .with_config(Config::default().concurrency(8));
    let triggers = workload::child_triggers(
        pod_events,
        controller.store(),
        seen.clone(),
        |o: &K, p: &Pod| {
            o.pod_selector()
                .ok()
                .flatten()
                .is_some_and(|s| workload::selects(Some(&s), p.metadata.labels.as_ref()))
        },
    );
    let state = Arc::new(State::<K> {
        client: client.clone(),
        pods: pod_store,
        seen,
        expectations: Expectations::default(),
        events: Events::new(client, K::CONTROLLER),
        _owner: std::marker::PhantomData,
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile::<K>, error_policy::<K>, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, controller = K::CONTROLLER, "reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped {
        name: K::CONTROLLER,
    })
}

fn error_policy<K: ReplicaOwner>(_: Arc<K>, e: &ReconcileError, _: Arc<State<K>>) -> Action {
    tracing::warn!(error = %e, controller = K::CONTROLLER, "sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

/// What one sync does, computed from a snapshot.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) adopt: Vec<Arc<Pod>>,
    pub(crate) release: Vec<Arc<Pod>>,
    /// The active pods the owner controls once adoption is done.
    pub(crate) active: Vec<Arc<Pod>>,
    pub(crate) create: usize,
    pub(crate) delete: Vec<Arc<Pod>>,
}

/// The sync decision of one owner: `pods` are the cached pods of its namespace with the
/// owner's expectations applied to those it controls.
pub(crate) fn plan(
    owner_uid: &str,
    owner_deleting: bool,
    sel: Option<&Selector>,
    replicas: i32,
    pods: Vec<Arc<Pod>>,
) -> Plan {
    let mut p = Plan::default();
    for pod in pods {
        match claim(owner_uid, owner_deleting, sel, &pod.metadata) {
            Claim::Owned => {
                if pods::is_active(&pod) {
                    p.active.push(pod)
                }
            }
            Claim::Adopt => {
                if pods::is_active(&pod) {
                    p.active.push(pod.clone());
                }
                p.adopt.push(pod);
            }
            Claim::Release => p.release.push(pod),
            Claim::Ignore => {}
        }
    }
    if owner_deleting {
        return p;
    }
    let want = usize::try_from(replicas.max(0)).unwrap_or(0);
    let have = p.active.len();
    if have < want {
        p.create = (want - have).min(BURST_REPLICAS);
    } else if have > want {
        let n = (have - want).min(BURST_REPLICAS);
        let mut ranked = p.active.clone();
        pods::sort_for_deletion(&mut ranked);
        ranked.truncate(n);
        p.delete = ranked;
    }
    p
}

/// The status of an owner whose active pods are `active` (`calculateStatus`).
/// `failure` is the error of this sync's creates/deletes, with the reason to record.
pub(crate) fn status(
    old: &Value,
    generation: Option<i64>,
    template_labels: Option<&BTreeMap<String, String>>,
    min_ready_seconds: i32,
    active: &[Arc<Pod>],
    failure: Option<(&str, String)>,
    now: jiff::Timestamp,
) -> Value {
    let labels_match = |p: &Pod| {
        template_labels.is_none_or(|t| {
            let l = p.metadata.labels.as_ref();
            t.iter().all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
        })
    };
    let fully = active.iter().filter(|p| labels_match(p)).count();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let avail = active
        .iter()
        .filter(|p| pods::is_available(p, min_ready_seconds, now))
        .count();
    let mut s = serde_json::Map::new();
    s.insert("replicas".into(), json!(active.len()));
    for (k, v) in [
        ("fullyLabeledReplicas", fully),
        ("readyReplicas", ready),
        ("availableReplicas", avail),
    ] {
        if v > 0 {
            s.insert(k.into(), json!(v));
        }
    }
    if let Some(g) = generation {
        s.insert("observedGeneration".into(), json!(g));
    }
    let mut conds: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_failure = conds.iter().any(|c| c["type"] == "ReplicaFailure");
    match failure {
        Some((reason, msg)) if !has_failure => conds.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": reason,
            "message": msg,
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        })),
        None if has_failure => conds.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    if !conds.is_empty() {
        s.insert("conditions".into(), Value::Array(conds));
    }
    Value::Object(s)
}

#[tracing::instrument(skip_all, fields(kind = K::kind(&()).as_ref(), namespace = obj.namespace(), name = obj.name_any()))]
async fn reconcile<K: ReplicaOwner>(
    obj: Arc<K>,
    st: Arc<State<K>>,
) -> Result<Action, ReconcileError> {
    let _ = st.pods.wait_until_ready().await;
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = key_of(obj.meta());
    let uid = obj.uid().unwrap_or_default();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let sel = obj.pod_selector()?;
    let seen = st.seen.get();
    let in_ns: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let (mine, others): (Vec<_>, Vec<_>) = in_ns
        .into_iter()
        .partition(|p| workload::controller_of(&p.metadata).is_some_and(|r| r.uid == uid));
    let mut candidates = st.expectations.view(&key, mine, seen);
    candidates.extend(others);
    let plan = plan(&uid, deleting, sel.as_ref(), obj.replicas(), candidates);

    let api: Api<Pod> = Api::namespaced(st.client.clone(), &ns);
    let oref = controller_ref(obj.as_ref());
    for p in &plan.adopt {
        workload::adopt(&api, p.as_ref(), oref.clone()).await?;
    }
    for p in &plan.release {
        workload::release(&api, p.as_ref(), &uid).await?;
    }

    let mut failure: Option<(&str, String)> = None;
    if plan.create > 0 {
        let Some(template) = obj.template() else {
            return Err(ReconcileError::Invalid("no pod template".into()));
        };
        let pod = pod_from_template(template, &ns, Some(format!("{name}-")), None, oref.clone());
        let (_, err) = workload::slow_start(plan.create, |_| {
            let (api, pod, st, key, obj) = (&api, &pod, &st, &key, &obj);
            async move {
                match api.create(&PostParams::default(), pod).await {
                    Ok(created) => {
                        st.events.normal(
                            obj.object_ref(&()),
                            "SuccessfulCreate",
                            format!("Created pod: {}", created.name_any()),
                        );
                        st.expectations.created(key, created);
                        Ok(())
                    }
                    Err(e) => {
                        if !workload::is_namespace_terminating(&e) {
                            st.events.warning(
                                obj.object_ref(&()),
                                "FailedCreate",
                                format!("Error creating: {}", workload::api_message(&e)),
                            );
                        }
                        Err(e)
                    }
                }
            }
        })
        .await;
        if let Some(e) = err {
            if !workload::is_namespace_terminating(&e) {
                failure = Some(("FailedCreate", workload::api_message(&e)));
            }
        }
    }
    if !plan.delete.is_empty() {
        let results = futures::future::join_all(plan.delete.iter().map(|p| {
            let (api, st, key, obj) = (&api, &st, &key, &obj);
            async move {
                let pname = p.name_any();
                let puid = p.uid().unwrap_or_default();
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(puid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                st.expectations.deleted(key, &puid);
                match api.delete(&pname, &dp).await {
                    Ok(_) => {
                        st.events.normal(
                            obj.object_ref(&()),
                            "SuccessfulDelete",
                            format!("Deleted pod: {pname}"),
                        );
                        Ok(())
                    }
                    Err(e) if workload::is_not_found(&e) => Ok(()),
                    Err(e) => {
                        st.expectations.forget(key);
                        st.events.warning(
                            obj.object_ref(&()),
                            "FailedDelete",
                            format!("Error deleting: {}", workload::api_message(&e)),
                        );
                        Err(e)
                    }
                }
            }
        }))
        .await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            failure = Some(("FailedDelete", workload::api_message(&e)));
        }
    }

    let now = workload::now();
    let min_ready = obj.min_ready_seconds();
    let template_labels = obj
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let old = obj.status_value();
    let new = status(
        &old,
        obj.meta().generation,
        template_labels,
        min_ready,
        &plan.active,
        failure.clone(),
        now,
    );
    if let Some(patch) = workload::status_patch(&old, &new) {
        let owners: Api<K> = Api::namespaced(st.client.clone(), &ns);
        match owners
            .patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if workload::is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((_, msg)) = failure {
        return Err(ReconcileError::Invalid(msg));
    }
    // Pods becoming available after minReadySeconds change no object: look again then.
    let ready = new["readyReplicas"].as_i64().unwrap_or(0);
    let avail = new["availableReplicas"].as_i64().unwrap_or(0);
    if min_ready > 0 && avail < ready {
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(mut p: Pod, uid: &str) -> Arc<Pod> {
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.metadata.owner_references = Some(vec![OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            api_version: "apps/v1".into(),
            ..Default::default()
        }]);
        Arc::new(p)
    }

    fn sel() -> Selector {
        [("app", "web")].into_iter().collect()
    }

    #[test]
    fn creates_the_missing_replicas_up_to_the_burst() {
        let p = plan(
            "u",
            false,
            Some(&sel()),
            3,
            vec![owned(pod("a", "", "Pending", false, 1), "u")],
        );
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty());
        let p = plan("u", false, Some(&sel()), 3000, vec![]);
        assert_eq!(p.create, BURST_REPLICAS);
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let pods = vec![
            owned(pod("ready", "n1", "Running", true, 100), "u"),
            owned(pod("pending", "n2", "Pending", false, 100), "u"),
            owned(pod("unscheduled", "", "Pending", false, 100), "u"),
        ];
        let p = plan("u", false, Some(&sel()), 1, pods);
        let names: Vec<_> = p.delete.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["unscheduled", "pending"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn adopts_orphans_releases_strays_and_ignores_finished_pods() {
        let mut orphan = pod("orphan", "", "Pending", false, 1);
        orphan.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        let mut stray = (*owned(pod("stray", "", "Pending", false, 1), "u")).clone();
        stray.metadata.labels = None;
        let done = owned(pod("done", "n", "Succeeded", false, 1), "u");
        let other = owned(pod("other", "n", "Running", true, 1), "someone-else");
        let p = plan(
            "u",
            false,
            Some(&sel()),
            2,
            vec![Arc::new(orphan), Arc::new(stray), done, other],
        );
        assert_eq!(p.adopt.len(), 1);
        assert_eq!(p.release.len(), 1);
        assert_eq!(p.active.len(), 1);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn a_deleting_owner_creates_and_adopts_nothing() {
        let p = plan("u", true, Some(&sel()), 3, vec![]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn status_counts_ready_available_and_failure() {
        let now = jiff::Timestamp::now();
        let pods = vec![
            owned(pod("a", "n", "Running", true, 100), "u"),
            owned(pod("b", "n", "Running", true, 1), "u"),
            owned(pod("c", "n", "Pending", false, 1), "u"),
        ];
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let s = status(&json!({}), Some(4), Some(&labels), 10, &pods, None, now);
        assert_eq!(
            s,
            json!({"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2,
                   "availableReplicas": 1, "observedGeneration": 4})
        );
        let s = status(
            &s,
            Some(4),
            None,
            0,
            &[],
            Some(("FailedCreate", "quota".into())),
            now,
        );
        assert_eq!(s["conditions"][0]["reason"], "FailedCreate");
        assert_eq!(s["replicas"], 0);
        let s = status(&s, Some(4), None, 0, &[], None, now);
        assert!(s.get("conditions").is_none());
    }

    #[test]
    fn expectations_hide_what_the_cache_has_not_seen() {
        let e = Expectations::<Pod>::default();
        let mut created = pod("new", "", "Pending", false, 0);
        created.metadata.resource_version = Some("10".into());
        e.created("ns/rs", created);
        let old = Arc::new(pod("old", "", "Pending", false, 10));
        e.deleted("ns/rs", "uid-old");
        // The cache is at revision 5: it shows neither the create nor the delete.
        let v = e.view("ns/rs", vec![old.clone()], 5);
        let names: Vec<_> = v.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["new"]);
        // At revision 12 the cache has both: the created pod (here gone again) is not
        // resurrected, and the deleted one is gone.
        let v = e.view("ns/rs", vec![], 12);
        assert!(v.is_empty());
    }
}
