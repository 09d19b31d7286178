//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API server proxies
//! them to the node agent that runs the pod, as kube-apiserver proxies them to kubelet.
//!
//! The pod's `spec.nodeName` names the Node; its `status.addresses` (InternalIP first) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` say where the agent's streaming server
//! listens. The connection is mutually authenticated TLS: this side presents a client
//! certificate for [`KUBELET_CLIENT_CN`] issued by the cluster CA, and accepts only the
//! serving certificate of the Node it dials, as kube's kubelet serving certificates are
//! made: signed by the same CA, for `serverAuth`, naming the address dialed (an IP or DNS
//! subject alternative name), with subject `CN=system:node:<node>`, `O=system:nodes`. A
//! node's certificate presented at another node's address is refused (503), so a node that
//! writes another's address into its status gains nothing. The request goes on with its query, its
//! upgrade headers and its method; a `101` answer is relayed and the two upgraded
//! connections are joined with bounded buffers (a slow client slows the pod's stream down),
//! anything else (logs, errors) is streamed back as it comes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::error::{ApiError, Subject};
use crate::pki::Pki;
use crate::response::{error_response, Body};
use crate::stream::{SubresourceHandler, SubresourceRequest};

/// The common name of the API server's client certificate towards node agents.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// kubelet's default port, when a Node does not say.
const DEFAULT_AGENT_PORT: u16 = 10250;

/// Buffer per direction when two upgraded connections are joined.
const RELAY_BUFFER: usize = 16 * 1024;

