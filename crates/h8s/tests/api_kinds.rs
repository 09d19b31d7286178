//! The rest of the built-in kinds (issue 12) with real kubectl 1.33 against the real
//! `h8s server`: `kubectl api-resources -o wide` compared with what a 1.33 cluster lists
//! (fixtures/api_resources_1.33.txt: names, short names, version, scope, kind, verbs), create/get/list of each new kind with kubectl's
//! columns, `kubectl autoscale` and the HPA served in autoscaling/v2 and v1 with its
//! controller scaling the target (no pod metrics here: no node runs the pods), core
//! Bindings, ComponentStatuses, the default ServiceCIDR and APF objects, and validation
//! errors naming their fields.

mod api_support;

use api_support::{json, Server};

const V: &str = "1.33";

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

/// `kubectl api-resources -o wide` rows as (name, shortnames, apiversion, namespaced,
/// kind, verbs), cut at the header's column starts (SHORTNAMES may be blank); verbs
/// normalized to a comma-joined list (kubectl prints `[a b]` or `a,b` by version).
fn api_resources(out: &str) -> Vec<[String; 6]> {
    const COLS: [&str; 7] = [
        "NAME",
        "SHORTNAMES",
        "APIVERSION",
        "NAMESPACED",
        "KIND",
        "VERBS",
        "CATEGORIES",
    ];
    let mut lines = out.lines();
    let head = lines.next().expect("header");
    let starts: Vec<usize> = COLS
        .iter()
        .map(|c| head.find(c).unwrap_or_else(|| panic!("no {c} in {head}")))
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cut = |i: usize| {
                let a = starts[i].min(l.len());
                let b = starts.get(i + 1).map_or(l.len(), |&b| b.min(l.len()));
                l[a..b].trim().to_string()
            };
            let verbs = cut(5)
                .trim_matches(|c| c == '[' || c == ']')
                .split([',', ' '])
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            [cut(0), cut(1), cut(2), cut(3), cut(4), verbs]
        })
        .collect()
}

/// API groups h8s serves beyond a 1.33 cluster: its own kinds, and metrics.k8s.io (a
/// local APIService here; metrics-server's add-on on Kubernetes).
const H8S_GROUPS: &[&str] = &["tenancy.h8s.io/", "metrics.k8s.io/"];
/// h8s's own kinds in the core group.
const H8S_CORE: &[&str] = &["networks"];

#[test]
fn api_resources_match_kubernetes_1_33() {
    let s = Server::start();
    let out = s.kubectl(V, &["api-resources", "-o", "wide"]);
    let served = api_resources(&out);
    let fixture = include_str!("fixtures/api_resources_1.33.txt");
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    let mut listed = Vec::new();
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let short = if f[1] == "-" { "" } else { f[1] };
        let want = [f[0], short, f[2], f[3], f[4], f[5]];
        listed.push((f[0], f[2]));
        match served.iter().find(|r| r[0] == f[0] && r[2] == f[2]) {
            None => missing.push(format!("{} {}", f[0], f[2])),
            Some(r) if r.iter().zip(want).any(|(a, b)| a != b) => {
                differ.push(format!("want {want:?}\n got {r:?}"));
            }
            Some(_) => {}
        }
    }
    let extra: Vec<String> = served
        .iter()
        .filter(|r| !listed.contains(&(r[0].as_str(), r[2].as_str())))
        .filter(|r| !H8S_GROUPS.iter().any(|g| r[2].starts_with(g)))
        .filter(|r| !(r[2] == "v1" && H8S_CORE.contains(&r[0].as_str())))
        .map(|r| format!("{} {}", r[0], r[2]))
        .collect();
    assert!(missing.is_empty(), "not served: {missing:?}\n{out}");
    assert!(
        differ.is_empty(),
        "differ from 1.33:\n{}",
        differ.join("\n")
    );
    assert!(extra.is_empty(), "not in 1.33 nor h8s's own: {extra:?}");
    // autoscaling/v1 is served too (not preferred: api-resources lists v2).
    let v1 = s.kubectl(
        V,
        &["api-resources", "--api-group=autoscaling", "-o", "wide"],
    );
    assert!(v1.contains("autoscaling/v2"), "{v1}");
    let versions = s.kubectl(V, &["api-versions"]);
    for gv in [
        "autoscaling/v1",
        "autoscaling/v2",
        "flowcontrol.apiserver.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == gv), "{gv} in\n{versions}");
    }
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
        resources:
          requests: {cpu: 100m, memory: 64Mi}
";

