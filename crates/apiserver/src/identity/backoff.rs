//! Growing back-off after failed password checks, per user name and per source
//! address, in bounded memory. Names that do not exist count like names that do, so
//! the answer never tells whether a user exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered; beyond, the stalest are forgotten.
const MAX_ENTRIES: usize = 10_000;
/// Failures allowed before a user name is locked out.
const FREE_PER_USER: u32 = 3;
/// Failures allowed before a source address is locked out.
const FREE_PER_ADDR: u32 = 20;
/// The first lockout; each further failure doubles it, up to [`MAX_LOCK`].
const BASE_LOCK: Duration = Duration::from_secs(1);
const MAX_LOCK: Duration = Duration::from_secs(300);
/// A key with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Instant,
    last: Instant,
}

/// The failure counters.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

impl Backoff {
    /// How long the caller must still wait, if `user` or `addr` is locked out.
    pub fn locked(&self, user: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = vec![Key::User(user.to_string())];
        keys.extend(addr.map(Key::Addr));
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|e| e.locked_until > now)
            .map(|e| e.locked_until - now)
            .max()
    }

    /// Records a failed attempt.
    pub fn fail(&self, user: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = vec![(Key::User(user.to_string()), FREE_PER_USER)];
        keys.extend(addr.map(|a| (Key::Addr(a), FREE_PER_ADDR)));
        for (k, free) in keys {
            if !map.contains_key(&k) && map.len() >= MAX_ENTRIES {
                evict(&mut map, now);
            }
            let e = map.entry(k).or_insert(Entry {
                failures: 0,
                locked_until: now,
                last: now,
            });
            if now.duration_since(e.last) > FORGET_AFTER {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            if e.failures >= free {
                let exp = (e.failures - free).min(16);
                let lock = BASE_LOCK.saturating_mul(1u32 << exp).min(MAX_LOCK);
                e.locked_until = now + lock;
            }
        }
    }

    /// Forgets the failures of `user` and `addr` after a successful check.
    pub fn succeed(&self, user: &str, addr: Option<IpAddr>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Key::User(user.to_string()));
        if let Some(a) = addr {
            map.remove(&Key::Addr(a));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Drops stale entries, or when none is stale the least recently failed tenth.
fn evict(map: &mut HashMap<Key, Entry>, now: Instant) {
    map.retain(|_, e| now.duration_since(e.last) <= FORGET_AFTER && e.locked_until > now);
    if map.len() >= MAX_ENTRIES {
        let mut lasts: Vec<Instant> = map.values().map(|e| e.last).collect();
        lasts.sort_unstable();
        let cut = lasts[MAX_ENTRIES / 10];
        map.retain(|_, e| e.last > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_bounded() {
        let b = Backoff::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_PER_USER - 1 {
            b.fail("alice", Some(a));
        }
        assert!(b.locked("alice", Some(a)).is_none());
        b.fail("alice", Some(a));
        let first = b.locked("alice", None).unwrap();
        assert!(first <= BASE_LOCK);
        b.fail("alice", Some(a));
        assert!(b.locked("alice", None).unwrap() > first);
        // Another name from another address is free; the same address is not yet locked.
        assert!(b
            .locked("bob", Some("192.0.2.2".parse().unwrap()))
            .is_none());
        assert!(b.locked("bob", Some(a)).is_none());
        b.succeed("alice", Some(a));
        assert!(b.locked("alice", Some(a)).is_none());
        for i in 0..(MAX_ENTRIES + 500) {
            b.fail(&format!("u{i}"), None);
        }
        assert!(b.len() <= MAX_ENTRIES);
    }
}
