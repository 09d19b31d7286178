//! Keeps the [`Registry`](super::Registry) from a watch on CustomResourceDefinitions in
//! the store (every server of a cluster runs one, so all serve the same resources), and
//! does what kube-apiserver's apiextensions controllers do:
//!
//! - naming: `NamesAccepted` (a kind, singular, list kind or short name already used by
//!   another definition of the group is a conflict) and `status.acceptedNames`;
//! - establishing: `Established` once this server serves the definition;
//! - finalizing: a definition being deleted stops taking new objects, its objects are
//!   deleted (all versions, all namespaces), then its cleanup finalizer goes and, when no
//!   other finalizer is left, the definition itself.
//!
//! Status writes are compare-and-swap on the revision read; servers that race compute the
//! same status and the loser's write is simply dropped (the watch brings the winner's).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use h8s_store::KeyValue;
use h8s_types::crd::{Definition, CLEANUP_FINALIZER};
use serde_json::{json, Value};

use super::Registry;
use crate::obj;
use crate::state::Api;

/// The wait before listing again after the store failed.
const RETRY: Duration = Duration::from_secs(1);
/// Objects deleted per store round trip while finalizing a definition.
const CLEANUP_BATCH: usize = 500;

fn crd_prefix() -> String {
    "/registry/apiextensions.k8s.io/customresourcedefinitions/".into()
}

