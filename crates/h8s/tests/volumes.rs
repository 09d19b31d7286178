//! Block volumes end to end (docs/volumes.md): one real `h8s server` (agent, controllers,
//! scheduler) per test binary with a local volume pool of 2 GiB in a temp dir and a one-node
//! Ceph cluster started for the run (`crates/volumes/tests/ceph-up.sh`, stopped at exit), pod
//! VMs under QEMU (TCG here) from the busybox image of `scripts/setup`; kubectl 1.33 as the
//! client. Each
//! test works in its own namespace. Volumes are virtio-blk disks of the pod VMs: the tests also
//! check that nothing is ever mounted on the host.

mod node_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use node_support::{container_status, wait, Node as Cluster, Opts};

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(start)
}

fn start() -> Cluster {
    let dir = node_support::node_dir("vol");
    // One Ceph cluster (one mon, one mgr, one BlueStore OSD on a file) for this test run,
    // started before the server (which provisions and attaches RBD volumes with it), stopped
    // at exit.
    let ceph = dir.join("ceph");
    let port = node_support::free_port();
    let up = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../volumes/tests/ceph-up.sh"
        ))
        .arg(&ceph)
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "ceph did not start: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let pid = std::process::id();
    let c = node_support::start_in(
        dir.clone(),
        Opts {
            tag: "vol",
            args: [
                "--restart-backoff=2s",
                "--restart-backoff-max=8s",
                "--image-pull-backoff=1s",
                "--image-pull-backoff-max=4s",
                "--volume-refresh-period=2s",
                "--volume-capacity=2Gi",
                "--volume-housekeeping-period=1s",
            ]
            .map(String::from)
            .into_iter()
            .chain([
                format!("--volume-dir={}", dir.join("vols").display()),
                format!("--pod-network=vol{}", pid % 100000),
                format!("--pod-cidr=10.{}.0.0/16", 100 + pid % 40),
                format!("--pod-network-vni={}", 16000 + pid % 10000),
            ])
            .collect(),
            env: vec![(
                "H8S_RBD_CEPH_CONF".into(),
                ceph.join("ceph.conf").display().to_string(),
            )],
            // The seeds' manifest names `nginx`: the node has busybox under that name too (the
            // registry is not reachable here; the agent then uses the node's copy).
            aliases: vec!["nginx:latest"],
            at_exit: Some(ceph_down),
            ..Opts::default()
        },
    );
    // The volume controller creates the default class at its start.
    wait(Duration::from_secs(60), "the default StorageClass", || {
        c.json(&["get", "storageclass", "h8s-local"]).ok()
    });
    c
}

fn ceph_down(dir: &Path) {
    let _ = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../volumes/tests/ceph-down.sh"
        ))
        .arg(dir.join("ceph"))
        .status();
}

fn vols(c: &Cluster) -> PathBuf {
    c.dir.join("vols")
}

/// Nothing of the volume pool is mounted on the host, and no loop device backs a volume
/// file: tenants' filesystems are parsed by guest kernels only.
fn assert_nothing_mounted_on_host(c: &Cluster) {
    let pool = vols(c).display().to_string();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.lines().any(|l| l.contains(&pool) || l.contains("/pvc-")),
        "a volume is mounted on the host:\n{mi}"
    );
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(backing) {
            assert!(
                !b.contains(&pool),
                "loop device {:?} backs {b}",
                e.file_name()
            );
        }
    }
}

fn pvc_events(c: &Cluster, ns: &str, name: &str) -> String {
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

fn events_of(c: &Cluster, ns: &str) -> String {
    // core/v1 events (the agent's) and events.k8s.io/v1 (the controllers') both list here.
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "-o",
        "custom-columns=O:.involvedObject.name,R:.reason,M:.message,N:.note",
    ])
}

