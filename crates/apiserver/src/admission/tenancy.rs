//! The tenancy admission plugin, the object-level half of the tenant guard
//! (`crate::tenancy`):
//!
//! - A Namespace or PersistentVolume created by a tenant user gets the
//!   `tenancy.h8s.io/tenant=<tenant>` label; a Network gets `spec.tenantID` (a different
//!   value sent by the user is a 422). Only cluster administrators may set the label on
//!   an object that has none; once set nobody changes it (422 `field is immutable`), and a
//!   write that drops it gets it back.
//! - `Namespace.spec.network` must name a Network of the namespace's tenant: a missing
//!   Network and another tenant's answer the same 422 `Not found`.
//! - A PersistentVolumeClaim of a tenant's namespace may only name (`spec.volumeName`) a
//!   PersistentVolume of that tenant.
//! - Defence in depth behind the authorizer: a tenant user's update or delete of an owned
//!   object of another tenant is a 404, as for a missing object.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::{Admission, Operation, Request};
use crate::error::{ApiError, Cause, Subject};
use crate::obj;
use crate::tenancy::{
    confined_tenant, label_tenant, Owned, TenantIndex, MASTERS_GROUP, TENANT_LABEL,
};

/// The tenancy plugin (see the module docs).
pub struct Tenancy {
    store: Arc<dyn h8s_store::Store>,
    index: Arc<TenantIndex>,
}

impl Tenancy {
    pub fn new(store: Arc<dyn h8s_store::Store>, index: Arc<TenantIndex>) -> Self {
        Tenancy { store, index }
    }

    /// Reads an owned object's tenant from the store (`None`: missing or nobody's).
    async fn tenant_in_store(&self, kind: Owned, name: &str) -> Result<Option<String>, ApiError> {
        let Some(res) = kind.resource() else {
            return Ok(None);
        };
        let subject = Subject {
            group: "",
            resource: kind.plural(),
            name,
        };
        let kv = self
            .store
            .get(&obj::key(res, None, name))
            .await
            .map_err(|e| crate::error::from_store(e, &subject))?;
        Ok(match kv {
            Some(kv) => kind.tenant_of(&obj::decode(&kv)?).map(str::to_string),
            None => None,
        })
    }
}

fn field_error(req: &Request<'_>, reason: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        req.res.kind,
        req.res.group,
        req.name,
        vec![Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        }],
    )
}

fn labels_mut(o: &mut Value) -> &mut serde_json::Map<String, Value> {
    let m = obj::meta_mut(o);
    let l = m.entry("labels").or_insert_with(|| json!({}));
    if !l.is_object() {
        *l = json!({});
    }
    l.as_object_mut().expect("labels are an object")
}

/// Where an owned kind records its tenant, for messages.
fn tenant_field(kind: Owned) -> String {
    match kind {
        Owned::Network => "spec.tenantID".into(),
        _ => format!("metadata.labels[{TENANT_LABEL}]"),
    }
}

fn set_tenant(kind: Owned, o: &mut Value, tenant: &str) {
    match kind {
        Owned::Network => obj::set_at(o, "spec.tenantID", json!(tenant)),
        _ => {
            labels_mut(o).insert(TENANT_LABEL.into(), json!(tenant));
        }
    }
}

