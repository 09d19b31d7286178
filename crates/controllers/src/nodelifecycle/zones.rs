//! Zone-aware rate limiting of NoExecute tainting, as kube-controller-manager's node
//! lifecycle controller does it (`handleDisruption`, `zoneNoExecuteTainter`).
//!
//! Nodes are grouped by zone (region and zone labels). Each zone has a state computed from
//! its nodes' `Ready` conditions (`ComputeZoneState`): *full disruption* when no node is
//! Ready, *partial disruption* when more than two nodes and at least
//! `unhealthy_zone_threshold` of them (0.55) are not Ready, *normal* otherwise. A node that
//! goes NotReady or Unknown is queued in its zone, and the queue hands nodes out to be tainted
//! NoExecute (which starts the taint manager's evictions) at the zone's rate — a token bucket
//! of burst 1:
//!
//! * normal and full disruption: `eviction_rate` (`--node-eviction-rate`, 0.1 nodes/s);
//! * partial disruption: `secondary_eviction_rate` (`--secondary-node-eviction-rate`, 0.01)
//!   if the zone has more than `large_cluster_size_threshold` nodes (50), else 0: tainting
//!   stops in a small zone that is mostly down;
//! * every zone in full disruption ("master disruption"): the fault is more likely the
//!   control plane's or the network's than the nodes', so every queue stops (rate 0) and the
//!   controller removes the NoExecute taints it set; leaving that mode restores each zone's
//!   rate for its state.
//!
//! A queued node stays known until it is Ready again ([`ZoneTainter::cancel`]), so a node
//! that was tainted is not queued (and charged) a second time. This is pure code over the
//! controller's clock, unit-tested below; the controller does the I/O.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The rates and thresholds (kube-controller-manager's flags and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Nodes per second tainted NoExecute in a healthy zone (`--node-eviction-rate`, 0.1).
    pub eviction_rate: f64,
    /// Nodes per second in a large zone in partial disruption
    /// (`--secondary-node-eviction-rate`, 0.01).
    pub secondary_eviction_rate: f64,
    /// Share of not-Ready nodes (with more than two of them) that puts a zone in partial
    /// disruption (`--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_zone_threshold: f64,
    /// Above this many nodes a zone in partial disruption keeps tainting at the secondary
    /// rate; at or below it, tainting stops (`--large-cluster-size-threshold`, 50).
    pub large_cluster_size_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// A zone's health (kube's `ZoneState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Seen for the first time; no state decided yet.
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// The state of a zone whose nodes have these `Ready` statuses (`None`: no condition), and
/// how many are not Ready (kube's `ComputeZoneState`).
pub fn zone_state<'a>(
    ready: impl IntoIterator<Item = Option<&'a str>>,
    unhealthy_threshold: f64,
) -> (usize, ZoneState) {
    let (mut up, mut down) = (0usize, 0usize);
    for r in ready {
        if r == Some("True") {
            up += 1;
        } else {
            down += 1;
        }
    }
    let state = if up == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / (down + up) as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    };
    (down, state)
}

/// A token bucket of burst 1 (client-go's `NewTokenBucketRateLimiter(qps, 1)`); rate 0 never
/// accepts (`NewFakeNeverRateLimiter`).
#[derive(Clone, Debug)]
struct Bucket {
    rate: f64,
    /// Tokens at `at` (0..=1).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: 1.0,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.at = now;
    }

    fn try_accept(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there (`None`: never).
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.rate <= 0.0 {
            return None;
        }
        let mut b = self.clone();
        b.refill(now);
        let missing = (1.0 - b.tokens).max(0.0);
        Some(now + Duration::from_secs_f64(missing / self.rate))
    }

    /// kube's `SwapLimiter`: a new bucket at `rate`, empty if this one had no token left
    /// (so a rate change does not hand out a free token).
    fn swap(&mut self, rate: f64, now: Instant) {
        if self.rate == rate {
            return;
        }
        let had_token = self.rate > 0.0 && {
            let mut b = self.clone();
            b.refill(now);
            b.tokens >= 1.0
        };
        *self = Bucket::new(rate, now);
        if !had_token {
            self.tokens = 0.0;
        }
    }
}

#[derive(Clone, Debug)]
struct Zone {
    bucket: Bucket,
    queue: VecDeque<String>,
    /// Every node queued and not cancelled since (also those already handed out).
    known: HashSet<String>,
}

/// What a disruption update changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// Every zone is now fully disrupted: remove the NoExecute taints, evict nothing.
    EnterMasterDisruption,
    /// Some zone is healthy again after master disruption: every node gets a fresh grace
    /// period.
    ExitMasterDisruption,
}

/// The per-zone tainting queues and their states.
#[derive(Debug)]
pub struct ZoneTainter {
    limits: Limits,
    states: BTreeMap<String, ZoneState>,
    zones: BTreeMap<String, Zone>,
}

