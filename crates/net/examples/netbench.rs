//! Network fabric benchmark (run by `bench/net/run.sh`): TCP throughput (iperf3) and TCP
//! round-trip latency between two pods of one Network on the same node and across the VXLAN
//! between two namespace-nodes, beside a plain veth pair measured in the same run; and the time
//! to attach/detach a pod. Prints a Markdown section; `--write FILE` replaces the `net` section
//! of BENCHMARKS.md in FILE.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use h8s_net::netns::{self, NsRef};
use h8s_net::{Fabric, Network, NetworkStore, NodeConfig, Subnet};

struct Lab {
    namespaces: Vec<String>,
    fabrics: Vec<Fabric>,
    _dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for f in &self.fabrics {
            let _ = f.teardown_all();
        }
        for n in self.namespaces.iter().rev() {
            let _ = netns::delete_named(n);
        }
    }
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (v[0], p(0.5), p(0.99))
}

/// iperf3 client in `from` to a one-off server in `to`; Gbit/s received.
fn iperf(to_ns: &str, from_ns: &str, ip: Ipv4Addr, secs: u32) -> f64 {
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            to_ns,
            "iperf3",
            "-s",
            "-1",
            "-B",
            &ip.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let out = sh(&format!(
        "ip netns exec {from_ns} iperf3 -J -t {secs} -c {ip}"
    ));
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 json");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bps")
        / 1e9
}

