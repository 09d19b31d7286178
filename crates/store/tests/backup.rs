//! Backup and restore across backends: embedded → etcd → embedded, byte for byte.

mod conformance;

use std::sync::Arc;

use bytes::Bytes;
use h8s_store::testing::EtcdCluster;
use h8s_store::{Embedded, Error, ListOptions, Store};

async fn fill(s: &dyn Store) {
    for i in 0..500 {
        let kv = s
            .create(
                &format!("/registry/pods/ns/p{i:04}"),
                Bytes::from(format!("{{\"n\":{i}}}")),
            )
            .await
            .unwrap();
        if i % 3 == 0 {
            s.update(
                &kv.key,
                Bytes::from(format!("{{\"n\":{i},\"u\":1}}")),
                kv.mod_revision,
            )
            .await
            .unwrap();
        }
        if i % 7 == 0 {
            s.delete(&kv.key, None).await.unwrap();
        }
    }
    s.create("/registry/big", Bytes::from(vec![42u8; 1 << 20]))
        .await
        .unwrap();
}

async fn all(s: &dyn Store) -> Vec<(String, Bytes)> {
    s.list("", ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_to_etcd_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = Embedded::open(&dir.path().join("a.redb")).unwrap();
    fill(&src).await;
    let want = all(&src).await;
    let src_items = src.list("", ListOptions::default()).await.unwrap();
    let file = dir.path().join("backup.h8s");
    let s1 = h8s_store::backup(&src, &file).await.unwrap();
    assert_eq!(s1.keys as usize, want.len());
    assert_eq!(s1.revision, src.revision().await.unwrap());

    // Into a fresh embedded store: same keys, same values, same revisions.
    let same = Embedded::open(&dir.path().join("b.redb")).unwrap();
    h8s_store::restore(&same, &file).await.unwrap();
    assert_eq!(
        same.list("", ListOptions::default()).await.unwrap().items,
        src_items.items
    );
    assert_eq!(same.revision().await.unwrap(), s1.revision);
    same.check().await.unwrap();
    // Watching from before the restore is refused; from now on, it works.
    assert!(matches!(
        same.watch("/", 5).await,
        Err(Error::Compacted { .. })
    ));
    let kv = same
        .create("/registry/after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(kv.mod_revision, s1.revision + 1);

    // Into etcd: same keys and values (etcd assigns its own revisions).
    let c = EtcdCluster::start(1).unwrap();
    let etcd = h8s_store::open(&c.url("/moved"), dir.path(), None)
        .await
        .unwrap();
    h8s_store::restore(etcd.as_ref(), &file).await.unwrap();
    assert_eq!(all(etcd.as_ref()).await, want);
    etcd.check().await.unwrap();

    // And from etcd back into embedded.
    let file2 = dir.path().join("backup2.h8s");
    let s2 = h8s_store::backup(etcd.as_ref(), &file2).await.unwrap();
    assert_eq!(s2.keys, s1.keys);
    let back = Embedded::open(&dir.path().join("c.redb")).unwrap();
    h8s_store::restore(&back, &file2).await.unwrap();
    assert_eq!(all(&back).await, want);

    // Restoring into a store that has keys is refused and changes nothing.
    let before = back.revision().await.unwrap();
    assert!(matches!(
        h8s_store::restore(&back, &file).await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(back.revision().await.unwrap(), before);
}

#[tokio::test]
async fn damaged_backups_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let src = Embedded::open(&dir.path().join("a.redb")).unwrap();
    fill(&src).await;
    let file = dir.path().join("backup.h8s");
    h8s_store::backup(&src, &file).await.unwrap();
    let raw = std::fs::read(&file).unwrap();
    let target: Arc<dyn Store> = Arc::new(Embedded::open(&dir.path().join("t.redb")).unwrap());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", raw[..raw.len() / 2].to_vec()),
        ("no trailer", raw[..raw.len() - 17].to_vec()),
        ("flipped byte", {
            let mut r = raw.clone();
            let i = r.len() / 3;
            r[i] ^= 0x55;
            r
        }),
        ("not a backup", b"{\"kind\":\"List\"}".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        let f = dir.path().join("bad.h8s");
        std::fs::write(&f, &bytes).unwrap();
        match h8s_store::restore(target.as_ref(), &f).await {
            Err(Error::Corrupt(msg)) => assert!(msg.contains("bad.h8s"), "{what}: {msg}"),
            other => panic!("{what}: {:?}", other),
        }
        assert_eq!(
            target.count("").await.unwrap(),
            0,
            "{what}: nothing written"
        );
    }
}
