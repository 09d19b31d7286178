//! OCI images: pull, import, content store, erofs root filesystems.
//!
//! [`ImageStore`] keeps verified blobs under `blobs/sha256/`, a small index of image
//! names, and per image one read-only erofs file holding its flattened root filesystem
//! ([`ImageStore::rootfs`]) — what a pod VM gets as a read-only virtio-blk disk.

mod digest;
mod flatten;
mod http;
mod import;
mod oci;
mod reference;
mod registry;
mod rootfs;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use digest::Digest;
pub use reference::{Reference, DOCKER_HUB};

use store::{Layout, Record};

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {0:?}: {1}")]
    InvalidReference(String, &'static str),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm in {0:?} (only sha256)")]
    UnsupportedDigest(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("image not found: {0}")]
    NotFound(String),
    #[error("image id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("blob {0} is missing from the store")]
    MissingBlob(Digest),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("no linux/amd64 image in {0}")]
    NoPlatform(String),
    #[error("unsafe path in layer: {0:?}")]
    UnsafePath(String),
    #[error("malformed layer: {0}")]
    BadLayer(String),
    #[error("image exceeds its unpack budget: more than {limit} {what}")]
    OverBudget { what: &'static str, limit: u64 },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// The registry could not be reached (name resolution or connection failed).
    #[error("registry {registry} unreachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("registry {0}: authentication required or refused")]
    Unauthorized(String),
    #[error("registry {0} is not on loopback and not listed as insecure: refusing plain http")]
    Insecure(String),
    #[error("mkfs.erofs: {0}")]
    Mkfs(String),
    #[error("corrupt image index {0}")]
    CorruptIndex(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much an image may unpack to: a gzip bomb or a layer of millions of empty files is refused
/// with [`Error::OverBudget`] while it is being unpacked, and its staging directory removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackBudget {
    /// Decompressed bytes of one layer's tar stream.
    pub layer_bytes: u64,
    /// Decompressed bytes of all of an image's layers together.
    pub image_bytes: u64,
    /// Tar entries of one layer.
    pub layer_entries: u64,
    /// Tar entries of all layers together.
    pub image_entries: u64,
}

impl Default for UnpackBudget {
    /// 4 GiB per layer, 8 GiB and a million entries per image: above any image a pod VM
    /// boots in practice, far below what fills a node's disk.
    fn default() -> Self {
        UnpackBudget {
            layer_bytes: 4 << 30,
            image_bytes: 8 << 30,
            layer_entries: 500_000,
            image_entries: 1_000_000,
        }
    }
}

/// What a container runs by default, from the image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Empty means `/`.
    pub working_dir: String,
    /// `user[:group]`, names or ids; empty means root.
    pub user: String,
    /// `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The config digest, as Docker shows image ids.
    pub id: Digest,
    /// Normalised references naming this image (may be empty: a dangling image).
    pub names: Vec<String>,
    /// The manifest (or index, for multi-platform images) digest of the latest pull or
    /// import: `name@digest` pins it.
    pub digest: Digest,
    /// Every digest the image arrived by (a multi-platform index and the bare manifest
    /// may both name it).
    pub digests: Vec<Digest>,
    /// The linux/amd64 image manifest's digest (equals `digest` for single-platform).
    pub manifest_digest: Digest,
    /// Bytes stored for config and layers (compressed, as distributed).
    pub size: u64,
    /// Seconds since the epoch when the image entered this store.
    pub created: u64,
    pub architecture: String,
    pub os: String,
    pub config: ImageConfig,
}

