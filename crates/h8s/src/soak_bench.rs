//! `h8s bench soak`: the API server under a steady mixed load for minutes — reads, lists,
//! patches, updates, creates and deletes of ConfigMaps at a fixed open-loop rate, while
//! watchers follow the namespace — to show that nothing fails and that its memory stays
//! flat. The baseline is the run's own first minute: latency and RSS of the last minute are
//! compared with it. Figures go to BENCHMARKS.md under `bench:soak`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::BodyExt;

use crate::bench_support::{start_server, write_section};
use crate::server::bench::{cm_body, connect, create_ns, fill, loadavg, rss_kib, Client};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per second, open loop (each request is due at its slot, late or not).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Watchers following the namespace during the run.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// ConfigMaps read and patched.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<std::path::PathBuf>,
    /// Send the load as the admin (`system:masters`, exempt from priority and fairness)
    /// instead of a workload user whose requests go through it.
    #[arg(long)]
    pub exempt: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

const NS: &str = "soak";

/// The verb of request `i`, out of every 20: 10 GET, 2 LIST, 3 merge PATCH, 1 PUT, 2 CREATE,
/// 2 DELETE (each of the object created two requests before).
fn verb(i: usize) -> &'static str {
    match i % 20 {
        0..=9 => "get",
        10 | 11 => "list",
        12..=14 => "patch",
        15 => "put",
        16 | 17 => "create",
        _ => "delete",
    }
}

/// One request; the answer's code must be one that verb may give.
async fn one(c: &Client, i: usize, objects: usize) -> anyhow::Result<(&'static str, u16)> {
    let pool = format!(
        "/api/v1/namespaces/{NS}/configmaps/cm-{:06}",
        (i * 7919) % objects
    );
    let v = verb(i);
    let (code, ok): (u16, &[u16]) = match v {
        "get" => (c.call("GET", &pool, None).await?.0, &[200]),
        "list" => {
            let p = format!("/api/v1/namespaces/{NS}/configmaps?limit=50");
            (c.call("GET", &p, None).await?.0, &[200])
        }
        "patch" => {
            let body = format!(r#"{{"data":{{"v":"{i}"}}}}"#).into_bytes();
            let mut conn = c.conn();
            let mut req = c.req("PATCH", &pool, Some(body));
            req.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/merge-patch+json"),
            );
            conn.ready().await?;
            let resp = conn.send_request(req).await?;
            let code = resp.status().as_u16();
            resp.into_body().collect().await?;
            (code, &[200])
        }
        "put" => {
            // Every write changes the object (a no-op write makes no event).
            let name = pool.rsplit('/').next().unwrap_or_default();
            let body = format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"v":"put-{i}"}}}}"#
            );
            (
                c.call("PUT", &pool, Some(body.into_bytes())).await?.0,
                &[200],
            )
        }
        "create" => {
            let p = format!("/api/v1/namespaces/{NS}/configmaps");
            (
                c.call("POST", &p, Some(cm_body(&format!("churn-{i}"))))
                    .await?
                    .0,
                &[201],
            )
        }
        _ => {
            // The create two slots earlier may still be in flight: 404 is an answer too.
            let p = format!("/api/v1/namespaces/{NS}/configmaps/churn-{}", i - 2);
            (c.call("DELETE", &p, None).await?.0, &[200, 404])
        }
    };
    if !ok.contains(&code) {
        bail!("{v}: {code}");
    }
    Ok((v, code))
}

/// One sample: when the request was due (s after the start), its latency, and whether it
/// failed.
struct Sample {
    at: f64,
    lat: Duration,
    failed: bool,
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let p = start_server(&["--disable-agent"])?;
    let pid = p.child.id();
    let (url, ca, token) = p.endpoint()?;
    let admin = connect(&url, &ca, &token, 8).await?;
    create_ns(&admin, NS).await?;
    fill(&admin, NS, args.objects, 64).await?;
    let c = if args.exempt {
        admin
    } else {
        let probe = format!("/api/v1/namespaces/{NS}/configmaps/cm-000000");
        crate::limits_bench::workload_user(&p, &admin, 8, &probe).await?
    };
    let rss_idle = rss_kib(pid);

