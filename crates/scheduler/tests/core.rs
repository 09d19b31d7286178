//! The pure filter/score core: every filter, every score, the FailedScheduling wording and
//! preemption, over hand-built clusters (no I/O).

use std::sync::Arc;

use h8s_scheduler::messages::*;
use h8s_scheduler::scores::*;
use h8s_scheduler::{preempt, Cluster, Code, Options, PodInfo, ScheduleError, Scheduler};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

fn node(name: &str, cpu: &str, mem: &str, extra: Value) -> Node {
    let mut n = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "10Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    });
    merge(&mut n, extra);
    serde_json::from_value(n).unwrap()
}

fn pod(name: &str, cpu: &str, mem: &str, extra: Value) -> PodInfo {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                  "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    });
    merge(&mut p, extra);
    let p: Pod = serde_json::from_value(p).unwrap();
    PodInfo::from_pod(&p)
}

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

fn bind(c: &mut Cluster, mut p: PodInfo, node: &str) {
    p.node_name = node.to_string();
    c.add_bound_pod(Arc::new(p));
}

fn sched() -> Scheduler {
    Scheduler::new(Options::default(), 7)
}

fn fail_message(c: &Cluster, p: &PodInfo) -> String {
    match sched().schedule(c, p) {
        Err(e) => e.message(),
        Ok(d) => panic!("{} was scheduled on {}", p.name, d.node),
    }
}

fn place(c: &Cluster, p: &PodInfo) -> String {
    match sched().schedule(c, p) {
        Ok(d) => d.node,
        Err(e) => panic!("{} not scheduled: {}", p.name, e.message()),
    }
}

