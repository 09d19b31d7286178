//! The Node authorizer and the NodeRestriction admission plugin, for node agents
//! (`system:node:<name>` in `system:nodes`).
//!
//! As Kubernetes' Node authorizer, a graph of pods decides the objects a node may read:
//! a Secret, ConfigMap or PersistentVolumeClaim only by name and only when a pod bound to
//! the node uses it, a ServiceAccount token only for a pod's account. Other requests are
//! decided by the node rules (`system:node`'s). Stricter than Kubernetes' default, a node
//! listing or watching pods is answered allow-filtered: it sees its own pods and the pods of
//! the namespaces it runs pods of (NetworkPolicy peers).
//! NodeRestriction confines the writes those rules allow to the node's own Node, Lease,
//! pods (status, deletion, eviction) and the `h8s-vm` and `h8s-vm-cold` RuntimeClasses its agent
//! publishes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
#[cfg(test)]
use serde_json::json;
use serde_json::Value;

use super::rule::Rule;
use crate::admission::{Admission, Operation, Request};
use crate::auth::{Attributes, Authorizer, Decision, FnFilter, UserInfo};
use crate::error::{ApiError, Subject};
use crate::obj;

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The RuntimeClass node agents publish (with the VM overhead).
pub const AGENT_RUNTIME_CLASS: &str = "h8s-vm";
/// The RuntimeClass node agents publish for pods that boot cold instead of restoring a VM
/// template.
pub const AGENT_RUNTIME_CLASS_COLD: &str = "h8s-vm-cold";
const POD_PREFIX: &str = "/registry/core/pods/";

/// The node a user is, if it is one.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.username.strip_prefix(NODE_USER_PREFIX)
}

/// What a pod uses, as the graph keeps it.
#[derive(Debug, Default, Clone, PartialEq)]
struct PodRefs {
    node: String,
    ns: String,
    name: String,
    service_account: String,
    secrets: HashSet<String>,
    config_maps: HashSet<String>,
    claims: HashSet<String>,
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn arr<'a>(v: &'a Value, path: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.pointer(path)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

impl PodRefs {
    fn of(pod: &Value) -> PodRefs {
        let mut r = PodRefs {
            node: str_at(pod, "/spec/nodeName").unwrap_or("").into(),
            ns: obj::namespace(pod).into(),
            name: obj::name(pod).into(),
            service_account: str_at(pod, "/spec/serviceAccountName")
                .unwrap_or("default")
                .into(),
            ..Default::default()
        };
        for s in arr(pod, "/spec/imagePullSecrets") {
            r.secrets.extend(str_at(s, "/name").map(String::from));
        }
        for v in arr(pod, "/spec/volumes") {
            r.secrets
                .extend(str_at(v, "/secret/secretName").map(String::from));
            r.config_maps
                .extend(str_at(v, "/configMap/name").map(String::from));
            r.claims
                .extend(str_at(v, "/persistentVolumeClaim/claimName").map(String::from));
            if v.pointer("/ephemeral").is_some() {
                if let Some(n) = str_at(v, "/name") {
                    r.claims.insert(format!("{}-{n}", r.name));
                }
            }
            for src in arr(v, "/projected/sources") {
                r.secrets
                    .extend(str_at(src, "/secret/name").map(String::from));
                r.config_maps
                    .extend(str_at(src, "/configMap/name").map(String::from));
            }
            for p in ["/csi/nodePublishSecretRef/name", "/cephfs/secretRef/name"] {
                r.secrets.extend(str_at(v, p).map(String::from));
            }
        }
        for list in [
            "/spec/containers",
            "/spec/initContainers",
            "/spec/ephemeralContainers",
        ] {
            for c in arr(pod, list) {
                for e in arr(c, "/env") {
                    r.secrets
                        .extend(str_at(e, "/valueFrom/secretKeyRef/name").map(String::from));
                    r.config_maps
                        .extend(str_at(e, "/valueFrom/configMapKeyRef/name").map(String::from));
                }
                for e in arr(c, "/envFrom") {
                    r.secrets
                        .extend(str_at(e, "/secretRef/name").map(String::from));
                    r.config_maps
                        .extend(str_at(e, "/configMapRef/name").map(String::from));
                }
            }
        }
        r
    }
}

/// Pods by node, kept by a watch of pods.
#[derive(Default)]
struct Graph {
    /// node → pod key → what the pod uses.
    by_node: HashMap<String, HashMap<String, PodRefs>>,
    /// pod key → node.
    node_of: HashMap<String, String>,
}

impl Graph {
    fn put(&mut self, key: &str, pod: &Value) {
        self.remove(key);
        let refs = PodRefs::of(pod);
        if refs.node.is_empty() {
            return;
        }
        self.node_of.insert(key.into(), refs.node.clone());
        self.by_node
            .entry(refs.node.clone())
            .or_default()
            .insert(key.into(), refs);
    }

