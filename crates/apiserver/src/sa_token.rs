//! ServiceAccount tokens, as kube-apiserver's bound service account tokens: JWTs signed
//! by the server (ES256, a P-256 key generated into `DATA_DIR/sa.key`), bound to the
//! ServiceAccount and optionally to a Pod, Secret or Node, expiring; validated on every
//! use, including that every bound object still exists with the uid the token names.
//!
//! - [`ServiceAccountTokens`]: the key, minting ([`ServiceAccountTokens::mint`]) and
//!   verification of signatures and times.
//! - [`ServiceAccountAuthenticator`]: the authenticator in the chain (reads the bound
//!   objects through the store).
//! - [`TokenRequestHandler`]: the `serviceaccounts/token` subresource (TokenRequest), so
//!   that `kubectl create token` works.
//! - [`TokenReviewer`]: `authentication.k8s.io/v1 TokenReview`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use futures::future::BoxFuture;
use http::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{Authenticator, Authn, RequestInfo, UserInfo, AUTHENTICATED_GROUP};
use crate::error::{ApiError, Subject};
use crate::response::{error_response, json_response, Body};
use crate::stream::{SubresourceHandler, SubresourceRequest};
use crate::{obj, Error, Result};

/// The issuer kube-apiserver is usually configured with (kubeadm's default).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest's lifetime when it names none (Kubernetes: one hour).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest lifetime a TokenRequest may ask for (Kubernetes: ten minutes).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// The longest lifetime a token gets (longer requests are cut to it).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The group of every ServiceAccount.
pub const SERVICEACCOUNTS_GROUP: &str = "system:serviceaccounts";
const USER_PREFIX: &str = "system:serviceaccount:";

/// Configuration of ServiceAccount tokens.
#[derive(Debug, Clone)]
pub struct ServiceAccountConfig {
    /// The `iss` of every token (`--service-account-issuer`).
    pub issuer: String,
    /// The audiences the API server accepts (`--api-audiences`); the default audiences of
    /// a TokenRequest. Defaults to `[issuer]`.
    pub api_audiences: Vec<String>,
    /// The longest lifetime a TokenRequest gets.
    pub max_lifetime: Duration,
}

impl Default for ServiceAccountConfig {
    fn default() -> Self {
        ServiceAccountConfig {
            issuer: DEFAULT_ISSUER.into(),
            api_audiences: vec![DEFAULT_ISSUER.into()],
            max_lifetime: MAX_TOKEN_LIFETIME,
        }
    }
}

/// A name and uid, as the `kubernetes.io` claim names objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// Why a token is not valid.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("not a token of this issuer")]
    NotOurs,
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("the token's {kind} {namespace}/{name} no longer exists")]
    BoundObjectGone {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("the token's {kind} {namespace}/{name} has a different uid (it was recreated)")]
    BoundObjectRecreated {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("the token's {kind} {namespace}/{name} is being deleted")]
    BoundObjectDeleting {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("reading the token's bound objects")]
    Store(#[source] h8s_store::Error),
}

/// The server's ServiceAccount token key and its issuer settings.
pub struct ServiceAccountTokens {
    cfg: ServiceAccountConfig,
    kid: String,
    enc: EncodingKey,
    dec: DecodingKey,
    /// The public key as a JWK (for `/openid/v1/jwks`).
    jwk: Value,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("issuer", &self.cfg.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What to mint a token for.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    /// Empty: the API server's audiences.
    pub audiences: Vec<String>,
    pub issued_at: SystemTime,
    pub lifetime: Duration,
}

impl ServiceAccountTokens {
    /// Loads the signing key from `key_path` (a PKCS#8 PEM P-256 key), creating it (mode
    /// 0600) when missing.
    pub fn ensure(key_path: &Path, cfg: ServiceAccountConfig) -> Result<Self> {
        let pem = match crate::pki::read(key_path)? {
            Some(p) => p,
            None => {
                let k = rcgen::KeyPair::generate()
                    .map_err(|e| Error::Pki(format!("service account key: {e}")))?;
                let p = k.serialize_pem();
                crate::pki::write_private(key_path, &p)?;
                p
            }
        };
        Self::from_pem(&pem, cfg)
    }

