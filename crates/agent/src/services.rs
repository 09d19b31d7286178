//! Services inside tenant Networks (Hypernetes's per-pod "Service portal"): the node's
//! kube-proxy cannot reach into isolated tenant segments, so every pod VM proxies and resolves
//! Services itself, and this feed tells it what to proxy.
//!
//! The feed follows Services, EndpointSlices, Namespaces and Networks (watches), and for every
//! running pod VM of this node pushes (`h8s_guest::Request::UpdateServices`) the Services of
//! the pod's own Network only — those of the namespaces whose Network (`spec.network`, else the
//! tenant's default) is the pod's — with each port resolved to its ready backends, plus the
//! Network's pods (for pod DNS names). Pushes are incremental: the first one to a VM is the
//! whole table, later ones only the entries that changed. A pod is never told another
//! Network's Services, so it cannot resolve or reach them through the proxy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use h8s_guest::{
    PodRecord, PortProtocol, ServiceEntry, ServiceKind, ServiceName, ServicePortEntry,
    ServiceUpdate, SERVICES_VERSION,
};
use h8s_net::{ExposedPort, Fabric, ServiceRules, L4};
use h8s_runtime::{PodRuntime, SandboxState, SandboxStatus};
use h8s_types::network::NetNamespace;
use h8s_types::Network as ApiNetwork;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use kube::Api;
use tokio::sync::{watch, Mutex, Notify};

use crate::netapi::{internal_ip, reflect, AbortOnDrop};
use crate::pods::{LABEL_NAMESPACE, LABEL_OWNER};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// What one VM was last told.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Pushed {
    network: String,
    generation: u64,
    services: BTreeMap<ServiceName, ServiceEntry>,
    pods: BTreeMap<Ipv4Addr, String>,
}

/// One Network's table: its Services and its pods.
pub(crate) type Table = (
    BTreeMap<ServiceName, ServiceEntry>,
    BTreeMap<Ipv4Addr, String>,
);

/// The node's Service feed.
pub(crate) struct ServiceFeed {
    runtime: Arc<dyn PodRuntime>,
    /// `service_sync_period`, `service_retry_pause` and `expose_sync_period` apply here.
    timers: crate::PodTimers,
    owner: String,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<NetNamespace>,
    networks: Store<ApiNetwork>,
    /// Every table carries the `kubernetes` Service, backed by the Network's gateway
    /// (the node agent's API relay, see `apirelay`).
    api_relay: bool,
    /// NodePort and LoadBalancer forwarding on this node: the fabric and the node's name.
    expose: Option<(Fabric, String)>,
    nodes: Store<Node>,
    /// What the node's forwarding rules were last programmed with, and when.
    exposed: Mutex<Option<(ServiceRules, Instant)>>,
    /// Health check node ports of this node's LoadBalancer Services with
    /// `externalTrafficPolicy: Local`.
    health: Mutex<crate::lbhealth::HealthChecks>,
    wake: Arc<Notify>,
    pushed: Mutex<HashMap<String, Pushed>>,
    failed: Mutex<HashMap<String, Instant>>,
    /// Held from reading what a VM was last told to recording what it was told now, so the
    /// periodic pass and a new VM's own first push ([`ServiceFeed::push_new`]) never
    /// interleave: `pushed` is always what the VM last applied.
    push_lock: Mutex<()>,
    /// Notified (all waiters) whenever a VM's table was pushed or refused.
    pushed_changed: Notify,
    _tasks: Vec<AbortOnDrop>,
}

/// Whether a VM got its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// The VM has its Network's current table (just pushed, or already had it).
    Done,
    /// The VM refused it (or could not be reached); retried after `service_retry_pause`.
    Failed,
    /// Not a pod VM to feed (another agent's, not ready, no pod network), or its namespace
    /// is not known yet.
    Skipped,
}

fn protocol(p: Option<&str>) -> PortProtocol {
    match p {
        Some("UDP") => PortProtocol::Udp,
        Some("SCTP") => PortProtocol::Sctp,
        _ => PortProtocol::Tcp,
    }
}

/// A Service as a pod sees it (pure): `None` while it has no ClusterIP yet.
pub(crate) fn service_entry(svc: &Service, slices: &[&EndpointSlice]) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let key = ServiceName {
        namespace: svc.metadata.namespace.clone()?,
        name: svc.metadata.name.clone()?,
    };
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName {
            name: spec.external_name.clone()?,
        }
    } else {
        match spec.cluster_ip.as_deref() {
            Some("None") => ServiceKind::Headless,
            Some(ip) => ServiceKind::ClusterIp {
                ip: ip.parse().ok()?,
            },
            None => return None,
        }
    };
    let ready_slices: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| s.address_type == "IPv4")
        .collect();
    let ready = |s: &EndpointSlice| -> Vec<Ipv4Addr> {
        s.endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect()
    };
    let mut ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        let name = p.name.clone().unwrap_or_default();
        let proto = protocol(p.protocol.as_deref());
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let mut backends = Vec::new();
        for s in &ready_slices {
            // The slice's port of the same name carries the target port resolved per pod
            // (named targetPorts included).
            let Some(sp) = s.ports.iter().flatten().find(|sp| {
                sp.name.clone().unwrap_or_default() == name
                    && protocol(sp.protocol.as_deref()) == proto
            }) else {
                continue;
            };
            let Some(target) = sp.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            backends.extend(ready(s).into_iter().map(|ip| SocketAddrV4::new(ip, target)));
        }
        backends.sort();
        backends.dedup();
        ports.push(ServicePortEntry {
            name,
            protocol: proto,
            port,
            backends,
        });
    }
    let mut endpoints: Vec<Ipv4Addr> = ready_slices.iter().flat_map(|s| ready(s)).collect();
    endpoints.sort();
    endpoints.dedup();
    Some(ServiceEntry {
        key,
        kind,
        affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
        ports,
        endpoints,
    })
}

