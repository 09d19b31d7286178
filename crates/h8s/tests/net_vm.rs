//! `h8s run --network`: pod VMs on Networks. Two VMs of one Network ping each other and talk
//! TCP; a VM of another tenant's Network on the same subnet reaches neither. Uses the real VM
//! runtime (QEMU + guest kernel + agent from `scripts/setup`); one VM test at a time host-wide.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn cache() -> PathBuf {
    std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
}

struct Env {
    tmp: tempfile::TempDir,
    image: PathBuf,
    node: String,
    _lock: h8s_runtime::testing::VmTestLock,
}

impl Env {
    fn new() -> Env {
        for f in ["guest/vmlinuz", "guest/initramfs.img"] {
            assert!(
                cache().join(f).is_file(),
                "needs {f} in the cache: run scripts/setup"
            );
        }
        let lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
        let tmp = tempfile::Builder::new()
            .prefix("h8s-netvm")
            .tempdir_in("/tmp")
            .unwrap();
        let image = busybox_erofs(tmp.path());
        Env {
            tmp,
            image,
            node: format!("netvm{}", std::process::id()),
            _lock: lock,
        }
    }

    fn h8s(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(args)
            .env("H8S_ROOT", self.tmp.path().join("pods"))
            .env("H8S_NET_DIR", self.tmp.path().join("net"))
            .env("H8S_NODE_NAME", &self.node)
            // The host's own forwarding stays as it is: these pods only talk to each other.
            .env("H8S_NET_EGRESS", "false")
            .env("H8S_BOOT_TIMEOUT", "120")
            .env("H8S_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "h8s {args:?} -> {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.h8s(args);
        assert!(o.status.success(), "h8s {args:?} failed");
        String::from_utf8(o.stdout).unwrap()
    }

    fn ip_of(&self, net: &str, pod: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["net", "inspect", net])).unwrap();
        v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["pod"] == pod)
            .unwrap_or_else(|| panic!("{pod} not attached to {net}"))["ip"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.h8s(&["rm", "-f", "a1", "a2", "b1"]);
        let _ = self.h8s(&["net", "reset", "--yes"]);
        // Whatever still names our private state (supervisors, QEMU), by PID.
        let root = self.tmp.path().to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&root) {
                // SAFETY: kill(2) on a PID whose command line names our private state root.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn busybox_erofs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "www"] {
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
    std::fs::write(root.join("www/index.html"), "hello from a2\n").unwrap();
    let img = dir.join("busybox.erofs");
    assert!(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&img)
        .arg(&root)
        .status()
        .expect("needs erofs-utils")
        .success());
    img
}

#[test]
fn pod_vms_on_one_network_talk_and_another_tenant_cannot_reach_them() {
    let e = Env::new();
    let vni = 1_000_000 + std::process::id() % 1_000_000;
    let (va, vb) = (vni.to_string(), (vni + 1).to_string());
    // Two tenants, the same subnet.
    e.ok(&[
        "net",
        "create",
        "neta",
        "--tenant",
        "tenant-a",
        "--subnet",
        "10.201.0.0/24",
        "--vni",
        &va,
    ]);
    e.ok(&[
        "net",
        "create",
        "netb",
        "--tenant",
        "tenant-b",
        "--subnet",
        "10.201.0.0/24",
        "--vni",
        &vb,
    ]);
    let img = e.image.to_str().unwrap();
    for (pod, net, cmd) in [
        ("a1", "neta", "while true; do sleep 1; done"),
        ("a2", "neta", "httpd -f -p 8080 -h /www"),
        ("b1", "netb", "while true; do sleep 1; done"),
    ] {
        e.ok(&[
            "run",
            "-d",
            "--name",
            pod,
            "--network",
            net,
            img,
            "--",
            "sh",
            "-c",
            cmd,
        ]);
    }
    let (a1, a2, b1) = (
        e.ip_of("neta", "a1"),
        e.ip_of("neta", "a2"),
        e.ip_of("netb", "b1"),
    );
    assert_eq!(b1, a1, "overlapping subnets hand out the same addresses");
    let ifc = e.ok(&["exec", "a1", "--", "ip", "addr"]);
    assert!(
        ifc.contains(&format!("{a1}/24")),
        "guest interface configured: {ifc}"
    );

    // Same Network: ICMP and TCP.
    e.ok(&["exec", "a1", "--", "ping", "-c", "2", "-W", "5", &a2]);
    let get = |from: &str, ip: &str| {
        // busybox nc: a TCP client that gives up after 4 s without a connection.
        e.h8s(&[
            "exec",
            from,
            "--",
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 4 nc {ip} 8080"),
        ])
    };
    let page = get("a1", &a2);
    assert!(
        page.status.success() && String::from_utf8_lossy(&page.stdout).contains("hello from a2"),
        "TCP a1 -> a2"
    );
    e.ok(&[
        "exec",
        "a2",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.201.0.1",
    ]);

    // Other tenant, same subnet, same node: nothing.
    let o = e.h8s(&["exec", "b1", "--", "ping", "-c", "2", "-W", "2", &a2]);
    assert!(!o.status.success(), "b1 must not reach a2");
    let o = get("b1", &a2);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("hello"),
        "b1 must not reach a2's server"
    );
    // b1's own gateway answers it.
    e.ok(&[
        "exec",
        "b1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.201.0.1",
    ]);

    // A VM that forges its source address gets nowhere; with its own address it still does.
    e.ok(&[
        "exec",
        "a1",
        "--",
        "ip",
        "addr",
        "add",
        "10.201.0.99/24",
        "dev",
        "eth0",
    ]);
    let o = e.h8s(&[
        "exec",
        "a1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "-I",
        "10.201.0.99",
        &a2,
    ]);
    assert!(!o.status.success(), "ping from a forged source must fail");
    e.ok(&[
        "exec", "a1", "--", "ping", "-c", "1", "-W", "5", "-I", &a1, &a2,
    ]);

    // Removing the pods and Networks removes their taps, bridges and gateways.
    let taps: Vec<String> = ["neta", "netb"]
        .iter()
        .flat_map(|n| {
            let v: serde_json::Value = serde_json::from_str(&e.ok(&["net", "inspect", n])).unwrap();
            v["attachments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["port"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(taps.len(), 3);
    e.ok(&["rm", "-f", "a1", "a2", "b1"]);
    e.ok(&["net", "rm", "neta"]);
    e.ok(&["net", "rm", "netb"]);
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for dev in taps
        .iter()
        .chain([format!("h8b{va}"), format!("h8b{vb}"), format!("h8x{va}")].iter())
    {
        assert!(!links.contains(&format!(": {dev}")), "{dev} left behind");
    }
    let ns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !ns.contains(&e.node),
        "gateway namespaces left behind: {ns}"
    );
}
