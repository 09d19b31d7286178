//! `h8s bench rbac`: what RBAC costs a read. One fresh `h8s server` process with
//! `--roles` Roles and as many RoleBindings spread over `--namespaces` namespaces (for
//! other users), plus one Role and RoleBinding that let a tenant user (static token, groups
//! `h8s:tenant:acme` and `devs`) read ConfigMaps in the benchmark namespace. GETs of the
//! same objects as that user and as the admin (`system:masters`) alternate in rounds in the
//! same run; the figures and the ratio go to BENCHMARKS.md under `bench:rbac`.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::bench_support::{start_server, write_section};
use crate::server::bench::{connect, create_ns, drive, fill, gets, loadavg, row, summarize};

#[derive(clap::Args)]
pub struct Args {
    /// Roles (and as many RoleBindings) in the cluster besides the user's own.
    #[arg(long, default_value_t = 1000)]
    pub roles: usize,
    /// Namespaces they are spread over.
    #[arg(long, default_value_t = 100)]
    pub namespaces: usize,
    /// ConfigMaps read.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// GETs per identity and round.
    #[arg(long, default_value_t = 10000)]
    pub gets: usize,
    /// Rounds, each one run of GETs per identity (which goes first alternates).
    #[arg(long, default_value_t = 8)]
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

const USER_TOKEN: &str = "rbac-bench-user-token";

async fn post(c: &crate::server::bench::Client, path: &str, body: String) -> anyhow::Result<()> {
    let (code, b) = c.call("POST", path, Some(body.into_bytes())).await?;
    if code != 201 {
        bail!("POST {path}: {code} {}", String::from_utf8_lossy(&b));
    }
    Ok(())
}

fn role(ns: &str, name: &str, resource: &str) -> String {
    format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{{"name":"{name}","namespace":"{ns}"}},"rules":[{{"apiGroups":[""],"resources":["{resource}"],"verbs":["get","list","watch"]}}]}}"#
    )
}

fn binding(ns: &str, name: &str, role: &str, user: &str) -> String {
    format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{{"name":"{name}","namespace":"{ns}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"{role}"}},"subjects":[{{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"{user}"}},{{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"team-{user}"}}]}}"#
    )
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let p = start_server(&["--disable-agent"])?;
    let data = p.kubeconfig.parent().context("data dir")?.to_path_buf();
    let (url, ca, token) = p.endpoint()?;
    std::fs::write(
        data.join("tokens.csv"),
        format!("{USER_TOKEN},alice,alice-uid,\"h8s:tenant:acme,devs\"\n"),
    )?;
    let admin = connect(&url, &ca, &token, 4).await?;
    let user = connect(&url, &ca, USER_TOKEN, 4).await?;
    let conc = args.concurrency;

    eprintln!(
        "bench rbac: {} Roles and RoleBindings over {} namespaces",
        args.roles, args.namespaces
    );
    let nss = args.namespaces.max(1);
    for n in 0..nss {
        create_ns(&admin, &format!("t-{n:03}")).await?;
    }
    let a2 = admin.clone();
    drive(args.roles, conc, None, move |i| {
        let c = a2.clone();
        async move {
            let ns = format!("t-{:03}", i % nss);
            let name = format!("r-{i:05}");
            let res = ["pods", "configmaps", "secrets", "services"][i % 4];
            post(
                &c,
                &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
                role(&ns, &name, res),
            )
            .await?;
            post(
                &c,
                &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
                binding(&ns, &format!("b-{i:05}"), &name, &format!("user-{i:05}")),
            )
            .await
        }
    })
    .await?;
    create_ns(&admin, "bench").await?;
    post(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/roles",
        role("bench", "cm-reader", "configmaps"),
    )
    .await?;
    post(
        &admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings",
        binding("bench", "alice-cm", "cm-reader", "alice"),
    )
    .await?;
    fill(&admin, "bench", args.objects, conc).await?;
    // The user really is confined: its reads elsewhere are refused.
    let (code, _) = user
        .call("GET", "/api/v1/namespaces/t-000/configmaps", None)
        .await?;
    if code != 403 {
        bail!("the user should not read t-000, got {code}");
    }

    let mut admin_lat = Vec::new();
    let mut user_lat = Vec::new();
    let (mut admin_wall, mut user_wall) = (Duration::ZERO, Duration::ZERO);
    let mut per_round = Vec::new();
    // Warm both paths once.
    gets(&admin, "bench", args.objects, 1000, conc, None).await?;
    gets(&user, "bench", args.objects, 1000, conc, None).await?;
    for r in 0..args.rounds {
        eprintln!("bench rbac: round {}", r + 1);
        // Alternate which identity goes first, so that drift in the machine's load
        // weighs on both alike.
        let order: [bool; 2] = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut round = [0.0f64; 2];
        for is_admin in order {
            let c = if is_admin { &admin } else { &user };
            let (l, w) = gets(c, "bench", args.objects, args.gets, conc, None).await?;
            let rate = summarize(l.clone(), w).per_sec;
            if is_admin {
                admin_lat.extend(l);
                admin_wall += w;
                round[0] = rate;
            } else {
                user_lat.extend(l);
                user_wall += w;
                round[1] = rate;
            }
        }
        per_round.push(round[1] / round[0].max(1e-9));
    }
    let a = summarize(admin_lat, admin_wall);
    let u = summarize(user_lat, user_wall);
    let ratio = u.per_sec / a.per_sec.max(1e-9);
    let load_after = loadavg();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench rbac` (debug={}) on {cpus} cores shared with the client and other work. One \
         `h8s server` process (embedded store, no agent) holds {} Roles and {} RoleBindings over {} namespaces \
         (each bound to its own user and group) besides the benchmark user's own Role and RoleBinding in \
         namespace `bench`. The user authenticates with a static token (groups `h8s:tenant:acme`, `devs`, \
         `system:authenticated`) and is authorized by RBAC (Node authorizer, then the RBAC index: \
         bindings by subject); the admin is in `system:masters`. Both GET the same {} ConfigMaps over HTTP/2 \
         with TLS, {conc} in flight, {} GETs each per round, in {} rounds (which identity goes first \
         alternates) after a warm-up. Latency per request, client side, in ms. Load average before: {load_before}, after: \
         {load_after}.\n\n",
        cfg!(debug_assertions),
        args.roles,
        args.roles,
        nss,
        args.objects,
        args.gets,
        args.rounds,
    );
    md.push_str("| identity | n | per s | min | p50 | p99 | ratio to admin |\n|---|---|---|---|---|---|---|\n");
    md.push_str(&row("admin (system:masters, baseline)", &a, None));
    md.push_str(&row("tenant user through RBAC", &u, Some(&a)));
    let (rmin, rmed, _) = crate::bench_support::stats(&mut per_round.clone());
    md.push_str(&format!(
        "\nPer-round throughput ratio user/admin (min {rmin:.2}, median {rmed:.2}): {}. Goal ≥ 0.90 \
         (overall ratio): {}.\n",
        per_round
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        if ratio >= 0.9 { "met" } else { "missed" }
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(path, "rbac", "RBAC: GET throughput of a tenant user", &md)?;
        eprintln!("bench rbac: wrote {}", path.display());
    }
    Ok(())
}
