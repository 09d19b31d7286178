//! `h8s bench api`: the API server benchmark. Starts a real `h8s server` process
//! (this binary) on a temporary data dir and drives it over HTTPS/HTTP2 the way client-go
//! does, then writes method and figures into BENCHMARKS.md between the `api` markers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Objects created in the create phase.
    #[arg(long, default_value_t = 5000)]
    pub creates: usize,
    /// Gets in the get phase.
    #[arg(long, default_value_t = 30000)]
    pub gets: usize,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Watchers in the fan-out phase.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub(crate) struct Proc {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) ca: String,
    ready: Duration,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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
}

pub(crate) fn start_server() -> anyhow::Result<Proc> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let t0 = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        // The API alone: an embedded node agent would make this machine a node (a fabric,
        // pod VMs) that a killed bench server leaves behind.
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--disable-agent",
            "--data-dir",
        ])
        .arg(&data)
        .env("H8S_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting h8s server")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let ready = t0.elapsed();
    std::thread::spawn(move || {
        let mut s = String::new();
        while out.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
            s.clear();
        }
    });
    let mut parts = line.split_whitespace();
    if parts.next() != Some("ready") {
        let _ = child.kill();
        bail!("server did not start: {line:?}");
    }
    let url = parts.next().context("url")?.to_string();
    Ok(Proc {
        child,
        url,
        token: std::fs::read_to_string(data.join("admin.token"))?
            .trim()
            .to_string(),
        ca: std::fs::read_to_string(data.join("ca.crt"))?,
        ready,
        _dir: dir,
    })
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Clone)]
pub(crate) struct Client {
    conns: Vec<SendRequest<Full<Bytes>>>,
    base: String,
    auth: String,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

pub(crate) async fn connect(
    url: &str,
    ca_pem: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<Client> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let hostport = url.trim_start_matches("https://").to_string();
    let mut conns = Vec::new();
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(&hostport).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        let io = tls.connect(name, tcp).await?;
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(io))
                .await?;
        tokio::spawn(conn);
        conns.push(send);
    }
    Ok(Client {
        conns,
        base: url.to_string(),
        auth: format!("Bearer {token}"),
        next: Default::default(),
    })
}

impl Client {
    pub(crate) fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request")
    }

    pub(crate) fn conn(&self) -> SendRequest<Full<Bytes>> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.conns[i % self.conns.len()].clone()
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut c = self.conn();
        c.ready().await?;
        let resp = c.send_request(self.req(method, path, body)).await?;
        let code = resp.status().as_u16();
        let b = resp.into_body().collect().await?.to_bytes();
        Ok((code, b))
    }

    /// A call with extra headers; the answer's status, headers and body.
    pub(crate) async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, http::HeaderMap, Bytes)> {
        let mut c = self.conn();
        c.ready().await?;
        let mut req = self.req(method, path, body);
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes())?,
                http::HeaderValue::from_str(v)?,
            );
        }
        let resp = c.send_request(req).await?;
        let code = resp.status().as_u16();
        let h = resp.headers().clone();
        let b = resp.into_body().collect().await?.to_bytes();
        Ok((code, h, b))
    }
}

/// Latency summary in milliseconds.
pub(crate) struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub per_sec: f64,
}

pub(crate) fn summarize(mut lat: Vec<Duration>, wall: Duration) -> Summary {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            ms(lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)])
        }
    };
    Summary {
        n: lat.len(),
        min: lat.first().map(|d| ms(*d)).unwrap_or(0.0),
        p50: pick(0.50),
        p99: pick(0.99),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
    }
}

/// Runs `total` calls of `f(i)` with `conc` in flight, as fast as possible, or at
/// `rate` per second when given. Returns latencies and wall time.
pub(crate) async fn drive<F, Fut>(
    total: usize,
    conc: usize,
    rate: Option<f64>,
    f: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let f = f.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(r) = rate {
                    // Open-loop schedule: request i is due at i / rate.
                    let due = t0 + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                }
                let s = Instant::now();
                f(i).await?;
                lat.push(s.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, t0.elapsed()))
}

