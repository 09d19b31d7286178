//! Inputs near the API server's 3 MiB body limit must not take quadratic time: these finish in
//! well under a second each when the algorithms are linear(ithmic), and would take minutes
//! otherwise. (Nothing is timed; a regression shows up as a hung test.)

use h8s_machinery::{
    apply, strategic_merge_patch_value, JsonPatch, LabelSelector, Manager, Schema,
};
use serde_json::{json, Value};

#[test]
fn strategic_patch_of_huge_lists() {
    let n = 100_000;
    let orig =
        json!({"metadata": {"finalizers": (0..n).map(|i| format!("f/{i}")).collect::<Vec<_>>()}});
    let patch = json!({"metadata": {
        "finalizers": (n / 2..n + n / 2).map(|i| format!("f/{i}")).collect::<Vec<_>>(),
        "$deleteFromPrimitiveList/finalizers": (0..n / 4).map(|i| format!("f/{i}")).collect::<Vec<_>>()
    }});
    let out = strategic_merge_patch_value(&orig, &patch, Schema::for_kind("", "Pod")).unwrap();
    assert_eq!(
        out["metadata"]["finalizers"].as_array().unwrap().len(),
        n + n / 2 - n / 4
    );

    let m = 20_000;
    let containers: Vec<Value> = (0..m)
        .map(|i| json!({"name": format!("c{i}"), "image": "a"}))
        .collect();
    let orig = json!({"spec": {"containers": containers}});
    let mut p: Vec<Value> = (0..m)
        .filter(|i| *i != 1)
        .map(|i| json!({"name": format!("c{i}"), "image": "b"}))
        .collect();
    p.push(json!({"name": "c1", "$patch": "delete"}));
    let order: Vec<Value> = (0..m).map(|i| json!({"name": format!("c{i}")})).collect();
    let patch = json!({"spec": {"containers": p, "$setElementOrder/containers": order}});
    let out = strategic_merge_patch_value(&orig, &patch, Schema::for_kind("", "Pod")).unwrap();
    let c = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(c.len(), m - 1);
    assert_eq!(c[0], json!({"name": "c0", "image": "b"}));
}

#[test]
fn selector_with_huge_value_set() {
    let values: Vec<String> = (0..50_000).map(|i| format!("v{i}")).collect();
    let s = LabelSelector::parse(&format!("a in ({})", values.join(","))).unwrap();
    assert_eq!(s.requirements()[0].values().len(), 50_000);
    let labels: std::collections::BTreeMap<String, String> =
        [("a".to_string(), "v49999".to_string())].into();
    for _ in 0..10_000 {
        assert!(s.matches(&labels));
    }
}

#[test]
fn json_patch_with_the_maximum_operations() {
    let ops: Vec<Value> = (0..10_000)
        .map(|i| json!({"op": "add", "path": format!("/data/k{i}"), "value": "v"}))
        .collect();
    let p = JsonPatch::from_value(&Value::Array(ops)).unwrap();
    let mut doc = json!({"data": {}});
    p.apply(&mut doc).unwrap();
    assert_eq!(doc["data"].as_object().unwrap().len(), 10_000);
}

#[test]
fn apply_with_huge_keyed_lists() {
    let m = Manager {
        name: "a",
        api_version: "v1",
        subresource: "",
        time: "t",
    };
    let env: Vec<Value> = (0..20_000)
        .map(|i| json!({"name": format!("E{i}"), "value": "1"}))
        .collect();
    let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "env": env}]}});
    let live = apply(Schema::for_kind("", "Pod"), None, &cfg, &m, false).unwrap();
    let again = apply(Schema::for_kind("", "Pod"), Some(&live), &cfg, &m, false).unwrap();
    assert_eq!(live, again);
}
