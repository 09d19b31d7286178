//! The runtime API against real pod VMs: QEMU under TCG (or KVM where the host has it) with the
//! guest kernel, initramfs and agent built by `scripts/setup`, and a busybox erofs image built
//! here with `mkfs.erofs`. VMs are serialized across test binaries with a lock file: the
//! machine has 2 cores.

use std::path::{Path, PathBuf};
use std::time::Duration;

use h8s_runtime::testing::rss_mib;
use h8s_runtime::{
    ContainerConfig, ContainerState, Error, ExecConfig, ImageDisk, Runtime, RuntimeConfig,
    SandboxConfig, SandboxState, ShimCommand, StreamEvent, VmSettings,
};

const NEEDS: &str = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)";

use h8s_runtime::testing::VmTestLock as VmLock;

/// The cross-binary VM lock, held for one test.
fn vm_lock() -> VmLock {
    h8s_runtime::testing::vm_test_lock().expect("VM test lock")
}

/// A busybox root filesystem as an erofs image (Debian's busybox-static).
fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("needs busybox-static");
    for applet in [
        "sh", "echo", "cat", "uname", "sleep", "ls", "true", "false", "id", "env",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
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
    _tmp: tempfile::TempDir,
    rt: Runtime,
    image: PathBuf,
    _lock: VmLock,
}

impl Drop for Env {
    /// Whatever a test leaves running (also when it fails) is killed by PID here; on failure
    /// the pod logs are kept in /tmp/h8s-test-logs for a look.
    fn drop(&mut self) {
        let pods = self.rt.root().join("pods");
        for d in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            if std::thread::panicking() {
                let keep = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join("h8s-test-logs")
                    .join(d.file_name());
                let _ = std::fs::create_dir_all(&keep);
                for f in ["shim.log", "console.log", "qemu.log", "pod.json"] {
                    let _ = std::fs::copy(d.path().join(f), keep.join(f));
                }
            }
            let Ok(rec) = std::fs::read_to_string(d.path().join("pod.json")) else {
                continue;
            };
            let rec: serde_json::Value = serde_json::from_str(&rec).unwrap_or_default();
            for who in ["shim", "qemu"] {
                if let Some(pid) = rec[who]["pid"].as_u64() {
                    kill_if_ours(pid as u32, &self.rt.root().to_string_lossy());
                }
            }
        }
    }
}

/// SIGKILLs `pid` if its command line names our state root (so never a stranger's process).
fn kill_if_ours(pid: u32, root: &str) {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmd).contains(root) {
        // SAFETY: kill(2) on a PID whose command line we just checked.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

fn env() -> Env {
    let lock = vm_lock();
    let tmp = tempfile::Builder::new()
        .prefix("h8s-rt")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let image = busybox_erofs(tmp.path());
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.boot_timeout_secs = 120;
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
        _tmp: tmp,
        rt,
        image,
        _lock: lock,
    }
}

fn sandbox(e: &Env, name: &str) -> SandboxConfig {
    let mut s = SandboxConfig::new(name);
    s.memory_mib = 128;
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

async fn collect(mut s: h8s_runtime::Stream) -> (Vec<u8>, Vec<u8>, Option<i32>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match tokio::time::timeout(Duration::from_secs(120), s.output.next()).await {
            Ok(Ok(Some(StreamEvent::Stdout(d)))) => out.extend(d),
            Ok(Ok(Some(StreamEvent::Stderr(d)))) => err.extend(d),
            Ok(Ok(Some(StreamEvent::Exit(c)))) => return (out, err, Some(c)),
            Ok(Ok(None)) => return (out, err, None),
            Ok(Err(e)) => panic!("stream error {e}"),
            Err(_) => panic!("stream timed out"),
        }
    }
}

