//! Kubernetes RBAC: the authorizer over Roles, ClusterRoles and their bindings, the
//! escalation checks on writes of them, the default policy reconciled at start, the
//! Node authorizer and NodeRestriction, and the access reviews.
//!
//! The [`Authorizer`] trait is synchronous, so [`RbacAuthorizer`] decides from an
//! in-memory [`index::Index`] that a watch of `rbac.authorization.k8s.io` keeps equal to
//! the store. A write of an RBAC object through this server returns only once the index
//! holds it ([`RbacAuthorizer::synced`]), so a deleted binding stops granting at once.

pub mod bootstrap;
pub mod escalation;
pub mod impersonate;
pub mod index;
pub mod node;
pub mod review;
pub mod rule;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;

use crate::auth::{Attributes, Authorizer, Decision, UserInfo};
use crate::obj;
use index::Index;

/// The group whose members may do anything (kube-apiserver's privileged group).
pub const MASTERS_GROUP: &str = "system:masters";

/// RBAC, deciding from an index fed by a watch.
pub struct RbacAuthorizer {
    index: Arc<RwLock<Index>>,
    /// The revision the index has applied, for [`RbacAuthorizer::synced`].
    applied: tokio::sync::watch::Receiver<i64>,
}

impl RbacAuthorizer {
    /// Lists the RBAC objects, then follows them with a watch until `shutdown` turns
    /// true; returns once the first list is in the index.
    pub async fn start(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Self> {
        let index = Arc::new(RwLock::new(Index::default()));
        let (tx, rx) = tokio::sync::watch::channel(0i64);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(follow(store, index.clone(), tx, first_tx, shutdown));
        let _ = first_rx.await;
        Arc::new(RbacAuthorizer { index, applied: rx })
    }

    /// An authorizer over a fixed index (tests).
    #[cfg(test)]
    pub fn from_index(ix: Index) -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(0i64);
        RbacAuthorizer {
            index: Arc::new(RwLock::new(ix)),
            applied: rx,
        }
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most a few seconds) until the index has applied the store's revision
    /// `rev`, that of a write of an RBAC object (the watch reports writes in revision
    /// order, and every RBAC write is in the prefix it follows).
    pub async fn synced(&self, rev: i64) {
        let mut rx = self.applied.clone();
        let wait = rx.wait_for(|applied| *applied >= rev);
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            tracing::warn!(rev, "the RBAC index did not catch up with a write");
        }
    }

    /// RBAC's answer alone: allow, or deny with the reasons of roles that could not be
    /// resolved (Kubernetes' `RBAC: …` reason).
    fn decide(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let ix = self.read();
        let mut errors = Vec::new();
        let allowed = ix.visit(user, &a.namespace, &mut |e| errors.push(e), &mut |r| {
            r.allows(a)
        });
        if allowed {
            Decision::Allow
        } else if errors.is_empty() {
            Decision::Deny(String::new())
        } else {
            errors.sort();
            errors.dedup();
            Decision::Deny(format!("RBAC: [{}]", errors.join(", ")))
        }
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if is_master(user) {
            return Decision::Allow;
        }
        self.decide(user, a)
    }
}

impl crate::state::Api {
    /// Returns once the RBAC index holds a write (at store revision `rev`) of an object
    /// of `t`'s kind, when it is an RBAC kind: what was just granted or revoked applies to
    /// the next request.
    pub(crate) async fn rbac_written(&self, t: &crate::route::Target, rev: i64) {
        if t.res.group == "rbac.authorization.k8s.io" {
            if let Some(r) = &self.rbac {
                r.synced(rev).await;
            }
        }
    }
}

/// Whether `user` is in `system:masters`.
pub fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == MASTERS_GROUP)
}

/// Kubernetes' union authorizer: the first member that allows wins; when none does, the
/// denial carries the reasons given, joined.
pub struct Union(pub Vec<Arc<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for z in &self.0 {
            match z.authorize(user, a) {
                Decision::Deny(why) => {
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
                allowed => return allowed,
            }
        }
        Decision::Deny(reasons.join(", "))
    }
}

