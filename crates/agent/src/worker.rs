//! One pod's worker: kubelet's `syncPod` for a pod VM. It owns everything about its pod —
//! images, the VM, init then app containers, restarts with back-off, probes, hooks,
//! termination — and writes the pod's status when it changes. It re-reads the VM's state every
//! `sync_period` (kubelet's PLEG relist) and on every change of the Pod object.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use h8s_runtime::{
    ContainerConfig, ContainerState, ContainerStatus as RtStatus, ExecConfig, SandboxConfig,
    SandboxState, SandboxStatus, StreamEvent,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::events::Kind::{Normal, Warning};
use crate::pods::{
    ContainerEntry, Ctx, PodEntry, LABEL_NAME, LABEL_NAMESPACE, LABEL_NODE, LABEL_OWNER, LABEL_UID,
};
use crate::status::{self, ContainerView, PodView, Waiting};

/// Exponential back-off (kubelet's: initial, doubled per failure up to a cap).
#[derive(Debug, Clone, Default)]
struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    /// Registers a failure; returns the delay now in force.
    fn fail(&mut self, initial: Duration, max: Duration) -> Duration {
        let d = match self.delay {
            None => initial,
            Some(d) => (d * 2).min(max),
        };
        self.delay = Some(d);
        self.until = Some(Instant::now() + d);
        d
    }
    fn waiting(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }
    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A probe's running state.
#[derive(Debug, Clone)]
struct ProbeState {
    next: Instant,
    successes: i32,
    failures: i32,
    ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// What the worker keeps per container (by Kubernetes name).
#[derive(Debug, Default)]
struct CState {
    view: ContainerView,
    /// Instance number of the newest instance (its restart count); `None` before the first.
    instance: Option<u32>,
    backoff: Backoff,
    /// When the newest instance was started by this worker.
    started: Option<Instant>,
    probes: HashMap<&'static str, ProbeState>,
    /// A liveness or startup probe failure killed it (restart regardless of exit code).
    killed_by_probe: bool,
}

fn instance_name(base: &str, n: u32) -> String {
    let base: String = base.chars().take(55).collect();
    format!("{base}.{n}")
}

fn parse_instance(rt_name: &str) -> Option<(&str, u32)> {
    let (b, n) = rt_name.rsplit_once('.')?;
    Some((b, n.parse().ok()?))
}

/// The content volumes' sources as read from the API, and a newly issued service account
/// token (with when it was issued).
#[derive(Default)]
struct VolumeSources {
    src: crate::volumes::Sources,
    token: Option<(String, Instant)>,
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    ns: String,
    name: String,
    uid: String,
    sandbox_name: String,
    sandbox: Option<String>,
    sandbox_backoff: Backoff,
    pod_ip: Option<String>,
    start_time: Option<Time>,
    failed: Option<(String, String)>,
    /// Image reference → image id (`repo@sha256:…`) once present.
    images: HashMap<String, String>,
    image_backoff: HashMap<String, Backoff>,
    image_waiting: HashMap<String, Waiting>,
    sandbox_waiting: Option<Waiting>,
    containers: HashMap<String, CState>,
    last_written: Option<Value>,
    terminal_handled: bool,
    vm_memory_mib: u32,
    vm_cpus: u32,
    /// Content volumes as last written into the VM.
    volumes_written: HashMap<String, Vec<h8s_guest::VolumeFile>>,
    /// When volumes were last compared with their sources (None: never; containers wait).
    volumes_checked: Option<Instant>,
    /// The service account token in projected volumes, and when it was issued.
    token: Option<(String, Instant)>,
    /// The content volumes' sources, read while the pod VM started (taken by the first
    /// [`Worker::sync_volumes`]).
    prefetched: Option<VolumeSources>,
    /// The pod VM's persistent volume disks (None: not resolved since the agent started).
    disks: Option<Vec<crate::pvc::Attached>>,
    /// When local storage usage was last measured against the pod's limits.
    storage_checked: Option<Instant>,
}

/// Runs one pod until it is gone (or the agent stops).
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    mut rx: watch::Receiver<Option<Arc<Pod>>>,
    adopted: Option<SandboxStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let span = tracing::info_span!("pod", pod = %format!("{ns}/{name}"), uid = %uid);
    let mut w = Worker {
        sandbox_name: crate::pods::sandbox_name(&name, &uid),
        ctx,
        start_time: pod.status.as_ref().and_then(|s| s.start_time.clone()),
        pod,
        ns,
        name,
        uid,
        sandbox: None,
        sandbox_backoff: Backoff::default(),
        pod_ip: None,
        failed: None,
        images: HashMap::new(),
        image_backoff: HashMap::new(),
        image_waiting: HashMap::new(),
        sandbox_waiting: None,
        containers: HashMap::new(),
        last_written: None,
        terminal_handled: false,
        vm_memory_mib: 0,
        vm_cpus: 0,
        volumes_written: HashMap::new(),
        volumes_checked: None,
        token: None,
        prefetched: None,
        disks: None,
        storage_checked: None,
    };
    async move {
        if let Some(sb) = adopted {
            w.adopt(sb).await;
        }
        loop {
            let next = rx.borrow_and_update().clone();
            match next {
                None => {
                    // The Pod object is gone: stop what is left at once.
                    w.teardown(Duration::from_secs(2)).await;
                    return;
                }
                Some(p) => w.pod = p,
            }
            if w.pod.metadata.deletion_timestamp.is_some() {
                w.terminate_and_delete().await;
                return;
            }
            if !w.terminal_handled {
                w.sync().await;
            }
            w.write_status().await;
            let wait = w.ctx.cfg.pod_timers.sync_period;
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    w.teardown(Duration::from_secs(2)).await;
                    return;
                },
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
    .instrument(span)
    .await
}

impl Worker {
    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn publish_lookup(&self) {
        let mut containers = BTreeMap::new();
        let spec = self.spec();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(cs) = self.containers.get(&c.name) {
                if let Some(n) = cs.instance {
                    containers.insert(
                        c.name.clone(),
                        ContainerEntry {
                            current: instance_name(&c.name, n),
                            previous: n.checked_sub(1).map(|p| instance_name(&c.name, p)),
                        },
                    );
                }
            }
        }
        self.ctx.lookup.set(
            &self.ns,
            &self.name,
            PodEntry {
                uid: self.uid.clone(),
                sandbox: self.sandbox.clone(),
                containers,
            },
        );
    }

    /// Takes over a pod VM that survived an agent restart.
    async fn adopt(&mut self, sb: SandboxStatus) {
        let mut sb = sb;
        if sb.state == SandboxState::Failed && sb.qemu_pid.is_some() {
            match self.ctx.runtime.recover(&sb.id).await {
                Ok(_) => {
                    if let Ok(s) = self.ctx.runtime.sandbox_status(&sb.id).await {
                        sb = s;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "taking over the pod VM failed"),
            }
        }
        tracing::info!(sandbox = %sb.id, state = ?sb.state, "took over the running pod VM");
        self.sandbox = Some(sb.id.clone());
        self.vm_memory_mib = sb.config.memory_mib;
        self.vm_cpus = sb.config.cpus;
        if let Some(n) = &sb.config.network {
            self.pod_ip = n.address.split('/').next().map(str::to_string);
        }
        for c in &sb.containers {
            if let Some((base, n)) = parse_instance(&c.config.name) {
                let cs = self.containers.entry(base.to_string()).or_default();
                if cs.instance.is_none_or(|i| i < n) {
                    cs.instance = Some(n);
                }
            }
        }
        // The spec's names may have been truncated in instance names: map them back.
        let spec = self.spec();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let short: String = c.name.chars().take(55).collect();
            if short != c.name {
                if let Some(cs) = self.containers.remove(&short) {
                    self.containers.insert(c.name.clone(), cs);
                }
            }
        }
        self.publish_lookup();
    }

