//! The rest of the Kubernetes API against one real `h8s server`: wire fidelity (bodies
//! byte for byte as kube-apiserver writes them, from a recorded corpus), `kubectl
//! api-resources` of kubectl 1.27/1.30/1.33 and the kinds added for it.

mod api_support;

use api_support::{json, Server};

/// One server for every scenario (each a function below), stopped (by PID) at the end,
/// also when a scenario fails.
#[test]
fn api_extensions() {
    let s = Server::start();
    wire_corpus_matches_kube_apiserver(&s);
    get_raw_shows_the_same_bytes(&s);
}

/// Compares a body with an expected one where `"*"` stands for any string and a bare
/// `*` for any JSON value; returns where they part.
fn matches(expected: &str, actual: &str) -> Result<(), String> {
    let (e, a) = (expected.as_bytes(), actual.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < e.len() {
        if e[i..].starts_with(b"\"*\"") && a.get(j) == Some(&b'"') {
            i += 3;
            j = skip_value(a, j).ok_or("unterminated string")?;
        } else if e[i] == b'*' && i > 0 && matches!(e[i - 1], b':' | b'[' | b',') {
            i += 1;
            j = skip_value(a, j).ok_or("unterminated value")?;
        } else if a.get(j) == Some(&e[i]) {
            i += 1;
            j += 1;
        } else {
            let ctx = |s: &str, k: usize| {
                s[k.saturating_sub(40).min(s.len())..(k + 40).min(s.len())].to_string()
            };
            return Err(format!(
                "bodies differ at byte {j}:\n expected …{}…\n actual   …{}…",
                ctx(expected, i),
                ctx(actual, j)
            ));
        }
    }
    if j == a.len() {
        Ok(())
    } else {
        Err(format!("actual body goes on: {}", &actual[j..]))
    }
}

/// The end of the JSON value starting at `j`.
fn skip_value(a: &[u8], mut j: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    loop {
        let c = *a.get(j)?;
        j += 1;
        if in_str {
            match c {
                b'\\' => j += 1,
                b'"' => {
                    in_str = false;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
                if depth < 0 {
                    return Some(j - 1);
                }
            }
            b',' if depth == 0 => return Some(j - 1),
            _ => {}
        }
    }
}

#[test]
fn matcher_understands_placeholders() {
    assert!(matches(
        r#"{"a":"*","b":*,"c":1}"#,
        r#"{"a":"x\"y","b":[{"z":"]"}],"c":1}"#
    )
    .is_ok());
    assert!(matches(r#"{"a":"*","c":1}"#, r#"{"a":"x","c":2}"#).is_err());
    assert!(matches(r#"{"a":1}"#, r#"{"a":1,"b":2}"#).is_err());
}

fn wire_corpus_matches_kube_apiserver(s: &Server) {
    let corpus = json(include_str!("fixtures/wire_corpus.json"));
    let mut failures = Vec::new();
    for case in corpus.as_array().expect("a list") {
        let about = case["about"].as_str().unwrap_or("");
        let method = case["method"].as_str().expect("method");
        let path = case["path"].as_str().expect("path");
        let body = case
            .get("body")
            .map(|b| serde_json::to_vec(b).expect("json"));
        let (code, got) = s.curl(
            method,
            path,
            body.as_ref().map(|_| "application/json"),
            body.as_deref(),
        );
        let want_code = case["code"].as_u64().expect("code") as u16;
        if code != want_code {
            failures.push(format!(
                "{about}: {method} {path}: code {code}, want {want_code}: {got}"
            ));
            continue;
        }
        if let Err(e) = matches(case["expect"].as_str().expect("expect"), got.trim_end()) {
            failures.push(format!("{about}: {method} {path}: {e}\n full body: {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn get_raw_shows_the_same_bytes(s: &Server) {
    // `kubectl get --raw` prints the body as the server wrote it.
    let out = s.kubectl(
        "1.33",
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/kubernetes",
        ],
    );
    assert!(out.starts_with(r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"kubernetes","namespace":"default","#), "{out}");
    assert!(
        out.trim_end().ends_with(r#""status":{"loadBalancer":{}}}"#),
        "{out}"
    );
    let err = s.kubectl_fails(
        "1.33",
        &["get", "--raw", "/api/v1/namespaces/default/pods/nope"],
        None,
    );
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
