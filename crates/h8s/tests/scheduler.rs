//! The scheduler against a real `h8s server`: Node objects created by the test (allocatable,
//! Ready, a renewed Lease; no agent), pods placed through `pods/binding`, FailedScheduling
//! events and PodScheduled conditions worded as kube-scheduler's, requeue on a node change,
//! taints and affinity, preemption by priority, and a binding the server refuses with 409
//! because the pod was bound meanwhile.
//!
//! The scheduler runs in the test process (`h8s_scheduler::run` with shortened timers) under
//! its own scheduler name, so whatever scheduler the server runs itself stays out of the way.

mod api_support;

use std::time::Duration;

use api_support::Server;
use h8s_client::k8s_openapi;
use h8s_client::kube;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

const SCHED: &str = "h8s-test-scheduler";

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

async fn make_node(c: &kube::Client, name: &str, cpu: &str, mem: &str, extra: Value) {
    let nodes: Api<Node> = Api::all(c.clone());
    let mut n = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
    });
    merge(&mut n, extra);
    let n: Node = serde_json::from_value(n).unwrap();
    nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
    let status = json!({"status": {
        "allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "10Gi"},
        "capacity": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "10Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}]
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
    renew_lease(c, name).await;
}

/// Renews the node's Lease, as an agent would, so the node lifecycle controller leaves it be.
async fn renew_lease(c: &kube::Client, node: &str) {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(40),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..Default::default()
    };
    let l = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(spec.clone()),
    };
    if leases.create(&PostParams::default(), &l).await.is_err() {
        let _ = leases
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await;
    }
}

async fn delete_nodes(c: &kube::Client, names: &[&str]) {
    let nodes: Api<Node> = Api::all(c.clone());
    for n in names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}

fn pod_json(name: &str, cpu: &str, mem: &str, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"schedulerName": SCHED, "terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    });
    merge(&mut p, extra);
    p
}

async fn make_pod(pods: &Api<Pod>, v: Value) -> Pod {
    let p: Pod = serde_json::from_value(v).unwrap();
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create pod")
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    wait_for(&format!("{name} to be bound"), || async {
        pods.get(name)
            .await
            .ok()
            .and_then(|p| p.spec.and_then(|s| s.node_name))
    })
    .await
}

async fn events_for(c: &kube::Client, ns: &str, pod: &str, reason: &str) -> Vec<Event> {
    let evs: Api<Event> = Api::namespaced(c.clone(), ns);
    evs.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(pod) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

async fn wait_event(c: &kube::Client, ns: &str, pod: &str, reason: &str, msg: &str) {
    wait_for(&format!("{reason} event {msg:?} on {pod}"), || async {
        let evs = events_for(c, ns, pod, reason).await;
        evs.iter()
            .any(|e| e.message.as_deref() == Some(msg))
            .then_some(())
            .or_else(|| {
                if let Some(e) = evs.last() {
                    eprintln!("{pod}: {reason} {:?}", e.message);
                }
                None
            })
    })
    .await
}

async fn make_ns(c: &kube::Client, name: &str) {
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    // The ServiceAccount admission wants the default account; the controller makes it
    // soon, the test makes sure of it now.
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), name);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating the default ServiceAccount: {e}"),
    }
}

/// A pod with a priority: through a PriorityClass when the server has the Priority
/// admission plugin, else (older servers) with spec.priority set directly.
async fn make_prio_pod(
    c: &kube::Client,
    pods: &Api<Pod>,
    mut v: Value,
    class: &str,
    value: i32,
) -> Pod {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let pcs: Api<PriorityClass> = Api::all(c.clone());
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": class}, "value": value
    }))
    .unwrap();
    let have_class = match pcs.create(&PostParams::default(), &pc).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 409 => true,
        Err(_) => false,
    };
    if have_class {
        let mut with = v.clone();
        merge(&mut with, json!({"spec": {"priorityClassName": class}}));
        let p = make_pod(pods, with).await;
        if p.spec.as_ref().and_then(|s| s.priority) == Some(value) {
            return p;
        }
        let name = p.metadata.name.clone().unwrap();
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
        wait_for("the pod to go", || async {
            pods.get(&name).await.is_err().then_some(())
        })
        .await;
    }
    merge(&mut v, json!({"spec": {"priority": value}}));
    make_pod(pods, v).await
}

