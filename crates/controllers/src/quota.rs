//! The ResourceQuota status controller (kube-controller-manager's `resourcequota`
//! controller): `status.hard` = `spec.hard`, `status.used` = what the namespace uses of
//! each resource named in `spec.hard`, recomputed when pods, services, claims, config maps,
//! secrets, replication controllers or the quota change, and every resync period (for the
//! generic `count/…` resources). Enforcement (refusing what would exceed `hard`) belongs
//! to admission.
//!
//! Usage, as kube's evaluators compute it:
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

use std::collections::BTreeMap;
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

use h8s_types::quantity::Quantity;

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
        .watches(Api::<Pod>::all(client.clone()), cfg.clone(), move |o| {
            in_ns(&q1, o.namespace())
        })
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
async fn count_objects(
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
// The pure part.

/// What a namespace holds, as far as the quota needs it.
#[derive(Debug, Default)]
pub struct Inventory {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub claims: Vec<PersistentVolumeClaim>,
    /// Counts of other resources, by the quota's resource name (`configmaps`,
    /// `count/deployments.apps`).
    pub counts: BTreeMap<String, i64>,
}

fn pod_resource(name: &str) -> bool {
    matches!(
        name,
        "pods" | "count/pods" | "cpu" | "memory" | "ephemeral-storage"
    ) || name.starts_with("requests.") && name != "requests.storage"
        || name.starts_with("limits.")
}

fn pvc_resource(name: &str) -> bool {
    matches!(
        name,
        "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage"
    ) || name.contains(".storageclass.storage.k8s.io/")
}

/// The (group, plural) a count resource name counts: `configmaps` → ("", "configmaps"),
/// `count/deployments.apps` → ("apps", "deployments").
pub fn counted_resource(name: &str) -> Option<(&str, &str)> {
    match name {
        "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "pods"
        | "services"
        | "persistentvolumeclaims" => Some(("", name)),
        _ => {
            let rest = name.strip_prefix("count/")?;
            Some(match rest.split_once('.') {
                Some((plural, group)) => (group, plural),
                None => ("", rest),
            })
        }
    }
}

/// Whether a pod still counts against quota (kube's `QuotaV1Pod`): not finished, and not
/// past its deletion grace period.
pub fn pod_counts(pod: &Pod, now: i64) -> bool {
    if cluster::pod_terminal(pod) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        if now > ts.0.as_second() + grace {
            return false;
        }
    }
    true
}

/// Resource name → value in thousandths, plus whether any summand used a binary suffix.
type Sums = BTreeMap<String, (i128, bool)>;

fn add(sums: &mut Sums, name: &str, q: &KQuantity) {
    let Ok(parsed) = Quantity::parse(&q.0) else {
        return;
    };
    let Some(m) = parsed.milli_value() else {
        return;
    };
    let binary = q.0.ends_with('i');
    let e = sums.entry(name.to_string()).or_insert((0, false));
    e.0 = e.0.saturating_add(m);
    e.1 |= binary;
}

fn max_into(into: &mut Sums, other: &Sums) {
    for (k, (v, b)) in other {
        let e = into.entry(k.clone()).or_insert((0, false));
        if *v > e.0 {
            *e = (*v, e.1 | *b);
        }
    }
}

fn merge_add(into: &mut Sums, other: &Sums) {
    for (k, (v, b)) in other {
        let e = into.entry(k.clone()).or_insert((0, false));
        e.0 = e.0.saturating_add(*v);
        e.1 |= *b;
    }
}

fn list_sums(list: Option<&BTreeMap<String, KQuantity>>) -> Sums {
    let mut s = Sums::new();
    for (k, q) in list.into_iter().flatten() {
        add(&mut s, k, q);
    }
    s
}

/// A pod's effective requests (`limits == false`) or limits, with overhead, as kube's
/// `PodRequests`/`PodLimits`: the larger of the containers' sum (sidecars included) and
/// the init containers' peak.
fn pod_resources(pod: &Pod, limits: bool) -> Sums {
    let Some(spec) = pod.spec.as_ref() else {
        return Sums::new();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let r = c.resources.as_ref();
        list_sums(if limits {
            r.and_then(|r| r.limits.as_ref())
        } else {
            r.and_then(|r| r.requests.as_ref())
        })
    };
    let mut sum = Sums::new();
    for c in &spec.containers {
        merge_add(&mut sum, &of(c));
    }
    let mut sidecars = Sums::new();
    let mut init_peak = Sums::new();
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        if c.restart_policy.as_deref() == Some("Always") {
            merge_add(&mut sum, &r);
            merge_add(&mut sidecars, &r);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut t = r;
            merge_add(&mut t, &sidecars);
            max_into(&mut init_peak, &t);
        }
    }
    max_into(&mut sum, &init_peak);
    let overhead = list_sums(spec.overhead.as_ref());
    for (k, (v, b)) in overhead {
        // Limits: overhead only where a limit is set (no limit stays no limit).
        if limits && !sum.contains_key(&k) {
            continue;
        }
        let e = sum.entry(k).or_insert((0, false));
        e.0 = e.0.saturating_add(v);
        e.1 |= b;
    }
    sum
}

