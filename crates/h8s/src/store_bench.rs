//! `h8s store bench`: the API through `h8s server` on etcd, beside raw etcd put/get and
//! beside the same API on the embedded store, all in one run on one machine. Writes its
//! table into BENCHMARKS.md's store section (between `store-api` markers).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Objects created (and read back) per phase.
    #[arg(long, default_value_t = 3000)]
    pub creates: usize,
    /// Concurrent requests in flight in the loaded phases.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

struct Row {
    name: String,
    per_sec: f64,
    lat: Vec<Duration>,
}

impl Row {
    fn new(name: impl Into<String>, wall: Duration, mut lat: Vec<Duration>) -> Row {
        lat.sort();
        Row {
            name: name.into(),
            per_sec: lat.len() as f64 / wall.as_secs_f64(),
            lat,
        }
    }
    fn q(&self, q: f64) -> f64 {
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() - 1) as f64 * q).round() as usize;
        self.lat[i].as_secs_f64() * 1000.0
    }
    fn md(&self, base: Option<&Row>) -> String {
        let ratio = base.map_or("—".to_owned(), |b| {
            format!("{:.0}%", 100.0 * self.per_sec / b.per_sec)
        });
        format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {ratio} |\n",
            self.name,
            self.per_sec,
            self.q(0.0),
            self.q(0.5),
            self.q(0.99)
        )
    }
}

async fn drive<F, Fut>(n: usize, inflight: usize, f: F) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    let wall = t0.elapsed();
    let lat = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((wall, lat))
}

fn object(i: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm{i:06}"), "namespace": "bench"},
        "data": {"k": "v".repeat(400)},
    })
}

