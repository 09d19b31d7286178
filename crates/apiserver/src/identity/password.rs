//! Passwords: Argon2id hashes in a store key no API read serves
//! (`/registry/identity.h8s.io/passwords/<user>`), bound to the User's uid so that a
//! user deleted and created again under the same name does not inherit the old
//! password. Each change gets a new credential id; tokens carry the id they were
//! issued under, so a password change ends them at once.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::response::{error_response, json_response, Body};
use crate::stream::{SubresourceHandler, SubresourceRequest};

/// Where password records live: outside every served resource's prefix.
pub const PREFIX: &str = "/registry/identity.h8s.io/passwords/";
/// Shortest and longest accepted password (bytes).
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 256;

/// One user's password record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The User's `metadata.uid` when the password was set.
    pub user_uid: String,
    /// PHC string of the Argon2id hash.
    pub hash: String,
    /// New on every change; tokens remember it.
    pub credential_id: String,
    /// RFC 3339.
    pub changed_at: String,
}

pub fn key(user: &str) -> String {
    format!("{PREFIX}{user}")
}

/// Checks the length rules.
pub fn check_policy(pw: &str) -> Result<(), String> {
    if pw.len() < MIN_LEN {
        return Err(format!("the password must have at least {MIN_LEN} bytes"));
    }
    if pw.len() > MAX_LEN {
        return Err(format!("the password must have at most {MAX_LEN} bytes"));
    }
    Ok(())
}

/// The Argon2id hash of `pw` with a random salt (CPU-heavy: call off the runtime).
pub fn hash(pw: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&crate::util::random_bytes::<16>())
        .map_err(|e| ApiError::internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("password hash: {e}")))
}

/// A hash of nothing anyone knows, verified against when the user does not exist, so
/// that the answer takes as long either way.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash("decoy password nobody has").unwrap_or_default());

/// Verifies `pw` against a PHC hash (CPU-heavy: call off the runtime). `None` verifies
/// against the decoy and fails.
pub fn verify(pw: &str, phc: Option<&str>) -> bool {
    let target = phc.unwrap_or(DECOY.as_str());
    let ok = PasswordHash::new(target)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    ok && phc.is_some()
}

/// Reads a user's record.
pub async fn read(store: &dyn h8s_store::Store, user: &str) -> Result<Option<Record>, ApiError> {
    let kv = store
        .get(&key(user))
        .await
        .map_err(|e| crate::error::from_store(e, &crate::error::Subject::default()))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Hashes and stores a new password for the user with `uid`.
pub async fn set(
    store: &dyn h8s_store::Store,
    user: &str,
    uid: &str,
    pw: String,
) -> Result<Record, ApiError> {
    check_policy(&pw).map_err(ApiError::bad_request)?;
    let hashed = tokio::task::spawn_blocking(move || hash(&pw))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let rec = Record {
        user_uid: uid.to_string(),
        hash: hashed,
        credential_id: hex(&crate::util::random_bytes::<16>()),
        changed_at: crate::util::now_rfc3339(),
    };
    let value =
        Bytes::from(serde_json::to_vec(&rec).map_err(|e| ApiError::internal(e.to_string()))?);
    let k = key(user);
    let subject = crate::error::Subject::default();
    for _ in 0..5 {
        let cur = store
            .get(&k)
            .await
            .map_err(|e| crate::error::from_store(e, &subject))?;
        let r = match cur {
            Some(kv) => store.update(&k, value.clone(), kv.mod_revision).await,
            None => store.create(&k, value.clone()).await,
        };
        match r {
            Ok(_) => return Ok(rec),
            Err(h8s_store::Error::Conflict { .. } | h8s_store::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(crate::error::from_store(e, &subject)),
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        "the password was changed concurrently; try again",
    ))
}

/// Removes a user's record (user deleted).
pub async fn remove(store: &dyn h8s_store::Store, user: &str) {
    let _ = store.delete(&key(user), None).await;
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `POST|PUT /apis/tenancy.h8s.io/v1/users/<name>/password` with
/// `{"apiVersion": "tenancy.h8s.io/v1", "kind": "UserPassword", "password": "…"}`.
/// Authorization is the server's (verb `create`/`update` on `users/password`).
pub struct PasswordHandler {
    store: Arc<dyn h8s_store::Store>,
}

impl PasswordHandler {
    pub fn new(store: Arc<dyn h8s_store::Store>) -> Self {
        PasswordHandler { store }
    }
}

impl SubresourceHandler for PasswordHandler {
    fn handle(&self, req: SubresourceRequest) -> BoxFuture<'static, Response<Body>> {
        let store = self.store.clone();
        Box::pin(async move {
            match change(&*store, req).await {
                Ok(v) => json_response(201, &v),
                Err(e) => error_response(&e),
            }
        })
    }
}

async fn change(store: &dyn h8s_store::Store, req: SubresourceRequest) -> Result<Value, ApiError> {
    if !matches!(req.parts.method, http::Method::POST | http::Method::PUT) {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != h8s_types::tenancy::PASSWORD_KIND)
        || (!api_version.is_empty() && api_version != h8s_types::tenancy::API_VERSION)
    {
        return Err(ApiError::bad_request(format!(
            "the body of users/password must be a {} {}, not {api_version} {kind}",
            h8s_types::tenancy::API_VERSION,
            h8s_types::tenancy::PASSWORD_KIND
        )));
    }
    let Some(pw) = body.get("password").and_then(Value::as_str) else {
        let causes = vec![crate::error::Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "password".into(),
        }];
        return Err(ApiError::invalid(
            h8s_types::tenancy::PASSWORD_KIND,
            h8s_types::tenancy::GROUP,
            &req.name,
            causes,
        ));
    };
    let uid = crate::obj::uid(&req.object).to_string();
    let rec = set(store, &req.name, &uid, pw.to_string()).await?;
    Ok(json!({
        "apiVersion": h8s_types::tenancy::API_VERSION,
        "kind": h8s_types::tenancy::PASSWORD_KIND,
        "metadata": {"name": req.name},
        "status": {"changedAt": rec.changed_at},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse", Some(&h)));
        assert!(!verify("wrong horse", Some(&h)));
        assert!(!verify("decoy password nobody has", None));
        assert_ne!(h, hash("correct horse").unwrap(), "salted");
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(300)).is_err());
    }
}
