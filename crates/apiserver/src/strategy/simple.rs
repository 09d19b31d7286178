//! Strategies of kinds that differ from the generic registry in a rule or two.

use std::sync::Arc;

use futures::future::BoxFuture;
use h8s_types::Resource;
use serde_json::Value;

use super::{generic_prepare_for_update, Guard, Propagation, Strategy, Sub};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::ipaddr::{cluster_ips, Settle};
use crate::obj;
use crate::state::Api;

/// Services: cluster IPs and node ports are allocated on create and on updates that need
/// new ones (a type change, a new port), and kept on updates that leave them out; a delete
/// answers with the Service.
pub(crate) struct Service;

impl Strategy for Service {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn prepare_for_update(&self, res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        if sub.is_none() {
            crate::svc::keep_allocations(old, new);
        }
        generic_prepare_for_update(res, sub, old, new);
    }

    fn before_create<'a: 'b, 'b>(
        &'a self,
        api: &'a Arc<Api>,
        o: &'b mut Value,
        dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        Box::pin(async move {
            let mut g = api.svc_lock.lock().await;
            let ips = api.allocate_service(o, None, dry_run, &mut g).await?;
            Ok(Some(Box::new(Settle {
                api: api.clone(),
                namespace: obj::namespace(o).to_string(),
                name: obj::name(o).to_string(),
                ips,
                _lock: g,
            }) as Guard<'a>))
        })
    }

    fn before_update<'a: 'b, 'b>(
        &'a self,
        api: &'a Arc<Api>,
        old: &'b Value,
        new: &'b mut Value,
        dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        Box::pin(async move {
            // Only a type change or an edited port needs the allocator.
            if old.get("spec") == new.get("spec") {
                return Ok(None);
            }
            let mut g = api.svc_lock.lock().await;
            let mut ips = api
                .allocate_service(new, Some(old), dry_run, &mut g)
                .await?;
            if !dry_run {
                // The addresses it held: released once the update is stored, if it no
                // longer holds them (a type change to ExternalName).
                ips.extend(cluster_ips(old));
            }
            Ok(Some(Box::new(Settle {
                api: api.clone(),
                namespace: obj::namespace(new).to_string(),
                name: obj::name(new).to_string(),
                ips,
                _lock: g,
            }) as Guard<'a>))
        })
    }

    fn after_delete<'a>(&'a self, api: &'a Arc<Api>, old: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            api.release_cluster_ips(obj::namespace(old), obj::name(old), cluster_ips(old))
                .await
        })
    }
}

/// Nodes register with their own status (the agent reports it at once); their spec
/// changes track no generation.
pub(crate) struct Node;

impl Strategy for Node {
    fn tracks_generation(&self, _res: &Resource) -> bool {
        false
    }

    fn prepare_for_create(&self, res: &Resource, _user: &UserInfo, o: &mut Value) {
        let keep = o.get("status").cloned();
        h8s_types::defaults::prepare_for_create(res, o);
        if let (Some(s), Some(m)) = (keep, o.as_object_mut()) {
            m.insert("status".into(), s);
        }
    }
}

/// Namespaces: a delete marks them terminating; the namespace controller empties and
/// finalizes them through `namespaces/finalize`.
pub(crate) struct Namespace;

impl Strategy for Namespace {
    fn subresource(&self, res: &Resource, name: &str) -> Option<Sub> {
        match name {
            "finalize" => Some(Sub::Finalize),
            _ => super::Generic.subresource(res, name),
        }
    }

    fn tracks_generation(&self, _res: &Resource) -> bool {
        false
    }

    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn deletes_by_finalizing(&self) -> bool {
        true
    }

    fn prepare_for_update(&self, res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        if sub == Some(Sub::Finalize) {
            let fins = obj::at(new, "spec.finalizers")
                .cloned()
                .unwrap_or(serde_json::json!([]));
            let mut merged = old.clone();
            obj::set_at(&mut merged, "spec.finalizers", fins);
            *new = merged;
            return;
        }
        generic_prepare_for_update(res, sub, old, new);
    }
}

/// Core ReplicationControllers orphan their pods on a delete that names no policy, as
/// in Kubernetes (every other kind cascades).
pub(crate) struct ReplicationController;

impl Strategy for ReplicationController {
    fn default_propagation(&self) -> Propagation {
        Propagation::Orphan
    }
}

/// Volumes and claims have a status but track no generation.
pub(crate) struct NoGeneration;

impl Strategy for NoGeneration {
    fn tracks_generation(&self, _res: &Resource) -> bool {
        false
    }
}

/// EndpointSlices have no status yet track a generation (their controller compares it
/// to tell its own writes from stale ones).
pub(crate) struct EndpointSlice;

impl Strategy for EndpointSlice {
    fn tracks_generation(&self, _res: &Resource) -> bool {
        true
    }
}

/// What kube-apiserver says of each system PriorityClass.
pub(crate) fn system_priority_class_description(name: &str) -> &'static str {
    match name {
        "system-node-critical" => {
            "Used for system critical pods that must not be moved from their current node."
        }
        _ => "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    }
}

/// PriorityClasses: the system classes cannot be deleted.
pub(crate) struct PriorityClass;

impl Strategy for PriorityClass {
    fn check_delete(&self, o: &Value) -> Result<(), String> {
        if h8s_types::validation::SYSTEM_PRIORITY_CLASSES
            .iter()
            .any(|(n, _)| *n == obj::name(o))
        {
            return Err("this is a system priority class and cannot be deleted".into());
        }
        Ok(())
    }
}
