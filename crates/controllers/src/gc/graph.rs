//! The garbage collector's dependency graph (kube-controller-manager's `GraphBuilder` and
//! `uidToNode`): one node per object uid with its owner references and the uids of its
//! dependents, plus "virtual" nodes for owners that were named but not observed yet. Pure
//! data: the watchers feed [`Graph::observe`] and [`Graph::remove`], which return the work
//! the change makes necessary; [`decide`] is the collector's per-object decision.

use std::collections::{HashMap, HashSet, VecDeque};

/// The finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";

/// One entry of `metadata.ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// Which object a node stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// What a watcher saw of one object.
#[derive(Clone, Debug)]
pub struct Observed {
    pub identity: Identity,
    pub owners: Vec<OwnerRef>,
    pub being_deleted: bool,
    pub finalizers: Vec<String>,
}

impl Observed {
    fn has(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// Work for the collector's queue, by object uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Decide whether the object should go (kube's `attemptToDelete`).
    Delete(String),
    /// Remove the object from its dependents' owner references, then drop its `orphan`
    /// finalizer (kube's `attemptToOrphan`).
    Orphan(String),
}

#[derive(Debug)]
struct Node {
    identity: Identity,
    owners: Vec<OwnerRef>,
    dependents: HashSet<String>,
    being_deleted: bool,
    deleting_dependents: bool,
    /// Whether the deletion waits on the `orphan` finalizer (for transitions).
    orphaning: bool,
    /// False for a virtual node: named by an owner reference, not seen by a watcher.
    observed: bool,
    /// The watched resource it came from and the list generation that last saw it.
    source: Option<(usize, u64)>,
}

impl Node {
    fn virtual_of(r: &OwnerRef, namespace: Option<String>) -> Node {
        Node {
            identity: Identity {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                namespace,
                name: r.name.clone(),
                uid: r.uid.clone(),
            },
            owners: Vec::new(),
            dependents: HashSet::new(),
            being_deleted: false,
            deleting_dependents: false,
            orphaning: false,
            observed: false,
            source: None,
        }
    }
}

/// A snapshot of one node for the workers.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub identity: Identity,
    pub observed: bool,
    pub being_deleted: bool,
    pub deleting_dependents: bool,
    pub dependents: usize,
    /// Whether any dependent is itself waiting for its dependents (cycle guard).
    pub dependent_deleting_dependents: bool,
}

/// What the graph knows about an owner, when it has observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Exists, being deleted in the foreground.
    Waiting,
}

/// Owners recently found absent (kube's `absentOwnerCache`): (namespace or "", uid).
#[derive(Debug)]
struct AbsentCache {
    set: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
    cap: usize,
}

impl AbsentCache {
    fn add(&mut self, k: (String, String)) {
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The dependency graph.
#[derive(Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    absent: AbsentCache,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new(500)
    }
}

