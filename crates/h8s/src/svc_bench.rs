//! `h8s bench svc`: what the in-pod Service proxy costs. Starts a real `h8s server` with its
//! node agent (`--pod-network api`, pod VMs under QEMU) on a temp dir, a tenant namespace
//! with a server pod (busybox `httpd` on 8080, `nc` sink on 9000) behind a ClusterIP Service
//! and a client pod, then measures from inside the client, interleaved round by round:
//! - HTTP request time: N sequential `wget`s of a small page, to the pod's address (the
//!   baseline) and to the ClusterIP (through the proxy);
//! - throughput: `dd | nc` of M MiB to the pod and to the ClusterIP.
//!
//! Times come from the guest's `/proc/uptime` (10 ms resolution) around each batch, so
//! `kubectl exec` costs are not in them. Writes the `svc` block of BENCHMARKS.md.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::bench_support::{stats, write_section};

#[derive(clap::Args)]
pub struct Args {
    /// Measurement rounds (each: one batch per target and kind).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Sequential HTTP requests per batch.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// MiB sent per throughput batch.
    #[arg(long, default_value_t = 16)]
    pub mib: usize,
    /// kubectl to drive the cluster with.
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    pub kubectl: PathBuf,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

struct Server {
    child: Child,
    dir: PathBuf,
    kubeconfig: PathBuf,
    node: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        // Pod VMs outlive the agent by design: stop what runs under this directory.
        let dir = self.dir.to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid != std::process::id() && String::from_utf8_lossy(&cmd).contains(&dir) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe)
                .args(["net", "reset", "--yes"])
                .env("H8S_NET_DIR", self.dir.join("net"))
                .env("H8S_NODE_NAME", &self.node)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/h8s")
        })
}

fn start() -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?;
    // Short: unix socket paths under the runtime root must stay below 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("h8s-bs")
        .tempdir_in("/tmp")?
        .keep();
    let data = dir.join("data");
    let imp = Command::new(&exe)
        .args(["image", "import"])
        .arg(cache().join("images/busybox-oci"))
        .env("H8S_DATA_DIR", &data)
        .output()?;
    if !imp.status.success() {
        bail!(
            "importing busybox (run scripts/setup): {}",
            String::from_utf8_lossy(&imp.stderr)
        );
    }
    let node = format!("bsvc-{}", std::process::id());
    let mut child = Command::new(&exe)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--node-name", &node, "--streaming-port", "0"])
        .args(["--pod-network", "api", "--pod-sync-period", "500ms"])
        .env("H8S_ROOT", dir.join("r"))
        .env("H8S_NET_DIR", dir.join("net"))
        .env("H8S_NODE_NAME", &node)
        .env("H8S_NET_EGRESS", "false")
        .env("H8S_BOOT_TIMEOUT", "120")
        .env("H8S_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting h8s server")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    std::thread::spawn(move || {
        let mut s = String::new();
        while out.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
            s.clear();
        }
    });
    let kubeconfig = line
        .split_whitespace()
        .nth(2)
        .map(PathBuf::from)
        .filter(|_| line.starts_with("ready "))
        .with_context(|| format!("server did not start: {line:?}"))?;
    Ok(Server {
        child,
        dir,
        kubeconfig,
        node,
    })
}

fn kubectl(k: &Path, s: &Server, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut c = Command::new(k)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", k.display()))?;
    if let Some(i) = stdin {
        c.stdin.take().context("stdin")?.write_all(i.as_bytes())?;
    }
    let o = c.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

/// Seconds a batch took inside the client (`/proc/uptime` before and after `body`).
fn timed(k: &Path, s: &Server, ns: &str, body: &str) -> anyhow::Result<f64> {
    let script = format!(
        "read a x < /proc/uptime; {body}; rc=$?; read b x < /proc/uptime; echo \"$rc $a $b\""
    );
    let out = kubectl(
        k,
        s,
        &["-n", ns, "exec", "cli", "--", "sh", "-c", &script],
        None,
    )?;
    let f: Vec<&str> = out.split_whitespace().collect();
    if f.len() != 3 || f[0] != "0" {
        bail!("batch failed: {out:?}");
    }
    Ok(f[2].parse::<f64>()? - f[1].parse::<f64>()?)
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t0.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    let s = start()?;
    let k = a.kubectl.as_path();
    let ns = "bench-svc";
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{tenancy.h8s.io/tenant: benchsvc}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: srv, namespace: {ns}, labels: {{app: srv}}}}
spec:
  containers:
  - name: s
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && printf '#!/bin/sh\\ncat > /dev/null\\n' > /sink && chmod +x /sink && (while true; do nc -l -p 9000 -e /sink; done &) && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: srv, namespace: {ns}}}
spec:
  selector: {{app: srv}}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: sink, port: 9000, targetPort: 9000}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: cli, namespace: {ns}}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "36000"]
