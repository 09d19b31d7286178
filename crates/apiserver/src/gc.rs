//! Cascading deletion by `ownerReferences`, for namespaced owners: what kube-controller-
//! manager's garbage collector does after a delete, run here until a GC controller exists.
//!
//! - Background (the default): the owner goes at once; then every dependent in its namespace
//!   loses its reference to the owner and, when no other owner of it still exists, is
//!   deleted too (cascading further).
//! - Foreground: the owner stays, with `deletionTimestamp` and the `foregroundDeletion`
//!   finalizer, until its dependents are gone; then it goes.
//! - Orphan: dependents only lose their reference to the owner.

use std::sync::Arc;
use std::time::Duration;

use h8s_store::ListOptions;
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::{from_store, ApiError, Subject};
use crate::obj;

pub const FOREGROUND: &str = "foregroundDeletion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

fn owner_uids(o: &Value) -> Vec<String> {
    obj::meta(o)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every object of a namespace, as (key, mod revision, object).
async fn namespace_objects(api: &Api, ns: &str) -> Result<Vec<(String, i64, Value)>, ApiError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in h8s_types::resources::all() {
        if !r.namespaced || !r.is_stored() {
            continue;
        }
        let prefix = obj::prefix(r, Some(ns));
        if !seen.insert(prefix.clone()) {
            continue;
        }
        let list = api
            .store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| from_store(e, &Subject::default()))?;
        for kv in list.items {
            let o = obj::decode(&kv)?;
            out.push((kv.key.clone(), kv.mod_revision, o));
        }
    }
    Ok(out)
}

/// One pass over the dependents of `owner_uid` in `ns`; returns how many remain.
async fn settle_dependents(
    api: &Arc<Api>,
    ns: &str,
    owner_uid: &str,
    policy: Policy,
) -> Result<usize, ApiError> {
    let objects = namespace_objects(api, ns).await?;
    let live: std::collections::HashSet<String> = objects
        .iter()
        .map(|(_, _, o)| obj::uid(o).to_string())
        .collect();
    let mut remaining = 0;
    for (key, rev, o) in objects {
        let owners = owner_uids(&o);
        if !owners.iter().any(|u| u == owner_uid) {
            continue;
        }
        remaining += 1;
        let others_alive = owners.iter().any(|u| u != owner_uid && live.contains(u));
        if policy == Policy::Orphan || others_alive {
            let mut n = o.clone();
            if let Some(a) = n
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                a.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            match api.store.update(&key, obj::encode(&n), rev).await {
                Ok(_) => remaining -= 1,
                Err(h8s_store::Error::Conflict { .. }) | Err(h8s_store::Error::NotFound(_)) => {}
                Err(e) => return Err(from_store(e, &Subject::default())),
            }
            continue;
        }
        if !obj::finalizers(&o).is_empty() {
            if !obj::is_deleting(&o) {
                let mut n = o.clone();
                obj::meta_mut(&mut n).insert(
                    "deletionTimestamp".into(),
                    json!(crate::util::now_rfc3339()),
                );
                obj::meta_mut(&mut n).insert("deletionGracePeriodSeconds".into(), json!(0));
                let _ = api.store.update(&key, obj::encode(&n), rev).await;
            }
            continue;
        }
        match api.store.delete(&key, Some(rev)).await {
            Ok(_) => {
                spawn(
                    api.clone(),
                    ns.to_string(),
                    obj::uid(&o).to_string(),
                    Policy::Background,
                    None,
                );
            }
            Err(h8s_store::Error::Conflict { .. }) | Err(h8s_store::Error::NotFound(_)) => {}
            Err(e) => return Err(from_store(e, &Subject::default())),
        }
    }
    Ok(remaining)
}

/// Settles the dependents of a deleted (or foreground-deleting) owner in the background.
/// For Foreground, `owner_key` names the owner to remove once they are gone.
pub fn spawn(
    api: Arc<Api>,
    ns: String,
    owner_uid: String,
    policy: Policy,
    owner_key: Option<String>,
) {
    if ns.is_empty() || owner_uid.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(20);
        loop {
            match settle_dependents(&api, &ns, &owner_uid, policy).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => tracing::warn!(namespace = %ns, error = %e.message, "garbage collection"),
            }
            if *api.shutdown.borrow() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if let Some(key) = owner_key {
            finish_foreground(&api, &key).await;
        }
    });
}

/// Drops the `foregroundDeletion` finalizer; the owner goes when it was the last one.
async fn finish_foreground(api: &Arc<Api>, key: &str) {
    for _ in 0..8 {
        let Ok(Some(kv)) = api.store.get(key).await else {
            return;
        };
        let Ok(mut o) = obj::decode(&kv) else { return };
        let fins: Vec<String> = obj::finalizers(&o)
            .into_iter()
            .filter(|f| f != FOREGROUND)
            .collect();
        let r = if fins.is_empty() {
            api.store
                .delete(key, Some(kv.mod_revision))
                .await
                .map(|_| ())
        } else {
            obj::meta_mut(&mut o).insert("finalizers".into(), json!(fins));
            api.store
                .update(key, obj::encode(&o), kv.mod_revision)
                .await
                .map(|_| ())
        };
        match r {
            Err(h8s_store::Error::Conflict { .. }) => continue,
            _ => return,
        }
    }
}
