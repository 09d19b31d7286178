//! The namespace controller (kube-controller-manager's `namespace` controller, through the
//! API only). A namespace being deleted (`deletionTimestamp` set, `kubernetes` in
//! `spec.finalizers`) has its content deleted: every namespaced resource from discovery that
//! supports delete, with `deletecollection` where served (else one delete per object), both
//! with background propagation. The status conditions say what is left, as Kubernetes words
//! them (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionContentFailure`,
//! `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`, …). Once nothing is left,
//! `kubernetes` is removed through the `finalize` subresource, and the namespace, finalized,
//! is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::discover::{self, Served};
use crate::{Context, Error};

/// The finalizer token of this controller in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// The condition types the controller maintains, in Kubernetes' order, with the reason and
/// message of their "all is well" (False) state.
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// Concurrent namespace syncs (`--concurrent-namespace-syncs`).
const CONCURRENCY: u16 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("deleting the content of namespace {namespace} failed ({failed} resource types)")]
    Content { namespace: String, failed: usize },
}

struct State {
    ctx: Context,
}

/// Runs the namespace controller until its watch ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .run(reconcile, error_policy, Arc::new(State { ctx }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "namespace controller");
            }
        })
        .await;
    Err(Error::Stopped { name: "namespace" })
}

fn error_policy(_ns: Arc<Namespace>, e: &NsError, st: Arc<State>) -> Action {
    tracing::warn!(error = %e, source = ?std::error::Error::source(e), "namespace deletion will be retried");
    Action::requeue(st.ctx.timers.namespace_finalizer_estimate / 2 + Duration::from_secs(1))
}

