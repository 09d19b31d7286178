//! The node agent's streaming server: what kubelet serves on its port for the API server's
//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` — the same paths
//! (`/containerLogs/{ns}/{pod}/{container}`, `/exec/{ns}/{pod}[/{uid}]/{container}`,
//! `/attach/…`, `/portForward/{ns}/{pod}[/{uid}]`) and the same wire protocols:
//!
//! * logs: plain HTTP, `text/plain`, from the CRI log files the runtime writes
//!   (`follow`, `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `previous`,
//!   `limitBytes`);
//! * exec and attach: WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, the base64
//!   variant and the legacy `channel.k8s.io`) or SPDY/3.1 (`v4.channel.k8s.io`,
//!   `v3.channel.k8s.io`, `v2.channel.k8s.io`, `channel.k8s.io`), see [`spdy`];
//! * port-forward: SPDY/3.1 (`portforward.k8s.io`), SPDY tunnelled through a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31), and the channel WebSocket
//!   (`v4.channel.k8s.io`: channel 2n data and 2n+1 errors of the n-th port, each
//!   starting with the port as two little-endian bytes) that the Python client uses.
//!
//! The server speaks TLS and serves only clients whose certificate the cluster CA signed
//! and whose common name is allowed ([`APISERVER_CLIENT_CN`] by default): the API server
//! proxies users' requests here after its own authentication and authorization.
//!
//! What it streams comes from a [`StreamBackend`]: [`LookupBackend`] in a running agent
//! (its pod table names the sandbox and container instances), [`RuntimeBackend`] over the
//! bare pod runtime (pods found by their CRI labels).

mod exec;
mod logs;
mod lookup_backend;
mod portforward;
mod runtime_backend;
pub mod spdy;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use lookup_backend::LookupBackend;
pub use runtime_backend::RuntimeBackend;

/// The common name of the API server's client certificate for node agents (kubeadm's name).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The pod a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when the path carried one.
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A terminal size as Kubernetes sends it (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// What to run for an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// argv (non-empty).
    pub command: Vec<String>,
    /// Keep stdin open for the client's input.
    pub stdin: bool,
    /// Run on a terminal.
    pub tty: bool,
}

/// Client → process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes for stdin.
    Stdin(Bytes),
    /// End of stdin.
    CloseStdin,
    /// New terminal size.
    Resize(TermSize),
}

/// Process → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Standard output (the terminal with a tty).
    Stdout(Bytes),
    /// Standard error.
    Stderr(Bytes),
    /// The process ended with this code (128+N for signal N); nothing follows.
    Exit(i32),
}

/// A running exec or attach: bounded queues both ways (a slow client slows the process's
/// output down instead of growing a buffer).
pub struct Session {
    /// Input for the process.
    pub input: mpsc::Sender<Input>,
    /// Its output, then its exit; ends without an exit if the pod went away.
    pub output: mpsc::Receiver<Output>,
}

/// A container's log file (CRI format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file.
    pub path: PathBuf,
}

/// A byte stream to a port inside a pod.
pub trait PodConn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodConn for T {}

/// Why the backend could not serve a request; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// 404: no such pod or container here.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request cannot be served as asked (e.g. no previous container).
    #[error("{0}")]
    BadRequest(String),
    /// 503: the pod exists but cannot serve now (not running, VM unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// 500: anything else.
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            BackendError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            BackendError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            BackendError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            BackendError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }
}

/// Where streams come from: the pod runtime, or a fake in tests. Object-safe; every call
/// owns its arguments.
pub trait StreamBackend: Send + Sync + 'static {
    /// Starts a process in a running container.
    fn exec(
        &self,
        pod: PodRef,
        container: String,
        req: ExecRequest,
    ) -> BoxFuture<'static, Result<Session, BackendError>>;
    /// Attaches to a container's main process (its stdin only if it was created with one).
    fn attach(
        &self,
        pod: PodRef,
        container: String,
        stdin: bool,
        tty: bool,
    ) -> BoxFuture<'static, Result<Session, BackendError>>;
    /// The container's log file; `previous`: the one of its last terminated instance.
    fn log_file(
        &self,
        pod: PodRef,
        container: String,
        previous: bool,
    ) -> BoxFuture<'static, Result<LogFile, BackendError>>;
    /// Whether the container still runs (a followed log ends when it stops).
    fn is_running(&self, pod: PodRef, container: String) -> BoxFuture<'static, bool>;
    /// Connects to `127.0.0.1:port` inside the pod.
    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn PodConn>, BackendError>>;
}

/// The server's settings (the binary turns them into flags).
#[derive(Clone)]
pub struct ServeConfig {
    /// TLS; build it with [`server_tls`] so that client certificates are required.
    pub tls: Arc<rustls::ServerConfig>,
    /// Client certificate common names served (default: [`APISERVER_CLIENT_CN`]).
    pub allowed_clients: Vec<String>,
    /// How long the client may take to open all streams of an exec or a port-forward pair.
    pub stream_creation_timeout: Duration,
    /// How often a followed log is checked for new lines.
    pub log_poll_interval: Duration,
    /// TLS handshake limit.
    pub handshake_timeout: Duration,
    /// Serves `/stats/summary` (kubelet's Summary API) when set.
    pub stats: Option<Arc<crate::stats::Stats>>,
}

