//! Backups: a consistent snapshot of any backend in one file, restorable into any backend.
//!
//! The snapshot is every key read at one revision (paged, so it is consistent even while
//! the store is being written). File layout, all integers little-endian:
//!
//! ```text
//! "H8S-STORE-BACKUP\n"  u32 format (1)  i64 revision
//! per key:  u8 1, u32 key length, key, i64 create_revision, i64 mod_revision,
//!           u64 value length, value
//! trailer:  u8 0, u64 key count, u64 FNV-1a-64 of every byte before the trailer
//! ```
//!
//! A restore reads and verifies the whole file before it writes anything, so a truncated
//! or damaged backup is refused without touching the target.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;

use crate::{Error, KeyValue, ListOptions, Result, Revision, Store};

const MAGIC: &[u8] = b"H8S-STORE-BACKUP\n";
const FORMAT: u32 = 1;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// The revision the snapshot was read at.
    pub revision: Revision,
    /// Keys in it.
    pub keys: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Writes through, hashing and counting.
struct Hashing<W> {
    w: W,
    hash: Fnv,
    n: u64,
}
impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.n += b.len() as u64;
        self.w.write_all(b)
    }
}

/// Snapshots `store` into `path` (written to a temporary name, synced, then renamed).
pub async fn backup(store: &dyn Store, path: &Path) -> Result<BackupSummary> {
    let revision = store.revision().await?;
    let tmp = path.with_extension("partial");
    // A backup holds every Secret: readable by its owner only.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    let mut out = Hashing {
        w: BufWriter::new(file),
        hash: Fnv::new(),
        n: 0,
    };
    out.put(MAGIC)?;
    out.put(&FORMAT.to_le_bytes())?;
    out.put(&revision.to_le_bytes())?;
    let mut keys = 0u64;
    let mut last: Option<String> = None;
    loop {
        let page = store
            .list(
                "",
                ListOptions {
                    revision: Some(revision),
                    start_after: last.clone(),
                    limit: Some(1000),
                },
            )
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        for kv in &page.items {
            out.put(&[1])?;
            out.put(&(kv.key.len() as u32).to_le_bytes())?;
            out.put(kv.key.as_bytes())?;
            out.put(&kv.create_revision.to_le_bytes())?;
            out.put(&kv.mod_revision.to_le_bytes())?;
            out.put(&(kv.value.len() as u64).to_le_bytes())?;
            out.put(&kv.value)?;
            keys += 1;
        }
        if !page.more || page.items.is_empty() {
            break;
        }
        last = page.items.last().map(|kv| kv.key.clone());
    }
    let hash = out.hash.0;
    out.put(&[0])?;
    out.put(&keys.to_le_bytes())?;
    out.put(&hash.to_le_bytes())?;
    let bytes = out.n;
    let file = out.w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(BackupSummary {
        revision,
        keys,
        bytes,
    })
}

/// Reads and verifies a backup file completely.
pub fn read_backup(path: &Path) -> Result<(BackupSummary, Vec<KeyValue>)> {
    let bad = |why: &str| Error::Corrupt(format!("backup {}: {why}", path.display()));
    let file = std::fs::File::open(path)?;
    let bytes = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut hash = Fnv::new();
    let take = |n: usize, hash: &mut Fnv, r: &mut BufReader<std::fs::File>| -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad("truncated"),
            _ => Error::Io(e),
        })?;
        hash.update(&b);
        Ok(b)
    };
    let magic = take(MAGIC.len(), &mut hash, &mut r).map_err(|_| bad("not an h8s store backup"))?;
    if magic != MAGIC {
        return Err(bad("not an h8s store backup"));
    }
    let format = u32::from_le_bytes(take(4, &mut hash, &mut r)?.try_into().expect("4"));
    if format != FORMAT {
        return Err(bad(&format!("unsupported backup format {format}")));
    }
    let revision = i64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
    let mut items = Vec::new();
    loop {
        let before = hash.0;
        match take(1, &mut hash, &mut r)?[0] {
            1 => {}
            0 => {
                let count = u64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
                let sum = u64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
                if sum != before {
                    return Err(bad("checksum mismatch"));
                }
                if count != items.len() as u64 {
                    return Err(bad("key count mismatch"));
                }
                let mut rest = Vec::new();
                r.read_to_end(&mut rest)?;
                if !rest.is_empty() {
                    return Err(bad("trailing bytes"));
                }
                return Ok((
                    BackupSummary {
                        revision,
                        keys: count,
                        bytes,
                    },
                    items,
                ));
            }
            _ => return Err(bad("bad record marker")),
        }
        let klen = u32::from_le_bytes(take(4, &mut hash, &mut r)?.try_into().expect("4")) as usize;
        if klen as u64 > bytes {
            return Err(bad("bad key length"));
        }
        let key = String::from_utf8(take(klen, &mut hash, &mut r)?)
            .map_err(|_| bad("key is not UTF-8"))?;
        let create_revision =
            i64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
        let mod_revision = i64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
        let vlen = u64::from_le_bytes(take(8, &mut hash, &mut r)?.try_into().expect("8"));
        if vlen > bytes {
            return Err(bad("bad value length"));
        }
        let value = Bytes::from(take(vlen as usize, &mut hash, &mut r)?);
        if items.last().is_some_and(|p: &KeyValue| p.key >= key) {
            return Err(bad("keys out of order"));
        }
        items.push(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
        });
    }
}

/// Restores a backup into `store`, which must be empty. Verifies the file first.
pub async fn restore(store: &dyn Store, path: &Path) -> Result<BackupSummary> {
    let (summary, items) = read_backup(path)?;
    let existing = store.count("").await?;
    if existing > 0 {
        return Err(Error::AlreadyExists(format!(
            "the target store already holds {existing} keys; restore needs an empty store"
        )));
    }
    store.load_snapshot(items, summary.revision).await?;
    Ok(summary)
}
