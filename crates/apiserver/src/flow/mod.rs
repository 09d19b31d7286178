//! Limits and fairness: a bounded API that one hostile client cannot take over.
//!
//! - **Priority and fairness** (`--enable-priority-and-fairness`, the default): after
//!   authentication each request is classified by the FlowSchema and
//!   PriorityLevelConfiguration objects ([`apf`]: kube's matching, per-level seats as
//!   shares of `--max-requests-inflight` + `--max-mutating-requests-inflight`, requests
//!   as wide as the work they do ([`Work`]), shuffle-sharded queues dispatched by
//!   virtual-time fair queuing ([`fair`]), `Reject` levels); the response carries
//!   `X-Kubernetes-PF-FlowSchema-UID` and `X-Kubernetes-PF-PriorityLevel-UID`. A request
//!   that finds its level's seats taken waits in its queue (a tenant's users take turns
//!   in it), bounded per queue and per user, for at most the queue wait; a full queue or
//!   a long wait: 429 TooManyRequests with `Retry-After: 1`, as kube-apiserver.
//! - **Plain max-in-flight** (`--enable-priority-and-fairness=false`): fixed levels —
//!   `exempt` (`system:masters`), `system` (the control plane's identities and nodes, a
//!   share of the seats of its own), `workload` (everyone else) — with separate read-only
//!   and mutating seats, refusing at once when they are taken.
//! - **Long-running requests** (watches, exec/attach/portforward, proxy, `log?follow`)
//!   take no seat; they are capped in all and watches per user.
//! - **Connections**: a cap in all and per source IP, HTTP/2 streams per connection,
//!   idle timeouts ([`conn`]).
//! - **Watches**: a bounded send buffer per watch; a reader that does not drain it in
//!   time is cut off (the watch handler uses [`WatchBudget`]).
//! - **generateName**: a taken generated name is retried ([`retry`]).
//!
//! The FlowSchemas and PriorityLevelConfigurations are Kubernetes' defaults (`kinds.rs`
//! creates them) until changed; [`Flow::follow`] picks up every change.

mod apf;
mod body;
pub(crate) mod conn;
mod fair;
mod level;
pub(crate) mod retry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;

use crate::auth::{Attributes, UserInfo};
use crate::error::ApiError;
use crate::response::{error_response, Body};
use crate::tenancy::{Owned, TenantIndex, MASTERS_GROUP};

pub(crate) use conn::ConnLimiter;
use fair::Estimate;
use level::{Level, Seat};

/// Every limit, as `h8s server` flags set them (kube-apiserver's flag names where kube
/// has the limit).
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// `--max-requests-inflight`: read-only requests executing at once (0: no limit).
    pub max_requests_inflight: usize,
    /// `--max-mutating-requests-inflight`: mutating requests executing at once (0: no limit).
    pub max_mutating_requests_inflight: usize,
    /// `--enable-priority-and-fairness`: queue fairly; `false` refuses at once when the
    /// seats are taken (kube's plain max-in-flight filter).
    pub priority_and_fairness: bool,
    /// The percentage of the seats the `system` level (control plane, nodes) gets.
    pub system_share_percent: u8,
    /// Requests one user may have waiting (kube's `queueLengthLimit`, 50).
    pub queue_length_limit: usize,
    /// Requests one tenant may have waiting.
    pub tenant_queue_limit: usize,
    /// Requests that may wait in one level's queue in all.
    pub total_queue_limit: usize,
    /// The longest a request waits for a seat (kube: a quarter of `--request-timeout`).
    pub queue_wait: Duration,
    /// Long-running requests open at once in all (0: no limit).
    pub max_long_running: usize,
    /// Watches one user may have open (0: no limit).
    pub max_watches_per_user: usize,
    /// Connections open at once (0: no limit).
    pub max_connections: usize,
    /// Connections open at once from one source IP (0: no limit).
    pub max_connections_per_ip: usize,
    /// `--http2-max-streams-per-connection` (0: kube-apiserver's default, 100). h8s's
    /// default is 1000: its own components multiplex every watch over one HTTP/2
    /// connection and would stall at 100 (client-go opens another connection instead).
    pub http2_max_streams_per_connection: u32,
    /// HTTP/2 keep-alive pings; a peer that does not answer one in as long is dropped.
    pub http2_keepalive: Option<Duration>,
    /// A connection with no request under way for this long is closed (kube: 90 s).
    pub idle_timeout: Duration,
    /// The longest a client may take to send a request's headers; for HTTP/1.1 also the
    /// idle time between requests (kube's ReadHeaderTimeout, 32 s).
    pub read_header_timeout: Duration,
    /// Bytes a watch may have encoded and not yet taken by the connection.
    pub watch_buffer_bytes: usize,
    /// How long a watch waits for its reader to make room before it is ended.
    pub watch_slow_reader_timeout: Duration,
    /// How often a watch that allows bookmarks gets one (kube: about a minute; h8s: 10 s).
    pub watch_bookmark_interval: Duration,
    /// How old the object count of a resource may be before it is counted again (for
    /// the width of its LISTs; kube counts every minute).
    pub object_count_interval: Duration,
    /// How often the priority levels lend and borrow seats for their demand (kube: 10 s;
    /// zero: never).
    pub borrowing_interval: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            priority_and_fairness: true,
            system_share_percent: 25,
            queue_length_limit: 50,
            tenant_queue_limit: 200,
            total_queue_limit: 2000,
            queue_wait: Duration::from_secs(15),
            max_long_running: 10_000,
            max_watches_per_user: 1000,
            max_connections: 10_000,
            max_connections_per_ip: 500,
            http2_max_streams_per_connection: 1000,
            http2_keepalive: Some(Duration::from_secs(30)),
            idle_timeout: Duration::from_secs(90),
            read_header_timeout: Duration::from_secs(32),
            watch_buffer_bytes: 4 << 20,
            watch_slow_reader_timeout: Duration::from_secs(10),
            watch_bookmark_interval: Duration::from_secs(10),
            object_count_interval: Duration::from_secs(10),
            borrowing_interval: Duration::from_secs(10),
        }
    }
}

impl LimitsConfig {
    pub(crate) fn http2_streams(&self) -> u32 {
        match self.http2_max_streams_per_connection {
            0 => 100,
            n => n,
        }
    }
}

