//! The default roles and bindings, reconciled at every start as kube-apiserver's
//! `rbac/bootstrap-roles` hook does: a missing object is created; an existing one keeps
//! what users added and gets the rules, labels, annotations, aggregation selectors and
//! subjects it lacks — unless it is annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`. A binding whose roleRef
//! changed is recreated.
//!
//! Also the ClusterRole aggregation (kube-controller-manager's `clusterrole-aggregation`
//! controller, here in the server): a ClusterRole with an `aggregationRule` gets the
//! rules of every ClusterRole its selectors match, again whenever ClusterRoles change.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::rule::{covers, Rule};
use crate::bootstrap::system_user;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::obj;
use crate::route::Target;
use crate::state::Api;

const GROUP: &str = "rbac.authorization.k8s.io";
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], u: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": u})
}

fn meta(name: &str, labels: Value) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let (Some(m), Some(extra)) = (l.as_object_mut(), labels.as_object()) {
        m.extend(extra.clone());
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    cluster_role_labeled(name, json!({}), rules)
}

fn cluster_role_labeled(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole",
           "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector_label: &str) -> Value {
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRole",
           "metadata": meta(name, labels),
           "aggregationRule": {"clusterRoleSelectors": [
               {"matchLabels": {selector_label: "true"}}]},
           "rules": []})
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": GROUP, "name": n}))
        .collect();
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "ClusterRoleBinding",
           "metadata": meta(name, json!({})),
           "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

