//! A tenant with raw sockets can neither impersonate (IP, MAC, ARP) nor sniff another pod of
//! its own Network; frames that are neither IPv4 nor ARP never leave its port.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use h8s_net::{Network, NsRef, Subnet};

const W: Duration = Duration::from_millis(700);

fn has(frames: &[Vec<u8>], needle: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn pods_cannot_spoof_or_sniff() {
    let mut lab = Lab::new("sp");
    let nodes = lab.nodes(2);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    lab.store
        .create(&Network {
            name: "neta".into(),
            tenant: "tenant-a".into(),
            vni: 300,
            subnets: vec![Subnet::new("s", "192.168.0.0/24", None).unwrap()],
            mtu: 1450,
            dns: vec![],
        })
        .unwrap();
    let (pa1, pa2, pa3) = (lab.ns("a1"), lab.ns("a2"), lab.ns("a3"));
    let a1 = n1.attach_netns("neta", "a1", &pa1).unwrap(); // attacker
    let a2 = n2.attach_netns("neta", "a2", &pa2).unwrap(); // remote victim
    let a3 = n1.attach_netns("neta", "a3", &pa3).unwrap(); // local victim
    n1.reconcile().unwrap();
    n2.reconcile().unwrap();
    let gw: Ipv4Addr = "192.168.0.1".parse().unwrap();
    let bcast = [0xff; 6];

    // Baseline: everyone talks, caches are warm.
    for (ns, dst) in [
        (&pa1, a2.ip),
        (&pa1, a3.ip),
        (&pa3, a2.ip),
        (&pa3, gw),
        (&pa1, gw),
    ] {
        assert!(
            ping(ns, dst, Duration::from_secs(2)).is_some(),
            "baseline {dst}"
        );
    }
    let rx2 = udp(&pa2, SocketAddrV4::new(a2.ip, 9000));
    let rx3 = udp(&pa3, SocketAddrV4::new(a3.ip, 9000));
    let tx = udp(&pa1, SocketAddrV4::new(a1.ip, 0));
    tx.send_to(b"honest", SocketAddrV4::new(a2.ip, 9000))
        .unwrap();
    tx.send_to(b"honest", SocketAddrV4::new(a3.ip, 9000))
        .unwrap();
    assert_eq!(
        drain(&rx2).len(),
        1,
        "control: honest datagram across nodes"
    );
    assert_eq!(drain(&rx3).len(), 1, "control: honest datagram on the node");

    // 1. IP spoofing: a1 claims a3's address, and an unassigned one.
    sh(
        &pa1,
        &format!(
            "ip addr add {}/32 dev eth0 && ip addr add 192.168.0.50/32 dev eth0",
            a3.ip
        ),
    );
    for src in [a3.ip, "192.168.0.50".parse().unwrap()] {
        let s = udp(&pa1, SocketAddrV4::new(src, 0));
        s.send_to(b"spoofed-ip", SocketAddrV4::new(a2.ip, 9000))
            .unwrap();
    }
    assert!(
        drain(&rx2).is_empty(),
        "datagrams from a spoofed source IP must not arrive"
    );
    sh(
        &pa1,
        &format!(
            "ip addr del {}/32 dev eth0 && ip addr del 192.168.0.50/32 dev eth0",
            a3.ip
        ),
    );

    // 2. MAC spoofing: a1 takes a3's MAC.
    sh(&pa1, &format!("ip link set eth0 address {}", a3.mac));
    tx.send_to(b"spoofed-mac", SocketAddrV4::new(a2.ip, 9000))
        .unwrap();
    tx.send_to(b"spoofed-mac", SocketAddrV4::new(a3.ip, 9000))
        .unwrap();
    assert!(
        drain(&rx2).is_empty() && drain(&rx3).is_empty(),
        "frames from a spoofed MAC must not arrive"
    );
    sh(&pa1, &format!("ip link set eth0 address {}", a1.mac));

    // 3. ARP spoofing: "the gateway is at a1" / "a2 is at a1", in every flavour.
    let sniff3 = Raw::open(&pa3, "eth0");
    let raw1 = Raw::open(&pa1, "eth0");
    let gw_mac_before = neighbour(&pa3, gw).expect("a3 knows the gateway");
    let a2_mac_before = neighbour(&pa3, a2.ip).expect("a3 knows a2");
    let evil: [u8; 6] = [0x02, 0xba, 0xd0, 0, 0, 1];
    let frames = [
        arp_reply(a1.mac.0, bcast, a1.mac.0, gw, bcast, gw), // claims the gateway's IP
        arp_reply(a1.mac.0, a3.mac.0, a1.mac.0, a2.ip, a3.mac.0, a3.ip), // claims a2's IP, unicast to a3
        arp_reply(a1.mac.0, bcast, evil, a1.ip, bcast, a1.ip), // lies about its own MAC in the ARP body
        arp_reply(evil, bcast, evil, a1.ip, bcast, a1.ip),     // and in the frame
    ];
    for f in &frames {
        raw1.send(f);
    }
    // Control: an honest gratuitous ARP from a1 does arrive, so the sender works.
    let honest = arp_reply(a1.mac.0, bcast, a1.mac.0, a1.ip, bcast, a1.ip);
    raw1.send(&honest);
    let seen = sniff3.collect(W);
    assert!(has(&seen, &honest[6..]), "control: honest ARP reaches a3");
    for f in &frames {
        assert!(
            !has(&seen, &f[6..]),
            "spoofed ARP reached a3: {:02x?}",
            &f[..42]
        );
    }
    assert_eq!(
        neighbour(&pa3, gw).as_deref(),
        Some(gw_mac_before.as_str()),
        "gateway entry intact"
    );
    assert_eq!(
        neighbour(&pa3, a2.ip).as_deref(),
        Some(a2_mac_before.as_str()),
        "a2 entry intact"
    );
    assert!(ping(&pa3, gw, Duration::from_secs(2)).is_some());

    // 4. Other ethertypes (IPv6, VLAN-tagged, anything) never leave a1's port.
    let mut v6 = vec![];
    v6.extend_from_slice(&bcast);
    v6.extend_from_slice(&a1.mac.0);
    v6.extend_from_slice(&[0x86, 0xdd]);
    v6.extend_from_slice(b"not-allowed-ipv6-payload");
    let mut vlan = vec![];
    vlan.extend_from_slice(&bcast);
    vlan.extend_from_slice(&a1.mac.0);
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x06]);
    vlan.extend_from_slice(b"not-allowed-vlan-payload");
    raw1.send(&v6);
    raw1.send(&vlan);
    let seen = sniff3.collect(W);
    assert!(!has(&seen, b"not-allowed-ipv6-payload") && !has(&seen, b"not-allowed-vlan-payload"));

    // 5. Sniffing: a1 in promiscuous mode sees none of a3 <-> a2 unicast.
    let sniff1 = Raw::open(&pa1, "eth0");
    let s3 = udp(&pa3, SocketAddrV4::new(a3.ip, 0));
    for _ in 0..5 {
        s3.send_to(b"secret-a3-to-a2", SocketAddrV4::new(a2.ip, 9000))
            .unwrap();
    }
    let seen = sniff1.collect(W);
    assert_eq!(drain(&rx2).len(), 5, "a2 got them");
    assert!(
        !has(&seen, b"secret-a3-to-a2"),
        "a1 must not see a3's traffic to a2"
    );
    // Nor to a3 from a2 (remote -> local), even for an address a3 never asked about.
    let s2 = udp(&pa2, SocketAddrV4::new(a2.ip, 0));
    s2.send_to(b"secret-a2-to-a3", SocketAddrV4::new(a3.ip, 9000))
        .unwrap();
    let seen = sniff1.collect(W);
    assert_eq!(drain(&rx3).len(), 1);
    assert!(!has(&seen, b"secret-a2-to-a3"));
    // Unknown unicast (a MAC no bridge knows) is flooded to no pod port, local or remote.
    let raw2 = Raw::open(&pa2, "eth0");
    let sniff3 = Raw::open(&pa3, "eth0");
    let mut f = vec![0x0a, 0x58, 192, 168, 0, 99];
    f.extend_from_slice(&a2.mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    // A valid IPv4 header (bridges with br_netfilter drop broken ones) + raw payload.
    let mut ip = vec![0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 253, 0, 0];
    ip.extend_from_slice(&a2.ip.octets());
    ip.extend_from_slice(&[192, 168, 0, 99]);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(b"unknown-unicast-secret..");
    f.extend_from_slice(&ip);
    raw2.send(&f);
    let (seen1, seen3) = (sniff1.collect(W), sniff3.collect(Duration::from_millis(50)));
    assert!(!has(&seen1, b"unknown-unicast-secret") && !has(&seen3, b"unknown-unicast-secret"));

    // 6. Straight to the node's own stack over L2 (the bridge's MAC, the node's address): the
    // node must receive nothing. Control: the same listener is reachable from the node itself.
    let node = &n1.node().netns;
    let br = sh(node, "ip -o link show h8b300");
    let br_mac = br
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();
    let host_rx = udp(node, SocketAddrV4::new("10.77.0.1".parse().unwrap(), 9999));
    sh(&pa1, &format!("ip neigh replace 10.77.0.1 lladdr {br_mac} dev eth0 nud permanent && ip route add 10.77.0.1/32 dev eth0"));
    tx.send_to(
        b"to-the-host",
        SocketAddrV4::new("10.77.0.1".parse().unwrap(), 9999),
    )
    .unwrap();
    assert!(
        drain(&host_rx).is_empty(),
        "a pod's frame reached the node's stack"
    );
    let local = udp(node, SocketAddrV4::new("10.77.0.1".parse().unwrap(), 0));
    local
        .send_to(
            b"control",
            SocketAddrV4::new("10.77.0.1".parse().unwrap(), 9999),
        )
        .unwrap();
    assert_eq!(drain(&host_rx).len(), 1, "control: the listener works");

    // 7. A port the store does not know (a crash between plug and rules, or a hand-made one)
    // is closed, not open.
    let rogue = lab.ns("rogue");
    let NsRef::Path(rp) = &rogue else {
        unreachable!()
    };
    sh(node, &format!(
        "ip link add h8vrogue0000001 type veth peer name eth0 netns {} && ip link set h8vrogue0000001 master h8b300 up",
        rp.file_name().unwrap().to_str().unwrap()
    ));
    sh(
        &rogue,
        "ip addr add 192.168.0.200/24 dev eth0 && ip link set eth0 up",
    );
    assert!(
        ping(&rogue, a3.ip, Duration::from_millis(800)).is_none(),
        "unknown port must be closed"
    );
    sh(node, "ip link del h8vrogue0000001");
}
