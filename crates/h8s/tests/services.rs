//! Services inside tenant Networks, end to end: `h8s server` with its in-process node agent
//! (`--pod-network api`: every namespace's pods on its tenant's Network), pod VMs under QEMU
//! (TCG here) from the busybox image of `scripts/setup`, at most four at once.
//!
//! Tenant A: a Deployment of two busybox `httpd` pods, each serving its own name, behind a
//! ClusterIP Service with a named targetPort, and a client pod. Tenant B (its own Network, same
//! node): one `httpd` pod behind a Service of the same name. The client reaches both of A's
//! endpoints through `http://web` and the full name (in-pod proxy + DNS), sees the Deployment
//! scaled down, and can neither resolve B's Service (NXDOMAIN) nor reach B's ClusterIP; B's
//! own pod reaches its Service (the positive control).

use std::collections::BTreeSet;
use std::process::Command;
mod node_support;

use std::sync::OnceLock;
use std::time::Duration;

use node_support::{ok, wait, Node as Cluster, Opts};

/// The node of this test binary; its tests take turns (the VM-test lock) and use their own
/// tenants.
fn start() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        node_support::start(Opts {
            tag: "svc",
            args: [
                "--restart-backoff=1s",
                "--restart-backoff-max=4s",
                "--max-parallel-starts=2",
                "--pod-network=api",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![(
                "H8S_LOG".into(),
                "info,h8s_agent::services=debug,h8s_agent::apirelay=debug,h8s_apiserver::server=debug"
                    .into(),
            )],
            ..Opts::default()
        })
    })
}

