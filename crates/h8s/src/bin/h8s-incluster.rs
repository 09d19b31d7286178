//! `h8s-incluster`: an in-cluster API client, run inside a pod to check that the pod reaches
//! the API server the way in-cluster clients do (kube-rs's in-cluster configuration): the
//! ServiceAccount token, CA and namespace from `/var/run/secrets/kubernetes.io/serviceaccount`,
//! the server at `https://kubernetes.default.svc` (`dns`, the default) or at
//! `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT` (`env`, client-go's way). The TLS
//! handshake verifies the server's certificate against that CA for that name.
//!
//! Prints `version <gitVersion>` (GET /version) and `user <username>` (a SelfSubjectReview:
//! who the token authenticated as); exits non-zero with the error otherwise.
//!
//! `h8s-incluster webhook CERT KEY PORT`: an admission webhook served from the pod (the
//! system Network's test, `services::webhook_pod_on_the_system_network`): HTTPS on
//! `0.0.0.0:PORT` with the PEM certificate and key, `admission.k8s.io/v1` AdmissionReviews
//! on `/deny` (denies objects labelled `deny: "true"`, with the message `denied by a pod`)
//! and `/mutate` (adds the label `mutated-by: pod`); one line per review on stdout. As an
//! aggregated API server it answers `GET /apis/<group>/<version>` with an `APIResourceList`
//! of one kind, `Echo` (`echoes`), and logs the caller's `X-Remote-User`.

use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use h8s_client::k8s_openapi::api::authentication::v1::SelfSubjectReview;
use h8s_client::kube::{self, api::PostParams, Api};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "dns".into());
    if mode == "webhook" {
        let [cert, key, port] = &args[2..] else {
            anyhow::bail!("usage: h8s-incluster webhook CERT KEY PORT");
        };
        return webhook(cert, key, port.parse().context("PORT")?).await;
    }
    let cfg = match mode.as_str() {
        "dns" => kube::Config::incluster_dns(),
        "env" => kube::Config::incluster_env(),
        other => anyhow::bail!("usage: h8s-incluster [dns|env|webhook] (got {other:?})"),
    }
    .context("the in-cluster configuration")?;
    println!("server {}", cfg.cluster_url);
    let client = kube::Client::try_from(cfg).context("the client")?;
    let v = client.apiserver_version().await.context("GET /version")?;
    println!("version {}", v.git_version);
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("creating a SelfSubjectReview")?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    println!("user {user}");
    Ok(())
}

/// The answer to one AdmissionReview on `path`.
fn answer(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].as_str().unwrap_or_default();
    let labels = &req["object"]["metadata"]["labels"];
    let mut response = json!({"uid": uid, "allowed": true});
    match path {
        "/deny" if labels["deny"] == "true" => {
            response["allowed"] = json!(false);
            response["status"] = json!({"code": 403, "reason": "Forbidden",
                "message": "denied by a pod"});
        }
        "/mutate" => {
            let patch = if labels.is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated-by", "value": "pod"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "pod"}}])
            };
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&patch).unwrap_or_default()));
        }
        _ => {}
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

async fn webhook(cert: &str, key: &str, port: u16) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .context("the certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("the certificate")?;
    let key = PrivateKeyDer::from_pem_file(key).context("the key")?;
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the serving certificate")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("listening on port {port}"))?;
    println!("webhook listening on {port}");
    loop {
        let (tcp, peer) = listener.accept().await.context("accept")?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    println!("TLS from {peer}: {e}");
                    return;
                }
            };
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    if req.method() == http::Method::GET {
                        return Ok::<_, http::Error>(aggregated(&path, &req, peer));
                    }
                    let body = Limited::new(req.into_body(), 3 << 20)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let out = answer(&path, &review);
                    println!(
                        "review {path} from {peer}: allowed {}",
                        out["response"]["allowed"]
                    );
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(bytes::Bytes::from(
                            serde_json::to_vec(&out).unwrap_or_default(),
                        )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// An aggregated API server's answer to `GET path`: the `APIResourceList` of
/// `/apis/<group>/<version>`, else 404.
fn aggregated<B>(
    path: &str,
    req: &http::Request<B>,
    peer: std::net::SocketAddr,
) -> http::Response<Full<bytes::Bytes>> {
    let user = req
        .headers()
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    println!("GET {path} from {peer} as {user:?}");
    let gv: Vec<&str> = path
        .strip_prefix("/apis/")
        .map(|p| p.split('/').collect())
        .unwrap_or_default();
    let (status, body) = match gv.as_slice() {
        [g, v] if !g.is_empty() && !v.is_empty() => (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{g}/{v}"),
                "resources": [{"name": "echoes", "singularName": "echo", "namespaced": true,
                    "kind": "Echo", "verbs": ["get", "list"]}]}),
        ),
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404}),
        ),
    };
    let mut resp = http::Response::new(Full::new(bytes::Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::NOT_FOUND);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
