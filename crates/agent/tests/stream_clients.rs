//! The streaming path end to end with the real clients: kubectl 1.27 (SPDY exec and
//! port-forward), 1.30 and 1.33 (WebSocket exec, SPDY-in-WebSocket port-forward) and the
//! Python client → the real API server (in-process, embedded store) → its node proxy over
//! mutually authenticated TLS → the agent's streaming server.
//!
//! The streaming server's backend here is the test's own stand-in for the pod runtime: it
//! runs commands as host processes (a terminal through `script`), serves logs from CRI log
//! files the test writes, and forwards "pod ports" to TCP servers on loopback. The same
//! server over real pod VMs is tested in crates/h8s/tests/stream_vm.rs.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use h8s_agent::stream::{
    self, BackendError, ExecRequest, Input, LogFile, Output as Out, PodConn, PodRef, ServeConfig,
    Session, StreamBackend, TermSize,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// What the test's stand-in runtime records and serves.
#[derive(Default)]
struct HostState {
    resizes: Mutex<Vec<TermSize>>,
    running: AtomicBool,
    /// Pod port → loopback port of a test server.
    ports: Mutex<HashMap<u16, u16>>,
    logs: PathBuf,
}

#[derive(Clone)]
struct HostBackend(Arc<HostState>);

fn known(pod: &PodRef) -> Result<(), BackendError> {
    if pod.namespace == "default" && ["one", "two"].contains(&pod.name.as_str()) {
        Ok(())
    } else {
        Err(BackendError::NotFound(format!(
            "pod {pod} is not on this node"
        )))
    }
}

/// Runs `argv` as a host process, through `script` when a terminal is wanted.
fn spawn_session(argv: Vec<String>, stdin: bool, tty: bool, st: Arc<HostState>) -> Session {
    let mut cmd = if tty {
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let mut c = tokio::process::Command::new("script");
        c.args(["-qfec", &quoted.join(" "), "/dev/null"]);
        c
    } else {
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(8);
    let (out_tx, out_rx) = mpsc::channel::<Out>(8);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Out::Stderr(Bytes::from(format!("exec: {e}\n"))))
                    .await;
                let _ = tx.send(Out::Exit(127)).await;
            });
            return Session {
                input: in_tx,
                output: out_rx,
            };
        }
    };
    let mut child_in = child.stdin.take();
    let mut child_out = child.stdout.take().expect("stdout");
    let mut child_err = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            match i {
                Input::Stdin(b) => {
                    if let Some(w) = child_in.as_mut() {
                        let _ = w.write_all(&b).await;
                    }
                }
                Input::CloseStdin => child_in = None,
                Input::Resize(sz) => st.resizes.lock().unwrap().push(sz),
            }
        }
    });
    tokio::spawn(async move {
        let o = out_tx.clone();
        let outs = async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = child_out.read(&mut buf).await {
                if n == 0
                    || o.send(Out::Stdout(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        };
        let e = out_tx.clone();
        let errs = async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = child_err.read(&mut buf).await {
                if n == 0
                    || e.send(Out::Stderr(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        };
        tokio::join!(outs, errs);
        let code = child
            .wait()
            .await
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(137);
        let _ = out_tx.send(Out::Exit(code)).await;
    });
    Session {
        input: in_tx,
        output: out_rx,
    }
}

impl StreamBackend for HostBackend {
    fn exec(
        &self,
        pod: PodRef,
        _container: String,
        req: ExecRequest,
    ) -> BoxFuture<'static, Result<Session, BackendError>> {
        let st = self.0.clone();
        Box::pin(async move {
            known(&pod)?;
            Ok(spawn_session(req.command, req.stdin, req.tty, st))
        })
    }

    fn attach(
        &self,
        pod: PodRef,
        _container: String,
        stdin: bool,
        tty: bool,
    ) -> BoxFuture<'static, Result<Session, BackendError>> {
        let st = self.0.clone();
        Box::pin(async move {
            known(&pod)?;
            // The "main process" of the stand-in: says hello, then echoes its input.
            let argv = vec!["sh".into(), "-c".into(), "echo attached; cat".into()];
            Ok(spawn_session(argv, stdin, tty, st))
        })
    }

    fn log_file(
        &self,
        pod: PodRef,
        container: String,
        previous: bool,
    ) -> BoxFuture<'static, Result<LogFile, BackendError>> {
        let dir = self.0.logs.clone();
        Box::pin(async move {
            known(&pod)?;
            let name = if previous {
                format!("{}-{container}.log.1", pod.name)
            } else {
                format!("{}-{container}.log", pod.name)
            };
            let path = dir.join(name);
            if previous && !path.exists() {
                return Err(BackendError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    pod.name
                )));
            }
            Ok(LogFile { path })
        })
    }

    fn is_running(&self, _pod: PodRef, _container: String) -> BoxFuture<'static, bool> {
        let r = self.0.running.load(Ordering::SeqCst);
        Box::pin(async move { r })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn PodConn>, BackendError>> {
        let local = self.0.ports.lock().unwrap().get(&port).copied();
        Box::pin(async move {
            known(&pod)?;
            let local = local.ok_or_else(|| {
                BackendError::Unavailable(format!("connecting to port {port}: connection refused"))
            })?;
            let s = tokio::net::TcpStream::connect(("127.0.0.1", local))
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?;
            Ok(Box::new(s) as Box<dyn PodConn>)
        })
    }
}