fn running_pods(c: &Cluster, ns: &str, selector: &str) -> Vec<(String, String)> {
    let l = c
        .json(&["-n", ns, "get", "pods", "-l", selector])
        .unwrap_or_default();
    l["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_string(),
                p["status"]["podIP"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// `n` fetches of `url` from the client pod; the bodies seen.
fn fetch_many(c: &Cluster, ns: &str, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (good, out) = c.exec(ns, "client", &["timeout", "10", "wget", "-qO-", url]);
            assert!(good, "wget {url}: {out}");
            out.trim().to_string()
        })
        .collect()
}

// Debian's busybox-static 1.35 `wget -T` crashes (SIGSEGV, also on the host): `timeout` bounds
// the fetches instead.
const WEB: &str =
    "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn pods_reach_their_networks_services_only() {
    let _lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let c = start();
    let id = std::process::id() % 100000;
    let (a, b) = (format!("sva-{id}"), format!("svb-{id}"));
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {a}, labels: {{tenancy.h8s.io/tenant: sta{id}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}, labels: {{tenancy.h8s.io/tenant: stb{id}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {a}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: busybox
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "{WEB}"]
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {a}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {a}}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: bweb, namespace: {b}, labels: {{app: web}}}}
spec:
  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{WEB}"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {b}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    );
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(yaml.as_bytes())));
    let webs = wait(Duration::from_secs(300), "two Running web pods", || {
        let p = running_pods(c, &a, "app=web");
        (p.len() == 2).then_some(p)
    });
    wait(Duration::from_secs(300), "client and bweb Running", || {
        (running_pods(c, &a, "!app").len() == 1 && running_pods(c, &b, "app=web").len() == 1)
            .then_some(())
    });
    let names: BTreeSet<String> = webs.iter().map(|(n, _)| n.clone()).collect();
    let b_ip = c
        .json(&["-n", &b, "get", "service", "web"])
        .unwrap_or_default()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let a_ip = c
        .json(&["-n", &a, "get", "service", "web"])
        .unwrap_or_default()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a_ip, b_ip);

    // The Service by its short name (search path) and its full name, both endpoints seen.
    let full = format!("http://web.{a}.svc.cluster.local");
    wait(Duration::from_secs(60), "the Service answering", || {
        let (good, out) = c.exec(
            &a,
            "client",
            &["timeout", "10", "wget", "-qO-", "http://web"],
        );
        if !good {
            eprintln!("not yet: {out}");
        }
        (good && names.contains(out.trim())).then_some(())
    });
    let mut seen = BTreeSet::new();
    for url in ["http://web", full.as_str(), &format!("http://{a_ip}")] {
        let got = fetch_many(c, &a, url, 4);
        for g in &got {
            assert!(names.contains(g), "{url} answered {g:?}, not a web pod");
        }
        seen.extend(got);
    }
    assert_eq!(seen, names, "round robin reaches both endpoints");

    // DNS: the Service's A record, the pod record, and nothing of the other Network.
    let (good, out) = c.exec(
        &a,
        "client",
        &["nslookup", &format!("web.{a}.svc.cluster.local")],
    );
    assert!(
        good && out.contains(&a_ip),
        "nslookup of own Service: {out}"
    );
    let client_ip = c
        .json(&["-n", &a, "get", "pod", "client"])
        .unwrap_or_default()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let pod_name = format!("{}.{a}.pod.cluster.local", client_ip.replace('.', "-"));
    let (good, out) = c.exec(&a, "client", &["nslookup", &pod_name]);
    assert!(
        good && out.contains(&client_ip),
        "nslookup {pod_name}: {out}"
    );
    let other = format!("web.{b}.svc.cluster.local");
    let (good, out) = c.exec(&a, "client", &["nslookup", &other]);
    assert!(
        !good && out.to_ascii_uppercase().contains("NXDOMAIN"),
        "another tenant's Service resolved: {out}"
    );
    let (good, out) = c.exec(
        &a,
        "client",
        &["timeout", "5", "wget", "-qO-", &format!("http://{b_ip}")],
    );
    assert!(!good, "another tenant's ClusterIP answered: {out}");
    // Positive control: B's own pod reaches B's Service by name (through its own proxy).
    let bweb = running_pods(c, &b, "app=web")[0].0.clone();
    let (good, out) = c.exec(
        &b,
        "bweb",
        &["timeout", "10", "wget", "-qO-", &format!("http://{other}")],
    );
    assert!(
        good && out.trim() == bweb,
        "B's pod through B's Service: {out}"
    );

    // Scaling down: the client sees only the remaining endpoint.
    ok(&c.run(
        "1.33",
        &["-n", &a, "scale", "deployment", "web", "--replicas=1"],
        None,
    ));
    let left = wait(Duration::from_secs(120), "one web pod left", || {
        let l = c
            .json(&["-n", &a, "get", "pods", "-l", "app=web"])
            .unwrap_or_default();
        let items = l["items"].as_array()?;
        (items.len() == 1).then(|| items[0]["metadata"]["name"].as_str().map(str::to_string))?
    });
    wait(
        Duration::from_secs(60),
        "the proxy following the scale-down",
        || {
            let got = fetch_many(c, &a, "http://web", 4);
            got.iter().all(|g| *g == left).then_some(())
        },
    );
}

/// Whether `from` fetches `http://ip:8080` within a few seconds (its body then names `to`).
fn reaches(c: &Cluster, ns: &str, from: &str, ip: &str, to: &str) -> bool {
    let (good, out) = c.exec(
        ns,
        from,
        &["timeout", "4", "wget", "-qO-", &format!("http://{ip}:8080")],
    );
    good && out.trim() == to
}

/// NetworkPolicy inside one tenant Network, enforced on the node: ingress (podSelector, a
/// named port) and egress (podSelector, a port number), both allow and deny, replies of
/// allowed connections pass, and deleting the policies opens everything again; then a pod's
/// in-cluster client (the ServiceAccount token and CA) gets answers from the API server at
/// `https://kubernetes.default.svc` through the relay. Three pod
/// VMs, each serving its own name on :8080.
#[test]
fn network_policy_allows_and_denies_both_directions() {
    let _lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let c = start();
    let id = std::process::id() % 100000;
    let a = format!("npa-{id}");
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {a}, labels: {{tenancy.h8s.io/tenant: npt{id}}}}}\n"
    );
    for (name, app) in [("web", "web"), ("client", "client"), ("other", "other")] {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {a}, labels: {{app: {app}}}}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{WEB}"]
    ports: [{{name: http, containerPort: 8080}}]
