//! The store conformance suite: one set of checks every backend must pass.
//!
//! Each check gets a fresh store (or, for etcd, at least a fresh key prefix) and a
//! prefix to write under. The backends' test files (`embedded.rs`, `etcd.rs`) call every
//! check from their own `#[tokio::test]`s through the `conformance_tests!` macro.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use h8s_store::{Error, Event, KeyValue, ListOptions, Revision, Store, WatchStream};

pub type S = Arc<dyn Store>;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Next watch event, failing the test after 10 s.
pub async fn next(w: &mut WatchStream) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10 s")
        .expect("watch stream still open")
}

fn key_of(e: &Event) -> &str {
    match e {
        Event::Put { kv, .. } => &kv.key,
        Event::Delete { prev, .. } => &prev.key,
    }
}

pub async fn crud_and_cas(s: S, p: &str) {
    let k = format!("{p}/a");
    let created = s.create(&k, b("one")).await.unwrap();
    assert_eq!(created.key, k);
    assert_eq!(created.value, b("one"));
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(s.get(&k).await.unwrap(), Some(created.clone()));
    assert!(matches!(
        s.create(&k, b("again")).await,
        Err(Error::AlreadyExists(_))
    ));

    let updated = s.update(&k, b("two"), created.mod_revision).await.unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    match s.update(&k, b("stale"), created.mod_revision).await {
        Err(Error::Conflict {
            expected, found, ..
        }) => {
            assert_eq!(expected, created.mod_revision);
            assert_eq!(found, updated.mod_revision);
        }
        other => panic!("stale update: {other:?}"),
    }
    assert_eq!(s.get(&k).await.unwrap().unwrap().value, b("two"));
    assert!(matches!(
        s.update(&format!("{p}/missing"), b("x"), 1).await,
        Err(Error::NotFound(_))
    ));

    assert!(matches!(
        s.delete(&k, Some(created.mod_revision)).await,
        Err(Error::Conflict { .. })
    ));
    let (gone, rev) = s.delete(&k, Some(updated.mod_revision)).await.unwrap();
    assert_eq!(gone, updated);
    assert!(rev > updated.mod_revision);
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert!(matches!(s.delete(&k, None).await, Err(Error::NotFound(_))));
    assert!(s.revision().await.unwrap() >= rev);

    // A recreated key starts a new life.
    let again = s.create(&k, b("three")).await.unwrap();
    assert!(again.create_revision > rev);
    let (_, _) = s.delete(&k, None).await.unwrap();
}

pub async fn revisions_are_global_and_dense(s: S, p: &str) {
    let before = s.revision().await.unwrap();
    let a = s.create(&format!("{p}/x"), b("1")).await.unwrap();
    let c = s.create(&format!("{p}/y"), b("2")).await.unwrap();
    assert!(a.mod_revision > before);
    assert!(c.mod_revision > a.mod_revision);
    assert_eq!(s.revision().await.unwrap(), c.mod_revision);
    // A failed write does not use a revision.
    let _ = s.create(&format!("{p}/x"), b("dup")).await.unwrap_err();
    let d = s
        .update(&format!("{p}/x"), b("3"), a.mod_revision)
        .await
        .unwrap();
    assert_eq!(d.mod_revision, c.mod_revision + 1);
}

