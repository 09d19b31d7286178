//! Streaming as a user of the real cluster sees it: `h8s server` with its in-process node
//! agent (pod VMs under QEMU, TCG here, busybox from `scripts/setup`), a Deployment running
//! busybox `httpd`, and kubectl 1.27/1.30/1.33 and the Python client: `logs` (-f, --tail,
//! --previous after a restart), `exec -i`, `exec -it` through a pty, `port-forward` + curl,
//! `cp` both ways. The path: API server → node proxy (mTLS) → the agent's streaming server
//! (LookupBackend) → the pod's supervisor → the guest agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    child: Child,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the server this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        // Pod VMs outlive their agent by design: stop whatever still runs under this
        // cluster's directory (supervisors and QEMU), by PID after checking the command line.
        let dir = self.dir.to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmd).contains(&dir) {
                // SAFETY: kill(2) on a process whose command line names this test's directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // And the node's pod network (its bridge, gateway namespace and rules).
        let pid = std::process::id();
        let _ = Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(["net", "rm", "--force", &format!("str{}", pid % 100000)])
            .env("H8S_NET_DIR", self.dir.join("net"))
            .env("H8S_ROOT", self.dir.join("r"))
            .env("H8S_NODE_NAME", format!("stream-{pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn start() -> Cluster {
    for f in ["guest/vmlinuz", "guest/initramfs.img", "images/busybox-oci"] {
        assert!(
            cache().join(f).exists(),
            "needs {f} in the cache: run scripts/setup"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("h8s-ss")
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
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    let pid = std::process::id();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_h8s"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--node-name", &format!("stream-{pid}")])
        .args(["--streaming-port", "0"])
        .args(["--restart-backoff", "1s", "--restart-backoff-max", "4s"])
        .args(["--pod-sync-period", "500ms"])
        .args(["--node-status-update-frequency", "2s"])
        .args(["--node-lease-renew-interval", "2s"])
        .args(["--pod-network", &format!("str{}", pid % 100000)])
        .args(["--pod-cidr", &format!("10.{}.0.0/16", 100 + pid % 40)])
        .args(["--pod-network-vni", &(20000 + pid % 10000).to_string()])
        .env("H8S_ROOT", dir.join("r"))
        // Cold boots: this suite is not about templates, and a template build
        // (a whole boot, its holder outliving the agent) would only slow it.
        .env("H8S_TEMPLATES", "0")
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
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe: the server ends with the test.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawning h8s server");
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
    Cluster {
        dir,
        kubeconfig,
        child,
    }
}

impl Cluster {
    fn kubectl(&self, ver: &str) -> Command {
        let mut c = Command::new(PathBuf::from(KUBECTL_DIR).join(format!("kubectl.{ver}")));
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

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let o = self.run("1.33", &a, None);
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    }
}

fn wait_timeout(mut child: Child, limit: Duration) -> Output {
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
            let e = String::from_utf8_lossy(&err.join().unwrap()).to_string();
            panic!("timed out; stderr {e:?}");
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn kubectl_streams_into_deployment_pods() {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/h8s-vm-tests.lock")
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid fd we own; blocks until the other VM test is done.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let c = start();
    let ns = format!("st-{}", std::process::id() % 100000);
    ok(&c.run("1.33", &["create", "namespace", &ns], None));
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        imagePullPolicy: IfNotPresent\n        command: [\"sh\", \"-c\", \"mkdir -p /www && echo served-from-the-vm > /www/index.html && echo web-started && exec httpd -f -p 8080 -h /www\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo attempt-$RANDOM; sleep 1; exit 1\"]\n"
    );
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(yaml.as_bytes())));
    let pod = wait(Duration::from_secs(240), "a Running web pod", || {
        let l = c.json(&["-n", &ns, "get", "pods", "-l", "app=web"]);
        l["items"].as_array()?.iter().find_map(|p| {
            (p["status"]["phase"] == "Running")
                .then(|| p["metadata"]["name"].as_str().map(str::to_string))
                .flatten()
        })
    });

    // logs: the container's first line, with --tail and -f (ended by the client here).
    wait(Duration::from_secs(60), "the web pod's output", || {
        let o = c.run("1.33", &["-n", &ns, "logs", &pod], None);
        text(&o.stdout).contains("web-started").then_some(())
    });
    let mut f = c
        .kubectl("1.33")
        .args(["-n", &ns, "logs", "-f", "--tail=1", &pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = f.stdout.as_mut().unwrap().read(&mut buf).unwrap();
    assert_eq!(text(&buf[..n]), "web-started\n");
    let _ = f.kill();
    let _ = f.wait();

    for ver in ["1.27", "1.30", "1.33"] {
        let out = ok(&c.run(
            ver,
            &["-n", &ns, "exec", &pod, "--", "cat", "/www/index.html"],
            None,
        ));
        assert_eq!(out, "served-from-the-vm\n", "kubectl {ver}");
        let out = ok(&c.run(
            ver,
            &["-n", &ns, "exec", "-i", &pod, "--", "wc", "-l"],
            Some(b"a\nb\nc\n"),
        ));
        assert_eq!(out.trim(), "3", "kubectl {ver}");
        // exec -it through a pty, with kubectl's terminal size reaching the VM.
        let kubectl = PathBuf::from(KUBECTL_DIR).join(format!("kubectl.{ver}"));
        let cmd = format!(
            "stty cols 99 rows 29; {} --kubeconfig {} -n {ns} exec -it {pod} -- sh -c 'sleep 1; tty; stty size'",
            kubectl.display(),
            c.kubeconfig.display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let s = text(&out.stdout);
        assert!(
            s.contains("/dev/pts/") && s.contains("29 99"),
            "kubectl {ver}: {s}"
        );
        // port-forward to the pod's httpd.
        let local = free_port();
        let mut pf = c
            .kubectl(ver)
            .args([
                "-n",
                &ns,
                "port-forward",
                &format!("pod/{pod}"),
                &format!("{local}:8080"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 128];
        let n = pf.stdout.as_mut().unwrap().read(&mut line).unwrap();
        assert!(text(&line[..n]).contains("Forwarding from"));
        for _ in 0..2 {
            assert_eq!(curl(local), "served-from-the-vm\n", "kubectl {ver}");
        }
        let _ = pf.kill();
        let _ = pf.wait();
        // cp both ways.
        let src = c.dir.join(format!("up-{ver}.txt"));
        std::fs::write(&src, "copied ".repeat(5000)).unwrap();
        ok(&c.run(
            ver,
            &[
                "-n",
                &ns,
                "cp",
                src.to_str().unwrap(),
                &format!("{pod}:/tmp/up.txt"),
            ],
            None,
        ));
        let back = c.dir.join(format!("back-{ver}.txt"));
        ok(&c.run(
            ver,
            &[
                "-n",
                &ns,
                "cp",
                &format!("{pod}:/tmp/up.txt"),
                back.to_str().unwrap(),
            ],
            None,
        ));
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
    }

    // The Python client: exec and its own port-forward protocol.
    let script = format!(
        r#"
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config(config_file={kc:?})
api = client.CoreV1Api()
print("EXEC", stream(api.connect_get_namespaced_pod_exec, {pod:?}, {ns:?},
      command=["cat", "/www/index.html"], stderr=True, stdin=False, stdout=True, tty=False).strip())
pf = portforward(api.connect_get_namespaced_pod_portforward, {pod:?}, {ns:?}, ports="8080")
s = pf.socket(8080)
s.setblocking(True)
s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
data = b""
while b"the-vm" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("PF", data.decode().split("\r\n\r\n", 1)[-1].strip())
s.close()
pf.close()
"#,
        kc = c.kubeconfig.display().to_string()
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let s = ok(&wait_timeout(child, Duration::from_secs(120)));
    assert!(s.contains("EXEC served-from-the-vm"), "{s}");
    assert!(s.contains("PF served-from-the-vm"), "{s}");

    // logs --previous: the crashing pod's last terminated instance.
    wait(
        Duration::from_secs(180),
        "a restart of the crashing pod",
        || {
            let p = c.json(&["-n", &ns, "get", "pod", "crash"]);
            (p["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(())
        },
    );
    let prev = wait(
        Duration::from_secs(30),
        "the previous instance's log",
        || {
            let o = c.run("1.33", &["-n", &ns, "logs", "crash", "--previous"], None);
            let s = text(&o.stdout);
            s.contains("attempt-").then_some(s)
        },
    );
    assert_eq!(prev.lines().count(), 1, "{prev}");

    // Deleting the pods stops their VMs.
    ok(&c.run("1.33", &["-n", &ns, "delete", "deployment", "web"], None));
    ok(&c.run(
        "1.33",
        &[
            "-n",
            &ns,
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=true",
        ],
        None,
    ));
    wait(Duration::from_secs(90), "the pod VMs to stop", || {
        let left = std::fs::read_dir(c.dir.join("r/pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("pod.json"))
                    .unwrap_or_default()
                    .contains(&format!("\"io.kubernetes.pod.namespace\":\"{ns}\""))
            })
            .count();
        (left == 0).then_some(())
    });
    ok(&c.run("1.33", &["delete", "namespace", &ns, "--wait=false"], None));
}
