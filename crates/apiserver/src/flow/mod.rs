//! Limits and fairness: a bounded API that one hostile client cannot take over.
//!
//! - **Priority and fairness** (kube-apiserver's APF made small): after authentication,
//!   each request is classified into a priority level. `exempt` (`system:masters`) is
//!   never limited; `system` (the control plane's own identities,
//!   `system:kube-controller-manager`, `system:kube-scheduler`, and nodes, group
//!   `system:nodes`) has seats of its own so tenants cannot starve it; `workload` is
//!   everyone else. A level has seats for read-only and for mutating requests (a share of
//!   `--max-requests-inflight` / `--max-mutating-requests-inflight`); a request that finds
//!   them taken waits in a fair queue — round-robin over tenants, then over the users of a
//!   tenant — bounded per user, per tenant and in all, for at most the queue wait. Beyond
//!   that: 429 TooManyRequests with `Retry-After: 1`, as kube-apiserver.
//! - **Long-running requests** (watches, exec/attach/portforward, proxy, `log?follow`)
//!   take no seat; they are capped in all and watches per user.
//! - **Connections**: a cap in all and per source IP, HTTP/2 streams per connection,
//!   idle timeouts ([`conn`]).
//! - **Watches**: a bounded send buffer per watch; a reader that does not drain it in
//!   time is cut off (the watch handler uses [`WatchBudget`]).
//! - **generateName**: a taken generated name is retried ([`retry`]).
//!
//! The levels are fixed and sized by flags. FlowSchemas and PriorityLevelConfigurations
//! are served (`kinds.rs` creates Kubernetes' defaults) but not read here.

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

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::response::Body;
use crate::tenancy::{Owned, TenantIndex, MASTERS_GROUP};

pub(crate) use conn::ConnLimiter;
use fair::QueueBounds;
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

/// What admission granted; dropping it gives everything back.
pub(crate) enum Admitted {
    Exempt,
    /// The seat (none when the level is unlimited), given back when dropped.
    Seat {
        _seat: Option<Seat>,
    },
    LongRunning(LongRunning),
}

impl Admitted {
    /// The response, holding a long-running permit until its body is done.
    pub(crate) fn attach(self, resp: Response<Body>) -> Response<Body> {
        match self {
            Admitted::LongRunning(l) => body::holding(resp, l),
            _ => resp,
        }
    }
}

