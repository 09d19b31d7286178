//! The request chain: authentication → authorization → admission → registry → store.
//! [`Api::handle`] takes one HTTP request and always answers; errors become `Status`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::auth::{Attributes, Authn, Decision};
use crate::body::MAX_BODY;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::response::{error_response, full, json_response};
use crate::route::{route, Route, Target};
use crate::strategy::Sub;
use crate::util::Query;

pub use crate::response::Body;
pub use crate::state::Api;

/// The version `/version` reports. kubectl's dispatcher picks `kubectl.1.<minor>`
/// from it, so it names the Kubernetes API level h8s serves.
pub const KUBE_MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0-h8s";

/// What the audit log needs of a request that the dispatcher consumes.
struct AuditHead {
    received: jiff::Timestamp,
    method: Method,
    uri: String,
    source: Option<std::net::SocketAddr>,
    user_agent: String,
}

/// Whether an `Accept` header asks for a `meta.k8s.io` Table (first choice wins,
/// as the Kubernetes negotiation does).
fn wants_table(accept: &str) -> bool {
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let base = params.next().unwrap_or("");
        let (mut is_table, mut g_ok) = (false, false);
        for p in params {
            match p.split_once('=') {
                Some(("as", "Table")) => is_table = true,
                Some(("g", "meta.k8s.io")) => g_ok = true,
                _ => {}
            }
        }
        if is_table && g_ok && (base == "application/json" || base == "*/*") {
            return true;
        }
        if base == "application/json" && !is_table {
            return false;
        }
    }
    false
}