/// The priority level of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    Exempt,
    System,
    Workload,
}

/// What kind of request it is, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ReadOnly,
    Mutating,
    /// Watches, streams, proxies: no seat, capped separately.
    LongRunning {
        watch: bool,
    },
}

impl Kind {
    /// From the request's verb and (sub)resource.
    pub(crate) fn of(verb: &str, sub: Option<&str>, follow: bool) -> Kind {
        match (verb, sub) {
            ("watch", _) => Kind::LongRunning { watch: true },
            (_, Some("exec" | "attach" | "portforward" | "proxy")) => {
                Kind::LongRunning { watch: false }
            }
            (_, Some("log")) if follow => Kind::LongRunning { watch: false },
            ("get" | "list" | "unknown", _) => Kind::ReadOnly,
            _ => Kind::Mutating,
        }
    }
}

/// What a request reads, for its width in seats (kube's work estimator).
#[derive(Debug, Clone, Default)]
pub(crate) struct Work {
    /// The resource's storage prefix (all namespaces) for a LIST, or a watch that starts
    /// with the current state: it reads as many objects as the resource has.
    pub(crate) prefix: Option<String>,
    /// The `limit` of a LIST without selectors (kube: then `2 × limit` objects are read).
    pub(crate) limit: Option<u64>,
    /// A watch starting with the current state (RV "", "0", `sendInitialEvents`).
    pub(crate) initial_list: bool,
}

/// kube's bounds on a request's width, and its objects (LIST) and watchers (mutating
/// request) per seat.
const MAX_SEATS: usize = 10;
const OBJECTS_PER_SEAT: u64 = 100;
const WATCHES_PER_SEAT: usize = 10;

/// The width of a LIST reading `objects` of the `stored` ones.
fn list_seats(stored: u64, limit: Option<u64>) -> usize {
    let objects = match limit {
        Some(l) if l > 0 => stored.min(l.saturating_mul(2)),
        _ => stored,
    };
    (objects.div_ceil(OBJECTS_PER_SEAT) as usize).clamp(1, MAX_SEATS)
}

/// kube's `eventAdditionalDuration`: one seat's time per [`WATCHES_PER_SEAT`] watchers
/// of a write's event.
const EVENT_ADDITIONAL_SECS: f64 = 0.005;

/// The work of a mutating request whose resource `watchers` watch (kube's mutating work
/// estimator): one seat while it runs; with ten watchers or more, its event's fan-out —
/// one seat per ten watchers (at most [`MAX_SEATS`]) — for 5 ms after it returns (longer
/// when capped: the same seat-seconds on fewer seats).
fn mutating_estimate(watchers: usize) -> Estimate {
    if watchers < WATCHES_PER_SEAT {
        return Estimate::from(1);
    }
    let wanted = watchers.div_ceil(WATCHES_PER_SEAT);
    let final_seats = wanted.min(MAX_SEATS);
    Estimate {
        seats: 1,
        final_seats,
        extra: wanted as f64 * EVENT_ADDITIONAL_SECS / final_seats as f64,
    }
}

/// Objects stored per resource prefix, counted now and then.
struct Counts {
    store: std::sync::OnceLock<Arc<dyn h8s_store::Store>>,
    /// prefix → (objects, when counted, a count under way).
    by_prefix: Mutex<HashMap<String, (u64, std::time::Instant, bool)>>,
}

pub(crate) fn priority_of(user: &UserInfo) -> Priority {
    if user.groups.iter().any(|g| g == MASTERS_GROUP) || user.username == "system:apiserver" {
        return Priority::Exempt;
    }
    if matches!(
        user.username.as_str(),
        "system:kube-controller-manager" | "system:kube-scheduler"
    ) || user.groups.iter().any(|g| g == "system:nodes")
    {
        return Priority::System;
    }
    Priority::Workload
}

/// The FlowSchema and priority level a request was classified into (their UIDs, as
/// kube-apiserver's `X-Kubernetes-PF-*-UID` response headers carry them).
#[derive(Clone, Debug, Default)]
pub(crate) struct PfIds {
    pub(crate) flow_schema: String,
    pub(crate) priority_level: String,
}

impl PfIds {
    fn stamp<B>(&self, resp: &mut Response<B>) {
        for (name, v) in [
            ("x-kubernetes-pf-flowschema-uid", &self.flow_schema),
            ("x-kubernetes-pf-prioritylevel-uid", &self.priority_level),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                if !v.is_empty() {
                    resp.headers_mut().insert(name, v);
                }
            }
        }
    }
}

/// What admission granted; dropping it gives everything back.
pub(crate) struct Admitted {
    hold: Hold,
    pf: Option<PfIds>,
}

enum Hold {
    Exempt,
    /// The seat (none when the level is unlimited), given back when dropped.
    Seat(#[allow(dead_code)] Option<Seat>),
    /// A long-running request's place; a watch also holds its start's seats until its
    /// response begins (its initial list is read by then).
    LongRunning(LongRunning, Option<Seat>),
}

impl Admitted {
    /// The response, holding a long-running permit until its body is done.
    pub(crate) fn attach(self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(pf) = &self.pf {
            pf.stamp(&mut resp);
        }
        match self.began().hold {
            Hold::LongRunning(l, _) => body::holding(resp, l),
            _ => resp,
        }
    }

    /// A long-running request has begun (its response is ready): the seats its start
    /// took are given back.
    pub(crate) fn began(mut self) -> Self {
        if let Hold::LongRunning(_, seat) = &mut self.hold {
            *seat = None;
        }
        self
    }
}

/// A request refused (429), with its classification.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub(crate) error: ApiError,
    pf: Option<PfIds>,
}

impl Rejected {
    pub(crate) fn response(&self) -> Response<Body> {
        let mut r = error_response(&self.error);
        if let Some(pf) = &self.pf {
            pf.stamp(&mut r);
        }
        r
    }
}

/// A long-running request's place (and its user's watch), given back when dropped.
pub(crate) struct LongRunning {
    flow: Arc<Flow>,
    /// A watch's user and resource (`group/resource`).
    watch_of: Option<(String, String)>,
}

