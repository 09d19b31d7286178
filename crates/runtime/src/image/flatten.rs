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

use super::{Error, Result, UnpackBudget};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks layers into one directory tree. Holds the staging root open so every
/// operation is relative to the same directory, whatever happens to its path.
pub(crate) struct Flattener {
    root: OwnedFd,
    /// Only root may chown and mknod; as another user those steps are skipped.
    privileged: bool,
    budget: UnpackBudget,
    /// Decompressed bytes and entries of the layers applied so far.
    bytes_used: std::cell::Cell<u64>,
    entries_used: std::cell::Cell<u64>,
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
            budget: UnpackBudget::default(),
            bytes_used: Default::default(),
            entries_used: Default::default(),
        })
    }

    pub(crate) fn with_budget(mut self, budget: UnpackBudget) -> Flattener {
        self.budget = budget;
        self
    }

    /// How many decompressed bytes the next layer may have, and which limit that is.
    pub(crate) fn bytes_left(&self) -> (u64, &'static str) {
        let image_left = self
            .budget
            .image_bytes
            .saturating_sub(self.bytes_used.get());
        if image_left < self.budget.layer_bytes {
            (image_left, "decompressed bytes in the image")
        } else {
            (self.budget.layer_bytes, "decompressed bytes in a layer")
        }
    }

    /// Records the decompressed bytes of a layer just applied.
    pub(crate) fn charge_bytes(&self, n: u64) {
        self.bytes_used.set(self.bytes_used.get() + n);
    }

    fn count_entry(&self, in_layer: &mut u64) -> Result<()> {
        *in_layer += 1;
        if *in_layer > self.budget.layer_entries {
            return Err(Error::OverBudget {
                what: "entries in a layer",
                limit: self.budget.layer_entries,
            });
        }
        let total = self.entries_used.get() + 1;
        if total > self.budget.image_entries {
            return Err(Error::OverBudget {
                what: "entries in the image",
                limit: self.budget.image_entries,
            });
        }
        self.entries_used.set(total);
        Ok(())
    }

    /// Applies one uncompressed layer tar stream.
    pub(crate) fn apply<R: Read>(&self, layer: R) -> Result<LayerStats> {
        let mut archive = tar::Archive::new(layer);
        let mut written: HashSet<PathBuf> = HashSet::new();
        let mut stats = LayerStats::default();
        let entries = archive
            .entries()
            .map_err(|e| Error::BadLayer(e.to_string()))?;
        let mut in_layer = 0;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::BadLayer(e.to_string()))?;
            self.count_entry(&mut in_layer)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// Builds a layer; entries are appended with raw names so tests can write what a
    /// hostile layer would (the tar crate's own setters refuse `..`).
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Layer {
            Layer(tar::Builder::new(Vec::new()))
        }

        fn entry(
            &mut self,
            name: &str,
            kind: tar::EntryType,
            mode: u32,
            link: Option<&str>,
            data: &[u8],
        ) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            {
                let raw = &mut h.as_old_mut().name;
                raw.fill(0);
                raw[..name.len()].copy_from_slice(name.as_bytes());
            }
            if let Some(l) = link {
                let raw = &mut h.as_old_mut().linkname;
                raw.fill(0);
                raw[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(1234);
            h.set_gid(4321);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        fn file(&mut self, name: &str, mode: u32, data: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Regular, mode, None, data.as_bytes())
        }

        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Directory, 0o755, None, b"")
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Symlink, 0o777, Some(target), b"")
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Link, 0o644, Some(target), b"")
        }

        fn bytes(&mut self) -> Vec<u8> {
            std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
                .into_inner()
                .unwrap()
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host secret").unwrap();
        (t, root, outside)
    }

    fn outside_untouched(outside: &Path) {
        let names: Vec<_> = std::fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("secret")],
            "something was written outside the root"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host secret"
        );
        assert_eq!(
            std::fs::metadata(outside.join("secret")).unwrap().nlink(),
            1
        );
    }

    #[test]
    fn unpacks_files_dirs_links_and_metadata() {
        let (_t, root, _) = setup();
        let f = Flattener::new(&root).unwrap();
        let stats = f
            .apply(
                &Layer::new()
                    .dir("./etc/")
                    .file("etc/passwd", 0o644, "root:x:0:0")
                    .file("/usr/bin/su", 0o4755, "setuid")
                    .symlink("bin", "usr/bin")
                    .hardlink("etc/passwd.bak", "./etc/passwd")
                    .entry("run/fifo", tar::EntryType::Fifo, 0o600, None, b"")
                    .entry("dev/null", tar::EntryType::Char, 0o666, None, b"")
                    .bytes()[..],
            )
            .unwrap();
        assert_eq!(stats.entries, 7);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "root:x:0:0"
        );
        let su = std::fs::metadata(root.join("usr/bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755, "setuid bit kept");
        assert_eq!(su.mtime(), 1_000_000);
        assert_eq!(
            std::fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        let a = std::fs::metadata(root.join("etc/passwd")).unwrap();
        let b = std::fs::metadata(root.join("etc/passwd.bak")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
        // Parents that the layer did not list are created 0755.
        assert_eq!(
            std::fs::metadata(root.join("usr")).unwrap().mode() & 0o777,
            0o755
        );
        assert!(std::fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        if rustix::process::geteuid().is_root() {
            assert_eq!((su.uid(), su.gid()), (1234, 4321));
            let l = std::fs::symlink_metadata(root.join("bin")).unwrap();
            assert_eq!(
                (l.uid(), l.gid()),
                (1234, 4321),
                "symlink owner set without following it"
            );
            assert!(std::fs::symlink_metadata(root.join("dev/null"))
                .unwrap()
                .file_type()
                .is_char_device());
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let (_t, root, _) = setup();
        let f = Flattener::new(&root).unwrap();
        f.apply(
            &Layer::new()
                .file("a/x", 0o644, "x")
                .file("a/y", 0o644, "y")
                .file("b/old", 0o644, "old")
                .file("b/sub/deep", 0o644, "deep")
                .file("c/keep", 0o644, "keep")
                .file("d/gone/file", 0o644, "f")
                .bytes()[..],
        )
        .unwrap();
        let stats = f
            .apply(
                &Layer::new()
                    .file("a/.wh.x", 0o644, "")
                    // The layer's own entries in an opaque dir survive even when they
                    // come before the marker.
                    .file("b/new", 0o644, "new")
                    .dir("b/sub")
                    .file("b/.wh..wh..opq", 0o644, "")
                    .file("d/.wh.gone", 0o644, "")
                    .file("nonexistent/.wh.z", 0o644, "")
                    .bytes()[..],
            )
            .unwrap();
        assert_eq!(stats.whiteouts, 4);
        assert!(!root.join("a/x").exists());
        assert!(root.join("a/y").exists());
        assert!(
            !root.join("a/.wh.x").exists(),
            "whiteout markers are not files in the result"
        );
        assert!(!root.join("b/old").exists());
        assert!(
            root.join("b/sub").is_dir(),
            "dir re-listed by the layer stays"
        );
        assert!(
            !root.join("b/sub/deep").exists(),
            "but its lower contents go"
        );
        assert_eq!(std::fs::read_to_string(root.join("b/new")).unwrap(), "new");
        assert!(root.join("c/keep").exists());
        assert!(
            !root.join("d/gone").exists(),
            "whiteout removes whole directories"
        );
        assert!(!root.join("nonexistent").exists());
        // A later layer replaces a file by a directory and a directory by a file.
        f.apply(
            &Layer::new()
                .dir("a/y")
                .file("a/y/z", 0o644, "z")
                .file("c", 0o600, "file now")
                .bytes()[..],
        )
        .unwrap();
        assert!(root.join("a/y").is_dir());
        assert_eq!(std::fs::read_to_string(root.join("c")).unwrap(), "file now");
    }

    #[test]
    fn rejects_parent_dir_components() {
        let (_t, root, outside) = setup();
        let f = Flattener::new(&root).unwrap();
        for bad in ["../outside/evil", "a/../../outside/evil", "./../x"] {
            let err = f
                .apply(&Layer::new().file(bad, 0o644, "pwned").bytes()[..])
                .unwrap_err();
            assert!(matches!(err, Error::UnsafePath(_)), "{bad}: {err}");
        }
        let err = f
            .apply(&Layer::new().hardlink("h", "../outside/secret").bytes()[..])
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath(_)), "{err}");
        let err = f
            .apply(&Layer::new().file("a/.wh...", 0o644, "").bytes()[..])
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath(_)), "{err}");
        outside_untouched(&outside);
    }

    #[test]
    fn symlinks_cannot_lead_outside_the_root() {
        let (_t, root, outside) = setup();
        let f = Flattener::new(&root).unwrap();
        let abs = outside.to_str().unwrap();
        // Absolute and relative symlinks to the outside dir, then entries through them.
        let _ = f.apply(
            &Layer::new()
                .symlink("abs", abs)
                .symlink("rel", "../outside")
                .symlink("deep", "../../../../../../../../")
                .bytes()[..],
        );
        for layer in [
            Layer::new().file("abs/pwned", 0o644, "x").bytes(),
            Layer::new().file("rel/pwned", 0o644, "x").bytes(),
            Layer::new()
                .file(&format!("deep{abs}/pwned"), 0o644, "x")
                .bytes(),
            Layer::new().hardlink("stolen", "abs/secret").bytes(),
            Layer::new().hardlink("stolen2", "rel/secret").bytes(),
            Layer::new().file("abs/.wh.secret", 0o644, "").bytes(),
            Layer::new().file("rel/.wh..wh..opq", 0o644, "").bytes(),
            Layer::new().dir("abs/newdir").bytes(),
        ] {
            // Either refused or confined: what matters is the host side.
            let _ = f.apply(&layer[..]);
            outside_untouched(&outside);
        }
        // Entries through "deep" resolved inside the root instead.
        assert!(root
            .join(abs.trim_start_matches('/'))
            .join("pwned")
            .exists());
        // A file over a symlink replaces the link; it never writes through it.
        std::fs::write(outside.join("target"), "host").unwrap();
        f.apply(&Layer::new().symlink("f", &format!("{abs}/target")).bytes()[..])
            .unwrap();
        f.apply(&Layer::new().file("f", 0o644, "image").bytes()[..])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("target")).unwrap(),
            "host"
        );
        assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "image");
        std::fs::remove_file(outside.join("target")).unwrap();
        outside_untouched(&outside);
        // The staging root's own mode is set through its fd, whatever the layer says.
        let m = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o755);
    }

    #[test]
    fn clean_path_normalises() {
        assert_eq!(
            clean_path(Path::new("/a/./b/")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_path(Path::new("./")).unwrap(), None);
        assert!(clean_path(Path::new("a/../b")).is_err());
    }
}
