//! RBD volumes across nodes (docs/volumes.md; issue 14's "done when"): two nodes of the shared
//! multi-node harness (`cluster_support`: one server, two agents in their own network
//! namespaces, pod VMs under QEMU) and a one-node Ceph cluster started for the run on the
//! test bridge's address, which the agents — and the QEMU processes of their pod VMs, which
//! open the images with QEMU's own rbd driver — reach from their namespaces.
//!
//! A Deployment with an RBD claim keeps its data when its pod is deleted and rescheduled to
//! the other node (the first one cordoned); a second pod on the other node waits with the
//! attach-detach controller's Multi-Attach event until the first lets go of the volume; the
//! VolumeAttachments follow the pods. The data is checked inside the pod VMs by exec
//! readiness probes (run by the guest agent), so a pod is Ready only when it reads it.

mod api_support;
mod cluster_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster_support::{cluster, wait, Cluster, Opts};
use serde_json::Value;

/// The one-node Ceph cluster of this run (`crates/volumes/tests/ceph-up.sh`), stopped on
/// drop.
struct Ceph {
    dir: PathBuf,
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../volumes/tests/ceph-down.sh"
            ))
            .arg(&self.dir)
            .status();
    }
}

fn start_ceph(dir: &Path, addr: &str) -> Ceph {
    let port = std::net::TcpListener::bind(format!("{addr}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../volumes/tests/ceph-up.sh"
        ))
        .arg(dir)
        .arg(port.to_string())
        .arg(addr)
        .output()
        .unwrap();
    let ceph = Ceph {
        dir: dir.to_path_buf(),
    };
    assert!(
        out.status.success(),
        "ceph did not start on {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ceph
}

fn pod(c: &Cluster, ns: &str, name: &str) -> Value {
    c.json(&["-n", ns, "get", "pod", name]).unwrap()
}

fn events_about(c: &Cluster, ns: &str, name: &str) -> String {
    // core/v1 events (the agents') and events.k8s.io/v1 (the controllers') both list here.
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=R:.reason,M:.message,N:.note",
    ])
}

