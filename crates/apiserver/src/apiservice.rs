//! `apiregistration.k8s.io/v1` APIService: the kind, the local APIServices of every group
//! version this server serves (`metrics.k8s.io/v1beta1` included, which `metrics_api`
//! serves in-process), and their `Available` condition.
//!
//! A local APIService (no `spec.service`) is `Available` at once (`Local`). A
//! service-backed one starts with an empty status; [`crate::aggregator`] checks its
//! service, writes its `Available` condition and proxies its group version.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::route::Target;
use crate::state::Api;
use crate::strategy::{Strategy, Sub};

/// The registry strategy of APIServices: the generic one, and the status of local
/// APIServices derived on every write of the spec.
pub(crate) struct ApiService;

fn is_local(o: &Value) -> bool {
    o.pointer("/spec/service").is_none_or(Value::is_null)
}

/// The `status` a local APIService gets.
fn local_status() -> Value {
    let now = crate::util::now_rfc3339();
    json!({"conditions": [{"type": "Available", "status": "True", "lastTransitionTime": now,
        "reason": "Local", "message": "Local APIServices are always available"}]})
}

impl Strategy for ApiService {
    fn prepare_for_create(&self, res: &h8s_types::Resource, _user: &UserInfo, o: &mut Value) {
        h8s_types::defaults::prepare_for_create(res, o);
        o["status"] = if is_local(o) {
            local_status()
        } else {
            json!({})
        };
    }

    fn prepare_for_update(
        &self,
        res: &h8s_types::Resource,
        sub: Option<Sub>,
        old: &Value,
        new: &mut Value,
    ) {
        crate::strategy::generic_prepare_for_update(res, sub, old, new);
        // A service-backed APIService keeps its condition until the aggregator has
        // checked the new spec (at once).
        if sub.is_none() && new.get("spec") != old.get("spec") {
            if is_local(new) {
                new["status"] = local_status();
            } else if is_local(old) {
                new["status"] = json!({});
            }
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
