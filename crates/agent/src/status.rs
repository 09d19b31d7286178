//! The Pod status as kubelet computes it, from what the worker knows: the runtime's view of
//! each container instance plus the worker's own waiting reasons (image pulls, back-off).
//! Pure functions, unit-tested without a runtime or an API server.

use std::collections::BTreeMap;

use h8s_runtime::{ContainerState, ContainerStatus as RtStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A waiting reason the worker decided (kubelet's `ContainerCreating`, `ErrImagePull`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<Option<String>>) -> Waiting {
        Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Everything the worker knows of one container of the pod spec.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerView {
    /// The newest runtime instance.
    pub current: Option<RtStatus>,
    /// The instance before it (for `lastState`).
    pub previous: Option<RtStatus>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Why it is waiting, when the worker holds it back (pull failure, back-off, …).
    pub waiting: Option<Waiting>,
    /// The readiness probe's last result (a container without one is ready once started:
    /// [`container_status`] derives that).
    pub ready: bool,
    /// The startup probe passed (a running container without one has started:
    /// [`container_status`] derives that).
    pub started: bool,
    /// The image's id (`name@sha256:…`), once known.
    pub image_id: Option<String>,
    /// `h8s-vm://<sandbox>/<instance>` of the newest instance.
    pub container_id: Option<String>,
    /// `h8s-vm://…` of the previous instance.
    pub previous_id: Option<String>,
}

/// The pod-level facts.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodView {
    /// The pod VM runs (the runtime's sandbox is ready).
    pub sandbox_ready: bool,
    /// The pod's IP.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: Option<String>,
    /// When the agent first acknowledged the pod.
    pub start_time: Option<Time>,
    /// A pod-level failure that ends it (activeDeadlineSeconds, an init container failing with
    /// restartPolicy Never): phase Failed with this reason and message.
    pub failed: Option<(String, String)>,
    /// Init containers, in spec order.
    pub init: Vec<ContainerView>,
    /// App containers, in spec order.
    pub app: Vec<ContainerView>,
}

pub(crate) fn parse_time(s: &str) -> Option<Time> {
    s.parse::<jiff::Timestamp>().ok().map(Time)
}

fn terminated(rt: &RtStatus, id: Option<&String>) -> ContainerStateTerminated {
    // The runtime could not start it (no such command, not executable): kubelet's
    // StartError, exit code 128, the runtime's message.
    if start_failed(rt) {
        return ContainerStateTerminated {
            exit_code: 128,
            reason: Some("StartError".into()),
            message: rt.reason.clone(),
            started_at: None,
            finished_at: rt.finished_at.as_deref().and_then(parse_time),
            container_id: id.cloned(),
            signal: None,
        };
    }
    let code = rt
        .exit_code
        .unwrap_or(if rt.state == ContainerState::Unknown {
            137
        } else {
            0
        });
    let reason = match (rt.state, code) {
        (ContainerState::Unknown, _) => "ContainerStatusUnknown",
        (_, 0) => "Completed",
        _ => "Error",
    };
    ContainerStateTerminated {
        exit_code: code,
        reason: Some(reason.into()),
        message: rt
            .reason
            .clone()
            .filter(|_| rt.state == ContainerState::Unknown),
        started_at: rt.started_at.as_deref().and_then(parse_time),
        finished_at: rt.finished_at.as_deref().and_then(parse_time),
        container_id: id.cloned(),
        signal: (code > 128).then_some(code - 128),
    }
}

/// The runtime failed to start this instance (it never ran).
pub(crate) fn start_failed(rt: &RtStatus) -> bool {
    rt.state == ContainerState::Exited && rt.started_at.is_none() && rt.reason.is_some()
}

fn waiting_state(w: &Waiting) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: w.message.clone(),
        }),
        ..Default::default()
    }
}

