//! schemathesis (PyPI, installed by `scripts/setup.d/60-apifuzz.sh`) against the real
//! `h8s server`: every operation of the server's own OpenAPI v2 document, then those of a
//! few `/openapi/v3` group-version documents, is called with generated path, query and
//! body values (valid and invalid), and no response may be a server error (≥ 500) or a
//! dropped connection. Streaming parameters (`watch`, `follow`) are
//! taken out of the document first: a watch that streams until the client gives up is the
//! intended behaviour, exercised by the watch tests, not something to fuzz.

mod api_support;

use std::path::PathBuf;
use std::process::Command;

use api_support::Server;
use serde_json::Value;

fn schemathesis() -> PathBuf {
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"));
    cache.join("schemathesis/bin/schemathesis")
}

/// Drops the streaming query parameters from every operation of an OpenAPI v2 document.
fn without_streaming(mut doc: Value) -> Value {
    const STREAMING: &[&str] = &["watch", "follow"];
    let is_streaming = |p: &Value| {
        p["in"] == "query" && p["name"].as_str().is_some_and(|n| STREAMING.contains(&n))
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (key, op) in item.iter_mut() {
                let params = if key == "parameters" {
                    op.as_array_mut()
                } else {
                    op.get_mut("parameters").and_then(Value::as_array_mut)
                };
                if let Some(params) = params {
                    params.retain(|p| !is_streaming(p));
                }
            }
        }
    }
    doc
}

#[test]
fn generated_requests_never_get_a_server_error() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: run scripts/setup",
        st.display()
    );
    let srv = Server::start();
    let (code, body) = srv.curl("GET", "/openapi/v2", None, None);
    assert_eq!(code, 200, "{body}");
    let doc = without_streaming(api_support::json(&body));
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| {
            i.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum();
    assert!(
        operations > 300,
        "only {operations} operations in the document"
    );
    let spec = srv.dir.path().join("openapi-v2.json");
    std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
    let examples = std::env::var("H8S_FUZZ_EXAMPLES").unwrap_or_else(|_| "2".into());
    run(&st, &srv, &spec, &examples);

    // The OpenAPI v3 documents of a few group versions (the same operations with v3
    // schemas: `nullable`, `oneOf`, request bodies by media type), one example each.
    let (code, body) = srv.curl("GET", "/openapi/v3", None, None);
    assert_eq!(code, 200, "{body}");
    let index = api_support::json(&body);
    for gv in [
        "apis/apps/v1",
        "apis/flowcontrol.apiserver.k8s.io/v1",
        "apis/networking.k8s.io/v1",
    ] {
        let url = index["paths"][gv]["serverRelativeURL"]
            .as_str()
            .unwrap_or_else(|| panic!("{gv} is not in the v3 index: {index}"));
        let (code, body) = srv.curl("GET", url, None, None);
        assert_eq!(code, 200, "{body}");
        let doc = without_streaming(api_support::json(&body));
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{gv}: not an OpenAPI 3 document"
        );
        let spec = srv
            .dir
            .path()
            .join(format!("openapi-v3-{}.json", gv.replace('/', "_")));
        std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
        run(&st, &srv, &spec, "1");
    }
}

/// schemathesis's fuzzing phase against `spec`, `examples` per operation: it must find
/// no response ≥ 500 and no dropped connection.
fn run(st: &std::path::Path, srv: &Server, spec: &std::path::Path, examples: &str) {
    let report = srv.dir.path().join("report");
    let out = Command::new(st)
        // Its cache (`.schemathesis/`) goes to the test's temp dir, not the source tree.
        .current_dir(srv.dir.path())
        .arg("run")
        .arg(spec)
        .args(["--url", &srv.url])
        .args(["-H", &format!("Authorization: Bearer {}", srv.token)])
        .arg("--tls-verify")
        .arg(srv.data_dir().join("ca.crt"))
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "fuzzing"])
        .args(["--max-examples", examples])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .arg("--continue-on-failure")
        .arg("--no-color")
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .output()
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .find("SUMMARY")
        .map(|i| &stdout[i..])
        .unwrap_or(&stdout);
    eprintln!("{}: {summary}", spec.display());
    assert!(
        out.status.success(),
        "schemathesis found server errors or dropped connections in {} (report in {}):\n{}\n{}",
        spec.display(),
        report.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("generated") && stdout.contains("passed"),
        "schemathesis ran no test cases:\n{stdout}"
    );
}
