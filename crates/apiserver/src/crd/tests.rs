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
