//! Quota usage and quota checks, as kube's quota evaluators compute them. Shared by the
//! ResourceQuota admission (which charges a write's usage before admitting it), the
//! ResourceQuota status controller and the Tenant quota controller (which recompute
//! `status.used` from what the namespaces hold), so all three count alike.
//!
//! * pods: `pods` (pods that still count: not Succeeded/Failed, not past their deletion
//!   grace period), `count/pods` (every pod), and `cpu`/`memory`/`ephemeral-storage`,
//!   `requests.*`, `limits.*`, hugepages and extended resources. A pod's requests are the
//!   larger of its containers' sum (sidecars included) and its init containers' peak,
//!   plus its `spec.overhead` (the RuntimeClass's — a VM's own cost counts); limits
//!   likewise, overhead added to the limits that are set. Quota scopes (`Terminating`,
//!   `NotTerminating`, `BestEffort`, `NotBestEffort`, the `PriorityClass` scope selector)
//!   narrow which pods count; a scoped quota tracks pods only.
//! * services: `services`, `count/services`, `services.nodeports`,
//!   `services.loadbalancers`.
//! * claims: `persistentvolumeclaims`, `count/persistentvolumeclaims`,
//!   `requests.storage`, and per StorageClass
//!   `<class>.storageclass.storage.k8s.io/{requests.storage,persistentvolumeclaims}`.
//! * object counts: `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`
//!   and `count/<resource>[.<group>]` for any resource.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, ResourceQuotaSpec, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;

use serde::Deserialize as _;

use crate::quantity::Quantity;

/// An amount of a resource in thousandths, and whether it was written with a binary
/// suffix (`Mi`, `Gi`), which decides how it is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub milli: i128,
    pub binary: bool,
}

impl Amount {
    /// A count of objects.
    pub fn count(n: i64) -> Amount {
        Amount {
            milli: i128::from(n).saturating_mul(1000),
            binary: false,
        }
    }

    /// Parses a quantity (`500m`, `1Gi`); `None` when it is not one.
    pub fn parse(s: &str) -> Option<Amount> {
        let q = Quantity::parse(s).ok()?;
        Some(Amount {
            milli: q.milli_value()?,
            binary: s.ends_with('i'),
        })
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_milli(self.milli, self.binary))
    }
}

/// Resource name → amount (kube's `ResourceList`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage(pub BTreeMap<String, Amount>);

impl Usage {
    /// Parses a map of quantities; the names of those that are not quantities are the
    /// error.
    pub fn parse<'a>(
        list: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Usage, Vec<String>> {
        let mut out = Usage::default();
        let mut bad = Vec::new();
        for (k, v) in list {
            match Amount::parse(v) {
                Some(a) => {
                    out.0.insert(k.clone(), a);
                }
                None => bad.push(k.clone()),
            }
        }
        if bad.is_empty() {
            Ok(out)
        } else {
            Err(bad)
        }
    }

    /// From a k8s-openapi resource list; quantities that do not parse are left out.
    pub fn from_list(list: Option<&BTreeMap<String, KQuantity>>) -> Usage {
        let mut out = Usage::default();
        for (k, q) in list.into_iter().flatten() {
            if let Some(a) = Amount::parse(&q.0) {
                out.add_one(k, a);
            }
        }
        out
    }

    /// Adds `a` to resource `name`.
    pub fn add_one(&mut self, name: &str, a: Amount) {
        let e = self.0.entry(name.to_string()).or_default();
        e.milli = e.milli.saturating_add(a.milli);
        e.binary |= a.binary;
    }

    /// `self += other`.
    pub fn add(&mut self, other: &Usage) {
        for (k, a) in &other.0 {
            self.add_one(k, *a);
        }
    }

    /// Per resource, the larger of the two.
    fn max_with(&mut self, other: &Usage) {
        for (k, a) in &other.0 {
            let e = self.0.entry(k.clone()).or_default();
            if a.milli > e.milli {
                *e = Amount {
                    milli: a.milli,
                    binary: e.binary | a.binary,
                };
            }
        }
    }