fn sched_config() -> h8s_scheduler::Config {
    h8s_scheduler::Config {
        scheduler_name: SCHED.into(),
        instance: format!("{SCHED}-test"),
        pod_initial_backoff: Duration::from_millis(100),
        pod_max_backoff: Duration::from_millis(500),
        flush_interval: Duration::from_secs(1),
        max_unschedulable_duration: Duration::from_secs(20),
        ..Default::default()
    }
}

#[test]
fn scheduler_against_the_api() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    // No node agent for this machine: the test's nodes are the only ones.
    std::env::set_var("H8S_DISABLE_AGENT", "true");
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = h8s_client::from_kubeconfig(&server.kubeconfig)
            .await
            .expect("client");
        let sc = racing_client(c.clone());
        let sched = tokio::spawn(async move { h8s_scheduler::run(sc, sched_config()).await });
        // Leases renewed for the nodes this test makes.
        let hc = c.clone();
        tokio::spawn(async move {
            loop {
                for n in ["n1", "n2", "n3", "p1", "c1", "c2"] {
                    renew_lease(&hc, n).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });

        placement_taints_affinity_and_the_failure_message(&c).await;
        preemption(&c).await;
        binding_conflict(&c).await;

        assert!(
            !sched.is_finished(),
            "the scheduler stopped: {:?}",
            sched.await
        );
    });
}

async fn placement_taints_affinity_and_the_failure_message(c: &kube::Client) {
    make_ns(c, "s1").await;
    make_node(
        c,
        "n1",
        "2",
        "1Gi",
        json!({"metadata": {"labels": {"zone": "a"}}}),
    )
    .await;
    make_node(
        c,
        "n2",
        "4",
        "8Gi",
        // As the node lifecycle controller taints an unreachable node: NoSchedule and
        // NoExecute (every pod tolerates the latter for 300 s, by DefaultTolerationSeconds).
        json!({"metadata": {"labels": {"zone": "b"}}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}),
    )
    .await;
    make_node(
        c,
        "n3",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "c"}}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "s1");

    // A pod that fits goes to the only untainted node, with kube-scheduler's event.
    make_pod(&pods, pod_json("fits", "100m", "100Mi", json!({}))).await;
    assert_eq!(node_of(&pods, "fits").await, "n1");
    wait_event(
        c,
        "s1",
        "fits",
        "Scheduled",
        "Successfully assigned s1/fits to n1",
    )
    .await;

    // Too big for n1, and n2/n3 are tainted: Pending with the exact message.
    make_pod(&pods, pod_json("big", "100m", "2Gi", json!({}))).await;
    let msg = "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    wait_event(c, "s1", "big", "FailedScheduling", msg).await;
    let p = wait_for("PodScheduled=False", || async {
        let p = pods.get("big").await.ok()?;
        let conds = p.status.clone()?.conditions?;
        conds
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .cloned()
    })
    .await;
    assert_eq!(p.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(p.message.as_deref(), Some(msg));
    let ev = events_for(c, "s1", "big", "FailedScheduling").await;
    assert_eq!(ev[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev[0].source.as_ref().and_then(|s| s.component.as_deref()),
        Some(SCHED)
    );

    // Tolerating the taint and selecting n3 by label.
    make_pod(
        &pods,
        pod_json(
            "tolerant",
            "100m",
            "100Mi",
            json!({"spec": {"nodeSelector": {"zone": "c"}, "tolerations": [
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]}}),
        ),
    )
    .await;
    assert_eq!(node_of(&pods, "tolerant").await, "n3");
    // Required node affinity (zone In [b]) with a toleration: n2.
    make_pod(
        &pods,
        pod_json(
            "affine",
            "100m",
            "100Mi",
            json!({"spec": {"tolerations": [{"operator": "Exists"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}}),
        ),
    )
    .await;
    assert_eq!(node_of(&pods, "affine").await, "n2");
    // Anti-affinity to "affine" by zone, tolerating everything: not n2.
    make_pod(
        &pods,
        pod_json(
            "anti",
            "100m",
            "100Mi",
            json!({"spec": {"tolerations": [{"operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "affine"}}, "topologyKey": "zone"}]}}}}),
        ),
    )
    .await;
    assert_ne!(node_of(&pods, "anti").await, "n2");

    // The node grows: the pending pod is retried on the node update and placed.
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"allocatable": {"memory": "8Gi"}, "capacity": {"memory": "8Gi"}}})),
        )
        .await
        .unwrap();
    assert_eq!(node_of(&pods, "big").await, "n1");
    // The binding turned its PodScheduled condition True (kube-apiserver's BindingREST).
    let big = pods.get("big").await.unwrap();
    let cond = big
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "PodScheduled"))
        .expect("PodScheduled condition");
    assert_eq!(cond.status, "True");
    assert_eq!(cond.reason, None);

    // A binding names its pod by uid: one for a pod of the same name but another uid (a
    // pod deleted and created again) is a 409 and binds nothing.
    make_pod(
        &pods,
        pod_json(
            "other",
            "100m",
            "100Mi",
            json!({"spec": {"schedulerName": "nobody"}}),
        ),
    )
    .await;
    let b: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
        "metadata": {"name": "other", "uid": "not-the-uid"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}))
    .unwrap();
    let err = pods
        .create_subresource::<_, Value>("binding", "other", &PostParams::default(), &b)
        .await
        .expect_err("a binding for another uid");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    let other = pods.get("other").await.unwrap();
    assert_eq!(other.spec.and_then(|s| s.node_name), None);

    // Clean up: pods first (force, no agent here), then nodes.
    for p in ["fits", "big", "tolerant", "affine", "anti", "other"] {
        let _ = pods
            .delete(p, &DeleteParams::default().grace_period(0))
            .await;
    }
    delete_nodes(c, &["n1", "n2", "n3"]).await;
}

