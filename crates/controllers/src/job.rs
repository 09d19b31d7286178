//! The Job controller (with the TTL-after-finished controller), after
//! kube-controller-manager's: runs `parallelism` pods until `completions` succeed (or, with
//! no completions, until one does), counts finished pods through the
//! `batch.kubernetes.io/job-tracking` finalizer (`status.uncountedTerminatedPods` first, then
//! the counters, so no pod is counted twice or lost), backs off exponentially after
//! failures (10 s doubling, at most 10 min), fails the Job past `backoffLimit` or
//! `activeDeadlineSeconds`, suspends and resumes, runs Indexed jobs (completion index
//! annotation and label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`), and writes the
//! conditions Kubernetes 1.33 writes: `SuccessCriteriaMet`/`FailureTarget` as soon as the
//! outcome is known, then `Complete`/`Failed` once no pod is left running. Finished jobs
//! with `ttlSecondsAfterFinished` are deleted when it runs out.
//!
//! `podFailurePolicy` ([`match_failure_policy`]): each newly failed pod is matched against
//! the rules in order (`onExitCodes` In/NotIn, `onPodConditions` such as `DisruptionTarget`);
//! `FailJob` fails the Job at once (reason `PodFailurePolicy`, kube's message), `Ignore`
//! leaves the failure uncounted (the pod is replaced, `backoffLimit` untouched), `FailIndex`
//! fails the pod's index (with `backoffLimitPerIndex`), `Count` and no match count it.
//!
//! Indexed jobs with `backoffLimitPerIndex` track failures per index, as kube does: each pod
//! carries `batch.kubernetes.io/job-index-failure-count` (and `…-ignored-failure-count`), a
//! failed pod keeps its finalizer until its replacement (count + 1, after the index's own
//! back-off) exists, an index whose pod fails with the count at the limit (or by a
//! `FailIndex` rule) joins `status.failedIndexes` and is not run again; more failed indexes
//! than `maxFailedIndexes` fail the Job (`MaxFailedIndexesExceeded`), and so does every index
//! finished with some failed (`FailedIndexes`). `successPolicy` ([`match_success_policy`]):
//! the first rule whose `succeededIndexes`/`succeededCount` the completed indexes meet sets
//! `SuccessCriteriaMet` (reason `SuccessPolicy`, "Matched rules at index N"), the remaining
//! pods are deleted, then `Complete` follows with the same reason. `podReplacementPolicy`:
//! `TerminatingOrFailed` counts a pod being deleted as failed and replaces it at once;
//! `Failed` (the default with a `podFailurePolicy`) waits until its phase is `Failed`, and
//! `status.terminating` counts the pods in between (their indexes are not run twice).
//!
//! Each sync is computed by [`plan`] from a snapshot; only [`reconcile`] talks to the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::workload::pods::{self, pod_from_template};
use crate::workload::{
    self, claim, controller_ref, key_of, Claim, Events, Expectations, ReconcileError, SeenRevision,
};
use crate::{Context, Error};

pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub(crate) const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// Failures counted so far in a pod's index (`backoffLimitPerIndex`).
pub(crate) const FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-failure-count";
/// Failures of the index that a `podFailurePolicy` rule ignored.
pub(crate) const IGNORED_COUNT_KEY: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
const CONTROLLER: &str = "job-controller";
/// `MaxJobPodFailureBackOff` (10 min) over `DefaultJobPodFailureBackOff` (10 s).
const BACKOFF_MAX_FACTOR: u32 = 60;

/// What one sync of a Job does.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Finished pods to record in `uncountedTerminatedPods` before their finalizer goes.
    pub(crate) record: Option<JobStatus>,
    /// Pods whose tracking finalizer is removed.
    pub(crate) unfinalize: Vec<Arc<Pod>>,
    /// Pods to create: their completion index for Indexed jobs.
    pub(crate) create: Vec<Option<i32>>,
    /// With `backoffLimitPerIndex`: the (failure, ignored failure) counts each created
    /// index's pod carries.
    pub(crate) failure_counts: BTreeMap<i32, (i32, i32)>,
    pub(crate) delete: Vec<Arc<Pod>>,
    pub(crate) status: JobStatus,
    pub(crate) events: Vec<(bool, &'static str, String)>,
    pub(crate) requeue: Option<Duration>,
    /// The TTL after finishing has run out.
    pub(crate) delete_job: bool,
}

fn cond_true(s: &JobStatus, t: &str) -> Option<JobCondition> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .cloned()
}

fn set_cond(
    s: &mut JobStatus,
    t: &str,
    status: &str,
    reason: &str,
    msg: &str,
    now: jiff::Timestamp,
) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == t) {
        if c.status == status && c.reason.as_deref() == Some(reason) {
            return;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conds.push(JobCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

pub(crate) fn is_finished(s: &JobStatus) -> Option<JobCondition> {
    cond_true(s, "Complete").or_else(|| cond_true(s, "Failed"))
}

fn index_of(p: &Pod) -> Option<i32> {
    let m = &p.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(INDEX_KEY)))
        .and_then(|v| v.parse().ok())
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// Succeeded, failed, or still going. A pod being deleted before it succeeded counts as
/// failed, as in Kubernetes, unless only failed pods are replaced (`podReplacementPolicy:
/// Failed`): then it is terminating until its phase says.
fn outcome(p: &Pod, only_failed: bool) -> Option<bool> {
    match pods::phase(p) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if p.metadata.deletion_timestamp.is_some() && !only_failed => Some(false),
        _ => None,
    }
}

/// kube's `onlyReplaceFailedPods`: `podReplacementPolicy: Failed`, or any
/// `podFailurePolicy`.
fn only_replace_failed(spec: &k8s_openapi::api::batch::v1::JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// A pod's (failure, ignored failure) counts of its index; 0 when absent or not a valid
/// int32 (the annotations are the user's to tamper with).
fn index_failure_counts(p: &Pod) -> (i32, i32) {
    let get = |k: &str| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|v| *v >= 0)
            .unwrap_or(0)
    };
    (get(FAILURE_COUNT_KEY), get(IGNORED_COUNT_KEY))
}

/// What a Job's `podFailurePolicy` makes of a failed pod (kube's `matchPodFailurePolicy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FailureAction {
    /// Fail the whole Job, with this message (condition reason `PodFailurePolicy`).
    FailJob(String),
    /// Not counted towards `backoffLimit`; the pod is replaced.
    Ignore,
    /// Counted, and the pod's index fails at once (with `backoffLimitPerIndex`).
    FailIndex,
    /// Counted, as without a policy (also when no rule matches).
    Count,
}

