//! The node agent restarting: `h8s server --disable-agent` plus a separate `h8s agent`
//! process with pod VMs (QEMU, TCG here). Killing the agent leaves the VMs running; the new
//! agent takes them over without restarting them — with their volume disks still attached (a
//! local volume named by a `cinder:` volume id) — and removes the VM of a pod that was
//! deleted while it was down (with its address).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_ready(cmd: &mut Command, log: &Path) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
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
    assert!(
        line.starts_with("ready"),
        "unexpected first line {line:?}, see {}",
        log.display()
    );
    (Proc(child), line)
}

fn kubectl(kc: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pod(kc: &Path, name: &str) -> Value {
    serde_json::from_str(&kubectl(kc, &["get", "pod", name, "-o", "json"], None)).unwrap()
}

fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn vm_records(root: &Path) -> Vec<Value> {
    std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("pod.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

#[test]
fn restarted_agent_takes_over_running_vms_and_removes_orphans() {
    for f in ["guest/vmlinuz", "guest/initramfs.img", "images/busybox-oci"] {
        assert!(cache().join(f).exists(), "needs {f}: run scripts/setup");
    }
    let dir = tempfile::Builder::new()
        .prefix("h8s-ar")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    let bin = env!("CARGO_BIN_EXE_h8s");
    let (_server, line) = spawn_ready(
        Command::new(bin)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--data-dir",
            ])
            .arg(d.join("data"))
            .env("H8S_LOG", "warn"),
        &d.join("server.log"),
    );
    let kc = PathBuf::from(line.split_whitespace().nth(2).unwrap());
    let agent_data = d.join("agent");
    let imp = Command::new(bin)
        .args(["image", "import"])
        .arg(cache().join("images/busybox-oci"))
        .env("H8S_DATA_DIR", &agent_data)
        .output()
        .unwrap();
    assert!(imp.status.success());
    let node = format!("restart-{}", std::process::id());
    let pid = std::process::id();
    let agent = |log: &str, extra: &[&str]| {
        spawn_ready(
            Command::new(bin)
                .args(["agent", "--kubeconfig"])
                .arg(&kc)
                .arg("--data-dir")
                .arg(&agent_data)
                .args(extra)
                .args(["--node-name", &node, "--streaming-port", "0"])
                .args(["--pod-sync-period", "500ms"])
                .args(["--pod-network", &format!("ar{}", pid % 100000)])
                .args(["--pod-cidr", &format!("10.{}.0.0/16", 100 + pid % 40)])
                .args(["--pod-network-vni", &(15000 + pid % 10000).to_string()])
                .env("H8S_ROOT", d.join("r"))
                .env("H8S_NET_DIR", d.join("net"))
                .env("H8S_NET_EGRESS", "false")
                .env("H8S_BOOT_TIMEOUT", "120")
                .env("H8S_LOG", "info"),
            &d.join(log),
        )
    };
    // A local volume made by the admin (an ext4 file in the agent's volume directory) and
    // its PersistentVolume, which "keep" names by id.
    let vols = agent_data.join("volumes");
    std::fs::create_dir_all(&vols).unwrap();
    let vol_file = vols.join("keep-vol.raw");
    for (prog, args) in [
        ("qemu-img", vec!["create", "-q", "-f", "raw"]),
        ("mkfs.ext4", vec!["-q", "-F"]),
    ] {
        let mut cmd = Command::new(prog);
        cmd.args(args).arg(&vol_file);
        if prog == "qemu-img" {
            cmd.arg("16M");
        }
        assert!(cmd.status().unwrap().success(), "{prog}");
    }
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: keep-vol}}\nspec:\n  capacity: {{storage: 16Mi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  csi: {{driver: local.volumes.h8s.io, volumeHandle: keep-vol, fsType: ext4}}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}\n")),
    );
    let (first, _) = agent("agent1.log", &[]);
    let spec = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n")
    };
    let keep = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: keep\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo before-restart > /data/f && sync && sleep 3600\"]\n    volumeMounts:\n    - {{name: v, mountPath: /data}}\n  volumes:\n  - name: v\n    cinder: {{volumeID: keep-vol, fsType: ext4}}\n");
    kubectl(
        &kc,
        &["apply", "-f", "-"],
        Some(&(keep + "---\n" + &spec("gone"))),
    );
    for p in ["keep", "gone"] {
        wait(Duration::from_secs(240), "pods Running", || {
            (pod(&kc, p)["status"]["phase"] == "Running").then_some(())
        });
    }
    let started =
        pod(&kc, "keep")["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let qemu_of = |name: &str| {
        vm_records(&d.join("r"))
            .into_iter()
            .find(|r| r["config"]["labels"]["io.kubernetes.pod.name"] == name)
            .map(|r| r["qemu"].clone())
    };
    let keep_qemu = qemu_of("keep").expect("keep's VM");
    assert!(keep_qemu.is_object() || keep_qemu.is_array(), "{keep_qemu}");
    // The agent goes away; the VMs stay. Meanwhile one pod is deleted for good.
    drop(first);
    kubectl(
        &kc,
        &["delete", "pod", "gone", "--grace-period=0", "--force"],
        None,
    );
    assert!(qemu_of("gone").is_some(), "the VM outlives the agent");
    let (second, _) = agent("agent2.log", &[]);
    // The orphan's VM and address go; the other VM is the same one, not restarted.
    wait(
        Duration::from_secs(60),
        "the orphan VM to be removed",
        || qemu_of("gone").is_none().then_some(()),
    );
    let nets: String = std::fs::read_dir(d.join("net/networks"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        !nets.contains("\"gone-"),
        "the orphan's address is released"
    );
    assert_eq!(
        qemu_of("keep"),
        Some(keep_qemu.clone()),
        "the VM was taken over, not restarted"
    );
    std::thread::sleep(Duration::from_secs(3));
    let p = pod(&kc, "keep");
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["state"]["running"]["startedAt"], started);
    // The volume disk stays the VM's: the VM itself is the one from before the restart (a
    // restarted agent never detaches a running VM's disks). Reading the data back through
    // `kubectl exec` needs this harness's node to be reachable for streaming, which it is not
    // (its node address is a documentation address); volumes_multinode reads data back.
    assert_eq!(qemu_of("keep"), Some(keep_qemu), "still the same VM");
    // Node-pressure eviction: an agent whose hard memory threshold is always met reports
    // MemoryPressure and evicts the pod it takes over (its only, BestEffort, pod); its soft
    // disk and PID thresholds, always met too, set DiskPressure and PIDPressure once their
    // grace has passed (the hard threshold decides the eviction).
    drop(second);
    let (_third, _) = agent(
        "agent3.log",
        &[
            "--eviction-hard",
            "memory.available<1Ei",
            "--eviction-soft",
            "nodefs.available<100%,pid.available<100%",
            "--eviction-soft-grace-period",
            "nodefs.available=1s,pid.available=1s",
            "--eviction-monitoring-period",
            "1s",
            "--node-status-update-frequency",
            "1s",
        ],
    );
    let p = wait(Duration::from_secs(60), "the pod evicted", || {
        let p = pod(&kc, "keep");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(p["status"]["reason"], "Evicted");
    let msg = p["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: 1Ei")
            && msg.contains("Pod default/keep was using"),
        "{msg}"
    );
    // The conditions, and the node lifecycle controller's taints for them.
    wait(
        Duration::from_secs(60),
        "Memory/Disk/PIDPressure on the node, with their taints",
        || {
            let n: Value =
                serde_json::from_str(&kubectl(&kc, &["get", "node", &node, "-o", "json"], None))
                    .ok()?;
            let conds = n["status"]["conditions"].as_array()?;
            let taints = n["spec"]["taints"].as_array()?;
            ["MemoryPressure", "DiskPressure", "PIDPressure"]
                .iter()
                .all(|t| {
                    conds
                        .iter()
                        .any(|c| c["type"] == *t && c["status"] == "True")
                })
                .then_some(())?;
            ["memory-pressure", "disk-pressure", "pid-pressure"]
                .iter()
                .all(|t| {
                    taints.iter().any(|x| {
                        x["key"] == format!("node.kubernetes.io/{t}") && x["effect"] == "NoSchedule"
                    })
                })
                .then_some(())
        },
    );
    // Deleting it now cleans up as usual.
    kubectl(&kc, &["delete", "pod", "keep", "--wait=true"], None);
    wait(Duration::from_secs(60), "the VM to go", || {
        qemu_of("keep").is_none().then_some(())
    });
    // Take the pod network's devices down again.
    let rm = Command::new(bin)
        .args(["net", "rm", "--force", &format!("ar{}", pid % 100000)])
        .env("H8S_NET_DIR", d.join("net"))
        .env("H8S_NODE_NAME", &node)
        .output()
        .unwrap();
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
}
