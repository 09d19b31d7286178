//! What the registry sets up at start: the system PriorityClasses (created through the
//! registry's own create path, so defaults, validation and admission apply), and the
//! Events' time to live.
//!
//! Neither store has per-key leases behind the `Store` trait, so Events expire by a
//! sweeper here: it follows the events prefix with a watch and keeps one queue entry per
//! write, in the store's revision order — which is the order of their deadlines, since
//! every write lives `ttl` from when it was seen. An entry deletes its key only if the key
//! is still at that revision (a newer write re-queued it), and a tick deletes a bounded
//! number of keys. Events found at start expire `ttl` after their newest timestamp.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::obj;
use crate::route::Target;
use crate::state::Api;

/// The most expired Events one tick deletes.
const SWEEP_BATCH: usize = 500;
/// How often the sweeper looks for expired Events (shorter when the TTL is).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The identity the server writes its own objects as.
pub(crate) fn system_user() -> UserInfo {
    UserInfo {
        username: "system:apiserver".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        ..Default::default()
    }
}

/// Creates the system PriorityClasses and the system namespaces' `default`
/// ServiceAccounts if missing, and starts the Events' TTL sweeper (`event_ttl` zero:
/// Events never expire).
pub(crate) async fn start(api: &Arc<Api>, event_ttl: Duration) -> Result<(), ApiError> {
    system_priority_classes(api).await?;
    system_service_accounts(api).await?;
    system_network(api).await?;
    if !event_ttl.is_zero() {
        tokio::spawn(sweep_events(api.clone(), event_ttl));
    }
    Ok(())
}

async fn system_priority_classes(api: &Arc<Api>) -> Result<(), ApiError> {
    let Some(res) = h8s_types::resources::find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(());
    };
    let cx = Ctx::internal(system_user());
    for (name, value) in h8s_types::validation::SYSTEM_PRIORITY_CLASSES {
        let t = Target {
            res,
            ns: None,
            name: Some(name.to_string()),
            sub: None,
            watch_path: false,
            cr: None,
        };
        if api.read(&t, name).await?.is_some() {
            continue;
        }
        let o = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": crate::strategy::system_priority_class_description(name),
        });
        match api.create_object(&cx, &t, o).await {
            Ok(_) => tracing::info!(name, "created the system PriorityClass"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `default` ServiceAccount of each system namespace, so the ServiceAccount
/// admission plugin admits pods there from the first request on (the ServiceAccount
/// controller, an API client started after the server, keeps every other namespace's).
async fn system_service_accounts(api: &Arc<Api>) -> Result<(), ApiError> {
    let Some(res) = h8s_types::resources::find("", "v1", "serviceaccounts") else {
        return Ok(());
    };
    let cx = Ctx::internal(system_user());
    for ns in crate::ns::DEFAULT_NAMESPACES {
        let t = Target {
            res,
            ns: Some(ns.to_string()),
            name: Some("default".into()),
            sub: None,
            watch_path: false,
            cr: None,
        };
        if api.read(&t, "default").await?.is_some() {
            continue;
        }
        let o = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}});
        match api.create_object(&cx, &t, o).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            // A namespace being deleted at start takes no new account.
            Err(e) if e.code == 403 || e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The cluster's system Network ([`h8s_types::SYSTEM_PODS_NETWORK`], no tenant, subnet
/// [`h8s_types::SYSTEM_PODS_CIDR`]) if missing: `kube-system`'s pods join it, and the API
/// server's host reaches it (the node agent of the server's node gives the host an
/// address on it), so webhooks and aggregated servers can run as pods. The network
/// controller gives it a segment like any Network.
async fn system_network(api: &Arc<Api>) -> Result<(), ApiError> {
    let Some(res) = h8s_types::resources::find("", "v1", "networks") else {
        return Ok(());
    };
    let name = h8s_types::SYSTEM_PODS_NETWORK;
    let t = Target {
        res,
        ns: None,
        name: Some(name.into()),
        sub: None,
        watch_path: false,
        cr: None,
    };
    if api.read(&t, name).await?.is_some() {
        return Ok(());
    }
    let o = json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": name},
        "spec": {"subnets": {"system": {"cidr": h8s_types::SYSTEM_PODS_CIDR}}}});
    match api
        .create_object(&Ctx::internal(system_user()), &t, o)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The newest time an Event records, in seconds since the epoch.
fn last_seen(o: &Value) -> Option<i64> {
    [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| o.pointer(p).and_then(Value::as_str))
    .filter_map(h8s_types::table::parse_time)
    .max()
}

