//! The HorizontalPodAutoscaler controller (kube-controller-manager's `horizontal-pod-
//! autoscaler`): every sync period, for each `autoscaling/v2` HPA, reads its target's
//! `scale` subresource, the target's pods and their CPU/memory usage from
//! `metrics.k8s.io` (served by the API server from the node agents' stats), computes the
//! replica count with Kubernetes' algorithm and writes it to the scale subresource.
//!
//! The algorithm (kube's `replica_calculator.go` and `horizontal.go`):
//! - per Resource/ContainerResource metric, the usage ratio against the target
//!   (utilization: Σusage·100/Σrequests over pods with metrics, compared with the target
//!   percentage; average value: Σusage/pods against the target); within the tolerance
//!   (0.1) nothing changes; pods without metrics count as 100 % of their request when
//!   scaling down and 0 when scaling up, unready pods (CPU) as 0 when scaling up, and a
//!   change of direction after that cancels the change;
//! - the largest proposal of all metrics wins; when some metric failed, only scaling up;
//! - without `spec.behavior`: the highest recommendation of the downscale stabilization
//!   window (`--horizontal-pod-autoscaler-downscale-stabilization`, 300 s), then at most
//!   max(2×current, 4), within min/max;
//! - with `spec.behavior`: both stabilization windows and the scaling policies (Pods,
//!   Percent, over their periods, `selectPolicy` Max/Min/Disabled) over the scale events
//!   this controller made;
//! - status: `currentReplicas`, `desiredReplicas`, `currentMetrics`, `lastScaleTime` and
//!   the conditions AbleToScale, ScalingActive and ScalingLimited, with kube's reasons;
//!   Events `SuccessfulRescale`, `FailedGetScale`, `FailedGetResourceMetric`,
//!   `FailedRescale`.
//!
//! Object and External metrics need a custom/external metrics API, which h8s does not
//! serve: such a metric is a failed metric (ScalingActive stays true if another works).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::cluster;
use crate::{Context, Error};

/// kube's `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
const CONTROLLER: &str = "horizontal-pod-autoscaler";

/// A metric's target, in thousandths (`milli_value`) for values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i64),
    /// Average per pod, in thousandths of the unit.
    AverageValue(i128),
}

/// One pod as the replica calculation sees it, for one resource.
#[derive(Debug, Clone, Default)]
pub struct PodSample {
    pub name: String,
    /// Deleted, or `Failed`: not counted at all.
    pub ignored: bool,
    /// Pending, or (CPU) not Ready: counted as 0 when scaling up.
    pub unready: bool,
    /// The request of the resource in thousandths (Σ containers), `None` if a container
    /// has none.
    pub request: Option<i128>,
    /// The usage in thousandths, `None` without metrics.
    pub usage: Option<i128>,
}

/// What one metric proposes: the replica count and the current value (utilization
/// percent or average in thousandths).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub utilization: Option<i64>,
    pub average: i128,
}

fn within(ratio: f64, tolerance: f64) -> bool {
    (1.0 - ratio).abs() <= tolerance
}