impl Graph {
    /// An empty graph remembering up to `absent_cap` absent owners.
    pub fn new(absent_cap: usize) -> Self {
        Graph {
            nodes: HashMap::new(),
            absent: AbsentCache {
                set: HashSet::new(),
                order: VecDeque::new(),
                cap: absent_cap.max(1),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds or updates an observed object (from resource `source`, list generation `gen`).
    pub fn observe(&mut self, o: Observed, source: usize, gen: u64, out: &mut Vec<Work>) {
        let uid = o.identity.uid.clone();
        if uid.is_empty() {
            return;
        }
        let starts_orphaning = o.being_deleted && o.has(ORPHAN);
        let starts_foreground = o.being_deleted && o.has(FOREGROUND);
        let (was_orphaning, was_foreground, old_owners) = match self.nodes.get_mut(&uid) {
            Some(n) => {
                let prev = (
                    n.orphaning,
                    n.deleting_dependents,
                    std::mem::take(&mut n.owners),
                );
                // A virtual node takes the real identity now that it is observed.
                n.identity = o.identity.clone();
                n.observed = true;
                n.source = Some((source, gen));
                n.being_deleted |= o.being_deleted;
                n.orphaning = starts_orphaning;
                n.owners = o.owners.clone();
                prev
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: o.identity.clone(),
                        owners: o.owners.clone(),
                        dependents: HashSet::new(),
                        being_deleted: o.being_deleted,
                        deleting_dependents: false,
                        orphaning: starts_orphaning,
                        observed: true,
                        source: Some((source, gen)),
                    },
                );
                (false, false, Vec::new())
            }
        };
        // Owner reference changes.
        let ns = o.identity.namespace.clone();
        for old in &old_owners {
            match o.owners.iter().find(|n| n.uid == old.uid) {
                None => {
                    if let Some(owner) = self.nodes.get_mut(&old.uid) {
                        owner.dependents.remove(&uid);
                    }
                    // A blocking reference went away: the owner may be able to finish.
                    if old.block_owner_deletion && self.nodes.contains_key(&old.uid) {
                        out.push(Work::Delete(old.uid.clone()));
                    }
                }
                Some(new) => {
                    if old.block_owner_deletion
                        && !new.block_owner_deletion
                        && self.nodes.contains_key(&old.uid)
                    {
                        out.push(Work::Delete(old.uid.clone()));
                    }
                }
            }
        }
        for r in &o.owners {
            if old_owners.iter().any(|x| x.uid == r.uid) {
                continue;
            }
            self.add_dependent(r, ns.clone(), &uid, out);
        }
        // Deletion transitions.
        if starts_orphaning && !was_orphaning {
            out.push(Work::Orphan(uid));
            return;
        }
        if starts_foreground && !was_foreground {
            if let Some(n) = self.nodes.get_mut(&uid) {
                n.deleting_dependents = true;
                out.extend(n.dependents.iter().cloned().map(Work::Delete));
            }
            out.push(Work::Delete(uid));
        } else if let Some(n) = self.nodes.get_mut(&uid) {
            // The foreground finalizer can be dropped again (a later background delete).
            n.deleting_dependents = starts_foreground;
        }
    }

    fn add_dependent(
        &mut self,
        r: &OwnerRef,
        ns: Option<String>,
        dependent: &str,
        out: &mut Vec<Work>,
    ) {
        if r.uid.is_empty() && r.name.is_empty() {
            return;
        }
        match self.nodes.get_mut(&r.uid) {
            Some(owner) => {
                owner.dependents.insert(dependent.to_string());
            }
            None => {
                // A virtual node: a worker asks the API whether this owner exists.
                let mut n = Node::virtual_of(r, ns);
                n.dependents.insert(dependent.to_string());
                self.nodes.insert(r.uid.clone(), n);
                out.push(Work::Delete(r.uid.clone()));
            }
        }
    }

    /// Removes an object that was deleted (or found absent): its dependents are checked,
    /// and owners waiting for their dependents may finish.
    pub fn remove(&mut self, uid: &str, out: &mut Vec<Work>) {
        let Some(n) = self.nodes.remove(uid) else {
            return;
        };
        for r in &n.owners {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.remove(uid);
                if owner.deleting_dependents {
                    out.push(Work::Delete(r.uid.clone()));
                }
            }
        }
        if !n.dependents.is_empty() {
            self.absent.add((
                n.identity.namespace.clone().unwrap_or_default(),
                uid.to_string(),
            ));
            // Dependents keep their reference; a virtual node would only be re-created,
            // so the dependents are checked now.
            out.extend(n.dependents.into_iter().map(Work::Delete));
        }
    }

