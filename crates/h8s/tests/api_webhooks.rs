//! Dynamic admission against the real `h8s server`, driven with real kubectl 1.33 (and
//! 1.27 for one case): a webhook server written here (hyper + rustls on 127.0.0.1, its
//! own CA made with rcgen) that denies, mutates, stalls and records; validating and
//! mutating webhook configurations with rules, namespace and object selectors, CEL match
//! conditions, failure policies and timeouts; a `pods/status` rule; a
//! ValidatingAdmissionPolicy; and configurations the API refuses (422).

mod api_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_support::{eventually, json, Server};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json as j, Value};

const V: &str = "1.33";

/// The webhook server: its CA (PEM), port, and the reviews it received.
struct Hooks {
    ca_pem: String,
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    _rt: tokio::runtime::Runtime,
}

fn allow(uid: &str) -> Value {
    j!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}})
}

/// What each path answers.
async fn answer(path: &str, review: Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].as_str().unwrap_or("").to_string();
    let labels = req["object"]["metadata"]["labels"].clone();
    match path {
        "/deny" => {
            if labels["deny"] == "true" {
                j!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": uid, "allowed": false,
                        "status": {"code": 403, "reason": "Forbidden", "message": "labels say no"}}})
            } else {
                let mut a = allow(&uid);
                a["response"]["warnings"] = j!(["seen by the deny hook"]);
                a
            }
        }
        "/mutate" => {
            let patch = if labels.is_object() {
                j!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                j!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            let mut a = allow(&uid);
            a["response"]["patchType"] = j!("JSONPatch");
            a["response"]["patch"] = j!(base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&patch).unwrap()));
            a
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            allow(&uid)
        }
        "/status" => j!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": false,
                "status": {"message": "status is frozen"}}}),
        "/baduid" => allow("not-the-uid"),
        // ConversionReview: conv.example.com v1 `spec.replicas` <-> v2 `spec.count`.
        "/convert" => {
            let desired = req["desiredAPIVersion"].as_str().unwrap_or("").to_string();
            let objs: Vec<Value> = req["objects"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut o| {
                    let spec = o["spec"].as_object().cloned().unwrap_or_default();
                    let n = spec.get("replicas").or(spec.get("count")).cloned();
                    o["spec"] = match (desired.ends_with("/v2"), n) {
                        (true, Some(n)) => j!({"count": n}),
                        (false, Some(n)) => j!({"replicas": n}),
                        _ => j!({}),
                    };
                    o["apiVersion"] = j!(desired);
                    o["metadata"]["labels"]["converted-by"] = j!("hook");
                    o["metadata"]["name"] = j!("renamed-by-the-hook");
                    o
                })
                .collect();
            j!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": uid, "convertedObjects": objs, "result": {"status": "Success"}}})
        }
        "/convert-fail" => j!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "response": {"uid": uid, "result": {"status": "Failure", "message": "no way"}}}),
        _ => allow(&uid),
    }
}

fn start_hooks() -> Hooks {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A CA of our own and a serving certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or("").to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let mut rec = review.clone();
                            rec["path"] = j!(path);
                            rec["query"] = j!(query);
                            seen.lock().unwrap().push(rec);
                            let out = answer(&path, review).await;
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(serde_json::to_vec(&out).unwrap())))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Hooks {
        ca_pem: ca_cert.pem(),
        port,
        seen,
        _rt: rt,
    }
}

impl Hooks {
    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The reviews received on `path`.
    fn seen(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == path)
            .cloned()
            .collect()
    }
}

/// A webhook entry (JSON) calling `path` for `resources` (CREATE, UPDATE).
fn hook(h: &Hooks, name: &str, path: &str, resources: &[&str], extra: Value) -> Value {
    let mut w = j!({
        "name": name,
        "clientConfig": {"url": h.url(path), "caBundle": h.ca_bundle()},
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
            "apiVersions": ["v1"], "resources": resources}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(w), Some(e)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            w.insert(k.clone(), v.clone());
        }
    }
    w
}

fn config(kind: &str, name: &str, hooks: Vec<Value>) -> String {
    j!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": hooks})
    .to_string()
}

fn cm(ns: &str, name: &str, labels: Value) -> String {
    j!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": {"a": "1"}})
    .to_string()
}

