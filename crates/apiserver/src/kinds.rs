//! The built-in kinds of issue 12 that need the server rather than the table:
//!
//! - core `ComponentStatus` (`kubectl get componentstatuses`): read-only, computed on
//!   each request from h8s's own components — `etcd-0` is the store (a read of it
//!   answers), `scheduler` and `controller-manager` are the control loops, healthy while
//!   their leader-election Lease in `kube-system` is fresh or, without leader election
//!   (one server, in-process control plane), while they hold a watch on this server.
//! - core `Binding` (`POST /api/v1/namespaces/{ns}/bindings`): the older form of
//!   `pods/binding`, the same write.
//! - The default objects: the `kubernetes` ServiceCIDR (the `--service-cluster-ip-range`)
//!   and the mandatory and suggested FlowSchemas and PriorityLevelConfigurations
//!   kube-apiserver creates. h8s's priority and fairness (`flow`) classifies by its own
//!   fixed levels; it does not read these objects (see docs/apiserver.md).

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::obj;
use crate::response::{json_response, Body};
use crate::route::Target;
use crate::state::Api;

/// The namespace of the control plane's leader-election Leases.
const LEASE_NAMESPACE: &str = "kube-system";

/// (ComponentStatus name, Lease name, the component's user) in kubectl's order.
const COMPONENTS: &[(&str, &str, &str)] = &[
    (
        "controller-manager",
        "kube-controller-manager",
        "system:kube-controller-manager",
    ),
    ("scheduler", "kube-scheduler", "system:kube-scheduler"),
];
const STORE_COMPONENT: &str = "etcd-0";

fn component(name: &str, healthy: Result<String, String>) -> Value {
    let cond = match healthy {
        Ok(message) => json!({"type": "Healthy", "status": "True", "message": message}),
        Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1",
        "metadata": {"name": name}, "conditions": [cond]})
}

