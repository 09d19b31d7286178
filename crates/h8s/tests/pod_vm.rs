//! `h8s run/exec/ps/logs/stop/rm` against real pod VMs (QEMU + the guest kernel, initramfs
//! and agent from `scripts/setup`). Every test takes a host-wide lock so only one test VM
//! boots at a time (2 cores), and kills whatever it left running, by PID, when it ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn guest_files() -> [PathBuf; 2] {
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"));
    [
        cache.join("guest/vmlinuz"),
        cache.join("guest/initramfs.img"),
    ]
}

struct Env {
    tmp: tempfile::TempDir,
    image: PathBuf,
    _lock: h8s_runtime::testing::VmTestLock,
}

fn env() -> Env {
    for f in guest_files() {
        assert!(
            f.is_file(),
            "needs the guest kernel and initramfs ({}): run scripts/setup",
            f.display()
        );
    }
    let lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let tmp = tempfile::Builder::new()
        .prefix("h8s-pod")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let image = busybox_erofs(tmp.path());
    Env {
        tmp,
        image,
        _lock: lock,
    }
}

fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("needs busybox-static");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let img = dir.join("busybox.erofs");
    let ok = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&img)
        .arg(&root)
        .status()
        .expect("needs erofs-utils")
        .success();
    assert!(ok);
    img
}

