//! The node agent end to end: one real `h8s server` (with its in-process agent, controllers
//! and scheduler) per test binary, pod VMs under QEMU (TCG here) from the busybox image of
//! `scripts/setup`, on a node-local pod Network in a temp state dir; kubectl 1.33 as the
//! client. Every test works in its own namespace and checks that its pods leave no VM,
//! socket or tap behind. VMs boot at most two at a time (the agent's start limit).
//! `metrics.k8s.io` (`kubectl top`, 1.27 and 1.33) is read from the agent's stats of the same
//! pod VMs, and a HorizontalPodAutoscaler scales a Deployment on them.

mod node_support;

use std::sync::OnceLock;
use std::time::Duration;

use node_support::{container_status, wait, Node as Cluster, Opts};
use serde_json::Value;

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        let pid = std::process::id();
        node_support::start(Opts {
            tag: "agt",
            args: [
                "--restart-backoff=2s",
                "--restart-backoff-max=8s",
                "--image-pull-backoff=1s",
                "--image-pull-backoff-max=4s",
                "--volume-refresh-period=2s",
                "--eviction-monitoring-period=1s",
                // The imported busybox is the only image and never pulled again: image GC
                // (unit-tested on its own) must not take it on a host whose disk happens to
                // be full.
                "--image-gc-high-threshold=100",
                "--image-gc-low-threshold=99",
                // Metrics sampled and served often enough for `kubectl top` within a test.
                "--stats-interval=2s",
                "--metrics-cache-ttl=1s",
                // The HorizontalPodAutoscaler test scales on those metrics.
                "--horizontal-pod-autoscaler-sync-period=2s",
            ]
            .map(String::from)
            .into_iter()
            .chain([
                format!("--pod-network=agt{}", pid % 100000),
                format!("--pod-cidr=10.{}.0.0/16", 150 + pid % 50),
                format!("--pod-network-vni={}", 5000 + pid % 10000),
            ])
            .collect(),
            // The agent's default: pods start from the node's VM template (one test asserts
            // it, the others do not care).
            templates: true,
            ..Opts::default()
        })
    })
}

fn bare_pod(name: &str, node: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n{extra}"
    )
}

#[test]
fn node_registers_with_lease_conditions_and_runtime_class() {
    let c = cluster();
    let n = c.json(&["get", "node", &c.name]).unwrap();
    let st = &n["status"];
    assert_eq!(st["nodeInfo"]["kubeletVersion"], "v1.33.0-h8s");
    assert!(st["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("h8s-vm://"));
    let accel = n["metadata"]["labels"]["h8s.io/accelerator"]
        .as_str()
        .unwrap();
    assert!(accel == "tcg" || accel == "kvm", "{accel}");
    for cond in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            st["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["type"] == cond),
            "no {cond} condition"
        );
    }
    assert!(st["allocatable"]["memory"].is_string());
    assert!(
        st["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap()
            > 0
    );
    let lease = c
        .json(&["-n", "kube-node-lease", "get", "lease", &c.name])
        .unwrap();
    let t1 = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    wait(Duration::from_secs(15), "the lease to be renewed", || {
        let l = c
            .json(&["-n", "kube-node-lease", "get", "lease", &c.name])
            .ok()?;
        (l["spec"]["renewTime"].as_str()? != t1).then_some(())
    });
    let rc = c.json(&["get", "runtimeclass", "h8s-vm"]).unwrap();
    assert_eq!(rc["handler"], "h8s-vm");
    assert!(rc["overhead"]["podFixed"]["memory"].is_string());
}

#[test]
fn pods_run_with_ips_env_and_volumes_then_leave_nothing() {
    let c = cluster();
    let ns = c.namespace("run");
    c.apply(&ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  greeting: hello-from-configmap\n",
    );
    let spec = r#"  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo name=$MY_NAME greeting=$(cat /etc/cfg/greeting) host=$(hostname); mkdir -p /www; echo it-works > /www/index.html; httpd -f -p 8080 -h /www"]
    env:
    - name: MY_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: scratch, mountPath: /scratch}
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
  volumes:
  - name: cfg
    configMap: {name: cfg}
  - name: scratch
    emptyDir: {}
"#;
    for name in ["web-1", "web-2"] {
        c.apply(&ns, &bare_pod(name, &c.name, spec));
    }
    let mut ips = Vec::new();
    for name in ["web-1", "web-2"] {
        let p = wait(Duration::from_secs(240), "pods Running and Ready", || {
            let p = c.pod(&ns, name);
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|x| x["type"] == "Ready" && x["status"] == "True");
            (p["status"]["phase"] == "Running" && ready).then_some(p)
        });
        let ip = p["status"]["podIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10."), "{ip}");
        let cs = container_status(&p);
        assert!(cs["containerID"].as_str().unwrap().starts_with("h8s-vm://"));
        assert!(cs["imageID"].as_str().unwrap().contains("@sha256:"));
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    // The container's own view: env from the downward API, the ConfigMap volume, hostname.
    let logs = wait(Duration::from_secs(30), "the container's output", || {
        let (ok, out, _) = c.kubectl_out(&["-n", &ns, "logs", "web-1"], None);
        (ok && out.contains("greeting=")).then_some(out)
    });
    assert!(logs.contains("name=web-1"), "{logs}");
    assert!(logs.contains("greeting=hello-from-configmap"), "{logs}");
    assert!(logs.contains("host=web-1"), "{logs}");
    // A changed ConfigMap reaches the running pod.
    c.apply(
        &ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  greeting: updated\n",
    );
    wait(
        Duration::from_secs(60),
        "the ConfigMap update inside the pod",
        || {
            let (ok, out, _) = c.kubectl_out(
                &["-n", &ns, "exec", "web-1", "--", "cat", "/etc/cfg/greeting"],
                None,
            );
            (ok && out.trim() == "updated").then_some(())
        },
    );
    // One pod reaches the other over the pod network.
    let (ok, out, err) = c.kubectl_out(
        &[
            "-n",
            &ns,
            "exec",
            "web-1",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{}:8080/", ips[1]),
        ],
        None,
    );
    assert!(ok && out.contains("it-works"), "pod to pod: {out} {err}");
    assert_eq!(c.vms_of(&ns).len(), 2);
    c.cleanup(&ns);
}