    /// One pass of kubelet's syncPod.
    async fn sync(&mut self) {
        if self.start_time.is_none() {
            self.start_time = Some(Time(jiff::Timestamp::now()));
        }
        if self.check_deadline().await || self.check_node_eviction().await {
            return;
        }
        if self.sandbox.is_none() {
            if self.sandbox_backoff.waiting() {
                return;
            }
            if !self.ensure_images().await {
                return;
            }
            self.start_sandbox().await;
            if self.sandbox.is_none() {
                return;
            }
        }
        let Some(id) = self.sandbox.clone() else {
            return;
        };
        let sb = match self.ctx.runtime.sandbox_status(&id).await {
            Ok(s) => s,
            Err(h8s_runtime::Error::NotFound { .. }) => {
                tracing::warn!(sandbox = %id, "pod VM vanished; it will be re-created");
                self.sandbox = None;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the pod VM's state failed");
                return;
            }
        };
        self.refresh(&sb);
        if matches!(sb.state, SandboxState::Failed | SandboxState::Stopped) {
            self.vm_died(&sb).await;
            return;
        }
        if self.disks.is_none() {
            if !crate::pvc::has_block(&self.pod) {
                self.disks = Some(Vec::new());
            } else {
                // Taken over after an agent restart: the VM keeps its disks; learn them again
                // (without provisioning or Multi-Attach checks: the VM already has them).
                match crate::pvc::resolve(&self.ctx, &self.pod, false).await {
                    crate::pvc::Outcome::Ready(d) => self.disks = Some(d),
                    crate::pvc::Outcome::Wait(_, msg) => {
                        tracing::warn!(error = %msg, "the running pod VM's volumes cannot be read back");
                        return;
                    }
                }
            }
        }
        if !self.sync_volumes(&id).await {
            return;
        }
        if self.check_local_storage(&id).await {
            return;
        }
        if !self.run_init_containers(&id).await {
            return;
        }
        self.run_app_containers(&id).await;
        let spec = self.spec();
        let view = self.view();
        if matches!(status::phase(&spec, &view), "Succeeded" | "Failed") {
            self.finish().await;
        }
    }

    /// The runtime's instances into the container views.
    fn refresh(&mut self, sb: &SandboxStatus) {
        let by_name: HashMap<&str, &RtStatus> = sb
            .containers
            .iter()
            .map(|c| (c.config.name.as_str(), c))
            .collect();
        let sid = sb.id.clone();
        for (name, cs) in self.containers.iter_mut() {
            let Some(n) = cs.instance else { continue };
            let cur = instance_name(name, n);
            cs.view.current = by_name.get(cur.as_str()).map(|c| (*c).clone());
            cs.view.container_id = Some(format!("{}://{sid}/{cur}", h8s_runtime::RUNTIME_NAME));
            cs.view.restart_count = n as i32;
            if let Some(p) = n.checked_sub(1) {
                let prev = instance_name(name, p);
                cs.view.previous = by_name.get(prev.as_str()).map(|c| (*c).clone());
                cs.view.previous_id = Some(format!("{}://{sid}/{prev}", h8s_runtime::RUNTIME_NAME));
            }
            let running = cs
                .view
                .current
                .as_ref()
                .is_some_and(|c| c.state == ContainerState::Running);
            if !running {
                cs.view.ready = false;
                cs.view.started = false;
                cs.probes.clear();
            }
        }
    }

    fn view(&self) -> PodView {
        let spec = self.spec();
        let cv = |c: &Container| {
            let mut v = self
                .containers
                .get(&c.name)
                .map(|s| s.view.clone())
                .unwrap_or_default();
            if v.current.is_none() && v.waiting.is_none() {
                let img = c.image.clone().unwrap_or_default();
                v.waiting = self
                    .image_waiting
                    .get(&img)
                    .cloned()
                    .or_else(|| self.sandbox_waiting.clone());
            }
            if let Some(id) = c.image.as_ref().and_then(|i| self.images.get(i)) {
                v.image_id = Some(id.clone());
            }
            v
        };
        PodView {
            sandbox_ready: self.sandbox.is_some(),
            pod_ip: self.pod_ip.clone(),
            host_ip: self.ctx.host_ip.clone(),
            start_time: self.start_time.clone(),
            failed: self.failed.clone(),
            init: spec.init_containers.iter().flatten().map(cv).collect(),
            app: spec.containers.iter().map(cv).collect(),
        }
    }

    async fn check_deadline(&mut self) -> bool {
        let spec = self.spec();
        let (Some(secs), Some(start)) = (spec.active_deadline_seconds, &self.start_time) else {
            return false;
        };
        let elapsed = jiff::Timestamp::now().duration_since(start.0);
        if self.failed.is_some() || elapsed.as_secs() < secs {
            return false;
        }
        let msg = "Pod was active on the node longer than the specified deadline".to_string();
        self.failed = Some(("DeadlineExceeded".into(), msg.clone()));
        self.ctx
            .recorder
            .event(&self.pod, None, Warning, "DeadlineExceeded", msg)
            .await;
        self.kill_all(self.grace()).await;
        self.finish().await;
        true
    }

