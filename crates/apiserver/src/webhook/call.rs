//! Calling a webhook: an `admission.k8s.io/v1` AdmissionReview POSTed over HTTPS (rustls,
//! trusting only the configuration's `caBundle`), the whole call bounded by the
//! webhook's `timeoutSeconds`; the answer checked and turned into an admission result
//! with kube-apiserver's wording.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tracing::Instrument;

use super::config::{Endpoint, FailurePolicy, Hook};
use super::operation_name;
use crate::admission::Request;
use crate::error::{ApiError, Cause};

/// Largest AdmissionReview response read (kube-apiserver's limit is the request
/// size limit, 3 MiB).
const MAX_RESPONSE: usize = crate::body::MAX_BODY;
/// Most idle connections kept per webhook.
const MAX_IDLE: usize = 8;

/// An HTTP/1.1 connection to a webhook: the request half and the task driving it.
pub(crate) type Conn = (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
);

/// Idle HTTP/1.1 connections to one webhook.
#[derive(Default)]
pub(crate) struct Pool(std::sync::Mutex<Vec<Conn>>);

impl Pool {
    /// An idle connection still open, if any.
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((s, task)) = v.pop() {
            if !s.is_closed() && !task.is_finished() {
                return Some((s, task));
            }
            task.abort();
        }
        None
    }

    /// Closes every idle connection (their endpoint went away).
    pub(crate) fn clear(&self) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (_, task) in v.drain(..) {
            task.abort();
        }
    }

    /// Keeps a connection after a complete exchange (at most [`MAX_IDLE`]).
    pub(crate) fn put(
        &self,
        s: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        task: tokio::task::JoinHandle<()>,
    ) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_IDLE && !s.is_closed() {
            v.push((s, task));
        } else {
            task.abort();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let v = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, task) in v.drain(..) {
            task.abort();
        }
    }
}

/// Most warnings kept from one response, and their longest text.
const MAX_WARNINGS: usize = 32;
const MAX_WARNING_LEN: usize = 512;

/// A TLS client configuration that trusts only the certificates of `ca_pem` (the
/// webhook's `caBundle`, PEM).
pub(crate) fn client_tls(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(c).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err(
            "no caBundle: h8s trusts only the configuration's caBundle for webhooks".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// kube-apiserver's error for a webhook that could not be called (or answered
/// nonsense): `Internal error occurred: failed calling webhook "x": …`.
pub(crate) fn failed(name: &str, why: &str) -> ApiError {
    let inner = format!("failed calling webhook {name:?}: {why}");
    let mut e = ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: {inner}"),
    );
    e.details.causes.push(Cause {
        reason: String::new(),
        message: inner,
        field: String::new(),
    });
    e
}

/// The `reason` of a webhook's denial, as one of Kubernetes' StatusReasons.
fn status_reason(r: &str) -> &'static str {
    match r {
        "Unauthorized" => "Unauthorized",
        "Forbidden" => "Forbidden",
        "NotFound" => "NotFound",
        "AlreadyExists" => "AlreadyExists",
        "Conflict" => "Conflict",
        "Gone" => "Gone",
        "Invalid" => "Invalid",
        "ServerTimeout" => "ServerTimeout",
        "Timeout" => "Timeout",
        "TooManyRequests" => "TooManyRequests",
        "BadRequest" => "BadRequest",
        "MethodNotAllowed" => "MethodNotAllowed",
        "NotAcceptable" => "NotAcceptable",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        "UnsupportedMediaType" => "UnsupportedMediaType",
        "InternalError" => "InternalError",
        "Expired" => "Expired",
        "ServiceUnavailable" => "ServiceUnavailable",
        _ => "",
    }
}

