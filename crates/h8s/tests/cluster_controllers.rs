//! The cluster controllers (node lifecycle + taint eviction, endpoints and EndpointSlices,
//! service accounts and the root CA, PodDisruptionBudget status, ResourceQuota status)
//! against one real `h8s server` shared by every test of this binary. Each test runs the
//! controller it exercises in its own runtime (`h8s_controllers::<module>::run`), with
//! shortened timers, and works in its own namespace / on its own nodes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use h8s_client::k8s_openapi;
use h8s_client::kube;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

/// The `h8s server` of this binary, with its own controller manager, scheduler and node
/// agent turned off (when the binary has them): each test runs the controller it tests,
/// and plays the node agent itself.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    url: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = env!("CARGO_BIN_EXE_h8s");
        let help = Command::new(bin)
            .args(["server", "--help"])
            .output()
            .expect("h8s server --help");
        let help = String::from_utf8_lossy(&help.stdout);
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"));
        for flag in [
            "--disable-controllers",
            "--disable-scheduler",
            "--disable-agent",
        ] {
            if help.contains(flag) {
                cmd.arg(flag);
            }
        }
        let mut child = cmd
            .env("H8S_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning h8s server");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
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
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("h8s server did not become ready in 30 s");
        };
        let mut parts = line.split_whitespace();
        assert_eq!(
            parts.next(),
            Some("ready"),
            "unexpected first line: {line:?}"
        );
        let url = parts.next().expect("url").to_string();
        let kubeconfig = PathBuf::from(parts.next().expect("kubeconfig path"));
        Server {
            child,
            dir,
            kubeconfig,
            url,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM by PID, then SIGKILL if it lingers.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..250 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

extern "C" fn stop_server() {
    let s = SERVER.lock().ok().and_then(|mut s| s.take());
    drop(s);
}

/// Where the shared server's admin kubeconfig and data dir are.
struct Shared {
    kubeconfig: PathBuf,
    data_dir: PathBuf,
    url: String,
}

/// The server shared by this test binary, started on first use and stopped at exit.
fn server() -> Shared {
    let mut g = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let s = match &*g {
        Some(s) => s,
        None => {
            // SAFETY: `stop_server` is a plain `extern "C" fn()` that does not unwind (it
            // drops a value whose Drop only signals and waits for a child process);
            // registering it has no other precondition.
            unsafe {
                libc::atexit(stop_server);
            }
            g.insert(Server::start())
        }
    };
    Shared {
        kubeconfig: s.kubeconfig.clone(),
        data_dir: s.data_dir(),
        url: s.url.clone(),
    }
}

async fn client() -> kube::Client {
    // The controllers' logs, for debugging: RUST_LOG=h8s_controllers=debug.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let s = server();
    h8s_client::from_kubeconfig(&s.kubeconfig)
        .await
        .expect("client from the admin kubeconfig")
}

/// POSTs one Eviction with curl (no client-side retries) and returns the HTTP status.
async fn evict_once(ns: &str, pod: &str) -> String {
    let s = server();
    let token = std::fs::read_to_string(s.data_dir.join("admin.token")).expect("admin.token");
    let url = format!("{}/api/v1/namespaces/{ns}/pods/{pod}/eviction", s.url);
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": ns}})
    .to_string();
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
            &url,
        ])
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn timers() -> h8s_controllers::Timers {
    h8s_controllers::Timers {
        node_monitor_grace_period: Duration::from_secs(3),
        node_monitor_period: Duration::from_millis(300),
        resync: Duration::from_secs(5),
        cronjob_sync: Duration::from_secs(1),
        ..Default::default()
    }
}

/// Starts one controller in the background of the current test's runtime.
fn start<F, Fut>(client: &kube::Client, run: F)
where
    F: FnOnce(h8s_controllers::Context) -> Fut,
    Fut: std::future::Future<Output = Result<(), h8s_controllers::Error>> + Send + 'static,
{
    let ctx = h8s_controllers::Context {
        client: client.clone(),
        timers: timers(),
        root_ca_pem: std::fs::read_to_string(server().data_dir.join("ca.crt")).expect("server CA"),
        lb_pool: None,
        informers: Default::default(),
    };
    let fut = run(ctx);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            panic!("controller stopped: {e}");
        }
    });
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object")
}

/// A namespace with its `default` ServiceAccount (the ServiceAccount admission wants it
/// before a pod can be created; the serviceaccount controller is not running here).
async fn namespace(c: &kube::Client, name: &str) {
    bare_namespace(c, name).await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(c.clone(), name);
    match sas
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "default"}})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create default service account: {e}"),
    }
}

async fn bare_namespace(c: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(c.clone());
    api.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": name}})),
    )
    .await
    .expect("create namespace");
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Creates a Node and sets its status Ready=True, as a node agent would.
async fn ready_node(c: &kube::Client, name: &str, taints: Value) -> Node {
    let api: Api<Node> = Api::all(c.clone());
    let n: Node = api
        .create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "z1"}},
                         "spec": {"taints": taints}}),
            ),
        )
        .await
        .expect("create node");
    set_node_ready(c, n, "True").await
}

