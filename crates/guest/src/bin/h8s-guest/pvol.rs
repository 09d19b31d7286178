//! Persistent volumes (PVCs, `cinder:`): the filesystem on a volume disk is mounted once per
//! pod at `RUN_DIR/pv/<disk>` — only this guest kernel ever parses it, never the host — then
//! containers bind-mount the volume (or a `subPath` in it) from there.
//!
//! On its first mount in this VM the filesystem is grown to the disk's size (offline expansion:
//! the host grew the backing store while no VM had it) with ext4's online resize ioctl, and,
//! with an `fsGroup`, every file is made group-owned by it (set-gid directories, group rw), as
//! kubelet does.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use h8s_guest::{ErrorCode, ProtoError};

use crate::container::RUN_DIR;
use crate::sys;

fn mount_failed(msg: String) -> ProtoError {
    ProtoError::new(ErrorCode::MountFailed, msg)
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mountpoint(dir: &Path) -> bool {
    match (fs::metadata(dir), dir.parent().map(fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Mounts the volume disk `dev` (e.g. `/dev/vdc`) at `RUN_DIR/pv/vdc` unless it is already,
/// and returns that directory.
pub fn ensure(
    dev: &Path,
    fstype: &str,
    fs_group: Option<u32>,
    read_only: bool,
) -> Result<PathBuf, ProtoError> {
    if fstype != "ext4" {
        return Err(ProtoError::new(
            ErrorCode::InvalidArgument,
            format!("filesystem type {fstype:?} is not supported for volumes (ext4 is)"),
        ));
    }
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new(RUN_DIR).join("pv").join(&name);
    if is_mountpoint(&dir) {
        return Ok(dir);
    }
    fs::create_dir_all(&dir)
        .map_err(|e| mount_failed(format!("create the volume's mount point: {e}")))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | if read_only { libc::MS_RDONLY } else { 0 };
    // Read-only: never replay the journal. Read-write: no background zeroing of the inode
    // tables mkfs left uninitialized (it would compete with the pod's own I/O for the VM's
    // CPU; the tables stay valid without it).
    let opts = if read_only {
        Some("noload")
    } else {
        Some("noinit_itable")
    };
    sys::mount(
        Some(&dev.to_string_lossy()),
        &dir,
        Some(fstype),
        flags,
        opts,
    )
    .map_err(|e| {
        mount_failed(format!(
            "mount the volume's {fstype} filesystem: {e} (the volume is damaged or not formatted)"
        ))
    })?;
    if !read_only {
        grow(dev, &dir)?;
        if let Some(g) = fs_group {
            apply_fs_group(&dir, g)
                .map_err(|e| mount_failed(format!("set the volume's fsGroup {g}: {e}")))?;
        }
    }
    Ok(dir)
}

/// Grows the mounted ext4 filesystem to its disk's size (a no-op when it fills the disk).
fn grow(dev: &Path, dir: &Path) -> Result<(), ProtoError> {
    let name = dev.file_name().unwrap_or_default();
    let sectors: u64 = fs::read_to_string(Path::new("/sys/block").join(name).join("size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let bsize = sys::statfs_block_size(dir).unwrap_or(0);
    if sectors == 0 || bsize == 0 {
        return Ok(());
    }
    let blocks = sectors * 512 / bsize;
    sys::ext4_resize(dir, blocks).map_err(|e| {
        mount_failed(format!(
            "grow the volume's filesystem to {blocks} blocks: {e}"
        ))
    })
}

fn apply_fs_group(dir: &Path, gid: u32) -> std::io::Result<()> {
    let md = fs::symlink_metadata(dir)?;
    sys::lchown(dir, None, Some(gid))?;
    let mut mode = md.mode() & 0o7777;
    mode |= 0o060;
    if md.is_dir() {
        mode |= 0o2010;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    if md.is_dir() {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            let m = fs::symlink_metadata(&p)?;
            if m.file_type().is_symlink() {
                sys::lchown(&p, None, Some(gid))?;
            } else if m.is_dir() || m.is_file() {
                apply_fs_group(&p, gid)?;
            }
        }
    }
    Ok(())
}
