//! The proxy to an aggregated API server: HTTP/1.1 over TLS with the front-proxy client
//! certificate, the caller in the requestheader headers, bodies streamed both ways. A
//! connection whose response body ended cleanly is kept (at most [`MAX_IDLE`] per
//! APIService) and reused by the next request; a request that a kept connection could not
//! take (the server closed it while idle) goes on a new one. A request that failed on a kept
//! connection after it was sent (the server closed it as the request went out) is sent
//! once more on a new connection when it can be replayed, as Go's transport does: an
//! idempotent method (GET, HEAD, OPTIONS, TRACE, or an `Idempotency-Key` /
//! `X-Idempotency-Key` header) without a body. Anything else answers 503.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::{Aggregator, Backend};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::response::Body;
use crate::state::Api;

/// Request headers never passed on: hop-by-hop ones, the caller's credentials, and
/// identity headers only this server may set.
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

/// Response headers not passed back (hop-by-hop).
fn dropped_back(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding"
    )
}

/// kube's escaping of an extra's key in `X-Remote-Extra-<key>`: percent-encoding of every
/// byte that is not a header token character (and of `%`).
pub(crate) fn escape_extra_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        let legal = b.is_ascii_alphanumeric() || b"-._~!#$&'*+^`|".contains(&b);
        if legal {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sets the requestheader identity of `user` on `h`.
pub(crate) fn identity_headers(h: &mut HeaderMap, user: &UserInfo) -> Result<(), ApiError> {
    let bad =
        |what: &str| ApiError::bad_request(format!("the user's {what} cannot be sent in a header"));
    h.insert(
        "x-remote-user",
        HeaderValue::from_str(&user.username).map_err(|_| bad("name"))?,
    );
    if !user.uid.is_empty() {
        h.insert(
            "x-remote-uid",
            HeaderValue::from_str(&user.uid).map_err(|_| bad("uid"))?,
        );
    }
    for g in &user.groups {
        h.append(
            "x-remote-group",
            HeaderValue::from_str(g).map_err(|_| bad("group"))?,
        );
    }
    let mut keys: Vec<&String> = user.extra.keys().collect();
    keys.sort();
    for k in keys {
        let name =
            HeaderName::from_bytes(format!("x-remote-extra-{}", escape_extra_key(k)).as_bytes())
                .map_err(|_| bad("extra"))?;
        for v in &user.extra[k] {
            h.append(
                name.clone(),
                HeaderValue::from_str(v).map_err(|_| bad("extra"))?,
            );
        }
    }
    Ok(())
}

type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

/// The request body of proxied requests.
pub(crate) type ProxyBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Most idle connections kept per APIService.
const MAX_IDLE: usize = 8;

/// An idle connection: the sender, the task driving it, the address dialled.
type IdleConn = (Sender<ProxyBody>, tokio::task::JoinHandle<()>, String);

/// Idle connections to one aggregated server.
#[derive(Default)]
pub(crate) struct Idle(std::sync::Mutex<Vec<IdleConn>>);

impl Idle {
    fn take(&self) -> Option<IdleConn> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((s, task, addr)) = v.pop() {
            if !s.is_closed() && !task.is_finished() {
                return Some((s, task, addr));
            }
            task.abort();
        }
        None
    }

    fn put(&self, s: Sender<ProxyBody>, task: tokio::task::JoinHandle<()>, addr: String) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_IDLE && !s.is_closed() {
            v.push((s, task, addr));
        } else {
            task.abort();
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let v = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, task, _) in v.drain(..) {
            task.abort();
        }
    }
}

