//! An external OpenStack Keystone (`h8s server --keystone-url`), in place of the built-in
//! identity service.
//!
//! - Bearer tokens on the Kubernetes API that look like Keystone tokens are validated with
//!   Keystone (`GET /v3/auth/tokens?nocatalog`, the token as both `X-Auth-Token` and
//!   `X-Subject-Token`: a user may validate its own token, so no service credential is
//!   needed). The token's project is the caller's tenant, its user the caller, its roles
//!   groups `h8s:role:<role>`; only the `admin` role on the cloud-admin project makes a
//!   cluster admin (`system:masters`). A project's Tenant and a user's User are created on
//!   first sight (annotated with their Keystone ids, so that a project or user deleted and
//!   made again under the same name does not inherit the old one's objects).
//! - A validated token is remembered for `cache_ttl` (≤ 30 s by default): within it the
//!   token works without asking Keystone, so a Keystone outage is invisible to callers
//!   with recently validated tokens; after it, Keystone is asked again, so a user deleted
//!   in Keystone loses access within the TTL. When Keystone cannot be reached a token
//!   not in the cache gets 503 with a message naming Keystone.
//! - `/v3…` on the API server's port is passed to Keystone (so `h8s login`, `h8s
//!   credential` and the `openstack` CLI work unchanged), after a local check that a
//!   token request is JSON (400 otherwise) and with the same per-user and per-source
//!   back-off on failed password logins as the built-in service.
//!
//! Memory is bounded: at most [`MAX_CACHE`] cached tokens (by SHA-256), at most
//! [`MAX_IN_FLIGHT`] calls to Keystone at once, responses read up to a limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::keystone::{target, KsError};
use super::{tenants, users, ADMIN_ROLE, MASTERS_GROUP};
use crate::api::Api;
use crate::auth::{
    Authenticator, Authn, RequestInfo, UserInfo, AUTHENTICATED_GROUP, TENANT_GROUP_PREFIX,
};
use crate::ctx::Ctx;
use crate::error::{ApiError, Subject};
use crate::obj;
use crate::response::{full, Body};

/// The annotation on a Tenant naming the Keystone project it mirrors.
pub const PROJECT_ID_ANNOTATION: &str = "tenancy.h8s.io/keystone-project-id";
/// The annotation on a User naming the Keystone user it mirrors.
pub const USER_ID_ANNOTATION: &str = "tenancy.h8s.io/keystone-user-id";
/// The prefix of the groups a Keystone token's roles become (`h8s:role:member`).
pub const ROLE_GROUP_PREFIX: &str = "h8s:role:";
/// Most validated tokens remembered.
pub const MAX_CACHE: usize = 10_000;
/// Most calls to Keystone at once (validations and passed-on `/v3` requests).
pub const MAX_IN_FLIGHT: usize = 32;
/// Longest bearer token sent to Keystone (fernet tokens are about 180–250 bytes).
const MAX_TOKEN_LEN: usize = 1024;
/// Largest Keystone answer read.
const MAX_RESPONSE: usize = crate::body::MAX_BODY;

/// Settings of the external Keystone.
#[derive(Debug, Clone)]
pub struct KeystoneConfig {
    /// Keystone's public endpoint, e.g. `https://keystone.example:5000/v3` (`/v3` is
    /// added when missing).
    pub url: String,
    /// PEM certificates to trust for an `https` URL (required for `https`).
    pub ca_pem: Option<Vec<u8>>,
    /// The project whose `admin`-role users are cluster admins.
    pub cloud_admin_project: String,
    /// The Keystone domain (id) users and projects must belong to.
    pub domain_id: String,
    /// How long a validated token is trusted without asking Keystone again.
    pub cache_ttl: Duration,
    /// The longest wait for Keystone's answer.
    pub timeout: Duration,
}

