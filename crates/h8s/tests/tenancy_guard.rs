//! The tenant guard end to end against the real `h8s server`: two tenants (`acme`,
//! `bolt`) with two users each (static tokens whose groups carry `h8s:tenant:<name>`), a
//! generated matrix of more than 1,000 requests from a Rust client (kube-rs' raw
//! `Client::send`) — every verb × every kind × own and other tenant's namespaces, list and
//! watch with and without all namespaces, gets by guessed names, patches, deletes,
//! `Namespace.spec.network` naming the other tenant's Network — with zero leaks; paginated
//! filtered lists and watches from their resourceVersion; kubectl and the Python client for
//! the representative cases. One server for the whole binary.

mod api_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api_support::{json, Server};
use futures::StreamExt;
use h8s_client::kube;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const TENANTS: [&str; 2] = ["acme", "bolt"];

fn other(t: &str) -> &'static str {
    if t == "acme" {
        "bolt"
    } else {
        "acme"
    }
}

/// The token of user `n` (1, 2) of tenant `t`.
fn token(t: &str, n: u32) -> String {
    format!("tok-{t}-{n}-5d3c9a0e7b")
}

/// One response: code and body.
#[derive(Debug, Clone)]
struct Resp {
    code: u16,
    body: String,
}

#[derive(Clone)]
struct Client {
    kube: kube::Client,
}

impl Client {
    fn new(srv: &Server, tok: &str) -> Client {
        let conn = h8s_client::Connection {
            server: srv.url.clone(),
            ca_pem: std::fs::read(srv.data_dir().join("ca.crt")).expect("ca.crt"),
            credentials: h8s_client::Credentials::Token(tok.to_string()),
            user_agent: "tenancy-guard-test".into(),
        };
        Client {
            kube: conn.client().expect("client"),
        }
    }

    async fn send(&self, method: &str, path: &str, ct: &str, body: Option<&Value>) -> Resp {
        let mut b = http::Request::builder().method(method).uri(path);
        if body.is_some() {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        let bytes = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
        let req = b.body(kube::client::Body::from(bytes)).expect("request");
        let resp = self.kube.send(req).await.expect("send");
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Resp {
            code,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, "", None).await
    }
    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, "application/json", Some(body))
            .await
    }
}

/// A namespaced kind of the matrix: its collection path in a namespace and a body.
struct Kind {
    api: &'static str,
    plural: &'static str,
    body: fn(&str) -> Value,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            api: "/api/v1",
            plural: "configmaps",
            body: |n| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {"k": "v"}}),
        },
        Kind {
            api: "/api/v1",
            plural: "secrets",
            body: |n| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "stringData": {"k": "v"}}),
        },
        Kind {
            api: "/api/v1",
            plural: "services",
            body: |n| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"ports": [{"port": 80}], "selector": {"app": n}}}),
        },
        Kind {
            api: "/api/v1",
            plural: "serviceaccounts",
            body: |n| json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}}),
        },
        Kind {
            api: "/api/v1",
            plural: "persistentvolumeclaims",
            body: |n| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": n}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}}),
        },
        Kind {
            api: "/apis/apps/v1",
            plural: "deployments",
            body: |n| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": n}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": n}}, "template": {"metadata": {"labels": {"app": n}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        },
        Kind {
            api: "/apis/batch/v1",
            plural: "jobs",
            body: |n| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": n}, "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
        },
        Kind {
            api: "/apis/rbac.authorization.k8s.io/v1",
            plural: "roles",
            body: |n| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": n}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        },
        Kind {
            api: "/apis/rbac.authorization.k8s.io/v1",
            plural: "rolebindings",
            body: |n| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": n}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "nobody"}]}),
        },
        Kind {
            api: "/apis/coordination.k8s.io/v1",
            plural: "leases",
            body: |n| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n}}),
        },
        Kind {
            api: "/api/v1",
            plural: "resourcequotas",
            body: |n| json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": n}, "spec": {"hard": {"pods": "100"}}}),
        },
    ]
}

fn network(name: &str, third: u8) -> Value {
    json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": name},
           "spec": {"subnets": {"s1": {"cidr": format!("10.{third}.0.0/24"), "gateway": format!("10.{third}.0.1")}}}})
}

fn pv(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": format!("/tmp/{name}")}}})
}

/// One attempt of the matrix.
struct Attempt {
    user: (String, u32),
    method: &'static str,
    path: String,
    body: Option<Value>,
    ct: &'static str,
    /// The request is about the other tenant's object or namespace (any 2xx is a leak).
    foreign: bool,
}

/// What the matrix knows of each tenant's objects: names and uids.
#[derive(Default, Clone)]
struct Secrets {
    /// Per tenant: every name and uid of its objects.
    marks: std::collections::HashMap<String, BTreeSet<String>>,
}

impl Secrets {
    fn add(&mut self, tenant: &str, v: &Value) {
        let m = self.marks.entry(tenant.to_string()).or_default();
        for f in ["name", "uid"] {
            if let Some(s) = v["metadata"][f].as_str() {
                m.insert(s.to_string());
            }
        }
    }

