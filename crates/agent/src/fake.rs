//! A fake pod runtime for the agent's own unit tests (kubelet's `FakeRuntime` idea): pods
//! and containers are records in memory whose behaviour a test scripts — a container runs,
//! exits at once with a code, or fails to start; a VM boots, fails to boot, or waits at a
//! gate; probes pass or fail by port; execs exit by command. Every call that changes
//! something is logged, so a test can check what the worker asked for (the grace a
//! container was stopped with, the VM's size) and that nothing is left behind.
//!
//! No QEMU: the worker, the dispatcher and the status they write run for real against the
//! in-process API server (see `worker_tests`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use h8s_runtime::image::{Credentials, Digest, Image, ImageConfig, PullOptions, Removed};
use h8s_runtime::{
    Accel, BoxFuture, ContainerConfig, ContainerService, ContainerState, ContainerStatus, Error,
    ExecConfig, ImageDisk, ImageService, Result, RuntimeInfo, SandboxConfig, SandboxService,
    SandboxState, SandboxStatus, Stream, StreamEvent,
};

/// What a container does when started (by its Kubernetes name, for every instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Script {
    /// Runs until stopped.
    Run,
    /// Exits at once with this code.
    Exit(i32),
    /// Cannot start (the command does not exist).
    StartFails,
}

/// One call the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    RunSandbox {
        name: String,
        memory_mib: u32,
        cpus: u32,
        /// Disk bytes and operations per second the pod asked for.
        disk: (Option<u64>, Option<u64>),
    },
    StopSandbox(String),
    RemoveSandbox(String),
    CreateContainer(String),
    StartContainer(String),
    StopContainer {
        name: String,
        grace: Duration,
    },
    RemoveContainer(String),
    Exec {
        container: String,
        command: Vec<String>,
    },
    Pull {
        reference: String,
        user: Option<String>,
    },
    /// A Service table update for a VM: its generation, whether it was a whole table.
    UpdateServices {
        sandbox: String,
        generation: u64,
        full: bool,
    },
}

/// A VM's Service table as its guest agent applied the updates (the guest's rules: an update
/// older than the last applied is ignored, a full one replaces everything).
#[derive(Debug, Clone, Default)]
pub(crate) struct AppliedServices {
    pub generation: u64,
    pub services: BTreeMap<h8s_guest::ServiceName, h8s_guest::ServiceEntry>,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, SandboxStatus>,
    scripts: HashMap<String, Script>,
    /// Probe ports that fail.
    failing_ports: HashSet<u16>,
    /// Exec commands (first word) → exit code; others exit 0.
    exec_codes: HashMap<String, i32>,
    /// The next VM boots fail with this message.
    boot_fails: Option<String>,
    /// Images present on the node.
    images: Vec<Image>,
    /// What the "registry" has: reference → the user it requires (None: public).
    registry: HashMap<String, Option<String>>,
    calls: Vec<Call>,
    /// Each VM's Service table.
    services: HashMap<String, AppliedServices>,
}

