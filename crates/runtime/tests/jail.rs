//! The jail around pod VMs, against real VMs (TCG here): two pods started concurrently run
//! QEMU under different unprivileged uids, without capabilities, in their own mount and PID
//! namespaces whose root shows neither pod's directory, limited by their cgroups; removal
//! leaves nothing. A pod over its memory limit is killed with a clear reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use h8s_runtime::{
    ContainerConfig, ImageDisk, Runtime, RuntimeConfig, SandboxConfig, SandboxState, SandboxStatus,
    ShimCommand, StreamEvent, VmSettings,
};

use h8s_runtime::testing::VmTestLock as VmLock;

/// The cross-binary VM lock, held for one test.
fn vm_lock() -> VmLock {
    h8s_runtime::testing::vm_test_lock().expect("VM test lock")
}

fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("needs busybox-static");
    for applet in ["sh", "echo", "cat", "dd", "sleep", "id", "mount"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let img = dir.join("busybox.erofs");
    let st = std::process::Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&img)
        .arg(&root)
        .status()
        .expect("needs erofs-utils");
    assert!(st.success());
    img
}

struct Env {
    tmp: tempfile::TempDir,
    rt: Runtime,
    image: PathBuf,
    /// The node's disk I/O limits (the defaults).
    disk_io: h8s_runtime::DiskIoSettings,
    /// Set-up's library stand-ins QEMU loads.
    qemu_lib_dir: Option<PathBuf>,
    _lock: VmLock,
}