/// The table of Network `network` (pure): the Services of its namespaces, its pods.
pub(crate) fn network_table(
    network: &str,
    namespaces: &[Arc<NetNamespace>],
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    net: Option<&ApiNetwork>,
) -> Table {
    let members: HashSet<&str> = namespaces
        .iter()
        .filter(|n| n.network() == network)
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let (Some(ns), Some(svc)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str),
        ) else {
            continue;
        };
        if members.contains(ns) {
            by_service.entry((ns, svc)).or_default().push(s);
        }
    }
    let mut table = BTreeMap::new();
    for svc in services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if !members.contains(ns) || svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let sl = by_service.get(&(ns, name)).cloned().unwrap_or_default();
        if let Some(e) = service_entry(svc, &sl) {
            table.insert(e.key.clone(), e);
        }
    }
    let mut pods = BTreeMap::new();
    for (ip, a) in net
        .and_then(|n| n.status.as_ref())
        .map(|s| &s.allocations)
        .into_iter()
        .flatten()
    {
        if let (Ok(ip), true) = (
            ip.parse::<Ipv4Addr>(),
            members.contains(a.namespace.as_str()),
        ) {
            pods.insert(ip, a.namespace.clone());
        }
    }
    (table, pods)
}

/// The `default/kubernetes` Service's ClusterIP and port (`https`, else the first), as
/// pods' `KUBERNETES_SERVICE_*` environment names it (pure).
pub(crate) fn kubernetes_address(svc: &Service) -> Option<(String, u16)> {
    let spec = svc.spec.as_ref()?;
    let ip = spec
        .cluster_ip
        .clone()
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())?;
    let ports = spec.ports.as_ref()?;
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .or(ports.first())?
        .port;
    Some((ip, u16::try_from(port).ok()?))
}

/// The `default/kubernetes` Service as every pod of `net` sees it (pure): its ClusterIP and
/// ports, each backed by the Network's (first subnet's) gateway at
/// [`h8s_net::API_GATEWAY_PORT`], which forwards to the node agent's API relay.
pub(crate) fn kubernetes_entry(
    services: &[Arc<Service>],
    net: &ApiNetwork,
) -> Option<ServiceEntry> {
    let svc = services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some("default")
            && s.metadata.name.as_deref() == Some("kubernetes")
    })?;
    let mut e = service_entry(svc, &[])?;
    let gw = h8s_net::Network::from_api(net, 1350)
        .ok()?
        .subnets
        .first()?
        .gateway;
    for p in &mut e.ports {
        p.backends = vec![SocketAddrV4::new(gw, h8s_net::API_GATEWAY_PORT)];
    }
    e.endpoints = vec![gw];
    Some(e)
}

/// The update that turns `prev` into `next` (pure): everything when `prev` is `None` (or of
/// another Network), else only what changed; `None` when nothing did.
pub(crate) fn diff(
    prev: Option<&Pushed>,
    network: &str,
    next: &Table,
) -> Option<(ServiceUpdate, Pushed)> {
    let (services, pods) = next;
    let prev = prev.filter(|p| p.network == network);
    let generation = prev.map_or(1, |p| p.generation + 1);
    let pushed = Pushed {
        network: network.to_string(),
        generation,
        services: services.clone(),
        pods: pods.clone(),
    };
    let Some(prev) = prev else {
        return Some((
            ServiceUpdate {
                version: SERVICES_VERSION,
                generation,
                full: true,
                services: services.values().cloned().collect(),
                pods: pods
                    .iter()
                    .map(|(ip, ns)| PodRecord {
                        ip: *ip,
                        namespace: ns.clone(),
                    })
                    .collect(),
                ..ServiceUpdate::default()
            },
            pushed,
        ));
    };
    let u = ServiceUpdate {
        version: SERVICES_VERSION,
        generation,
        full: false,
        services: services
            .iter()
            .filter(|(k, e)| prev.services.get(*k) != Some(*e))
            .map(|(_, e)| e.clone())
            .collect(),
        removed: prev
            .services
            .keys()
            .filter(|k| !services.contains_key(*k))
            .cloned()
            .collect(),
        pods: pods
            .iter()
            .filter(|(ip, ns)| prev.pods.get(*ip) != Some(*ns))
            .map(|(ip, ns)| PodRecord {
                ip: *ip,
                namespace: ns.clone(),
            })
            .collect(),
        removed_pods: prev
            .pods
            .keys()
            .filter(|ip| !pods.contains_key(*ip))
            .copied()
            .collect(),
    };
    if u.services.is_empty()
        && u.removed.is_empty()
        && u.pods.is_empty()
        && u.removed_pods.is_empty()
    {
        return None;
    }
    Some((u, pushed))
}

