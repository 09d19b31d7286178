use super::gnostic::decode::{bytes_of, string_of};
use super::*;

fn doc(key: &str) -> Value {
    let (_, bytes) = v3_document(key).unwrap();
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    let idx: Value = serde_json::from_slice(v3_index()).unwrap();
    let paths = idx["paths"].as_object().unwrap();
    for key in [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/authentication.k8s.io/v1beta1",
        "apis/rbac.authorization.k8s.io/v1",
    ] {
        let url = paths[key]["serverRelativeURL"].as_str().unwrap();
        let (h, _) = v3_document(key).unwrap();
        assert_eq!(url, format!("/openapi/v3/{key}?hash={h}"));
        assert_eq!(h.len(), 32);
    }
    assert!(v3_document("/openapi/v3/api/v1").is_some());
    assert!(v3_document("apis/nope/v1").is_none());
    assert_eq!(v3_paths().count(), paths.len());
}

#[test]
fn operations_carry_gvk_field_validation_and_patch_types() {
    let d = doc("api/v1");
    let pods = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
    let patch = &pods["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    let content = patch["requestBody"]["content"].as_object().unwrap();
    for t in [
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(t), "{t}");
    }
    assert_eq!(
        pods["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Pod"
    );
    // Every PATCH lists fieldValidation (kubectl stops at the first PATCH it finds for a GVK).
    for (key, _) in BUILT.docs.iter() {
        let d = doc(key);
        for (path, item) in d["paths"].as_object().unwrap() {
            if let Some(p) = item.get("patch") {
                assert!(
                    p["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == "fieldValidation"),
                    "{path}"
                );
            }
        }
    }
    let schemas = d["components"]["schemas"].as_object().unwrap();
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert!(
        schemas.contains_key("io.k8s.api.core.v1.Container"),
        "closure of refs"
    );
    assert!(schemas.contains_key("io.h8s.api.core.v1.Network"));
    assert!(d["paths"]["/api/v1/networks/{name}"]["patch"].is_object());
    assert!(d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"].is_object());
    assert!(
        !schemas.contains_key("io.k8s.api.apps.v1.Deployment"),
        "only this group version's kinds"
    );
    let apps = doc("apis/apps/v1");
    let scale =
        &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    let ssar = doc("apis/authorization.k8s.io/v1");
    assert!(
        ssar["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]["post"].is_object()
    );
}

#[test]
fn v2_json_is_swagger_with_plain_refs() {
    let v2: Value = serde_json::from_slice(v2_json()).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    let spec = &v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
    assert_eq!(spec["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    assert!(spec.get("allOf").is_none());
    let patch = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["consumes"]
        .as_array()
        .unwrap()
        .contains(&json!("application/strategic-merge-patch+json")));
    assert_eq!(patch["parameters"][0]["in"], "body");
}

#[test]
fn v2_protobuf_decodes_to_the_same_document() {
    let pb = v2_protobuf();
    assert_eq!(string_of(pb, 1), "2.0");
    let info = bytes_of(pb, 2)[0];
    assert_eq!(string_of(info, 1), "Kubernetes");
    // definitions → NamedSchema(name, Schema)
    let defs = bytes_of(pb, 9)[0];
    let named = bytes_of(defs, 1);
    let v2: Value = serde_json::from_slice(v2_json()).unwrap();
    assert_eq!(named.len(), v2["definitions"].as_object().unwrap().len());
    let pod = named
        .iter()
        .find(|n| string_of(n, 1) == "io.k8s.api.core.v1.Pod")
        .unwrap();
    let schema = bytes_of(pod, 2)[0];
    assert!(string_of(schema, 4).starts_with("Pod is a collection of containers"));
    let exts = bytes_of(schema, 31);
    let gvk = exts
        .iter()
        .find(|e| string_of(e, 1) == "x-kubernetes-group-version-kind")
        .unwrap();
    let yaml = string_of(bytes_of(gvk, 2)[0], 2);
    let parsed: Value = serde_json::from_str(&yaml).unwrap();
    assert_eq!(parsed[0]["kind"], "Pod");
    // properties → NamedSchema; spec → $ref
    let props = bytes_of(schema, 25)[0];
    let spec = bytes_of(props, 1)
        .into_iter()
        .find(|n| string_of(n, 1) == "spec")
        .unwrap();
    assert_eq!(
        string_of(bytes_of(spec, 2)[0], 1),
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
    // paths: every path of the JSON document is there.
    let paths = bytes_of(bytes_of(pb, 8)[0], 2);
    assert_eq!(paths.len(), v2["paths"].as_object().unwrap().len());
}
