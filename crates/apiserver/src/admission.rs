//! Admission: plugins that see every write after authorization and before the store.
//! Mutating plugins may change the object; any plugin may refuse the request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use h8s_types::Resource;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::{ApiError, Subject};
use crate::obj;

mod external_ips;
mod host;
mod lookup;
mod network;
mod pod;
mod quota;
mod storage;
mod tenancy;

pub use external_ips::ServiceExternalIps;
pub use host::HostNamespaces;
pub(crate) use lookup::Lookup;
pub use network::NamespaceNetwork;
pub use pod::{
    DefaultTolerationSeconds, Priority, RuntimeClass, ServiceAccount, TOKEN_MOUNT_PATH,
    TOKEN_VOLUME_PREFIX,
};
pub use quota::{LimitRangeHook, LimitRanger, QuotaHook, ResourceQuota};
pub use storage::{CinderVolumeTenant, DefaultStorageClass};
pub use tenancy::Tenancy;

/// Settings of the built-in admission plugins (kube-apiserver's flags for them), and
/// the hooks the tenancy work fills.
#[derive(Clone)]
pub struct PluginConfig {
    /// DefaultTolerationSeconds: how long pods tolerate `node.kubernetes.io/not-ready`
    /// (`--default-not-ready-toleration-seconds`, 300).
    pub not_ready_toleration_seconds: i64,
    /// DefaultTolerationSeconds: how long pods tolerate `node.kubernetes.io/unreachable`
    /// (`--default-unreachable-toleration-seconds`, 300).
    pub unreachable_toleration_seconds: i64,
    /// ServiceAccount: refuse pods whose service account does not exist (Kubernetes
    /// does; the ServiceAccount controller creates `default` in every namespace).
    pub require_service_account: bool,
    /// LimitRanger's enforcement (`None`: the plugin admits everything).
    pub limit_ranges: Option<Arc<dyn LimitRangeHook>>,
    /// ResourceQuota's enforcement (`None`: the plugin admits everything).
    pub quota: Option<Arc<dyn QuotaHook>>,
    /// ServiceExternalIPs: the LoadBalancer pool (`--lb-pool`) as (network, prefix length);
    /// external IPs must be in it (`None`: none allowed).
    pub lb_pool: Option<(std::net::Ipv4Addr, u8)>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            not_ready_toleration_seconds: 300,
            unreachable_toleration_seconds: 300,
            require_service_account: true,
            limit_ranges: None,
            quota: None,
            lb_pool: None,
        }
    }
}

/// Kubernetes' default admission chain, in kube-apiserver's order: NamespaceLifecycle,
/// LimitRanger, ServiceAccount, Priority, DefaultTolerationSeconds, DefaultStorageClass,
/// (h8s) CinderVolumeTenant, RuntimeClass, ResourceQuota; then h8s's NamespaceNetwork,
/// HostNamespaces and ServiceExternalIPs.
pub fn default_chain(
    store: Arc<dyn h8s_store::Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    cfg: &PluginConfig,
) -> Vec<Arc<dyn Admission>> {
    let lookup = lookup::Lookup::followed(store.clone(), shutdown.clone());
    vec![
        Arc::new(NamespaceLifecycle::new(store, shutdown)),
        Arc::new(LimitRanger::new(lookup.clone(), cfg.limit_ranges.clone())),
        Arc::new(ServiceAccount::new(
            lookup.clone(),
            cfg.require_service_account,
        )),
        Arc::new(Priority::new(lookup.clone())),
        Arc::new(DefaultTolerationSeconds {
            not_ready_seconds: cfg.not_ready_toleration_seconds,
            unreachable_seconds: cfg.unreachable_toleration_seconds,
        }),
        Arc::new(DefaultStorageClass::new(lookup.clone())),
        Arc::new(CinderVolumeTenant::new(lookup.clone())),
        Arc::new(RuntimeClass::new(lookup.clone())),
        Arc::new(ResourceQuota::new(lookup.clone(), cfg.quota.clone())),
        Arc::new(NamespaceNetwork::new(lookup)),
        Arc::new(HostNamespaces),
        Arc::new(ServiceExternalIps { pool: cfg.lb_pool }),
    ]
}

/// The kind of write being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// One write, as admission sees it.
pub struct Request<'a> {
    pub op: Operation,
    pub res: &'static Resource,
    pub sub: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub dry_run: bool,
    /// The object before the write (updates, deletes).
    pub old: Option<&'a Value>,
}