/// Proxies pod streaming subresources to node agents.
#[derive(Clone)]
pub struct NodeProxy {
    store: Arc<dyn h8s_store::Store>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

/// Registers the proxy for the pod subresources no one else serves.
pub(crate) fn register(
    streams: &mut HashMap<(String, String), Arc<dyn SubresourceHandler>>,
    store: Arc<dyn h8s_store::Store>,
    pki: &Pki,
) -> crate::Result<NodeProxy> {
    let (cert, key) = pki.issue_client_cert(
        KUBELET_CLIENT_CN,
        &["system:masters".to_string()],
        crate::pki::CLIENT_CERT_LIFETIME,
    )?;
    let node_proxy = NodeProxy::new(store, &pki.ca_pem, &cert, &key)?;
    let proxy: Arc<dyn SubresourceHandler> = Arc::new(node_proxy.clone());
    for sub in ["log", "exec", "attach", "portforward"] {
        streams
            .entry(("pods".to_string(), sub.to_string()))
            .or_insert_with(|| proxy.clone());
    }
    Ok(node_proxy)
}

impl NodeProxy {
    /// A proxy trusting agents signed by `ca_pem`, presenting `cert_pem`/`key_pem`.
    pub fn new(
        store: Arc<dyn h8s_store::Store>,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> crate::Result<NodeProxy> {
        Ok(NodeProxy {
            store,
            tls: Arc::new(client_tls(ca_pem, cert_pem, key_pem)?),
            connect_timeout: Duration::from_secs(5),
        })
    }
}

impl SubresourceHandler for NodeProxy {
    fn handle(&self, req: SubresourceRequest) -> BoxFuture<'static, Response<Body>> {
        let this = self.clone();
        let span = tracing::info_span!(
            "node_proxy",
            sub = %req.subresource,
            pod = %format!("{}/{}", req.namespace, req.name),
            user = %req.user.username,
        );
        Box::pin(
            async move {
                match this.proxy(req).await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            }
            .instrument(span),
        )
    }
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for, as kube-apiserver picks and checks it.
pub(crate) fn pick_container(
    pod: &Value,
    name: &str,
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Where a Node's agent listens.
pub(crate) fn agent_endpoint(node: &Value) -> Option<(String, u16)> {
    let addrs = node["status"]["addresses"].as_array()?;
    let pick = |ty: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == ty)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((host.to_string(), port))
}

/// Headers that belong to one hop, or to this server, and are not passed on.
fn passes(name: &http::HeaderName, upgrade: bool) -> bool {
    let n = name.as_str();
    !matches!(
        n,
        "authorization"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "impersonate-user"
            | "impersonate-group"
            | "impersonate-uid"
    ) && (upgrade || !matches!(n, "connection" | "upgrade"))
        && !n.starts_with("impersonate-extra-")
}

impl NodeProxy {
    async fn proxy(&self, req: SubresourceRequest) -> Result<Response<Body>, ApiError> {
        let pod = &req.object;
        let query = crate::util::Query::parse(req.parts.uri.query());
        let (ns, name) = (req.namespace.as_str(), req.name.as_str());
        let path = match req.subresource.as_str() {
            "log" | "exec" | "attach" => {
                let c = pick_container(pod, name, query.get("container"))?;
                let kind = match req.subresource.as_str() {
                    "log" => "containerLogs",
                    "exec" => "exec",
                    _ => "attach",
                };
                format!("/{kind}/{ns}/{name}/{c}")
            }
            "portforward" => format!("/portForward/{ns}/{name}"),
            other => {
                return Err(ApiError::not_found(&Subject {
                    group: "",
                    resource: "pods",
                    name: other,
                }))
            }
        };
        let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let node_subject = Subject {
            group: "",
            resource: "nodes",
            name: node_name,
        };
        let nodes = h8s_types::resources::find("", "v1", "nodes")
            .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
        let kv = self
            .store
            .get(&crate::obj::key(nodes, None, node_name))
            .await
            .map_err(|e| crate::error::from_store(e, &node_subject))?
            .ok_or_else(|| ApiError::not_found(&node_subject))?;
        let node = crate::obj::decode(&kv)?;
        let (host, port) = agent_endpoint(&node).ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {node_name} has no address to reach its agent at"
            ))
        })?;
        // The query goes on as it came (the agent reads what it knows); port-forward's
        // `ports` is also given as kubelet's `port`.
        let mut q = req.parts.uri.query().unwrap_or("").to_string();
        if req.subresource == "portforward" {
            for p in query.all("ports") {
                for one in p.split(',') {
                    q.push_str(if q.is_empty() { "port=" } else { "&port=" });
                    q.push_str(one.trim());
                }
            }
        }
        let path_q = if q.is_empty() {
            path
        } else {
            format!("{path}?{q}")
        };
        let node_name = node_name.to_string();
        self.forward(req, &node_name, &host, port, &path_q).await
    }

    /// An HTTP/1.1 connection to `node`'s agent at `host:port` over mutually authenticated
    /// TLS (the connection task runs until the sender and any upgrade are dropped), and
    /// the `Host` value to send.
    async fn connect(
        &self,
        node: &str,
        host: &str,
        port: u16,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
            String,
        ),
        ApiError,
    > {
        let dial = |e: &dyn std::fmt::Display| {
            ApiError::unavailable(format!("error dialing backend: {e}"))
        };
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{host}:{port}"),
        };
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| dial(&format!("dial tcp {addr}: i/o timeout")))?
            .map_err(|e| dial(&format!("dial tcp {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let server_name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| dial(&e))?;
        let tls = tokio::time::timeout(
            self.connect_timeout,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(server_name, tcp),
        )
        .await
        .map_err(|_| dial(&"TLS handshake timeout"))?
        .map_err(|e| dial(&e))?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| dial(&"the agent presented no certificate"))?;
        node_of_cert(peer, node).map_err(|e| dial(&e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| dial(&e))?;
        tokio::spawn(
            async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "agent connection ended");
                }
            }
            .in_current_span(),
        );
        Ok((sender, addr))
    }

    /// `GET path` from a Node's agent; the body, at most `limit` bytes (else 503).
    pub(crate) async fn agent_get(
        &self,
        node: &Value,
        path: &str,
        limit: usize,
    ) -> Result<Bytes, ApiError> {
        let name = node["metadata"]["name"].as_str().unwrap_or("");
        let (host, port) = agent_endpoint(node).ok_or_else(|| {
            ApiError::unavailable(format!("node {name} has no address to reach its agent at"))
        })?;
        let (mut sender, addr) = self.connect(name, &host, port).await?;
        let req = Request::get(path)
            .header(http::header::HOST, addr.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::bad_request(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::unavailable(format!("error querying node {name}: {e}")))?;
        if !resp.status().is_success() {
            return Err(ApiError::unavailable(format!(
                "node {name} answered {} for {path}",
                resp.status()
            )));
        }
        let mut body = resp.into_body();
        let mut buf = bytes::BytesMut::new();
        while let Some(f) = body.frame().await {
            let f =
                f.map_err(|e| ApiError::unavailable(format!("reading from node {name}: {e}")))?;
            if let Ok(d) = f.into_data() {
                if buf.len() + d.len() > limit {
                    return Err(ApiError::unavailable(format!(
                        "node {name}'s answer for {path} is larger than {limit} bytes"
                    )));
                }
                buf.extend_from_slice(&d);
            }
        }
        Ok(buf.freeze())
    }

    async fn forward(
        &self,
        req: SubresourceRequest,
        node: &str,
        host: &str,
        port: u16,
        path_q: &str,
    ) -> Result<Response<Body>, ApiError> {
        let (mut sender, addr) = self.connect(node, host, port).await?;
        let SubresourceRequest { parts, .. } = req;
        let upgrade = parts.headers.contains_key(http::header::UPGRADE);
        let mut b = Request::builder()
            .method(parts.method.clone())
            .uri(path_q)
            .header(http::header::HOST, addr.as_str());
        for (k, v) in parts.headers.iter() {
            if passes(k, upgrade) {
                b = b.header(k, v);
            }
        }
        let up_req = b
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::bad_request(format!("cannot forward the request: {e}")))?;
        let mut resp = sender
            .send_request(up_req)
            .await
            .map_err(|e| ApiError::unavailable(format!("error proxying to the node agent: {e}")))?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let mut out = Response::new(crate::response::full(Bytes::new()));
            *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            for (k, v) in resp.headers() {
                out.headers_mut().append(k, v.clone());
            }
            let agent_side = hyper::upgrade::on(&mut resp);
            let client_side = hyper::upgrade::on(Request::from_parts(parts, ()));
            tokio::spawn(
                async move {
                    let (a, c) = match tokio::join!(agent_side, client_side) {
                        (Ok(a), Ok(c)) => (a, c),
                        _ => return,
                    };
                    let (mut a, mut c) = (TokioIo::new(a), TokioIo::new(c));
                    match tokio::io::copy_bidirectional_with_sizes(
                        &mut c,
                        &mut a,
                        RELAY_BUFFER,
                        RELAY_BUFFER,
                    )
                    .await
                    {
                        Ok((up, down)) => tracing::debug!(up, down, "stream relay ended"),
                        Err(e) => tracing::debug!(error = %e, "stream relay ended"),
                    }
                }
                .in_current_span(),
            );
            return Ok(out);
        }
        // A plain answer (logs, or the agent's error): streamed through a small queue.
        let (head, mut body) = resp.into_parts();
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(
            async move {
                while let Some(f) = body.frame().await {
                    let Ok(f) = f else { break };
                    if let Ok(d) = f.into_data() {
                        if tx.send(d).await.is_err() {
                            break;
                        }
                    }
                }
            }
            .in_current_span(),
        );
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
        });
        let mut out = Response::new(StreamBody::new(stream).boxed_unsync());
        *out.status_mut() = head.status;
        for k in [http::header::CONTENT_TYPE, http::header::CACHE_CONTROL] {
            if let Some(v) = head.headers.get(&k) {
                out.headers_mut().insert(k, v.clone());
            }
        }
        if !out.headers().contains_key(http::header::CONTENT_TYPE) {
            out.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        Ok(out)
    }
}

