//! Hollow nodes: `h8s agent --hollow N` against a real `h8s server` (no agent of its own)
//! registers N marked Nodes that renew their Leases and report bound pods Running without
//! starting anything; a deleted pod is finished off. No VMs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_ready(cmd: &mut Command) -> (Proc, String) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe: the child ends with the test.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("H8S_LOG", "warn")
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    assert!(line.starts_with("ready"), "unexpected first line {line:?}");
    (Proc(child), line)
}

fn kubectl(kc: &PathBuf, args: &[&str]) -> (bool, String) {
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn json(kc: &PathBuf, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out) = kubectl(kc, &a);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
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

#[test]
fn hollow_nodes_heartbeat_and_run_pods_without_vms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, line) = spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--data-dir",
            ])
            .arg(&data),
    );
    let kc = PathBuf::from(line.split_whitespace().nth(2).unwrap());
    let (_hollow, line) = spawn_ready(
        Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(["agent", "--hollow", "3", "--kubeconfig"])
            .arg(&kc)
            .args(["--data-dir"])
            .arg(dir.path().join("agent"))
            .args(["--node-lease-renew-interval", "1s"])
            .args(["--node-status-update-frequency", "2s"]),
    );
    assert_eq!(line.trim(), "ready hollow 3");
    let nodes = json(&kc, &["get", "nodes", "-l", "h8s.io/hollow=true"]).unwrap();
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in nodes["items"].as_array().unwrap() {
        let info = &n["status"]["nodeInfo"];
        assert!(info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("hollow://"));
        assert_eq!(info["kubeletVersion"], "v1.33.0-h8s");
        assert!(n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
    }
    // Leases are renewed.
    let renew = |n: &str| {
        json(&kc, &["-n", "kube-node-lease", "get", "lease", n])
            .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_string))
    };
    let t1 = wait(Duration::from_secs(10), "a lease", || {
        renew("hollow-node-2")
    });
    wait(Duration::from_secs(10), "a renewal", || {
        renew("hollow-node-2").filter(|t| *t != t1)
    });
    // A pod bound to a hollow node is reported Running and Ready with an IP.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: hollow-node-1\n  containers:\n  - name: c\n    image: busybox\n";
    let mut c = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(pod.as_bytes()).unwrap();
    }
    assert!(c.wait().unwrap().success());
    let p = wait(Duration::from_secs(20), "the pod Running", || {
        let p = json(&kc, &["get", "pod", "p"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert!(p["status"]["podIP"]
        .as_str()
        .unwrap()
        .starts_with("100.64."));
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    // Deleting it finishes (the hollow kubelet confirms with grace 0).
    let (ok, out) = kubectl(&kc, &["delete", "pod", "p", "--wait=true", "--timeout=30s"]);
    assert!(ok, "{out}");
    assert!(json(&kc, &["get", "pod", "p"]).is_none());
}
