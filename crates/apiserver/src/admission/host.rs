//! HostNamespaces (an h8s plugin): what a pod spec asks of the host, refused. Every pod is
//! its own VM with its own kernel, so the host's network, PID and IPC namespaces and the
//! host's files are not there to share: `spec.hostNetwork`, `spec.hostPID`, `spec.hostIPC`
//! and `hostPath` volumes are refused with 403 Forbidden, for every user and namespace (the
//! cluster runs no system pod that needs them; an admin's pod could not get them either,
//! and silently running it without would be worse). Pods are checked, and the pod templates
//! of the workload kinds, so a Deployment fails at `kubectl apply` rather than in its
//! ReplicaSet's events. An update keeps what the object already had (objects written before
//! the plugin can still be changed and deleted). `securityContext.privileged` is allowed:
//! it means privileged inside the pod's own VM (docs/agent.md).

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Admission, Operation, Request};
use crate::error::{ApiError, Subject};

/// The plugin.
pub struct HostNamespaces;

/// Where the pod spec is in an object of `group/plural`.
fn pod_spec_path(group: &str, plural: &str) -> Option<&'static str> {
    Some(match (group, plural) {
        ("", "pods") => "/spec",
        ("", "podtemplates") => "/template/spec",
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => "/spec/template/spec",
        ("batch", "cronjobs") => "/spec/jobTemplate/spec/template/spec",
        _ => return None,
    })
}

/// The host-oriented fields `spec` sets (`prefix` names where the spec is).
pub(crate) fn host_fields(spec: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[f] == Value::Bool(true) {
            out.push(format!("{prefix}.{f}"));
        }
    }
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        if !v["hostPath"].is_null() {
            out.push(format!("{prefix}.volumes[{i}].hostPath"));
        }
    }
    out
}

impl Admission for HostNamespaces {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if req.sub.is_some() || req.op == Operation::Delete {
                return Ok(());
            }
            let Some(path) = pod_spec_path(req.res.group, req.res.plural) else {
                return Ok(());
            };
            let Some(obj) = obj else { return Ok(()) };
            let prefix = path.trim_start_matches('/').replace('/', ".");
            let spec = obj.pointer(path).cloned().unwrap_or(Value::Null);
            let mut bad = host_fields(&spec, &prefix);
            if let Some(old) = req.old.and_then(|o| o.pointer(path)) {
                let had = host_fields(old, &prefix);
                bad.retain(|f| !had.contains(f));
            }
            if bad.is_empty() {
                return Ok(());
            }
            Err(ApiError::forbidden_about(
                &Subject {
                    group: req.res.group,
                    resource: req.res.plural,
                    name: req.name,
                },
                &format!(
                    "{} not allowed: every pod is its own VM, with no host namespaces or host \
                     paths to share",
                    bad.join(", ")
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_host_fields() {
        let spec = json!({
            "hostNetwork": true, "hostPID": false, "hostIPC": true,
            "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/"}}],
        });
        assert_eq!(
            host_fields(&spec, "spec"),
            [
                "spec.hostNetwork",
                "spec.hostIPC",
                "spec.volumes[1].hostPath"
            ]
        );
        assert!(host_fields(&json!({"containers": []}), "spec").is_empty());
        assert_eq!(
            pod_spec_path("batch", "cronjobs"),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(pod_spec_path("", "configmaps"), None);
    }
}
