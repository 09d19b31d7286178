//! The ClusterIP allocator's `networking.k8s.io/v1` IPAddress objects, as kube-apiserver's
//! IPAddress allocator (MultiCIDRServiceAllocator, GA in 1.33) writes them: every cluster IP
//! handed to a Service is an IPAddress named by the address (canonical form), labelled
//! `ipaddress.kubernetes.io/ip-family` and `ipaddress.kubernetes.io/managed-by:
//! ipallocator.k8s.io`, with `spec.parentRef` naming the Service (group "", resource
//! `services`). Creating it is the reservation: `AlreadyExists` means the address is taken.
//! An address goes back (its IPAddress is deleted) when the Service is deleted or stops
//! holding it (a type change to ExternalName, a new clusterIP), and when the Service write
//! that reserved it fails. The repair loop (`h8s-controllers`' `ipaddress`) recreates
//! missing ones and removes leaked ones.
//!
//! ClusterIPs come from one cluster-wide service CIDR whatever the Service's Network, so an
//! address names one IPAddress in the whole cluster;
//! tenants never see them (IPAddresses are cluster-scoped objects for administrators only,
//! see `tenancy`).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::bootstrap::system_user;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::obj;
use crate::rest::DeleteOptions;
use crate::route::Target;
use crate::state::Api;

/// The allocator's name in `ipaddress.kubernetes.io/managed-by` (kube's
/// `ipallocator.ControllerName`).
pub const MANAGED_BY: &str = "ipallocator.k8s.io";
/// The label naming the address family.
pub const LABEL_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";
/// The label naming the allocator that wrote the object.
pub const LABEL_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";

fn target(name: &str) -> Option<Target> {
    let res = h8s_types::resources::find("networking.k8s.io", "v1", "ipaddresses")?;
    Some(Target {
        res,
        ns: None,
        name: Some(name.to_string()),
        sub: None,
        watch_path: false,
        cr: None,
    })
}

/// The IPAddress the allocator writes for `ip` held by Service `ns/name`.
pub fn ip_address(ip: &str, ns: &str, name: &str) -> Value {
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": ip, "labels": {LABEL_FAMILY: family, LABEL_MANAGED_BY: MANAGED_BY}},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": name}},
    })
}

/// Whether an IPAddress's parentRef names Service `ns/name`.
fn names_service(o: &Value, ns: &str, name: &str) -> bool {
    let r = &o["spec"]["parentRef"];
    r["group"].as_str().unwrap_or("").is_empty()
        && r["resource"] == "services"
        && r["namespace"] == ns
        && r["name"] == name
}

/// The cluster IPs a Service holds (not `None`).
pub fn cluster_ips(svc: &Value) -> Vec<String> {
    let mut ips: Vec<String> = obj::at(svc, "spec.clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if let Some(ip) = obj::at(svc, "spec.clusterIP").and_then(Value::as_str) {
        if !ips.iter().any(|i| i == ip) {
            ips.push(ip.to_string());
        }
    }
    ips.retain(|ip| !ip.is_empty() && ip != "None");
    ips
}

impl Api {
    /// Whether `ip` is free for Service `ns/name`: no IPAddress, or one naming it (a
    /// dry run's check, which writes nothing).
    pub(crate) async fn cluster_ip_free(
        &self,
        ip: &str,
        ns: &str,
        name: &str,
    ) -> Result<bool, ApiError> {
        let t = target(ip).ok_or_else(|| ApiError::internal("ipaddresses are not served"))?;
        Ok(self
            .read(&t, ip)
            .await?
            .is_none_or(|(_, o)| names_service(&o, ns, name)))
    }