    /// From a PKCS#8 PEM P-256 private key.
    pub fn from_pem(pem: &str, mut cfg: ServiceAccountConfig) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| Error::Pki(format!("service account key: {e}"));
        let k = rcgen::KeyPair::from_pem(pem).map_err(|e| bad(&e))?;
        if !k.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(bad(&"not an ECDSA P-256 key"));
        }
        let raw = k.public_key_raw();
        // An uncompressed point: 0x04 ‖ X ‖ Y.
        if raw.len() != 65 || raw[0] != 4 {
            return Err(bad(&"unexpected public key encoding"));
        }
        let (x, y) = (b64url(&raw[1..33]), b64url(&raw[33..]));
        // As kube-apiserver: the key id is the hash of the public key's DER.
        use rcgen::PublicKeyData;
        let kid = b64url(
            ring::digest::digest(&ring::digest::SHA256, &k.subject_public_key_info()).as_ref(),
        );
        let enc = EncodingKey::from_ec_der(&k.serialize_der());
        let dec = DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(&e))?;
        if cfg.api_audiences.is_empty() {
            cfg.api_audiences = vec![cfg.issuer.clone()];
        }
        let jwk = json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": x, "y": y});
        Ok(ServiceAccountTokens {
            cfg,
            kid,
            enc,
            dec,
            jwk,
        })
    }

    pub fn config(&self) -> &ServiceAccountConfig {
        &self.cfg
    }

    /// The public key set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.cfg.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.cfg.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// Signs a token for `spec`.
    pub fn mint(&self, spec: &TokenSpec) -> Result<(String, Claims)> {
        let iat = unix(spec.issued_at);
        let claims = Claims {
            iss: self.cfg.issuer.clone(),
            sub: format!(
                "{USER_PREFIX}{}:{}",
                spec.namespace, spec.service_account.name
            ),
            aud: if spec.audiences.is_empty() {
                self.cfg.api_audiences.clone()
            } else {
                spec.audiences.clone()
            },
            exp: iat + spec.lifetime.as_secs() as i64,
            iat,
            nbf: iat,
            jti: crate::util::new_uid(),
            kubernetes: KubernetesClaim {
                namespace: spec.namespace.clone(),
                serviceaccount: spec.service_account.clone(),
                pod: spec.pod.clone(),
                secret: spec.secret.clone(),
                node: spec.node.clone(),
            },
        };
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let tok = jsonwebtoken::encode(&h, &claims, &self.enc)
            .map_err(|e| Error::Pki(format!("signing a token: {e}")))?;
        Ok((tok, claims))
    }

    /// Whether `token` claims to be one of ours (a JWT whose `iss` is our issuer), without
    /// checking anything: other JWTs (Keystone, OIDC) are left to other authenticators.
    pub fn claims_ours(&self, token: &str) -> bool {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
            return false;
        };
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        serde_json::from_slice::<Iss>(&bytes)
            .ok()
            .and_then(|i| i.iss)
            .is_some_and(|i| i == self.cfg.issuer)
    }

    /// Checks the signature, issuer, times and that the token is for one of `audiences`
    /// (empty: the API server's). Does not look at the bound objects.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, TokenError> {
        if !self.claims_ours(token) {
            return Err(TokenError::NotOurs);
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = 0;
        v.validate_nbf = true;
        v.set_issuer(&[&self.cfg.issuer]);
        let auds = if audiences.is_empty() {
            &self.cfg.api_audiences
        } else {
            audiences
        };
        v.set_audience(auds);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        jsonwebtoken::decode::<Claims>(token, &self.dec, &v)
            .map(|d| d.claims)
            .map_err(TokenError::Invalid)
    }
}

/// The OIDC discovery documents of the issuer, as kube-apiserver serves them:
/// `/.well-known/openid-configuration` and `/openid/v1/jwks`.
pub(crate) fn discovery(tokens: &ServiceAccountTokens, path: &str) -> Option<Response<Body>> {
    let (doc, ct) = match path {
        "/.well-known/openid-configuration" => (tokens.openid_configuration(), "application/json"),
        "/openid/v1/jwks" => (tokens.jwks(), "application/jwk-set+json"),
        _ => return None,
    };
    let mut r = json_response(200, &doc);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    Some(r)
}

