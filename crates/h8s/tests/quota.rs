//! LimitRanges, ResourceQuotas and the tenant-wide quota enforced at admission, with real
//! kubectl 1.33 (and curl for the races and malformed bodies) against the real
//! `h8s server` (no node agent: pods stay Pending, which still counts against quota).
//! One server for the whole binary; each part works in its own namespaces.

mod api_support;

use api_support::{eventually, json, Server};

const V: &str = "1.33";

fn ns(srv: &Server, name: &str, tenant: Option<&str>) {
    let labels = tenant
        .map(|t| format!("\n  labels:\n    tenancy.h8s.io/tenant: {t}"))
        .unwrap_or_default();
    srv.kubectl_stdin(
        V,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}{labels}\n"
        )),
    );
    // Pods need the namespace's `default` ServiceAccount (the ServiceAccount admission).
    assert!(
        eventually(30, || srv
            .kubectl_out(V, &["get", "sa", "default", "-n", name], None)
            .status
            .success()),
        "no default ServiceAccount in {name}"
    );
}

fn pod_yaml(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{resources}"
    )
}

fn create_pod(srv: &Server, ns: &str, name: &str, resources: &str) -> std::process::Output {
    srv.kubectl_out(
        V,
        &["create", "-n", ns, "-f", "-"],
        Some(&pod_yaml(name, resources)),
    )
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// `status.used[resource]` of a ResourceQuota (or a Tenant with `ns` empty).
fn used(srv: &Server, kind: &str, ns: &str, name: &str, resource: &str) -> Option<String> {
    let mut args = vec!["get", kind, name, "-o", "json"];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    let o = srv.kubectl_out(V, &args, None);
    if !o.status.success() {
        return None;
    }
    let v = json(&String::from_utf8_lossy(&o.stdout));
    v["status"]["used"][resource].as_str().map(str::to_string)
}

#[test]
fn quota_and_limits_at_admission() {
    let srv = Server::start();
    limit_ranges(&srv);
    resource_quota(&srv);
    race_for_the_last_slot(&srv);
    tenant_quota(&srv);
    bad_input_is_never_a_500(&srv);
}

const LIMIT_RANGE: &str = "apiVersion: v1
kind: LimitRange
metadata:
  name: limits
spec:
  limits:
  - type: Container
    default:
      cpu: 500m
      memory: 256Mi
    defaultRequest:
      cpu: 200m
      memory: 128Mi
    min:
      cpu: 100m
    max:
      memory: 1Gi
";

fn limit_ranges(srv: &Server) {
    ns(srv, "lr", None);
    srv.kubectl_stdin(V, &["create", "-n", "lr", "-f", "-"], Some(LIMIT_RANGE));
    // Defaults land in a pod that names no resources (init containers too).
    let o = srv.kubectl_out(
        V,
        &["create", "-n", "lr", "-f", "-"],
        Some(&format!(
            "{}  initContainers:\n  - name: init\n    image: busybox\n",
            pod_yaml("plain", "")
        )),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p = json(&srv.kubectl(V, &["get", "pod", "plain", "-n", "lr", "-o", "json"]));
    for c in ["containers", "initContainers"] {
        assert_eq!(
            p["spec"][c][0]["resources"],
            serde_json::json!({"limits": {"cpu": "500m", "memory": "256Mi"},
                               "requests": {"cpu": "200m", "memory": "128Mi"}}),
            "{c}"
        );
    }
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c; \
         cpu, memory request for init container init; cpu, memory limit for init container init"
    );
    assert_eq!(p["status"]["qosClass"], "Burstable");
    // Below the minimum and above the maximum: 403 in Kubernetes' words.
    let o = create_pod(
        srv,
        "lr",
        "small",
        "    resources:\n      requests:\n        cpu: 50m\n      limits:\n        memory: 2Gi\n",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"small\" is forbidden: \
             [minimum cpu usage per Container is 100m, but request is 50m, \
             maximum memory usage per Container is 1Gi, but limit is 2Gi]"
        ),
        "{}",
        stderr(&o)
    );
    let (code, body) = srv.curl(
        "POST",
        "/api/v1/namespaces/lr/pods",
        Some("application/json"),
        Some(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"memory": "4Gi"}}}]}})
            .to_string()
            .as_bytes(),
        ),
    );
    assert_eq!(code, 403, "{body}");
    let st = json(&body);
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(st["details"]["name"], "big");
    assert_eq!(
        st["message"],
        "pods \"big\" is forbidden: maximum memory usage per Container is 1Gi, but limit is 4Gi"
    );
    // Claims: min and max of the storage request.
    srv.kubectl_stdin(
        V,
        &["create", "-n", "lr", "-f", "-"],
        Some("apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: storage\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    min:\n      storage: 1Gi\n    max:\n      storage: 10Gi\n"),
    );
    let claim = |name: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  resources:\n    requests:\n      storage: {size}\n")
    };
    let err = srv.kubectl_fails(
        V,
        &["create", "-n", "lr", "-f", "-"],
        Some(&claim("huge", "20Gi")),
    );
    assert!(
        err.contains("persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"),
        "{err}"
    );
    srv.kubectl_stdin(
        V,
        &["create", "-n", "lr", "-f", "-"],
        Some(&claim("fine", "2Gi")),
    );
}

