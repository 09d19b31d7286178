//! kube-apiserver's fair queuing for one priority level (its `queueset`): `queues`
//! queues, virtual time, request widths in seats. Pure data structure: the caller passes
//! the time (seconds on any monotonic clock), so tests drive it with a virtual clock.
//!
//! - **Virtual time** `R` advances at `min(seats demanded, seats) / active queues` per
//!   second: every queue with work gets an equal share of the level's seats.
//! - **Dispatch** picks the queue whose next request would finish earliest in virtual
//!   time (`next_r + seats × G`, `G` the estimated service time) and starts that request
//!   when its seats are free; the queue's `next_r` advances by `seats × G`. A wide request
//!   at the head waits for its seats (no narrower request overtakes it, as in kube).
//! - **Completion** corrects the estimate: `next_r -= seats × (G − actual service time)`,
//!   so a queue is charged for the work its requests really did.
//! - **Work after completion** (kube's `WorkEstimate` with `FinalSeats` and
//!   `AdditionalLatency`): a write's watch events are sent after it returns. Such a request
//!   takes `max(seats, final seats)` while it runs and keeps them for `extra` seconds after
//!   it finishes; its queue is charged `seats × G + final seats × extra` at dispatch, and
//!   only its initial seats' estimate is corrected at completion.
//! - A queue that was idle starts at the current `R` (no credit for having been idle).
//! - Inside one queue (h8s): its users take turns, FIFO per user, so a tenant's users —
//!   one flow — share the tenant's queue fairly too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// An entry that may have been abandoned (its requester timed out or went away);
/// abandoned entries are skipped when dispatched and dropped first when a queue is full.
pub(crate) trait Waiter {
    fn abandoned(&self) -> bool;
}

/// The shape of a level's queues.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueConfig {
    /// Queues (`queuing.queues`); 0: the level does not queue (`Reject`).
    pub queues: usize,
    /// Requests one queue may hold (`queuing.queueLengthLimit`).
    pub queue_length_limit: usize,
    /// Requests one user may have waiting in one queue (h8s).
    pub per_user: usize,
    /// `G`: the estimated service time of one request, in seconds (kube: 3 ms).
    pub service_estimate: f64,
}

/// Why an entry was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The level does not queue.
    NoQueues,
    /// The chosen queue holds `queueLengthLimit` requests.
    Queue,
    /// The user has as many requests waiting in the queue as it may.
    User,
}

/// A request's work, kube's `WorkEstimate`: `seats` while it runs, and `final_seats`
/// for `extra` seconds after it has finished (a write's watch fan-out).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub seats: usize,
    pub final_seats: usize,
    pub extra: f64,
}

impl From<usize> for Estimate {
    fn from(seats: usize) -> Self {
        Estimate {
            seats,
            final_seats: 0,
            extra: 0.0,
        }
    }
}

impl Estimate {
    /// The seats it holds from dispatch until its extra time is over (kube's `MaxSeats`).
    pub(crate) fn max_seats(&self) -> usize {
        self.seats.max(self.final_seats)
    }

    /// Its charge in virtual time (seat-seconds), `G` the estimated service time.
    fn work(&self, g: f64) -> f64 {
        self.seats as f64 * g + self.final_seats as f64 * self.extra.max(0.0)
    }

    /// Whether its seats outlive it.
    pub(crate) fn lingers(&self) -> bool {
        self.extra > 0.0 && self.final_seats > 0
    }
}

struct Entry<T> {
    item: T,
    /// Its seats ([`Estimate::max_seats`]).
    seats: usize,
    est: Estimate,
}

struct Queue<T> {
    users: HashMap<Arc<str>, VecDeque<Entry<T>>>,
    /// Users with waiting entries, in turn order.
    ring: VecDeque<Arc<str>>,
    waiting: usize,
    seats_waiting: usize,
    executing: usize,
    seats_executing: usize,
    /// The virtual time at which its next request starts (kube's `nextDispatchR`).
    next_r: f64,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Queue {
            users: HashMap::new(),
            ring: VecDeque::new(),
            waiting: 0,
            seats_waiting: 0,
            executing: 0,
            seats_executing: 0,
            next_r: 0.0,
        }
    }

    fn active(&self) -> bool {
        self.waiting > 0 || self.executing > 0
    }

    /// Takes the head entry (the next user's oldest), rotating the users.
    fn pop(&mut self) -> Option<Entry<T>> {
        let u = self.ring.pop_front()?;
        let q = self.users.get_mut(&u)?;
        let e = q.pop_front();
        if q.is_empty() {
            self.users.remove(&u);
        } else {
            self.ring.push_back(u);
        }
        if let Some(e) = &e {
            self.waiting -= 1;
            self.seats_waiting -= e.seats;
        }
        e
    }

    fn user_len(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, VecDeque::len)
    }
}

