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
    // podFailurePolicy, in kube-apiserver's words.
    let pfp = |restart: &str, rules: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "d"},
            "spec": {"podFailurePolicy": {"rules": rules}, "template": {"spec": {
                "restartPolicy": restart, "containers": [{"name": "main", "image": "i"}]}}}})
    };
    let ok = pfp(
        "Never",
        json!([
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]),
    );
    assert!(validate_create(jobs, &ok).is_ok());
    assert_eq!(
        messages(validate_create(jobs, &pfp("OnFailure", json!([{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}])))),
        vec!["spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified"]
    );
    let bad = pfp(
        "Never",
        json!([
        {"action": "Explode", "onExitCodes": {"operator": "In", "values": [0, 3, 2, 2]}},
        {"action": "FailIndex", "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]},
        {"action": "Count"},
        {"action": "Count", "onExitCodes": {"containerName": "other", "operator": "Within", "values": [1]},
         "onPodConditions": [{"type": "X"}]}]),
    );
    assert_eq!(
        messages(validate_create(jobs, &bad)),
        vec![
            "spec.podFailurePolicy.rules[0].action: Unsupported value: \"Explode\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Invalid value: 2: must be ordered",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[3]: Duplicate value: 2",
            "spec.podFailurePolicy.rules[1].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
            "spec.podFailurePolicy.rules[1].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"True\", \"False\", \"Unknown\"",
            "spec.podFailurePolicy.rules[2]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            "spec.podFailurePolicy.rules[3]: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
            "spec.podFailurePolicy.rules[3].onExitCodes.containerName: Invalid value: \"other\": must be one of the container or initContainer names in the pod template",
            "spec.podFailurePolicy.rules[3].onExitCodes.operator: Unsupported value: \"Within\": supported values: \"In\", \"NotIn\"",
        ]
    );
    // backoffLimitPerIndex, maxFailedIndexes, successPolicy, podReplacementPolicy.
    let spec = |extra: Value| {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "d"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": "i"}]}}}});
        for (k, v) in extra.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j
    };
    let ok = spec(
        json!({"completionMode": "Indexed", "completions": 5, "backoffLimitPerIndex": 1,
        "maxFailedIndexes": 2, "podReplacementPolicy": "Failed",
        "successPolicy": {"rules": [{"succeededIndexes": "0,2-4", "succeededCount": 3}, {"succeededCount": 5}]}}),
    );
    assert_eq!(validate_create(jobs, &ok), Ok(()));
    assert_eq!(
        messages(validate_create(jobs, &spec(json!({"backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
            "successPolicy": {"rules": [{"succeededCount": 1}]}, "podReplacementPolicy": "Sometimes"})))),
        vec![
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
            "spec.maxFailedIndexes: Invalid value: 1: requires indexed completion mode",
            "spec.successPolicy: Invalid value: {\"rules\":[{\"succeededCount\":1}]}: requires indexed completion mode",
            "spec.podReplacementPolicy: Unsupported value: \"Sometimes\": supported values: \"Failed\", \"TerminatingOrFailed\"",
        ]
    );
    assert_eq!(
        messages(validate_create(jobs, &spec(json!({"completionMode": "Indexed", "completions": 4,
            "maxFailedIndexes": 5, "successPolicy": {"rules": [{}, {"succeededIndexes": "1-0"},
                {"succeededIndexes": "0,2,1"}, {"succeededIndexes": "x"}, {"succeededIndexes": "7"},
                {"succeededIndexes": "1-2", "succeededCount": 3}, {"succeededCount": -1}]}})))),
        vec![
            "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
            "spec.maxFailedIndexes: Invalid value: 5: must be less than or equal to completions",
            "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
            "spec.successPolicy.rules[1].succeededIndexes: Invalid value: \"1-0\": error parsing succeededIndexes: non-increasing order, previous: 1, current: 0",
            "spec.successPolicy.rules[2].succeededIndexes: Invalid value: \"0,2,1\": error parsing succeededIndexes: non-increasing order, previous: 2, current: 1",
            "spec.successPolicy.rules[3].succeededIndexes: Invalid value: \"x\": error parsing succeededIndexes: cannot convert string to integer for index: \"x\"",
            "spec.successPolicy.rules[4].succeededIndexes: Invalid value: \"7\": error parsing succeededIndexes: too large index: \"7\"",
            "spec.successPolicy.rules[5].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
            "spec.successPolicy.rules[6].succeededCount: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
    assert_eq!(
        messages(validate_create(jobs, &spec(json!({"completionMode": "Indexed", "completions": 2,
            "successPolicy": {"rules": []}, "podReplacementPolicy": "TerminatingOrFailed",
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}})))),
        vec![
            "spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is specified",
            "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
        ]
    );
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
    let sub = json!({"a": {"cidr": "10.0.0.0/24"}});
    let reserved = [
        (
            json!({"name": "tenant-acme"}),
            json!({"tenantID": "other", "subnets": sub}),
        ),
        (
            json!({"name": "default"}),
            json!({"tenantID": "acme", "subnets": sub}),
        ),
        (
            json!({"name": "n"}),
            json!({"providerNetworkID": "0x10", "subnets": sub}),
        ),
    ];
    let want = [
        "metadata.name: Invalid value: \"tenant-acme\": is reserved for the default network of another tenant",
        "metadata.name: Invalid value: \"default\": is reserved for the default network of namespaces without a tenant (spec.tenantID must be empty)",
        "spec.providerNetworkID: Invalid value: \"0x10\": must be a segment id: a decimal number 1-16777215 without leading zeros",
    ];
    for ((meta, spec), want) in reserved.into_iter().zip(want) {
        let obj = json!({"metadata": meta, "spec": spec});
        assert_eq!(messages(validate_create(nets, &obj)), vec![want]);
    }
    let holder = json!({"node": "n1", "namespace": "a", "pod": "p", "podUID": "u1"});
    let mut alloc = json!({"metadata": {"name": "n"}, "spec": {"subnets": sub},
        "status": {"allocations": {"10.0.0.5": holder, "10.0.0.1": holder, "10.9.0.1": holder, "x": holder, "10.0.0.6": {"node": "n1"}}}});
    let m = messages(validate_create(nets, &alloc));
    assert_eq!(m, vec![
        "status.allocations[10.0.0.1]: Invalid value: \"10.0.0.1\": must be a host address of one of the network's subnets, not its gateway",
        "status.allocations[10.0.0.6].namespace: Required value",
        "status.allocations[10.0.0.6].pod: Required value",
        "status.allocations[10.0.0.6].podUID: Required value",
        "status.allocations[10.9.0.1]: Invalid value: \"10.9.0.1\": must be a host address of one of the network's subnets, not its gateway",
        "status.allocations[x]: Invalid value: \"x\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    ]);
    alloc["status"]["allocations"] = json!({"10.0.0.5": holder});
    assert_eq!(validate_create(nets, &alloc), Ok(()));
    let own = json!({"metadata": {"name": "tenant-acme"}, "spec": {"tenantID": "acme", "providerNetworkID": "4097", "subnets": sub}});
    assert_eq!(validate_create(nets, &own), Ok(()));
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

fn first_res(g: &str, p: &str) -> &'static Resource {
    let v = crate::resources::groups()
        .iter()
        .find(|x| x.name == g)
        .unwrap()
        .versions[0];
    find(g, v, p).unwrap()
}

#[test]
fn priority_class_rules() {
    let pc = first_res("scheduling.k8s.io", "priorityclasses");
    let ok = json!({"metadata": {"name": "high"}, "value": 1000});
    assert_eq!(validate_create(pc, &ok), Ok(()));
    assert_eq!(
        messages(validate_create(
            pc,
            &json!({"metadata": {"name": "huge"}, "value": 1_000_000_001})
        )),
        vec!["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    );
    assert_eq!(
        messages(validate_create(pc, &json!({"metadata": {"name": "system-mine"}, "value": 1}))),
        vec!["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
    );
    let sys = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000});
    assert_eq!(validate_create(pc, &sys), Ok(()));
    let mut wrong = sys.clone();
    wrong["value"] = json!(5);
    assert!(validate_create(pc, &wrong).is_err());
    let mut changed = ok.clone();
    changed["value"] = json!(7);
    assert_eq!(
        messages(validate_update(pc, &changed, &ok)),
        vec!["value: Forbidden: may not be changed in an update."]
    );
    let mut bad = ok.clone();
    bad["preemptionPolicy"] = json!("Sometimes");
    assert!(validate_create(pc, &bad).is_err());
}

#[test]
fn runtime_class_rules() {
    let rc = first_res("node.k8s.io", "runtimeclasses");
    let ok = json!({"metadata": {"name": "vm"}, "handler": "h8s",
        "overhead": {"podFixed": {"memory": "64Mi"}}});
    assert_eq!(validate_create(rc, &ok), Ok(()));
    assert_eq!(
        messages(validate_create(rc, &json!({"metadata": {"name": "vm"}}))),
        vec!["handler: Required value"]
    );
    let mut neg = ok.clone();
    neg["overhead"]["podFixed"]["cpu"] = json!("-1");
    assert!(validate_create(rc, &neg).is_err());
    let mut other = ok.clone();
    other["handler"] = json!("runc");
    assert_eq!(
        messages(validate_update(rc, &other, &ok)),
        vec!["handler: Invalid value: \"runc\": field is immutable"]
    );
}

#[test]
fn disruption_budget_rules() {
    let pdb = first_res("policy", "poddisruptionbudgets");
    let ok = json!({"metadata": {"name": "b", "namespace": "d"},
        "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}});
    assert_eq!(validate_create(pdb, &ok), Ok(()));
    let mut both = ok.clone();
    both["spec"]["maxUnavailable"] = json!(1);
    let m = messages(validate_create(pdb, &both));
    assert!(
        m[0].ends_with("minAvailable and maxUnavailable cannot be both set"),
        "{m:?}"
    );
    let mut pct = ok.clone();
    pct["spec"]["minAvailable"] = json!("150%");
    assert!(validate_create(pdb, &pct).is_err());
    let mut policy = ok.clone();
    policy["spec"]["unhealthyPodEvictionPolicy"] = json!("Never");
    assert!(validate_create(pdb, &policy).is_err());
    let mut st = ok.clone();
    st["status"] = json!({"disruptionsAllowed": -1});
    assert_eq!(
        messages(validate_status_update(pdb, &st, &ok)),
        vec!["status.disruptionsAllowed: Invalid value: -1: must be greater than or equal to 0"]
    );
}

#[test]
fn endpoint_slice_rules() {
    let es = first_res("discovery.k8s.io", "endpointslices");
    let ok = json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"name": "http", "port": 80}]});
    assert_eq!(validate_create(es, &ok), Ok(()));
    assert_eq!(
        messages(validate_create(
            es,
            &json!({"metadata": {"name": "s", "namespace": "d"}})
        )),
        vec!["addressType: Required value"]
    );
    let mut v6 = ok.clone();
    v6["endpoints"][0]["addresses"] = json!(["fd00::1"]);
    assert_eq!(
        messages(validate_create(es, &v6)),
        vec!["endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address"]
    );
    let mut none = ok.clone();
    none["endpoints"][0]["addresses"] = json!([]);
    assert!(validate_create(es, &none).is_err());
    let mut port = ok.clone();
    port["ports"][0]["port"] = json!(70000);
    assert!(validate_create(es, &port).is_err());
    let mut at = ok.clone();
    at["addressType"] = json!("IPv6");
    at["endpoints"] = json!([]);
    assert!(messages(validate_update(es, &at, &ok))
        .iter()
        .any(|m| m.starts_with("addressType: Invalid value: \"IPv6\": field is immutable")));
}

#[test]
fn csr_rules() {
    use base64::Engine as _;
    let csr = first_res("certificates.k8s.io", "certificatesigningrequests");
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIHd\n-----END CERTIFICATE REQUEST-----\n";
    let req = base64::engine::general_purpose::STANDARD.encode(pem);
    let ok = json!({"metadata": {"name": "c"}, "spec": {"request": req,
        "signerName": "example.com/signer", "usages": ["client auth"]}});
    assert_eq!(validate_create(csr, &ok), Ok(()));
    let mut bad = ok.clone();
    bad["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode("junk"));
    bad["spec"]["signerName"] = json!("nodomain");
    bad["spec"]["usages"] = json!([]);
    bad["spec"]["expirationSeconds"] = json!(60);
    let m = messages(validate_create(csr, &bad));
    assert_eq!(m.len(), 4, "{m:?}");
    assert!(
        m[0].ends_with("PEM block type must be CERTIFICATE REQUEST"),
        "{m:?}"
    );
    assert_eq!(m[2], "spec.usages: Required value: usages must be provided");
    let approved = json!({"metadata": {"name": "c"}, "spec": ok["spec"],
        "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
    assert_eq!(validate_status_update(csr, &approved, &ok), Ok(()));
    let mut both = approved.clone();
    both["status"]["conditions"] =
        json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]);
    assert!(messages(validate_status_update(csr, &both, &ok))
        .iter()
        .any(|m| m.ends_with("Approved and Denied conditions are mutually exclusive")));
    assert_eq!(
        messages(validate_status_update(csr, &ok, &approved)),
        vec![
            "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""
        ]
    );
}

#[test]
fn events_v1_are_strict_on_create() {
    let ev = first_res("events.k8s.io", "events");
    let ok = json!({"metadata": {"name": "e", "namespace": "d"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "reason": "R",
        "action": "A", "reportingController": "h8s.io/x", "reportingInstance": "i",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "d"}});
    assert_eq!(validate_create(ev, &ok), Ok(()));
    let m = messages(validate_create(
        ev,
        &json!({"metadata": {"name": "e", "namespace": "d"}, "type": "Normal"}),
    ));
    assert!(
        m.contains(&"eventTime: Required value".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"reportingController: Required value".to_string()),
        "{m:?}"
    );
    let mut old = ok.clone();
    old["deprecatedCount"] = json!(3);
    assert_eq!(
        messages(validate_create(ev, &old)),
        vec!["deprecatedCount: Invalid value: \"\": needs to be unset"]
    );
    // Core v1 Events stay lax.
    let core = res("", "events");
    assert_eq!(
        validate_create(core, &json!({"metadata": {"name": "e", "namespace": "d"}})),
        Ok(())
    );
}

#[test]
fn volume_attachment_rules() {
    let r = res("storage.k8s.io", "volumeattachments");
    let good = json!({"metadata": {"name": "csi-abc"}, "spec": {
        "attacher": "rbd.volumes.h8s.io", "nodeName": "n1",
        "source": {"persistentVolumeName": "pvc-1"}}});
    assert!(validate_create(r, &good).is_ok());
    let mut none = good.clone();
    none["spec"]["source"] = json!({});
    let mut both = good.clone();
    both["spec"]["source"]["inlineVolumeSpec"] =
        json!({"csi": {"driver": "d", "volumeHandle": "h"}});
    for bad in [none, both] {
        let m = messages(validate_create(r, &bad));
        assert!(
            m.iter()
                .any(|m| m.contains("exactly one of inlineVolumeSpec and persistentVolumeName")),
            "{m:?}"
        );
    }
    let mut no_node = good.clone();
    no_node["spec"]["nodeName"] = json!("");
    assert!(messages(validate_create(r, &no_node))
        .iter()
        .any(|m| m.contains("spec.nodeName")));
    let mut moved = good.clone();
    moved["spec"]["nodeName"] = json!("n2");
    assert!(messages(validate_update(r, &moved, &good))
        .iter()
        .any(|m| m.contains("immutable")));
    let mut status = good.clone();
    status["status"] = json!({"attached": true, "attachError": {"message": "x".repeat(2000)}});
    assert!(validate_create(r, &status).is_err());
}

#[test]
fn network_provider_services_external_ips_and_source_ranges() {
    let svcs = res("", "services");
    let svc = |spec: Value| {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "default"}, "spec": spec})
    };
    // The seeds' type is accepted, without node ports.
    let np = svc(json!({"type": "NetworkProvider", "ports": [{"port": 80}],
        "loadBalancerSourceRanges": ["203.0.113.0/24", " 10.0.0.0/8 "]}));
    assert_eq!(validate_create(svcs, &np), Ok(()));
    let with_port =
        svc(json!({"type": "NetworkProvider", "ports": [{"port": 80, "nodePort": 30080}]}));
    assert_eq!(
        messages(validate_create(svcs, &with_port)),
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'NetworkProvider'"]
    );
    assert_eq!(
        messages(validate_create(
            svcs,
            &svc(json!({"type": "Magic", "ports": [{"port": 80}]}))
        ))
        .len(),
        1
    );
    // Source ranges only on load balancers, and only CIDRs.
    let msgs = messages(validate_create(
        svcs,
        &svc(json!({"ports": [{"port": 80}], "loadBalancerSourceRanges": ["x/8"]})),
    ));
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].starts_with("spec.loadBalancerSourceRanges: Forbidden"),
        "{msgs:?}"
    );
    // External IPs: addresses, not loopback/unspecified/multicast.
    let ok = svc(json!({"ports": [{"port": 80}], "externalIPs": ["192.0.2.10"]}));
    assert_eq!(validate_create(svcs, &ok), Ok(()));
    for bad in ["127.0.0.1", "0.0.0.0", "224.0.0.1", "nope"] {
        let b = svc(json!({"ports": [{"port": 80}], "externalIPs": [bad]}));
        assert_eq!(messages(validate_create(svcs, &b)).len(), 1, "{bad}");
    }
}
