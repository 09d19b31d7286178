//! The controller manager and the scheduler inside `h8s server`, as k3s runs them: started
//! once the API server is ready, each an API client of its own (a client certificate from
//! the cluster CA naming `system:kube-controller-manager` / `system:kube-scheduler`), each
//! behind leader election on a Lease in `kube-system`, so several servers on one store run
//! one active copy of each. A component that loses its lease is stopped and stands again.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use h8s_client::kube;
use h8s_client::leader::{self, Elector, Outcome};
use h8s_client::{Connection, Credentials};

/// Flags of the in-process control plane.
#[derive(clap::Args, Clone, Debug)]
pub struct ControlArgs {
    /// Do not run the controller manager (garbage collector, namespace, workload and node
    /// controllers) in this server.
    #[arg(long)]
    pub disable_controllers: bool,
    /// The addresses LoadBalancer Services get (`status.loadBalancer.ingress`), an IPv4
    /// CIDR of at most 65536 addresses; without it they stay pending.
    #[arg(long = "lb-pool")]
    pub lb_pool: Option<h8s_controllers::services_lb::LbPool>,
    /// Do not run the scheduler in this server.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Elect one active controller manager and scheduler among the servers of one store
    /// through Leases in kube-system. Default: on with etcd (several servers may share it),
    /// off with the embedded store (its file admits one server, so there is nobody to elect
    /// against, and a lease renewal late under load would only restart the controllers).
    #[arg(long = "leader-elect", action = clap::ArgAction::Set)]
    pub leader_elect: Option<bool>,
    /// Whether the store can be shared by several servers (set by the server from `--store`).
    #[arg(skip)]
    pub store_shared: bool,
    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops its component.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
    /// Node controller: how long a node's Lease may go unrenewed before the node is
    /// Ready=Unknown and tainted unreachable [default: 50s].
    #[arg(long, value_parser = duration)]
    pub node_monitor_grace_period: Option<Duration>,
    /// Node controller: how often node health is checked [default: 5s].
    #[arg(long, value_parser = duration)]
    pub node_monitor_period: Option<Duration>,
    /// Node controller: nodes per second tainted NoExecute (so evicted) in a healthy zone
    /// [default: 0.1].
    #[arg(long, value_parser = rate)]
    pub node_eviction_rate: Option<f64>,
    /// Node controller: nodes per second in a zone of more than
    /// --large-cluster-size-threshold nodes in partial disruption [default: 0.01].
    #[arg(long, value_parser = rate)]
    pub secondary_node_eviction_rate: Option<f64>,
    /// Node controller: share of not-Ready nodes (more than two) that puts a zone in partial
    /// disruption [default: 0.55].
    #[arg(long, value_parser = share)]
    pub unhealthy_zone_threshold: Option<f64>,
    /// Node controller: zones up to this size stop evicting in partial disruption
    /// [default: 50].
    #[arg(long)]
    pub large_cluster_size_threshold: Option<usize>,
    /// Workload controllers: full resync period [default: 5m].
    #[arg(long = "controllers-resync-period", value_parser = duration)]
    pub resync: Option<Duration>,
    /// CronJob controller: time between schedule checks [default: 10s].
    #[arg(long = "cronjob-sync-period", value_parser = duration)]
    pub cronjob_sync: Option<Duration>,
    /// Job controller: the first back-off after a pod failure, doubling up to 60 times it
    /// (kube's 10 s → 10 min) [default: 10s].
    #[arg(long = "job-pod-failure-backoff", value_parser = duration)]
    pub job_backoff: Option<Duration>,
    /// Garbage collector: how often discovery is re-read for new resources [default: 30s].
    #[arg(long = "discovery-sync-period", value_parser = duration)]
    pub discovery_sync: Option<Duration>,
    /// Garbage collector: longest retry back-off of a failing item [default: 1000s].
    #[arg(long = "gc-max-backoff", value_parser = duration)]
    pub gc_max_backoff: Option<Duration>,
    /// Namespace controller: expected time for finalizers of remaining content [default: 15s].
    #[arg(long = "namespace-finalizer-estimate", value_parser = duration)]
    pub namespace_finalizer_estimate: Option<Duration>,
    /// HorizontalPodAutoscalers: how often each is reconciled [default: 15s].
    #[arg(long = "horizontal-pod-autoscaler-sync-period", value_parser = duration)]
    pub hpa_sync_period: Option<Duration>,
    /// HorizontalPodAutoscalers: the downscale stabilization window [default: 5m].
    #[arg(long = "horizontal-pod-autoscaler-downscale-stabilization", value_parser = duration)]
    pub hpa_downscale_stabilization: Option<Duration>,
    /// ClusterIP repair loop: how old a leaked IPAddress must be before it is deleted
    /// [default: 60s].
    #[arg(long = "ipaddress-leak-grace-period", value_parser = duration)]
    pub ipaddress_leak_grace_period: Option<Duration>,
}