async fn preemption(c: &kube::Client) {
    make_ns(c, "s2").await;
    make_node(c, "p1", "1", "2Gi", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "s2");
    make_prio_pod(
        c,
        &pods,
        pod_json("low", "800m", "100Mi", json!({})),
        "h8s-test-low",
        10,
    )
    .await;
    assert_eq!(node_of(&pods, "low").await, "p1");
    make_prio_pod(
        c,
        &pods,
        pod_json("high", "800m", "100Mi", json!({})),
        "h8s-test-high",
        1000,
    )
    .await;
    // The low-priority pod is preempted: marked, deleted gracefully, with an event.
    let low = wait_for("low to be terminating", || async {
        let p = pods.get("low").await.ok()?;
        p.metadata.deletion_timestamp.is_some().then_some(p)
    })
    .await;
    let cond = low
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget condition");
    assert_eq!(cond.reason.as_deref(), Some("PreemptionByScheduler"));
    let high = pods.get("high").await.unwrap();
    let uid = high.metadata.uid.clone().unwrap();
    wait_event(
        c,
        "s2",
        "low",
        "Preempted",
        &format!("Preempted by pod {uid} on node p1"),
    )
    .await;
    // The preemptor waits nominated to the node, with the filter's message.
    wait_for("nominatedNodeName", || async {
        let p = pods.get("high").await.ok()?;
        (p.status?.nominated_node_name.as_deref() == Some("p1")).then_some(())
    })
    .await;
    wait_event(
        c,
        "s2",
        "high",
        "FailedScheduling",
        "0/1 nodes are available: 1 Insufficient cpu.",
    )
    .await;
    // The agent would finish the deletion; the test does it. Then high lands on p1.
    pods.delete("low", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(node_of(&pods, "high").await, "p1");
    let _ = pods
        .delete("high", &DeleteParams::default().grace_period(0))
        .await;
    delete_nodes(c, &["p1"]).await;
}

/// The scheduler's client, with a hook: just before the scheduler's binding of a pod named
/// `race-bind-*` reaches the server, the test binds that pod by hand to node `c2`; for a pod
/// named `race-del-*`, it deletes the pod (a finalizer keeps it). Either way the real server
/// answers the scheduler's binding with 409 (already bound; being deleted), as when an
/// earlier attempt's answer was lost, another scheduler won, or the pod was deleted.
fn racing_client(c: kube::Client) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let c = c.clone();
        async move {
            let path = req.uri().path().to_string();
            // /api/v1/namespaces/{ns}/pods/{name}/binding
            let parts: Vec<&str> = path.split('/').collect();
            if req.method() == http::Method::POST && parts.len() == 8 && parts[7] == "binding" {
                let (ns, name) = (parts[4], parts[6]);
                if name.starts_with("race-bind-") {
                    bind(&c, ns, name, "c2")
                        .await
                        .expect("the test's own binding");
                } else if name.starts_with("race-del-") {
                    Api::<Pod>::namespaced(c.clone(), ns)
                        .delete(name, &DeleteParams::default())
                        .await
                        .expect("the test's delete");
                }
            }
            c.send(req).await
        }
    });
    kube::Client::new(svc, "default")
}