impl<T: Waiter> Queue<T> {
    /// The estimate of the live head entry, dropping abandoned ones before it.
    fn head(&mut self) -> Option<Estimate> {
        loop {
            let u = self.ring.front()?;
            let e = self.users.get(u)?.front()?;
            if !e.item.abandoned() {
                return Some(e.est);
            }
            // Only this user's entry goes; the user keeps its turn.
            let u = u.clone();
            let q = self.users.get_mut(&u)?;
            let e = q.pop_front()?;
            self.waiting -= 1;
            self.seats_waiting -= e.seats;
            if q.is_empty() {
                self.users.remove(&u);
                self.ring.pop_front();
            }
        }
    }

    /// Drops every user's abandoned entries at its front (requesters give up in
    /// arrival order, so that is where they are); returns the seats freed.
    fn purge(&mut self) -> usize {
        let (mut n, mut seats) = (0, 0);
        for q in self.users.values_mut() {
            while q.front().is_some_and(|e| e.item.abandoned()) {
                seats += q.pop_front().map_or(0, |e| e.seats);
                n += 1;
            }
        }
        self.waiting -= n;
        self.seats_waiting -= seats;
        self.users.retain(|_, q| !q.is_empty());
        let users = &self.users;
        self.ring.retain(|u| users.contains_key(u));
        seats
    }
}

/// A request taken out of its queue to run.
pub(crate) struct Dispatched<T> {
    pub item: T,
    pub queue: usize,
    pub est: Estimate,
}

/// The queues and seats of one priority level.
pub(crate) struct QueueSet<T> {
    cfg: QueueConfig,
    /// Seats: requests' widths executing at once (the level's concurrency limit).
    limit: usize,
    queues: Vec<Queue<T>>,
    in_use: usize,
    waiting: usize,
    seats_waiting: usize,
    active: usize,
    /// Virtual time (seat-seconds per queue).
    r: f64,
    /// When `r` was last advanced.
    last: f64,
    /// Where the next scan for the earliest finish starts (ties go round).
    robin: usize,
    /// Seat demand (taken plus waiting) integrated over time since `demand_since`, its
    /// square, and its high watermark (kube's integrator, for borrowing).
    demand_integral: f64,
    demand_square: f64,
    demand_since: f64,
    demand_high: usize,
}

/// Seat demand over a period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Demand {
    pub avg: f64,
    pub stddev: f64,
    pub high: usize,
}

impl<T: Waiter> QueueSet<T> {
    pub(crate) fn new(cfg: QueueConfig, limit: usize) -> Self {
        QueueSet {
            queues: (0..cfg.queues).map(|_| Queue::new()).collect(),
            cfg,
            limit: limit.max(1),
            in_use: 0,
            waiting: 0,
            seats_waiting: 0,
            active: 0,
            r: 0.0,
            last: 0.0,
            robin: 0,
            demand_integral: 0.0,
            demand_square: 0.0,
            demand_since: 0.0,
            demand_high: 0,
        }
    }

    /// Seats taken.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Requests waiting (abandoned ones included until they are dropped).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// The concurrency limit in seats.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the concurrency limit (borrowing between levels); requests already
    /// running keep their seats.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// The seat demand since the last call (or the start), and starts a new period.
    pub(crate) fn take_demand(&mut self, now: f64) -> Demand {
        self.sync(now);
        let period = now - self.demand_since;
        let d = if period > 0.0 {
            let avg = self.demand_integral / period;
            let var = (self.demand_square / period - avg * avg).max(0.0);
            Demand {
                avg,
                stddev: var.sqrt(),
                high: self.demand_high,
            }
        } else {
            Demand {
                avg: 0.0,
                stddev: 0.0,
                high: self.demand_high,
            }
        };
        self.demand_integral = 0.0;
        self.demand_square = 0.0;
        self.demand_since = now;
        self.demand_high = self.in_use + self.seats_waiting;
        d
    }

