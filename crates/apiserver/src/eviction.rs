//! `pods/eviction`: a delete that honours the pod's PodDisruptionBudget, as
//! kube-apiserver's `EvictionREST` does (`kubectl drain` evicts through it).

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use serde_json::Value;

use crate::body::{decode_object, Media};
use crate::ctx::Ctx;
use crate::error::{from_store, ApiError};
use crate::obj;
use crate::response::{json_response, success_status, Body};
use crate::rest::{decode_for, DeleteOptions};
use crate::route::Target;
use crate::state::Api;
use crate::strategy::pod::{
    budget_covers, eviction_of, spend_budget, unhealthy_pod_may_go, Eviction,
};

impl Api {
    pub(crate) async fn evict(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let ev = decode_object(media, &body)?;
        let name = t.name.clone().unwrap_or_default();
        let in_body = obj::name(&ev);
        if !in_body.is_empty() && in_body != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let opts = ev
            .get("deleteOptions")
            .map(DeleteOptions::from_value)
            .unwrap_or_default();
        let pod_t = Target {
            sub: None,
            ..t.clone()
        };
        let (_, pod) = self
            .read(&pod_t, &name)
            .await?
            .ok_or_else(|| ApiError::not_found(&pod_t.subject(&name)))?;
        if eviction_of(&pod) == Eviction::CheckBudget {
            self.spend_disruption(cx, t, &pod).await?;
        }
        if !cx.dry_run() && !crate::obj::is_deleting(&pod) {
            self.mark_disruption_target(cx, t, &name).await?;
        }
        self.delete_one(cx, &pod_t, &name, &opts).await?;
        Ok(json_response(201, &success_status(201)))
    }

    /// Records why the pod goes, as Kubernetes does before an eviction deletes it: the
    /// `DisruptionTarget` condition (reason `EvictionByEvictionAPI`).
    async fn mark_disruption_target(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        name: &str,
    ) -> Result<(), ApiError> {
        let status_t = Target {
            sub: Some("status".into()),
            ..t.clone()
        };
        let now = crate::util::now_rfc3339();
        self.guaranteed_update(cx, &status_t, name, false, |cur| {
            let mut new = cur.cloned().unwrap_or(Value::Null);
            obj::meta_mut(&mut new).remove("resourceVersion");
            let cond = serde_json::json!({"type": "DisruptionTarget", "status": "True",
                "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting",
                "lastTransitionTime": now, "lastProbeTime": null});
            if !obj::at(&new, "status.conditions").is_some_and(Value::is_array) {
                obj::set_at(&mut new, "status.conditions", serde_json::json!([]));
            }
            if let Some(list) = new
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                match list.iter_mut().find(|c| c["type"] == "DisruptionTarget") {
                    Some(c) => *c = cond,
                    None => list.push(cond),
                }
            }
            Ok(new)
        })
        .await?;
        Ok(())
    }

    /// Spends one disruption of the budget covering `pod`, if any, or refuses.
    async fn spend_disruption(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        pod: &Value,
    ) -> Result<(), ApiError> {
        let pdbs = h8s_types::resources::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
        let ns = t.ns.clone().unwrap_or_default();
        let pdb_t = Target {
            res: pdbs,
            ns: Some(ns.clone()),
            name: None,
            sub: Some("status".into()),
            watch_path: false,
            cr: None,
        };
        let listed = self
            .store
            .list(&obj::prefix(pdbs, Some(&ns)), Default::default())
            .await
            .map_err(|e| from_store(e, &pdb_t.subject("")))?;
        let mut covering = Vec::new();
        for kv in &listed.items {
            let pdb = decode_for(&pdb_t, kv)?;
            if budget_covers(&pdb, pod) {
                covering.push(pdb);
            }
        }
        let pdb = match covering.as_slice() {
            [] => return Ok(()),
            [one] => one,
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        if unhealthy_pod_may_go(pdb, pod) {
            return Ok(());
        }
        let pdb_name = obj::name(pdb).to_string();
        let pod_name = obj::name(pod).to_string();
        let now = crate::util::now_rfc3339();
        self.guaranteed_update(cx, &pdb_t, &pdb_name, false, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(&pdb_t.subject(&pdb_name)))?;
            let mut new = spend_budget(cur, &pod_name, &now)?;
            // Retried on a race with the budget's controller, from the newest state.
            obj::meta_mut(&mut new).remove("resourceVersion");
            Ok(new)
        })
        .await?;
        Ok(())
    }
}