#[test]
fn webhooks_and_policies_with_kubectl() {
    let s = Server::start();
    let h = start_hooks();
    let k = |args: &[&str]| s.kubectl(V, args);
    let apply = |input: &str| s.kubectl_out(V, &["apply", "-f", "-"], Some(input));
    let ok = |input: &str| {
        let o = apply(input);
        assert!(
            o.status.success(),
            "apply failed: {}\n{input}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let fails = |input: &str| s.kubectl_fails(V, &["apply", "-f", "-"], Some(input));

    // ---- discovery, explain, columns ----
    let ar = k(&["api-resources", "--api-group=admissionregistration.k8s.io"]);
    for r in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        assert!(ar.contains(r), "api-resources lacks {r}:\n{ar}");
    }
    let ex = k(&[
        "explain",
        "validatingwebhookconfiguration.webhooks.sideEffects",
    ]);
    assert!(ex.contains("FIELD: sideEffects <string>"), "{ex}");

    // ---- configurations the API refuses (422, Kubernetes' field errors) ----
    let bad = |extra: Value| {
        config(
            "ValidatingWebhookConfiguration",
            "bad",
            vec![hook(&h, "bad.h8s.test", "/", &["configmaps"], extra)],
        )
    };
    for (extra, want) in [
        (
            j!({"clientConfig": {"url": "http://127.0.0.1:1/x"}}),
            r#"webhooks[0].clientConfig.url: Unsupported value: "http": supported values: "https""#,
        ),
        (
            j!({"clientConfig": {"url": "https://127.0.0.1:1/x",
                "service": {"name": "s", "namespace": "default"}}}),
            "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
        ),
        (
            j!({"sideEffects": null}),
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        ),
        (
            j!({"sideEffects": "Some"}),
            r#"webhooks[0].sideEffects: Unsupported value: "Some""#,
        ),
        (
            j!({"timeoutSeconds": 31}),
            "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
        ),
        (
            j!({"admissionReviewVersions": ["v1beta1"]}),
            "webhooks[0].admissionReviewVersions: Invalid value",
        ),
        (
            j!({"name": "deny"}),
            "should be a domain with at least three segments separated by dots",
        ),
        (
            j!({"matchConditions": [{"name": "c", "expression": "object.metadata.name =="}]}),
            "webhooks[0].matchConditions[0].expression: Invalid value",
        ),
        (
            j!({"failurePolicy": "Sometimes"}),
            r#"webhooks[0].failurePolicy: Unsupported value: "Sometimes""#,
        ),
    ] {
        let err = fails(&bad(extra.clone()));
        assert!(err.contains(want), "{extra}: {err}");
        assert!(err.contains("is invalid"), "{err}");
    }
    let err = fails(&config(
        "MutatingWebhookConfiguration",
        "bad",
        vec![hook(
            &h,
            "bad.h8s.test",
            "/",
            &["configmaps"],
            j!({"reinvocationPolicy": "Always"}),
        )],
    ));
    assert!(
        err.contains(r#"webhooks[0].reinvocationPolicy: Unsupported value: "Always""#),
        "{err}"
    );

    // ---- namespaces the selectors pick ----
    for (ns, label) in [("wh-on", "on"), ("wh-off", "off")] {
        ok(&j!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"webhooks": label}}})
        .to_string());
    }

    // ---- a validating webhook: deny, warnings, namespaceSelector; defaults ----
    ok(&config(
        "ValidatingWebhookConfiguration",
        "deny",
        vec![hook(
            &h,
            "deny.h8s.test",
            "/deny",
            &["configmaps"],
            j!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}),
        )],
    ));
    let got = json(&k(&[
        "get",
        "validatingwebhookconfiguration",
        "deny",
        "-o",
        "json",
    ]));
    let w = &got["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail", "{w}");
    assert_eq!(w["matchPolicy"], "Equivalent");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(w["objectSelector"], j!({}));
    assert_eq!(w["rules"][0]["scope"], "*");
    let table = k(&["get", "validatingwebhookconfigurations"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["NAME", "WEBHOOKS", "AGE"],
        "{table}"
    );
    let err = fails(&cm("wh-on", "no", j!({"deny": "true"})));
    assert!(
        err.contains(r#"admission webhook "deny.h8s.test" denied the request: labels say no"#),
        "{err}"
    );
    let warned = ok(&cm("wh-on", "yes", j!({})));
    assert!(
        warned.contains("Warning: seen by the deny hook"),
        "{warned}"
    );
    // Not selected: the other namespace.
    ok(&cm("wh-off", "no", j!({"deny": "true"})));
    // kubectl 1.27 meets the same denial.
    let err = s.kubectl_fails(
        "1.27",
        &["apply", "-f", "-"],
        Some(&cm("wh-on", "no27", j!({"deny": "true"}))),
    );
    assert!(
        err.contains(r#"denied the request: labels say no"#),
        "{err}"
    );
    // What the webhook was sent.
    let reviews = h.seen("/deny");
    let r = reviews
        .iter()
        .find(|r| r["request"]["name"] == "yes")
        .expect("a review of wh-on/yes");
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    let q = &r["request"];
    assert!(!q["uid"].as_str().unwrap().is_empty());
    assert_eq!(
        q["kind"],
        j!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        q["resource"],
        j!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(q["namespace"], "wh-on");
    assert_eq!(q["operation"], "CREATE");
    assert_eq!(q["dryRun"], false);
    assert_eq!(q["options"]["kind"], "CreateOptions");
    assert_eq!(q["object"]["data"]["a"], "1");
    assert!(q["userInfo"]["username"].as_str().is_some(), "{q}");
    assert_eq!(r["query"], "timeout=10s");
    assert!(
        h.seen("/deny")
            .iter()
            .all(|r| r["request"]["namespace"] != "wh-off"),
        "namespaceSelector let wh-off through"
    );
    // An update carries the old object.
    k(&["label", "configmap", "-n", "wh-on", "yes", "x=1"]);
    let upd = h
        .seen("/deny")
        .into_iter()
        .find(|r| r["request"]["operation"] == "UPDATE")
        .expect("an UPDATE review");
    assert_eq!(upd["request"]["oldObject"]["metadata"]["name"], "yes");
    assert_eq!(upd["request"]["object"]["metadata"]["labels"]["x"], "1");
    assert_eq!(upd["request"]["options"]["kind"], "UpdateOptions");

    // ---- a mutating webhook with an objectSelector (and a match condition) ----
    ok(&config(
        "MutatingWebhookConfiguration",
        "mutate",
        vec![hook(
            &h,
            "mutate.h8s.test",
            "/mutate",
            &["configmaps"],
            j!({"objectSelector": {"matchLabels": {"mutate": "please"}},
                "matchConditions": [{"name": "not-skipped",
                    "expression": "!('skip' in object.metadata.labels)"}]}),
        )],
    ));
    ok(&cm("wh-off", "m1", j!({"mutate": "please"})));
    let m1 = json(&k(&["get", "cm", "-n", "wh-off", "m1", "-o", "json"]));
    assert_eq!(m1["metadata"]["labels"]["mutated"], "yes", "{m1}");
    ok(&cm("wh-off", "m2", j!({"other": "x"})));
    let m2 = json(&k(&["get", "cm", "-n", "wh-off", "m2", "-o", "json"]));
    assert!(m2["metadata"]["labels"].get("mutated").is_none(), "{m2}");
    ok(&cm("wh-off", "m3", j!({"mutate": "please", "skip": "1"})));
    let m3 = json(&k(&["get", "cm", "-n", "wh-off", "m3", "-o", "json"]));
    assert!(m3["metadata"]["labels"].get("mutated").is_none(), "{m3}");
    // kubectl 1.27 creates through the mutating webhook too.
    let o = s.kubectl_out(
        "1.27",
        &["apply", "-f", "-"],
        Some(&cm("wh-off", "m27", j!({"mutate": "please"}))),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m27 = json(&k(&["get", "cm", "-n", "wh-off", "m27", "-o", "json"]));
    assert_eq!(m27["metadata"]["labels"]["mutated"], "yes");
    // Mutation happens before validation: the deny webhook saw the mutated object.
    ok(&cm("wh-on", "m-on", j!({"mutate": "please"})));
    let seen_mutated = h.seen("/deny").iter().any(|r| {
        r["request"]["name"] == "m-on"
            && r["request"]["object"]["metadata"]["labels"]["mutated"] == "yes"
    });
    assert!(
        seen_mutated,
        "the validating webhook saw the unmutated object"
    );

    // ---- a webhook that does not answer in time ----
    ok(&config(
        "ValidatingWebhookConfiguration",
        "slow",
        vec![
            hook(
                &h,
                "slow-fail.h8s.test",
                "/slow",
                &["secrets"],
                j!({"timeoutSeconds": 1,
                    "objectSelector": {"matchLabels": {"slow": "fail"}}}),
            ),
            hook(
                &h,
                "slow-ignore.h8s.test",
                "/slow",
                &["secrets"],
                j!({"timeoutSeconds": 1, "failurePolicy": "Ignore",
                    "objectSelector": {"matchLabels": {"slow": "ignore"}}}),
            ),
        ],
    ));
    let secret = |name: &str, slow: &str| {
        j!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default", "labels": {"slow": slow}},
            "stringData": {"k": "v"}})
        .to_string()
    };
    let t0 = Instant::now();
    let err = fails(&secret("s1", "fail"));
    let took = t0.elapsed();
    assert!(
        err.contains(r#"Internal error occurred: failed calling webhook "slow-fail.h8s.test""#)
            && err.contains("context deadline exceeded"),
        "{err}"
    );
    // Bounded by the webhook's 1 s timeout, not the webhook's 5 s stall.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let t0 = Instant::now();
    ok(&secret("s2", "ignore"));
    assert!(t0.elapsed() < Duration::from_secs(4));
    k(&["get", "secret", "s2"]);

    // ---- a service reference: resolved through the Service's EndpointSlices (pods are
    // reachable only on the system Network: `services::webhook_pod_on_the_system_network`);
    // a missing Service fails the call ----
    ok(&config(
        "ValidatingWebhookConfiguration",
        "svc",
        vec![j!({
            "name": "svc.h8s.test",
            "clientConfig": {"service": {"name": "hook", "namespace": "default", "path": "/v"},
                "caBundle": h.ca_bundle()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["serviceaccounts"]}],
            "objectSelector": {"matchLabels": {"svc": "yes"}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"]})],
    ));
    let got = json(&k(&[
        "get",
        "validatingwebhookconfiguration",
        "svc",
        "-o",
        "json",
    ]));
    assert_eq!(got["webhooks"][0]["clientConfig"]["service"]["port"], 443);
    let err = fails(
        &j!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "sa1", "namespace": "default", "labels": {"svc": "yes"}}})
        .to_string(),
    );
    assert!(
        err.contains(r#"failed calling webhook "svc.h8s.test""#)
            && err.contains(r#"service/hook in "default" is not present"#),
        "{err}"
    );

    // ---- a webhook answering with the wrong uid fails closed ----
    ok(&config(
        "ValidatingWebhookConfiguration",
        "baduid",
        vec![hook(
            &h,
            "baduid.h8s.test",
            "/baduid",
            &["services"],
            j!({"objectSelector": {"matchLabels": {"uid": "bad"}}}),
        )],
    ));
    let err = fails(
        &j!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc1", "namespace": "default", "labels": {"uid": "bad"}},
            "spec": {"ports": [{"port": 80}]}})
        .to_string(),
    );
    assert!(err.contains("expected response.uid="), "{err}");

    // ---- a subresource rule: pods/status ----
    ok(&config(
        "ValidatingWebhookConfiguration",
        "status",
        vec![hook(
            &h,
            "status.h8s.test",
            "/status",
            &["pods/status"],
            // Only people: the scheduler's own status writes pass.
            j!({"namespaceSelector": {"matchLabels": {"webhooks": "on"}},
                "matchConditions": [{"name": "people-only",
                    "expression": "!request.userInfo.username.startsWith('system:')"}]}),
        )],
    ));
    ok(&j!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "wh-on"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    .to_string());
    let err = s.kubectl_fails(
        V,
        &[
            "patch",
            "pod",
            "p",
            "-n",
            "wh-on",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"message":"hello"}}"#,
        ],
        None,
    );
    assert!(
        err.contains(r#"admission webhook "status.h8s.test" denied the request: status is frozen"#),
        "{err}"
    );
    // The pod itself (no subresource) is not subject to the rule.
    k(&["label", "pod", "p", "-n", "wh-on", "x=1"]);
    let st = h.seen("/status");
    assert!(st.iter().all(|r| r["request"]["subResource"] == "status"));

    // ---- deleting a configuration takes effect for the next request ----
    k(&["delete", "validatingwebhookconfiguration", "deny"]);
    ok(&cm("wh-on", "after", j!({"deny": "true"})));

    // ---- ValidatingAdmissionPolicy ----
    let policy = j!({"apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "max-keys"},
    "spec": {
        "matchConstraints": {"resourceRules": [{"operations": ["CREATE", "UPDATE"],
            "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]},
        "variables": [{"name": "keys", "expression": "has(object.data) ? object.data.size() : 0"}],
        "validations": [
            {"expression": "variables.keys <= 2", "message": "too many keys",
             "reason": "Forbidden"},
            {"expression": "!object.metadata.name.startsWith('bad-')",
             "messageExpression": "'name ' + object.metadata.name + ' is not allowed'"}
        ]}});
    ok(&policy.to_string());
    ok(&j!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "max-keys-binding"},
        "spec": {"policyName": "max-keys", "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}}})
    .to_string());
    let many = j!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "many", "namespace": "wh-on"},
        "data": {"a": "1", "b": "2", "c": "3"}})
    .to_string();
    let err = fails(&many);
    assert!(
        err.contains("ValidatingAdmissionPolicy 'max-keys' with binding 'max-keys-binding' denied request: too many keys"),
        "{err}"
    );
    let err = fails(&cm("wh-on", "bad-name", j!({})));
    assert!(err.contains("name bad-name is not allowed"), "{err}");
    ok(&cm("wh-off", "bad-name", j!({})));
    let vap = k(&["get", "validatingadmissionpolicies"]);
    assert!(
        vap.contains("max-keys") && vap.contains("VALIDATIONS"),
        "{vap}"
    );
    // Warn instead of Deny.
    ok(&j!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "max-keys-binding"},
        "spec": {"policyName": "max-keys", "validationActions": ["Warn"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"webhooks": "on"}}}}})
    .to_string());
    let warned = ok(&many);
    assert!(
        warned.contains("Validation failed for ValidatingAdmissionPolicy 'max-keys' with binding 'max-keys-binding': too many keys"),
        "{warned}"
    );
    // A policy whose CEL does not compile: 422.
    let mut broken = policy.clone();
    broken["metadata"]["name"] = j!("broken");
    broken["spec"]["validations"][0]["expression"] = j!("object.data.size( <");
    let err = fails(&broken.to_string());
    assert!(
        err.contains("spec.validations[0].expression: Invalid value")
            && err.contains("compilation failed"),
        "{err}"
    );
    let err = fails(
        &j!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "b2"},
            "spec": {"policyName": "max-keys", "validationActions": ["Deny", "Warn"]}})
        .to_string(),
    );
    assert!(err.contains("must not contain both Deny and Warn"), "{err}");

    // ---- APIService: local ones for every served group version, a remote one ----
    let table = k(&["get", "apiservices"]);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "SERVICE", "AVAILABLE", "AGE"],
        "{table}"
    );
    for name in [
        "v1.",
        "v1.apps",
        "v1.admissionregistration.k8s.io",
        "v1beta1.metrics.k8s.io",
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no APIService {name}:\n{table}"));
        assert!(line.contains("Local") && line.contains("True"), "{line}");
    }
    let ex = k(&["explain", "apiservice.spec.groupPriorityMinimum"]);
    assert!(ex.contains("FIELD: groupPriorityMinimum <integer>"), "{ex}");
    ok(
        &j!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1alpha1.example.h8s.io"},
        "spec": {"group": "example.h8s.io", "version": "v1alpha1",
            "service": {"namespace": "default", "name": "ext"},
            "groupPriorityMinimum": 1000, "versionPriority": 15,
            "insecureSkipTLSVerify": true}})
        .to_string(),
    );
    // Checked by the aggregator at once: no such Service (kube-aggregator's reason).
    let mut got = Value::Null;
    assert!(
        eventually(20, || {
            got = json(&k(&[
                "get",
                "apiservice",
                "v1alpha1.example.h8s.io",
                "-o",
                "json",
            ]));
            got["status"]["conditions"][0]["reason"] == "ServiceNotFound"
        }),
        "{got}"
    );
    assert_eq!(got["spec"]["service"]["port"], 443);
    let cond = &got["status"]["conditions"][0];
    assert_eq!(cond["type"], "Available");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["message"], "service/ext in \"default\" is not present");
    let err = fails(
        &j!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "wrong"},
            "spec": {"group": "example.h8s.io", "version": "v1", "groupPriorityMinimum": 0,
                "versionPriority": 15}})
        .to_string(),
    );
    assert!(
        err.contains("metadata.name: Invalid value: \"wrong\"")
            && err.contains("spec.groupPriorityMinimum: Invalid value: 0"),
        "{err}"
    );
}

