//! Kubernetes' ResourceQuota admission, over a namespace's ResourceQuotas and its
//! tenant's quota (`Tenant.spec.quota.hard`, shared by all the tenant's namespaces).
//!
//! As kube's quota evaluator: a write's usage (its growth, for an update) is checked
//! against every quota that tracks it (`used + delta ≤ hard`), and charged to each
//! quota's `status.used` with a compare-and-swap write (the store revision read is the
//! precondition; a conflict reads again and checks again) before the write is admitted.
//! Two creates racing for the last slot cannot both pass: one of them finds the slot
//! taken when it reads again. Deletes are not charged: the status controllers recount
//! (the ResourceQuota controller on every change of a counted kind, the tenant quota
//! controller likewise), which releases what a deleted object used.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use h8s_types::quota::{self as q, Evaluator, Usage};
use k8s_openapi::api::core::v1::{Pod, ResourceQuotaSpec};
use serde::Deserialize as _;
use serde_json::{json, Value};
use tracing::Instrument as _;

use super::tenant;
use crate::admission::{Lookup, Operation, QuotaHook, Request};
use crate::error::{from_store, ApiError, Subject};
use crate::obj;
use crate::tenancy::TenantIndex;

/// How often a charge is tried again after losing a race for a quota.
const MAX_CONFLICTS: u32 = 32;

/// Which quota a [`View`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A ResourceQuota: namespace and name.
    Namespace(String, String),
    /// A Tenant's quota.
    Tenant(String),
}

/// A quota as the evaluator sees it.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub target: Target,
    /// Its name in messages: the ResourceQuota's name, or `tenant/<name>`.
    pub label: String,
    /// Scopes (a tenant quota has none).
    pub spec: ResourceQuotaSpec,
    pub hard: Usage,
    pub used: Usage,
    /// The object and its store revision, for the compare-and-swap write.
    pub obj: Value,
    pub rev: i64,
}

/// Quantities of a map at `ptr`, the ones that parse.
pub(crate) fn usage_at(o: &Value, ptr: &str) -> Usage {
    let mut u = Usage::default();
    if let Some(m) = o.pointer(ptr).and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(a) = v.as_str().and_then(q::Amount::parse) {
                u.0.insert(k.clone(), a);
            }
        }
    }
    u
}

impl View {
    /// A ResourceQuota as stored: kube enforces `status.hard` (what the controller has
    /// synced) against `status.used`.
    pub(crate) fn of_resource_quota(o: Value, rev: i64) -> View {
        let spec = o
            .get("spec")
            .and_then(|s| ResourceQuotaSpec::deserialize(s).ok())
            .unwrap_or_default();
        View {
            target: Target::Namespace(obj::namespace(&o).to_string(), obj::name(&o).to_string()),
            label: obj::name(&o).to_string(),
            spec,
            hard: usage_at(&o, "/status/hard"),
            used: usage_at(&o, "/status/used"),
            obj: o,
            rev,
        }
    }
}

/// Why a write is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 403 with this reason.
    Forbidden(String),
    /// 400: the object cannot be read as its kind.
    Malformed(String),
}

/// The usage a write adds: the object's, less the old object's for an update (never
/// below zero), without zeros. Empty: nothing to charge.
pub(crate) fn delta(
    ev: &Evaluator,
    obj: &Value,
    old: Option<&Value>,
    now: i64,
) -> Result<Usage, Refusal> {
    let malformed = |e: serde_json::Error| Refusal::Malformed(e.to_string());
    let mut d = ev.usage(obj, now).map_err(malformed)?;
    let negative = d.negative();
    if !negative.is_empty() {
        return Err(Refusal::Forbidden(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        )));
    }
    if let Some(old) = old.filter(|o| !obj::resource_version(o).is_empty()) {
        d = d.minus_non_negative(&ev.usage(old, now).map_err(malformed)?);
    }
    Ok(d.without_zeros())
}

