//! Limits and fairness over real HTTPS (curl), on one server with tiny limits set by
//! flags and objects: a FlowSchema sends a tester to a PriorityLevelConfiguration of one
//! seat and one queue of one; an in-flight seat held by a request whose body never ends
//! makes the tester's next ones wait and get 429 (a proper Status, `Retry-After: 1`, the
//! `X-Kubernetes-PF-*-UID` headers) while another user on another level and an admin
//! still get in; a quiet watch's bookmarks carry the store's revision;
//! watches over the per-user cap get 429; a watch whose client never reads is ended and
//! its connection closed; connections over the per-IP cap are closed at accept.

mod api_support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{eventually, json, Server};
use futures::StreamExt;

const TESTER: &str = "tester-token";
const OTHER: &str = "other-token";
/// Tenant acme's three users, and tenant bolt's one.
const ACME: [&str; 3] = ["acme-1-token", "acme-2-token", "acme-3-token"];
const BOLT: &str = "bolt-token";

/// tokens.csv lines of the tenants' users (RBAC: cluster-admin through `testers`; the
/// tenant guard still confines them to their tenant's namespaces).
fn tenant_tokens() -> String {
    let mut csv = String::new();
    for (i, t) in ACME.iter().enumerate() {
        csv += &format!("{t},acme-{i},u-acme-{i},\"testers,h8s:tenant:acme\"\n");
    }
    csv + &format!("{BOLT},bolt-0,u-bolt-0,\"testers,h8s:tenant:bolt\"\n")
}

/// One curl request: (code, response headers, body).
fn curl(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, String, String) {
    let hdrs = tempfile::NamedTempFile::new_in(s.dir.path()).unwrap();
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-D"])
        .arg(hdrs.path())
        .arg("--cacert")
        .arg(s.data_dir().join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("{}{}", s.url, path));
    let tmp;
    if let Some(b) = body {
        tmp = tempfile::NamedTempFile::new_in(s.dir.path()).unwrap();
        std::fs::write(tmp.path(), b).unwrap();
        c.arg("--data-binary")
            .arg(format!("@{}", tmp.path().display()));
    }
    let o = c.output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (b, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = std::fs::read_to_string(hdrs.path()).unwrap_or_default();
    let code = code.trim().parse().unwrap_or(0);
    if code == 0 {
        // curl's own error, for the assertion message.
        return (0, headers, String::from_utf8_lossy(&o.stderr).to_string());
    }
    (code, headers, b.to_string())
}

/// A curl started in the background with piped stdin and stdout.
fn spawn_curl(s: &Server, token: &str, extra: &[&str], path: &str) -> Child {
    Command::new("curl")
        .args(["-sS", "-N", "--cacert"])
        .arg(s.data_dir().join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(extra)
        .arg(format!("{}{}", s.url, path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl")
}

fn configmap(name: &str, bytes: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"blob": "x".repeat(bytes)},
    }))
    .unwrap()
}