fn running_pod(c: &Cluster, ns: &str, selector: &str) -> String {
    wait(Duration::from_secs(240), "a Running pod", || {
        let l = c.json(&["-n", ns, "get", "pods", "-l", selector]).ok()?;
        l["items"].as_array()?.iter().find_map(|p| {
            (p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && container_status(p)["ready"] == true)
                .then(|| p["metadata"]["name"].as_str().unwrap().to_string())
        })
    })
}

fn exec(c: &Cluster, ns: &str, pod: &str, cmd: &str) -> (bool, String, String) {
    c.kubectl_out(&["-n", ns, "exec", pod, "--", "sh", "-c", cmd], None)
}

/// Waits until `pod`'s command has written `want` to `file`: a container without a readiness
/// probe is ready as soon as it runs (as in Kubernetes), before its command has done anything.
fn wait_written(c: &Cluster, ns: &str, pod: &str, file: &str, want: &str) {
    wait(
        Duration::from_secs(30),
        &format!("{pod} to write {file}"),
        || {
            let (ok, out, _) = exec(c, ns, pod, &format!("cat {file}"));
            (ok && out.trim() == want).then_some(())
        },
    );
}

#[test]
fn pvc_deployment_keeps_data_across_pods_expands_offline_and_deletes() {
    let c = cluster();
    let ns = c.namespace("vol-dep");
    c.apply(
        &ns,
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  selector: {matchLabels: {app: vol}}
  template:
    metadata: {labels: {app: vol}}
    spec:
      securityContext: {fsGroup: 2000}
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "mkdir -p /data/logs && hostname >> /data/logs/who && sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /data}
        - {name: data, mountPath: /logs, subPath: logs, readOnly: true}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
"#,
    );
    let p1 = running_pod(c, &ns, "app=vol");
    // The default class bound it to a local volume made on this node.
    let claim = c.json(&["-n", &ns, "get", "pvc", "data"]).unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["storageClassName"], "h8s-local");
    let finalizers = claim["metadata"]["finalizers"].to_string();
    assert!(
        finalizers.contains("kubernetes.io/pvc-protection"),
        "{finalizers}"
    );
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = c.json(&["get", "pv", &pv_name]).unwrap();
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["csi"]["driver"], "local.volumes.h8s.io");
    assert!(pv["metadata"]["finalizers"]
        .to_string()
        .contains("kubernetes.io/pv-protection"));
    assert!(pv["spec"]["nodeAffinity"].to_string().contains(&c.name));
    let file = vols(c).join(format!("{pv_name}.raw"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 20);
    // Events are written off the provisioning path: wait for it.
    wait(
        Duration::from_secs(60),
        "ProvisioningSucceeded on the claim",
        || {
            pvc_events(c, &ns, "data")
                .contains("ProvisioningSucceeded")
                .then_some(())
        },
    );

    // Inside the VM: the filesystem, the subPath read-only, fsGroup on new files.
    // The container writes its line once it runs, and a container without a readiness probe
    // is ready as soon as it runs (as in Kubernetes): wait for the line.
    let out = wait(Duration::from_secs(30), "the first pod's line", || {
        let (ok, out, _) = exec(
            c,
            &ns,
            &p1,
            "cat /logs/who; stat -c %g /data/logs/who; grep ' /data ' /proc/mounts",
        );
        (ok && out.contains(&p1)).then_some(out)
    });
    assert!(out.contains("2000"), "fsGroup: {out}");
    assert!(out.contains("ext4"), "{out}");
    let (ok, _, err) = exec(c, &ns, &p1, "touch /logs/x");
    assert!(!ok && err.contains("Read-only"), "subPath readOnly: {err}");
    assert_nothing_mounted_on_host(c);

    // Offline expansion: no pod, the claim asks for more, the next pod sees the data and room.
    c.kubectl(&["-n", &ns, "scale", "deployment", "app", "--replicas=0"]);
    wait(Duration::from_secs(120), "the pod VM to stop", || {
        c.vms_of(&ns).is_empty().then_some(())
    });
    c.kubectl(&[
        "-n",
        &ns,
        "patch",
        "pvc",
        "data",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}"#,
    ]);
    wait(Duration::from_secs(60), "the volume to grow", || {
        (std::fs::metadata(&file).ok()?.len() == 128 << 20).then_some(())
    });
    wait(Duration::from_secs(30), "the claim's capacity", || {
        let cl = c.json(&["-n", &ns, "get", "pvc", "data"]).ok()?;
        (cl["status"]["capacity"]["storage"] == "134217728"
            || cl["status"]["capacity"]["storage"] == "128Mi")
            .then_some(())
    });
    c.kubectl(&["-n", &ns, "scale", "deployment", "app", "--replicas=1"]);
    let p2 = running_pod(c, &ns, "app=vol");
    assert_ne!(p1, p2);
    // The first pod's line is there at once (the data survived); the second's once its
    // container has run its command.
    let (ok, out, err) = exec(c, &ns, &p2, "cat /data/logs/who");
    assert!(ok && out.contains(&p1), "the first pod's data: {out} {err}");
    let out = wait(Duration::from_secs(30), "the second pod's line", || {
        let (ok, out, _) = exec(c, &ns, &p2, "cat /data/logs/who; df -k /data | tail -1");
        (ok && out.contains(&p2)).then_some(out)
    });
    assert!(
        out.contains(&p1) && out.contains(&p2),
        "data of both pods: {out}"
    );
    let size_k: u64 = out
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(size_k > 100_000, "the filesystem grew to the disk: {out}");
    assert_nothing_mounted_on_host(c);

    // Delete: the claim goes, the volume is Released, its file removed, the PV deleted.
    c.kubectl(&["-n", &ns, "delete", "deployment", "app"]);
    wait(Duration::from_secs(120), "the pod VMs to go", || {
        c.vms_of(&ns).is_empty().then_some(())
    });
    c.kubectl(&["-n", &ns, "delete", "pvc", "data", "--wait=true"]);
    wait(Duration::from_secs(60), "the volume file to go", || {
        (!file.exists()).then_some(())
    });
    wait(Duration::from_secs(60), "the PV to go", || {
        c.json(&["get", "pv", &pv_name]).is_err().then_some(())
    });
    c.cleanup(&ns);
}