pub async fn list_at_revision(s: S, p: &str) {
    let mut expect_then = BTreeMap::new();
    for i in 0..10 {
        let k = format!("{p}/k{i:02}");
        let kv = s.create(&k, b(&format!("v{i}"))).await.unwrap();
        expect_then.insert(k, kv);
    }
    let then = s.revision().await.unwrap();
    // Change the world: update some, delete some, add some.
    for i in 0..10 {
        let k = format!("{p}/k{i:02}");
        let cur = &expect_then[&k];
        if i % 3 == 0 {
            s.delete(&k, None).await.unwrap();
        } else if i % 3 == 1 {
            s.update(&k, b("changed"), cur.mod_revision).await.unwrap();
        }
    }
    s.create(&format!("{p}/k99"), b("new")).await.unwrap();
    // Deleted and recreated after `then`.
    s.create(&format!("{p}/k00"), b("reborn")).await.unwrap();

    let old = s
        .list(
            &format!("{p}/"),
            ListOptions {
                revision: Some(then),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(old.revision, then);
    assert!(!old.more);
    let got: Vec<_> = old.items.clone();
    let want: Vec<_> = expect_then.values().cloned().collect();
    assert_eq!(got, want);

    let now = s
        .list(&format!("{p}/"), ListOptions::default())
        .await
        .unwrap();
    assert_eq!(now.revision, s.revision().await.unwrap());
    let names: Vec<_> = now.items.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<_> = ["00", "01", "02", "04", "05", "07", "08", "99"]
        .iter()
        .map(|n| format!("{p}/k{n}"))
        .collect();
    assert_eq!(names, want);
    assert_eq!(now.items[0].value, b("reborn"));
    assert_eq!(now.items[1].value, b("changed"));
    assert_eq!(s.count(&format!("{p}/")).await.unwrap(), 8);

    let future = s.revision().await.unwrap() + 1000;
    assert!(matches!(
        s.list(
            &format!("{p}/"),
            ListOptions {
                revision: Some(future),
                ..Default::default()
            }
        )
        .await,
        Err(Error::FutureRevision { .. })
    ));
}

pub async fn prefixes_are_exact(s: S, p: &str) {
    s.create(&format!("{p}/a/x"), b("1")).await.unwrap();
    s.create(&format!("{p}/ab/y"), b("2")).await.unwrap();
    s.create(&format!("{p}/a"), b("3")).await.unwrap();
    let l = s
        .list(&format!("{p}/a/"), ListOptions::default())
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].key, format!("{p}/a/x"));
    assert_eq!(s.count(&format!("{p}/a/")).await.unwrap(), 1);
    assert_eq!(s.count(&format!("{p}/")).await.unwrap(), 3);
}

