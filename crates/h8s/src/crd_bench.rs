//! `h8s bench crd`: create and get throughput of a custom resource whose definition has a
//! ~50 KB structural schema and CEL rules, against ConfigMaps of the same size in the same
//! run (same server process, same client, same concurrency), written into BENCHMARKS.md
//! between the `crd` markers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::server::bench::{connect, drive, start_server, summarize, Client, Summary};

#[derive(clap::Args)]
pub struct Args {
    /// Objects created per kind.
    #[arg(long, default_value_t = 3000)]
    pub creates: usize,
    /// Gets per kind.
    #[arg(long, default_value_t = 10000)]
    pub gets: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The BENCHMARKS.md to update (nothing is written when absent).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

const FIELDS: usize = 48;

/// A definition with a ~50 KB schema: `FIELDS` object fields under `spec`, each with
/// typed, described, constrained members, and CEL rules on `spec`.
pub fn definition() -> Value {
    let mut props = serde_json::Map::new();
    for i in 0..FIELDS {
        props.insert(
            format!("field{i:02}"),
            json!({
                "type": "object",
                "description": format!("Field {i} of the benchmark spec: an object with a name, a size, a mode, labels and a list of ports, each constrained the way operator schemas constrain them."),
                "properties": {
                    "name": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                             "description": "Name is a DNS label that identifies this entry within the spec."},
                    "size": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 1,
                             "description": "Size is a bounded count used by the benchmark."},
                    "mode": {"type": "string", "enum": ["Fast", "Slow", "Balanced"], "default": "Balanced",
                             "description": "Mode selects one of the enumerated behaviours."},
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63},
                               "description": "Labels are free-form string pairs."},
                    "ports": {"type": "array", "maxItems": 8, "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["name"],
                              "description": "Ports are keyed by name.",
                              "items": {"type": "object", "required": ["name"], "properties": {
                                  "name": {"type": "string", "maxLength": 15},
                                  "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
                },
            }),
        );
    }
    props.insert("min".into(), json!({"type": "integer"}));
    props.insert("max".into(), json!({"type": "integer"}));
    props.insert("owner".into(), json!({"type": "string"}));
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "benchmarks.bench.example.com"},
        "spec": {
            "group": "bench.example.com",
            "scope": "Namespaced",
            "names": {"plural": "benchmarks", "kind": "Benchmark"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {
                        "type": "object",
                        "properties": props,
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "messageExpression": "'min ' + string(self.min) + ' over max'"},
                            {"rule": "!has(self.owner) || self.owner.endsWith('@example.com')", "message": "owner"},
                            {"rule": "!has(self.field00) || self.field00.size <= self.max * 1000", "message": "size"},
                            {"rule": "!has(self.field01) || !has(self.field01.ports) || self.field01.ports.all(p, p.port > 0)", "message": "ports"},
                            {"rule": "!has(self.field02) || self.field02.name.size() > 0", "message": "name"},
                        ],
                    },
                }}},
            }],
        },
    })
}

