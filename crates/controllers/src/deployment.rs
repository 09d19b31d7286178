//! The Deployment controller, after kube-controller-manager's: one ReplicaSet per pod
//! template (`<deployment>-<pod-template-hash>`, the hash label added to its selector and
//! template), revisions in `deployment.kubernetes.io/revision` (+ `revision-history`,
//! `desired-replicas`, `max-replicas`), RollingUpdate (maxSurge/maxUnavailable, percentages
//! rounded as Kubernetes does) and Recreate, proportional scaling of a rollout in progress,
//! pause/resume, `revisionHistoryLimit` cleanup, and the Progressing/Available conditions
//! with Kubernetes' reasons (`progressDeadlineSeconds` included) — so `kubectl rollout
//! status|history|undo|restart|pause|resume` and `kubectl scale` work.
//!
//! A sync is computed by [`Sync`] from a snapshot (the Deployment and the ReplicaSets it
//! controls) into a list of [`Op`]s; only [`reconcile`] talks to the API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use crate::workload::hash::compute_hash;
use crate::workload::{
    self, claim, controller_ref, key_of, Claim, Events, Expectations, ReconcileError, SeenRevision,
};
use crate::{Context, Error};

pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub(crate) const HASH_LABEL: &str = "pod-template-hash";
/// `--deployment-controller-max-revision-history-length-in-chars`' default.
const REVISION_HISTORY_CHARS: usize = 2000;
const CONTROLLER: &str = "deployment-controller";

// Condition reasons (`deploymentutil`).
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";
const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// One write a sync decided on, in order.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    CreateRs(Box<ReplicaSet>),
    /// A merge patch of a ReplicaSet (replicas, annotations, minReadySeconds).
    PatchRs {
        name: String,
        patch: Value,
    },
    DeleteRs {
        name: String,
        uid: String,
    },
    /// The Deployment's own annotations (its revision).
    Annotate(BTreeMap<String, String>),
    Status(Box<DeploymentStatus>),
    Event {
        reason: &'static str,
        note: String,
    },
    Warning {
        reason: &'static str,
        note: String,
    },
}

/// One sync of one Deployment over the ReplicaSets it controls.
pub(crate) struct Sync<'a> {
    d: &'a Deployment,
    replicas: i32,
    template: PodTemplateSpec,
    /// The status as this sync has made it so far.
    status: DeploymentStatus,
    annotations: BTreeMap<String, String>,
    pub(crate) ops: Vec<Op>,
    pub(crate) requeue: Option<Duration>,
    now: jiff::Timestamp,
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn annotation<'b>(m: &'b ObjectMeta, k: &str) -> Option<&'b str> {
    m.annotations.as_ref()?.get(k).map(String::as_str)
}

pub(crate) fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (Option<jiff::Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.name_any(),
    )
}

/// A template without the `pod-template-hash` label, as JSON (`EqualIgnoreHash`).
fn template_key(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
        if m.annotations.as_ref().is_some_and(|a| a.is_empty()) {
            m.annotations = None;
        }
    }
    serde_json::to_value(&t).unwrap_or_default()
}

fn skip_copy(k: &str) -> bool {
    matches!(
        k,
        "kubectl.kubernetes.io/last-applied-configuration"
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

fn get_cond<'b>(s: &'b DeploymentStatus, t: &str) -> Option<&'b DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn remove_cond(s: &mut DeploymentStatus, t: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|c| c.type_ != t);
        if c.is_empty() {
            s.conditions = None;
        }
    }
}