impl Drop for Env {
    /// Kills whatever a failed test left running, by the PIDs in its pod records.
    fn drop(&mut self) {
        let pods = self.rt.root().join("pods");
        for d in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            if std::thread::panicking() {
                for f in ["shim.log", "qemu.log", "pod.json", "console.log"] {
                    if let Ok(s) = std::fs::read_to_string(d.path().join(f)) {
                        let tail: String = s
                            .chars()
                            .rev()
                            .take(3000)
                            .collect::<String>()
                            .chars()
                            .rev()
                            .collect();
                        eprintln!("--- {} {f}:\n{tail}", d.path().display());
                    }
                }
            }
            let Ok(rec) = std::fs::read_to_string(d.path().join("pod.json")) else {
                continue;
            };
            let rec: serde_json::Value = serde_json::from_str(&rec).unwrap_or_default();
            for who in ["shim", "qemu"] {
                if let Some(pid) = rec[who]["pid"].as_u64() {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let ours = String::from_utf8_lossy(&cmd)
                        .contains(&*self.tmp.path().to_string_lossy())
                        || String::from_utf8_lossy(&cmd).contains("qemu-system");
                    if ours {
                        // SAFETY: kill(2) on a PID from our own pod record, checked above.
                        unsafe {
                            libc::kill(pid as i32, libc::SIGKILL);
                        }
                    }
                }
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn env(overhead: Option<u32>) -> Env {
    let lock = vm_lock();
    let tmp = tempfile::Builder::new()
        .prefix("h8s-jail")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let image = busybox_erofs(tmp.path());
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.boot_timeout_secs = 180;
    assert!(vm.jail.enabled, "the jail is on by default as root");
    vm.jail.memory_overhead_mib = overhead;
    let disk_io = vm.disk_io;
    let qemu_lib_dir = vm.qemu_lib_dir.clone();
    let rt = Runtime::new(RuntimeConfig {
        images: None,
        root: tmp.path().join("state"),
        vm,
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s-pod-shim")),
            args: vec![],
        },
    });
    Env {
        tmp,
        rt,
        image,
        disk_io,
        qemu_lib_dir,
        _lock: lock,
    }
}

fn sandbox(e: &Env, name: &str, memory_mib: u32) -> SandboxConfig {
    let mut s = SandboxConfig::new(name);
    s.memory_mib = memory_mib;
    s.images.push(ImageDisk {
        name: "busybox".into(),
        path: e.image.clone(),
    });
    s
}

fn container(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        working_dir: None,
        user: None,
        tty: false,
        stdin: false,
        tty_size: None,
        init: false,
        mounts: Vec::new(),
        read_only_root: false,
        writable_limit_bytes: None,
    }
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

async fn run_echo(rt: &Runtime, id: &str) -> Vec<u8> {
    rt.create_container(id, container("hello", &["echo", "jailed"]))
        .await
        .unwrap();
    let mut s = rt.attach(id, "hello").await.unwrap();
    rt.start_container(id, "hello").await.unwrap();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), s.output.next()).await {
            Ok(Ok(Some(StreamEvent::Stdout(d)))) => out.extend(d),
            Ok(Ok(Some(StreamEvent::Exit(c)))) => {
                assert_eq!(c, 0);
                return out;
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("stream ended badly: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn two_pods_run_jailed_apart_and_leave_nothing() {
    if !is_root() {
        panic!("the jail needs root (run the VM tests as root)");
    }
    let e = env(None);
    // Pod b asks for more disk bandwidth than the node's ceiling: it gets the ceiling.
    let io = e.disk_io;
    assert!(io.bps > 0 && io.iops > 0 && io.max_bps > io.bps, "{io:?}");
    let mut wide = sandbox(&e, "b", 128);
    wide.disk_bps = Some(u64::MAX);
    let (a, b) = tokio::join!(
        e.rt.run_sandbox(sandbox(&e, "a", 128)),
        e.rt.run_sandbox(wide)
    );
    let (a, b) = (a.expect("pod a starts"), b.expect("pod b starts"));
    // The pods work: a container runs and prints.
    assert_eq!(run_echo(&e.rt, &a).await, b"jailed\n");

    let sa: SandboxStatus = e.rt.sandbox_status(&a).await.unwrap();
    let sb: SandboxStatus = e.rt.sandbox_status(&b).await.unwrap();
    let (ja, jb) = (sa.jail.clone().unwrap(), sb.jail.clone().unwrap());
    assert_ne!(ja.uid, jb.uid, "each pod has its own uid");
    let pods_dir = e.rt.root().join("pods");
    for (s, j, other) in [(&sa, &ja, &b), (&sb, &jb, &a)] {
        let pid = s.qemu_pid.expect("QEMU runs");
        assert!((200_000..=265_535).contains(&j.uid), "{j:?}");
        let want = format!("{0}\t{0}\t{0}\t{0}", j.uid);
        assert_eq!(status_field(pid, "Uid"), want);
        assert_eq!(status_field(pid, "Gid"), want);
        assert_eq!(status_field(pid, "Groups"), "");
        for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
        }
        assert_eq!(status_field(pid, "NoNewPrivs"), "1");
        // QEMU's own PID namespace, where it is PID 1.
        assert_ne!(ns(&pid.to_string(), "pid"), ns("self", "pid"));
        assert_eq!(status_field(pid, "NSpid"), format!("{pid}\t1"));
        for kind in ["mnt", "ipc", "uts", "net", "cgroup"] {
            assert_ne!(ns(&pid.to_string(), kind), ns("self", kind), "{kind}");
        }
        assert_eq!(
            j.namespaces,
            vec!["mount", "pid", "ipc", "uts", "cgroup", "net"]
        );
        // Its root holds what the VM needs and no pod's directory, its own included.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        for p in [
            "usr/bin",
            "vm/kernel",
            "vm/initrd",
            "dev/null",
            "dev/urandom",
        ] {
            assert!(root.join(p).exists(), "{p} in the jail");
        }
        assert!(!root.join("dev/kvm").exists(), "no /dev/kvm under TCG");
        // QEMU loaded set-up's stand-ins for the libraries it never calls (docs/runtime.md,
        // "QEMU's libraries"), not the system's capstone or libpmem (and libpmem's own).
        let libs = e
            .qemu_lib_dir
            .as_ref()
            .expect("scripts/setup makes $H8S_CACHE/qemu-lib");
        assert!(libs.join("libcapstone.so.4").is_file());
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        for lib in ["libcapstone.so.4", "libpmem.so.1"] {
            assert!(maps.contains(&format!(" /vm/lib/{lib}\n")), "{lib}: {maps}");
            assert!(root.join("vm/lib").join(lib).is_file());
        }
        for l in maps.lines() {
            if l.contains("/libcapstone") || l.contains("/libpmem") {
                assert!(l.contains(" /vm/lib/"), "{l}");
            }
            assert!(!l.contains("/libndctl") && !l.contains("/libcrypto"), "{l}");
        }
        let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap());
        assert!(!rel(&pods_dir.join(other)).exists());
        assert!(!rel(&pods_dir.join(&s.id)).exists());
        assert!(!rel(&e.image).exists(), "images come in as descriptors");
        assert!(!root.join("proc/1").exists() && !root.join("root").exists());
        let top: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !top.contains(&"etc".to_string()) && !top.contains(&"home".to_string()),
            "{top:?}"
        );
        // The pod directory is the pod uid's alone (its supervisor writes it).
        let mode = std::fs::metadata(pods_dir.join(&s.id)).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
        assert_eq!(mode.uid(), j.uid);
        let rec_owner = std::fs::metadata(pods_dir.join(&s.id).join("pod.json")).unwrap();
        assert_eq!(rec_owner.uid(), j.uid);
        // The memory limit (guest RAM + overhead) is in force on QEMU's cgroup.
        let mem = j
            .cgroups
            .iter()
            .find(|l| l.controller == "memory")
            .unwrap_or_else(|| panic!("no memory limit: {j:?}"));
        let (file, value) = mem.limit.split_once('=').unwrap();
        let value: u64 = value.parse().unwrap();
        assert!((128 << 20..512 << 20).contains(&value), "{value}");
        let on_disk = std::fs::read_to_string(mem.path.join(file)).unwrap();
        assert_eq!(on_disk.trim().parse::<u64>().unwrap(), value);
        let procs = std::fs::read_to_string(mem.path.join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), pid.to_string(), "QEMU alone in its cgroup");
        assert!(mem.path.ends_with(Path::new("h8s").join(&s.id)));
        if let Some(cpu) = j.cgroups.iter().find(|l| l.controller == "cpu") {
            assert!(cpu.limit.contains("100000"), "{cpu:?}");
        }
        // Disk I/O: QEMU throttles every drive in the pod's group (as it reports it), the
        // pod that asked for more gets the node's ceiling, no more.
        let bps = if s.id == b { io.max_bps } else { io.bps };
        assert_eq!(
            j.disk_throttle,
            [format!("img0 bps={bps} iops={} group=pod-io", io.iops)],
            "{j:?}"
        );
        // …and, on v1 blkio or v2 io, the host disk behind the image is throttled too.
        let dev = {
            use std::os::unix::fs::MetadataExt;
            let d = std::fs::metadata(&e.image).unwrap().dev();
            (libc::major(d), libc::minor(d))
        };
        let blk = j.cgroups.iter().filter(|l| l.controller == "io");
        let want = format!("{}:{} {bps}", dev.0, dev.1);
        let whole_disk =
            !Path::new(&format!("/sys/dev/block/{}:{}/partition", dev.0, dev.1)).exists();
        if dev.0 != 0 && whole_disk && j.cgroups.iter().any(|l| l.version == 1) {
            let read = blk
                .clone()
                .find(|l| l.limit.starts_with("blkio.throttle.read_bps_device="))
                .unwrap_or_else(|| panic!("no blkio limit: {j:?}"));
            assert_eq!(read.limit, format!("blkio.throttle.read_bps_device={want}"));
            let on_disk =
                std::fs::read_to_string(read.path.join("blkio.throttle.read_bps_device")).unwrap();
            assert_eq!(on_disk.trim(), want);
            let procs = std::fs::read_to_string(read.path.join("cgroup.procs")).unwrap();
            assert_eq!(procs.trim(), pid.to_string(), "QEMU in its blkio cgroup");
        }
        assert!(j.supervisor_seccomp, "{j:?}");
        // The supervisor is filtered: seccomp mode 2.
        let shim = s.shim_pid.unwrap();
        assert_eq!(status_field(shim, "Seccomp"), "2");
        // …runs as the pod's uid and gid with no capability, on every thread.
        assert_eq!(j.supervisor_uid, Some(j.uid), "{j:?}");
        assert!(j.supervisor_caps.is_empty(), "{j:?}");
        let ids = format!("{0}\t{0}\t{0}\t{0}", j.uid);
        for t in std::fs::read_dir(format!("/proc/{shim}/task"))
            .unwrap()
            .flatten()
        {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap();
            for (field, want) in [
                ("Uid", ids.as_str()),
                ("Gid", ids.as_str()),
                ("Groups", ""),
                ("CapEff", "0000000000000000"),
                ("CapPrm", "0000000000000000"),
                ("CapInh", "0000000000000000"),
                ("CapAmb", "0000000000000000"),
                ("NoNewPrivs", "1"),
                ("Seccomp", "2"),
            ] {
                let got = st
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{field}:")))
                    .unwrap()
                    .trim();
                assert_eq!(got, want, "supervisor thread {:?} {field}", t.file_name());
            }
        }
        assert_eq!(status_field(shim, "CapBnd"), "0000000000000000");
        eprintln!(
            "pod {}: uid {} cgroups {:?} not enforced {:?}",
            s.id, j.uid, j.cgroups, j.not_enforced
        );
        let peak = mem.path.join("memory.max_usage_in_bytes");
        if let Ok(p) = std::fs::read_to_string(peak) {
            eprintln!(
                "pod {} peak memory {} MiB",
                s.id,
                p.trim().parse::<u64>().unwrap_or(0) >> 20
            );
        }
    }

    // Removal leaves nothing: no process, cgroup or uid.
    let uid_markers = e.rt.root().join("jail/uids");
    for (s, j) in [(&sa, &ja), (&sb, &jb)] {
        assert!(uid_markers.join(j.uid.to_string()).exists());
        e.rt.stop_sandbox(&s.id, Duration::from_secs(5))
            .await
            .unwrap();
        // The record is the pod uid's to write: a directory it names as a cgroup that is
        // not one (an empty directory elsewhere) survives the pod's removal.
        let decoy = e.rt.root().join("decoy/h8s").join(&s.id);
        std::fs::create_dir_all(&decoy).unwrap();
        let rec_path = pods_dir.join(&s.id).join("pod.json");
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
        rec["jail"]["cgroup_dirs"]
            .as_array_mut()
            .unwrap()
            .push(decoy.to_string_lossy().into());
        std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
        e.rt.remove_sandbox(&s.id, true).await.unwrap();
        assert!(
            decoy.is_dir(),
            "a directory the record names is not removed"
        );
        let pid = s.qemu_pid.unwrap();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmd).contains("qemu"),
            "QEMU {pid} gone"
        );
        for d in &j.cgroup_dirs {
            assert!(!d.exists(), "cgroup {} removed", d.display());
        }
        assert!(!uid_markers.join(j.uid.to_string()).exists(), "uid freed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_pod_over_its_memory_limit_is_killed_with_the_reason() {
    if !is_root() {
        panic!("the jail needs root (run the VM tests as root)");
    }
    // No overhead at all: QEMU's own heaps and translation cache come on top of guest RAM
    // the guest fills, so the cgroup's OOM killer must strike.
    let e = env(Some(0));
    let id = match e.rt.run_sandbox(sandbox(&e, "hog", 192)).await {
        Err(err) => {
            // Killed while booting: the start fails with the reason, and leaves nothing.
            eprintln!("killed while booting: {err}");
            assert!(err.to_string().contains("out-of-memory"), "{err}");
            assert!(e.rt.list_sandboxes().await.unwrap().is_empty());
            assert!(std::fs::read_dir(e.rt.root().join("jail/uids"))
                .unwrap()
                .next()
                .is_none());
            return;
        }
        Ok(id) => id,
    };
    let st = e.rt.sandbox_status(&id).await.unwrap();
    let dirs = st.jail.clone().unwrap().cgroup_dirs;
    // Fill guest memory: a tmpfs as big as the guest's RAM.
    e.rt.create_container(
        &id,
        container(
            "hog",
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/m && mount -t tmpfs -o size=100% none /tmp/m; \
                 dd if=/dev/zero of=/tmp/m/fill bs=1M count=400; sleep 600",
            ],
        ),
    )
    .await
    .unwrap();
    e.rt.start_container(&id, "hog").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let st = loop {
        let st = e.rt.sandbox_status(&id).await.unwrap();
        if st.state == SandboxState::Failed {
            break st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod still {:?}",
            st.state
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let reason = st.reason.unwrap_or_default();
    eprintln!("killed while running: {reason}");
    assert!(reason.contains("out-of-memory"), "{reason}");
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} removed", d.display());
    }
    e.rt.remove_sandbox(&id, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn hardware_virt_required_refuses_a_tcg_pod_and_leaves_nothing() {
    if !is_root() {
        panic!("the jail needs root (run the VM tests as root)");
    }
    let mut e = env(None);
    let mut cfg = RuntimeConfig {
        images: None,
        root: e.rt.root().to_path_buf(),
        vm: VmSettings::from_env().unwrap(),
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s-pod-shim")),
            args: vec![],
        },
    };
    cfg.vm.require_hardware_virt = true;
    // Under TCG by choice, so the test means the same on a host with KVM.
    cfg.vm.accel = h8s_runtime::AccelChoice::Tcg;
    e.rt = Runtime::new(cfg);
    let err =
        e.rt.run_sandbox(sandbox(&e, "tenant", 128))
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("requires hardware virtualization") && msg.contains("TCG"),
        "{msg}"
    );
    assert!(
        matches!(err, h8s_runtime::Error::FailedPrecondition(_)),
        "{err:?}"
    );
    assert!(e.rt.list_sandboxes().await.unwrap().is_empty());
    let uids = e.rt.root().join("jail/uids");
    assert!(
        std::fs::read_dir(uids).unwrap().next().is_none(),
        "uid freed"
    );
}