/// A long-running request's place (and its user's watch), given back when dropped.
pub(crate) struct LongRunning {
    flow: Arc<Flow>,
    watch_of: Option<String>,
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.flow.long_running.fetch_sub(1, Ordering::Relaxed);
        if let Some(u) = &self.watch_of {
            let mut m = self.flow.watches_lock();
            if let Some(n) = m.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    m.remove(u);
                }
            }
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
    watches: Mutex<HashMap<String, usize>>,
    tenants: Option<Arc<TenantIndex>>,
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
        let bounds = cfg.priority_and_fairness.then_some(QueueBounds {
            per_user: cfg.queue_length_limit,
            per_tenant: cfg.tenant_queue_limit,
            total: cfg.total_queue_limit,
        });
        let lvl = |name, seats| Level::new(name, seats, bounds, cfg.queue_wait);
        Arc::new(Flow {
            system_ro: lvl("system", sys_ro),
            system_mut: lvl("system", sys_mut),
            workload_ro: lvl("workload", wl_ro),
            workload_mut: lvl("workload", wl_mut),
            long_running: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::new()),
            tenants,
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

    /// The fair-queuing flow of a caller: (its tenant, itself). A tenant user's tenant
    /// is its `h8s:tenant:` group; a ServiceAccount's is its namespace's owner (or the
    /// namespace); any other caller is a flow of its own.
    fn flow_of(&self, user: &UserInfo) -> (String, String) {
        if let Some(t) = user.tenant() {
            return (format!("t:{t}"), user.username.clone());
        }
        if let Some(rest) = user.username.strip_prefix("system:serviceaccount:") {
            let ns = rest.split(':').next().unwrap_or("");
            if let Some(t) = self
                .tenants
                .as_ref()
                .and_then(|i| i.owner(Owned::Namespace, ns))
            {
                return (format!("t:{t}"), user.username.clone());
            }
            return (format!("ns:{ns}"), user.username.clone());
        }
        (format!("u:{}", user.username), user.username.clone())
    }

    fn too_many(&self, msg: &str) -> ApiError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::too_many_requests(msg);
        e.details.retry_after = Some(1);
        e
    }

    /// Admits a request of `user` of kind `kind`, waiting for a seat if need be, or
    /// answers 429.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        user: &UserInfo,
        kind: Kind,
    ) -> Result<Admitted, ApiError> {
        let prio = priority_of(user);
        if prio == Priority::Exempt {
            return Ok(Admitted::Exempt);
        }
        let level = match (prio, kind) {
            // The control plane's components are trusted with any number of watches
            // (the controller manager alone has one per resource for its garbage
            // collector); they count towards the total only (and are counted per user,
            // uncapped: ComponentStatus reads them).
            (Priority::System, Kind::LongRunning { watch }) => {
                return self.admit_long_running(user, watch, false)
            }
            (_, Kind::LongRunning { watch }) => return self.admit_long_running(user, watch, true),
            (Priority::System, Kind::ReadOnly) => &self.system_ro,
            (Priority::System, Kind::Mutating) => &self.system_mut,
            (_, Kind::ReadOnly) => &self.workload_ro,
            (_, Kind::Mutating) => &self.workload_mut,
        };
        let (tenant, who) = self.flow_of(user);
        match level.acquire(&tenant, &who).await {
            Ok(seat) => Ok(Admitted::Seat { _seat: seat }),
            Err(why) => {
                tracing::debug!(level = level.name, user = %user.username, ?why, "request refused: too many requests");
                Err(self.too_many("Too many requests, please try again later."))
            }
        }
    }

    fn admit_long_running(
        self: &Arc<Self>,
        user: &UserInfo,
        watch: bool,
        capped: bool,
    ) -> Result<Admitted, ApiError> {
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
            permit.watch_of = Some(user.username.clone());
        }
        Ok(Admitted::LongRunning(permit))
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
            f.flow_of(&user("bob", &["h8s:tenant:acme"])),
            ("t:acme".to_string(), "bob".to_string())
        );
        assert_eq!(
            f.flow_of(&user("system:serviceaccount:ns1:default", &[])).0,
            "ns:ns1"
        );
        assert_eq!(f.flow_of(&user("carol", &[])).0, "u:carol");
    }

    #[tokio::test]
    async fn seats_are_split_and_tenants_cannot_take_the_system_seats() {
        let f = Flow::new(small(), None);
        // 4 read seats: 1 for the system level, 3 for workloads.
        let t = user("bob", &["h8s:tenant:acme"]);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(f.admit(&t, Kind::ReadOnly).await.unwrap());
        }
        // The fourth waits (queue of 1), the fifth is refused at once.
        let f2 = f.clone();
        let t2 = t.clone();
        let waiting = tokio::spawn(async move { f2.admit(&t2, Kind::ReadOnly).await.is_ok() });
        while f.workload_ro.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let e = f.admit(&t, Kind::ReadOnly).await.err().unwrap();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.details.retry_after, Some(1));
        let st = e.to_status();
        assert_eq!(st["details"]["retryAfterSeconds"], 1);
        // The waiter times out (50 ms) since nobody lets go.
        assert!(!waiting.await.unwrap());
        // The scheduler and an admin still get in.
        let s = f
            .admit(&user("system:kube-scheduler", &[]), Kind::ReadOnly)
            .await
            .unwrap();
        assert!(matches!(s, Admitted::Seat { _seat: Some(_) }));
        for _ in 0..10 {
            assert!(matches!(
                f.admit(&user("admin", &["system:masters"]), Kind::Mutating)
                    .await
                    .unwrap(),
                Admitted::Exempt
            ));
        }
        // Mutating seats are separate from read seats.
        assert!(f.admit(&t, Kind::Mutating).await.is_ok());
        drop(held);
        assert!(f.admit(&t, Kind::ReadOnly).await.is_ok());
        assert!(f.rejected() >= 2);
    }

    #[tokio::test]
    async fn watches_are_capped_per_user_and_long_running_in_all() {
        let f = Flow::new(small(), None);
        let a = user("alice", &[]);
        let b = user("bob", &[]);
        let w = Kind::LongRunning { watch: true };
        let a1 = f.admit(&a, w).await.unwrap();
        let a2 = f.admit(&a, w).await.unwrap();
        let e = f.admit(&a, w).await.err().unwrap();
        assert_eq!(e.code, 429);
        assert!(e.message.contains("alice"), "{}", e.message);
        assert_eq!(f.watches_of("alice"), 2);
        // Bob has his own cap.
        let b1 = f.admit(&b, w).await.unwrap();
        // Five long-running requests in all: two more (not watches) fit, then none.
        let x1 = f
            .admit(&b, Kind::LongRunning { watch: false })
            .await
            .unwrap();
        let x2 = f
            .admit(&b, Kind::LongRunning { watch: false })
            .await
            .unwrap();
        assert_eq!(
            f.admit(&b, Kind::LongRunning { watch: false })
                .await
                .err()
                .unwrap()
                .code,
            429
        );
        drop((a1, x1, x2));
        assert_eq!(f.watches_of("alice"), 1);
        assert!(f.admit(&a, w).await.is_ok());
        // The scheduler's watches are not capped per user (only in all: 5).
        drop((a2, b1));
        let sched = user("system:kube-scheduler", &[]);
        let many: Vec<_> = futures::future::join_all((0..5).map(|_| f.admit(&sched, w))).await;
        assert!(many.iter().all(Result::is_ok));
        // Counted (ComponentStatus reads it), not capped.
        assert_eq!(f.watches_of("system:kube-scheduler"), 5);
        drop(many);
        assert_eq!(f.watches_of("system:kube-scheduler"), 0);
        assert_eq!(f.watches_of("alice"), 0);
        assert_eq!(f.long_running.load(Ordering::Relaxed), 0);
        assert!(f.watches_lock().is_empty());
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
