//! The StatefulSet controller, after kube-controller-manager's: pods with stable names
//! `<sts>-<ordinal>` (hostname, `serviceName` subdomain, `statefulset.kubernetes.io/pod-name`
//! and `apps.kubernetes.io/pod-index` labels), one PersistentVolumeClaim per
//! volumeClaimTemplate and ordinal (`<claim>-<sts>-<ordinal>`, created before the pod; binding
//! is the volume controllers' job), OrderedReady (one pod at a time, in order up, in reverse
//! order down, waiting for Running and Ready) and Parallel management, RollingUpdate from the
//! highest ordinal down to `partition` with at most `maxUnavailable` pods (default 1; a
//! number or a percentage of replicas, rounded up) unavailable at once — kube's
//! `MaxUnavailableStatefulSet` — and `minReadySeconds` before a pod counts as available,
//! and OnDelete; revisions as ControllerRevisions
//! (`controller-revision-hash` = `<sts>-<hash>`), with `currentRevision`/`updateRevision` in
//! the status; `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete` makes the claims
//! owned by the StatefulSet, `whenScaled: Delete` the claims of a pod removed by a scale-down
//! owned by that pod (so the garbage collector deletes them after it). Events worded as Kubernetes' (`create Pod web-0 in
//! StatefulSet web successful`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::workload::hash::compute_hash;
use crate::workload::pods::{self, pod_from_template};
use crate::workload::revisions::{self, HASH_LABEL};
use crate::workload::{
    self, claim, controller_ref, key_of, Claim, Events, Expectations, ReconcileError, SeenRevision,
};
use crate::{Context, Error};

const CONTROLLER: &str = "statefulset-controller";
pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The ordinal of a pod of `sts` (`<sts>-<n>`).
pub(crate) fn ordinal(sts: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(sts)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok().filter(|v: &i32| *v >= 0)
}

/// Which revision a pod to create gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rev {
    Current,
    Update,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) create: Vec<(i32, Rev)>,
    pub(crate) delete: Vec<Arc<Pod>>,
    pub(crate) status: StatefulSetStatus,
}

fn pod_rev(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

fn running_and_ready(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p)
}

