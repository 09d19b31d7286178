//! Persistent volume disks of pod VMs through the runtime API (no API server): a local
//! volume (h8s-volumes: sparse file, ext4 made on the file) attached as a virtio-blk disk,
//! mounted by the guest (whole, subPath, read-only), the raw device (`Device`), the eight-slot
//! budget; and `bench_volumes` (ignored; `--ignored --nocapture`): attach + mount time and I/O
//! inside the VM against the same file on the host. VMs are serialized across test binaries
//! with a lock file: the machine has 2 cores.

use std::path::{Path, PathBuf};
use std::time::Duration;

use h8s_runtime::{
    ContainerConfig, ExecConfig, ImageDisk, Runtime, RuntimeConfig, SandboxConfig, ShimCommand,
    StreamEvent, VmSettings, VolumeDisk,
};
use h8s_volumes::{local::Local, Backend, Filesystem, VolumeId};

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
        "sh", "echo", "cat", "uname", "sleep", "ls", "true", "false", "id", "env", "dd", "df",
        "sync", "mkdir", "stat", "touch", "grep", "blockdev", "tail", "rm",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    add_host_program(
        &root,
        Path::new(env!("CARGO_BIN_EXE_h8s-iobench")),
        "h8s-iobench",
    );
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

/// Copies a host program into the image's `/bin` with the shared libraries `ldd` names, at
/// their host paths (the guest runs the very same binary as the host).
fn add_host_program(root: &Path, prog: &Path, name: &str) {
    std::fs::copy(prog, root.join("bin").join(name)).expect("copy the program");
    let out = std::process::Command::new("ldd")
        .arg(prog)
        .output()
        .expect("needs ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        let Some(path) = path else { continue };
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).expect("copy a library");
    }
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
    // Cold boots: VM templates have their own tests (crates/h8s/tests/pod_vm.rs and
    // `a_template_clone_binds_its_own_volumes` below).
    env_with_templates(false)
}

fn env_with_templates(templates: bool) -> Env {
    let lock = vm_lock();
    let tmp = tempfile::Builder::new()
        .prefix("h8s-rt")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let image = busybox_erofs(tmp.path());
    let mut vm = VmSettings::from_env().unwrap();
    vm.templates = templates;
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

#[allow(dead_code)]
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

async fn sh(e: &Env, id: &str, c: &str, cmd: &str) -> (String, String, Option<i32>) {
    let s =
        e.rt.exec(
            id,
            c,
            ExecConfig {
                command: vec!["sh".into(), "-c".into(), cmd.into()],
                env: vec![],
                tty: false,
                stdin: false,
                size: None,
            },
        )
        .await
        .unwrap();
    let (o, er, code) = collect(s).await;
    (
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&er).into_owned(),
        code,
    )
}

/// Starts the pod's container `app` (`sleep 600`) with `mounts`.
async fn start_app(e: &Env, id: &str, mounts: Vec<h8s_guest::Mount>) {
    let mut app = container("app", &["sleep", "600"]);
    app.mounts = mounts;
    e.rt.start_pod_containers(id, &[app]).await.expect("starts");
}

