//! Per-pod uid allocation: one marker file per uid in use, `<root>/jail/uids/<uid>`, holding
//! the pod id. Creating it with `O_EXCL` is the allocation, so concurrent starters (the CLI
//! and the node agent) never hand out one uid twice; a marker whose pod directory is gone
//! (a crash between allocation and clean-up) is reclaimed.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::UidRange;
use crate::{Error, Result};

fn dir(root: &Path) -> PathBuf {
    root.join("jail").join("uids")
}

/// The uid marker file of `uid`.
pub(crate) fn marker(root: &Path, uid: u32) -> PathBuf {
    dir(root).join(uid.to_string())
}

/// Allocates a uid in `range` for pod `id` (whose directory must exist already). Probing
/// starts at a point derived from the id, so pods rarely collide.
pub(crate) fn allocate(root: &Path, range: UidRange, id: &str) -> Result<u32> {
    let d = dir(root);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    let n = u64::from(range.len());
    let start = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) % n;
    for i in 0..n {
        let uid = range.first + ((start + i) % n) as u32;
        let path = marker(root, uid);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                    return Ok(uid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    // An empty marker is one being written right now: not stale.
                    if owner.is_empty() || root.join("pods").join(owner.trim()).is_dir() {
                        break;
                    }
                    tracing::info!(uid, pod = %owner, "reclaiming the uid of a pod that is gone");
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
    }
    Err(Error::FailedPrecondition(format!(
        "no free uid left in the jail's range {range} ({n} pods)"
    )))
}

/// Frees `uid` if pod `id` holds it.
pub(crate) fn release(root: &Path, uid: u32, id: &str) {
    let path = marker(root, uid);
    if std::fs::read_to_string(&path).is_ok_and(|o| o.trim() == id) {
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_distinct_uids_until_the_range_is_full() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let range = UidRange {
            first: 5000,
            last: 5002,
        };
        let mut got = Vec::new();
        for id in ["a", "b", "c"] {
            std::fs::create_dir_all(root.join("pods").join(id)).unwrap();
            got.push(allocate(root, range, id).unwrap());
        }
        got.sort();
        assert_eq!(got, vec![5000, 5001, 5002]);
        std::fs::create_dir_all(root.join("pods/d")).unwrap();
        let e = allocate(root, range, "d").unwrap_err();
        assert!(e.to_string().contains("no free uid"), "{e}");
        // Releasing needs the right owner.
        let a_uid = std::fs::read_dir(dir(root))
            .unwrap()
            .flatten()
            .find(|e| std::fs::read_to_string(e.path()).unwrap() == "a")
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse::<u32>()
            .unwrap();
        release(root, a_uid, "b");
        assert!(marker(root, a_uid).exists());
        release(root, a_uid, "a");
        assert!(!marker(root, a_uid).exists());
        assert_eq!(allocate(root, range, "d").unwrap(), a_uid);
    }

    #[test]
    fn a_gone_pods_uid_is_reclaimed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let range = UidRange {
            first: 7000,
            last: 7000,
        };
        std::fs::create_dir_all(root.join("pods/old")).unwrap();
        assert_eq!(allocate(root, range, "old").unwrap(), 7000);
        std::fs::create_dir_all(root.join("pods/new")).unwrap();
        assert!(allocate(root, range, "new").is_err());
        std::fs::remove_dir(root.join("pods/old")).unwrap();
        assert_eq!(allocate(root, range, "new").unwrap(), 7000);
        assert_eq!(std::fs::read_to_string(marker(root, 7000)).unwrap(), "new");
    }
}
