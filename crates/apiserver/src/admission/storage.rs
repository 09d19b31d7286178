//! Kubernetes' DefaultStorageClass plugin: a PersistentVolumeClaim that names no
//! storage class (`spec.storageClassName` absent, not `""`) gets the default one.

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::lookup::Lookup;
use super::{Admission, Operation, Request};
use crate::error::ApiError;
use crate::obj;

/// The annotations that mark a StorageClass as the default (the beta one still counts).
const DEFAULT_ANNOTATIONS: &[&str] = &[
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

pub struct DefaultStorageClass {
    lookup: Lookup,
}

impl DefaultStorageClass {
    pub(crate) fn new(lookup: Lookup) -> Self {
        DefaultStorageClass { lookup }
    }
}

/// Whether a StorageClass is marked as the default.
pub fn is_default_class(sc: &Value) -> bool {
    obj::meta(sc)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .is_some_and(|a| {
            DEFAULT_ANNOTATIONS
                .iter()
                .any(|k| a.get(*k).and_then(Value::as_str) == Some("true"))
        })
}

/// The default class among `classes`: the newest when several are marked (as
/// Kubernetes ≥ 1.28 picks), by name on a tie.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            obj::meta_str(a, "creationTimestamp")
                .cmp(obj::meta_str(b, "creationTimestamp"))
                .then_with(|| obj::name(b).cmp(obj::name(a)))
        })
}

impl Admission for DefaultStorageClass {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(pvc) = obj else { return Ok(()) };
            if !(req.res.group.is_empty()
                && req.res.plural == "persistentvolumeclaims"
                && req.sub.is_none()
                && req.op == Operation::Create)
            {
                return Ok(());
            }
            if obj::at(pvc, "spec.storageClassName").is_some_and(|v| !v.is_null()) {
                return Ok(());
            }
            let classes = self
                .lookup
                .list("storage.k8s.io", "storageclasses", None)
                .await?;
            if let Some(c) = default_class(&classes) {
                obj::set_at(pvc, "spec.storageClassName", json!(obj::name(c)));
            }
            Ok(())
        })
    }
}
