//! Streaming into a real pod VM: kubectl (1.27 SPDY, 1.33 WebSocket) and the Python client →
//! the API server (in-process) → its node proxy over mutually authenticated TLS → the
//! agent's streaming server with the runtime backend → the pod's supervisor → the guest
//! agent inside the VM (QEMU, TCG here). One VM for the whole file; VM tests of all test
//! binaries take turns through /tmp/h8s-vm-tests.lock.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod node_support;

use h8s_agent::stream::{self, RuntimeBackend, ServeConfig};
use h8s_runtime::{
    ContainerConfig, ImageDisk, Runtime, RuntimeConfig, SandboxConfig, ShimCommand, VmSettings,
};
use node_support::{curl, free_port, ok, text, wait_timeout, KUBECTL_DIR};

fn guest_ready() -> bool {
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"));
    ["guest/vmlinuz", "guest/initramfs.img"]
        .iter()
        .all(|f| cache.join(f).is_file())
}

/// A busybox root filesystem (Debian's busybox-static) as an erofs image.
fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("needs busybox-static");
    for applet in [
        "sh", "echo", "cat", "sleep", "ls", "true", "tar", "httpd", "tty", "stty", "head", "tr",
        "mkdir", "wc", "env",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("www/index.html"), "hello from the pod VM\n").unwrap();
    let img = dir.join("busybox.erofs");
    let st = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&img)
        .arg(&root)
        .status()
        .expect("needs erofs-utils");
    assert!(st.success());
    img
}

struct Env {
    dir: PathBuf,
    kubeconfig: PathBuf,
    url: String,
    token: String,
    rt: Runtime,
    pod_id: String,
}

impl Env {
    fn api(&self, method: &str, path: &str, body: Option<&str>, ct: &str) -> (u16, String) {
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
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        wait_timeout(child, Duration::from_secs(120))
    }
}