"#
        ));
    }
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(yaml.as_bytes())));
    let pods = wait(Duration::from_secs(400), "three Running pods", || {
        let p = running_pods(c, &a, "app");
        (p.len() == 3).then_some(p)
    });
    let ip = |n: &str| pods.iter().find(|p| p.0 == n).unwrap().1.clone();
    let (web, client, other) = (ip("web"), ip("client"), ip("other"));
    // Before any policy, everything flows (the positive control of every deny below).
    wait(Duration::from_secs(60), "other → web", || {
        reaches(c, &a, "other", &web, "web").then_some(())
    });
    assert!(reaches(c, &a, "client", &other, "other"));

    let policies = format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-from-clients, namespace: {a}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
    ports: [{{port: http}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: client-to-web, namespace: {a}}}
spec:
  podSelector: {{matchLabels: {{app: client}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: 8080, protocol: TCP}}]
"#
    );
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(policies.as_bytes())));
    // Ingress deny: other → web (web is isolated, other is not a client).
    wait(Duration::from_secs(30), "other → web denied", || {
        (!reaches(c, &a, "other", &web, "web")).then_some(())
    });
    // Ingress and egress allow: client → web.
    assert!(reaches(c, &a, "client", &web, "web"), "client → web");
    // Egress deny: client → other (client may only talk to web).
    assert!(!reaches(c, &a, "client", &other, "other"), "client → other");
    // Ingress to client is open, and client's replies leave although its egress is isolated.
    assert!(reaches(c, &a, "other", &client, "client"), "other → client");
    // web's egress is not isolated: it reaches other (and its replies come back).
    assert!(reaches(c, &a, "web", &other, "other"), "web → other");

    // A label change re-evaluates: other becomes a client and gets in (ingress allow),
    // client's egress still reaches only web.
    ok(&c.run(
        "1.33",
        &[
            "-n",
            &a,
            "label",
            "pod",
            "other",
            "app=client",
            "--overwrite",
        ],
        None,
    ));
    wait(Duration::from_secs(30), "relabelled other → web", || {
        reaches(c, &a, "other", &web, "web").then_some(())
    });

    // Deleting the policies opens everything again.
    ok(&c.run(
        "1.33",
        &["-n", &a, "delete", "networkpolicy", "--all"],
        None,
    ));
    wait(
        Duration::from_secs(30),
        "client → other after delete",
        || reaches(c, &a, "client", &other, "other").then_some(()),
    );

    // The API server as `kubernetes.default.svc` (in-pod proxy → gateway → the node agent's
    // relay → the advertised address), with the pod's ServiceAccount, as in-cluster clients
    // do it: `h8s-incluster` (kube-rs's in-cluster configuration; busybox's TLS client sends
    // no signature_algorithms and cannot finish a handshake with rustls) is copied into the
    // pod with the glibc it links (the busybox image has none) and run through its loader.
    let (_, dns) = c.exec(
        &a,
        "client",
        &["nslookup", "kubernetes.default.svc.cluster.local"],
    );
    assert!(dns.contains("10.96.0.1"), "kubernetes.default.svc: {dns}");
    let bundle = incluster_bundle(&c.dir, &[]);
    ok(&c.run(
        "1.33",
        &[
            "-n",
            &a,
            "exec",
            "-i",
            "client",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/ic && tar xzf - -C /tmp/ic",
        ],
        Some(&bundle),
    ));
    // `dns`: https://kubernetes.default.svc; `env`: KUBERNETES_SERVICE_HOST/PORT, which the
    // node agent sets in every container as kubelet does (client-go's InClusterConfig).
    for (mode, server) in [
        ("dns", "https://kubernetes.default.svc"),
        ("env", "https://10.96.0.1"),
    ] {
        let (good, out) = c.exec(
            &a,
            "client",
            &[
                "timeout",
                "60",
                "/tmp/ic/ld-linux-x86-64.so.2",
                "--library-path",
                "/tmp/ic",
                "/tmp/ic/h8s-incluster",
                mode,
            ],
        );
        assert!(
            good && out.contains(&format!("server {server}"))
                && out.contains("version v")
                && out.contains(&format!("user system:serviceaccount:{a}:default")),
            "in-cluster client ({mode}) from the pod: {out}"
        );
    }
    ok(&c.run("1.33", &["delete", "namespace", &a, "--wait=false"], None));
}

