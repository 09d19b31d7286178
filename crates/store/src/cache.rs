//! A watch cache over any backend: one upstream watch, many cheap subscribers.
//!
//! The API server wraps its store in a [`WatchCache`], so a thousand kubectl watchers cost
//! one watch on the backend (one etcd watch, or one reader of the embedded log). The cache
//! keeps a ring of recent events; a subscriber is only a cursor (the last revision it has
//! seen) into that ring plus a wake-up signal, so there is no task or queue per watcher.
//! Starting from a revision still in the ring replays from memory; an older revision is
//! served by the backend directly (which answers [`Error::Compacted`] if it is gone too).
//! A subscriber so slow that the ring overtakes it gets [`Error::Compacted`], like
//! Kubernetes' own watch cache, and its client re-lists.
//!
//! Progress: the ring knows the store's revision (its upstream watches every key, and
//! takes the backend's progress notifications — etcd's, for writes outside this store's
//! prefix). A [`Store::watch_progress`] subscriber that has nothing left to yield reports
//! that revision ([`Notice::Progress`]), so a quiet watch in a busy store can resume from
//! the store's revision (the API server's bookmarks) instead of its last event's, which
//! the ring or a compaction may have left behind.
//!
//! Reads and writes pass straight through to the backend.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::{
    CheckReport, Error, Event, KeyValue, ListOptions, ListResult, Notice, NoticeStream, Result,
    Revision, Store, WatchStream,
};

/// Size of the watch cache's ring.
#[derive(Clone, Debug)]
pub struct WatchCacheOptions {
    /// Most events kept.
    pub max_events: usize,
    /// Most bytes of keys and values kept (the newest event is always kept).
    pub max_bytes: usize,
}

