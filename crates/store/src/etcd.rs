//! The etcd backend: the etcd v3 API over gRPC, with etcd's own revisions.
//!
//! Every key is stored as `<cluster prefix><key>` so several clusters can share one etcd;
//! keys start with `/`, and a list or watch of the whole store covers
//! `<cluster prefix>/…`. A marker key `<cluster prefix>#h8s-store` (outside that range)
//! records that the prefix belongs to an h8s store; a prefix that already holds other data
//! is refused. Creates, updates and deletes are single etcd transactions that compare
//! `version`/`mod_revision`, so compare-and-swap holds across any number of API servers.
//! Watches are etcd watches that resume from the last revision seen when a member or the
//! connection goes away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{
    CheckReport, Error, EtcdTls, Event, KeyValue, ListOptions, ListResult, Notice, NoticeStream,
    Result, Revision, Store, WatchStream,
};

const MARKER_SUFFIX: &str = "#h8s-store";
/// Holds the revision this prefix's servers last compacted to (a turn-taking token).
const COMPACT_SUFFIX: &str = "#h8s-compacted";
const MARKER_VALUE: &[u8] = b"h8s-store/1";
/// Keys per internal page when a caller lists without a limit (keeps gRPC messages small).
const PAGE: usize = 2000;
/// Largest gRPC message accepted from etcd.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// How long an operation keeps retrying while etcd is unreachable or electing a leader.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// How often a progress-reporting watch asks etcd for its progress (`RequestProgress`;
/// etcd's own periodic notification comes every 10 minutes by default).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Options of the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Prepended to every key (no trailing `/`), e.g. `/cluster-a`; empty for none.
    pub prefix: String,
    /// Client certificates; `None` speaks plain gRPC.
    pub tls: Option<EtcdTls>,
    /// Largest value accepted ([`Error::TooLarge`] above it). etcd's own request limit
    /// (`--max-request-bytes`, 1.5 MiB by default) must be at least this.
    pub max_value_size: usize,
    /// Compact etcd's history every this often, to the revision seen one period earlier
    /// (so at least one period of history is kept), as kube-apiserver does. Store
    /// instances sharing the prefix take turns through a marker key, so one compacts per
    /// period. `None` leaves compaction to etcd's `--auto-compaction-*` or the operator.
    pub compact_every: Option<Duration>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: String::new(),
            tls: None,
            max_value_size: crate::DEFAULT_MAX_VALUE_SIZE,
            compact_every: Some(Duration::from_secs(5 * 60)),
        }
    }
}

/// A [`Store`] on etcd.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    /// One client per member: tonic's balancer keeps sending requests to a dead member,
    /// so failover is ours. Requests go to `current` and move on when it fails.
    members: Vec<Member>,
    current: AtomicUsize,
    prefix: String,
    max_value_size: usize,
    /// Every member runs an etcd whose progress notifications never overtake events
    /// ([`progress_is_ordered`]): only then are they taken as progress.
    trust_progress: bool,
}

struct Member {
    endpoint: String,
    client: Client,
    kv: KvClient,
    watch: WatchClient,
}

impl Etcd {
    /// Connects, checks that etcd answers, and claims (or recognises) the key prefix.
    pub async fn connect(opts: EtcdOptions) -> Result<Etcd> {
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the others must not serve (stale) reads or watches.
            .with_require_leader(true);
        if let Some(tls) = &opts.tls {
            copts = copts.with_tls(tls_options(tls)?);
        }
        let mut members = Vec::new();
        for (endpoint, url) in opts.endpoints.iter().zip(&endpoints) {
            // Connecting is lazy for one endpoint: a member that is down now is tried later.
            let client = Client::connect([url], Some(copts.clone()))
                .await
                .map_err(|e| Error::Unavailable(format!("etcd at {endpoint}: {e}")))?;
            let kv = client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let watch = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
            members.push(Member {
                endpoint: endpoint.clone(),
                client,
                kv,
                watch,
            });
        }
        let trust_progress = progress_is_ordered_everywhere(&members).await;
        let store = Etcd {
            inner: Arc::new(Inner {
                members,
                current: AtomicUsize::new(0),
                prefix: opts.prefix.trim_end_matches('/').to_owned(),
                max_value_size: opts.max_value_size,
                trust_progress,
            }),
        };
        store.claim_prefix(&opts.endpoints).await?;

        if let Some(every) = opts.compact_every {
            tokio::spawn(compactor(Arc::downgrade(&store.inner), every));
        }
        Ok(store)
    }

