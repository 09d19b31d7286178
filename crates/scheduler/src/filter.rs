//! Filters: can this pod go on this node? Each is kube-scheduler's plugin of the same name,
//! with its reasons worded exactly as kube-scheduler words them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::model::{tolerated, Effect, NodeInfo, PodInfo, Taint};

pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const ERR_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_VOLUME_NODE: &str = "node(s) had volume node affinity conflict";

/// The filter plugins, in kube-scheduler's default order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plugin {
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    PodTopologySpread,
    InterPodAffinity,
    VolumeBinding,
}

impl Plugin {
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// `Unschedulable` may be fixed by preempting pods on the node; `Unresolvable` may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    Unresolvable,
}

/// Why one node was refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub plugin: Plugin,
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
}

impl Status {
    fn new(plugin: Plugin, code: Code, reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            plugin,
            code,
            reasons: vec![reason.into()],
        }
    }
}

/// Per-pod state computed once per scheduling attempt (kube-scheduler's PreFilter).
#[derive(Debug, Default)]
pub struct PreFilter {
    /// Topology pairs where an existing pod's required anti-affinity matches this pod.
    existing_anti: HashSet<(String, String)>,
    /// Pods matching all of this pod's required affinity terms, per topology pair.
    affinity_counts: HashMap<(String, String), i64>,
    /// Pods matching one of this pod's required anti-affinity terms, per topology pair.
    anti_counts: HashMap<(String, String), i64>,
    /// Whether this pod matches all of its own required affinity terms.
    affinity_self_match: bool,
    /// Hard spread constraints: matching pods per domain and the minimum.
    spread: Vec<SpreadState>,
    /// Nodes the pod's claims' volumes are pinned to (VolumeBinding; all must be the node).
    volume_nodes: Vec<String>,
}

#[derive(Debug)]
struct SpreadState {
    key: String,
    max_skew: i64,
    self_match: i64,
    counts: HashMap<String, i64>,
    min: i64,
}

/// Whether the pod's nodeSelector and required node affinity allow this node.
pub fn node_affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_ref()
            .is_none_or(|s| s.matches(&node.name, &node.labels))
}

fn first_untolerated<'a>(pod: &PodInfo, node: &'a NodeInfo) -> Option<&'a Taint> {
    node.taints.iter().find(|t| {
        matches!(t.effect, Effect::NoSchedule | Effect::NoExecute)
            && !tolerated(&pod.tolerations, t)
    })
}

/// Whether every term is matched by `p` (an affinity group's own first pod may go anywhere).
fn matches_all(terms: &[crate::model::AffinityTerm], p: &PodInfo, c: &Cluster) -> bool {
    !terms.is_empty()
        && terms
            .iter()
            .all(|t| t.matches(p, &|ns| c.namespace_labels(ns)))
}