    fn note_demand(&mut self) {
        self.demand_high = self.demand_high.max(self.in_use + self.seats_waiting);
    }

    /// A request's width in seats, at most the whole level (else it could never run).
    pub(crate) fn width(&self, seats: usize) -> usize {
        seats.clamp(1, self.limit)
    }

    /// An estimate whose seats fit in the level.
    pub(crate) fn fit(&self, est: impl Into<Estimate>) -> Estimate {
        let e = est.into();
        Estimate {
            seats: self.width(e.seats),
            final_seats: e.final_seats.min(self.limit),
            extra: e.extra,
        }
    }

    #[cfg(test)]
    pub(crate) fn virtual_time(&self) -> f64 {
        self.r
    }

    /// Advances virtual time to `now`.
    fn sync(&mut self, now: f64) {
        let dt = now - self.last;
        if dt <= 0.0 {
            return;
        }
        self.last = now;
        let d = (self.in_use + self.seats_waiting) as f64;
        self.demand_integral += d * dt;
        self.demand_square += d * d * dt;
        if self.active > 0 {
            let demand = (self.in_use + self.seats_waiting).min(self.limit);
            self.r += dt * demand as f64 / self.active as f64;
        }
    }

    /// Applies `f` to queue `i`, keeping the count of active queues.
    fn with_queue<R>(&mut self, i: usize, f: impl FnOnce(&mut Queue<T>) -> R) -> R {
        let q = &mut self.queues[i];
        let (was, w0, s0) = (q.active(), q.waiting, q.seats_waiting);
        let out = f(q);
        let (now, w1, s1) = (q.active(), q.waiting, q.seats_waiting);
        self.waiting = self.waiting + w1 - w0;
        self.seats_waiting = self.seats_waiting + s1 - s0;
        match (was, now) {
            (false, true) => self.active += 1,
            (true, false) => self.active -= 1,
            _ => {}
        }
        out
    }

    /// Starts a request of `seats` without queuing (a level that does not queue):
    /// `false` when its seats are taken (`est` fitted by [`fit`](Self::fit)).
    pub(crate) fn start_now(&mut self, now: f64, est: impl Into<Estimate>) -> bool {
        self.sync(now);
        let seats = self.fit(est).max_seats();
        if self.in_use + seats > self.limit {
            self.demand_high = self.demand_high.max(self.in_use + seats);
            return false;
        }
        self.in_use += seats;
        self.note_demand();
        true
    }

    /// Queues `item` (of `seats`) for `user` in the queue of `hand` holding the fewest
    /// seats (kube's shuffle sharding), or gives it back with the bound it hit.
    pub(crate) fn enqueue(
        &mut self,
        now: f64,
        hand: &[usize],
        user: &str,
        item: T,
        est: impl Into<Estimate>,
    ) -> Result<usize, (Full, T)> {
        self.sync(now);
        let est = self.fit(est);
        let seats = est.max_seats();
        let n = self.queues.len();
        let Some(qi) = hand
            .iter()
            .copied()
            .filter(|i| *i < n)
            .min_by_key(|i| self.queues[*i].seats_waiting + self.queues[*i].seats_executing)
            .or((n > 0).then_some(0))
        else {
            return Err((Full::NoQueues, item));
        };
        let (limit, per_user) = (self.cfg.queue_length_limit, self.cfg.per_user.max(1));
        if self.queues[qi].waiting >= limit || self.queues[qi].user_len(user) >= per_user {
            self.with_queue(qi, Queue::purge);
        }
        let q = &self.queues[qi];
        if q.waiting >= limit {
            return Err((Full::Queue, item));
        }
        if q.user_len(user) >= per_user {
            return Err((Full::User, item));
        }
        let r = self.r;
        self.with_queue(qi, |q| {
            if !q.active() {
                // An idle queue starts now: no credit for the time it was idle.
                q.next_r = r;
            }
            match q.users.get_mut(user) {
                Some(u) => u.push_back(Entry { item, seats, est }),
                None => {
                    let k: Arc<str> = Arc::from(user);
                    q.ring.push_back(k.clone());
                    q.users
                        .insert(k, VecDeque::from([Entry { item, seats, est }]));
                }
            }
            q.waiting += 1;
            q.seats_waiting += seats;
        });
        self.note_demand();
        Ok(qi)
    }