/// A valid object filling a third of the fields.
fn object(name: &str) -> Vec<u8> {
    let mut spec = serde_json::Map::new();
    for i in 0..FIELDS / 3 {
        spec.insert(
            format!("field{i:02}"),
            json!({"name": format!("entry-{i}"), "size": i, "mode": "Fast",
                   "labels": {"tier": "bench", "index": i.to_string()},
                   "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
        );
    }
    spec.insert("min".into(), json!(1));
    spec.insert("max".into(), json!(100));
    spec.insert("owner".into(), json!("bench@example.com"));
    serde_json::to_vec(
        &json!({"apiVersion": "bench.example.com/v1", "kind": "Benchmark",
        "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap_or_default()
}

/// A ConfigMap of about the custom object's size.
fn config_map(name: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"payload": "x".repeat(size)}}))
    .unwrap_or_default()
}

async fn creates(
    c: &Client,
    path: String,
    n: usize,
    conc: usize,
    body: fn(&str) -> Vec<u8>,
) -> anyhow::Result<Summary> {
    let c2 = c.clone();
    let (lat, wall) = drive(n, conc, None, move |i| {
        let c = c2.clone();
        let path = path.clone();
        async move {
            let (code, b) = c
                .call("POST", &path, Some(body(&format!("o-{i:06}"))))
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

async fn gets(
    c: &Client,
    path: String,
    have: usize,
    n: usize,
    conc: usize,
) -> anyhow::Result<Summary> {
    let c2 = c.clone();
    let (lat, wall) = drive(n, conc, None, move |i| {
        let c = c2.clone();
        let p = format!("{path}/o-{:06}", (i * 7919) % have);
        async move {
            let (code, _) = c.call("GET", &p, None).await?;
            if code != 200 {
                bail!("get: {code}");
            }
            Ok(())
        }
    })
    .await?;
    Ok(summarize(lat, wall))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

fn row(name: &str, s: &Summary, base: &Summary) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        s.n,
        s.per_sec,
        s.min,
        s.p50,
        s.p99,
        s.per_sec / base.per_sec.max(1e-9)
    )
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let p = start_server()?;
    let c = connect(&p.url, &p.ca, &p.token, 4).await?;
    let def = definition();
    let schema_bytes = serde_json::to_vec(&def["spec"]["versions"][0]["schema"])?.len();
    let (code, b) = c
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(serde_json::to_vec(&def)?),
        )
        .await?;
    if code != 201 {
        bail!(
            "creating the definition: {code} {}",
            String::from_utf8_lossy(&b)
        );
    }
    let t0 = Instant::now();
    loop {
        let (code, _) = c
            .call(
                "GET",
                "/apis/bench.example.com/v1/namespaces/default/benchmarks",
                None,
            )
            .await?;
        if code == 200 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the custom resource was not served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let established = t0.elapsed();
    let obj_bytes = object("o-000000").len();
    let cm_size = obj_bytes.saturating_sub(120).max(1);
    static CM_SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let _ = CM_SIZE.set(cm_size);
    fn cm(name: &str) -> Vec<u8> {
        config_map(name, *CM_SIZE.get().unwrap_or(&1))
    }
    let cm_path = "/api/v1/namespaces/default/configmaps".to_string();
    let cr_path = "/apis/bench.example.com/v1/namespaces/default/benchmarks".to_string();
    let conc = args.concurrency;
    // Warm-up, then the phases alternate kinds so both see the same machine.
    creates(&c, cm_path.clone(), 200, conc, |n| cm(&format!("w{n}"))).await?;
    creates(&c, cr_path.clone(), 200, conc, |n| object(&format!("w{n}"))).await?;
    let cm_create = creates(&c, cm_path.clone(), args.creates, conc, cm).await?;
    let cr_create = creates(&c, cr_path.clone(), args.creates, conc, object).await?;
    let cm_get = gets(&c, cm_path.clone(), args.creates, args.gets, conc).await?;
    let cr_get = gets(&c, cr_path.clone(), args.creates, args.gets, conc).await?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut md = format!(
        "Measured by `h8s bench crd` (debug={}) on {cpus} cores shared with the client and other work: one `h8s server` process (embedded store), the client speaks HTTP/2 over TLS (4 connections, {conc} requests in flight). The custom resource's definition has a {} KB `openAPIV3Schema` ({FIELDS} object fields of five constrained members each: patterns, enums, bounds, defaults, a list-type map) and 5 CEL rules on `spec` (one with `messageExpression`, one comprehension); each object is {} bytes of JSON filling a third of the fields, so every create prunes, defaults, validates the schema and runs the rules, and every get defaults on read. The baseline is ConfigMaps of the same JSON size, in the same run, phases alternating. The definition was served {} ms after its create. Latency per request, client side, ms.\n\n",
        cfg!(debug_assertions),
        schema_bytes / 1000,
        obj_bytes,
        established.as_millis()
    );
    md.push_str("| operation | n | per s | min | p50 | p99 | ratio to ConfigMap |\n|---|---|---|---|---|---|---|\n");
    md.push_str(&row("create ConfigMap (baseline)", &cm_create, &cm_create));
    md.push_str(&row("create custom resource", &cr_create, &cm_create));
    md.push_str(&row("get ConfigMap (baseline)", &cm_get, &cm_get));
    md.push_str(&row("get custom resource", &cr_get, &cm_get));
    println!("{md}");
    if let Some(path) = &args.write {
        crate::bench_support::write_section(
            path,
            "crd",
            "Custom resources (CRD with a 50 KB schema and CEL rules)",
            md.trim_end(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_is_about_50_kb_and_the_object_valid_json() {
        let d = super::definition();
        let n = serde_json::to_vec(&d["spec"]["versions"][0]["schema"])
            .unwrap()
            .len();
        assert!((45_000..70_000).contains(&n), "schema is {n} bytes");
        let o: serde_json::Value = serde_json::from_slice(&super::object("x")).unwrap();
        assert_eq!(o["spec"]["min"], 1);
    }
}