async fn bind(c: &kube::Client, ns: &str, pod: &str, node: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    pods.create_subresource::<Value, Value>("binding", pod, &PostParams::default(), &b)
        .await
        .map(drop)
}

/// Bindings the server refuses with 409 (regression test of the scheduler's conflict path).
/// Each `race-*` pod fits only c1 and takes all its CPU, so the scheduler assumes it there.
/// 1. `race-del-a` is deleted (a finalizer keeps it) before the binding lands: the
///    scheduler must drop its assumption, or c1 stays full and step 2 never schedules.
/// 2. `race-bind-a` is bound to c2 by hand first: it stays there, c1 is free again (`next`
///    lands there) and c2 counts it (`waits`, which needs c2's CPU, does not fit).
async fn binding_conflict(c: &kube::Client) {
    make_ns(c, "s3").await;
    make_node(c, "c1", "2", "4Gi", json!({})).await;
    make_node(c, "c2", "2", "4Gi", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "s3");
    let on = |node: &str| json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": node}}});
    let mut held = pod_json("race-del-a", "2", "1Gi", on("c1"));
    merge(
        &mut held,
        json!({"metadata": {"finalizers": ["h8s.test/hold"]}}),
    );
    make_pod(&pods, held).await;
    wait_for("race-del-a to be deleting", || async {
        pods.get("race-del-a")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(drop)
    })
    .await;
    make_pod(&pods, pod_json("race-bind-a", "2", "1Gi", on("c1"))).await;
    assert_eq!(node_of(&pods, "race-bind-a").await, "c2");
    // The answer was a real 409: binding it again by hand gets one too.
    let err = bind(c, "s3", "race-bind-a", "c1")
        .await
        .expect_err("already bound");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err:?}"
    );
    make_pod(&pods, pod_json("next", "2", "1Gi", on("c1"))).await;
    assert_eq!(node_of(&pods, "next").await, "c1");
    make_pod(&pods, pod_json("waits", "1", "1Gi", on("c2"))).await;
    wait_for("waits to be unschedulable for lack of CPU", || async {
        events_for(c, "s3", "waits", "FailedScheduling")
            .await
            .iter()
            .any(|e| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("0/2 nodes are available: 1 Insufficient cpu"))
            })
            .then_some(())
    })
    .await;
    // The conflicts left the pods as they were: one bound where the test put it, one unbound.
    assert_eq!(node_of(&pods, "race-bind-a").await, "c2");
    let held = pods.get("race-del-a").await.unwrap();
    assert_eq!(held.spec.and_then(|s| s.node_name), None);
    let w = pods.get("waits").await.unwrap();
    assert_eq!(w.spec.and_then(|s| s.node_name), None);
    for p in ["race-bind-a", "race-del-a"] {
        assert!(
            events_for(c, "s3", p, "Scheduled").await.is_empty(),
            "{p}: the scheduler's binding did not land"
        );
    }
    pods.patch(
        "race-del-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    for p in ["race-bind-a", "next", "waits"] {
        let _ = pods
            .delete(p, &DeleteParams::default().grace_period(0))
            .await;
    }
    delete_nodes(c, &["c1", "c2"]).await;
}
