//! The pod dispatcher: one watch of the pods bound to this node (field selector
//! `spec.nodeName=<node>`), one worker task per pod (by uid), and the clean-up of pod VMs
//! whose pods no longer exist (deleted while the agent was down). Plus [`PodLookup`], how
//! the streaming server finds a pod's VM and containers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use h8s_runtime::{PodRuntime, SandboxStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::events::Recorder;
use crate::{Config, Error, Result};

/// Sandbox labels the agent sets (CRI's names).
pub(crate) const LABEL_NODE: &str = "h8s.io/node";
pub(crate) const LABEL_OWNER: &str = "h8s.io/agent";
pub(crate) const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub(crate) const LABEL_NAME: &str = "io.kubernetes.pod.name";
pub(crate) const LABEL_UID: &str = "io.kubernetes.pod.uid";

/// One container of a pod as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEntry {
    /// The runtime's name of the newest instance (`<name>.<restart count>`).
    pub current: String,
    /// The instance before it, kept for `kubectl logs --previous`.
    pub previous: Option<String>,
}

/// A pod as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    /// The pod's uid.
    pub uid: String,
    /// The runtime's sandbox (pod VM) id, once started.
    pub sandbox: Option<String>,
    /// Its containers (init and app) by Kubernetes name.
    pub containers: BTreeMap<String, ContainerEntry>,
}

/// How the streaming server (logs, exec, attach, port-forward) finds a pod's VM and
/// containers: by namespace, pod name and container name. Cheap to clone.
#[derive(Clone)]
pub struct PodLookup {
    runtime: Arc<dyn PodRuntime>,
    pods: Arc<RwLock<HashMap<(String, String), PodEntry>>>,
}

impl PodLookup {
    pub(crate) fn new(runtime: Arc<dyn PodRuntime>) -> PodLookup {
        PodLookup {
            runtime,
            pods: Default::default(),
        }
    }

    /// The runtime the pods run on.
    pub fn runtime(&self) -> Arc<dyn PodRuntime> {
        self.runtime.clone()
    }

