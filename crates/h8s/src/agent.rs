//! `h8s agent`: the node agent (kubelet's role) for this machine, or `--hollow N` fake nodes
//! for scale tests; and the in-process agent `h8s server` starts for its own machine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use h8s_runtime::{Runtime, RuntimeConfig, ShimCommand, VmSettings};

/// A duration flag: `10s`, `500ms`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 5m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A size flag: `256Mi`, `1Gi`, `512M`, bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 256Mi"))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" | "K" | "k" => 1 << 10,
        "Mi" | "M" => 1 << 20,
        "Gi" | "G" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    Ok(n * mult)
}

/// The agent's settings shared by `h8s agent` and the agent inside `h8s server`.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentOpts {
    #[command(flatten)]
    pub jail: crate::jail::JailArgs,
    /// Refuse to start pods whose VM would run under TCG (no hardware virtualization here):
    /// under TCG QEMU is no security boundary; such pods fail with that reason.
    #[arg(long = "require-hardware-virt")]
    pub require_hardware_virt: bool,
    /// Warm clones kept per VM template shape in use: VMs restored ahead of their pods that
    /// have run one container, so a pod start finds its guest code translated (0: none).
    #[arg(long = "warm-pool", env = "H8S_WARM_POOL",
          default_value_t = h8s_runtime::DEFAULT_WARM_POOL)]
    pub warm_pool: u32,
    /// The Node's name (default: this host's name).
    #[arg(long = "node-name", env = "H8S_NODE_NAME")]
    pub node_name: Option<String>,
    /// The node's address (InternalIP; default: the default route's source address).
    #[arg(long = "node-ip")]
    pub node_ip: Option<IpAddr>,
    /// Extra Node labels, `key=value`, repeatable.
    #[arg(long = "node-labels", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Pod VM runtime state directory (default: $H8S_ROOT, /run/h8s as root).
    #[arg(long = "root", env = "H8S_ROOT")]
    pub root: Option<PathBuf>,
    /// Most pods on this node.
    #[arg(long = "max-pods", default_value_t = 110)]
    pub max_pods: u32,
    /// CPU kept back from pods, millicores.
    #[arg(long = "reserved-cpu", default_value_t = 0)]
    pub reserved_cpu: u64,
    /// Memory kept back from pods.
    #[arg(long = "reserved-memory", default_value = "256Mi", value_parser = parse_bytes)]
    pub reserved_memory: u64,
    /// Lease renewal interval.
    #[arg(long = "node-lease-renew-interval", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew: Duration,
    /// The Lease's duration, seconds.
    #[arg(long = "node-lease-duration-seconds", default_value_t = 40)]
    pub lease_duration: i32,
    /// How often the Node status is written.
    #[arg(long = "node-status-update-frequency", default_value = "10s", value_parser = parse_duration)]
    pub status_frequency: Duration,
    /// How often a pod worker re-reads its VM's state.
    #[arg(long = "pod-sync-period", default_value = "1s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// How often the Service feed checks every pod VM's Service table without a change.
    #[arg(long = "service-sync-period", default_value = "2s", value_parser = parse_duration)]
    pub service_sync_period: Duration,
    /// How long a pod VM that refused its Service table is left alone before a retry.
    #[arg(long = "service-retry-pause", default_value = "30s", value_parser = parse_duration)]
    pub service_retry_pause: Duration,
    /// How often the node's NodePort/LoadBalancer forwarding is rewritten even when unchanged.
    #[arg(long = "expose-sync-period", default_value = "10s", value_parser = parse_duration)]
    pub expose_sync_period: Duration,
    /// First restart delay of a crashing container (doubled per crash).
    #[arg(long = "restart-backoff", default_value = "10s", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Largest restart delay.
    #[arg(long = "restart-backoff-max", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// First delay before retrying a failed image pull (doubled per failure).
    #[arg(long = "image-pull-backoff", default_value = "10s", value_parser = parse_duration)]
    pub image_backoff: Duration,
    /// Largest image pull retry delay.
    #[arg(long = "image-pull-backoff-max", default_value = "5m", value_parser = parse_duration)]
    pub image_backoff_max: Duration,
    /// How often ConfigMap and Secret volumes of running pods are refreshed.
    #[arg(long = "volume-refresh-period", default_value = "1m", value_parser = parse_duration)]
    pub volume_refresh: Duration,
    /// How often pods' local storage (writable layers, emptyDirs) is measured against their
    /// ephemeral-storage limits and emptyDir sizeLimits (kubelet's eviction monitoring).
    #[arg(long = "eviction-monitoring-period", default_value = "10s", value_parser = parse_duration)]
    pub eviction_monitoring_period: Duration,
    /// Hard eviction thresholds, kubelet's syntax: `memory.available<100Mi,nodefs.available<10%`
    /// (signals memory.available, nodefs.available and nodefs.inodesFree — the data dir's
    /// filesystem —, imagefs.available and imagefs.inodesFree — the image store's —,
    /// pid.available); met at once, pods killed without grace.
    #[arg(long = "eviction-hard", default_value = h8s_agent::pressure::DEFAULT_HARD)]
    pub eviction_hard: String,
    /// Soft eviction thresholds (same syntax), met after their grace period.
    #[arg(long = "eviction-soft", default_value = "")]
    pub eviction_soft: String,
    /// Grace period of each soft threshold: `memory.available=1m30s,…`.
    #[arg(long = "eviction-soft-grace-period", default_value = "")]
    pub eviction_soft_grace: String,
    /// What to reclaim beyond a met threshold: `memory.available=0Mi,nodefs.available=500Mi`.
    #[arg(long = "eviction-minimum-reclaim", default_value = "")]
    pub eviction_min_reclaim: String,
    /// How long MemoryPressure/DiskPressure stay after the last met threshold.
    #[arg(long = "eviction-pressure-transition-period", default_value = "5m", value_parser = parse_duration)]
    pub eviction_transition: Duration,
    /// Grace period of pods evicted for a soft threshold (hard: none).
    #[arg(long = "eviction-max-pod-grace-period", default_value = "0s", value_parser = parse_duration)]
    pub eviction_max_pod_grace: Duration,
    /// Usage percent of the image store's filesystem at which unused images are garbage
    /// collected (100 disables image GC).
    #[arg(long = "image-gc-high-threshold", default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high: u8,
    /// Usage percent image GC frees down to (below the high threshold).
    #[arg(long = "image-gc-low-threshold", default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low: u8,
    /// Images detected more recently than this are never garbage collected.
    #[arg(long = "minimum-image-ttl-duration", default_value = "2m", value_parser = parse_duration)]
    pub image_min_age: Duration,
    /// How often the image store's filesystem usage is checked for image GC.
    #[arg(long = "image-gc-period", default_value = "5m", value_parser = parse_duration)]
    pub image_gc_period: Duration,
    /// How many pod VMs may boot at once.
    #[arg(long = "max-parallel-starts", default_value_t = 2)]
    pub max_parallel_starts: usize,
    /// The port of the agent's streaming server (logs, exec, port-forward; 0 picks one).
    #[arg(long = "streaming-port", default_value_t = 10250)]
    pub streaming_port: u16,
    /// The address the streaming server listens on.
    #[arg(long = "streaming-address", default_value = "0.0.0.0")]
    pub streaming_address: IpAddr,
    /// `api`: each pod joins its namespace's Network from the API (its `spec.network`, else
    /// its tenant's default Network), with cluster-wide segments and addresses; another name:
    /// a node-local Network of that name (created if absent, `--pod-cidr`); `none`: pods
    /// without a network.
    #[arg(long = "pod-network", default_value = "api")]
    pub pod_network: String,
    /// The node port pods' connections to the API server (`kubernetes.default.svc`) are
    /// relayed on from their Networks' gateways, with `--pod-network api` (0 picks a free
    /// one). Only gateway uplinks may connect to it.
    #[arg(long = "api-relay-port", default_value_t = 0)]
    pub api_relay_port: u16,
    /// This machine runs the API server: while the cluster's system Network has pods, the
    /// host gets an address on it (device `h8y<vni>`) so the server reaches them (webhooks
    /// and aggregated API servers run as pods in kube-system). Always on for `h8s server`'s
    /// own agent; give it to the agent of a server started with `--disable-agent`.
    #[arg(long = "system-network-host")]
    pub system_network_host: bool,
    /// The pod Network's subnet.
    #[arg(long = "pod-cidr", default_value = "10.88.0.0/16")]
    pub pod_cidr: String,
    /// The pod Network's segment id (VXLAN VNI) when the agent creates it (0: the lowest
    /// free one).
    #[arg(long = "pod-network-vni", default_value_t = 0)]
    pub pod_network_vni: u32,
    /// Who owns this node's pod VMs in the runtime's state directory (default: the node
    /// name); agents of different clusters sharing one state directory must differ.
    #[arg(long = "runtime-owner")]
    pub owner: Option<String>,
    /// How often node and pod usage is sampled for `kubectl top` (CPU rates cover one
    /// interval).
    #[arg(long = "stats-interval", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// Where this node's local volumes live (default DATA_DIR/volumes).
    #[arg(long = "volume-dir", env = "H8S_VOLUME_DIR")]
    pub volume_dir: Option<PathBuf>,
    /// The most bytes local volumes may be given together (default: the directory's free space).
    #[arg(long = "volume-capacity", value_parser = parse_bytes)]
    pub volume_capacity: Option<u64>,
    /// How often Released local volumes are deleted and grown claims expanded.
    #[arg(long = "volume-housekeeping-period", default_value = "10s", value_parser = parse_duration)]
    pub volume_housekeeping: Duration,
    /// Ceph configuration (monitors, keyring) for RBD volumes; none: no RBD on this node.
    #[arg(long = "rbd-ceph-conf", env = "H8S_RBD_CEPH_CONF")]
    pub rbd_conf: Option<PathBuf>,
    /// The Ceph client for RBD volumes.
    #[arg(long = "rbd-user", default_value = "admin")]
    pub rbd_user: String,
    /// The default RBD pool.
    #[arg(long = "rbd-pool", default_value = "h8s")]
    pub rbd_pool: String,
    /// Largest size of a container's log file before it is rotated (kubelet's
    /// containerLogMaxSize); also caps the pod VM's console log.
    #[arg(long = "container-log-max-size", default_value = "10Mi", value_parser = parse_bytes)]
    pub container_log_max_size: u64,
    /// Most log files kept per container, the current one included (kubelet's
    /// containerLogMaxFiles).
    #[arg(long = "container-log-max-files", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    pub container_log_max_files: u32,
}

