//! Pod networks from the API: a pod VM joins its namespace's Network (`spec.network`, else
//! its tenant's default Network), with an address from the cluster-wide IPAM in the
//! Network's `status.allocations`, and the node programs that Network's segment (bridge,
//! VXLAN, gateway with NAT: the `h8s_net` fabric) while it has pods here.
//!
//! * **IPAM**: an address is taken by a compare-and-swap write of the Network's status
//!   (`PUT …/status` with the `resourceVersion` read): two nodes or two starts racing for
//!   the same address get one success and one 409, and the loser reads again. A pod that
//!   already holds an address (same uid) gets it back, so restarts keep addresses. The
//!   address is released (another CAS write) when the pod's VM is removed.
//! * **Node cache**: the fabric builds from its node-local store; here that store is a
//!   cache of the API — the Networks this node uses (converted once by
//!   `h8s_net::Network::from_api`), this node's ports, and the other nodes' pods of those
//!   Networks (from the allocations and the Nodes' `InternalIP`), from which the VXLAN
//!   forwarding entries and the VXLAN peer set are programmed. A Node that is gone, or has
//!   no `InternalIP`, is dropped from every segment.
//! * **Lifetime of a segment**: built on the first local pod of a Network, removed with the
//!   last one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use h8s_net::{Attachment, Fabric, MacAddr, PortKind};
use h8s_types::network::{IpAllocation, NetNamespace, NetworkPhase};
use h8s_types::Network as ApiNetwork;
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::{watch, Mutex, Notify};

/// Why a pod could not join its Network.
#[derive(Debug, thiserror::Error)]
pub enum NetApiError {
    /// An API request failed.
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    /// The Network is not usable (yet).
    #[error("{0}")]
    NotReady(String),
    /// Every address of the Network is taken.
    #[error("network {network:?} has no free address left ({used} in use)")]
    Exhausted { network: String, used: usize },
    /// The fabric refused or failed.
    #[error("network fabric")]
    Fabric(#[from] h8s_net::Error),
    /// A blocking fabric task died.
    #[error("network fabric task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// One node's view of the API's Networks.
pub struct ApiNetworks {
    client: kube::Client,
    fabric: Fabric,
    node: String,
    /// Pod MTU on this node: the underlay's minus VXLAN's overhead.
    mtu: u32,
    /// Fabric changes on this node, one at a time (segment set-up is not concurrent-safe).
    lock: Mutex<()>,
    /// Pod VMs whose taps wait to be released: whoever holds `release_lock` next detaches
    /// them all with one reconcile ([`Fabric::detach_pods`]) and leaves each one's result in
    /// `released`. Tap deletion does not take `lock` (it sets up no segment).
    release_lock: Mutex<()>,
    releasing: std::sync::Mutex<Vec<String>>,
    released: std::sync::Mutex<BTreeMap<String, h8s_net::Result<Vec<Attachment>>>>,
    /// Attaches waiting for `lock`, per Network: a release batch keeps a segment it would
    /// remove when a pod is about to join it (no teardown and rebuild in a row).
    attaching: std::sync::Mutex<BTreeMap<String, usize>>,
    networks: Store<ApiNetwork>,
    nodes: Store<Node>,
    wake: Arc<Notify>,
    /// Give this node's host an address on the system Network while it has pods (the API
    /// server's node: see [`ApiNetworks::sync_system_host`]).
    system_host: bool,
    _tasks: Vec<AbortOnDrop>,
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for ApiNetworks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiNetworks")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

pub(crate) fn reflect<K>(api: Api<K>, wake: Arc<Notify>) -> (Store<K>, AbortOnDrop)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::debug!(error = %e, "network watch failed; retrying"),
            }
        }
    });
    (store, AbortOnDrop(task))
}