// ---- API aggregation ----

/// What the aggregated server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    user: String,
    groups: Vec<String>,
    authorization: bool,
    /// The client certificate was the server's front-proxy client certificate.
    front_proxy_cert: bool,
}

/// An aggregated API server for `wardle.example.com/v1alpha1` (kind Flunder, namespaced):
/// TLS as `wardle-api.kube-system.svc` with its own CA, requiring a client certificate of
/// the front-proxy CA (`front_proxy_ca` PEM) as aggregated servers do.
struct Wardle {
    ca_pem: String,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

fn wardle_answer(method: &str, path: &str, accept: &str, body: &[u8]) -> (u16, Value) {
    let gv = "/apis/wardle.example.com/v1alpha1";
    let flunder = |ns: &str, name: &str| {
        j!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Flunder",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"reference": "from-the-aggregated-server"}})
    };
    // Its OpenAPI, v3 and v2, as aggregated servers publish theirs.
    let schema = j!({"type": "object", "description": "Flunder is a test kind of the wardle server.",
        "x-kubernetes-group-version-kind": [{"group": "wardle.example.com", "version": "v1alpha1", "kind": "Flunder"}],
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "description": "What a flunder is.",
                "properties": {"reference": {"type": "string",
                    "description": "The flunder's reference, served by the aggregated server."}}}}});
    // A read of one flunder, as kube's documents describe it (kubectl explain finds the
    // kind of a resource from its paths' `x-kubernetes-group-version-kind`).
    let one = "/apis/wardle.example.com/v1alpha1/namespaces/{namespace}/flunders/{name}";
    let gvk = j!({"group": "wardle.example.com", "version": "v1alpha1", "kind": "Flunder"});
    let op = |response: Value| {
        j!({"get": {"operationId": "readWardleFlunder", "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": gvk, "responses": {"200": response}}})
    };
    match (method, path) {
        ("GET", "/openapi/v3/apis/wardle.example.com/v1alpha1") => {
            let r = j!({"description": "OK", "content": {"application/json": {"schema":
                {"$ref": "#/components/schemas/com.example.wardle.v1alpha1.Flunder"}}}});
            return (
                200,
                j!({"openapi": "3.0.0", "info": {"title": "wardle", "version": "v1alpha1"},
                    "paths": {one: op(r)},
                    "components": {"schemas": {"com.example.wardle.v1alpha1.Flunder": schema}}}),
            );
        }
        ("GET", "/openapi/v2") => {
            let r = j!({"description": "OK",
                "schema": {"$ref": "#/definitions/com.example.wardle.v1alpha1.Flunder"}});
            return (
                200,
                j!({"swagger": "2.0", "info": {"title": "wardle", "version": "v1alpha1"},
                    "paths": {one: op(r),
                        "/apis/other.example.com/v1/things": {"get": {"operationId": "notWardles",
                            "responses": {"200": {"description": "OK"}}}}},
                    "definitions": {"com.example.wardle.v1alpha1.Flunder": schema}}),
            );
        }
        _ => {}
    }
    let rest = path.strip_prefix(gv).unwrap_or("/not-wardle");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", []) => (
            200,
            j!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "wardle.example.com/v1alpha1",
                "resources": [
                    {"name": "flunders", "singularName": "flunder", "namespaced": true,
                     "kind": "Flunder", "verbs": ["create", "get", "list"], "shortNames": ["fl"]},
                    {"name": "flunders/status", "singularName": "", "namespaced": true,
                     "kind": "Flunder", "verbs": ["get"]}]}),
        ),
        ("GET", ["namespaces", ns, "flunders"]) if accept.contains("as=Table") => (
            200,
            j!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
                    {"name": "Reference", "type": "string", "format": "", "description": "", "priority": 0}],
                "rows": [{"cells": ["f1", "from-the-aggregated-server"],
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": {"name": "f1", "namespace": ns}}}]}),
        ),
        ("GET", ["namespaces", ns, "flunders"]) => (
            200,
            j!({"kind": "FlunderList", "apiVersion": "wardle.example.com/v1alpha1",
                "metadata": {}, "items": [flunder(ns, "f1")]}),
        ),
        ("GET", ["namespaces", ns, "flunders", name]) if *name == "f1" => (200, flunder(ns, name)),
        ("POST", ["namespaces", _, "flunders"]) => {
            // Echoes what it was sent: the request body went through.
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            (201, v)
        }
        _ => (
            404,
            j!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource",
                "reason": "NotFound", "code": 404}),
        ),
    }
}