/// kube's `GetResourceReplicas` / `GetRawResourceReplicas` over `pods`.
pub fn resource_replicas(
    current: i32,
    pods: &[PodSample],
    target: Target,
    tolerance: f64,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let counted: Vec<&PodSample> = pods.iter().filter(|p| !p.ignored).collect();
    let with_metrics: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| !p.unready && p.usage.is_some())
        .collect();
    let missing: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| !p.unready && p.usage.is_none())
        .collect();
    let unready: Vec<&PodSample> = counted.iter().copied().filter(|p| p.unready).collect();
    if with_metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    // (pod usage, pod request) pairs → ratio, utilization, average.
    let ratio_of = |samples: &[(i128, Option<i128>)]| -> Result<(f64, Option<i64>, i128), String> {
        let n = samples.len().max(1) as i128;
        let usage: i128 = samples.iter().map(|s| s.0).sum();
        match target {
            Target::Utilization(t) => {
                let mut requests: i128 = 0;
                for (_, r) in samples {
                    requests += r.ok_or("missing request for the resource in a container")?;
                }
                if requests == 0 {
                    return Err("the pods request none of the resource".into());
                }
                let util = (usage * 100 / requests) as i64;
                Ok((util as f64 / t.max(1) as f64, Some(util), usage / n))
            }
            Target::AverageValue(t) => {
                Ok((usage as f64 / (t.max(1) as f64 * n as f64), None, usage / n))
            }
        }
    };
    let mut samples: Vec<(i128, Option<i128>)> = with_metrics
        .iter()
        .map(|p| (p.usage.unwrap_or(0), p.request))
        .collect();
    let (ratio, utilization, average) = ratio_of(&samples)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within(ratio, tolerance) {
            return Ok(proposal(current));
        }
        return Ok(proposal((ratio * with_metrics.len() as f64).ceil() as i32));
    }
    for p in &missing {
        let fill = if ratio < 1.0 {
            match target {
                Target::Utilization(t) => p.request.unwrap_or(0) * i128::from(t.max(100)) / 100,
                Target::AverageValue(t) => t,
            }
        } else {
            0
        };
        if ratio != 1.0 {
            samples.push((fill, p.request));
        }
    }
    if scale_up_with_unready {
        samples.extend(unready.iter().map(|p| (0, p.request)));
    }
    let (new_ratio, _, _) = ratio_of(&samples)?;
    if within(new_ratio, tolerance)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * samples.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// A scaling policy of `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub pods: bool,
    pub value: i32,
    pub period: Duration,
}

/// One direction's rules of `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window: Duration,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    pub policies: Vec<Policy>,
}

impl Rules {
    fn from(v: Option<&Value>, default_window: Duration) -> Option<Rules> {
        let v = v.filter(|v| v.is_object())?;
        let window = v
            .get("stabilizationWindowSeconds")
            .and_then(Value::as_u64)
            .map_or(default_window, Duration::from_secs);
        let policies = v
            .get("policies")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| Policy {
                        pods: p["type"] == "Pods",
                        value: p["value"].as_i64().unwrap_or(0) as i32,
                        period: Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(15)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Rules {
            window,
            select: v["selectPolicy"].as_str().unwrap_or("Max").to_string(),
            policies,
        })
    }
}

/// The memory of one HPA: recent recommendations and the scale events this controller
/// made (times as seconds since an arbitrary origin: the controller's clock).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub recommendations: Vec<(f64, i32)>,
    /// (time, +added or −removed replicas).
    pub scale_events: Vec<(f64, i32)>,
}

/// Why the final count differs from the proposal (ScalingLimited / AbleToScale).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    /// ScalingLimited: (true?, reason, message).
    pub limited: (bool, &'static str, &'static str),
    /// Set when stabilization changed the proposal: (reason, message) for AbleToScale.
    pub stabilized: Option<(&'static str, &'static str)>,
}

