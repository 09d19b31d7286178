//! Bootstrap (join) tokens, as kubeadm's: a token `ID.SECRET` that authenticates as
//! `system:bootstrap:ID` in the group `system:bootstrappers`, and an authorizer guard
//! that lets such a user do nothing but request a node certificate (create, get, list and
//! watch CertificateSigningRequests) and read discovery. A node agent joins with it: it
//! sends a CSR for `system:node:NAME`, the server approves and signs it, and the agent
//! uses the certificate from then on.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{
    constant_time_eq, Attributes, Authenticator, Authn, Authorizer, Decision, RequestInfo,
    UserInfo, AUTHENTICATED_GROUP,
};
use crate::{Error, Result};

/// The group of every bootstrap-token user.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The prefix of a bootstrap-token user name.
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";

/// A join token: a public id (6 characters of `[a-z0-9]`) and a secret (16 more), written
/// `ID.SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in crate::util::random_bytes::<32>() {
            // 252 = 7 × 36: rejecting the rest keeps every character equally likely.
            if b < 252 && out.len() < n {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    out
}

impl JoinToken {
    /// A new random token.
    pub fn generate() -> JoinToken {
        JoinToken {
            id: random_chars(6),
            secret: random_chars(16),
        }
    }

    /// Parses `ID.SECRET` (kubeadm's `[a-z0-9]{6}\.[a-z0-9]{16}`).
    pub fn parse(s: &str) -> Option<JoinToken> {
        let (id, secret) = s.trim().split_once('.')?;
        let ok = |p: &str, n: usize| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, 6) && ok(secret, 16)).then(|| JoinToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// The token as a client presents it: `ID.SECRET`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Reads the token at `path`, or creates one there (mode 0600).
    pub fn ensure(path: &Path) -> Result<JoinToken> {
        if let Some(s) = crate::pki::read(path)? {
            return JoinToken::parse(&s).ok_or_else(|| {
                Error::Pki(format!(
                    "{}: not a join token (ID.SECRET, [a-z0-9]{{6}}.[a-z0-9]{{16}})",
                    path.display()
                ))
            });
        }
        let t = JoinToken::generate();
        crate::pki::write_private(path, &format!("{}\n", t.token()))?;
        Ok(t)
    }

    /// The user this token authenticates as.
    pub fn user(&self) -> UserInfo {
        UserInfo {
            username: format!("{BOOTSTRAP_USER_PREFIX}{}", self.id),
            uid: String::new(),
            groups: vec![BOOTSTRAPPERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
            extra: Default::default(),
        }
    }
}

/// The type of the Secrets that hold bootstrap tokens (kubeadm's `kubeadm token create`).
pub const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Authenticates the join tokens it holds and, with a store, bootstrap-token Secrets as
/// kube-apiserver's `--enable-bootstrap-token-auth` does: `kube-system/bootstrap-token-ID`
/// of type `bootstrap.kubernetes.io/token` with `token-id`, `token-secret`,
/// `usage-bootstrap-authentication: "true"`, an optional RFC 3339 `expiration` and
/// optional `auth-extra-groups` (each `system:bootstrappers:…`). So more join tokens, with
/// expiry, can be made and revoked through the API.
pub struct BootstrapTokenAuthenticator {
    tokens: Vec<JoinToken>,
    store: Option<Arc<dyn h8s_store::Store>>,
}

impl BootstrapTokenAuthenticator {
    pub fn new(tokens: Vec<JoinToken>) -> Self {
        BootstrapTokenAuthenticator {
            tokens,
            store: None,
        }
    }

    /// Also accepts bootstrap-token Secrets read from `store`.
    pub fn with_secrets(mut self, store: Arc<dyn h8s_store::Store>) -> Self {
        self.store = Some(store);
        self
    }

    async fn check(&self, req: &RequestInfo<'_>) -> Authn {
        let Some(t) = req.bearer().and_then(JoinToken::parse) else {
            return Authn::NoOpinion;
        };
        match self.tokens.iter().find(|k| k.id == t.id) {
            Some(k) if constant_time_eq(k.secret.as_bytes(), t.secret.as_bytes()) => {
                return Authn::User(k.user())
            }
            Some(_) => return Authn::Denied,
            None => {}
        }
        let Some(store) = &self.store else {
            return Authn::NoOpinion;
        };
        match secret_user(store.as_ref(), &t).await {
            Ok(Some(u)) => Authn::User(u),
            Ok(None) => Authn::NoOpinion,
            Err(why) => {
                tracing::debug!(token_id = %t.id, why, "bootstrap token rejected");
                Authn::Denied
            }
        }
    }
}

/// The user of a bootstrap-token Secret for `t`: `Ok(None)` when there is no such
/// Secret, `Err(why)` when there is one and it refuses the token.
async fn secret_user(
    store: &dyn h8s_store::Store,
    t: &JoinToken,
) -> std::result::Result<Option<UserInfo>, &'static str> {
    let Some(res) = h8s_types::resources::find("", "v1", "secrets") else {
        return Ok(None);
    };
    let key = crate::obj::key(
        res,
        Some("kube-system"),
        &format!("bootstrap-token-{}", t.id),
    );
    let kv = match store.get(&key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return Ok(None),
        Err(_) => return Err("the store could not be read"),
    };
    let o = crate::obj::decode(&kv).map_err(|_| "undecodable Secret")?;
    if o["type"] != BOOTSTRAP_TOKEN_SECRET_TYPE {
        return Ok(None);
    }
    if crate::obj::is_deleting(&o) {
        return Err("the Secret is being deleted");
    }
    let field = |k: &str| -> Option<String> {
        if let Some(s) = o["data"][k].as_str() {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
            return String::from_utf8(b).ok();
        }
        o["stringData"][k].as_str().map(str::to_string)
    };
    if field("token-id").as_deref() != Some(t.id.as_str()) {
        return Err("token-id does not match the Secret's name");
    }
    let secret = field("token-secret").unwrap_or_default();
    if !constant_time_eq(secret.as_bytes(), t.secret.as_bytes()) {
        return Err("wrong secret");
    }
    if field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err("the token is not for authentication");
    }
    if let Some(exp) = field("expiration") {
        let exp: jiff::Timestamp = exp.parse().map_err(|_| "unparsable expiration")?;
        if exp <= jiff::Timestamp::now() {
            return Err("the token has expired");
        }
    }
    let mut user = t.user();
    for g in field("auth-extra-groups").unwrap_or_default().split(',') {
        let g = g.trim();
        if g.is_empty() {
            continue;
        }
        if !g.starts_with("system:bootstrappers:") {
            return Err("auth-extra-groups must begin with system:bootstrappers:");
        }
        user.groups.insert(user.groups.len() - 1, g.to_string());
    }
    Ok(Some(user))
}

