//! The cluster controllers as `h8s server` runs them (its own controller manager, timers
//! shortened by flags), driven only by kubectl 1.33: a new namespace gets its `default`
//! ServiceAccount and `kube-root-ca.crt`, a Service its Endpoints and EndpointSlice, a
//! silent node its taints, a PodDisruptionBudget and a ResourceQuota their status.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--disable-agent",
                "--disable-scheduler",
                "--leader-elect=false",
            ])
            .args([
                "--node-monitor-grace-period",
                "3s",
                "--node-monitor-period",
                "500ms",
            ])
            .args(["--controllers-resync-period", "5s"])
            .env("H8S_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning h8s server");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("h8s server did not become ready in 30 s");
        };
        let mut parts = line.split_whitespace();
        assert_eq!(
            parts.next(),
            Some("ready"),
            "unexpected first line: {line:?}"
        );
        let _url = parts.next();
        let kubeconfig = PathBuf::from(parts.next().expect("kubeconfig path"));
        Server {
            child,
            dir,
            kubeconfig,
        }
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    fn k(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.k(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    fn apply(&self, yaml: &str) {
        let (ok, _, err) = self.k(&["apply", "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {err}\n{yaml}");
    }

    /// Polls a jsonpath until it equals `want`.
    fn wait_for(&self, secs: u64, args: &[&str], want: &str) {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < Duration::from_secs(secs) {
            let (ok, out, err) = self.k(args, None);
            last = if ok { out } else { err };
            if last.trim() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("kubectl {args:?}: wanted {want:?}, last {last:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..250 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

#[test]
fn server_runs_the_cluster_controllers() {
    let s = Server::start();
    let ca = std::fs::read_to_string(s.dir.path().join("data/ca.crt")).expect("ca.crt");

    // ServiceAccount + root CA in a new namespace.
    s.ok(&["create", "namespace", "e2e"]);
    s.wait_for(
        20,
        &[
            "get",
            "serviceaccount",
            "default",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.metadata.name}",
        ],
        "default",
    );
    s.wait_for(
        20,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        ca.trim(),
    );

    // A node that heartbeats once, and pods on it.
    s.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: e2e-node\n  labels:\n    topology.kubernetes.io/zone: za\n",
    );
    let status = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}]}}}}"#,
        t = now()
    );
    s.ok(&[
        "patch",
        "node",
        "e2e-node",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    s.apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: e2e-node\n  namespace: kube-node-lease\nspec:\n  holderIdentity: e2e-node\n  leaseDurationSeconds: 40\n  renewTime: \"{}\"\n",
        now()
    ));
    // A second node that stays healthy (with every node down the controller would be in
    // disruption mode and taint nothing NoExecute, as kube).
    s.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: e2e-keeper\n");
    s.ok(&[
        "patch",
        "node",
        "e2e-keeper",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    s.apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: e2e-keeper\n  namespace: kube-node-lease\nspec:\n  holderIdentity: e2e-keeper\n  leaseDurationSeconds: 40\n  renewTime: \"{}\"\n",
        now()
    ));
    // The node agents' heartbeats: e2e-node's until it is to go silent, e2e-keeper's to
    // the end.
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heart = {
        let (beating, done) = (beating.clone(), done.clone());
        let kubeconfig = s.kubeconfig.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let patch = format!(r#"{{"spec":{{"renewTime":"{}"}}}}"#, now());
                let mut leases = vec!["e2e-keeper"];
                if beating.load(std::sync::atomic::Ordering::Relaxed) {
                    leases.push("e2e-node");
                }
                for l in leases {
                    let _ = Command::new(KUBECTL)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args([
                            "patch",
                            "lease",
                            l,
                            "-n",
                            "kube-node-lease",
                            "--type=merge",
                            "-p",
                            &patch,
                        ])
                        .env_remove("KUBECONFIG")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    for (name, ip, ready) in [
        ("web-0", "10.8.0.10", "True"),
        ("web-1", "10.8.0.11", "False"),
    ] {
        s.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: e2e\n  labels:\n    app: web\nspec:\n  nodeName: e2e-node\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    ports:\n    - name: http\n      containerPort: 8080\n"
        ));
        let st = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}"#
        );
        s.ok(&[
            "patch",
            "pod",
            name,
            "-n",
            "e2e",
            "--subresource=status",
            "--type=merge",
            "-p",
            &st,
        ]);
    }

    // Service → Endpoints and EndpointSlice.
    s.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: e2e\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n");
    s.wait_for(
        20,
        &["get", "endpoints", "web", "-n", "e2e", "-o", "jsonpath={.subsets[0].addresses[*].ip}/{.subsets[0].notReadyAddresses[*].ip}/{.subsets[0].ports[0].port}"],
        "10.8.0.10/10.8.0.11/8080",
    );
    s.wait_for(
        20,
        &[
            "get",
            "endpointslices",
            "-n",
            "e2e",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready}/{.items[0].endpoints[0].zone}",
        ],
        "true false/za",
    );

    // A budget and a quota get their status.
    s.apply("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: e2e\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n");
    s.wait_for(
        20,
        &["get", "pdb", "web", "-n", "e2e", "-o", "jsonpath={.status.currentHealthy}/{.status.desiredHealthy}/{.status.expectedPods}/{.status.disruptionsAllowed}"],
        "1/1/2/0",
    );
    s.apply("apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: q\n  namespace: e2e\nspec:\n  hard:\n    pods: \"10\"\n    services: \"3\"\n");
    s.wait_for(
        20,
        &[
            "get",
            "resourcequota",
            "q",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.status.used.pods}/{.status.used.services}",
        ],
        "2/1",
    );

    // Nothing changes, so nothing is written: no controller rewrites its objects in a loop
    // (checked across a resync period).
    let versions = || {
        let rv = |args: &[&str]| s.ok(args);
        [
            rv(&[
                "get",
                "endpoints",
                "web",
                "-n",
                "e2e",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
            rv(&[
                "get",
                "endpointslices",
                "-n",
                "e2e",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].metadata.resourceVersion}",
            ]),
            rv(&[
                "get",
                "pdb",
                "web",
                "-n",
                "e2e",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
            rv(&[
                "get",
                "resourcequota",
                "q",
                "-n",
                "e2e",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
            rv(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                "e2e",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
            rv(&[
                "get",
                "serviceaccount",
                "default",
                "-n",
                "e2e",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
        ]
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(before, versions(), "an idle object was rewritten");

    // Still Ready while the lease is renewed.
    s.wait_for(
        5,
        &[
            "get",
            "node",
            "e2e-node",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.spec.taints}",
        ],
        "True/",
    );
    // The lease is not renewed any more: after the 3 s grace period the node is tainted
    // unreachable and its pods marked not ready.
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    s.wait_for(
        30,
        &[
            "get",
            "node",
            "e2e-node",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.spec.taints[*].key}",
        ],
        "Unknown/node.kubernetes.io/unreachable node.kubernetes.io/unreachable",
    );
    s.wait_for(
        20,
        &[
            "get",
            "pod",
            "web-0",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "False",
    );
    // …and the Endpoints follow: nobody ready any more.
    s.wait_for(
        20,
        &[
            "get",
            "endpoints",
            "web",
            "-n",
            "e2e",
            "-o",
            "jsonpath={.subsets[0].addresses[*].ip}/{.subsets[0].notReadyAddresses[*].ip}",
        ],
        "/10.8.0.10 10.8.0.11",
    );
    // The healthy node kept its Ready status and no taints.
    s.wait_for(
        5,
        &[
            "get",
            "node",
            "e2e-keeper",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.spec.taints}",
        ],
        "True/",
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    heart.join().expect("heartbeat thread");
}
