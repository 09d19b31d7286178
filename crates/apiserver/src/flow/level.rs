//! A priority level: seats (request widths executing at once) and, for a queuing level,
//! kube's fair queues ([`super::fair`]) of requests waiting for them. A released seat
//! goes straight to the request the fair queues pick, so seats are never idle while a
//! request that fits waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::fair::{Demand, Estimate, QueueConfig, QueueSet, Waiter};

/// kube's estimated service time of a request (`G`), for virtual time.
const SERVICE_ESTIMATE: f64 = 0.003;

/// A waiter's handle: the seats (its queue, its estimate) are handed over on it.
struct Ticket(oneshot::Sender<(usize, Estimate)>);

impl Waiter for Ticket {
    fn abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

/// Why a request got no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its queue was full (or the level does not queue).
    QueueFull,
    /// It waited the longest a request may wait.
    TimedOut,
}

/// How a level queues: `None` refuses at once when the seats are taken (kube's
/// max-in-flight filter and `Reject` levels).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queues {
    pub(crate) queues: usize,
    pub(crate) queue_length_limit: usize,
    pub(crate) per_user: usize,
}

pub(crate) struct Level {
    pub(crate) name: String,
    /// 0: unlimited.
    seats: usize,
    queuing: bool,
    wait: Duration,
    epoch: Instant,
    state: Mutex<QueueSet<Ticket>>,
    /// Seats it may lend (`lendablePercent`) and borrow (`borrowingLimitPercent`;
    /// `None`: no limit).
    lendable: usize,
    borrowable: Option<usize>,
    /// The smoothed seat demand (kube's `seatDemandStats.smoothed`).
    smoothed: Mutex<f64>,
}

/// Seats taken, given back when dropped — a write's after its watch events' extra time
/// (kube's additional latency), on the runtime's clock.
pub(crate) struct Seat {
    level: Arc<Level>,
    queue: Option<usize>,
    est: Estimate,
    started: Instant,
}

#[cfg(test)]
impl Seat {
    /// Seats held.
    pub(crate) fn width(&self) -> usize {
        self.est.max_seats()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let service = self.started.elapsed().as_secs_f64();
        let (level, queue, est) = (self.level.clone(), self.queue, self.est);
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(h) if est.lingers() => {
                level.finish(queue, est, service);
                h.spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(est.extra)).await;
                    level.release(queue, est.max_seats());
                });
            }
            _ => level.finish(queue, Estimate { extra: 0.0, ..est }, service),
        }
    }
}

impl Level {
    pub(crate) fn new(
        name: impl Into<String>,
        seats: usize,
        queuing: Option<Queues>,
        wait: Duration,
    ) -> Arc<Level> {
        let q = queuing.unwrap_or(Queues {
            queues: 0,
            queue_length_limit: 0,
            per_user: 0,
        });
        let cfg = QueueConfig {
            queues: q.queues,
            queue_length_limit: q.queue_length_limit,
            per_user: q.per_user.min(q.queue_length_limit),
            service_estimate: SERVICE_ESTIMATE,
        };
        Arc::new(Level {
            name: name.into(),
            seats,
            queuing: queuing.is_some_and(|q| q.queues > 0),
            wait,
            epoch: Instant::now(),
            state: Mutex::new(QueueSet::new(cfg, seats)),
            lendable: 0,
            borrowable: Some(0),
            smoothed: Mutex::new(0.0),
        })
    }

    /// The level, lending up to `lendable` of its seats and borrowing up to
    /// `borrowable` (`None`: any number) from other levels.
    pub(crate) fn lending(
        mut self: Arc<Self>,
        lendable: usize,
        borrowable: Option<usize>,
    ) -> Arc<Level> {
        if let Some(l) = Arc::get_mut(&mut self) {
            l.lendable = lendable.min(l.seats);
            l.borrowable = borrowable;
        }
        self
    }