/// Raw etcd-client put and get of the same ~600-byte JSON, the baseline.
async fn raw_etcd(endpoints: &[String], n: usize, conc: usize) -> anyhow::Result<Vec<Row>> {
    let client = etcd_client::Client::connect(endpoints, None).await?;
    let mut rows = Vec::new();
    for (inflight, tag) in [(1, "seq"), (conc, "conc")] {
        let c = client.clone();
        let (w, l) = drive(n.min(if inflight == 1 { 1000 } else { n }), inflight, |i| {
            let mut kv = c.kv_client();
            async move {
                kv.put(format!("/raw/{tag}/{i:06}"), object(i).to_string(), None)
                    .await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row::new(
            format!("raw etcd put, {inflight} in flight"),
            w,
            l,
        ));
    }
    for (inflight, tag) in [(1, "seq"), (conc, "conc")] {
        let c = client.clone();
        let (w, l) = drive(n.min(if inflight == 1 { 1000 } else { n }), inflight, |i| {
            let mut kv = c.kv_client();
            async move {
                kv.get(format!("/raw/{tag}/{i:06}"), None).await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row::new(
            format!("raw etcd get, {inflight} in flight"),
            w,
            l,
        ));
    }
    Ok(rows)
}

struct Server {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(store: &str) -> anyhow::Result<Server> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            // The API alone (no embedded node agent, fabric or pod VMs).
            "--disable-agent",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("H8S_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting h8s server")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let Some(addr) = line
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.strip_prefix("https://"))
    else {
        let _ = child.kill();
        bail!("h8s server did not start: {line:?}");
    };
    Ok(Server {
        addr: addr.to_owned(),
        child,
        dir,
    })
}

#[derive(Clone)]
struct Api {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    token: String,
}

impl Api {
    async fn connect(addr: &str, data: &Path) -> anyhow::Result<Api> {
        let ca = std::fs::read(data.join("ca.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c?)?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        // Like client-go: no Nagle delay between a request's HEADERS and DATA frames.
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let token = std::fs::read_to_string(data.join("admin.token"))?
            .trim()
            .to_owned();
        Ok(Api { send, token })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        want: u16,
    ) -> anyhow::Result<()> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let resp = self.send.clone().send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status != want {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(())
    }
}

/// Create, get and list through one `h8s server` on `store`.
async fn api(store: &str, n: usize, conc: usize) -> anyhow::Result<Vec<Row>> {
    let server = start_server(store)?;
    let api = Api::connect(&server.addr, server.dir.path()).await?;
    let ns = serde_json::json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}});
    api.call("POST", "/api/v1/namespaces", Some(&ns), 201)
        .await?;
    let mut rows = Vec::new();
    let seq = n.min(1000);
    let a = api.clone();
    let (w, l) = drive(seq, 1, |i| {
        let a = a.clone();
        async move {
            a.call(
                "POST",
                "/api/v1/namespaces/bench/configmaps",
                Some(&object(i)),
                201,
            )
            .await
        }
    })
    .await?;
    rows.push(Row::new("API create, 1 in flight", w, l));
    let (w, l) = drive(n, conc, |i| {
        let a = a.clone();
        async move {
            a.call(
                "POST",
                "/api/v1/namespaces/bench/configmaps",
                Some(&object(seq + i)),
                201,
            )
            .await
        }
    })
    .await?;
    rows.push(Row::new(format!("API create, {conc} in flight"), w, l));
    let (w, l) = drive(seq, 1, |i| {
        let a = a.clone();
        async move {
            a.call(
                "GET",
                &format!("/api/v1/namespaces/bench/configmaps/cm{i:06}"),
                None,
                200,
            )
            .await
        }
    })
    .await?;
    rows.push(Row::new("API get, 1 in flight", w, l));
    let (w, l) = drive(n, conc, |i| {
        let a = a.clone();
        async move {
            a.call(
                "GET",
                &format!("/api/v1/namespaces/bench/configmaps/cm{:06}", seq + i),
                None,
                200,
            )
            .await
        }
    })
    .await?;
    rows.push(Row::new(format!("API get, {conc} in flight"), w, l));
    let (w, l) = drive(20, 1, |_| {
        let a = a.clone();
        async move {
            a.call(
                "GET",
                "/api/v1/namespaces/bench/configmaps?limit=1000",
                None,
                200,
            )
            .await
        }
    })
    .await?;
    rows.push(Row::new("API list, 1,000 of them", w, l));
    drop(server);
    Ok(rows)
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let n = args.creates;
    let conc = args.concurrency;
    let etcd =
        h8s_store::testing::EtcdCluster::start(1).context("starting etcd (Debian etcd-server)")?;
    eprintln!("bench: raw etcd");
    let raw = raw_etcd(&etcd.endpoints(), n, conc).await?;
    eprintln!("bench: API on etcd");
    let on_etcd = api(&etcd.url("/bench-api"), n, conc).await?;
    eprintln!("bench: API on the embedded store");
    let on_embedded = api("embedded", n, conc).await?;
    drop(etcd);

    let header = "| operation | ops/s | min ms | median ms | p99 ms | vs raw etcd (ops/s) |\n|---|---:|---:|---:|---:|---:|\n";
    let mut md = format!(
        "**Through the API** — `h8s store bench --write BENCHMARKS.md`: one `h8s server` process \
         ({build} build) on a one-member etcd (prefix `/bench-api`), then one on the \
         embedded store; a client over one HTTP/2 connection (like client-go) creates {n} \
         ConfigMaps (~600 bytes) and reads them back; raw etcd put/get of the same bytes in the same \
         run is the baseline. API create is compared with raw put, API get with raw get. Everything \
         (etcd, server, client) shares the machine's cores.\n\n{header}",
        build = if cfg!(debug_assertions) { "debug" } else { "release" },
    );
    for r in &raw {
        md.push_str(&r.md(None));
    }
    // API rows 0..4 pair with raw rows: create/1→put/1, create/N→put/N, get/1→get/1, get/N→get/N.
    for (label, rows) in [("on etcd", &on_etcd), ("on embedded", &on_embedded)] {
        for (i, r) in rows.iter().enumerate() {
            let named = Row {
                name: format!("{} {label}", r.name),
                per_sec: r.per_sec,
                lat: r.lat.clone(),
            };
            md.push_str(&named.md(if i < 4 { raw.get(i) } else { None }));
        }
    }
    println!("{md}");
    if let Some(path) = args.write {
        write_block(&path, &md)?;
        eprintln!("wrote the store-api block of {}", path.display());
    }
    Ok(())
}

/// Replaces the `store-api` block inside BENCHMARKS.md's store section (creating it just
/// before the section's end marker the first time).
fn write_block(path: &Path, md: &str) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- store-api:begin -->";
    const END: &str = "<!-- store-api:end -->";
    const SECTION_END: &str = "<!-- bench:store:end -->";
    let doc = std::fs::read_to_string(path)?;
    let block = format!("{BEGIN}\n{md}{END}\n");
    let new = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) => format!(
            "{}{block}{}",
            &doc[..b],
            &doc[e + END.len()..].trim_start_matches('\n')
        ),
        _ => {
            let Some(s) = doc.find(SECTION_END) else {
                bail!("{} has no store section", path.display());
            };
            format!("{}{block}{}", &doc[..s], &doc[s..])
        }
    };
    std::fs::write(path, new)?;
    Ok(())
}
