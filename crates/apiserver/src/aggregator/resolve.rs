//! Where a Service reference (namespace, name, port) is reached from the API server.
//!
//! The API server runs on the host, outside the tenant Networks: their pod addresses are not
//! routed to it (see docs/network.md). The one Network it reaches is the system Network
//! ([`h8s_types::SYSTEM_PODS_NETWORK`], `kube-system`'s and the namespaces a cluster admin
//! puts there), through the host port the node agent of the server's node keeps on it. So,
//! as kube-apiserver resolves a service to an endpoint (`--enable-aggregator-routing`; the
//! host cannot use the in-pod Service proxy, so never the ClusterIP), but only to endpoints
//! the host can reach:
//!
//! - `type: ExternalName`: the external name and the referenced port;
//! - otherwise the Service's port numbered `port` (else `ServicePortError`), then the
//!   ready endpoints of its EndpointSlices (label `kubernetes.io/service-name`) for that
//!   port's name, in order: endpoints that are not pods (`targetRef` absent or not a `Pod`:
//!   selector-less Services whose EndpointSlices an administrator wrote, such as an
//!   aggregated server running on the host), and pod endpoints when the Service's namespace
//!   is on the system Network. Pod endpoints of any other namespace are in a tenant
//!   Network; a Service with only those is refused with a message saying so. Link-local,
//!   multicast and unspecified addresses are never dialled.
//!
//! The errors carry kube-aggregator's `Available` condition reasons.

use std::net::IpAddr;

use serde_json::Value;

use crate::admission::Lookup;
use crate::obj;
use crate::state::Api;

/// Why a Service reference cannot be reached: (condition reason, message).
pub(crate) type Unreachable = (String, String);

fn res(group: &str, version: &str, plural: &str) -> Option<&'static h8s_types::Resource> {
    h8s_types::resources::find(group, version, plural)
}

/// Whether an endpoint address may be dialled from the API server.
fn dialable(ip: IpAddr) -> bool {
    !(ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        })
}