    /// The cluster prefix keys are stored under.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.inner.prefix).into_bytes()
    }

    /// The etcd range prefix for a store prefix: the whole store is `<cluster>/`.
    fn range_prefix(&self, prefix: &str) -> Vec<u8> {
        if prefix.is_empty() {
            format!("{}/", self.inner.prefix).into_bytes()
        } else {
            self.full(prefix)
        }
    }

    fn strip(&self, key: &[u8]) -> Result<String> {
        let key =
            std::str::from_utf8(key).map_err(|_| Error::Corrupt("etcd key is not UTF-8".into()))?;
        key.strip_prefix(self.inner.prefix.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Corrupt(format!("etcd key {key} outside the cluster prefix")))
    }

    fn kv_of(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.strip(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// The member requests go to now.
    fn member(&self) -> (usize, &Member) {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.members.len();
        (i, &self.inner.members[i])
    }

    /// Member `i` failed a request: move on to the next one (unless someone already did).
    fn failed(&self, i: usize) {
        let n = self.inner.members.len();
        if n > 1
            && self
                .inner
                .current
                .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                from = %self.inner.members[i].endpoint,
                to = %self.inner.members[(i + 1) % n].endpoint,
                "etcd member failed; switching"
            );
        }
    }

    /// Runs an idempotent request, failing over between members and retrying while etcd
    /// is unreachable or without a leader.
    async fn retry<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut attempt = 0u32;
        loop {
            let (i, m) = self.member();
            match f(m.kv.clone()).await.map_err(map_err) {
                Err(Error::Unavailable(msg)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %msg, endpoint = %m.endpoint, "etcd request failed; retrying");
                    self.failed(i);
                    attempt += 1;
                    // Try every member once at full speed, then back off.
                    if attempt as usize >= self.inner.members.len() {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
                other => return other,
            }
        }
    }

    async fn claim_prefix(&self, endpoints: &[String]) -> Result<()> {
        let marker = format!("{}{MARKER_SUFFIX}", self.inner.prefix);
        let resp = self
            .retry(|mut kv| {
                let marker = marker.clone();
                async move { kv.get(marker, None).await }
            })
            .await
            .map_err(|e| match e {
                Error::Unavailable(m) => {
                    Error::Unavailable(format!("cannot reach etcd at {}: {m}", endpoints.join(",")))
                }
                other => other,
            })?;
        if let Some(found) = resp.kvs().first() {
            if found.value() == MARKER_VALUE {
                return Ok(());
            }
            return Err(Error::Corrupt(format!(
                "etcd key {marker} holds {:?}, not an h8s store marker",
                String::from_utf8_lossy(found.value())
            )));
        }
        let range = self.range_prefix("");
        let existing = self
            .retry(|mut kv| {
                let range = range.clone();
                async move {
                    let end = prefix_end(&range);
                    kv.get(
                        range,
                        Some(
                            GetOptions::new()
                                .with_range(end)
                                .with_keys_only()
                                .with_limit(1),
                        ),
                    )
                    .await
                }
            })
            .await?;
        if let Some(k) = existing.kvs().first() {
            return Err(Error::Corrupt(format!(
                "etcd prefix {:?} already holds data that is not an h8s store (e.g. {}); \
                 choose another prefix with etcd://HOST:PORT/PREFIX",
                String::from_utf8_lossy(&range),
                String::from_utf8_lossy(k.key())
            )));
        }
        let txn = Txn::new()
            .when([Compare::version(marker.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(marker.clone(), MARKER_VALUE, None)]);
        self.retry(|mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await?;
        tracing::info!(prefix = %self.inner.prefix, "claimed etcd prefix for a new h8s store");
        Ok(())
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        revision: Revision,
        limit: usize,
    ) -> Result<etcd_client::GetResponse> {
        let range = self.range_prefix(prefix);
        let start = match start_after {
            Some(s) if self.full(s) >= range => {
                let mut k = self.full(s);
                k.push(0);
                k
            }
            _ => range.clone(),
        };
        let end = prefix_end(&range);
        self.retry(|mut kv| {
            let start = start.clone();
            let end = end.clone();
            async move {
                kv.get(
                    start,
                    Some(
                        GetOptions::new()
                            .with_range(end)
                            .with_revision(revision)
                            .with_limit(limit as i64),
                    ),
                )
                .await
            }
        })
        .await
    }

    async fn current(&self) -> Result<Revision> {
        let marker = format!("{}{MARKER_SUFFIX}", self.inner.prefix);
        let resp = self
            .retry(|mut kv| {
                let marker = marker.clone();
                async move {
                    kv.get(marker, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// An etcd watch of `prefix` after `after`, resumed on another member when one fails.
    /// With `progress`, etcd's progress notifications (`WithProgressNotify`, and a
    /// `RequestProgress` every [`PROGRESS_EVERY`]) become [`Notice::Progress`].
    async fn notices(&self, prefix: &str, after: Revision, progress: bool) -> Result<NoticeStream> {
        let range = self.range_prefix(prefix);
        let from = if after == 0 {
            self.current().await?
        } else {
            after
        };
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        let (mut member, mut first) = watch_once(&this, &range, from, progress).await?;
        tokio::spawn(async move {
            let mut last = from;
            loop {
                match pump_watch(&this, &mut first, &mut last, &tx, progress).await {
                    WatchEnd::Consumer => return,
                    WatchEnd::Fatal(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    WatchEnd::Broken(why) => {
                        tracing::debug!(why, last, "etcd watch broke; resuming");
                        this.failed(member);
                    }
                }
                // Resume from the last revision delivered, on whichever member answers.
                let mut attempt = 0;
                loop {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    match watch_once(&this, &range, last, progress).await {
                        Ok((m, w)) => {
                            member = m;
                            first = w;
                            break;
                        }
                        Err(e @ Error::Compacted { .. }) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        Err(e) => {
                            attempt += 1;
                            tracing::debug!(%e, "etcd watch not back yet");
                        }
                    }
                }
            }
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }

    fn check_size(&self, v: &Bytes) -> Result<()> {
        if v.len() > self.inner.max_value_size {
            return Err(Error::TooLarge {
                size: v.len(),
                limit: self.inner.max_value_size,
            });
        }
        Ok(())
    }

    /// Runs a compare-and-swap transaction, retrying while etcd is unreachable. When an
    /// attempt failed in a way that leaves its outcome unknown, `applied` looks at the key's
    /// current state (read back, or from the transaction's `or_else` get) and says whether
    /// it is this very write, which then counts as done.
    async fn cas(
        &self,
        txn: impl Fn() -> Txn,
        applied: impl Fn(&KeyValue) -> bool,
        key: &str,
    ) -> Result<Cas> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut attempt = 0u32;
        loop {
            let (i, m) = self.member();
            let mut kv = m.kv.clone();
            match kv.txn(txn()).await {
                Ok(resp) => {
                    // A retried write that "fails" may be failing against itself.
                    if attempt > 0 && !resp.succeeded() {
                        if let Some(TxnOpResponse::Get(g)) = resp.op_responses().first() {
                            if let Some(now) = g.kvs().first() {
                                let now = self.kv_of(now)?;
                                if applied(&now) {
                                    return Ok(Cas::AppliedEarlier(now));
                                }
                            }
                        }
                    }
                    return Ok(Cas::Answered(resp));
                }
                Err(e) => {
                    let err = map_err(e);
                    if !matches!(err, Error::Unavailable(_))
                        || tokio::time::Instant::now() >= deadline
                    {
                        return Err(err);
                    }
                    tracing::debug!(%err, key, "etcd write failed; retrying");
                    self.failed(i);
                    attempt += 1;
                    if attempt as usize >= self.inner.members.len() {
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    if let Ok(Some(now)) = self.get(key).await {
                        if applied(&now) {
                            return Ok(Cas::AppliedEarlier(now));
                        }
                    }
                }
            }
        }
    }
}

enum Cas {
    Answered(etcd_client::TxnResponse),
    /// An attempt whose answer was lost had been applied; this is the key after it.
    AppliedEarlier(KeyValue),
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            Error::Unavailable(format!("cannot read etcd TLS file {}: {e}", p.display()))
        })
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        o = o.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            o = o.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Unavailable(
                "etcd client certificate and key must be given together".into(),
            ))
        }
    }
    Ok(o)
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(4)).min(1000))
}

/// etcd refuses an oversized request without saying its limit: report the size at least.
fn sized(e: Error, size: usize) -> Error {
    match e {
        Error::TooLarge { .. } => Error::TooLarge { size, limit: 0 },
        other => other,
    }
}

/// Maps an etcd client error to the store's.
fn map_err(e: etcd_client::Error) -> Error {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            if msg.contains("required revision has been compacted") {
                Error::Compacted {
                    requested: 0,
                    compacted: 0,
                }
            } else if msg.contains("future revision") {
                Error::FutureRevision {
                    requested: 0,
                    current: 0,
                }
            } else if msg.contains("request is too large")
                || msg.contains("message length too large")
            {
                Error::TooLarge { size: 0, limit: 0 }
            } else {
                Error::Unavailable(format!("etcd: {msg} ({:?})", s.code()))
            }
        }
        other => Error::Unavailable(format!("etcd: {other}")),
    }
}