fn decrement(m: &mut HashMap<String, usize>, k: &str) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.flow.long_running.fetch_sub(1, Ordering::Relaxed);
        if let Some((u, r)) = &self.watch_of {
            decrement(&mut self.flow.watches_lock(), u);
            decrement(
                &mut self.flow.watched.lock().unwrap_or_else(|e| e.into_inner()),
                r,
            );
        }
    }
}

/// The limits of one server.
pub struct Flow {
    pub(crate) cfg: LimitsConfig,
    system_ro: Arc<Level>,
    system_mut: Arc<Level>,
    workload_ro: Arc<Level>,
    workload_mut: Arc<Level>,
    long_running: AtomicUsize,
    /// Open watches per user.
    watches: Mutex<HashMap<String, usize>>,
    /// Open watches per resource (`group/resource`), for mutating requests' widths.
    watched: Mutex<HashMap<String, usize>>,
    counts: Counts,
    tenants: Option<Arc<TenantIndex>>,
    /// The FlowSchemas and priority levels in force (with priority and fairness on).
    apf: std::sync::RwLock<Arc<apf::Built>>,
    pub(crate) conns: Arc<ConnLimiter>,
    rejected: AtomicU64,
    pub(crate) slow_watches_ended: AtomicU64,
}

impl Flow {
    /// The limits of `cfg`; `tenants` maps a ServiceAccount's namespace to its tenant.
    pub(crate) fn new(cfg: LimitsConfig, tenants: Option<Arc<TenantIndex>>) -> Arc<Flow> {
        let split = |total: usize| -> (usize, usize) {
            if total == 0 {
                return (0, 0);
            }
            let system = (total * cfg.system_share_percent.min(100) as usize / 100).max(1);
            (system, total.saturating_sub(system).max(1))
        };
        let (sys_ro, wl_ro) = split(cfg.max_requests_inflight);
        let (sys_mut, wl_mut) = split(cfg.max_mutating_requests_inflight);
        // Plain max-in-flight: no queuing.
        let lvl = |name, seats| Level::new(name, seats, None, cfg.queue_wait);
        let apf = apf::Built::new(
            apf::Config::defaults(),
            cfg.max_requests_inflight + cfg.max_mutating_requests_inflight,
            cfg.queue_wait,
            cfg.queue_length_limit,
        );
        Arc::new(Flow {
            system_ro: lvl("system", sys_ro),
            system_mut: lvl("system", sys_mut),
            workload_ro: lvl("workload", wl_ro),
            workload_mut: lvl("workload", wl_mut),
            long_running: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            counts: Counts {
                store: std::sync::OnceLock::new(),
                by_prefix: Mutex::new(HashMap::new()),
            },
            tenants,
            apf: std::sync::RwLock::new(Arc::new(apf)),
            conns: ConnLimiter::new(cfg.max_connections, cfg.max_connections_per_ip),
            rejected: AtomicU64::new(0),
            slow_watches_ended: AtomicU64::new(0),
            cfg,
        })
    }

    fn watches_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests refused with 429 so far.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A caller's tenant: a tenant user's `h8s:tenant:` group, or the owner of a
    /// ServiceAccount's namespace. A tenant's callers are one flow of a `ByUser` schema.
    fn tenant_of(&self, user: &UserInfo) -> Option<String> {
        if let Some(t) = user.tenant() {
            return Some(t.to_string());
        }
        let ns = user
            .username
            .strip_prefix("system:serviceaccount:")?
            .split(':')
            .next()?;
        self.tenants
            .as_ref()
            .and_then(|i| i.owner(Owned::Namespace, ns))
            .map(|t| t.to_string())
    }

    /// Objects stored under `prefix` as last counted; counts again in the background
    /// when the count is older than `object_count_interval` (0 until first counted).
    fn stored(self: &Arc<Self>, prefix: &str) -> u64 {
        let now = std::time::Instant::now();
        let mut m = self
            .counts
            .by_prefix
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = m.entry(prefix.to_string()).or_insert((
            0,
            now - self.cfg.object_count_interval * 2,
            false,
        ));
        let n = e.0;
        if e.2 || now.duration_since(e.1) < self.cfg.object_count_interval {
            return n;
        }
        let Some(store) = self.counts.store.get().cloned() else {
            return n;
        };
        e.2 = true;
        drop(m);
        let (prefix, weak) = (prefix.to_string(), Arc::downgrade(self));
        tokio::spawn(async move {
            let n = store.count(&prefix).await;
            let Some(flow) = weak.upgrade() else { return };
            let mut m = flow
                .counts
                .by_prefix
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(e) = m.get_mut(&prefix) {
                *e = (
                    n.as_ref().copied().unwrap_or(e.0),
                    std::time::Instant::now(),
                    false,
                );
            }
            if let Err(err) = n {
                tracing::debug!(error = %err, prefix, "counting objects");
            }
        });
        n
    }

