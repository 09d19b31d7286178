//! NetworkPolicy (`networking.k8s.io/v1`) inside tenant Networks, enforced on the node.
//!
//! [`compile`] turns one Network's policies, pods and namespaces into [`PolicyRules`] for the
//! pods of that Network on this node — pure, no I/O. [`PolicyRules::script`] and
//! [`PolicyRules::diff_script`] render them as one nftables table, `inet h8s_policy`, with a
//! chain and two small sets per isolated pod (found through verdict maps keyed by (bridge,
//! pod IP)): the whole table once, then only what changed.
//!
//! Where it is enforced: pod ports are bridge ports, and this kernel has no bridge-family
//! connection tracking (`nf_conntrack_bridge`), which NetworkPolicy needs to let replies
//! through. With `br_netfilter` (`bridge-nf-call-iptables=1`) bridged IPv4 traverses the
//! inet `forward` hook with the bridge as both input and output interface, so a pod is named
//! by (its Network's bridge, its address) — unique on a node even when two tenants use the
//! same addresses, and trustworthy because the anti-spoofing rules on each port
//! (`bridge h8s`) drop any frame whose source is not the port's own address. Each bridge gets
//! its own conntrack zone so two tenants' identical flows never share an entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use h8s_machinery::LabelSelector;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The nftables table (inet family) that enforces NetworkPolicy on a node.
pub const POLICY_TABLE: &str = "h8s_policy";

/// A transport protocol a policy port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// `TCP` (also the default), `UDP`, `SCTP`; anything else: `None`.
    pub fn from_api(p: Option<&str>) -> Option<Proto> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// A named container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

/// A pod of the Network as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its address in the Network.
    pub ip: Ipv4Addr,
    pub ports: Vec<NamedPort>,
}

/// A namespace of the Network's tenant as `namespaceSelector`s see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNamespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// An inclusive range of IPv4 addresses (as integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange(pub u32, pub u32);

impl IpRange {
    pub const ALL: IpRange = IpRange(0, u32::MAX);

    pub fn host(ip: Ipv4Addr) -> IpRange {
        IpRange(ip.into(), ip.into())
    }

    pub fn cidr(net: ipnet::Ipv4Net) -> IpRange {
        IpRange(net.network().into(), net.broadcast().into())
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        self.0 <= v && v <= self.1
    }

    fn nft(&self) -> String {
        if self.0 == self.1 {
            Ipv4Addr::from(self.0).to_string()
        } else {
            format!("{}-{}", Ipv4Addr::from(self.0), Ipv4Addr::from(self.1))
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange(pub u16, pub u16);

impl PortRange {
    fn nft(&self) -> String {
        if self.0 == self.1 {
            self.0.to_string()
        } else {
            format!("{}-{}", self.0, self.1)
        }
    }
}

/// A local pod: its Network's bridge and its address.
pub type PodKey = (String, Ipv4Addr);

/// Everything the node enforces, per local pod. Ranges inside one set never overlap (the
/// kernel's interval sets refuse overlapping elements), see [`normalize`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// Bridges of the node's Networks with their conntrack zone.
    pub zones: BTreeMap<String, u16>,
    /// Pods some policy isolates for ingress (everything not allowed is dropped).
    pub ingress_isolated: BTreeSet<PodKey>,
    pub egress_isolated: BTreeSet<PodKey>,
    /// (pod, source range): every protocol and port allowed.
    pub ingress_any: BTreeSet<(PodKey, IpRange)>,
    /// (pod, source range, protocol, destination ports).
    pub ingress_ports: BTreeSet<(PodKey, IpRange, Proto, PortRange)>,
    /// (pod, destination range): every protocol and port allowed.
    pub egress_any: BTreeSet<(PodKey, IpRange)>,
    pub egress_ports: BTreeSet<(PodKey, IpRange, Proto, PortRange)>,
}

/// The conntrack zone of a Network's bridge: its segment id folded into 1…65535.
pub fn zone_for_vni(vni: u32) -> u16 {
    (vni % 65535) as u16 + 1
}

fn selector(sel: Option<&ApiSelector>) -> LabelSelector {
    match sel {
        // A nil selector in a peer means "not this criterion"; callers handle None first.
        None => LabelSelector::nothing(),
        Some(s) => serde_json::to_value(s)
            .ok()
            .and_then(|v| LabelSelector::from_json(&v).ok())
            // Validation refuses bad selectors; one that slipped through selects nothing.
            .unwrap_or_else(LabelSelector::nothing),
    }
}

/// Direction of a rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// The peers one rule names: every address, or these pods and address ranges.
struct Peers<'a> {
    any: bool,
    pods: Vec<&'a PolicyPod>,
    ranges: Vec<IpRange>,
}

fn peers<'a>(
    list: Option<&[NetworkPolicyPeer]>,
    policy_ns: &str,
    pods: &'a [PolicyPod],
    namespaces: &[PolicyNamespace],
) -> Peers<'a> {
    let list = list.unwrap_or_default();
    if list.is_empty() {
        return Peers {
            any: true,
            pods: vec![],
            ranges: vec![],
        };
    }
    let mut out = Peers {
        any: false,
        pods: vec![],
        ranges: vec![],
    };
    for peer in list {
        if let Some(b) = &peer.ip_block {
            let Ok(cidr) = b.cidr.parse::<ipnet::Ipv4Net>() else {
                continue; // IPv6 blocks never match IPv4 traffic
            };
            let except: Vec<IpRange> = b
                .except
                .iter()
                .flatten()
                .filter_map(|e| e.parse::<ipnet::Ipv4Net>().ok())
                .map(IpRange::cidr)
                .collect();
            out.ranges
                .extend(subtract(IpRange::cidr(cidr.trunc()), &except));
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue; // validation refuses an empty peer
        }
        let pod_sel = peer
            .pod_selector
            .as_ref()
            .map(|s| selector(Some(s)))
            .unwrap_or_else(LabelSelector::everything);
        let in_ns: Box<dyn Fn(&str) -> bool> = match &peer.namespace_selector {
            None => Box::new(move |ns: &str| ns == policy_ns),
            Some(s) => {
                let sel = selector(Some(s));
                let chosen: BTreeSet<&str> = namespaces
                    .iter()
                    .filter(|n| sel.matches(&n.labels))
                    .map(|n| n.name.as_str())
                    .collect();
                Box::new(move |ns: &str| chosen.contains(ns))
            }
        };
        for p in pods {
            if in_ns(&p.namespace) && pod_sel.matches(&p.labels) {
                out.pods.push(p);
            }
        }
    }
    out
}

