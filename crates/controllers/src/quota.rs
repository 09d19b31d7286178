//! The ResourceQuota status controller (kube-controller-manager's `resourcequota`
//! controller): `status.hard` = `spec.hard`, `status.used` = what the namespace uses of
//! each resource named in `spec.hard`, recomputed when pods, services, claims, config maps,
//! secrets, replication controllers or the quota change, and every resync period (for the
//! generic `count/…` resources). Enforcement (refusing what would exceed `hard`) belongs
//! to admission.
//!
//! Usage, as kube's evaluators compute it (in `h8s_types::quota`, which the ResourceQuota
//! admission shares, so what admission charges and what this controller recomputes agree):
//! * pods: `pods`, `count/pods`, and `requests.*`/`limits.*`/`cpu`/`memory`/
//!   `ephemeral-storage`/extended resources summed over the pods that still count (not
//!   Succeeded/Failed, not past their deletion grace period). A pod's requests are the
//!   larger of its containers' sum and its init containers' peak (sidecars included), plus
//!   its `spec.overhead` (the RuntimeClass's — a VM's own cost counts); limits likewise,
//!   overhead added to the limits that are set. Quota scopes (`Terminating`,
//!   `NotTerminating`, `BestEffort`, `NotBestEffort`, the `PriorityClass` scope selector)
//!   narrow which pods count; a scoped quota tracks pods only.
//! * services: `services`, `services.nodeports`, `services.loadbalancers`.
//! * claims: `persistentvolumeclaims`, `requests.storage`, and the per-StorageClass
//!   `<class>.storageclass.storage.k8s.io/{requests.storage,persistentvolumeclaims}`.
//! * object counts: `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`
//!   and `count/<resource>[.<group>]` for any served resource.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use h8s_types::quota;

use crate::cluster;
use crate::{Context, Error};

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default();
    let controller = Controller::new(Api::<ResourceQuota>::all(client.clone()), cfg.clone())
        .with_config(controller::Config::default().debounce(Duration::from_millis(300)));
    let quotas = controller.store();
    let resync = ctx.timers.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    // Any change to a counted kind: the quotas of its namespace.
    fn in_ns(quotas: &Store<ResourceQuota>, ns: Option<String>) -> Vec<ObjectRef<ResourceQuota>> {
        quotas
            .state()
            .into_iter()
            .filter(|q| q.namespace() == ns)
            .map(|q| ObjectRef::from_obj(&*q))
            .collect()
    }
    let (q1, q2, q3, q4, q5, q6) = (
        quotas.clone(),
        quotas.clone(),
        quotas.clone(),
        quotas.clone(),
        quotas.clone(),
        quotas,
    );
    controller
        .reconcile_on(
            ctx.informers
                .pods(&client)
                .touched()
                .flat_map(move |o| futures::stream::iter(in_ns(&q1, o.namespace()))),
        )
        .watches(Api::<Service>::all(client.clone()), cfg.clone(), move |o| {
            in_ns(&q2, o.namespace())
        })
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            cfg.clone(),
            move |o| in_ns(&q3, o.namespace()),
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            cfg.clone(),
            move |o| in_ns(&q4, o.namespace()),
        )
        .watches(Api::<Secret>::all(client.clone()), cfg.clone(), move |o| {
            in_ns(&q5, o.namespace())
        })
        .watches(
            Api::<ReplicationController>::all(client.clone()),
            cfg,
            move |o| in_ns(&q6, o.namespace()),
        )
        .reconcile_all_on(ticks)
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "resourcequota controller");
            }
        })
        .await;
    Err(Error::Stopped {
        name: "resourcequota",
    })
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