impl ServiceFeed {
    /// [`kubernetes_address`] of the `default/kubernetes` Service as this node knows it
    /// (`None` before the first list, or without the Service).
    pub(crate) fn kubernetes_service(&self) -> Option<(String, u16)> {
        let svc = self
            .services
            .get(&kube::runtime::reflector::ObjectRef::new("kubernetes").within("default"))?;
        kubernetes_address(&svc)
    }

    /// Starts following the API.
    pub fn start(
        client: kube::Client,
        runtime: Arc<dyn PodRuntime>,
        owner: &str,
        api_relay: bool,
        expose: Option<(Fabric, String)>,
        timers: crate::PodTimers,
    ) -> Arc<ServiceFeed> {
        let wake = Arc::new(Notify::new());
        let (nodes, t5) = reflect(Api::<Node>::all(client.clone()), wake.clone());
        let (services, t1) = reflect(Api::<Service>::all(client.clone()), wake.clone());
        let (slices, t2) = reflect(Api::<EndpointSlice>::all(client.clone()), wake.clone());
        let (namespaces, t3) = reflect(Api::<NetNamespace>::all(client.clone()), wake.clone());
        let (networks, t4) = reflect(Api::<ApiNetwork>::all(client), wake.clone());
        Arc::new(ServiceFeed {
            runtime,
            timers,
            owner: owner.to_string(),
            services,
            slices,
            namespaces,
            networks,
            api_relay,
            expose,
            nodes,
            exposed: Mutex::new(None),
            health: Mutex::new(Default::default()),
            wake,
            pushed: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            push_lock: Mutex::new(()),
            pushed_changed: Notify::new(),
            _tasks: vec![t1, t2, t3, t4, t5],
        })
    }

    /// Pushes changes until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.pass().await;
            tokio::select! {
                _ = self.wake.notified() => {
                    // Let a burst of watch events settle into one pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tokio::time::sleep(self.timers.service_sync_period) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Gives the new VM `sb` its Network's whole table now, before its containers start (so
    /// they start with their Services resolvable): pushed at once from the feed's caches,
    /// without waiting for a pass. If the feed cannot yet (its namespace not listed yet), it
    /// wakes the feed and waits up to `limit` for a pass to push it.
    pub async fn push_new(&self, sb: &SandboxStatus, limit: Duration) {
        let namespaces = self.namespaces.state();
        let (services, slices) = (self.services.state(), self.slices.state());
        let mut tables = HashMap::new();
        let r = self
            .push_one(sb, &namespaces, &services, &slices, &mut tables)
            .await;
        if r != Push::Skipped {
            return;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.pushed_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.pushed.lock().await.contains_key(&sb.id)
                || self.failed.lock().await.contains_key(&sb.id)
            {
                return;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::debug!(sandbox = %sb.id, "no Service table pushed in time");
                return;
            }
        }
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn pass(&self) {
        let sandboxes = match self.runtime.list_sandboxes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "listing pod VMs failed");
                return;
            }
        };
        let namespaces = self.namespaces.state();
        let (services, slices) = (self.services.state(), self.slices.state());
        let mut tables: HashMap<String, Table> = HashMap::new();
        let mut live = HashSet::new();
        for sb in sandboxes {
            if self.feeds(&sb) {
                live.insert(sb.id.clone());
            }
            self.push_one(&sb, &namespaces, &services, &slices, &mut tables)
                .await;
        }
        // Forget VMs that are gone. One pushed by `push_new` after the listing above is not
        // in `live`: ask the runtime before forgetting it.
        let unknown: Vec<String> = {
            let pushed = self.pushed.lock().await;
            let failed = self.failed.lock().await;
            pushed
                .keys()
                .chain(failed.keys())
                .filter(|id| !live.contains(*id))
                .cloned()
                .collect()
        };
        for id in unknown {
            if let Ok(sb) = self.runtime.sandbox_status(&id).await {
                if self.feeds(&sb) {
                    live.insert(id);
                }
            }
        }
        self.pushed.lock().await.retain(|id, _| live.contains(id));
        self.failed.lock().await.retain(|id, _| live.contains(id));
        self.expose_pass(&namespaces, &services, &slices).await;
    }

    /// Whether `sb` is a pod VM this feed keeps a table in.
    fn feeds(&self, sb: &SandboxStatus) -> bool {
        sb.config.labels.get(LABEL_OWNER) == Some(&self.owner)
            && sb.state == SandboxState::Ready
            && sb.config.network.is_some()
    }

