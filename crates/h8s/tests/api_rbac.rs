//! RBAC end to end against the real `h8s server`, with users from its static token file
//! (`DATA_DIR/tokens.csv`) and kubectl 1.27 and 1.33: `auth can-i` (and `--list`),
//! kube-apiserver's forbidden messages, a RoleBinding to a ClusterRole granting in its
//! namespace only, group bindings, resourceNames, subresources, non-resource URLs,
//! escalation refused (roles and bindings), a deleted binding revoking at once, the
//! access reviews, and the default roles with their aggregation. One server for the
//! whole binary.

mod api_support;

use std::path::PathBuf;

use api_support::{eventually, json, Server};

const VERSIONS: [&str; 2] = ["1.33", "1.27"];

/// A kubeconfig that authenticates with `token`.
fn kubeconfig_for(srv: &Server, user: &str, token: &str) -> PathBuf {
    let ca = srv.data_dir().join("ca.crt");
    let p = srv.dir.path().join(format!("{user}.kubeconfig"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: h8s\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}\n  context:\n    cluster: h8s\n    user: {user}\ncurrent-context: {user}\n",
            srv.url,
            ca.display()
        ),
    )
    .unwrap();
    p
}

struct User<'a> {
    srv: &'a Server,
    name: &'static str,
    token: &'static str,
    kc: PathBuf,
}

