use super::*;
use crate::auth::AllowAuthenticated;
use serde_json::json;

fn user(name: &str, tenant: &str) -> UserInfo {
    UserInfo {
        username: name.into(),
        groups: vec![
            format!("h8s:tenant:{tenant}"),
            "system:authenticated".into(),
        ],
        ..Default::default()
    }
}

fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
        resource_request: true,
        ..Default::default()
    }
}

fn guard() -> TenantGuard {
    let g = TenantGuard::new(Arc::new(AllowAuthenticated));
    let ix = g.index();
    ix.replace(
        Owned::Namespace,
        vec![
            ("a1".into(), Some("a".into())),
            ("b1".into(), Some("b".into())),
            ("default".into(), None),
        ],
    );
    ix.replace(Owned::Network, vec![("na".into(), Some("a".into()))]);
    g
}

fn denied(d: Decision) -> bool {
    matches!(d, Decision::Deny(_))
}

#[test]
fn namespaces_are_the_tenants_own() {
    let g = guard();
    let alice = user("alice", "a");
    assert!(matches!(
        g.authorize(&alice, &attrs("get", "", "namespaces", "", "a1")),
        Decision::Allow
    ));
    // Another tenant's and a missing namespace answer the same.
    let other = g.authorize(&alice, &attrs("get", "", "namespaces", "", "b1"));
    let missing = g.authorize(&alice, &attrs("get", "", "namespaces", "", "zz"));
    match (other, missing) {
        (Decision::Deny(x), Decision::Deny(y)) => assert_eq!(x, y),
        other => panic!("{other:?}"),
    }
    assert!(denied(g.authorize(
        &alice,
        &attrs("delete", "", "namespaces", "", "default")
    )));
    assert!(matches!(
        g.authorize(&alice, &attrs("create", "", "namespaces", "", "")),
        Decision::Allow
    ));
    let Decision::AllowFiltered(f) = g.authorize(&alice, &attrs("list", "", "namespaces", "", ""))
    else {
        panic!("list is filtered")
    };
    assert!(f.allows(&json!({"metadata": {"name": "a1", "labels": {TENANT_LABEL: "a"}}})));
    assert!(!f.allows(&json!({"metadata": {"name": "b1", "labels": {TENANT_LABEL: "b"}}})));
    assert!(!f.allows(&json!({"metadata": {"name": "default"}})));
}

#[test]
fn namespaced_kinds_only_in_own_namespaces() {
    let g = guard();
    let alice = user("alice", "a");
    assert!(matches!(
        g.authorize(&alice, &attrs("create", "", "pods", "a1", "")),
        Decision::Allow
    ));
    for ns in ["b1", "default", "kube-system", "nope"] {
        assert!(denied(
            g.authorize(&alice, &attrs("list", "", "pods", ns, ""))
        ));
        assert!(denied(
            g.authorize(&alice, &attrs("get", "", "secrets", ns, "s"))
        ));
    }
    let Decision::AllowFiltered(f) =
        g.authorize(&alice, &attrs("watch", "apps", "deployments", "", ""))
    else {
        panic!("all-namespaces watch is filtered")
    };
    assert!(f.allows(&json!({"metadata": {"namespace": "a1"}})));
    assert!(!f.allows(&json!({"metadata": {"namespace": "b1"}})));
    assert!(!f.allows(&json!({"metadata": {}})));
}

#[test]
fn cluster_kinds() {
    let g = guard();
    let alice = user("alice", "a");
    assert!(!denied(
        g.authorize(&alice, &attrs("list", "", "nodes", "", ""))
    ));
    assert!(denied(
        g.authorize(&alice, &attrs("delete", "", "nodes", "", "n"))
    ));
    assert!(denied(g.authorize(
        &alice,
        &attrs("create", "storage.k8s.io", "storageclasses", "", "")
    )));
    for (grp, r) in [
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        ("apiregistration.k8s.io", "apiservices"),
        ("certificates.k8s.io", "certificatesigningrequests"),
    ] {
        for v in ["get", "list", "create", "delete"] {
            assert!(
                denied(g.authorize(&alice, &attrs(v, grp, r, "", ""))),
                "{v} {r}"
            );
        }
    }
    assert!(!denied(g.authorize(
        &alice,
        &attrs(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            ""
        )
    )));
    // Networks: named access only to the own ones.
    assert!(!denied(
        g.authorize(&alice, &attrs("patch", "", "networks", "", "na"))
    ));
    assert!(denied(
        g.authorize(&alice, &attrs("patch", "", "networks", "", "nb"))
    ));
}

#[test]
fn admins_and_components_are_not_confined() {
    let g = guard();
    let mut root = user("root", "a");
    root.groups.push(MASTERS_GROUP.into());
    assert!(matches!(
        g.authorize(&root, &attrs("get", "", "namespaces", "", "b1")),
        Decision::Allow
    ));
    let sa = UserInfo {
        username: "system:serviceaccount:b1:default".into(),
        ..Default::default()
    };
    assert!(matches!(
        g.authorize(&sa, &attrs("list", "", "namespaces", "", "")),
        Decision::Allow
    ));
}

#[test]
fn inner_denial_and_filters_compose() {
    struct Inner;
    impl Authorizer for Inner {
        fn authorize(&self, _: &UserInfo, a: &Attributes) -> Decision {
            if a.resource == "secrets" {
                Decision::Deny("rbac says no".into())
            } else {
                Decision::AllowFiltered(Arc::new(crate::auth::FnFilter(|o: &Value| {
                    o["metadata"]["name"] != "hidden"
                })))
            }
        }
    }
    let g = TenantGuard::with_index(Arc::new(Inner), guard().index());
    let alice = user("alice", "a");
    assert!(denied(
        g.authorize(&alice, &attrs("get", "", "secrets", "a1", "s"))
    ));
    let Decision::AllowFiltered(f) = g.authorize(&alice, &attrs("list", "", "pods", "", "")) else {
        panic!()
    };
    assert!(f.allows(&json!({"metadata": {"namespace": "a1", "name": "x"}})));
    assert!(!f.allows(&json!({"metadata": {"namespace": "a1", "name": "hidden"}})));
    assert!(!f.allows(&json!({"metadata": {"namespace": "b1", "name": "x"}})));
}
