//! The pod workers and their dispatcher against [`FakeRuntime`] and the real API server
//! (in-process, embedded store): Pod objects in, runtime calls and `pods/status` out. No
//! QEMU; every timer shortened. One API server for the module, one namespace, node name and
//! fake runtime per test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

use crate::fake::{Call, FakeRuntime, Script};

struct ApiServer {
    url: String,
    ca_pem: Vec<u8>,
    token: String,
}

/// One API server for every test of the module, on its own thread and runtime (tests run on
/// runtimes of their own).
fn api_server() -> &'static ApiServer {
    static SERVER: OnceLock<ApiServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let dir = tempfile::Builder::new()
                    .prefix("h8s-agent-worker")
                    .tempdir()
                    .expect("tempdir")
                    .keep();
                let store = h8s_store::open("embedded", &dir, None)
                    .await
                    .expect("store");
                let srv = h8s_apiserver::Server::start(h8s_apiserver::Config::new(
                    dir,
                    "127.0.0.1:0".parse().expect("address"),
                    store,
                ))
                .await
                .expect("API server starts");
                let _ = tx.send(ApiServer {
                    url: format!("https://{}", srv.addr),
                    ca_pem: srv.pki.ca_pem.clone().into_bytes(),
                    token: srv.pki.admin_token.clone(),
                });
                // Serve for the rest of the test binary's life.
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(120))
            .expect("API server set-up")
    })
}

/// A dispatcher for one test node, on the test's runtime.
struct Node {
    client: kube::Client,
    rt: Arc<FakeRuntime>,
    ns: String,
    node: String,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

const DEADLINE: Duration = Duration::from_secs(60);

async fn node(test: &str) -> Node {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let srv = api_server();
    let client = h8s_client::Connection {
        server: srv.url.clone(),
        ca_pem: srv.ca_pem.clone(),
        credentials: h8s_client::Credentials::Token(srv.token.clone()),
        user_agent: "worker-tests".into(),
    }
    .client()
    .expect("client");
    let ns = format!("{test}-{n}");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
    )
    .await
    .expect("namespace created");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa"),
    )
    .await
    .expect("service account created");
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::new(&dir.path().join("logs")));
    rt.add_image("busybox:1.36");
    let node = format!("fake-{n}");
    let mut cfg = crate::Config::new(node.clone(), dir.path().to_path_buf());
    cfg.pod_timers = crate::PodTimers {
        sync_period: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_millis(1200),
        image_backoff_initial: Duration::from_millis(300),
        image_backoff_max: Duration::from_millis(1200),
        volume_refresh: Duration::from_secs(60),
        eviction_monitoring_period: Duration::from_millis(200),
        ..crate::PodTimers::default()
    };
    let lookup = crate::pods::PodLookup::new(rt.clone());
    let d = crate::pods::Dispatcher::new(client.clone(), rt.clone(), cfg, lookup)
        .await
        .expect("dispatcher");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(d.run(stopped));
    Node {
        client,
        rt,
        ns,
        node,
        _stop: stop,
        _dir: dir,
    }
}