/// The fake runtime; share it as `Arc<FakeRuntime>` (it is a `PodRuntime`).
pub(crate) struct FakeRuntime {
    state: Mutex<State>,
    /// While closed (`Some` and not yet notified), VM boots wait here.
    gate: tokio::sync::Semaphore,
    gated: std::sync::atomic::AtomicBool,
    /// Boots that reached the closed gate.
    at_gate: std::sync::atomic::AtomicUsize,
    log_dir: PathBuf,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// A fake image named `reference`.
pub(crate) fn image(reference: &str) -> Image {
    let d = Digest::of(reference.as_bytes());
    Image {
        id: d.clone(),
        names: vec![reference.to_string()],
        digest: d.clone(),
        digests: vec![d.clone()],
        manifest_digest: d,
        size: 1 << 20,
        created: 0,
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ImageConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
    }
}

fn base(instance: &str) -> &str {
    instance
        .rsplit_once('.')
        .map(|(b, _)| b)
        .unwrap_or(instance)
}

impl FakeRuntime {
    pub fn new(log_dir: &Path) -> FakeRuntime {
        FakeRuntime {
            state: Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
            gated: Default::default(),
            at_gate: Default::default(),
            log_dir: log_dir.to_path_buf(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("fake runtime state"))
    }

    /// `reference` is present on the node.
    pub fn add_image(&self, reference: &str) {
        self.with(|s| s.images.push(image(reference)));
    }
    /// The registry serves `reference`, to `user` only when given.
    pub fn serve(&self, reference: &str, user: Option<&str>) {
        self.with(|s| {
            s.registry
                .insert(reference.to_string(), user.map(str::to_string))
        });
    }
    pub fn script(&self, container: &str, script: Script) {
        self.with(|s| s.scripts.insert(container.to_string(), script));
    }
    pub fn fail_probes_on(&self, port: u16, fail: bool) {
        self.with(|s| {
            if fail {
                s.failing_ports.insert(port);
            } else {
                s.failing_ports.remove(&port);
            }
        });
    }
    pub fn exec_exits(&self, command: &str, code: i32) {
        self.with(|s| s.exec_codes.insert(command.to_string(), code));
    }
    pub fn fail_boots(&self, msg: Option<&str>) {
        self.with(|s| s.boot_fails = msg.map(str::to_string));
    }
    /// VM boots wait until [`FakeRuntime::open_gate`].
    pub fn close_gate(&self) {
        self.gated.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn open_gate(&self) {
        self.gated.store(false, std::sync::atomic::Ordering::SeqCst);
        self.gate.add_permits(1000);
    }
    /// How many boots waited at the closed gate.
    pub fn at_gate(&self) -> usize {
        self.at_gate.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }
    /// VM `id`'s Service table as applied so far.
    pub fn services_of(&self, id: &str) -> Option<AppliedServices> {
        self.with(|s| s.services.get(id).cloned())
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.with(|s| s.sandboxes.keys().cloned().collect())
    }
    /// Makes a running instance exit with `code` (a crash seen by the next relist).
    pub fn exit(&self, instance: &str, code: i32) {
        self.with(|s| {
            for c in s.sandboxes.values_mut().flat_map(|sb| &mut sb.containers) {
                if c.config.name == instance && c.state == ContainerState::Running {
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(code);
                    c.finished_at = Some(now());
                }
            }
        });
    }

    fn sandbox<'s>(s: &'s mut State, id: &str) -> Result<&'s mut SandboxStatus> {
        s.sandboxes.get_mut(id).ok_or_else(|| Error::NotFound {
            kind: "pod",
            id: id.to_string(),
        })
    }
    fn container<'s>(s: &'s mut State, pod: &str, name: &str) -> Result<&'s mut ContainerStatus> {
        Self::sandbox(s, pod)?
            .containers
            .iter_mut()
            .find(|c| c.config.name == name)
            .ok_or_else(|| Error::NotFound {
                kind: "container",
                id: name.to_string(),
            })
    }
}