#[async_trait::async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full(key);
        let resp = self
            .retry(|mut kv| {
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| self.kv_of(kv)).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let want = match opts.limit {
            None | Some(0) => usize::MAX,
            Some(n) => n,
        };
        let mut revision = opts.revision.unwrap_or(0);
        let mut items = Vec::new();
        let mut start_after = opts.start_after.clone();
        loop {
            let page = (want - items.len()).min(PAGE);
            let resp = self
                .range(prefix, start_after.as_deref(), revision, page)
                .await
                .map_err(|e| match e {
                    Error::Compacted { .. } => Error::Compacted {
                        requested: revision,
                        compacted: 0,
                    },
                    Error::FutureRevision { .. } => Error::FutureRevision {
                        requested: revision,
                        current: 0,
                    },
                    other => other,
                })?;
            if revision == 0 {
                // Later pages read at the first page's revision: one consistent list.
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                items.push(self.kv_of(kv)?);
            }
            let more = resp.more();
            if !more || items.len() >= want {
                return Ok(ListResult {
                    items,
                    revision,
                    more,
                });
            }
            start_after = items.last().map(|kv| kv.key.clone());
        }
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let range = self.range_prefix(prefix);
        let end = prefix_end(&range);
        let resp = self
            .retry(|mut kv| {
                let range = range.clone();
                let end = end.clone();
                async move {
                    kv.get(
                        range,
                        Some(GetOptions::new().with_range(end).with_count_only()),
                    )
                    .await
                }
            })
            .await?;
        Ok(resp.count().max(0) as u64)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.check_size(&value)?;
        let full = self.full(key);
        let txn = || {
            Txn::new()
                .when([Compare::version(full.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(full.clone(), value.to_vec(), None)])
                .or_else([TxnOp::get(full.clone(), None)])
        };
        let applied = |kv: &KeyValue| kv.value == value && kv.create_revision == kv.mod_revision;
        match self
            .cas(txn, applied, key)
            .await
            .map_err(|e| sized(e, value.len()))?
        {
            Cas::Answered(resp) if resp.succeeded() => {
                let rev = resp.header().map_or(0, |h| h.revision());
                Ok(KeyValue {
                    key: key.to_owned(),
                    value,
                    create_revision: rev,
                    mod_revision: rev,
                })
            }
            Cas::Answered(_) => Err(Error::AlreadyExists(key.to_owned())),
            Cas::AppliedEarlier(kv) => Ok(kv),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.check_size(&value)?;
        let full = self.full(key);
        let txn = || {
            Txn::new()
                .when([
                    Compare::version(full.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
                ])
                .and_then([TxnOp::put(
                    full.clone(),
                    value.to_vec(),
                    Some(PutOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(full.clone(), None)])
        };
        let applied = |kv: &KeyValue| kv.value == value && kv.mod_revision > expected;
        match self
            .cas(txn, applied, key)
            .await
            .map_err(|e| sized(e, value.len()))?
        {
            Cas::AppliedEarlier(kv) => Ok(kv),
            Cas::Answered(resp) => {
                let rev = resp.header().map_or(0, |h| h.revision());
                let ops = resp.op_responses();
                if resp.succeeded() {
                    let create_revision = match ops.first() {
                        Some(TxnOpResponse::Put(p)) => {
                            p.prev_key().map_or(rev, |prev| prev.create_revision())
                        }
                        _ => rev,
                    };
                    return Ok(KeyValue {
                        key: key.to_owned(),
                        value,
                        create_revision,
                        mod_revision: rev,
                    });
                }
                let now = match ops.first() {
                    Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                    _ => None,
                };
                match now {
                    None => Err(Error::NotFound(key.to_owned())),
                    Some(kv) => Err(Error::Conflict {
                        key: key.to_owned(),
                        expected,
                        found: kv.mod_revision(),
                    }),
                }
            }
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let full = self.full(key);
        let txn = || {
            let mut when = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
            if let Some(e) = expected {
                when.push(Compare::mod_revision(full.clone(), CompareOp::Equal, e));
            }
            Txn::new()
                .when(when)
                .and_then([TxnOp::delete(
                    full.clone(),
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(full.clone(), None)])
        };
        // A delete whose answer was lost cannot report the deleted value: never guess.
        let Cas::Answered(resp) = self.cas(txn, |_| false, key).await? else {
            unreachable!("nothing counts as applied earlier")
        };
        let rev = resp.header().map_or(0, |h| h.revision());
        let ops = resp.op_responses();
        if resp.succeeded() {
            return match ops.first() {
                Some(TxnOpResponse::Delete(d)) => match d.prev_kvs().first() {
                    Some(prev) => Ok((self.kv_of(prev)?, rev)),
                    None => Err(Error::NotFound(key.to_owned())),
                },
                _ => Err(Error::Unavailable("etcd: unexpected delete answer".into())),
            };
        }
        match ops.first() {
            Some(TxnOpResponse::Get(g)) => match g.kvs().first() {
                None => Err(Error::NotFound(key.to_owned())),
                Some(kv) => Err(Error::Conflict {
                    key: key.to_owned(),
                    expected: expected.unwrap_or(0),
                    found: kv.mod_revision(),
                }),
            },
            _ => Err(Error::NotFound(key.to_owned())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let s = self.notices(prefix, after, false).await?;
        Ok(s.filter_map(|n| async move {
            match n {
                Ok(Notice::Progress(_)) => None,
                Ok(Notice::Event(e)) => Some(Ok(e)),
                Err(e) => Some(Err(e)),
            }
        })
        .boxed())
    }

    async fn watch_progress(&self, prefix: &str, after: Revision) -> Result<NoticeStream> {
        // Progress only from an etcd that orders it with events (see
        // [`progress_is_ordered`]); otherwise events only, and the watch cache's progress
        // comes from its ring, which every write under this store's prefix feeds.
        self.notices(prefix, after, self.inner.trust_progress).await
    }

    async fn revision(&self) -> Result<Revision> {
        self.current().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let r = self
            .retry(|mut kv| async move { kv.compact(revision, None).await })
            .await;
        match r {
            // Already compacted at or past it: the outcome the caller wanted.
            Ok(_) | Err(Error::Compacted { .. }) => Ok(()),
            Err(Error::FutureRevision { .. }) => Err(Error::FutureRevision {
                requested: revision,
                current: self.current().await.unwrap_or(0),
            }),
            Err(e) => Err(e),
        }
    }

    async fn check(&self) -> Result<CheckReport> {
        let mut maint = self.member().1.client.maintenance_client();
        let status = maint.status().await.map_err(map_err)?;
        // etcd raises alarms (NOSPACE, CORRUPT) when a member finds itself damaged.
        let alarms = maint
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .map_err(map_err)?;
        if let Some(a) = alarms.alarms().first() {
            return Err(Error::Corrupt(format!(
                "etcd reports alarm {:?} on member {:x}",
                a.alarm(),
                a.member_id()
            )));
        }
        tracing::debug!(
            version = status.version(),
            db_size = status.db_size(),
            "etcd status"
        );
        // Then the generic walk over every key.
        crate::walk_check(self).await
    }
}

/// Periodic compaction: every `every`, compact to the revision seen one period before,
/// unless another instance on the same prefix already did this period's compaction.
async fn compactor(inner: std::sync::Weak<Inner>, every: Duration) {
    let mut seen: Option<Revision> = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let store = Etcd { inner };
        let now = match store.current().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%e, "etcd compactor: no revision");
                continue;
            }
        };
        if let Some(target) = seen.replace(now) {
            if let Err(e) = compact_turn(&store, target).await {
                tracing::warn!(%e, target, "etcd compaction failed");
            }
        }
    }
}

/// Takes this period's turn (compare-and-swap on the compaction key) and compacts.
async fn compact_turn(store: &Etcd, target: Revision) -> Result<()> {
    let key = format!("{}{COMPACT_SUFFIX}", store.inner.prefix);
    let k = key.clone();
    let cur = store
        .retry(|mut kv| {
            let k = k.clone();
            async move { kv.get(k, None).await }
        })
        .await?;
    let (done, guard) = match cur.kvs().first() {
        Some(kv) => (
            std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse::<Revision>().ok())
                .unwrap_or(0),
            Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
        ),
        None => (0, Compare::version(key.clone(), CompareOp::Equal, 0)),
    };
    if done >= target {
        return Ok(());
    }
    let claim =
        Txn::new()
            .when([guard])
            .and_then([TxnOp::put(key.clone(), target.to_string(), None)]);
    let (_, m) = store.member();
    let won = m.kv.clone().txn(claim).await.map_err(map_err)?.succeeded();
    if won {
        store.compact(target).await?;
        tracing::info!(revision = target, "compacted etcd history");
    }
    Ok(())
}

enum WatchEnd {
    Consumer,
    Fatal(Error),
    Broken(String),
}

async fn watch_once(
    s: &Etcd,
    range: &[u8],
    after: Revision,
    progress: bool,
) -> Result<(usize, etcd_client::WatchStream)> {
    let (i, m) = s.member();
    let mut w = m.watch.clone();
    let mut opts = WatchOptions::new()
        .with_range(prefix_end(range))
        .with_start_revision(after + 1)
        .with_prev_key();
    if progress {
        opts = opts.with_progress_notify();
    }
    let first = async {
        let mut stream = w.watch(range.to_vec(), Some(opts)).await?;
        let first = stream.message().await?;
        Ok::<_, etcd_client::Error>((stream, first))
    };
    let (stream, first) = match first.await.map_err(map_err) {
        Ok(x) => x,
        Err(e) => {
            s.failed(i);
            return Err(e);
        }
    };
    // The first answer says whether the watch was created or refused (compacted).
    match first {
        Some(resp) if resp.canceled() => {
            if resp.compact_revision() > 0 {
                Err(Error::Compacted {
                    requested: after,
                    compacted: resp.compact_revision(),
                })
            } else {
                Err(Error::Unavailable(format!(
                    "etcd refused the watch: {}",
                    resp.cancel_reason()
                )))
            }
        }
        Some(_) => Ok((i, stream)),
        None => {
            s.failed(i);
            Err(Error::Unavailable("etcd closed the watch".into()))
        }
    }
}

async fn pump_watch(
    s: &Etcd,
    stream: &mut etcd_client::WatchStream,
    last: &mut Revision,
    tx: &mpsc::Sender<Result<Notice>>,
    progress: bool,
) -> WatchEnd {
    let mut ask = tokio::time::interval(PROGRESS_EVERY);
    ask.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return WatchEnd::Consumer,
            _ = ask.tick(), if progress => {
                // etcd answers with an event-less response carrying its revision once
                // the watch has sent everything up to it.
                if let Err(e) = stream.request_progress().await {
                    return WatchEnd::Broken(e.to_string());
                }
                continue;
            }
            m = stream.message() => m,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return WatchEnd::Broken("stream ended".into()),
            Err(e) => return WatchEnd::Broken(e.to_string()),
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return WatchEnd::Fatal(Error::Compacted {
                    requested: *last,
                    compacted: resp.compact_revision(),
                });
            }
            return WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
        }
        if resp.events().is_empty() {
            // A progress notification: everything up to the header's revision is sent.
            let rev = resp.header().map_or(0, |h| h.revision());
            if progress && rev > *last {
                *last = rev;
                if tx.send(Ok(Notice::Progress(rev))).await.is_err() {
                    return WatchEnd::Consumer;
                }
            }
            continue;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision();
            if rev <= *last {
                continue;
            }
            let event = match ev.event_type() {
                EventType::Put => {
                    let kv = match s.kv_of(kv) {
                        Ok(kv) => kv,
                        Err(e) => return WatchEnd::Fatal(e),
                    };
                    // A first version has no previous value, whatever etcd attaches.
                    let prev = match ev.prev_kv() {
                        Some(p) if kv.create_revision != kv.mod_revision => match s.kv_of(p) {
                            Ok(p) => Some(p),
                            Err(e) => return WatchEnd::Fatal(e),
                        },
                        _ => None,
                    };
                    Event::Put { kv, prev }
                }
                EventType::Delete => match ev.prev_kv() {
                    Some(p) => match s.kv_of(p) {
                        Ok(prev) => Event::Delete {
                            prev,
                            revision: rev,
                        },
                        Err(e) => return WatchEnd::Fatal(e),
                    },
                    // The deleted value was compacted away before the watch read it.
                    None => {
                        return WatchEnd::Fatal(Error::Compacted {
                            requested: *last,
                            compacted: rev,
                        })
                    }
                },
            };
            *last = rev;
            if tx.send(Ok(Notice::Event(event))).await.is_err() {
                return WatchEnd::Consumer;
            }
        }
    }
}

