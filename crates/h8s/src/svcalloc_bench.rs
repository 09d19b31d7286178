//! `h8s bench svc-alloc`: the cost of a Service create (its ClusterIP allocation) as the
//! number of Services grows. One `h8s server`; at each level (0, 1,000, 5,000 existing
//! ClusterIP Services) the same number of ConfigMap creates (the baseline, no allocator)
//! and Service creates, alternating in two halves, one request in flight (Service writes
//! are serialized by the allocator anyway). Written into BENCHMARKS.md between the
//! `svcalloc` markers.

use std::path::PathBuf;

use anyhow::bail;
use serde_json::{json, Value};

use crate::server::bench::{connect, drive, start_server, summarize, Client, Summary};

#[derive(clap::Args)]
pub struct Args {
    /// Creates measured per case and level.
    #[arg(long, default_value_t = 200)]
    pub creates: usize,
    /// The levels of existing Services, comma-separated.
    #[arg(long, default_value = "0,1000,5000", value_delimiter = ',')]
    pub levels: Vec<usize>,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"a": "1"}})
}

/// `n` creates of `make(prefix-i)` at `path`, `conc` in flight.
async fn creates(
    c: &Client,
    path: &str,
    prefix: &str,
    n: usize,
    conc: usize,
    make: fn(&str) -> Value,
) -> anyhow::Result<Summary> {
    let c2 = c.clone();
    let path = path.to_string();
    let prefix = prefix.to_string();
    let (lat, wall) = drive(n, conc, None, move |i| {
        let c = c2.clone();
        let path = path.clone();
        let body = make(&format!("{prefix}-{i:06}"));
        async move {
            let (code, b) = c
                .call("POST", &path, Some(serde_json::to_vec(&body)?))
                .await?;
            if code != 201 {
                bail!("create: {code} {}", String::from_utf8_lossy(&b));
            }
            Ok(())
        }
    })
    .await?;
    Ok(summarize(lat, wall))
}

fn merge(a: &Summary, b: &Summary) -> Summary {
    // Two halves of equal size: n and rate add up; min is the smaller; p50/p99 of the
    // halves are averaged (both halves are shown in the same spirit).
    Summary {
        n: a.n + b.n,
        min: a.min.min(b.min),
        p50: (a.p50 + b.p50) / 2.0,
        p99: a.p99.max(b.p99),
        per_sec: (a.per_sec + b.per_sec) / 2.0,
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let p = start_server()?;
    let c = connect(&p.url, &p.ca, &p.token, 4).await?;
    let (code, b) = c
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "bench"}}),
            )?),
        )
        .await?;
    if code != 201 {
        bail!("namespace: {code} {}", String::from_utf8_lossy(&b));
    }
    let svcs = "/api/v1/namespaces/bench/services";
    let cms = "/api/v1/namespaces/bench/configmaps";
    creates(&c, cms, "warm", 50, 1, config_map).await?;
    creates(&c, svcs, "warm", 50, 1, service).await?;
    let mut existing = 50;
    let mut rows = Vec::new();
    let half = (args.creates / 2).max(1);
    for (li, &level) in args.levels.iter().enumerate() {
        if level > existing {
            let t = std::time::Instant::now();
            creates(&c, svcs, &format!("fill{li}"), level - existing, 8, service).await?;
            eprintln!("filled to {level} Services in {:?}", t.elapsed());
            existing = level;
        }
        let cm1 = creates(&c, cms, &format!("l{li}a"), half, 1, config_map).await?;
        let sv1 = creates(&c, svcs, &format!("l{li}a"), half, 1, service).await?;
        let cm2 = creates(&c, cms, &format!("l{li}b"), half, 1, config_map).await?;
        let sv2 = creates(&c, svcs, &format!("l{li}b"), half, 1, service).await?;
        rows.push((existing, merge(&cm1, &cm2), merge(&sv1, &sv2)));
        existing += 2 * half;
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench svc-alloc` (debug={}) on {cpus} cores shared with the client and other work: one `h8s server` process (embedded store, watch cache), the client speaks HTTP/2 over TLS, one request in flight. At each level (Services already stored in the cluster, all ClusterIP, each holding a cluster IP and its IPAddress) {} ConfigMap creates (the baseline: the same create path without the allocator) and {} ClusterIP Service creates, alternating in two halves. Latency per request, client side, ms (p50 the mean of the halves'); ratio is the Service p50 over the ConfigMap p50 at the same level, growth the Service p50 over the first level's.\n\n",
        cfg!(debug_assertions),
        2 * half,
        2 * half,
    );
    md.push_str("| Services stored | ConfigMap min | p50 | p99 | Service min | p50 | p99 | Service/ConfigMap p50 | Service p50 growth |\n|---|---|---|---|---|---|---|---|---|\n");
    let first = rows.first().map(|r| r.2.p50).unwrap_or(1.0).max(1e-9);
    for (n, cm, sv) in &rows {
        md.push_str(&format!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            cm.min,
            cm.p50,
            cm.p99,
            sv.min,
            sv.p50,
            sv.p99,
            sv.p50 / cm.p50.max(1e-9),
            sv.p50 / first
        ));
    }
    println!("{md}");
    if let Some(path) = &args.write {
        crate::bench_support::write_section(
            path,
            "svcalloc",
            "Services: ClusterIP allocation on create",
            md.trim_end(),
        )?;
    }
    drop(p);
    Ok(())
}