/// A duration flag: `50s`, `500ms`, `5m`, `1h30m` (jiff's friendly format, which reads Go's).
fn duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("duration {s:?} must not be negative"))
}

/// A rate flag: a finite number ≥ 0.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("invalid rate {s:?}: want a number >= 0")),
    }
}

/// A share flag: a number in [0, 1].
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("invalid share {s:?}: want a number in [0, 1]")),
    }
}

impl ControlArgs {
    fn timers(&self) -> h8s_controllers::Timers {
        let mut t = h8s_controllers::Timers::default();
        let set = |slot: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(
            &mut t.node_monitor_grace_period,
            self.node_monitor_grace_period,
        );
        set(&mut t.node_monitor_period, self.node_monitor_period);
        set(&mut t.resync, self.resync);
        let e = &mut t.node_eviction;
        e.eviction_rate = self.node_eviction_rate.unwrap_or(e.eviction_rate);
        e.secondary_eviction_rate = self
            .secondary_node_eviction_rate
            .unwrap_or(e.secondary_eviction_rate);
        e.unhealthy_zone_threshold = self
            .unhealthy_zone_threshold
            .unwrap_or(e.unhealthy_zone_threshold);
        e.large_cluster_size_threshold = self
            .large_cluster_size_threshold
            .unwrap_or(e.large_cluster_size_threshold);
        set(&mut t.cronjob_sync, self.cronjob_sync);
        set(&mut t.job_backoff, self.job_backoff);
        set(&mut t.discovery_sync, self.discovery_sync);
        set(&mut t.gc_max_backoff, self.gc_max_backoff);
        set(
            &mut t.namespace_finalizer_estimate,
            self.namespace_finalizer_estimate,
        );
        set(&mut t.hpa_sync_period, self.hpa_sync_period);
        set(
            &mut t.hpa_downscale_stabilization,
            self.hpa_downscale_stabilization,
        );
        set(
            &mut t.ipaddress_leak_grace_period,
            self.ipaddress_leak_grace_period,
        );
        t
    }

    fn election(&self, lease: &str, identity: &str) -> Option<leader::Config> {
        self.leader_elect
            .unwrap_or(self.store_shared)
            .then(|| leader::Config {
                lease_duration: self.leader_elect_lease_duration,
                renew_deadline: self.leader_elect_renew_deadline,
                retry_period: self.leader_elect_retry_period,
                ..leader::Config::new(lease, identity)
            })
    }
}