/// `SetDeploymentCondition`: nothing when status and reason are unchanged; the transition
/// time kept when only the reason changes.
fn set_cond(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_cond(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_cond(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

fn cond(
    t: &str,
    status: &str,
    reason: &str,
    msg: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

impl<'a> Sync<'a> {
    pub(crate) fn new(d: &'a Deployment, now: jiff::Timestamp) -> Result<Sync<'a>, ReconcileError> {
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| ReconcileError::Invalid("deployment has no spec".into()))?;
        // API timestamps have second precision.
        let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        Ok(Sync {
            d,
            replicas: spec.replicas.unwrap_or(1),
            template: spec.template.clone(),
            status: d.status.clone().unwrap_or_default(),
            annotations: d.metadata.annotations.clone().unwrap_or_default(),
            ops: Vec::new(),
            requeue: None,
            now,
        })
    }

    fn spec(&self) -> &'a k8s_openapi::api::apps::v1::DeploymentSpec {
        self.d.spec.as_ref().expect("checked in new")
    }

    fn is_rolling(&self) -> bool {
        self.spec()
            .strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate")
    }

    /// `ResolveFenceposts`: (maxSurge, maxUnavailable) as numbers of pods.
    fn fenceposts(&self) -> Result<(i32, i32), ReconcileError> {
        let ru = self
            .spec()
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let quarter = IntOrString::String("25%".into());
        let surge_v = ru.map_or(Some(&quarter), |r| r.max_surge.as_ref());
        let unavail_v = ru.map_or(Some(&quarter), |r| r.max_unavailable.as_ref());
        let surge = workload::scaled_value(surge_v.or(Some(&quarter)), self.replicas, true, 0)?;
        let mut unavail =
            workload::scaled_value(unavail_v.or(Some(&quarter)), self.replicas, false, 0)?;
        if surge == 0 && unavail == 0 {
            unavail = 1;
        }
        Ok((surge, unavail))
    }

    fn max_surge(&self) -> Result<i32, ReconcileError> {
        if !self.is_rolling() {
            return Ok(0);
        }
        Ok(self.fenceposts()?.0)
    }

    fn max_unavailable(&self) -> Result<i32, ReconcileError> {
        if !self.is_rolling() || self.replicas == 0 {
            return Ok(0);
        }
        Ok(self.fenceposts()?.1.min(self.replicas))
    }

    fn progress_deadline(&self) -> Option<i32> {
        self.spec()
            .progress_deadline_seconds
            .filter(|s| *s != i32::MAX)
    }

    fn name(&self) -> String {
        self.d.name_any()
    }

    /// The whole sync (`syncDeployment`), given the ReplicaSets the Deployment controls
    /// and whether pods of old ReplicaSets still run (only Recreate asks).
    pub(crate) fn run(
        &mut self,
        mut rss: Vec<ReplicaSet>,
        old_pods_running: bool,
    ) -> Result<(), ReconcileError> {
        let spec = self.spec();
        if spec
            .selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && spec
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty())
        {
            self.ops.push(Op::Warning {
                reason: "SelectingAll",
                note: "This deployment is selecting all pods. A non-empty selector is required."
                    .into(),
            });
            if self.status.observed_generation < self.d.metadata.generation {
                self.status.observed_generation = self.d.metadata.generation;
                self.ops.push(Op::Status(Box::new(self.status.clone())));
            }
            return Ok(());
        }
        rss.sort_by_key(created);
        if self.d.metadata.deletion_timestamp.is_some() {
            let new = self.get_all(&mut rss, false)?;
            return self.sync_status(&rss, new);
        }
        self.check_paused_conditions();
        if spec.paused == Some(true) {
            return self.sync(rss);
        }
        if self.is_scaling_event(&mut rss)? {
            return self.sync(rss);
        }
        if self.is_rolling() {
            self.rolling(rss)
        } else {
            self.recreate(rss, old_pods_running)
        }
    }

    fn check_paused_conditions(&mut self) {
        if self.progress_deadline().is_none() {
            return;
        }
        let c = get_cond(&self.status, "Progressing");
        if c.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
            return;
        }
        let paused_cond = c.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
        let paused = self.spec().paused == Some(true);
        let c = if paused && !paused_cond {
            cond(
                "Progressing",
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                self.now,
            )
        } else if !paused && paused_cond {
            cond(
                "Progressing",
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                self.now,
            )
        } else {
            return;
        };
        set_cond(&mut self.status, c);
        self.ops.push(Op::Status(Box::new(self.status.clone())));
    }

    /// `getAllReplicaSetsAndSyncRevision`: the index of the new ReplicaSet in `rss`
    /// (created when `create` and missing); the others are old.
    fn get_all(
        &mut self,
        rss: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Option<usize>, ReconcileError> {
        let key = template_key(&self.template);
        let new = rss.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(template_key)
                == Some(key.clone())
        });
        let max_old = rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new)
            .map(|(_, rs)| revision(rs))
            .max()
            .unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        match new {
            Some(i) => {
                let mut rs = rss[i].clone();
                let changed = self.set_new_rs_annotations(&mut rs, &new_revision, true)?;
                let min_ready = self.spec().min_ready_seconds;
                let min_ready_changed =
                    rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready;
                if changed || min_ready_changed {
                    if let Some(s) = rs.spec.as_mut() {
                        s.min_ready_seconds = min_ready;
                    }
                    self.ops.push(Op::PatchRs {
                        name: rs.name_any(),
                        patch: json!({
                            "metadata": {"annotations": rs.metadata.annotations},
                            "spec": {"minReadySeconds": min_ready},
                        }),
                    });
                    rss[i] = rs;
                    return Ok(Some(i));
                }
                let mut needs_update = false;
                if let Some(r) = annotation(&rs.metadata, REVISION) {
                    if self.annotations.get(REVISION).map(String::as_str) != Some(r) {
                        self.annotations.insert(REVISION.into(), r.into());
                        self.ops.push(Op::Annotate(self.annotations.clone()));
                    }
                }
                if self.progress_deadline().is_some()
                    && get_cond(&self.status, "Progressing").is_none()
                {
                    let c = cond(
                        "Progressing",
                        "True",
                        FOUND_NEW_RS,
                        format!("Found new replica set {:?}", rs.name_any()),
                        self.now,
                    );
                    set_cond(&mut self.status, c);
                    needs_update = true;
                }
                if needs_update {
                    self.ops.push(Op::Status(Box::new(self.status.clone())));
                }
                Ok(Some(i))
            }
            None if !create => Ok(None),
            None => {
                let hash = compute_hash(&self.template, self.status.collision_count);
                let mut template = self.template.clone();
                template
                    .metadata
                    .get_or_insert_with(Default::default)
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(HASH_LABEL.into(), hash.clone());
                let mut selector = self.spec().selector.clone();
                selector
                    .match_labels
                    .get_or_insert_with(Default::default)
                    .insert(HASH_LABEL.into(), hash.clone());
                let name = format!("{}-{hash}", self.name());
                let mut rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: self.d.metadata.namespace.clone(),
                        owner_references: Some(vec![controller_ref(self.d)]),
                        labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        ..Default::default()
                    },
                    spec: Some(ReplicaSetSpec {
                        replicas: Some(0),
                        min_ready_seconds: self.spec().min_ready_seconds,
                        selector,
                        template: Some(template),
                    }),
                    status: None,
                };
                rss.push(rs.clone());
                let idx = rss.len() - 1;
                let n = self.new_rs_new_replicas(rss, idx)?;
                if let Some(s) = rs.spec.as_mut() {
                    s.replicas = Some(n);
                }
                self.set_new_rs_annotations(&mut rs, &new_revision, false)?;
                rss[idx] = rs.clone();
                self.ops.push(Op::CreateRs(Box::new(rs)));
                if n > 0 {
                    self.ops.push(Op::Event {
                        reason: "ScalingReplicaSet",
                        note: format!("Scaled up replica set {name} from 0 to {n}"),
                    });
                }
                if self.annotations.get(REVISION) != Some(&new_revision) {
                    self.annotations.insert(REVISION.into(), new_revision);
                    self.ops.push(Op::Annotate(self.annotations.clone()));
                }
                if self.progress_deadline().is_some() {
                    let c = cond(
                        "Progressing",
                        "True",
                        NEW_RS_CREATED,
                        format!("Created new replica set {name:?}"),
                        self.now,
                    );
                    set_cond(&mut self.status, c);
                    self.ops.push(Op::Status(Box::new(self.status.clone())));
                }
                Ok(Some(idx))
            }
        }
    }

    /// `SetNewReplicaSetAnnotations`.
    fn set_new_rs_annotations(
        &self,
        rs: &mut ReplicaSet,
        new_revision: &str,
        exists: bool,
    ) -> Result<bool, ReconcileError> {
        let mut changed = false;
        let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
        for (k, v) in &self.annotations {
            if skip_copy(k) || ann.get(k) == Some(v) {
                continue;
            }
            ann.insert(k.clone(), v.clone());
            changed = true;
        }
        let old_revision = ann.get(REVISION).cloned();
        let old_int: i64 = match old_revision.as_deref() {
            None | Some("") => 0,
            Some(r) => match r.parse() {
                Ok(v) => v,
                Err(_) => return Ok(changed),
            },
        };
        let new_int: i64 = new_revision.parse().unwrap_or(0);
        if old_int < new_int {
            ann.insert(REVISION.into(), new_revision.into());
            changed = true;
            if let Some(old) = old_revision.filter(|r| !r.is_empty()) {
                let hist = ann.get(REVISION_HISTORY).cloned().unwrap_or_default();
                if hist.is_empty() {
                    ann.insert(REVISION_HISTORY.into(), old);
                } else {
                    let mut revs: Vec<&str> = hist.split(',').collect();
                    let mut total = hist.len() + old.len() + 1;
                    let mut start = 0;
                    while total > REVISION_HISTORY_CHARS && start < revs.len() {
                        total -= revs[start].len() + 1;
                        start += 1;
                    }
                    if total <= REVISION_HISTORY_CHARS {
                        revs = revs.split_off(start);
                        revs.push(&old);
                        ann.insert(REVISION_HISTORY.into(), revs.join(","));
                    }
                }
            }
        }
        if !exists {
            let surge = self.max_surge()?;
            changed |= set_replicas_annotations(rs, self.replicas, self.replicas + surge);
        }
        Ok(changed)
    }

    /// `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, rss: &[ReplicaSet], new: usize) -> Result<i32, ReconcileError> {
        if !self.is_rolling() {
            return Ok(self.replicas);
        }
        let surge = self.max_surge()?;
        let current: i32 = rss.iter().map(rs_replicas).sum();
        let max_total = self.replicas + surge;
        let new_replicas = rs_replicas(&rss[new]);
        if current >= max_total {
            return Ok(new_replicas);
        }
        let up = (max_total - current).min(self.replicas - new_replicas);
        Ok(new_replicas + up)
    }

    /// `scaleReplicaSet`: writes the size and replica annotations, records the event.
    fn scale_rs(
        &mut self,
        rss: &mut [ReplicaSet],
        i: usize,
        new_scale: i32,
    ) -> Result<bool, ReconcileError> {
        let surge = self.max_surge()?;
        let rs = &mut rss[i];
        let old_scale = rs_replicas(rs);
        let size_changed = old_scale != new_scale;
        let ann_changed = set_replicas_annotations(rs, self.replicas, self.replicas + surge);
        if !size_changed && !ann_changed {
            return Ok(false);
        }
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(new_scale);
        }
        self.ops.push(Op::PatchRs {
            name: rs.name_any(),
            patch: json!({
                "metadata": {"annotations": {
                    DESIRED_REPLICAS: self.replicas.to_string(),
                    MAX_REPLICAS: (self.replicas + surge).to_string(),
                }},
                "spec": {"replicas": new_scale},
            }),
        });
        if size_changed {
            let op = if new_scale > old_scale { "up" } else { "down" };
            self.ops.push(Op::Event {
                reason: "ScalingReplicaSet",
                note: format!(
                    "Scaled {op} replica set {} from {old_scale} to {new_scale}",
                    rs.name_any()
                ),
            });
        }
        Ok(size_changed)
    }

    fn scale_if_needed(
        &mut self,
        rss: &mut [ReplicaSet],
        i: usize,
        new_scale: i32,
    ) -> Result<bool, ReconcileError> {
        if rs_replicas(&rss[i]) == new_scale {
            return Ok(false);
        }
        self.scale_rs(rss, i, new_scale)
    }

    fn is_scaling_event(&mut self, rss: &mut Vec<ReplicaSet>) -> Result<bool, ReconcileError> {
        let _ = self.get_all(rss, false)?;
        Ok(rss.iter().filter(|rs| rs_replicas(rs) > 0).any(|rs| {
            annotation(&rs.metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != self.replicas)
        }))
    }

    /// `sync`: scaling and, when paused, cleanup.
    fn sync(&mut self, mut rss: Vec<ReplicaSet>) -> Result<(), ReconcileError> {
        let new = self.get_all(&mut rss, false)?;
        self.scale(&mut rss, new)?;
        if self.spec().paused == Some(true) {
            self.cleanup(&rss, new);
        }
        self.sync_status(&rss, new)
    }

    /// `scale`: proportional scaling across the active ReplicaSets.
    fn scale(&mut self, rss: &mut [ReplicaSet], new: Option<usize>) -> Result<(), ReconcileError> {
        let active: Vec<usize> = (0..rss.len())
            .filter(|i| rs_replicas(&rss[*i]) > 0)
            .collect();
        // FindActiveOrLatest
        let active_or_latest = match active.len() {
            0 => new.or_else(|| (!rss.is_empty()).then(|| rss.len() - 1)),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = active_or_latest {
            self.scale_if_needed(rss, i, self.replicas)?;
            return Ok(());
        }
        if let Some(n) = new {
            if self.is_saturated(&rss[n]) {
                for i in active.into_iter().filter(|i| *i != n) {
                    self.scale_if_needed(rss, i, 0)?;
                }
                return Ok(());
            }
        }
        if !self.is_rolling() {
            return Ok(());
        }
        let surge = self.max_surge()?;
        let total: i32 = active.iter().map(|i| rs_replicas(&rss[*i])).sum();
        let allowed = if self.replicas > 0 {
            self.replicas + surge
        } else {
            0
        };
        let to_add = allowed - total;
        let mut order = active.clone();
        // Largest first; ties: newer first when adding, older first when removing.
        order.sort_by(|a, b| {
            let (ra, rb) = (&rss[*a], &rss[*b]);
            rs_replicas(rb).cmp(&rs_replicas(ra)).then_with(|| {
                if to_add > 0 {
                    created(rb).cmp(&created(ra))
                } else {
                    created(ra).cmp(&created(rb))
                }
            })
        });
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(order.len());
        for i in &order {
            let rs = &rss[*i];
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if let Some(first) = sizes.first_mut() {
            if to_add != 0 {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (i, size) in order.into_iter().zip(sizes) {
            self.scale_rs(rss, i, size)?;
        }
        Ok(())
    }

    fn is_saturated(&self, rs: &ReplicaSet) -> bool {
        let desired =
            annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
        desired == Some(self.replicas)
            && rs_replicas(rs) == self.replicas
            && rs_status(rs).2 == self.replicas
    }

    /// `GetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        if self.replicas == 0 {
            return -rs_replicas(rs);
        }
        let surge = self.max_surge().unwrap_or(0);
        let deployment_replicas = self.replicas + surge;
        let annotated = annotation(&rs.metadata, MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or_else(|| self.status.replicas.unwrap_or(0));
        if annotated == 0 {
            return 0;
        }
        let size =
            f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
        size.round() as i32 - rs_replicas(rs)
    }

    fn rolling(&mut self, mut rss: Vec<ReplicaSet>) -> Result<(), ReconcileError> {
        let new = self
            .get_all(&mut rss, true)?
            .ok_or_else(|| ReconcileError::Invalid("no new replica set".into()))?;
        // reconcileNewReplicaSet
        let new_replicas = rs_replicas(&rss[new]);
        let scaled_up = if new_replicas == self.replicas {
            false
        } else if new_replicas > self.replicas {
            self.scale_if_needed(&mut rss, new, self.replicas)?
        } else {
            let n = self.new_rs_new_replicas(&rss, new)?;
            self.scale_if_needed(&mut rss, new, n)?
        };
        if scaled_up {
            return self.sync_rollout_status(&rss, Some(new));
        }
        if self.reconcile_old(&mut rss, new)? {
            return self.sync_rollout_status(&rss, Some(new));
        }
        let status = self.calculate_status(&rss, Some(new))?;
        if self.complete(&status) {
            self.cleanup(&rss, Some(new));
        }
        self.sync_rollout_status(&rss, Some(new))
    }

    /// `reconcileOldReplicaSets`.
    fn reconcile_old(
        &mut self,
        rss: &mut [ReplicaSet],
        new: usize,
    ) -> Result<bool, ReconcileError> {
        let old: Vec<usize> = (0..rss.len()).filter(|i| *i != new).collect();
        let old_count: i32 = old.iter().map(|i| rs_replicas(&rss[*i])).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count: i32 = rss.iter().map(rs_replicas).sum();
        let max_unavailable = self.max_unavailable()?;
        let min_available = self.replicas - max_unavailable;
        let new_unavailable = rs_replicas(&rss[new]) - rs_status(&rss[new]).2;
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // cleanupUnhealthyReplicas (old ones are sorted oldest first already)
        let mut cleaned = 0;
        for i in old.iter().copied() {
            if cleaned >= max_scaled_down {
                break;
            }
            let r = rs_replicas(&rss[i]);
            let avail = rs_status(&rss[i]).2;
            if r == 0 || r == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(r - avail);
            self.scale_rs(rss, i, r - down)?;
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available: i32 = rss.iter().map(|rs| rs_status(rs).2).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for i in old {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(&rss[i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled);
                self.scale_rs(rss, i, r - down)?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    fn recreate(
        &mut self,
        mut rss: Vec<ReplicaSet>,
        old_pods_running: bool,
    ) -> Result<(), ReconcileError> {
        let mut new = self.get_all(&mut rss, false)?;
        let mut scaled_down = false;
        for i in 0..rss.len() {
            if Some(i) != new && rs_replicas(&rss[i]) > 0 {
                scaled_down |= self.scale_if_needed(&mut rss, i, 0)?;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(&rss, new);
        }
        let old_running = old_pods_running
            || rss
                .iter()
                .enumerate()
                .any(|(i, rs)| Some(i) != new && rs_status(rs).0 > 0);
        if old_running {
            // Pods don't trigger this controller: look again soon.
            self.requeue = Some(Duration::from_secs(1));
            return self.sync_rollout_status(&rss, new);
        }
        if new.is_none() {
            new = self.get_all(&mut rss, true)?;
        }
        if let Some(n) = new {
            if self.scale_if_needed(&mut rss, n, self.replicas)? {
                return self.sync_rollout_status(&rss, new);
            }
        }
        let status = self.calculate_status(&rss, new)?;
        if self.complete(&status) {
            self.cleanup(&rss, new);
        }
        self.sync_rollout_status(&rss, new)
    }

    /// `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit`, oldest
    /// revision first, only those scaled to zero.
    fn cleanup(&mut self, rss: &[ReplicaSet], new: Option<usize>) {
        let Some(limit) = self
            .spec()
            .revision_history_limit
            .filter(|l| *l != i32::MAX)
        else {
            return;
        };
        let mut old: Vec<&ReplicaSet> = rss
            .iter()
            .enumerate()
            .filter(|(i, rs)| Some(*i) != new && rs.metadata.deletion_timestamp.is_none())
            .map(|(_, rs)| rs)
            .collect();
        let diff = old.len() as i64 - i64::from(limit.max(0));
        if diff <= 0 {
            return;
        }
        old.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| created(a).cmp(&created(b)))
        });
        for rs in old.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs).0 != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.ops.push(Op::DeleteRs {
                name: rs.name_any(),
                uid: rs.uid().unwrap_or_default(),
            });
        }
    }

    /// `calculateStatus`.
    fn calculate_status(
        &self,
        rss: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<DeploymentStatus, ReconcileError> {
        let available: i32 = rss.iter().map(|rs| rs_status(rs).2).sum();
        let total: i32 = rss.iter().map(rs_replicas).sum();
        let unavailable = (total - available).max(0);
        let mut s = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nz(rss.iter().map(|rs| rs_status(rs).0).sum()),
            updated_replicas: nz(new.map_or(0, |n| rs_status(&rss[n]).0)),
            ready_replicas: nz(rss.iter().map(|rs| rs_status(rs).1).sum()),
            available_replicas: nz(available),
            unavailable_replicas: nz(unavailable),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: None,
        };
        let c = if available >= self.replicas - self.max_unavailable()? {
            cond(
                "Available",
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            cond(
                "Available",
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_cond(&mut s, c);
        Ok(s)
    }

    /// `DeploymentComplete`.
    fn complete(&self, s: &DeploymentStatus) -> bool {
        let r = Some(self.replicas).filter(|r| *r != 0);
        s.updated_replicas == r
            && s.replicas == r
            && s.available_replicas == r
            && s.observed_generation >= self.d.metadata.generation
    }

    fn sync_status(
        &mut self,
        rss: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), ReconcileError> {
        let s = self.calculate_status(rss, new)?;
        self.push_status(s);
        Ok(())
    }

    fn push_status(&mut self, s: DeploymentStatus) {
        let old = self.d.status.clone().unwrap_or_default();
        if serde_json::to_value(&old).ok() != serde_json::to_value(&s).ok()
            || self.ops.iter().any(|o| matches!(o, Op::Status(_)))
        {
            self.status = s.clone();
            self.ops.push(Op::Status(Box::new(s)));
        }
    }

    /// `syncRolloutStatus`: the Progressing condition and the deadline.
    fn sync_rollout_status(
        &mut self,
        rss: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), ReconcileError> {
        let mut s = self.calculate_status(rss, new)?;
        let new_name = new.map(|n| rss[n].name_any());
        let deadline = self.progress_deadline();
        if deadline.is_none() {
            remove_cond(&mut s, "Progressing");
        }
        let current = get_cond(&self.status, "Progressing").cloned();
        let complete_already = s.replicas == s.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
        if deadline.is_some() && !complete_already {
            if self.complete(&s) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                    None => "Deployment has successfully progressed.".into(),
                };
                set_cond(
                    &mut s,
                    cond("Progressing", "True", NEW_RS_AVAILABLE, msg, self.now),
                );
            } else if self.progressing(&s) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} is progressing."),
                    None => "Deployment is progressing.".into(),
                };
                let mut c = cond("Progressing", "True", RS_UPDATED, msg, self.now);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_cond(&mut s, "Progressing");
                }
                set_cond(&mut s, c);
            } else if self.timed_out(&s) {
                let msg = match &new_name {
                    Some(n) => format!("ReplicaSet {n:?} has timed out progressing."),
                    None => format!("Deployment {:?} has timed out progressing.", self.name()),
                };
                set_cond(
                    &mut s,
                    cond("Progressing", "False", TIMED_OUT, msg, self.now),
                );
            }
        }
        // Replica failures of the ReplicaSets become the Deployment's.
        let failure = new
            .into_iter()
            .chain(0..rss.len())
            .filter_map(|i| {
                rss[i]
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "ReplicaFailure")
                    .cloned()
            })
            .next();
        match failure {
            Some(f) => set_cond(
                &mut s,
                DeploymentCondition {
                    type_: f.type_,
                    status: f.status,
                    reason: f.reason,
                    message: f.message,
                    last_update_time: f.last_transition_time.clone(),
                    last_transition_time: f.last_transition_time,
                },
            ),
            None => remove_cond(&mut s, "ReplicaFailure"),
        }
        let unchanged = serde_json::to_value(self.d.status.clone().unwrap_or_default()).ok()
            == serde_json::to_value(&s).ok();
        if unchanged && !self.ops.iter().any(|o| matches!(o, Op::Status(_))) {
            self.requeue_stuck(&s);
            return Ok(());
        }
        self.status = s.clone();
        self.ops.push(Op::Status(Box::new(s)));
        Ok(())
    }

    /// `DeploymentProgressing`.
    fn progressing(&self, s: &DeploymentStatus) -> bool {
        let old = self.d.status.clone().unwrap_or_default();
        let g = |v: Option<i32>| v.unwrap_or(0);
        let old_old = g(old.replicas) - g(old.updated_replicas);
        let new_old = g(s.replicas) - g(s.updated_replicas);
        g(s.updated_replicas) > g(old.updated_replicas)
            || new_old < old_old
            || g(s.ready_replicas) > g(old.ready_replicas)
            || g(s.available_replicas) > g(old.available_replicas)
    }

    /// `DeploymentTimedOut`.
    fn timed_out(&self, s: &DeploymentStatus) -> bool {
        let Some(deadline) = self.progress_deadline() else {
            return false;
        };
        let Some(c) = get_cond(s, "Progressing") else {
            return false;
        };
        match c.reason.as_deref() {
            Some(NEW_RS_AVAILABLE) => false,
            Some(TIMED_OUT) => true,
            _ => c.last_update_time.as_ref().is_some_and(|t| {
                t.0 + jiff::SignedDuration::from_secs(i64::from(deadline)) < self.now
            }),
        }
    }

    /// `requeueStuckDeployment`: come back when the progress deadline passes.
    fn requeue_stuck(&mut self, s: &DeploymentStatus) {
        let Some(deadline) = self.progress_deadline() else {
            return;
        };
        let Some(c) = get_cond(s, "Progressing") else {
            return;
        };
        if matches!(
            c.reason.as_deref(),
            Some(TIMED_OUT) | Some(NEW_RS_AVAILABLE)
        ) || self.complete(s)
        {
            return;
        }
        let Some(t) = c.last_update_time.as_ref() else {
            return;
        };
        let due = t.0 + jiff::SignedDuration::from_secs(i64::from(deadline));
        let after = due.duration_since(self.now);
        let after = Duration::try_from(after).unwrap_or(Duration::ZERO);
        self.requeue = Some(after.max(Duration::from_secs(1)));
    }
}