    /// The seats it may have now (its own, plus borrowed, minus lent).
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// Its bounds and target for borrowing (kube's `allocProblemItem`): at least its
    /// seats minus what it may lend — and as much of its own seats as it used at most —
    /// at most its seats plus what it may borrow; the target is its smoothed demand
    /// (kube's: average plus standard deviation, decaying slowly).
    pub(crate) fn borrowing_item(&self) -> (f64, f64, f64) {
        let d: Demand = self.lock().take_demand(self.now());
        let envelope = d.avg + d.stddev;
        let smoothed = {
            let mut s = self.smoothed.lock().unwrap_or_else(|e| e.into_inner());
            *s = envelope.max(0.977 * *s + 0.023 * envelope);
            *s
        };
        let min = (self.seats - self.lendable) as f64;
        let lower = min.max((self.seats as f64).min(d.high as f64));
        let upper = match self.borrowable {
            Some(b) => (self.seats + b) as f64,
            None => f64::INFINITY,
        };
        (lower, upper, lower.max(smoothed))
    }

    /// Sets the seats it may have now, and starts what then fits.
    pub(crate) fn set_limit(&self, seats: usize) {
        if self.seats == 0 {
            return;
        }
        let mut qs = self.lock();
        qs.set_limit(seats);
        self.dispatch(&mut qs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueSet<Ticket>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Seats taken now (for tests and metrics).
    pub(crate) fn in_use(&self) -> usize {
        self.lock().in_use()
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting()
    }

    /// Seats in all (0: unlimited).
    pub(crate) fn seats(&self) -> usize {
        self.seats
    }

    /// The seats of `est` now, or after waiting in the queue of `hand` the fair queues
    /// choose (the user's turn inside it); `None` when the level is unlimited.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        hand: &[usize],
        user: &str,
        est: impl Into<Estimate>,
    ) -> Result<Option<Seat>, Refusal> {
        if self.seats == 0 {
            return Ok(None);
        }
        let mut rx = {
            let mut qs = self.lock();
            let est = qs.fit(est);
            if !self.queuing {
                return if qs.start_now(self.now(), est) {
                    Ok(Some(self.seat(None, est)))
                } else {
                    Err(Refusal::QueueFull)
                };
            }
            let (tx, rx) = oneshot::channel();
            if qs.enqueue(self.now(), hand, user, Ticket(tx), est).is_err() {
                return Err(Refusal::QueueFull);
            }
            self.dispatch(&mut qs);
            rx
        };
        match tokio::time::timeout(self.wait, &mut rx).await {
            Ok(Ok((q, n))) => Ok(Some(self.seat(Some(q), n))),
            // The level never drops a live ticket without sending; treat it as timed out.
            Ok(Err(_)) => Err(Refusal::TimedOut),
            Err(_) => {
                // Seats may have been handed over just as the wait ended: keep them.
                rx.close();
                match rx.try_recv() {
                    Ok((q, n)) => Ok(Some(self.seat(Some(q), n))),
                    Err(_) => Err(Refusal::TimedOut),
                }
            }
        }
    }

    fn seat(self: &Arc<Self>, queue: Option<usize>, est: Estimate) -> Seat {
        Seat {
            level: self.clone(),
            queue,
            est,
            started: Instant::now(),
        }
    }

    /// Starts every request the fair queues pick while seats are free.
    fn dispatch(&self, qs: &mut QueueSet<Ticket>) {
        let now = self.now();
        while let Some(d) = qs.dispatch(now) {
            if d.item.0.send((d.queue, d.est)).is_err() {
                // Gave up just now: undo, as if it had run for no time.
                let est = Estimate {
                    extra: 0.0,
                    ..d.est
                };
                qs.finish(now, Some(d.queue), est, 0.0);
            }
        }
    }

    /// A request is done after `service` seconds (its seats free unless they linger).
    fn finish(&self, queue: Option<usize>, est: Estimate, service: f64) {
        let mut qs = self.lock();
        qs.finish(self.now(), queue, est, service);
        self.dispatch(&mut qs);
    }

    /// A request's lingering seats are free.
    fn release(&self, queue: Option<usize>, seats: usize) {
        let mut qs = self.lock();
        qs.release(self.now(), queue, seats);
        self.dispatch(&mut qs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::fair::Estimate;

    const QUEUES: Queues = Queues {
        queues: 1,
        queue_length_limit: 100,
        per_user: 10,
    };

    #[tokio::test]
    async fn seats_pass_to_waiters_in_fair_order() {
        let l = Level::new("t", 1, Some(QUEUES), Duration::from_secs(30));
        let held = l.acquire(&[0], "a1", 1).await.unwrap().unwrap();
        // One queue: five users of one flow queue, then another user; users take turns.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for u in ["a1", "a1", "a1", "a2", "a3", "b1"] {
            let (l2, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let s = l2.acquire(&[0], u, 1).await.unwrap();
                order.lock().unwrap().push(u);
                drop(s);
            }));
            // Let it queue before the next one arrives.
            while l.waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(l.in_use(), 1);
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // b1 arrived last but is served fourth: users take turns.
        assert_eq!(order, ["a1", "a2", "a3", "b1", "a1", "a1"]);
        assert_eq!(l.in_use(), 0);
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_or_a_long_wait_is_refused_and_the_seat_survives() {
        let l = Level::new(
            "t",
            1,
            Some(Queues {
                queues: 1,
                queue_length_limit: 1,
                per_user: 1,
            }),
            Duration::from_millis(100),
        );
        let held = l.acquire(&[0], "u", 1).await.unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(&[0], "u", 1).await.map(|_| ()) });
        while l.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            l.acquire(&[0], "v", 1).await.err(),
            Some(Refusal::QueueFull),
            "the queue holds 1"
        );
        assert_eq!(waiter.await.unwrap(), Err(Refusal::TimedOut));
        drop(held);
        assert_eq!(l.in_use(), 0);
        // The abandoned ticket is gone; the next request gets the seat at once.
        assert!(l.acquire(&[0], "v", 1).await.unwrap().is_some());
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test]
    async fn without_queuing_excess_is_refused_at_once_and_widths_count() {
        let l = Level::new("t", 3, None, Duration::from_secs(5));
        let a = l.acquire(&[], "u", 2).await.unwrap().unwrap();
        assert_eq!(a.width(), 2);
        assert_eq!(l.acquire(&[], "u", 2).await.err(), Some(Refusal::QueueFull));
        let b = l.acquire(&[], "u", 1).await.unwrap();
        assert_eq!(l.in_use(), 3);
        drop((a, b));
        // Wider than the level: it takes the whole level.
        let w = l.acquire(&[], "u", 10).await.unwrap().unwrap();
        assert_eq!(w.width(), 3);
        drop(w);
        // Zero seats: unlimited.
        let free = Level::new("t", 0, None, Duration::from_secs(5));
        assert!(free.acquire(&[], "u", 1).await.unwrap().is_none());
    }
    #[tokio::test]
    async fn a_writes_fan_out_seats_are_released_after_its_extra_time() {
        let l = Level::new("t", 4, Some(QUEUES), Duration::from_secs(30));
        // 200 ms of extra time (kube: 5 ms per ten watchers), long enough to observe.
        let write = Estimate {
            seats: 1,
            final_seats: 3,
            extra: 0.2,
        };
        let w = l.acquire(&[0], "w", write).await.unwrap().unwrap();
        assert_eq!((w.width(), l.in_use()), (3, 3));
        let t0 = Instant::now();
        drop(w);
        // The write returned: its 3 seats stay taken for its extra time.
        assert_eq!(l.in_use(), 3);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let s = l2.acquire(&[0], "r", 2).await.unwrap();
            (Instant::now(), s.map(|s| s.width()))
        });
        let (at, width) = waiter.await.unwrap();
        assert_eq!(width, Some(2));
        assert!(at - t0 >= Duration::from_millis(200), "{:?}", at - t0);
        assert_eq!(l.in_use(), 0);
    }
}