impl AgentOpts {
    fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(host_name)
    }

    /// The agent's configuration.
    pub fn config(&self, data_dir: &Path) -> anyhow::Result<h8s_agent::Config> {
        let mut cfg = h8s_agent::Config::new(self.node_name(), data_dir.to_path_buf());
        cfg.node_ip = self.node_ip.or_else(default_route_ip);
        for l in &self.node_labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--node-labels {l:?} is not key=value"))?;
            cfg.labels.insert(k.to_string(), v.to_string());
        }
        cfg.max_pods = self.max_pods;
        cfg.reserved_cpu_millis = self.reserved_cpu;
        cfg.reserved_memory_bytes = self.reserved_memory;
        cfg.streaming_port = self.streaming_port;
        cfg.node_timers = h8s_agent::NodeTimers {
            lease_renew_interval: self.lease_renew,
            lease_duration_secs: self.lease_duration,
            node_status_update_frequency: self.status_frequency,
        };
        cfg.pod_timers = h8s_agent::PodTimers {
            sync_period: self.sync_period,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            image_backoff_initial: self.image_backoff,
            image_backoff_max: self.image_backoff_max,
            volume_refresh: self.volume_refresh,
            eviction_monitoring_period: self.eviction_monitoring_period,
            service_sync_period: self.service_sync_period,
            service_retry_pause: self.service_retry_pause,
            expose_sync_period: self.expose_sync_period,
        };
        cfg.max_parallel_starts = self.max_parallel_starts;
        cfg.image_gc = h8s_agent::ImageGcConfig {
            high_threshold_percent: self.image_gc_high,
            low_threshold_percent: self.image_gc_low,
            minimum_age: self.image_min_age,
            period: self.image_gc_period,
            images_dir: data_dir.join("images"),
        };
        cfg.image_gc.validate().map_err(|e| anyhow::anyhow!(e))?;
        let mut eviction = h8s_agent::pressure::EvictionConfig::parse(
            &self.eviction_hard,
            &self.eviction_soft,
            &self.eviction_soft_grace,
            &self.eviction_min_reclaim,
            parse_duration,
        )
        .map_err(|e| anyhow::anyhow!("eviction flags: {e}"))?;
        eviction.transition_period = self.eviction_transition;
        eviction.monitoring_period = self.eviction_monitoring_period;
        eviction.max_pod_grace = self.eviction_max_pod_grace;
        cfg.eviction = eviction;
        cfg.stats_interval = self.stats_interval;
        if let Some(o) = &self.owner {
            cfg.owner = o.clone();
        }
        if let Some(d) = &self.volume_dir {
            cfg.volumes.local_dir = d.clone();
        }
        cfg.volumes.local_capacity = self.volume_capacity;
        cfg.volumes.housekeeping_period = self.volume_housekeeping;
        cfg.volumes.rbd = self.rbd_conf.as_ref().map(|c| h8s_agent::RbdConfig {
            conf: c.clone(),
            user: self.rbd_user.clone(),
            pool: self.rbd_pool.clone(),
        });
        Ok(cfg)
    }

    /// The pod VM runtime, with images in `data_dir/images`.
    pub fn runtime(&self, data_dir: &Path) -> anyhow::Result<Runtime> {
        let mut vm = VmSettings::from_env()?;
        vm.log_limits = h8s_runtime::LogLimits {
            max_bytes: self.container_log_max_size,
            max_files: self.container_log_max_files,
        };
        self.jail.apply(&mut vm);
        vm.require_hardware_virt = self.require_hardware_virt;
        vm.warm_pool = self.warm_pool;
        let program = std::env::current_exe().context("locating the h8s binary")?;
        let rt = Runtime::new(RuntimeConfig {
            root: self
                .root
                .clone()
                .unwrap_or_else(RuntimeConfig::default_root),
            images: Some(data_dir.join("images")),
            vm,
            shim: ShimCommand::beside(program, "pod-shim"),
        });
        // The agent's VM template holders end with it (each agent run builds its own).
        Ok(match h8s_runtime::ProcessRef::current() {
            Some(me) => rt.with_template_owner(me),
            None => rt,
        })
    }

    /// The pod network, unless `--pod-network none`.
    pub fn network(&self) -> anyhow::Result<Option<h8s_agent::PodNetworkConfig>> {
        if self.pod_network == "none" {
            return Ok(None);
        }
        // Named after this node: `--node-name` given as a flag (not `H8S_NODE_NAME`) used to
        // leave the fabric named after the host, so two agents on one host shared gateway
        // namespaces and a test's teardown missed them.
        let mut fabric =
            crate::net::fabric_of_node(Some(&self.node_name())).context("the network fabric")?;
        let from_api = self.pod_network == "api";
        // The API server relay for pods (gateway → this port → the API server); the node's
        // rules open it to gateway uplinks only.
        let api_relay = if from_api {
            let port = self.api_relay_port;
            let l = std::net::TcpListener::bind(("0.0.0.0", port))
                .with_context(|| format!("the API relay's port {port}"))?;
            fabric.set_api_relay_port(Some(l.local_addr()?.port()));
            Some(Arc::new(l))
        } else {
            None
        };
        Ok(Some(h8s_agent::PodNetworkConfig {
            network: h8s_runtime::network::PodNetwork::new(fabric),
            name: self.pod_network.clone(),
            cidr: self.pod_cidr.clone(),
            vni: self.pod_network_vni,
            from_api,
            api_relay,
            system_host: from_api && self.system_network_host,
        }))
    }

    /// Starts the agent for this machine; `tls` (a serving certificate the cluster CA signed,
    /// the CA, as PEM) enables the streaming server.
    pub async fn start(
        &self,
        client: h8s_client::kube::Client,
        data_dir: &Path,
        tls: Option<(&str, &str, &str)>,
    ) -> anyhow::Result<h8s_agent::Agent> {
        let mut cfg = self.config(data_dir)?;
        if let Some((ca, cert, key)) = tls {
            let tls = h8s_agent::stream::server_tls(ca, cert, key)
                .context("the streaming server's TLS")?;
            cfg.streaming = Some(h8s_agent::Streaming {
                address: self.streaming_address,
                tls: Arc::new(tls),
            });
        }
        let net = self.network()?;
        let mut rt = self.runtime(data_dir)?;
        if let Some(n) = &net {
            // Warm clones for pods with a network: the fabric moves a clone's tap into the
            // pod's place (docs/runtime.md, "Warm clones").
            let pods = n.network.clone();
            rt = rt.with_tap_adopter(Arc::new(move |warm: &str, att| {
                pods.fabric()
                    .adopt_tap(warm, &att.tap)
                    .map_err(|e| e.to_string())
            }));
        }
        cfg.network = net;
        let runtime: Arc<dyn h8s_runtime::PodRuntime> = Arc::new(rt);
        let agent = h8s_agent::Agent::start(client, runtime, cfg)
            .await
            .context("starting the node agent")?;
        Ok(agent)
    }
}

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The API server, `https://host:port`.
    #[arg(long)]
    server: Option<String>,
    /// A join token from the server (traded for this node's client certificate).
    #[arg(long = "join-token", env = "H8S_JOIN_TOKEN")]
    join_token: Option<String>,
    /// The cluster CA to trust when joining (default: DATA_DIR/ca.crt).
    #[arg(long = "ca-file")]
    ca_file: Option<PathBuf>,
    /// The streaming server's certificate (signed by the cluster CA, PEM).
    #[arg(long = "tls-cert-file")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "tls-private-key-file")]
    tls_key: Option<PathBuf>,
    /// A kubeconfig to use instead of a join token.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The agent's data directory (images, node credentials).
    #[arg(long = "data-dir", env = "H8S_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Register this many hollow nodes (hollow-node-0 …) that report pods Running without
    /// starting anything: for benchmarks and scale tests only.
    #[arg(long)]
    hollow: Option<usize>,
    /// Name prefix of hollow nodes.
    #[arg(long = "hollow-prefix", default_value = "hollow-node-")]
    hollow_prefix: String,
    #[command(flatten)]
    opts: AgentOpts,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args))
}