impl PreFilter {
    /// Computes the state; `skip` leaves out pods (preemption victims being tried).
    pub fn compute(c: &Cluster, pod: &PodInfo, skip: &HashSet<String>) -> PreFilter {
        let mut s = PreFilter::default();
        for claim in &pod.claims {
            if let Some(n) = c.claim_node(&pod.namespace, claim) {
                if !s.volume_nodes.iter().any(|x| x == n) {
                    s.volume_nodes.push(n.to_string());
                }
            }
        }
        let nsl = |ns: &str| c.namespace_labels(ns);
        // Existing pods' required anti-affinity against this pod.
        for n in c.nodes().iter().filter(|n| n.pods_with_required_anti > 0) {
            for p in &n.pods {
                if skip.contains(&p.uid) || p.uid == pod.uid {
                    continue;
                }
                for t in &p.anti_affinity.required {
                    if let Some(v) = n.labels.get(&t.topology_key) {
                        if t.matches(pod, &nsl) {
                            s.existing_anti.insert((t.topology_key.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        let req_aff = &pod.affinity.required;
        let req_anti = &pod.anti_affinity.required;
        s.affinity_self_match = matches_all(req_aff, pod, c);
        if !req_aff.is_empty() || !req_anti.is_empty() {
            for (n, p) in c.all_pods() {
                if skip.contains(&p.uid) || p.uid == pod.uid {
                    continue;
                }
                if matches_all(req_aff, p, c) {
                    for t in req_aff {
                        if let Some(v) = n.labels.get(&t.topology_key) {
                            *s.affinity_counts
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_default() += 1;
                        }
                    }
                }
                for t in req_anti {
                    if let Some(v) = n.labels.get(&t.topology_key) {
                        if t.matches(p, &nsl) {
                            *s.anti_counts
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
        // Hard topology spread constraints.
        let hard: Vec<_> = pod.spread.iter().filter(|k| k.hard).collect();
        if !hard.is_empty() {
            let mut states: Vec<SpreadState> = hard
                .iter()
                .map(|k| SpreadState {
                    key: k.topology_key.clone(),
                    max_skew: k.max_skew as i64,
                    self_match: k.selects(pod) as i64,
                    counts: HashMap::new(),
                    min: 0,
                })
                .collect();
            for n in c.nodes().iter().filter(|n| n.present) {
                if !hard.iter().all(|k| n.labels.contains_key(&k.topology_key)) {
                    continue;
                }
                for (k, st) in hard.iter().zip(states.iter_mut()) {
                    if k.honor_node_affinity && !node_affinity_matches(pod, n) {
                        continue;
                    }
                    if k.honor_node_taints && first_untolerated(pod, n).is_some() {
                        continue;
                    }
                    let v = &n.labels[&k.topology_key];
                    let cnt = n
                        .pods
                        .iter()
                        .filter(|p| {
                            !p.terminating
                                && p.namespace == pod.namespace
                                && !skip.contains(&p.uid)
                                && p.uid != pod.uid
                                && k.selects(p)
                        })
                        .count() as i64;
                    *st.counts.entry(v.clone()).or_default() += cnt;
                }
            }
            for (k, st) in hard.iter().zip(states.iter_mut()) {
                st.min = if (st.counts.len() as i32) < k.min_domains {
                    0
                } else {
                    st.counts.values().copied().min().unwrap_or(0)
                };
            }
            s.spread = states;
        }
        s
    }
}

/// Runs every filter in order and stops at the first that refuses the node.
pub fn run_filters(pod: &PodInfo, node: &NodeInfo, pre: &PreFilter) -> Option<Status> {
    use Code::*;
    use Plugin::*;
    // NodeUnschedulable
    if node.unschedulable {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: Effect::NoSchedule,
        };
        if !tolerated(&pod.tolerations, &t) {
            return Some(Status::new(
                NodeUnschedulable,
                Unresolvable,
                ERR_UNSCHEDULABLE,
            ));
        }
    }
    // NodeName
    if !pod.node_name.is_empty() && pod.node_name != node.name {
        return Some(Status::new(NodeName, Unresolvable, ERR_NODE_NAME));
    }
    // TaintToleration
    if let Some(t) = first_untolerated(pod, node) {
        return Some(Status::new(
            TaintToleration,
            Unresolvable,
            format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value),
        ));
    }
    // NodeAffinity
    if !node_affinity_matches(pod, node) {
        return Some(Status::new(NodeAffinity, Unresolvable, ERR_NODE_AFFINITY));
    }
    // VolumeBinding (kube-scheduler runs it later; here it is cheap): a volume pinned to a
    // node (a local volume) allows only that node.
    if pre.volume_nodes.iter().any(|n| *n != node.name) {
        return Some(Status::new(VolumeBinding, Unresolvable, ERR_VOLUME_NODE));
    }
    // NodePorts
    if pod
        .host_ports
        .iter()
        .any(|hp| node.used_ports.iter().any(|u| u.conflicts(hp)))
    {
        return Some(Status::new(NodePorts, Unschedulable, ERR_NODE_PORTS));
    }
    // NodeResourcesFit
    if let Some(s) = fit(pod, node) {
        return Some(s);
    }
    // PodTopologySpread
    if !pre.spread.is_empty() {
        if pre.spread.iter().any(|s| !node.labels.contains_key(&s.key)) {
            return Some(Status::new(
                PodTopologySpread,
                Unresolvable,
                ERR_SPREAD_LABEL,
            ));
        }
        for s in &pre.spread {
            let v = &node.labels[&s.key];
            let matched = s.counts.get(v).copied().unwrap_or(0);
            if matched + s.self_match - s.min > s.max_skew {
                return Some(Status::new(PodTopologySpread, Unschedulable, ERR_SPREAD));
            }
        }
    }
    // InterPodAffinity
    let pair_in = |set: &dyn Fn(&(String, String)) -> bool, key: &str| {
        node.labels
            .get(key)
            .is_some_and(|v| set(&(key.to_string(), v.clone())))
    };
    if !pre.existing_anti.is_empty()
        && node
            .labels
            .iter()
            .any(|(k, v)| pre.existing_anti.contains(&(k.clone(), v.clone())))
    {
        return Some(Status::new(
            InterPodAffinity,
            Unschedulable,
            ERR_EXISTING_ANTI,
        ));
    }
    let aff = &pod.affinity.required;
    if !aff.is_empty() {
        let mut pods_exist = true;
        for t in aff {
            if !node.labels.contains_key(&t.topology_key) {
                return Some(Status::new(InterPodAffinity, Unresolvable, ERR_AFFINITY));
            }
            if !pair_in(
                &|p| pre.affinity_counts.get(p).is_some_and(|c| *c > 0),
                &t.topology_key,
            ) {
                pods_exist = false;
            }
        }
        if !pods_exist {
            // The first pod of a group that selects itself may go anywhere.
            if !(pre.affinity_counts.is_empty() && pre.affinity_self_match) {
                return Some(Status::new(InterPodAffinity, Unresolvable, ERR_AFFINITY));
            }
        }
    }
    if pod.anti_affinity.required.iter().any(|t| {
        pair_in(
            &|p| pre.anti_counts.get(p).is_some_and(|c| *c > 0),
            &t.topology_key,
        )
    }) {
        return Some(Status::new(InterPodAffinity, Unschedulable, ERR_ANTI));
    }
    None
}

/// NodeResourcesFit: pods, cpu, memory, ephemeral-storage and extended resources.
pub fn fit(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    let mut unresolvable = false;
    if node.requested.pods + 1 > node.allocatable.pods {
        reasons.push(ERR_TOO_MANY_PODS.into());
    }
    let r = &pod.requests;
    if !r.is_zero() {
        let a = &node.allocatable;
        let u = &node.requested;
        let mut check = |want: i64, used: i64, cap: i64, reason: Cow<'static, str>| {
            if want > 0 && want > cap - used {
                reasons.push(reason);
                if want > cap {
                    unresolvable = true;
                }
            }
        };
        check(
            r.milli_cpu,
            u.milli_cpu,
            a.milli_cpu,
            "Insufficient cpu".into(),
        );
        check(r.memory, u.memory, a.memory, "Insufficient memory".into());
        check(
            r.ephemeral_storage,
            u.ephemeral_storage,
            a.ephemeral_storage,
            "Insufficient ephemeral-storage".into(),
        );
        for (k, want) in &r.scalar {
            check(
                *want,
                u.scalar.get(k).copied().unwrap_or(0),
                a.scalar.get(k).copied().unwrap_or(0),
                format!("Insufficient {k}").into(),
            );
        }
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Status {
        plugin: Plugin::NodeResourcesFit,
        code: if unresolvable {
            Code::Unresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
    })
}

/// Filters a node, holding room for pods nominated to it with at least this pod's
/// priority (kube-scheduler runs the filters with and without them).
pub fn filter_node(c: &Cluster, pod: &PodInfo, node: &NodeInfo, pre: &PreFilter) -> Option<Status> {
    if c.has_nominations() {
        let nominated = c.nominated_for(&node.name, pod.priority, &pod.uid);
        if !nominated.is_empty() {
            let mut with = node.clone();
            for p in nominated {
                with.add_pod(Arc::clone(&p));
            }
            if let Some(s) = run_filters(pod, &with, pre) {
                return Some(s);
            }
        }
    }
    run_filters(pod, node, pre)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volume_binding_keeps_pods_on_their_local_volumes_node() {
        let mut c = Cluster::new();
        for n in ["n1", "n2"] {
            let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                "metadata": {"name": n},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
            }))
            .unwrap();
            c.upsert_node(&node);
        }
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c"}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .unwrap();
        let p = PodInfo::from_pod(&pod);
        assert_eq!(p.claims, vec!["data".to_string()]);
        let fits = |c: &Cluster| -> Vec<String> {
            let pre = PreFilter::compute(c, &p, &HashSet::new());
            c.nodes()
                .iter()
                .filter(|n| run_filters(&p, n, &pre).is_none())
                .map(|n| n.name.clone())
                .collect()
        };
        assert_eq!(fits(&c).len(), 2, "an unpinned claim allows any node");
        c.set_claim_nodes(HashMap::from([("ns/data".to_string(), "n2".to_string())]));
        assert_eq!(fits(&c), vec!["n2".to_string()]);
        let pre = PreFilter::compute(&c, &p, &HashSet::new());
        let n1 = c.nodes().iter().find(|n| n.name == "n1").unwrap();
        let st = run_filters(&p, n1, &pre).unwrap();
        assert_eq!(st.plugin, Plugin::VolumeBinding);
        assert_eq!(st.reasons, vec![ERR_VOLUME_NODE]);
    }
}
