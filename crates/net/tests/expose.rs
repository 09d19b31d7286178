//! NodePort and LoadBalancer forwarding (`Fabric::program_services`) between two
//! namespace-nodes, with two tenants on the same subnet and an outside client on the
//! underlay: a tenant's node port reaches its Service's endpoints on either node (one hop
//! over the underlay for remote ones), a LoadBalancer address answered by one node does too,
//! `externalTrafficPolicy: Local` answers only where an endpoint runs and keeps the client's
//! address, and nothing reaches a pod or the other tenant directly.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use h8s_net::{ExposedPort, Network, NsRef, ServiceRules, Subnet, L4, LB_DEVICE, SVC_TABLE};

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

/// A server answering every connection with `token` and the address it came from.
fn who_server(ns: &NsRef, addr: SocketAddrV4, token: &'static str) {
    let l = ns.run(|| Ok(TcpListener::bind(addr).unwrap())).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("{token} {peer}").as_bytes());
        }
    });
}

fn get(ns: &NsRef, addr: SocketAddrV4) -> Option<String> {
    ns.run(|| {
        Ok(
            TcpStream::connect_timeout(&addr.into(), Duration::from_millis(1000))
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok().map(|_| out)
                }),
        )
    })
    .unwrap()
}

fn sa(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

/// The tokens `n` connections to `addr` got.
fn tokens(ns: &NsRef, addr: SocketAddrV4, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| get(ns, addr))
        .map(|s| s.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn node_ports_and_lb_addresses_reach_only_their_services_network() {
    let mut lab = Lab::new("lb");
    let nodes = lab.nodes(2);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    lab.store.create(&network("neta", "tenant-a", 100)).unwrap();
    lab.store.create(&network("netb", "tenant-b", 101)).unwrap();
    let (pa1, pa2, pb1) = (lab.ns("a1"), lab.ns("a2"), lab.ns("b1"));
    let a1 = n1.attach_netns("neta", "a1", &pa1).unwrap();
    let a2 = n2.attach_netns("neta", "a2", &pa2).unwrap();
    let b1 = n2.attach_netns("netb", "b1", &pb1).unwrap();
    n1.reconcile().unwrap();
    n2.reconcile().unwrap();
    for (ns, att, token) in [(&pa1, &a1, "a1"), (&pa2, &a2, "a2"), (&pb1, &b1, "b1")] {
        who_server(ns, SocketAddrV4::new(att.ip, 8080), token);
    }
    // The outside client, on the underlay.
    let client = lab.ns("client");
    let NsRef::Path(cp) = &client else {
        unreachable!()
    };
    run(&format!(
        "ip -n h8s-test-{tag}-sw link add pc type veth peer name eth0 netns {c} && \
         ip -n h8s-test-{tag}-sw link set pc master u up && \
         ip -n {c} addr add 10.77.0.100/24 dev eth0 && ip -n {c} link set eth0 up && \
         ip -n {c} route add 192.168.0.0/24 via 10.77.0.1",
        tag = lab.tag,
        c = cp.file_name().unwrap().to_str().unwrap(),
    ));
    let node_ips: Vec<Ipv4Addr> = vec!["10.77.0.1".parse().unwrap(), "10.77.0.2".parse().unwrap()];
    let lb: Ipv4Addr = "10.77.0.200".parse().unwrap();
    // Tenant A: Cluster policy, node port 30080, LoadBalancer 10.77.0.200:80 announced by n1.
    // Tenant B: Local policy, node port 30081, its endpoint on n2 only.
    let a_port = |local: SocketAddrV4, remote: Ipv4Addr, lb_here: bool| ExposedPort {
        service: "a/web:80".into(),
        network: "neta".into(),
        protocol: L4::Tcp,
        node_port: 30080,
        lb: if lb_here { vec![(lb, 80)] } else { vec![] },
        local: vec![local],
        remote: vec![remote],
        local_only: false,
        open: true,
        source_ranges: vec![],
    };
    let b_port = |local: Vec<SocketAddrV4>| ExposedPort {
        service: "b/web:80".into(),
        network: "netb".into(),
        protocol: L4::Tcp,
        node_port: 30081,
        lb: vec![],
        local,
        remote: vec!["10.77.0.2".parse().unwrap()],
        local_only: true,
        open: true,
        source_ranges: vec![],
    };
    let r1 = ServiceRules {
        nodes: node_ips.clone(),
        lb_addrs: vec![lb],
        ports: vec![
            a_port(SocketAddrV4::new(a1.ip, 8080), node_ips[1], true),
            b_port(vec![]),
        ],
    };
    let r2 = ServiceRules {
        nodes: node_ips.clone(),
        lb_addrs: vec![],
        ports: vec![
            a_port(SocketAddrV4::new(a2.ip, 8080), node_ips[0], false),
            b_port(vec![SocketAddrV4::new(b1.ip, 8080)]),
        ],
    };
    n1.program_services(&r1).unwrap();
    n2.program_services(&r2).unwrap();
    // Idempotent.
    n1.program_services(&r1).unwrap();

    // A's node port on either node: both of A's endpoints (one through a hop), never B's.
    let want: BTreeSet<String> = ["a1", "a2"].map(String::from).into();
    for n in ["10.77.0.1", "10.77.0.2"] {
        let got = tokens(&client, sa(n, 30080), 24);
        assert_eq!(got, want, "node port 30080 on {n}");
    }
    // The LoadBalancer address (answered by n1 only) too.
    assert_eq!(tokens(&client, SocketAddrV4::new(lb, 80), 24), want);
    assert!(sh(&n1.node().netns, "ip -o addr show dev h8lb0").contains("10.77.0.200/32"));
    // Other ports of the pool address and the node ports reach nothing.
    assert_eq!(get(&client, SocketAddrV4::new(lb, 8080)), None);
    // B (Local): only n2 answers, with the client's own address kept; never A.
    assert_eq!(
        get(&client, sa("10.77.0.2", 30081)).as_deref(),
        Some("b1 10.77.0.100")
    );
    assert_eq!(get(&client, sa("10.77.0.1", 30081)), None);
    // Pods are not reachable directly, even with a route to the subnet through a node.
    for ip in [a1.ip, a2.ip, b1.ip] {
        assert_eq!(get(&client, SocketAddrV4::new(ip, 8080)), None, "{ip}");
    }
    // Tenant pods do not get into another Network through a node port: B's pod dialing
    // the nodes' A port reaches nothing (the nodes are protected from tenant egress).
    assert_eq!(get(&pb1, sa("10.77.0.1", 30080)), None);
    assert_eq!(get(&pb1, sa("10.77.0.2", 30080)), None);

    // loadBalancerSourceRanges: a range without the client closes the pool address to it
    // (the node port stays open, as with kube-proxy); one with it opens it again.
    for (range, open) in [("203.0.113.0/24", false), ("10.77.0.96/29", true)] {
        let mut r = r1.clone();
        r.ports[0].source_ranges = vec![range.parse().unwrap()];
        n1.program_services(&r).unwrap();
        let got = get(&client, SocketAddrV4::new(lb, 80));
        assert_eq!(got.is_some(), open, "{range}: {got:?}");
        assert!(get(&client, sa("10.77.0.1", 30080)).is_some());
    }
    // The pool address moves to n2 (n1 stops announcing it): n2's gratuitous ARP replaces
    // the client's neighbour entry at once, where it would otherwise keep n1's MAC until it
    // expired. And back.
    let mac_of = |f: &h8s_net::Fabric| {
        let out = sh(&f.node().netns, "ip -o link show dev u0");
        let w: Vec<&str> = out.split_whitespace().collect();
        let i = w.iter().position(|x| *x == "link/ether").unwrap();
        w[i + 1].to_string()
    };
    let (mac1, mac2) = (mac_of(n1), mac_of(n2));
    assert_eq!(neighbour(&client, lb).as_deref(), Some(mac1.as_str()));
    let lb_on = |rules: &ServiceRules, here: bool| {
        let mut r = rules.clone();
        r.lb_addrs = if here { vec![lb] } else { vec![] };
        r.ports[0].lb = if here { vec![(lb, 80)] } else { vec![] };
        r
    };
    for (from, to, to_rules, from_rules, mac) in
        [(n1, n2, &r2, &r1, &mac2), (n2, n1, &r1, &r2, &mac1)]
    {
        from.program_services(&lb_on(from_rules, false)).unwrap();
        to.program_services(&lb_on(to_rules, true)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while neighbour(&client, lb).as_deref() != Some(mac.as_str())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            neighbour(&client, lb).as_deref(),
            Some(mac.as_str()),
            "the client's entry for {lb} after the move: {}",
            sh(&client, "ip -4 neigh")
        );
        assert_eq!(tokens(&client, SocketAddrV4::new(lb, 80), 24), want);
    }

    // A port without a node port (the seeds' NetworkProvider, allocateLoadBalancerNodePorts:
    // false, an external IP): B's address 10.77.0.201 on n2, where its endpoint runs; the
    // key towards the gateway is not a node port.
    let lb_b: Ipv4Addr = "10.77.0.201".parse().unwrap();
    let mut r = r2.clone();
    r.lb_addrs.push(lb_b);
    r.ports.push(ExposedPort {
        service: "b/np:80".into(),
        network: "netb".into(),
        protocol: L4::Tcp,
        node_port: 0,
        lb: vec![(lb_b, 80)],
        local: vec![SocketAddrV4::new(b1.ip, 8080)],
        remote: vec![],
        local_only: false,
        open: false,
        source_ranges: vec![],
    });
    h8s_net::expose::internal_keys(&mut r.ports, 20000);
    n2.program_services(&r).unwrap();
    assert_eq!(
        get(&client, SocketAddrV4::new(lb_b, 80)).as_deref(),
        Some("b1 10.77.0.100")
    );
    assert_eq!(get(&client, sa("10.77.0.2", 20000)), None, "no node port");
    assert_eq!(
        get(&client, sa("10.77.0.2", 30081)).as_deref(),
        Some("b1 10.77.0.100")
    );

    // Nothing programmed: nothing left.
    for f in [n1, n2] {
        f.program_services(&ServiceRules::default()).unwrap();
        let inv = f.inventory().unwrap();
        assert!(
            !inv.tables.iter().any(|t| t.ends_with(SVC_TABLE)),
            "{inv:?}"
        );
        assert!(!inv.links.iter().any(|l| l == LB_DEVICE), "{inv:?}");
    }
    assert_eq!(get(&client, sa("10.77.0.1", 30080)), None);
}
