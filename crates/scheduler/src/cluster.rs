//! The scheduler's view of the cluster: every node with the pods on it, updated in place
//! as watch events arrive and as the scheduler assumes its own decisions. Scheduling reads
//! it directly (no per-pod snapshot copy).

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{NodeInfo, PodInfo};
use crate::selector::Labels;

/// Where a pod is accounted.
#[derive(Clone, Debug)]
struct Placement {
    node: String,
    /// Placed by this scheduler, binding not yet seen in the watch.
    assumed: bool,
}

#[derive(Debug, Default)]
pub struct Cluster {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    placements: HashMap<String, Placement>,
    namespaces: HashMap<String, Labels>,
    /// Pods nominated to a node by preemption, keyed by node: their resources are held
    /// for them against pods of lower priority.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_at: HashMap<String, String>,
    /// Count of present nodes.
    present: usize,
    /// `namespace/claim` → the node its volume is on (a bound local volume's node affinity,
    /// or the node chosen for it), for VolumeBinding.
    claim_nodes: HashMap<String, String>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Every node slot, including placeholders for pods on unknown nodes (`present` false).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn num_nodes(&self) -> usize {
        self.present
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo::new(name));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Adds or updates a node; returns whether anything that matters for scheduling changed.
    pub fn upsert_node(&mut self, n: &k8s_openapi::api::core::v1::Node) -> bool {
        let name = n.metadata.name.clone().unwrap_or_default();
        let slot = self.slot(&name);
        let was = slot.present;
        let changed = slot.set_node(n);
        if !was {
            self.present += 1;
        }
        changed
    }

    /// Removes a node; pods still bound to it keep a placeholder until they go.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.get(name).copied() else {
            return;
        };
        if self.nodes[i].present {
            self.present -= 1;
        }
        if self.nodes[i].pods.is_empty() {
            self.drop_slot(i);
        } else {
            let n = &mut self.nodes[i];
            n.present = false;
            n.labels.clear();
            n.taints.clear();
            n.allocatable = Default::default();
        }
    }

    fn drop_slot(&mut self, i: usize) {
        let gone = self.nodes.swap_remove(i);
        self.index.remove(&gone.name);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    pub fn set_namespace(&mut self, name: &str, labels: Labels) {
        self.namespaces.insert(name.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Replaces the claims' nodes (VolumeBinding); whether anything changed.
    pub fn set_claim_nodes(&mut self, m: HashMap<String, String>) -> bool {
        let changed = m != self.claim_nodes;
        self.claim_nodes = m;
        changed
    }

    /// The node a claim's volume is on, if it is pinned to one.
    pub fn claim_node(&self, ns: &str, claim: &str) -> Option<&str> {
        self.claim_nodes
            .get(&format!("{ns}/{claim}"))
            .map(String::as_str)
    }

    pub fn namespace_labels(&self, name: &str) -> Option<Labels> {
        self.namespaces.get(name).cloned()
    }

    /// Where the pod with this uid is accounted, and whether only assumed.
    pub fn placement(&self, uid: &str) -> Option<(&str, bool)> {
        self.placements
            .get(uid)
            .map(|p| (p.node.as_str(), p.assumed))
    }

    /// Accounts a pod on its node (from the watch: bound), replacing an earlier version.
    pub fn add_bound_pod(&mut self, p: Arc<PodInfo>) {
        self.remove_pod(&p.uid);
        let node = p.node_name.clone();
        self.placements.insert(
            p.uid.clone(),
            Placement {
                node: node.clone(),
                assumed: false,
            },
        );
        self.slot(&node).add_pod(p);
    }

    /// Accounts a pod on the node this scheduler chose, before the binding is seen.
    pub fn assume(&mut self, p: &PodInfo, node: &str) {
        self.remove_pod(&p.uid);
        self.clear_nominated(&p.uid);
        let mut a = p.clone();
        a.node_name = node.to_string();
        self.placements.insert(
            p.uid.clone(),
            Placement {
                node: node.to_string(),
                assumed: true,
            },
        );
        self.slot(node).add_pod(Arc::new(a));
    }

    /// Forgets a pod (deleted, finished, or its assumed binding failed).
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let pl = self.placements.remove(uid)?;
        let i = self.index.get(&pl.node).copied()?;
        let p = self.nodes[i].remove_pod(uid);
        if !self.nodes[i].present && self.nodes[i].pods.is_empty() {
            self.drop_slot(i);
        }
        p
    }

    /// Records that `p` waits for room on `node` made by preemption.
    pub fn nominate(&mut self, p: Arc<PodInfo>, node: &str) {
        self.clear_nominated(&p.uid);
        self.nominated_at.insert(p.uid.clone(), node.to_string());
        self.nominated.entry(node.to_string()).or_default().push(p);
    }

    pub fn clear_nominated(&mut self, uid: &str) {
        if let Some(node) = self.nominated_at.remove(uid) {
            if let Some(v) = self.nominated.get_mut(&node) {
                v.retain(|p| p.uid != uid);
                if v.is_empty() {
                    self.nominated.remove(&node);
                }
            }
        }
    }

    /// Pods nominated to `node` with at least `priority`, other than `uid`.
    pub fn nominated_for(&self, node: &str, priority: i32, uid: &str) -> Vec<Arc<PodInfo>> {
        self.nominated
            .get(node)
            .map(|v| {
                v.iter()
                    .filter(|p| p.priority >= priority && p.uid != uid)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_nominations(&self) -> bool {
        !self.nominated.is_empty()
    }

    /// Every pod on every node.
    pub fn all_pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }

    /// How many pods are accounted (bound and assumed).
    pub fn num_pods(&self) -> usize {
        self.placements.len()
    }
}