    /// The next request to run, if its seats are free: the head of the queue whose
    /// head would finish first in virtual time.
    pub(crate) fn dispatch(&mut self, now: f64) -> Option<Dispatched<T>> {
        self.sync(now);
        if self.waiting == 0 {
            return None;
        }
        let n = self.queues.len();
        let g = self.cfg.service_estimate;
        let mut best: Option<(f64, usize, usize)> = None;
        for k in 0..n {
            let i = (self.robin + k) % n;
            if self.queues[i].waiting == 0 {
                continue;
            }
            let Some(est) = self.with_queue(i, Queue::head) else {
                continue;
            };
            let finish = self.queues[i].next_r + est.work(g);
            if best.is_none_or(|(f, _, _)| finish < f) {
                best = Some((finish, i, est.max_seats()));
            }
        }
        let (_, qi, seats) = best?;
        if self.in_use + seats > self.limit {
            return None;
        }
        let e = self.with_queue(qi, |q| {
            let e = q.pop()?;
            q.executing += 1;
            q.seats_executing += e.seats;
            q.next_r += e.est.work(g);
            Some(e)
        })?;
        self.in_use += e.seats;
        self.robin = (qi + 1) % n;
        Some(Dispatched {
            item: e.item,
            queue: qi,
            est: e.est,
        })
    }

    /// A request of `est` started from `queue` (`None`: not queued) is done after
    /// `service` seconds: its queue is charged what its initial seats used, and its seats
    /// are free — unless they [linger](Estimate::lingers): then the caller gives them
    /// back with [`release`](Self::release) `est.extra` seconds later.
    pub(crate) fn finish(
        &mut self,
        now: f64,
        queue: Option<usize>,
        est: impl Into<Estimate>,
        service: f64,
    ) {
        // As dispatched (not fitted again: the level's seats may have changed since).
        let est = est.into();
        self.sync(now);
        if let Some(qi) = queue.filter(|i| *i < self.queues.len()) {
            let g = self.cfg.service_estimate;
            self.with_queue(qi, |q| {
                q.executing = q.executing.saturating_sub(1);
                q.next_r -= est.seats as f64 * (g - service);
            });
        }
        if !est.lingers() {
            self.release(now, queue, est.max_seats());
        }
    }