impl Env {
    fn root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn h8s(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_h8s"));
        c.env("H8S_ROOT", self.root())
            .env("H8S_BOOT_TIMEOUT", "120")
            .env("H8S_LOG", "warn")
            // Cold boots unless a test turns templates on (a template build is a whole boot
            // in the background, per state root); no warm clones unless a test asks.
            .env("H8S_TEMPLATES", "0")
            .env("H8S_WARM_POOL", "0");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        logged(self.h8s(), args)
    }
    /// `h8s ARGS` with VM templates on.
    fn run_with_templates(&self, args: &[&str]) -> Output {
        let mut c = self.h8s();
        c.env("H8S_TEMPLATES", "1");
        logged(c, args)
    }
    fn img(&self) -> &str {
        self.image.to_str().unwrap()
    }
    fn pods(&self) -> serde_json::Value {
        let out = self.run(&["ps", "-a", "--json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }
    /// Nothing of ours left: no pod directory, socket or VM.
    fn assert_clean(&self) {
        let pods = self.root().join("pods");
        let left: Vec<_> = std::fs::read_dir(&pods)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(our_processes(&self.root()).is_empty(), "processes left");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in our_processes(&self.root()) {
            // SAFETY: kill(2) on a PID whose command line names our private state root.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Processes (supervisors, QEMU) whose command line names `root`.
fn our_processes(root: &Path) -> Vec<u32> {
    let root = root.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(&root) {
            out.push(pid);
        }
    }
    out
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn run_rm_prints_the_guest_kernel_and_passes_exit_codes() {
    let e = env();
    let out = e.run(&["run", "--rm", e.img(), "--", "uname", "-r"]);
    assert_eq!(out.status.code(), Some(0));
    let guest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!guest.is_empty());
    assert_ne!(guest, host_release(), "uname -r must show the guest kernel");

    let out = e.run(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi there",
        e.img(),
        "--",
        "sh",
        "-c",
        "echo $GREETING; echo to-stderr >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    e.assert_clean();
}

/// Waits until the template builder has a ready VM template under the state root.
fn wait_template_ready(e: &Env) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = std::fs::read_dir(e.root().join("templates"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path())
            .find(|p| p.join("ready").is_file());
        if let Some(t) = ready {
            return t;
        }
        for d in std::fs::read_dir(e.root().join("templates"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let failed = d.path().join("failed");
            assert!(
                !failed.exists(),
                "template build failed: {}\n{}",
                std::fs::read_to_string(&failed).unwrap_or_default(),
                std::fs::read_to_string(d.path().join("build.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no VM template after 300 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The busybox image again with `/etc/marker` ("second image").
fn second_image(e: &Env) -> PathBuf {
    let root = e.tmp.path().join("rootfs");
    std::fs::write(root.join("etc/marker"), "second image\n").unwrap();
    let second = e.tmp.path().join("second.erofs");
    let made = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&second)
        .arg(&root)
        .status()
        .unwrap();
    assert!(made.success());
    second
}

/// Waits until `n` warm clones wait for pods (`<root>/pool/<shape>/<id>`, the record ready).
fn wait_warm_clones(e: &Env, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready: Vec<String> = std::fs::read_dir(e.root().join("pool"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|shape| {
                std::fs::read_dir(shape.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|m| m.file_name().to_string_lossy().into_owned())
            .filter(|id| {
                std::fs::read(e.root().join("pods").join(id).join("pod.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|r| r["state"] == "ready")
            })
            .collect();
        if ready.len() >= n {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "{n} warm clones not ready after 300 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Inside pod `pod`: 32 bytes of `/dev/urandom` (returned, as hex), the clock (within 5 s of
/// the host's) and `file`, which must exist (the pod's own image).
fn random_bytes_and_clock(e: &Env, pod: &str, file: &str) -> String {
    let script = format!("head -c 32 /dev/urandom | od -An -tx1; date +%s; ls {file}");
    let out = e.run(&["exec", pod, "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some(file), "the pod's own image");
    let guest_now: u64 = lines.pop().unwrap().trim().parse().unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest_now.abs_diff(host_now) <= 5,
        "guest clock corrected: guest {guest_now}, host {host_now}"
    );
    lines.join(" ")
}

fn pod_status(e: &Env, name: &str) -> serde_json::Value {
    e.pods()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["config"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no pod {name}"))
}

#[test]
fn pods_restored_from_a_template_share_no_random_state_and_cold_is_one_flag_away() {
    let e = env();
    // No template yet: this pod boots cold and starts the template's build.
    let out = e.run_with_templates(&["run", "--rm", e.img(), "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    let t = wait_template_ready(&e);
    let state = std::fs::metadata(t.join("state")).unwrap().len();
    assert!(
        state > 0 && state < 4 << 20,
        "device state only: {state} bytes"
    );

    // Two clones, each with its own disk backend: the image's files are there. clone-b's
    // image is another one (the guest keeps image disks bound across the template's save:
    // each clone must read its own image's blocks).
    let second = second_image(&e);
    for (n, img) in [("clone-a", e.img()), ("clone-b", second.to_str().unwrap())] {
        let out = e.run_with_templates(&["run", "-d", "--name", n, img, "--", "sleep", "600"]);
        assert_eq!(out.status.code(), Some(0));
    }
    let out = e.run(&["exec", "clone-b", "--", "cat", "/etc/marker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second image\n");
    let out = e.run(&["exec", "clone-a", "--", "ls", "/etc/marker"]);
    assert_ne!(out.status.code(), Some(0), "clone-a has the first image");
    let mut ids = Vec::new();
    let mut randoms = Vec::new();
    for n in ["clone-a", "clone-b"] {
        let st = pod_status(&e, n);
        assert_eq!(st["boot"], "template", "{st}");
        ids.push(st["guest_agent_id"].as_str().unwrap().to_string());
        randoms.push(random_bytes_and_clock(&e, n, "/bin/busybox"));
    }
    assert_ne!(ids[0], ids[1], "agent ids of two clones");
    assert!(!ids[0].is_empty());
    assert_ne!(randoms[0], randoms[1], "/dev/urandom of two clones");

    // Rotation without cold boots: with 3 uses per template, the third pod starts its
    // successor's build; the fourth retires the first template and restores the successor.
    let rotating = |args: &[&str]| {
        let mut c = e.h8s();
        c.env("H8S_TEMPLATES", "1")
            .env("H8S_TEMPLATE_MAX_USES", "3");
        logged(c, args)
    };
    assert!(rotating(&["run", "--rm", e.img(), "--", "true"])
        .status
        .success());
    let first = t.file_name().unwrap().to_string_lossy().into_owned();
    let successor = e.root().join("templates").join(format!("{first}-b"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !successor.join("ready").is_file() {
        assert!(
            !successor.join("failed").exists(),
            "the successor's build failed"
        );
        assert!(
            Instant::now() < deadline,
            "no successor template after 300 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = rotating(&[
        "run",
        "-d",
        "--name",
        "clone-c",
        e.img(),
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let st = pod_status(&e, "clone-c");
    assert_eq!(st["boot"], "template", "{st}");
    assert_eq!(
        std::fs::read_to_string(successor.join("uses"))
            .unwrap()
            .trim(),
        "1",
        "restored from the successor"
    );
    assert!(!t.exists(), "the first template is retired");

    // --cold: booted, not restored.
    let out = e.run_with_templates(&[
        "run",
        "-d",
        "--cold",
        "--name",
        "cold",
        e.img(),
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(pod_status(&e, "cold")["boot"], "cold");
    let out = e.run(&["rm", "-f", "clone-a", "clone-b", "clone-c", "cold"]);
    assert!(out.status.success());
}

/// Warm clones (docs/runtime.md): once a shape's template serves pods, two clones wait
/// restored and warmed up; pods take them with their own images (the warm-up image is gone
/// from their disks and caches), each with its own random state, agent id and clock; the pool
/// refills; `h8s ps` lists no clone.
#[test]
fn pods_take_warm_clones_with_their_own_image_and_random_state() {
    let e = env();
    let warm = |args: &[&str]| {
        let mut c = e.h8s();
        c.env("H8S_TEMPLATES", "1").env("H8S_WARM_POOL", "2");
        logged(c, args)
    };
    // Cold (builds the template), then restored (starts the warm clones).
    assert!(warm(&["run", "--rm", e.img(), "--", "true"])
        .status
        .success());
    wait_template_ready(&e);
    assert!(warm(&["run", "--rm", e.img(), "--", "true"])
        .status
        .success());
    let clones = wait_warm_clones(&e, 2);
    let second = second_image(&e);
    for (n, img) in [("warm-a", e.img()), ("warm-b", second.to_str().unwrap())] {
        let out = warm(&["run", "-d", "--name", n, img, "--", "sleep", "600"]);
        assert_eq!(out.status.code(), Some(0));
    }
    let ps = e.pods();
    let names: Vec<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["config"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["warm-a", "warm-b"],
        "h8s ps lists pods, not waiting clones"
    );
    let mut ids = Vec::new();
    let mut randoms = Vec::new();
    for n in ["warm-a", "warm-b"] {
        let st = pod_status(&e, n);
        assert_eq!(st["boot"], "warm clone", "{st}");
        assert!(
            clones.contains(&st["id"].as_str().unwrap().to_string()),
            "{st}"
        );
        ids.push(st["guest_agent_id"].as_str().unwrap().to_string());
        // `vi` is in the busybox image, not in the warm-up image (sh, true, echo).
        randoms.push(random_bytes_and_clock(&e, n, "/bin/vi"));
    }
    let out = e.run(&["exec", "warm-b", "--", "cat", "/etc/marker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second image\n");
    let out = e.run(&["exec", "warm-a", "--", "ls", "/etc/marker"]);
    assert_ne!(out.status.code(), Some(0), "warm-a has the first image");
    assert_ne!(ids[0], ids[1], "agent ids of two warm clones");
    assert_ne!(randoms[0], randoms[1], "/dev/urandom of two warm clones");
    // Two taken, two new ones.
    let refilled = wait_warm_clones(&e, 2);
    assert!(
        refilled.iter().all(|id| !clones.contains(id)),
        "{refilled:?}"
    );
    let out = e.run(&["rm", "-f", "warm-a", "warm-b"]);
    assert!(out.status.success());
}

/// Memory a template clone's guest frees goes back to the host: the balloon reports it, QEMU
/// drops the clone's own copies, and its seccomp filter keeps it from punching holes into the
/// template's memory (which the seals refuse: QEMU would log a failed discard and keep the
/// pages).
#[test]
fn memory_a_clone_frees_goes_back_to_the_host() {
    use h8s_runtime::testing::rss_mib;
    let e = env();
    assert!(e
        .run_with_templates(&["run", "--rm", e.img(), "--", "true"])
        .status
        .success());
    wait_template_ready(&e);
    let out = e.run_with_templates(&["run", "-d", "--name", "big", e.img(), "--", "sleep", "600"]);
    assert_eq!(out.status.code(), Some(0));
    let st = pod_status(&e, "big");
    assert_eq!(st["boot"], "template", "{st}");
    let qemu = st["qemu_pid"].as_u64().unwrap() as u32;
    // 100 MiB into the container's writable layer (guest memory), then removed.
    let out = e.run(&[
        "exec",
        "big",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=100 2>&1",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let full = rss_mib(qemu);
    assert!(e.run(&["exec", "big", "--", "rm", "/big"]).status.success());
    // The guest reports free 2 MiB blocks after ~2 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rss_mib(qemu) + 64 > full {
        assert!(
            Instant::now() < deadline,
            "QEMU still holds {} MiB after the guest freed 100 MiB (at {full} MiB before)",
            rss_mib(qemu)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = e
        .root()
        .join("pods")
        .join(st["id"].as_str().unwrap())
        .join("qemu.log");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("fallocate"), "no failed discard: {log}");
    // The template still starts pods.
    let out = e.run_with_templates(&["run", "--rm", e.img(), "--", "ls", "/bin/busybox"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin/busybox\n");
    assert!(e.run(&["rm", "-f", "big"]).status.success());
}

#[test]
fn failed_starts_exit_like_docker_and_leave_nothing() {
    let e = env();
    let out = e.run(&["run", "--rm", e.img(), "--", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    e.assert_clean();

    let out = e.run(&["run", "--rm", "/no/such/image.erofs", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    e.assert_clean();

    // A VM that cannot boot in time (its guest never answers): the supervisor kills it and
    // everything goes.
    let out = e
        .h8s()
        .env("H8S_BOOT_TIMEOUT", "1")
        .env(
            "H8S_GUEST_CMDLINE",
            h8s_runtime::testing::NEVER_BOOTS_CMDLINE,
        )
        .args(["run", "--rm", e.img(), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not boot"));
    e.assert_clean();
}

#[test]
fn detached_pod_exec_logs_stop_rm() {
    let e = env();
    let out = e.run(&[
        "run",
        "-d",
        "--name",
        "web",
        e.img(),
        "--",
        "sh",
        "-c",
        "echo started; echo warn >&2; while true; do sleep 1; done",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 12);

    let pods = e.pods();
    assert_eq!(pods[0]["state"], "ready");
    assert!(pods[0]["accel"].is_string());
    let ps = e.run(&["ps"]);
    assert!(String::from_utf8_lossy(&ps.stdout).contains("web"));

    // exec: output, exit code, stdin.
    let out = e.run(&["exec", "web", "--", "sh", "-c", "uname -r; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), host_release());
    let mut child = e
        .h8s()
        .args(["exec", "-i", &id[..6], "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the vm\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "THROUGH THE VM\n");
    let out = e.run(&["exec", "web", "--", "/no/such/thing"]);
    assert_eq!(out.status.code(), Some(127));

    // A terminal exec (stdin not a terminal here: the guest still allocates one).
    let out = e.run(&["exec", "-t", "web", "--", "tty"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"));

    // Logs, in the CRI file format underneath.
    let out = e.run(&["logs", "web"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    let log = std::fs::read_to_string(e.root().join("pods").join(&id).join("logs/web.log"))
        .unwrap_or_else(|_| {
            let name = e.pods()[0]["containers"][0]["config"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            std::fs::read_to_string(
                e.root()
                    .join("pods")
                    .join(&id)
                    .join(format!("logs/{name}.log")),
            )
            .unwrap()
        });
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F started")),
        "{log}"
    );

    // Stop: the VM goes, the record stays (ps -a), rm removes it.
    let out = e.run(&["stop", "-t", "1", "web"]);
    assert!(out.status.success());
    let pods = e.pods();
    assert_eq!(pods[0]["state"], "stopped");
    assert!(pods[0]["qemu_pid"].is_null());
    assert!(our_processes(&e.root()).is_empty());
    let out = e.run(&["ps"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("web"));
    let out = e.run(&["rm", "web"]);
    assert!(out.status.success());
    e.assert_clean();
}

#[test]
fn interactive_terminal_session_and_follow_logs() {
    let e = env();
    // `script` gives h8s a real terminal: raw mode, window size, a shell in the guest.
    let cmd = format!(
        "{} run -it --rm {} -- sh",
        env!("CARGO_BIN_EXE_h8s"),
        e.img()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("H8S_ROOT", e.root())
        .env("H8S_BOOT_TIMEOUT", "120")
        // Cold, like `Env::h8s`: a template build would leave its holder running.
        .env("H8S_TEMPLATES", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Give the VM time to boot before typing (typed input before the shell runs is fine too:
    // the terminal buffers it, but keep it realistic).
    std::thread::sleep(Duration::from_secs(5));
    stdin
        .write_all(b"echo \"kernel:$(uname -r)\"; exit 3\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("kernel:"), "{text}");
    assert!(!text.contains(&format!("kernel:{}", host_release())));
    e.assert_clean();

    // logs -f follows until the container exits.
    let out = e.run(&[
        "run",
        "-d",
        "--name",
        "ticker",
        e.img(),
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
    ]);
    assert!(out.status.success());
    let out = e.run(&["logs", "-f", "ticker"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tick 1\ntick 2\ntick 3\n"
    );
    let pods = e.pods();
    assert_eq!(pods[0]["containers"][0]["exit_code"], 0);
    e.run(&["rm", "-f", "ticker"]);
    e.assert_clean();
}

#[test]
fn a_restarted_supervisor_finds_the_running_vm_again() {
    let e = env();
    let out = e.run(&["run", "-d", "--name", "keep", e.img(), "--", "sleep", "600"]);
    assert!(out.status.success());
    let pods = e.pods();
    let shim = pods[0]["shim_pid"].as_u64().unwrap() as i32;
    let qemu = pods[0]["qemu_pid"].as_u64().unwrap();
    // `h8s` supervises with the standalone `h8s-pod-shim` beside it (the workspace build makes
    // it; scripts/test builds the workspace), the first supervisor and the adopting one.
    let standalone =
        Path::new(env!("CARGO_BIN_EXE_h8s")).with_file_name(h8s_runtime::ShimCommand::STANDALONE);
    let check_exe = |pid: i64| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if standalone.is_file() {
            assert_eq!(exe, standalone, "the supervisor is the standalone binary");
        } else {
            eprintln!(
                "no {} (build the workspace): not checking the supervisor's binary",
                standalone.display()
            );
        }
    };
    check_exe(shim as i64);
    // SAFETY: kill(2) on the supervisor PID this test's pod reported.
    unsafe {
        libc::kill(shim, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(300));
    // `ps` notices the dead supervisor with a live VM and starts a new one that reattaches.
    let pods = e.pods();
    assert_eq!(pods[0]["state"], "ready", "{pods}");
    assert_eq!(pods[0]["qemu_pid"].as_u64(), Some(qemu), "same VM");
    assert_ne!(pods[0]["shim_pid"].as_i64(), Some(shim as i64));
    check_exe(pods[0]["shim_pid"].as_i64().unwrap());
    let out = e.run(&["exec", "keep", "--", "echo", "still here"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    let out = e.run(&["rm", "-f", "keep"]);
    assert!(out.status.success());
    e.assert_clean();
}

/// Host links whose names start like the fabric's pod taps.
fn taps() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("h8t"))
        .collect()
}

/// `h8s` with this test's own network fabric state (node name, fabric dir, no egress NAT).
fn net_run(e: &Env, templates: bool, args: &[&str]) -> Output {
    let mut c = e.h8s();
    c.env("H8S_NET_DIR", e.tmp.path().join("net"))
        .env("H8S_NODE_NAME", format!("podvm{}", std::process::id()))
        .env("H8S_NET_EGRESS", "false")
        .env("H8S_TEMPLATES", if templates { "1" } else { "0" });
    logged(c, args)
}

/// Runs `h8s ARGS` as prepared in `c` (no stdin) and prints what it said, for failures.
fn logged(mut c: Command, args: &[&str]) -> Output {
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    eprintln!(
        "h8s {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Resets the test's fabric (bridges, taps, rules) when dropped.
struct NetReset<'a>(&'a dyn Fn(&[&str]) -> Output);
impl Drop for NetReset<'_> {
    fn drop(&mut self) {
        let _ = (self.0)(&["net", "reset", "--yes"]);
    }
}

/// Creates the test's Network `name` (tenant t1) with a VNI of its own.
fn net_create(net: &dyn Fn(&[&str]) -> Output, name: &str, subnet: &str, vni_base: u32) {
    let vni = (vni_base + std::process::id() % 1_000_000).to_string();
    let out = net(&[
        "net", "create", name, "--tenant", "t1", "--subnet", subnet, "--vni", &vni,
    ]);
    assert!(out.status.success());
}

#[test]
fn networked_pods_get_their_address_and_failed_starts_release_the_tap() {
    let e = env();
    let net = |args: &[&str]| net_run(&e, false, args);
    let _reset = NetReset(&net);
    net_create(&net, "podnet", "10.202.0.0/24", 2_000_000);
    let before = taps();

    // A start that fails after the tap was made: exit 127, and the tap and address are gone.
    let out = net(&[
        "run",
        "--rm",
        "--network",
        "podnet",
        "--name",
        "nf",
        e.img(),
        "--",
        "/no/such",
    ]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(taps(), before, "tap left behind");
    let inspect = net(&["net", "inspect", "podnet"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["attachments"].as_array().map(|a| a.len()), Some(0), "{v}");
    e.assert_clean();

    // A working one: the guest's eth0 has the fabric's address.
    let out = net(&[
        "run",
        "--rm",
        "--network",
        "podnet",
        "--name",
        "nok",
        e.img(),
        "--",
        "ip",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.202.0."));
    assert_eq!(taps(), before, "tap left behind after --rm");
    e.assert_clean();
}

#[test]
fn networked_pods_restored_from_a_template_take_their_own_address_and_reach_each_other() {
    let e = env();
    let net = |args: &[&str]| net_run(&e, true, args);
    let _reset = NetReset(&net);
    net_create(&net, "tplnet", "10.203.0.0/24", 3_000_000);
    let before = taps();
    // The first networked pod boots cold and starts the build of its shape's template.
    let out = net(&["run", "--rm", "--network", "tplnet", e.img(), "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    wait_template_ready(&e);
    let mut seen = Vec::new();
    for n in ["tpl-a", "tpl-b"] {
        let out = net(&[
            "run",
            "-d",
            "--network",
            "tplnet",
            "--name",
            n,
            e.img(),
            "--",
            "sleep",
            "600",
        ]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(pod_status(&e, n)["boot"], "template");
        let out = net(&[
            "exec",
            n,
            "--",
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0",
        ]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mac = text.lines().next().unwrap_or_default().trim().to_string();
        let ip = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("10.203.0."))
            .and_then(|w| w.split('/').next())
            .map(|o| format!("10.203.0.{o}"))
            .unwrap_or_else(|| panic!("{n} has no fabric address: {text}"));
        seen.push((mac, ip));
    }
    // Each clone took its pod's MAC and address after the restore (not the template's).
    assert_ne!(seen[0].0, seen[1].0, "MACs: {seen:?}");
    assert_ne!(seen[0].1, seen[1].1, "addresses: {seen:?}");
    // And the fabric carries them: a restored pod reaches the other one.
    let out = net(&[
        "exec", "tpl-a", "--", "ping", "-c", "2", "-W", "5", &seen[1].1,
    ]);
    assert_eq!(out.status.code(), Some(0), "tpl-a → tpl-b over the Network");
    let out = net(&["rm", "-f", "tpl-a", "tpl-b"]);
    assert!(out.status.success());
    assert_eq!(taps(), before, "tap left behind");
}