/// kube's `ToStatusErr`: a denial as the error the client sees.
fn denied(name: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook {name:?} denied the request");
    let code = status
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .unwrap_or(400) as u16;
    let message = status.get("message").and_then(Value::as_str).unwrap_or("");
    let reason = status.get("reason").and_then(Value::as_str).unwrap_or("");
    let text = if !message.is_empty() {
        format!("{by}: {message}")
    } else if !reason.is_empty() {
        format!("{by}: {reason}")
    } else {
        format!("{by} without explanation")
    };
    let mut e = ApiError::new(code, status_reason(reason), text);
    if let Some(causes) = status.pointer("/details/causes").and_then(Value::as_array) {
        for c in causes.iter().take(16) {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            e.details.causes.push(Cause {
                reason: s("reason"),
                message: s("message"),
                field: s("field"),
            });
        }
    }
    e
}

/// The AdmissionReview request for one webhook call.
pub(crate) fn review_request(
    uid: &str,
    req: &Request<'_>,
    options: &Value,
    obj: Option<&Value>,
) -> Value {
    let res = req.res;
    let kind = json!({"group": res.group, "version": res.version, "kind": res.kind});
    let resource = json!({"group": res.group, "version": res.version, "resource": res.plural});
    let mut r = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "namespace": req.namespace,
        "operation": operation_name(req.op),
        "userInfo": req.user.to_json(),
        "object": obj.cloned().unwrap_or(Value::Null),
        "oldObject": req.old.cloned().unwrap_or(Value::Null),
        "dryRun": req.dry_run,
        "options": options,
    });
    if let Some(sub) = req.sub {
        r["subResource"] = json!(sub);
        r["requestSubResource"] = json!(sub);
    }
    if !req.name.is_empty() {
        r["name"] = json!(req.name);
    }
    if req.namespace.is_empty() {
        if let Some(m) = r.as_object_mut() {
            m.remove("namespace");
        }
    }
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": r})
}

/// Calls one webhook about one write. Returns the patched object when a mutating webhook
/// changed it; a denial or (under `failurePolicy: Fail`) a failed call is the error.
pub(crate) async fn review(
    dynamic: &super::Dynamic,
    h: &Hook,
    req: &Request<'_>,
    options: &Value,
    obj: Option<&Value>,
    reinvocation: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    let span =
        tracing::info_span!("webhook", webhook = %h.name, mutating = h.mutating, reinvocation);
    async {
        // A dry run may reach only webhooks that declare no side effects.
        if req.dry_run && !h.side_effect_free {
            return Err(ApiError::bad_request(format!(
                "admission webhook {:?} has side effects and does not support dry run",
                h.name
            )));
        }
        let uid = crate::util::new_uid();
        let body = review_request(&uid, req, options, obj);
        let answer = match tokio::time::timeout(h.timeout, post(dynamic, h, &body)).await {
            Ok(r) => r.and_then(|resp| check_response(h, &uid, resp)),
            Err(_) => Err(format!(
                "failed to call webhook: Post {:?}: context deadline exceeded",
                url_with_timeout(h)
            )),
        };
        let response = match answer {
            Ok(r) => r,
            Err(why) => {
                return match h.failure {
                    FailurePolicy::Ignore => {
                        tracing::warn!(error = %why, "webhook failed; failurePolicy Ignore admits");
                        Ok(None)
                    }
                    FailurePolicy::Fail => Err(failed(&h.name, &why)),
                };
            }
        };
        for w in response
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .take(MAX_WARNINGS)
        {
            let w: String = w.chars().take(MAX_WARNING_LEN).collect();
            warnings.push(w);
        }
        if response.get("allowed").and_then(Value::as_bool) != Some(true) {
            return Err(denied(
                &h.name,
                response.get("status").unwrap_or(&Value::Null),
            ));
        }
        let Some(patch) = response.get("patch").and_then(Value::as_str) else {
            return Ok(None);
        };
        let Some(obj) = obj else {
            return Ok(None);
        };
        apply_patch(h, patch, obj).map(Some)
    }
    .instrument(span)
    .await
}

