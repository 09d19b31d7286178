//! Scores: which feasible node is best? kube-scheduler's default score plugins, each
//! normalized to 0–100 and weighted as in its default profile.

use std::collections::{HashMap, HashSet};

use crate::cluster::Cluster;
use crate::filter::node_affinity_matches;
use crate::model::{tolerated, Effect, NodeInfo, PodInfo, SpreadConstraint, Toleration};

pub const MAX_NODE_SCORE: i64 = 100;

pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
pub const WEIGHT_BALANCED: i64 = 1;
pub const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;
pub const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
/// Weight of an existing pod's required affinity term that the incoming pod matches.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

const HOSTNAME: &str = "kubernetes.io/hostname";

/// NodeResourcesFit with the LeastAllocated strategy (cpu and memory, weight 1 each),
/// on requests with Kubernetes' non-zero defaults.
pub fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let one = |req: i64, cap: i64| {
        if cap == 0 || req > cap {
            0
        } else {
            (cap - req) * MAX_NODE_SCORE / cap
        }
    };
    let cpu = one(n.non_zero_cpu + pod.non_zero_cpu, n.allocatable.milli_cpu);
    let mem = one(n.non_zero_mem + pod.non_zero_mem, n.allocatable.memory);
    (cpu + mem) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − standard deviation of the cpu and memory
/// fractions), on actual requests.
pub fn balanced_allocation(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let frac = |req: i64, cap: i64| {
        if cap == 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let c = frac(
        n.requested.milli_cpu + pod.requests.milli_cpu,
        n.allocatable.milli_cpu,
    );
    let m = frac(
        n.requested.memory + pod.requests.memory,
        n.allocatable.memory,
    );
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// The tolerations that count for TaintToleration's score (effect empty or
/// PreferNoSchedule).
pub fn prefer_no_schedule_tolerations(pod: &PodInfo) -> Vec<Toleration> {
    pod.tolerations
        .iter()
        .filter(|t| t.effect.is_none_or(|e| e == Effect::PreferNoSchedule))
        .cloned()
        .collect()
}

/// TaintToleration raw score: PreferNoSchedule taints the pod does not tolerate.
pub fn taint_count(tols: &[Toleration], n: &NodeInfo) -> i64 {
    n.taints
        .iter()
        .filter(|t| t.effect == Effect::PreferNoSchedule && !tolerated(tols, t))
        .count() as i64
}

/// NodeAffinity raw score: the weights of the preferred terms the node matches.
pub fn node_affinity_score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(w, t)| *w != 0 && t.matches(&n.name, &n.labels))
        .map(|(w, _)| *w as i64)
        .sum()
}