#[test]
fn crashloop_backoff_with_growing_restart_count() {
    let c = cluster();
    let ns = c.namespace("crash");
    c.apply(&ns,
        &bare_pod(
            "crash",
            &c.name,
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo boom; exit 3\"]\n",
        ),
    );
    let p = wait(
        Duration::from_secs(240),
        "CrashLoopBackOff with restarts",
        || {
            let p = c.pod(&ns, "crash");
            let cs = container_status(&p);
            (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["restartCount"].as_i64()? >= 2)
                .then_some(p)
        },
    );
    let cs = container_status(&p);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(p["status"]["phase"], "Running");
    let first = cs["restartCount"].as_i64().unwrap();
    wait(
        Duration::from_secs(120),
        "the restart count to grow",
        || (container_status(&c.pod(&ns, "crash"))["restartCount"].as_i64()? > first).then_some(()),
    );
    events_with(c, &ns, "BackOff");
    c.cleanup(&ns);
}

#[test]
fn run_to_completion_bad_image_and_bad_command() {
    let c = cluster();
    let ns = c.namespace("done");
    c.apply(&ns,
        &bare_pod(
            "job",
            &c.name,
            "  restartPolicy: Never\n  initContainers:\n  - name: init\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"true\"]\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo done\"]\n",
        ),
    );
    c.apply(
        &ns,
        &bare_pod(
            "noimage",
            &c.name,
            "  containers:\n  - name: c\n    image: h8s-test-no-such-image:v1\n",
        ),
    );
    c.apply(&ns,
        &bare_pod(
            "nocmd",
            &c.name,
            "  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"/no/such/command\"]\n",
        ),
    );
    let p = wait(Duration::from_secs(240), "the pod to succeed", || {
        let p = c.pod(&ns, "job");
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    assert_eq!(
        container_status(&p)["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    wait(Duration::from_secs(60), "ImagePullBackOff", || {
        let cs = container_status(&c.pod(&ns, "noimage"));
        (cs["state"]["waiting"]["reason"] == "ImagePullBackOff").then_some(())
    });
    events_with(c, &ns, "Failed to pull image");
    let p = wait(Duration::from_secs(240), "StartError", || {
        let p = c.pod(&ns, "nocmd");
        (container_status(&p)["state"]["terminated"]["reason"] == "StartError").then_some(p)
    });
    let msg = container_status(&p)["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("/no/such/command"), "{msg}");
    assert_eq!(p["status"]["phase"], "Failed");
    // The finished pods' VMs are stopped at once (their records stay until deletion).
    c.cleanup(&ns);
}

#[test]
fn failing_liveness_restarts_and_readiness_gates_ready() {
    let c = cluster();
    let ns = c.namespace("probe");
    c.apply(&ns,
        &bare_pod(
            "live",
            &c.name,
            "  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"touch /tmp/ok; sleep 3600\"]\n    livenessProbe:\n      exec: {command: [\"cat\", \"/tmp/ok\"]}\n      periodSeconds: 1\n      failureThreshold: 2\n    readinessProbe:\n      exec: {command: [\"cat\", \"/tmp/ready\"]}\n      periodSeconds: 1\n",
        ),
    );
    wait(
        Duration::from_secs(240),
        "the container running, not ready",
        || {
            let p = c.pod(&ns, "live");
            let cs = container_status(&p);
            (cs["state"]["running"].is_object() && cs["ready"] == false).then_some(())
        },
    );
    // Readiness follows the probe.
    c.kubectl(&["-n", &ns, "exec", "live", "--", "touch", "/tmp/ready"]);
    wait(Duration::from_secs(30), "Ready", || {
        (container_status(&c.pod(&ns, "live"))["ready"] == true).then_some(())
    });
    // Liveness failing restarts the container.
    c.kubectl(&["-n", &ns, "exec", "live", "--", "rm", "/tmp/ok"]);
    wait(
        Duration::from_secs(120),
        "a restart after the liveness failure",
        || (container_status(&c.pod(&ns, "live"))["restartCount"].as_i64()? >= 1).then_some(()),
    );
    events_with(c, &ns, "Unhealthy");
    c.cleanup(&ns);
}

/// `readOnlyRootFilesystem` inside the VM (volumes stay writable), then local storage limits:
/// an emptyDir past its `sizeLimit` and a container's writable layer past its
/// `ephemeral-storage` limit (its pod's total, 10 MiB, not exceeded) each get their pod
/// evicted with kubelet's reason and message.
#[test]
fn read_only_root_and_local_storage_limits_evict() {
    let c = cluster();
    let ns = c.namespace("disk");
    c.apply(&ns,
        &bare_pod(
            "ro",
            &c.name,
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n    securityContext: {readOnlyRootFilesystem: true}\n    volumeMounts:\n    - {name: scratch, mountPath: /scratch}\n  volumes:\n  - name: scratch\n    emptyDir: {sizeLimit: 1Mi}\n",
        ),
    );
    c.apply(&ns,
        &bare_pod(
            "hog",
            &c.name,
            "  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"sleep 2; dd if=/dev/zero of=/fill bs=1024 count=2560; sleep 3600\"]\n    resources:\n      limits: {ephemeral-storage: 2Mi}\n  - name: side\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sleep\", \"3600\"]\n    resources:\n      limits: {ephemeral-storage: 8Mi}\n",
        ),
    );
    wait(
        Duration::from_secs(240),
        "the read-only pod running",
        || running(c, &ns, "ro").then_some(()),
    );
    let (ok, _, err) = c.kubectl_out(&["-n", &ns, "exec", "ro", "--", "touch", "/x"], None);
    assert!(!ok && err.contains("Read-only file system"), "{err}");
    let (ok, _, err) = c.kubectl_out(
        &["-n", &ns, "exec", "ro", "--", "touch", "/scratch/x"],
        None,
    );
    assert!(ok, "the emptyDir stays writable: {err}");
    // 1.5 MiB into the 1 MiB emptyDir: evicted at the next check.
    let (ok, _, err) = c.kubectl_out(
        &[
            "-n",
            &ns,
            "exec",
            "ro",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/scratch/fill",
            "bs=1024",
            "count=1536",
        ],
        None,
    );
    assert!(ok, "writing the emptyDir: {err}");
    for (name, message) in [
        (
            "ro",
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ",
        ),
        (
            "hog",
            "Container c exceeded its local ephemeral storage limit \"2Mi\". ",
        ),
    ] {
        let p = wait(Duration::from_secs(240), "the pod evicted", || {
            let p = c.pod(&ns, name);
            (p["status"]["phase"] == "Failed").then_some(p)
        });
        assert_eq!(p["status"]["reason"], "Evicted", "{name}");
        assert_eq!(p["status"]["message"], message, "{name}");
        let disruption = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == "DisruptionTarget")
            .cloned()
            .unwrap_or_default();
        assert_eq!(disruption["reason"], "TerminationByKubelet", "{name}");
        assert!(
            container_status(&p)["state"]["terminated"].is_object(),
            "{name}: {p}"
        );
    }
    events_with(c, &ns, "Evicted");
    c.cleanup(&ns);
}

/// A Deployment whose pod spins is scaled from 1 to 2 by a HorizontalPodAutoscaler on CPU
/// utilization, from the agent's live stats through `metrics.k8s.io` (the HPA controller's
/// path end to end), then deleted with its VMs.
#[test]
fn deployment_scaled_by_an_hpa_on_live_cpu_then_deleted() {
    let c = cluster();
    let ns = c.namespace("deploy");
    c.apply(
        &ns,
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sh, -c, 'while :; do :; done']
        resources: {requests: {cpu: 100m}}
",
    );
    let running = |want: usize| {
        wait(
            Duration::from_secs(300),
            "deployment pods Running with IPs",
            || {
                let l = c.json(&["-n", &ns, "get", "pods"]).ok()?;
                let items = l["items"].as_array()?;
                let ok = items
                    .iter()
                    .filter(|p| {
                        p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
                    })
                    .count();
                (ok == want && items.len() == want).then_some(())
            },
        )
    };
    running(1);
    // The spinning guest costs its host far more than half of its 100m request.
    c.kubectl(&[
        "-n",
        &ns,
        "autoscale",
        "deployment",
        "web",
        "--min=1",
        "--max=2",
        "--cpu-percent=50",
    ]);
    running(2);
    let hpa = c.json(&["-n", &ns, "get", "hpa", "web"]).unwrap();
    assert_eq!(hpa["status"]["desiredReplicas"], 2, "{hpa}");
    let util = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(util > 0, "utilization from live metrics: {hpa}");
    let ev = c.kubectl(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(
        ev.contains(
            "New size: 2; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{ev}"
    );
    c.kubectl(&["-n", &ns, "delete", "deployment", "web"]);
    wait(
        Duration::from_secs(120),
        "the pods and their VMs to go",
        || {
            let l = c.json(&["-n", &ns, "get", "pods"]).ok()?;
            (l["items"].as_array()?.is_empty() && c.vms_of(&ns).is_empty()).then_some(())
        },
    );
    c.cleanup(&ns);
}

/// kubectl `ver`: (success, stdout, stderr).
fn kubectl_with(c: &Cluster, ver: &str, args: &[&str]) -> (bool, String, String) {
    let o = c.run(ver, args, None);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A busybox pod pinned to `node`, running `command` under `sh -c`.
fn busybox_pod(name: &str, node: &str, labels: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

/// Pods created through the API start from the node's VM template (the agent starts building
/// it at start-up for the usual shape: one image, a NIC, 256 MiB, one vCPU) and say so in a
/// `StartedVM` event; the annotation `h8s.io/vm-boot: cold` and the RuntimeClass `h8s-vm-cold`
/// boot a pod cold instead.
#[test]
fn api_pods_start_from_the_vm_template_unless_they_opt_out() {
    let c = cluster();
    let ns = c.namespace("tmpl");
    let templates = c.root().join("templates");
    wait(Duration::from_secs(300), "the node's VM template", || {
        for d in std::fs::read_dir(&templates)
            .into_iter()
            .flatten()
            .flatten()
        {
            let failed = d.path().join("failed");
            assert!(
                !failed.exists(),
                "template build failed: {}",
                std::fs::read_to_string(&failed).unwrap_or_default()
            );
            if d.path().join("ready").is_file() {
                return Some(());
            }
        }
        None
    });
    c.apply(&ns, &busybox_pod("warm", &c.name, "", "sleep 3600"));
    let cold = busybox_pod("cold", &c.name, "", "sleep 3600").replacen(
        "  labels:",
        "  annotations: {h8s.io/vm-boot: cold}\n  labels:",
        1,
    );
    c.apply(&ns, &cold);
    // The other opt-out: the RuntimeClass the node agent publishes for it.
    let by_class = busybox_pod("cold-class", &c.name, "", "sleep 3600").replacen(
        "spec:\n",
        "spec:\n  runtimeClassName: h8s-vm-cold\n",
        1,
    );
    assert!(by_class.contains("runtimeClassName"), "{by_class}");
    // The agent publishes it once the API serves the kind (retrying every 30 s until then).
    wait(
        Duration::from_secs(90),
        "the h8s-vm-cold RuntimeClass",
        || c.json(&["get", "runtimeclass", "h8s-vm-cold"]).ok(),
    );
    c.apply(&ns, &by_class);
    wait(Duration::from_secs(300), "the three pods running", || {
        (running(c, &ns, "warm") && running(c, &ns, "cold") && running(c, &ns, "cold-class"))
            .then_some(())
    });
    let started = |name: &str| {
        wait(Duration::from_secs(60), "the StartedVM event", || {
            let events = c.json(&["-n", &ns, "get", "events"]).ok()?;
            events["items"].as_array()?.iter().find_map(|e| {
                (e["involvedObject"]["name"] == name && e["reason"] == "StartedVM")
                    .then(|| e["message"].as_str().unwrap_or("").to_string())
            })
        })
    };
    let warm = started("warm");
    // From the template or from a warm clone of it (other tests' pods start the clones).
    assert!(warm.contains("VM template"), "{warm}");
    let cold = started("cold");
    assert!(cold.starts_with("Booted the pod VM cold"), "{cold}");
    let by_class = started("cold-class");
    assert!(by_class.starts_with("Booted the pod VM cold"), "{by_class}");
    eprintln!("warm: {warm}\ncold: {cold}\ncold-class: {by_class}");
    c.cleanup(&ns);
}

/// Pods through the API take warm clones of the node's VM template (docs/runtime.md, "Warm
/// clones"): the fabric puts a clone's tap in the place of the tap it made for the pod, so the
/// pod has its own address on its Network and another pod reaches it. A shape of their own
/// (a 160 MiB limit: 224 MiB guests), so no other test's pod takes these clones: the first
/// pod boots cold and starts the template's build, the second restores it and starts two
/// clones, the next two take them.
#[test]
fn api_pods_take_warm_clones_and_keep_their_network() {
    let c = cluster();
    let ns = c.namespace("warmc");
    let spec = r#"  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www; echo warm-works > /www/index.html; httpd -f -p 8080 -h /www"]
    resources: {limits: {memory: 160Mi}}
"#;
    let run = |name: &str| {
        c.apply(&ns, &bare_pod(name, &c.name, spec));
        wait(Duration::from_secs(300), "the pod running", || {
            running(c, &ns, name).then_some(())
        });
    };
    run("first");
    let templates = c.root().join("templates");
    wait(Duration::from_secs(300), "the 224 MiB VM template", || {
        std::fs::read_dir(&templates)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.path().join("ready").is_file())
            .any(|d| {
                std::fs::read_to_string(d.path().join("spec.json")).is_ok_and(|s| {
                    s.contains("\"memory_mib\": 224") || s.contains("\"memory_mib\":224")
                })
            })
            .then_some(())
    });
    run("second");
    let pool = c.root().join("pool");
    wait(Duration::from_secs(300), "two warm clones", || {
        let ready = std::fs::read_dir(&pool)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
            .filter(|m| {
                let rec = c.root().join("pods").join(m.file_name()).join("pod.json");
                std::fs::read(rec)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|r| r["state"] == "ready" && r["config"]["memory_mib"] == 224)
            })
            .count();
        (ready >= 2).then_some(())
    });
    run("wa");
    run("wb");
    for name in ["wa", "wb"] {
        let msg = wait(Duration::from_secs(60), "the StartedVM event", || {
            let events = c.json(&["-n", &ns, "get", "events"]).ok()?;
            events["items"].as_array()?.iter().find_map(|e| {
                (e["involvedObject"]["name"] == name && e["reason"] == "StartedVM")
                    .then(|| e["message"].as_str().unwrap_or("").to_string())
            })
        });
        assert!(msg.contains("from a warm clone"), "{name}: {msg}");
    }
    let ip = c.pod(&ns, "wb")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{ip}:8080/");
    wait(Duration::from_secs(60), "wa reaching wb", || {
        let (ok, out, _) = c.kubectl_out(
            &["-n", &ns, "exec", "wa", "--", "wget", "-q", "-O", "-", &url],
            None,
        );
        (ok && out.contains("warm-works")).then_some(())
    });
    c.cleanup(&ns);
}

/// Waits for an event of namespace `ns` that mentions `what` (the agent writes events off the
/// pod's path, so one may land just after the state it reports).
fn events_with(c: &Cluster, ns: &str, what: &str) {
    wait(Duration::from_secs(60), what, || {
        c.kubectl(&["-n", ns, "get", "events"])
            .contains(what)
            .then_some(())
    });
}

fn running(c: &Cluster, ns: &str, name: &str) -> bool {
    c.pod(ns, name)["status"]["phase"] == "Running"
}

/// `kubectl top` output as (name, cpu millicores, memory MiB) rows.
fn top_rows(out: &str) -> Vec<(String, u64, u64)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let cpu = f.get(1)?.strip_suffix('m')?.parse().ok()?;
            let mem = f
                .iter()
                .skip(2)
                .find_map(|x| x.strip_suffix("Mi"))?
                .parse()
                .ok()?;
            Some((f[0].to_string(), cpu, mem))
        })
        .collect()
}

