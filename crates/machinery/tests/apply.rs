//! Server-side apply and managed fields, with the scenarios Kubernetes users meet.

use h8s_machinery::{apply, managed_field_sets, update_managed_fields, Error, Manager, Schema};
use serde_json::{json, Value};

fn deploy() -> Schema {
    Schema::for_kind("apps", "Deployment")
}

fn mgr<'a>(name: &'a str, time: &'a str) -> Manager<'a> {
    Manager {
        name,
        api_version: "apps/v1",
        subresource: "",
        time,
    }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .unwrap_or_else(|| panic!("no {manager}/{operation} entry in {obj:#}"))
}

#[test]
fn apply_creates_and_records_fields_v1() {
    let obj = apply(
        deploy(),
        None,
        &deployment(3, "nginx:1.25"),
        &mgr("kubectl", "2024-01-01T00:00:00Z"),
        false,
    )
    .unwrap();
    assert_eq!(obj["spec"]["replicas"], 3);
    let e = entry(&obj, "kubectl", "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(e["time"], "2024-01-01T00:00:00Z");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
}

#[test]
fn conflict_between_two_managers_on_replicas_and_force() {
    let live = apply(
        deploy(),
        None,
        &deployment(3, "nginx:1.25"),
        &mgr("alice", "2024-01-01T00:00:00Z"),
        false,
    )
    .unwrap();
    let bob_cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let err = apply(
        deploy(),
        Some(&live),
        &bob_cfg,
        &mgr("bob", "2024-01-01T00:01:00Z"),
        false,
    )
    .unwrap_err();
    assert_eq!(err.code(), 409);
    assert_eq!(err.reason(), "Conflict");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
    let Error::Conflict(c) = &err else { panic!() };
    assert_eq!(
        c.causes(),
        json!([{"type": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"}])
    );

    // The same value is no conflict: both own it.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
    let shared = apply(
        deploy(),
        Some(&live),
        &same,
        &mgr("bob", "2024-01-01T00:01:00Z"),
        false,
    )
    .unwrap();
    let sets = managed_field_sets(&shared).unwrap();
    let replicas = vec![
        h8s_machinery::PathElement::Field("spec".into()),
        h8s_machinery::PathElement::Field("replicas".into()),
    ];
    assert!(sets[&("alice".into(), "Apply".into(), "".into())].has(&replicas));
    assert!(sets[&("bob".into(), "Apply".into(), "".into())].has(&replicas));

    // Force takes ownership away from alice.
    let forced = apply(
        deploy(),
        Some(&live),
        &bob_cfg,
        &mgr("bob", "2024-01-01T00:01:00Z"),
        true,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let sets = managed_field_sets(&forced).unwrap();
    assert!(!sets[&("alice".into(), "Apply".into(), "".into())].has(&replicas));
    assert!(sets[&("bob".into(), "Apply".into(), "".into())].has(&replicas));
    // Alice re-applying her old config now conflicts with bob.
    let err = apply(
        deploy(),
        Some(&forced),
        &deployment(3, "nginx:1.25"),
        &mgr("alice", "2024-01-01T00:02:00Z"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"bob\": .spec.replicas"
    );
}

#[test]
fn conflicts_with_update_managers_name_their_api_version() {
    let live = apply(
        deploy(),
        None,
        &deployment(3, "nginx:1.25"),
        &mgr("alice", "t1"),
        false,
    )
    .unwrap();
    // A controller scales with an ordinary write.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(7);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    update_managed_fields(
        deploy(),
        Some(&live),
        &mut scaled,
        &mgr("kube-controller-manager", "t2"),
    )
    .unwrap();
    // The write took both fields from alice.
    let sets = managed_field_sets(&scaled).unwrap();
    let alice = &sets[&("alice".into(), "Apply".into(), "".into())];
    let kcm = &sets[&("kube-controller-manager".into(), "Update".into(), "".into())];
    assert_eq!(
        kcm.paths()
            .iter()
            .map(|p| h8s_machinery::path_string(p))
            .collect::<Vec<_>>(),
        vec![
            ".spec.replicas",
            ".spec.template.spec.containers[name=\"nginx\"].image"
        ]
    );
    assert!(alice
        .paths()
        .iter()
        .all(|p| h8s_machinery::path_string(p) != ".spec.replicas"));
    let err = apply(
        deploy(),
        Some(&scaled),
        &deployment(3, "nginx:1.25"),
        &mgr("alice", "t3"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kube-controller-manager\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn fields_no_longer_applied_are_removed_unless_shared() {
    let s = Schema::for_kind("", "ConfigMap");
    let m = |n| Manager {
        name: n,
        api_version: "v1",
        subresource: "",
        time: "t",
    };
    let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": data});
    let live = apply(
        s,
        None,
        &cm(json!({"x": "1", "y": "2"})),
        &m("alice"),
        false,
    )
    .unwrap();
    // Bob co-owns y (same value), and adds z.
    let live = apply(s, Some(&live), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"y": "2", "z": "3"}}), &m("bob"), false).unwrap();
    // Alice stops applying y, label b and... everything in data but x.
    let out = apply(s, Some(&live), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}}), &m("alice"), false).unwrap();
    assert_eq!(out["data"], json!({"x": "1", "y": "2", "z": "3"}));
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    // Alice drops labels entirely: the emptied map goes.
    let out2 = apply(s, Some(&out), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}), &m("alice"), false).unwrap();
    assert!(out2["metadata"].get("labels").is_none(), "{out2:#}");
}