/// The sync of `sts` over the pods it controls; `current`/`update` are the revision names.
pub(crate) fn plan(
    sts: &StatefulSet,
    owned: &[Arc<Pod>],
    current: &str,
    update: &str,
    now: jiff::Timestamp,
) -> Plan {
    let mut p = Plan::default();
    let Some(spec) = sts.spec.as_ref() else {
        return p;
    };
    let name = sts.name_any();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let end = start.saturating_add(replicas);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);

    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for pod in owned {
        let Some(ord) = ordinal(&name, &pod.name_any()) else {
            continue;
        };
        if (start..end).contains(&ord) {
            slots[(ord - start) as usize] = Some(pod.clone());
        } else {
            condemned.push((ord, pod.clone()));
        }
    }
    condemned.sort_by_key(|(o, _)| *o);

    // Status from what exists.
    let all: Vec<&Arc<Pod>> = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| all.iter().filter(|p| f(p)).count() as i32;
    let status_replicas = all.len() as i32;
    let ready = count(&|p| pods::is_ready(p) && p.metadata.deletion_timestamp.is_none());
    let available = count(&|p| {
        pods::is_available(p, min_ready, now) && p.metadata.deletion_timestamp.is_none()
    });
    let cur_n = count(&|p| pod_rev(p) == Some(current));
    let upd_n = count(&|p| pod_rev(p) == Some(update));
    let mut cur_rev = current.to_string();
    let mut cur_count = cur_n;
    if rolling
        && upd_n == status_replicas
        && ready == status_replicas
        && status_replicas == replicas
    {
        cur_rev = update.to_string();
        cur_count = upd_n;
    }
    let old = sts.status.clone().unwrap_or_default();
    p.status = StatefulSetStatus {
        available_replicas: Some(available),
        collision_count: old.collision_count,
        conditions: old.conditions,
        current_replicas: Some(cur_count).filter(|v| *v > 0),
        current_revision: Some(cur_rev),
        observed_generation: sts.metadata.generation,
        ready_replicas: Some(ready).filter(|v| *v > 0),
        replicas: status_replicas,
        update_revision: Some(update.to_string()),
        updated_replicas: Some(upd_n).filter(|v| *v > 0),
    };

    // The revision a new pod of ordinal `ord` gets.
    let rev_for = |ord: i32| {
        if rolling && ord < start + partition {
            Rev::Current
        } else {
            Rev::Update
        }
    };

    // Up, in order.
    let mut first_unhealthy: Option<String> = None;
    for (i, slot) in slots.iter().enumerate() {
        let ord = start + i as i32;
        match slot {
            None => {
                p.create.push((ord, rev_for(ord)));
                if monotonic {
                    return p;
                }
            }
            Some(pod) => {
                if pods::phase(pod) == "Failed" && pod.metadata.deletion_timestamp.is_none() {
                    p.delete.push(pod.clone());
                    if monotonic {
                        return p;
                    }
                    continue;
                }
                let healthy = running_and_ready(pod)
                    && pods::is_available(pod, min_ready, now)
                    && pod.metadata.deletion_timestamp.is_none();
                if !healthy {
                    first_unhealthy.get_or_insert_with(|| pod.name_any());
                    if monotonic {
                        return p;
                    }
                }
            }
        }
    }
    // Down, in reverse order.
    for (_, pod) in condemned.iter().rev() {
        if pod.metadata.deletion_timestamp.is_some() {
            if monotonic {
                return p;
            }
            continue;
        }
        if monotonic && first_unhealthy.is_some() && !running_and_ready(pod) {
            // Kubernetes deletes only the first unhealthy pod while others are unhealthy.
            if first_unhealthy.as_deref() != Some(pod.name_any().as_str()) {
                return p;
            }
        }
        p.delete.push(pod.clone());
        if monotonic {
            return p;
        }
    }
    // Rolling update: from the highest ordinal down to the partition, at most
    // `maxUnavailable` pods (1 by default) unavailable at a time, counting every pod of the
    // set (kube's `updateStatefulSetAfterInvariantEstablished`).
    if rolling {
        let max_unavailable = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .map_or(1, |v| {
                workload::scaled_value(Some(v), replicas, true, 1).unwrap_or(1)
            })
            .max(1);
        let unavailable = slots
            .iter()
            .filter(|s| match s {
                None => true,
                Some(pod) => {
                    pod.metadata.deletion_timestamp.is_some()
                        || !(running_and_ready(pod) && pods::is_available(pod, min_ready, now))
                }
            })
            .count() as i32;
        let mut budget = max_unavailable - unavailable;
        for (i, slot) in slots.iter().enumerate().rev() {
            if budget <= 0 || (i as i32) < partition {
                break;
            }
            let Some(pod) = slot else { continue };
            if pod_rev(pod) != Some(update) && pod.metadata.deletion_timestamp.is_none() {
                p.delete.push(pod.clone());
                budget -= 1;
            }
        }
    }
    p
}

/// The pod of ordinal `ord` from `template` (its revision `rev_name`).
pub(crate) fn stateful_pod(
    sts: &StatefulSet,
    template: &PodTemplateSpec,
    ord: i32,
    rev_name: &str,
) -> Pod {
    let name = sts.name_any();
    let spec = sts.spec.as_ref().expect("plan only creates with a spec");
    let pod_name = format!("{name}-{ord}");
    let mut pod = pod_from_template(
        template,
        sts.namespace().as_deref().unwrap_or_default(),
        None,
        Some(pod_name.clone()),
        controller_ref(sts),
    );
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ord.to_string());
    labels.insert(HASH_LABEL.into(), rev_name.into());
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(pod_name.clone());
        if let Some(svc) = spec.service_name.as_ref().filter(|s| !s.is_empty()) {
            ps.subdomain = Some(svc.clone());
        }
        for c in spec.volume_claim_templates.iter().flatten() {
            let cname = c.metadata.name.clone().unwrap_or_default();
            let vols = ps.volumes.get_or_insert_with(Vec::new);
            vols.retain(|v| v.name != cname);
            vols.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{cname}-{pod_name}"),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    pod
}

