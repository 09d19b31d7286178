//! The runtime API (the seam the node agent and the CLI use): pods, containers, streams.
//! Each pod is served by its own supervisor process; this side is stateless apart from the
//! pod directories, so any number of clients, and restarted ones, see the same pods.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::api::{
    ContainerConfig, ContainerState, ContainerStatus, ExecConfig, ImageDisk, SandboxConfig,
    SandboxState, SandboxStatus, StreamEvent,
};
use crate::error::WireError;
use crate::image::{Image, ImageConfig, ImageStore, PullOptions};
use crate::state::{list_ids, PodDir, PodRecord, ProcRef};
use crate::util::new_id;
use crate::wire::{self, Frame, Kind, Request, Response};
use crate::{Error, Result, VmSettings};

mod pool;

/// How to start a pod supervisor: a program and the arguments before `--root R [--adopt] ID`.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    /// The executable (e.g. the `h8s` binary itself).
    pub program: PathBuf,
    /// Leading arguments (e.g. `["pod-shim"]`).
    pub args: Vec<String>,
}

/// The build this crate comes from: a hash of the sources a pod supervisor is made of (this
/// crate's, the guest protocol's and the network's, and `Cargo.lock`), computed by `build.rs`.
/// Two binaries linking this crate from the same sources carry the same id.
pub const BUILD_ID: &str = env!("H8S_RUNTIME_BUILD_ID");

impl ShimCommand {
    /// The standalone supervisor's file name.
    pub const STANDALONE: &'static str = "h8s-pod-shim";

    /// How a binary that is a supervisor itself when given `subcommand` (`h8s pod-shim`)
    /// starts one: through the standalone `h8s-pod-shim` beside it when there is one, else by
    /// running itself. The standalone binary links only the runtime, so each pod's supervisor
    /// keeps ~75 KiB of relocated data private instead of the ~1.6 MiB of `h8s` (its
    /// read-only-after-relocation segment is dirtied per process): measured 3.5 → 1.1 MiB PSS
    /// per supervisor, at 10 idle template pods (BENCHMARKS.md, "VM templates"). It is told this
    /// build's [`BUILD_ID`] and `exe subcommand`, and runs that instead when it comes from
    /// other sources (a stale build beside a newer `h8s`), so it never speaks an older
    /// protocol.
    pub fn beside(exe: PathBuf, subcommand: &str) -> ShimCommand {
        let standalone = exe.with_file_name(Self::STANDALONE);
        match exe.to_str() {
            Some(fallback) if standalone.is_file() => ShimCommand {
                args: vec![
                    "--build-id".into(),
                    BUILD_ID.into(),
                    "--else".into(),
                    fallback.into(),
                    subcommand.into(),
                ],
                program: standalone,
            },
            _ => ShimCommand {
                program: exe,
                args: vec![subcommand.into()],
            },
        }
    }
}

/// Where state lives and how pods are started.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// State root: pods live in `<root>/pods/<id>/`.
    pub root: PathBuf,
    /// The image store's root (`ImageStore::default_root()` unless set).
    pub images: Option<PathBuf>,
    /// VM settings for new pods.
    pub vm: VmSettings,
    /// The supervisor command.
    pub shim: ShimCommand,
}

impl RuntimeConfig {
    /// The default state root: `$H8S_ROOT`, else `/run/h8s` as root, else
    /// `$XDG_RUNTIME_DIR/h8s`. Kept short because unix socket paths are limited to 108 bytes.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("H8S_ROOT") {
            return PathBuf::from(r);
        }
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/run/h8s");
        }
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| Path::new(&d).join("h8s"))
            .unwrap_or_else(|| std::env::temp_dir().join("h8s"))
    }
}

/// The pod runtime (vm backend).
#[derive(Debug, Clone)]
pub struct Runtime {
    cfg: RuntimeConfig,
    template_owner: Option<crate::template::ProcessRef>,
    tap_adopter: Option<Adopter>,
}

/// A [`TapAdopter`] a `Runtime` can print.
#[derive(Clone)]
struct Adopter(TapAdopter);

impl std::fmt::Debug for Adopter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TapAdopter")
    }
}

/// Puts a warm clone's tap (its name, first argument) where a pod's network attachment
/// expects its tap: the network's owner (the node agent's fabric) replaces the tap it made
/// for the pod with the clone's, under the same name and with the same bridge port settings.
/// Without one, pods with a network never take a warm clone.
pub type TapAdopter = std::sync::Arc<
    dyn Fn(&str, &crate::NetworkAttachment) -> std::result::Result<(), String> + Send + Sync,