#[test]
fn block_mode_gives_the_raw_device_and_rwop_waits_with_multi_attach() {
    let c = cluster();
    let ns = c.namespace("vol-blk");
    c.apply(&ns,
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: raw}
spec:
  accessModes: [ReadWriteOncePod]
  volumeMode: Block
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: blk, labels: {app: blk}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo h8s-block-data | dd of=/dev/xvda bs=512 seek=8 conv=sync && sync && sleep 3600"]
    volumeDevices:
    - {name: raw, devicePath: /dev/xvda}
  volumes:
  - name: raw
    persistentVolumeClaim: {claimName: raw}
"#,
    );
    running_pod(c, &ns, "app=blk");
    let (ok, out, err) = exec(
        c,
        &ns,
        "blk",
        "dd if=/dev/xvda bs=512 skip=8 count=1 2>/dev/null; blockdev --getsize64 /dev/xvda; grep -c xvda /proc/mounts",
    );
    assert!(ok || out.contains("h8s-block-data"), "{err}");
    assert!(out.contains("h8s-block-data"), "{out}");
    assert!(out.contains(&(16u64 << 20).to_string()), "{out}");
    let pv_name = c.json(&["-n", &ns, "get", "pvc", "raw"]).unwrap()["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_string();
    let pv = c.json(&["get", "pv", &pv_name]).unwrap();
    assert_eq!(pv["spec"]["volumeMode"], "Block");
    // The bytes went to the backing file (read as a file, never mounted).
    let data = std::fs::read(vols(c).join(format!("{pv_name}.raw"))).unwrap();
    assert_eq!(&data[4096..4110], b"h8s-block-data");

    // ReadWriteOncePod: a second pod waits with a Multi-Attach event.
    c.apply(
        &ns,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: blk2}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    volumeDevices:
    - {name: raw, devicePath: /dev/xvda}
  volumes:
  - name: raw
    persistentVolumeClaim: {claimName: raw}
"#,
    );
    wait(Duration::from_secs(60), "a Multi-Attach event", || {
        let ev = events_of(c, &ns);
        (ev.contains("FailedAttachVolume") && ev.contains("Multi-Attach error")).then_some(())
    });
    let p = c.pod(&ns, "blk2");
    assert_eq!(p["status"]["phase"], "Pending");
    let msg = container_status(&p)["state"]["waiting"]["message"].to_string();
    assert!(msg.contains("Multi-Attach"), "{p}");
    assert!(c.vms_of(&ns).len() == 1, "the second pod has no VM");
    assert_nothing_mounted_on_host(c);
    c.cleanup(&ns);
    // The namespace is on its way out with its claim; whichever deletes it first.
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pvc",
        "raw",
        "--wait=false",
        "--ignore-not-found",
    ]);
}

