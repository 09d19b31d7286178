//! One scheduling decision over the cluster view: filter, score, select — and, when no
//! node fits, the FitError whose text is kube-scheduler's `FailedScheduling` message.

use std::collections::{BTreeMap, HashSet};

use crate::cluster::Cluster;
use crate::filter::{filter_node, Code, Plugin, PreFilter, Status};
use crate::model::{NodeInfo, PodInfo};
use crate::score::score_nodes;

/// kube-scheduler's message when the cluster has no node at all.
pub const NO_NODES: &str = "no nodes available to schedule pods";
/// Reason given in the preemption diagnosis for nodes preemption cannot help.
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Reason for a node with no lower-priority pod to evict.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// kube-scheduler's `minFeasibleNodesToFind`.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// Tuning of a decision.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// 0 = kube-scheduler's adaptive percentage.
    pub percentage_of_nodes_to_score: u32,
}

/// How many feasible nodes to find before scoring (kube-scheduler's
/// `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(all: usize, percentage: u32) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return all;
    }
    let pct = if percentage == 0 {
        (50usize.saturating_sub(all / 125)).max(MIN_FEASIBLE_NODES_PERCENTAGE)
    } else {
        percentage as usize
    };
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why no node fits, node by node.
#[derive(Clone, Debug, Default)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// The refusal of each node that was refused, by node name.
    pub statuses: Vec<(String, Status)>,
    /// What preemption said, already prefixed (`preemption: …`).
    pub post_filter_msg: String,
}

impl FitError {
    /// kube-scheduler's `FitError.Error()`: `0/N nodes are available: <count> <reason>, …
    /// <post filter message>`, reasons counted over nodes and sorted as strings.
    pub fn message(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, s) in &self.statuses {
            for r in &s.reasons {
                *counts.entry(r.as_ref()).or_default() += 1;
            }
        }
        histogram_message(self.num_all_nodes, &counts, &self.post_filter_msg)
    }

    /// The plugins that refused some node (to know which cluster events may help).
    pub fn plugins(&self) -> u16 {
        self.statuses.iter().fold(0, |m, (_, s)| m | s.plugin.bit())
    }
}

pub fn histogram_message(all: usize, counts: &BTreeMap<&str, usize>, post: &str) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{all} nodes are available:");
    if !parts.is_empty() {
        msg.push(' ');
        msg.push_str(&parts.join(", "));
        msg.push('.');
    }
    if !post.is_empty() {
        msg.push(' ');
        msg.push_str(post);
    }
    msg
}

#[derive(Debug)]
pub enum ScheduleError {
    NoNodes,
    Fit(FitError),
}

impl ScheduleError {
    pub fn message(&self) -> String {
        match self {
            ScheduleError::NoNodes => NO_NODES.to_string(),
            ScheduleError::Fit(f) => f.message(),
        }
    }
}

/// A successful decision.
#[derive(Debug)]
pub struct Decision {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// A small, fast, deterministic-when-seeded generator for tie breaks (xorshift64*).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// State kept between decisions: where the next node search starts (so consecutive pods
/// look at different nodes first, as kube-scheduler's `nextStartNodeIndex`).
#[derive(Debug)]
pub struct Scheduler {
    pub opts: Options,
    pub next_start: usize,
    pub rng: Rng,
}

impl Scheduler {
    pub fn new(opts: Options, seed: u64) -> Scheduler {
        Scheduler {
            opts,
            next_start: 0,
            rng: Rng::new(seed),
        }
    }

    /// Chooses a node for `pod`, or says why none fits.
    pub fn schedule(&mut self, c: &Cluster, pod: &PodInfo) -> Result<Decision, ScheduleError> {
        let all = c.num_nodes();
        if all == 0 {
            return Err(ScheduleError::NoNodes);
        }
        let pre = PreFilter::compute(c, pod, &HashSet::new());
        // A pod nominated by an earlier preemption tries its node first.
        if !pod.nominated_node.is_empty() {
            if let Some(n) = c.node(&pod.nominated_node).filter(|n| n.present) {
                if filter_node(c, pod, n, &pre).is_none() {
                    return Ok(Decision {
                        node: n.name.clone(),
                        evaluated: 1,
                        feasible: 1,
                    });
                }
            }
        }
        let want = num_feasible_nodes_to_find(all, self.opts.percentage_of_nodes_to_score);
        let nodes = c.nodes();
        let len = nodes.len();
        let start = self.next_start % len.max(1);
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(len));
        let mut statuses: Vec<(String, Status)> = Vec::new();
        let mut processed = 0;
        for k in 0..len {
            if feasible.len() >= want {
                break;
            }
            let n = &nodes[(start + k) % len];
            processed += 1;
            if !n.present {
                continue;
            }
            match filter_node(c, pod, n, &pre) {
                None => feasible.push(n),
                Some(s) => statuses.push((n.name.clone(), s)),
            }
        }
        self.next_start = (start + processed) % len.max(1);
        if feasible.is_empty() {
            return Err(ScheduleError::Fit(FitError {
                num_all_nodes: all,
                statuses,
                post_filter_msg: String::new(),
            }));
        }
        let evaluated = feasible.len() + statuses.len();
        let nfeasible = feasible.len();
        if feasible.len() == 1 {
            return Ok(Decision {
                node: feasible[0].name.clone(),
                evaluated,
                feasible: 1,
            });
        }
        let scores = score_nodes(c, pod, &feasible);
        // Highest score; ties broken uniformly at random (reservoir sampling).
        let mut best = 0usize;
        let mut ties = 0usize;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
                ties = 1;
            } else if *s == scores[best] {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(Decision {
            node: feasible[best].name.clone(),
            evaluated,
            feasible: nfeasible,
        })
    }
}

/// The code of a node's refusal in a FitError (nodes not listed were not refused).
pub fn code_of(f: &FitError, node: &str) -> Option<Code> {
    f.statuses
        .iter()
        .find(|(n, _)| n == node)
        .map(|(_, s)| s.code)
}

/// Every plugin bit, for pods whose failure is not a FitError.
pub fn all_plugins() -> u16 {
    [
        Plugin::NodeUnschedulable,
        Plugin::NodeName,
        Plugin::TaintToleration,
        Plugin::NodeAffinity,
        Plugin::NodePorts,
        Plugin::NodeResourcesFit,
        Plugin::PodTopologySpread,
        Plugin::InterPodAffinity,
        Plugin::VolumeBinding,
    ]
    .iter()
    .fold(0, |m, p| m | p.bit())
}