impl SandboxService for FakeRuntime {
    fn run_sandbox(&self, config: SandboxConfig) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            if self.gated.load(std::sync::atomic::Ordering::SeqCst) {
                self.at_gate
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = self.gate.acquire().await.map(|p| p.forget());
            }
            self.with(|s| {
                s.calls.push(Call::RunSandbox {
                    name: config.name.clone(),
                    memory_mib: config.memory_mib,
                    cpus: config.cpus,
                    disk: (config.disk_bps, config.disk_iops),
                });
                if let Some(msg) = &s.boot_fails {
                    // A real failed boot leaves nothing either: the runtime removes it.
                    return Err(Error::Qemu(msg.clone()));
                }
                if s.sandboxes.contains_key(&config.name) {
                    return Err(Error::AlreadyExists {
                        kind: "pod",
                        id: config.name.clone(),
                    });
                }
                let id = config.name.clone();
                s.sandboxes.insert(
                    id.clone(),
                    SandboxStatus {
                        id: id.clone(),
                        config,
                        state: SandboxState::Ready,
                        reason: None,
                        accel: Some(Accel::Tcg),
                        guest_kernel: None,
                        guest_boot_ms: None,
                        qemu_pid: None,
                        shim_pid: None,
                        created_at: now(),
                        containers: vec![],
                        jail: None,
                        boot: None,
                        guest_agent_id: None,
                        start_timeline: Vec::new(),
                    },
                );
                Ok(id)
            })
        })
    }
    fn stop_sandbox<'a>(&'a self, id: &'a str, _grace: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::StopSandbox(id.to_string()));
                let sb = Self::sandbox(s, id)?;
                for c in &mut sb.containers {
                    if c.state == ContainerState::Running {
                        c.state = ContainerState::Exited;
                        c.exit_code = Some(137);
                        c.finished_at = Some(now());
                    }
                }
                sb.state = SandboxState::Stopped;
                Ok(())
            })
        })
    }
    fn remove_sandbox<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::RemoveSandbox(id.to_string()));
                let sb = Self::sandbox(s, id)?;
                if !force && sb.state == SandboxState::Ready {
                    return Err(Error::FailedPrecondition("the pod is running".into()));
                }
                s.sandboxes.remove(id);
                Ok(())
            })
        })
    }
    fn sandbox_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxStatus>> {
        Box::pin(async move { self.with(|s| Self::sandbox(s, id).cloned()) })
    }
    fn list_sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxStatus>>> {
        Box::pin(async move { self.with(|s| Ok(s.sandboxes.values().cloned().collect())) })
    }
    fn update_services<'a>(
        &'a self,
        id: &'a str,
        update: h8s_guest::ServiceUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // A guest round trip takes a moment: let other pushes run meanwhile.
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.with(|s| {
                Self::sandbox(s, id)?;
                s.calls.push(Call::UpdateServices {
                    sandbox: id.to_string(),
                    generation: update.generation,
                    full: update.full,
                });
                let t = s.services.entry(id.to_string()).or_default();
                if update.generation < t.generation {
                    return Ok(());
                }
                t.generation = update.generation;
                if update.full {
                    t.services.clear();
                }
                for k in &update.removed {
                    t.services.remove(k);
                }
                for e in update.services {
                    t.services.insert(e.key.clone(), e);
                }
                Ok(())
            })
        })
    }
    fn recover<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    fn write_volume<'a>(
        &'a self,
        id: &'a str,
        _content: h8s_guest::VolumeContent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.with(|s| Self::sandbox(s, id).map(|_| ())) })
    }
    fn probe<'a>(&'a self, id: &'a str, spec: h8s_guest::ProbeSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                Self::sandbox(s, id)?;
                if s.failing_ports.contains(&spec.port) {
                    Err(Error::Agent(format!(
                        "dial tcp 127.0.0.1:{}: connect: connection refused",
                        spec.port
                    )))
                } else {
                    Ok(())
                }
            })
        })
    }
    fn storage_usage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<h8s_guest::StorageUsage>> {
        // Every container's writable layer holds 4 KiB; volumes nothing.
        Box::pin(async move {
            self.with(|s| {
                let sb = Self::sandbox(s, id)?;
                Ok(h8s_guest::StorageUsage {
                    containers: sb
                        .containers
                        .iter()
                        .map(|c| (c.config.name.clone(), 4096))
                        .collect(),
                    volumes: vec![],
                })
            })
        })
    }
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            name: h8s_runtime::RUNTIME_NAME.into(),
            version: "fake".into(),
            accel: Accel::Tcg,
            accel_reason: "fake".into(),
            default_memory_mib: 256,
            overhead_memory_mib: 64,
        }
    }
}

