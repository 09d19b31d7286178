//! The LimitRanger and ResourceQuota plugins' places in the chain. What they enforce is
//! the tenancy work's: it plugs a [`LimitRangeHook`] and a [`QuotaHook`] into
//! [`crate::admission::PluginConfig`] (by default `crate::quota`'s). The plugins do the
//! reads (the namespace's LimitRanges and ResourceQuotas) and call the hooks; without a
//! hook they admit everything.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::lookup::Lookup;
use super::{Admission, Operation, Request};
use crate::error::ApiError;

/// Applies a namespace's LimitRanges to an object being created or updated (defaults
/// for requests and limits, min/max checks), as Kubernetes' LimitRanger does.
pub trait LimitRangeHook: Send + Sync {
    /// `ranges` are the namespace's LimitRange objects (never empty). May change `obj`;
    /// an error refuses the write (Kubernetes answers 403 Forbidden).
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: &'a mut Value,
        ranges: &'a [Value],
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// Checks (and charges) a write against a namespace's ResourceQuotas, as Kubernetes'
/// ResourceQuota plugin does — the last plugin of the chain.
pub trait QuotaHook: Send + Sync {
    /// `quotas` are the namespace's ResourceQuota objects (possibly none: a tenant-wide
    /// quota may still apply); `obj` is the object as it will be stored (`None` for
    /// deletes). An error refuses the write (Kubernetes answers 403 `exceeded quota: …`).
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a Value>,
        quotas: &'a [Value],
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// The LimitRanger plugin: pods and PersistentVolumeClaims (and LimitRange-governed
/// kinds) of namespaces with LimitRanges go through the hook.
pub struct LimitRanger {
    lookup: Lookup,
    hook: Option<Arc<dyn LimitRangeHook>>,
}

impl LimitRanger {
    pub(crate) fn new(lookup: Lookup, hook: Option<Arc<dyn LimitRangeHook>>) -> Self {
        LimitRanger { lookup, hook }
    }
}

impl Admission for LimitRanger {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (Some(hook), Some(o)) = (self.hook.as_ref(), obj) else {
                return Ok(());
            };
            let governed = req.res.group.is_empty()
                && matches!(req.res.plural, "pods" | "persistentvolumeclaims")
                && req.sub.is_none()
                && req.op != Operation::Delete;
            if !governed {
                return Ok(());
            }
            let ranges = self
                .lookup
                .list("", "limitranges", Some(req.namespace))
                .await?;
            if ranges.is_empty() {
                return Ok(());
            }
            hook.admit(req, o, &ranges).await
        })
    }
}

/// The ResourceQuota plugin: namespaced creates and updates go through the hook with
/// their namespace's ResourceQuotas.
pub struct ResourceQuota {
    lookup: Lookup,
    hook: Option<Arc<dyn QuotaHook>>,
}

impl ResourceQuota {
    pub(crate) fn new(lookup: Lookup, hook: Option<Arc<dyn QuotaHook>>) -> Self {
        ResourceQuota { lookup, hook }
    }
}

impl Admission for ResourceQuota {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(hook) = self.hook.as_ref() else {
                return Ok(());
            };
            if !req.res.namespaced || req.namespace.is_empty() {
                return Ok(());
            }
            // Deletes and subresources are not charged (kube's evaluators); usage comes
            // back when the status controllers recount.
            if req.op == Operation::Delete || req.sub.is_some() {
                return Ok(());
            }
            let quotas = self
                .lookup
                .list("", "resourcequotas", Some(req.namespace))
                .await?;
            hook.admit(req, obj.as_deref(), &quotas).await
        })
    }
}