    /// `self - other` per resource of `self`, never below zero (kube's
    /// `SubtractWithNonNegativeResult`).
    pub fn minus_non_negative(&self, other: &Usage) -> Usage {
        let mut out = Usage::default();
        for (k, a) in &self.0 {
            let o = other.0.get(k).map_or(0, |o| o.milli);
            out.0.insert(
                k.clone(),
                Amount {
                    milli: a.milli.saturating_sub(o).max(0),
                    binary: a.binary,
                },
            );
        }
        out
    }

    /// Only the named resources.
    pub fn mask<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Usage {
        let keep: BTreeSet<&str> = names.into_iter().collect();
        Usage(
            self.0
                .iter()
                .filter(|(k, _)| keep.contains(k.as_str()))
                .map(|(k, a)| (k.clone(), *a))
                .collect(),
        )
    }

    /// Without the resources of zero amount.
    pub fn without_zeros(mut self) -> Usage {
        self.0.retain(|_, a| a.milli != 0);
        self
    }

    /// The names of the resources below zero.
    pub fn negative(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, a)| a.milli < 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Resource names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// As strings (`status.used`).
    pub fn to_strings(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, a)| (k.clone(), a.to_string()))
            .collect()
    }

    /// kube's `prettyPrint`: `name=value` sorted by name, joined by commas.
    pub fn pretty(&self) -> String {
        self.0
            .iter()
            .map(|(k, a)| format!("{k}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Formats thousandths as kube prints a quantity: binary suffixes (`1536Mi`) when the
/// value was written with them and allows it, else decimal SI (`500m`, `2`, `3k`).
pub fn format_milli(m: i128, binary: bool) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let v = m / 1000;
    if v == 0 {
        return "0".into();
    }
    if binary {
        for (i, s) in ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"].iter().enumerate() {
            let unit = 1i128 << (10 * (6 - i));
            if v % unit == 0 {
                return format!("{}{s}", v / unit);
            }
        }
        return v.to_string();
    }
    for (e, s) in [
        (18, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
    ] {
        let unit = 10i128.pow(e);
        if v % unit == 0 {
            return format!("{}{s}", v / unit);
        }
    }
    v.to_string()
}

// ---------------------------------------------------------------------------------------
// Pods.

/// The resources kube's pod evaluator tracks by name.
const POD_RESOURCES: &[&str] = &[
    "pods",
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// The resources every container must declare when a quota tracks them.
const CONSTRAINED: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn extended_for_quota(name: &str) -> bool {
    name.strip_prefix("requests.")
        .is_some_and(|r| r.contains('/') && !r.starts_with("kubernetes.io/"))
}

fn pod_tracks(name: &str) -> bool {
    POD_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
        || extended_for_quota(name)
}

/// Whether a pod's phase is final.
pub fn pod_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod still counts against quota (kube's `QuotaV1Pod`): not finished, and not
/// past its deletion grace period. `now` is in seconds since the epoch.
pub fn pod_counts(pod: &Pod, now: i64) -> bool {
    if pod_terminal(pod) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        if now > ts.0.as_second() + grace {
            return false;
        }
    }
    true
}

fn container_list(c: &Container, limits: bool) -> Usage {
    let r = c.resources.as_ref();
    Usage::from_list(if limits {
        r.and_then(|r| r.limits.as_ref())
    } else {
        r.and_then(|r| r.requests.as_ref())
    })
}

/// A pod's effective requests (`limits == false`) or limits as kube's
/// `PodRequests`/`PodLimits`: the larger of the containers' sum (sidecars included) and
/// the init containers' peak; with `overhead`, `spec.overhead` added (to limits only
/// where a limit is set).
pub fn pod_resources(pod: &Pod, limits: bool, overhead: bool) -> Usage {
    let Some(spec) = pod.spec.as_ref() else {
        return Usage::default();
    };
    let mut sum = Usage::default();
    for c in &spec.containers {
        sum.add(&container_list(c, limits));
    }
    let mut sidecars = Usage::default();
    let mut init_peak = Usage::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_list(c, limits);
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&r);
            sidecars.add(&r);
            init_peak.max_with(&sidecars);
        } else {
            let mut t = r;
            t.add(&sidecars);
            init_peak.max_with(&t);
        }
    }
    sum.max_with(&init_peak);
    if overhead {
        for (k, a) in Usage::from_list(spec.overhead.as_ref()).0 {
            // Limits: overhead only where a limit is set (no limit stays no limit).
            if limits && !sum.0.contains_key(&k) {
                continue;
            }
            sum.add_one(&k, a);
        }
    }
    sum
}