impl ZoneTainter {
    pub fn new(limits: Limits) -> Self {
        ZoneTainter {
            limits,
            states: BTreeMap::new(),
            zones: BTreeMap::new(),
        }
    }

    fn zone(&mut self, zone: &str, now: Instant) -> &mut Zone {
        let rate = self.limits.eviction_rate;
        self.zones.entry(zone.to_string()).or_insert_with(|| Zone {
            bucket: Bucket::new(rate, now),
            queue: VecDeque::new(),
            known: HashSet::new(),
        })
    }

    /// The state a zone was last put in.
    pub fn state(&self, zone: &str) -> Option<ZoneState> {
        self.states.get(zone).copied()
    }

    /// Whether every zone is fully disrupted (nothing is tainted NoExecute then).
    pub fn master_disrupted(&self) -> bool {
        !self.states.is_empty()
            && self
                .states
                .values()
                .all(|s| *s == ZoneState::FullDisruption)
    }

    /// The rate of a zone of `size` nodes in `state` (kube's `setLimiterInZone` with
    /// `ReducedQPSFunc` for partial and `HealthyQPSFunc` for full disruption).
    pub fn rate_for(&self, size: usize, state: ZoneState) -> f64 {
        match state {
            ZoneState::PartialDisruption if size > self.limits.large_cluster_size_threshold => {
                self.limits.secondary_eviction_rate
            }
            ZoneState::PartialDisruption => 0.0,
            _ => self.limits.eviction_rate,
        }
    }

    /// The current rate of a zone's queue.
    pub fn rate(&self, zone: &str) -> Option<f64> {
        self.zones.get(zone).map(|z| z.bucket.rate)
    }

    /// kube's `handleDisruption`: takes each zone's nodes' `Ready` statuses, updates the
    /// zones' states and rates, and says whether master disruption began or ended.
    pub fn handle_disruption(
        &mut self,
        zones: &BTreeMap<String, Vec<Option<&str>>>,
        now: Instant,
    ) -> Transition {
        let mut new_states = BTreeMap::new();
        let mut all_now = true;
        for (z, ready) in zones {
            let (_, s) = zone_state(ready.iter().copied(), self.limits.unhealthy_zone_threshold);
            all_now &= s == ZoneState::FullDisruption;
            new_states.insert(z.clone(), s);
            self.states.entry(z.clone()).or_insert(ZoneState::Initial);
            self.zone(z, now);
        }
        self.states.retain(|z, _| zones.contains_key(z));
        let all_before = self
            .states
            .values()
            .all(|s| *s == ZoneState::FullDisruption);
        if all_now && all_before {
            return Transition::None;
        }
        if all_now {
            for z in self.zones.values_mut() {
                z.bucket.swap(0.0, now);
                z.queue.clear();
                z.known.clear();
            }
            for s in self.states.values_mut() {
                *s = ZoneState::FullDisruption;
            }
            return Transition::EnterMasterDisruption;
        }
        let exiting = all_before;
        for (z, s) in &new_states {
            if !exiting && self.states.get(z) == Some(s) {
                continue;
            }
            let rate = self.rate_for(zones[z].len(), *s);
            self.zone(z, now).bucket.swap(rate, now);
            self.states.insert(z.clone(), *s);
        }
        if exiting {
            Transition::ExitMasterDisruption
        } else {
            Transition::None
        }
    }

    /// Queues a node that went NotReady or Unknown for its NoExecute taint (kube's
    /// `markNodeForTainting`); false if it is already known.
    pub fn enqueue(&mut self, zone: &str, node: &str, now: Instant) -> bool {
        let z = self.zone(zone, now);
        if !z.known.insert(node.to_string()) {
            return false;
        }
        z.queue.push_back(node.to_string());
        true
    }

    /// A node Ready again (or gone): out of its zone's queue, and forgotten (kube's
    /// `markNodeAsReachable`).
    pub fn cancel(&mut self, zone: &str, node: &str) {
        if let Some(z) = self.zones.get_mut(zone) {
            if z.known.remove(node) {
                z.queue.retain(|n| n != node);
            }
        }
    }

    /// Forgets nodes that no longer exist.
    pub fn retain_nodes(&mut self, exists: impl Fn(&str) -> bool) {
        for z in self.zones.values_mut() {
            z.known.retain(|n| exists(n));
            z.queue.retain(|n| exists(n));
        }
    }

