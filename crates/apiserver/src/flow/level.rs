//! A priority level: a number of seats (requests executing at once) and a fair queue of
//! requests waiting for one. A released seat goes straight to the next waiter in fair
//! order, so a seat is never free while someone waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::fair::{FairQueue, Full, QueueBounds, Waiter};

/// A waiter's handle: the seat is handed over by sending on it.
struct Ticket(oneshot::Sender<()>);

impl Waiter for Ticket {
    fn abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

struct State {
    in_use: usize,
    queue: FairQueue<Ticket>,
}

/// Why a request got no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its queue was full (or the level does not queue).
    QueueFull,
    /// It waited the longest a request may wait.
    TimedOut,
}

pub(crate) struct Level {
    pub(crate) name: String,
    /// 0: unlimited.
    seats: usize,
    /// `None`: no queuing, refuse at once when the seats are taken (kube's max-in-flight
    /// filter, as with `--enable-priority-and-fairness=false`).
    queuing: Option<QueueBounds>,
    wait: Duration,
    state: Mutex<State>,
}

/// A seat, given back when dropped.
pub(crate) struct Seat(Arc<Level>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Level {
    pub(crate) fn new(
        name: impl Into<String>,
        seats: usize,
        queuing: Option<QueueBounds>,
        wait: Duration,
    ) -> Arc<Level> {
        let bounds = queuing.unwrap_or(QueueBounds {
            per_user: 0,
            per_tenant: 0,
            total: 0,
        });
        Arc::new(Level {
            name: name.into(),
            seats,
            queuing,
            wait,
            state: Mutex::new(State {
                in_use: 0,
                queue: FairQueue::new(bounds),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seats taken now (for tests and metrics).
    pub(crate) fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Seats in all (0: unlimited).
    pub(crate) fn seats(&self) -> usize {
        self.seats
    }

    /// Of `queues`, the one with the fewest requests waiting (the first of equals).
    pub(crate) fn shortest<'a>(&self, queues: &'a [String]) -> Option<&'a String> {
        let st = self.lock();
        queues.iter().min_by_key(|q| st.queue.tenant_len(q))
    }

    /// A seat now, or after waiting in the fair queue of (`tenant`, `user`).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        user: &str,
    ) -> Result<Option<Seat>, Refusal> {
        if self.seats == 0 {
            return Ok(None);
        }
        let mut rx = {
            let mut st = self.lock();
            if st.in_use < self.seats {
                st.in_use += 1;
                return Ok(Some(Seat(self.clone())));
            }
            if self.queuing.is_none() {
                return Err(Refusal::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            if let Err((_full, _)) = st.queue.push(tenant, user, Ticket(tx)) {
                let _: Full = _full;
                return Err(Refusal::QueueFull);
            }
            rx
        };
        match tokio::time::timeout(self.wait, &mut rx).await {
            Ok(Ok(())) => Ok(Some(Seat(self.clone()))),
            // The level never drops a live ticket without sending; treat it as timed out.
            Ok(Err(_)) => Err(Refusal::TimedOut),
            Err(_) => {
                // A seat may have been handed over just as the wait ended: keep it.
                rx.close();
                match rx.try_recv() {
                    Ok(()) => Ok(Some(Seat(self.clone()))),
                    Err(_) => Err(Refusal::TimedOut),
                }
            }
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        while let Some(t) = st.queue.pop() {
            if t.0.send(()).is_ok() {
                // The seat passes to the waiter; in_use is unchanged.
                return;
            }
        }
        st.in_use = st.in_use.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: QueueBounds = QueueBounds {
        per_user: 10,
        per_tenant: 100,
        total: 1000,
    };

    #[tokio::test]
    async fn seats_pass_to_waiters_in_fair_order() {
        let l = Level::new("t", 1, Some(BOUNDS), Duration::from_secs(30));
        let held = l.acquire("a", "a1").await.unwrap().unwrap();
        // Tenant a queues 5 requests from 5 users, then tenant b one request.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (t, u) in [
            ("a", "a1"),
            ("a", "a2"),
            ("a", "a3"),
            ("a", "a4"),
            ("a", "a5"),
            ("b", "b1"),
        ] {
            let (l2, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let s = l2.acquire(t, u).await.unwrap();
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
        // b1 arrived last but is served second: tenants alternate.
        assert_eq!(order, ["a1", "b1", "a2", "a3", "a4", "a5"]);
        assert_eq!(l.in_use(), 0);
        assert_eq!(l.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_or_a_long_wait_is_refused_and_the_seat_survives() {
        let l = Level::new(
            "t",
            1,
            Some(QueueBounds {
                per_user: 1,
                per_tenant: 1,
                total: 1,
            }),
            Duration::from_millis(100),
        );
        let held = l.acquire("a", "u").await.unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire("a", "u").await.map(|_| ()) });
        while l.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            l.acquire("b", "v").await.err(),
            Some(Refusal::QueueFull),
            "the total bound is 1"
        );
        assert_eq!(waiter.await.unwrap(), Err(Refusal::TimedOut));
        drop(held);
        assert_eq!(l.in_use(), 0);
        // The abandoned ticket is gone; the next request gets the seat at once.
        assert!(l.acquire("b", "v").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn without_queuing_excess_is_refused_at_once() {
        let l = Level::new("t", 2, None, Duration::from_secs(5));
        let a = l.acquire("", "u").await.unwrap();
        let b = l.acquire("", "u").await.unwrap();
        assert_eq!(l.acquire("", "u").await.err(), Some(Refusal::QueueFull));
        drop((a, b));
        assert!(l.acquire("", "u").await.is_ok());
        // Zero seats: unlimited.
        let free = Level::new("t", 0, None, Duration::from_secs(5));
        assert!(free.acquire("", "u").await.unwrap().is_none());
    }
}