async fn set_node_ready(c: &kube::Client, mut n: Node, status: &str) -> Node {
    let api: Api<Node> = Api::all(c.clone());
    let now = now_rfc3339();
    n.status = Some(from(json!({"conditions": [
        {"type": "Ready", "status": status, "reason": "KubeletReady", "message": "kubelet is posting ready status",
         "lastHeartbeatTime": now, "lastTransitionTime": now}
    ]})));
    api.replace_status(
        n.metadata.name.as_deref().unwrap_or_default(),
        &PostParams::default(),
        &n,
    )
    .await
    .expect("node status")
}

/// Renews (or creates) the node's Lease in kube-node-lease.
async fn renew_lease(c: &kube::Client, node: &str) {
    let api: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let now = now_rfc3339();
    let body = json!({"metadata": {"name": node},
                      "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    match api.get_opt(node).await.expect("get lease") {
        None => {
            api.create(&PostParams::default(), &from(body))
                .await
                .expect("create lease");
        }
        Some(mut l) => {
            l.spec.get_or_insert_with(Default::default).renew_time = Some(from(json!(now)));
            api.replace(node, &PostParams::default(), &l)
                .await
                .expect("renew lease");
        }
    }
}

/// A pod bound to `node` (or unbound), with tolerations and labels; status Running and
/// Ready=`ready` set as a node agent would.
async fn pod(
    c: &kube::Client,
    ns: &str,
    name: &str,
    node: Option<&str>,
    labels: Value,
    tolerations: Value,
    ready: Option<bool>,
) -> Pod {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
        "ports": [{"name": "http", "containerPort": 8080}]}],
        "tolerations": tolerations, "terminationGracePeriodSeconds": 0});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let p: Pod = api
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})),
        )
        .await
        .expect("create pod");
    match ready {
        None => p,
        Some(r) => set_pod_ready(c, p, r).await,
    }
}

async fn set_pod_ready(c: &kube::Client, mut p: Pod, ready: bool) -> Pod {
    let api: Api<Pod> = Api::namespaced(c.clone(), p.metadata.namespace.as_deref().unwrap());
    let now = now_rfc3339();
    let r = if ready { "True" } else { "False" };
    let idx = pod_ip_suffix(p.metadata.name.as_deref().unwrap());
    p.status = Some(from(
        json!({"phase": "Running", "podIP": format!("10.9.0.{idx}"),
        "podIPs": [{"ip": format!("10.9.0.{idx}")}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": r, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": now}
        ]}),
    ));
    api.replace_status(
        p.metadata.name.as_deref().unwrap(),
        &PostParams::default(),
        &p,
    )
    .await
    .expect("pod status")
}

/// A distinct last IP byte per (short) pod name.
fn pod_ip_suffix(name: &str) -> u32 {
    name.bytes().map(u32::from).sum::<u32>() % 240 + 10
}

