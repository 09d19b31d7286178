//! Two `h8s server`s on one etcd run one active controller manager and one active scheduler:
//! the first server's components hold the Leases, the second stands by, and it takes over
//! when the first is killed (no release: after the lease duration) — with shortened
//! leader-election timings.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use h8s_client::k8s_openapi::api::coordination::v1::Lease;
use h8s_client::kube::Api;
use h8s_client::{Connection, Credentials};
use h8s_store::testing::EtcdCluster;

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path, store: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_h8s"))
            .args(["server", "--listen", "127.0.0.1:0", "--disable-agent"])
            .args(["--leader-elect-lease-duration", "3s"])
            .args(["--leader-elect-renew-deadline", "2s"])
            .args(["--leader-elect-retry-period", "300ms"])
            .args(["--store", store, "--data-dir"])
            .arg(data)
            .env("H8S_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn h8s server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
            let mut sink = String::new();
            while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("h8s server not ready in 30 s");
            });
        let addr = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leases(addr: &str, data: &Path) -> Api<Lease> {
    let conn = Connection {
        server: addr.to_string(),
        ca_pem: std::fs::read(data.join("ca.crt")).unwrap(),
        credentials: Credentials::Token(
            std::fs::read_to_string(data.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
        ),
        user_agent: "control-multiserver-test".into(),
    };
    Api::namespaced(conn.client().unwrap(), "kube-system")
}

async fn holders(api: &Api<Lease>) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for name in ["kube-controller-manager", "kube-scheduler"] {
        out.push(
            api.get_opt(name)
                .await
                .unwrap()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_copy_of_each_component_and_a_takeover() {
    let etcd = EtcdCluster::start(1).expect("etcd-server");
    let url = etcd.url("/leader-election");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = Server::start(&data, &url);
    let via_a = leases(&a.addr, &data);
    let t0 = Instant::now();
    let first = loop {
        let h = holders(&via_a).await;
        if h.iter().all(Option::is_some) {
            break h;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "A's components lead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // B (same cluster, same PKI) stands by: the leases keep A's holder while A renews.
    let b = Server::start(&data, &url);
    let via_b = leases(&b.addr, &data);
    for _ in 0..20 {
        assert_eq!(
            holders(&via_b).await,
            first,
            "B does not take over a live leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A dies without releasing: after the lease duration, B's components lead.
    let killed = Instant::now();
    drop(a);
    let t0 = Instant::now();
    loop {
        let h = holders(&via_b).await;
        if h.iter().all(Option::is_some) && h.iter().zip(&first).all(|(n, o)| n != o) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "B takes over after A is killed: {h:?} (was {first:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "not before the lease could expire"
    );
    let l = via_b
        .get("kube-controller-manager")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert!(l.lease_transitions.unwrap_or(0) >= 1);
    drop(b);
}