    /// Gives back `seats` a request from `queue` held (at its end, or after its extra time).
    pub(crate) fn release(&mut self, now: f64, queue: Option<usize>, seats: usize) {
        self.sync(now);
        self.in_use = self.in_use.saturating_sub(seats);
        if let Some(qi) = queue.filter(|i| *i < self.queues.len()) {
            self.with_queue(qi, |q| {
                q.seats_executing = q.seats_executing.saturating_sub(seats);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Item {
        flow: &'static str,
        user: String,
        gone: Arc<AtomicBool>,
    }
    impl Waiter for Item {
        fn abandoned(&self) -> bool {
            self.gone.load(Ordering::Relaxed)
        }
    }
    fn item(flow: &'static str, user: &str) -> Item {
        Item {
            flow,
            user: user.to_string(),
            gone: Arc::new(AtomicBool::new(false)),
        }
    }
    fn cfg(queues: usize, limit: usize) -> QueueConfig {
        QueueConfig {
            queues,
            queue_length_limit: limit,
            per_user: limit,
            service_estimate: 0.003,
        }
    }

    /// Runs the level on a virtual clock: every `tick` seconds a request of each flow
    /// arrives (while it has room to queue), each request runs for its flow's service
    /// time; returns the seconds of service each flow got and its refusals.
    struct Sim {
        qs: QueueSet<Item>,
        now: f64,
        /// (finish time, queue, seats, service, flow) of the requests running.
        running: Vec<(f64, usize, usize, f64, &'static str)>,
        served: HashMap<&'static str, f64>,
        refused: HashMap<&'static str, usize>,
    }

    impl Sim {
        fn new(qs: QueueSet<Item>) -> Self {
            Sim {
                qs,
                now: 0.0,
                running: Vec::new(),
                served: HashMap::new(),
                refused: HashMap::new(),
            }
        }
        fn arrive(&mut self, flow: &'static str, hand: &[usize], seats: usize) {
            if self
                .qs
                .enqueue(self.now, hand, flow, item(flow, flow), seats)
                .is_err()
            {
                *self.refused.entry(flow).or_default() += 1;
            }
        }
        fn dispatch(&mut self, service: &HashMap<&'static str, f64>) {
            while let Some(d) = self.qs.dispatch(self.now) {
                let s = service[d.item.flow];
                self.running
                    .push((self.now + s, d.queue, d.est.max_seats(), s, d.item.flow));
            }
        }
        fn advance(&mut self, to: f64, service: &HashMap<&'static str, f64>) {
            loop {
                self.running.sort_by(|a, b| a.0.total_cmp(&b.0));
                match self.running.first() {
                    Some(r) if r.0 <= to => {
                        let (t, q, seats, s, flow) = self.running.remove(0);
                        self.now = t;
                        self.qs.finish(t, Some(q), seats, s);
                        *self.served.entry(flow).or_default() += s * seats as f64;
                        self.dispatch(service);
                    }
                    _ => break,
                }
            }
            self.now = to;
        }
    }

    #[test]
    fn a_flooding_flow_does_not_starve_a_steady_one() {
        // 4 seats, 8 queues; "flood" keeps its queues full, "calm" sends one request
        // every 20 ms. Each request runs 20 ms.
        let mut sim = Sim::new(QueueSet::new(cfg(8, 50), 4));
        let service = HashMap::from([("flood", 0.02), ("calm", 0.02)]);
        // The flood spreads over both queues of its hand: three queues are active and
        // each gets a third of the seats, 1.33 — more than calm's 1.
        let (flood_hand, calm_hand) = ([1, 2], [5, 6]);
        let (mut t, mut tick) = (0.0, 0);
        while t < 10.0 {
            for _ in 0..20 {
                sim.arrive("flood", &flood_hand, 1);
            }
            if tick % 2 == 0 {
                sim.arrive("calm", &calm_hand, 1);
            }
            tick += 1;
            sim.dispatch(&service);
            t += 0.01;
            sim.advance(t, &service);
        }
        // calm asked for one seat's worth (50 req/s × 20 ms): it is served all it asks,
        // flood gets the rest, and calm is never refused.
        let calm = sim.served["calm"];
        let flood = sim.served["flood"];
        assert!(calm > 0.95 * 10.0, "calm {calm}, flood {flood}");
        assert!(flood > 0.95 * 3.0 * 10.0, "flood {flood}");
        assert_eq!(sim.refused.get("calm"), None);
        assert!(sim.refused["flood"] > 1000);
    }

    #[test]
    fn two_flooding_flows_share_equally_even_when_one_sends_longer_requests() {
        // Both keep their queues full; "slow" requests run 5× longer. Fair queuing
        // shares seat-time, not request counts: each gets about half of the seat-seconds.
        let mut sim = Sim::new(QueueSet::new(cfg(4, 20), 2));
        let service = HashMap::from([("fast", 0.01), ("slow", 0.05)]);
        let mut t = 0.0;
        while t < 20.0 {
            for _ in 0..20 {
                sim.arrive("fast", &[0], 1);
                sim.arrive("slow", &[3], 1);
            }
            sim.dispatch(&service);
            t += 0.01;
            sim.advance(t, &service);
        }
        let (fast, slow) = (sim.served["fast"], sim.served["slow"]);
        let share = fast / (fast + slow);
        assert!((0.45..=0.55).contains(&share), "fast {fast} slow {slow}");
        // Both kept the level busy: 2 seats × 20 s.
        assert!(fast + slow > 0.95 * 40.0, "{}", fast + slow);
    }

    #[test]
    fn wide_requests_cost_their_seats() {
        // "wide" sends LISTs of 4 seats, "narrow" requests of 1; same service time.
        // Each is charged seats × time: they share the seat-seconds equally, so narrow
        // runs about 4 requests per wide one.
        let mut sim = Sim::new(QueueSet::new(cfg(4, 20), 8));
        let service = HashMap::from([("wide", 0.02), ("narrow", 0.02)]);
        let mut t = 0.0;
        while t < 10.0 {
            for _ in 0..20 {
                sim.arrive("wide", &[0], 4);
                sim.arrive("narrow", &[1], 1);
            }
            sim.dispatch(&service);
            t += 0.01;
            sim.advance(t, &service);
        }
        let (w, n) = (sim.served["wide"], sim.served["narrow"]);
        let share = w / (w + n);
        assert!((0.4..=0.6).contains(&share), "wide {w} narrow {n}");
    }

    #[test]
    fn virtual_time_advances_by_share_and_idle_queues_get_no_credit() {
        let mut qs = QueueSet::new(cfg(4, 10), 2);
        // Two requests in two queues: each gets one seat; R advances 1 per second.
        qs.enqueue(0.0, &[0], "a", item("a", "a"), 1).unwrap();
        qs.enqueue(0.0, &[1], "b", item("b", "b"), 1).unwrap();
        let a = qs.dispatch(0.0).unwrap();
        let b = qs.dispatch(0.0).unwrap();
        assert!(qs.dispatch(0.0).is_none());
        qs.finish(2.0, Some(a.queue), 1, 2.0);
        assert!(
            (qs.virtual_time() - 2.0).abs() < 1e-9,
            "{}",
            qs.virtual_time()
        );
        // One queue active with one seat busy (of 2): R advances 1 per second.
        qs.finish(3.0, Some(b.queue), 1, 3.0);
        assert!((qs.virtual_time() - 3.0).abs() < 1e-9);
        // Idle: R stands still; a queue arriving now starts at R, not at its old start.
        qs.enqueue(10.0, &[2], "c", item("c", "c"), 1).unwrap();
        assert!((qs.virtual_time() - 3.0).abs() < 1e-9);
        assert_eq!(qs.queues[2].next_r, 3.0);
        // Queue 0 ran 2 s for its one request: charged 2 seat-seconds from R=0.
        assert!((qs.queues[0].next_r - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_wide_head_waits_for_its_seats_and_is_not_overtaken() {
        let mut qs = QueueSet::new(cfg(2, 10), 4);
        assert!(qs.start_now(0.0, 3));
        qs.enqueue(0.0, &[0], "w", item("w", "w"), 4).unwrap();
        assert!(qs.dispatch(0.0).is_none(), "4 seats do not fit in 1");
        // Wider than the level: clamped to the level, so it can run at all.
        assert_eq!(qs.width(100), 4);
        qs.finish(1.0, None, 3, 1.0);
        let d = qs.dispatch(1.0).unwrap();
        assert_eq!((d.queue, d.est.max_seats(), qs.in_use()), (0, 4, 4));
    }

    #[test]
    fn fifo_within_a_user_and_users_take_turns_in_a_queue() {
        let mut qs = QueueSet::new(cfg(1, 100), 1);
        for (u, n) in [("a", 3), ("b", 1), ("c", 2)] {
            for i in 0..n {
                qs.enqueue(0.0, &[0], u, item("t", &format!("{u}{i}")), 1)
                    .unwrap();
            }
        }
        let mut order = Vec::new();
        let mut t = 0.0;
        while let Some(d) = qs.dispatch(t) {
            order.push(d.item.user);
            t += 1.0;
            qs.finish(t, Some(d.queue), 1, 1.0);
        }
        assert_eq!(order, ["a0", "b0", "c0", "a1", "c1", "a2"]);
    }

    #[test]
    fn queue_length_user_bound_and_the_shortest_queue_of_the_hand() {
        let mut qs = QueueSet::new(
            QueueConfig {
                per_user: 2,
                ..cfg(3, 3)
            },
            1,
        );
        // The hand's shortest queue: 0, then 2 (0 has one), then 0 and 2 alternate.
        assert_eq!(
            qs.enqueue(0.0, &[0, 2], "a", item("t", "a"), 1).ok(),
            Some(0)
        );
        assert_eq!(
            qs.enqueue(0.0, &[0, 2], "a", item("t", "a"), 1).ok(),
            Some(2)
        );
        // A user's bound in one queue, then the queue's own.
        for u in ["a", "b", "c"] {
            let _ = qs.enqueue(0.0, &[1], u, item("t", u), 1);
        }
        assert_eq!(
            qs.enqueue(0.0, &[1], "d", item("t", "d"), 1)
                .err()
                .map(|e| e.0),
            Some(Full::Queue)
        );
        qs.enqueue(0.0, &[0], "a", item("t", "a"), 1).unwrap();
        assert_eq!(
            qs.enqueue(0.0, &[0], "a", item("t", "a"), 1)
                .err()
                .map(|e| e.0),
            Some(Full::User)
        );
        // A level without queues refuses.
        let mut none: QueueSet<Item> = QueueSet::new(cfg(0, 10), 1);
        assert_eq!(
            none.enqueue(0.0, &[0], "a", item("t", "a"), 1)
                .err()
                .map(|e| e.0),
            Some(Full::NoQueues)
        );
    }

    #[test]
    fn abandoned_entries_are_skipped_and_free_their_place() {
        let mut qs = QueueSet::new(
            QueueConfig {
                per_user: 2,
                ..cfg(1, 10)
            },
            1,
        );
        let a = item("t", "u");
        let gone = a.gone.clone();
        qs.enqueue(0.0, &[0], "u", a, 1).unwrap();
        qs.enqueue(0.0, &[0], "u", item("t", "u"), 1).unwrap();
        gone.store(true, Ordering::Relaxed);
        // The user's full queue makes room by dropping the abandoned front entry.
        qs.enqueue(0.0, &[0], "u", item("t", "u"), 1).unwrap();
        assert_eq!(qs.waiting(), 2);
        let d = qs.dispatch(0.0).unwrap();
        qs.finish(0.0, Some(d.queue), 1, 0.0);
        let d = qs.dispatch(0.0).unwrap();
        qs.finish(0.0, Some(d.queue), 1, 0.0);
        assert!(qs.dispatch(0.0).is_none());
        // A queue of only abandoned entries yields nothing and ends up empty.
        let b = item("t", "v");
        b.gone.store(true, Ordering::Relaxed);
        qs.enqueue(0.0, &[0], "v", b, 1).unwrap();
        assert!(qs.dispatch(0.0).is_none());
        assert_eq!((qs.waiting(), qs.in_use(), qs.active), (0, 0, 0));
    }
    #[test]
    fn a_writes_fan_out_seats_outlive_it_by_its_extra_time() {
        // kube's queueset: a write of 1 seat whose event goes to 50 watchers takes
        // max(1, 5) seats while it runs and keeps them 5 ms after it returns; its queue
        // is charged 1 × G + 5 × 5 ms, and only its initial seat's estimate is corrected.
        let mut qs: QueueSet<Item> = QueueSet::new(cfg(2, 10), 6);
        let write = Estimate {
            seats: 1,
            final_seats: 5,
            extra: 0.005,
        };
        let g = 0.003;
        qs.enqueue(0.0, &[0], "w", item("w", "w"), write).unwrap();
        qs.enqueue(0.0, &[1], "r", item("r", "r"), 2).unwrap();
        let d = qs.dispatch(0.0).unwrap();
        assert_eq!(
            d.item.flow, "r",
            "the narrower work finishes first in virtual time"
        );
        let r = qs.dispatch(0.0);
        assert!(r.is_none(), "5 + 2 seats do not fit in 6");
        qs.finish(0.001, Some(d.queue), 2, 0.001);
        let w = qs.dispatch(0.001).unwrap();
        assert_eq!((w.est.max_seats(), w.est), (5, write));
        let charged = qs.queues[w.queue].next_r;
        // The write returns after 2 ms: its seats stay taken, its queue is idle.
        qs.finish(0.003, Some(w.queue), w.est, 0.002);
        assert_eq!(qs.in_use(), 5);
        assert!(!qs.queues[w.queue].active());
        let corrected = qs.queues[w.queue].next_r;
        assert!(
            (charged - corrected - (g - 0.002)).abs() < 1e-9,
            "only the initial seat's estimate is corrected: {charged} → {corrected}"
        );
        // A 2-seat request waits for the write's fan-out to end.
        qs.enqueue(0.003, &[1], "r", item("r", "r"), 2).unwrap();
        assert!(qs.dispatch(0.004).is_none());
        qs.release(0.008, Some(w.queue), w.est.max_seats());
        assert_eq!(qs.in_use(), 0);
        assert_eq!(qs.queues[w.queue].seats_executing, 0);
        let r = qs.dispatch(0.008).unwrap();
        assert_eq!(r.est.max_seats(), 2);
        // Without extra time the seats are free at once (every other request).
        qs.finish(0.009, Some(r.queue), r.est, 0.001);
        assert_eq!(qs.in_use(), 0);
        // Not queued (a level that does not queue) likewise.
        assert!(qs.start_now(0.01, write));
        assert_eq!(qs.in_use(), 5);
        qs.finish(0.011, None, write, 0.001);
        assert_eq!(qs.in_use(), 5);
        qs.release(0.016, None, 5);
        assert_eq!(qs.in_use(), 0);
    }
}