/// `range` minus every range of `holes`.
pub fn subtract(range: IpRange, holes: &[IpRange]) -> Vec<IpRange> {
    let mut out = vec![range];
    for h in holes {
        let mut next = vec![];
        for r in out {
            if h.1 < r.0 || h.0 > r.1 {
                next.push(r);
                continue;
            }
            if h.0 > r.0 {
                next.push(IpRange(r.0, h.0 - 1));
            }
            if h.1 < r.1 {
                next.push(IpRange(h.1 + 1, r.1));
            }
        }
        out = next;
    }
    out
}

/// Merges overlapping and adjacent ranges.
fn merge<T: Copy + Ord + Into<u64>>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort();
    let mut out: Vec<(T, T)> = vec![];
    for (lo, hi) in v {
        if let Some(last) = out.last_mut() {
            if lo.into() <= last.1.into() + 1 {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        out.push((lo, hi));
    }
    out
}

/// Turns a union of boxes (address range × port range) into disjoint boxes covering exactly
/// the same points, with as few boxes as a sweep over the addresses gives.
pub fn normalize(boxes: &[(IpRange, PortRange)]) -> Vec<(IpRange, PortRange)> {
    // Elementary address intervals between every start and every end + 1.
    let mut cuts: Vec<u64> = boxes
        .iter()
        .flat_map(|(r, _)| [u64::from(r.0), u64::from(r.1) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut sorted: Vec<&(IpRange, PortRange)> = boxes.iter().collect();
    sorted.sort_by_key(|(r, _)| r.0);
    let mut next = 0;
    let mut active: Vec<&(IpRange, PortRange)> = vec![];
    // (address interval, its disjoint port ranges), adjacent intervals with the same ports
    // merged.
    type Row = (u64, u64, Vec<(u16, u16)>);
    let mut rows: Vec<Row> = vec![];
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        while next < sorted.len() && u64::from(sorted[next].0 .0) <= lo {
            active.push(sorted[next]);
            next += 1;
        }
        active.retain(|(r, _)| u64::from(r.1) >= lo);
        if active.is_empty() {
            continue;
        }
        let ports = merge(active.iter().map(|(_, p)| (p.0, p.1)).collect());
        match rows.last_mut() {
            Some(last) if last.1 + 1 == lo && last.2 == ports => last.1 = hi,
            _ => rows.push((lo, hi, ports)),
        }
    }
    let mut out = vec![];
    for (lo, hi, ports) in rows {
        for (a, b) in ports {
            out.push((IpRange(lo as u32, hi as u32), PortRange(a, b)));
        }
    }
    out
}

/// The policy types of a policy (the API server defaults them; an object written before that
/// gets the same defaults here).
fn types(p: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = &p.spec else {
        return (false, false);
    };
    match spec.policy_types.as_deref() {
        Some(t) if !t.is_empty() => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// The ports one rule allows towards `target`, `None` for "every port and protocol".
/// Named ports resolve against `target`'s container ports.
fn resolve_ports(
    ports: Option<&[NetworkPolicyPort]>,
    target: &PolicyPod,
) -> Option<Vec<(Proto, PortRange)>> {
    let ports = ports.unwrap_or_default();
    if ports.is_empty() {
        return None;
    }
    let mut out = vec![];
    for p in ports {
        let Some(proto) = Proto::from_api(p.protocol.as_deref()) else {
            continue;
        };
        match &p.port {
            // A protocol without a port: every port of that protocol.
            None => out.push((proto, PortRange(0, 65535))),
            Some(IntOrString::Int(n)) => {
                let Ok(lo) = u16::try_from(*n) else { continue };
                let hi = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= lo)
                    .unwrap_or(lo);
                out.push((proto, PortRange(lo, hi)));
            }
            Some(IntOrString::String(name)) => {
                for np in &target.ports {
                    if &np.name == name && np.proto == proto {
                        out.push((proto, PortRange(np.port, np.port)));
                    }
                }
            }
        }
    }
    Some(out)
}

/// Whether some rule port is named (it must be resolved per peer pod for egress).
fn has_named(ports: Option<&[NetworkPolicyPort]>) -> bool {
    ports
        .unwrap_or_default()
        .iter()
        .any(|p| matches!(p.port, Some(IntOrString::String(_))))
}

/// A policy's part that does not depend on the pod it is applied to.
struct Pre<'a> {
    ns: &'a str,
    sel: LabelSelector,
    /// Ingress, egress rules (`None`: the policy does not have that type).
    rules: [Option<Vec<PreRule<'a>>>; 2],
}

/// One rule with its peers resolved.
struct PreRule<'a> {
    peers: Peers<'a>,
    /// Every peer address as merged ranges.
    ranges: Vec<IpRange>,
    ports: Option<&'a [NetworkPolicyPort]>,
}

fn pre_rules<'a>(
    rules: Vec<Rule<'a>>,
    ns: &str,
    pods: &'a [PolicyPod],
    namespaces: &[PolicyNamespace],
) -> Vec<PreRule<'a>> {
    rules
        .into_iter()
        .map(|(peer_list, ports)| {
            let ps = peers(peer_list, ns, pods, namespaces);
            let mut ranges: Vec<(u32, u32)> = ps.ranges.iter().map(|r| (r.0, r.1)).collect();
            if ps.any {
                ranges.push((0, u32::MAX));
            }
            ranges.extend(ps.pods.iter().map(|p| (u32::from(p.ip), u32::from(p.ip))));
            PreRule {
                peers: ps,
                ranges: merge(ranges)
                    .into_iter()
                    .map(|(a, b)| IpRange(a, b))
                    .collect(),
                ports,
            }
        })
        .collect()
}