/// One container's status as kubelet reports it.
pub(crate) fn container_status(
    spec: &Container,
    v: &ContainerView,
    default_waiting: &str,
) -> ContainerStatus {
    let last_of = |rt: &RtStatus, id: Option<&String>| K8sState {
        terminated: Some(terminated(rt, id)),
        ..Default::default()
    };
    let (state, last, ready, started) = match (&v.current, &v.waiting) {
        // Held back (back-off, create error) after an instance ran: that instance is the
        // last state.
        (Some(cur), Some(w))
            if matches!(cur.state, ContainerState::Exited | ContainerState::Unknown) =>
        {
            (
                waiting_state(w),
                Some(last_of(cur, v.container_id.as_ref())),
                false,
                false,
            )
        }
        (Some(cur), _) => {
            let last = v
                .previous
                .as_ref()
                .map(|p| last_of(p, v.previous_id.as_ref()));
            match cur.state {
                ContainerState::Running => {
                    // As kubelet's prober manager: a running container without a startup
                    // probe has started, and one without a readiness probe is ready once
                    // started, in the status that first shows it running.
                    let started = v.started || spec.startup_probe.is_none();
                    let ready = match spec.readiness_probe {
                        None => started,
                        Some(_) => v.ready,
                    };
                    (
                        K8sState {
                            running: Some(ContainerStateRunning {
                                started_at: cur.started_at.as_deref().and_then(parse_time),
                            }),
                            ..Default::default()
                        },
                        last,
                        ready,
                        started,
                    )
                }
                ContainerState::Exited | ContainerState::Unknown => (
                    K8sState {
                        terminated: Some(terminated(cur, v.container_id.as_ref())),
                        ..Default::default()
                    },
                    last,
                    false,
                    false,
                ),
                ContainerState::Created => (
                    waiting_state(
                        v.waiting
                            .as_ref()
                            .unwrap_or(&Waiting::new(default_waiting, None)),
                    ),
                    last,
                    false,
                    false,
                ),
            }
        }
        (None, w) => (
            waiting_state(w.as_ref().unwrap_or(&Waiting::new(default_waiting, None))),
            None,
            false,
            false,
        ),
    };
    let image = spec.image.clone().unwrap_or_default();
    ContainerStatus {
        name: spec.name.clone(),
        image: image.clone(),
        image_id: v.image_id.clone().unwrap_or_default(),
        container_id: v.current.as_ref().and(v.container_id.clone()),
        ready,
        started: Some(started),
        restart_count: v.restart_count,
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}

fn succeeded(v: &ContainerView) -> bool {
    v.current
        .as_ref()
        .is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == Some(0))
}

/// The init containers have all completed.
pub(crate) fn initialized(v: &PodView) -> bool {
    v.init.iter().all(succeeded)
}

/// kubelet's `getPhase`.
pub(crate) fn phase(spec: &PodSpec, v: &PodView) -> &'static str {
    if v.failed.is_some() {
        return "Failed";
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !initialized(v) {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut ok, mut unknown) = (0, 0, 0, 0, 0);
    for c in &v.app {
        match &c.current {
            None => waiting += 1,
            Some(cur) => match cur.state {
                ContainerState::Running => running += 1,
                ContainerState::Created => waiting += 1,
                ContainerState::Exited => {
                    stopped += 1;
                    if cur.exit_code == Some(0) {
                        ok += 1;
                    }
                }
                ContainerState::Unknown => unknown += 1,
            },
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == ok => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        };
    }
    if unknown > 0 && policy == "Never" {
        return "Failed";
    }
    "Pending"
}