    /// The work of a request (kube's work estimator): a LIST is as wide as the objects
    /// it reads, a mutating request's event fan-out takes seats by the watchers it goes
    /// to after it returns, anything else takes one seat.
    fn estimate(self: &Arc<Self>, attrs: &Attributes, kind: Kind, work: &Work) -> Estimate {
        match kind {
            Kind::ReadOnly | Kind::LongRunning { watch: true } => match &work.prefix {
                Some(p) if kind == Kind::ReadOnly || work.initial_list => {
                    list_seats(self.stored(p), work.limit).into()
                }
                _ => 1.into(),
            },
            Kind::Mutating if attrs.resource_request => {
                let k = format!("{}/{}", attrs.group, attrs.resource);
                mutating_estimate(
                    self.watched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&k)
                        .copied()
                        .unwrap_or(0),
                )
            }
            _ => 1.into(),
        }
    }

    fn too_many(&self, msg: &str) -> ApiError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::too_many_requests(msg);
        e.details.retry_after = Some(1);
        e
    }

    /// Admits a request of `user` (`attrs`, of kind `kind`, reading `work`), waiting for
    /// its seats if need be, or refuses it with 429.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        user: &UserInfo,
        attrs: &Attributes,
        kind: Kind,
        work: &Work,
    ) -> Result<Admitted, Rejected> {
        if self.cfg.priority_and_fairness {
            return self.admit_apf(user, attrs, kind, work).await;
        }
        let bare = |r: Result<Hold, ApiError>| {
            r.map(|hold| Admitted { hold, pf: None })
                .map_err(|error| Rejected { error, pf: None })
        };
        let prio = priority_of(user);
        if prio == Priority::Exempt {
            return bare(Ok(Hold::Exempt));
        }
        let level = match (prio, kind) {
            // The control plane's components are trusted with any number of watches
            // (the controller manager alone has one per resource for its garbage
            // collector); they count towards the total only (and are counted per user,
            // uncapped: ComponentStatus reads them).
            (Priority::System, Kind::LongRunning { watch }) => {
                return bare(self.admit_long_running(user, attrs, watch, false))
            }
            (_, Kind::LongRunning { watch }) => {
                return bare(self.admit_long_running(user, attrs, watch, true))
            }
            (Priority::System, Kind::ReadOnly) => &self.system_ro,
            (Priority::System, Kind::Mutating) => &self.system_mut,
            (_, Kind::ReadOnly) => &self.workload_ro,
            (_, Kind::Mutating) => &self.workload_mut,
        };
        // kube's max-in-flight filter counts requests, not seats; it does not queue.
        bare(match level.acquire(&[], &user.username, 1).await {
            Ok(seat) => Ok(Hold::Seat(seat)),
            Err(why) => {
                tracing::debug!(level = %level.name, user = %user.username, ?why, "request refused: too many requests");
                Err(self.too_many("Too many requests, please try again later."))
            }
        })
    }

    /// Priority and fairness from the FlowSchemas and priority levels.
    async fn admit_apf(
        self: &Arc<Self>,
        user: &UserInfo,
        attrs: &Attributes,
        kind: Kind,
        work: &Work,
    ) -> Result<Admitted, Rejected> {
        let built = self.apf.read().unwrap_or_else(|e| e.into_inner()).clone();
        let tenant = self.tenant_of(user);
        let (schema_name, run, pf, distinguisher) =
            match built.cfg.classify(user, tenant.as_deref(), attrs) {
                Some((schema, spec, d)) => (
                    schema.name.as_str(),
                    built.levels.get(&spec.name).unwrap_or(&built.catch_all),
                    PfIds {
                        flow_schema: schema.uid.clone(),
                        priority_level: spec.uid.clone(),
                    },
                    d,
                ),
                None => (
                    "catch-all",
                    &built.catch_all,
                    PfIds::default(),
                    user.username.clone(),
                ),
            };
        let with = |r: Result<Hold, ApiError>| match r {
            Ok(hold) => Ok(Admitted {
                hold,
                pf: Some(pf.clone()),
            }),
            Err(error) => Err(Rejected {
                error,
                pf: Some(pf.clone()),
            }),
        };
        if run.spec.exempt {
            return with(Ok(Hold::Exempt));
        }
        let long_running = match kind {
            // Long-running requests hold no seat while they last; the control plane's
            // watches are not capped per user.
            Kind::LongRunning { watch } => {
                let capped = priority_of(user) != Priority::System;
                match self.admit_long_running(user, attrs, watch, capped) {
                    Ok(Hold::LongRunning(l, _)) if watch => Some(l),
                    other => return with(other),
                }
            }
            _ => None,
        };
        let Some(level) = &run.level else {
            return with(Ok(match long_running {
                Some(l) => Hold::LongRunning(l, None),
                None => Hold::Seat(None),
            }));
        };
        // Shuffle sharding: the flow's hand of queues (the fair queues pick the one
        // holding the fewest seats).
        let hand = match run.spec.queuing {
            Some(q) => apf::deal(
                apf::flow_hash(schema_name, &distinguisher),
                q.queues,
                q.hand_size,
            ),
            None => Vec::new(),
        };
        // A watch's start (its initial list) waits its turn like a LIST.
        let est = self.estimate(attrs, kind, work);
        let seats = est.max_seats();
        with(match level.acquire(&hand, &user.username, est).await {
            Ok(seat) => Ok(match long_running {
                Some(l) => Hold::LongRunning(l, seat),
                None => Hold::Seat(seat),
            }),
            Err(why) => {
                tracing::debug!(level = %level.name, flow_schema = schema_name, user = %user.username, seats, ?why, "request refused: too many requests");
                Err(self.too_many("Too many requests, please try again later."))
            }
        })
    }

    /// Keeps the FlowSchemas and priority levels in force those of the objects in
    /// `store`: reads them now and again after every change (a watch), until the flow
    /// is dropped.
    pub(crate) fn follow(self: &Arc<Self>, store: Arc<dyn h8s_store::Store>) {
        let _ = self.counts.store.set(store.clone());
        if !self.cfg.priority_and_fairness {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.cfg.borrowing_interval;
        if !every.is_zero() {
            let weak = weak.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(flow) = weak.upgrade() else { return };
                    let built = flow.apf.read().unwrap_or_else(|e| e.into_inner()).clone();
                    built.adjust();
                }
            });
        }
        tokio::spawn(async move {
            use futures::StreamExt;
            const PREFIX: &str = "/registry/flowcontrol.apiserver.k8s.io/";
            loop {
                let rev = match load_apf(&store, PREFIX).await {
                    Ok((cfg, rev)) => {
                        let Some(flow) = weak.upgrade() else { return };
                        flow.set_apf(cfg);
                        rev
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading FlowSchemas and PriorityLevelConfigurations");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut w = match store.watch(PREFIX, rev).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::debug!(error = %e, "watching FlowSchemas");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // Any change: read them all again (they are few).
                match w.next().await {
                    Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    None => return,
                }
                if weak.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    fn set_apf(&self, cfg: apf::Config) {
        let built = apf::Built::new(
            cfg,
            self.cfg.max_requests_inflight + self.cfg.max_mutating_requests_inflight,
            self.cfg.queue_wait,
            self.cfg.queue_length_limit,
        );
        *self.apf.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(built);
    }

    fn admit_long_running(
        self: &Arc<Self>,
        user: &UserInfo,
        attrs: &Attributes,
        watch: bool,
        capped: bool,
    ) -> Result<Hold, ApiError> {
        let max = self.cfg.max_long_running;
        let prev = self.long_running.fetch_add(1, Ordering::Relaxed);
        // From here on the permit gives the place back, whatever happens.
        let mut permit = LongRunning {
            flow: self.clone(),
            watch_of: None,
        };
        if max > 0 && prev >= max {
            return Err(self.too_many("Too many long-running requests, please try again later."));
        }
        if watch {
            let mut m = self.watches_lock();
            let n = m.entry(user.username.clone()).or_insert(0);
            let cap = self.cfg.max_watches_per_user;
            if capped && cap > 0 && *n >= cap {
                if *n == 0 {
                    m.remove(&user.username);
                }
                drop(m);
                return Err(self.too_many(&format!(
                    "Too many watches of user {:?} (at most {cap}), please try again later.",
                    user.username
                )));
            }
            *n += 1;
            drop(m);
            let resource = format!("{}/{}", attrs.group, attrs.resource);
            *self
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(resource.clone())
                .or_insert(0) += 1;
            permit.watch_of = Some((user.username.clone(), resource));
        }
        Ok(Hold::LongRunning(permit, None))
    }

    /// The Prometheus text of the limits (kube's `apiserver_flowcontrol_*` names where
    /// kube has the figure).
    pub(crate) fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        out.push_str(
            "# HELP apiserver_flowcontrol_rejected_requests_total Requests refused with 429.\n",
        );
        out.push_str("# TYPE apiserver_flowcontrol_rejected_requests_total counter\n");
        let _ = writeln!(
            out,
            "apiserver_flowcontrol_rejected_requests_total {}",
            self.rejected()
        );
        out.push_str("# HELP apiserver_flowcontrol_current_executing_seats Seats taken.\n");
        out.push_str("# TYPE apiserver_flowcontrol_current_executing_seats gauge\n");
        let levels = [
            (&self.system_ro, "readOnly"),
            (&self.system_mut, "mutating"),
            (&self.workload_ro, "readOnly"),
            (&self.workload_mut, "mutating"),
        ];
        for (l, kind) in levels {
            let _ = writeln!(
                out,
                "apiserver_flowcontrol_current_executing_seats{{priority_level=\"{}\",request_kind=\"{kind}\"}} {}",
                l.name,
                l.in_use()
            );
        }
        out.push_str(
            "# HELP apiserver_flowcontrol_current_inqueue_requests Requests waiting for a seat.\n",
        );
        out.push_str("# TYPE apiserver_flowcontrol_current_inqueue_requests gauge\n");
        for (l, kind) in levels {
            let _ = writeln!(
                out,
                "apiserver_flowcontrol_current_inqueue_requests{{priority_level=\"{}\",request_kind=\"{kind}\"}} {}",
                l.name,
                l.waiting()
            );
        }
        if self.cfg.priority_and_fairness {
            let built = self.apf.read().unwrap_or_else(|e| e.into_inner()).clone();
            let mut names: Vec<&String> = built.levels.keys().collect();
            names.sort();
            for n in names {
                if let Some(l) = &built.levels[n].level {
                    let _ = writeln!(
                        out,
                        "apiserver_flowcontrol_nominal_limit_seats{{priority_level=\"{n}\"}} {}",
                        l.seats()
                    );
                    let _ = writeln!(
                        out,
                        "apiserver_flowcontrol_current_limit_seats{{priority_level=\"{n}\"}} {}",
                        l.limit()
                    );
                    let _ = writeln!(
                        out,
                        "apiserver_flowcontrol_current_executing_seats{{priority_level=\"{n}\"}} {}",
                        l.in_use()
                    );
                    let _ = writeln!(
                        out,
                        "apiserver_flowcontrol_current_inqueue_requests{{priority_level=\"{n}\"}} {}",
                        l.waiting()
                    );
                }
            }
        }
        out.push_str("# HELP h8s_apiserver_connections Connections open.\n");
        out.push_str("# TYPE h8s_apiserver_connections gauge\n");
        let _ = writeln!(out, "h8s_apiserver_connections {}", self.conns.open());
        out.push_str("# HELP h8s_apiserver_connections_refused_total Connections closed at accept, over a connection limit.\n");
        out.push_str("# TYPE h8s_apiserver_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "h8s_apiserver_connections_refused_total {}",
            self.conns.refused()
        );
        out.push_str("# HELP h8s_apiserver_watches_too_slow_total Watches ended because their reader did not keep up.\n");
        out.push_str("# TYPE h8s_apiserver_watches_too_slow_total counter\n");
        let _ = writeln!(
            out,
            "h8s_apiserver_watches_too_slow_total {}",
            self.slow_watches_ended.load(Ordering::Relaxed)
        );
        out
    }

    /// Open watches of `user` (tests, and ComponentStatus: a control loop holding a
    /// watch is connected).
    pub(crate) fn watches_of(&self, user: &str) -> usize {
        self.watches_lock().get(user).copied().unwrap_or(0)
    }
}

/// The FlowSchemas and priority levels stored under `prefix`, and the revision read at.
async fn load_apf(
    store: &Arc<dyn h8s_store::Store>,
    prefix: &str,
) -> Result<(apf::Config, h8s_store::Revision), h8s_store::Error> {
    let all = store.list(prefix, Default::default()).await?;
    let (mut schemas, mut levels) = (Vec::new(), Vec::new());
    for kv in &all.items {
        let Ok(mut o) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
            continue;
        };
        if o["metadata"]["uid"].is_null() {
            o["metadata"]["uid"] = serde_json::Value::String(String::new());
        }
        if kv.key.starts_with(&format!("{prefix}flowschemas/")) {
            schemas.push(o);
        } else if kv
            .key
            .starts_with(&format!("{prefix}prioritylevelconfigurations/"))
        {
            levels.push(o);
        }
    }
    Ok((apf::Config::from_objects(&schemas, &levels), all.revision))
}

/// The send budget of one watch: bytes encoded and not yet taken by the connection are
/// bounded; a sender that cannot get room within the deadline ends the watch.
pub(crate) struct WatchBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    max: usize,
    deadline: Duration,
}

/// Room taken in a watch's buffer, given back when the connection takes the event.
pub(crate) type Room = tokio::sync::OwnedSemaphorePermit;

/// The watch's reader did not make room in time.
#[derive(Debug)]
pub(crate) struct TooSlow;

impl WatchBudget {
    pub(crate) fn new(cfg: &LimitsConfig) -> Self {
        let max = cfg.watch_buffer_bytes.clamp(1, u32::MAX as usize >> 1);
        WatchBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            deadline: cfg.watch_slow_reader_timeout,
        }
    }

    /// Sends `b` on `tx` with its room in the buffer, waiting at most the deadline.
    /// An event larger than the whole buffer takes all of it.
    pub(crate) async fn send(
        &self,
        tx: &tokio::sync::mpsc::Sender<(bytes::Bytes, Room)>,
        b: bytes::Bytes,
    ) -> Result<(), SendEnd> {
        let n = b.len().clamp(1, self.max) as u32;
        let fut = async {
            let room = self
                .bytes
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(|_| SendEnd::Closed)?;
            tx.send((b, room)).await.map_err(|_| SendEnd::Closed)
        };
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(SendEnd::TooSlow(TooSlow)),
        }
    }
}