    /// At start: the IPAddress of every cluster IP a stored Service holds without one (a
    /// store written before the allocator wrote IPAddresses), so that the allocator, which
    /// reads nothing but IPAddresses, never hands such an address out again. Two lists,
    /// once; the repair loop keeps them right afterwards.
    pub(crate) async fn backfill_ip_addresses(self: &Arc<Self>) -> Result<usize, ApiError> {
        let (Some(t), Some(svc)) = (target(""), h8s_types::resources::find("", "v1", "services"))
        else {
            return Ok(0);
        };
        let list = |res| {
            let store = self.store.clone();
            async move {
                store
                    .list(&obj::prefix(res, None), h8s_store::ListOptions::default())
                    .await
                    .map_err(|e| crate::error::from_store(e, &Default::default()))
            }
        };
        let have: std::collections::HashSet<String> = list(t.res)
            .await?
            .items
            .iter()
            .map(|kv| obj::decode(kv).map(|o| obj::name(&o).to_string()))
            .collect::<Result<_, _>>()?;
        let mut made = 0;
        for kv in &list(svc).await?.items {
            let s = obj::decode(kv)?;
            for ip in cluster_ips(&s) {
                let in_range = ip
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|a| self.service_cidr.contains(a));
                if in_range && !have.contains(&ip) {
                    self.reserve_cluster_ip(&ip, obj::namespace(&s), obj::name(&s))
                        .await?;
                    made += 1;
                }
            }
        }
        Ok(made)
    }

    /// Reserves `ip` for Service `ns/name` by creating its IPAddress: `Ok(false)` when the
    /// address is taken (the IPAddress exists and names another Service), `Ok(true)` when
    /// it is this Service's (created now, or left from before).
    pub(crate) async fn reserve_cluster_ip(
        self: &Arc<Self>,
        ip: &str,
        ns: &str,
        name: &str,
    ) -> Result<bool, ApiError> {
        let t = target(ip).ok_or_else(|| ApiError::internal("ipaddresses are not served"))?;
        let cx = Ctx::internal(system_user());
        match self.create_object(&cx, &t, ip_address(ip, ns, name)).await {
            Ok(_) => Ok(true),
            Err(e) if e.reason == "AlreadyExists" => Ok(self
                .read(&t, ip)
                .await?
                .is_some_and(|(_, o)| names_service(&o, ns, name))),
            Err(e) => Err(e),
        }
    }

    /// Releases the IPAddresses of `ips` that name Service `ns/name` and that the Service
    /// (as stored now) no longer holds. Errors are logged: the repair loop removes what
    /// is left.
    pub(crate) fn release_cluster_ips<'a>(
        self: &'a Arc<Self>,
        ns: &'a str,
        name: &'a str,
        ips: Vec<String>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if ips.is_empty() {
                return;
            }
            let held = match crate::kinds::target("", "services", Some(ns), name) {
                Some(st) => match self.read(&st, name).await {
                    Ok(s) => s.map(|(_, s)| cluster_ips(&s)).unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(namespace = ns, service = name, error = %e.message, "reading a Service to release its cluster IPs failed");
                        return;
                    }
                },
                None => Vec::new(),
            };
            let cx = Ctx::internal(system_user());
            for ip in ips.iter().filter(|ip| !held.contains(ip)) {
                let Some(t) = target(ip) else { return };
                let uid = match self.read(&t, ip).await {
                    Ok(Some((_, o))) if names_service(&o, ns, name) => obj::uid(&o).to_string(),
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(%ip, error = %e.message, "reading an IPAddress to release it failed");
                        continue;
                    }
                };
                let opts = DeleteOptions {
                    uid: Some(uid),
                    ..Default::default()
                };
                match self.delete_one(&cx, &t, ip, &opts).await {
                    Ok(_) => {
                        tracing::debug!(%ip, namespace = ns, service = name, "released a cluster IP")
                    }
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(%ip, error = %e.message, "releasing a cluster IP failed")
                    }
                }
            }
        })
    }
}

/// Held by a Service write from allocation until the write is done (stored or failed):
/// when dropped, the addresses it reserved or that the Service held before are settled
/// against the stored Service — what it no longer holds is released. The allocation lock
/// is released with it.
pub(crate) struct Settle<G: Send> {
    pub api: Arc<Api>,
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
    pub _lock: G,
}

impl<G: Send> Drop for Settle<G> {
    fn drop(&mut self) {
        if self.ips.is_empty() {
            return;
        }
        let api = self.api.clone();
        let (ns, name, ips) = (
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.ips),
        );
        // The write this guards has finished or failed by now; the check reads the store.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { api.release_cluster_ips(&ns, &name, ips).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_is_the_allocators() {
        let o = ip_address("10.96.0.10", "ns", "web");
        assert_eq!(o["metadata"]["labels"][LABEL_FAMILY], "IPv4");
        assert_eq!(o["metadata"]["labels"][LABEL_MANAGED_BY], MANAGED_BY);
        assert!(names_service(&o, "ns", "web"));
        assert!(!names_service(&o, "ns", "other"));
        assert!(!names_service(&o, "other", "web"));
        let svc = json!({"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}});
        assert_eq!(cluster_ips(&svc), vec!["10.96.0.10"]);
        assert!(cluster_ips(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        assert!(cluster_ips(&json!({"spec": {"type": "ExternalName"}})).is_empty());
    }
}
