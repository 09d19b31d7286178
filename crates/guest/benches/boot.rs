//! Guest boot timing under QEMU microvm (run: `cargo bench -p h8s-guest --bench boot`).
//!
//! Interleaves, per round:
//! - bare: kernel + initramfs booted with `h8s.marker=1`: launch → marker on the console, and
//!   → QEMU exit (the agent prints the marker as its first act and powers off);
//! - agent: the normal boot: launch → `Hello` on the agent port, → a container's first process
//!   started (`Started` for `uname -r` from a busybox erofs image), and `Shutdown` → QEMU exit.
//!
//! Env: `H8S_BENCH_RUNS` (default 10), `H8S_BENCH_INITRAMFS` (another initramfs to time, e.g. a
//! gzip one). Prints min / median / p99 (the max below 100 runs) in milliseconds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{busybox_image, launch, qemu_command, Client, Guest};
use h8s_guest::{
    BlockDevice, ContainerSpec, ProcessId, ProcessSpec, Reply, Request, WritableLayer,
};

fn stats(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "{name:<34} n={:<3} min {:>6.0}  median {:>6.0}  p99 {:>6.0} ms",
        v.len(),
        v[0],
        p(0.5),
        p(0.99)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("H8S_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut g = Guest::from_cache();
    if let Some(i) = std::env::var_os("H8S_BENCH_INITRAMFS") {
        g.initramfs = i.into();
    }
    let dir = tempfile::tempdir().unwrap();
    let img = busybox_image(dir.path());
    let sock = dir.path().join("agent.sock");
    println!(
        "guest {} initramfs {} ({} KiB), {runs} rounds, load avg {}",
        g.release,
        g.initramfs.display(),
        std::fs::metadata(&g.initramfs).unwrap().len() / 1024,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let (mut marker, mut bare_exit, mut guest_uptime) = (vec![], vec![], vec![]);
    let (mut hello, mut started, mut agent_exit, mut hello_uptime) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        // Bare boot to the marker.
        let mut q = launch(qemu_command(&g, &sock, None, &[], "h8s.marker=1"), &sock);
        let out = BufReader::new(q.child.stdout.take().unwrap());
        let mut seen = None;
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("H8S-GUEST-MARKER uptime_ms=").nth(1) {
                seen = Some(q.started.elapsed());
                guest_uptime.push(rest.trim().parse::<f64>().unwrap_or(f64::NAN));
                break;
            }
        }
        marker.push(ms(seen.expect("no marker on the console")));
        q.wait_exit(Duration::from_secs(60))
            .expect("bare VM did not exit");
        bare_exit.push(ms(q.started.elapsed()));
        let _ = std::fs::remove_file(&sock);

        // Agent boot, first container process, shutdown.
        let mut q = launch(
            qemu_command(&g, &sock, None, &[(img.clone(), "busybox")], ""),
            &sock,
        );
        let mut c = Client::connect(&mut q, Duration::from_secs(90));
        let h = c.hello();
        hello.push(ms(q.started.elapsed()));
        hello_uptime.push(h.boot_time_ms as f64);
        c.call(Request::CreateContainer(ContainerSpec {
            id: "c".into(),
            rootfs: BlockDevice::Serial("busybox".into()),
            writable: WritableLayer::Default,
            process: ProcessSpec {
                args: vec!["uname".into(), "-r".into()],
                env: vec![],
                working_dir: None,
                user: None,
                tty: false,
                stdin: false,
                tty_size: None,
            },
            process_id: ProcessId(1),
            hostname: None,
            mounts: vec![],
            read_only_root: false,
        }))
        .unwrap();
        let r = c.call(Request::StartContainer {
            container: "c".into(),
        });
        assert!(matches!(r, Ok(Reply::Started { .. })), "{r:?}");
        started.push(ms(q.started.elapsed()));
        c.wait_exit(ProcessId(1));
        let t = Instant::now();
        c.call(Request::Shutdown).unwrap();
        q.wait_exit(Duration::from_secs(60))
            .expect("VM did not power off");
        agent_exit.push(ms(t.elapsed()));
        let _ = std::fs::remove_file(&sock);
    }
    stats("bare: launch → marker", marker);
    stats("bare: guest uptime at marker", guest_uptime);
    stats("bare: launch → qemu exit", bare_exit);
    stats("agent: launch → Hello", hello);
    stats("agent: guest uptime at Hello", hello_uptime);
    stats("agent: launch → container started", started);
    stats("agent: Shutdown → qemu exit", agent_exit);
}