/// Follows definitions until the server shuts down.
pub(crate) async fn run(api: Arc<Api>) {
    let prefix = crd_prefix();
    let mut shutdown = api.shutdown.clone();
    loop {
        let listed = match api.store.list(&prefix, Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "crd controller: listing definitions failed");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        // Definitions gone while the watch was down.
        let names: Vec<String> = listed
            .items
            .iter()
            .filter_map(|kv| obj::decode(kv).ok())
            .map(|o| obj::name(&o).to_string())
            .collect();
        for d in api.crds.others("") {
            if !names.contains(&d.name) {
                api.crds.remove(&d.name);
            }
        }
        // Accepted names first, so a definition that held its names keeps them.
        let mut items = listed.items.clone();
        items.sort_by_key(|kv| {
            obj::decode(kv)
                .ok()
                .map(|o| !condition_true(&o, "NamesAccepted"))
                .unwrap_or(true)
        });
        for kv in &items {
            reconcile(&api, kv).await;
        }
        let mut watch = match api.store.watch(&prefix, listed.revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "crd controller: watching definitions failed");
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                ev = watch.next() => match ev {
                    Some(Ok(h8s_store::Event::Put { kv, .. })) => reconcile(&api, &kv).await,
                    Some(Ok(h8s_store::Event::Delete { prev, .. })) => {
                        if let Ok(o) = obj::decode(&prev) {
                            api.crds.remove(obj::name(&o));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "crd controller: watch ended; listing again");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

fn condition_true(o: &Value, ty: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// A name of `d` that another served definition of the group already uses.
fn conflict(d: &Definition, reg: &Registry) -> Option<(&'static str, String)> {
    for o in reg.others(&d.name) {
        if o.group != d.group {
            continue;
        }
        let n = &o.names;
        if n.plural == d.names.plural {
            return Some((
                "PluralConflict",
                format!("{:?} is already in use", d.names.plural),
            ));
        }
        if [&n.singular, &n.plural].contains(&&d.names.singular) {
            return Some((
                "SingularConflict",
                format!("{:?} is already in use", d.names.singular),
            ));
        }
        if let Some(s) = d
            .names
            .short_names
            .iter()
            .find(|s| n.short_names.contains(s) || **s == n.plural || **s == n.singular)
        {
            return Some(("ShortNamesConflict", format!("{s:?} is already in use")));
        }
        if n.kind == d.names.kind || n.list_kind == d.names.kind {
            return Some((
                "KindConflict",
                format!("{:?} is already in use", d.names.kind),
            ));
        }
        if n.list_kind == d.names.list_kind || n.kind == d.names.list_kind {
            return Some((
                "ListKindConflict",
                format!("{:?} is already in use", d.names.list_kind),
            ));
        }
    }
    None
}

/// Sets condition `ty` (keeping its transition time when its status does not change).
fn set_condition(status: &mut Value, ty: &str, st: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    let now = crate::util::now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(c) => {
            if c["status"] != st {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(st);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(json!({
            "type": ty, "status": st, "lastTransitionTime": now,
            "reason": reason, "message": message,
        })),
    }
}

async fn reconcile(api: &Arc<Api>, kv: &KeyValue) {
    let Ok(o) = obj::decode(kv) else {
        return;
    };
    let def = Definition::parse(&o);
    if def.terminating {
        finalize(api, kv, o, def).await;
        return;
    }
    let mut status = o.get("status").cloned().unwrap_or(json!({}));
    let names_json = def.names.to_json();
    let held =
        condition_true(&o, "NamesAccepted") && status.get("acceptedNames") == Some(&names_json);
    let clash = if held {
        None
    } else {
        conflict(&def, &api.crds)
    };
    match clash {
        None => {
            api.crds.put(def.clone());
            status["acceptedNames"] = names_json;
            set_condition(
                &mut status,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            );
            set_condition(
                &mut status,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        }
        Some((reason, msg)) => {
            tracing::info!(crd = %def.name, reason, "custom resource names not accepted");
            // Served names stay as accepted before, if they were.
            if !condition_true(&o, "Established") {
                api.crds.remove(&def.name);
                set_condition(
                    &mut status,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
            set_condition(&mut status, "NamesAccepted", "False", reason, &msg);
        }
    }
    write_status(api, kv, &o, status).await;
}

/// Writes `status` when it differs from what is stored.
async fn write_status(api: &Arc<Api>, kv: &KeyValue, o: &Value, status: Value) {
    if o.get("status") == Some(&status) {
        return;
    }
    let mut new = o.clone();
    new["status"] = status;
    obj::meta_mut(&mut new).remove("resourceVersion");
    match api
        .store
        .update(&kv.key, obj::encode(&new), kv.mod_revision)
        .await
    {
        Ok(_) | Err(h8s_store::Error::Conflict { .. }) | Err(h8s_store::Error::NotFound(_)) => {}
        Err(e) => tracing::warn!(key = %kv.key, error = %e, "crd controller: status write failed"),
    }
}

/// A definition being deleted: stop taking objects, delete them, drop the finalizer.
async fn finalize(api: &Arc<Api>, kv: &KeyValue, o: Value, def: Definition) {
    let fins: Vec<String> = o
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
        if fins.is_empty() {
            // Nothing holds it any more.
            let _ = api.store.delete(&kv.key, Some(kv.mod_revision)).await;
        }
        api.crds.remove(&def.name);
        return;
    }
    // Still served (reads, deletes) but creates are refused while terminating.
    if api.crds.others("").iter().any(|d| d.name == def.name) {
        api.crds.put(def.clone());
    }
    let mut status = o.get("status").cloned().unwrap_or(json!({}));
    set_condition(
        &mut status,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    );
    let prefix = format!("/registry/{}/{}/", def.group, def.names.plural);
    loop {
        let page = match api
            .store
            .list(
                &prefix,
                h8s_store::ListOptions {
                    limit: Some(CLEANUP_BATCH),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(crd = %def.name, error = %e, "crd controller: listing objects to delete failed");
                return;
            }
        };
        if page.items.is_empty() {
            break;
        }
        for item in &page.items {
            match api.store.delete(&item.key, None).await {
                Ok(_) | Err(h8s_store::Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(key = %item.key, error = %e, "crd controller: deleting an object failed");
                    return;
                }
            }
        }
    }
    api.crds.remove(&def.name);
    let mut new = o.clone();
    set_condition(
        &mut status,
        "Terminating",
        "False",
        "InstanceDeletionCompleted",
        "removed all instances",
    );
    new["status"] = status;
    let left: Vec<String> = fins
        .into_iter()
        .filter(|f| f != CLEANUP_FINALIZER)
        .collect();
    obj::meta_mut(&mut new).insert("finalizers".into(), json!(left));
    obj::meta_mut(&mut new).remove("resourceVersion");
    let res = if left.is_empty() {
        api.store
            .delete(&kv.key, Some(kv.mod_revision))
            .await
            .map(|_| ())
    } else {
        api.store
            .update(&kv.key, obj::encode(&new), kv.mod_revision)
            .await
            .map(|_| ())
    };
    match res {
        Ok(()) | Err(h8s_store::Error::Conflict { .. }) | Err(h8s_store::Error::NotFound(_)) => {}
        Err(e) => tracing::warn!(crd = %def.name, error = %e, "crd controller: finalizing failed"),
    }
}