#[test]
fn keyed_lists_merge_between_managers() {
    let live = apply(
        deploy(),
        None,
        &deployment(1, "nginx:1"),
        &mgr("alice", "t1"),
        false,
    )
    .unwrap();
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}}});
    let live = apply(deploy(), Some(&live), &sidecar, &mgr("bob", "t2"), false).unwrap();
    let live = apply(
        deploy(),
        Some(&live),
        &deployment(1, "nginx:2"),
        &mgr("alice", "t3"),
        false,
    )
    .unwrap();
    let names: Vec<&str> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx", "sidecar"]);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    // Bob stops applying his container: it goes; alice's stays.
    let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let live = apply(deploy(), Some(&live), &empty, &mgr("bob", "t4"), false).unwrap();
    let names: Vec<&str> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx"]);
    // Bob's entry is empty now and is dropped.
    assert!(live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["manager"] != "bob"));
}

#[test]
fn update_entries_look_like_kube_apiservers() {
    let mut obj = deployment(2, "nginx");
    update_managed_fields(
        deploy(),
        None,
        &mut obj,
        &mgr("kubectl-create", "2024-01-01T00:00:00Z"),
    )
    .unwrap();
    let e = entry(&obj, "kubectl-create", "Update");
    assert_eq!(
        e["fieldsV1"]["f:metadata"],
        json!({"f:labels": {".": {}, "f:app": {}}})
    );
    assert_eq!(e["fieldsV1"]["f:spec"]["f:selector"], json!({}));
    assert_eq!(
        e["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            ["."],
        json!({})
    );
    // A no-op write keeps the entry and its time.
    let live = obj.clone();
    let mut same = obj.clone();
    update_managed_fields(
        deploy(),
        Some(&live),
        &mut same,
        &mgr("kubectl-create", "2025-01-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        entry(&same, "kubectl-create", "Update")["time"],
        "2024-01-01T00:00:00Z"
    );
    // A label added by another manager.
    let mut labelled = live.clone();
    labelled["metadata"]["labels"]["env"] = json!("prod");
    update_managed_fields(
        deploy(),
        Some(&live),
        &mut labelled,
        &mgr("kubectl-label", "t"),
    )
    .unwrap();
    assert_eq!(
        entry(&labelled, "kubectl-label", "Update")["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:env": {}}}})
    );
    // `[{}]` clears managed fields; then only the writer is recorded.
    let mut cleared = labelled.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    update_managed_fields(deploy(), Some(&labelled), &mut cleared, &mgr("x", "t")).unwrap();
    assert!(
        cleared["metadata"].get("managedFields").is_none(),
        "{:#}",
        cleared["metadata"]
    );
}

#[test]
fn kubectl_client_side_to_server_side_upgrade() {
    // Created by `kubectl apply` (client-side): an Update entry and the annotation.
    let cfg = deployment(3, "nginx:1.25");
    let mut live = cfg.clone();
    live["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": cfg.to_string()});
    update_managed_fields(
        deploy(),
        None,
        &mut live,
        &mgr("kubectl-client-side-apply", "t1"),
    )
    .unwrap();
    // `kubectl apply --server-side` with a new replica count: conflicts only with fields the
    // annotation shows kubectl set, so it goes through, and the annotation follows.
    let out = apply(
        deploy(),
        Some(&live),
        &deployment(4, "nginx:1.25"),
        &mgr("kubectl", "t2"),
        false,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 4);
    let ann: Value = serde_json::from_str(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ann["spec"]["replicas"], 4);
    // Any other manager still conflicts.
    let err = apply(
        deploy(),
        Some(&live),
        &deployment(4, "nginx:1.25"),
        &mgr("helm", "t2"),
        false,
    )
    .unwrap_err();
    assert_eq!(err.code(), 409);
    assert!(
        err.to_string()
            .contains("\"kubectl-client-side-apply\" using apps/v1"),
        "{err}"
    );
}

#[test]
fn bad_applied_configurations() {
    let mut with_mf = deployment(1, "x");
    with_mf["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(deploy(), None, &with_mf, &mgr("a", "t"), false)
            .unwrap_err()
            .code(),
        400
    );
    let mut dup = deployment(1, "x");
    dup["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
    let e = apply(deploy(), None, &dup, &mgr("a", "t"), false).unwrap_err();
    assert_eq!(e.code(), 422);
    assert!(
        e.to_string()
            .contains("duplicate entries for key [name=\"a\"]"),
        "{e}"
    );
    let mut nokey = deployment(1, "x");
    nokey["spec"]["template"]["spec"]["containers"] = json!([{"image": "a"}]);
    let e = apply(deploy(), None, &nokey, &mgr("a", "t"), false).unwrap_err();
    assert_eq!(e.code(), 422);
    assert!(e.to_string().contains("omits key field \"name\""), "{e}");
    assert_eq!(
        apply(deploy(), None, &json!([1]), &mgr("a", "t"), false)
            .unwrap_err()
            .code(),
        400
    );
}

#[test]
fn finalizers_are_a_set_and_null_removes() {
    let s = Schema::for_kind("", "ConfigMap");
    let m = |n| Manager {
        name: n,
        api_version: "v1",
        subresource: "",
        time: "t",
    };
    let live = apply(s, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a/x"]}, "data": {"k": "v"}}), &m("alice"), false).unwrap();
    let live = apply(s, Some(&live), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["b/y"]}}), &m("bob"), false).unwrap();
    assert_eq!(live["metadata"]["finalizers"], json!(["a/x", "b/y"]));
    let e = entry(&live, "bob", "Apply");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:metadata": {"f:finalizers": {"v:\"b/y\"": {}}}})
    );
    let out = apply(s, Some(&live), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a/x"]}, "data": {"k": null}}), &m("alice"), false).unwrap();
    assert!(
        out.get("data").is_none() || out["data"].get("k").is_none(),
        "{out:#}"
    );
}