    /// After a (re)list of resource `source` at generation `gen`: removes its objects the
    /// list did not return (deleted while the watch was down).
    pub fn sweep(&mut self, source: usize, gen: u64, out: &mut Vec<Work>) {
        let stale: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.source, Some((s, g)) if s == source && g < gen))
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            self.remove(&uid, out);
        }
    }

    /// A snapshot of node `uid`.
    pub fn view(&self, uid: &str) -> Option<NodeView> {
        let n = self.nodes.get(uid)?;
        Some(NodeView {
            identity: n.identity.clone(),
            observed: n.observed,
            being_deleted: n.being_deleted,
            deleting_dependents: n.deleting_dependents,
            dependents: n.dependents.len(),
            dependent_deleting_dependents: n
                .dependents
                .iter()
                .filter_map(|d| self.nodes.get(d))
                .any(|d| d.deleting_dependents),
        })
    }

    /// The dependents of `uid` that block its deletion (`blockOwnerDeletion: true`), with
    /// whether each is itself deleting its dependents.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<(String, bool)> {
        let Some(n) = self.nodes.get(uid) else {
            return Vec::new();
        };
        n.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d).map(|dn| (d, dn)))
            .filter(|(_, dn)| {
                dn.owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion)
            })
            .map(|(d, dn)| (d.clone(), dn.deleting_dependents))
            .collect()
    }

    /// The observed dependents of `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<Identity> {
        let Some(n) = self.nodes.get(uid) else {
            return Vec::new();
        };
        n.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| d.observed)
            .map(|d| d.identity.clone())
            .collect()
    }

    /// What the graph knows of the owner `r` of an object in `namespace`: `None` when it
    /// has not observed an object with that uid, name and kind (then the API is asked).
    pub fn owner_state(&self, r: &OwnerRef) -> Option<OwnerState> {
        let n = self.nodes.get(&r.uid)?;
        if !n.observed || n.identity.name != r.name || n.identity.kind != r.kind {
            return None;
        }
        if group_of(&n.identity.api_version) != group_of(&r.api_version) {
            return None;
        }
        Some(if n.deleting_dependents {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        })
    }

    /// Whether owner `uid` was recently found absent (in `namespace`, or cluster-wide).
    pub fn known_absent(&self, namespace: Option<&str>, uid: &str) -> bool {
        self.absent.set.contains(&(String::new(), uid.to_string()))
            || namespace
                .is_some_and(|ns| self.absent.set.contains(&(ns.to_string(), uid.to_string())))
    }

    /// Remembers that owner `uid` does not exist (in `namespace`, `None` cluster-wide).
    pub fn mark_absent(&mut self, namespace: Option<&str>, uid: &str) {
        self.absent
            .add((namespace.unwrap_or("").to_string(), uid.to_string()));
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// How an owner reference stands, for the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefClass {
    /// The owner exists and is not deleting in the foreground.
    Solid,
    /// The owner does not exist (or has another uid).
    Dangling,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// A propagation policy for a delete the collector sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// What to do with an object whose owners were classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It has a live owner and nothing to clean up.
    Keep,
    /// It has a live owner: drop the references to absent or foreground-deleting owners.
    RemoveRefs(Vec<String>),
    /// An owner waits for it and it has dependents itself: delete it in the foreground,
    /// after making its own references non-blocking when `unblock` (cycle guard).
    DeleteForeground { unblock: bool },
    /// No live owner: delete it.
    Delete(Policy),
}

