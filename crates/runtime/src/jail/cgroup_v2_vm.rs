//! cgroup v2, for real: this host binds every controller to v1, so the v2 path runs inside
//! a throwaway VM. The host side builds an initramfs at run time from this very test
//! binary (as `/init`), the shared libraries it has mapped and the guest kernel's `loop`
//! module — nothing committed — and boots the project's guest kernel with it. As PID 1 the
//! binary runs [`guest_side`]: it mounts cgroup2, lets the runtime's cgroup code
//! ([`super::cgroup::create`]) make a pod's cgroup with memory, cpu, pids and io limits, reads
//! the files back and checks that each limit holds (an allocation over `memory.max` is
//! OOM-killed, forks stop at `pids.max`, a busy loop is throttled by `cpu.max`, direct writes
//! to a loop device take at least as long as `io.max` allows), and reports on the serial
//! console, which the host side reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{self, Limits};
use super::disk::DiskIo;

/// The guest side's name, as the test harness filters it.
const GUEST_TEST: &str = "jail::cgroup_v2_vm::guest_side";
/// The kernel passes unknown `key=value` parameters to init as environment variables.
const GUEST_ENV: &str = "H8S_CGROUP2_GUEST";

// ---- initramfs (cpio newc) ----

fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let ino = out.len() as u32 + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An initramfs with this binary as `/init`, its libraries at their paths (and the ELF
/// interpreter where the binary names it), `/dev/console` and `loop.ko`.
fn initramfs(loop_ko: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs: Vec<String> = ["dev", "proc", "sys", "tmp", "lib64"]
        .map(String::from)
        .to_vec();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut libs: Vec<PathBuf> = Vec::new();
    for l in maps.lines() {
        if let Some(p) = l.split_whitespace().nth(5) {
            let p = PathBuf::from(p);
            if p.to_string_lossy().contains(".so") && !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    for lib in &libs {
        let mut d = lib.parent();
        while let Some(x) = d.filter(|x| *x != Path::new("/")) {
            let s = x.to_string_lossy().trim_start_matches('/').to_string();
            if !dirs.contains(&s) {
                dirs.push(s);
            }
            d = x.parent();
        }
    }
    dirs.sort_by_key(|d| d.matches('/').count());
    for d in &dirs {
        cpio_entry(&mut out, d, 0o040755, (0, 0), &[]);
    }
    cpio_entry(&mut out, "dev/console", 0o020600, (5, 1), &[]);
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    cpio_entry(&mut out, "init", 0o100755, (0, 0), &exe);
    for lib in &libs {
        let data = std::fs::read(lib).unwrap();
        let name = lib.to_string_lossy().trim_start_matches('/').to_string();
        cpio_entry(&mut out, &name, 0o100755, (0, 0), &data);
        if name.contains("ld-linux-x86-64.so.2") {
            cpio_entry(
                &mut out,
                "lib64/ld-linux-x86-64.so.2",
                0o100755,
                (0, 0),
                &data,
            );
        }
    }
    cpio_entry(
        &mut out,
        "loop.ko",
        0o100644,
        (0, 0),
        &std::fs::read(loop_ko).unwrap(),
    );
    cpio_entry(&mut out, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// The guest kernel's `loop.ko` (unpacked beside the kernel by scripts/setup).
fn find_loop_ko(dir: &Path, depth: u32) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "loop.ko") {
            return Some(p);
        }
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(f) = find_loop_ko(&p, depth - 1) {
                return Some(f);
            }
        }
    }
    None
}

#[test]
#[cfg_attr(
    not(h8s_guest),
    ignore = "needs the guest kernel and initramfs in $H8S_CACHE/guest (scripts/setup)"
)]
fn cgroup_v2_limits_hold_inside_a_vm() {
    let settings = crate::VmSettings::from_env().unwrap();
    let cache = settings.kernel.parent().unwrap().to_path_buf();
    let loop_ko = find_loop_ko(&cache.join("kernel"), 8)
        .expect("the guest kernel's loop.ko under $H8S_CACHE/guest/kernel (scripts/setup)");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("initramfs.cpio");
    std::fs::write(&img, initramfs(&loop_ko)).unwrap();
    let console = tmp.path().join("console.log");
    // The VM tests' lock: one VM at a time on this machine.
    let lock = crate::testing::vm_test_lock().expect("VM test lock");
    let cmdline = format!(
        "{} rdinit=/init {GUEST_ENV}=1 -- {GUEST_TEST} --exact --ignored --nocapture \
         --test-threads=1",
        crate::vm::kernel_cmdline_for(&settings, crate::Accel::Tcg),
    );
    let mut qemu = std::process::Command::new(&settings.qemu)
        .args([
            "-machine",
            "microvm,rtc=on,acpi=on",
            "-accel",
            "tcg",
            "-cpu",
            "max",
        ])
        .args(["-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&settings.kernel)
        .arg("-initrd")
        .arg(&img)
        .args(["-append", &cmdline])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (scripts/setup)");
    let deadline = Instant::now() + Duration::from_secs(300);
    let exited = loop {
        if let Some(st) = qemu.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(lock);
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(exited.is_some(), "the VM did not power off in time:\n{log}");
    for want in [
        "cgroup2: memory.max=33554432",
        "cgroup2: cpu.max=10000 100000",
        "cgroup2: pids.max=8",
        "cgroup2: io.max=",
        "cgroup2: memory enforced",
        "cgroup2: pids enforced",
        "cgroup2: cpu enforced",
        "cgroup2: io enforced",
        "test result: ok. 1 passed",
    ] {
        assert!(
            log.contains(want),
            "{want:?} missing from the guest's console:\n{log}"
        );
    }
    for l in log.lines().filter(|l| l.starts_with("cgroup2: ")) {
        eprintln!("{l}");
    }
}

/// Says something on the console (the harness captures nothing: `--nocapture`).
fn say(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "cgroup2: {s}");
    let _ = o.flush();
}

fn mount(src: &str, target: &str, fstype: &str) {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (c(src), c(target), c(fstype));
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call, no data.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    assert_eq!(
        r,
        0,
        "mount {fstype} on {target}: {}",
        std::io::Error::last_os_error()
    );
}

/// Forks a child that joins the cgroup (its `cgroup.procs`, opened for writing) and runs
/// `f` (only system calls: no allocation after fork), exiting with its result.
fn in_child(procs: &std::fs::File, f: fn() -> i32) -> libc::c_int {
    use std::os::fd::AsRawFd;
    let fd = procs.as_raw_fd();
    // SAFETY: fork(2); the child only makes system calls and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: write(2) of a static buffer to an open descriptor; _exit never returns.
        unsafe {
            let zero = b"0";
            if libc::write(fd, zero.as_ptr().cast(), 1) != 1 {
                libc::_exit(100);
            }
            libc::_exit(f());
        }
    }
    let mut status = 0;
    // SAFETY: waitpid(2) on our child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// Touches 64 MiB (twice the limit): the OOM killer ends it.
fn eat_memory() -> i32 {
    let len = 64 << 20;
    // SAFETY: an anonymous private mapping we write within its length.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 101;
        }
        let b = p.cast::<u8>();
        let mut i = 0;
        while i < len {
            std::ptr::write_volatile(b.add(i), 1);
            i += 4096;
        }
    }
    0
}