#[test]
fn effective_request_init_containers_sidecars_and_overhead() {
    // Example from Kubernetes' docs: max(sum of containers, largest init container).
    let p = pod(
        "p",
        "2",
        "1G",
        json!({"spec": {
            "containers": [
                {"name": "c1", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                {"name": "c2", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "1G"}}}
            ],
            "initContainers": [
                {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                {"name": "i2", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "3G"}}}
            ],
            "overhead": {"cpu": "250m", "memory": "120Mi"}
        }}),
    );
    assert_eq!(p.requests.milli_cpu, 3000 + 250);
    assert_eq!(p.requests.memory, 3_000_000_000 + 120 * 1024 * 1024);
    // A sidecar (restartPolicy Always) adds to the containers and to later init containers.
    let p = pod(
        "s",
        "1",
        "1Gi",
        json!({"spec": {
            "initContainers": [
                {"name": "side", "image": "x", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "500m"}}},
                {"name": "init", "image": "x", "resources": {"requests": {"cpu": "2"}}}
            ]
        }}),
    );
    // init phase: 2 + 0.5 = 2.5; running: 1 + 0.5 = 1.5 → 2.5.
    assert_eq!(p.requests.milli_cpu, 2500);
    // A limit without a request is the request.
    let p = pod(
        "l",
        "1",
        "1Gi",
        json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"limits": {"cpu": "3", "memory": "2Gi"}}}]}}),
    );
    assert_eq!(p.requests.milli_cpu, 3000);
    assert_eq!(p.requests.memory, 2 << 30);
    // Best effort: zero requests, Kubernetes' non-zero defaults for scoring.
    let p = pod(
        "b",
        "0",
        "0",
        json!({"spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
    assert!(p.requests.is_zero());
    assert_eq!(p.non_zero_cpu, 100);
    assert_eq!(p.non_zero_mem, 200 << 20);
}

#[test]
fn resources_fit_and_message_wording() {
    let mut c = Cluster::new();
    c.upsert_node(&node("n1", "2", "1Gi", json!({})));
    c.upsert_node(&node(
        "n2",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
    ));
    c.upsert_node(&node(
        "n3",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}),
    ));
    let p = pod("big", "1", "2Gi", json!({}));
    let err = sched().schedule(&c, &p).unwrap_err();
    assert_eq!(
        err.message(),
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
    );
    let ScheduleError::Fit(fit) = err else {
        panic!()
    };
    // Memory beyond the node's whole allocatable: preemption cannot help anywhere.
    let msg = preempt(&c, &p, &fit).unwrap_err().message;
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // cpu and memory both short: both reasons, counted per node.
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "1", "1Gi", json!({})));
    c.upsert_node(&node("b", "1", "1Gi", json!({})));
    bind(&mut c, pod("x", "800m", "800Mi", json!({})), "a");
    bind(&mut c, pod("y", "800m", "800Mi", json!({})), "b");
    assert_eq!(
        fail_message(&c, &pod("p", "500m", "500Mi", json!({}))),
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
    );
    // Too many pods.
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "a",
        "8",
        "8Gi",
        json!({"status": {"allocatable": {"pods": "1"}}}),
    ));
    bind(&mut c, pod("x", "0", "0", json!({})), "a");
    assert_eq!(
        fail_message(&c, &pod("p", "100m", "1Mi", json!({}))),
        "0/1 nodes are available: 1 Too many pods."
    );
    // Ephemeral storage and an extended resource.
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "8", "8Gi", json!({})));
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests":
            {"cpu": "1", "ephemeral-storage": "20Gi", "example.com/gpu": "1"}}}]}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        "0/1 nodes are available: 1 Insufficient ephemeral-storage, 1 Insufficient example.com/gpu."
    );
    // The pod overhead counts: 1.9 cpu + 200m overhead does not fit in 2.
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "2", "8Gi", json!({})));
    let p = pod(
        "p",
        "1900m",
        "1Gi",
        json!({"spec": {"overhead": {"cpu": "200m"}}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    let p = pod(
        "p",
        "1800m",
        "1Gi",
        json!({"spec": {"overhead": {"cpu": "200m"}}}),
    );
    assert_eq!(place(&c, &p), "a");
}

#[test]
fn no_nodes() {
    let c = Cluster::new();
    assert_eq!(
        fail_message(&c, &pod("p", "1", "1Gi", json!({}))),
        "no nodes available to schedule pods"
    );
}

#[test]
fn reasons_sorted_as_strings() {
    // 10 nodes with one reason and 2 with another: "10 …" sorts before "2 …".
    let mut c = Cluster::new();
    for i in 0..10 {
        c.upsert_node(&node(&format!("small{i}"), "1", "1Gi", json!({})));
    }
    for i in 0..2 {
        c.upsert_node(&node(
            &format!("cordoned{i}"),
            "8",
            "8Gi",
            json!({"spec": {"unschedulable": true}}),
        ));
    }
    assert_eq!(
        fail_message(&c, &pod("p", "2", "1Mi", json!({}))),
        format!("0/12 nodes are available: 10 Insufficient cpu, 2 {ERR_UNSCHEDULABLE}.")
    );
}

#[test]
fn node_unschedulable_and_its_toleration() {
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "a",
        "8",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    ));
    let p = pod("p", "1", "1Gi", json!({}));
    assert_eq!(
        fail_message(&c, &p),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(place(&c, &p), "a");
}

#[test]
fn node_name() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "8", "8Gi", json!({})));
    let mut p = pod("p", "1", "1Gi", json!({}));
    p.node_name = "b".into();
    assert_eq!(
        fail_message(&c, &p),
        format!("0/1 nodes are available: 1 {ERR_NODE_NAME}.")
    );
}