/// Basic credentials for a registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Progress of a pull, reported per blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The manifest was resolved: `layers` blobs will follow.
    Resolved {
        reference: String,
        digest: Digest,
        layers: usize,
    },
    /// Bytes of a blob received so far (of `total`).
    Downloading {
        digest: Digest,
        received: u64,
        total: u64,
    },
    /// A blob is stored (or was already present: `cached`).
    Done {
        digest: Digest,
        size: u64,
        cached: bool,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options for [`ImageStore::pull`] and [`ImageStore::push`].
#[derive(Clone, Default)]
pub struct PullOptions {
    pub auth: Option<Credentials>,
    /// Called from the pulling task; keep it cheap.
    pub progress: Option<ProgressFn>,
    /// Registries (`host:port`) allowed over plain http besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Whether the pull may connect to a loopback, link-local (169.254.0.0/16, where cloud
    /// metadata lives; fe80::/10) or unspecified address — directly, through DNS, or through a
    /// registry's redirect. Off by default: an image reference in a tenant's pod spec must not
    /// reach the node's own services. `h8s image pull` on one's own machine turns it on.
    pub allow_local_registries: bool,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("auth", &self.auth)
            .field("insecure_registries", &self.insecure_registries)
            .field("allow_local_registries", &self.allow_local_registries)
            .finish_non_exhaustive()
    }
}

/// What [`ImageStore::remove`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Names taken off the image.
    pub untagged: Vec<String>,
    /// Set when the image itself (and its blobs no other image uses) was deleted.
    pub deleted: Option<Digest>,
}

/// The image store. Cheap to clone; every method re-reads the on-disk index, so several
/// processes can share one store (index updates take a file lock).
#[derive(Clone, Debug)]
pub struct ImageStore {
    layout: Layout,
    budget: UnpackBudget,
}

