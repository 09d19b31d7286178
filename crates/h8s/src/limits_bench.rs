//! `h8s bench limits`: what priority and fairness cost a read. Three `h8s server`
//! processes run side by side: limits off (`--max-requests-inflight=0
//! --max-mutating-requests-inflight=0`, the baseline), the defaults (400/200: admission
//! runs, seats never run out at this concurrency), and tight (`--max-requests-inflight=8`:
//! six workload seats for 64 requests in flight, so most requests queue). A workload user
//! (static token, not `system:masters`, which is exempt) GETs the same ConfigMaps on each,
//! in alternating rounds; the figures go to BENCHMARKS.md under `bench:limits`.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::bench_support::{start_server, write_section, ServerProc};
use crate::server::bench::{connect, create_ns, fill, gets, loadavg, row, summarize, Client};

#[derive(clap::Args)]
pub struct Args {
    /// ConfigMaps read.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// GETs per server and round.
    #[arg(long, default_value_t = 10000)]
    pub gets: usize,
    /// Rounds (the order of the servers rotates).
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

const USER_TOKEN: &str = "limits-bench-user-token";

/// A server with a workload user allowed to do anything, and its ConfigMaps.
async fn prepare(
    flags: &[&str],
    objects: usize,
    conc: usize,
) -> anyhow::Result<(ServerProc, Client)> {
    let mut all = vec!["--disable-agent"];
    all.extend_from_slice(flags);
    let p = start_server(&all)?;
    let (url, ca, token) = p.endpoint()?;
    let admin = connect(&url, &ca, &token, 4).await?;
    create_ns(&admin, "bench").await?;
    fill(&admin, "bench", objects, conc).await?;
    let user = workload_user(
        &p,
        &admin,
        4,
        "/api/v1/namespaces/bench/configmaps/cm-000000",
    )
    .await?;
    Ok((p, user))
}

/// A client of `p` as a user allowed to do anything but not exempt from the API's limits
/// (no `system:masters`: its requests go through priority and fairness), once it can GET
/// `probe`.
pub(crate) async fn workload_user(
    p: &ServerProc,
    admin: &Client,
    conns: usize,
    probe: &str,
) -> anyhow::Result<Client> {
    let data = p.kubeconfig.parent().context("data dir")?.to_path_buf();
    let (url, ca, _) = p.endpoint()?;
    std::fs::write(
        data.join("tokens.csv"),
        format!("{USER_TOKEN},bench-user,u1,\"bench-users\"\n"),
    )?;
    let crb = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"bench-users"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"bench-users"}]}"#;
    let (code, b) = admin
        .call(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(crb.as_bytes().to_vec()),
        )
        .await?;
    if code != 201 {
        bail!("binding: {code} {}", String::from_utf8_lossy(&b));
    }
    let user = connect(&url, &ca, USER_TOKEN, conns).await?;
    // The binding reaches the RBAC index shortly after the write.
    for _ in 0..100 {
        if user.call("GET", probe, None).await?.0 == 200 {
            return Ok(user);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the bench user cannot read its ConfigMaps")
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let conc = args.concurrency;
    let setups: [(&str, &[&str]); 3] = [
        (
            "limits off (baseline)",
            &[
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
            ],
        ),
        ("limits on (defaults 400/200)", &[]),
        (
            "limits on, tight (--max-requests-inflight=8: queuing)",
            // One user's queue holds 50 by default; 64 in flight would overflow it.
            &["--max-requests-inflight=8", "--apf-queue-length-limit=100"],
        ),
    ];
    let mut servers = Vec::new();
    for (name, flags) in setups {
        eprintln!("bench limits: starting {name}");
        servers.push(prepare(flags, args.objects, conc).await?);
    }
    for (_, c) in &servers {
        gets(c, "bench", args.objects, 1000, conc, None).await?;
    }
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut wall = [Duration::ZERO; 3];
    for r in 0..args.rounds {
        eprintln!("bench limits: round {}", r + 1);
        for k in 0..3 {
            let i = (r + k) % 3;
            let (l, w) = gets(&servers[i].1, "bench", args.objects, args.gets, conc, None).await?;
            lat[i].extend(l);
            wall[i] += w;
        }
    }
    let sums: Vec<_> = lat
        .into_iter()
        .zip(wall)
        .map(|(l, w)| summarize(l, w))
        .collect();
    let load_after = loadavg();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench limits` (debug={}) on {cpus} cores shared with the client and other work. \
         Three `h8s server` processes (embedded store, no agent) run side by side: limits off, the default \
         limits, and tight limits where most requests wait in the fair queue. A workload user (static token, \
         group bound to cluster-admin; not `system:masters`, which is exempt) GETs the same {} ConfigMaps over \
         HTTP/2 with TLS, {conc} in flight, {} GETs per server and round, {} rounds (the order rotates) after a \
         warm-up. Latency per request, client side, in ms. Load average before: {load_before}, after: \
         {load_after}.\n\n",
        cfg!(debug_assertions),
        args.objects,
        args.gets,
        args.rounds,
    );
    md.push_str(
        "| server | n | per s | min | p50 | p99 | ratio to off |\n|---|---|---|---|---|---|---|\n",
    );
    md.push_str(&row(setups[0].0, &sums[0], None));
    md.push_str(&row(setups[1].0, &sums[1], Some(&sums[0])));
    md.push_str(&row(setups[2].0, &sums[2], Some(&sums[0])));
    let ratio = sums[1].per_sec / sums[0].per_sec.max(1e-9);
    md.push_str(&format!(
        "\nGoal: the default limits cost ≤ 5% of GET throughput (ratio ≥ 0.95): {} ({ratio:.3}).\n",
        if ratio >= 0.95 { "met" } else { "missed" }
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(path, "limits", "Limits: priority and fairness on GETs", &md)?;
        eprintln!("bench limits: wrote {}", path.display());
    }
    Ok(())
}
