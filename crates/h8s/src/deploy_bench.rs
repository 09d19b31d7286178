//! `h8s bench deploy`: the control loop at scale. Starts a real `h8s server` (controller manager
//! and scheduler on, no node agent) and N hollow nodes (in this process, an API client like a
//! real agent), then times, each from before the action:
//! - baseline: N bare pods created through the API until every one is Ready (scheduler +
//!   hollow nodes, no workload controller);
//! - a Deployment of the same size from create until every replica is Ready and the
//!   Deployment reports them available;
//! - a rollout of a new revision of it until complete;
//!
//! sampling the server's RSS and CPU time from /proc during each phase. Writes method and
//! figures into BENCHMARKS.md between the `deploy` markers.

use std::collections::HashSet;

use crate::bench_support::{start_server, start_server_at, stats, write_section};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use h8s_client::k8s_openapi::api::apps::v1::Deployment;
use h8s_client::k8s_openapi::api::core::v1::{Namespace, Pod};
use h8s_client::kube::api::{Patch, PatchParams, PostParams};
use h8s_client::kube::runtime::{watcher, WatchStreamExt};
use h8s_client::kube::Api;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Hollow nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Replicas of the Deployment (and bare pods of the baseline).
    #[arg(long, default_value_t = 3000)]
    pub replicas: usize,
    /// Requests in flight while creating the baseline's pods.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Run the server from this `h8s` binary instead of this one (to compare two builds
    /// with the same benchmark code).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

/// RSS (bytes) and CPU time (user + system) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((rss_kb * 1024, Duration::from_millis(ticks * 1000 / hz)))
}

/// Peak RSS and CPU time of `pid` while `f` runs.
async fn sampled<T>(
    pid: u32,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, u64, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = proc_usage(pid).map(|u| u.1).unwrap_or_default();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = proc_usage(pid) {
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let r = f.await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(0);
    let cpu = proc_usage(pid).map(|u| u.1).unwrap_or_default() - cpu0;
    Ok((r?, peak, cpu))
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn version(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == "VERSION")?
        .value
        .as_deref()
}

/// Watches the namespace's pods from now until `want` distinct ones (matching `selector`, of
/// template version `ver`) have been seen Ready; returns each one's time to Ready (ms)
/// counted from `t0`.
fn ready_times(
    pods: Api<Pod>,
    selector: String,
    ver: &'static str,
    want: usize,
    t0: Instant,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<f64>>> {
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut times = Vec::with_capacity(want);
        let cfg = watcher::Config::default().labels(&selector);
        let mut s = std::pin::pin!(watcher::watcher(pods, cfg).default_backoff());
        while let Some(ev) = s.try_next().await? {
            let items: Vec<Pod> = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                _ => vec![],
            };
            for p in items {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if version(&p) == Some(ver) && is_ready(&p) && seen.insert(uid) {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            if times.len() >= want {
                return Ok(times);
            }
        }
        bail!("pod watch ended")
    })
}

fn template(labels: serde_json::Value, version: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.35",
            "env": [{"name": "VERSION", "value": version}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    })
}

/// Waits until the Deployment's status shows `generation` observed and every replica
/// updated, ready and available, with no old replicas left.
async fn rolled_out(d: &Api<Deployment>, name: &str, replicas: i32) -> anyhow::Result<()> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut s = std::pin::pin!(watcher::watcher(d.clone(), cfg).default_backoff());
    while let Some(ev) = s.try_next().await? {
        if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = ev {
            let st = o.status.clone().unwrap_or_default();
            let done = st.observed_generation >= o.metadata.generation
                && st.updated_replicas == Some(replicas)
                && st.ready_replicas == Some(replicas)
                && st.available_replicas == Some(replicas)
                && st.replicas == Some(replicas);
            if done {
                return Ok(());
            }
        }
    }
    bail!("deployment watch ended")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

struct Phase {
    what: String,
    wall: Duration,
    ready: (f64, f64, f64),
    rss: u64,
    cpu: Duration,
}

