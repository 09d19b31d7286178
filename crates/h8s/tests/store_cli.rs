//! `h8s store backup|restore|check` and the server's refusal of damaged data, driven
//! through the real binary; etcd is Debian's etcd-server started here on loopback.

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use h8s_store::testing::EtcdCluster;
use h8s_store::{Embedded, ListOptions, Store};

const H8S: &str = env!("CARGO_BIN_EXE_h8s");

fn h8s(args: &[&str]) -> Output {
    Command::new(H8S)
        .args(args)
        .env("H8S_LOG", "warn")
        .output()
        .expect("run h8s")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "h8s failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "h8s unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn fill(dir: &Path) -> Vec<(String, Bytes)> {
    let s = Embedded::open(&dir.join("store.redb")).unwrap();
    for i in 0..300 {
        let kv = s
            .create(
                &format!("/registry/configmaps/default/cm{i:03}"),
                Bytes::from(format!("{{\"data\":{{\"i\":\"{i}\"}}}}")),
            )
            .await
            .unwrap();
        if i % 4 == 0 {
            s.update(
                &kv.key,
                Bytes::from_static(b"{\"updated\":true}"),
                kv.mod_revision,
            )
            .await
            .unwrap();
        }
    }
    s.list("", ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_embedded_restore_into_etcd_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir(&a).unwrap();
    let want = fill(&a).await;
    let a_s = a.to_str().unwrap();

    let out = ok(&h8s(&["store", "check", "--data-dir", a_s]));
    assert!(
        out.contains("check: ok") && out.contains("300 keys"),
        "{out}"
    );

    let file = tmp.path().join("cluster.backup");
    let out = ok(&h8s(&[
        "store",
        "backup",
        "--data-dir",
        a_s,
        "-o",
        file.to_str().unwrap(),
    ]));
    assert!(out.contains("300 keys"), "{out}");

    // Move the cluster onto a 3-member etcd.
    let etcd = EtcdCluster::start(3).unwrap();
    let url = etcd.url("/prod");
    let out = ok(&h8s(&[
        "store",
        "restore",
        "-i",
        file.to_str().unwrap(),
        "--store",
        &url,
        "--data-dir",
        a_s,
    ]));
    assert!(out.contains("300 keys"), "{out}");
    ok(&h8s(&[
        "store",
        "check",
        "--store",
        &url,
        "--data-dir",
        a_s,
    ]));
    let e = h8s_store::open(&url, &a, None).await.unwrap();
    let got: Vec<_> = e
        .list("", ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(got, want);

    // Restoring twice is refused (the target is no longer empty).
    let err = fails(&h8s(&[
        "store",
        "restore",
        "-i",
        file.to_str().unwrap(),
        "--store",
        &url,
        "--data-dir",
        a_s,
    ]));
    assert!(err.contains("empty store"), "{err}");

    // And back from etcd into a new embedded data dir.
    let file2 = tmp.path().join("from-etcd.backup");
    ok(&h8s(&[
        "store",
        "backup",
        "--store",
        &url,
        "--data-dir",
        a_s,
        "-o",
        file2.to_str().unwrap(),
    ]));
    let b = tmp.path().join("b");
    let b_s = b.to_str().unwrap();
    ok(&h8s(&[
        "store",
        "restore",
        "-i",
        file2.to_str().unwrap(),
        "--data-dir",
        b_s,
    ]));
    ok(&h8s(&["store", "check", "--data-dir", b_s]));
    let s = Embedded::open(&b.join("store.redb")).unwrap();
    let got: Vec<_> = s
        .list("", ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn damaged_or_missing_stores_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    // Nothing there: check and backup say so instead of creating an empty store.
    let err = fails(&h8s(&["store", "check", "--data-dir", d]));
    assert!(err.contains("no embedded store"), "{err}");
    let err = fails(&h8s(&[
        "store",
        "backup",
        "--data-dir",
        d,
        "-o",
        "/dev/null",
    ]));
    assert!(err.contains("no embedded store"), "{err}");
    assert!(!tmp.path().join("store.redb").exists());

    // A foreign file in its place.
    std::fs::write(
        tmp.path().join("store.redb"),
        b"PGDMP not a store".repeat(100),
    )
    .unwrap();
    let err = fails(&h8s(&["store", "check", "--data-dir", d]));
    assert!(err.contains("not an h8s store"), "{err}");

    // A damaged backup is refused before anything is created.
    let bad = tmp.path().join("bad.backup");
    std::fs::write(&bad, b"H8S-STORE-BACKUP\n\x01\x00").unwrap();
    let fresh = tmp.path().join("fresh");
    let err = fails(&h8s(&[
        "store",
        "restore",
        "-i",
        bad.to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]));
    assert!(err.contains("truncated"), "{err}");
    assert!(!fresh.join("store.redb").exists());
}

/// `h8s server` on a data dir whose store file is damaged or foreign refuses to start,
/// says why, and leaves the file alone.
#[test]
fn server_refuses_a_corrupt_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store.redb");
    let junk = b"this was someone's data\n".repeat(500);
    std::fs::write(&store, &junk).unwrap();
    let out = Command::new(H8S)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("H8S_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an h8s store"), "{err}");
    assert_eq!(std::fs::read(&store).unwrap(), junk, "file untouched");
}
