//! Two `h8s server` processes on one etcd serve one cluster: a write through one is read
//! and watched through the other, and optimistic concurrency holds across them.

mod store_support;

use h8s_store::testing::EtcdCluster;
use store_support::{watch_until, Api, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_one_etcd() {
    let etcd = EtcdCluster::start(3).expect("etcd-server");
    let url = etcd.url("/shared-cluster");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The second server shares the first one's PKI (same data dir), as a second API server
    // of one cluster would; the store is etcd, so no file is shared.
    let a = Server::start(&data, &url);
    let b = Server::start(&data, &url);
    assert_ne!(a.addr, b.addr);
    let api_a = Api::connect(&a.addr, &data).await;
    let api_b = Api::connect(&b.addr, &data).await;

    let ns = serde_json::json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"multi"}});
    let (code, obj) = api_a
        .call("POST", "/api/v1/namespaces", Some(ns))
        .await
        .unwrap();
    assert_eq!(code, 201, "{obj}");
    // The namespace made through A is visible through B.
    let (code, _) = api_b
        .call("GET", "/api/v1/namespaces/multi", None)
        .await
        .unwrap();
    assert_eq!(code, 200);

    // A watch through B sees a create through A.
    let (code, list) = api_b
        .call("GET", "/api/v1/namespaces/multi/configmaps", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{list}");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = api_b
        .watch(&format!(
            "/api/v1/namespaces/multi/configmaps?watch=true&resourceVersion={rv}"
        ))
        .await;
    let mut buf = Vec::new();
    let cm = serde_json::json!({"apiVersion":"v1","kind":"ConfigMap",
        "metadata":{"name":"shared","namespace":"multi"},"data":{"from":"a"}});
    let (code, created) = api_a
        .call("POST", "/api/v1/namespaces/multi/configmaps", Some(cm))
        .await
        .unwrap();
    assert_eq!(code, 201, "{created}");
    let created_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    watch_until(&mut body, &mut buf, 20, |ev| {
        ev["type"] == "ADDED"
            && ev["object"]["metadata"]["name"] == "shared"
            && ev["object"]["metadata"]["resourceVersion"] == created_rv.as_str()
    })
    .await;

    // Both update from the same resourceVersion: the first wins, the second gets 409.
    let mut upd = created.clone();
    upd["data"]["from"] = "b".into();
    let (code, by_b) = api_b
        .call(
            "PUT",
            "/api/v1/namespaces/multi/configmaps/shared",
            Some(upd.clone()),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{by_b}");
    upd["data"]["from"] = "a-stale".into();
    let (code, conflict) = api_a
        .call(
            "PUT",
            "/api/v1/namespaces/multi/configmaps/shared",
            Some(upd),
        )
        .await
        .unwrap();
    assert_eq!(
        code, 409,
        "stale update through the other server: {conflict}"
    );
    // The winner's write is what both servers serve, and what B's watch reports.
    for api in [&api_a, &api_b] {
        let (_, got) = api
            .call("GET", "/api/v1/namespaces/multi/configmaps/shared", None)
            .await
            .unwrap();
        assert_eq!(got["data"]["from"], "b");
    }
    watch_until(&mut body, &mut buf, 20, |ev| {
        ev["type"] == "MODIFIED" && ev["object"]["data"]["from"] == "b"
    })
    .await;
    a.kill();
    b.kill();
}
