//! The Keystone v3 API on the API server's port, under `/v3`: enough of it for the
//! `openstack` CLI and keystoneauth1 (version discovery, tokens with the password and
//! token methods and project scope, projects = Tenants, users = Users, roles, role
//! assignments). Project and user ids are their names; there is one domain,
//! `default`. Errors have Keystone's shape: `{"error": {"code", "message", "title"}}`.
//!
//! Writes go through the registry (validation, defaults, watch) as the caller, after
//! the caller was found to be a cloud admin.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::{password, tenants, users, Identity, LoginError, Session};
use crate::api::Api;
use crate::ctx::Ctx;
use crate::error::{ApiError, Subject};
use crate::obj;
use crate::response::{full, Body};
use crate::route::Target;

/// The API version this server reports.
const VERSION_ID: &str = "v3.14";
const DOMAIN_ID: &str = "default";
const DOMAIN_NAME: &str = "Default";
/// The header carrying the caller's token.
const AUTH_TOKEN: &str = "x-auth-token";
/// The header carrying the token issued or asked about.
const SUBJECT_TOKEN: &str = "x-subject-token";

/// True for paths the identity service answers.
pub fn is_identity_path(path: &str) -> bool {
    path == "/v3" || path.starts_with("/v3/")
}

/// A registry target for a cluster-scoped tenancy resource.
pub(crate) fn target(res: &'static h8s_types::Resource, name: Option<&str>) -> Target {
    Target {
        res,
        ns: None,
        name: name.map(str::to_string),
        sub: None,
        watch_path: false,
        cr: None,
    }
}

/// A Keystone error.
#[derive(Debug)]
pub struct KsError {
    pub(crate) code: u16,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

impl KsError {
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        KsError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn unauthorized() -> Self {
        Self::new(401, "The request you have made requires authentication.")
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    fn forbidden(action: &str) -> Self {
        Self::new(
            403,
            format!("You are not authorized to perform the requested action: {action}."),
        )
    }
    fn not_found(what: &str, id: &str) -> Self {
        Self::new(404, format!("Could not find {what}: {id}."))
    }
    fn title(&self) -> &'static str {
        match self.code {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Request Entity Too Large",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }
    pub(crate) fn response(&self) -> Response<Body> {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "title": self.title()}});
        let mut r = json_resp(self.code, &body);
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        if self.code == 401 {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Keystone uri=\"/v3\""),
            );
        }
        r
    }
}

impl From<ApiError> for KsError {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            422 => 400,
            c @ (400 | 401 | 403 | 404 | 409 | 413 | 429 | 503) => c,
            _ => 500,
        };
        if code == 500 {
            tracing::warn!(error = %e.message, "identity request failed");
            return KsError::new(
                500,
                "An unexpected error prevented the server from fulfilling your request.",
            );
        }
        KsError::new(code, e.message)
    }
}

type KsResult = Result<Response<Body>, KsError>;

fn json_resp(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn empty(code: u16) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::NO_CONTENT);
    r
}

/// One request to `/v3…`.
struct Req<'a> {
    api: &'a Arc<Api>,
    id: &'a Arc<Identity>,
    parts: &'a http::request::Parts,
    body: &'a Bytes,
    base: String,
    query: crate::util::Query,
}

/// Answers a request under `/v3`; never panics outward, always Keystone's shape.
pub(crate) async fn handle(
    api: &Arc<Api>,
    id: &Arc<Identity>,
    parts: http::request::Parts,
    body: Result<Bytes, ApiError>,
) -> Response<Body> {
    let body = match body {
        Ok(b) => b,
        Err(e) => return KsError::from(e).response(),
    };
    let r = Req {
        api,
        id,
        base: base_url(&parts),
        query: crate::util::Query::parse(parts.uri.query()),
        parts: &parts,
        body: &body,
    };
    match r.route().await {
        Ok(resp) => resp,
        Err(e) => e.response(),
    }
}

/// `https://<Host>` as the client reached us (for links and the catalog).
fn base_url(parts: &http::request::Parts) -> String {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}")
}

fn ks_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string())
        .unwrap_or_default()
}

fn domain() -> Value {
    json!({"id": DOMAIN_ID, "name": DOMAIN_NAME})
}

fn sv<'v>(v: &'v Value, ptr: &str) -> Option<&'v str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// True when a domain reference (`{"id": …}` or `{"name": …}`) names the one domain.
fn default_domain(d: Option<&Value>) -> bool {
    match d {
        None | Some(Value::Null) => true,
        Some(d) => {
            let id_ok = sv(d, "/id").is_none_or(|i| i == DOMAIN_ID);
            let name_ok = sv(d, "/name").is_none_or(|n| n.eq_ignore_ascii_case(DOMAIN_NAME));
            id_ok && name_ok
        }
    }
}