/// The `host:port` to dial for `namespace/name:port`: from the caches of the webhook
/// module's resolver when the server has one, else from the store.
pub(crate) async fn resolve(
    api: &Api,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<String, Unreachable> {
    match &api.dynamic {
        Some(d) => d.resolve(namespace, name, port).await,
        None => resolve_in(api.store.as_ref(), namespace, name, port).await,
    }
}

/// The Network the pods of `namespace` are on (the namespace's `spec.network`, else its
/// implicit Network); `None` when the namespace cannot be read.
async fn pod_network(store: &dyn h8s_store::Store, namespace: &str) -> Option<String> {
    let ns_res = res("", "v1", "namespaces")?;
    let kv = store.get(&obj::key(ns_res, None, namespace)).await.ok()??;
    obj::decode(&kv)
        .ok()
        .map(|ns| h8s_types::effective_network(&ns))
}

/// What a resolver follows in a namespace a Service reference points into.
const FOLLOWED: &[(&str, &str)] = &[("", "services"), ("discovery.k8s.io", "endpointslices")];

/// The most namespaces a resolver follows; references into further ones read the store.
/// Only cluster administrators write the objects that reference Services (webhook
/// configurations, APIServices, CRDs), so few namespaces are referenced.
const MAX_FOLLOWED: usize = 64;

/// Whether a namespace is on the system Network, from a cache (`None`: not known there).
pub(crate) type OnSystem<'a> = &'a (dyn Fn(&str) -> Option<bool> + Send + Sync);

/// Resolves Service references from caches kept by watches, as kube-apiserver's service
/// resolver reads its informers: the Services and EndpointSlices of each namespace a
/// reference points into, followed from the first reference on (so the memory is that of
/// the referenced namespaces, not the cluster's); the namespace's Network comes from the
/// caller's namespace cache. A reference the caches do not resolve (not synced yet, a
/// Service or endpoint created a moment ago, or one that is really unreachable) is
/// resolved again from the store, whose answer stands.
pub(crate) struct Resolver {
    store: std::sync::Arc<dyn h8s_store::Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    followed: std::sync::Mutex<std::collections::HashMap<String, Lookup>>,
}

impl Resolver {
    pub(crate) fn new(
        store: std::sync::Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Resolver {
            store,
            shutdown,
            followed: Default::default(),
        }
    }

    /// The caches of `namespace`, followed from now on if they are not yet.
    fn lookup(&self, namespace: &str) -> Option<Lookup> {
        let mut m = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = m.get(namespace) {
            return Some(l.clone());
        }
        if m.len() >= MAX_FOLLOWED {
            return None;
        }
        let l = Lookup::following_in(
            self.store.clone(),
            self.shutdown.clone(),
            FOLLOWED,
            Some(namespace),
        );
        m.insert(namespace.to_string(), l.clone());
        Some(l)
    }

    /// [`resolve`] from the caches (see [`Resolver`]).
    pub(crate) async fn resolve(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
        on_system: OnSystem<'_>,
    ) -> Result<String, Unreachable> {
        if let Some(lookup) = self.lookup(namespace) {
            let reads = Reads::Cached {
                lookup: &lookup,
                store: self.store.as_ref(),
                on_system,
            };
            if let Ok(addr) = resolve_with(&reads, namespace, name, port).await {
                return Ok(addr);
            }
        }
        resolve_in(self.store.as_ref(), namespace, name, port).await
    }
}

/// Where a resolution reads: the store, or a resolver's caches.
enum Reads<'a> {
    Store(&'a dyn h8s_store::Store),
    Cached {
        lookup: &'a Lookup,
        store: &'a dyn h8s_store::Store,
        on_system: OnSystem<'a>,
    },
}

fn access(e: &dyn std::fmt::Display) -> Unreachable {
    ("ServiceAccessError".to_string(), e.to_string())
}

impl Reads<'_> {
    async fn service(&self, namespace: &str, name: &str) -> Result<Option<Value>, Unreachable> {
        match self {
            Reads::Store(store) => {
                let svc_res = res("", "v1", "services").ok_or_else(|| {
                    (
                        "ServiceAccessError".to_string(),
                        "services are not served".to_string(),
                    )
                })?;
                match store
                    .get(&obj::key(svc_res, Some(namespace), name))
                    .await
                    .map_err(|e| access(&e))?
                {
                    Some(kv) => Ok(Some(obj::decode(&kv).map_err(|e| access(&e.message))?)),
                    None => Ok(None),
                }
            }
            Reads::Cached { lookup, .. } => lookup
                .get("", "services", Some(namespace), name)
                .await
                .map_err(|e| access(&e.message)),
        }
    }

    /// The EndpointSlices of `namespace` (undecodable ones left out).
    async fn slices(&self, namespace: &str) -> Result<Vec<Value>, Unreachable> {
        match self {
            Reads::Store(store) => {
                let eps_res = res("discovery.k8s.io", "v1", "endpointslices").ok_or_else(|| {
                    (
                        "EndpointsNotFound".to_string(),
                        "endpointslices are not served".to_string(),
                    )
                })?;
                let listed = store
                    .list(&obj::prefix(eps_res, Some(namespace)), Default::default())
                    .await
                    .map_err(|e| access(&e))?;
                Ok(listed
                    .items
                    .iter()
                    .filter_map(|kv| obj::decode(kv).ok())
                    .collect())
            }
            Reads::Cached { lookup, .. } => lookup
                .list("discovery.k8s.io", "endpointslices", Some(namespace))
                .await
                .map_err(|e| access(&e.message)),
        }
    }

    /// The Network of `namespace`'s pods (`None`: unknown). From a cache only the system
    /// Network is named: any other answer ends in an error, resolved again from the store.
    async fn network(&self, namespace: &str) -> Option<String> {
        match self {
            Reads::Store(store) => pod_network(*store, namespace).await,
            Reads::Cached {
                store, on_system, ..
            } => match on_system(namespace) {
                Some(true) => Some(h8s_types::SYSTEM_PODS_NETWORK.to_string()),
                Some(false) => None,
                None => pod_network(*store, namespace).await,
            },
        }
    }
}