/// The watches the server has open (`apiserver_longrunning_requests{verb="watch"}`).
async fn open_watches(c: &h8s_client::kube::Client) -> Option<u64> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = c.request_text(req).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("apiserver_longrunning_requests{verb=\"watch\"} "))
        .and_then(|v| v.trim().parse().ok())
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let server = match &args.server_bin {
        Some(bin) => start_server_at(bin, &["--disable-agent"])?,
        None => start_server(&["--disable-agent"])?,
    };
    let pid = server.child.id();
    let c = h8s_client::from_kubeconfig(&server.kubeconfig).await?;
    let n = args.replicas;
    // The components' watches, once they have started (discovery, first lists).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_idle, _) = proc_usage(pid).unwrap_or_default();
    let watches_idle = open_watches(&c).await;

    eprintln!("starting {} hollow nodes", args.nodes);
    let data = tempfile::tempdir()?;
    let mut base = h8s_agent::Config::new("hollow", data.path().to_path_buf());
    base.max_pods = (n / args.nodes.max(1) + 20).max(110) as u32;
    let hollow = h8s_agent::hollow::Hollow::start(
        c.clone(),
        h8s_agent::hollow::HollowConfig::new(args.nodes, base),
    )
    .await
    .context("starting hollow nodes")?;

    let nss: Api<Namespace> = Api::all(c.clone());
    for ns in ["bench-pods", "bench-deploy"] {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        nss.create(&PostParams::default(), &o).await?;
    }
    // The ServiceAccount admission wants each namespace's `default` ServiceAccount.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut phases = Vec::new();

    // Baseline: bare pods.
    eprintln!("baseline: {n} bare pods");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "bench-pods");
    let t0 = Instant::now();
    let watch = ready_times(pods.clone(), "bench=bare".into(), "1", n, t0);
    let conc = args.concurrency.max(1);
    let ((mut times, wall), rss, cpu) = sampled(pid, async {
        futures::stream::iter(0..n)
            .map(|i| {
                let pods = pods.clone();
                async move {
                    let mut p = template(json!({"bench": "bare"}), "1");
                    p["metadata"]["name"] = json!(format!("bare-{i}"));
                    let p: Pod = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": p["metadata"], "spec": p["spec"]}))
                    .expect("pod");
                    pods.create(&PostParams::default(), &p).await.map(|_| ())
                }
            })
            .buffer_unordered(conc)
            .try_collect::<()>()
            .await
            .context("creating pods")?;
        let times = watch.await??;
        Ok((times, t0.elapsed()))
    })
    .await?;
    phases.push(Phase {
        what: format!("{n} bare pods, {conc} creates in flight (baseline)"),
        wall,
        ready: stats(&mut times),
        rss,
        cpu,
    });

    // The Deployment.
    eprintln!("deployment: {n} replicas");
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "bench-deploy");
    let dpods: Api<Pod> = Api::namespaced(c.clone(), "bench-deploy");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": template(json!({"app": "web"}), "1")}
    }))?;
    let t0 = Instant::now();
    let watch = ready_times(dpods.clone(), "app=web".into(), "1", n, t0);
    let ((mut times, wall), rss, cpu) = sampled(pid, async {
        deps.create(&PostParams::default(), &d).await?;
        rolled_out(&deps, "web", n as i32).await?;
        let times = watch.await??;
        Ok((times, t0.elapsed()))
    })
    .await?;
    phases.push(Phase {
        what: format!("Deployment of {n} replicas: create → all available"),
        wall,
        ready: stats(&mut times),
        rss,
        cpu,
    });

    // A rollout of a new revision.
    eprintln!("rollout");
    let t0 = Instant::now();
    let watch = ready_times(dpods.clone(), "app=web".into(), "2", n, t0);
    let ((mut times, wall), rss, cpu) = sampled(pid, async {
        let patch = json!({"spec": {"template": template(json!({"app": "web"}), "2")}});
        deps.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        rolled_out(&deps, "web", n as i32).await?;
        let times = watch.await??;
        Ok((times, t0.elapsed()))
    })
    .await?;
    phases.push(Phase {
        what: "rollout of a new revision (maxSurge 25%, maxUnavailable 25%)".to_string(),
        wall,
        ready: stats(&mut times),
        rss,
        cpu,
    });
    let (rss_after, _) = proc_usage(pid).unwrap_or_default();
    hollow.shutdown().await;

    let base_wall = phases[0].wall.as_secs_f64();
    let mut rows = String::new();
    for p in &phases {
        let (mn, med, p99) = p.ready;
        rows.push_str(&format!(
            "| {} | {:.1} s | {:.0} pods/s | {:.2}× | {:.0} / {:.0} / {:.0} ms | {} MiB | {:.1} s ({:.0}% of a core) |\n",
            p.what,
            p.wall.as_secs_f64(),
            n as f64 / p.wall.as_secs_f64(),
            p.wall.as_secs_f64() / base_wall,
            mn,
            med,
            p99,
            p.rss >> 20,
            p.cpu.as_secs_f64(),
            100.0 * p.cpu.as_secs_f64() / p.wall.as_secs_f64(),
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let md = format!(
        "Measured by `h8s bench deploy --nodes {nodes} --replicas {n} --write BENCHMARKS.md` ({build} build) \
         on {cpus} cores, load before the run {load}: one `h8s server` process on the embedded store \
         with its controller manager and scheduler and no node agent, {nodes} hollow nodes (marked \
         `h8s.io/hollow=true`; they report bound pods Running and Ready without starting anything) \
         in the benchmark process. Every time runs from before the first request of its phase. \
         \"Ready after\" is, per pod, the time from the phase's start until a watch saw that pod \
         Ready (for the rollout: pods of the new revision only). The baseline creates the same number of bare pods straight through the API \
         ({conc} in flight), so the ratio is the cost of the workload controllers on top of the \
         scheduler and the nodes. RSS is the server's peak during the phase (idle before the run: \
         {idle} MiB; after: {after} MiB), CPU its user+system time. Open watches of the idle \
         server (controller manager and scheduler, before the hollow nodes start): {watches}.\n\n\
         | phase | wall | rate | vs baseline | Ready after min / median / p99 | server RSS peak | server CPU |\n\
         |---|---|---|---|---|---|---|\n{rows}",
        nodes = args.nodes,
        build = if cfg!(debug_assertions) { "debug" } else { "release" },
        load = load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        idle = rss_idle >> 20,
        after = rss_after >> 20,
        watches = watches_idle.map_or("unknown".to_string(), |w| w.to_string()),
    );
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(
            path,
            "deploy",
            "Control loop at scale (Deployment over hollow nodes)",
            &md,
        )?;
    }
    drop(server);
    Ok(())
}