/// The node's API client: `--kubeconfig`, else the credential saved by an earlier join
/// (`DATA_DIR/node/`), else a join: the token is traded for a client certificate through a
/// CertificateSigningRequest the server approves and signs (kubelet's TLS bootstrap).
async fn client(args: &AgentArgs, data_dir: &Path) -> anyhow::Result<h8s_client::kube::Client> {
    if let Some(kc) = &args.kubeconfig {
        return Ok(h8s_client::from_kubeconfig(kc).await?);
    }
    let dir = data_dir.join("node");
    let ua = format!("h8s-agent/{}", env!("CARGO_PKG_VERSION"));
    let read = |f: &str| std::fs::read(dir.join(f));
    if let (Ok(server), Ok(ca), Ok(cert), Ok(key)) = (
        read("server"),
        read("ca.crt"),
        read("client.crt"),
        read("client.key"),
    ) {
        let conn = h8s_client::Connection {
            server: String::from_utf8_lossy(&server).trim().to_string(),
            ca_pem: ca,
            credentials: h8s_client::Credentials::ClientCert {
                cert_pem: cert.clone(),
                key_pem: key,
            },
            user_agent: ua,
        };
        let client = conn.client()?;
        // Renewed at start when less than 90 days of it are left, with the node's own
        // credential (the server approves a node's renewal of itself).
        let lifetime = h8s_apiserver::CLIENT_CERT_LIFETIME;
        if h8s_apiserver::needs_renewal(&String::from_utf8_lossy(&cert), lifetime) {
            let node = args.opts.node_name();
            match h8s_client::bootstrap::request_node_certificate(
                client.clone(),
                &node,
                &h8s_client::bootstrap::BootstrapOptions::default(),
            )
            .await
            {
                Ok(new) => {
                    write_private(&dir.join("client.key"), &new.key_pem)?;
                    write_private(&dir.join("client.crt"), &new.cert_pem)?;
                    tracing::info!(%node, "renewed the node's client certificate");
                    let conn = h8s_client::Connection {
                        credentials: h8s_client::Credentials::ClientCert {
                            cert_pem: new.cert_pem,
                            key_pem: new.key_pem,
                        },
                        ..conn
                    };
                    return Ok(conn.client()?);
                }
                Err(e) => tracing::warn!(
                    %node,
                    error = %anyhow::Error::from(e),
                    "renewing the node's client certificate failed; using the current one"
                ),
            }
        }
        return Ok(client);
    }
    let (Some(server), Some(token)) = (&args.server, &args.join_token) else {
        bail!("pass --server and --join-token (first join), or --kubeconfig");
    };
    let ca_file = args
        .ca_file
        .clone()
        .unwrap_or_else(|| data_dir.join("ca.crt"));
    let ca = std::fs::read(&ca_file).with_context(|| {
        format!(
            "reading the cluster CA {} (copy the server's DATA_DIR/ca.crt, or pass --ca-file)",
            ca_file.display()
        )
    })?;
    let join = h8s_client::Connection {
        server: server.clone(),
        ca_pem: ca.clone(),
        credentials: h8s_client::Credentials::Token(token.clone()),
        user_agent: ua,
    };
    let node = args.opts.node_name();
    let (conn, cert) = h8s_client::bootstrap::bootstrap_node(
        &join,
        &node,
        &h8s_client::bootstrap::BootstrapOptions::default(),
    )
    .await
    .context("joining the cluster")?;
    std::fs::create_dir_all(&dir)?;
    let write = |f: &str, data: &[u8]| write_private(&dir.join(f), data);
    write("server", server.as_bytes())?;
    write("ca.crt", &ca)?;
    write("client.crt", &cert.cert_pem)?;
    write("client.key", &cert.key_pem)?;
    tracing::info!(%node, "joined the cluster; node credential saved");
    Ok(conn.client()?)
}