impl Default for WatchCacheOptions {
    fn default() -> Self {
        Self {
            max_events: 50_000,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// A [`Store`] that serves watches from one shared upstream watch.
pub struct WatchCache {
    inner: Arc<dyn Store>,
    ring: Arc<Ring>,
    pump: tokio::task::JoinHandle<()>,
}

struct Ring {
    state: RwLock<RingState>,
    /// Carries the newest revision in the ring; subscribers wait on it.
    tick: watch::Sender<Revision>,
    opts: WatchCacheOptions,
}

struct RingState {
    events: VecDeque<Event>,
    bytes: usize,
    /// Every event with a revision above this one is in `events` (or not yet received).
    covered_from: Revision,
    /// The newest revision the ring has seen.
    current: Revision,
    closed: bool,
}

fn key_of(e: &Event) -> &str {
    match e {
        Event::Put { kv, .. } => &kv.key,
        Event::Delete { prev, .. } => &prev.key,
    }
}

fn size_of(e: &Event) -> usize {
    let kv_size = |kv: &KeyValue| kv.key.len() + kv.value.len() + 48;
    match e {
        Event::Put { kv, prev } => kv_size(kv) + prev.as_ref().map_or(0, kv_size),
        Event::Delete { prev, .. } => kv_size(prev),
    }
}

impl WatchCache {
    /// Wraps `inner`, starting its one upstream watch at the current revision.
    pub async fn new(inner: Arc<dyn Store>) -> Result<Arc<WatchCache>> {
        Self::with_options(inner, WatchCacheOptions::default()).await
    }

    /// [`WatchCache::new`] with an explicit ring size.
    pub async fn with_options(
        inner: Arc<dyn Store>,
        opts: WatchCacheOptions,
    ) -> Result<Arc<WatchCache>> {
        let start = inner.revision().await?;
        // Never 0 ("from now", which would race with writes after `revision()`): a new
        // store is at revision 1, as etcd is.
        let upstream = inner.watch_progress("", start).await?;
        let (tick, _) = watch::channel(start);
        let ring = Arc::new(Ring {
            state: RwLock::new(RingState {
                events: VecDeque::new(),
                bytes: 0,
                covered_from: start,
                current: start,
                closed: false,
            }),
            tick,
            opts,
        });
        let pump = tokio::spawn(pump(inner.clone(), ring.clone(), upstream, start));
        Ok(Arc::new(WatchCache { inner, ring, pump }))
    }

    /// The backend behind the cache.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// How many subscribers are attached (for metrics).
    pub fn watchers(&self) -> usize {
        self.ring.tick.receiver_count()
    }

    /// Events in the ring and the bytes of their keys and values (for metrics).
    pub fn ring_size(&self) -> (usize, usize) {
        let st = self.ring.state.read().expect("ring lock");
        (st.events.len(), st.bytes)
    }

    fn subscribe(&self, prefix: &str, after: Revision, progress: bool) -> NoticeStream {
        let sub = Subscriber {
            ring: self.ring.clone(),
            rx: self.ring.tick.subscribe(),
            prefix: prefix.to_owned(),
            cursor: after,
            reported: after,
            progress,
            pending: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(sub, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        })
        .boxed()
    }

    /// The revision a watch after `after` starts from, and whether the ring has it
    /// (else the backend's own, older, history serves it).
    async fn start(&self, after: Revision) -> Result<(Revision, bool)> {
        // "From now" is the backend's now, not the ring's (which may trail by a moment).
        let after = if after == 0 {
            self.inner.revision().await?
        } else {
            after
        };
        let covered_from = self.ring.state.read().expect("ring lock").covered_from;
        Ok((after, after >= covered_from))
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.pump.abort();
        self.ring.close();
    }
}

impl Ring {
    fn close(&self) {
        self.state.write().expect("ring lock").closed = true;
        self.tick.send_modify(|_| {});
    }

    fn push(&self, ev: Event) {
        let rev = ev.revision();
        {
            let mut st = self.state.write().expect("ring lock");
            if rev <= st.current {
                // A replayed event after an upstream restart.
                return;
            }
            st.bytes += size_of(&ev);
            st.events.push_back(ev);
            st.current = rev;
            while st.events.len() > 1
                && (st.events.len() > self.opts.max_events || st.bytes > self.opts.max_bytes)
            {
                let old = st.events.pop_front().expect("non-empty");
                st.bytes -= size_of(&old);
                st.covered_from = old.revision();
            }
        }
        self.tick.send_replace(rev);
    }

    fn forget_until(&self, revision: Revision) {
        {
            let mut st = self.state.write().expect("ring lock");
            while st.events.front().is_some_and(|e| e.revision() <= revision) {
                let old = st.events.pop_front().expect("non-empty");
                st.bytes -= size_of(&old);
            }
            st.covered_from = st.covered_from.max(revision);
        }
        self.tick.send_modify(|_| {});
    }

    /// The backend reports that every change up to `rev` has been sent (an etcd progress
    /// notification): the ring is current to `rev` even without an event at it.
    fn advance(&self, rev: Revision) {
        {
            let mut st = self.state.write().expect("ring lock");
            if rev <= st.current {
                return;
            }
            st.current = rev;
        }
        self.tick.send_replace(rev);
    }

    /// The upstream lost history: nobody can be served continuously from before `from`.
    fn reset(&self, from: Revision) {
        {
            let mut st = self.state.write().expect("ring lock");
            st.events.clear();
            st.bytes = 0;
            st.covered_from = from;
            st.current = st.current.max(from);
        }
        self.tick.send_modify(|_| {});
    }
}

async fn pump(inner: Arc<dyn Store>, ring: Arc<Ring>, mut upstream: NoticeStream, start: Revision) {
    let mut last = start;
    loop {
        while let Some(item) = upstream.next().await {
            match item {
                Ok(Notice::Event(ev)) => {
                    last = ev.revision();
                    ring.push(ev);
                }
                Ok(Notice::Progress(rev)) => {
                    last = last.max(rev);
                    ring.advance(rev);
                }
                Err(Error::Compacted { compacted, .. }) => {
                    tracing::warn!(last, compacted, "watch cache fell behind compaction");
                    let now = inner.revision().await.unwrap_or(compacted);
                    ring.reset(now);
                    last = now;
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, last, "watch cache upstream failed; resuming");
                    break;
                }
            }
        }
        // Upstream ended (backend restarted its watch, or lost it): resume after the last
        // revision seen.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let from = if last == 0 {
                inner.revision().await.unwrap_or(0)
            } else {
                last
            };
            match inner.watch_progress("", from).await {
                Ok(w) => {
                    upstream = w;
                    last = from;
                    break;
                }
                Err(Error::Compacted { compacted, .. }) => {
                    let now = inner.revision().await.unwrap_or(compacted);
                    ring.reset(now);
                    last = now;
                }
                Err(err) => tracing::debug!(%err, "watch cache: upstream not back yet"),
            }
        }
    }
}

