//! Admission: plugins that see every write after authorization and before the store.
//! Mutating plugins may change the object; any plugin may refuse the request.

use std::sync::Arc;

use futures::future::BoxFuture;
use h8s_types::Resource;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::{ApiError, Subject};
use crate::obj;

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
pub struct NamespaceLifecycle {
    pub store: Arc<dyn h8s_store::Store>,
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
                return Ok(());
            }
            if req.op != Operation::Create || !req.res.namespaced || req.sub.is_some() {
                return Ok(());
            }
            let ns_res = h8s_types::resources::find("", "v1", "namespaces")
                .ok_or_else(|| ApiError::internal("namespaces are not in the resource table"))?;
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
            let ns = obj::decode(&kv)?;
            if obj::is_deleting(&ns) {
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
