//! Multi-node on one machine (issue 10, item 9): one `h8s server --disable-agent` and two
//! `h8s agent`s, each in its own network namespace with its own data dir, joined through the
//! join token (`cluster_support`). A Deployment spreads over both nodes with pods Running
//! with IPs; `kubectl logs` and `exec` reach pods on every joined node (the agents' serving
//! certificates come from `kubernetes.io/kubelet-serving` CSRs); powering one node off (its
//! agent, supervisors and QEMU killed) makes its pods replaced on the other once the node
//! controller has seen it NotReady and the pods' tolerations ran out (shortened here). Also:
//! the kubelet-serving CSRs approved, and host namespaces / hostPath refused (403); two
//! tenants on the same subnets, isolated, with LoadBalancer Services reached from outside.

mod api_support;
mod cluster_support;

use std::time::Duration;

use cluster_support::{cluster, Cluster, Opts};
use serde_json::Value;

fn c() -> &'static Cluster {
    cluster(&Opts {
        nodes: 2,
        server_args: [
            "--node-monitor-grace-period=8s",
            "--node-monitor-period=1s",
            "--default-not-ready-toleration-seconds=4",
            "--default-unreachable-toleration-seconds=4",
        ]
        .map(String::from)
        .into_iter()
        // LoadBalancer addresses on the test bridge, where the outside client is.
        .chain([format!(
            "--lb-pool={}.240/28",
            cluster_support::subnet_prefix()
        )])
        .collect(),
        agent_args: Vec::new(),
    })
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: {name}}}}}
      containers:
      - name: web
        image: busybox
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "echo hello-from-$(hostname); mkdir -p /www; echo ok > /www/index.html; httpd -f -p 8080 -h /www"]
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#
    )
}

fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"].as_str().unwrap_or("").to_string()
}

#[test]
fn deployment_spreads_over_both_nodes_and_streams_reach_them() {
    let c = c();
    let _up = c.all_nodes_up();
    let ns = c.namespace("spread");
    c.apply(&ns, &deployment("web", 2));
    let pods = c.wait_running(&ns, "app=web", 2, Duration::from_secs(300));
    let mut nodes: Vec<String> = pods.iter().map(node_of).collect();
    nodes.sort();
    let mut want: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    want.sort();
    assert_eq!(nodes, want, "one pod per node");
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let node = c.nodes.iter().find(|n| n.name == node_of(p)).unwrap();
        assert_eq!(p["status"]["hostIP"], node.ip.as_str(), "{name}");
        // The VM is on that node's runtime, not the other's.
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert!(
            c.vms(node)
                .iter()
                .any(|r| r["config"]["labels"]["io.kubernetes.pod.uid"] == uid),
            "{name}: no VM on {}",
            node.name
        );
        // Ready means running (no readiness probe): the command's first steps may follow.
        cluster_support::wait(
            Duration::from_secs(30),
            "the container's first line",
            || {
                let (_, logs, _) = c.kubectl_out(&["-n", &ns, "logs", name], None);
                logs.contains("hello-from-").then_some(())
            },
        );
        let out = cluster_support::wait(Duration::from_secs(30), "index.html", || {
            let (ok, out, _) = c.kubectl_out(
                &["-n", &ns, "exec", name, "--", "cat", "/www/index.html"],
                None,
            );
            ok.then_some(out)
        });
        assert_eq!(out.trim(), "ok", "exec in {name}");
    }
    // Pod to pod across the nodes, over the namespace's Network (VXLAN between them).
    let ip1 = pods[1]["status"]["podIP"].as_str().unwrap();
    let p0 = pods[0]["metadata"]["name"].as_str().unwrap();
    let got = c.kubectl(&[
        "-n",
        &ns,
        "exec",
        p0,
        "--",
        // Not `wget -T`: busybox 1.35's crashes (services.rs).
        "timeout",
        "10",
        "wget",
        "-qO-",
        &format!("http://{ip1}:8080/"),
    ]);
    assert_eq!(got.trim(), "ok", "pod to pod across nodes");
    c.cleanup(&ns);
}