/// kube-controller-manager's decision in `attemptToDeleteItem`, for an object with
/// classified owner references `refs`, whether it has dependents and whether one of them
/// is deleting its own dependents, and its finalizers.
pub fn decide(
    refs: &[(OwnerRef, RefClass)],
    has_dependents: bool,
    dependent_deleting_dependents: bool,
    finalizers: &[String],
) -> Decision {
    if refs.is_empty() {
        return Decision::Keep;
    }
    let solid = refs.iter().any(|(_, c)| *c == RefClass::Solid);
    let waiting = refs.iter().any(|(_, c)| *c == RefClass::Waiting);
    if solid {
        let drop: Vec<String> = refs
            .iter()
            .filter(|(_, c)| *c != RefClass::Solid)
            .map(|(r, _)| r.uid.clone())
            .collect();
        return if drop.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveRefs(drop)
        };
    }
    if waiting && has_dependents {
        return Decision::DeleteForeground {
            unblock: dependent_deleting_dependents,
        };
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Decision::Delete(if has(ORPHAN) {
        Policy::Orphan
    } else if has(FOREGROUND) {
        Policy::Foreground
    } else {
        Policy::Background
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn oref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerRef {
        OwnerRef {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            block_owner_deletion: block,
        }
    }

    fn obs(identity: Identity, owners: Vec<OwnerRef>) -> Observed {
        Observed {
            identity,
            owners,
            being_deleted: false,
            finalizers: vec![],
        }
    }

    /// Deployment d → ReplicaSet r → Pods p1, p2.
    fn chain(g: &mut Graph) -> Vec<Work> {
        let mut out = vec![];
        g.observe(obs(id("Deployment", "d", "d"), vec![]), 0, 1, &mut out);
        g.observe(
            obs(
                id("ReplicaSet", "r", "r"),
                vec![oref("Deployment", "d", "d", true)],
            ),
            1,
            1,
            &mut out,
        );
        for p in ["p1", "p2"] {
            g.observe(
                obs(id("Pod", p, p), vec![oref("ReplicaSet", "r", "r", true)]),
                2,
                1,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn index_maps_owner_uid_to_dependents() {
        let mut g = Graph::default();
        let out = chain(&mut g);
        assert!(out.is_empty(), "owners observed first: nothing to verify");
        assert_eq!(g.view("d").unwrap().dependents, 1);
        assert_eq!(g.view("r").unwrap().dependents, 2);
        let mut deps: Vec<String> = g.dependents("r").into_iter().map(|i| i.name).collect();
        deps.sort();
        assert_eq!(deps, ["p1", "p2"]);
    }

    #[test]
    fn owner_seen_after_its_dependent_is_a_virtual_node_to_verify() {
        let mut g = Graph::default();
        let mut out = vec![];
        g.observe(
            obs(
                id("Pod", "p", "p"),
                vec![oref("ReplicaSet", "r", "r", true)],
            ),
            2,
            1,
            &mut out,
        );
        assert_eq!(out, vec![Work::Delete("r".into())]);
        let v = g.view("r").unwrap();
        assert!(!v.observed);
        assert_eq!(g.owner_state(&oref("ReplicaSet", "r", "r", true)), None);
        out.clear();
        g.observe(obs(id("ReplicaSet", "r", "r"), vec![]), 1, 1, &mut out);
        assert!(g.view("r").unwrap().observed);
        assert_eq!(g.view("r").unwrap().dependents, 1);
        assert_eq!(
            g.owner_state(&oref("ReplicaSet", "r", "r", true)),
            Some(OwnerState::Solid)
        );
        // A reference naming another kind or name is not vouched for by the graph.
        assert_eq!(g.owner_state(&oref("ReplicaSet", "other", "r", true)), None);
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents() {
        let mut g = Graph::default();
        chain(&mut g);
        let mut out = vec![];
        g.remove("d", &mut out);
        assert_eq!(out, vec![Work::Delete("r".into())]);
        assert!(g.known_absent(Some("ns"), "d"));
        assert!(!g.known_absent(Some("other"), "d"));
    }

    #[test]
    fn foreground_deletion_marks_the_owner_and_queues_dependents() {
        let mut g = Graph::default();
        chain(&mut g);
        let mut out = vec![];
        let mut d = obs(id("Deployment", "d", "d"), vec![]);
        d.being_deleted = true;
        d.finalizers = vec![FOREGROUND.into()];
        g.observe(d.clone(), 0, 1, &mut out);
        assert_eq!(
            out,
            vec![Work::Delete("r".into()), Work::Delete("d".into())]
        );
        assert!(g.view("d").unwrap().deleting_dependents);
        assert_eq!(
            g.owner_state(&oref("Deployment", "d", "d", true)),
            Some(OwnerState::Waiting)
        );
        assert_eq!(g.blocking_dependents("d"), vec![("r".to_string(), false)]);
        // The same state again is no transition.
        out.clear();
        g.observe(d, 0, 1, &mut out);
        assert!(out.is_empty());
        // The dependent going lets the owner finish.
        g.remove("r", &mut out);
        assert!(out.contains(&Work::Delete("d".into())));
        assert!(g.blocking_dependents("d").is_empty());
    }

    #[test]
    fn orphan_finalizer_queues_orphaning_once() {
        let mut g = Graph::default();
        chain(&mut g);
        let mut out = vec![];
        let mut r = obs(
            id("ReplicaSet", "r", "r"),
            vec![oref("Deployment", "d", "d", true)],
        );
        r.being_deleted = true;
        r.finalizers = vec![ORPHAN.into()];
        g.observe(r.clone(), 1, 1, &mut out);
        assert_eq!(out, vec![Work::Orphan("r".into())]);
        out.clear();
        g.observe(r, 1, 1, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unblocking_a_reference_requeues_the_owner() {
        let mut g = Graph::default();
        chain(&mut g);
        let mut out = vec![];
        g.observe(
            obs(
                id("Pod", "p1", "p1"),
                vec![oref("ReplicaSet", "r", "r", false)],
            ),
            2,
            1,
            &mut out,
        );
        assert_eq!(out, vec![Work::Delete("r".into())]);
        assert_eq!(g.blocking_dependents("r").len(), 1);
        out.clear();
        g.observe(obs(id("Pod", "p2", "p2"), vec![]), 2, 1, &mut out);
        assert_eq!(out, vec![Work::Delete("r".into())]);
        assert_eq!(g.view("r").unwrap().dependents, 1);
    }

    #[test]
    fn relist_sweeps_objects_deleted_while_the_watch_was_down() {
        let mut g = Graph::default();
        chain(&mut g);
        let mut out = vec![];
        // Resource 2 (pods) relisted at generation 2 and returned only p1.
        g.observe(
            obs(
                id("Pod", "p1", "p1"),
                vec![oref("ReplicaSet", "r", "r", true)],
            ),
            2,
            2,
            &mut out,
        );
        g.sweep(2, 2, &mut out);
        assert!(g.view("p2").is_none());
        assert!(g.view("p1").is_some());
        assert_eq!(g.view("r").unwrap().dependents, 1);
    }

    #[test]
    fn absent_cache_is_bounded() {
        let mut g = Graph::new(2);
        g.mark_absent(None, "a");
        g.mark_absent(Some("ns"), "b");
        g.mark_absent(None, "c");
        assert!(!g.known_absent(None, "a"));
        assert!(g.known_absent(Some("ns"), "b"));
        assert!(
            g.known_absent(Some("x"), "c"),
            "cluster-wide entries match any namespace"
        );
    }

    #[test]
    fn decisions_follow_kube_controller_manager() {
        let r = |uid: &str| oref("ReplicaSet", uid, uid, true);
        use RefClass::*;
        assert_eq!(decide(&[], false, false, &[]), Decision::Keep);
        assert_eq!(
            decide(&[(r("a"), Solid)], false, false, &[]),
            Decision::Keep
        );
        assert_eq!(
            decide(
                &[(r("a"), Solid), (r("b"), Dangling), (r("c"), Waiting)],
                true,
                false,
                &[]
            ),
            Decision::RemoveRefs(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            decide(&[(r("a"), Dangling)], true, false, &[]),
            Decision::Delete(Policy::Background)
        );
        assert_eq!(
            decide(&[(r("a"), Waiting)], false, false, &[]),
            Decision::Delete(Policy::Background),
            "no dependents of its own: a plain delete"
        );
        assert_eq!(
            decide(&[(r("a"), Waiting)], true, false, &[]),
            Decision::DeleteForeground { unblock: false }
        );
        assert_eq!(
            decide(&[(r("a"), Waiting), (r("b"), Dangling)], true, true, &[]),
            Decision::DeleteForeground { unblock: true }
        );
        assert_eq!(
            decide(&[(r("a"), Dangling)], false, false, &[ORPHAN.into()]),
            Decision::Delete(Policy::Orphan)
        );
        assert_eq!(
            decide(&[(r("a"), Dangling)], false, false, &[FOREGROUND.into()]),
            Decision::Delete(Policy::Foreground)
        );
    }
}
