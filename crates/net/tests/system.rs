//! The system Network's host port (`Fabric::attach_host`): the node's own stack reaches the
//! system Network's pods on its node and, over the VXLAN, on another node; those pods cannot
//! open connections to the node; a tenant Network on the very same subnet stays out of reach
//! both ways. Two namespace-"nodes", pods as namespaces (no VMs).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use h8s_net::{host_device, Network, Subnet};

const T: Duration = Duration::from_millis(1500);
const NO: Duration = Duration::from_millis(500);

fn network(name: &str, tenant: &str, vni: u32) -> Network {
    Network {
        name: name.into(),
        tenant: tenant.into(),
        vni,
        // The same subnet for both: the host's route must lead to the system Network only.
        subnets: vec![Subnet::new("s", "10.87.0.0/24", None).unwrap()],
        mtu: 1450,
        dns: vec![],
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn the_host_reaches_system_pods_on_every_node_and_nothing_reaches_the_host() {
    let mut lab = Lab::new("sys");
    let nodes = lab.nodes(2);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    lab.store
        .create(&network("system", "h8s-system", 300))
        .unwrap();
    lab.store.create(&network("neta", "tenant-a", 301)).unwrap();
    let (ps1, ps2, pt1, pt2) = (lab.ns("s1"), lab.ns("s2"), lab.ns("t1"), lab.ns("t2"));
    let s1 = n1.attach_netns("system", "s1", &ps1).unwrap();
    let s2 = n2.attach_netns("system", "s2", &ps2).unwrap();
    let t1 = n1.attach_netns("neta", "t1", &pt1).unwrap();
    let t2 = n1.attach_netns("neta", "t2", &pt2).unwrap();
    // Node 1 is the API server's: its host gets an address on the system Network.
    let host_ip = ip("10.87.0.200");
    let h = n1.attach_host("system", "host-n1", host_ip).unwrap();
    assert_eq!(h.ip, host_ip);
    // Idempotent: asked again, the same port.
    assert_eq!(n1.attach_host("system", "host-n1", host_ip).unwrap(), h);
    n1.reconcile().unwrap();
    n2.reconcile().unwrap();
    // Both tenants hand out the same addresses: the tokens tell who answered.
    assert_eq!((s1.ip, t1.ip), (ip("10.87.0.2"), ip("10.87.0.2")));
    assert_eq!((s2.ip, t2.ip), (ip("10.87.0.3"), ip("10.87.0.3")));
    for (ns, a, tok) in [
        (&ps1, s1.ip, "system-1"),
        (&ps2, s2.ip, "system-2"),
        (&pt1, t1.ip, "tenant-1"),
        (&pt2, t2.ip, "tenant-2"),
    ] {
        tcp_token_server(ns, SocketAddrV4::new(a, 7000), tok);
    }
    let host = &n1.node().netns;
    let dev = host_device(300);
    assert!(sh(host, "ip -br addr show").contains(&dev));

    // The host reaches the system pods, on its node and across the VXLAN, and only them.
    assert!(
        ping(host, s1.ip, T).is_some(),
        "host -> system pod, same node"
    );
    assert!(
        ping(host, s2.ip, T).is_some(),
        "host -> system pod, other node"
    );
    assert_eq!(
        tcp_read(host, SocketAddrV4::new(s1.ip, 7000)).as_deref(),
        Some("system-1")
    );
    assert_eq!(
        tcp_read(host, SocketAddrV4::new(s2.ip, 7000)).as_deref(),
        Some("system-2")
    );
    // Node 2 has no host port: it reaches no pod.
    assert!(ping(&n2.node().netns, s2.ip, NO).is_none());

    // Nothing of the segment opens a connection to the host: not to its system address,
    // not to its underlay address, not even a ping; the system pods still talk to each
    // other.
    tcp_token_server(host, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7100), "host");
    assert_eq!(
        tcp_read(host, SocketAddrV4::new(host_ip, 7100)).as_deref(),
        Some("host"),
        "positive control"
    );
    for p in [&ps1, &ps2] {
        assert_eq!(tcp_read(p, SocketAddrV4::new(host_ip, 7100)), None);
        assert_eq!(tcp_read(p, SocketAddrV4::new(ip("10.77.0.1"), 7100)), None);
        assert!(ping(p, host_ip, NO).is_none());
    }
    assert_eq!(
        tcp_read(&ps1, SocketAddrV4::new(s2.ip, 7000)).as_deref(),
        Some("system-2")
    );
    // Nor is the host a router for them.
    sh(&ps1, "ip route add 10.77.0.0/24 via 10.87.0.200");
    assert!(ping(&ps1, ip("10.77.0.2"), NO).is_none());

    // The tenant Network on the same subnet: the system pods reach only their own peers,
    // the tenant's pods neither the host nor the system pods.
    assert_eq!(
        tcp_read(&ps1, SocketAddrV4::new(t2.ip, 7000)).as_deref(),
        Some("system-2")
    );
    assert_eq!(
        tcp_read(&pt1, SocketAddrV4::new(s2.ip, 7000)).as_deref(),
        Some("tenant-2")
    );
    assert!(ping(&pt1, host_ip, NO).is_none());
    assert_eq!(tcp_read(&pt1, SocketAddrV4::new(host_ip, 7100)), None);

    // Detached: the host device is gone and the pods are out of reach again.
    n1.detach("system", "host-n1").unwrap();
    assert!(!sh(host, "ip -br link show").contains(&dev));
    assert!(ping(host, s1.ip, NO).is_none());
}