/// One rule: its peers and its ports.
type Rule<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

/// Compiles the policies of one Network for its pods on this node.
///
/// * `bridge`: the Network's bridge on this node; `local`: addresses of its pods here.
/// * `pods`: every pod of the Network with its address (on any node) — peers are looked up
///   only among them, so another Network's pods (which may use the same addresses) never
///   count.
/// * `namespaces`: the namespaces of the Network's tenant (`namespaceSelector` never looks
///   further).
/// * `policies`: the NetworkPolicies of the Network's namespaces; a policy selects pods of its
///   own namespace only.
///
/// Kubernetes semantics: a pod selected by no policy of a direction is not isolated in that
/// direction; once selected, only the union of the selecting policies' rules is allowed
/// (replies to allowed connections always pass). An empty `from`/`to` is every address; an
/// empty `ports` every protocol and port; a named port resolves against the destination pod's
/// container ports (ingress: the local pod; egress: each peer pod, so an `ipBlock` with a
/// named port matches the pods of the Network inside the block); `endPort` makes a range.
pub fn compile<'a>(
    bridge: &str,
    local: &[Ipv4Addr],
    pods: &'a [PolicyPod],
    namespaces: &[PolicyNamespace],
    policies: &'a [NetworkPolicy],
) -> PolicyRules {
    // What does not depend on the local pod is worked out once per policy: its selector, its
    // types, and each rule's peers (selectors against every pod and namespace).
    let pre: Vec<Pre<'a>> = policies
        .iter()
        .filter_map(|pol| {
            let ns = pol.metadata.namespace.as_deref()?;
            let spec = pol.spec.as_ref()?;
            let sel = selector(spec.pod_selector.as_ref().or(Some(&ApiSelector::default())));
            let (ing, eg) = types(pol);
            let build = |rules: Vec<Rule<'a>>| pre_rules(rules, ns, pods, namespaces);
            let ingress = ing.then(|| {
                build(
                    spec.ingress
                        .iter()
                        .flatten()
                        .map(|r| (r.from.as_deref(), r.ports.as_deref()))
                        .collect(),
                )
            });
            let egress = eg.then(|| {
                build(
                    spec.egress
                        .iter()
                        .flatten()
                        .map(|r| (r.to.as_deref(), r.ports.as_deref()))
                        .collect(),
                )
            });
            Some(Pre {
                ns,
                sel,
                rules: [ingress, egress],
            })
        })
        .collect();
    let mut out = PolicyRules::default();
    for ip in local {
        let Some(me) = pods.iter().find(|p| p.ip == *ip) else {
            continue; // no pod in the API (any more): nothing selects it
        };
        let key: PodKey = (bridge.to_string(), *ip);
        let mut any: [Vec<(u32, u32)>; 2] = [vec![], vec![]];
        let mut boxes: [BTreeMap<Proto, Vec<(IpRange, PortRange)>>; 2] =
            [BTreeMap::new(), BTreeMap::new()];
        let mut isolated = [false, false];
        for pol in &pre {
            if pol.ns != me.namespace || !pol.sel.matches(&me.labels) {
                continue;
            }
            for dir in [Dir::Ingress, Dir::Egress] {
                let i = (dir == Dir::Egress) as usize;
                let Some(rules) = &pol.rules[i] else { continue };
                isolated[i] = true;
                for rule in rules {
                    let (ps, ranges, ports) = (&rule.peers, rule.ranges.as_slice(), rule.ports);
                    if dir == Dir::Egress && has_named(ports) {
                        // Per destination pod: the pods named, plus the Network's pods inside
                        // the address ranges named.
                        let mut targets: Vec<&PolicyPod> = ps.pods.clone();
                        for p in pods {
                            if ps.any || ps.ranges.iter().any(|r| r.contains(p.ip)) {
                                targets.push(p);
                            }
                        }
                        let (named, others): (Vec<NetworkPolicyPort>, Vec<NetworkPolicyPort>) =
                            ports
                                .unwrap_or_default()
                                .iter()
                                .cloned()
                                .partition(|p| matches!(p.port, Some(IntOrString::String(_))));
                        for t in targets {
                            for (proto, pr) in resolve_ports(Some(&named), t).unwrap_or_default() {
                                boxes[i]
                                    .entry(proto)
                                    .or_default()
                                    .push((IpRange::host(t.ip), pr));
                            }
                        }
                        // The rule's numbered (and protocol-only) ports apply to every peer.
                        if !others.is_empty() {
                            for (proto, pr) in resolve_ports(Some(&others), me).unwrap_or_default()
                            {
                                for r in ranges {
                                    boxes[i].entry(proto).or_default().push((*r, pr));
                                }
                            }
                        }
                        continue;
                    }
                    // Ingress: ports are the local pod's; egress without named ports: the
                    // same numbers towards every peer.
                    match resolve_ports(ports, me) {
                        None => any[i].extend(ranges.iter().map(|r| (r.0, r.1))),
                        Some(list) => {
                            for (proto, pr) in list {
                                for r in ranges {
                                    boxes[i].entry(proto).or_default().push((*r, pr));
                                }
                            }
                        }
                    }
                }
            }
        }
        for i in 0..2 {
            if !isolated[i] {
                continue;
            }
            let (iso, any_set, ports_set) = if i == 0 {
                (
                    &mut out.ingress_isolated,
                    &mut out.ingress_any,
                    &mut out.ingress_ports,
                )
            } else {
                (
                    &mut out.egress_isolated,
                    &mut out.egress_any,
                    &mut out.egress_ports,
                )
            };
            iso.insert(key.clone());
            let merged = merge(std::mem::take(&mut any[i]));
            for (lo, hi) in &merged {
                any_set.insert((key.clone(), IpRange(*lo, *hi)));
            }
            for (proto, b) in std::mem::take(&mut boxes[i]) {
                // What the any-set allows already needs no port elements (fewer elements;
                // the two sets may overlap each other, only elements of one set may not).
                let b: Vec<(IpRange, PortRange)> = b
                    .into_iter()
                    .flat_map(|(r, p)| {
                        let holes: Vec<IpRange> =
                            merged.iter().map(|(a, z)| IpRange(*a, *z)).collect();
                        subtract(r, &holes).into_iter().map(move |r| (r, p))
                    })
                    .collect();
                for (r, p) in normalize(&b) {
                    ports_set.insert((key.clone(), r, proto, p));
                }
            }
        }
    }
    out
}