impl Authenticator for BootstrapTokenAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(self.check(req))
    }
}

/// Confines bootstrap-token users (group `system:bootstrappers`) to what joining needs;
/// everyone else is decided by the wrapped authorizer.
pub struct BootstrapGuard {
    inner: Arc<dyn Authorizer>,
}

impl BootstrapGuard {
    pub fn new(inner: Arc<dyn Authorizer>) -> Self {
        BootstrapGuard { inner }
    }

    /// What a bootstrapper may do: CSRs (create, get, list, watch; not approve or update
    /// status), `create` on `certificatesigningrequests/nodeclient` (what kubeadm's
    /// bootstrap role grants: the approver asks for it), its own SelfSubjectReview, and
    /// discovery.
    pub fn bootstrapper_may(attrs: &Attributes) -> bool {
        if !attrs.resource_request {
            let discovery = ["/api", "/apis", "/openapi", "/version"]
                .iter()
                .any(|p| attrs.path == *p || attrs.path.starts_with(&format!("{p}/")));
            return attrs.verb == "get" && discovery;
        }
        match (attrs.group.as_str(), attrs.resource.as_str()) {
            ("certificates.k8s.io", "certificatesigningrequests") => {
                match attrs.subresource.as_str() {
                    "" => matches!(attrs.verb.as_str(), "create" | "get" | "list" | "watch"),
                    "nodeclient" => attrs.verb == "create",
                    _ => false,
                }
            }
            ("authentication.k8s.io", "selfsubjectreviews") => attrs.verb == "create",
            _ => false,
        }
    }
}