#[test]
fn taints_and_tolerations() {
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "a",
        "8",
        "8Gi",
        json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "other", "value": "x", "effect": "PreferNoSchedule"}
        ]}}),
    ));
    let plain = pod("p", "1", "1Gi", json!({}));
    assert_eq!(
        fail_message(&c, &plain),
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    );
    for tol in [
        json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}),
        json!({"key": "dedicated", "value": "gpu"}),
        json!({"key": "dedicated", "operator": "Exists"}),
        json!({"operator": "Exists"}),
    ] {
        let p = pod("p", "1", "1Gi", json!({"spec": {"tolerations": [tol]}}));
        assert_eq!(place(&c, &p), "a");
    }
    for tol in [
        json!({"key": "dedicated", "operator": "Equal", "value": "cpu"}),
        json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "other", "operator": "Exists"}),
    ] {
        let p = pod("p", "1", "1Gi", json!({"spec": {"tolerations": [tol]}}));
        assert!(sched().schedule(&c, &p).is_err());
    }
}

#[test]
fn node_selector_and_required_node_affinity() {
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "a",
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "z1", "cores": "4"}}}),
    ));
    c.upsert_node(&node(
        "b",
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "z2", "cores": "16"}}}),
    ));
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"zone": "z2"}}}),
    );
    assert_eq!(place(&c, &p), "b");
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"nodeSelector": {"zone": "z3"}}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    let aff = |exprs: Value, fields: Value| {
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": exprs, "matchFields": fields}]}}}}})
    };
    let p = pod(
        "p",
        "1",
        "1Gi",
        aff(
            json!([{"key": "cores", "operator": "Gt", "values": ["8"]}]),
            json!([]),
        ),
    );
    assert_eq!(place(&c, &p), "b");
    let p = pod(
        "p",
        "1",
        "1Gi",
        aff(
            json!([{"key": "cores", "operator": "Lt", "values": ["8"]}]),
            json!([]),
        ),
    );
    assert_eq!(place(&c, &p), "a");
    let p = pod(
        "p",
        "1",
        "1Gi",
        aff(
            json!([]),
            json!([{"key": "metadata.name", "operator": "In", "values": ["a"]}]),
        ),
    );
    assert_eq!(place(&c, &p), "a");
    let p = pod(
        "p",
        "1",
        "1Gi",
        aff(
            json!([{"key": "zone", "operator": "NotIn", "values": ["z1", "z2"]}]),
            json!([]),
        ),
    );
    assert!(fail_message(&c, &p).contains("2 node(s) didn't match Pod's node affinity/selector"));
}

#[test]
fn host_ports() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "8", "8Gi", json!({})));
    let with_port = |name: &str, port: i32, ip: &str, proto: &str| {
        pod(
            name,
            "100m",
            "1Mi",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}),
        )
    };
    bind(&mut c, with_port("x", 8080, "", "TCP"), "a");
    assert_eq!(
        fail_message(&c, &with_port("p", 8080, "10.0.0.1", "TCP")),
        format!("0/1 nodes are available: 1 {ERR_NODE_PORTS}.")
    );
    assert_eq!(place(&c, &with_port("p", 8080, "", "UDP")), "a");
    assert_eq!(place(&c, &with_port("p", 8081, "", "TCP")), "a");
    // Freed when the pod goes.
    c.remove_pod("uid-x");
    assert_eq!(place(&c, &with_port("p", 8080, "", "TCP")), "a");
}

fn zoned(c: &mut Cluster, name: &str, zone: &str) {
    c.upsert_node(&node(
        name,
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
    ));
}