/// The first rule of `policy` that matches the failed `pod`, in order: `onExitCodes` looks at
/// the terminated containers (init containers first) with a non-zero exit code, optionally of
/// one container name (`In`/`NotIn` the values); `onPodConditions` at the pod's conditions
/// (`DisruptionTarget` for evictions, preemption and the taint manager).
pub(crate) fn match_failure_policy(
    policy: &k8s_openapi::api::batch::v1::PodFailurePolicy,
    pod: &Pod,
) -> FailureAction {
    let status = pod.status.clone().unwrap_or_default();
    let who = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let statuses: Vec<_> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let hit = if let Some(req) = &rule.on_exit_codes {
            statuses.iter().find_map(|c| {
                let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                let named = req.container_name.as_ref().is_none_or(|n| *n == c.name);
                let listed = req.values.contains(&code);
                let matches = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                (named && code != 0 && matches).then(|| {
                    format!(
                        "Container {} for pod {who} failed with exit code {code} matching {} rule at index {i}",
                        c.name, rule.action
                    )
                })
            })
        } else if let Some(pats) = &rule.on_pod_conditions {
            pats.iter().find_map(|pat| {
                let want = match pat.status.as_str() {
                    "" => "True",
                    s => s,
                };
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == pat.type_ && c.status == want)
                    .then(|| {
                        format!(
                            "Pod {who} has condition {} matching {} rule at index {i}",
                            pat.type_, rule.action
                        )
                    })
            })
        } else {
            None
        };
        if let Some(msg) = hit {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(msg),
                "Ignore" => FailureAction::Ignore,
                "FailIndex" => FailureAction::FailIndex,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// `"1,3-5,7"` (Kubernetes' interval notation of `completedIndexes`: two neighbours are
/// written `3,4`, longer runs `3-5`).
pub(crate) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    out.join(",")
}

/// kube's `matchSuccessPolicy`: the first rule the succeeded indexes meet, as the message
/// of `SuccessCriteriaMet`. `succeededIndexes` alone needs every listed index (below
/// `completions`); with `succeededCount` that many of them; `succeededCount` alone that many
/// of all indexes.
pub(crate) fn match_success_policy(
    policy: &k8s_openapi::api::batch::v1::SuccessPolicy,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    if succeeded.is_empty() {
        return None;
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = if let Some(idx) = &rule.succeeded_indexes {
            let required: BTreeSet<i32> = parse_indexes(idx)
                .into_iter()
                .filter(|x| *x < completions)
                .collect();
            if required.is_empty() {
                continue;
            }
            let contains = required.intersection(succeeded).count();
            contains == required.len()
                || rule
                    .succeeded_count
                    .is_some_and(|c| contains >= c.max(0) as usize)
        } else {
            rule.succeeded_count
                .is_some_and(|c| succeeded.len() >= c.max(0) as usize)
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

pub(crate) fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b.min(a.saturating_add(100_000)));
                }
            }
            None => {
                if let Ok(v) = part.parse() {
                    out.insert(v);
                }
            }
        }
    }
    out
}

