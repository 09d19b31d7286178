//! `h8s bench webhook`: the cost of dynamic admission on the create path. ConfigMap creates
//! in three namespaces of one `h8s server`, same run, phases alternating: one no
//! configuration selects (the baseline), one a validating webhook selects (an HTTPS server
//! in this process that allows everything, its own CA), one a ValidatingAdmissionPolicy
//! selects (two CEL validations). Written into BENCHMARKS.md between the `webhook` markers.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::server::bench::{
    connect, drive, json_https_server, start_server, summarize, Client, Summary,
};

#[derive(clap::Args)]
pub struct Args {
    /// ConfigMaps created per case.
    #[arg(long, default_value_t = 2000)]
    pub creates: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
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

/// An HTTPS webhook on 127.0.0.1 that allows every review; returns its port and CA (PEM).
async fn allow_all_webhook() -> anyhow::Result<(u16, String)> {
    json_https_server(&["127.0.0.1", "allow.kube-system.svc"], false, |_, body| {
        let review: Value = serde_json::from_slice(body).unwrap_or_default();
        let out = json!({"apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": true}});
        (200, out)
    })
    .await
}

async fn post(c: &Client, path: &str, body: Value) -> anyhow::Result<()> {
    let (code, b) = c
        .call("POST", path, Some(serde_json::to_vec(&body)?))
        .await?;
    if code != 201 {
        bail!("POST {path}: {code} {}", String::from_utf8_lossy(&b));
    }
    Ok(())
}

async fn creates(
    c: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
    conc: usize,
) -> anyhow::Result<Summary> {
    let c2 = c.clone();
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let prefix = prefix.to_string();
    let (lat, wall) = drive(n, conc, None, move |i| {
        let c = c2.clone();
        let path = path.clone();
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{prefix}-{i:06}")}, "data": {"a": "1"}});
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

fn row(name: &str, s: &Summary, base: &Summary) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        s.n,
        s.per_sec,
        s.min,
        s.p50,
        s.p99,
        s.p50 / base.p50.max(1e-9)
    )
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let p = start_server()?;
    let c = connect(&p.url, &p.ca, &p.token, 4).await?;
    let (port, ca) = allow_all_webhook().await.context("webhook server")?;
    for (ns, label) in [
        ("plain", "none"),
        ("hooked", "webhook"),
        ("policed", "policy"),
        ("serviced", "service"),
    ] {
        post(
            &c,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"bench": label}}}),
        )
        .await?;
    }
    post(
        &c,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bench"},
        "webhooks": [{"name": "allow.bench.h8s.io",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/allow"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca.as_bytes())},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"bench": "webhook"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 5},
            {"name": "allow-svc.bench.h8s.io",
            "clientConfig": {"service": {"namespace": "kube-system", "name": "allow", "path": "/allow", "port": 443},
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca.as_bytes())},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"bench": "service"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 5}]}),
    )
    .await?;
    // The same webhook by clientConfig.service: a selector-less Service whose
    // EndpointSlice names this process (resolved to an endpoint per call).
    post(
        &c,
        "/api/v1/namespaces/kube-system/services",
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "allow", "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": port, "protocol": "TCP"}]}}),
    )
    .await?;
    post(
        &c,
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "allow-1", "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "allow"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "", "port": port, "protocol": "TCP"}]}),
    )
    .await?;
    post(
        &c,
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "bench"},
        "spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE"],
                "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]},
            "validations": [{"expression": "object.data.size() <= 16"},
                {"expression": "object.metadata.name.size() < 64"}]}}),
    )
    .await?;
    post(
        &c,
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "bench"},
        "spec": {"policyName": "bench", "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"bench": "policy"}}}}}),
    )
    .await?;
    let conc = args.concurrency;
    // Warm-up, then the cases alternate so all see the same machine.
    for ns in ["plain", "hooked", "policed", "serviced"] {
        creates(&c, ns, "warm", 100, conc).await?;
    }
    let half = args.creates / 2;
    let mut parts: Vec<Vec<Summary>> = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..2 {
        for (i, ns) in ["plain", "hooked", "policed", "serviced"]
            .iter()
            .enumerate()
        {
            parts[i].push(creates(&c, ns, &format!("r{round}"), half, conc).await?);
        }
    }
    // One summary per case: the round with the median p50 is not meaningful with two;
    // report the second round (warm caches), the first is in the same table's spirit.
    let pick = |v: &mut Vec<Summary>| {
        v.pop().unwrap_or(Summary {
            n: 0,
            min: 0.0,
            p50: 0.0,
            p99: 0.0,
            per_sec: 0.0,
        })
    };
    let base = pick(&mut parts[0]);
    let hook = pick(&mut parts[1]);
    let vap = pick(&mut parts[2]);
    let svc = pick(&mut parts[3]);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench webhook` (debug={}) on {cpus} cores shared with the client, the webhook and other work: one `h8s server` process (embedded store), the client speaks HTTP/2 over TLS (4 connections, {conc} requests in flight). ConfigMap creates in three namespaces, same run, cases alternating (a warm-up, then two rounds; the second round is shown): no admission configuration selects the first (baseline); a ValidatingWebhookConfiguration selects the second — one HTTPS call per create to a webhook in the benchmark process (rustls, its own CA; h8s keeps up to 8 idle connections per webhook) that allows everything, by `clientConfig.url`; a ValidatingAdmissionPolicy with two CEL validations selects the third; the same webhook by `clientConfig.service` selects the fourth (a selector-less Service in kube-system whose EndpointSlice names the webhook; the Service reference is resolved to an endpoint on every call). Latency per request, client side, ms; ratio is p50 over the baseline's.\n\n",
        cfg!(debug_assertions)
    );
    md.push_str(
        "| case | n | per s | min | p50 | p99 | p50 ratio |\n|---|---|---|---|---|---|---|\n",
    );
    md.push_str(&row("create, no webhook (baseline)", &base, &base));
    md.push_str(&row("create, one validating webhook", &hook, &base));
    md.push_str(&row("create, one ValidatingAdmissionPolicy", &vap, &base));
    md.push_str(&row(
        "create, one validating webhook by clientConfig.service",
        &svc,
        &base,
    ));
    println!("{md}");
    if let Some(path) = &args.write {
        crate::bench_support::write_section(
            path,
            "webhook",
            "Admission webhooks and policies (create path)",
            md.trim_end(),
        )?;
    }
    Ok(())
}