impl Req<'_> {
    fn method(&self) -> &Method {
        &self.parts.method
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json_body(&self) -> Result<Value, KsError> {
        let v: Value = serde_json::from_slice(self.body)
            .map_err(|e| KsError::bad(format!("The request body is not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(KsError::bad("The request body must be a JSON object."));
        }
        Ok(v)
    }

    /// The caller, from `X-Auth-Token`.
    async fn caller(&self) -> Result<Session, KsError> {
        let tok = self.header(AUTH_TOKEN).ok_or_else(KsError::unauthorized)?;
        self.id
            .validate(tok)
            .await?
            .ok_or_else(KsError::unauthorized)
    }

    async fn admin(&self, action: &str) -> Result<Session, KsError> {
        let s = self.caller().await?;
        if !s.cloud_admin {
            return Err(KsError::forbidden(action));
        }
        Ok(s)
    }

    fn cx(&self, s: &Session) -> Ctx {
        Ctx::internal(self.id.user_info(s))
    }

    async fn route(&self) -> KsResult {
        let path = self.parts.uri.path().trim_end_matches('/');
        let segs: Vec<String> = path
            .split('/')
            .skip(2)
            .map(|p| crate::util::percent_decode(p, false))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = self.method().clone();
        let not_allowed = || {
            Err(KsError::new(
                405,
                "The method is not allowed for the requested URL.",
            ))
        };
        match (segs.as_slice(), &m) {
            ([], &Method::GET | &Method::HEAD) => Ok(json_resp(200, &self.version())),
            ([], _) => not_allowed(),
            (["auth", "tokens"], &Method::POST) => self.issue().await,
            (["auth", "tokens"], &Method::GET | &Method::HEAD) => self.check_token().await,
            (["auth", "tokens"], &Method::DELETE) => self.revoke().await,
            (["auth", "projects"], &Method::GET) => {
                let s = self.caller().await?;
                let t = self.id.tenant(&s.tenant).await?;
                let list: Vec<Value> = t.iter().map(|t| self.project_json(t)).collect();
                Ok(json_resp(
                    200,
                    &json!({"projects": list, "links": self.links("auth/projects")}),
                ))
            }
            (["auth", "catalog"], &Method::GET) => {
                self.caller().await?;
                Ok(json_resp(
                    200,
                    &json!({"catalog": self.catalog(), "links": self.links("auth/catalog")}),
                ))
            }
            (["domains"], &Method::GET) => {
                self.caller().await?;
                Ok(json_resp(
                    200,
                    &json!({"domains": [self.domain_json()], "links": self.links("domains")}),
                ))
            }
            (["domains", d], &Method::GET) if *d == DOMAIN_ID => {
                self.caller().await?;
                Ok(json_resp(200, &json!({"domain": self.domain_json()})))
            }
            (["domains", d], &Method::GET) => Err(KsError::not_found("domain", d)),
            (["projects"], &Method::GET) => self.list_projects().await,
            (["projects"], &Method::POST) => self.create_project().await,
            (["projects", p], &Method::GET) => self.get_project(p).await,
            (["projects", p], &Method::PATCH) => self.update_project(p).await,
            (["projects", p], &Method::DELETE) => self.delete_project(p).await,
            (["projects", p, "users", u, "roles"], &Method::GET) => self.user_roles(p, u).await,
            (["projects", p, "users", u, "roles", r], m) => {
                self.role_grant(p, u, r, m.clone()).await
            }
            (["users"], &Method::GET) => self.list_users().await,
            (["users"], &Method::POST) => self.create_user().await,
            (["users", u], &Method::GET) => self.get_user(u).await,
            (["users", u], &Method::PATCH) => self.update_user(u).await,
            (["users", u], &Method::DELETE) => self.delete_user(u).await,
            (["users", u, "password"], &Method::POST) => self.change_own_password(u).await,
            (["users", u, "projects"], &Method::GET) => {
                let s = self.caller().await?;
                if !s.cloud_admin && obj::name(&s.user) != *u {
                    return Err(KsError::forbidden("identity:list_user_projects"));
                }
                let user = self
                    .id
                    .user(u)
                    .await?
                    .ok_or_else(|| KsError::not_found("user", u))?;
                let t = s_owned(&user, "/spec/tenant");
                let list: Vec<Value> = self
                    .id
                    .tenant(&t)
                    .await?
                    .iter()
                    .map(|t| self.project_json(t))
                    .collect();
                Ok(json_resp(
                    200,
                    &json!({"projects": list, "links": self.links(&format!("users/{u}/projects"))}),
                ))
            }
            (["roles"], &Method::GET) => {
                self.caller().await?;
                let name = self.query.get("name");
                let roles: Vec<Value> = h8s_types::tenancy::ROLES
                    .iter()
                    .filter(|r| name.is_none_or(|n| n == **r))
                    .map(|r| self.role_json(r))
                    .collect();
                Ok(json_resp(
                    200,
                    &json!({"roles": roles, "links": self.links("roles")}),
                ))
            }
            (["roles", r], &Method::GET) => {
                self.caller().await?;
                if !h8s_types::tenancy::ROLES.contains(r) {
                    return Err(KsError::not_found("role", r));
                }
                Ok(json_resp(200, &json!({"role": self.role_json(r)})))
            }
            (["role_assignments"], &Method::GET) => self.role_assignments().await,
            (
                ["auth", "tokens"]
                | ["auth", "projects" | "catalog"]
                | ["domains", ..]
                | ["projects", ..]
                | ["users", ..]
                | ["roles", ..]
                | ["role_assignments"],
                _,
            ) => not_allowed(),
            _ => Err(KsError::new(404, "The resource could not be found.")),
        }
    }

    fn version(&self) -> Value {
        json!({"version": {
            "id": VERSION_ID, "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": format!("{}/v3/", self.base)}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }})
    }

    fn links(&self, path: &str) -> Value {
        json!({"self": format!("{}/v3/{path}", self.base), "previous": null, "next": null})
    }

    fn catalog(&self) -> Value {
        let url = format!("{}/v3", self.base);
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|i| {
                json!({"id": format!("h8s-identity-{i}"), "interface": i, "region": "RegionOne",
                    "region_id": "RegionOne", "url": url})
            })
            .collect();
        json!([{"type": "identity", "name": "keystone", "id": "h8s-identity", "endpoints": endpoints}])
    }

    fn domain_json(&self) -> Value {
        json!({"id": DOMAIN_ID, "name": DOMAIN_NAME, "description": "The h8s domain", "enabled": true,
            "tags": [], "options": {}, "links": {"self": format!("{}/v3/domains/{DOMAIN_ID}", self.base)}})
    }

    fn role_json(&self, r: &str) -> Value {
        json!({"id": r, "name": r, "domain_id": null, "description": null, "options": {},
            "links": {"self": format!("{}/v3/roles/{r}", self.base)}})
    }

    fn project_json(&self, t: &Value) -> Value {
        let name = obj::name(t);
        json!({
            "id": name, "name": name, "domain_id": DOMAIN_ID,
            "description": sv(t, "/spec/description").or(sv(t, "/spec/displayName")).unwrap_or(""),
            "enabled": super::enabled(t), "parent_id": DOMAIN_ID, "is_domain": false,
            "tags": [], "options": {},
            "links": {"self": format!("{}/v3/projects/{name}", self.base)},
        })
    }

    fn user_json(&self, u: &Value) -> Value {
        let name = obj::name(u);
        let mut v = json!({
            "id": name, "name": name, "domain_id": DOMAIN_ID,
            "enabled": super::enabled(u),
            "default_project_id": sv(u, "/spec/tenant").unwrap_or(""),
            "password_expires_at": null, "options": {},
            "links": {"self": format!("{}/v3/users/{name}", self.base)},
        });
        if let Some(e) = sv(u, "/spec/email") {
            v["email"] = json!(e);
        }
        if let Some(d) = sv(u, "/spec/displayName") {
            v["description"] = json!(d);
        }
        v
    }

    // ---- tokens ----

    fn token_json(&self, rec: &super::tokens::Record, roles: &[String]) -> Value {
        let mut t = json!({
            "methods": rec.methods,
            "user": {"domain": domain(), "id": rec.user, "name": rec.user, "password_expires_at": null},
            "audit_ids": rec.audit_ids,
            "expires_at": ks_time(rec.expires_at),
            "issued_at": ks_time(rec.issued_at),
        });
        if let Some(p) = &rec.project {
            t["project"] = json!({"domain": domain(), "id": p, "name": p});
            t["is_domain"] = json!(false);
            t["roles"] = json!(roles
                .iter()
                .map(|r| json!({"id": r, "name": r}))
                .collect::<Vec<_>>());
            if self.query.all("nocatalog").is_empty() {
                t["catalog"] = self.catalog();
            }
        }
        json!({"token": t})
    }

    async fn issue(&self) -> KsResult {
        let v = self.json_body()?;
        let auth = v
            .get("auth")
            .filter(|a| a.is_object())
            .ok_or_else(|| KsError::bad("Expecting to find auth in request body. The server could not comply with the request since it is either malformed or otherwise incorrect. The client is assumed to be in error."))?;
        let methods: Vec<String> = match auth.pointer("/identity/methods").and_then(Value::as_array)
        {
            Some(m) if !m.is_empty() && m.len() <= 4 && m.iter().all(Value::is_string) => m
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => {
                return Err(KsError::bad(
                    "Expecting to find identity.methods (a non-empty list of strings) in auth.",
                ))
            }
        };
        // The scope: a project of the user's tenant, or none.
        let scope = match auth.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) if u == "unscoped" => None,
            Some(sc) if sc.get("project").is_some_and(Value::is_object) => {
                let p = &sc["project"];
                if !default_domain(p.get("domain")) {
                    return Err(KsError::unauthorized());
                }
                match sv(p, "/id").or(sv(p, "/name")) {
                    Some(n) => Some(n.to_string()),
                    None => {
                        return Err(KsError::bad(
                            "Expecting to find id or name in project scope.",
                        ))
                    }
                }
            }
            Some(sc) if sc.is_object() => {
                return Err(KsError::unauthorized());
            }
            Some(_) => return Err(KsError::bad("Expecting scope to be an object.")),
        };
        let addr = crate::auth::RequestInfo::from_parts(self.parts)
            .remote_addr
            .map(|a| a.ip());
        let (user, credential, methods_out, expires, parent_audit) = if methods
            .iter()
            .any(|m| m == "password")
        {
            let u = auth
                .pointer("/identity/password/user")
                .filter(|u| u.is_object())
                .ok_or_else(|| KsError::bad("Expecting to find user in password. The server could not comply with the request since it is either malformed or otherwise incorrect."))?;
            let name = sv(u, "/name")
                .or(sv(u, "/id"))
                .ok_or_else(|| KsError::bad("Expecting to find name or id in user."))?;
            let pw = sv(u, "/password")
                .ok_or_else(|| KsError::bad("Expecting to find password in user."))?;
            if name.len() > 255 || pw.len() > 4096 {
                return Err(KsError::bad("String length exceeded."));
            }
            if !default_domain(u.get("domain")) {
                // Same answer as a wrong password: nothing about who exists.
                self.id.backoff.fail(name, addr);
                return Err(KsError::unauthorized());
            }
            match self.id.check_password(name, pw, addr).await {
                Ok((user, cred)) => (user, cred, vec!["password".to_string()], None, None),
                Err(LoginError::Unauthorized) => return Err(KsError::unauthorized()),
                Err(LoginError::Locked(d)) => {
                    let secs = d.as_secs() + 1;
                    return Err(KsError {
                        code: 429,
                        message: format!(
                            "Too many failed authentication attempts; try again in {secs} seconds."
                        ),
                        retry_after: Some(secs),
                    });
                }
                Err(LoginError::Api(e)) => return Err(e.into()),
            }
        } else if methods.iter().any(|m| m == "token") {
            let tok = sv(auth, "/identity/token/id")
                .ok_or_else(|| KsError::bad("Expecting to find id in token."))?;
            let sess = self
                .id
                .validate(tok)
                .await?
                .ok_or_else(KsError::unauthorized)?;
            let audit = sess.token.audit_ids.first().cloned();
            let mut m = sess.token.methods.clone();
            if !m.iter().any(|x| x == "token") {
                m.push("token".into());
            }
            (
                sess.user,
                sess.token.credential_id,
                m,
                Some(sess.token.expires_at),
                audit,
            )
        } else {
            return Err(KsError::new(
                401,
                "Attempted to authenticate with an unsupported method.",
            ));
        };
        let tenant = s_owned(&user, "/spec/tenant");
        if scope.as_ref().is_some_and(|p| *p != tenant) {
            // A user has roles only in its own tenant.
            return Err(KsError::unauthorized());
        }
        let (token, rec) = self
            .id
            .issue(&user, credential, scope, methods_out, expires, parent_audit)
            .await?;
        let roles = super::str_list(&user, "/spec/roles");
        let mut r = json_resp(201, &self.token_json(&rec, &roles));
        if let Ok(h) = HeaderValue::from_str(&token) {
            r.headers_mut().insert(SUBJECT_TOKEN, h);
        }
        Ok(r)
    }

    async fn check_token(&self) -> KsResult {
        let caller = self.caller().await?;
        let subject = self.header(SUBJECT_TOKEN).ok_or_else(|| {
            KsError::bad("Expecting to find X-Subject-Token in the request headers.")
        })?;
        let sess = self.id.validate(subject).await?;
        let Some(sess) = sess else {
            return Err(KsError::new(404, "Failed to validate token"));
        };
        if !caller.cloud_admin && caller.token.user_uid != sess.token.user_uid {
            return Err(KsError::forbidden("identity:validate_token"));
        }
        if self.method() == Method::HEAD {
            return Ok(empty(200));
        }
        let mut r = json_resp(200, &self.token_json(&sess.token, &sess.roles));
        if let Ok(h) = HeaderValue::from_str(subject) {
            r.headers_mut().insert(SUBJECT_TOKEN, h);
        }
        Ok(r)
    }

    async fn revoke(&self) -> KsResult {
        let caller = self.caller().await?;
        let subject = self.header(SUBJECT_TOKEN).ok_or_else(|| {
            KsError::bad("Expecting to find X-Subject-Token in the request headers.")
        })?;
        let Some(sess) = self.id.validate(subject).await? else {
            return Err(KsError::new(404, "Failed to validate token"));
        };
        if !caller.cloud_admin && caller.token.user_uid != sess.token.user_uid {
            return Err(KsError::forbidden("identity:revoke_token"));
        }
        super::tokens::revoke(&*self.id.store, subject).await;
        Ok(empty(204))
    }

    // ---- projects ----

    async fn list_all(&self, res: &h8s_types::Resource) -> Result<Vec<Value>, KsError> {
        let page = self
            .id
            .store
            .list(&obj::prefix(res, None), Default::default())
            .await
            .map_err(|e| crate::error::from_store(e, &Subject::default()))?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| obj::decode(kv).ok())
            .collect())
    }

    async fn list_projects(&self) -> KsResult {
        let s = self.caller().await?;
        let all = if s.cloud_admin {
            self.list_all(tenants()).await?
        } else {
            self.id.tenant(&s.tenant).await?.into_iter().collect()
        };
        let name = self.query.get("name");
        let list: Vec<Value> = all
            .iter()
            .filter(|t| name.is_none_or(|n| obj::name(t) == n))
            .map(|t| self.project_json(t))
            .collect();
        Ok(json_resp(
            200,
            &json!({"projects": list, "links": self.links("projects")}),
        ))
    }

    async fn get_project(&self, p: &str) -> KsResult {
        let s = self.caller().await?;
        if !s.cloud_admin && s.tenant != p {
            return Err(KsError::forbidden("identity:get_project"));
        }
        let t = self
            .id
            .tenant(p)
            .await?
            .ok_or_else(|| KsError::not_found("project", p))?;
        Ok(json_resp(200, &json!({"project": self.project_json(&t)})))
    }

    async fn create_project(&self) -> KsResult {
        let s = self.admin("identity:create_project").await?;
        let v = self.json_body()?;
        let p = v
            .get("project")
            .filter(|p| p.is_object())
            .ok_or_else(|| KsError::bad("Expecting to find project in request body."))?;
        let name = s_req(p, "name")?;
        if !default_domain(Some(
            &json!({"id": sv(p, "/domain_id").unwrap_or(DOMAIN_ID)}),
        )) {
            return Err(KsError::bad("Only the default domain is supported."));
        }
        if p.get("is_domain").and_then(Value::as_bool) == Some(true) {
            return Err(KsError::bad("Domains cannot be created."));
        }
        let mut spec = Map::new();
        if let Some(d) = sv(p, "/description").filter(|d| !d.is_empty()) {
            spec.insert("description".into(), json!(d));
        }
        if let Some(e) = p.get("enabled").and_then(Value::as_bool) {
            spec.insert("enabled".into(), json!(e));
        }
        let o = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "Tenant",
            "metadata": {"name": name}, "spec": spec});
        let created = self
            .api
            .create_object(&self.cx(&s), &target(tenants(), None), o)
            .await
            .map_err(|e| conflict_msg(e, "project"))?;
        Ok(json_resp(
            201,
            &json!({"project": self.project_json(&created)}),
        ))
    }

    async fn update_project(&self, p: &str) -> KsResult {
        let s = self.admin("identity:update_project").await?;
        let v = self.json_body()?;
        let patch = v
            .get("project")
            .filter(|p| p.is_object())
            .cloned()
            .ok_or_else(|| KsError::bad("Expecting to find project in request body."))?;
        if sv(&patch, "/name").is_some_and(|n| n != p) {
            return Err(KsError::bad("Projects cannot be renamed."));
        }
        self.id
            .tenant(p)
            .await?
            .ok_or_else(|| KsError::not_found("project", p))?;
        let (o, _) = self
            .api
            .guaranteed_update(&self.cx(&s), &target(tenants(), Some(p)), p, false, |cur| {
                let mut o = cur
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&Subject::default()))?;
                obj::meta_mut(&mut o).remove("resourceVersion");
                if let Some(d) = patch.get("description").and_then(Value::as_str) {
                    o["spec"]["description"] = json!(d);
                }
                if let Some(e) = patch.get("enabled").and_then(Value::as_bool) {
                    o["spec"]["enabled"] = json!(e);
                }
                Ok(o)
            })
            .await?;
        Ok(json_resp(200, &json!({"project": self.project_json(&o)})))
    }

    async fn delete_project(&self, p: &str) -> KsResult {
        let s = self.admin("identity:delete_project").await?;
        if p == self.id.cfg.cloud_admin_tenant {
            return Err(KsError::forbidden(
                "identity:delete_project (the cloud-admin project)",
            ));
        }
        self.api
            .delete_one(
                &self.cx(&s),
                &target(tenants(), Some(p)),
                p,
                &crate::rest::DeleteOptions::default(),
            )
            .await
            .map_err(|e| not_found_msg(e, "project", p))?;
        Ok(empty(204))
    }

    // ---- users ----

    async fn list_users(&self) -> KsResult {
        self.admin("identity:list_users").await?;
        let name = self.query.get("name");
        let list: Vec<Value> = self
            .list_all(users())
            .await?
            .iter()
            .filter(|u| name.is_none_or(|n| obj::name(u) == n))
            .map(|u| self.user_json(u))
            .collect();
        Ok(json_resp(
            200,
            &json!({"users": list, "links": self.links("users")}),
        ))
    }

    async fn get_user(&self, u: &str) -> KsResult {
        let s = self.caller().await?;
        if !s.cloud_admin && obj::name(&s.user) != u {
            return Err(KsError::forbidden("identity:get_user"));
        }
        let user = self
            .id
            .user(u)
            .await?
            .ok_or_else(|| KsError::not_found("user", u))?;
        Ok(json_resp(200, &json!({"user": self.user_json(&user)})))
    }

    async fn create_user(&self) -> KsResult {
        let s = self.admin("identity:create_user").await?;
        let v = self.json_body()?;
        let u = v
            .get("user")
            .filter(|u| u.is_object())
            .ok_or_else(|| KsError::bad("Expecting to find user in request body."))?;
        let name = s_req(u, "name")?;
        let tenant = sv(u, "/default_project_id")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KsError::bad("Expecting to find default_project_id in user: every h8s user belongs to a project (tenant)."))?;
        if !default_domain(Some(
            &json!({"id": sv(u, "/domain_id").unwrap_or(DOMAIN_ID)}),
        )) {
            return Err(KsError::bad("Only the default domain is supported."));
        }
        let pw = match u.get("password") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                password::check_policy(p).map_err(KsError::bad)?;
                Some(p.clone())
            }
            Some(_) => return Err(KsError::bad("password must be a string.")),
        };
        if self.id.tenant(tenant).await?.is_none() {
            return Err(KsError::not_found("project", tenant));
        }
        let mut spec = Map::new();
        spec.insert("tenant".into(), json!(tenant));
        if let Some(e) = sv(u, "/email").filter(|e| !e.is_empty()) {
            spec.insert("email".into(), json!(e));
        }
        if let Some(d) = sv(u, "/description").filter(|d| !d.is_empty()) {
            spec.insert("displayName".into(), json!(d));
        }
        if let Some(e) = u.get("enabled").and_then(Value::as_bool) {
            spec.insert("enabled".into(), json!(e));
        }
        let o = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "User",
            "metadata": {"name": name}, "spec": spec});
        let created = self
            .api
            .create_object(&self.cx(&s), &target(users(), None), o)
            .await
            .map_err(|e| conflict_msg(e, "user"))?;
        if let Some(pw) = pw {
            password::set(&*self.id.store, name, obj::uid(&created), pw).await?;
        }
        Ok(json_resp(201, &json!({"user": self.user_json(&created)})))
    }

    async fn update_user(&self, u: &str) -> KsResult {
        let s = self.admin("identity:update_user").await?;
        let v = self.json_body()?;
        let patch = v
            .get("user")
            .filter(|p| p.is_object())
            .cloned()
            .ok_or_else(|| KsError::bad("Expecting to find user in request body."))?;
        if sv(&patch, "/name").is_some_and(|n| n != u) {
            return Err(KsError::bad("Users cannot be renamed."));
        }
        let pw = match patch.get("password") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                password::check_policy(p).map_err(KsError::bad)?;
                Some(p.clone())
            }
            Some(_) => return Err(KsError::bad("password must be a string.")),
        };
        self.id
            .user(u)
            .await?
            .ok_or_else(|| KsError::not_found("user", u))?;
        let (o, _) = self
            .api
            .guaranteed_update(&self.cx(&s), &target(users(), Some(u)), u, false, |cur| {
                let mut o = cur
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&Subject::default()))?;
                obj::meta_mut(&mut o).remove("resourceVersion");
                if let Some(e) = patch.get("enabled").and_then(Value::as_bool) {
                    o["spec"]["enabled"] = json!(e);
                }
                if let Some(e) = patch.get("email").and_then(Value::as_str) {
                    o["spec"]["email"] = json!(e);
                }
                if let Some(d) = patch.get("description").and_then(Value::as_str) {
                    o["spec"]["displayName"] = json!(d);
                }
                if let Some(t) = patch.get("default_project_id").and_then(Value::as_str) {
                    // Validation refuses a change of tenant (spec.tenant is immutable).
                    o["spec"]["tenant"] = json!(t);
                }
                Ok(o)
            })
            .await?;
        if let Some(pw) = pw {
            password::set(&*self.id.store, u, obj::uid(&o), pw).await?;
        }
        Ok(json_resp(200, &json!({"user": self.user_json(&o)})))
    }

    async fn delete_user(&self, u: &str) -> KsResult {
        let s = self.admin("identity:delete_user").await?;
        self.api
            .delete_one(
                &self.cx(&s),
                &target(users(), Some(u)),
                u,
                &crate::rest::DeleteOptions::default(),
            )
            .await
            .map_err(|e| not_found_msg(e, "user", u))?;
        password::remove(&*self.id.store, u).await;
        Ok(empty(204))
    }

    /// `POST /v3/users/{id}/password` `{"user": {"password", "original_password"}}`:
    /// a user changes its own password.
    async fn change_own_password(&self, u: &str) -> KsResult {
        let v = self.json_body()?;
        let new = sv(&v, "/user/password")
            .ok_or_else(|| KsError::bad("Expecting to find password in user."))?;
        let old = sv(&v, "/user/original_password")
            .ok_or_else(|| KsError::bad("Expecting to find original_password in user."))?;
        password::check_policy(new).map_err(KsError::bad)?;
        let addr = crate::auth::RequestInfo::from_parts(self.parts)
            .remote_addr
            .map(|a| a.ip());
        let user = match self.id.check_password(u, old, addr).await {
            Ok((user, _)) => user,
            Err(LoginError::Locked(_)) => {
                return Err(KsError::new(
                    429,
                    "Too many failed authentication attempts.",
                ))
            }
            Err(LoginError::Api(e)) => return Err(e.into()),
            Err(LoginError::Unauthorized) => return Err(KsError::unauthorized()),
        };
        password::set(&*self.id.store, u, obj::uid(&user), new.to_string()).await?;
        Ok(empty(204))
    }

    // ---- roles ----

    async fn user_roles(&self, p: &str, u: &str) -> KsResult {
        let s = self.caller().await?;
        if !s.cloud_admin && obj::name(&s.user) != u {
            return Err(KsError::forbidden("identity:list_grants"));
        }
        let user = self
            .id
            .user(u)
            .await?
            .ok_or_else(|| KsError::not_found("user", u))?;
        let roles: Vec<Value> = if s_owned(&user, "/spec/tenant") == p {
            super::str_list(&user, "/spec/roles")
                .iter()
                .map(|r| self.role_json(r))
                .collect()
        } else {
            Vec::new()
        };
        Ok(json_resp(
            200,
            &json!({"roles": roles, "links": self.links(&format!("projects/{p}/users/{u}/roles"))}),
        ))
    }

    /// `PUT|HEAD|GET|DELETE /v3/projects/{p}/users/{u}/roles/{r}`.
    async fn role_grant(&self, p: &str, u: &str, r: &str, m: Method) -> KsResult {
        let s = if matches!(m, Method::PUT | Method::DELETE) {
            self.admin("identity:create_grant").await?
        } else {
            self.caller().await?
        };
        if !h8s_types::tenancy::ROLES.contains(&r) {
            return Err(KsError::not_found("role", r));
        }
        let user = self
            .id
            .user(u)
            .await?
            .ok_or_else(|| KsError::not_found("user", u))?;
        self.id
            .tenant(p)
            .await?
            .ok_or_else(|| KsError::not_found("project", p))?;
        let own = s_owned(&user, "/spec/tenant") == p;
        let has = own && super::str_list(&user, "/spec/roles").iter().any(|x| x == r);
        match m {
            Method::GET | Method::HEAD => {
                if !s.cloud_admin && obj::name(&s.user) != u {
                    return Err(KsError::forbidden("identity:check_grant"));
                }
                if has {
                    Ok(empty(204))
                } else {
                    Err(KsError::not_found("role assignment", r))
                }
            }
            Method::PUT | Method::DELETE => {
                if !own {
                    return Err(KsError::bad(format!(
                        "User {u} belongs to project {}; h8s users hold roles only in their own project.",
                        s_owned(&user, "/spec/tenant")
                    )));
                }
                if (m == Method::PUT) == has {
                    return if has {
                        Ok(empty(204))
                    } else {
                        Err(KsError::not_found("role assignment", r))
                    };
                }
                let add = m == Method::PUT;
                let role = r.to_string();
                self.api
                    .guaranteed_update(&self.cx(&s), &target(users(), Some(u)), u, false, |cur| {
                        let mut o = cur
                            .cloned()
                            .ok_or_else(|| ApiError::not_found(&Subject::default()))?;
                        obj::meta_mut(&mut o).remove("resourceVersion");
                        let mut roles = super::str_list(&o, "/spec/roles");
                        roles.retain(|x| *x != role);
                        if add {
                            roles.push(role.clone());
                        }
                        o["spec"]["roles"] = json!(roles);
                        Ok(o)
                    })
                    .await?;
                Ok(empty(204))
            }
            _ => Err(KsError::new(
                405,
                "The method is not allowed for the requested URL.",
            )),
        }
    }

    async fn role_assignments(&self) -> KsResult {
        let s = self.caller().await?;
        let want_user = self.query.get("user.id").map(str::to_string);
        let want_project = self.query.get("scope.project.id").map(str::to_string);
        let want_role = self.query.get("role.id").map(str::to_string);
        let names = self.query.flag("include_names") || self.query.get("include_names").is_some();
        if !s.cloud_admin && want_user.as_deref() != Some(obj::name(&s.user)) {
            return Err(KsError::forbidden("identity:list_role_assignments"));
        }
        let all = match &want_user {
            Some(u) => self.id.user(u).await?.into_iter().collect(),
            None => self.list_all(users()).await?,
        };
        let mut out = Vec::new();
        for u in &all {
            let t = s_owned(u, "/spec/tenant");
            if want_project.as_ref().is_some_and(|p| *p != t) {
                continue;
            }
            for r in super::str_list(u, "/spec/roles") {
                if want_role.as_ref().is_some_and(|w| *w != r) {
                    continue;
                }
                let n = obj::name(u);
                let mut a = json!({
                    "role": {"id": r},
                    "user": {"id": n},
                    "scope": {"project": {"id": t}},
                    "links": {"assignment": format!("{}/v3/projects/{t}/users/{n}/roles/{r}", self.base)},
                });
                if names {
                    a["role"]["name"] = json!(r);
                    a["user"]["name"] = json!(n);
                    a["user"]["domain"] = domain();
                    a["scope"]["project"]["name"] = json!(t);
                    a["scope"]["project"]["domain"] = domain();
                }
                out.push(a);
            }
        }
        Ok(json_resp(
            200,
            &json!({"role_assignments": out, "links": self.links("role_assignments")}),
        ))
    }
}

fn s_owned(v: &Value, ptr: &str) -> String {
    sv(v, ptr).unwrap_or("").to_string()
}

fn s_req<'v>(v: &'v Value, field: &str) -> Result<&'v str, KsError> {
    match v.get(field) {
        Some(Value::String(x)) if !x.is_empty() => Ok(x),
        _ => Err(KsError::bad(format!(
            "Expecting to find {field} in the request body."
        ))),
    }
}

fn conflict_msg(e: ApiError, what: &str) -> KsError {
    if e.code == 409 {
        return KsError::new(
            409,
            format!("Conflict occurred attempting to store {what} - Duplicate entry."),
        );
    }
    e.into()
}

fn not_found_msg(e: ApiError, what: &str, id: &str) -> KsError {
    if e.code == 404 {
        return KsError::not_found(what, id);
    }
    e.into()
}
