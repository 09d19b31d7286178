//! The CronJob controller, after kube-controller-manager's (the v2 controller): the
//! standard five-field schedule (and `@hourly`, `@daily`/`@midnight`, `@weekly`,
//! `@monthly`, `@yearly`/`@annually`) in `timeZone` (the controller's zone when unset),
//! parsed by the `jiff-cron` crate (the five fields are translated to its seconds-first,
//! Sunday-is-1 form; a day-of-month and a day-of-week both restricted match either, as in
//! cron); one Job per scheduled time named `<cronjob>-<minutes since the epoch>`;
//! `concurrencyPolicy` Allow/Forbid/Replace, `startingDeadlineSeconds`, `suspend`,
//! `successfulJobsHistoryLimit`/`failedJobsHistoryLimit`, `status.active`,
//! `lastScheduleTime`, `lastSuccessfulTime`. Events: SuccessfulCreate, SawCompletedJob,
//! SuccessfulDelete, MissSchedule, JobAlreadyActive, UnparseableSchedule, UnknownTimeZone,
//! TooManyMissedTimes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};

use crate::job::is_finished;
use crate::workload::{self, controller_ref, Events, ReconcileError, SeenRevision};
use crate::{Context, Error};

const CONTROLLER: &str = "cronjob-controller";
pub(crate) const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this is worth a warning (Kubernetes' 100).
const TOO_MANY_MISSED: usize = 100;
/// Steps spent looking for the most recent missed time before giving up.
const MAX_STEPS: usize = 600_000;

/// A parsed CronJob schedule.
#[derive(Debug)]
pub(crate) struct Cron {
    /// One schedule, or two (day-of-month only, day-of-week only) whose union is meant.
    parts: Vec<jiff_cron::Schedule>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CronError(String);

/// A day-of-week field in cron's numbering (0–7, Sunday 0 or 7) in jiff-cron's (1–7,
/// Sunday 1).
fn translate_dow(field: &str) -> Result<String, CronError> {
    let num = |s: &str| -> Result<Option<u32>, CronError> {
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            let n: u32 = s
                .parse()
                .map_err(|_| CronError(format!("invalid day of week {s:?}")))?;
            if n > 7 {
                return Err(CronError(format!("day of week {n} is out of range 0-7")));
            }
            Ok(Some(n % 7 + 1))
        } else {
            Ok(None)
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step = step.map(|s| format!("/{s}")).unwrap_or_default();
        let piece = match range.split_once('-') {
            Some((a, b)) => match (num(a)?, num(b)?) {
                (Some(x), Some(1)) if b == "7" || b == "0" => {
                    // "5-7": Friday to Sunday.
                    if x == 1 {
                        "1-7".to_string()
                    } else {
                        format!("{x}-7{step},1")
                    }
                }
                (Some(x), Some(y)) => format!("{x}-{y}{step}"),
                _ => format!("{range}{step}"),
            },
            None => match num(range)? {
                Some(x) => format!("{x}{step}"),
                None => format!("{}{step}", if range == "?" { "*" } else { range }),
            },
        };
        out.push(piece);
    }
    Ok(out.join(","))
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Cron, CronError> {
        let s = s.trim();
        let six = match s {
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@weekly" => "0 0 0 * * 1".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@hourly" => "0 0 * * * *".to_string(),
            _ => {
                let f: Vec<&str> = s.split_whitespace().collect();
                if f.len() != 5 {
                    return Err(CronError(format!(
                        "expected exactly 5 fields, found {}: {s:?}",
                        f.len()
                    )));
                }
                let dom = if f[2] == "?" { "*" } else { f[2] };
                let dow = translate_dow(f[4])?;
                let restricted = |v: &str| !v.starts_with('*') && v != "?";
                if restricted(dom) && restricted(f[4]) {
                    // Either day matches (cron's rule): the union of two schedules.
                    let a = format!("0 {} {} {dom} {} *", f[0], f[1], f[3]);
                    let b = format!("0 {} {} * {} {dow}", f[0], f[1], f[3]);
                    let parse = |x: &str| {
                        jiff_cron::Schedule::from_str(x).map_err(|e| CronError(e.to_string()))
                    };
                    return Ok(Cron {
                        parts: vec![parse(&a)?, parse(&b)?],
                    });
                }
                format!("0 {} {} {dom} {} {dow}", f[0], f[1], f[3])
            }
        };
        let sched = jiff_cron::Schedule::from_str(&six).map_err(|e| CronError(e.to_string()))?;
        Ok(Cron { parts: vec![sched] })
    }
}

impl Cron {
    /// The first scheduled time strictly after `t`.
    pub(crate) fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        self.parts
            .iter()
            .filter_map(|s| s.after(z.clone()).next().map(|z| z.timestamp()))
            .min()
    }
}

/// `mostRecentScheduleTime`: the latest scheduled time in (`earliest`, `now`] and how many
/// there were (counting stops past [`TOO_MANY_MISSED`]).
pub(crate) fn most_recent(
    cron: &Cron,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut t = earliest;
    let mut last = None;
    let mut n = 0;
    for _ in 0..MAX_STEPS {
        match cron.next_after(t, tz) {
            Some(x) if x <= now => {
                last = Some(x);
                n += 1;
                t = x;
            }
            _ => break,
        }
    }
    (last, n)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
pub(crate) fn job_name(cj: &str, scheduled: Timestamp) -> String {
    format!("{cj}-{}", scheduled.as_second().div_euclid(60))
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) create: Option<Job>,
    /// Jobs to delete: (name, whether it was active and replaced, for the event).
    pub(crate) delete: Vec<String>,
    pub(crate) status: CronJobStatus,
    pub(crate) events: Vec<(bool, &'static str, String)>,
    pub(crate) requeue: Option<Duration>,
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn finished_ok(j: &Job) -> Option<bool> {
    let c = is_finished(j.status.as_ref()?)?;
    Some(c.type_ == "Complete")
}

fn rfc1123z(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// The sync of `cj` over the jobs it controls, at `now`; `zone` is the controller's time
/// zone (for CronJobs without `timeZone`).
pub(crate) fn plan(cj: &CronJob, jobs: &[Arc<Job>], now: Timestamp, zone: &TimeZone) -> Plan {
    let mut p = Plan::default();
    let Some(spec) = cj.spec.as_ref() else {
        return p;
    };
    let name = cj.name_any();
    let mut status = cj.status.clone().unwrap_or_default();
    // Active jobs: drop the finished and the vanished ones, noting completions.
    let mut active = status.active.take().unwrap_or_default();
    active.retain(|r| {
        let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) else {
            return false;
        };
        match finished_ok(j) {
            Some(ok) => {
                p.events.push((
                    false,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {}",
                        j.name_any(),
                        if ok { "Complete" } else { "Failed" }
                    ),
                ));
                false
            }
            None => true,
        }
    });
    for j in jobs {
        if finished_ok(j) == Some(true) {
            let done = j
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0);
            if let Some(d) = done {
                if status.last_successful_time.as_ref().is_none_or(|t| t.0 < d) {
                    status.last_successful_time = Some(Time(d));
                }
            }
        }
        // An unfinished job of ours that the list lost (status written before the watch
        // caught up) is active.
        if finished_ok(j).is_none()
            && j.metadata.deletion_timestamp.is_none()
            && !active.iter().any(|r| r.uid == j.metadata.uid)
        {
            active.push(job_ref(j));
        }
    }
    // History limits (oldest first).
    let limit = |v: Option<i32>, d: i32| usize::try_from(v.unwrap_or(d).max(0)).unwrap_or(0);
    for (ok, keep) in [
        (true, limit(spec.successful_jobs_history_limit, 3)),
        (false, limit(spec.failed_jobs_history_limit, 1)),
    ] {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished_ok(j) == Some(ok) && j.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|j| {
            (
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0),
                j.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        if done.len() > keep {
            for j in &done[..done.len() - keep] {
                p.delete.push(j.name_any());
                p.events.push((
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {}", j.name_any()),
                ));
            }
        }
    }
    let finish = |mut p: Plan, mut status: CronJobStatus, active: Vec<ObjectReference>| {
        status.active = (!active.is_empty()).then_some(active);
        p.status = status;
        p
    };
    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return finish(p, status, active);
    }
    let tz = match spec.time_zone.as_deref() {
        None => zone.clone(),
        Some(z) => match TimeZone::get(z) {
            Ok(t) => t,
            Err(e) => {
                p.events.push((
                    true,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {z:?}: {e}"),
                ));
                return finish(p, status, active);
            }
        },
    };
    let cron = match Cron::from_str(&spec.schedule) {
        Ok(c) => c,
        Err(e) => {
            p.events.push((
                true,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return finish(p, status, active);
        }
    };
    p.requeue = cron
        .next_after(now, &tz)
        .and_then(|n| Duration::try_from(n.duration_since(now)).ok())
        .map(|d| d + Duration::from_millis(100));
    // The most recent unmet scheduled time.
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    if let Some(sds) = spec.starting_deadline_seconds {
        let deadline = now - jiff::SignedDuration::from_secs(sds);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let (scheduled, missed) = if earliest > now {
        (None, 0)
    } else {
        most_recent(&cron, &tz, earliest, now)
    };
    let Some(scheduled) = scheduled else {
        return finish(p, status, active);
    };
    if missed > TOO_MANY_MISSED {
        p.events.push((
            true,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if scheduled + jiff::SignedDuration::from_secs(sds) < now {
            p.events.push((
                true,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    rfc1123z(scheduled, &tz)
                ),
            ));
            return finish(p, status, active);
        }
    }
    let jname = job_name(&name, scheduled);
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(jname.as_str()))
        || jobs.iter().any(|j| j.name_any() == jname)
    {
        return finish(p, status, active);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            p.events.push((
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return finish(p, status, active);
        }
        "Replace" => {
            for r in active.drain(..) {
                if let Some(n) = r.name {
                    p.events
                        .push((false, "SuccessfulDelete", format!("Deleted job {n}")));
                    p.delete.push(n);
                }
            }
        }
        _ => {}
    }
    let tmpl = &spec.job_template;
    let tm = tmpl.metadata.clone().unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(jname),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: tmpl.spec.clone(),
        status: None,
    };
    status.last_schedule_time = Some(Time(scheduled));
    p.create = Some(job);
    finish(p, status, active)
}

struct State {
    client: kube::Client,
    jobs: Store<Job>,
    events: Events,
    sync: Duration,
    zone: TimeZone,
    latest: workload::Latest<CronJob>,
}

/// Runs the CronJob controller.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let (job_store, job_writer) = reflector::store::<Job>();
    let job_events = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(job_writer);
    let controller = Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(4));
    let triggers = workload::child_triggers(
        workload::own_events(job_events),
        controller.store(),
        Arc::new(SeenRevision::default()),
        |_: &CronJob, _: &Job| false,
    );
    let state = Arc::new(State {
        client: client.clone(),
        jobs: job_store,
        events: Events::new(client, CONTROLLER),
        sync: ctx.timers.cronjob_sync,
        zone: TimeZone::system(),
        latest: workload::Latest::default(),
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(workload::ticks(ctx.timers.resync))
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
    Err(Error::Stopped { name: CONTROLLER })
}

fn error_policy(_: Arc<CronJob>, e: &ReconcileError, _: Arc<State>) -> Action {
    tracing::warn!(error = %e, "cronjob sync failed; requeued");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(skip_all, fields(namespace = cj.namespace(), name = cj.name_any()))]
async fn reconcile(cj: Arc<CronJob>, st: Arc<State>) -> Result<Action, ReconcileError> {
    let _ = st.jobs.wait_until_ready().await;
    let cj = st.latest.fresh(cj);
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    let jobs: Vec<Arc<Job>> = st
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| workload::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let plan = plan(&cj, &jobs, Timestamp::now(), &st.zone);
    let job_api: Api<Job> = Api::namespaced(st.client.clone(), &ns);
    let mut status = plan.status.clone();
    for n in &plan.delete {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match job_api.delete(n, &dp).await {
            Ok(_) => {}
            Err(e) if workload::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(job) = &plan.create {
        match job_api.create(&PostParams::default(), job).await {
            Ok(created) => {
                st.events.normal(
                    cj.object_ref(&()),
                    "SuccessfulCreate",
                    format!("Created job {}", created.name_any()),
                );
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(job_ref(&created));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) if workload::is_namespace_terminating(&e) => return Ok(Action::await_change()),
            Err(e) => {
                st.events.warning(
                    cj.object_ref(&()),
                    "FailedCreate",
                    format!("Error creating job: {}", workload::api_message(&e)),
                );
                return Err(e.into());
            }
        }
    }
    for (warning, reason, note) in plan.events {
        if warning {
            st.events.warning(cj.object_ref(&()), reason, note);
        } else {
            st.events.normal(cj.object_ref(&()), reason, note);
        }
    }
    let cj_api: Api<CronJob> = Api::namespaced(st.client.clone(), &ns);
    if let Some(c) = workload::write_status(&cj_api, &name, cj.status.as_ref(), &status).await? {
        st.latest.wrote(c);
    }
    let wait = plan.requeue.map_or(st.sync, |d| d.min(st.sync));
    Ok(Action::requeue(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus, JobTemplateSpec};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        Cron::from_str(expr)
            .unwrap()
            .next_after(ts(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn schedules_as_cron_reads_them() {
        assert_eq!(
            next("* * * * *", "2026-01-01T10:00:30Z"),
            "2026-01-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:01:00Z"),
            "2026-01-01T10:15:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-01-01T10:01:00Z"),
            "2026-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-01-01T10:01:00Z"),
            "2026-01-02T00:00:00Z"
        );
        // 2026-01-01 is a Thursday; 0 is Sunday, 1 Monday.
        assert_eq!(
            next("0 9 * * 1", "2026-01-01T10:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 0", "2026-01-01T10:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 7", "2026-01-01T10:00:00Z"),
            "2026-01-04T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * 5-7", "2026-01-01T10:00:00Z"),
            "2026-01-02T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * MON-FRI", "2026-01-02T10:00:00Z"),
            "2026-01-05T09:00:00Z"
        );
        // Day of month 15 OR Monday.
        assert_eq!(
            next("0 0 15 * 1", "2026-01-01T10:00:00Z"),
            "2026-01-05T00:00:00Z"
        );
        assert!(Cron::from_str("* * * *").is_err());
        assert!(Cron::from_str("61 * * * *").is_err());
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let c = Cron::from_str("0 9 * * *").unwrap();
        let n = c.next_after(ts("2026-01-01T00:00:00Z"), &ny).unwrap();
        assert_eq!(n.to_string(), "2026-01-01T14:00:00Z");
    }

    fn cj(schedule: &str, policy: &str, created: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("cj-uid".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                concurrency_policy: Some(policy.into()),
                time_zone: Some("UTC".into()),
                job_template: JobTemplateSpec::default(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn job(name: &str, done: Option<&str>) -> Arc<Job> {
        Arc::new(Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: None,
            status: done.map(|t| JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                completion_time: Some(Time(ts("2026-01-01T10:00:05Z"))),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn creates_the_job_of_the_most_recent_time() {
        let c = cj("* * * * *", "Allow", "2026-01-01T09:58:10Z");
        let p = plan(&c, &[], ts("2026-01-01T10:00:30Z"), &TimeZone::UTC);
        let j = p.create.expect("a job");
        let minutes = ts("2026-01-01T10:00:00Z").as_second() / 60;
        assert_eq!(j.metadata.name, Some(format!("tick-{minutes}")));
        assert_eq!(
            j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2026-01-01T10:00:00+00:00"
        );
        assert_eq!(
            p.status.last_schedule_time.unwrap().0,
            ts("2026-01-01T10:00:00Z")
        );
        assert!(p.requeue.is_some_and(|d| d <= Duration::from_secs(31)));
    }

    #[test]
    fn forbid_and_replace() {
        let mut c = cj("* * * * *", "Forbid", "2026-01-01T09:58:10Z");
        let running = job("tick-1", None);
        c.status = Some(CronJobStatus {
            active: Some(vec![job_ref(&running)]),
            last_schedule_time: Some(Time(ts("2026-01-01T09:59:00Z"))),
            ..Default::default()
        });
        let p = plan(
            &c,
            std::slice::from_ref(&running),
            ts("2026-01-01T10:00:30Z"),
            &TimeZone::UTC,
        );
        assert!(p.create.is_none());
        assert_eq!(p.events[0].1, "JobAlreadyActive");
        c.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
        let p = plan(&c, &[running], ts("2026-01-01T10:00:30Z"), &TimeZone::UTC);
        assert!(p.create.is_some());
        assert_eq!(p.delete, ["tick-1"]);
        assert_eq!(p.status.active, None);
    }

    #[test]
    fn completed_jobs_leave_active_and_history_is_trimmed() {
        let mut c = cj("@hourly", "Allow", "2026-01-01T09:58:10Z");
        c.spec.as_mut().unwrap().successful_jobs_history_limit = Some(1);
        let done = [job("a", Some("Complete")), job("b", Some("Complete"))];
        c.status = Some(CronJobStatus {
            active: Some(vec![job_ref(&done[1])]),
            last_schedule_time: Some(Time(ts("2026-01-01T10:00:00Z"))),
            ..Default::default()
        });
        let p = plan(&c, &done, ts("2026-01-01T10:30:00Z"), &TimeZone::UTC);
        assert!(p.status.active.is_none());
        assert_eq!(p.events[0].1, "SawCompletedJob");
        assert_eq!(p.delete.len(), 1);
        assert_eq!(
            p.status.last_successful_time.unwrap().0,
            ts("2026-01-01T10:00:05Z")
        );
        assert!(p.create.is_none());
    }

    #[test]
    fn a_missed_deadline_is_reported_not_run() {
        let mut c = cj("0 * * * *", "Allow", "2026-01-01T08:30:00Z");
        c.spec.as_mut().unwrap().starting_deadline_seconds = Some(60);
        let p = plan(&c, &[], ts("2026-01-01T10:30:00Z"), &TimeZone::UTC);
        assert!(p.create.is_none());
        // The deadline window (10:29–10:30) holds no scheduled time: nothing to report.
        assert!(p.events.is_empty());
        let p = plan(&c, &[], ts("2026-01-01T10:00:30Z"), &TimeZone::UTC);
        assert!(p.create.is_some());
    }

    #[test]
    fn suspended_cronjobs_create_nothing() {
        let mut c = cj("* * * * *", "Allow", "2026-01-01T09:58:10Z");
        c.spec.as_mut().unwrap().suspend = Some(true);
        assert!(plan(&c, &[], ts("2026-01-01T10:00:30Z"), &TimeZone::UTC)
            .create
            .is_none());
    }
}