/// The streaming server's certificate and key (PEM): `DATA_DIR/node/serving.{crt,key}`,
/// requested through a `kubernetes.io/kubelet-serving` CSR (the server approves a node's
/// request for itself) when missing, when less than 90 days of it are left, or when the
/// node's names (its address and host name) changed.
async fn serving_cert(
    opts: &AgentOpts,
    client: &h8s_client::kube::Client,
    data_dir: &Path,
) -> anyhow::Result<(String, String)> {
    let dir = data_dir.join("node");
    let node = opts.node_name();
    let names = serving_names(opts);
    let want = names.join("\n");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    if let (Some(cert), Some(key), Some(have)) = (
        read("serving.crt"),
        read("serving.key"),
        read("serving.names"),
    ) {
        if have == want
            && !h8s_apiserver::needs_renewal(&cert, h8s_apiserver::SERVING_CERT_LIFETIME)
        {
            return Ok((cert, key));
        }
    }
    let got = h8s_client::bootstrap::request_serving_certificate(
        client.clone(),
        &node,
        &names,
        &h8s_client::bootstrap::BootstrapOptions::default(),
    )
    .await
    .context("requesting the streaming server's certificate (kubelet-serving CSR)")?;
    std::fs::create_dir_all(&dir)?;
    write_private(&dir.join("serving.key"), &got.key_pem)?;
    write_private(&dir.join("serving.crt"), &got.cert_pem)?;
    write_private(&dir.join("serving.names"), want.as_bytes())?;
    tracing::info!(%node, ?names, "got the streaming server's certificate");
    Ok((
        String::from_utf8_lossy(&got.cert_pem).into_owned(),
        String::from_utf8_lossy(&got.key_pem).into_owned(),
    ))
}

