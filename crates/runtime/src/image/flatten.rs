//! Applies image layers, in order, into a staging directory.
//!
//! A layer is tenant input: every path is resolved by the kernel beneath the staging
//! root (`openat2` with `RESOLVE_IN_ROOT`), so `..`, absolute symlinks and symlinked
//! parent directories all stay inside it; the final component is never followed
//! (`O_NOFOLLOW`, `O_EXCL`, `AT_SYMLINK_NOFOLLOW`, and an existing entry is removed
//! first). Entry names containing `..` are rejected outright, as are hard links whose
//! target does so. OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) remove what lower layers
//! put there.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use super::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks layers into one directory tree. Holds the staging root open so every
/// operation is relative to the same directory, whatever happens to its path.
pub(crate) struct Flattener {
    root: OwnedFd,
    /// Only root may chown and mknod; as another user those steps are skipped.
    privileged: bool,
}

/// Counts of what was unpacked, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub skipped_devices: u64,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let context = context.into();
    move |e| Error::Io {
        context,
        source: io::Error::from(e),
    }
}

impl Flattener {
    pub(crate) fn new(root: &Path) -> Result<Flattener> {
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(format!("open staging dir {}", root.display())))?;
        Ok(Flattener {
            root: root_fd,
            privileged: rustix::process::geteuid().is_root(),
        })
    }

    /// Applies one uncompressed layer tar stream.
    pub(crate) fn apply<R: Read>(&self, layer: R) -> Result<LayerStats> {
        let mut archive = tar::Archive::new(layer);
        let mut written: HashSet<PathBuf> = HashSet::new();
        let mut stats = LayerStats::default();
        let entries = archive
            .entries()
            .map_err(|e| Error::BadLayer(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::BadLayer(e.to_string()))?;
            let raw = entry
                .path()
                .map_err(|e| Error::BadLayer(e.to_string()))?
                .into_owned();
            let Some(path) = clean_path(&raw)? else {
                // "./": the root directory itself; take its ownership and mode.
                if entry.header().entry_type().is_dir() {
                    let fd = rustix::fs::openat(
                        self.root.as_fd(),
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(io_err("open staging root"))?;
                    self.set_meta(fd.as_fd(), None, &entry)?;
                }
                continue;
            };
            let (parent, name) = split(&path);
            let name_str = name.to_str().unwrap_or("");
            if name_str == OPAQUE {
                stats.whiteouts += 1;
                if let Some(dir) = self.open_dir(parent, false)? {
                    self.clear_opaque(dir.as_fd(), parent, &written)?;
                }
                continue;
            }
            if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
                let target = OsStr::from_bytes(target);
                if target.is_empty() || target == "." || target == ".." {
                    return Err(Error::UnsafePath(raw.display().to_string()));
                }
                stats.whiteouts += 1;
                if let Some(dir) = self.open_dir(parent, false)? {
                    remove_all_at(dir.as_fd(), target)
                        .or_else(|e| if e == Errno::NOENT { Ok(()) } else { Err(e) })
                        .map_err(io_err(format!("whiteout {}", path.display())))?;
                }
                continue;
            }
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink() {
                continue;
            }
            let dir = self.open_dir(parent, true)?.expect("created");
            let dir = dir.as_fd();
            let ctx = || format!("unpack {}", path.display());
            // Replace whatever is there, unless a directory meets a directory.
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let existing_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                    if !(existing_dir && kind.is_dir()) {
                        remove_all_at(dir, name).map_err(io_err(ctx()))?;
                    }
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(io_err(ctx())(e)),
            }
            if kind.is_dir() {
                match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err(ctx())(e)),
                }
                self.set_meta(dir, Some(name), &entry)?;
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err(ctx()))?;
                let mut file = std::fs::File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| Error::Io {
                    context: ctx(),
                    source: e,
                })?;
                self.set_xattrs(file.as_fd(), &mut entry, &path);
                self.set_meta(file.as_fd(), None, &entry)?;
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::BadLayer(e.to_string()))?
                    .ok_or_else(|| {
                        Error::BadLayer(format!("symlink {} without target", path.display()))
                    })?;
                // The target is stored, never followed here: inside the guest it
                // resolves within the container's root.
                rustix::fs::symlinkat(target.as_ref(), dir, name).map_err(io_err(ctx()))?;
                self.set_meta(dir, Some(name), &entry)?;
            } else if kind.is_hard_link() {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| Error::BadLayer(e.to_string()))?
                    .ok_or_else(|| {
                        Error::BadLayer(format!("hard link {} without target", path.display()))
                    })?
                    .into_owned();
                let target = clean_path(&target_raw)?
                    .ok_or_else(|| Error::UnsafePath(target_raw.display().to_string()))?;
                let (tparent, tname) = split(&target);
                let tdir = self.open_dir(tparent, false)?.ok_or_else(|| {
                    Error::BadLayer(format!("hard link target {} missing", target.display()))
                })?;
                // Flags empty: link the target entry itself, never what a symlink points to.
                rustix::fs::linkat(tdir.as_fd(), tname, dir, name, AtFlags::empty()).map_err(
                    io_err(format!(
                        "hard link {} -> {}",
                        path.display(),
                        target.display()
                    )),
                )?;
            } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                if !self.privileged && !kind.is_fifo() {
                    stats.skipped_devices += 1;
                    tracing::debug!(path = %path.display(), "not root: skipping device node");
                    continue;
                }
                let ft = if kind.is_character_special() {
                    FileType::CharacterDevice
                } else if kind.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::Fifo
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                rustix::fs::mknodat(
                    dir,
                    name,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(io_err(ctx()))?;
                self.set_meta(dir, Some(name), &entry)?;
            } else {
                tracing::debug!(path = %path.display(), kind = ?kind, "skipping unsupported tar entry");
                continue;
            }
            stats.entries += 1;
            written.insert(path);
        }
        Ok(stats)
    }

    /// Opens `rel` (a cleaned relative path) as a directory beneath the root. Missing
    /// directories are created (0755, like Docker) when `create`; otherwise `None`.
    fn open_dir(&self, rel: &Path, create: bool) -> Result<Option<OwnedFd>> {
        let open = |p: &Path| {
            rustix::fs::openat2(
                self.root.as_fd(),
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
            )
        };
        match open(rel) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err(format!("open directory {}", rel.display()))(e)),
        }
        // Create component by component; each prefix is resolved from the root again so a
        // symlink met on the way is still confined to the root.
        let mut prefix = PathBuf::new();
        let mut parent = open(Path::new("")).map_err(io_err("open staging root"))?;
        for comp in rel.components() {
            prefix.push(comp);
            let fd = match open(&prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(
                        parent.as_fd(),
                        comp.as_os_str(),
                        Mode::from_raw_mode(0o755),
                    )
                    .map_err(io_err(format!("create directory {}", prefix.display())))?;
                    open(&prefix).map_err(io_err(format!("open directory {}", prefix.display())))?
                }
                Err(e) => return Err(io_err(format!("open directory {}", prefix.display()))(e)),
            };
            parent = fd;
        }
        Ok(Some(parent))
    }

    /// Removes everything under `dir` that this layer did not write itself.
    fn clear_opaque(
        &self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        written: &HashSet<PathBuf>,
    ) -> Result<()> {
        let ctx = || format!("opaque directory {}", rel.display());
        for name in list_dir(dir).map_err(io_err(ctx()))? {
            let child = rel.join(&name);
            if !written.contains(&child) {
                remove_all_at(dir, name.as_os_str()).map_err(io_err(ctx()))?;
                continue;
            }
            let st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io_err(ctx()))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = rustix::fs::openat(
                    dir,
                    name.as_os_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err(ctx()))?;
                self.clear_opaque(sub.as_fd(), &child, written)?;
            }
        }
        Ok(())
    }

    /// Ownership, mode (with setuid/setgid/sticky bits) and mtime, in that order since
    /// chown clears setuid. With `name`, the entry `name` in directory `fd` (a final
    /// symlink is not followed); without, `fd` is the entry itself.
    fn set_meta<R: Read>(
        &self,
        fd: BorrowedFd<'_>,
        name: Option<&OsStr>,
        entry: &tar::Entry<'_, R>,
    ) -> Result<()> {
        let h = entry.header();
        let bad = |what: &str| Error::BadLayer(format!("bad {what} in tar header"));
        let uid = h.uid().map_err(|_| bad("uid"))?;
        let gid = h.gid().map_err(|_| bad("gid"))?;
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let mtime = h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
        if uid >= u32::MAX as u64 || gid >= u32::MAX as u64 {
            return Err(bad("uid/gid"));
        }
        let (uid, gid) = (Uid::from_raw(uid as u32), Gid::from_raw(gid as u32));
        let ctx = || {
            format!(
                "set metadata of {}",
                name.map(Path::new).unwrap_or(Path::new(".")).display()
            )
        };
        let at = |tv_sec| rustix::fs::Timespec { tv_sec, tv_nsec: 0 };
        let ts = Timestamps {
            last_access: at(mtime),
            last_modification: at(mtime),
        };
        match name {
            None => {
                if self.privileged {
                    rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(io_err(ctx()))?;
                }
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io_err(ctx()))?;
                rustix::fs::futimens(fd, &ts).map_err(io_err(ctx()))?;
            }
            Some(name) => {
                if self.privileged {
                    rustix::fs::chownat(fd, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_err(ctx()))?;
                }
                if !h.entry_type().is_symlink() {
                    // We just created this entry and it is not a symlink, so following
                    // is harmless (Linux has no lchmod).
                    rustix::fs::chmodat(fd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(io_err(ctx()))?;
                }
                rustix::fs::utimensat(fd, name, &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err(ctx()))?;
            }
        }
        Ok(())
    }

    /// Extended attributes from PAX headers (`SCHILY.xattr.*`), e.g. file
    /// capabilities. Best effort: a filesystem without xattr support loses them.
    fn set_xattrs<R: Read>(&self, fd: BorrowedFd<'_>, entry: &mut tar::Entry<'_, R>, path: &Path) {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return;
        };
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            let Some(attr) = key.strip_prefix("SCHILY.xattr.") else {
                continue;
            };
            // trusted.* would steer the guest's overlayfs; only user and security
            // attributes make sense in an image.
            if !(attr.starts_with("user.") || attr.starts_with("security.")) {
                continue;
            }
            if let Err(e) = rustix::fs::fsetxattr(fd, attr, ext.value_bytes(), XattrFlags::empty())
            {
                tracing::debug!(path = %path.display(), attr, error = %e, "cannot set xattr");
            }
        }
    }
}

/// Normalises a tar path to a relative path of normal components: a leading `/` and
/// `.` components are dropped (image paths are relative to the image root), `..` is an
/// error. `None` is the root itself.
pub(crate) fn clean_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::UnsafePath(raw.display().to_string()));
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn split(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("")),
        path.file_name().expect("cleaned path has a name"),
    )
}

fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<PathBuf>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let mut d = Dir::read_from(&fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(PathBuf::from(OsStr::from_bytes(n)));
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursively if it is a directory; symlinks are removed,
/// never followed.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(sub.as_fd())? {
        remove_all_at(sub.as_fd(), child.as_os_str())?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
