//! Which tenant owns each Namespace, Network and PersistentVolume: a map kept equal to
//! the store by a list and a watch per kind (like kube-apiserver's informers), so that the
//! synchronous authorizer answers from memory.
//!
//! A write the tenancy admission plugin has just admitted is recorded as *pending* until
//! the watch reports it, so that a client's next request (into the namespace it just
//! created) is not refused in the instant before the watch event arrives. What the watch
//! reports always wins over a pending entry, and pending entries expire.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::obj;

/// The label that records a Namespace's (and a PersistentVolume's) tenant. Only the
/// server sets it.
pub const TENANT_LABEL: &str = "tenancy.h8s.io/tenant";

/// How long an admitted, not yet observed write counts as its tenant's.
const PENDING_TTL: Duration = Duration::from_secs(30);

/// The cluster-scoped kinds a tenant owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owned {
    Namespace,
    Network,
    PersistentVolume,
}

impl Owned {
    pub const ALL: [Owned; 3] = [Owned::Namespace, Owned::Network, Owned::PersistentVolume];

    /// The owned kind of a resource (`group`, `plural`), if it is one.
    pub fn of(group: &str, plural: &str) -> Option<Owned> {
        match (group, plural) {
            ("", "namespaces") => Some(Owned::Namespace),
            ("", "networks") => Some(Owned::Network),
            ("", "persistentvolumes") => Some(Owned::PersistentVolume),
            _ => None,
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Owned::Namespace => "namespaces",
            Owned::Network => "networks",
            Owned::PersistentVolume => "persistentvolumes",
        }
    }

    pub fn resource(self) -> Option<&'static h8s_types::Resource> {
        h8s_types::resources::find("", "v1", self.plural())
    }

    /// The tenant recorded in an object of this kind: the `tenancy.h8s.io/tenant` label,
    /// or a Network's `spec.tenantID`.
    pub fn tenant_of(self, o: &Value) -> Option<&str> {
        match self {
            Owned::Network => o.pointer("/spec/tenantID").and_then(Value::as_str),
            Owned::Namespace | Owned::PersistentVolume => label_tenant(o),
        }
        .filter(|t| !t.is_empty())
    }
}

/// The `tenancy.h8s.io/tenant` label of an object.
pub fn label_tenant(o: &Value) -> Option<&str> {
    obj::meta(o)
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(TENANT_LABEL))
        .and_then(Value::as_str)
}

#[derive(Default)]
struct Maps {
    /// Observed objects: name → tenant (`None`: nobody's, an administrator's).
    seen: HashMap<(Owned, String), Option<String>>,
    /// Admitted writes not observed yet.
    pending: HashMap<(Owned, String), (String, Instant)>,
}

/// The owner of every Namespace, Network and PersistentVolume.
#[derive(Default)]
pub struct TenantIndex {
    maps: RwLock<Maps>,
}

impl TenantIndex {
    /// The tenant owning object `name` of kind `kind`; `None` when it is nobody's or not
    /// known (both mean "not yours" to a tenant user).
    pub fn owner(&self, kind: Owned, name: &str) -> Option<String> {
        let m = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let key = (kind, name.to_string());
        if let Some(t) = m.seen.get(&key) {
            return t.clone();
        }
        m.pending
            .get(&key)
            .filter(|(_, at)| at.elapsed() < PENDING_TTL)
            .map(|(t, _)| t.clone())
    }

    /// Whether `name` of `kind` belongs to `tenant`.
    pub fn owned_by(&self, kind: Owned, name: &str, tenant: &str) -> bool {
        self.owner(kind, name).as_deref() == Some(tenant)
    }

