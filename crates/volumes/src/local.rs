//! The `local` backend: sparse raw files under one node's volume directory.
//!
//! A volume is `<dir>/<id>.raw`, made with `qemu-img create` (sparse: it takes space as the
//! guest writes) and, for a filesystem volume, formatted with `mkfs.ext4` on the file while it is
//! still empty. Files are made under a temporary name and renamed, so a crash leaves no half
//! made volume. Delete unlinks the file: its blocks go back to the host filesystem, which hands
//! out zeroed blocks to any later file, so nothing of it is readable by the next claimant.

use std::path::{Path, PathBuf};

use crate::{
    qemu_escape, round_mib, tool, Backend, Drive, Error, Filesystem, Info, Result, Topology,
    VolumeId,
};

const SUFFIX: &str = ".raw";

/// Sparse raw files on this node.
#[derive(Debug, Clone)]
pub struct Local {
    dir: PathBuf,
    node: String,
    capacity: Option<u64>,
}

impl Local {
    /// Volumes of node `node` in `dir` (created if missing). `capacity`: the most bytes all
    /// volumes together may be given (provisioned, not used); else the directory's free space
    /// bounds each new volume.
    pub fn new(dir: impl Into<PathBuf>, node: &str, capacity: Option<u64>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating volume directory {}", dir.display()),
            source,
        })?;
        Ok(Local {
            dir,
            node: node.to_string(),
            capacity,
        })
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backing file of a volume.
    pub fn path(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Every volume in the directory with its provisioned size.
    pub fn list(&self) -> Result<Vec<Info>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| Error::Io {
            what: format!("reading {}", self.dir.display()),
            source,
        })?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            let (Ok(id), Ok(md)) = (VolumeId::new(stem), e.metadata()) else {
                continue;
            };
            out.push(Info { id, size: md.len() });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Bytes a new volume may still take.
    pub fn available(&self) -> Result<u64> {
        let free = rustix::fs::statvfs(&self.dir)
            .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
            .map_err(|e| Error::Io {
                what: format!("statvfs {}", self.dir.display()),
                source: e.into(),
            })?;
        match self.capacity {
            None => Ok(free),
            Some(cap) => {
                let used: u64 = self.list()?.iter().map(|i| i.size).sum();
                Ok(cap.saturating_sub(used).min(free))
            }
        }
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl Backend for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn topology(&self) -> Topology {
        Topology::Node(self.node.clone())
    }

    fn create(&self, id: &VolumeId, size: u64, fs: Option<Filesystem>) -> Result<Info> {
        let size = round_mib(size.max(1));
        let path = self.path(id);
        if path.exists() {
            return Err(Error::AlreadyExists(id.to_string()));
        }
        let available = self.available()?;
        if size > available {
            return Err(Error::InsufficientCapacity {
                pool: self.dir.display().to_string(),
                requested: size,
                available,
            });
        }
        let tmp = self.dir.join(format!(".{id}.new"));
        let _ = std::fs::remove_file(&tmp);
        let t = tmp.to_string_lossy().into_owned();
        let made = tool::run(
            "qemu-img",
            &["create", "-q", "-f", "raw", &t, &size.to_string()],
        )
        .and_then(|_| match fs {
            Some(Filesystem::Ext4) => tool::mkfs_ext4(&t),
            None => Ok(()),
        })
        .and_then(|_| {
            std::fs::rename(&tmp, &path)
                .map_err(io(format!("renaming {} into place", tmp.display())))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Info {
            id: id.clone(),
            size,
        })
    }

    fn delete(&self, id: &VolumeId) -> Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing volume {id}"))(e)),
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
        if size == cur.size {
            return Ok(cur);
        }
        let grow = size - cur.size;
        let available = self.available()?;
        if grow > available {
            return Err(Error::InsufficientCapacity {
                pool: self.dir.display().to_string(),
                requested: grow,
                available,
            });
        }
        let p = self.path(id).to_string_lossy().into_owned();
        tool::run(
            "qemu-img",
            &["resize", "-q", "-f", "raw", &p, &size.to_string()],
        )?;
        Ok(Info {
            id: id.clone(),
            size,
        })
    }

    fn inspect(&self, id: &VolumeId) -> Result<Info> {
        let path = self.path(id);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(io(format!("reading volume {id}"))(e)),
        };
        let corrupt = |reason: String| Error::Corrupt {
            id: id.to_string(),
            reason,
        };
        if !md.file_type().is_file() {
            return Err(corrupt("the backing file is not a regular file".into()));
        }
        if md.len() == 0 || md.len() % 512 != 0 {
            return Err(corrupt(format!(
                "the backing file's size {} is not a whole number of 512-byte sectors",
                md.len()
            )));
        }
        std::fs::File::open(&path)
            .map_err(|e| corrupt(format!("the backing file cannot be opened: {e}")))?;
        Ok(Info {
            id: id.clone(),
            size: md.len(),
        })
    }

    fn drive(&self, id: &VolumeId, read_only: bool) -> Drive {
        Drive {
            spec: format!(
                "file={},format=raw,read-only={},discard=unmap",
                qemu_escape(&self.path(id).to_string_lossy()),
                if read_only { "on" } else { "off" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    fn have_tools() -> bool {
        std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn id(s: &str) -> VolumeId {
        VolumeId::new(s).unwrap()
    }

    #[test]
    fn create_is_sparse_formatted_and_deleted_without_trace() {
        assert!(have_tools(), "qemu-img missing: run scripts/setup");
        let d = tempfile::tempdir().unwrap();
        let b = Local::new(d.path(), "n1", None).unwrap();
        assert_eq!(b.topology(), Topology::Node("n1".into()));
        let i = b
            .create(&id("v1"), 1 << 30, Some(Filesystem::Ext4))
            .unwrap();
        assert_eq!(i.size, 1 << 30);
        let md = std::fs::metadata(b.path(&id("v1"))).unwrap();
        assert_eq!(md.len(), 1 << 30);
        // Sparse: far less allocated than the size.
        assert!(
            md.blocks() * 512 < 64 << 20,
            "{} bytes allocated",
            md.blocks() * 512
        );
        // ext4's magic at offset 1024 + 0x38.
        let mut f = std::fs::File::open(b.path(&id("v1"))).unwrap();
        f.seek(SeekFrom::Start(1024 + 0x38)).unwrap();
        let mut magic = [0u8; 2];
        f.read_exact(&mut magic).unwrap();
        assert_eq!(u16::from_le_bytes(magic), 0xEF53);
        assert!(matches!(
            b.create(&id("v1"), 1 << 20, None),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(b.inspect(&id("v1")).unwrap().size, 1 << 30);
        assert!(b
            .drive(&id("v1"), true)
            .spec
            .contains("format=raw,read-only=on"));
        b.delete(&id("v1")).unwrap();
        assert!(!b.path(&id("v1")).exists());
        b.delete(&id("v1")).unwrap();
        assert!(matches!(b.inspect(&id("v1")), Err(Error::NotFound(_))));
    }

    #[test]
    fn deleted_data_is_not_in_the_next_volume() {
        assert!(have_tools(), "qemu-img missing: run scripts/setup");
        let d = tempfile::tempdir().unwrap();
        let b = Local::new(d.path(), "n1", None).unwrap();
        b.create(&id("old"), 4 << 20, None).unwrap();
        let secret = b"tenant-a-secret-bytes";
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(b.path(&id("old")))
                .unwrap();
            f.seek(SeekFrom::Start(1 << 20)).unwrap();
            f.write_all(secret).unwrap();
            f.sync_all().unwrap();
        }
        b.delete(&id("old")).unwrap();
        b.create(&id("new"), 4 << 20, None).unwrap();
        let all = std::fs::read(b.path(&id("new"))).unwrap();
        assert!(all.iter().all(|&x| x == 0), "a new volume must read zeros");
    }

    #[test]
    fn resize_grows_never_shrinks_and_capacity_is_enforced() {
        assert!(have_tools(), "qemu-img missing: run scripts/setup");
        let d = tempfile::tempdir().unwrap();
        let b = Local::new(d.path(), "n1", Some(64 << 20)).unwrap();
        b.create(&id("a"), 16 << 20, None).unwrap();
        assert_eq!(b.available().unwrap(), 48 << 20);
        match b.create(&id("big"), 100 << 20, None) {
            Err(Error::InsufficientCapacity {
                requested,
                available,
                ..
            }) => {
                assert_eq!(requested, 100 << 20);
                assert_eq!(available, 48 << 20);
            }
            other => panic!("expected InsufficientCapacity, got {other:?}"),
        }
        assert!(!d.path().join(".big.new").exists() && !b.path(&id("big")).exists());
        assert_eq!(b.resize(&id("a"), 32 << 20).unwrap().size, 32 << 20);
        assert_eq!(std::fs::metadata(b.path(&id("a"))).unwrap().len(), 32 << 20);
        assert!(matches!(
            b.resize(&id("a"), 8 << 20),
            Err(Error::Shrink { .. })
        ));
        assert!(matches!(
            b.resize(&id("a"), 200 << 20),
            Err(Error::InsufficientCapacity { .. })
        ));
        assert!(matches!(
            b.resize(&id("zz"), 1 << 20),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn damaged_backing_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let b = Local::new(d.path(), "n1", None).unwrap();
        std::fs::write(b.path(&id("odd")), b"123").unwrap();
        assert!(matches!(b.inspect(&id("odd")), Err(Error::Corrupt { .. })));
        std::fs::create_dir(b.path(&id("dir"))).unwrap();
        assert!(matches!(b.inspect(&id("dir")), Err(Error::Corrupt { .. })));
        std::os::unix::fs::symlink("/etc/passwd", b.path(&id("link"))).unwrap();
        assert!(matches!(b.inspect(&id("link")), Err(Error::Corrupt { .. })));
    }
}
