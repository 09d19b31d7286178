//! The front of the request chain: authentication, then authorization. Both are
//! traits so that later work plugs in Keystone tokens, RBAC and the tenant guard
//! without touching the REST code.
//!
//! Authentication is a chain ([`AuthnChain`]) of asynchronous [`Authenticator`]s, each
//! seeing the whole request ([`RequestInfo`]: headers, the TLS client certificate,
//! the peer address). The server's order: X.509 client certificates, static bearer
//! tokens, ServiceAccount JWTs, bootstrap tokens, then the extra authenticators of
//! [`crate::Config`] (the seam for Keystone). The first that recognises the caller wins.
//!
//! Authorization ([`Authorizer`]) answers allow, deny, or allow-filtered: a list or
//! watch then only returns the objects the [`ObjectFilter`] lets through.

mod bootstrap;
mod x509;

pub use bootstrap::{BootstrapGuard, BootstrapTokenAuthenticator, JoinToken, BOOTSTRAPPERS_GROUP};
pub use x509::ClientCertAuthenticator;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use futures::future::BoxFuture;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The prefix of the group that names a tenant user's tenant (`h8s:tenant:acme`): the one
/// source of a caller's tenant for authorization and the tenant guard. Only authenticators
/// the operator trusts (the identity service, Keystone, token files) put it there.
pub const TENANT_GROUP_PREFIX: &str = "h8s:tenant:";

impl UserInfo {
    /// The caller's tenant, from its `h8s:tenant:<name>` group; `None` for cluster-wide
    /// identities (admins, components, nodes, ServiceAccounts).
    pub fn tenant(&self) -> Option<&str> {
        self.groups
            .iter()
            .find_map(|g| g.strip_prefix(TENANT_GROUP_PREFIX))
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: HashMap<String, Vec<String>>,
}

impl UserInfo {
    /// The `userInfo` of a SelfSubjectReview.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// What the TLS layer knows about a connection. The server attaches it to every request
/// it reads (as an `http::Extensions` entry); only the server creates it, so the
/// certificates in it have been verified against the cluster CA.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    remote_addr: SocketAddr,
    client_certs: Arc<[CertificateDer<'static>]>,
}

impl ConnInfo {
    /// `client_certs` must have been verified (leaf first) against the cluster CA.
    pub(crate) fn new(remote_addr: SocketAddr, client_certs: Vec<CertificateDer<'static>>) -> Self {
        ConnInfo {
            remote_addr,
            client_certs: client_certs.into(),
        }
    }
}

/// One request as authenticators see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The client's certificate chain, leaf first, verified against the cluster CA by
    /// the TLS layer; empty when the client sent none (or the request came in-process).
    pub client_certs: &'a [CertificateDer<'static>],
    /// The peer's address, when the request came over the network.
    pub remote_addr: Option<SocketAddr>,
}

impl<'a> RequestInfo<'a> {
    /// The request's view from its parts and the [`ConnInfo`] the server attached.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        let conn = parts.extensions.get::<ConnInfo>();
        RequestInfo {
            method: &parts.method,
            path: parts.uri.path(),
            headers: &parts.headers,
            client_certs: conn.map(|c| &c.client_certs[..]).unwrap_or(&[]),
            remote_addr: conn.map(|c| c.remote_addr),
        }
    }

    /// The bearer token of the `Authorization` header, if any.
    pub fn bearer(&self) -> Option<&'a str> {
        bearer(self.headers)
    }
}

/// The result of authenticating one request.
#[derive(Debug, Clone)]
pub enum Authn {
    /// Valid credentials.
    User(UserInfo),
    /// The authenticator does not recognise any credential in the request (the next one
    /// may).
    NoOpinion,
    /// A credential was presented and is wrong: stop here with 401.
    Denied,
    /// The credential could not be checked now (an external identity service is down):
    /// 503 with this message, unless a later authenticator recognises the caller.
    Unavailable(String),
}

/// Turns a request's credentials into a user. Asynchronous, so that an authenticator
/// may read the store (ServiceAccount tokens) or ask another service (Keystone); boxed,
/// so that the chain holds `dyn Authenticator`s.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn>;
}

/// The bearer token in an `Authorization` header, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, tok) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| tok.trim())
        .filter(|t| !t.is_empty())
}