/// An HTTPS server on 127.0.0.1 with a CA of its own, answering every request with
/// `answer(path, body)` as JSON (webhooks, conversion, aggregated APIs for the benches); it
/// speaks HTTP/2 too, by ALPN, when `h2`. Returns its port and CA (PEM).
pub(crate) async fn json_https_server(
    names: &[&str],
    h2: bool,
    answer: fn(&str, &[u8]) -> (u16, serde_json::Value),
) -> anyhow::Result<(u16, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, &issuer)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    if h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let (code, out) = answer(&path, &body);
                        let mut resp = http::Response::new(Full::new(Bytes::from(
                            serde_json::to_vec(&out).unwrap_or_default(),
                        )));
                        *resp.status_mut() =
                            http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Ok((port, ca.pem()))
}

pub(crate) fn cm_body(name: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"bench":"yes"}}}},"data":{{"k":"v"}}}}"#
    )
    .into_bytes()
}

pub(crate) async fn create_ns(c: &Client, ns: &str) -> anyhow::Result<()> {
    let (code, b) = c
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(format!(r#"{{"metadata":{{"name":"{ns}"}}}}"#).into_bytes()),
        )
        .await?;
    if code != 201 {
        bail!(
            "creating namespace {ns}: {code} {}",
            String::from_utf8_lossy(&b)
        );
    }
    Ok(())
}

pub(crate) async fn fill(
    c: &Client,
    ns: &str,
    n: usize,
    conc: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let c2 = c.clone();
    let ns = ns.to_string();
    drive(n, conc, None, move |i| {
        let c = c2.clone();
        let ns = ns.clone();
        async move {
            let (code, b) = c
                .call(
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    Some(cm_body(&format!("cm-{i:06}"))),
                )
                .await?;
            if code != 201 {
                bail!("create: {code} {}", String::from_utf8_lossy(&b));
            }
            Ok(())
        }
    })
    .await
}

pub(crate) async fn gets(
    c: &Client,
    ns: &str,
    have: usize,
    n: usize,
    conc: usize,
    rate: Option<f64>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let c2 = c.clone();
    let ns = ns.to_string();
    drive(n, conc, rate, move |i| {
        let c = c2.clone();
        let path = format!(
            "/api/v1/namespaces/{ns}/configmaps/cm-{:06}",
            (i * 7919) % have
        );
        async move {
            let (code, _) = c.call("GET", &path, None).await?;
            if code != 200 {
                bail!("get: {code}");
            }
            Ok(())
        }
    })
    .await
}

async fn baseline_healthz(
    c: &Client,
    n: usize,
    conc: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let c2 = c.clone();
    drive(n, conc, None, move |_| {
        let c = c2.clone();
        async move {
            c.call("GET", "/healthz", None).await?;
            Ok(())
        }
    })
    .await
}

async fn lists(
    c: &Client,
    ns: &str,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Duration, usize)> {
    let mut lat = Vec::new();
    let mut bytes = 0;
    let t0 = Instant::now();
    for _ in 0..rounds {
        let s = Instant::now();
        let (code, b) = c
            .call("GET", &format!("/api/v1/namespaces/{ns}/configmaps"), None)
            .await?;
        if code != 200 {
            bail!("list: {code}");
        }
        lat.push(s.elapsed());
        bytes = b.len();
    }
    Ok((lat, t0.elapsed(), bytes))
}

/// Opens `watchers` watches, then creates `events` objects one by one and measures how
/// long each takes to reach every watcher (from just before the create is sent).
async fn fanout(
    c: &Client,
    watchers: usize,
    events: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    create_ns(c, "fanout").await?;
    let (_, b) = c
        .call("GET", "/api/v1/namespaces/fanout/configmaps?limit=1", None)
        .await?;
    let rv = serde_json::from_slice::<serde_json::Value>(&b)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Default::default();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut opened = Vec::new();
    for _ in 0..watchers {
        let mut conn = c.conn();
        conn.ready().await?;
        let req = c.req(
            "GET",
            &format!("/api/v1/namespaces/fanout/configmaps?watch=true&resourceVersion={rv}"),
            None,
        );
        let resp = conn.send_request(req).await?;
        if resp.status() != 200 {
            bail!("watch: {}", resp.status());
        }
        let sent = sent.clone();
        let lat = lat.clone();
        let done = done.clone();
        opened.push(tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut seen = 0;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let now = Instant::now();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                        let name = v["object"]["metadata"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let t = sent.lock().ok().and_then(|m| m.get(&name).copied());
                        if let Some(t) = t {
                            if let Ok(mut l) = lat.lock() {
                                l.push(now.saturating_duration_since(t));
                            }
                        }
                        seen += 1;
                        if seen == events {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }));
    }
    // Let every watch register before the first event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..events {
        let name = format!("ev-{i:04}");
        sent.lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert(name.clone(), Instant::now());
        let (code, _) = c
            .call(
                "POST",
                "/api/v1/namespaces/fanout/configmaps",
                Some(cm_body(&name)),
            )
            .await?;
        if code != 201 {
            bail!("fan-out create: {code}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t0 = Instant::now();
    while done.load(std::sync::atomic::Ordering::Relaxed) < watchers
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in opened {
        t.abort();
    }
    let complete = done.load(std::sync::atomic::Ordering::Relaxed);
    let l = lat.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    Ok((l, complete))
}

/// The embedded store alone, in this process: the baseline for creates.
async fn baseline_store_creates(
    n: usize,
    conc: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let dir = tempfile::tempdir()?;
    let store = h8s_store::open("embedded", dir.path(), None).await?;
    drive(n, conc, None, move |i| {
        let store = store.clone();
        async move {
            store
                .create(
                    &format!("/registry/core/configmaps/base/cm-{i:06}"),
                    Bytes::from(cm_body("x")),
                )
                .await?;
            Ok(())
        }
    })
    .await
}

pub(crate) fn row(name: &str, s: &Summary, base: Option<&Summary>) -> String {
    let ratio = base
        .map(|b| format!("{:.2}", s.per_sec / b.per_sec.max(1e-9)))
        .unwrap_or_else(|| "—".into());
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {ratio} |\n",
        s.n, s.per_sec, s.min, s.p50, s.p99
    )
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let load_before = loadavg();
    // Start-to-ready, over 5 cold starts.
    let mut readies = Vec::new();
    for _ in 0..5 {
        let p = start_server()?;
        readies.push(p.ready);
    }
    let p = start_server()?;
    let pid = p.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid);
    let c = connect(&p.url, &p.ca, &p.token, 4).await?;
    let conc = args.concurrency;

    eprintln!("bench: baseline /healthz");
    let (l, w) = baseline_healthz(&c, args.gets, conc).await?;
    let healthz = summarize(l, w);
    eprintln!("bench: baseline store creates");
    let (l, w) = baseline_store_creates(args.creates, conc).await?;
    let store_creates = summarize(l, w);

    eprintln!("bench: creates");
    create_ns(&c, "b1").await?;
    let (l, w) = fill(&c, "b1", args.creates, conc).await?;
    let creates = summarize(l, w);
    eprintln!("bench: gets");
    let (l, w) = gets(&c, "b1", args.creates, args.gets, conc, None).await?;
    let get_sum = summarize(l, w);

    // Latency at half of the target load (and not above half the measured peak).
    let get_rate = (get_sum.per_sec / 2.0).min(5000.0);
    let (l, w) = gets(
        &c,
        "b1",
        args.creates,
        (get_rate * 4.0) as usize,
        conc,
        Some(get_rate),
    )
    .await?;
    let get_half = summarize(l, w);
    let create_rate = (creates.per_sec / 2.0).min(1000.0);
    create_ns(&c, "b2").await?;
    let c3 = c.clone();
    let (l, w) = drive(
        (create_rate * 3.0) as usize,
        conc,
        Some(create_rate),
        move |i| {
            let c = c3.clone();
            async move {
                let (code, _) = c
                    .call(
                        "POST",
                        "/api/v1/namespaces/b2/configmaps",
                        Some(cm_body(&format!("half-{i:06}"))),
                    )
                    .await?;
                if code != 201 {
                    bail!("create: {code}");
                }
                Ok(())
            }
        },
    )
    .await?;
    let create_half = summarize(l, w);

    eprintln!("bench: lists");
    create_ns(&c, "l1k").await?;
    fill(&c, "l1k", 1000, conc).await?;
    let (l, w, bytes1k) = lists(&c, "l1k", 30).await?;
    let list1k = summarize(l, w);
    create_ns(&c, "l10k").await?;
    fill(&c, "l10k", 10000, conc).await?;
    let (l, w, bytes10k) = lists(&c, "l10k", 10).await?;
    let list10k = summarize(l, w);
    let loaded_rss = rss_kib(pid);

    eprintln!("bench: watch fan-out to {} watchers", args.watchers);
    let events = 20;
    let wc = connect(&p.url, &p.ca, &p.token, 8).await?;
    let (fl, complete) = fanout(&wc, args.watchers, events).await?;
    let fan = summarize(fl, Duration::from_secs(1));
    let watch_rss = rss_kib(pid);

    let load_after = loadavg();
    let ready = summarize(readies.clone(), Duration::from_secs(1));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = String::new();
    md.push_str(&format!(
        "Measured by `h8s bench api` (debug={}) on {cpus} cores shared with the benchmark client and other work; \
         the server is a separate `h8s server` process on the embedded store with the watch cache, the client \
         speaks HTTP/2 over TLS with a bearer token like client-go ({} connections, {} requests in flight). \
         Objects are ConfigMaps. Latency is per request, client side, in ms. The ratio column compares \
         throughput with the baseline measured in the same run: `GET /healthz` (TLS + HTTP/2 + auth-free \
         path, the transport's ceiling) for reads, the embedded store's own `create` called in-process for writes. \
         Load average (1/5/15 min) before: {load_before}, after: {load_after}.\n\n",
        cfg!(debug_assertions),
        4,
        conc
    ));
    md.push_str("| operation | n | per s | min | p50 | p99 | ratio to baseline |\n|---|---|---|---|---|---|---|\n");
    md.push_str(&row("baseline: GET /healthz", &healthz, None));
    md.push_str(&row(
        "baseline: store create (in-process)",
        &store_creates,
        None,
    ));
    md.push_str(&row("create (max rate)", &creates, Some(&store_creates)));
    md.push_str(&row("get (max rate)", &get_sum, Some(&healthz)));
    md.push_str(&row(&format!("get at {get_rate:.0}/s"), &get_half, None));
    md.push_str(&row(
        &format!("create at {create_rate:.0}/s"),
        &create_half,
        None,
    ));
    md.push_str(&row(
        &format!("list 1k objects ({} KiB)", bytes1k / 1024),
        &list1k,
        None,
    ));
    md.push_str(&row(
        &format!("list 10k objects ({} KiB)", bytes10k / 1024),
        &list10k,
        None,
    ));
    md.push_str(&format!(
        "\nWatch fan-out: {} watchers on one namespace, {events} creates 100 ms apart; latency from just before \
         the create is sent to the event's arrival at each watcher: {} deliveries, {complete}/{} watchers got every \
         event, min {:.2} ms, p50 {:.2} ms, p99 {:.2} ms.\n\n",
        args.watchers, fan.n, args.watchers, fan.min, fan.p50, fan.p99
    ));
    md.push_str(&format!(
        "Start to ready (process spawn to the `ready` line, 6 cold starts on fresh data dirs): min {:.0} ms, \
         median {:.0} ms, max {:.0} ms. Server RSS: idle {:.1} MiB after start, {:.1} MiB after the \
         load phases ({} objects stored), {:.1} MiB with {} watches open.\n\n",
        ready.min,
        ready.p50,
        readies.iter().max().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        args.creates + 11000 + (create_rate * 6.0) as usize,
        watch_rss as f64 / 1024.0,
        args.watchers
    ));
    md.push_str(&format!(
        "Targets: ≥2,000 creates/s ({}), ≥10,000 gets/s ({}), p99 ≤10 ms at half load (get {}, create {}), \
         watch p99 ≤100 ms to 1,000 watchers ({}), idle RSS ≤60 MiB ({}), ready ≤1 s ({}).\n",
        verdict(creates.per_sec >= 2000.0),
        verdict(get_sum.per_sec >= 10000.0),
        verdict(get_half.p99 <= 10.0),
        verdict(create_half.p99 <= 10.0),
        verdict(fan.p99 <= 100.0 && complete == args.watchers),
        verdict(idle_rss as f64 / 1024.0 <= 60.0),
        verdict(ready.p99 <= 1000.0),
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(path, &md)?;
        eprintln!("bench: wrote {}", path.display());
    }
    drop(p);
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

fn write_section(path: &Path, md: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let (b, e) = ("<!-- bench:api:begin -->", "<!-- bench:api:end -->");
    let (Some(i), Some(j)) = (text.find(b), text.find(e)) else {
        bail!("{} has no api markers", path.display());
    };
    let out = format!("{}{b}\n{md}{}", &text[..i], &text[j..]);
    std::fs::write(path, out)?;
    Ok(())
}
