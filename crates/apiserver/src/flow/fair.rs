//! Fair queuing in two tiers: round-robin over tenants, then round-robin over the users
//! of the chosen tenant, then FIFO within a user. One tenant's fifty busy users get one
//! tenant's turn, not fifty. Pure data structure (no clocks, no tasks), O(1) per push
//! and per pop apart from skipping entries whose waiter gave up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// An entry that may have been abandoned (its requester timed out or went away);
/// abandoned entries are skipped when dequeued and dropped first when a queue is full.
pub(crate) trait Waiter {
    fn abandoned(&self) -> bool;
}

/// How much may wait: per user (kube's `queueLengthLimit`), per tenant, in all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueBounds {
    pub per_user: usize,
    pub per_tenant: usize,
    pub total: usize,
}

/// Why an entry was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    User,
    Tenant,
    Total,
}

struct Tenant<T> {
    users: HashMap<Arc<str>, VecDeque<T>>,
    /// Users with waiting entries, in turn order.
    ring: VecDeque<Arc<str>>,
    len: usize,
}

/// The queue of one priority level.
pub(crate) struct FairQueue<T> {
    bounds: QueueBounds,
    tenants: HashMap<Arc<str>, Tenant<T>>,
    /// Tenants with waiting entries, in turn order.
    ring: VecDeque<Arc<str>>,
    len: usize,
}

impl<T: Waiter> FairQueue<T> {
    pub(crate) fn new(bounds: QueueBounds) -> Self {
        FairQueue {
            bounds,
            tenants: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
        }
    }