/// Static bearer tokens: the admin token plus a token file in Kubernetes'
/// `--token-auth-file` format (`token,user,uid,"group1,group2"` per line), re-read
/// when it changes, so that the admin can add users without a restart. A known token
/// looks at the file's modification time at most once a second (a removed line stops
/// working within that second); an unknown one always does (a line just added works at
/// once).
pub struct TokenAuthenticator {
    admin_token: String,
    file: Option<PathBuf>,
    cache: RwLock<(Option<SystemTime>, HashMap<String, UserInfo>)>,
    /// When the file's time was last looked at, in ms since `started` (+1; 0 = never).
    checked_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl TokenAuthenticator {
    pub fn new(admin_token: String, file: Option<PathBuf>) -> Self {
        TokenAuthenticator {
            admin_token,
            file,
            cache: RwLock::new((None, HashMap::new())),
            checked_ms: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    /// The admin's identity: a member of `system:masters`, as kubeadm's admin.
    pub fn admin() -> UserInfo {
        UserInfo {
            username: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), AUTHENTICATED_GROUP.into()],
            extra: HashMap::new(),
        }
    }

    /// Whether the file's time was looked at less than a second ago.
    fn recently_checked(&self) -> bool {
        let at = self.checked_ms.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        at != 0 && now.saturating_sub(at) < 1000
    }

    fn lookup(&self, tok: &str) -> Option<UserInfo> {
        self.cache.read().ok().and_then(|c| c.1.get(tok).cloned())
    }

    fn reload(&self, path: &Path) {
        self.checked_ms.store(
            self.started.elapsed().as_millis() as u64 + 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Ok(c) = self.cache.read() {
            if c.0 == mtime && mtime.is_some() {
                return;
            }
        }
        let map = std::fs::read_to_string(path)
            .map(|s| parse_token_file(&s))
            .unwrap_or_default();
        if let Ok(mut c) = self.cache.write() {
            *c = (mtime, map);
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a token file; malformed lines are skipped (and logged).
pub fn parse_token_file(s: &str) -> HashMap<String, UserInfo> {
    let mut out = HashMap::new();
    for (n, line) in s.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() < 2 || fields[0].is_empty() || fields[1].is_empty() {
            tracing::warn!(line = n + 1, "token file: skipping a malformed line");
            continue;
        }
        let mut groups: Vec<String> = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        groups.push(AUTHENTICATED_GROUP.into());
        out.insert(
            fields[0].clone(),
            UserInfo {
                username: fields[1].clone(),
                uid: fields.get(2).cloned().unwrap_or_default(),
                groups,
                extra: HashMap::new(),
            },
        );
    }
    out
}

impl TokenAuthenticator {
    fn check(&self, headers: &http::HeaderMap) -> Authn {
        let Some(tok) = bearer(headers) else {
            return Authn::NoOpinion;
        };
        if constant_time_eq(tok.as_bytes(), self.admin_token.as_bytes()) {
            return Authn::User(Self::admin());
        }
        if let Some(f) = &self.file {
            let fresh = self.recently_checked();
            if !fresh {
                self.reload(f);
            }
            if let Some(u) = self.lookup(tok) {
                return Authn::User(u);
            }
            if fresh {
                self.reload(f);
                if let Some(u) = self.lookup(tok) {
                    return Authn::User(u);
                }
            }
        }
        // Not one of ours; a later authenticator (JWTs, bootstrap tokens) may know it.
        Authn::NoOpinion
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(std::future::ready(self.check(req.headers)))
    }
}

/// The attributes of a request that authorization decides on (Kubernetes'
/// `authorizer.Attributes`).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub namespace: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// True for resource requests; false for paths like `/metrics`.
    pub resource_request: bool,
    pub path: String,
}

/// Narrows what an allowed list or watch returns (Kubernetes has no such answer; the
/// tenancy work needs it so that a caller sees only its own objects). The list path keeps
/// the objects `allows` accepts; a watch sends only their events (an object that stops
/// being allowed is seen as deleted).
pub trait ObjectFilter: Send + Sync {
    fn allows(&self, obj: &Value) -> bool;
}

/// A label selector is a filter: the caller only sees objects whose labels match.
impl ObjectFilter for h8s_machinery::LabelSelector {
    fn allows(&self, obj: &Value) -> bool {
        self.matches_object(obj)
    }
}

/// A predicate over objects as a filter.
pub struct FnFilter<F>(pub F);

impl<F: Fn(&Value) -> bool + Send + Sync> ObjectFilter for FnFilter<F> {
    fn allows(&self, obj: &Value) -> bool {
        (self.0)(obj)
    }
}

/// An authorization decision.
#[derive(Clone)]
pub enum Decision {
    Allow,
    Deny(String),
    /// Allowed, but a list or watch returns only what the filter allows (other verbs
    /// treat it as [`Decision::Allow`]).
    AllowFiltered(Arc<dyn ObjectFilter>),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Allow => f.write_str("Allow"),
            Decision::Deny(why) => f.debug_tuple("Deny").field(why).finish(),
            Decision::AllowFiltered(_) => f.write_str("AllowFiltered(..)"),
        }
    }
}

impl Decision {
    /// Whether the request may go ahead (filtered or not).
    pub fn allowed(&self) -> bool {
        !matches!(self, Decision::Deny(_))
    }
}

/// Decides whether a user may do something.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision;
}