/// An admission plugin.
pub trait Admission: Send + Sync {
    /// Checks (and for mutating plugins, changes) `obj`, the object about to be written
    /// (`None` for deletes).
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// Kubernetes' NamespaceLifecycle: no new objects in a namespace that does not exist or
/// is being deleted, and the system namespaces cannot be deleted.
///
/// Like kube-apiserver's informer, it answers from namespaces it follows with a watch, so a
/// create costs no extra store round trip; a namespace it has not seen (created a moment
/// ago) is read from the store. An object created in the instant between a namespace's
/// deletion and the watch reporting it is removed by the namespace deleter, which counts the
/// contents again before it finalizes.
pub struct NamespaceLifecycle {
    store: Arc<dyn h8s_store::Store>,
    /// Namespaces the watch has seen: name → being deleted.
    seen: Arc<RwLock<HashMap<String, bool>>>,
}

impl NamespaceLifecycle {
    /// Starts the plugin and its namespace watch, which ends when `shutdown` turns true.
    pub fn new(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let seen = Arc::<RwLock<HashMap<String, bool>>>::default();
        tokio::spawn(follow_namespaces(store.clone(), seen.clone(), shutdown));
        Self { store, seen }
    }

    /// Whether the namespace is being deleted, from the watch (`None`: not seen).
    fn cached(&self, name: &str) -> Option<bool> {
        let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
        seen.get(name).copied()
    }
}

/// Keeps `seen` equal to the namespaces in the store: list, then watch from the list's
/// revision; on any error (a compaction that overtook the watch, a store restart) start over.
async fn follow_namespaces(
    store: Arc<dyn h8s_store::Store>,
    seen: Arc<RwLock<HashMap<String, bool>>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(ns_res) = h8s_types::resources::find("", "v1", "namespaces") else {
        return;
    };
    let prefix = obj::prefix(ns_res, None);
    let state = |kv: &h8s_store::KeyValue| {
        let name = kv.key.strip_prefix(&prefix)?.to_string();
        let deleting = obj::decode(kv).map(|o| obj::is_deleting(&o)).ok()?;
        Some((name, deleting))
    };
    let follow = async {
        loop {
            let listed = store.list(&prefix, Default::default()).await;
            let watch = match &listed {
                Ok(l) => store.watch(&prefix, l.revision).await,
                Err(_) => Err(h8s_store::Error::Unavailable("list failed".into())),
            };
            if let (Ok(l), Ok(mut w)) = (listed, watch) {
                {
                    let mut m = seen.write().unwrap_or_else(|e| e.into_inner());
                    m.clear();
                    m.extend(l.items.iter().filter_map(state));
                }
                while let Some(Ok(ev)) = w.next().await {
                    let mut m = seen.write().unwrap_or_else(|e| e.into_inner());
                    match ev {
                        h8s_store::Event::Put { kv, .. } => {
                            if let Some((name, deleting)) = state(&kv) {
                                m.insert(name, deleting);
                            }
                        }
                        h8s_store::Event::Delete { prev, .. } => {
                            if let Some(name) = prev.key.strip_prefix(&prefix) {
                                m.remove(name);
                            }
                        }
                    }
                }
            }
            // Forget what may be stale, so admission reads the store until the next list.
            seen.write().unwrap_or_else(|e| e.into_inner()).clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = follow => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Namespaces that may never be deleted.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

impl Admission for NamespaceLifecycle {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        _obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let subject = Subject {
                group: req.res.group,
                resource: req.res.plural,
                name: req.name,
            };
            if req.res.plural == "namespaces" && req.res.group.is_empty() {
                if req.op == Operation::Delete && IMMORTAL_NAMESPACES.contains(&req.name) {
                    return Err(ApiError::forbidden_about(
                        &subject,
                        "this namespace may not be deleted",
                    ));
                }
                if req.op == Operation::Delete {
                    // Until the watch reports the namespace terminating, read it from the
                    // store: a create right after this delete must see the new state.
                    let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
                    seen.remove(req.name);
                }
                return Ok(());
            }
            if req.op != Operation::Create || !req.res.namespaced || req.sub.is_some() {
                return Ok(());
            }
            let deleting = match self.cached(req.namespace) {
                Some(deleting) => deleting,
                None => {
                    let ns_res =
                        h8s_types::resources::find("", "v1", "namespaces").ok_or_else(|| {
                            ApiError::internal("namespaces are not in the resource table")
                        })?;
                    let key = obj::key(ns_res, None, req.namespace);
                    let ns_subject = Subject {
                        group: "",
                        resource: "namespaces",
                        name: req.namespace,
                    };
                    let kv = self
                        .store
                        .get(&key)
                        .await
                        .map_err(|e| crate::error::from_store(e, &ns_subject))?;
                    let Some(kv) = kv else {
                        return Err(ApiError::not_found(&ns_subject));
                    };
                    obj::is_deleting(&obj::decode(&kv)?)
                }
            };
            if deleting {
                let mut e = ApiError::forbidden_about(
                    &subject,
                    &format!(
                        "unable to create new content in namespace {} because it is being terminated",
                        req.namespace
                    ),
                );
                e.details.causes.push(crate::error::Cause {
                    reason: "NamespaceTerminating".into(),
                    message: format!("namespace {} is being terminated", req.namespace),
                    field: "metadata.namespace".into(),
                });
                return Err(e);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
