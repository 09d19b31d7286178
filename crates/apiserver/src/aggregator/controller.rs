//! Follows the APIServices (list + watch of their store prefix; every server of a
//! cluster runs one) into the [`Aggregator`](super::Aggregator), checks each
//! service-backed one at once when its spec is written and then every
//! `check_interval`, and writes its `Available` condition (kube-aggregator's
//! `Passed`, `ServiceNotFound`, `ServicePortError`, `EndpointsNotFound`,
//! `MissingEndpoints`, `FailedDiscoveryCheck`) when it changes. Also publishes the
//! `kube-system/extension-apiserver-authentication` ConfigMap aggregated servers read
//! their requestheader settings from.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use h8s_store::KeyValue;
use serde_json::{json, Value};

use super::Backend;
use crate::ctx::Ctx;
use crate::obj;
use crate::route::Target;
use crate::state::Api;

const RETRY: Duration = Duration::from_secs(1);

fn target(name: Option<&str>, sub: Option<&str>) -> Option<Target> {
    let res = h8s_types::resources::find("apiregistration.k8s.io", "v1", "apiservices")?;
    Some(Target {
        res,
        ns: None,
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
        watch_path: false,
        cr: None,
    })
}

/// The backend an APIService object describes, `None` for a local one.
fn backend(api: &Api, o: &Value) -> Option<Backend> {
    let spec = &o["spec"];
    let svc = spec.get("service").filter(|s| s.is_object())?;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let ca = match spec["caBundle"].as_str() {
        Some(b) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let insecure = spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false);
    let tls =
        super::frontproxy::client_tls(&api.aggregator.front_proxy, &ca, insecure).map(Arc::new);
    Some(Backend {
        name: obj::name(o).to_string(),
        group: s(spec, "group"),
        version: s(spec, "version"),
        group_priority: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
        version_priority: spec["versionPriority"].as_i64().unwrap_or(0),
        svc_namespace: s(svc, "namespace"),
        svc_name: s(svc, "name"),
        port: svc["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443),
        tls,
        state: RwLock::new(Err((
            "FailedDiscoveryCheck".into(),
            "not checked yet".into(),
        ))),
        spec: spec.clone(),
        openapi: RwLock::new(None),
        idle: Default::default(),
    })
}

/// Checks one backend, keeps the result and writes the APIService's condition.
async fn check_and_report(api: &Arc<Api>, b: &Arc<Backend>) {
    let result = if super::served_locally(&b.group, &b.version, &api.crds) {
        Err((
            "FailedDiscoveryCheck".to_string(),
            format!(
                "{}/{} is served by this API server itself; the service is not used",
                b.group, b.version
            ),
        ))
    } else {
        api.aggregator.check(api, b).await
    };
    let (status, reason, message) = match &result {
        Ok(_) => (
            "True",
            "Passed".to_string(),
            "all checks passed".to_string(),
        ),
        Err((r, m)) => ("False", r.clone(), m.clone()),
    };
    let passed = result.is_ok();
    *b.state.write().unwrap_or_else(|e| e.into_inner()) = result;
    if passed {
        super::openapi::refresh(api, b).await;
    }
    write_condition(api, &b.name, status, &reason, &message).await;
}

/// Writes `Available` when it differs from what is stored (servers racing compute the
/// same condition; a lost race is retried by the write path).
async fn write_condition(api: &Arc<Api>, name: &str, status: &str, reason: &str, message: &str) {
    let Some(t) = target(Some(name), Some("status")) else {
        return;
    };
    let cur = match api.read(&t, name).await {
        Ok(Some((_, o))) => o,
        _ => return,
    };
    let old = cur
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .cloned();
    if let Some(c) = &old {
        if c["status"] == status && c["reason"] == reason && c["message"] == message {
            return;
        }
    }
    let since = match &old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(crate::util::now_rfc3339()),
    };
    let cond = json!({"type": "Available", "status": status, "lastTransitionTime": since,
        "reason": reason, "message": message});
    let cx = Ctx::internal(crate::bootstrap::system_user());
    let r = api
        .guaranteed_update(&cx, &t, name, false, |cur| {
            let mut o = cur.cloned().unwrap_or(Value::Null);
            let mut conds: Vec<Value> = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["type"] != "Available")
                .collect();
            conds.push(cond.clone());
            o["status"] = json!({"conditions": conds});
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(o)
        })
        .await;
    if let Err(e) = r {
        tracing::debug!(apiservice = name, error = %e.message, "writing the Available condition failed");
    }
}