struct Subscriber {
    ring: Arc<Ring>,
    rx: watch::Receiver<Revision>,
    prefix: String,
    cursor: Revision,
    /// The newest revision yielded (as an event or as progress).
    reported: Revision,
    /// Whether to yield [`Notice::Progress`].
    progress: bool,
    pending: VecDeque<Event>,
    done: bool,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Notice>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.reported = e.revision();
                return Some(Ok(Notice::Event(e)));
            }
            if self.done {
                return None;
            }
            // Mark the tick seen *before* looking, so a push after the look wakes us.
            self.rx.borrow_and_update();
            {
                let st = self.ring.state.read().expect("ring lock");
                if self.cursor < st.covered_from {
                    self.done = true;
                    return Some(Err(Error::Compacted {
                        requested: self.cursor,
                        compacted: st.covered_from,
                    }));
                }
                let start = st.events.partition_point(|e| e.revision() <= self.cursor);
                let mut seen = 0;
                for e in st.events.range(start..).take(1024) {
                    seen += 1;
                    self.cursor = e.revision();
                    if key_of(e).starts_with(self.prefix.as_str()) {
                        self.pending.push_back(e.clone());
                    }
                }
                if st.closed && self.pending.is_empty() {
                    return None;
                }
                // Caught up with the ring, and nothing to yield: the store's progress is
                // ours (nothing under the prefix up to the ring's revision is left).
                let caught_up = start + seen == st.events.len();
                if self.progress && caught_up && self.pending.is_empty() {
                    self.cursor = self.cursor.max(st.current);
                    if st.current > self.reported {
                        self.reported = st.current;
                        return Some(Ok(Notice::Progress(st.current)));
                    }
                }
            }
            if self.pending.is_empty() && self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for WatchCache {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        self.inner.list(prefix, opts).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.inner.count(prefix).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (after, in_ring) = self.start(after).await?;
        if in_ring {
            Ok(self
                .subscribe(prefix, after, false)
                .filter_map(|n| async move {
                    match n {
                        Ok(Notice::Event(e)) => Some(Ok(e)),
                        Ok(Notice::Progress(_)) => None,
                        Err(e) => Some(Err(e)),
                    }
                })
                .boxed())
        } else {
            // Older than the ring: the backend's own history may still have it.
            self.inner.watch(prefix, after).await
        }
    }

    async fn watch_progress(&self, prefix: &str, after: Revision) -> Result<NoticeStream> {
        let (after, in_ring) = self.start(after).await?;
        if in_ring {
            Ok(self.subscribe(prefix, after, true))
        } else {
            self.inner.watch_progress(prefix, after).await
        }
    }

    async fn revision(&self) -> Result<Revision> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await?;
        // Keep the cache's answers the backend's: history up to `revision` is gone.
        self.ring.forget_until(revision);
        Ok(())
    }

    async fn check(&self) -> Result<CheckReport> {
        self.inner.check().await
    }
}
