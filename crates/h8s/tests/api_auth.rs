//! Authentication end to end against the real `h8s server`: client certificates with
//! kubectl, `kubectl create token` (1.33 and 1.27) and using the token, refused tokens
//! (expired, forged, unbound) answered with a 401 Status, TokenReview, and the node
//! bootstrap: a join token traded for a node client certificate through a CSR, the join
//! token refused everything else. One server for the whole binary.

mod api_support;

use std::time::{Duration, SystemTime};

use api_support::{json, Server};

fn whoami_with(ver: &str, kubeconfig: &std::path::Path) -> serde_json::Value {
    let o = std::process::Command::new(api_support::kubectl_bin(ver))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl");
    assert!(
        o.status.success(),
        "kubectl {ver} auth whoami: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    json(&String::from_utf8_lossy(&o.stdout))
}

/// coreutils' base64 over `input` (the test crate has no base64 library).
fn base64_cli(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("base64")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

fn assert_401(srv: &Server, token: &str) {
    let (code, body) = srv.curl_with(
        "GET",
        "/api/v1/namespaces/default/pods",
        None,
        None,
        Some(token),
    );
    assert_eq!(code, 401, "{body}");
    let st = json(&body);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Unauthorized");
}

#[test]
fn authentication_end_to_end() {
    let srv = Server::start();
    let data = srv.data_dir();

    // --- a client certificate issued by the cluster CA: kubectl whoami ---
    let pki = h8s_apiserver::Pki::load(&data).expect("the server's PKI");
    let (cert, key) = pki
        .issue_client_cert(
            "jane",
            &["dev".to_string()],
            h8s_apiserver::CLIENT_CERT_LIFETIME,
        )
        .unwrap();
    let kc = srv.dir.path().join("jane.kubeconfig");
    std::fs::write(&kc, pki.client_kubeconfig(&srv.url, "jane", &cert, &key)).unwrap();
    for ver in ["1.33", "1.27"] {
        let me = whoami_with(ver, &kc);
        assert_eq!(me["status"]["userInfo"]["username"], "jane", "{ver}: {me}");
        assert_eq!(
            me["status"]["userInfo"]["groups"],
            serde_json::json!(["dev", "system:authenticated"]),
            "{ver}"
        );
    }
    // The same certificate reads the API (what RBAC grants it: view, cluster-wide).
    srv.kubectl(
        "1.33",
        &[
            "create",
            "clusterrolebinding",
            "jane-view",
            "--clusterrole=view",
            "--user=jane",
        ],
    );
    let o = std::process::Command::new(api_support::kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "namespaces", "-o", "name"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("namespace/default"));

    // --- kubectl create token, and using the token ---
    // The ServiceAccount controller may already have made `default`; make sure it exists.
    let _ = srv.kubectl_out("1.33", &["create", "serviceaccount", "default"], None);
    assert!(api_support::eventually(10, || srv
        .kubectl_out("1.33", &["get", "serviceaccount", "default"], None)
        .status
        .success()));
    // What the tokens below may read: RBAC's view role in `default`.
    srv.kubectl(
        "1.33",
        &[
            "create",
            "rolebinding",
            "sa-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
    );
    let mut tokens = Vec::new();
    for ver in ["1.33", "1.27"] {
        let tok = srv
            .kubectl(ver, &["create", "token", "default"])
            .trim()
            .to_string();
        assert_eq!(tok.split('.').count(), 3, "{ver}: a JWT, got {tok:?}");
        let out = srv.kubectl(ver, &["--token", &tok, "auth", "whoami", "-o", "json"]);
        let me = json(&out);
        assert_eq!(
            me["status"]["userInfo"]["username"], "system:serviceaccount:default:default",
            "{ver}"
        );
        assert_eq!(
            me["status"]["userInfo"]["groups"],
            serde_json::json!([
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ])
        );
        tokens.push(tok);
    }
    let out = srv.kubectl(
        "1.33",
        &[
            "--token",
            &tokens[0],
            "get",
            "serviceaccounts",
            "-o",
            "name",
        ],
    );
    assert!(out.contains("serviceaccount/default"), "{out}");
    // A duration below the minimum is refused as kube-apiserver does.
    let err = srv.kubectl_fails(
        "1.33",
        &["create", "token", "default", "--duration=1m"],
        None,
    );
    assert!(err.contains("10 minutes"), "{err}");

    // --- refused tokens: expired, forged, unbound ---
    let keys =
        h8s_apiserver::ServiceAccountTokens::ensure(&data.join("sa.key"), Default::default())
            .unwrap();
    let sa = json(&srv.kubectl("1.33", &["get", "serviceaccount", "default", "-o", "json"]));
    let spec = |at: SystemTime| h8s_apiserver::TokenSpec {
        namespace: "default".into(),
        service_account: h8s_apiserver::ObjectRef {
            name: "default".into(),
            uid: sa["metadata"]["uid"].as_str().unwrap().into(),
        },
        pod: None,
        secret: None,
        node: None,
        audiences: vec![],
        issued_at: at,
        lifetime: Duration::from_secs(3600),
    };
    let (expired, _) = keys
        .mint(&spec(SystemTime::now() - Duration::from_secs(7200)))
        .unwrap();
    assert_401(&srv, &expired);
    let other = tempfile::tempdir().unwrap();
    let forger =
        h8s_apiserver::ServiceAccountTokens::ensure(&other.path().join("k"), Default::default())
            .unwrap();
    let (forged, _) = forger.mint(&spec(SystemTime::now())).unwrap();
    assert_401(&srv, &forged);
    srv.kubectl_stdin(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Secret\nmetadata:\n  name: bound\nstringData:\n  k: v\n"),
    );
    let bound = srv
        .kubectl(
            "1.33",
            &[
                "create",
                "token",
                "default",
                "--bound-object-kind=Secret",
                "--bound-object-name=bound",
            ],
        )
        .trim()
        .to_string();
    let (code, _) = srv.curl_with(
        "GET",
        "/api/v1/namespaces/default/pods",
        None,
        None,
        Some(&bound),
    );
    assert_eq!(code, 200);
    srv.kubectl("1.33", &["delete", "secret", "bound"]);
    assert_401(&srv, &bound);

    // --- TokenReview --- (kubectl's client-side validation looks TokenReview up in the
    // OpenAPI schema and then in CRDs; the server's answer is what is tested here)
    let review = |tok: &str| {
        format!(
            "{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{{\"token\":\"{tok}\"}}}}"
        )
    };
    let out = srv.kubectl_stdin(
        "1.33",
        &["create", "--validate=false", "-o", "json", "-f", "-"],
        Some(&review(&tokens[1])),
    );
    let r = json(&out);
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    let out = srv.kubectl_stdin(
        "1.33",
        &["create", "--validate=false", "-o", "json", "-f", "-"],
        Some(&review(&expired)),
    );
    assert_eq!(json(&out)["status"]["authenticated"], false);

    // --- the join token: only a node certificate, then the node's own identity ---
    let join = std::fs::read_to_string(data.join("join-token"))
        .unwrap()
        .trim()
        .to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("join-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, body) = srv.curl_with(
        "GET",
        "/api/v1/namespaces/default/pods",
        None,
        None,
        Some(&join),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["kind"], "Status");
    let (code, _) = srv.curl_with("GET", "/api/v1/secrets", None, None, Some(&join));
    assert_eq!(code, 403);
    let (code, _) = srv.curl_with(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("application/json"),
        Some(br#"{"metadata":{"name":"x"}}"#),
        Some(&join),
    );
    assert_eq!(code, 403);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // kube clients spawn their workers on the current runtime.
    let _in_rt = rt.enter();
    let conn = h8s_client::Connection {
        server: srv.url.clone(),
        ca_pem: std::fs::read(data.join("ca.crt")).unwrap(),
        credentials: h8s_client::Credentials::Token(join.clone()),
        user_agent: "h8s-test/bootstrap".into(),
    };
    let (node_conn, cert) = rt
        .block_on(h8s_client::bootstrap::bootstrap_node(
            &conn,
            "node-1",
            &h8s_client::bootstrap::BootstrapOptions {
                timeout: Duration::from_secs(30),
                expiration: Some(Duration::from_secs(24 * 3600)),
            },
        ))
        .expect("bootstrap");
    assert!(String::from_utf8_lossy(&cert.cert_pem).contains("BEGIN CERTIFICATE"));
    // The node's connection presents the certificate: the server sees system:node:node-1.
    let me: serde_json::Value = rt.block_on(async {
        let client = node_conn.client().unwrap();
        let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("content-type", "application/json")
            .body(
                br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec(),
            )
            .unwrap();
        client.request(req).await.expect("whoami as the node")
    });
    assert_eq!(
        me["status"]["userInfo"]["username"], "system:node:node-1",
        "{me}"
    );
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["system:nodes", "system:authenticated"])
    );
    // The node renews its own certificate (approved as selfnodeclient), but cannot get
    // one for another node.
    let renewed = rt
        .block_on(h8s_client::bootstrap::request_node_certificate(
            node_conn.client().unwrap(),
            "node-1",
            &h8s_client::bootstrap::BootstrapOptions::default(),
        ))
        .expect("renewal");
    assert_ne!(renewed.cert_pem, cert.cert_pem);
    // What `h8s agent` decides at start: a day left → renew; a fresh year → keep.
    let lifetime = h8s_apiserver::CLIENT_CERT_LIFETIME;
    assert!(h8s_apiserver::needs_renewal(
        &String::from_utf8_lossy(&cert.cert_pem),
        lifetime
    ));
    assert!(!h8s_apiserver::needs_renewal(
        &String::from_utf8_lossy(&renewed.cert_pem),
        lifetime
    ));
    let other = rt.block_on(h8s_client::bootstrap::request_node_certificate(
        node_conn.client().unwrap(),
        "node-2",
        &h8s_client::bootstrap::BootstrapOptions {
            timeout: Duration::from_secs(3),
            expiration: None,
        },
    ));
    assert!(
        matches!(
            other,
            Err(h8s_client::bootstrap::BootstrapError::Timeout { .. })
        ),
        "a node got another node's certificate: {other:?}"
    );
    // The CSR shows who asked and who approved.
    let csrs = json(&srv.kubectl("1.33", &["get", "csr", "-o", "json"]));
    let c = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["spec"]["username"]
                .as_str()
                .unwrap()
                .starts_with("system:bootstrap:")
        })
        .expect("the bootstrap CSR");
    assert!(c["spec"]["username"]
        .as_str()
        .unwrap()
        .starts_with("system:bootstrap:"));
    assert_eq!(
        c["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(c["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(c["spec"]["expirationSeconds"], 86400);

    // --- a client CSR approved by hand (kubectl certificate approve) and signed ---
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "ops");
    dn.push(rcgen::DnType::CommonName, "carol");
    p.distinguished_name = dn;
    let req = p.serialize_request(&key).unwrap().pem().unwrap();
    let b64 = base64_cli(&["-w0"], req.as_bytes());
    srv.kubectl_stdin(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: carol\nspec:\n  request: {b64}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 3600\n  usages: [client auth]\n"
        )),
    );
    let pending = json(&srv.kubectl("1.33", &["get", "csr", "carol", "-o", "json"]));
    assert!(
        pending["status"]["certificate"].is_null(),
        "not approved yet: {pending}"
    );
    srv.kubectl("1.33", &["certificate", "approve", "carol"]);
    let signed = srv.kubectl(
        "1.33",
        &[
            "get",
            "csr",
            "carol",
            "-o",
            "jsonpath={.status.certificate}",
        ],
    );
    let cert = base64_cli(&["-d"], signed.trim().as_bytes());
    let kc = srv.dir.path().join("carol.kubeconfig");
    std::fs::write(
        &kc,
        pki.client_kubeconfig(&srv.url, "carol", &cert, &key.serialize_pem()),
    )
    .unwrap();
    let me = whoami_with("1.33", &kc);
    assert_eq!(me["status"]["userInfo"]["username"], "carol");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["ops", "system:authenticated"])
    );
}