fn status_of(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

#[tracing::instrument(name = "namespace deletion", skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, st: Arc<State>) -> Result<Action, NsError> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let client = st.ctx.client.clone();
    let name = ns.name_any();
    let nss: Api<Namespace> = Api::all(client.clone());
    // Several controllers may edit a terminating namespace: work from its latest state.
    let Some(ns) = nss.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else {
        return Ok(Action::await_change());
    };
    let uid = ns.metadata.uid.clone().unwrap_or_default();
    if ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating") {
        let p = json!({"status": {"phase": "Terminating"}});
        nss.patch_status(&name, &PatchParams::default(), &Patch::Merge(&p))
            .await?;
    }
    let fins = spec_finalizers(&ns);
    if fins.is_empty() {
        return delete_finalized(&nss, &name, &uid).await;
    }
    if !fins.iter().any(|f| f == FINALIZER) {
        // Other finalizers hold it; their owners finalize it.
        return Ok(Action::await_change());
    }

    let content = delete_all_content(&st, &name, deleted_at.0).await;
    let conditions = content.conditions();
    let old = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(new) = merge_conditions(&old, &conditions) {
        let p = json!({"status": {"conditions": new}});
        if let Err(e) = nss
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            tracing::warn!(error = %e, "could not update the namespace's conditions");
        }
    }
    if content.failed > 0 {
        return Err(NsError::Content {
            namespace: name,
            failed: content.failed,
        });
    }
    if !content.estimate.is_zero() {
        tracing::debug!(remaining = ?content.remaining, estimate = ?content.estimate, "content remains");
        return Ok(Action::requeue(
            content.estimate / 2 + Duration::from_secs(1).min(content.estimate),
        ));
    }

    // Nothing left: remove our token through the finalize subresource (re-reading the
    // namespace when another writer got there first, as kube's retryOnConflictError).
    let mut latest = ns;
    for _ in 0..5 {
        let rest: Vec<String> = spec_finalizers(&latest)
            .into_iter()
            .filter(|f| f != FINALIZER)
            .collect();
        let mut fin = latest.clone();
        fin.spec.get_or_insert_with(Default::default).finalizers = Some(rest.clone());
        match nss
            .replace_subresource("finalize", &name, &PostParams::default(), &fin)
            .await
        {
            Ok(_) => {
                tracing::info!("namespace content removed; finalized");
                if rest.is_empty() {
                    return delete_finalized(&nss, &name, &uid).await;
                }
                return Ok(Action::await_change());
            }
            Err(e) if status_of(&e) == 404 => return Ok(Action::await_change()),
            Err(e) if status_of(&e) == 409 => match nss.get_opt(&name).await? {
                Some(n) if n.metadata.uid.as_deref() == Some(uid.as_str()) => latest = n,
                _ => return Ok(Action::await_change()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

fn spec_finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

/// Deletes a finalized namespace (the API server removes it once no finalizer is left).
async fn delete_finalized(nss: &Api<Namespace>, name: &str, uid: &str) -> Result<Action, NsError> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match nss.delete(name, &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if matches!(status_of(&e), 404 | 409) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// What deleting a namespace's content found.
#[derive(Debug, Default)]
struct Content {
    discovery_error: Option<String>,
    /// Resource types whose deletion failed, with why.
    errors: Vec<String>,
    failed: usize,
    /// `plural.group` → how many objects remain.
    remaining: BTreeMap<String, usize>,
    /// finalizer → how many remaining objects carry it.
    finalizers: BTreeMap<String, usize>,
    /// How long to wait before checking again; zero when nothing is expected to remain.
    estimate: Duration,
}

impl Content {
    /// The conditions that are not in their "all is well" state, as (type, reason, message).
    fn conditions(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.discovery_error {
            out.push((
                "NamespaceDeletionDiscoveryFailure",
                "DiscoveryFailed".to_string(),
                e.clone(),
            ));
        }
        if !self.errors.is_empty() {
            let mut msgs = self.errors.clone();
            msgs.sort();
            out.push((
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed".to_string(),
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    msgs.len(),
                    msgs.join(", ")
                ),
            ));
        }
        if !self.remaining.is_empty() {
            let parts: Vec<String> = self
                .remaining
                .iter()
                .map(|(gr, n)| format!("{gr} has {n} resource instances"))
                .collect();
            out.push((
                "NamespaceContentRemaining",
                "SomeResourcesRemain".to_string(),
                format!("Some resources are remaining: {}", parts.join(", ")),
            ));
        }
        if !self.finalizers.is_empty() {
            let parts: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            out.push((
                "NamespaceFinalizersRemaining",
                "SomeFinalizersRemain".to_string(),
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            ));
        }
        out
    }
}

/// The namespace's conditions after this pass, or `None` when nothing changed
/// (kube's `updateConditions`: every maintained type is present, False when all is well).
fn merge_conditions(
    old: &[NamespaceCondition],
    failing: &[(&'static str, String, String)],
) -> Option<Vec<NamespaceCondition>> {
    let now = Time(jiff::Timestamp::now());
    let mut out = old.to_vec();
    let mut changed = false;
    for (ty, ok_reason, ok_msg) in CONDITIONS {
        let (status, reason, message) = match failing.iter().find(|(t, _, _)| t == ty) {
            Some((_, r, m)) => ("True", r.clone(), m.clone()),
            None => ("False", ok_reason.to_string(), ok_msg.to_string()),
        };
        match out.iter_mut().find(|c| c.type_ == *ty) {
            None => {
                out.push(NamespaceCondition {
                    type_: ty.to_string(),
                    status: status.to_string(),
                    reason: Some(reason),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status
                    || c.reason.as_deref() != Some(reason.as_str())
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    c.status = status.to_string();
                    c.reason = Some(reason);
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed.then_some(out)
}

/// How long to wait for content that goes away on its own (a pod's grace period, or
/// finalizers).
struct ResourceOutcome {
    estimate: Duration,
    remaining: usize,
    finalizers: BTreeMap<String, usize>,
}

async fn delete_all_content(st: &State, ns: &str, deleted_at: jiff::Timestamp) -> Content {
    let mut content = Content::default();
    let resources = match discover::discover(&st.ctx.client).await {
        Ok(r) => r,
        Err(e) => {
            content.discovery_error = Some(e.to_string());
            content.failed += 1;
            return content;
        }
    };
    let deletable: Vec<Served> = resources
        .supporting(&["delete"])
        .filter(|s| s.namespaced)
        .cloned()
        .collect();
    let results: Vec<(Served, Result<ResourceOutcome, String>)> = futures::stream::iter(deletable)
        .map(|s| async move {
            let r = delete_resource(st, &s, ns, deleted_at).await;
            (s, r)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (s, r) in results {
        match r {
            Ok(o) => {
                content.estimate = content.estimate.max(o.estimate);
                if o.remaining > 0 {
                    content.remaining.insert(s.group_resource(), o.remaining);
                    for (f, n) in o.finalizers {
                        *content.finalizers.entry(f).or_insert(0) += n;
                    }
                }
            }
            Err(e) => {
                content.errors.push(e);
                content.failed += 1;
            }
        }
    }
    content
}

async fn delete_resource(
    st: &State,
    s: &Served,
    ns: &str,
    deleted_at: jiff::Timestamp,
) -> Result<ResourceOutcome, String> {
    let client = st.ctx.client.clone();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &s.ar);
    let gvr = format!("{}/{}", s.ar.api_version, s.ar.plural);
    let err = |e: kube::Error| format!("{gvr}: {e}");
    let mut estimate = Duration::ZERO;
    if s.ar.group.is_empty() && s.ar.plural == "pods" {
        estimate = pod_grace_estimate(&client, ns, deleted_at)
            .await
            .map_err(err)?;
    }
    // The namespace controller asks for background propagation so no orphan finalizer
    // holds the content.
    let dp = DeleteParams::background();
    let mut collection_done = false;
    if s.supports("deletecollection") {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => collection_done = true,
            Err(e) if matches!(status_of(&e), 404 | 405) => {}
            Err(e) => return Err(err(e)),
        }
    }
    if !s.supports("list") {
        return Ok(ResourceOutcome {
            estimate,
            remaining: 0,
            finalizers: BTreeMap::new(),
        });
    }
    if !collection_done {
        let items = api
            .list_metadata(&ListParams::default())
            .await
            .map_err(err)?;
        for o in items {
            match api.delete(&o.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if matches!(status_of(&e), 404 | 405) => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    let left = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(err)?;
    let mut finalizers = BTreeMap::new();
    for o in &left.items {
        for f in o.metadata.finalizers.iter().flatten() {
            *finalizers.entry(f.clone()).or_insert(0) += 1;
        }
    }
    let remaining = left.items.len();
    if remaining == 0 {
        return Ok(ResourceOutcome {
            estimate: Duration::ZERO,
            remaining,
            finalizers,
        });
    }
    if estimate.is_zero() && !finalizers.is_empty() {
        // Finalizers are expected to finish; check again after the default estimate.
        estimate = st.ctx.timers.namespace_finalizer_estimate;
    }
    if estimate.is_zero() {
        return Err(format!(
            "unexpected items still remain in namespace: {ns} for gvr: {gvr}"
        ));
    }
    Ok(ResourceOutcome {
        estimate,
        remaining,
        finalizers,
    })
}

/// The longest grace period of the namespace's running pods, less the time since the
/// namespace's deletion began (zero once it has passed).
async fn pod_grace_estimate(
    client: &kube::Client,
    ns: &str,
    deleted_at: jiff::Timestamp,
) -> Result<Duration, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut grace = 0i64;
    for p in pods.list(&ListParams::default()).await? {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        if let Some(g) = p
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
        {
            grace = grace.max(g);
        }
    }
    let allowed = Duration::from_secs(grace.max(0) as u64);
    let since = jiff::Timestamp::now().duration_since(deleted_at);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    Ok(if since >= allowed {
        Duration::ZERO
    } else {
        allowed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_worded_as_kubernetes() {
        let mut c = Content::default();
        c.remaining.insert("configmaps.".into(), 2);
        c.remaining.insert("deployments.apps".into(), 1);
        c.finalizers.insert("example.com/hold".into(), 3);
        let conds = c.conditions();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[0].0, "NamespaceContentRemaining");
        assert_eq!(
            conds[0].2,
            "Some resources are remaining: configmaps. has 2 resource instances, deployments.apps has 1 resource instances"
        );
        assert_eq!(
            conds[1].2,
            "Some content in the namespace has finalizers remaining: example.com/hold in 3 resource instances"
        );
        let merged = merge_conditions(&[], &conds).unwrap();
        assert_eq!(merged.len(), 5, "every maintained type is present");
        let ok = merged
            .iter()
            .find(|c| c.type_ == "NamespaceDeletionDiscoveryFailure")
            .unwrap();
        assert_eq!(ok.status, "False");
        assert_eq!(ok.reason.as_deref(), Some("ResourcesDiscovered"));
        let rem = merged
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(rem.status, "True");
        assert_eq!(rem.reason.as_deref(), Some("SomeResourcesRemain"));
        // The same state again changes nothing.
        assert!(merge_conditions(&merged, &conds).is_none());
        // Content gone: the conditions flip to False.
        let done = merge_conditions(&merged, &[]).unwrap();
        assert!(done.iter().all(|c| c.status == "False"));
    }
}