/// Whether a pod has no cpu/memory requests or limits at all (QoS class BestEffort).
fn best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| {
            let r = c.resources.as_ref();
            let none = |l: Option<&BTreeMap<String, KQuantity>>| {
                l.is_none_or(|l| !l.contains_key("cpu") && !l.contains_key("memory"))
            };
            none(r.and_then(|r| r.requests.as_ref())) && none(r.and_then(|r| r.limits.as_ref()))
        })
}

/// Whether a pod matches every scope of a quota (scopes and the scope selector).
pub fn pod_in_scope(quota: &ResourceQuota, pod: &Pod) -> bool {
    let spec = quota.spec.clone().unwrap_or_default();
    let pspec = pod.spec.clone().unwrap_or_default();
    let terminating = pspec.active_deadline_seconds.is_some_and(|s| s >= 0);
    let scope = |name: &str, op: &str, values: &[String]| -> bool {
        let hit = match name {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort(pod),
            "NotBestEffort" => !best_effort(pod),
            "PriorityClass" => {
                let pc = pspec.priority_class_name.clone().unwrap_or_default();
                return match op {
                    "In" => values.contains(&pc),
                    "NotIn" => !values.contains(&pc),
                    "Exists" => !pc.is_empty(),
                    "DoesNotExist" => pc.is_empty(),
                    _ => false,
                };
            }
            _ => return false,
        };
        match op {
            "Exists" | "" => hit,
            "DoesNotExist" => !hit,
            _ => false,
        }
    };
    spec.scopes
        .iter()
        .flatten()
        .all(|s| scope(s, "Exists", &[]))
        && spec
            .scope_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .into_iter()
            .flatten()
            .all(|e| {
                scope(
                    &e.scope_name,
                    &e.operator,
                    e.values.as_deref().unwrap_or_default(),
                )
            })
}

fn scoped(quota: &ResourceQuota) -> bool {
    let spec = quota.spec.as_ref();
    spec.and_then(|s| s.scopes.as_ref())
        .is_some_and(|s| !s.is_empty())
        || spec
            .and_then(|s| s.scope_selector.as_ref())
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|e| !e.is_empty())
}

/// Formats thousandths as kube prints a sum: binary suffixes (`1536Mi`) when the summands
/// used them and the value allows, else decimal SI (`500m`, `2`, `3k`).
pub fn format_milli(m: i128, binary: bool) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let v = m / 1000;
    if v == 0 {
        return "0".into();
    }
    if binary {
        for (i, s) in ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"].iter().enumerate() {
            let unit = 1i128 << (10 * (6 - i));
            if v % unit == 0 {
                return format!("{}{s}", v / unit);
            }
        }
        return v.to_string();
    }
    for (e, s) in [
        (18, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
    ] {
        let unit = 10i128.pow(e);
        if v % unit == 0 {
            return format!("{}{s}", v / unit);
        }
    }
    v.to_string()
}