fn make_volume_file(c: &Cluster, id: &str, ext4: bool) -> PathBuf {
    std::fs::create_dir_all(vols(c)).unwrap();
    let f = vols(c).join(format!("{id}.raw"));
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&f)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    if ext4 {
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
    }
    f
}

fn static_pv(c: &Cluster, name: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 32Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  csi: {{driver: local.volumes.h8s.io, volumeHandle: {name}, fsType: ext4}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
{extra_spec}"#,
        node = c.name
    )
}

#[test]
fn seeds_cinder_manifest_attaches_the_named_volume() {
    let c = cluster();
    let ns = c.namespace("vol-cinder");
    let id = "651b2a7b-683e-47e1-bdd6-e3c62e8f91c0";
    // The admin makes the volume beforehand (the seeds: "create the Cinder volume first").
    make_volume_file(c, id, true);
    c.apply(&ns, &static_pv(c, id, ""));
    // The manifest from the seeds, verbatim (two-space line ends and all).
    let seed = "apiVersion: v1  \nkind: Pod  \nmetadata:  \n  name: nginx  \n  labels:  \n    app: nginx  \nspec:  \n  containers:  \n  - name: nginx  \n    image: nginx  \n    ports:  \n    - containerPort: 80  \n    volumeMounts:  \n    - name: nginx-persistent-storage  \n      mountPath: /var/lib/nginx  \n  volumes:  \n  - name: nginx-persistent-storage  \n    cinder:  \n      volumeID: 651b2a7b-683e-47e1-bdd6-e3c62e8f91c0  \n      fsType: ext4\n";
    c.apply(&ns, seed);
    // The image's command (busybox's sh here) runs with the volume mounted: the container
    // starts (and ends; it is restarted), it never fails to mount.
    wait(
        Duration::from_secs(240),
        "the nginx container to start",
        || {
            let p = c.pod(&ns, "nginx");
            let cs = container_status(&p);
            let started = cs["restartCount"].as_i64().unwrap_or(0) > 0
                || !cs["state"]["running"].is_null()
                || cs["state"]["terminated"]["exitCode"] == 0;
            let msg = cs["state"]["waiting"]["message"].to_string();
            assert!(!msg.contains("mount"), "mount failed: {p}");
            started.then_some(())
        },
    );
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pod",
        "nginx",
        "--grace-period=1",
        "--wait=true",
    ]);
    // The same volume by id in a busybox pod: written, and kept for the next pod.
    let pod_yaml = |name: &str, cmd: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "{cmd}"]
    volumeMounts:
    - {{name: v, mountPath: /var/lib/nginx}}
  volumes:
  - name: v
    cinder: {{volumeID: {id}, fsType: ext4}}