#[test]
fn inter_pod_affinity_filters() {
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z2");
    bind(
        &mut c,
        pod(
            "db",
            "100m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        "a",
    );
    let term = |app: &str, key: &str| json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]);
    // Affinity: with the db's zone.
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "topology.kubernetes.io/zone")}}}}),
    );
    assert_eq!(place(&c, &p), "a");
    // Anti-affinity: away from it.
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "topology.kubernetes.io/zone")}}}}),
    );
    assert_eq!(place(&c, &p), "b");
    // Affinity to pods that exist nowhere, not matching itself: refused everywhere.
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache", "topology.kubernetes.io/zone")}}}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        format!("0/2 nodes are available: 2 {ERR_AFFINITY}.")
    );
    // ... unless it is the first of its own group.
    let p = pod(
        "cache",
        "100m",
        "1Mi",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache", "topology.kubernetes.io/zone")}}}}),
    );
    assert!(sched().schedule(&c, &p).is_ok());
    // Anti-affinity to the db on both zones.
    bind(
        &mut c,
        pod(
            "db2",
            "100m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        "b",
    );
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "topology.kubernetes.io/zone")}}}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        format!("0/2 nodes are available: 2 {ERR_ANTI}.")
    );
    // An existing pod's anti-affinity keeps matching pods off its zone.
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z2");
    bind(
        &mut c,
        pod(
            "loner",
            "100m",
            "1Mi",
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web", "topology.kubernetes.io/zone")}}}}),
        ),
        "a",
    );
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"metadata": {"labels": {"app": "web"}}}),
    );
    assert_eq!(place(&c, &p), "b");
    c.upsert_node(&node(
        "b",
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "z1"}}}),
    ));
    assert_eq!(
        fail_message(&c, &p),
        format!("0/2 nodes are available: 2 {ERR_EXISTING_ANTI}.")
    );
    // A node without the topology key cannot satisfy affinity.
    let mut c = Cluster::new();
    c.upsert_node(&node("plain", "8", "8Gi", json!({})));
    bind(
        &mut c,
        pod(
            "db",
            "100m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        "plain",
    );
    let p = pod(
        "web",
        "100m",
        "1Mi",
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "topology.kubernetes.io/zone")}}}}),
    );
    assert_eq!(
        fail_message(&c, &p),
        format!("0/1 nodes are available: 1 {ERR_AFFINITY}.")
    );
}

#[test]
fn affinity_namespaces_and_namespace_selector() {
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z2");
    c.set_namespace("default", Default::default());
    c.set_namespace("prod", [("env".to_string(), "prod".to_string())].into());
    bind(
        &mut c,
        pod(
            "db",
            "100m",
            "1Mi",
            json!({"metadata": {"namespace": "prod", "labels": {"app": "db"}}}),
        ),
        "b",
    );
    let with = |extra: Value| {
        let mut t = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"});
        merge(&mut t, extra);
        pod(
            "web",
            "100m",
            "1Mi",
            json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}}}),
        )
    };
    // The pod's own namespace by default: the prod db does not count.
    assert!(sched().schedule(&c, &with(json!({}))).is_err());
    assert_eq!(place(&c, &with(json!({"namespaces": ["prod"]}))), "b");
    assert_eq!(
        place(
            &c,
            &with(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}))
        ),
        "b"
    );
    assert_eq!(place(&c, &with(json!({"namespaceSelector": {}}))), "b");
}

#[test]
fn topology_spread_filter() {
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z2");
    let lbl = json!({"metadata": {"labels": {"app": "web"}}});
    bind(&mut c, pod("w1", "100m", "1Mi", lbl.clone()), "a");
    let spread = |key: &str, when: &str, extra: Value| {
        let mut k = json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when,
                           "labelSelector": {"matchLabels": {"app": "web"}}});
        merge(&mut k, extra);
        pod(
            "w2",
            "100m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [k]}}),
        )
    };
    let p = spread("topology.kubernetes.io/zone", "DoNotSchedule", json!({}));
    assert_eq!(place(&c, &p), "b");
    bind(&mut c, pod("w3", "100m", "1Mi", lbl.clone()), "b");
    bind(&mut c, pod("w4", "100m", "1Mi", lbl.clone()), "b");
    // z1 has 1, z2 has 2: only z1 keeps the skew within 1.
    assert_eq!(place(&c, &p), "a");
    // A node missing the key is refused as unresolvable.
    c.upsert_node(&node("nolabel", "8", "8Gi", json!({})));
    let p = spread(
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
        json!({"maxSkew": 1}),
    );
    let mut s = sched();
    for _ in 0..3 {
        assert_eq!(s.schedule(&c, &p).unwrap().node, "a");
    }
    // minDomains above the number of domains makes the global minimum 0.
    let p = spread(
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
        json!({"minDomains": 3}),
    );
    let msg = fail_message(&c, &p);
    assert_eq!(
        msg,
        // Sorted as strings, as kube-scheduler does.
        format!("0/3 nodes are available: 1 {ERR_SPREAD_LABEL}, 2 {ERR_SPREAD}.")
    );
    // ScheduleAnyway never refuses, it scores: the emptier zone wins.
    let p = spread("topology.kubernetes.io/zone", "ScheduleAnyway", json!({}));
    let mut c2 = Cluster::new();
    zoned(&mut c2, "a", "z1");
    zoned(&mut c2, "b", "z2");
    for i in 0..3 {
        bind(
            &mut c2,
            pod(&format!("x{i}"), "100m", "1Mi", lbl.clone()),
            "a",
        );
    }
    assert_eq!(place(&c2, &p), "b");
}

