//! Shared by the store's `h8s server` tests: start the real server, talk HTTP/2 to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub const H8S: &str = env!("CARGO_BIN_EXE_h8s");

pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// Starts `h8s server` on a free port and waits for its ready line.
    pub fn start(data: &Path, store: &str) -> Server {
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
            // Store tests need no node agent (several servers at once would also contend for
            // its streaming port).
            .arg("--disable-agent")
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
    pub fn kill(mut self) {
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
pub struct Api {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    token: String,
}

impl Api {
    pub async fn connect(addr: &str, data: &Path) -> Api {
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
        tcp.set_nodelay(true).unwrap();
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

    pub async fn call(
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

impl Api {
    /// Starts a watch and returns its response body; events arrive as JSON lines.
    pub async fn watch(&self, path: &str) -> hyper::body::Incoming {
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("https://127.0.0.1{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.send.clone().send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "watch {path}");
        resp.into_body()
    }
}

/// Reads watch events (one JSON object per line) until `f` returns true, or panics after
/// `secs` seconds.
pub async fn watch_until(
    body: &mut hyper::body::Incoming,
    buf: &mut Vec<u8>,
    secs: u64,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) {
                if f(&ev) {
                    return;
                }
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("watch event in time")
            .expect("watch still open")
            .expect("watch body");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}
