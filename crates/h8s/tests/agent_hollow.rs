//! Hollow nodes: `h8s agent --hollow N` against a real `h8s server` (no agent of its own)
//! registers N marked Nodes that renew their Leases and report bound pods Running without
//! starting anything; a deleted pod is finished off. No VMs.
//!
//! On the same server (one per test binary, its node timers shortened by flags), kubectl
//! 1.27, 1.30 and 1.33 drain a node past a PodDisruptionBudget (evictions refused with 429
//! until the budget allows them, `cordon`/`uncordon`), and a node whose hollow agent is
//! killed goes Unknown, is tainted unreachable, and its pods are evicted once their
//! (shortened) default tolerations run out and replaced on a healthy node.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";
/// Hollow nodes of the agent that stays up for the whole binary.
const STEADY: usize = 7;

fn kubectl_bin(ver: &str) -> String {
    format!("{KUBECTL_DIR}/kubectl.{ver}")
}

/// Spawns a child that ends with this process (PR_SET_PDEATHSIG fires when the spawning
/// *thread* ends, so shared children are spawned from a thread that never ends) and waits
/// for its `ready` line.
fn spawn_ready(cmd: &mut Command) -> (Child, String) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe: the child ends with its parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("H8S_LOG", "warn")
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    assert!(line.starts_with("ready"), "unexpected first line {line:?}");
    (child, line)
}

/// A job for the keeper thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on a thread that lives as long as the process, so the children it spawns are
/// not sent their death signal when the calling test's thread ends.
fn on_keeper<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    static KEEPER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        Mutex::new(tx)
    });
    let (rtx, rrx) = std::sync::mpsc::channel();
    tx.lock()
        .unwrap()
        .send(Box::new(move || {
            let _ = rtx.send(f());
        }))
        .unwrap();
    rrx.recv().expect("keeper thread")
}