/// kube's `podComputeUsageHelper`: the quota resources of given requests and limits.
fn compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut out = Usage::default();
    out.0.insert("pods".into(), Amount::count(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(a) = requests.0.get(r) {
            out.0.insert(r.into(), *a);
            out.0.insert(format!("requests.{r}"), *a);
        }
        if let Some(a) = limits.0.get(r) {
            out.0.insert(format!("limits.{r}"), *a);
        }
    }
    for (k, a) in &requests.0 {
        if k.starts_with("hugepages-") {
            out.0.insert(k.clone(), *a);
            out.0.insert(format!("requests.{k}"), *a);
        } else if k.contains('/') && !k.starts_with("kubernetes.io/") {
            out.0.insert(format!("requests.{k}"), *a);
        }
    }
    out
}

/// What a pod uses (kube's `PodUsageFunc`): `count/pods` always, the rest while the pod
/// counts ([`pod_counts`]).
pub fn pod_usage(pod: &Pod, now: i64) -> Usage {
    let mut out = Usage::default();
    out.0.insert("count/pods".into(), Amount::count(1));
    if !pod_counts(pod, now) {
        return out;
    }
    out.add(&compute_usage(
        &pod_resources(pod, false, true),
        &pod_resources(pod, true, true),
    ));
    out
}

/// Whether a pod has no cpu/memory requests or limits at all (QoS class BestEffort).
pub fn best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| {
            [false, true].iter().all(|&l| {
                let u = container_list(c, l);
                ["cpu", "memory"]
                    .iter()
                    .all(|r| u.0.get(*r).is_none_or(|a| a.milli == 0))
            })
        })
}