impl ApiNetworks {
    /// Starts following Networks and Nodes for `node`, whose fabric is `fabric`; with
    /// `system_host`, the node's host joins the system Network while it has pods.
    pub fn start(
        client: kube::Client,
        fabric: Fabric,
        node: &str,
        system_host: bool,
    ) -> Arc<ApiNetworks> {
        let wake = Arc::new(Notify::new());
        let (networks, t1) = reflect(Api::<ApiNetwork>::all(client.clone()), wake.clone());
        let (nodes, t2) = reflect(Api::<Node>::all(client.clone()), wake.clone());
        let mtu = fabric.node().underlay_mtu - h8s_net::VXLAN_OVERHEAD;
        Arc::new(ApiNetworks {
            client,
            fabric,
            node: node.to_string(),
            mtu,
            lock: Mutex::new(()),
            release_lock: Mutex::new(()),
            releasing: Default::default(),
            released: Default::default(),
            attaching: Default::default(),
            networks,
            nodes,
            wake,
            system_host,
            _tasks: vec![t1, t2],
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Fabric) -> h8s_net::Result<T> + Send + 'static,
    ) -> Result<T, NetApiError> {
        let fabric = self.fabric.clone();
        Ok(tokio::task::spawn_blocking(move || f(&fabric)).await??)
    }

    /// The Network pods of `namespace` join.
    pub async fn network_of(&self, namespace: &str) -> Result<String, NetApiError> {
        let ns: NetNamespace = Api::all(self.client.clone()).get(namespace).await?;
        Ok(ns.network())
    }

    /// Joins pod `pod` (uid `uid`) of `namespace`, whose VM is `sandbox`, to its Network:
    /// an address from the API, a tap on the Network's segment on this node.
    pub async fn attach(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        sandbox: &str,
    ) -> Result<Attachment, NetApiError> {
        let name = self.network_of(namespace).await?;
        let api: Api<ApiNetwork> = Api::all(self.client.clone());
        let net = api.get(&name).await?;
        if let Some(t) = net.spec.tenant_id.as_deref().filter(|t| !t.is_empty()) {
            let ns: NetNamespace = Api::all(self.client.clone()).get(namespace).await?;
            if ns.tenant() != Some(t) {
                return Err(NetApiError::NotReady(format!(
                    "network {name:?} belongs to another tenant than namespace {namespace:?}"
                )));
            }
        }
        let phase = net.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase != Some(NetworkPhase::Active.as_str()) {
            let why = net
                .status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            return Err(NetApiError::NotReady(format!(
                "network {name:?} is {} {why}",
                phase.unwrap_or("not processed yet")
            )));
        }
        let fabric_net = h8s_net::Network::from_api(&net, self.mtu)?;
        let holder = IpAllocation {
            node: self.node.clone(),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            pod_uid: uid.to_string(),
        };
        let ip = allocate(&api, &name, &holder).await?;
        let joining = Joining::new(&self.attaching, &name);
        let _g = self.lock.lock().await;
        drop(joining);
        let (sb, n) = (sandbox.to_string(), name.clone());
        let r = self
            .blocking(move |f| {
                f.store().put(&fabric_net)?;
                match f.store().attachment(&n, &sb)? {
                    Some(a) if a.node == f.node().name && a.ip == ip => Ok(a),
                    Some(_) => {
                        f.detach(&n, &sb)?;
                        f.attach_ip(&n, &sb, ip)
                    }
                    None => f.attach_ip(&n, &sb, ip),
                }
            })
            .await;
        drop(_g);
        match r {
            Ok(a) => {
                self.wake.notify_one();
                Ok(a)
            }
            Err(e) => {
                if let Err(e2) = release(&api, &name, uid, &self.node).await {
                    tracing::warn!(error = %e2, "releasing the address of a failed attach");
                }
                Err(e)
            }
        }
    }

    /// Releases everything pod `uid` (VM `sandbox`) holds on this node: its taps, its
    /// addresses in the API, and the segments no other local pod uses.
    ///
    /// Pods released at the same time (a deleted Deployment, a namespace) share the fabric
    /// work: the taps of every pod waiting to be released go in one batch with one reconcile
    /// ([`Fabric::detach_pods`]). Deleting taps needs no fabric lock, so pods starting
    /// meanwhile attach beside the batch; only removing a segment left without local pods
    /// takes it, and a segment stays when a pod waits to join it.
    pub async fn release(&self, sandbox: &str, uid: &str) -> Result<(), NetApiError> {
        lock_unpoisoned(&self.releasing).push(sandbox.to_string());
        let rg = self.release_lock.lock().await;
        let mut batch = std::mem::take(&mut *lock_unpoisoned(&self.releasing));
        // A pod released twice at once (its VM's end and its removal) is detached once.
        batch.sort();
        batch.dedup();
        let mut forgot = Ok(());
        if !batch.is_empty() {
            let results = self
                .blocking(move |f| {
                    let pods: Vec<&str> = batch.iter().map(String::as_str).collect();
                    let results = f.detach_pods(&pods)?;
                    Ok(batch.into_iter().zip(results).collect::<Vec<_>>())
                })
                .await?;
            if results.len() > 1 {
                tracing::debug!(pods = results.len(), "pod taps released together");
            }
            let nets: BTreeSet<String> = results
                .iter()
                .flat_map(|(_, r)| r.iter().flatten())
                .map(|a| a.network.clone())
                .collect();
            lock_unpoisoned(&self.released).extend(results);
            if !nets.is_empty() {
                forgot = self.forget_emptied(nets).await;
            }
        }
        // Absent when the batch that took it failed as a whole (its holder reports that), or
        // for the second of two releases of one pod at once.
        let mine = lock_unpoisoned(&self.released).remove(sandbox);
        drop(rg);
        forgot?;
        let detached = mine.transpose()?.unwrap_or_default();
        // Addresses in the API: the Networks the cache says hold one for this pod (the
        // attachment may be gone already when a start failed half-way).
        let mut names: BTreeSet<String> = detached.into_iter().map(|a| a.network).collect();
        for n in self.networks.state() {
            if let Some(st) = &n.status {
                if st
                    .allocations
                    .values()
                    .any(|h| h.pod_uid == uid && h.node == self.node)
                {
                    names.insert(n.metadata.name.clone().unwrap_or_default());
                }
            }
        }
        let api: Api<ApiNetwork> = Api::all(self.client.clone());
        for n in names {
            release(&api, &n, uid, &self.node).await?;
        }
        Ok(())
    }

    /// Removes the segments of `nets` that have no local pod left and no pod waiting to join.
    async fn forget_emptied(&self, nets: BTreeSet<String>) -> Result<(), NetApiError> {
        let _g = self.lock.lock().await;
        let joining: BTreeSet<String> = lock_unpoisoned(&self.attaching).keys().cloned().collect();
        let node = self.node.clone();
        let emptied = self
            .blocking(move |f| {
                let mut emptied = vec![];
                for n in nets.into_iter().filter(|n| !joining.contains(n)) {
                    if forget_if_unused(f, &n, &node)? {
                        emptied.push(n);
                    }
                }
                Ok(emptied)
            })
            .await?;
        for n in &emptied {
            tracing::info!(network = %n, "last local pod gone; segment removed");
        }
        Ok(())
    }

    /// Keeps other nodes' pods of the local Networks programmed (VXLAN forwarding entries
    /// and peers) until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = stop.changed() => return,
            }
            // Let a burst of watch events settle into one pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %crate::worker::error_chain(&e), "programming remote pods failed");
            }
            if self.system_host {
                if let Err(e) = self.sync_system_host().await {
                    tracing::warn!(error = %crate::worker::error_chain(&e), "the host's port on the system network");
                }
            }
        }
    }

    /// One pass: for every Network with local pods, the other nodes' pods from the API.
    pub async fn sync(&self) -> Result<(), NetApiError> {
        let node_ips: BTreeMap<String, Ipv4Addr> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, internal_ip(n)?)))
            .collect();
        let _g = self.lock.lock().await;
        let local: Vec<h8s_net::Network> = self.blocking(|f| f.store().list()).await?;
        let mut plan = vec![];
        for net in local {
            let Some(api_net) = self.networks.get(&ObjectRef::new(&net.name)) else {
                // Deleted in the API: the pods go with their namespaces; keep the segment
                // until the last local pod is released.
                continue;
            };
            let remote = remote_attachments(&net, &api_net, &self.node, &node_ips);
            plan.push((net.name, remote));
        }
        let node = self.node.clone();
        self.blocking(move |f| {
            let mut changed = false;
            for (name, remote) in plan {
                changed |= f.store().set_remote(&name, &node, remote)?;
            }
            if changed {
                f.reconcile()?;
            }
            Ok(())
        })
        .await
    }
}

