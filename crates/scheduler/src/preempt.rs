//! Preemption (kube-scheduler's DefaultPreemption): when a pod fits nowhere, find the node
//! where evicting the fewest, least important lower-priority pods lets it fit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::filter::{run_filters, Code, PreFilter, Status};
use crate::model::PodInfo;
use crate::schedule::{histogram_message, FitError, NO_VICTIMS, PREEMPTION_NOT_HELPFUL};

/// At most this many candidate nodes are dry-run (kube-scheduler's
/// `minCandidateNodesAbsolute`; its percentage, 10 %, is smaller for up to 1,000 nodes).
const MAX_CANDIDATES: usize = 100;

/// The chosen node and the pods to evict there.
#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Higher priority first, then the pod that started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.created.cmp(&b.created))
}

/// Why preemption did not happen.
#[derive(Debug, PartialEq)]
pub struct NoPreemption {
    /// The post-filter message, without its `preemption: ` prefix.
    pub message: String,
    /// Whether the pod's nominated node is to be cleared (no candidate was found; an
    /// ineligible pod keeps its nomination).
    pub clear_nomination: bool,
}

impl NoPreemption {
    fn ineligible(m: &str) -> NoPreemption {
        NoPreemption {
            message: m.to_string(),
            clear_nomination: false,
        }
    }
}

/// Finds a preemption for `pod` after `fit` refused every node.
pub fn preempt(c: &Cluster, pod: &PodInfo, fit: &FitError) -> Result<Preemption, NoPreemption> {
    if pod.preemption_never {
        return Err(NoPreemption::ineligible(
            "not eligible due to preemptionPolicy=Never.",
        ));
    }
    if !pod.nominated_node.is_empty() {
        let code = crate::schedule::code_of(fit, &pod.nominated_node);
        if code != Some(Code::Unresolvable) {
            if let Some(n) = c.node(&pod.nominated_node) {
                if n.pods
                    .iter()
                    .any(|p| p.terminating && p.priority < pod.priority)
                {
                    return Err(NoPreemption::ineligible(
                        "not eligible due to a terminating pod on the nominated node.",
                    ));
                }
            }
        }
    }
    let potential: Vec<&str> = fit
        .statuses
        .iter()
        .filter(|(_, s)| s.code == Code::Unschedulable)
        .map(|(n, _)| n.as_str())
        .collect();
    let base_pre = PreFilter::compute(c, pod, &HashSet::new());
    let needs_recompute = !pod.affinity.required.is_empty()
        || !pod.anti_affinity.required.is_empty()
        || pod.spread.iter().any(|k| k.hard)
        || c.nodes().iter().any(|n| n.pods_with_required_anti > 0);
    let mut results: Vec<(String, Status)> = Vec::new();
    let mut candidates: Vec<Preemption> = Vec::new();
    for name in potential {
        if candidates.len() >= MAX_CANDIDATES {
            break;
        }
        let Some(node) = c.node(name) else { continue };
        let mut victims: Vec<Arc<PodInfo>> = node
            .pods
            .iter()
            .filter(|p| p.priority < pod.priority)
            .cloned()
            .collect();
        if victims.is_empty() {
            results.push((name.to_string(), status(Code::Unresolvable, NO_VICTIMS)));
            continue;
        }
        let mut sim = node.clone();
        for v in &victims {
            sim.remove_pod(&v.uid);
        }
        let skip: HashSet<String> = victims.iter().map(|v| v.uid.clone()).collect();
        let pre = if needs_recompute {
            PreFilter::compute(c, pod, &skip)
        } else {
            PreFilter::default()
        };
        let pre = if needs_recompute { &pre } else { &base_pre };
        let nominated = c.nominated_for(name, pod.priority, &pod.uid);
        for p in &nominated {
            sim.add_pod(Arc::clone(p));
        }
        if let Some(s) = run_filters(pod, &sim, pre) {
            results.push((name.to_string(), s));
            continue;
        }
        // Reprieve as many as possible, most important first.
        victims.sort_by(|a, b| more_important(a, b));
        let mut chosen = Vec::new();
        for v in victims {
            sim.add_pod(Arc::clone(&v));
            if run_filters(pod, &sim, pre).is_some() {
                sim.remove_pod(&v.uid);
                chosen.push(v);
            }
        }
        if chosen.is_empty() {
            // It fits without evicting anything (only possible with a stale view).
            continue;
        }
        candidates.push(Preemption {
            node: name.to_string(),
            victims: chosen,
        });
    }
    if candidates.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, s) in &results {
            for r in &s.reasons {
                *counts.entry(r.as_ref()).or_default() += 1;
            }
        }
        let rest = fit.num_all_nodes.saturating_sub(results.len());
        if rest > 0 {
            *counts.entry(PREEMPTION_NOT_HELPFUL).or_default() += rest;
        }
        return Err(NoPreemption {
            message: histogram_message(fit.num_all_nodes, &counts, ""),
            clear_nomination: true,
        });
    }
    // kube-scheduler's pickOneNodeForPreemption (without PDBs): lowest highest-victim
    // priority, then lowest sum of priorities, then fewest victims.
    let key = |p: &Preemption| {
        let top = p
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = p
            .victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        (top, sum, p.victims.len())
    };
    let best = candidates
        .into_iter()
        .min_by_key(key)
        .expect("candidates is not empty");
    Ok(best)
}

fn status(code: Code, reason: &'static str) -> Status {
    Status {
        plugin: crate::filter::Plugin::NodeResourcesFit,
        code,
        reasons: vec![reason.into()],
    }
}