const QUOTA: &str = "apiVersion: v1
kind: ResourceQuota
metadata:
  name: pods
spec:
  hard:
    pods: \"2\"
    requests.cpu: \"1\"
";

fn resource_quota(srv: &Server) {
    ns(srv, "q", None);
    srv.kubectl_stdin(V, &["create", "-n", "q", "-f", "-"], Some(QUOTA));
    // kube enforces what the status controller has synced.
    assert!(eventually(30, || used(srv, "quota", "q", "pods", "pods")
        .as_deref()
        == Some("0")));
    let cpu = "    resources:\n      requests:\n        cpu: 100m\n";
    // A quota on requests.cpu wants every container to name it.
    let o = create_pod(srv, "q", "nocpu", "");
    assert!(
        stderr(&o).contains(
            "pods \"nocpu\" is forbidden: failed quota: pods: must specify requests.cpu for: c"
        ),
        "{}",
        stderr(&o)
    );
    for p in ["p1", "p2"] {
        let o = create_pod(srv, "q", p, cpu);
        assert!(o.status.success(), "{p}: {}", stderr(&o));
    }
    // Charged at admission, before any controller looked.
    assert_eq!(
        used(srv, "quota", "q", "pods", "pods").as_deref(),
        Some("2")
    );
    assert_eq!(
        used(srv, "quota", "q", "pods", "requests.cpu").as_deref(),
        Some("200m")
    );
    let o = create_pod(srv, "q", "p3", cpu);
    assert!(
        stderr(&o).contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"p3\" is forbidden: \
             exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{}",
        stderr(&o)
    );
    // Deleting a pod releases its slot (the status controller recounts).
    srv.kubectl(V, &["delete", "pod", "p1", "-n", "q", "--wait=false"]);
    assert!(
        eventually(30, || used(srv, "quota", "q", "pods", "pods").as_deref()
            == Some("1")),
        "the deleted pod's usage is released"
    );
    let o = create_pod(srv, "q", "p3", cpu);
    assert!(o.status.success(), "{}", stderr(&o));
    // Too much cpu: the message names what was asked, used and allowed.
    let o = create_pod(
        srv,
        "q",
        "hog",
        "    resources:\n      requests:\n        cpu: \"2\"\n",
    );
    assert!(
        stderr(&o).contains("exceeded quota: pods, requested: pods=1,requests.cpu=2, used: pods=2,requests.cpu=200m, limited: pods=2,requests.cpu=1"),
        "{}",
        stderr(&o)
    );
    // Object counts and services.
    srv.kubectl_stdin(
        V,
        &["create", "-n", "q", "-f", "-"],
        Some("apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: objects\nspec:\n  hard:\n    configmaps: \"3\"\n    services.nodeports: \"1\"\n"),
    );
    assert!(eventually(30, || used(
        srv,
        "quota",
        "q",
        "objects",
        "configmaps"
    )
    .is_some()));
    let have: i64 = used(srv, "quota", "q", "objects", "configmaps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for i in have..3 {
        srv.kubectl(V, &["create", "configmap", &format!("cm{i}"), "-n", "q"]);
    }
    let err = stderr(&srv.kubectl_out(V, &["create", "configmap", "cmx", "-n", "q"], None));
    assert!(
        err.contains("configmaps \"cmx\" is forbidden: exceeded quota: objects, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"),
        "{err}"
    );
    let err = stderr(&srv.kubectl_out(
        V,
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:80,81:81",
            "-n",
            "q",
        ],
        None,
    ));
    assert!(
        err.contains("exceeded quota: objects, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"),
        "{err}"
    );
}

