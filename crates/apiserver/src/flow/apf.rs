//! API Priority and Fairness from FlowSchema and PriorityLevelConfiguration objects
//! (`flowcontrol.apiserver.k8s.io/v1`), as kube-apiserver's APF filter reads them.
//!
//! - **Classification**: the FlowSchemas in `matchingPrecedence` order (then name); the
//!   first whose rules match the request — a subject (user, group, ServiceAccount) and a
//!   resource rule (verbs, apiGroups, resources, namespaces or `clusterScope`) or a
//!   non-resource rule (verbs, nonResourceURLs) — names its priority level and how flows
//!   are told apart (`distinguisherMethod`: ByUser, ByNamespace, or one flow).
//! - **Seats**: each `Limited` level gets `ceil(total × nominalConcurrencyShares / Σ shares)`
//!   (at least one) of the server's concurrency limit, `--max-requests-inflight` +
//!   `--max-mutating-requests-inflight`, as kube computes it; levels lend
//!   (`lendablePercent`) and borrow (`borrowingLimitPercent`) seats for their demand every
//!   `--apf-borrowing-interval` ([`Built::adjust`]). `Exempt` levels have no limit.
//! - **Queuing**: a level with `limitResponse.type: Queuing` has `queues` queues; a flow is
//!   dealt a hand of `handSize` of them by shuffle sharding (a hash of the FlowSchema and the
//!   flow's distinguisher) and waits in the one holding the fewest seats; a full queue
//!   (`queueLengthLimit`) answers 429 with `Retry-After`. Dispatch is kube's virtual-time
//!   fair queuing ([`super::fair`]); a `Reject` level answers 429 at once when its seats are
//!   taken.
//! - **Tenants**: a tenant's users (and its namespaces' ServiceAccounts) are one flow of a
//!   `ByUser` schema (the tenant's), so a tenant with many users gets one hand of queues,
//!   not many; inside its queue, its users take turns ([`super::fair`]).
//! - **Objects change**: [`super::Flow::follow`] re-reads both kinds on every change and
//!   swaps the configuration; requests already holding a seat give it back to the level
//!   they took it from.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::level::{Level, Queues};
use crate::auth::{Attributes, UserInfo, AUTHENTICATED_GROUP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distinguisher {
    None,
    ByUser,
    ByNamespace,
}

#[derive(Debug, Clone)]
enum SubjectMatch {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

#[derive(Debug, Clone, Default)]
struct ResourceRule {
    verbs: Vec<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    cluster_scope: bool,
    namespaces: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct NonResourceRule {
    verbs: Vec<String>,
    urls: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    subjects: Vec<SubjectMatch>,
    resources: Vec<ResourceRule>,
    non_resources: Vec<NonResourceRule>,
}

/// One FlowSchema, as the classifier reads it.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) name: String,
    pub(crate) uid: String,
    precedence: i64,
    level: String,
    distinguisher: Distinguisher,
    rules: Vec<Rule>,
}

/// How a limited level answers when its seats are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queuing {
    pub(crate) queues: usize,
    pub(crate) hand_size: usize,
    pub(crate) queue_length_limit: usize,
}

/// One PriorityLevelConfiguration.
#[derive(Debug, Clone)]
pub(crate) struct LevelSpec {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) exempt: bool,
    pub(crate) shares: u64,
    /// `None`: `Reject`.
    pub(crate) queuing: Option<Queuing>,
    /// `lendablePercent` (0–100).
    pub(crate) lendable_percent: u64,
    /// `borrowingLimitPercent` (`None`: no limit).
    pub(crate) borrowing_percent: Option<u64>,
}

/// FlowSchemas and priority levels, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    schemas: Vec<Schema>,
    levels: HashMap<String, LevelSpec>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], x: &str) -> bool {
    list.iter().any(|s| s == "*" || s == x)
}