/// `h8s-incluster` and the shared libraries it links (flattened), and `extra` files, as a
/// gzipped tar for `tar xzf - -C DIR` in a busybox container.
fn incluster_bundle(dir: &std::path::Path, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let bin = env!("CARGO_BIN_EXE_h8s-incluster");
    let stage = dir.join(if extra.is_empty() {
        "incluster"
    } else {
        "incluster-extra"
    });
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(bin, stage.join("h8s-incluster")).unwrap();
    for (name, data) in extra {
        std::fs::write(stage.join(name), data).unwrap();
    }
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let name = std::path::Path::new(p).file_name().unwrap();
            std::fs::copy(p, stage.join(name)).unwrap();
        }
    }
    assert!(
        stage.join("ld-linux-x86-64.so.2").exists(),
        "no loader in ldd's answer: {}",
        String::from_utf8_lossy(&ldd.stdout)
    );
    // Debug symbols make no difference to the check, only to the upload.
    let _ = Command::new("strip")
        .arg(stage.join("h8s-incluster"))
        .status();
    let tar = Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(&stage)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    tar.stdout
}

/// A CA and a serving certificate (with its key) for `name`, as PEM.
fn serving_cert(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system network test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// The system Network (docs/network.md): an admission webhook served by a pod in
/// kube-system, called by the API server through `clientConfig.service` (the Service's
/// ready endpoint, dialled directly from the host over the host's port on the system
/// Network; TLS checked for `NAME.kube-system.svc` against the caBundle), denies and mutates
/// ConfigMaps, and serves an aggregated API (an APIService backed by the pod). A tenant
/// cannot put its namespace on the system Network; a tenant's Service as a webhook fails
/// with a clear message; a tenant pod and the system pod cannot reach each other, while the
/// host reaches the system pod. Two pod VMs.
#[test]
fn webhook_pod_on_the_system_network() {
    use base64::Engine as _;
    let _lock = h8s_runtime::testing::vm_test_lock().expect("VM test lock");
    let c = start();
    let id = std::process::id() % 100000;
    let (t, hook) = (format!("syst-{id}"), format!("hook-{id}"));

    // The server made the system Network; the network controller activated it.
    wait(Duration::from_secs(60), "the system network Active", || {
        let n = c.json(&["get", "network", "system"]).ok()?;
        (n["status"]["phase"] == "Active").then_some(())
    });
    // No tenant's namespace joins it.
    let (good, _, err) = c.kubectl_out(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {t}x, labels: {{tenancy.h8s.io/tenant: sys{id}}}}}\nspec: {{network: system}}\n"
        )),
    );
    // (The tenancy plugin answers first, as for any Network not the tenant's: 422 `Not
    // found`; NamespaceNetwork's own refusal behind it is unit-tested.)
    assert!(
        !good && err.contains("is invalid") && err.contains(r#"spec.network: Not found: "system""#),
        "a tenant namespace on the system network: {err}"
    );

    let (ca, cert, key) = serving_cert(&format!("{hook}.kube-system.svc"));
    let yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {t}, labels: {{tenancy.h8s.io/tenant: sys{id}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: tweb, namespace: {t}, labels: {{app: tweb}}}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "{WEB}"]
---
apiVersion: v1
kind: Service
metadata: {{name: tweb, namespace: {t}}}
spec:
  selector: {{app: tweb}}
  ports: [{{port: 443, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: {hook}, namespace: kube-system, labels: {{app: {hook}}}}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    # Serves its name on :8080 (busybox httpd) and, once the test copied it in, the webhook
    # on :8443.
    command: ["sh", "-c", "mkdir -p /www && echo {hook} > /www/index.html && httpd -p 8080 -h /www && while [ ! -d /tmp/ic ]; do sleep 1; done; exec /tmp/ic/ld-linux-x86-64.so.2 --library-path /tmp/ic /tmp/ic/h8s-incluster webhook /tmp/ic/tls.crt /tmp/ic/tls.key 8443"]
    readinessProbe:
      tcpSocket: {{port: 8443}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {hook}, namespace: kube-system}}
spec:
  selector: {{app: {hook}}}
  ports: [{{name: https, port: 443, targetPort: 8443}}]
"#
    );
    ok(&c.run("1.33", &["apply", "-f", "-"], Some(yaml.as_bytes())));
    let ip_of = |ns: &str, pod: &str| {
        wait(
            Duration::from_secs(400),
            &format!("{ns}/{pod} Running"),
            || {
                running_pods(c, ns, "app")
                    .into_iter()
                    .find(|p| p.0 == pod)
                    .map(|p| p.1)
            },
        )
    };
    let hook_ip = ip_of("kube-system", &hook);
    let tweb_ip = ip_of(&t, "tweb");
    assert!(
        hook_ip.starts_with("10.87."),
        "kube-system's pod on the system network: {hook_ip}"
    );
    let bundle = incluster_bundle(
        &c.dir,
        &[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())],
    );
    ok(&c.run(
        "1.33",
        &[
            "-n",
            "kube-system",
            "exec",
            "-i",
            &hook,
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/s && tar xzf - -C /tmp/s && mv /tmp/s /tmp/ic",
        ],
        Some(&bundle),
    ));

    // The host (this test, like the API server) reaches the system pod directly.
    let fetched = wait(
        Duration::from_secs(60),
        "the host reaches the system pod",
        || {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "3", &format!("http://{hook_ip}:8080/")])
                .output()
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (body == hook).then_some(body)
        },
    );
    assert_eq!(fetched, hook);
    // Neither the tenant's pod nor the system pod reaches the other (the tenant's pod serves
    // its name on :8080 too: the positive control is the host's fetch above and, for the
    // tenant's pod, its own address).
    wait(Duration::from_secs(60), "tweb serves", || {
        reaches(c, &t, "tweb", &tweb_ip, "tweb").then_some(())
    });
    assert!(
        !reaches(c, &t, "tweb", &hook_ip, &hook),
        "tenant → system pod"
    );
    assert!(
        !reaches(c, "kube-system", &hook, &tweb_ip, "tweb"),
        "system pod → tenant pod"
    );

    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());
    let hook_cfg = |kind: &str, name: &str, ns: &str, svc: &str, path: &str| {
        format!(
            r#"{{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "{kind}",
            "metadata": {{"name": "{name}"}},
            "webhooks": [{{"name": "{name}.h8s.test",
              "clientConfig": {{"service": {{"namespace": "{ns}", "name": "{svc}", "path": "{path}"}},
                "caBundle": "{ca_bundle}"}},
              "rules": [{{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["configmaps"]}}],
              "objectSelector": {{"matchLabels": {{"sysnet": "{name}"}}}},
              "failurePolicy": "Fail", "timeoutSeconds": 10,
              "sideEffects": "None", "admissionReviewVersions": ["v1"]}}]}}"#
        )
    };
    let deny = format!("deny-{id}");
    let mutate = format!("mutate-{id}");
    let tenant_hook = format!("tenant-{id}");
    for (kind, name, ns, svc, path) in [
        (
            "ValidatingWebhookConfiguration",
            &deny,
            "kube-system",
            &hook,
            "/deny",
        ),
        (
            "MutatingWebhookConfiguration",
            &mutate,
            "kube-system",
            &hook,
            "/mutate",
        ),
        (
            "ValidatingWebhookConfiguration",
            &tenant_hook,
            t.as_str(),
            &"tweb".to_string(),
            "/",
        ),
    ] {
        ok(&c.run(
            "1.33",
            &["apply", "-f", "-"],
            Some(hook_cfg(kind, name, ns, svc, path).as_bytes()),
        ));
    }
    let cm = |name: &str, labels: &str| {
        c.kubectl_out(
            &["-n", &t, "create", "-f", "-"],
            Some(&format!(
                r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}", "labels": {labels}}}}}"#
            )),
        )
    };
    // Mutated by the pod (waiting for its readiness and its EndpointSlice).
    wait(
        Duration::from_secs(120),
        "a ConfigMap mutated by the pod",
        || {
            let (good, _, err) = cm("m1", &format!(r#"{{"sysnet": "{mutate}"}}"#));
            if !good {
                eprintln!("not yet: {err}");
                return None;
            }
            Some(())
        },
    );
    let m1 = c.json(&["-n", &t, "get", "configmap", "m1"]).unwrap();
    assert_eq!(m1["metadata"]["labels"]["mutated-by"], "pod", "{m1}");
    // Denied by the pod; allowed without the label.
    let (good, _, err) = cm("d1", &format!(r#"{{"sysnet": "{deny}", "deny": "true"}}"#));
    assert!(
        !good && err.contains("denied by a pod") && err.contains(&format!("{deny}.h8s.test")),
        "{err}"
    );
    let (good, _, err) = cm("d2", &format!(r#"{{"sysnet": "{deny}"}}"#));
    assert!(good, "{err}");
    // A tenant's Service is out of the API server's reach: a clear message.
    let (good, _, err) = cm("t1", &format!(r#"{{"sysnet": "{tenant_hook}"}}"#));
    assert!(
        !good
            && err.contains(&format!(r#"are pods of network "tenant-sys{id}""#))
            && err.contains("cannot reach"),
        "{err}"
    );

    // The same pod as an aggregated API server (APIService `spec.service`): available after
    // the aggregator's check, and requests for its group version are proxied to the pod.
    let group = format!("sys{id}.h8s.test");
    ok(&c.run(
        "1.33",
        &["apply", "-f", "-"],
        Some(
            format!(
                r#"{{"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {{"name": "v1.{group}"}},
                "spec": {{"group": "{group}", "version": "v1", "caBundle": "{ca_bundle}",
                  "service": {{"namespace": "kube-system", "name": "{hook}", "port": 443}},
                  "groupPriorityMinimum": 1000, "versionPriority": 15}}}}"#
            )
            .as_bytes(),
        ),
    ));
    wait(Duration::from_secs(120), "the APIService Available", || {
        let a = c
            .json(&["get", "apiservice", &format!("v1.{group}")])
            .ok()?;
        let cond = a["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Available")?
            .clone();
        if cond["status"] == "True" {
            return Some(());
        }
        eprintln!("not yet: {cond}");
        None
    });
    let list = c.kubectl(&["get", "--raw", &format!("/apis/{group}/v1")]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["groupVersion"], format!("{group}/v1"), "{list}");
    assert_eq!(list["resources"][0]["kind"], "Echo", "{list}");
    ok(&c.run(
        "1.33",
        &["delete", "apiservice", &format!("v1.{group}")],
        None,
    ));

    for name in [&deny, &tenant_hook] {
        ok(&c.run(
            "1.33",
            &["delete", "validatingwebhookconfiguration", name],
            None,
        ));
    }
    ok(&c.run(
        "1.33",
        &["delete", "mutatingwebhookconfiguration", &mutate],
        None,
    ));
    ok(&c.run(
        "1.33",
        &[
            "-n",
            "kube-system",
            "delete",
            "pod,service",
            &hook,
            "--wait=false",
        ],
        None,
    ));
    ok(&c.run("1.33", &["delete", "namespace", &t, "--wait=false"], None));
}
