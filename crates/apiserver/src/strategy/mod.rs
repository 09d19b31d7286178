//! Per-kind registry strategies, as kube-apiserver's `rest.RESTCreateStrategy`,
//! `RESTUpdateStrategy` and `RESTDeleteStrategy`: what differs between kinds in the
//! generic registry (`rest.rs`) is asked of the kind's [`Strategy`], never of its name.
//!
//! [`of`] attaches a strategy to every resource of the `h8s_types` table; kinds with
//! nothing special get [`Generic`], which defaults, validates and renders Tables from
//! `h8s_types`.

mod autoscaling;
mod csr;
mod events;
pub(crate) mod pod;

pub(crate) use simple::system_priority_class_description;
pub(crate) mod simple;

use futures::future::BoxFuture;
use h8s_types::resources::FieldSelectorError;
use h8s_types::{FieldErrors, Resource};
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::state::Api;
use std::sync::Arc;

/// What a subresource does, by meaning rather than by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    /// `status`: a write changes only `.status`.
    Status,
    /// `scale`: an `autoscaling/v1 Scale` view of the kind's replica paths.
    Scale,
    /// `namespaces/finalize`: a write changes only `.spec.finalizers`.
    Finalize,
    /// `certificatesigningrequests/approval`: a write changes only `.status.conditions`.
    Approval,
    /// `pods/binding`: create-only; sets `spec.nodeName`.
    Binding,
    /// `pods/eviction`: create-only; deletes the pod when its disruption budget allows.
    Eviction,
}

/// The cascading-deletion policy of a delete that names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Orphan,
}

/// Something held until the object is stored (a Service address allocation's lock).
pub(crate) type Guard<'a> = Box<dyn Send + 'a>;

/// How the registry treats one kind. Every method has the generic behaviour as its
/// default, so a strategy states only what differs.
pub(crate) trait Strategy: Send + Sync {
    /// What a subresource of this kind does; `None`: not served by the registry (405,
    /// or a delegated handler).
    fn subresource(&self, res: &Resource, name: &str) -> Option<Sub> {
        use h8s_types::resources::SubresourceRole as R;
        match res.subresource(name)?.role() {
            R::Status => Some(Sub::Status),
            R::Scale if res.scale.is_some() => Some(Sub::Scale),
            _ => None,
        }
    }

    /// Whether writes to the spec bump `metadata.generation` (Services have a status
    /// but no generation in Kubernetes).
    fn tracks_generation(&self, res: &Resource) -> bool {
        res.has_status && !(res.group.is_empty() && res.kind == "Service")
    }

    /// The list and map semantics server-side apply and managed fields follow (custom
    /// resources: from their schema's `x-kubernetes-list-type`/`-list-map-keys`/`-map-type`).
    fn patch_schema(&self, res: &Resource) -> h8s_machinery::Schema {
        h8s_machinery::Schema::for_kind(res.group, res.kind)
    }

    /// Whether the kind takes strategic merge patches (custom resources do not: 415).
    fn strategic_merge_patch(&self) -> bool {
        true
    }

    /// Fields of `o` the kind does not know (`spec.foo`), for `fieldValidation`.
    fn unknown_fields(&self, res: &Resource, o: &Value) -> Vec<String> {
        h8s_types::strict::unknown_fields(res.group, res.version, res.kind, o).unwrap_or_default()
    }

    /// Whether a delete answers with the deleted object rather than a `Status`.
    fn returns_deleted_object(&self) -> bool {
        false
    }

    /// Whether a delete only marks the object terminating (`status.phase: Terminating`)
    /// and leaves its removal to a controller (namespaces).
    fn deletes_by_finalizing(&self) -> bool {
        false
    }

    /// The cascading policy of a delete without one.
    fn default_propagation(&self) -> Propagation {
        Propagation::Background
    }

    /// A graceful deletion period for this object (`requested`: the request's
    /// `gracePeriodSeconds`); `None` deletes at once.
    fn grace_period(&self, _o: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Refuses the deletion of an object the system needs (403 with the reason).
    fn check_delete(&self, _o: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Defaults filled on every write.
    fn default(&self, res: &Resource, o: &mut Value) {
        h8s_types::defaults::apply(res, o);
    }

    /// What a create resets (status) and derives; `user` is the caller.
    fn prepare_for_create(&self, res: &Resource, _user: &UserInfo, o: &mut Value) {
        h8s_types::defaults::prepare_for_create(res, o);
    }

    /// Makes `new` what an update through `sub` may change of `old`: the main resource
    /// keeps `.status`, `status` changes only `.status`, and so on.
    fn prepare_for_update(&self, res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        generic_prepare_for_update(res, sub, old, new);
    }

    /// Field errors of an object about to be created.
    fn validate_create(&self, res: &Resource, o: &Value) -> Result<(), FieldErrors> {
        h8s_types::validation::validate_create(res, o)
    }

    /// Field errors of an update of `old` to `new` through `sub`.
    fn validate_update(
        &self,
        res: &Resource,
        sub: Option<Sub>,
        new: &Value,
        old: &Value,
    ) -> Result<(), FieldErrors> {
        use h8s_types::validation as v;
        match sub {
            Some(Sub::Status | Sub::Approval) => v::validate_status_update(res, new, old),
            _ => v::validate_update(res, new, old),
        }
    }

    /// Work before a create is stored that needs the store (address allocation). What
    /// it returns is held until the object is stored.
    fn before_create<'a: 'b, 'b>(
        &'a self,
        _api: &'a Arc<Api>,
        _o: &'b mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        Box::pin(async { Ok(None) })
    }

    /// Work before an update is stored (signing an approved CSR, allocating a Service's
    /// node ports). What it returns is held until the object is stored.
    fn before_update<'a: 'b, 'b>(
        &'a self,
        _api: &'a Arc<Api>,
        _old: &'b Value,
        _new: &'b mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        Box::pin(async { Ok(None) })
    }