    // Watchers, from the current resource version (no initial ADDED events): each counts
    // the events it reads; a watch that ends early is a failure.
    let (_, listed) = c
        .call(
            "GET",
            &format!("/api/v1/namespaces/{NS}/configmaps?limit=1"),
            None,
        )
        .await?;
    let rv = serde_json::from_slice::<serde_json::Value>(&listed)?["metadata"]["resourceVersion"]
        .as_str()
        .context("the list's resourceVersion")?
        .to_string();
    let events = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let mut conn = c.conn();
        conn.ready().await?;
        let req = c.req(
            "GET",
            &format!(
                "/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=86400"
            ),
            None,
        );
        let resp = conn.send_request(req).await?;
        if resp.status() != 200 {
            bail!("watch: {}", resp.status());
        }
        let (events, ended) = (events.clone(), ended.clone());
        watchers.push(tokio::spawn(async move {
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    let n = d.iter().filter(|b| **b == b'\n').count();
                    events.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            ended.fetch_add(1, Ordering::Relaxed);
        }));
    }

    // RSS every 5 s; the watch path's memory (the watch cache's ring, the shared
    // encodings) from /metrics every 15 s.
    let rss: Arc<Mutex<Vec<(f64, u64)>>> = Default::default();
    let inside: Arc<Mutex<Vec<(f64, Inside)>>> = Default::default();
    let t0 = Instant::now();
    let sampler = {
        let (rss, inside, c) = (rss.clone(), inside.clone(), c.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                if let Ok(mut v) = rss.lock() {
                    v.push((t0.elapsed().as_secs_f64(), rss_kib(pid)));
                }
                if n % 3 == 0 {
                    if let Ok(m) = scrape(&c).await {
                        if let Ok(mut v) = inside.lock() {
                            v.push((t0.elapsed().as_secs_f64(), m));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };

    let total = (args.rate * args.seconds as f64) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let mutations = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    eprintln!(
        "bench soak: {total} requests at {}/s, {} watchers",
        args.rate, args.watchers
    );
    for _ in 0..args.concurrency {
        let (c, next, failures, mutations) =
            (c.clone(), next.clone(), failures.clone(), mutations.clone());
        let (rate, objects) = (args.rate, args.objects);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return out;
                }
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                // Latency counts from the slot, so a server that falls behind shows it.
                let r = one(&c, i, objects).await;
                let lat = due.elapsed();
                let failed = match &r {
                    Ok((v, code)) => {
                        if matches!(*v, "patch" | "put" | "create")
                            || *code == 200 && *v == "delete"
                        {
                            mutations.fetch_add(1, Ordering::Relaxed);
                        }
                        false
                    }
                    Err(e) => {
                        if let Ok(mut f) = failures.lock() {
                            if f.len() < 20 {
                                f.push(format!("{e:#}"));
                            }
                        }
                        true
                    }
                };
                out.push(Sample {
                    at: i as f64 / rate,
                    lat,
                    failed,
                });
            }
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    let wall = t0.elapsed();
    // Watchers catch up with the last writes, then stop.
    let want = mutations.load(Ordering::Relaxed) * args.watchers as u64;
    let t1 = Instant::now();
    while events.load(Ordering::Relaxed) < want && t1.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = events.load(Ordering::Relaxed);
    let watch_ended = ended.load(Ordering::Relaxed);
    for w in watchers {
        w.abort();
    }
    sampler.abort();
    let rss = rss.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    let inside = inside.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    drop(p);
    let load_after = loadavg();

    let failed = samples.iter().filter(|s| s.failed).count();
    let window = |from: f64, to: f64| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.lat.as_secs_f64() * 1000.0)
            .collect();
        let n = v.len();
        let (min, p50, p99) = crate::bench_support::stats(&mut v);
        (n, min, p50, p99)
    };
    let secs = args.seconds as f64;
    let minute = 60f64.min(secs / 3.0);
    let first = window(0.0, minute);
    let last = window(secs - minute, secs);
    let all = window(0.0, secs);
    let rss_at = |from: f64, to: f64| {
        let v: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0
    };
    let rss_first = rss_at(0.0, minute);
    let rss_last = rss_at(secs - minute, secs + 1.0);
    let rss_max = rss.iter().map(|(_, r)| *r).max().unwrap_or(0) as f64 / 1024.0;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench soak --rate {} --seconds {} --watchers {}` (debug={}) on {cpus} cores \
         shared with the load generator and other work; load average before: {load_before}, after: \
         {load_after}. One `h8s server` process (embedded store, no agent) holds {} ConfigMaps in \
         namespace `{NS}`; the client ({}; HTTP/2 over TLS, 8 connections, at most {} requests in flight) \
         sends an open-loop schedule of requests — of every 20: 10 GET, 2 LIST (limit 50), 3 merge \
         PATCH, 1 PUT, 2 CREATE, 2 DELETE — each timed from its slot in the schedule, so a server that \
         falls behind shows it in the latency; {} watchers follow the namespace for the whole run. \
         Baseline: the run's own first {minute:.0} s, against its last {minute:.0} s. Latency in ms.\n\n",
        args.rate,
        args.seconds,
        args.watchers,
        cfg!(debug_assertions),
        args.objects,
        if args.exempt {
            "the admin, in `system:masters`: exempt from priority and fairness"
        } else {
            "a workload user, not exempt: every request and watch through priority and fairness \
             with the default limits"
        },
        args.concurrency,
        args.watchers,
    );
    md.push_str("| window | requests | per s | min | p50 | p99 |\n|---|---|---|---|---|---|\n");
    let row = |name: &str, w: (usize, f64, f64, f64), span: f64| {
        format!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            w.0,
            w.0 as f64 / span,
            w.1,
            w.2,
            w.3
        )
    };
    md.push_str(&row(
        &format!("first {minute:.0} s (baseline)"),
        first,
        minute,
    ));
    md.push_str(&row(&format!("last {minute:.0} s"), last, minute));
    md.push_str(&row("whole run", all, wall.as_secs_f64()));
    md.push_str(&format!(
        "\nErrors: {failed} of {} requests{}. Watch events delivered: {seen} of {want} \
         ({} watchers × {} acknowledged writes); watches ended early: {watch_ended}. Server RSS: \
         {:.0} MiB idle with the objects loaded, {rss_first:.0} MiB over the first {minute:.0} s, \
         {rss_last:.0} MiB over the last (ratio {:.2}), {rss_max:.0} MiB at most. p99 last/first: \
         {:.2}. Achieved rate: {:.0}/s of {}/s asked.\n",
        samples.len(),
        if failed > 0 {
            format!(
                " (first: {})",
                failures.lock().map(|f| f.join("; ")).unwrap_or_default()
            )
        } else {
            String::new()
        },
        args.watchers,
        mutations.load(Ordering::Relaxed),
        rss_idle as f64 / 1024.0,
        rss_last / rss_first.max(1e-9),
        last.3 / first.3.max(1e-9),
        samples.len() as f64 / wall.as_secs_f64(),
        args.rate,
    ));
    // Per minute: RSS (mean, max) and the watch path's memory at the minute's end.
    md.push_str(
        "\n| minute | RSS mean, MiB | RSS max, MiB | watch cache events | watch cache MiB | shared encodings MiB |\n|---|---|---|---|---|---|\n",
    );
    for m in 0..(secs / 60.0).ceil() as usize {
        let (from, to) = (m as f64 * 60.0, (m as f64 + 1.0) * 60.0);
        let v: Vec<u64> = rss
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        if v.is_empty() {
            continue;
        }
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64 / 1024.0;
        let max = *v.iter().max().unwrap_or(&0) as f64 / 1024.0;
        let i = inside
            .iter()
            .rfind(|(t, _)| *t < to)
            .map(|(_, i)| *i)
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {mean:.0} | {max:.0} | {} | {:.1} | {:.1} |\n",
            m + 1,
            i.ring_events,
            i.ring_bytes / (1024.0 * 1024.0),
            i.shared_bytes / (1024.0 * 1024.0),
        ));
    }
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(path, "soak", "Soak: mixed load with watchers", &md)?;
        eprintln!("bench soak: wrote {}", path.display());
    }
    Ok(())
}

/// The watch path's memory, as `/metrics` reports it.
#[derive(Clone, Copy, Default)]
struct Inside {
    ring_events: f64,
    ring_bytes: f64,
    shared_bytes: f64,
}

async fn scrape(c: &Client) -> anyhow::Result<Inside> {
    let (_, text) = c.call("GET", "/metrics", None).await?;
    let text = String::from_utf8_lossy(&text);
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Inside {
        ring_events: get("h8s_watch_cache_events"),
        ring_bytes: get("h8s_watch_cache_bytes"),
        shared_bytes: get("h8s_watch_shared_encodings_bytes"),
    })
}
