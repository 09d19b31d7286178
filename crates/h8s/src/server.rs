//! `h8s server`: the control plane (the API server on the embedded store by default).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[path = "server_bench.rs"]
pub(crate) mod bench;

pub use bench::{run as bench, BenchArgs};

#[path = "control.rs"]
mod control;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where the data dir and the store are (`--data-dir`, `--store`, `--etcd-*`).
    #[command(flatten)]
    pub at: crate::store::StoreArgs,
    /// Address to serve HTTPS on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// The address published in the `default/kubernetes` Endpoints, where node agents relay
    /// pods' connections to `kubernetes.default.svc` (kube-apiserver's flag). Default: the
    /// `--listen` address, or for 0.0.0.0 the default route's source address.
    #[arg(long = "advertise-address")]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Extra subject alternative names (DNS names or IPs) for the serving certificate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// The IPv4 range Service cluster IPs are allocated from.
    #[arg(long = "service-cluster-ip-range", default_value = h8s_apiserver::DEFAULT_SERVICE_CIDR)]
    pub service_cluster_ip_range: String,
    /// The node ports NodePort and LoadBalancer Services get (FIRST-LAST, inclusive).
    #[arg(long = "service-node-port-range", default_value = h8s_apiserver::DEFAULT_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
    /// How long Events live after their last write (kube-apiserver's `--event-ttl`);
    /// `0s` keeps them.
    #[arg(long = "event-ttl", default_value = "1h", value_parser = crate::agent::parse_duration)]
    pub event_ttl: std::time::Duration,
    /// How long `metrics.k8s.io` reuses a node agent's stats (`kubectl top`, the HPA).
    #[arg(long = "metrics-cache-ttl", default_value = "5s", value_parser = crate::agent::parse_duration)]
    pub metrics_cache_ttl: std::time::Duration,
    /// How often every service-backed APIService's server is checked (its `Available`
    /// condition and the discovery document served for it).
    #[arg(long = "apiservice-check-interval", default_value = "30s", value_parser = crate::agent::parse_duration)]
    pub apiservice_check_interval: std::time::Duration,
    /// Encryption at rest (kube-apiserver's flag): an `EncryptionConfiguration` YAML file with
    /// `aesgcm` (and `identity`) providers for the resources to encrypt, e.g. secrets.
    #[arg(long = "encryption-provider-config")]
    pub encryption_provider_config: Option<std::path::PathBuf>,
    /// DefaultTolerationSeconds admission: how long pods tolerate a not-ready node.
    #[arg(long = "default-not-ready-toleration-seconds", default_value_t = 300)]
    pub not_ready_toleration_seconds: i64,
    /// DefaultTolerationSeconds admission: how long pods tolerate an unreachable node.
    #[arg(long = "default-unreachable-toleration-seconds", default_value_t = 300)]
    pub unreachable_toleration_seconds: i64,
    /// The built-in identity service (`--token-ttl`, `--cloud-admin-tenant`).
    #[command(flatten)]
    pub identity: crate::identity_flags::IdentityArgs,
    /// The audit log (`--audit-log-path`, `--audit-log-maxsize`, `--audit-log-maxbackup`,
    /// `--audit-policy-file`).
    #[command(flatten)]
    pub audit: crate::audit_flags::AuditArgs,
    /// Limits and fairness (`--max-requests-inflight`, `--max-watches-per-user`, …).
    #[command(flatten)]
    pub limits: crate::limits_flags::LimitsArgs,
    /// The controller manager and the scheduler run in this process (`--disable-*`,
    /// leader election, controller timers).
    #[command(flatten)]
    pub control: control::ControlArgs,
    // --- node agent (crates/h8s/src/agent.rs) ---
    /// The node agent this server runs for its own machine (`--disable-agent` to not).
    #[command(flatten)]
    pub agent: crate::agent::LocalAgentArgs,
    // --- end node agent ---
}

