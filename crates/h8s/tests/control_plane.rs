//! The control plane inside `h8s server`: the garbage collector's background, foreground and
//! orphan cascades over a Deployment → ReplicaSet → Pod shaped owner chain, the namespace
//! controller emptying a namespace of 200 objects and reporting what holds it, and Lease
//! leader election handing over — all through kube-rs against one real server shared by
//! every test of this binary (its controller manager runs in it, as API clients).

mod api_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_support::Server;
use h8s_client::k8s_openapi;
use h8s_client::kube;
use h8s_client::leader::{self, Elector, Outcome};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

extern "C" fn stop_server() {
    let s = SERVER.lock().ok().and_then(|mut s| s.take());
    drop(s);
}

/// The server shared by this test binary, started on first use and stopped at exit.
fn server() -> Arc<Server> {
    let mut g = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = &*g {
        return s.clone();
    }
    // Leader election is off by default on the embedded store (one server only); this binary
    // tests it, so turn it on.
    let s = Arc::new(Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[
            std::ffi::OsStr::new("--leader-elect"),
            std::ffi::OsStr::new("true"),
        ],
    ));
    *g = Some(s.clone());
    // SAFETY: `stop_server` is a plain `extern "C" fn()` that does not unwind (it drops a
    // value whose Drop kills a child process by PID and waits for it) and uses no
    // thread-locals; registering it has no other precondition.
    unsafe {
        libc::atexit(stop_server);
    }
    s
}

async fn client() -> kube::Client {
    let s = server();
    h8s_client::from_kubeconfig(&s.kubeconfig)
        .await
        .expect("client from the admin kubeconfig")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {secs} s: {what}");
}

async fn namespace(c: &kube::Client, name: &str) {
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

fn owner_ref(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

/// A Deployment → ReplicaSet → Pods shaped owner chain, with kinds no controller of the
/// server acts on (so only the garbage collector touches them): a ConfigMap owning a Secret
/// owning two Pods that no scheduler picks up. Returns their uids.
async fn owner_chain(c: &kube::Client, ns: &str, app: &str) -> (String, String, Vec<String>) {
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let d: ConfigMap = serde_json::from_value(json!({"metadata": {"name": app}})).unwrap();
    let d = cms.create(&PostParams::default(), &d).await.expect("owner");
    let d_uid = d.metadata.uid.unwrap();
    let rs: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{app}-rs"),
                     "ownerReferences": [owner_ref("ConfigMap", "v1", app, &d_uid)]},
    }))
    .unwrap();
    let rs = secrets
        .create(&PostParams::default(), &rs)
        .await
        .expect("middle");
    let rs_uid = rs.metadata.uid.unwrap();
    let mut pod_uids = Vec::new();
    for i in 0..2 {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{app}-pod-{i}"),
                         "ownerReferences": [owner_ref("Secret", "v1", &format!("{app}-rs"), &rs_uid)]},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let p = pods.create(&PostParams::default(), &p).await.expect("pod");
        pod_uids.push(p.metadata.uid.unwrap());
    }
    (d_uid, rs_uid, pod_uids)
}

async fn exists<K>(api: &Api<K>, name: &str, uid: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await.expect("get") {
        Some(o) => o.meta().uid.as_deref() == Some(uid),
        None => false,
    }
}

