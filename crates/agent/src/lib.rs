//! The h8s node agent (kubelet's role): registers this machine as a Node, keeps its Lease and
//! status fresh, and turns every Pod bound to it into a pod VM through the runtime seam
//! ([`h8s_runtime::PodRuntime`]), reporting status back through `pods/status` exactly as
//! kubelet does.
//!
//! Shape:
//! * [`node`] — the Node object (capacity, nodeInfo, addresses, conditions), registration,
//!   the Lease heartbeat and the status loop; shared by the real agent and hollow nodes.
//! * [`hollow`] — kubemark-style hollow nodes (`h8s agent --hollow N`): register, heartbeat
//!   and report bound pods Running without starting anything. Benchmarks and scale tests only.
//! * `pods` — the dispatcher (one watch of this node's pods) and one worker task per pod
//!   (`worker`): images, the pod VM, init and app containers, restarts with back-off,
//!   probes, hooks, graceful termination; `status` computes the Pod status from what the
//!   runtime reports (pure, unit-tested); `env` resolves env/envFrom.
//!
//! Configuration is a plain struct ([`Config`]) the binary fills from flags: every timer is a
//! field so tests can shorten it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod apirelay;
pub mod hollow;
pub mod netapi;
pub mod node;
pub mod stats;
pub mod stream;

mod env;
mod events;
mod eviction;
#[cfg(test)]
mod fake;
mod imagegc;
mod lbhealth;
mod pods;
mod policy;
pub mod pressure;
mod pulled;
mod pvc;
mod quantity;
mod services;
mod status;
mod volumes;
mod worker;
#[cfg(test)]
mod worker_tests;

pub use imagegc::ImageGcConfig;
pub use pods::PodLookup;
pub use pvc::{LOCAL_DRIVER, LOCAL_PROVISIONER, RBD_DRIVER, RBD_PROVISIONER};

/// Block volumes of this node (see docs/volumes.md).
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Where the node's local volumes live (`<dir>/<id>.raw`).
    pub local_dir: PathBuf,
    /// The most bytes local volumes may be given together; `None`: the directory's free space.
    pub local_capacity: Option<u64>,
    /// Ceph RBD, if this node reaches a cluster.
    pub rbd: Option<RbdConfig>,
    /// How often Released local volumes are deleted and grown claims expanded.
    pub housekeeping_period: Duration,
}

/// How the node reaches Ceph for RBD volumes (QEMU's rbd driver reads the same files).
#[derive(Debug, Clone)]
pub struct RbdConfig {
    /// `ceph.conf` naming the monitors and the keyring.
    pub conf: PathBuf,
    /// The Ceph client (without `client.`).
    pub user: String,
    /// The default pool.
    pub pool: String,
}

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The runtime failed.
    #[error("{what}")]
    Runtime {
        /// What was being done.
        what: String,
        /// The runtime's error.
        #[source]
        source: h8s_runtime::Error,
    },
    /// The pod network failed.
    #[error("{what}")]
    Network {
        /// What was being done.
        what: String,
        /// The fabric's error.
        #[source]
        source: h8s_runtime::network::NetError,
    },
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

/// Timers of the node's heartbeat.
#[derive(Debug, Clone)]
pub struct NodeTimers {
    /// How often the Lease in `kube-node-lease` is renewed (kubelet: 10 s).
    pub lease_renew_interval: Duration,
    /// The Lease's `leaseDurationSeconds` (kubelet: 40).
    pub lease_duration_secs: i32,
    /// How often the Node's status is written (kubelet's `nodeStatusUpdateFrequency`, 10 s).
    pub node_status_update_frequency: Duration,
}

impl Default for NodeTimers {
    fn default() -> Self {
        NodeTimers {
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_secs: 40,
            node_status_update_frequency: Duration::from_secs(10),
        }
    }
}

/// Timers of the pod workers.
#[derive(Debug, Clone)]
pub struct PodTimers {
    /// How often a worker re-reads its pod VM's state (kubelet's PLEG relist, 1 s).
    pub sync_period: Duration,
    /// First delay before restarting a crashed container (kubelet: 10 s), doubled per crash.
    pub backoff_initial: Duration,
    /// Largest restart delay (kubelet: 5 min).
    pub backoff_max: Duration,
    /// First delay before pulling an image again after a failed pull (kubelet: 10 s).
    pub image_backoff_initial: Duration,
    /// Largest image pull delay (kubelet: 5 min).
    pub image_backoff_max: Duration,
    /// How often ConfigMap and Secret volumes are refreshed in running pods (kubelet's sync
    /// period, 1 min).
    pub volume_refresh: Duration,
    /// How often pods' local storage is measured against their limits (kubelet's eviction
    /// monitoring interval, 10 s).
    pub eviction_monitoring_period: Duration,
    /// How often the Service feed checks every pod VM's Service table without being woken by a
    /// change (2 s).
    pub service_sync_period: Duration,
    /// How long a pod VM that refused its Service table is left alone before the whole table
    /// is pushed again (30 s).
    pub service_retry_pause: Duration,
    /// How often the node's NodePort/LoadBalancer forwarding is rewritten even when unchanged
    /// (10 s).
    pub expose_sync_period: Duration,
}