/// One isolated pod's allow sets in one direction (each sorted: they come from sorted sets).
#[derive(Default, PartialEq, Eq)]
struct PodSets {
    any: Vec<IpRange>,
    ports: Vec<(IpRange, Proto, PortRange)>,
}

/// The two directions: map name, object prefix, the packet field that names the peer.
const DIRS: [(&str, &str, &str); 2] = [("in_iso", "i", "saddr"), ("eg_iso", "e", "daddr")];

/// Per direction (ingress, egress), every isolated pod with its allow sets. Structured, not
/// rendered: a diff renders only what changed.
fn pod_sets(r: &PolicyRules) -> [BTreeMap<&PodKey, PodSets>; 2] {
    fn dir<'a>(
        iso: &'a BTreeSet<PodKey>,
        any: &'a BTreeSet<(PodKey, IpRange)>,
        ports: &'a BTreeSet<(PodKey, IpRange, Proto, PortRange)>,
    ) -> BTreeMap<&'a PodKey, PodSets> {
        let mut m: BTreeMap<&PodKey, PodSets> =
            iso.iter().map(|k| (k, PodSets::default())).collect();
        for (k, r) in any {
            m.entry(k).or_default().any.push(*r);
        }
        for (k, r, pr, p) in ports {
            m.entry(k).or_default().ports.push((*r, *pr, *p));
        }
        m
    }
    [
        dir(&r.ingress_isolated, &r.ingress_any, &r.ingress_ports),
        dir(&r.egress_isolated, &r.egress_any, &r.egress_ports),
    ]
}

fn any_text(r: &IpRange) -> String {
    r.nft()
}

fn ports_text((r, pr, p): &(IpRange, Proto, PortRange)) -> String {
    format!("{} . {} . {}", r.nft(), pr.nft(), p.nft())
}

/// `a` minus `b`, both sorted.
fn sorted_minus<'a, T: Ord>(a: &'a [T], b: &[T]) -> Vec<&'a T> {
    a.iter().filter(|x| b.binary_search(x).is_err()).collect()
}

/// The chain (and set-name stem) of a pod in one direction: `i_`/`e_`, bridge, address in hex.
fn pod_object(prefix: &str, (bridge, ip): &PodKey) -> String {
    format!("{prefix}_{bridge}_{:08x}", u32::from(*ip))
}

fn zone_elements(r: &PolicyRules) -> BTreeSet<String> {
    r.zones
        .iter()
        .map(|(b, z)| format!("\"{b}\" : {z}"))
        .collect()
}

fn list(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Commands creating one pod's sets and chain and entering it in its direction's map.
fn add_pod(s: &mut String, d: usize, key: &PodKey, sets: &PodSets) {
    let t = POLICY_TABLE;
    let (map, prefix, field) = DIRS[d];
    let o = pod_object(prefix, key);
    let elems = |e: Vec<String>| {
        if e.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", e.join(", "))
        }
    };
    let _ = writeln!(
        s,
        "add set inet {t} {o}_any {{ type ipv4_addr; flags interval;{} }}",
        elems(sets.any.iter().map(any_text).collect())
    );
    let _ = writeln!(
        s,
        "add set inet {t} {o}_ports {{ type ipv4_addr . inet_proto . inet_service; flags interval;{} }}",
        elems(sets.ports.iter().map(ports_text).collect())
    );
    let _ = writeln!(s, "add chain inet {t} {o}");
    let _ = writeln!(s, "add rule inet {t} {o} ip {field} @{o}_any return");
    let _ = writeln!(
        s,
        "add rule inet {t} {o} ip {field} . meta l4proto . th dport @{o}_ports return"
    );
    let _ = writeln!(s, "add rule inet {t} {o} drop");
    let _ = writeln!(
        s,
        "add element inet {t} {map} {{ \"{}\" . {} : jump {o} }}",
        key.0, key.1
    );
}