/// `SetReplicasAnnotations`.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if ann.get(k) != Some(&v) {
            ann.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

struct State {
    client: kube::Client,
    rss: Store<ReplicaSet>,
    seen: Arc<SeenRevision>,
    written: Expectations<ReplicaSet>,
    events: Events,
    latest: workload::Latest<Deployment>,
}

/// Runs the Deployment controller.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();
    let seen = Arc::new(SeenRevision::default());
    let rs_events = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rs_writer);
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(8));
    let triggers = workload::child_triggers(
        workload::own_events(rs_events),
        controller.store(),
        seen.clone(),
        |d: &Deployment, rs: &ReplicaSet| {
            let sel = d.spec.as_ref().map(|s| &s.selector);
            workload::selector(sel)
                .ok()
                .flatten()
                .is_some_and(|s| workload::selects(Some(&s), rs.metadata.labels.as_ref()))
        },
    );
    let state = Arc::new(State {
        client: client.clone(),
        rss: rs_store,
        seen,
        written: Expectations::default(),
        events: Events::new(client, CONTROLLER),
        latest: workload::Latest::default(),
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped { name: CONTROLLER })
}

fn error_policy(_: Arc<Deployment>, e: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(error = %e, "deployment sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = d.namespace(), name = d.name_any()))]
async fn reconcile(d: Arc<Deployment>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let _ = st.rss.wait_until_ready().await;
    let d = st.latest.fresh(d);
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let key = key_of(&d.metadata);
    let uid = d.uid().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let sel = workload::selector(d.spec.as_ref().map(|s| &s.selector))?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(st.client.clone(), &ns);
    let seen = st.seen.get();
    let (mine, others): (Vec<_>, Vec<_>) = st
        .rss
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()))
        .partition(|rs| workload::controller_of(&rs.metadata).is_some_and(|r| r.uid == uid));
    let mut rss: Vec<ReplicaSet> = Vec::new();
    for rs in st.written.view(&key, mine, seen).into_iter().chain(others) {
        match claim(&uid, deleting, sel.as_ref(), &rs.metadata) {
            Claim::Owned => rss.push((*rs).clone()),
            Claim::Adopt => {
                workload::adopt(&rs_api, rs.as_ref(), controller_ref(d.as_ref())).await?;
                rss.push((*rs).clone());
            }
            Claim::Release => workload::release(&rs_api, rs.as_ref(), &uid).await?,
            Claim::Ignore => {}
        }
    }
    let recreate = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    let old_pods_running = if recreate && !deleting {
        old_pods_running(&st.client, &ns, &d, &rss).await?
    } else {
        false
    };
    let mut sync = Sync::new(&d, workload::now())?;
    sync.run(rss, old_pods_running)?;
    let requeue = sync.requeue;
    let dep_api: Api<Deployment> = Api::namespaced(st.client.clone(), &ns);
    let mut last_status: Option<Box<DeploymentStatus>> = None;
    for op in sync.ops {
        match op {
            Op::CreateRs(rs) => match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => st.written.created(&key, created),
                Err(e)
                    if workload::is_conflict(&e)
                        || matches!(&e, kube::Error::Api(s) if s.reason == "AlreadyExists") =>
                {
                    return on_collision(&st, &dep_api, &rs_api, &d, &rs).await;
                }
                Err(e) => {
                    let msg = format!(
                        "Failed to create new replica set {:?}: {}",
                        rs.name_any(),
                        workload::api_message(&e)
                    );
                    st.events
                        .warning(d.object_ref(&()), FAILED_RS_CREATE, msg.clone());
                    if d.spec
                        .as_ref()
                        .and_then(|s| s.progress_deadline_seconds)
                        .is_some()
                    {
                        let mut s = d.status.clone().unwrap_or_default();
                        set_cond(
                            &mut s,
                            cond(
                                "Progressing",
                                "False",
                                FAILED_RS_CREATE,
                                msg,
                                workload::now(),
                            ),
                        );
                        workload::write_status(&dep_api, &name, d.status.as_ref(), &s).await?;
                    }
                    return Err(e.into());
                }
            },
            Op::PatchRs {
                name: rs_name,
                patch,
            } => {
                match rs_api
                    .patch(&rs_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(rs) => st.written.created(&key, rs),
                    Err(e) if workload::is_not_found(&e) => {
                        return Ok(Action::requeue(Duration::from_secs(1)))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Op::DeleteRs { name: rs_name, uid } => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                st.written.deleted(&key, &uid);
                match rs_api.delete(&rs_name, &dp).await {
                    Ok(_) => {}
                    Err(e) if workload::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Op::Annotate(ann) => {
                let patch = json!({"metadata": {"annotations": {REVISION: ann.get(REVISION)}}});
                match dep_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(w) => st.latest.wrote(w),
                    Err(e) if workload::is_not_found(&e) => return Ok(Action::await_change()),
                    Err(e) => return Err(e.into()),
                }
            }
            Op::Status(s) => last_status = Some(s),
            Op::Event { reason, note } => st.events.normal(d.object_ref(&()), reason, note),
            Op::Warning { reason, note } => st.events.warning(d.object_ref(&()), reason, note),
        }
    }
    if let Some(s) = last_status {
        if let Some(w) =
            workload::write_status(&dep_api, &name, d.status.as_ref(), s.as_ref()).await?
        {
            st.latest.wrote(w);
        }
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// A ReplicaSet of the Deployment's name exists already: adopt it if it is ours with our
/// template, else count a collision (the next name differs).
async fn on_collision(
    st: &State,
    dep_api: &Api<Deployment>,
    rs_api: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
) -> Result<Action, ReconcileError> {
    let existing = rs_api.get(&rs.name_any()).await?;
    let ours = workload::controller_of(&existing.metadata)
        .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
    let same = existing
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .map(template_key)
        == d.spec.as_ref().map(|s| template_key(&s.template));
    if ours && same {
        st.written.created(&key_of(&d.metadata), existing);
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let mut s = d.status.clone().unwrap_or_default();
    s.collision_count = Some(s.collision_count.unwrap_or(0).saturating_add(1));
    workload::write_status(dep_api, &d.name_any(), d.status.as_ref(), &s).await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// Whether a pod of an old ReplicaSet still exists and has not finished (Recreate waits
/// for them all to be gone).
async fn old_pods_running(
    client: &kube::Client,
    ns: &str,
    d: &Deployment,
    rss: &[ReplicaSet],
) -> Result<bool, ReconcileError> {
    let Some(sel) = workload::selector(d.spec.as_ref().map(|s| &s.selector))? else {
        return Ok(false);
    };
    let template = d.spec.as_ref().map(|s| template_key(&s.template));
    let old_uids: Vec<String> = rss
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(template_key)
                != template
        })
        .filter_map(|rs| rs.uid())
        .collect();
    if old_uids.is_empty() {
        return Ok(false);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&sel.to_string()))
        .await?;
    Ok(list.items.iter().any(|p| {
        workload::controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
            && !matches!(workload::pods::phase(p), "Succeeded" | "Failed")
    }))
}

#[cfg(test)]
mod tests;
