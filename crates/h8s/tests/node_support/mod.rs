//! One node for a test binary: a real `h8s server` with its in-process node agent,
//! controllers and scheduler, pod VMs under QEMU (TCG here) from the busybox image of
//! `scripts/setup`, in a temp dir of its own (data, runtime root, Networks), kubectl 1.33 as
//! the client. The single-node VM suites (`agent_vm`, `volumes`, `services`,
//! `stream_server`) start it with their own flags; `cluster_support` is the multi-node
//! counterpart (agents in network namespaces).
//!
//! What every suite shares: shortened agent timers, cold boots unless a suite asks for
//! templates, a fabric named after the node with gateway uplinks of its own (a stale uplink
//! of another fabric on the host would otherwise take the replies), and one exit path that
//! stops the server, kills what still runs under the dir (supervisors, QEMU, template
//! holders: pod VMs outlive their agent by design) and removes the node's Networks.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// How long one kubectl may take before the test fails (TCG boots, loaded CI machines).
const KUBECTL_LIMIT: Duration = Duration::from_secs(120);

pub fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

/// What a suite adds to the shared start.
#[derive(Default)]
pub struct Opts {
    /// Names the node (`TAG-PID`) and its temp dir (`/tmp/h8s-TAG…`); short, as unix socket
    /// paths under the runtime root must stay below 108 bytes.
    pub tag: &'static str,
    /// More `h8s server` flags (pod network, backoffs, volume pool…).
    pub args: Vec<String>,
    /// More environment for the server (a later value of a name wins).
    pub env: Vec<(String, String)>,
    /// More names the busybox image is imported under (a manifest naming `nginx`).
    pub aliases: Vec<&'static str>,
    /// Pods start from VM templates (the agent's default). Off unless a suite is about
    /// templates: a template build is a whole boot whose holder outlives the agent.
    pub templates: bool,
    /// Runs at exit, after the server has stopped, with the node's dir (stop a Ceph cluster).
    pub at_exit: Option<fn(&Path)>,
}

pub struct Node {
    /// The temp dir: `data`, `r` (runtime root), `net`, `server.log`.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The Node's name (`TAG-PID`).
    pub name: String,
    _child: Child,
}

struct Teardown {
    pid: u32,
    dir: PathBuf,
    env: Vec<(String, String)>,
    at_exit: Option<fn(&Path)>,
}

static TEARDOWN: OnceLock<Teardown> = OnceLock::new();

/// A fresh temp dir for a node (`/tmp/h8s-TAG…`), kept: the exit path removes what runs in
/// it, the files stay for a failed run's post-mortem.
pub fn node_dir(tag: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(&format!("h8s-{tag}"))
        .tempdir_in("/tmp")
        .unwrap()
        .keep()
}

/// This node's gateway uplinks, disjoint from other fabrics on the host (100.64.0.0/16,
/// the default, and other test runs): replies to a gateway must leave through its own uplink.
pub fn transit() -> String {
    let pid = std::process::id();
    format!("100.{}.{}.0/24", 65 + pid % 63, (pid / 63) % 256)
}

/// Starts the node in a fresh dir.
pub fn start(opts: Opts) -> Node {
    start_in(node_dir(opts.tag), opts)
}