/// kube's pod `Constraints`: when a quota tracks cpu or memory, every container (init
/// containers too) must declare it. The error is kube's text, `must specify limits.cpu
/// for: a,b; must specify memory for: a`.
pub fn pod_constraints<'a>(
    required: impl IntoIterator<Item = &'a str>,
    pod: &Pod,
) -> Result<(), String> {
    let required: BTreeSet<&str> = required
        .into_iter()
        .filter(|r| CONSTRAINED.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = pod.spec.clone().unwrap_or_default();
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let has = compute_usage(&container_list(c, false), &container_list(c, true));
        for r in &required {
            if !has.0.contains_key(*r) {
                missing.entry(r).or_default().insert(c.name.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing
        .iter()
        .map(|(r, names)| {
            format!(
                "must specify {r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("; "))
}

/// One scope requirement of a quota: scope name, operator, values.
type Scope = (String, String, Vec<String>);

/// A quota's scopes and scope selector as requirements (kube's
/// `getScopeSelectorsFromQuota`).
pub fn scopes(spec: &ResourceQuotaSpec) -> Vec<Scope> {
    let mut out: Vec<Scope> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| (s.clone(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        out.push((
            e.scope_name.clone(),
            e.operator.clone(),
            e.values.clone().unwrap_or_default(),
        ));
    }
    out
}

/// Whether a quota has scopes (then it tracks pods only).
pub fn scoped(spec: &ResourceQuotaSpec) -> bool {
    !scopes(spec).is_empty()
}

/// Whether a pod matches every scope of a quota (kube's `podMatchesScopeFunc`).
pub fn pod_in_scope(spec: &ResourceQuotaSpec, pod: &Pod) -> bool {
    let pspec = pod.spec.clone().unwrap_or_default();
    let terminating = pspec.active_deadline_seconds.is_some_and(|s| s >= 0);
    scopes(spec).iter().all(|(name, op, values)| {
        let hit = match name.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort(pod),
            "NotBestEffort" => !best_effort(pod),
            "PriorityClass" => {
                let pc = pspec.priority_class_name.clone().unwrap_or_default();
                return match op.as_str() {
                    "In" => values.contains(&pc),
                    "NotIn" => !values.contains(&pc),
                    "Exists" => !pc.is_empty(),
                    "DoesNotExist" => pc.is_empty(),
                    _ => false,
                };
            }
            _ => return false,
        };
        match op.as_str() {
            "Exists" | "" => hit,
            "DoesNotExist" => !hit,
            _ => false,
        }
    })
}

// ---------------------------------------------------------------------------------------
// Services and claims.

/// What a Service uses (kube's service evaluator).
pub fn service_usage(svc: &Service) -> Usage {
    let mut out = Usage::default();
    for r in ["services", "count/services"] {
        out.0.insert(r.into(), Amount::count(1));
    }
    out.0.insert("services.nodeports".into(), Amount::count(0));
    out.0
        .insert("services.loadbalancers".into(), Amount::count(0));
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.as_ref().map_or(0, Vec::len) as i64;
    match spec.type_.as_deref() {
        Some("NodePort") => {
            out.0
                .insert("services.nodeports".into(), Amount::count(ports));
        }
        Some("LoadBalancer") | Some(crate::network::NETWORK_PROVIDER) => {
            let np = if spec.type_.as_deref() == Some(crate::network::NETWORK_PROVIDER) {
                0
            } else if spec.allocate_load_balancer_node_ports == Some(false) {
                spec.ports
                    .iter()
                    .flatten()
                    .filter(|p| p.node_port.unwrap_or(0) != 0)
                    .count() as i64
            } else {
                ports
            };
            out.0.insert("services.nodeports".into(), Amount::count(np));
            out.0
                .insert("services.loadbalancers".into(), Amount::count(1));
        }
        _ => {}
    }
    out
}

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// What a PersistentVolumeClaim uses (kube's claim evaluator): the larger of its request
/// and its allocated size.
pub fn claim_usage(pvc: &PersistentVolumeClaim) -> Usage {
    let mut out = Usage::default();
    for r in ["persistentvolumeclaims", "count/persistentvolumeclaims"] {
        out.0.insert(r.into(), Amount::count(1));
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let class = spec
        .storage_class_name
        .clone()
        .or_else(|| {
            pvc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
                .cloned()
        })
        .unwrap_or_default();
    let per_class = |what: &str| format!("{class}{STORAGE_CLASS_SUFFIX}{what}");
    if !class.is_empty() {
        out.0
            .insert(per_class("persistentvolumeclaims"), Amount::count(1));
    }
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Amount::parse(&q.0));
    let allocated = pvc
        .status
        .as_ref()
        .and_then(|s| s.allocated_resources.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Amount::parse(&q.0));
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a.milli > r.milli => Some(a),
        (Some(r), _) => Some(r),
        (None, a) => a,
    };
    if let Some(s) = storage {
        out.0.insert("requests.storage".into(), s);
        if !class.is_empty() {
            out.0.insert(per_class("requests.storage"), s);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Evaluators.

/// Which evaluator counts a resource's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluator {
    Pods,
    Services,
    Claims,
    /// Any other resource: its objects are counted as `count/<plural>[.<group>]` (and
    /// the legacy name, e.g. `configmaps`).
    Count {
        name: String,
        legacy: Option<&'static str>,
    },
}

/// The `count/…` name of a resource: `count/pods`, `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

impl Evaluator {
    /// The evaluator of a resource.
    pub fn of(group: &str, plural: &str) -> Evaluator {
        match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::Claims,
            _ => Evaluator::Count {
                name: count_name(group, plural),
                legacy: match (group, plural) {
                    ("", "configmaps") => Some("configmaps"),
                    ("", "secrets") => Some("secrets"),
                    ("", "replicationcontrollers") => Some("replicationcontrollers"),
                    ("", "resourcequotas") => Some("resourcequotas"),
                    _ => None,
                },
            },
        }
    }

    /// Whether an update is charged (its growth): services (node ports, load balancers)
    /// and claims (expansion). Pods and object counts are charged on create only.
    pub fn charges_updates(&self) -> bool {
        matches!(self, Evaluator::Services | Evaluator::Claims)
    }

    /// Whether this evaluator tracks a resource name.
    pub fn tracks(&self, name: &str) -> bool {
        match self {
            Evaluator::Pods => pod_tracks(name),
            Evaluator::Services => matches!(
                name,
                "services" | "count/services" | "services.nodeports" | "services.loadbalancers"
            ),
            Evaluator::Claims => {
                matches!(
                    name,
                    "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage"
                ) || name.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(c, r)| {
                    !c.is_empty() && matches!(r, "requests.storage" | "persistentvolumeclaims")
                })
            }
            Evaluator::Count { name: n, legacy } => name == n || Some(name) == *legacy,
        }
    }

    /// The names among `hard` this evaluator tracks (kube's `MatchingResources`).
    pub fn matching<'a>(&self, hard: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        hard.into_iter().filter(|n| self.tracks(n)).collect()
    }

    /// What one object uses. `obj` is the object as JSON; a shape the evaluator cannot
    /// read is the error.
    pub fn usage(&self, obj: &serde_json::Value, now: i64) -> Result<Usage, serde_json::Error> {
        Ok(match self {
            Evaluator::Pods => pod_usage(&Pod::deserialize(obj)?, now),
            Evaluator::Services => service_usage(&Service::deserialize(obj)?),
            Evaluator::Claims => claim_usage(&PersistentVolumeClaim::deserialize(obj)?),
            Evaluator::Count { name, legacy } => {
                let mut u = Usage::default();
                u.0.insert(name.clone(), Amount::count(1));
                if let Some(l) = legacy {
                    u.0.insert((*l).to_string(), Amount::count(1));
                }
                u
            }
        })
    }
}

/// The (group, plural) an object-count resource name counts: `configmaps` →
/// ("", "configmaps"), `count/deployments.apps` → ("apps", "deployments").
pub fn counted_resource(name: &str) -> Option<(&str, &str)> {
    match name {
        "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "pods"
        | "services"
        | "persistentvolumeclaims" => Some(("", name)),
        _ => {
            let rest = name.strip_prefix("count/")?;
            Some(match rest.split_once('.') {
                Some((plural, group)) => (group, plural),
                None => ("", rest),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks and recalculation.

/// A quota exceeded: kube's message without the object prefix, `exceeded quota: q,
/// requested: pods=1, used: pods=2, limited: pods=2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded(pub String);

/// Checks a write's usage `delta` against one quota (kube's `checkRequest` for one
/// quota): `hard`/`used` are the quota's status. Returns the quota's new `used`.
pub fn charge(name: &str, hard: &Usage, used: &Usage, delta: &Usage) -> Result<Usage, Exceeded> {
    let requested = delta.mask(hard.names());
    let mut new_used = used.clone();
    new_used.add(&requested);
    let exceeded: Vec<&str> = requested
        .names()
        .filter(|k| {
            let n = new_used.0.get(*k).map_or(0, |a| a.milli);
            hard.0.get(*k).is_some_and(|h| n > h.milli)
        })
        .collect();
    if !exceeded.is_empty() {
        return Err(Exceeded(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            requested.mask(exceeded.iter().copied()).pretty(),
            used.mask(exceeded.iter().copied()).pretty(),
            hard.mask(exceeded.iter().copied()).pretty(),
        )));
    }
    Ok(new_used)
}

/// What a namespace (or a tenant's namespaces) holds, as far as a quota needs it.
#[derive(Debug, Default)]
pub struct Inventory {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub claims: Vec<PersistentVolumeClaim>,
    /// Counts of other resources, by the quota's resource name (`configmaps`,
    /// `count/deployments.apps`).
    pub counts: BTreeMap<String, i64>,
}

/// Which kinds the inventory for `hard` must hold: (pods, services, claims).
pub fn needs(hard: &[&str]) -> (bool, bool, bool) {
    let any = |e: Evaluator| hard.iter().any(|n| e.tracks(n));
    (
        any(Evaluator::Pods),
        any(Evaluator::Services),
        any(Evaluator::Claims),
    )
}

/// The usage a quota tracks (kube's `CalculateUsage`): for each resource of `spec.hard`
/// an evaluator knows, the sum over the inventory's matching objects (0 when none).
/// `now` is in seconds since the epoch.
pub fn compute_used(spec: &ResourceQuotaSpec, inv: &Inventory, now: i64) -> Usage {
    let hard: Vec<&str> = spec
        .hard
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let scoped = scoped(spec);
    let mut out = Usage::default();
    let mut sum = |ev: Evaluator, items: &mut dyn Iterator<Item = Usage>| {
        let names = ev.matching(hard.iter().copied());
        if names.is_empty() {
            return;
        }
        let mut total = Usage::default();
        for n in &names {
            total.0.insert((*n).to_string(), Amount::default());
        }
        for u in items {
            total.add(&u);
        }
        out.add(&total.mask(names.iter().copied()));
    };
    sum(
        Evaluator::Pods,
        &mut inv
            .pods
            .iter()
            .filter(|p| pod_in_scope(spec, p))
            .map(|p| pod_usage(p, now)),
    );
    if !scoped {
        sum(
            Evaluator::Services,
            &mut inv.services.iter().map(service_usage),
        );
        sum(Evaluator::Claims, &mut inv.claims.iter().map(claim_usage));
        for n in &hard {
            let Some((group, plural)) = counted_resource(n) else {
                continue;
            };
            if matches!(
                (group, plural),
                ("", "pods" | "services" | "persistentvolumeclaims")
            ) {
                continue;
            }
            let c = inv.counts.get(*n).copied().unwrap_or(0);
            out.0.insert((*n).to_string(), Amount::count(c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> ResourceQuotaSpec {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn list(v: serde_json::Value) -> Usage {
        let m: BTreeMap<String, String> = serde_json::from_value(v).unwrap();
        Usage::parse(&m).unwrap()
    }

    fn strings(u: &Usage) -> BTreeMap<String, String> {
        u.to_strings()
    }

    #[test]
    fn formatting_like_kube() {
        assert_eq!(format_milli(1500, false), "1500m");
        assert_eq!(format_milli(2000, false), "2");
        assert_eq!(format_milli(3_000_000, false), "3k");
        assert_eq!(format_milli(1536 * 1024 * 1024 * 1000, true), "1536Mi");
        assert_eq!(format_milli(1024 * 1024 * 1024 * 1000, true), "1Gi");
        assert_eq!(format_milli(1000 * 1000, true), "1000");
        assert_eq!(format_milli(0, true), "0");
    }

    #[test]
    fn usage_with_init_containers_sidecars_and_overhead() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
        "overhead": {"cpu": "250m", "memory": "160Mi"},
        "initContainers": [
            {"name": "setup", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}},
            {"name": "proxy", "image": "i", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}}}
        ],
        "containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"},
                                                      "limits": {"cpu": "1", "memory": "256Mi"}}},
            {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
        ]}}));
        let req = pod_resources(&p, false, true);
        // containers 750m + sidecar 100m = 850m < init peak 2 (setup alone: the sidecar
        // starts after it); + overhead 250m.
        assert_eq!(req.0["cpu"].milli, 2250);
        // memory: 128+64+32 = 224Mi > 64Mi; + 160Mi overhead.
        assert_eq!(req.0["memory"].milli, (224 + 160) * 1024 * 1024 * 1000);
        let lim = pod_resources(&p, true, true);
        assert_eq!(lim.0["cpu"].milli, 1250, "1 + overhead");
        assert_eq!(lim.0["memory"].milli, (256 + 32 + 160) * 1024 * 1024 * 1000);
        assert_eq!(
            pod_resources(&p, false, false).0["cpu"].milli,
            2000,
            "without overhead"
        );

        let q = spec(
            json!({"hard": {"pods": "10", "requests.cpu": "4", "cpu": "4", "requests.memory": "1Gi",
                            "limits.cpu": "8", "limits.memory": "2Gi", "memory": "1Gi", "count/pods": "9"}}),
        );
        let done = pod(
            json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Succeeded"}}),
        );
        let inv = Inventory {
            pods: vec![p, done],
            ..Default::default()
        };
        let u = strings(&compute_used(&q, &inv, 0));
        assert_eq!(u["pods"], "1", "a finished pod does not count");
        assert_eq!(u["count/pods"], "2", "count/pods counts every pod");
        assert_eq!(u["requests.cpu"], "2250m");
        assert_eq!(u["cpu"], "2250m");
        assert_eq!(u["requests.memory"], "384Mi");
        assert_eq!(u["memory"], "384Mi");
        assert_eq!(u["limits.cpu"], "1250m");
        assert_eq!(u["limits.memory"], "448Mi");
        assert_eq!(u.len(), 8, "only the resources the quota names");
    }

    #[test]
    fn counts_services_and_claims() {
        let q = spec(
            json!({"hard": {"services": "5", "services.nodeports": "5", "services.loadbalancers": "2",
            "persistentvolumeclaims": "3", "requests.storage": "10Gi",
            "fast.storageclass.storage.k8s.io/requests.storage": "5Gi",
            "configmaps": "9", "count/deployments.apps": "4", "secrets": "3", "foo": "1"}}),
        );
        let svc = |t: &str, ports: usize| -> Service {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"type": t,
                "ports": (0..ports).map(|i| json!({"port": 80 + i})).collect::<Vec<_>>()}}))
            .unwrap()
        };
        let pvc = |class: &str, size: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": "c"}, "spec": {"storageClassName": class,
                "resources": {"requests": {"storage": size}}}}),
            )
            .unwrap()
        };
        let inv = Inventory {
            services: vec![
                svc("ClusterIP", 1),
                svc("NodePort", 2),
                svc("LoadBalancer", 1),
            ],
            claims: vec![pvc("fast", "1Gi"), pvc("slow", "512Mi")],
            counts: BTreeMap::from([
                ("configmaps".into(), 2),
                ("count/deployments.apps".into(), 1),
            ]),
            ..Default::default()
        };
        let u = strings(&compute_used(&q, &inv, 0));
        assert_eq!(u["services"], "3");
        assert_eq!(u["services.nodeports"], "3");
        assert_eq!(u["services.loadbalancers"], "1");
        assert_eq!(u["persistentvolumeclaims"], "2");
        assert_eq!(u["requests.storage"], "1536Mi");
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            "1Gi"
        );
        assert_eq!(u["configmaps"], "2");
        assert_eq!(u["count/deployments.apps"], "1");
        assert_eq!(u["secrets"], "0", "known but none counted");
        assert!(!u.contains_key("foo"), "no evaluator knows foo");
    }

    #[test]
    fn scopes_narrow_pods() {
        let be = pod(
            json!({"metadata": {"name": "be"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        );
        let burst = pod(
            json!({"metadata": {"name": "b"}, "spec": {"activeDeadlineSeconds": 30,
            "priorityClassName": "high",
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        let q = |scopes: serde_json::Value| {
            spec(json!({"hard": {"pods": "9", "services": "1"}, "scopes": scopes}))
        };
        let inv = Inventory {
            pods: vec![be.clone(), burst.clone()],
            ..Default::default()
        };
        let u = strings(&compute_used(&q(json!(["BestEffort"])), &inv, 0));
        assert_eq!(u["pods"], "1");
        assert!(
            !u.contains_key("services"),
            "a scoped quota tracks pods only"
        );
        assert_eq!(
            strings(&compute_used(&q(json!(["Terminating"])), &inv, 0))["pods"],
            "1"
        );
        assert_eq!(
            strings(&compute_used(
                &q(json!(["NotTerminating", "NotBestEffort"])),
                &inv,
                0
            ))["pods"],
            "0"
        );
        let sel = spec(
            json!({"hard": {"pods": "9"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
        );
        assert!(pod_in_scope(&sel, &burst));
        assert!(!pod_in_scope(&sel, &be));
    }

    #[test]
    fn counted_resource_names() {
        assert_eq!(counted_resource("configmaps"), Some(("", "configmaps")));
        assert_eq!(
            counted_resource("count/deployments.apps"),
            Some(("apps", "deployments"))
        );
        assert_eq!(
            counted_resource("count/widgets.example.com"),
            Some(("example.com", "widgets"))
        );
        assert_eq!(counted_resource("count/secrets"), Some(("", "secrets")));
        assert_eq!(counted_resource("requests.cpu"), None);
        assert_eq!(
            Evaluator::of("apps", "deployments").matching(["count/deployments.apps", "pods"]),
            vec!["count/deployments.apps"]
        );
        assert!(Evaluator::of("", "configmaps").tracks("configmaps"));
        assert!(Evaluator::Pods.tracks("requests.nvidia.com/gpu"));
        assert!(!Evaluator::Pods.tracks("requests.storage"));
        assert!(Evaluator::Claims.tracks("gold.storageclass.storage.k8s.io/requests.storage"));
    }

    #[test]
    fn charge_like_kube() {
        let hard = list(json!({"pods": "2", "requests.cpu": "1"}));
        let used = list(json!({"pods": "2", "requests.cpu": "500m"}));
        let delta = list(json!({"pods": "1", "count/pods": "1", "requests.cpu": "250m"}));
        let e = charge("q", &hard, &used, &delta).unwrap_err();
        assert_eq!(
            e.0,
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let used = list(json!({"pods": "1", "requests.cpu": "900m"}));
        let e = charge("q", &hard, &used, &delta).unwrap_err();
        assert_eq!(
            e.0,
            "exceeded quota: q, requested: requests.cpu=250m, used: requests.cpu=900m, limited: requests.cpu=1"
        );
        let used = list(json!({"pods": "1", "requests.cpu": "500m"}));
        let new = charge("q", &hard, &used, &delta).unwrap();
        assert_eq!(
            strings(&new),
            BTreeMap::from([
                ("pods".to_string(), "2".to_string()),
                ("requests.cpu".to_string(), "750m".to_string())
            ]),
            "only tracked resources are charged"
        );
        let mem = list(json!({"limits.memory": "1Gi"}));
        let e = charge(
            "m",
            &mem,
            &list(json!({"limits.memory": "768Mi"})),
            &list(json!({"limits.memory": "512Mi"})),
        )
        .unwrap_err();
        assert_eq!(e.0, "exceeded quota: m, requested: limits.memory=512Mi, used: limits.memory=768Mi, limited: limits.memory=1Gi");
    }

    #[test]
    fn constraints_name_the_containers() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "init", "image": "i", "resources": {"limits": {"cpu": "1"}}}],
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}},
                {"name": "b", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}));
        let e = pod_constraints(["limits.cpu", "limits.memory", "pods", "requests.cpu"], &p)
            .unwrap_err();
        assert_eq!(
            e,
            "must specify limits.cpu for: a; must specify limits.memory for: a,init; must specify requests.cpu for: b,init"
        );
        assert!(pod_constraints(["pods", "requests.storage"], &p).is_ok());
    }

    #[test]
    fn object_usage_from_json() {
        let u = Evaluator::Pods
            .usage(
                &json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]}}),
                0,
            )
            .unwrap();
        assert_eq!(u.0["pods"], Amount::count(1));
        assert_eq!(u.0["requests.cpu"].milli, 100);
        assert_eq!(u.0["limits.cpu"].milli, 200);
        assert!(Evaluator::Pods
            .usage(&json!({"spec": {"containers": "x"}}), 0)
            .is_err());
        let u = Evaluator::of("", "secrets").usage(&json!({}), 0).unwrap();
        assert_eq!(u.pretty(), "count/secrets=1,secrets=1");
        let svc = Evaluator::Services
            .usage(
                &json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}),
                0,
            )
            .unwrap();
        assert_eq!(svc.0["services.nodeports"], Amount::count(2));
        // Update growth: ClusterIP → NodePort charges the node ports only.
        let old = Evaluator::Services
            .usage(&json!({"spec": {"ports": [{"port": 1}]}}), 0)
            .unwrap();
        assert_eq!(
            svc.minus_non_negative(&old).without_zeros().pretty(),
            "services.nodeports=2"
        );
    }
}
