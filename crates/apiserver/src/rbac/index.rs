//! The in-memory view of every Role, ClusterRole, RoleBinding and ClusterRoleBinding the
//! authorizer decides on, with bindings indexed by subject: a request looks up its
//! user's name and groups (a few hash lookups), never scans the bindings.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::rule::Rule;
use crate::auth::UserInfo;

/// The key prefix of everything in `rbac.authorization.k8s.io`.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// What a binding refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRef {
    Role(String),
    ClusterRole(String),
}

impl RoleRef {
    pub fn from_binding(o: &Value) -> Option<RoleRef> {
        let r = o.get("roleRef")?;
        let name = r.get("name")?.as_str()?.to_string();
        match r.get("kind")?.as_str()? {
            "Role" => Some(RoleRef::Role(name)),
            "ClusterRole" => Some(RoleRef::ClusterRole(name)),
            _ => None,
        }
    }
}

/// One binding as its subjects see it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The binding's store key (to remove it again).
    pub binding: Arc<str>,
    pub role: RoleRef,
}

/// Bindings by subject. A ServiceAccount subject is stored as the user it
/// authenticates as (`system:serviceaccount:NS:NAME`), exactly as Kubernetes matches it.
#[derive(Default, Debug)]
pub struct BySubject {
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
}

impl BySubject {
    fn add(&mut self, subject: &Subject, g: Grant) {
        let m = match subject {
            Subject::User(_) => &mut self.users,
            Subject::Group(_) => &mut self.groups,
        };
        m.entry(subject.name().to_string()).or_default().push(g);
    }

    fn remove(&mut self, subject: &Subject, binding: &str) {
        let m = match subject {
            Subject::User(_) => &mut self.users,
            Subject::Group(_) => &mut self.groups,
        };
        if let Some(v) = m.get_mut(subject.name()) {
            v.retain(|g| &*g.binding != binding);
            if v.is_empty() {
                m.remove(subject.name());
            }
        }
    }

    /// The grants that apply to `user`: its name's, then each group's.
    pub fn for_user<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = &'a Grant> + 'a {
        self.users
            .get(user.username.as_str())
            .into_iter()
            .flatten()
            .chain(
                user.groups
                    .iter()
                    .filter_map(|g| self.groups.get(g.as_str()))
                    .flatten(),
            )
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// A binding's subject, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    fn name(&self) -> &str {
        match self {
            Subject::User(n) | Subject::Group(n) => n,
        }
    }

