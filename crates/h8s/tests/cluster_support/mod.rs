//! Shared multi-node harness: one `h8s server --disable-agent` on the host and N `h8s agent`
//! processes, each in its own network namespace, joined with the server's join token (TLS
//! bootstrap), running pod VMs (QEMU) from the busybox image of `scripts/setup`, pods on
//! `--pod-network api` (each namespace's Network, VXLAN between the nodes).
//!
//! ```text
//!   host: bridge h8tbPID 10.X.Y.1/24 ── server listens on 10.X.Y.1:port
//!     ├─ veth ── netns h8s-tPID-0: eth0 10.X.Y.10, `h8s agent` node0-PID (its pod VMs)
//!     └─ veth ── netns h8s-tPID-1: eth0 10.X.Y.11, `h8s agent` node1-PID
//! ```
//!
//! Use: `mod api_support; mod cluster_support;` in the test binary, then
//! `cluster_support::cluster(&Opts::default())` (one cluster per test binary, started by the
//! first caller; later callers get the same one). Its `server` is an
//! [`api_support::Server`](crate::api_support::Server) (kubectl helpers, curl). Each test
//! should work in its own namespace ([`Cluster::namespace`]) and delete its pods.
//!
//! Teardown at exit (atexit, also after failed tests): every process in the nodes' network
//! namespaces (agents, pod supervisors) and the recorded QEMU of every pod VM is killed by
//! PID, then the server; the namespaces (with their veths, taps, bridges, nftables), the
//! gateway namespaces the fabric made and the bridge are deleted; anything left is printed.
//! The `subnet` (10.X.Y.0/24, X = 200 + pid % 50, Y = pid % 250) stays clear of the service
//! range (10.96.0.0/12), the default pod Network (10.88.0.0/16) and `agent_vm`'s pod CIDRs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api_support::Server;

/// The h8s cache `scripts/setup` fills (guest kernel, busybox image).
pub fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

/// What the cluster is started with (by the first caller of [`cluster`]).
#[derive(Clone, Debug)]
pub struct Opts {
    /// How many agents (nodes).
    pub nodes: usize,
    /// Extra `h8s server` flags (e.g. `--node-monitor-grace-period 10s`).
    pub server_args: Vec<String>,
    /// Extra `h8s agent` flags for every node.
    pub agent_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            nodes: 2,
            server_args: Vec::new(),
            agent_args: Vec::new(),
        }
    }
}

/// One node: an `h8s agent` in its own network namespace.
pub struct Node {
    pub name: String,
    /// Its network namespace (`ip netns exec NETNS …`).
    pub netns: String,
    /// Its address on the test bridge (the Node's InternalIP).
    pub ip: String,
    /// `--data-dir` (images, node credential).
    pub data: PathBuf,
    /// The pod VM runtime's state root (`pods/<id>/pod.json`).
    pub root: PathBuf,
    /// `H8S_NET_DIR`.
    pub net: PathBuf,
    /// The agent's log.
    pub log: PathBuf,
    args: Vec<String>,
    agent: Mutex<Option<Child>>,
}

pub struct Cluster {
    pub server: Server,
    pub nodes: Vec<Node>,
    /// Everything of the cluster but the server's data dir (logs, agents' dirs).
    pub dir: PathBuf,
    pub bridge: String,
    /// The bridge's address (the server's), and the /24 the nodes are on.
    pub gateway: String,
    pub subnet: String,
    /// Held shared by tests that need every node up, exclusively by one that powers a node
    /// off: the tests of a binary share this cluster and run in parallel.
    power: RwLock<()>,
}

/// The cluster of this test binary, started on first use with `opts`.
pub fn cluster(opts: &Opts) -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| start(opts))
}

/// What the atexit teardown needs.
struct Teardown {
    server_pid: Option<u32>,
    server_dir: Option<PathBuf>,
    nodes: Vec<(String, String, PathBuf)>,
    bridge: String,
}

