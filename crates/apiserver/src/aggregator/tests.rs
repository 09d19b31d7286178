use super::*;

fn agg_with(group: &str, version: &str, gp: i64, vp: i64) -> Aggregator {
    let d = tempfile::tempdir().unwrap();
    let fp = frontproxy::ensure(d.path()).unwrap();
    let a = Aggregator::new(AggregatorConfig::default(), fp);
    a.put(Arc::new(backend(group, version, gp, vp)));
    a
}

fn backend(group: &str, version: &str, gp: i64, vp: i64) -> Backend {
    Backend {
        name: format!("{version}.{group}"),
        group: group.into(),
        version: version.into(),
        group_priority: gp,
        version_priority: vp,
        svc_namespace: "kube-system".into(),
        svc_name: "api".into(),
        port: 443,
        tls: Err("none".into()),
        state: RwLock::new(Ok(None)),
        openapi: RwLock::new(None),
        idle: Default::default(),
        spec: Value::Null,
    }
}

#[test]
fn request_info_of_aggregated_paths() {
    let a = agg_with("wardle.example.com", "v1alpha1", 1000, 15);
    let crds = Registry::default();
    let get = |m: http::Method, p: &str, q: Option<&str>| {
        let (path, r) = (p, crate::route::route(p, &crds));
        a.target(&r, &m, path, &Query::parse(q), &crds)
    };
    let t = get(http::Method::GET, "/apis/wardle.example.com/v1alpha1", None).unwrap();
    assert!(!t.resource_request);
    let t = get(
        http::Method::GET,
        "/apis/wardle.example.com/v1alpha1/namespaces/ns1/flunders/f1/status",
        None,
    )
    .unwrap();
    assert_eq!(
        (
            t.verb,
            &*t.namespace,
            &*t.resource,
            &*t.name,
            &*t.subresource
        ),
        ("get", "ns1", "flunders", "f1", "status")
    );
    let t = get(
        http::Method::GET,
        "/apis/wardle.example.com/v1alpha1/flunders",
        Some("watch=true"),
    )
    .unwrap();
    assert_eq!((t.verb, &*t.namespace), ("watch", ""));
    let t = get(
        http::Method::DELETE,
        "/apis/wardle.example.com/v1alpha1/namespaces/ns1/flunders",
        None,
    )
    .unwrap();
    assert_eq!(t.verb, "deletecollection");
    let t = get(
        http::Method::GET,
        "/apis/wardle.example.com/v1alpha1/namespaces/ns1",
        None,
    )
    .unwrap();
    assert_eq!(
        (&*t.resource, &*t.name, &*t.namespace),
        ("namespaces", "ns1", "ns1")
    );
    // Other group versions, and the server's own, are never proxied.
    assert!(get(
        http::Method::GET,
        "/apis/wardle.example.com/v1/flunders",
        None
    )
    .is_none());
    assert!(get(http::Method::GET, "/api/v1/pods", None).is_none());
    let own = agg_with("apps", "v1", 1000, 15);
    let p = "/apis/apps/v1";
    assert!(own
        .target(
            &crate::route::route(p, &crds),
            &http::Method::GET,
            p,
            &Query::parse(None),
            &crds
        )
        .is_none());
}

#[test]
fn discovery_of_aggregated_groups() {
    let a = agg_with("wardle.example.com", "v1alpha1", 1000, 15);
    a.put(Arc::new(backend("wardle.example.com", "v1beta1", 1000, 20)));
    a.put(Arc::new(backend("metrics.example.com", "v1", 2000, 15)));
    let crds = Registry::default();
    let groups = a.groups(&crds);
    let names: Vec<&str> = groups.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(names, ["metrics.example.com", "wardle.example.com"]);
    let doc = a.group_doc("wardle.example.com", &crds).unwrap();
    assert_eq!(doc["preferredVersion"]["version"], "v1beta1");
    let list = json!({"kind": "APIResourceList", "groupVersion": "wardle.example.com/v1beta1",
        "resources": [
            {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
             "verbs": ["get", "list"], "shortNames": ["fl"]},
            {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder",
             "verbs": ["get"]}]});
    let (_, vs) = &groups[1];
    *vs[0].state.write().unwrap() = Ok(Some(list));
    *vs[1].state.write().unwrap() = Err(("MissingEndpoints".into(), "x".into()));
    let g = aggregated_group("wardle.example.com", vs);
    assert_eq!(g["versions"][0]["freshness"], "Current");
    let r = &g["versions"][0]["resources"][0];
    assert_eq!(r["resource"], "flunders");
    assert_eq!(r["scope"], "Namespaced");
    assert_eq!(r["responseKind"]["group"], "wardle.example.com");
    assert_eq!(r["shortNames"], json!(["fl"]));
    assert_eq!(r["subresources"][0]["subresource"], "status");
    assert_eq!(g["versions"][1]["freshness"], "Stale");
}

#[test]
fn tenants_reach_aggregated_resources_only_in_their_namespaces() {
    use crate::auth::{AllowAuthenticated, Authorizer, Decision};
    use crate::tenancy::{Owned, TenantGuard};
    // RBAC allowing everything: the tenant guard alone must confine the tenant.
    let g = TenantGuard::new(Arc::new(AllowAuthenticated));
    g.index().replace(
        Owned::Namespace,
        vec![
            ("a1".into(), Some("a".into())),
            ("b1".into(), Some("b".into())),
        ],
    );
    let alice = crate::auth::UserInfo {
        username: "alice".into(),
        groups: vec!["h8s:tenant:a".into(), "system:authenticated".into()],
        ..Default::default()
    };
    let a = agg_with("wardle.example.com", "v1alpha1", 1000, 15);
    let crds = Registry::default();
    let decide = |m: http::Method, p: &str| {
        let t = a
            .target(
                &crate::route::route(p, &crds),
                &m,
                p,
                &Query::parse(None),
                &crds,
            )
            .unwrap();
        let mut attrs = Attributes::default();
        t.attributes(&mut attrs);
        g.authorize(&alice, &attrs)
    };
    let base = "/apis/wardle.example.com/v1alpha1";
    assert!(matches!(
        decide(
            http::Method::GET,
            &format!("{base}/namespaces/a1/flunders/f")
        ),
        Decision::Allow
    ));
    for (m, p) in [
        (
            http::Method::GET,
            format!("{base}/namespaces/b1/flunders/f"),
        ),
        (http::Method::POST, format!("{base}/namespaces/b1/flunders")),
        (http::Method::GET, format!("{base}/flunders")),
        (http::Method::DELETE, format!("{base}/fischers/x")),
    ] {
        let d = decide(m.clone(), &p);
        assert!(
            matches!(d, Decision::Deny(_) | Decision::AllowFiltered(_)),
            "{m} {p}"
        );
    }
}