fn finished_at(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

/// The sync of `job` over the pods it controls (`pods`, expectations applied).
pub(crate) fn plan(job: &Job, pods: &[Arc<Pod>], now: jiff::Timestamp, backoff: Duration) -> Plan {
    let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut p = Plan::default();
    let Some(spec) = job.spec.as_ref() else {
        return p;
    };
    let old = job.status.clone().unwrap_or_default();
    let mut s = old.clone();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions_n = spec.completions.unwrap_or(0);
    let per_index = indexed && spec.backoff_limit_per_index.is_some();
    let limit_per_index = spec.backoff_limit_per_index.unwrap_or(0);
    let only_failed = only_replace_failed(spec);
    // Once the outcome is known, pods being deleted count as failed and let go of their
    // finalizer (kube's canRemoveFinalizer with a finished condition).
    let finishing =
        cond_true(&s, "FailureTarget").is_some() || cond_true(&s, "SuccessCriteriaMet").is_some();
    let outcome_of = |pod: &Pod| {
        outcome(pod, only_failed)
            .or_else(|| (finishing && pod.metadata.deletion_timestamp.is_some()).then_some(false))
    };
    let valid_index = |pod: &Pod| index_of(pod).filter(|i| *i >= 0 && *i < completions_n);
    let action_of = |pod: &Pod| match &spec.pod_failure_policy {
        Some(policy) => match_failure_policy(policy, pod),
        None => FailureAction::Count,
    };
    let active: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let active_idx: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
    let mut completed = parse_indexes(s.completed_indexes.as_deref().unwrap_or(""));

    // 0. backoffLimitPerIndex: the failed indexes, and per index the failed pod whose
    // finalizer stays until its replacement carries its failure count.
    let mut failed_idx: BTreeSet<i32> = BTreeSet::new();
    let mut delayed: HashMap<i32, Arc<Pod>> = HashMap::new();
    if per_index {
        failed_idx = parse_indexes(s.failed_indexes.as_deref().unwrap_or(""))
            .into_iter()
            .filter(|i| *i < completions_n)
            .collect();
        let mut succeeded_now = completed.clone();
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            let Some(ix) = valid_index(pod) else { continue };
            match outcome_of(pod) {
                Some(true) => {
                    succeeded_now.insert(ix);
                }
                Some(false) => {
                    let failed = match action_of(pod) {
                        FailureAction::FailIndex => true,
                        FailureAction::Ignore => false,
                        _ => index_failure_counts(pod).0 >= limit_per_index,
                    };
                    if failed {
                        failed_idx.insert(ix);
                    }
                }
                None => {}
            }
        }
        if !finishing && job.metadata.deletion_timestamp.is_none() {
            for pod in pods.iter().filter(|p| has_finalizer(p)) {
                let Some(ix) = valid_index(pod) else { continue };
                if outcome_of(pod) != Some(false)
                    || succeeded_now.contains(&ix)
                    || failed_idx.contains(&ix)
                    || active_idx.contains(&ix)
                {
                    continue;
                }
                let total = |p: &Pod| {
                    let (f, i) = index_failure_counts(p);
                    f.saturating_add(i)
                };
                let later = match delayed.get(&ix) {
                    None => true,
                    Some(d) => total(d) <= total(pod) && finished_at(pod) >= finished_at(d),
                };
                if later {
                    delayed.insert(ix, pod.clone());
                }
            }
        }
    }
    let is_delayed = |pod: &Pod| {
        valid_index(pod)
            .and_then(|ix| delayed.get(&ix))
            .is_some_and(|d| d.metadata.uid == pod.metadata.uid)
    };

    // 1. Count finished pods through the tracking finalizer.
    let mut unc = s.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_ok: BTreeSet<String> = unc
        .succeeded
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut unc_fail: BTreeSet<String> =
        unc.failed.clone().unwrap_or_default().into_iter().collect();
    let mut new_uncounted = false;
    // A podFailurePolicy rule that fails the Job.
    let mut policy_failure: Option<String> = None;
    for pod in pods {
        let Some(ok) = outcome_of(pod) else { continue };
        if !has_finalizer(pod) || is_delayed(pod) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        if !unc_ok.contains(&uid) && !unc_fail.contains(&uid) {
            let action = if ok {
                FailureAction::Count
            } else {
                action_of(pod)
            };
            if ok {
                unc_ok.insert(uid);
                new_uncounted = true;
            } else if action != FailureAction::Ignore {
                unc_fail.insert(uid);
                new_uncounted = true;
            }
            if let FailureAction::FailJob(msg) = action {
                policy_failure.get_or_insert(msg);
            }
        }
        p.unfinalize.push(pod.clone());
    }
    if new_uncounted {
        unc.succeeded = Some(unc_ok.iter().cloned().collect());
        unc.failed = Some(unc_fail.iter().cloned().collect());
        let mut rec = s.clone();
        rec.uncounted_terminated_pods = Some(unc.clone());
        p.record = Some(rec);
    }
    // Once the finalizers are gone, the counters take them.
    let new_ok = unc_ok.len() as i32;
    let new_fail = unc_fail.len() as i32;
    for pod in pods {
        let uid = pod.uid().unwrap_or_default();
        if indexed && unc_ok.contains(&uid) {
            if let Some(i) = valid_index(pod) {
                completed.insert(i);
            }
        }
    }
    s.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    let succeeded = if indexed {
        completed.len() as i32
    } else {
        s.succeeded.unwrap_or(0) + new_ok
    };
    let failed = s.failed.unwrap_or(0) + new_fail;
    s.succeeded = Some(succeeded);
    s.failed = Some(failed);
    if indexed {
        s.completed_indexes = Some(format_indexes(&completed));
    }
    if per_index {
        s.failed_indexes = Some(format_indexes(&failed_idx));
    }

    let terminating_pods: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && outcome_phase_running(p))
        .collect();
    let terminating = terminating_pods.len() as i32;

    // 2. A finished job only tidies up.
    if let Some(done) = is_finished(&s) {
        p.status = finish_status(s, &active, terminating);
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let at = p
                .status
                .completion_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| done.last_transition_time.as_ref().map(|t| t.0))
                .unwrap_or(now);
            let expire = at + jiff::SignedDuration::from_secs(i64::from(ttl));
            if expire <= now {
                p.delete_job = true;
            } else {
                p.requeue = Duration::try_from(expire.duration_since(now)).ok();
            }
        }
        return p;
    }

    let suspended = spec.suspend == Some(true);
    if !suspended && s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }

    // 3. The outcome: failure first, as Kubernetes.
    let backoff_limit = spec
        .backoff_limit
        .unwrap_or(if per_index { i32::MAX } else { 6 });
    let mut failure = cond_true(&s, "FailureTarget")
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        .or_else(|| policy_failure.map(|m| ("PodFailurePolicy".to_string(), m)));
    if failure.is_none() && failed > backoff_limit {
        failure = Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        ));
    }
    if failure.is_none() && !suspended {
        if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, s.start_time.as_ref()) {
            let deadline = start.0 + jiff::SignedDuration::from_secs(ads);
            if deadline <= now {
                failure = Some((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                let left = Duration::try_from(deadline.duration_since(now)).unwrap_or_default();
                p.requeue = Some(left.max(Duration::from_secs(1)));
            }
        }
    }
    if failure.is_none() && per_index {
        let nfailed = failed_idx.len() as i32;
        if spec.max_failed_indexes.is_some_and(|m| nfailed > m) {
            failure = Some((
                "MaxFailedIndexesExceeded".into(),
                "Job has exceeded the specified maximal number of failed indexes".into(),
            ));
        } else if nfailed > 0 && nfailed + completed.len() as i32 >= completions_n {
            failure = Some(("FailedIndexes".into(), "Job has failed indexes".into()));
        }
    }
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let success: Option<(String, String)> = if failure.is_some() {
        None
    } else if let Some(c) = cond_true(&s, "SuccessCriteriaMet") {
        Some((c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
    } else if let Some(msg) = spec
        .success_policy
        .as_ref()
        .filter(|_| indexed)
        .and_then(|sp| match_success_policy(sp, completions_n, &completed))
    {
        Some(("SuccessPolicy".into(), msg))
    } else {
        let reached = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        reached.then(|| {
            (
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into(),
            )
        })
    };
    // The terminal condition waits for every pod to stop and be counted.
    let settled = active.is_empty() && terminating == 0 && delayed.is_empty();
    if !delayed.is_empty() && (failure.is_some() || success.is_some()) {
        p.requeue = Some(Duration::from_secs(1));
    }
    if let Some((reason, msg)) = failure {
        set_cond(&mut s, "FailureTarget", "True", &reason, &msg, now);
        p.delete = active.clone();
        if settled {
            set_cond(&mut s, "Failed", "True", &reason, &msg, now);
            p.events.push((true, leak(&reason), msg));
        }
        p.status = finish_status(s, &[], terminating + p.delete.len() as i32);
        return p;
    }
    if let Some((reason, msg)) = success {
        set_cond(&mut s, "SuccessCriteriaMet", "True", &reason, &msg, now);
        p.delete = active.clone();
        if settled {
            set_cond(&mut s, "Complete", "True", &reason, &msg, now);
            s.completion_time = Some(Time(now));
            p.events.push((false, "Completed", "Job completed".into()));
        }
        p.status = finish_status(s, &[], terminating + p.delete.len() as i32);
        return p;
    }

    // 4. Suspension.
    let was_suspended = cond_true(&s, "Suspended").is_some();
    if suspended {
        p.delete = active.clone();
        if !was_suspended {
            set_cond(
                &mut s,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            p.events.push((false, "Suspended", "Job suspended".into()));
        }
        p.status = finish_status(s, &[], terminating + p.delete.len() as i32);
        return p;
    }
    if was_suspended {
        set_cond(
            &mut s,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        s.start_time = Some(Time(now));
        p.events.push((false, "Resumed", "Job resumed".into()));
    }

    // 5. Keep the wanted number of pods running; with `podReplacementPolicy: Failed` a
    // terminating pod still holds its place.
    let want = match completions {
        Some(c) if !indexed => (c - succeeded).clamp(0, parallelism),
        Some(c) => (c - completed.len() as i32 - failed_idx.len() as i32).clamp(0, parallelism),
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    let have = active.len() as i32;
    let held = have + if only_failed { terminating } else { 0 };
    let delay_after = |failures: u32| {
        let exp = failures.saturating_sub(1).min(10);
        backoff
            .saturating_mul(1 << exp)
            .min(backoff.saturating_mul(BACKOFF_MAX_FACTOR))
    };
    if have > want {
        let mut ranked = active.clone();
        pods::sort_for_deletion(&mut ranked);
        ranked.truncate((have - want) as usize);
        p.delete = ranked;
    } else if held < want {
        // Exponential back-off after failures: per index with backoffLimitPerIndex, else
        // over the whole Job.
        let last_failure = pods
            .iter()
            .filter(|p| outcome(p, only_failed) == Some(false))
            .filter_map(|p| finished_at(p))
            .max();
        let mut wait = Duration::ZERO;
        if failed > 0 && !per_index {
            if let Some(t) = last_failure {
                let since = Duration::try_from(now.duration_since(t)).unwrap_or_default();
                wait = delay_after(u32::try_from(failed).unwrap_or(0)).saturating_sub(since);
            }
        }
        if !wait.is_zero() {
            p.requeue = Some(p.requeue.map_or(wait, |r| r.min(wait)));
        } else if indexed {
            let mut busy: BTreeSet<i32> = active_idx.clone();
            busy.extend(completed.iter().copied());
            busy.extend(failed_idx.iter().copied());
            if only_failed {
                busy.extend(terminating_pods.iter().filter_map(|p| index_of(p)));
            }
            let mut create = Vec::new();
            for i in (0..completions_n).filter(|i| !busy.contains(i)) {
                if create.len() as i32 >= want - held {
                    break;
                }
                let mut counts = (0, 0);
                if let Some(d) = delayed.get(&i) {
                    let (f, ig) = index_failure_counts(d);
                    counts = match action_of(d) {
                        FailureAction::Ignore => (f, ig.saturating_add(1)),
                        _ => (f.saturating_add(1), ig),
                    };
                    let failures = u32::try_from(counts.0.saturating_add(counts.1)).unwrap_or(0);
                    if let Some(t) = finished_at(d) {
                        let since = Duration::try_from(now.duration_since(t)).unwrap_or_default();
                        let w = delay_after(failures).saturating_sub(since);
                        if !w.is_zero() {
                            p.requeue = Some(p.requeue.map_or(w, |r| r.min(w)));
                            continue;
                        }
                    }
                }
                if per_index {
                    p.failure_counts.insert(i, counts);
                }
                create.push(Some(i));
            }
            p.create = create;
        } else {
            p.create = vec![None; (want - held) as usize];
        }
    }
    let active_after = active.len() as i32 + p.create.len() as i32 - p.delete.len() as i32;
    let mut st = finish_status(s, &active, terminating + p.delete.len() as i32);
    st.active = (active_after > 0).then_some(active_after);
    p.status = st;
    p
}
fn outcome_phase_running(p: &Pod) -> bool {
    !matches!(pods::phase(p), "Succeeded" | "Failed")
}

/// Reasons are a small closed set; events want `&'static str`.
fn leak(reason: &str) -> &'static str {
    match reason {
        "BackoffLimitExceeded" => "BackoffLimitExceeded",
        "DeadlineExceeded" => "DeadlineExceeded",
        "FailedIndexes" => "FailedIndexes",
        "MaxFailedIndexesExceeded" => "MaxFailedIndexesExceeded",
        _ => "PodFailurePolicy",
    }
}

fn finish_status(mut s: JobStatus, active: &[Arc<Pod>], terminating: i32) -> JobStatus {
    let n = active.len() as i32;
    s.active = (n > 0).then_some(n);
    s.ready = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
    s.terminating = Some(terminating);
    s
}

/// A pod of `job`, for completion index `index` when the job is Indexed, with the index's
/// (failure, ignored failure) counts under `backoffLimitPerIndex`.
fn job_pod(job: &Job, index: Option<i32>, failures: Option<(i32, i32)>) -> Pod {
    let name = job.name_any();
    let spec = job
        .spec
        .as_ref()
        .expect("plan only creates for jobs with a spec");
    let gen = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = pod_from_template(
        &spec.template,
        job.namespace().as_deref().unwrap_or_default(),
        Some(gen),
        None,
        controller_ref(job),
    );
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    if let Some(i) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX_KEY.into(), i.to_string());
        if let Some((f, ignored)) = failures {
            let a = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.insert(FAILURE_COUNT_KEY.into(), f.to_string());
            if ignored > 0 {
                a.insert(IGNORED_COUNT_KEY.into(), ignored.to_string());
            }
        }
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(INDEX_KEY.into(), i.to_string());
        if let Some(ps) = pod.spec.as_mut() {
            if ps.hostname.is_none() {
                ps.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                    }),
                    ..Default::default()
                }),
            };
            let add = |c: &mut k8s_openapi::api::core::v1::Container| {
                let e = c.env.get_or_insert_with(Vec::new);
                if !e.iter().any(|v| v.name == env.name) {
                    e.push(env.clone());
                }
            };
            ps.containers.iter_mut().for_each(add);
            if let Some(ic) = ps.init_containers.as_mut() {
                ic.iter_mut().for_each(add);
            }
        }
    }
    pod
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    seen: Arc<SeenRevision>,
    expectations: Expectations<Pod>,
    events: Events,
    backoff: Duration,
    latest: workload::Latest<Job>,
}