/// The size in KiB of the file system `df -k` printed a line for in `out` (0 if none).
fn df_size_kib(out: &str) -> u64 {
    out.lines()
        .find(|l| l.contains("/data") || l.starts_with("/dev/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The raw block device with `serial` at `target` in the container, writable.
fn device_mount(target: &str, serial: &str) -> h8s_guest::Mount {
    h8s_guest::Mount {
        target: target.into(),
        source: h8s_guest::MountSource::Device {
            device: h8s_guest::BlockDevice::Serial(serial.into()),
        },
        read_only: false,
    }
}

fn vol_mount(target: &str, serial: &str, sub: Option<&str>, ro: bool) -> h8s_guest::Mount {
    h8s_guest::Mount {
        target: target.into(),
        source: h8s_guest::MountSource::Volume {
            device: h8s_guest::BlockDevice::Serial(serial.into()),
            fstype: "ext4".into(),
            sub_path: sub.map(str::to_string),
            fs_group: Some(3000),
            device_read_only: false,
        },
        read_only: ro,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn volume_disks_are_mounted_by_the_guest_only() {
    let _ = NEEDS;
    let e = env();
    let pool = Local::new(e._tmp.path().join("vols"), "n", None).unwrap();
    let fsv = VolumeId::new("pv-fs").unwrap();
    let raw = VolumeId::new("pv-raw").unwrap();
    pool.create(&fsv, 32 << 20, Some(Filesystem::Ext4)).unwrap();
    pool.create(&raw, 8 << 20, None).unwrap();
    // Grown on the host while no VM has it: the guest grows ext4 at mount.
    pool.resize(&fsv, 48 << 20).unwrap();
    let mut cfg = sandbox(&e, "vols");
    cfg.volumes.push(VolumeDisk {
        serial: "vol0".into(),
        drive: pool.drive(&fsv, false).spec,
    });
    cfg.volumes.push(VolumeDisk {
        serial: "vol1".into(),
        drive: pool.drive(&raw, false).spec,
    });
    let id = e.rt.run_sandbox(cfg).await.expect("pod starts");
    start_app(
        &e,
        &id,
        vec![
            vol_mount("/data", "vol0", None, false),
            vol_mount("/sub", "vol0", Some("a/b"), true),
            device_mount("/dev/xvdb", "vol1"),
        ],
    )
    .await;
    let (out, err, code) = sh(
        &e,
        &id,
        "app",
        "echo hi > /data/a/b/f && cat /sub/f && stat -c %g /data/a && df -k /data | tail -1 && \
         echo raw-bytes | dd of=/dev/xvdb bs=512 seek=2 conv=sync 2>/dev/null && sync && \
         blockdev --getsize64 /dev/xvdb",
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("hi\n"), "subPath: {out}");
    assert!(out.contains("3000"), "fsGroup: {out}");
    assert!(out.contains(&(8u64 << 20).to_string()), "{out}");
    let size_k = df_size_kib(&out);
    assert!(size_k > 40_000, "ext4 grown to the 48 MiB disk: {out}");
    let (_, err, code) = sh(&e, &id, "app", "touch /sub/x").await;
    assert_ne!(code, Some(0), "subPath mounted read-only: {err}");
    let data = std::fs::read(pool.path(&raw)).unwrap();
    assert_eq!(&data[1024..1033], b"raw-bytes");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(&pool.dir().display().to_string()));

    // More than eight virtio-mmio devices: refused before QEMU starts.
    let mut cfg = sandbox(&e, "toomany");
    for i in 0..7 {
        cfg.volumes.push(VolumeDisk {
            serial: format!("vol{i}"),
            drive: pool.drive(&raw, true).spec,
        });
    }
    let err = e.rt.run_sandbox(cfg).await.unwrap_err().to_string();
    assert!(err.contains("virtio-mmio"), "{err}");
    e.rt.remove_sandbox(&id, true).await.unwrap();
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1];
    (v[0], v[v.len() / 2], p99)
}

/// A one-node Ceph cluster for the benchmark (`crates/volumes/tests/ceph-up.sh`), stopped on
/// drop.
struct Ceph {
    dir: PathBuf,
}

impl Ceph {
    fn start() -> Result<Ceph, String> {
        let dir = tempfile::Builder::new()
            .prefix("h8s-ceph-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let out = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../volumes/tests/ceph-up.sh"
            ))
            .arg(&dir)
            .arg(port.to_string())
            .output()
            .map_err(|e| e.to_string())?;
        let c = Ceph { dir };
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(c)
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../volumes/tests/ceph-down.sh"
            ))
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(ops, secs)` from h8s-iobench's `ops=N secs=S`.
fn iobench_result(out: &str) -> Option<(f64, f64)> {
    let mut ops = None;
    let mut secs = None;
    for w in out.split_whitespace() {
        if let Some(v) = w.strip_prefix("ops=") {
            ops = v.parse().ok();
        } else if let Some(v) = w.strip_prefix("secs=") {
            secs = v.parse().ok();
        }
    }
    Some((ops?, secs?))
}

/// Runs h8s-iobench on the host; `(ops, secs)`.
fn host_iobench(file: &str, mode: &str, bs: usize, ops: u64) -> (f64, f64) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_h8s-iobench"))
        .args([file, mode, &bs.to_string(), &ops.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "h8s-iobench {file} {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iobench_result(&String::from_utf8_lossy(&out.stdout)).expect("h8s-iobench output")
}

/// `rbd bench` (librbd, the library QEMU's rbd driver uses) on the host, one request in flight
/// like h8s-iobench; `(ops, secs)`.
fn host_rbd_bench(
    conf: &Path,
    image: &str,
    io: &str,
    pattern: &str,
    bs: usize,
    ops: u64,
) -> (f64, f64) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new("rbd")
        .arg("-c")
        .arg(conf)
        .args([
            "bench",
            "--io-type",
            io,
            "--io-pattern",
            pattern,
            "--io-size",
            &bs.to_string(),
            "--io-threads",
            "1",
            "--io-total",
            &(bs as u64 * ops).to_string(),
            image,
        ])
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "rbd bench {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "elapsed: 2   ops: 2048   ops/sec: 917.5   bytes/sec: ..." — prefer rbd's own timing.
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .rev()
        .find(|l| l.contains("ops/sec:"))
        .and_then(|l| l.split("ops/sec:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    match rate {
        Some(r) if r > 0.0 => (ops as f64, ops as f64 / r),
        _ => (ops as f64, secs),
    }
}

/// One measured figure per side: ops/s (IOPS) or MiB/s.
struct Figures {
    vm: Vec<f64>,
    host: Vec<f64>,
}

/// Attach + mount cost and volume I/O (local and, when Ceph starts, rbd), printed for
/// BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p h8s-runtime --test volume_vm -- --ignored --nocapture"]
async fn bench_volumes() {
    let e = env();
    let pool = Local::new(e._tmp.path().join("vols"), "n", None).unwrap();
    let v = VolumeId::new("bench").unwrap();
    pool.create(&v, 256 << 20, Some(Filesystem::Ext4)).unwrap();
    let ceph = match std::env::var("H8S_BENCH_RBD").as_deref() {
        Ok("0") => None,
        _ => match Ceph::start() {
            Ok(c) => Some(c),
            Err(err) => {
                println!("BENCH rbd skipped: Ceph did not start: {err}");
                None
            }
        },
    };
    let rbd = ceph
        .as_ref()
        .map(|c| h8s_volumes::rbd::Rbd::new("h8s", c.conf(), "admin"));
    if let Some(r) = &rbd {
        r.create(&v, 256 << 20, Some(Filesystem::Ext4)).unwrap();
    }
    let drive = |kind: &str| match kind {
        "local" => pool.drive(&v, false).spec,
        _ => rbd.as_ref().unwrap().drive(&v, false).spec,
    };
    let mut kinds = vec!["none", "local"];
    if rbd.is_some() {
        kinds.push("rbd");
    }
    let rounds: usize = std::env::var("H8S_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut boot: Vec<Vec<f64>> = vec![vec![]; kinds.len()];
    let mut mnt: Vec<Vec<f64>> = vec![vec![]; kinds.len()];
    for r in 0..rounds {
        for (k, kind) in kinds.iter().enumerate() {
            let mut cfg = sandbox(&e, &format!("b{r}{k}"));
            if *kind != "none" {
                cfg.volumes.push(VolumeDisk {
                    serial: "vol0".into(),
                    drive: drive(kind),
                });
            }
            let t = std::time::Instant::now();
            let id = e.rt.run_sandbox(cfg).await.unwrap();
            boot[k].push(t.elapsed().as_secs_f64() * 1e3);
            let mut c = container("c", &["sleep", "600"]);
            if *kind != "none" {
                c.mounts = vec![vol_mount("/data", "vol0", None, false)];
            }
            let t = std::time::Instant::now();
            e.rt.start_pod_containers(&id, &[c]).await.unwrap();
            mnt[k].push(t.elapsed().as_secs_f64() * 1e3);
            e.rt.remove_sandbox(&id, true).await.unwrap();
        }
    }
    let mut med = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        let (a, b, c) = stats(&mut boot[k]);
        println!("BENCH boot (run_sandbox), volume {kind}: min {a:.0} ms, median {b:.0} ms, p99 {c:.0} ms");
        let (d, f, g) = stats(&mut mnt[k]);
        println!(
            "BENCH container start, volume {kind}: min {d:.0} ms, median {f:.0} ms, p99 {g:.0} ms"
        );
        med.push((b, f));
    }
    for k in 1..kinds.len() {
        let (db, dm) = (med[k].0 - med[0].0, med[k].1 - med[0].1);
        println!(
            "BENCH attach+mount added, {} (medians): {:.0} ms (boot {db:+.0}, start {dm:+.0}), {rounds} rounds",
            kinds[k],
            db + dm
        );
    }

    // I/O with the same program on both sides (h8s-iobench, O_DIRECT, one request in flight):
    // in the VM on a 64 MiB file of the volume's ext4, on the host the volume's backing file
    // (reads) and a 64 MiB scratch file beside it (writes; rbd: `rbd bench` on the image and a
    // scratch image).
    let reps: usize = std::env::var("H8S_BENCH_IO_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rand_ops: u64 = 1000;
    let seq_mib: u64 = 32;
    let scratch = pool.dir().join("host-scratch");
    std::fs::write(&scratch, vec![0u8; 64 << 20]).unwrap();
    let scratch = scratch.display().to_string();
    let backing = pool.path(&v).display().to_string();
    if let Some(r) = &rbd {
        r.create(&VolumeId::new("scratch").unwrap(), 64 << 20, None)
            .unwrap();
    }
    for kind in kinds.iter().skip(1) {
        let mut cfg = sandbox(&e, &format!("io-{kind}"));
        cfg.volumes.push(VolumeDisk {
            serial: "vol0".into(),
            drive: drive(kind),
        });
        let id = e.rt.run_sandbox(cfg).await.unwrap();
        let mut c = container("c", &["sleep", "3600"]);
        c.mounts = vec![vol_mount("/data", "vol0", None, false)];
        e.rt.start_pod_containers(&id, &[c]).await.unwrap();
        let (o, err, code) = sh(
            &e,
            &id,
            "c",
            "dd if=/dev/zero of=/data/f bs=1M count=64 2>/dev/null && sync && echo ok",
        )
        .await;
        assert_eq!(code, Some(0), "{o}{err}");
        let guest = |mode: &'static str, bs: usize, ops: u64| {
            let e = &e;
            let id = id.clone();
            async move {
                let (o, err, code) = sh(
                    e,
                    &id,
                    "c",
                    &format!("h8s-iobench /data/f {mode} {bs} {ops}"),
                )
                .await;
                assert_eq!(code, Some(0), "guest h8s-iobench {mode}: {o}{err}");
                iobench_result(&o).expect("h8s-iobench output")
            }
        };
        let conf = ceph.as_ref().map(|c| c.conf());
        let host = |mode: &str, bs: usize, ops: u64| -> (f64, f64) {
            let write = mode.ends_with("write");
            match (*kind, &conf) {
                ("rbd", Some(conf)) => {
                    let image = if write { "h8s/scratch" } else { "h8s/bench" };
                    let pattern = if mode.starts_with("rand") {
                        "rand"
                    } else {
                        "seq"
                    };
                    let io = if write { "write" } else { "read" };
                    host_rbd_bench(conf, image, io, pattern, bs, ops)
                }
                _ => host_iobench(if write { &scratch } else { &backing }, mode, bs, ops),
            }
        };
        let tests: [(&str, &'static str, usize, u64); 4] = [
            ("seq write 1 MiB (MiB/s)", "seqwrite", 1 << 20, seq_mib),
            ("seq read 1 MiB (MiB/s)", "seqread", 1 << 20, seq_mib),
            ("4 KiB random write (IOPS)", "randwrite", 4096, rand_ops),
            ("4 KiB random read (IOPS)", "randread", 4096, rand_ops),
        ];
        let mut figs: Vec<Figures> = tests
            .iter()
            .map(|_| Figures {
                vm: vec![],
                host: vec![],
            })
            .collect();
        for rep in 0..reps {
            for (i, (_, mode, bs, ops)) in tests.iter().enumerate() {
                // Which side goes first alternates, so both see the same load.
                let per = |(n, s): (f64, f64)| {
                    if *bs == 4096 {
                        n / s
                    } else {
                        n * (*bs as f64) / s / (1 << 20) as f64
                    }
                };
                if rep % 2 == 0 {
                    figs[i].vm.push(per(guest(mode, *bs, *ops).await));
                    figs[i].host.push(per(host(mode, *bs, *ops)));
                } else {
                    figs[i].host.push(per(host(mode, *bs, *ops)));
                    figs[i].vm.push(per(guest(mode, *bs, *ops).await));
                }
            }
        }
        for (i, (name, ..)) in tests.iter().enumerate() {
            let (a0, a1, a2) = stats(&mut figs[i].vm);
            let (b0, b1, b2) = stats(&mut figs[i].host);
            println!(
                "BENCH io {kind} {name}, {reps} reps: VM min {a0:.1} median {a1:.1} max {a2:.1}; host min {b0:.1} median {b1:.1} max {b2:.1}; VM/host median ratio {:.3}",
                a1 / b1
            );
        }
        // The pod cgroup's peak memory (cgroup v1 memory controller, if the jail made one).
        let rec: serde_json::Value =
            std::fs::read_to_string(e.rt.root().join("pods").join(&id).join("pod.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
        for cg in rec["jail"]["cgroups"].as_array().into_iter().flatten() {
            if cg["controller"] == "memory" {
                let dir = Path::new(cg["path"].as_str().unwrap_or_default());
                let peak = ["memory.max_usage_in_bytes", "memory.peak"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if let Some(peak) = peak {
                    println!(
                        "BENCH io {kind}: pod cgroup peak memory {} MiB ({})",
                        peak >> 20,
                        cg["limit"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        e.rt.remove_sandbox(&id, true).await.unwrap();
    }
}

/// A pod restored from a VM template binds its own volume disks, so the guest sees each one's
/// real size (the template's placeholders were other, smaller files), while its image disk
/// stays bound across the save (the placeholder's capacity) and reads the pod's own image,
/// none of the placeholder's blocks the template's guest had cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
async fn a_template_clone_binds_its_own_volumes() {
    let _ = NEEDS;
    let e = env_with_templates(true);
    let pool = Local::new(e._tmp.path().join("vols"), "n", None).unwrap();
    // A pod with an ext4 volume of `fs_mib` and a raw one of `raw_mib`, both new.
    let with_volumes = |name: &str, fs_mib: u64, raw_mib: u64| {
        let fsv = VolumeId::new(&format!("{name}-fs")).unwrap();
        let raw = VolumeId::new(&format!("{name}-raw")).unwrap();
        pool.create(&fsv, fs_mib << 20, Some(Filesystem::Ext4))
            .unwrap();
        pool.create(&raw, raw_mib << 20, None).unwrap();
        let mut cfg = sandbox(&e, name);
        cfg.volumes.push(VolumeDisk {
            serial: "vol0".into(),
            drive: pool.drive(&fsv, false).spec,
        });
        cfg.volumes.push(VolumeDisk {
            serial: "vol1".into(),
            drive: pool.drive(&raw, false).spec,
        });
        cfg
    };
    // No template yet: this pod boots cold and starts the build of its shape's template.
    let first =
        e.rt.run_sandbox(with_volumes("first", 32, 8))
            .await
            .unwrap();
    e.rt.remove_sandbox(&first, true).await.unwrap();
    let templates = e._tmp.path().join("state").join("templates");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let ready = std::fs::read_dir(&templates)
            .map(|d| d.flatten().any(|t| t.path().join("ready").is_file()))
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no template after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let id =
        e.rt.run_sandbox(with_volumes("clone", 48, 12))
            .await
            .unwrap();
    let st = e.rt.sandbox_status(&id).await.unwrap();
    assert_eq!(st.boot.as_deref(), Some("template"), "{st:?}");
    start_app(
        &e,
        &id,
        vec![
            vol_mount("/data", "vol0", None, false),
            device_mount("/dev/xvdb", "vol1"),
        ],
    )
    .await;
    let (out, err, code) = sh(
        &e,
        &id,
        "app",
        "blockdev --getsize64 /dev/xvdb && df -k /data | tail -1 && echo hi > /data/f && \
         cat /data/f && ls /bin/busybox",
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        (12u64 << 20).to_string(),
        "the raw volume's real size: {out}"
    );
    let size_k = df_size_kib(&out);
    assert!(
        size_k > 40_000,
        "the 48 MiB ext4 volume, not the placeholder: {out}"
    );
    assert_eq!(&lines[2..], ["hi", "/bin/busybox"], "{out}");
    e.rt.remove_sandbox(&id, true).await.unwrap();
}
