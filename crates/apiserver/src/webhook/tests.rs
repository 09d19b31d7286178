use serde_json::json;

use super::config::{self, Rule};
use crate::admission::{Operation, Request};
use crate::auth::UserInfo;

fn req<'a>(
    op: Operation,
    res: &'static h8s_types::Resource,
    sub: Option<&'a str>,
    user: &'a UserInfo,
) -> Request<'a> {
    Request {
        op,
        res,
        sub,
        namespace: if res.namespaced { "ns" } else { "" },
        name: "x",
        user,
        dry_run: false,
        old: None,
    }
}

fn res(group: &str, plural: &str) -> &'static h8s_types::Resource {
    h8s_types::resources::find(group, "v1", plural).unwrap()
}

#[test]
fn rules_match_as_kube_apiserver_does() {
    let u = UserInfo::default();
    let pods = res("", "pods");
    let rule = |v: serde_json::Value| Rule::parse(&v);
    let pods_create = rule(json!({"operations": ["CREATE"], "apiGroups": [""],
        "apiVersions": ["v1"], "resources": ["pods"]}));
    assert!(pods_create.matches(&req(Operation::Create, pods, None, &u)));
    assert!(!pods_create.matches(&req(Operation::Update, pods, None, &u)));
    assert!(!pods_create.matches(&req(Operation::Create, pods, Some("status"), &u)));
    let status = rule(json!({"operations": ["*"], "apiGroups": ["*"],
        "apiVersions": ["*"], "resources": ["pods/status"]}));
    assert!(status.matches(&req(Operation::Update, pods, Some("status"), &u)));
    assert!(!status.matches(&req(Operation::Update, pods, None, &u)));
    // `*` is every resource but no subresource; `*/*` everything; `pods/*` pods and theirs.
    let star = rule(
        json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
        "resources": ["*"]}),
    );
    assert!(star.matches(&req(
        Operation::Delete,
        res("apps", "deployments"),
        None,
        &u
    )));
    assert!(!star.matches(&req(Operation::Update, pods, Some("status"), &u)));
    let all = rule(
        json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
        "resources": ["*/*"]}),
    );
    assert!(all.matches(&req(Operation::Update, pods, Some("status"), &u)));
    assert!(all.matches(&req(Operation::Update, pods, None, &u)));
    let pods_all = rule(
        json!({"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"],
        "resources": ["pods/*"]}),
    );
    assert!(pods_all.matches(&req(Operation::Update, pods, Some("status"), &u)));
    assert!(pods_all.matches(&req(Operation::Update, pods, None, &u)));
    // Scope.
    let cluster = rule(
        json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"],
        "resources": ["*"], "scope": "Cluster"}),
    );
    assert!(!cluster.matches(&req(Operation::Create, pods, None, &u)));
    assert!(cluster.matches(&req(Operation::Create, res("", "namespaces"), None, &u)));
    // Group.
    let apps = rule(json!({"operations": ["CREATE"], "apiGroups": ["apps"],
        "apiVersions": ["v1"], "resources": ["*"]}));
    assert!(!apps.matches(&req(Operation::Create, pods, None, &u)));
}

#[test]
fn selectors_and_match_conditions() {
    let sel = config::selector(Some(&json!({"matchLabels": {"team": "a"}})));
    assert!(config::selects(&sel, &json!({"team": "a", "x": "y"})));
    assert!(!config::selects(&sel, &json!({"team": "b"})));
    assert!(!config::selects(&sel, &serde_json::Value::Null));
    assert!(config::selects(
        &config::selector(Some(&json!({}))),
        &serde_json::Value::Null
    ));
    let conds = config::conditions(&json!({"matchConditions": [
        {"name": "not-system", "expression": "!request.userInfo.username.startsWith('system:')"},
        {"name": "labelled", "expression": "has(object.metadata.labels) && 'a' in object.metadata.labels"},
    ]}));
    let u = UserInfo {
        username: "alice".into(),
        ..Default::default()
    };
    let pods = res("", "pods");
    let r = req(Operation::Create, pods, None, &u);
    let obj = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
    let vars = config::cel_vars(&r, Some(&obj));
    assert_eq!(config::eval_conditions(&conds, &vars), Ok(true));
    let plain = json!({"metadata": {"name": "x"}});
    let vars = config::cel_vars(&r, Some(&plain));
    assert_eq!(config::eval_conditions(&conds, &vars), Ok(false));
    // An error is an error unless another condition is false.
    let bad = config::conditions(&json!({"matchConditions": [
        {"name": "err", "expression": "object.nope.deeper == 1"},
    ]}));
    assert!(config::eval_conditions(&bad, &vars).is_err());
}

#[test]
fn uncompilable_cel_is_a_field_error() {
    let vap = res(
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
    );
    let o = json!({"spec": {"validations": [{"expression": "object.spec.replicas <"},
        {"expression": "true", "messageExpression": "'ok'"}]}});
    let errs = config::compile_errors(vap, &o);
    let text = format!("{errs:?}");
    assert!(text.contains("spec.validations[0].expression"), "{text}");
    assert!(!text.contains("validations[1]"), "{text}");
}
