use serde_json::json;

use super::value::{apply_defaults, prune, validate};
use super::*;

fn crd(schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": schema}}],
        }
    })
}

fn msgs(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn good_definition_validates() {
    let mut c = crd(
        json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"replicas": {"type": "integer"}}}}}),
    );
    apply_crd_defaults(&mut c);
    assert!(
        validate_crd(&c, None).is_empty(),
        "{:?}",
        validate_crd(&c, None)
    );
    assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(c["spec"]["names"]["singular"], "widget");
    let d = Definition::parse(&c);
    assert!(d.namespaced);
    assert_eq!(d.storage_version().map(|v| v.name.as_str()), Some("v1"));
}

#[test]
fn non_structural_schema_names_the_fields() {
    let c = crd(json!({"type": "object", "properties": {
        "spec": {"properties": {"a": {"type": "string"}}},
        "list": {"type": "array"},
        "x": {"type": "object", "properties": {"p": {"type": "string"}}, "additionalProperties": {"type": "string"}},
        "y": {"type": "string", "anyOf": [{"type": "string"}]},
    }}));
    let m = msgs(&validate_crd(&c, None));
    let p = "spec.versions[0].schema.openAPIV3Schema";
    assert!(m.contains(&format!("{p}.properties[spec].type: Required value: must not be empty for specified object fields")), "{m:?}");
    assert!(
        m.contains(&format!(
            "{p}.properties[list].items: Required value: must be specified"
        )),
        "{m:?}"
    );
    assert!(
        m.iter().any(|x| x.starts_with(&format!(
            "{p}.properties[x].additionalProperties: Forbidden"
        ))),
        "{m:?}"
    );
    assert!(
        m.contains(&format!(
            "{p}.properties[y].anyOf[0].type: Forbidden: must be empty to be structural"
        )),
        "{m:?}"
    );
}

#[test]
fn bad_names_scope_and_versions() {
    let mut c = crd(json!({"type": "object"}));
    c["metadata"]["name"] = json!("other.example.com");
    c["spec"]["group"] = json!("nodots");
    c["spec"]["scope"] = json!("Global");
    c["spec"]["versions"][0]["storage"] = json!(false);
    let m = msgs(&validate_crd(&c, None));
    assert!(
        m.iter()
            .any(|x| x.starts_with("metadata.name: Invalid value")),
        "{m:?}"
    );
    assert!(
        m.contains(
            &"spec.group: Invalid value: \"nodots\": should be a domain with at least one dot"
                .to_string()
        ),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| x.starts_with("spec.scope: Unsupported value: \"Global\"")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|x| x.contains("must have exactly one version marked as storage version")),
        "{m:?}"
    );
}

#[test]
fn values_validate_with_kube_wording() {
    let s = Schema::parse(
        &json!({"type": "object", "required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "mode": {"type": "string", "enum": ["Fast", "Slow"]},
            "when": {"type": "string", "format": "date-time"},
            "port": {"x-kubernetes-int-or-string": true},
            "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
            "opt": {"type": "string", "nullable": true},
        }}}}),
    );
    let v = json!({"spec": {"size": 11, "name": "ABCDEFG", "mode": "Medium", "when": "yesterday",
        "port": true, "tags": ["a", "a", "b"], "ports": [{"name": "x"}, {"name": "x"}], "opt": null}});
    let mut e = Vec::new();
    validate(&s, &v, "", &mut e);
    let m = msgs(&e);
    for want in [
        "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
        "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
        "spec.mode: Unsupported value: \"Medium\": supported values: \"Fast\", \"Slow\"",
        "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
        "spec.tags: Too many: 3: must have at most 2 items",
        "spec.tags[1]: Duplicate value: \"a\"",
        "spec.ports[1]: Duplicate value: {\"name\":\"x\"}",
    ] {
        assert!(m.contains(&want.to_string()), "missing {want}: {m:?}");
    }
    assert!(
        m.iter().any(|x| x.starts_with("spec.name: Too long")),
        "{m:?}"
    );
    assert!(!m.iter().any(|x| x.starts_with("spec.opt")), "{m:?}");
    let mut e = Vec::new();
    validate(&s, &json!({"spec": {"size": "3"}}), "", &mut e);
    assert_eq!(
        msgs(&e),
        vec!["spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""]
    );
    let mut e = Vec::new();
    validate(&s, &json!({"spec": {}}), "", &mut e);
    assert_eq!(msgs(&e), vec!["spec.size: Required value"]);
}

