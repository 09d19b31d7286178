//! `spec.conversion.strategy: Webhook`: objects cross versions through the definition's
//! conversion webhook, with an `apiextensions.k8s.io/v1 ConversionReview`, as
//! kube-apiserver converts them.
//!
//! The webhook is `clientConfig.url` or `clientConfig.service` (resolved as the
//! aggregator resolves services: [`crate::aggregator::resolve`], so only endpoints the
//! host reaches), over TLS trusting only `clientConfig.caBundle` (the service's TLS name
//! is `<service>.<namespace>.svc`). One call converts every object of a request that is
//! not in the desired version; the call is bounded by [`TIMEOUT`] and the answer by
//! [`MAX_RESPONSE`]. Idle connections to a `url` webhook are kept and reused (at most 8,
//! as for admission webhooks). The answer is checked as kube-apiserver checks it (uid, `result`,
//! one object per object sent, each in the desired `apiVersion` and the same `kind`);
//! of the metadata only labels and annotations may change (the rest is kept from the
//! object sent). Failures are `conversion webhook for <group/version>, Kind=<kind>
//! failed: …` (kube-apiserver's words), as a 503: the webhook is a dependency that is not
//! answering well, not a fault of this server (kube-apiserver answers 500).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::Api;

/// The longest a conversion call may take (kube-apiserver's).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest ConversionReview answer read.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Where a conversion webhook is and how it is trusted.
pub(crate) struct Webhook {
    url: Option<http::Uri>,
    service: Option<(String, String, String, u16)>,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// Idle connections to a `url` webhook, reused as the admission webhooks' are (a
    /// `service` one is dialled each time: its endpoints may move).
    idle: crate::webhook::call::Pool,
}

impl Webhook {
    /// The webhook of a definition's `spec.conversion.webhook.clientConfig`.
    pub(crate) fn parse(cc: &Value) -> Webhook {
        use base64::Engine as _;
        let ca = cc["caBundle"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        let tls = crate::webhook::call::client_tls(&ca).map(Arc::new);
        let url = cc["url"].as_str().and_then(|u| u.parse().ok());
        let service = cc.get("service").filter(|s| s.is_object()).map(|s| {
            let st = |k: &str| s[k].as_str().unwrap_or("").to_string();
            let path = match st("path") {
                p if p.is_empty() => "/".to_string(),
                p => p,
            };
            let port = s["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443);
            (st("namespace"), st("name"), path, port)
        });
        Webhook {
            url,
            service,
            tls,
            idle: Default::default(),
        }
    }

    /// (address to dial, TLS name, path and query).
    async fn target(&self, api: &Api) -> Result<(String, String, String), String> {
        if let Some((ns, name, path, port)) = &self.service {
            let addr = crate::aggregator::resolve::resolve(api, ns, name, *port)
                .await
                .map_err(|(_, m)| m)?;
            return Ok((addr, format!("{name}.{ns}.svc"), path.clone()));
        }
        let u = self.url.as_ref().ok_or("no clientConfig.url or service")?;
        let host = u.host().ok_or("the URL has no host")?.to_string();
        let port = u.port_u16().unwrap_or(443);
        let pq = u.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        Ok((addr, bare, pq))
    }

    /// POSTs the review within [`TIMEOUT`]: on an idle connection when there is one
    /// (replaced by a new one, once, when the webhook closed it), else a new one.
    async fn post(&self, api: &Api, body: Vec<u8>) -> Result<Value, String> {
        let pooled = if self.service.is_none() {
            self.idle.take()
        } else {
            None
        };
        let reused = pooled.is_some();
        let body = Bytes::from(body);
        let call = async {
            match self.post_on(api, body.clone(), pooled).await {
                Err((true, _)) if reused => self.post_on(api, body, None).await,
                other => other,
            }
            .map_err(|(_, e)| e)
        };
        tokio::time::timeout(TIMEOUT, call).await.map_err(|_| {
            let shown = match (&self.url, &self.service) {
                (Some(u), _) => u.to_string(),
                (None, Some((ns, name, path, port))) => {
                    format!("https://{name}.{ns}.svc:{port}{path}")
                }
                (None, None) => String::new(),
            };
            format!("Post \"{shown}\": context deadline exceeded")
        })?
    }

    /// One POST on `conn` or a new connection; an error says whether the request may be
    /// sent again on a new connection (it failed before an answer came).
    async fn post_on(
        &self,
        api: &Api,
        body: Bytes,
        conn: Option<crate::webhook::call::Conn>,
    ) -> Result<Value, (bool, String)> {
        let tls = self.tls.clone().map_err(|e| (false, e))?;
        let (addr, name, pq) = self.target(api).await.map_err(|e| (false, e))?;
        let url = format!("https://{addr}{pq}");
        let fail = |e: &dyn std::fmt::Display| format!("Post \"{url}\": {e}");
        let (mut sender, task) = match conn {
            Some(c) => c,
            None => {
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| (false, fail(&e)))?;
                let tcp = tokio::net::TcpStream::connect(&addr)
                    .await
                    .map_err(|e| (false, fail(&e)))?;
                let _ = tcp.set_nodelay(true);
                let tls = tokio_rustls::TlsConnector::from(tls)
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| (false, fail(&e)))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| (false, fail(&e)))?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (sender, task)
            }
        };
        let exchange = async {
            sender.ready().await.map_err(|e| (true, fail(&e)))?;
            let req = http::Request::post(&pq)
                .header(http::header::HOST, name.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json")
                .body(Full::new(body))
                .map_err(|e| (false, fail(&e)))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| (true, fail(&e)))?;
            let code = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| (false, fail(&e)))?
                .to_bytes();
            Ok((code, bytes))
        };
        let (code, bytes) = match exchange.await {
            Ok(x) => {
                if self.service.is_none() {
                    self.idle.put(sender, task);
                } else {
                    task.abort();
                }
                x
            }
            Err(e) => {
                task.abort();
                return Err(e);
            }
        };
        if !code.is_success() {
            return Err((
                false,
                format!("conversion webhook response was not 200: {}", code.as_u16()),
            ));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            (
                false,
                format!("unable to parse the conversion webhook response: {e}"),
            )
        })
    }
}