/// The quota's status: `hard` from the spec and `used` for each resource it names.
pub fn compute_status(quota: &ResourceQuota, inv: &Inventory, now: i64) -> ResourceQuotaStatus {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let scoped = scoped(quota);
    let mut sums = Sums::new();
    let count = |sums: &mut Sums, name: &str, n: i64| {
        let e = sums.entry(name.to_string()).or_insert((0, false));
        e.0 = e.0.saturating_add(i128::from(n) * 1000);
    };

    // Pods.
    let pods: Vec<&Pod> = inv
        .pods
        .iter()
        .filter(|p| pod_counts(p, now) && pod_in_scope(quota, p))
        .collect();
    count(&mut sums, "pods", pods.len() as i64);
    count(&mut sums, "count/pods", pods.len() as i64);
    for p in &pods {
        for (k, (v, b)) in pod_resources(p, false) {
            for name in [format!("requests.{k}"), k.clone()] {
                let e = sums.entry(name).or_insert((0, false));
                e.0 = e.0.saturating_add(v);
                e.1 |= b;
            }
        }
        for (k, (v, b)) in pod_resources(p, true) {
            let e = sums.entry(format!("limits.{k}")).or_insert((0, false));
            e.0 = e.0.saturating_add(v);
            e.1 |= b;
        }
    }

    if !scoped {
        // Services.
        count(&mut sums, "services", inv.services.len() as i64);
        count(&mut sums, "count/services", inv.services.len() as i64);
        for s in &inv.services {
            let spec = s.spec.clone().unwrap_or_default();
            let ports = spec.ports.as_ref().map_or(0, Vec::len) as i64;
            match spec.type_.as_deref() {
                Some("NodePort") => count(&mut sums, "services.nodeports", ports),
                Some("LoadBalancer") => {
                    let np = if spec.allocate_load_balancer_node_ports == Some(false) {
                        spec.ports
                            .iter()
                            .flatten()
                            .filter(|p| p.node_port.unwrap_or(0) != 0)
                            .count() as i64
                    } else {
                        ports
                    };
                    count(&mut sums, "services.nodeports", np);
                    count(&mut sums, "services.loadbalancers", 1);
                }
                _ => {}
            }
        }
        // Claims.
        count(&mut sums, "persistentvolumeclaims", inv.claims.len() as i64);
        count(
            &mut sums,
            "count/persistentvolumeclaims",
            inv.claims.len() as i64,
        );
        for c in &inv.claims {
            let spec = c.spec.clone().unwrap_or_default();
            let class = spec.storage_class_name.clone().unwrap_or_default();
            let per_class = |what: &str| format!("{class}.storageclass.storage.k8s.io/{what}");
            if !class.is_empty() {
                count(&mut sums, &per_class("persistentvolumeclaims"), 1);
            }
            if let Some(q) = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
            {
                add(&mut sums, "requests.storage", q);
                if !class.is_empty() {
                    add(&mut sums, &per_class("requests.storage"), q);
                }
            }
        }
        for (k, n) in &inv.counts {
            sums.insert(k.clone(), (i128::from(*n) * 1000, false));
        }
    }

    let used = hard
        .keys()
        .filter_map(|k| {
            let v = match sums.get(k) {
                Some((v, b)) => format_milli(*v, *b),
                // A resource nothing uses yet is 0 when an evaluator knows it.
                None if known(k, scoped) => "0".into(),
                None => return None,
            };
            Some((k.clone(), KQuantity(v)))
        })
        .collect();
    ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    }
}