impl Tenancy {
    /// Stamps, keeps and checks the tenant of an owned object.
    fn record_tenant(&self, req: &Request<'_>, kind: Owned, o: &mut Value) -> Result<(), ApiError> {
        let caller = confined_tenant(req.user);
        let admin = req.user.groups.iter().any(|g| g == MASTERS_GROUP);
        let sent = kind.tenant_of(o).map(str::to_string);
        let field = tenant_field(kind);
        match req.op {
            Operation::Create => {
                if let Some(t) = caller {
                    if sent.as_deref().is_some_and(|s| s != t) {
                        return Err(field_error(
                            req,
                            "FieldValueInvalid",
                            &field,
                            format!(
                                "Invalid value: {:?}: must be the caller's tenant",
                                sent.unwrap_or_default()
                            ),
                        ));
                    }
                    set_tenant(kind, o, t);
                    if !req.dry_run {
                        self.index.note_pending(kind, req.name, t);
                    }
                } else if sent.is_some() && !admin && kind != Owned::Network {
                    return Err(field_error(
                        req,
                        "FieldValueForbidden",
                        &field,
                        "Forbidden: set by the server".into(),
                    ));
                }
            }
            Operation::Update => {
                let old = req.old.and_then(|p| kind.tenant_of(p)).map(str::to_string);
                match (old, sent) {
                    (Some(old), None) => set_tenant(kind, o, &old),
                    (Some(old), Some(new)) if old != new => {
                        return Err(field_error(
                            req,
                            "FieldValueInvalid",
                            &field,
                            format!("Invalid value: {new:?}: field is immutable"),
                        ))
                    }
                    (None, Some(_)) if !admin => {
                        return Err(field_error(
                            req,
                            "FieldValueForbidden",
                            &field,
                            "Forbidden: set by the server".into(),
                        ))
                    }
                    _ => {}
                }
            }
            Operation::Delete => {}
        }
        Ok(())
    }

    /// `Namespace.spec.network` must name a Network of the namespace's tenant.
    async fn check_network(&self, req: &Request<'_>, o: &Value) -> Result<(), ApiError> {
        let Some(net) = o
            .pointer("/spec/network")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return Ok(());
        };
        let Some(tenant) = label_tenant(o) else {
            return Ok(());
        };
        if req.op == Operation::Update
            && req.old.and_then(|p| p.pointer("/spec/network")) == o.pointer("/spec/network")
        {
            return Ok(());
        }
        let owner = match self.index.owner(Owned::Network, net) {
            Some(t) => Some(t),
            None => self.tenant_in_store(Owned::Network, net).await?,
        };
        if owner.as_deref() != Some(tenant) {
            return Err(field_error(
                req,
                "FieldValueNotFound",
                "spec.network",
                format!("Not found: {net:?}"),
            ));
        }
        Ok(())
    }

    /// A tenant namespace's claim may only name the tenant's volumes.
    async fn check_claim(&self, req: &Request<'_>, o: &Value) -> Result<(), ApiError> {
        let Some(pv) = o
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return Ok(());
        };
        let ns_tenant = match confined_tenant(req.user) {
            Some(t) => Some(t.to_string()),
            None => self.index.owner(Owned::Namespace, req.namespace),
        };
        let Some(tenant) = ns_tenant else {
            return Ok(());
        };
        if req.op == Operation::Update
            && req.old.and_then(|p| p.pointer("/spec/volumeName")) == o.pointer("/spec/volumeName")
        {
            return Ok(());
        }
        let owner = match self.index.owner(Owned::PersistentVolume, pv) {
            Some(t) => Some(t),
            None => self.tenant_in_store(Owned::PersistentVolume, pv).await?,
        };
        if owner.as_deref() != Some(tenant.as_str()) {
            return Err(field_error(
                req,
                "FieldValueNotFound",
                "spec.volumeName",
                format!("Not found: {pv:?}"),
            ));
        }
        Ok(())
    }
}

impl Admission for Tenancy {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if let Some(kind) = Owned::of(req.res.group, req.res.plural) {
                // Behind the authorizer: another tenant's object is "not found".
                if let (Some(t), Some(old)) = (confined_tenant(req.user), req.old) {
                    if kind.tenant_of(old) != Some(t) {
                        return Err(ApiError::not_found(&Subject {
                            group: "",
                            resource: kind.plural(),
                            name: req.name,
                        }));
                    }
                }
                let Some(o) = obj else {
                    return Ok(());
                };
                self.record_tenant(req, kind, o)?;
                if kind == Owned::Namespace {
                    self.check_network(req, o).await?;
                }
                return Ok(());
            }
            if req.res.group.is_empty()
                && req.res.plural == "persistentvolumeclaims"
                && req.sub.is_none()
            {
                if let Some(o) = obj {
                    self.check_claim(req, o).await?;
                }
            }
            Ok(())
        })
    }
}