"#
        )
    };
    c.apply(
        &ns,
        &pod_yaml("w", "echo seeded > /var/lib/nginx/f && sleep 3600"),
    );
    running_pod(c, &ns, "app=w");
    wait_written(c, &ns, "w", "/var/lib/nginx/f", "seeded");
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pod",
        "w",
        "--grace-period=1",
        "--wait=true",
    ]);
    c.apply(&ns, &pod_yaml("r", "sleep 3600"));
    running_pod(c, &ns, "app=r");
    let (ok, out, err) = exec(c, &ns, "r", "cat /var/lib/nginx/f");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "seeded");
    assert_nothing_mounted_on_host(c);
    c.cleanup(&ns);
    c.kubectl(&["delete", "pv", id, "--wait=false"]);
}

#[test]
fn bad_input_is_reported_on_the_claim_and_the_pod() {
    let c = cluster();
    let ns = c.namespace("vol-bad");
    c.apply(
        &ns,
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: huge}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: noclass}
spec:
  storageClassName: nope
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, command: ["sleep", "3600"], volumeMounts: [{name: v, mountPath: /v}]}
  volumes:
  - {name: v, persistentVolumeClaim: {claimName: huge}}
"#,
    );
    // Larger than the 2 GiB pool: Pending with ProvisioningFailed.
    wait(
        Duration::from_secs(60),
        "ProvisioningFailed on the big claim",
        || {
            let ev = pvc_events(c, &ns, "huge");
            (ev.contains("ProvisioningFailed") && ev.contains("not enough space")).then_some(())
        },
    );
    let cl = c.json(&["-n", &ns, "get", "pvc", "huge"]).unwrap();
    assert_eq!(cl["status"]["phase"], "Pending");
    let p = c.pod(&ns, "huge");
    assert!(
        container_status(&p)["state"]["waiting"]["message"]
            .to_string()
            .contains("not enough space"),
        "{p}"
    );
    // Unknown class.
    wait(
        Duration::from_secs(60),
        "ProvisioningFailed on the unknown class",
        || {
            let ev = pvc_events(c, &ns, "noclass");
            ev.contains("storageclass.storage.k8s.io \"nope\" not found")
                .then_some(())
        },
    );
    // A missing and a damaged backing file: the pod's status says so.
    let missing = format!("missing-{}", std::process::id());
    let damaged = format!("damaged-{}", std::process::id());
    c.apply(&ns, &static_pv(c, &missing, ""));
    std::fs::create_dir_all(vols(c)).unwrap();
    std::fs::write(vols(c).join(format!("{damaged}.raw")), b"not a disk").unwrap();
    c.apply(&ns, &static_pv(c, &damaged, ""));
    for (name, vol, want) in [("m", &missing, "not found"), ("d", &damaged, "corrupt")] {
        c.apply(&ns,
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, command: ["sleep", "3600"], volumeMounts: [{{name: v, mountPath: /v}}]}}
  volumes:
  - {{name: v, cinder: {{volumeID: {vol}}}}}
"#
            ),
        );
        wait(
            Duration::from_secs(60),
            "the pod to report its volume",
            || {
                let p = c.pod(&ns, name);
                container_status(&p)["state"]["waiting"]["message"]
                    .to_string()
                    .contains(want)
                    .then_some(())
            },
        );
    }
    // A file that is a disk but holds no filesystem: the guest refuses to mount it.
    let blank = format!("blank-{}", std::process::id());
    make_volume_file(c, &blank, false);
    c.apply(&ns, &static_pv(c, &blank, ""));
    c.apply(&ns,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: b}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, command: ["sleep", "3600"], volumeMounts: [{{name: v, mountPath: /v}}]}}
  volumes:
  - {{name: v, cinder: {{volumeID: {blank}}}}}
"#
        ),
    );
    wait(
        Duration::from_secs(240),
        "the guest's mount failure",
        || {
            let p = c.pod(&ns, "b");
            let m = container_status(&p)["state"]["waiting"]["message"].to_string();
            m.contains("ext4").then_some(())
        },
    );
    assert_nothing_mounted_on_host(c);
    c.cleanup(&ns);
    for pv in [missing, damaged, blank] {
        c.kubectl(&["delete", "pv", &pv, "--wait=false"]);
    }
}