    fn remove(&mut self, key: &str) {
        if let Some(n) = self.node_of.remove(key) {
            if let Some(m) = self.by_node.get_mut(&n) {
                m.remove(key);
                if m.is_empty() {
                    self.by_node.remove(&n);
                }
            }
        }
    }

    fn pods<'a>(&'a self, node: &str, ns: &'a str) -> impl Iterator<Item = &'a PodRefs> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |p| p.ns == ns)
    }
}

/// The Node authorizer (and, through [`NodeAuthorizer::restriction`], NodeRestriction).
pub struct NodeAuthorizer {
    graph: Arc<RwLock<Graph>>,
    rules: Vec<Rule>,
}

impl NodeAuthorizer {
    /// Starts following pods (until `shutdown`); returns once they have been listed.
    pub async fn start(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let graph = Arc::new(RwLock::new(Graph::default()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(follow_pods(store, graph.clone(), tx, shutdown));
        let _ = rx.await;
        Arc::new(NodeAuthorizer {
            graph,
            rules: node_rules(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Kubernetes' `authorizeReadNamespacedObject` / relationship checks.
    fn related(&self, node: &str, a: &Attributes) -> Decision {
        let g = self.read();
        let mut pods = g.pods(node, &a.namespace);
        let found = match a.resource.as_str() {
            "secrets" => pods.any(|p| p.secrets.contains(&a.name)),
            "configmaps" => pods.any(|p| p.config_maps.contains(&a.name)),
            "persistentvolumeclaims" => pods.any(|p| p.claims.contains(&a.name)),
            "serviceaccounts" => pods.any(|p| p.service_account == a.name),
            "pods" => pods.any(|p| p.name == a.name),
            _ => false,
        };
        if found {
            Decision::Allow
        } else {
            Decision::Deny(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    /// The NodeRestriction admission plugin.
    pub fn restriction() -> NodeRestriction {
        NodeRestriction
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let Some(node) = node_name(user) else {
            return Decision::Deny(String::new());
        };
        if node.is_empty() {
            return Decision::Deny("unknown node".into());
        }
        if a.resource_request && a.group.is_empty() {
            match (a.resource.as_str(), a.subresource.as_str()) {
                ("secrets" | "configmaps", "") => {
                    if !matches!(a.verb.as_str(), "get" | "list" | "watch") || a.name.is_empty() {
                        return Decision::Deny(
                            "can only read individual resources of this type".into(),
                        );
                    }
                    return self.related(node, a);
                }
                // h8s: the agent is its node's local volume provisioner (docs/volumes.md): it
                // reads its pods' claims and marks them with the node it provisions on
                // (NodeRestriction lets it change only those annotations).
                ("persistentvolumeclaims", "") => {
                    if !matches!(a.verb.as_str(), "get" | "patch") || a.name.is_empty() {
                        return Decision::Deny(
                            "can only get individual resources of this type".into(),
                        );
                    }
                    return self.related(node, a);
                }
                // h8s: volumes are read to attach them, and the node's own local volumes
                // (NodeRestriction checks the node affinity) are created, grown and removed.
                ("persistentvolumes", "") => {
                    if matches!(
                        a.verb.as_str(),
                        "get" | "list" | "watch" | "create" | "patch" | "update" | "delete"
                    ) {
                        return Decision::Allow;
                    }
                    return Decision::Deny(
                        "no relationship found between node and this object".into(),
                    );
                }
                ("persistentvolumes", _) => {
                    return Decision::Deny(
                        "no relationship found between node and this object".into(),
                    );
                }
                ("serviceaccounts", "token") => {
                    if a.verb != "create" || a.name.is_empty() {
                        return Decision::Deny(
                            "can only create tokens for individual service accounts".into(),
                        );
                    }
                    return self.related(node, a);
                }
                ("pods", "") if a.verb == "get" => return self.related(node, a),
                ("pods", "") if matches!(a.verb.as_str(), "list" | "watch") => {
                    // Its own pods (Kubernetes asks for a spec.nodeName field selector;
                    // here the list is filtered), and — h8s: NetworkPolicy peers, whose
                    // labels and ports the agent enforcing policies needs — the pods of
                    // the namespaces it runs a pod of, decided per object as the graph
                    // changes.
                    let node = node.to_string();
                    let graph = self.graph.clone();
                    return Decision::AllowFiltered(Arc::new(FnFilter(move |o: &Value| {
                        if o.pointer("/spec/nodeName").and_then(Value::as_str) == Some(&node) {
                            return true;
                        }
                        let ns = o
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let g = graph.read().unwrap_or_else(|e| e.into_inner());
                        let hosts = g.pods(&node, ns).next().is_some();
                        hosts
                    })));
                }
                _ => {}
            }
        }
        // h8s: an agent waits for the attach-detach controller's VolumeAttachments of its
        // RBD volumes to its node (Kubernetes lets a node get the attachments of its graph);
        // lists and watches return only those naming the node.
        if a.resource_request
            && a.group == "storage.k8s.io"
            && a.resource == "volumeattachments"
            && a.subresource.is_empty()
        {
            if matches!(a.verb.as_str(), "list" | "watch") {
                let node = node.to_string();
                return Decision::AllowFiltered(Arc::new(FnFilter(move |o: &Value| {
                    o.pointer("/spec/nodeName").and_then(Value::as_str) == Some(&node)
                })));
            }
            return Decision::Deny(
                "nodes can only list and watch their own volume attachments".into(),
            );
        }
        if self.rules.iter().any(|r| r.allows(a)) {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    }
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Rule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..Default::default()
    }
}

/// Kubernetes' `NodeRules()` (the `system:node` role), for what the graph does not
/// decide, plus the RuntimeClass h8s' agent publishes.
pub fn node_rules() -> Vec<Rule> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(&["get", "list", "watch"], &[""], &["services"]),
        // h8s: the in-pod Service proxies (kube-proxy's `system:node-proxier` reads, which
        // the node agent does for its pods here).
        rule(
            &["list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
        ),
        // h8s: NetworkPolicy is enforced by the node agent on each pod's port.
        rule(
            &["list", "watch"],
            &["networking.k8s.io"],
            &["networkpolicies"],
        ),
        // h8s: pod networks from the API (the namespace's Network, its segment and the
        // cluster-wide IPAM in the Network's status; NodeRestriction confines the writes
        // to the node's own addresses).
        rule(
            &["get", "list", "watch"],
            &[""],
            &["networks", "namespaces"],
        ),
        rule(&["update", "patch"], &[""], &["networks/status"]),
        rule(
            &["create", "get", "list", "watch", "patch", "update"],
            &[""],
            &["nodes"],
        ),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
        rule(&["create"], &["node.k8s.io"], &["runtimeclasses"]),
        rule(
            &["get", "list", "watch"],
            &["storage.k8s.io"],
            &["storageclasses"],
        ),
    ]
}

/// NodeRestriction: a node writes only its own Node and Lease, its own pods' status,
/// deletion and eviction, no pods of its own making (h8s has no mirror pods), and of
/// RuntimeClasses only the one its agent publishes.
pub struct NodeRestriction;

impl NodeRestriction {
    fn check(req: &Request<'_>, node: &str, obj: Option<&Value>) -> Result<(), ApiError> {
        let subject = Subject {
            group: req.res.group,
            resource: req.res.plural,
            name: req.name,
        };
        let forbid = |why: String| Err(ApiError::forbidden_about(&subject, &why));
        match (req.res.group, req.res.plural, req.sub) {
            ("", "nodes", _) => {
                let name = obj.map(obj::name).filter(|n| !n.is_empty()).unwrap_or(req.name);
                if name != node {
                    return forbid(format!("node {node:?} is not allowed to modify node {name:?}"));
                }
                Ok(())
            }
            ("", "pods", None) => match req.op {
                Operation::Create => forbid(format!(
                    "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
                )),
                Operation::Update => forbid(format!("node {node:?} can only update pod status")),
                Operation::Delete => {
                    if bound_to(req.old, node) {
                        Ok(())
                    } else {
                        forbid(format!(
                            "node {node:?} can only delete pods with spec.nodeName set to itself"
                        ))
                    }
                }
            },
            ("", "pods", Some("status")) => {
                if bound_to(req.old, node) {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ))
                }
            }
            ("", "pods", Some("eviction")) => {
                if bound_to(req.old, node) {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only evict pods with spec.nodeName set to itself"
                    ))
                }
            }
            ("coordination.k8s.io", "leases", _) => {
                if req.namespace != "kube-node-lease" || req.name != node {
                    let n = obj.map(obj::name).unwrap_or(req.name);
                    if req.namespace != "kube-node-lease" || n != node {
                        return forbid(
                            "can only access node lease with the same name as the requesting node"
                                .into(),
                        );
                    }
                }
                Ok(())
            }
            ("", "networks", Some("status")) => {
                let new = obj.cloned().unwrap_or(Value::Null);
                let old = req.old.cloned().unwrap_or(Value::Null);
                match foreign_network_change(&old, &new, node) {
                    None => Ok(()),
                    Some(why) => forbid(format!("node {node:?} {why}")),
                }
            }
            ("", "persistentvolumes", None) => {
                // Only local volumes pinned to this node, before and after the write.
                let mine = |v: Option<&Value>| v.is_some_and(|v| local_volume_node(v) == Some(node));
                let ok = match req.op {
                    Operation::Create => mine(obj),
                    Operation::Update => mine(req.old) && mine(obj),
                    Operation::Delete => mine(req.old),
                };
                if ok {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only write local volumes pinned to itself"
                    ))
                }
            }
            ("", "persistentvolumeclaims", None) => {
                // Only the provisioning annotations may change, and only to this node.
                let strip = |v: Option<&Value>| {
                    let mut v = v.cloned().unwrap_or(Value::Null);
                    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                        for k in ["resourceVersion", "managedFields", "generation"] {
                            m.remove(k);
                        }
                        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                            for k in PROVISIONING_ANNOTATIONS {
                                a.remove(*k);
                            }
                            if a.is_empty() {
                                m.remove("annotations");
                            }
                        }
                    }
                    v
                };
                let selected = obj
                    .and_then(|o| o.pointer("/metadata/annotations/volume.kubernetes.io~1selected-node"))
                    .and_then(Value::as_str);
                if req.op == Operation::Update
                    && strip(obj) == strip(req.old)
                    && selected.is_none_or(|n| n == node)
                {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only mark claims it provisions for itself"
                    ))
                }
            }
            ("node.k8s.io", "runtimeclasses", _) => {
                let n = obj.map(obj::name).unwrap_or(req.name);
                if req.op == Operation::Create
                    && (n == AGENT_RUNTIME_CLASS || n == AGENT_RUNTIME_CLASS_COLD)
                {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only create the {AGENT_RUNTIME_CLASS:?} and \
                         {AGENT_RUNTIME_CLASS_COLD:?} RuntimeClasses"
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}

/// What a node changed in a Network's status beyond adding and removing its own address
/// allocations (`status.allocations` entries whose `node` is itself), if anything.
fn foreign_network_change(old: &Value, new: &Value, node: &str) -> Option<String> {
    let allocs = |v: &Value| -> serde_json::Map<String, Value> {
        v.pointer("/status/allocations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (allocs(old), allocs(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        for v in [x, y].into_iter().flatten() {
            if v.pointer("/node").and_then(Value::as_str) != Some(node) {
                return Some(format!(
                    "can only change address allocations of its own pods ({k})"
                ));
            }
        }
    }
    for f in ["phase", "reason", "message"] {
        let p = format!("/status/{f}");
        if old.pointer(&p) != new.pointer(&p) {
            return Some(format!(
                "can only change status.allocations, not status.{f}"
            ));
        }
    }
    None
}

/// The annotations a node's local provisioner writes on a claim.
const PROVISIONING_ANNOTATIONS: &[&str] = &[
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// The node an h8s local volume (CSI driver `local.volumes.h8s.io`) is pinned to by its
/// required node affinity on `kubernetes.io/hostname`.
fn local_volume_node(pv: &Value) -> Option<&str> {
    if pv.pointer("/spec/csi/driver").and_then(Value::as_str) != Some("local.volumes.h8s.io") {
        return None;
    }
    let terms = pv
        .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
        .and_then(Value::as_array)?;
    let [term] = terms.as_slice() else {
        return None;
    };
    let exprs = term.get("matchExpressions").and_then(Value::as_array)?;
    let [e] = exprs.as_slice() else {
        return None;
    };
    if e.get("key").and_then(Value::as_str) != Some("kubernetes.io/hostname")
        || e.get("operator").and_then(Value::as_str) != Some("In")
    {
        return None;
    }
    match e.get("values").and_then(Value::as_array).map(Vec::as_slice) {
        Some([v]) => v.as_str(),
        _ => None,
    }
}

fn bound_to(pod: Option<&Value>, node: &str) -> bool {
    pod.and_then(|p| p.pointer("/spec/nodeName"))
        .and_then(Value::as_str)
        == Some(node)
}

impl Admission for NodeRestriction {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let r = match node_name(req.user) {
            Some(node) => Self::check(req, node, obj.map(|o| &*o)),
            None => Ok(()),
        };
        Box::pin(std::future::ready(r))
    }
}

async fn follow_pods(
    store: Arc<dyn h8s_store::Store>,
    graph: Arc<RwLock<Graph>>,
    first: tokio::sync::oneshot::Sender<()>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut first = Some(first);
    let run = async {
        loop {
            let listed = store.list(POD_PREFIX, Default::default()).await;
            let watch = match &listed {
                Ok(l) => store.watch(POD_PREFIX, l.revision).await,
                Err(e) => Err(h8s_store::Error::Unavailable(e.to_string())),
            };
            if let (Ok(l), Ok(mut w)) = (listed, watch) {
                let mut g = Graph::default();
                for kv in &l.items {
                    if let Ok(o) = obj::decode(kv) {
                        g.put(&kv.key, &o);
                    }
                }
                *graph.write().unwrap_or_else(|e| e.into_inner()) = g;
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
                while let Some(Ok(ev)) = w.next().await {
                    let mut g = graph.write().unwrap_or_else(|e| e.into_inner());
                    match ev {
                        h8s_store::Event::Put { kv, .. } => match obj::decode(&kv) {
                            Ok(o) => g.put(&kv.key, &o),
                            Err(_) => g.remove(&kv.key),
                        },
                        h8s_store::Event::Delete { prev, .. } => g.remove(&prev.key),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// A pod on `node` for tests.
#[cfg(test)]
fn test_pod(ns: &str, name: &str, node: &str) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": {"nodeName": node,
        "serviceAccountName": "sa1",
        "volumes": [{"name": "v", "secret": {"secretName": "s1"}},
                    {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm2"}}]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}}]}]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_user(n: &str) -> UserInfo {
        UserInfo {
            username: format!("{NODE_USER_PREFIX}{n}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    fn a(verb: &str, ns: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn nodes_read_only_what_their_pods_use() {
        let mut g = Graph::default();
        g.put(&format!("{POD_PREFIX}ns1/p1"), &test_pod("ns1", "p1", "n1"));
        let z = NodeAuthorizer {
            graph: Arc::new(RwLock::new(g)),
            rules: node_rules(),
        };
        let n1 = node_user("n1");
        let n2 = node_user("n2");
        for (res, sub, name, verb) in [
            ("secrets", "", "s1", "get"),
            ("secrets", "", "s1", "watch"),
            ("configmaps", "", "cm1", "get"),
            ("configmaps", "", "cm2", "list"),
            ("persistentvolumeclaims", "", "data", "get"),
            ("serviceaccounts", "token", "sa1", "create"),
            ("pods", "", "p1", "get"),
        ] {
            assert!(
                z.authorize(&n1, &a(verb, "ns1", res, sub, name)).allowed(),
                "{res} {name}"
            );
            assert!(
                !z.authorize(&n2, &a(verb, "ns1", res, sub, name)).allowed(),
                "{res} {name}"
            );
            assert!(
                !z.authorize(&n1, &a(verb, "ns2", res, sub, name)).allowed(),
                "{res} {name}"
            );
        }
        assert!(!z
            .authorize(&n1, &a("get", "ns1", "secrets", "", "other"))
            .allowed());
        assert!(!z
            .authorize(&n1, &a("list", "ns1", "secrets", "", ""))
            .allowed());
        assert!(!z
            .authorize(&n1, &a("delete", "ns1", "secrets", "", "s1"))
            .allowed());
        // Pod lists are narrowed to the node's own pods and their namespaces.
        match z.authorize(&n1, &a("list", "", "pods", "", "")) {
            Decision::AllowFiltered(f) => {
                assert!(f.allows(&test_pod("ns1", "p1", "n1")));
                // Another node's pod in a namespace n1 runs pods of (a policy peer) …
                assert!(f.allows(&test_pod("ns1", "p2", "n2")));
                // … but not of a namespace it has no pod of.
                assert!(!f.allows(&test_pod("ns2", "p3", "n2")));
            }
            d => panic!("{d:?}"),
        }
        // VolumeAttachments: lists narrowed to the node's own; no writes.
        let va = |verb: &str| Attributes {
            group: "storage.k8s.io".into(),
            ..a(verb, "", "volumeattachments", "", "")
        };
        match z.authorize(&n1, &va("watch")) {
            Decision::AllowFiltered(f) => {
                assert!(f.allows(&json!({"spec": {"nodeName": "n1"}})));
                assert!(!f.allows(&json!({"spec": {"nodeName": "n2"}})));
            }
            d => panic!("{d:?}"),
        }
        for verb in ["create", "update", "patch", "delete", "get"] {
            assert!(!z.authorize(&n1, &va(verb)).allowed(), "{verb}");
        }
        // The node rules; nothing for anyone else.
        assert!(z
            .authorize(&n1, &a("patch", "ns1", "pods", "status", "p1"))
            .allowed());
        assert!(!z
            .authorize(&n1, &a("update", "ns1", "pods", "", "p1"))
            .allowed());
        assert!(!z
            .authorize(&n1, &a("create", "ns1", "deployments", "", ""))
            .allowed());
        let alice = UserInfo {
            username: "alice".into(),
            ..Default::default()
        };
        assert!(!z
            .authorize(&alice, &a("get", "ns1", "secrets", "", "s1"))
            .allowed());
    }

    #[test]
    fn nodes_write_only_their_own_local_volumes_and_claim_marks() {
        let pv = |node: &str| {
            json!({"metadata": {"name": "pv"}, "spec": {
                "csi": {"driver": "local.volumes.h8s.io", "volumeHandle": "pv"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
        };
        let n1 = node_user("n1");
        fn adm(
            user: &UserInfo,
            res: &str,
            op: Operation,
            old: Option<&Value>,
            obj: Option<&mut Value>,
        ) -> Result<(), ApiError> {
            let rq = Request {
                op,
                res: h8s_types::resources::find("", "v1", res).unwrap(),
                sub: None,
                namespace: "",
                name: "pv",
                user,
                dry_run: false,
                old,
            };
            futures::executor::block_on(NodeRestriction.admit(&rq, obj))
        }
        let req = |res: &'static str, op: Operation, old: Option<&'static Value>| {
            let n1 = n1.clone();
            move |obj: Option<&mut Value>| adm(&n1, res, op, old, obj)
        };
        let mine: &'static Value = Box::leak(Box::new(pv("n1")));
        let theirs: &'static Value = Box::leak(Box::new(pv("n2")));
        assert!(req("persistentvolumes", Operation::Create, None)(Some(&mut pv("n1"))).is_ok());
        assert!(req("persistentvolumes", Operation::Create, None)(Some(&mut pv("n2"))).is_err());
        assert!(
            req("persistentvolumes", Operation::Update, Some(mine))(Some(&mut pv("n1"))).is_ok()
        );
        assert!(
            req("persistentvolumes", Operation::Update, Some(theirs))(Some(&mut pv("n1"))).is_err()
        );
        assert!(req("persistentvolumes", Operation::Delete, Some(mine))(None).is_ok());
        assert!(req("persistentvolumes", Operation::Delete, Some(theirs))(None).is_err());
        let mut rbd = pv("n1");
        rbd["spec"]["csi"]["driver"] = json!("rbd.volumes.h8s.io");
        assert!(req("persistentvolumes", Operation::Create, None)(Some(&mut rbd)).is_err());
        // Claims: only the provisioning marks, and only naming this node.
        let claim: &'static Value = Box::leak(Box::new(
            json!({"metadata": {"name": "c", "namespace": "ns1"}, "spec": {"volumeName": ""}}),
        ));
        let mut marked = claim.clone();
        marked["metadata"]["annotations"] = json!({"volume.kubernetes.io/selected-node": "n1", "volume.kubernetes.io/storage-provisioner": "volumes.h8s.io/local"});
        assert!(
            req("persistentvolumeclaims", Operation::Update, Some(claim))(Some(
                &mut marked.clone()
            ))
            .is_ok()
        );
        let mut other = marked.clone();
        other["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = json!("n2");
        assert!(
            req("persistentvolumeclaims", Operation::Update, Some(claim))(Some(&mut other))
                .is_err()
        );
        let mut spec = marked.clone();
        spec["spec"]["volumeName"] = json!("stolen");
        assert!(
            req("persistentvolumeclaims", Operation::Update, Some(claim))(Some(&mut spec)).is_err()
        );
        // The authorizer: volumes readable and writable (NodeRestriction narrows), claims
        // of its pods patchable.
        let mut g = Graph::default();
        g.put(&format!("{POD_PREFIX}ns1/p1"), &test_pod("ns1", "p1", "n1"));
        let z = NodeAuthorizer {
            graph: Arc::new(RwLock::new(g)),
            rules: node_rules(),
        };
        assert!(z
            .authorize(&n1, &a("create", "", "persistentvolumes", "", ""))
            .allowed());
        assert!(!z
            .authorize(&n1, &a("patch", "", "persistentvolumes", "status", "pv"))
            .allowed());
        assert!(z
            .authorize(
                &n1,
                &a("patch", "ns1", "persistentvolumeclaims", "", "data")
            )
            .allowed());
        assert!(!z
            .authorize(
                &n1,
                &a("patch", "ns1", "persistentvolumeclaims", "", "other")
            )
            .allowed());
    }

    #[test]
    fn node_restriction() {
        let n1 = node_user("n1");
        let run = |group: &str,
                   res: &str,
                   sub: Option<&str>,
                   op,
                   ns: &str,
                   name: &str,
                   old: Option<&Value>| {
            let r = h8s_types::resources::groups()
                .iter()
                .find(|g| g.name == group)
                .and_then(|g| h8s_types::resources::find(group, g.versions[0], res))
                .unwrap();
            let req = Request {
                op,
                res: r,
                sub,
                namespace: ns,
                name,
                user: &n1,
                dry_run: false,
                old,
            };
            let mut o = json!({"metadata": {"name": name, "namespace": ns}});
            futures::executor::block_on(NodeRestriction.admit(&req, Some(&mut o)))
        };
        let mine = test_pod("ns1", "p1", "n1");
        let theirs = test_pod("ns1", "p2", "n2");
        assert!(run(
            "",
            "nodes",
            Some("status"),
            Operation::Update,
            "",
            "n1",
            None
        )
        .is_ok());
        let e = run("", "nodes", None, Operation::Update, "", "n2", None).unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        assert!(run(
            "",
            "pods",
            Some("status"),
            Operation::Update,
            "ns1",
            "p1",
            Some(&mine)
        )
        .is_ok());
        assert!(run(
            "",
            "pods",
            Some("status"),
            Operation::Update,
            "ns1",
            "p2",
            Some(&theirs)
        )
        .is_err());
        assert!(run(
            "",
            "pods",
            None,
            Operation::Delete,
            "ns1",
            "p1",
            Some(&mine)
        )
        .is_ok());
        assert!(run(
            "",
            "pods",
            None,
            Operation::Delete,
            "ns1",
            "p2",
            Some(&theirs)
        )
        .is_err());
        assert!(run("", "pods", None, Operation::Create, "ns1", "p3", None).is_err());
        assert!(run(
            "coordination.k8s.io",
            "leases",
            None,
            Operation::Update,
            "kube-node-lease",
            "n1",
            None
        )
        .is_ok());
        assert!(run(
            "coordination.k8s.io",
            "leases",
            None,
            Operation::Update,
            "kube-node-lease",
            "n2",
            None
        )
        .is_err());
        assert!(run(
            "node.k8s.io",
            "runtimeclasses",
            None,
            Operation::Create,
            "",
            AGENT_RUNTIME_CLASS,
            None
        )
        .is_ok());
        assert!(run(
            "node.k8s.io",
            "runtimeclasses",
            None,
            Operation::Create,
            "",
            AGENT_RUNTIME_CLASS_COLD,
            None
        )
        .is_ok());
        assert!(run(
            "node.k8s.io",
            "runtimeclasses",
            None,
            Operation::Create,
            "",
            "other",
            None
        )
        .is_err());
    }

    #[test]
    fn nodes_change_only_their_own_network_allocations() {
        let holder = |n: &str| json!({"node": n, "namespace": "a", "pod": "p", "podUID": "u"});
        let net = |allocs: Value, phase: &str| json!({"metadata": {"name": "n1"}, "status": {"phase": phase, "allocations": allocs}});
        let old = net(
            json!({"10.0.0.2": holder("n1"), "10.0.0.3": holder("n2")}),
            "Active",
        );
        let add_own = net(
            json!({"10.0.0.2": holder("n1"), "10.0.0.3": holder("n2"), "10.0.0.4": holder("n1")}),
            "Active",
        );
        assert_eq!(foreign_network_change(&old, &add_own, "n1"), None);
        let drop_own = net(json!({"10.0.0.3": holder("n2")}), "Active");
        assert_eq!(foreign_network_change(&old, &drop_own, "n1"), None);
        let drop_other = net(json!({"10.0.0.2": holder("n1")}), "Active");
        assert!(foreign_network_change(&old, &drop_other, "n1").is_some());
        let steal = net(
            json!({"10.0.0.2": holder("n1"), "10.0.0.3": holder("n1")}),
            "Active",
        );
        assert!(foreign_network_change(&old, &steal, "n1").is_some());
        let add_for_other = net(
            json!({"10.0.0.2": holder("n1"), "10.0.0.3": holder("n2"), "10.0.0.9": holder("n2")}),
            "Active",
        );
        assert!(foreign_network_change(&old, &add_for_other, "n1").is_some());
        let phase = net(
            json!({"10.0.0.2": holder("n1"), "10.0.0.3": holder("n2")}),
            "Failed",
        );
        assert!(foreign_network_change(&old, &phase, "n1").is_some());
    }
}