    /// The pod `namespace/name` on this node.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        self.pods
            .read()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The sandbox id and the runtime's name of the newest instance of `container` (the
    /// pod's first container when `None`).
    pub fn container(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Option<(String, String)> {
        let p = self.pod(namespace, name)?;
        let sandbox = p.sandbox.clone()?;
        let entry = match container {
            Some(c) => p.containers.get(c)?,
            None => p.containers.values().next()?,
        };
        Some((sandbox, entry.current.clone()))
    }

    /// The sandbox id and the runtime's name of the previous instance of `container`.
    pub fn previous_container(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> Option<(String, String)> {
        let p = self.pod(namespace, name)?;
        Some((
            p.sandbox.clone()?,
            p.containers.get(container)?.previous.clone()?,
        ))
    }

    pub(crate) fn set(&self, namespace: &str, name: &str, entry: PodEntry) {
        if let Ok(mut m) = self.pods.write() {
            m.insert((namespace.to_string(), name.to_string()), entry);
        }
    }

    pub(crate) fn remove(&self, namespace: &str, name: &str, uid: &str) {
        if let Ok(mut m) = self.pods.write() {
            let key = (namespace.to_string(), name.to_string());
            if m.get(&key).is_some_and(|e| e.uid == uid) {
                m.remove(&key);
            }
        }
    }
}

/// What every worker shares.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub runtime: Arc<dyn PodRuntime>,
    pub cfg: Config,
    pub lookup: PodLookup,
    pub recorder: Recorder,
    /// Pod VMs booting at once.
    pub starts: Semaphore,
    pub info: h8s_runtime::RuntimeInfo,
    pub host_ip: Option<String>,
    pub node_cpus: u32,
    pub node_memory_mib: u32,
    /// Pod networks from the API (when [`crate::PodNetworkConfig::from_api`]).
    pub api_networks: Option<Arc<crate::netapi::ApiNetworks>>,
    /// The in-pod Service proxies' feed (with [`Ctx::api_networks`]).
    pub services: Option<Arc<crate::services::ServiceFeed>>,
    /// NetworkPolicy enforcement (with [`Ctx::api_networks`]).
    pub policy: Option<Arc<crate::policy::PolicyAgent>>,
    /// Node-pressure evictions the eviction manager asked for, by pod uid: the message and
    /// the grace period; the pod's worker carries each out and removes it.
    pub evictions: std::sync::Mutex<HashMap<String, (String, std::time::Duration)>>,
    /// Which credentials pulled each image (ensure-secret-pulled-images).
    pub pulled: crate::pulled::PulledImages,
}

/// The sandbox name of a pod: `<name>-<uid prefix>` in the runtime's alphabet.
pub(crate) fn sandbox_name(name: &str, uid: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let uid: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("{}-{uid}", clean.trim_matches('-'))
}

pub(crate) struct Dispatcher {
    ctx: Arc<Ctx>,
}

impl Dispatcher {
    pub async fn new(
        client: kube::Client,
        runtime: Arc<dyn PodRuntime>,
        cfg: Config,
        lookup: PodLookup,
    ) -> Result<Dispatcher> {
        let mut api_networks = None;
        if let Some(n) = cfg.network.as_ref().filter(|n| n.from_api) {
            api_networks = Some(crate::netapi::ApiNetworks::start(
                client.clone(),
                n.network.fabric().clone(),
                &cfg.node_name,
                n.system_host,
            ));
        }
        if let Some(n) = cfg.network.as_ref().filter(|n| !n.from_api) {
            let subnet = h8s_net::Subnet::new("pods", &n.cidr, None)
                .map_err(|e| Error::Config(format!("pod CIDR {:?}: {e}", n.cidr)))?;
            let mtu = n.network.fabric().node().underlay_mtu - h8s_net::VXLAN_OVERHEAD;
            let net = h8s_net::Network {
                name: n.name.clone(),
                tenant: "h8s-system".into(),
                vni: n.vni,
                subnets: vec![subnet],
                mtu,
                dns: vec![],
            };
            n.network
                .ensure(net)
                .await
                .map_err(|source| Error::Network {
                    what: format!("creating the pod network {}", n.name),
                    source,
                })?;
        }
        let services = api_networks.as_ref().map(|_| {
            crate::services::ServiceFeed::start(
                client.clone(),
                runtime.clone(),
                &cfg.owner,
                cfg.network.as_ref().is_some_and(|n| n.api_relay.is_some()),
                cfg.network
                    .as_ref()
                    .map(|n| (n.network.fabric().clone(), cfg.node_name.clone())),
                cfg.pod_timers.clone(),
            )
        });
        let policy =
            cfg.network.as_ref().filter(|n| n.from_api).map(|n| {
                crate::policy::PolicyAgent::start(client.clone(), n.network.fabric().clone())
            });
        let info = runtime.info();
        let present: Vec<String> = runtime
            .list_images()
            .map(|l| l.iter().map(|i| i.id.to_string()).collect())
            .unwrap_or_default();
        let pulled = crate::pulled::PulledImages::load(
            cfg.data_dir.join("node").join("pulled-images.json"),
            &present,
        );
        let recorder = Recorder::new(client.clone(), cfg.node_name.clone());
        let node_cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let node_memory_mib = (crate::node::meminfo("MemTotal").unwrap_or(1 << 30) >> 20) as u32;
        Ok(Dispatcher {
            ctx: Arc::new(Ctx {
                client,
                runtime,
                host_ip: cfg.node_ip.map(|i| i.to_string()),
                starts: Semaphore::new(cfg.max_parallel_starts.max(1)),
                lookup,
                recorder,
                info,
                cfg,
                node_cpus,
                node_memory_mib,
                api_networks,
                services,
                policy,
                evictions: Default::default(),
                pulled,
            }),
        })
    }