#[test]
fn pruning_keeps_what_the_schema_knows() {
    let s = Schema::parse(&json!({"type": "object", "properties": {
    "spec": {"type": "object", "properties": {
        "a": {"type": "string"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "tpl": {"type": "object", "x-kubernetes-embedded-resource": true,
                "x-kubernetes-preserve-unknown-fields": true},
        "items": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
    }}}}));
    let mut v = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"a": "x", "b": 1, "free": {"any": {"thing": 1}}, "labels": {"x": "y"},
                 "tpl": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"}, "spec": {}},
                 "items": [{"k": "v", "junk": 1}]},
        "status": {"x": 1}});
    let mut pruned = prune(&s, &mut v);
    pruned.sort();
    assert_eq!(pruned, vec!["spec.b", "spec.items[0].junk", "status"]);
    assert_eq!(v["spec"]["free"]["any"]["thing"], 1);
    assert_eq!(v["spec"]["labels"]["x"], "y");
    assert_eq!(v["metadata"]["name"], "w");
    assert_eq!(v["spec"]["tpl"]["metadata"], json!({"name": "p"}));
}

#[test]
fn defaults_fill_missing_and_null() {
    let s = Schema::parse(
        &json!({"type": "object", "properties": {"spec": {"type": "object",
        "default": {},
        "properties": {
            "replicas": {"type": "integer", "default": 1},
            "mode": {"type": "string", "default": "Fast"},
            "list": {"type": "array", "items": {"type": "object", "properties": {
                "p": {"type": "integer", "default": 80}}}},
        }}}}),
    );
    let mut v = json!({"metadata": {"name": "x"}});
    apply_defaults(&s, &mut v);
    assert_eq!(v["spec"], json!({"replicas": 1, "mode": "Fast"}));
    let mut v = json!({"spec": {"replicas": 3, "mode": null, "list": [{}, {"p": 1}]}});
    apply_defaults(&s, &mut v);
    assert_eq!(
        v["spec"],
        json!({"replicas": 3, "mode": "Fast", "list": [{"p": 80}, {"p": 1}]})
    );
}

#[test]
fn bad_defaults_are_refused() {
    let c = crd(
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "n": {"type": "integer", "default": "x"}}}}}),
    );
    let m = msgs(&validate_crd(&c, None));
    assert!(
        m.iter()
            .any(|x| x.contains("properties[n].default: Invalid value: \"string\"")),
        "{m:?}"
    );
}

#[test]
fn jsonpaths() {
    let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
                   "spec": {"replicas": 3}});
    assert_eq!(jsonpath::first(".spec.replicas", &o), Some(json!(3)));
    assert_eq!(
        jsonpath::first(".status.conditions[?(@.type==\"Ready\")].status", &o),
        Some(json!("True"))
    );
    assert_eq!(
        jsonpath::first(".status.conditions[-1].type", &o),
        Some(json!("Ready"))
    );
    assert!(jsonpath::parse("spec").is_err());
}

#[test]
fn version_priority_orders_like_kubernetes() {
    let mut v = ["v1alpha1", "foo", "v2", "v1beta1", "v1", "v1beta2", "v10"];
    v.sort_by_key(|x| version_priority(x));
    assert_eq!(
        v,
        ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
    );
}

#[test]
fn formats() {
    use value::format_ok;
    assert!(format_ok("date-time", "2024-01-02T03:04:05Z"));
    assert!(format_ok("date-time", "2024-01-02T03:04:05.123+02:00"));
    assert!(!format_ok("date-time", "2024-01-02"));
    assert!(format_ok("duration", "1h30m"));
    assert!(!format_ok("duration", "1 hour"));
    assert!(format_ok("ipv4", "10.0.0.1"));
    assert!(!format_ok("ipv4", "10.0.0"));
    assert!(format_ok("uuid", "123e4567-e89b-12d3-a456-426614174000"));
    assert!(format_ok("byte", "aGVsbG8="));
    assert!(!format_ok("byte", "!!"));
}