impl ImageStore {
    /// `<data dir>/images`, the data dir being the first of `$H8S_DATA_DIR` (the same
    /// variable `h8s server` reads), `$XDG_DATA_HOME/h8s`, `$HOME/.local/share/h8s`.
    pub fn default_root() -> PathBuf {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let data = env("H8S_DATA_DIR")
            .or_else(|| env("XDG_DATA_HOME").map(|x| x.join("h8s")))
            .unwrap_or_else(|| {
                env("HOME")
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".local/share/h8s")
            });
        data.join("images")
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let layout = Layout::create(root)?;
        Ok(ImageStore {
            layout,
            budget: UnpackBudget::default(),
        })
    }

    /// The same store with another unpack budget for the root filesystems it builds.
    pub fn with_budget(mut self, budget: UnpackBudget) -> ImageStore {
        self.budget = budget;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Pulls `reference` from its registry (OCI distribution API) and records it.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image> {
        let reference: Reference = reference.parse()?;
        let pulled = registry::pull(&self.layout, &reference, opts).await?;
        self.register(pulled, &[reference.to_string()])
    }

    /// Pushes a stored image to `target` (a full reference with a tag). Returns the
    /// manifest digest the registry now serves.
    pub async fn push(&self, image: &str, target: &str, opts: &PullOptions) -> Result<Digest> {
        let record = self.find(image)?;
        let target: Reference = target.parse()?;
        registry::push(&self.layout, &record, &target, opts).await
    }

    /// Imports an OCI layout directory, an OCI archive (`.tar`, optionally gzip) or a
    /// docker-archive (`docker save`). `name` overrides the names found in the source
    /// (the source must then hold exactly one image).
    pub async fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let name = name.map(|n| n.parse::<Reference>()).transpose()?;
        let layout = self.layout.clone();
        let path = path.to_owned();
        let found = tokio::task::spawn_blocking(move || import::import(&layout, &path))
            .await
            .map_err(|e| Error::Io {
                context: "import task".into(),
                source: std::io::Error::other(e),
            })??;
        if name.is_some() && found.len() != 1 {
            return Err(Error::InvalidImage(format!(
                "--name needs exactly one image in the source, found {}",
                found.len()
            )));
        }
        let mut out = Vec::new();
        for (pulled, names) in found {
            let names: Vec<String> = match &name {
                Some(n) => vec![n.to_string()],
                None => names,
            };
            out.push(self.register(pulled, &names)?);
        }
        Ok(out)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let index = self.layout.read_index()?;
        let mut out = index
            .images
            .iter()
            .map(|r| self.to_image(r))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Looks an image up by name (`busybox`, `localhost:5000/x:t`, `x@sha256:…`), id
    /// (`sha256:…`) or unique id prefix.
    pub fn status(&self, name_or_id: &str) -> Result<Image> {
        let record = self.find(name_or_id)?;
        self.to_image(&record)
    }

    /// Removes a name from its image, like `docker rmi`; the image itself (with its
    /// rootfs and the blobs no other image uses) goes when no name is left, or when it
    /// was named by id.
    pub fn remove(&self, name_or_id: &str) -> Result<Removed> {
        let (removed, gone) = self.layout.update_index(|index| {
            let (pos, by_name) = resolve(&index.images, name_or_id)?;
            let mut removed = Removed::default();
            if let Some(name) = by_name {
                let rec = &mut index.images[pos];
                rec.names.retain(|n| n != &name);
                removed.untagged.push(name);
                if !index.images[pos].names.is_empty() {
                    return Ok((removed, None));
                }
            } else {
                removed.untagged = index.images[pos].names.clone();
            }
            let rec = index.images.remove(pos);
            removed.deleted = Some(rec.id.clone());
            // Blobs still used by other images stay; read them under the lock so a
            // concurrent import of the same content is seen.
            let mut keep = BTreeSet::new();
            for other in &index.images {
                keep.extend(self.blobs_of(other).unwrap_or_default());
            }
            let drop: Vec<Digest> = self
                .blobs_of(&rec)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| !keep.contains(d))
                .collect();
            for d in &drop {
                let _ = std::fs::remove_file(self.layout.blob_path(d));
            }
            Ok((removed, Some(rec.id)))
        })?;
        if let Some(id) = gone {
            let _ = std::fs::remove_file(self.layout.rootfs_path(&id).with_extension("lock"));
            let p = self.layout.rootfs_path(&id);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("remove {}", p.display()),
                        source: e,
                    })
                }
            }
        }
        Ok(removed)
    }

    /// The image's flattened root filesystem as a read-only erofs file, built on first
    /// use (layers applied with whiteouts, then `mkfs.erofs`) and cached by image id.
    pub async fn rootfs(&self, image: &Image) -> Result<PathBuf> {
        let path = self.layout.rootfs_path(&image.id);
        if path.is_file() {
            return Ok(path);
        }
        let record = self.find(&image.id.to_string())?;
        let layout = self.layout.clone();
        let budget = self.budget;
        tokio::task::spawn_blocking(move || rootfs::build(&layout, &record, budget))
            .await
            .map_err(|e| Error::Io {
                context: "rootfs task".into(),
                source: std::io::Error::other(e),
            })?
    }

    fn find(&self, name_or_id: &str) -> Result<Record> {
        let index = self.layout.read_index()?;
        let (pos, _) = resolve(&index.images, name_or_id)?;
        Ok(index.images[pos].clone())
    }

    /// Every blob an image uses: top digest, manifest, config, layers.
    fn blobs_of(&self, r: &Record) -> Result<Vec<Digest>> {
        let m = self.manifest(&r.manifest)?;
        let mut out = vec![r.digest.clone(), r.manifest.clone(), r.id.clone()];
        out.extend(r.digests.iter().cloned());
        out.extend(m.layers.into_iter().map(|l| l.digest));
        Ok(out)
    }

    fn manifest(&self, d: &Digest) -> Result<oci::Manifest> {
        let data = self.layout.read_blob(d)?;
        serde_json::from_slice(&data).map_err(|e| Error::InvalidImage(format!("manifest {d}: {e}")))
    }

    fn to_image(&self, r: &Record) -> Result<Image> {
        let data = self.layout.read_blob(&r.id)?;
        let cfg: oci::ConfigFile = serde_json::from_slice(&data)
            .map_err(|e| Error::InvalidImage(format!("config {}: {e}", r.id)))?;
        let run = cfg.config.unwrap_or_default();
        Ok(Image {
            id: r.id.clone(),
            names: r.names.clone(),
            digest: r.digest.clone(),
            digests: if r.digests.is_empty() {
                vec![r.digest.clone()]
            } else {
                r.digests.clone()
            },
            manifest_digest: r.manifest.clone(),
            size: r.size,
            created: r.created,
            architecture: cfg.architecture,
            os: cfg.os,
            config: ImageConfig {
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                env: run.env.unwrap_or_default(),
                working_dir: run.working_dir.unwrap_or_default(),
                user: run.user.unwrap_or_default(),
                exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
                labels: run.labels.unwrap_or_default(),
                stop_signal: run.stop_signal,
            },
        })
    }

    /// Records a stored image under `names`, moving each name off any other image.
    fn register(&self, p: Pulled, names: &[String]) -> Result<Image> {
        let record = self.layout.update_index(|index| {
            for other in index.images.iter_mut() {
                other.names.retain(|n| !names.contains(n));
            }
            let rec = match index.images.iter_mut().find(|r| r.id == p.id) {
                Some(r) => r,
                None => {
                    index.images.push(Record {
                        id: p.id.clone(),
                        digest: p.digest.clone(),
                        digests: vec![],
                        manifest: p.manifest.clone(),
                        names: vec![],
                        size: p.size,
                        created: store::now(),
                    });
                    index.images.last_mut().expect("just pushed")
                }
            };
            rec.digest = p.digest.clone();
            if !rec.digests.contains(&p.digest) {
                rec.digests.push(p.digest.clone());
            }
            for n in names {
                if !rec.names.contains(n) {
                    rec.names.push(n.clone());
                }
            }
            Ok(rec.clone())
        })?;
        tracing::debug!(id = %record.id, names = ?record.names, "image stored");
        self.to_image(&record)
    }
}