/// Takes in a written APIService: a new or changed service-backed one is checked now.
async fn reconcile(api: &Arc<Api>, kv: &KeyValue) {
    let Ok(o) = obj::decode(kv) else { return };
    let name = obj::name(&o).to_string();
    let Some(b) = backend(api, &o) else {
        api.aggregator.remove_named(&name);
        return;
    };
    let same = api
        .aggregator
        .all()
        .iter()
        .any(|old| old.name == name && old.spec == b.spec);
    if same {
        return;
    }
    api.aggregator.remove_named(&name);
    let b = Arc::new(b);
    api.aggregator.put(b.clone());
    let api = api.clone();
    tokio::spawn(async move { check_and_report(&api, &b).await });
}

/// Follows APIServices until the server shuts down.
pub(crate) async fn run(api: Arc<Api>) {
    let Some(t) = target(None, None) else { return };
    let prefix = obj::prefix(t.res, None);
    let mut shutdown = api.shutdown.clone();
    let mut tick = tokio::time::interval(api.aggregator.cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let listed = match api.store.list(&prefix, Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "apiservice controller: listing failed");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let names: Vec<String> = listed
            .items
            .iter()
            .filter_map(|kv| obj::decode(kv).ok())
            .map(|o| obj::name(&o).to_string())
            .collect();
        for b in api.aggregator.all() {
            if !names.contains(&b.name) {
                api.aggregator.remove_named(&b.name);
            }
        }
        for kv in &listed.items {
            reconcile(&api, kv).await;
        }
        let mut watch = match api.store.watch(&prefix, listed.revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "apiservice controller: watching failed");
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    for b in api.aggregator.all() {
                        let api = api.clone();
                        tokio::spawn(async move { check_and_report(&api, &b).await });
                    }
                }
                ev = watch.next() => match ev {
                    Some(Ok(h8s_store::Event::Put { kv, .. })) => reconcile(&api, &kv).await,
                    Some(Ok(h8s_store::Event::Delete { prev, .. })) => {
                        if let Ok(o) = obj::decode(&prev) {
                            api.aggregator.remove_named(obj::name(&o));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "apiservice controller: watch ended; listing again");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

/// The ConfigMap `kube-system/extension-apiserver-authentication` (kube-apiserver's
/// ClusterAuthenticationTrustController): the client CA and the requestheader settings.
/// Servers of one cluster with different front-proxy CAs each add theirs to the bundle.
pub(crate) async fn publish_authentication_config(
    api: &Arc<Api>,
    client_ca: &str,
) -> Result<(), crate::error::ApiError> {
    let Some(res) = h8s_types::resources::find("", "v1", "configmaps") else {
        return Ok(());
    };
    let name = "extension-apiserver-authentication";
    let t = Target {
        res,
        ns: Some("kube-system".into()),
        name: Some(name.into()),
        sub: None,
        watch_path: false,
        cr: None,
    };
    let ours = api.aggregator.front_proxy.ca_pem.trim().to_string();
    if let Some((_, cur)) = api.read(&t, name).await? {
        let d = &cur["data"];
        if d["requestheader-client-ca-file"]
            .as_str()
            .is_some_and(|b| b.contains(&ours))
            && d["client-ca-file"]
                .as_str()
                .is_some_and(|b| b.contains(client_ca.trim()))
        {
            return Ok(());
        }
    }
    let cx = Ctx::internal(crate::bootstrap::system_user());
    let bundle = |old: Option<&str>, pem: &str| -> String {
        match old {
            Some(b) if b.contains(pem) => b.to_string(),
            Some(b) if !b.trim().is_empty() => format!("{}\n{}\n", b.trim_end(), pem),
            _ => format!("{pem}\n"),
        }
    };
    let client_ca = client_ca.trim().to_string();
    api.guaranteed_update(&cx, &t, name, true, |cur| {
        let old = |k: &str| cur.and_then(|c| c["data"][k].as_str());
        let data = json!({
            "client-ca-file": bundle(old("client-ca-file"), &client_ca),
            "requestheader-allowed-names": json!([super::FRONT_PROXY_CLIENT_CN]).to_string(),
            "requestheader-client-ca-file": bundle(old("requestheader-client-ca-file"), &ours),
            "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
            "requestheader-group-headers": "[\"X-Remote-Group\"]",
            "requestheader-uid-headers": "[\"X-Remote-Uid\"]",
            "requestheader-username-headers": "[\"X-Remote-User\"]",
        });
        let mut o = match cur {
            Some(c) => c.clone(),
            None => json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "kube-system"}}),
        };
        o["data"] = data;
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Ok(o)
    })
    .await
    .map(|_| ())
}
