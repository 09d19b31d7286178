//! The pod runtime benchmark (run by `bench/runtime/run.sh`): pod start latency beside a bare
//! QEMU boot of the same kernel and initramfs, exec round trips, and host memory per idle pod.
//! Prints one block of the `runtime` section of BENCHMARKS.md; with `--write FILE` replaces
//! the block named by `--block` (default `cloud`) inside that section, adding it before the
//! section's end the first time, so runs for different guest kernels keep each other's figures.
//!
//! Usage: bench_runtime --shim PATH [--runs N] [--write BENCHMARKS.md] [--block NAME]
//!
//! `--exec-pod ID --root DIR [--container NAME] [--exec-runs N]`: only the exec round trips,
//! in a pod another run started (`bench/runtime/templates.sh`: a pod from a warm clone), read
//! from the runtime state in DIR; prints the two table rows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use h8s_runtime::{
    ContainerConfig, ExecConfig, ImageDisk, Runtime, RuntimeConfig, SandboxConfig, ShimCommand,
    StreamEvent, VmSettings,
};

const MEMORY_MIB: u32 = 128;

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (v[0], p(0.5), p(0.99))
}

fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for a in ["sh", "true", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let img = dir.join("busybox.erofs");
    assert!(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&img)
        .arg(&root)
        .status()
        .expect("erofs-utils")
        .success());
    img
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

/// Boots the kernel + initramfs with the guest agent's bench mode (print a marker, power off)
/// on the same QEMU machine, accelerator and memory as a pod; seconds to the marker.
fn bare_boot(vm: &VmSettings, accel: h8s_runtime::Accel) -> f64 {
    let accel_args: Vec<String> = match accel {
        h8s_runtime::Accel::Tcg => vec![
            "-accel".into(),
            format!("tcg,thread=multi,tb-size={}", vm.tcg_tb_size_mib),
            "-cpu".into(),
            "max".into(),
        ],
        h8s_runtime::Accel::Kvm => vec![
            "-accel".into(),
            "kvm".into(),
            "-cpu".into(),
            "host,-arch-capabilities".into(),
        ],
    };
    let khz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|m| m.trim().parse::<f64>().ok())
        })
        .map(|m| format!(" tsc_early_khz={}", (m * 1000.0) as u64))
        .unwrap_or_default();
    let t0 = Instant::now();
    let mut child = Command::new(&vm.qemu)
        .args(["-machine", "microvm,rtc=on,acpi=on"])
        .args(&accel_args)
        .args(["-smp", "1", "-m", &format!("{MEMORY_MIB}M")])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&vm.kernel)
        .arg("-initrd")
        .arg(&vm.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 quiet loglevel=4{khz} h8s.marker=1 h8s.poweroff=reboot"
        ))
        .args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    let out = child.stdout.take().unwrap();
    let mut secs = f64::NAN;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if line.contains("H8S-GUEST-MARKER") {
            secs = t0.elapsed().as_secs_f64();
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(secs.is_finite(), "bare boot printed no marker");
    secs
}

/// PSS and RSS in KiB of one process.
fn pss_rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

/// The exec rows of the table: the round trip, the host baseline, their ratio.
fn exec_rows(exec: &mut [f64], host: &mut [f64], error: Option<&str>) -> String {
    if let Some(e) = error.or(exec.is_empty().then_some("no runs")) {
        return format!("| exec round trip | not measured: exec failed ({e}) | | | |");
    }
    let (emin, emed, e99) = stats(exec);
    let (hmin, hmed, h99) = stats(host);
    format!(
        "| exec round trip (`Runtime::exec` of `true` → exit code back, through the pod supervisor) in an idle pod | {n} | {:.1} ms | **{:.1} ms** | {:.1} ms |\n\
| baseline: host `true` spawned and waited for (`std::process::Command`), alternating with the execs | {n} | {:.2} ms | {:.2} ms | {:.2} ms |",
        emin * 1e3,
        emed * 1e3,
        e99 * 1e3,
        hmin * 1e3,
        hmed * 1e3,
        h99 * 1e3,
        n = exec.len(),
    )
}