/// The pod name of a node's host port in the system Network's IPAM and the node store.
pub const HOST_PORT_POD: &str = "h8s-host";

/// The IPAM holder uid of `node`'s host port (no pod has a uid of this form).
pub fn host_port_uid(node: &str) -> String {
    format!("host:{node}")
}

/// Whether the system Network `net` has pods (holders other than host ports).
pub fn has_pods(net: &ApiNetwork) -> bool {
    net.status.as_ref().is_some_and(|s| {
        s.allocations
            .values()
            .any(|h| !h.pod_uid.starts_with("host:"))
    })
}

impl ApiNetworks {
    /// The API server's reach into the cluster (docs/network.md, "The system Network"):
    /// while the system Network ([`h8s_types::SYSTEM_PODS_NETWORK`]) has pods on any node,
    /// this node's host holds an address on it (from the same IPAM as pods, so every other
    /// node forwards it here over the segment's VXLAN) on the device `h8y<vni>`
    /// ([`Fabric::attach_host`]); when its last pod is gone, the address is released and
    /// the segment removed if no local pod uses it. Idempotent; runs after every pass.
    pub async fn sync_system_host(&self) -> Result<(), NetApiError> {
        let name = h8s_types::SYSTEM_PODS_NETWORK;
        let port = format!("{HOST_PORT_POD}-{}", self.node);
        let uid = host_port_uid(&self.node);
        let api: Api<ApiNetwork> = Api::all(self.client.clone());
        let net = self.networks.get(&ObjectRef::new(name));
        let active = net.as_ref().is_some_and(|n| {
            n.status.as_ref().and_then(|s| s.phase.as_deref())
                == Some(NetworkPhase::Active.as_str())
        });
        let want = active && net.as_ref().is_some_and(|n| has_pods(n));
        if !want {
            let _g = self.lock.lock().await;
            let (n, p, node) = (name.to_string(), port.clone(), self.node.clone());
            let had = self
                .blocking(move |f| {
                    let Ok(Some(_)) = f.store().attachment(&n, &p) else {
                        return Ok(false);
                    };
                    f.detach(&n, &p)?;
                    forget_if_unused(f, &n, &node)?;
                    Ok(true)
                })
                .await?;
            drop(_g);
            let holds = net.as_ref().is_some_and(|n| {
                n.status.as_ref().is_some_and(|s| {
                    s.allocations
                        .values()
                        .any(|h| h.pod_uid == uid && h.node == self.node)
                })
            });
            if holds {
                release(&api, name, &uid, &self.node).await?;
            }
            if had {
                tracing::info!("system network has no pods; host port removed");
            }
            return Ok(());
        }
        let Some(net) = net else { return Ok(()) };
        let fabric_net = h8s_net::Network::from_api(&net, self.mtu)?;
        // The address the cache already shows, else one from the IPAM.
        let held = net.status.as_ref().and_then(|s| {
            s.allocations
                .iter()
                .find(|(_, h)| h.pod_uid == uid && h.node == self.node)
                .and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok())
        });
        let ip = match held {
            Some(ip) => ip,
            None => {
                let holder = IpAllocation {
                    node: self.node.clone(),
                    namespace: h8s_types::SYSTEM_PODS_NAMESPACE.to_string(),
                    pod: HOST_PORT_POD.to_string(),
                    pod_uid: uid,
                };
                allocate(&api, name, &holder).await?
            }
        };
        let _g = self.lock.lock().await;
        let n = name.to_string();
        let a = self
            .blocking(move |f| {
                match f.store().attachment(&n, &port) {
                    Ok(Some(a)) if a.ip == ip => {}
                    _ => f.store().put(&fabric_net)?,
                }
                f.attach_host(&n, &port, ip)
            })
            .await?;
        tracing::debug!(ip = %a.ip, "host port on the system network");
        Ok(())
    }
}

