//! Checks h8s-types' wire formats against real kubectl binaries (the
//! `kubectl` package's `kubectl.1.27` and `kubectl.1.33`): a tiny loopback
//! HTTP server serves discovery and the OpenAPI documents from this crate,
//! records what kubectl sends, and the tests compare.
//!
//! - protobuf bodies of `kubectl create …` (1.33) decode to exactly the JSON
//!   `kubectl create … --dry-run=client -o json` prints for the same command;
//! - `auth can-i` / `auth whoami` reviews decode;
//! - `kubectl explain` works from `/openapi/v3` (1.33) and the protobuf
//!   `/openapi/v2` (1.27);
//! - `kubectl apply` leaves validation to the server (`fieldValidation=Strict`)
//!   after reading our v3 (1.33) or protobuf v2 (1.27) document.

use h8s_types::{openapi, protobuf, resources};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    content_type: String,
    body: Vec<u8>,
}

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn kubectl_bin(minor: u32) -> PathBuf {
    let name = format!("kubectl.1.{minor}");
    for dir in [
        "/usr/lib/google-cloud-sdk/bin",
        "/usr/bin",
        "/usr/local/bin",
    ] {
        let p = PathBuf::from(dir).join(&name);
        if p.exists() {
            return p;
        }
    }
    panic!("needs {name} from the Debian `kubectl` package (Google Cloud SDK): install it");
}

fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &seen);
            });
        }
    });
    Server { port, seen }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut body = Vec::new();
        if header("transfer-encoding").contains("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Ok(n) = header("content-length").parse::<usize>() {
            body = vec![0; n];
            reader.read_exact(&mut body)?;
        }
        let req = Seen {
            method,
            target,
            content_type: header("content-type"),
            body,
        };
        let (code, ctype, resp) = respond(&req, &header("accept"));
        seen.lock().unwrap().push(req);
        write!(
            out,
            "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            resp.len()
        )?;
        out.write_all(&resp)?;
        out.flush()?;
    }
}