/// The default data directory: `$XDG_DATA_HOME/h8s`, else `~/.local/share/h8s`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("h8s");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/h8s")
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(mut args: ServerArgs) -> anyhow::Result<()> {
    args.control.store_shared = args.at.store != "embedded" && args.at.store != "embedded://";
    let started = std::time::Instant::now();
    let data_dir = args.at.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let store = h8s_store::open(&args.at.store, &data_dir, args.at.tls())
        .await
        .with_context(|| format!("opening store {}", args.at.store))?;
    let store = match &args.encryption_provider_config {
        None => store,
        Some(path) => encrypting(store, path)?,
    };
    let mut cfg = h8s_apiserver::Config::new(data_dir.clone(), args.listen, store.clone());
    cfg.tls_sans = args.tls_san.clone();
    cfg.advertise_address = args.advertise_address;
    cfg.service_cidr = args.service_cluster_ip_range.clone();
    cfg.service_node_port_range = args.service_node_port_range.clone();
    cfg.event_ttl = args.event_ttl;
    cfg.identity = args.identity.config();
    cfg.keystone = args.identity.keystone()?;
    cfg.build = h8s_apiserver::BuildInfo {
        git_commit: env!("H8S_GIT_COMMIT").into(),
        git_tree_state: env!("H8S_GIT_TREE_STATE").into(),
        build_date: env!("H8S_BUILD_DATE").into(),
    };
    cfg.metrics_cache_ttl = args.metrics_cache_ttl;
    cfg.aggregator.check_interval = args
        .apiservice_check_interval
        .max(std::time::Duration::from_millis(100));
    cfg.audit = args.audit.config()?;
    cfg.limits = args.limits.config();
    cfg.admission_plugins.not_ready_toleration_seconds = args.not_ready_toleration_seconds;
    cfg.admission_plugins.unreachable_toleration_seconds = args.unreachable_toleration_seconds;
    cfg.admission_plugins.lb_pool = args.control.lb_pool.map(|p| p.cidr());
    let server = h8s_apiserver::Server::start(cfg)
        .await
        .context("starting the API server")?;
    let kubeconfig = data_dir.join("admin.kubeconfig");
    tracing::info!(
        addr = %server.addr,
        kubeconfig = %kubeconfig.display(),
        ready_ms = started.elapsed().as_millis() as u64,
        "h8s API server ready"
    );
    // One machine-readable line for scripts and tests.
    println!("ready https://{} {}", server.addr, kubeconfig.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // The control loops, as API clients of the ready server.
    let control = control::start(&server, &args.control).context("starting the control plane")?;
    // --- node agent (crates/h8s/src/agent.rs) ---
    let agent = crate::agent::start_local(&server, &data_dir, &args.agent).await?;
    // --- end node agent ---

    // Opening already refuses foreign or damaged files; the full consistency check walks
    // every key and the history, so it runs after the server is ready instead of delaying it.
    let mut check = tokio::spawn(async move { store.check().await });
    let mut checked = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            r = &mut check, if !checked => {
                checked = true;
                match r {
                    Ok(Ok(report)) => tracing::info!(
                        revision = report.revision,
                        keys = report.keys,
                        "store consistency check passed"
                    ),
                    Ok(Err(e)) => break Err(anyhow::anyhow!(e))
                        .context("the store failed its consistency check; not serving it (restore from a backup: h8s store restore)"),
                    Err(e) => tracing::warn!(error = %e, "store consistency check did not finish"),
                }
            }
        }
    };
    tracing::info!("shutting down");
    // --- node agent ---
    if let Some(a) = agent {
        a.shutdown().await;
    }
    // --- end node agent ---
    control.stop().await;
    server.shutdown().await;
    outcome
}

/// The store wrapped so the resources the encryption configuration names are encrypted at
/// rest.
fn encrypting(
    store: std::sync::Arc<dyn h8s_store::Store>,
    path: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn h8s_store::Store>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the encryption configuration {}", path.display()))?;
    let config: h8s_store::EncryptionConfiguration = serde_saphyr::from_str(&text)
        .with_context(|| format!("parsing the encryption configuration {}", path.display()))?;
    let wrapped = h8s_store::Encrypting::new(store, &config)
        .with_context(|| format!("the encryption configuration {}", path.display()))?;
    Ok(std::sync::Arc::new(wrapped))
}
