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

/// The label naming a Namespace's (and an h8s volume's) tenant.
const TENANT_LABEL: &str = "tenancy.h8s.io/tenant";

/// h8s' `cinder:` volumes (the seeds' inline volume naming an h8s volume, a
/// PersistentVolume, by id): in a tenant's namespace a pod may name only volumes labelled
/// with the same tenant (`tenancy.h8s.io/tenant`). A volume of another tenant and one that
/// does not exist are refused alike (403), so ids of other tenants' volumes cannot be probed.
/// Namespaces without a tenant (the cluster's own) may name any volume.
pub struct CinderVolumeTenant {
    lookup: Lookup,
}

impl CinderVolumeTenant {
    pub(crate) fn new(lookup: Lookup) -> Self {
        CinderVolumeTenant { lookup }
    }
}

fn label<'v>(o: &'v Value, key: &str) -> Option<&'v str> {
    obj::meta(o)
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

impl Admission for CinderVolumeTenant {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(pod) = obj else { return Ok(()) };
            if !(req.res.group.is_empty()
                && req.res.plural == "pods"
                && req.sub.is_none()
                && req.op == Operation::Create)
            {
                return Ok(());
            }
            let ids: Vec<String> = obj::at(pod, "spec.volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.pointer("/cinder/volumeID").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            let ns = self
                .lookup
                .get("", "namespaces", None, req.namespace)
                .await?;
            let Some(tenant) = ns.as_ref().and_then(|n| label(n, TENANT_LABEL)) else {
                return Ok(());
            };
            for id in ids {
                let pv = self.lookup.get("", "persistentvolumes", None, &id).await?;
                if pv.as_ref().and_then(|p| label(p, TENANT_LABEL)) != Some(tenant) {
                    let s = crate::error::Subject {
                        group: "",
                        resource: "pods",
                        name: req.name,
                    };
                    return Err(ApiError::forbidden_about(
                        &s,
                        &format!("cinder volume {id:?} is not a volume of tenant {tenant:?}"),
                    ));
                }
            }
            Ok(())
        })
    }
}