const WITHIN: (bool, &str, &str) = (
    false,
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: (bool, &str, &str) = (
    true,
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: (bool, &str, &str) = (
    true,
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: (bool, &str, &str) = (
    true,
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (bool, &str, &str) = (
    true,
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// kube's `normalizeDesiredReplicas` (no behavior) and
/// `normalizeDesiredReplicasWithBehaviors`; records the recommendation in `mem`.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    mem: &mut Memory,
    now: f64,
    current: i32,
    proposed: i32,
    min: i32,
    max: i32,
    behavior: Option<(Option<Rules>, Option<Rules>)>,
    downscale_window: Duration,
) -> Normalized {
    let Some((up, down)) = behavior else {
        // Highest recommendation of the downscale window.
        let cutoff = now - downscale_window.as_secs_f64();
        let stabilized = mem
            .recommendations
            .iter()
            .filter(|(t, _)| *t > cutoff)
            .map(|(_, r)| *r)
            .fold(proposed, i32::max);
        remember(mem, now, proposed, downscale_window.as_secs_f64());
        let stab = (stabilized != proposed).then_some((
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        ));
        let up_limit = (2 * current).max(4);
        let (replicas, limited) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > max.min(up_limit) {
            if up_limit < max {
                (up_limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            }
        } else {
            (stabilized, WITHIN)
        };
        return Normalized {
            replicas,
            limited,
            stabilized: stab,
        };
    };
    let up = up.unwrap_or(Rules {
        window: Duration::ZERO,
        select: "Max".into(),
        policies: vec![
            Policy {
                pods: true,
                value: 4,
                period: Duration::from_secs(15),
            },
            Policy {
                pods: false,
                value: 100,
                period: Duration::from_secs(15),
            },
        ],
    });
    let down = down.unwrap_or(Rules {
        window: downscale_window,
        select: "Max".into(),
        policies: vec![Policy {
            pods: false,
            value: 100,
            period: Duration::from_secs(15),
        }],
    });
    // Stabilization: at least the lowest recommendation of the up window, at most the
    // highest of the down window.
    let (up_cut, down_cut) = (
        now - up.window.as_secs_f64(),
        now - down.window.as_secs_f64(),
    );
    let mut up_rec = proposed;
    let mut down_rec = proposed;
    for (t, r) in &mem.recommendations {
        if *t > up_cut {
            up_rec = up_rec.min(*r);
        }
        if *t > down_cut {
            down_rec = down_rec.max(*r);
        }
    }
    remember(mem, now, proposed, up.window.max(down.window).as_secs_f64());
    let stabilized = current.max(up_rec).min(down_rec);
    let stab = match stabilized.cmp(&proposed) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some((
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        )),
        std::cmp::Ordering::Greater => Some((
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )),
    };
    let changed_in = |period: Duration, up: bool| -> i32 {
        let cut = now - period.as_secs_f64();
        mem.scale_events
            .iter()
            .filter(|(t, c)| *t > cut && (*c > 0) == up)
            .map(|(_, c)| c.abs())
            .sum()
    };
    let (replicas, limited) = if stabilized > current {
        let limit = if up.select == "Disabled" {
            current
        } else {
            let props = up.policies.iter().map(|p| {
                let start = current - changed_in(p.period, true);
                if p.pods {
                    start + p.value
                } else {
                    (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32
                }
            });
            let v = if up.select == "Min" {
                props.min()
            } else {
                props.max()
            };
            v.unwrap_or(current).max(current)
        };
        let (allowed, reason) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if stabilized > allowed {
            (allowed, reason)
        } else if stabilized < min {
            (min, TOO_FEW)
        } else {
            (stabilized, WITHIN)
        }
    } else if stabilized < current {
        let limit = if down.select == "Disabled" {
            current
        } else {
            let props = down.policies.iter().map(|p| {
                let start = current + changed_in(p.period, false);
                if p.pods {
                    start - p.value
                } else {
                    (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32
                }
            });
            // Max picks the largest change: the fewest replicas.
            let v = if down.select == "Min" {
                props.max()
            } else {
                props.min()
            };
            v.unwrap_or(current).min(current)
        };
        let (allowed, reason) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if stabilized < allowed {
            (allowed, reason)
        } else if stabilized > max {
            (max, TOO_MANY)
        } else {
            (stabilized, WITHIN)
        }
    } else if stabilized < min {
        (min, TOO_FEW)
    } else if stabilized > max {
        (max, TOO_MANY)
    } else {
        (stabilized, WITHIN)
    };
    Normalized {
        replicas,
        limited,
        stabilized: stab,
    }
}

/// Keeps the recommendations of the longest window, plus this one.
fn remember(mem: &mut Memory, now: f64, rec: i32, keep_secs: f64) {
    mem.recommendations.retain(|(t, _)| *t > now - keep_secs);
    mem.recommendations.push((now, rec));
}

// ---------- the controller ----------

struct State {
    client: kube::Client,
    events: cluster::Events,
    memory: Mutex<HashMap<String, Memory>>,
    started: std::time::Instant,
    sync: Duration,
    downscale_window: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let state = Arc::new(State {
        client: client.clone(),
        events: cluster::Events::new(client.clone(), CONTROLLER),
        memory: Mutex::new(HashMap::new()),
        started: std::time::Instant::now(),
        sync: ctx.timers.hpa_sync_period,
        downscale_window: ctx.timers.hpa_downscale_stabilization,
    });
    Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, state)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "horizontal pod autoscaler");
        }
    })
    .await;
    Err(Error::Stopped { name: "hpa" })
}

fn error_policy(_h: Arc<HorizontalPodAutoscaler>, e: &ReconcileError, s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "hpa reconcile failed; retrying");
    Action::requeue(s.sync)
}

fn condition(old: &Value, ty: &str, ok: bool, reason: &str, message: String) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == ty));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(cluster::now().0.to_string()),
    };
    json!({"type": ty, "status": status, "lastTransitionTime": since,
        "reason": reason, "message": message})
}