/// [`resolve`] on a store.
pub(crate) async fn resolve_in(
    store: &dyn h8s_store::Store,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<String, Unreachable> {
    resolve_with(&Reads::Store(store), namespace, name, port).await
}

async fn resolve_with(
    reads: &Reads<'_>,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<String, Unreachable> {
    let svc = match reads.service(namespace, name).await? {
        Some(svc) => svc,
        None => {
            return Err((
                "ServiceNotFound".to_string(),
                format!("service/{name} in \"{namespace}\" is not present"),
            ))
        }
    };
    if svc["spec"]["type"] == "ExternalName" {
        let host = svc["spec"]["externalName"].as_str().unwrap_or("");
        if host.is_empty() {
            return Err((
                "ServiceAccessError".to_string(),
                format!("service/{name} in \"{namespace}\" has no externalName"),
            ));
        }
        return Ok(format!("{host}:{port}"));
    }
    let empty = Vec::new();
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .find(|p| p["port"].as_u64() == Some(port as u64))
        .ok_or_else(|| {
            (
                "ServicePortError".to_string(),
                format!("service/{name} in \"{namespace}\" is not listening on port {port}"),
            )
        })?;
    let port_name = svc_port["name"].as_str().unwrap_or("");
    let slices = reads.slices(namespace).await?;
    let mut any_slice = false;
    let mut pods_only = false;
    let mut network: Option<Option<String>> = None;
    for s in &slices {
        if s.pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            != Some(name)
        {
            continue;
        }
        any_slice = true;
        let Some(target) = s["ports"].as_array().unwrap_or(&empty).iter().find(|p| {
            p["name"].as_str().unwrap_or("") == port_name
                && p["protocol"].as_str().unwrap_or("TCP") == "TCP"
        }) else {
            continue;
        };
        let Some(target_port) = target["port"].as_u64().filter(|p| (1..=65535).contains(p)) else {
            continue;
        };
        for ep in s["endpoints"].as_array().unwrap_or(&empty) {
            if ep.pointer("/conditions/ready") == Some(&Value::Bool(false)) {
                continue;
            }
            if ep.pointer("/targetRef/kind").and_then(Value::as_str) == Some("Pod") {
                if network.is_none() {
                    network = Some(reads.network(namespace).await);
                }
                if network.as_ref().and_then(Option::as_deref)
                    != Some(h8s_types::SYSTEM_PODS_NETWORK)
                {
                    pods_only = true;
                    continue;
                }
            }
            for a in ep["addresses"].as_array().unwrap_or(&empty) {
                let Some(ip) = a.as_str().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                if !dialable(ip) {
                    continue;
                }
                return Ok(match ip {
                    IpAddr::V6(v6) => format!("[{v6}]:{target_port}"),
                    IpAddr::V4(v4) => format!("{v4}:{target_port}"),
                });
            }
        }
    }
    if !any_slice {
        return Err((
            "EndpointsNotFound".to_string(),
            format!("cannot find endpoints for service/{name} in \"{namespace}\""),
        ));
    }
    if pods_only {
        return Err((
            "MissingEndpoints".to_string(),
            format!(
                "endpoints for service/{name} in \"{namespace}\" are pods of network {:?}, \
                 which the h8s API server (on the host) cannot reach: it reaches only the \
                 system network's pods (namespace kube-system, or a namespace a cluster admin \
                 gives spec.network: system) and addresses the host reaches (a selector-less \
                 Service with an EndpointSlice, or an ExternalName Service)",
                network.flatten().unwrap_or_default()
            ),
        ));
    }
    Err((
        "MissingEndpoints".to_string(),
        format!(
            "endpoints for service/{name} in \"{namespace}\" have no addresses with port name {port_name:?}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn put(
        store: &dyn h8s_store::Store,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        o: Value,
    ) {
        let r = res(group, "v1", plural).unwrap();
        let key = obj::key(r, ns, obj::name(&o));
        store.create(&key, obj::encode(&o)).await.unwrap();
    }

    /// A Service `hook` in `ns` (port 443 → named port `https`) whose one ready endpoint is
    /// a pod at 10.87.0.5:8443.
    async fn pod_service(store: &dyn h8s_store::Store, ns: &str) {
        put(
            store,
            "",
            "services",
            Some(ns),
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hook", "namespace": ns},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        )
        .await;
        put(
            store,
            "discovery.k8s.io",
            "endpointslices",
            Some(ns),
            json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "hook-x", "namespace": ns,
                "labels": {"kubernetes.io/service-name": "hook"}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.87.0.9"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "p0"}},
                {"addresses": ["10.87.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "p1"}}]}),
        )
        .await;
    }

    #[tokio::test]
    async fn pods_are_dialled_only_on_the_system_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let store = store.as_ref();
        for (ns, extra) in [
            ("kube-system", json!({})),
            ("ops", json!({"spec": {"network": "system"}})),
            ("default", json!({})),
            (
                "acme-a",
                json!({"metadata": {"labels": {"tenancy.h8s.io/tenant": "acme"}}}),
            ),
        ] {
            let mut o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(l) = extra.pointer("/metadata/labels") {
                o["metadata"]["labels"] = l.clone();
            }
            if let Some(s) = extra.get("spec") {
                o["spec"] = s.clone();
            }
            put(store, "", "namespaces", None, o).await;
            pod_service(store, ns).await;
        }
        // The system Network's pods: the ready endpoint, at its target port.
        for ns in ["kube-system", "ops"] {
            assert_eq!(
                resolve_in(store, ns, "hook", 443).await.unwrap(),
                "10.87.0.5:8443"
            );
            let e = resolve_in(store, ns, "hook", 80).await.unwrap_err();
            assert_eq!(e.0, "ServicePortError");
        }
        // Any other Network's pods: refused, naming the Network.
        for (ns, net) in [("default", "default"), ("acme-a", "tenant-acme")] {
            let (reason, msg) = resolve_in(store, ns, "hook", 443).await.unwrap_err();
            assert_eq!(reason, "MissingEndpoints");
            assert!(
                msg.contains(&format!("are pods of network \"{net}\"")),
                "{msg}"
            );
        }
        let e = resolve_in(store, "kube-system", "nope", 443)
            .await
            .unwrap_err();
        assert_eq!(e.0, "ServiceNotFound");
    }

    #[tokio::test]
    async fn a_resolver_answers_from_its_caches_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let r = Resolver::new(store.clone(), shutdown);
        pod_service(store.as_ref(), "kube-system").await;
        let system = |_: &str| Some(true);
        // Before its caches have listed, the store answers.
        assert_eq!(
            r.resolve("kube-system", "hook", 443, &system)
                .await
                .unwrap(),
            "10.87.0.5:8443"
        );
        let l = r.lookup("kube-system").unwrap();
        // Waits are long: CI runs this beside the whole suite on two cores.
        for _ in 0..2000 {
            if l.synced("", "services") && l.synced("discovery.k8s.io", "endpointslices") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(l.synced("discovery.k8s.io", "endpointslices"));
        assert_eq!(
            r.resolve("kube-system", "hook", 443, &system)
                .await
                .unwrap(),
            "10.87.0.5:8443"
        );
        // The endpoint moves: the caches follow.
        let eps = res("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let key = obj::key(eps, Some("kube-system"), "hook-x");
        let kv = store.get(&key).await.unwrap().unwrap();
        let mut s = obj::decode(&kv).unwrap();
        s["endpoints"][1]["addresses"] = json!(["10.87.0.6"]);
        store
            .update(&key, obj::encode(&s), kv.mod_revision)
            .await
            .unwrap();
        let mut now = String::new();
        for _ in 0..2000 {
            now = r
                .resolve("kube-system", "hook", 443, &system)
                .await
                .unwrap();
            if now == "10.87.0.6:8443" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(now, "10.87.0.6:8443");
        // A namespace the caller's cache says is off the system Network: the store's
        // answer (no Namespace object here: no Network) stands.
        let off = |_: &str| Some(false);
        let e = r
            .resolve("kube-system", "hook", 443, &off)
            .await
            .unwrap_err();
        assert_eq!(e.0, "MissingEndpoints");
        let e = r
            .resolve("kube-system", "nope", 443, &system)
            .await
            .unwrap_err();
        assert_eq!(e.0, "ServiceNotFound");
        // Only so many namespaces are followed; the rest read the store.
        for i in 0..MAX_FOLLOWED {
            let _ = r.lookup(&format!("ns-{i}"));
        }
        assert!(r.lookup("one-more").is_none());
        let _ = stop.send(true);
    }

    #[test]
    fn what_may_be_dialled() {
        assert!(dialable("127.0.0.1".parse().unwrap()));
        assert!(dialable("10.0.0.7".parse().unwrap()));
        assert!(!dialable("169.254.169.254".parse().unwrap()));
        assert!(!dialable("0.0.0.0".parse().unwrap()));
        assert!(!dialable("fe80::1".parse().unwrap()));
        assert!(!dialable("224.0.0.1".parse().unwrap()));
    }
}
