//! `apiregistration.k8s.io/v1` APIService: the kind, the local APIServices of every group
//! version this server serves (`metrics.k8s.io/v1beta1` included, which `metrics_api`
//! serves in-process), and their `Available` condition.
//!
//! h8s does not proxy to aggregated API servers: a non-local APIService (one with
//! `spec.service`) names a Service in a tenant Network, which the API server on the host
//! cannot reach. Such an APIService is stored with `Available: False`
//! (`FailedDiscoveryCheck`, saying why) and its group version is not served.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::route::Target;
use crate::state::Api;
use crate::strategy::{Strategy, Sub};

/// The registry strategy of APIServices: the generic one, and the status derived on
/// every write of the spec.
pub(crate) struct ApiService;

/// The `status` an APIService gets: Available (Local) or not (no proxying).
fn status(o: &Value) -> Value {
    let now = crate::util::now_rfc3339();
    let local = o.pointer("/spec/service").is_none_or(Value::is_null);
    let (st, reason, message) = if local {
        (
            "True",
            "Local",
            "Local APIServices are always available".to_string(),
        )
    } else {
        let s = |k: &str| {
            o.pointer(&format!("/spec/service/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        (
            "False",
            "FailedDiscoveryCheck",
            format!(
                "service/{} in \"{}\" is not reachable: h8s does not proxy to aggregated API servers (the API server cannot reach Services in tenant Networks)",
                s("name"),
                s("namespace")
            ),
        )
    };
    json!({"conditions": [{"type": "Available", "status": st, "lastTransitionTime": now,
        "reason": reason, "message": message}]})
}

impl Strategy for ApiService {
    fn prepare_for_create(&self, res: &h8s_types::Resource, _user: &UserInfo, o: &mut Value) {
        h8s_types::defaults::prepare_for_create(res, o);
        o["status"] = status(o);
    }

    fn prepare_for_update(
        &self,
        res: &h8s_types::Resource,
        sub: Option<Sub>,
        old: &Value,
        new: &mut Value,
    ) {
        crate::strategy::generic_prepare_for_update(res, sub, old, new);
        if sub.is_none() && new.get("spec") != old.get("spec") {
            new["status"] = status(new);
        }
    }
}

/// Creates the local APIService of every served group version that lacks one.
pub(crate) async fn ensure_local(api: &Arc<Api>) -> Result<(), ApiError> {
    let Some(res) = h8s_types::resources::find("apiregistration.k8s.io", "v1", "apiservices")
    else {
        return Ok(());
    };
    let cx = Ctx::internal(crate::bootstrap::system_user());
    let groups = h8s_types::resources::groups();
    let mut wanted: Vec<(String, String, i64, i64)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let group_priority = 18000 - 100 * i as i64;
        for (j, v) in g.versions.iter().enumerate() {
            wanted.push((
                g.name.to_string(),
                v.to_string(),
                group_priority,
                if j == 0 { 15 } else { 9 },
            ));
        }
    }
    wanted.push((
        crate::metrics_api::GROUP.to_string(),
        crate::metrics_api::VERSION.to_string(),
        100,
        100,
    ));
    for (group, version, gp, vp) in wanted {
        let name = format!("{version}.{group}");
        let t = Target {
            res,
            ns: None,
            name: Some(name.clone()),
            sub: None,
            watch_path: false,
            cr: None,
        };
        if api.read(&t, &name).await?.is_some() {
            continue;
        }
        let mut spec = json!({"version": version, "groupPriorityMinimum": gp,
            "versionPriority": vp});
        if !group.is_empty() {
            spec["group"] = json!(group);
        }
        let o = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
            "spec": spec});
        match api.create_object(&cx, &t, o).await {
            Ok(_) => tracing::debug!(%name, "created the local APIService"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