struct Env {
    dir: PathBuf,
    kubeconfig: PathBuf,
    url: String,
    token: String,
    state: Arc<HostState>,
    /// A port on which nothing listens (an unreachable agent).
    dead_port: u16,
}

/// A CRI log line.
fn cri(time: &str, stream: &str, text: &str) -> String {
    format!("{time} {stream} F {text}\n")
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (env, _server) = setup().await;
                tx.send(env).unwrap();
                // Serve for the rest of the test binary's life.
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(120)).expect("set-up")
    })
}

async fn setup() -> (Env, h8s_apiserver::Server) {
    let dir = tempfile::Builder::new()
        .prefix("h8s-stream")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    let store = h8s_store::open("embedded", &data, None).await.unwrap();
    let srv = h8s_apiserver::Server::start(h8s_apiserver::Config::new(
        data.clone(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    ))
    .await
    .expect("API server starts");
    let url = format!("https://{}", srv.addr);
    let token = srv.pki.admin_token.clone();
    let kubeconfig = data.join("admin.kubeconfig");

    // The agent's serving certificate, from the cluster CA.
    // What a node's kubelet-serving CSR gets: CN=system:node:node-1, O=system:nodes, its
    // name and InternalIP (the API server checks all three before it proxies a stream).
    let (cert, key) = srv
        .pki
        .issue_node_serving_cert(
            "node-1",
            &["node-1".to_string(), "127.0.0.1".to_string()],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let tls = stream::server_tls(&srv.pki.ca_pem, &cert, &key).unwrap();

    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let state = Arc::new(HostState {
        logs: logs.clone(),
        ..Default::default()
    });
    state.running.store(true, Ordering::SeqCst);

    // "Pod" port 8080: an HTTP responder on loopback.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    state
        .ports
        .lock()
        .unwrap()
        .insert(8080, http.local_addr().unwrap().port());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = http.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from pod port 8080\n";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_port = listener.local_addr().unwrap().port();
    let mut cfg = ServeConfig::new(Arc::new(tls));
    cfg.stream_creation_timeout = Duration::from_secs(10);
    tokio::spawn(stream::serve(
        listener,
        cfg,
        Arc::new(HostBackend(state.clone())),
    ));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);

    // Logs of pod one (container c) and two (containers a, b).
    std::fs::write(
        logs.join("one-c.log"),
        cri("2024-01-01T00:00:00.000000001Z", "stdout", "first line")
            + &cri("2024-01-01T00:00:01.000000001Z", "stderr", "second line")
            + &cri("2030-01-01T00:00:00.000000001Z", "stdout", "third line"),
    )
    .unwrap();
    std::fs::write(
        logs.join("two-b.log"),
        cri("2024-01-01T00:00:00.000000001Z", "stdout", "from b"),
    )
    .unwrap();

    let env = Env {
        dir,
        kubeconfig,
        url,
        token,
        state,
        dead_port,
    }
    .with_objects(agent_port);
    (env, srv)
}

impl Env {
    fn with_objects(self, agent_port: u16) -> Env {
        // Nodes: one whose agent is the test's server, one where nothing listens.
        for (node, port) in [("node-1", agent_port), ("ghost", self.dead_port)] {
            let body =
                format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{node}"}}}}"#);
            let (c, b) = self.api("POST", "/api/v1/nodes", Some(&body));
            assert_eq!(c, 201, "{b}");
            let status = format!(
                r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
            );
            let (c, b) = self.api_ct(
                "PATCH",
                &format!("/api/v1/nodes/{node}/status"),
                Some(&status),
                "application/merge-patch+json",
            );
            assert_eq!(c, 200, "{b}");
        }
        // The ServiceAccount admission wants the namespace's default account (no controller
        // makes it here).
        let (c, b) = self.api(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
        );
        assert!(c == 201 || c == 409, "{b}");
        let pod = |name: &str, node: Option<&str>, containers: &[&str]| {
            let cs: Vec<String> = containers
                .iter()
                .map(|c| format!(r#"{{"name":"{c}","image":"busybox"}}"#))
                .collect();
            let node = node
                .map(|n| format!(r#","nodeName":"{n}""#))
                .unwrap_or_default();
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"containers":[{}]{node}}}}}"#,
                cs.join(",")
            )
        };
        for (name, node, cs) in [
            ("one", Some("node-1"), vec!["c"]),
            ("two", Some("node-1"), vec!["a", "b"]),
            ("pending", None, vec!["c"]),
            ("lost", Some("ghost"), vec!["c"]),
            ("orphan", Some("no-such-node"), vec!["c"]),
        ] {
            let (c, b) = self.api(
                "POST",
                "/api/v1/namespaces/default/pods",
                Some(&pod(name, node, &cs)),
            );
            assert_eq!(c, 201, "{b}");
            // kubectl port-forward wants a Running pod.
            let (c, b) = self.api_ct(
                "PATCH",
                &format!("/api/v1/namespaces/default/pods/{name}/status"),
                Some(r#"{"status":{"phase":"Running"}}"#),
                "application/merge-patch+json",
            );
            assert_eq!(c, 200, "{b}");
        }
        self
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_ct(method, path, body, "application/json")
    }

    fn api_ct(&self, method: &str, path: &str, body: Option<&str>, ct: &str) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sk", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg("-H")
            .arg(format!("Content-Type: {ct}"));
        if let Some(b) = body {
            c.args(["--data-binary", b]);
        }
        let out = c.arg(format!("{}{path}", self.url)).output().expect("curl");
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let (b, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), b.to_string())
    }

    fn kubectl(&self, ver: &str) -> Command {
        let mut c = Command::new(Path::new(KUBECTL_DIR).join(format!("kubectl.{ver}")));
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join(format!("cache-{ver}")))
            .env_remove("KUBECONFIG");
        c
    }

    fn run(&self, ver: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.kubectl(ver);
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
            let mut w = child.stdin.take().unwrap();
            w.write_all(input).unwrap();
        }
        wait_timeout(child, Duration::from_secs(60))
    }
}