/// A Node's `InternalIP` (IPv4).
pub(crate) fn internal_ip(n: &Node) -> Option<Ipv4Addr> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// The other nodes' pods of `net` as fabric attachments (what the forwarding entries are
/// made of); pods on nodes without a known address are left out.
pub fn remote_attachments(
    net: &h8s_net::Network,
    api_net: &ApiNetwork,
    local: &str,
    node_ips: &BTreeMap<String, Ipv4Addr>,
) -> Vec<Attachment> {
    let Some(st) = &api_net.status else {
        return vec![];
    };
    st.allocations
        .iter()
        .filter(|(_, h)| h.node != local)
        .filter_map(|(ip, h)| {
            let ip: Ipv4Addr = ip.parse().ok()?;
            let s = net.subnet_of(ip)?;
            Some(Attachment {
                pod: format!("remote-{}", h.pod_uid),
                network: net.name.clone(),
                node: h.node.clone(),
                node_ip: *node_ips.get(&h.node)?,
                ip,
                prefix_len: s.cidr.prefix_len(),
                gateway: s.gateway,
                mac: MacAddr::for_ip(ip),
                mtu: net.mtu,
                dns: vec![],
                port: String::new(),
                kind: PortKind::Tap,
            })
        })
        .collect()
}

/// The lowest free pod address of `net` given its allocations: subnets in name order,
/// network, broadcast and gateway addresses skipped.
pub fn free_address(net: &ApiNetwork) -> Option<Ipv4Addr> {
    let used: BTreeSet<Ipv4Addr> = net
        .status
        .iter()
        .flat_map(|s| s.allocations.keys())
        .filter_map(|k| k.parse().ok())
        .collect();
    for sn in net.spec.subnets.values() {
        let Some((base, prefix)) = sn.cidr.split_once('/') else {
            continue;
        };
        let (Ok(base), Ok(prefix)) = (base.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
            continue;
        };
        if prefix > 30 {
            continue;
        }
        let gw = sn
            .gateway
            .parse::<Ipv4Addr>()
            .unwrap_or(Ipv4Addr::from(u32::from(base) + 1));
        let size = 1u32 << (32 - prefix);
        for off in 1..size - 1 {
            let ip = Ipv4Addr::from(u32::from(base) + off);
            if ip != gw && !used.contains(&ip) {
                return Some(ip);
            }
        }
    }
    None
}

