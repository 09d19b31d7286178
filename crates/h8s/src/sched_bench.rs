//! `h8s bench sched`: scheduler throughput through the API. Starts a real `h8s server`
//! process (this binary, without its own scheduler, controllers or agent), registers N Node
//! objects, measures the server's raw pod-create rate as the baseline, pre-creates the pods,
//! then starts the scheduler (`h8s_scheduler::run`, in this process, as an API client like
//! any other) and times until every pod is bound. Writes method and figures into
//! BENCHMARKS.md between the `sched` markers.

use std::collections::HashSet;

use crate::bench_support::{start_server, stats, write_section};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use h8s_client::k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use h8s_client::kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use h8s_client::kube::runtime::watcher;
use h8s_client::kube::{self, Api};
use serde_json::json;

const SCHED: &str = "h8s-bench-scheduler";

#[derive(clap::Args)]
pub struct Args {
    /// Node objects registered (no agent: allocatable and Ready written by the bench).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Pods to schedule.
    #[arg(long, default_value_t = 10000)]
    pub pods: usize,
    /// Requests in flight while creating nodes and pods.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Bindings (and their events) the scheduler keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub bind_concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

fn pod(name: &str, scheduler: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    }))
    .expect("pod")
}

/// Creates `n` pods named `<prefix>-<i>` with at most `conc` in flight; returns the
/// per-request latencies (ms) and the wall time.
async fn create_pods(
    api: &Api<Pod>,
    prefix: &str,
    scheduler: &str,
    n: usize,
    conc: usize,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let t0 = Instant::now();
    let lat: Vec<f64> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let p = pod(&format!("{prefix}-{i}"), scheduler);
            async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &p).await?;
                Ok::<f64, kube::Error>(t.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(conc)
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("creating pods: {e:?}"))?;
    Ok((lat, t0.elapsed()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let server = start_server(&[
        "--disable-scheduler",
        "--disable-controllers",
        "--disable-agent",
    ])?;
    let c = h8s_client::from_kubeconfig(&server.kubeconfig).await?;
    let conc = args.concurrency.max(1);

    // Nodes: 32 cpu, 64 GiB, 110 pods each.
    eprintln!("registering {} nodes", args.nodes);
    let nodes: Api<Node> = Api::all(c.clone());
    futures::stream::iter(0..args.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("bench-node-{i}");
                let n: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
                }))
                .expect("node");
                nodes.create(&PostParams::default(), &n).await?;
                let now = jiff::Timestamp::now().to_string();
                let st = json!({"status": {
                    "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "64Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&st))
                    .await?;
                Ok::<(), kube::Error>(())
            }
        })
        .buffer_unordered(conc)
        .try_collect::<()>()
        .await
        .context("registering nodes")?;

    let nss: Api<Namespace> = Api::all(c.clone());
    for ns in ["bench-baseline", "bench-sched"] {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        nss.create(&PostParams::default(), &o).await?;
        // The ServiceAccount admission wants the default account (its controller is off).
        let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("creating the default ServiceAccount"),
        }
    }

    // Baseline: the raw pod-create rate of this server (pods no scheduler takes).
    eprintln!("baseline: creating {} pods", args.pods);
    let base_api: Api<Pod> = Api::namespaced(c.clone(), "bench-baseline");
    let (mut base_lat, base_wall) =
        create_pods(&base_api, "base", "nobody", args.pods, conc).await?;
    let base_rate = args.pods as f64 / base_wall.as_secs_f64();
    base_api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the baseline pods")?;

    // The pods to schedule, created before the scheduler starts.
    eprintln!("creating {} pods to schedule", args.pods);
    let api: Api<Pod> = Api::namespaced(c.clone(), "bench-sched");
    create_pods(&api, "p", SCHED, args.pods, conc).await?;

    // Count bindings as a watcher sees them, per 100 ms window.
    let total = args.pods;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Vec<Instant>>();
    let wapi = api.clone();
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut times = Vec::with_capacity(total);
        let mut s = std::pin::pin!(watcher(wapi, watcher::Config::default()));
        while let Some(ev) = s.next().await {
            let objs = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for p in objs {
                let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                if bound && seen.insert(p.metadata.name.clone().unwrap_or_default()) {
                    times.push(Instant::now());
                }
            }
            if seen.len() >= total {
                let _ = done_tx.send(times);
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("scheduling");
    let cfg = h8s_scheduler::Config {
        scheduler_name: SCHED.into(),
        instance: SCHED.into(),
        bind_concurrency: args.bind_concurrency,
        ..Default::default()
    };
    // The scheduler's own client, as `h8s server` builds it: every request and watch
    // multiplexed over one HTTP/2 connection.
    let (url, ca, token) = server.endpoint()?;
    let sc = h8s_client::Connection {
        server: url,
        ca_pem: ca.into_bytes(),
        credentials: h8s_client::Credentials::Token(token),
        user_agent: "kube-scheduler/h8s-bench".into(),
    }
    .client_http2()
    .context("the scheduler's HTTP/2 client")?;
    let t0 = Instant::now();
    let sched = tokio::spawn(async move { h8s_scheduler::run(sc, cfg).await });
    let times = tokio::time::timeout(Duration::from_secs(600), done_rx)
        .await
        .context("not every pod was bound within 10 minutes")?
        .context("the watch ended")?;
    let wall = t0.elapsed();
    sched.abort();
    let first = times.iter().min().copied().unwrap_or(t0);
    let last = times.iter().max().copied().unwrap_or(t0);
    let sched_rate = total as f64 / wall.as_secs_f64();
    let steady = if last > first {
        total as f64 / (last - first).as_secs_f64()
    } else {
        0.0
    };
    // Throughput per 1 s window between the first and the last binding.
    let mut windows: Vec<f64> = Vec::new();
    let secs = (last - first).as_secs_f64().ceil() as usize;
    for w in 0..secs.max(1) {
        let lo = first + Duration::from_secs(w as u64);
        let hi = lo + Duration::from_secs(1);
        let n = times.iter().filter(|t| **t >= lo && **t < hi).count();
        if hi <= last {
            windows.push(n as f64);
        }
    }
    // Spread over nodes.
    let placed = api.list(&ListParams::default()).await?;
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for p in &placed.items {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let max_per_node = per_node.values().copied().max().unwrap_or(0);
    let min_per_node = if per_node.len() < args.nodes {
        0
    } else {
        per_node.values().copied().min().unwrap_or(0)
    };
    // The Scheduled events follow the bindings off the critical path (a bounded queue that
    // drops when full, as client-go's broadcaster): count those recorded a moment later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events: Api<h8s_client::k8s_openapi::api::core::v1::Event> =
        Api::namespaced(c.clone(), "bench-sched");
    let recorded = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .count();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let (bmin, bmed, bp99) = stats(&mut base_lat);
    let (wmin, wmed, wp99) = stats(&mut windows);
    let load = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let md = format!(
        "Measured by `h8s bench sched` (debug={debug}) on 2 cores shared with the server, the \
scheduler and the load generator. A fresh `h8s server` process (embedded store; its own \
scheduler, controllers and agent off) gets {nodes} Node objects (32 cpu, 64 GiB, 110 pods, \
Ready, 3 zones; no agent). Baseline: {pods} pods created through the API by the same client \
({conc} in flight) — the server's raw pod-create rate. Then {pods} pods (100m cpu, 128 MiB) are \
created unscheduled, and the scheduler (`h8s_scheduler::run`, in the benchmark process, an API \
client over TLS like any other, its requests and watches multiplexed over one HTTP/2 \
connection as in `h8s server`; {bconc} bindings in flight) is started: it lists nodes and \
pods, filters and scores every pod, binds it through `pods/binding`, and queues its \
`Scheduled` event, which a recorder writes off the binding path (8 in flight, a queue of 1,000 \
that drops when full, as client-go's event broadcaster; {recorded} of {pods} events were \
recorded 5 s after the last binding). Timed from the scheduler's start to the last \
binding seen by a watch. Load average (1/5/15 min) before: {lb}, after: {la}.\n\n\
| measure | n | per s | min | p50 | p99 | ratio to baseline |\n\
|---|---|---|---|---|---|---|\n\
| baseline: pod create (latency ms) | {pods} | {base_rate:.0} | {bmin:.2} | {bmed:.2} | {bp99:.2} | — |\n\
| scheduled, start to last binding | {pods} | {sched_rate:.0} | — | — | — | {r1:.2} |\n\
| scheduled, first to last binding | {pods} | {steady:.0} | — | — | — | {r2:.2} |\n\
| bindings per 1 s window | {nw} | — | {wmin:.0} | {wmed:.0} | {wp99:.0} | {r3:.2} |\n\n\
Placement: {used} of {nodes} nodes used, {min_per_node}–{max_per_node} pods per node. \
Goal ≥1,500 pods/s with 1,000 nodes ({verdict}); kube-scheduler's own scheduler_perf \
thresholds are 680–1,100 pods/s.",
        debug = cfg!(debug_assertions),
        nodes = args.nodes,
        pods = args.pods,
        conc = conc,
        bconc = args.bind_concurrency,
        lb = load(&load_before),
        la = load(&load_after),
        r1 = sched_rate / base_rate,
        r2 = steady / base_rate,
        r3 = wmed / base_rate,
        nw = windows.len(),
        used = per_node.len(),
        verdict = if steady >= 1500.0 { "met" } else { "not met" },
    );
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(path, "sched", "Scheduler", &md)?;
    }
    drop(server);
    Ok(())
}
