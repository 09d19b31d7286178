//! Namespace lifecycle at the API server: the default namespaces and the
//! `default/kubernetes` Service. A deleted namespace is only marked (`deletionTimestamp`,
//! phase `Terminating`) by the delete; emptying it and removing its `kubernetes` finalizer is
//! the namespace controller's work (`h8s-controllers`), through the API.

use std::sync::Arc;

use serde_json::json;

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
    kubernetes_service(api, addr).await
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
    // Its address as the allocator would have reserved it (the repair loop would too).
    if let Err(e) = api.reserve_cluster_ip(&ip, "default", "kubernetes").await {
        tracing::warn!(error = %e.message, "reserving the kubernetes Service's cluster IP failed");
    }
    match api.backfill_ip_addresses().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            count = n,
            "wrote the IPAddresses of Services stored without them"
        ),
        Err(e) => tracing::warn!(error = %e.message, "writing the missing IPAddresses failed"),
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
