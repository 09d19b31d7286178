//! Node operations end to end: `metrics.k8s.io` for `kubectl top` (1.27 and 1.33) from
//! the agent's stats of real pod VMs, and bounded container logs (a pod printing without
//! end stays within its cap). One real `h8s server` with its in-process agent per test
//! binary; pod VMs under QEMU (TCG here) from the busybox image of `scripts/setup`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    node: String,
    _child: Child,
}

impl Cluster {
    fn root(&self) -> PathBuf {
        self.dir.join("r")
    }
}

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(start)
}

fn start() -> Cluster {
    for f in ["guest/vmlinuz", "guest/initramfs.img", "images/busybox-oci"] {
        assert!(
            cache().join(f).exists(),
            "needs {f} in the cache: run scripts/setup"
        );
    }
    // Short: unix socket paths under the runtime root must stay below 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("h8s-no")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let data = dir.join("data");
    let imp = Command::new(env!("CARGO_BIN_EXE_h8s"))
        .args(["image", "import"])
        .arg(cache().join("images/busybox-oci"))
        .env("H8S_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(
        imp.status.success(),
        "importing busybox: {}",
        String::from_utf8_lossy(&imp.stderr)
    );
    let pid = std::process::id();
    let node = format!("nodeops-{pid}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h8s"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--node-name", &node])
        .args(["--streaming-port", "0"])
        .args(["--restart-backoff", "2s", "--restart-backoff-max", "8s"])
        .args([
            "--image-pull-backoff",
            "1s",
            "--image-pull-backoff-max",
            "4s",
        ])
        .args(["--pod-sync-period", "500ms"])
        .args(["--node-status-update-frequency", "2s"])
        .args(["--node-lease-renew-interval", "2s"])
        .args(["--volume-refresh-period", "2s"])
        .args(["--stats-interval", "2s"])
        .args(["--metrics-cache-ttl", "1s"])
        .args(["--pod-network", &format!("nop{}", pid % 100000)])
        .args(["--pod-cidr", &format!("10.{}.0.0/16", 100 + pid % 50)])
        .args(["--pod-network-vni", &(15000 + pid % 10000).to_string()])
        .env("H8S_ROOT", dir.join("r"))
        .env("H8S_NET_DIR", dir.join("net"))
        .env("H8S_NET_EGRESS", "false")
        .env("H8S_BOOT_TIMEOUT", "120")
        .env("H8S_LOG", "info")
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
    // the test process, not from whichever test thread happens to start the cluster.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    let mut child = rx.recv().unwrap().expect("spawning h8s server");
    // At exit: stop the server, then take the pod network's devices down (the tests have
    // removed their pods; the Network's bridge, gateway and rules are left otherwise).
    let _ = TEARDOWN.set((child.id(), dir.clone(), format!("nop{}", pid % 100000)));
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
    eprintln!("cluster in {} (server log: server.log)", dir.display());
    let c = Cluster {
        dir,
        kubeconfig,
        node,
        _child: child,
    };
    wait(Duration::from_secs(30), "the node to register", || {
        kubectl_json(&c, &["get", "node", &c.node]).ok()
    });
    c
}

static TEARDOWN: OnceLock<(u32, PathBuf, String)> = OnceLock::new();

extern "C" fn teardown() {
    let Some((pid, dir, net)) = TEARDOWN.get() else {
        return;
    };
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new(env!("CARGO_BIN_EXE_h8s"))
        .args(["net", "rm", "--force", net])
        .env("H8S_NET_DIR", dir.join("net"))
        .env("H8S_ROOT", dir.join("r"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn kubectl_out(c: &Cluster, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().unwrap();
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = kubectl_out(c, args, None);
    assert!(ok, "kubectl {args:?} failed: {err}");
    out
}

fn apply(c: &Cluster, ns: &str, yaml: &str) {
    let (ok, _, err) = kubectl_out(c, &["-n", ns, "apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {err}\n{yaml}");
}

fn kubectl_json(c: &Cluster, args: &[&str]) -> Result<Value, String> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out, err) = kubectl_out(c, &a, None);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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

fn namespace(c: &Cluster, name: &str) -> String {
    let ns = format!("{name}-{}", std::process::id() % 100000);
    kubectl(c, &["create", "namespace", &ns]);
    ns
}

fn pod(c: &Cluster, ns: &str, name: &str) -> Value {
    kubectl_json(c, &["-n", ns, "get", "pod", name]).unwrap_or(Value::Null)
}

/// Pod VMs of `ns` the runtime still has (its pod records are labelled with the namespace).
fn vms_of(c: &Cluster, ns: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(c.root().join("pods"))
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
/// runtime removes it after killing QEMU and the supervisor), no address or tap on the pod
/// network.
fn cleanup(c: &Cluster, ns: &str) {
    let names: Vec<String> = kubectl_json(c, &["-n", ns, "get", "pods"])
        .ok()
        .and_then(|l| {
            l["items"].as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    kubectl(
        c,
        &[
            "-n",
            ns,
            "delete",
            "pod",
            "--all",
            "--grace-period=1",
            "--wait=true",
        ],
    );
    wait(Duration::from_secs(60), "the pod VMs to go", || {
        vms_of(c, ns).is_empty().then_some(())
    });
    let mut nets = String::new();
    for e in std::fs::read_dir(c.dir.join("net/networks"))
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
    kubectl(c, &["delete", "namespace", ns, "--wait=false"]);
}

const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

fn kubectl_with(c: &Cluster, bin: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn bare_pod(name: &str, node: &str, labels: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

fn running(c: &Cluster, ns: &str, name: &str) -> bool {
    pod(c, ns, name)["status"]["phase"] == "Running"
}

/// `kubectl top` output as (name, cpu millicores, memory MiB) rows.
fn top_rows(out: &str) -> Vec<(String, u64, u64)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let cpu = f.get(1)?.strip_suffix('m')?.parse().ok()?;
            let mem = f
                .iter()
                .skip(2)
                .find_map(|x| x.strip_suffix("Mi"))?
                .parse()
                .ok()?;
            Some((f[0].to_string(), cpu, mem))
        })
        .collect()
}

#[test]
fn kubectl_top_reads_metrics_of_the_node_and_its_pod_vms() {
    let c = cluster();
    // Discovery lists the group, with both resources (kubectl top checks it first).
    let out = kubectl(
        c,
        &["api-resources", "--api-group=metrics.k8s.io", "-o", "name"],
    );
    assert!(
        out.contains("nodes.metrics.k8s.io") && out.contains("pods.metrics.k8s.io"),
        "{out}"
    );
    // The node: kubectl 1.27 and 1.33.
    for bin in [KUBECTL, KUBECTL_127] {
        let out = wait(Duration::from_secs(30), "kubectl top node", || {
            let (ok, out, _) = kubectl_with(c, bin, &["top", "node"]);
            (ok && top_rows(&out).iter().any(|r| r.0 == c.node)).then_some(out)
        });
        let row = top_rows(&out).into_iter().find(|r| r.0 == c.node).unwrap();
        assert!(row.2 > 0, "node memory {out}");
    }
    let (ok, out, err) = kubectl_out(
        c,
        &[
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", c.node),
        ],
        None,
    );
    assert!(ok, "{err}");
    let nm: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(nm["kind"], "NodeMetrics");
    assert!(nm["window"].as_str().unwrap().ends_with('s'));

    // Two pods: one spinning, one asleep.
    let ns = namespace(c, "top");
    apply(
        c,
        &ns,
        &bare_pod("busy", &c.node, "app: busy", "while :; do :; done"),
    );
    apply(
        c,
        &ns,
        &bare_pod("idle", &c.node, "app: idle", "sleep 3600"),
    );
    wait(Duration::from_secs(240), "both pods Running", || {
        (running(c, &ns, "busy") && running(c, &ns, "idle")).then_some(())
    });
    for bin in [KUBECTL, KUBECTL_127] {
        let out = wait(
            Duration::from_secs(60),
            "kubectl top pod with both pods",
            || {
                let (ok, out, _) = kubectl_with(c, bin, &["-n", &ns, "top", "pod"]);
                (ok && top_rows(&out).len() == 2).then_some(out)
            },
        );
        let rows = top_rows(&out);
        let busy = rows.iter().find(|r| r.0 == "busy").unwrap();
        let idle = rows.iter().find(|r| r.0 == "idle").unwrap();
        // The spinning guest costs its host a good part of a core; both VMs hold memory.
        assert!(busy.1 > idle.1 && busy.1 >= 100, "{out}");
        assert!(busy.2 > 0 && idle.2 > 0, "{out}");
        // Label selector and get by name.
        let (ok, out, err) = kubectl_with(c, bin, &["-n", &ns, "top", "pod", "-l", "app=idle"]);
        assert!(ok, "{err}");
        let rows = top_rows(&out);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0].0, "idle");
        let (ok, out, err) =
            kubectl_with(c, bin, &["-n", &ns, "top", "pod", "busy", "--containers"]);
        assert!(ok && out.contains("main"), "{out}{err}");
    }
    // All namespaces, and errors as Kubernetes words them.
    let (ok, out, _) = kubectl_with(c, KUBECTL, &["top", "pod", "-A"]);
    assert!(ok && out.contains("busy") && out.contains(&ns), "{out}");
    let (ok, _, err) = kubectl_out(
        c,
        &[
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/nothing"),
        ],
        None,
    );
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = kubectl_out(
        c,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nodeName%3Dx",
        ],
        None,
    );
    assert!(!ok && err.contains("field label not supported"), "{err}");
    cleanup(c, &ns);
}
