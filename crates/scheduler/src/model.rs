//! What the scheduler keeps of a Pod and a Node: parsed once when the watch delivers the
//! object, so filtering and scoring never parse quantities or selectors.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use crate::quantity::parse_scaled;
use crate::selector::{Labels, NodeSelector, NodeTerm, Selector};

/// Kubernetes' defaults for a container that requests no CPU or memory, used in scoring
/// only (`DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource: CPU in millicores, memory and storage in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// For a node's allocatable: how many pods it takes; unused in a pod's request.
    pub pods: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`), as integers.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a resource list; unparsable quantities count as zero.
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (k, q) in list.into_iter().flatten() {
            r.set(k, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = parse_scaled(q, 3).unwrap_or(0),
            "memory" => self.memory = parse_scaled(q, 0).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = parse_scaled(q, 0).unwrap_or(0),
            "pods" => self.pods = parse_scaled(q, 0).unwrap_or(0),
            n if is_scalar_resource(n) => {
                self.scalar
                    .insert(n.to_string(), parse_scaled(q, 0).unwrap_or(0));
            }
            _ => {}
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
        self.scalar.retain(|_, v| *v != 0);
    }

    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources (a domain-qualified name outside `kubernetes.io/`) and huge pages.
fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || (name.contains('/')
            && !name.starts_with("kubernetes.io/")
            && !name.starts_with("requests."))
}

/// A taint's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other,
}

impl Effect {
    fn parse(s: &str) -> Effect {
        match s {
            "NoSchedule" => Effect::NoSchedule,
            "PreferNoSchedule" => Effect::PreferNoSchedule,
            "NoExecute" => Effect::NoExecute,
            _ => Effect::Other,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Toleration {
    /// Empty with `exists` tolerates every key.
    pub key: String,
    pub exists: bool,
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<Effect>,
}

impl Toleration {
    /// Kubernetes' `ToleratesTaint`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != t.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // Equal (an empty key needs Exists, checked at parse).
        !self.key.is_empty() && self.value == t.value
    }
}

pub fn tolerated(tols: &[Toleration], t: &Taint) -> bool {
    tols.iter().any(|tol| tol.tolerates(t))
}

/// A host port a pod's container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two host ports conflict when protocol and port match and either IP is the wildcard
    /// or both are the same.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || is_wildcard(&self.ip) || is_wildcard(&o.ip))
    }
}

fn is_wildcard(ip: &str) -> bool {
    ip.is_empty() || ip == "0.0.0.0" || ip == "::"
}

/// A pod (anti-)affinity term, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct AffinityTerm {
    pub selector: Selector,
    /// Explicit namespaces; with no namespace selector and no names, the pod's own.
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn from_term(pod_ns: &str, pod_labels: &Labels, t: &core::PodAffinityTerm) -> AffinityTerm {
        let mut selector = Selector::from_opt(t.label_selector.as_ref());
        // matchLabelKeys / mismatchLabelKeys merge the pod's own label values in.
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector
                        .reqs
                        .push(crate::selector::Req::In(k.clone(), vec![v.clone()]));
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector
                        .reqs
                        .push(crate::selector::Req::NotIn(k.clone(), vec![v.clone()]));
                }
            }
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(Selector::from_label_selector);
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(pod_ns.to_string());
        }
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` is selected by this term; `ns_labels` gives a namespace's labels.
    pub fn matches(&self, pod: &PodInfo, ns_labels: &dyn Fn(&str) -> Option<Labels>) -> bool {
        let ns_ok = self.namespaces.iter().any(|n| n == &pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.is_empty() || ns_labels(&pod.namespace).is_some_and(|l| s.matches(&l))
            });
        ns_ok && self.selector.matches(&pod.labels)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub preferred: Vec<(i32, AffinityTerm)>,
}

impl PodAffinity {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.preferred.is_empty()
    }
}

/// Which pods a topology spread constraint counts.
#[derive(Clone, Debug, PartialEq)]
pub enum SpreadSelector {
    Labels(Selector),
    /// The system default constraints count the pods of the same controller (kube-scheduler
    /// uses the selectors of the Services, ReplicaSets, StatefulSets and
    /// ReplicationControllers selecting the pod; its controller's pods are what they select).
    SameController(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) or `ScheduleAnyway` (a score).
    pub hard: bool,
    pub min_domains: i32,
    pub selector: SpreadSelector,
    /// `nodeAffinityPolicy: Honor` (the default): count only nodes the pod may go to.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: count only nodes whose taints the pod tolerates.
    pub honor_node_taints: bool,
}

impl SpreadConstraint {
    pub fn selects(&self, pod: &PodInfo) -> bool {
        match &self.selector {
            SpreadSelector::Labels(s) => s.matches(&pod.labels),
            SpreadSelector::SameController(uid) => pod.controller_uid.as_deref() == Some(uid),
        }
    }
}