/// `exec true` in an idle pod until its exit code is back, `n` times, each right after a
/// host `true` spawned and waited for (the baseline: the same work without a VM). Seconds.
async fn measure_exec(
    rt: &Runtime,
    id: &str,
    container: &str,
    n: usize,
) -> (Vec<f64>, Vec<f64>, Option<String>) {
    let (mut exec, mut host) = (Vec::new(), Vec::new());
    // Warm-up: the first exec pages the agent's and busybox's code in.
    for i in 0..n + 3 {
        let t0 = Instant::now();
        let ok = Command::new("true").status().is_ok_and(|s| s.success());
        let h = t0.elapsed().as_secs_f64();
        assert!(ok, "host true failed");
        let t0 = Instant::now();
        let r = rt
            .exec(
                id,
                container,
                ExecConfig {
                    command: vec!["true".into()],
                    env: vec![],
                    tty: false,
                    stdin: false,
                    size: None,
                },
            )
            .await;
        let mut s = match r {
            Ok(s) => s,
            Err(e) => return (exec, host, Some(e.to_string())),
        };
        loop {
            match s.output.next().await {
                Ok(Some(StreamEvent::Exit(_))) | Ok(None) => break,
                Ok(_) => {}
                Err(e) => return (exec, host, Some(e.to_string())),
            }
        }
        let e = t0.elapsed().as_secs_f64();
        if i >= 3 {
            exec.push(e);
            host.push(h);
        }
    }
    (exec, host, None)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut shim, mut runs, mut write) = (None, 20usize, None);
    let (mut exec_runs, mut exec_only) = (100usize, false);
    let (mut root, mut exec_pod, mut exec_container) = (None, None, String::from("c"));
    let mut block = String::from("cloud");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shim" => shim = args.next().map(PathBuf::from),
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(20),
            "--write" => write = args.next().map(PathBuf::from),
            "--block" => block = args.next().expect("--block NAME"),
            "--exec-runs" => exec_runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(100),
            "--exec-only" => exec_only = true,
            "--root" => root = args.next().map(PathBuf::from),
            "--exec-pod" => exec_pod = args.next(),
            "--container" => exec_container = args.next().expect("--container NAME"),
            _ => panic!("unknown argument {a}"),
        }
    }
    let shim = shim.expect("--shim PATH");
    let tmp = tempfile::Builder::new()
        .prefix("h8s-bench")
        .tempdir_in("/tmp")
        .unwrap();
    let vm = VmSettings::from_env().unwrap();
    if let Some(pod) = exec_pod {
        let rt = Runtime::new(RuntimeConfig {
            images: None,
            root: root.expect("--exec-pod needs --root DIR"),
            vm,
            shim: ShimCommand {
                program: shim,
                args: vec![],
            },
        });
        let (mut exec, mut host, error) = measure_exec(&rt, &pod, &exec_container, exec_runs).await;
        println!("{}", exec_rows(&mut exec, &mut host, error.as_deref()));
        return;
    }
    let image = busybox_erofs(tmp.path());
    let (accel, why) = h8s_runtime::probe_accel(&vm);
    let rt = Runtime::new(RuntimeConfig {
        images: None,
        root: root.unwrap_or_else(|| tmp.path().join("state")),
        vm: vm.clone(),
        shim: ShimCommand {
            program: shim,
            args: vec![],
        },
    });
    let sandbox = |name: String| {
        let mut s = SandboxConfig::new(name);
        s.memory_mib = MEMORY_MIB;
        s.images.push(ImageDisk {
            name: "busybox".into(),
            path: image.clone(),
        });
        s
    };
    eprintln!("accelerator: {accel} ({why})");

    // 1. Start latency, alternating with bare boots so both see the same noise.
    let (mut pod, mut bare, mut guest_boot) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..if exec_only { 0 } else { runs } {
        bare.push(bare_boot(&vm, accel));
        let t0 = Instant::now();
        let id = rt.run_sandbox(sandbox(format!("b{i}"))).await.unwrap();
        rt.create_container(&id, container("c", &["true"]))
            .await
            .unwrap();
        rt.start_container(&id, "c").await.unwrap();
        pod.push(t0.elapsed().as_secs_f64());
        if let Some(ms) = rt.sandbox_status(&id).await.unwrap().guest_boot_ms {
            guest_boot.push(ms as f64 / 1000.0);
        }
        rt.stop_sandbox(&id, Duration::ZERO).await.unwrap();
        rt.remove_sandbox(&id, true).await.unwrap();
        eprintln!("run {i}: pod {:.3} s, bare {:.3} s", pod[i], bare[i]);
    }

    // 2. Exec round trips and 3. memory, in idle pods.
    let mut ids = Vec::new();
    for i in 0..if exec_only { 1 } else { 3 } {
        let id = rt.run_sandbox(sandbox(format!("idle{i}"))).await.unwrap();
        rt.create_container(&id, container("c", &["sleep", "100000"]))
            .await
            .unwrap();
        rt.start_container(&id, "c").await.unwrap();
        ids.push(id);
    }
    let (mut exec, mut host, exec_error) = measure_exec(&rt, &ids[0], "c", exec_runs).await;
    let exec_row = exec_rows(&mut exec, &mut host, exec_error.as_deref());
    if exec_only {
        for id in &ids {
            rt.stop_sandbox(id, Duration::ZERO).await.unwrap();
            rt.remove_sandbox(id, true).await.unwrap();
        }
        println!("{exec_row}");
        return;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut mem = Vec::new();
    for id in &ids {
        let st = rt.sandbox_status(id).await.unwrap();
        if st.qemu_pid.is_none() || st.shim_pid.is_none() {
            eprintln!("pod {id} is not running: {:?}", st.reason);
            continue;
        }
        let (qp, qr) = pss_rss(st.qemu_pid.unwrap());
        let (sp, sr) = pss_rss(st.shim_pid.unwrap());
        mem.push((qp, qr, sp, sr));
    }
    for id in &ids {
        rt.stop_sandbox(id, Duration::ZERO).await.unwrap();
        rt.remove_sandbox(id, true).await.unwrap();
    }

    // Paired ratios (each pod start over the bare boot right before it) resist the drift of
    // a shared machine better than a ratio of medians.
    let mut paired: Vec<f64> = pod.iter().zip(&bare).map(|(p, b)| p / b).collect();
    let (qmin, qmed, q99) = stats(&mut paired);
    let (gmin, gmed, g99) = if guest_boot.is_empty() {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        stats(&mut guest_boot)
    };
    let (pmin, pmed, p99) = stats(&mut pod);
    let (bmin, bmed, b99) = stats(&mut bare);
    let mib = |k: u64| k as f64 / 1024.0;
    type Sample = (u64, u64, u64, u64);
    let avg = |f: &dyn Fn(&Sample) -> u64| mem.iter().map(f).sum::<u64>() / mem.len() as u64;
    let (qp, qr, sp, sr) = (avg(&|m| m.0), avg(&|m| m.1), avg(&|m| m.2), avg(&|m| m.3));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = h8s_runtime::rfc3339_nano(std::time::SystemTime::now());
    let section = format!(
        "Measured {date_short} by `bench/runtime/run.sh` (release build), accelerator **{accel}** ({why}),\n\
{cpus} host cores shared with other work; guest: `{kernel}` + `{initrd}`, {MEMORY_MIB} MiB, 1 vCPU, busybox erofs image.\n\
\n\
| {accel}: what | runs | min | median | p99 |\n\
|---|---|---|---|---|\n\
| pod start: `run_sandbox` → container's first process started in the guest (QEMU + agent hello + create + start, through the pod supervisor) | {runs} | {pmin:.3} s | {pmed:.3} s | {p99:.3} s |\n\
| baseline: bare `qemu-system-x86_64`, same kernel + initramfs + machine, to the agent's boot marker | {runs} | {bmin:.3} s | {bmed:.3} s | {b99:.3} s |\n\
| ratio of the medians above | | | {rmed:.2}× | |\n\
| **paired ratio pod / bare** (each pod start over the bare boot just before it) | {runs} | {qmin:.2}× | **{qmed:.2}×** | {q99:.2}× |\n\
| guest's own boot time at agent ready (`CLOCK_BOOTTIME`, from the agent's hello) | {ng} | {gmin:.3} s | {gmed:.3} s | {g99:.3} s |\n\
{exec_row}\n\
\n\
Host memory per idle pod (average of {npods} idle pods, each running `sleep`; PSS from `/proc/PID/smaps_rollup`, \n\
measured 10 s after start): QEMU PSS **{qp:.1} MiB** (RSS {qr:.1} MiB), pod supervisor PSS **{sp:.1} MiB** (RSS {sr:.1} MiB); \n\
**total {tot:.1} MiB per pod** (goal ≤ 48 MiB). TCG translation cache is capped at {tb} MiB (`tb-size`).\n\
\n\
Method: pod and bare boots alternate in one run so both see the same machine noise. The bare boot\n\
uses the guest agent's bench mode (`h8s.marker=1`: print a marker on the serial console, power\n\
off); the pod start ends when the guest agent answers `StartContainer`.",
        date_short = date.get(..16).unwrap_or(&date).replace('T', " "),
        kernel = vm.kernel.display(),
        initrd = vm.initramfs.display(),
        rmed = pmed / bmed,
        ng = guest_boot.len(),
        qp = mib(qp),
        qr = mib(qr),
        sp = mib(sp),
        sr = mib(sr),
        tot = mib(qp + sp),
        tb = vm.tcg_tb_size_mib,
        npods = mem.len(),
    );
    println!("{section}");
    if let Some(path) = write {
        let text = std::fs::read_to_string(&path).unwrap();
        let (b, e) = (
            format!("<!-- bench:runtime:{block}:begin -->"),
            format!("<!-- bench:runtime:{block}:end -->"),
        );
        let new = match (text.find(&b), text.find(&e)) {
            (Some(i), Some(j)) => format!("{}{b}\n{section}\n{}", &text[..i], &text[j..]),
            _ => {
                let end = "<!-- bench:runtime:end -->";
                let Some(j) = text.find(end) else {
                    panic!("no runtime section in {}", path.display());
                };
                format!("{}{b}\n{section}\n{e}\n{}", &text[..j], &text[j..])
            }
        };
        std::fs::write(&path, new).unwrap();
        eprintln!("wrote the {block} block of {}", path.display());
    }
}
