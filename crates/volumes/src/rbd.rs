//! The `rbd` backend: Ceph RBD images in one pool, opened by QEMU's own rbd driver
//! (`block-rbd.so` from `qemu-block-extra`) straight into the pod VM — no kernel rbd mapping,
//! no host mount — so a volume can follow its pod to any node that reaches the cluster.
//!
//! The Ceph configuration file names the monitors and the keyring; the key itself never appears
//! on a command line. A filesystem volume is formatted by `mkfs.ext4` on a local sparse file of
//! the same size, copied into the new image with `qemu-img convert --target-is-zero` (only the
//! written metadata blocks travel). Delete removes the image (`rbd rm`): Ceph frees its objects,
//! and a new image reads zeros.

use std::path::PathBuf;
use std::time::Duration;

use crate::{
    qemu_escape, round_mib, tool, Backend, Drive, Error, Filesystem, Info, Result, Topology,
    VolumeId,
};

/// Images of one Ceph pool.
#[derive(Debug, Clone)]
pub struct Rbd {
    pool: String,
    conf: PathBuf,
    user: String,
    timeout: Duration,
}

impl Rbd {
    /// Images in `pool`, reached with the Ceph configuration `conf` as client `user` (without
    /// the `client.` prefix).
    pub fn new(pool: &str, conf: impl Into<PathBuf>, user: &str) -> Self {
        Rbd {
            pool: pool.to_string(),
            conf: conf.into(),
            user: user.to_string(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// How long one `rbd` command may take before it is killed (unreachable monitors make
    /// `rbd` wait for ever otherwise).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The same backend with another `rbd` command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// QEMU's `rbd:` file name of an image (options separated by `:`).
    fn uri(&self, id: &VolumeId) -> String {
        format!(
            "rbd:{}/{}:id={}:conf={}",
            self.pool,
            id,
            self.user,
            self.conf.display()
        )
    }

    fn rbd(&self, args: &[&str]) -> Result<String> {
        let conf = self.conf.to_string_lossy().into_owned();
        let mut a = vec!["-c", conf.as_str(), "--id", self.user.as_str()];
        a.extend_from_slice(args);
        tool::run_timeout("rbd", &a, self.timeout)
    }

    fn spec(&self, id: &VolumeId) -> String {
        format!("{}/{}", self.pool, id)
    }

    fn not_found(e: &Error) -> bool {
        matches!(e, Error::Tool { message, .. } if message.contains("No such file") || message.contains("error opening image") || message.contains("(2)"))
    }
}

impl Backend for Rbd {
    fn kind(&self) -> &'static str {
        "rbd"
    }

    fn topology(&self) -> Topology {
        Topology::Anywhere
    }

    fn create(&self, id: &VolumeId, size: u64, fs: Option<Filesystem>) -> Result<Info> {
        let size = round_mib(size.max(1));
        match self.inspect(id) {
            Ok(_) => return Err(Error::AlreadyExists(id.to_string())),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let mib = (size >> 20).to_string();
        self.rbd(&["create", "--size", &mib, &self.spec(id)])?;
        if let Some(Filesystem::Ext4) = fs {
            let made = (|| {
                let dir = tempfile::tempdir().map_err(|source| Error::Io {
                    what: "making a temporary directory".into(),
                    source,
                })?;
                let f = dir.path().join("fs.raw").to_string_lossy().into_owned();
                tool::run(
                    "qemu-img",
                    &["create", "-q", "-f", "raw", &f, &size.to_string()],
                )?;
                tool::mkfs_ext4(&f)?;
                tool::run(
                    "qemu-img",
                    &[
                        "convert",
                        "-n",
                        "--target-is-zero",
                        "-f",
                        "raw",
                        "-O",
                        "raw",
                        &f,
                        &self.uri(id),
                    ],
                )
                .map(drop)
            })();
            if let Err(e) = made {
                let _ = self.delete(id);
                return Err(e);
            }
        }
        Ok(Info {
            id: id.clone(),
            size,
        })
    }

    fn delete(&self, id: &VolumeId) -> Result<()> {
        match self.rbd(&["rm", "--no-progress", &self.spec(id)]) {
            Ok(_) => Ok(()),
            Err(e) if Self::not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn resize(&self, id: &VolumeId, size: u64) -> Result<Info> {
        let cur = self.inspect(id)?;
        let size = round_mib(size);
        if size < cur.size {
            return Err(Error::Shrink {
                id: id.to_string(),
                current: cur.size,
                requested: size,
            });
        }
        if size > cur.size {
            let mib = (size >> 20).to_string();
            self.rbd(&["resize", "--no-progress", "--size", &mib, &self.spec(id)])?;
        }
        Ok(Info {
            id: id.clone(),
            size,
        })
    }

    fn inspect(&self, id: &VolumeId) -> Result<Info> {
        match self.rbd(&["info", "--format", "json", &self.spec(id)]) {
            Ok(out) => {
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| Error::Corrupt {
                        id: id.to_string(),
                        reason: format!("unreadable image information: {e}"),
                    })?;
                let size = v["size"].as_u64().ok_or_else(|| Error::Corrupt {
                    id: id.to_string(),
                    reason: "image information without a size".into(),
                })?;
                Ok(Info {
                    id: id.clone(),
                    size,
                })
            }
            Err(e) if Self::not_found(&e) => Err(Error::NotFound(id.to_string())),
            Err(e) => Err(e),
        }
    }

    fn drive(&self, id: &VolumeId, read_only: bool) -> Drive {
        Drive {
            spec: format!(
                "file={},format=raw,read-only={},discard=unmap",
                qemu_escape(&self.uri(id)),
                if read_only { "on" } else { "off" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_names_pool_image_user_and_conf_but_no_key() {
        let b = Rbd::new("h8s", "/etc/ceph/ceph.conf", "admin");
        let id = VolumeId::new("pv-1").unwrap();
        let d = b.drive(&id, false).spec;
        assert_eq!(
            d,
            "file=rbd:h8s/pv-1:id=admin:conf=/etc/ceph/ceph.conf,format=raw,read-only=off,discard=unmap"
        );
        assert!(!d.contains("key="));
        assert_eq!(b.topology(), Topology::Anywhere);
    }
}