fn metric(s: &Server, name: &str) -> f64 {
    let (_, _, text) = curl(s, &s.token, "GET", "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn limits_and_fairness() {
    let dir = tempfile::tempdir().unwrap();
    let flags: Vec<std::ffi::OsString> = [
        // 200 seats in all: a priority level with 1 share of kube's 245 + 1 gets one.
        "--max-requests-inflight=120",
        "--max-mutating-requests-inflight=80",
        "--apf-queue-wait=1s",
        "--max-watches-per-user=2",
        "--watch-buffer-bytes=65536",
        "--watch-slow-reader-timeout=1s",
        "--max-connections-per-ip=100",
        "--watch-bookmark-interval=1s",
        "--apf-object-count-interval=1s",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let flags: Vec<&std::ffi::OsStr> = flags.iter().map(|f| f.as_os_str()).collect();
    let s = Server::start_with(dir, &flags);
    std::fs::write(
        s.data_dir().join("tokens.csv"),
        format!(
            "{TESTER},tester,u1,\"testers\"\n{OTHER},other,u2,\"testers\"\n{}",
            tenant_tokens()
        ),
    )
    .unwrap();
    let crb = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "testers-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "testers", "apiGroup": "rbac.authorization.k8s.io"}],
    });
    // The control plane opens many connections from this same IP while it starts; the
    // cap of 100 may refuse a connection for a moment.
    let mut last = None;
    assert!(
        eventually(20, || {
            let r = curl(
                &s,
                &s.token,
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                Some(crb.to_string().as_bytes()),
            );
            let ok = r.0 == 201;
            last = Some(r);
            ok
        }),
        "{last:?}"
    );
    let cms = "/api/v1/namespaces/default/configmaps";
    assert!(eventually(10, || curl(&s, TESTER, "GET", cms, None).0 == 200));

    // --- Priority and fairness from objects: the tester's level has one seat, one queue
    // of one. ---
    let plc = serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "flood"},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1,
            "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Queuing",
                "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": 1}}}},
    });
    let (c, _, b) = curl(
        &s,
        &s.token,
        "POST",
        "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations",
        Some(plc.to_string().as_bytes()),
    );
    assert_eq!(c, 201, "{b}");
    let plc_uid = json(&b)["metadata"]["uid"].as_str().unwrap().to_string();
    let fs = serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": "testers"},
        "spec": {"priorityLevelConfiguration": {"name": "flood"}, "matchingPrecedence": 10,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{"subjects": [{"kind": "User", "user": {"name": "tester"}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "namespaces": ["*"], "clusterScope": true}]}]},
    });
    let (c, _, b) = curl(
        &s,
        &s.token,
        "POST",
        "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
        Some(fs.to_string().as_bytes()),
    );
    assert_eq!(c, 201, "{b}");
    let fs_uid = json(&b)["metadata"]["uid"].as_str().unwrap().to_string();
    // The server picks the objects up (a watch); its answers say where a request went.
    let mut last = None;
    assert!(
        eventually(20, || {
            let r = curl(&s, TESTER, "GET", cms, None);
            let ok =
                r.1.to_ascii_lowercase()
                    .contains(&format!("x-kubernetes-pf-prioritylevel-uid: {plc_uid}"));
            last = Some(r);
            ok
        }),
        "the tester was not classified into the new level: {last:?}"
    );

    // --- In-flight: a create whose body never ends holds the level's one seat. ---
    let mut holder = spawn_curl(
        &s,
        TESTER,
        &[
            "--http1.1",
            "-X",
            "POST",
            "-T",
            "-",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect:",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
        cms,
    );
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(br#"{"apiVersion":"v1","kind":"ConfigMap","#)
        .unwrap();
    stdin.flush().unwrap();
    // The tester's next requests wait in the queue (1 s) or find it full: 429.
    let mut got = None;
    assert!(
        eventually(20, || {
            let r = curl(&s, TESTER, "POST", cms, Some(&configmap("queued", 10)));
            let done = r.0 == 429;
            got = Some(r);
            done
        }),
        "no 429 while the seat is held: {got:?}"
    );
    let (_, headers, body) = got.unwrap();
    let lower = headers.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{headers}");
    assert!(
        lower.contains(&format!("x-kubernetes-pf-flowschema-uid: {fs_uid}")),
        "{headers}"
    );
    assert!(
        lower.contains(&format!("x-kubernetes-pf-prioritylevel-uid: {plc_uid}")),
        "{headers}"
    );
    let st = json(&body);
    assert_eq!(st["kind"], "Status", "{body}");
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(st["code"], 429);
    assert_eq!(st["details"]["retryAfterSeconds"], 1);
    // Another user (global-default) is served meanwhile, and an admin is exempt.
    let (c, h, b) = curl(&s, OTHER, "POST", cms, Some(&configmap("by-other", 10)));
    assert_eq!(c, 201, "{b}");
    assert!(!h.to_ascii_lowercase().contains(&plc_uid), "{h}");
    let (c, _, b) = curl(&s, &s.token, "POST", cms, Some(&configmap("by-admin", 10)));
    assert_eq!(c, 201, "{b}");
    // The held request completes, and the seat is free again.
    stdin
        .write_all(br#""metadata":{"name":"held"},"data":{"a":"b"}}"#)
        .unwrap();
    drop(stdin);
    let out = holder.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    let (c, _, b) = curl(&s, TESTER, "POST", cms, Some(&configmap("after", 10)));
    assert_eq!(c, 201, "{b}");
    assert!(metric(&s, "apiserver_flowcontrol_rejected_requests_total") >= 1.0);
    let (c, _, b) = curl(
        &s,
        &s.token,
        "DELETE",
        "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/testers",
        None,
    );
    assert_eq!(c, 200, "{b}");

    // --- Watches per user: two open, the third is refused. ---
    let w = format!("{cms}?watch=1&timeoutSeconds=6");
    let mut watches: Vec<Child> = (0..2).map(|_| spawn_curl(&s, TESTER, &[], &w)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let (c, headers, body) = curl(&s, TESTER, "GET", &w, None);
    assert_eq!(c, 429, "{body}");
    assert!(headers.to_ascii_lowercase().contains("retry-after: 1"));
    let st = json(&body);
    assert_eq!(st["reason"], "TooManyRequests", "{body}");
    assert!(st["message"].as_str().unwrap().contains("tester"), "{body}");
    // Another user's watches are not counted against the tester.
    let short = format!("{cms}?watch=1&timeoutSeconds=1");
    assert_eq!(curl(&s, &s.token, "GET", &short, None).0, 200);
    // When the watches end (timeoutSeconds), their places come back.
    for c in &mut watches {
        let _ = c.wait();
    }
    assert!(eventually(10, || curl(&s, TESTER, "GET", &short, None).0 == 200));

    // --- A quiet watch's bookmarks carry the store's progress, not its last event's. ---
    let secrets = "/api/v1/namespaces/default/secrets";
    let mut quiet = spawn_curl(
        &s,
        &s.token,
        &[],
        &format!("{secrets}?watch=1&allowWatchBookmarks=true&timeoutSeconds=30"),
    );
    let out = quiet.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(json(&l)).is_err() {
                break;
            }
        }
    });
    let mut churned = 0u64;
    for i in 0..20 {
        let (c, _, b) = curl(
            &s,
            &s.token,
            "POST",
            cms,
            Some(&configmap(&format!("churn-{i}"), 10)),
        );
        assert_eq!(c, 201, "{b}");
        churned = json(&b)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let bookmark = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "no bookmark at {churned} or later: {seen:?}"
        );
        let Ok(ev) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if ev["type"] == "BOOKMARK" {
            let rv: u64 = ev["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            if rv >= churned {
                break rv;
            }
            seen.push(rv);
        }
    };
    let _ = quiet.kill();
    let _ = quiet.wait();
    let _ = lines.join();
    // Resuming from the bookmark is a watch like any other.
    let (c, _, b) = curl(
        &s,
        &s.token,
        "GET",
        &format!("{secrets}?watch=1&resourceVersion={bookmark}&timeoutSeconds=1"),
        None,
    );
    assert_eq!(c, 200, "{b}");

    // --- A watch that is never read is ended, and its connection closed. ---
    let mut stalled = spawn_curl(
        &s,
        TESTER,
        &["--http1.1"],
        &format!("{cms}?watch=1&resourceVersion=0"),
    );
    // Wait for the watch to be established (its initial events arrive in the pipe).
    std::thread::sleep(Duration::from_millis(500));
    let before = metric(&s, "h8s_apiserver_watches_too_slow_total");
    assert!(before >= 0.0);
    // 60 objects of 500 kB: 30 MB, far beyond the pipe, the sockets and the 64 kB buffer.
    let mut produced = 0usize;
    for i in 0..60 {
        let b = configmap(&format!("big-{i}"), 500_000);
        produced += b.len();
        let (c, _, body) = curl(&s, &s.token, "POST", cms, Some(&b));
        assert_eq!(c, 201, "{body}");
    }
    assert!(
        eventually(30, || metric(&s, "h8s_apiserver_watches_too_slow_total")
            > before),
        "the stalled watch was not ended"
    );
    // The client now reads what reached it: the stream ends (the server closed it) well
    // short of everything produced.
    let mut out = stalled.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = out.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    let t0 = Instant::now();
    while !reader.is_finished() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        reader.is_finished(),
        "the stalled watch's stream did not end"
    );
    let read = reader.join().unwrap();
    assert!(read < produced, "read {read} of {produced} bytes");
    let _ = stalled.wait();
    // The server is fine: a new watch and a list work.
    assert_eq!(curl(&s, TESTER, "GET", cms, None).0, 200);

    // --- Fair queuing: one tenant's flood of LISTs does not starve another tenant. ---
    tenants_share_a_level_fairly(&s);
    // The watch path's memory is in /metrics (the soak benchmark follows it).
    assert!(metric(&s, "h8s_watch_cache_events") > 0.0);
    assert!(metric(&s, "h8s_watch_cache_bytes") > 0.0);

    // --- Connections over the per-IP cap are closed at accept. ---
    let refused_before = metric(&s, "h8s_apiserver_connections_refused_total");
    let addr = s.url.trim_start_matches("https://").to_string();
    // Open them all first (an accepted one waits for its TLS handshake up to 10 s), then
    // see which the server closed.
    let conns: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for t in &conns {
        t.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!((&*t).read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 50,
        "only {closed} of 150 connections were refused"
    );
    drop(conns);
    assert!(eventually(10, || curl(&s, TESTER, "GET", cms, None).0 == 200));
    assert!(metric(&s, "h8s_apiserver_connections_refused_total") >= refused_before + 50.0);
}

