//! ServiceAccount tokens, TokenReview, bootstrap tokens and CSR signing, through the
//! server's request handler (the whole chain: authentication, authorization,
//! admission, registry, store) on one in-process server.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

struct T {
    srv: h8s_apiserver::Server,
    admin: String,
    _dir: tempfile::TempDir,
}

impl T {
    async fn call(&self, tok: &str, m: &str, p: &str, body: Option<Value>) -> (u16, Value) {
        let mut b = http::Request::builder().method(m).uri(p);
        if !tok.is_empty() {
            b = b.header("authorization", format!("Bearer {tok}"));
        }
        let body = body.map(|v| v.to_string()).unwrap_or_default();
        let req = b
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let r = self.srv.api().handle(req).await;
        let code = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn whoami(&self, tok: &str) -> (u16, Value) {
        self.call(
            tok,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        )
        .await
    }

    async fn token_request(&self, sa: &str, spec: Value) -> (u16, Value) {
        self.call(
            &self.admin,
            "POST",
            &format!("/api/v1/namespaces/default/serviceaccounts/{sa}/token"),
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})),
        )
        .await
    }
}

fn assert_401(code: u16, body: &Value) {
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_reviews_and_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
    let mut cfg = h8s_apiserver::Config::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    );
    cfg.csr_approver.retry = Duration::from_millis(100);
    let srv = h8s_apiserver::Server::start(cfg).await.unwrap();
    let t = T {
        admin: srv.pki.admin_token.clone(),
        srv,
        _dir: dir,
    };

    // --- TokenRequest, and using the token ---
    let (c, b) = t
        .call(
            &t.admin,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            Some(json!({"metadata": {"name": "robot"}})),
        )
        .await;
    assert_eq!(c, 201, "{b}");
    let sa_uid = b["metadata"]["uid"].as_str().unwrap().to_string();
    // What the account may read: RBAC's `view` in its namespace.
    let (c, b) = t
        .call(
            &t.admin,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            Some(json!({"metadata": {"name": "robot-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]})),
        )
        .await;
    assert_eq!(c, 201, "{b}");
    let (c, tr) = t.token_request("robot", json!({})).await;
    assert_eq!(c, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    let tok = tr["status"]["token"].as_str().unwrap().to_string();
    assert!(tr["status"]["expirationTimestamp"].is_string());
    let (c, me) = t.whoami(&tok).await;
    assert_eq!(c, 201, "{me}");
    let ui = &me["status"]["userInfo"];
    assert_eq!(ui["username"], "system:serviceaccount:default:robot");
    assert_eq!(ui["uid"], sa_uid);
    assert_eq!(
        ui["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    // The token reads the API.
    let (c, _) = t
        .call(
            &tok,
            "GET",
            "/api/v1/namespaces/default/serviceaccounts",
            None,
        )
        .await;
    assert_eq!(c, 200);

    // OIDC discovery names the issuer and publishes the key that signed the token.
    let (c, oc) = t
        .call(&t.admin, "GET", "/.well-known/openid-configuration", None)
        .await;
    assert_eq!(c, 200, "{oc}");
    assert_eq!(oc["issuer"], "https://kubernetes.default.svc.cluster.local");
    let (c, jwks) = t.call(&tok, "GET", "/openid/v1/jwks", None).await;
    assert_eq!(c, 200, "{jwks}");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "P-256");

    // Too short, and a missing ServiceAccount.
    let (c, b) = t
        .token_request("robot", json!({"expirationSeconds": 60}))
        .await;
    assert_eq!(c, 422, "{b}");
    let (c, _) = t.token_request("nobody", json!({})).await;
    assert_eq!(c, 404);

    // --- bound to a Secret: deleting the Secret revokes the token ---
    let (c, sec) = t
        .call(
            &t.admin,
            "POST",
            "/api/v1/namespaces/default/secrets",
            Some(json!({"metadata": {"name": "s1"}, "stringData": {"a": "b"}})),
        )
        .await;
    assert_eq!(c, 201, "{sec}");
    let (c, b) = t
        .token_request(
            "robot",
            json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1", "uid": "wrong"}}),
        )
        .await;
    assert_eq!(c, 409, "a stale uid: {b}");
    let (c, tr) = t
        .token_request(
            "robot",
            json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1"}, "audiences": ["https://kubernetes.default.svc.cluster.local", "vault"]}),
        )
        .await;
    assert_eq!(c, 201, "{tr}");
    let bound = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(t.whoami(&bound).await.0, 201);
    let (c, _) = t
        .call(
            &t.admin,
            "DELETE",
            "/api/v1/namespaces/default/secrets/s1",
            None,
        )
        .await;
    assert_eq!(c, 200);
    let (c, b) = t.whoami(&bound).await;
    assert_401(c, &b);

    // --- expired, forged ---
    let keys = h8s_apiserver::ServiceAccountTokens::ensure(
        &t.srv.pki.dir.join("sa.key"),
        Default::default(),
    )
    .unwrap();
    let spec = |at: SystemTime| h8s_apiserver::TokenSpec {
        namespace: "default".into(),
        service_account: h8s_apiserver::ObjectRef {
            name: "robot".into(),
            uid: sa_uid.clone(),
        },
        pod: None,
        secret: None,
        node: None,
        audiences: vec![],
        issued_at: at,
        lifetime: Duration::from_secs(3600),
    };
    let (fresh, _) = keys.mint(&spec(SystemTime::now())).unwrap();
    assert_eq!(t.whoami(&fresh).await.0, 201, "the same key, a fresh token");
    let (expired, _) = keys
        .mint(&spec(SystemTime::now() - Duration::from_secs(7200)))
        .unwrap();
    let (c, b) = t.whoami(&expired).await;
    assert_401(c, &b);
    let other = tempfile::tempdir().unwrap();
    let forger =
        h8s_apiserver::ServiceAccountTokens::ensure(&other.path().join("k"), Default::default())
            .unwrap();
    let (forged, _) = forger.mint(&spec(SystemTime::now())).unwrap();
    let (c, b) = t.whoami(&forged).await;
    assert_401(c, &b);
    // A token for a ServiceAccount that was recreated (a new uid) is refused.
    t.call(
        &t.admin,
        "DELETE",
        "/api/v1/namespaces/default/serviceaccounts/robot",
        None,
    )
    .await;
    t.call(
        &t.admin,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        Some(json!({"metadata": {"name": "robot"}})),
    )
    .await;
    let (c, b) = t.whoami(&tok).await;
    assert_401(c, &b);

    // --- TokenReview ---
    let (c, tr) = t.token_request("robot", json!({})).await;
    assert_eq!(c, 201, "{tr}");
    let tok = tr["status"]["token"].as_str().unwrap().to_string();
    let review = |token: &str, auds: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": auds}});
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (c, r) = t
        .call(&t.admin, "POST", path, Some(review(&tok, json!([]))))
        .await;
    assert_eq!(c, 201, "{r}");
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let (_, r) = t
        .call(&t.admin, "POST", path, Some(review(&t.admin, json!([]))))
        .await;
    assert_eq!(
        r["status"]["user"]["username"], "admin",
        "the whole chain answers: {r}"
    );
    let (_, r) = t
        .call(&t.admin, "POST", path, Some(review(&expired, json!([]))))
        .await;
    assert_eq!(r["status"]["authenticated"], false, "{r}");
    let (_, r) = t
        .call(&t.admin, "POST", path, Some(review(&tok, json!(["vault"]))))
        .await;
    assert_eq!(r["status"]["authenticated"], false, "not for vault: {r}");

    // --- bootstrap token: only CSRs, and its node CSR is approved and signed ---
    let join = t.srv.join_token.token();
    let (c, me) = t.whoami(&join).await;
    assert_eq!(c, 201, "{me}");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!(["system:bootstrappers", "system:authenticated"])
    );
    let (c, b) = t
        .call(&join, "GET", "/api/v1/namespaces/default/pods", None)
        .await;
    assert_eq!(c, 403, "{b}");
    assert_eq!(b["kind"], "Status");
    let (c, _) = t.call(&join, "GET", "/api/v1/secrets", None).await;
    assert_eq!(c, 403);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, "system:node:n1");
    p.distinguished_name = dn;
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-n1"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        }
    });
    let csr_path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let (c, b) = t.call(&join, "POST", csr_path, Some(csr)).await;
    assert_eq!(c, 201, "{b}");
    let mut cert = String::new();
    for _ in 0..100 {
        let (c, b) = t
            .call(&join, "GET", &format!("{csr_path}/node-csr-n1"), None)
            .await;
        assert_eq!(c, 200, "{b}");
        if let Some(s) = b["status"]["certificate"].as_str() {
            cert = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap())
                .unwrap();
            assert_eq!(b["status"]["conditions"][0]["type"], "Approved");
            assert_eq!(b["status"]["conditions"][0]["reason"], "AutoApproved");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cert.contains("BEGIN CERTIFICATE"),
        "no certificate was issued"
    );
    let der = rustls::pki_types::CertificateDer::from(
        x509_parser::pem::parse_x509_pem(cert.as_bytes())
            .unwrap()
            .1
            .contents,
    );
    let u = h8s_apiserver::ClientCertAuthenticator::user_of(&der).unwrap();
    assert_eq!(u.username, "system:node:n1");
    // The bootstrapper cannot approve on its own, nor delete.
    let (c, _) = t
        .call(
            &join,
            "PUT",
            &format!("{csr_path}/node-csr-n1/approval"),
            Some(json!({})),
        )
        .await;
    assert_eq!(c, 403);
    let (c, _) = t
        .call(&join, "DELETE", &format!("{csr_path}/node-csr-n1"), None)
        .await;
    assert_eq!(c, 403);

    // --- bootstrap-token Secrets (kubeadm token create): more join tokens, with expiry ---
    let secret = |id: &str, usage: &str, exp: &str| {
        json!({
            "metadata": {"name": format!("bootstrap-token-{id}")},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "token-id": id,
                "token-secret": "0123456789abcdef",
                "usage-bootstrap-authentication": usage,
                "expiration": exp,
                "auth-extra-groups": "system:bootstrappers:workers",
            }
        })
    };
    let sec_path = "/api/v1/namespaces/kube-system/secrets";
    for (id, usage, exp) in [
        ("aaaaaa", "true", "2999-01-01T00:00:00Z"),
        ("bbbbbb", "true", "2001-01-01T00:00:00Z"),
        ("cccccc", "false", "2999-01-01T00:00:00Z"),
    ] {
        let (c, b) = t
            .call(&t.admin, "POST", sec_path, Some(secret(id, usage, exp)))
            .await;
        assert_eq!(c, 201, "{b}");
    }
    let (c, me) = t.whoami("aaaaaa.0123456789abcdef").await;
    assert_eq!(c, 201, "{me}");
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:bootstrap:aaaaaa"
    );
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:workers",
            "system:authenticated"
        ])
    );
    let (c, _) = t
        .call(
            "aaaaaa.0123456789abcdef",
            "GET",
            "/api/v1/namespaces/default/pods",
            None,
        )
        .await;
    assert_eq!(c, 403, "confined like the join token");
    for bad in [
        "aaaaaa.0123456789abcdee", // wrong secret
        "bbbbbb.0123456789abcdef", // expired
        "cccccc.0123456789abcdef", // not for authentication
        "dddddd.0123456789abcdef", // no such token
    ] {
        let (c, b) = t.whoami(bad).await;
        assert_401(c, &b);
    }
    // Deleting the Secret revokes the token.
    t.call(
        &t.admin,
        "DELETE",
        &format!("{sec_path}/bootstrap-token-aaaaaa"),
        None,
    )
    .await;
    let (c, b) = t.whoami("aaaaaa.0123456789abcdef").await;
    assert_401(c, &b);

    t.srv.shutdown().await;
}