    /// The other tenant's names/uids found in `body`, after removing what the request
    /// itself said (a 403 echoes the guessed name).
    fn leaked(&self, tenant: &str, req: &Attempt, body: &str) -> Vec<String> {
        let mut scrubbed = body.to_string();
        // Query values as the server reads them (`fieldSelector=metadata.name%3Dx`: a 403
        // names `x`, as kube-apiserver's does, whether or not it exists).
        let path = req.path.replace("%3D", "=").replace("%2C", ",");
        let mut said: Vec<&str> = path.split(['/', '?', '&', '=', ',']).collect();
        let req_body = req.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        if let Some(b) = &req.body {
            said.extend(b["metadata"]["name"].as_str());
            said.extend(b["spec"]["network"].as_str());
            said.extend(b["spec"]["tenantID"].as_str());
        }
        said.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in said.iter().filter(|s| s.len() > 2) {
            scrubbed = scrubbed.replace(s, "");
        }
        let _ = req_body;
        self.marks
            .get(other(tenant))
            .map(|m| {
                m.iter()
                    .filter(|s| scrubbed.contains(s.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn ns_of(t: &str, i: u32) -> String {
    format!("{t}-ns{i}")
}

#[test]
fn tenant_guard_end_to_end() {
    // The audit log: everything at Metadata except health checks, rotated at 1 MiB.
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit").join("audit.log");
    let policy = dir.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [\"/healthz*\", \"/readyz*\", \"/livez*\"]\n- level: Metadata\n",
    )
    .expect("policy");
    let srv = Server::start_with(
        dir,
        &[
            "--audit-log-path".as_ref(),
            audit.as_os_str(),
            "--audit-log-maxsize".as_ref(),
            "1".as_ref(),
            "--audit-log-maxbackup".as_ref(),
            "3".as_ref(),
            "--audit-policy-file".as_ref(),
            policy.as_os_str(),
        ],
    );
    // Two tenants, two users each; an outsider with no tenant for contrast.
    let mut csv = String::new();
    for t in TENANTS.iter().chain(&["corp"]) {
        for n in 1..=2 {
            csv += &format!("{},{t}-u{n},uid-{t}-{n},\"h8s:tenant:{t}\"\n", token(t, n));
        }
    }
    std::fs::write(srv.data_dir().join("tokens.csv"), csv).expect("tokens.csv");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(&srv));
    rt.block_on(auth_controller(&srv));
    kubectl_and_python(&srv);
    check_audit(&srv, &audit);
}

/// The audit log holds one line per request with who, which tenant, what and the answer.
fn check_audit(srv: &Server, path: &std::path::Path) {
    let _ = srv.curl("GET", "/healthz", None, None);
    std::thread::sleep(Duration::from_millis(500));
    let dir = path.parent().expect("dir");
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(files.len() <= 4, "at most 3 backups: {files:?}");
    let mut lines = Vec::new();
    for f in &files {
        let meta = std::fs::metadata(f).expect("meta");
        assert!(
            meta.len() <= 1024 * 1024,
            "{} is over the size limit",
            f.display()
        );
        lines.extend(std::fs::read_to_string(f).expect("read").lines().map(json));
    }
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "Event" && l["apiVersion"] == "audit.k8s.io/v1"));
    assert!(lines.iter().all(|l| !l["requestURI"]
        .as_str()
        .unwrap_or("")
        .starts_with("/healthz")));
    // A refused request of a tenant user, with its tenant and source.
    let refused = lines
        .iter()
        .find(|l| {
            l["user"]["username"] == "acme-u1"
                && l["responseStatus"]["code"] == 403
                && l["objectRef"]["namespace"] == "bolt-ns1"
        })
        .expect("a refused request of acme-u1 in bolt-ns1 is logged");
    assert_eq!(refused["tenant"], "acme");
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(refused["sourceIPs"][0], "127.0.0.1");
    assert!(refused["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("h8s:tenant:acme")));
    assert!(refused["latencyMicros"].as_u64().is_some());
    assert!(lines
        .iter()
        .any(|l| l["user"]["username"] == "bolt-u2" && l["verb"] == "watch"));
    assert!(lines.iter().any(|l| l["verb"] == "create"
        && l["objectRef"]["resource"] == "namespaces"
        && l["responseStatus"]["code"] == 201
        && l["tenant"] == "bolt"));
}

async fn run(srv: &Server) {
    let admin = Client::new(srv, &srv.token);
    let users: Vec<(String, u32, Client)> = TENANTS
        .iter()
        .flat_map(|t| (1..=2).map(move |n| (t.to_string(), n)))
        .map(|(t, n)| {
            let c = Client::new(srv, &token(&t, n));
            (t, n, c)
        })
        .collect();
    let user = |t: &str, n: u32| -> Client {
        users
            .iter()
            .find(|(ut, un, _)| ut == t && *un == n)
            .map(|u| u.2.clone())
            .expect("user")
    };
    let mut secrets = Secrets::default();
    // These static-token users have no User objects (the auth-controller binds Users): bind
    // their tenants' groups to the auth-controller's `namespace-creater` as it would.
    let mut ok = false;
    for _ in 0..150 {
        if admin
            .get("/apis/rbac.authorization.k8s.io/v1/clusterroles/namespace-creater")
            .await
            .code
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok,
        "the auth-controller made no namespace-creater ClusterRole"
    );
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({"metadata": {"name": "test-tenants-namespace-creater"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-creater"},
                    "subjects": (["acme", "bolt", "corp"].iter().map(|t| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("h8s:tenant:{t}")})).collect::<Vec<_>>())}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);

    // ---- each tenant's own objects, created by its users ----
    for (ti, t) in TENANTS.iter().enumerate() {
        let c1 = user(t, 1);
        // A Network: spec.tenantID is stamped from the caller's tenant.
        let r = c1
            .post(
                "/api/v1/networks",
                &network(&format!("{t}-net"), 10 + ti as u8),
            )
            .await;
        assert_eq!(r.code, 201, "network: {}", r.body);
        let net = json(&r.body);
        assert_eq!(net["spec"]["tenantID"], *t);
        secrets.add(t, &net);
        // Claiming the other tenant in spec.tenantID is refused.
        let mut bad = network(&format!("{t}-net-x"), 20 + ti as u8);
        bad["spec"]["tenantID"] = json!(other(t));
        let r = c1.post("/api/v1/networks", &bad).await;
        assert_eq!(r.code, 422, "{}", r.body);
        for n in 1..=2u32 {
            let c = user(t, n);
            let ns = ns_of(t, n);
            // A namespace on the tenant's own network; a tenant label sent by the user
            // for the other tenant is refused, its own is replaced by the server's.
            let mut body = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"tenancy.h8s.io/tenant": other(t)}},
                "spec": {"network": format!("{t}-net")}});
            let r = c.post("/api/v1/namespaces", &body).await;
            assert_eq!(r.code, 422, "{}", r.body);
            body["metadata"]["labels"] = json!({});
            let r = c.post("/api/v1/namespaces", &body).await;
            assert_eq!(r.code, 201, "namespace {ns}: {}", r.body);
            let o = json(&r.body);
            assert_eq!(o["metadata"]["labels"]["tenancy.h8s.io/tenant"], *t);
            secrets.add(t, &o);
            // Usable as soon as the auth-controller has bound the tenant's group to
            // `admin` in it (the guard's index records the admitted namespace at once).
            let mut code = 0;
            for _ in 0..150 {
                code = c
                    .get(&format!("/api/v1/namespaces/{ns}/configmaps"))
                    .await
                    .code;
                if code == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(code, 200, "{ns} not usable by its tenant");
            for k in kinds() {
                let name = format!("{}-{ns}", &k.plural[..k.plural.len() - 1]);
                let r = admin
                    .post(
                        &format!("{}/namespaces/{ns}/{}", k.api, k.plural),
                        &(k.body)(&name),
                    )
                    .await;
                assert_eq!(r.code, 201, "{} {name}: {}", k.plural, r.body);
                secrets.add(t, &json(&r.body));
            }
        }
        let r = c1
            .post("/api/v1/persistentvolumes", &pv(&format!("{t}-pv")))
            .await;
        assert_eq!(r.code, 201, "pv: {}", r.body);
        let o = json(&r.body);
        assert_eq!(o["metadata"]["labels"]["tenancy.h8s.io/tenant"], *t);
        secrets.add(t, &o);
    }
    // Admin's objects nobody's tenant sees either.
    let r = admin
        .post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "ops-private"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);

