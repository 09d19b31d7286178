//! NetworkPolicy on the node: compiled rules programmed into `inet h8s_policy` on two "nodes"
//! (namespaces), pods as namespaces; two tenants on the same subnet on the same node.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use h8s_net::policy::{bridge_of, compile, zone_for_vni, PolicyNamespace, PolicyPod};
use h8s_net::{Network, PolicyRules, Subnet};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

const T: Duration = Duration::from_millis(800);

fn network(name: &str, tenant: &str, vni: u32) -> Network {
    Network {
        name: name.into(),
        tenant: tenant.into(),
        vni,
        subnets: vec![Subnet::new("subnet1", "192.168.0.0/24", None).unwrap()],
        mtu: 1450,
        dns: vec![],
    }
}

fn pod(ns: &str, name: &str, ip: Ipv4Addr, app: &str) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ip,
        ports: vec![],
    }
}

fn pol(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

/// What one node enforces for Network `vni` given these pods and policies.
fn rules(vni: u32, local: &[Ipv4Addr], pods: &[PolicyPod], pols: &[NetworkPolicy]) -> PolicyRules {
    let nss = vec![PolicyNamespace {
        name: "a".into(),
        labels: Default::default(),
    }];
    let mut r = compile(&bridge_of(vni), local, pods, &nss, pols);
    r.zones.insert(bridge_of(vni), zone_for_vni(vni));
    r
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[test]
fn policies_allow_and_deny_both_directions_across_nodes_other_tenant_untouched() {
    let mut lab = Lab::new("np");
    let nodes = lab.nodes(2);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    lab.store.create(&network("neta", "tenant-a", 100)).unwrap();
    lab.store.create(&network("netb", "tenant-b", 101)).unwrap();
    let names = ["a1", "a2", "a3", "b1", "b2"];
    let ns: Vec<_> = names.iter().map(|p| lab.ns(p)).collect();
    let a1 = n1.attach_netns("neta", "a1", &ns[0]).unwrap().ip;
    let a2 = n1.attach_netns("neta", "a2", &ns[1]).unwrap().ip;
    let a3 = n2.attach_netns("neta", "a3", &ns[2]).unwrap().ip;
    let b1 = n1.attach_netns("netb", "b1", &ns[3]).unwrap().ip;
    let b2 = n1.attach_netns("netb", "b2", &ns[4]).unwrap().ip;
    n1.reconcile().unwrap();
    n2.reconcile().unwrap();
    assert_eq!((b1, b2), (a1, a2), "both tenants use the same addresses");
    let (pa1, pa2, pa3, pb1, pb2) = (&ns[0], &ns[1], &ns[2], &ns[3], &ns[4]);
    for (p, ip, tok) in [
        (pa1, a1, "a1"),
        (pa2, a2, "a2"),
        (pa3, a3, "a3"),
        (pb1, b1, "b1"),
    ] {
        tcp_token_server(p, sa(ip, 7000), tok);
        tcp_token_server(p, sa(ip, 7001), tok);
    }
    let pods = vec![
        pod("a", "a1", a1, "web"),
        pod("a", "a2", a2, "other"),
        pod("a", "a3", a3, "client"),
    ];
    // Before any policy everything flows.
    assert_eq!(tcp_read(pa2, sa(a1, 7000)).as_deref(), Some("a1"));

    // web accepts only from client, on 7000; a2 may send only to client (any port).
    let pols = vec![
        pol(
            "a",
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                "ports": [{"port": 7000}]}]}),
        ),
        pol(
            "a",
            "other",
            json!({"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        ),
    ];
    let r1 = rules(100, &[a1, a2], &pods, &pols);
    let r2 = rules(100, &[a3], &pods, &pols);
    let mut node1 = r1.clone();
    // Tenant b on node 1: no policies, but its own zone.
    node1.zones.insert(bridge_of(101), zone_for_vni(101));
    n1.program_policy(None, &node1).unwrap();
    n2.program_policy(None, &r2).unwrap();

    // Ingress: client (other node) → web:7000 yes, :7001 no; a2 (same node) → web no.
    assert_eq!(tcp_read(pa3, sa(a1, 7000)).as_deref(), Some("a1"));
    assert_eq!(tcp_read(pa3, sa(a1, 7001)), None, "port not allowed");
    assert_eq!(tcp_read(pa2, sa(a1, 7000)), None, "a2 is not a client");
    assert!(ping(pa3, a1, T).is_none(), "ICMP is not a listed port");
    // web's own egress is free, and the replies come back though web is ingress-isolated.
    assert_eq!(tcp_read(pa1, sa(a3, 7001)).as_deref(), Some("a3"));
    assert!(ping(pa1, a3, T).is_some());
    // Egress of a2: to client only (across nodes), not to the gateway, not to web.
    assert_eq!(tcp_read(pa2, sa(a3, 7001)).as_deref(), Some("a3"));
    assert!(ping(pa2, a3, T).is_some());
    assert!(ping(pa2, "192.168.0.1".parse().unwrap(), T).is_none());
    // Ingress to a2 is free (replies from client reach it, new connections too).
    assert_eq!(tcp_read(pa3, sa(a2, 7000)).as_deref(), Some("a2"));
    // Tenant b on the same node, same addresses: untouched.
    assert_eq!(tcp_read(pb2, sa(b1, 7001)).as_deref(), Some("b1"));
    assert!(ping(pb2, b1, T).is_some());

    // Incremental update: a2 becomes a client too (label change) — only elements change.
    let mut pods2 = pods.clone();
    pods2[1].labels.insert("app".into(), "client".into());
    let mut node1b = rules(100, &[a1, a2], &pods2, &pols);
    node1b.zones = node1.zones.clone();
    let diff = node1b.diff_script(&node1).unwrap();
    // No table rewrite: element changes, and a2's egress chain and sets going away.
    assert!(!diff.contains(" table "), "{diff}");
    assert!(diff.contains("delete chain inet h8s_policy e_"), "{diff}");
    let t0 = Instant::now();
    n1.program_policy(Some(&node1), &node1b).unwrap();
    eprintln!("incremental update on node 1: {:?}", t0.elapsed());
    assert_eq!(tcp_read(pa2, sa(a1, 7000)).as_deref(), Some("a1"));
    assert_eq!(tcp_read(pa2, sa(a1, 7001)), None);
    assert!(
        ping(pa2, "192.168.0.1".parse().unwrap(), T).is_some(),
        "a2's egress policy no longer selects it"
    );

    // The policy table goes with an empty rule set, and with the node's last Network.
    n2.program_policy(Some(&r2), &PolicyRules::default())
        .unwrap();
    assert!(!sh(&n2.node().netns, "nft list tables").contains("h8s_policy"));
    for (f, net, p) in [
        (n1, "neta", "a1"),
        (n1, "neta", "a2"),
        (n2, "neta", "a3"),
        (n1, "netb", "b1"),
        (n1, "netb", "b2"),
    ] {
        f.detach(net, p).unwrap();
    }
    for f in [n1, n2] {
        f.teardown_network("neta").unwrap();
        f.teardown_network("netb").unwrap();
        let inv = f.inventory().unwrap();
        assert!(inv.is_empty(), "leftovers on {}: {inv:?}", f.node().name);
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (v[0], p(0.5), p(0.99))
}

/// Policy update latency on one node with N policies: compile (pure) and program (one
/// `nft -f` transaction of the changed elements) after one pod's label changes, against a
/// baseline `nft -f` of one element on the same node in the same run. Writes its section
/// of BENCHMARKS.md.
#[test]
#[ignore = "benchmark: cargo test -p h8s-net --test policy -- --ignored bench"]
fn bench_policy_update_latency() {
    let mut lab = Lab::new("npb");
    let node = lab.nodes(1).remove(0);
    let reps = 40;
    let (profile, profile_flag, debug_note) = if cfg!(debug_assertions) {
        (
            "debug",
            "",
            " Debug build: the compile figures are several times what a release build takes.",
        )
    } else {
        ("release", "--release ", "")
    };
    // 400 pods in 20 apps; 100 of them on this node.
    let pods: Vec<PolicyPod> = (0..400u32)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 2)) + i);
            pod("a", &format!("p{i}"), ip, &format!("app{}", i % 20))
        })
        .collect();
    let local: Vec<Ipv4Addr> = pods.iter().take(100).map(|p| p.ip).collect();
    let mut rows = vec![];
    // Baseline: one element in and out of a small set, one `nft -f` each.
    let base_rules = rules(100, &[], &[], &[]);
    node.program_policy(None, &base_rules).unwrap();
    let mut base = vec![];
    for i in 0..reps {
        let mut r = base_rules.clone();
        r.zones.insert(format!("h8bx{i}"), 7);
        let t0 = Instant::now();
        node.program_policy(Some(&base_rules), &r).unwrap();
        base.push(t0.elapsed().as_secs_f64() * 1e3);
        node.program_policy(Some(&r), &base_rules).unwrap();
    }
    let (bmin, bmed, bp99) = stats(base);
    // NETPOL_SIZES=100 runs one row (and does not write BENCHMARKS.md).
    let sizes: Vec<usize> = std::env::var("NETPOL_SIZES")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![10, 100, 1000]);
    let write = std::env::var("NETPOL_SIZES").is_err();
    for n in sizes {
        let pols: Vec<NetworkPolicy> = (0..n)
            .map(|i| {
                pol(
                    "a",
                    &format!("p{i}"),
                    json!({"podSelector": {"matchLabels": {"app": format!("app{}", i % 20)}},
                           "policyTypes": ["Ingress", "Egress"],
                           "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app{}", (i + 1) % 20)}}},
                                                 {"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.{}.0.0/16", i % 250)]}}],
                                        "ports": [{"port": 8000 + (i % 100) as i32, "endPort": 8010 + (i % 100) as i32}]}],
                           "egress": [{"to": [{"podSelector": {"matchLabels": {"app": format!("app{}", (i + 2) % 20)}}}],
                                       "ports": [{"port": 443}]}]}),
                )
            })
            .collect();
        let t0 = Instant::now();
        let full = rules(100, &local, &pods, &pols);
        let compile_full = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        node.program_policy(None, &full).unwrap();
        let program_full = t0.elapsed().as_secs_f64() * 1e3;
        let (mut comp, mut prog, mut total) = (vec![], vec![], vec![]);
        let mut cur = full.clone();
        let mut pods2 = pods.clone();
        for k in 0..reps {
            // One remote pod changes app: its address leaves some allow sets, joins others.
            let victim = 150 + k;
            pods2[victim]
                .labels
                .insert("app".into(), format!("app{}", (victim + 7 + k) % 20));
            let t0 = Instant::now();
            let next = rules(100, &local, &pods2, &pols);
            let c = t0.elapsed().as_secs_f64() * 1e3;
            comp.push(c);
            let t0 = Instant::now();
            node.program_policy(Some(&cur), &next).unwrap();
            let p = t0.elapsed().as_secs_f64() * 1e3;
            prog.push(p);
            total.push(c + p);
            cur = next;
        }
        let (cmin, cmed, cp99) = stats(comp);
        let (pmin, pmed, pp99) = stats(prog);
        let (tmin, tmed, tp99) = stats(total);
        rows.push(format!(
            "| {n} | {} | {compile_full:.1} / {program_full:.1} | {cmin:.2} / {cmed:.2} / {cp99:.2} | {pmin:.1} / {pmed:.1} / {pp99:.1} | {tmin:.1} / {tmed:.1} / {tp99:.1} | {:.2}× |",
            full.len(),
            pmed / bmed
        ));
        node.program_policy(Some(&cur), &PolicyRules::default())
            .unwrap();
    }
    let section = format!(
        "<!-- bench:netpol:begin -->\n`cargo test {profile_flag}-p h8s-net --test policy -- --ignored bench` ({profile} build, {reps} updates per row), on the shared 2-core machine while other helpers' builds and tests ran. One node (a network namespace); 400 pods of one Network in 20 apps, 100 of them on this node; N policies, each isolating one app both ways, allowing ingress from the next app and from `10.0.0.0/8` minus a /16 on a 11-port range, and egress to the app after that on 443. An update: one pod on another node changes its `app` label; *compile* is the pure `compile` of the node's rules (all policies, all pods), *program* the one `nft -f` transaction of what changed (set elements in the touched pods' own sets, chains and sets of pods that become or stop being isolated); *update → enforced* is the two together (the transaction is committed, so the kernel enforces it, when `nft` returns). The table holds one chain and two small interval sets per isolated pod, reached through verdict maps keyed by (bridge, pod address); until session 8 it was one big set per kind keyed by pod, and an update cost what the whole set held (the kernel's concatenated interval sets rebuild in proportion to their size): 1.36 s median program at 100 policies, debug. Baseline: the same node, one `nft -f` adding one element (the cost of running `nft` at all): {bmin:.1} / {bmed:.1} / {bp99:.1} ms (min / median / p99).\n\n| N policies | set elements | first compile / first program, ms | update compile, ms (min / median / p99) | update program, ms (min / median / p99) | update → enforced, ms (min / median / p99) | program ÷ baseline (medians) |\n|---|---|---|---|---|---|---|\n{}\n\nThe agent adds its 50 ms debounce and the watch delivery to these.{debug_note}\n<!-- bench:netpol:end -->",
        rows.join("\n")
    );
    eprintln!("{section}");
    if !write {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let new = match (
        text.find("<!-- bench:netpol:begin -->"),
        text.find("<!-- bench:netpol:end -->"),
    ) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &text[..a],
            section,
            &text[b + "<!-- bench:netpol:end -->".len()..]
        ),
        _ => format!("{text}\n## NetworkPolicy: update latency on a node\n{section}\n"),
    };
    std::fs::write(&path, new).unwrap();
}
