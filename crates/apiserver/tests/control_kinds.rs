//! The shared kinds of the control loop and the default admission chain, through the
//! server's request handler (authentication, authorization, admission, registry,
//! store) on one in-process server with a short Event TTL.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

struct T {
    srv: h8s_apiserver::Server,
    admin: String,
    _dir: tempfile::TempDir,
}

impl T {
    async fn start() -> T {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let mut cfg = h8s_apiserver::Config::new(
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
            store,
        );
        cfg.event_ttl = Duration::from_secs(2);
        cfg.admission_plugins.not_ready_toleration_seconds = 120;
        let srv = h8s_apiserver::Server::start(cfg).await.unwrap();
        let admin = srv.pki.admin_token.clone();
        T {
            srv,
            admin,
            _dir: dir,
        }
    }

    async fn raw(&self, m: &str, p: &str, ct: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|v| v.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(m)
            .uri(p)
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let r = self.srv.api().handle(req).await;
        let code = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn call(&self, m: &str, p: &str, body: Option<Value>) -> (u16, Value) {
        self.raw(m, p, "application/json", body).await
    }

    async fn ok(&self, m: &str, p: &str, body: Option<Value>) -> Value {
        let (c, b) = self.call(m, p, body).await;
        assert!((200..300).contains(&c), "{m} {p}: {c} {b}");
        b
    }
}

const PCS: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
const PODS: &str = "/api/v1/namespaces/default/pods";
const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

fn pod(name: &str, extra: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let (Some(spec), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            spec.insert(k.clone(), v.clone());
        }
    }
    p
}