fn wait_timeout(mut child: std::process::Child, limit: Duration) -> Output {
    // Drain both pipes while waiting, or a chatty child blocks on a full pipe.
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
            let clip = |b: Vec<u8>| {
                let s = String::from_utf8_lossy(&b).to_string();
                if s.len() > 2000 {
                    format!("{}… ({} bytes)", &s[..2000], s.len())
                } else {
                    s
                }
            };
            panic!(
                "timed out; stdout {:?} stderr {:?}",
                clip(out.join().unwrap()),
                clip(err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout {}\nstderr {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn logs_with_kubectls_options() {
    let e = env();
    for ver in ["1.27", "1.33"] {
        let out = ok(&e.run(ver, &["logs", "one"], None));
        assert_eq!(
            out, "first line\nsecond line\nthird line\n",
            "kubectl {ver}"
        );
        let out = ok(&e.run(ver, &["logs", "one", "--tail=1"], None));
        assert_eq!(out, "third line\n");
        let out = ok(&e.run(ver, &["logs", "one", "--tail=2", "--timestamps"], None));
        assert_eq!(
            out,
            "2024-01-01T00:00:01.000000001Z second line\n2030-01-01T00:00:00.000000001Z third line\n"
        );
        // Everything before "now minus an hour" is filtered out; the line from 2030 is not.
        let out = ok(&e.run(ver, &["logs", "one", "--since=1h"], None));
        assert_eq!(out, "third line\n");
        let out = ok(&e.run(ver, &["logs", "one", "--limit-bytes=8"], None));
        assert_eq!(out, "first li");
        let out = ok(&e.run(ver, &["logs", "two", "-c", "b"], None));
        assert_eq!(out, "from b\n");
    }
    // Two containers and none named: the API server's error, as kube-apiserver words it.
    let (code, body) = e.api("GET", "/api/v1/namespaces/default/pods/two/log", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a container name must be specified for pod two, choose one of: [a b]"));
    let o = e.run("1.33", &["logs", "one", "--previous"], None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains(r#"previous terminated container "c" in pod "one" not found"#),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn logs_follow_until_the_container_stops() {
    let e = env();
    let path = e.state.logs.join("two-a.log");
    std::fs::write(&path, cri("2024-01-01T00:00:00Z", "stdout", "before")).unwrap();
    // Pod "two", container "a": served from two-a.log.
    let mut child = e
        .kubectl("1.33")
        .args(["logs", "-f", "two", "-c", "a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let n = out.read(&mut buf).unwrap();
    got.extend_from_slice(&buf[..n]);
    assert_eq!(text(&got), "before\n");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(cri("2024-01-01T00:00:01Z", "stdout", "after").as_bytes())
        .unwrap();
    let n = out.read(&mut buf).unwrap();
    assert_eq!(text(&buf[..n]), "after\n");
    e.state.running.store(false, Ordering::SeqCst);
    let o = wait_timeout(child, Duration::from_secs(20));
    assert!(o.status.success(), "{}", text(&o.stderr));
    e.state.running.store(true, Ordering::SeqCst);
}

#[test]
fn exec_over_websocket_and_spdy() {
    let e = env();
    // 1.27: SPDY only; 1.30 and 1.33: WebSocket v5.
    for ver in ["1.33", "1.30", "1.27"] {
        let out = ok(&e.run(ver, &["exec", "one", "--", "echo", "hi there"], None));
        assert_eq!(out, "hi there\n", "kubectl {ver}");
        // stdin through, stdout and stderr apart.
        let out = e.run(
            ver,
            &["exec", "-i", "one", "--", "sh", "-c", "cat; echo oops >&2"],
            Some(b"line one\nline two\n"),
        );
        assert_eq!(ok(&out), "line one\nline two\n", "kubectl {ver}");
        assert_eq!(text(&out.stderr), "oops\n", "kubectl {ver}");
        // The exit code comes back through the error channel's Status.
        let out = e.run(ver, &["exec", "one", "--", "sh", "-c", "exit 3"], None);
        assert_eq!(
            out.status.code(),
            Some(3),
            "kubectl {ver}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("command terminated with exit code 3"),
            "{}",
            text(&out.stderr)
        );
        // A large output arrives whole (flow through the bounded queues).
        let out = ok(&e.run(
            ver,
            &[
                "exec",
                "one",
                "--",
                "sh",
                "-c",
                "head -c 3000000 /dev/zero | tr '\\0' x",
            ],
            None,
        ));
        assert_eq!(out.len(), 3_000_000, "kubectl {ver}");
    }
}

#[test]
fn exec_with_a_terminal() {
    let e = env();
    for ver in ["1.27", "1.33"] {
        let kubectl = Path::new(KUBECTL_DIR).join(format!("kubectl.{ver}"));
        let cmd = format!(
            "stty cols 91 rows 33; {} --kubeconfig {} exec -it one -- sh -c 'tty; echo done'",
            kubectl.display(),
            e.kubeconfig.display()
        );
        e.state.resizes.lock().unwrap().clear();
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let s = text(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl {ver}: {s} {}",
            text(&out.stderr)
        );
        assert!(s.contains("/dev/pts/"), "kubectl {ver}: {s}");
        assert!(s.contains("done"), "kubectl {ver}: {s}");
        let sizes = e.state.resizes.lock().unwrap().clone();
        assert!(
            sizes.contains(&TermSize {
                width: 91,
                height: 33
            }),
            "kubectl {ver} sent {sizes:?}"
        );
    }
}

#[test]
fn attach_to_the_main_process() {
    let e = env();
    for ver in ["1.27", "1.33"] {
        let out = e.run(ver, &["attach", "-i", "one"], Some(b"ping\n"));
        let s = ok(&out);
        assert!(
            s.contains("attached\n") && s.contains("ping\n"),
            "kubectl {ver}: {s}"
        );
    }
}

#[test]
fn copy_both_ways() {
    let e = env();
    let src = e.dir.join("cp-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file.txt"), "payload ".repeat(10_000)).unwrap();
    for ver in ["1.27", "1.33"] {
        // Into the "pod" (the stand-in runs tar on this host), then back out.
        let into = e.dir.join(format!("cp-into-{ver}"));
        std::fs::create_dir_all(&into).unwrap();
        ok(&e.run(
            ver,
            &[
                "cp",
                src.join("file.txt").to_str().unwrap(),
                &format!("one:{}", into.join("file.txt").display()),
            ],
            None,
        ));
        assert_eq!(
            std::fs::read(into.join("file.txt")).unwrap(),
            std::fs::read(src.join("file.txt")).unwrap()
        );
        let back = e.dir.join(format!("cp-back-{ver}.txt"));
        ok(&e.run(
            ver,
            &[
                "cp",
                &format!("one:{}", into.join("file.txt").display()),
                back.to_str().unwrap(),
            ],
            None,
        ));
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(src.join("file.txt")).unwrap()
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn port_forward_spdy_and_websocket_tunnel() {
    let e = env();
    // 1.27: SPDY; 1.33: SPDY inside a WebSocket.
    for ver in ["1.27", "1.33"] {
        let local = free_port();
        let mut child = e
            .kubectl(ver)
            .args(["port-forward", "pod/one", &format!("{local}:8080")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut line = [0u8; 128];
        let n = out.read(&mut line).unwrap();
        assert!(
            text(&line[..n]).contains("Forwarding from"),
            "{}",
            text(&line[..n])
        );
        for _ in 0..3 {
            assert_eq!(curl(local), "hello from pod port 8080\n", "kubectl {ver}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn port_forward_to_a_closed_port_reports_the_error() {
    let e = env();
    let local = free_port();
    let mut child = e
        .kubectl("1.33")
        .args(["port-forward", "pod/one", &format!("{local}:9999")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 128];
    let _ = out.read(&mut line).unwrap();
    assert_eq!(curl(local), "");
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(
        err.contains("error forwarding port 9999 to pod one") && err.contains("connection refused"),
        "{err}"
    );
}

#[test]
fn python_client_exec_and_port_forward() {
    let e = env();
    let script = format!(
        r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config(config_file={kc:?})
api = client.CoreV1Api()
out = stream(api.connect_get_namespaced_pod_exec, "one", "default",
             command=["sh", "-c", "echo py-$((6*7))"], stderr=True, stdin=False, stdout=True, tty=False)
print("EXEC", out.strip())
pf = portforward(api.connect_get_namespaced_pod_portforward, "one", "default", ports="8080")
s = pf.socket(8080)
s.setblocking(True)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while b"hello" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("PF", data.decode().split("\r\n\r\n", 1)[-1].strip())
s.close()
pf.close()
"#,
        kc = e.kubeconfig.display().to_string()
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_timeout(child, Duration::from_secs(60));
    let s = ok(&o);
    assert!(s.contains("EXEC py-42"), "{s}");
    assert!(s.contains("PF hello from pod port 8080"), "{s}");
}

#[test]
fn api_errors_are_statuses() {
    let e = env();
    let (c, b) = e.api("GET", "/api/v1/namespaces/default/pods/nope/log", None);
    assert_eq!(c, 404, "{b}");
    assert!(b.contains(r#""reason":"NotFound""#), "{b}");
    let (c, b) = e.api("GET", "/api/v1/namespaces/default/pods/pending/log", None);
    assert_eq!(c, 400, "{b}");
    assert!(
        b.contains("pod pending does not have a host assigned"),
        "{b}"
    );
    let (c, b) = e.api("GET", "/api/v1/namespaces/default/pods/lost/log", None);
    assert_eq!(c, 503, "{b}");
    assert!(b.contains("error dialing backend"), "{b}");
    let (c, b) = e.api("GET", "/api/v1/namespaces/default/pods/orphan/log", None);
    assert_eq!(c, 404, "{b}");
    assert!(b.contains(r#"nodes \"no-such-node\" not found"#), "{b}");
    let (c, b) = e.api(
        "GET",
        "/api/v1/namespaces/default/pods/one/log?container=zzz",
        None,
    );
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("container zzz is not valid for pod one"), "{b}");
    let (c, b) = e.api(
        "GET",
        "/api/v1/namespaces/default/pods/one/log?tailLines=x",
        None,
    );
    assert_eq!(c, 400, "{b}");
    // kubectl prints the agent's reason for an unreachable node.
    let o = e.run("1.33", &["exec", "lost", "--", "true"], None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("error dialing backend"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn only_the_api_server_may_connect_to_the_agent() {
    let e = env();
    // curl with no client certificate to the agent's port (found from the Node).
    let (_, node) = e.api("GET", "/api/v1/nodes/node-1", None);
    let v: serde_json::Value = serde_json::from_str(&node).unwrap();
    let port = v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!(
            "https://127.0.0.1:{port}/containerLogs/default/one/c"
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "000",
        "served a client without a certificate"
    );
}