impl Api {
    /// Answers one request. Never fails and never panics outward: a panic inside is
    /// caught and answered with a 500 `Status`.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let mut verb = "unknown";
        let mut resource = String::new();
        // audit: what the request was, before the dispatcher consumes it.
        let audit_head = self.audit.as_ref().map(|_| AuditHead {
            received: jiff::Timestamp::now(),
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
            source: crate::auth::RequestInfo::from_parts(&parts).remote_addr,
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        });
        let mut trace = None;
        let fut = std::panic::AssertUnwindSafe(self.clone().dispatch(
            parts,
            body,
            &mut verb,
            &mut resource,
            &mut trace,
        ))
        .catch_unwind();
        let resp = match fut.await {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(path, panic = %msg, "request handler panicked");
                error_response(&ApiError::internal(
                    "an internal error occurred while serving the request",
                ))
            }
        };
        if verb != "watch" {
            self.metrics
                .observe(verb, &resource, resp.status().as_u16(), start.elapsed());
        }
        tracing::debug!(path, verb, code = resp.status().as_u16(), "request");
        if let (Some(log), Some(head)) = (self.audit.as_ref(), audit_head) {
            let (user, attrs, decision) = match trace {
                Some((u, a, d)) => (Some(u), a, Some(d)),
                None => (
                    None,
                    Attributes {
                        verb: verb.to_string(),
                        path: path.clone(),
                        ..Default::default()
                    },
                    None,
                ),
            };
            log.record(&crate::audit::Record {
                user: user.as_ref(),
                attrs: &attrs,
                method: &head.method,
                uri: &head.uri,
                source: head.source,
                user_agent: &head.user_agent,
                code: resp.status().as_u16(),
                received: head.received,
                latency: start.elapsed(),
                decision,
            });
        }
        resp
    }

    async fn dispatch<B>(
        self: Arc<Self>,
        parts: http::request::Parts,
        body: B,
        verb_out: &mut &'static str,
        res_out: &mut String,
        trace: &mut Option<(crate::auth::UserInfo, Attributes, bool)>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let r = route(parts.uri.path(), &self.crds);
        // Health and version are public, as kube-apiserver's system:public-info-viewer
        // makes them; everything else needs credentials.
        match &r {
            Route::Version => {
                *verb_out = "get";
                return json_response(200, &version(&self.build));
            }
            Route::Health(which) => {
                *verb_out = "get";
                let ok =
                    *which != "readyz" || self.ready.load(std::sync::atomic::Ordering::Relaxed);
                let mut resp = Response::new(full(if ok { "ok" } else { "not ready" }));
                *resp.status_mut() = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return resp;
            }
            _ => {}
        }
        // identity: the Keystone v3 API checks its own credentials (X-Auth-Token).
        if crate::identity::keystone::is_identity_path(parts.uri.path()) {
            if let Some(id) = self.identity.clone() {
                *verb_out = "keystone";
                let body = read_body(&parts, body).await;
                return crate::identity::keystone::handle(&self, &id, parts, body).await;
            }
            if let Some(ks) = self.keystone.clone() {
                *verb_out = "keystone";
                let body = read_body(&parts, body).await;
                return ks.proxy(parts, body).await;
            }
        }
        // auth (helper "auth"): authenticators see the whole request and its TLS session.
        let user = match self
            .authn
            .authenticate(&crate::auth::RequestInfo::from_parts(&parts))
            .await
        {
            Authn::User(u) => u,
            Authn::NoOpinion | Authn::Denied => return error_response(&ApiError::unauthorized()),
            Authn::Unavailable(why) => return error_response(&ApiError::unavailable(why)),
        };
        // rbac: `Impersonate-*` headers (kubectl --as), for callers allowed to impersonate.
        let user = match crate::rbac::impersonate::impersonate(&*self.authz, user, &parts.headers) {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        };
        let query = Query::parse(parts.uri.query());
        let accept = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut cx = Ctx {
            user,
            as_table: wants_table(&accept),
            include_object: query.get("includeObject").unwrap_or("Metadata").to_string(),
            query,
            headers: parts.headers.clone(),
            method: parts.method.clone(),
            warnings: Vec::new(),
            late_warnings: Default::default(),
            verb: "get",
            applying: false,
            parts: None,
            authz_filter: None,
        };
        let mut attrs = Attributes {
            verb: String::new(),
            path: parts.uri.path().to_string(),
            ..Default::default()
        };
        // aggregation: a group version an APIService's service serves.
        let agg =
            self.aggregator
                .target(&r, &parts.method, parts.uri.path(), &cx.query, &self.crds);
        if let Some(a) = &agg {
            cx.verb = a.verb;
            *res_out = a.resource.clone();
            a.attributes(&mut attrs);
        } else if let Route::Resource(t) = &r {
            cx.verb = verb_of(&parts.method, t, &cx.query);
            *res_out = t.res.plural.to_string();
            attrs.resource_request = true;
            attrs.group = t.res.group.into();
            attrs.version = t.res.version.into();
            attrs.resource = t.res.plural.into();
            attrs.subresource = t.sub.clone().unwrap_or_default();
            attrs.name = t.name.clone().unwrap_or_default();
            // rbac: a list or watch of one object by `metadata.name` is about that name
            // (kube-apiserver's RequestInfo), so resourceNames rules and the Node
            // authorizer apply to it.
            if attrs.name.is_empty() && matches!(cx.verb, "list" | "watch") {
                if let Some(n) = cx.query.get("fieldSelector").and_then(name_in_selector) {
                    attrs.name = n;
                }
            }
            attrs.namespace = t.ns.clone().unwrap_or_default();
        } else if let Route::MetricsApi(t) = &r {
            cx.verb = crate::metrics_api::verb(&parts.method, t, cx.query.flag("watch"));
            *res_out = t.kind.plural().to_string();
            attrs.resource_request = true;
            attrs.group = crate::metrics_api::GROUP.into();
            attrs.version = crate::metrics_api::VERSION.into();
            attrs.resource = t.kind.plural().into();
            attrs.name = t.name.clone().unwrap_or_default();
            attrs.namespace = t.ns.clone().unwrap_or_default();
        } else {
            cx.verb = match parts.method {
                Method::GET | Method::HEAD => "get",
                Method::POST => "post",
                Method::PUT => "put",
                Method::DELETE => "delete",
                _ => "unknown",
            };
        }
        *verb_out = cx.verb;
        attrs.verb = cx.verb.to_string();
        // limits: priority and fairness after authentication, before authorization (where
        // kube-apiserver's APF filter sits); long-running requests hold their place until
        // their response ends.
        let kind = match &r {
            Route::Resource(t) => {
                crate::flow::Kind::of(cx.verb, t.sub.as_deref(), cx.query.flag("follow"))
            }
            _ => crate::flow::Kind::of(
                cx.verb,
                agg.as_ref()
                    .map(|a| a.subresource.as_str())
                    .filter(|s| !s.is_empty()),
                false,
            ),
        };
        // limits: what a LIST (or a watch's initial list) reads, for its width in seats.
        let work = match &r {
            Route::Resource(t) if matches!(cx.verb, "list" | "watch") && agg.is_none() => {
                let q = &cx.query;
                let selective = [q.get("labelSelector"), q.get("fieldSelector")]
                    .iter()
                    .any(|s| s.is_some_and(|s| !s.is_empty()));
                let rv = q.get("resourceVersion").unwrap_or("");
                crate::flow::Work {
                    prefix: Some(crate::obj::prefix(t.res, None)),
                    limit: (!selective)
                        .then(|| q.get("limit").and_then(|l| l.parse().ok()))
                        .flatten(),
                    initial_list: rv.is_empty()
                        || rv == "0"
                        || q.get("sendInitialEvents") == Some("true"),
                }
            }
            _ => crate::flow::Work::default(),
        };
        let admitted = match self.flow.admit(&cx.user, &attrs, kind, &work).await {
            Ok(a) => a,
            Err(r) => return r.response(),
        };
        let decision = self.authz.authorize(&cx.user, &attrs);
        if self.audit.is_some() {
            *trace = Some((cx.user.clone(), attrs.clone(), decision.allowed()));
        }
        // auth: a filtered allowance narrows lists and watches (see filter.rs).
        if let Decision::AllowFiltered(f) = &decision {
            cx.authz_filter = Some(f.clone());
        }
        if let Decision::Deny(why) = decision {
            // rbac: kube-apiserver's wording, and its details (group, resource, name).
            let msg = crate::rbac::forbidden_message(&cx.user, &attrs, &why);
            let e = if attrs.resource_request {
                ApiError::forbidden(msg).about(&crate::error::Subject {
                    group: &attrs.group,
                    resource: &attrs.resource,
                    name: &attrs.name,
                })
            } else {
                ApiError::forbidden(msg)
            };
            return error_response(&e);
        }
        if let Some(a) = agg {
            // A filtered allowance (a tenant's list across namespaces) cannot filter
            // what another server answers.
            let resp = if cx.authz_filter.is_some() {
                error_response(&ApiError::forbidden(crate::rbac::forbidden_message(
                    &cx.user, &attrs, "",
                )))
            } else {
                match self
                    .aggregator
                    .proxy(&self, a.backend, &cx.user, parts, body)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            };
            return admitted.attach(resp);
        }
        let body = match read_body(&parts, body).await {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        let req_path = parts.uri.path().to_string();
        cx.parts = Some(parts);
        let result = match r {
            Route::Resource(t) => self.resource(&mut cx, &t, body).await,
            Route::MetricsApi(t) => match &self.metrics_api {
                Some(m) => m.serve(&cx, &t).await,
                None => Err(ApiError::no_route()),
            },
            Route::Metrics => {
                let mut text = self.metrics.render();
                text.push_str(&self.flow.render());
                text.push_str(&crate::watch::render_metrics(&self));
                let mut resp = Response::new(full(text));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(resp)
            }
            Route::LegacyRoot => Ok(crate::discovery::legacy_root(&accept, &self.crds)),
            Route::GroupList => Ok(crate::discovery::group_list(
                &accept,
                &self.crds,
                &self.aggregator,
            )),
            Route::Group(g) => crate::discovery::group(&g, &self.crds, &self.aggregator),
            Route::GroupVersion(g, v) => crate::discovery::group_version(&g, &v, &self.crds),
            Route::OpenApiV2 => {
                crate::openapi::v2(&req_path, &accept, &self.crds, &self.aggregator)
            }
            Route::OpenApiV3Index => crate::openapi::v3_index(&self.crds, &self.aggregator),
            Route::OpenApiV3(p) => crate::openapi::v3(&p, &self.crds, &self.aggregator),
            // auth: OIDC discovery of the ServiceAccount token issuer.
            Route::NotFound => self
                .openid
                .as_ref()
                .and_then(|t| crate::sa_token::discovery(t, &req_path))
                .ok_or_else(ApiError::no_route),
            Route::Version | Route::Health(_) => Err(ApiError::no_route()),
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let late = std::mem::take(&mut *cx.late_warnings.lock().unwrap_or_else(|e| e.into_inner()));
        for h in crate::response::warning_headers(cx.warnings.iter().chain(&late)) {
            resp.headers_mut().append(http::header::WARNING, h);
        }
        admitted.attach(resp)
    }

    async fn resource(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let sub = t.sub.as_deref();
        if let Some(w) = t.cr.as_ref().and_then(|c| c.deprecation_warning()) {
            cx.warnings.push(w);
        }
        if let Some(s) = sub {
            if t.res.subresource(s).is_none() {
                return Err(ApiError::no_route());
            }
        }
        let need = |verb: &str| -> Result<(), ApiError> {
            if sub.is_none() && !t.res.has_verb(verb) {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            Ok(())
        };
        if let Some(s) = sub {
            let key = (t.res.plural.to_string(), s.to_string());
            if let Some(h) = self.streams.get(&key).cloned() {
                let name = t.name.clone().unwrap_or_default();
                let (_, object) = self
                    .read(t, &name)
                    .await?
                    .ok_or_else(|| ApiError::not_found(&t.subject(&name)))?;
                let parts = cx
                    .parts
                    .take()
                    .ok_or_else(|| ApiError::internal("request parts are gone"))?;
                return Ok(h
                    .handle(crate::stream::SubresourceRequest {
                        user: cx.user.clone(),
                        resource: t.res.plural,
                        subresource: s.to_string(),
                        namespace: t.ns.clone().unwrap_or_default(),
                        name,
                        object,
                        parts,
                        body,
                    })
                    .await);
            }
        }
        // Computed, never stored: h8s's own components.
        if t.res.group.is_empty() && t.res.kind == "ComponentStatus" && sub.is_none() {
            return match cx.verb {
                "get" | "list" => self.serve_component_status(cx, t).await,
                _ => Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )),
            };
        }
        // What a subresource does is the kind's strategy's to say.
        let role = match sub {
            None => None,
            Some(s) => Some(t.strategy().subresource(t.res, s).ok_or_else(|| {
                ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
            })?),
        };
        match (cx.verb, role) {
            ("list", None) => {
                need("list")?;
                self.list(cx, t).await
            }
            ("watch", None) => {
                need("watch")?;
                self.watch(cx, t).await
            }
            ("get", None | Some(Sub::Status | Sub::Approval)) => {
                need("get")?;
                self.get(cx, t).await
            }
            ("get", Some(Sub::Scale)) => self.get_scale(cx, t).await,
            ("create", None) => {
                need("create")?;
                self.create(cx, t, body).await
            }
            ("create", Some(Sub::Binding)) => self.bind(cx, t, body).await,
            ("create", Some(Sub::Eviction)) => self.evict(cx, t, body).await,
            ("update", None | Some(Sub::Status | Sub::Finalize | Sub::Approval)) => {
                need("update")?;
                self.update(cx, t, body).await
            }
            ("update", Some(Sub::Scale)) => self.update_scale(cx, t, body).await,
            ("patch", None | Some(Sub::Status | Sub::Approval)) => {
                need("patch")?;
                self.patch(cx, t, body).await
            }
            ("patch", Some(Sub::Scale)) => self.patch_scale(cx, t, body).await,
            ("delete", None) => {
                need("delete")?;
                self.delete(cx, t, body).await
            }
            ("deletecollection", None) => {
                need("deletecollection")?;
                self.delete_collection(cx, t, body).await
            }
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        }
    }
}

