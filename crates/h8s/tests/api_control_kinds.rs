//! The control loop's shared kinds and the default admission plugins, with real kubectl
//! 1.33 (and the Python client for an eviction) against the real `h8s server`: CRUD,
//! `kubectl get` columns, `kubectl explain`, evictions a PodDisruptionBudget blocks
//! (429) and allows, a pod's defaults from the admission plugins.

mod api_support;

use api_support::{eventually, json, Server};

const V: &str = "1.33";

fn header(table: &str) -> Vec<String> {
    // kubectl pads columns with two or more spaces; single spaces are inside names.
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

const RUNTIME_CLASS: &str = "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: vm
handler: h8s
overhead:
  podFixed:
    memory: 64Mi
    cpu: 100m
scheduling:
  nodeSelector:
    h8s.io/vm: \"true\"
";

const PRIORITY_CLASS: &str = "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
description: for the test
";

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: NAME
  labels:
    app: web
spec:
  priorityClassName: high
  runtimeClassName: vm
  containers:
  - name: c
    image: busybox
";

const PDB: &str = "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app: web
";

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 80
endpoints:
- addresses: [\"10.0.0.1\"]
- addresses: [\"10.0.0.2\"]
- addresses: [\"10.0.0.3\"]
- addresses: [\"10.0.0.4\"]
";

/// A CSR with a PEM `CERTIFICATE REQUEST` block for a signer nothing signs for.
fn csr() -> String {
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIHdMIGFAgEAMCMxITAfBgNVBAMMGHN5c3RlbTpub2RlOmV4YW1wbGUtbm9kZTBZ\n-----END CERTIFICATE REQUEST-----\n";
    use base64_like::encode;
    format!(
        "apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: c1
spec:
  request: {}
  signerName: example.com/nobody
  expirationSeconds: 3600
  usages: [\"client auth\"]
",
        encode(pem.as_bytes())
    )
}

/// Standard base64 (the test crate has no base64 dependency).
mod base64_like {
    pub fn encode(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn eviction_json(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"default"}}}}"#
    )
}

#[test]
fn control_kinds_with_kubectl() {
    let s = Server::start();
    let k = |args: &[&str]| s.kubectl(V, args);
    let ki = |args: &[&str], input: &str| s.kubectl_stdin(V, args, Some(input));

    // ---- discovery and explain ----
    let ar = k(&["api-resources"]);
    for r in [
        "endpointslices",
        "runtimeclasses",
        "priorityclasses",
        "poddisruptionbudgets",
        "certificatesigningrequests",
        "tokenreviews",
    ] {
        assert!(ar.contains(r), "api-resources lacks {r}:\n{ar}");
    }
    assert!(ar.lines().any(|l| l.contains("events.k8s.io/v1")));
    for (what, want) in [
        ("priorityclass.value", "FIELD: value <integer>"),
        ("pdb.spec.minAvailable", "FIELD: minAvailable <IntOrString>"),
        ("endpointslice.addressType", "FIELD: addressType <string>"),
        ("csr.spec.signerName", "FIELD: signerName <string>"),
        ("runtimeclass.overhead", "FIELD: overhead <Overhead>"),
    ] {
        let out = k(&["explain", what]);
        assert!(out.contains(want), "kubectl explain {what}:\n{out}");
    }

    // ---- PriorityClass: system classes, columns ----
    let pc = k(&["get", "priorityclasses"]);
    assert_eq!(
        header(&pc),
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        "{pc}"
    );
    let r = row(&pc, "system-node-critical");
    assert!(
        r.contains("2000001000") && r.contains("false") && r.contains("PreemptLowerPriority"),
        "{r}"
    );
    assert!(row(&pc, "system-cluster-critical").contains("2000000000"));
    let err = s.kubectl_fails(V, &["delete", "pc", "system-cluster-critical"], None);
    assert!(
        err.contains("this is a system priority class and cannot be deleted"),
        "{err}"
    );
    ki(&["apply", "-f", "-"], PRIORITY_CLASS);
    assert!(row(&k(&["get", "pc"]), "high").contains("1000"));

    // ---- RuntimeClass ----
    ki(&["apply", "-f", "-"], RUNTIME_CLASS);
    let rc = k(&["get", "runtimeclass"]);
    assert_eq!(header(&rc), ["NAME", "HANDLER", "AGE"], "{rc}");
    assert!(row(&rc, "vm").contains("h8s"));

    // ---- a pod's defaults from the admission plugins ----
    for n in ["web-1", "web-2", "web-3"] {
        ki(&["apply", "-f", "-"], &POD.replace("NAME", n));
    }
    let p = json(&k(&["get", "pod", "web-1", "-o", "json"]));
    let spec = &p["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["priority"], 1000);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(spec["overhead"]["memory"], "64Mi");
    assert_eq!(spec["nodeSelector"]["h8s.io/vm"], "true");
    let tols = spec["tolerations"].as_array().unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tols.iter()
                .any(|t| t["key"] == key && t["tolerationSeconds"] == 300),
            "{tols:?}"
        );
    }
    let vol = &spec["volumes"][0];
    assert!(vol["name"]
        .as_str()
        .unwrap()
        .starts_with("kube-api-access-"));
    assert_eq!(
        vol["projected"]["sources"][1]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let err = s.kubectl_fails(
        V,
        &["apply", "-f", "-"],
        Some(&POD.replace("NAME", "bad").replace("high", "nope")),
    );
    assert!(
        err.contains("Forbidden") && err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );

    // ---- PodDisruptionBudget and evictions ----
    // No node agent runs here: the pods are made Running and Ready by hand.
    for n in ["web-1", "web-2", "web-3"] {
        k(&[
            "patch",
            "pod",
            n,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }
    ki(&["apply", "-f", "-"], PDB);
    // The disruption controller computes the budget when it runs; else write what it
    // would (3 healthy, 2 needed: 1 disruption allowed).
    let processed = eventually(5, || {
        let b = json(&k(&["get", "pdb", "web", "-o", "json"]));
        b["status"]["observedGeneration"] == 1 && b["status"]["disruptionsAllowed"] == 1
    });
    if !processed {
        k(&[
            "patch",
            "pdb",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"observedGeneration":1,"disruptionsAllowed":1,"currentHealthy":3,"desiredHealthy":2,"expectedPods":3}}"#,
        ]);
    }
    let pdb = k(&["get", "pdb"]);
    assert_eq!(
        header(&pdb),
        [
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE"
        ],
        "{pdb}"
    );
    let r = row(&pdb, "web");
    assert!(
        r.contains(" 2 ") && r.contains("N/A") && r.contains(" 1 "),
        "{r}"
    );

    let evict = |name: &str| {
        s.kubectl_out(
            V,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/default/pods/{name}/eviction"),
                "-f",
                "-",
            ],
            Some(&eviction_json(name)),
        )
    };
    let ok = evict("web-1");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(eventually(10, || s
        .kubectl_out(V, &["get", "pod", "web-1"], None)
        .status
        .code()
        != Some(0)));
    let pdb = json(&k(&["get", "pdb", "web", "-o", "json"]));
    if !processed {
        assert!(pdb["status"]["disruptedPods"]["web-1"].is_string(), "{pdb}");
    }
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb}");
    let blocked = evict("web-2");
    assert!(!blocked.status.success());
    let err = String::from_utf8_lossy(&blocked.stderr);
    assert!(
        err.contains("TooManyRequests")
            && err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    k(&["get", "pod", "web-2"]);

    // The Python client meets the same 429.
    let py = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
body = client.V1Eviction(metadata=client.V1ObjectMeta(name="web-3", namespace="default"))
try:
    v1.create_namespaced_pod_eviction("web-3", "default", body)
    print("evicted")
except client.exceptions.ApiException as e:
    print(e.status, e.reason)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", py])
        .arg(&s.kubeconfig)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim() == "429 Too Many Requests",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ---- EndpointSlice ----
    ki(&["apply", "-f", "-"], SLICE);
    let es = k(&["get", "endpointslices"]);
    assert_eq!(
        header(&es),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        "{es}"
    );
    let r = row(&es, "web-abc");
    assert!(
        r.contains("IPv4")
            && r.contains("80")
            && r.contains("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
        "{r}"
    );

    // ---- CertificateSigningRequest ----
    ki(&["apply", "-f", "-"], &csr());
    let c = k(&["get", "csr"]);
    assert_eq!(
        header(&c),
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ],
        "{c}"
    );
    let r = row(&c, "c1");
    assert!(
        r.contains("example.com/nobody")
            && r.contains("admin")
            && r.contains("60m")
            && r.contains("Pending"),
        "{r}"
    );
    k(&["certificate", "approve", "c1"]);
    assert!(row(&k(&["get", "csr"]), "c1").contains("Approved"));

    // ---- events.k8s.io/v1 ----
    ki(
        &["apply", "-f", "-"],
        "apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: e1
eventTime: \"2026-01-01T00:00:00.000000Z\"
type: Warning
reason: Tested
action: Test
note: from events.k8s.io
reportingController: h8s.io/test
reportingInstance: t1
regarding:
  kind: Pod
  name: web-2
  namespace: default
",
    );
    let ev = k(&["get", "events"]);
    assert!(
        ev.contains("from events.k8s.io") && ev.contains("pod/web-2"),
        "{ev}"
    );
    let ev2 = k(&["get", "events.v1.events.k8s.io"]);
    assert!(
        ev2.contains("from events.k8s.io") && ev2.contains("Warning"),
        "{ev2}"
    );
    let e = json(&k(&["get", "events.v1.events.k8s.io", "e1", "-o", "json"]));
    assert_eq!(e["note"], "from events.k8s.io");

    // ---- deletes ----
    k(&["delete", "csr", "c1"]);
    k(&["delete", "endpointslice", "web-abc"]);
    k(&["delete", "pdb", "web"]);
    k(&["delete", "runtimeclass", "vm"]);
    k(&["delete", "pc", "high"]);
}