impl Default for PodTimers {
    fn default() -> Self {
        PodTimers {
            sync_period: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            image_backoff_initial: Duration::from_secs(10),
            image_backoff_max: Duration::from_secs(300),
            volume_refresh: Duration::from_secs(60),
            eviction_monitoring_period: Duration::from_secs(10),
            service_sync_period: Duration::from_secs(2),
            service_retry_pause: Duration::from_secs(30),
            expose_sync_period: Duration::from_secs(10),
        }
    }
}

/// The node-local default pod network.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// The fabric of this node.
    pub network: h8s_runtime::network::PodNetwork,
    /// The Network's name (created if absent).
    pub name: String,
    /// Its subnet, e.g. `10.88.0.0/16`.
    pub cidr: String,
    /// Its VXLAN VNI when created (0: the lowest free one).
    pub vni: u32,
    /// Pods join their namespace's Network from the API (cluster-wide segments and IPAM,
    /// see [`netapi`]) instead of the node-local Network `name`.
    pub from_api: bool,
    /// The API server relay's listener (with [`PodNetworkConfig::from_api`]); its port is
    /// the fabric's [`h8s_net::NodeConfig::api_relay_port`]. See `apirelay`.
    pub api_relay: Option<Arc<std::net::TcpListener>>,
    /// This is the API server's node: its host joins the system Network while that has
    /// pods (with [`PodNetworkConfig::from_api`]; see `netapi`).
    pub system_host: bool,
}

/// The streaming server's listening address and TLS.
#[derive(Clone)]
pub struct Streaming {
    /// Address to listen on; its port is [`Config::streaming_port`].
    pub address: IpAddr,
    /// TLS (see [`stream::server_tls`]).
    pub tls: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Everything the agent is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// The node's address (`InternalIP`), if known.
    pub node_ip: Option<IpAddr>,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    /// Most pods this node runs (`pods` capacity).
    pub max_pods: u32,
    /// CPU kept back from pods, millicores.
    pub reserved_cpu_millis: u64,
    /// Memory kept back from pods, bytes.
    pub reserved_memory_bytes: u64,
    /// Where the node keeps its data (its filesystem is the ephemeral-storage capacity).
    pub data_dir: PathBuf,
    /// The port of the agent's streaming server (`daemonEndpoints.kubeletEndpoint.Port`);
    /// with [`Config::streaming`] the port actually bound replaces it (0 picks a free one).
    pub streaming_port: u16,
    /// The streaming server (logs, exec, attach, port-forward for the API server): where to
    /// listen and its TLS (a serving certificate the cluster CA signed, client certificates
    /// required). `None` runs no streaming server.
    pub streaming: Option<Streaming>,
    /// Heartbeat timers.
    pub node_timers: NodeTimers,
    /// Pod worker timers.
    pub pod_timers: PodTimers,
    /// How many pod VMs may be booting at once.
    pub max_parallel_starts: usize,
    /// Grace period of pods whose spec has none.
    pub default_grace: Duration,
    /// The pod network; `None` runs pods without a network interface.
    pub network: Option<PodNetworkConfig>,
    /// The cluster's DNS domain for pods' search paths.
    pub cluster_domain: String,
    /// Marks this agent's pod VMs in the runtime's state (a label): the agent adopts or
    /// removes only VMs carrying its owner, so agents of other clusters sharing the state
    /// directory are left alone. Defaults to the node name.
    pub owner: String,
    /// How often the node's and pods' usage is sampled for `/stats/summary` (cAdvisor's
    /// housekeeping interval, 10 s); CPU rates cover one interval.
    pub stats_interval: Duration,
    /// Block volumes.
    pub volumes: VolumeConfig,
    /// Image garbage collection.
    pub image_gc: ImageGcConfig,
    /// Node-pressure eviction thresholds.
    pub eviction: pressure::EvictionConfig,
}