impl Default for KeystoneConfig {
    fn default() -> Self {
        KeystoneConfig {
            url: String::new(),
            ca_pem: None,
            cloud_admin_project: "admin".into(),
            domain_id: "default".into(),
            cache_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A Keystone setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Keystone URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("Keystone CA certificates: {0}")]
    Ca(String),
}

/// Where Keystone is and how to reach it.
struct Endpoint {
    /// `scheme://authority/…/v3` for messages.
    shown: String,
    host: String,
    port: u16,
    authority: String,
    /// The path prefix ending in `/v3`.
    base: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Keystone could not be asked (connection, TLS, timeout, an unreadable answer).
#[derive(Debug)]
struct Unreachable(String);

impl Endpoint {
    fn new(cfg: &KeystoneConfig) -> Result<Endpoint, ConfigError> {
        let bad = |why| ConfigError::Url(cfg.url.clone(), why);
        let uri: http::Uri = cfg.url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| bad("no host"))?;
        let mut base = uri.path().trim_end_matches('/').to_string();
        if !base.ends_with("/v3") {
            base.push_str("/v3");
        }
        let tls = if https {
            let pem = cfg.ca_pem.as_deref().ok_or_else(|| {
                ConfigError::Ca("an https Keystone needs --keystone-ca (its CA's PEM)".into())
            })?;
            let tls = crate::webhook::call::client_tls(pem).map_err(ConfigError::Ca)?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(tls)))
        } else {
            None
        };
        let scheme = if https { "https" } else { "http" };
        Ok(Endpoint {
            shown: format!("{scheme}://{authority}{base}"),
            host,
            port,
            authority,
            base,
            tls,
        })
    }

    /// One request to `base + path_and_query`; the answer's status, headers and body.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(u16, HeaderMap, Bytes), Unreachable> {
        let fail = |e: &dyn std::fmt::Display| Unreachable(e.to_string());
        let addr = match self.host.parse::<IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.host, self.port),
        };
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .header(http::header::HOST, &self.authority)
            .header(http::header::USER_AGENT, "h8s-apiserver");
        if let Some(h) = req.headers_mut() {
            h.extend(headers);
        }
        let req = req.body(Full::new(body)).map_err(|e| fail(&e))?;
        let (status, headers, body) = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| fail(&e))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| fail(&e))?;
                exchange(TokioIo::new(stream), req).await?
            }
            None => exchange(TokioIo::new(tcp), req).await?,
        };
        Ok((status, headers, body))
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<IO>(
    io: IO,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, HeaderMap, Bytes), Unreachable>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |e: &dyn std::fmt::Display| Unreachable(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail(&e))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| fail(&e))?
            .to_bytes();
        Ok((status, headers, body))
    }
    .await;
    task.abort();
    result
}

/// What a valid Keystone token stands for.
#[derive(Debug, Clone)]
struct Mapped {
    user_id: String,
    user: String,
    project_id: String,
    project: String,
    roles: Vec<String>,
    /// Unix seconds.
    expires_at: i64,
}

/// Why a token was not accepted.
#[derive(Debug)]
enum Refused {
    /// Keystone does not know the token, or it does not fit h8s (logged, 401).
    Denied(String),
    /// Keystone could not be asked (503 with this message).
    Unavailable(String),
}

struct Entry {
    user: UserInfo,
    checked: Instant,
    expires_at: i64,
}

/// The external Keystone: an [`Authenticator`] for its tokens and the `/v3` pass-through.
pub struct External {
    cfg: KeystoneConfig,
    ep: Endpoint,
    store: Arc<dyn h8s_store::Store>,
    api: OnceLock<Weak<Api>>,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
    in_flight: tokio::sync::Semaphore,
    backoff: super::backoff::Backoff,
}

fn sha256(s: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// True for bearer tokens worth asking Keystone about: fernet and JWS tokens are
/// URL-safe base64 (JWS with dots, but a ServiceAccount's JWT or a bootstrap token is
/// judged earlier in the chain, and Keystone rejects what it did not issue).
fn looks_like_keystone(t: &str) -> bool {
    (16..=MAX_TOKEN_LEN).contains(&t.len())
        && !t.starts_with(super::tokens::TOKEN_PREFIX)
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b))
}

fn sv<'v>(v: &'v Value, ptr: &str) -> &'v str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

impl External {
    pub fn new(
        cfg: KeystoneConfig,
        store: Arc<dyn h8s_store::Store>,
    ) -> Result<External, ConfigError> {
        Ok(External {
            ep: Endpoint::new(&cfg)?,
            cfg,
            store,
            api: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            backoff: Default::default(),
        })
    }

    /// Lets the authenticator create Tenants and Users through the registry.
    pub(crate) fn attach(&self, api: &Arc<Api>) {
        let _ = self.api.set(Arc::downgrade(api));
    }

