//! Reads the plugins need (ServiceAccounts, PriorityClasses, RuntimeClasses,
//! StorageClasses, LimitRanges, ResourceQuotas). Like kube-apiserver's plugins, which
//! read their informers' caches, they answer from objects followed with a watch, so a pod
//! create costs no extra store round trip; a miss (an object created a moment ago) is read
//! from the store, and until a cache has listed once every read goes to the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::error::{from_store, ApiError, Subject};
use crate::obj;

/// The resources the plugins read, by (group, plural).
const FOLLOWED: &[(&str, &str)] = &[
    ("", "serviceaccounts"),
    ("", "limitranges"),
    ("", "resourcequotas"),
    ("", "networks"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("storage.k8s.io", "storageclasses"),
];

/// One followed resource: store key → object.
#[derive(Default)]
struct Cache {
    objects: RwLock<HashMap<String, Value>>,
    synced: AtomicBool,
    /// The keys it holds: every key under this prefix.
    prefix: String,
}

/// Object reads for admission plugins.
#[derive(Clone)]
pub(crate) struct Lookup {
    store: Arc<dyn h8s_store::Store>,
    caches: Arc<HashMap<(&'static str, &'static str), Arc<Cache>>>,
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
    /// Reads straight from the store, without caches (tests).
    #[cfg(test)]
    pub fn new(store: Arc<dyn h8s_store::Store>) -> Self {
        Lookup {
            store,
            caches: Arc::default(),
        }
    }

    /// Reads from caches kept by watches, which end when `shutdown` turns true.
    pub fn followed(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self::following(store, shutdown, FOLLOWED)
    }

    /// Reads `which` (group, plural) from caches kept by watches, until `shutdown`.
    pub fn following(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        which: &[(&'static str, &'static str)],
    ) -> Self {
        Self::following_in(store, shutdown, which, None)
    }

    /// [`Lookup::following`] of one namespace's objects (`Some`), or all (`None`); reads
    /// of other namespaces go to the store.
    pub fn following_in(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        which: &[(&'static str, &'static str)],
        namespace: Option<&str>,
    ) -> Self {
        let mut caches = HashMap::new();
        for (group, plural) in which {
            let Ok(r) = resource(group, plural) else {
                continue;
            };
            let prefix = obj::prefix(r, namespace.filter(|_| r.namespaced));
            let cache = Arc::new(Cache {
                prefix: prefix.clone(),
                ..Default::default()
            });
            tokio::spawn(follow(
                store.clone(),
                prefix,
                cache.clone(),
                shutdown.clone(),
            ));
            caches.insert((*group, *plural), cache);
        }
        Lookup {
            store,
            caches: Arc::new(caches),
        }
    }

    fn cache(&self, group: &str, plural: &str) -> Option<&Cache> {
        self.caches
            .iter()
            .find(|((g, p), _)| *g == group && *p == plural)
            .map(|(_, c)| c.as_ref())
            .filter(|c| c.synced.load(Ordering::Acquire))
    }

    /// Whether the cache of (group, plural) has listed (reads are served from it).
    #[cfg(test)]
    pub fn synced(&self, group: &str, plural: &str) -> bool {
        self.cache(group, plural).is_some()
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
        let key = obj::key(r, ns, name);
        if let Some(c) = self
            .cache(group, plural)
            .filter(|c| key.starts_with(&c.prefix))
        {
            let hit = c
                .objects
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            if hit.is_some() {
                return Ok(hit);
            }
        }
        let s = Subject {
            group,
            resource: plural,
            name,
        };
        match self.store.get(&key).await.map_err(|e| from_store(e, &s))? {
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
        let prefix = obj::prefix(r, ns);
        if let Some(c) = self
            .cache(group, plural)
            .filter(|c| prefix.starts_with(&c.prefix))
        {
            let objects = c.objects.read().unwrap_or_else(|e| e.into_inner());
            let mut out: Vec<(&String, &Value)> = objects
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect();
            out.sort_by(|a, b| a.0.cmp(b.0));
            return Ok(out.into_iter().map(|(_, v)| v.clone()).collect());
        }
        let listed = self
            .store
            .list(&prefix, Default::default())
            .await
            .map_err(|e| from_store(e, &Subject::default()))?;
        listed.items.iter().map(obj::decode).collect()
    }
}

/// Keeps `cache` equal to the objects under `prefix`: list, then watch from the list's
/// revision; on any error, forget (reads go to the store) and start over.
async fn follow(
    store: Arc<dyn h8s_store::Store>,
    prefix: String,
    cache: Arc<Cache>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let run = async {
        loop {
            if let Ok(listed) = store.list(&prefix, Default::default()).await {
                if let Ok(mut w) = store.watch(&prefix, listed.revision).await {
                    {
                        let mut m = cache.objects.write().unwrap_or_else(|e| e.into_inner());
                        m.clear();
                        for kv in &listed.items {
                            if let Ok(o) = obj::decode(kv) {
                                m.insert(kv.key.clone(), o);
                            }
                        }
                    }
                    cache.synced.store(true, Ordering::Release);
                    while let Some(Ok(ev)) = w.next().await {
                        let mut m = cache.objects.write().unwrap_or_else(|e| e.into_inner());
                        match ev {
                            h8s_store::Event::Put { kv, .. } => match obj::decode(&kv) {
                                Ok(o) => {
                                    m.insert(kv.key.clone(), o);
                                }
                                Err(_) => {
                                    m.remove(&kv.key);
                                }
                            },
                            h8s_store::Event::Delete { prev, .. } => {
                                m.remove(&prev.key);
                            }
                        }
                    }
                }
            }
            cache.synced.store(false, Ordering::Release);
            cache
                .objects
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn followed_reads_see_writes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let l = Lookup::followed(store.clone(), shutdown);
        let r = resource("scheduling.k8s.io", "priorityclasses").unwrap();
        let put = |name: &str, v: i64| {
            let o = json!({"metadata": {"name": name}, "value": v});
            (obj::key(r, None, name), obj::encode(&o))
        };
        let (k, b) = put("a", 1);
        store.create(&k, b).await.unwrap();
        // Read at once: a miss of the cache is read from the store.
        let a = l
            .get("scheduling.k8s.io", "priorityclasses", None, "a")
            .await
            .unwrap();
        assert_eq!(a.unwrap()["value"], 1);
        let synced = || l.cache("scheduling.k8s.io", "priorityclasses").is_some();
        // Waits are long: CI runs this beside the whole suite on two cores.
        for _ in 0..2000 {
            if synced() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(synced());
        let (k2, b2) = put("b", 2);
        store.create(&k2, b2).await.unwrap();
        let mut n = 0;
        for _ in 0..2000 {
            n = l
                .list("scheduling.k8s.io", "priorityclasses", None)
                .await
                .unwrap()
                .len();
            if n == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n, 2);
        store.delete(&k, None).await.unwrap();
        let mut gone = false;
        for _ in 0..2000 {
            if l.get("scheduling.k8s.io", "priorityclasses", None, "a")
                .await
                .unwrap()
                .is_none()
            {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone);
        let _ = stop.send(true);
    }
}