    /// Records an admitted create until the watch reports it.
    pub fn note_pending(&self, kind: Owned, name: &str, tenant: &str) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        m.pending.retain(|_, (_, at)| at.elapsed() < PENDING_TTL);
        m.pending.insert(
            (kind, name.to_string()),
            (tenant.to_string(), Instant::now()),
        );
    }

    /// The names of `kind` owned by `tenant` (for tests and diagnostics).
    pub fn names_of(&self, kind: Owned, tenant: &str) -> Vec<String> {
        let m = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = m
            .seen
            .iter()
            .filter(|((k, _), t)| *k == kind && t.as_deref() == Some(tenant))
            .map(|((_, n), _)| n.clone())
            .collect();
        v.sort();
        v
    }

    fn observe(&self, kind: Owned, name: String, tenant: Option<String>) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let key = (kind, name);
        m.pending.remove(&key);
        m.seen.insert(key, tenant);
    }

    fn forget(&self, kind: Owned, name: &str) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        m.seen.remove(&(kind, name.to_string()));
    }

    pub(crate) fn replace(&self, kind: Owned, items: Vec<(String, Option<String>)>) {
        let mut m = self.maps.write().unwrap_or_else(|e| e.into_inner());
        m.seen.retain(|(k, _), _| *k != kind);
        for (n, t) in items {
            m.pending.remove(&(kind, n.clone()));
            m.seen.insert((kind, n), t);
        }
    }

    /// Lists the three kinds once (so the index is complete when this returns), then
    /// keeps following them in the background until `shutdown` turns true.
    pub async fn start(
        self: &Arc<Self>,
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        for kind in Owned::ALL {
            let rev = self.list(&store, kind).await;
            let (me, store, mut stop) = (self.clone(), store.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = me.follow(store, kind, rev) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
    }

    /// Lists `kind` into the index; returns the list's revision (`None` on failure).
    async fn list(&self, store: &Arc<dyn h8s_store::Store>, kind: Owned) -> Option<i64> {
        let prefix = obj::prefix(kind.resource()?, None);
        let l = store.list(&prefix, Default::default()).await.ok()?;
        let items = l
            .items
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&prefix)?.to_string();
                let o = obj::decode(kv).ok()?;
                Some((name, kind.tenant_of(&o).map(str::to_string)))
            })
            .collect();
        self.replace(kind, items);
        Some(l.revision)
    }

    async fn follow(&self, store: Arc<dyn h8s_store::Store>, kind: Owned, mut rev: Option<i64>) {
        let Some(prefix) = kind.resource().map(|r| obj::prefix(r, None)) else {
            return;
        };
        loop {
            if let Some(r) = rev {
                if let Ok(mut w) = store.watch(&prefix, r).await {
                    while let Some(Ok(ev)) = w.next().await {
                        match ev {
                            h8s_store::Event::Put { kv, .. } => {
                                let Some(name) = kv.key.strip_prefix(&prefix) else {
                                    continue;
                                };
                                if let Ok(o) = obj::decode(&kv) {
                                    let t = kind.tenant_of(&o).map(str::to_string);
                                    self.observe(kind, name.to_string(), t);
                                }
                            }
                            h8s_store::Event::Delete { prev, .. } => {
                                if let Some(name) = prev.key.strip_prefix(&prefix) {
                                    self.forget(kind, name);
                                }
                            }
                        }
                    }
                }
            }
            // The watch ended (compaction, store restart): list again and resume.
            tokio::time::sleep(Duration::from_millis(200)).await;
            rev = self.list(&store, kind).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenants_of_objects() {
        let ns = json!({"metadata": {"name": "a", "labels": {TENANT_LABEL: "acme"}}});
        assert_eq!(Owned::Namespace.tenant_of(&ns), Some("acme"));
        let net = json!({"metadata": {"name": "n"}, "spec": {"tenantID": "acme"}});
        assert_eq!(Owned::Network.tenant_of(&net), Some("acme"));
        assert_eq!(Owned::Network.tenant_of(&ns), None);
        assert_eq!(
            Owned::of("", "persistentvolumes"),
            Some(Owned::PersistentVolume)
        );
        assert_eq!(Owned::of("apps", "namespaces"), None);
    }

    #[test]
    fn observed_wins_over_pending() {
        let ix = TenantIndex::default();
        ix.note_pending(Owned::Namespace, "x", "a");
        assert!(ix.owned_by(Owned::Namespace, "x", "a"));
        ix.observe(Owned::Namespace, "x".into(), Some("b".into()));
        assert!(!ix.owned_by(Owned::Namespace, "x", "a"));
        assert!(ix.owned_by(Owned::Namespace, "x", "b"));
        ix.forget(Owned::Namespace, "x");
        assert_eq!(ix.owner(Owned::Namespace, "x"), None);
        ix.replace(Owned::Namespace, vec![("y".into(), None)]);
        assert_eq!(ix.owner(Owned::Namespace, "y"), None);
        assert!(ix.names_of(Owned::Namespace, "b").is_empty());
    }
}
