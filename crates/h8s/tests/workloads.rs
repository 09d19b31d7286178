//! The workload controllers through real kubectl (1.27, 1.30, 1.33) against one shared
//! `h8s server`: Deployments (create, scale, rollout, undo, restart, pause/resume,
//! `kubectl rollout status`), ReplicaSets and pods moving as in Kubernetes, a Job to
//! completion, a DaemonSet on every node, a StatefulSet's ordered names, a CronJob firing.
//!
//! The server has no real node here: the test registers Node objects and plays their
//! kubelet (a "fake kubelet" that marks pods Running and Ready, finishes job pods, and
//! completes graceful deletions), so readiness drives the controllers as on a cluster.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use h8s_client::k8s_openapi::api::core::v1::{Node, Pod};
use h8s_client::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";
const NODES: &[&str] = &["wl-node-a", "wl-node-b", "wl-node-c"];

struct Shared {
    /// The server, killed by PID at exit (`kill_server`).
    _server: std::sync::Mutex<Child>,
    kubeconfig: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// The server (and fake kubelet) every test of this binary shares; killed at exit by PID.
fn shared() -> &'static Shared {
    SHARED.get_or_init(start)
}

static SHARED: OnceLock<Shared> = OnceLock::new();

static SERVER_PID: OnceLock<u32> = OnceLock::new();
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// At exit: stops the shared server by PID, waits for it, removes its directory.
extern "C" fn kill_server() {
    if let Some(pid) = SERVER_PID.get() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    if let Some(s) = SHARED.get() {
        if let Ok(mut child) = s._server.lock() {
            // SIGTERM was sent; SIGKILL if it lingers.
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if let Some(d) = DATA_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn h8s_help(sub: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_h8s"))
        .args([sub, "--help"])
        .output()
        .expect("h8s --help");
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn start() -> Shared {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let _ = DATA_DIR.set(dir.clone());
    let data = dir.join("data");
    let help = h8s_help("server");
    let in_server = help.contains("--disable-controllers");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h8s"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data);
    if in_server {
        cmd.args([
            "--controllers-resync-period",
            "2s",
            "--cronjob-sync-period",
            "1s",
        ]);
        if help.contains("--job-pod-failure-backoff") {
            cmd.args(["--job-pod-failure-backoff", "1s"]);
        }
        if help.contains("--leader-elect") {
            cmd.args(["--leader-elect", "false"]);
        }
    }
    if help.contains("--disable-agent") {
        cmd.arg("--disable-agent");
    }
    let mut child: Child = cmd
        .env("H8S_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning h8s server");
    let _ = SERVER_PID.set(child.id());
    // SAFETY: atexit with a plain extern "C" function that captures nothing.
    unsafe { libc::atexit(kill_server) };
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("ready line");
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let mut parts = line.split_whitespace();
    assert_eq!(
        parts.next(),
        Some("ready"),
        "unexpected first line {line:?}"
    );
    let _url = parts.next().expect("url");
    let kubeconfig = PathBuf::from(parts.next().expect("kubeconfig"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let kc = kubeconfig.clone();
    rt.block_on(async move {
        let client = h8s_client::from_kubeconfig(&kc).await.expect("client");
        let nodes: Api<Node> = Api::all(client.clone());
        for n in NODES {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                }
            }))
            .expect("node");
            let created = nodes.create(&PostParams::default(), &node).await;
            if created.is_ok() {
                let _ = nodes
                    .patch_status(
                        n,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": node.status})),
                    )
                    .await;
            }
        }
        tokio::spawn(fake_kubelet(client.clone()));
        if !in_server {
            let ctx = h8s_controllers::Context {
                client,
                timers: h8s_controllers::Timers {
                    resync: Duration::from_secs(2),
                    cronjob_sync: Duration::from_secs(1),
                    ..Default::default()
                },
                root_ca_pem: String::new(),
                lb_pool: None,
                informers: Default::default(),
            };
            tokio::spawn(async move {
                if let Err(e) = h8s_controllers::run(ctx).await {
                    eprintln!("controllers stopped: {e}");
                }
            });
        }
    });
    Shared {
        _server: std::sync::Mutex::new(child),
        kubeconfig,
        dir,
        rt,
    }
}

/// Plays the kubelet of the test's Node objects: binds nothing (the scheduler does, or
/// pods stay unbound), marks pending pods Running and Ready, finishes job pods
/// (restartPolicy Never/OnFailure) with success unless their command says `exit 1`, and
/// completes graceful deletions.
async fn fake_kubelet(client: h8s_client::kube::Client) {
    use h8s_client::k8s_openapi::api::coordination::v1::Lease;
    let pods: Api<Pod> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut beat = Instant::now() - Duration::from_secs(60);
    loop {
        // Node heartbeats, so the node lifecycle controller keeps the nodes Ready.
        if beat.elapsed() > Duration::from_secs(5) {
            beat = Instant::now();
            let now = h8s_client::k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string();
            for n in NODES {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": n, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now}});
                let _ = leases
                    .patch(
                        n,
                        &PatchParams::apply("wl-kubelet").force(),
                        &Patch::Apply(&lease),
                    )
                    .await;
            }
        }
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list.items {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                if !ns.starts_with("wl-") {
                    continue;
                }
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..Default::default()
                            },
                        )
                        .await;
                    continue;
                }
                let phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                if phase != "Pending" && !phase.is_empty() {
                    continue;
                }
                let spec = p.spec.clone().unwrap_or_default();
                // An Indexed job's command may name indexes that fail (`fail-index-N;`) or
                // keep running (`hang-index-N;`).
                let cmd = serde_json::to_string(&spec.containers).unwrap_or_default();
                let marked = |what: &str| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
                        .is_some_and(|i| cmd.contains(&format!("{what}-{i};")))
                };
                let job = matches!(
                    spec.restart_policy.as_deref(),
                    Some("Never") | Some("OnFailure")
                ) && !marked("hang-index");
                let now = h8s_client::k8s_openapi::jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let status = if job {
                    let fail = cmd.contains("exit 1") || marked("fail-index");
                    json!({"status": {
                        "phase": if fail { "Failed" } else { "Succeeded" },
                        "startTime": now,
                        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                        "containerStatuses": spec.containers.iter().map(|c| json!({
                            "name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": if fail {1} else {0}, "reason": if fail {"Error"} else {"Completed"}, "finishedAt": now}}
                        })).collect::<Vec<_>>(),
                    }})
                } else {
                    json!({"status": {
                        "phase": "Running",
                        "startTime": now,
                        "podIP": "10.0.0.1",
                        "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        ],
                        "containerStatuses": spec.containers.iter().map(|c| json!({
                            "name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                            "started": true, "state": {"running": {"startedAt": now}}
                        })).collect::<Vec<_>>(),
                    }})
                };
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kubectl_out(ver: &str, args: &[&str]) -> (bool, String, String) {
    let s = shared();
    let bin = Path::new(KUBECTL_DIR).join(format!("kubectl.{ver}"));
    assert!(bin.exists(), "{} is missing", bin.display());
    let o = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(s.dir.join(format!("cache-{ver}")))
        .env_remove("KUBECONFIG")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn kubectl(ver: &str, args: &[&str]) -> String {
    let (ok, out, err) = kubectl_out(ver, args);
    assert!(
        ok,
        "kubectl {ver} {args:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn get_json(ver: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = kubectl(ver, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        match f() {
            Ok(()) => return,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {secs} s; last: {last}");
}

fn ns_for(ver: &str, what: &str) -> String {
    format!("wl-{what}-{}", ver.replace('.', ""))
}

/// ReplicaSets of `deploy` in `ns`: (name, spec.replicas, revision, image).
fn replica_sets(ver: &str, ns: &str) -> Vec<(String, i64, String, String)> {
    let v = get_json(ver, &["get", "rs", "-n", ns]);
    let mut out: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rs["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// Live (not deleting) pods of `ns`: (name, image, controller name).
fn pods(ver: &str, ns: &str) -> Vec<(String, String, String)> {
    let v = get_json(ver, &["get", "pods", "-n", ns]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["ownerReferences"][0]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn rollout_status(ver: &str, ns: &str, what: &str) {
    let out = kubectl(ver, &["rollout", "status", what, "-n", ns, "--timeout=90s"]);
    // A StatefulSet's RollingUpdate has a (defaulted) partition: kubectl says so.
    assert!(
        out.contains("successfully rolled out") || out.contains("partitioned roll out complete"),
        "{out}"
    );
}

fn deployment_flow(ver: &str) {
    let ns = ns_for(ver, "deploy");
    kubectl(ver, &["create", "namespace", &ns]);
    kubectl(
        ver,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.0",
            "--replicas=3",
            "-n",
            &ns,
        ],
    );
    rollout_status(ver, &ns, "deployment/web");
    let rss = replica_sets(ver, &ns);
    assert_eq!(rss.len(), 1, "{rss:?}");
    let (rs1, replicas, rev, _) = rss[0].clone();
    assert!(rs1.starts_with("web-"), "{rs1}");
    assert_eq!((replicas, rev.as_str()), (3, "1"));
    let p = pods(ver, &ns);
    assert_eq!(p.len(), 3, "{p:?}");
    for (name, image, owner) in &p {
        assert!(name.starts_with(&format!("{rs1}-")), "{name}");
        assert_eq!(
            (image.as_str(), owner.as_str()),
            ("nginx:1.0", rs1.as_str())
        );
    }
    let d = get_json(ver, &["get", "deploy", "web", "-n", &ns]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{d}");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let conds = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reason = |t: &str| {
        conds
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let rs = get_json(ver, &["get", "rs", &rs1, "-n", &ns]);
    assert_eq!(rs["status"]["readyReplicas"], 3, "{rs}");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);

    // scale
    kubectl(ver, &["scale", "deployment/web", "--replicas=5", "-n", &ns]);
    rollout_status(ver, &ns, "deployment/web");
    eventually(30, "5 pods", || {
        let n = pods(ver, &ns).len();
        (n == 5).then_some(()).ok_or(format!("{n} pods"))
    });
    kubectl(ver, &["scale", "deployment/web", "--replicas=2", "-n", &ns]);
    eventually(30, "2 pods", || {
        let n = pods(ver, &ns).len();
        (n == 2).then_some(()).ok_or(format!("{n} pods"))
    });

    // rollout of a new image
    kubectl(
        ver,
        &[
            "set",
            "image",
            "deployment/web",
            "nginx=nginx:2.0",
            "-n",
            &ns,
        ],
    );
    rollout_status(ver, &ns, "deployment/web");
    let rss = replica_sets(ver, &ns);
    assert_eq!(rss.len(), 2, "{rss:?}");
    assert_eq!(
        (rss[0].1, rss[0].2.as_str(), rss[0].3.as_str()),
        (0, "1", "nginx:1.0")
    );
    assert_eq!(
        (rss[1].1, rss[1].2.as_str(), rss[1].3.as_str()),
        (2, "2", "nginx:2.0")
    );
    eventually(30, "pods of revision 2 only", || {
        let p = pods(ver, &ns);
        (p.len() == 2 && p.iter().all(|(_, i, o)| i == "nginx:2.0" && o == &rss[1].0))
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    let hist = kubectl(ver, &["rollout", "history", "deployment/web", "-n", &ns]);
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");

    // undo: back to the first template, which becomes revision 3
    kubectl(ver, &["rollout", "undo", "deployment/web", "-n", &ns]);
    rollout_status(ver, &ns, "deployment/web");
    let rss = replica_sets(ver, &ns);
    assert_eq!(rss.len(), 2, "{rss:?}");
    let back = rss.iter().find(|r| r.0 == rs1).expect("first RS kept");
    assert_eq!((back.1, back.2.as_str()), (2, "3"), "{rss:?}");
    eventually(30, "pods of the first template", || {
        let p = pods(ver, &ns);
        (p.len() == 2 && p.iter().all(|(_, i, _)| i == "nginx:1.0"))
            .then_some(())
            .ok_or(format!("{p:?}"))
    });

    // restart: a new ReplicaSet with the restartedAt annotation
    kubectl(ver, &["rollout", "restart", "deployment/web", "-n", &ns]);
    rollout_status(ver, &ns, "deployment/web");
    assert_eq!(replica_sets(ver, &ns).len(), 3);

    // pause: a template change makes no ReplicaSet until resume
    kubectl(ver, &["rollout", "pause", "deployment/web", "-n", &ns]);
    kubectl(
        ver,
        &[
            "set",
            "image",
            "deployment/web",
            "nginx=nginx:3.0",
            "-n",
            &ns,
        ],
    );
    eventually(20, "Progressing=Unknown DeploymentPaused", || {
        let d = get_json(ver, &["get", "deploy", "web", "-n", &ns]);
        let paused = d["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "DeploymentPaused"));
        paused.then_some(()).ok_or(d["status"].to_string())
    });
    assert_eq!(replica_sets(ver, &ns).len(), 3);
    kubectl(ver, &["rollout", "resume", "deployment/web", "-n", &ns]);
    rollout_status(ver, &ns, "deployment/web");
    let rss = replica_sets(ver, &ns);
    assert_eq!(rss.len(), 4, "{rss:?}");
    assert_eq!(rss.last().map(|r| r.3.as_str()), Some("nginx:3.0"));

    // events, as Kubernetes words them
    let ev = kubectl(ver, &["get", "events", "-n", &ns]);
    assert!(ev.contains("ScalingReplicaSet"), "{ev}");
    assert!(ev.contains("SuccessfulCreate"), "{ev}");
}

#[test]
fn deployment_kubectl_1_27() {
    deployment_flow("1.27");
}

#[test]
fn deployment_kubectl_1_30() {
    deployment_flow("1.30");
}

#[test]
fn deployment_kubectl_1_33() {
    deployment_flow("1.33");
}

#[test]
fn replication_controller_and_orphan_adoption() {
    let ver = "1.33";
    let ns = ns_for(ver, "rc");
    kubectl(ver, &["create", "namespace", &ns]);
    // An orphan pod with the labels is adopted: the RC creates only one more.
    let orphan = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "namespace": ns, "labels": {"app": "rc"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"app": "rc"}, "template": {
            "metadata": {"labels": {"app": "rc"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let f = shared().dir.join(format!("{ns}-rc.json"));
    std::fs::write(&f, orphan.to_string()).unwrap();
    kubectl(ver, &["apply", "-f", f.to_str().unwrap()]);
    std::fs::write(&f, rc.to_string()).unwrap();
    kubectl(ver, &["apply", "-f", f.to_str().unwrap()]);
    eventually(30, "2 pods, the orphan adopted", || {
        let p = pods(ver, &ns);
        let adopted = p.iter().any(|(n, _, o)| n == "orphan" && o == "rc");
        (p.len() == 2 && adopted)
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    eventually(30, "RC status", || {
        let v = get_json(ver, &["get", "rc", "rc", "-n", &ns]);
        (v["status"]["readyReplicas"] == 2 && v["status"]["replicas"] == 2)
            .then_some(())
            .ok_or(v["status"].to_string())
    });
    // A deleted pod is replaced.
    kubectl(ver, &["delete", "pod", "orphan", "-n", &ns, "--wait=false"]);
    eventually(30, "a replacement", || {
        let p = pods(ver, &ns);
        (p.len() == 2 && p.iter().all(|(n, _, _)| n != "orphan"))
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    let _ = &shared().rt;
}

fn apply_json(ver: &str, name: &str, v: &Value) {
    // One file per namespace: tests of several kubectl versions run at once.
    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
    let f = shared().dir.join(format!("{ns}-{name}.json"));
    std::fs::write(&f, v.to_string()).unwrap();
    kubectl(ver, &["apply", "-f", f.to_str().unwrap()]);
}

fn job_flow(ver: &str) {
    let ns = ns_for(ver, "job");
    kubectl(ver, &["create", "namespace", &ns]);
    kubectl(
        ver,
        &[
            "create",
            "job",
            "ok",
            "--image=busybox",
            "-n",
            &ns,
            "--",
            "sh",
            "-c",
            "echo ok",
        ],
    );
    let out = kubectl(
        ver,
        &[
            "wait",
            "--for=condition=complete",
            "job/ok",
            "-n",
            &ns,
            "--timeout=60s",
        ],
    );
    assert!(out.contains("condition met"), "{out}");
    let j = get_json(ver, &["get", "job", "ok", "-n", &ns]);
    assert_eq!(j["status"]["succeeded"], 1, "{j}");
    assert!(j["status"]["completionTime"].is_string(), "{j}");
    let types: Vec<&str> = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(
        types.contains(&"SuccessCriteriaMet") && types.contains(&"Complete"),
        "{types:?}"
    );
    let p = get_json(ver, &["get", "pods", "-n", &ns, "-l", "job-name=ok"]);
    let items = p["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{p}");
    assert!(
        items[0]["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "{p}"
    );

    // A failing job with backoffLimit 0 fails at the first failure.
    apply_json(
        ver,
        "fail",
        &json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "fail", "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 1"]}]}}}}),
    );
    let out = kubectl(
        ver,
        &[
            "wait",
            "--for=condition=failed",
            "job/fail",
            "-n",
            &ns,
            "--timeout=60s",
        ],
    );
    assert!(out.contains("condition met"), "{out}");
    let j = get_json(ver, &["get", "job", "fail", "-n", &ns]);
    assert_eq!(j["status"]["failed"], 1, "{j}");
    let failed = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned();
    assert_eq!(
        failed.map(|c| c["reason"].clone()),
        Some(json!("BackoffLimitExceeded")),
        "{j}"
    );

    // Indexed, parallel, with a TTL of 0: completes all indexes, then disappears.
    apply_json(
        ver,
        "indexed",
        &json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "idx", "namespace": ns},
        "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo $JOB_COMPLETION_INDEX"]}]}}}}),
    );
    kubectl(
        ver,
        &[
            "wait",
            "--for=condition=complete",
            "job/idx",
            "-n",
            &ns,
            "--timeout=60s",
        ],
    );
    let j = get_json(ver, &["get", "job", "idx", "-n", &ns]);
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    assert_eq!(j["status"]["succeeded"], 3, "{j}");
    let p = get_json(ver, &["get", "pods", "-n", &ns, "-l", "job-name=idx"]);
    let mut names: Vec<String> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["0", "1", "2"]);
    kubectl(
        ver,
        &[
            "patch",
            "job",
            "idx",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"ttlSecondsAfterFinished":0}}"#,
        ],
    );
    eventually(30, "the job deleted after its TTL", || {
        let (ok, out, err) = kubectl_out(ver, &["get", "job", "idx", "-n", &ns]);
        (!ok && err.contains("NotFound"))
            .then_some(())
            .ok_or(format!("{out}{err}"))
    });
    let ev = kubectl(ver, &["get", "events", "-n", &ns]);
    assert!(
        ev.contains("Completed") && ev.contains("BackoffLimitExceeded"),
        "{ev}"
    );
}

