//! A work queue with client-go's semantics: an item waiting in the queue is there once
//! however often it is added; an item being processed is not handed to a second worker, and
//! is queued again when it was added meanwhile; failures are retried with a per-item
//! exponential back-off that `forget` resets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Per-item exponential back-off: `base · 2^failures`, at most `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` earlier failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

struct Inner<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// The queue; cheap to clone (shared).
pub struct WorkQueue<T> {
    inner: Arc<Mutex<Inner<T>>>,
    notify: Arc<Notify>,
    backoff: Backoff,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
            notify: self.notify.clone(),
            backoff: self.backoff,
        }
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    pub fn new(backoff: Backoff) -> Self {
        WorkQueue {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            })),
            notify: Arc::new(Notify::new()),
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock leaves plain collections behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut q = self.lock();
        if !q.dirty.insert(item.clone()) {
            return;
        }
        if q.processing.contains(&item) {
            return; // `done` queues it again
        }
        q.queue.push_back(item);
        drop(q);
        self.notify.notify_one();
    }

    /// Queues every item.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) {
        for i in items {
            self.add(i);
        }
    }

    /// The next item; waits when the queue is empty. Call [`WorkQueue::done`] after.
    pub async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = self.lock();
                if let Some(item) = q.queue.pop_front() {
                    q.dirty.remove(&item);
                    q.processing.insert(item.clone());
                    let more = !q.queue.is_empty();
                    drop(q);
                    if more {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Marks `item` processed; queues it again if it was added meanwhile.
    pub fn done(&self, item: &T) {
        let mut q = self.lock();
        q.processing.remove(item);
        if q.dirty.contains(item) {
            q.queue.push_back(item.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Clears the failure count of `item`.
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    /// Queues `item` again after its back-off.
    pub fn add_rate_limited(&self, item: T) {
        let delay = {
            let mut q = self.lock();
            let n = q.failures.entry(item.clone()).or_insert(0);
            let d = self.backoff.delay(*n);
            *n = n.saturating_add(1);
            d
        };
        self.add_after(item, delay);
    }

    /// Queues `item` after `delay`.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            self.add(item);
            return;
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(item);
        });
    }

    /// How many items wait (not counting those being processed).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> WorkQueue<u32> {
        WorkQueue::new(Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1),
        })
    }

    #[tokio::test]
    async fn dedups_waiting_items_and_requeues_items_added_while_processing() {
        let q = q();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let a = q.get().await;
        assert_eq!(a, 1);
        q.add(1); // while processing: not handed out twice
        assert_eq!(q.get().await, 2);
        assert!(q.is_empty());
        q.done(&1);
        assert_eq!(q.get().await, 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(100),
        };
        assert_eq!(b.delay(0), Duration::from_millis(5));
        assert_eq!(b.delay(3), Duration::from_millis(40));
        assert_eq!(b.delay(10), Duration::from_millis(100));
        assert_eq!(b.delay(200), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn rate_limited_items_come_back() {
        let q = q();
        q.add_rate_limited(7);
        assert_eq!(q.get().await, 7);
    }
}
