//! The h8s scheduler (kube-scheduler's role): places pending pods on nodes.
//!
//! Two layers:
//! - a pure filter/score core over a snapshot of nodes and pods (no I/O), unit-tested;
//! - a runner that keeps that snapshot current from kube-rs watches, pops pods from a
//!   priority queue, binds them through `pods/{name}/binding`, records events and
//!   conditions, and preempts lower-priority pods when a pod fits nowhere.
#![forbid(unsafe_code)]

use std::time::Duration;

mod api;
mod cluster;
mod filter;
mod model;
mod preempt;
mod quantity;
mod queue;
mod runner;
mod schedule;
mod score;
mod selector;

pub use cluster::Cluster;
pub use filter::{Code, Plugin, PreFilter, Status};
pub use model::{NodeInfo, PodInfo, Resources};
pub use preempt::{preempt, NoPreemption, Preemption};
pub use quantity::parse_scaled;
pub use schedule::{
    num_feasible_nodes_to_find, Decision, FitError, Options, ScheduleError, Scheduler,
};

/// The reasons and messages kube-scheduler uses, word for word.
pub mod messages {
    pub use crate::filter::{
        ERR_AFFINITY, ERR_ANTI, ERR_EXISTING_ANTI, ERR_NODE_AFFINITY, ERR_NODE_NAME,
        ERR_NODE_PORTS, ERR_SPREAD, ERR_SPREAD_LABEL, ERR_TOO_MANY_PODS, ERR_UNSCHEDULABLE,
    };
    pub use crate::schedule::{NO_NODES, NO_VICTIMS, PREEMPTION_NOT_HELPFUL};
}

/// The score plugins, for tests and tools.
pub mod scores {
    pub use crate::score::{
        balanced_allocation, default_normalize, inter_pod_affinity, least_allocated,
        node_affinity_score, prefer_no_schedule_tolerations, score_nodes, taint_count,
        topology_spread,
    };
}

/// Every knob and timer of the scheduler; the binary turns them into flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pods whose `spec.schedulerName` equals this are ours (`default-scheduler`); also
    /// the events' reporting component.
    pub scheduler_name: String,
    /// The events' reporting instance (kube-scheduler uses `<name>-<hostname>`).
    pub instance: String,
    /// Initial back-off of a pod that failed to schedule (`podInitialBackoffSeconds`, 1 s).
    pub pod_initial_backoff: Duration,
    /// Maximum back-off (`podMaxBackoffSeconds`, 10 s).
    pub pod_max_backoff: Duration,
    /// How often unschedulable pods are looked at to be retried even without an event
    /// (kube-scheduler flushes every 30 s).
    pub flush_interval: Duration,
    /// An unschedulable pod is retried after at most this long without an event that
    /// could help it (`podMaxInUnschedulablePodsDuration`, 5 min).
    pub max_unschedulable_duration: Duration,
    /// How many bindings may be in flight at once.
    pub bind_concurrency: usize,
    /// Percentage of nodes to score once enough feasible nodes are found; `0` means
    /// kube-scheduler's adaptive default (50 % − nodes/125, at least 5 %, at least 100 nodes).
    pub percentage_of_nodes_to_score: u32,
    /// Try to preempt lower-priority pods when a pod fits nowhere.
    pub preemption: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: "default-scheduler".into(),
            instance: "default-scheduler".into(),
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
            flush_interval: Duration::from_secs(30),
            max_unschedulable_duration: Duration::from_secs(300),
            bind_concurrency: 64,
            percentage_of_nodes_to_score: 0,
            preemption: true,
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("watch failed")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

/// Runs the scheduler until a fatal error: watches nodes, pods and namespaces through
/// `client` and binds the pending pods whose `schedulerName` is `cfg.scheduler_name`.
pub async fn run(client: kube::Client, cfg: Config) -> Result<(), Error> {
    runner::run(client, cfg).await
}
