//! Which credentials pulled each image onto this node (kubelet's ensure-secret-pulled-images,
//! KEP-2535): a pod may use a cached image without pulling only when it could have pulled
//! it — the image was pulled anonymously, or the pod holds the same pull secret (namespace,
//! name, uid) or a secret with the same credentials. Otherwise the image is pulled again
//! with the pod's own credentials (`IfNotPresent`; the registry decides) or refused
//! (`Never`). Images this agent never pulled (imported, preloaded) are not checked, as
//! kubelet's default `NeverVerifyPreloadedImages`.
//!
//! Records are kept by image id in `DATA_DIR/node/pulled-images.json` (written atomically),
//! so they survive agent restarts, as kubelet's do; records of images no longer in the store
//! are dropped at load, and each image keeps at most [`MAX_SECRETS`] secrets (the newest).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Most secrets remembered per image (the oldest go first).
pub(crate) const MAX_SECRETS: usize = 64;

/// A pull secret's coordinates and the hash of the credentials it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecretRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// sha256 of `registry host \0 user \0 password`.
    pub credential_hash: String,
}

/// Who pulled one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PullRecord {
    /// Pulled without credentials at least once: anyone may use it.
    #[serde(default)]
    pub anonymous: bool,
    #[serde(default)]
    pub secrets: Vec<SecretRecord>,
}

/// A pod's credentials for one image's registry: one per matching pull secret.
#[derive(Debug, Clone)]
pub(crate) struct PodCredential {
    pub secret: SecretRecord,
    pub credentials: h8s_runtime::image::Credentials,
}

/// The hash a credential is remembered by.
pub(crate) fn credential_hash(host: &str, c: &h8s_runtime::image::Credentials) -> String {
    let mut b = Vec::with_capacity(host.len() + c.username.len() + c.password.len() + 2);
    b.extend_from_slice(host.as_bytes());
    b.push(0);
    b.extend_from_slice(c.username.as_bytes());
    b.push(0);
    b.extend_from_slice(c.password.as_bytes());
    h8s_runtime::image::Digest::of(&b).to_string()
}

/// What a pod may do with a present image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Use the node's copy.
    Cached,
    /// The image came with credentials the pod does not hold: pull with the pod's own.
    MustPull,
}

impl PullRecord {
    /// May a pod holding `creds` use the cached image? `None` record: not pulled by this
    /// agent (preloaded), not checked.
    pub fn access(record: Option<&PullRecord>, creds: &[PodCredential]) -> Access {
        let Some(r) = record else {
            return Access::Cached;
        };
        if r.anonymous {
            return Access::Cached;
        }
        let holds = creds.iter().any(|c| {
            r.secrets.iter().any(|s| {
                (s.namespace == c.secret.namespace
                    && s.name == c.secret.name
                    && s.uid == c.secret.uid)
                    || s.credential_hash == c.secret.credential_hash
            })
        });
        if holds {
            Access::Cached
        } else {
            Access::MustPull
        }
    }

    fn add(&mut self, secret: Option<SecretRecord>) {
        match secret {
            None => self.anonymous = true,
            Some(s) => {
                self.secrets.retain(|x| {
                    !(x.namespace == s.namespace && x.name == s.name && x.uid == s.uid)
                });
                self.secrets.push(s);
                if self.secrets.len() > MAX_SECRETS {
                    let extra = self.secrets.len() - MAX_SECRETS;
                    self.secrets.drain(..extra);
                }
            }
        }
    }
}

/// The node's records, by image id (`sha256:…` of the config).
pub(crate) struct PulledImages {
    path: Option<PathBuf>,
    records: Mutex<BTreeMap<String, PullRecord>>,
}

