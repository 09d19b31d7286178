//! Escalation prevention, as Kubernetes' RBAC registry does it: a user may write a Role
//! or ClusterRole only if it may `escalate` it or already holds every permission the
//! role grants, and a binding only if it may `bind` the role it refers to or holds all
//! of that role's permissions. `system:masters` may do anything. Setting a ClusterRole's
//! aggregationRule (which can gather anything) needs every permission.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::index::RoleRef;
use super::rule::{covers, full_authority, Rule};
use super::{is_master, RbacAuthorizer};
use crate::admission::{Admission, Operation, Request};
use crate::auth::{Attributes, Authorizer, UserInfo};
use crate::error::{ApiError, Subject};

const GROUP: &str = "rbac.authorization.k8s.io";

/// The admission plugin.
pub struct Escalation {
    rbac: Arc<RbacAuthorizer>,
}

impl Escalation {
    pub fn new(rbac: Arc<RbacAuthorizer>) -> Self {
        Escalation { rbac }
    }

    /// Whether `user` may `verb` (`escalate`, `bind`) the role `resource`/`name`.
    fn may(&self, user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
        self.rbac
            .authorize(
                user,
                &Attributes {
                    verb: verb.into(),
                    namespace: ns.into(),
                    group: GROUP.into(),
                    version: "v1".into(),
                    resource: resource.into(),
                    name: name.into(),
                    resource_request: true,
                    ..Default::default()
                },
            )
            .allowed()
    }

    /// `ConfirmNoEscalation`: the user's rules in `ns` must cover `rules`.
    fn confirm(&self, user: &UserInfo, ns: &str, rules: &[Rule]) -> Result<(), String> {
        let (owner, errors) = self.rbac.read().rules_for(user, ns);
        let (ok, missing) = covers(&owner, rules);
        if ok {
            return Ok(());
        }
        let mut lines: Vec<String> = missing.iter().map(Rule::compact_string).collect();
        lines.sort();
        lines.dedup();
        let mut msg = format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.username,
            user.groups,
            lines.join("\n")
        );
        if !errors.is_empty() {
            msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
        }
        Err(msg)
    }

    fn check(&self, req: &Request<'_>, o: &Value) -> Result<(), ApiError> {
        let res = req.res.plural;
        let subject = Subject {
            group: GROUP,
            resource: res,
            name: req.name,
        };
        let forbid = |why: String| ApiError::forbidden_about(&subject, &why);
        match res {
            "roles" | "clusterroles" => {
                if unchanged(req.old, o, &["rules", "aggregationRule"]) {
                    return Ok(());
                }
                if self.may(req.user, "escalate", res, req.namespace, req.name) {
                    return Ok(());
                }
                self.confirm(req.user, req.namespace, &Rule::list_of(o))
                    .map_err(forbid)?;
                if res == "clusterroles" && o.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    self.confirm(req.user, "", &full_authority()).map_err(|_| {
                        forbid(
                            "must have cluster-admin privileges to use the aggregationRule".into(),
                        )
                    })?;
                }
                Ok(())
            }
            "rolebindings" | "clusterrolebindings" => {
                if unchanged(req.old, o, &["roleRef", "subjects"]) {
                    return Ok(());
                }
                let Some(role) = RoleRef::from_binding(o) else {
                    // Validation answers a malformed roleRef.
                    return Ok(());
                };
                let (role_res, role_name) = match &role {
                    RoleRef::Role(n) => ("roles", n),
                    RoleRef::ClusterRole(n) => ("clusterroles", n),
                };
                if self.may(req.user, "bind", role_res, req.namespace, role_name) {
                    return Ok(());
                }
                let rules = self
                    .rbac
                    .read()
                    .role_rules(&role, req.namespace)
                    .map_err(forbid)?;
                self.confirm(req.user, req.namespace, &rules)
                    .map_err(forbid)
            }
            _ => Ok(()),
        }
    }
}

/// Whether an update leaves the fields that grant anything as they were (Kubernetes
/// skips the check for writes that only touch metadata the garbage collector uses).
fn unchanged(old: Option<&Value>, new: &Value, fields: &[&str]) -> bool {
    old.is_some_and(|old| fields.iter().all(|f| old.get(*f) == new.get(*f)))
}