/// The claims of ordinal `ord`.
pub(crate) fn claims_for(sts: &StatefulSet, ord: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = sts.spec.as_ref() else {
        return Vec::new();
    };
    let name = sts.name_any();
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let cname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            let owner = delete_with_set.then(|| {
                vec![OwnerReference {
                    controller: None,
                    ..controller_ref(sts)
                }]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(format!("{cname}-{name}-{ord}")),
                    namespace: sts.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// `persistentVolumeClaimRetentionPolicy.whenScaled: Delete`: the claims of a pod the
/// scale-down removes (its ordinal outside the set's range) become owned by that pod, so the
/// garbage collector deletes them after it (kube's `updateClaimOwnerRefForSetAndPod`).
/// Returns the claim names to hand over; none under `Retain` or for a pod in range.
pub(crate) fn claims_released_with(sts: &StatefulSet, pod: &Pod) -> Vec<String> {
    let Some(spec) = sts.spec.as_ref() else {
        return Vec::new();
    };
    let when_scaled = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref());
    let name = sts.name_any();
    let Some(ord) = ordinal(&name, &pod.name_any()) else {
        return Vec::new();
    };
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let end = start.saturating_add(spec.replicas.unwrap_or(1).max(0));
    if when_scaled != Some("Delete") || (start..end).contains(&ord) {
        return Vec::new();
    }
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            format!(
                "{}-{name}-{ord}",
                t.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// The claim's owner references with `pod` added, or `None` when it is already there.
pub(crate) fn with_pod_owner(
    claim: &PersistentVolumeClaim,
    pod: &Pod,
) -> Option<Vec<OwnerReference>> {
    let uid = pod.uid()?;
    let mut refs = claim.metadata.owner_references.clone().unwrap_or_default();
    if refs.iter().any(|r| r.uid == uid) {
        return None;
    }
    refs.push(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid,
        controller: None,
        block_owner_deletion: None,
    });
    Some(refs)
}

/// The template a revision holds (the inverse of `revisions::data_of`).
fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = cr.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    seen: Arc<SeenRevision>,
    expectations: Expectations<Pod>,
    events: Events,
}

/// Runs the StatefulSet controller.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let pods = ctx.informers.pods(&client);
    let pod_store = pods.store();
    let seen = Arc::new(SeenRevision::default());
    let pod_events = pods.subscribe();
    let controller = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(4));
    let triggers = workload::child_triggers(
        pod_events,
        controller.store(),
        seen.clone(),
        |s: &StatefulSet, p: &Pod| {
            workload::selector(s.spec.as_ref().map(|s| &s.selector))
                .ok()
                .flatten()
                .is_some_and(|sel| workload::selects(Some(&sel), p.metadata.labels.as_ref()))
        },
    );
    let state = Arc::new(State {
        client: client.clone(),
        pods: pod_store,
        seen,
        expectations: Expectations::default(),
        events: Events::new(client, CONTROLLER),
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "statefulset reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped { name: CONTROLLER })
}

fn error_policy(_: Arc<StatefulSet>, e: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(error = %e, "statefulset sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = sts.namespace(), name = sts.name_any()))]
async fn reconcile(sts: Arc<StatefulSet>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let _ = st.pods.wait_until_ready().await;
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let key = key_of(&sts.metadata);
    let uid = sts.uid().unwrap_or_default();
    let Some(sel) = workload::selector(Some(&spec.selector))? else {
        return Ok(Action::await_change());
    };
    let api: Api<Pod> = Api::namespaced(st.client.clone(), &ns);
    let (mine, others): (Vec<_>, Vec<_>) = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .partition(|p| workload::controller_of(&p.metadata).is_some_and(|r| r.uid == uid));
    let mut owned = Vec::new();
    for p in st
        .expectations
        .view(&key, mine, st.seen.get())
        .into_iter()
        .chain(others)
    {
        match claim(&uid, false, Some(&sel), &p.metadata) {
            Claim::Owned => owned.push(p),
            Claim::Adopt if ordinal(&name, &p.name_any()).is_some() => {
                workload::adopt(&api, p.as_ref(), controller_ref(sts.as_ref())).await?;
                owned.push(p);
            }
            Claim::Release => workload::release(&api, p.as_ref(), &uid).await?,
            _ => {}
        }
    }
    let status = sts.status.clone().unwrap_or_default();
    let hash = compute_hash(&spec.template, status.collision_count);
    let cr_api: Api<ControllerRevision> = Api::namespaced(st.client.clone(), &ns);
    let (update_cr, all_revs) = revisions::ensure(
        &cr_api,
        controller_ref(sts.as_ref()),
        &sel,
        &spec.template,
        &hash,
    )
    .await?;
    let update_name = update_cr.name_any();
    let current_cr = status
        .current_revision
        .as_ref()
        .and_then(|c| all_revs.iter().find(|r| &r.name_any() == c))
        .cloned()
        .unwrap_or_else(|| update_cr.clone());
    let current_name = current_cr.name_any();
    let plan = plan(&sts, &owned, &current_name, &update_name, workload::now());

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(st.client.clone(), &ns);
    for (ord, rev) in &plan.create {
        let (cr, rev_name) = match rev {
            Rev::Current => (&current_cr, &current_name),
            Rev::Update => (&update_cr, &update_name),
        };
        let template = template_of(cr).unwrap_or_else(|| spec.template.clone());
        let pod = stateful_pod(&sts, &template, *ord, rev_name);
        for c in claims_for(&sts, *ord) {
            let cname = c.name_any();
            if pvcs.get_opt(&cname).await?.is_none() {
                match pvcs.create(&PostParams::default(), &c).await {
                    Ok(_) => st.events.normal(
                        sts.object_ref(&()),
                        "SuccessfulCreate",
                        format!(
                            "create Claim {cname} Pod {} in StatefulSet {name} success",
                            pod.name_any()
                        ),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        st.events.warning(
                            sts.object_ref(&()),
                            "FailedCreate",
                            format!(
                                "create Claim {cname} for Pod {} in StatefulSet {name} failed error: {}",
                                pod.name_any(),
                                workload::api_message(&e)
                            ),
                        );
                        return Err(e.into());
                    }
                }
            }
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                st.events.normal(
                    sts.object_ref(&()),
                    "SuccessfulCreate",
                    format!(
                        "create Pod {} in StatefulSet {name} successful",
                        created.name_any()
                    ),
                );
                st.expectations.created(&key, created);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                st.events.warning(
                    sts.object_ref(&()),
                    "FailedCreate",
                    format!(
                        "create Pod {} in StatefulSet {name} failed error: {}",
                        pod.name_any(),
                        workload::api_message(&e)
                    ),
                );
                return Err(e.into());
            }
        }
    }
    // whenScaled: Delete — the claims of pods the scale-down removes go with them.
    for pod in &plan.delete {
        for cname in claims_released_with(&sts, pod) {
            let Some(claim) = pvcs.get_opt(&cname).await? else {
                continue;
            };
            if let Some(refs) = with_pod_owner(&claim, pod) {
                let patch = serde_json::json!({"metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": claim.resource_version(),
                }});
                pvcs.patch(
                    &cname,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
            }
        }
    }
    workload::delete_pods(
        &api,
        &plan.delete,
        &st.expectations,
        &key,
        &st.events,
        &sts.object_ref(&()),
        |pname| format!("delete Pod {pname} in StatefulSet {name} successful"),
    )
    .await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(st.client.clone(), &ns);
    workload::write_status(&sts_api, &name, sts.status.as_ref(), &plan.status).await?;
    let keep: HashSet<String> = owned
        .iter()
        .filter_map(|p| pod_rev(p).map(str::to_string))
        .chain([current_name, update_name])
        .collect();
    revisions::cleanup(
        &cr_api,
        &all_revs,
        &keep,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0
        && plan.status.ready_replicas.unwrap_or(0) > plan.status.available_replicas.unwrap_or(0)
    {
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
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn sts(replicas: i32, parallel: bool) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("sts-uid".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some("web".into()),
                pod_management_policy: parallel.then(|| "Parallel".into()),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn sp(ord: i32, rev: &str, ready: bool) -> Arc<Pod> {
        let mut p = pod(&format!("web-{ord}"), "n", "Running", ready, 10);
        p.metadata.labels = Some([(HASH_LABEL.to_string(), rev.to_string())].into());
        Arc::new(p)
    }

    #[test]
    fn ordinals_parse_strictly() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let s = sts(3, false);
        let p = plan(&s, &[], "r1", "r1", jiff::Timestamp::now());
        assert_eq!(p.create, [(0, Rev::Update)]);
        // web-0 not ready yet: wait.
        let p = plan(
            &s,
            &[sp(0, "r1", false)],
            "r1",
            "r1",
            jiff::Timestamp::now(),
        );
        assert!(p.create.is_empty());
        let p = plan(&s, &[sp(0, "r1", true)], "r1", "r1", jiff::Timestamp::now());
        assert_eq!(p.create, [(1, Rev::Update)]);
    }

    #[test]
    fn parallel_creates_all_and_scale_down_goes_from_the_top() {
        let p = plan(&sts(3, true), &[], "r1", "r1", jiff::Timestamp::now());
        assert_eq!(p.create.len(), 3);
        let s = sts(1, false);
        let pods = [sp(0, "r1", true), sp(1, "r1", true), sp(2, "r1", true)];
        let p = plan(&s, &pods, "r1", "r1", jiff::Timestamp::now());
        assert_eq!(
            p.delete.iter().map(|x| x.name_any()).collect::<Vec<_>>(),
            ["web-2"]
        );
        assert_eq!(p.status.replicas, 3);
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let mut s = sts(3, false);
        s.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(1),
                max_unavailable: None,
            }),
        });
        let pods = [sp(0, "r1", true), sp(1, "r1", true), sp(2, "r1", true)];
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert_eq!(
            p.delete.iter().map(|x| x.name_any()).collect::<Vec<_>>(),
            ["web-2"]
        );
        let pods = [sp(0, "r1", true), sp(1, "r1", true), sp(2, "r2", true)];
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert_eq!(
            p.delete.iter().map(|x| x.name_any()).collect::<Vec<_>>(),
            ["web-1"]
        );
        let pods = [sp(0, "r1", true), sp(1, "r2", true), sp(2, "r2", true)];
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert!(p.delete.is_empty(), "the partition keeps web-0");
        assert_eq!(p.status.updated_replicas, Some(2));
        // A recreated pod below the partition gets the current revision.
        let p = plan(
            &s,
            &[sp(1, "r2", true), sp(2, "r2", true)],
            "r1",
            "r2",
            jiff::Timestamp::now(),
        );
        assert_eq!(p.create, [(0, Rev::Current)]);
    }

    #[test]
    fn rolling_update_keeps_at_most_max_unavailable_down() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let mut s = sts(5, true);
        let strategy = |mu: IntOrString| StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(1),
                max_unavailable: Some(mu),
            }),
        };
        s.spec.as_mut().unwrap().update_strategy = Some(strategy(IntOrString::Int(2)));
        let names = |p: &Plan| p.delete.iter().map(|x| x.name_any()).collect::<Vec<_>>();
        let all_old: Vec<_> = (0..5).map(|o| sp(o, "r1", true)).collect();
        // Two at once, from the top.
        let p = plan(&s, &all_old, "r1", "r2", jiff::Timestamp::now());
        assert_eq!(names(&p), ["web-4", "web-3"]);
        // One updated pod not ready yet: one more may go.
        let mut pods = all_old.clone();
        pods[4] = sp(4, "r2", false);
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert_eq!(names(&p), ["web-3"]);
        // An unavailable pod below the partition counts too: with two down, nothing goes.
        pods[0] = sp(0, "r1", false);
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert!(p.delete.is_empty());
        // The partition holds: web-0 is never updated.
        let mut pods: Vec<_> = (1..5).map(|o| sp(o, "r2", true)).collect();
        pods.insert(0, sp(0, "r1", true));
        let p = plan(&s, &pods, "r1", "r2", jiff::Timestamp::now());
        assert!(p.delete.is_empty());
        // A percentage of replicas, rounded up: 30% of 5 is 2.
        s.spec.as_mut().unwrap().update_strategy =
            Some(strategy(IntOrString::String("30%".into())));
        let p = plan(&s, &all_old, "r1", "r2", jiff::Timestamp::now());
        assert_eq!(names(&p), ["web-4", "web-3"]);
        // minReadySeconds: a Ready pod younger than that is not available yet.
        s.spec.as_mut().unwrap().min_ready_seconds = Some(60);
        let p = plan(&s, &all_old, "r1", "r2", jiff::Timestamp::now());
        assert!(p.delete.is_empty(), "pods ready 10 s ago are not available");
    }

    #[test]
    fn claims_of_scaled_down_pods_go_with_them_when_asked() {
        use k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy;
        let mut s = sts(2, false);
        let p3 = sp(3, "r1", true);
        let p1 = sp(1, "r1", true);
        // Retain (the default): nothing is handed over.
        assert!(claims_released_with(&s, &p3).is_empty());
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: None,
                when_scaled: Some("Delete".into()),
            });
        // Only a pod outside 0..2.
        assert!(claims_released_with(&s, &p1).is_empty());
        assert_eq!(claims_released_with(&s, &p3), ["www-web-3"]);
        // The pod is added as an owner once, next to what the claim had.
        let mut claim = claims_for(&s, 3).remove(0);
        claim.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "keep".into(),
            uid: "other".into(),
            ..Default::default()
        }]);
        let refs = with_pod_owner(&claim, &p3).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            (
                refs[1].kind.as_str(),
                refs[1].name.as_str(),
                refs[1].uid.as_str()
            ),
            ("Pod", "web-3", "uid-web-3")
        );
        claim.metadata.owner_references = Some(refs);
        assert!(with_pod_owner(&claim, &p3).is_none());
    }

    #[test]
    fn pods_have_stable_identity_and_claims() {
        let s = sts(1, false);
        let pod = stateful_pod(&s, &s.spec.as_ref().unwrap().template, 2, "web-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let ps = pod.spec.unwrap();
        assert_eq!(ps.hostname.as_deref(), Some("web-2"));
        assert_eq!(ps.subdomain.as_deref(), Some("web"));
        let v = &ps.volumes.unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[HASH_LABEL], "web-abc");
        let c = claims_for(&s, 2);
        assert_eq!(c[0].metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(c[0].metadata.labels.as_ref().unwrap()["app"], "web");
    }
}