/// The default ClusterRoles (Kubernetes' bootstrap policy, plus the roles of h8s'
/// components).
pub fn cluster_roles() -> Vec<Value> {
    let agg = |to: &str| format!("rbac.authorization.k8s.io/aggregate-to-{to}");
    vec![
        cluster_role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated(
            "admin",
            json!({}),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        aggregated(
            "edit",
            json!({agg("admin"): "true"}),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        aggregated(
            "view",
            json!({agg("edit"): "true"}),
            "rbac.authorization.k8s.io/aggregate-to-view",
        ),
        cluster_role_labeled(
            "system:aggregate-to-admin",
            json!({agg("admin"): "true"}),
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(READ_WRITE, &[GROUP], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role_labeled(
            "system:aggregate-to-edit",
            json!({agg("edit"): "true"}),
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                r(&["create"], &[""], &["pods/eviction"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                        "events",
                    ],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["jobs", "cronjobs"]),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses"],
                ),
                r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        cluster_role_labeled(
            "system:aggregate-to-view",
            json!({agg("view"): "true"}),
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "events",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        cluster_role(
            "system:node",
            super::node::node_rules()
                .iter()
                .map(Rule::to_json)
                .collect(),
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:kube-scheduler",
            vec![
                r(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                r(&["get", "update"], &["coordination.k8s.io"], &["leases"]),
                r(&["create"], &[""], &["endpoints"]),
                r(&["get", "update"], &[""], &["endpoints"]),
                r(READ, &[""], &["nodes"]),
                r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                r(&["create"], &[""], &["bindings", "pods/binding"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(
                    READ,
                    &[""],
                    &["replicationcontrollers", "services", "namespaces"],
                ),
                r(READ, &["apps"], &["replicasets", "statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
                r(READ, &["node.k8s.io"], &["runtimeclasses"]),
                r(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
            ],
        ),
        // h8s' controller manager runs every controller under this one identity (no
        // per-controller ServiceAccounts): the garbage collector and the namespace
        // controller act on every kind, so it may read and write everything; `bind` and
        // `escalate` let it manage roles and bindings, `approve` node client certificates.
        cluster_role(
            "system:kube-controller-manager",
            vec![
                r(READ_WRITE, &["*"], &["*"]),
                r(&["bind", "escalate"], &[GROUP], &["roles", "clusterroles"]),
                r(&["approve", "sign"], &["certificates.k8s.io"], &["signers"]),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    const AUTHED: (&str, &str) = ("Group", "system:authenticated");
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding("system:discovery", "system:discovery", &[AUTHED]),
        binding("system:basic-user", "system:basic-user", &[AUTHED]),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[AUTHED, ("Group", "system:unauthenticated")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        // Kubernetes keeps `system:node` without subjects: nodes are authorized by the
        // Node authorizer.
        binding("system:node", "system:node", &[]),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        // What kubeadm binds for TLS bootstrapping: join-token holders may send node
        // client CSRs (auto-approved), nodes may renew their own certificate.
        binding(
            "h8s:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "h8s:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", "system:bootstrappers")],
        ),
        binding(
            "h8s:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ]
}

fn target(plural: &str, name: &str) -> Result<Target, ApiError> {
    let res = h8s_types::resources::find(GROUP, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    Ok(Target {
        res,
        ns: None,
        name: Some(name.to_string()),
        sub: None,
        watch_path: false,
        cr: None,
    })
}

fn autoupdate_off(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str)
        == Some("false")
}

/// Adds the labels and annotations of `want` that `o` lacks.
fn merge_meta(o: &mut Value, want: &Value) {
    for field in ["labels", "annotations"] {
        let Some(w) = want
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let m = obj::meta_mut(o);
        let e = m.entry(field).or_insert_with(|| json!({}));
        if !e.is_object() {
            *e = json!({});
        }
        if let Some(have) = e.as_object_mut() {
            for (k, v) in w {
                have.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// The reconciled form of an existing ClusterRole: its own rules plus the missing parts
/// of the expected ones (broken down, as Kubernetes reports them), its selectors plus the
/// missing expected ones. `None` when nothing is missing.
pub fn reconcile_role(existing: &Value, want: &Value) -> Option<Value> {
    let mut out = existing.clone();
    merge_meta(&mut out, want);
    if let Some(want_sel) = want
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let have: Vec<Value> = existing
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut sel = have.clone();
        for s in want_sel {
            if !have.contains(s) {
                sel.push(s.clone());
            }
        }
        out["aggregationRule"] = json!({"clusterRoleSelectors": sel});
    } else {
        let (_, missing) = covers(&Rule::list_of(existing), &Rule::list_of(want));
        if !missing.is_empty() {
            let mut rules = existing
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            rules.extend(missing.iter().map(Rule::to_json));
            out["rules"] = json!(rules);
        }
    }
    (out != *existing).then_some(out)
}

/// The reconciled form of an existing binding: its subjects plus the missing expected
/// ones. `Err(())` when its roleRef differs (it must be recreated).
pub fn reconcile_binding(existing: &Value, want: &Value) -> Result<Option<Value>, ()> {
    if existing.get("roleRef") != want.get("roleRef") {
        return Err(());
    }
    let mut out = existing.clone();
    merge_meta(&mut out, want);
    let mut subjects = existing
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let same = |a: &Value, b: &Value| {
        a.get("kind") == b.get("kind")
            && a.get("name") == b.get("name")
            && a.get("namespace") == b.get("namespace")
    };
    for s in want
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !subjects.iter().any(|x| same(x, s)) {
            subjects.push(s.clone());
        }
    }
    if !subjects.is_empty() {
        out["subjects"] = json!(subjects);
    }
    Ok((out != *existing).then_some(out))
}

/// Creates or reconciles every default ClusterRole and ClusterRoleBinding, then
/// aggregates.
pub async fn reconcile(api: &Arc<Api>) -> Result<(), ApiError> {
    let cx = Ctx::internal(system_user());
    for (plural, objs) in [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ] {
        for want in objs {
            let name = obj::name(&want).to_string();
            let t = target(plural, &name)?;
            let existing = api.read(&t, &name).await?.map(|(_, o)| o);
            let Some(existing) = existing else {
                match api.create_object(&cx, &t, want).await {
                    Ok(_) => tracing::info!(plural, name, "created the default RBAC object"),
                    Err(e) if e.reason == "AlreadyExists" => {}
                    Err(e) => return Err(e),
                }
                continue;
            };
            if autoupdate_off(&existing) {
                continue;
            }
            let new = if plural == "clusterroles" {
                reconcile_role(&existing, &want)
            } else {
                match reconcile_binding(&existing, &want) {
                    Ok(n) => n,
                    Err(()) => {
                        // A roleRef cannot change: delete and create again.
                        api.store
                            .delete(&obj::key(t.res, None, &name), None)
                            .await
                            .map_err(|e| crate::error::from_store(e, &t.subject(&name)))?;
                        api.create_object(&cx, &t, want).await?;
                        tracing::info!(name, "recreated the default binding with its roleRef");
                        continue;
                    }
                }
            };
            if let Some(new) = new {
                api.guaranteed_update(&cx, &t, &name, false, |_| Ok(new.clone()))
                    .await?;
                tracing::info!(plural, name, "reconciled the default RBAC object");
            }
        }
    }
    aggregate(api).await
}

/// The rules a ClusterRole with an aggregationRule gets: those of every other ClusterRole
/// one of its selectors matches, in name order, without repeats.
fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let sels = role
        .pointer("/aggregationRule/clusterRoleSelectors")?
        .as_array()?
        .iter()
        .filter_map(|s| h8s_machinery::LabelSelector::from_json(s).ok())
        .collect::<Vec<_>>();
    let mut rules: Vec<Value> = Vec::new();
    for other in all {
        if obj::name(other) == obj::name(role) {
            continue;
        }
        if !sels.iter().any(|s| s.matches_object(other)) {
            continue;
        }
        for rule in other
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// The aggregation until nothing changes (an aggregated role may gather another one, as
/// `admin` gathers `edit`, which gathers `view`).
pub async fn aggregate(api: &Arc<Api>) -> Result<(), ApiError> {
    for _ in 0..8 {
        if !aggregate_once(api).await? {
            break;
        }
    }
    Ok(())
}

/// One pass: every aggregated ClusterRole gets its rules; whether any changed.
async fn aggregate_once(api: &Arc<Api>) -> Result<bool, ApiError> {
    let mut changed = false;
    let res = target("clusterroles", "")?.res;
    let listed = api
        .store
        .list(&obj::prefix(res, None), Default::default())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut all: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|kv| obj::decode(kv).ok())
        .collect();
    all.sort_by(|a, b| obj::name(a).cmp(obj::name(b)));
    let cx = Ctx::internal(system_user());
    for role in &all {
        let Some(rules) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.get("rules").and_then(Value::as_array) == Some(&rules) {
            continue;
        }
        let name = obj::name(role).to_string();
        let t = target("clusterroles", &name)?;
        let rules = json!(rules);
        let r = api
            .guaranteed_update(&cx, &t, &name, false, |cur| {
                let mut o = cur.cloned().unwrap_or_default();
                o["rules"] = rules.clone();
                Ok(o)
            })
            .await;
        match r {
            Ok(_) => {
                changed = true;
                tracing::debug!(name, "aggregated the ClusterRole");
            }
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

/// Aggregates again whenever a ClusterRole changes (after a short quiet time, so that a
/// burst of writes costs one pass), until `shutdown`.
pub async fn run_aggregation(api: Arc<Api>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let prefix = format!("{}clusterroles/", super::index::PREFIX);
    let run = async {
        loop {
            let Ok(rev) = api.store.revision().await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let Ok(mut w) = api.store.watch(&prefix, rev).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            if let Err(e) = aggregate(&api).await {
                tracing::warn!(error = %e.message, "ClusterRole aggregation failed");
            }
            while let Some(Ok(_)) = w.next().await {
                // Drain what else arrives in a short while, then aggregate once.
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout(Duration::from_millis(50), w.next()).await
                {
                }
                if let Err(e) = aggregate(&api).await {
                    tracing::warn!(error = %e.message, "ClusterRole aggregation failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = run => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciling_keeps_additions_and_adds_what_is_missing() {
        let want = cluster_roles()
            .into_iter()
            .find(|o| obj::name(o) == "system:basic-user")
            .unwrap();
        // Unchanged: nothing to do.
        assert!(reconcile_role(&want, &want).is_none());
        // A user's extra rule stays; a removed default rule comes back.
        let mut edited = want.clone();
        edited["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        edited["metadata"]["labels"]["mine"] = json!("yes");
        let out = reconcile_role(&edited, &want).unwrap();
        let rules = Rule::list_of(&out);
        assert!(covers(&rules, &Rule::list_of(&want)).0);
        assert!(rules.iter().any(|r| r.resources == ["pods"]));
        assert_eq!(out["metadata"]["labels"]["mine"], "yes");
        // Bindings: subjects added, never removed; a changed roleRef means recreate.
        let b = binding("x", "view", &[("Group", "g1")]);
        let mut mine = b.clone();
        mine["subjects"] = json!([{"kind": "User", "name": "bob"}]);
        let out = reconcile_binding(&mine, &b).unwrap().unwrap();
        assert_eq!(out["subjects"].as_array().unwrap().len(), 2);
        let other = binding("x", "edit", &[("Group", "g1")]);
        assert!(reconcile_binding(&other, &b).is_err());
        let mut off = edited.clone();
        off["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(autoupdate_off(&off));
    }

    #[test]
    fn aggregation_collects_matching_roles() {
        let all = cluster_roles();
        let rules_of = |name: &str| {
            let role = all.iter().find(|o| obj::name(o) == name).unwrap();
            aggregated_rules(role, &all).unwrap()
        };
        // view ⊂ edit's sources: edit gathers system:aggregate-to-edit; admin gathers
        // system:aggregate-to-admin and edit (labelled aggregate-to-admin, still empty here).
        let view = rules_of("view");
        assert_eq!(
            view,
            all.iter()
                .find(|o| obj::name(o) == "system:aggregate-to-view")
                .unwrap()["rules"]
                .as_array()
                .unwrap()
                .clone()
        );
        assert!(!rules_of("edit").is_empty());
        assert!(rules_of("admin").iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("rolebindings"))));
        // A plain role is not aggregated.
        let plain = all
            .iter()
            .find(|o| obj::name(o) == "cluster-admin")
            .unwrap();
        assert!(aggregated_rules(plain, &all).is_none());
    }
}