#[test]
fn hpa_in_both_versions_with_kubectl() {
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[
            "--horizontal-pod-autoscaler-sync-period".as_ref(),
            "1s".as_ref(),
        ],
    );
    let k = |args: &[&str]| s.kubectl(V, args);
    s.kubectl_stdin(V, &["apply", "-f", "-"], Some(DEPLOY));
    k(&[
        "autoscale",
        "deployment",
        "web",
        "--min=2",
        "--max=5",
        "--cpu-percent=50",
    ]);
    let t = k(&["get", "hpa"]);
    assert_eq!(
        header(&t),
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ],
        "{t}"
    );
    let r = row(&t, "web");
    assert!(
        r.contains("Deployment/web") && r.contains("cpu: <unknown>/50%"),
        "{r}"
    );
    // The same object in autoscaling/v1 and v2.
    let (code, body) = s.curl(
        "GET",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
        None,
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v1 = json(&body);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(v1["spec"]["minReplicas"], 2);
    let (_, body) = s.curl(
        "GET",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
        None,
        None,
    );
    let v2 = json(&body);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        50
    );
    // A v2 HPA with a memory metric and behavior, read back in v1 and written back: the
    // v2-only fields survive the v1 round trip.
    let hpa = r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler",
        "metadata":{"name":"mem"},
        "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},
          "maxReplicas":4,
          "metrics":[{"type":"Resource","resource":{"name":"memory","target":{"type":"AverageValue","averageValue":"100Mi"}}}],
          "behavior":{"scaleDown":{"stabilizationWindowSeconds":60}}}}"#;
    s.kubectl_stdin(V, &["create", "-f", "-"], Some(hpa));
    let (_, body) = s.curl(
        "GET",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/mem",
        None,
        None,
    );
    // Unconditional (the controller writes the status meanwhile).
    let mut v1 = json(&body);
    v1["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (code, body) = s.curl(
        "PUT",
        "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/mem",
        Some("application/json"),
        Some(v1.to_string().as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    let v2 = json(&k(&["get", "hpa.v2.autoscaling", "mem", "-o", "json"]));
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["name"], "memory");
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        60
    );
    assert_eq!(v2["spec"]["behavior"]["scaleUp"]["selectPolicy"], "Max");
    assert!(v2["metadata"].get("annotations").is_none(), "{v2}");
    assert!(row(&k(&["get", "hpa"]), "mem").contains("memory: <unknown>/100Mi"));
    // Validation: max below min, a Utilization target without a value.
    let bad = r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"bad"},
        "spec":{"scaleTargetRef":{"kind":"Deployment","name":"web"},"minReplicas":3,"maxReplicas":2,
          "metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization"}}}]}}"#;
    let err = s.kubectl_fails(V, &["create", "-f", "-"], Some(bad));
    assert!(
        err.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{err}"
    );
    assert!(
        err.contains("spec.metrics[0].resource.target.averageUtilization: Required value"),
        "{err}"
    );
    // The controller (in the server, syncing every second) scales the target up to
    // minReplicas, records it, and says why it cannot compute more: the pods have no
    // metrics (no node runs them here).
    assert!(
        api_support::eventually(60, || {
            let d = json(&k(&["get", "deployment", "web", "-o", "json"]));
            d["spec"]["replicas"] == 2
        }),
        "the HPA did not scale web to minReplicas: {}",
        k(&["get", "hpa", "web", "-o", "yaml"])
    );
    let ev = k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=SuccessfulRescale",
    ]);
    assert!(
        ev.contains("New size: 2; reason: Current number of replicas below Spec.MinReplicas"),
        "{ev}"
    );
    assert!(
        api_support::eventually(60, || {
            let h = json(&k(&["get", "hpa.v2.autoscaling", "web", "-o", "json"]));
            let conds = h["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let c = |t: &str| {
                conds
                    .iter()
                    .find(|c| c["type"] == t)
                    .cloned()
                    .unwrap_or_default()
            };
            h["status"]["currentReplicas"] == 2
                && c("AbleToScale")["status"] == "True"
                && c("ScalingActive")["status"] == "False"
                && c("ScalingActive")["reason"] == "FailedGetResourceMetric"
        }),
        "{}",
        k(&["get", "hpa.v2.autoscaling", "web", "-o", "yaml"])
    );
    // Its v1 form carries the v2 conditions in the annotation Kubernetes uses.
    let v1 = json(
        &s.curl(
            "GET",
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
            None,
            None,
        )
        .1,
    );
    assert!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"]
            .as_str()
            .is_some_and(|c| c.contains("FailedGetResourceMetric")),
        "{v1}"
    );
}

