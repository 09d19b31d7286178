//! Real kubectl (1.27, 1.30, 1.33) against the real `h8s server` binary.

mod api_support;

use api_support::{eventually, json, Server};

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: c
    image: nginx:1.27
";

/// The seeds' manifests, byte for byte (trailing spaces included).
const SEED_NETWORK: &str = "apiVersion: v1  \nkind: Network  \nmetadata:  \n  name: net1  \nspec:  \n  tenantID: 065f210a2ca9442aad898ab129426350  \n  subnets:  \n    subnet1:  \n      cidr: 192.168.0.0/24  \n      gateway: 192.168.0.1\n";
const SEED_NAMESPACE: &str =
    "apiVersion: v1  \nkind: Namespace  \nmetadata:  \n  name: ns1  \nspec:  \n  network: net1\n";

fn core_flow(ver: &str) {
    let s = Server::start();
    let k = |args: &[&str]| s.kubectl(ver, args);
    let ki = |args: &[&str], input: &str| s.kubectl_stdin(ver, args, Some(input));

    // version and discovery
    let v = k(&["version", "-o", "json"]);
    assert_eq!(json(&v)["serverVersion"]["minor"], "33");
    let ns = k(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    let ar = k(&["api-resources"]);
    for r in [
        "pods",
        "deployments",
        "networks",
        "selfsubjectreviews",
        "leases",
    ] {
        assert!(ar.contains(r), "api-resources lacks {r}: {ar}");
    }

    // create generators (protobuf bodies on kubectl ≥ 1.32)
    k(&["create", "namespace", "team"]);
    k(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team",
        "--from-literal=a=1",
    ]);
    k(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        "team",
        "--from-literal=p=s3cret",
    ]);
    k(&[
        "create",
        "deployment",
        "dep",
        "-n",
        "team",
        "--image=nginx",
        "--replicas=2",
    ]);
    let cm = json(&k(&["get", "cm", "cfg", "-n", "team", "-o", "json"]));
    assert_eq!(cm["data"]["a"], "1");
    assert!(cm["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    let sec = json(&k(&["get", "secret", "sec", "-n", "team", "-o", "json"]));
    assert_eq!(sec["data"]["p"], "czNjcmV0");
    let dep = json(&k(&["get", "deploy", "dep", "-n", "team", "-o", "json"]));
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["metadata"]["generation"], 1);
    let err = s.kubectl_fails(ver, &["create", "configmap", "cfg", "-n", "team"], None);
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );

    // apply twice with a change, then server-side apply
    ki(&["apply", "-f", "-"], POD);
    let p = json(&k(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(p["status"]["phase"], "Pending");
    assert!(
        p["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let out = ki(&["apply", "-f", "-"], &POD.replace("app: web", "app: web2"));
    assert!(out.contains("configured"), "{out}");
    let p = json(&k(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(p["metadata"]["labels"]["app"], "web2");
    let cm2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: v\n";
    ki(&["apply", "--server-side", "-f", "-"], cm2);
    ki(
        &["apply", "--server-side", "-f", "-"],
        &cm2.replace("k: v", "k: w"),
    );
    let c = json(&k(&["get", "cm", "ssa", "-o", "json"]));
    assert_eq!(c["data"]["k"], "w");

    // list outputs
    let wide = k(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("web"), "{wide}");
    let y = k(&["get", "pods", "-o", "yaml"]);
    assert!(y.contains("name: web"), "{y}");
    let all = k(&["get", "pods", "-A"]);
    assert!(all.contains("default") && all.contains("web"), "{all}");
    let d = k(&["describe", "pod", "web"]);
    assert!(d.contains("nginx:1.27"), "{d}");

    // label, annotate, patch (merge, json, strategic)
    k(&["label", "pod", "web", "tier=front"]);
    k(&["annotate", "pod", "web", "note=hello"]);
    let sel = k(&["get", "pods", "-l", "tier=front", "-o", "name"]);
    assert_eq!(sel.trim(), "pod/web");
    let none = k(&["get", "pods", "-l", "tier=back", "-o", "name"]);
    assert_eq!(none.trim(), "");
    k(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    k(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "team",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/a"}]"#,
    ]);
    k(&[
        "patch",
        "deploy",
        "dep",
        "-n",
        "team",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:2"}]}}}}"#,
    ]);
    let cm = json(&k(&["get", "cm", "cfg", "-n", "team", "-o", "json"]));
    assert_eq!(cm["data"], serde_json::json!({"b": "2"}));
    let dep = json(&k(&["get", "deploy", "dep", "-n", "team", "-o", "json"]));
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(dep["metadata"]["generation"], 2);

    // scale
    k(&["scale", "deploy", "dep", "-n", "team", "--replicas=5"]);
    let dep = json(&k(&["get", "deploy", "dep", "-n", "team", "-o", "json"]));
    assert_eq!(dep["spec"]["replicas"], 5);

    // explain (OpenAPI v3 on 1.29+, v2 protobuf on 1.27/1.28)
    let ex = k(&["explain", "pods.spec.containers"]);
    assert!(ex.contains("KIND:") && ex.contains("Pod"), "{ex}");
    let ex = k(&["explain", "deployments"]);
    assert!(ex.contains("Deployment"), "{ex}");

    // events show up in describe (fieldSelector on involvedObject.*)
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let ev = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: default\n  uid: {uid}\nreason: Testing\nmessage: hello from the test\ntype: Normal\n"
    );
    ki(&["create", "-f", "-"], &ev);
    let d = k(&["describe", "pod", "web"]);
    assert!(d.contains("hello from the test"), "{d}");

    // auth
    let who = k(&["auth", "whoami", "-o", "json"]);
    assert_eq!(json(&who)["status"]["userInfo"]["username"], "admin");
    let can = k(&["auth", "can-i", "create", "pods"]);
    assert_eq!(can.trim(), "yes");

    // the seeds' manifests, verbatim
    ki(&["apply", "-f", "-"], SEED_NETWORK);
    ki(&["apply", "-f", "-"], SEED_NAMESPACE);
    let net = json(&k(&["get", "network", "net1", "-o", "json"]));
    assert_eq!(net["spec"]["subnets"]["subnet1"]["gateway"], "192.168.0.1");
    let ns1 = json(&k(&["get", "ns", "ns1", "-o", "json"]));
    assert_eq!(ns1["spec"]["network"], "net1");

    // delete, and delete a namespace with contents
    k(&["delete", "pod", "web"]);
    let gone = s.kubectl_fails(ver, &["get", "pod", "web"], None);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    k(&["delete", "ns", "team", "--timeout=30s"]);
    let left = k(&["get", "cm,secret,deploy", "-n", "team", "-o", "name"]);
    assert_eq!(left.trim(), "");
    assert!(eventually(10, || !k(&["get", "ns", "-o", "name"])
        .contains("namespace/team")));
}

#[test]
fn kubectl_1_33_core_flow() {
    core_flow("1.33");
}

#[test]
fn kubectl_1_30_core_flow() {
    core_flow("1.30");
}

#[test]
fn kubectl_1_27_core_flow() {
    core_flow("1.27");
}

#[test]
fn kubectl_get_watch_prints_changes() {
    let s = Server::start();
    s.kubectl("1.33", &["create", "configmap", "w0"]);
    let mut child = s
        .kubectl_cmd("1.33")
        .args(["get", "configmaps", "-w", "--request-timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // The initial list, then a created object arrives as a new row.
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("header");
    assert!(first.contains("NAME"), "{first}");
    let mut seen = Vec::new();
    s.kubectl("1.33", &["create", "configmap", "w1"]);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(10) {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen.push(l);
            if seen.iter().any(|l| l.starts_with("w1")) {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.starts_with("w0")), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("w1")), "{seen:?}");
}

#[test]
fn restart_reuses_pki_and_data() {
    let s = Server::start();
    assert!(s.ready_in < std::time::Duration::from_secs(5));
    s.kubectl(
        "1.33",
        &["create", "configmap", "keep", "--from-literal=x=1"],
    );
    let ca = std::fs::read(s.data_dir().join("ca.crt")).unwrap();
    let tok = s.token.clone();
    let dir = s.stop();
    let s = Server::start_in(dir);
    assert_eq!(std::fs::read(s.data_dir().join("ca.crt")).unwrap(), ca);
    assert_eq!(s.token, tok);
    let cm = json(&s.kubectl("1.33", &["get", "cm", "keep", "-o", "json"]));
    assert_eq!(cm["data"]["x"], "1");
    for f in ["ca.key", "server.key", "admin.token", "admin.kubeconfig"] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(s.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{f}");
    }
}

#[test]
fn server_side_apply_conflicts_and_force() {
    let s = Server::start();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata:\n  k: one\n";
    s.kubectl_stdin(
        "1.33",
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        Some(cm),
    );
    let err = s.kubectl_fails(
        "1.33",
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&cm.replace("one", "two")),
    );
    assert!(err.contains("conflict") && err.contains("alice"), "{err}");
    s.kubectl_stdin(
        "1.33",
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&cm.replace("one", "two")),
    );
    let c = json(&s.kubectl(
        "1.33",
        &["get", "cm", "owned", "-o", "json", "--show-managed-fields"],
    ));
    assert_eq!(c["data"]["k"], "two");
    let managers: Vec<&str> = c["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"bob"), "{managers:?}");
    // A second identical apply changes nothing (same resourceVersion).
    let rv = c["metadata"]["resourceVersion"].clone();
    s.kubectl_stdin(
        "1.33",
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&cm.replace("one", "two")),
    );
    let c = json(&s.kubectl("1.33", &["get", "cm", "owned", "-o", "json"]));
    assert_eq!(c["metadata"]["resourceVersion"], rv);
}

/// Cluster IPs and node ports: allocated on create and on a type change, from the configured
/// node port range (`--service-node-port-range`, here 20 ports: the lower 16 are kept for
/// ports users pick), collision-free, refused with kube-apiserver's words, released on a
/// type change and on delete.
#[test]
fn services_get_cluster_ips_and_node_ports() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &[
            "--service-node-port-range".as_ref(),
            "30100-30119".as_ref(),
            "--lb-pool".as_ref(),
            "192.0.2.0/30".as_ref(),
        ],
    );
    let k = json(&s.kubectl("1.33", &["get", "svc", "kubernetes", "-o", "json"]));
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
    s.kubectl(
        "1.33",
        &["create", "service", "clusterip", "a", "--tcp=80:8080"],
    );
    s.kubectl(
        "1.33",
        &["create", "service", "nodeport", "b", "--tcp=80:8080"],
    );
    s.kubectl(
        "1.30",
        &["create", "service", "clusterip", "h", "--clusterip=None"],
    );
    let a = json(&s.kubectl("1.33", &["get", "svc", "a", "-o", "json"]));
    let b = json(&s.kubectl("1.33", &["get", "svc", "b", "-o", "json"]));
    let h = json(&s.kubectl("1.33", &["get", "svc", "h", "-o", "json"]));
    let (ia, ib) = (
        a["spec"]["clusterIP"].as_str().unwrap(),
        b["spec"]["clusterIP"].as_str().unwrap(),
    );
    assert!(
        ia.starts_with("10.") && ia != ib && ia != "10.96.0.1",
        "{ia} {ib}"
    );
    assert_eq!(a["spec"]["clusterIPs"][0], ia);
    let np = b["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(
        np, 30116,
        "the first dynamic pick is the upper band's first port"
    );
    assert_eq!(h["spec"]["clusterIP"], "None");
    // A taken address is refused; an edit that omits the address keeps it.
    let err = s.kubectl_fails(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: c\nspec:\n  clusterIP: {ia}\n  ports:\n  - port: 1\n")),
    );
    assert!(err.contains("already allocated"), "{err}");
    s.kubectl_stdin(
        "1.33",
        &["replace", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 81\n",
        ),
    );
    let a2 = json(&s.kubectl("1.33", &["get", "svc", "a", "-o", "json"]));
    assert_eq!(a2["spec"]["clusterIP"], ia);
    assert_eq!(a2["spec"]["ports"][0]["port"], 81);

    // Node ports: out of range, taken, then released by a type change and by a delete.
    let np_svc = |name: &str, port: i64| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {port}\n")
    };
    let err = s.kubectl_fails("1.33", &["apply", "-f", "-"], Some(&np_svc("c", 30000)));
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 30000: provided port is not in the valid range. The range of valid ports is 30100-30119"),
        "{err}"
    );
    let err = s.kubectl_fails("1.33", &["apply", "-f", "-"], Some(&np_svc("c", np)));
    assert!(
        err.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated"
        )),
        "{err}"
    );
    s.kubectl(
        "1.33",
        &[
            "patch",
            "svc",
            "b",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ],
    );
    let b2 = json(&s.kubectl("1.33", &["get", "svc", "b", "-o", "json"]));
    assert!(b2["spec"]["ports"][0].get("nodePort").is_none(), "{b2}");
    assert_eq!(b2["spec"]["clusterIP"], ib);
    s.kubectl_stdin("1.33", &["apply", "-f", "-"], Some(&np_svc("c", np)));
    // A type change to NodePort allocates (c holds 30116 now, so the next free one).
    s.kubectl(
        "1.33",
        &["patch", "svc", "a", "-p", r#"{"spec":{"type":"NodePort"}}"#],
    );
    let a3 = json(&s.kubectl("1.33", &["get", "svc", "a", "-o", "json"]));
    assert_eq!(a3["spec"]["ports"][0]["nodePort"], 30117, "{a3}");
    // A delete releases.
    s.kubectl("1.33", &["delete", "svc", "c"]);
    s.kubectl_stdin("1.33", &["apply", "-f", "-"], Some(&np_svc("d", np)));

    // LoadBalancer Services get node ports and an address of `--lb-pool` (two usable
    // here); a third waits until a type change frees one.
    let ingress = |name: &str| {
        let o = json(&s.kubectl("1.33", &["get", "svc", name, "-o", "json"]));
        o["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    };
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{what}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    for n in ["lb1", "lb2"] {
        s.kubectl(
            "1.33",
            &["create", "service", "loadbalancer", n, "--tcp=80:8080"],
        );
        until(&format!("{n} gets an address"), &|| ingress(n).is_some());
    }
    let (l1, l2) = (ingress("lb1").unwrap(), ingress("lb2").unwrap());
    let mut got = vec![l1.clone(), l2];
    got.sort();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2"]);
    let lb1 = json(&s.kubectl("1.33", &["get", "svc", "lb1", "-o", "json"]));
    assert!(
        lb1["spec"]["ports"][0]["nodePort"].as_i64().is_some(),
        "{lb1}"
    );
    s.kubectl(
        "1.33",
        &["create", "service", "loadbalancer", "lb3", "--tcp=80:8080"],
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(ingress("lb3"), None, "the pool is full");
    s.kubectl(
        "1.33",
        &[
            "patch",
            "svc",
            "lb1",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ],
    );
    until("lb1 loses its address", &|| ingress("lb1").is_none());
    until("lb3 gets lb1's address", &|| {
        ingress("lb3") == Some(l1.clone())
    });

    // externalTrafficPolicy Local: a health check node port of the range, none of the
    // node ports; kept by an edit, dropped with the policy; refused on other types.
    let local = r#"{"spec":{"externalTrafficPolicy":"Local"}}"#;
    s.kubectl("1.33", &["patch", "svc", "lb2", "-p", local]);
    let l = json(&s.kubectl("1.33", &["get", "svc", "lb2", "-o", "json"]));
    let hc = l["spec"]["healthCheckNodePort"]
        .as_i64()
        .expect("allocated");
    assert!((30100..=30119).contains(&hc), "{l}");
    assert_ne!(Some(hc), l["spec"]["ports"][0]["nodePort"].as_i64());
    s.kubectl(
        "1.33",
        &[
            "patch",
            "svc",
            "lb2",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
    );
    let l = json(&s.kubectl("1.33", &["get", "svc", "lb2", "-o", "json"]));
    assert_eq!(l["spec"]["healthCheckNodePort"], hc);
    let err = s.kubectl_fails(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: e\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: {hc}\n  ports:\n  - port: 80\n")),
    );
    assert!(
        err.contains(&format!(
            "spec.healthCheckNodePort: Invalid value: {hc}: provided port is already allocated"
        )),
        "{err}"
    );
    let err = s.kubectl_fails(
        "1.33",
        &[
            "patch",
            "svc",
            "d",
            "-p",
            r#"{"spec":{"healthCheckNodePort":30101}}"#,
        ],
        None,
    );
    assert!(err.contains("may only be set when"), "{err}");
    s.kubectl(
        "1.33",
        &[
            "patch",
            "svc",
            "lb2",
            "-p",
            r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
        ],
    );
    let l = json(&s.kubectl("1.33", &["get", "svc", "lb2", "-o", "json"]));
    assert!(l["spec"].get("healthCheckNodePort").is_none(), "{l}");
}

#[test]
fn kubectl_every_minor_smoke() {
    let s = Server::start();
    for minor in 27..=33 {
        let ver = format!("1.{minor}");
        let v = ver.as_str();
        let ns = format!("smoke-{minor}");
        s.kubectl(v, &["create", "namespace", &ns]);
        s.kubectl(
            v,
            &["create", "configmap", "c", "-n", &ns, "--from-literal=k=v"],
        );
        s.kubectl_stdin(v, &["apply", "-n", &ns, "-f", "-"], Some(POD));
        let pods = s.kubectl(v, &["get", "pods", "-n", &ns]);
        assert!(
            pods.contains("web") && pods.contains("Pending"),
            "{v}: {pods}"
        );
        let who = s.kubectl(v, &["auth", "whoami"]);
        assert!(who.contains("admin"), "{v}: {who}");
        s.kubectl(v, &["delete", "namespace", &ns, "--timeout=30s"]);
    }
}