/// Applies a mutating webhook's JSONPatch (bounded like a client's JSON patch).
fn apply_patch(h: &Hook, patch_b64: &str, obj: &Value) -> Result<Value, ApiError> {
    let bad = |why: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "Internal error occurred: admission webhook {:?} returned a patch that cannot be applied: {why}",
            h.name
        ))
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(patch_b64)
        .map_err(|e| bad(&e))?;
    let patch = h8s_machinery::JsonPatch::parse(&raw).map_err(|e| bad(&e))?;
    let mut out = obj.clone();
    patch.apply(&mut out).map_err(|e| bad(&e))?;
    for k in ["apiVersion", "kind"] {
        if out.get(k) != obj.get(k) {
            return Err(bad(&format!("the patch changes {k}")));
        }
    }
    if serde_json::to_vec(&out).map_or(usize::MAX, |v| v.len()) > MAX_RESPONSE {
        return Err(bad(&"the patched object is too large"));
    }
    Ok(out)
}

fn url_with_timeout(h: &Hook) -> String {
    match &h.endpoint {
        Endpoint::Url { url, .. } => {
            format!("{url}?timeout={}s", h.timeout.as_secs())
        }
        // kube-apiserver shows a service reference as the URL it stands for.
        Endpoint::Service {
            namespace,
            name,
            port,
            path,
            ..
        } => format!(
            "https://{name}.{namespace}.svc:{port}{path}?timeout={}s",
            h.timeout.as_secs()
        ),
        Endpoint::Unreachable(_) => String::new(),
    }
}

/// Where one call goes: the address to dial, the name the TLS certificate must carry, the
/// `Host` header, the path (and query), the TLS client and the idle connections.
struct Target<'a> {
    addr: String,
    tls_name: String,
    authority: String,
    path: String,
    tls: Arc<rustls::ClientConfig>,
    idle: &'a Pool,
}

/// Resolves `h`'s endpoint for one call (a service reference to one of its ready
/// endpoints, now).
async fn target<'a>(dynamic: &super::Dynamic, h: &'a Hook) -> Result<Target<'a>, String> {
    match &h.endpoint {
        Endpoint::Url { url, tls, idle } => {
            let host = url.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = url.port_u16().unwrap_or(443);
            let addr = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
                Err(_) => format!("{host}:{port}"),
            };
            Ok(Target {
                addr,
                tls_name: host.to_string(),
                authority: url
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or(host)
                    .to_string(),
                path: url
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
                    .to_string(),
                tls: tls.clone(),
                idle,
            })
        }
        Endpoint::Service {
            namespace,
            name,
            port,
            path,
            tls,
            idle,
            dialled,
        } => {
            let addr = dynamic
                .resolve(namespace, name, *port)
                .await
                .map_err(|(_, why)| format!("failed to call webhook: {why}"))?;
            {
                let mut last = dialled.lock().unwrap_or_else(|e| e.into_inner());
                if *last != addr {
                    // The endpoint moved: connections to the old one are of no use.
                    idle.clear();
                    *last = addr.clone();
                }
            }
            Ok(Target {
                addr,
                tls_name: format!("{name}.{namespace}.svc"),
                authority: format!("{name}.{namespace}.svc:{port}"),
                path: path.clone(),
                tls: tls.clone(),
                idle,
            })
        }
        Endpoint::Unreachable(why) => Err(format!("failed to call webhook: {why}")),
    }
}

/// POSTs the review; the response body (any status) or why there is none. Reuses an
/// idle connection to the webhook when there is one; a connection is kept only after a
/// complete exchange (a timed-out call drops it). A reused connection that fails (the
/// webhook closed it while idle) is replaced by a new one, once.
async fn post(dynamic: &super::Dynamic, h: &Hook, body: &Value) -> Result<(u16, Bytes), String> {
    let t = target(dynamic, h).await?;
    match post_once(h, &t, body, true).await {
        Err((true, _)) => post_once(h, &t, body, false).await.map_err(|(_, e)| e),
        other => other.map_err(|(_, e)| e),
    }
}

