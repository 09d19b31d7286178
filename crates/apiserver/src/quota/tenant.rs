//! The tenant-wide quota: `Tenant.spec.quota.hard` against `Tenant.status.used`, for
//! writes in any namespace labelled `tenancy.h8s.io/tenant=<tenant>`. The same evaluator
//! as ResourceQuotas (unscoped); charged at admission with a compare-and-swap write of
//! the Tenant, recounted by the controllers' tenant quota controller.

use std::sync::Arc;

use h8s_types::quota::Evaluator;
use serde_json::Value;

use super::resourcequota::{usage_at, Target, View};
use crate::admission::Lookup;
use crate::error::{from_store, ApiError, Subject};
use crate::obj;
use crate::tenancy::{Owned, TenantIndex};

const GROUP: &str = h8s_types::tenancy::GROUP;

/// The store key of a Tenant.
pub(crate) fn key(name: &str) -> Option<String> {
    h8s_types::resources::find(GROUP, h8s_types::tenancy::VERSION, "tenants")
        .map(|r| obj::key(r, None, name))
}

fn has_quota(t: &Value) -> bool {
    t.pointer("/spec/quota/hard")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

/// Tenants' quotas: which namespace is whose (the tenant index), and the Tenants (a
/// watched cache for the question "has it a quota?", the store for charging).
pub(crate) struct Tenants {
    store: Arc<dyn h8s_store::Store>,
    index: Arc<TenantIndex>,
    lookup: Lookup,
}

impl Tenants {
    pub(crate) fn new(
        store: Arc<dyn h8s_store::Store>,
        index: Arc<TenantIndex>,
        lookup: Lookup,
    ) -> Self {
        Tenants {
            store,
            index,
            lookup,
        }
    }

    /// The tenant owning namespace `ns`, when it has a quota that `ev` counts for.
    pub(crate) async fn with_quota(
        &self,
        ns: &str,
        ev: &Evaluator,
    ) -> Result<Option<String>, ApiError> {
        let Some(t) = self.index.owner(Owned::Namespace, ns) else {
            return Ok(None);
        };
        let tenant = self.lookup.get(GROUP, "tenants", None, &t).await?;
        let tracks = tenant.is_some_and(|o| {
            !ev.matching(usage_at(&o, "/spec/quota/hard").names())
                .is_empty()
        });
        Ok(tracks.then_some(t))
    }

    /// A Tenant's quota as stored now (`None`: no such tenant, or no quota).
    pub(crate) async fn read(&self, name: &str) -> Result<Option<View>, ApiError> {
        let key = key(name).ok_or_else(|| ApiError::internal("tenants are not served"))?;
        let s = Subject {
            group: GROUP,
            resource: "tenants",
            name,
        };
        let Some(kv) = self.store.get(&key).await.map_err(|e| from_store(e, &s))? else {
            return Ok(None);
        };
        let o = obj::decode(&kv)?;
        if !has_quota(&o) {
            return Ok(None);
        }
        Ok(Some(View {
            target: Target::Tenant(name.to_string()),
            label: format!("tenant/{name}"),
            spec: Default::default(),
            hard: usage_at(&o, "/spec/quota/hard"),
            used: usage_at(&o, "/status/used"),
            obj: o,
            rev: kv.mod_revision,
        }))
    }
}
