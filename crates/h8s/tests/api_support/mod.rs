//! Shared harness of the API integration tests: starts the real `h8s server` binary on
//! a free port with a temporary data dir, drives it with real kubectl binaries and curl,
//! and kills it (by PID) when dropped, also when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The kubectl binary of a minor version (`"1.33"`).
pub fn kubectl_bin(ver: &str) -> PathBuf {
    let p = Path::new(KUBECTL_DIR).join(format!("kubectl.{ver}"));
    assert!(
        p.exists(),
        "{} is missing: install the `kubectl` Debian package (google-cloud-sdk) that ships kubectl.1.27…1.33",
        p.display()
    );
    p
}

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub token: String,
    pub ready_in: Duration,
}

impl Server {
    pub fn start() -> Server {
        Self::start_in(tempfile::tempdir().expect("tempdir"))
    }

    /// Starts on an existing data dir (to test restarts).
    pub fn start_in(dir: tempfile::TempDir) -> Server {
        Self::start_with(dir, &[])
    }

    /// Starts on `dir` with extra `h8s server` flags.
    #[allow(dead_code)]
    pub fn start_with(dir: tempfile::TempDir, extra: &[&std::ffi::OsStr]) -> Server {
        Self::start_listen(dir, "127.0.0.1:0", extra)
    }

    /// Starts on `dir`, listening on `listen` (`IP:0` picks a free port), with extra flags.
    pub fn start_listen(
        dir: tempfile::TempDir,
        listen: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Server {
        let t0 = Instant::now();
        let data = dir.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(&data)
            // API tests need no node agent (no pod VMs booting behind them).
            .arg("--disable-agent")
            .args(extra)
            .env("H8S_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning h8s server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("h8s server did not become ready in 20 s");
            }
        };
        let ready_in = t0.elapsed();
        let mut parts = line.split_whitespace();
        assert_eq!(
            parts.next(),
            Some("ready"),
            "unexpected first line: {line:?}"
        );
        let url = parts.next().expect("url").to_string();
        let kubeconfig = PathBuf::from(parts.next().expect("kubeconfig path"));
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        Server {
            child,
            dir,
            url,
            kubeconfig,
            token,
            ready_in,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server and gives back its data dir.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn kill(&mut self) {
        // SIGTERM by PID, then wait; SIGKILL if it lingers.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A kubectl command of `ver` with this server's kubeconfig and its own cache dir.
    pub fn kubectl_cmd(&self, ver: &str) -> Command {
        let mut c = Command::new(kubectl_bin(ver));
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-{ver}")))
            .env_remove("KUBECONFIG");
        c
    }

    /// Runs kubectl; returns the output whatever the exit status.
    pub fn kubectl_out(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.kubectl_cmd(ver);
        c.args(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning kubectl");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("writing stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and expects success; returns stdout.
    pub fn kubectl(&self, ver: &str, args: &[&str]) -> String {
        self.kubectl_stdin(ver, args, None)
    }

    pub fn kubectl_stdin(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl_out(ver, args, stdin);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            o.status.success(),
            "kubectl {ver} {args:?} failed ({}):\nstdout: {out}\nstderr: {err}",
            o.status
        );
        out
    }

    /// Runs kubectl and expects failure; returns stderr.
    pub fn kubectl_fails(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.kubectl_out(ver, args, stdin);
        assert!(
            !o.status.success(),
            "kubectl {ver} {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    }

    /// One HTTPS request with curl: returns (status code, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        self.curl_with(method, path, content_type, body, Some(&self.token.clone()))
    }

    pub fn curl_with(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> (u16, String) {
        let ca = self.data_dir().join("ca.crt");
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--cacert",
        ])
        .arg(&ca)
        .arg(format!("{}{}", self.url, path));
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(ct) = content_type {
            c.args(["-H", &format!("Content-Type: {ct}")]);
        }
        let tmp;
        if let Some(b) = body {
            tmp = tempfile::NamedTempFile::new_in(self.dir.path()).expect("tmp");
            std::fs::write(tmp.path(), b).expect("write body");
            c.arg("--data-binary")
                .arg(format!("@{}", tmp.path().display()));
            if content_type.is_none() {
                // curl would add a form Content-Type; send none, as the Python client.
                c.args(["-H", "Content-Type:"]);
            }
        }
        let o = c.output().expect("running curl");
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
