//! Sets of field paths, as structured-merge-diff keeps them, and their `FieldsV1` JSON form
//! (`{"f:metadata":{"f:labels":{".":{},"f:app":{}}}}`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// An object field: `f:name`.
    Field(String),
    /// An element of an associative list, by its key fields (sorted by name, values as
    /// compact JSON): `k:{"name":"nginx"}`.
    Key(Vec<(String, String)>),
    /// An element of a set (`listType=set`), as compact JSON: `v:"finalizer"`.
    Value(String),
    /// A list element by position (`i:0`), for lists without keys.
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key for this element.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(kv) => {
                let mut s = String::from("k:{");
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&Value::String(k.clone()).to_string());
                    s.push(':');
                    s.push_str(v);
                }
                s.push('}');
                s
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key (`f:`, `k:`, `v:`, `i:`).
    pub fn from_fields_v1_key(s: &str) -> Result<PathElement> {
        let bad = || Error::Invalid(format!("invalid managedFields path element {s:?}"));
        if let Some(f) = s.strip_prefix("f:") {
            return Ok(PathElement::Field(f.to_string()));
        }
        if let Some(k) = s.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k).map_err(|_| bad())?;
            let Value::Object(m) = v else {
                return Err(bad());
            };
            let mut kv: Vec<(String, String)> =
                m.into_iter().map(|(k, v)| (k, v.to_string())).collect();
            kv.sort();
            return Ok(PathElement::Key(kv));
        }
        if let Some(v) = s.strip_prefix("v:") {
            let v: Value = serde_json::from_str(v).map_err(|_| bad())?;
            return Ok(PathElement::Value(v.to_string()));
        }
        if let Some(i) = s.strip_prefix("i:") {
            return i.parse().map(PathElement::Index).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl fmt::Display for PathElement {
    /// structured-merge-diff's notation: `.name`, `[name="nginx"]`, `[="x"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(kv) => {
                f.write_str("[")?;
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("]")
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object root.
pub type Path = Vec<PathElement>;

/// Renders a path like Kubernetes' conflict messages: `.spec.containers[name="nginx"].image`.
pub fn path_string(p: &[PathElement]) -> String {
    p.iter().map(ToString::to_string).collect()
}

/// A set of field paths: which fields a manager owns. A path is a *member* when the field
/// itself is owned (a leaf, a list element, or an object owned as a whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no path is a member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Removes one member path (descendants stay).
    pub fn remove(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// The member elements at this level.
    pub fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    /// The sub-set under one path element.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let keys: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(pe) {
                c.walk(prefix, out);
            }
            prefix.pop();
        }
    }

    /// Members of either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.difference(&other.members).cloned().collect();
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// Members of both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.intersection(&other.members).cloned().collect();
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Whether any member lies strictly below `path`.
    pub fn has_descendants(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [first, rest @ ..] => self
                .children
                .get(first)
                .is_some_and(|c| c.has_descendants(rest)),
        }
    }

    /// The `fieldsV1` JSON of `metadata.managedFields[]`.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        let keys: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for pe in keys {
            let mut inner = match self.children.get(pe) {
                Some(c) if !c.is_empty() => match c.to_fields_v1() {
                    Value::Object(o) => o,
                    _ => Map::new(),
                },
                _ => Map::new(),
            };
            if self.members.contains(pe) && !inner.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            m.insert(pe.to_fields_v1_key(), Value::Object(inner));
        }
        Value::Object(m)
    }

    /// Parses `fieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet> {
        let Value::Object(m) = v else {
            return Err(Error::Invalid("fieldsV1 must be an object".into()));
        };
        let mut out = FieldSet::new();
        for (k, v) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::from_fields_v1_key(k)?;
            let Value::Object(inner) = v else {
                return Err(Error::Invalid(format!(
                    "managedFields entry {k:?} must be an object"
                )));
            };
            if inner.is_empty() || inner.contains_key(".") {
                out.members.insert(pe.clone());
            }
            let child = FieldSet::from_fields_v1(v)?;
            if !child.is_empty() {
                out.children.insert(pe, child);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
                }}}
            },
            "f:metadata2": {"f:finalizers": {"v:\"a/b\"": {}}, "f:x": {"i:0": {}}}
        });
        let s = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(s.to_fields_v1(), v);
        let paths: Vec<String> = s.paths().iter().map(|p| path_string(p)).collect();
        assert!(paths.contains(&".spec.replicas".to_string()));
        assert!(paths.contains(&".spec.template.spec.containers[name=\"nginx\"].image".to_string()));
        assert!(paths.contains(
            &".spec.template.spec.containers[name=\"nginx\"].ports[containerPort=80,protocol=\"TCP\"]"
                .to_string()
        ));
        assert!(paths.contains(&".metadata2.finalizers[=\"a/b\"]".to_string()));
        assert!(!paths.contains(&".spec".to_string()));
    }

    #[test]
    fn set_algebra() {
        let p = |s: &[&str]| -> Path {
            s.iter()
                .map(|x| PathElement::Field(x.to_string()))
                .collect()
        };
        let mut a = FieldSet::new();
        a.insert(&p(&["spec", "replicas"]));
        a.insert(&p(&["spec", "paused"]));
        let mut b = FieldSet::new();
        b.insert(&p(&["spec", "replicas"]));
        b.insert(&p(&["metadata", "labels", "x"]));
        assert_eq!(a.intersection(&b).paths(), vec![p(&["spec", "replicas"])]);
        assert_eq!(a.difference(&b).paths(), vec![p(&["spec", "paused"])]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(b.has_descendants(&p(&["metadata"])));
        assert!(!b.has(&p(&["metadata"])));
        b.remove(&p(&["metadata", "labels", "x"]));
        assert_eq!(b.paths().len(), 1);
        for bad in [
            json!({"x:1": {}}),
            json!({"f:a": 1}),
            json!({"k:[1]": {}}),
            json!([]),
        ] {
            assert!(FieldSet::from_fields_v1(&bad).is_err());
        }
    }
}
