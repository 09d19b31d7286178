//! An authorizer that answers "allow, filtered" narrows lists and watches to what its
//! filter lets through; other callers see everything.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use h8s_apiserver::{Attributes, Authorizer, Decision, FnFilter, UserInfo};

/// Lets "tenant-a" see only objects labelled `team=a`.
struct TeamFilter;

impl Authorizer for TeamFilter {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if user.username != "tenant-a" {
            return Decision::Allow;
        }
        match attrs.verb.as_str() {
            "list" | "watch" => Decision::AllowFiltered(Arc::new(FnFilter(|o: &Value| {
                o["metadata"]["labels"]["team"] == "a"
            }))),
            "get" => Decision::Allow,
            _ => Decision::Deny("tenant-a only reads".into()),
        }
    }
}

async fn call(
    api: &Arc<h8s_apiserver::Api>,
    tok: &str,
    m: &str,
    p: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(m)
        .uri(p)
        .header("authorization", format!("Bearer {tok}"))
        .header(
            "content-type",
            if m == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        )
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let r = api.handle(req).await;
    let code = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn filtered_lists_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens.csv"), "tok-a,tenant-a,ua,\"\"\n").unwrap();
    let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
    let mut cfg = h8s_apiserver::Config::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    );
    cfg.authorizer = Some(Arc::new(TeamFilter));
    let srv = h8s_apiserver::Server::start(cfg).await.unwrap();
    let (api, admin) = (srv.api(), srv.pki.admin_token.clone());
    let cms = "/api/v1/namespaces/default/configmaps";
    for (n, team) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let (c, b) = call(
            &api,
            &admin,
            "POST",
            cms,
            Some(json!({"metadata": {"name": n, "labels": {"team": team}}})),
        )
        .await;
        assert_eq!(c, 201, "{b}");
    }
    let (c, l) = call(&api, "tok-a", "GET", cms, None).await;
    assert_eq!(c, 200, "{l}");
    assert_eq!(names(&l), ["a1", "a2"]);
    let (_, l) = call(&api, &admin, "GET", cms, None).await;
    assert_eq!(names(&l), ["a1", "a2", "b1"]);
    // Paging still fills pages from the allowed objects.
    let (_, l) = call(&api, "tok-a", "GET", &format!("{cms}?limit=1"), None).await;
    assert_eq!(names(&l), ["a1"]);
    // Writes are denied by the same authorizer.
    let (c, _) = call(&api, "tok-a", "DELETE", &format!("{cms}/b1"), None).await;
    assert_eq!(c, 403);

    // A watch from now: b-events are not sent; an a-object relabelled to b is DELETED.
    let (_, l) = call(&api, &admin, "GET", cms, None).await;
    let rv = l["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let req = http::Request::builder()
        .uri(format!("{cms}?watch=true&resourceVersion={rv}"))
        .header("authorization", "Bearer tok-a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = api.handle(req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    call(
        &api,
        &admin,
        "POST",
        cms,
        Some(json!({"metadata": {"name": "b2", "labels": {"team": "b"}}})),
    )
    .await;
    call(
        &api,
        &admin,
        "POST",
        cms,
        Some(json!({"metadata": {"name": "a3", "labels": {"team": "a"}}})),
    )
    .await;
    call(
        &api,
        &admin,
        "PATCH",
        &format!("{cms}/a1"),
        Some(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await;
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while got.len() < 2 {
        let f = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&f.into_data().unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap();
            got.push(format!(
                "{} {}",
                ev["type"].as_str().unwrap(),
                ev["object"]["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(got, ["ADDED a3", "DELETED a1"]);
    drop(body);
    srv.shutdown().await;
}