pub(crate) fn target(group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Target> {
    let res = h8s_types::resources::find(group, "v1", plural)?;
    Some(Target {
        res,
        ns: ns.map(str::to_string),
        name: Some(name.to_string()),
        sub: None,
        watch_path: false,
        cr: None,
    })
}

/// Whether a leader-election Lease was renewed within its duration.
fn lease_fresh(lease: &Value, now: i64) -> Result<String, String> {
    let holder = obj::at(lease, "spec.holderIdentity")
        .and_then(Value::as_str)
        .unwrap_or("");
    let duration = obj::at(lease, "spec.leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(15);
    let renewed = obj::at(lease, "spec.renewTime")
        .and_then(Value::as_str)
        .and_then(h8s_types::table::parse_time);
    match renewed {
        _ if holder.is_empty() => Err("no leader holds the lease".into()),
        Some(t) if now - t <= duration => Ok("ok".into()),
        Some(t) => Err(format!(
            "the leader {holder} last renewed its lease {}s ago (lease duration {duration}s)",
            now - t
        )),
        None => Err(format!("the leader {holder} never renewed its lease")),
    }
}

impl Api {
    async fn component_statuses(&self) -> Vec<Value> {
        let now = jiff::Timestamp::now().as_second();
        let mut out = Vec::new();
        for (name, lease, user) in COMPONENTS {
            let health = match target("coordination.k8s.io", "leases", Some(LEASE_NAMESPACE), lease)
            {
                None => Err("leases are not served".to_string()),
                Some(t) => match self.read(&t, lease).await {
                    Ok(Some((_, l))) => lease_fresh(&l, now),
                    Ok(None) if self.flow.watches_of(user) > 0 => Ok("ok".into()),
                    Ok(None) => Err(format!(
                        "no {user} is connected (no watch open and no Lease {LEASE_NAMESPACE}/{lease})"
                    )),
                    Err(e) => Err(e.message),
                },
            };
            out.push(component(name, health));
        }
        let store = match target("", "namespaces", None, "default") {
            None => Err("namespaces are not served".to_string()),
            Some(t) => match self.read(&t, "default").await {
                Ok(_) => Ok("ok".into()),
                Err(e) => Err(e.message),
            },
        };
        out.push(component(STORE_COMPONENT, store));
        out
    }

    /// `GET /api/v1/componentstatuses[/{name}]`.
    pub(crate) async fn serve_component_status(
        &self,
        cx: &mut Ctx,
        t: &Target,
    ) -> Result<Response<Body>, ApiError> {
        cx.warnings
            .push("v1 ComponentStatus is deprecated in v1.19+".to_string());
        let all = self.component_statuses().await;
        let items: Vec<Value> = match &t.name {
            Some(n) => {
                let one = all
                    .into_iter()
                    .find(|c| obj::name(c) == n)
                    .ok_or_else(|| ApiError::not_found(&t.subject(n)))?;
                if !cx.as_table {
                    return Ok(json_response(200, &one));
                }
                vec![one]
            }
            None => all,
        };
        if cx.as_table {
            let tab = t
                .strategy()
                .table(t.res, &items, &cx.include_object, json!({}));
            return Ok(json_response(200, &tab));
        }
        Ok(json_response(
            200,
            &json!({"kind": "ComponentStatusList", "apiVersion": "v1",
                "metadata": {}, "items": items}),
        ))
    }

    /// `POST /api/v1/namespaces/{ns}/bindings`: binds the pod the Binding names, as
    /// `pods/{name}/binding` does.
    pub(crate) async fn create_binding(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        mut o: Value,
    ) -> Result<Response<Body>, ApiError> {
        if let Some(ns) = &t.ns {
            obj::meta_mut(&mut o).insert("namespace".into(), json!(ns));
        }
        let name = obj::name(&o).to_string();
        h8s_types::validation::validate_create(t.res, &o)
            .map_err(|e| ApiError::from_field_errors(t.res.kind, t.res.group, &name, &e))?;
        let pods = target("", "pods", t.ns.as_deref(), &name)
            .ok_or_else(|| ApiError::internal("pods are not in the resource table"))?;
        let pods = Target {
            sub: Some("binding".into()),
            ..pods
        };
        let body = Bytes::from(serde_json::to_vec(&o).unwrap_or_default());
        // The body was JSON-decoded already; the pod binding reads it as JSON.
        cx.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        self.bind(cx, &pods, body).await
    }
}

/// The default ServiceCIDR (`kubernetes`, as kube-apiserver names it) and the FlowSchemas
/// and PriorityLevelConfigurations Kubernetes creates, each created if missing.
pub(crate) async fn ensure_defaults(api: &Arc<Api>) -> Result<(), ApiError> {
    let mut objs = vec![(
        "networking.k8s.io",
        "servicecidrs",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": [api.service_cidr.cidr_string()]}}),
    )];
    for o in priority_levels() {
        objs.push((
            "flowcontrol.apiserver.k8s.io",
            "prioritylevelconfigurations",
            o,
        ));
    }
    for o in flow_schemas() {
        objs.push(("flowcontrol.apiserver.k8s.io", "flowschemas", o));
    }
    let cx = Ctx::internal(crate::bootstrap::system_user());
    for (group, plural, o) in objs {
        let name = obj::name(&o).to_string();
        let Some(t) = target(group, plural, None, &name) else {
            continue;
        };
        if api.read(&t, &name).await?.is_some() {
            continue;
        }
        match api.create_object(&cx, &t, o).await {
            Ok(_) => tracing::debug!(plural, %name, "created a default object"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    ready_service_cidr(api).await
}

/// The default ServiceCIDR's `Ready` condition (its status is the allocator's to say:
/// h8s's allocator serves exactly that range).
async fn ready_service_cidr(api: &Arc<Api>) -> Result<(), ApiError> {
    let Some(t) = target("networking.k8s.io", "servicecidrs", None, "kubernetes") else {
        return Ok(());
    };
    let t = Target {
        sub: Some("status".into()),
        ..t
    };
    let cx = Ctx::internal(crate::bootstrap::system_user());
    api.guaranteed_update(&cx, &t, "kubernetes", false, |old| {
        let mut new = old.cloned().unwrap_or(Value::Null);
        let ready = obj::at(&new, "status.conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
        if !ready {
            new["status"] = json!({"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": crate::util::now_rfc3339(), "reason": "",
                "message": "Kubernetes Service CIDR is ready"}]});
        }
        Ok(new)
    })
    .await?;
    Ok(())
}

const AUTOUPDATE: &str = "apf.kubernetes.io/autoupdate-spec";

fn meta(name: &str) -> Value {
    json!({"name": name, "annotations": {AUTOUPDATE: "true"}})
}

fn limited(name: &str, shares: i64, lendable: i64, queuing: Option<(i64, i64, i64)>) -> Value {
    let response = match queuing {
        Some((queues, hand, len)) => json!({"type": "Queuing",
            "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": len}}),
        None => json!({"type": "Reject"}),
    };
    json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": meta(name),
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": shares,
            "lendablePercent": lendable, "limitResponse": response}}})
}

