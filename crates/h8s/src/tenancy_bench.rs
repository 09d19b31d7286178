//! `h8s bench tenancy`: what the tenant guard costs a namespace list. One fresh
//! `h8s server` process (no agent, no controllers) holds `--namespaces` namespaces spread
//! over `--tenants` tenants (label `tenancy.h8s.io/tenant`). A tenant user (static token,
//! group `h8s:tenant:t-042`, allowed to list namespaces by a ClusterRoleBinding) lists
//! `/api/v1/namespaces`, which the tenant guard turns into a list filtered to its tenant's
//! namespaces. The baseline in the same run is the admin listing the same namespaces with a
//! label selector; the admin's unfiltered list of all of them is shown for scale. Rounds
//! alternate which identity goes first; figures go to BENCHMARKS.md under `bench:tenancy`.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::bench_support::{start_server, write_section};
use crate::server::bench::{connect, drive, loadavg, row, summarize, Client};

#[derive(clap::Args)]
pub struct Args {
    /// Namespaces in the cluster.
    #[arg(long, default_value_t = 10000)]
    pub namespaces: usize,
    /// Tenants they belong to (round robin).
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
    /// Filtered lists per identity and round.
    #[arg(long, default_value_t = 200)]
    pub lists: usize,
    /// Unfiltered admin lists per round (each returns every namespace).
    #[arg(long, default_value_t = 10)]
    pub full_lists: usize,
    /// Rounds (which identity goes first alternates).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 8)]
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

const USER_TOKEN: &str = "tenancy-bench-user-token";
const LABEL: &str = "tenancy.h8s.io/tenant";

async fn post(c: &Client, path: &str, body: String) -> anyhow::Result<()> {
    let (code, b) = c.call("POST", path, Some(body.into_bytes())).await?;
    if code != 201 {
        bail!("POST {path}: {code} {}", String::from_utf8_lossy(&b));
    }
    Ok(())
}

/// Lists `path` `n` times, checking each answer holds `want` items.
async fn lists(
    c: &Client,
    path: &str,
    want: usize,
    n: usize,
    conc: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let (c, path) = (c.clone(), path.to_string());
    drive(n, conc, None, move |_| {
        let (c, path) = (c.clone(), path.clone());
        async move {
            let (code, b) = c.call("GET", &path, None).await?;
            if code != 200 {
                bail!("GET {path}: {code} {}", String::from_utf8_lossy(&b));
            }
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            let got = v["items"].as_array().map_or(0, Vec::len);
            if got != want {
                bail!("GET {path}: {got} items, expected {want}");
            }
            Ok(())
        }
    })
    .await
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let p = start_server(&[
        "--disable-agent",
        "--disable-controllers",
        "--disable-scheduler",
    ])?;
    let data = p.kubeconfig.parent().context("data dir")?.to_path_buf();
    let (url, ca, token) = p.endpoint()?;
    let tenants = args.tenants.max(1);
    let mine = format!("t-{:03}", 42 % tenants);
    std::fs::write(
        data.join("tokens.csv"),
        format!("{USER_TOKEN},alice,alice-uid,\"h8s:tenant:{mine}\"\n"),
    )?;
    let admin = connect(&url, &ca, &token, 4).await?;
    let user = connect(&url, &ca, USER_TOKEN, 4).await?;
    let conc = args.concurrency;

    eprintln!(
        "bench tenancy: {} namespaces over {tenants} tenants",
        args.namespaces
    );
    let a2 = admin.clone();
    let (_, fill_wall) = drive(args.namespaces, 32, None, move |i| {
        let c = a2.clone();
        async move {
            let body = format!(
                r#"{{"metadata":{{"name":"ns-{i:05}","labels":{{"{LABEL}":"t-{:03}"}}}}}}"#,
                i % tenants
            );
            post(&c, "/api/v1/namespaces", body).await
        }
    })
    .await?;
    post(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        r#"{"metadata":{"name":"ns-lister"},"rules":[{"apiGroups":[""],"resources":["namespaces"],"verbs":["list"]}]}"#.into(),
    )
    .await?;
    post(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        r#"{"metadata":{"name":"alice-ns-lister"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"ns-lister"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"alice"}]}"#.into(),
    )
    .await?;
    // The tenant's share of the namespaces, and the system namespaces besides them.
    let per_tenant = (0..args.namespaces)
        .filter(|i| i % tenants == 42 % tenants)
        .count();
    let (code, b) = admin.call("GET", "/api/v1/namespaces", None).await?;
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    let total = v["items"].as_array().map_or(0, Vec::len);
    if code != 200 || total < args.namespaces {
        bail!("admin list: {code}, {total} namespaces");
    }
    let user_path = "/api/v1/namespaces";
    let base_path = format!("/api/v1/namespaces?labelSelector={LABEL}%3D{mine}");
    // The RBAC index follows the binding with a watch: wait until the user may list.
    let mut ok = false;
    for _ in 0..100 {
        if lists(&user, user_path, per_tenant, 1, 1).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ok {
        bail!("the tenant user cannot list its {per_tenant} namespaces");
    }
    // Warm up.
    lists(&user, user_path, per_tenant, 20, conc).await?;
    lists(&admin, &base_path, per_tenant, 20, conc).await?;

    let (mut user_lat, mut base_lat, mut full_lat) = (Vec::new(), Vec::new(), Vec::new());
    let (mut user_wall, mut base_wall, mut full_wall) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut per_round = Vec::new();
    for r in 0..args.rounds {
        eprintln!("bench tenancy: round {}", r + 1);
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut rates = [0.0f64; 2];
        for is_user in order {
            if is_user {
                let (l, w) = lists(&user, user_path, per_tenant, args.lists, conc).await?;
                rates[0] = summarize(l.clone(), w).per_sec;
                user_lat.extend(l);
                user_wall += w;
            } else {
                let (l, w) = lists(&admin, &base_path, per_tenant, args.lists, conc).await?;
                rates[1] = summarize(l.clone(), w).per_sec;
                base_lat.extend(l);
                base_wall += w;
            }
        }
        per_round.push(rates[0] / rates[1].max(1e-9));
        let (l, w) = lists(
            &admin,
            "/api/v1/namespaces",
            total,
            args.full_lists,
            conc.min(2),
        )
        .await?;
        full_lat.extend(l);
        full_wall += w;
    }
    let u = summarize(user_lat, user_wall);
    let b = summarize(base_lat, base_wall);
    let f = summarize(full_lat, full_wall);
    let ratio = u.per_sec / b.per_sec.max(1e-9);
    let load_after = loadavg();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench tenancy` (debug={}) on {cpus} cores shared with the client and other work. \
         One `h8s server` process (embedded store, no agent, no controllers) holds {} namespaces \
         ({total} with the system ones) over {tenants} tenants (label `{LABEL}`), created in {:.1} s. \
         A tenant user (static token, group `h8s:tenant:{mine}`, `list namespaces` through a \
         ClusterRoleBinding) lists `/api/v1/namespaces`: the tenant guard answers with its {per_tenant} \
         namespaces. Baseline: the admin (`system:masters`) listing the same {per_tenant} namespaces with \
         `labelSelector={LABEL}={mine}`. For scale, the admin's list of all {total}. Every answer's item \
         count is checked. HTTP/2 with TLS, {conc} in flight ({} for the full list), {} filtered lists per \
         identity per round, {} rounds (which identity goes first alternates) after a warm-up. Latency \
         per request, client side, in ms. Load average before: {load_before}, after: {load_after}.\n\n",
        cfg!(debug_assertions),
        args.namespaces,
        fill_wall.as_secs_f64(),
        conc.min(2),
        args.lists,
        args.rounds,
    );
    md.push_str("| identity and list | items | n | per s | min | p50 | p99 | ratio to baseline |\n|---|---|---|---|---|---|---|---|\n");
    let with_items = |r: String, items: usize| r.replacen(" | ", &format!(" | {items} | "), 1);
    md.push_str(&with_items(
        row("admin, label selector (baseline)", &b, None),
        per_tenant,
    ));
    md.push_str(&with_items(
        row("tenant user, filtered by the tenant guard", &u, Some(&b)),
        per_tenant,
    ));
    md.push_str(&with_items(
        row("admin, every namespace", &f, Some(&b)),
        total,
    ));
    md.push_str(&format!(
        "\nPer-round throughput ratio user/baseline: {} (overall {ratio:.2}).\n",
        per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(
            path,
            "tenancy",
            "Tenancy: a tenant user's filtered namespace list",
            &md,
        )?;
        eprintln!("bench tenancy: wrote {}", path.display());
    }
    Ok(())
}