/// Marks a pod Running and Ready through its status, as its node agent would.
async fn run(t: &T, name: &str) {
    t.raw(
        "PATCH",
        &format!("{PODS}/{name}/status"),
        "application/merge-patch+json",
        Some(json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_kinds_and_admission() {
    let t = T::start().await;

    // ---- discovery: every new group version lists its kinds ----
    for (gv, plural) in [
        ("discovery.k8s.io/v1", "endpointslices"),
        ("node.k8s.io/v1", "runtimeclasses"),
        ("scheduling.k8s.io/v1", "priorityclasses"),
        ("policy/v1", "poddisruptionbudgets"),
        ("certificates.k8s.io/v1", "certificatesigningrequests"),
        ("authentication.k8s.io/v1", "tokenreviews"),
        ("events.k8s.io/v1", "events"),
    ] {
        let d = t.ok("GET", &format!("/apis/{gv}"), None).await;
        let names: Vec<&str> = d["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&plural), "{gv}: {names:?}");
    }
    let core = t.ok("GET", "/api/v1", None).await;
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "pods/eviction" && r["group"] == "policy"));

    // ---- PriorityClass: the system classes exist and stay ----
    let pcs = t.ok("GET", PCS, None).await;
    let mut sys: Vec<(String, i64)> = pcs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["value"].as_i64().unwrap(),
            )
        })
        .collect();
    sys.sort();
    assert_eq!(
        sys,
        vec![
            ("system-cluster-critical".to_string(), 2_000_000_000),
            ("system-node-critical".to_string(), 2_000_001_000)
        ]
    );
    let (c, b) = t
        .call("DELETE", &format!("{PCS}/system-node-critical"), None)
        .await;
    assert_eq!(c, 403, "{b}");
    assert_eq!(
        b["message"],
        "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
    );
    let (c, b) = t
        .call(
            "POST",
            PCS,
            Some(json!({"metadata": {"name": "system-mine"}, "value": 5})),
        )
        .await;
    assert_eq!(c, 422, "{b}");
    let (c, _) = t
        .call(
            "POST",
            PCS,
            Some(json!({"metadata": {"name": "huge"}, "value": 1_000_000_001})),
        )
        .await;
    assert_eq!(c, 422);
    let high = t
        .ok(
            "POST",
            PCS,
            Some(json!({"metadata": {"name": "high"}, "value": 1000})),
        )
        .await;
    assert_eq!(high["preemptionPolicy"], "PreemptLowerPriority");
    let (c, b) = t
        .call(
            "PUT",
            &format!("{PCS}/high"),
            Some(json!({"metadata": {"name": "high"}, "value": 7})),
        )
        .await;
    assert_eq!(c, 422, "{b}");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .contains("value: Forbidden: may not be changed in an update."));

    // ---- RuntimeClass ----
    t.ok(
        "POST",
        "/apis/node.k8s.io/v1/runtimeclasses",
        Some(json!({"metadata": {"name": "vm"}, "handler": "h8s",
            "overhead": {"podFixed": {"memory": "64Mi", "cpu": "100m"}},
            "scheduling": {"nodeSelector": {"h8s.io/vm": "true"}}})),
    )
    .await;
    let (c, _) = t
        .call(
            "POST",
            "/apis/node.k8s.io/v1/runtimeclasses",
            Some(json!({"metadata": {"name": "bad"}, "handler": "Not_A_Label"})),
        )
        .await;
    assert_eq!(c, 422);

    // ---- a pod gets its defaults from the admission plugins ----
    let p = t
        .ok(
            "POST",
            PODS,
            Some(pod(
                "web",
                json!({"priorityClassName": "high", "runtimeClassName": "vm"}),
            )),
        )
        .await;
    let spec = &p["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["priority"], 1000);
    assert_eq!(spec["overhead"], json!({"memory": "64Mi", "cpu": "100m"}));
    assert_eq!(spec["nodeSelector"]["h8s.io/vm"], "true");
    let tol = spec["tolerations"].as_array().unwrap();
    assert!(tol
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/not-ready"
            && t["tolerationSeconds"] == 120
            && t["effect"] == "NoExecute"));
    assert!(tol
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 300));
    let vol = spec["volumes"][0]["name"].as_str().unwrap();
    assert!(
        vol.starts_with("kube-api-access-") && vol.len() == 21,
        "{vol}"
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0],
        json!({"name": vol, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );
    let (c, b) = t
        .call(
            "POST",
            PODS,
            Some(pod("nopc", json!({"priorityClassName": "missing"}))),
        )
        .await;
    assert_eq!(c, 403, "{b}");
    assert_eq!(
        b["message"],
        "pods \"nopc\" is forbidden: no PriorityClass with name missing was found"
    );
    let (c, b) = t
        .call(
            "POST",
            PODS,
            Some(pod("nosa", json!({"serviceAccountName": "ghost"}))),
        )
        .await;
    assert_eq!(c, 403, "{b}");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .contains("error looking up service account default/ghost"));

    // ---- PodDisruptionBudget and pods/eviction ----
    for n in ["web-1", "web-2"] {
        t.ok("POST", PODS, Some(pod(n, json!({})))).await;
        run(&t, n).await;
    }
    run(&t, "web").await;
    let pdb = t
        .ok(
            "POST",
            PDBS,
            Some(json!({"metadata": {"name": "web"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})),
        )
        .await;
    assert_eq!(pdb["metadata"]["generation"], 1);
    let (c, _) = t
        .call(
            "POST",
            PDBS,
            Some(json!({"metadata": {"name": "both"},
                "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {}}})),
        )
        .await;
    assert_eq!(c, 422);
    let evict = |name: &str| {
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"}})
    };
    // The budget's controller has not looked at it yet: 429, retry later.
    let (c, b) = t
        .call(
            "POST",
            &format!("{PODS}/web-1/eviction"),
            Some(evict("web-1")),
        )
        .await;
    assert_eq!(c, 429, "{b}");
    assert_eq!(b["details"]["retryAfterSeconds"], 10);
    // Its status, as the disruption controller writes it: nothing may go.
    let status = |allowed: i64| {
        json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
            "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}})
    };
    let (c, b) = t
        .raw(
            "PATCH",
            &format!("{PDBS}/web/status"),
            "application/merge-patch+json",
            Some(status(0)),
        )
        .await;
    assert_eq!(c, 200, "{b}");
    let (c, b) = t
        .call(
            "POST",
            &format!("{PODS}/web-1/eviction"),
            Some(evict("web-1")),
        )
        .await;
    assert_eq!(c, 429, "{b}");
    assert_eq!(b["reason"], "TooManyRequests");
    assert_eq!(
        b["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(b["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        b["details"]["causes"][0]["message"],
        "The disruption budget web needs 2 healthy pods and has 3 currently"
    );
    t.ok("GET", &format!("{PODS}/web-1"), None).await;
    // A watcher sees why the pod goes before it goes.
    let before = t.ok("GET", &format!("{PODS}/web-1"), None).await;
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // One disruption allowed: the eviction spends it and deletes the pod.
    t.raw(
        "PATCH",
        &format!("{PDBS}/web/status"),
        "application/merge-patch+json",
        Some(status(1)),
    )
    .await;
    let (c, b) = t
        .call(
            "POST",
            &format!("{PODS}/web-1/eviction"),
            Some(evict("web-1")),
        )
        .await;
    assert_eq!((c, b["status"].clone()), (201, json!("Success")), "{b}");
    let (c, _) = t.call("GET", &format!("{PODS}/web-1"), None).await;
    assert_eq!(c, 404);
    let req = http::Request::builder()
        .uri(format!(
            "{PODS}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dweb-1&timeoutSeconds=1"
        ))
        .header("authorization", format!("Bearer {}", t.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = t
        .srv
        .api()
        .handle(req)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let events: Vec<Value> = String::from_utf8_lossy(&events)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let marked = &events[0]["object"]["status"]["conditions"];
    assert!(
        marked
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "EvictionByEvictionAPI"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["type"], "DELETED");
    let pdb = t.ok("GET", &format!("{PDBS}/web"), None).await;
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert!(pdb["status"]["disruptedPods"]["web-1"].is_string());
    let (c, _) = t
        .call(
            "POST",
            &format!("{PODS}/web-2/eviction"),
            Some(evict("web-2")),
        )
        .await;
    assert_eq!(c, 429);
    // A pending pod is evicted whatever the budget says.
    t.ok("POST", PODS, Some(pod("web-3", json!({})))).await;
    let (c, _) = t
        .call(
            "POST",
            &format!("{PODS}/web-3/eviction"),
            Some(evict("web-3")),
        )
        .await;
    assert_eq!(c, 201);

    // ---- EndpointSlice ----
    let es = t
        .ok(
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            Some(json!({"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"port": 80}]})),
        )
        .await;
    assert_eq!(es["ports"][0]["protocol"], "TCP");
    assert_eq!(es["metadata"]["generation"], 1);
    let (c, _) = t
        .call(
            "POST",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            Some(json!({"metadata": {"name": "bad"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["not-an-ip"]}]})),
        )
        .await;
    assert_eq!(c, 422);

    // ---- CertificateSigningRequest: requester recorded, approval subresource ----
    let csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIHdMIGFAgEAMCMxITAfBgNVBAMMGHN5c3RlbTpub2RlOmV4YW1wbGUtbm9kZTBZ\n-----END CERTIFICATE REQUEST-----\n";
    use base64::Engine as _;
    let request = base64::engine::general_purpose::STANDARD.encode(csr_pem);
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let csr = t
        .ok(
            "POST",
            csrs,
            Some(json!({"metadata": {"name": "c1"},
                "spec": {"request": request, "signerName": "example.com/none",
                         "usages": ["client auth"], "username": "forged"}})),
        )
        .await;
    assert_eq!(csr["spec"]["username"], "admin");
    let mut approved = csr.clone();
    approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True",
        "reason": "Test", "message": "ok"}]});
    let a = t
        .ok(
            "PUT",
            &format!("{csrs}/c1/approval"),
            Some(approved.clone()),
        )
        .await;
    assert_eq!(a["status"]["conditions"][0]["type"], "Approved");
    assert!(a["status"]["conditions"][0]["lastUpdateTime"].is_string());
    let mut denied = a.clone();
    denied["status"]["conditions"] = json!([{"type": "Denied", "status": "True"}]);
    let (c, _) = t
        .call("PUT", &format!("{csrs}/c1/approval"), Some(denied))
        .await;
    assert_eq!(c, 422, "approval cannot be taken back");

    // ---- events.k8s.io/v1 and core v1 Events: one storage, both forms ----
    let ev = t
        .ok(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            Some(json!({"metadata": {"name": "e1"},
                "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal",
                "reason": "Tested", "action": "Test", "note": "hello",
                "reportingController": "h8s.io/test", "reportingInstance": "t1",
                "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}})),
        )
        .await;
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    let core_ev = t
        .ok("GET", "/api/v1/namespaces/default/events/e1", None)
        .await;
    assert_eq!(core_ev["apiVersion"], "v1");
    assert_eq!(core_ev["message"], "hello");
    assert_eq!(core_ev["involvedObject"]["name"], "web");
    assert_eq!(core_ev["reportingComponent"], "h8s.io/test");
    let (c, _) = t
        .call(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            Some(json!({"metadata": {"name": "e2"}, "type": "Normal"})),
        )
        .await;
    assert_eq!(c, 422, "events.k8s.io/v1 is strict on create");
    t.ok(
        "POST",
        "/api/v1/namespaces/default/events",
        Some(
            json!({"metadata": {"name": "legacy"}, "message": "old style",
            "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Old"}),
        ),
    )
    .await;
    let listed = t
        .ok(
            "GET",
            "/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=reason%3DOld",
            None,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["note"], "old style");

    // ---- Events expire after the TTL (2 s here) ----
    let mut gone = false;
    for _ in 0..100 {
        let (c, _) = t
            .call("GET", "/api/v1/namespaces/default/events/legacy", None)
            .await;
        if c == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the event outlived its TTL");
    let (c, _) = t
        .call(
            "GET",
            "/apis/events.k8s.io/v1/namespaces/default/events/e1",
            None,
        )
        .await;
    assert_eq!(c, 404);

    t.srv.shutdown().await;
}

/// Events expire on etcd too: the sweeper works through the `Store` trait, whatever the
/// backend (a real etcd member on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_on_etcd() {
    let cluster = h8s_store::testing::EtcdCluster::start(1).expect("start etcd (etcd-server)");
    let dir = tempfile::tempdir().unwrap();
    let store = h8s_store::open(&cluster.url("/events-ttl"), dir.path(), None)
        .await
        .unwrap();
    let mut cfg = h8s_apiserver::Config::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    );
    cfg.event_ttl = Duration::from_secs(1);
    let srv = h8s_apiserver::Server::start(cfg).await.unwrap();
    let t = T {
        admin: srv.pki.admin_token.clone(),
        srv,
        _dir: dir,
    };
    t.ok(
        "POST",
        "/api/v1/namespaces/default/events",
        Some(
            json!({"metadata": {"name": "short"}, "message": "soon gone",
            "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Test"}),
        ),
    )
    .await;
    // A write renews the event's life.
    tokio::time::sleep(Duration::from_millis(600)).await;
    t.raw(
        "PATCH",
        "/api/v1/namespaces/default/events/short",
        "application/merge-patch+json",
        Some(json!({"count": 2})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (c, _) = t
        .call("GET", "/api/v1/namespaces/default/events/short", None)
        .await;
    assert_eq!(c, 200, "expired a TTL after its create, not its last write");
    let mut gone = false;
    for _ in 0..50 {
        let (c, _) = t
            .call("GET", "/api/v1/namespaces/default/events/short", None)
            .await;
        if c == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the event outlived its TTL on etcd");
    t.srv.shutdown().await;
}
