//! Tokens: 256 random bits, handed out once and stored only as their SHA-256 (a random
//! token needs no slow hash) under `/registry/identity.h8s.io/tokens/<hex>`, so they
//! survive restarts and work on every API server sharing the store.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Subject};

/// Where token records live: outside every served resource's prefix.
pub const PREFIX: &str = "/registry/identity.h8s.io/tokens/";
/// Every token starts with this, so the authenticator leaves other bearer tokens to
/// the rest of the chain without a store read.
pub const TOKEN_PREFIX: &str = "h8sks_";

/// What the store keeps about one token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub user: String,
    pub user_uid: String,
    /// The password credential the token descends from.
    pub credential_id: String,
    /// The project (tenant) scope, if scoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub methods: Vec<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    /// Keystone's audit ids: this token's, then the one it was made from.
    pub audit_ids: Vec<String>,
}

/// A fresh random token.
pub fn new_token() -> String {
    let b = crate::util::random_bytes::<32>();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// A short random audit id (Keystone's are 22 characters of URL-safe base64).
pub fn audit_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::util::random_bytes::<16>())
}

/// The store key of a token.
pub fn key(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    format!("{PREFIX}{}", super::password::hex(d.as_ref()))
}

fn store_err(e: h8s_store::Error) -> ApiError {
    crate::error::from_store(e, &Subject::default())
}

/// Stores a new token's record.
pub async fn put(store: &dyn h8s_store::Store, token: &str, rec: &Record) -> Result<(), ApiError> {
    let v = serde_json::to_vec(rec).map_err(|e| ApiError::internal(e.to_string()))?;
    store
        .create(&key(token), Bytes::from(v))
        .await
        .map(|_| ())
        .map_err(store_err)
}

/// The record of a token, if it is one of ours and not expired. Expired ones are
/// deleted on sight.
pub async fn get(
    store: &dyn h8s_store::Store,
    token: &str,
    now: i64,
) -> Result<Option<Record>, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let k = key(token);
    let Some(kv) = store.get(&k).await.map_err(store_err)? else {
        return Ok(None);
    };
    let Ok(rec) = serde_json::from_slice::<Record>(&kv.value) else {
        return Ok(None);
    };
    if rec.expires_at <= now {
        let _ = store.delete(&k, Some(kv.mod_revision)).await;
        return Ok(None);
    }
    Ok(Some(rec))
}

/// Revokes a token; true when it existed.
pub async fn revoke(store: &dyn h8s_store::Store, token: &str) -> bool {
    store.delete(&key(token), None).await.is_ok()
}