/// Whether every member answers with a version whose progress notifications are ordered
/// with its events; a member that does not answer counts as no.
async fn progress_is_ordered_everywhere(members: &[Member]) -> bool {
    for m in members {
        let mut maint = m.client.maintenance_client();
        match maint.status().await {
            Ok(st) if progress_is_ordered(st.version()) => {}
            _ => return false,
        }
    }
    true
}

/// Whether etcd `version` sends a watch's progress notification only after the events up to
/// it. Before 3.4.25 and 3.5.8 (Debian 12 ships 3.4.23) a `RequestProgress` of a watch still
/// catching up — one resumed after a member failure — could report a revision ahead of
/// events not yet sent; taking it as progress skipped those events (the member-loss test
/// saw the gap).
fn progress_is_ordered(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 25,
        (3, 5) => patch >= 8,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

#[cfg(test)]
mod version_tests {
    use super::progress_is_ordered;

    #[test]
    fn progress_is_trusted_only_from_fixed_etcd_releases() {
        for v in ["3.4.23", "3.4.24", "3.5.7", "3.3.27", "", "3.5", "x.y.z"] {
            assert!(!progress_is_ordered(v), "{v}");
        }
        for v in ["3.4.25", "3.4.34", "3.5.8", "3.5.17", "3.6.0", "4.0.0"] {
            assert!(progress_is_ordered(v), "{v}");
        }
    }
}
