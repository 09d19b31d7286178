//! The h8s store: a key-value space with etcd's model.
//!
//! Every write bumps one global revision; each key remembers the revision that created
//! it and the one that last modified it (`mod_revision`, which the API server exposes as
//! `metadata.resourceVersion`). Writes compare-and-swap on `mod_revision`. Lists can be
//! taken at a past revision and watches start from one, as long as that revision has not
//! been compacted away; otherwise the call fails with [`Error::Compacted`] (the API
//! server's 410 Gone).
//!
//! Keys follow Kubernetes' layout, `/registry/<group>/<resource>/[<namespace>/]<name>`;
//! values are opaque bytes (the API server stores JSON without `resourceVersion`).
#![forbid(unsafe_code)]

mod backup;
mod cache;
mod embedded;
mod encrypt;
mod etcd;
mod open;
#[doc(hidden)]
pub mod testing;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use backup::{backup, read_backup, restore, BackupSummary};
pub use cache::{WatchCache, WatchCacheOptions};
pub use embedded::{Embedded, EmbeddedOptions};
pub use encrypt::{
    ConfigError as EncryptionConfigError, Encrypting, EncryptionConfiguration, KeyConfig,
    KeysConfig, ProviderConfig, ResourceConfig,
};
pub use etcd::{Etcd, EtcdOptions};
pub use open::{open, EtcdTls, EMBEDDED_FILE};

/// The largest value a backend accepts by default: the API server's 3 MiB body limit plus
/// room for the metadata it adds.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 4 * 1024 * 1024;

/// A global, monotonically increasing store revision. The first write is revision 1.
pub type Revision = i64;

/// One key and its value at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// A change seen by a watch, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A create or an update; `prev` is the value before it, if there was one.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A deletion; `prev` is the deleted value, and `revision` the deleting write's.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

/// What to list under a prefix.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at this revision; `None` reads the newest state.
    pub revision: Option<Revision>,
    /// Only keys strictly greater than this one (for paging).
    pub start_after: Option<String>,
    /// At most this many keys; `None` means all.
    pub limit: Option<usize>,
}

/// The answer to a list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Keys in ascending order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Whether keys remain after the last one returned.
    pub more: bool,
}

/// A stream of changes under a prefix. It ends when the store shuts down; an error
/// item (for example a compaction that overtook a slow watcher) ends it too.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// What a progress-reporting watch ([`Store::watch_progress`]) yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A change under the watched prefix.
    Event(Event),
    /// Every change under the prefix up to this revision has been yielded: a watch
    /// resumed after it misses nothing. Revisions only grow; the revision may belong to
    /// a write elsewhere in the store (etcd's progress notification, kube's bookmark).
    Progress(Revision),
}

/// A stream of [`Notice`]s; it ends as a [`WatchStream`] does.
pub type NoticeStream = BoxStream<'static, Result<Notice>>;

/// Store errors. The API server maps them to Kubernetes `Status` codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The compare-and-swap failed: the key's `mod_revision` is not the one expected.
    #[error("key {key} was modified (expected revision {expected}, found {found})")]
    Conflict {
        key: String,
        expected: Revision,
        found: Revision,
    },
    /// The requested revision has been compacted.
    #[error("revision {requested} has been compacted (oldest kept is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("value of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The backend is unreachable or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Data on disk is damaged or foreign: the store refuses to serve it.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a consistency check found in a healthy store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The store's revision when checked.
    pub revision: Revision,
    /// The compaction revision (0 when the backend does not say).
    pub compacted: Revision,
    /// Live keys.
    pub keys: u64,
    /// Revisions of history kept (0 when the backend does not say).
    pub history: u64,
}

/// A key-value store with etcd's revision model. Object-safe: the API server holds an
/// `Arc<dyn Store>` and does not know which backend is behind it.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest key's value, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix`, in key order, at a revision.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// How many keys are under `prefix` now.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key`'s value if its `mod_revision` is `expected`
    /// ([`Error::Conflict`] otherwise, [`Error::NotFound`] if it is gone).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if its `mod_revision` is `expected` when one is given.
    /// Returns the deleted value and the revision of the deletion.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// Changes under `prefix` with a revision greater than `after`, in order, without
    /// gaps or duplicates. `after = 0` starts from now.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// [`Store::watch`], plus [`Notice::Progress`] when the store's revision moved on
    /// past the last change yielded (a watch of a quiet prefix in a busy store). The
    /// default reports no progress beyond the changes themselves; the watch cache and
    /// the etcd backend (progress notifications) report the store's.
    async fn watch_progress(&self, prefix: &str, after: Revision) -> Result<NoticeStream> {
        use futures::StreamExt;
        Ok(self
            .watch(prefix, after)
            .await?
            .map(|r| r.map(Notice::Event))
            .boxed())
    }

    /// The store's newest revision.
    async fn revision(&self) -> Result<Revision>;

    /// Forgets history up to `revision`; lists and watches at or before it then fail
    /// with [`Error::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Verifies the store's invariants and reports its size; a damaged store answers
    /// [`Error::Corrupt`]. The default reads every key at one revision and checks key
    /// order and revisions; backends add their own deeper checks.
    async fn check(&self) -> Result<CheckReport> {
        walk_check(self).await
    }

    /// Loads `items`, a snapshot taken at `revision` (see [`backup`]), into this store,
    /// which must hold no keys. The default creates every key anew, so revisions change;
    /// backends that can keep the snapshot's revisions do (the embedded one).
    async fn load_snapshot(&self, items: Vec<KeyValue>, revision: Revision) -> Result<()> {
        use futures::StreamExt;
        let _ = revision;
        let mut writes = futures::stream::iter(items)
            .map(|kv| async move { self.create(&kv.key, kv.value).await })
            .buffer_unordered(64);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(())
    }
}

/// The backend-neutral check: reads every key at one revision, checking key order and
/// revisions.
pub(crate) async fn walk_check<S: Store + ?Sized>(s: &S) -> Result<CheckReport> {
    let revision = s.revision().await?;
    let mut keys = 0u64;
    let mut last: Option<String> = None;
    loop {
        let page = s
            .list(
                "",
                ListOptions {
                    revision: Some(revision),
                    start_after: last.clone(),
                    limit: Some(1000),
                },
            )
            .await?;
        for kv in &page.items {
            if last.as_deref().is_some_and(|l| l >= kv.key.as_str()) {
                return Err(Error::Corrupt(format!("key {} out of order", kv.key)));
            }
            if kv.create_revision < 1
                || kv.create_revision > kv.mod_revision
                || kv.mod_revision > revision
            {
                return Err(Error::Corrupt(format!(
                    "key {}: revisions create={} mod={} at store revision {revision}",
                    kv.key, kv.create_revision, kv.mod_revision
                )));
            }
            keys += 1;
            last = Some(kv.key.clone());
        }
        if !page.more || page.items.is_empty() {
            break;
        }
    }
    Ok(CheckReport {
        revision,
        compacted: 0,
        keys,
        history: 0,
    })
}
