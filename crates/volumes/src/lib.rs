//! Block volume backends for h8s: the storage behind PersistentVolumes and the seeds' `cinder:`
//! volumes. A volume is a block device of the pod VM (a virtio-blk disk QEMU opens itself), never
//! a host mount: the host makes, grows and removes the backing store with `qemu-img`, and only the
//! guest kernel ever reads the filesystem on it.
//!
//! Two backends implement [`Backend`]:
//! * [`local::Local`] — sparse raw files under a node's volume directory, made with `qemu-img`;
//!   topology = that node.
//! * [`rbd::Rbd`] — Ceph RBD images, opened by QEMU's own rbd driver (`qemu-block-extra`), so
//!   the volume can follow its pod to any node.
//!
//! The calls run external tools and block: async callers use `spawn_blocking`.

pub mod local;
pub mod rbd;
mod tool;

use std::fmt;

/// What went wrong with a volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that cannot be a volume id.
    #[error("invalid volume id {0:?}: must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit")]
    InvalidId(String),
    /// The volume does not exist.
    #[error("volume {0} not found")]
    NotFound(String),
    /// The volume exists already.
    #[error("volume {0} already exists")]
    AlreadyExists(String),
    /// The pool cannot hold the size asked for.
    #[error(
        "not enough space in pool {pool}: {requested} bytes requested, {available} bytes available"
    )]
    InsufficientCapacity {
        /// The pool (directory or Ceph pool).
        pool: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes left.
        available: u64,
    },
    /// A volume cannot shrink.
    #[error("volume {id} cannot shrink from {current} to {requested} bytes")]
    Shrink {
        /// The volume.
        id: String,
        /// Its size.
        current: u64,
        /// The size asked for.
        requested: u64,
    },
    /// The backing store is damaged (wrong format, unreadable).
    #[error("volume {id} is corrupt: {reason}")]
    Corrupt {
        /// The volume.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// An external tool failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// Its diagnostics (stderr's last lines).
        message: String,
    },
    /// A local I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A volume's name in its backend: the PersistentVolume's name (and the `cinder:` volumeID):
/// 1-63 of `[a-z0-9-]`, starting and ending alphanumeric, so it is a valid file name, RBD image
/// name and Kubernetes name, and never a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    /// Checks and wraps a name.
    pub fn new(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric();
        if ok {
            Ok(VolumeId(s.to_string()))
        } else {
            Err(Error::InvalidId(s.to_string()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The filesystem made on a new volume (`volumeMode: Filesystem`), or none (`Block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// ext4, made on the still empty backing store with `mkfs.ext4` on a file (never mounted on
    /// the host); the guest grows it to the device's size when it mounts it.
    Ext4,
}

impl Filesystem {
    /// Parses a `fsType` (`""` = ext4, the Kubernetes default).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "ext4" => Some(Filesystem::Ext4),
            _ => None,
        }
    }

    /// The `fsType` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
        }
    }
}

/// Where a volume can be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// Only on this node (the `kubernetes.io/hostname` value).
    Node(String),
    /// On any node that reaches the storage.
    Anywhere,
}

/// A volume as its backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The volume.
    pub id: VolumeId,
    /// Its size in bytes (the virtual disk size).
    pub size: u64,
}

/// How QEMU opens a volume: the value of one `-drive` option without `id`/`if` (the runtime adds
/// those), e.g. `file=/v/x.raw,format=raw`. Never contains a secret: RBD keys come from the
/// keyring the Ceph configuration names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Drive {
    /// `-drive` properties (QEMU syntax; commas in values already doubled).
    pub spec: String,
}

/// One block storage backend. Sizes are bytes; `create` and `resize` round up to 1 MiB.
pub trait Backend: Send + Sync {
    /// `local` or `rbd`.
    fn kind(&self) -> &'static str;
    /// Where volumes of this backend can be attached.
    fn topology(&self) -> Topology;
    /// Makes an empty volume of `size` bytes, with a filesystem if asked. Nothing the previous
    /// holder of the space wrote is readable in it.
    fn create(&self, id: &VolumeId, size: u64, fs: Option<Filesystem>) -> Result<Info>;
    /// Removes a volume and its data (`persistentVolumeReclaimPolicy: Delete`). Removing a
    /// volume that does not exist succeeds.
    fn delete(&self, id: &VolumeId) -> Result<()>;
    /// Grows a volume (offline: not attached to a running VM); the guest grows the filesystem.
    fn resize(&self, id: &VolumeId, size: u64) -> Result<Info>;
    /// The volume's size, or why it cannot be attached (missing, corrupt).
    fn inspect(&self, id: &VolumeId) -> Result<Info>;
    /// How QEMU opens it.
    fn drive(&self, id: &VolumeId, read_only: bool) -> Drive;
}

/// Rounds up to whole MiB (qemu-img and RBD sizes).
pub fn round_mib(size: u64) -> u64 {
    size.div_ceil(1 << 20).saturating_mul(1 << 20)
}

/// QEMU option values use `,,` for a literal comma.
pub(crate) fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_names_never_paths() {
        for ok in ["a", "pv-1", "651b2a7b-683e-47e1-bdd6-e3c62e8f91c0"] {
            assert!(VolumeId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "../x",
            "a/b",
            "a.b",
            "a,b",
            &"x".repeat(64),
        ] {
            assert!(VolumeId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_round_up_to_mib() {
        assert_eq!(round_mib(1), 1 << 20);
        assert_eq!(round_mib(1 << 20), 1 << 20);
        assert_eq!(round_mib((1 << 30) + 1), (1 << 30) + (1 << 20));
        assert_eq!(Filesystem::parse(""), Some(Filesystem::Ext4));
        assert_eq!(Filesystem::parse("xfs"), None);
    }
}