/// Checks that an agent's (CA-verified) serving certificate is `node`'s:
/// `CN=system:node:<node>` in organisation `system:nodes`, as a kubelet serving
/// certificate (and the `kubernetes.io/kubelet-serving` signer) has it.
pub(crate) fn node_of_cert(
    der: &rustls::pki_types::CertificateDer<'_>,
    node: &str,
) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the agent's certificate does not parse: {e}"))?;
    let subject = cert.subject();
    let cn: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let want = format!("system:node:{node}");
    if cn != [want.as_str()] || !orgs.contains(&"system:nodes") {
        return Err(format!(
            "x509: the agent's serving certificate is for {subject}, not node {node} \
             (want CN={want}, O=system:nodes)"
        ));
    }
    Ok(())
}

fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> crate::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = |e: &dyn std::fmt::Display| crate::Error::Pki(format!("node agent client TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| pki(&e))?).map_err(|e| pki(&e))?;
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| pki(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| pki(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| pki(&e))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| pki(&e))?
        // The chain to the cluster CA and the address dialed (webpki), then the node's
        // name ([`node_of_cert`], after the handshake).
        .with_webpki_verifier(inner)
        .with_client_auth_cert(certs, key)
        .map_err(|e| pki(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_picked_as_kube_apiserver_does() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
        assert_eq!(pick_container(&one, "p", Some("")).unwrap(), "a");
        let two = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]
        }});
        let e = pick_container(&two, "p", None).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&two, "p", Some("i")).unwrap(), "i");
        let e = pick_container(&two, "p", Some("z")).unwrap_err();
        assert_eq!(e.message, "container z is not valid for pod p");
        // Garbage in the stored object is an error, never a panic.
        assert!(pick_container(&json!({"spec": 3}), "p", None).is_err());
    }

    #[test]
    fn agent_endpoints() {
        let n = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}}
        }});
        assert_eq!(agent_endpoint(&n), Some(("10.0.0.2".into(), 10350)));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(agent_endpoint(&n), Some(("n1".into(), 10250)));
        assert_eq!(agent_endpoint(&json!({"status": {}})), None);
        assert_eq!(agent_endpoint(&json!(null)), None);
    }

    #[test]
    fn hop_headers_stay() {
        let h = |s: &str| http::HeaderName::from_bytes(s.as_bytes()).unwrap();
        assert!(!passes(&h("authorization"), true));
        assert!(passes(&h("upgrade"), true));
        assert!(!passes(&h("upgrade"), false));
        assert!(passes(&h("sec-websocket-key"), true));
        assert!(passes(&h("x-stream-protocol-version"), true));
        assert!(!passes(&h("impersonate-extra-scopes"), true));
    }
}

