//! `h8s bench extensions`: what the API's extension points cost per request, each against
//! a baseline in the same run, phases alternating:
//!
//! - a CRD conversion webhook: GETs of a custom object in the served version `v2` (one
//!   `ConversionReview` round trip to an HTTPS webhook in this process per object) against
//!   GETs of the same object in the storage version `v1` (no webhook); and the same for a
//!   list of 50 objects;
//! - the aggregator: GETs of an object of an aggregated API through `h8s server` (authn,
//!   authz, the front-proxy hop to an HTTPS server in this process) against the same GETs
//!   sent to that server directly.
//!
//! Written into BENCHMARKS.md between the `extensions` markers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::server::bench::{
    connect, drive, json_https_server, start_server, summarize, Client, Summary,
};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per case and round.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Rounds (cases alternate within each).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
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

/// The custom resources' group.
const GROUP: &str = "bench.h8s.io";
/// The aggregated API's group (another: a group version a CRD serves is never proxied).
const AGG: &str = "agg.bench.h8s.io";

/// What the in-process HTTPS server answers: conversion reviews, and the aggregated API
/// (`agg.bench.h8s.io/v1`, kind Widget).
fn answer(path: &str, body: &[u8]) -> (u16, Value) {
    if path == "/convert" {
        let review: Value = serde_json::from_slice(body).unwrap_or_default();
        let req = &review["request"];
        let desired = req["desiredAPIVersion"].as_str().unwrap_or("").to_string();
        let objs: Vec<Value> = req["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut o| {
                let n = o["spec"]["replicas"]
                    .as_i64()
                    .or(o["spec"]["count"].as_i64());
                o["spec"] = if desired.ends_with("/v2") {
                    json!({"count": n})
                } else {
                    json!({"replicas": n})
                };
                o["apiVersion"] = json!(desired);
                o
            })
            .collect();
        return (
            200,
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": req["uid"], "convertedObjects": objs,
                    "result": {"status": "Success"}}}),
        );
    }
    let gv = format!("/apis/{AGG}/v1");
    if path == gv {
        return (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{AGG}/v1"),
                "resources": [{"name": "widgets", "singularName": "widget", "namespaced": true,
                    "kind": "Widget", "verbs": ["get", "list"]}]}),
        );
    }
    if let Some(name) = path.strip_prefix(&format!("{gv}/namespaces/default/widgets/")) {
        return (
            200,
            json!({"apiVersion": format!("{AGG}/v1"), "kind": "Widget",
                "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
                "spec": {"size": 3}}),
        );
    }
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
    )
}

/// The HTTPS server on 127.0.0.1 (its own CA; HTTP/1.1 for h8s, HTTP/2 for the direct
/// client, by ALPN); returns its port and CA (PEM).
async fn backend() -> anyhow::Result<(u16, String)> {
    json_https_server(&["127.0.0.1", "bench-agg.kube-system.svc"], true, answer).await
}

async fn call_ok(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
    let (code, b) = c.call(method, path, body).await?;
    if !(200..300).contains(&code) {
        bail!("{method} {path}: {code} {}", String::from_utf8_lossy(&b));
    }
    Ok(serde_json::from_slice(&b).unwrap_or_default())
}

/// `n` GETs of `path` with `conc` in flight, each answer checked with `check`.
async fn gets(
    c: &Client,
    path: String,
    n: usize,
    conc: usize,
    check: fn(&Value) -> bool,
) -> anyhow::Result<Summary> {
    let c = c.clone();
    let (lat, wall) = drive(n, conc, None, move |_| {
        let c = c.clone();
        let path = path.clone();
        async move {
            let (code, b) = c.call("GET", &path, None).await?;
            let v: Value = serde_json::from_slice(&b).unwrap_or_default();
            if code != 200 || !check(&v) {
                bail!("GET {path}: {code} {}", String::from_utf8_lossy(&b));
            }
            Ok(())
        }
    })
    .await?;
    Ok(summarize(lat, wall))
}

/// Waits until `path`'s object has condition `cond` True.
async fn wait_condition(c: &Client, path: &str, cond: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut last = Value::Null;
    while t0.elapsed() < Duration::from_secs(60) {
        if let Ok(o) = call_ok(c, "GET", path, None).await {
            last = o["status"].clone();
            let ok = o["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == cond && x["status"] == "True")
            });
            if ok {
                return Ok(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{path} never {cond}: {last}")
}

fn row(name: &str, s: &Summary, base: &Summary) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} |\n",
        s.n,
        s.per_sec,
        s.min,
        s.p50,
        s.p99,
        s.p50 / base.p50.max(1e-9),
        s.p50 - base.p50
    )
}