#[test]
fn killed_node_has_its_pods_replaced_on_the_other() {
    let c = c();
    let switch = c.power_switch();
    let ns = c.namespace("kill");
    // No spread constraint: a dead node still counts as a topology domain, which would
    // keep the replacement Pending.
    let yaml = deployment("kw", 2).replace(
        "      topologySpreadConstraints:\n      - maxSkew: 1\n        topologyKey: kubernetes.io/hostname\n        whenUnsatisfiable: DoNotSchedule\n        labelSelector: {matchLabels: {app: kw}}\n",
        "",
    );
    assert!(!yaml.contains("topologySpread"));
    c.apply(&ns, &yaml);
    let pods = c.wait_running(&ns, "app=kw", 2, Duration::from_secs(300));
    let victim = c
        .nodes
        .iter()
        .find(|n| n.name == node_of(&pods[0]))
        .unwrap();
    let survivor = c.nodes.iter().find(|n| n.name != victim.name).unwrap();
    let doomed: Vec<String> = pods
        .iter()
        .filter(|p| node_of(p) == victim.name)
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    eprintln!(
        "powering off {} ({} of the pods)",
        victim.name,
        doomed.len()
    );
    let t0 = std::time::Instant::now();
    c.kill_node(victim, &switch);
    // The node controller sees the lease expire: the Node goes NotReady (Unknown)...
    cluster_support::wait(Duration::from_secs(60), "the node NotReady", || {
        let n = c.json(&["get", "node", &victim.name]).ok()?;
        (!cluster_support::condition(&n, "Ready")).then_some(())
    });
    // ...its pods are evicted once their tolerations run out and replaced on the survivor.
    let now = c.wait_running(&ns, "app=kw", 2, Duration::from_secs(300));
    eprintln!("replaced after {:?}", t0.elapsed());
    for p in &now {
        assert_eq!(node_of(p), survivor.name, "{}", p["metadata"]["name"]);
        assert!(!doomed.contains(&p["metadata"]["uid"].as_str().unwrap().to_string()));
    }
    // Power the node back on: the agent comes back with its saved credential, finishes the
    // evicted pods (their VMs died with the node) and is Ready again.
    c.start_agent(victim);
    c.wait_node_ready(victim, Duration::from_secs(60));
    cluster_support::wait(Duration::from_secs(120), "the evicted pods gone", || {
        let left = c
            .pods(&ns, Some("app=kw"))
            .iter()
            .filter(|p| doomed.contains(&p["metadata"]["uid"].as_str().unwrap_or("").to_string()))
            .count();
        (left == 0).then_some(())
    });
    c.kubectl(&["-n", &ns, "delete", "deployment", "kw"]);
    c.cleanup(&ns);
}