#[cfg(test)]
mod binding_tests {
    use super::*;
    use serde_json::json;

    /// A TLS server on loopback presenting `cert`/`key`, answering one HTTP/1.1
    /// request per connection with `ok`.
    async fn fake_agent(cert: &str, key: &str) -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    fn node(name: &str, port: u16) -> Value {
        json!({
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }
        })
    }

    #[tokio::test]
    async fn an_agent_must_present_its_own_nodes_serving_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(dir.path(), &[], "https://127.0.0.1:1").unwrap();
        let store: Arc<dyn h8s_store::Store> =
            Arc::new(h8s_store::Embedded::open(&dir.path().join("s.redb")).unwrap());
        let (cert, key) = pki
            .issue_client_cert(KUBELET_CLIENT_CN, &[], Duration::from_secs(3600))
            .unwrap();
        let proxy = NodeProxy::new(store, &pki.ca_pem, &cert, &key).unwrap();
        let life = Duration::from_secs(3600);
        let sans = |n: &str| vec!["127.0.0.1".to_string(), n.to_string()];

        // Node a's own certificate, at node a's address: served.
        let (c, k) = pki.issue_node_serving_cert("a", &sans("a"), life).unwrap();
        let a = fake_agent(&c, &k).await;
        let body = proxy
            .agent_get(&node("a", a), "/healthz", 100)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");

        // Node b's certificate (same CA, same address) where node a is dialed: refused.
        let (c, k) = pki.issue_node_serving_cert("b", &sans("b"), life).unwrap();
        let b = fake_agent(&c, &k).await;
        let e = proxy
            .agent_get(&node("a", b), "/healthz", 100)
            .await
            .unwrap_err();
        assert_eq!(e.code, 503, "{}", e.message);
        assert!(e.message.contains("not node a"), "{}", e.message);

        // Node a's certificate naming another address: refused by the address check.
        let (c, k) = pki
            .issue_node_serving_cert("a", &["10.9.9.9".to_string()], life)
            .unwrap();
        let elsewhere = fake_agent(&c, &k).await;
        let e = proxy
            .agent_get(&node("a", elsewhere), "/healthz", 100)
            .await
            .unwrap_err();
        assert_eq!(e.code, 503, "{}", e.message);

        // Not a node certificate at all (the API server's own serving certificate).
        let own = fake_agent(&pki.cert_pem, &pki.key_pem).await;
        let e = proxy
            .agent_get(&node("a", own), "/healthz", 100)
            .await
            .unwrap_err();
        assert_eq!(e.code, 503, "{}", e.message);
    }
}