/// Commands removing what [`add_pod`] made (map element first: it holds the chain).
fn delete_pod(s: &mut String, d: usize, key: &PodKey) {
    let t = POLICY_TABLE;
    let (map, prefix, _) = DIRS[d];
    let o = pod_object(prefix, key);
    let _ = writeln!(
        s,
        "delete element inet {t} {map} {{ \"{}\" . {} }}",
        key.0, key.1
    );
    let _ = writeln!(s, "flush chain inet {t} {o}");
    let _ = writeln!(s, "delete chain inet {t} {o}");
    let _ = writeln!(s, "delete set inet {t} {o}_any");
    let _ = writeln!(s, "delete set inet {t} {o}_ports");
}

impl PolicyRules {
    /// Adds another Network's rules (bridges differ, so nothing collides).
    pub fn extend(&mut self, other: PolicyRules) {
        self.zones.extend(other.zones);
        self.ingress_isolated.extend(other.ingress_isolated);
        self.egress_isolated.extend(other.egress_isolated);
        self.ingress_any.extend(other.ingress_any);
        self.ingress_ports.extend(other.ingress_ports);
        self.egress_any.extend(other.egress_any);
        self.egress_ports.extend(other.egress_ports);
    }

    /// Number of set elements (the size of the rule set).
    pub fn len(&self) -> usize {
        self.zones.len()
            + self.ingress_isolated.len()
            + self.egress_isolated.len()
            + self.ingress_any.len()
            + self.ingress_ports.len()
            + self.egress_any.len()
            + self.egress_ports.len()
    }

    /// No Network, nothing to enforce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole table, replacing any previous one in one transaction.
    ///
    /// `forward` (after the node's own `inet h8s` chain) accepts replies, then looks the
    /// packet's (bridge, source) up in the verdict map `eg_iso` and its (bridge, destination)
    /// in `in_iso`: an isolated pod's entry jumps to that pod's own chain (`e_…`/`i_…`), which
    /// returns for a peer in the pod's `…_any` set or a (peer, protocol, port) in its
    /// `…_ports` set and drops the rest. `zone` (raw priority, before connection tracking)
    /// puts each bridge's traffic in its own zone.
    ///
    /// One small set per pod, not one big set keyed by pod: the kernel's concatenated
    /// interval sets (pipapo) cost in proportion to their size on every change, so an update
    /// now costs what the changed pods' sets hold, not what the node holds.
    pub fn script(&self) -> String {
        let t = POLICY_TABLE;
        let zones = zone_elements(self);
        let zones = if zones.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", list(&zones))
        };
        let mut s = format!(
            r#"table inet {t}
delete table inet {t}
table inet {t} {{
  map zones {{ typeof iifname : ct zone;{zones} }}
  map in_iso {{ type ifname . ipv4_addr : verdict; }}
  map eg_iso {{ type ifname . ipv4_addr : verdict; }}
  chain zone {{
    type filter hook prerouting priority -300; policy accept;
    ct zone set iifname map @zones
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    iifname . ip saddr vmap @eg_iso
    iifname . ip daddr vmap @in_iso
  }}
}}
"#
        );
        for (d, pods) in pod_sets(self).iter().enumerate() {
            for (key, sets) in pods {
                add_pod(&mut s, d, key, sets);
            }
        }
        s
    }

    /// Only what changed since `old` (which must be what the table holds), one transaction:
    /// pods no longer isolated lose their map entry, chain and sets; newly isolated pods get
    /// them; the others get their sets' element deletions first (interval sets refuse
    /// overlapping elements), then additions. `None` when nothing changed.
    pub fn diff_script(&self, old: &PolicyRules) -> Option<String> {
        let t = POLICY_TABLE;
        let mut del = String::new();
        let mut add = String::new();
        let (zo, zn) = (zone_elements(old), zone_elements(self));
        let gone: BTreeSet<String> = zo.difference(&zn).cloned().collect();
        let new: BTreeSet<String> = zn.difference(&zo).cloned().collect();
        if !gone.is_empty() {
            let _ = writeln!(del, "delete element inet {t} zones {{ {} }}", list(&gone));
        }
        if !new.is_empty() {
            let _ = writeln!(add, "add element inet {t} zones {{ {} }}", list(&new));
        }
        for (d, (o, n)) in pod_sets(old).iter().zip(pod_sets(self).iter()).enumerate() {
            let prefix = DIRS[d].1;
            for (key, os) in o {
                let Some(ns) = n.get(key) else {
                    delete_pod(&mut del, d, key);
                    continue;
                };
                if os == ns {
                    continue;
                }
                let obj = pod_object(prefix, key);
                let changes = [
                    (
                        "any",
                        sorted_minus(&os.any, &ns.any)
                            .into_iter()
                            .map(any_text)
                            .collect::<Vec<_>>(),
                        sorted_minus(&ns.any, &os.any)
                            .into_iter()
                            .map(any_text)
                            .collect::<Vec<_>>(),
                    ),
                    (
                        "ports",
                        sorted_minus(&os.ports, &ns.ports)
                            .into_iter()
                            .map(ports_text)
                            .collect(),
                        sorted_minus(&ns.ports, &os.ports)
                            .into_iter()
                            .map(ports_text)
                            .collect(),
                    ),
                ];
                for (name, gone, new) in changes {
                    if !gone.is_empty() {
                        let _ = writeln!(
                            del,
                            "delete element inet {t} {obj}_{name} {{ {} }}",
                            gone.join(", ")
                        );
                    }
                    if !new.is_empty() {
                        let _ = writeln!(
                            add,
                            "add element inet {t} {obj}_{name} {{ {} }}",
                            new.join(", ")
                        );
                    }
                }
            }
            for (key, ns) in n {
                if !o.contains_key(key) {
                    add_pod(&mut add, d, key, ns);
                }
            }
        }
        if del.is_empty() && add.is_empty() {
            return None;
        }
        Some(del + &add)
    }
}

