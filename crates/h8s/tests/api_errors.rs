//! Bad input and the Status answers for it, over real HTTPS (curl), plus kubectl's view
//! of the same errors.

mod api_support;

use api_support::{json, Server};

fn status(body: &str) -> serde_json::Value {
    let v = json(body);
    assert_eq!(v["kind"], "Status", "{body}");
    assert_eq!(v["apiVersion"], "v1", "{body}");
    v
}

#[test]
fn errors_are_statuses_with_the_right_codes() {
    let s = Server::start();
    let cms = "/api/v1/namespaces/default/configmaps";

    // No credentials, or wrong ones: 401.
    let (c, b) = s.curl_with("GET", "/api/v1/namespaces", None, None, None);
    assert_eq!(c, 401);
    assert_eq!(status(&b)["reason"], "Unauthorized");
    let (c, _) = s.curl_with("GET", "/api/v1/namespaces", None, None, Some("wrong"));
    assert_eq!(c, 401);
    // Health and version are public.
    let (c, b) = s.curl_with("GET", "/healthz", None, None, None);
    assert_eq!((c, b.as_str()), (200, "ok"));
    let (c, b) = s.curl_with("GET", "/version/", None, None, None);
    assert_eq!(c, 200);
    let v = json(&b);
    assert_eq!(v["major"], "1");
    // Stamped by the binary's build script from this checkout: the commit and its date.
    let commit = v["gitCommit"].as_str().unwrap_or_default();
    assert!(
        commit.len() == 40 && commit.bytes().all(|c| c.is_ascii_hexdigit()),
        "{v}"
    );
    assert!(
        v["buildDate"].as_str().unwrap_or_default().ends_with('Z'),
        "{v}"
    );
    assert_ne!(v["buildDate"], "1970-01-01T00:00:00Z", "{v}");

    // 404 for unknown paths and objects.
    let (c, b) = s.curl("GET", "/api/v1/nothings", None, None);
    assert_eq!(c, 404);
    assert_eq!(status(&b)["reason"], "NotFound");
    let (c, b) = s.curl("GET", &format!("{cms}/missing"), None, None);
    assert_eq!(c, 404);
    let st = status(&b);
    assert_eq!(st["message"], "configmaps \"missing\" not found");
    assert_eq!(st["details"]["kind"], "configmaps");

    // Malformed JSON and YAML: 400.
    let (c, b) = s.curl("POST", cms, Some("application/json"), Some(b"{not json"));
    assert_eq!(c, 400, "{b}");
    assert_eq!(status(&b)["reason"], "BadRequest");
    let (c, _) = s.curl("POST", cms, Some("application/yaml"), Some(b"a: [unclosed"));
    assert_eq!(c, 400);
    // Malformed protobuf: 400.
    let (c, _) = s.curl(
        "POST",
        cms,
        Some("application/vnd.kubernetes.protobuf"),
        Some(b"k8s\x00\x0a\xff\xff"),
    );
    assert_eq!(c, 400);
    // Unsupported media type: 415.
    let (c, b) = s.curl("POST", cms, Some("text/html"), Some(b"<p>"));
    assert_eq!(c, 415);
    assert_eq!(status(&b)["reason"], "UnsupportedMediaType");

    // No Content-Type at all means JSON (the Python client).
    let (c, b) = s.curl(
        "POST",
        cms,
        None,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"plain"}}"#),
    );
    assert_eq!(c, 201, "{b}");
    // Again: 409 AlreadyExists.
    let (c, b) = s.curl(
        "POST",
        cms,
        None,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"plain"}}"#),
    );
    assert_eq!(c, 409);
    assert_eq!(status(&b)["reason"], "AlreadyExists");
    // Stale resourceVersion on update: 409 Conflict.
    let (c, b) = s.curl(
        "PUT",
        &format!("{cms}/plain"),
        None,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"plain","resourceVersion":"1"},"data":{"a":"b"}}"#),
    );
    assert_eq!(c, 409, "{b}");
    assert_eq!(status(&b)["reason"], "Conflict");

    // Over 3 MiB: 413.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let (c, b) = s.curl("POST", cms, Some("application/json"), Some(big.as_bytes()));
    assert_eq!(c, 413, "{b}");
    assert_eq!(status(&b)["reason"], "RequestEntityTooLarge");

    // Wrong kind or apiVersion for the URL: 400.
    let (c, b) = s.curl(
        "POST",
        cms,
        None,
        Some(br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#),
    );
    assert_eq!(c, 400, "{b}");
    let (c, _) = s.curl(
        "POST",
        cms,
        None,
        Some(br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"s"}}"#),
    );
    assert_eq!(c, 400);

    // Invalid names and missing required fields: 422 with field paths.
    let (c, b) = s.curl(
        "POST",
        cms,
        None,
        Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#),
    );
    assert_eq!(c, 422, "{b}");
    let st = status(&b);
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/default/pods",
        None,
        Some(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#),
    );
    assert_eq!(c, 422, "{b}");
    let st = status(&b);
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"spec.containers[0].image"), "{b}");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/networks",
        None,
        Some(br#"{"apiVersion":"v1","kind":"Network","metadata":{"name":"n"},"spec":{"subnets":{"s":{"cidr":"10.0.0.0/24","gateway":"10.9.9.9"}}}}"#),
    );
    assert_eq!(c, 422, "{b}");

    // Objects in a missing namespace: 404; in a terminating one: 403.
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/ghost/configmaps",
        None,
        Some(br#"{"metadata":{"name":"x"}}"#),
    );
    assert_eq!(c, 404, "{b}");
    assert_eq!(status(&b)["details"]["kind"], "namespaces");
    // A finalizer on an object inside keeps the namespace terminating; a create sent after
    // the delete is answered is refused.
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces",
        None,
        Some(br#"{"metadata":{"name":"doomed"}}"#),
    );
    assert_eq!(c, 201, "{b}");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        None,
        Some(br#"{"metadata":{"name":"held","finalizers":["example.com/hold"]}}"#),
    );
    assert_eq!(c, 201, "{b}");
    let (c, b) = s.curl("DELETE", "/api/v1/namespaces/doomed", None, None);
    assert!(c == 200 || c == 202, "{c} {b}");
    let (c, b) = s.curl(
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        None,
        Some(br#"{"metadata":{"name":"late"}}"#),
    );
    assert_eq!(c, 403, "{b}");
    assert_eq!(
        status(&b)["details"]["causes"][0]["reason"],
        "NamespaceTerminating",
        "{b}"
    );

    // Selector syntax errors: 400.
    let (c, _) = s.curl(
        "GET",
        &format!("{cms}?labelSelector=a%20in%20(b"),
        None,
        None,
    );
    assert_eq!(c, 400);
    let (c, b) = s.curl(
        "GET",
        &format!("{cms}?fieldSelector=spec.nope%3Dx"),
        None,
        None,
    );
    assert_eq!(c, 400, "{b}");

    // Bad patches: 400 (malformed) and 422 (does not apply); wrong patch type: 415.
    let (c, _) = s.curl(
        "PATCH",
        &format!("{cms}/plain"),
        Some("application/json-patch+json"),
        Some(b"{"),
    );
    assert_eq!(c, 400);
    let (c, _) = s.curl(
        "PATCH",
        &format!("{cms}/plain"),
        Some("application/json-patch+json"),
        Some(br#"[{"op":"test","path":"/data/zz","value":"q"}]"#),
    );
    assert_eq!(c, 422);
    let (c, _) = s.curl(
        "PATCH",
        &format!("{cms}/plain"),
        Some("application/json"),
        Some(b"{}"),
    );
    assert_eq!(c, 415);

    // Watch from a compacted or bogus revision, list with a bad continue token.
    let (c, _) = s.curl("GET", &format!("{cms}?continue=garbage"), None, None);
    assert_eq!(c, 400);

    // The server never answered 500 to any of this.
    let (_, m) = s.curl("GET", "/metrics", None, None);
    assert!(m.contains("apiserver_request_total"), "{m}");
    assert!(!m.contains("code=\"500\""), "{m}");
}

#[test]
fn kubectl_reports_server_errors() {
    let s = Server::start();
    let e = s.kubectl_fails("1.33", &["get", "pod", "nope"], None);
    assert!(e.contains("pods \"nope\" not found"), "{e}");
    let e = s.kubectl_fails(
        "1.33",
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n",
        ),
    );
    assert!(e.contains("spec.containers[0].image"), "{e}");
    let e = s.kubectl_fails(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  bogus: 1\ndata:\n  a: b\n"),
    );
    assert!(e.contains("unknown field"), "{e}");
    let e = s.kubectl_fails("1.33", &["delete", "ns", "default"], None);
    assert!(e.contains("forbidden"), "{e}");
}
