//! Encryption at rest: a [`Store`] wrapper that encrypts the values of chosen resources
//! (Secrets, typically) before they reach the backend, and decrypts them on the way back.
//!
//! The model is kube-apiserver's `EncryptionConfiguration` with the `aesgcm` and `identity`
//! providers: values are stored as `k8s:enc:aesgcm:v1:<key name>:<nonce><ciphertext+tag>`,
//! AES-256-GCM with a random 96-bit nonce and the storage key as associated data (so a value
//! copied to another key does not decrypt). The first key of the list encrypts; every listed
//! key decrypts; a value without the prefix is read as plain text when `identity` is listed —
//! which is how existing data is migrated, and how keys are rotated: put the new key first,
//! restart, rewrite every object (`h8s store reencrypt`, or `kubectl get secrets -A -o json |
//! kubectl replace -f -`), then drop the old key.
//!
//! Keys, names and the value layout are checked when the configuration is built; a value that
//! names an unknown key or fails authentication is an [`Error::Corrupt`], never returned as
//! plain bytes.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::{
    CheckReport, Error, Event, KeyValue, ListOptions, ListResult, Notice, NoticeStream, Result,
    Revision, Store, WatchStream,
};

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// kube-apiserver's `apiserver.config.k8s.io/v1 EncryptionConfiguration`, the subset h8s
/// implements (`aesgcm` and `identity` providers). Parse it from the file the operator names.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub resources: Vec<ResourceConfig>,
}

/// One `resources:` entry: which resources, and the providers in order.
#[derive(Clone, Debug, Deserialize)]
pub struct ResourceConfig {
    /// `secrets`, `configmaps`, `deployments.apps`…
    pub resources: Vec<String>,
    pub providers: Vec<ProviderConfig>,
}

/// One provider; exactly one field is set.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProviderConfig {
    pub aesgcm: Option<KeysConfig>,
    pub identity: Option<serde_json::Value>,
    pub aescbc: Option<KeysConfig>,
    pub secretbox: Option<KeysConfig>,
    pub kms: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct KeysConfig {
    pub keys: Vec<KeyConfig>,
}

/// A named key, its secret base64 encoded (32 bytes for AES-256).
#[derive(Clone, Deserialize)]
pub struct KeyConfig {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why an encryption configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "kind must be EncryptionConfiguration (apiVersion apiserver.config.k8s.io/v1), got {0:?}"
    )]
    Kind(String),
    #[error(
        "resource {0:?}: only plain resources (`secrets`) or `<resource>.<group>` are supported"
    )]
    Resource(String),
    #[error("resource {0:?} is listed twice")]
    Duplicate(String),
    #[error("{0}: the {1} provider is not supported by h8s (use aesgcm, identity)")]
    Unsupported(String, &'static str),
    #[error("{0}: a provider entry must set exactly one provider")]
    Provider(String),
    #[error("{0}: key {1:?}: the secret must be 32 bytes, base64 encoded")]
    Key(String, String),
    #[error("{0}: key name {1:?} must be non-empty, unique and contain no ':'")]
    KeyName(String, String),
    #[error("{0}: no providers")]
    Empty(String),
}

/// What one group of resources is stored as.
struct Rule {
    /// `/registry/<group>/<plural>/`.
    prefix: String,
    /// Keys in order; the first encrypts. Empty: written as plain text (identity first).
    keys: Vec<(String, LessSafeKey)>,
    /// Whether `identity` is the first provider (write plain text).
    write_plain: bool,
    /// Whether `identity` is listed (read values without the prefix as plain text).
    read_plain: bool,
}

/// Encrypts the configured resources' values; a cheap wrapper around any backend.
pub struct Encrypting {
    inner: Arc<dyn Store>,
    rules: Arc<Vec<Rule>>,
    rng: SystemRandom,
}