impl Admission for Escalation {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        let r = match (req.op, obj) {
            (Operation::Create | Operation::Update, Some(o))
                if req.res.group == GROUP && req.sub.is_none() && !is_master(req.user) =>
            {
                self.check(req, o)
            }
            _ => Ok(()),
        };
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::index::{Index, PREFIX};
    use serde_json::json;

    fn plugin() -> Escalation {
        let mut ix = Index::default();
        ix.put(
            &format!("{PREFIX}clusterroles/pods-rw"),
            &json!({"rules": [{"verbs": ["get", "list", "create"], "apiGroups": [""], "resources": ["pods"]}]}),
            1,
        );
        ix.put(
            &format!("{PREFIX}clusterroles/secrets"),
            &json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
            1,
        );
        ix.put(
            &format!("{PREFIX}clusterroles/deleter"),
            &json!({"rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
            1,
        );
        ix.put(
            &format!("{PREFIX}clusterroles/binder"),
            &json!({"rules": [
                {"verbs": ["create", "update"], "apiGroups": [GROUP], "resources": ["roles", "rolebindings"]},
                {"verbs": ["bind"], "apiGroups": [GROUP], "resources": ["clusterroles"], "resourceNames": ["secrets"]}]}),
            1,
        );
        for (n, role) in [("a", "pods-rw"), ("b", "binder")] {
            ix.put(
                &format!("{PREFIX}rolebindings/ns1/{n}"),
                &json!({"roleRef": {"kind": "ClusterRole", "name": role},
                        "subjects": [{"kind": "User", "name": "alice"}]}),
                1,
            );
        }
        Escalation::new(Arc::new(RbacAuthorizer::from_index(ix)))
    }

    fn run(p: &Escalation, res: &str, ns: &str, o: Value) -> Result<(), ApiError> {
        let r = h8s_types::resources::find(GROUP, "v1", res).unwrap();
        let user = UserInfo {
            username: "alice".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let name = o["metadata"]["name"].as_str().unwrap_or("x").to_string();
        let req = Request {
            op: Operation::Create,
            res: r,
            sub: None,
            namespace: ns,
            name: &name,
            user: &user,
            dry_run: false,
            old: None,
        };
        let mut o = o;
        futures::executor::block_on(p.admit(&req, Some(&mut o)))
    }

    #[test]
    fn roles_only_with_what_one_holds() {
        let p = plugin();
        let ok = json!({"metadata": {"name": "r"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(run(&p, "roles", "ns1", ok.clone()).is_ok());
        // Held in ns1 only.
        let e = run(&p, "roles", "ns2", ok).unwrap_err();
        assert_eq!(e.code, 403);
        let more = json!({"metadata": {"name": "r"},
            "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]});
        let e = run(&p, "roles", "ns1", more).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.starts_with(
                "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn bindings_need_bind_or_the_permissions() {
        let p = plugin();
        let b = |role: &str| {
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
                   "subjects": [{"kind": "User", "name": "bob"}]})
        };
        // Holds all of pods-rw.
        assert!(run(&p, "rolebindings", "ns1", b("pods-rw")).is_ok());
        // Holds none of `secrets`, but may bind it.
        assert!(run(&p, "rolebindings", "ns1", b("secrets")).is_ok());
        // Holding every permission of a role is enough without `bind`.
        assert!(run(&p, "rolebindings", "ns1", b("binder")).is_ok());
        // Neither `bind` nor the permissions.
        assert_eq!(
            run(&p, "rolebindings", "ns1", b("deleter"))
                .unwrap_err()
                .code,
            403
        );
        // Nothing in another namespace.
        assert_eq!(
            run(&p, "rolebindings", "ns2", b("pods-rw"))
                .unwrap_err()
                .code,
            403
        );
        // A binding to a role that does not exist is refused, naming it.
        let e = run(&p, "rolebindings", "ns1", b("nope")).unwrap_err();
        assert!(e
            .message
            .contains("clusterrole.rbac.authorization.k8s.io \"nope\" not found"));
    }
}