/// Every QEMU process whose command line mentions `needle` (our temp dir).
fn qemu_procs(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("qemu-system") && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn init_containers_run_in_order_then_apps_and_exec_works() {
    let _ = NEEDS;
    let e = env();
    let id =
        e.rt.run_sandbox(sandbox(&e, "ordered"))
            .await
            .expect("pod starts");
    let st = e.rt.sandbox_status(&id).await.unwrap();
    assert_eq!(st.state, SandboxState::Ready);
    assert!(st.accel.is_some());
    let kernel = st.guest_kernel.clone().expect("guest kernel reported");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(
        kernel.trim(),
        host.trim(),
        "the pod must run its own kernel"
    );
    if st.accel == Some(h8s_runtime::Accel::Tcg) {
        // Without transparent huge pages (inherited from the supervisor), QEMU's translation
        // cache is resident only as far as it is written.
        let pid = st.qemu_pid.expect("QEMU runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
            "QEMU under TCG must run without huge pages:\n{status}"
        );
    }

    let mut first = container(
        "first",
        &["sh", "-c", "echo one > /tmp/order; echo init-one"],
    );
    first.init = true;
    let mut second = container("second", &["sh", "-c", "echo init-two"]);
    second.init = true;
    let app = container("app", &["sh", "-c", "echo app-up; sleep 600"]);
    e.rt.start_pod_containers(&id, &[first, second, app])
        .await
        .expect("containers start");
    let cs = e.rt.list_containers(&id).await.unwrap();
    let names: Vec<_> = cs.iter().map(|c| c.config.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "app"]);
    assert_eq!(cs[0].state, ContainerState::Exited);
    assert_eq!(cs[0].exit_code, Some(0));
    assert_eq!(cs[2].state, ContainerState::Running);
    assert!(cs[0].finished_at.as_deref() <= cs[1].started_at.as_deref());

    // Exec with stdin: what goes in comes back out.
    let mut s =
        e.rt.exec(
            &id,
            "app",
            ExecConfig {
                command: vec!["cat".into()],
                env: vec![],
                tty: false,
                stdin: true,
                size: None,
            },
        )
        .await
        .unwrap();
    s.input.stdin(b"ping through the VM\n").await.unwrap();
    s.input.close_stdin().await.unwrap();
    let (out, _, code) = collect(s).await;
    assert_eq!(out, b"ping through the VM\n");
    assert_eq!(code, Some(0));

    // Exec exit codes and stderr.
    let s =
        e.rt.exec(
            &id,
            "app",
            ExecConfig {
                command: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
                env: vec![],
                tty: false,
                stdin: false,
                size: None,
            },
        )
        .await
        .unwrap();
    let (_, err, code) = collect(s).await;
    assert_eq!((err.as_slice(), code), (&b"oops\n"[..], Some(3)));

    // A missing command is a typed error.
    let r =
        e.rt.exec(
            &id,
            "app",
            ExecConfig {
                command: vec!["/no/such/binary".into()],
                env: vec![],
                tty: false,
                stdin: false,
                size: None,
            },
        )
        .await;
    assert!(
        matches!(r, Err(Error::CommandNotFound(_))),
        "got {:?}",
        r.err()
    );

    // CRI logs of the init containers and the app.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(e.rt.log_path(&id, "app")).unwrap();
    let line = log.lines().next().expect("a log line");
    let entry = h8s_runtime::LogEntry::parse(line.as_bytes()).expect("CRI format");
    assert_eq!(entry.content, b"app-up");
    assert!(entry.full && entry.time.ends_with('Z'));

    e.rt.stop_sandbox(&id, Duration::from_secs(2))
        .await
        .unwrap();
    let st = e.rt.sandbox_status(&id).await.unwrap();
    assert_eq!(st.state, SandboxState::Stopped);
    assert_eq!(st.qemu_pid, None);
    assert!(qemu_procs(&e.rt.root().to_string_lossy()).is_empty());
    e.rt.remove_sandbox(&id, false).await.unwrap();
    assert!(e.rt.list_sandboxes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_failing_init_container_stops_the_app_from_starting() {
    let e = env();
    let id = e.rt.run_sandbox(sandbox(&e, "badinit")).await.unwrap();
    let mut bad = container("bad", &["sh", "-c", "exit 4"]);
    bad.init = true;
    let app = container("app", &["sleep", "600"]);
    let r = e.rt.start_pod_containers(&id, &[bad, app]).await;
    assert!(
        matches!(r, Err(Error::FailedPrecondition(ref m)) if m.contains("exited with 4")),
        "{r:?}"
    );
    let cs = e.rt.list_containers(&id).await.unwrap();
    assert_eq!(cs.len(), 1, "the app container was never created");
    e.rt.remove_sandbox(&id, true).await.unwrap();
    assert!(qemu_procs(&e.rt.root().to_string_lossy()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_crashing_guest_fails_the_pod_and_leaves_no_vm() {
    let e = env();
    let id = e.rt.run_sandbox(sandbox(&e, "crash")).await.unwrap();
    e.rt.start_pod_containers(&id, &[container("app", &["sleep", "600"])])
        .await
        .unwrap();
    // Panic the guest kernel: QEMU exits (panic=-1 + -no-reboot) or pauses; either way the
    // supervisor must notice and mark the pod failed. The minimal kernel has no magic SysRq:
    // there the guest panics on running out of memory.
    let crash = "if [ -e /proc/sysrq-trigger ]; then echo c > /proc/sysrq-trigger; \
                 else echo 1 > /proc/sys/vm/panic_on_oom; x=0123456789abcdef; \
                 while :; do x=$x$x; done; fi";
    let s =
        e.rt.exec(
            &id,
            "app",
            ExecConfig {
                command: vec!["sh".into(), "-c".into(), crash.into()],
                env: vec![],
                tty: false,
                stdin: false,
                size: None,
            },
        )
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(60), collect(s)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = e.rt.sandbox_status(&id).await.unwrap();
        if st.state == SandboxState::Failed {
            assert!(st.reason.is_some());
            assert_eq!(st.qemu_pid, None);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod not failed: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(qemu_procs(&e.rt.root().to_string_lossy()).is_empty());
    e.rt.remove_sandbox(&id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_vm_that_does_not_boot_in_time_leaves_nothing_behind() {
    let mut e = env();
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.boot_timeout_secs = 1;
    // A guest that never answers, however fast the machine boots.
    vm.cmdline_extra = h8s_runtime::testing::NEVER_BOOTS_CMDLINE.into();
    e.rt = Runtime::new(RuntimeConfig {
        images: None,
        root: e.rt.root().to_path_buf(),
        vm,
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s-pod-shim")),
            args: vec![],
        },
    });
    let r = e.rt.run_sandbox(sandbox(&e, "slow")).await;
    assert!(matches!(r, Err(Error::BootTimeout(_))), "{r:?}");
    assert!(e.rt.list_sandboxes().await.unwrap().is_empty());
    let pods = e.rt.root().join("pods");
    assert_eq!(std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0), 0);
    assert!(qemu_procs(&e.rt.root().to_string_lossy()).is_empty());
}

#[tokio::test]
async fn bad_requests_fail_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.kernel = tmp.path().join("no-kernel");
    let rt = Runtime::new(RuntimeConfig {
        images: None,
        root: tmp.path().join("state"),
        vm,
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s-pod-shim")),
            args: vec![],
        },
    });
    let mut s = SandboxConfig::new("p");
    assert!(matches!(
        rt.run_sandbox(s.clone()).await,
        Err(Error::NotFound { .. })
    ));
    s.name = "bad name".into();
    assert!(matches!(
        rt.run_sandbox(s).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(rt.resolve("nope"), Err(Error::NotFound { .. })));
    assert!(
        !tmp.path().join("state/pods").exists()
            || std::fs::read_dir(tmp.path().join("state/pods"))
                .unwrap()
                .count()
                == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_hung_vm_is_stopped_by_the_watchdog() {
    let mut e = env();
    let mut vm = VmSettings::from_env().unwrap();
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs).
    vm.templates = false;
    vm.boot_timeout_secs = 120;
    vm.watchdog_secs = 1;
    e.rt = Runtime::new(RuntimeConfig {
        images: None,
        root: e.rt.root().to_path_buf(),
        vm,
        shim: ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_h8s-pod-shim")),
            args: vec![],
        },
    });
    let id = e.rt.run_sandbox(sandbox(&e, "hang")).await.unwrap();
    e.rt.start_pod_containers(&id, &[container("app", &["sleep", "600"])])
        .await
        .unwrap();
    let qemu = e.rt.sandbox_status(&id).await.unwrap().qemu_pid.unwrap();
    // Freeze QEMU: the guest stops answering, as a hung VM would.
    // SAFETY: kill(2) on the QEMU PID our own pod reported.
    unsafe {
        libc::kill(qemu as i32, libc::SIGSTOP);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let st = loop {
        let st = e.rt.sandbox_status(&id).await.unwrap();
        if st.state == SandboxState::Failed {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog never fired: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        st.reason.as_deref().unwrap_or("").contains("watchdog"),
        "{:?}",
        st.reason
    );
    assert_eq!(st.qemu_pid, None);
    assert!(qemu_procs(&e.rt.root().to_string_lossy()).is_empty());
    e.rt.remove_sandbox(&id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn memory_a_guest_frees_goes_back_to_the_host() {
    let e = env();
    // Free page reporting is the default (a cold pod gets the balloon).
    assert!(VmSettings::from_env().unwrap().free_page_reporting);
    let mut cfg = sandbox(&e, "balloon");
    cfg.memory_mib = 256;
    let id = e.rt.run_sandbox(cfg).await.unwrap();
    e.rt.start_pod_containers(&id, &[container("app", &["sleep", "600"])])
        .await
        .unwrap();
    let qemu = e.rt.sandbox_status(&id).await.unwrap().qemu_pid.unwrap();
    let sh = |script: &str| ExecConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        tty: false,
        stdin: false,
        size: None,
    };
    // 100 MiB into the container's writable layer (guest memory), then removed.
    let s = e.rt.exec(
        &id,
        "app",
        sh("dd if=/dev/zero of=/big bs=1M count=100 2>&1"),
    );
    let (out, _, code) = collect(s.await.unwrap()).await;
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out));
    let full = rss_mib(qemu);
    let s = e.rt.exec(&id, "app", sh("rm /big"));
    assert_eq!(collect(s.await.unwrap()).await.2, Some(0));
    // The guest reports free 2 MiB blocks after ~2 s; QEMU discards them.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = rss_mib(qemu);
        if now + 64 <= full {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU still holds {now} MiB after the guest freed 100 MiB (at {full} MiB before)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    e.rt.stop_sandbox(&id, Duration::from_secs(2))
        .await
        .unwrap();
    e.rt.remove_sandbox(&id, false).await.unwrap();
}
