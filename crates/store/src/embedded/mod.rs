//! The embedded backend: one crash-safe redb file with etcd's revision model.
//!
//! Layout (four redb tables):
//! - `h8s_meta`: the format marker, the current revision and the compaction revision;
//! - `h8s_kv`: each live key's newest state (`create_revision`, `mod_revision`, value);
//! - `h8s_log`: revision → the write made at that revision, with the value it replaced,
//!   for every revision after the compaction revision (feeds watches and past reads);
//! - `h8s_hist`: `(key, revision)` index over the log, so a list at a past revision walks
//!   only the history of the keys it returns.
//!
//! All writes go through one writer thread that batches whatever requests are queued into
//! one redb transaction (group commit): each request still gets its own revision and its
//! own answer, but concurrent writers share one fsync. A write is acknowledged only after
//! its transaction is durably committed.

mod codec;
mod watch;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{
    CheckReport, Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store,
    WatchStream,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("h8s_meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("h8s_kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("h8s_log");
const HIST: TableDefinition<(&str, u64), ()> = TableDefinition::new("h8s_hist");

const FORMAT_KEY: &str = "format";
const FORMAT_MAGIC: &[u8] = b"h8s-store";
const VERSION_KEY: &str = "format_version";
const FORMAT_VERSION: u64 = 1;
const REVISION_KEY: &str = "revision";
/// The revision of a store nothing has been written to.
const FIRST_REVISION: Revision = 1;
const COMPACTED_KEY: &str = "compacted";

/// Tuning of the embedded store. The defaults suit an API server.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Largest value accepted, in bytes ([`Error::TooLarge`] above it).
    pub max_value_size: usize,
    /// Automatic compaction keeps at least this many of the newest revisions…
    pub retain_revisions: u64,
    /// …and every revision younger than this…
    pub retain_for: Duration,
    /// …but never more than this many revisions (bounds the file under heavy write load).
    pub max_retain_revisions: u64,
    /// How often automatic compaction runs; `None` turns it off.
    pub compact_every: Option<Duration>,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Bytes of redb's page cache (it fills only with pages actually read or written;
    /// the OS page cache holds the file as well).
    pub cache_size: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_value_size: crate::DEFAULT_MAX_VALUE_SIZE,
            retain_revisions: 10_000,
            retain_for: Duration::from_secs(5 * 60),
            max_retain_revisions: 1_000_000,
            compact_every: Some(Duration::from_secs(30)),
            max_batch: 1024,
            cache_size: 128 * 1024 * 1024,
        }
    }
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last handle waits for
/// queued writes and closes the file.
pub struct Embedded {
    shared: Arc<Shared>,
    writes: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    db: Database,
    path: PathBuf,
    opts: EmbeddedOptions,
    /// Newest revision whose events have been broadcast.
    published: AtomicI64,
    compacted: AtomicI64,
    /// Held while publishing, so a new watcher's subscription and its view of
    /// `published` agree.
    events: Mutex<broadcast::Sender<Arc<[Event]>>>,
}

enum Op {
    Create(String, Bytes),
    Update(String, Bytes, Revision),
    Delete(String, Option<Revision>),
    Compact(Option<Revision>),
    Import(Vec<KeyValue>, Revision),
}