    /// The shared context (for the eviction manager).
    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// This node's pod VMs by pod uid.
    async fn sandboxes(&self) -> HashMap<String, SandboxStatus> {
        match self.ctx.runtime.list_sandboxes().await {
            Ok(list) => list
                .into_iter()
                .filter(|s| s.config.labels.get(LABEL_OWNER) == Some(&self.ctx.cfg.owner))
                .filter_map(|s| Some((s.config.labels.get(LABEL_UID)?.clone(), s)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing pod VMs failed");
                HashMap::new()
            }
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let ctx = self.ctx.clone();
        if let Some(nets) = &ctx.api_networks {
            tokio::spawn(nets.clone().run(stop.clone()));
        }
        if let Some(feed) = &ctx.services {
            tokio::spawn(feed.clone().run(stop.clone()));
        }
        if let Some(policy) = &ctx.policy {
            tokio::spawn(policy.clone().run(stop.clone()));
        }
        if let Some(l) = ctx
            .cfg
            .network
            .as_ref()
            .filter(|n| n.from_api)
            .and_then(|n| n.api_relay.as_ref())
        {
            match l
                .try_clone()
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    Ok(l)
                })
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(l) => {
                    tokio::spawn(crate::apirelay::serve(l, ctx.client.clone(), stop.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "the API relay cannot listen"),
            }
        }
        {
            // Local volumes' housekeeping (Delete reclaim, offline expansion).
            let ctx = ctx.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    crate::pvc::housekeeping(&ctx).await;
                    tokio::select! {
                        _ = tokio::time::sleep(ctx.cfg.volumes.housekeeping_period) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let pods: Api<Pod> = Api::all(ctx.client.clone());
        let selector = format!("spec.nodeName={}", ctx.cfg.node_name);
        let stream = watcher(pods, watcher::Config::default().fields(&selector));
        let mut stream = std::pin::pin!(stream);
        let mut adopt = self.sandboxes().await;
        tracing::info!(vms = adopt.len(), "pod VMs found at start");
        let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut listing: Option<HashSet<String>> = None;
        let mut first_sync = true;
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                Some(uid) = done_rx.recv() => {
                    workers.remove(&uid);
                    continue;
                }
                _ = stop.changed() => {
                    // Workers see the stop through their own receivers.
                    return;
                }
            };
            let pod = match ev {
                Some(Ok(watcher::Event::Init)) => {
                    listing = Some(HashSet::new());
                    continue;
                }
                Some(Ok(watcher::Event::InitApply(p))) => {
                    if let (Some(l), Some(uid)) = (listing.as_mut(), p.metadata.uid.clone()) {
                        l.insert(uid);
                    }
                    p
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let seen = listing.take().unwrap_or_default();
                    // Pods gone while the watch was down.
                    for (uid, tx) in &workers {
                        if !seen.contains(uid) {
                            let _ = tx.send(None);
                        }
                    }
                    if first_sync {
                        first_sync = false;
                        // VMs of pods deleted while the agent was down.
                        for (uid, sb) in adopt.drain() {
                            if !seen.contains(&uid) && !workers.contains_key(&uid) {
                                let ctx = ctx.clone();
                                tokio::spawn(async move { remove_orphan(&ctx, &sb).await });
                            }
                        }
                    }
                    continue;
                }
                Some(Ok(watcher::Event::Apply(p))) => p,
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        let _ = tx.send(None);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => return,
            };
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let pod = Arc::new(pod);
            if let Some(tx) = workers.get(&uid) {
                let _ = tx.send(Some(pod));
                continue;
            }
            let (tx, rx) = watch::channel(Some(pod));
            workers.insert(uid.clone(), tx);
            let adopted = adopt.remove(&uid);
            let (ctx, done, stop) = (ctx.clone(), done_tx.clone(), stop.clone());
            tokio::spawn(async move {
                crate::worker::run(ctx, rx, adopted, stop).await;
                let _ = done.send(uid);
            });
        }
    }
}

/// Stops and removes a pod VM whose pod no longer exists, and releases its address.
pub(crate) async fn remove_orphan(ctx: &Ctx, sb: &SandboxStatus) {
    let name = &sb.config.name;
    tracing::info!(sandbox = %sb.id, %name, "removing the VM of a pod that no longer exists");
    if let Err(e) = ctx.runtime.stop_sandbox(&sb.id, Duration::ZERO).await {
        tracing::warn!(sandbox = %sb.id, error = %e, "stopping orphan VM");
    }
    // The address goes before the VM's record: once the record is gone, nothing of the
    // pod is left (an observer waiting for the record sees the address released too).
    if let Some(nets) = &ctx.api_networks {
        let uid = sb.config.labels.get(LABEL_UID).cloned().unwrap_or_default();
        if let Err(e) = nets.release(name, &uid).await {
            tracing::warn!(sandbox = %sb.id, error = %crate::worker::error_chain(&e), "releasing orphan's address");
        }
    } else if let Some(n) = &ctx.cfg.network {
        if let Err(e) = n.network.detach_pod(name).await {
            tracing::warn!(sandbox = %sb.id, error = %e, "releasing orphan's address");
        }
    }
    if let Err(e) = ctx.runtime.remove_sandbox(&sb.id, true).await {
        tracing::warn!(sandbox = %sb.id, error = %e, "removing orphan VM");
    }
}