    /// Pushes VM `sb` what changed in its Network's table since it was last told (the whole
    /// table the first time). `tables` caches the tables built in one pass, by Network.
    async fn push_one(
        &self,
        sb: &SandboxStatus,
        namespaces: &[Arc<NetNamespace>],
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        tables: &mut HashMap<String, Table>,
    ) -> Push {
        if !self.feeds(sb) {
            return Push::Skipped;
        }
        let Some(ns) = sb.config.labels.get(LABEL_NAMESPACE) else {
            return Push::Skipped;
        };
        let Some(network) = namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns.as_str()))
            .map(|n| n.network())
        else {
            return Push::Skipped;
        };
        if let Some(t) = self.failed.lock().await.get(&sb.id) {
            if t.elapsed() < self.timers.service_retry_pause {
                return Push::Failed;
            }
        }
        let table = tables.entry(network.clone()).or_insert_with(|| {
            let net = self
                .networks
                .state()
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(network.as_str()));
            let mut t = network_table(&network, namespaces, services, slices, net.as_deref());
            if self.api_relay {
                if let Some(e) = net.as_deref().and_then(|n| kubernetes_entry(services, n)) {
                    t.0.insert(e.key.clone(), e);
                }
            }
            t
        });
        let _one_at_a_time = self.push_lock.lock().await;
        let prev = self.pushed.lock().await.get(&sb.id).cloned();
        let Some((update, pushed)) = diff(prev.as_ref(), &network, table) else {
            return Push::Done;
        };
        let changed = update.services.len() + update.removed.len();
        let started = Instant::now();
        let r = match self.runtime.update_services(&sb.id, update).await {
            Ok(()) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::debug!(sandbox = %sb.id, network, changed, generation = pushed.generation, ms, "Service table pushed");
                self.failed.lock().await.remove(&sb.id);
                self.pushed.lock().await.insert(sb.id.clone(), pushed);
                Push::Done
            }
            Err(e) => {
                tracing::warn!(sandbox = %sb.id, error = %e, "pushing the Service table failed; retrying later with the whole table");
                self.pushed.lock().await.remove(&sb.id);
                self.failed
                    .lock()
                    .await
                    .insert(sb.id.clone(), Instant::now());
                Push::Failed
            }
        };
        self.pushed_changed.notify_waiters();
        r
    }

    /// Programs the node's NodePort/LoadBalancer forwarding when it changed (or every
    /// `expose_sync_period`).
    async fn expose_pass(
        &self,
        namespaces: &[Arc<NetNamespace>],
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) {
        let Some((fabric, me)) = &self.expose else {
            return;
        };
        self.health
            .lock()
            .await
            .sync(&health_checks(me, services, slices))
            .await;
        let rules = exposed(me, services, slices, namespaces, &self.nodes.state());
        let mut last = self.exposed.lock().await;
        if last.as_ref().is_some_and(|(r, t)| {
            *r == rules && (rules.is_empty() || t.elapsed() < self.timers.expose_sync_period)
        }) {
            return;
        }
        let f = fabric.clone();
        let r = rules.clone();
        match tokio::task::spawn_blocking(move || f.program_services(&r)).await {
            Ok(Ok(())) => {
                if last.as_ref().map(|(r, _)| r) != Some(&rules) {
                    tracing::info!(
                        ports = rules.ports.len(),
                        announced = rules.lb_addrs.len(),
                        "NodePort/LoadBalancer forwarding programmed"
                    );
                }
                *last = Some((rules, Instant::now()));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "programming NodePort/LoadBalancer forwarding failed");
                *last = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "NodePort/LoadBalancer task failed");
                *last = None;
            }
        }
    }
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The first key a port without a node port gets towards its gateway (below the usual node
/// port range; the key is never opened on the node's addresses, only matched on the
/// gateway's uplink).
const INTERNAL_KEYS_FROM: u16 = 20000;

/// What node `me` forwards for NodePort and LoadBalancer Services (pure): every TCP/UDP
/// Service port with a node port, its ready endpoints split into this node's (address and
/// target port) and other nodes' (their `InternalIP`, one entry per endpoint), and the pool
/// addresses this node announces: of the candidates — the Ready nodes, or for
/// `externalTrafficPolicy: Local` the nodes with a ready endpoint — the one
/// [`h8s_net::expose::elect`] picks for the Service.
pub(crate) fn exposed(
    me: &str,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    namespaces: &[Arc<NetNamespace>],
    nodes: &[Arc<Node>],
) -> ServiceRules {
    let node_ips: BTreeMap<&str, Ipv4Addr> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, internal_ip(n)?)))
        .collect();
    let ready_nodes: Vec<&str> = nodes
        .iter()
        .filter(|n| node_ready(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .filter(|n| node_ips.contains_key(n))
        .collect();
    let mut rules = ServiceRules {
        nodes: node_ips.values().copied().collect(),
        ..ServiceRules::default()
    };
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        let lb = h8s_types::network::load_balancer_type(spec.type_.as_deref());
        // `externalIPs` are answered like pool addresses, whatever the type (admission lets
        // only cluster admins set them, and only to pool addresses).
        let external: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if !(lb || spec.type_.as_deref() == Some("NodePort") || !external.is_empty())
            || spec.type_.as_deref() == Some("ExternalName")
            || svc.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let source_ranges: Vec<h8s_net::expose::Ipv4Net> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.trim().parse::<h8s_net::expose::Ipv4Net>().ok())
            .map(|n| n.trunc())
            .collect();
        // A Service whose source ranges are all IPv6 (or unreadable) admits no IPv4 client.
        let closed = source_ranges.is_empty()
            && spec
                .load_balancer_source_ranges
                .as_ref()
                .is_some_and(|r| !r.is_empty());
        let Some(network) = namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .map(|n| n.network())
        else {
            continue;
        };
        let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
        let mine: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.address_type == "IPv4"
                    && s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .map(|s| s.as_ref())
            .collect();
        let ready = |s: &&EndpointSlice| {
            s.endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .flat_map(|e| {
                    let node = e.node_name.clone().unwrap_or_default();
                    e.addresses
                        .iter()
                        .filter_map(move |a| Some((a.parse::<Ipv4Addr>().ok()?, node.clone())))
                })
                .collect::<Vec<_>>()
        };
        // The announcing node, if the Service has pool (or external) addresses.
        let mut ingress: Vec<Ipv4Addr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter(|_| lb)
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        ingress.extend(&external);
        ingress.sort();
        ingress.dedup();
        // Ports without a node port are served by the announcing node's own endpoints only
        // (no hop: another node would not know the key), so only a node with one announces.
        let has_node_ports = spec
            .ports
            .iter()
            .flatten()
            .any(|p| p.node_port.is_some_and(|n| n > 0));
        let announce = !ingress.is_empty() && {
            let mut candidates: Vec<String> = if local_only || !has_node_ports {
                mine.iter()
                    .flat_map(ready)
                    .map(|(_, n)| n)
                    .filter(|n| ready_nodes.contains(&n.as_str()))
                    .collect()
            } else {
                ready_nodes.iter().map(|n| n.to_string()).collect()
            };
            candidates.sort();
            candidates.dedup();
            h8s_net::expose::elect(
                &format!("{ns}/{name}"),
                candidates.iter().map(String::as_str),
            ) == Some(me)
        };
        for p in spec.ports.iter().flatten() {
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => L4::Udp,
                None | Some("TCP") => L4::Tcp,
                _ => continue,
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let node_port = p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0);
            // Without a node port the port is reached only at addresses this node announces.
            if node_port.is_none() && !announce {
                continue;
            }
            let pname = p.name.clone().unwrap_or_default();
            let mut out = ExposedPort {
                service: format!("{ns}/{name}:{port}"),
                network: network.clone(),
                protocol,
                // Without a node port: a key picked below (`internal_keys`).
                node_port: node_port.unwrap_or(0),
                open: node_port.is_some(),
                source_ranges: source_ranges.clone(),
                lb: vec![],
                local: vec![],
                remote: vec![],
                local_only,
            };
            for s in &mine {
                let Some(target) = s
                    .ports
                    .iter()
                    .flatten()
                    .find(|sp| {
                        sp.name.clone().unwrap_or_default() == pname
                            && protocol_of(sp.protocol.as_deref()) == Some(protocol)
                    })
                    .and_then(|sp| sp.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for (ip, node) in ready(s) {
                    if node == me {
                        out.local.push(SocketAddrV4::new(ip, target));
                    } else if let Some(nip) = node_ips.get(node.as_str()) {
                        out.remote.push(*nip);
                    }
                }
            }
            out.local.sort();
            out.local.dedup();
            out.remote.sort();
            if announce && !closed {
                out.lb = ingress.iter().map(|ip| (*ip, port)).collect();
            }
            if announce {
                // Held (so answered, and dropped when nothing forwards) even when closed.
                rules.lb_addrs.extend(&ingress);
            }
            rules.ports.push(out);
        }
    }
    rules.ports.sort();
    h8s_net::expose::internal_keys(&mut rules.ports, INTERNAL_KEYS_FROM);
    rules.nodes.sort();
    rules.nodes.dedup();
    rules.lb_addrs.sort();
    rules.lb_addrs.dedup();
    rules
}