impl Aggregator {
    /// Connects to the server behind `b`: resolve, TCP, TLS, HTTP/1.1, all within the
    /// dial timeout. Returns the sender and the address dialled.
    async fn connect<B>(
        &self,
        api: &Api,
        b: &Backend,
    ) -> Result<(Sender<B>, String, tokio::task::JoinHandle<()>), (String, String)>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let failed = |m: String| ("FailedDiscoveryCheck".to_string(), m);
        let tls = b.tls.clone().map_err(failed)?;
        let addr = super::resolve::resolve(api, &b.svc_namespace, &b.svc_name, b.port).await?;
        let server_name = rustls::pki_types::ServerName::try_from(b.server_name())
            .map_err(|e| failed(format!("server name {}: {e}", b.server_name())))?;
        let dial = async {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("dial tcp {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("http: {e}"))
        };
        let (sender, conn) = tokio::time::timeout(self.cfg.dial_timeout, dial)
            .await
            .map_err(|_| failed(format!("dial tcp {addr}: i/o timeout")))?
            .map_err(failed)?;
        let task = tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "aggregated server connection ended");
                }
            }
            .in_current_span(),
        );
        Ok((sender, addr, task))
    }

    /// Proxies one request of an authorized `user` to the server behind `b`.
    pub(crate) async fn proxy<B>(
        &self,
        api: &Api,
        b: Arc<Backend>,
        user: &UserInfo,
        parts: http::request::Parts,
        body: B,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let span = tracing::info_span!("aggregated_proxy", apiservice = %b.name,
            user = %user.username, path = %parts.uri.path());
        async move {
            if let Err(m) = b.available() {
                return Err(ApiError::unavailable(format!(
                    "the server is currently unable to handle the request (APIService {} is not available: {m})",
                    b.name
                )));
            }
            if parts.headers.contains_key(http::header::UPGRADE) {
                return Err(ApiError::bad_request(
                    "upgrade requests are not proxied to aggregated API servers",
                ));
            }
            let replayable = replayable(&parts.method, &parts.headers)
                && (body.is_end_stream() || body.size_hint().exact() == Some(0));
            let body: ProxyBody = Limited::new(body, crate::body::MAX_BODY)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e })
                .boxed_unsync();
            let path_q = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let mut req = Request::builder()
                .method(parts.method.clone())
                .uri(path_q)
                .body(body)
                .map_err(|e| ApiError::bad_request(format!("cannot forward the request: {e}")))?;
            let h = req.headers_mut();
            for (k, v) in parts.headers.iter() {
                if !dropped(k) {
                    h.append(k, v.clone());
                }
            }
            h.insert(
                http::header::HOST,
                HeaderValue::from_str(&b.server_name())
                    .unwrap_or(HeaderValue::from_static("localhost")),
            );
            identity_headers(h, user)?;
            // What a replay needs: the head (the body is empty).
            let head = replayable.then(|| {
                (
                    req.method().clone(),
                    req.uri().clone(),
                    req.headers().clone(),
                )
            });
            let send = async {
                // A kept connection first; a request it did not take goes on a new one.
                let mut req = req;
                if let Some((mut sender, task, addr)) = b.idle.take() {
                    if sender.ready().await.is_ok() {
                        match sender.try_send_request(req).await {
                            Ok(resp) => return Ok((resp, sender, task, addr)),
                            Err(mut e) => match (e.take_message(), head) {
                                (Some(r), _) => req = r,
                                (None, Some((method, uri, headers))) => {
                                    tracing::debug!(error = %e.into_error(), "a kept connection failed after the request was sent; replaying it on a new one");
                                    task.abort();
                                    let mut r = Request::new(empty_body());
                                    *r.method_mut() = method;
                                    *r.uri_mut() = uri;
                                    *r.headers_mut() = headers;
                                    return self.send_new(api, &b, r).await;
                                }
                                (None, None) => {
                                    task.abort();
                                    return Err(unreachable(&e.into_error()));
                                }
                            },
                        }
                    }
                    task.abort();
                }
                self.send_new(api, &b, req).await
            };
            let (resp, sender, task, addr) = tokio::time::timeout(self.cfg.response_timeout, send)
                .await
                .map_err(|_| {
                    ApiError::timeout(format!(
                        "the aggregated API server for {} did not answer in {}s",
                        b.name,
                        self.cfg.response_timeout.as_secs()
                    ))
                })??;
            let (rp, incoming) = resp.into_parts();
            let keep = (b.clone(), sender, task, addr);
            let mut out = Response::new(stream_body(incoming, Some(keep)));
            *out.status_mut() = rp.status;
            for (k, v) in rp.headers.iter() {
                if !dropped_back(k) {
                    out.headers_mut().append(k, v.clone());
                }
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// Sends `req` on a new connection to the server behind `b`.
    async fn send_new(
        &self,
        api: &Api,
        b: &Backend,
        req: Request<ProxyBody>,
    ) -> Result<
        (
            Response<hyper::body::Incoming>,
            Sender<ProxyBody>,
            tokio::task::JoinHandle<()>,
            String,
        ),
        ApiError,
    > {
        let (mut sender, addr, task) = self
            .connect::<ProxyBody>(api, b)
            .await
            .map_err(|(_, e)| unreachable(&e))?;
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, sender, task, addr)),
            Err(e) => {
                task.abort();
                Err(unreachable(&e))
            }
        }
    }

    /// `GET path` of the server behind `b` as `system:kube-aggregator` (what the
    /// aggregator reads for itself: OpenAPI documents): the body of a 2xx answer, at most
    /// `max` bytes, within the dial and response timeouts.
    pub(crate) async fn fetch(
        &self,
        api: &Api,
        b: &Backend,
        path: &str,
        max: usize,
    ) -> Result<Bytes, String> {
        let (mut sender, addr, _task) = self
            .connect::<Empty<Bytes>>(api, b)
            .await
            .map_err(|(_, m)| m)?;
        let mut req = Request::get(path)
            .header(http::header::HOST, b.server_name())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        identity_headers(req.headers_mut(), &aggregator_user()).map_err(|e| e.message)?;
        let read = async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let code = resp.status();
            let body = Limited::new(resp.into_body(), max)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !code.is_success() {
                return Err(format!("GET https://{addr}{path}: {}", code.as_u16()));
            }
            Ok(body)
        };
        tokio::time::timeout(self.cfg.response_timeout, read)
            .await
            .map_err(|_| format!("GET https://{addr}{path}: timed out"))?
    }

    /// The availability check: `GET /apis/<group>/<version>` as
    /// `system:kube-aggregator`; the `APIResourceList` it answers (at most
    /// [`super::MAX_DISCOVERY`] bytes), or (reason, message).
    pub(crate) async fn check(
        &self,
        api: &Api,
        b: &Backend,
    ) -> Result<Option<serde_json::Value>, (String, String)> {
        let path = format!("/apis/{}/{}", b.group, b.version);
        let url = |addr: &str| format!("https://{addr}{path}");
        let fail = |addr: &str, e: &dyn std::fmt::Display| {
            (
                "FailedDiscoveryCheck".to_string(),
                format!("failing or missing response from {}: {e}", url(addr)),
            )
        };
        let (mut sender, addr, _task) = match self.connect::<Empty<Bytes>>(api, b).await {
            Ok(x) => x,
            Err((r, m)) if r == "FailedDiscoveryCheck" => return Err(fail(&b.server_name(), &m)),
            Err(e) => return Err(e),
        };
        let mut req = Request::get(&path)
            .header(http::header::HOST, b.server_name())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(&addr, &e))?;
        identity_headers(req.headers_mut(), &aggregator_user())
            .map_err(|e| fail(&addr, &e.message))?;
        let read = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| fail(&addr, &e))?;
            let code = resp.status();
            let body = Limited::new(resp.into_body(), super::MAX_DISCOVERY)
                .collect()
                .await
                .map_err(|e| fail(&addr, &e))?
                .to_bytes();
            if !code.is_success() {
                return Err(fail(
                    &addr,
                    &format!("bad status from {}: {}", url(&addr), code.as_u16()),
                ));
            }
            Ok(serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(|v| v["kind"] == "APIResourceList"))
        };
        tokio::time::timeout(self.cfg.dial_timeout, read)
            .await
            .map_err(|_| fail(&addr, &"Client.Timeout exceeded while awaiting headers"))?
    }
}

