use super::*;
use crate::resources::find;
use serde_json::json;

fn res(g: &str, p: &str) -> &'static Resource {
    find(g, "v1", p).unwrap()
}

fn messages(r: Result<(), FieldErrors>) -> Vec<String> {
    r.err()
        .map(|e| e.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

fn good_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[test]
fn pod_rules() {
    let pods = res("", "pods");
    assert_eq!(validate_create(pods, &good_pod()), Ok(()));
    let mut p = good_pod();
    p["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let err = validate_create(pods, &p).unwrap_err();
    assert_eq!(
        err.to_status("", "Pod", "p")["message"],
        "Pod \"p\" is invalid: spec.containers[0].image: Required value"
    );
    let mut p = good_pod();
    p["spec"]["containers"] = json!([]);
    assert_eq!(
        messages(validate_create(pods, &p)),
        vec!["spec.containers: Required value"]
    );
    let mut p = good_pod();
    p["spec"]["containers"] = json!([{"name": "c", "image": "a", "ports": [{"containerPort": 70000}],
        "volumeMounts": [{"name": "v", "mountPath": "/x"}]}, {"name": "c", "image": "b"}]);
    p["spec"]["restartPolicy"] = json!("Sometimes");
    let m = messages(validate_create(pods, &p));
    assert!(m.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{m:?}");
    assert!(
        m.contains(&"spec.containers[0].volumeMounts[0].name: Not found: \"v\"".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"spec.containers[1].name: Duplicate value: \"c\"".to_string()),
        "{m:?}"
    );
    assert!(m.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()), "{m:?}");
}

#[test]
fn resource_requests_within_limits() {
    let mut p = good_pod();
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1024Mi"}});
    assert_eq!(messages(validate_create(res("", "pods"), &p)), vec![
        "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]);
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "-1"}});
    assert_eq!(messages(validate_create(res("", "pods"), &p)), vec![
        "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"]);
}

#[test]
fn seed_pod_with_cinder_volume_is_valid() {
    let p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}],
            "volumeMounts": [{"name": "nginx-persistent-storage", "mountPath": "/var/lib/nginx"}]}],
            "volumes": [{"name": "nginx-persistent-storage",
                "cinder": {"volumeID": "651b2a7b-683e-47e1-bdd6-e3c62e8f91c0", "fsType": "ext4"}}]}});
    assert_eq!(validate_create(res("", "pods"), &p), Ok(()));
}

