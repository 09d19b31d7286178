//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API server proxies
//! them to the node agent that runs the pod, as kube-apiserver proxies them to kubelet.
//!
//! The pod's `spec.nodeName` names the Node; its `status.addresses` (InternalIP first) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` say where the agent's streaming server
//! listens. The connection is mutually authenticated TLS: this side presents a client
//! certificate for [`KUBELET_CLIENT_CN`] issued by the cluster CA, and accepts only an
//! agent certificate that the same CA signed. The request goes on with its query, its
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
        self.forward(req, &host, port, &path_q).await
    }

    /// An HTTP/1.1 connection to the agent at `host:port` over mutually authenticated TLS
    /// (the connection task runs until the sender and any upgrade are dropped), and the
    /// `Host` value to send.
    async fn connect(
        &self,
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
        let (mut sender, addr) = self.connect(&host, port).await?;
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
        host: &str,
        port: u16,
        path_q: &str,
    ) -> Result<Response<Body>, ApiError> {
        let (mut sender, addr) = self.connect(host, port).await?;
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

/// Accepts a server certificate the cluster CA signed, whatever names it carries (agents'
/// serving certificates name their host, which may differ from the address used).
#[derive(Debug)]
struct CaSigned(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for CaSigned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaSigned(inner)))
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