impl Authorizer for BootstrapGuard {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if !user.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP) {
            return self.inner.authorize(user, attrs);
        }
        if Self::bootstrapper_may(attrs) {
            Decision::Allow
        } else {
            Decision::Deny("bootstrap tokens may only request node certificates".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &dyn Authenticator, tok: &str) -> Authn {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {tok}").parse().unwrap(),
        );
        let req = RequestInfo {
            method: &http::Method::GET,
            path: "/api",
            headers: &h,
            client_certs: &[],
            remote_addr: None,
        };
        futures::executor::block_on(a.authenticate(&req))
    }

    #[test]
    fn token_format_and_file() {
        let t = JoinToken::generate();
        assert_eq!(JoinToken::parse(&t.token()), Some(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "abc.def",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "",
        ] {
            assert_eq!(JoinToken::parse(bad), None, "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("join-token");
        let a = JoinToken::ensure(&p).unwrap();
        assert_eq!(JoinToken::ensure(&p).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn authenticates_only_its_tokens() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let a = BootstrapTokenAuthenticator::new(vec![t]);
        match run(&a, "abcdef.0123456789abcdef") {
            Authn::User(u) => {
                assert_eq!(u.username, "system:bootstrap:abcdef");
                assert_eq!(u.groups, ["system:bootstrappers", "system:authenticated"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&a, "abcdef.0123456789abcdeX"),
            Authn::NoOpinion
        ));
        assert!(matches!(run(&a, "abcdef.0123456789abcdee"), Authn::Denied));
        assert!(matches!(
            run(&a, "zzzzzz.0123456789abcdef"),
            Authn::NoOpinion
        ));
        assert!(matches!(run(&a, "eyJhbGciOi.x.y"), Authn::NoOpinion));
    }

    #[test]
    fn guard_confines_bootstrappers() {
        let g = BootstrapGuard::new(Arc::new(super::super::AllowAuthenticated));
        let boot = JoinToken::generate().user();
        let admin = crate::auth::TokenAuthenticator::admin();
        let csr = |verb: &str, sub: &str| Attributes {
            verb: verb.into(),
            group: "certificates.k8s.io".into(),
            version: "v1".into(),
            resource: "certificatesigningrequests".into(),
            subresource: sub.into(),
            resource_request: true,
            ..Default::default()
        };
        for v in ["create", "get", "list", "watch"] {
            assert!(g.authorize(&boot, &csr(v, "")).allowed(), "{v}");
        }
        assert!(!g.authorize(&boot, &csr("update", "approval")).allowed());
        assert!(!g.authorize(&boot, &csr("update", "status")).allowed());
        assert!(g.authorize(&boot, &csr("create", "nodeclient")).allowed());
        assert!(!g
            .authorize(&boot, &csr("create", "selfnodeclient"))
            .allowed());
        assert!(!g.authorize(&boot, &csr("delete", "")).allowed());
        let pods = Attributes {
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            resource_request: true,
            ..Default::default()
        };
        assert!(!g.authorize(&boot, &pods).allowed());
        assert!(g.authorize(&admin, &pods).allowed());
        let disc = Attributes {
            verb: "get".into(),
            path: "/apis/certificates.k8s.io/v1".into(),
            ..Default::default()
        };
        assert!(g.authorize(&boot, &disc).allowed());
        let metrics = Attributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert!(!g.authorize(&boot, &metrics).allowed());
    }
}