/// backoffLimitPerIndex and successPolicy through kubectl: an index that keeps failing is
/// retried once, then marked failed while the others complete, and the Job fails with
/// `FailedIndexes`; a success policy met by indexes 0 and 2 completes a Job whose index 1
/// never finishes.
#[test]
fn job_per_index_limits_and_success_policy_kubectl_1_33() {
    let ver = "1.33";
    let ns = ns_for(ver, "jobidx");
    kubectl(ver, &["create", "namespace", &ns]);
    apply_json(
        ver,
        "perindex",
        &json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "perindex", "namespace": ns},
        "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
            "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "# fail-index-1;\necho $JOB_COMPLETION_INDEX"]}]}}}}),
    );
    kubectl(
        ver,
        &[
            "wait",
            "--for=condition=failed",
            "job/perindex",
            "-n",
            &ns,
            "--timeout=90s",
        ],
    );
    let j = get_json(ver, &["get", "job", "perindex", "-n", &ns]);
    assert_eq!(j["spec"]["backoffLimit"], i32::MAX, "{j}");
    assert_eq!(j["status"]["failedIndexes"], "1", "{j}");
    assert_eq!(j["status"]["completedIndexes"], "0,2", "{j}");
    assert_eq!(j["status"]["failed"], 2, "one retry of index 1: {j}");
    let failed = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed" && c["status"] == "True")
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed["reason"], "FailedIndexes", "{j}");
    assert_eq!(failed["message"], "Job has failed indexes", "{j}");
    let p = get_json(ver, &["get", "pods", "-n", &ns, "-l", "job-name=perindex"]);
    let mut counts: Vec<(String, String)> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let a = &p["metadata"]["annotations"];
            (
                a["batch.kubernetes.io/job-completion-index"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                a["batch.kubernetes.io/job-index-failure-count"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [("0", "0"), ("1", "0"), ("1", "1"), ("2", "0")]
            .map(|(a, b)| (a.to_string(), b.to_string())),
        "{p}"
    );

    apply_json(
        ver,
        "policy",
        &json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "policy", "namespace": ns},
        "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "successPolicy": {"rules": [{"succeededIndexes": "0,2"}]},
            "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "# hang-index-1;\nsleep 3600"]}]}}}}),
    );
    kubectl(
        ver,
        &[
            "wait",
            "--for=condition=complete",
            "job/policy",
            "-n",
            &ns,
            "--timeout=90s",
        ],
    );
    let j = get_json(ver, &["get", "job", "policy", "-n", &ns]);
    let conds = j["status"]["conditions"].as_array().unwrap().clone();
    for t in ["SuccessCriteriaMet", "Complete"] {
        let c = conds
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("{t}: {j}"));
        assert_eq!(c["reason"], "SuccessPolicy", "{j}");
        assert_eq!(c["message"], "Matched rules at index 0", "{j}");
    }
    assert_eq!(j["status"]["completedIndexes"], "0,2", "{j}");
    assert_eq!(j["status"]["terminating"], 0, "{j}");
    assert!(j["status"]["active"].is_null(), "{j}");

    // Validation in kube-apiserver's words.
    let bad = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"completions": 2, "backoffLimitPerIndex": 1,
            "successPolicy": {"rules": [{"succeededCount": 1}]},
            "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    let f = shared().dir.join(format!("{ns}-bad.json"));
    std::fs::write(&f, bad.to_string()).unwrap();
    let (ok, out, err) = kubectl_out(ver, &["create", "-f", f.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"
        ) && err.contains("spec.successPolicy: Invalid value:")
            && err.contains("requires indexed completion mode"),
        "{err}"
    );
}

