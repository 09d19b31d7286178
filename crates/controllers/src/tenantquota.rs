//! The tenant quota controller: `Tenant.status.used` = what the tenant's namespaces
//! (label `tenancy.h8s.io/tenant=<tenant>`) use of each resource in `spec.quota.hard`,
//! computed by the same evaluators as ResourceQuotas (`h8s_types::quota`). The API
//! server charges writes to `status.used` at admission; this controller recounts when a
//! Tenant, a tenant Namespace or a counted kind in one changes, and every resync period
//! (for the generic `count/…` resources), which releases what deleted objects used. Its
//! status writes carry the Tenant's resourceVersion, so a recount never overwrites a
//! charge it did not see: it loses the race and counts again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, ResourceQuotaSpec, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use h8s_types::quota::{self, Inventory};

use crate::tenancy::{tenant_ar, TENANT_LABEL};
use crate::{Context, Error};

struct State {
    client: kube::Client,
}

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default();
    let ar = tenant_ar();
    // Which tenant each namespace is: a reflector the mappers read.
    let (namespaces, writer) = reflector::store::<Namespace>();
    let follow = reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(client.clone()), cfg.clone()),
    )
    .default_backoff()
    .for_each(|_| async {});
    tokio::spawn(follow);
    let resync = ctx.timers.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    fn tenant_of(
        namespaces: &Store<Namespace>,
        ar: &ApiResource,
        ns: Option<String>,
    ) -> Option<ObjectRef<DynamicObject>> {
        let n = namespaces.get(&ObjectRef::new(&ns?))?;
        let t = n.labels().get(TENANT_LABEL)?.clone();
        Some(ObjectRef::new_with(&t, ar.clone()))
    }
    let m = |namespaces: &Store<Namespace>| {
        let (namespaces, ar) = (namespaces.clone(), ar.clone());
        move |ns: Option<String>| tenant_of(&namespaces, &ar, ns)
    };
    let (m1, m2, m3, m4, m5) = (
        m(&namespaces),
        m(&namespaces),
        m(&namespaces),
        m(&namespaces),
        m(&namespaces),
    );
    let ar_ns = ar.clone();
    Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &ar),
        cfg.clone(),
        ar,
    )
    .with_config(controller::Config::default().debounce(Duration::from_millis(300)))
    .watches(
        Api::<Namespace>::all(client.clone()),
        cfg.clone(),
        move |n| {
            n.labels()
                .get(TENANT_LABEL)
                .map(|t| ObjectRef::new_with(t, ar_ns.clone()))
        },
    )
    .reconcile_on(
        ctx.informers
            .pods(&client)
            .touched()
            .filter_map(move |o| std::future::ready(m1(o.namespace()))),
    )
    .watches(Api::<Service>::all(client.clone()), cfg.clone(), move |o| {
        m2(o.namespace())
    })
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg.clone(),
        move |o| m3(o.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client.clone()),
        cfg.clone(),
        move |o| m4(o.namespace()),
    )
    .watches(Api::<Secret>::all(client.clone()), cfg, move |o| {
        m5(o.namespace())
    })
    .reconcile_all_on(ticks)
    .run(reconcile, error_policy, Arc::new(State { client }))
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "tenant quota controller");
        }
    })
    .await;
    Err(Error::Stopped {
        name: "tenantquota",
    })
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

fn error_policy(_t: Arc<DynamicObject>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "tenant quota reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// `spec.quota.hard` of a Tenant.
fn hard(t: &DynamicObject) -> BTreeMap<String, String> {
    t.data
        .pointer("/spec/quota/hard")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %t.name_any()))]
async fn reconcile(t: Arc<DynamicObject>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let hard = hard(&t);
    if hard.is_empty() || t.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = t.name_any();
    let names: Vec<&str> = hard.keys().map(String::as_str).collect();
    let (pods, services, claims) = quota::needs(&names);
    let lp = ListParams::default();
    let nss = Api::<Namespace>::all(s.client.clone())
        .list(&ListParams::default().labels(&format!("{TENANT_LABEL}={name}")))
        .await?;
    let mut inv = Inventory::default();
    for ns in nss.items.iter().map(ResourceExt::name_any) {
        if pods {
            let l = Api::<Pod>::namespaced(s.client.clone(), &ns)
                .list(&lp)
                .await?;
            inv.pods.extend(l.items);
        }
        if services {
            let l = Api::<Service>::namespaced(s.client.clone(), &ns)
                .list(&lp)
                .await?;
            inv.services.extend(l.items);
        }
        if claims {
            let l = Api::<PersistentVolumeClaim>::namespaced(s.client.clone(), &ns)
                .list(&lp)
                .await?;
            inv.claims.extend(l.items);
        }
        for n in &names {
            let Some((group, plural)) = quota::counted_resource(n) else {
                continue;
            };
            if matches!(
                (group, plural),
                ("", "pods" | "services" | "persistentvolumeclaims")
            ) {
                continue;
            }
            let c = crate::quota::count_objects(&s.client, &ns, group, plural).await?;
            *inv.counts.entry(n.to_string()).or_default() += c;
        }
    }
    let spec = ResourceQuotaSpec {
        hard: Some(
            hard.iter()
                .map(|(k, v)| (k.clone(), KQuantity(v.clone())))
                .collect(),
        ),
        ..Default::default()
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let used = json!(quota::compute_used(&spec, &inv, now).to_strings());
    if t.data.pointer("/status/used") == Some(&used) {
        return Ok(Action::await_change());
    }
    let mut out = (*t).clone();
    match out.data.get_mut("status").filter(|s| s.is_object()) {
        Some(st) => st["used"] = used,
        None => out.data["status"] = json!({ "used": used }),
    }
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &tenant_ar());
    match api
        .replace_status(&name, &PostParams::default(), &out)
        .await
    {
        Ok(_) => {
            tracing::debug!("tenant quota usage updated");
            Ok(Action::await_change())
        }
        // A charge (or another write) came first: count again from the newer Tenant.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
