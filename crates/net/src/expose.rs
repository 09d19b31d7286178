//! NodePort and LoadBalancer forwarding: a Service port exposed on the node's addresses
//! (node port) and on pool addresses this node announces (LoadBalancer) is DNATed into the
//! Service's tenant Network, to that Network's endpoints only.
//!
//! Two stages, both nftables NAT (pure rendering here, programmed by
//! [`crate::Fabric::program_services`]):
//!
//! * the node (`table ip h8s_svc`): traffic to `node address:nodePort` or `pool address:port`
//!   picks one ready endpoint slot at random; a slot of a local endpoint is DNATed to the
//!   Network's gateway uplink (`up0`'s address, the node port kept as the key), a slot of an
//!   endpoint on another node is DNATed to that node's address and node port and SNATed to
//!   this node's underlay address (one hop over the underlay). Traffic that comes from another node (a hop) only ever goes
//!   to local endpoints, so it never bounces. `externalTrafficPolicy: Local`: local endpoints
//!   only, no masquerade anywhere (the client's address reaches the pod).
//! * the gateway of the endpoint's node (`table ip h8s_svc` in its namespace): `up0`'s node
//!   port is DNATed to one of the Network's local ready endpoints. The endpoint answers
//!   through its default route, which is this same gateway, so no SNAT is needed inside the
//!   Network: the connection's conntrack entries undo both DNATs on the way back.
//!
//! Nothing else of the Network, or of any other Network, is a DNAT target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The address-range type of [`ExposedPort::source_ranges`].
pub use ipnet::Ipv4Net;

/// Name of the node's and the gateways' Service forwarding tables (ip family).
pub const SVC_TABLE: &str = "h8s_svc";

/// The packet mark of hops to another node (SNATed in postrouting).
const HOP_MARK: u32 = 0x4838;

