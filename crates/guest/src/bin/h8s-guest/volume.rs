//! Pod volumes with content from the host (ConfigMap, Secret, downward API, projected):
//! written into the volume's directory atomically, as kubelet's AtomicWriter does.
//!
//! Layout of `RUN_DIR/volumes/<name>/`:
//! ```text
//! ..2026_12_04_18_30_00.123456789/   the current files (a fresh directory per write)
//! ..data -> ..2026_…                 switched with one rename
//! key -> ..data/key                  one symlink per top-level name
//! ```
//! Containers bind-mount the directory read-only; an update changes what `..data` points to,
//! so every reader sees either the old or the new set, never a mix.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use h8s_guest::{ErrorCode, ProtoError, VolumeContent};

use crate::container::{validate_name, RUN_DIR};

const DATA: &str = "..data";

fn fail(what: &str, e: std::io::Error) -> ProtoError {
    ProtoError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

/// A relative path inside the volume: normal components only.
fn check_path(p: &str) -> Result<(), ProtoError> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && p.len() <= 4096
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !path
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with(".."));
    if ok {
        Ok(())
    } else {
        Err(ProtoError::new(
            ErrorCode::InvalidArgument,
            format!("bad volume file path {p:?}"),
        ))
    }
}

/// Replaces the volume's content.
pub fn write(v: &VolumeContent) -> Result<(), ProtoError> {
    validate_name("volume name", &v.name)?;
    for f in &v.files {
        check_path(&f.path)?;
    }
    let dir = Path::new(RUN_DIR).join("volumes").join(&v.name);
    fs::create_dir_all(&dir).map_err(|e| fail("create volume", e))?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let stamp = format!(
        "..{}_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let new = dir.join(&stamp);
    fs::create_dir(&new).map_err(|e| fail("create volume data", e))?;
    let mut top: Vec<String> = Vec::new();
    for f in &v.files {
        let target = new.join(&f.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| fail("create volume directory", e))?;
        }
        fs::write(&target, &f.data).map_err(|e| fail("write volume file", e))?;
        fs::set_permissions(
            &target,
            fs::Permissions::from_mode(f.mode.unwrap_or(0o644) & 0o7777),
        )
        .map_err(|e| fail("chmod volume file", e))?;
        let first = Path::new(&f.path)
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if !top.contains(&first) {
            top.push(first);
        }
    }
    // Switch `..data` in one rename.
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(|e| fail("link volume data", e))?;
    fs::rename(&tmp, dir.join(DATA)).map_err(|e| fail("switch volume data", e))?;
    // Visible names: add the new ones, drop the ones gone, drop old data directories.
    for t in &top {
        let link = dir.join(t);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(t), &link).map_err(|e| fail("link volume file", e))?;
        }
    }
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == DATA || name == stamp {
                continue;
            }
            if name.starts_with("..") {
                let _ = fs::remove_dir_all(e.path());
            } else if !top.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}