    /// kubelet's local storage eviction: every `eviction_monitoring_period`, the pod's
    /// local storage inside its VM against its emptyDir `sizeLimit`s and containers'
    /// `ephemeral-storage` limits; `true` when the pod was evicted.
    async fn check_local_storage(&mut self, id: &str) -> bool {
        let spec = self.spec();
        let period = self.ctx.cfg.pod_timers.eviction_monitoring_period;
        if self.failed.is_some()
            || !crate::eviction::has_storage_limits(&spec)
            || self.storage_checked.is_some_and(|t| t.elapsed() < period)
        {
            return false;
        }
        self.storage_checked = Some(Instant::now());
        let usage = match self.ctx.runtime.storage_usage(id).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "measuring the pod's local storage failed");
                return false;
            }
        };
        let mut used = crate::eviction::StorageUse {
            volumes: usage.volumes.into_iter().collect(),
            ..Default::default()
        };
        for (inst, bytes) in usage.containers {
            // Its logs on the host count too, as kubelet counts them.
            let logs = crate::eviction::log_files(&self.ctx.runtime.log_path(id, &inst)).1;
            let bytes = bytes.saturating_add(logs);
            used.all_containers = used.all_containers.saturating_add(bytes);
            let Some((base, n)) = parse_instance(&inst) else {
                continue;
            };
            let current = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name.chars().take(55).eq(base.chars()))
                .filter(|c| self.containers.get(&c.name).and_then(|s| s.instance) == Some(n));
            if let Some(c) = current {
                used.current.insert(c.name.clone(), bytes);
            }
        }
        let Some(msg) = crate::eviction::local_storage_violation(&spec, &used) else {
            return false;
        };
        tracing::warn!(reason = %msg, "evicting the pod");
        self.failed = Some((crate::eviction::REASON.into(), msg.clone()));
        self.ctx
            .recorder
            .event(&self.pod, None, Warning, crate::eviction::REASON, msg)
            .await;
        // kubelet evicts for local storage without a grace period.
        self.kill_all(Duration::ZERO).await;
        self.finish().await;
        true
    }

    /// Carries out a node-pressure eviction the eviction manager asked for.
    async fn check_node_eviction(&mut self) -> bool {
        let asked = self
            .ctx
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.uid)
            .cloned();
        let Some((msg, grace)) = asked else {
            return false;
        };
        if self.failed.is_none() {
            self.failed = Some((crate::eviction::REASON.into(), msg.clone()));
            self.ctx
                .recorder
                .event(&self.pod, None, Warning, crate::eviction::REASON, msg)
                .await;
            self.kill_all(grace).await;
            self.finish().await;
        }
        self.ctx
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.uid);
        true
    }

    fn grace(&self) -> Duration {
        let spec = self.spec();
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.ctx.cfg.default_grace)
    }

    /// Pulls what the pod's containers need, per imagePullPolicy. `false` while an image is
    /// missing (its containers then wait with ErrImagePull/ImagePullBackOff).
    async fn ensure_images(&mut self) -> bool {
        let spec = self.spec();
        let mut all = true;
        let wanted: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .cloned()
            .collect();
        for c in wanted {
            let Some(image) = c.image.clone().filter(|i| !i.is_empty()) else {
                self.container(&c.name).view.waiting = Some(Waiting::new(
                    "InvalidImageName",
                    Some("the container has no image".to_string()),
                ));
                all = false;
                continue;
            };
            if self.images.contains_key(&image) {
                continue;
            }
            if self.image_backoff.get(&image).is_some_and(Backoff::waiting) {
                // A pull failed and its back-off runs: nothing to ask anyone until it ends.
                let msg = format!("Back-off pulling image \"{image}\"");
                self.image_waiting
                    .insert(image.clone(), Waiting::new("ImagePullBackOff", Some(msg)));
                all = false;
                continue;
            }
            let tag_latest = {
                let last = image.rsplit('/').next().unwrap_or(&image);
                !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"))
            };
            let policy = c
                .image_pull_policy
                .clone()
                .unwrap_or_else(|| if tag_latest { "Always" } else { "IfNotPresent" }.into());
            let present = self.ctx.runtime.image_status(&image).ok();
            // ensure-secret-pulled-images: a present image pulled with credentials serves
            // only pods that hold them (crate::pulled).
            let creds = self.pod_credentials(&image).await;
            let cached_ok = present.as_ref().is_some_and(|img| {
                crate::pulled::PullRecord::access(
                    self.ctx.pulled.get(&img.id.to_string()).as_ref(),
                    &creds,
                ) == crate::pulled::Access::Cached
            });
            if policy == "Never" && !cached_ok {
                let msg = if present.is_some() {
                    format!(
                        "Container image \"{image}\" is present with pull policy of Never, but was pulled with credentials this pod does not have"
                    )
                } else {
                    format!("Container image \"{image}\" is not present with pull policy of Never")
                };
                self.image_waiting.insert(
                    image.clone(),
                    Waiting::new("ErrImageNeverPull", Some(msg.clone())),
                );
                self.ctx
                    .recorder
                    .event(&self.pod, Some(&c.name), Warning, "ErrImageNeverPull", msg)
                    .await;
                all = false;
                continue;
            }
            // Not cached for this pod (absent, or pulled with credentials it lacks) or Always.
            let need_pull = policy == "Always" || !cached_ok;
            if !need_pull {
                if let Some(img) = present {
                    self.images.insert(image.clone(), image_id(&img));
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Normal,
                            "Pulled",
                            format!("Container image \"{image}\" already present on machine"),
                        )
                        .await;
                }
                continue;
            }
            let backoff = self.image_backoff.entry(image.clone()).or_default();
            if backoff.waiting() {
                let msg = format!("Back-off pulling image \"{image}\"");
                self.image_waiting
                    .insert(image.clone(), Waiting::new("ImagePullBackOff", Some(msg)));
                all = false;
                continue;
            }
            self.ctx
                .recorder
                .event(
                    &self.pod,
                    Some(&c.name),
                    Normal,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                )
                .await;
            let started = std::time::Instant::now();
            let opts = h8s_runtime::image::PullOptions {
                auth: creds.first().map(|c| c.credentials.clone()),
                ..Default::default()
            };
            match self.ctx.runtime.pull_image(&image, opts).await {
                Ok(img) => {
                    self.ctx
                        .pulled
                        .record(&img.id.to_string(), creds.first().map(|c| c.secret.clone()));
                    self.images.insert(image.clone(), image_id(&img));
                    self.image_waiting.remove(&image);
                    self.image_backoff.remove(&image);
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Normal,
                            "Pulled",
                            format!(
                                "Successfully pulled image \"{image}\" in {:.3}s. Image size: {} bytes.",
                                started.elapsed().as_secs_f64(),
                                img.size
                            ),
                        )
                        .await;
                }
                Err(e @ h8s_runtime::Error::ImageUnreachable(_)) if cached_ok => {
                    // Policy Always but the registry cannot be reached at all: the node's copy
                    // serves a pod that may use it (documented in docs/agent.md; kubelet would
                    // fail the pull). Never when the registry answered — a refused or unknown
                    // pull must not be served another tenant's copy — nor when the copy came
                    // with credentials the pod does not hold.
                    if let Some(img) = present {
                        self.images.insert(image.clone(), image_id(&img));
                    }
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Warning,
                            "Failed",
                            format!(
                                "Failed to pull image \"{image}\": {e}; using the image present on the node"
                            ),
                        )
                        .await;
                }
                Err(e) => {
                    let d = self.image_backoff.entry(image.clone()).or_default().fail(
                        self.ctx.cfg.pod_timers.image_backoff_initial,
                        self.ctx.cfg.pod_timers.image_backoff_max,
                    );
                    let msg = format!("Failed to pull image \"{image}\": {}", error_chain(&e));
                    tracing::info!(%image, retry_in = ?d, "image pull failed");
                    self.image_waiting.insert(
                        image.clone(),
                        Waiting::new("ErrImagePull", Some(msg.clone())),
                    );
                    self.ctx
                        .recorder
                        .event(&self.pod, Some(&c.name), Warning, "Failed", msg)
                        .await;
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Warning,
                            "Failed",
                            "Error: ErrImagePull",
                        )
                        .await;
                    all = false;
                }
            }
        }
        all
    }

    /// Registry credentials from the pod's imagePullSecrets for `image`'s registry, one per
    /// secret that has some, in the pod's order (a pull uses the first).
    async fn pod_credentials(&self, image: &str) -> Vec<crate::pulled::PodCredential> {
        let spec = self.spec();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let host = registry_host(image);
        let mut out = Vec::new();
        for r in spec.image_pull_secrets.iter().flatten() {
            let Ok(Some(s)) = secrets.get_opt(&r.name).await else {
                continue;
            };
            if let Some(c) = docker_config_credentials(&s, &host) {
                out.push(crate::pulled::PodCredential {
                    secret: crate::pulled::SecretRecord {
                        namespace: self.ns.clone(),
                        name: r.name.clone(),
                        uid: s.metadata.uid.clone().unwrap_or_default(),
                        credential_hash: crate::pulled::credential_hash(&host, &c),
                    },
                    credentials: c,
                });
            }
        }
        out
    }

    fn container(&mut self, name: &str) -> &mut CState {
        self.containers.entry(name.to_string()).or_default()
    }

    /// The VM's size: the containers' memory and CPU (limits, else requests; the largest init
    /// container counts if bigger) plus what the guest itself needs.
    fn size(&self) -> (u32, u32) {
        let spec = self.spec();
        let get = |c: &Container, res: &str, milli: bool| -> Option<u128> {
            let r = c.resources.as_ref()?;
            let q = r
                .limits
                .as_ref()
                .and_then(|l| l.get(res))
                .or_else(|| r.requests.as_ref().and_then(|l| l.get(res)))?;
            if milli {
                crate::quantity::milli(&q.0)
            } else {
                crate::quantity::units(&q.0)
            }
        };
        let sum = |res: &str, milli: bool| -> Option<u128> {
            let apps: Vec<u128> = spec
                .containers
                .iter()
                .filter_map(|c| get(c, res, milli))
                .collect();
            let init_max = spec
                .init_containers
                .iter()
                .flatten()
                .filter_map(|c| get(c, res, milli))
                .max();
            if apps.is_empty() && init_max.is_none() {
                return None;
            }
            Some(apps.iter().sum::<u128>().max(init_max.unwrap_or(0)))
        };
        // The guest kernel and agent need ~64 MiB of their own.
        let mem = match sum("memory", false) {
            Some(b) => ((b >> 20) as u32).saturating_add(64),
            None => self.ctx.info.default_memory_mib,
        }
        .clamp(128, self.ctx.node_memory_mib.max(128));
        let cpus = match sum("cpu", true) {
            Some(m) => m.div_ceil(1000) as u32,
            None => 1,
        }
        .clamp(1, self.ctx.node_cpus.max(1));
        (mem, cpus)
    }

    async fn start_sandbox(&mut self) {
        let spec = self.spec();
        for v in spec.volumes.iter().flatten() {
            if let Err(e) = crate::volumes::kind(v) {
                self.ctx
                    .recorder
                    .event(&self.pod, None, Warning, "FailedMount", e.0.clone())
                    .await;
                self.sandbox_failed(e.0).await;
                return;
            }
        }
        let mut disks = Vec::new();
        if crate::pvc::has_block(&self.pod) {
            match crate::pvc::resolve(&self.ctx, &self.pod, true).await {
                crate::pvc::Outcome::Ready(d) => disks = d,
                crate::pvc::Outcome::Wait(reason, msg) => {
                    self.volume_wait(reason, msg).await;
                    return;
                }
            }
        }
        let (mem, cpus) = self.size();
        let mut cfg = SandboxConfig::new(self.sandbox_name.clone());
        cfg.volumes = disks
            .iter()
            .map(|d| h8s_runtime::VolumeDisk {
                serial: d.serial.clone(),
                drive: d.drive.clone(),
            })
            .collect();
        cfg.memory_mib = mem;
        cfg.cpus = cpus;
        // Opt out of VM templates (a kernel layout of its own): RuntimeClass or annotation.
        cfg.cold_boot = spec.runtime_class_name.as_deref() == Some(crate::node::RUNTIME_CLASS_COLD)
            || self
                .pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("h8s.io/vm-boot"))
                == Some(&"cold".to_string());
        // Disk I/O beyond the node's default, up to its ceiling (docs/security.md, "Limits").
        let annotation = |k: &str| {
            let v = self.pod.metadata.annotations.as_ref()?.get(k)?;
            crate::quantity::units(v).map(|n| u64::try_from(n).unwrap_or(u64::MAX))
        };
        cfg.disk_bps = annotation(h8s_runtime::DISK_BPS_ANNOTATION);
        cfg.disk_iops = annotation(h8s_runtime::DISK_IOPS_ANNOTATION);
        let host: String = spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.name.clone())
            .chars()
            .take(63)
            .collect();
        cfg.hostname = Some(host.trim_end_matches(['-', '.']).to_string());
        let domain = &self.ctx.cfg.cluster_domain;
        cfg.dns_search = vec![
            format!("{}.svc.{domain}", self.ns),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        let mut attached = Vec::<String>::new();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            let Some(image) = c.image.clone() else {
                continue;
            };
            if attached.contains(&image) {
                continue;
            }
            match self.ctx.runtime.image_disk(&image).await {
                Ok((disk, _)) => {
                    cfg.images.push(disk);
                    attached.push(image);
                }
                Err(e) => {
                    let msg = format!("preparing image {image:?}: {}", error_chain(&e));
                    self.sandbox_failed(msg).await;
                    return;
                }
            }
        }
        cfg.labels = BTreeMap::from([
            (LABEL_NODE.to_string(), self.ctx.cfg.node_name.clone()),
            (LABEL_OWNER.to_string(), self.ctx.cfg.owner.clone()),
            (LABEL_NAMESPACE.to_string(), self.ns.clone()),
            (LABEL_NAME.to_string(), self.name.clone()),
            (LABEL_UID.to_string(), self.uid.clone()),
        ]);
        let ctx = self.ctx.clone();
        let _permit = ctx.starts.acquire().await;
        if let Some(n) = &self.ctx.cfg.network {
            let attached = match &self.ctx.api_networks {
                Some(nets) => nets
                    .attach(&self.ns, &self.name, &self.uid, &self.sandbox_name)
                    .await
                    .map_err(|e| error_chain(&e)),
                None => n
                    .network
                    .attach(&n.name, &self.sandbox_name)
                    .await
                    .map_err(|e| error_chain(&e)),
            };
            match attached {
                Ok(a) => {
                    self.pod_ip = Some(a.ip.to_string());
                    let mut att = h8s_runtime::network::attachment(&a);
                    if att.dns.is_empty() {
                        att.dns = vec![a.gateway.to_string()];
                    }
                    // ClusterFirst (the default): cluster DNS served in the VM, the
                    // Network's resolvers upstream. `Default` keeps those alone.
                    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
                    if self.ctx.services.is_some() && policy.starts_with("ClusterFirst") {
                        att.cluster_dns = Some(h8s_guest::ClusterDns {
                            domain: self.ctx.cfg.cluster_domain.clone(),
                            upstream: att.dns.clone(),
                            ndots: 5,
                        });
                    }
                    cfg.network = Some(att);
                }
                Err(e) => {
                    let msg = format!("attaching the pod network: {e}");
                    self.sandbox_failed(msg).await;
                    return;
                }
            }
        }
        let started = std::time::Instant::now();
        // What does not need the VM is read while it starts: the content volumes' sources
        // (ConfigMaps, Secrets, the service account token).
        let (run, prefetched) =
            tokio::join!(self.ctx.runtime.run_sandbox(cfg), self.volume_sources());
        match run {
            Ok(id) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(sandbox = %id, memory_mib = mem, cpus, ms, "pod VM started");
                self.prefetched = prefetched;
                // How the VM started is the user's to see (a template clone shares its
                // kernel layout with the template's other clones; docs/runtime.md).
                let status = self.ctx.runtime.sandbox_status(&id).await.ok();
                let boot = status.as_ref().and_then(|st| st.boot.clone());
                let msg = match boot.as_deref() {
                    Some("template") => format!("Started the pod VM from a VM template in {ms} ms"),
                    Some("warm clone") => {
                        format!("Started the pod VM from a warm clone of a VM template in {ms} ms")
                    }
                    Some(b) if b.starts_with("cold") => format!("Booted the pod VM {b} in {ms} ms"),
                    _ => format!("Started the pod VM in {ms} ms"),
                };
                self.ctx
                    .recorder
                    .event(&self.pod, None, Normal, "StartedVM", msg)
                    .await;
                self.sandbox = Some(id.clone());
                self.disks = Some(disks);
                self.vm_memory_mib = mem;
                self.vm_cpus = cpus;
                self.sandbox_waiting = None;
                self.sandbox_backoff.reset();
                self.publish_lookup();
                if let (Some(feed), Some(st)) = (&self.ctx.services, &status) {
                    // Containers start with their Network's Services already known.
                    feed.push_new(st, Duration::from_secs(5)).await;
                }
            }
            Err(e) => {
                self.release_network().await;
                self.pod_ip = None;
                let msg = format!("the pod VM failed to start: {}", error_chain(&e));
                self.sandbox_failed(msg).await;
            }
        }
    }

    /// A persistent volume is not ready (unbound claim, Multi-Attach, missing or damaged
    /// backing store): an event, the reason in the containers' waiting message, retried soon.
    async fn volume_wait(&mut self, reason: &str, msg: String) {
        let t = &self.ctx.cfg.pod_timers;
        let d = self.sandbox_backoff.fail(
            t.backoff_initial.min(Duration::from_secs(2)),
            t.backoff_max.min(Duration::from_secs(30)),
        );
        tracing::info!(reason, message = %msg, retry_in = ?d, "pod volumes not ready");
        self.sandbox_waiting = Some(Waiting::new("ContainerCreating", Some(msg.clone())));
        self.ctx
            .recorder
            .event(&self.pod, None, Warning, reason, msg)
            .await;
    }

    async fn sandbox_failed(&mut self, msg: String) {
        let d = self.sandbox_backoff.fail(
            self.ctx.cfg.pod_timers.backoff_initial,
            self.ctx.cfg.pod_timers.backoff_max,
        );
        tracing::warn!(error = %msg, retry_in = ?d, "pod VM not started");
        self.sandbox_waiting = Some(Waiting::new("ContainerCreating", Some(msg.clone())));
        self.ctx
            .recorder
            .event(
                &self.pod,
                None,
                Warning,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {msg}"),
            )
            .await;
    }

    async fn release_network(&self) {
        if let Some(nets) = &self.ctx.api_networks {
            if let Err(e) = nets.release(&self.sandbox_name, &self.uid).await {
                tracing::warn!(error = %error_chain(&e), "releasing the pod's address failed");
            }
        } else if let Some(n) = &self.ctx.cfg.network {
            if let Err(e) = n.network.detach_pod(&self.sandbox_name).await {
                tracing::warn!(error = %error_chain(&e), "releasing the pod's address failed");
            }
        }
    }

    /// The VM died under the pod (guest crash, watchdog): report, then start a new one if the
    /// restart policy allows.
    async fn vm_died(&mut self, sb: &SandboxStatus) {
        let reason = sb
            .reason
            .clone()
            .unwrap_or_else(|| "the pod VM stopped".into());
        tracing::warn!(%reason, "pod VM is gone");
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        self.ctx
            .recorder
            .event(
                &self.pod,
                None,
                Warning,
                "SandboxChanged",
                format!("Pod sandbox changed, it will be killed and re-created: {reason}"),
            )
            .await;
        if policy == "Never" {
            self.failed = Some(("VMFailed".into(), reason));
            self.finish().await;
            return;
        }
        // The next instance of each container starts in a fresh VM; the dead VM's state is the
        // containers' last state.
        if let Some(id) = self.sandbox.take() {
            let _ = self.ctx.runtime.stop_sandbox(&id, Duration::ZERO).await;
            let _ = self.ctx.runtime.remove_sandbox(&id, true).await;
        }
        self.release_network().await;
        self.pod_ip = None;
        self.volumes_written.clear();
        self.volumes_checked = None;
        for cs in self.containers.values_mut() {
            cs.view.previous = cs.view.current.take();
            cs.view.previous_id = cs.view.container_id.take();
            cs.view.ready = false;
            cs.probes.clear();
        }
        self.sandbox_backoff.fail(
            self.ctx.cfg.pod_timers.backoff_initial,
            self.ctx.cfg.pod_timers.backoff_max,
        );
        self.sandbox_waiting = Some(Waiting::new(
            "ContainerCreating",
            Some(format!("re-creating the pod VM: {reason}")),
        ));
        self.publish_lookup();
    }

    /// Writes the content volumes into the VM when their sources changed (every
    /// `volume_refresh`; at once the first time). `false` while a volume cannot be built
    /// (its containers wait, as kubelet's do for a failed mount).
    async fn sync_volumes(&mut self, id: &str) -> bool {
        let refresh = self.ctx.cfg.pod_timers.volume_refresh;
        if self.volumes_checked.is_some_and(|t| t.elapsed() < refresh) {
            return true;
        }
        let spec = self.spec();
        let content: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| crate::volumes::kind(v).ok() == Some(crate::volumes::Kind::Content))
            .cloned()
            .collect();
        if content.is_empty() {
            self.volumes_checked = Some(Instant::now());
            return true;
        }
        let sources = match self.prefetched.take() {
            Some(p) => Some(p),
            None => self.volume_sources().await,
        };
        let Some(VolumeSources { src, token }) = sources else {
            return self.volumes_checked.is_some();
        };
        if token.is_some() {
            self.token = token;
        }
        let facts = crate::env::PodFacts {
            pod_ip: self.pod_ip.clone(),
            host_ip: self.ctx.host_ip.clone(),
            node_name: self.ctx.cfg.node_name.clone(),
            vm_cpu_millis: u128::from(self.vm_cpus.max(1)) * 1000,
            vm_memory_bytes: u128::from(self.vm_memory_mib) << 20,
            kubernetes: self
                .ctx
                .services
                .as_ref()
                .and_then(|f| f.kubernetes_service()),
        };
        let mut ok = true;
        for v in content {
            let files = match crate::volumes::files(&self.pod, &v, &facts, &src) {
                Ok(f) => f,
                Err(e) => {
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            None,
                            Warning,
                            "FailedMount",
                            format!(
                                "MountVolume.SetUp failed for volume \"{}\" : {}",
                                v.name, e.0
                            ),
                        )
                        .await;
                    ok = false;
                    continue;
                }
            };
            if self.volumes_written.get(&v.name) == Some(&files) {
                continue;
            }
            let content = h8s_guest::VolumeContent {
                name: v.name.clone(),
                files: files.clone(),
            };
            match self.ctx.runtime.write_volume(id, content).await {
                Ok(()) => {
                    tracing::debug!(volume = %v.name, files = files.len(), "volume written");
                    self.volumes_written.insert(v.name.clone(), files);
                }
                Err(e) => {
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            None,
                            Warning,
                            "FailedMount",
                            format!(
                                "MountVolume.SetUp failed for volume \"{}\" : {}",
                                v.name,
                                error_chain(&e)
                            ),
                        )
                        .await;
                    ok = false;
                }
            }
        }
        // Once the volumes were set up, a failed refresh keeps the old content (as kubelet
        // does); before that the containers wait and the set-up is retried every sync.
        if ok || self.volumes_checked.is_some() {
            self.volumes_checked = Some(Instant::now());
        }
        self.volumes_checked.is_some()
    }

    /// What the pod's content volumes are made of: their ConfigMaps and Secrets, and the
    /// service account token (a new one when none is held or it is at 80 % of its life, as
    /// kubelet rotates). `None` when a read failed. Needs no VM: read while it starts.
    async fn volume_sources(&self) -> Option<VolumeSources> {
        let spec = self.spec();
        let any = spec
            .volumes
            .iter()
            .flatten()
            .any(|v| crate::volumes::kind(v).ok() == Some(crate::volumes::Kind::Content));
        if !any {
            return Some(VolumeSources::default());
        }
        let (cms, secrets, token) = crate::volumes::references(&self.pod);
        let mut src = crate::volumes::Sources::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let sec_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let fresh = self
            .token
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(3600 * 8 / 10));
        // All reads at once.
        let cm_reads = futures::future::join_all(cms.iter().map(|n| cm_api.get_opt(n)));
        let sec_reads = futures::future::join_all(secrets.iter().map(|n| sec_api.get_opt(n)));
        let token_read = async {
            match token && !fresh {
                true => self.service_account_token(&spec).await,
                false => None,
            }
        };
        let (cm_got, sec_got, new_token) = tokio::join!(cm_reads, sec_reads, token_read);
        for (n, r) in cms.into_iter().zip(cm_got) {
            match r {
                Ok(v) => {
                    src.config_maps.insert(
                        n,
                        v.map(|cm| {
                            let mut d: BTreeMap<String, Vec<u8>> = cm
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes()))
                                .collect();
                            for (k, v) in cm.binary_data.unwrap_or_default() {
                                d.insert(k, v.0);
                            }
                            d
                        }),
                    );
                }
                Err(e) => {
                    tracing::warn!(configmap = %n, error = %e, "reading a volume's configmap");
                    return None;
                }
            }
        }
        for (n, r) in secrets.into_iter().zip(sec_got) {
            match r {
                Ok(v) => {
                    src.secrets.insert(
                        n,
                        v.map(|s| {
                            let mut d: BTreeMap<String, Vec<u8>> = s
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0))
                                .collect();
                            for (k, v) in s.string_data.unwrap_or_default() {
                                d.insert(k, v.into_bytes());
                            }
                            d
                        }),
                    );
                }
                Err(e) => {
                    tracing::warn!(secret = %n, error = %e, "reading a volume's secret");
                    return None;
                }
            }
        }
        let new_token = new_token.map(|t| (t, Instant::now()));
        if token {
            src.token = new_token
                .as_ref()
                .or(self.token.as_ref())
                .map(|(t, _)| t.clone());
        }
        Some(VolumeSources {
            src,
            token: new_token,
        })
    }

    /// A bound token of the pod's service account (TokenRequest), if the API serves it.
    async fn service_account_token(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Option<String> {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec,
        };
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.ctx.client.clone(), &self.ns);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3607),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..Default::default()
        };
        match api
            .create_token_request(&sa, &kube::api::PostParams::default(), &req)
            .await
        {
            Ok(t) => t.status.map(|s| s.token),
            Err(e) => {
                tracing::debug!(error = %e, "no service account token");
                None
            }
        }
    }

    /// Init containers one by one. `true` once all have completed.
    async fn run_init_containers(&mut self, id: &str) -> bool {
        let spec = self.spec();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for c in spec.init_containers.iter().flatten() {
            let cur = self
                .containers
                .get(&c.name)
                .and_then(|s| s.view.current.clone());
            match cur {
                None => {
                    self.start_container(id, c, true).await;
                    return false;
                }
                Some(rt) => match rt.state {
                    ContainerState::Running | ContainerState::Created => return false,
                    ContainerState::Exited if rt.exit_code == Some(0) => continue,
                    _ => {
                        if policy == "Never" {
                            let msg = format!(
                                "init container {} failed with exit code {}",
                                c.name,
                                rt.exit_code.unwrap_or(-1)
                            );
                            self.failed = Some(("InitContainerFailed".into(), msg));
                            return false;
                        }
                        self.restart_after_backoff(id, c, true).await;
                        return false;
                    }
                },
            }
        }
        true
    }

    async fn run_app_containers(&mut self, id: &str) {
        let spec = self.spec();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for c in &spec.containers {
            let cur = self
                .containers
                .get(&c.name)
                .and_then(|s| s.view.current.clone());
            match cur {
                None => {
                    if self.container(&c.name).instance.is_none() {
                        self.start_container(id, c, false).await;
                    } else {
                        // An instance we started is not in the VM (removed behind our back).
                        self.restart_after_backoff(id, c, false).await;
                    }
                }
                Some(rt) => match rt.state {
                    ContainerState::Running => self.probe(id, c).await,
                    ContainerState::Created => {}
                    ContainerState::Exited | ContainerState::Unknown => {
                        let killed = self.container(&c.name).killed_by_probe;
                        let restart = match policy.as_str() {
                            "Always" => true,
                            "OnFailure" => rt.exit_code != Some(0) || killed,
                            _ => false,
                        };
                        if restart {
                            self.restart_after_backoff(id, c, false).await;
                        }
                    }
                },
            }
        }
    }

    /// Restarts a finished container once its back-off has passed (CrashLoopBackOff until
    /// then).
    async fn restart_after_backoff(&mut self, id: &str, c: &Container, init: bool) {
        let timers = self.ctx.cfg.pod_timers.clone();
        let pod_desc = format!("{}_{}({})", self.name, self.ns, self.uid);
        let cs = self.container(&c.name);
        // Ran long enough (twice the cap, as kubelet): forget past crashes. Only when the
        // exit is first seen: once a back-off runs, the instance's age must not reset it
        // again on every pass (it would never pass).
        if cs.backoff.until.is_none()
            && cs
                .started
                .is_some_and(|s| s.elapsed() > timers.backoff_max * 2)
        {
            cs.backoff.reset();
        }
        if cs.backoff.until.is_none() {
            let d = cs.backoff.fail(timers.backoff_initial, timers.backoff_max);
            cs.view.waiting = Some(Waiting::new(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_desc}",
                    human(d),
                    c.name
                )),
            ));
            let msg = "Back-off restarting failed container".to_string()
                + &format!(" {} in pod {pod_desc}", c.name);
            self.ctx
                .recorder
                .event(&self.pod, Some(&c.name), Warning, "BackOff", msg)
                .await;
            return;
        }
        if cs.backoff.waiting() {
            return;
        }
        // Back-off passed: next time it fails the delay doubles.
        cs.backoff.until = None;
        let delay = cs.backoff.delay;
        self.start_container(id, c, init).await;
        let cs = self.container(&c.name);
        cs.backoff.delay = delay;
    }

    /// Creates and starts the next instance of `c`.
    async fn start_container(&mut self, id: &str, c: &Container, init: bool) {
        let next = self
            .containers
            .get(&c.name)
            .and_then(|s| s.instance)
            .map(|n| n + 1)
            .unwrap_or(0);
        let inst = instance_name(&c.name, next);
        // Keep one finished instance for `logs --previous`; drop the one before.
        if let Some(old) = next.checked_sub(2) {
            let _ = self
                .ctx
                .runtime
                .remove_container(id, &instance_name(&c.name, old))
                .await;
        }
        let config = match self.container_config(c, &inst, init).await {
            Ok(cfg) => cfg,
            Err(msg) => {
                let cs = self.container(&c.name);
                cs.view.waiting = Some(Waiting::new(
                    "CreateContainerConfigError",
                    Some(msg.clone()),
                ));
                self.ctx
                    .recorder
                    .event(
                        &self.pod,
                        Some(&c.name),
                        Warning,
                        "Failed",
                        format!("Error: {msg}"),
                    )
                    .await;
                return;
            }
        };
        if let Err(e) = self.ctx.runtime.create_container(id, config).await {
            let msg = error_chain(&e);
            let cs = self.container(&c.name);
            cs.view.waiting = Some(Waiting::new("CreateContainerError", Some(msg.clone())));
            self.ctx
                .recorder
                .event(
                    &self.pod,
                    Some(&c.name),
                    Warning,
                    "Failed",
                    format!("Error: {msg}"),
                )
                .await;
            return;
        }
        {
            let cs = self.container(&c.name);
            cs.instance = Some(next);
            cs.view.waiting = None;
            cs.killed_by_probe = false;
            cs.probes.clear();
        }
        self.publish_lookup();
        self.ctx
            .recorder
            .event(
                &self.pod,
                Some(&c.name),
                Normal,
                "Created",
                format!("Created container: {}", c.name),
            )
            .await;
        let started = self.ctx.runtime.start_container(id, &inst).await;
        self.container(&c.name).started = Some(Instant::now());
        match started {
            Ok(()) => {
                self.ctx
                    .recorder
                    .event(
                        &self.pod,
                        Some(&c.name),
                        Normal,
                        "Started",
                        format!("Started container {}", c.name),
                    )
                    .await;
                if let Some(cmd) = hook_command(c, true) {
                    let t = Duration::from_secs(30);
                    if let Err(msg) = self.run_hook(id, &inst, cmd, t).await {
                        self.ctx
                            .recorder
                            .event(
                                &self.pod,
                                Some(&c.name),
                                Warning,
                                "FailedPostStartHook",
                                format!("PostStartHook failed: {msg}"),
                            )
                            .await;
                        let _ = self
                            .ctx
                            .runtime
                            .stop_container(id, &inst, self.grace())
                            .await;
                        self.container(&c.name).killed_by_probe = true;
                    }
                }
            }
            Err(e) => {
                let msg = error_chain(&e);
                self.ctx
                    .recorder
                    .event(
                        &self.pod,
                        Some(&c.name),
                        Warning,
                        "Failed",
                        format!("Error: {msg}"),
                    )
                    .await;
            }
        }
        // See the new instance at once.
        if let Ok(sb) = self.ctx.runtime.sandbox_status(id).await {
            self.refresh(&sb);
        }
    }

    /// The runtime's config of instance `inst` of `c`: image defaults, command and args with
    /// `$(VAR)` expansion, the environment, identity.
    async fn container_config(
        &self,
        c: &Container,
        inst: &str,
        init: bool,
    ) -> Result<ContainerConfig, String> {
        let image = c.image.clone().unwrap_or_default();
        let img = self
            .ctx
            .runtime
            .image_status(&image)
            .map_err(|e| format!("image {image:?}: {}", error_chain(&e)))?;
        let refs = crate::env::references(c);
        let mut fetched = crate::env::Fetched::default();
        let cms: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        for n in refs.config_maps {
            let v = cms
                .get_opt(&n)
                .await
                .map_err(|e| format!("reading configmap {n:?}: {e}"))?;
            fetched
                .config_maps
                .insert(n, v.map(|cm| cm.data.unwrap_or_default()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        for n in refs.secrets {
            let v = secrets
                .get_opt(&n)
                .await
                .map_err(|e| format!("reading secret {n:?}: {e}"))?;
            fetched.secrets.insert(n, v.map(secret_strings));
        }
        let facts = crate::env::PodFacts {
            pod_ip: self.pod_ip.clone(),
            host_ip: self.ctx.host_ip.clone(),
            node_name: self.ctx.cfg.node_name.clone(),
            vm_cpu_millis: u128::from(self.vm_cpus.max(1)) * 1000,
            vm_memory_bytes: u128::from(self.vm_memory_mib) << 20,
            kubernetes: self
                .ctx
                .services
                .as_ref()
                .and_then(|f| f.kubernetes_service()),
        };
        let env = crate::env::resolve(&self.pod, c, &facts, &fetched).map_err(|e| e.0)?;
        let vars: BTreeMap<String, String> = env.iter().cloned().collect();
        let cmd = c.command.clone().unwrap_or_default();
        let args = c.args.clone().unwrap_or_default();
        let cfg_img = &img.config;
        let argv: Vec<String> = match (cmd.is_empty(), args.is_empty()) {
            (false, _) => cmd
                .iter()
                .chain(&args)
                .map(|s| crate::env::expand(s, &vars))
                .collect(),
            (true, false) => cfg_img
                .entrypoint
                .iter()
                .cloned()
                .chain(args.iter().map(|s| crate::env::expand(s, &vars)))
                .collect(),
            (true, true) => cfg_img
                .entrypoint
                .iter()
                .chain(&cfg_img.cmd)
                .cloned()
                .collect(),
        };
        let mut env_list: Vec<String> = cfg_img.env.clone();
        env_list.push(format!("HOSTNAME={}", self.name));
        for (k, v) in env {
            env_list.retain(|e| e.split('=').next() != Some(k.as_str()));
            env_list.push(format!("{k}={v}"));
        }
        let spec = self.spec();
        let psc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(psc.run_as_user);
        let gid = sc.run_as_group.or(psc.run_as_group);
        let user = match (uid, gid) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(g)) => {
                let base = Some(cfg_img.user.clone()).filter(|u| !u.is_empty());
                Some(format!(
                    "{}:{g}",
                    base.map(|b| b.split(':').next().unwrap_or("0").to_string())
                        .unwrap_or_else(|| "0".into())
                ))
            }
            (None, None) => Some(cfg_img.user.clone()).filter(|u| !u.is_empty()),
        };
        if argv.is_empty() {
            return Err(format!("no command specified for container {:?}", c.name));
        }
        let mounts = crate::volumes::mounts(&self.pod, c, self.disks.as_deref().unwrap_or(&[]))
            .map_err(|e| e.0)?;
        Ok(ContainerConfig {
            mounts,
            name: inst.to_string(),
            image,
            command: argv,
            env: env_list,
            working_dir: c
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| Some(cfg_img.working_dir.clone()).filter(|w| !w.is_empty())),
            user,
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            tty_size: None,
            init,
            read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
            writable_limit_bytes: crate::eviction::container_limit(c)
                .map(|(n, _)| crate::eviction::hard_cap(n)),
        })
    }

    /// Runs a command in a container: its exit code and (bounded) output.
    /// Runs a postStart/preStop hook's command; a non-zero exit is a failure with its output.
    async fn run_hook(
        &self,
        id: &str,
        inst: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(), String> {
        match self.exec(id, inst, command, timeout).await? {
            (0, _) => Ok(()),
            (code, out) => Err(format!("exited with {code}: {out}")),
        }
    }

    async fn exec(
        &self,
        id: &str,
        inst: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, String), String> {
        let run = async {
            let mut s = self
                .ctx
                .runtime
                .exec(
                    id,
                    inst,
                    ExecConfig {
                        command,
                        env: vec![],
                        tty: false,
                        stdin: false,
                        size: None,
                    },
                )
                .await
                .map_err(|e| error_chain(&e))?;
            let mut out = Vec::new();
            loop {
                match s.output.next().await.map_err(|e| error_chain(&e))? {
                    Some(StreamEvent::Stdout(b)) | Some(StreamEvent::Stderr(b)) => {
                        if out.len() < 10 * 1024 {
                            out.extend_from_slice(&b);
                        }
                    }
                    Some(StreamEvent::Exit(code)) => {
                        return Ok((code, String::from_utf8_lossy(&out).trim().to_string()))
                    }
                    None => return Err("the exec session ended without an exit code".into()),
                }
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| format!("command timed out after {timeout:?}"))?
    }

    /// Runs the container's due probes; acts on their results.
    async fn probe(&mut self, id: &str, c: &Container) {
        let Some(n) = self.container(&c.name).instance else {
            return;
        };
        let inst = instance_name(&c.name, n);
        let probes = [
            (ProbeKind::Startup, c.startup_probe.clone()),
            (ProbeKind::Liveness, c.liveness_probe.clone()),
            (ProbeKind::Readiness, c.readiness_probe.clone()),
        ];
        let started_ok = {
            let cs = self.container(&c.name);
            c.startup_probe.is_none() || cs.probes.get("startup").is_some_and(|p| p.ok)
        };
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            if kind != ProbeKind::Startup && !started_ok {
                continue;
            }
            if kind == ProbeKind::Startup && started_ok {
                continue;
            }
            let key = match kind {
                ProbeKind::Startup => "startup",
                ProbeKind::Liveness => "liveness",
                ProbeKind::Readiness => "readiness",
            };
            let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
            let initial =
                Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            let started_at = self.container(&c.name).started.unwrap_or_else(Instant::now);
            let st = self
                .container(&c.name)
                .probes
                .entry(key)
                .or_insert_with(|| ProbeState {
                    next: started_at + initial,
                    successes: 0,
                    failures: 0,
                    ok: false,
                })
                .clone();
            if Instant::now() < st.next {
                continue;
            }
            let result = self.run_probe(id, &inst, &probe).await;
            let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
            let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
            let mut st = st;
            st.next = Instant::now() + period;
            match &result {
                Ok(()) => {
                    st.successes += 1;
                    st.failures = 0;
                    if st.successes >= success_threshold {
                        st.ok = true;
                    }
                }
                Err(msg) => {
                    st.failures += 1;
                    st.successes = 0;
                    let what = match kind {
                        ProbeKind::Startup => "Startup",
                        ProbeKind::Liveness => "Liveness",
                        ProbeKind::Readiness => "Readiness",
                    };
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Warning,
                            "Unhealthy",
                            format!("{what} probe failed: {msg}"),
                        )
                        .await;
                    if st.failures >= failure_threshold {
                        st.ok = false;
                    }
                }
            }
            let failed_out = !st.ok && st.failures >= failure_threshold;
            self.container(&c.name).probes.insert(key, st.clone());
            match kind {
                ProbeKind::Readiness => self.container(&c.name).view.ready = st.ok,
                ProbeKind::Startup if st.ok => self.container(&c.name).view.started = true,
                ProbeKind::Liveness | ProbeKind::Startup if failed_out => {
                    let what = if kind == ProbeKind::Liveness {
                        "liveness"
                    } else {
                        "startup"
                    };
                    self.ctx
                        .recorder
                        .event(
                            &self.pod,
                            Some(&c.name),
                            Normal,
                            "Killing",
                            format!(
                                "Container {} failed {what} probe, will be restarted",
                                c.name
                            ),
                        )
                        .await;
                    let grace = probe
                        .termination_grace_period_seconds
                        .map(|s| Duration::from_secs(s.max(0) as u64))
                        .unwrap_or_else(|| self.grace());
                    self.stop_one(id, c, &inst, grace).await;
                    let cs = self.container(&c.name);
                    cs.killed_by_probe = true;
                    cs.probes.clear();
                    return;
                }
                _ => {}
            }
        }
    }

    /// One probe attempt, inside the pod VM.
    async fn run_probe(&self, id: &str, inst: &str, p: &Probe) -> Result<(), String> {
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        // The guest runs the probe; under TCG an exec alone takes a while, so allow for it.
        let budget = timeout + Duration::from_secs(5);
        let net = |host: Option<String>, port: i32, http: Option<h8s_guest::HttpProbe>| {
            h8s_guest::ProbeSpec {
                host: host.unwrap_or_default(),
                port: u16::try_from(port).unwrap_or(0),
                http,
                grpc: None,
                timeout_ms: timeout.as_millis() as u64,
            }
        };
        let cmd: Vec<String> = if let Some(e) = &p.exec {
            e.command.clone().unwrap_or_default()
        } else if let Some(h) = &p.http_get {
            let port = port_number(&h.port, self.spec_container_ports(inst))?;
            let headers = h
                .http_headers
                .iter()
                .flatten()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect();
            let http =
                (h.scheme.as_deref().unwrap_or("HTTP") != "HTTPS").then(|| h8s_guest::HttpProbe {
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                    headers,
                });
            let spec = net(h.host.clone(), port, http);
            return tokio::time::timeout(budget, self.ctx.runtime.probe(id, spec))
                .await
                .map_err(|_| format!("probe timed out after {timeout:?}"))?
                .map_err(|e| probe_message(&e));
        } else if let Some(t) = &p.tcp_socket {
            let port = port_number(&t.port, self.spec_container_ports(inst))?;
            let spec = net(t.host.clone(), port, None);
            return tokio::time::timeout(budget, self.ctx.runtime.probe(id, spec))
                .await
                .map_err(|_| format!("probe timed out after {timeout:?}"))?
                .map_err(|e| probe_message(&e));
        } else if let Some(g) = &p.grpc {
            // The guest dials 127.0.0.1 in the VM (kubelet dials the pod IP; a server on all
            // addresses answers both).
            let mut spec = net(None, g.port, None);
            spec.grpc = Some(h8s_guest::GrpcProbe {
                service: g.service.clone().unwrap_or_default(),
            });
            return tokio::time::timeout(budget, self.ctx.runtime.probe(id, spec))
                .await
                .map_err(|_| format!("probe timed out after {timeout:?}"))?
                .map_err(|e| probe_message(&e));
        } else {
            return Err("probe has no handler".into());
        };
        if cmd.is_empty() {
            return Err("exec probe has no command".into());
        }
        let (code, out) = self.exec(id, inst, cmd, budget).await?;
        if code == 0 {
            Ok(())
        } else if out.is_empty() {
            Err(format!("command exited with {code}"))
        } else {
            Err(out)
        }
    }

    fn spec_container_ports(&self, inst: &str) -> Vec<(String, i32)> {
        let base = parse_instance(inst).map(|(b, _)| b).unwrap_or(inst);
        self.spec()
            .containers
            .iter()
            .filter(|c| c.name.starts_with(base))
            .flat_map(|c| c.ports.clone().unwrap_or_default())
            .filter_map(|p| Some((p.name?, p.container_port)))
            .collect()
    }

    /// preStop, then SIGTERM, SIGKILL after what is left of `grace`.
    async fn stop_one(&self, id: &str, c: &Container, inst: &str, grace: Duration) {
        let started = Instant::now();
        if let Some(cmd) = hook_command(c, false) {
            if let Err(msg) = self.run_hook(id, inst, cmd, grace).await {
                self.ctx
                    .recorder
                    .event(
                        &self.pod,
                        Some(&c.name),
                        Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {msg}"),
                    )
                    .await;
            }
        }
        let left = grace.saturating_sub(started.elapsed());
        if let Err(e) = self.ctx.runtime.stop_container(id, inst, left).await {
            tracing::debug!(container = %inst, error = %e, "stopping container");
        }
    }

    /// Stops every running container, in parallel, each with preStop and `grace`.
    async fn kill_all(&mut self, grace: Duration) {
        let Some(id) = self.sandbox.clone() else {
            return;
        };
        let spec = self.spec();
        let mut running = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let cs = self.containers.get(&c.name);
            let (Some(n), true) = (
                cs.and_then(|s| s.instance),
                cs.and_then(|s| s.view.current.as_ref())
                    .is_some_and(|r| r.state == ContainerState::Running),
            ) else {
                continue;
            };
            running.push((c.clone(), instance_name(&c.name, n)));
        }
        for (c, _) in &running {
            self.ctx
                .recorder
                .event(
                    &self.pod,
                    Some(&c.name),
                    Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                )
                .await;
        }
        let this = &*self;
        futures::future::join_all(
            running
                .iter()
                .map(|(c, inst)| this.stop_one(&id, c, inst, grace)),
        )
        .await;
        if let Ok(sb) = self.ctx.runtime.sandbox_status(&id).await {
            self.refresh(&sb);
        }
    }

    /// The pod reached Succeeded or Failed: its VM is stopped (the record and logs stay until
    /// the pod is deleted).
    async fn finish(&mut self) {
        if self.terminal_handled {
            return;
        }
        self.terminal_handled = true;
        self.kill_all(Duration::ZERO).await;
        if let Some(id) = &self.sandbox {
            if let Err(e) = self.ctx.runtime.stop_sandbox(id, Duration::ZERO).await {
                tracing::warn!(error = %e, "stopping the finished pod's VM");
            }
            if let Ok(sb) = self.ctx.runtime.sandbox_status(id).await {
                self.refresh(&sb);
            }
        }
        self.release_network().await;
        tracing::info!("pod finished; its VM is stopped");
    }

    /// Removes the VM, the containers' records and the address.
    async fn teardown(&mut self, grace: Duration) {
        self.kill_all(grace).await;
        if let Some(id) = self.sandbox.take() {
            if let Err(e) = self.ctx.runtime.stop_sandbox(&id, Duration::ZERO).await {
                tracing::warn!(error = %e, "stopping the pod VM");
            }
            if let Err(e) = self.ctx.runtime.remove_sandbox(&id, true).await {
                tracing::warn!(error = %e, "removing the pod VM");
            }
        }
        // A start may have been under way when the pod went: whatever carries its name.
        if let Ok(list) = self.ctx.runtime.list_sandboxes().await {
            for sb in list {
                if sb.config.labels.get(LABEL_UID) == Some(&self.uid) {
                    crate::pods::remove_orphan(&self.ctx, &sb).await;
                }
            }
        }
        self.release_network().await;
        self.ctx.lookup.remove(&self.ns, &self.name, &self.uid);
        tracing::info!("pod VM removed");
    }

    /// The pod is being deleted: graceful stop, then the Pod object goes (grace 0), as kubelet
    /// does once the containers are gone.
    async fn terminate_and_delete(&mut self) {
        let grace = self.grace();
        tracing::info!(?grace, "pod is being deleted");
        self.teardown(grace).await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "deleting the pod object failed"),
        }
    }

    /// Writes the status if it changed.
    async fn write_status(&mut self) {
        let spec = self.spec();
        let view = self.view();
        let st = status::pod_status(&spec, &view, self.pod.status.as_ref());
        let mut v = match serde_json::to_value(&st) {
            Ok(v) => v,
            Err(_) => return,
        };
        // Clear what no longer applies (a merge patch keeps absent keys).
        for k in ["reason", "message", "podIP", "podIPs"] {
            if v.get(k).is_none() {
                v[k] = Value::Null;
            }
        }
        if self.last_written.as_ref() == Some(&v) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = json!({ "status": v });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(phase = ?st.phase, "status written");
                self.last_written = Some(v);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(error = %e, "writing the pod status failed"),
        }
    }
}

