use serde_json::json;

use super::pod::{budget_covers, eviction_of, spend_budget, unhealthy_pod_may_go, Eviction};
use super::*;

fn res(g: &str, v: &str, plural: &str) -> &'static Resource {
    h8s_types::resources::find(g, v, plural).unwrap()
}

#[test]
fn kinds_get_their_strategies() {
    let pods = res("", "v1", "pods");
    assert!(of(pods).returns_deleted_object());
    assert_eq!(of(pods).subresource(pods, "binding"), Some(Sub::Binding));
    assert_eq!(of(pods).subresource(pods, "eviction"), Some(Sub::Eviction));
    assert_eq!(of(pods).subresource(pods, "status"), Some(Sub::Status));
    assert_eq!(of(pods).subresource(pods, "exec"), None);
    let svc = res("", "v1", "services");
    assert!(of(svc).returns_deleted_object());
    let rc = res("", "v1", "replicationcontrollers");
    assert_eq!(of(rc).default_propagation(), Propagation::Orphan);
    assert_eq!(of(rc).subresource(rc, "scale"), Some(Sub::Scale));
    let deploy = res("apps", "v1", "deployments");
    assert_eq!(of(deploy).default_propagation(), Propagation::Background);
    assert!(of(deploy).tracks_generation(deploy));
    assert!(!of(deploy).returns_deleted_object());
    let ns = res("", "v1", "namespaces");
    assert_eq!(of(ns).subresource(ns, "finalize"), Some(Sub::Finalize));
    assert!(of(ns).deletes_by_finalizing());
    assert!(!of(ns).tracks_generation(ns));
    let node = res("", "v1", "nodes");
    assert!(!of(node).tracks_generation(node));
    assert!(!of(res("", "v1", "persistentvolumeclaims")).tracks_generation(node));
    let cm = res("", "v1", "configmaps");
    assert!(!of(cm).tracks_generation(cm));
    let es = res("discovery.k8s.io", "v1", "endpointslices");
    assert!(of(es).tracks_generation(es));
}

