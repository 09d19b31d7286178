//! CertificateSigningRequests, as kube-apiserver's `certificates` registry: the
//! requester's identity is recorded on create; the spec never changes afterwards;
//! `approval` changes only the conditions and `status` only the rest of the status;
//! an approved request is signed by the configured [`crate::seams::CsrSigner`].

use base64::Engine as _;
use futures::future::BoxFuture;
use h8s_types::Resource;
use serde_json::{json, Value};

use super::{Guard, Strategy, Sub};
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::obj;
use crate::state::Api;

pub(crate) struct Csr;

/// Whether the CSR carries a true condition of `kind` (`Approved`, `Denied`, `Failed`).
pub(crate) fn has_condition(csr: &Value, kind: &str) -> bool {
    obj::at(csr, "status.conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == kind && c.get("status").and_then(Value::as_str).unwrap_or("True") == "True"
        })
}

/// Fills the timestamps Kubernetes fills on new conditions.
fn stamp_conditions(o: &mut Value) {
    let now = crate::util::now_rfc3339();
    if let Some(list) = o
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in list.iter_mut().filter(|c| c.is_object()) {
            for f in ["lastUpdateTime", "lastTransitionTime"] {
                if c.get(f)
                    .is_none_or(|v| v.as_str().is_none_or(str::is_empty))
                {
                    c[f] = json!(now);
                }
            }
            if c.get("status").is_none() {
                c["status"] = json!("True");
            }
        }
    }
}

impl Strategy for Csr {
    fn subresource(&self, res: &Resource, name: &str) -> Option<Sub> {
        match name {
            "approval" => Some(Sub::Approval),
            _ => super::Generic.subresource(res, name),
        }
    }

    fn tracks_generation(&self, _res: &Resource) -> bool {
        false
    }

    fn prepare_for_create(&self, res: &Resource, user: &UserInfo, o: &mut Value) {
        h8s_types::defaults::prepare_for_create(res, o);
        if let Some(m) = o.as_object_mut() {
            m.remove("status");
        }
        obj::set_at(o, "spec.username", json!(user.username));
        if user.uid.is_empty() {
            if let Some(s) = o.pointer_mut("/spec").and_then(Value::as_object_mut) {
                s.remove("uid");
            }
        } else {
            obj::set_at(o, "spec.uid", json!(user.uid));
        }
        obj::set_at(o, "spec.groups", json!(user.groups));
        if user.extra.is_empty() {
            if let Some(s) = o.pointer_mut("/spec").and_then(Value::as_object_mut) {
                s.remove("extra");
            }
        } else {
            obj::set_at(o, "spec.extra", json!(user.extra));
        }
    }

    fn prepare_for_update(&self, _res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        let mut merged = new.clone();
        // The spec is fixed at create, whatever the write.
        match old.get("spec") {
            Some(s) => merged["spec"] = s.clone(),
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("spec");
                }
            }
        }
        let old_status = old.get("status").cloned().unwrap_or(json!({}));
        let new_status = new.get("status").cloned().unwrap_or(json!({}));
        let status = match sub {
            // approval: the conditions only.
            Some(Sub::Approval) => {
                let mut s = old_status;
                match new_status.get("conditions") {
                    Some(c) => s["conditions"] = c.clone(),
                    None => {
                        if let Some(m) = s.as_object_mut() {
                            m.remove("conditions");
                        }
                    }
                }
                s
            }
            // status: everything but the approval decisions, which stay as they were.
            Some(Sub::Status) => {
                let mut s = new_status;
                let decisions: Vec<Value> = old_status
                    .get("conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| c["type"] == "Approved" || c["type"] == "Denied")
                    .cloned()
                    .collect();
                let mut others: Vec<Value> = s
                    .get("conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| c["type"] != "Approved" && c["type"] != "Denied")
                    .cloned()
                    .collect();
                let mut all = decisions;
                all.append(&mut others);
                if !all.is_empty() || s.get("conditions").is_some() {
                    s["conditions"] = json!(all);
                }
                s
            }
            _ => old_status,
        };
        if status.as_object().is_some_and(|m| !m.is_empty()) {
            merged["status"] = status;
        } else if let Some(m) = merged.as_object_mut() {
            m.remove("status");
        }
        stamp_conditions(&mut merged);
        *new = merged;
    }

    fn before_update<'a: 'b, 'b>(
        &'a self,
        api: &'a std::sync::Arc<Api>,
        _old: &'b Value,
        new: &'b mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        Box::pin(async move {
            let Some(signer) = api.csr_signer.as_ref() else {
                return Ok(None);
            };
            let signed = obj::at(new, "status.certificate")
                .and_then(Value::as_str)
                .is_some_and(|c| !c.is_empty());
            if signed
                || !has_condition(new, "Approved")
                || has_condition(new, "Denied")
                || has_condition(new, "Failed")
            {
                return Ok(None);
            }
            if let Some(pem) = signer.sign(new).await? {
                obj::set_at(
                    new,
                    "status.certificate",
                    json!(base64::engine::general_purpose::STANDARD.encode(pem)),
                );
            }
            Ok(None)
        })
    }
}