/// Runs the Job controller (and the TTL-after-finished controller's work for jobs).
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let pods = ctx.informers.pods(&client);
    let pod_store = pods.store();
    let seen = Arc::new(SeenRevision::default());
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .with_config(Config::default().concurrency(8));
    // Finished or deleted pods whose Job is gone still carry the tracking finalizer:
    // Kubernetes' job controller removes it, so they can go.
    let (orphans_tx, orphans_rx) =
        tokio::sync::mpsc::channel::<(String, String, Option<String>)>(1024);
    let job_store = controller.store();
    let pod_events = pods.subscribe().inspect(move |ev| {
        if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
            if has_finalizer(p) && outcome(p, false).is_some() {
                let owner = workload::controller_of(&p.metadata);
                let alive = owner.is_some_and(|r| {
                    job_store
                        .state()
                        .iter()
                        .any(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()))
                });
                if !alive {
                    let _ = orphans_tx.try_send((
                        p.namespace().unwrap_or_default(),
                        p.name_any(),
                        owner.map(|r| r.name.clone()),
                    ));
                }
            }
        }
    });
    tokio::spawn(release_orphans(client.clone(), orphans_rx));
    let triggers = workload::child_triggers(
        pod_events,
        controller.store(),
        seen.clone(),
        |j: &Job, p: &Pod| {
            workload::selector(j.spec.as_ref().and_then(|s| s.selector.as_ref()))
                .ok()
                .flatten()
                .is_some_and(|s| workload::selects(Some(&s), p.metadata.labels.as_ref()))
        },
    );
    let state = Arc::new(State {
        client: client.clone(),
        pods: pod_store,
        seen,
        expectations: Expectations::default(),
        events: Events::new(client, CONTROLLER),
        backoff: ctx.timers.job_backoff,
        latest: workload::Latest::default(),
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "job reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped { name: CONTROLLER })
}

/// Removes the tracking finalizer of pods whose Job no longer exists (checked against the
/// API, not the cache).
async fn release_orphans(
    client: kube::Client,
    mut rx: tokio::sync::mpsc::Receiver<(String, String, Option<String>)>,
) {
    while let Some((ns, name, job)) = rx.recv().await {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        if let Some(j) = &job {
            match jobs.get_opt(j).await {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => continue,
            }
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let Ok(Some(p)) = pods.get_opt(&name).await else {
            continue;
        };
        let fins: Vec<String> = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": fins}});
        if let Err(e) = pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, pod = %name, "releasing an orphan job pod failed");
        }
    }
}