/// How many times a CAS write is retried after a conflict before giving up.
const CAS_TRIES: u32 = 50;

/// Takes an address for `holder` on Network `name` (or returns the one its pod holds).
pub async fn allocate(
    api: &Api<ApiNetwork>,
    name: &str,
    holder: &IpAllocation,
) -> Result<Ipv4Addr, NetApiError> {
    for attempt in 0..CAS_TRIES {
        let mut net = api.get(name).await?;
        let st = net.status.get_or_insert_with(Default::default);
        if let Some((ip, _)) = st
            .allocations
            .iter()
            .find(|(_, h)| h.pod_uid == holder.pod_uid)
        {
            if let Ok(ip) = ip.parse() {
                return Ok(ip);
            }
        }
        let Some(ip) = free_address(&net) else {
            return Err(NetApiError::Exhausted {
                network: name.to_string(),
                used: net.status.map(|s| s.allocations.len()).unwrap_or(0),
            });
        };
        net.status
            .get_or_insert_with(Default::default)
            .allocations
            .insert(ip.to_string(), holder.clone());
        match api.replace_status(name, &PostParams::default(), &net).await {
            Ok(_) => {
                tracing::debug!(network = name, %ip, attempt, "address allocated");
                return Ok(ip);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Someone else wrote first: read again, after a short, spreading pause.
                tokio::time::sleep(Duration::from_millis(5 + u64::from(attempt) * 7)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(NetApiError::NotReady(format!(
        "network {name:?}: address allocation kept conflicting"
    )))
}

/// Drops the addresses pod `uid` holds on Network `name` from node `node`.
pub async fn release(
    api: &Api<ApiNetwork>,
    name: &str,
    uid: &str,
    node: &str,
) -> Result<(), NetApiError> {
    for attempt in 0..CAS_TRIES {
        let Some(mut net) = api.get_opt(name).await? else {
            return Ok(());
        };
        let Some(st) = net.status.as_mut() else {
            return Ok(());
        };
        let before = st.allocations.len();
        st.allocations
            .retain(|_, h| !(h.pod_uid == uid && h.node == node));
        if st.allocations.len() == before {
            return Ok(());
        }
        match api.replace_status(name, &PostParams::default(), &net).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                tokio::time::sleep(Duration::from_millis(5 + u64::from(attempt) * 7)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(NetApiError::NotReady(format!(
        "network {name:?}: releasing an address kept conflicting"
    )))
}

/// Removes `network`'s segment from this node when no pod of `node` is attached to it;
/// whether it did. Under the fabric lock.
fn forget_if_unused(f: &Fabric, network: &str, node: &str) -> h8s_net::Result<bool> {
    let left = f
        .store()
        .attachments(network)?
        .into_iter()
        .any(|x| x.node == node);
    if !left {
        f.forget_network(network)?;
    }
    Ok(!left)
}

/// An attach waiting for the fabric lock, counted per Network until dropped (also when the
/// waiting pod start is cancelled).
struct Joining<'a> {
    map: &'a std::sync::Mutex<BTreeMap<String, usize>>,
    network: &'a str,
}

impl<'a> Joining<'a> {
    fn new(map: &'a std::sync::Mutex<BTreeMap<String, usize>>, network: &'a str) -> Self {
        *lock_unpoisoned(map).entry(network.to_string()).or_default() += 1;
        Joining { map, network }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut m = lock_unpoisoned(self.map);
        if let Some(n) = m.get_mut(self.network) {
            *n -= 1;
            if *n == 0 {
                m.remove(self.network);
            }
        }
    }
}

/// A std mutex's guard, also after a panic elsewhere (the data are plain lists).
fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_attaches_are_counted_per_network_until_dropped() {
        let m = std::sync::Mutex::new(BTreeMap::new());
        let a = Joining::new(&m, "net-a");
        let b = Joining::new(&m, "net-a");
        let c = Joining::new(&m, "net-b");
        assert_eq!(lock_unpoisoned(&m).get("net-a"), Some(&2));
        drop(a);
        drop(c);
        assert_eq!(lock_unpoisoned(&m).keys().collect::<Vec<_>>(), ["net-a"]);
        drop(b);
        assert!(lock_unpoisoned(&m).is_empty());
    }

    fn net(allocs: &[&str]) -> ApiNetwork {
        let mut n: ApiNetwork = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Network", "metadata": {"name": "n1"},
            "spec": {"tenantID": "t", "providerNetworkID": "4096",
                "subnets": {"a": {"cidr": "192.168.0.0/30"}, "b": {"cidr": "10.0.0.0/29", "gateway": "10.0.0.6"}}}}))
        .unwrap();
        let st = n.status.get_or_insert_with(Default::default);
        for (i, a) in allocs.iter().enumerate() {
            st.allocations.insert(
                a.to_string(),
                IpAllocation {
                    node: format!("node{}", i % 2),
                    namespace: "ns".into(),
                    pod: format!("p{i}"),
                    pod_uid: format!("u{i}"),
                },
            );
        }
        n
    }

    #[test]
    fn the_system_network_has_pods_only_when_a_holder_is_not_a_host_port() {
        assert!(!has_pods(&net(&[])));
        let mut n = net(&["10.0.0.2"]);
        assert!(has_pods(&n));
        for h in n.status.as_mut().unwrap().allocations.values_mut() {
            h.pod_uid = host_port_uid(&h.node);
        }
        assert!(!has_pods(&n), "only host ports");
    }

    #[test]
    fn lowest_free_address_skips_gateways_and_moves_to_the_next_subnet() {
        assert_eq!(free_address(&net(&[])), Some(Ipv4Addr::new(192, 168, 0, 2)));
        assert_eq!(
            free_address(&net(&["192.168.0.2"])),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        let taken = [
            "192.168.0.2",
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.4",
        ];
        assert_eq!(free_address(&net(&taken)), Some(Ipv4Addr::new(10, 0, 0, 5)));
        let full = [
            "192.168.0.2",
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.4",
            "10.0.0.5",
        ];
        assert_eq!(free_address(&net(&full)), None);
    }

    #[test]
    fn remote_pods_are_other_nodes_with_known_addresses() {
        let api = net(&["192.168.0.2", "10.0.0.1", "10.0.0.2"]);
        let fabric = h8s_net::Network::from_api(&api, 1450).unwrap();
        let ips = BTreeMap::from([("node1".to_string(), Ipv4Addr::new(10, 77, 0, 2))]);
        let r = remote_attachments(&fabric, &api, "node0", &ips);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r[0].node_ip, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(r[0].mac, MacAddr::for_ip(r[0].ip));
        assert_eq!(r[0].gateway, Ipv4Addr::new(10, 0, 0, 6));
        // A node that left (no Node object) is on no segment.
        assert!(remote_attachments(&fabric, &api, "node0", &BTreeMap::new()).is_empty());
    }
}