impl ServeConfig {
    /// Defaults as kubelet has them (30 s stream creation).
    pub fn new(tls: Arc<rustls::ServerConfig>) -> ServeConfig {
        ServeConfig {
            tls,
            allowed_clients: vec![APISERVER_CLIENT_CN.to_string()],
            stream_creation_timeout: Duration::from_secs(30),
            log_poll_interval: Duration::from_millis(200),
            handshake_timeout: Duration::from_secs(10),
            stats: None,
        }
    }
}

/// Errors of setting up or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Accepting connections failed.
    #[error("streaming server i/o failed")]
    Io(#[from] std::io::Error),
    /// The TLS material is unusable.
    #[error("streaming server TLS set-up: {0}")]
    Tls(String),
}

/// A rustls server configuration presenting `cert_pem`/`key_pem` and requiring a client
/// certificate signed by `ca_pem` (HTTP/1.1 only: upgrades need it).
pub fn server_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

pub(crate) struct Ctx {
    pub backend: Arc<dyn StreamBackend>,
    pub cfg: ServeConfig,
}

/// Serves streaming requests on `listener` until the returned future is dropped (abort the
/// task running it to stop). Connections already upgraded keep running until they end.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    backend: Arc<dyn StreamBackend>,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.tls.clone());
    let ctx = Arc::new(Ctx {
        backend,
        cfg: config,
    });
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a streaming connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(
                    ctx.cfg.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let cn = client_cn(tls.get_ref().1);
                if !cn
                    .as_deref()
                    .is_some_and(|cn| ctx.cfg.allowed_clients.iter().any(|a| a == cn))
                {
                    tracing::warn!(client = ?cn, "refused a streaming client that is not the API server");
                    return;
                }
                let svc = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(req, ctx).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(error = %e, "streaming connection ended");
                }
            }
            .instrument(tracing::debug_span!("stream_conn", %peer)),
        );
    }
}

fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

/// A response body: a whole buffer or a stream.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An error answer in Kubernetes' `Status` form.
pub(crate) fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let v = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = Response::new(full(serde_json::to_vec(&v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn bad_request(message: &str) -> Response<Body> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

pub(crate) fn backend_error(e: &BackendError) -> Response<Body> {
    let (code, reason) = e.status();
    status_response(code, reason, &e.to_string())
}

/// A request's query parameters (percent- and `+`-decoded), in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// Kubernetes' boolean parameters: `true`/`1` (any case) are true.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

async fn route(req: Request<IncomingBody>, ctx: Arc<Ctx>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.iter().skip(1).any(|s| !valid_segment(s)) {
        return status_response(StatusCode::NOT_FOUND, "NotFound", "no such path");
    }
    let pod = |ns: &str, name: &str, uid: Option<&str>| PodRef {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid: uid.map(str::to_string),
    };
    match segs.as_slice() {
        ["healthz"] => Response::new(full("ok")),
        ["stats", "summary"] => match &ctx.cfg.stats {
            Some(stats) => {
                let body = serde_json::to_vec(&stats.summary()).unwrap_or_default();
                let mut r = Response::new(full(body));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            None => status_response(StatusCode::NOT_FOUND, "NotFound", "no stats on this node"),
        },
        ["containerLogs", ns, name, c] => {
            let p = pod(ns, name, None);
            let span = tracing::info_span!("container_logs", pod = %p, container = %c);
            logs::serve(p, c.to_string(), query, ctx)
                .instrument(span)
                .await
        }
        [kind @ ("exec" | "attach"), ns, name, c]
        | [kind @ ("exec" | "attach"), ns, name, _, c] => {
            let uid = if segs.len() == 5 { Some(segs[3]) } else { None };
            let p = pod(ns, name, uid);
            let mode = if *kind == "exec" {
                exec::Mode::Exec
            } else {
                exec::Mode::Attach
            };
            let span = tracing::info_span!("exec", kind = %kind, pod = %p, container = %c);
            exec::serve(req, mode, p, c.to_string(), query, ctx)
                .instrument(span)
                .await
        }
        ["portForward", ns, name] | ["portForward", ns, name, _] => {
            let uid = if segs.len() == 4 { Some(segs[3]) } else { None };
            let p = pod(ns, name, uid);
            let span = tracing::info_span!("port_forward", pod = %p);
            portforward::serve(req, p, query, ctx)
                .instrument(span)
                .await
        }
        _ => status_response(StatusCode::NOT_FOUND, "NotFound", "no such path"),
    }
}

/// The `X-Stream-Protocol-Version` values a SPDY client offers (repeated or comma-joined).
pub(crate) fn spdy_offered(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the request asks for a SPDY/3.1 upgrade.
pub(crate) fn is_spdy(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// The `101` answer to a SPDY upgrade with the negotiated protocol.
pub(crate) fn spdy_accept(protocol: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert("x-stream-protocol-version", v);
    }
    r
}

/// The address a test or the agent binds by default (kubelet's port).
pub const DEFAULT_PORT: u16 = 10250;

/// Binds `addr` (for callers that do not bring their own listener).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    Ok(TcpListener::bind(addr).await?)
}