/// Why a watch stopped sending.
#[derive(Debug)]
pub(crate) enum SendEnd {
    /// The reader went away.
    Closed,
    /// The reader did not keep up.
    TooSlow(TooSlow),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn small() -> LimitsConfig {
        LimitsConfig {
            max_requests_inflight: 4,
            max_mutating_requests_inflight: 4,
            queue_length_limit: 1,
            tenant_queue_limit: 1,
            total_queue_limit: 10,
            queue_wait: Duration::from_millis(50),
            max_long_running: 5,
            max_watches_per_user: 2,
            ..Default::default()
        }
    }

    #[test]
    fn classifies_requests_and_callers() {
        assert_eq!(
            Kind::of("watch", None, false),
            Kind::LongRunning { watch: true }
        );
        assert_eq!(
            Kind::of("create", Some("exec"), false),
            Kind::LongRunning { watch: false }
        );
        assert_eq!(
            Kind::of("get", Some("log"), true),
            Kind::LongRunning { watch: false }
        );
        assert_eq!(Kind::of("get", Some("log"), false), Kind::ReadOnly);
        assert_eq!(Kind::of("list", None, false), Kind::ReadOnly);
        assert_eq!(Kind::of("patch", Some("status"), false), Kind::Mutating);
        assert_eq!(Kind::of("deletecollection", None, false), Kind::Mutating);
        assert_eq!(
            priority_of(&user("admin", &["system:masters"])),
            Priority::Exempt
        );
        assert_eq!(
            priority_of(&user("system:kube-scheduler", &[])),
            Priority::System
        );
        assert_eq!(
            priority_of(&user("system:node:n1", &["system:nodes"])),
            Priority::System
        );
        assert_eq!(
            priority_of(&user("bob", &["h8s:tenant:acme"])),
            Priority::Workload
        );
        let f = Flow::new(small(), None);
        assert_eq!(
            f.tenant_of(&user("bob", &["h8s:tenant:acme"])).as_deref(),
            Some("acme")
        );
        assert_eq!(
            f.tenant_of(&user("system:serviceaccount:ns1:default", &[])),
            None
        );
        assert_eq!(f.tenant_of(&user("carol", &[])), None);
    }