/// The names a node's serving certificate carries: the node's address (its
/// `InternalIP`), its name and the machine's host name (its `Hostname` address). The API
/// server's node proxy dials the address and checks the certificate names it.
fn serving_names(opts: &AgentOpts) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(ip) = opts.node_ip.or_else(default_route_ip) {
        names.push(ip.to_string());
    }
    names.push(opts.node_name());
    let host = host_name();
    if !names.contains(&host) {
        names.push(host);
    }
    names
}

/// Writes `data` to `path` with mode 0600 through a temporary file and a rename, so a crash
/// never leaves half a credential.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut fh = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fh.write_all(data)?;
    fh.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::server::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let client = client(&args, &data_dir).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if let Some(n) = args.hollow {
        let mut cfg = h8s_agent::hollow::HollowConfig::new(n, args.opts.config(&data_dir)?);
        cfg.prefix = args.hollow_prefix.clone();
        let hollow = h8s_agent::hollow::Hollow::start(client, cfg)
            .await
            .context("starting hollow nodes")?;
        println!("ready hollow {n}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        hollow.shutdown().await;
        return Ok(());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let ca_file = args
                .ca_file
                .clone()
                .unwrap_or_else(|| data_dir.join("node").join("ca.crt"));
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            Some((read(&ca_file)?, read(c)?, read(k)?))
        }
        (None, None) => {
            let ca_file = args
                .ca_file
                .clone()
                .unwrap_or_else(|| data_dir.join("node").join("ca.crt"));
            match std::fs::read_to_string(&ca_file) {
                Ok(ca) => {
                    let (cert, key) = serving_cert(&args.opts, &client, &data_dir).await?;
                    Some((ca, cert, key))
                }
                Err(_) => {
                    tracing::warn!(
                        ca = %ca_file.display(),
                        "no cluster CA and no --tls-cert-file/--tls-private-key-file: no \
                         streaming server (kubectl logs/exec/port-forward will not reach \
                         this node)"
                    );
                    None
                }
            }
        }
        _ => bail!("--tls-cert-file and --tls-private-key-file go together"),
    };
    let agent = args
        .opts
        .start(
            client,
            &data_dir,
            tls.as_ref()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
        )
        .await?;
    println!("ready agent {}", args.opts.node_name());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("agent stopping; pod VMs keep running");
    agent.shutdown().await;
    Ok(())
}