impl User<'_> {
    fn out(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut c = std::process::Command::new(api_support::kubectl_bin(ver));
        c.arg("--kubeconfig")
            .arg(&self.kc)
            .arg("--cache-dir")
            .arg(
                self.srv
                    .dir
                    .path()
                    .join(format!("cache-{}-{ver}", self.name)),
            )
            .env_remove("KUBECONFIG")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("kubectl");
        let mut sin = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).unwrap();
        }
        drop(sin);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, ver: &str, args: &[&str]) -> String {
        self.ok_stdin(ver, args, None)
    }

    fn ok_stdin(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.out(ver, args, stdin);
        assert!(
            o.status.success(),
            "{} kubectl {ver} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Expects failure; returns stderr.
    fn fails(&self, ver: &str, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.out(ver, args, stdin);
        assert!(
            !o.status.success(),
            "{} kubectl {ver} {args:?} should fail: {}",
            self.name,
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `kubectl auth can-i …`: yes or no (kubectl exits 1 on no).
    fn can_i(&self, ver: &str, args: &[&str]) -> bool {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let o = self.out(ver, &a, None);
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        match out.as_str() {
            "yes" => {
                assert!(o.status.success());
                true
            }
            "no" => false,
            _ => panic!(
                "kubectl {ver} auth can-i {args:?}: {out} / {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (code, b) = self.srv.curl_with(
            method,
            path,
            body.map(|_| "application/json"),
            body.map(str::as_bytes),
            Some(self.token),
        );
        (
            code,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn apply(srv: &Server, yaml: &str) {
    srv.kubectl_stdin("1.33", &["apply", "-f", "-"], Some(yaml));
}

#[test]
fn rbac_end_to_end() {
    let srv = Server::start();
    std::fs::write(
        srv.data_dir().join("tokens.csv"),
        "alice-token,alice,u1,\"devs\"\nbob-token,bob,u2\neve-token,eve,u3\n",
    )
    .unwrap();
    let user = |name: &'static str, token: &'static str| User {
        srv: &srv,
        name,
        token,
        kc: kubeconfig_for(&srv, name, token),
    };
    let alice = user("alice", "alice-token");
    let bob = user("bob", "bob-token");
    let eve = user("eve", "eve-token");
    srv.kubectl("1.33", &["create", "namespace", "ns-a"]);
    srv.kubectl("1.33", &["create", "namespace", "ns-b"]);

    // --- nothing but discovery and the basics by default ---
    for ver in VERSIONS {
        assert!(!alice.can_i(ver, &["list", "pods", "-n", "ns-a"]));
        assert!(alice.can_i(
            ver,
            &["create", "selfsubjectaccessreviews.authorization.k8s.io"]
        ));
        let e = alice.fails(ver, &["get", "pods", "-n", "ns-b"], None);
        assert!(
            e.contains(r#"Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "ns-b""#),
            "{ver}: {e}"
        );
        let e = alice.fails(ver, &["get", "deployment", "web", "-n", "ns-a"], None);
        assert!(
            e.contains(r#"deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group "apps" in the namespace "ns-a""#),
            "{ver}: {e}"
        );
        let e = alice.fails(ver, &["get", "nodes"], None);
        assert!(
            e.contains(r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#),
            "{ver}: {e}"
        );
        // Discovery works (kubectl needs it), /metrics does not.
        alice.ok(ver, &["api-resources", "--api-group=apps"]);
        let e = alice.fails(ver, &["get", "--raw", "/metrics"], None);
        assert!(
            e.contains(r#"forbidden: User \"alice\" cannot get path \"/metrics\""#)
                || e.contains(r#"forbidden: User "alice" cannot get path "/metrics""#),
            "{ver}: {e}"
        );
    }
    let (code, st) = alice.curl("GET", "/api/v1/namespaces/ns-b/pods", None);
    assert_eq!(code, 403);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(st["details"]["kind"], "pods");

    // --- a RoleBinding to a ClusterRole grants it in its namespace only ---
    srv.kubectl(
        "1.33",
        &[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
            "-n",
            "ns-a",
        ],
    );
    srv.kubectl(
        "1.33",
        &[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "-n",
            "ns-a",
        ],
    );
    for ver in VERSIONS {
        assert!(alice.can_i(ver, &["list", "pods", "-n", "ns-a"]), "{ver}");
        assert!(
            alice.can_i(ver, &["get", "deployments.apps", "-n", "ns-a"]),
            "{ver}"
        );
        assert!(
            !alice.can_i(ver, &["delete", "pods", "-n", "ns-a"]),
            "{ver}"
        );
        assert!(!alice.can_i(ver, &["list", "pods", "-n", "ns-b"]), "{ver}");
        assert!(
            !alice.can_i(ver, &["list", "pods", "--all-namespaces"]),
            "{ver}"
        );
        assert!(
            !alice.can_i(ver, &["get", "secrets", "-n", "ns-a"]),
            "{ver}"
        );
        alice.ok(ver, &["get", "deployments", "-n", "ns-a"]);
        alice.fails(ver, &["get", "deployments", "-n", "ns-b"], None);
        // --list: the view role's rules in ns-a, nothing of it in ns-b.
        let list = alice.ok(ver, &["auth", "can-i", "--list", "-n", "ns-a"]);
        assert!(
            list.lines()
                .any(|l| l.starts_with("deployments.apps ") && l.contains("[get list watch]")),
            "{ver}: {list}"
        );
        assert!(
            list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
            "{ver}: {list}"
        );
        let list_b = alice.ok(ver, &["auth", "can-i", "--list", "-n", "ns-b"]);
        assert!(!list_b.contains("deployments.apps"), "{ver}: {list_b}");
    }
    // Group subjects: a ClusterRoleBinding for alice's group.
    apply(
        &srv,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: node-reader}\nrules:\n- {apiGroups: [\"\"], resources: [nodes], verbs: [get, list, watch]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: devs-read-nodes}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: devs}\n",
    );
    alice.ok("1.33", &["get", "nodes"]);
    bob.fails("1.33", &["get", "nodes"], None);

    // --- resourceNames and subresources ---
    srv.kubectl(
        "1.33",
        &[
            "create",
            "configmap",
            "a",
            "--from-literal=k=v",
            "-n",
            "ns-b",
        ],
    );
    srv.kubectl(
        "1.33",
        &[
            "create",
            "configmap",
            "b",
            "--from-literal=k=v",
            "-n",
            "ns-b",
        ],
    );
    srv.kubectl(
        "1.33",
        &[
            "create",
            "role",
            "cm-a",
            "--verb=get,list",
            "--resource=configmaps",
            "--resource-name=a",
            "-n",
            "ns-b",
        ],
    );
    srv.kubectl(
        "1.33",
        &[
            "create",
            "rolebinding",
            "bob-cm-a",
            "--role=cm-a",
            "--user=bob",
            "-n",
            "ns-b",
        ],
    );
    apply(
        &srv,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: scale-only, namespace: ns-a}\nrules:\n- {apiGroups: [apps], resources: [deployments/scale], verbs: [get]}\n- {apiGroups: [\"\"], resources: [pods/log], verbs: [get]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-scale, namespace: ns-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: scale-only}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}\n",
    );
    for ver in VERSIONS {
        assert!(bob
            .ok(ver, &["get", "configmap", "a", "-n", "ns-b", "-o", "name"])
            .contains("configmap/a"));
        let e = bob.fails(ver, &["get", "configmap", "b", "-n", "ns-b"], None);
        assert!(
            e.contains(r#"configmaps "b" is forbidden: User "bob" cannot get resource "configmaps" in API group "" in the namespace "ns-b""#),
            "{ver}: {e}"
        );
        bob.fails(ver, &["get", "configmaps", "-n", "ns-b"], None);
        assert!(
            bob.can_i(ver, &["get", "configmap/a", "-n", "ns-b"]),
            "{ver}"
        );
        assert!(
            !bob.can_i(ver, &["get", "configmap/b", "-n", "ns-b"]),
            "{ver}"
        );
        assert!(
            bob.can_i(ver, &["get", "pods", "--subresource=log", "-n", "ns-a"]),
            "{ver}"
        );
        assert!(!bob.can_i(ver, &["get", "pods", "-n", "ns-a"]), "{ver}");
        assert!(
            !bob.can_i(ver, &["get", "pods", "--subresource=exec", "-n", "ns-a"]),
            "{ver}"
        );
        let scale = bob.ok(
            ver,
            &[
                "get",
                "--raw",
                "/apis/apps/v1/namespaces/ns-a/deployments/web/scale",
            ],
        );
        assert_eq!(json(&scale)["kind"], "Scale");
        let e = bob.fails(ver, &["get", "deployment", "web", "-n", "ns-a"], None);
        assert!(e.contains("Forbidden"), "{ver}: {e}");
    }
    // A list pinned to one name by a field selector is a request about that name.
    let (code, _) = bob.curl(
        "GET",
        "/api/v1/namespaces/ns-b/configmaps?fieldSelector=metadata.name%3Da",
        None,
    );
    assert_eq!(code, 200);

    // --- escalation: roles and bindings only with what one holds (or escalate/bind) ---
    apply(
        &srv,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: rbac-editor, namespace: ns-a}\nrules:\n- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [get, list, create, update, patch, delete]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-rbac, namespace: ns-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: rbac-editor}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}\n",
    );
    alice.ok(
        "1.33",
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "ns-a",
        ],
    );
    let e = alice.fails(
        "1.33",
        &[
            "create",
            "role",
            "pod-deleter",
            "--verb=delete",
            "--resource=pods",
            "-n",
            "ns-a",
        ],
        None,
    );
    assert!(
        e.contains(r#"roles.rbac.authorization.k8s.io "pod-deleter" is forbidden: user "alice" (groups=["devs" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#)
            || e.contains(r#"roles.rbac.authorization.k8s.io "pod-deleter" is forbidden: user "alice" (groups=["devs", "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{e}"
    );
    assert!(
        e.contains(r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#),
        "{e}"
    );
    // Binding what one holds is fine; binding `edit` (more than view) is not.
    alice.ok(
        "1.33",
        &[
            "create",
            "rolebinding",
            "eve-view",
            "--clusterrole=view",
            "--user=eve",
            "-n",
            "ns-a",
        ],
    );
    assert!(eve.can_i("1.33", &["list", "pods", "-n", "ns-a"]));
    let e = alice.fails(
        "1.33",
        &[
            "create",
            "rolebinding",
            "eve-edit",
            "--clusterrole=edit",
            "--user=eve",
            "-n",
            "ns-a",
        ],
        None,
    );
    assert!(
        e.contains("is attempting to grant RBAC permissions not currently held"),
        "{e}"
    );
    // Nor in a namespace where she holds nothing.
    alice.fails(
        "1.33",
        &[
            "create",
            "rolebinding",
            "x",
            "--clusterrole=view",
            "--user=eve",
            "-n",
            "ns-b",
        ],
        None,
    );
    // With `bind` on the role, binding it is allowed without holding it.
    apply(
        &srv,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: may-bind-edit, namespace: ns-a}\nrules:\n- {apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [bind], resourceNames: [edit]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-bind, namespace: ns-a}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: may-bind-edit}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}\n",
    );
    alice.ok(
        "1.33",
        &[
            "create",
            "rolebinding",
            "eve-edit",
            "--clusterrole=edit",
            "--user=eve",
            "-n",
            "ns-a",
        ],
    );
    assert!(eve.can_i("1.33", &["delete", "pods", "-n", "ns-a"]));
    // ... and `escalate` lets one write a role granting more.
    assert!(!alice.can_i("1.33", &["escalate", "roles", "-n", "ns-a"]));

    // --- a deleted binding revokes at once ---
    srv.kubectl(
        "1.33",
        &["delete", "rolebinding", "alice-view", "-n", "ns-a"],
    );
    for ver in VERSIONS {
        assert!(!alice.can_i(ver, &["list", "pods", "-n", "ns-a"]), "{ver}");
        alice.fails(ver, &["get", "deployments", "-n", "ns-a"], None);
    }
    srv.kubectl("1.33", &["delete", "rolebinding", "eve-edit", "-n", "ns-a"]);
    let (code, _) = eve.curl("DELETE", "/api/v1/namespaces/ns-a/pods/nothing", None);
    assert_eq!(code, 403);

    // --- SubjectAccessReview and LocalSubjectAccessReview (as admin) ---
    let sar = |kind: &str, path: &str, spec: serde_json::Value| {
        let body = serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec});
        let (code, out) = srv.curl(
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string().as_bytes()),
        );
        (code, json(&out))
    };
    let (code, r) = sar(
        "SubjectAccessReview",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        serde_json::json!({"user": "bob", "resourceAttributes": {"namespace": "ns-b", "verb": "get", "resource": "configmaps", "name": "a"}}),
    );
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], true, "{r}");
    let (_, r) = sar(
        "SubjectAccessReview",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        serde_json::json!({"user": "x", "groups": ["devs"], "resourceAttributes": {"verb": "list", "resource": "nodes"}}),
    );
    assert_eq!(r["status"]["allowed"], true, "{r}");
    let (code, r) = sar(
        "SubjectAccessReview",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        serde_json::json!({"resourceAttributes": {"verb": "list", "resource": "nodes"}}),
    );
    assert_eq!(code, 422, "{r}");
    let (code, r) = sar(
        "LocalSubjectAccessReview",
        "/apis/authorization.k8s.io/v1/namespaces/ns-b/localsubjectaccessreviews",
        serde_json::json!({"user": "bob", "resourceAttributes": {"namespace": "ns-b", "verb": "get", "resource": "configmaps", "name": "b"}}),
    );
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["status"]["allowed"], false, "{r}");
    let (code, r) = sar(
        "LocalSubjectAccessReview",
        "/apis/authorization.k8s.io/v1/namespaces/ns-b/localsubjectaccessreviews",
        serde_json::json!({"user": "bob", "resourceAttributes": {"namespace": "ns-a", "verb": "get", "resource": "pods"}}),
    );
    assert_eq!(code, 400, "{r}");
    // Users without the right may not ask about others.
    let (code, _) = bob.curl(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"alice","nonResourceAttributes":{"path":"/x","verb":"get"}}}"#),
    );
    assert_eq!(code, 403);

    // --- the default roles, aggregated, and the aggregation following new roles ---
    let view = json(&srv.kubectl("1.33", &["get", "clusterrole", "view", "-o", "json"]));
    assert!(!view["rules"].as_array().unwrap().is_empty(), "{view}");
    let admin = json(&srv.kubectl("1.33", &["get", "clusterrole", "admin", "-o", "json"]));
    let admin_rules = admin["rules"].to_string();
    assert!(
        admin_rules.contains("rolebindings") && admin_rules.contains("deployments"),
        "{admin}"
    );
    for n in [
        "cluster-admin",
        "edit",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:node-bootstrapper",
    ] {
        srv.kubectl("1.33", &["get", "clusterrole", n]);
    }
    let crbs = srv.kubectl("1.33", &["get", "clusterrolebindings"]);
    assert!(
        crbs.contains("cluster-admin") && crbs.contains("ClusterRole/cluster-admin"),
        "{crbs}"
    );
    apply(
        &srv,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-view\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- {apiGroups: [example.com], resources: [widgets], verbs: [get]}\n",
    );
    assert!(
        eventually(10, || {
            let v = srv.kubectl("1.33", &["get", "clusterrole", "view", "-o", "json"]);
            v.contains("widgets")
                && srv
                    .kubectl("1.33", &["get", "clusterrole", "admin", "-o", "json"])
                    .contains("widgets")
        }),
        "view and admin gather the new role's rules"
    );
    // --- impersonation (kubectl --as): the admin may, bob may not ---
    for ver in VERSIONS {
        let yes = srv.kubectl_out(
            ver,
            &[
                "auth",
                "can-i",
                "get",
                "configmap/a",
                "-n",
                "ns-b",
                "--as",
                "bob",
            ],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&yes.stdout).trim(), "yes", "{ver}");
        let no = srv.kubectl_out(
            ver,
            &[
                "auth",
                "can-i",
                "get",
                "configmap/b",
                "-n",
                "ns-b",
                "--as",
                "bob",
            ],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no", "{ver}");
        let e = bob.fails(
            ver,
            &["get", "configmap", "a", "-n", "ns-b", "--as", "alice"],
            None,
        );
        assert!(
            e.contains(r#"users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#),
            "{ver}: {e}"
        );
    }
    // The admin (system:masters) is never refused.
    assert!(
        srv.kubectl("1.33", &["auth", "can-i", "escalate", "clusterroles"])
            .trim()
            == "yes"
    );
}