fn start_wardle(front_proxy_ca: &str, front_proxy_cert: &str) -> Wardle {
    use rustls::pki_types::pem::PemObject;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wardle test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec!["wardle-api.kube-system.svc".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(front_proxy_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let fp_der = rustls::pki_types::CertificateDer::from_pem_slice(front_proxy_cert.as_bytes())
        .unwrap()
        .to_vec();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            let fp_der = fp_der.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Requests served on this connection: a request whose query says `flaky`
                // that comes on a reused connection is read and then the connection is
                // closed without an answer (a server closing an idle connection just as a
                // request went out).
                let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let front_proxy_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .is_some_and(|c| c.as_ref() == fp_der.as_slice());
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        let reused = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
                        let flaky = req.uri().query().is_some_and(|q| q.contains("flaky"));
                        async move {
                            let h = req.headers();
                            let hv = |k: &str| {
                                h.get_all(k)
                                    .iter()
                                    .map(|v| v.to_str().unwrap_or("").to_string())
                                    .collect::<Vec<_>>()
                            };
                            let rec = Seen {
                                method: req.method().to_string(),
                                path: req.uri().path().to_string(),
                                user: hv("x-remote-user").join(","),
                                groups: hv("x-remote-group"),
                                authorization: h.contains_key("authorization"),
                                front_proxy_cert,
                            };
                            let accept = hv("accept").join(",");
                            let method = rec.method.clone();
                            let path = rec.path.clone();
                            seen.lock().unwrap().push(rec);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map_err(std::io::Error::other)?
                                .to_bytes();
                            if flaky && reused {
                                return Err(std::io::Error::other("closing without an answer"));
                            }
                            let (code, out) = wardle_answer(&method, &path, &accept, &body);
                            Ok::<_, std::io::Error>(
                                http::Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(serde_json::to_vec(&out).unwrap())))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Wardle {
        ca_pem: ca_cert.pem(),
        port,
        seen,
        _rt: rt,
    }
}

impl Wardle {
    fn seen_on(&self, path_part: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.contains(path_part))
            .cloned()
            .collect()
    }
}

fn apiservice(version: &str, ca_pem: &str) -> String {
    j!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{version}.wardle.example.com")},
        "spec": {"group": "wardle.example.com", "version": version,
            "service": {"namespace": "kube-system", "name": "wardle-api", "port": 443},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            "groupPriorityMinimum": 1000, "versionPriority": 15}})
    .to_string()
}