    // ---- Namespace.spec.network and PVC binding across tenants ----
    for t in TENANTS {
        let c = user(t, 1);
        for net in [format!("{}-net", other(t)), "no-such-net".to_string()] {
            let r = c
                .post(
                    "/api/v1/namespaces",
                    &json!({"metadata": {"name": format!("{t}-x-{net}")}, "spec": {"network": net}}),
                )
                .await;
            assert_eq!(r.code, 422, "{}", r.body);
            assert!(
                r.body.contains(&format!("Not found: \\\"{net}\\\"")),
                "{}",
                r.body
            );
        }
        let r = c
            .post(
                &format!("/api/v1/namespaces/{}/persistentvolumeclaims", ns_of(t, 1)),
                &json!({"metadata": {"name": "steal"}, "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": format!("{}-pv", other(t)), "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}}),
            )
            .await;
        assert_eq!(r.code, 422, "{}", r.body);
        // The seeds' inline `cinder:` volume: naming the other tenant's volume (or one that
        // does not exist, answered alike) is refused at admission; its own is accepted.
        let cinder_pod = |name: &str, vol: &str| {
            json!({"metadata": {"name": name}, "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "v", "cinder": {"volumeID": vol, "fsType": "ext4"}}]}})
        };
        let pods = format!("/api/v1/namespaces/{}/pods", ns_of(t, 1));
        for vol in [format!("{}-pv", other(t)), format!("{}-pX", other(t))] {
            let r = c.post(&pods, &cinder_pod("steal-disk", &vol)).await;
            assert_eq!(r.code, 403, "{}", r.body);
            let want = format!(
                "pods \\\"steal-disk\\\" is forbidden: cinder volume \\\"{vol}\\\" is not a volume of tenant \\\"{t}\\\""
            );
            assert!(r.body.contains(&want), "{}", r.body);
        }
        let r = c
            .post(&pods, &cinder_pod("own-disk", &format!("{t}-pv")))
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
        let r = c
            .send("DELETE", &format!("{pods}/own-disk"), "", None)
            .await;
        assert_eq!(r.code, 200, "{}", r.body);
        // The label cannot be changed or removed.
        let r = c
            .send(
                "PATCH",
                &format!("/api/v1/namespaces/{}", ns_of(t, 1)),
                "application/merge-patch+json",
                Some(&json!({"metadata": {"labels": {"tenancy.h8s.io/tenant": other(t)}}})),
            )
            .await;
        assert_eq!(r.code, 422, "{}", r.body);
        let r = c
            .send(
                "PATCH",
                &format!("/api/v1/namespaces/{}", ns_of(t, 1)),
                "application/merge-patch+json",
                Some(&json!({"metadata": {"labels": {"tenancy.h8s.io/tenant": null, "x": "y"}}})),
            )
            .await;
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(
            json(&r.body)["metadata"]["labels"]["tenancy.h8s.io/tenant"],
            t
        );
        // Network tenant is immutable.
        let r = c
            .send(
                "PATCH",
                &format!("/api/v1/networks/{t}-net"),
                "application/merge-patch+json",
                Some(&json!({"spec": {"tenantID": other(t)}})),
            )
            .await;
        assert!(r.code == 422, "{}", r.body);
    }

    // ---- the generated matrix ----
    let mut attempts: Vec<Attempt> = Vec::new();
    let push = |v: &mut Vec<Attempt>,
                t: &str,
                n: u32,
                m: &'static str,
                path: String,
                body: Option<Value>,
                ct: &'static str,
                foreign: bool| {
        v.push(Attempt {
            user: (t.to_string(), n),
            method: m,
            path,
            body,
            ct,
            foreign,
        });
    };
    let merge = "application/merge-patch+json";
    for t in TENANTS {
        let o = other(t);
        for n in 1..=2u32 {
            for k in kinds() {
                let single = &k.plural[..k.plural.len() - 1];
                // Own namespace: reads (writes by RBAC's rules are not this test's).
                for i in 1..=2 {
                    let ns = ns_of(t, i);
                    let base = format!("{}/namespaces/{ns}/{}", k.api, k.plural);
                    push(&mut attempts, t, n, "GET", base.clone(), None, "", false);
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!("{base}/{single}-{ns}"),
                        None,
                        "",
                        false,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!("{base}?watch=true&timeoutSeconds=1"),
                        None,
                        "",
                        false,
                    );
                }
                // The other tenant's namespaces and objects: every verb.
                for i in 1..=2 {
                    let ns = ns_of(o, i);
                    let base = format!("{}/namespaces/{ns}/{}", k.api, k.plural);
                    let obj = format!("{base}/{single}-{ns}");
                    push(&mut attempts, t, n, "GET", base.clone(), None, "", true);
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!("{base}?limit=1"),
                        None,
                        "",
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!("{base}?watch=true&timeoutSeconds=1"),
                        None,
                        "",
                        true,
                    );
                    push(&mut attempts, t, n, "GET", obj.clone(), None, "", true);
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!("{base}/guessed-{single}"),
                        None,
                        "",
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "POST",
                        base.clone(),
                        Some((k.body)(&format!("{t}-intruder"))),
                        "application/json",
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "PUT",
                        obj.clone(),
                        Some((k.body)(&format!("{single}-{ns}"))),
                        "application/json",
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "PATCH",
                        obj.clone(),
                        Some(json!({"metadata": {"labels": {"pwned": "yes"}}})),
                        merge,
                        true,
                    );
                    push(&mut attempts, t, n, "DELETE", obj.clone(), None, "", true);
                    push(&mut attempts, t, n, "DELETE", base.clone(), None, "", true);
                }
                // All namespaces: filtered to the caller's.
                let all = format!("{}/{}", k.api, k.plural);
                push(&mut attempts, t, n, "GET", all.clone(), None, "", false);
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{all}?limit=2"),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{all}?watch=true&timeoutSeconds=1"),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "DELETE",
                    format!("{all}?labelSelector=nothing%3Dhere"),
                    None,
                    "",
                    false,
                );
            }
            // Pods of the other tenant: reads and the streaming subresources.
            for i in 1..=2 {
                let base = format!("/api/v1/namespaces/{}/pods", ns_of(o, i));
                push(&mut attempts, t, n, "GET", base.clone(), None, "", true);
                for sub in [
                    "log",
                    "exec?command=ls&stdout=true",
                    "attach?stdout=true",
                    "portforward?ports=80",
                ] {
                    let m = if sub == "log" { "GET" } else { "POST" };
                    push(
                        &mut attempts,
                        t,
                        n,
                        m,
                        format!("{base}/guessed-pod/{sub}"),
                        None,
                        "",
                        true,
                    );
                }
            }
            // System and admin namespaces are nobody's tenant's.
            for ns in ["default", "kube-system", "ops-private"] {
                for p in [
                    "/api/v1/namespaces/{ns}/secrets",
                    "/api/v1/namespaces/{ns}/configmaps",
                    "/api/v1/namespaces/{ns}/serviceaccounts/default",
                ] {
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        p.replace("{ns}", ns),
                        None,
                        "",
                        true,
                    );
                }
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("/api/v1/namespaces/{ns}"),
                    None,
                    "",
                    true,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "DELETE",
                    format!("/api/v1/namespaces/{ns}"),
                    None,
                    "",
                    true,
                );
            }
            // Tenant-owned cluster-scoped kinds.
            let owned = [
                ("/api/v1/namespaces", vec![ns_of(o, 1), ns_of(o, 2)]),
                ("/api/v1/networks", vec![format!("{o}-net")]),
                ("/api/v1/persistentvolumes", vec![format!("{o}-pv")]),
            ];
            for (base, names) in &owned {
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    base.to_string(),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{base}?limit=1"),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{base}?watch=true&timeoutSeconds=1"),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{base}?fieldSelector=metadata.name%3D{}", names[0]),
                    None,
                    "",
                    false,
                );
                for name in names
                    .iter()
                    .map(String::as_str)
                    .chain(["guessed-name", "default"])
                {
                    let obj = format!("{base}/{name}");
                    push(&mut attempts, t, n, "GET", obj.clone(), None, "", true);
                    push(
                        &mut attempts,
                        t,
                        n,
                        "GET",
                        format!(
                            "/api/v1/watch/{}/{name}?timeoutSeconds=1",
                            base.trim_start_matches("/api/v1/")
                        ),
                        None,
                        "",
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "PATCH",
                        obj.clone(),
                        Some(json!({"metadata": {"labels": {"pwned": "yes"}}})),
                        merge,
                        true,
                    );
                    push(
                        &mut attempts,
                        t,
                        n,
                        "PUT",
                        obj.clone(),
                        Some(
                            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                        ),
                        "application/json",
                        true,
                    );
                    push(&mut attempts, t, n, "DELETE", obj.clone(), None, "", true);
                }
            }
            // Namespace.spec.network → the other tenant's Network.
            push(
                &mut attempts,
                t,
                n,
                "POST",
                "/api/v1/namespaces".into(),
                Some(
                    json!({"metadata": {"name": format!("{t}-{n}-netsteal")}, "spec": {"network": format!("{o}-net")}}),
                ),
                "application/json",
                true,
            );
            push(
                &mut attempts,
                t,
                n,
                "PATCH",
                format!("/api/v1/namespaces/{}", ns_of(t, n)),
                Some(json!({"spec": {"network": format!("{o}-net")}})),
                merge,
                true,
            );
            // Read-only cluster kinds: writes refused.
            for (api, plural) in [
                ("/api/v1", "nodes"),
                ("/apis/storage.k8s.io/v1", "storageclasses"),
                ("/apis/node.k8s.io/v1", "runtimeclasses"),
                ("/apis/scheduling.k8s.io/v1", "priorityclasses"),
            ] {
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{api}/{plural}"),
                    None,
                    "",
                    false,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "POST",
                    format!("{api}/{plural}"),
                    Some(json!({"metadata": {"name": format!("{t}-x")}})),
                    "application/json",
                    true,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "DELETE",
                    format!("{api}/{plural}/system-node-critical"),
                    None,
                    "",
                    true,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "DELETE",
                    format!("{api}/{plural}"),
                    None,
                    "",
                    true,
                );
            }
            // Cluster-admin kinds.
            for (api, plural) in [
                ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
                ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
                ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
                (
                    "/apis/admissionregistration.k8s.io/v1",
                    "validatingwebhookconfigurations",
                ),
                (
                    "/apis/admissionregistration.k8s.io/v1",
                    "mutatingwebhookconfigurations",
                ),
                ("/apis/apiregistration.k8s.io/v1", "apiservices"),
                ("/apis/certificates.k8s.io/v1", "certificatesigningrequests"),
            ] {
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{api}/{plural}"),
                    None,
                    "",
                    true,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "POST",
                    format!("{api}/{plural}"),
                    Some(json!({"metadata": {"name": format!("{t}-x")}})),
                    "application/json",
                    true,
                );
                push(
                    &mut attempts,
                    t,
                    n,
                    "GET",
                    format!("{api}/{plural}/cluster-admin"),
                    None,
                    "",
                    true,
                );
            }
            // Binding a Role that grants more than the user has (cluster-admin) in its
            // own namespace: whatever RBAC says, the other tenant stays out of reach
            // (checked by the foreign requests above, which run after it).
            push(
                &mut attempts,
                t,
                n,
                "POST",
                format!(
                    "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings",
                    ns_of(t, n)
                ),
                Some(
                    json!({"metadata": {"name": format!("escalate-{n}")}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("{t}-u{n}")}]}),
                ),
                "application/json",
                false,
            );
        }
    }
    // The escalation attempts run first.
    attempts.sort_by_key(|a| !a.path.contains("/rolebindings") || a.method != "POST" || a.foreign);
    let total = attempts.len();
    assert!(total >= 1000, "the matrix has only {total} attempts");

    // The other tenant keeps writing while the matrix runs, so watches see live events.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let cs: Vec<(String, Client)> = TENANTS
            .iter()
            .map(|t| (t.to_string(), admin.clone()))
            .collect();
        tokio::spawn(async move {
            let mut i = 0u32;
            let mut made = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (t, c) in &cs {
                    let ns = ns_of(t, 1);
                    let name = format!("{t}-churn-{i}");
                    let r = c
                        .post(
                            &format!("/api/v1/namespaces/{ns}/configmaps"),
                            &json!({"metadata": {"name": name}}),
                        )
                        .await;
                    if r.code == 201 {
                        made.push((t.clone(), json(&r.body)));
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            made
        })
    };
    let secrets = Arc::new(std::sync::Mutex::new(secrets));
    let users = Arc::new(users.clone());
    let results: Vec<(Attempt, Resp)> = futures::stream::iter(attempts)
        .map(|a| {
            let users = users.clone();
            async move {
                let c = users
                    .iter()
                    .find(|(t, n, _)| *t == a.user.0 && *n == a.user.1)
                    .map(|u| u.2.clone())
                    .expect("user");
                let r = c.send(a.method, &a.path, a.ct, a.body.as_ref()).await;
                (a, r)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churn.await.expect("churn");
    let mut secrets = secrets.lock().expect("lock").clone();
    for (t, o) in &churned {
        secrets.add(t, o);
    }

    let mut leaks = Vec::new();
    let mut codes = std::collections::BTreeMap::new();
    for (a, r) in &results {
        *codes.entry(r.code).or_insert(0) += 1;
        assert_ne!(r.code, 500, "{} {}: {}", a.method, a.path, r.body);
        let t = &a.user.0;
        if a.foreign && (200..300).contains(&r.code) {
            leaks.push(format!(
                "{}-u{} {} {} → {}",
                t, a.user.1, a.method, a.path, r.code
            ));
        }
        let found = secrets.leaked(t, a, &r.body);
        if !found.is_empty() {
            leaks.push(format!(
                "{}-u{} {} {} → {} shows {found:?}",
                t, a.user.1, a.method, a.path, r.code
            ));
        }
    }
    eprintln!(
        "tenancy matrix: {total} attempts, status codes {codes:?}, {} leaks",
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );

    // Existing and missing objects of the other tenant answer alike.
    let c = user("acme", 1);
    for (a, b) in [
        ("/api/v1/namespaces/bolt-ns1", "/api/v1/namespaces/bolt-nsX"),
        ("/api/v1/networks/bolt-net", "/api/v1/networks/bolt-neX"),
        (
            "/api/v1/persistentvolumes/bolt-pv",
            "/api/v1/persistentvolumes/bolt-pX",
        ),
        (
            "/api/v1/namespaces/bolt-ns1/configmaps/configmap-bolt-ns1",
            "/api/v1/namespaces/bolt-nsX/configmaps/configmap-bolt-ns1",
        ),
    ] {
        let (x, y) = (c.get(a).await, c.get(b).await);
        assert_eq!(x.code, y.code);
        let strip = |s: &str| {
            s.replace("bolt-ns1", "")
                .replace("bolt-nsX", "")
                .replace("bolt-net", "")
                .replace("bolt-neX", "")
                .replace("bolt-pv", "")
                .replace("bolt-pX", "")
        };
        assert_eq!(strip(&x.body), strip(&y.body));
    }

    // ---- what a tenant does see, paginated, with working continue tokens ----
    for t in TENANTS {
        let c = user(t, 2);
        let mut seen = Vec::new();
        let mut cont = String::new();
        let mut pages = 0;
        loop {
            let r = c
                .get(&format!("/api/v1/namespaces?limit=1&continue={cont}"))
                .await;
            assert_eq!(r.code, 200, "{}", r.body);
            let l = json(&r.body);
            assert!(l["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|v| !v.is_empty()));
            seen.extend(
                l["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
            );
            pages += 1;
            match l["metadata"]["continue"].as_str() {
                Some(k) if !k.is_empty() => cont = k.to_string(),
                _ => break,
            }
        }
        // (The other tenant's watch test below may already have added `<t>-late-…`.)
        seen.retain(|n| !n.contains("-late"));
        assert_eq!(seen, vec![ns_of(t, 1), ns_of(t, 2)], "{t}: pages {pages}");
        assert!(pages >= 2, "one object per page");
        // All-namespaces lists hold exactly the tenant's objects.
        let r = c.get("/api/v1/configmaps").await;
        let l = json(&r.body);
        let nss: BTreeSet<&str> = l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert!(nss.iter().all(|n| n.starts_with(t)), "{nss:?}");
        assert!(nss.contains(ns_of(t, 1).as_str()));
        // Its own Networks only: the one it made and, for namespaces without
        // `spec.network`, the default Network the network controller made for it.
        let r = c.get("/api/v1/networks").await;
        let l = json(&r.body);
        let items = l["items"].as_array().unwrap();
        assert!(
            items.iter().all(|n| n["spec"]["tenantID"] == *t),
            "{}",
            r.body
        );
        assert!(
            items
                .iter()
                .any(|n| n["metadata"]["name"] == format!("{t}-net")),
            "{}",
            r.body
        );
        // A watch from the list's resourceVersion sees the tenant's new namespace and not
        // the other's.
        let rv = json(&c.get("/api/v1/namespaces").await.body)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let watch = {
            let c = c.clone();
            let rv = rv.clone();
            tokio::spawn(async move {
                c.get(&format!(
                    "/api/v1/namespaces?watch=true&resourceVersion={rv}&timeoutSeconds=3"
                ))
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mine = format!("{t}-late");
        let theirs = format!("{}-late-x", other(t));
        assert_eq!(
            c.post("/api/v1/namespaces", &json!({"metadata": {"name": mine}}))
                .await
                .code,
            201
        );
        assert_eq!(
            user(other(t), 1)
                .post("/api/v1/namespaces", &json!({"metadata": {"name": theirs}}))
                .await
                .code,
            201
        );
        let w = watch.await.expect("watch");
        assert_eq!(w.code, 200);
        let evs: Vec<Value> = w.body.lines().filter(|l| !l.is_empty()).map(json).collect();
        assert!(
            evs.iter()
                .any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == mine.as_str()),
            "{}",
            w.body
        );
        assert!(!w.body.contains(&theirs), "{}", w.body);
    }
}

/// kubectl (a tenant user's token) and the Python client for the representative cases.
fn kubectl_and_python(srv: &Server) {
    let tok = token("acme", 1);
    let k = |args: &[&str]| {
        let mut a = vec!["--token", tok.as_str()];
        a.extend_from_slice(args);
        srv.kubectl_out("1.33", &a, None)
    };
    let o = k(&["get", "ns", "-o", "name"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("namespace/acme-ns1") && !out.contains("bolt"),
        "{out}"
    );
    let o = k(&["get", "configmaps", "-A", "-o", "name"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("configmap-acme-ns1") && !out.contains("bolt"),
        "{out}"
    );
    let o = k(&["get", "ns", "bolt-ns1"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = k(&["-n", "bolt-ns1", "get", "secrets"]);
    assert!(!o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("bolt-ns1"));
    let o = k(&[
        "label",
        "ns",
        "acme-ns1",
        "tenancy.h8s.io/tenant=bolt",
        "--overwrite",
    ]);
    assert!(!o.status.success(), "relabel must fail");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("field is immutable"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = k(&["delete", "clusterrole", "view"]);
    assert!(!o.status.success());

    // The Python client.
    let script = format!(
        r#"
import kubernetes.client as k
from kubernetes.client.exceptions import ApiException
c = k.Configuration()
c.host = "{url}"
c.ssl_ca_cert = "{ca}"
c.api_key = {{"authorization": "Bearer {tok}"}}
v1 = k.CoreV1Api(k.ApiClient(c))
names = sorted(n.metadata.name for n in v1.list_namespace().items)
assert all(n.startswith("acme") for n in names) and "acme-ns1" in names, names
cms = v1.list_config_map_for_all_namespaces().items
assert cms and all(m.metadata.namespace.startswith("acme") for m in cms)
for call in (lambda: v1.read_namespace("bolt-ns1"), lambda: v1.read_namespaced_secret("secret-bolt-ns1", "bolt-ns1"), lambda: v1.delete_namespace("bolt-ns2")):
    try:
        call()
        raise SystemExit("a foreign object was readable")
    except ApiException as e:
        assert e.status in (403, 404), e.status
        # Only a Status, never the object.
        assert '"kind":"Status"' in (e.body or "") and '"data"' not in (e.body or ""), e.body
print("ok")
"#,
        url = srv.url,
        ca = srv.data_dir().join("ca.crt").display(),
    );
    let o = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Polls `f` every 200 ms for up to `secs` seconds.
async fn until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The auth-controller: bindings per namespace, network and user, restored when deleted by
/// hand, removed with their owners; the seeds' workflow; a Tenant deleted with its content.
async fn auth_controller(srv: &Server) {
    let admin = Client::new(srv, &srv.token);
    let rb = |ns: &str, name: &str| {
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}")
    };
    // A tenant namespace gets its two RoleBindings.
    let a = admin.clone();
    until(60, "namespace-binding in acme-ns1", || {
        let a = a.clone();
        async move {
            let r = a.get(&rb("acme-ns1", "namespace-binding")).await;
            r.code == 200 && {
                let b = json(&r.body);
                b["roleRef"]["name"] == "admin" && b["subjects"][0]["name"] == "h8s:tenant:acme"
            }
        }
    })
    .await;
    let r = admin.get(&rb("acme-ns1", "default-sa-binding")).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(json(&r.body)["subjects"][0]["kind"], "ServiceAccount");
    // Deleted by hand, it comes back.
    let r = admin
        .send("DELETE", &rb("acme-ns1", "namespace-binding"), "", None)
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    until(30, "namespace-binding restored", || {
        let a = a.clone();
        async move { a.get(&rb("acme-ns1", "namespace-binding")).await.code == 200 }
    })
    .await;
    // A Network grants its tenant rights on it.
    until(30, "network:acme-net binding", || {
        let a = a.clone();
        async move {
            let r = a
                .get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/network:acme-net")
                .await;
            r.code == 200 && json(&r.body)["subjects"][0]["name"] == "h8s:tenant:acme"
        }
    })
    .await;

    // The seeds' workflow: a user creates a namespace, works in it, deletes it, and its
    // bindings are gone with it.
    let u = Client::new(srv, &token("acme", 2));
    let r = u
        .post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "acme-work"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    until(30, "acme-work bindings", || {
        let a = a.clone();
        async move { a.get(&rb("acme-work", "namespace-binding")).await.code == 200 }
    })
    .await;
    until(10, "acme-u2 may write in acme-work", || {
        let u = u.clone();
        async move { u.get("/api/v1/namespaces/acme-work/configmaps").await.code == 200 }
    })
    .await;
    let r = u
        .post(
            "/api/v1/namespaces/acme-work/configmaps",
            &json!({"metadata": {"name": "settings"}, "data": {"a": "b"}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = u
        .send("DELETE", "/api/v1/namespaces/acme-work", "", None)
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    until(60, "acme-work and its bindings gone", || {
        let a = a.clone();
        async move {
            a.get("/api/v1/namespaces/acme-work").await.code == 404
                && a.get(&rb("acme-work", "namespace-binding")).await.code == 404
        }
    })
    .await;

    // Users: a ClusterRoleBinding each; a deleted User loses every binding naming it.
    let r = admin
        .post("/apis/tenancy.h8s.io/v1/tenants", &json!({"apiVersion": "tenancy.h8s.io/v1", "kind": "Tenant", "metadata": {"name": "corp"}, "spec": {"displayName": "Corp"}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = admin
        .post("/apis/tenancy.h8s.io/v1/users", &json!({"apiVersion": "tenancy.h8s.io/v1", "kind": "User", "metadata": {"name": "carol"}, "spec": {"tenant": "corp", "displayName": "Carol", "email": "carol@example.com"}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let crb = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/carol-namespace-creater";
    until(30, "carol-namespace-creater", || {
        let a = a.clone();
        async move {
            let r = a.get(crb).await;
            r.code == 200 && json(&r.body)["roleRef"]["name"] == "namespace-creater"
        }
    })
    .await;
    let r = admin
        .get("/apis/rbac.authorization.k8s.io/v1/clusterroles/namespace-creater")
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = admin.send("DELETE", crb, "", None).await;
    assert_eq!(r.code, 200, "{}", r.body);
    until(30, "carol-namespace-creater restored", || {
        let a = a.clone();
        async move { a.get(crb).await.code == 200 }
    })
    .await;
    // A hand-made binding naming carol and someone else.
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/acme-ns1/rolebindings",
            &json!({"metadata": {"name": "shared"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "carol"}, {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dave"}]}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = admin
        .send("DELETE", "/apis/tenancy.h8s.io/v1/users/carol", "", None)
        .await;
    assert!(r.code == 200 || r.code == 202, "{}", r.body);
    until(30, "carol's bindings gone", || {
        let a = a.clone();
        async move {
            let shared = a.get(&rb("acme-ns1", "shared")).await;
            a.get(crb).await.code == 404
                && a.get("/apis/tenancy.h8s.io/v1/users/carol").await.code == 404
                && shared.code == 200
                && !shared.body.contains("carol")
                && shared.body.contains("dave")
        }
    })
    .await;

    // Deleting a Tenant deletes its namespaces, networks and volumes, then the Tenant.
    let c = Client::new(srv, &token("corp", 1));
    assert_eq!(
        c.post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "corp-ns"}})
        )
        .await
        .code,
        201
    );
    assert_eq!(
        c.post("/api/v1/networks", &network("corp-net", 30))
            .await
            .code,
        201
    );
    assert_eq!(
        c.post("/api/v1/persistentvolumes", &pv("corp-pv"))
            .await
            .code,
        201
    );
    let r = admin
        .post("/apis/tenancy.h8s.io/v1/users", &json!({"apiVersion": "tenancy.h8s.io/v1", "kind": "User", "metadata": {"name": "erin"}, "spec": {"tenant": "corp"}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    until(30, "corp's finalizer", || {
        let a = a.clone();
        async move {
            a.get("/apis/tenancy.h8s.io/v1/tenants/corp")
                .await
                .body
                .contains("tenancy.h8s.io/cleanup")
        }
    })
    .await;
    let r = admin
        .send("DELETE", "/apis/tenancy.h8s.io/v1/tenants/corp", "", None)
        .await;
    assert!(r.code == 200 || r.code == 202, "{}", r.body);
    until(90, "corp and its content gone", || {
        let a = a.clone();
        async move {
            a.get("/apis/tenancy.h8s.io/v1/tenants/corp").await.code == 404
                && a.get("/api/v1/namespaces/corp-ns").await.code == 404
                && a.get("/api/v1/networks/corp-net").await.code == 404
                && a.get("/api/v1/persistentvolumes/corp-pv").await.code == 404
                && a.get("/apis/tenancy.h8s.io/v1/users/erin").await.code == 404
        }
    })
    .await;
}
