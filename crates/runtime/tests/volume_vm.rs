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

/// Holds the cross-binary VM lock for one test.
struct VmLock(#[allow(dead_code)] std::fs::File);

fn vm_lock() -> VmLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/h8s-vm-tests.lock")
        .expect("lock file");
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid fd we own; blocks until the other VM test is done.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock");
    VmLock(f)
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
    let mut app = container("app", &["sleep", "600"]);
    app.mounts = vec![
        vol_mount("/data", "vol0", None, false),
        vol_mount("/sub", "vol0", Some("a/b"), true),
        h8s_guest::Mount {
            target: "/dev/xvdb".into(),
            source: h8s_guest::MountSource::Device {
                device: h8s_guest::BlockDevice::Serial("vol1".into()),
            },
            read_only: false,
        },
    ];
    e.rt.start_pod_containers(&id, &[app])
        .await
        .expect("starts");
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
    let size_k: u64 = out
        .lines()
        .find(|l| l.contains("/data") || l.starts_with("/dev/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
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

/// Seconds between the two `/proc/uptime` readings a guest command printed (10 ms steps).
fn guest_secs(out: &str) -> f64 {
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b, ..] => (b - a).max(0.01),
        _ => f64::NAN,
    }
}

/// Attach + mount cost and volume I/O, printed for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test -p h8s-runtime --test volume_vm -- --ignored --nocapture"]
async fn bench_volumes() {
    let e = env();
    let pool = Local::new(e._tmp.path().join("vols"), "n", None).unwrap();
    let v = VolumeId::new("bench").unwrap();
    pool.create(&v, 256 << 20, Some(Filesystem::Ext4)).unwrap();
    let rounds: usize = std::env::var("H8S_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (mut boot0, mut boot1, mut mnt0, mut mnt1) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        for with in [false, true] {
            let mut cfg = sandbox(&e, &format!("b{r}{}", with as u8));
            if with {
                cfg.volumes.push(VolumeDisk {
                    serial: "vol0".into(),
                    drive: pool.drive(&v, false).spec,
                });
            }
            let t = std::time::Instant::now();
            let id = e.rt.run_sandbox(cfg).await.unwrap();
            let boot = t.elapsed().as_secs_f64() * 1e3;
            let mut c = container("c", &["sleep", "600"]);
            if with {
                c.mounts = vec![vol_mount("/data", "vol0", None, false)];
            }
            let t = std::time::Instant::now();
            e.rt.start_pod_containers(&id, &[c]).await.unwrap();
            let start = t.elapsed().as_secs_f64() * 1e3;
            if with {
                boot1.push(boot);
                mnt1.push(start);
            } else {
                boot0.push(boot);
                mnt0.push(start);
            }
            e.rt.remove_sandbox(&id, true).await.unwrap();
        }
    }
    let show = |n: &str, v: &mut Vec<f64>| {
        let (a, b, c) = stats(v);
        println!("BENCH {n}: min {a:.0} ms, median {b:.0} ms, p99 {c:.0} ms");
        b
    };
    let b0 = show("boot (run_sandbox) without volume", &mut boot0);
    let b1 = show("boot (run_sandbox) with one volume disk", &mut boot1);
    let m0 = show("container start without mount", &mut mnt0);
    let m1 = show("container start with volume mount", &mut mnt1);
    println!(
        "BENCH attach+mount added (medians): {:.0} ms (boot {:+.0}, start {:+.0}), {rounds} rounds",
        (b1 - b0) + (m1 - m0),
        b1 - b0,
        m1 - m0
    );

    // I/O: the same 64 MiB in the VM (through ext4 on the disk) and on the host (the backing
    // file's filesystem), busybox dd both sides; 4 KiB direct I/O as the small-block figure.
    let mut cfg = sandbox(&e, "io");
    cfg.volumes.push(VolumeDisk {
        serial: "vol0".into(),
        drive: pool.drive(&v, false).spec,
    });
    let id = e.rt.run_sandbox(cfg).await.unwrap();
    let mut c = container("c", &["sleep", "600"]);
    c.mounts = vec![vol_mount("/data", "vol0", None, false)];
    e.rt.start_pod_containers(&id, &[c]).await.unwrap();
    // Each guest command is timed inside the VM with /proc/uptime around it.
    let guest = |cmd: &'static str| {
        let e = &e;
        let id = id.clone();
        async move {
            let timed = format!(
                "read a _ < /proc/uptime; {cmd} >/dev/null 2>&1; read b _ < /proc/uptime; echo $a $b"
            );
            let s =
                e.rt.exec(
                    &id,
                    "c",
                    ExecConfig {
                        command: vec!["sh".into(), "-c".into(), timed],
                        env: vec![],
                        tty: false,
                        stdin: false,
                        size: None,
                    },
                )
                .await
                .unwrap();
            let (o, _, _) = collect(s).await;
            guest_secs(&String::from_utf8_lossy(&o))
        }
    };
    // The host side reads the volume's own backing file; writes go to a file beside it.
    let backing = pool.path(&v).display().to_string();
    let scratch = pool.dir().join("host-scratch").display().to_string();
    let host = |args: &[&str]| {
        let t = std::time::Instant::now();
        let st = std::process::Command::new("dd")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dd {args:?}");
        t.elapsed().as_secs_f64()
    };
    let mib = |secs: f64, bytes: f64| bytes / secs / (1 << 20) as f64;
    let (mut gw, mut hw, mut gr, mut hr, mut g4w, mut h4w, mut g4r, mut h4r) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let big = 64.0 * (1 << 20) as f64;
    let small = 16.0 * (1 << 20) as f64;
    for _ in 0..3 {
        gw.push(mib(
            guest("dd if=/dev/zero of=/data/f bs=1M count=64 conv=fsync").await,
            big,
        ));
        hw.push(mib(
            host(&[
                "if=/dev/zero",
                &format!("of={scratch}"),
                "bs=1M",
                "count=64",
                "conv=fsync",
            ]),
            big,
        ));
        let _ = guest("sync; echo 3 > /proc/sys/vm/drop_caches").await;
        gr.push(mib(guest("dd if=/data/f of=/dev/null bs=1M").await, big));
        hr.push(mib(
            host(&[
                &format!("if={backing}"),
                "of=/dev/null",
                "bs=1M",
                "count=64",
                "iflag=direct",
            ]),
            big,
        ));
        g4w.push(mib(
            guest("dd if=/dev/zero of=/data/g bs=4k count=4096 oflag=direct").await,
            small,
        ));
        h4w.push(mib(
            host(&[
                "if=/dev/zero",
                &format!("of={scratch}"),
                "bs=4k",
                "count=4096",
                "oflag=direct",
            ]),
            small,
        ));
        g4r.push(mib(
            guest("dd if=/data/g of=/dev/null bs=4k iflag=direct").await,
            small,
        ));
        h4r.push(mib(
            host(&[
                &format!("if={backing}"),
                "of=/dev/null",
                "bs=4k",
                "count=4096",
                "iflag=direct",
            ]),
            small,
        ));
    }
    let med = |v: &mut Vec<f64>| stats(v).1;
    let iops = |m: f64| m * (1 << 20) as f64 / 4096.0;
    let (a, b) = (med(&mut gw), med(&mut hw));
    println!(
        "BENCH seq write 1 MiB + fsync (MiB/s, median of 3): VM {a:.1}, host {b:.1}, ratio {:.2}",
        a / b
    );
    let (a, b) = (med(&mut gr), med(&mut hr));
    println!(
        "BENCH seq read 1 MiB, cold (MiB/s): VM {a:.1}, host O_DIRECT {b:.1}, ratio {:.2}",
        a / b
    );
    let (a, b) = (med(&mut g4w), med(&mut h4w));
    println!(
        "BENCH 4 KiB O_DIRECT write (IOPS): VM {:.0}, host {:.0}, ratio {:.3}",
        iops(a),
        iops(b),
        a / b
    );
    let (a, b) = (med(&mut g4r), med(&mut h4r));
    println!(
        "BENCH 4 KiB O_DIRECT read (IOPS): VM {:.0}, host {:.0}, ratio {:.3}",
        iops(a),
        iops(b),
        a / b
    );
    e.rt.remove_sandbox(&id, true).await.unwrap();
}
