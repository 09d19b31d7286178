//! Label selectors (pod and namespace selectors) and node selector terms, compiled once
//! per pod so matching does no parsing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq)]
pub enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// Node selectors only: the label parses as an integer greater than the value.
    Gt(String, i64),
    /// Node selectors only: the label parses as an integer less than the value.
    Lt(String, i64),
    /// A requirement that can never hold (an invalid operator or value): Kubernetes
    /// rejects such a selector, so it matches nothing.
    Never,
}

impl Req {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
            Req::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Req::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
            Req::Never => false,
        }
    }

    fn from_expr(key: &str, op: &str, values: Option<&Vec<String>>, numeric: bool) -> Req {
        let values = values.cloned().unwrap_or_default();
        let key = key.to_string();
        match op {
            "In" if !values.is_empty() => Req::In(key, values),
            "NotIn" if !values.is_empty() => Req::NotIn(key, values),
            "Exists" if values.is_empty() => Req::Exists(key),
            "DoesNotExist" if values.is_empty() => Req::DoesNotExist(key),
            "Gt" | "Lt" if numeric && values.len() == 1 => match values[0].parse::<i64>() {
                Ok(n) if op == "Gt" => Req::Gt(key, n),
                Ok(n) => Req::Lt(key, n),
                Err(_) => Req::Never,
            },
            _ => Req::Never,
        }
    }
}

/// A compiled `metav1.LabelSelector` (`matchLabels` and `matchExpressions`, ANDed).
/// The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    pub reqs: Vec<Req>,
}

impl Selector {
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn nothing() -> Selector {
        Selector {
            reqs: vec![Req::Never],
        }
    }

    pub fn from_label_selector(s: &meta::LabelSelector) -> Selector {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push(Req::In(k.clone(), vec![v.clone()]));
        }
        for e in s.match_expressions.iter().flatten() {
            reqs.push(Req::from_expr(
                &e.key,
                &e.operator,
                e.values.as_ref(),
                false,
            ));
        }
        Selector { reqs }
    }

    /// A missing selector (`None`) matches nothing, as for affinity terms and spread
    /// constraints.
    pub fn from_opt(s: Option<&meta::LabelSelector>) -> Selector {
        s.map(Selector::from_label_selector)
            .unwrap_or_else(Selector::nothing)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

/// One `NodeSelectorTerm`: label expressions and `metadata.name` field expressions, ANDed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTerm {
    pub labels: Vec<Req>,
    /// Requirements on the field `metadata.name` (the only supported field), keyed by "".
    pub fields: Vec<Req>,
}

impl NodeTerm {
    pub fn from_term(t: &core::NodeSelectorTerm) -> NodeTerm {
        let labels = t
            .match_expressions
            .iter()
            .flatten()
            .map(|e| Req::from_expr(&e.key, &e.operator, e.values.as_ref(), true))
            .collect();
        let fields = t
            .match_fields
            .iter()
            .flatten()
            .map(|e| {
                if e.key != "metadata.name" {
                    return Req::Never;
                }
                match Req::from_expr("", &e.operator, e.values.as_ref(), false) {
                    // Only In and NotIn are valid on fields, with exactly one value.
                    r @ (Req::In(..) | Req::NotIn(..))
                        if e.values.as_ref().is_some_and(|v| v.len() == 1) =>
                    {
                        r
                    }
                    _ => Req::Never,
                }
            })
            .collect();
        NodeTerm { labels, fields }
    }

    /// An empty term matches no node (Kubernetes' rule).
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let mut f = Labels::new();
        f.insert(String::new(), node_name.to_string());
        self.fields.iter().all(|r| r.matches(&f))
    }
}

/// A required node selector: terms ORed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSelector {
    pub terms: Vec<NodeTerm>,
}

impl NodeSelector {
    pub fn from_selector(s: &core::NodeSelector) -> NodeSelector {
        NodeSelector {
            terms: s
                .node_selector_terms
                .iter()
                .map(NodeTerm::from_term)
                .collect(),
        }
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> core::NodeSelectorRequirement {
        core::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn node_term_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let term = |exprs: Vec<core::NodeSelectorRequirement>| {
            NodeTerm::from_term(&core::NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: None,
            })
        };
        assert!(term(vec![expr("zone", "In", &["a", "b"])]).matches("n", &l));
        assert!(!term(vec![expr("zone", "NotIn", &["a"])]).matches("n", &l));
        assert!(term(vec![expr("gpu", "NotIn", &["x"])]).matches("n", &l));
        assert!(term(vec![expr("zone", "Exists", &[])]).matches("n", &l));
        assert!(term(vec![expr("gpu", "DoesNotExist", &[])]).matches("n", &l));
        assert!(term(vec![expr("cores", "Gt", &["4"])]).matches("n", &l));
        assert!(!term(vec![expr("cores", "Gt", &["8"])]).matches("n", &l));
        assert!(term(vec![expr("cores", "Lt", &["9"])]).matches("n", &l));
        assert!(!term(vec![expr("zone", "Lt", &["9"])]).matches("n", &l));
        assert!(!term(vec![expr("cores", "Gt", &["x"])]).matches("n", &l));
        assert!(!term(vec![expr("zone", "Bogus", &["a"])]).matches("n", &l));
        // An empty term matches nothing.
        assert!(!term(vec![]).matches("n", &l));
        // matchFields on metadata.name.
        let f = NodeTerm::from_term(&core::NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![expr("metadata.name", "In", &["n1"])]),
        });
        assert!(f.matches("n1", &l));
        assert!(!f.matches("n2", &l));
        let f = NodeTerm::from_term(&core::NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![expr("metadata.name", "NotIn", &["n1"])]),
        });
        assert!(!f.matches("n1", &l));
        assert!(f.matches("n2", &l));
    }

    #[test]
    fn label_selector() {
        let s = Selector::from_label_selector(&meta::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![meta::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        });
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(!Selector::from_opt(None).matches(&labels(&[])));
    }
}
