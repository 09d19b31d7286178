//! Store benchmark: raw etcd vs the etcd backend vs the embedded backend, same run, same
//! machine, same disk. Writes its figures into BENCHMARKS.md's `store` section with
//! `--write PATH`.
//!
//! `cargo run --release -p h8s-store --example store_bench -- [--write BENCHMARKS.md] [--quick]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use h8s_store::testing::EtcdCluster;
use h8s_store::{Embedded, ListOptions, Store, WatchCache};

#[derive(Clone, Copy)]
struct Sizes {
    seq: usize,
    conc: usize,
    inflight: usize,
    watchers: usize,
    watch_events: usize,
}

struct Row {
    what: String,
    ops_per_s: f64,
    lat: Vec<Duration>,
}

impl Row {
    fn new(what: impl Into<String>, elapsed: Duration, mut lat: Vec<Duration>) -> Row {
        lat.sort();
        let ops_per_s = lat.len() as f64 / elapsed.as_secs_f64();
        Row {
            what: what.into(),
            ops_per_s,
            lat,
        }
    }
    fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i]
    }
    fn line(&self, baseline: Option<&Row>) -> String {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        let ratio = baseline.map_or("—".to_owned(), |b| {
            format!("{:.0}%", 100.0 * self.ops_per_s / b.ops_per_s)
        });
        format!(
            "| {} | {:.0} | {} | {} | {} | {} |",
            self.what,
            self.ops_per_s,
            ms(self.pct(0.0)),
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
            ratio
        )
    }
}

/// Runs `n` operations with `inflight` at a time; op `i` is `f(i)`.
async fn drive<F, Fut>(n: usize, inflight: usize, f: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t0 = Instant::now();
    let lat: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed()
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    (t0.elapsed(), lat)
}

fn value(i: usize) -> Bytes {
    // About the size of a small Kubernetes object.
    Bytes::from(format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm{i}\",\"namespace\":\"bench\",\"uid\":\"{i:032}\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "v".repeat(400)
    ))
}

async fn raw_etcd(endpoints: &[String], z: Sizes) -> Vec<Row> {
    let client = etcd_client::Client::connect(endpoints, None).await.unwrap();
    let mut rows = Vec::new();
    let c = client.clone();
    let (el, lat) = drive(z.seq, 1, |i| {
        let mut kv = c.kv_client();
        async move {
            kv.put(format!("/raw/seq/{i:07}"), value(i).to_vec(), None)
                .await
                .unwrap();
        }
    })
    .await;
    rows.push(Row::new("put, 1 in flight", el, lat));
    let (el, lat) = drive(z.conc, z.inflight, |i| {
        let mut kv = c.kv_client();
        async move {
            kv.put(format!("/raw/conc/{i:07}"), value(i).to_vec(), None)
                .await
                .unwrap();
        }
    })
    .await;
    rows.push(Row::new(format!("put, {} in flight", z.inflight), el, lat));
    // The same compare-and-put transaction our create sends, without our code around it.
    let txn = |key: String, i: usize| {
        etcd_client::Txn::new()
            .when([etcd_client::Compare::version(
                key.clone(),
                etcd_client::CompareOp::Equal,
                0,
            )])
            .and_then([etcd_client::TxnOp::put(
                key.clone(),
                value(i).to_vec(),
                None,
            )])
            .or_else([etcd_client::TxnOp::get(key, None)])
    };
    let (el, lat) = drive(z.seq, 1, |i| {
        let mut kv = c.kv_client();
        let t = txn(format!("/raw/txn-seq/{i:07}"), i);
        async move {
            assert!(kv.txn(t).await.unwrap().succeeded());
        }
    })
    .await;
    rows.push(Row::new("create txn, 1 in flight", el, lat));
    let (el, lat) = drive(z.conc, z.inflight, |i| {
        let mut kv = c.kv_client();
        let t = txn(format!("/raw/txn-conc/{i:07}"), i);
        async move {
            assert!(kv.txn(t).await.unwrap().succeeded());
        }
    })
    .await;
    rows.push(Row::new(
        format!("create txn, {} in flight", z.inflight),
        el,
        lat,
    ));
    let (el, lat) = drive(z.seq, 1, |i| {
        let mut kv = c.kv_client();
        async move {
            kv.get(format!("/raw/seq/{i:07}"), None).await.unwrap();
        }
    })
    .await;
    rows.push(Row::new("get, 1 in flight", el, lat));
    let (el, lat) = drive(z.conc, z.inflight, |i| {
        let mut kv = c.kv_client();
        async move {
            kv.get(format!("/raw/conc/{i:07}"), None).await.unwrap();
        }
    })
    .await;
    rows.push(Row::new(format!("get, {} in flight", z.inflight), el, lat));
    rows
}

