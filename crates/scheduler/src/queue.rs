//! The scheduling queue (kube-scheduler's three queues): pods ready to try, ordered by
//! priority then arrival; pods backing off after a failure; pods found unschedulable,
//! which wait for a cluster event that could help them (or the periodic flush).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::PodInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable {
        since: Instant,
        plugins: u16,
    },
    /// Popped and being scheduled.
    InFlight,
}

#[derive(Debug)]
struct Queued {
    info: Arc<PodInfo>,
    state: State,
    attempts: u32,
    /// When it first entered the queue (the tie break after priority).
    seq: u64,
    /// Bumped on every state change; stale heap entries are skipped.
    gen: u64,
    last_attempt: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    gen: u64,
    uid: String,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BackoffEntry {
    until: std::cmp::Reverse<Instant>,
    gen: u64,
    uid: String,
}

/// Back-off timers of the queue.
#[derive(Clone, Debug)]
pub struct QueueTimers {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_unschedulable: Duration,
}

#[derive(Debug)]
pub struct Queue {
    t: QueueTimers,
    pods: HashMap<String, Queued>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<BackoffEntry>,
    unschedulable: HashSet<String>,
    next_seq: u64,
    next_gen: u64,
}

impl Queue {
    pub fn new(t: QueueTimers) -> Queue {
        Queue {
            t,
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            next_seq: 0,
            next_gen: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    #[allow(dead_code)]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    fn set_state(&mut self, uid: &str, state: State) {
        let g = self.gen();
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        if matches!(q.state, State::Unschedulable { .. }) {
            self.unschedulable.remove(uid);
        }
        q.state = state;
        q.gen = g;
        match state {
            State::Active => self.active.push(ActiveEntry {
                priority: q.info.priority,
                seq: q.seq,
                gen: g,
                uid: uid.to_string(),
            }),
            State::Backoff(until) => self.backoff.push(BackoffEntry {
                until: std::cmp::Reverse(until),
                gen: g,
                uid: uid.to_string(),
            }),
            State::Unschedulable { .. } => {
                self.unschedulable.insert(uid.to_string());
            }
            State::InFlight => {}
        }
    }

    /// Adds a new pending pod, or updates one already queued. An update that changes
    /// what scheduling looks at makes an unschedulable pod active again.
    pub fn add_or_update(&mut self, info: Arc<PodInfo>) {
        let uid = info.uid.clone();
        if let Some(q) = self.pods.get_mut(&uid) {
            let relevant = spec_changed(&q.info, &info);
            q.info = info;
            if relevant && matches!(q.state, State::Unschedulable { .. } | State::Backoff(_)) {
                self.set_state(&uid, State::Active);
            }
            return;
        }
        self.next_seq += 1;
        self.pods.insert(
            uid.clone(),
            Queued {
                info,
                state: State::InFlight,
                attempts: 0,
                seq: self.next_seq,
                gen: 0,
                last_attempt: None,
            },
        );
        self.set_state(&uid, State::Active);
    }

    pub fn remove(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        self.unschedulable.remove(uid);
        self.pods.remove(uid).map(|q| q.info)
    }

    /// The next pod to try: highest priority, then the earliest queued.
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some(e) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&e.uid) else {
                continue;
            };
            if q.gen != e.gen || q.state != State::Active {
                continue;
            }
            q.state = State::InFlight;
            q.attempts += 1;
            q.last_attempt = Some(Instant::now());
            return Some(Arc::clone(&q.info));
        }
        None
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.t.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.t.max_backoff {
                return self.t.max_backoff;
            }
        }
        d.min(self.t.max_backoff)
    }

    fn backoff_until(&self, q: &Queued) -> Instant {
        q.last_attempt.unwrap_or_else(Instant::now) + self.backoff_duration(q.attempts)
    }

    /// The pod could not be placed; `plugins` are the filters that refused nodes.
    pub fn unschedulable(&mut self, uid: &str, plugins: u16) {
        if self.pods.contains_key(uid) {
            self.set_state(
                uid,
                State::Unschedulable {
                    since: Instant::now(),
                    plugins,
                },
            );
        }
    }

    /// The attempt failed for a reason not about the cluster's shape (an API error):
    /// retry after the back-off. Re-adds the pod if it had left the queue.
    pub fn retry(&mut self, info: Arc<PodInfo>) {
        let uid = info.uid.clone();
        if !self.pods.contains_key(&uid) {
            self.next_seq += 1;
            self.pods.insert(
                uid.clone(),
                Queued {
                    info,
                    state: State::InFlight,
                    attempts: 1,
                    seq: self.next_seq,
                    gen: 0,
                    last_attempt: Some(Instant::now()),
                },
            );
        }
        let until = self.backoff_until(&self.pods[&uid]);
        self.set_state(&uid, State::Backoff(until));
    }

    /// A cluster event that may help pods refused by `plugins`: move them to active
    /// (or to back-off if theirs has not expired).
    pub fn move_on_event(&mut self, plugins: u16) -> usize {
        if self.unschedulable.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let uids: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|u| {
                matches!(self.pods.get(*u).map(|q| q.state),
                    Some(State::Unschedulable { plugins: p, .. }) if p & plugins != 0)
            })
            .cloned()
            .collect();
        for uid in &uids {
            let until = self.backoff_until(&self.pods[uid]);
            let st = if until <= now {
                State::Active
            } else {
                State::Backoff(until)
            };
            self.set_state(uid, st);
        }
        uids.len()
    }

    /// Moves expired back-offs to active, and pods unschedulable for longer than the
    /// limit back into play. Returns when the next back-off expires.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        while let Some(e) = self.backoff.peek() {
            let until = e.until.0;
            let valid = self
                .pods
                .get(&e.uid)
                .is_some_and(|q| q.gen == e.gen && matches!(q.state, State::Backoff(_)));
            if !valid {
                self.backoff.pop();
                continue;
            }
            if until > now {
                return Some(until);
            }
            let e = self.backoff.pop().expect("peeked");
            self.set_state(&e.uid, State::Active);
        }
        None
    }

    /// Unschedulable pods that waited longer than the limit go back to active.
    pub fn flush_unschedulable(&mut self, now: Instant) -> usize {
        let limit = self.t.max_unschedulable;
        let old: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|u| {
                matches!(self.pods.get(*u).map(|q| q.state),
                    Some(State::Unschedulable { since, .. }) if now.duration_since(since) >= limit)
            })
            .cloned()
            .collect();
        for uid in &old {
            self.set_state(uid, State::Active);
        }
        old.len()
    }

    /// The pod was placed (assumed): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }
}

