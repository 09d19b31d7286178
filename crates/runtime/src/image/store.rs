//! The on-disk store: content-addressed blobs and a small JSON index of images.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   verified content (manifests, configs, layers)
//! <root>/index.json           images: id, manifest digests, names
//! <root>/rootfs/<id>.erofs    flattened root filesystems, built on first use
//! <root>/tmp/                 partial downloads and staging dirs (same filesystem, so
//!                             a finished file is renamed into place atomically)
//! <root>/lock                 flock held while the index is read-modify-written
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Hasher;
use super::{Digest, Error, Result};

pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

/// One image in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Config digest: the image id.
    pub id: Digest,
    /// What the name pointed at: an index / manifest list, or the manifest itself.
    pub digest: Digest,
    /// Every top-level digest this image arrived by (an index pulled by one name, the
    /// bare manifest by another), so each `name@digest` resolves.
    #[serde(default)]
    pub digests: Vec<Digest>,
    /// The linux/amd64 image manifest.
    pub manifest: Digest,
    /// Normalised references (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// Config plus layer blobs, as stored (compressed) bytes.
    pub size: u64,
    /// Seconds since the epoch when the image was stored.
    pub created: u64,
}

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub version: u32,
    pub images: Vec<Record>,
}

#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub(crate) fn create(root: &Path) -> Result<Layout> {
        for d in ["blobs/sha256", "rootfs", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        }
        let layout = Layout {
            root: root.to_owned(),
        };
        layout.sweep_tmp();
        Ok(layout)
    }

    /// Removes what a killed process left in `tmp/` (temp files are normally deleted on
    /// drop, but not after SIGKILL or a crash). Only entries a day old: younger ones may
    /// belong to another process's pull or build in progress.
    fn sweep_tmp(&self) {
        let Ok(entries) = std::fs::read_dir(self.tmp()) else {
            return;
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old {
                let p = e.path();
                tracing::debug!(path = %p.display(), "removing stale temp entry");
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn rootfs_path(&self, id: &Digest) -> PathBuf {
        self.root.join("rootfs").join(format!("{}.erofs", id.hex()))
    }

    pub(crate) fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub(crate) fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let data = std::fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::MissingBlob(d.clone())
            } else {
                Error::Io {
                    context: format!("read {}", p.display()),
                    source: e,
                }
            }
        })?;
        // Cheap for JSON documents, and catches on-disk corruption before we trust them.
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(Error::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(data)
    }

    pub(crate) fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::MissingBlob(d.clone())
            } else {
                Error::Io {
                    context: format!("open {}", p.display()),
                    source: e,
                }
            }
        })
    }

    pub(crate) fn writer(&self) -> Result<BlobWriter> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp())
            .ctx(|| format!("create temp file in {}", self.tmp().display()))?;
        Ok(BlobWriter {
            file,
            hasher: Hasher::new(),
            layout: self.clone(),
        })
    }

    /// Stores `data`, verifying it against `expected` when given.
    pub(crate) fn put_bytes(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let actual = Digest::of(data);
        if let Some(e) = expected {
            if e != &actual {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual,
                });
            }
        }
        if self.has_blob(&actual) {
            return Ok(actual);
        }
        let mut w = self.writer()?;
        w.write(data)?;
        w.commit(Some(&actual), None)
    }

    /// Copies a reader into the store, verifying digest (and size) when given.
    pub(crate) fn put_reader(
        &self,
        mut r: impl Read,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest> {
        let mut w = self.writer()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        context: "read blob".into(),
                        source: e,
                    })
                }
            };
            w.write(&buf[..n])?;
        }
        w.commit(expected, size)
    }

    fn lock(&self) -> Result<File> {
        let p = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(|| format!("open {}", p.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::Io {
                context: format!("lock {}", p.display()),
                source: e.into(),
            }
        })?;
        Ok(f)
    }

    pub(crate) fn read_index(&self) -> Result<IndexFile> {
        let p = self.root.join("index.json");
        match std::fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::CorruptIndex(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile {
                version: 1,
                images: vec![],
            }),
            Err(e) => Err(Error::Io {
                context: format!("read {}", p.display()),
                source: e,
            }),
        }
    }

    /// Read-modify-write of the index under the store lock; the new index replaces the
    /// old atomically (temp file + rename), so readers never see half a file.
    pub(crate) fn update_index<T>(&self, f: impl FnOnce(&mut IndexFile) -> Result<T>) -> Result<T> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        index.version = 1;
        let data = serde_json::to_vec_pretty(&index).expect("index serialises");
        let mut tmp = tempfile::Builder::new()
            .prefix("index-")
            .tempfile_in(self.tmp())
            .ctx(|| "create index temp file".into())?;
        tmp.write_all(&data).ctx(|| "write index".into())?;
        tmp.as_file().sync_all().ctx(|| "sync index".into())?;
        let p = self.root.join("index.json");
        tmp.persist(&p).map_err(|e| Error::Io {
            context: format!("replace {}", p.display()),
            source: e.error,
        })?;
        Ok(out)
    }
}

/// A blob being written: hashed as it goes, renamed into `blobs/` only when complete and
/// verified. Dropped without `commit`, the temp file is deleted.
pub(crate) struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    layout: Layout,
}

impl BlobWriter {
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.file.write_all(data).ctx(|| "write blob".into())
    }

    pub(crate) fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub(crate) fn commit(self, expected: Option<&Digest>, size: Option<u64>) -> Result<Digest> {
        let len = self.hasher.len();
        let actual = self.hasher.finish();
        if let Some(e) = expected {
            if e != &actual {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual,
                });
            }
        }
        if let Some(s) = size {
            if s != len {
                return Err(Error::SizeMismatch {
                    digest: actual,
                    expected: s,
                    actual: len,
                });
            }
        }
        let dest = self.layout.blob_path(&actual);
        if dest.is_file() {
            return Ok(actual);
        }
        self.file.as_file().sync_all().ctx(|| "sync blob".into())?;
        self.file.persist(&dest).map_err(|e| Error::Io {
            context: format!("store blob {}", dest.display()),
            source: e.error,
        })?;
        Ok(actual)
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