#[test]
fn least_and_balanced_allocation_scores() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "4", "4Gi", json!({})));
    let n = c.node("a").unwrap();
    let p = pod("p", "1", "1Gi", json!({}));
    // (4-1)/4 = 75 for both cpu and memory.
    assert_eq!(least_allocated(&p, n), 75);
    assert_eq!(balanced_allocation(&p, n), 100);
    let p = pod("p", "2", "1Gi", json!({}));
    // cpu 50, memory 75 → 62; fractions 0.5 and 0.25 → std 0.125 → 87.
    assert_eq!(least_allocated(&p, n), 62);
    assert_eq!(balanced_allocation(&p, n), 87);
    // Least allocated prefers the emptier node.
    bind(&mut c, pod("x", "3", "3Gi", json!({})), "a");
    c.upsert_node(&node("b", "4", "4Gi", json!({})));
    assert_eq!(place(&c, &pod("p", "500m", "512Mi", json!({}))), "b");
}

#[test]
fn taint_and_node_affinity_scores() {
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "soft",
        "8",
        "8Gi",
        json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}}),
    ));
    c.upsert_node(&node("clean", "8", "8Gi", json!({})));
    let p = pod("p", "1", "1Gi", json!({}));
    let tols = prefer_no_schedule_tolerations(&p);
    let mut raw = vec![
        taint_count(&tols, c.node("soft").unwrap()),
        taint_count(&tols, c.node("clean").unwrap()),
    ];
    assert_eq!(raw, vec![1, 0]);
    default_normalize(&mut raw, true);
    assert_eq!(raw, vec![0, 100]);
    assert_eq!(place(&c, &p), "clean");
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}]}}),
    );
    let tols = prefer_no_schedule_tolerations(&p);
    assert_eq!(taint_count(&tols, c.node("soft").unwrap()), 0);

    // Preferred node affinity: weights summed, then normalized to 100.
    let mut c = Cluster::new();
    c.upsert_node(&node(
        "a",
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    ));
    c.upsert_node(&node(
        "b",
        "8",
        "8Gi",
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
    ));
    let p = pod(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
        ]}}}}),
    );
    let mut raw = vec![
        node_affinity_score(&p, c.node("a").unwrap()),
        node_affinity_score(&p, c.node("b").unwrap()),
    ];
    assert_eq!(raw, vec![35, 5]);
    default_normalize(&mut raw, false);
    assert_eq!(raw, vec![100, 14]);
    assert_eq!(place(&c, &p), "a");
}

