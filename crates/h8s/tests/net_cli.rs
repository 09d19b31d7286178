//! `h8s net …` end to end, in a node namespace of its own: create/ls/inspect/attach/detach/rm,
//! typed errors, several processes allocating at once, and nothing left behind.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

struct Node {
    ns: String,
    pods: Vec<String>,
    dir: tempfile::TempDir,
    name: String,
}

impl Node {
    fn new(tag: &str) -> Node {
        let ns = format!("h8s-test-cli{tag}{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && ip -n {ns} link add u0 type veth peer name u1 && \
             ip -n {ns} addr add 10.78.0.1/24 dev u0 && ip -n {ns} link set u0 up && ip -n {ns} link set u1 up && \
             ip -n {ns} route add default via 10.78.0.254"
        ));
        Node {
            ns,
            pods: vec![],
            dir: tempfile::tempdir().unwrap(),
            name: format!("cli{tag}{}", std::process::id()),
        }
    }

    fn h8s(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_h8s"))
            .arg("net")
            .args(args)
            .env("H8S_NET_DIR", self.dir.path())
            .env("H8S_NET_NETNS", &self.ns)
            .env("H8S_NODE_NAME", &self.name)
            .env("H8S_LOG", "warn")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.h8s(args);
        assert!(
            o.status.success(),
            "h8s net {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn err(&self, args: &[&str]) -> String {
        let o = self.h8s(args);
        assert!(!o.status.success(), "h8s net {args:?} should fail");
        String::from_utf8(o.stderr).unwrap()
    }

    fn pod(&mut self, p: &str) -> String {
        let ns = format!("{}-{p}", self.ns);
        sh(&format!("ip netns add {ns}"));
        self.pods.push(ns.clone());
        ns
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.h8s(&["reset", "--yes"]);
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn create_attach_detach_remove_leaves_nothing() {
    let mut n = Node::new("a");
    assert_eq!(n.ok(&["inventory"]), "");
    n.ok(&[
        "create",
        "neta",
        "--tenant",
        "tenant-a",
        "--subnet",
        "192.168.0.0/24",
    ]);
    n.ok(&[
        "create",
        "netb",
        "--tenant",
        "tenant-b",
        "--subnet",
        "192.168.0.0/24",
        "--gateway",
        "192.168.0.254",
        "--vni",
        "4242",
    ]);
    let ls = n.ok(&["ls"]);
    assert!(
        ls.contains("neta") && ls.contains("tenant-a") && ls.contains("192.168.0.1"),
        "{ls}"
    );
    assert!(ls.contains("4242") && ls.contains("192.168.0.254"), "{ls}");
    let nets: serde_json::Value = serde_json::from_str(&n.ok(&["ls", "--json"])).unwrap();
    assert_eq!(nets[0]["vni"], 100);
    // The underlay here has MTU 1500: pods get 1450.
    assert_eq!(nets[0]["mtu"], 1450);

    // Typed errors, nothing half-made.
    assert!(n
        .err(&["create", "neta", "--tenant", "t", "--subnet", "10.0.0.0/24"])
        .contains("already exists"));
    assert!(n
        .err(&["create", "netc", "--tenant", "t", "--subnet", "10.0.0.1/24"])
        .contains("host bits"));
    assert!(n
        .err(&[
            "create",
            "netc",
            "--tenant",
            "t",
            "--subnet",
            "10.0.0.0/24",
            "--vni",
            "4242"
        ])
        .contains("vni"));
    assert!(n
        .err(&[
            "create",
            "netc",
            "--tenant",
            "t",
            "--subnet",
            "10.0.0.0/24",
            "--mtu",
            "1480"
        ])
        .contains("MTU"));
    assert!(n
        .err(&[
            "create",
            "Bad_Name",
            "--tenant",
            "t",
            "--subnet",
            "10.0.0.0/24"
        ])
        .contains("network name"));
    assert!(!n.ok(&["ls"]).contains("netc"));

    // A pod in a namespace and a VM tap.
    let p1 = n.pod("p1");
    let att: serde_json::Value =
        serde_json::from_str(&n.ok(&["attach", "neta", "p1", "--pod-netns", &p1])).unwrap();
    assert_eq!(att["ip"], "192.168.0.2");
    assert_eq!(att["kind"], "veth");
    assert!(sh(&format!("ip -n {p1} -4 addr show eth0")).contains("192.168.0.2/24"));
    assert!(sh(&format!("ip -n {p1} route")).contains("default via 192.168.0.1"));
    let tap: serde_json::Value = serde_json::from_str(&n.ok(&["attach", "neta", "vm1"])).unwrap();
    assert_eq!(tap["kind"], "tap");
    let port = tap["port"].as_str().unwrap();
    let link = sh(&format!("ip -n {} -d link show {port}", n.ns));
    assert!(
        link.contains("tun") && link.contains("master h8b100") && link.contains("mtu 1450"),
        "{link}"
    );
    assert!(n.err(&["attach", "neta", "vm1"]).contains("already exists"));
    let inspect: serde_json::Value = serde_json::from_str(&n.ok(&["inspect", "neta"])).unwrap();
    assert_eq!(inspect["attachments"].as_array().unwrap().len(), 2);

    // The rules name exactly the attached ports.
    // The underlay's subnet (from the default route, 10.78.0.0/24) is out of tenant egress's
    // reach: it lies inside the default protected 10.0.0.0/8, into which it is merged, with
    // cloud metadata's link-local range.
    let inet = sh(&format!("ip netns exec {} nft list table inet h8s", n.ns));
    assert!(
        inet.contains("10.0.0.0/8") && inet.contains("169.254.0.0/16"),
        "{inet}"
    );
    let rules = sh(&format!("ip netns exec {} nft list table bridge h8s", n.ns));
    assert!(
        rules.contains(port) && rules.contains("0a:58:c0:a8:00:02"),
        "{rules}"
    );

    // Repair after someone deleted the bridge and the gateway: both come back, the ports go
    // back on the bridge, and the pod reaches its gateway again.
    sh(&format!(
        "ip -n {} link del h8b100 && ip netns del h8s-gw-{}-100",
        n.ns, n.name
    ));
    n.ok(&["reconcile"]);
    let link = sh(&format!("ip -n {} link show {port}", n.ns));
    assert!(link.contains("master h8b100"), "{link}");
    assert!(sh("ip netns list").contains(&format!("h8s-gw-{}-100", n.name)));
    // The rebuilt gateway answers: nothing listens on its DNS port, so a refusal proves the path.
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p1,
            "timeout",
            "5",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/192.168.0.1/53",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused"),
        "{o:?}"
    );

    assert!(n.err(&["rm", "neta"]).contains("still has 2 pod"));
    n.ok(&["detach", "neta", "p1"]);
    assert!(n.err(&["detach", "neta", "p1"]).contains("not found"));
    assert_eq!(
        sh(&format!("ip -n {p1} -o link")).lines().count(),
        1,
        "the pod's eth0 went with its veth"
    );
    n.ok(&["rm", "--force", "neta"]);
    n.ok(&["rm", "netb"]);
    assert_eq!(n.ok(&["inventory"]), "", "nothing of h8s left");
    assert!(!sh(&format!("ip netns exec {} nft list tables", n.ns)).contains("h8s"));
    assert!(!sh("ip netns list").contains(&format!("h8s-gw-{}", n.name)));
}

#[test]
fn processes_allocating_at_once_never_share_an_address() {
    let n = Node::new("c");
    n.ok(&[
        "create",
        "neta",
        "--tenant",
        "tenant-a",
        "--subnet",
        "10.60.0.0/28",
    ]); // 13 pod addresses
    let children: Vec<_> = (0..16)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_h8s"))
                .args(["net", "attach", "neta", &format!("vm{i}")])
                .env("H8S_NET_DIR", n.dir.path())
                .env("H8S_NET_NETNS", &n.ns)
                .env("H8S_NODE_NAME", &n.name)
                .env("H8S_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ips = vec![];
    let mut exhausted = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            ips.push(v["ip"].as_str().unwrap().parse::<Ipv4Addr>().unwrap());
        } else {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("no free address"), "{e}");
            exhausted += 1;
        }
    }
    assert_eq!((ips.len(), exhausted), (13, 3));
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 13, "distinct");
    let inv = n.ok(&["inventory"]);
    assert_eq!(
        inv.lines().filter(|l| l.starts_with("link\th8t")).count(),
        13,
        "{inv}"
    );
    n.ok(&["rm", "--force", "neta"]);
    assert_eq!(n.ok(&["inventory"]), "");
}