const NETWORKING: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
spec:
  controller: k8s.io/ingress-nginx
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  ingressClassName: nginx
  tls:
  - hosts: [web.example.com]
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
---
apiVersion: networking.k8s.io/v1
kind: IPAddress
metadata:
  name: 10.96.100.7
spec:
  parentRef:
    group: \"\"
    resource: services
    namespace: default
    name: web
";

#[test]
fn networking_storage_apf_and_core_kinds_with_kubectl() {
    let s = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &["--ipaddress-leak-grace-period".as_ref(), "2s".as_ref()],
    );
    let k = |args: &[&str]| s.kubectl(V, args);
    let ki = |args: &[&str], input: &str| s.kubectl_stdin(V, args, Some(input));

    // ---- networking.k8s.io ----
    ki(&["apply", "-f", "-"], NETWORKING);
    let ing = k(&["get", "ingress"]);
    assert_eq!(
        header(&ing),
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        "{ing}"
    );
    let r = row(&ing, "web");
    assert!(
        r.contains("nginx") && r.contains("web.example.com") && r.contains("80, 443"),
        "{r}"
    );
    let ic = k(&["get", "ingressclass"]);
    assert_eq!(
        header(&ic),
        ["NAME", "CONTROLLER", "PARAMETERS", "AGE"],
        "{ic}"
    );
    assert!(row(&ic, "nginx").contains("k8s.io/ingress-nginx"));
    let ip = k(&["get", "ipaddresses"]);
    assert_eq!(header(&ip), ["NAME", "PARENTREF", "AGE"], "{ip}");
    assert!(row(&ip, "10.96.100.7").contains("services/default/web"));
    cluster_ips_are_ip_addresses(&s);
    // The default ServiceCIDR is the server's service range, and Ready.
    let sc = k(&["get", "servicecidrs"]);
    assert_eq!(header(&sc), ["NAME", "CIDRS", "AGE"], "{sc}");
    assert!(row(&sc, "kubernetes").contains("10.96.0.0/12"), "{sc}");
    let o = json(&k(&["get", "servicecidr", "kubernetes", "-o", "json"]));
    assert_eq!(o["status"]["conditions"][0]["type"], "Ready");
    // Ingress status through its subresource.
    let (code, body) = s.curl(
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status",
        Some("application/merge-patch+json"),
        Some(br#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert!(row(&k(&["get", "ing"]), "web").contains("192.0.2.10"));
    // Validation errors name their fields.
    let bad = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad
spec:
  rules:
  - http:
      paths:
      - path: relative
        backend:
          service:
            name: web
";
    let err = s.kubectl_fails(V, &["apply", "-f", "-"], Some(bad));
    assert!(
        err.contains("spec.rules[0].http.paths[0].pathType: Required value"),
        "{err}"
    );
    assert!(
        err.contains("spec.rules[0].http.paths[0].backend.service.port: Required value"),
        "{err}"
    );
    let err = s.kubectl_fails(
        V,
        &["apply", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: IPAddress\nmetadata:\n  name: not-an-ip\nspec:\n  parentRef: {resource: services, name: x}\n"),
    );
    assert!(
        err.contains("metadata.name: Invalid value: \"not-an-ip\": must be a valid ip address"),
        "{err}"
    );
    let err = s.kubectl_fails(
        V,
        &["apply", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata:\n  name: two-v4\nspec:\n  cidrs: [10.0.0.0/24, 10.1.0.0/24]\n"),
    );
    assert!(err.contains("spec.cidrs[1]"), "{err}");

    // ---- storage.k8s.io ----
    ki(
        &["apply", "-f", "-"],
        "apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: cinder.csi.openstack.org
spec:
  attachRequired: true
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: node-1
spec:
  drivers:
  - name: cinder.csi.openstack.org
    nodeID: node-1
    allocatable: {count: 25}
",
    );
    let d = k(&["get", "csidrivers"]);
    assert_eq!(
        header(&d),
        [
            "NAME",
            "ATTACHREQUIRED",
            "PODINFOONMOUNT",
            "STORAGECAPACITY",
            "TOKENREQUESTS",
            "REQUIRESREPUBLISH",
            "MODES",
            "AGE"
        ],
        "{d}"
    );
    let r = row(&d, "cinder.csi.openstack.org");
    assert!(
        r.contains("true") && r.contains("Persistent") && r.contains("<unset>"),
        "{r}"
    );
    let o = json(&k(&[
        "get",
        "csidriver",
        "cinder.csi.openstack.org",
        "-o",
        "json",
    ]));
    assert_eq!(o["spec"]["fsGroupPolicy"], "ReadWriteOnceWithFSType");
    let n = k(&["get", "csinodes"]);
    assert_eq!(header(&n), ["NAME", "DRIVERS", "AGE"], "{n}");
    assert!(row(&n, "node-1").contains('1'));
    let err = s.kubectl_fails(
        V,
        &[
            "patch",
            "csidriver",
            "cinder.csi.openstack.org",
            "--type=merge",
            "-p",
            r#"{"spec":{"attachRequired":false}}"#,
        ],
        None,
    );
    assert!(
        err.contains("spec.attachRequired: Invalid value: false: field is immutable"),
        "{err}"
    );

    // ---- flowcontrol.apiserver.k8s.io: Kubernetes' defaults ----
    let fs = k(&["get", "flowschemas"]);
    assert_eq!(
        header(&fs),
        [
            "NAME",
            "PRIORITYLEVEL",
            "MATCHINGPRECEDENCE",
            "DISTINGUISHERMETHOD",
            "AGE",
            "MISSINGPL"
        ],
        "{fs}"
    );
    assert!(row(&fs, "exempt").contains("exempt"));
    assert!(row(&fs, "catch-all").contains("10000"));
    let pl = k(&["get", "prioritylevelconfigurations"]);
    assert!(row(&pl, "exempt").contains("Exempt"), "{pl}");
    let r = row(&pl, "workload-low");
    assert!(
        r.contains("Limited") && r.contains("100") && r.contains("128"),
        "{r}"
    );
    ki(
        &["apply", "-f", "-"],
        "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: mine
spec:
  type: Limited
  limited:
    limitResponse:
      type: Queuing
",
    );
    let o = json(&k(&[
        "get",
        "prioritylevelconfiguration",
        "mine",
        "-o",
        "json",
    ]));
    assert_eq!(o["spec"]["limited"]["nominalConcurrencyShares"], 30);
    assert_eq!(
        o["spec"]["limited"]["limitResponse"]["queuing"]["queues"],
        64
    );

    // ---- core: PodTemplate, ComponentStatus, Binding ----
    ki(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: PodTemplate
metadata:
  name: tpl
template:
  metadata:
    labels: {app: x}
  spec:
    containers:
    - name: c
      image: busybox
",
    );
    let pt = k(&["get", "podtemplates"]);
    assert_eq!(
        header(&pt),
        ["NAME", "CONTAINERS", "IMAGES", "POD LABELS"],
        "{pt}"
    );
    assert!(row(&pt, "tpl").contains("app=x"));
    let o = json(&k(&["get", "podtemplate", "tpl", "-o", "json"]));
    assert_eq!(
        o["template"]["spec"]["restartPolicy"], "Always",
        "defaulted: {o}"
    );

    let cs = s.kubectl_out(V, &["get", "componentstatuses"], None);
    let out = String::from_utf8_lossy(&cs.stdout).to_string();
    let err = String::from_utf8_lossy(&cs.stderr).to_string();
    assert!(cs.status.success(), "{err}");
    assert!(
        err.contains("v1 ComponentStatus is deprecated in v1.19+"),
        "{err}"
    );
    assert_eq!(
        header(&out),
        ["NAME", "STATUS", "MESSAGE", "ERROR"],
        "{out}"
    );
    assert!(row(&out, "etcd-0").contains("Healthy"), "{out}");
    // The control loops run in the server and hold watches on it.
    assert!(
        api_support::eventually(30, || {
            let out = k(&["get", "cs"]);
            ["scheduler", "controller-manager"]
                .iter()
                .all(|c| row(&out, c).contains("Healthy"))
        }),
        "{}",
        k(&["get", "cs"])
    );
    let one = json(&k(&["get", "cs", "etcd-0", "-o", "json"]));
    assert_eq!(one["conditions"][0]["status"], "True");
    let err = s.kubectl_fails(V, &["delete", "cs", "etcd-0"], None);
    assert!(
        err.contains("MethodNotAllowed") || err.contains("not allow"),
        "{err}"
    );

    // Binding: POST …/bindings sets the pod's node, once.
    ki(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  schedulerName: nobody
  containers:
  - name: c
    image: busybox
",
    );
    let binding = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"apiVersion":"v1","kind":"Node","name":"node-1"}}"#;
    let (code, body) = s.curl(
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some("application/json"),
        Some(binding),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(json(&body)["status"], "Success");
    let pod = json(&k(&["get", "pod", "p", "-o", "json"]));
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    let (code, body) = s.curl(
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some("application/json"),
        Some(binding),
    );
    assert_eq!(code, 409, "{body}");
    let (code, body) = s.curl(
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some("application/json"),
        Some(br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{}}"#),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("target.name"), "{body}");
}

/// The ClusterIP allocator writes an IPAddress per address (kube's IPAddress allocator),
/// takes the address back with the Service, refuses one reserved by another IPAddress, and
/// its repair loop recreates a missing one and removes a leaked one, with kube's events.
fn cluster_ips_are_ip_addresses(s: &Server) {
    let k = |args: &[&str]| s.kubectl(V, args);
    let ip_of = |svc: &str| {
        json(&k(&["get", "svc", svc, "-o", "json"]))["spec"]["clusterIP"]
            .as_str()
            .expect("clusterIP")
            .to_string()
    };
    let exists = |ip: &str| {
        s.curl(
            "GET",
            &format!("/apis/networking.k8s.io/v1/ipaddresses/{ip}"),
            None,
            None,
        )
        .0 == 200
    };
    // The kubernetes Service's address, as on any 1.33 cluster.
    let o = json(&k(&["get", "ipaddress", "10.96.0.1", "-o", "json"]));
    assert_eq!(o["spec"]["parentRef"]["name"], "kubernetes", "{o}");
    k(&["create", "service", "clusterip", "addr", "--tcp=80"]);
    let ip = ip_of("addr");
    let o = json(&k(&["get", "ipaddress", &ip, "-o", "json"]));
    assert_eq!(
        o["metadata"]["labels"],
        serde_json::json!({"ipaddress.kubernetes.io/ip-family": "IPv4",
            "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}),
        "{o}"
    );
    assert_eq!(
        o["spec"]["parentRef"],
        serde_json::json!({"group": "", "resource": "services", "namespace": "default", "name": "addr"}),
        "{o}"
    );
    assert!(row(&k(&["get", "ipaddresses"]), &ip).contains("services/default/addr"));
    // A dry run reserves nothing.
    let before = k(&["get", "ipaddresses", "-o", "name"]).lines().count();
    k(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--tcp=80",
        "--dry-run=server",
    ]);
    assert_eq!(
        k(&["get", "ipaddresses", "-o", "name"]).lines().count(),
        before
    );
    // An address another IPAddress holds (the hand-written one above) is taken.
    let err = s.kubectl_fails(
        V,
        &[
            "create",
            "service",
            "clusterip",
            "taken",
            "--tcp=80",
            "--clusterip=10.96.100.7",
        ],
        None,
    );
    assert!(err.contains("provided IP is already allocated"), "{err}");
    // Repair: a deleted IPAddress comes back, and the Service is told.
    k(&["delete", "ipaddress", &ip]);
    assert!(
        api_support::eventually(30, || exists(&ip)),
        "the repair loop did not recreate {ip}"
    );
    assert!(
        api_support::eventually(30, || k(&[
            "get",
            "events",
            "--field-selector",
            "reason=ClusterIPNotAllocated"
        ])
        .contains(&format!(
            "Cluster IP [IPv4]: {ip} is not allocated; repairing"
        ))),
        "{}",
        k(&["get", "events"])
    );
    // A leaked one (the allocator's, naming no Service) goes after the grace period.
    s.kubectl_stdin(
        V,
        &["apply", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: IPAddress\nmetadata:\n  name: 10.96.200.200\n  labels: {ipaddress.kubernetes.io/managed-by: ipallocator.k8s.io, ipaddress.kubernetes.io/ip-family: IPv4}\nspec:\n  parentRef: {group: '', resource: services, namespace: default, name: ghost}\n"),
    );
    assert!(
        api_support::eventually(30, || !exists("10.96.200.200")),
        "the leaked IPAddress was not removed"
    );
    let ev = k(&[
        "get",
        "events",
        "--field-selector",
        "reason=IPAddressNotAllocated",
    ]);
    assert!(
        ev.contains("IPAddress: 10.96.200.200 for Service default/ghost appears to have leaked: cleaning up"),
        "{ev}"
    );
    // Released with a type change to ExternalName, and with the Service.
    k(&["create", "service", "clusterip", "gone", "--tcp=80"]);
    let gone = ip_of("gone");
    assert!(exists(&gone));
    k(&["delete", "svc", "gone"]);
    assert!(!exists(&gone), "released on delete");
    k(&[
        "patch",
        "svc",
        "addr",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":"","clusterIPs":null,"ports":null}}"#,
    ]);
    assert!(
        api_support::eventually(10, || !exists(&ip)),
        "released on a type change to ExternalName"
    );
}