impl ContainerService for FakeRuntime {
    fn create_container<'a>(
        &'a self,
        pod: &'a str,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let log_path = self.log_path(pod, &config.name);
            self.with(|s| {
                s.calls.push(Call::CreateContainer(config.name.clone()));
                let sb = Self::sandbox(s, pod)?;
                if sb.containers.iter().any(|c| c.config.name == config.name) {
                    return Err(Error::AlreadyExists {
                        kind: "container",
                        id: config.name.clone(),
                    });
                }
                sb.containers.push(ContainerStatus {
                    config,
                    state: ContainerState::Created,
                    exit_code: None,
                    created_at: now(),
                    started_at: None,
                    finished_at: None,
                    reason: None,
                    log_path,
                });
                Ok(())
            })
        })
    }
    fn start_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::StartContainer(name.to_string()));
                let script = s.scripts.get(base(name)).cloned().unwrap_or(Script::Run);
                let c = Self::container(s, pod, name)?;
                match script {
                    Script::Run => {
                        c.state = ContainerState::Running;
                        c.started_at = Some(now());
                    }
                    Script::Exit(code) => {
                        c.state = ContainerState::Exited;
                        c.started_at = Some(now());
                        c.finished_at = Some(now());
                        c.exit_code = Some(code);
                    }
                    Script::StartFails => {
                        let cmd = c.config.command.first().cloned().unwrap_or_default();
                        let msg = format!("exec: {cmd:?}: executable file not found in $PATH");
                        c.state = ContainerState::Exited;
                        c.exit_code = Some(128);
                        c.finished_at = Some(now());
                        c.reason = Some(msg);
                        return Err(Error::CommandNotFound(cmd));
                    }
                }
                Ok(())
            })
        })
    }
    fn stop_container<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::StopContainer {
                    name: name.to_string(),
                    grace,
                });
                let c = Self::container(s, pod, name)?;
                if c.state == ContainerState::Running {
                    // SIGTERM honoured.
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(143);
                    c.finished_at = Some(now());
                }
                Ok(())
            })
        })
    }
    fn remove_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|s| {
                s.calls.push(Call::RemoveContainer(name.to_string()));
                let sb = Self::sandbox(s, pod)?;
                sb.containers.retain(|c| c.config.name != name);
                Ok(())
            })
        })
    }
    fn container_status<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStatus>> {
        Box::pin(async move { self.with(|s| Self::container(s, pod, name).cloned()) })
    }
    fn list_containers<'a>(&'a self, pod: &'a str) -> BoxFuture<'a, Result<Vec<ContainerStatus>>> {
        Box::pin(async move { self.with(|s| Ok(Self::sandbox(s, pod)?.containers.clone())) })
    }
    fn attach<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<Stream>> {
        Box::pin(async move {
            self.with(|s| Self::container(s, pod, name).map(|_| ()))?;
            Stream::from_events(vec![StreamEvent::Exit(0)])
        })
    }
    fn exec<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        config: ExecConfig,
    ) -> BoxFuture<'a, Result<Stream>> {
        Box::pin(async move {
            let code = self.with(|s| {
                s.calls.push(Call::Exec {
                    container: name.to_string(),
                    command: config.command.clone(),
                });
                let c = Self::container(s, pod, name)?;
                if c.state != ContainerState::Running {
                    return Err(Error::FailedPrecondition(format!(
                        "container {name} is not running"
                    )));
                }
                let first = config.command.first().cloned().unwrap_or_default();
                Ok(s.exec_codes.get(&first).copied().unwrap_or(0))
            })?;
            let mut events = vec![];
            if code != 0 {
                events.push(StreamEvent::Stderr(b"fake failure\n".to_vec()));
            }
            events.push(StreamEvent::Exit(code));
            Stream::from_events(events)
        })
    }
    fn log_path(&self, pod: &str, name: &str) -> PathBuf {
        self.log_dir.join(pod).join(format!("{name}.log"))
    }
}

impl ImageService for FakeRuntime {
    fn pull_image<'a>(
        &'a self,
        reference: &'a str,
        opts: PullOptions,
    ) -> BoxFuture<'a, Result<Image>> {
        Box::pin(async move {
            let user = opts.auth.as_ref().map(|c: &Credentials| c.username.clone());
            self.with(|s| {
                s.calls.push(Call::Pull {
                    reference: reference.to_string(),
                    user: user.clone(),
                });
                match s.registry.get(reference) {
                    None => Err(Error::Image(format!(
                        "pulling {reference}: manifest unknown"
                    ))),
                    Some(Some(need)) if user.as_ref() != Some(need) => Err(Error::Image(format!(
                        "pulling {reference}: 401 Unauthorized"
                    ))),
                    Some(_) => {
                        let img = image(reference);
                        if !s
                            .images
                            .iter()
                            .any(|i| i.names.iter().any(|n| n == reference))
                        {
                            s.images.push(img.clone());
                        }
                        Ok(img)
                    }
                }
            })
        })
    }
    fn import_image<'a>(
        &'a self,
        _path: &'a Path,
        _name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(async { Err(Error::FailedPrecondition("the fake imports nothing".into())) })
    }
    fn list_images(&self) -> Result<Vec<Image>> {
        self.with(|s| Ok(s.images.clone()))
    }
    fn image_status(&self, name_or_id: &str) -> Result<Image> {
        self.with(|s| {
            s.images
                .iter()
                .find(|i| i.names.iter().any(|n| n == name_or_id))
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    kind: "image",
                    id: name_or_id.to_string(),
                })
        })
    }
    fn remove_image(&self, name_or_id: &str) -> Result<Removed> {
        let _ = name_or_id;
        Err(Error::FailedPrecondition(
            "the fake removes no image".into(),
        ))
    }
    fn image_disk<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(ImageDisk, Image)>> {
        Box::pin(async move {
            let img = self.image_status(reference)?;
            Ok((
                ImageDisk {
                    name: reference.to_string(),
                    path: "/dev/null".into(),
                },
                img,
            ))
        })
    }
}