    /// The subjects of a binding; `binding_ns` is a RoleBinding's namespace, the default
    /// of its ServiceAccount subjects.
    pub fn list_of(o: &Value, binding_ns: &str) -> Vec<Subject> {
        let Some(a) = o.get("subjects").and_then(Value::as_array) else {
            return Vec::new();
        };
        a.iter()
            .filter_map(|s| {
                let name = s.get("name")?.as_str()?;
                match s.get("kind")?.as_str()? {
                    "User" => Some(Subject::User(name.into())),
                    "Group" => Some(Subject::Group(name.into())),
                    "ServiceAccount" => {
                        let ns = s
                            .get("namespace")
                            .and_then(Value::as_str)
                            .filter(|n| !n.is_empty())
                            .unwrap_or(binding_ns);
                        Some(Subject::User(format!("system:serviceaccount:{ns}:{name}")))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

/// A stored object the index keeps, by key.
#[derive(Debug)]
enum Entry {
    Role {
        ns: String,
        name: String,
    },
    ClusterRole {
        name: String,
    },
    Binding {
        /// `None` for a ClusterRoleBinding.
        ns: Option<String>,
        subjects: Vec<Subject>,
    },
}

/// The index.
#[derive(Default, Debug)]
pub struct Index {
    roles: HashMap<(String, String), Arc<[Rule]>>,
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    cluster_bindings: BySubject,
    /// RoleBindings by namespace, then by subject.
    bindings: HashMap<String, BySubject>,
    /// What each key holds, and the revision of its last write.
    entries: HashMap<String, (Entry, i64)>,
}

/// The kind and place of a key: (plural, namespace, name).
fn parse_key(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (plural, rest) = rest.split_once('/')?;
    match plural {
        "roles" | "rolebindings" => {
            let (ns, name) = rest.split_once('/')?;
            Some((plural, Some(ns), name))
        }
        "clusterroles" | "clusterrolebindings" => Some((plural, None, rest)),
        _ => None,
    }
}

impl Index {
    /// Adds or replaces the object stored at `key`, written at revision `rev`.
    pub fn put(&mut self, key: &str, obj: &Value, rev: i64) {
        self.remove(key);
        let Some((plural, ns, name)) = parse_key(key) else {
            return;
        };
        let entry = match plural {
            "roles" => {
                let ns = ns.unwrap_or_default().to_string();
                self.roles
                    .insert((ns.clone(), name.into()), Rule::list_of(obj).into());
                Entry::Role {
                    ns,
                    name: name.into(),
                }
            }
            "clusterroles" => {
                self.cluster_roles
                    .insert(name.into(), Rule::list_of(obj).into());
                Entry::ClusterRole { name: name.into() }
            }
            _ => {
                let Some(role) = RoleRef::from_binding(obj) else {
                    return;
                };
                // A ClusterRoleBinding can only refer to a ClusterRole.
                if ns.is_none() && matches!(role, RoleRef::Role(_)) {
                    return;
                }
                let subjects = Subject::list_of(obj, ns.unwrap_or(""));
                let grant = Grant {
                    binding: key.into(),
                    role,
                };
                let target = match ns {
                    Some(ns) => self.bindings.entry(ns.to_string()).or_default(),
                    None => &mut self.cluster_bindings,
                };
                for s in &subjects {
                    target.add(s, grant.clone());
                }
                Entry::Binding {
                    ns: ns.map(str::to_string),
                    subjects,
                }
            }
        };
        self.entries.insert(key.to_string(), (entry, rev));
    }

    /// Forgets the object stored at `key`.
    pub fn remove(&mut self, key: &str) {
        let Some((entry, _)) = self.entries.remove(key) else {
            return;
        };
        match entry {
            Entry::Role { ns, name } => {
                self.roles.remove(&(ns, name));
            }
            Entry::ClusterRole { name } => {
                self.cluster_roles.remove(&name);
            }
            Entry::Binding { ns, subjects } => {
                let target = match &ns {
                    Some(ns) => match self.bindings.get_mut(ns) {
                        Some(t) => t,
                        None => return,
                    },
                    None => &mut self.cluster_bindings,
                };
                for s in &subjects {
                    target.remove(s, key);
                }
                if let Some(ns) = ns {
                    if self.bindings.get(&ns).is_some_and(BySubject::is_empty) {
                        self.bindings.remove(&ns);
                    }
                }
            }
        }
    }

    /// The revision of the last write of `key` the index holds.
    #[cfg(test)]
    pub fn revision_of(&self, key: &str) -> Option<i64> {
        self.entries.get(key).map(|(_, r)| *r)
    }

    /// The rules a binding in `ns` (`""` for a ClusterRoleBinding) grants; `Err` names a
    /// role that does not exist, worded as Kubernetes' rule resolver does.
    pub fn rules_of(&self, role: &RoleRef, ns: &str) -> Result<&[Rule], String> {
        match role {
            RoleRef::ClusterRole(n) => {
                self.cluster_roles.get(n).map(|r| &r[..]).ok_or_else(|| {
                    format!("clusterrole.rbac.authorization.k8s.io \"{n}\" not found")
                })
            }
            RoleRef::Role(n) => self
                .roles
                .get(&(ns.to_string(), n.clone()))
                .map(|r| &r[..])
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{n}\" not found")),
        }
    }

    /// Visits the rules that apply to `user` in `ns` (cluster-wide ones first, then those
    /// of the namespace's RoleBindings, as Kubernetes' `VisitRulesFor`); `visit` returns
    /// true to stop. Missing roles are reported to `missing`.
    pub fn visit<'a>(
        &'a self,
        user: &'a UserInfo,
        ns: &str,
        missing: &mut dyn FnMut(String),
        visit: &mut dyn FnMut(&'a Rule) -> bool,
    ) -> bool {
        for g in self.cluster_bindings.for_user(user) {
            match self.rules_of(&g.role, "") {
                Ok(rules) => {
                    if rules.iter().any(&mut *visit) {
                        return true;
                    }
                }
                Err(e) => missing(e),
            }
        }
        if ns.is_empty() {
            return false;
        }
        if let Some(b) = self.bindings.get(ns) {
            for g in b.for_user(user) {
                match self.rules_of(&g.role, ns) {
                    Ok(rules) => {
                        if rules.iter().any(&mut *visit) {
                            return true;
                        }
                    }
                    Err(e) => missing(e),
                }
            }
        }
        false
    }

    /// Every rule that applies to `user` in `ns` (a copy).
    pub fn rules_for(&self, user: &UserInfo, ns: &str) -> (Vec<Rule>, Vec<String>) {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, ns, &mut |e| errors.push(e), &mut |r| {
            out.push(r.clone());
            false
        });
        (out, errors)
    }

    /// The rules of a role a binding in `ns` refers to (a copy).
    pub fn role_rules(&self, role: &RoleRef, ns: &str) -> Result<Vec<Rule>, String> {
        self.rules_of(role, ns).map(<[Rule]>::to_vec)
    }
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

    #[test]
    fn bindings_by_subject_follow_puts_and_removes() {
        let mut ix = Index::default();
        ix.put(
            &format!("{PREFIX}clusterroles/view"),
            &json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            1,
        );
        ix.put(
            &format!("{PREFIX}roles/a/edit"),
            &json!({"rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
            2,
        );
        let rb = format!("{PREFIX}rolebindings/a/b");
        ix.put(
            &rb,
            &json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "User", "name": "alice"},
                                 {"kind": "ServiceAccount", "name": "default"},
                                 {"kind": "Group", "name": "devs"}]}),
            3,
        );
        let rb2 = format!("{PREFIX}rolebindings/a/c");
        ix.put(
            &rb2,
            &json!({"roleRef": {"kind": "Role", "name": "edit"},
                    "subjects": [{"kind": "User", "name": "bob"}]}),
            4,
        );
        let alice = user("alice", &[]);
        assert_eq!(ix.rules_for(&alice, "a").0.len(), 1);
        assert!(ix.rules_for(&alice, "b").0.is_empty());
        assert!(ix.rules_for(&alice, "").0.is_empty());
        let sa = user("system:serviceaccount:a:default", &[]);
        assert_eq!(ix.rules_for(&sa, "a").0.len(), 1);
        let dev = user("carol", &["devs"]);
        assert_eq!(ix.rules_for(&dev, "a").0.len(), 1);
        assert_eq!(ix.rules_for(&user("bob", &[]), "a").0[0].verbs, ["delete"]);
        // A role updated in place changes what its bindings grant.
        ix.put(
            &format!("{PREFIX}roles/a/edit"),
            &json!({"rules": [{"verbs": ["patch"], "apiGroups": [""], "resources": ["pods"]}]}),
            5,
        );
        assert_eq!(ix.rules_for(&user("bob", &[]), "a").0[0].verbs, ["patch"]);
        assert_eq!(ix.revision_of(&rb2), Some(4));
        ix.remove(&rb);
        assert!(ix.rules_for(&alice, "a").0.is_empty());
        assert!(ix.rules_for(&dev, "a").0.is_empty());
        // A binding to a missing role grants nothing and says why.
        ix.remove(&format!("{PREFIX}roles/a/edit"));
        let (rules, errs) = ix.rules_for(&user("bob", &[]), "a");
        assert!(rules.is_empty());
        assert_eq!(errs, [r#"role.rbac.authorization.k8s.io "edit" not found"#]);
        // A ClusterRoleBinding to a Role is ignored.
        ix.put(
            &format!("{PREFIX}clusterrolebindings/x"),
            &json!({"roleRef": {"kind": "Role", "name": "edit"},
                    "subjects": [{"kind": "User", "name": "alice"}]}),
            6,
        );
        assert!(ix.rules_for(&alice, "a").0.is_empty());
    }
}