/// kube's `checkRequest`: for each quota, `None` when it does not track this write, else
/// its `used` after charging `delta`.
pub(crate) fn check(
    ev: &Evaluator,
    obj: &Value,
    delta: &Usage,
    views: &[&View],
) -> Result<Vec<Option<Usage>>, Refusal> {
    let pod = match ev {
        Evaluator::Pods => {
            Some(Pod::deserialize(obj).map_err(|e| Refusal::Malformed(e.to_string()))?)
        }
        _ => None,
    };
    let mut interesting = vec![false; views.len()];
    for (i, v) in views.iter().enumerate() {
        let restricted = ev.matching(v.hard.names());
        if restricted.is_empty() {
            continue;
        }
        let in_scope = match &pod {
            Some(p) => q::pod_in_scope(&v.spec, p),
            None => !q::scoped(&v.spec),
        };
        if !in_scope {
            continue;
        }
        if let Some(p) = &pod {
            q::pod_constraints(restricted.iter().copied(), p)
                .map_err(|e| Refusal::Forbidden(format!("failed quota: {}: {e}", v.label)))?;
        }
        if restricted.iter().any(|r| !v.used.0.contains_key(*r)) {
            let mut all = restricted.clone();
            all.sort();
            return Err(Refusal::Forbidden(format!(
                "status unknown for quota: {}, resources: {}",
                v.label,
                all.join(",")
            )));
        }
        interesting[i] = true;
    }
    if delta.0.is_empty() {
        return Ok(vec![None; views.len()]);
    }
    let mut out = Vec::with_capacity(views.len());
    for (i, v) in views.iter().enumerate() {
        if !interesting[i] {
            out.push(None);
            continue;
        }
        let new =
            q::charge(&v.label, &v.hard, &v.used, delta).map_err(|e| Refusal::Forbidden(e.0))?;
        out.push(Some(new));
    }
    Ok(out)
}

/// h8s's [`QuotaHook`]: ResourceQuotas and the tenant quota, charged at admission.
pub struct Quotas {
    store: Arc<dyn h8s_store::Store>,
    tenants: tenant::Tenants,
    /// Charges that lost a race (a conflict) and were tried again.
    retried: std::sync::atomic::AtomicU64,
}

impl Quotas {
    pub(crate) fn new(
        store: Arc<dyn h8s_store::Store>,
        index: Arc<TenantIndex>,
        lookup: Lookup,
    ) -> Self {
        Quotas {
            tenants: tenant::Tenants::new(store.clone(), index, lookup),
            store,
            retried: Default::default(),
        }
    }

    /// The quota as stored now (`None`: gone, or a tenant without a quota).
    async fn read(&self, t: &Target) -> Result<Option<View>, ApiError> {
        match t {
            Target::Namespace(ns, name) => {
                let res = h8s_types::resources::find("", "v1", "resourcequotas")
                    .ok_or_else(|| ApiError::internal("resourcequotas are not served"))?;
                let s = Subject {
                    group: "",
                    resource: "resourcequotas",
                    name,
                };
                let kv = self
                    .store
                    .get(&obj::key(res, Some(ns), name))
                    .await
                    .map_err(|e| from_store(e, &s))?;
                match kv {
                    None => Ok(None),
                    Some(kv) => Ok(Some(View::of_resource_quota(
                        obj::decode(&kv)?,
                        kv.mod_revision,
                    ))),
                }
            }
            Target::Tenant(name) => self.tenants.read(name).await,
        }
    }

    /// Writes a quota's new `status.used` if the quota is unchanged since `v` was read.
    async fn write(&self, v: &View, used: &Usage) -> Result<(), h8s_store::Error> {
        let mut o = v.obj.clone();
        let used = json!(used.to_strings());
        match o.get_mut("status").filter(|s| s.is_object()) {
            Some(s) => s["used"] = used,
            None => o["status"] = json!({ "used": used }),
        }
        let key = match &v.target {
            Target::Namespace(ns, name) => h8s_types::resources::find("", "v1", "resourcequotas")
                .map(|r| obj::key(r, Some(ns), name)),
            Target::Tenant(name) => tenant::key(name),
        }
        .ok_or_else(|| h8s_store::Error::Unavailable("quota kinds are not served".into()))?;
        self.store
            .update(&key, obj::encode(&o), v.rev)
            .await
            .map(|_| ())
    }
}

