//! Property tests over the whole request path: whatever the method, path, media type and
//! body, the server answers without panicking, never with a 500, and every error is a
//! `v1 Status`. Runs in-process on a real embedded store.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;

use crate::{Api, Config, Server};

const PATHS: &[&str] = &[
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/configmaps/c",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/p",
    "/api/v1/namespaces/default/pods/p/status",
    "/apis/apps/v1/namespaces/default/deployments/d/scale",
    "/apis/apps/v1/namespaces/default/deployments",
    "/api/v1/namespaces",
    "/api/v1/namespaces/x",
    "/api/v1/networks",
    "/api/v1/networks/n",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=0",
    "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
    "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&limit=1&continue=abc",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const TYPES: &[&str] = &[
    "",
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];
const SEEDS: &[&str] = &[
    r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"b"}}"#,
    r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
    r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#,
    r#"[{"op":"add","path":"/metadata/labels","value":{"x":"y"}},{"op":"remove","path":"/spec"}]"#,
    r#"{"metadata":{"labels":{"$patch":"delete"},"finalizers":["a"]},"spec":{"replicas":-1}}"#,
    r#"{"apiVersion":"v1","kind":"Network","metadata":{"name":"n"},"spec":{"subnets":{"s":{"cidr":"10.0.0.0/33"}}}}"#,
    r#"{"spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
];

fn server() -> (tokio::runtime::Runtime, Arc<Api>, Server, tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (api, srv) = rt.block_on(async {
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let cfg = Config::new(
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
            store,
        );
        let srv = Server::start(cfg).await.unwrap();
        (srv.api(), srv)
    });
    (rt, api, srv, dir)
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (
            0..SEEDS.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)
        )
            .prop_map(|(i, muts)| {
                let mut b = SEEDS[i].as_bytes().to_vec();
                for (pos, byte) in muts {
                    let n = b.len();
                    b[pos % n] = byte;
                }
                b
            }),
        (0..SEEDS.len()).prop_map(|i| SEEDS[i].as_bytes().to_vec()),
        Just(b"k8s\0\x0a\x02\x08\x01\x12\xff\xff\xff".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn never_a_500(
        reqs in proptest::collection::vec(
            (0..METHODS.len(), 0..PATHS.len(), 0..TYPES.len(), body_strategy()),
            1..6,
        )
    ) {
        thread_local! {
            static S: (tokio::runtime::Runtime, Arc<Api>, Server, tempfile::TempDir) = server();
        }
        S.with(|(rt, api, srv, _)| {
            for (m, p, t, body) in &reqs {
                let mut b = http::Request::builder()
                    .method(METHODS[*m])
                    .uri(PATHS[*p])
                    .header("authorization", format!("Bearer {}", srv.pki.admin_token));
                if !TYPES[*t].is_empty() {
                    b = b.header("content-type", TYPES[*t]);
                }
                let req = b.body(Full::new(Bytes::from(body.clone()))).unwrap();
                let (code, out) = rt.block_on(async {
                    let resp = api.handle(req).await;
                    let code = resp.status().as_u16();
                    let out = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        resp.into_body().collect(),
                    )
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                    (code, out)
                });
                prop_assert!(code != 500, "500 for {} {}: {}", METHODS[*m], PATHS[*p], String::from_utf8_lossy(&out));
                if code >= 400 {
                    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
                    prop_assert_eq!(&v["kind"], "Status", "{} {} → {}: {}", METHODS[*m], PATHS[*p], code, String::from_utf8_lossy(&out));
                    prop_assert_eq!(v["code"].as_u64(), Some(code as u64));
                }
            }
            Ok(())
        })?;
    }
}
