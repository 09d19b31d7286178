//! Reads the plugins need (ServiceAccounts, PriorityClasses, RuntimeClasses,
//! StorageClasses, LimitRanges, ResourceQuotas), straight from the store as
//! kube-apiserver's plugins read their informers' caches.

use std::sync::Arc;

use serde_json::Value;

use crate::error::{from_store, ApiError, Subject};
use crate::obj;

/// Object reads for admission plugins.
#[derive(Clone)]
pub(crate) struct Lookup {
    store: Arc<dyn h8s_store::Store>,
}

fn resource(group: &str, plural: &str) -> Result<&'static h8s_types::Resource, ApiError> {
    let version = h8s_types::resources::groups()
        .iter()
        .find(|g| g.name == group)
        .and_then(|g| g.versions.first())
        .copied()
        .unwrap_or("v1");
    h8s_types::resources::find(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

impl Lookup {
    pub fn new(store: Arc<dyn h8s_store::Store>) -> Self {
        Lookup { store }
    }

    /// One object, `None` when it does not exist.
    pub async fn get(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let r = resource(group, plural)?;
        let s = Subject {
            group,
            resource: plural,
            name,
        };
        match self
            .store
            .get(&obj::key(r, ns, name))
            .await
            .map_err(|e| from_store(e, &s))?
        {
            Some(kv) => Ok(Some(obj::decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every object of a resource (in one namespace for namespaced ones).
    pub async fn list(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let r = resource(group, plural)?;
        let listed = self
            .store
            .list(&obj::prefix(r, ns), Default::default())
            .await
            .map_err(|e| from_store(e, &Subject::default()))?;
        listed.items.iter().map(obj::decode).collect()
    }
}