impl QuotaHook for Quotas {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a Value>,
        quotas: &'a [Value],
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(obj) = obj else {
                return Ok(());
            };
            let ev = Evaluator::of(req.res.group, req.res.plural);
            match req.op {
                Operation::Create => {}
                Operation::Update if ev.charges_updates() => {}
                _ => return Ok(()),
            }
            // The quotas that track this kind, by the watched copies (most writes
            // concern none, and then cost no store read).
            let mut targets: Vec<Target> = quotas
                .iter()
                .filter(|o| !ev.matching(usage_at(o, "/status/hard").names()).is_empty())
                .map(|o| Target::Namespace(req.namespace.to_string(), obj::name(o).to_string()))
                .collect();
            if let Some(t) = self.tenants.with_quota(req.namespace, &ev).await? {
                targets.push(Target::Tenant(t));
            }
            if targets.is_empty() {
                return Ok(());
            }
            let subject = Subject {
                group: req.res.group,
                resource: req.res.plural,
                name: req.name,
            };
            let refuse = |r: Refusal| match r {
                Refusal::Forbidden(m) => ApiError::forbidden_about(&subject, &m),
                Refusal::Malformed(m) => ApiError::bad_request(format!(
                    "{} is not well-formed: {m}",
                    subject.qualified()
                )),
            };
            let now = obj::now_secs();
            let d = delta(&ev, obj, req.old, now).map_err(refuse)?;
            // Check everything first, so a refusal charges nothing.
            let mut views = Vec::new();
            for t in &targets {
                views.extend(self.read(t).await?);
            }
            let refs: Vec<&View> = views.iter().collect();
            let charges = check(&ev, obj, &d, &refs).map_err(refuse)?;
            if req.dry_run {
                return Ok(());
            }
            // Then charge each quota that tracks the write, again against its latest state.
            for (v, _) in views.iter().zip(charges).filter(|(_, c)| c.is_some()) {
                let mut conflicts = 0;
                loop {
                    let Some(fresh) = self.read(&v.target).await? else {
                        break;
                    };
                    let Some(used) = check(&ev, obj, &d, &[&fresh])
                        .map_err(refuse)?
                        .pop()
                        .flatten()
                    else {
                        break;
                    };
                    match self.write(&fresh, &used).await {
                        Ok(()) => break,
                        Err(h8s_store::Error::Conflict { .. }) if conflicts < MAX_CONFLICTS => {
                            conflicts += 1;
                            self.retried
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(quota = %fresh.label, conflicts, "quota changed meanwhile; charging again");
                            tokio::time::sleep(Duration::from_millis(u64::from(conflicts))).await;
                        }
                        Err(h8s_store::Error::Conflict { .. }) => {
                            return Err(ApiError::conflict(
                                &subject,
                                &format!("the quota {} is being changed by many writes at once; please try again", fresh.label),
                            ));
                        }
                        Err(e) => {
                            return Err(from_store(
                                e,
                                &Subject {
                                    group: "",
                                    resource: "resourcequotas",
                                    name: &fresh.label,
                                },
                            ))
                        }
                    }
                }
            }
            Ok(())
        }
        .instrument(tracing::debug_span!(
            "quota admission",
            resource = req.res.plural,
            namespace = req.namespace,
            name = req.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(label: &str, spec: Value, hard: Value, used: Value) -> View {
        View::of_resource_quota(
            json!({"metadata": {"name": label, "namespace": "ns"}, "spec": spec,
                   "status": {"hard": hard, "used": used}}),
            1,
        )
    }

    fn pod(res: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": res}]}})
    }

    #[test]
    fn pods_against_quotas() {
        let q = view(
            "q",
            json!({}),
            json!({"pods": "2", "limits.cpu": "2"}),
            json!({"pods": "2", "limits.cpu": "1"}),
        );
        let p = pod(json!({"limits": {"cpu": "500m"}}));
        let d = delta(&Evaluator::Pods, &p, None, 0).unwrap();
        assert_eq!(
            check(&Evaluator::Pods, &p, &d, &[&q]).unwrap_err(),
            Refusal::Forbidden(
                "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into()
            )
        );
        let bare = pod(json!({}));
        let d0 = delta(&Evaluator::Pods, &bare, None, 0).unwrap();
        assert_eq!(
            check(&Evaluator::Pods, &bare, &d0, &[&q]).unwrap_err(),
            Refusal::Forbidden("failed quota: q: must specify limits.cpu for: c".into())
        );
        let roomy = view(
            "q",
            json!({}),
            json!({"pods": "3", "limits.cpu": "2"}),
            json!({"pods": "2", "limits.cpu": "1"}),
        );
        let be = view(
            "be",
            json!({"scopes": ["BestEffort"]}),
            json!({"pods": "0"}),
            json!({"pods": "0"}),
        );
        let out = check(&Evaluator::Pods, &p, &d, &[&roomy, &be]).unwrap();
        assert_eq!(out[0].as_ref().unwrap().pretty(), "limits.cpu=1500m,pods=3");
        assert!(out[1].is_none(), "out of the BestEffort scope");
        let unsynced = view("new", json!({}), json!({"pods": "3"}), json!({}));
        assert_eq!(
            check(&Evaluator::Pods, &p, &d, &[&unsynced]).unwrap_err(),
            Refusal::Forbidden("status unknown for quota: new, resources: pods".into())
        );
        assert!(matches!(
            delta(
                &Evaluator::Pods,
                &json!({"spec": {"containers": 7}}),
                None,
                0
            ),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn updates_charge_growth_only() {
        let q = view(
            "q",
            json!({}),
            json!({"services.nodeports": "1", "services": "5"}),
            json!({"services.nodeports": "0", "services": "1"}),
        );
        let old = json!({"metadata": {"name": "s", "resourceVersion": "5"}, "spec": {"ports": [{"port": 1}]}});
        let new = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let d = delta(&Evaluator::Services, &new, Some(&old), 0).unwrap();
        assert_eq!(d.pretty(), "services.nodeports=2");
        assert_eq!(
            check(&Evaluator::Services, &new, &d, &[&q]).unwrap_err(),
            Refusal::Forbidden("exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1".into())
        );
        let same = delta(&Evaluator::Services, &old, Some(&old), 0).unwrap();
        assert!(same.0.is_empty());
        assert_eq!(
            check(&Evaluator::Services, &old, &same, &[&q]).unwrap(),
            vec![None]
        );
    }

    #[test]
    fn object_counts_and_claims() {
        let q = view(
            "q",
            json!({}),
            json!({"configmaps": "1", "count/deployments.apps": "1",
                   "gold.storageclass.storage.k8s.io/requests.storage": "10Gi"}),
            json!({"configmaps": "1", "count/deployments.apps": "0",
                   "gold.storageclass.storage.k8s.io/requests.storage": "8Gi"}),
        );
        let cm = json!({"metadata": {"name": "c"}});
        let ev = Evaluator::of("", "configmaps");
        let d = delta(&ev, &cm, None, 0).unwrap();
        assert_eq!(
            check(&ev, &cm, &d, &[&q]).unwrap_err(),
            Refusal::Forbidden(
                "exceeded quota: q, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"
                    .into()
            )
        );
        let ev = Evaluator::of("apps", "deployments");
        let d = delta(&ev, &cm, None, 0).unwrap();
        assert_eq!(
            check(&ev, &cm, &d, &[&q]).unwrap()[0].as_ref().unwrap().0["count/deployments.apps"],
            q::Amount::count(1)
        );
        let pvc = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "4Gi"}}}});
        let d = delta(&Evaluator::Claims, &pvc, None, 0).unwrap();
        assert_eq!(
            check(&Evaluator::Claims, &pvc, &d, &[&q]).unwrap_err(),
            Refusal::Forbidden("exceeded quota: q, requested: gold.storageclass.storage.k8s.io/requests.storage=4Gi, used: gold.storageclass.storage.k8s.io/requests.storage=8Gi, limited: gold.storageclass.storage.k8s.io/requests.storage=10Gi".into())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_cannot_both_take_the_last_slot() {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let rq = h8s_types::resources::find("", "v1", "resourcequotas").unwrap();
        let quota = json!({"metadata": {"name": "q", "namespace": "d"}, "spec": {"hard": {"pods": "2"}},
            "status": {"hard": {"pods": "2"}, "used": {"pods": "1"}}});
        store
            .create(&obj::key(rq, Some("d"), "q"), obj::encode(&quota))
            .await
            .unwrap();
        let hook = Arc::new(Quotas::new(
            store.clone(),
            Arc::new(TenantIndex::default()),
            Lookup::new(store.clone()),
        ));
        let pods = h8s_types::resources::find("", "v1", "pods").unwrap();
        let user = crate::auth::UserInfo::default();
        let names: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
        let attempts = names.iter().map(|name| {
            let (hook, user, quota) = (hook.clone(), user.clone(), quota.clone());
            let name = name.clone();
            tokio::spawn(async move {
                let req = Request {
                    op: Operation::Create,
                    res: pods,
                    sub: None,
                    namespace: "d",
                    name: &name,
                    user: &user,
                    dry_run: false,
                    old: None,
                };
                let pod = pod(json!({}));
                hook.admit(&req, Some(&pod), std::slice::from_ref(&quota))
                    .await
                    .map_err(|e| (e.code, e.message))
            })
        });
        let results: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 1, "{results:?}");
        eprintln!(
            "charges retried after a conflict: {}",
            hook.retried.load(std::sync::atomic::Ordering::Relaxed)
        );
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.0, 403);
            assert!(
                r.1.ends_with(
                    "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
                ),
                "{}",
                r.1
            );
        }
        let kv = store
            .get(&obj::key(rq, Some("d"), "q"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(obj::decode(&kv).unwrap()["status"]["used"]["pods"], "2");
    }
}