/// kube-apiserver's mandatory (`exempt`, `catch-all`) and suggested priority levels.
pub(crate) fn priority_levels() -> Vec<Value> {
    vec![
        json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": meta("exempt"),
            "spec": {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}}),
        limited("catch-all", 5, 0, None),
        limited("system", 30, 33, Some((64, 6, 50))),
        limited("node-high", 40, 25, Some((64, 6, 50))),
        limited("leader-election", 10, 0, Some((16, 4, 50))),
        limited("workload-high", 40, 50, Some((128, 6, 50))),
        limited("workload-low", 100, 90, Some((128, 6, 50))),
        limited("global-default", 20, 50, Some((128, 6, 50))),
    ]
}

fn group(name: &str) -> Value {
    json!({"kind": "Group", "group": {"name": name}})
}
fn user(name: &str) -> Value {
    json!({"kind": "User", "user": {"name": name}})
}

fn all_rules(subjects: Vec<Value>) -> Value {
    json!([{"subjects": subjects,
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
            "clusterScope": true, "namespaces": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}])
}

fn schema(name: &str, level: &str, precedence: i64, by_user: Option<&str>, rules: Value) -> Value {
    let mut spec = json!({"priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence, "rules": rules});
    if let Some(m) = by_user {
        spec["distinguisherMethod"] = json!({"type": m});
    }
    json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": meta(name), "spec": spec})
}

/// kube-apiserver's mandatory (`exempt`, `catch-all`) and the main suggested FlowSchemas.
pub(crate) fn flow_schemas() -> Vec<Value> {
    let everyone = || {
        vec![
            group("system:authenticated"),
            group("system:unauthenticated"),
        ]
    };
    vec![
        schema(
            "exempt",
            "exempt",
            1,
            None,
            all_rules(vec![group("system:masters")]),
        ),
        schema(
            "probes",
            "exempt",
            2,
            None,
            json!([{"subjects": everyone(), "nonResourceRules": [{"verbs": ["get"],
                "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}]}]),
        ),
        schema(
            "system-leader-election",
            "leader-election",
            100,
            Some("ByUser"),
            json!([{"subjects": [user("system:kube-controller-manager"), user("system:kube-scheduler"),
                    {"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": "*"}}],
                "resourceRules": [{"verbs": ["get", "create", "update"],
                    "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "namespaces": ["*"]}]}]),
        ),
        schema(
            "system-nodes",
            "system",
            500,
            Some("ByUser"),
            all_rules(vec![group("system:nodes")]),
        ),
        schema(
            "kube-controller-manager",
            "workload-high",
            800,
            Some("ByNamespace"),
            all_rules(vec![user("system:kube-controller-manager")]),
        ),
        schema(
            "kube-scheduler",
            "workload-high",
            800,
            Some("ByNamespace"),
            all_rules(vec![user("system:kube-scheduler")]),
        ),
        schema(
            "kube-system-service-accounts",
            "workload-high",
            900,
            Some("ByNamespace"),
            all_rules(vec![json!({"kind": "ServiceAccount",
                "serviceAccount": {"namespace": "kube-system", "name": "*"}})]),
        ),
        schema(
            "service-accounts",
            "workload-low",
            9000,
            Some("ByUser"),
            all_rules(vec![group("system:serviceaccounts")]),
        ),
        schema(
            "global-default",
            "global-default",
            9900,
            Some("ByUser"),
            all_rules(everyone()),
        ),
        schema(
            "catch-all",
            "catch-all",
            10000,
            Some("ByUser"),
            all_rules(everyone()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        for (plural, objs) in [
            ("prioritylevelconfigurations", priority_levels()),
            ("flowschemas", flow_schemas()),
        ] {
            let res =
                h8s_types::resources::find("flowcontrol.apiserver.k8s.io", "v1", plural).unwrap();
            for mut o in objs {
                h8s_types::defaults::apply(res, &mut o);
                h8s_types::validation::validate_create(res, &o)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", obj::name(&o)));
            }
        }
        let names: Vec<String> = flow_schemas()
            .iter()
            .map(|o| obj::name(o).to_string())
            .collect();
        assert!(names.contains(&"exempt".into()) && names.contains(&"catch-all".into()));
    }

    #[test]
    fn lease_freshness() {
        let l = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
            "renewTime": "2026-01-01T00:00:00Z"}});
        let t = h8s_types::table::parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(lease_fresh(&l, t + 10), Ok("ok".into()));
        assert!(lease_fresh(&l, t + 60).unwrap_err().contains("60s ago"));
        assert!(lease_fresh(&json!({"spec": {}}), t).is_err());
    }
}