"#
    );
    kubectl(k, &s, &["apply", "-f", "-"], Some(&yaml))?;
    let pod_ip = wait_for(Duration::from_secs(300), "both pods Running", || {
        let out = kubectl(k, &s, &["-n", ns, "get", "pods", "-o", "json"], None).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let items = v["items"].as_array()?;
        let running = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == 2).then_some(())?;
        items.iter().find(|p| p["metadata"]["name"] == "srv")?["status"]["podIP"]
            .as_str()
            .map(str::to_string)
    })?;
    let svc_ip = kubectl(
        k,
        &s,
        &[
            "-n",
            ns,
            "get",
            "svc",
            "srv",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    )?;
    let mut last = String::new();
    let answered = wait_for(
        Duration::from_secs(120),
        "the Service answering",
        || match timed(k, &s, ns, &format!("wget -qO- http://{svc_ip} > /dev/null")) {
            Ok(v) => Some(v),
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        },
    );
    answered.with_context(|| format!("last attempt: {last}"))?;
    // A sink that reads everything: `nc -l` alone would end the connection at once (its
    // stdin is /dev/null in the background loop), and the sender's `dd` would die of SIGPIPE.
    let sink_ok = kubectl(
        k,
        &s,
        &["-n", ns, "exec", "srv", "--", "cat", "/sink"],
        None,
    )?;
    if !sink_ok.contains("cat > /dev/null") {
        bail!("the server pod's sink script is wrong: {sink_ok:?}");
    }
    let targets = [
        ("pod", format!("{pod_ip}:8080"), format!("{pod_ip} 9000")),
        ("svc", svc_ip.clone(), format!("{svc_ip} 9000")),
    ];
    let (mut rtt, mut thr) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let n = a.requests.max(1);
    let blocks = a.mib.max(1) * 16; // 64 KiB blocks
    for round in 0..a.rounds {
        for (i, (_, http, sink)) in targets.iter().enumerate() {
            let body = format!(
                "i=0; while [ $i -lt {n} ]; do wget -qO- http://{http}/index.html > /dev/null || exit 1; i=$((i+1)); done"
            );
            rtt[i].push(timed(k, &s, ns, &body)? * 1000.0 / n as f64);
            // dd must have written every block (not died of SIGPIPE on an early close).
            let body = format!(
                "dd if=/dev/zero bs=65536 count={blocks} 2>/tmp/dd | nc {sink} && grep -q '^{blocks}+0 records out' /tmp/dd"
            );
            let secs = timed(k, &s, ns, &body)?;
            thr[i].push(a.mib as f64 / secs.max(0.01));
        }
        eprintln!(
            "round {}: request ms pod {:.1} svc {:.1}; MiB/s pod {:.1} svc {:.1}",
            round + 1,
            rtt[0][round],
            rtt[1][round],
            thr[0][round],
            thr[1][round]
        );
    }
    let (rp, rs) = (stats(&mut rtt[0]), stats(&mut rtt[1]));
    let (tp, ts) = (stats(&mut thr[0]), stats(&mut thr[1]));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let md = format!(
        "`h8s bench svc --rounds {r} --requests {n} --mib {m}`: one node, pod VMs under QEMU TCG, a \
server pod (busybox httpd, nc sink) and a client pod on one tenant Network; each round runs, \
from inside the client (timed by the guest's /proc/uptime, 10 ms resolution), {n} sequential \
`wget`s of a 3-byte page and one `dd | nc` of {m} MiB, first to the server pod's address \
(baseline), then to its ClusterIP (in-pod userspace proxy in the client VM). Load average at \
the end: {load}.\n\n\
| | pod → pod (baseline) | pod → Service | ratio (medians) |\n|---|---|---|---|\n\
| HTTP request incl. `wget` start, ms (min / median / p99) | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2}× |\n\
| throughput, MiB/s (min / median / p99) | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2}× |\n",
        rp.0, rp.1, rp.2, rs.0, rs.1, rs.2, rs.1 / rp.1.max(1e-9),
        tp.0, tp.1, tp.2, ts.0, ts.1, ts.2, ts.1 / tp.1.max(1e-9),
        r = a.rounds,
        m = a.mib,
    );
    println!("{md}");
    if let Some(p) = &a.write {
        write_section(p, "svc", "Services: pod → Service vs pod → pod", &md)?;
    }
    Ok(())
}