#[test]
fn names_per_kind() {
    let mut p = good_pod();
    p["metadata"]["name"] = json!("Bad_Name");
    let m = messages(validate_create(res("", "pods"), &p));
    assert!(
        m[0].starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ),
        "{m:?}"
    );
    let ns = json!({"metadata": {"name": "a.b"}});
    let m = messages(validate_create(res("", "namespaces"), &ns));
    assert!(m[0].contains("RFC 1123 label"), "{m:?}");
    let svc =
        json!({"metadata": {"name": "1svc", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
    assert!(messages(validate_create(res("", "services"), &svc))[0].contains("DNS-1035"));
    let role = json!({"metadata": {"name": "system:controller:x", "namespace": "d"}, "rules": []});
    assert_eq!(
        validate_create(
            find("rbac.authorization.k8s.io", "v1", "roles").unwrap(),
            &role
        ),
        Ok(())
    );
    let no_name = json!({"metadata": {"namespace": "d"}, "data": {}});
    assert_eq!(
        messages(validate_create(res("", "configmaps"), &no_name)),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    let gen = json!({"metadata": {"generateName": "web-", "namespace": "d"}});
    assert_eq!(validate_create(res("", "configmaps"), &gen), Ok(()));
    let cluster_ns = json!({"metadata": {"name": "n", "namespace": "d"}});
    assert_eq!(
        messages(validate_create(res("", "nodes"), &cluster_ns)),
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );
    let no_ns = json!({"metadata": {"name": "n"}});
    assert_eq!(
        messages(validate_create(res("", "configmaps"), &no_ns)),
        vec!["metadata.namespace: Required value"]
    );
}

#[test]
fn metadata_labels_and_annotations() {
    let mut p = good_pod();
    p["metadata"]["labels"] = json!({"bad key": "v", "ok": "-bad"});
    p["metadata"]["annotations"] = json!({"big": "x".repeat(300 * 1024)});
    let m = messages(validate_create(res("", "pods"), &p));
    assert!(
        m.iter().any(|s| s
            .starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist")),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|s| s.starts_with("metadata.labels: Invalid value: \"-bad\": a valid label")),
        "{m:?}"
    );
    assert!(
        m.contains(&"metadata.annotations: Too long: must have at most 262144 bytes".to_string()),
        "{m:?}"
    );
}

#[test]
fn immutable_on_update() {
    let pods = res("", "pods");
    let old = good_pod();
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert_eq!(validate_update(pods, &new, &old), Ok(()));
    new["spec"]["containers"][0]["command"] = json!(["sh"]);
    let m = messages(validate_update(pods, &new, &old));
    assert!(
        m[0].starts_with("spec: Forbidden: pod updates may not change fields"),
        "{m:?}"
    );
    let mut moved = old.clone();
    moved["metadata"]["namespace"] = json!("other");
    assert!(messages(validate_update(pods, &moved, &old))
        .contains(&"metadata.namespace: Invalid value: \"other\": field is immutable".to_string()));

    let deps = find("apps", "v1", "deployments").unwrap();
    let d = json!({"metadata": {"name": "d", "namespace": "n"}, "spec": {
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(validate_create(deps, &d), Ok(()));
    let mut d2 = d.clone();
    d2["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
    d2["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
    assert!(messages(validate_update(deps, &d2, &d))[0].starts_with(
        "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"b\"}}: field is immutable"
    ));
    let mut d3 = d.clone();
    d3["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
    let m = messages(validate_create(deps, &d3));
    assert_eq!(m, vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"x\"}: `selector` does not match template `labels`"]);
}

#[test]
fn workloads_and_batch() {
    let jobs = find("batch", "v1", "jobs").unwrap();
    let j = json!({"metadata": {"name": "j", "namespace": "n"}, "spec": {"template": {"spec": {
        "restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(messages(validate_create(jobs, &j)), vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]);
    let cj = find("batch", "v1", "cronjobs").unwrap();
    let c = json!({"metadata": {"name": "c", "namespace": "n"}, "spec": {"schedule": "*/5 * * * *",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i"}]}}}}}});
    assert_eq!(validate_create(cj, &c), Ok(()));
    let mut bad = c.clone();
    bad["spec"]["schedule"] = json!("61 * * * *");
    assert!(messages(validate_create(cj, &bad))[0]
        .starts_with("spec.schedule: Invalid value: \"61 * * * *\""));
    for ok in ["@hourly", "0 0 * * MON-FRI", "0,30 1-5/2 ? JAN *"] {
        assert_eq!(kinds::check_schedule(ok), Ok(()), "{ok}");
    }
    let svc = json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b", "protocol": "ICMP"}]}});
    let m = messages(validate_create(res("", "services"), &svc));
    assert!(
        m.contains(&"spec.ports[0].name: Required value".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(
            &"spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"
                .to_string()
        ),
        "{m:?}"
    );
    assert!(m.contains(&"spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()), "{m:?}");
}

#[test]
fn config_secret_rbac() {
    let cm = json!({"metadata": {"name": "c", "namespace": "n"}, "data": {"bad key": "v"}});
    assert!(messages(validate_create(res("", "configmaps"), &cm))[0]
        .starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key"));
    let s = json!({"metadata": {"name": "s", "namespace": "n"}, "type": "kubernetes.io/tls", "data": {}});
    assert_eq!(
        messages(validate_create(res("", "secrets"), &s)),
        vec![
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value"
        ]
    );
    let old = json!({"metadata": {"name": "s", "namespace": "n"}, "type": "Opaque", "immutable": true, "data": {"a": "Yg=="}});
    let mut new = old.clone();
    new["data"]["a"] = json!("Yw==");
    assert_eq!(
        messages(validate_update(res("", "secrets"), &new, &old)),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
    let rb = find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").unwrap();
    let b = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}]});
    let m = messages(validate_create(rb, &b));
    assert!(
        m.contains(
            &"roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""
                .to_string()
        ),
        "{m:?}"
    );
    assert!(
        m.contains(&"subjects[0].namespace: Required value".to_string()),
        "{m:?}"
    );
    let role = find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
    let r =
        json!({"metadata": {"name": "r", "namespace": "n"}, "rules": [{"resources": ["pods"]}]});
    let m = messages(validate_create(role, &r));
    assert!(
        m.contains(
            &"rules[0].verbs: Required value: verbs must contain at least one value".to_string()
        ),
        "{m:?}"
    );
    assert!(m.contains(&"rules[0].apiGroups: Required value: resource rules must supply at least one api group".to_string()), "{m:?}");
}

#[test]
fn network_rules() {
    let nets = res("", "networks");
    let seed = json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": "net1"},
        "spec": {"tenantID": "065f210a2ca9442aad898ab129426350",
            "subnets": {"subnet1": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.1"}}}});
    assert_eq!(validate_create(nets, &seed), Ok(()));
    let bad = json!({"metadata": {"name": "n"}, "spec": {"subnets": {
        "a": {"cidr": "10.0.0.0/16", "gateway": "10.1.0.1"},
        "b": {"cidr": "10.0.128.0/24", "gateway": "10.0.128.1"},
        "c": {"cidr": "300.0.0.0/8"},
        "d": {"cidr": "172.16.0.0/24", "gateway": "nope"}}}});
    let m = messages(validate_create(nets, &bad));
    assert_eq!(m, vec![
        "spec.subnets[a].gateway: Invalid value: \"10.1.0.1\": must be inside the subnet's cidr 10.0.0.0/16",
        "spec.subnets[b].cidr: Invalid value: \"10.0.128.0/24\": overlaps subnet \"a\" of the same network",
        "spec.subnets[c].cidr: Invalid value: \"300.0.0.0/8\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        "spec.subnets[d].gateway: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]);
    assert_eq!(
        messages(validate_create(nets, &json!({"metadata": {"name": "n"}}))),
        vec!["spec.subnets: Required value: a network needs at least one subnet"]
    );
    let mut moved = seed.clone();
    moved["spec"]["tenantID"] = json!("other");
    assert_eq!(
        messages(validate_update(nets, &moved, &seed)),
        vec!["spec.tenantID: Invalid value: \"other\": field is immutable"]
    );
    let v6 = json!({"metadata": {"name": "n"}, "spec": {"subnets": {"a": {"cidr": "fd00::/64", "gateway": "fd00::1"}, "b": {"cidr": "10.0.0.0/24"}}}});
    assert_eq!(validate_create(nets, &v6), Ok(()));
    let ns = json!({"metadata": {"name": "ns1"}, "spec": {"network": "net1"}});
    assert_eq!(validate_create(res("", "namespaces"), &ns), Ok(()));
    let mut ns2 = ns.clone();
    ns2["spec"]["network"] = json!("net2");
    assert_eq!(
        messages(validate_update(res("", "namespaces"), &ns2, &ns)),
        vec!["spec.network: Invalid value: \"net2\": field is immutable"]
    );
}

#[test]
fn cidr_math() {
    let a = parse_cidr("10.0.0.0/8").unwrap();
    assert!(a.overlaps(&parse_cidr("10.255.0.0/16").unwrap()));
    assert!(!a.overlaps(&parse_cidr("11.0.0.0/8").unwrap()));
    assert!(parse_cidr("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    assert!(parse_cidr("10.0.0.0/33").is_none());
    assert!(parse_cidr("10.0.0.0/+8").is_none());
    assert!(!parse_cidr("10.0.0.1/24").unwrap().is_canonical());
}