fn race_for_the_last_slot(srv: &Server) {
    ns(srv, "race", None);
    srv.kubectl_stdin(
        V,
        &["create", "-n", "race", "-f", "-"],
        Some("apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: three\nspec:\n  hard:\n    pods: \"3\"\n"),
    );
    assert!(eventually(30, || used(
        srv, "quota", "race", "three", "pods"
    )
    .as_deref()
        == Some("0")));
    for p in ["a", "b"] {
        let o = create_pod(srv, "race", p, "");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // Twelve creates at once for the one slot left: exactly one wins.
    const N: usize = 12;
    let barrier = std::sync::Barrier::new(N);
    let results: Vec<(u16, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("r{i}")},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
                    .to_string();
                    barrier.wait();
                    srv.curl(
                        "POST",
                        "/api/v1/namespaces/race/pods",
                        Some("application/json"),
                        Some(body.as_bytes()),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let won = results.iter().filter(|(c, _)| *c == 201).count();
    assert_eq!(won, 1, "{results:?}");
    for (c, b) in results.iter().filter(|(c, _)| *c != 201) {
        assert_eq!(*c, 403, "{b}");
        assert!(
            b.contains("exceeded quota: three, requested: pods=1, used: pods=3, limited: pods=3"),
            "{b}"
        );
    }
    let pods = json(&srv.kubectl(V, &["get", "pods", "-n", "race", "-o", "json"]));
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        used(srv, "quota", "race", "three", "pods").as_deref(),
        Some("3")
    );
}

const TENANT: &str = "apiVersion: tenancy.h8s.io/v1
kind: Tenant
metadata:
  name: acme
spec:
  quota:
    hard:
      pods: \"3\"
      requests.memory: 1Gi
";

fn tenant_quota(srv: &Server) {
    // A tenant user, to show the quota binds tenants' own requests.
    std::fs::write(
        srv.data_dir().join("tokens.csv"),
        "tok-acme-quota-7c1d,acme-u1,uid-acme-1,\"h8s:tenant:acme\"\n",
    )
    .expect("tokens.csv");
    srv.kubectl_stdin(V, &["create", "-f", "-"], Some(TENANT));
    ns(srv, "acme-a", Some("acme"));
    ns(srv, "acme-b", Some("acme"));
    assert!(
        eventually(30, || used(srv, "tenant", "", "acme", "pods").as_deref()
            == Some("0")),
        "the tenant quota controller fills status.used"
    );
    let mem = "    resources:\n      requests:\n        memory: 256Mi\n";
    for (n, p) in [("acme-a", "t1"), ("acme-a", "t2"), ("acme-b", "t3")] {
        let o = create_pod(srv, n, p, mem);
        assert!(o.status.success(), "{p}: {}", stderr(&o));
    }
    assert_eq!(
        used(srv, "tenant", "", "acme", "pods").as_deref(),
        Some("3")
    );
    assert_eq!(
        used(srv, "tenant", "", "acme", "requests.memory").as_deref(),
        Some("768Mi")
    );
    // The fourth pod, in either namespace, as the tenant's user: refused.
    let body = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t4"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"memory": "128Mi"}}}]}})
    .to_string();
    let mut last = (0, String::new());
    // The auth-controller's RoleBinding gives the tenant its namespaces; wait for it.
    assert!(eventually(30, || {
        last = srv.curl_with(
            "POST",
            "/api/v1/namespaces/acme-b/pods",
            Some("application/json"),
            Some(body.as_bytes()),
            Some("tok-acme-quota-7c1d"),
        );
        last.0 != 401 && !(last.0 == 403 && last.1.contains("cannot create"))
    }));
    assert_eq!(last.0, 403, "{}", last.1);
    assert_eq!(
        json(&last.1)["message"],
        "pods \"t4\" is forbidden: exceeded quota: tenant/acme, requested: pods=1, used: pods=3, limited: pods=3"
    );
    let err = stderr(&create_pod(srv, "acme-a", "t5", mem));
    assert!(err.contains("exceeded quota: tenant/acme"), "{err}");
    // Another tenant's and untenanted namespaces are not bound by acme's quota.
    ns(srv, "free", None);
    assert!(create_pod(srv, "free", "f1", mem).status.success());
    // A delete frees a slot in the tenant's other namespace.
    srv.kubectl(V, &["delete", "pod", "t1", "-n", "acme-a", "--wait=false"]);
    assert!(eventually(30, || used(srv, "tenant", "", "acme", "pods")
        .as_deref()
        == Some("2")));
    let o = create_pod(srv, "acme-b", "t6", mem);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn bad_input_is_never_a_500(srv: &Server) {
    let post = |ns: &str, body: &str| {
        srv.curl(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some("application/json"),
            Some(body.as_bytes()),
        )
    };
    // A LimitRange and a quota with quantities that are not quantities.
    ns(srv, "bad", None);
    let _ = srv.kubectl_out(
        V,
        &["create", "-n", "bad", "-f", "-"],
        Some("apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: odd\nspec:\n  limits:\n  - type: Container\n    min:\n      cpu: lots\n"),
    );
    for (ns, body) in [
        (
            "q",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m1"},"spec":{"containers":7}}"#,
        ),
        (
            "lr",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m2"},"spec":{"containers":[{"name":"c","image":"i","resources":{"requests":{"cpu":"abc"}}}]}}"#,
        ),
        (
            "q",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m3"},"spec":{"containers":[{"name":"c","image":"i","resources":{"requests":{"cpu":-1}}}]}}"#,
        ),
        (
            "acme-a",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m4"},"spec":{"containers":[{"name":"c","image":"i","resources":"x"}]}}"#,
        ),
        (
            "bad",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"m5"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#,
        ),
    ] {
        let (code, b) = post(ns, body);
        assert!(
            (200..500).contains(&code) && code != 0,
            "{ns} {body}: {code} {b}"
        );
        assert_ne!(json(&b)["code"], 500, "{b}");
    }
}