#[test]
fn background_deletion_collects_the_chain_after_the_owner() {
    rt().block_on(async {
        let c = client().await;
        let ns = "gc-background";
        namespace(&c, ns).await;
        let (_, rs_uid, pod_uids) = owner_chain(&c, ns, "web").await;
        let deps: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let rss: Api<Secret> = Api::namespaced(c.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
        deps.delete("web", &DeleteParams::background())
            .await
            .expect("delete");
        // Background: the owner goes at once.
        assert!(deps.get_opt("web").await.unwrap().is_none());
        eventually(20, "the ReplicaSet and its Pods are collected", || async {
            !exists(&rss, "web-rs", &rs_uid).await
                && !exists(&pods, "web-pod-0", &pod_uids[0]).await
                && !exists(&pods, "web-pod-1", &pod_uids[1]).await
        })
        .await;
    });
}

#[test]
fn foreground_deletion_removes_dependents_first() {
    rt().block_on(async {
        let c = client().await;
        let ns = "gc-foreground";
        namespace(&c, ns).await;
        let (d_uid, rs_uid, pod_uids) = owner_chain(&c, ns, "api").await;
        let deps: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let rss: Api<Secret> = Api::namespaced(c.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
        deps.delete("api", &DeleteParams::foreground())
            .await
            .expect("delete");
        // The owner stays, marked, while its dependents go.
        let d = deps.get_opt("api").await.unwrap();
        if let Some(d) = d {
            assert!(d.metadata.deletion_timestamp.is_some());
            assert!(d
                .metadata
                .finalizers
                .unwrap_or_default()
                .contains(&"foregroundDeletion".to_string()));
        }
        eventually(
            20,
            "the whole chain is deleted, dependents first",
            || async {
                let d = exists(&deps, "api", &d_uid).await;
                let rs = exists(&rss, "api-rs", &rs_uid).await;
                let p0 = exists(&pods, "api-pod-0", &pod_uids[0]).await;
                let p1 = exists(&pods, "api-pod-1", &pod_uids[1]).await;
                assert!(d || !rs, "the Deployment went before its ReplicaSet");
                assert!(rs || !(p0 || p1), "the ReplicaSet went before its Pods");
                !(d || rs || p0 || p1)
            },
        )
        .await;
    });
}

#[test]
fn orphan_deletion_leaves_dependents_without_the_reference() {
    rt().block_on(async {
        let c = client().await;
        let ns = "gc-orphan";
        namespace(&c, ns).await;
        let (d_uid, rs_uid, pod_uids) = owner_chain(&c, ns, "db").await;
        let deps: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let rss: Api<Secret> = Api::namespaced(c.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
        let d = deps
            .delete("db", &DeleteParams::orphan())
            .await
            .expect("delete")
            .left()
            .expect("the owner is kept while orphaning");
        assert!(d
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"orphan".to_string()));
        eventually(
            20,
            "the Deployment goes once its dependents are orphaned",
            || async { !exists(&deps, "db", &d_uid).await },
        )
        .await;
        let rs = rss.get("db-rs").await.expect("the ReplicaSet stays");
        assert_eq!(rs.metadata.uid.as_deref(), Some(rs_uid.as_str()));
        assert!(rs.metadata.owner_references.unwrap_or_default().is_empty());
        // Only the orphaned owner's reference goes: the Pods keep their ReplicaSet.
        for (i, uid) in pod_uids.iter().enumerate() {
            let p = pods.get(&format!("db-pod-{i}")).await.expect("pod stays");
            assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
            let refs = p.metadata.owner_references.unwrap_or_default();
            assert_eq!(refs.len(), 1);
            assert_eq!(refs[0].uid, rs_uid);
        }
        // Deleting the ReplicaSet (background) then collects the Pods.
        rss.delete("db-rs", &DeleteParams::background())
            .await
            .unwrap();
        eventually(20, "the Pods follow their ReplicaSet", || async {
            !exists(&pods, "db-pod-0", &pod_uids[0]).await
                && !exists(&pods, "db-pod-1", &pod_uids[1]).await
        })
        .await;
    });
}

#[test]
fn deleting_a_namespace_removes_its_200_objects() {
    rt().block_on(async {
        let c = client().await;
        let ns = "many";
        namespace(&c, ns).await;
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
        for i in 0..150 {
            let cm: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}),
            )
            .unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
        for i in 0..50 {
            let s: Secret = serde_json::from_value(
                json!({"metadata": {"name": format!("s-{i}")}, "stringData": {"k": "v"}}),
            )
            .unwrap();
            secrets.create(&PostParams::default(), &s).await.unwrap();
        }
        let nss: Api<Namespace> = Api::all(c.clone());
        let t0 = Instant::now();
        let n = nss
            .delete(ns, &DeleteParams::default())
            .await
            .unwrap()
            .left()
            .expect("the namespace is kept while it is emptied");
        assert_eq!(
            n.status.and_then(|s| s.phase).as_deref(),
            Some("Terminating")
        );
        eventually(60, "the namespace and its content are gone", || async {
            nss.get_opt(ns).await.unwrap().is_none()
        })
        .await;
        eprintln!(
            "namespace with 200 objects deleted in {} ms",
            t0.elapsed().as_millis()
        );
        assert!(cms
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty());
        assert!(secrets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty());
    });
}

