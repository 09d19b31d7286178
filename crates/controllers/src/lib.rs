//! The controller manager of h8s: the control loops of kube-controller-manager, each an API
//! client (kube-rs watchers and reflectors through `h8s-client`). Nothing here touches the
//! store: every read and write goes through the API server, so admission, validation and
//! finalizers apply to the controllers as to any client.
//!
//! Each controller is a module with `pub async fn run(ctx: Context) -> Result<(), Error>`
//! that returns only on a fatal error; [`run`] starts them all.
#![forbid(unsafe_code)]

use std::time::Duration;

mod cluster;

pub use cluster::informer::Informers;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
mod discover;
pub mod endpoints;
pub mod gc;
pub mod hpa;
pub mod ipaddress;
pub mod job;
pub mod namespace;
pub mod network;
pub mod nodelifecycle;
pub mod pdb;
pub mod queue;
pub mod quota;
pub mod replicaset;
pub mod serviceaccount;
pub mod services_lb;
pub mod statefulset;
pub mod tenancy;
pub mod tenantquota;
pub mod volume;
mod workload;

/// Every controller timer, so tests can shorten them (kube-controller-manager's flags).
#[derive(Clone, Debug)]
pub struct Timers {
    /// How long a node's Lease may go unrenewed before the node is Ready=Unknown and
    /// tainted unreachable (`--node-monitor-grace-period`, 50 s since Kubernetes 1.32).
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked (`--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// Periodic full resync of the workload controllers (kube's informer resync).
    pub resync: Duration,
    /// Minimum time between a CronJob's schedule checks (10 s in Kubernetes).
    pub cronjob_sync: Duration,
    /// How often the garbage collector re-reads discovery to watch new resources (30 s in
    /// kube-controller-manager); also how long it waits for its first lists.
    pub discovery_sync: Duration,
    /// The longest back-off of a garbage-collector item that keeps failing (1000 s, as
    /// client-go's default controller rate limiter).
    pub gc_max_backoff: Duration,
    /// How long the namespace controller expects finalizers of remaining content to take
    /// before it checks again (15 s in Kubernetes; it checks after half of it plus 1 s).
    pub namespace_finalizer_estimate: Duration,
    /// The Job controller's back-off after a pod failure, doubled per failure up to 60
    /// times this (Kubernetes' `DefaultJobPodFailureBackOff`, 10 s, and 10 min).
    pub job_backoff: Duration,
    /// How often each HorizontalPodAutoscaler is reconciled
    /// (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub hpa_sync_period: Duration,
    /// How long a HorizontalPodAutoscaler keeps its highest recent recommendation before
    /// scaling down (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).
    pub hpa_downscale_stabilization: Duration,
    /// How old an IPAddress the ClusterIP allocator wrote must be before the repair loop
    /// deletes it for naming no Service that holds its address (kube's fixed 60 s: the
    /// Service write that reserved it may still be under way).
    pub ipaddress_leak_grace_period: Duration,
    /// The node lifecycle controller's zone-aware NoExecute tainting rates and thresholds
    /// (`--node-eviction-rate` and friends; rates, not timers, but flags all the same).
    pub node_eviction: nodelifecycle::zones::Limits,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            cronjob_sync: Duration::from_secs(10),
            discovery_sync: Duration::from_secs(30),
            gc_max_backoff: Duration::from_secs(1000),
            namespace_finalizer_estimate: Duration::from_secs(15),
            job_backoff: Duration::from_secs(10),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            ipaddress_leak_grace_period: Duration::from_secs(60),
            node_eviction: Default::default(),
        }
    }
}

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub timers: Timers,
    /// The cluster CA (PEM), published as the `kube-root-ca.crt` ConfigMap in every namespace.
    pub root_ca_pem: String,
    /// Where LoadBalancer Services' addresses come from (`--lb-pool`); `None`: they stay
    /// pending. See [`services_lb`].
    pub lb_pool: Option<services_lb::LbPool>,
    /// The informers the controllers share (one watch and one cache per kind). [`run`]
    /// starts from an empty set each time, so a new leadership term lists afresh; callers
    /// running single controllers pass `Informers::default()`.
    pub informers: Informers,
}

/// Why a controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("watch failed")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("controller {name} stopped")]
    Stopped { name: &'static str },
}

/// Runs every controller until one fails fatally.
pub async fn run(ctx: Context) -> Result<(), Error> {
    use futures::future::try_join_all;
    let ctx = Context {
        informers: Informers::default(),
        ..ctx
    };
    use futures::FutureExt;
    type Fut = futures::future::BoxFuture<'static, Result<(), Error>>;
    let all: Vec<Fut> = vec![
        gc::run(ctx.clone()).boxed(),
        namespace::run(ctx.clone()).boxed(),
        deployment::run(ctx.clone()).boxed(),
        replicaset::run(ctx.clone()).boxed(),
        statefulset::run(ctx.clone()).boxed(),
        daemonset::run(ctx.clone()).boxed(),
        job::run(ctx.clone()).boxed(),
        cronjob::run(ctx.clone()).boxed(),
        endpoints::run(ctx.clone()).boxed(),
        serviceaccount::run(ctx.clone()).boxed(),
        services_lb::run(ctx.clone()).boxed(),
        nodelifecycle::run(ctx.clone()).boxed(),
        pdb::run(ctx.clone()).boxed(),
        quota::run(ctx.clone()).boxed(),
        network::run(ctx.clone()).boxed(),
        tenancy::run(ctx.clone()).boxed(),
        tenantquota::run(ctx.clone()).boxed(),
        volume::run(ctx.clone()).boxed(),
        hpa::run(ctx.clone()).boxed(),
        ipaddress::run(ctx.clone()).boxed(),
    ];
    try_join_all(all).await.map(|_| ())
}