/// The probe's own failure text (the guest's message, without the runtime's prefix).
fn probe_message(e: &h8s_runtime::Error) -> String {
    let s = e.to_string();
    for p in ["guest agent: ", "failed precondition: "] {
        if let Some(rest) = s.strip_prefix(p) {
            return rest.trim_start_matches("failed precondition: ").to_string();
        }
    }
    s
}

fn hook_command(c: &Container, post_start: bool) -> Option<Vec<String>> {
    let lc = c.lifecycle.as_ref()?;
    let h = if post_start {
        lc.post_start.as_ref()?
    } else {
        lc.pre_stop.as_ref()?
    };
    if let Some(e) = &h.exec {
        return e.command.clone().filter(|c| !c.is_empty());
    }
    if let Some(s) = &h.sleep {
        return Some(vec!["sleep".into(), s.seconds.to_string()]);
    }
    if let Some(hg) = &h.http_get {
        let port = match &hg.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => return None,
        };
        return Some(vec![
            "wget".into(),
            "-q".into(),
            "-O".into(),
            "/dev/null".into(),
            format!(
                "http://{}:{port}{}",
                hg.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
                hg.path.clone().unwrap_or_else(|| "/".into())
            ),
        ]);
    }
    None
}

fn port_number(
    p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    named: Vec<(String, i32)>,
) -> Result<i32, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match p {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => named
            .into_iter()
            .find(|(n, _)| n == s)
            .map(|(_, p)| p)
            .or_else(|| s.parse().ok())
            .ok_or_else(|| format!("no port named {s:?}")),
    }
}