    /// The nodes whose turn it is, each zone at its rate (kube's `doNoExecuteTaintingPass`).
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, z) in &mut self.zones {
            while !z.queue.is_empty() && z.bucket.try_accept(now) {
                if let Some(n) = z.queue.pop_front() {
                    out.push((name.clone(), n));
                }
            }
        }
        out
    }

    /// A node whose tainting failed goes back to the head of its queue (its token is spent,
    /// as in kube, where a failed try is retried later).
    pub fn retry(&mut self, zone: &str, node: &str, now: Instant) {
        let z = self.zone(zone, now);
        if z.known.contains(node) && !z.queue.iter().any(|n| n == node) {
            z.queue.push_front(node.to_string());
        }
    }

    /// When the next queued node's turn comes (`None`: no queue will hand out anything).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.zones
            .values()
            .filter(|z| !z.queue.is_empty())
            .filter_map(|z| z.bucket.due(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(spec: &[(&str, &[&'static str])]) -> BTreeMap<String, Vec<Option<&'static str>>> {
        spec.iter()
            .map(|(z, r)| (z.to_string(), r.iter().map(|s| Some(*s)).collect()))
            .collect()
    }

    #[test]
    fn zone_states_as_kube_computes_them() {
        let t = 0.55;
        let st = |r: &[&str]| zone_state(r.iter().map(|s| Some(*s)), t);
        assert_eq!(st(&[]), (0, ZoneState::Normal));
        assert_eq!(st(&["True", "Unknown"]), (1, ZoneState::Normal));
        assert_eq!(st(&["Unknown", "False"]), (2, ZoneState::FullDisruption));
        // Two not Ready out of three is over the threshold but not more than two nodes.
        assert_eq!(st(&["True", "False", "False"]), (2, ZoneState::Normal));
        assert_eq!(
            st(&["True", "False", "False", "Unknown"]),
            (3, ZoneState::PartialDisruption)
        );
        // 3 of 6 is under 0.55.
        assert_eq!(
            st(&["True", "True", "True", "False", "False", "False"]),
            (3, ZoneState::Normal)
        );
        // A node without a Ready condition counts as not Ready.
        assert_eq!(zone_state([None, Some("True")], t), (1, ZoneState::Normal));
    }

    #[test]
    fn normal_zone_taints_at_the_eviction_rate() {
        let t0 = Instant::now();
        let mut zt = ZoneTainter::new(Limits::default());
        let z = zones(&[("a", &["True"; 10])]);
        assert_eq!(zt.handle_disruption(&z, t0), Transition::None);
        assert_eq!(zt.state("a"), Some(ZoneState::Normal));
        for n in ["n1", "n2", "n3"] {
            assert!(zt.enqueue("a", n, t0));
        }
        assert!(!zt.enqueue("a", "n1", t0), "queued once");
        // Burst 1: the first at once, then one per 10 s at 0.1/s.
        assert_eq!(zt.take_due(t0), [("a".to_string(), "n1".to_string())]);
        assert!(zt.take_due(t0 + Duration::from_secs(5)).is_empty());
        let due = zt.next_due(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(due - t0, Duration::from_secs(10));
        assert_eq!(
            zt.take_due(t0 + Duration::from_secs(10)),
            [("a".to_string(), "n2".to_string())]
        );
        // A long pause does not bank tokens beyond the burst of one.
        assert_eq!(zt.take_due(t0 + Duration::from_secs(100)).len(), 1);
        assert!(
            zt.next_due(t0 + Duration::from_secs(100)).is_none(),
            "queue empty"
        );
        // A handed-out node is not queued again until it was Ready in between.
        assert!(!zt.enqueue("a", "n1", t0 + Duration::from_secs(200)));
        zt.cancel("a", "n1");
        assert!(zt.enqueue("a", "n1", t0 + Duration::from_secs(200)));
    }

    #[test]
    fn ready_again_leaves_the_queue() {
        let t0 = Instant::now();
        let mut zt = ZoneTainter::new(Limits::default());
        zt.handle_disruption(&zones(&[("a", &["True"; 5])]), t0);
        zt.enqueue("a", "n1", t0);
        zt.enqueue("a", "n2", t0);
        assert_eq!(zt.take_due(t0).len(), 1);
        zt.cancel("a", "n2");
        assert!(zt.take_due(t0 + Duration::from_secs(60)).is_empty());
        // A failed taint is retried first.
        zt.enqueue("a", "n3", t0);
        zt.enqueue("a", "n4", t0);
        let got = zt.take_due(t0 + Duration::from_secs(120));
        assert_eq!(got, [("a".to_string(), "n3".to_string())]);
        zt.retry("a", "n3", t0 + Duration::from_secs(120));
        assert_eq!(
            zt.take_due(t0 + Duration::from_secs(130)),
            [("a".to_string(), "n3".to_string())]
        );
        zt.retain_nodes(|n| n != "n4");
        assert!(zt.take_due(t0 + Duration::from_secs(200)).is_empty());
    }

    #[test]
    fn partial_disruption_slows_large_zones_and_stops_small_ones() {
        let t0 = Instant::now();
        let mut zt = ZoneTainter::new(Limits::default());
        // Small zone (≤ 50 nodes), 3 of 4 down: partial disruption, rate 0.
        let mut small = vec!["True"];
        small.extend(["Unknown"; 3]);
        // Large zone (60 nodes), 40 down: partial, secondary rate.
        let mut large = vec!["True"; 20];
        large.extend(["Unknown"; 40]);
        // A healthy zone keeps the normal rate.
        let z = zones(&[("small", &small), ("large", &large), ("ok", &["True"; 3])]);
        assert_eq!(zt.handle_disruption(&z, t0), Transition::None);
        assert_eq!(zt.state("small"), Some(ZoneState::PartialDisruption));
        assert_eq!(zt.state("large"), Some(ZoneState::PartialDisruption));
        assert_eq!(zt.rate("small"), Some(0.0));
        assert_eq!(zt.rate("large"), Some(0.01));
        assert_eq!(zt.rate("ok"), Some(0.1));
        for i in 0..3 {
            zt.enqueue("small", &format!("s{i}"), t0);
            zt.enqueue("large", &format!("l{i}"), t0);
        }
        let got = zt.take_due(t0);
        assert_eq!(got, [("large".to_string(), "l0".to_string())]);
        // The large zone: next in 100 s; the small one never.
        assert!(zt.take_due(t0 + Duration::from_secs(99)).is_empty());
        assert_eq!(
            zt.take_due(t0 + Duration::from_secs(100)),
            [("large".to_string(), "l1".to_string())]
        );
        // The small zone recovers to normal: its rate is back, and it had no token left
        // when it was slowed, so it waits 10 s for the first.
        small = vec!["True"; 3];
        small.push("Unknown");
        let z = zones(&[("small", &small), ("large", &large), ("ok", &["True"; 3])]);
        let t1 = t0 + Duration::from_secs(101);
        zt.handle_disruption(&z, t1);
        assert_eq!(zt.state("small"), Some(ZoneState::Normal));
        assert_eq!(zt.rate("small"), Some(0.1));
        assert!(zt.take_due(t1).is_empty());
        assert_eq!(
            zt.take_due(t1 + Duration::from_secs(10)),
            [("small".to_string(), "s0".to_string())]
        );
    }

    #[test]
    fn full_disruption_of_one_zone_keeps_the_normal_rate() {
        let t0 = Instant::now();
        let mut zt = ZoneTainter::new(Limits::default());
        let z = zones(&[("a", &["Unknown"; 4]), ("b", &["True"; 4])]);
        assert_eq!(zt.handle_disruption(&z, t0), Transition::None);
        assert_eq!(zt.state("a"), Some(ZoneState::FullDisruption));
        assert_eq!(zt.rate("a"), Some(0.1));
        assert!(!zt.master_disrupted());
    }

    #[test]
    fn every_zone_down_stops_tainting_until_one_recovers() {
        let t0 = Instant::now();
        let mut zt = ZoneTainter::new(Limits::default());
        let z = zones(&[("a", &["True", "True"]), ("b", &["True", "True"])]);
        zt.handle_disruption(&z, t0);
        zt.enqueue("a", "a1", t0);
        let down = zones(&[("a", &["Unknown", "Unknown"]), ("b", &["False", "Unknown"])]);
        assert_eq!(
            zt.handle_disruption(&down, t0),
            Transition::EnterMasterDisruption
        );
        assert!(zt.master_disrupted());
        // Queues are emptied and stopped: nothing is tainted however long it lasts.
        assert!(zt.take_due(t0 + Duration::from_secs(1000)).is_empty());
        zt.enqueue("a", "a1", t0);
        zt.enqueue("b", "b1", t0);
        assert!(zt.take_due(t0 + Duration::from_secs(2000)).is_empty());
        assert!(zt.next_due(t0).is_none());
        // Staying down changes nothing.
        assert_eq!(zt.handle_disruption(&down, t0), Transition::None);
        // One node back: out of master disruption, each zone at its state's rate.
        let back = zones(&[("a", &["True", "Unknown"]), ("b", &["False", "Unknown"])]);
        let t1 = t0 + Duration::from_secs(3000);
        assert_eq!(
            zt.handle_disruption(&back, t1),
            Transition::ExitMasterDisruption
        );
        assert!(!zt.master_disrupted());
        assert_eq!(zt.state("a"), Some(ZoneState::Normal));
        assert_eq!(zt.state("b"), Some(ZoneState::FullDisruption));
        assert_eq!(zt.rate("a"), Some(0.1));
        assert_eq!(zt.rate("b"), Some(0.1));
        // The stopped queues had no token: the first node is tainted a period later.
        assert!(zt.take_due(t1).is_empty());
        assert_eq!(zt.take_due(t1 + Duration::from_secs(10)).len(), 2);
    }
}
