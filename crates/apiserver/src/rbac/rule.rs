//! One RBAC `PolicyRule` and Kubernetes' two questions about rules: does a rule allow a
//! request (`RuleAllows`), and do some rules cover others (`Covers`, the escalation
//! check). Same semantics as `k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go`
//! and `pkg/registry/rbac/validation/policy_comparator.go`.

use serde_json::{json, Value};

use crate::auth::Attributes;

/// `*`: every verb, group, resource or URL.
pub const ALL: &str = "*";

/// A `PolicyRule` of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

impl Rule {
    /// The rule in its JSON form (`verbs`, `apiGroups`, `resources`, `resourceNames`,
    /// `nonResourceURLs`); missing fields are empty.
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// The `rules` of a Role or ClusterRole object.
    pub fn list_of(obj: &Value) -> Vec<Rule> {
        obj.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Rule::from_json).collect())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    /// Whether this rule allows the request (`RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !self.verb_matches(&a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == ALL
                    || *u == a.path
                    || u.strip_suffix('*')
                        .is_some_and(|p| a.path.starts_with(p.trim_end_matches('*')))
            });
        }
        if !self.api_groups.iter().any(|g| g == ALL || *g == a.group) {
            return false;
        }
        let sub = a.subresource.as_str();
        let resource_ok = self.resources.iter().any(|r| {
            if r == ALL {
                return true;
            }
            if sub.is_empty() {
                return *r == a.resource;
            }
            // `pods/log`, or `*/log`.
            match r.split_once('/') {
                Some((res, s)) => s == sub && (res == a.resource || res == ALL),
                None => false,
            }
        });
        resource_ok && (self.resource_names.is_empty() || has(&self.resource_names, &a.name))
    }

    /// The rule split into rules of one group, resource, verb and name (or one URL and
    /// verb) each (`BreakdownRule`).
    fn breakdown(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        let one = |s: &String| vec![s.clone()];
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    if self.resource_names.is_empty() {
                        out.push(Rule {
                            verbs: one(v),
                            api_groups: one(g),
                            resources: one(r),
                            ..Default::default()
                        });
                    }
                    for n in &self.resource_names {
                        out.push(Rule {
                            verbs: one(v),
                            api_groups: one(g),
                            resources: one(r),
                            resource_names: one(n),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        for u in &self.non_resource_urls {
            for v in &self.verbs {
                out.push(Rule {
                    verbs: one(v),
                    non_resource_urls: one(u),
                    ..Default::default()
                });
            }
        }
        out
    }

    /// Whether this rule covers `sub`, a rule of at most one verb, resource and name
    /// (`ruleCovers`).
    fn covers(&self, sub: &Rule) -> bool {
        let verbs = has(&self.verbs, ALL) || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, ALL) || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, ALL)
            || has_all(&self.resources, &sub.resources)
            || sub.resources.iter().all(|p| {
                has(&self.resources, p)
                    || p.split_once('/')
                        .is_some_and(|(_, s)| has(&self.resources, &format!("*/{s}")))
            });
        let urls = sub.non_resource_urls.iter().all(|p| {
            self.non_resource_urls.iter().any(|o| {
                o == p
                    || o.strip_suffix('*')
                        .is_some_and(|pre| p.starts_with(pre.trim_end_matches('*')))
            })
        });
        let names = if sub.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty() || has_all(&self.resource_names, &sub.resource_names)
        };
        verbs && groups && resources && urls && names
    }

    /// Kubernetes' short form of a rule in escalation messages (`CompactString`):
    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        for (k, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}:[{}]", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Whether `owner` covers every permission of `servant`; the parts it does not cover
/// otherwise (`Covers`).
pub fn covers(owner: &[Rule], servant: &[Rule]) -> (bool, Vec<Rule>) {
    let missing: Vec<Rule> = servant
        .iter()
        .flat_map(Rule::breakdown)
        .filter(|s| !owner.iter().any(|o| o.covers(s)))
        .collect();
    (missing.is_empty(), missing)
}