impl Node {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a pod bound to this node: `spec` is merged over one `busybox:1.36` container
    /// named `c` without a service account token.
    async fn create(&self, name: &str, spec: serde_json::Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name},
            "spec": {
                "nodeName": self.node,
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "1d"]}],
            },
        });
        merge(&mut pod["spec"], spec);
        self.pods()
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).expect("pod"),
            )
            .await
            .expect("pod created")
    }

    /// Waits until `ok` holds for the pod (generous deadline, no fixed sleeps).
    async fn wait(&self, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
        let start = tokio::time::Instant::now();
        loop {
            let p = self.pods().get_opt(name).await.expect("get pod");
            if let Some(p) = p {
                if ok(&p) {
                    return p;
                }
                if start.elapsed() > DEADLINE {
                    panic!(
                        "pod {name}: {what} not reached; status: {}",
                        serde_json::to_string_pretty(&p.status).unwrap_or_default()
                    );
                }
            } else if start.elapsed() > DEADLINE {
                panic!("pod {name}: {what} not reached; the pod is gone");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_gone(&self, name: &str) {
        let start = tokio::time::Instant::now();
        while self.pods().get_opt(name).await.expect("get pod").is_some() {
            assert!(start.elapsed() < DEADLINE, "pod {name} not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_rt(&self, what: &str, ok: impl Fn(&FakeRuntime) -> bool) {
        let start = tokio::time::Instant::now();
        while !ok(&self.rt) {
            assert!(
                start.elapsed() < DEADLINE,
                "{what} not reached; calls: {:?}",
                self.rt.calls()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pod's events as `reason: message`, once one starts with each of `want` (events
    /// are written off the pod's path: wait for them, up to the deadline).
    async fn events(&self, pod: &str, want: &[&str]) -> Vec<String> {
        let evs: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let start = tokio::time::Instant::now();
        loop {
            let got: Vec<String> = evs
                .list(&ListParams::default())
                .await
                .expect("events")
                .items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(pod))
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect();
            let all = want.iter().all(|w| got.iter().any(|e| e.starts_with(w)));
            if all || start.elapsed() > DEADLINE {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn container(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first().cloned())
        .unwrap_or_default()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn waiting_reason(p: &Pod) -> Option<String> {
    container(p).state?.waiting?.reason
}

fn starts(rt: &FakeRuntime, base: &str) -> usize {
    rt.calls()
        .iter()
        .filter(|c| matches!(c, Call::StartContainer(n) if n.starts_with(&format!("{base}."))))
        .count()
}

#[tokio::test]
async fn a_pod_runs_in_a_vm_sized_from_its_resources() {
    let n = node("run").await;
    n.create(
        "web",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.36", "command": ["httpd", "-f"],
            "resources": {"limits": {"memory": "128Mi", "cpu": "1500m"}},
        }]}),
    )
    .await;
    let p = n
        .wait("web", "Running and Ready", |p| {
            phase(p) == "Running" && ready(p)
        })
        .await;
    let c = container(&p);
    assert!(
        c.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "{c:?}"
    );
    assert_eq!((c.restart_count, c.started), (0, Some(true)));
    let id = c.container_id.expect("containerID");
    assert!(
        id.starts_with("h8s-vm://web-") && id.ends_with("/c.0"),
        "{id}"
    );
    assert!(c.image_id.starts_with("busybox@sha256:"), "{}", c.image_id);
    let st = p.status.expect("status");
    assert!(st.start_time.is_some());
    assert_eq!(st.qos_class.as_deref(), Some("Guaranteed"));
    // limits 128 MiB + the guest's 64 MiB; 1.5 CPUs rounded up.
    let run =
        n.rt.calls()
            .into_iter()
            .find(|c| matches!(c, Call::RunSandbox { .. }))
            .expect("a VM was started");
    assert!(
        matches!(
            run,
            Call::RunSandbox {
                memory_mib: 192,
                cpus: 2,
                ..
            }
        ),
        "{run:?}"
    );
    assert!(matches!(
        run,
        Call::RunSandbox {
            disk: (None, None),
            ..
        }
    ));
    // Disk I/O beyond the node's default: the pod's annotations (quantities) reach its VM.
    let mut disk: Pod = serde_json::from_value(json!({
        "metadata": {"name": "disk", "annotations": {
            "h8s.io/disk-bandwidth": "200Mi", "h8s.io/disk-iops": "5k",
        }},
        "spec": {
            "nodeName": n.node, "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "1d"]}],
        },
    }))
    .unwrap();
    disk = n
        .pods()
        .create(&PostParams::default(), &disk)
        .await
        .unwrap();
    assert!(disk.metadata.annotations.is_some());
    n.wait("disk", "Running", |p| phase(p) == "Running").await;
    assert!(
        n.rt.calls().iter().any(|c| matches!(
            c,
            Call::RunSandbox { disk: (Some(b), Some(5000)), .. } if *b == 200 << 20
        )),
        "{:?}",
        n.rt.calls()
    );
    let wants = [
        "Pulled:",
        "Created: Created container: c",
        "Started: Started container c",
    ];
    let evs = n.events("web", &wants).await;
    for want in wants {
        assert!(evs.iter().any(|e| e.starts_with(want)), "{want} in {evs:?}");
    }
}

#[tokio::test]
async fn restart_policies_with_back_off() {
    let n = node("restart").await;
    n.rt.script("crash", Script::Exit(1));
    n.rt.script("done", Script::Exit(0));
    let one = |c: &str| json!({"containers": [{"name": c, "image": "busybox:1.36"}]});
    let mut always = one("crash");
    always["restartPolicy"] = json!("Always");
    n.create("always", always).await;
    let mut on_failure = one("done");
    on_failure["restartPolicy"] = json!("OnFailure");
    n.create("onfailure-ok", on_failure).await;
    let mut never = one("crash");
    never["restartPolicy"] = json!("Never");
    n.create("never", never).await;

    // Always: CrashLoopBackOff with kubelet's message and a growing restart count.
    let p = n
        .wait("always", "CrashLoopBackOff after restarts", |p| {
            container(p).restart_count >= 2
                && waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let c = container(&p);
    let msg = c.state.and_then(|s| s.waiting).and_then(|w| w.message);
    assert!(
        msg.as_deref().is_some_and(|m| m.starts_with("back-off ")
            && m.contains("restarting failed container=crash pod=always_")),
        "{msg:?}"
    );
    let last = c.last_state.and_then(|s| s.terminated).expect("lastState");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(phase(&p), "Running");
    assert!(n
        .events(
            "always",
            &["BackOff: Back-off restarting failed container crash"]
        )
        .await
        .iter()
        .any(|e| e.starts_with("BackOff: Back-off restarting failed container crash")));

    // OnFailure with exit 0: no restart, Succeeded, the VM stopped.
    let p = n
        .wait("onfailure-ok", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(container(&p).restart_count, 0);
    // Never with exit 1: Failed, never restarted.
    let p = n.wait("never", "Failed", |p| phase(p) == "Failed").await;
    let c = container(&p);
    assert_eq!(c.restart_count, 0);
    let t = c.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (1, Some("Error")));
    n.wait_rt("the finished pods' VMs stopped", |rt| {
        let calls = rt.calls();
        ["onfailure-ok-", "never-"].iter().all(|p| {
            calls
                .iter()
                .any(|c| matches!(c, Call::StopSandbox(id) if id.starts_with(p)))
        })
    })
    .await;
    assert_eq!(starts(&n.rt, "done"), 1);
    // "crash" ran once for "never" and at least three times for "always".
    assert!(starts(&n.rt, "crash") >= 4);
}

#[tokio::test]
async fn on_failure_restarts_a_failed_container() {
    let n = node("onfailure").await;
    n.rt.script("c", Script::Exit(3));
    n.create("p", json!({"restartPolicy": "OnFailure"})).await;
    let p = n
        .wait("p", "restarted", |p| container(p).restart_count >= 1)
        .await;
    assert_ne!(phase(&p), "Failed");
    // It works the next time: Running, the previous run kept as lastState.
    n.rt.script("c", Script::Run);
    let p = n
        .wait("p", "Running after a restart", |p| {
            phase(p) == "Running" && container(p).state.is_some_and(|s| s.running.is_some())
        })
        .await;
    let last = container(&p)
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState");
    assert_eq!(last.exit_code, 3);
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_and_readiness_gates_ready() {
    let n = node("probes").await;
    let probe =
        |port: u16| json!({"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 1});
    n.create(
        "live",
        json!({"terminationGracePeriodSeconds": 4, "containers": [{
            "name": "c", "image": "busybox:1.36", "livenessProbe": probe(8080),
            "readinessProbe": probe(8081),
        }]}),
    )
    .await;
    n.wait("live", "Ready", ready).await;
    // Readiness failing: not Ready, no restart.
    n.rt.fail_probes_on(8081, true);
    let p = n.wait("live", "not Ready", |p| !ready(p)).await;
    assert_eq!(container(&p).restart_count, 0);
    assert!(n
        .events("live", &["Unhealthy: Readiness probe failed:"])
        .await
        .iter()
        .any(|e| e.starts_with("Unhealthy: Readiness probe failed:")));
    n.rt.fail_probes_on(8081, false);
    n.wait("live", "Ready again", ready).await;
    // Liveness failing: killed with the pod's grace period and restarted.
    n.rt.fail_probes_on(8080, true);
    let p = n
        .wait("live", "restarted", |p| container(p).restart_count >= 1)
        .await;
    let evs = n
        .events(
            "live",
            &[
                "Unhealthy: Liveness probe failed:",
                "Killing: Container c failed liveness probe, will be restarted",
            ],
        )
        .await;
    assert!(
        evs.iter()
            .any(|e| e.starts_with("Unhealthy: Liveness probe failed:")),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| e == "Killing: Container c failed liveness probe, will be restarted"),
        "{evs:?}"
    );
    // The pod's grace period (less the time a preStop hook would have taken).
    let calls = n.rt.calls();
    assert!(
        calls.iter().any(|c| matches!(c, Call::StopContainer { name, grace }
            if name == "c.0" && *grace <= Duration::from_secs(4) && *grace > Duration::from_secs(3))),
        "{calls:?}"
    );
    let last = container(&p)
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState");
    assert_eq!(last.exit_code, 143);
}

#[tokio::test]
async fn deletion_runs_pre_stop_then_stops_with_the_grace_period() {
    let n = node("delete").await;
    n.create(
        "p",
        json!({"terminationGracePeriodSeconds": 7, "containers": [{
            "name": "c", "image": "busybox:1.36",
            "lifecycle": {"preStop": {"exec": {"command": ["drain"]}}},
        }]}),
    )
    .await;
    n.wait("p", "Running", |p| phase(p) == "Running").await;
    n.pods()
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    n.wait_gone("p").await;
    let calls = n.rt.calls();
    let pre_stop = calls
        .iter()
        .position(|c| matches!(c, Call::Exec { command, .. } if command == &["drain"]))
        .expect("preStop ran");
    let stop = calls
        .iter()
        .position(|c| matches!(c, Call::StopContainer { name, .. } if name == "c.0"))
        .expect("container stopped");
    assert!(pre_stop < stop, "{calls:?}");
    // What is left of the 7 s after preStop (which took next to nothing).
    let Call::StopContainer { grace, .. } = &calls[stop] else {
        unreachable!()
    };
    assert!(
        *grace <= Duration::from_secs(7) && *grace > Duration::from_secs(5),
        "{grace:?}"
    );
    assert!(n.rt.sandbox_ids().is_empty(), "{:?}", n.rt.sandbox_ids());
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_and_is_retried() {
    let n = node("failstart").await;
    n.rt.fail_boots(Some("the guest never said hello"));
    n.create("p", json!({})).await;
    let p = n
        .wait("p", "ContainerCreating with the reason", |p| {
            container(p)
                .state
                .and_then(|s| s.waiting)
                .and_then(|w| w.message)
                .is_some_and(|m| m.contains("the guest never said hello"))
        })
        .await;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(waiting_reason(&p).as_deref(), Some("ContainerCreating"));
    assert!(n.rt.sandbox_ids().is_empty());
    assert!(n
        .events(
            "p",
            &["FailedCreatePodSandBox: Failed to create pod sandbox:"]
        )
        .await
        .iter()
        .any(|e| e.starts_with("FailedCreatePodSandBox: Failed to create pod sandbox:")));
    // A start that fails at the command: StartError (exit 128), nothing running.
    n.rt.fail_boots(None);
    n.rt.script("c", Script::StartFails);
    let p = n
        .wait("p", "StartError", |p| {
            container(p)
                .state
                .and_then(|s| s.terminated)
                .or_else(|| container(p).last_state.and_then(|s| s.terminated))
                .is_some_and(|t| t.reason.as_deref() == Some("StartError"))
        })
        .await;
    let c = container(&p);
    let t = c
        .state
        .and_then(|s| s.terminated)
        .or(c.last_state.and_then(|s| s.terminated))
        .expect("terminated");
    assert_eq!(t.exit_code, 128);
    assert!(
        t.message
            .is_some_and(|m| m.contains("executable file not found")),
        "the runtime's message"
    );
    n.rt.script("c", Script::Run);
    n.wait("p", "Running once it can start", |p| {
        phase(p) == "Running" && ready(p)
    })
    .await;
    assert_eq!(n.rt.sandbox_ids().len(), 1);
}

#[tokio::test]
async fn a_pod_deleted_mid_start_leaves_nothing() {
    let n = node("midstart").await;
    n.rt.close_gate();
    n.create("p", json!({})).await;
    n.wait_rt("the VM is booting", |rt| rt.at_gate() == 1).await;
    // Deleted (grace 0) while its VM boots.
    n.pods()
        .delete(
            "p",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("delete");
    n.rt.open_gate();
    n.wait_rt("the VM booted and was removed", |rt| {
        rt.calls()
            .iter()
            .any(|c| matches!(c, Call::RunSandbox { .. }))
            && rt.sandbox_ids().is_empty()
    })
    .await;
    n.wait_gone("p").await;
}

#[tokio::test]
async fn image_pulls_follow_policy_and_back_off() {
    let n = node("images").await;
    // Unknown image: ErrImagePull with the registry's error, then ImagePullBackOff.
    n.create(
        "unknown",
        json!({"containers": [{"name": "c", "image": "example.test/nothing:1"}]}),
    )
    .await;
    n.wait("unknown", "ErrImagePull with the registry's error", |p| {
        container(p).state.and_then(|s| s.waiting).is_some_and(|w| {
            w.reason.as_deref() == Some("ErrImagePull")
                && w.message.is_some_and(|m| m.contains("manifest unknown"))
        })
    })
    .await;
    n.wait("unknown", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    // Never with the image absent.
    n.create(
        "never",
        json!({"containers": [{"name": "c", "image": "example.test/absent:1", "imagePullPolicy": "Never"}]}),
    )
    .await;
    n.wait("never", "ErrImageNeverPull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    // IfNotPresent with the image present: no pull.
    n.create("present", json!({})).await;
    n.wait("present", "Running", |p| phase(p) == "Running")
        .await;
    assert!(
        !n.rt
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Pull { reference, .. } if reference == "busybox:1.36")),
        "{:?}",
        n.rt.calls()
    );
}

#[tokio::test]
async fn an_exec_probe_fails_and_a_crash_is_restarted() {
    let n = node("exec").await;
    n.create(
        "p",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.36",
            "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1},
        }]}),
    )
    .await;
    n.wait("p", "Ready", ready).await;
    n.rt.exec_exits("check", 1);
    n.wait("p", "not Ready", |p| !ready(p)).await;
    let evs = n
        .events("p", &["Unhealthy: Readiness probe failed: fake failure"])
        .await;
    assert!(
        evs.iter()
            .any(|e| e == "Unhealthy: Readiness probe failed: fake failure"),
        "the command's output: {evs:?}"
    );
    n.rt.exec_exits("check", 0);
    n.wait("p", "Ready again", ready).await;
    // The running container dies on its own: restarted, lastState is the crash.
    n.rt.exit("c.0", 2);
    let p = n
        .wait("p", "restarted", |p| {
            container(p).restart_count == 1
                && container(p).state.is_some_and(|s| s.running.is_some())
        })
        .await;
    let last = container(&p)
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState");
    assert_eq!(last.exit_code, 2);
}

/// A `kubernetes.io/dockerconfigjson` Secret for `reg.test`.
async fn pull_secret(n: &Node, name: &str, user: &str) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    let cfg = json!({"auths": {"reg.test": {"auth": auth}}}).to_string();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(n.client.clone(), &n.ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": cfg},
            }))
            .expect("secret"),
        )
        .await
        .expect("secret created");
}

#[tokio::test]
async fn a_private_image_is_not_served_from_the_cache_to_a_pod_without_its_secret() {
    let n = node("private").await;
    const IMG: &str = "reg.test/team/app:1";
    n.rt.serve(IMG, Some("alice"));
    pull_secret(&n, "alice", "alice").await;
    pull_secret(&n, "mallory", "mallory").await;
    let pod = |secret: Option<&str>, policy: &str| {
        let mut spec =
            json!({"containers": [{"name": "c", "image": IMG, "imagePullPolicy": policy}]});
        if let Some(s) = secret {
            spec["imagePullSecrets"] = json!([{"name": s}]);
        }
        spec
    };
    n.create("owner", pod(Some("alice"), "IfNotPresent")).await;
    n.wait("owner", "Running", |p| phase(p) == "Running").await;
    // Present now. Without the secret: pulled again (anonymously) and refused by the
    // registry, not started from the node's copy.
    n.create("nosecret", pod(None, "IfNotPresent")).await;
    n.wait("nosecret", "ErrImagePull", |p| {
        container(p).state.and_then(|s| s.waiting).is_some_and(|w| {
            w.reason.as_deref() == Some("ErrImagePull")
                && w.message.is_some_and(|m| m.contains("401 Unauthorized"))
        })
    })
    .await;
    // Other credentials: the same.
    n.create("other", pod(Some("mallory"), "IfNotPresent"))
        .await;
    n.wait("other", "ErrImagePull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImagePull")
    })
    .await;
    // Never: refused outright.
    n.create("never", pod(None, "Never")).await;
    n.wait("never", "ErrImageNeverPull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    // The same secret in another pod: the cached copy, no pull.
    let pulls = |rt: &FakeRuntime| {
        rt.calls()
            .iter()
            .filter(|c| matches!(c, Call::Pull { user: Some(u), .. } if u == "alice"))
            .count()
    };
    assert_eq!(pulls(&n.rt), 1);
    n.create("friend", pod(Some("alice"), "IfNotPresent")).await;
    n.wait("friend", "Running", |p| phase(p) == "Running").await;
    assert_eq!(pulls(&n.rt), 1, "{:?}", n.rt.calls());
    for p in ["nosecret", "other", "never"] {
        let pod = n.pods().get(p).await.expect("pod");
        assert_eq!(phase(&pod), "Pending", "{p}");
    }
}

#[tokio::test]
async fn container_logs_count_in_its_ephemeral_storage() {
    use h8s_runtime::ContainerService;
    let n = node("logs").await;
    n.create(
        "chatty",
        json!({"containers": [{
            "name": "c", "image": "busybox:1.36",
            "resources": {"limits": {"ephemeral-storage": "1Mi"}},
        }]}),
    )
    .await;
    let p = n.wait("chatty", "Running", |p| phase(p) == "Running").await;
    let id = container(&p).container_id.expect("containerID");
    let sandbox = id
        .trim_start_matches("h8s-vm://")
        .split('/')
        .next()
        .expect("sandbox")
        .to_string();
    // 4 KiB in the writable layer; 600 KiB of log and 600 KiB rotated: over 1Mi only
    // with the logs.
    let log = n.rt.log_path(&sandbox, "c.0");
    std::fs::create_dir_all(log.parent().expect("dir")).expect("log dir");
    std::fs::write(&log, vec![b'x'; 600 << 10]).expect("log");
    std::fs::write(
        format!("{}.20261206T000000.000000000Z", log.display()),
        vec![b'x'; 600 << 10],
    )
    .expect("rotated log");
    let p = n.wait("chatty", "evicted", |p| phase(p) == "Failed").await;
    let st = p.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        st.message.as_deref(),
        // kubelet checks the pod's total before each container's own limit.
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ")
    );
}

/// A new pod VM gets its Network's whole Service table from the feed's `push_new`, before
/// it returns (the worker starts containers only after it), while the feed's periodic passes
/// push Service changes to the other VMs at the same time; and in the end every VM has the
/// current table (the passes and the new VMs' first pushes never interleave on one VM, so
/// what the feed records as told is what the VM applied).
#[tokio::test]
async fn a_new_vm_gets_its_service_table_at_once_beside_the_periodic_pass() {
    use h8s_runtime::SandboxService;
    use k8s_openapi::api::core::v1::Service;
    let n = node("svcfeed").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(FakeRuntime::new(&dir.path().join("logs")));
    let owner = "feed-test";
    let feed = crate::services::ServiceFeed::start(
        n.client.clone(),
        rt.clone(),
        owner,
        false,
        None,
        crate::PodTimers::default(),
    );
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(feed.clone().run(stopped));
    let svcs: Api<Service> = Api::namespaced(n.client.clone(), &n.ns);
    let service = |name: &str| -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}}),
        )
        .expect("service")
    };
    svcs.create(&PostParams::default(), &service("s0"))
        .await
        .expect("service created");
    let vm = |i: usize| {
        let mut cfg = h8s_runtime::SandboxConfig::new(format!("vm-{i}"));
        cfg.labels = std::collections::BTreeMap::from([
            (crate::pods::LABEL_OWNER.to_string(), owner.to_string()),
            (crate::pods::LABEL_NAMESPACE.to_string(), n.ns.clone()),
        ]);
        cfg.network = Some(h8s_runtime::NetworkAttachment {
            tap: format!("tap{i}"),
            mac: format!("02:00:00:00:00:{i:02x}"),
            address: format!("10.9.0.{}/24", i + 2),
            gateway: Some("10.9.0.1".into()),
            mtu: 1450,
            dns: vec![],
            cluster_dns: None,
        });
        cfg
    };
    let names = |id: &str| -> Vec<String> {
        rt.services_of(id)
            .map(|t| {
                t.services
                    .keys()
                    .filter(|k| k.namespace == n.ns)
                    .map(|k| k.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The first VM, while the feed's caches fill: it gets s0 (from a pass or at once).
    let id = rt.run_sandbox(vm(0)).await.expect("vm");
    let start = tokio::time::Instant::now();
    while !names(&id).contains(&"s0".to_string()) {
        let st = rt.sandbox_status(&id).await.expect("status");
        feed.push_new(&st, Duration::from_secs(5)).await;
        assert!(start.elapsed() < DEADLINE, "s0 never reached {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Service churn wakes the periodic pass over and over meanwhile.
    let churn = {
        let svcs = svcs.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("c{}", i % 4);
                if svcs
                    .create(&PostParams::default(), &service(&name))
                    .await
                    .is_err()
                {
                    let _ = svcs.delete(&name, &DeleteParams::default()).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut ids = vec![id];
    for i in 1..8 {
        let id = rt.run_sandbox(vm(i)).await.expect("vm");
        let st = rt.sandbox_status(&id).await.expect("status");
        feed.push_new(&st, Duration::from_secs(5)).await;
        // Before push_new returned: the whole table, first.
        assert!(
            names(&id).contains(&"s0".to_string()),
            "{id}: {:?}",
            names(&id)
        );
        let first = rt.calls().into_iter().find_map(|c| match c {
            Call::UpdateServices { sandbox, full, .. } if sandbox == id => Some(full),
            _ => None,
        });
        assert_eq!(first, Some(true), "{id}'s first update is its whole table");
        ids.push(id);
    }
    churn.abort();
    let _ = churn.await;
    svcs.create(&PostParams::default(), &service("last"))
        .await
        .expect("service created");
    // Every VM converges on the API's Services.
    let start = tokio::time::Instant::now();
    loop {
        let mut want: Vec<String> = svcs
            .list(&ListParams::default())
            .await
            .expect("services")
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        want.sort();
        let behind: Vec<(&String, Vec<String>)> = ids
            .iter()
            .map(|id| (id, names(id)))
            .filter(|(_, got)| *got != want)
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "VMs behind the API's Services {want:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The generations each VM saw only grew (no update was applied out of order).
    for id in &ids {
        let gens: Vec<u64> = rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::UpdateServices {
                    sandbox,
                    generation,
                    ..
                } if sandbox == *id => Some(generation),
                _ => None,
            })
            .collect();
        assert!(gens.windows(2).all(|w| w[0] < w[1]), "{id}: {gens:?}");
    }
}