fn error_policy(_: Arc<Job>, e: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(error = %e, "job sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = job.namespace(), name = job.name_any()))]
async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let _ = st.pods.wait_until_ready().await;
    let job = st.latest.fresh(job);
    if job
        .spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_some_and(|m| m != "kubernetes.io/job-controller")
    {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let key = key_of(&job.metadata);
    let uid = job.uid().unwrap_or_default();
    let deleting = job.metadata.deletion_timestamp.is_some();
    let sel = workload::selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()))?;
    let (mine, others): (Vec<_>, Vec<_>) = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .partition(|p| workload::controller_of(&p.metadata).is_some_and(|r| r.uid == uid));
    let api: Api<Pod> = Api::namespaced(st.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(st.client.clone(), &ns);
    let mut owned = Vec::new();
    for p in st
        .expectations
        .view(&key, mine, st.seen.get())
        .into_iter()
        .chain(others)
    {
        match claim(&uid, deleting, sel.as_ref(), &p.metadata) {
            Claim::Owned => owned.push(p),
            Claim::Adopt if is_finished(&job.status.clone().unwrap_or_default()).is_none() => {
                workload::adopt(&api, p.as_ref(), controller_ref(job.as_ref())).await?;
                owned.push(p);
            }
            Claim::Release => workload::release(&api, p.as_ref(), &uid).await?,
            _ => {}
        }
    }
    let plan = plan(&job, &owned, workload::now(), st.backoff);

    if plan.delete_job {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        return match jobs.delete(&name, &dp).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if workload::is_not_found(&e) => Ok(Action::await_change()),
            Err(e) => Err(e.into()),
        };
    }
    if let Some(rec) = &plan.record {
        if let Some(j) = workload::write_status(&jobs, &name, job.status.as_ref(), rec).await? {
            st.latest.wrote(j);
        }
    }
    for p in &plan.unfinalize {
        let fins: Vec<String> = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": fins}});
        match api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            // Until the cache shows it, the pod is seen as written: without the finalizer,
            // so it is never counted twice.
            Ok(written) => st.expectations.created(&key, written),
            Err(e) if workload::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut failure: Option<kube::Error> = None;
    if !plan.create.is_empty() {
        let (_, err) = workload::slow_start(plan.create.len(), |i| {
            let (api, st, key, job) = (&api, &st, &key, &job);
            let index = plan.create[i];
            let counts = index.and_then(|ix| plan.failure_counts.get(&ix).copied());
            let pod = job_pod(job, index, counts);
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        st.events.normal(
                            job.object_ref(&()),
                            "SuccessfulCreate",
                            format!("Created pod: {}", created.name_any()),
                        );
                        st.expectations.created(key, created);
                        Ok(())
                    }
                    Err(e) => {
                        if !workload::is_namespace_terminating(&e) {
                            st.events.warning(
                                job.object_ref(&()),
                                "FailedCreate",
                                format!("Error creating: {}", workload::api_message(&e)),
                            );
                        }
                        Err(e)
                    }
                }
            }
        })
        .await;
        failure = err;
    }
    workload::delete_pods(
        &api,
        &plan.delete,
        &st.expectations,
        &key,
        &st.events,
        &job.object_ref(&()),
        |pname| format!("Deleted pod: {pname}"),
    )
    .await?;
    let base = plan.record.as_ref().or(job.status.as_ref());
    if let Some(j) = workload::write_status(&jobs, &name, base, &plan.status).await? {
        st.latest.wrote(j);
    }
    for (warning, reason, note) in plan.events {
        if warning {
            st.events.warning(job.object_ref(&()), reason, note);
        } else {
            st.events.normal(job.object_ref(&()), reason, note);
        }
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(match plan.requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::pods::test_pods::pod;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const BACKOFF: Duration = Duration::from_secs(10);

    fn job(completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("job-uid".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(1),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        restart_policy: Some("Never".into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn jp(name: &str, phase: &str, tracked: bool) -> Arc<Pod> {
        let mut p = pod(name, "n", phase, false, 1);
        if tracked {
            p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        }
        Arc::new(p)
    }

    fn reason(s: &JobStatus, t: &str) -> Option<String> {
        cond_true(s, t).and_then(|c| c.reason)
    }

    #[test]
    fn starts_parallelism_pods_up_to_the_remaining_completions() {
        let p = plan(&job(Some(5), 2), &[], jiff::Timestamp::now(), BACKOFF);
        assert_eq!(p.create.len(), 2);
        assert_eq!(p.status.active, Some(2));
        assert!(p.status.start_time.is_some());
        let mut j = job(Some(3), 5);
        j.status = Some(JobStatus {
            succeeded: Some(2),
            ..Default::default()
        });
        assert_eq!(
            plan(&j, &[], jiff::Timestamp::now(), BACKOFF).create.len(),
            1
        );
    }

    #[test]
    fn finished_pods_are_recorded_then_counted_and_the_job_completes() {
        let j = job(Some(1), 1);
        let p = plan(
            &j,
            &[jp("a", "Succeeded", true)],
            jiff::Timestamp::now(),
            BACKOFF,
        );
        let rec = p.record.expect("recorded before the finalizer goes");
        assert_eq!(
            rec.uncounted_terminated_pods.unwrap().succeeded,
            Some(vec!["uid-a".to_string()])
        );
        assert_eq!(p.unfinalize.len(), 1);
        assert_eq!(p.status.succeeded, Some(1));
        assert_eq!(
            reason(&p.status, "SuccessCriteriaMet").as_deref(),
            Some("CompletionsReached")
        );
        assert_eq!(
            reason(&p.status, "Complete").as_deref(),
            Some("CompletionsReached")
        );
        assert!(p.status.completion_time.is_some());
        assert!(p.create.is_empty());
        assert_eq!(p.events[0].1, "Completed");
        // A pod counted already (finalizer gone) is not counted again.
        let mut j2 = j.clone();
        j2.status = Some(JobStatus {
            succeeded: Some(1),
            ..Default::default()
        });
        let p = plan(
            &j2,
            &[jp("a", "Succeeded", false)],
            jiff::Timestamp::now(),
            BACKOFF,
        );
        assert_eq!(p.status.succeeded, Some(1));
        assert!(p.record.is_none());
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job() {
        let j = job(Some(1), 1);
        let pods = [jp("a", "Failed", true), jp("b", "Failed", true)];
        let p = plan(&j, &pods, jiff::Timestamp::now(), BACKOFF);
        assert_eq!(p.status.failed, Some(2));
        assert_eq!(
            reason(&p.status, "FailureTarget").as_deref(),
            Some("BackoffLimitExceeded")
        );
        assert_eq!(
            reason(&p.status, "Failed").as_deref(),
            Some("BackoffLimitExceeded")
        );
        assert_eq!(
            p.events[0],
            (
                true,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into()
            )
        );
    }

    /// A failed pod whose container `c` exited with `code`, and optionally a condition.
    fn failed_with(name: &str, code: i32, condition: Option<&str>) -> Arc<Pod> {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition,
        };
        let mut p = (*jp(name, "Failed", true)).clone();
        let st = p.status.get_or_insert_with(Default::default);
        st.container_statuses = Some(vec![ContainerStatus {
            name: "c".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        if let Some(t) = condition {
            st.conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: t.into(),
                    status: "True".into(),
                    ..Default::default()
                });
        }
        Arc::new(p)
    }

    fn with_policy(rules: serde_json::Value) -> Job {
        let mut j = job(Some(2), 1);
        j.spec.as_mut().unwrap().backoff_limit = Some(3);
        j.spec.as_mut().unwrap().pod_failure_policy =
            Some(serde_json::from_value(json!({ "rules": rules })).unwrap());
        j
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order() {
        let policy: k8s_openapi::api::batch::v1::PodFailurePolicy =
            serde_json::from_value(json!({"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
                {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            ]}))
            .unwrap();
        assert_eq!(
            match_failure_policy(&policy, &failed_with("a", 42, None)),
            FailureAction::FailJob(
                "Container c for pod default/a failed with exit code 42 matching FailJob rule at index 1".into()
            )
        );
        // The first matching rule wins: a disrupted pod is ignored whatever its exit code.
        assert_eq!(
            match_failure_policy(&policy, &failed_with("b", 42, Some("DisruptionTarget"))),
            FailureAction::Ignore
        );
        // Exit code 1 matches no rule (NotIn [1, 2] excludes it): counted.
        assert_eq!(
            match_failure_policy(&policy, &failed_with("c", 1, None)),
            FailureAction::Count
        );
        // Exit code 0 never matches an exit-code rule.
        let p: k8s_openapi::api::batch::v1::PodFailurePolicy = serde_json::from_value(
            json!({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [5]}}]}),
        )
        .unwrap();
        assert_eq!(
            match_failure_policy(&p, &failed_with("d", 0, None)),
            FailureAction::Count
        );
        // A condition pattern with an explicit status.
        let p: k8s_openapi::api::batch::v1::PodFailurePolicy = serde_json::from_value(
            json!({"rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "False"}]}]}),
        )
        .unwrap();
        assert_eq!(
            match_failure_policy(&p, &failed_with("e", 3, Some("DisruptionTarget"))),
            FailureAction::Count
        );
    }

    #[test]
    fn a_fail_job_rule_fails_the_job_at_once() {
        let j = with_policy(json!([
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}
        ]));
        let p = plan(
            &j,
            &[failed_with("a", 42, None)],
            jiff::Timestamp::now(),
            BACKOFF,
        );
        // Counted as a failure, far below the backoff limit, and yet the Job fails.
        assert_eq!(p.status.failed, Some(1));
        assert_eq!(
            reason(&p.status, "FailureTarget").as_deref(),
            Some("PodFailurePolicy")
        );
        let failed = cond_true(&p.status, "Failed").unwrap();
        assert_eq!(failed.reason.as_deref(), Some("PodFailurePolicy"));
        assert_eq!(
            failed.message.as_deref(),
            Some("Container c for pod default/a failed with exit code 42 matching FailJob rule at index 0")
        );
        assert_eq!(p.events[0].1, "PodFailurePolicy");
        assert!(p.create.is_empty());
    }

    #[test]
    fn ignored_failures_do_not_count_and_are_replaced() {
        let j = with_policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        ]));
        let pods = [
            failed_with("a", 137, Some("DisruptionTarget")),
            failed_with("b", 137, Some("DisruptionTarget")),
            failed_with("c", 137, Some("DisruptionTarget")),
            failed_with("d", 137, Some("DisruptionTarget")),
        ];
        let p = plan(&j, &pods, jiff::Timestamp::now(), BACKOFF);
        // Four failures over a backoff limit of 3, all ignored: not counted, not recorded,
        // finalizers released, and a replacement started.
        assert_eq!(p.status.failed, Some(0));
        assert!(p.record.is_none());
        assert_eq!(p.unfinalize.len(), 4);
        assert!(cond_true(&p.status, "FailureTarget").is_none());
        assert_eq!(p.create.len(), 1);
        // Without the condition the same failures count and fail the Job.
        let pods: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| failed_with(n, 137, None))
            .collect();
        let p = plan(&j, &pods, jiff::Timestamp::now(), BACKOFF);
        assert_eq!(p.status.failed, Some(4));
        assert_eq!(
            reason(&p.status, "Failed").as_deref(),
            Some("BackoffLimitExceeded")
        );
    }

    #[test]
    fn a_failure_waits_for_the_back_off() {
        let j = job(Some(1), 1);
        let mut f = pod("a", "n", "Failed", false, 1);
        f.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        f.status.as_mut().unwrap().container_statuses =
            Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "c".into(),
                state: Some(k8s_openapi::api::core::v1::ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        finished_at: Some(Time(jiff::Timestamp::now())),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        let p = plan(&j, &[Arc::new(f)], jiff::Timestamp::now(), BACKOFF);
        assert!(p.create.is_empty());
        assert!(p
            .requeue
            .is_some_and(|d| d <= BACKOFF && d > Duration::from_secs(8)));
    }

    #[test]
    fn the_deadline_fails_the_job_and_deletes_its_pods() {
        let mut j = job(Some(1), 1);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(10);
        j.status = Some(JobStatus {
            start_time: Some(Time(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
            )),
            ..Default::default()
        });
        let p = plan(
            &j,
            &[jp("a", "Running", true)],
            jiff::Timestamp::now(),
            BACKOFF,
        );
        assert_eq!(p.delete.len(), 1);
        assert_eq!(
            reason(&p.status, "FailureTarget").as_deref(),
            Some("DeadlineExceeded")
        );
        // Failed only once no pod runs any more.
        assert!(cond_true(&p.status, "Failed").is_none());
    }

    #[test]
    fn indexed_jobs_create_the_missing_indexes() {
        let mut j = job(Some(4), 2);
        j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        j.status = Some(JobStatus {
            completed_indexes: Some("0".into()),
            ..Default::default()
        });
        let mut running = pod("r", "n", "Running", false, 1);
        running.metadata.annotations = Some([(INDEX_KEY.to_string(), "1".to_string())].into());
        let p = plan(&j, &[Arc::new(running)], jiff::Timestamp::now(), BACKOFF);
        assert_eq!(p.create, vec![Some(2)]);
        let pod = job_pod(&j, Some(2), None);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(pod.metadata.annotations.unwrap()[INDEX_KEY], "2");
        let ps = pod.spec.unwrap();
        assert_eq!(ps.hostname.as_deref(), Some("pi-2"));
        assert_eq!(
            ps.containers[0].env.as_ref().unwrap()[0].name,
            "JOB_COMPLETION_INDEX"
        );
        assert_eq!(pod.metadata.finalizers.unwrap(), [TRACKING_FINALIZER]);
    }

    #[test]
    fn index_sets_round_trip() {
        let s = parse_indexes("1,3-5,7");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5, 7]);
        assert_eq!(format_indexes(&s), "1,3-5,7");
        // Two neighbours are written as kube writes them.
        let s = parse_indexes("0-1,3-4,6-8");
        assert_eq!(format_indexes(&s), "0,1,3,4,6-8");
    }

    /// An Indexed job of `completions` pods, `parallelism` at once.
    fn indexed(completions: i32, parallelism: i32) -> Job {
        let mut j = job(Some(completions), parallelism);
        let spec = j.spec.as_mut().unwrap();
        spec.completion_mode = Some("Indexed".into());
        spec.backoff_limit = None;
        j
    }

    /// A pod of index `ix` in `phase`, tracked, with the index's failure count.
    fn ip(name: &str, ix: i32, phase: &str, failures: Option<i32>) -> Arc<Pod> {
        let mut p = (*jp(name, phase, true)).clone();
        let a = p.metadata.annotations.get_or_insert_with(Default::default);
        a.insert(INDEX_KEY.into(), ix.to_string());
        if let Some(f) = failures {
            a.insert(FAILURE_COUNT_KEY.into(), f.to_string());
        }
        Arc::new(p)
    }

    #[test]
    fn backoff_limit_per_index_replaces_a_failed_index_then_fails_it() {
        let mut j = indexed(3, 3);
        j.spec.as_mut().unwrap().backoff_limit_per_index = Some(1);
        // First pods carry a failure count of 0.
        let p = plan(&j, &[], jiff::Timestamp::now(), Duration::ZERO);
        assert_eq!(p.create, vec![Some(0), Some(1), Some(2)]);
        assert_eq!(p.failure_counts.get(&1), Some(&(0, 0)));
        assert_eq!(p.status.failed_indexes.as_deref(), Some(""));
        let pod = job_pod(&j, Some(1), Some((1, 0)));
        assert_eq!(pod.metadata.annotations.unwrap()[FAILURE_COUNT_KEY], "1");

        // Index 1 fails once: its pod keeps the finalizer (uncounted) until the
        // replacement, with failure count 1, exists. The Job's backoffLimit (defaulted to
        // MaxInt32 with a per-index limit) is not what fails it.
        let running = |n: &str, ix| ip(n, ix, "Running", Some(0));
        let pods = [
            running("a", 0),
            ip("b", 1, "Failed", Some(0)),
            running("c", 2),
        ];
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert_eq!(p.create, vec![Some(1)]);
        assert_eq!(p.failure_counts.get(&1), Some(&(1, 0)));
        assert!(p.unfinalize.is_empty() && p.record.is_none());
        assert_eq!(p.status.failed_indexes.as_deref(), Some(""));
        // Once the replacement runs, the failed pod is counted and let go.
        let pods = [
            running("a", 0),
            ip("b", 1, "Failed", Some(0)),
            ip("b2", 1, "Running", Some(1)),
            running("c", 2),
        ];
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert!(p.create.is_empty());
        assert_eq!(p.unfinalize.len(), 1);
        assert_eq!(p.status.failed, Some(1));
        // The replacement fails too, at the limit: index 1 has failed and is not run
        // again; the others go on.
        let pods = [
            running("a", 0),
            ip("b2", 1, "Failed", Some(1)),
            running("c", 2),
        ];
        let mut j2 = j.clone();
        j2.status = Some(JobStatus {
            failed: Some(1),
            ..Default::default()
        });
        let p = plan(&j2, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert!(p.create.is_empty());
        assert_eq!(p.unfinalize.len(), 1);
        assert_eq!(p.status.failed_indexes.as_deref(), Some("1"));
        assert_eq!(p.status.failed, Some(2));
        assert!(cond_true(&p.status, "FailureTarget").is_none());
        // When the other indexes succeed, the Job fails with FailedIndexes.
        j2.status = Some(JobStatus {
            failed: Some(2),
            failed_indexes: Some("1".into()),
            completed_indexes: Some("0".into()),
            ..Default::default()
        });
        let p = plan(
            &j2,
            &[ip("c", 2, "Succeeded", Some(0))],
            jiff::Timestamp::now(),
            Duration::ZERO,
        );
        assert_eq!(p.status.completed_indexes.as_deref(), Some("0,2"));
        let f = cond_true(&p.status, "Failed").expect("failed");
        assert_eq!(f.reason.as_deref(), Some("FailedIndexes"));
        assert_eq!(f.message.as_deref(), Some("Job has failed indexes"));
        assert_eq!(p.events[0].1, "FailedIndexes");
    }

    #[test]
    fn max_failed_indexes_fails_the_job_and_fail_index_fails_at_once() {
        let mut j = indexed(4, 4);
        let spec = j.spec.as_mut().unwrap();
        spec.backoff_limit_per_index = Some(3);
        spec.max_failed_indexes = Some(0);
        spec.pod_failure_policy = Some(
            serde_json::from_value(json!({"rules": [
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}
            ]}))
            .unwrap(),
        );
        let mut f = (*failed_with("a", 42, None)).clone();
        f.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX_KEY.into(), "2".into());
        let running: Vec<Arc<Pod>> = [0, 1, 3]
            .iter()
            .map(|i| ip(&format!("r{i}"), *i, "Running", Some(0)))
            .collect();
        let mut pods = running.clone();
        pods.push(Arc::new(f));
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        // FailIndex fails index 2 with no retry (limit 3); one failed index is over
        // maxFailedIndexes 0: the Job fails, its running pods are deleted.
        assert_eq!(p.status.failed_indexes.as_deref(), Some("2"));
        assert_eq!(
            reason(&p.status, "FailureTarget").as_deref(),
            Some("MaxFailedIndexesExceeded")
        );
        assert_eq!(p.delete.len(), 3);
        assert!(cond_true(&p.status, "Failed").is_none());
        // With no maxFailedIndexes the other indexes keep running.
        j.spec.as_mut().unwrap().max_failed_indexes = None;
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert!(cond_true(&p.status, "FailureTarget").is_none());
        assert!(p.create.is_empty() && p.delete.is_empty());
    }

    #[test]
    fn success_policy_rules_match_as_kube() {
        let policy = |rules: serde_json::Value| -> k8s_openapi::api::batch::v1::SuccessPolicy {
            serde_json::from_value(json!({ "rules": rules })).unwrap()
        };
        let done = parse_indexes("0,2-4");
        // succeededIndexes alone: every listed index.
        let p = policy(json!([{"succeededIndexes": "0-1"}, {"succeededIndexes": "2-3"}]));
        assert_eq!(
            match_success_policy(&p, 10, &done).as_deref(),
            Some("Matched rules at index 1")
        );
        // With succeededCount: that many of the listed ones.
        let p = policy(json!([{"succeededIndexes": "0-1", "succeededCount": 1}]));
        assert_eq!(
            match_success_policy(&p, 10, &done).as_deref(),
            Some("Matched rules at index 0")
        );
        // succeededCount alone: over all indexes.
        assert!(match_success_policy(&policy(json!([{"succeededCount": 5}])), 10, &done).is_none());
        assert!(match_success_policy(&policy(json!([{"succeededCount": 4}])), 10, &done).is_some());
        // Indexes past completions are ignored; nothing succeeded matches nothing.
        assert!(
            match_success_policy(&policy(json!([{"succeededIndexes": "12"}])), 10, &done).is_none()
        );
        assert!(match_success_policy(
            &policy(json!([{"succeededCount": 0}])),
            10,
            &BTreeSet::new()
        )
        .is_none());
    }

    #[test]
    fn a_success_policy_completes_the_job_once_the_rest_stopped() {
        let mut j = indexed(5, 5);
        j.spec.as_mut().unwrap().success_policy =
            Some(serde_json::from_value(json!({"rules": [{"succeededIndexes": "0,1"}]})).unwrap());
        let pods = [
            ip("a", 0, "Succeeded", None),
            ip("b", 1, "Succeeded", None),
            ip("c", 2, "Running", None),
        ];
        let p = plan(&j, &pods, jiff::Timestamp::now(), BACKOFF);
        let met = cond_true(&p.status, "SuccessCriteriaMet").expect("criteria met");
        assert_eq!(met.reason.as_deref(), Some("SuccessPolicy"));
        assert_eq!(met.message.as_deref(), Some("Matched rules at index 0"));
        assert_eq!(p.delete.len(), 1, "the lingering pod is removed");
        assert!(p.create.is_empty());
        assert!(cond_true(&p.status, "Complete").is_none());
        assert_eq!(p.status.terminating, Some(1));
        // Next sync: the pod is gone; Complete follows with the same reason.
        let mut j2 = j.clone();
        j2.status = Some(p.status.clone());
        let p = plan(&j2, &[], jiff::Timestamp::now(), BACKOFF);
        let c = cond_true(&p.status, "Complete").expect("complete");
        assert_eq!(c.reason.as_deref(), Some("SuccessPolicy"));
        assert_eq!(c.message.as_deref(), Some("Matched rules at index 0"));
        assert_eq!(p.status.succeeded, Some(2));
    }

    #[test]
    fn pod_replacement_policy_failed_waits_for_the_failed_phase() {
        let terminating = || {
            let mut p = (*jp("t", "Running", true)).clone();
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
            Arc::new(p)
        };
        let mut j = job(Some(4), 2);
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        let pods = [jp("a", "Running", true), terminating()];
        let p = plan(&j, &pods, jiff::Timestamp::now(), BACKOFF);
        // Not counted, not replaced, but reported terminating.
        assert!(p.create.is_empty());
        assert!(p.unfinalize.is_empty());
        assert_eq!(p.status.failed, Some(0));
        assert_eq!(p.status.terminating, Some(1));
        assert_eq!(p.status.active, Some(1));
        // TerminatingOrFailed: counted as failed and replaced at once.
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("TerminatingOrFailed".into());
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert_eq!(p.status.failed, Some(1));
        assert_eq!(p.unfinalize.len(), 1);
        assert_eq!(p.create.len(), 1);
        // Any podFailurePolicy implies Failed.
        let mut j = with_policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        ]));
        j.spec.as_mut().unwrap().parallelism = Some(2);
        let p = plan(&j, &pods, jiff::Timestamp::now(), Duration::ZERO);
        assert!(p.create.is_empty());
        assert_eq!(p.status.terminating, Some(1));
    }

    #[test]
    fn ttl_after_finished_deletes_the_job_when_due() {
        let mut j = job(Some(1), 1);
        j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(5);
        let done = |ago: i64| JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            completion_time: Some(Time(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(ago),
            )),
            ..Default::default()
        };
        j.status = Some(done(60));
        assert!(plan(&j, &[], jiff::Timestamp::now(), BACKOFF).delete_job);
        j.status = Some(done(1));
        let p = plan(&j, &[], jiff::Timestamp::now(), BACKOFF);
        assert!(!p.delete_job);
        assert!(p.requeue.is_some());
    }

    #[test]
    fn suspending_deletes_the_active_pods() {
        let mut j = job(Some(2), 2);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let p = plan(
            &j,
            &[jp("a", "Running", true)],
            jiff::Timestamp::now(),
            BACKOFF,
        );
        assert_eq!(p.delete.len(), 1);
        assert_eq!(
            reason(&p.status, "Suspended").as_deref(),
            Some("JobSuspended")
        );
    }
}