    /// Entries waiting (abandoned ones included until they are dropped).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries waiting for `tenant`.
    pub(crate) fn tenant_len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.len)
    }

    /// Queues `item` for (`tenant`, `user`), or gives it back with the bound it hit.
    pub(crate) fn push(&mut self, tenant: &str, user: &str, item: T) -> Result<(), (Full, T)> {
        if self.len >= self.bounds.total {
            self.purge_all();
            if self.len >= self.bounds.total {
                return Err((Full::Total, item));
            }
        }
        let mut tenant_len = self.tenants.get(tenant).map_or(0, |t| t.len);
        if tenant_len >= self.bounds.per_tenant {
            self.purge_tenant(tenant);
            tenant_len = self.tenants.get(tenant).map_or(0, |t| t.len);
            if tenant_len >= self.bounds.per_tenant {
                return Err((Full::Tenant, item));
            }
        }
        let user_len = self
            .tenants
            .get(tenant)
            .and_then(|t| t.users.get(user))
            .map_or(0, VecDeque::len);
        if user_len >= self.bounds.per_user {
            self.purge_tenant(tenant);
            let user_len = self
                .tenants
                .get(tenant)
                .and_then(|t| t.users.get(user))
                .map_or(0, VecDeque::len);
            if user_len >= self.bounds.per_user {
                return Err((Full::User, item));
            }
        }
        let t = match self.tenants.get_mut(tenant) {
            Some(t) => t,
            None => {
                let k: Arc<str> = Arc::from(tenant);
                self.ring.push_back(k.clone());
                self.tenants.entry(k).or_insert_with(|| Tenant {
                    users: HashMap::new(),
                    ring: VecDeque::new(),
                    len: 0,
                })
            }
        };
        match t.users.get_mut(user) {
            Some(q) => q.push_back(item),
            None => {
                let k: Arc<str> = Arc::from(user);
                t.ring.push_back(k.clone());
                t.users.insert(k, VecDeque::from([item]));
            }
        }
        t.len += 1;
        self.len += 1;
        Ok(())
    }

    /// The next live entry in fair order.
    pub(crate) fn pop(&mut self) -> Option<T> {
        loop {
            let tk = self.ring.pop_front()?;
            let Some(t) = self.tenants.get_mut(&tk) else {
                continue;
            };
            let Some(uk) = t.ring.pop_front() else {
                self.tenants.remove(&tk);
                continue;
            };
            let (item, user_left) = match t.users.get_mut(&uk) {
                Some(q) => (q.pop_front(), !q.is_empty()),
                None => (None, false),
            };
            if item.is_some() {
                t.len -= 1;
                self.len -= 1;
            }
            if user_left {
                t.ring.push_back(uk);
            } else {
                t.users.remove(&uk);
            }
            if t.len > 0 {
                self.ring.push_back(tk);
            } else {
                self.tenants.remove(&tk);
            }
            match item {
                Some(i) if !i.abandoned() => return Some(i),
                _ => continue,
            }
        }
    }

    /// Drops the abandoned entries at the front of each of `tenant`'s user queues
    /// (requesters give up in arrival order, so that is where they are).
    fn purge_tenant(&mut self, tenant: &str) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        let mut dropped = 0;
        for q in t.users.values_mut() {
            while q.front().is_some_and(Waiter::abandoned) {
                q.pop_front();
                dropped += 1;
            }
        }
        t.len -= dropped;
        self.len -= dropped;
        // Emptied users and tenants leave the rings lazily: `pop` skips them.
        t.users.retain(|_, q| !q.is_empty());
        let users = &t.users;
        t.ring.retain(|u| users.contains_key(u));
        if t.len == 0 {
            self.tenants.remove(tenant);
            self.ring.retain(|k| &**k != tenant);
        }
    }

    fn purge_all(&mut self) {
        let keys: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for k in keys {
            self.purge_tenant(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Item {
        tenant: &'static str,
        user: String,
        gone: Arc<AtomicBool>,
    }
    impl Waiter for Item {
        fn abandoned(&self) -> bool {
            self.gone.load(Ordering::Relaxed)
        }
    }
    fn item(tenant: &'static str, user: &str) -> Item {
        Item {
            tenant,
            user: user.to_string(),
            gone: Arc::new(AtomicBool::new(false)),
        }
    }
    const BIG: QueueBounds = QueueBounds {
        per_user: 1000,
        per_tenant: 100_000,
        total: 100_000,
    };

    #[test]
    fn a_tenant_with_one_user_gets_half_against_a_tenant_with_fifty() {
        let mut q = FairQueue::new(BIG);
        // Tenant "flood": 50 users, 20 requests each, all queued before "calm" arrives.
        for r in 0..20 {
            for u in 0..50 {
                let _ = r;
                q.push("flood", &format!("u{u}"), item("flood", &format!("u{u}")))
                    .unwrap();
            }
        }
        for _ in 0..20 {
            q.push("calm", "alice", item("calm", "alice")).unwrap();
        }
        assert_eq!(q.len(), 1020);
        // The next 40 dispatches: alternate tenants, so calm gets 20 of 40 even though it
        // arrived last and has 1/51 of the users.
        let first: Vec<Item> = (0..40).map(|_| q.pop().unwrap()).collect();
        let calm = first.iter().filter(|i| i.tenant == "calm").count();
        assert_eq!(calm, 20);
        // And within the flooding tenant its users take turns: 20 distinct users.
        let mut flood_users: Vec<&str> = first
            .iter()
            .filter(|i| i.tenant == "flood")
            .map(|i| i.user.as_str())
            .collect();
        flood_users.sort();
        flood_users.dedup();
        assert_eq!(flood_users.len(), 20);
        // Then only the flood is left, drained entirely.
        let rest = std::iter::from_fn(|| q.pop()).count();
        assert_eq!(rest, 980);
        assert_eq!(q.len(), 0);
        assert!(q.tenants.is_empty() && q.ring.is_empty());
    }

    #[test]
    fn fifo_within_a_user_and_round_robin_over_users() {
        let mut q = FairQueue::new(BIG);
        for (u, n) in [("a", 3), ("b", 1), ("c", 2)] {
            for i in 0..n {
                q.push("t", u, item("t", &format!("{u}{i}"))).unwrap();
            }
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).map(|i| i.user).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "c1", "a2"]);
    }

    #[test]
    fn bounds_per_user_per_tenant_and_total() {
        let mut q = FairQueue::new(QueueBounds {
            per_user: 2,
            per_tenant: 3,
            total: 5,
        });
        q.push("t1", "a", item("t1", "a")).unwrap();
        q.push("t1", "a", item("t1", "a")).unwrap();
        assert_eq!(
            q.push("t1", "a", item("t1", "a")).unwrap_err().0,
            Full::User
        );
        q.push("t1", "b", item("t1", "b")).unwrap();
        assert_eq!(
            q.push("t1", "c", item("t1", "c")).unwrap_err().0,
            Full::Tenant
        );
        // Another tenant is not refused because t1 is full.
        q.push("t2", "x", item("t2", "x")).unwrap();
        q.push("t3", "y", item("t3", "y")).unwrap();
        assert_eq!(
            q.push("t4", "z", item("t4", "z")).unwrap_err().0,
            Full::Total
        );
    }

    #[test]
    fn abandoned_entries_are_skipped_and_free_their_place() {
        let mut q = FairQueue::new(QueueBounds {
            per_user: 2,
            per_tenant: 10,
            total: 10,
        });
        let a = item("t", "u");
        let gone = a.gone.clone();
        q.push("t", "u", a).unwrap();
        q.push("t", "u", item("t", "u")).unwrap();
        gone.store(true, Ordering::Relaxed);
        // The full user queue makes room by dropping the abandoned front entry.
        q.push("t", "u", item("t", "u")).unwrap();
        assert_eq!(q.len(), 2);
        assert!(q.pop().is_some());
        assert!(q.pop().is_some());
        assert!(q.pop().is_none());
        // A queue of only abandoned entries yields nothing.
        let b = item("t", "v");
        b.gone.store(true, Ordering::Relaxed);
        q.push("t", "v", b).unwrap();
        assert!(q.pop().is_none());
        assert_eq!(q.len(), 0);
    }
}
