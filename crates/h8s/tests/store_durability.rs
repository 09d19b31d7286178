//! Durability through the real `h8s server`: concurrent ConfigMap creates and updates over
//! HTTPS while the server (and, on etcd, a member of a 3-member cluster) is SIGKILLed at
//! random moments. After each kill and restart, every write the API acknowledged (201/200)
//! is read back with its content, and the store passes `h8s store check`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use h8s_store::testing::EtcdCluster;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const H8S: &str = env!("CARGO_BIN_EXE_h8s");

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path, store: &str) -> Server {
        let mut child = Command::new(H8S)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--store",
                store,
                "--data-dir",
            ])
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
            .and_then(|u| u.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    /// SIGKILL, by PID.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/2 connection to the API server with the admin token.
#[derive(Clone)]
struct Api {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    token: String,
}

impl Api {
    async fn connect(addr: &str, data: &Path) -> Api {
        let ca = std::fs::read(data.join("ca.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let token = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Api { send, token }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let mut send = self.send.clone();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }
}

#[derive(Default)]
struct Ledger {
    acked: HashMap<String, String>,
    in_flight: HashMap<String, Vec<String>>,
    acks: usize,
}

/// Writer tasks: each creates its ConfigMaps and updates each twice with its
/// resourceVersion, until the connection dies.
async fn write_until_killed(api: Api, round: u64, ledger: Arc<Mutex<Ledger>>) {
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let api = api.clone();
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("cm-r{round}-t{t}-{n}");
                let mut rv = String::new();
                for version in 0..3 {
                    let v = format!("r{round}t{t}n{n}v{version}");
                    ledger
                        .lock()
                        .unwrap()
                        .in_flight
                        .entry(name.clone())
                        .or_default()
                        .push(v.clone());
                    let mut body = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": "dur"},
                        "data": {"v": v},
                    });
                    let r = if version == 0 {
                        api.call("POST", "/api/v1/namespaces/dur/configmaps", Some(body))
                            .await
                    } else {
                        body["metadata"]["resourceVersion"] = serde_json::json!(rv);
                        api.call(
                            "PUT",
                            &format!("/api/v1/namespaces/dur/configmaps/{name}"),
                            Some(body),
                        )
                        .await
                    };
                    match r {
                        Ok((200 | 201, obj)) => {
                            rv = obj["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            let mut l = ledger.lock().unwrap();
                            l.in_flight.remove(&name);
                            l.acked.insert(name.clone(), v);
                            l.acks += 1;
                        }
                        Ok((code, obj)) => panic!("{name}: unexpected {code}: {obj}"),
                        Err(_) => return, // the server is gone
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn verify(api: &Api, ledger: &Ledger) {
    let checks = ledger.acked.iter().map(|(name, v)| {
        let api = api.clone();
        let later = ledger.in_flight.get(name).cloned().unwrap_or_default();
        async move {
            let (code, obj) = api
                .call(
                    "GET",
                    &format!("/api/v1/namespaces/dur/configmaps/{name}"),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(code, 200, "acknowledged ConfigMap {name} lost: {obj}");
            let got = obj["data"]["v"].as_str().unwrap_or_default().to_owned();
            assert!(
                got == *v || later.contains(&got),
                "{name}: acknowledged {v:?}, server has {got:?}"
            );
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

fn rng() -> impl FnMut(u64) -> u64 {
    let mut s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random seed {s}");
    move |n| {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

async fn run(store: &str, mut etcd: Option<&mut EtcdCluster>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut below = rng();
    let mut kills = 0;
    for round in 0..40u64 {
        let server = Server::start(&data, store);
        let api = Api::connect(&server.addr, &data).await;
        if round == 0 {
            let ns =
                serde_json::json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dur"}});
            let (code, obj) = api
                .call("POST", "/api/v1/namespaces", Some(ns))
                .await
                .unwrap();
            assert!(code == 201 || code == 409, "{code} {obj}");
        } else {
            // Everything acknowledged before the last kill is still there.
            let l = std::mem::take(&mut *ledger.lock().unwrap());
            verify(&api, &l).await;
            eprintln!(
                "{store}: round {round}: all {} acknowledged writes present",
                l.acks
            );
            let done = l.acks >= 10_000 && kills >= 5;
            *ledger.lock().unwrap() = l;
            if done {
                return;
            }
        }
        let writer = tokio::spawn(write_until_killed(api, round, ledger.clone()));
        let before = ledger.lock().unwrap().acks;
        let t0 = Instant::now();
        while ledger.lock().unwrap().acks < before + 100 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut victim = None;
        if let Some(c) = etcd.as_deref_mut() {
            tokio::time::sleep(Duration::from_millis(below(500))).await;
            let v = below(3) as usize;
            c.kill(v);
            victim = Some(v);
            let during = ledger.lock().unwrap().acks;
            let t0 = Instant::now();
            while ledger.lock().unwrap().acks < during + 100 {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "API stopped serving with one etcd member down"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + below(1500))).await;
        server.kill();
        kills += 1;
        writer.await.unwrap();
        if let (Some(c), Some(v)) = (etcd.as_deref_mut(), victim) {
            c.restart(v).unwrap();
            c.wait_healthy(Duration::from_secs(30)).unwrap();
        }
        // The store is consistent while the server is down.
        let out = Command::new(H8S)
            .args(["store", "check", "--store", store, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "store check after SIGKILL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("fewer than 10,000 acknowledged writes in 40 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_embedded_survives_sigkill() {
    run("embedded", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_3_member_etcd_survives_sigkill_of_server_and_member() {
    let mut c = EtcdCluster::start(3).expect("etcd-server");
    let url = c.url("/h8s-durability");
    run(&url, Some(&mut c)).await;
}