/// The running components; dropping it stops them.
pub struct Control {
    tasks: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Control {
    /// Stops the components and releases their leases (client-go's `ReleaseOnCancel`), so a
    /// standby server takes over within a retry period instead of a lease duration.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(3), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// Starts the enabled components against the ready API server `server`.
pub fn start(server: &h8s_apiserver::Server, args: &ControlArgs) -> anyhow::Result<Control> {
    let mut tasks = tokio::task::JoinSet::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let host = match server.addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let url = format!("https://{host}:{}", server.addr.port());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "h8s".to_string());
    // client-go's identity: the host name and something unique to this process.
    let token = h8s_apiserver::random_token();
    let identity = format!("{hostname}_{}", &token[..token.len().min(12)]);
    let client_for = |user: &str, agent: &str| -> anyhow::Result<kube::Client> {
        let (cert, key) = server
            .pki
            .issue_client_cert(user, &[], h8s_apiserver::CLIENT_CERT_LIFETIME)
            .with_context(|| format!("issuing the client certificate of {user}"))?;
        Connection {
            server: url.clone(),
            ca_pem: server.pki.ca_pem.clone().into_bytes(),
            credentials: Credentials::ClientCert {
                cert_pem: cert.into_bytes(),
                key_pem: key.into_bytes(),
            },
            user_agent: agent.to_string(),
        }
        // Every watch of the component on one HTTP/2 connection, as client-go does.
        .client_http2()
        .with_context(|| format!("building the API client of {user}"))
    };
    if !args.disable_controllers {
        let client = client_for(
            "system:kube-controller-manager",
            "kube-controller-manager/h8s",
        )?;
        let ctx = h8s_controllers::Context {
            client: client.clone(),
            timers: args.timers(),
            root_ca_pem: server.pki.ca_pem.clone(),
            lb_pool: args.lb_pool,
            informers: Default::default(),
        };
        tasks.spawn(lead(
            "kube-controller-manager",
            client,
            stopped.clone(),
            args.election("kube-controller-manager", &identity),
            move || h8s_controllers::run(ctx.clone()),
        ));
    }
    if !args.disable_scheduler {
        let client = client_for("system:kube-scheduler", "kube-scheduler/h8s")?;
        let cfg = h8s_scheduler::Config::default();
        let c = client.clone();
        tasks.spawn(lead(
            "kube-scheduler",
            client,
            stopped.clone(),
            args.election("kube-scheduler", &identity),
            move || h8s_scheduler::run(c.clone(), cfg.clone()),
        ));
    }
    Ok(Control { tasks, stop })
}

/// Runs one component, behind its lease when `election` is set; restarts it after a
/// failure and stands for election again after losing the lease.
async fn lead<F, Fut, E>(
    name: &'static str,
    client: kube::Client,
    mut stop: tokio::sync::watch::Receiver<bool>,
    election: Option<leader::Config>,
    make: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let restart = Duration::from_secs(1);
    let Some(cfg) = election else {
        loop {
            let r = tokio::select! {
                r = make() => r,
                _ = stopping(&mut stop) => return,
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(component = name, error = %anyhow_chain(&e), "stopped; restarting")
                }
            }
            tokio::time::sleep(restart).await;
        }
    };
    let mut elector = Elector::new(client, cfg);
    loop {
        let acquired = tokio::select! {
            r = elector.acquire() => r,
            _ = stopping(&mut stop) => return,
        };
        if let Err(e) = acquired {
            tracing::error!(component = name, error = %e, "leader election is misconfigured; not running");
            return;
        }
        tracing::info!(component = name, "started (leading)");
        let held = tokio::select! {
            r = elector.hold(make()) => r,
            _ = stopping(&mut stop) => {
                // The component is dropped (stopped) with the `hold` future; hand over.
                let _ = tokio::time::timeout(Duration::from_secs(2), elector.release()).await;
                return;
            }
        };
        match held {
            Ok(Outcome::Lost) => tracing::warn!(component = name, "lost its lease; stopped"),
            Ok(Outcome::Finished(Ok(()))) => return,
            Ok(Outcome::Finished(Err(e))) => {
                tracing::error!(component = name, error = %anyhow_chain(&e), "stopped; restarting");
                tokio::time::sleep(restart).await;
            }
            Err(e) => {
                tracing::error!(component = name, error = %e, "leader election is misconfigured; not running");
                return;
            }
        }
    }
}

/// Resolves once `Control::stop` was called (or the control handle is gone).
async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// An error and its sources on one line.
fn anyhow_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubernetes_flags() {
        assert_eq!(duration("50s").unwrap(), Duration::from_secs(50));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(duration("-1s").is_err());
        assert!(duration("soon").is_err());
    }
}
