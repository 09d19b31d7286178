//! The watch cache: the conformance suite through it, and its fan-out behaviour.

mod conformance;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use h8s_store::{Embedded, Error, Event, Store, WatchCache, WatchCacheOptions};

async fn fresh() -> (conformance::S, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("store.redb")).unwrap());
    (WatchCache::new(s).await.unwrap(), "/t".to_owned(), dir)
}

conformance_tests!(fresh(), h8s_store::DEFAULT_MAX_VALUE_SIZE, 20_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_see_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
    inner
        .create("/warm", Bytes::from_static(b"w"))
        .await
        .unwrap();
    let cache = WatchCache::new(inner.clone()).await.unwrap();
    let start = cache.revision().await.unwrap();
    let n_watchers = 1000;
    let n_events = 200;
    let mut tasks = Vec::new();
    for i in 0..n_watchers {
        // Half watch everything under /pods/, half one namespace.
        let prefix = if i % 2 == 0 { "/pods/" } else { "/pods/ns1/" };
        let mut w = cache.watch(prefix, start).await.unwrap();
        let want = if i % 2 == 0 { n_events } else { n_events / 2 };
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            while revs.len() < want {
                revs.push(conformance::next(&mut w).await.unwrap().revision());
            }
            revs
        }));
    }
    assert_eq!(cache.watchers(), n_watchers);
    let t0 = Instant::now();
    let mut all = Vec::new();
    let mut ns1 = Vec::new();
    for i in 0..n_events {
        let ns = if i % 2 == 0 { "ns1" } else { "ns2" };
        let kv = cache
            .create(&format!("/pods/{ns}/p{i}"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        all.push(kv.mod_revision);
        if ns == "ns1" {
            ns1.push(kv.mod_revision);
        }
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap();
        assert_eq!(
            got,
            if i % 2 == 0 { &all } else { &ns1 }.clone(),
            "watcher {i}"
        );
    }
    eprintln!(
        "1000 watchers x {n_events} events delivered in {:?}",
        t0.elapsed()
    );
    // Only one watch reached the backend: the cache's.
    drop(cache);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_the_ring_overtakes_gets_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
    inner
        .create("/warm", Bytes::from_static(b"w"))
        .await
        .unwrap();
    let cache = WatchCache::with_options(
        inner.clone(),
        WatchCacheOptions {
            max_events: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut slow = cache.watch("/k/", 0).await.unwrap();
    let mut last = 0;
    for i in 0..50 {
        last = cache
            .create(&format!("/k/{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap()
            .mod_revision;
    }
    // Let the pump catch up.
    let t0 = Instant::now();
    loop {
        let mut probe = cache.watch("/k/", last - 1).await.unwrap();
        if conformance::next(&mut probe).await.is_ok() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    match conformance::next(&mut slow).await {
        Err(Error::Compacted { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(slow.next().await.is_none(), "stream ends after the error");
    // An old revision falls back to the backend's own history, which still has it.
    let mut old = cache.watch("/k/", 2).await.unwrap();
    assert_eq!(conformance::next(&mut old).await.unwrap().revision(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_cache_ends_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
    let cache = WatchCache::new(inner.clone()).await.unwrap();
    let mut w = cache.watch("/", 0).await.unwrap();
    cache.create("/a", Bytes::from_static(b"1")).await.unwrap();
    assert!(matches!(
        conformance::next(&mut w).await.unwrap(),
        Event::Put { .. }
    ));
    drop(cache);
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_progresses_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
    let cache = WatchCache::with_options(
        inner,
        WatchCacheOptions {
            max_events: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    conformance::progress_outruns_churn(cache, "/p").await;
}