/// Expiry bookkeeping: the queue in revision order and each key's newest revision.
#[derive(Default)]
pub(crate) struct Expiry {
    queue: VecDeque<(Instant, String, i64)>,
    newest: HashMap<String, i64>,
}

impl Expiry {
    /// Records a write of `key` at `rev` that expires at `deadline`.
    pub(crate) fn put(&mut self, key: String, rev: i64, deadline: Instant) {
        self.newest.insert(key.clone(), rev);
        self.queue.push_back((deadline, key, rev));
    }

    /// Forgets a deleted key (its queued entries are skipped).
    pub(crate) fn forget(&mut self, key: &str) {
        self.newest.remove(key);
    }

    /// Up to `max` (key, revision) pairs that expired by `now` and are still current.
    pub(crate) fn due(&mut self, now: Instant, max: usize) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.queue.front() {
                Some((deadline, _, _)) if *deadline <= now => {}
                _ => break,
            }
            let Some((_, key, rev)) = self.queue.pop_front() else {
                break;
            };
            if self.newest.get(&key) == Some(&rev) {
                self.newest.remove(&key);
                out.push((key, rev));
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.newest.len()
    }
}

async fn sweep_events(api: Arc<Api>, ttl: Duration) {
    let Some(res) = h8s_types::resources::find("", "v1", "events") else {
        return;
    };
    let prefix = obj::prefix(res, None);
    let mut shutdown = api.shutdown.clone();
    let every = SWEEP_EVERY.min(ttl);
    loop {
        // List, then follow from the list's revision; any error starts over.
        let listed = match api.store.list(&prefix, Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event expiry: listing events failed");
                tokio::select! {
                    _ = tokio::time::sleep(every) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let now = Instant::now();
        let now_secs = obj::now_secs();
        let mut initial: Vec<(Instant, String, i64)> = listed
            .items
            .iter()
            .map(|kv| {
                let age = obj::decode(kv)
                    .ok()
                    .and_then(|o| last_seen(&o))
                    .map_or(0, |t| (now_secs - t).max(0) as u64);
                let left = ttl.saturating_sub(Duration::from_secs(age));
                (now + left, kv.key.clone(), kv.mod_revision)
            })
            .collect();
        initial.sort();
        let mut exp = Expiry::default();
        for (d, k, r) in initial {
            exp.put(k, r, d);
        }
        let mut watch = match api.store.watch(&prefix, listed.revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "event expiry: watching events failed");
                continue;
            }
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                ev = watch.next() => match ev {
                    Some(Ok(h8s_store::Event::Put { kv, .. })) => {
                        exp.put(kv.key.clone(), kv.mod_revision, Instant::now() + ttl);
                    }
                    Some(Ok(h8s_store::Event::Delete { prev, .. })) => exp.forget(&prev.key),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "event expiry: watch ended; listing again");
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let due = exp.due(Instant::now(), SWEEP_BATCH);
                    for (key, rev) in due {
                        match api.store.delete(&key, Some(rev)).await {
                            Ok(_) | Err(h8s_store::Error::NotFound(_))
                            | Err(h8s_store::Error::Conflict { .. }) => {}
                            Err(e) => tracing::warn!(key, error = %e, "event expiry: delete failed"),
                        }
                    }
                    tracing::trace!(tracked = exp.len(), "event expiry tick");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_revisions() {
        let t0 = Instant::now();
        let mut e = Expiry::default();
        e.put("/a".into(), 1, t0);
        e.put("/b".into(), 2, t0 + Duration::from_secs(5));
        // /a written again: its first entry is stale.
        e.put("/a".into(), 3, t0 + Duration::from_secs(10));
        assert!(e.due(t0, 10).is_empty());
        assert_eq!(
            e.due(t0 + Duration::from_secs(6), 10),
            vec![("/b".to_string(), 2)]
        );
        e.put("/c".into(), 4, t0 + Duration::from_secs(11));
        e.forget("/c");
        assert_eq!(
            e.due(t0 + Duration::from_secs(20), 1),
            vec![("/a".to_string(), 3)]
        );
        assert!(e.due(t0 + Duration::from_secs(20), 10).is_empty());
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn last_seen_is_the_newest_timestamp() {
        let o = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2026-01-01T00:10:00Z"});
        let base = h8s_types::table::parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(last_seen(&o), Some(base + 600));
        assert_eq!(last_seen(&json!({})), None);
    }
}