/// Starts the node in `dir` (which a suite may have prepared, e.g. with a Ceph cluster).
pub fn start_in(dir: PathBuf, opts: Opts) -> Node {
    for f in ["guest/vmlinuz", "guest/initramfs.img", "images/busybox-oci"] {
        assert!(
            cache().join(f).exists(),
            "needs {f} in the cache: run scripts/setup"
        );
    }
    let data = dir.join("data");
    let names = std::iter::once(None).chain(opts.aliases.iter().map(|a| Some(*a)));
    for name in names {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_h8s"));
        cmd.args(["image", "import"]);
        if let Some(n) = name {
            cmd.args(["--name", n]);
        }
        let imp = cmd
            .arg(cache().join("images/busybox-oci"))
            .env("H8S_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(
            imp.status.success(),
            "importing busybox as {name:?}: {}",
            String::from_utf8_lossy(&imp.stderr)
        );
    }
    let name = format!("{}-{}", opts.tag, std::process::id());
    // What the server and the exit path's `h8s net reset` share.
    let mut env: Vec<(String, String)> = vec![
        ("H8S_ROOT".into(), dir.join("r").display().to_string()),
        ("H8S_NET_DIR".into(), dir.join("net").display().to_string()),
        ("H8S_NODE_NAME".into(), name.clone()),
        ("H8S_NET_TRANSIT".into(), transit()),
    ];
    if !opts.templates {
        env.push(("H8S_TEMPLATES".into(), "0".into()));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h8s"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--node-name", &name])
        .args(["--streaming-port", "0"])
        .args(["--pod-sync-period", "500ms"])
        .args(["--node-status-update-frequency", "2s"])
        .args(["--node-lease-renew-interval", "2s"])
        .args(&opts.args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("H8S_NET_EGRESS", "false")
        .env("H8S_BOOT_TIMEOUT", "120")
        .env("H8S_LOG", "info")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(dir.join("server.log"))
                .map(Stdio::from)
                .unwrap_or(Stdio::inherit()),
        );
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe: the server ends with the tests.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG follows the thread that forked: fork from one that lives as long as
    // the test process, not from whichever test thread happens to start the node.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    let mut child = rx.recv().unwrap().expect("spawning h8s server");
    let _ = TEARDOWN.set(Teardown {
        pid: child.id(),
        dir: dir.clone(),
        env,
        at_exit: opts.at_exit,
    });
    // SAFETY: registering a plain extern "C" fn with atexit(3).
    unsafe { libc::atexit(teardown) };
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("ready"), "server said {line:?}");
    let _url = parts.next().unwrap();
    let kubeconfig = PathBuf::from(parts.next().unwrap());
    eprintln!("node {name} in {} (server log: server.log)", dir.display());
    let n = Node {
        dir,
        kubeconfig,
        name,
        _child: child,
    };
    wait(Duration::from_secs(60), "the node to register", || {
        n.json(&["get", "node", &n.name]).ok()
    });
    n
}