#[test]
fn rbd_volume_follows_its_pod_through_qemus_rbd_driver() {
    let c = cluster();
    let ns = c.namespace("vol-rbd");
    c.apply(
        &ns,
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: h8s-rbd-test}
provisioner: volumes.h8s.io/rbd
parameters: {pool: h8s}
reclaimPolicy: Delete
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec:
  storageClassName: h8s-rbd-test
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
"#,
    );
    // Immediate binding: the controller makes the image and binds it.
    let pv_name = wait(Duration::from_secs(90), "the rbd claim to bind", || {
        let cl = c.json(&["-n", &ns, "get", "pvc", "shared"]).ok()?;
        (cl["status"]["phase"] == "Bound")
            .then(|| cl["spec"]["volumeName"].as_str().unwrap().to_string())
    });
    let pv = c.json(&["get", "pv", &pv_name]).unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], "rbd.volumes.h8s.io");
    assert!(
        pv["spec"]["nodeAffinity"].is_null(),
        "rbd volumes go anywhere"
    );
    let pod_yaml = |name: &str, cmd: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "{cmd}"]
    volumeMounts:
    - {{name: v, mountPath: /data}}
  volumes:
  - name: v
    persistentVolumeClaim: {{claimName: shared}}
"#
        )
    };
    c.apply(
        &ns,
        &pod_yaml("w", "echo on-ceph > /data/f && sync && sleep 3600"),
    );
    running_pod(c, &ns, "app=w");
    wait_written(c, &ns, "w", "/data/f", "on-ceph");
    // QEMU opened the image itself: its command line names the rbd: drive.
    let qemu_has_rbd = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).contains(&format!("rbd:h8s/{pv_name}")))
            .unwrap_or(false)
    });
    assert!(qemu_has_rbd, "a QEMU process attaches rbd:h8s/{pv_name}");
    // The attach-detach controller's VolumeAttachment of the image to the node.
    let vas = c.json(&["get", "volumeattachments"]).unwrap();
    let va = vas["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["spec"]["source"]["persistentVolumeName"] == pv_name.as_str())
        .unwrap_or_else(|| panic!("a VolumeAttachment of {pv_name}: {vas}"))
        .clone();
    assert_eq!(va["spec"]["attacher"], "rbd.volumes.h8s.io");
    assert_eq!(va["spec"]["nodeName"], c.name.as_str());
    assert_eq!(va["status"]["attached"], true);
    assert!(va["metadata"]["name"].as_str().unwrap().starts_with("csi-"));
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pod",
        "w",
        "--grace-period=1",
        "--wait=true",
    ]);
    c.apply(&ns, &pod_yaml("r", "sleep 3600"));
    running_pod(c, &ns, "app=r");
    let (ok, out, err) = exec(c, &ns, "r", "cat /data/f");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "on-ceph");
    assert_nothing_mounted_on_host(c);
    c.cleanup(&ns);
    // Delete: the controller removes the image and the volume (the claim goes with its
    // namespace, which cleanup is deleting, if this does not get there first).
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pvc",
        "shared",
        "--wait=true",
        "--ignore-not-found",
    ]);
    wait(Duration::from_secs(60), "the rbd PV to go", || {
        c.json(&["get", "pv", &pv_name]).is_err().then_some(())
    });
    wait(
        Duration::from_secs(60),
        "the VolumeAttachment to go",
        || {
            let vas = c.json(&["get", "volumeattachments"]).ok()?;
            (!vas.to_string().contains(&pv_name)).then_some(())
        },
    );
    let ls = Command::new("rbd")
        .arg("-c")
        .arg(c.dir.join("ceph/ceph.conf"))
        .args(["ls", "h8s"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(&pv_name),
        "the image is removed"
    );
    c.kubectl(&["delete", "storageclass", "h8s-rbd-test"]);
}