async fn ours(s: Arc<dyn Store>, tag: &str, z: Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    let (el, lat) = drive(z.seq, 1, |i| {
        let s = s.clone();
        async move {
            s.create(&format!("/{tag}/seq/{i:07}"), value(i))
                .await
                .unwrap();
        }
    })
    .await;
    rows.push(Row::new("create, 1 in flight", el, lat));
    let (el, lat) = drive(z.conc, z.inflight, |i| {
        let s = s.clone();
        async move {
            s.create(&format!("/{tag}/conc/{i:07}"), value(i))
                .await
                .unwrap();
        }
    })
    .await;
    rows.push(Row::new(
        format!("create, {} in flight", z.inflight),
        el,
        lat,
    ));
    let (el, lat) = drive(z.seq, 1, |i| {
        let s = s.clone();
        async move {
            s.get(&format!("/{tag}/seq/{i:07}")).await.unwrap().unwrap();
        }
    })
    .await;
    rows.push(Row::new("get, 1 in flight", el, lat));
    let (el, lat) = drive(z.conc, z.inflight, |i| {
        let s = s.clone();
        async move {
            s.get(&format!("/{tag}/conc/{i:07}"))
                .await
                .unwrap()
                .unwrap();
        }
    })
    .await;
    rows.push(Row::new(format!("get, {} in flight", z.inflight), el, lat));
    // Lists of 1,000 keys (the sequential set's first 1,000) and of everything written.
    let (el, lat) = drive(50, 1, |_| {
        let s = s.clone();
        async move {
            let l = s
                .list(
                    &format!("/{tag}/seq/"),
                    ListOptions {
                        limit: Some(1000),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(l.items.len(), 1000.min(z.seq));
        }
    })
    .await;
    rows.push(Row::new("list 1,000 keys", el, lat));
    let (el, lat) = drive(10, 1, |_| {
        let s = s.clone();
        async move {
            let l = s
                .list(&format!("/{tag}/conc/"), ListOptions::default())
                .await
                .unwrap();
            assert_eq!(l.items.len(), z.conc);
        }
    })
    .await;
    rows.push(Row::new(format!("list {} keys", z.conc), el, lat));
    let keys = s.count("").await.unwrap();
    let (el, lat) = drive(3, 1, |_| {
        let s = s.clone();
        async move {
            s.check().await.unwrap();
        }
    })
    .await;
    rows.push(Row::new(format!("check() over {keys} keys"), el, lat));
    rows.push(watch_fanout(s.clone(), &format!("{tag}p"), z, true).await);
    rows.push(watch_fanout(s, &format!("{tag}u"), z, false).await);
    rows
}

/// Events written one at a time, all watchers behind one watch cache. Latency = from just
/// before the write is sent to its arrival at each watcher (an event can reach a watcher
/// before the writer sees its acknowledgement, so timing from the ack would clamp those to 0).
/// `paced`: one write every ~2 ms, for latency; unpaced: writes back to back, for the
/// deliveries/s the fan-out sustains.
async fn watch_fanout(s: Arc<dyn Store>, tag: &str, z: Sizes, paced: bool) -> Row {
    let cache = WatchCache::new(s).await.unwrap();
    let start = cache.revision().await.unwrap();
    let sent: Arc<std::sync::Mutex<Vec<(i64, Instant)>>> = Default::default();
    let mut tasks = Vec::new();
    for _ in 0..z.watchers {
        let mut w = cache.watch(&format!("/{tag}/watch/"), start).await.unwrap();
        let n = z.watch_events;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                let e = w.next().await.unwrap().unwrap();
                got.push((e.revision(), Instant::now()));
            }
            got
        }));
    }
    let t0 = Instant::now();
    for i in 0..z.watch_events {
        let before = Instant::now();
        let kv = cache
            .create(&format!("/{tag}/watch/{i:05}"), value(i))
            .await
            .unwrap();
        sent.lock().unwrap().push((kv.mod_revision, before));
        if paced {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let sent: std::collections::HashMap<i64, Instant> =
        sent.lock().unwrap().iter().copied().collect();
    let mut lat = Vec::new();
    for t in tasks {
        for (rev, at) in t.await.unwrap() {
            lat.push(at.saturating_duration_since(sent[&rev]));
        }
    }
    let el = t0.elapsed();
    let mut r = Row::new(
        format!(
            "watch event to {} watchers, {} (deliveries/s)",
            z.watchers,
            if paced {
                "one write per 2 ms"
            } else {
                "writes back to back"
            }
        ),
        el,
        lat,
    );
    r.ops_per_s = (z.watchers * z.watch_events) as f64 / el.as_secs_f64();
    r
}

fn table(title: &str, rows: &[Row], base: &[Row], base_name: &str) -> String {
    let mut out = format!(
        "{title}\n\n| operation | ops/s | min ms | median ms | p99 ms | vs {base_name} (ops/s) |\n|---|---:|---:|---:|---:|---:|\n"
    );
    // Our create pairs with raw etcd's create transaction (raw rows 2-3), our get with
    // raw get (raw rows 4-5).
    let pair = [Some(2), Some(3), Some(4), Some(5)];
    for (i, r) in rows.iter().enumerate() {
        let b = pair.get(i).copied().flatten().and_then(|j| base.get(j));
        out.push_str(&r.line(b));
        out.push('\n');
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1).cloned());
    let quick = args.iter().any(|a| a == "--quick");
    let z = if quick {
        Sizes {
            seq: 300,
            conc: 2000,
            inflight: 64,
            watchers: 100,
            watch_events: 20,
        }
    } else {
        Sizes {
            seq: 2000,
            conc: 20_000,
            inflight: 64,
            watchers: 1000,
            watch_events: 100,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = EtcdCluster::start(1).expect("etcd (Debian etcd-server)");
    let dir = tempfile_dir();
    let report = rt.block_on(async {
        let raw = raw_etcd(&etcd.endpoints(), z).await;
        let e: Arc<dyn Store> = h8s_store::open(&etcd.url("/bench"), &dir, None).await.unwrap();
        let on_etcd = ours(e, "e", z).await;
        let m: Arc<dyn Store> = Arc::new(Embedded::open(&dir.join("store.redb")).unwrap());
        let mut embedded = ours(m, "m", z).await;
        // Start-up cost: reopening the file (what `h8s server` does before serving).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let path = dir.join("store.redb");
        let mut lat = Vec::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            let t = Instant::now();
            let s = Embedded::open(&path).unwrap();
            lat.push(t.elapsed());
            drop(s);
        }
        embedded.push(Row::new("open the store file (restart)", t0.elapsed(), lat));
        let mut raw_table = String::from(
            "**Raw etcd** (etcd-client straight to etcd: put, the create transaction, get)\n\n| operation | ops/s | min ms | median ms | p99 ms | |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for r in &raw {
            raw_table.push_str(&r.line(None));
            raw_table.push('\n');
        }
        format!(
            "{raw_table}\n{}\n{}",
            table("**h8s etcd backend** (create = compare-and-swap transaction)", &on_etcd, &raw, "raw etcd"),
            table("**h8s embedded backend** (redb, fsync per commit, group commit)", &embedded, &raw, "raw etcd"),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let section = format!(
        "Measured by `cargo run --release -p h8s-store --example store_bench -- --write BENCHMARKS.md` \
         on {cpus} cores: one etcd {etcd_version} member (Debian etcd-server, data dir on the same disk as \
         the embedded store, default fsync) and the embedded store, in one run. Values are ~600-byte \
         JSON objects. \"N in flight\" = N concurrent requests from one client; latency is per request. \
         Ratios compare ops/s with the raw etcd row of the same kind: our create with raw etcd's \
         create transaction (compare version = 0, put), our get with raw get. Watch rows: events written one at a time, \
         either one every ~2 ms (for latency) or back to back (for fan-out throughput); latency from just \
         before the write is sent to each watcher receiving it, all watchers behind one `WatchCache`.\n\n{report}\nThe API-level comparison on etcd (through `h8s server`) follows, \
         written by `h8s store bench`.\n",
        etcd_version = etcd_version(),
    );
    println!("{section}");
    if let Some(path) = write {
        let doc = std::fs::read_to_string(&path).expect("read BENCHMARKS.md");
        let begin = "<!-- bench:store:begin -->";
        let end = "<!-- bench:store:end -->";
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            panic!("{path} has no store markers");
        };
        // Keep the API-level block `h8s store bench` writes inside this section.
        let old = &doc[b..e];
        let api_block = match (
            old.find("<!-- store-api:begin -->"),
            old.find("<!-- store-api:end -->"),
        ) {
            (Some(x), Some(y)) => format!("\n{}\n", &old[x..y + "<!-- store-api:end -->".len()]),
            _ => String::new(),
        };
        let new = format!("{}{begin}\n{section}{api_block}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, new).expect("write BENCHMARKS.md");
        eprintln!("wrote the store section of {path}");
    }
    drop(etcd);
}

fn etcd_version() -> String {
    let bin = h8s_store::testing::etcd_binary().unwrap_or_else(|| "etcd".into());
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("h8s-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