/// Every permission: what only `system:masters` (or a holder of `escalate`) may grant
/// through an aggregationRule.
pub fn full_authority() -> Vec<Rule> {
    vec![
        Rule {
            verbs: vec![ALL.into()],
            api_groups: vec![ALL.into()],
            resources: vec![ALL.into()],
            ..Default::default()
        },
        Rule {
            verbs: vec![ALL.into()],
            non_resource_urls: vec![ALL.into()],
            ..Default::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            resource_request: true,
            ..Default::default()
        }
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn verbs_groups_resources_and_wildcards() {
        let r = rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(r.allows(&res("get", "", "pods", "", "p")));
        assert!(r.allows(&res("list", "", "pods", "", "")));
        assert!(!r.allows(&res("delete", "", "pods", "", "p")));
        assert!(!r.allows(&res("get", "apps", "pods", "", "p")));
        assert!(!r.allows(&res("get", "", "secrets", "", "p")));
        let all = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(all.allows(&res(
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            "",
            "r"
        )));
        assert!(all.allows(&res("get", "", "pods", "log", "p")));
        // A resource rule says nothing about URLs, and the other way round.
        assert!(!all.allows(&url("get", "/healthz")));
        let u = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}));
        assert!(!u.allows(&res("get", "", "pods", "", "")));
    }

    #[test]
    fn subresources() {
        let r = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(r.allows(&res("get", "", "pods", "log", "p")));
        // `pods/log` is not `pods`, nor `pods/exec`.
        assert!(!r.allows(&res("get", "", "pods", "", "p")));
        assert!(!r.allows(&res("get", "", "pods", "exec", "p")));
        // `pods` does not reach its subresources.
        let p = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(!p.allows(&res("get", "", "pods", "log", "p")));
        // `*/status` is any resource's status.
        let s = rule(json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(s.allows(&res("update", "apps", "deployments", "status", "d")));
        assert!(!s.allows(&res("update", "apps", "deployments", "scale", "d")));
        assert!(!s.allows(&res("update", "apps", "deployments", "", "d")));
    }

    #[test]
    fn resource_names() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"],
                            "resourceNames": ["a"]}),
        );
        assert!(r.allows(&res("get", "", "configmaps", "", "a")));
        assert!(!r.allows(&res("get", "", "configmaps", "", "b")));
        // A list without a name is not a list of `a`.
        assert!(!r.allows(&res("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*", "/x**"]}));
        assert!(r.allows(&url("get", "/healthz")));
        assert!(!r.allows(&url("get", "/healthz/ping")));
        assert!(r.allows(&url("get", "/apis/apps/v1")));
        assert!(r.allows(&url("get", "/apis/")));
        assert!(!r.allows(&url("get", "/apis")));
        assert!(r.allows(&url("get", "/xyz")));
        assert!(!r.allows(&url("post", "/healthz")));
        let all = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(all.allows(&url("post", "/anything")));
    }

    #[test]
    fn coverage_for_escalation() {
        let owner = vec![
            rule(
                json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]}),
            ),
            rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"]}),
            ),
            rule(json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/status"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/metrics*"]})),
        ];
        let ok = [
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"],
                   "resourceNames": ["x"]}),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"]}),
            json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/status"]}),
            json!({"verbs": ["get"], "nonResourceURLs": ["/metrics/x", "/metrics"]}),
        ];
        for s in ok {
            let (c, missing) = covers(&owner, &[rule(s.clone())]);
            assert!(c, "{s} should be covered, missing {missing:?}");
        }
        let not = [
            json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s2"]}),
            json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}),
            json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}),
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
            json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}),
        ];
        for s in not {
            let (c, missing) = covers(&owner, &[rule(s.clone())]);
            assert!(!c, "{s} should not be covered");
            assert!(!missing.is_empty());
        }
        // One uncovered verb of several is reported alone.
        let (_, missing) = covers(
            &owner,
            &[rule(
                json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}),
            )],
        );
        assert_eq!(missing.len(), 1);
        assert_eq!(
            missing[0].compact_string(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
        // Full authority covers anything.
        let (c, _) = covers(&full_authority(), &owner);
        assert!(c);
    }
}