#[test]
fn kubectl_top_reads_metrics_of_the_node_and_its_pod_vms() {
    let c = cluster();
    // Discovery lists the group, with both resources (kubectl top checks it first).
    let out = c.kubectl(&["api-resources", "--api-group=metrics.k8s.io", "-o", "name"]);
    assert!(
        out.contains("nodes.metrics.k8s.io") && out.contains("pods.metrics.k8s.io"),
        "{out}"
    );
    // The node: kubectl 1.27 and 1.33.
    for bin in ["1.33", "1.27"] {
        let out = wait(Duration::from_secs(30), "kubectl top node", || {
            let (ok, out, _) = kubectl_with(c, bin, &["top", "node"]);
            (ok && top_rows(&out).iter().any(|r| r.0 == c.name)).then_some(out)
        });
        let row = top_rows(&out).into_iter().find(|r| r.0 == c.name).unwrap();
        assert!(row.2 > 0, "node memory {out}");
    }
    let (ok, out, err) = c.kubectl_out(
        &[
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", c.name),
        ],
        None,
    );
    assert!(ok, "{err}");
    let nm: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(nm["kind"], "NodeMetrics");
    assert!(nm["window"].as_str().unwrap().ends_with('s'));

    // Two pods: one spinning, one asleep.
    let ns = c.namespace("top");
    c.apply(
        &ns,
        &busybox_pod("busy", &c.name, "app: busy", "while :; do :; done"),
    );
    c.apply(
        &ns,
        &busybox_pod("idle", &c.name, "app: idle", "sleep 3600"),
    );
    wait(Duration::from_secs(240), "both pods Running", || {
        (running(c, &ns, "busy") && running(c, &ns, "idle")).then_some(())
    });
    for bin in ["1.33", "1.27"] {
        // The spinning guest costs its host a good part of a core, more than the idle one —
        // once the idle VM's own boot has left the sampling window (under TCG and a loaded
        // host that takes a while): waited for, not sampled once.
        let out = wait(
            Duration::from_secs(120),
            "kubectl top pod with both pods, the busy one busier",
            || {
                let (ok, out, _) = kubectl_with(c, bin, &["-n", &ns, "top", "pod"]);
                let rows = top_rows(&out);
                let busy = rows.iter().find(|r| r.0 == "busy")?;
                let idle = rows.iter().find(|r| r.0 == "idle")?;
                (ok && rows.len() == 2 && busy.1 > idle.1 && busy.1 >= 100).then_some(out)
            },
        );
        let rows = top_rows(&out);
        let busy = rows.iter().find(|r| r.0 == "busy").unwrap();
        let idle = rows.iter().find(|r| r.0 == "idle").unwrap();
        // Both VMs hold memory.
        assert!(busy.2 > 0 && idle.2 > 0, "{out}");
        // Label selector and get by name.
        let (ok, out, err) = kubectl_with(c, bin, &["-n", &ns, "top", "pod", "-l", "app=idle"]);
        assert!(ok, "{err}");
        let rows = top_rows(&out);
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0].0, "idle");
        let (ok, out, err) =
            kubectl_with(c, bin, &["-n", &ns, "top", "pod", "busy", "--containers"]);
        assert!(ok && out.contains("main"), "{out}{err}");
    }
    // All namespaces, and errors as Kubernetes words them.
    let (ok, out, _) = kubectl_with(c, "1.33", &["top", "pod", "-A"]);
    assert!(ok && out.contains("busy") && out.contains(&ns), "{out}");
    let (ok, _, err) = c.kubectl_out(
        &[
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/nothing"),
        ],
        None,
    );
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = c.kubectl_out(
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nameName%3Dx",
        ],
        None,
    );
    assert!(!ok && err.contains("field label not supported"), "{err}");
    c.cleanup(&ns);
}