    fn any() -> Attributes {
        Attributes::default()
    }

    #[tokio::test]
    async fn without_apf_seats_are_split_and_tenants_cannot_take_the_system_seats() {
        let f = Flow::new(
            LimitsConfig {
                priority_and_fairness: false,
                ..small()
            },
            None,
        );
        // 4 read seats: 1 for the system level, 3 for workloads.
        let t = user("bob", &["h8s:tenant:acme"]);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                f.admit(&t, &any(), Kind::ReadOnly, &Work::default())
                    .await
                    .ok()
                    .unwrap(),
            );
        }
        // The fourth is refused at once (no queuing), as a proper 429.
        let e = f
            .admit(&t, &any(), Kind::ReadOnly, &Work::default())
            .await
            .err()
            .unwrap()
            .error;
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.details.retry_after, Some(1));
        let st = e.to_status();
        assert_eq!(st["details"]["retryAfterSeconds"], 1);
        // The scheduler and an admin still get in.
        let s = f
            .admit(
                &user("system:kube-scheduler", &[]),
                &any(),
                Kind::ReadOnly,
                &Work::default(),
            )
            .await
            .ok()
            .unwrap();
        assert!(matches!(s.hold, Hold::Seat(Some(_))));
        for _ in 0..10 {
            let a = f
                .admit(
                    &user("admin", &["system:masters"]),
                    &any(),
                    Kind::Mutating,
                    &Work::default(),
                )
                .await
                .ok()
                .unwrap();
            assert!(matches!(a.hold, Hold::Exempt));
        }
        // Mutating seats are separate from read seats.
        assert!(f
            .admit(&t, &any(), Kind::Mutating, &Work::default())
            .await
            .is_ok());
        drop(held);
        assert!(f
            .admit(&t, &any(), Kind::ReadOnly, &Work::default())
            .await
            .is_ok());
        assert!(f.rejected() >= 1);
    }

    fn objects() -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        use serde_json::json;
        let levels = vec![
            json!({"metadata": {"name": "exempt", "uid": "pl-exempt"}, "spec": {"type": "Exempt"}}),
            json!({"metadata": {"name": "tiny", "uid": "pl-tiny"}, "spec": {"type": "Limited",
                "limited": {"nominalConcurrencyShares": 1, "limitResponse": {"type": "Queuing",
                    "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": 1}}}}}),
            json!({"metadata": {"name": "other", "uid": "pl-other"}, "spec": {"type": "Limited",
                "limited": {"nominalConcurrencyShares": 1, "limitResponse": {"type": "Reject"}}}}),
        ];
        let fs = |name: &str, prec: i64, lvl: &str, subject: serde_json::Value| {
            json!({"metadata": {"name": name, "uid": format!("fs-{name}")},
                "spec": {"matchingPrecedence": prec, "priorityLevelConfiguration": {"name": lvl},
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [{"subjects": [subject],
                        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                            "clusterScope": true, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
        };
        let schemas = vec![
            fs(
                "exempt",
                1,
                "exempt",
                json!({"kind": "Group", "group": {"name": "system:masters"}}),
            ),
            fs(
                "acme",
                100,
                "tiny",
                json!({"kind": "Group", "group": {"name": "h8s:tenant:acme"}}),
            ),
            fs(
                "rest",
                200,
                "other",
                json!({"kind": "Group", "group": {"name": "system:authenticated"}}),
            ),
        ];
        (schemas, levels)
    }

    #[tokio::test]
    async fn a_tenant_flooding_its_level_gets_429_while_another_level_is_served() {
        // Two seats in all: one per limited level (equal shares).
        let f = Flow::new(
            LimitsConfig {
                max_requests_inflight: 1,
                max_mutating_requests_inflight: 1,
                ..small()
            },
            None,
        );
        let (schemas, levels) = objects();
        f.set_apf(apf::Config::from_objects(&schemas, &levels));
        let bob = user("bob", &["h8s:tenant:acme"]);
        let ann = user("ann", &["h8s:tenant:acme"]);
        let held = f
            .admit(&bob, &any(), Kind::Mutating, &Work::default())
            .await
            .ok()
            .unwrap();
        assert_eq!(held.pf.as_ref().unwrap().flow_schema, "fs-acme");
        assert_eq!(held.pf.as_ref().unwrap().priority_level, "pl-tiny");
        // The next acme request (another user, same tenant: same flow) waits in the one
        // queue of length 1; the one after is refused at once with the classification.
        let f2 = f.clone();
        let ann2 = ann.clone();
        let waiting = tokio::spawn(async move {
            f2.admit(&ann2, &any(), Kind::ReadOnly, &Work::default())
                .await
                .is_ok()
        });
        let tiny = f.apf.read().unwrap().levels["tiny"].level.clone().unwrap();
        while tiny.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let r = f
            .admit(&ann, &any(), Kind::ReadOnly, &Work::default())
            .await
            .err()
            .unwrap();
        assert_eq!(r.error.code, 429);
        let resp = r.response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["x-kubernetes-pf-flowschema-uid"], "fs-acme");
        assert_eq!(
            resp.headers()["x-kubernetes-pf-prioritylevel-uid"],
            "pl-tiny"
        );
        // Another level is served meanwhile; it rejects (no queue) once its seat is taken.
        let carol = user("carol", &[]);
        let c = f
            .admit(&carol, &any(), Kind::ReadOnly, &Work::default())
            .await
            .ok()
            .unwrap();
        assert_eq!(c.pf.as_ref().unwrap().priority_level, "pl-other");
        assert_eq!(
            f.admit(&carol, &any(), Kind::ReadOnly, &Work::default())
                .await
                .err()
                .unwrap()
                .error
                .code,
            429
        );
        // system:masters is exempt whatever is taken.
        let admin = f
            .admit(
                &user("admin", &["system:masters"]),
                &any(),
                Kind::Mutating,
                &Work::default(),
            )
            .await
            .ok()
            .unwrap();
        assert!(matches!(admin.hold, Hold::Exempt));
        assert_eq!(admin.pf.unwrap().priority_level, "pl-exempt");
        // The waiter gets bob's seat when he is done.
        drop(held);
        assert!(waiting.await.unwrap());
        drop(c);
        // A changed configuration is in force at once: acme now on the `other` level.
        let (mut schemas, levels) = objects();
        schemas[1]["spec"]["priorityLevelConfiguration"]["name"] = "other".into();
        f.set_apf(apf::Config::from_objects(&schemas, &levels));
        let b = f
            .admit(&bob, &any(), Kind::ReadOnly, &Work::default())
            .await
            .ok()
            .unwrap();
        assert_eq!(b.pf.unwrap().priority_level, "pl-other");
    }

    #[tokio::test]
    async fn apf_follows_the_stored_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn h8s_store::Store> =
            Arc::new(h8s_store::Embedded::open(&dir.path().join("s.redb")).unwrap());
        let (schemas, levels) = objects();
        let put = |kind: &str, o: &serde_json::Value| {
            (
                format!(
                    "/registry/flowcontrol.apiserver.k8s.io/{kind}/{}",
                    o["metadata"]["name"].as_str().unwrap()
                ),
                bytes::Bytes::from(serde_json::to_vec(o).unwrap()),
            )
        };
        for l in &levels {
            let (k, v) = put("prioritylevelconfigurations", l);
            store.create(&k, v).await.unwrap();
        }
        for s in &schemas[..2] {
            let (k, v) = put("flowschemas", s);
            store.create(&k, v).await.unwrap();
        }
        let f = Flow::new(small(), None);
        f.follow(store.clone());
        let bob = user("bob", &["h8s:tenant:acme"]);
        let level_of = |f: &Arc<Flow>| {
            let f = f.clone();
            let bob = bob.clone();
            async move {
                f.admit(&bob, &any(), Kind::ReadOnly, &Work::default())
                    .await
                    .ok()
                    .and_then(|a| a.pf)
                    .map(|p| p.priority_level)
            }
        };
        let t0 = std::time::Instant::now();
        while level_of(&f).await.as_deref() != Some("pl-tiny") {
            assert!(t0.elapsed() < Duration::from_secs(10), "objects not read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A new schema of higher precedence takes over.
        let mut first = schemas[2].clone();
        first["metadata"]["name"] = "first".into();
        first["metadata"]["uid"] = "fs-first".into();
        first["spec"]["matchingPrecedence"] = 50.into();
        let (k, v) = put("flowschemas", &first);
        store.create(&k, v).await.unwrap();
        while level_of(&f).await.as_deref() != Some("pl-other") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "change not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn watches_are_capped_per_user_and_long_running_in_all() {
        let f = Flow::new(small(), None);
        let a = user("alice", &[]);
        let b = user("bob", &[]);
        let w = Kind::LongRunning { watch: true };
        // (The seats of a watch's start are given back when its response begins.)
        let a1 = f
            .admit(&a, &any(), w, &Work::default())
            .await
            .unwrap()
            .began();
        let a2 = f
            .admit(&a, &any(), w, &Work::default())
            .await
            .unwrap()
            .began();
        let e = f
            .admit(&a, &any(), w, &Work::default())
            .await
            .err()
            .unwrap();
        assert_eq!(e.error.code, 429);
        assert!(e.error.message.contains("alice"), "{}", e.error.message);
        assert_eq!(f.watches_of("alice"), 2);
        // Bob has his own cap.
        let b1 = f
            .admit(&b, &any(), w, &Work::default())
            .await
            .unwrap()
            .began();
        // Five long-running requests in all: two more (not watches) fit, then none.
        let x1 = f
            .admit(
                &b,
                &any(),
                Kind::LongRunning { watch: false },
                &Work::default(),
            )
            .await
            .unwrap();
        let x2 = f
            .admit(
                &b,
                &any(),
                Kind::LongRunning { watch: false },
                &Work::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            f.admit(
                &b,
                &any(),
                Kind::LongRunning { watch: false },
                &Work::default()
            )
            .await
            .err()
            .unwrap()
            .error
            .code,
            429
        );
        drop((a1, x1, x2));
        assert_eq!(f.watches_of("alice"), 1);
        assert!(f.admit(&a, &any(), w, &Work::default()).await.is_ok());
        // The scheduler's watches are not capped per user (only in all: 5).
        drop((a2, b1));
        let sched = user("system:kube-scheduler", &[]);
        let all = any();
        let none = Work::default();
        let many: Vec<_> = futures::future::join_all(
            (0..5).map(|_| async { f.admit(&sched, &all, w, &none).await.map(Admitted::began) }),
        )
        .await;
        assert!(many.iter().all(Result::is_ok));
        // Counted (ComponentStatus reads it), not capped.
        assert_eq!(f.watches_of("system:kube-scheduler"), 5);
        drop(many);
        assert_eq!(f.watches_of("system:kube-scheduler"), 0);
        assert_eq!(f.watches_of("alice"), 0);
        assert_eq!(f.long_running.load(Ordering::Relaxed), 0);
        assert!(f.watches_lock().is_empty());
        assert!(f.watched.lock().unwrap().is_empty());
    }

    #[test]
    fn widths_follow_kubes_work_estimator() {
        assert_eq!(list_seats(0, None), 1);
        assert_eq!(list_seats(250, None), 3);
        assert_eq!(list_seats(1_000_000, None), MAX_SEATS);
        // A limit without selectors reads 2 × limit objects at most.
        assert_eq!(list_seats(5000, Some(100)), 2);
        assert_eq!(list_seats(50, Some(500)), 1);
        // Writes: one seat while they run; their events' fan-out after they return.
        assert_eq!(mutating_estimate(0), Estimate::from(1));
        assert_eq!(mutating_estimate(9), Estimate::from(1));
        let e = mutating_estimate(25);
        assert_eq!((e.seats, e.final_seats), (1, 3));
        assert!((e.extra - 0.005).abs() < 1e-12, "{e:?}");
        // Capped at MAX_SEATS: the same seat-seconds, longer.
        let e = mutating_estimate(10_000);
        assert_eq!((e.seats, e.final_seats), (1, MAX_SEATS));
        assert!((e.extra - 1000.0 * 0.005 / 10.0).abs() < 1e-9, "{e:?}");
    }

    #[tokio::test]
    async fn lists_are_as_wide_as_their_resource_and_writes_as_its_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn h8s_store::Store> =
            Arc::new(h8s_store::Embedded::open(&dir.path().join("s.redb")).unwrap());
        for i in 0..450 {
            store
                .create(
                    &format!("/registry/core/configmaps/ns/c{i}"),
                    bytes::Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
        }
        let f = Flow::new(
            LimitsConfig {
                object_count_interval: Duration::from_millis(10),
                max_long_running: 0,
                ..small()
            },
            None,
        );
        f.follow(store);
        let cms = Attributes {
            resource_request: true,
            resource: "configmaps".into(),
            namespace: "ns".into(),
            ..any()
        };
        let list = Work {
            prefix: Some("/registry/core/configmaps/".into()),
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        while f.estimate(&cms, Kind::ReadOnly, &list).max_seats() != 5 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let limited = Work {
            limit: Some(50),
            ..list.clone()
        };
        assert_eq!(
            f.estimate(&cms, Kind::ReadOnly, &limited),
            Estimate::from(1)
        );
        // A watch's start is as wide as a LIST when it lists first, else one seat.
        let w = Kind::LongRunning { watch: true };
        let initial = Work {
            initial_list: true,
            ..list.clone()
        };
        assert_eq!(f.estimate(&cms, w, &initial), Estimate::from(5));
        assert_eq!(f.estimate(&cms, w, &list), Estimate::from(1));
        // Writes: one seat, and one per ten watchers of the resource after they return.
        let mutating = Kind::Mutating;
        assert_eq!(
            f.estimate(&cms, mutating, &Work::default()),
            Estimate::from(1)
        );
        let sched = user("system:kube-scheduler", &[]);
        let mut watches = Vec::new();
        for _ in 0..25 {
            watches.push(f.admit(&sched, &cms, w, &list).await.ok().unwrap().began());
        }
        let e = f.estimate(&cms, mutating, &Work::default());
        assert_eq!((e.seats, e.final_seats, e.max_seats()), (1, 3, 3));
        drop(watches);
        assert_eq!(
            f.estimate(&cms, mutating, &Work::default()),
            Estimate::from(1)
        );
    }

    #[tokio::test]
    async fn a_watch_whose_reader_does_not_drain_is_ended() {
        let cfg = LimitsConfig {
            watch_buffer_bytes: 1000,
            watch_slow_reader_timeout: Duration::from_millis(50),
            ..Default::default()
        };
        let budget = WatchBudget::new(&cfg);
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        // 400-byte events: two fit in 1000 bytes, the third waits for room.
        let ev = bytes::Bytes::from(vec![b'x'; 400]);
        budget.send(&tx, ev.clone()).await.unwrap();
        budget.send(&tx, ev.clone()).await.unwrap();
        assert!(matches!(
            budget.send(&tx, ev.clone()).await,
            Err(SendEnd::TooSlow(_))
        ));
        // A reader that takes one event makes room for the next.
        let (_, room) = rx.recv().await.unwrap();
        drop(room);
        budget.send(&tx, ev.clone()).await.unwrap();
        // An event larger than the buffer takes all of it once the buffer is empty.
        while let Ok((_, room)) = rx.try_recv() {
            drop(room);
        }
        budget
            .send(&tx, bytes::Bytes::from(vec![b'y'; 5000]))
            .await
            .unwrap();
        drop(rx);
        assert!(matches!(
            budget.send(&tx, ev).await,
            Err(SendEnd::TooSlow(_) | SendEnd::Closed)
        ));
    }
}