static TEARDOWN: Mutex<Option<Teardown>> = Mutex::new(None);

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The first three octets of the test bridge's /24 (known before the cluster starts, e.g.
/// for a `--lb-pool` inside it).
pub fn subnet_prefix() -> String {
    let pid = std::process::id();
    format!("10.{}.{}", 200 + pid % 50, pid % 250)
}

/// A client namespace on the test bridge (`<prefix>.99`), outside every node and tenant
/// ("outside" for NodePort and LoadBalancer tests); made once per test binary, deleted at
/// exit with the nodes'. Its name, for `ip netns exec`.
pub fn outside_client(c: &Cluster) -> String {
    static CLIENT: OnceLock<String> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let pid = std::process::id() % 100_000;
            let netns = format!("h8s-t{pid}-c");
            let veth = format!("h8tv{pid}-c");
            let _ = Command::new("ip")
                .args(["netns", "del", &netns])
                .stderr(Stdio::null())
                .status();
            if let Some(t) = TEARDOWN.lock().unwrap().as_mut() {
                t.nodes.push((
                    format!("client-{pid}"),
                    netns.clone(),
                    PathBuf::from("/nonexistent"),
                ));
            }
            sh(&format!(
                "ip netns add {netns} && ip -n {netns} link set lo up && \
                 ip link add {veth} type veth peer name eth0 netns {netns} && \
                 ip link set {veth} master {bridge} up && \
                 ip -n {netns} addr add {prefix}.99/24 dev eth0 && ip -n {netns} link set eth0 up",
                bridge = c.bridge,
                prefix = subnet_prefix(),
            ));
            netns
        })
        .clone()
}

fn h8s() -> Command {
    Command::new(env!("CARGO_BIN_EXE_h8s"))
}

