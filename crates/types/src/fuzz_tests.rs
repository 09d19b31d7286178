//! Property tests: every function that takes a user's object (validation,
//! defaulting, tables, strict decoding, field selectors) survives arbitrary
//! JSON shaped like Kubernetes objects, without panicking.

use crate::resources::{all, Resource};
use crate::{defaults, strict, table, validation};
use proptest::prelude::*;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "spec",
    "status",
    "containers",
    "initContainers",
    "image",
    "ports",
    "containerPort",
    "protocol",
    "port",
    "targetPort",
    "nodePort",
    "volumes",
    "volumeMounts",
    "mountPath",
    "env",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "template",
    "replicas",
    "strategy",
    "rollingUpdate",
    "maxSurge",
    "maxUnavailable",
    "type",
    "data",
    "binaryData",
    "stringData",
    "subnets",
    "cidr",
    "gateway",
    "tenantID",
    "network",
    "schedule",
    "jobTemplate",
    "restartPolicy",
    "rules",
    "verbs",
    "apiGroups",
    "resources",
    "roleRef",
    "subjects",
    "kind",
    "apiGroup",
    "phase",
    "conditions",
    "containerStatuses",
    "state",
    "waiting",
    "terminated",
    "reason",
    "exitCode",
    "involvedObject",
    "source",
    "component",
    "clusterIP",
    "podCIDR",
    "taints",
    "effect",
    "tolerations",
    "immutable",
    "accessModes",
    "capacity",
    "provisioner",
    "parameters",
    "podSelector",
    "ingress",
    "from",
    "ipBlock",
    "resourceAttributes",
    "hostNetwork",
    "nodeName",
    "podIPs",
    "ip",
    "lastTimestamp",
    "firstTimestamp",
    "startTime",
    "completionTime",
    "lastScheduleTime",
    "addresses",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..70000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9./:_ -]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "Always",
            "Never",
            "TCP",
            "None",
            "ClusterIP",
            "10.0.0.0/24",
            "10.0.0.1",
            "2026-01-01T00:00:00Z",
            "*/5 * * * *",
            "@hourly",
            "RollingUpdate",
            "25%",
            "In",
            "Exists",
            "kubernetes.io/tls",
            "::1/128",
            "300.1.1.1/8",
            "a/b/c",
            "Ready",
            "True",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

fn resource() -> impl Strategy<Value = &'static Resource> {
    prop::sample::select(all().iter().collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn object_functions_never_panic(r in resource(), obj in json_value(), old in json_value()) {
        let _ = validation::validate_create(r, &obj);
        let _ = validation::validate_update(r, &obj, &old);
        let _ = validation::validate_status_update(r, &obj, &old);
        let mut d = obj.clone();
        defaults::apply(r, &mut d);
        let once = d.clone();
        defaults::apply(r, &mut d);
        prop_assert_eq!(&d, &once, "defaulting is idempotent");
        defaults::prepare_for_create(r, &mut d);
        let _ = validation::validate_create(r, &d);
        let t = table::table(r, &[obj.clone(), d], &old, table::IncludeObject::Metadata, std::time::SystemTime::now());
        let cols = t["columnDefinitions"].as_array().map_or(0, Vec::len);
        for row in t["rows"].as_array().into_iter().flatten() {
            prop_assert_eq!(row["cells"].as_array().map_or(0, Vec::len), cols);
        }
        let _ = strict::unknown_fields(r.group, r.version, r.kind, &obj);
        let _ = strict::decode_error(r.group, r.version, r.kind, &obj);
        for f in r.selectable_fields() {
            prop_assert!(r.field_value(&obj, f).is_ok());
        }
    }

    #[test]
    fn strict_parse_never_panics(raw in prop::collection::vec(any::<u8>(), 0..256), obj in json_value()) {
        let _ = strict::parse_json(&raw);
        let text = serde_json::to_vec(&obj).unwrap();
        let (v, dups) = strict::parse_json(&text).unwrap();
        // Same values as serde_json's own parser (floats included).
        prop_assert_eq!(v, serde_json::from_slice::<Value>(&text).unwrap());
        prop_assert!(dups.is_empty());
    }
}
