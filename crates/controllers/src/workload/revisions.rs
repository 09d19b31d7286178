//! ControllerRevisions of DaemonSets and StatefulSets: one per template, named
//! `<owner>-<hash>`, labelled with `controller-revision-hash`, holding the template as the
//! strategic-merge patch `kubectl rollout undo` applies (`{"spec":{"template":{…,
//! "$patch":"replace"}}}`), numbered in order of use; old ones beyond
//! `revisionHistoryLimit` are deleted when no pod runs them.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::ResourceExt;
use serde_json::json;

use super::{is_not_found, ReconcileError};

pub(crate) const HASH_LABEL: &str = "controller-revision-hash";

/// The revision data of a template (what `kubectl rollout undo` patches back).
pub(crate) fn data_of(template: &PodTemplateSpec) -> Result<serde_json::Value, ReconcileError> {
    let mut t = serde_json::to_value(template)?;
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": t}}))
}

/// The owner's revisions, oldest first, and the one of `hash` (made, or renumbered to
/// be the newest, when needed).
pub(crate) async fn ensure(
    api: &Api<ControllerRevision>,
    owner: OwnerReference,
    selector: &Selector,
    template: &PodTemplateSpec,
    hash: &str,
) -> Result<(ControllerRevision, Vec<ControllerRevision>), ReconcileError> {
    let list = api
        .list(&ListParams::default().labels(&selector.to_string()))
        .await?;
    let mut all: Vec<ControllerRevision> = list
        .items
        .into_iter()
        .filter(|r| super::controller_of(&r.metadata).is_some_and(|o| o.uid == owner.uid))
        .collect();
    all.sort_by_key(|r| r.revision);
    let max = all.last().map_or(0, |r| r.revision);
    let name = format!("{}-{hash}", owner.name);
    if let Some(i) = all.iter().position(|r| r.name_any() == name) {
        if all[i].revision < max {
            let patch = json!({"revision": max + 1});
            all[i] = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            all.sort_by_key(|r| r.revision);
        }
        let cur = all.iter().find(|r| r.name_any() == name).cloned();
        return Ok((cur.unwrap_or_else(|| all[i].clone()), all));
    }
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(data_of(template)?)),
        revision: max + 1,
    };
    let created = match api.create(&PostParams::default(), &cr).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
        Err(e) => return Err(e.into()),
    };
    all.push(created.clone());
    Ok((created, all))
}

/// Deletes the oldest revisions beyond `limit`, keeping those named in `keep`.
pub(crate) async fn cleanup(
    api: &Api<ControllerRevision>,
    all: &[ControllerRevision],
    keep: &HashSet<String>,
    limit: i32,
) -> Result<(), ReconcileError> {
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let live: Vec<&ControllerRevision> = all
        .iter()
        .filter(|r| !keep.contains(&r.name_any()))
        .collect();
    if live.len() <= limit {
        return Ok(());
    }
    for r in &live[..live.len() - limit] {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