/// Kills what the test started in `root` (supervisors and QEMU, by PID from the records).
fn cleanup(rt: &Runtime) {
    let pods = rt.root().join("pods");
    let root = rt.root().to_string_lossy().to_string();
    for d in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        let Ok(rec) = std::fs::read_to_string(d.path().join("pod.json")) else {
            continue;
        };
        let rec: serde_json::Value = serde_json::from_str(&rec).unwrap_or_default();
        for who in ["shim", "qemu"] {
            if let Some(pid) = rec[who]["pid"].as_u64() {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&root) {
                    // SAFETY: kill(2) on a PID whose command line names our state root.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

async fn setup(dir: &Path) -> (Env, h8s_apiserver::Server) {
    let data = dir.join("data");
    let store = h8s_store::open("embedded", &data, None).await.unwrap();
    let srv = h8s_apiserver::Server::start(h8s_apiserver::Config::new(
        data.clone(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    ))
    .await
    .expect("API server starts");

    // The pod VM.
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.boot_timeout_secs = 180;
    let rt = Runtime::new(RuntimeConfig {
        images: Some(dir.join("images")),
        root: dir.join("state"),
        vm,
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s")),
            args: vec!["pod-shim".into()],
        },
    });
    let image = busybox_erofs(dir);
    let mut sb = SandboxConfig::new("stream-vm");
    sb.memory_mib = 192;
    sb.images.push(ImageDisk {
        name: "busybox".into(),
        path: image,
    });
    for (k, v) in [
        ("io.kubernetes.pod.namespace", "default"),
        ("io.kubernetes.pod.name", "vm"),
    ] {
        sb.labels.insert(k.into(), v.into());
    }
    let pod_id = rt.run_sandbox(sb).await.expect("pod VM starts");
    rt.create_container(
        &pod_id,
        // Through serde so that fields added later take their defaults.
        serde_json::from_value::<ContainerConfig>(serde_json::json!({
            "name": "c",
            "image": "busybox",
            "command": ["sh", "-c", "echo started; exec httpd -f -p 8080 -h /www"],
            "env": ["PATH=/bin"],
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    rt.start_container(&pod_id, "c").await.unwrap();

    // The agent's serving certificate from the cluster CA, and its streaming server.
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_port = listener.local_addr().unwrap().port();
    tokio::spawn(stream::serve(
        listener,
        ServeConfig::new(Arc::new(tls)),
        Arc::new(RuntimeBackend::new(rt.clone())),
    ));

    let env = Env {
        dir: dir.to_path_buf(),
        kubeconfig: data.join("admin.kubeconfig"),
        url: format!("https://{}", srv.addr),
        token: srv.pki.admin_token.clone(),
        rt,
        pod_id,
    };
    let json = "application/json";
    let merge = "application/merge-patch+json";
    let (c, b) = env.api(
        "POST",
        "/api/v1/nodes",
        Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}}"#),
        json,
    );
    assert_eq!(c, 201, "{b}");
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{agent_port}}}}}}}}}"#
    );
    let (c, b) = env.api("PATCH", "/api/v1/nodes/node-1/status", Some(&status), merge);
    assert_eq!(c, 200, "{b}");
    let (c, b) = env.api(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
        json,
    );
    assert!(c == 201 || c == 409, "{b}");
    let (c, b) = env.api(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"vm"},"spec":{"nodeName":"node-1","containers":[{"name":"c","image":"busybox"}]}}"#),
        json,
    );
    assert_eq!(c, 201, "{b}");
    let (c, b) = env.api(
        "PATCH",
        "/api/v1/namespaces/default/pods/vm/status",
        Some(r#"{"status":{"phase":"Running"}}"#),
        merge,
    );
    assert_eq!(c, 200, "{b}");
    (env, srv)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn kubectl_and_python_stream_into_a_pod_vm() {
    assert!(
        guest_ready(),
        "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
    );
    let _lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let dir = tempfile::Builder::new()
        .prefix("h8s-svm")
        .tempdir_in("/tmp")
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (e, _srv) = rt.block_on(setup(dir.path()));
    struct Cleanup(Runtime);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            cleanup(&self.0);
        }
    }
    let _cleanup = Cleanup(e.rt.clone());

    // logs: what the container printed.
    let t0 = Instant::now();
    loop {
        let out = e.run("1.33", &["logs", "vm"], None);
        if text(&out.stdout).contains("started") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    for ver in ["1.27", "1.33"] {
        // exec: a file of the image, stdin through, the exit code back.
        let out = ok(&e.run(ver, &["exec", "vm", "--", "cat", "/www/index.html"], None));
        assert_eq!(out, "hello from the pod VM\n", "kubectl {ver}");
        let out = ok(&e.run(
            ver,
            &["exec", "-i", "vm", "--", "wc", "-c"],
            Some(&vec![b'z'; 200_000]),
        ));
        assert_eq!(out.trim(), "200000", "kubectl {ver}");
        let out = e.run(ver, &["exec", "vm", "--", "sh", "-c", "exit 7"], None);
        assert_eq!(out.status.code(), Some(7), "kubectl {ver}");
        // A terminal inside the VM, through a pty on this side.
        let kubectl = Path::new(KUBECTL_DIR).join(format!("kubectl.{ver}"));
        let cmd = format!(
            "stty cols 101 rows 37; {} --kubeconfig {} exec -it vm -- sh -c 'sleep 1; tty; stty size'",
            kubectl.display(),
            e.kubeconfig.display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let s = text(&out.stdout);
        assert!(s.contains("/dev/pts/"), "kubectl {ver}: {s}");
        assert!(
            s.contains("37 101"),
            "kubectl {ver}: resize reached the VM: {s}"
        );

        // port-forward to busybox httpd in the pod.
        let local = free_port();
        let mut child = e
            .kubectl(ver)
            .args(["port-forward", "pod/vm", &format!("{local}:8080")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 128];
        let n = child.stdout.as_mut().unwrap().read(&mut line).unwrap();
        assert!(text(&line[..n]).contains("Forwarding from"));
        for _ in 0..3 {
            assert_eq!(curl(local), "hello from the pod VM\n", "kubectl {ver}");
        }
        let _ = child.kill();
        let _ = child.wait();

        // cp both ways (tar in the VM's busybox).
        let src = e.dir.join(format!("up-{ver}.bin"));
        let payload: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &payload).unwrap();
        ok(&e.run(ver, &["cp", src.to_str().unwrap(), "vm:/tmp/up.bin"], None));
        let back = e.dir.join(format!("back-{ver}.bin"));
        ok(&e.run(ver, &["cp", "vm:/tmp/up.bin", back.to_str().unwrap()], None));
        assert_eq!(std::fs::read(&back).unwrap(), payload, "kubectl {ver}");
    }

    // The Python client: exec, then a port-forward over its channel WebSocket.
    let script = format!(
        r#"
import time
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config(config_file={kc:?})
api = client.CoreV1Api()
out = stream(api.connect_get_namespaced_pod_exec, "vm", "default",
             command=["cat", "/www/index.html"], stderr=True, stdin=False, stdout=True, tty=False)
print("EXEC", out.strip())
pf = portforward(api.connect_get_namespaced_pod_portforward, "vm", "default", ports="8080")
s = pf.socket(8080)
s.setblocking(True)
s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
    if b"pod VM" in data:
        break
print("PF", data.decode().split("\r\n\r\n", 1)[-1].strip())
s.close()
pf.close()
n = 20
t = []
for i in range(n):
    t0 = time.monotonic()
    stream(api.connect_get_namespaced_pod_exec, "vm", "default", command=["true"],
           stderr=True, stdin=False, stdout=True, tty=False)
    t.append((time.monotonic() - t0) * 1000)
print("LAT", " ".join("%.1f" % x for x in t))
"#,
        kc = e.kubeconfig.display().to_string()
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = ok(&wait_timeout(child, Duration::from_secs(180)));
    assert!(s.contains("EXEC hello from the pod VM"), "{s}");
    assert!(s.contains("PF hello from the pod VM"), "{s}");

    // Exec round trips: through the API (Python client, WebSocket) and straight into the
    // runtime, printed for BENCHMARKS.md (not asserted: latency is not a test's business).
    let mut api: Vec<f64> = s
        .lines()
        .find_map(|l| l.strip_prefix("LAT "))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let mut direct = Vec::new();
    rt.block_on(async {
        for _ in 0..20 {
            let t0 = Instant::now();
            let mut st =
                e.rt.exec(
                    &e.pod_id,
                    "c",
                    h8s_runtime::ExecConfig {
                        command: vec!["true".into()],
                        env: vec![],
                        tty: false,
                        stdin: false,
                        size: None,
                    },
                )
                .await
                .unwrap();
            while let Ok(Some(ev)) = st.output.next().await {
                if matches!(ev, h8s_runtime::StreamEvent::Exit(_)) {
                    break;
                }
            }
            direct.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    });
    // Whole commands: `h8s exec` (runtime directly) and `kubectl exec` (through the API).
    let time_cmd = |mk: &dyn Fn() -> Command| -> Vec<f64> {
        (0..20)
            .map(|_| {
                let t0 = Instant::now();
                let o = mk().stdin(Stdio::null()).output().unwrap();
                assert!(o.status.success(), "{}", text(&o.stderr));
                t0.elapsed().as_secs_f64() * 1000.0
            })
            .collect()
    };
    let mut h8s_cli = time_cmd(&|| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_h8s"));
        c.arg("exec")
            .arg("--root")
            .arg(e.rt.root())
            .args(["stream-vm", "--", "true"]);
        c
    });
    let mut kubectl_ws = time_cmd(&|| {
        let mut c = e.kubectl("1.33");
        c.args(["exec", "vm", "--", "true"]);
        c
    });
    let mut kubectl_spdy = time_cmd(&|| {
        let mut c = e.kubectl("1.27");
        c.args(["exec", "vm", "--", "true"]);
        c
    });
    for (what, v) in [
        (
            "Python client exec through the API (WebSocket v5)",
            &mut api,
        ),
        ("runtime exec in-process (Runtime::exec)", &mut direct),
        ("`h8s exec` command (runtime, new process)", &mut h8s_cli),
        (
            "`kubectl.1.33 exec` command (WebSocket, through the API)",
            &mut kubectl_ws,
        ),
        (
            "`kubectl.1.27 exec` command (SPDY, through the API)",
            &mut kubectl_spdy,
        ),
    ] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if !v.is_empty() {
            eprintln!(
                "exec round trip | {what} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                v.len(),
                v[0],
                percentile(v, 0.5),
                percentile(v, 0.99)
            );
        }
    }
    drop(rt);
}
