//! CustomResourceDefinitions against the real `h8s server` (one shared server, embedded
//! store), driven by kubectl 1.27, 1.30 and 1.33, curl and the Python client's dynamic
//! client: four real-world-shaped definitions from `tests/fixtures/crd/` (a large
//! cert-manager-like schema, a two-version cluster-scoped kind, CEL rules, status+scale
//! subresources with printer columns), objects of each, `kubectl explain`, server-side
//! apply, validation errors with field paths, `kubectl scale`, watch, strategic merge
//! patch refused with 415, bad definitions refused with 422, deleting a definition
//! deleting its objects, and the custom resources still served after a restart.

mod api_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use api_support::{eventually, json, Server};

const VERSIONS: &[&str] = &["1.27", "1.30", "1.33"];

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

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

fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .collect()
}

fn install(s: &Server, ver: &str) {
    for f in [
        "certificate.yaml",
        "multiversion.yaml",
        "cel.yaml",
        "scalable.yaml",
    ] {
        let out = s.kubectl_stdin(ver, &["apply", "-f", "-"], Some(&fixture(f)));
        assert!(
            out.contains("customresourcedefinition.apiextensions.k8s.io/"),
            "{out}"
        );
    }
    s.kubectl(
        ver,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ],
    );
}

const WEBAPP: &str = "apiVersion: apps.example.com/v1
kind: WebApp
metadata:
  name: NAME
spec:
  image: nginx:1.27
  replicas: 2
  ports:
  - name: http
    port: 80
  env:
    LOG: debug
  template:
    apiVersion: v1
    kind: Pod
    metadata:
      name: tpl
    spec:
      containers: []
";