fn verb_of(m: &Method, t: &Target, q: &Query) -> &'static str {
    let watch = t.watch_path || q.flag("watch");
    match *m {
        Method::GET | Method::HEAD if t.name.is_some() && t.sub.is_none() && watch => "watch",
        Method::GET | Method::HEAD if t.name.is_some() => "get",
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

async fn read_body<B>(parts: &http::request::Parts, body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Over the limit, the rest of a moderately large body is still read (and dropped)
    // so that the client sees the 413 instead of a reset connection.
    const DRAIN_MAX: usize = 16 * 1024 * 1024;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|l| l > DRAIN_MAX) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("reading the request body: {}", e.into()))
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_MAX {
                return Err(ApiError::too_large(MAX_BODY));
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

/// What `/version` says about the build, stamped by the binary (the apiserver library
/// knows nothing of how it was built).
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// The commit built, or `unknown`.
    pub git_commit: String,
    /// `clean` or `dirty` (uncommitted changes when built), or `unknown`.
    pub git_tree_state: String,
    /// RFC 3339; unstamped builds say what an unstamped Kubernetes build says.
    pub build_date: String,
}

impl Default for BuildInfo {
    fn default() -> Self {
        BuildInfo {
            git_commit: "unknown".into(),
            git_tree_state: "unknown".into(),
            build_date: "1970-01-01T00:00:00Z".into(),
        }
    }
}

/// `/version`: kube's `version.Info`.
pub fn version(build: &BuildInfo) -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": build.git_commit,
        "gitTreeState": build.git_tree_state,
        "buildDate": build.build_date,
        "goVersion": "go1.24.0",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// The name a field selector pins with `metadata.name=X` (or `==`), if any.
fn name_in_selector(sel: &str) -> Option<String> {
    sel.split(',').find_map(|req| {
        let (k, v) = req.split_once("==").or_else(|| req.split_once('='))?;
        (k.trim() == "metadata.name").then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_negotiation() {
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/vnd.kubernetes.protobuf,application/json"
        ));
        assert!(!wants_table(""));
    }
}