impl Config {
    /// From the objects (as served); malformed ones are skipped (validation refuses them
    /// on write already).
    pub(crate) fn from_objects(schemas: &[Value], levels: &[Value]) -> Config {
        let mut cfg = Config::default();
        for l in levels {
            let name = l["metadata"]["name"].as_str().unwrap_or("").to_string();
            if name.is_empty() {
                continue;
            }
            let spec = &l["spec"];
            let exempt = spec["type"] == "Exempt";
            let lim = &spec["limited"];
            let resp = &lim["limitResponse"];
            let queuing = (resp["type"] == "Queuing").then(|| {
                let q = &resp["queuing"];
                let n = |k: &str, d: u64| q[k].as_u64().filter(|v| *v > 0).unwrap_or(d) as usize;
                let queues = n("queues", 64).min(10_000);
                Queuing {
                    queues,
                    hand_size: n("handSize", 8).min(queues),
                    queue_length_limit: n("queueLengthLimit", 50).min(100_000),
                }
            });
            cfg.levels.insert(
                name.clone(),
                LevelSpec {
                    name,
                    uid: l["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    exempt,
                    shares: lim["nominalConcurrencyShares"].as_u64().unwrap_or(30),
                    queuing,
                    lendable_percent: lim["lendablePercent"].as_u64().unwrap_or(0).min(100),
                    borrowing_percent: lim["borrowingLimitPercent"].as_u64(),
                },
            );
        }
        for s in schemas {
            let name = s["metadata"]["name"].as_str().unwrap_or("").to_string();
            let spec = &s["spec"];
            let level = spec["priorityLevelConfiguration"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if name.is_empty() || level.is_empty() {
                continue;
            }
            let distinguisher = match spec["distinguisherMethod"]["type"].as_str() {
                Some("ByUser") => Distinguisher::ByUser,
                Some("ByNamespace") => Distinguisher::ByNamespace,
                _ => Distinguisher::None,
            };
            let rules = spec["rules"]
                .as_array()
                .map(|rs| rs.iter().map(rule_of).collect())
                .unwrap_or_default();
            cfg.schemas.push(Schema {
                name,
                uid: s["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                precedence: spec["matchingPrecedence"].as_i64().unwrap_or(1000),
                level,
                distinguisher,
                rules,
            });
        }
        cfg.schemas
            .sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        cfg
    }

    /// Kubernetes' defaults (what `kinds.rs` creates), before the objects are read.
    pub(crate) fn defaults() -> Config {
        Config::from_objects(
            &crate::kinds::flow_schemas(),
            &crate::kinds::priority_levels(),
        )
    }

    /// The FlowSchema that matches a request, its priority level, and the request's flow
    /// distinguisher. `None` when no schema (or its level) matches: the caller uses the
    /// mandatory `catch-all`.
    /// `tenant` is the caller's tenant (its users and ServiceAccounts are one flow).
    pub(crate) fn classify(
        &self,
        user: &UserInfo,
        tenant: Option<&str>,
        attrs: &Attributes,
    ) -> Option<(&Schema, &LevelSpec, String)> {
        for s in &self.schemas {
            if !s.rules.iter().any(|r| rule_matches(r, user, attrs)) {
                continue;
            }
            let Some(l) = self.levels.get(&s.level) else {
                // kube: a schema naming a missing level is skipped ("dangling").
                continue;
            };
            let d = match s.distinguisher {
                Distinguisher::None => String::new(),
                Distinguisher::ByUser => match tenant {
                    // h8s: a tenant's users are one flow (users take turns inside it).
                    Some(t) => format!("tenant:{t}"),
                    None => user.username.clone(),
                },
                Distinguisher::ByNamespace => attrs.namespace.clone(),
            };
            return Some((s, l, d));
        }
        None
    }

    pub(crate) fn levels(&self) -> impl Iterator<Item = &LevelSpec> {
        self.levels.values()
    }
}

fn rule_of(r: &Value) -> Rule {
    let subjects = r["subjects"]
        .as_array()
        .map(|ss| {
            ss.iter()
                .filter_map(|s| match s["kind"].as_str()? {
                    "User" => Some(SubjectMatch::User(s["user"]["name"].as_str()?.into())),
                    "Group" => Some(SubjectMatch::Group(s["group"]["name"].as_str()?.into())),
                    "ServiceAccount" => Some(SubjectMatch::ServiceAccount {
                        namespace: s["serviceAccount"]["namespace"].as_str()?.into(),
                        name: s["serviceAccount"]["name"].as_str()?.into(),
                    }),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let resources = r["resourceRules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|x| ResourceRule {
                    verbs: strings(&x["verbs"]),
                    groups: strings(&x["apiGroups"]),
                    resources: strings(&x["resources"]),
                    cluster_scope: x["clusterScope"].as_bool().unwrap_or(false),
                    namespaces: strings(&x["namespaces"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let non_resources = r["nonResourceRules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|x| NonResourceRule {
                    verbs: strings(&x["verbs"]),
                    urls: strings(&x["nonResourceURLs"]),
                })
                .collect()
        })
        .unwrap_or_default();
    Rule {
        subjects,
        resources,
        non_resources,
    }
}

fn subject_matches(s: &SubjectMatch, user: &UserInfo) -> bool {
    match s {
        SubjectMatch::User(n) => n == "*" || *n == user.username,
        SubjectMatch::Group(g) => {
            g == "*"
                || user.groups.iter().any(|x| x == g)
                // Every authenticated caller is in the group, whether or not its
                // authenticator listed it.
                || (g == AUTHENTICATED_GROUP && !user.username.is_empty()
                    && user.username != "system:anonymous")
                || (g == "system:unauthenticated" && user.username == "system:anonymous")
        }
        SubjectMatch::ServiceAccount { namespace, name } => user
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(ns, n)| ns == namespace && (name == "*" || n == name)),
    }
}

fn rule_matches(r: &Rule, user: &UserInfo, a: &Attributes) -> bool {
    if !r.subjects.iter().any(|s| subject_matches(s, user)) {
        return false;
    }
    if a.resource_request {
        r.resources.iter().any(|rr| {
            has(&rr.verbs, &a.verb)
                && has(&rr.groups, &a.group)
                && (has(&rr.resources, &a.resource)
                    || (!a.subresource.is_empty()
                        && has(&rr.resources, &format!("{}/{}", a.resource, a.subresource))))
                && if a.namespace.is_empty() {
                    rr.cluster_scope
                } else {
                    has(&rr.namespaces, &a.namespace)
                }
        })
    } else {
        r.non_resources.iter().any(|nr| {
            has(&nr.verbs, &a.verb)
                && nr.urls.iter().any(|u| {
                    u == "*"
                        || *u == a.path
                        || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                })
        })
    }
}

/// Shuffle sharding: `hand` distinct queues of `deck`, dealt from `hash` (kube's dealer:
/// successive remainders of the hash pick from the cards left).
pub(crate) fn deal(hash: u64, deck: usize, hand: usize) -> Vec<usize> {
    let mut cards: Vec<usize> = (0..deck).collect();
    let mut h = hash;
    let mut out = Vec::with_capacity(hand.min(deck));
    for _ in 0..hand.min(deck) {
        let n = cards.len() as u64;
        let i = (h % n) as usize;
        h /= n;
        out.push(cards.swap_remove(i));
    }
    out
}

/// A flow's hash: its FlowSchema and distinguisher (stable across restarts).
pub(crate) fn flow_hash(schema: &str, distinguisher: &str) -> u64 {
    // SipHash with fixed keys: the same flow gets the same hand on every server.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    schema.hash(&mut h);
    distinguisher.hash(&mut h);
    h.finish()
}

/// A priority level at run time: its seats and queues.
pub(crate) struct RunLevel {
    pub(crate) spec: LevelSpec,
    /// `None` for an exempt level.
    pub(crate) level: Option<Arc<Level>>,
}

/// The configuration in force: classification and the levels' seats and queues.
pub(crate) struct Built {
    pub(crate) cfg: Config,
    pub(crate) levels: HashMap<String, RunLevel>,
    /// The mandatory catch-all, for requests no schema matches.
    pub(crate) catch_all: RunLevel,
}

impl Built {
    /// Seats for each limited level out of `total`, queues as configured, waits of at
    /// most `wait`; `per_user` bounds one user's requests waiting in one queue.
    pub(crate) fn new(cfg: Config, total: usize, wait: Duration, per_user: usize) -> Built {
        let sum: u64 = cfg
            .levels()
            .filter(|l| !l.exempt)
            .map(|l| l.shares)
            .sum::<u64>()
            .max(1);
        let make = |spec: &LevelSpec| -> RunLevel {
            if spec.exempt || total == 0 {
                return RunLevel {
                    spec: spec.clone(),
                    level: None,
                };
            }
            let seats = ((total as u64 * spec.shares).div_ceil(sum)).max(1) as usize;
            let bounds = spec.queuing.map(|q| Queues {
                queues: q.queues,
                queue_length_limit: q.queue_length_limit,
                per_user: per_user.max(1),
            });
            let pct = |p: u64| (seats as u64 * p).div_ceil(100) as usize;
            let level = Level::new(spec.name.clone(), seats, bounds, wait).lending(
                (seats as u64 * spec.lendable_percent / 100) as usize,
                spec.borrowing_percent.map(pct),
            );
            RunLevel {
                spec: spec.clone(),
                level: Some(level),
            }
        };
        let levels = cfg.levels().map(|l| (l.name.clone(), make(l))).collect();
        let catch_all = make(&LevelSpec {
            name: "catch-all".into(),
            uid: String::new(),
            exempt: false,
            shares: 5,
            queuing: None,
            lendable_percent: 0,
            borrowing_percent: Some(0),
        });
        Built {
            cfg,
            levels,
            catch_all,
        }
    }
}

impl Built {
    /// Lends and borrows seats between the limited levels for the demand they had since
    /// the last call (kube's periodic adjustment): the seats in all stay the sum of the
    /// levels' own; each level gets `fairProp × target` clamped to its bounds
    /// ([`Level::borrowing_item`]), `fairProp` chosen so that the sum comes out right.
    pub(crate) fn adjust(&self) {
        let levels: Vec<&Arc<Level>> = self
            .levels
            .values()
            .filter_map(|r| r.level.as_ref())
            .filter(|l| l.seats() > 0)
            .collect();
        let items: Vec<(f64, f64, f64)> = levels.iter().map(|l| l.borrowing_item()).collect();
        let total: usize = levels.iter().map(|l| l.seats()).sum();
        for (l, a) in levels.iter().zip(allocate(total as f64, &items)) {
            l.set_limit(a.round().max(1.0) as usize);
        }
    }
}

/// kube's `computeConcurrencyAllocation`: `clamp(f × target, lower, upper)` for each item,
/// with the `f` that makes them sum to `total` (or the bounds, when they cannot).
pub(crate) fn allocate(total: f64, items: &[(f64, f64, f64)]) -> Vec<f64> {
    let at = |f: f64| -> Vec<f64> {
        items
            .iter()
            .map(|(lo, hi, t)| (f * t).clamp(*lo, hi.max(*lo)))
            .collect()
    };
    let sum = |f: f64| at(f).iter().sum::<f64>();
    if items.iter().map(|i| i.0).sum::<f64>() >= total {
        return items.iter().map(|i| i.0).collect();
    }
    if items.iter().map(|i| i.1.max(i.0)).sum::<f64>() <= total {
        return items.iter().map(|i| i.1.max(i.0)).collect();
    }
    let (mut a, mut b) = (0.0, 1.0);
    while sum(b) < total && b < 1e15 {
        a = b;
        b *= 2.0;
    }
    for _ in 0..100 {
        let m = (a + b) / 2.0;
        if sum(m) < total {
            a = m;
        } else {
            b = m;
        }
    }
    at(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn res(verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    fn classify<'a>(c: &'a Config, u: &UserInfo, a: &Attributes) -> (&'a str, &'a str, String) {
        let (s, l, d) = c.classify(u, u.tenant(), a).expect("a schema matches");
        (s.name.as_str(), l.name.as_str(), d)
    }

    #[test]
    fn kubes_defaults_classify_as_kube_does() {
        let c = Config::defaults();
        let pods = res("list", "", "pods", "ns1");
        assert_eq!(
            classify(&c, &user("admin", &["system:masters"]), &pods).0,
            "exempt"
        );
        assert_eq!(
            classify(&c, &user("system:node:n1", &["system:nodes"]), &pods),
            ("system-nodes", "system", "system:node:n1".into())
        );
        let lease = res("update", "coordination.k8s.io", "leases", "kube-system");
        assert_eq!(
            classify(&c, &user("system:kube-scheduler", &[]), &lease).0,
            "system-leader-election"
        );
        assert_eq!(
            classify(&c, &user("system:kube-scheduler", &[]), &pods),
            ("kube-scheduler", "workload-high", "ns1".into())
        );
        assert_eq!(
            classify(
                &c,
                &user(
                    "system:serviceaccount:app:default",
                    &["system:serviceaccounts"]
                ),
                &pods
            )
            .0,
            "service-accounts"
        );
        // A tenant's users are one flow; anyone else is a flow of their own.
        assert_eq!(
            classify(&c, &user("bob", &["h8s:tenant:acme"]), &pods),
            ("global-default", "global-default", "tenant:acme".into())
        );
        assert_eq!(
            classify(&c, &user("carol", &["system:authenticated"]), &pods).2,
            "carol"
        );
        let healthz = Attributes {
            verb: "get".into(),
            path: "/healthz".into(),
            ..Default::default()
        };
        assert_eq!(classify(&c, &user("carol", &[]), &healthz).0, "probes");
    }

    #[test]
    fn precedence_subjects_rules_and_dangling_levels() {
        let level = json!({"metadata": {"name": "tiny", "uid": "u-tiny"},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1,
                "limitResponse": {"type": "Queuing", "queuing": {"queues": 4, "handSize": 2, "queueLengthLimit": 3}}}}});
        let fs = |name: &str, prec: i64, lvl: &str, rules: Value| {
            json!({"metadata": {"name": name, "uid": format!("u-{name}")},
                "spec": {"matchingPrecedence": prec, "priorityLevelConfiguration": {"name": lvl},
                    "distinguisherMethod": {"type": "ByNamespace"}, "rules": rules}})
        };
        let sa_rule = json!([{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "ci", "name": "*"}}],
            "resourceRules": [{"verbs": ["create"], "apiGroups": ["apps"], "resources": ["deployments/scale"], "namespaces": ["ci"]}]}]);
        let cluster_rule = json!([{"subjects": [{"kind": "Group", "group": {"name": "ops"}}],
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["nodes"], "clusterScope": true}],
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics", "/debug/*"]}]}]);
        let c = Config::from_objects(
            &[
                fs("later", 200, "tiny", cluster_rule.clone()),
                fs("ci", 100, "tiny", sa_rule),
                fs("ops", 150, "tiny", cluster_rule),
                fs(
                    "dangling",
                    1,
                    "missing",
                    json!([{"subjects": [{"kind": "User", "user": {"name": "*"}}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]),
                ),
            ],
            &[level],
        );
        let ci = user("system:serviceaccount:ci:builder", &[]);
        let mut scale = res("create", "apps", "deployments", "ci");
        scale.subresource = "scale".into();
        assert_eq!(classify(&c, &ci, &scale), ("ci", "tiny", "ci".into()));
        // Another verb, namespace or subresource does not match.
        scale.verb = "update".into();
        assert!(c.classify(&ci, None, &scale).is_none());
        let other_ns = user("system:serviceaccount:prod:builder", &[]);
        scale.verb = "create".into();
        assert!(c.classify(&other_ns, None, &scale).is_none());
        // Cluster-scoped rules need clusterScope; the lower precedence wins.
        let ops = user("dana", &["ops"]);
        assert_eq!(classify(&c, &ops, &res("get", "", "nodes", "")).0, "ops");
        assert!(c
            .classify(&ops, None, &res("get", "", "nodes", "x"))
            .is_none());
        let debug = Attributes {
            verb: "get".into(),
            path: "/debug/pprof".into(),
            ..Default::default()
        };
        assert_eq!(classify(&c, &ops, &debug).0, "ops");
        // The dangling schema (precedence 1) is skipped, not fatal.
        assert!(c.classify(&user("eve", &[]), None, &debug).is_none());
        let l = c.levels().next().unwrap();
        assert_eq!(
            l.queuing,
            Some(Queuing {
                queues: 4,
                hand_size: 2,
                queue_length_limit: 3
            })
        );
    }

    #[test]
    fn hands_are_distinct_stable_and_spread() {
        for h in [0u64, 1, 7, u64::MAX, 0xdead_beef] {
            let hand = deal(h, 64, 6);
            let mut s = hand.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), 6, "{hand:?}");
            assert!(hand.iter().all(|q| *q < 64));
            assert_eq!(hand, deal(h, 64, 6));
        }
        assert_eq!(deal(5, 3, 8).len(), 3);
        // Different flows mostly get different hands.
        let hands: std::collections::HashSet<Vec<usize>> = (0..100)
            .map(|i| {
                let mut h = deal(flow_hash("s", &format!("user{i}")), 64, 6);
                h.sort();
                h
            })
            .collect();
        assert!(hands.len() > 95, "{}", hands.len());
    }

    #[test]
    fn allocation_meets_the_total_within_bounds() {
        // Two levels of 10: one idle that lends half, one busy that may borrow any.
        let a = allocate(20.0, &[(5.0, 10.0, 5.0), (10.0, f64::INFINITY, 30.0)]);
        assert!(
            (a[0] - 5.0).abs() < 1e-6 && (a[1] - 15.0).abs() < 1e-6,
            "{a:?}"
        );
        // Both busy: each keeps what it cannot lend, the rest in proportion to demand.
        let a = allocate(20.0, &[(5.0, 10.0, 30.0), (5.0, 15.0, 30.0)]);
        assert!(
            (a[0] - 10.0).abs() < 1e-6 && (a[1] - 10.0).abs() < 1e-6,
            "{a:?}"
        );
        // Bounds win when the total cannot be met.
        assert_eq!(
            allocate(5.0, &[(4.0, 4.0, 1.0), (3.0, 3.0, 9.0)]),
            [4.0, 3.0]
        );
        assert_eq!(
            allocate(50.0, &[(1.0, 4.0, 1.0), (1.0, 3.0, 9.0)]),
            [4.0, 3.0]
        );
    }

    #[tokio::test]
    async fn an_idle_level_lends_its_seats_to_a_busy_one() {
        let pl = |name: &str, lendable: u64, borrowing: Option<u64>| {
            let mut v = json!({"metadata": {"name": name, "uid": name},
                "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1,
                    "lendablePercent": lendable,
                    "limitResponse": {"type": "Queuing", "queuing": {"queues": 4, "handSize": 1, "queueLengthLimit": 100}}}}});
            if let Some(b) = borrowing {
                v["spec"]["limited"]["borrowingLimitPercent"] = b.into();
            }
            v
        };
        let cfg = Config::from_objects(
            &[],
            &[
                pl("idle", 50, Some(0)),
                pl("busy", 0, None),
                pl("capped", 0, Some(20)),
            ],
        );
        // 30 seats: 10 each.
        let b = Built::new(cfg, 30, Duration::from_secs(30), 100);
        let level = |n: &str| b.levels[n].level.clone().unwrap();
        let (idle, busy, capped) = (level("idle"), level("busy"), level("capped"));
        assert_eq!((idle.limit(), busy.limit(), capped.limit()), (10, 10, 10));
        // busy and capped each hold their 10 seats and have 20 more waiting.
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        for l in [&busy, &capped] {
            for _ in 0..10 {
                held.push(l.acquire(&[0], "u", 1).await.unwrap().unwrap());
            }
            for _ in 0..20 {
                let l = l.clone();
                waiting.push(tokio::spawn(async move {
                    l.acquire(&[1], "v", 1).await.map(|s| s.is_some())
                }));
            }
        }
        while busy.waiting() + capped.waiting() < 40 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.adjust();
        // idle lends its 5 lendable seats; capped may borrow 2 (20 %), busy the rest.
        assert_eq!(idle.limit(), 5);
        assert_eq!(capped.limit(), 12);
        assert_eq!(busy.limit(), 13);
        assert_eq!(busy.in_use(), 13, "borrowed seats start waiting requests");
        assert_eq!(busy.limit() + idle.limit() + capped.limit(), 30);
        drop(held);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(true));
        }
    }

    #[test]
    fn seats_are_shares_of_the_total() {
        let c = Config::defaults();
        let b = Built::new(c, 600, Duration::from_secs(1), 50);
        let seats = |n: &str| b.levels[n].level.as_ref().map(|l| l.seats());
        // Σ shares of kube's defaults: 5+30+40+10+40+100+20 = 245.
        assert_eq!(seats("exempt"), None);
        assert_eq!(seats("workload-low"), Some((600 * 100_usize).div_ceil(245)));
        assert_eq!(seats("catch-all"), Some((600 * 5_usize).div_ceil(245)));
        assert_eq!(
            seats("global-default"),
            Some((600 * 20_usize).div_ceil(245))
        );
    }
}