fn start(opts: &Opts) -> Cluster {
    for f in ["guest/vmlinuz", "guest/initramfs.img", "images/busybox-oci"] {
        assert!(
            cache().join(f).exists(),
            "needs {f} in the cache: run scripts/setup"
        );
    }
    assert!(
        (1..=8).contains(&opts.nodes),
        "1 to 8 nodes, not {}",
        opts.nodes
    );
    let pid = std::process::id();
    // Short: unix socket paths under each runtime root stay below 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("h8s-cl")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let prefix = subnet_prefix();
    let gateway = format!("{prefix}.1");
    let bridge = format!("h8tb{}", pid % 100_000);
    let _ = Command::new("ip")
        .args(["link", "del", &bridge])
        .stderr(Stdio::null())
        .status();
    // Registered first, so a failing start is cleaned up too.
    *TEARDOWN.lock().unwrap() = Some(Teardown {
        server_pid: None,
        server_dir: None,
        nodes: Vec::new(),
        bridge: bridge.clone(),
    });
    // SAFETY: registering a plain extern "C" fn with atexit(3).
    unsafe { libc::atexit(teardown) };
    sh(&format!(
        "ip link add {bridge} type bridge && ip addr add {gateway}/24 dev {bridge} && \
         ip link set {bridge} up"
    ));
    let mut nodes = Vec::new();
    for i in 0..opts.nodes {
        let netns = format!("h8s-t{}-{i}", pid % 100_000);
        let veth = format!("h8tv{}-{i}", pid % 100_000);
        let ip = format!("{prefix}.{}", 10 + i);
        let d = dir.join(format!("n{i}"));
        let _ = Command::new("ip")
            .args(["netns", "del", &netns])
            .stderr(Stdio::null())
            .status();
        if let Some(t) = TEARDOWN.lock().unwrap().as_mut() {
            t.nodes
                .push((format!("node{i}-{pid}"), netns.clone(), d.join("r")));
        }
        sh(&format!(
            "ip netns add {netns} && ip -n {netns} link set lo up && \
             ip link add {veth} type veth peer name eth0 netns {netns} && \
             ip link set {veth} master {bridge} up && \
             ip -n {netns} addr add {ip}/24 dev eth0 && ip -n {netns} link set eth0 up && \
             ip -n {netns} route add default via {gateway}"
        ));
        // Disjoint uid ranges: one per runtime state root (docs/runtime.md, "Jail").
        let uid0 = 300_000 + (pid % 500) * 8192 + i as u32 * 1024;
        let mut args: Vec<String> = [
            "--restart-backoff=2s",
            "--restart-backoff-max=8s",
            "--image-pull-backoff=1s",
            "--image-pull-backoff-max=4s",
            "--pod-sync-period=500ms",
            "--node-status-update-frequency=2s",
            "--node-lease-renew-interval=2s",
            "--volume-refresh-period=2s",
            "--stats-interval=2s",
            "--pod-network=api",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--jail-uid-range={uid0}-{}", uid0 + 1023));
        args.push(format!("--node-ip={ip}"));
        args.extend(opts.agent_args.iter().cloned());
        nodes.push(Node {
            name: format!("node{i}-{pid}"),
            netns,
            ip,
            data: d.join("data"),
            root: d.join("r"),
            net: d.join("net"),
            log: d.join("agent.log"),
            args,
            agent: Mutex::new(None),
        });
    }
    let mut server_args: Vec<String> = vec![
        format!("--tls-san={gateway}"),
        "--metrics-cache-ttl=1s".into(),
    ];
    server_args.extend(opts.server_args.iter().cloned());
    let sa: Vec<&std::ffi::OsStr> = server_args.iter().map(|s| s.as_ref()).collect();
    let server = Server::start_listen(
        tempfile::Builder::new()
            .prefix("h8s-cs")
            .tempdir_in("/tmp")
            .unwrap(),
        &format!("{gateway}:0"),
        &sa,
    );
    if let Some(t) = TEARDOWN.lock().unwrap().as_mut() {
        t.server_pid = Some(server.pid());
        t.server_dir = Some(server.dir.path().to_path_buf());
    }
    let c = Cluster {
        server,
        nodes,
        dir: dir.clone(),
        bridge,
        gateway,
        subnet: format!("{prefix}.0/24"),
        power: RwLock::new(()),
    };
    for n in &c.nodes {
        let imp = h8s()
            .args(["image", "import"])
            .arg(cache().join("images/busybox-oci"))
            .env("H8S_DATA_DIR", &n.data)
            .output()
            .unwrap();
        assert!(
            imp.status.success(),
            "importing busybox for {}: {}",
            n.name,
            String::from_utf8_lossy(&imp.stderr)
        );
        c.start_agent(n);
    }
    for n in &c.nodes {
        c.wait_node_ready(n, Duration::from_secs(60));
    }
    eprintln!(
        "cluster in {} (server {}, agents' logs nN/agent.log)",
        dir.display(),
        c.server.url
    );
    c
}

/// Spawns `cmd` from a thread that lives as long as the test process: the children get
/// `PR_SET_PDEATHSIG` (SIGKILL), which follows the thread that forked them.
fn spawn_kept(mut cmd: Command) -> Child {
    type Req = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Req>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Req>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (rtx, rrx) = std::sync::mpsc::channel();
    tx.lock().unwrap().send((cmd, rtx)).unwrap();
    rrx.recv().unwrap().expect("spawning")
}

impl Cluster {
    /// Every node stays up while the guard lives (a test that powers one off waits).
    pub fn all_nodes_up(&self) -> RwLockReadGuard<'_, ()> {
        // A test that panicked holding the guard leaves the nodes as they are: go on.
        self.power.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The right to power nodes off (`kill_node`): no test needing every node runs meanwhile.
    pub fn power_switch(&self) -> RwLockWriteGuard<'_, ()> {
        self.power.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (or restarts) node `n`'s agent: the first time it joins with the join token,
    /// later it uses the credential saved in its data dir. Waits for its `ready` line.
    pub fn start_agent(&self, n: &Node) {
        let data = self.server.data_dir();
        let token = std::fs::read_to_string(data.join("join-token")).expect("join-token");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &n.netns,
            env!("CARGO_BIN_EXE_h8s"),
            "agent",
        ])
        .args(["--server", &self.server.url])
        .args(["--ca-file"])
        .arg(data.join("ca.crt"))
        .arg("--data-dir")
        .arg(&n.data)
        .args(&n.args)
        .env("H8S_JOIN_TOKEN", token.trim())
        .env("H8S_NODE_NAME", &n.name)
        .env("H8S_NODE_IP", &n.ip)
        .env("H8S_ROOT", &n.root)
        .env("H8S_NET_DIR", &n.net)
        .env("H8S_NET_EGRESS", "false")
        .env("H8S_BOOT_TIMEOUT", "120")
        .env(
            "H8S_LOG",
            std::env::var("H8S_TEST_AGENT_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&n.log)
                .unwrap(),
        ));
        let mut child = spawn_kept(cmd);
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_default();
        assert!(
            line.starts_with("ready agent"),
            "agent {} said {line:?}; see {}",
            n.name,
            n.log.display()
        );
        *n.agent.lock().unwrap() = Some(child);
    }

    /// Powers node `n` off: SIGKILL to its agent, every other process in its network
    /// namespace (pod supervisors) and its pod VMs' QEMU processes, by PID.
    pub fn kill_node(&self, n: &Node, _switch: &RwLockWriteGuard<'_, ()>) {
        if let Some(mut c) = n.agent.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_netns_and_vms(&n.netns, &n.root);
    }

    /// Waits until node `n` is Ready.
    pub fn wait_node_ready(&self, n: &Node, limit: Duration) {
        wait(limit, &format!("node {} Ready", n.name), || {
            let node = self.json(&["get", "node", &n.name]).ok()?;
            condition(&node, "Ready").then_some(())
        });
    }

    /// A fresh namespace for one test (`NAME-PID`).
    pub fn namespace(&self, name: &str) -> String {
        let ns = format!("{name}-{}", std::process::id() % 100_000);
        self.kubectl(&["create", "namespace", &ns]);
        ns
    }

    /// kubectl 1.33: (success, stdout, stderr).
    pub fn kubectl_out(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let o = self.server.kubectl_out("1.33", args, stdin);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// kubectl 1.33, expected to succeed: stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.server.kubectl("1.33", args)
    }

    /// `kubectl get … -o json`.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (ok, out, err) = self.kubectl_out(&a, None);
        if !ok {
            return Err(err);
        }
        serde_json::from_str(&out).map_err(|e| e.to_string())
    }

    /// `kubectl -n NS apply -f -`.
    pub fn apply(&self, ns: &str, yaml: &str) {
        let (ok, _, err) = self.kubectl_out(&["-n", ns, "apply", "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {err}\n{yaml}");
    }

    /// The pods of `ns` (items of `kubectl get pods`), optionally with a label selector.
    pub fn pods(&self, ns: &str, selector: Option<&str>) -> Vec<Value> {
        let mut a = vec!["-n", ns, "get", "pods"];
        if let Some(s) = selector {
            a.extend(["-l", s]);
        }
        self.json(&a)
            .ok()
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until `ns` has `count` pods matching `selector` that are Running and Ready
    /// with an IP; returns them.
    pub fn wait_running(
        &self,
        ns: &str,
        selector: &str,
        count: usize,
        limit: Duration,
    ) -> Vec<Value> {
        wait(limit, &format!("{count} pods {selector} Running"), || {
            let ps: Vec<Value> = self
                .pods(ns, Some(selector))
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let ok = ps.len() == count
                && ps.iter().all(|p| {
                    p["status"]["phase"] == "Running"
                        && condition(p, "Ready")
                        && p["status"]["podIP"].is_string()
                });
            ok.then_some(ps)
        })
    }

    /// Pod VM records on node `n` (its runtime's `pods/*/pod.json`).
    pub fn vms(&self, n: &Node) -> Vec<Value> {
        vm_records(&n.root)
    }

    /// Deletes the workloads and pods of `ns` and waits until no node has a VM of them
    /// left; then deletes the namespace.
    pub fn cleanup(&self, ns: &str) {
        self.kubectl(&[
            "-n",
            ns,
            "delete",
            "deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs,replicationcontrollers",
            "--all",
            "--cascade=orphan",
        ]);
        self.kubectl(&["-n", ns, "delete", "pod", "--all", "--grace-period=1"]);
        wait(Duration::from_secs(120), "the pod VMs to go", || {
            self.nodes
                .iter()
                .all(|n| {
                    !self
                        .vms(n)
                        .iter()
                        .any(|r| r["config"]["labels"]["io.kubernetes.pod.namespace"] == ns)
                })
                .then_some(())
        });
        self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
}

/// Whether `obj` has condition `kind` with status True.
pub fn condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Polls `f` every 500 ms until it gives a value; panics after `limit`.
pub fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn vm_records(root: &Path) -> Vec<Value> {
    std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("pod.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The start time (clock ticks after boot, `/proc/PID/stat` field 22) of `pid`.
fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILL to every process in `netns`, and to the QEMU (and supervisor) recorded in each
/// pod VM record under `root` if still the same process (PID and start time).
fn kill_netns_and_vms(netns: &str, root: &Path) {
    let pids = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for p in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2) on a process of the test's own network namespace.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    for r in vm_records(root) {
        for k in ["qemu", "shim"] {
            let (Some(pid), Some(start)) = (r[k]["pid"].as_u64(), r[k]["start"].as_u64()) else {
                continue;
            };
            if start_time(pid as u32) == Some(start) {
                // SAFETY: kill(2) on a pod VM process this cluster started (PID and start
                // time checked).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// What h8s made for `node` that outlives its namespace: the fabric's gateway namespaces.
fn gateway_netns(node: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("h8s-gw-{node}-");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Kills (SIGKILL) every process whose command line names `root`: template builders and
/// their QEMUs outlive the agent that started them, by design, so a test cleans them up.
fn kill_by_cmdline(root: &Path) {
    let needle = root.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in procs.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid as u32 != std::process::id() && String::from_utf8_lossy(&cmd).contains(&needle) {
            // SAFETY: kill(2) on a process whose command line names this test's own root.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

extern "C" fn teardown() {
    let Some(t) = TEARDOWN.lock().ok().and_then(|mut t| t.take()) else {
        return;
    };
    for (name, netns, root) in &t.nodes {
        kill_netns_and_vms(netns, root);
        kill_by_cmdline(root);
        for gw in gateway_netns(name) {
            kill_netns_and_vms(&gw, Path::new("/nonexistent"));
            let _ = Command::new("ip").args(["netns", "del", &gw]).status();
        }
    }
    if let Some(pid) = t.server_pid {
        // SAFETY: kill(2) on the server this harness started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if let Some(d) = &t.server_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    std::thread::sleep(Duration::from_millis(500));
    for (_, netns, _) in &t.nodes {
        let _ = Command::new("ip").args(["netns", "del", netns]).status();
    }
    let _ = Command::new("ip").args(["link", "del", &t.bridge]).status();
    // Check: nothing of ours is left (a killed QEMU may take a moment to be gone).
    let mut left = Vec::new();
    for _ in 0..50 {
        let alive = t.nodes.iter().any(|(_, _, root)| {
            vm_records(root).iter().any(|r| {
                let (pid, start) = (r["qemu"]["pid"].as_u64(), r["qemu"]["start"].as_u64());
                pid.is_some() && start.is_some() && start_time(pid.unwrap() as u32) == start
            })
        });
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, netns, root) in &t.nodes {
        let netns_list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if netns_list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(netns.as_str()))
        {
            left.push(format!("netns {netns}"));
        }
        left.extend(
            gateway_netns(name)
                .into_iter()
                .map(|g| format!("netns {g}")),
        );
        for r in vm_records(root) {
            if let (Some(pid), Some(start)) =
                (r["qemu"]["pid"].as_u64(), r["qemu"]["start"].as_u64())
            {
                if start_time(pid as u32) == Some(start) {
                    left.push(format!("QEMU pid {pid}"));
                }
            }
        }
    }
    if Path::new("/sys/class/net").join(&t.bridge).exists() {
        left.push(format!("bridge {}", t.bridge));
    }
    if !left.is_empty() {
        eprintln!("cluster_support teardown: left behind: {left:?}");
    }
}