impl PulledImages {
    /// Loads the records at `path` (absent or unreadable: none), keeping only images in
    /// `present` (image ids).
    pub fn load(path: PathBuf, present: &[String]) -> PulledImages {
        let mut records: BTreeMap<String, PullRecord> = std::fs::read(&path)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "pulled-image records unreadable; starting afresh");
                    None
                }
            })
            .unwrap_or_default();
        records.retain(|id, _| present.contains(id));
        PulledImages {
            path: Some(path),
            records: Mutex::new(records),
        }
    }

    /// Records kept in memory only.
    #[cfg(test)]
    pub fn in_memory() -> PulledImages {
        PulledImages {
            path: None,
            records: Mutex::new(BTreeMap::new()),
        }
    }

    /// The record of an image id.
    pub fn get(&self, image_id: &str) -> Option<PullRecord> {
        self.records.lock().ok()?.get(image_id).cloned()
    }

    /// A pull of `image_id` succeeded with `secret`'s credentials (`None`: anonymously).
    pub fn record(&self, image_id: &str, secret: Option<SecretRecord>) {
        let snapshot = {
            let Ok(mut m) = self.records.lock() else {
                return;
            };
            let r = m.entry(image_id.to_string()).or_default();
            let before = r.clone();
            r.add(secret);
            if *r == before {
                return;
            }
            serde_json::to_vec(&*m)
        };
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            let bytes = snapshot.map_err(std::io::Error::other)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), error = %e, "writing pulled-image records failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(ns: &str, name: &str, uid: &str, user: &str, pass: &str) -> PodCredential {
        let credentials = h8s_runtime::image::Credentials {
            username: user.into(),
            password: pass.into(),
        };
        PodCredential {
            secret: SecretRecord {
                namespace: ns.into(),
                name: name.into(),
                uid: uid.into(),
                credential_hash: credential_hash("reg.test", &credentials),
            },
            credentials,
        }
    }

    #[test]
    fn a_private_pull_is_served_only_to_holders_of_the_secret_or_its_credentials() {
        let p = PulledImages::in_memory();
        assert_eq!(
            PullRecord::access(p.get("sha256:a").as_ref(), &[]),
            Access::Cached,
            "preloaded"
        );
        let alice = cred("a", "pull", "u1", "alice", "pw");
        p.record("sha256:a", Some(alice.secret.clone()));
        let r = p.get("sha256:a");
        assert_eq!(PullRecord::access(r.as_ref(), &[]), Access::MustPull);
        assert_eq!(
            PullRecord::access(r.as_ref(), std::slice::from_ref(&alice)),
            Access::Cached
        );
        // Same credentials in another namespace's secret: may use it (kubelet's hash match).
        let same = cred("b", "other", "u2", "alice", "pw");
        assert_eq!(PullRecord::access(r.as_ref(), &[same]), Access::Cached);
        // Other credentials, or a re-created secret of the same name (new uid, new password).
        let bob = cred("b", "pull", "u3", "bob", "pw");
        assert_eq!(
            PullRecord::access(r.as_ref(), std::slice::from_ref(&bob)),
            Access::MustPull
        );
        let recreated = cred("a", "pull", "u9", "alice", "new");
        assert_eq!(
            PullRecord::access(r.as_ref(), &[recreated]),
            Access::MustPull
        );
        // Once pulled anonymously, it is public.
        p.record("sha256:a", None);
        assert_eq!(
            PullRecord::access(p.get("sha256:a").as_ref(), &[bob]),
            Access::Cached
        );
    }

    #[test]
    fn records_persist_bounded_and_drop_images_no_longer_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node/pulled-images.json");
        let p = PulledImages::load(path.clone(), &[]);
        for i in 0..(MAX_SECRETS + 5) {
            p.record(
                "sha256:a",
                Some(cred("ns", &format!("s{i}"), "u", "x", &i.to_string()).secret),
            );
        }
        p.record("sha256:gone", None);
        let again = PulledImages::load(path, &["sha256:a".to_string()]);
        let r = again.get("sha256:a").unwrap();
        assert_eq!(r.secrets.len(), MAX_SECRETS);
        assert_eq!(
            r.secrets.last().unwrap().name,
            format!("s{}", MAX_SECRETS + 4)
        );
        assert!(!r.anonymous);
        assert!(again.get("sha256:gone").is_none());
    }
}