/// The bridge of the Network with segment id `vni` (what [`compile`] keys pods by).
pub fn bridge_of(vni: u32) -> String {
    crate::model::SegmentNames::new(vni).bridge
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BR: &str = "h8b4096";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn u(s: &str) -> u32 {
        ip(s).into()
    }

    fn pod(ns: &str, name: &str, addr: &str, labels: &[(&str, &str)]) -> PolicyPod {
        PolicyPod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: ip(addr),
            ports: vec![],
        }
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> PolicyNamespace {
        PolicyNamespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn pol(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn key(addr: &str) -> PodKey {
        (BR.to_string(), ip(addr))
    }

    /// Whether the compiled rules let a packet through (the chain's logic, evaluated in Rust;
    /// `None` for port/proto = ICMP).
    fn allows(r: &PolicyRules, src: &str, dst: &str, l4: Option<(Proto, u16)>) -> bool {
        let check = |iso: &BTreeSet<PodKey>,
                     any: &BTreeSet<(PodKey, IpRange)>,
                     ports: &BTreeSet<(PodKey, IpRange, Proto, PortRange)>,
                     me: &str,
                     peer: &str| {
            let k = key(me);
            if !iso.contains(&k) {
                return true;
            }
            let p = u(peer);
            if any.iter().any(|(kk, r)| *kk == k && r.0 <= p && p <= r.1) {
                return true;
            }
            let Some((proto, port)) = l4 else {
                return false;
            };
            ports.iter().any(|(kk, r, pr, pp)| {
                *kk == k && r.0 <= p && p <= r.1 && *pr == proto && pp.0 <= port && port <= pp.1
            })
        };
        check(&r.egress_isolated, &r.egress_any, &r.egress_ports, src, dst)
            && check(
                &r.ingress_isolated,
                &r.ingress_any,
                &r.ingress_ports,
                dst,
                src,
            )
    }

    fn world() -> (Vec<PolicyPod>, Vec<PolicyNamespace>) {
        let mut web = pod("a", "web", "192.168.0.2", &[("app", "web")]);
        web.ports.push(NamedPort {
            name: "http".into(),
            proto: Proto::Tcp,
            port: 8080,
        });
        let mut db = pod("a", "db", "192.168.0.3", &[("app", "db")]);
        db.ports.push(NamedPort {
            name: "sql".into(),
            proto: Proto::Tcp,
            port: 5432,
        });
        let client = pod("b", "client", "192.168.0.4", &[("app", "client")]);
        let other = pod("a", "other", "192.168.0.5", &[("app", "other")]);
        (
            vec![web, db, client, other],
            vec![ns("a", &[("team", "a")]), ns("b", &[("team", "b")])],
        )
    }

    const ALL: [&str; 4] = ["192.168.0.2", "192.168.0.3", "192.168.0.4", "192.168.0.5"];
    const TCP80: Option<(Proto, u16)> = Some((Proto::Tcp, 80));

    #[test]
    fn no_policy_isolates_nothing() {
        let (pods, nss) = world();
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[]);
        assert!(r.ingress_isolated.is_empty() && r.egress_isolated.is_empty());
        assert!(allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
    }

    #[test]
    fn default_deny_ingress_selects_every_pod_of_the_namespace_only() {
        let (pods, nss) = world();
        let p = pol("a", json!({"podSelector": {}}));
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert_eq!(
            r.ingress_isolated,
            [key("192.168.0.2"), key("192.168.0.3"), key("192.168.0.5")].into()
        );
        assert!(r.egress_isolated.is_empty(), "policyTypes default: Ingress");
        assert!(r.ingress_any.is_empty() && r.ingress_ports.is_empty());
        assert!(!allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
        assert!(!allows(&r, "192.168.0.3", "192.168.0.2", None));
        // Egress is free, and b's pod is not isolated.
        assert!(allows(&r, "192.168.0.2", "192.168.0.4", TCP80));
        assert!(allows(&r, "192.168.0.2", "8.8.8.8", TCP80));
    }

    #[test]
    fn default_deny_egress_and_all() {
        let (pods, nss) = world();
        let p = pol("a", json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert!(r.ingress_isolated.is_empty());
        assert_eq!(r.egress_isolated.len(), 3);
        assert!(!allows(&r, "192.168.0.2", "8.8.8.8", TCP80));
        assert!(allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
        // An allow-all ingress rule ({}) next to a default deny.
        let p2 = pol(
            "a",
            json!({"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress", "Egress"]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p2]);
        assert!(allows(&r, "192.168.0.4", "192.168.0.2", None));
        assert!(!allows(&r, "192.168.0.2", "192.168.0.4", None));
        assert!(r.ingress_any.contains(&(key("192.168.0.2"), IpRange::ALL)));
    }

    #[test]
    fn pod_selector_in_own_namespace_only() {
        let (mut pods, nss) = world();
        // A pod labelled like the allowed one, in another namespace.
        pods.push(pod("b", "fake-db", "192.168.0.9", &[("app", "db")]));
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}),
        );
        let mut local = ALL.map(ip).to_vec();
        local.push(ip("192.168.0.9"));
        let r = compile(BR, &local, &pods, &nss, &[p]);
        assert_eq!(r.ingress_isolated, [key("192.168.0.2")].into());
        assert!(allows(&r, "192.168.0.3", "192.168.0.2", TCP80));
        assert!(
            allows(&r, "192.168.0.3", "192.168.0.2", None),
            "all ports and ICMP"
        );
        assert!(!allows(&r, "192.168.0.9", "192.168.0.2", TCP80));
        assert!(!allows(&r, "192.168.0.5", "192.168.0.2", TCP80));
        // Not selected pods stay open.
        assert!(allows(&r, "192.168.0.9", "192.168.0.3", TCP80));
    }

    #[test]
    fn namespace_selector_and_combined_selectors() {
        let (pods, nss) = world();
        let only_ns = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[only_ns]);
        assert!(allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
        assert!(!allows(&r, "192.168.0.3", "192.168.0.2", TCP80));
        // Both in one peer: pods matching in namespaces matching (AND).
        let and = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {},
                                          "podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[and]);
        assert!(allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
        assert!(!allows(&r, "192.168.0.3", "192.168.0.2", TCP80));
        // An empty namespaceSelector is every namespace of the tenant — and nothing else: a
        // namespace not given (another tenant's) is never selected even if its pod were here.
        let mut pods2 = pods.clone();
        pods2.push(pod("evil", "x", "192.168.0.7", &[("app", "client")]));
        let and = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods2, &nss, &[and]);
        assert!(!allows(&r, "192.168.0.7", "192.168.0.2", TCP80));
        // matchExpressions.
        let expr = pol(
            "a",
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]},
                   "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["other"]}]}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[expr]);
        assert_eq!(
            r.ingress_isolated,
            [key("192.168.0.2"), key("192.168.0.3")].into()
        );
        assert!(allows(&r, "192.168.0.3", "192.168.0.2", TCP80));
        assert!(!allows(&r, "192.168.0.5", "192.168.0.2", TCP80));
    }

    #[test]
    fn ports_named_ports_end_port_and_protocols() {
        let (pods, nss) = world();
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"ports": [{"port": "http"}, {"port": 9000, "endPort": 9010, "protocol": "UDP"},
                                          {"port": 53}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        let c = "192.168.0.4";
        let w = "192.168.0.2";
        assert!(allows(&r, c, w, Some((Proto::Tcp, 8080))), "named port");
        assert!(
            !allows(&r, c, w, Some((Proto::Udp, 8080))),
            "named port is TCP"
        );
        assert!(!allows(&r, c, w, TCP80));
        assert!(allows(&r, c, w, Some((Proto::Udp, 9000))));
        assert!(allows(&r, c, w, Some((Proto::Udp, 9010))));
        assert!(!allows(&r, c, w, Some((Proto::Udp, 9011))));
        assert!(!allows(&r, c, w, Some((Proto::Tcp, 9005))));
        assert!(allows(&r, c, w, Some((Proto::Tcp, 53))));
        assert!(!allows(&r, c, w, None), "no ICMP when ports are named");
        // A named port the pod does not have allows nothing.
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                   "ingress": [{"ports": [{"port": "http"}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert!(r.ingress_isolated.contains(&key("192.168.0.3")));
        assert!(r.ingress_ports.is_empty());
        // Protocol only: every port of it.
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                   "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert!(allows(&r, c, "192.168.0.3", Some((Proto::Udp, 1))));
        assert!(!allows(&r, c, "192.168.0.3", Some((Proto::Tcp, 1))));
    }

    #[test]
    fn egress_named_ports_resolve_per_destination_pod() {
        let (pods, nss) = world();
        let p = pol(
            "b",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                               "ports": [{"port": "sql"}, {"port": 443}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        let c = "192.168.0.4";
        assert!(allows(&r, c, "192.168.0.3", Some((Proto::Tcp, 5432))));
        assert!(
            !allows(&r, c, "192.168.0.2", Some((Proto::Tcp, 5432))),
            "web has no sql port"
        );
        assert!(allows(&r, c, "192.168.0.2", Some((Proto::Tcp, 443))));
        assert!(!allows(&r, c, "8.8.8.8", Some((Proto::Tcp, 443))));
        // Any destination with a named port: only pods that have it.
        let p = pol(
            "b",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"ports": [{"port": "http"}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert!(allows(&r, c, "192.168.0.2", Some((Proto::Tcp, 8080))));
        assert!(!allows(&r, c, "192.168.0.3", Some((Proto::Tcp, 8080))));
        assert!(!allows(&r, c, "1.1.1.1", Some((Proto::Tcp, 8080))));
    }

    #[test]
    fn ip_block_with_except() {
        let (pods, nss) = world();
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/24", "except": ["192.168.0.4/32"]}}]}],
                   "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}}],
                               "ports": [{"port": 443}]},
                              {"to": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        let w = "192.168.0.2";
        assert!(allows(&r, "192.168.0.3", w, TCP80));
        assert!(!allows(&r, "192.168.0.4", w, TCP80), "excepted");
        assert!(allows(&r, "192.168.0.5", w, TCP80));
        assert!(!allows(&r, "10.0.0.1", w, TCP80));
        assert!(allows(&r, w, "8.8.8.8", Some((Proto::Tcp, 443))));
        assert!(!allows(&r, w, "8.8.8.8", TCP80));
        assert!(!allows(&r, w, "10.1.2.3", Some((Proto::Tcp, 443))));
        assert!(!allows(&r, w, "192.168.0.3", Some((Proto::Tcp, 443))));
        assert!(allows(&r, w, "11.0.0.0", Some((Proto::Tcp, 443))));
        assert!(allows(&r, w, "9.255.255.255", Some((Proto::Tcp, 443))));
        // A host-bits-set CIDR is taken as its network.
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.3/30"}}]}]}),
        );
        let r = compile(BR, &ALL.map(ip), &pods, &nss, &[p]);
        assert!(allows(&r, "192.168.0.1", w, TCP80));
        assert!(!allows(&r, "192.168.0.4", w, TCP80));
    }

    #[test]
    fn union_of_policies_and_rules_and_remote_or_unknown_pods() {
        let (pods, nss) = world();
        let p1 = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 80}]}]}),
        );
        let mut p2 = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 81}]}]}),
        );
        p2.metadata.name = Some("p2".into());
        // Only web is local here: the others are on other nodes (their rules live there).
        let r = compile(
            BR,
            &[ip("192.168.0.2"), ip("192.168.0.99")],
            &pods,
            &nss,
            &[p1, p2],
        );
        assert_eq!(r.ingress_isolated, [key("192.168.0.2")].into());
        assert!(allows(&r, "192.168.0.3", "192.168.0.2", TCP80));
        assert!(!allows(
            &r,
            "192.168.0.3",
            "192.168.0.2",
            Some((Proto::Tcp, 81))
        ));
        assert!(allows(
            &r,
            "192.168.0.4",
            "192.168.0.2",
            Some((Proto::Tcp, 81))
        ));
        assert!(!allows(&r, "192.168.0.4", "192.168.0.2", TCP80));
    }

    #[test]
    fn normalize_makes_disjoint_boxes_covering_the_same_points() {
        let b = |a: u32, z: u32, p: u16, q: u16| (IpRange(a, z), PortRange(p, q));
        let input = vec![
            b(0, 100, 80, 90),
            b(50, 150, 85, 95),
            b(10, 20, 80, 80),
            b(151, 200, 85, 95),
            b(300, 300, 1, 65535),
        ];
        let out = normalize(&input);
        // Disjoint.
        for (i, x) in out.iter().enumerate() {
            for y in &out[i + 1..] {
                let ip = x.0 .0 <= y.0 .1 && y.0 .0 <= x.0 .1;
                let port = x.1 .0 <= y.1 .1 && y.1 .0 <= x.1 .1;
                assert!(!(ip && port), "{x:?} overlaps {y:?} in {out:?}");
            }
        }
        // Same points (sampled on every boundary and its neighbours).
        let inside = |v: &[(IpRange, PortRange)], a: u32, p: u16| {
            v.iter()
                .any(|(r, q)| r.0 <= a && a <= r.1 && q.0 <= p && p <= q.1)
        };
        for a in [
            0, 9, 10, 20, 21, 49, 50, 100, 101, 150, 151, 200, 201, 299, 300, 301,
        ] {
            for p in [1, 79, 80, 84, 85, 90, 91, 95, 96, 65535] {
                assert_eq!(inside(&input, a, p), inside(&out, a, p), "{a} {p}");
            }
        }
        // 151..200 merged with 101..150 (same ports).
        assert!(out.contains(&b(101, 200, 85, 95)), "{out:?}");
    }

    #[test]
    fn subtract_holes() {
        assert_eq!(
            subtract(IpRange(0, 100), &[IpRange(10, 20), IpRange(50, 200)]),
            [IpRange(0, 9), IpRange(21, 49)]
        );
        assert_eq!(subtract(IpRange(0, 10), &[IpRange(0, 10)]), []);
        assert_eq!(
            subtract(IpRange::ALL, &[IpRange(0, 0), IpRange(u32::MAX, u32::MAX)]),
            [IpRange(1, u32::MAX - 1)]
        );
    }

    #[test]
    fn script_and_incremental_diff() {
        let (pods, nss) = world();
        let p = pol(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 80, "endPort": 82}]}]}),
        );
        let mut r = compile(BR, &ALL.map(ip), &pods, &nss, std::slice::from_ref(&p));
        r.zones.insert(BR.into(), zone_for_vni(4096));
        let s = r.script();
        assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
        // web (192.168.0.2) is isolated for ingress: its own chain and sets.
        assert!(
            s.contains("add set inet h8s_policy i_h8b4096_c0a80002_ports { type ipv4_addr . inet_proto . inet_service; flags interval; elements = { 192.168.0.3 . tcp . 80-82 }; }"),
            "{s}"
        );
        assert!(
            s.contains(r#"add element inet h8s_policy in_iso { "h8b4096" . 192.168.0.2 : jump i_h8b4096_c0a80002 }"#),
            "{s}"
        );
        assert!(s.contains(r#"elements = { "h8b4096" : 4097 }"#), "{s}");
        assert!(!s.contains("eg_iso { \""), "no pod is egress-isolated: {s}");
        assert_eq!(r.diff_script(&r.clone()), None);
        // The db pod's label changes: one element goes, nothing else.
        let mut pods2 = pods.clone();
        pods2[1].labels.insert("app".into(), "dbx".into());
        let mut r2 = compile(BR, &ALL.map(ip), &pods2, &nss, std::slice::from_ref(&p));
        r2.zones = r.zones.clone();
        let d = r2.diff_script(&r).unwrap();
        assert_eq!(
            d,
            "delete element inet h8s_policy i_h8b4096_c0a80002_ports { 192.168.0.3 . tcp . 80-82 }\n"
        );
        let back = r.diff_script(&r2).unwrap();
        assert_eq!(
            back,
            "add element inet h8s_policy i_h8b4096_c0a80002_ports { 192.168.0.3 . tcp . 80-82 }\n"
        );
        // The policy goes: web's chain and sets go with its map entry.
        let none = PolicyRules {
            zones: r.zones.clone(),
            ..Default::default()
        };
        let gone = none.diff_script(&r).unwrap();
        assert!(
            gone.starts_with(
                "delete element inet h8s_policy in_iso { \"h8b4096\" . 192.168.0.2 }\n"
            ),
            "{gone}"
        );
        assert!(
            gone.contains("delete chain inet h8s_policy i_h8b4096_c0a80002\n"),
            "{gone}"
        );
        assert!(
            gone.contains("delete set inet h8s_policy i_h8b4096_c0a80002_any\n"),
            "{gone}"
        );
        // And back: created whole.
        assert!(r
            .diff_script(&none)
            .unwrap()
            .contains("add chain inet h8s_policy i_h8b4096_c0a80002\n"));
        assert_eq!(zone_for_vni(65535), 1);
        assert_eq!(zone_for_vni(4096), 4097);
    }
}
