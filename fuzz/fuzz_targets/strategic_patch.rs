//! Input = a strategic merge patch body against a Deployment. No panic; results are objects.
#![no_main]
use h8s_machinery::{strategic_merge_patch, Schema};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"app": "d"}, "finalizers": ["a/b", "c/d"],
            "ownerReferences": [{"uid": "u1", "name": "o"}]},
        "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {
                "containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}],
                    "ports": [{"containerPort": 80}]}, {"name": "b", "image": "y"}],
                "volumes": [{"name": "v", "emptyDir": {}}]}}}
    });
    for schema in [
        Schema::for_kind("apps", "Deployment"),
        Schema::metadata_only(),
    ] {
        if let Ok(out) = strategic_merge_patch(&live, data, schema) {
            assert!(out.is_object());
        }
    }
});