pub async fn paging(s: S, p: &str) {
    for i in 0..25 {
        s.create(&format!("{p}/item{i:03}"), b(&i.to_string()))
            .await
            .unwrap();
    }
    let first = s
        .list(
            &format!("{p}/"),
            ListOptions {
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    assert!(first.more);
    let at = first.revision;
    // Writes between pages must not show in later pages read at the first page's revision.
    s.delete(&format!("{p}/item015"), None).await.unwrap();
    s.create(&format!("{p}/item0125"), b("late")).await.unwrap();
    let mut all = first.items.clone();
    let mut last = first.items.last().unwrap().key.clone();
    loop {
        let page = s
            .list(
                &format!("{p}/"),
                ListOptions {
                    revision: Some(at),
                    start_after: Some(last.clone()),
                    limit: Some(10),
                },
            )
            .await
            .unwrap();
        assert_eq!(page.revision, at);
        all.extend(page.items.clone());
        if !page.more {
            break;
        }
        last = page.items.last().unwrap().key.clone();
    }
    let names: Vec<_> = all.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<_> = (0..25).map(|i| format!("{p}/item{i:03}")).collect();
    assert_eq!(names, want);
    // A page that exactly exhausts the keys says there are no more.
    let exact = s
        .list(
            &format!("{p}/"),
            ListOptions {
                revision: Some(at),
                start_after: Some(format!("{p}/item014")),
                limit: Some(10),
            },
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 10);
    assert!(!exact.more);
}

/// Revision 0 means "now" to `watch`, so tests that watch from a past revision first
/// make sure the store is past revision 0.
async fn warm(s: &S, p: &str) {
    s.create(&format!("{p}-warm/{}", rev(s).await), b("w"))
        .await
        .unwrap();
}

pub async fn watch_from_revision(s: S, p: &str) {
    warm(&s, p).await;
    let start = s.revision().await.unwrap();
    let mut kvs = Vec::new();
    for i in 0..20 {
        kvs.push(s.create(&format!("{p}/w{i}"), b("a")).await.unwrap());
    }
    // Noise outside the prefix must not show up.
    s.create(&format!("{p}-other/x"), b("noise")).await.unwrap();
    let upd = s
        .update(&format!("{p}/w3"), b("b"), kvs[3].mod_revision)
        .await
        .unwrap();
    let (_, del_rev) = s.delete(&format!("{p}/w4"), None).await.unwrap();

    // From the start: everything, in order.
    let mut w = s.watch(&format!("{p}/"), start).await.unwrap();
    for kv in &kvs {
        match next(&mut w).await.unwrap() {
            Event::Put { kv: got, prev } => {
                assert_eq!(&got, kv);
                assert_eq!(prev, None);
            }
            other => panic!("expected put, got {other:?}"),
        }
    }
    match next(&mut w).await.unwrap() {
        Event::Put { kv, prev } => {
            assert_eq!(kv, upd);
            assert_eq!(prev.unwrap(), kvs[3]);
        }
        other => panic!("{other:?}"),
    }
    match next(&mut w).await.unwrap() {
        Event::Delete { prev, revision } => {
            assert_eq!(prev, kvs[4]);
            assert_eq!(revision, del_rev);
        }
        other => panic!("{other:?}"),
    }
    // Then live events.
    let live = s.create(&format!("{p}/live"), b("l")).await.unwrap();
    match next(&mut w).await.unwrap() {
        Event::Put { kv, .. } => assert_eq!(kv, live),
        other => panic!("{other:?}"),
    }

    // From the middle: exactly the events after it.
    let mid = kvs[9].mod_revision;
    let mut w2 = s.watch(&format!("{p}/"), mid).await.unwrap();
    let e = next(&mut w2).await.unwrap();
    assert_eq!(e.revision(), kvs[10].mod_revision);

    // From now (0): only later events.
    let mut w3 = s.watch(&format!("{p}/"), 0).await.unwrap();
    let later = s.create(&format!("{p}/later"), b("x")).await.unwrap();
    match next(&mut w3).await.unwrap() {
        Event::Put { kv, .. } => assert_eq!(kv, later),
        other => panic!("{other:?}"),
    }
}

/// Many writers, many watchers: every watcher sees every matching revision exactly once,
/// in order, even one that does not read until the writing is over.
pub async fn watch_no_gaps_no_duplicates(s: S, p: &str) {
    warm(&s, p).await;
    let start = s.revision().await.unwrap();
    let mut eager = s.watch(&format!("{p}/"), start).await.unwrap();
    let lazy = s.watch(&format!("{p}/"), start).await.unwrap();
    let writers = 8;
    let per = 250;
    let mut handles = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        let p = p.to_owned();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..per {
                let kv = s.create(&format!("{p}/{w}/{i}"), b("v")).await.unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let eager_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < writers * per {
            seen.push(next(&mut eager).await.unwrap().revision());
        }
        seen
    });
    let mut written = Vec::new();
    for h in handles {
        written.extend(h.await.unwrap());
    }
    written.sort();
    let seen = eager_task.await.unwrap();
    assert_eq!(seen, written, "eager watcher");
    let mut lazy = lazy;
    let mut seen = Vec::new();
    while seen.len() < writers * per {
        seen.push(next(&mut lazy).await.unwrap().revision());
    }
    assert_eq!(seen, written, "lazy watcher");
    // Nothing more is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lazy.next())
            .await
            .is_err(),
        "no extra events"
    );
}