/// Whether an update changes anything scheduling looks at (not just status or version).
fn spec_changed(a: &PodInfo, b: &PodInfo) -> bool {
    let strip = |p: &PodInfo| {
        let mut p = p.clone();
        p.resource_version.clear();
        p.unschedulable_message = None;
        p.nominated_node.clear();
        p
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, prio: i32) -> Arc<PodInfo> {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "d", "uid": uid},
            "spec": {"containers": [], "priority": prio}
        }))
        .unwrap();
        Arc::new(PodInfo::from_pod(&p))
    }

    fn q() -> Queue {
        Queue::new(QueueTimers {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(80),
            max_unschedulable: Duration::from_millis(100),
        })
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = q();
        q.add_or_update(info("a", 0));
        q.add_or_update(info("b", 10));
        q.add_or_update(info("c", 0));
        q.add_or_update(info("d", 10));
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|p| p.uid.clone())
            .collect();
        assert_eq!(order, vec!["b", "d", "a", "c"]);
    }

    #[test]
    fn unschedulable_moves_on_matching_event_after_backoff() {
        let mut q = q();
        q.add_or_update(info("a", 0));
        let p = q.pop().unwrap();
        q.unschedulable(&p.uid, 0b10);
        assert!(q.pop().is_none());
        // An event for other plugins does not move it.
        assert_eq!(q.move_on_event(0b01), 0);
        assert_eq!(q.move_on_event(0b10), 1);
        // Back-off (20 ms) not yet over: it waits in back-off.
        assert!(q.pop().is_none());
        std::thread::sleep(Duration::from_millis(25));
        assert!(q.flush(Instant::now()).is_none());
        assert_eq!(q.pop().unwrap().uid, "a");
        // Back-off doubles and is capped.
        assert_eq!(q.backoff_duration(1), Duration::from_millis(20));
        assert_eq!(q.backoff_duration(2), Duration::from_millis(40));
        assert_eq!(q.backoff_duration(9), Duration::from_millis(80));
    }

    #[test]
    fn periodic_flush_and_spec_update() {
        let mut q = q();
        q.add_or_update(info("a", 0));
        let p = q.pop().unwrap();
        q.unschedulable(&p.uid, 1);
        assert_eq!(q.flush_unschedulable(Instant::now()), 0);
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(q.flush_unschedulable(Instant::now()), 1);
        assert_eq!(q.pop().unwrap().uid, "a");
        q.unschedulable("a", 1);
        // A status-only update leaves it; a label change brings it back.
        let mut same = (*info("a", 0)).clone();
        same.resource_version = "9".into();
        q.add_or_update(Arc::new(same.clone()));
        assert!(q.pop().is_none());
        same.labels.insert("x".into(), "y".into());
        q.add_or_update(Arc::new(same));
        assert_eq!(q.pop().unwrap().uid, "a");
        q.done("a");
        assert!(q.is_empty());
    }
}