/// kube-scheduler's `DefaultNormalizeScore`.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// InterPodAffinity: preferred affinity and anti-affinity of the pod against existing
/// pods, and of existing pods against the pod, summed per topology domain, min-max
/// normalized.
pub fn inter_pod_affinity(c: &Cluster, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
    let has_pref = !pod.affinity.preferred.is_empty() || !pod.anti_affinity.preferred.is_empty();
    let nsl = |ns: &str| c.namespace_labels(ns);
    let mut topo: HashMap<(String, String), i64> = HashMap::new();
    let mut add = |n: &NodeInfo, key: &str, w: i64| {
        if let Some(v) = n.labels.get(key) {
            *topo.entry((key.to_string(), v.clone())).or_default() += w;
        }
    };
    for n in c.nodes().iter().filter(|n| n.present) {
        if !has_pref && n.pods_with_affinity == 0 {
            continue;
        }
        for p in &n.pods {
            if p.uid == pod.uid {
                continue;
            }
            for (w, t) in &pod.affinity.preferred {
                if t.matches(p, &nsl) {
                    add(n, &t.topology_key, *w as i64);
                }
            }
            for (w, t) in &pod.anti_affinity.preferred {
                if t.matches(p, &nsl) {
                    add(n, &t.topology_key, -(*w as i64));
                }
            }
            if !p.has_affinity() {
                continue;
            }
            for t in &p.affinity.required {
                if t.matches(pod, &nsl) {
                    add(n, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for (w, t) in &p.affinity.preferred {
                if t.matches(pod, &nsl) {
                    add(n, &t.topology_key, *w as i64);
                }
            }
            for (w, t) in &p.anti_affinity.preferred {
                if t.matches(pod, &nsl) {
                    add(n, &t.topology_key, -(*w as i64));
                }
            }
        }
    }
    let mut scores: Vec<i64> = feasible
        .iter()
        .map(|n| {
            topo.iter()
                .filter(|((k, v), _)| n.labels.get(k) == Some(v))
                .map(|(_, s)| *s)
                .sum()
        })
        .collect();
    if topo.is_empty() {
        scores.iter_mut().for_each(|s| *s = 0);
        return scores;
    }
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = if max - min > 0 {
            MAX_NODE_SCORE * (*s - min) / (max - min)
        } else {
            0
        };
    }
    scores
}

/// PodTopologySpread scoring over the pod's ScheduleAnyway constraints, or the system
/// default constraints when it has none of its own. `None` when nothing is scored.
pub fn topology_spread(c: &Cluster, pod: &PodInfo, feasible: &[&NodeInfo]) -> Option<Vec<i64>> {
    let system_defaulted = pod.spread.is_empty();
    let constraints: Vec<SpreadConstraint> = if system_defaulted {
        pod.default_spread()
    } else {
        pod.spread.iter().filter(|k| !k.hard).cloned().collect()
    };
    if constraints.is_empty() {
        return None;
    }
    let require_all = !system_defaulted;
    let has_all = |n: &NodeInfo| {
        constraints
            .iter()
            .all(|k| n.labels.contains_key(&k.topology_key))
    };
    let ignored: Vec<bool> = feasible
        .iter()
        .map(|n| require_all && !has_all(n))
        .collect();
    let counts_on = |n: &NodeInfo, k: &SpreadConstraint| {
        n.pods
            .iter()
            .filter(|p| {
                !p.terminating && p.namespace == pod.namespace && p.uid != pod.uid && k.selects(p)
            })
            .count() as i64
    };
    // Domains of the non-hostname keys among the feasible nodes.
    let mut pair_counts: HashMap<(usize, String), i64> = HashMap::new();
    for (n, ign) in feasible.iter().zip(&ignored) {
        if *ign {
            continue;
        }
        for (i, k) in constraints.iter().enumerate() {
            if k.topology_key != HOSTNAME {
                if let Some(v) = n.labels.get(&k.topology_key) {
                    pair_counts.insert((i, v.clone()), 0);
                }
            }
        }
    }
    if !pair_counts.is_empty() {
        for n in c.nodes().iter().filter(|n| n.present) {
            if require_all && !has_all(n) {
                continue;
            }
            for (i, k) in constraints.iter().enumerate() {
                if k.topology_key == HOSTNAME {
                    continue;
                }
                if k.honor_node_affinity && !node_affinity_matches(pod, n) {
                    continue;
                }
                if k.honor_node_taints
                    && n.taints.iter().any(|t| {
                        matches!(t.effect, Effect::NoSchedule | Effect::NoExecute)
                            && !tolerated(&pod.tolerations, t)
                    })
                {
                    continue;
                }
                if let Some(v) = n.labels.get(&k.topology_key) {
                    if let Some(e) = pair_counts.get_mut(&(i, v.clone())) {
                        *e += counts_on(n, k);
                    }
                }
            }
        }
    }
    let not_ignored = ignored.iter().filter(|i| !**i).count();
    let weights: Vec<f64> = constraints
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let size = if k.topology_key == HOSTNAME {
                not_ignored
            } else {
                pair_counts
                    .keys()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, v)| v)
                    .collect::<HashSet<_>>()
                    .len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<i64> = feasible
        .iter()
        .zip(&ignored)
        .map(|(n, ign)| {
            if *ign {
                return 0;
            }
            let mut score = 0.0;
            for (i, k) in constraints.iter().enumerate() {
                if let Some(v) = n.labels.get(&k.topology_key) {
                    let cnt = if k.topology_key == HOSTNAME {
                        counts_on(n, k)
                    } else {
                        pair_counts.get(&(i, v.clone())).copied().unwrap_or(0)
                    };
                    score += cnt as f64 * weights[i] + (k.max_skew - 1) as f64;
                }
            }
            score.round() as i64
        })
        .collect();
    let live = raw
        .iter()
        .zip(&ignored)
        .filter(|(_, i)| !**i)
        .map(|(s, _)| *s);
    let min = live.clone().min().unwrap_or(0);
    let max = live.max().unwrap_or(0);
    Some(
        raw.iter()
            .zip(&ignored)
            .map(|(s, ign)| {
                if *ign {
                    0
                } else if max == 0 {
                    MAX_NODE_SCORE
                } else {
                    MAX_NODE_SCORE * (max + min - s) / max
                }
            })
            .collect(),
    )
}

/// The weighted sum of every score plugin for each feasible node.
pub fn score_nodes(c: &Cluster, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
    let mut total: Vec<i64> = feasible
        .iter()
        .map(|n| {
            WEIGHT_LEAST_ALLOCATED * least_allocated(pod, n)
                + WEIGHT_BALANCED * balanced_allocation(pod, n)
        })
        .collect();
    let tols = prefer_no_schedule_tolerations(pod);
    let mut taints: Vec<i64> = feasible.iter().map(|n| taint_count(&tols, n)).collect();
    default_normalize(&mut taints, true);
    let mut aff: Vec<i64> = feasible
        .iter()
        .map(|n| node_affinity_score(pod, n))
        .collect();
    default_normalize(&mut aff, false);
    for i in 0..total.len() {
        total[i] += WEIGHT_TAINT_TOLERATION * taints[i] + WEIGHT_NODE_AFFINITY * aff[i];
    }
    if let Some(ts) = topology_spread(c, pod, feasible) {
        for (t, s) in total.iter_mut().zip(ts) {
            *t += WEIGHT_TOPOLOGY_SPREAD * s;
        }
    }
    let any_affinity = pod.has_affinity() || c.nodes().iter().any(|n| n.pods_with_affinity > 0);
    if any_affinity {
        for (t, s) in total.iter_mut().zip(inter_pod_affinity(c, pod, feasible)) {
            *t += WEIGHT_INTER_POD_AFFINITY * s;
        }
    }
    total
}