enum Done {
    Kv(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

impl Embedded {
    /// Opens the store file at `path`, creating it if it does not exist. A file that exists
    /// but is damaged or is not an h8s store is refused with [`Error::Corrupt`]; it is never
    /// replaced by an empty store.
    pub fn open(path: &Path) -> Result<Embedded> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// [`Embedded::open`] with explicit options.
    pub fn open_with(path: &Path, opts: EmbeddedOptions) -> Result<Embedded> {
        let db = open_or_create(path, opts.cache_size)?;
        let (mut revision, mut compacted) = {
            let txn = db.begin_read().map_err(db_err)?;
            read_marker(&txn, path)?
        };
        if revision < FIRST_REVISION {
            // Made before new stores started at revision 1, and never written to.
            let txn = db.begin_write().map_err(db_err)?;
            mark_first_revision(&mut txn.open_table(META).map_err(db_err)?)?;
            txn.commit().map_err(db_err)?;
            (revision, compacted) = (FIRST_REVISION, FIRST_REVISION);
        }
        tracing::info!(path = %path.display(), revision, compacted, "embedded store opened");
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            db,
            path: path.to_owned(),
            opts,
            published: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            events: Mutex::new(events),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("h8s-store-writer".into())
            .spawn(move || writer_loop(writer_shared, rx, revision))?;
        Ok(Embedded {
            shared,
            writes: Some(tx),
            writer: Some(writer),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Verifies a closed store file page by page (redb's checksums), then its logical
    /// invariants; the file must not be open elsewhere.
    pub fn check_file(path: &Path) -> Result<CheckReport> {
        if !path.exists() {
            return Err(Error::NotFound(path.display().to_string()));
        }
        let mut db = Database::open(path).map_err(|e| open_err(path, e))?;
        let clean = db.check_integrity().map_err(|e| open_err(path, e))?;
        if !clean {
            return Err(Error::Corrupt(format!(
                "{}: page checksums failed",
                path.display()
            )));
        }
        let txn = db.begin_read().map_err(db_err)?;
        read_marker(&txn, path)?;
        check_txn(&txn)
    }

    async fn write(&self, op: Op) -> Result<Done> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .as_ref()
            .expect("writer present until drop")
            .send(Request { op, reply })
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("store writer stopped".into()))?
    }

    /// Runs a read transaction on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let txn = shared.db.begin_read().map_err(db_err)?;
            f(&txn)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store reader failed: {e}")))?
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; joining it
        // means the file is closed (and can be reopened) once the store is dropped.
        self.writes.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[async_trait::async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |txn| {
            let kv = txn.open_table(KV).map_err(db_err)?;
            match kv.get(key.as_str()).map_err(db_err)? {
                Some(v) => Ok(Some(codec::decode_record(&key, v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.read(move |txn| list_at(txn, &prefix, &opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let kv = txn.open_table(KV).map_err(db_err)?;
            let mut n = 0;
            for entry in kv.range::<&str>(prefix.as_str()..).map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        match self.write(Op::Create(key.to_owned(), value)).await? {
            Done::Kv(kv) => Ok(kv),
            _ => unreachable!("create answers with a key-value"),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        match self
            .write(Op::Update(key.to_owned(), value, expected))
            .await?
        {
            Done::Kv(kv) => Ok(kv),
            _ => unreachable!("update answers with a key-value"),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        match self.write(Op::Delete(key.to_owned(), expected)).await? {
            Done::Deleted(kv, rev) => Ok((kv, rev)),
            _ => unreachable!("delete answers with the deleted key"),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::start(&self.shared, prefix, after)
    }

    async fn revision(&self) -> Result<Revision> {
        Ok(self.shared.published.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(Op::Compact(Some(revision))).await.map(|_| ())
    }

    async fn check(&self) -> Result<CheckReport> {
        self.read(check_txn).await
    }

    async fn load_snapshot(&self, items: Vec<KeyValue>, revision: Revision) -> Result<()> {
        self.write(Op::Import(items, revision)).await.map(|_| ())
    }
}

// ---- opening -------------------------------------------------------------------------

fn open_or_create(path: &Path, cache: usize) -> Result<Database> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::Corrupt(format!(
            "{} is a directory, not a store file",
            path.display()
        ))),
        Ok(m) => {
            // Stores made before files were private get tightened on open.
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            redb::Builder::new()
                .set_cache_size(cache)
                .open(path)
                .map_err(|e| open_err(path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, cache),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Creates a new store file atomically: it is initialised under a temporary name and
/// renamed into place, so a crash never leaves a half-made file that would later be
/// mistaken for a damaged store.
fn create(path: &Path, cache: usize) -> Result<Database> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("redb.creating");
    let _ = std::fs::remove_file(&tmp);
    let db = redb::Builder::new()
        .set_cache_size(cache)
        .create(&tmp)
        .map_err(|e| open_err(&tmp, e))?;
    // The store holds every Secret: readable by its owner only.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(FORMAT_KEY, FORMAT_MAGIC).map_err(db_err)?;
        meta.insert(VERSION_KEY, &FORMAT_VERSION.to_le_bytes()[..])
            .map_err(db_err)?;
        mark_first_revision(&mut meta)?;
        txn.open_table(KV).map_err(db_err)?;
        txn.open_table(LOG).map_err(db_err)?;
        txn.open_table(HIST).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), "created a new embedded store");
    Ok(db)
}

/// Checks the format marker; returns (revision, compacted).
fn read_marker(txn: &ReadTransaction, path: &Path) -> Result<(Revision, Revision)> {
    let foreign = || {
        Error::Corrupt(format!(
            "{} is a database file but not an h8s store (no h8s format marker)",
            path.display()
        ))
    };
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(foreign()),
        Err(e) => return Err(db_err(e)),
    };
    match meta.get(FORMAT_KEY).map_err(db_err)? {
        Some(v) if v.value() == FORMAT_MAGIC => {}
        _ => return Err(foreign()),
    }
    let version = match meta.get(VERSION_KEY).map_err(db_err)? {
        Some(v) => u64::from_le_bytes(
            v.value()
                .try_into()
                .map_err(|_| Error::Corrupt("bad format version".into()))?,
        ),
        None => return Err(foreign()),
    };
    if version != FORMAT_VERSION {
        return Err(Error::Corrupt(format!(
            "{} has store format version {version}; this h8s reads version {FORMAT_VERSION}",
            path.display()
        )));
    }
    let revision = meta_i64(&meta, REVISION_KEY)?;
    let compacted = meta_i64(&meta, COMPACTED_KEY)?;
    let missing = |t: &str| Error::Corrupt(format!("{}: table {t} is missing", path.display()));
    match txn.open_table(KV) {
        Err(redb::TableError::TableDoesNotExist(t)) => return Err(missing(&t)),
        Err(e) => return Err(db_err(e)),
        Ok(_) => {}
    }
    match txn.open_table(LOG) {
        Err(redb::TableError::TableDoesNotExist(t)) => return Err(missing(&t)),
        Err(e) => return Err(db_err(e)),
        Ok(_) => {}
    }
    Ok((revision, compacted))
}

/// Puts a store nothing has been written to at [`FIRST_REVISION`], as a new etcd is at
/// revision 1: revision 0 means "now" to `watch`, so a list of an empty store followed by a
/// watch from its revision would skip a write landing between the two.
fn mark_first_revision(meta: &mut redb::Table<&'static str, &'static [u8]>) -> Result<()> {
    for key in [REVISION_KEY, COMPACTED_KEY] {
        meta.insert(key, &FIRST_REVISION.to_le_bytes()[..])
            .map_err(db_err)?;
    }
    Ok(())
}

fn meta_i64(meta: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<i64> {
    let v = meta
        .get(key)
        .map_err(db_err)?
        .ok_or_else(|| Error::Corrupt(format!("meta {key} missing")))?;
    Ok(i64::from_le_bytes(v.value().try_into().map_err(|_| {
        Error::Corrupt(format!("meta {key} has a bad length"))
    })?))
}

fn open_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => Error::Unavailable(format!(
            "{} is already open in another process",
            path.display()
        )),
        redb::Error::Corrupted(m) => Error::Corrupt(format!(
            "{} is damaged or not an h8s store file: {m}",
            path.display()
        )),
        redb::Error::UpgradeRequired(v) => Error::Corrupt(format!(
            "{} is in an unsupported database format ({v})",
            path.display()
        )),
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Error::Corrupt(format!(
                "{} is damaged or not an h8s store file: {e}",
                path.display()
            ))
        }
        redb::Error::Io(e) => Error::Io(e),
        other => Error::Corrupt(format!("{}: {other}", path.display())),
    }
}

pub(crate) fn db_err(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Corrupted(m) => Error::Corrupt(m),
        redb::Error::Io(e) => Error::Io(e),
        other => Error::Unavailable(other.to_string()),
    }
}

// ---- reads ---------------------------------------------------------------------------

fn list_at(txn: &ReadTransaction, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let meta = txn.open_table(META).map_err(db_err)?;
    let current = meta_i64(&meta, REVISION_KEY)?;
    let compacted = meta_i64(&meta, COMPACTED_KEY)?;
    let rev = match opts.revision {
        None | Some(0) => current,
        Some(r) => r,
    };
    if rev > current {
        return Err(Error::FutureRevision {
            requested: rev,
            current,
        });
    }
    if rev < compacted {
        return Err(Error::Compacted {
            requested: rev,
            compacted,
        });
    }
    let limit = match opts.limit {
        None | Some(0) => usize::MAX,
        Some(n) => n,
    };
    let start: Bound<&str> = match opts.start_after.as_deref() {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let kv = txn.open_table(KV).map_err(db_err)?;
    let mut items = Vec::new();
    let mut more = false;
    if rev == current {
        for entry in kv
            .range::<&str>((start, Bound::Unbounded))
            .map_err(db_err)?
        {
            let (k, v) = entry.map_err(db_err)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(codec::decode_record(k, v.value())?);
        }
        return Ok(ListResult {
            items,
            revision: rev,
            more,
        });
    }

    // A past revision: merge the live keys with the history index. For each key, the
    // first change after `rev` carries the state the key had at `rev`; a key with no
    // change after `rev` still has its live state.
    let hist = txn.open_table(HIST).map_err(db_err)?;
    let log = txn.open_table(LOG).map_err(db_err)?;
    let hist_start = match start {
        Bound::Excluded(s) => Bound::Excluded((s, u64::MAX)),
        _ => Bound::Included((prefix, 0u64)),
    };
    let mut kv_it = kv
        .range::<&str>((start, Bound::Unbounded))
        .map_err(db_err)?;
    let mut h_it = hist.range((hist_start, Bound::Unbounded)).map_err(db_err)?;
    let next_kv =
        |it: &mut redb::Range<&'static str, &'static [u8]>| -> Result<Option<(String, Vec<u8>)>> {
            match it.next() {
                Some(e) => {
                    let (k, v) = e.map_err(db_err)?;
                    Ok(Some((k.value().to_owned(), v.value().to_vec())))
                }
                None => Ok(None),
            }
        };
    let next_h = |it: &mut redb::Range<(&'static str, u64), ()>| -> Result<Option<(String, u64)>> {
        match it.next() {
            Some(e) => {
                let (k, _) = e.map_err(db_err)?;
                let (key, r) = k.value();
                Ok(Some((key.to_owned(), r)))
            }
            None => Ok(None),
        }
    };
    let mut kv_next = next_kv(&mut kv_it)?;
    let mut h_next = next_h(&mut h_it)?;
    loop {
        let key = match (&kv_next, &h_next) {
            (None, None) => break,
            (Some((a, _)), None) => a.clone(),
            (None, Some((b, _))) => b.clone(),
            (Some((a, _)), Some((b, _))) => a.min(b).clone(),
        };
        if !key.starts_with(prefix) {
            break;
        }
        let mut at_rev: Option<Option<KeyValue>> = None;
        while let Some((k, r)) = &h_next {
            if *k != key {
                break;
            }
            if at_rev.is_none() && *r as i64 > rev {
                let raw = log
                    .get(*r)
                    .map_err(db_err)?
                    .ok_or_else(|| Error::Corrupt(format!("history entry {r} has no log")))?;
                let (event, _) = codec::decode_log(*r as i64, raw.value())?;
                at_rev = Some(match event {
                    Event::Put { prev, .. } => prev,
                    Event::Delete { prev, .. } => Some(prev),
                });
            }
            h_next = next_h(&mut h_it)?;
        }
        let live = match &kv_next {
            Some((k, _)) if *k == key => {
                let (k, v) = kv_next.take().expect("checked");
                kv_next = next_kv(&mut kv_it)?;
                Some(codec::decode_record(&k, &v)?)
            }
            _ => None,
        };
        if let Some(state) = at_rev.unwrap_or(live) {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(state);
        }
    }
    Ok(ListResult {
        items,
        revision: rev,
        more,
    })
}

/// Logical invariants: revisions in range, the log contiguous after the compaction
/// revision, the history index matching the log, every key whose last logged write is a
/// put live with exactly that write, every key whose last logged write is a delete gone.
/// One pass over the log, one over the live keys; values are compared in place.
fn check_txn(txn: &ReadTransaction) -> Result<CheckReport> {
    let meta = txn.open_table(META).map_err(db_err)?;
    let current = meta_i64(&meta, REVISION_KEY)?;
    let compacted = meta_i64(&meta, COMPACTED_KEY)?;
    let mut problems = Vec::new();
    let mut problem = |p: String| {
        if problems.len() < 20 {
            problems.push(p);
        }
    };
    if compacted > current || compacted < 0 {
        problem(format!(
            "compaction revision {compacted} outside 0..={current}"
        ));
    }
    let kv = txn.open_table(KV).map_err(db_err)?;
    let log = txn.open_table(LOG).map_err(db_err)?;
    let hist = txn.open_table(HIST).map_err(db_err)?;

    // The log: contiguous, indexed, and each key's last write in the window.
    let mut expect = compacted + 1;
    let mut history = 0u64;
    // key -> (revision, was a put)
    let mut last_write: std::collections::HashMap<String, (Revision, bool)> = Default::default();
    for entry in log.range::<u64>(..).map_err(db_err)? {
        let (r, raw) = entry.map_err(db_err)?;
        let r = r.value() as i64;
        if r != expect {
            problem(format!("log gap: expected revision {expect}, found {r}"));
        }
        expect = r + 1;
        history += 1;
        let raw = raw.value();
        let v = codec::view_log(r, raw)?;
        if hist.get((v.key, r as u64)).map_err(db_err)?.is_none() {
            problem(format!("history index lacks {}@{r}", v.key));
        }
        match last_write.get_mut(v.key) {
            Some(slot) => *slot = (r, v.is_put),
            None => {
                last_write.insert(v.key.to_owned(), (r, v.is_put));
            }
        }
    }
    if history > 0 && expect != current + 1 {
        problem(format!(
            "log ends at {} but the store is at revision {current}",
            expect - 1
        ));
    }
    if history == 0 && current != compacted {
        problem(format!(
            "log empty but revisions {}..={current} are not compacted",
            compacted + 1
        ));
    }

    // The live keys against it.
    let mut keys = 0u64;
    for entry in kv.range::<&str>(..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let (key, raw) = (k.value(), v.value());
        let rec = record_view(key, raw)?;
        keys += 1;
        if rec.0 < 1 || rec.0 > rec.1 || rec.1 > current {
            problem(format!(
                "key {key}: revisions create={} mod={} current={current}",
                rec.0, rec.1
            ));
        }
        match last_write.remove(key) {
            Some((r, true)) if r == rec.1 => {
                // Its newest write is in the log window: it must be this very put.
                let raw_log = log
                    .get(r as u64)
                    .map_err(db_err)?
                    .ok_or_else(|| Error::Corrupt(format!("log entry {r} vanished")))?;
                let l = codec::view_log(r, raw_log.value())?;
                if l.create != rec.0 || l.value != rec.2 {
                    problem(format!("key {key}: value differs from its log entry {r}"));
                }
            }
            Some((r, true)) => problem(format!(
                "key {key}: live revision {} but last logged write is {r}",
                rec.1
            )),
            Some((r, false)) => problem(format!("key {key}: deleted at {r} but still live")),
            None if rec.1 > compacted => {
                problem(format!("key {key}: write {} missing from the log", rec.1))
            }
            None => {}
        }
    }
    // What remains are keys the log saw last: only deletes may be absent.
    for (key, (r, put)) in &last_write {
        if *put {
            problem(format!("key {key}: written at {r} but missing"));
        }
    }
    let mut hist_n = 0u64;
    for entry in hist.range::<(&str, u64)>(..).map_err(db_err)? {
        entry.map_err(db_err)?;
        hist_n += 1;
    }
    if hist_n != history {
        problem(format!(
            "history index has {hist_n} entries, log has {history}"
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Corrupt(problems.join("; ")));
    }
    Ok(CheckReport {
        revision: current,
        compacted,
        keys,
        history,
    })
}

/// `(create_revision, mod_revision, value)` of an encoded record, in place.
fn record_view<'a>(key: &str, raw: &'a [u8]) -> Result<(Revision, Revision, &'a [u8])> {
    if raw.len() < 16 {
        return Err(Error::Corrupt(format!("key {key}: truncated record")));
    }
    let create = i64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let modr = codec::record_mod_revision(raw)?;
    Ok((create, modr, &raw[16..]))
}

// ---- writes --------------------------------------------------------------------------

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn writer_loop(shared: Arc<Shared>, rx: mpsc::Receiver<Request>, mut revision: Revision) {
    let every = shared.opts.compact_every;
    let mut next_compact = every.map(|e| Instant::now() + e);
    loop {
        let first = match next_compact {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => break,
            },
        };
        if let Some(first) = first {
            let mut batch = vec![first];
            while batch.len() < shared.opts.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            commit_batch(&shared, &mut revision, batch);
        }
        if let (Some(at), Some(e)) = (next_compact, every) {
            if Instant::now() >= at {
                if let Err(err) = compact_to(&shared, revision, None) {
                    tracing::warn!(%err, "automatic compaction failed");
                }
                next_compact = Some(Instant::now() + e);
            }
        }
    }
    tracing::debug!("store writer stopped");
}

struct Tables<'t> {
    kv: redb::Table<'t, &'static str, &'static [u8]>,
    log: redb::Table<'t, u64, &'static [u8]>,
    hist: redb::Table<'t, (&'static str, u64), ()>,
}

fn commit_batch(shared: &Shared, revision: &mut Revision, batch: Vec<Request>) {
    let mut writes = Vec::with_capacity(batch.len());
    let mut compactions = Vec::new();
    for req in batch {
        match req.op {
            Op::Compact(target) => compactions.push((target, req.reply)),
            Op::Import(items, at) => {
                let _ = req
                    .reply
                    .send(import(shared, revision, items, at).map(|_| Done::Compacted));
            }
            _ => writes.push(req),
        }
    }
    if !writes.is_empty() {
        let start = *revision;
        let mut results = Vec::with_capacity(writes.len());
        let mut events = Vec::new();
        let committed = (|| -> Result<()> {
            let txn = shared.db.begin_write().map_err(db_err)?;
            {
                let mut t = Tables {
                    kv: txn.open_table(KV).map_err(db_err)?,
                    log: txn.open_table(LOG).map_err(db_err)?,
                    hist: txn.open_table(HIST).map_err(db_err)?,
                };
                let now = now_millis();
                for req in &writes {
                    let r = apply(&mut t, &shared.opts, revision, &req.op, now);
                    if let Ok((ev, _)) = &r {
                        events.push(ev.clone());
                    }
                    results.push(r.map(|(_, done)| done));
                }
                if *revision != start {
                    let mut meta = txn.open_table(META).map_err(db_err)?;
                    meta.insert(REVISION_KEY, &revision.to_le_bytes()[..])
                        .map_err(db_err)?;
                }
            }
            if events.is_empty() {
                txn.abort().map_err(db_err)?;
            } else {
                txn.commit().map_err(db_err)?;
            }
            Ok(())
        })();
        match committed {
            Ok(()) => {
                if !events.is_empty() {
                    publish(shared, *revision, events);
                }
                for (req, r) in writes.into_iter().zip(results) {
                    let _ = req.reply.send(r);
                }
            }
            Err(err) => {
                tracing::error!(%err, "store commit failed");
                *revision = start;
                let msg = err.to_string();
                for req in writes {
                    let _ = req
                        .reply
                        .send(Err(Error::Unavailable(format!("commit failed: {msg}"))));
                }
            }
        }
    }
    for (target, reply) in compactions {
        let _ = reply.send(compact_to(shared, *revision, target).map(|_| Done::Compacted));
    }
}

fn apply(
    t: &mut Tables<'_>,
    opts: &EmbeddedOptions,
    revision: &mut Revision,
    op: &Op,
    now: u64,
) -> Result<(Event, Done)> {
    let current = |t: &Tables<'_>, key: &str| -> Result<Option<KeyValue>> {
        match t.kv.get(key).map_err(db_err)? {
            Some(v) => Ok(Some(codec::decode_record(key, v.value())?)),
            None => Ok(None),
        }
    };
    let check_size = |v: &Bytes| {
        if v.len() > opts.max_value_size {
            Err(Error::TooLarge {
                size: v.len(),
                limit: opts.max_value_size,
            })
        } else {
            Ok(())
        }
    };
    let (event, done) = match op {
        Op::Create(key, value) => {
            check_size(value)?;
            if current(t, key)?.is_some() {
                return Err(Error::AlreadyExists(key.clone()));
            }
            let rev = *revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            (
                Event::Put {
                    kv: kv.clone(),
                    prev: None,
                },
                Done::Kv(kv),
            )
        }
        Op::Update(key, value, expected) => {
            check_size(value)?;
            let old = current(t, key)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            if old.mod_revision != *expected {
                return Err(Error::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    found: old.mod_revision,
                });
            }
            let rev = *revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: old.create_revision,
                mod_revision: rev,
            };
            (
                Event::Put {
                    kv: kv.clone(),
                    prev: Some(old),
                },
                Done::Kv(kv),
            )
        }
        Op::Delete(key, expected) => {
            let old = current(t, key)?.ok_or_else(|| Error::NotFound(key.clone()))?;
            if let Some(expected) = expected {
                if old.mod_revision != *expected {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        found: old.mod_revision,
                    });
                }
            }
            let rev = *revision + 1;
            (
                Event::Delete {
                    prev: old.clone(),
                    revision: rev,
                },
                Done::Deleted(old, rev),
            )
        }
        Op::Compact(_) | Op::Import(..) => unreachable!("run apart from writes"),
    };
    let rev = *revision + 1;
    match &event {
        Event::Put { kv, .. } => {
            let rec = codec::encode_record(kv.create_revision, kv.mod_revision, &kv.value);
            t.kv.insert(kv.key.as_str(), rec.as_slice())
                .map_err(db_err)?;
            t.hist
                .insert((kv.key.as_str(), rev as u64), ())
                .map_err(db_err)?;
        }
        Event::Delete { prev, .. } => {
            t.kv.remove(prev.key.as_str()).map_err(db_err)?;
            t.hist
                .insert((prev.key.as_str(), rev as u64), ())
                .map_err(db_err)?;
        }
    }
    t.log
        .insert(rev as u64, codec::encode_log(&event, now).as_slice())
        .map_err(db_err)?;
    *revision = rev;
    Ok((event, done))
}

fn publish(shared: &Shared, revision: Revision, events: Vec<Event>) {
    let tx = shared.events.lock().expect("event lock");
    shared.published.store(revision, Ordering::SeqCst);
    // No receivers is fine: nobody is watching.
    let _ = tx.send(events.into());
}

/// Loads a snapshot into an empty store keeping its revisions: the store's revision
/// becomes the snapshot's (or stays, if already newer) and history before it is gone.
fn import(
    shared: &Shared,
    revision: &mut Revision,
    items: Vec<KeyValue>,
    at: Revision,
) -> Result<()> {
    let txn = shared.db.begin_write().map_err(db_err)?;
    let new_rev;
    {
        let mut kv = txn.open_table(KV).map_err(db_err)?;
        if kv.first().map_err(db_err)?.is_some() {
            return Err(Error::AlreadyExists(
                "the store holds keys; a snapshot loads only into an empty store".into(),
            ));
        }
        let newest = items.iter().map(|kv| kv.mod_revision).max().unwrap_or(0);
        new_rev = (*revision).max(at).max(newest);
        for item in &items {
            if item.create_revision < 1 || item.create_revision > item.mod_revision {
                return Err(Error::Corrupt(format!(
                    "snapshot key {}: revisions create={} mod={}",
                    item.key, item.create_revision, item.mod_revision
                )));
            }
            if item.value.len() > shared.opts.max_value_size {
                return Err(Error::TooLarge {
                    size: item.value.len(),
                    limit: shared.opts.max_value_size,
                });
            }
            let rec = codec::encode_record(item.create_revision, item.mod_revision, &item.value);
            kv.insert(item.key.as_str(), rec.as_slice())
                .map_err(db_err)?;
        }
        txn.open_table(LOG)
            .map_err(db_err)?
            .retain(|_, _| false)
            .map_err(db_err)?;
        txn.open_table(HIST)
            .map_err(db_err)?
            .retain(|_, _| false)
            .map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(REVISION_KEY, &new_rev.to_le_bytes()[..])
            .map_err(db_err)?;
        meta.insert(COMPACTED_KEY, &new_rev.to_le_bytes()[..])
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    *revision = new_rev;
    shared.compacted.store(new_rev, Ordering::SeqCst);
    let tx = shared.events.lock().expect("event lock");
    shared.published.store(new_rev, Ordering::SeqCst);
    drop(tx);
    tracing::info!(keys = items.len(), revision = new_rev, "snapshot loaded");
    Ok(())
}

/// Compacts up to `target`, or (with `None`) to what the retention options allow.
fn compact_to(shared: &Shared, current: Revision, target: Option<Revision>) -> Result<()> {
    let compacted = shared.compacted.load(Ordering::SeqCst);
    let target = match target {
        Some(t) if t > current => {
            return Err(Error::FutureRevision {
                requested: t,
                current,
            })
        }
        Some(t) => t,
        None => match auto_target(shared, current, compacted)? {
            Some(t) => t,
            None => return Ok(()),
        },
    };
    if target <= compacted {
        return Ok(());
    }
    const CHUNK: i64 = 20_000;
    let mut done = compacted;
    while done < target {
        let end = (done + CHUNK).min(target);
        let txn = shared.db.begin_write().map_err(db_err)?;
        {
            let mut log = txn.open_table(LOG).map_err(db_err)?;
            let mut hist = txn.open_table(HIST).map_err(db_err)?;
            let mut doomed = Vec::new();
            for entry in log.range((done + 1) as u64..=end as u64).map_err(db_err)? {
                let (r, raw) = entry.map_err(db_err)?;
                let r = r.value();
                doomed.push((r, codec::log_key(r as i64, raw.value())?));
            }
            for (r, key) in &doomed {
                hist.remove((key.as_str(), *r)).map_err(db_err)?;
                log.remove(*r).map_err(db_err)?;
            }
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(COMPACTED_KEY, &end.to_le_bytes()[..])
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        shared.compacted.store(end, Ordering::SeqCst);
        done = end;
    }
    tracing::debug!(revision = target, "store compacted");
    Ok(())
}

/// The newest revision the retention options let go of, if any.
fn auto_target(
    shared: &Shared,
    current: Revision,
    compacted: Revision,
) -> Result<Option<Revision>> {
    let o = &shared.opts;
    let by_count = current - o.retain_revisions as i64;
    if by_count <= compacted {
        return Ok(None);
    }
    let floor = current - o.max_retain_revisions as i64;
    let cutoff = now_millis().saturating_sub(o.retain_for.as_millis() as u64);
    // Walk the oldest entries while they are older than the time window.
    let txn = shared.db.begin_read().map_err(db_err)?;
    let log = txn.open_table(LOG).map_err(db_err)?;
    let mut by_time = compacted;
    for entry in log
        .range((compacted + 1) as u64..=by_count as u64)
        .map_err(db_err)?
    {
        let (r, raw) = entry.map_err(db_err)?;
        if codec::log_millis(raw.value())? >= cutoff {
            break;
        }
        by_time = r.value() as i64;
    }
    let target = by_time.max(floor).min(by_count);
    Ok((target > compacted).then_some(target))
}
