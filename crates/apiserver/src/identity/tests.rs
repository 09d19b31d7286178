//! In-process tests of the identity service over a real embedded store.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

async fn call(
    api: &Arc<crate::Api>,
    m: &str,
    p: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let mut b = http::Request::builder().method(m).uri(p);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = api
        .handle(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await;
    let code = r.status().as_u16();
    let h = r.headers().clone();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (code, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn pw_body(user: &str, pw: &str, project: Option<&str>) -> String {
    let mut v = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": pw}}}}});
    if let Some(p) = project {
        v["auth"]["scope"] = json!({"project": {"name": p, "domain": {"id": "default"}}});
    }
    v.to_string()
}

#[tokio::test]
async fn keystone_flow_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
    let cfg = crate::Config::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    );
    let srv = crate::Server::start(cfg).await.unwrap();
    let api = srv.api();
    let admin_pw = std::fs::read_to_string(dir.path().join(super::ADMIN_PASSWORD_FILE)).unwrap();
    let (c, h, b) = call(
        &api,
        "POST",
        "/v3/auth/tokens",
        &[],
        &pw_body("admin", admin_pw.trim(), Some("admin")),
    )
    .await;
    assert_eq!(c, 201, "{b}");
    let admin = h["x-subject-token"].to_str().unwrap().to_string();
    assert!(admin.len() >= 43 + super::tokens::TOKEN_PREFIX.len());
    assert_eq!(b["token"]["project"]["name"], "admin");
    let auth = [("x-auth-token", admin.as_str())];
    let (c, _, b) = call(
        &api,
        "POST",
        "/v3/projects",
        &auth,
        r#"{"project":{"name":"acme","description":"ACME"}}"#,
    )
    .await;
    assert_eq!(c, 201, "{b}");
    let (c, _, b) = call(
        &api,
        "POST",
        "/v3/users",
        &auth,
        r#"{"user":{"name":"alice","password":"alice-secret","default_project_id":"acme"}}"#,
    )
    .await;
    assert_eq!(c, 201, "{b}");
    // No read of the User shows the hash.
    let (c, _, b) = call(
        &api,
        "GET",
        "/apis/tenancy.h8s.io/v1/users/alice",
        &[("authorization", &format!("Bearer {admin}"))],
        "",
    )
    .await;
    assert_eq!(c, 200, "{b}");
    assert!(!b.to_string().contains("argon2"), "{b}");
    let (c, h, _) = call(
        &api,
        "POST",
        "/v3/auth/tokens",
        &[],
        &pw_body("alice", "alice-secret", Some("acme")),
    )
    .await;
    assert_eq!(c, 201);
    let alice = h["x-subject-token"].to_str().unwrap().to_string();
    let (c, _, b) = call(
        &api,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[("authorization", &format!("Bearer {alice}"))],
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    )
    .await;
    assert_eq!(c, 201, "{b}");
    assert_eq!(b["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        b["status"]["userInfo"]["groups"],
        json!(["h8s:tenant:acme", "system:authenticated"])
    );
    // Wrong password and unknown user: the same 401.
    let (c1, _, b1) = call(
        &api,
        "POST",
        "/v3/auth/tokens",
        &[],
        &pw_body("alice", "nope-nope", None),
    )
    .await;
    let (c2, _, b2) = call(
        &api,
        "POST",
        "/v3/auth/tokens",
        &[],
        &pw_body("nobody", "nope-nope", None),
    )
    .await;
    assert_eq!((c1, c2), (401, 401));
    assert_eq!(b1, b2);
    // Malformed: 400 in Keystone's shape.
    let (c, _, b) = call(&api, "POST", "/v3/auth/tokens", &[], "{not json").await;
    assert_eq!(c, 400);
    assert_eq!(b["error"]["code"], 400);
    // Disabling the user ends its token.
    let (c, _, _) = call(
        &api,
        "PATCH",
        "/v3/users/alice",
        &auth,
        r#"{"user":{"enabled":false}}"#,
    )
    .await;
    assert_eq!(c, 200);
    let (c, _, _) = call(
        &api,
        "GET",
        "/api",
        &[("authorization", &format!("Bearer {alice}"))],
        "",
    )
    .await;
    assert_eq!(c, 401);
    // The sweeper finds nothing expired yet.
    let id = api.identity.clone().unwrap();
    assert_eq!(id.sweep_once().await.unwrap(), 0);
    srv.shutdown().await;
}