/// The user a ServiceAccount token's claims name.
pub fn user_of(c: &Claims) -> UserInfo {
    let k = &c.kubernetes;
    let mut extra = HashMap::new();
    extra.insert(
        "authentication.kubernetes.io/credential-id".to_string(),
        vec![format!("JTI={}", c.jti)],
    );
    if let Some(p) = &k.pod {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![p.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![p.uid.clone()],
        );
    }
    if let Some(n) = &k.node {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![n.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            vec![n.uid.clone()],
        );
    }
    UserInfo {
        username: format!("{USER_PREFIX}{}:{}", k.namespace, k.serviceaccount.name),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            SERVICEACCOUNTS_GROUP.into(),
            format!("{SERVICEACCOUNTS_GROUP}:{}", k.namespace),
            AUTHENTICATED_GROUP.into(),
        ],
        extra,
    }
}

fn core(plural: &str) -> &'static h8s_types::Resource {
    h8s_types::resources::find("", "v1", plural).expect("core resource in the table")
}

/// Reads a core object through the store.
async fn read_core(
    store: &dyn h8s_store::Store,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<Value>, h8s_store::Error> {
    let key = obj::key(core(plural), ns, name);
    Ok(match store.get(&key).await? {
        Some(kv) => obj::decode(&kv).ok(),
        None => None,
    })
}

/// Authenticates ServiceAccount tokens: signature, issuer, audience, times, and that the
/// ServiceAccount and every bound object still exist with the uids in the token.
pub struct ServiceAccountAuthenticator {
    tokens: Arc<ServiceAccountTokens>,
    store: Arc<dyn h8s_store::Store>,
}

impl ServiceAccountAuthenticator {
    pub fn new(tokens: Arc<ServiceAccountTokens>, store: Arc<dyn h8s_store::Store>) -> Self {
        ServiceAccountAuthenticator { tokens, store }
    }

    /// Validates `token` for `audiences` (empty: the API server's) and returns its user.
    pub async fn validate(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<UserInfo, TokenError> {
        let c = self.tokens.verify(token, audiences)?;
        let k = &c.kubernetes;
        let ns = k.namespace.as_str();
        let checks: [(&'static str, &str, Option<&str>, Option<&ObjectRef>); 4] = [
            (
                "ServiceAccount",
                "serviceaccounts",
                Some(ns),
                Some(&k.serviceaccount),
            ),
            ("Pod", "pods", Some(ns), k.pod.as_ref()),
            ("Secret", "secrets", Some(ns), k.secret.as_ref()),
            ("Node", "nodes", None, k.node.as_ref()),
        ];
        for (kind, plural, ons, r) in checks {
            let Some(r) = r else { continue };
            let e = |f: fn(&'static str, String, String) -> TokenError| {
                f(kind, ons.unwrap_or("").to_string(), r.name.clone())
            };
            let o = read_core(self.store.as_ref(), plural, ons, &r.name)
                .await
                .map_err(TokenError::Store)?
                .ok_or_else(|| {
                    e(|kind, namespace, name| TokenError::BoundObjectGone {
                        kind,
                        namespace,
                        name,
                    })
                })?;
            if obj::uid(&o) != r.uid {
                return Err(e(|kind, namespace, name| {
                    TokenError::BoundObjectRecreated {
                        kind,
                        namespace,
                        name,
                    }
                }));
            }
            // A terminating pod keeps its token until it is gone (its containers still
            // run); a ServiceAccount or Secret being deleted revokes it at once.
            if kind != "Pod" && obj::is_deleting(&o) {
                return Err(e(|kind, namespace, name| TokenError::BoundObjectDeleting {
                    kind,
                    namespace,
                    name,
                }));
            }
        }
        Ok(user_of(&c))
    }
}

impl Authenticator for ServiceAccountAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(async move {
            let Some(tok) = req.bearer() else {
                return Authn::NoOpinion;
            };
            if !self.tokens.claims_ours(tok) {
                return Authn::NoOpinion;
            }
            match self.validate(tok, &[]).await {
                Ok(u) => Authn::User(u),
                Err(e) => {
                    tracing::debug!(error = %e, "service account token rejected");
                    Authn::Denied
                }
            }
        })
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `serviceaccounts/token`: answers a TokenRequest with a new token for the
/// ServiceAccount, optionally bound to a Pod, Secret or Node.
pub struct TokenRequestHandler {
    tokens: Arc<ServiceAccountTokens>,
    store: Arc<dyn h8s_store::Store>,
}

impl TokenRequestHandler {
    pub fn new(tokens: Arc<ServiceAccountTokens>, store: Arc<dyn h8s_store::Store>) -> Self {
        TokenRequestHandler { tokens, store }
    }

    async fn answer(&self, req: &SubresourceRequest) -> std::result::Result<Value, ApiError> {
        if req.parts.method != http::Method::POST {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        // kubectl sends protobuf, other clients JSON or YAML.
        let ct = req
            .parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mut tr = crate::body::decode_object(crate::body::Media::parse(ct)?, &req.body)?;
        if !tr.is_object() {
            return Err(bad("the body must be a JSON object"));
        }
        match tr.get("apiVersion").and_then(Value::as_str) {
            None | Some("authentication.k8s.io/v1") => {}
            Some(av) => return Err(bad(format!("unsupported TokenRequest apiVersion {av:?}"))),
        }
        let spec = tr.get("spec").cloned().unwrap_or_else(|| json!({}));
        let lifetime = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME,
            Some(v) => {
                let s = v
                    .as_i64()
                    .ok_or_else(|| bad("spec.expirationSeconds must be an integer"))?;
                if s < MIN_TOKEN_LIFETIME.as_secs() as i64 {
                    return Err(invalid_tr(
                        &req.name,
                        "spec.expirationSeconds",
                        "may not specify a duration less than 10 minutes",
                    ));
                }
                if s > 1 << 32 {
                    return Err(invalid_tr(
                        &req.name,
                        "spec.expirationSeconds",
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
                Duration::from_secs(s as u64).min(self.tokens.cfg.max_lifetime)
            }
        };
        let audiences: Vec<String> = match spec.get("audiences") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("spec.audiences must be strings"))
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(_) => return Err(bad("spec.audiences must be a list")),
        };
        let ns = req.namespace.clone();
        let mut ts = TokenSpec {
            namespace: ns.clone(),
            service_account: ObjectRef {
                name: req.name.clone(),
                uid: obj::uid(&req.object).to_string(),
            },
            pod: None,
            secret: None,
            node: None,
            audiences,
            issued_at: SystemTime::now(),
            lifetime,
        };
        if obj::is_deleting(&req.object) {
            return Err(ApiError::forbidden(format!(
                "serviceaccounts \"{}\" is forbidden: the ServiceAccount is being deleted",
                req.name
            )));
        }
        if let Some(b) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (kind, av, name, uid) = (s("kind"), s("apiVersion"), s("name"), s("uid"));
            if !av.is_empty() && av != "v1" {
                return Err(invalid_tr(
                    &req.name,
                    "spec.boundObjectRef.apiVersion",
                    "must be v1",
                ));
            }
            if name.is_empty() {
                return Err(invalid_tr(
                    &req.name,
                    "spec.boundObjectRef.name",
                    "Required value",
                ));
            }
            let (plural, ons) = match kind.as_str() {
                "Pod" => ("pods", Some(ns.as_str())),
                "Secret" => ("secrets", Some(ns.as_str())),
                "Node" => ("nodes", None),
                _ => {
                    return Err(invalid_tr(
                        &req.name,
                        "spec.boundObjectRef.kind",
                        "must be one of Pod, Secret or Node",
                    ))
                }
            };
            let o = read_core(self.store.as_ref(), plural, ons, &name)
                .await
                .map_err(|e| crate::error::from_store(e, &subject(plural, &name)))?
                .ok_or_else(|| ApiError::not_found(&subject(plural, &name)))?;
            let have = obj::uid(&o).to_string();
            if !uid.is_empty() && uid != have {
                return Err(ApiError::conflict(
                    &subject(plural, &name),
                    &format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
            let r = Some(ObjectRef { name, uid: have });
            match plural {
                "pods" => ts.pod = r,
                "secrets" => ts.secret = r,
                _ => ts.node = r,
            }
        }
        let (token, claims) = self
            .tokens
            .mint(&ts)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let m = tr.as_object_mut().expect("checked above");
        m.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
        m.insert("kind".into(), json!("TokenRequest"));
        m.insert(
            "metadata".into(),
            json!({"name": req.name, "namespace": ns, "creationTimestamp": crate::util::rfc3339(claims.iat)}),
        );
        let mut spec = spec;
        spec["audiences"] = json!(claims.aud);
        spec["expirationSeconds"] = json!(claims.exp - claims.iat);
        m.insert("spec".into(), spec);
        m.insert(
            "status".into(),
            json!({"token": token, "expirationTimestamp": crate::util::rfc3339(claims.exp)}),
        );
        Ok(tr)
    }
}

fn subject<'a>(plural: &'a str, name: &'a str) -> Subject<'a> {
    Subject {
        group: "",
        resource: plural,
        name,
    }
}

fn invalid_tr(name: &str, field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        vec![crate::error::Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("{field}: Invalid value: {msg}"),
            field: field.into(),
        }],
    )
}

impl SubresourceHandler for TokenRequestHandler {
    fn handle(&self, req: SubresourceRequest) -> BoxFuture<'static, Response<Body>> {
        let me = TokenRequestHandler {
            tokens: self.tokens.clone(),
            store: self.store.clone(),
        };
        Box::pin(async move {
            let span = tracing::debug_span!("token request", namespace = %req.namespace, serviceaccount = %req.name);
            let _e = span.enter();
            match me.answer(&req).await {
                Ok(v) => json_response(201, &v),
                Err(e) => error_response(&e),
            }
        })
    }
}

/// `authentication.k8s.io/v1 TokenReview`: whether a token authenticates, and as whom.
/// With `spec.audiences`, only ServiceAccount tokens for one of them pass; without, the
/// whole authentication chain is asked (as kube-apiserver does).
pub struct TokenReviewer {
    chain: Arc<dyn Authenticator>,
    sa: Arc<ServiceAccountAuthenticator>,
}

impl crate::seams::Reviewer for TokenReviewer {
    fn review<'a>(
        &'a self,
        _user: &'a UserInfo,
        review: Value,
    ) -> BoxFuture<'a, std::result::Result<Value, ApiError>> {
        Box::pin(TokenReviewer::review(self, review))
    }
}

impl TokenReviewer {
    pub fn new(chain: Arc<dyn Authenticator>, sa: Arc<ServiceAccountAuthenticator>) -> Self {
        TokenReviewer { chain, sa }
    }

    /// Fills `review.status` from `review.spec`.
    pub async fn review(&self, mut review: Value) -> std::result::Result<Value, ApiError> {
        let token = obj::at(&review, "spec.token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let audiences: Vec<String> = obj::at(&review, "spec.audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let fail = |msg: &str| json!({"authenticated": false, "error": msg, "user": {}});
        let status = if token.is_empty() {
            fail("no token was given")
        } else if !audiences.is_empty() {
            match self.sa.validate(&token, &audiences).await {
                Ok(u) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": audiences})
                }
                Err(e) => fail(&e.to_string()),
            }
        } else {
            let mut h = http::HeaderMap::new();
            match http::HeaderValue::from_str(&format!("Bearer {token}")) {
                Err(_) => fail("the token is not a valid header value"),
                Ok(v) => {
                    h.insert(http::header::AUTHORIZATION, v);
                    let req = RequestInfo {
                        method: &http::Method::POST,
                        path: "/apis/authentication.k8s.io/v1/tokenreviews",
                        headers: &h,
                        client_certs: &[],
                        remote_addr: None,
                    };
                    match self.chain.authenticate(&req).await {
                        Authn::User(u) => json!({
                            "authenticated": true,
                            "user": u.to_json(),
                            "audiences": self.sa.tokens.cfg.api_audiences,
                        }),
                        _ => fail("invalid bearer token"),
                    }
                }
            }
        };
        if let Some(m) = review.as_object_mut() {
            m.insert("status".into(), status);
        }
        Ok(review)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> ServiceAccountTokens {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sa.key");
        let a = ServiceAccountTokens::ensure(&p, ServiceAccountConfig::default()).unwrap();
        let b = ServiceAccountTokens::ensure(&p, ServiceAccountConfig::default()).unwrap();
        assert_eq!(a.kid, b.kid, "the key is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        a
    }

    fn spec(lifetime: Duration, at: SystemTime) -> TokenSpec {
        TokenSpec {
            namespace: "ns1".into(),
            service_account: ObjectRef {
                name: "sa1".into(),
                uid: "u-sa".into(),
            },
            pod: Some(ObjectRef {
                name: "p".into(),
                uid: "u-p".into(),
            }),
            secret: None,
            node: None,
            audiences: vec![],
            issued_at: at,
            lifetime,
        }
    }

    #[test]
    fn mint_and_verify() {
        let t = tokens();
        let (tok, c) = t
            .mint(&spec(DEFAULT_TOKEN_LIFETIME, SystemTime::now()))
            .unwrap();
        assert_eq!(c.exp - c.iat, 3600);
        let got = t.verify(&tok, &[]).unwrap();
        assert_eq!(got, c);
        assert_eq!(got.sub, "system:serviceaccount:ns1:sa1");
        let u = user_of(&got);
        assert_eq!(u.username, "system:serviceaccount:ns1:sa1");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        assert_eq!(u.uid, "u-sa");
        assert_eq!(u.extra["authentication.kubernetes.io/pod-name"], ["p"]);
        // The header names our key; the payload has the Kubernetes claim layout.
        let h = jsonwebtoken::decode_header(&tok).unwrap();
        assert_eq!(h.kid.as_deref(), Some(t.kid.as_str()));
        let payload: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["kubernetes.io"]["pod"]["uid"], "u-p");
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["name"], "sa1");
        assert_eq!(payload["aud"], json!([DEFAULT_ISSUER]));
        assert_eq!(t.jwks()["keys"][0]["kid"], json!(t.kid));
    }

    #[test]
    fn rejects_expired_forged_foreign_and_wrong_audience() {
        let t = tokens();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let (expired, _) = t.mint(&spec(DEFAULT_TOKEN_LIFETIME, old)).unwrap();
        assert!(matches!(
            t.verify(&expired, &[]),
            Err(TokenError::Invalid(_))
        ));
        let future = SystemTime::now() + Duration::from_secs(600);
        let (early, _) = t.mint(&spec(DEFAULT_TOKEN_LIFETIME, future)).unwrap();
        assert!(matches!(t.verify(&early, &[]), Err(TokenError::Invalid(_))));

        // Signed by another key with our issuer: a forgery.
        let other = tokens();
        let (forged, _) = other
            .mint(&spec(DEFAULT_TOKEN_LIFETIME, SystemTime::now()))
            .unwrap();
        assert!(t.claims_ours(&forged));
        assert!(matches!(
            t.verify(&forged, &[]),
            Err(TokenError::Invalid(_))
        ));
        // A payload edited after signing.
        let (good, _) = t
            .mint(&spec(DEFAULT_TOKEN_LIFETIME, SystemTime::now()))
            .unwrap();
        let mut p: Vec<&str> = good.split('.').collect();
        let mut claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p[1])
                .unwrap(),
        )
        .unwrap();
        claims["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        let edited = b64url(&serde_json::to_vec(&claims).unwrap());
        p[1] = &edited;
        assert!(matches!(
            t.verify(&p.join("."), &[]),
            Err(TokenError::Invalid(_))
        ));

        // Another issuer's JWT is not ours (the next authenticator may know it).
        let foreign = ServiceAccountTokens::from_pem(
            &rcgen::KeyPair::generate().unwrap().serialize_pem(),
            ServiceAccountConfig {
                issuer: "https://keystone.example".into(),
                api_audiences: vec![],
                max_lifetime: MAX_TOKEN_LIFETIME,
            },
        )
        .unwrap();
        let (ft, _) = foreign
            .mint(&spec(DEFAULT_TOKEN_LIFETIME, SystemTime::now()))
            .unwrap();
        assert!(matches!(t.verify(&ft, &[]), Err(TokenError::NotOurs)));
        assert!(!t.claims_ours("not-a-jwt"));

        // Audiences.
        let mut s = spec(DEFAULT_TOKEN_LIFETIME, SystemTime::now());
        s.audiences = vec!["vault".into()];
        let (vt, _) = t.mint(&s).unwrap();
        assert!(t.verify(&vt, &[]).is_err(), "not for the API server");
        assert!(t.verify(&vt, &["vault".to_string()]).is_ok());
    }
}