pub async fn compaction(s: S, p: &str) {
    let mut revs = Vec::new();
    let k = format!("{p}/c");
    let mut kv = s.create(&k, b("0")).await.unwrap();
    revs.push(kv.mod_revision);
    for i in 1..10 {
        kv = s
            .update(&k, b(&i.to_string()), kv.mod_revision)
            .await
            .unwrap();
        revs.push(kv.mod_revision);
    }
    let keep = s.create(&format!("{p}/untouched"), b("u")).await.unwrap();
    let c = revs[5];
    s.compact(c).await.unwrap();

    let err = s
        .list(
            &format!("{p}/"),
            ListOptions {
                revision: Some(revs[2]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Compacted { .. }), "{err:?}");

    // Watching from well before the compaction fails, at once or as the first item.
    match s.watch(&format!("{p}/"), revs[2]).await {
        Err(Error::Compacted { .. }) => {}
        Ok(mut w) => {
            let e = next(&mut w).await;
            assert!(matches!(e, Err(Error::Compacted { .. })), "{e:?}");
        }
        Err(e) => panic!("{e:?}"),
    }

    // At and after the compaction revision everything still works.
    let l = s
        .list(
            &format!("{p}/"),
            ListOptions {
                revision: Some(revs[7]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].value, b("7"));
    let mut w = s.watch(&format!("{p}/"), revs[7]).await.unwrap();
    assert_eq!(next(&mut w).await.unwrap().revision(), revs[8]);
    assert_eq!(s.get(&format!("{p}/untouched")).await.unwrap(), Some(keep));
    assert_eq!(s.get(&k).await.unwrap().unwrap().value, b("9"));
}

pub async fn concurrent_cas(s: S, p: &str) {
    let k = format!("{p}/counter");
    s.create(&k, b("0")).await.unwrap();
    let tasks = 8;
    let per = 40;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let s = s.clone();
        let k = k.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..per {
                loop {
                    let cur = s.get(&k).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match s
                        .update(&k, b(&(n + 1).to_string()), cur.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let v = s.get(&k).await.unwrap().unwrap();
    assert_eq!(v.value, b(&(tasks * per).to_string()), "no lost update");
    // Not a correctness condition, but the test means little if no CAS ever collided.
    eprintln!("concurrent_cas: {conflicts} conflicts retried");
}

pub async fn large_values(s: S, p: &str, limit: usize) {
    warm(&s, p).await;
    let mib: Vec<u8> = (0..1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let kv = s
        .create(&format!("{p}/big"), Bytes::from(mib.clone()))
        .await
        .unwrap();
    assert_eq!(kv.value.len(), mib.len());
    let got = s.get(&format!("{p}/big")).await.unwrap().unwrap();
    assert_eq!(&got.value[..], &mib[..]);
    let mut w = s
        .watch(&format!("{p}/"), kv.mod_revision - 1)
        .await
        .unwrap();
    match next(&mut w).await.unwrap() {
        Event::Put { kv: e, .. } => assert_eq!(&e.value[..], &mib[..]),
        other => panic!("{other:?}"),
    }
    let too_big = Bytes::from(vec![7u8; limit + 1]);
    match s.create(&format!("{p}/huge"), too_big).await {
        Err(Error::TooLarge { size, .. }) => assert_eq!(size, limit + 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get(&format!("{p}/huge")).await.unwrap(), None);
}

pub async fn many_keys(s: S, p: &str, n: usize) {
    let workers = 64;
    let mut handles = Vec::new();
    for w in 0..workers {
        let s = s.clone();
        let p = p.to_owned();
        handles.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                s.create(&format!("{p}/{i:07}"), Bytes::from(format!("value-{i}")))
                    .await
                    .unwrap();
                i += workers;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(s.count(&format!("{p}/")).await.unwrap(), n as u64);
    let all = s
        .list(&format!("{p}/"), ListOptions::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), n);
    assert!(all.items.windows(2).all(|w| w[0].key < w[1].key));
    // Paging through everything at one revision, 5000 at a time.
    let mut last: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = s
            .list(
                &format!("{p}/"),
                ListOptions {
                    revision: Some(all.revision),
                    start_after: last.clone(),
                    limit: Some(5000),
                },
            )
            .await
            .unwrap();
        for kv in &page.items {
            assert_eq!(kv.key, format!("{p}/{seen:07}"));
            assert_eq!(kv.value, Bytes::from(format!("value-{seen}")));
            seen += 1;
        }
        if !page.more {
            break;
        }
        last = page.items.last().map(|kv| kv.key.clone());
    }
    assert_eq!(seen, n);
    s.check().await.unwrap();
}

pub async fn check_passes(s: S, p: &str) {
    for i in 0..50 {
        let kv = s.create(&format!("{p}/{i}"), b("x")).await.unwrap();
        if i % 2 == 0 {
            s.update(&kv.key, b("y"), kv.mod_revision).await.unwrap();
        }
        if i % 5 == 0 {
            s.delete(&kv.key, None).await.unwrap();
        }
    }
    let r = s.check().await.unwrap();
    assert!(r.keys >= 40);
    assert_eq!(r.revision, s.revision().await.unwrap());
}

/// Snapshot of everything under a prefix, for comparing two stores.
pub async fn dump(s: &S, p: &str) -> Vec<KeyValue> {
    s.list(p, ListOptions::default()).await.unwrap().items
}

/// The newest revision, for tests that only need a number.
pub async fn rev(s: &S) -> Revision {
    s.revision().await.unwrap()
}

/// Emits one `#[tokio::test]` per conformance check. `$make` is an async expression that
/// yields `(store, prefix, guard)`; the guard lives until the test ends (temp dirs, etcd).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr, $limit:expr, $many:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn crud_and_cas() {
            let (s, p, _g) = $make.await;
            conformance::crud_and_cas(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn revisions_are_global_and_dense() {
            let (s, p, _g) = $make.await;
            conformance::revisions_are_global_and_dense(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn list_at_revision() {
            let (s, p, _g) = $make.await;
            conformance::list_at_revision(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn prefixes_are_exact() {
            let (s, p, _g) = $make.await;
            conformance::prefixes_are_exact(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn paging() {
            let (s, p, _g) = $make.await;
            conformance::paging(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watch_from_revision() {
            let (s, p, _g) = $make.await;
            conformance::watch_from_revision(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watch_no_gaps_no_duplicates() {
            let (s, p, _g) = $make.await;
            conformance::watch_no_gaps_no_duplicates(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compaction() {
            let (s, p, _g) = $make.await;
            conformance::compaction(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_cas() {
            let (s, p, _g) = $make.await;
            conformance::concurrent_cas(s, &p).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn large_values() {
            let (s, p, _g) = $make.await;
            conformance::large_values(s, &p, $limit).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn many_keys() {
            let (s, p, _g) = $make.await;
            conformance::many_keys(s, &p, $many).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn check_passes() {
            let (s, p, _g) = $make.await;
            conformance::check_passes(s, &p).await;
        }
    };
}

/// Waits on a progress-reporting watch until its progress reaches `at_least`, failing
/// on any event (the watched prefix is quiet) or after 20 s.
pub async fn progress_to(w: &mut h8s_store::NoticeStream, at_least: Revision) -> Revision {
    let t0 = std::time::Instant::now();
    loop {
        let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
        let n = tokio::time::timeout(left, w.next())
            .await
            .unwrap_or_else(|_| panic!("no progress to {at_least} within 20 s"))
            .expect("watch stream still open")
            .expect("no watch error");
        match n {
            h8s_store::Notice::Progress(r) if r >= at_least => return r,
            h8s_store::Notice::Progress(_) => {}
            h8s_store::Notice::Event(e) => panic!("an event on a quiet prefix: {e:?}"),
        }
    }
}

/// A quiet prefix's watch through a watch cache with a ring of 10 events, while 50
/// writes churn another prefix: its progress reaches the churn's revision, so resuming
/// from that progress works after the ring and a compaction have left the quiet key's
/// own revision behind (which answers `Compacted`, the API's 410).
pub async fn progress_outruns_churn(cache: Arc<h8s_store::WatchCache>, p: &str) {
    let quiet = format!("{p}/quiet/");
    let q = cache
        .create(&format!("{quiet}a"), b("q"))
        .await
        .unwrap()
        .mod_revision;
    let mut w = cache.watch_progress(&quiet, q).await.unwrap();
    let mut r = q;
    let mut churn = 0;
    for i in 0..50 {
        churn = cache
            .create(&format!("{p}/busy/{i}"), b("x"))
            .await
            .unwrap()
            .mod_revision;
        // The watcher keeps up, as the API server's watch loop does (a subscriber the
        // ring overtakes is ended, progress or not).
        r = progress_to(&mut w, churn).await;
    }
    assert_eq!(r, churn);
    cache.compact(churn - 1).await.unwrap();
    // From the quiet key's own revision: gone.
    let stale = match cache.watch(&quiet, q).await {
        Err(e) => Err(e),
        Ok(mut s) => next(&mut s).await,
    };
    assert!(matches!(stale, Err(Error::Compacted { .. })), "{stale:?}");
    // From the progress: the next change under the quiet prefix, and nothing else.
    let mut resumed = cache.watch(&quiet, r).await.unwrap();
    let b_rev = cache
        .create(&format!("{quiet}b"), b("q"))
        .await
        .unwrap()
        .mod_revision;
    let e = next(&mut resumed).await.unwrap();
    assert_eq!((key_of(&e), e.revision()), (&*format!("{quiet}b"), b_rev));
}
