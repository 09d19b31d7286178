//! The front of the request chain: authentication, then authorization. Both are
//! traits so that later work plugs in Keystone tokens, RBAC and the tenant guard
//! without touching the REST code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde_json::{json, Value};

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

/// The result of authenticating one request.
pub enum Authn {
    /// Valid credentials.
    User(UserInfo),
    /// The authenticator does not recognise any credential in the request (the next one
    /// may).
    NoOpinion,
    /// A credential was presented and is wrong: stop here with 401.
    Denied,
}

/// Turns a request's credentials into a user.
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, headers: &http::HeaderMap) -> Authn;
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
/// when it changes, so that the admin can add users without a restart.
pub struct TokenAuthenticator {
    admin_token: String,
    file: Option<PathBuf>,
    cache: RwLock<(Option<SystemTime>, HashMap<String, UserInfo>)>,
}

impl TokenAuthenticator {
    pub fn new(admin_token: String, file: Option<PathBuf>) -> Self {
        TokenAuthenticator {
            admin_token,
            file,
            cache: RwLock::new((None, HashMap::new())),
        }
    }

    /// The admin's identity: a member of `system:masters`, as kubeadm's admin.
    pub fn admin() -> UserInfo {
        UserInfo {
            username: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: HashMap::new(),
        }
    }

    fn reload(&self, path: &Path) {
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
        groups.push("system:authenticated".into());
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

impl Authenticator for TokenAuthenticator {
    fn authenticate(&self, headers: &http::HeaderMap) -> Authn {
        let Some(tok) = bearer(headers) else {
            return Authn::NoOpinion;
        };
        if constant_time_eq(tok.as_bytes(), self.admin_token.as_bytes()) {
            return Authn::User(Self::admin());
        }
        if let Some(f) = &self.file {
            self.reload(f);
            if let Ok(c) = self.cache.read() {
                if let Some(u) = c.1.get(tok) {
                    return Authn::User(u.clone());
                }
            }
        }
        Authn::Denied
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

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
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

/// A chain of authenticators: the first opinion wins.
pub struct AuthnChain(pub Vec<Arc<dyn Authenticator>>);

impl Authenticator for AuthnChain {
    fn authenticate(&self, headers: &http::HeaderMap) -> Authn {
        for a in &self.0 {
            match a.authenticate(headers) {
                Authn::NoOpinion => continue,
                other => return other,
            }
        }
        Authn::NoOpinion
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

    #[test]
    fn tokens() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tokens.csv");
        std::fs::write(&f, "t1,alice,u1,\"dev,ops\"\nbad\n").unwrap();
        let a = TokenAuthenticator::new("admintok".into(), Some(f));
        assert!(
            matches!(a.authenticate(&hdr("Bearer admintok")), Authn::User(u) if u.username == "admin")
        );
        match a.authenticate(&hdr("bearer t1")) {
            Authn::User(u) => {
                assert_eq!(u.username, "alice");
                assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
            }
            _ => panic!("t1 should authenticate"),
        }
        assert!(matches!(a.authenticate(&hdr("Bearer nope")), Authn::Denied));
        assert!(matches!(
            a.authenticate(&hdr("Basic abc")),
            Authn::NoOpinion
        ));
        assert!(matches!(
            a.authenticate(&http::HeaderMap::new()),
            Authn::NoOpinion
        ));
    }
}