/// `repo@sha256:…` as kubelet reports imageID.
fn image_id(img: &h8s_runtime::image::Image) -> String {
    let repo = img
        .names
        .first()
        .map(|n| {
            let n = n.split('@').next().unwrap_or(n);
            match n.rfind(':') {
                Some(i) if !n[i..].contains('/') => n[..i].to_string(),
                _ => n.to_string(),
            }
        })
        .unwrap_or_default();
    format!("{repo}@{}", img.digest)
}

fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((h, _)) if h.contains('.') || h.contains(':') || h == "localhost" => h.to_string(),
        _ => "docker.io".into(),
    }
}

/// Basic credentials for `host` from a `kubernetes.io/dockerconfigjson` (or legacy
/// `dockercfg`) Secret.
fn docker_config_credentials(s: &Secret, host: &str) -> Option<h8s_runtime::image::Credentials> {
    use base64::Engine;
    let data = s.data.as_ref()?;
    let (raw, nested) = match data.get(".dockerconfigjson") {
        Some(d) => (d, true),
        None => (data.get(".dockercfg")?, false),
    };
    let v: Value = serde_json::from_slice(&raw.0).ok()?;
    let auths = if nested { v.get("auths")? } else { &v };
    let auths = auths.as_object()?;
    let aliases = |h: &str| -> bool {
        let h = h
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or(h);
        h == host
            || (host == "docker.io" && (h == "index.docker.io" || h == "registry-1.docker.io"))
    };
    let (_, entry) = auths.iter().find(|(k, _)| aliases(k))?;
    let (mut user, mut pass) = (
        entry
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_string),
        entry
            .get("password")
            .and_then(Value::as_str)
            .map(str::to_string),
    );
    if user.is_none() {
        let auth = entry.get("auth").and_then(Value::as_str)?;
        let dec = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let dec = String::from_utf8(dec).ok()?;
        let (u, p) = dec.split_once(':')?;
        user = Some(u.to_string());
        pass = Some(p.to_string());
    }
    Some(h8s_runtime::image::Credentials {
        username: user?,
        password: pass.unwrap_or_default(),
    })
}

