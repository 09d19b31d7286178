//! Test support: real etcd members on loopback, started and stopped by PID.
//!
//! Used by this crate's tests, benchmarks and by the `h8s` binary's integration tests.
//! Nothing here is mocked: each member is Debian's `/usr/bin/etcd` (package
//! `etcd-server`) with its own data dir under the system temp dir, removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$H8S_ETCD` or `etcd` on `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("H8S_ETCD") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// A free TCP port on 127.0.0.1 for a test server. Taken below Linux's default ephemeral
/// range (32768–60999): a port the OS picked for `bind(0)` is free again once the probe closes
/// it, and the next outgoing connection of a parallel test (an etcd client, a health probe)
/// may take it as its local port before the server binds it. Ports here are handed out once
/// per process, from a start that differs between processes, and checked free by binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 97) * 120;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a port on loopback")
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// One or more etcd members forming a cluster on loopback.
pub struct EtcdCluster {
    root: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    extra: Vec<String>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> std::io::Result<EtcdCluster> {
        Self::start_with(n, &[])
    }

    /// [`EtcdCluster::start`] with extra etcd flags (e.g. TLS).
    pub fn start_with(n: usize, extra: &[&str]) -> std::io::Result<EtcdCluster> {
        let root =
            std::env::temp_dir().join(format!("h8s-etcd-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&root)?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: root.join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            root,
            members,
            initial_cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i, "new")?;
        }
        c.wait_healthy(Duration::from_secs(30))?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize, state: &str) -> std::io::Result<()> {
        let bin = etcd_binary().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "etcd not found (install Debian's etcd-server)",
            )
        })?;
        let tls = self.extra.iter().any(|a| a.starts_with("--cert-file"));
        let scheme = if tls { "https" } else { "http" };
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.data_dir.with_extension("log"))?;
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(bin)
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=h8s-test")
            .arg("--max-request-bytes=10485760")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        m.child = Some(child);
        Ok(())
    }

    /// `HOST:PORT` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A `--store` URL for this cluster with a key prefix.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}{prefix}", self.endpoints().join(","))
    }

    /// The PID of member `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILLs member `i` (by its PID) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a killed member on its old data dir.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.spawn(i, "existing")
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        let tls = self.extra.iter().any(|a| a.starts_with("--cert-file"));
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                if health(m.client_port, tls) {
                    break;
                }
                if Instant::now() > deadline {
                    // The log is removed with the cluster: its end goes into the error.
                    let log = m.data_dir.with_extension("log");
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(5).collect();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "etcd member {} (client port {}) not healthy; {}: …{}",
                            m.name,
                            m.client_port,
                            log.display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The directory holding the members' data dirs and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// etcd's `/health` over plain HTTP (TLS members are probed by a TCP connect only).
fn health(port: u16, tls: bool) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    if tls {
        // A TLS listener cannot be asked over plain HTTP; accepting connections is enough
        // (clients retry until a leader is elected).
        return true;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
