//! `h8s bench identity`: tokens issued and validated per second by the built-in identity
//! service, and (with `--keystone-url`) by an external Keystone through the API server.
//!
//! Built-in: one fresh `h8s server` process (no agent, no controllers, no scheduler) with
//! a Tenant and a User with a password. Measured: `POST /v3/auth/tokens` with the password
//! method (an Argon2id check each), with the token method (no password), `GET
//! /v3/auth/tokens` (validation), and `GET /api` with the identity token as bearer (a
//! validation inside the Kubernetes API's authenticator chain) against the same `GET /api`
//! with the static admin token (baseline, same run).
//!
//! External (optional; Keystone must be running, e.g. from
//! /work/shared/keystone/setup_keystone.sh): a second `h8s server --keystone-url` with a
//! cache TTL of 0 s (every request validates at Keystone) and a third with the default TTL
//! (validations served from the cache); password logins through the server's `/v3`.
//! Figures go to BENCHMARKS.md under `bench:identity`.

use anyhow::{bail, Context};
use serde_json::json;

use crate::bench_support::{start_server, write_section};
use crate::server::bench::{connect, drive, loadavg, row, summarize, Client, Summary};

#[derive(clap::Args)]
pub struct Args {
    /// Password logins (each an Argon2id check).
    #[arg(long, default_value_t = 200)]
    pub password_logins: usize,
    /// Token-method issues, validations and bearer GETs.
    #[arg(long, default_value_t = 4000)]
    pub requests: usize,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// An external Keystone to measure too (`http://127.0.0.1:5000/v3`).
    #[arg(long = "keystone-url")]
    pub keystone_url: Option<String>,
    /// The Keystone user, password and project logged in as.
    #[arg(long = "keystone-user", default_value = "admin")]
    pub keystone_user: String,
    #[arg(long = "keystone-password", default_value = "secret")]
    pub keystone_password: String,
    #[arg(long = "keystone-project", default_value = "admin")]
    pub keystone_project: String,
    /// Requests against the external Keystone (it is slow: ~100 ms a validation).
    #[arg(long = "keystone-requests", default_value_t = 100)]
    pub keystone_requests: usize,
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

async fn expect(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<String>,
    want: u16,
) -> anyhow::Result<bytes::Bytes> {
    let (code, b) = c.call(method, path, body.map(String::into_bytes)).await?;
    if code != want {
        bail!("{method} {path}: {code} {}", String::from_utf8_lossy(&b));
    }
    Ok(b)
}

fn password_body(user: &str, pw: &str, project: &str) -> String {
    json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"id": "default"}, "password": pw}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
    .to_string()
}

/// A client for `/v3`, which reads Keystone's headers and ignores `Authorization`.
async fn v3(url: &str, ca: &str, conns: usize) -> anyhow::Result<Client> {
    connect(url, ca, "unused", conns).await
}

/// Issues a password token; its `X-Subject-Token`.
async fn issue(url: &str, ca: &str, body: &str) -> anyhow::Result<String> {
    let c = v3(url, ca, 1).await?;
    let (code, headers, b) = c
        .call_with_headers(
            "POST",
            "/v3/auth/tokens?nocatalog",
            Some(body.as_bytes().to_vec()),
            &[],
        )
        .await?;
    if code != 201 {
        bail!(
            "POST /v3/auth/tokens: {code} {}",
            String::from_utf8_lossy(&b)
        );
    }
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .context("no X-Subject-Token")
}