fn quantity(v: Option<&Value>) -> Option<i128> {
    v.and_then(Value::as_str)
        .and_then(|s| h8s_types::quantity::Quantity::parse(s).ok())
        .and_then(|q| q.milli_value())
}

/// A quantity from thousandths, as Kubernetes prints it (`250m`, `128Mi` as bytes).
fn render(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Samples of `resource` (and only `container` when set) for `pods`, with `usage` from
/// the PodMetrics.
fn samples(
    pods: &[Pod],
    metrics: &HashMap<String, Value>,
    resource: &str,
    container: Option<&str>,
) -> Vec<PodSample> {
    pods.iter()
        .map(|p| {
            let name = p.name_any();
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            let ignored = p.metadata.deletion_timestamp.is_some() || phase == "Failed";
            let unready = phase == "Pending" || (resource == "cpu" && !cluster::pod_ready(p));
            let v = serde_json::to_value(p).unwrap_or(Value::Null);
            let cs = v
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut request = Some(0i128);
            for c in cs
                .iter()
                .filter(|c| container.is_none_or(|n| c["name"] == n))
            {
                let r = quantity(c.pointer(&format!("/resources/requests/{resource}")));
                request = request.zip(r).map(|(a, b)| a + b);
            }
            let usage = metrics.get(&name).map(|m| {
                m["containers"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .filter(|c| container.is_none_or(|n| c["name"] == n))
                            .filter_map(|c| quantity(c.pointer(&format!("/usage/{resource}"))))
                            .sum()
                    })
                    .unwrap_or(0)
            });
            PodSample {
                name,
                ignored,
                unready,
                request,
                usage,
            }
        })
        .collect()
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    s: Arc<State>,
) -> Result<Action, ReconcileError> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let key = format!("{ns}/{name}");
    let o = serde_json::to_value(&*hpa).unwrap_or(Value::Null);
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
    let max = spec["maxReplicas"].as_i64().unwrap_or(1) as i32;
    let target_ref = &spec["scaleTargetRef"];
    let (kind, target) = (
        target_ref["kind"].as_str().unwrap_or(""),
        target_ref["name"].as_str().unwrap_or(""),
    );
    let api_version = target_ref["apiVersion"].as_str().unwrap_or("apps/v1");
    let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind));
    let scalable = Api::<DynamicObject>::namespaced_with(s.client.clone(), &ns, &ar);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(s.client.clone(), &ns);
    let me = hpa.object_ref(&());
    let reference = format!("{kind}/{target}");

    let scale = match scalable.get_scale(target).await {
        Ok(sc) => sc,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            s.events
                .publish(
                    &me,
                    EventType::Warning,
                    "FailedGetScale",
                    "GetScale",
                    e.to_string(),
                )
                .await;
            let status = json!({"status": {"conditions": [
                condition(&o, "AbleToScale", false, "FailedGetScale", msg)]}});
            patch_status(&hpas, &name, status).await?;
            return Ok(Action::requeue(s.sync));
        }
    };
    let current = scale.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|st| st.selector.clone())
        .unwrap_or_default();

    let mut conditions = Vec::new();
    let mut current_metrics = Vec::new();
    let now = s.started.elapsed().as_secs_f64();
    let (desired, reason) = if current == 0 && min != 0 {
        conditions.push(condition(
            &o,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
        (0, String::new())
    } else if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".to_string(),
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".to_string(),
        )
    } else {
        let pods = Api::<Pod>::namespaced(s.client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        let pm_ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"),
            "pods",
        );
        let metrics: HashMap<String, Value> =
            match Api::<DynamicObject>::namespaced_with(s.client.clone(), &ns, &pm_ar)
                .list(&ListParams::default().labels(&selector))
                .await
            {
                Ok(l) => l
                    .items
                    .into_iter()
                    .map(|m| (m.name_any(), m.data))
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "reading pod metrics");
                    HashMap::new()
                }
            };
        let mut best: Option<(i32, String)> = None;
        let mut failures = Vec::new();
        for m in spec["metrics"].as_array().cloned().unwrap_or_default() {
            let ty = m["type"].as_str().unwrap_or("");
            let (key_, container) = match ty {
                "Resource" => ("resource", None),
                "ContainerResource" => (
                    "containerResource",
                    m.pointer("/containerResource/container")
                        .and_then(Value::as_str),
                ),
                other => {
                    failures.push(format!("{other} metrics need a custom or external metrics API, which h8s does not serve"));
                    continue;
                }
            };
            let src = &m[key_];
            let resource = src["name"].as_str().unwrap_or("");
            let t = match src.pointer("/target/type").and_then(Value::as_str) {
                Some("Utilization") => Target::Utilization(
                    src.pointer("/target/averageUtilization")
                        .and_then(Value::as_i64)
                        .unwrap_or(80),
                ),
                _ => {
                    Target::AverageValue(quantity(src.pointer("/target/averageValue")).unwrap_or(0))
                }
            };
            let samples = samples(&pods, &metrics, resource, container);
            match resource_replicas(current, &samples, t, TOLERANCE) {
                Ok(p) => {
                    let mut cur = json!({"averageValue": render(p.average)});
                    if let Some(u) = p.utilization {
                        cur["averageUtilization"] = json!(u);
                    }
                    let mut st = json!({"type": ty, key_: {"name": resource, "current": cur}});
                    if let Some(c) = container {
                        st[key_]["container"] = json!(c);
                    }
                    current_metrics.push(st);
                    let why = match t {
                        Target::Utilization(_) => format!(
                            "{resource} resource utilization (percentage of request) above target"
                        ),
                        Target::AverageValue(_) => format!("{resource} resource above target"),
                    };
                    if best.as_ref().is_none_or(|(r, _)| p.replicas > *r) {
                        best = Some((p.replicas, why));
                    }
                }
                Err(e) => failures.push(format!("failed to get {resource} utilization: {e}")),
            }
        }
        for f in &failures {
            s.events
                .publish(
                    &me,
                    EventType::Warning,
                    "FailedGetResourceMetric",
                    "GetMetric",
                    f.clone(),
                )
                .await;
        }
        match best {
            None => {
                let msg = format!(
                    "the HPA was unable to compute the replica count: {}",
                    failures.join("; ")
                );
                conditions.push(condition(
                    &o,
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    msg,
                ));
                conditions.push(condition(
                    &o,
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale".into(),
                ));
                let status = json!({"status": {"currentReplicas": current,
                    "desiredReplicas": current, "conditions": conditions,
                    "observedGeneration": hpa.metadata.generation}});
                patch_status(&hpas, &name, status).await?;
                return Ok(Action::requeue(s.sync));
            }
            Some((mut proposed, why)) => {
                // A failed metric might have asked for more: never scale down then.
                if !failures.is_empty() && proposed < current {
                    proposed = current;
                }
                let first = current_metrics
                    .first()
                    .and_then(|m| {
                        m["resource"]["name"]
                            .as_str()
                            .or(m["containerResource"]["name"].as_str())
                    })
                    .unwrap_or("cpu")
                    .to_string();
                conditions.push(condition(
                    &o,
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!("the HPA was able to successfully calculate a replica count from {first} resource utilization (percentage of request)"),
                ));
                let behavior = spec.get("behavior").filter(|b| b.is_object()).map(|b| {
                    (
                        Rules::from(b.get("scaleUp"), Duration::ZERO),
                        Rules::from(b.get("scaleDown"), s.downscale_window),
                    )
                });
                let n = {
                    let mut mems = s.memory.lock().unwrap_or_else(|e| e.into_inner());
                    let mem = mems.entry(key.clone()).or_default();
                    normalize(
                        mem,
                        now,
                        current,
                        proposed,
                        min,
                        max,
                        behavior,
                        s.downscale_window,
                    )
                };
                let (lim, lreason, lmsg) = n.limited;
                conditions.push(condition(&o, "ScalingLimited", lim, lreason, lmsg.into()));
                if let Some((r, m)) = n.stabilized {
                    conditions.push(condition(&o, "AbleToScale", true, r, m.into()));
                }
                (n.replicas, why)
            }
        }
    };

    let mut status = json!({"currentReplicas": current, "desiredReplicas": desired,
        "currentMetrics": current_metrics, "observedGeneration": hpa.metadata.generation});
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        match scalable
            .patch_scale(target, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                s.events
                    .publish(
                        &me,
                        EventType::Normal,
                        "SuccessfulRescale",
                        "Scale",
                        format!("New size: {desired}; reason: {reason}"),
                    )
                    .await;
                {
                    let mut mems = s.memory.lock().unwrap_or_else(|e| e.into_inner());
                    mems.entry(key.clone())
                        .or_default()
                        .scale_events
                        .push((now, desired - current));
                }
                tracing::info!(hpa = %key, %reference, from = current, to = desired, %reason, "rescaled");
                status["lastScaleTime"] = json!(cluster::now().0.to_string());
                if !conditions.iter().any(|c| c["type"] == "AbleToScale") {
                    conditions.push(condition(
                        &o,
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    ));
                }
            }
            Err(e) => {
                s.events
                    .publish(
                        &me,
                        EventType::Warning,
                        "FailedRescale",
                        "Scale",
                        format!("New size: {desired}; reason: {reason}; error: {e}"),
                    )
                    .await;
                conditions.retain(|c| c["type"] != "AbleToScale");
                conditions.push(condition(
                    &o,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                ));
                status["desiredReplicas"] = json!(current);
            }
        }
    } else if !conditions.iter().any(|c| c["type"] == "AbleToScale") {
        conditions.push(condition(
            &o,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        ));
    }
    // Conditions in kube's order.
    let order = |c: &Value| match c["type"].as_str() {
        Some("AbleToScale") => 0,
        Some("ScalingActive") => 1,
        _ => 2,
    };
    conditions.sort_by_key(order);
    status["conditions"] = Value::Array(conditions);
    patch_status(&hpas, &name, json!({ "status": status })).await?;
    Ok(Action::requeue(s.sync))
}