#[test]
fn joined_nodes_serving_csrs_approved_and_host_fields_refused() {
    let c = c();
    let _up = c.all_nodes_up();
    // Each joined agent asked the kubelet-serving signer for its own certificate; the server
    // approved and signed it.
    let csrs = c.json(&["get", "csr"]).unwrap();
    for n in &c.nodes {
        let mine = csrs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| {
                x["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    && x["spec"]["username"] == format!("system:node:{}", n.name).as_str()
            })
            .unwrap_or_else(|| panic!("no kubelet-serving CSR of {}", n.name));
        assert!(cluster_support::condition(mine, "Approved"), "{mine}");
        assert!(mine["status"]["certificate"].is_string());
        assert!(n.data.join("node/serving.crt").exists());
    }
    // Host namespaces and host paths: 403 for pods and pod templates, whoever asks.
    let ns = c.namespace("host");
    let pod = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: h\nspec:\n{extra}  containers:\n  - name: c\n    image: busybox\n"
        )
    };
    for (extra, field) in [
        ("  hostNetwork: true\n", "spec.hostNetwork"),
        ("  hostPID: true\n", "spec.hostPID"),
        ("  hostIPC: true\n", "spec.hostIPC"),
        (
            "  volumes:\n  - name: v\n    hostPath: {path: /etc}\n",
            "spec.volumes[0].hostPath",
        ),
    ] {
        let (ok, _, err) = c.kubectl_out(&["-n", &ns, "create", "-f", "-"], Some(&pod(extra)));
        assert!(!ok, "{field} was accepted");
        assert!(
            err.contains("Forbidden") && err.contains(field) && err.contains("own VM"),
            "{field}: {err}"
        );
    }
    let (ok, out, _) = c.kubectl_out(
        &[
            "-n",
            &ns,
            "create",
            "deployment",
            "hn",
            "--image=busybox",
            "--dry-run=client",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok);
    let mut d: Value = serde_json::from_str(&out).unwrap();
    d["spec"]["template"]["spec"]["hostNetwork"] = Value::Bool(true);
    let (ok, _, err) = c.kubectl_out(&["-n", &ns, "create", "-f", "-"], Some(&d.to_string()));
    assert!(
        !ok && err.contains("spec.template.spec.hostNetwork"),
        "{err}"
    );
    // `privileged` is allowed: privileged inside the pod's own VM.
    let (ok, _, err) = c.kubectl_out(
        &["-n", &ns, "create", "--dry-run=server", "-f", "-"],
        Some(&pod("").replace(
            "    image: busybox\n",
            "    image: busybox\n    securityContext: {privileged: true}\n",
        )),
    );
    assert!(ok, "privileged refused: {err}");
    c.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// Issue 13's two tenants across two nodes: tenant A's Deployment (one pod per node) and
/// tenant B's (one pod) on their own Networks (both tenants' default Networks, same
/// subnets), each behind a Service named `web`. A's pods reach each other over the VXLAN
/// fabric and A's Service (by name) answers from both nodes' endpoints; B's pod reaches its
/// own Service (the positive control); neither tenant reaches the other's pod IPs (an
/// answer would carry the other tenant's mark) or resolves the other's Service name.
/// From outside (a client namespace on the test bridge): A's Service is a LoadBalancer,
/// reached at its pool address and its node port on both nodes, from both endpoints; B's is
/// a LoadBalancer with `externalTrafficPolicy: Local`, answered only on its pod's node
/// (health check port 200 there, 503 elsewhere); no pod address answers from outside.
#[test]
fn two_tenants_across_nodes_are_isolated_and_reach_their_services() {
    let c = c();
    let _up = c.all_nodes_up();
    let pid = std::process::id() % 100_000;
    let tenant_ns = |t: &str| {
        let ns = format!("mt{t}-{pid}");
        c.apply(
            "default",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{tenancy.h8s.io/tenant: mt{t}{pid}}}}}\n"
            ),
        );
        ns
    };
    let (a, b) = (tenant_ns("a"), tenant_ns("b"));
    let app = |tenant: &str, replicas: u32, kind: &str| {
        deployment("web", replicas).replace(
            "echo ok > /www/index.html",
            &format!("echo {tenant}-$(hostname) > /www/index.html"),
        ) + &format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  type: {kind}\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    };
    c.apply(&a, &app("tenant-a", 2, "LoadBalancer"));
    c.apply(
        &b,
        &app(
            "tenant-b",
            1,
            "LoadBalancer\n  externalTrafficPolicy: Local",
        ),
    );
    let pa = c.wait_running(&a, "app=web", 2, Duration::from_secs(300));
    let pb = c.wait_running(&b, "app=web", 1, Duration::from_secs(300));
    assert_ne!(node_of(&pa[0]), node_of(&pa[1]), "tenant A on both nodes");
    let name = |p: &Value| p["metadata"]["name"].as_str().unwrap().to_string();
    let ip = |p: &Value| p["status"]["podIP"].as_str().unwrap().to_string();
    // `timeout 5 wget -qO- URL` in pod `pod` of `ns`: the answer, or None.
    let get = |ns: &str, pod: &str, url: &str| -> Option<String> {
        let (ok, out, _) = c.kubectl_out(
            &[
                "-n", ns, "exec", pod, "--", "timeout", "5", "wget", "-qO-", url,
            ],
            None,
        );
        ok.then(|| out.trim().to_string())
    };
    // A: pod to pod across the nodes.
    let (a0, a1) = (name(&pa[0]), name(&pa[1]));
    let url = |p: &Value| format!("http://{}:8080/", ip(p));
    assert_eq!(get(&a, &a0, &url(&pa[1])), Some(format!("tenant-a-{a1}")));
    assert_eq!(get(&a, &a1, &url(&pa[0])), Some(format!("tenant-a-{a0}")));
    // A's Service by name from either node: both endpoints answer (round robin).
    for from in [&a0, &a1] {
        let mut seen = std::collections::BTreeSet::new();
        cluster_support::wait(Duration::from_secs(60), "A's Service spreads", || {
            if let Some(got) = get(&a, from, "http://web/") {
                assert!(got.starts_with("tenant-a-"), "{from} → web: {got}");
                seen.insert(got);
            }
            (seen.len() == 2).then_some(())
        });
    }
    // B's own Service (the positive control of every refusal below).
    let b0 = name(&pb[0]);
    cluster_support::wait(Duration::from_secs(60), "B's Service", || {
        get(&b, &b0, "http://web/")
            .filter(|g| *g == format!("tenant-b-{b0}"))
            .map(|_| ())
    });
    // Neither reaches the other's pods: an address of the other tenant's pod either
    // does not answer or is a pod of one's own Network (the subnets overlap).
    for from in [&a0, &a1] {
        let got = get(&a, from, &url(&pb[0]));
        assert!(
            got.as_deref().is_none_or(|g| g.starts_with("tenant-a-")),
            "{from} reached tenant B: {got:?}"
        );
    }
    for p in &pa {
        let got = get(&b, &b0, &url(p));
        assert!(
            got.as_deref().is_none_or(|g| g.starts_with("tenant-b-")),
            "tenant B reached tenant A: {got:?}"
        );
    }
    // Nor resolves the other's Service.
    for (ns, pod, other) in [(&a, &a0, &b), (&b, &b0, &a)] {
        let fqdn = format!("web.{other}.svc.cluster.local");
        let (_, out, err) = c.kubectl_out(&["-n", ns, "exec", pod, "--", "nslookup", &fqdn], None);
        assert!(
            out.contains("NXDOMAIN")
                || err.contains("NXDOMAIN")
                || !out.contains("Address: 10.96."),
            "{ns} resolves {fqdn}: {out}{err}"
        );
    }
    // From outside (a client namespace on the test bridge, in no tenant): A's LoadBalancer
    // address and node port on either node reach A's endpoints on both nodes (one through a
    // hop to the other node), never B's.
    let client = cluster_support::outside_client(c);
    let ip_of_node = |p: &Value| p["status"]["hostIP"].as_str().unwrap().to_string();
    let curl = |url: &str| -> Option<String> {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &client, "curl", "-s", "-m", "3", url])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (lb, np_a) = cluster_support::wait(Duration::from_secs(60), "A's pool address", || {
        let s = c.json(&["-n", &a, "get", "service", "web"]).ok()?;
        let ip = s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()?;
        Some((ip.to_string(), s["spec"]["ports"][0]["nodePort"].as_u64()?))
    });
    let spread_from = |url: &str| {
        let mut seen = std::collections::BTreeSet::new();
        cluster_support::wait(Duration::from_secs(120), url, || {
            if let Some(got) = curl(url) {
                assert!(got.starts_with("tenant-a-"), "{url}: {got}");
                seen.insert(got);
            }
            (seen.len() == 2).then_some(())
        });
    };
    for n in &c.nodes {
        spread_from(&format!("http://{}:{np_a}/", n.ip));
    }
    spread_from(&format!("http://{lb}/"));
    // B (externalTrafficPolicy Local): its address, node port and health check port answer
    // only on the node of its one pod.
    let (lb_b, np_b, hc_b) =
        cluster_support::wait(Duration::from_secs(60), "B's pool address", || {
            let s = c.json(&["-n", &b, "get", "service", "web"]).ok()?;
            let ip = s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()?;
            Some((
                ip.to_string(),
                s["spec"]["ports"][0]["nodePort"].as_u64()?,
                s["spec"]["healthCheckNodePort"].as_u64()?,
            ))
        });
    let want_b = format!("tenant-b-{b0}");
    for url in [
        format!("http://{lb_b}/"),
        format!("http://{}:{np_b}/", ip_of_node(&pb[0])),
    ] {
        cluster_support::wait(Duration::from_secs(60), &url, || {
            curl(&url).map(|g| assert_eq!(g, want_b, "{url}"))
        });
    }
    for n in &c.nodes {
        let here = n.ip == ip_of_node(&pb[0]);
        let url = format!("http://{}:{np_b}/", n.ip);
        assert_eq!(curl(&url).is_some(), here, "{url}");
        let url = format!("http://{}:{hc_b}/", n.ip);
        let want = if here { "200" } else { "503" };
        cluster_support::wait(Duration::from_secs(30), &url, || {
            let o = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &client,
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-m",
                    "3",
                    &url,
                ])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&o.stdout) == want).then_some(())
        });
    }
    // Pod addresses are not reachable from outside, even routed through a node.
    std::process::Command::new("ip")
        .args([
            "-n",
            &client,
            "route",
            "replace",
            "192.168.0.0/16",
            "via",
            &c.nodes[0].ip,
        ])
        .status()
        .unwrap();
    for p in pa.iter().chain(&pb) {
        assert_eq!(curl(&url(p)), None, "{} reached from outside", url(p));
    }
    c.cleanup(&a);
    c.cleanup(&b);
    // The pool addresses are withdrawn with the Services: no node holds them any more.
    cluster_support::wait(
        Duration::from_secs(120),
        "the pool address withdrawn",
        || {
            c.nodes
                .iter()
                .all(|n| {
                    let o = std::process::Command::new("ip")
                        .args(["-n", &n.netns, "-o", "addr"])
                        .output()
                        .unwrap();
                    let addrs = String::from_utf8_lossy(&o.stdout);
                    !addrs.contains(&format!(" {lb}/32")) && !addrs.contains(&format!(" {lb_b}/32"))
                })
                .then_some(())
        },
    );
}