fn respond(req: &Seen, accept: &str) -> (u16, String, Vec<u8>) {
    let j = |code: u16, v: Value| {
        (
            code,
            "application/json".to_string(),
            serde_json::to_vec(&v).unwrap(),
        )
    };
    let path = req.target.split('?').next().unwrap_or_default();
    if req.method == "PATCH" {
        // Answer with the object as stored (the stub applies nothing).
        let get = Seen {
            method: "GET".into(),
            ..req.clone()
        };
        return respond(&get, accept);
    }
    if req.method == "POST" || req.method == "PUT" {
        let mut obj = if req.content_type.starts_with(protobuf::CONTENT_TYPE) {
            match protobuf::decode(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    return j(
                        400,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": e.to_string(), "code": 400}),
                    )
                }
            }
        } else {
            serde_json::from_slice(&req.body).unwrap_or(json!({}))
        };
        match obj["kind"].as_str() {
            Some("SelfSubjectAccessReview") => obj["status"] = json!({"allowed": true}),
            Some("SelfSubjectReview") => {
                obj["status"] =
                    json!({"userInfo": {"username": "tester", "groups": ["system:authenticated"]}})
            }
            _ => {}
        }
        return j(201, obj);
    }
    if req.method == "GET"
        && (path == "/api/v1/namespaces/default/pods" || path == "/api/v1/networks")
    {
        let (r, items) = if path.ends_with("pods") {
            let created = "2026-01-01T00:00:00Z";
            (
                resources::find("", "v1", "pods").unwrap(),
                vec![json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": created},
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "nginx"}]},
                "status": {"phase": "Running", "podIP": "10.1.0.7", "containerStatuses": [
                    {"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}})],
            )
        } else {
            (
                resources::find("", "v1", "networks").unwrap(),
                vec![json!({
                "apiVersion": "v1", "kind": "Network",
                "metadata": {"name": "net1", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"tenantID": "t1", "subnets": {"subnet1": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.1"}}},
                "status": {"phase": "Active"}})],
            )
        };
        if accept.contains("as=Table") {
            let t = h8s_types::table::table(
                r,
                &items,
                &json!({"resourceVersion": "9"}),
                h8s_types::table::IncludeObject::Metadata,
                std::time::SystemTime::now(),
            );
            return j(200, t);
        }
        return j(
            200,
            json!({"apiVersion": "v1", "kind": format!("{}List", r.kind), "metadata": {"resourceVersion": "9"}, "items": items}),
        );
    }
    match path {
        "/api/v1/namespaces/default/pods/existing" => j(
            200,
            json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "existing", "namespace": "default", "uid": "u1", "resourceVersion": "5",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"existing\",\"namespace\":\"default\"},\"spec\":{\"containers\":[{\"image\":\"nginx\",\"name\":\"c\"}]}}\n"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        ),
        "/version" => j(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        "/api" => j(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        "/apis" => {
            let groups: Vec<Value> = resources::groups()
                .iter()
                .filter(|g| !g.name.is_empty())
                .map(|g| {
                    let versions: Vec<Value> = g
                        .versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{}/{v}", g.name), "version": v}))
                        .collect();
                    json!({"name": g.name, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            j(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        "/openapi/v3" => (200, "application/json".into(), openapi::v3_index().to_vec()),
        "/openapi/v2" if accept.contains("protobuf") => (
            200,
            openapi::V2_PROTOBUF_CONTENT_TYPE.into(),
            openapi::v2_protobuf().to_vec(),
        ),
        "/openapi/v2" => (200, "application/json".into(), openapi::v2_json().to_vec()),
        p if p.starts_with("/openapi/v3/") => match openapi::v3_document(p) {
            Some((_, d)) => (200, "application/json".into(), d.to_vec()),
            None => j(404, json!({})),
        },
        p => {
            let seg: Vec<&str> = p.trim_matches('/').split('/').collect();
            let list = match seg.as_slice() {
                ["api", v] => resources::api_resource_list("", v),
                ["apis", g, v] => resources::api_resource_list(g, v),
                _ => None,
            };
            match list {
                Some(l) => j(200, l),
                None => j(
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl(
    minor: u32,
    server: &Server,
    cache: &tempfile::TempDir,
    args: &[&str],
    stdin: Option<&str>,
) -> Run {
    let mut cmd = Command::new(kubectl_bin(minor));
    cmd.args([
        "--server",
        &format!("http://127.0.0.1:{}", server.port),
        "--cache-dir",
    ])
    .arg(cache.path())
    .args(["--request-timeout", "20s"])
    .args(args)
    .env("KUBECONFIG", cache.path().join("none"))
    .env("HOME", cache.path())
    .stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kubectl {args:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Drops nulls and empty objects, which protobuf cannot tell from absent.
fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let x = prune(x);
                let empty = x.is_null()
                    || x.as_object().is_some_and(|o| o.is_empty())
                    || x.as_array().is_some_and(|a| a.is_empty());
                if !empty {
                    out.insert(k.clone(), x);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

#[test]
fn kubectl_133_protobuf_bodies_decode_to_their_json_form() {
    let server = start();
    let cache = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["create", "namespace", "demo"],
        &[
            "create",
            "configmap",
            "cm",
            "--from-literal=a=1",
            "--from-literal=b=two words",
        ],
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=pw=s3cr\u{e9}t\n",
            "--type=Opaque",
        ],
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=3",
            "--port=80",
        ],
        &[
            "create",
            "service",
            "clusterip",
            "svc",
            "--tcp=80:8080",
            "--tcp=443:https",
        ],
        &["create", "serviceaccount", "sa"],
        &[
            "create",
            "role",
            "r",
            "--verb=get,list",
            "--resource=pods,deployments.apps",
        ],
        &[
            "create",
            "rolebinding",
            "rb",
            "--role=r",
            "--user=alice",
            "--serviceaccount=default:sa",
        ],
        &[
            "create",
            "clusterrole",
            "cr",
            "--verb=get",
            "--non-resource-url=/healthz",
        ],
        &[
            "create",
            "clusterrolebinding",
            "crb",
            "--clusterrole=cr",
            "--group=devs",
        ],
        &[
            "create",
            "job",
            "pi",
            "--image=perl",
            "--",
            "perl",
            "-e",
            "print 1",
        ],
        &[
            "create",
            "cronjob",
            "cj",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "date",
        ],
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=important",
            "--preemption-policy=Never",
        ],
        &[
            "create",
            "poddisruptionbudget",
            "pdb",
            "--selector=app=web",
            "--min-available=50%",
        ],
    ];
    for cmd in commands {
        let before = server.seen.lock().unwrap().len();
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(["-n", "default"]);
        let run = kubectl(33, &server, &cache, &args, None);
        assert!(run.ok, "{cmd:?}: {}", run.stderr);
        let post = server.seen.lock().unwrap()[before..]
            .iter()
            .find(|s| s.method == "POST")
            .cloned()
            .unwrap_or_else(|| panic!("{cmd:?} sent no POST"));
        assert!(
            post.content_type.starts_with(protobuf::CONTENT_TYPE),
            "{cmd:?} sent {}",
            post.content_type
        );
        assert!(post.body.starts_with(protobuf::MAGIC));
        let decoded = protobuf::decode(&post.body).unwrap();

        let mut dry: Vec<&str> = args.clone();
        let at = dry.iter().position(|a| *a == "--").unwrap_or(dry.len());
        dry.splice(at..at, ["--dry-run=client", "-o", "json"]);
        let run = kubectl(33, &server, &cache, &dry, None);
        assert!(run.ok, "{dry:?}: {}", run.stderr);
        let want: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(prune(&decoded), prune(&want), "{cmd:?}");
        let (g, v) = resources::split_api_version(want["apiVersion"].as_str().unwrap());
        let unknown =
            h8s_types::strict::unknown_fields(g, v, want["kind"].as_str().unwrap(), &decoded);
        assert_eq!(unknown, Some(vec![]), "{cmd:?}");
        // What kubectl generates passes the server's pipeline: decoder
        // checks, defaulting and validation (no false 400/422).
        let kind = want["kind"].as_str().unwrap();
        assert_eq!(
            h8s_types::strict::decode_error(g, v, kind, &decoded),
            None,
            "{cmd:?}"
        );
        let r = resources::find_kind(g, v, kind).unwrap();
        let mut obj = decoded.clone();
        if r.namespaced {
            obj["metadata"]["namespace"] = json!("default");
        }
        obj["metadata"]["uid"] = json!("0b5e6f3c-0000-4000-8000-000000000001");
        h8s_types::defaults::apply(r, &mut obj);
        h8s_types::defaults::prepare_for_create(r, &mut obj);
        assert_eq!(
            h8s_types::validation::validate_create(r, &obj),
            Ok(()),
            "{cmd:?}: {obj}"
        );
    }
}

#[test]
fn kubectl_133_reviews_decode() {
    let server = start();
    let cache = tempfile::tempdir().unwrap();
    let run = kubectl(
        33,
        &server,
        &cache,
        &["auth", "can-i", "create", "pods", "-n", "team"],
        None,
    );
    assert_eq!(run.stdout.trim(), "yes", "{}", run.stderr);
    let seen = server.seen.lock().unwrap().clone();
    let post = seen
        .iter()
        .find(|s| s.target.contains("selfsubjectaccessreviews"))
        .unwrap();
    let v = protobuf::decode(&post.body).unwrap();
    assert_eq!(v["kind"], "SelfSubjectAccessReview");
    assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
    assert_eq!(v["spec"]["resourceAttributes"]["resource"], "pods");
    assert_eq!(v["spec"]["resourceAttributes"]["namespace"], "team");

    let run = kubectl(
        33,
        &server,
        &cache,
        &["create", "token", "sa", "-n", "team", "--duration=10m"],
        None,
    );
    let seen = server.seen.lock().unwrap().clone();
    let post = seen
        .iter()
        .find(|s| s.target.contains("/serviceaccounts/sa/token"))
        .unwrap_or_else(|| panic!("no token request: {}", run.stderr));
    let v = protobuf::decode(&post.body).unwrap();
    assert_eq!(v["kind"], "TokenRequest");
    assert_eq!(v["spec"]["expirationSeconds"], 600);

    let run = kubectl(33, &server, &cache, &["auth", "whoami", "-o", "json"], None);
    assert!(run.ok, "{}", run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["status"]["userInfo"]["username"], "tester");
}

#[test]
fn kubectl_explain_from_openapi_v3_and_v2_protobuf() {
    let server = start();
    let cache = tempfile::tempdir().unwrap();
    let run = kubectl(
        33,
        &server,
        &cache,
        &["explain", "pods.spec.containers"],
        None,
    );
    assert!(run.ok, "1.33: {}", run.stderr);
    assert!(
        run.stdout.contains("FIELD: containers <[]Container>"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("image\t<string>"), "{}", run.stdout);
    let run = kubectl(
        33,
        &server,
        &cache,
        &["explain", "networks.spec.subnets"],
        None,
    );
    assert!(run.ok, "1.33 network: {}", run.stderr);
    assert!(run.stdout.contains("cidr"), "{}", run.stdout);
    let run = kubectl(
        33,
        &server,
        &cache,
        &["explain", "namespace.spec.network"],
        None,
    );
    assert!(run.ok, "1.33 namespace: {}", run.stderr);

    let cache27 = tempfile::tempdir().unwrap();
    let run = kubectl(
        27,
        &server,
        &cache27,
        &["explain", "deployments.spec.strategy"],
        None,
    );
    assert!(run.ok, "1.27: {}", run.stderr);
    assert!(run.stdout.contains("rollingUpdate"), "{}", run.stdout);
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.target.starts_with("/openapi/v2")),
        "1.27 read /openapi/v2"
    );
    let run = kubectl(27, &server, &cache27, &["explain", "networks.spec"], None);
    assert!(run.ok, "1.27 network: {}", run.stderr);
    assert!(run.stdout.contains("tenantID"), "{}", run.stdout);
}

const BAD_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx\n    imagee: typo\n";

#[test]
fn kubectl_apply_validation_uses_our_openapi() {
    let server = start();
    let cache = tempfile::tempdir().unwrap();
    // 1.33 finds fieldValidation on the v3 PATCH operation and leaves
    // validation to the server: the POST carries fieldValidation=Strict.
    let run = kubectl(
        33,
        &server,
        &cache,
        &["apply", "-n", "default", "-f", "-"],
        Some(BAD_POD),
    );
    assert!(run.ok, "{}", run.stderr);
    let seen = server.seen.lock().unwrap().clone();
    let post = seen.iter().find(|s| s.method == "POST").unwrap();
    assert!(
        post.target.contains("fieldValidation=Strict"),
        "{}",
        post.target
    );
    // 1.27 reads the same from the protobuf v2 document (its PATCH
    // operations list fieldValidation) and leaves validation to the server.
    let cache27 = tempfile::tempdir().unwrap();
    let before = server.seen.lock().unwrap().len();
    let run = kubectl(
        27,
        &server,
        &cache27,
        &["apply", "-n", "default", "-f", "-"],
        Some(BAD_POD),
    );
    assert!(run.ok, "1.27: {}", run.stderr);
    let seen = server.seen.lock().unwrap()[before..].to_vec();
    assert!(
        seen.iter().any(|s| s.target.starts_with("/openapi/v2")),
        "1.27 read /openapi/v2"
    );
    let post = seen.iter().find(|s| s.method == "POST").unwrap();
    assert!(
        post.target.contains("fieldValidation=Strict"),
        "{}",
        post.target
    );
    // A second apply patches with a strategic merge patch, which 1.33 builds
    // from our v3 document without falling back to /openapi/v2.
    let before = server.seen.lock().unwrap().len();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: existing\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx\n";
    let run = kubectl(
        33,
        &server,
        &cache,
        &["apply", "-n", "default", "-f", "-"],
        Some(pod),
    );
    assert!(run.ok, "1.33 patch: {}", run.stderr);
    let seen = server.seen.lock().unwrap()[before..].to_vec();
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert!(
        patch.target.contains("fieldValidation=Strict"),
        "{}",
        patch.target
    );
    assert!(
        !seen.iter().any(|s| s.target.starts_with("/openapi/v2")),
        "fell back to v2"
    );
    // The seeds' manifests pass the same validation.
    let net = "apiVersion: v1\nkind: Network\nmetadata:\n  name: net1\nspec:\n  tenantID: 065f210a2ca9442aad898ab129426350\n  subnets:\n    subnet1:\n      cidr: 192.168.0.0/24\n      gateway: 192.168.0.1\n";
    let run = kubectl(27, &server, &cache27, &["apply", "-f", "-"], Some(net));
    assert!(run.ok, "1.27 network: {}", run.stderr);
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns1\nspec:\n  network: net1\n";
    let run = kubectl(27, &server, &cache27, &["apply", "-f", "-"], Some(ns));
    assert!(run.ok, "1.27 namespace: {}", run.stderr);
}

#[test]
fn kubectl_prints_our_tables() {
    let server = start();
    let cache = tempfile::tempdir().unwrap();
    let run = kubectl(
        33,
        &server,
        &cache,
        &["get", "pods", "-n", "default", "-o", "wide"],
        None,
    );
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    assert_eq!(lines[1][..4], ["web-1", "1/1", "Running", "0"]);
    assert_eq!(lines[1][5..], ["10.1.0.7", "node-a", "<none>", "<none>"]);
    // Without -o wide the priority-1 columns stay hidden.
    let run = kubectl(33, &server, &cache, &["get", "pods", "-n", "default"], None);
    assert_eq!(
        run.stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let run = kubectl(27, &server, &cache, &["get", "networks"], None);
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "TENANT", "SUBNETS", "PHASE", "AGE"]);
    assert_eq!(lines[1][..4], ["net1", "t1", "192.168.0.0/24", "Active"]);
}