async fn patch_status(
    hpas: &Api<HorizontalPodAutoscaler>,
    name: &str,
    status: Value,
) -> Result<(), kube::Error> {
    hpas.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, request: i128, usage: Option<i128>) -> PodSample {
        PodSample {
            name: name.into(),
            request: Some(request),
            usage,
            ..Default::default()
        }
    }

    #[test]
    fn utilization_scales_proportionally() {
        // 3 pods at 100m request using 90m each against 50 %: 180 % → ceil(1.8 × 3) = 6.
        let pods: Vec<_> = (0..3)
            .map(|i| pod(&format!("p{i}"), 100, Some(90)))
            .collect();
        let p = resource_replicas(3, &pods, Target::Utilization(50), TOLERANCE).unwrap();
        assert_eq!(p.replicas, 6);
        assert_eq!(p.utilization, Some(90));
        // Within the tolerance: 54 % against 50 % is a ratio of 1.08.
        let pods: Vec<_> = (0..3)
            .map(|i| pod(&format!("p{i}"), 100, Some(54)))
            .collect();
        assert_eq!(
            resource_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            3
        );
        // Scale down: 10 % against 50 % → ceil(0.2 × 4) = 1.
        let pods: Vec<_> = (0..4)
            .map(|i| pod(&format!("p{i}"), 100, Some(10)))
            .collect();
        assert_eq!(
            resource_replicas(4, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            1
        );
    }

    #[test]
    fn missing_and_unready_pods_dampen_changes() {
        // Scale up with a pod without metrics: it counts as 0.
        // 2 pods at 100 % of 100m, 1 missing: ratio 2.0 → with the missing at 0: 200/300
        // = 66 % → 1.33 × 3 = 4.
        let mut pods = vec![
            pod("a", 100, Some(100)),
            pod("b", 100, Some(100)),
            pod("c", 100, None),
        ];
        assert_eq!(
            resource_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            4
        );
        // Scale down with a missing pod: it counts as 100 % of its request, which flips the
        // direction → no change.
        pods = vec![
            pod("a", 100, Some(20)),
            pod("b", 100, Some(20)),
            pod("c", 100, None),
        ];
        assert_eq!(
            resource_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            3
        );
        // An unready pod (CPU) counts as 0 when scaling up.
        let mut u = pod("u", 100, None);
        u.unready = true;
        let pods = vec![pod("a", 100, Some(150)), u];
        // ratio 3.0; with the unready at 0: 75 % / 50 % = 1.5 × 2 = 3.
        assert_eq!(
            resource_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            3
        );
        // Ignored pods do not count; no metrics at all is an error.
        let mut gone = pod("g", 100, Some(1000));
        gone.ignored = true;
        let pods = vec![pod("a", 100, Some(50)), gone];
        assert_eq!(
            resource_replicas(1, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .replicas,
            1
        );
        assert!(resource_replicas(
            1,
            &[pod("a", 100, None)],
            Target::Utilization(50),
            TOLERANCE
        )
        .is_err());
        assert!(resource_replicas(1, &[], Target::Utilization(50), TOLERANCE).is_err());
    }

    #[test]
    fn average_value_and_missing_requests() {
        // Memory: 3 pods using 200Mi on average against 100Mi → 6.
        let mi = 1024 * 1024 * 1000i128;
        let pods: Vec<_> = (0..3)
            .map(|i| pod(&format!("p{i}"), 0, Some(200 * mi)))
            .collect();
        let p = resource_replicas(3, &pods, Target::AverageValue(100 * mi), TOLERANCE).unwrap();
        assert_eq!(p.replicas, 6);
        assert_eq!(p.average, 200 * mi);
        // Utilization needs requests.
        let mut p = pod("a", 0, Some(10));
        p.request = None;
        assert!(resource_replicas(1, &[p], Target::Utilization(50), TOLERANCE).is_err());
    }

    #[test]
    fn downscale_stabilization_window() {
        let w = Duration::from_secs(300);
        let mut mem = Memory::default();
        // A recommendation of 6 at t=0, then 2 at t=100: the window keeps 6.
        let n = normalize(&mut mem, 0.0, 3, 6, 1, 10, None, w);
        assert_eq!(n.replicas, 6);
        assert_eq!(n.limited, WITHIN);
        let n = normalize(&mut mem, 100.0, 6, 2, 1, 10, None, w);
        assert_eq!(n.replicas, 6);
        assert_eq!(n.stabilized.unwrap().0, "ScaleDownStabilized");
        // After the window, the lower recommendation wins.
        let n = normalize(&mut mem, 401.0, 6, 2, 1, 10, None, w);
        assert_eq!(n.replicas, 2);
        // Limits: min, max and the scale-up rate max(2×current, 4).
        let mut mem = Memory::default();
        assert_eq!(
            normalize(&mut mem, 0.0, 2, 0, 1, 10, None, w).limited,
            TOO_FEW
        );
        let mut mem = Memory::default();
        let n = normalize(&mut mem, 0.0, 3, 50, 1, 10, None, w);
        assert_eq!((n.replicas, n.limited), (6, UP_LIMIT));
        let mut mem = Memory::default();
        let n = normalize(&mut mem, 0.0, 3, 50, 1, 5, None, w);
        assert_eq!((n.replicas, n.limited), (5, TOO_MANY));
    }

    #[test]
    fn behavior_policies_limit_the_rate() {
        let w = Duration::from_secs(300);
        let down = Rules {
            window: Duration::ZERO,
            select: "Max".into(),
            policies: vec![Policy {
                pods: true,
                value: 1,
                period: Duration::from_secs(60),
            }],
        };
        let mut mem = Memory::default();
        // At most one pod removed per minute.
        let n = normalize(
            &mut mem,
            0.0,
            5,
            1,
            1,
            10,
            Some((None, Some(down.clone()))),
            w,
        );
        assert_eq!((n.replicas, n.limited), (4, DOWN_LIMIT));
        mem.scale_events.push((0.0, -1));
        let n = normalize(
            &mut mem,
            30.0,
            4,
            1,
            1,
            10,
            Some((None, Some(down.clone()))),
            w,
        );
        assert_eq!(n.replicas, 4, "the period's budget is spent");
        let n = normalize(&mut mem, 61.0, 4, 1, 1, 10, Some((None, Some(down))), w);
        assert_eq!(n.replicas, 3);
        // Default scale-up: max(+4 pods, +100 %) per 15 s.
        let mut mem = Memory::default();
        let n = normalize(&mut mem, 0.0, 10, 50, 1, 100, Some((None, None)), w);
        assert_eq!((n.replicas, n.limited), (20, UP_LIMIT));
        // Disabled scale-down.
        let off = Rules {
            window: Duration::ZERO,
            select: "Disabled".into(),
            policies: vec![],
        };
        let mut mem = Memory::default();
        let n = normalize(&mut mem, 0.0, 5, 1, 1, 10, Some((None, Some(off))), w);
        assert_eq!(n.replicas, 5);
    }
}