/// TCP request/response of one byte, `n` times; microseconds per round trip.
fn tcp_rr(to: &NsRef, from: &NsRef, ip: Ipv4Addr, n: usize) -> Vec<f64> {
    let l = to
        .run(|| Ok(TcpListener::bind(SocketAddrV4::new(ip, 5301)).unwrap()))
        .unwrap();
    let srv = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while c.read_exact(&mut b).is_ok() {
            if c.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut c = from
        .run(|| Ok(TcpStream::connect(SocketAddrV4::new(ip, 5301)).unwrap()))
        .unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [7u8; 1];
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        if i >= 200 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    srv.join().unwrap();
    out
}

fn main() {
    let write = std::env::args().skip_while(|a| a != "--write").nth(1);
    let rounds: usize = std::env::var("NETBENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let secs: u32 = std::env::var("NETBENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rr_n: usize = std::env::var("NETBENCH_RR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let attach_n: usize = std::env::var("NETBENCH_ATTACH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let tag = format!("nb{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let mut lab = Lab {
        namespaces: vec![],
        fabrics: vec![],
        _dir: dir,
    };
    let ns = |lab: &mut Lab, what: &str| -> (String, NsRef) {
        let name = format!("h8s-bench-{tag}-{what}");
        let _ = netns::delete_named(&name);
        let r = netns::create_named(&name).unwrap();
        lab.namespaces.push(name.clone());
        sh(&format!("ip -n {name} link set lo up"));
        (name, r)
    };

    // Baseline: a plain veth pair between two namespaces.
    let (v1, v1r) = ns(&mut lab, "v1");
    let (v2, v2r) = ns(&mut lab, "v2");
    sh(&format!(
        "ip -n {v1} link add eth0 type veth peer name eth0 netns {v2} && ip -n {v1} addr add 10.99.0.1/24 dev eth0 && \
         ip -n {v2} addr add 10.99.0.2/24 dev eth0 && ip -n {v1} link set eth0 up && ip -n {v2} link set eth0 up"
    ));
    // Two nodes joined by a veth underlay (MTU 1500), one Network (pod MTU 1450).
    let (n1, n1r) = ns(&mut lab, "n1");
    let (n2, n2r) = ns(&mut lab, "n2");
    sh(&format!(
        "ip -n {n1} link add u0 type veth peer name u0 netns {n2} && ip -n {n1} addr add 10.77.0.1/24 dev u0 && \
         ip -n {n2} addr add 10.77.0.2/24 dev u0 && ip -n {n1} link set u0 up && ip -n {n2} link set u0 up"
    ));
    let mut fabrics = vec![];
    for (i, r) in [(1u8, &n1r), (2, &n2r)] {
        let mut c = NodeConfig::new(&format!("{tag}-n{i}"), Ipv4Addr::new(10, 77, 0, i));
        c.netns = r.clone();
        let f = Fabric::new(store.clone(), c).unwrap();
        lab.fabrics.push(f.clone());
        fabrics.push(f);
    }
    store
        .create(&Network {
            name: "bench".into(),
            tenant: "bench".into(),
            vni: 500,
            subnets: vec![Subnet::new("s", "192.168.0.0/24", None).unwrap()],
            mtu: 1450,
            dns: vec![],
        })
        .unwrap();
    let (pa, par) = ns(&mut lab, "pa");
    let (pb, pbr) = ns(&mut lab, "pb");
    let (pc, pcr) = ns(&mut lab, "pc");
    let a = fabrics[0].attach_netns("bench", "pa", &par).unwrap();
    let b = fabrics[0].attach_netns("bench", "pb", &pbr).unwrap();
    let c = fabrics[1].attach_netns("bench", "pc", &pcr).unwrap();
    fabrics[0].reconcile().unwrap();
    fabrics[1].reconcile().unwrap();

    // The kernel's own VXLAN between the same kind of namespace-nodes, without any h8s rule,
    // namespace or gateway: what the VXLAN path costs before h8s adds anything.
    let (k1, _) = ns(&mut lab, "k1");
    let (k2, _) = ns(&mut lab, "k2");
    let (ka, kar) = ns(&mut lab, "ka");
    let (kc, kcr) = ns(&mut lab, "kc");
    sh(&format!(
        "ip -n {k1} link add u0 type veth peer name u0 netns {k2} && ip -n {k1} addr add 10.78.0.1/24 dev u0 && \
         ip -n {k2} addr add 10.78.0.2/24 dev u0 && ip -n {k1} link set u0 up && ip -n {k2} link set u0 up"
    ));
    for (i, (node, pod, other)) in [(&k1, &ka, 2), (&k2, &kc, 1)].into_iter().enumerate() {
        let i = i + 1;
        sh(&format!(
            "ip -n {node} link add br0 mtu 1450 type bridge mcast_snooping 0 && \
             ip -n {node} link add vx0 mtu 1450 type vxlan id 500 local 10.78.0.{i} dstport 4789 nolearning && \
             ip -n {node} link set vx0 master br0 && \
             ip -n {node} link add p0 mtu 1450 type veth peer name eth0 netns {pod} && \
             ip -n {node} link set p0 master br0 && \
             ip -n {pod} addr add 192.168.9.{i}/24 dev eth0 && ip -n {pod} link set eth0 mtu 1450 up && \
             ip -n {node} link set br0 up && ip -n {node} link set vx0 up && ip -n {node} link set p0 up && \
             ip netns exec {node} bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.78.0.{other}"
        ));
    }
    type Case<'a> = (&'a str, &'a str, &'a NsRef, &'a str, &'a NsRef, Ipv4Addr);
    let cases: [Case; 4] = [
        (
            "plain veth pair (baseline)",
            &v1,
            &v1r,
            &v2,
            &v2r,
            Ipv4Addr::new(10, 99, 0, 2),
        ),
        (
            "same node, one Network (bridge)",
            &pa,
            &par,
            &pb,
            &pbr,
            b.ip,
        ),
        ("two nodes, one Network (VXLAN)", &pa, &par, &pc, &pcr, c.ip),
        (
            "kernel VXLAN alone (no h8s rules), for reference",
            &ka,
            &kar,
            &kc,
            &kcr,
            Ipv4Addr::new(192, 168, 9, 2),
        ),
    ];
    let _ = (&a, &n1, &n2);
    let mut tput: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    let mut rr: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    // Interleave the cases round by round so background load hits all alike.
    for round in 0..rounds {
        for (i, (_, from, fromr, to, tor, ip)) in cases.iter().enumerate() {
            tput[i].push(iperf(to, from, *ip, secs));
            rr[i].extend(tcp_rr(tor, fromr, *ip, rr_n / rounds));
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }

    // Attach/detach of a pod on a live node (namespace veth and VM tap).
    let (_, pxr) = ns(&mut lab, "px");
    let (mut at_v, mut de_v, mut at_t, mut de_t) = (vec![], vec![], vec![], vec![]);
    for _ in 0..attach_n {
        let t = Instant::now();
        fabrics[0].attach_netns("bench", "px", &pxr).unwrap();
        at_v.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        fabrics[0].detach("bench", "px").unwrap();
        de_v.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        fabrics[0].attach("bench", "vmx").unwrap();
        at_t.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        fabrics[0].detach("bench", "vmx").unwrap();
        de_t.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let base_t = stats(tput[0].clone()).1;
    let base_r = stats(rr[0].clone()).1;
    let mut md = String::new();
    let date = sh("date -u +%Y-%m-%dT%H:%MZ");
    md.push_str(&format!(
        "Measured {} by `bench/net/run.sh` ({} `netbench` example under `chrt -f 10`: the measured endpoints run \
         at real-time priority), on the shared 2-core machine while other work ran; the cases are interleaved round by \
         round so background load hits them alike. Until session 8 the endpoints ran at normal priority and the \
         VXLAN case lost more to the other work than the baseline did (0.60× throughput, 2.2× RTT).\n\n",
        date.trim(),
        if cfg!(debug_assertions) {
            "debug build of the"
        } else {
            "release"
        }
    ));
    md.push_str(
        "Method: endpoints are network namespaces. *Baseline*: two namespaces joined by one veth pair (MTU 1500). \
         *Same node*: two pods (veth ports with anti-spoofing rules) on one Network's bridge on one node. *VXLAN*: \
         pods on two namespace-nodes joined by a veth underlay (MTU 1500; pods get 1450), through bridge → VXLAN → \
         underlay → VXLAN → bridge, with the node's rules (anti-spoofing, VXLAN peers, conntrack). *Kernel VXLAN alone*: \
         the same topology built with `ip` (bridge, VXLAN, veth), no h8s rule, namespace or gateway — what the \
         kernel's VXLAN path costs before h8s adds anything. Throughput: iperf3, one TCP stream, ",
    );
    md.push_str(&format!(
        "{secs} s per sample, {rounds} samples per case (with so few samples p99 is the maximum). Latency: 1-byte TCP request/response (TCP_NODELAY), {} round trips \
         per case after warm-up. Attach/detach: {attach_n} cycles on a node that already has the Network (address \
         allocation under the store lock + devices over netlink + one `nft -f` rule-set swap).\n\n",
        rr[0].len()
    ));
    md.push_str("| case | throughput Gbit/s min / median / p99 | × baseline (median) | TCP RTT µs min / median / p99 | × baseline (median) |\n|---|---|---|---|---|\n");
    for (i, (name, ..)) in cases.iter().enumerate() {
        let t = stats(tput[i].clone());
        let r = stats(rr[i].clone());
        md.push_str(&format!(
            "| {name} | {:.2} / {:.2} / {:.2} | {:.2} | {:.0} / {:.0} / {:.0} | {:.2} |\n",
            t.0,
            t.1,
            t.2,
            t.1 / base_t,
            r.0,
            r.1,
            r.2,
            r.1 / base_r
        ));
    }
    md.push_str("\n| operation | ms min / median / p99 |\n|---|---|\n");
    for (name, v) in [
        ("attach pod (namespace, veth)", &at_v),
        ("detach pod (namespace, veth)", &de_v),
        ("attach pod VM (tap)", &at_t),
        ("detach pod VM (tap)", &de_t),
    ] {
        let s = stats(v.clone());
        md.push_str(&format!(
            "| {name} | {:.1} / {:.1} / {:.1} |\n",
            s.0, s.1, s.2
        ));
    }
    print!("{md}");
    if let Some(path) = write {
        let text = std::fs::read_to_string(&path).expect("read BENCHMARKS.md");
        let (b, e) = ("<!-- bench:net:begin -->", "<!-- bench:net:end -->");
        let (Some(i), Some(j)) = (text.find(b), text.find(e)) else {
            panic!("markers missing in {path}")
        };
        let new = format!("{}{b}\n{md}{}", &text[..i], &text[j..]);
        std::fs::write(&path, new).expect("write BENCHMARKS.md");
        eprintln!("wrote the net section of {path}");
    }
}