/// Converts `objs` to `desired` (`group/version`) through the webhook; objects already in
/// that version are left as they are.
pub(crate) async fn convert(
    api: &Api,
    hook: &Webhook,
    kind: &str,
    objs: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let todo: Vec<usize> = (0..objs.len())
        .filter(|i| objs[*i]["apiVersion"].as_str() != Some(desired))
        .collect();
    if todo.is_empty() {
        return Ok(objs);
    }
    let from = objs[todo[0]]["apiVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let failed = |e: String| {
        ApiError::unavailable(format!(
            "conversion webhook for {from}, Kind={kind} failed: {e}"
        ))
    };
    let uid = crate::util::new_uid();
    let sent: Vec<&Value> = todo.iter().map(|i| &objs[*i]).collect();
    let review = json!({"kind": "ConversionReview", "apiVersion": "apiextensions.k8s.io/v1",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": sent}});
    let body = serde_json::to_vec(&review).map_err(|e| failed(e.to_string()))?;
    let answer = hook.post(api, body).await.map_err(&failed)?;
    let resp = &answer["response"];
    if resp["uid"].as_str() != Some(uid.as_str()) {
        return Err(failed(format!(
            "expected response.uid={uid:?}, got {:?}",
            resp["uid"].as_str().unwrap_or("")
        )));
    }
    if resp["result"]["status"] != "Success" {
        return Err(failed(
            resp["result"]["message"]
                .as_str()
                .unwrap_or("the webhook did not report success")
                .to_string(),
        ));
    }
    let empty = Vec::new();
    let converted = resp["convertedObjects"].as_array().unwrap_or(&empty);
    if converted.len() != todo.len() {
        return Err(failed(format!(
            "expected {} converted objects, got {}",
            todo.len(),
            converted.len()
        )));
    }
    let mut out = objs;
    for (i, c) in todo.into_iter().zip(converted) {
        if c["apiVersion"].as_str() != Some(desired) {
            return Err(failed(format!(
                "invalid converted object at index {i}: expected apiVersion {desired}, got {}",
                c["apiVersion"].as_str().unwrap_or("")
            )));
        }
        if c["kind"] != out[i]["kind"] {
            return Err(failed(format!(
                "invalid converted object at index {i}: expected kind {}, got {}",
                out[i]["kind"].as_str().unwrap_or(""),
                c["kind"].as_str().unwrap_or("")
            )));
        }
        // Only labels and annotations may change in metadata.
        let mut meta = out[i]["metadata"].clone();
        for k in ["labels", "annotations"] {
            match c["metadata"].get(k) {
                Some(v) if v.is_object() => meta[k] = v.clone(),
                _ => {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        let mut c = c.clone();
        c["metadata"] = meta;
        out[i] = c;
    }
    Ok(out)
}
