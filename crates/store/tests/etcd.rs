//! The conformance suite on etcd (Debian's etcd-server, started here on loopback), plus
//! what only etcd has: shared prefixes, several store instances, member failures.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h8s_store::testing::EtcdCluster;
use h8s_store::{Error, Etcd, EtcdOptions, Store, WatchCache};

const LIMIT: usize = 4 * 1024 * 1024;

async fn connect(c: &EtcdCluster, prefix: &str) -> Etcd {
    Etcd::connect(EtcdOptions {
        endpoints: c.endpoints(),
        prefix: prefix.to_owned(),
        tls: None,
        max_value_size: LIMIT,
        compact_every: None,
    })
    .await
    .unwrap()
}

async fn fresh() -> (conformance::S, String, EtcdCluster) {
    let c = EtcdCluster::start(1).expect("start etcd (needs Debian etcd-server)");
    let s = connect(&c, "/conformance").await;
    (Arc::new(s), "/t".to_owned(), c)
}

conformance_tests!(fresh(), LIMIT, 100_000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_share_one_etcd_by_prefix() {
    let c = EtcdCluster::start(1).unwrap();
    let a = connect(&c, "/cluster-a").await;
    let b = connect(&c, "/cluster-b").await;
    a.create("/registry/x", Bytes::from_static(b"a"))
        .await
        .unwrap();
    b.create("/registry/x", Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(a.get("/registry/x").await.unwrap().unwrap().value, "a");
    assert_eq!(b.get("/registry/x").await.unwrap().unwrap().value, "b");
    assert_eq!(a.count("").await.unwrap(), 1);
    // "/cluster-a" must not see "/cluster-ab".
    let ab = connect(&c, "/cluster-ab").await;
    ab.create("/registry/y", Bytes::from_static(b"ab"))
        .await
        .unwrap();
    assert_eq!(a.list("", Default::default()).await.unwrap().items.len(), 1);
    a.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_foreign_data_is_refused() {
    let c = EtcdCluster::start(1).unwrap();
    let mut raw = etcd_client::Client::connect(c.endpoints(), None)
        .await
        .unwrap();
    raw.put("/kube/registry/pods/x", "not ours", None)
        .await
        .unwrap();
    match Etcd::connect(EtcdOptions {
        endpoints: c.endpoints(),
        prefix: "/kube".into(),
        tls: None,
        max_value_size: LIMIT,
        compact_every: None,
    })
    .await
    {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("not an h8s store"), "{msg}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// Two store instances (as two API servers would have) on one etcd: writes through one
/// are read and watched through the other, and compare-and-swap holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_cluster() {
    let c = EtcdCluster::start(1).unwrap();
    let one: Arc<dyn Store> = Arc::new(connect(&c, "/shared").await);
    let two: Arc<dyn Store> = Arc::new(connect(&c, "/shared").await);
    let two_cached = WatchCache::new(two.clone()).await.unwrap();
    let mut w = two_cached.watch("/registry/", 0).await.unwrap();
    let kv = one
        .create("/registry/pods/p", Bytes::from_static(b"v1"))
        .await
        .unwrap();
    let e = conformance::next(&mut w).await.unwrap();
    assert_eq!(e.revision(), kv.mod_revision);
    assert_eq!(two.get("/registry/pods/p").await.unwrap(), Some(kv.clone()));
    // Both try to update from the same revision: exactly one wins.
    let r1 = one
        .update(
            "/registry/pods/p",
            Bytes::from_static(b"one"),
            kv.mod_revision,
        )
        .await;
    let r2 = two
        .update(
            "/registry/pods/p",
            Bytes::from_static(b"two"),
            kv.mod_revision,
        )
        .await;
    assert!(r1.is_ok());
    assert!(matches!(r2, Err(Error::Conflict { .. })));
    let e = conformance::next(&mut w).await.unwrap();
    assert_eq!(e.revision(), r1.unwrap().mod_revision);
}

/// A 3-member cluster keeps serving reads, writes and watches while one member is killed,
/// and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_losing_a_member() {
    let mut c = EtcdCluster::start(3).unwrap();
    let s: Arc<dyn Store> = Arc::new(connect(&c, "/ha").await);
    let cached = WatchCache::new(s.clone()).await.unwrap();
    let start = s.revision().await.unwrap();
    let mut w = cached.watch("/k/", start).await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1500 {
                match s
                    .create(&format!("/k/{i:05}"), Bytes::from(format!("v{i}")))
                    .await
                {
                    Ok(kv) => acked.push(kv),
                    Err(e) => panic!("write {i} failed while 2 of 3 members were up: {e}"),
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill(0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.restart(0).unwrap();
    // One member down at a time: let the restarted one rejoin before the next kill.
    c.wait_healthy(Duration::from_secs(30)).unwrap();
    c.kill(1);
    let acked = writer.await.unwrap();
    assert_eq!(acked.len(), 1500);
    for kv in &acked {
        assert_eq!(s.get(&kv.key).await.unwrap().as_ref(), Some(kv));
    }
    let mut seen = 0;
    while seen < acked.len() {
        let e = conformance::next(&mut w).await.unwrap();
        assert_eq!(e.revision(), acked[seen].mod_revision);
        seen += 1;
    }
    s.check().await.unwrap();
}

/// etcd with client-certificate authentication: the store connects with `EtcdTls`
/// (rustls, ring), and is refused without a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["h8s-client".into()]);
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let ca_file = write("ca.pem", &ca.pem());
    let sc = write("server.pem", &server_cert);
    let sk = write("server-key.pem", &server_key);
    let cc = write("client.pem", &client_cert);
    let ck = write("client-key.pem", &client_key);
    let c = EtcdCluster::start_with(
        1,
        &[
            &format!("--cert-file={}", sc.display()),
            &format!("--key-file={}", sk.display()),
            &format!("--trusted-ca-file={}", ca_file.display()),
            "--client-cert-auth",
        ],
    )
    .unwrap();
    let tls = h8s_store::EtcdTls {
        ca_file: Some(ca_file.clone()),
        cert_file: Some(cc),
        key_file: Some(ck),
    };
    let s = h8s_store::open(&c.url("/tls"), dir.path(), Some(tls))
        .await
        .unwrap();
    let kv = s
        .create("/registry/x", Bytes::from_static(b"secret"))
        .await
        .unwrap();
    assert_eq!(s.get("/registry/x").await.unwrap(), Some(kv));
    let mut w = s.watch("/registry/", 0).await.unwrap();
    let kv2 = s
        .create("/registry/y", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(
        conformance::next(&mut w).await.unwrap().revision(),
        kv2.mod_revision
    );

    // Only the CA, no client certificate: etcd turns the connection away.
    let no_cert = h8s_store::EtcdTls {
        ca_file: Some(ca_file),
        cert_file: None,
        key_file: None,
    };
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        h8s_store::open(&c.url("/tls"), dir.path(), Some(no_cert)),
    )
    .await
    .expect("gives up within its retry window");
    assert!(
        matches!(r, Err(Error::Unavailable(_))),
        "{:?}",
        r.map(|_| ())
    );
}

/// The backend compacts etcd by itself, keeping one period of history, and store instances
/// sharing a prefix take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_compaction() {
    let c = EtcdCluster::start(1).unwrap();
    let opts = EtcdOptions {
        endpoints: c.endpoints(),
        prefix: "/pc".into(),
        compact_every: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let a = Etcd::connect(opts.clone()).await.unwrap();
    let _b = Etcd::connect(opts).await.unwrap();
    let first = a.create("/k/0", Bytes::from_static(b"0")).await.unwrap();
    for i in 1..20 {
        a.create(&format!("/k/{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    // Two periods later, the revisions of the first period are gone.
    let t0 = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = a
            .list(
                "/k/",
                h8s_store::ListOptions {
                    revision: Some(first.mod_revision),
                    ..Default::default()
                },
            )
            .await;
        if matches!(r, Err(Error::Compacted { .. })) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never compacted: {:?}",
            r.map(|l| l.revision)
        );
    }
    // The newest period is still there, and so is every key.
    let now = a.revision().await.unwrap();
    a.list(
        "/k/",
        h8s_store::ListOptions {
            revision: Some(now),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(a.count("/k/").await.unwrap(), 20);
}

/// Through the watch cache on etcd: a quiet watch's progress follows the store's (its
/// ring's events). Writes of another store sharing the etcd do not reach it: etcd 3.4's
/// progress notifications can overtake events, so they are not used (see `Etcd::watch_progress`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_progresses_with_etcd() {
    let c = EtcdCluster::start(1).unwrap();
    let s: Arc<dyn Store> = Arc::new(connect(&c, "/cluster-a").await);
    let cache = WatchCache::with_options(
        s,
        h8s_store::WatchCacheOptions {
            max_events: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    conformance::progress_outruns_churn(cache.clone(), "/p").await;
}