#[test]
fn preferred_pod_affinity_and_default_spreading_scores() {
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z2");
    bind(
        &mut c,
        pod(
            "db",
            "100m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        "b",
    );
    let pref = |kind: &str| {
        json!({"spec": {"affinity": {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}},
              "topologyKey": "topology.kubernetes.io/zone"}}]}}}})
    };
    let p = pod("p", "100m", "1Mi", pref("podAffinity"));
    let feasible: Vec<_> = ["a", "b"].iter().map(|n| c.node(n).unwrap()).collect();
    assert_eq!(inter_pod_affinity(&c, &p, &feasible), vec![0, 100]);
    assert_eq!(place(&c, &p), "b");
    let p = pod("p", "100m", "1Mi", pref("podAntiAffinity"));
    assert_eq!(inter_pod_affinity(&c, &p, &feasible), vec![100, 0]);
    assert_eq!(place(&c, &p), "a");

    // Pods of one controller spread over nodes by default (system default constraints).
    let mut c = Cluster::new();
    zoned(&mut c, "a", "z1");
    zoned(&mut c, "b", "z1");
    let owned = |name: &str| {
        pod(
            name,
            "10m",
            "1Mi",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "rs-1", "controller": true}]}}),
        )
    };
    bind(&mut c, owned("r1"), "a");
    bind(&mut c, owned("r2"), "a");
    let feasible: Vec<_> = ["a", "b"].iter().map(|n| c.node(n).unwrap()).collect();
    let s = topology_spread(&c, &owned("r3"), &feasible).unwrap();
    assert!(s[1] > s[0], "{s:?}");
    assert_eq!(place(&c, &owned("r3")), "b");
    // A pod without a controller has no default spreading.
    assert!(topology_spread(&c, &pod("lone", "1m", "1Mi", json!({})), &feasible).is_none());
}

#[test]
fn percentage_of_nodes_to_score() {
    assert_eq!(num_feasible(50), 50);
    assert_eq!(num_feasible(1000), 420);
    assert_eq!(num_feasible(5000), 500);
    assert_eq!(num_feasible(200), 100);
    fn num_feasible(n: usize) -> usize {
        h8s_scheduler::num_feasible_nodes_to_find(n, 0)
    }
}

#[test]
fn assumed_pods_count_before_binding() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "2", "2Gi", json!({})));
    c.upsert_node(&node("b", "2", "2Gi", json!({})));
    let mut s = sched();
    let mut placed = Vec::new();
    for i in 0..4 {
        let p = pod(&format!("p{i}"), "1", "1Gi", json!({}));
        let d = s.schedule(&c, &p).unwrap();
        c.assume(&p, &d.node);
        placed.push(d.node);
    }
    placed.sort();
    assert_eq!(placed, vec!["a", "a", "b", "b"]);
    let p = pod("p5", "1", "1Gi", json!({}));
    assert!(s.schedule(&c, &p).is_err());
    // A failed binding forgets the assumption.
    c.remove_pod("uid-p0");
    assert!(s.schedule(&c, &p).is_ok());
}

#[test]
fn preemption_picks_fewest_lowest_priority_victims() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "4", "4Gi", json!({})));
    c.upsert_node(&node("b", "4", "4Gi", json!({})));
    let prio =
        |name: &str, cpu: &str, p: i32| pod(name, cpu, "100Mi", json!({"spec": {"priority": p}}));
    // a: two pods of priority 10 (2 cpu each); b: one of priority 5 (3 cpu) and one of 1000.
    bind(&mut c, prio("a1", "2", 10), "a");
    bind(&mut c, prio("a2", "2", 10), "a");
    bind(&mut c, prio("b1", "3", 5), "b");
    bind(&mut c, prio("b2", "1", 1000), "b");
    let hi = prio("hi", "3", 100);
    let ScheduleError::Fit(fit) = sched().schedule(&c, &hi).unwrap_err() else {
        panic!()
    };
    let p = preempt(&c, &hi, &fit).unwrap();
    assert_eq!(p.node, "b");
    let v: Vec<_> = p.victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(v, vec!["b1"]);

    // Nothing of lower priority anywhere.
    let low = prio("low", "3", 1);
    let ScheduleError::Fit(fit) = sched().schedule(&c, &low).unwrap_err() else {
        panic!()
    };
    assert_eq!(
        preempt(&c, &low, &fit).unwrap_err().message,
        "0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // preemptionPolicy Never.
    let never = pod(
        "n",
        "3",
        "100Mi",
        json!({"spec": {"priority": 100, "preemptionPolicy": "Never"}}),
    );
    let ScheduleError::Fit(fit) = sched().schedule(&c, &never).unwrap_err() else {
        panic!()
    };
    assert_eq!(
        preempt(&c, &never, &fit).unwrap_err().message,
        "not eligible due to preemptionPolicy=Never."
    );
    // Evicting everything lower is not enough: the filter's reason.
    let huge = prio("huge", "3500m", 8);
    let ScheduleError::Fit(fit) = sched().schedule(&c, &huge).unwrap_err() else {
        panic!()
    };
    assert_eq!(
        preempt(&c, &huge, &fit).unwrap_err().message,
        "0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod."
    );
}