/// The pod's QoS class (Guaranteed, Burstable, BestEffort).
pub(crate) fn qos_class(spec: &PodSpec) -> &'static str {
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        for res in ["cpu", "memory"] {
            let (q, l) = (req.get(res), lim.get(res));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The whole status. `old` supplies the conditions' transition times (kept while a condition
/// keeps its value) and the scheduler's PodScheduled condition.
pub(crate) fn pod_status(spec: &PodSpec, v: &PodView, old: Option<&PodStatus>) -> PodStatus {
    let phase = phase(spec, v);
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&v.init)
        .map(|(c, cv)| container_status(c, cv, "PodInitializing"))
        .collect();
    let default_app = if initialized(v) {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app_statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .zip(&v.app)
        .map(|(c, cv)| container_status(c, cv, default_app))
        .collect();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let containers_ready = !terminal && app_statuses.iter().all(|c| c.ready);
    let old_conds: BTreeMap<String, PodCondition> = old
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_.clone(), c))
        .collect();
    let now = Time(jiff::Timestamp::now());
    let cond = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old_conds
            .get(t)
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: t.into(),
            status: status.into(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: Some(since),
            ..Default::default()
        }
    };
    let not_ready: Vec<&str> = app_statuses
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let not_ready_msg = (!not_ready.is_empty())
        .then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let init_pending: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&v.init)
        .filter(|(_, cv)| !succeeded(cv))
        .map(|(c, _)| c.name.as_str())
        .collect();
    let mut conditions = vec![
        cond("PodReadyToStartContainers", v.sandbox_ready, None, None),
        if init_pending.is_empty() {
            cond("Initialized", true, None, None)
        } else {
            cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    init_pending.join(" ")
                )),
            )
        },
        if containers_ready {
            cond("Ready", true, None, None)
        } else if terminal {
            cond("Ready", false, Some("PodCompleted"), None)
        } else {
            cond(
                "Ready",
                false,
                Some("ContainersNotReady"),
                not_ready_msg.clone(),
            )
        },
        if containers_ready {
            cond("ContainersReady", true, None, None)
        } else if terminal {
            cond("ContainersReady", false, Some("PodCompleted"), None)
        } else {
            cond(
                "ContainersReady",
                false,
                Some("ContainersNotReady"),
                not_ready_msg,
            )
        },
    ];
    conditions.push(
        old_conds
            .get("PodScheduled")
            .cloned()
            .unwrap_or_else(|| cond("PodScheduled", true, None, None)),
    );
    // An eviction by this node is a disruption (kubelet ≥ 1.26: DisruptionTarget,
    // TerminationByKubelet).
    if let Some((r, m)) = &v.failed {
        if r == "Evicted" {
            conditions.push(cond(
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(m.clone()),
            ));
        }
    }
    // Conditions other agents own (readiness gates, DisruptionTarget) stay.
    for (t, c) in &old_conds {
        if !conditions.iter().any(|x| &x.type_ == t) {
            conditions.push(c.clone());
        }
    }
    let (reason, message) = match &v.failed {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(app_statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: v.host_ip.clone(),
        host_ips: v.host_ip.clone().map(|ip| vec![HostIP { ip }]),
        pod_ip: v.pod_ip.clone(),
        pod_ips: v.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: v.start_time.clone(),
        qos_class: Some(qos_class(spec).into()),
        reason,
        message,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h8s_runtime::ContainerConfig;

    fn rt(state: ContainerState, code: Option<i32>) -> RtStatus {
        RtStatus {
            config: ContainerConfig {
                name: "c.0".into(),
                image: "busybox".into(),
                command: vec!["sh".into()],
                env: vec![],
                working_dir: None,
                user: None,
                tty: false,
                stdin: false,
                tty_size: None,
                init: false,
                mounts: Vec::new(),
                read_only_root: false,
                writable_limit_bytes: None,
            },
            state,
            exit_code: code,
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:01Z".into()),
            finished_at: code.map(|_| "2026-01-01T00:00:02Z".into()),
            reason: None,
            log_path: "/nonexistent".into(),
        }
    }

    fn spec(policy: &str, n_init: usize) -> PodSpec {
        let c = |n: &str| Container {
            name: n.into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        PodSpec {
            containers: vec![c("app")],
            init_containers: (n_init > 0)
                .then(|| (0..n_init).map(|i| c(&format!("i{i}"))).collect()),
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    fn view(app: ContainerView) -> PodView {
        PodView {
            sandbox_ready: true,
            app: vec![app],
            ..Default::default()
        }
    }

    #[test]
    fn creating_pod_is_pending_with_container_creating() {
        let s = spec("Always", 0);
        let v = view(ContainerView::default());
        let st = pod_status(&s, &v, None);
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let cs = &st.container_statuses.unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn running_and_ready() {
        let s = spec("Always", 0);
        let v = view(ContainerView {
            current: Some(rt(ContainerState::Running, None)),
            ready: true,
            started: true,
            container_id: Some("h8s-vm://abc/app.0".into()),
            ..Default::default()
        });
        let st = pod_status(&s, &v, None);
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let conds = st.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let cs = &st.container_statuses.unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("h8s-vm://abc/app.0"));
    }

    #[test]
    fn a_running_container_without_probes_is_ready_in_its_first_running_status() {
        // The container runs; no probe pass has set the view's flags yet.
        let running = || ContainerView {
            current: Some(rt(ContainerState::Running, None)),
            ..Default::default()
        };
        let st = pod_status(&spec("Always", 0), &view(running()), None);
        let cs = &st.container_statuses.unwrap()[0];
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
        let ready = st.conditions.unwrap();
        assert_eq!(
            ready.iter().find(|c| c.type_ == "Ready").unwrap().status,
            "True"
        );

        // A readiness probe decides readiness; a startup probe decides both.
        let probe = Some(k8s_openapi::api::core::v1::Probe::default());
        let mut s = spec("Always", 0);
        s.containers[0].readiness_probe = probe.clone();
        let cs = &pod_status(&s, &view(running()), None)
            .container_statuses
            .unwrap()[0];
        assert!(!cs.ready && cs.started == Some(true), "{cs:?}");
        let mut s = spec("Always", 0);
        s.containers[0].startup_probe = probe;
        let cs = &pod_status(&s, &view(running()), None)
            .container_statuses
            .unwrap()[0];
        assert!(!cs.ready && cs.started == Some(false), "{cs:?}");
        let started = ContainerView {
            started: true,
            ..running()
        };
        let cs = &pod_status(&s, &view(started), None)
            .container_statuses
            .unwrap()[0];
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
    }

    #[test]
    fn crashloop_shows_waiting_with_last_state() {
        let s = spec("Always", 0);
        let v = view(ContainerView {
            current: Some(rt(ContainerState::Exited, Some(1))),
            restart_count: 3,
            waiting: Some(Waiting::new(
                "CrashLoopBackOff",
                Some("back-off 40s restarting failed container=app".to_string()),
            )),
            ..Default::default()
        });
        let st = pod_status(&s, &v, None);
        // Restarting containers keep the pod Running, as kubelet reports it.
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cs = &st.container_statuses.unwrap()[0];
        assert_eq!(cs.restart_count, 3);
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn job_like_pod_succeeds_or_fails() {
        let s = spec("Never", 0);
        let ok = view(ContainerView {
            current: Some(rt(ContainerState::Exited, Some(0))),
            ..Default::default()
        });
        assert_eq!(phase(&s, &ok), "Succeeded");
        let st = pod_status(&s, &ok, None);
        let t = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        let bad = view(ContainerView {
            current: Some(rt(ContainerState::Exited, Some(2))),
            ..Default::default()
        });
        assert_eq!(phase(&s, &bad), "Failed");
        assert_eq!(phase(&spec("OnFailure", 0), &bad), "Running");
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let s = spec("Always", 2);
        let mut v = view(ContainerView::default());
        v.init = vec![
            ContainerView {
                current: Some(rt(ContainerState::Exited, Some(0))),
                ..Default::default()
            },
            ContainerView {
                current: Some(rt(ContainerState::Running, None)),
                ..Default::default()
            },
        ];
        let st = pod_status(&s, &v, None);
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let init = st.conditions.unwrap();
        let c = init.iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(c.status, "False");
        assert_eq!(
            c.message.as_deref(),
            Some("containers with incomplete status: [i1]")
        );
        let app = &st.container_statuses.unwrap()[0];
        assert_eq!(
            app.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let s = spec("Always", 0);
        let v = view(ContainerView::default());
        let mut first = pod_status(&s, &v, None);
        let long_ago = Time("2020-01-01T00:00:00Z".parse().unwrap());
        for c in first.conditions.as_mut().unwrap() {
            c.last_transition_time = Some(long_ago.clone());
        }
        let second = pod_status(&s, &v, Some(&first));
        for c in second.conditions.unwrap() {
            assert_eq!(
                c.last_transition_time.as_ref(),
                Some(&long_ago),
                "{}",
                c.type_
            );
        }
    }

    #[test]
    fn qos_classes() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut s = spec("Always", 0);
        assert_eq!(qos_class(&s), "BestEffort");
        let both = BTreeMap::from([
            ("cpu".to_string(), Quantity("1".into())),
            ("memory".to_string(), Quantity("1Gi".into())),
        ]);
        s.containers[0].resources = Some(ResourceRequirements {
            limits: Some(both.clone()),
            ..Default::default()
        });
        assert_eq!(qos_class(&s), "Guaranteed");
        s.containers[0].resources = Some(ResourceRequirements {
            requests: Some(both),
            ..Default::default()
        });
        assert_eq!(qos_class(&s), "Burstable");
    }
}
