use serde_json::json;

use super::*;

fn def() -> Definition {
    Definition::parse(&json!({
        "metadata": {"name": "widgets.example.com", "uid": "u1"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": [
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "default": 1}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}},
            ],
        }
    }))
}

#[test]
fn registry_serves_every_served_version() {
    let reg = Registry::default();
    reg.put(def());
    let v1 = reg.find("example.com", "v1", "widgets").expect("v1 served");
    assert!(reg.find("example.com", "v1beta1", "widgets").is_some());
    assert!(reg.serves_group_version("example.com", "v1beta1"));
    assert_eq!(
        reg.groups(),
        vec![(
            "example.com".to_string(),
            vec!["v1".to_string(), "v1beta1".to_string()]
        )]
    );
    assert_eq!(v1.res.kind, "Widget");
    assert!(v1.res.namespaced);
    assert_eq!(v1.res.short_names, &["wd"]);
    assert!(v1.res.subresource("scale").is_some() && v1.res.subresource("status").is_some());
    assert_eq!(v1.res.scale.map(|s| s.spec_replicas), Some("spec.replicas"));
    assert_eq!(v1.res.storage, Some(("example.com", "v1", "Widget")));
    // A second put of the same definition reuses the interned resource.
    let g = reg.generation();
    reg.put(def());
    assert!(std::ptr::eq(
        reg.find("example.com", "v1", "widgets").unwrap().res,
        v1.res
    ));
    assert!(reg.generation() > g);
    reg.remove("widgets.example.com");
    assert!(reg.find("example.com", "v1", "widgets").is_none());
    assert!(reg.groups().is_empty());
}

#[test]
fn versions_convert_by_api_version_and_default_on_read() {
    let reg = Registry::default();
    reg.put(def());
    let beta = reg.find("example.com", "v1beta1", "widgets").unwrap();
    let v1 = reg.find("example.com", "v1", "widgets").unwrap();
    let o = json!({"apiVersion": "example.com/v1beta1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {}});
    let stored = beta.stored_form(&o).expect("stored as v1");
    assert_eq!(stored["apiVersion"], "example.com/v1");
    let served = v1.served_form(stored.clone());
    assert_eq!(served["spec"]["replicas"], 1, "defaulted on read");
    assert_eq!(
        beta.served_form(stored)["apiVersion"],
        "example.com/v1beta1"
    );
}

#[test]
fn pruning_defaulting_and_strict_fields() {
    let reg = Registry::default();
    reg.put(def());
    let v1 = reg.find("example.com", "v1", "widgets").unwrap();
    let res = v1.res;
    let o = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a", "labels": {"x": "y"}},
                   "spec": {"bogus": 1}, "extra": true});
    let mut unknown = v1.unknown_fields(res, &o);
    unknown.sort();
    assert_eq!(unknown, vec!["extra", "spec.bogus"]);
    let mut d = o.clone();
    v1.default(res, &mut d);
    assert_eq!(d["spec"], json!({"replicas": 1}));
    assert!(d.get("extra").is_none());
    assert_eq!(d["metadata"]["labels"]["x"], "y");
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a", "namespace": "default"}, "spec": {"replicas": "many"}});
    let e = v1.validate_create(res, &bad).unwrap_err();
    assert_eq!(e.to_string(), "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"");
}

#[test]
fn printer_columns() {
    let reg = Registry::default();
    reg.put(def());
    let v1 = reg.find("example.com", "v1", "widgets").unwrap();
    let now =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + 300);
    let created = "2023-11-14T22:13:20Z"; // 1_700_000_000
    let objs = [
        json!({"metadata": {"name": "a", "creationTimestamp": created}, "spec": {"replicas": 3},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    ];
    let t = table(v1.version(), &objs, "None", json!({}), now);
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Name", "Replicas", "Ready", "Age"]);
    assert_eq!(t["rows"][0]["cells"], json!(["a", 3, "True", "5m"]));
    let beta = reg.find("example.com", "v1beta1", "widgets").unwrap();
    let t = table(beta.version(), &objs, "Metadata", json!({}), now);
    assert_eq!(t["rows"][0]["cells"], json!(["a", "5m"]));
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn server_side_apply_follows_list_types() {
    let schema = types::Schema::parse(&json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name", "protocol"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "protocol": {"type": "string"},
                    "port": {"type": "integer"},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set",
                        "items": {"type": "string"}}}}},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                "additionalProperties": {"type": "string"}}}}}}));
    let fields = patch_fields(&schema);
    let paths: Vec<&str> = fields.iter().map(|f| f.path).collect();
    assert_eq!(paths, ["spec.ports", "spec.ports[].tags", "spec.selector"]);
    assert_eq!(
        fields[0].list_type,
        Some(h8s_machinery::ListType::Map(&["name", "protocol"]))
    );
    let s = h8s_machinery::Schema::custom(&fields);
    // Kept once per distinct set of fields.
    assert!(std::ptr::eq(
        s.field("spec.ports").unwrap(),
        h8s_machinery::Schema::custom(&patch_fields(&schema))
            .field("spec.ports")
            .unwrap()
    ));
    let mgr = |name: &'static str| h8s_machinery::Manager {
        name,
        api_version: "example.com/v1",
        subresource: "",
        time: "2026-01-01T00:00:00Z",
    };
    let obj = |ports: serde_json::Value| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "default"}, "spec": {"ports": ports}})
    };
    let a = h8s_machinery::apply(
        s,
        None,
        &obj(json!([{"name": "http", "protocol": "TCP", "port": 80, "tags": ["a"]}])),
        &mgr("alice"),
        false,
    )
    .unwrap();
    // Another manager's element of the same list is merged by its keys, not a conflict.
    let b = h8s_machinery::apply(
        s,
        Some(&a),
        &obj(json!([{"name": "dns", "protocol": "UDP", "port": 53}])),
        &mgr("bob"),
        false,
    )
    .unwrap();
    let names: Vec<&str> = b["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http", "dns"], "{b}");
    let mf = serde_json::to_string(&b["metadata"]["managedFields"]).unwrap();
    assert!(
        mf.contains(r#"k:{\"name\":\"dns\",\"protocol\":\"UDP\"}"#),
        "{mf}"
    );
    // The same element from another manager with another value conflicts.
    let err = h8s_machinery::apply(
        s,
        Some(&b),
        &obj(json!([{"name": "http", "protocol": "TCP", "port": 8080}])),
        &mgr("bob"),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("conflict"), "{err}");
    // Without a schema the list is atomic: bob's apply conflicts with alice's list.
    let atomic = h8s_machinery::Schema::metadata_only();
    let a2 = h8s_machinery::apply(
        atomic,
        None,
        &obj(json!([{"name": "http", "protocol": "TCP"}])),
        &mgr("alice"),
        false,
    )
    .unwrap();
    assert!(h8s_machinery::apply(
        atomic,
        Some(&a2),
        &obj(json!([{"name": "dns", "protocol": "UDP"}])),
        &mgr("bob"),
        false
    )
    .is_err());
}