    fn unavailable(&self, why: &str) -> String {
        format!(
            "the identity service (Keystone at {}) is unavailable: {why}",
            self.ep.shown
        )
    }

    fn cached(&self, key: &[u8; 32]) -> Option<UserInfo> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let e = c.get(key)?;
        (e.checked.elapsed() < self.cfg.cache_ttl && e.expires_at > super::now())
            .then(|| e.user.clone())
    }

    fn remember(&self, key: [u8; 32], user: UserInfo, expires_at: i64) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= MAX_CACHE {
            let ttl = self.cfg.cache_ttl;
            c.retain(|_, e| e.checked.elapsed() < ttl);
            let excess = (c.len() + 1).saturating_sub(MAX_CACHE);
            let drop: Vec<[u8; 32]> = c.keys().take(excess).copied().collect();
            for k in drop {
                c.remove(&k);
            }
        }
        c.insert(
            key,
            Entry {
                user,
                checked: Instant::now(),
                expires_at,
            },
        );
    }

    fn forget(&self, key: &[u8; 32]) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The cached or freshly validated user of a token.
    async fn check(&self, token: &str) -> Result<UserInfo, Refused> {
        let key = sha256(token);
        if let Some(u) = self.cached(&key) {
            return Ok(u);
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Refused::Unavailable(self.unavailable("shutting down")))?;
        let mut h = HeaderMap::new();
        let tok = HeaderValue::from_str(token)
            .map_err(|_| Refused::Denied("not a header value".into()))?;
        h.insert("x-auth-token", tok.clone());
        h.insert("x-subject-token", tok);
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let call = self
            .ep
            .call(Method::GET, "/auth/tokens?nocatalog", h, Bytes::new());
        let (code, _, body) = match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(Unreachable(why))) => return Err(Refused::Unavailable(self.unavailable(&why))),
            Err(_) => {
                return Err(Refused::Unavailable(
                    self.unavailable(&format!("no answer within {:?}", self.cfg.timeout)),
                ))
            }
        };
        match code {
            200 => {}
            401 | 403 | 404 => {
                self.forget(&key);
                return Err(Refused::Denied(format!("Keystone answered {code}")));
            }
            c if c >= 500 => {
                return Err(Refused::Unavailable(
                    self.unavailable(&format!("it answered {c}")),
                ))
            }
            c => return Err(Refused::Denied(format!("Keystone answered {c}"))),
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            Refused::Unavailable(self.unavailable("its token validation was not JSON"))
        })?;
        let m = self.map(&v).map_err(Refused::Denied)?;
        self.sync(&m).await?;
        let u = self.user_info(&m);
        self.remember(key, u.clone(), m.expires_at);
        Ok(u)
    }

    /// A validated token's body as h8s sees it; refuses tokens that do not fit.
    fn map(&self, v: &Value) -> Result<Mapped, String> {
        let t = v.get("token").ok_or("no token in Keystone's answer")?;
        let m = Mapped {
            user_id: sv(t, "/user/id").to_string(),
            user: sv(t, "/user/name").to_string(),
            project_id: sv(t, "/project/id").to_string(),
            project: sv(t, "/project/name").to_string(),
            roles: t
                .get("roles")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| sv(r, "/name").to_string())
                        .filter(|r| !r.is_empty())
                        .take(64)
                        .collect()
                })
                .unwrap_or_default(),
            expires_at: sv(t, "/expires_at")
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .map_err(|_| "no expires_at in Keystone's answer")?,
        };
        if m.user_id.is_empty() || m.user.is_empty() {
            return Err("no user in the token".into());
        }
        if m.project_id.is_empty() || m.project.is_empty() {
            return Err(format!(
                "user {:?}: the token is not scoped to a project (tenant)",
                m.user
            ));
        }
        for (what, ptr) in [
            ("user", "/user/domain/id"),
            ("project", "/project/domain/id"),
        ] {
            if sv(t, ptr) != self.cfg.domain_id {
                return Err(format!(
                    "user {:?}: the {what} is not in the domain {:?}",
                    m.user, self.cfg.domain_id
                ));
            }
        }
        if !h8s_types::validation::names::dns1123_subdomain(&m.user).is_empty() {
            return Err(format!(
                "Keystone user name {:?} is not a valid h8s user name (a DNS subdomain)",
                m.user
            ));
        }
        if !h8s_types::validation::names::dns1123_label(&m.project).is_empty() {
            return Err(format!(
                "Keystone project name {:?} is not a valid tenant name (a DNS label)",
                m.project
            ));
        }
        Ok(m)
    }

    fn cloud_admin(&self, m: &Mapped) -> bool {
        m.project == self.cfg.cloud_admin_project && m.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    fn user_info(&self, m: &Mapped) -> UserInfo {
        let mut groups = vec![if self.cloud_admin(m) {
            MASTERS_GROUP.to_string()
        } else {
            format!("{TENANT_GROUP_PREFIX}{}", m.project)
        }];
        groups.extend(m.roles.iter().map(|r| format!("{ROLE_GROUP_PREFIX}{r}")));
        groups.push(AUTHENTICATED_GROUP.to_string());
        let mut extra = HashMap::new();
        // The keys of cloud-provider-openstack's k8s-keystone-auth.
        extra.insert(
            "alpha.kubernetes.io/identity/project/id".to_string(),
            vec![m.project_id.clone()],
        );
        extra.insert(
            "alpha.kubernetes.io/identity/project/name".to_string(),
            vec![m.project.clone()],
        );
        extra.insert(
            "alpha.kubernetes.io/identity/roles".to_string(),
            m.roles.clone(),
        );
        UserInfo {
            username: m.user.clone(),
            uid: m.user_id.clone(),
            groups,
            extra,
        }
    }

    /// Makes sure the token's project has its Tenant and its user its User, both
    /// usable and mirroring these very Keystone ids.
    async fn sync(&self, m: &Mapped) -> Result<(), Refused> {
        let api = self
            .api
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Refused::Unavailable("the API server is starting".into()))?;
        let cx = Ctx::internal(UserInfo {
            username: "system:apiserver".into(),
            groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
            ..Default::default()
        });
        let api_err = |e: ApiError| {
            tracing::warn!(error = %e.message, "keystone: syncing a tenant or user failed");
            Refused::Unavailable(format!(
                "mirroring the Keystone project or user: {}",
                e.message
            ))
        };
        let tenant = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "Tenant",
            "metadata": {"name": m.project, "annotations": {PROJECT_ID_ANNOTATION: m.project_id}},
            "spec": {"displayName": m.project}});
        self.mirror(
            &api,
            &cx,
            tenants(),
            &m.project,
            PROJECT_ID_ANNOTATION,
            &m.project_id,
            tenant,
            None,
        )
        .await
        .map_err(|e| e.map_api(api_err))?;
        let roles: Vec<&String> = m
            .roles
            .iter()
            .filter(|r| h8s_types::tenancy::ROLES.contains(&r.as_str()))
            .collect();
        let mut spec = json!({"tenant": m.project});
        if !roles.is_empty() {
            spec["roles"] = json!(roles);
        }
        let user = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "User",
            "metadata": {"name": m.user, "annotations": {USER_ID_ANNOTATION: m.user_id}},
            "spec": spec});
        let want_roles = (!roles.is_empty()).then(|| (m.project.clone(), json!(roles)));
        self.mirror(
            &api,
            &cx,
            users(),
            &m.user,
            USER_ID_ANNOTATION,
            &m.user_id,
            user,
            want_roles,
        )
        .await
        .map_err(|e| e.map_api(api_err))
    }

    /// Creates `obj` (a Tenant or User named `name`) unless it exists; an existing one
    /// must carry `annotation: id` (an operator-made one without it is adopted) and be
    /// enabled. `roles`: (tenant, roles) a User in that tenant is brought up to date with.
    #[allow(clippy::too_many_arguments)]
    async fn mirror(
        &self,
        api: &Arc<Api>,
        cx: &Ctx,
        res: &'static h8s_types::Resource,
        name: &str,
        annotation: &str,
        id: &str,
        obj: Value,
        roles: Option<(String, Value)>,
    ) -> Result<(), MirrorError> {
        let cur = match super::get_obj(&*self.store, res, name).await? {
            Some(c) => c,
            None => match api.create_object(cx, &target(res, None), obj).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code == 409 => super::get_obj(&*self.store, res, name)
                    .await?
                    .ok_or_else(|| {
                        MirrorError::Api(ApiError::internal(format!("{name} vanished")))
                    })?,
                Err(e) => return Err(e.into()),
            },
        };
        let kind = res.kind;
        let ptr = format!("/metadata/annotations/{}", annotation.replace('/', "~1"));
        match cur.pointer(&ptr).and_then(Value::as_str) {
            Some(have) if have != id => {
                return Err(MirrorError::Refused(format!(
                    "{kind} {name:?} mirrors another Keystone object (id {have}, the token's is {id}); \
                     an operator must delete the stale {kind} first"
                )))
            }
            _ => {}
        }
        if !super::enabled(&cur) {
            return Err(MirrorError::Refused(format!(
                "{kind} {name:?} is disabled or being deleted"
            )));
        }
        let adopt = cur.pointer(&ptr).is_none();
        let roles = roles.filter(|(t, r)| {
            sv(&cur, "/spec/tenant") == t && cur.pointer("/spec/roles") != Some(r)
        });
        if !adopt && roles.is_none() {
            return Ok(());
        }
        let (annotation, id) = (annotation.to_string(), id.to_string());
        api.guaranteed_update(cx, &target(res, Some(name)), name, false, |cur| {
            let mut o = cur
                .cloned()
                .ok_or_else(|| ApiError::not_found(&Subject::default()))?;
            obj::meta_mut(&mut o).remove("resourceVersion");
            let meta = obj::meta_mut(&mut o);
            if !meta.get("annotations").is_some_and(Value::is_object) {
                meta.insert("annotations".into(), json!({}));
            }
            meta["annotations"][&annotation] = json!(id);
            if let Some((_, r)) = &roles {
                o["spec"]["roles"] = r.clone();
            }
            Ok(o)
        })
        .await?;
        Ok(())
    }

    /// `/v3…`: passed to Keystone; Keystone's answer (or a Keystone-shaped error).
    pub(crate) async fn proxy(
        &self,
        parts: http::request::Parts,
        body: Result<Bytes, ApiError>,
    ) -> Response<Body> {
        match self.proxy_inner(&parts, body).await {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    async fn proxy_inner(
        &self,
        parts: &http::request::Parts,
        body: Result<Bytes, ApiError>,
    ) -> Result<Response<Body>, KsError> {
        let body = body?;
        let path = parts.uri.path();
        let rest = path.strip_prefix("/v3").unwrap_or(path);
        let mut pq = rest.to_string();
        if let Some(q) = parts.uri.query() {
            pq.push('?');
            pq.push_str(q);
        }
        // A password login: checked for shape here (400), counted for back-off.
        let mut login = None;
        if parts.method == Method::POST && rest.trim_end_matches('/') == "/auth/tokens" {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| KsError::bad(format!("The request body is not valid JSON: {e}")))?;
            if !v.get("auth").is_some_and(Value::is_object) {
                return Err(KsError::bad("Expecting to find auth in request body."));
            }
            let u = v.pointer("/auth/identity/password/user");
            let name = u
                .map(|u| match sv(u, "/name") {
                    "" => sv(u, "/id"),
                    n => n,
                })
                .unwrap_or("");
            if !name.is_empty() {
                let addr = RequestInfo::from_parts(parts).remote_addr.map(|a| a.ip());
                if let Some(wait) = self.backoff.locked(name, addr) {
                    let secs = wait.as_secs() + 1;
                    let mut e = KsError::new(
                        429,
                        format!(
                            "Too many failed authentication attempts; try again in {secs} seconds."
                        ),
                    );
                    e.retry_after = Some(secs);
                    return Err(e);
                }
                login = Some((name.chars().take(256).collect::<String>(), addr));
            }
        }
        let mut h = HeaderMap::new();
        for name in [
            "x-auth-token",
            "x-subject-token",
            "content-type",
            "accept",
            "openstack-api-version",
        ] {
            if let Some(v) = parts.headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| KsError::new(503, self.unavailable("shutting down")))?;
        let call = self.ep.call(parts.method.clone(), &pq, h, body);
        let (code, headers, body) = match tokio::time::timeout(self.cfg.timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(Unreachable(why))) => {
                tracing::warn!(error = %why, "keystone unreachable");
                return Err(KsError::new(503, self.unavailable(&why)));
            }
            Err(_) => {
                return Err(KsError::new(
                    503,
                    self.unavailable(&format!("no answer within {:?}", self.cfg.timeout)),
                ))
            }
        };
        if let Some((name, addr)) = login {
            match code {
                401 => self.backoff.fail(&name, addr),
                200..=299 => self.backoff.succeed(&name, addr),
                _ => {}
            }
        }
        let mut r = Response::new(full(body));
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
        for name in [
            "content-type",
            "x-subject-token",
            "openstack-api-version",
            "www-authenticate",
            "retry-after",
        ] {
            if let Some(v) = headers.get(name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        Ok(r)
    }
}

/// Why a Tenant or User could not be mirrored.
#[derive(Debug)]
enum MirrorError {
    Refused(String),
    Api(ApiError),
}

impl From<ApiError> for MirrorError {
    fn from(e: ApiError) -> Self {
        MirrorError::Api(e)
    }
}

impl MirrorError {
    fn map_api(self, f: impl FnOnce(ApiError) -> Refused) -> Refused {
        match self {
            MirrorError::Refused(why) => Refused::Denied(why),
            MirrorError::Api(e) => f(e),
        }
    }
}

impl Authenticator for External {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(async move {
            let Some(tok) = req.bearer().filter(|t| looks_like_keystone(t)) else {
                return Authn::NoOpinion;
            };
            match self.check(tok).await {
                Ok(u) => Authn::User(u),
                Err(Refused::Denied(why)) => {
                    tracing::debug!(%why, "keystone token refused");
                    Authn::Denied
                }
                Err(Refused::Unavailable(why)) => {
                    tracing::warn!(%why, "keystone token not checked");
                    Authn::Unavailable(why)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(url: &str) -> Result<External, ConfigError> {
        External::new(
            KeystoneConfig {
                url: url.into(),
                ..Default::default()
            },
            STORE.with(|s| s.clone()),
        )
    }

    thread_local! {
        /// A store nothing here reads (these tests never sync objects).
        static STORE: Arc<dyn h8s_store::Store> = {
            // Opened on a thread (and runtime) of its own: tests may be inside one.
            std::thread::spawn(|| {
                let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
                let rt = Box::leak(Box::new(tokio::runtime::Runtime::new().unwrap()));
                rt.block_on(h8s_store::open("embedded", dir.path(), None)).unwrap()
            })
            .join()
            .unwrap()
        };
    }

    #[test]
    fn endpoints() {
        let e = ext("http://127.0.0.1:5000").unwrap();
        assert_eq!(e.ep.base, "/v3");
        assert_eq!(e.ep.port, 5000);
        let e = ext("http://ks.example/identity/v3/").unwrap();
        assert_eq!(e.ep.base, "/identity/v3");
        assert_eq!(e.ep.port, 80);
        assert_eq!(e.ep.shown, "http://ks.example/identity/v3");
        assert!(matches!(
            ext("https://ks.example/v3"),
            Err(ConfigError::Ca(_))
        ));
        assert!(matches!(
            ext("ftp://ks.example/v3"),
            Err(ConfigError::Url(..))
        ));
        assert!(matches!(ext("http://ks/v3?x=1"), Err(ConfigError::Url(..))));
    }

    #[test]
    fn token_shapes() {
        assert!(looks_like_keystone(&format!("gAAAAAB{}", "x".repeat(176))));
        assert!(!looks_like_keystone("short"));
        assert!(!looks_like_keystone(&"a".repeat(MAX_TOKEN_LEN + 1)));
        assert!(!looks_like_keystone(
            "h8sks_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
        assert!(!looks_like_keystone("has spaces in it, sixteen+"));
    }

    fn token(project: &str, roles: &[&str], domain: &str) -> Value {
        let roles: Vec<Value> = roles.iter().map(|r| json!({"id": r, "name": r})).collect();
        json!({"token": {"user": {"id": "u1", "name": "alice", "domain": {"id": domain}},
            "project": {"id": "p1", "name": project, "domain": {"id": "default"}},
            "roles": roles, "expires_at": "2030-01-01T00:00:00.000000Z"}})
    }

    #[test]
    fn mapping() {
        let e = ext("http://127.0.0.1:5000/v3").unwrap();
        let m = e
            .map(&token("acme", &["admin", "member"], "default"))
            .unwrap();
        let u = e.user_info(&m);
        assert_eq!(u.username, "alice");
        assert_eq!(u.uid, "u1");
        assert_eq!(
            u.groups,
            [
                "h8s:tenant:acme",
                "h8s:role:admin",
                "h8s:role:member",
                "system:authenticated"
            ]
        );
        assert_eq!(u.tenant(), Some("acme"));
        // Only the admin role on the cloud-admin project makes a cluster admin.
        let m = e.map(&token("admin", &["admin"], "default")).unwrap();
        let u = e.user_info(&m);
        assert_eq!(u.groups[0], MASTERS_GROUP);
        assert_eq!(u.tenant(), None);
        let m = e.map(&token("admin", &["member"], "default")).unwrap();
        assert_eq!(e.user_info(&m).tenant(), Some("admin"));
        // Tokens that do not fit h8s.
        assert!(e.map(&token("acme", &[], "other")).is_err());
        assert!(e.map(&token("Not_A_Label", &[], "default")).is_err());
        let mut t = token("acme", &[], "default");
        t["token"]["user"]["name"] = json!("system:admin");
        assert!(e.map(&t).is_err());
        let mut t = token("acme", &[], "default");
        t["token"].as_object_mut().unwrap().remove("project");
        assert!(e.map(&t).is_err());
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut e = ext("http://127.0.0.1:5000/v3").unwrap();
        e.cfg.cache_ttl = Duration::from_millis(50);
        let u = UserInfo::default();
        let far = super::super::now() + 3600;
        for i in 0..(MAX_CACHE + 10) {
            e.remember(sha256(&i.to_string()), u.clone(), far);
        }
        assert!(e.cache.lock().unwrap().len() <= MAX_CACHE);
        let k = sha256("fresh");
        e.remember(k, u.clone(), far);
        assert!(e.cached(&k).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(e.cached(&k).is_none(), "stale after the TTL");
        let k = sha256("expired");
        e.remember(k, u, super::super::now() - 1);
        assert!(e.cached(&k).is_none(), "an expired token is never served");
    }

    /// A tiny HTTPS server (the cluster PKI's serving certificate for 127.0.0.1) that
    /// answers every request with Keystone's 404 for a token.
    async fn tls_server(pki: &crate::pki::Pki) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let acc = tokio_rustls::TlsAcceptor::from(Arc::new(crate::pki::server_tls(pki).unwrap()));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acc = acc.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acc.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        |r: http::Request<hyper::body::Incoming>| async move {
                            let body = format!(
                                r#"{{"path":"{}","subject":"{}"}}"#,
                                r.uri(),
                                r.headers()
                                    .get("x-subject-token")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                            );
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_keystone_trusts_only_its_ca() {
        let d = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        let port = tls_server(&pki).await;
        let mk = |ca: &str| {
            External::new(
                KeystoneConfig {
                    url: format!("https://127.0.0.1:{port}/v3"),
                    ca_pem: Some(ca.as_bytes().to_vec()),
                    timeout: Duration::from_secs(5),
                    ..Default::default()
                },
                STORE.with(|s| s.clone()),
            )
            .unwrap()
        };
        let e = mk(&pki.ca_pem);
        let tok = format!("gAAAAAB{}", "x".repeat(100));
        // Keystone's 404 for the token: refused, not an outage.
        match e.check(&tok).await {
            Err(Refused::Denied(why)) => assert!(why.contains("404"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut h = HeaderMap::new();
        h.insert("x-subject-token", HeaderValue::from_static("abc"));
        let (code, _, body) =
            e.ep.call(Method::GET, "/auth/tokens?nocatalog", h, Bytes::new())
                .await
                .unwrap();
        assert_eq!(code, 404);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"path": "/v3/auth/tokens?nocatalog", "subject": "abc"})
        );
        // Another CA: the TLS handshake fails, which is an outage (503), never a pass.
        let d2 = tempfile::tempdir().unwrap();
        let other = crate::pki::ensure(d2.path(), &[], "https://127.0.0.1:1").unwrap();
        match mk(&other.ca_pem).check(&tok).await {
            Err(Refused::Unavailable(why)) => {
                assert!(why.contains("Keystone at https://127.0.0.1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // Nobody listening: 503 naming Keystone.
        let closed = h8s_free_port();
        let e = External::new(
            KeystoneConfig {
                url: format!("http://127.0.0.1:{closed}/v3"),
                ..Default::default()
            },
            STORE.with(|s| s.clone()),
        )
        .unwrap();
        assert!(matches!(e.check(&tok).await, Err(Refused::Unavailable(_))));
    }

    fn h8s_free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