/// The round with the median p50 of a case.
fn median_round(mut v: Vec<Summary>) -> Summary {
    v.sort_by(|a, b| a.p50.total_cmp(&b.p50));
    let i = v.len() / 2;
    v.swap_remove(i)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let p = start_server()?;
    let c = connect(&p.url, &p.ca, &p.token, 4).await?;
    let (port, ca) = backend().await.context("backend server")?;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());

    // The CRD: v1 stored, v2 served through the webhook.
    let version = |name: &str, storage: bool, field: &str| {
        json!({"name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {field: {"type": "integer"}}}}}}})
    };
    call_ok(
        &c,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("things.{GROUP}")},
            "spec": {"group": GROUP, "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [version("v1", true, "replicas"), version("v2", false, "count")],
                "conversion": {"strategy": "Webhook", "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": format!("https://127.0.0.1:{port}/convert"),
                        "caBundle": ca_b64}}}}}),
        ),
    )
    .await?;
    wait_condition(
        &c,
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/things.{GROUP}"),
        "Established",
    )
    .await?;
    let things = |v: &str| format!("/apis/{GROUP}/{v}/namespaces/default/things");
    for i in 0..50 {
        call_ok(
            &c,
            "POST",
            &things("v1"),
            Some(json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Thing",
                "metadata": {"name": format!("t{i:02}")}, "spec": {"replicas": i}})),
        )
        .await?;
    }

    // The aggregated API: a selector-less Service whose EndpointSlice is the backend.
    call_ok(
        &c,
        "POST",
        "/api/v1/namespaces/kube-system/services",
        Some(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bench-agg", "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": port, "protocol": "TCP"}]}})),
    )
    .await?;
    call_ok(
        &c,
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
        Some(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bench-agg-1", "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "bench-agg"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "", "port": port, "protocol": "TCP"}]}),
        ),
    )
    .await?;
    call_ok(
        &c,
        "POST",
        "/apis/apiregistration.k8s.io/v1/apiservices",
        Some(
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": format!("v1.{AGG}")},
            "spec": {"group": AGG, "version": "v1", "groupPriorityMinimum": 1000,
                "versionPriority": 15, "caBundle": ca_b64,
                "service": {"namespace": "kube-system", "name": "bench-agg", "port": 443}}}),
        ),
    )
    .await?;
    let available = wait_condition(
        &c,
        &format!("/apis/apiregistration.k8s.io/v1/apiservices/v1.{AGG}"),
        "Available",
    )
    .await?;
    let direct = connect(&format!("https://127.0.0.1:{port}"), &ca, "unused", 4).await?;

    let conc = args.concurrency;
    let n = args.requests;
    let widget = format!("/apis/{AGG}/v1/namespaces/default/widgets/w1");
    fn obj_v1(v: &Value) -> bool {
        v["spec"]["replicas"] == 7
    }
    fn obj_v2(v: &Value) -> bool {
        v["spec"]["count"] == 7 && v["apiVersion"] == "bench.h8s.io/v2"
    }
    fn list_v1(v: &Value) -> bool {
        v["items"].as_array().map(Vec::len) == Some(50)
    }
    fn list_v2(v: &Value) -> bool {
        list_v1(v) && v["items"][0]["apiVersion"] == "bench.h8s.io/v2"
    }
    fn widget_ok(v: &Value) -> bool {
        v["kind"] == "Widget"
    }
    // Warm-up of every path.
    gets(&c, format!("{}/t07", things("v2")), 50, conc, obj_v2).await?;
    gets(&c, widget.clone(), 50, conc, widget_ok).await?;
    gets(&direct, widget.clone(), 50, conc, widget_ok).await?;
    let mut cases: Vec<Vec<Summary>> = (0..6).map(|_| Vec::new()).collect();
    for _ in 0..args.rounds {
        cases[0].push(gets(&c, format!("{}/t07", things("v1")), n, conc, obj_v1).await?);
        cases[1].push(gets(&c, format!("{}/t07", things("v2")), n, conc, obj_v2).await?);
        cases[2].push(gets(&c, things("v1"), n / 10, conc, list_v1).await?);
        cases[3].push(gets(&c, things("v2"), n / 10, conc, list_v2).await?);
        cases[4].push(gets(&direct, widget.clone(), n, conc, widget_ok).await?);
        cases[5].push(gets(&c, widget.clone(), n, conc, widget_ok).await?);
    }
    let mut s = cases.into_iter().map(median_round);
    let mut next = || s.next().context("a case");
    let (get_v1, get_v2, list_v1s, list_v2s, direct_s, proxied) =
        (next()?, next()?, next()?, next()?, next()?, next()?);

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench extensions --requests {n} --rounds {}` (debug={}) on {cpus} cores shared with the client, the backend and other work: one `h8s server` process (embedded store); the client speaks HTTP/2 over TLS (4 connections, {conc} requests in flight). One HTTPS server in the benchmark process (rustls, its own CA) is both the CRD's conversion webhook and an aggregated API server (`{AGG}/v1`, registered by an APIService over a selector-less Service and EndpointSlice; Available {:.0} ms after its create). Cases alternate within each round after a warm-up; each row is the round with the median p50. Latency per request, client side, ms; ratio and Δ are the p50 against the row's baseline. h8s keeps and reuses its HTTP/1.1 connections to the backend, both the conversion webhook's and the aggregator's (front-proxy client certificate); the direct client reuses its HTTP/2 connections.\n\n",
        args.rounds,
        cfg!(debug_assertions),
        available.as_secs_f64() * 1000.0,
    );
    md.push_str("| case | n | per s | min | p50 | p99 | p50 ratio | Δ p50 ms |\n|---|---|---|---|---|---|---|---|\n");
    md.push_str(&row(
        "GET custom object, storage version v1 (baseline)",
        &get_v1,
        &get_v1,
    ));
    md.push_str(&row(
        "GET custom object in v2: one ConversionReview round trip",
        &get_v2,
        &get_v1,
    ));
    md.push_str(&row(
        "LIST 50 custom objects, v1 (baseline)",
        &list_v1s,
        &list_v1s,
    ));
    md.push_str(&row(
        "LIST 50 custom objects in v2 (one review for the page)",
        &list_v2s,
        &list_v1s,
    ));
    md.push_str(&row(
        "GET from the aggregated server directly (baseline)",
        &direct_s,
        &direct_s,
    ));
    md.push_str(&row(
        "GET through h8s's aggregator (authn, authz, front-proxy hop)",
        &proxied,
        &direct_s,
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        crate::bench_support::write_section(
            path,
            "extensions",
            "API extensions: CRD conversion webhook and aggregated API proxy",
            md.trim_end(),
        )?;
    }
    Ok(())
}