    /// Work after an object is gone from the store (a Service's cluster IPs released).
    fn after_delete<'a>(&'a self, _api: &'a Arc<Api>, _old: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// The value of a selectable field, as field selectors compare it.
    fn field_value(
        &self,
        res: &Resource,
        o: &Value,
        field: &str,
    ) -> Result<String, FieldSelectorError> {
        res.field_value(o, field)
    }

    /// The object as the store keeps it when that differs from the served form (a kind
    /// served in two groups keeps one form); `None`: as served.
    fn stored_form(&self, _o: &Value) -> Option<Value> {
        None
    }

    /// The object as this resource serves it, from its stored form.
    fn served_form(&self, o: Value) -> Value {
        o
    }

    /// A `meta.k8s.io/v1 Table` of objects with the kind's kubectl columns.
    fn table(
        &self,
        res: &Resource,
        objs: &[Value],
        include_object: &str,
        list_meta: Value,
    ) -> Value {
        generic_table(res, objs, include_object, list_meta)
    }
}

/// A strategy as a request holds it: a static one from the table's kinds, or a custom
/// resource's, which lives as long as its definition is served.
#[derive(Clone)]
pub(crate) enum StrategyRef {
    Static(&'static dyn Strategy),
    Custom(std::sync::Arc<crate::crd::CustomResource>),
}

impl std::ops::Deref for StrategyRef {
    type Target = dyn Strategy;
    fn deref(&self) -> &(dyn Strategy + 'static) {
        match self {
            StrategyRef::Static(s) => *s,
            StrategyRef::Custom(c) => &**c,
        }
    }
}

/// The registry's behaviour for kinds with nothing special.
pub(crate) struct Generic;
impl Strategy for Generic {}

/// The strategy of a resource.
pub(crate) fn of(res: &Resource) -> &'static dyn Strategy {
    match (res.group, res.kind) {
        ("", "Pod") => &pod::Pod,
        ("", "Service") => &simple::Service,
        ("", "Node") => &simple::Node,
        ("", "Namespace") => &simple::Namespace,
        ("", "ReplicationController") => &simple::ReplicationController,
        ("", "PersistentVolume" | "PersistentVolumeClaim") => &simple::NoGeneration,
        ("scheduling.k8s.io", "PriorityClass") => &simple::PriorityClass,
        ("discovery.k8s.io", "EndpointSlice") => &simple::EndpointSlice,
        ("certificates.k8s.io", "CertificateSigningRequest") => &csr::Csr,
        ("events.k8s.io", "Event") => &events::EventsV1,
        ("autoscaling", "HorizontalPodAutoscaler") if res.version == "v1" => &autoscaling::HpaV1,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => &crate::crd::kind::Crd,
        ("admissionregistration.k8s.io", _) => &crate::webhook::Configuration,
        ("apiregistration.k8s.io", "APIService") => &crate::apiservice::ApiService,
        _ => &Generic,
    }
}

/// The generic update rule of [`Strategy::prepare_for_update`].
pub(crate) fn generic_prepare_for_update(
    res: &Resource,
    sub: Option<Sub>,
    old: &Value,
    new: &mut Value,
) {
    match sub {
        Some(Sub::Status) => {
            // A status write changes only .status.
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            *new = merged;
        }
        _ => {
            if res.has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
    }
}

/// The Table `h8s_types` renders for the kind.
pub(crate) fn generic_table(
    res: &Resource,
    objs: &[Value],
    include_object: &str,
    list_meta: Value,
) -> Value {
    use h8s_types::table::IncludeObject;
    let include = match include_object {
        "Object" => IncludeObject::Object,
        "None" => IncludeObject::None,
        _ => IncludeObject::Metadata,
    };
    h8s_types::table::table(res, objs, &list_meta, include, std::time::SystemTime::now())
}

#[cfg(test)]
mod tests;