#[test]
fn preemptor_waits_for_its_terminating_victims() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "1", "2Gi", json!({})));
    let victim = pod(
        "v",
        "1",
        "100Mi",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"priority": 1}}),
    );
    assert!(victim.terminating);
    bind(&mut c, victim, "a");
    let mut hi = pod("hi", "1", "100Mi", json!({"spec": {"priority": 10}}));
    hi.nominated_node = "a".into();
    let ScheduleError::Fit(fit) = sched().schedule(&c, &hi).unwrap_err() else {
        panic!()
    };
    let no = preempt(&c, &hi, &fit).unwrap_err();
    assert_eq!(
        no.message,
        "not eligible due to a terminating pod on the nominated node."
    );
    assert!(!no.clear_nomination);
}

#[test]
fn nominated_pods_hold_room() {
    let mut c = Cluster::new();
    c.upsert_node(&node("a", "2", "2Gi", json!({})));
    let mut hi = pod("hi", "2", "1Gi", json!({"spec": {"priority": 100}}));
    hi.nominated_node = "a".into();
    c.nominate(Arc::new(hi.clone()), "a");
    // A lower-priority pod may not take the room held for the nominated pod.
    let low = pod("low", "1", "1Gi", json!({"spec": {"priority": 1}}));
    assert!(sched().schedule(&c, &low).is_err());
    // The nominated pod itself goes there.
    assert_eq!(place(&c, &hi), "a");
    c.clear_nominated(&hi.uid);
    assert_eq!(place(&c, &low), "a");
}

#[test]
fn spreads_over_equal_nodes() {
    let mut c = Cluster::new();
    for i in 0..10 {
        c.upsert_node(&node(&format!("n{i}"), "100", "100Gi", json!({})));
    }
    let mut s = sched();
    for i in 0..100 {
        let p = pod(&format!("p{i}"), "100m", "100Mi", json!({}));
        let d = s.schedule(&c, &p).unwrap();
        c.assume(&p, &d.node);
    }
    for n in c.nodes() {
        assert_eq!(n.pods.len(), 10, "{} has {}", n.name, n.pods.len());
    }
    assert_eq!(Code::Unschedulable, Code::Unschedulable);
}

/// The core's own speed (no API): 10,000 pods over 1,000 nodes. Run with
/// `cargo test --release -p h8s-scheduler --test core core_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check; run it in release"]
fn core_throughput() {
    let mut c = Cluster::new();
    for i in 0..1000 {
        c.upsert_node(&node(
            &format!("n{i}"),
            "32",
            "64Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": format!("z{}", i % 3)}}}),
        ));
    }
    let pods: Vec<PodInfo> = (0..10_000)
        .map(|i| pod(&format!("p{i}"), "100m", "128Mi", json!({})))
        .collect();
    let mut s = sched();
    let t0 = std::time::Instant::now();
    for p in &pods {
        let d = s.schedule(&c, p).unwrap();
        c.assume(p, &d.node);
    }
    let el = t0.elapsed();
    println!(
        "{} pods over 1000 nodes in {:?}: {:.0} pods/s",
        pods.len(),
        el,
        pods.len() as f64 / el.as_secs_f64()
    );
}
