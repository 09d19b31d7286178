//! `h8s image …` end to end: the real binary against a temp store (`H8S_DATA_DIR`) and a
//! `docker-registry` on loopback with basic auth, started and killed by PID here.
//! Needs busybox-static, erofs-utils and docker-registry (scripts/setup).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hash = bcrypt::hash_with_result(password, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoA);
        std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {0}/data\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: x\n\
             auth:\n  htpasswd:\n    realm: t\n    path: {0}/htpasswd\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (scripts/setup installs it)");
        let mut r = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(r.child.try_wait().unwrap().is_none(), "registry exited");
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 8];
                if s.read(&mut buf).unwrap_or(0) > 0 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn h8s(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_h8s"))
        .args(args)
        .env("H8S_DATA_DIR", data)
        .env("H8S_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    c.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "h8s failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn import_ls_inspect_rootfs_push_pull_rm() {
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("busybox-oci");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new("bash")
        .arg(root.join("scripts/build-test-image.sh"))
        .arg(&layout)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let a = t.path().join("a");
    let out = ok(&h8s(
        &a,
        &["image", "import", layout.to_str().unwrap()],
        None,
    ));
    assert!(
        out.starts_with("docker.io/library/busybox:latest sha256:"),
        "{out}"
    );
    let id = out.split_whitespace().nth(1).unwrap().to_owned();

    let ls = ok(&h8s(&a, &["image", "ls"], None));
    assert!(ls.lines().next().unwrap().starts_with("REPOSITORY"));
    let row = ls.lines().nth(1).unwrap();
    assert!(
        row.starts_with("docker.io/library/busybox") && row.contains("latest"),
        "{ls}"
    );
    assert!(row.contains(&id[7..19]), "{ls}");
    assert_eq!(
        ok(&h8s(&a, &["image", "ls", "-q"], None)).trim(),
        &id[7..19]
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&h8s(&a, &["image", "inspect", "busybox"], None))).unwrap();
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(inspect["Config"]["Cmd"][0], "sh");

    let rootfs = ok(&h8s(&a, &["image", "rootfs", "busybox"], None));
    assert!(
        rootfs.trim().ends_with(".erofs") && Path::new(rootfs.trim()).is_file(),
        "{rootfs}"
    );

    // Through a registry with basic auth; the password from stdin.
    let reg = Registry::start("u", "p4ss");
    let target = format!("127.0.0.1:{}/cli/busybox:1", reg.port);
    let store = h8s_runtime::image::ImageStore::open(&a.join("images")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let creds = h8s_runtime::image::PullOptions {
        auth: Some(h8s_runtime::image::Credentials {
            username: "u".into(),
            password: "p4ss".into(),
        }),
        // The test registry is on loopback.
        allow_local_registries: true,
        ..Default::default()
    };
    rt.block_on(store.push("busybox", &target, &creds)).unwrap();

    let b = t.path().join("b");
    let denied = h8s(&b, &["image", "pull", &target], None);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("authentication"),
        "{denied:?}"
    );
    let pulled = h8s(
        &b,
        &["image", "pull", "-u", "u", "--password-stdin", &target],
        Some("p4ss\n"),
    );
    let out = ok(&pulled);
    assert_eq!(out.trim(), format!("{target} {id}"));
    let progress = String::from_utf8_lossy(&pulled.stderr);
    assert!(
        progress.contains("Pulling") && progress.contains("done"),
        "progress on stderr: {progress}"
    );

    let rm = ok(&h8s(&b, &["image", "rm", &target], None));
    assert!(
        rm.contains("Untagged:") && rm.contains(&format!("Deleted: {id}")),
        "{rm}"
    );
    assert_eq!(ok(&h8s(&b, &["image", "ls", "-q"], None)), "");
    let missing = h8s(&b, &["image", "rm", "busybox"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}