#[test]
fn aggregated_api_with_kubectl() {
    let s = Server::start_with(
        tempfile::tempdir().unwrap(),
        &["--apiservice-check-interval".as_ref(), "1s".as_ref()],
    );
    let k = |args: &[&str]| s.kubectl(V, args);
    let apply = |input: &str| s.kubectl_stdin(V, &["apply", "-f", "-"], Some(input));
    let read = |f: &str| std::fs::read_to_string(s.data_dir().join(f)).unwrap();
    let fp_ca = read("front-proxy-ca.crt");
    let w = start_wardle(&fp_ca, &read("front-proxy-client.crt"));

    // The requestheader settings aggregated servers read, with the front-proxy CA
    // (not the cluster CA).
    let cm = json(&k(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "json",
    ]));
    assert!(cm["data"]["requestheader-client-ca-file"]
        .as_str()
        .unwrap()
        .contains(fp_ca.trim()));
    assert_eq!(
        cm["data"]["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
    assert_eq!(
        cm["data"]["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    assert!(!fp_ca.contains(read("ca.crt").trim()));

    // A selector-less Service whose EndpointSlice points at the server on this host.
    apply(
        &j!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "wardle-api", "namespace": "kube-system"},
            "spec": {"ports": [{"port": 443, "targetPort": w.port, "protocol": "TCP"}]}})
        .to_string(),
    );
    // Registered before its endpoints exist: not available, kube-aggregator's reason.
    apply(&apiservice("v1alpha1", &w.ca_pem));
    let cond = |name: &str| {
        let o = s.kubectl_out(
            V,
            &[
                "get",
                "apiservice",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Available\")]}",
            ],
            None,
        );
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        if t.trim().is_empty() {
            Value::Null
        } else {
            json(&t)
        }
    };
    assert!(
        eventually(30, || cond("v1alpha1.wardle.example.com")["reason"]
            == "EndpointsNotFound"),
        "{}",
        cond("v1alpha1.wardle.example.com")
    );
    let (code, body) = s.curl(
        "GET",
        "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
        None,
        None,
    );
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["reason"], "ServiceUnavailable", "{body}");
    apply(
        &j!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "wardle-api-1", "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "wardle-api"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "", "port": w.port, "protocol": "TCP"}]})
        .to_string(),
    );
    k(&[
        "wait",
        "--for=condition=Available",
        "apiservice/v1alpha1.wardle.example.com",
        "--timeout=60s",
    ]);
    let c = cond("v1alpha1.wardle.example.com");
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (Some("Passed"), Some("all checks passed"))
    );
    // The check came with the front-proxy certificate.
    let checks = w.seen_on("/apis/wardle.example.com/v1alpha1");
    assert!(checks.iter().all(|c| c.front_proxy_cert), "{checks:?}");

    // Discovery (aggregated in 1.33, legacy in 1.27) lists the aggregated resource.
    for ver in ["1.33", "1.27"] {
        let ar = s.kubectl(ver, &["api-resources", "--api-group=wardle.example.com"]);
        assert!(
            ar.contains("flunders") && ar.contains("Flunder") && ar.contains("fl "),
            "{ver}: {ar}"
        );
    }
    let groups = json(&s.curl("GET", "/apis", None, None).1);
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "wardle.example.com"
            && g["preferredVersion"]["groupVersion"] == "wardle.example.com/v1alpha1"));

    // Its OpenAPI is published with this server's: v3 listed in the index and served
    // (kubectl explain reads it), v2 merged (only the group version's paths).
    assert!(
        eventually(30, || s
            .curl("GET", "/openapi/v3", None, None)
            .1
            .contains("apis/wardle.example.com/v1alpha1")),
        "the v3 index lists the aggregated group version"
    );
    let explained = k(&["explain", "flunders.spec"]);
    assert!(
        explained.contains("What a flunder is.")
            && explained.contains("The flunder's reference, served by the aggregated server."),
        "{explained}"
    );
    let v2 = json(&s.curl("GET", "/openapi/v2", None, None).1);
    assert!(v2["definitions"]["com.example.wardle.v1alpha1.Flunder"].is_object());
    assert!(
        v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object(),
        "built-ins stay"
    );
    assert!(v2["paths"]
        ["/apis/wardle.example.com/v1alpha1/namespaces/{namespace}/flunders/{name}"]
        .is_object());
    assert!(
        v2["paths"]["/apis/other.example.com/v1/things"].is_null(),
        "only its own group version"
    );
    // The protobuf v2 document too: kubectl's v2 explain reads it.
    let explained = s.kubectl(
        "1.27",
        &[
            "explain",
            "flunders.spec.reference",
            "--output=plaintext-openapiv2",
        ],
    );
    assert!(
        explained.contains("The flunder's reference, served by the aggregated server."),
        "{explained}"
    );

    // kubectl get/create through the proxy, as the caller.
    let out = k(&["get", "flunders", "-n", "default"]);
    assert!(
        out.contains("f1") && out.contains("from-the-aggregated-server"),
        "{out}"
    );
    let f1 = json(&k(&["get", "fl", "f1", "-n", "default", "-o", "json"]));
    assert_eq!(f1["kind"], "Flunder");
    let created = json(
        &s.kubectl_stdin(
            V,
            &["create", "-f", "-", "-o", "json"],
            Some(
                &j!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Flunder",
                "metadata": {"name": "f2", "namespace": "default"}, "spec": {"reference": "sent"}})
                .to_string(),
            ),
        ),
    );
    assert_eq!(created["spec"]["reference"], "sent");
    let whoami = k(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    let gets = w.seen_on("/namespaces/default/flunders");
    assert!(gets.len() >= 3, "{gets:?}");
    for g in &gets {
        assert_eq!(g.user, whoami, "{g:?}");
        assert!(
            g.groups.iter().any(|x| x == "system:authenticated"),
            "{g:?}"
        );
        assert!(
            !g.authorization,
            "the caller's credentials were passed on: {g:?}"
        );
        assert!(g.front_proxy_cert, "{g:?}");
    }
    assert!(gets.iter().any(|g| g.method == "POST"));

    // A GET that a kept connection lost after it was sent is replayed once on a new
    // connection (as Go's transport does); a POST is not: 503.
    let list = "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders";
    let flaky = |m: &str| {
        w.seen_on("/namespaces/default/flunders")
            .iter()
            .filter(|g| g.method == m)
            .count()
    };
    let (gets, posts) = (flaky("GET"), flaky("POST"));
    let (code, _) = s.curl("GET", list, None, None);
    assert_eq!(code, 200);
    let (code, body) = s.curl("GET", &format!("{list}?labelSelector=flaky"), None, None);
    assert_eq!(code, 200, "replayed: {body}");
    assert_eq!(flaky("GET"), gets + 3, "sent, lost, sent again");
    let (code, body) = s.curl(
        "POST",
        &format!("{list}?fieldManager=flaky"),
        Some("application/json"),
        Some(br#"{"apiVersion":"wardle.example.com/v1alpha1","kind":"Flunder","metadata":{"name":"f3"}}"#),
    );
    assert_eq!(code, 503, "not replayed: {body}");
    assert_eq!(flaky("POST"), posts + 1, "a POST is sent once");

    // RBAC first: a ServiceAccount without a role is refused here, never proxied.
    let token = k(&["create", "token", "default", "-n", "default"]);
    let token = token.trim();
    let before = w.seen_on("/namespaces/default/flunders").len();
    let (code, body) = s.curl_with(
        "GET",
        "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
        None,
        None,
        Some(token),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"flunders.wardle.example.com is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"flunders\" in API group \"wardle.example.com\" in the namespace \"default\""#),
        "{body}"
    );
    assert_eq!(w.seen_on("/namespaces/default/flunders").len(), before);
    k(&[
        "create",
        "role",
        "flunder-reader",
        "-n",
        "default",
        "--verb=get,list",
        "--resource=flunders.wardle.example.com",
    ]);
    k(&[
        "create",
        "rolebinding",
        "flunder-reader",
        "-n",
        "default",
        "--role=flunder-reader",
        "--serviceaccount=default:default",
    ]);
    let mut last = (0, String::new());
    assert!(
        eventually(20, || {
            last = s.curl_with(
                "GET",
                "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders/f1",
                None,
                None,
                Some(token),
            );
            last.0 == 200
        }),
        "{last:?}"
    );
    let seen = w.seen_on("/namespaces/default/flunders/f1");
    assert_eq!(
        seen.last().unwrap().user,
        "system:serviceaccount:default:default"
    );
    // The role is in one namespace: another one stays closed.
    let (code, _) = s.curl_with(
        "GET",
        "/apis/wardle.example.com/v1alpha1/namespaces/kube-system/flunders",
        None,
        None,
        Some(token),
    );
    assert_eq!(code, 403);

    // A caBundle that does not sign the server's certificate: not available, never used.
    apply(&apiservice("v1beta1", &read("ca.crt")));
    assert!(
        eventually(30, || cond("v1beta1.wardle.example.com")["reason"]
            == "FailedDiscoveryCheck"),
        "{}",
        cond("v1beta1.wardle.example.com")
    );
    let (code, _) = s.curl(
        "GET",
        "/apis/wardle.example.com/v1beta1/namespaces/default/flunders",
        None,
        None,
    );
    assert_eq!(code, 503);

    // The endpoints go: the APIService becomes unavailable and requests answer 503.
    k(&[
        "delete",
        "endpointslice",
        "-n",
        "kube-system",
        "wardle-api-1",
    ]);
    assert!(
        eventually(30, || cond("v1alpha1.wardle.example.com")["status"]
            == "False"),
        "{}",
        cond("v1alpha1.wardle.example.com")
    );
    let (code, body) = s.curl(
        "GET",
        "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders",
        None,
        None,
    );
    assert_eq!(code, 503, "{body}");
    // Deleted: the group leaves discovery.
    k(&[
        "delete",
        "apiservice",
        "v1alpha1.wardle.example.com",
        "v1beta1.wardle.example.com",
    ]);
    assert!(eventually(20, || !s
        .curl("GET", "/apis", None, None)
        .1
        .contains("wardle.example.com")));
    let (_, index) = s.curl("GET", "/openapi/v3", None, None);
    assert!(!index.contains("wardle.example.com"), "{index}");
    let (_, v2) = s.curl("GET", "/openapi/v2", None, None);
    assert!(!v2.contains("com.example.wardle.v1alpha1.Flunder"));
}

// ---- CRD conversion webhooks ----

fn conversion_crd(h: &Hooks, path: &str) -> String {
    let v = |name: &str, storage: bool, field: &str| {
        j!({"name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {field: {"type": "integer"}}}}}}})
    };
    j!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.conv.example.com"},
        "spec": {"group": "conv.example.com", "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [v("v1", true, "replicas"), v("v2", false, "count")],
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"url": h.url(path), "caBundle": h.ca_bundle()}}}}})
    .to_string()
}