#[test]
fn job_kubectl_1_27() {
    job_flow("1.27");
}

#[test]
fn job_kubectl_1_30() {
    job_flow("1.30");
}

#[test]
fn job_kubectl_1_33() {
    job_flow("1.33");
}

fn daemonset_flow(ver: &str) {
    let ns = ns_for(ver, "ds");
    kubectl(ver, &["create", "namespace", &ns]);
    let ds = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}}})
    };
    apply_json(ver, "ds", &ds("busybox:1"));
    rollout_status(ver, &ns, "daemonset/agent");
    let targets = |ver: &str| -> Vec<(String, String)> {
        let v = get_json(ver, &["get", "pods", "-n", &ns]);
        let mut t: Vec<(String, String)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let pinned = p["spec"]["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                    ["matchFields"][0]["values"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (
                    pinned,
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        t.sort();
        t
    };
    let t = targets(ver);
    let want: Vec<(String, String)> = NODES
        .iter()
        .map(|n| (n.to_string(), "busybox:1".to_string()))
        .collect();
    assert_eq!(t, want);
    let d = get_json(ver, &["get", "ds", "agent", "-n", &ns]);
    assert_eq!(d["status"]["desiredNumberScheduled"], 3, "{d}");
    assert_eq!(d["status"]["numberReady"], 3, "{d}");
    // A rolling update to a new image, one node at a time.
    apply_json(ver, "ds", &ds("busybox:2"));
    rollout_status(ver, &ns, "daemonset/agent");
    eventually(30, "new image on every node", || {
        let t = targets(ver);
        let want: Vec<(String, String)> = NODES
            .iter()
            .map(|n| (n.to_string(), "busybox:2".to_string()))
            .collect();
        (t == want).then_some(()).ok_or(format!("{t:?}"))
    });
    let hist = kubectl(ver, &["rollout", "history", "daemonset/agent", "-n", &ns]);
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");
    let crs = get_json(ver, &["get", "controllerrevisions", "-n", &ns]);
    assert_eq!(crs["items"].as_array().map(Vec::len), Some(2), "{crs}");
    // Undo goes back to the first template (client-side, from the ControllerRevision).
    kubectl(ver, &["rollout", "undo", "daemonset/agent", "-n", &ns]);
    rollout_status(ver, &ns, "daemonset/agent");
    eventually(30, "old image back on every node", || {
        let t = targets(ver);
        (t.iter().all(|(_, i)| i == "busybox:1") && t.len() == 3)
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
}

#[test]
fn daemonset_kubectl_1_27() {
    daemonset_flow("1.27");
}

#[test]
fn daemonset_kubectl_1_30() {
    daemonset_flow("1.30");
}

#[test]
fn daemonset_kubectl_1_33() {
    daemonset_flow("1.33");
}

fn statefulset_flow(ver: &str) {
    let ns = ns_for(ver, "sts");
    kubectl(ver, &["create", "namespace", &ns]);
    let sts = |image: &str, replicas: i32| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"serviceName": "db", "replicas": replicas,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": image}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    };
    apply_json(ver, "sts", &sts("busybox:1", 3));
    rollout_status(ver, &ns, "statefulset/db");
    let mut names: Vec<String> = pods(ver, &ns).into_iter().map(|p| p.0).collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // Created in order: db-0's creation is not after db-1's, nor db-1's after db-2's.
    let v = get_json(ver, &["get", "pods", "-n", &ns]);
    let created = |n: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == n)
            .map(|p| {
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert!(created("db-0") <= created("db-1") && created("db-1") <= created("db-2"));
    let pvcs = get_json(ver, &["get", "pvc", "-n", &ns]);
    let mut claims: Vec<String> = pvcs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    claims.sort();
    assert_eq!(claims, ["data-db-0", "data-db-1", "data-db-2"]);
    let p = get_json(ver, &["get", "pod", "db-1", "-n", &ns]);
    assert_eq!(p["spec"]["hostname"], "db-1");
    assert_eq!(p["spec"]["subdomain"], "db");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    // Rolling update from the top.
    apply_json(ver, "sts", &sts("busybox:2", 3));
    rollout_status(ver, &ns, "statefulset/db");
    let s = get_json(ver, &["get", "sts", "db", "-n", &ns]);
    assert_eq!(
        s["status"]["currentRevision"], s["status"]["updateRevision"],
        "{s}"
    );
    assert_eq!(s["status"]["updatedReplicas"], 3, "{s}");
    eventually(30, "every pod on the new image", || {
        let p = pods(ver, &ns);
        (p.len() == 3 && p.iter().all(|(_, i, _)| i == "busybox:2"))
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    // Scale down removes the highest ordinal; the claims stay (Retain).
    kubectl(ver, &["scale", "statefulset/db", "--replicas=1", "-n", &ns]);
    eventually(30, "db-0 alone", || {
        let p: Vec<String> = pods(ver, &ns).into_iter().map(|p| p.0).collect();
        (p == ["db-0"]).then_some(()).ok_or(format!("{p:?}"))
    });
    let pvcs = get_json(ver, &["get", "pvc", "-n", &ns]);
    assert_eq!(pvcs["items"].as_array().map(Vec::len), Some(3));
}

#[test]
fn statefulset_kubectl_1_27() {
    statefulset_flow("1.27");
}

#[test]
fn statefulset_kubectl_1_30() {
    statefulset_flow("1.30");
}

#[test]
fn statefulset_kubectl_1_33() {
    statefulset_flow("1.33");
}

fn cronjob_flow(ver: &str, wait_for_schedule: bool) {
    let ns = ns_for(ver, "cj");
    kubectl(ver, &["create", "namespace", &ns]);
    kubectl(
        ver,
        &[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=* * * * *",
            "-n",
            &ns,
            "--",
            "sh",
            "-c",
            "date",
        ],
    );
    // Run by hand, as `kubectl create job --from` does (client-side, owned by the CronJob).
    kubectl(
        ver,
        &["create", "job", "manual", "--from=cronjob/tick", "-n", &ns],
    );
    kubectl(
        ver,
        &[
            "wait",
            "--for=condition=complete",
            "job/manual",
            "-n",
            &ns,
            "--timeout=60s",
        ],
    );
    if !wait_for_schedule {
        return;
    }
    // The schedule fires at the next minute: a job named tick-<minutes since the epoch>.
    let mut fired = String::new();
    eventually(90, "a scheduled job", || {
        let v = get_json(ver, &["get", "jobs", "-n", &ns]);
        let names: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .filter(|n| n.starts_with("tick-"))
            .collect();
        match names.first() {
            Some(n) => {
                fired = n.clone();
                Ok(())
            }
            None => Err(format!("{names:?}")),
        }
    });
    let minutes: i64 = fired
        .trim_start_matches("tick-")
        .parse()
        .expect("minutes in the job name");
    let now = h8s_client::k8s_openapi::jiff::Timestamp::now().as_second() / 60;
    assert!((now - 2..=now).contains(&minutes), "{fired} vs {now}");
    kubectl(
        ver,
        &[
            "wait",
            "--for=condition=complete",
            &format!("job/{fired}"),
            "-n",
            &ns,
            "--timeout=60s",
        ],
    );
    eventually(30, "lastScheduleTime and lastSuccessfulTime", || {
        let c = get_json(ver, &["get", "cronjob", "tick", "-n", &ns]);
        (c["status"]["lastScheduleTime"].is_string()
            && c["status"]["lastSuccessfulTime"].is_string())
        .then_some(())
        .ok_or(c["status"].to_string())
    });
    let ev = kubectl(ver, &["get", "events", "-n", &ns]);
    assert!(
        ev.contains("SuccessfulCreate") && ev.contains("SawCompletedJob"),
        "{ev}"
    );
}

#[test]
fn cronjob_kubectl_1_27() {
    cronjob_flow("1.27", false);
}

#[test]
fn cronjob_kubectl_1_30() {
    cronjob_flow("1.30", false);
}

#[test]
fn cronjob_kubectl_1_33_fires_on_schedule() {
    cronjob_flow("1.33", true);
}