/// Forks sleeping children until a fork fails; returns how many it made.
fn fork_many() -> i32 {
    let mut n = 0;
    while n < 50 {
        // SAFETY: fork(2); the grandchild only sleeps and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            break;
        }
        if pid == 0 {
            // SAFETY: sleep(3) and _exit(2) are async-signal-safe.
            unsafe {
                libc::sleep(30);
                libc::_exit(0);
            }
        }
        n += 1;
    }
    n
}

/// Spins for 500 ms of wall time.
fn spin() -> i32 {
    let t0 = Instant::now();
    let mut x = 0u64;
    while t0.elapsed() < Duration::from_millis(500) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    0
}

/// Writes 2 MiB to `/dev/loop0` with `O_DIRECT`; returns 0 on success.
fn write_loop() -> i32 {
    // SAFETY: open/write/close of a device node with an aligned anonymous buffer.
    unsafe {
        let fd = libc::open(c"/dev/loop0".as_ptr(), libc::O_WRONLY | libc::O_DIRECT);
        if fd < 0 {
            return 102;
        }
        let len = 256 << 10;
        let buf = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        for _ in 0..8 {
            if libc::write(fd, buf, len) != len as isize {
                return 103;
            }
        }
        libc::close(fd);
    }
    0
}

/// Loads `/loop.ko` (unless the kernel has loop built in: the minimal kernel has no module
/// support) and backs `/dev/loop0` by an 8 MiB file; its `major:minor`.
fn loop_device() -> (u32, u32) {
    use std::os::fd::AsRawFd;
    if !Path::new("/sys/module/loop").exists() && !Path::new("/dev/loop0").exists() {
        let ko = std::fs::File::open("/loop.ko").unwrap();
        // SAFETY: finit_module(2) with an open module file and empty parameters.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, ko.as_raw_fd(), c"".as_ptr(), 0) };
        assert_eq!(r, 0, "loading loop.ko: {}", std::io::Error::last_os_error());
    }
    let backing = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open("/tmp/backing")
        .unwrap();
    backing.set_len(8 << 20).unwrap();
    let t0 = Instant::now();
    let dev = loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop0")
        {
            Ok(d) => break d,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("/dev/loop0: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    const LOOP_SET_FD: libc::c_ulong = 0x4C00;
    // SAFETY: LOOP_SET_FD on the loop device with the backing file's descriptor.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    assert_eq!(r, 0, "LOOP_SET_FD: {}", std::io::Error::last_os_error());
    std::mem::forget(dev);
    std::mem::forget(backing);
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata("/dev/loop0").unwrap().rdev();
    (libc::major(rdev), libc::minor(rdev))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_string()
}

/// Runs as PID 1 in the VM of [`cgroup_v2_limits_hold_inside_a_vm`].
#[test]
#[ignore = "needs to run as PID 1 inside cgroup_v2_limits_hold_inside_a_vm's VM"]
fn guest_side() {
    // SAFETY: getpid(2) cannot fail.
    if std::env::var_os(GUEST_ENV).is_none() || unsafe { libc::getpid() } != 1 {
        eprintln!("not in the VM: nothing to do (cgroup_v2_limits_hold_inside_a_vm runs it)");
        return;
    }
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
    let (ma, mi) = loop_device();
    let hier = cgroup::host_hierarchies();
    assert!(
        hier.iter()
            .any(|h| h.version == 2 && h.controllers.len() == 4),
        "{hier:?}"
    );
    let mut l = Limits::for_pod(32, 1, 0).with_io(
        DiskIo {
            bps: 1 << 20,
            iops: 0,
        },
        vec![(ma, mi)],
    );
    // Tighter than a pod's, so the guest's one vCPU and a few forks show them.
    l.cpu_quota_us = 10_000;
    l.pids = 8;
    let cg = cgroup::create(&hier, "pod1", &l).unwrap();
    assert!(cg.not_enforced.is_empty(), "{:?}", cg.not_enforced);
    let mut ctrls: Vec<&str> = cg.enforced.iter().map(|e| e.controller.as_str()).collect();
    ctrls.sort();
    assert_eq!(ctrls, ["cpu", "io", "memory", "pids"]);
    assert!(cg.enforced.iter().all(|e| e.version == 2));
    let dir = cg.dirs[0].clone();
    assert_eq!(dir, Path::new("/sys/fs/cgroup/h8s/pod1"));
    for f in ["memory.max", "cpu.max", "pids.max", "io.max"] {
        say(&format!("{f}={}", read(&dir, f)));
    }
    assert_eq!(read(&dir, "memory.max"), (32u64 << 20).to_string());
    assert_eq!(read(&dir, "memory.swap.max"), "0");
    assert_eq!(read(&dir, "cpu.max"), "10000 100000");
    assert_eq!(read(&dir, "pids.max"), "8");
    assert_eq!(
        read(&dir, "io.max"),
        format!("{ma}:{mi} rbps=1048576 wbps=1048576 riops=max wiops=max")
    );
    let procs = &cg.procs[0];

    // memory.max: touching twice the limit is OOM-killed, and the runtime sees it.
    let st = in_child(procs, eat_memory);
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
        "status {st}"
    );
    assert!(
        cgroup::oom_killed(&cg.enforced),
        "{}",
        read(&dir, "memory.events")
    );
    say("memory enforced");

    // pids.max: the child and its forks number at most 8.
    let st = in_child(procs, fork_many);
    assert!(libc::WIFEXITED(st), "status {st}");
    let made = libc::WEXITSTATUS(st);
    assert!((1..8).contains(&made), "{made} forks under pids.max 8");
    say("pids enforced");

    // cpu.max: 10 ms per 100 ms; a 500 ms spin is throttled.
    let st = in_child(procs, spin);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "status {st}"
    );
    let stat = read(&dir, "cpu.stat");
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(throttled > 0, "{stat}");
    say("cpu enforced");

    // io.max: 2 MiB of direct writes at 1 MiB/s take about 2 s; a lower bound only.
    let t0 = Instant::now();
    let st = in_child(procs, write_loop);
    let took = t0.elapsed();
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "status {st}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "2 MiB written in {took:?}"
    );
    say(&format!("io enforced (2 MiB in {took:?})"));
}