fn secret_strings(s: Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(s.string_data.unwrap_or_default());
    out
}

/// An error with its causes, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `10s`, `2m40s`, `5m0s` as Go prints durations.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let (i, m) = (Duration::from_secs(10), Duration::from_secs(300));
        let seq: Vec<u64> = (0..7).map(|_| b.fail(i, m).as_secs()).collect();
        assert_eq!(seq, vec![10, 20, 40, 80, 160, 300, 300]);
        assert!(b.waiting());
        b.reset();
        assert!(!b.waiting());
        assert_eq!(b.fail(i, m).as_secs(), 10);
    }

    #[test]
    fn instance_names_round_trip() {
        assert_eq!(instance_name("app", 3), "app.3");
        assert_eq!(parse_instance("app.3"), Some(("app", 3)));
        assert_eq!(parse_instance("my.app.12"), Some(("my.app", 12)));
        assert_eq!(instance_name(&"x".repeat(63), 0).len(), 57);
    }

    #[test]
    fn pull_secret_credentials() {
        use k8s_openapi::ByteString;
        let cfg = br#"{"auths":{"registry.example:5000":{"auth":"dXNlcjpwYXNz"}}}"#;
        let s = Secret {
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(cfg.to_vec()),
            )])),
            ..Default::default()
        };
        let c = docker_config_credentials(&s, "registry.example:5000").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pass"));
        assert!(docker_config_credentials(&s, "docker.io").is_none());
        assert_eq!(
            registry_host("registry.example:5000/a/b:1"),
            "registry.example:5000"
        );
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
    }

    #[test]
    fn go_durations() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_secs(160)), "2m40s");
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
    }
}