/// Today's policy: any authenticated user may do anything. RBAC and the tenant guard
/// replace it.
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _user: &UserInfo, _attrs: &Attributes) -> Decision {
        Decision::Allow
    }
}

/// A chain of authenticators, as Kubernetes' union authenticator: the first that
/// recognises the caller wins; when none does, the request is [`Authn::Unavailable`] if a
/// credential could not be checked (503), else [`Authn::Denied`] if any rejected a
/// credential, else [`Authn::NoOpinion`] (both answer 401).
pub struct AuthnChain(pub Vec<Arc<dyn Authenticator>>);

impl Authenticator for AuthnChain {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(async move {
            let mut denied = false;
            let mut unavailable = None;
            for a in &self.0 {
                match a.authenticate(req).await {
                    Authn::User(u) => return Authn::User(u),
                    Authn::Denied => denied = true,
                    Authn::Unavailable(why) => unavailable = Some(why),
                    Authn::NoOpinion => {}
                }
            }
            if let Some(why) = unavailable {
                Authn::Unavailable(why)
            } else if denied {
                Authn::Denied
            } else {
                Authn::NoOpinion
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    /// Runs `a` on a request with `headers` and no client certificate.
    fn run(a: &dyn Authenticator, headers: &http::HeaderMap) -> Authn {
        let req = RequestInfo {
            method: &http::Method::GET,
            path: "/api",
            headers,
            client_certs: &[],
            remote_addr: None,
        };
        futures::executor::block_on(a.authenticate(&req))
    }

    #[test]
    fn chain_first_user_wins_and_denial_is_remembered() {
        struct Fixed(Authn);
        impl Authenticator for Fixed {
            fn authenticate<'a>(&'a self, _: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
                Box::pin(std::future::ready(self.0.clone()))
            }
        }
        let u = |n: &str| UserInfo {
            username: n.into(),
            ..Default::default()
        };
        let none = http::HeaderMap::new();
        let c = AuthnChain(vec![
            Arc::new(Fixed(Authn::NoOpinion)),
            Arc::new(Fixed(Authn::Denied)),
            Arc::new(Fixed(Authn::User(u("b")))),
            Arc::new(Fixed(Authn::User(u("c")))),
        ]);
        assert!(matches!(run(&c, &none), Authn::User(x) if x.username == "b"));
        let c = AuthnChain(vec![
            Arc::new(Fixed(Authn::Denied)),
            Arc::new(Fixed(Authn::NoOpinion)),
        ]);
        assert!(matches!(run(&c, &none), Authn::Denied));
        assert!(matches!(run(&AuthnChain(vec![]), &none), Authn::NoOpinion));
    }

    #[test]
    fn filters() {
        let sel = h8s_machinery::LabelSelector::parse("team=a").unwrap();
        let d = Decision::AllowFiltered(Arc::new(sel));
        assert!(d.allowed());
        assert!(!Decision::Deny("no".into()).allowed());
        let Decision::AllowFiltered(f) = d else {
            unreachable!()
        };
        assert!(f.allows(&json!({"metadata": {"labels": {"team": "a"}}})));
        assert!(!f.allows(&json!({"metadata": {"labels": {"team": "b"}}})));
        let f = FnFilter(|o: &Value| o["metadata"]["namespace"] == "x");
        assert!(f.allows(&json!({"metadata": {"namespace": "x"}})));
    }

    #[test]
    fn tokens() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tokens.csv");
        std::fs::write(&f, "t1,alice,u1,\"dev,ops\"\nbad\n").unwrap();
        let a = TokenAuthenticator::new("admintok".into(), Some(f));
        assert!(
            matches!(run(&a, &hdr("Bearer admintok")), Authn::User(u) if u.username == "admin")
        );
        match run(&a, &hdr("bearer t1")) {
            Authn::User(u) => {
                assert_eq!(u.username, "alice");
                assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
            }
            _ => panic!("t1 should authenticate"),
        }
        // An unknown token is for a later authenticator to judge.
        assert!(matches!(run(&a, &hdr("Bearer nope")), Authn::NoOpinion));
        assert!(matches!(run(&a, &hdr("Basic abc")), Authn::NoOpinion));
        assert!(matches!(run(&a, &http::HeaderMap::new()), Authn::NoOpinion));
    }
}