#[test]
fn crd_conversion_webhook() {
    let s = Server::start();
    let h = start_hooks();
    let k = |args: &[&str]| s.kubectl(V, args);
    s.kubectl_stdin(
        V,
        &["apply", "-f", "-"],
        Some(&conversion_crd(&h, "/convert")),
    );
    k(&[
        "wait",
        "--for=condition=Established",
        "crd/things.conv.example.com",
        "--timeout=30s",
    ]);
    // Written in v2, stored in v1 (the storage version) through the webhook.
    s.kubectl_stdin(
        V,
        &["create", "-f", "-"],
        Some(
            &j!({"apiVersion": "conv.example.com/v2", "kind": "Thing",
            "metadata": {"name": "t1", "namespace": "default"}, "spec": {"count": 3}})
            .to_string(),
        ),
    );
    let reviews = h.seen("/convert");
    assert!(
        reviews
            .iter()
            .any(|r| r["request"]["desiredAPIVersion"] == "conv.example.com/v1"),
        "{reviews:?}"
    );
    let v1 = json(&k(&[
        "get",
        "things.v1.conv.example.com",
        "t1",
        "-n",
        "default",
        "-o",
        "json",
    ]));
    assert_eq!(v1["spec"], j!({"replicas": 3}), "{v1}");
    // Only labels and annotations may change: the webhook's rename is not taken.
    assert_eq!(v1["metadata"]["name"], "t1");
    assert_eq!(v1["metadata"]["labels"]["converted-by"], "hook");
    // Read (get and list) in v2, through the webhook again.
    let v2 = json(&k(&[
        "get",
        "things.v2.conv.example.com",
        "t1",
        "-n",
        "default",
        "-o",
        "json",
    ]));
    assert_eq!(
        (v2["apiVersion"].as_str(), &v2["spec"]),
        (Some("conv.example.com/v2"), &j!({"count": 3})),
        "{v2}"
    );
    let list = json(&k(&[
        "get",
        "things.v2.conv.example.com",
        "-n",
        "default",
        "-o",
        "json",
    ]));
    assert_eq!(list["items"][0]["spec"], j!({"count": 3}), "{list}");
    let rv0 = v1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // An update in v2 is stored converted.
    k(&[
        "patch",
        "things.v2.conv.example.com",
        "t1",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"count":5}}"#,
    ]);
    let v1 = json(&k(&[
        "get",
        "things.v1.conv.example.com",
        "t1",
        "-n",
        "default",
        "-o",
        "json",
    ]));
    assert_eq!(v1["spec"], j!({"replicas": 5}), "{v1}");
    // Watches convert too: the initial state (a list) and each event (the object and the
    // one before it, in one ConversionReview), in v2 while stored in v1.
    let events = |rv: &str, timeout: u32| {
        let (code, body) = s.curl(
            "GET",
            &format!(
                "/apis/conv.example.com/v2/namespaces/default/things?watch=true&resourceVersion={rv}&timeoutSeconds={timeout}"
            ),
            None,
            None,
        );
        assert_eq!(code, 200, "{body}");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<_>>()
    };
    let initial = events("", 1);
    assert_eq!(initial.len(), 1, "{initial:?}");
    assert_eq!(
        (
            initial[0]["type"].as_str(),
            initial[0]["object"]["apiVersion"].as_str(),
            &initial[0]["object"]["spec"]
        ),
        (
            Some("ADDED"),
            Some("conv.example.com/v2"),
            &j!({"count": 5})
        ),
        "{initial:?}"
    );
    let before = h.seen("/convert").len();
    let replay = events(&rv0, 1);
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(
        (
            replay[0]["type"].as_str(),
            replay[0]["object"]["apiVersion"].as_str(),
            &replay[0]["object"]["spec"]
        ),
        (
            Some("MODIFIED"),
            Some("conv.example.com/v2"),
            &j!({"count": 5})
        ),
        "{replay:?}"
    );
    assert_eq!(replay[0]["object"]["metadata"]["name"], "t1");
    let calls = h.seen("/convert");
    let last = &calls.last().unwrap()["request"];
    assert_eq!(calls.len(), before + 1, "one review for the event");
    assert_eq!(last["objects"].as_array().map(Vec::len), Some(2), "{last}");
    // The storage version's watch needs no webhook.
    let stored = s.curl(
        "GET",
        &format!("/apis/conv.example.com/v1/namespaces/default/things?watch=true&resourceVersion={rv0}&timeoutSeconds=1"),
        None,
        None,
    );
    assert!(stored.1.contains(r#""replicas":5"#), "{stored:?}");
    assert_eq!(h.seen("/convert").len(), before + 1);
    // A webhook that fails: the request fails with kube-apiserver's wording (500), while the
    // storage version is still read without it.
    s.kubectl_stdin(
        V,
        &["apply", "-f", "-"],
        Some(&conversion_crd(&h, "/convert-fail")),
    );
    let mut last = (0, String::new());
    assert!(
        eventually(20, || {
            last = s.curl(
                "GET",
                "/apis/conv.example.com/v2/namespaces/default/things/t1",
                None,
                None,
            );
            last.0 == 503
        }),
        "{last:?}"
    );
    let st = json(&last.1);
    assert_eq!(st["reason"], "ServiceUnavailable", "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains("conversion webhook for conv.example.com/v1, Kind=Thing failed: no way"),
        "{st}"
    );
    let (code, _) = s.curl(
        "GET",
        "/apis/conv.example.com/v1/namespaces/default/things/t1",
        None,
        None,
    );
    assert_eq!(code, 200);
    // A watch whose event the webhook cannot convert ends at once with an ERROR event
    // naming it (never unconverted data, never a hung watch). A write in the storage
    // version needs no webhook; the event it makes is the one that fails (the earlier one,
    // already converted at its revision, is served as it was encoded).
    k(&[
        "patch",
        "things.v1.conv.example.com",
        "t1",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":6}}"#,
    ]);
    let started = Instant::now();
    let failed = events(&rv0, 60);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the watch ended"
    );
    let last = failed.last().expect("events");
    assert!(failed.iter().all(|e| e["type"] != "ADDED"), "{failed:?}");
    assert_eq!(last["type"], "ERROR", "{failed:?}");
    let st = &last["object"];
    assert_eq!(
        (st["kind"].as_str(), st["code"].as_u64()),
        (Some("Status"), Some(503)),
        "{st}"
    );
    assert!(
        st["message"]
            .as_str()
            .unwrap_or("")
            .contains("conversion webhook for conv.example.com/v1, Kind=Thing failed: no way"),
        "{st}"
    );
}