/// The in-process agent of `h8s server` (like k3s server's own kubelet).
#[derive(clap::Args, Clone, Debug)]
pub struct LocalAgentArgs {
    /// Run no node agent in the server (a control-plane-only server).
    #[arg(long = "disable-agent", env = "H8S_DISABLE_AGENT")]
    pub disable_agent: bool,
    #[command(flatten)]
    pub opts: AgentOpts,
}

/// Starts the server's own agent, authenticated with a client certificate the server's CA
/// issues in-process (`system:node:<name>`, group `system:nodes`).
pub async fn start_local(
    server: &h8s_apiserver::Server,
    data_dir: &Path,
    args: &LocalAgentArgs,
) -> anyhow::Result<Option<h8s_agent::Agent>> {
    if args.disable_agent {
        return Ok(None);
    }
    let node = args.opts.node_name();
    let host = match server.addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let (cert, key) = server
        .pki
        .issue_client_cert(
            &format!("system:node:{node}"),
            &["system:nodes".to_string()],
            h8s_apiserver::CLIENT_CERT_LIFETIME,
        )
        .context("issuing the node agent's client certificate")?;
    let client = h8s_client::Connection {
        server: format!("https://{host}:{}", server.addr.port()),
        ca_pem: server.pki.ca_pem.clone().into_bytes(),
        credentials: h8s_client::Credentials::ClientCert {
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        },
        user_agent: format!("h8s-agent/{} ({node})", env!("CARGO_PKG_VERSION")),
    }
    .client()
    .context("building the node agent's API client")?;
    let mut opts = args.opts.clone();
    opts.owner = Some(format!("{node}@{}", data_dir.display()));
    // The server's own machine: the server reaches the system Network's pods from here.
    opts.system_network_host = true;
    // The streaming server presents a node serving certificate the CA issues in-process
    // (what the node proxy accepts: `system:node:<name>`, naming the node's address).
    let (serving, serving_key) = server
        .pki
        .issue_node_serving_cert(
            &node,
            &serving_names(&opts),
            h8s_apiserver::SERVING_CERT_LIFETIME,
        )
        .context("issuing the node agent's serving certificate")?;
    let tls = (
        server.pki.ca_pem.as_str(),
        serving.as_str(),
        serving_key.as_str(),
    );
    Ok(Some(opts.start(client, data_dir, Some(tls)).await?))
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let n: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let n = n.trim_matches(['-', '.']).to_string();
    if n.is_empty() {
        "node".into()
    } else {
        n
    }
}

/// The source address of the default route (what another machine would reach us on).
fn default_route_ip() -> Option<IpAddr> {
    // A UDP "connect" picks the route without sending anything.
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_bytes("256Mi").unwrap(), 256 << 20);
        assert!(parse_bytes("1Q").is_err());
    }
}