fn taint_keys(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

fn ready_condition(n: &Node) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_evicted_then_comes_back() {
    let c = client().await;
    start(&c, h8s_controllers::nodelifecycle::run);
    let ns = "cl-nodes";
    namespace(&c, ns).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let node = "cl-n1";
    ready_node(&c, node, json!([])).await;
    renew_lease(&c, node).await;
    // Another node stays healthy: were every node down, the controller would be in
    // disruption mode and taint nothing NoExecute (as kube).
    ready_node(&c, "cl-keeper", json!([])).await;
    let lc = c.clone();
    let keeper = tokio::spawn(async move {
        loop {
            renew_lease(&lc, "cl-keeper").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let ne = |key: &str, secs: Option<i64>| {
        let mut t = json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        t
    };
    // No toleration of its own: the DefaultTolerationSeconds admission (when the server
    // runs it) gives it 300 s, else it is evicted at once.
    let plain = pod(
        &c,
        ns,
        "plain",
        Some(node),
        json!({}),
        json!([]),
        Some(true),
    )
    .await;
    let plain_tolerates = plain
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key.as_deref() == Some(UNREACHABLE) && t.toleration_seconds.is_some())
        });
    pod(
        &c,
        ns,
        "short",
        Some(node),
        json!({}),
        json!([ne(UNREACHABLE, Some(2))]),
        Some(true),
    )
    .await;
    pod(
        &c,
        ns,
        "forever",
        Some(node),
        json!({}),
        json!([ne(UNREACHABLE, None)]),
        Some(true),
    )
    .await;

    // While the lease is renewed (for longer than the grace period) the node stays Ready.
    for _ in 0..10 {
        renew_lease(&c, node).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = nodes.get(node).await.unwrap();
    assert_eq!(ready_condition(&n).unwrap().status, "True");
    assert!(taint_keys(&n).is_empty(), "{:?}", taint_keys(&n));

    // The lease stops: Ready=Unknown and the unreachable taints.
    let n = eventually(20, "node Ready=Unknown and tainted", || async {
        let n = nodes.get(node).await.unwrap();
        let t = taint_keys(&n);
        (ready_condition(&n)?.status == "Unknown"
            && t.contains(&(UNREACHABLE.into(), "NoExecute".into()))
            && t.contains(&(UNREACHABLE.into(), "NoSchedule".into())))
        .then_some(n)
    })
    .await;
    let rc = ready_condition(&n).unwrap();
    assert_eq!(rc.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        rc.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let ne_taint = n
        .spec
        .as_ref()
        .unwrap()
        .taints
        .as_ref()
        .unwrap()
        .iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap()
        .clone();
    assert!(
        ne_taint.time_added.is_some(),
        "NoExecute taint carries timeAdded"
    );

    // The 2 s toleration runs out: that pod goes; the one tolerating forever stays.
    eventually(20, "short-tolerating pod deleted", || async {
        pods.get_opt("short").await.unwrap().is_none().then_some(())
    })
    .await;
    if plain_tolerates {
        assert!(
            pods.get_opt("plain").await.unwrap().is_some(),
            "300 s default toleration"
        );
    } else {
        eventually(10, "untolerating pod deleted", || async {
            pods.get_opt("plain").await.unwrap().is_none().then_some(())
        })
        .await;
    }
    // MarkPodsNotReady: the pods of a node gone silent are not Ready any more.
    let forever = eventually(10, "pod marked not ready", || async {
        let p = pods.get("forever").await.unwrap();
        let ready = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone();
        (ready == "False").then_some(p)
    })
    .await;
    assert!(forever.metadata.deletion_timestamp.is_none());

    // The node comes back: status Ready and a renewed lease clear the taints.
    let n = nodes.get(node).await.unwrap();
    set_node_ready(&c, n, "True").await;
    renew_lease(&c, node).await;
    eventually(10, "taints removed", || async {
        let n = nodes.get(node).await.unwrap();
        taint_keys(&n).is_empty().then_some(())
    })
    .await;
    // It keeps being Ready while the lease is renewed.
    for _ in 0..8 {
        renew_lease(&c, node).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = nodes.get(node).await.unwrap();
    assert_eq!(ready_condition(&n).unwrap().status, "True");
    assert!(taint_keys(&n).is_empty());
    assert!(pods.get_opt("forever").await.unwrap().is_some());
    keeper.abort();
    let _ = nodes.delete("cl-keeper", &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noexecute_taint_evicts_untolerating_pods_at_once() {
    let c = client().await;
    start(&c, h8s_controllers::nodelifecycle::run);
    let ns = "cl-taints";
    namespace(&c, ns).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let node = "cl-n2";
    ready_node(&c, node, json!([])).await;
    // Keep this node alive for the whole test.
    let lc = c.clone();
    let beat = tokio::spawn(async move {
        loop {
            renew_lease(&lc, node).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    pod(&c, ns, "victim", Some(node), json!({}), json!([]), None).await;
    pod(
        &c,
        ns,
        "tolerant",
        Some(node),
        json!({}),
        json!([{"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute"}]),
        None,
    )
    .await;
    pod(&c, ns, "elsewhere", None, json!({}), json!([]), None).await;
    // Tolerates the taint for 8 s: the taint goes before, so the eviction is cancelled.
    pod(
        &c,
        ns,
        "patient",
        Some(node),
        json!({}),
        json!([{"key": "example.com/maintenance", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 8}]),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pods.get_opt("victim").await.unwrap().is_some(),
        "no taint, no eviction"
    );

    let nodes: Api<Node> = Api::all(c.clone());
    let mut n = nodes.get(node).await.unwrap();
    n.spec.get_or_insert_with(Default::default).taints = Some(from(
        json!([{"key": "example.com/maintenance", "effect": "NoExecute"}]),
    ));
    nodes
        .replace(node, &PostParams::default(), &n)
        .await
        .unwrap();

    eventually(10, "untolerating pod deleted", || async {
        pods.get_opt("victim")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pods.get_opt("tolerant").await.unwrap().is_some());
    assert!(pods.get_opt("elsewhere").await.unwrap().is_some());
    // A foreign taint is the admin's: the controller leaves it.
    let n = nodes.get(node).await.unwrap();
    assert_eq!(
        taint_keys(&n),
        vec![(
            "example.com/maintenance".to_string(),
            "NoExecute".to_string()
        )]
    );
    // The eviction was recorded as Kubernetes words it (when events.k8s.io is served).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), ns);
    if let Ok(list) = events.list(&Default::default()).await {
        assert!(
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("TaintManagerEviction")
                    && e.note.as_deref() == Some("Marking for deletion Pod cl-taints/victim")),
            "{:?}",
            list.items
                .iter()
                .map(|e| (&e.reason, &e.note))
                .collect::<Vec<_>>()
        );
    }
    // The taint goes: the pending eviction of "patient" is cancelled.
    let tainted_at = std::time::Instant::now();
    let mut n = nodes.get(node).await.unwrap();
    n.spec.get_or_insert_with(Default::default).taints = Some(vec![]);
    nodes
        .replace(node, &PostParams::default(), &n)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(tainted_at.elapsed())).await;
    assert!(
        pods.get_opt("patient").await.unwrap().is_some(),
        "eviction cancelled with the taint"
    );
    if let Ok(list) = events.list(&Default::default()).await {
        assert!(
            list.items
                .iter()
                .any(|e| e.note.as_deref() == Some("Cancelling deletion of Pod cl-taints/patient")),
            "{:?}",
            list.items
                .iter()
                .map(|e| (&e.reason, &e.note))
                .collect::<Vec<_>>()
        );
    }
    beat.abort();
    let _ = nodes.delete(node, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_and_slices_follow_pods() {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let c = client().await;
    start(&c, h8s_controllers::endpoints::run);
    let ns = "cl-ep";
    namespace(&c, ns).await;
    ready_node(&c, "cl-ep-n", json!([])).await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), ns);
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let svc = svcs
        .create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": "web", "labels": {"tier": "front"}},
                "spec": {"selector": {"app": "web"}, "ports": [
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9090, "targetPort": 9100}]}}),
            ),
        )
        .await
        .expect("create service");
    let web = json!({"app": "web"});
    let a = pod(
        &c,
        ns,
        "a",
        Some("cl-ep-n"),
        web.clone(),
        json!([]),
        Some(true),
    )
    .await;
    let b = pod(
        &c,
        ns,
        "b",
        Some("cl-ep-n"),
        web.clone(),
        json!([]),
        Some(false),
    )
    .await;
    pod(
        &c,
        ns,
        "other",
        Some("cl-ep-n"),
        json!({"app": "db"}),
        json!([]),
        Some(true),
    )
    .await;
    pod(
        &c,
        ns,
        "noip",
        Some("cl-ep-n"),
        web.clone(),
        json!([]),
        None,
    )
    .await;
    let ip = |p: &Pod| p.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (ip_a, ip_b) = (ip(&a), ip(&b));

    let addrs = |e: &Endpoints, ready: bool| -> Vec<String> {
        e.subsets
            .iter()
            .flatten()
            .flat_map(|s| {
                if ready {
                    &s.addresses
                } else {
                    &s.not_ready_addresses
                }
            })
            .flatten()
            .map(|a| a.ip.clone())
            .collect()
    };
    let e = eventually(15, "endpoints with a ready and b not ready", || async {
        let e = eps.get_opt("web").await.unwrap()?;
        (addrs(&e, true) == [ip_a.clone()] && addrs(&e, false) == [ip_b.clone()]).then_some(e)
    })
    .await;
    let subset = &e.subsets.as_ref().unwrap()[0];
    let mut ports: Vec<(String, i32)> = subset
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("metrics".to_string(), 9100)]
    );
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(addr.node_name.as_deref(), Some("cl-ep-n"));
    assert_eq!(addr.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    assert_eq!(e.metadata.labels.as_ref().unwrap()["tier"], "front");

    // EndpointSlices, when the server serves discovery.k8s.io/v1.
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), ns);
    let lp = kube::api::ListParams::default().labels("kubernetes.io/service-name=web");
    let served = slices.list(&lp).await.is_ok();
    if served {
        let sl = eventually(15, "an EndpointSlice with both pods", || async {
            let l = slices.list(&lp).await.unwrap();
            l.items.into_iter().find(|s| s.endpoints.len() == 2)
        })
        .await;
        let l = sl.metadata.labels.as_ref().unwrap();
        assert_eq!(
            l["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        let o = &sl.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("Service", "web"));
        assert_eq!(o.uid, svc.metadata.uid.clone().unwrap());
        assert_eq!(sl.address_type, "IPv4");
        let ep_b = sl
            .endpoints
            .iter()
            .find(|e| e.addresses == [ip_b.clone()])
            .unwrap();
        let cnd = ep_b.conditions.as_ref().unwrap();
        assert_eq!(
            (cnd.ready, cnd.serving, cnd.terminating),
            (Some(false), Some(false), Some(false))
        );
        let ep_a = sl
            .endpoints
            .iter()
            .find(|e| e.addresses == [ip_a.clone()])
            .unwrap();
        assert_eq!(ep_a.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(ep_a.zone.as_deref(), Some("z1"));
        assert_eq!(ep_a.node_name.as_deref(), Some("cl-ep-n"));
        assert_eq!(ep_a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    // b becomes ready; a goes away.
    set_pod_ready(&c, b, true).await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually(15, "endpoints with only b, ready", || async {
        let e = eps.get_opt("web").await.unwrap()?;
        (addrs(&e, true) == [ip_b.clone()] && addrs(&e, false).is_empty()).then_some(())
    })
    .await;
    if served {
        eventually(15, "slice with only b, ready", || async {
            let l = slices.list(&lp).await.unwrap();
            let all: Vec<_> = l.items.iter().flat_map(|s| &s.endpoints).collect();
            (all.len() == 1
                && all[0].addresses == [ip_b.clone()]
                && all[0].conditions.as_ref()?.ready == Some(true))
            .then_some(())
        })
        .await;
    }

    // A Service without a selector keeps the Endpoints its owner writes.
    svcs.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 5432}]}})),
    )
    .await
    .unwrap();
    eps.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "manual"},
            "subsets": [{"addresses": [{"ip": "192.0.2.7"}], "ports": [{"port": 5432}]}]})),
    )
    .await
    .unwrap();

    // The Service goes: so do its Endpoints.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(20, "endpoints of the deleted service removed", || async {
        eps.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    let m = eps.get("manual").await.unwrap();
    assert_eq!(addrs(&m, true), ["192.0.2.7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_default_service_account_and_root_ca() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
    let c = client().await;
    start(&c, h8s_controllers::serviceaccount::run);
    let ca = std::fs::read_to_string(server().data_dir.join("ca.crt")).unwrap();
    let ns = "cl-sa";
    bare_namespace(&c, ns).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let sa = eventually(15, "default service account", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let ca_of = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("ca.crt").cloned());
    let cm = eventually(15, "kube-root-ca.crt", || async {
        cms.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;
    assert_eq!(ca_of(&cm).as_deref(), Some(ca.as_str()));
    // Namespaces that existed before the controller started have them too.
    let def: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    eventually(15, "kube-root-ca.crt in kube-system", || async {
        def.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;

    // Deleted: created again (a new object).
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "default service account recreated", || async {
        let s = sas.get_opt("default").await.unwrap()?;
        (s.metadata.uid != sa.metadata.uid).then_some(())
    })
    .await;
    // Edited: restored.
    let mut edited = cm.clone();
    edited.data = Some([("ca.crt".to_string(), "forged".to_string())].into());
    cms.replace("kube-root-ca.crt", &PostParams::default(), &edited)
        .await
        .unwrap();
    eventually(15, "kube-root-ca.crt restored", || async {
        let cm = cms.get("kube-root-ca.crt").await.unwrap();
        (ca_of(&cm).as_deref() == Some(ca.as_str())).then_some(())
    })
    .await;
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "kube-root-ca.crt recreated", || async {
        let cm = cms.get_opt("kube-root-ca.crt").await.unwrap()?;
        (ca_of(&cm).as_deref() == Some(ca.as_str())).then_some(())
    })
    .await;

    // A legacy token Secret is filled with a token the API accepts, and goes with its
    // ServiceAccount.
    sas.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "builder"}})),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "builder-token",
                "annotations": {"kubernetes.io/service-account.name": "builder"}},
                "type": "kubernetes.io/service-account-token"})),
        )
        .await
        .unwrap();
    let s = eventually(15, "token secret filled", || async {
        let s = secrets.get("builder-token").await.unwrap();
        s.data.as_ref()?.get("token")?;
        Some(s)
    })
    .await;
    let data = s.data.unwrap();
    assert_eq!(data["ca.crt"].0, ca.as_bytes());
    assert_eq!(data["namespace"].0, ns.as_bytes());
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    // The token authenticates as the ServiceAccount.
    let review: k8s_openapi::api::authentication::v1::TokenReview = {
        let api: Api<k8s_openapi::api::authentication::v1::TokenReview> = Api::all(c.clone());
        api.create(
            &PostParams::default(),
            &from(json!({"spec": {"token": token}})),
        )
        .await
        .expect("TokenReview")
    };
    let st = review.status.unwrap();
    assert_eq!(st.authenticated, Some(true), "{st:?}");
    assert_eq!(
        st.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:cl-sa:builder")
    );
    sas.delete("builder", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        15,
        "token secret of the deleted service account removed",
        || async {
            secrets
                .get_opt("builder-token")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budget_status_follows_pods_and_scale() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let c = client().await;
    start(&c, h8s_controllers::pdb::run);
    let ns = "cl-pdb";
    namespace(&c, ns).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);

    // minAvailable as a number: counts the matching pods themselves.
    for (n, ready) in [("db-0", true), ("db-1", true), ("db-2", false)] {
        pod(
            &c,
            ns,
            n,
            None,
            json!({"app": "db"}),
            json!([]),
            Some(ready),
        )
        .await;
    }
    pod(
        &c,
        ns,
        "other",
        None,
        json!({"app": "web"}),
        json!([]),
        Some(true),
    )
    .await;
    let b = pdbs
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "db"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})),
        )
        .await
        .expect("create pdb");
    let figures = |p: &PodDisruptionBudget| {
        p.status.as_ref().map(|s| {
            (
                s.current_healthy,
                s.desired_healthy,
                s.expected_pods,
                s.disruptions_allowed,
            )
        })
    };
    let st = eventually(15, "pdb db status", || async {
        let p = pdbs.get("db").await.unwrap();
        (figures(&p) == Some((2, 1, 3, 1))).then_some(p)
    })
    .await
    .status
    .unwrap();
    assert_eq!(st.observed_generation, b.metadata.generation);
    let cond = &st.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );

    // maxUnavailable: expected pods come from the owning ReplicaSet's scale.
    let rs: ReplicaSet = Api::<ReplicaSet>::namespaced(c.clone(), ns)
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "api"}, "spec": {"replicas": 4,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})),
        )
        .await
        .expect("create replicaset");
    let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api",
        "uid": rs.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    for (n, ready) in [
        ("api-a", true),
        ("api-b", true),
        ("api-c", true),
        ("api-d", false),
    ] {
        let api: Api<Pod> = Api::namespaced(c.clone(), ns);
        let p: Pod = api
            .create(
                &PostParams::default(),
                &from(json!({"metadata": {"name": n, "labels": {"app": "api"}, "ownerReferences": owner},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}],
                             "terminationGracePeriodSeconds": 0}})),
            )
            .await
            .expect("create owned pod");
        set_pod_ready(&c, p, ready).await;
    }
    pdbs.create(
        &PostParams::default(),
        &from(json!({"metadata": {"name": "api"},
            "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "api"}}}})),
    )
    .await
    .unwrap();
    // 25% of 4 = 1 may be unavailable → 3 desired; 3 ready → none may go.
    let p = eventually(15, "pdb api status (insufficient)", || async {
        let p = pdbs.get("api").await.unwrap();
        (figures(&p) == Some((3, 3, 4, 0))).then_some(p)
    })
    .await;
    assert_eq!(
        p.status.unwrap().conditions.unwrap()[0].reason,
        "InsufficientPods"
    );
    let d = pods.get("api-d").await.unwrap();
    set_pod_ready(&c, d, true).await;
    eventually(15, "pdb api status (sufficient)", || async {
        let p = pdbs.get("api").await.unwrap();
        (figures(&p) == Some((4, 3, 4, 1))).then_some(())
    })
    .await;

    // The eviction API reads it: one eviction goes through, the next is refused.
    let ep = kube::api::EvictParams::default();
    pods.evict("api-a", &ep)
        .await
        .expect("first eviction allowed");
    eventually(15, "budget used up", || async {
        let p = pdbs.get("api").await.unwrap();
        (p.status?.disruptions_allowed == 0).then_some(())
    })
    .await;
    // (kube's client retries a 429 for minutes: ask with curl, once.)
    let code = evict_once(ns, "api-b").await;
    assert_eq!(code, "429", "second eviction should be refused");
    assert!(pods.get_opt("api-b").await.unwrap().is_some());

    // A matching pod without a controller makes a percentage unusable: SyncFailed.
    pod(
        &c,
        ns,
        "api-stray",
        None,
        json!({"app": "api"}),
        json!([]),
        Some(true),
    )
    .await;
    let p = eventually(15, "pdb api SyncFailed", || async {
        let p = pdbs.get("api").await.unwrap();
        let c = p.status.as_ref()?.conditions.as_ref()?[0].clone();
        (c.reason == "SyncFailed").then_some(p)
    })
    .await;
    assert_eq!(p.status.unwrap().disruptions_allowed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_quota_usage_is_counted() {
    use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota, Secret, Service};
    let c = client().await;
    start(&c, h8s_controllers::quota::run);
    let ns = "cl-quota";
    namespace(&c, ns).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), ns);
    quotas
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "q"}, "spec": {"hard": {
                "pods": "10", "requests.cpu": "4", "requests.memory": "1Gi", "limits.memory": "2Gi",
                "configmaps": "10", "secrets": "10", "services": "5", "services.nodeports": "4",
                "count/deployments.apps": "3"}}})),
        )
        .await
        .expect("create quota");
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let res_pod = |name: &str, cpu: &str, mem: &str, limit: Option<&str>| {
        let mut r = json!({"requests": {"cpu": cpu, "memory": mem}});
        if let Some(l) = limit {
            r["limits"] = json!({"memory": l});
        }
        from::<Pod>(json!({"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": r}]}}))
    };
    pods.create(
        &PostParams::default(),
        &res_pod("a", "500m", "128Mi", Some("256Mi")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &res_pod("b", "250m", "64Mi", Some("64Mi")),
    )
    .await
    .unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), ns)
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(c.clone(), ns)
        .create(
            &PostParams::default(),
            &from(
                json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort",
                "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
            ),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), ns)
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "d"}, "spec": {"replicas": 0,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})),
        )
        .await
        .unwrap();

    let used = |q: &ResourceQuota, k: &str| {
        q.status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .and_then(|u| u.get(k))
            .map(|v| v.0.clone())
    };
    // Other tests' controllers may add objects to this namespace (kube-root-ca.crt):
    // config maps and secrets are compared with what is there.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let q = eventually(20, "quota usage", || async {
        let q = quotas.get("q").await.unwrap();
        let ncm = cms
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
            .to_string();
        let nsec = secrets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
            .to_string();
        let want = [
            ("pods", "2".to_string()),
            ("requests.cpu", "750m".into()),
            ("requests.memory", "192Mi".into()),
            ("limits.memory", "320Mi".into()),
            ("services", "1".into()),
            ("services.nodeports", "2".into()),
            ("count/deployments.apps", "1".into()),
            ("configmaps", ncm),
            ("secrets", nsec),
        ];
        want.iter()
            .all(|(k, v)| used(&q, k).as_deref() == Some(v.as_str()))
            .then_some(q)
    })
    .await;
    let st = q.status.unwrap();
    assert_eq!(st.hard.as_ref().unwrap()["requests.cpu"].0, "4");
    assert_eq!(st.hard.unwrap().len(), st.used.unwrap().len());

    // A pod goes: usage follows.
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually(20, "usage after a delete", || async {
        let q = quotas.get("q").await.unwrap();
        (used(&q, "pods").as_deref() == Some("1")
            && used(&q, "requests.cpu").as_deref() == Some("250m")
            && used(&q, "limits.memory").as_deref() == Some("64Mi"))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_get_segments_finalizers_and_tenant_defaults() {
    use h8s_controllers::network::{NetNamespace, FIRST_SEGMENT};
    use h8s_types::Network;
    let c = client().await;
    start(&c, h8s_controllers::network::run);
    start(&c, h8s_controllers::namespace::run);
    let nets: Api<Network> = Api::all(c.clone());
    let nss: Api<NetNamespace> = Api::all(c.clone());
    let pp = PostParams::default();
    let ns = |name: &str, tenant: &str, network: Option<&str>| -> NetNamespace {
        from(
            json!({"metadata": {"name": name, "labels": {"tenancy.h8s.io/tenant": tenant}},
            "spec": {"network": network}}),
        )
    };
    let active = |name: &'static str| {
        let nets = nets.clone();
        async move {
            eventually(20, &format!("network {name} Active"), || async {
                let n = nets.get_opt(name).await.unwrap()?;
                let phase = n.status.as_ref()?.phase.as_deref()?;
                (phase == "Active").then_some(n)
            })
            .await
        }
    };
    let segment = |n: &Network| -> u32 {
        n.spec
            .provider_network_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("segment id")
    };
    // Two tenants' namespaces without spec.network: each tenant gets its own default
    // Network on its own segment.
    nss.create(&pp, &ns("netc-a", "netca", None)).await.unwrap();
    nss.create(&pp, &ns("netc-b", "netcb", None)).await.unwrap();
    let a = active("tenant-netca").await;
    let b = active("tenant-netcb").await;
    assert_eq!(a.spec.tenant_id.as_deref(), Some("netca"));
    assert_eq!(
        a.metadata.finalizers.as_deref(),
        Some(&["networks.h8s.io/namespaces".to_string()][..])
    );
    assert!(segment(&a) >= FIRST_SEGMENT && segment(&b) >= FIRST_SEGMENT);
    assert_ne!(segment(&a), segment(&b));
    // Many Networks at once: every one a segment of its own.
    let mut creates = vec![];
    for i in 0..8 {
        let nets = nets.clone();
        creates.push(tokio::spawn(async move {
            let n: Network = from(json!({"apiVersion": "v1", "kind": "Network",
                "metadata": {"name": format!("netc-many-{i}")},
                "spec": {"tenantID": format!("many{i}"), "subnets": {"s": {"cidr": "192.168.0.0/24"}}}}));
            nets.create(&PostParams::default(), &n).await.unwrap();
        }));
    }
    for t in creates {
        t.await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::from([segment(&a), segment(&b)]);
    for i in 0..8 {
        let name: &'static str = Box::leak(format!("netc-many-{i}").into_boxed_str());
        let n = active(name).await;
        assert!(
            seen.insert(segment(&n)),
            "segment {} given twice",
            segment(&n)
        );
    }
    // Attaching to another tenant's segment fails, with the reason in the status (the
    // older Network keeps a segment; creation times have a resolution of a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let steal: Network = from(json!({"apiVersion": "v1", "kind": "Network",
        "metadata": {"name": "netc-steal"},
        "spec": {"tenantID": "netcb", "providerNetworkID": segment(&a).to_string(),
                 "subnets": {"s": {"cidr": "10.0.0.0/24"}}}}));
    nets.create(&pp, &steal).await.unwrap();
    let failed = eventually(20, "netc-steal Failed", || async {
        let n = nets.get_opt("netc-steal").await.unwrap()?;
        let st = n.status?;
        (st.phase.as_deref() == Some("Failed")).then_some(st)
    })
    .await;
    assert_eq!(failed.reason.as_deref(), Some("SegmentInUse"));
    // Bad input: overlapping subnets in one Network, a namespace naming a missing Network,
    // another tenant's Network, or a tenant's reserved default name.
    let overlap: Network = from(json!({"apiVersion": "v1", "kind": "Network",
        "metadata": {"name": "netc-overlap"},
        "spec": {"subnets": {"a": {"cidr": "10.1.0.0/16"}, "b": {"cidr": "10.1.2.0/24"}}}}));
    let e = nets.create(&pp, &overlap).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.contains("overlaps subnet")),
        "{e:?}"
    );
    let e = nss
        .create(&pp, &ns("netc-missing", "netca", Some("no-such-net")))
        .await
        .unwrap_err();
    // The tenancy plugin answers first (`spec.network: Not found: "no-such-net"`); the
    // NamespaceNetwork plugin would say `network "no-such-net" not found`.
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.contains("no-such-net") && s.message.to_lowercase().contains("not found")),
        "{e:?}"
    );
    let e = nss
        .create(&pp, &ns("netc-cross", "netcb", Some("tenant-netca")))
        .await
        .unwrap_err();
    // Another tenant's Network is "not found", never "exists but is not yours".
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 422 && s.message.to_lowercase().contains("not found")),
        "{e:?}"
    );
    let squat: Network = from(json!({"apiVersion": "v1", "kind": "Network",
        "metadata": {"name": "tenant-netcz"},
        "spec": {"tenantID": "netca", "subnets": {"a": {"cidr": "10.1.0.0/16"}}}}));
    let e = nets.create(&pp, &squat).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 422), "{e:?}");
    // A Network named by a namespace outlives its deletion until the namespace is gone.
    let own: Network = from(json!({"apiVersion": "v1", "kind": "Network",
        "metadata": {"name": "netc-own"},
        "spec": {"tenantID": "netca", "subnets": {"s": {"cidr": "192.168.0.0/24"}}}}));
    nets.create(&pp, &own).await.unwrap();
    active("netc-own").await;
    nss.create(&pp, &ns("netc-c", "netca", Some("netc-own")))
        .await
        .unwrap();
    nets.delete("netc-own", &DeleteParams::default())
        .await
        .unwrap();
    let st = eventually(20, "netc-own Terminating", || async {
        let st = nets.get_opt("netc-own").await.unwrap()?.status?;
        (st.phase.as_deref() == Some("Terminating")).then_some(st)
    })
    .await;
    assert_eq!(
        st.message.as_deref(),
        Some("still used by namespaces netc-c")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(nets.get_opt("netc-own").await.unwrap().is_some());
    nss.delete("netc-c", &DeleteParams::default())
        .await
        .unwrap();
    eventually(60, "netc-own gone", || async {
        nets.get_opt("netc-own")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Unused Networks go at once; the tenants' defaults stay while their namespaces do.
    for i in 0..8 {
        nets.delete(&format!("netc-many-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    eventually(20, "netc-many-* gone", || async {
        for i in 0..8 {
            if nets
                .get_opt(&format!("netc-many-{i}"))
                .await
                .unwrap()
                .is_some()
            {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ipam_is_unique_across_nodes_and_concurrent_starts_per_network() {
    use h8s_agent::netapi::{allocate, release, NetApiError};
    use h8s_types::network::IpAllocation;
    use h8s_types::Network;
    // No network controller here (a second one beside the other test's would race it for
    // segment ids): explicit segments, and the phase written by hand.
    let c = client().await;
    let nets: Api<Network> = Api::all(c.clone());
    // Two tenants' Networks on the same /28 (13 pod addresses each).
    for (name, tenant, seg) in [("ipam-a", "ipama", "9001"), ("ipam-b", "ipamb", "9002")] {
        let n: Network = from(json!({"apiVersion": "v1", "kind": "Network",
            "metadata": {"name": name},
            "spec": {"tenantID": tenant, "providerNetworkID": seg,
                     "subnets": {"s": {"cidr": "192.168.0.0/28"}}}}));
        nets.create(&PostParams::default(), &n).await.unwrap();
        let p = json!({"status": {"phase": "Active"}});
        nets.patch_status(name, &Default::default(), &kube::api::Patch::Merge(&p))
            .await
            .unwrap();
    }
    let holder = |i: usize| IpAllocation {
        node: format!("ipam-node{}", i % 2),
        namespace: "ns".into(),
        pod: format!("p{i}"),
        pod_uid: format!("uid-{i}"),
    };
    // 16 concurrent starts from two "nodes" on each Network: 13 distinct addresses, 3 clear
    // exhaustion errors, the same answer for both Networks' address space.
    let mut got = vec![];
    for name in ["ipam-a", "ipam-b"] {
        let mut tasks = vec![];
        for i in 0..16 {
            let (nets, h) = (nets.clone(), holder(i));
            tasks.push(tokio::spawn(async move { allocate(&nets, name, &h).await }));
        }
        let mut ips = std::collections::BTreeSet::new();
        let mut exhausted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(ip) => assert!(ips.insert(ip), "{ip} handed out twice on {name}"),
                Err(NetApiError::Exhausted { used, .. }) => {
                    assert_eq!(used, 13);
                    exhausted += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ips.len(), exhausted), (13, 3), "{name}");
        assert!(
            !ips.contains(&"192.168.0.1".parse().unwrap()),
            "the gateway"
        );
        let st = nets.get(name).await.unwrap().status.unwrap();
        assert_eq!(st.allocations.len(), 13);
        assert_eq!(
            st.phase.as_deref(),
            Some("Active"),
            "the controller's status kept"
        );
        got.push(ips);
    }
    assert_eq!(
        got[0], got[1],
        "overlapping Networks reuse the same addresses"
    );
    // A pod that asks again (an agent restart) keeps its address.
    let st = nets.get("ipam-a").await.unwrap().status.unwrap();
    let (ip0, h0) = st.allocations.iter().next().unwrap();
    assert_eq!(
        allocate(&nets, "ipam-a", h0).await.unwrap().to_string(),
        *ip0
    );
    // Released addresses are free again; another node's release leaves them alone.
    release(&nets, "ipam-a", &h0.pod_uid, "some-other-node")
        .await
        .unwrap();
    assert_eq!(
        nets.get("ipam-a")
            .await
            .unwrap()
            .status
            .unwrap()
            .allocations
            .len(),
        13
    );
    release(&nets, "ipam-a", &h0.pod_uid, &h0.node)
        .await
        .unwrap();
    let st = nets.get("ipam-a").await.unwrap().status.unwrap();
    assert_eq!(st.allocations.len(), 12);
    assert!(!st.allocations.contains_key(ip0));
    let again = allocate(&nets, "ipam-a", &holder(99)).await.unwrap();
    assert_eq!(again.to_string(), *ip0, "the lowest free address");
    for name in ["ipam-a", "ipam-b"] {
        nets.delete(name, &DeleteParams::default()).await.unwrap();
    }
}