/// Keeps `index` equal to the RBAC objects in the store: list, then watch from the
/// list's revision; on any error, list again.
async fn follow(
    store: Arc<dyn h8s_store::Store>,
    index: Arc<RwLock<Index>>,
    applied: tokio::sync::watch::Sender<i64>,
    first: tokio::sync::oneshot::Sender<()>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut first = Some(first);
    let run = async {
        loop {
            let listed = store.list(index::PREFIX, Default::default()).await;
            let watch = match &listed {
                Ok(l) => store.watch(index::PREFIX, l.revision).await,
                Err(e) => Err(h8s_store::Error::Unavailable(e.to_string())),
            };
            match (listed, watch) {
                (Ok(l), Ok(mut w)) => {
                    let mut fresh = Index::default();
                    for kv in &l.items {
                        if let Ok(o) = obj::decode(kv) {
                            fresh.put(&kv.key, &o, kv.mod_revision);
                        }
                    }
                    *index.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                    applied.send_replace(l.revision);
                    if let Some(f) = first.take() {
                        let _ = f.send(());
                    }
                    while let Some(Ok(ev)) = w.next().await {
                        let rev = ev.revision();
                        {
                            let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
                            match ev {
                                h8s_store::Event::Put { kv, .. } => match obj::decode(&kv) {
                                    Ok(o) => ix.put(&kv.key, &o, kv.mod_revision),
                                    Err(_) => ix.remove(&kv.key),
                                },
                                h8s_store::Event::Delete { prev, .. } => ix.remove(&prev.key),
                            }
                        }
                        applied.send_replace(rev);
                    }
                    tracing::debug!("the RBAC watch ended; listing again");
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "listing RBAC objects failed; retrying");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// The 403 message kube-apiserver gives when authorization denies a request
/// (`forbiddenMessage` and `NewForbidden`):
/// `pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the
/// namespace "default"`.
pub fn forbidden_message(user: &UserInfo, a: &Attributes, reason: &str) -> String {
    let why = if a.resource_request {
        let mut resource = a.resource.clone();
        if !a.subresource.is_empty() {
            resource = format!("{resource}/{}", a.subresource);
        }
        let scope = if a.namespace.is_empty() {
            " at the cluster scope".to_string()
        } else {
            format!(" in the namespace {:?}", a.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?}{scope}",
            user.username, a.verb, resource, a.group
        )
    } else {
        format!(
            "User {:?} cannot {} path {:?}",
            user.username, a.verb, a.path
        )
    };
    let why = if reason.is_empty() {
        why
    } else {
        format!("{why}: {reason}")
    };
    // NewForbidden(groupResource, name, err).
    if !a.resource_request || a.resource.is_empty() {
        return format!("forbidden: {why}");
    }
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", a.name)
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

    fn attrs(verb: &str, ns: &str, resource: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            namespace: ns.into(),
            resource: resource.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn forbidden_messages_are_kube_apiservers() {
        let alice = user("alice", &[]);
        assert_eq!(
            forbidden_message(&alice, &attrs("list", "default", "pods", ""), ""),
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let mut a = attrs("get", "", "deployments", "web");
        a.group = "apps".into();
        a.subresource = "scale".into();
        assert_eq!(
            forbidden_message(&alice, &a, "RBAC: [x]"),
            r#"deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments/scale" in API group "apps" at the cluster scope: RBAC: [x]"#
        );
        let p = Attributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&alice, &p, ""),
            r#"forbidden: User "alice" cannot get path "/metrics""#
        );
    }

    #[test]
    fn decisions_masters_and_unions() {
        let mut ix = Index::default();
        ix.put(
            &format!("{}clusterroles/view", index::PREFIX),
            &json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
            1,
        );
        ix.put(
            &format!("{}rolebindings/a/b", index::PREFIX),
            &json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "User", "name": "alice"}]}),
            2,
        );
        ix.put(
            &format!("{}rolebindings/a/gone", index::PREFIX),
            &json!({"roleRef": {"kind": "ClusterRole", "name": "missing"},
                    "subjects": [{"kind": "User", "name": "alice"}]}),
            3,
        );
        let z = RbacAuthorizer::from_index(ix);
        let alice = user("alice", &["system:authenticated"]);
        // A RoleBinding to a ClusterRole grants it in its namespace only.
        assert!(z
            .authorize(&alice, &attrs("list", "a", "pods", ""))
            .allowed());
        assert!(!z
            .authorize(&alice, &attrs("list", "b", "pods", ""))
            .allowed());
        assert!(!z
            .authorize(&alice, &attrs("list", "", "pods", ""))
            .allowed());
        match z.authorize(&alice, &attrs("delete", "a", "pods", "p")) {
            Decision::Deny(why) => assert_eq!(
                why,
                r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found]"#
            ),
            d => panic!("{d:?}"),
        }
        let admin = user("root", &[MASTERS_GROUP]);
        assert!(z
            .authorize(&admin, &attrs("delete", "x", "nodes", ""))
            .allowed());
        struct No;
        impl Authorizer for No {
            fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
                Decision::Deny("no opinion here".into())
            }
        }
        let u = Union(vec![Arc::new(No), Arc::new(z)]);
        assert!(u
            .authorize(&alice, &attrs("get", "a", "pods", "p"))
            .allowed());
        match u.authorize(&alice, &attrs("get", "b", "pods", "p")) {
            Decision::Deny(why) => assert_eq!(why, "no opinion here"),
            d => panic!("{d:?}"),
        }
    }
}
