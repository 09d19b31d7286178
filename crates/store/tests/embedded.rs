//! The conformance suite and file-level behaviour of the embedded backend.

mod conformance;

use std::sync::Arc;

use bytes::Bytes;
use h8s_store::{Embedded, EmbeddedOptions, Error, ListOptions, Store};
use redb::ReadableTable;

async fn fresh() -> (conformance::S, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = Embedded::open(&dir.path().join("store.redb")).unwrap();
    (Arc::new(s), "/t".to_owned(), dir)
}

conformance_tests!(fresh(), h8s_store::DEFAULT_MAX_VALUE_SIZE, 100_000);

#[tokio::test]
async fn data_survives_reopen_with_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (a, rev) = {
        let s = Embedded::open(&path).unwrap();
        let a = s.create("/k/a", Bytes::from_static(b"1")).await.unwrap();
        s.create("/k/b", Bytes::from_static(b"2")).await.unwrap();
        s.delete("/k/b", None).await.unwrap();
        (a, s.revision().await.unwrap())
    };
    let s = Embedded::open(&path).unwrap();
    assert_eq!(s.revision().await.unwrap(), rev);
    assert_eq!(s.get("/k/a").await.unwrap(), Some(a));
    assert_eq!(s.get("/k/b").await.unwrap(), None);
    // History survives too: a watch from 0-after-start replays all three writes.
    let mut w = s.watch("/k/", 0).await.unwrap();
    let c = s.create("/k/c", Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(
        conformance::next(&mut w).await.unwrap().revision(),
        c.mod_revision
    );
    let mut w = s.watch("/k/", 1).await.unwrap();
    assert_eq!(conformance::next(&mut w).await.unwrap().revision(), 2);
    s.check().await.unwrap();
}

#[tokio::test]
async fn the_store_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    drop(Embedded::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600, "a new store file");
    // A store made before files were private is tightened when opened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Embedded::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600, "an existing store file");
    let backup = dir.path().join("b.h8sbackup");
    h8s_store::backup(&s, &backup).await.unwrap();
    assert_eq!(mode(&backup), 0o600, "a backup");
}

#[tokio::test]
async fn foreign_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not a database at all.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"hello, this is not a database\n".repeat(200)).unwrap();
    match Embedded::open(&junk) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("junk.redb"), "{msg}"),
        other => panic!("opened junk: {:?}", other.map(|_| ())),
    }
    // The file was left alone.
    assert!(std::fs::read(&junk).unwrap().starts_with(b"hello"));

    // A redb database that is not ours.
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let t = db.begin_write().unwrap();
        {
            let mut tab = t
                .open_table(redb::TableDefinition::<&str, &str>::new("other"))
                .unwrap();
            tab.insert("x", "y").unwrap();
        }
        t.commit().unwrap();
    }
    match Embedded::open(&foreign) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("not an h8s store"), "{msg}"),
        other => panic!("opened foreign db: {:?}", other.map(|_| ())),
    }

    // Our own store with its header smashed.
    let ours = dir.path().join("store.redb");
    {
        let s = Embedded::open(&ours).unwrap();
        for i in 0..100 {
            s.create(&format!("/x/{i}"), Bytes::from(vec![1u8; 100]))
                .await
                .unwrap();
        }
    }
    let mut raw = std::fs::read(&ours).unwrap();
    for b in raw.iter_mut().take(64) {
        *b = 0xff;
    }
    std::fs::write(&ours, &raw).unwrap();
    assert!(matches!(Embedded::open(&ours), Err(Error::Corrupt(_))));
    assert!(matches!(
        Embedded::check_file(&ours),
        Err(Error::Corrupt(_))
    ));

    // A directory where the file should be.
    let d = dir.path().join("isdir.redb");
    std::fs::create_dir(&d).unwrap();
    assert!(matches!(Embedded::open(&d), Err(Error::Corrupt(_))));
}

#[tokio::test]
async fn a_file_is_opened_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _s = Embedded::open(&path).unwrap();
    match Embedded::open(&path) {
        Err(Error::Unavailable(msg)) => assert!(msg.contains("already open"), "{msg}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn check_file_on_a_closed_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let s = Embedded::open(&path).unwrap();
        for i in 0..20 {
            s.create(&format!("/x/{i}"), Bytes::from_static(b"v"))
                .await
                .unwrap();
        }
    }
    let r = Embedded::check_file(&path).unwrap();
    assert_eq!(r.keys, 20);
    // A new store starts at revision 1, as etcd does.
    assert_eq!(r.revision, 21);
}

#[tokio::test]
async fn automatic_compaction_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        retain_revisions: 10,
        retain_for: std::time::Duration::ZERO,
        compact_every: Some(std::time::Duration::from_millis(50)),
        ..Default::default()
    };
    let s = Embedded::open_with(&dir.path().join("store.redb"), opts).unwrap();
    for i in 0..100 {
        s.create(&format!("/x/{i:03}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    // The writer compacts on its timer; give it (a loaded machine's worth of) time.
    let t0 = std::time::Instant::now();
    let r = loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = s.check().await.unwrap();
        if r.compacted >= 80 || t0.elapsed() > std::time::Duration::from_secs(10) {
            break r;
        }
    };
    assert!(r.compacted >= 80, "{r:?}");
    assert!(r.history <= 20, "{r:?}");
    assert!(matches!(
        s.list(
            "/x/",
            ListOptions {
                revision: Some(5),
                ..Default::default()
            }
        )
        .await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        s.watch("/x/", 5).await,
        Err(Error::Compacted { .. })
    ));
    assert_eq!(s.count("/x/").await.unwrap(), 100);
}

/// `check` notices logical damage that redb's own checksums cannot: a lost key, a changed
/// value, a hole in the history.
#[tokio::test]
async fn check_finds_tampering() {
    const KV: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("h8s_kv");
    const LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("h8s_log");
    type Tamper = fn(&redb::WriteTransaction);
    let cases: [(&str, Tamper, &str); 3] = [
        (
            "lost key",
            |t| {
                t.open_table(KV).unwrap().remove("/x/03").unwrap();
            },
            "missing",
        ),
        (
            "changed value",
            |t| {
                let mut kv = t.open_table(KV).unwrap();
                let mut rec = kv.get("/x/04").unwrap().unwrap().value().to_vec();
                let n = rec.len();
                rec[n - 1] ^= 1;
                kv.insert("/x/04", rec.as_slice()).unwrap();
            },
            "differs",
        ),
        (
            "hole in history",
            |t| {
                t.open_table(LOG).unwrap().remove(5).unwrap();
            },
            "gap",
        ),
    ];
    for (what, tamper, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let s = Embedded::open(&path).unwrap();
            for i in 0..10 {
                s.create(&format!("/x/{i:02}"), Bytes::from(format!("value {i}")))
                    .await
                    .unwrap();
            }
        }
        Embedded::check_file(&path).unwrap();
        {
            let db = redb::Database::open(&path).unwrap();
            let t = db.begin_write().unwrap();
            tamper(&t);
            t.commit().unwrap();
        }
        match Embedded::check_file(&path) {
            Err(Error::Corrupt(msg)) => assert!(msg.contains(expect), "{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}