/// Everything the scheduler needs of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub labels: Labels,
    pub scheduler_name: String,
    pub node_name: String,
    pub nominated_node: String,
    pub priority: i32,
    pub preemption_never: bool,
    pub gated: bool,
    pub terminating: bool,
    /// Succeeded or Failed: holds no resources.
    pub terminal: bool,
    pub created: i64,
    pub controller_uid: Option<String>,
    /// The effective request (init containers, sidecars and the RuntimeClass overhead).
    pub requests: Resources,
    /// The same with Kubernetes' defaults for unset CPU and memory (for scoring).
    pub non_zero_cpu: i64,
    pub non_zero_mem: i64,
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: Labels,
    pub required_node_affinity: Option<NodeSelector>,
    pub preferred_node_affinity: Vec<(i32, NodeTerm)>,
    pub affinity: PodAffinity,
    pub anti_affinity: PodAffinity,
    /// The pod's own constraints (`spec.topologySpreadConstraints`).
    pub spread: Vec<SpreadConstraint>,
    /// The PodScheduled condition's reason, if it is False (to avoid rewriting it).
    pub unschedulable_message: Option<String>,
    /// The PersistentVolumeClaims the pod's volumes name (VolumeBinding).
    pub claims: Vec<String>,
}

impl PodInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn has_affinity(&self) -> bool {
        !self.affinity.is_empty() || !self.anti_affinity.is_empty()
    }

    /// The system default spreading constraints (kube-scheduler's `List` defaulting:
    /// hostname max skew 3, zone max skew 5, both ScheduleAnyway), for pods with a
    /// controller and no constraints of their own.
    pub fn default_spread(&self) -> Vec<SpreadConstraint> {
        let Some(uid) = &self.controller_uid else {
            return Vec::new();
        };
        [
            ("kubernetes.io/hostname", 3),
            ("topology.kubernetes.io/zone", 5),
        ]
        .into_iter()
        .map(|(k, skew)| SpreadConstraint {
            max_skew: skew,
            topology_key: k.into(),
            hard: false,
            min_domains: 1,
            selector: SpreadSelector::SameController(uid.clone()),
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect()
    }

    pub fn from_pod(p: &core::Pod) -> PodInfo {
        let meta = &p.metadata;
        let default_spec;
        let spec = match &p.spec {
            Some(s) => s,
            None => {
                default_spec = core::PodSpec::default();
                &default_spec
            }
        };
        let status = p.status.as_ref();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels: Labels = meta.labels.clone().unwrap_or_default();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");

        // Kubernetes' effective request: max(sum of containers + sidecars, any init
        // container with the sidecars started before it), plus the pod overhead.
        let mut reqs = Resources::default();
        let (mut nz_cpu, mut nz_mem) = (0i64, 0i64);
        for c in &spec.containers {
            let r = container_requests(c);
            let (c1, m1) = non_zero(&r);
            nz_cpu += c1;
            nz_mem += m1;
            reqs.add(&r);
        }
        let mut sidecars = Resources::default();
        let (mut sc_cpu, mut sc_mem) = (0i64, 0i64);
        let mut init_max = Resources::default();
        let (mut init_cpu, mut init_mem) = (0i64, 0i64);
        for c in spec.init_containers.iter().flatten() {
            let r = container_requests(c);
            let (c1, m1) = non_zero(&r);
            if c.restart_policy.as_deref() == Some("Always") {
                reqs.add(&r);
                nz_cpu += c1;
                nz_mem += m1;
                sidecars.add(&r);
                sc_cpu += c1;
                sc_mem += m1;
                init_max.max_with(&sidecars);
                init_cpu = init_cpu.max(sc_cpu);
                init_mem = init_mem.max(sc_mem);
            } else {
                let mut tmp = r.clone();
                tmp.add(&sidecars);
                init_max.max_with(&tmp);
                init_cpu = init_cpu.max(c1 + sc_cpu);
                init_mem = init_mem.max(m1 + sc_mem);
            }
        }
        reqs.max_with(&init_max);
        nz_cpu = nz_cpu.max(init_cpu);
        nz_mem = nz_mem.max(init_mem);
        let overhead = Resources::from_list(spec.overhead.as_ref());
        reqs.add(&overhead);
        nz_cpu += overhead.milli_cpu;
        nz_mem += overhead.memory;
        reqs.pods = 0;

        let host_ports = spec
            .containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|h| *h > 0)?;
                Some(HostPort {
                    ip: p.host_ip.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port,
                })
            })
            .collect();

        let tolerations = spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| {
                let key = t.key.clone().unwrap_or_default();
                let exists = t.operator.as_deref() == Some("Exists");
                // An empty key is only valid with Exists; Kubernetes rejects anything else.
                if key.is_empty() && !exists {
                    return None;
                }
                Some(Toleration {
                    key,
                    exists,
                    value: t.value.clone().unwrap_or_default(),
                    effect: t
                        .effect
                        .as_deref()
                        .filter(|e| !e.is_empty())
                        .map(Effect::parse),
                })
            })
            .collect();

        let aff = spec.affinity.as_ref();
        let na = aff.and_then(|a| a.node_affinity.as_ref());
        let required_node_affinity = na
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(NodeSelector::from_selector);
        let preferred_node_affinity = na
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|p| (p.weight, NodeTerm::from_term(&p.preference)))
            .collect();
        let pa = |req: Option<&Vec<core::PodAffinityTerm>>,
                  pref: Option<&Vec<core::WeightedPodAffinityTerm>>| PodAffinity {
            required: req
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::from_term(&namespace, &labels, t))
                .collect(),
            preferred: pref
                .into_iter()
                .flatten()
                .map(|w| {
                    (
                        w.weight,
                        AffinityTerm::from_term(&namespace, &labels, &w.pod_affinity_term),
                    )
                })
                .collect(),
        };
        let affinity = aff
            .and_then(|a| a.pod_affinity.as_ref())
            .map(|a| {
                pa(
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref(),
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref(),
                )
            })
            .unwrap_or_default();
        let anti_affinity = aff
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .map(|a| {
                pa(
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref(),
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref(),
                )
            })
            .unwrap_or_default();

        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut sel = Selector::from_opt(c.label_selector.as_ref());
                if c.label_selector.is_some() {
                    for k in c.match_label_keys.iter().flatten() {
                        if let Some(v) = labels.get(k) {
                            sel.reqs
                                .push(crate::selector::Req::In(k.clone(), vec![v.clone()]));
                        }
                    }
                }
                SpreadConstraint {
                    max_skew: c.max_skew.max(1),
                    topology_key: c.topology_key.clone(),
                    hard: c.when_unsatisfiable != "ScheduleAnyway",
                    min_domains: c.min_domains.unwrap_or(1).max(1),
                    selector: SpreadSelector::Labels(sel),
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                }
            })
            .collect();

        let controller_uid = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let unschedulable_message = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| c.message.clone().unwrap_or_default());

        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".into()),
            node_name: spec.node_name.clone().unwrap_or_default(),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.clone())
                .unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            preemption_never: spec.preemption_policy.as_deref() == Some("Never"),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            terminating: meta.deletion_timestamp.is_some(),
            terminal: phase == "Succeeded" || phase == "Failed",
            created: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0),
            controller_uid,
            requests: reqs,
            non_zero_cpu: nz_cpu,
            non_zero_mem: nz_mem,
            host_ports,
            tolerations,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity,
            preferred_node_affinity,
            affinity,
            anti_affinity,
            spread,
            unschedulable_message,
            claims: spec
                .volumes
                .iter()
                .flatten()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone())
                .collect(),
            namespace,
            labels,
        }
    }
}