/// Transport protocol of an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// One Service port as this node exposes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExposedPort {
    /// `namespace/name:port`, for logs.
    pub service: String,
    /// The fabric Network of the Service's namespace.
    pub network: String,
    pub protocol: L4,
    /// The key the gateway (and, for an open node port, the other nodes) know the port by:
    /// the Service port's node port, or for a port without one (`allocateLoadBalancerNodePorts:
    /// false`, `type: NetworkProvider`, `externalIPs` of a ClusterIP Service) a key this node
    /// picked for its own gateway ([`internal_keys`]).
    pub node_port: u16,
    /// Whether `node_port` is a real node port: answered on every node address and the target
    /// of other nodes' hops. Without one, only this node's endpoints serve the port's
    /// addresses (no hop: the other nodes would not know the key).
    pub open: bool,
    /// `loadBalancerSourceRanges`: when not empty, only these clients reach the pool and
    /// external addresses (node ports are not restricted, as with kube-proxy).
    pub source_ranges: Vec<ipnet::Ipv4Net>,
    /// `(pool address, Service port)` this node announces for the Service.
    pub lb: Vec<(Ipv4Addr, u16)>,
    /// Ready endpoints on this node (address, target port).
    pub local: Vec<SocketAddrV4>,
    /// One entry per ready endpoint on another node: that node's address (Cluster policy).
    pub remote: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`: this node's endpoints only, client address kept.
    pub local_only: bool,
}

/// Everything the node forwards for Services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Every node's address: traffic from these is a hop and stays on local endpoints.
    pub nodes: Vec<Ipv4Addr>,
    /// Pool addresses this node announces (held on its `h8lb0` device, answered by ARP).
    pub lb_addrs: Vec<Ipv4Addr>,
    pub ports: Vec<ExposedPort>,
}

impl ServiceRules {
    /// Nothing to forward or announce.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.lb_addrs.is_empty()
    }
}

fn elements(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", v.join(", "))
    }
}

/// `numgen random mod n vmap { 0 : goto a, … }` over `targets` (chain names), or a plain
/// `goto` for one.
fn spread(targets: &[String]) -> String {
    match targets {
        [] => String::new(),
        [one] => format!("goto {one}"),
        many => format!(
            "numgen random mod {} vmap {{ {} }}",
            many.len(),
            many.iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : goto {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The node's table. `me`: the node's underlay address, the source of its hops (the other
/// nodes know it as a node's, so they never hop back). `uplinks`: each local Network's
/// gateway `up0` address; a port whose Network has none here has no local endpoints as far
/// as this node can forward.
pub(crate) fn node_script(
    rules: &ServiceRules,
    me: Ipv4Addr,
    uplinks: &BTreeMap<String, Ipv4Addr>,
) -> String {
    let mut s = String::new();
    let nodes = elements(rules.nodes.iter().map(|n| n.to_string()));
    let lb = elements(rules.lb_addrs.iter().map(|n| n.to_string()));
    let node_ports = elements(
        rules
            .ports
            .iter()
            .filter(|p| p.open)
            .map(|p| format!("{} . {}", p.protocol.as_str(), p.node_port)),
    );
    let mut pre = String::new();
    let mut chains = String::new();
    for (i, p) in rules.ports.iter().enumerate() {
        let proto = p.protocol.as_str();
        let np = p.node_port;
        if p.open {
            let _ = writeln!(
                pre,
                "    {proto} dport {np} fib daddr type local jump svc{i} comment \"{}\"",
                p.service
            );
        }
        let from = if p.source_ranges.is_empty() {
            String::new()
        } else {
            let r: Vec<String> = ipnet::Ipv4Net::aggregate(&p.source_ranges)
                .iter()
                .map(|n| n.to_string())
                .collect();
            format!("ip saddr {{ {} }} ", r.join(", "))
        };
        for (ip, port) in &p.lb {
            let _ = writeln!(
                pre,
                "    ip daddr {ip} {from}{proto} dport {port} jump svc{i} comment \"{}\"",
                p.service
            );
        }
        let local = uplinks
            .get(&p.network)
            .filter(|_| !p.local.is_empty())
            .copied();
        // The port's chain: hops from another node go to local endpoints or nowhere; then
        // one slot per endpoint, local ones through the gateway, remote ones a hop.
        let mut body = vec![];
        let mut extra = String::new();
        let mut slots: Vec<String> = vec![];
        match local {
            Some(up) => {
                body.push(format!("ip saddr @nodes goto svc{i}_local"));
                let _ = writeln!(
                    extra,
                    "  chain svc{i}_local {{\n    meta l4proto {proto} dnat to {up}:{np}\n  }}"
                );
                slots.extend(p.local.iter().map(|_| format!("svc{i}_local")));
            }
            None => body.push("ip saddr @nodes return".to_string()),
        }
        if !p.local_only && p.open {
            for (h, node) in p.remote.iter().enumerate() {
                slots.push(format!("svc{i}_hop{h}"));
                let _ = writeln!(
                    extra,
                    "  chain svc{i}_hop{h} {{\n    meta mark set {HOP_MARK:#x} meta l4proto {proto} dnat to {node}:{np}\n  }}"
                );
            }
        }
        if !slots.is_empty() {
            body.push(spread(&slots));
        }
        let _ = writeln!(chains, "  chain svc{i} {{");
        for r in body {
            let _ = writeln!(chains, "    {r}");
        }
        let _ = writeln!(chains, "  }}");
        chains.push_str(&extra);
    }
    let _ = write!(
        s,
        r#"table ip {SVC_TABLE}
delete table ip {SVC_TABLE}
table ip {SVC_TABLE} {{
  set nodes {{ type ipv4_addr;{nodes} }}
  set lb_addrs {{ type ipv4_addr;{lb} }}
  set node_ports {{ type inet_proto . inet_service;{node_ports} }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    iifname "h8*" return
{pre}  }}
{chains}  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    meta mark {HOP_MARK:#x} snat to {me}
  }}
  chain input {{
    type filter hook input priority -5; policy accept;
    ip daddr @lb_addrs drop
    fib daddr type local meta l4proto . th dport @node_ports drop
  }}
}}
"#
    );
    s
}

/// The gateway's table for Network `network`: `up0`'s node ports to the local endpoints.
pub(crate) fn gateway_script(rules: &ServiceRules, network: &str) -> String {
    let mut pre = String::new();
    let mut chains = String::new();
    for (i, p) in rules
        .ports
        .iter()
        .filter(|p| p.network == network && !p.local.is_empty())
        .enumerate()
    {
        let mut targets = vec![];
        for (e, ep) in p.local.iter().enumerate() {
            targets.push(format!("ep{i}_{e}"));
            let _ = writeln!(
                chains,
                "  chain ep{i}_{e} {{\n    meta l4proto {} dnat to {ep}\n  }}",
                p.protocol.as_str()
            );
        }
        let _ = writeln!(
            pre,
            "    iifname \"up0\" {} dport {} {}",
            p.protocol.as_str(),
            p.node_port,
            spread(&targets)
        );
    }
    format!(
        r#"table ip {SVC_TABLE}
delete table ip {SVC_TABLE}
table ip {SVC_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority -90; policy accept;
{pre}  }}
{chains}}}
"#
    )
}

/// Rendezvous hashing: of `candidates`, the one that announces `key` (FNV-1a of key and
/// name, highest wins). Every node computes the same answer from the same view.
pub fn elect<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().max_by_key(|c| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain([0]).chain(c.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h, *c)
    })
}

/// Keys for the ports of `ports` without a node port (`open == false`), set in place: per
/// Network (each has its own gateway), the lowest numbers from `first` up that no other port
/// of that Network uses as its key, in the order of `ports` (sorted, so every pass gives the
/// same keys for the same Services). The node's and the gateway's tables are written from the
/// same rules in one pass, so a key never has to mean the same thing on another node.
pub fn internal_keys(ports: &mut [ExposedPort], first: u16) {
    let mut used: BTreeMap<(String, L4), std::collections::BTreeSet<u16>> = BTreeMap::new();
    for p in ports.iter().filter(|p| p.open) {
        used.entry((p.network.clone(), p.protocol))
            .or_default()
            .insert(p.node_port);
    }
    for p in ports.iter_mut().filter(|p| !p.open) {
        let taken = used.entry((p.network.clone(), p.protocol)).or_default();
        let mut k = first;
        while taken.contains(&k) && k < u16::MAX {
            k += 1;
        }
        taken.insert(k);
        p.node_port = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(local: &[&str], remote: &[&str], local_only: bool) -> ExposedPort {
        ExposedPort {
            service: "a/web:80".into(),
            network: "tenant-a".into(),
            protocol: L4::Tcp,
            node_port: 30080,
            lb: vec![(Ipv4Addr::new(10, 9, 0, 241), 80)],
            local: local.iter().map(|s| s.parse().unwrap()).collect(),
            remote: remote.iter().map(|s| s.parse().unwrap()).collect(),
            local_only,
            open: true,
            source_ranges: vec![],
        }
    }

    fn rules(p: Vec<ExposedPort>) -> ServiceRules {
        ServiceRules {
            nodes: vec![Ipv4Addr::new(10, 9, 0, 10), Ipv4Addr::new(10, 9, 0, 11)],
            lb_addrs: vec![Ipv4Addr::new(10, 9, 0, 241)],
            ports: p,
        }
    }

    fn uplinks() -> BTreeMap<String, Ipv4Addr> {
        [("tenant-a".to_string(), Ipv4Addr::new(100, 64, 0, 1))].into()
    }

    fn balanced(s: &str) {
        assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
        assert!(!s.contains("elements = {  }"), "{s}");
    }

    #[test]
    fn cluster_policy_spreads_over_local_and_remote_endpoints_hops_stay_local() {
        let r = rules(vec![port(&["192.168.0.5:8080"], &["10.9.0.11"], false)]);
        let s = node_script(&r, Ipv4Addr::new(10, 9, 0, 10), &uplinks());
        balanced(&s);
        assert!(
            s.contains("tcp dport 30080 fib daddr type local jump svc0"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr 10.9.0.241 tcp dport 80 jump svc0"),
            "{s}"
        );
        let chain = &s[s.find("chain svc0 {").unwrap()..];
        let hop = chain.find("ip saddr @nodes goto svc0_local").unwrap();
        let spread = chain
            .find("numgen random mod 2 vmap { 0 : goto svc0_local, 1 : goto svc0_hop0 }")
            .unwrap();
        assert!(hop < spread, "{s}");
        assert!(s.contains("dnat to 100.64.0.1:30080"), "{s}");
        assert!(
            s.contains("meta mark set 0x4838 meta l4proto tcp dnat to 10.9.0.11:30080"),
            "{s}"
        );
        assert!(s.contains("meta mark 0x4838 snat to 10.9.0.10"), "{s}");
        assert!(s.contains("elements = { tcp . 30080 }"), "{s}");
        let g = gateway_script(&r, "tenant-a");
        balanced(&g);
        assert!(
            g.contains("iifname \"up0\" tcp dport 30080 goto ep0_0"),
            "{g}"
        );
        assert!(g.contains("dnat to 192.168.0.5:8080"), "{g}");
        // Another Network's gateway gets nothing of it.
        assert!(!gateway_script(&r, "tenant-b").contains("dnat"));
    }

    #[test]
    fn local_policy_never_hops_and_no_local_endpoint_means_no_target() {
        let r = rules(vec![port(
            &["192.168.0.5:8080", "192.168.0.6:8080"],
            &["10.9.0.11"],
            true,
        )]);
        let s = node_script(&r, Ipv4Addr::new(10, 9, 0, 10), &uplinks());
        balanced(&s);
        assert!(!s.contains("hop0"), "{s}");
        assert!(
            s.contains("numgen random mod 2 vmap { 0 : goto svc0_local, 1 : goto svc0_local }"),
            "{s}"
        );
        let g = gateway_script(&r, "tenant-a");
        assert!(
            g.contains("numgen random mod 2 vmap { 0 : goto ep0_0, 1 : goto ep0_1 }"),
            "{g}"
        );
        // Only remote endpoints, Local policy: nothing answers (the input chain drops it).
        let r = rules(vec![port(&[], &["10.9.0.11"], true)]);
        let s = node_script(&r, Ipv4Addr::new(10, 9, 0, 10), &uplinks());
        balanced(&s);
        assert!(!s.contains("dnat"), "{s}");
        assert!(s.contains("ip saddr @nodes return"), "{s}");
        // Cluster policy, only remote endpoints: a hop, but never for traffic from a node.
        let r = rules(vec![port(&[], &["10.9.0.11", "10.9.0.11"], false)]);
        let s = node_script(&r, Ipv4Addr::new(10, 9, 0, 10), &uplinks());
        let ret = s.find("ip saddr @nodes return").unwrap();
        let spread = s.find("numgen random mod 2").unwrap();
        assert!(ret < spread, "{s}");
    }

    #[test]
    fn source_ranges_restrict_pool_addresses_and_ports_without_node_port_never_hop() {
        let mut p = port(&["192.168.0.5:8080"], &["10.9.0.11"], false);
        p.source_ranges = vec![
            "203.0.113.0/25".parse().unwrap(),
            "203.0.113.128/25".parse().unwrap(),
        ];
        let s = node_script(
            &rules(vec![p.clone()]),
            Ipv4Addr::new(10, 9, 0, 10),
            &uplinks(),
        );
        balanced(&s);
        // Aggregated, on the pool address only; the node port stays open to all.
        assert!(
            s.contains("ip daddr 10.9.0.241 ip saddr { 203.0.113.0/24 } tcp dport 80 jump svc0"),
            "{s}"
        );
        assert!(
            s.contains("tcp dport 30080 fib daddr type local jump svc0"),
            "{s}"
        );
        // Without a node port: no node port rule, no hop, the key only towards the gateway.
        p.open = false;
        p.source_ranges.clear();
        let mut ports = vec![p, port(&["192.168.0.6:80"], &[], false)];
        ports[1].node_port = 20000;
        internal_keys(&mut ports, 20000);
        assert_eq!(
            ports[0].node_port, 20001,
            "20000 is the other port's node port"
        );
        let s = node_script(
            &rules(ports.clone()),
            Ipv4Addr::new(10, 9, 0, 10),
            &uplinks(),
        );
        balanced(&s);
        assert!(!s.contains("dport 20001 fib"), "{s}");
        assert!(!s.contains("hop"), "{s}");
        assert!(!s.contains("tcp . 20001"), "{s}");
        assert!(
            s.contains("ip daddr 10.9.0.241 tcp dport 80 jump svc0"),
            "{s}"
        );
        assert!(s.contains("dnat to 100.64.0.1:20001"), "{s}");
        let g = gateway_script(&rules(ports), "tenant-a");
        assert!(
            g.contains("iifname \"up0\" tcp dport 20001 goto ep0_0"),
            "{g}"
        );
    }

    #[test]
    fn empty_rules_render() {
        let r = ServiceRules::default();
        let s = node_script(&r, Ipv4Addr::new(10, 9, 0, 10), &BTreeMap::new());
        balanced(&s);
        assert!(!s.contains("jump"), "{s}");
        balanced(&gateway_script(&r, "x"));
    }

    #[test]
    fn election_is_stable_and_over_the_candidates() {
        let nodes = ["node0", "node1", "node2"];
        let a = elect("ns/web", nodes).unwrap();
        assert_eq!(elect("ns/web", nodes.iter().rev().copied()), Some(a));
        assert!(nodes.contains(&a));
        assert_eq!(elect("ns/web", []), None);
        // Spread over nodes: not every Service on one node.
        let picked: std::collections::BTreeSet<&str> = (0..50)
            .filter_map(|i| elect(&format!("ns/svc{i}"), nodes))
            .collect();
        assert_eq!(picked.len(), 3);
    }
}
