//! Namespace lifecycle: the default namespaces, and the finalizer that empties a
//! terminating namespace and then removes it (kube-controller-manager's namespace
//! controller, run inside the API server because nothing else may touch the store).

use std::sync::Arc;
use std::time::Duration;

use h8s_store::ListOptions;
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::ApiError;
use crate::obj;

/// Namespaces every cluster has.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn ns_resource() -> &'static h8s_types::Resource {
    h8s_types::resources::find("", "v1", "namespaces")
        .expect("namespaces are in the resource table")
}

/// Creates the default namespaces if missing; resumes finalizing terminating ones.
pub async fn bootstrap(api: &Arc<Api>, addr: std::net::SocketAddr) -> Result<(), ApiError> {
    let r = ns_resource();
    for name in DEFAULT_NAMESPACES {
        let key = obj::key(r, None, name);
        let exists = api
            .store
            .get(&key)
            .await
            .map_err(|e| crate::error::from_store(e, &crate::error::Subject::default()))?
            .is_some();
        if exists {
            continue;
        }
        let mut o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        obj::meta_mut(&mut o).insert("uid".into(), json!(crate::util::new_uid()));
        obj::meta_mut(&mut o).insert(
            "creationTimestamp".into(),
            json!(crate::util::now_rfc3339()),
        );
        crate::hooks::default(r, &mut o);
        crate::hooks::initial_status(r, &mut o);
        match api.store.create(&key, obj::encode(&o)).await {
            Ok(_) | Err(h8s_store::Error::AlreadyExists(_)) => {}
            Err(e) => {
                return Err(crate::error::from_store(
                    e,
                    &crate::error::Subject::default(),
                ))
            }
        }
    }
    kubernetes_service(api, addr).await?;
    let all = api
        .store
        .list(&obj::prefix(r, None), ListOptions::default())
        .await
        .map_err(|e| crate::error::from_store(e, &crate::error::Subject::default()))?;
    for kv in &all.items {
        let o = obj::decode(kv)?;
        if obj::is_deleting(&o) {
            spawn_finalizer(api.clone(), obj::name(&o).to_string());
        }
    }
    Ok(())
}

/// Starts emptying and removing a terminating namespace in the background.
pub fn spawn_finalizer(api: Arc<Api>, name: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        loop {
            match finalize_once(&api, &name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e.message, "namespace finalizer")
                }
            }
            if *api.shutdown.borrow() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// One pass: delete what is left in the namespace; when it is empty, drop the
/// `kubernetes` finalizer and the namespace. Returns whether the namespace is gone.
async fn finalize_once(api: &Arc<Api>, name: &str) -> Result<bool, ApiError> {
    let store_err = |e| crate::error::from_store(e, &crate::error::Subject::default());
    let mut left = 0usize;
    let mut seen = std::collections::HashSet::new();
    for r in h8s_types::resources::all() {
        if !r.namespaced || !r.is_stored() {
            continue;
        }
        let prefix = obj::prefix(r, Some(name));
        if !seen.insert(prefix.clone()) {
            continue;
        }
        let items = api
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(store_err)?;
        for kv in items.items {
            left += 1;
            let o = obj::decode(&kv)?;
            if obj::finalizers(&o).is_empty() {
                match api.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_)
                    | Err(h8s_store::Error::NotFound(_))
                    | Err(h8s_store::Error::Conflict { .. }) => {}
                    Err(e) => return Err(store_err(e)),
                }
            } else if !obj::is_deleting(&o) {
                let mut n = o.clone();
                obj::meta_mut(&mut n).insert(
                    "deletionTimestamp".into(),
                    json!(crate::util::now_rfc3339()),
                );
                obj::meta_mut(&mut n).insert("deletionGracePeriodSeconds".into(), json!(0));
                let _ = api
                    .store
                    .update(&kv.key, obj::encode(&n), kv.mod_revision)
                    .await;
            }
        }
    }
    let r = ns_resource();
    let key = obj::key(r, None, name);
    let Some(kv) = api.store.get(&key).await.map_err(store_err)? else {
        return Ok(true);
    };
    if left > 0 {
        // Something was deleted (or waits on its finalizers): check again.
        let remaining = count_left(api, name).await?;
        if remaining > 0 {
            return Ok(false);
        }
    }
    let mut o = obj::decode(&kv)?;
    let fins: Vec<Value> = obj::at(&o, "spec.finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.as_str() != Some("kubernetes"))
        .collect();
    obj::set_at(&mut o, "spec.finalizers", json!(fins));
    if !fins.is_empty() || !obj::finalizers(&o).is_empty() {
        // Other finalizers hold the namespace: record our part and wait.
        let _ = api
            .store
            .update(&key, obj::encode(&o), kv.mod_revision)
            .await;
        return Ok(false);
    }
    match api.store.delete(&key, Some(kv.mod_revision)).await {
        Ok(_) | Err(h8s_store::Error::NotFound(_)) => Ok(true),
        Err(h8s_store::Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(store_err(e)),
    }
}

async fn count_left(api: &Arc<Api>, name: &str) -> Result<u64, ApiError> {
    let mut n = 0;
    let mut seen = std::collections::HashSet::new();
    for r in h8s_types::resources::all() {
        if !r.namespaced || !r.is_stored() {
            continue;
        }
        let prefix = obj::prefix(r, Some(name));
        if seen.insert(prefix.clone()) {
            n += api
                .store
                .count(&prefix)
                .await
                .map_err(|e| crate::error::from_store(e, &crate::error::Subject::default()))?;
        }
    }
    Ok(n)
}

/// The `default/kubernetes` Service (first address of the service CIDR) and its Endpoints
/// pointing at this server, refreshed at every start (the port may change).
async fn kubernetes_service(api: &Arc<Api>, addr: std::net::SocketAddr) -> Result<(), ApiError> {
    let store_err = |e| crate::error::from_store(e, &crate::error::Subject::default());
    let svc_res = h8s_types::resources::find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not in the resource table"))?;
    let ep_res = h8s_types::resources::find("", "v1", "endpoints")
        .ok_or_else(|| ApiError::internal("endpoints are not in the resource table"))?;
    let ip = api.service_cidr.first().to_string();
    let key = obj::key(svc_res, Some("default"), "kubernetes");
    if api.store.get(&key).await.map_err(store_err)?.is_none() {
        let o = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": crate::util::new_uid(),
                "creationTimestamp": crate::util::now_rfc3339(),
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": addr.port()}]},
            "status": {"loadBalancer": {}},
        });
        match api.store.create(&key, obj::encode(&o)).await {
            Ok(_) | Err(h8s_store::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(store_err(e)),
        }
    }
    let ep_ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let subsets = json!([{"addresses": [{"ip": ep_ip}], "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}]);
    let key = obj::key(ep_res, Some("default"), "kubernetes");
    match api.store.get(&key).await.map_err(store_err)? {
        Some(kv) => {
            let mut o = obj::decode(&kv)?;
            if o.get("subsets") != Some(&subsets) {
                o["subsets"] = subsets;
                let _ = api
                    .store
                    .update(&key, obj::encode(&o), kv.mod_revision)
                    .await;
            }
        }
        None => {
            let o = json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default", "uid": crate::util::new_uid(),
                    "creationTimestamp": crate::util::now_rfc3339(),
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": subsets,
            });
            match api.store.create(&key, obj::encode(&o)).await {
                Ok(_) | Err(h8s_store::Error::AlreadyExists(_)) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
    }
    Ok(())
}