/// A stored image not yet in the index: what pull and import produce.
#[derive(Debug, Clone)]
pub(crate) struct Pulled {
    pub id: Digest,
    pub digest: Digest,
    pub manifest: Digest,
    pub size: u64,
}

/// Finds an image: by name first (as Docker does), then by id or id prefix. Returns
/// the position and, when found by name, the normalised name.
fn resolve(images: &[Record], q: &str) -> Result<(usize, Option<String>)> {
    let q = q.trim();
    if let Some(hex) = q.strip_prefix("sha256:") {
        let d = Digest::from_hex(hex).map_err(|_| Error::InvalidDigest(q.to_owned()))?;
        return images
            .iter()
            .position(|r| r.id == d || r.manifest == d || r.digests.contains(&d) || r.digest == d)
            .map(|p| (p, None))
            .ok_or_else(|| Error::NotFound(q.to_owned()));
    }
    if let Ok(r) = q.parse::<Reference>() {
        let full = r.to_string();
        if let Some(p) = images.iter().position(|i| i.names.contains(&full)) {
            return Ok((p, Some(full)));
        }
        if let Some(d) = r.digest() {
            let repo = r.name();
            let hit = images.iter().position(|i| {
                (&i.digest == d || &i.manifest == d || i.digests.contains(d))
                    && i.names
                        .iter()
                        .any(|n| n.starts_with(&repo) && n[repo.len()..].starts_with([':', '@']))
            });
            if let Some(p) = hit {
                return Ok((p, None));
            }
        }
    }
    if q.len() >= 4
        && q.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        let hits: Vec<usize> = images
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.hex().starts_with(q))
            .map(|(i, _)| i)
            .collect();
        match hits.len() {
            1 => return Ok((hits[0], None)),
            0 => {}
            _ => return Err(Error::Ambiguous(q.to_owned())),
        }
    }
    Err(Error::NotFound(q.to_owned()))
}