/// Who the aggregator is to the servers it checks.
/// Whether a request may be sent again after it went out on a connection that then failed
/// (Go's `Request.isReplayable`, for a request without a body).
fn replayable(method: &http::Method, headers: &HeaderMap) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || headers.contains_key("idempotency-key")
        || headers.contains_key("x-idempotency-key")
}

fn empty_body() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn aggregator_user() -> UserInfo {
    UserInfo {
        username: "system:kube-aggregator".into(),
        groups: vec![crate::tenancy::MASTERS_GROUP.to_string()],
        ..Default::default()
    }
}

/// The Status of a request the aggregated server could not be reached for.
fn unreachable(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("error trying to reach service: {e}"))
}

/// A connection kept after its response: the backend, the sender, its task, the address.
type Keep = (
    Arc<Backend>,
    Sender<ProxyBody>,
    tokio::task::JoinHandle<()>,
    String,
);

/// The aggregated server's response body, streamed as it comes (hyper's backpressure:
/// nothing is buffered beyond a frame); a broken stream ends the body. When the body ends
/// cleanly its connection (`keep`) goes back to the backend's idle ones.
fn stream_body(incoming: hyper::body::Incoming, keep: Option<Keep>) -> Body {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = broken.clone();
    let frames = http_body_util::BodyStream::new(incoming)
        .take_while(move |r| {
            if r.is_err() {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            std::future::ready(r.is_ok())
        })
        .filter_map(|r| std::future::ready(r.ok()))
        .map(Ok::<_, Infallible>);
    let mut keep = keep;
    let done = futures::stream::poll_fn(move |_| {
        if let Some((b, sender, task, addr)) = keep.take() {
            if broken.load(std::sync::atomic::Ordering::Relaxed) {
                task.abort();
            } else {
                b.idle.put(sender, task, addr);
            }
        }
        std::task::Poll::Ready(None::<Result<Frame<Bytes>, Infallible>>)
    });
    http_body_util::StreamBody::new(frames.chain(done)).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayable_requests_as_go() {
        let none = HeaderMap::new();
        for m in [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS] {
            assert!(replayable(&m, &none), "{m}");
        }
        for m in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            assert!(!replayable(&m, &none), "{m}");
        }
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", HeaderValue::from_static("k1"));
        assert!(replayable(&http::Method::POST, &keyed));
    }

    #[test]
    fn identity_and_dropped_headers() {
        let mut h = HeaderMap::new();
        let u = UserInfo {
            username: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: [(
                "scopes.example.com/x y".to_string(),
                vec!["a".into(), "b".into()],
            )]
            .into_iter()
            .collect(),
        };
        identity_headers(&mut h, &u).unwrap();
        assert_eq!(h["x-remote-user"], "alice");
        assert_eq!(h["x-remote-uid"], "u-1");
        assert_eq!(h.get_all("x-remote-group").iter().count(), 2);
        let extra: Vec<_> = h
            .get_all("x-remote-extra-scopes.example.com%2Fx%20y")
            .iter()
            .collect();
        assert_eq!(extra, ["a", "b"]);
        for n in [
            "authorization",
            "impersonate-user",
            "x-remote-user",
            "x-remote-extra-a",
            "connection",
        ] {
            assert!(dropped(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!dropped(&http::header::ACCEPT));
        assert!(!dropped(&http::header::CONTENT_TYPE));
    }
}