/// One POST; the error says whether it was on a reused connection.
async fn post_once(
    h: &Hook,
    t: &Target<'_>,
    body: &Value,
    reuse: bool,
) -> Result<(u16, Bytes), (bool, String)> {
    let reused = std::sync::atomic::AtomicBool::new(false);
    post_on(h, t, body, reuse, &reused)
        .await
        .map_err(|e| (reused.load(std::sync::atomic::Ordering::Relaxed), e))
}

async fn post_on(
    h: &Hook,
    t: &Target<'_>,
    body: &Value,
    reuse: bool,
    reused: &std::sync::atomic::AtomicBool,
) -> Result<(u16, Bytes), String> {
    let idle = t.idle;
    let shown = url_with_timeout(h);
    let fail = |e: &dyn std::fmt::Display| format!("failed to call webhook: Post {shown:?}: {e}");
    let pooled = if reuse { idle.take() } else { None };
    reused.store(pooled.is_some(), std::sync::atomic::Ordering::Relaxed);
    let (mut sender, conn) = match pooled {
        Some(c) => c,
        None => {
            let tcp = tokio::net::TcpStream::connect(&t.addr)
                .await
                .map_err(|e| fail(&e))?;
            let _ = tcp.set_nodelay(true);
            let server_name = rustls::pki_types::ServerName::try_from(t.tls_name.clone())
                .map_err(|e| fail(&e))?;
            let stream = tokio_rustls::TlsConnector::from(t.tls.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(&e))?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            (sender, task)
        }
    };
    let path = t.path.as_str();
    let sep = if path.contains('?') { '&' } else { '?' };
    let target = format!("{path}{sep}timeout={}s", h.timeout.as_secs());
    let authority = t.authority.as_str();
    let body_bytes = serde_json::to_vec(body).map_err(|e| fail(&e))?;
    let request = http::Request::post(target)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, */*")
        .header(http::header::USER_AGENT, "h8s-apiserver")
        .body(Full::new(Bytes::from(body_bytes)))
        .map_err(|e| fail(&e))?;
    let result = async {
        sender.ready().await.map_err(|e| fail(&e))?;
        let resp = sender.send_request(request).await.map_err(|e| fail(&e))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| fail(&e))?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    match &result {
        Ok(_) => idle.put(sender, conn),
        Err(_) => conn.abort(),
    }
    result
}

/// Checks a webhook's HTTP answer; the AdmissionReview's `response`.
fn check_response(h: &Hook, uid: &str, (status, body): (u16, Bytes)) -> Result<Value, String> {
    if !(200..300).contains(&status) {
        let text: String = String::from_utf8_lossy(&body).chars().take(256).collect();
        return Err(format!(
            "failed to call webhook: an error on the server ({text:?}) has prevented the request from succeeding (code {status})"
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("received invalid webhook response: {e}"))?;
    let (av, kind) = (
        v.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
        v.get("kind").and_then(Value::as_str).unwrap_or(""),
    );
    if av != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(format!(
            "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {av}, Kind={kind}"
        ));
    }
    let Some(r) = v.get("response").filter(|r| r.is_object()) else {
        return Err("received invalid webhook response: webhook response was absent".into());
    };
    let got = r.get("uid").and_then(Value::as_str).unwrap_or("");
    if got != uid {
        return Err(format!(
            "received invalid webhook response: expected response.uid={uid:?}, got {got:?}"
        ));
    }
    if r.get("patch").is_some_and(|p| !p.is_null()) {
        if !h.mutating {
            return Err(
                "received invalid webhook response: validating webhook may not return a patch"
                    .into(),
            );
        }
        match r.get("patchType").and_then(Value::as_str) {
            Some("JSONPatch") => {}
            other => {
                return Err(format!(
                    "received invalid webhook response: webhook returned invalid patchType: {:?}",
                    other.unwrap_or("")
                ))
            }
        }
    }
    Ok(r.clone())
}