#[test]
fn updates_split_spec_from_status() {
    let deploy = res("apps", "v1", "deployments");
    let old = json!({"spec": {"replicas": 1}, "status": {"replicas": 1}});
    let mut main = json!({"spec": {"replicas": 3}, "status": {"replicas": 9}});
    of(deploy).prepare_for_update(deploy, None, &old, &mut main);
    assert_eq!(
        main,
        json!({"spec": {"replicas": 3}, "status": {"replicas": 1}})
    );
    let mut status = json!({"spec": {"replicas": 3}, "status": {"replicas": 9}});
    of(deploy).prepare_for_update(deploy, Some(Sub::Status), &old, &mut status);
    assert_eq!(
        status,
        json!({"spec": {"replicas": 1}, "status": {"replicas": 9}})
    );
    let ns = res("", "v1", "namespaces");
    let old = json!({"metadata": {"name": "x"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}});
    let mut fin =
        json!({"metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"finalizers": []}});
    of(ns).prepare_for_update(ns, Some(Sub::Finalize), &old, &mut fin);
    assert_eq!(fin["spec"]["finalizers"], json!([]));
    assert_eq!(fin["status"]["phase"], "Terminating");
    assert!(fin["metadata"].get("labels").is_none());
}

#[test]
fn services_keep_their_addresses() {
    let svc = res("", "v1", "services");
    let old = json!({"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"port": 80, "nodePort": 30001}], "type": "NodePort"}});
    let mut new = json!({"spec": {"ports": [{"port": 80}], "type": "NodePort"}});
    of(svc).prepare_for_update(svc, None, &old, &mut new);
    assert_eq!(new["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
    // A switch to ClusterIP drops the node port the edit left as it was (and a changed
    // one stays, for validation to refuse); the cluster IP stays.
    let mut to_cip = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
        "ports": [{"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 30002}]}});
    of(svc).prepare_for_update(svc, None, &old, &mut to_cip);
    assert!(to_cip["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(to_cip["spec"]["ports"][1]["nodePort"], 30002);
    assert_eq!(to_cip["spec"]["clusterIP"], "10.96.0.10");
    // A switch to ExternalName drops the unchanged cluster IP.
    let mut to_ext = json!({"spec": {"type": "ExternalName", "externalName": "a.example",
        "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
    of(svc).prepare_for_update(svc, None, &old, &mut to_ext);
    assert!(to_ext["spec"].get("clusterIP").is_none(), "{to_ext}");
    // LoadBalancer without node ports keeps none.
    let mut lb = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
        "ports": [{"port": 80}]}});
    of(svc).prepare_for_update(svc, None, &old, &mut lb);
    assert!(lb["spec"]["ports"][0].get("nodePort").is_none());
}

#[test]
fn nodes_register_with_their_status() {
    let node = res("", "v1", "nodes");
    let mut o = json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}});
    of(node).prepare_for_create(node, &UserInfo::default(), &mut o);
    assert_eq!(o["status"]["capacity"]["cpu"], "2");
    let pods = res("", "v1", "pods");
    let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}});
    of(pods).prepare_for_create(pods, &UserInfo::default(), &mut p);
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn pod_grace_periods() {
    let pods = res("", "v1", "pods");
    let s = of(pods);
    let unbound = json!({"spec": {}});
    assert_eq!(s.grace_period(&unbound, None), None);
    let bound = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
    assert_eq!(s.grace_period(&bound, None), Some(30));
    assert_eq!(s.grace_period(&bound, Some(5)), Some(5));
    assert_eq!(s.grace_period(&bound, Some(0)), None);
    let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
    assert_eq!(s.grace_period(&done, None), None);
    let cm = res("", "v1", "configmaps");
    assert_eq!(of(cm).grace_period(&bound, None), None);
}

#[test]
fn priority_classes_of_the_system_stay() {
    let pc = h8s_types::resources::find("scheduling.k8s.io", "v1", "priorityclasses");
    if let Some(pc) = pc {
        let s = of(pc);
        assert!(s
            .check_delete(&json!({"metadata": {"name": "system-node-critical"}}))
            .is_err());
        assert!(s
            .check_delete(&json!({"metadata": {"name": "high"}}))
            .is_ok());
    }
}

fn running(labels: serde_json::Value, ready: bool) -> serde_json::Value {
    json!({"metadata": {"name": "p", "labels": labels},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
}

fn budget(allowed: i64) -> serde_json::Value {
    json!({"metadata": {"name": "b", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1},
        "status": {"observedGeneration": 2, "disruptionsAllowed": allowed,
                   "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}})
}

#[test]
fn eviction_follows_the_budget() {
    let pod = running(json!({"app": "web"}), true);
    assert_eq!(eviction_of(&pod), Eviction::CheckBudget);
    let pending = json!({"status": {"phase": "Pending"}});
    assert_eq!(eviction_of(&pending), Eviction::IgnoreBudgets);
    assert!(budget_covers(&budget(1), &pod));
    assert!(!budget_covers(
        &budget(1),
        &running(json!({"app": "db"}), true)
    ));
    // policy/v1: an empty selector covers every pod, a missing one none.
    assert!(budget_covers(&json!({"spec": {"selector": {}}}), &pod));
    assert!(!budget_covers(&json!({"spec": {}}), &pod));

    let e = spend_budget(&budget(0), "p", "2026-01-01T00:00:00Z").unwrap_err();
    assert_eq!(e.code, 429);
    assert_eq!(e.reason, "TooManyRequests");
    assert_eq!(
        e.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(e.details.causes[0].reason, "DisruptionBudget");
    assert_eq!(
        e.details.causes[0].message,
        "The disruption budget b needs 2 healthy pods and has 2 currently"
    );
    assert_eq!(e.details.retry_after, None);

    let new = spend_budget(&budget(1), "p", "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(new["status"]["disruptionsAllowed"], 0);
    assert_eq!(new["status"]["disruptedPods"]["p"], "2026-01-01T00:00:00Z");
    assert_eq!(new["status"]["conditions"][0]["reason"], "InsufficientPods");

    let mut stale = budget(1);
    stale["status"]["observedGeneration"] = json!(1);
    let e = spend_budget(&stale, "p", "now").unwrap_err();
    assert_eq!((e.code, e.details.retry_after), (429, Some(10)));
    assert!(e.details.causes[0]
        .message
        .contains("still being processed"));
    assert_eq!(spend_budget(&budget(-1), "p", "now").unwrap_err().code, 403);
}

#[test]
fn unready_pods_and_the_budget() {
    let unready = running(json!({"app": "web"}), false);
    let ready = running(json!({"app": "web"}), true);
    // IfHealthyBudget (the default): unready pods go while the budget is healthy.
    assert!(unhealthy_pod_may_go(&budget(0), &unready));
    assert!(!unhealthy_pod_may_go(&budget(0), &ready));
    let mut short = budget(0);
    short["status"]["currentHealthy"] = json!(1);
    assert!(!unhealthy_pod_may_go(&short, &unready));
    short["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
    assert!(unhealthy_pod_may_go(&short, &unready));
}

#[test]
fn csr_requester_and_subresources() {
    let csrs = res("certificates.k8s.io", "v1", "certificatesigningrequests");
    let s = of(csrs);
    assert_eq!(s.subresource(csrs, "approval"), Some(Sub::Approval));
    let user = UserInfo {
        username: "alice".into(),
        groups: vec!["dev".into()],
        ..Default::default()
    };
    let mut o = json!({"metadata": {"name": "c"},
        "spec": {"request": "x", "signerName": "a.io/b", "usages": ["client auth"],
                 "username": "mallory", "groups": ["system:masters"]},
        "status": {"certificate": "Zm9v"}});
    s.prepare_for_create(csrs, &user, &mut o);
    assert_eq!(o["spec"]["username"], "alice");
    assert_eq!(o["spec"]["groups"], json!(["dev"]));
    assert!(o.get("status").is_none());
    // approval: only the conditions, with their times filled; the spec stays.
    let mut approve = o.clone();
    approve["spec"]["signerName"] = json!("evil.io/x");
    approve["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}],
        "certificate": "c2lnbmVk"});
    s.prepare_for_update(csrs, Some(Sub::Approval), &o, &mut approve);
    assert_eq!(approve["spec"]["signerName"], "a.io/b");
    assert!(approve["status"].get("certificate").is_none());
    assert!(approve["status"]["conditions"][0]["lastUpdateTime"].is_string());
    // status: the certificate, but the approval decisions stay as they were.
    let mut status = approve.clone();
    status["status"] = json!({"certificate": "c2lnbmVk", "conditions": []});
    s.prepare_for_update(csrs, Some(Sub::Status), &approve, &mut status);
    assert_eq!(status["status"]["certificate"], "c2lnbmVk");
    assert_eq!(status["status"]["conditions"][0]["type"], "Approved");
    // the main resource: neither spec nor status.
    let mut main = status.clone();
    main["status"] = json!({});
    main["metadata"]["labels"] = json!({"a": "b"});
    s.prepare_for_update(csrs, None, &status, &mut main);
    assert_eq!(main["status"], status["status"]);
    assert_eq!(main["metadata"]["labels"]["a"], "b");
}

#[test]
fn events_v1_are_core_events_in_store() {
    let ev = res("events.k8s.io", "v1", "events");
    let s = of(ev);
    let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "d"}, "note": "hi", "reason": "R",
        "regarding": {"kind": "Pod", "name": "p"}});
    let stored = s.stored_form(&v1).unwrap();
    assert_eq!(stored["apiVersion"], "v1");
    assert_eq!(stored["message"], "hi");
    assert_eq!(stored["involvedObject"]["name"], "p");
    assert_eq!(s.served_form(stored), v1);
    // Field selectors use the core fields.
    assert_eq!(s.field_value(ev, &v1, "involvedObject.name").unwrap(), "p");
    assert_eq!(s.field_value(ev, &v1, "reason").unwrap(), "R");
    // Other kinds are stored as served.
    let cm = res("", "v1", "configmaps");
    assert!(of(cm).stored_form(&v1).is_none());
}