/// Tenant acme floods a level shared by all tenants with LISTs — three users, eight
/// at a time each, every LIST several seats wide — while tenant bolt reads one object at
/// a time. The level queues fairly by tenant: acme's flood is refused (429) for the most
/// part while bolt's requests are served; bolt's rejections are bounded.
fn tenants_share_a_level_fairly(s: &Server) {
    // 5 shares of 251 (kube's 245, `flood` 1, these 5) of 200 seats: 4 seats.
    let plc = serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "tenants"},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5,
            "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Queuing",
                "queuing": {"queues": 16, "handSize": 2, "queueLengthLimit": 5}}}},
    });
    let fs = serde_json::json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": "tenants"},
        "spec": {"priorityLevelConfiguration": {"name": "tenants"}, "matchingPrecedence": 20,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{"subjects": [
                    {"kind": "Group", "group": {"name": "h8s:tenant:acme"}},
                    {"kind": "Group", "group": {"name": "h8s:tenant:bolt"}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "namespaces": ["*"], "clusterScope": true}]}]},
    });
    let mut plc_uid = String::new();
    for (path, o) in [("prioritylevelconfigurations", &plc), ("flowschemas", &fs)] {
        let (c, _, b) = curl(
            s,
            &s.token,
            "POST",
            &format!("/apis/flowcontrol.apiserver.k8s.io/v1/{path}"),
            Some(o.to_string().as_bytes()),
        );
        assert_eq!(c, 201, "{b}");
        if plc_uid.is_empty() {
            plc_uid = json(&b)["metadata"]["uid"].as_str().unwrap().to_string();
        }
    }
    // Each tenant creates its namespace (stamped as its own).
    for (token, ns) in [(ACME[0], "acme-ns"), (BOLT, "bolt-ns")] {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns}});
        let (c, _, b) = curl(
            s,
            token,
            "POST",
            "/api/v1/namespaces",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(c, 201, "{b}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    // kube-rs clients without their retry of 429s: the test counts every answer.
    let client = |token: &str| {
        let mut cfg = h8s_client::Connection {
            server: s.url.clone(),
            ca_pem: std::fs::read(s.data_dir().join("ca.crt")).unwrap(),
            credentials: h8s_client::Credentials::Token(token.to_string()),
            user_agent: "h8s-test/fairness".into(),
        }
        .config()
        .unwrap();
        cfg.default_retry = false;
        h8s_client::kube::Client::try_from(cfg).unwrap()
    };
    let get = |path: String| {
        http::Request::get(path)
            .body(Vec::<u8>::new())
            .unwrap()
            .map(Into::into)
    };
    // 300 ConfigMaps in acme's namespace: its LISTs are 3 or more seats wide (the
    // resource's object count, 100 a seat), so one runs at a time in the level.
    let admin = client(&s.token);
    rt.block_on(async {
        let mut creates = futures::stream::iter(0..300)
            .map(|i| {
                let admin = admin.clone();
                async move {
                    let body = configmap(&format!("cm-{i}"), 100);
                    let req = http::Request::post("/api/v1/namespaces/acme-ns/configmaps")
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap()
                        .map(Into::into);
                    admin.send(req).await.map(|r| r.status().as_u16())
                }
            })
            .buffer_unordered(8);
        while let Some(r) = creates.next().await {
            assert_eq!(r.ok(), Some(201));
        }
        let req = http::Request::post("/api/v1/namespaces/bolt-ns/configmaps")
            .header("content-type", "application/json")
            .body(configmap("calm", 10))
            .unwrap()
            .map(Into::into);
        assert_eq!(admin.send(req).await.unwrap().status(), 201);
    });
    // Both tenants are classified into the level.
    let calm = "/api/v1/namespaces/bolt-ns/configmaps/calm".to_string();
    let mut last = None;
    assert!(
        eventually(20, || {
            let r = curl(s, BOLT, "GET", &calm, None);
            let ok = r.0 == 200
                && r.1
                    .to_ascii_lowercase()
                    .contains(&format!("x-kubernetes-pf-prioritylevel-uid: {plc_uid}"));
            last = Some(r);
            ok
        }),
        "bolt was not classified into the tenants' level: {last:?}"
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flood, calm_codes) = rt.block_on(async {
        let mut tasks = Vec::new();
        for token in ACME {
            let c = client(token);
            for _ in 0..8 {
                let (c, stop) = (c.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut codes = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = c
                            .send(get("/api/v1/namespaces/acme-ns/configmaps".into()))
                            .await;
                        codes.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                    }
                    codes
                }));
            }
        }
        // Let the flood fill its queues, then read as bolt, one request at a time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bolt = client(BOLT);
        let mut calm_codes = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(4) || calm_codes.len() < 40 {
            let r = bolt.send(get(calm.clone())).await;
            calm_codes.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut flood = Vec::new();
        for t in tasks {
            flood.extend(t.await.unwrap());
        }
        (flood, calm_codes)
    });
    let count = |v: &[u16], c: u16| v.iter().filter(|x| **x == c).count();
    let (flood_ok, flood_429) = (count(&flood, 200), count(&flood, 429));
    let (calm_ok, calm_429) = (count(&calm_codes, 200), count(&calm_codes, 429));
    eprintln!(
        "fairness: acme {flood_ok} × 200, {flood_429} × 429 of {}; bolt {calm_ok} × 200, {calm_429} × 429 of {}",
        flood.len(),
        calm_codes.len()
    );
    // The flood was refused for the most part: the level was full all along.
    assert!(
        flood_429 > flood_ok,
        "acme: {flood_ok} served, {flood_429} refused"
    );
    assert_eq!(flood_ok + flood_429, flood.len(), "acme: other answers");
    // bolt's requests are served: at most one in twenty refused.
    assert_eq!(calm_ok + calm_429, calm_codes.len(), "bolt: {calm_codes:?}");
    assert!(
        calm_429 * 20 <= calm_codes.len(),
        "bolt: {calm_429} of {} refused",
        calm_codes.len()
    );
}