fn storage_prefix(resource: &str) -> Option<String> {
    let (plural, group) = match resource.split_once('.') {
        Some((p, g)) => (p, g),
        None => (resource, "core"),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (ok(plural) && ok(group) && plural != "*" && group != "*")
        .then(|| format!("/registry/{group}/{plural}/"))
}

impl Encrypting {
    /// Wraps `inner` with the rules of `config`.
    pub fn new(
        inner: Arc<dyn Store>,
        config: &EncryptionConfiguration,
    ) -> Result<Encrypting, ConfigError> {
        use base64::Engine as _;
        if (!config.kind.is_empty() && config.kind != "EncryptionConfiguration")
            || (!config.api_version.is_empty()
                && config.api_version != "apiserver.config.k8s.io/v1")
        {
            return Err(ConfigError::Kind(format!(
                "{} {}",
                config.api_version, config.kind
            )));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for rc in &config.resources {
            for res in &rc.resources {
                let prefix =
                    storage_prefix(res).ok_or_else(|| ConfigError::Resource(res.clone()))?;
                if rules.iter().any(|r| r.prefix == prefix) {
                    return Err(ConfigError::Duplicate(res.clone()));
                }
                if rc.providers.is_empty() {
                    return Err(ConfigError::Empty(res.clone()));
                }
                let mut rule = Rule {
                    prefix,
                    keys: Vec::new(),
                    write_plain: false,
                    read_plain: false,
                };
                for (i, p) in rc.providers.iter().enumerate() {
                    let set = [
                        p.aesgcm.is_some(),
                        p.identity.is_some(),
                        p.aescbc.is_some(),
                        p.secretbox.is_some(),
                        p.kms.is_some(),
                    ];
                    if set.iter().filter(|s| **s).count() != 1 {
                        return Err(ConfigError::Provider(res.clone()));
                    }
                    if p.aescbc.is_some() {
                        return Err(ConfigError::Unsupported(res.clone(), "aescbc"));
                    }
                    if p.secretbox.is_some() {
                        return Err(ConfigError::Unsupported(res.clone(), "secretbox"));
                    }
                    if p.kms.is_some() {
                        return Err(ConfigError::Unsupported(res.clone(), "kms"));
                    }
                    if p.identity.is_some() {
                        rule.read_plain = true;
                        rule.write_plain |= i == 0;
                        continue;
                    }
                    for k in &p.aesgcm.as_ref().expect("checked").keys {
                        if k.name.is_empty()
                            || k.name.contains(':')
                            || rule.keys.iter().any(|(n, _)| n == &k.name)
                        {
                            return Err(ConfigError::KeyName(res.clone(), k.name.clone()));
                        }
                        let bad = || ConfigError::Key(res.clone(), k.name.clone());
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(k.secret.trim())
                            .map_err(|_| bad())?;
                        if raw.len() != 32 {
                            return Err(bad());
                        }
                        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| bad())?;
                        rule.keys.push((k.name.clone(), LessSafeKey::new(key)));
                    }
                }
                rules.push(rule);
            }
        }
        Ok(Encrypting {
            inner,
            rules: Arc::new(rules),
            rng: SystemRandom::new(),
        })
    }

    fn rule(rules: &[Rule], key: &str) -> Option<usize> {
        rules.iter().position(|r| key.starts_with(&r.prefix))
    }

    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes> {
        let Some(i) = Self::rule(&self.rules, key) else {
            return Ok(value);
        };
        let rule = &self.rules[i];
        if rule.write_plain || rule.keys.is_empty() {
            return Ok(value);
        }
        let (name, k) = &rule.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Unavailable("no randomness for a nonce".into()))?;
        let mut out =
            Vec::with_capacity(PREFIX.len() + name.len() + 1 + NONCE_LEN + value.len() + 16);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        let body_at = out.len();
        out.extend_from_slice(&value);
        let mut body = out.split_off(body_at);
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key.as_bytes()),
            &mut body,
        )
        .map_err(|_| Error::Unavailable("encryption failed".into()))?;
        out.extend_from_slice(&body);
        Ok(Bytes::from(out))
    }

    fn open_value(rules: &[Rule], key: &str, value: Bytes) -> Result<Bytes> {
        let Some(i) = Self::rule(rules, key) else {
            return Ok(value);
        };
        let rule = &rules[i];
        let Some(rest) = value.strip_prefix(PREFIX) else {
            if rule.read_plain {
                return Ok(value);
            }
            return Err(Error::Corrupt(format!(
                "{key}: stored in plain text but the encryption configuration does not list the identity provider"
            )));
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| Error::Corrupt(format!("{key}: malformed encrypted value")))?;
        let name = std::str::from_utf8(&rest[..colon]).unwrap_or("");
        let Some((_, k)) = rule.keys.iter().find(|(n, _)| n == name) else {
            return Err(Error::Corrupt(format!(
                "{key}: encrypted with key {name:?}, which the encryption configuration does not list"
            )));
        };
        let sealed = &rest[colon + 1..];
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Error::Corrupt(format!("{key}: encrypted value too short")));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut body = sealed[NONCE_LEN..].to_vec();
        let plain = k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| {
                Error::Corrupt(format!(
                    "{key}: value fails authentication with key {name:?}"
                ))
            })?;
        let n = plain.len();
        body.truncate(n);
        Ok(Bytes::from(body))
    }

    fn open_kv(rules: &[Rule], mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = Self::open_value(rules, &kv.key, kv.value)?;
        Ok(kv)
    }

    fn open_event(rules: &[Rule], e: Event) -> Result<Event> {
        Ok(match e {
            Event::Put { kv, prev } => Event::Put {
                kv: Self::open_kv(rules, kv)?,
                prev: prev.map(|p| Self::open_kv(rules, p)).transpose()?,
            },
            Event::Delete { prev, revision } => Event::Delete {
                prev: Self::open_kv(rules, prev)?,
                revision,
            },
        })
    }

    /// Whether a stored value is encrypted with the current write key (for re-encryption).
    pub fn is_current(&self, key: &str, stored: &[u8]) -> bool {
        match Self::rule(&self.rules, key) {
            None => true,
            Some(i) => {
                let rule = &self.rules[i];
                if rule.write_plain || rule.keys.is_empty() {
                    return !stored.starts_with(PREFIX);
                }
                let mut want = PREFIX.to_vec();
                want.extend_from_slice(rule.keys[0].0.as_bytes());
                want.push(b':');
                stored.starts_with(&want)
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for Encrypting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| Self::open_kv(&self.rules, kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let mut r = self.inner.list(prefix, opts).await?;
        r.items = std::mem::take(&mut r.items)
            .into_iter()
            .map(|kv| Self::open_kv(&self.rules, kv))
            .collect::<Result<_>>()?;
        Ok(r)
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.inner.count(prefix).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let mut kv = self
            .inner
            .create(key, self.seal(key, value.clone())?)
            .await?;
        kv.value = value;
        Ok(kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let mut kv = self
            .inner
            .update(key, self.seal(key, value.clone())?, expected)
            .await?;
        kv.value = value;
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let (kv, rev) = self.inner.delete(key, expected).await?;
        Ok((Self::open_kv(&self.rules, kv)?, rev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let rules = self.rules.clone();
        let s = self.inner.watch(prefix, after).await?;
        Ok(s.map(move |e| e.and_then(|e| Self::open_event(&rules, e)))
            .boxed())
    }

    async fn watch_progress(&self, prefix: &str, after: Revision) -> Result<NoticeStream> {
        let rules = self.rules.clone();
        let s = self.inner.watch_progress(prefix, after).await?;
        Ok(s.map(move |n| match n {
            Ok(Notice::Event(e)) => Self::open_event(&rules, e).map(Notice::Event),
            other => other,
        })
        .boxed())
    }

    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn check(&self) -> Result<CheckReport> {
        self.inner.check().await
    }

    async fn load_snapshot(&self, items: Vec<KeyValue>, revision: Revision) -> Result<()> {
        // Snapshots hold stored bytes (encrypted as they were); load them unchanged.
        self.inner.load_snapshot(items, revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Embedded;
    use base64::Engine as _;

    fn key(b: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    }

    fn config(yaml_keys: &[(&str, String)], identity_first: bool) -> EncryptionConfiguration {
        let mut providers = vec![ProviderConfig {
            aesgcm: Some(KeysConfig {
                keys: yaml_keys
                    .iter()
                    .map(|(n, s)| KeyConfig {
                        name: n.to_string(),
                        secret: s.clone(),
                    })
                    .collect(),
            }),
            ..Default::default()
        }];
        let identity = ProviderConfig {
            identity: Some(serde_json::json!({})),
            ..Default::default()
        };
        if identity_first {
            providers.insert(0, identity);
        } else {
            providers.push(identity);
        }
        EncryptionConfiguration {
            api_version: "apiserver.config.k8s.io/v1".into(),
            kind: "EncryptionConfiguration".into(),
            resources: vec![ResourceConfig {
                resources: vec!["secrets".into()],
                providers,
            }],
        }
    }

    fn open_embedded(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(Embedded::open(&dir.join("s.redb")).unwrap())
    }

    const SECRET: &str = "/registry/core/secrets/ns/s";

    #[tokio::test]
    async fn secrets_are_encrypted_in_the_backend_and_read_back_plain() {
        let d = tempfile::tempdir().unwrap();
        let raw = open_embedded(d.path());
        let enc = Encrypting::new(raw.clone(), &config(&[("k1", key(1))], false)).unwrap();
        // A first write, so the watch below can start after a real revision (0 means "now").
        raw.create("/registry/core/namespaces/ns", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let plain = Bytes::from_static(b"{\"data\":{\"password\":\"aHVudGVyMg==\"}}");
        let kv = enc.create(SECRET, plain.clone()).await.unwrap();
        assert_eq!(kv.value, plain);
        let stored = raw.get(SECRET).await.unwrap().unwrap().value;
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k1:"), "{stored:?}");
        assert!(!stored.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(enc.get(SECRET).await.unwrap().unwrap().value, plain);
        // Other resources are untouched.
        enc.create("/registry/core/configmaps/ns/c", plain.clone())
            .await
            .unwrap();
        assert_eq!(
            raw.get("/registry/core/configmaps/ns/c")
                .await
                .unwrap()
                .unwrap()
                .value,
            plain
        );
        // Lists and watches decrypt too.
        let l = enc
            .list("/registry/core/secrets/", ListOptions::default())
            .await
            .unwrap();
        assert_eq!(l.items[0].value, plain);
        let mut w = enc
            .watch("/registry/core/secrets/", kv.mod_revision - 1)
            .await
            .unwrap();
        match w.next().await.unwrap().unwrap() {
            Event::Put { kv, .. } => assert_eq!(kv.value, plain),
            e => panic!("{e:?}"),
        }
        // A value moved to another key does not decrypt (the key is associated data).
        raw.create("/registry/core/secrets/ns/t", stored.clone())
            .await
            .unwrap();
        assert!(matches!(
            enc.get("/registry/core/secrets/ns/t").await,
            Err(Error::Corrupt(_))
        ));
        // So does a tampered one.
        let mut bad = stored.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        raw.update(SECRET, Bytes::from(bad), kv.mod_revision)
            .await
            .unwrap();
        assert!(matches!(enc.get(SECRET).await, Err(Error::Corrupt(_))));
    }

    #[tokio::test]
    async fn rotation_migration_and_wrong_keys() {
        let d = tempfile::tempdir().unwrap();
        let raw = open_embedded(d.path());
        // Plain text written before encryption was turned on, readable with identity listed.
        raw.create(SECRET, Bytes::from_static(b"old"))
            .await
            .unwrap();
        let old = Encrypting::new(raw.clone(), &config(&[("k1", key(1))], false)).unwrap();
        assert_eq!(
            old.get(SECRET).await.unwrap().unwrap().value,
            Bytes::from_static(b"old")
        );
        assert!(!old.is_current(SECRET, b"old"));
        let kv = old.get(SECRET).await.unwrap().unwrap();
        old.update(SECRET, kv.value, kv.mod_revision).await.unwrap();
        // Rotation: k2 first, k1 still listed → old values read, new ones written with k2.
        let new = Encrypting::new(
            raw.clone(),
            &config(&[("k2", key(2)), ("k1", key(1))], false),
        )
        .unwrap();
        let kv = new.get(SECRET).await.unwrap().unwrap();
        assert_eq!(kv.value, Bytes::from_static(b"old"));
        let stored = raw.get(SECRET).await.unwrap().unwrap().value;
        assert!(!new.is_current(SECRET, &stored));
        new.update(SECRET, kv.value, kv.mod_revision).await.unwrap();
        let stored = raw.get(SECRET).await.unwrap().unwrap().value;
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k2:") && new.is_current(SECRET, &stored));
        // Without k2 the value is refused, never returned as bytes.
        let only_k1 = Encrypting::new(raw.clone(), &config(&[("k1", key(1))], false)).unwrap();
        assert!(matches!(only_k1.get(SECRET).await, Err(Error::Corrupt(_))));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let raw = open_embedded(d.path());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(matches!(
            Encrypting::new(raw.clone(), &config(&[("k", short)], false)),
            Err(ConfigError::Key(..))
        ));
        assert!(matches!(
            Encrypting::new(raw.clone(), &config(&[("a:b", key(1))], false)),
            Err(ConfigError::KeyName(..))
        ));
        let mut c = config(&[("k", key(1))], false);
        c.resources[0].resources = vec!["*.*".into()];
        assert!(matches!(
            Encrypting::new(raw.clone(), &c),
            Err(ConfigError::Resource(_))
        ));
        let mut c = config(&[("k", key(1))], false);
        c.resources[0].providers[0] = ProviderConfig {
            aescbc: Some(KeysConfig { keys: vec![] }),
            ..Default::default()
        };
        assert!(matches!(
            Encrypting::new(raw, &c),
            Err(ConfigError::Unsupported(..))
        ));
    }
}