/// Kills (SIGKILL) every process but this one whose command line names `dir`: supervisors,
/// QEMU and template holders outlive the agent that started them, by design.
pub fn kill_by_cmdline(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid as u32 != std::process::id() && String::from_utf8_lossy(&cmd).contains(&needle) {
            // SAFETY: kill(2) on a process whose command line names this test's own dir.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

extern "C" fn teardown() {
    let Some(t) = TEARDOWN.get() else {
        return;
    };
    // SAFETY: kill(2) on the server we started; waitpid(2) on our own child.
    unsafe { libc::kill(t.pid as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let mut status = 0;
        // SAFETY: as above.
        if unsafe { libc::waitpid(t.pid as i32, &mut status, libc::WNOHANG) } != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_by_cmdline(&t.dir);
    // The node's Networks (bridges, VXLANs, gateway namespaces, rules).
    let _ = Command::new(env!("CARGO_BIN_EXE_h8s"))
        .args(["net", "reset", "--yes"])
        .envs(t.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Some(f) = t.at_exit {
        f(&t.dir);
    }
}

impl Node {
    /// The pod VM runtime's state root (`pods/<id>/pod.json`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("r")
    }

    /// kubectl `ver` (1.27…1.33) on this node's kubeconfig, with a cache dir of its own.
    pub fn kubectl_cmd(&self, ver: &str) -> Command {
        let mut c = Command::new(PathBuf::from(KUBECTL_DIR).join(format!("kubectl.{ver}")));
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join(format!("kcache-{ver}")))
            .env_remove("KUBECONFIG");
        c
    }

    /// Runs kubectl `ver` with `args` (and `stdin`), failing the test if it hangs.
    pub fn run(&self, ver: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.kubectl_cmd(ver);
        c.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        wait_timeout(child, KUBECTL_LIMIT)
    }

    /// kubectl 1.33: (success, stdout, stderr).
    pub fn kubectl_out(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let o = self.run("1.33", args, stdin.map(str::as_bytes));
        (o.status.success(), text(&o.stdout), text(&o.stderr))
    }

    /// kubectl 1.33, expected to succeed: stdout.
    #[track_caller]
    pub fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl_out(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    #[track_caller]
    pub fn apply(&self, ns: &str, yaml: &str) {
        let (ok, _, err) = self.kubectl_out(&["-n", ns, "apply", "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {err}\n{yaml}");
    }

    /// `kubectl … -o json`.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (ok, out, err) = self.kubectl_out(&a, None);
        if !ok {
            return Err(err);
        }
        serde_json::from_str(&out).map_err(|e| e.to_string())
    }

    /// Runs `cmd` in `pod`'s container (kubectl 1.33 exec): (success, stdout + stderr).
    pub fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> (bool, String) {
        let mut a = vec!["-n", ns, "exec", pod, "--"];
        a.extend_from_slice(cmd);
        let o = self.run("1.33", &a, None);
        (
            o.status.success(),
            format!("{}{}", text(&o.stdout), text(&o.stderr)),
        )
    }

    /// A fresh namespace for one test (`NAME-PID`).
    pub fn namespace(&self, name: &str) -> String {
        let ns = format!("{name}-{}", std::process::id() % 100000);
        self.kubectl(&["create", "namespace", &ns]);
        ns
    }

    /// The pod, or null.
    pub fn pod(&self, ns: &str, name: &str) -> Value {
        self.json(&["-n", ns, "get", "pod", name])
            .unwrap_or(Value::Null)
    }

    /// Pod VMs of `ns` the runtime still has (its pod records are labelled with the
    /// namespace).
    pub fn vms_of(&self, ns: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let rec: Value = std::fs::read(e.path().join("pod.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            if rec["config"]["labels"]["io.kubernetes.pod.namespace"] == ns {
                out.push(e.path());
            }
        }
        out
    }

    /// Deletes the namespace's pods and checks nothing of them is left: no pod VM record (the
    /// runtime removes it after killing QEMU and the supervisor), no address on the node's
    /// Networks; then deletes the namespace.
    pub fn cleanup(&self, ns: &str) {
        let names: Vec<String> = self
            .json(&["-n", ns, "get", "pods"])
            .ok()
            .and_then(|l| {
                l["items"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        self.kubectl(&[
            "-n",
            ns,
            "delete",
            "pod",
            "--all",
            "--grace-period=1",
            "--wait=true",
        ]);
        wait(Duration::from_secs(60), "the pod VMs to go", || {
            self.vms_of(ns).is_empty().then_some(())
        });
        let mut nets = String::new();
        for e in std::fs::read_dir(self.dir.join("net/networks"))
            .into_iter()
            .flatten()
            .flatten()
        {
            nets.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        for n in names {
            assert!(
                !nets.contains(&format!("\"pod\": \"{n}-"))
                    && !nets.contains(&format!("\"pod\":\"{n}-")),
                "pod {n} still has an address on the pod network"
            );
        }
        self.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
}

/// The first container's status.
pub fn container_status(p: &Value) -> Value {
    p["status"]["containerStatuses"][0].clone()
}

/// Polls `f` every 300 ms until it returns a value; fails the test after `limit`.
#[track_caller]
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
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits for `child`, reading its output meanwhile; kills it and fails the test after
/// `limit`.
pub fn wait_timeout(mut child: Child, limit: Duration) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let e = String::from_utf8_lossy(&err.join().unwrap()).to_string();
            panic!("timed out; stderr {e:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The output's stdout, failing the test (with both streams) if the command failed.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout {}\nstderr {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /index.html from a port on loopback (a port-forward): the body, or "" on failure.
pub fn curl(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    text(&out.stdout)
}