fn error_policy(_q: Arc<ResourceQuota>, e: &ReconcileError, _c: Arc<kube::Client>) -> Action {
    tracing::debug!(error = %e, "resourcequota reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

#[tracing::instrument(level = "debug", skip_all, fields(quota = %cluster::ns_name(&*quota)))]
async fn reconcile(
    quota: Arc<ResourceQuota>,
    client: Arc<kube::Client>,
) -> Result<Action, ReconcileError> {
    if quota.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = quota.namespace().unwrap_or_default();
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let names: Vec<&str> = hard.keys().map(String::as_str).collect();
    let lp = ListParams::default();
    let mut inv = Inventory::default();
    if names.iter().any(|n| pod_resource(n)) {
        inv.pods = Api::<Pod>::namespaced((*client).clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    if names
        .iter()
        .any(|n| n.starts_with("services") || *n == "count/services")
    {
        inv.services = Api::<Service>::namespaced((*client).clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    if names.iter().any(|n| pvc_resource(n)) {
        inv.claims = Api::<PersistentVolumeClaim>::namespaced((*client).clone(), &ns)
            .list(&lp)
            .await?
            .items;
    }
    for n in &names {
        let Some((group, plural)) = counted_resource(n) else {
            continue;
        };
        if matches!(
            (group, plural),
            ("", "pods" | "services" | "persistentvolumeclaims")
        ) {
            continue;
        }
        match count_objects(&client, &ns, group, plural).await {
            Ok(c) => {
                inv.counts.insert(n.to_string(), c);
            }
            Err(e) => tracing::debug!(resource = %n, error = %e, "counting objects failed"),
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let status = compute_status(&quota, &inv, now);
    if quota.status.as_ref() != Some(&status) {
        let mut out = (*quota).clone();
        out.status = Some(status);
        let api: Api<ResourceQuota> = Api::namespaced((*client).clone(), &ns);
        match api
            .replace_status(&quota.name_any(), &PostParams::default(), &out)
            .await
        {
            Ok(_) => tracing::debug!("quota usage updated"),
            Err(e) if cluster::is_stale(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

/// How many objects of a resource a namespace holds (metadata-only list).
pub(crate) async fn count_objects(
    client: &kube::Client,
    ns: &str,
    group: &str,
    plural: &str,
) -> Result<i64, kube::Error> {
    let ar = if group.is_empty() {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: String::new(),
            plural: plural.into(),
        }
    } else {
        let g = kube::discovery::group(client, group).await?;
        match g
            .recommended_resources()
            .into_iter()
            .find(|(r, _)| r.plural == plural)
        {
            Some((r, _)) => r,
            None => return Ok(0),
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    Ok(api.list_metadata(&ListParams::default()).await?.items.len() as i64)
}

// ---------------------------------------------------------------------------------------
// The pure part lives in `h8s_types::quota`, shared with the ResourceQuota admission.

pub use h8s_types::quota::{counted_resource, format_milli, pod_counts, Inventory};

fn pod_resource(name: &str) -> bool {
    quota::Evaluator::Pods.tracks(name)
}

fn pvc_resource(name: &str) -> bool {
    quota::Evaluator::Claims.tracks(name)
}

/// Whether a pod matches every scope of a quota (scopes and the scope selector).
pub fn pod_in_scope(q: &ResourceQuota, pod: &Pod) -> bool {
    quota::pod_in_scope(&q.spec.clone().unwrap_or_default(), pod)
}

/// The quota's status: `hard` from the spec and `used` for each resource it names that
/// an evaluator knows.
pub fn compute_status(q: &ResourceQuota, inv: &Inventory, now: i64) -> ResourceQuotaStatus {
    let spec = q.spec.clone().unwrap_or_default();
    let used = quota::compute_used(&spec, inv, now)
        .to_strings()
        .into_iter()
        .map(|(k, v)| (k, KQuantity(v)))
        .collect();
    ResourceQuotaStatus {
        hard: Some(spec.hard.unwrap_or_default()),
        used: Some(used),
    }
}

#[cfg(test)]
mod tests {
    // The evaluators' own tests are in `h8s_types::quota`.
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn status_carries_hard_and_the_used_of_each_named_resource() {
        let q: ResourceQuota =
            serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "ns"},
            "spec": {"hard": {"pods": "10", "requests.cpu": "4", "configmaps": "3", "foo": "1"}}}))
            .unwrap();
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"overhead": {"cpu": "250m"},
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m"}}}]}}))
        .unwrap();
        assert!(pod_in_scope(&q, &p));
        let inv = Inventory {
            pods: vec![p],
            counts: BTreeMap::from([("configmaps".into(), 2)]),
            ..Default::default()
        };
        let st = compute_status(&q, &inv, 0);
        assert_eq!(st.hard.as_ref().unwrap()["pods"].0, "10");
        let used: BTreeMap<String, String> = st
            .used
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        assert_eq!(
            used,
            BTreeMap::from([
                ("configmaps".into(), "2".into()),
                ("pods".into(), "1".into()),
                ("requests.cpu".into(), "750m".into()),
            ])
        );
    }
}