#[test]
fn a_namespace_waits_for_finalizers_and_says_so() {
    rt().block_on(async {
        let c = client().await;
        let ns = "held";
        namespace(&c, ns).await;
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "keep", "finalizers": ["example.com/hold"]},
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let nss: Api<Namespace> = Api::all(c.clone());
        nss.delete(ns, &DeleteParams::default()).await.unwrap();
        let condition = |n: &Namespace, ty: &str| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == ty).cloned())
        };
        eventually(30, "the namespace reports the finalizer that holds it", || async {
            let n = nss.get(ns).await.unwrap();
            condition(&n, "NamespaceFinalizersRemaining").is_some_and(|c| {
                c.status == "True"
                    && c.message.as_deref()
                        == Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
            })
        })
        .await;
        let n = nss.get(ns).await.unwrap();
        let rem = condition(&n, "NamespaceContentRemaining").expect("content condition");
        assert_eq!(rem.status, "True");
        assert_eq!(rem.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            rem.message.as_deref(),
            Some("Some resources are remaining: configmaps. has 1 resource instances")
        );
        let disc = condition(&n, "NamespaceDeletionDiscoveryFailure").expect("discovery condition");
        assert_eq!(disc.status, "False");
        assert_eq!(disc.reason.as_deref(), Some("ResourcesDiscovered"));
        // The held object is being deleted; releasing it lets the namespace go.
        let kept = cms.get("keep").await.unwrap();
        assert!(kept.metadata.deletion_timestamp.is_some());
        cms.patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        eventually(40, "the namespace goes once the finalizer is gone", || async {
            nss.get_opt(ns).await.unwrap().is_none()
        })
        .await;
    });
}

#[test]
fn the_server_runs_its_components_under_leases() {
    rt().block_on(async {
        let c = client().await;
        let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
        for name in ["kube-controller-manager", "kube-scheduler"] {
            eventually(20, "the component holds its lease", || async {
                leases
                    .get_opt(name)
                    .await
                    .unwrap()
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .is_some_and(|h| h.contains('_'))
            })
            .await;
        }
    });
}

fn fast(name: &str, id: &str) -> leader::Config {
    leader::Config {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
        ..leader::Config::new(name, id)
    }
}

#[test]
fn leadership_hands_over_and_a_taken_lease_stops_the_leader() {
    rt().block_on(async {
        let c = client().await;
        let mut a = Elector::new(c.clone(), fast("election-test", "a"));
        let mut b = Elector::new(c.clone(), fast("election-test", "b"));
        a.acquire().await.unwrap();
        assert!(a.is_leader());
        // B stands while A leads; A's work ends after a while, releasing the lease.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let b_task = tokio::spawn(async move {
            b.acquire().await.unwrap();
            let t = Instant::now();
            let _ = tx.send(());
            (b, t)
        });
        let a_done = Instant::now() + Duration::from_secs(3);
        let out = a
            .hold(async {
                tokio::time::sleep_until(a_done.into()).await;
                7
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Finished(7));
        rx.await.expect("B acquires");
        let (mut b, b_at) = b_task.await.unwrap();
        assert!(
            b_at >= a_done,
            "B led only after A's work ended (A renewed meanwhile)"
        );
        assert!(b.is_leader());
        let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
        let l = leases.get("election-test").await.unwrap().spec.unwrap();
        assert_eq!(l.holder_identity.as_deref(), Some("b"));
        assert!(l.lease_transitions.unwrap_or(0) >= 1);
        // Someone else takes the lease: B's work is stopped.
        let intruder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            leases
                .patch(
                    "election-test",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"holderIdentity": "intruder"}})),
                )
                .await
                .unwrap();
        });
        let out = b.hold(std::future::pending::<()>()).await.unwrap();
        assert_eq!(out, Outcome::Lost);
        intruder.await.unwrap();
    });
}