/// Whether some evaluator computes this resource (so zero usage is written as "0").
fn known(name: &str, scoped: bool) -> bool {
    pod_resource(name)
        || (!scoped
            && (pvc_resource(name)
                || name.starts_with("services")
                || counted_resource(name).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota(spec: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn used(st: &ResourceQuotaStatus) -> BTreeMap<String, String> {
        st.used
            .clone()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    #[test]
    fn formatting_like_kube() {
        assert_eq!(format_milli(1500, false), "1500m");
        assert_eq!(format_milli(2000, false), "2");
        assert_eq!(format_milli(3_000_000, false), "3k");
        assert_eq!(format_milli(1536 * 1024 * 1024 * 1000, true), "1536Mi");
        assert_eq!(format_milli(1024 * 1024 * 1024 * 1000, true), "1Gi");
        assert_eq!(format_milli(1000 * 1000, true), "1000");
        assert_eq!(format_milli(0, true), "0");
    }

    #[test]
    fn compute_usage_with_init_containers_sidecars_and_overhead() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
        "overhead": {"cpu": "250m", "memory": "160Mi"},
        "initContainers": [
            {"name": "setup", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}},
            {"name": "proxy", "image": "i", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}}}
        ],
        "containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"},
                                                      "limits": {"cpu": "1", "memory": "256Mi"}}},
            {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
        ]}}));
        let req = pod_resources(&p, false);
        // containers 750m + sidecar 100m = 850m < init peak 2 (setup alone: sidecar starts
        // after it); + overhead 250m.
        assert_eq!(req["cpu"].0, 2250);
        // memory: 128+64+32 = 224Mi > 64Mi; + 160Mi overhead.
        assert_eq!(req["memory"].0, (224 + 160) * 1024 * 1024 * 1000);
        let lim = pod_resources(&p, true);
        assert_eq!(lim["cpu"].0, 1250, "1 + overhead");
        assert_eq!(lim["memory"].0, (256 + 32 + 160) * 1024 * 1024 * 1000);

        let q = quota(
            json!({"hard": {"pods": "10", "requests.cpu": "4", "cpu": "4", "requests.memory": "1Gi",
                                       "limits.cpu": "8", "limits.memory": "2Gi", "memory": "1Gi"}}),
        );
        let done = pod(
            json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Succeeded"}}),
        );
        let inv = Inventory {
            pods: vec![p, done],
            ..Default::default()
        };
        let st = compute_status(&q, &inv, 0);
        let u = used(&st);
        assert_eq!(u["pods"], "1", "a finished pod does not count");
        assert_eq!(u["requests.cpu"], "2250m");
        assert_eq!(u["cpu"], "2250m");
        assert_eq!(u["requests.memory"], "384Mi");
        assert_eq!(u["memory"], "384Mi");
        assert_eq!(u["limits.cpu"], "1250m");
        assert_eq!(u["limits.memory"], "448Mi");
        assert_eq!(st.hard.as_ref().unwrap()["pods"].0, "10");
        assert_eq!(u.len(), 7, "only the resources the quota names");
    }

    #[test]
    fn counts_services_and_claims() {
        let q = quota(
            json!({"hard": {"services": "5", "services.nodeports": "5", "services.loadbalancers": "2",
            "persistentvolumeclaims": "3", "requests.storage": "10Gi",
            "fast.storageclass.storage.k8s.io/requests.storage": "5Gi",
            "configmaps": "9", "count/deployments.apps": "4", "secrets": "3"}}),
        );
        let svc = |t: &str, ports: usize| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": t,
                "ports": (0..ports).map(|i| json!({"port": 80 + i})).collect::<Vec<_>>()}}))
            .unwrap()
        };
        let pvc = |class: &str, size: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": "c"}, "spec": {"storageClassName": class,
                "resources": {"requests": {"storage": size}}}}),
            )
            .unwrap()
        };
        let inv = Inventory {
            services: vec![
                svc("ClusterIP", 1),
                svc("NodePort", 2),
                svc("LoadBalancer", 1),
            ],
            claims: vec![pvc("fast", "1Gi"), pvc("slow", "512Mi")],
            counts: BTreeMap::from([
                ("configmaps".into(), 2),
                ("count/deployments.apps".into(), 1),
            ]),
            ..Default::default()
        };
        let u = used(&compute_status(&q, &inv, 0));
        assert_eq!(u["services"], "3");
        assert_eq!(u["services.nodeports"], "3");
        assert_eq!(u["services.loadbalancers"], "1");
        assert_eq!(u["persistentvolumeclaims"], "2");
        assert_eq!(u["requests.storage"], "1536Mi");
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            "1Gi"
        );
        assert_eq!(u["configmaps"], "2");
        assert_eq!(u["count/deployments.apps"], "1");
        assert_eq!(u["secrets"], "0", "known but none counted");
    }

    #[test]
    fn scopes_narrow_pods() {
        let be = pod(
            json!({"metadata": {"name": "be"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        );
        let burst = pod(
            json!({"metadata": {"name": "b"}, "spec": {"activeDeadlineSeconds": 30,
            "priorityClassName": "high",
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        let q = |scopes: serde_json::Value| {
            quota(json!({"hard": {"pods": "9", "services": "1"}, "scopes": scopes}))
        };
        let inv = Inventory {
            pods: vec![be.clone(), burst.clone()],
            ..Default::default()
        };
        let u = used(&compute_status(&q(json!(["BestEffort"])), &inv, 0));
        assert_eq!(u["pods"], "1");
        assert!(
            !u.contains_key("services"),
            "a scoped quota tracks pods only"
        );
        assert_eq!(
            used(&compute_status(&q(json!(["Terminating"])), &inv, 0))["pods"],
            "1"
        );
        assert_eq!(
            used(&compute_status(
                &q(json!(["NotTerminating", "NotBestEffort"])),
                &inv,
                0
            ))["pods"],
            "0"
        );
        let sel = quota(
            json!({"hard": {"pods": "9"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
        );
        assert!(pod_in_scope(&sel, &burst));
        assert!(!pod_in_scope(&sel, &be));
    }

    #[test]
    fn counted_resource_names() {
        assert_eq!(counted_resource("configmaps"), Some(("", "configmaps")));
        assert_eq!(
            counted_resource("count/deployments.apps"),
            Some(("apps", "deployments"))
        );
        assert_eq!(
            counted_resource("count/widgets.example.com"),
            Some(("example.com", "widgets"))
        );
        assert_eq!(counted_resource("count/secrets"), Some(("", "secrets")));
        assert_eq!(counted_resource("requests.cpu"), None);
    }
}