impl Config {
    /// Defaults for a node named `node_name` keeping data in `data_dir`.
    pub fn new(node_name: impl Into<String>, data_dir: PathBuf) -> Config {
        let node_name = node_name.into();
        Config {
            owner: node_name.clone(),
            node_name,
            node_ip: None,
            labels: BTreeMap::new(),
            max_pods: 110,
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 256 << 20,
            streaming_port: 10250,
            streaming: None,
            node_timers: NodeTimers::default(),
            pod_timers: PodTimers::default(),
            max_parallel_starts: 2,
            default_grace: Duration::from_secs(30),
            network: None,
            cluster_domain: "cluster.local".into(),
            stats_interval: Duration::from_secs(10),
            volumes: VolumeConfig {
                local_dir: data_dir.join("volumes"),
                local_capacity: None,
                rbd: None,
                housekeeping_period: Duration::from_secs(10),
            },
            image_gc: ImageGcConfig::new(data_dir.join("images")),
            eviction: pressure::EvictionConfig::parse(pressure::DEFAULT_HARD, "", "", "", |_| {
                Err(String::new())
            })
            .expect("the default thresholds parse"),
            data_dir,
        }
    }
}

/// A running agent; dropping it does not stop it, [`Agent::shutdown`] does.
pub struct Agent {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    streaming: Option<tokio::task::JoinHandle<()>>,
    lookup: PodLookup,
}

impl Agent {
    /// Registers the node and starts the heartbeat and the pod workers.
    pub async fn start(
        client: kube::Client,
        runtime: Arc<dyn h8s_runtime::PodRuntime>,
        mut cfg: Config,
    ) -> Result<Agent> {
        let lookup = PodLookup::new(runtime.clone());
        let mut tasks = Vec::new();
        let mut streaming = None;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if let Some(st) = &cfg.streaming {
            let addr = std::net::SocketAddr::new(st.address, cfg.streaming_port);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Error::Config(format!("streaming server cannot listen on {addr}: {e}"))
            })?;
            if let Ok(a) = listener.local_addr() {
                cfg.streaming_port = a.port();
            }
            tracing::info!(port = cfg.streaming_port, "streaming server listening");
            let backend = Arc::new(stream::LookupBackend::new(lookup.clone()));
            let mut serve_cfg = stream::ServeConfig::new(st.tls.clone());
            let stats = Arc::new(stats::Stats::new(
                &cfg.node_name,
                &cfg.owner,
                runtime.clone(),
            ));
            tasks.push(tokio::spawn(
                stats.clone().run(cfg.stats_interval, stopped.clone()),
            ));
            serve_cfg.stats = Some(stats);
            streaming = Some(tokio::spawn(async move {
                if let Err(e) = stream::serve(listener, serve_cfg, backend).await {
                    tracing::error!(error = %e, "streaming server stopped");
                }
            }));
        }
        let info = runtime.info();
        // Fresh VM templates per agent run (docs/runtime.md, "VM templates").
        runtime.rotate_templates();
        let facts = node::NodeFacts::probe(&cfg, &info);
        node::ensure_runtime_class(&client, &info).await;
        let node = node::build_node(&cfg.node_name, &cfg, &facts);
        node::register(&client, &node).await?;
        tracing::info!(node = %cfg.node_name, accel = %info.accel, "node registered");
        tasks.push(tokio::spawn(node::heartbeat(
            client.clone(),
            vec![cfg.node_name.clone()],
            cfg.node_timers.clone(),
            stopped.clone(),
        )));
        let flags = Arc::new(pressure::PressureFlags::default());
        tasks.push(tokio::spawn(node::status_loop(
            client.clone(),
            vec![(cfg.node_name.clone(), node)],
            cfg.node_timers.clone(),
            Some(flags.clone()),
            stopped.clone(),
        )));
        cfg.image_gc.validate().map_err(Error::Config)?;
        let gc = imagegc::Gc::new(
            cfg.image_gc.clone(),
            runtime.clone(),
            events::Recorder::new(client.clone(), cfg.node_name.clone()),
            cfg.node_name.clone(),
        );
        tasks.push(tokio::spawn(gc.run(stopped.clone())));
        let dispatcher = pods::Dispatcher::new(client, runtime, cfg, lookup.clone()).await?;
        tasks.push(tokio::spawn(pressure::run(
            dispatcher.ctx(),
            flags,
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(dispatcher.run(stopped)));
        Ok(Agent {
            stop,
            tasks,
            streaming,
            lookup,
        })
    }

    /// How the streaming server finds a pod's VM and containers.
    pub fn lookup(&self) -> PodLookup {
        self.lookup.clone()
    }

    /// Stops the heartbeat and the workers. Pod VMs keep running (a restarted agent takes
    /// them over).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.streaming {
            t.abort();
        }
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                tracing::debug!("an agent task did not stop in time");
                t.abort();
            }
        }
    }
}