/// `n` identical requests with `conc` in flight, each answered `want`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    c: &Client,
    n: usize,
    conc: usize,
    method: &'static str,
    path: &'static str,
    body: Option<String>,
    headers: Vec<(String, String)>,
    want: u16,
) -> anyhow::Result<Summary> {
    let c = c.clone();
    let (lat, wall) = drive(n, conc, None, move |_| {
        let (c, body, headers) = (c.clone(), body.clone(), headers.clone());
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (code, _, b) = c
                .call_with_headers(method, path, body.map(String::into_bytes), &h)
                .await?;
            if code != want {
                bail!("{method} {path}: {code} {}", String::from_utf8_lossy(&b));
            }
            Ok(())
        }
    })
    .await?;
    Ok(summarize(lat, wall))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let load_before = loadavg();
    let conc = args.concurrency;
    let p = start_server(&[
        "--disable-agent",
        "--disable-controllers",
        "--disable-scheduler",
    ])?;
    let (url, ca, token) = p.endpoint()?;
    let admin = connect(&url, &ca, &token, 4).await?;
    expect(
        &admin,
        "POST",
        "/apis/tenancy.h8s.io/v1/tenants",
        Some(
            r#"{"apiVersion":"tenancy.h8s.io/v1","kind":"Tenant","metadata":{"name":"bench"}}"#
                .into(),
        ),
        201,
    )
    .await?;
    expect(
        &admin,
        "POST",
        "/apis/tenancy.h8s.io/v1/users",
        Some(r#"{"apiVersion":"tenancy.h8s.io/v1","kind":"User","metadata":{"name":"bench-user"},"spec":{"tenant":"bench"}}"#.into()),
        201,
    )
    .await?;
    expect(
        &admin,
        "POST",
        "/apis/tenancy.h8s.io/v1/users/bench-user/password",
        Some(r#"{"apiVersion":"tenancy.h8s.io/v1","kind":"UserPassword","password":"bench-password"}"#.into()),
        201,
    )
    .await?;
    let login = password_body("bench-user", "bench-password", "bench");
    let user_token = issue(&url, &ca, &login).await?;
    let anon = v3(&url, &ca, 4).await?;
    let user = connect(&url, &ca, &user_token, 4).await?;
    let tok_headers = vec![
        ("x-auth-token".to_string(), user_token.clone()),
        ("x-subject-token".to_string(), user_token.clone()),
    ];
    let token_body =
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": user_token}},
        "scope": {"project": {"name": "bench", "domain": {"id": "default"}}}}})
        .to_string();
    // Warm up.
    measure(
        &anon,
        20,
        conc,
        "GET",
        "/v3/auth/tokens?nocatalog",
        None,
        tok_headers.clone(),
        200,
    )
    .await?;
    measure(&user, 50, conc, "GET", "/api", None, vec![], 200).await?;
    measure(&admin, 50, conc, "GET", "/api", None, vec![], 200).await?;

    eprintln!("bench identity: built-in");
    let pw = measure(
        &anon,
        args.password_logins,
        conc,
        "POST",
        "/v3/auth/tokens?nocatalog",
        Some(login.clone()),
        vec![],
        201,
    )
    .await?;
    let by_token = measure(
        &anon,
        args.requests,
        conc,
        "POST",
        "/v3/auth/tokens?nocatalog",
        Some(token_body),
        vec![],
        201,
    )
    .await?;
    let validate = measure(
        &anon,
        args.requests,
        conc,
        "GET",
        "/v3/auth/tokens?nocatalog",
        None,
        tok_headers,
        200,
    )
    .await?;
    // Bearer GETs: alternate halves so load drifts hit both.
    let half = args.requests / 2;
    let b1 = measure(&admin, half, conc, "GET", "/api", None, vec![], 200).await?;
    let u1 = measure(&user, half, conc, "GET", "/api", None, vec![], 200).await?;
    let u2 = measure(&user, half, conc, "GET", "/api", None, vec![], 200).await?;
    let b2 = measure(&admin, half, conc, "GET", "/api", None, vec![], 200).await?;
    let merge = |a: Summary, b: Summary| Summary {
        n: a.n + b.n,
        min: a.min.min(b.min),
        p50: (a.p50 + b.p50) / 2.0,
        p99: a.p99.max(b.p99),
        per_sec: (a.n + b.n) as f64 / (a.n as f64 / a.per_sec + b.n as f64 / b.per_sec),
    };
    let bearer_user = merge(u1, u2);
    let bearer_admin = merge(b1, b2);
    drop(p);

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench identity` (debug={}) on {cpus} cores shared with the client and other work. \
         One `h8s server` process (embedded store, no agent, no controllers) with the built-in identity, a \
         Tenant and a User with a password. HTTP/2 with TLS, {conc} in flight. Password logins are \
         `POST /v3/auth/tokens` with the password method scoped to the tenant (each verifies an Argon2id \
         hash: 19 MiB, 2 passes, on a blocking thread) and store the new token's hash; token-method issues \
         make a new token from a valid one; validations are `GET /v3/auth/tokens` (`X-Subject-Token`); \
         bearer GETs are `GET /api` with the identity token (validated by the authenticator chain: store \
         reads of the token, user, password record and tenant) against the same GET with the static admin \
         token (baseline). Latency per request, client side, in ms.\n\n",
        cfg!(debug_assertions),
    );
    md.push_str("| request | n | per s | min | p50 | p99 | ratio to baseline |\n|---|---|---|---|---|---|---|\n");
    md.push_str(&row("built-in: token issue, password method", &pw, None));
    md.push_str(&row("built-in: token issue, token method", &by_token, None));
    md.push_str(&row(
        "built-in: token validation (`GET /v3/auth/tokens`)",
        &validate,
        None,
    ));
    md.push_str(&row(
        "admin static token, `GET /api` (baseline)",
        &bearer_admin,
        None,
    ));
    md.push_str(&row(
        "built-in identity token, `GET /api`",
        &bearer_user,
        Some(&bearer_admin),
    ));

    if let Some(ks) = &args.keystone_url {
        eprintln!("bench identity: external Keystone at {ks}");
        let n = args.keystone_requests;
        let login = password_body(
            &args.keystone_user,
            &args.keystone_password,
            &args.keystone_project,
        );
        let mut rows = Vec::new();
        for ttl in ["0s", "30s"] {
            let p = start_server(&[
                "--disable-agent",
                "--disable-controllers",
                "--disable-scheduler",
                "--keystone-url",
                ks,
                "--keystone-cache-ttl",
                ttl,
                // One gunicorn worker answers one request at a time (a bcrypt login
                // takes seconds under load): a queue must not look like an outage.
                "--keystone-timeout",
                "60s",
            ])?;
            let (url, ca, token) = p.endpoint()?;
            let admin = connect(&url, &ca, &token, 2).await?;
            let anon = v3(&url, &ca, 2).await?;
            let ks_token = issue(&url, &ca, &login).await?;
            let user = connect(&url, &ca, &ks_token, 2).await?;
            measure(&user, 5, 1, "GET", "/api", None, vec![], 200).await?;
            if ttl == "0s" {
                let issue = measure(
                    &anon,
                    n,
                    1,
                    "POST",
                    "/v3/auth/tokens?nocatalog",
                    Some(login.clone()),
                    vec![],
                    201,
                )
                .await?;
                rows.push(row(
                    "Keystone through `/v3`: token issue, password method",
                    &issue,
                    None,
                ));
            }
            let base = measure(&admin, n * 10, conc, "GET", "/api", None, vec![], 200).await?;
            let got = measure(
                &user,
                if ttl == "0s" { n } else { n * 10 },
                if ttl == "0s" { 1 } else { conc },
                "GET",
                "/api",
                None,
                vec![],
                200,
            )
            .await?;
            let what = if ttl == "0s" {
                "Keystone token, `GET /api`, cache TTL 0 (validated at Keystone each time)"
            } else {
                "Keystone token, `GET /api`, cache TTL 30 s (validated from the cache)"
            };
            rows.push(row(
                &format!("admin static token, `GET /api` (baseline of the next row, TTL {ttl})"),
                &base,
                None,
            ));
            rows.push(row(what, &got, Some(&base)));
            drop(p);
        }
        md.push_str(&format!(
            "\nExternal Keystone (OpenStack Keystone from PyPI, SQLite, fernet tokens, gunicorn with 1 worker, \
             on the same machine), through `h8s server --keystone-url`: password logins pass through the \
             server's `/v3` to Keystone; bearer GETs with a Keystone token validate it with Keystone \
             (`GET /v3/auth/tokens?nocatalog`) unless the server validated it less than the cache TTL ago. \
             {n} requests against Keystone per row, one at a time (Keystone runs one worker), {} with {conc} in \
             flight when served from the cache.\n\n",
            n * 10
        ));
        md.push_str("| request | n | per s | min | p50 | p99 | ratio to baseline |\n|---|---|---|---|---|---|---|\n");
        for r in rows {
            md.push_str(&r);
        }
    }
    md.push_str(&format!(
        "\nLoad average before: {load_before}, after: {}.\n",
        loadavg()
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        write_section(
            path,
            "identity",
            "Identity: tokens issued and validated per second",
            &md,
        )?;
        eprintln!("bench identity: wrote {}", path.display());
    }
    Ok(())
}
