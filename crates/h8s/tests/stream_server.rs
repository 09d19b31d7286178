//! Streaming as a user of the real cluster sees it: `h8s server` with its in-process node
//! agent (pod VMs under QEMU, TCG here, busybox from `scripts/setup`), a Deployment running
//! busybox `httpd`, and kubectl 1.27/1.30/1.33 and the Python client: `logs` (-f, --tail,
//! --previous after a restart), `exec -i`, `exec -it` through a pty, `port-forward` + curl,
//! `cp` both ways. The path: API server → node proxy (mTLS) → the agent's streaming server
//! (LookupBackend) → the pod's supervisor → the guest agent.

mod node_support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use node_support::{curl, free_port, ok, text, wait, wait_timeout, Node, Opts, KUBECTL_DIR};

fn start() -> Node {
    let pid = std::process::id();
    node_support::start(Opts {
        tag: "str",
        args: vec![
            "--restart-backoff=1s".into(),
            "--restart-backoff-max=4s".into(),
            format!("--pod-network=str{}", pid % 100000),
            format!("--pod-cidr=10.{}.0.0/16", 100 + pid % 40),
            format!("--pod-network-vni={}", 20000 + pid % 10000),
        ],
        ..Opts::default()
    })
}

#[test]
fn kubectl_streams_into_deployment_pods() {
    let _lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let c = start();
    let ns = format!("st-{}", std::process::id() % 100000);
    ok(&c.run("1.33", &["create", "namespace", &ns], None));
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        imagePullPolicy: IfNotPresent\n        command: [\"sh\", \"-c\", \"mkdir -p /www && echo served-from-the-vm > /www/index.html && echo web-started && exec httpd -f -p 8080 -h /www\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo attempt-$RANDOM; sleep 1; exit 1\"]\n"
    );
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(yaml.as_bytes())));
    let pod = wait(Duration::from_secs(240), "a Running web pod", || {
        let l = c.json(&["-n", &ns, "get", "pods", "-l", "app=web"]).ok()?;
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
        .kubectl_cmd("1.33")
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
            .kubectl_cmd(ver)
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
            let p = c.json(&["-n", &ns, "get", "pod", "crash"]).ok()?;
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