>;

impl Runtime {
    /// A runtime over `cfg`.
    pub fn new(cfg: RuntimeConfig) -> Runtime {
        Runtime {
            cfg,
            template_owner: None,
            tap_adopter: None,
        }
    }

    /// The same runtime giving warm clones to pods with a network too, moving each clone's
    /// tap with `adopter` (see [`TapAdopter`]).
    pub fn with_tap_adopter(mut self, adopter: TapAdopter) -> Runtime {
        self.tap_adopter = Some(Adopter(adopter));
        self
    }

    /// The same runtime whose VM template holders exit (retiring their templates) once
    /// `owner` is gone: a node agent passes itself, so no holder outlives it. Without an
    /// owner (`h8s run`) holders stay until the templates are rotated.
    pub fn with_template_owner(mut self, owner: crate::template::ProcessRef) -> Runtime {
        self.template_owner = Some(owner);
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// The runtime's name, version and accelerator, and what a pod VM costs by default.
    pub fn info(&self) -> crate::RuntimeInfo {
        let (accel, why) = crate::probe_accel(&self.cfg.vm);
        // Measured (docs/runtime.md, BENCHMARKS.md): QEMU's own heaps ~25 MiB and the
        // supervisor ~2 MiB per pod, plus the TCG translation cache when there is no KVM.
        let tb = match accel {
            crate::Accel::Tcg => self.cfg.vm.tcg_tb_size_mib,
            crate::Accel::Kvm => 0,
        };
        crate::RuntimeInfo {
            name: crate::RUNTIME_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            accel,
            accel_reason: why.to_string(),
            default_memory_mib: crate::api::DEFAULT_MEMORY_MIB,
            overhead_memory_mib: 32 + tb,
        }
    }

    fn dir(&self, id: &str) -> PodDir {
        PodDir::new(&self.cfg.root, id)
    }

    /// The image store pods' images come from.
    pub fn images(&self) -> Result<ImageStore> {
        let root = self
            .cfg
            .images
            .clone()
            .unwrap_or_else(ImageStore::default_root);
        Ok(ImageStore::open(&root)?)
    }

    /// Pulls an image (CRI `PullImage`).
    pub async fn pull_image(&self, reference: &str, opts: &PullOptions) -> Result<Image> {
        Ok(self.images()?.pull(reference, opts).await?)
    }

    /// Imports an OCI layout or docker-archive/OCI tarball.
    pub async fn import_image(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        Ok(self.images()?.import(path, name).await?)
    }

    /// Lists images (CRI `ListImages`).
    pub fn list_images(&self) -> Result<Vec<Image>> {
        Ok(self.images()?.list()?)
    }

    /// One image (CRI `ImageStatus`).
    pub fn image_status(&self, name_or_id: &str) -> Result<Image> {
        Ok(self.images()?.status(name_or_id)?)
    }

    /// Removes an image name, or the image (CRI `RemoveImage`).
    pub fn remove_image(&self, name_or_id: &str) -> Result<crate::image::Removed> {
        Ok(self.images()?.remove(name_or_id)?)
    }

    /// The disk a pod needs for `reference` (its erofs root filesystem, built on first use)
    /// and the image's config for [`ContainerConfig::with_image_defaults`].
    pub async fn image_disk(&self, reference: &str) -> Result<(ImageDisk, ImageConfig)> {
        let store = self.images()?;
        let image = store.status(reference)?;
        let path = store.rootfs(&image).await?;
        Ok((
            ImageDisk {
                name: reference.to_string(),
                path,
            },
            image.config,
        ))
    }

    /// Finds a pod by id, unique id prefix or name.
    pub fn resolve(&self, name_or_id: &str) -> Result<String> {
        let ids = list_ids(&self.cfg.root)?;
        if ids.iter().any(|i| i == name_or_id) {
            return Ok(name_or_id.to_string());
        }
        let mut by_name = Vec::new();
        for id in &ids {
            if let Ok(rec) = self.dir(id).load() {
                if rec.config.name == name_or_id {
                    by_name.push(id.clone());
                }
            }
        }
        if by_name.len() == 1 {
            return Ok(by_name.remove(0));
        }
        let by_prefix: Vec<&String> = ids
            .iter()
            .filter(|i| !name_or_id.is_empty() && i.starts_with(name_or_id))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound {
                kind: "pod",
                id: name_or_id.to_string(),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "{name_or_id:?} matches several pods"
            ))),
        }
    }

    /// Starts a pod VM and waits until its guest agent answers. On failure nothing is left
    /// behind: no process, socket or directory.
    #[tracing::instrument(skip_all, fields(pod = %config.name))]
    pub async fn run_sandbox(&self, config: SandboxConfig) -> Result<String> {
        config.validate()?;
        self.cfg.vm.validate()?;
        for id in list_ids(&self.cfg.root)? {
            if let Ok(r) = self.dir(&id).load() {
                if r.config.name == config.name {
                    return Err(Error::AlreadyExists {
                        kind: "pod",
                        id: config.name,
                    });
                }
            }
        }
        let requested = crate::api::StartMark::now("requested");
        // The template first, also for a pod that takes a warm clone: choosing retires a
        // used-up template and starts its successor's build (clones count as its uses).
        let template = match crate::template::choose(&self.cfg.root, &self.cfg.vm, &config) {
            Ok(crate::template::Choice::Use { key, build }) => {
                if let Some(next) = build {
                    self.spawn_template_builder(&next);
                }
                Some(key)
            }
            Ok(crate::template::Choice::Cold(Some(key))) => {
                self.spawn_template_builder(&key);
                None
            }
            Ok(crate::template::Choice::Cold(None)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "VM templates unavailable; booting cold");
                None
            }
        };
        if let Some(spec) = self.warm_shape(&config) {
            let shape = spec.key();
            let got = self.take_warm_clone(&shape, &config, &requested).await;
            if got.is_some() && self.template_owner.is_some() {
                // A long-lived runtime (a node agent's) refills after the pod's start, not
                // before it: starting a clone (its records, the jail, the supervisor's fork
                // and exec) took ~8 ms. `h8s run` may exit right after its pod starts, so it
                // refills first.
                let me = self.clone();
                std::thread::spawn(move || me.refill_pool(&spec, &shape));
            } else {
                self.refill_pool(&spec, &shape);
            }
            if let Some(id) = got {
                return Ok(id);
            }
        }
        let id = new_id();
        let dir = self.dir(&id);
        let rec = PodRecord {
            template,
            start_timeline: vec![requested],
            ..PodRecord::new(&id, config, self.cfg.vm.clone())
        };
        dir.create(&rec)?;
        if let Err(e) = self.assign_jail(&dir, rec) {
            let _ = dir.remove();
            return Err(e);
        }
        match self.spawn_shim(&dir, &id, false).await {
            Ok(()) => Ok(id),
            Err(e) => {
                // The shim cleans up after itself; make sure, then drop the directory.
                if let Ok(rec) = dir.load() {
                    for p in [rec.qemu, rec.shim].into_iter().flatten() {
                        dir.kill(&id, p, libc::SIGKILL);
                        wait_dead(p).await;
                    }
                    if let Some(j) = &rec.jail {
                        crate::jail::release(&self.cfg.root, &id, j, true);
                    }
                }
                let _ = dir.remove();
                Err(e)
            }
        }
    }

    /// Starts building VM template `key` in a detached process (its log: `build.log` in the
    /// template's directory); pods keep booting cold until it is ready.
    fn spawn_template_builder(&self, key: &str) {
        let t = crate::template::TemplateDir::new(&self.cfg.root, key);
        let log = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.dir.join("build.log"))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the VM template builder");
                return;
            }
        };
        let mut cmd = self.background_shim(log);
        cmd.arg("--build-template")
            .args(
                self.template_owner
                    .iter()
                    .flat_map(|o| ["--template-owner".to_string(), o.to_string()]),
            )
            .arg(key);
        use std::os::unix::process::CommandExt;
        // SAFETY: `detach` makes only async-signal-safe system calls; the builder outlives
        // this process.
        unsafe {
            cmd.pre_exec(detach);
        }
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(template = %key, pid = child.id(), "building a VM template");
                // Reaped by a thread so a long-lived caller keeps no zombie.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot start the VM template builder"),
        }
    }

    /// The supervisor command for a process that runs in the background (a template
    /// builder, a warm clone): no input or output, its log on stderr to `log`.
    fn background_shim(&self, log: std::fs::File) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.cfg.shim.program);
        cmd.args(&self.cfg.shim.args)
            .arg("--root")
            .arg(&self.cfg.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env(
                "H8S_LOG",
                std::env::var("H8S_LOG").unwrap_or_else(|_| "info".into()),
            );
        cmd
    }

    /// Builds (in the background) the VM template pods of `config`'s shape would restore,
    /// unless it is ready or building. Returns whether a build was started.
    /// Its warm clones follow once it is ready (not only after its first pod).
    pub fn prepare_template(&self, config: &SandboxConfig) -> Result<bool> {
        let started = match crate::template::choose(&self.cfg.root, &self.cfg.vm, config)? {
            crate::template::Choice::Cold(Some(key))
            | crate::template::Choice::Use {
                build: Some(key), ..
            } => {
                self.spawn_template_builder(&key);
                true
            }
            _ => false,
        };
        if let Some(spec) = self.warm_shape(config) {
            let me = self.clone();
            let limit = Duration::from_secs(self.cfg.vm.boot_timeout_secs + 60);
            std::thread::spawn(move || me.fill_pool_when_ready(&spec, limit));
        }
        Ok(started)
    }

    /// Retires every VM template, so pods that follow restore freshly built ones (a new
    /// kernel layout and RNG state); returns how many were retired. The node agent calls
    /// this when it starts.
    pub fn rotate_templates(&self) -> usize {
        crate::template::retire_all(&self.cfg.root)
    }

    /// Gives a new pod its own uid when the jail is on (and it can be: it needs root).
    fn assign_jail(&self, dir: &PodDir, mut rec: PodRecord) -> Result<()> {
        let settings = &self.cfg.vm.jail;
        if !settings.enabled {
            return Ok(());
        }
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            tracing::warn!("jail disabled for this pod: it needs root (QEMU runs as the caller)");
            return Ok(());
        }
        let uid = crate::jail::uids::allocate(&self.cfg.root, settings.uid_range, &rec.id)?;
        rec.jail = Some(crate::JailStatus {
            uid,
            gid: uid,
            ..Default::default()
        });
        if let Err(e) = dir.save(&rec) {
            crate::jail::uids::release(&self.cfg.root, uid, &rec.id);
            return Err(e);
        }
        Ok(())
    }

    async fn spawn_shim(&self, dir: &PodDir, id: &str, adopt: bool) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.shim_log())
            .map_err(|e| Error::io(format!("creating {}", dir.shim_log().display()), e))?;
        let mut cmd = tokio::process::Command::new(&self.cfg.shim.program);
        cmd.args(&self.cfg.shim.args)
            .arg("--root")
            .arg(&self.cfg.root);
        if adopt {
            cmd.arg("--adopt");
        }
        cmd.arg(id)
            .stdin(Stdio::null())
            .stdout(if adopt { Stdio::null() } else { Stdio::piped() })
            .stderr(log)
            .env(
                "H8S_LOG",
                std::env::var("H8S_LOG").unwrap_or_else(|_| "info".into()),
            );
        // SAFETY: `detach` makes only async-signal-safe system calls; its own session keeps
        // the terminal's Ctrl-C and hangup from the pod.
        unsafe {
            cmd.pre_exec(detach);
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::Shim(format!(
                "cannot run {}: {e}",
                self.cfg.shim.program.display()
            ))
        })?;
        if adopt {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(());
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Shim("no stdout".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let limit = Duration::from_secs(self.cfg.vm.boot_timeout_secs + 30);
        let line = match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let _ = child.wait().await;
                let tail = std::fs::read_to_string(dir.shim_log()).unwrap_or_default();
                let tail = tail.lines().last().unwrap_or("").to_string();
                return Err(Error::Shim(format!("exited during start: {tail}")));
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(Error::Shim("no answer during start".into()));
            }
        };
        #[derive(serde::Deserialize)]
        struct Ready {
            #[serde(default)]
            ok: bool,
            #[serde(default)]
            error: Option<WireError>,
        }
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| Error::Shim(format!("bad start report {line:?}: {e}")))?;
        if let Some(e) = ready.error {
            let _ = child.wait().await;
            return Err(e.into());
        }
        if !ready.ok {
            return Err(Error::Shim(format!("bad start report {line:?}")));
        }
        // Reap the supervisor if this process outlives it (the node agent does).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    async fn call(&self, id: &str, req: &Request) -> Result<(Response, UnixStream)> {
        let dir = self.dir(id);
        let rec = dir.load()?;
        if !rec.shim.is_some_and(|s| s.alive()) {
            return Err(Error::FailedPrecondition(format!(
                "pod {} is not running ({})",
                rec.config.name,
                state_word(rec.state)
            )));
        }
        let mut conn = UnixStream::connect(dir.shim_sock()).await.map_err(|e| {
            Error::Shim(format!(
                "pod {} supervisor unreachable: {e}",
                rec.config.name
            ))
        })?;
        wire::write_frame(&mut conn, &Frame::json(Kind::Request, req)).await?;
        let f = wire::read_frame(&mut conn)
            .await?
            .ok_or_else(|| Error::Shim("supervisor closed the connection".into()))?;
        if f.kind != Kind::Response {
            return Err(Error::Shim(format!(
                "expected a response, got {:?}",
                f.kind
            )));
        }
        match f.parse::<Response>()? {
            Response::Err(e) => Err(e.into()),
            r => Ok((r, conn)),
        }
    }

    async fn call_ok(&self, id: &str, req: Request) -> Result<()> {
        self.call(id, &req).await.map(drop)
    }

    /// The pod's status (live from its supervisor when it runs, else from its record).
    pub async fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let rec = self.dir(id).load()?;
        if rec.shim.is_some_and(|s| s.alive()) {
            if let Ok((Response::Status(s), _)) = self.call(id, &Request::Status).await {
                return Ok(*s);
            }
            // The supervisor may have written its final record and exited meanwhile: judge the
            // newest record, not the one read before.
            return Ok(settle(self.dir(id).load()?).status());
        }
        self.reap_cgroups(id, &rec);
        Ok(settle(rec).status())
    }

    /// Removes the cgroups of a pod whose VM has ended (the supervisor, running as the pod's
    /// uid, cannot: their parent is root's), so a pod that stopped or failed on its own does
    /// not keep them until it is removed.
    fn reap_cgroups(&self, id: &str, rec: &PodRecord) {
        let Some(j) = &rec.jail else { return };
        if !matches!(rec.state, SandboxState::Failed | SandboxState::Stopped)
            || rec.qemu.is_some_and(|q| q.alive())
            || !j.cgroup_dirs.iter().any(|d| d.exists())
        {
            return;
        }
        crate::jail::release(&self.cfg.root, id, j, false);
    }

    /// All pods.
    pub async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        let mut out = Vec::new();
        for id in list_ids(&self.cfg.root)? {
            match self.dir(&id).load() {
                // A warm clone is no pod (yet).
                Ok(rec) if rec.pool.is_some() => {}
                Ok(rec) => {
                    self.reap_cgroups(&id, &rec);
                    out.push(settle(rec).status())
                }
                Err(e) => tracing::warn!(pod = %id, error = %e, "unreadable pod record"),
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(out)
    }

    /// Stops every container (SIGTERM, SIGKILL after `grace`) and powers the VM off.
    /// The record and logs stay until [`Runtime::remove_sandbox`].
    #[tracing::instrument(skip(self))]
    pub async fn stop_sandbox(&self, id: &str, grace: Duration) -> Result<()> {
        let dir = self.dir(id);
        let rec = dir.load()?;
        if rec.shim.is_some_and(|s| s.alive()) {
            match self
                .call_ok(
                    id,
                    Request::StopPod {
                        timeout_secs: grace.as_secs(),
                    },
                )
                .await
            {
                Ok(()) => {}
                // The supervisor may be finishing on its own (a one-shot pod whose containers
                // exited): only worth a warning if it is still there.
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if dir
                        .load()
                        .ok()
                        .and_then(|r| r.shim)
                        .is_some_and(|s| s.alive())
                    {
                        tracing::warn!(error = %e, "supervisor failed to stop the pod; killing");
                    }
                }
            }
            // Wait for the supervisor to finish its record.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
            while dir
                .load()
                .ok()
                .and_then(|r| r.shim)
                .is_some_and(|s| s.alive())
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Whatever is left (a dead or stuck supervisor): kill by PID, checked by start time.
        let mut rec = dir.load()?;
        let mut killed = false;
        for p in [rec.shim, rec.qemu].into_iter().flatten() {
            if dir.kill(id, p, libc::SIGKILL) {
                killed = true;
                wait_dead(p).await;
            }
        }
        if killed || rec.shim.is_some() || rec.qemu.is_some() {
            if matches!(rec.state, SandboxState::Ready | SandboxState::Creating) {
                rec.state = SandboxState::Stopped;
            }
            rec.shim = None;
            rec.qemu = None;
            for c in &mut rec.containers {
                if c.state == ContainerState::Running {
                    c.state = ContainerState::Unknown;
                }
            }
            dir.save(&rec)?;
            for s in [dir.shim_sock(), dir.qmp_sock(), dir.agent_sock()] {
                let _ = std::fs::remove_file(s);
            }
        }
        if let Some(j) = &rec.jail {
            crate::jail::release(&self.cfg.root, id, j, false);
        }
        Ok(())
    }

    /// Removes a stopped pod's record and logs; `force` stops it first.
    #[tracing::instrument(skip(self))]
    pub async fn remove_sandbox(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id);
        let rec = dir.load()?;
        let running = rec.shim.is_some_and(|s| s.alive()) || rec.qemu.is_some_and(|q| q.alive());
        if running {
            if !force {
                return Err(Error::FailedPrecondition(format!(
                    "pod {} is running; stop it first or force",
                    rec.config.name
                )));
            }
            self.stop_sandbox(id, Duration::from_secs(0)).await?;
        }
        dir.remove()?;
        if let Some(j) = &rec.jail {
            crate::jail::release(&self.cfg.root, id, j, true);
        }
        Ok(())
    }

    /// Re-attaches a supervisor to a pod whose VM runs but whose supervisor died.
    pub async fn recover(&self, id: &str) -> Result<bool> {
        let dir = self.dir(id);
        let rec = dir.load()?;
        if rec.shim.is_some_and(|s| s.alive()) || !rec.qemu.is_some_and(|q| q.alive()) {
            return Ok(false);
        }
        // Two clients recovering at once must not start two supervisors: take the pod's lock,
        // then look again.
        let _lock = lock_file(&dir.dir.join("recover.lock")).await?;
        let rec = dir.load()?;
        if rec.shim.is_some_and(|s| s.alive()) || !rec.qemu.is_some_and(|q| q.alive()) {
            return Ok(false);
        }
        tracing::info!(pod = %id, "supervisor gone, VM alive: taking it over");
        self.spawn_shim(&dir, id, true).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = dir.load()?;
            if r.shim.is_some_and(|s| s.alive()) && dir.shim_sock().exists() {
                if let Ok((Response::Status(_), _)) = self.call(id, &Request::Status).await {
                    return Ok(true);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Shim("reattach did not complete".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a container in a running pod (its image must be attached to the pod).
    #[tracing::instrument(skip(self, config), fields(container = %config.name))]
    pub async fn create_container(&self, id: &str, config: ContainerConfig) -> Result<()> {
        self.call_ok(id, Request::CreateContainer { config }).await
    }

    /// Starts a created container.
    #[tracing::instrument(skip(self))]
    pub async fn start_container(&self, id: &str, name: &str) -> Result<()> {
        self.call_ok(
            id,
            Request::StartContainer {
                name: name.to_string(),
            },
        )
        .await
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`.
    #[tracing::instrument(skip(self))]
    pub async fn stop_container(&self, id: &str, name: &str, grace: Duration) -> Result<()> {
        self.call_ok(
            id,
            Request::StopContainer {
                name: name.to_string(),
                timeout_secs: grace.as_secs(),
            },
        )
        .await
    }

    /// Removes a container that is not running.
    #[tracing::instrument(skip(self))]
    pub async fn remove_container(&self, id: &str, name: &str) -> Result<()> {
        self.call_ok(
            id,
            Request::RemoveContainer {
                name: name.to_string(),
            },
        )
        .await
    }

    /// A container's status.
    pub async fn container_status(&self, id: &str, name: &str) -> Result<ContainerStatus> {
        self.sandbox_status(id)
            .await?
            .containers
            .into_iter()
            .find(|c| c.config.name == name)
            .ok_or_else(|| Error::NotFound {
                kind: "container",
                id: name.to_string(),
            })
    }

    /// A pod's containers.
    pub async fn list_containers(&self, id: &str) -> Result<Vec<ContainerStatus>> {
        Ok(self.sandbox_status(id).await?.containers)
    }

    /// A container's CRI log file.
    pub fn log_path(&self, id: &str, name: &str) -> PathBuf {
        self.dir(id).log_path(name)
    }

    /// Streams a container's stdio (attach before start to see all output).
    pub async fn attach(&self, id: &str, name: &str) -> Result<Stream> {
        let (_, conn) = self
            .call(
                id,
                &Request::Attach {
                    name: name.to_string(),
                },
            )
            .await?;
        Ok(Stream::new(conn))
    }

    /// Runs a process in a running container.
    #[tracing::instrument(skip(self, config))]
    pub async fn exec(&self, id: &str, container: &str, config: ExecConfig) -> Result<Stream> {
        let (_, conn) = self
            .call(
                id,
                &Request::Exec {
                    container: container.to_string(),
                    config,
                },
            )
            .await?;
        Ok(Stream::new(conn))
    }

    /// Connects to `127.0.0.1:port` inside the pod VM (the pod's network namespace). Bytes
    /// sent with [`StreamInput::stdin`] reach the port, [`StreamInput::close_stdin`]
    /// half-closes it; what the port sends arrives as stdout, and `Exit(0)` when it closes.
    #[tracing::instrument(skip(self))]
    pub async fn port_forward(&self, id: &str, port: u16) -> Result<Stream> {
        let (_, conn) = self.call(id, &Request::PortForward { port }).await?;
        Ok(Stream::new(conn))
    }

    /// Runs a tcpSocket/httpGet probe inside the pod VM; `Ok` when it passes.
    pub async fn probe(&self, id: &str, spec: h8s_guest::ProbeSpec) -> Result<()> {
        self.call_ok(id, Request::Probe { spec }).await
    }

    /// The pod's local storage usage inside its VM: containers' writable layers and pod
    /// volumes.
    pub async fn storage_usage(&self, id: &str) -> Result<h8s_guest::StorageUsage> {
        match self.call(id, &Request::StorageUsage).await? {
            (Response::StorageUsage(u), _) => Ok(u),
            (other, _) => Err(Error::Shim(format!(
                "unexpected answer to a storage usage request: {other:?}"
            ))),
        }
    }

    /// Replaces the files of one of the pod's volumes, atomically (containers mount it with
    /// `h8s_guest::MountSource::PodDir`).
    #[tracing::instrument(skip(self, content), fields(volume = %content.name))]
    pub async fn write_volume(&self, id: &str, content: h8s_guest::VolumeContent) -> Result<()> {
        self.call_ok(id, Request::WriteVolume { content }).await
    }

    /// Changes the pod's view of its Network's Services (in-pod proxy and DNS).
    #[tracing::instrument(skip(self, update), fields(generation = update.generation))]
    pub async fn update_services(&self, id: &str, update: h8s_guest::ServiceUpdate) -> Result<()> {
        self.call_ok(id, Request::UpdateServices { update }).await
    }

    /// Waits for a container to exit; returns its exit code.
    pub async fn wait_container(&self, id: &str, name: &str) -> Result<i32> {
        let mut s = self.attach(id, name).await?;
        loop {
            match s.output.next().await? {
                Some(StreamEvent::Exit(code)) => return Ok(code),
                Some(_) => {}
                None => {
                    let st = self.container_status(id, name).await?;
                    return st.exit_code.ok_or_else(|| {
                        Error::FailedPrecondition(format!(
                            "container {name:?} ended in an unknown state"
                        ))
                    });
                }
            }
        }
    }

    /// Creates and starts a pod's containers the way the kubelet does: init containers one by
    /// one, each to a zero exit, then all app containers.
    pub async fn start_pod_containers(
        &self,
        id: &str,
        containers: &[ContainerConfig],
    ) -> Result<()> {
        for c in containers.iter().filter(|c| c.init) {
            self.create_container(id, c.clone()).await?;
            let mut s = self.attach(id, &c.name).await?;
            self.start_container(id, &c.name).await?;
            let code = loop {
                match s.output.next().await? {
                    Some(StreamEvent::Exit(code)) => break code,
                    Some(_) => {}
                    None => return Err(Error::FailedPrecondition("pod ended during init".into())),
                }
            };
            if code != 0 {
                return Err(Error::FailedPrecondition(format!(
                    "init container {:?} exited with {code}",
                    c.name
                )));
            }
        }
        for c in containers.iter().filter(|c| !c.init) {
            self.create_container(id, c.clone()).await?;
            self.start_container(id, &c.name).await?;
        }
        Ok(())
    }
}

/// A record as seen from outside: a "ready" pod whose supervisor and VM are gone has failed.
fn settle(mut rec: PodRecord) -> PodRecord {
    let shim_alive = rec.shim.is_some_and(|s| s.alive());
    if matches!(rec.state, SandboxState::Ready | SandboxState::Creating) && !shim_alive {
        let vm_alive = rec.qemu.is_some_and(|q| q.alive());
        rec.state = SandboxState::Failed;
        rec.reason = Some(if vm_alive {
            "pod supervisor died; the VM still runs (recover it)".into()
        } else {
            "pod supervisor and VM exited unexpectedly".into()
        });
    }
    rec
}

fn state_word(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Creating => "creating",
        SandboxState::Ready => "ready",
        SandboxState::Stopped => "stopped",
        SandboxState::Failed => "failed",
    }
}

/// Between fork and exec of a process that outlives its caller (a pod supervisor, a
/// template builder): its own session, and every descriptor above stderr it inherited
/// without `O_CLOEXEC` (a caller's `flock` lock, a pipe) marked close-on-exec, so the daemon
/// holds none of them. Only async-signal-safe system calls.
fn detach() -> std::io::Result<()> {
    // SAFETY: setsid(2) and close_range(2) take plain integers.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An exclusive `flock` on `path`, held until the file is dropped.
async fn lock_file(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    for _ in 0..600 {
        // SAFETY: flock(2) on a descriptor we own; LOCK_NB never blocks the async runtime.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Shim(format!("{} stays locked", path.display())))
}

async fn wait_dead(p: ProcRef) {
    for _ in 0..250 {
        if !p.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An attach or exec stream.
pub struct Stream {
    /// Send stdin, resizes and signals.
    pub input: StreamInput,
    /// Receive output and the exit code.
    pub output: StreamOutput,
}

impl Stream {
    /// A stream that replays `events` and then ends: for test doubles of the runtime.
    pub fn from_events(events: Vec<StreamEvent>) -> Result<Stream> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
        tokio::spawn(async move {
            let (_rd, mut wr) = theirs.into_split();
            for ev in events {
                let frame = match ev {
                    StreamEvent::Stdout(data) => Frame {
                        kind: Kind::Stdout,
                        data,
                    },
                    StreamEvent::Stderr(data) => Frame {
                        kind: Kind::Stderr,
                        data,
                    },
                    StreamEvent::Exit(code) => Frame::json(Kind::Exit, &wire::Exit { code }),
                };
                if wire::write_frame(&mut wr, &frame).await.is_err() {
                    return;
                }
            }
        });
        Ok(Stream::new(ours))
    }

    fn new(conn: UnixStream) -> Stream {
        let (rd, wr) = conn.into_split();
        Stream {
            input: StreamInput { wr },
            output: StreamOutput { rd },
        }
    }
}

/// The input half of a [`Stream`].
pub struct StreamInput {
    wr: OwnedWriteHalf,
}

impl StreamInput {
    /// Bytes for the process's stdin (ignored unless it was started with stdin).
    pub async fn stdin(&mut self, data: &[u8]) -> Result<()> {
        wire::write_frame(
            &mut self.wr,
            &Frame {
                kind: Kind::Stdin,
                data: data.to_vec(),
            },
        )
        .await
    }
    /// End of input.
    pub async fn close_stdin(&mut self) -> Result<()> {
        wire::write_frame(
            &mut self.wr,
            &Frame {
                kind: Kind::StdinClose,
                data: Vec::new(),
            },
        )
        .await
    }
    /// New terminal size.
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<()> {
        wire::write_frame(
            &mut self.wr,
            &Frame::json(Kind::Resize, &wire::Resize { rows, cols }),
        )
        .await
    }
    /// Delivers a signal to the process.
    pub async fn signal(&mut self, signal: i32) -> Result<()> {
        wire::write_frame(
            &mut self.wr,
            &Frame::json(Kind::Signal, &wire::SignalMsg { signal }),
        )
        .await
    }
}

/// The output half of a [`Stream`].
pub struct StreamOutput {
    rd: OwnedReadHalf,
}

impl StreamOutput {
    /// The next output or the exit; `None` if the stream ended without an exit (pod gone).
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            let Some(f) = wire::read_frame(&mut self.rd).await? else {
                return Ok(None);
            };
            return Ok(Some(match f.kind {
                Kind::Stdout => StreamEvent::Stdout(f.data),
                Kind::Stderr => StreamEvent::Stderr(f.data),
                Kind::Exit => StreamEvent::Exit(f.parse::<wire::Exit>()?.code),
                _ => continue,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    /// A descriptor the caller left inheritable (as `flock FILE cmd` leaves its lock) does not
    /// reach a detached process: the daemon would hold it for its whole life.
    #[test]
    fn detached_processes_do_not_inherit_the_callers_descriptors() {
        let f = tempfile::tempfile().unwrap();
        // A number of its own (`ls` opens /proc/self/fd as the lowest free one); dup2(2)
        // leaves the copy without FD_CLOEXEC, as a caller's inherited lock is.
        let fd = 345;
        // SAFETY: dup2(2) of a descriptor this test owns onto a number nothing else uses.
        assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), fd) }, fd);
        let listed = |detached: bool| {
            let mut cmd = std::process::Command::new("ls");
            cmd.arg("/proc/self/fd");
            if detached {
                // SAFETY: `detach` makes only async-signal-safe system calls.
                unsafe { cmd.pre_exec(super::detach) };
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|n| n == fd.to_string())
        };
        // The control: without `detach` the child has it.
        assert!(listed(false), "fd {fd} not inherited at all");
        assert!(!listed(true), "fd {fd} reached the detached process");
        // SAFETY: closing the copy this test made.
        unsafe { libc::close(fd) };
    }
}