/// The VolumeAttachments of `pv`: (node, attached).
fn attachments(c: &Cluster, pv: &str) -> Vec<(String, bool)> {
    let l = c.json(&["get", "volumeattachments"]).unwrap();
    l["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["spec"]["source"]["persistentVolumeName"] == pv)
        .map(|v| {
            (
                v["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                v["status"]["attached"] == true,
            )
        })
        .collect()
}

/// Whether a QEMU process of node `n`'s pod VMs opens `rbd:h8s/<pv>`.
fn node_runs_rbd(c: &Cluster, node: &str, pv: &str) -> bool {
    let n = c.nodes.iter().find(|n| n.name == node).unwrap();
    c.vms(n).iter().any(|r| {
        r["state"] != "failed"
            && r["config"]["volumes"]
                .to_string()
                .contains(&format!("rbd:h8s/{pv}"))
    })
}

#[test]
fn rbd_deployment_follows_its_pod_to_another_node_and_rwo_waits_across_nodes() {
    let ceph_dir = tempfile::Builder::new()
        .prefix("h8s-ceph-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let conf = ceph_dir.join("ceph.conf");
    // The server's volume controller provisions RBD classes with this configuration (it
    // inherits the test's environment); the agents get the flag.
    std::env::set_var("H8S_RBD_CEPH_CONF", &conf);
    let c = cluster(&Opts {
        nodes: 2,
        agent_args: vec![format!("--rbd-ceph-conf={}", conf.display())],
        ..Default::default()
    });
    let _ceph = start_ceph(&ceph_dir, &c.gateway);
    let ns = c.namespace("vol-mn");
    let class = format!("h8s-rbd-mn-{}", std::process::id());
    c.apply(
        &ns,
        &format!(
            r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {class}}}
provisioner: volumes.h8s.io/rbd
parameters: {{pool: h8s}}
reclaimPolicy: Delete
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 32Mi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db}}
spec:
  replicas: 1
  strategy: {{type: Recreate}}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: IfNotPresent
        env: [{{name: WRITE, value: "yes"}}]
        command: ["sh", "-c", "if [ $WRITE = yes ]; then echo kept-data > /data/f; sync; fi; sleep 3600"]
        readinessProbe:
          exec: {{command: ["grep", "-qx", "kept-data", "/data/f"]}}
          periodSeconds: 2
          timeoutSeconds: 20
        volumeMounts:
        - {{name: v, mountPath: /data}}
      volumes:
      - name: v
        persistentVolumeClaim: {{claimName: data}}
"#
        ),
    );
    let pv = wait(Duration::from_secs(120), "the rbd claim to bind", || {
        let cl = c.json(&["-n", &ns, "get", "pvc", "data"]).ok()?;
        (cl["status"]["phase"] == "Bound")
            .then(|| cl["spec"]["volumeName"].as_str().unwrap().to_string())
    });
    let first = c.wait_running(&ns, "app=db", 1, Duration::from_secs(300));
    let first_name = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    let node_a = first[0]["spec"]["nodeName"].as_str().unwrap().to_string();
    let node_b = c
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != node_a)
        .unwrap();
    assert_eq!(attachments(c, &pv), vec![(node_a.clone(), true)]);
    assert!(
        node_runs_rbd(c, &node_a, &pv),
        "node {node_a}'s pod VM opens rbd:h8s/{pv}"
    );

    // Rescheduled to the other node: cordon the first; the new template writes nothing
    // (Recreate deletes the old pod first), so the new pod is Ready only if it reads the
    // data the first one wrote.
    c.kubectl(&["cordon", &node_a]);
    c.kubectl(&["-n", &ns, "set", "env", "deployment/db", "WRITE=no"]);
    let second = wait(
        Duration::from_secs(300),
        "the replacement pod Ready on the other node",
        || {
            c.wait_running(&ns, "app=db", 1, Duration::from_secs(300))
                .into_iter()
                .find(|p| p["metadata"]["name"] != first_name.as_str())
        },
    );
    let second_name = second["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(second["spec"]["nodeName"], node_b.as_str());
    assert!(
        second["spec"]["containers"][0]["env"]
            .to_string()
            .contains("\"no\""),
        "{second}"
    );
    assert_eq!(attachments(c, &pv), vec![(node_b.clone(), true)]);
    assert!(node_runs_rbd(c, &node_b, &pv));
    c.kubectl(&["uncordon", &node_a]);

    // RWO across nodes: a second pod on the first node waits with a Multi-Attach event.
    c.apply(
        &ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: intruder}}
spec:
  nodeName: {node_a}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["grep", "-qx", "kept-data", "/data/f"]}}
      periodSeconds: 2
      timeoutSeconds: 20
    volumeMounts:
    - {{name: v, mountPath: /data}}
  volumes:
  - name: v
    persistentVolumeClaim: {{claimName: data}}
"#
        ),
    );
    let want = format!(
        "Multi-Attach error for volume \"{pv}\" Volume is already used by pod(s) {second_name}"
    );
    wait(Duration::from_secs(120), "the Multi-Attach event", || {
        let ev = events_about(c, &ns, "intruder");
        (ev.contains("FailedAttachVolume") && ev.contains(&want)).then_some(())
    });
    let p = pod(c, &ns, "intruder");
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    assert_eq!(attachments(c, &pv), vec![(node_b.clone(), true)]);
    assert!(!node_runs_rbd(c, &node_a, &pv), "no VM on {node_a} has it");
    // The Deployment lets go: the volume moves to the waiting pod's node.
    c.kubectl(&["-n", &ns, "scale", "deployment", "db", "--replicas=0"]);
    c.wait_running(&ns, "!app", 1, Duration::from_secs(300));
    assert_eq!(attachments(c, &pv), vec![(node_a.clone(), true)]);

    c.cleanup(&ns);
    wait(Duration::from_secs(60), "the attachments to go", || {
        attachments(c, &pv).is_empty().then_some(())
    });
    // The claim went with its namespace: reclaim Delete removes the image and the volume.
    // Waited for here, while Ceph still runs (the controller's `rbd rm` needs it).
    wait(Duration::from_secs(120), "the rbd PV to go", || {
        c.json(&["get", "pv", &pv]).is_err().then_some(())
    });
    c.kubectl(&["delete", "storageclass", &class]);
}
