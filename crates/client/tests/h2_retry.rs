//! The components' HTTP/2 client retries what a loaded API server sheds (429 with
//! `Retry-After`, 503), as kube-rs' own builder and client-go do. Without it a controller's
//! write fails outright whenever priority and fairness rejects it (the 2,999-of-3,000 stall
//! the control-plane issue chased). A real TLS server on loopback answers on cue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// A loopback HTTPS server (its own CA; HTTP/2 by ALPN) whose first `shed` answers are
/// `code` with `Retry-After: 1`, then a ConfigMap. Returns its URL, CA PEM and hit counter.
async fn server(shed: usize, code: u16) -> (String, Vec<u8>, Arc<AtomicUsize>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let hits = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req: http::Request<_>| {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (status, body) = if n < shed {
                            (code, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too many requests, please try again later","reason":"TooManyRequests","code":429}"#.to_string())
                        } else {
                            (200, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"default"},"data":{"k":"v"}}"#.to_string())
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        let h = resp.headers_mut();
                        h.insert("content-type", "application/json".parse().unwrap());
                        if n < shed {
                            h.insert("retry-after", "1".parse().unwrap());
                        }
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
            });
        }
    });
    (
        format!("https://127.0.0.1:{port}"),
        ca.pem().into_bytes(),
        hits,
    )
}

fn client(server: String, ca_pem: Vec<u8>) -> kube::Client {
    h8s_client::Connection {
        server,
        ca_pem,
        credentials: h8s_client::Credentials::Token("t".into()),
        user_agent: "h8s-test".into(),
    }
    .client_http2()
    .unwrap()
}

#[tokio::test]
async fn a_shed_request_is_retried_after_the_servers_retry_after() {
    for code in [429, 503] {
        let (url, ca, hits) = server(2, code).await;
        let cms: Api<ConfigMap> = Api::namespaced(client(url, ca), "default");
        let cm = cms.get("x").await.unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(cm.data.unwrap()["k"], "v");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "{code}: two shed, one served"
        );
    }
}