struct Shared {
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// The server and the steady hollow agent, killed by PID at exit.
    _children: Mutex<Vec<Child>>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

extern "C" fn cleanup() {
    if let Some(s) = SHARED.get() {
        if let Ok(mut cs) = s._children.lock() {
            for c in cs.iter_mut().rev() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// The server every test of this binary shares (node timers shortened: 3 s grace, default
/// tolerations of 3 s) and a hollow agent of `STEADY` nodes `steady-0` … that stays up.
fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let d = dir.clone();
        let (children, kubeconfig) = on_keeper(move || {
            let (server, line) = spawn_ready(
                Command::new(env!("CARGO_BIN_EXE_h8s"))
                    .args(["server", "--listen", "127.0.0.1:0", "--disable-agent"])
                    .args(["--leader-elect=false", "--data-dir"])
                    .arg(d.join("data"))
                    .args(["--node-monitor-grace-period", "3s"])
                    .args(["--node-monitor-period", "500ms"])
                    .args(["--default-not-ready-toleration-seconds", "3"])
                    .args(["--default-unreachable-toleration-seconds", "3"])
                    .args(["--controllers-resync-period", "5s"]),
            );
            let kc = PathBuf::from(line.split_whitespace().nth(2).unwrap());
            let (agent, line) = spawn_ready(&mut hollow_agent(&kc, &d, "steady-", STEADY));
            assert_eq!(line.trim(), format!("ready hollow {STEADY}"));
            (vec![server, agent], kc)
        });
        // SAFETY: atexit with a plain extern "C" function that does not unwind.
        unsafe { libc::atexit(cleanup) };
        Shared {
            dir,
            kubeconfig,
            _children: Mutex::new(children),
        }
    })
}

fn hollow_agent(kc: &Path, dir: &Path, prefix: &str, n: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_h8s"));
    c.args(["agent", "--hollow", &n.to_string(), "--kubeconfig"])
        .arg(kc)
        .args(["--hollow-prefix", prefix, "--data-dir"])
        .arg(dir.join(format!("agent-{prefix}")))
        .args(["--node-lease-renew-interval", "1s"])
        .args(["--node-status-update-frequency", "2s"]);
    c
}

/// Runs kubectl `ver` (optionally with stdin); returns (success, stdout, stderr).
fn k(ver: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let s = shared();
    let mut c = Command::new(kubectl_bin(ver));
    c.arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(s.dir.join(format!("cache-{ver}")))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(ver: &str, args: &[&str]) -> String {
    let (ok, out, err) = k(ver, args, None);
    assert!(ok, "kubectl {ver} {args:?}: {err}");
    out
}

fn apply(ver: &str, yaml: &str) {
    let (ok, _, err) = k(ver, &["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl {ver} apply: {err}\n{yaml}");
}

fn json(ver: &str, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out, _) = k(ver, &a, None);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The pods of `app` in `ns`: (name, node, ready, terminating).
fn app_pods(ver: &str, ns: &str, app: &str) -> Vec<(String, String, bool, bool)> {
    let sel = format!("app={app}");
    let Some(list) = json(ver, &["-n", ns, "get", "pods", "-l", &sel]) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
                !p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

/// A Deployment of `replicas` pods of `app` that may only run on `nodes`.
fn deployment(ns: &str, app: &str, replicas: u32, nodes: &[&str]) -> String {
    let values: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      labels:\n        app: {app}\n    spec:\n      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - key: kubernetes.io/hostname\n                operator: In\n                values: [{}]\n      containers:\n      - name: c\n        image: busybox\n",
        values.join(", ")
    )
}

#[test]
fn hollow_nodes_heartbeat_and_run_pods_without_vms() {
    let v = "1.33";
    let nodes = wait(Duration::from_secs(20), "the steady nodes", || {
        let l = json(v, &["get", "nodes", "-l", "h8s.io/hollow=true"])?;
        let steady: Vec<Value> = l["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("steady-"))
            })
            .cloned()
            .collect();
        (steady.len() == STEADY).then_some(steady)
    });
    for n in &nodes {
        let info = &n["status"]["nodeInfo"];
        assert!(info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("hollow://"));
        assert_eq!(info["kubeletVersion"], "v1.33.0-h8s");
        assert!(n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
    }
    // Leases are renewed.
    let renew = |n: &str| {
        json(v, &["-n", "kube-node-lease", "get", "lease", n])
            .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_string))
    };
    let t1 = wait(Duration::from_secs(10), "a lease", || renew("steady-2"));
    wait(Duration::from_secs(10), "a renewal", || {
        renew("steady-2").filter(|t| *t != t1)
    });
    // A pod bound to a hollow node is reported Running and Ready with an IP.
    ok(v, &["create", "namespace", "basic"]);
    apply(
        v,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: basic\nspec:\n  nodeName: steady-6\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let p = wait(Duration::from_secs(20), "the pod Running", || {
        let p = json(v, &["-n", "basic", "get", "pod", "p"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert!(p["status"]["podIP"]
        .as_str()
        .unwrap()
        .starts_with("100.64."));
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    // Deleting it finishes (the hollow kubelet confirms with grace 0).
    ok(
        v,
        &[
            "-n",
            "basic",
            "delete",
            "pod",
            "p",
            "--wait=true",
            "--timeout=30s",
        ],
    );
    assert!(json(v, &["-n", "basic", "get", "pod", "p"]).is_none());
}

fn unschedulable(ver: &str, node: &str) -> bool {
    let n = json(ver, &["get", "node", node]).expect("node");
    n["spec"]["unschedulable"] == true
}

/// `kubectl drain` of node `a` while a PodDisruptionBudget allows no disruption: the node is
/// cordoned, evictions are refused (429, kube's message) and retried by kubectl; once the
/// Deployment is scaled up on node `b` the budget allows them one at a time, the pods move to
/// `b`, and the drain ends. `uncordon` makes `a` schedulable again.
fn drain_flow(ver: &str, a: &str, b: &str) {
    let ns = format!("drain-{}", ver.replace('.', "-"));
    ok(ver, &["create", "namespace", &ns]);
    // Both pods go to `a`: `b` is cordoned while they are placed.
    let out = ok(ver, &["cordon", b]);
    assert!(out.contains("cordoned"), "{out}");
    assert!(unschedulable(ver, b));
    apply(ver, &deployment(&ns, "web", 2, &[a, b]));
    apply(
        ver,
        &format!("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: web\n"),
    );
    wait(Duration::from_secs(60), "two ready pods on a", || {
        let p = app_pods(ver, &ns, "web");
        (p.len() == 2 && p.iter().all(|(_, n, r, _)| n == a && *r)).then_some(())
    });
    wait(Duration::from_secs(30), "the budget's status", || {
        let s = json(ver, &["-n", &ns, "get", "pdb", "web"])?["status"].clone();
        (s["currentHealthy"] == 2 && s["desiredHealthy"] == 2 && s["disruptionsAllowed"] == 0)
            .then_some(())
    });
    let out = ok(ver, &["uncordon", b]);
    assert!(out.contains("uncordoned"), "{out}");
    assert!(!unschedulable(ver, b));
    // An eviction now is refused with 429 and kube's words.
    let victim = app_pods(ver, &ns, "web")[0].0.clone();
    let eviction = format!(
        "{{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{{\"name\":\"{victim}\",\"namespace\":\"{ns}\"}}}}"
    );
    let path = format!("/api/v1/namespaces/{ns}/pods/{victim}/eviction");
    let (evicted, _, err) = k(ver, &["create", "--raw", &path, "-f", "-"], Some(&eviction));
    assert!(!evicted);
    assert!(
        err.contains("TooManyRequests")
            && err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );

    // The drain starts: `a` is cordoned, and nothing is evicted while the budget says no.
    let s = shared();
    let drain = Command::new(kubectl_bin(ver))
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["drain", a, "--ignore-daemonsets", "--timeout=120s"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl drain");
    wait(Duration::from_secs(20), "drain cordons a", || {
        unschedulable(ver, a).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = app_pods(ver, &ns, "web");
    assert!(
        p.len() == 2 && p.iter().all(|(_, n, r, t)| n == a && *r && !*t),
        "the budget let a pod go: {p:?}"
    );
    // One more replica (on `b`, the only schedulable node) lets the budget allow one
    // disruption at a time: the drain evicts, the replacements land on `b`, the drain ends.
    ok(
        ver,
        &["-n", &ns, "scale", "deployment", "web", "--replicas=3"],
    );
    let o = drain.wait_with_output().expect("drain output");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "drain failed:\n{out}\n{err}");
    assert!(out.contains(&format!("node/{a} drained")), "{out}");
    assert!(out.contains("evicted"), "{out}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "kubectl saw no refused eviction:\n{err}"
    );
    wait(Duration::from_secs(60), "three ready pods on b", || {
        let p = app_pods(ver, &ns, "web");
        (p.len() == 3 && p.iter().all(|(_, n, r, t)| n == b && *r && !*t)).then_some(())
    });
    // Uncordon: `a` takes pods again, and its unschedulable taint goes.
    ok(ver, &["uncordon", a]);
    assert!(!unschedulable(ver, a));
    wait(
        Duration::from_secs(20),
        "a's unschedulable taint removed",
        || {
            let n = json(ver, &["get", "node", a])?;
            let t = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            (!t.iter()
                .any(|t| t["key"] == "node.kubernetes.io/unschedulable"))
            .then_some(())
        },
    );
    ok(ver, &["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn drain_respects_a_disruption_budget_kubectl_1_27() {
    drain_flow("1.27", "steady-0", "steady-1");
}

#[test]
fn drain_respects_a_disruption_budget_kubectl_1_30() {
    drain_flow("1.30", "steady-2", "steady-3");
}

#[test]
fn drain_respects_a_disruption_budget_kubectl_1_33() {
    drain_flow("1.33", "steady-4", "steady-5");
}

/// A node whose agent dies: after the grace period it is Ready=Unknown and tainted
/// unreachable; its pods, which the DefaultTolerationSeconds admission gave 3 s (flag) for
/// that taint, are evicted after them, and their ReplicaSet replaces them on a healthy node.
#[test]
fn a_lost_node_has_its_pods_replaced_elsewhere() {
    let v = "1.33";
    let s = shared();
    let (kc, dir) = (s.kubeconfig.clone(), s.dir.clone());
    let mut doomed = on_keeper(move || spawn_ready(&mut hollow_agent(&kc, &dir, "doomed-", 1)).0);
    let ns = "lost";
    let (a, b) = ("doomed-0", "steady-6");
    ok(v, &["create", "namespace", ns]);
    ok(v, &["cordon", b]);
    apply(v, &deployment(ns, "db", 2, &[a, b]));
    let first = wait(
        Duration::from_secs(60),
        "two ready pods on the doomed node",
        || {
            let p = app_pods(v, ns, "db");
            (p.len() == 2 && p.iter().all(|(_, n, r, _)| n == a && *r)).then_some(p)
        },
    );
    ok(v, &["uncordon", b]);
    // Admission gave every pod the flag's toleration seconds for the two taints.
    let pod = json(v, &["-n", ns, "get", "pod", &first[0].0]).unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            pod["spec"]["tolerations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == key
                    && t["effect"] == "NoExecute"
                    && t["tolerationSeconds"] == 3),
            "{key}: {}",
            pod["spec"]["tolerations"]
        );
    }
    // The agent dies; its lease is no longer renewed.
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    wait(
        Duration::from_secs(30),
        "the node Unknown and tainted",
        || {
            let n = json(v, &["get", "node", a])?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["status"]
                .clone();
            let taints: Vec<String> = n["spec"]["taints"]
                .as_array()?
                .iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap(),
                        t["effect"].as_str().unwrap()
                    )
                })
                .collect();
            (ready == "Unknown"
                && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()))
            .then_some(())
        },
    );
    // After the 3 s tolerations the pods are evicted and replaced on the healthy node. The
    // evicted ones stay Terminating: no kubelet is left to confirm them (as in kube).
    wait(
        Duration::from_secs(60),
        "two ready replacements on b",
        || {
            let p = app_pods(v, ns, "db");
            let live: Vec<_> = p.iter().filter(|(_, _, _, t)| !*t).collect();
            (live.len() == 2 && live.iter().all(|(_, n, r, _)| n == b && *r)).then_some(())
        },
    );
    for (name, _, _, _) in &first {
        let p = json(v, &["-n", ns, "get", "pod", name]).expect("the evicted pod stays");
        assert!(!p["metadata"]["deletionTimestamp"].is_null(), "{name}");
        assert!(
            p["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "DisruptionTarget"
                    && c["reason"] == "DeletionByTaintManager"),
            "{name}: {}",
            p["status"]["conditions"]
        );
    }
    let events: Vec<String> = json(v, &["-n", ns, "get", "events"]).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "TaintManagerEviction")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let events = events.join("\n");
    for (name, _, _, _) in &first {
        assert!(
            events.contains(&format!("Marking for deletion Pod {ns}/{name}")),
            "{events}"
        );
    }
    ok(v, &["delete", "node", a]);
}