/// A container's requests; a limit without a request counts as the request (the API's
/// defaulting does the same).
fn container_requests(c: &core::Container) -> Resources {
    let res = c.resources.as_ref();
    let mut r = Resources::from_list(res.and_then(|r| r.limits.as_ref()));
    let req = Resources::from_list(res.and_then(|r| r.requests.as_ref()));
    let has = |n: &str| {
        res.and_then(|r| r.requests.as_ref())
            .is_some_and(|m| m.contains_key(n))
    };
    if has("cpu") {
        r.milli_cpu = req.milli_cpu;
    }
    if has("memory") {
        r.memory = req.memory;
    }
    if has("ephemeral-storage") {
        r.ephemeral_storage = req.ephemeral_storage;
    }
    for (k, v) in req.scalar {
        r.scalar.insert(k, v);
    }
    r.pods = 0;
    r
}

fn non_zero(r: &Resources) -> (i64, i64) {
    (
        if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU_REQUEST
        } else {
            r.milli_cpu
        },
        if r.memory == 0 {
            DEFAULT_MEMORY_REQUEST
        } else {
            r.memory
        },
    )
}

/// A node and the pods on it (bound or assumed), kept current incrementally.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// False for a node we only know from pods bound to it (not yet or no longer listed).
    pub present: bool,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_cpu: i64,
    pub non_zero_mem: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Pods here with any pod affinity or anti-affinity.
    pub pods_with_affinity: usize,
    /// Pods here with required anti-affinity.
    pub pods_with_required_anti: usize,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Sets the node's own fields from the API object; returns whether anything the
    /// scheduler looks at changed.
    pub fn set_node(&mut self, n: &core::Node) -> bool {
        let spec = n.spec.as_ref();
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let taints: Vec<Taint> = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: Effect::parse(&t.effect),
            })
            .collect();
        let unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let allocatable =
            Resources::from_list(n.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        let changed = !self.present
            || self.labels != labels
            || self.taints != taints
            || self.unschedulable != unschedulable
            || self.allocatable != allocatable;
        self.present = true;
        self.labels = labels;
        self.taints = taints;
        self.unschedulable = unschedulable;
        self.allocatable = allocatable;
        changed
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.requested.pods += 1;
        self.non_zero_cpu += p.non_zero_cpu;
        self.non_zero_mem += p.non_zero_mem;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !p.anti_affinity.required.is_empty() {
            self.pods_with_required_anti += 1;
        }
        self.pods.push(p);
    }

    /// Removes the pod with this uid; returns it if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.requested.pods -= 1;
        self.non_zero_cpu -= p.non_zero_cpu;
        self.non_zero_mem -= p.non_zero_mem;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !p.anti_affinity.required.is_empty() {
            self.pods_with_required_anti -= 1;
        }
        Some(p)
    }
}