fn definitions_and_objects(s: &Server, ver: &str) {
    // Definition status, names, discovery.
    let crd = json(&s.kubectl(
        ver,
        &["get", "crd", "webapps.apps.example.com", "-o", "json"],
    ));
    let conds = crd["status"]["conditions"].as_array().expect("conditions");
    for ty in ["NamesAccepted", "Established"] {
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == ty && c["status"] == "True"),
            "{ty}: {conds:?}"
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "WebApp");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    let ar = s.kubectl(ver, &["api-resources", "--api-group=apps.example.com"]);
    assert!(
        ar.contains("webapps") && ar.contains("wa") && ar.contains("WebApp"),
        "{ar}"
    );

    // Create through client-side apply; defaults and pruning.
    let name = format!("shop-{}", ver.replace('.', "-"));
    s.kubectl_stdin(
        ver,
        &["apply", "-f", "-"],
        Some(&WEBAPP.replace("NAME", &name)),
    );
    let o = json(&s.kubectl(ver, &["get", "wa", &name, "-o", "json"]));
    assert_eq!(o["spec"]["mode"], "Staging", "default");
    assert_eq!(
        o["spec"]["ports"][0]["protocol"], "TCP",
        "default in a list item"
    );
    assert_eq!(
        o["spec"]["template"]["metadata"],
        serde_json::json!({"name": "tpl"})
    );
    assert_eq!(o["metadata"]["generation"], 1);
    let cats = s.kubectl(ver, &["get", "example", "-o", "name"]);
    assert!(
        cats.contains(&format!("webapp.apps.example.com/{name}")),
        "category: {cats}"
    );

    // Printer columns (wide adds the priority-1 Port column).
    let t = s.kubectl(ver, &["get", "webapps"]);
    assert_eq!(
        header(&t),
        ["NAME", "IMAGE", "DESIRED", "READY", "AGE"],
        "{t}"
    );
    assert_eq!(
        row(&t, &name)[..3],
        [name.as_str(), "nginx:1.27", "2"],
        "{t}"
    );
    let t = s.kubectl(ver, &["get", "wa", &name, "-o", "wide"]);
    assert_eq!(
        header(&t),
        ["NAME", "IMAGE", "DESIRED", "READY", "PORT", "AGE"],
        "{t}"
    );

    // Status subresource: the main resource ignores status, /status writes only it.
    let status = serde_json::json!({"status": {"replicas": 2, "selector": "app=shop",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, body) = s.curl(
        "PATCH",
        &format!("/apis/apps.example.com/v1/namespaces/default/webapps/{name}/status"),
        Some("application/merge-patch+json"),
        Some(status.to_string().as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    let t = s.kubectl(ver, &["get", "wa", &name]);
    assert_eq!(
        row(&t, &name)[3],
        "True",
        "Ready column from the status: {t}"
    );

    // Scale subresource.
    let out = s.kubectl(ver, &["scale", "wa", &name, "--replicas=4"]);
    assert!(out.contains("scaled"), "{out}");
    let sc = json(&s.kubectl(
        ver,
        &[
            "get",
            "--raw",
            &format!("/apis/apps.example.com/v1/namespaces/default/webapps/{name}/scale"),
        ],
    ));
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["spec"]["replicas"], 4);
    assert_eq!(sc["status"]["replicas"], 2);
    assert_eq!(sc["status"]["selector"], "app=shop");
    let o = json(&s.kubectl(ver, &["get", "wa", &name, "-o", "json"]));
    assert_eq!(o["spec"]["replicas"], 4);
    assert_eq!(o["metadata"]["generation"], 2);

    // Merge patch works; strategic merge patch is 415, as kube-apiserver answers.
    s.kubectl(
        ver,
        &[
            "patch",
            "wa",
            &name,
            "--type=merge",
            "-p",
            r#"{"spec":{"image":"nginx:1.28"}}"#,
        ],
    );
    let err = s.kubectl_fails(
        ver,
        &["patch", "wa", &name, "-p", r#"{"spec":{"image":"x"}}"#],
        None,
    );
    assert!(
        err.contains("application/merge-patch+json") && err.contains("unknown format"),
        "{err}"
    );
    let (code, body) = s.curl(
        "PATCH",
        &format!("/apis/apps.example.com/v1/namespaces/default/webapps/{name}"),
        Some("application/strategic-merge-patch+json"),
        Some(b"{}"),
    );
    assert_eq!(code, 415, "{body}");
    assert_eq!(json(&body)["reason"], "UnsupportedMediaType");

    // Server-side apply (forced over the client-side manager).
    let applied = WEBAPP
        .replace("NAME", &name)
        .replace("replicas: 2", "replicas: 3");
    let out = s.kubectl_stdin(
        ver,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ssa-test",
            "-f",
            "-",
        ],
        Some(&applied),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let o = json(&s.kubectl(
        ver,
        &["get", "wa", &name, "-o", "json", "--show-managed-fields"],
    ));
    assert_eq!(o["spec"]["replicas"], 3);
    assert!(
        o["metadata"]["managedFields"].as_array().is_some_and(|m| m
            .iter()
            .any(|f| f["manager"] == "ssa-test" && f["operation"] == "Apply")),
        "{o}"
    );
    // x-kubernetes-list-type: map — another manager's element is merged by its key
    // (`name`), each manager owning its own element; the same key with another value
    // conflicts (409) unless forced.
    let port = |p: u16| {
        format!(
            "apiVersion: apps.example.com/v1\nkind: WebApp\nmetadata: {{name: {name}}}\nspec:\n  ports:\n  - {{name: metrics, port: {p}}}\n"
        )
    };
    s.kubectl_stdin(
        ver,
        &[
            "apply",
            "--server-side",
            "--field-manager=ports-b",
            "-f",
            "-",
        ],
        Some(&port(9090)),
    );
    let o = json(&s.kubectl(
        ver,
        &["get", "wa", &name, "-o", "json", "--show-managed-fields"],
    ));
    let names: Vec<&str> = o["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["http", "metrics"], "{o}");
    let b = o["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["manager"] == "ports-b")
        .cloned()
        .unwrap_or_default();
    assert!(
        b["fieldsV1"]["f:spec"]["f:ports"]
            .get("k:{\"name\":\"metrics\"}")
            .is_some(),
        "{b}"
    );
    let err = s.kubectl_fails(
        ver,
        &[
            "apply",
            "--server-side",
            "--field-manager=ports-c",
            "-f",
            "-",
        ],
        Some(&port(9091)),
    );
    assert!(err.contains("conflict"), "{err}");

    // Validation errors with field paths.
    let bad = "apiVersion: apps.example.com/v1
kind: WebApp
metadata: {name: bad}
spec:
  replicas: 99
  mode: Dev
  ports: [{name: a, port: 1}, {name: a, port: 70000}]
";
    let err = s.kubectl_fails(ver, &["apply", "-f", "-"], Some(bad));
    for want in [
        "spec.image: Required value",
        "spec.mode: Unsupported value: \"Dev\": supported values: \"Production\", \"Staging\"",
        "spec.ports[1]: Duplicate value",
        "spec.replicas: Invalid value: 99: spec.replicas in body should be less than or equal to 50",
        "spec.ports[1].port: Invalid value: 70000",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    // Unknown fields: Strict refuses them, the default (Warn) prunes and warns.
    let unknown = "apiVersion: apps.example.com/v1
kind: WebApp
metadata: {name: unknown-NAME}
spec: {image: x, bogus: 1}
"
    .replace("NAME", &ver.replace('.', "-"));
    let err = s.kubectl_fails(
        ver,
        &["create", "--validate=strict", "-f", "-"],
        Some(&unknown),
    );
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    let o = s.kubectl_out(
        ver,
        &["create", "--validate=warn", "-f", "-"],
        Some(&unknown),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field \"spec.bogus\""));
    let o = json(&s.kubectl(
        ver,
        &[
            "get",
            "wa",
            &format!("unknown-{}", ver.replace('.', "-")),
            "-o",
            "json",
        ],
    ));
    assert!(o["spec"].get("bogus").is_none(), "pruned: {o}");

    // CEL rules, messageExpression, fieldPath+reason, transition rule.
    let quota = "apiVersion: limits.example.com/v1
kind: Quota
metadata: {name: q-NAME}
spec: {min: 5, max: 3, owner: bob@elsewhere.org, class: gold}
"
    .replace("NAME", &ver.replace('.', "-"));
    let err = s.kubectl_fails(ver, &["apply", "-f", "-"], Some(&quota));
    assert!(
        err.contains("spec: Invalid value: \"object\": min (5) must not exceed max (3)"),
        "{err}"
    );
    assert!(
        err.contains("spec.owner: Forbidden: owner must be an example.com address"),
        "{err}"
    );
    let good = quota
        .replace("min: 5", "min: 1")
        .replace("elsewhere.org", "example.com");
    s.kubectl_stdin(ver, &["apply", "-f", "-"], Some(&good));
    let qn = format!("q-{}", ver.replace('.', "-"));
    let err = s.kubectl_fails(
        ver,
        &[
            "patch",
            "quotas.limits.example.com",
            &qn,
            "--type=merge",
            "-p",
            r#"{"spec":{"class":"silver"}}"#,
        ],
        None,
    );
    assert!(
        err.contains("spec.class: Invalid value: \"string\": class is immutable"),
        "{err}"
    );

    // Two versions of a cluster-scoped kind: written in v1beta1, stored and read as v1.
    let pol = "apiVersion: policy.example.com/v1beta1
kind: ClusterPolicy
metadata: {name: p-NAME}
spec: {rules: [a, b]}
"
    .replace("NAME", &ver.replace('.', "-"));
    let o = s.kubectl_out(ver, &["apply", "-f", "-"], Some(&pol));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("v1beta1 ClusterPolicy is deprecated"),
        "deprecation warning: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pn = format!("p-{}", ver.replace('.', "-"));
    let v1 = json(&s.kubectl(
        ver,
        &[
            "get",
            "clusterpolicies.v1.policy.example.com",
            &pn,
            "-o",
            "json",
        ],
    ));
    assert_eq!(v1["apiVersion"], "policy.example.com/v1");
    assert_eq!(
        v1["spec"]["action"], "Audit",
        "the v1 default applies when read as v1"
    );
    let beta = json(&s.kubectl(
        ver,
        &[
            "get",
            "--raw",
            &format!("/apis/policy.example.com/v1beta1/clusterpolicies/{pn}"),
        ],
    ));
    assert_eq!(beta["apiVersion"], "policy.example.com/v1beta1");
    let t = s.kubectl(ver, &["get", "cpol"]);
    assert_eq!(header(&t), ["NAME", "ACTION"], "{t}");

    // The large schema: an object of it, explain of a nested field.
    let cert = "apiVersion: certs.example.io/v1
kind: Certificate
metadata: {name: web-NAME}
spec:
  secretName: web-tls
  dnsNames: [web.example.com]
  duration: 2160h
  renewBefore: 360h
  issuerRef: {name: ca, kind: ClusterIssuer}
  privateKey: {algorithm: ECDSA, size: 256, rotationPolicy: Always}
  usages: [server auth, digital signature]
"
    .replace("NAME", &ver.replace('.', "-"));
    s.kubectl_stdin(ver, &["apply", "-f", "-"], Some(&cert));
    let err = s.kubectl_fails(
        ver,
        &["apply", "-f", "-"],
        Some(
            &cert
                .replace("ECDSA", "DSA")
                .replace("2160h", "three months"),
        ),
    );
    assert!(
        err.contains("spec.privateKey.algorithm: Unsupported value: \"DSA\""),
        "{err}"
    );
    assert!(
        err.contains("spec.duration: Invalid value: \"three months\""),
        "{err}"
    );
    let t = s.kubectl(ver, &["get", "certs"]);
    assert_eq!(header(&t), ["NAME", "READY", "SECRET", "AGE"], "{t}");
    let ex = s.kubectl(ver, &["explain", "certificates.spec.privateKey.algorithm"]);
    assert!(
        ex.contains("Algorithm is the private key algorithm"),
        "{ex}"
    );
    let ex = s.kubectl(ver, &["explain", "webapp.spec"]);
    assert!(
        ex.contains("WebAppSpec is the desired state") && ex.contains("replicas"),
        "{ex}"
    );
}

fn watch_custom_objects(s: &Server) {
    let mut w = s
        .kubectl_cmd("1.33")
        .args(["get", "quotas.limits.example.com", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let out = w.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    s.kubectl_stdin(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: limits.example.com/v1\nkind: Quota\nmetadata: {name: watched}\nspec: {min: 1, max: 2}\n"),
    );
    let mut seen = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if l.contains("quota.limits.example.com/watched") {
                seen = true;
                break;
            }
        }
    }
    let _ = w.kill();
    let _ = w.wait();
    assert!(seen, "the watch saw the new object");
}

fn field_selectors(s: &Server) {
    let t = s.kubectl(
        "1.33",
        &[
            "get",
            "quotas.limits.example.com",
            "--field-selector",
            "metadata.name=watched",
            "-o",
            "name",
        ],
    );
    assert_eq!(t.trim(), "quota.limits.example.com/watched");
    let err = s.kubectl_fails(
        "1.33",
        &[
            "get",
            "quotas.limits.example.com",
            "--field-selector",
            "spec.min=1",
        ],
        None,
    );
    assert!(err.contains("field label not supported: spec.min"), "{err}");
}

fn bad_definitions(s: &Server) {
    let non_structural = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.bad.example.com}
spec:
  group: bad.example.com
  scope: Namespaced
  names: {plural: things, kind: Thing}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              size: {type: integer}
          list:
            type: array
";
    let (code, body) = s.curl(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some("application/yaml"),
        Some(non_structural.as_bytes()),
    );
    assert_eq!(code, 422, "{body}");
    let st = json(&body);
    assert_eq!(st["reason"], "Invalid");
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"spec.versions[0].schema.openAPIV3Schema.properties[spec].type"),
        "{body}"
    );
    assert!(
        fields.contains(&"spec.versions[0].schema.openAPIV3Schema.properties[list].items"),
        "{body}"
    );
    let msg = st["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("must not be empty for specified object fields"),
        "{msg}"
    );

    let bad_cel = non_structural
        .replace("          spec:\n            properties:", "          spec:\n            type: object\n            x-kubernetes-validations:\n            - rule: \"self.size >\"\n            properties:")
        .replace("          list:\n            type: array\n", "");
    let err = s.kubectl_fails("1.33", &["apply", "-f", "-"], Some(&bad_cel));
    assert!(err.contains("x-kubernetes-validations[0].rule"), "{err}");
    assert!(err.contains("compilation failed"), "{err}");

    // Rules are type-checked against the schema at create: a field it does not declare,
    // a comparison of mismatched types, function arguments, each with the rule's path in the definition.
    let typed = |rule: &str| {
        non_structural
            .replace("          spec:\n            properties:", &format!("          spec:\n            type: object\n            x-kubernetes-validations:\n            - rule: {rule:?}\n            properties:"))
            .replace("          list:\n            type: array\n", "")
    };
    for (rule, want) in [
        ("self.sise > 1", "undefined field 'sise'"),
        (
            "self.size == 'big'",
            "found no matching overload for '_==_' applied to '(int, string)'",
        ),
        // A function called with arguments none of its overloads takes.
        (
            "self.size.startsWith('1')",
            "found no matching overload for 'startsWith' applied to 'int.(string)'",
        ),
        (
            "size(self.size) > 1",
            "found no matching overload for 'size' applied to '(int)'",
        ),
    ] {
        let err = s.kubectl_fails("1.33", &["apply", "-f", "-"], Some(&typed(rule)));
        assert!(
            err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value"),
            "{err}"
        );
        assert!(err.contains(want), "{rule}: {err}");
    }
    s.kubectl_stdin("1.33", &["apply", "-f", "-"], Some(&typed("self.size > 1")));
    s.kubectl("1.33", &["delete", "crd", "things.bad.example.com"]);

    let bad_names = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: wrong.example.com}
spec:
  group: nodot
  scope: Everywhere
  names: {plural: Things, kind: Thing}
  versions:
  - {name: v1, served: true, storage: false, schema: {openAPIV3Schema: {type: object}}}
";
    let err = s.kubectl_fails("1.33", &["apply", "-f", "-"], Some(bad_names));
    for want in [
        "metadata.name: Invalid value: \"wrong.example.com\": must be spec.names.plural+\".\"+spec.group",
        "spec.group: Invalid value: \"nodot\": should be a domain with at least one dot",
        "spec.scope: Unsupported value: \"Everywhere\"",
        "must have exactly one version marked as storage version",
        "spec.names.plural: Invalid value: \"Things\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

fn python_dynamic_client(s: &Server) {
    let script = r#"
import sys
from kubernetes import config, dynamic
c = dynamic.DynamicClient(config.new_client_from_config(config_file=sys.argv[1]))
api = c.resources.get(api_version="limits.example.com/v1", kind="Quota")
api.create(namespace="default", body={"apiVersion": "limits.example.com/v1", "kind": "Quota",
    "metadata": {"name": "py"}, "spec": {"min": 1, "max": 9, "class": "bronze"}})
got = api.get(namespace="default", name="py")
assert got.spec.max == 9, got
api.patch(namespace="default", name="py", body={"spec": {"max": 10}},
          content_type="application/merge-patch+json")
assert api.get(namespace="default", name="py").spec.max == 10
names = [i.metadata.name for i in api.get(namespace="default").items]
assert "py" in names, names
try:
    api.patch(namespace="default", name="py", body={"spec": {"min": 50}},
              content_type="application/merge-patch+json")
    raise SystemExit("CEL rule did not refuse the patch")
except Exception as e:
    assert getattr(e, "status", None) == 422, e
    assert "min (50) must not exceed max (10)" in e.body, e.body
wa = c.resources.get(api_version="apps.example.com/v1", kind="WebApp")
assert wa.namespaced and "wa" in wa.short_names
api.delete(namespace="default", name="py")
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&s.kubeconfig)
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delete_definition(s: &Server) {
    let n = s.kubectl("1.33", &["get", "wa", "-o", "name"]);
    assert!(!n.trim().is_empty());
    s.kubectl(
        "1.33",
        &["delete", "crd", "webapps.apps.example.com", "--timeout=60s"],
    );
    assert!(
        eventually(20, || {
            let o = s.kubectl_out("1.33", &["get", "crd", "webapps.apps.example.com"], None);
            !o.status.success()
        }),
        "definition gone"
    );
    let (code, _) = s.curl(
        "GET",
        "/apis/apps.example.com/v1/namespaces/default/webapps",
        None,
        None,
    );
    assert_eq!(code, 404);
    // Recreated: the old objects do not come back.
    s.kubectl_stdin(
        "1.33",
        &["apply", "-f", "-"],
        Some(&fixture("scalable.yaml")),
    );
    s.kubectl(
        "1.33",
        &[
            "wait",
            "--for=condition=Established",
            "crd/webapps.apps.example.com",
            "--timeout=30s",
        ],
    );
    let n = s.kubectl("1.33", &["get", "wa", "-A", "-o", "name"]);
    assert!(
        n.trim().is_empty(),
        "objects of the deleted definition are gone: {n}"
    );
}

#[test]
fn custom_resources_with_real_clients() {
    let s = Server::start();
    install(&s, "1.33");
    for ver in VERSIONS {
        definitions_and_objects(&s, ver);
    }
    watch_custom_objects(&s);
    field_selectors(&s);
    bad_definitions(&s);
    python_dynamic_client(&s);
    delete_definition(&s);

    // Restart on the same data: the definitions and their objects are served again.
    let before = s.kubectl("1.33", &["get", "certs", "-o", "name"]);
    let dir = s.stop();
    let s = Server::start_in(dir);
    assert!(
        eventually(20, || {
            let o = s.kubectl_out("1.33", &["get", "certs", "-o", "name"], None);
            o.status.success() && String::from_utf8_lossy(&o.stdout) == before
        }),
        "certificates served after a restart"
    );
    let v1 = json(&s.kubectl("1.33", &["get", "cpol", "p-1-33", "-o", "json"]));
    assert_eq!(v1["spec"]["rules"], serde_json::json!(["a", "b"]));
}