/// The health check node ports node `me` serves (pure): one per LoadBalancer Service with
/// `externalTrafficPolicy: Local` and a `healthCheckNodePort`, with its ready endpoints on
/// this node.
pub(crate) fn health_checks(
    me: &str,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> BTreeMap<u16, crate::lbhealth::Check> {
    let mut out = BTreeMap::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|_| {
                spec.type_.as_deref() == Some("LoadBalancer")
                    && spec.external_traffic_policy.as_deref() == Some("Local")
                    && svc.metadata.deletion_timestamp.is_none()
            })
        else {
            continue;
        };
        let mut local: Vec<&str> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| {
                e.node_name.as_deref() == Some(me)
                    && e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
            })
            .flat_map(|e| e.addresses.iter().map(String::as_str))
            .collect();
        local.sort();
        local.dedup();
        out.insert(
            port,
            crate::lbhealth::Check {
                namespace: ns.to_string(),
                name: name.to_string(),
                local_endpoints: local.len(),
            },
        );
    }
    out
}

fn protocol_of(p: Option<&str>) -> Option<L4> {
    match p {
        None | Some("TCP") => Some(L4::Tcp),
        Some("UDP") => Some(L4::Udp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn ns(name: &str, tenant: &str) -> Arc<NetNamespace> {
        obj(json!({"metadata": {"name": name, "labels": {"tenancy.h8s.io/tenant": tenant}}}))
    }

    fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Arc<Service> {
        obj(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
    }

    fn slice(
        ns: &str,
        svc: &str,
        ports: serde_json::Value,
        eps: serde_json::Value,
    ) -> Arc<EndpointSlice> {
        obj(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-x"),
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps
        }))
    }

    type World = (
        Vec<Arc<NetNamespace>>,
        Vec<Arc<Service>>,
        Vec<Arc<EndpointSlice>>,
    );

    fn world() -> World {
        let nss = vec![ns("a1", "t1"), ns("a2", "t1"), ns("b1", "t2")];
        let svcs = vec![
            svc(
                "a1",
                "web",
                json!({"clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}]}),
            ),
            svc(
                "a2",
                "db",
                json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
            ),
            svc(
                "a2",
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            svc(
                "b1",
                "web",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}],
                                    "sessionAffinity": "ClientIP"}),
            ),
            svc("a1", "pending", json!({"ports": [{"port": 80}]})),
        ];
        let slices = vec![
            slice(
                "a1",
                "web",
                json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}]),
                json!([{"addresses": ["192.168.0.5"], "conditions": {"ready": true}},
                       {"addresses": ["192.168.0.6"], "conditions": {"ready": false}},
                       {"addresses": ["192.168.0.7"]}]),
            ),
            slice(
                "a2",
                "db",
                json!([{"port": 5432}]),
                json!([{"addresses": ["192.168.0.8"], "conditions": {"ready": true}}]),
            ),
            slice(
                "b1",
                "web",
                json!([{"port": 80}]),
                json!([{"addresses": ["192.168.0.5"], "conditions": {"ready": true}}]),
            ),
        ];
        (nss, svcs, slices)
    }

    #[test]
    fn a_network_sees_only_its_namespaces_services() {
        let (nss, svcs, slices) = world();
        let (t, _) = network_table("tenant-t1", &nss, &svcs, &slices, None);
        let names: Vec<String> = t
            .keys()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect();
        assert_eq!(names, ["a1/web", "a2/db", "a2/ext"]);
        let web = &t[&ServiceName {
            namespace: "a1".into(),
            name: "web".into(),
        }];
        assert_eq!(
            web.kind,
            ServiceKind::ClusterIp {
                ip: "10.96.0.10".parse().unwrap()
            }
        );
        // Named targetPort resolved from the slice; only ready (or unknown) endpoints.
        assert_eq!(web.ports[0].name, "http");
        assert_eq!(
            web.ports[0].backends,
            [
                "192.168.0.5:8080".parse::<SocketAddrV4>().unwrap(),
                "192.168.0.7:8080".parse().unwrap()
            ]
        );
        assert_eq!(web.ports[1].port, 9090);
        assert_eq!(web.ports[1].backends.len(), 2);
        let db = &t[&ServiceName {
            namespace: "a2".into(),
            name: "db".into(),
        }];
        assert_eq!(db.kind, ServiceKind::Headless);
        assert_eq!(db.endpoints, ["192.168.0.8".parse::<Ipv4Addr>().unwrap()]);
        let ext = &t[&ServiceName {
            namespace: "a2".into(),
            name: "ext".into(),
        }];
        assert_eq!(
            ext.kind,
            ServiceKind::ExternalName {
                name: "example.com".into()
            }
        );
        let (t2, _) = network_table("tenant-t2", &nss, &svcs, &slices, None);
        assert_eq!(t2.len(), 1);
        assert!(t2.values().all(|e| e.affinity && e.key.namespace == "b1"));
    }

    #[test]
    fn diffs_are_incremental() {
        let (nss, mut svcs, mut slices) = world();
        let t = network_table("tenant-t1", &nss, &svcs, &slices, None);
        let (first, pushed) = diff(None, "tenant-t1", &t).unwrap();
        assert!(first.full);
        assert_eq!(first.generation, 1);
        assert_eq!(first.services.len(), 3);
        assert!(
            diff(Some(&pushed), "tenant-t1", &t).is_none(),
            "nothing changed"
        );
        // An endpoint becomes ready: only that Service is sent.
        slices[0] = slice(
            "a1",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]),
            json!([{"addresses": ["192.168.0.5", "192.168.0.6"], "conditions": {"ready": true}}]),
        );
        // A Service goes away.
        svcs.retain(|s| s.metadata.name.as_deref() != Some("ext"));
        let t2 = network_table("tenant-t1", &nss, &svcs, &slices, None);
        let (u, pushed2) = diff(Some(&pushed), "tenant-t1", &t2).unwrap();
        assert!(!u.full);
        assert_eq!(u.generation, 2);
        assert_eq!(
            u.services
                .iter()
                .map(|e| e.key.name.as_str())
                .collect::<Vec<_>>(),
            ["web"]
        );
        assert_eq!(
            u.removed,
            [ServiceName {
                namespace: "a2".into(),
                name: "ext".into()
            }]
        );
        assert_eq!(pushed2.services.len(), 2);
        // The pod's Network changed (never in practice): a full table again.
        let (u, _) = diff(Some(&pushed2), "tenant-t2", &t2).unwrap();
        assert!(u.full);
    }

    fn node(name: &str, ip: &str, ready: bool) -> Arc<Node> {
        obj(json!({"metadata": {"name": name}, "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
    }

    #[test]
    fn node_ports_and_pool_addresses_split_local_and_remote_endpoints() {
        let nss = vec![ns("a1", "t1"), ns("b1", "t2")];
        let mut a = (*svc(
            "a1",
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080},
                {"name": "sctp", "port": 81, "protocol": "SCTP", "nodePort": 30082}]}),
        ))
        .clone();
        a.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.241"}]}}))
                .unwrap();
        let mut b = (*svc(
            "b1",
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.20",
                   "externalTrafficPolicy": "Local",
                   "ports": [{"port": 80, "nodePort": 30081}]}),
        ))
        .clone();
        b.status = a.status.clone();
        let svcs = vec![
            Arc::new(a),
            Arc::new(b),
            svc(
                "a1",
                "cip",
                json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}),
            ),
        ];
        let slices = vec![
            slice(
                "a1",
                "web",
                json!([{"name": "http", "port": 8080}]),
                json!([{"addresses": ["192.168.0.5"], "nodeName": "n0"},
                       {"addresses": ["192.168.0.6"], "nodeName": "n1", "conditions": {"ready": true}},
                       {"addresses": ["192.168.0.7"], "nodeName": "n1", "conditions": {"ready": false}}]),
            ),
            slice(
                "b1",
                "web",
                json!([{"port": 80}]),
                json!([{"addresses": ["192.168.0.5"], "nodeName": "n1"}]),
            ),
        ];
        let nodes = vec![node("n0", "10.0.0.10", true), node("n1", "10.0.0.11", true)];
        let r0 = exposed("n0", &svcs, &slices, &nss, &nodes);
        let r1 = exposed("n1", &svcs, &slices, &nss, &nodes);
        assert_eq!(r0.nodes.len(), 2);
        // SCTP and ClusterIP-only Services are not exposed.
        assert_eq!(r0.ports.len(), 2, "{r0:?}");
        let a0 = r0.ports.iter().find(|p| p.node_port == 30080).unwrap();
        assert_eq!(a0.network, "tenant-t1");
        assert_eq!(a0.local, ["192.168.0.5:8080".parse().unwrap()]);
        assert_eq!(a0.remote, ["10.0.0.11".parse::<Ipv4Addr>().unwrap()]);
        assert!(!a0.local_only);
        let b0 = r0.ports.iter().find(|p| p.node_port == 30081).unwrap();
        assert!(b0.local_only && b0.local.is_empty());
        // A's address is announced by exactly one node; B's (Local) by n1, where its
        // endpoint runs.
        let a1 = r1.ports.iter().find(|p| p.node_port == 30080).unwrap();
        assert_eq!(a0.lb.is_empty(), !a1.lb.is_empty());
        let b1 = r1.ports.iter().find(|p| p.node_port == 30081).unwrap();
        assert_eq!(b1.lb, [("10.0.0.241".parse().unwrap(), 80)]);
        assert!(b0.lb.is_empty());
        assert_eq!(b1.local, ["192.168.0.5:80".parse().unwrap()]);
        // B's health check port: 200 on n1 (its endpoint), 503 on n0.
        let mut svcs_hc = svcs.clone();
        let mut bh = (*svcs_hc[1]).clone();
        bh.spec.as_mut().unwrap().health_check_node_port = Some(30090);
        svcs_hc[1] = Arc::new(bh);
        assert_eq!(
            health_checks("n1", &svcs_hc, &slices)[&30090].local_endpoints,
            1
        );
        assert_eq!(
            health_checks("n0", &svcs_hc, &slices)[&30090].local_endpoints,
            0
        );
        assert_eq!(health_checks("n0", &svcs_hc, &slices).len(), 1);
        // A NotReady node announces nothing.
        let nodes = vec![
            node("n0", "10.0.0.10", true),
            node("n1", "10.0.0.11", false),
        ];
        let r1 = exposed("n1", &svcs, &slices, &nss, &nodes);
        assert!(r1.lb_addrs.is_empty(), "{r1:?}");
        let r0 = exposed("n0", &svcs, &slices, &nss, &nodes);
        assert_eq!(r0.lb_addrs, ["10.0.0.241".parse::<Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn ports_without_node_ports_external_ips_and_source_ranges() {
        let nss = vec![ns("a1", "t1")];
        // The seeds' NetworkProvider: a pool address, no node port.
        let mut np = (*svc(
            "a1",
            "np",
            json!({"type": "NetworkProvider", "clusterIP": "10.96.0.10",
                   "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
                   "ports": [{"port": 80}]}),
        ))
        .clone();
        np.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.241"}]}}))
                .unwrap();
        // A ClusterIP Service with an external IP.
        let ext = svc(
            "a1",
            "ext",
            json!({"clusterIP": "10.96.0.11", "externalIPs": ["10.0.0.242"],
                   "ports": [{"port": 80}]}),
        );
        // A NodePort Service with an external IP: its node port stays open, the external
        // address is answered too.
        let npext = svc(
            "a1",
            "npext",
            json!({"type": "NodePort", "clusterIP": "10.96.0.12", "externalIPs": ["10.0.0.243"],
                   "ports": [{"port": 80, "nodePort": 20000}]}),
        );
        let svcs = vec![Arc::new(np), ext, npext];
        let slices = vec![
            slice(
                "a1",
                "np",
                json!([{"port": 8080}]),
                json!([{"addresses": ["192.168.0.5"], "nodeName": "n1"}]),
            ),
            slice(
                "a1",
                "ext",
                json!([{"port": 8081}]),
                json!([{"addresses": ["192.168.0.6"], "nodeName": "n1"}]),
            ),
            slice(
                "a1",
                "npext",
                json!([{"port": 8082}]),
                json!([{"addresses": ["192.168.0.7"], "nodeName": "n0"}]),
            ),
        ];
        let nodes = vec![node("n0", "10.0.0.10", true), node("n1", "10.0.0.11", true)];
        let r0 = exposed("n0", &svcs, &slices, &nss, &nodes);
        let r1 = exposed("n1", &svcs, &slices, &nss, &nodes);
        // n0 has no endpoint of np or ext: it announces neither and forwards neither.
        assert!(r0.ports.iter().all(|p| p.open), "{r0:?}");
        assert!(
            !r0.lb_addrs.contains(&"10.0.0.241".parse().unwrap()),
            "{r0:?}"
        );
        let by =
            |r: &ServiceRules, s: &str| r.ports.iter().find(|p| p.service == s).cloned().unwrap();
        let p = by(&r1, "a1/np:80");
        assert!(!p.open);
        assert_eq!(p.lb, [("10.0.0.241".parse().unwrap(), 80)]);
        assert_eq!(p.local, ["192.168.0.5:8080".parse().unwrap()]);
        assert!(p.remote.is_empty());
        assert_eq!(p.source_ranges, ["203.0.113.0/24".parse().unwrap()]);
        let e = by(&r1, "a1/ext:80");
        assert!(!e.open);
        assert_eq!(e.lb, [("10.0.0.242".parse().unwrap(), 80)]);
        assert!(e.source_ranges.is_empty());
        // Keys: distinct, and not the Network's real node port 20000.
        assert_ne!(p.node_port, e.node_port);
        assert!(p.node_port != 20000 && e.node_port != 20000, "{r1:?}");
        // The NodePort Service: open everywhere; its external address is announced by one
        // node (the election over Ready nodes, as for a LoadBalancer).
        let (a, b) = (by(&r0, "a1/npext:80"), by(&r1, "a1/npext:80"));
        assert!(a.open && b.open && a.node_port == 20000);
        assert_eq!(a.lb.is_empty(), !b.lb.is_empty());
        // A Service whose source ranges are all IPv6 admits nobody at its pool address,
        // which stays held (so dropped, not routed elsewhere).
        let mut closed = (*svcs[0]).clone();
        closed.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["2001:db8::/32".into()]);
        let r1 = exposed("n1", &[Arc::new(closed)], &slices, &nss, &nodes);
        assert!(r1.ports[0].lb.is_empty(), "{r1:?}");
        assert_eq!(r1.lb_addrs, ["10.0.0.241".parse::<Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn pods_of_the_network_by_address() {
        let (nss, svcs, slices) = world();
        let net: ApiNetwork = serde_json::from_value(json!({
            "metadata": {"name": "tenant-t1"},
            "spec": {},
            "status": {"allocations": {
                "192.168.0.5": {"node": "n", "namespace": "a1", "pod": "p", "podUID": "u"},
                "192.168.0.9": {"node": "n", "namespace": "b1", "pod": "q", "podUID": "v"}
            }}
        }))
        .unwrap();
        let (_, pods) = network_table("tenant-t1", &nss, &svcs, &slices, Some(&net));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[&"192.168.0.5".parse::<Ipv4Addr>().unwrap()], "a1");
    }
}
