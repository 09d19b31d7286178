//! The pod supervisor ("shim"): one small process per pod, like conmon or containerd-shim.
//!
//! It owns the pod's QEMU process, its QMP and agent connections, writes container logs,
//! runs the watchdog and serves clients (`h8s`, the node agent) on the pod's unix socket.
//! Clients come and go; the shim lives as long as the VM. It is started by
//! [`crate::Runtime::run_sandbox`] and reports boot success or failure on its stdout.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use h8s_guest::{
    BlockDevice, Channel, ContainerSpec, Event, ExecSpec, IdOrName, ProcessId, ProcessSpec,
    ProcessState, Reply, Request as GuestRequest, User, WritableLayer,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::agent::{Agent, GuestEvent};
use super::qemu::{drive_local_file, qemu_args, HostVirt, VmEndpoints};
use super::qmp::{Qmp, QmpEvent};
use crate::api::{ContainerConfig, ContainerState, ContainerStatus, ExecConfig, SandboxState};
use crate::jail::spawn::open_tap;
use crate::logs::{LogStream, LogWriter};
use crate::state::{PodDir, PodRecord, ProcRef};
use crate::util::rfc3339_nano;
use crate::wire::{self, Frame, Kind, Request, Response};
use crate::{Error, Result};

/// Missed pings in a row that fail a pod. The period (`VmSettings::watchdog_secs`, 10 s by
/// default, a ping may take twice that) is generous: on a loaded 2-core host a TCG guest can
/// be slow without being dead.
const PING_FAILURES_FATAL: u32 = 3;

/// The steps of this supervisor's pod start until it is ready (one pod per supervisor
/// process); moved into the record's `start_timeline` when the pod is ready.
static START_MARKS: Mutex<Vec<crate::api::StartMark>> = Mutex::new(Vec::new());

/// Records that `phase` of the pod's start happened now.
fn mark(phase: &str) {
    let mut m = START_MARKS.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() < MAX_START_MARKS {
        m.push(crate::api::StartMark::now(phase));
    }
}

/// Records that `phase` happened at `at_us` (µs since the epoch).
fn mark_at(phase: &str, at_us: u64) {
    let mut m = START_MARKS.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() < MAX_START_MARKS {
        m.push(crate::api::StartMark {
            phase: phase.to_string(),
            at_us,
        });
    }
}

/// Adds `phase` to a ready pod's timeline (the first container's steps only: it stays small).
fn mark_rec(rec: &mut PodRecord, phase: &str) {
    if rec.start_timeline.len() < MAX_START_MARKS
        && !rec.start_timeline.iter().any(|m| m.phase == phase)
    {
        rec.start_timeline.push(crate::api::StartMark::now(phase));
    }
}

/// Bounds the start timeline (a pod starts once; containers add a few marks each).
const MAX_START_MARKS: usize = 48;

/// Entry point of `h8s pod-shim` (and the `h8s-pod-shim` binary): supervises pod `id`
/// under `root` until its VM is gone. Returns the process exit code.
pub fn shim_main(root: &Path, id: &str, adopt: bool) -> i32 {
    mark("supervisor");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready_line(Err(Error::io("starting the shim runtime", e)));
            return 1;
        }
    };
    let dir = PodDir::new(root, id);
    let span = tracing::info_span!("pod", id = %id);
    match rt.block_on(supervise(dir, adopt).instrument(span)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "pod supervisor failed");
            1
        }
    }
}

/// Tells the spawner (reading our stdout) how the boot went, then detaches stdout.
fn ready_line(r: Result<()>) {
    let line = match r {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "error": e.to_wire() }),
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open fd; nothing else in this process holds
        // a reference to the old fd 1 except `stdout`, which is flushed above.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// A running guest process (container main process or exec session).
struct Proc {
    container: String,
    main: bool,
    log: Option<LogWriter>,
    /// Attached clients; bounded (see [`SUB_QUEUE`]).
    subs: Vec<mpsc::Sender<Frame>>,
    exit: Option<i32>,
}

struct Shared {
    rec: PodRecord,
    procs: HashMap<u32, Proc>,
    next_pid: u32,
    stopping: bool,
}

struct Shim {
    dir: PodDir,
    st: Mutex<Shared>,
    agent: Arc<Agent>,
    qmp: Arc<Qmp>,
    qemu: ProcRef,
    /// Set when QEMU has exited.
    qemu_gone: watch::Receiver<bool>,
    /// Ends the main loop with a final state.
    finish: mpsc::UnboundedSender<(SandboxState, Option<String>)>,
    /// Itself, for tasks started from event handlers.
    me: Mutex<std::sync::Weak<Shim>>,
}

impl Shim {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves consistent-enough data: keep going.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, st: &Shared) {
        if let Err(e) = self.dir.save(&st.rec) {
            tracing::warn!(error = %e, "saving pod record");
        }
    }
}

enum Qemu {
    Child(tokio::process::Child),
    Adopted(ProcRef),
}

impl Qemu {
    async fn wait(&mut self) {
        match self {
            Qemu::Child(c) => {
                let _ = c.wait().await;
            }
            Qemu::Adopted(p) => {
                while p.alive() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

async fn supervise(dir: PodDir, adopt: bool) -> Result<()> {
    let mut rec = match dir.load() {
        Ok(r) => r,
        Err(e) => {
            ready_line(Err(Error::Shim(format!("no pod record: {e}"))));
            return Err(e);
        }
    };
    rec.shim = ProcRef::of(std::process::id());
    let _ = std::fs::remove_file(dir.shim_sock());
    let listener = match UnixListener::bind(dir.shim_sock()) {
        Ok(l) => l,
        Err(e) => {
            let e = Error::io(format!("binding {}", dir.shim_sock().display()), e);
            if !adopt {
                ready_line(Err(Error::Shim(e.to_string())));
            }
            return Err(e);
        }
    };
    let booted = if adopt {
        // Nothing of a takeover needs root: become the pod's user before touching sockets
        // and files a previous supervisor (as that user) could have changed.
        match rec.jail.as_mut().map(|j| confine(&dir, j)) {
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot confine the supervisor; not taking over");
                return Err(e);
            }
            _ => reattach(&dir, &mut rec).await,
        }
    } else {
        boot(&dir, &mut rec).await
    };
    let (mut qemu, qmp, mut qmp_rx, agent, mut guest_rx, hello) = match booted {
        Ok(b) => b,
        Err(e) => {
            let e = match oom_reason(&rec) {
                Some(why) => Error::Qemu(why),
                None => e,
            };
            tracing::error!(error = %e, "pod failed to start");
            rec.state = SandboxState::Failed;
            rec.reason = Some(e.to_string());
            rec.shim = None;
            rec.qemu = None;
            if let (false, Some(j)) = (adopt, &rec.jail) {
                crate::jail::cgroup::remove(&j.cgroup_dirs);
            }
            let _ = dir.save(&rec);
            remove_sockets(&dir);
            if !adopt {
                ready_line(Err(e));
            }
            return Ok(());
        }
    };
    let mut setup = Ok(());
    if !adopt {
        if let Some(j) = rec.jail.as_mut() {
            setup = confine(&dir, j);
        }
    }
    // A restored clone got its network with the restore (`restore_info`).
    let restored = rec.boot.as_deref() == Some("template");
    if let (Ok(()), false, false, Some(net)) = (&setup, adopt, restored, &rec.config.network) {
        let hostname = rec.config.hostname.as_deref().unwrap_or(&rec.config.name);
        let cfg = network_config(hostname, &rec.config.dns_search, net);
        setup = configure_network(&agent, cfg).await;
        mark("network_configured");
    }
    if let Err(e) = setup {
        tracing::error!(error = %e, "pod set-up failed");
        if let Qemu::Child(c) = &mut qemu {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        rec.state = SandboxState::Failed;
        rec.reason = Some(e.to_string());
        rec.shim = None;
        rec.qemu = None;
        if let Some(j) = &rec.jail {
            crate::jail::cgroup::remove(&j.cgroup_dirs);
        }
        let _ = dir.save(&rec);
        remove_sockets(&dir);
        ready_line(Err(e));
        return Ok(());
    }
    if let (false, Some(_)) = (adopt, &rec.pool) {
        if rec.vm.warmup_image.is_some() && !rec.config.images.is_empty() {
            warm_up(&agent).await;
        }
        if rec.config.network.is_some() {
            warm_up_network(&agent).await;
        }
    }
    let qemu_ref = rec
        .qemu
        .ok_or_else(|| Error::Qemu("no QEMU process".into()))?;
    if let Some(j) = rec.jail.as_mut() {
        // The drives' throttling as QEMU applies it (the disk I/O limit's report).
        match qmp.execute("query-block", serde_json::Value::Null).await {
            Ok(v) => j.disk_throttle = crate::jail::disk::throttles_of(&v),
            Err(e) => tracing::warn!(error = %e, "query-block"),
        }
    }
    rec.state = SandboxState::Ready;
    rec.reason = None;
    if !adopt {
        mark("ready");
        rec.start_timeline.extend(std::mem::take(
            &mut *START_MARKS.lock().unwrap_or_else(|p| p.into_inner()),
        ));
    }
    rec.guest_kernel = Some(hello.kernel_release.clone());
    rec.guest_boot_ms = Some(hello.boot_time_ms);
    if !hello.agent_id.is_empty() {
        rec.guest_agent_id = Some(hello.agent_id.clone());
    }
    let mut procs = HashMap::new();
    let mut next_pid = 1;
    for c in &rec.containers {
        let pid = rec.process_ids.get(&c.config.name).copied().unwrap_or(0);
        next_pid = next_pid.max(pid + 1);
        procs.insert(
            pid,
            Proc {
                container: c.config.name.clone(),
                main: true,
                log: LogWriter::open(&c.log_path, rec.vm.log_limits).ok(),
                subs: Vec::new(),
                exit: c.exit_code,
            },
        );
    }
    if adopt {
        // Exec sessions of the previous supervisor have no client left; avoid their ids.
        for c in &hello.containers {
            for p in &c.processes {
                next_pid = next_pid.max(p.id.0 + 1);
            }
        }
    }
    dir.save(&rec)?;
    tracing::info!(
        accel = ?rec.accel,
        kernel = %hello.kernel_release,
        guest_boot_ms = hello.boot_time_ms,
        "pod ready"
    );
    if !adopt {
        ready_line(Ok(()));
    }

    let (gone_tx, gone_rx) = watch::channel(false);
    let (finish_tx, mut finish_rx) = mpsc::unbounded_channel();
    let shim = Arc::new(Shim {
        dir: dir.clone(),
        st: Mutex::new(Shared {
            rec,
            procs,
            next_pid,
            stopping: false,
        }),
        agent,
        qmp,
        qemu: qemu_ref,
        qemu_gone: gone_rx,
        finish: finish_tx,
        me: Mutex::new(std::sync::Weak::new()),
    });
    if let Ok(mut me) = shim.me.lock() {
        *me = Arc::downgrade(&shim);
    }
    if adopt {
        reconcile(&shim, &hello);
    }
    tokio::spawn(async move {
        qemu.wait().await;
        let _ = gone_tx.send(true);
    });
    {
        // The console log is QEMU's file (opened O_APPEND): capped by copying it aside and
        // truncating it, checked every second.
        let console = shim.dir.console();
        let limits = shim.lock().rec.vm.log_limits;
        let mut gone = shim.qemu_gone.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONSOLE_CHECK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = gone.changed() => return,
                }
                let c = console.clone();
                let _ = tokio::task::spawn_blocking(move || cap_console(&c, limits)).await;
            }
        });
    }
    let mut gone = shim.qemu_gone.clone();
    let period = Duration::from_secs(shim.lock().rec.vm.watchdog_secs.max(1));
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    let ping_failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut last_shutdown: Option<String> = None;
    let (final_state, reason) = loop {
        tokio::select! {
            conn = listener.accept() => {
                if let Ok((conn, _)) = conn {
                    let s = shim.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(s, conn).await {
                            tracing::debug!(error = %e, "client connection ended");
                        }
                    }.in_current_span());
                }
            }
            ev = guest_rx.recv() => match ev {
                Some(GuestEvent::Closed(_)) | None => {
                    let why = match ev { Some(GuestEvent::Closed(w)) => w, _ => "agent channel gone".into() };
                    if !shim.lock().stopping {
                        // QEMU exiting closes the port too; let the exit win if it is near.
                        let mut g = shim.qemu_gone.clone();
                        let _ = tokio::time::timeout(Duration::from_secs(2), g.wait_for(|g| *g)).await;
                    }
                    if shim.lock().stopping {
                        break wait_finish(&mut finish_rx).await;
                    }
                    if *shim.qemu_gone.borrow() || last_shutdown.is_some() {
                        break (SandboxState::Failed, Some(vm_exit_reason(&last_shutdown, &dir)));
                    }
                    break (SandboxState::Failed, Some(format!("lost the guest agent: {why}")));
                }
                Some(ev) => on_guest(&shim, ev),
            },
            ev = qmp_rx.recv() => {
                let ev = ev.unwrap_or(QmpEvent { name: "CLOSED".into(), data: serde_json::Value::Null });
                if ev.name == "SHUTDOWN" {
                    last_shutdown = ev.data.get("reason").and_then(|r| r.as_str()).map(str::to_string);
                }
                if let Some(r) = on_qmp(&shim, &ev) {
                    break r;
                }
            }
            _ = gone.wait_for(|g| *g) => {
                if shim.lock().stopping {
                    break wait_finish(&mut finish_rx).await;
                }
                break (SandboxState::Failed, Some(vm_exit_reason(&last_shutdown, &dir)));
            }
            f = finish_rx.recv() => {
                break f.unwrap_or((SandboxState::Failed, Some("supervisor lost its state".into())));
            }
            _ = tick.tick() => {
                if warm_clone_orphaned(&shim) {
                    tracing::info!("the warm clone's owner exited; stopping it");
                    break (SandboxState::Stopped, Some("warm clone's owner exited".into()));
                }
                if !dir.record().exists() {
                    // Someone removed the pod's state under us: nothing may outlive it.
                    break (SandboxState::Failed, Some("pod directory removed".into()));
                }
                let s = shim.clone();
                let fails = ping_failures.clone();
                tokio::spawn(async move { watchdog_check(s, fails, period * 2).await }.in_current_span());
            }
        }
    };
    // New clients get "refused" at once instead of waiting on a backlog nobody serves.
    drop(listener);
    teardown(&shim, final_state, reason).await;
    Ok(())
}

/// A warm clone still waiting for a pod whose owner (the node agent) has exited.
fn warm_clone_orphaned(shim: &Shim) -> bool {
    let st = shim.lock();
    st.rec.pool.is_some()
        && st
            .rec
            .pool_owner
            .as_deref()
            .and_then(|o| o.parse::<crate::template::ProcessRef>().ok())
            .is_some_and(|o| !o.alive())
}

/// Confines the supervisor of a jailed pod once what needs root is done (QEMU runs in its
/// namespaces and cgroups, the tap is open, the template memory received): the pod
/// directory becomes the pod uid's, the supervisor drops to that uid and gid with no
/// capabilities, then installs its seccomp filter. Failing to drop is fatal (the pod does
/// not start as a root supervisor); a seccomp filter that cannot be installed is reported
/// in `not_enforced`.
fn confine(dir: &PodDir, j: &mut crate::JailStatus) -> Result<()> {
    crate::jail::spawn::own_pod_dir(&dir.dir, j.uid, j.gid)?;
    crate::jail::spawn::drop_supervisor_to(j.uid, j.gid)?;
    j.supervisor_uid = Some(j.uid);
    j.supervisor_caps = Vec::new();
    j.not_enforced
        .retain(|w| !w.starts_with("supervisor capabilities"));
    match crate::jail::seccomp::supervisor_filters()
        .and_then(|f| crate::jail::seccomp::apply_to_process(&f))
    {
        Ok(()) => j.supervisor_seccomp = true,
        Err(e) => {
            tracing::warn!(error = %e, "jail: supervisor seccomp filter not installed");
            j.supervisor_seccomp = false;
            j.not_enforced
                .retain(|w| !w.starts_with("supervisor seccomp"));
            j.not_enforced.push(format!("supervisor seccomp: {e}"));
        }
    }
    Ok(())
}

/// Why the VM went away, from QEMU's last SHUTDOWN event (`guest-reset` after a guest panic,
/// since guests run with `panic=-1` and QEMU with `-no-reboot`).
fn vm_exit_reason(last_shutdown: &Option<String>, dir: &PodDir) -> String {
    let console = dir.console();
    match last_shutdown.as_deref() {
        Some("guest-reset") => format!(
            "VM reset itself (guest kernel panic or reboot; see {})",
            console.display()
        ),
        Some("guest-shutdown") => "guest powered off unexpectedly".into(),
        Some(r) => format!("VM shut down ({r})"),
        None => format!("VM exited unexpectedly (see {})", console.display()),
    }
}

/// How often the console log's size is checked.
const CONSOLE_CHECK: Duration = Duration::from_secs(1);

/// Keeps the console log within `limits.max_bytes`: a full file is copied to
/// `console.log.1` (replacing the previous copy) and truncated. QEMU writes with O_APPEND, so
/// its next write lands at the new end. Output written between the copy and the truncation
/// is lost; the disk used stays below 2 × `max_bytes` plus one second of output.
fn cap_console(path: &std::path::Path, limits: crate::logs::LogLimits) {
    if limits.max_bytes == 0 {
        return;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.len() <= limits.max_bytes {
        return;
    }
    let aside = path.with_extension("log.1");
    if limits.max_files > 1 {
        if let Err(e) = std::fs::copy(path, &aside) {
            tracing::warn!(error = %e, "copying the console log aside");
        }
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => {
            if let Err(e) = f.set_len(0) {
                tracing::warn!(error = %e, "truncating the console log");
            }
        }
        Err(e) => tracing::warn!(error = %e, "opening the console log"),
    }
}

async fn wait_finish(
    rx: &mut mpsc::UnboundedReceiver<(SandboxState, Option<String>)>,
) -> (SandboxState, Option<String>) {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(f)) => f,
        _ => (SandboxState::Stopped, None),
    }
}

type Booted = (
    Qemu,
    Arc<Qmp>,
    mpsc::UnboundedReceiver<QmpEvent>,
    Arc<Agent>,
    mpsc::UnboundedReceiver<GuestEvent>,
    h8s_guest::Hello,
);

/// How a VM starts (decided before QEMU runs).
pub(crate) enum Start<'a> {
    /// Boot the kernel.
    Cold,
    /// Boot a template VM whose RAM is `mem` (a memfd) and save it later through `state`.
    Template {
        mem: &'a std::fs::File,
        state: &'a std::fs::File,
    },
    /// Restore template `mem` + `state`, then make the clone the pod's with `info`.
    Restore {
        mem: &'a std::fs::File,
        state: &'a std::fs::File,
        info: Box<h8s_guest::RestoreInfo>,
    },
}

/// Starts the pod's VM: restored from its template when `run_sandbox` chose one and that
/// works, else booted. On failure nothing is left running.
async fn boot(dir: &PodDir, rec: &mut PodRecord) -> Result<Booted> {
    if let Some(key) = rec.template.clone() {
        let root = dir
            .dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let t = crate::template::TemplateDir::new(&root, &key);
        let files = (|| -> Result<(std::fs::File, std::fs::File)> {
            let open = |p: &Path| {
                std::fs::File::open(p).map_err(|e| Error::io(format!("opening {}", p.display()), e))
            };
            if !t.is_ready() {
                return Err(Error::FailedPrecondition("template not ready".into()));
            }
            Ok((crate::template::fetch_memory(&t)?, open(&t.state())?))
        })();
        let why = match files.and_then(|f| Ok((f, restore_info(&rec.config, rec.pool.is_none())?)))
        {
            Ok(((mem, state), info)) => {
                t.count_use();
                let start = Start::Restore {
                    mem: &mem,
                    state: &state,
                    info: Box::new(info),
                };
                match launch(dir, rec, start).await {
                    Ok(b) => {
                        rec.boot = Some("template".into());
                        return Ok(b);
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(template = %key, error = %why, "restoring the VM template failed; booting cold");
        if let Some(j) = &rec.jail {
            crate::jail::cgroup::remove(&j.cgroup_dirs);
        }
        rec.boot = Some(format!("cold (template {key}: {why})"));
        return launch(dir, rec, Start::Cold).await;
    }
    rec.boot = Some("cold".into());
    launch(dir, rec, Start::Cold).await
}

/// What makes a restored clone the pod's own before anything runs in it: fresh host entropy
/// for its kernel RNG (credited, then a forced CRNG reseed), the clock, its disks re-probed,
/// the pod's MAC and network (see [`connect_and_restore`]).
///
/// A warm clone (`for_pod` false) takes only the RNG and the clock at its restore: its pod,
/// and so the MAC and network, come later ([`assign`]).
fn restore_info(cfg: &crate::SandboxConfig, for_pod: bool) -> Result<h8s_guest::RestoreInfo> {
    let mut entropy = vec![0u8; 64];
    // SAFETY: getrandom writes at most `entropy.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(entropy.as_mut_ptr().cast(), entropy.len(), 0) };
    if n != entropy.len() as isize {
        return Err(Error::io(
            "reading host entropy",
            std::io::Error::last_os_error(),
        ));
    }
    let hostname = cfg.hostname.as_deref().unwrap_or(&cfg.name);
    Ok(h8s_guest::RestoreInfo {
        entropy,
        // Set again when it is sent (`connect_and_restore`).
        realtime_ns: realtime_ns(),
        rescan_disks: !cfg.images.is_empty() || !cfg.volumes.is_empty(),
        macs: cfg
            .network
            .iter()
            .filter(|_| for_pod)
            .map(|n| (super::qemu::TEMPLATE_MAC.to_string(), n.mac.clone()))
            .collect(),
        network: cfg
            .network
            .as_ref()
            .filter(|_| for_pod)
            .map(|n| network_config(hostname, &cfg.dns_search, n)),
        flush_images: false,
    })
}

/// The host's `CLOCK_REALTIME` in nanoseconds since the epoch.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Builds the VM template in `t` (see [`crate::template`]); returns its memory, sealed.
pub(crate) async fn build_template(
    root: &Path,
    t: &crate::template::TemplateDir,
) -> Result<std::fs::File> {
    let spec: crate::template::Spec = serde_json::from_slice(
        &std::fs::read(t.spec()).map_err(|e| Error::io("reading the template spec", e))?,
    )
    .map_err(|e| Error::Shim(format!("bad template spec: {e}")))?;
    let (accel, _) = HostVirt::probe().choose(spec.vm.accel, spec.vm.pvm_guest_kernel);
    if accel != spec.accel {
        return Err(Error::FailedPrecondition(format!(
            "the template is for {}, this host gives {accel}",
            spec.accel
        )));
    }
    let placeholder = |name: &str, len: u64| -> Result<()> {
        let f = std::fs::File::create(t.dir.join(name))
            .map_err(|e| Error::io(format!("creating placeholder {name}"), e))?;
        f.set_len(len)
            .map_err(|e| Error::io(format!("sizing placeholder {name}"), e))
    };
    // Sparse: the clones keep its capacity for their images (template::IMAGE_PLACEHOLDER_BYTES).
    placeholder("placeholder.img", crate::template::IMAGE_PLACEHOLDER_BYTES)?;
    if let Some(w) = &spec.vm.warmup_image {
        // The warm-up image at its start: warm clones run a container from it (the template
        // VM itself reads none of it).
        let copied = std::fs::File::open(w).and_then(|mut from| {
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .open(t.dir.join("placeholder.img"))?;
            std::io::copy(&mut from, &mut to)
        });
        if let Err(e) = copied {
            tracing::warn!(image = %w.display(), error = %e, "no warm-up image in the placeholder");
        }
    }
    for i in 0..spec.volumes_read_only.len() {
        placeholder(&format!("placeholder-vol{i}.img"), 4096)?;
    }
    let key = t
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = format!("template-{key}");
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let jailed = spec.vm.jail.enabled && unsafe { libc::geteuid() } == 0;
    let mem = crate::template::memfd(u64::from(spec.memory_mib) << 20)?;
    let state = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(t.state())
        .map_err(|e| Error::io(format!("creating {}", t.state().display()), e))?;
    let mut rec = PodRecord::new(&id, spec.placeholder_config(&t.dir), spec.vm.clone());
    if jailed {
        let uid = crate::jail::uids::allocate(root, spec.vm.jail.uid_range, &id)?;
        rec.jail = Some(crate::JailStatus {
            uid,
            gid: uid,
            ..Default::default()
        });
    }
    let dir = PodDir { dir: t.dir.clone() };
    let started = std::time::Instant::now();
    let result = async {
        let start = Start::Template {
            mem: &mem,
            state: &state,
        };
        let (mut qemu, qmp, _qmp_rx, agent, _guest_rx, hello) =
            launch(&dir, &mut rec, start).await?;
        // Let go of the placeholder disks: each clone then only binds its real ones.
        if let Err(e) = agent
            .request_timeout(GuestRequest::PrepareTemplate, Duration::from_secs(30))
            .await
        {
            tracing::warn!(error = %e, "preparing the template guest failed; clones rebind");
        }
        if super::qemu::has_balloon(&spec.vm, &rec.config) {
            // The guest reports its free memory for the first time 2 s after its balloon
            // driver registered, early in its boot. Saved before that, every clone would do
            // it (costing each ~0.2 MiB it writes doing so); saved after, the reported pages
            // are holes in the template's memory and the clones have nothing left to report.
            let blocks = |f: &std::fs::File| {
                use std::os::unix::fs::MetadataExt;
                f.metadata().map(|m| m.blocks() / 2048).ok()
            };
            let before = blocks(&mem);
            tokio::time::sleep_until((started + FIRST_FREE_PAGE_REPORT).into()).await;
            tracing::info!(
                before_mib = before,
                after_mib = blocks(&mem),
                "template memory after the guest's first free page report"
            );
        }
        tracing::info!(
            boot_ms = started.elapsed().as_millis() as u64,
            guest_boot_ms = hello.boot_time_ms,
            "template VM up; saving it"
        );
        let save = async {
            qmp.execute("stop", serde_json::Value::Null).await?;
            qmp.execute("migrate-set-capabilities", ignore_shared())
                .await?;
            // An outgoing fd: migration takes only a descriptor named over QMP.
            qmp.getfd("state", state.as_raw_fd()).await?;
            qmp.execute("migrate", serde_json::json!({ "uri": "fd:state" }))
                .await?;
            wait_migration(&qmp, Duration::from_secs(60)).await
        }
        .await;
        let _ = qmp.execute("quit", serde_json::Value::Null).await;
        if tokio::time::timeout(Duration::from_secs(10), qemu.wait())
            .await
            .is_err()
        {
            if let Qemu::Child(c) = &mut qemu {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
        save
    }
    .await;
    if let Some(j) = &rec.jail {
        crate::jail::release(root, &id, j, true);
    }
    remove_sockets(&dir);
    if spec.vm.warmup_image.is_none() {
        // Else kept: warm clones open it as their image disks (it holds the warm-up image,
        // ~2 MiB of a sparse file).
        let _ = std::fs::remove_file(t.dir.join("placeholder.img"));
    }
    for i in 0..spec.volumes_read_only.len() {
        let _ = std::fs::remove_file(t.dir.join(format!("placeholder-vol{i}.img")));
    }
    result?;
    crate::template::seal(&mem)?;
    Ok(mem)
}

/// How long after its start a template VM with the balloon runs before it is saved: the
/// guest's page reporting first runs 2 s (`PAGE_REPORTING_DELAY`) after the balloon driver
/// registers, during the kernel's boot (the minimal kernel's whole boot takes ~0.5 s under
/// TCG here). Saved later than that, the template's memory shrank by the reported pages
/// (42 → 38 MiB); a slower boot only leaves that first report to the clones.
const FIRST_FREE_PAGE_REPORT: Duration = Duration::from_millis(3000);

/// `migrate-set-capabilities` for templates: RAM stays in the (shared) memory file.
fn ignore_shared() -> serde_json::Value {
    serde_json::json!({
        "capabilities": [ { "capability": "x-ignore-shared", "state": true } ]
    })
}

/// Polls `query-migrate` until the migration (either side) completed.
async fn wait_migration(qmp: &Qmp, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let r = qmp
            .execute("query-migrate", serde_json::Value::Null)
            .await?;
        match r.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some(st @ ("failed" | "cancelled")) => {
                return Err(Error::Qemu(format!(
                    "migration {st}: {}",
                    r.get("error-desc").and_then(|e| e.as_str()).unwrap_or("")
                )))
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::BootTimeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts QEMU and waits for the guest agent's hello; on failure nothing is left running.
async fn launch(dir: &PodDir, rec: &mut PodRecord, start: Start<'_>) -> Result<Booted> {
    let mut settings = rec.vm.clone();
    if let Start::Restore { .. } = start {
        // QEMU would hold the whole kernel and initramfs in memory for nothing.
        let root = dir
            .dir
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| Error::Shim("pod directory without a state root".into()))?;
        settings.kernel = crate::template::kernel_stub(root)?;
    }
    let (accel, why) = HostVirt::probe().choose(settings.accel, settings.pvm_guest_kernel);
    tracing::info!(%accel, reason = why, "accelerator chosen");
    rec.accel = Some(accel);
    rec.accel_reason = Some(why.to_string());
    if settings.require_hardware_virt && accel == crate::Accel::Tcg {
        return Err(Error::FailedPrecondition(format!(
            "this node requires hardware virtualization, and the pod would run under TCG \
             ({why})"
        )));
    }
    // Everything QEMU uses but its kernel and initramfs is opened here and inherited.
    for p in [dir.qmp_sock(), dir.agent_sock()] {
        let _ = std::fs::remove_file(p);
    }
    let listen = |p: &Path| {
        std::os::unix::net::UnixListener::bind(p)
            .map_err(|e| Error::io(format!("binding {}", p.display()), e))
    };
    let qmp_listener = listen(&dir.qmp_sock())?;
    let agent_listener = listen(&dir.agent_sock())?;
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.console())
        .map_err(|e| Error::io(format!("opening {}", dir.console().display()), e))?;
    let mut images = Vec::new();
    for img in &rec.config.images {
        images.push(
            std::fs::File::open(&img.path)
                .map_err(|e| Error::io(format!("opening image {}", img.path.display()), e))?,
        );
    }
    let mut volumes: Vec<Vec<std::fs::File>> = Vec::new();
    for v in &rec.config.volumes {
        let mut files = Vec::new();
        if let Some((path, ro)) = drive_local_file(&v.drive) {
            // Read-write first (it names the fd set), then read-only: QEMU opens both ways.
            for write in [!ro, false].into_iter().skip(usize::from(ro)) {
                files.push(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(write)
                        .open(&path)
                        .map_err(|e| Error::io(format!("opening volume {}", path.display()), e))?,
                );
            }
        }
        volumes.push(files);
    }
    let owner = rec.jail.as_ref().map(|j| (j.uid, j.gid));
    let tap = match (&rec.config.network, &start) {
        // A template's NIC has no backend.
        (Some(_), Start::Template { .. }) => None,
        (Some(n), _) => Some(open_tap(&n.tap, owner)?),
        (None, _) => None,
    };
    let (mem, state_fd) = match &start {
        Start::Cold => (None, None),
        Start::Template { mem, state } | Start::Restore { mem, state, .. } => {
            (Some(*mem), Some(state.as_raw_fd()))
        }
    };
    // QEMU 7.2 takes memory files by path only: the memfd it inherits, through its /proc.
    let mem_for_qemu = |m: &&std::fs::File| -> std::path::PathBuf {
        format!("/proc/self/fd/{}", m.as_raw_fd()).into()
    };
    let mode = match (&start, &mem) {
        (Start::Template { .. }, Some(m)) => super::qemu::LaunchMode::Template {
            mem: mem_for_qemu(m),
        },
        (Start::Restore { .. }, Some(m)) => super::qemu::LaunchMode::Restore {
            mem: mem_for_qemu(m),
        },
        _ => super::qemu::LaunchMode::Cold,
    };
    let jail_proc = mem.is_some();
    // A clone's QEMU must not punch holes into the template's memory: its filter asks this
    // supervisor (see the filter), whose listener the child sends back over `listener_rx`.
    let (clone_filter, listener_rx) = match (&start, &mem) {
        (Start::Restore { .. }, Some(_)) => {
            let (rx, tx) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| Error::io("a socket pair for the seccomp listener", e))?;
            rx.set_nonblocking(true)
                .map_err(|e| Error::io("a socket pair for the seccomp listener", e))?;
            let prog = crate::jail::seccomp::clone_memory_filter()?;
            (Some((prog, tx)), Some(rx))
        }
        _ => (None, None),
    };
    let mut ep = VmEndpoints {
        kernel: settings.kernel.clone(),
        initrd: settings.initramfs.clone(),
        qmp_fd: qmp_listener.as_raw_fd(),
        agent_fd: agent_listener.as_raw_fd(),
        console_fd: console.as_raw_fd(),
        image_fds: images.iter().map(|f| f.as_raw_fd()).collect(),
        volume_fds: volumes
            .iter()
            .map(|fs| fs.iter().map(|f| f.as_raw_fd()).collect())
            .collect(),
        tap_fd: tap.as_ref().map(|f| f.as_raw_fd()),
        pod_dir: dir.dir.clone(),
        mode,
    };
    let mut keep = vec![ep.qmp_fd, ep.agent_fd, ep.console_fd];
    keep.extend(state_fd);
    keep.extend(mem.map(|f| f.as_raw_fd()));
    keep.extend(&ep.image_fds);
    keep.extend(ep.volume_fds.iter().flatten());
    keep.extend(ep.tap_fd);
    let qemu_log = dir.dir.join("qemu.log");
    let stderr = std::fs::File::create(&qemu_log)
        .map_err(|e| Error::io(format!("creating {}", qemu_log.display()), e))?;
    let mut program = settings.qemu.clone();
    // QEMU's absolute path, found once: what the jail binds and runs, and what the library
    // directory's `qemu.id` must name.
    let resolved = crate::jail::spawn::resolve_program(&settings.qemu);
    let lib_dir = qemu_lib_dir(&settings, &resolved);
    let mut cmd;
    // The cgroups' `cgroup.procs` stay open until QEMU has joined them.
    let mut cgroups = crate::jail::cgroup::PodCgroups::default();
    if let Some(jail) = rec.jail.as_mut() {
        let qemu = resolved?;
        let (plan, cg) = prepare_jail(
            dir,
            &settings,
            &rec.config,
            accel,
            jail,
            keep,
            jail_proc,
            &qemu,
            lib_dir,
        )?;
        cgroups = cg;
        ep.kernel = crate::jail::spawn::KERNEL.into();
        ep.initrd = crate::jail::spawn::INITRD.into();
        program = qemu;
        cmd = tokio::process::Command::new(&program);
        // SAFETY: `Plan::enter` and `filter_clone_memory` make only async-signal-safe system
        // calls on data prepared before the fork and allocate nothing (see their
        // documentation); `enter` sets `no_new_privs` last.
        unsafe {
            cmd.pre_exec(move || {
                plan.enter()?;
                filter_clone_memory(&clone_filter)
            });
        }
    } else {
        cmd = tokio::process::Command::new(&program);
        // SAFETY: fcntl(2), prctl(2) and `filter_clone_memory` (system calls on data made
        // before the fork) are async-signal-safe; the descriptors are ours, open until spawn.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if clone_filter.is_some() && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                filter_clone_memory(&clone_filter)
            });
        }
    }
    if let Some(d) = lib_dir {
        let inside = rec.jail.is_some().then_some(crate::jail::spawn::LIB_DIR);
        cmd.env("LD_LIBRARY_PATH", inside.map_or(d, std::path::Path::new));
    }
    dir.save(rec)?;
    super::qemu::without_huge_pages(accel);
    let args = qemu_args(&settings, accel, &rec.id, &rec.config, &ep);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let spawned = if let Some(jail) = rec.jail.as_mut() {
        // QEMU becomes PID 1 of a new PID namespace. A thread whose children go to another
        // PID namespace can no longer create threads (the kernel answers CLONE_THREAD with
        // EINVAL), so the unshare and the fork happen on a thread of their own: the
        // supervisor's runtime thread must still start blocking-pool threads later.
        let handle = tokio::runtime::Handle::current();
        let joined = std::thread::scope(|s| {
            s.spawn(|| {
                let _rt = handle.enter();
                let pid_ns = crate::jail::spawn::unshare_pid_for_children();
                (pid_ns, cmd.spawn())
            })
            .join()
        });
        match joined {
            Ok((pid_ns, spawned)) => {
                if let Err(e) = pid_ns {
                    jail.namespaces.retain(|n| n != "pid");
                    jail.not_enforced.push(format!("pid namespace: {e}"));
                    tracing::warn!(what = %format!("pid namespace: {e}"), "jail: not enforced");
                }
                spawned
            }
            Err(_) => Err(std::io::Error::other("the QEMU spawning thread panicked")),
        }
    } else {
        cmd.spawn()
    };
    // QEMU holds its own copies now; the listening sockets must be QEMU's alone, or a client
    // could connect to a socket whose VM is gone.
    drop((qmp_listener, agent_listener, console, images, volumes, tap));
    let cgroup_dirs = std::mem::take(&mut cgroups.dirs);
    drop(cgroups);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            crate::jail::cgroup::remove(&cgroup_dirs);
            let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            return Err(Error::Qemu(format!(
                "cannot run {}: {e} {}",
                program.display(),
                log.trim()
            )));
        }
    };
    mark("qemu_spawned");
    if let (Some(rx), Some(m)) = (&listener_rx, mem) {
        // The child sent it before exec, which spawn waited for.
        let served = crate::util::recv_fd(rx)
            .map_err(|e| Error::io("receiving the seccomp listener", e))
            .and_then(|l| crate::jail::seccomp::serve_clone_memory(l.into(), m));
        if let Err(e) = served {
            tracing::warn!(error = %e, "a clone's freed memory will not go back to the host");
        }
    }
    let pid = child.id().unwrap_or(0);
    rec.qemu = ProcRef::of(pid);
    dir.save(rec)?;
    tracing::info!(pid, jailed = rec.jail.is_some(), "QEMU started");
    let timeout = Duration::from_secs(settings.boot_timeout_secs);
    let exited = |qemu_log: &Path| {
        let log = std::fs::read_to_string(qemu_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::Qemu(format!("exited during boot: {}", tail.join("; ").trim()))
    };
    let restore = match (&start, state_fd) {
        (Start::Restore { info, .. }, Some(fd)) => Some((fd, info.as_ref().clone())),
        _ => None,
    };
    let result = tokio::select! {
        r = async {
            match restore {
                Some((fd, info)) => connect_and_restore(dir, timeout, fd, info).await,
                None => connect_and_hello(dir, timeout, false).await,
            }
        } => match r {
            // The sockets listen before QEMU reads its arguments: a QEMU that dies at once
            // resets the connection. Its own words say more.
            Err(e) => match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                Ok(_) => Err(exited(&qemu_log)),
                Err(_) => Err(e),
            },
            ok => ok,
        },
        _ = child.wait() => Err(exited(&qemu_log)),
        _ = tokio::time::sleep(timeout) => Err(Error::BootTimeout(timeout)),
    };
    match result {
        Ok((qmp, qmp_rx, agent, guest_rx, hello)) => {
            Ok((Qemu::Child(child), qmp, qmp_rx, agent, guest_rx, hello))
        }
        Err(e) => {
            // QEMU is our child: kill it by handle (its PID cannot have been reused).
            let _ = child.start_kill();
            let _ = child.wait().await;
            rec.qemu = None;
            Err(e)
        }
    }
}

/// The library directory QEMU (`qemu`, resolved) is started with
/// ([`crate::VmSettings::qemu_lib_dir`]), if set-up made it for this QEMU; why not goes to the
/// log.
fn qemu_lib_dir<'a>(
    settings: &'a crate::VmSettings,
    qemu: &Result<std::path::PathBuf>,
) -> Option<&'a std::path::Path> {
    let dir = settings.qemu_lib_dir.as_deref()?;
    let checked = match qemu {
        Ok(qemu) => super::qemu::check_lib_dir(dir, qemu),
        Err(e) => Err(e.to_string()),
    };
    match checked {
        Ok(()) => Some(dir),
        Err(why) => {
            tracing::warn!(dir = %dir.display(), why = %why, "QEMU loads the system's libraries");
            None
        }
    }
}

/// Builds the pod's jail: its cgroups (whatever the host offers; what it does not is logged
/// and recorded), the new root's contents (QEMU's executable `qemu`, absolute, and its library
/// directory `lib_dir`), the namespaces.
#[allow(clippy::too_many_arguments)]
fn prepare_jail(
    dir: &PodDir,
    settings: &crate::VmSettings,
    cfg: &crate::SandboxConfig,
    accel: crate::Accel,
    jail: &mut crate::JailStatus,
    keep: Vec<std::os::fd::RawFd>,
    proc_pids: bool,
    qemu: &std::path::Path,
    lib_dir: Option<&std::path::Path>,
) -> Result<(crate::jail::spawn::Plan, crate::jail::cgroup::PodCgroups)> {
    use crate::jail::{cgroup, spawn};
    jail.not_enforced.clear();
    // Volumes the supervisor cannot hand over as files (rbd:) are opened by QEMU itself: it
    // needs the host's network, its Ceph configuration and the keyring, which is root's.
    let remote: Vec<&str> = cfg
        .volumes
        .iter()
        .filter(|v| drive_local_file(&v.drive).is_none())
        .map(|v| v.drive.as_str())
        .collect();
    // Each opens its own Ceph client inside QEMU (librados' threads and buffers, librbd's
    // cache): its memory counts beyond the configured overhead.
    let overhead = settings
        .jail
        .memory_overhead_mib
        .unwrap_or_else(|| crate::jail::default_overhead_mib(accel, settings.tcg_tb_size_mib))
        .saturating_add(crate::jail::REMOTE_DRIVE_OVERHEAD_MIB * remote.len() as u32);
    // Block I/O on the host disks behind the pod's local drives (QEMU throttles every drive).
    let volume_files: Vec<std::path::PathBuf> = cfg
        .volumes
        .iter()
        .filter_map(|v| drive_local_file(&v.drive).map(|(p, _)| p))
        .collect();
    let io_devices = crate::jail::disk::backing_devices(
        cfg.images
            .iter()
            .map(|i| i.path.as_path())
            .chain(volume_files.iter().map(|p| p.as_path())),
    );
    let limits = cgroup::Limits::for_pod(cfg.memory_mib, cfg.cpus, overhead).with_io(
        settings.disk_io.for_pod(cfg.disk_bps, cfg.disk_iops),
        io_devices,
    );
    let id = dir
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cg = match cgroup::create(&cgroup::host_hierarchies(), &id, &limits) {
        Ok(cg) => cg,
        Err(e) => {
            let mut cg = cgroup::PodCgroups::default();
            cg.not_enforced.push(format!("cgroups: {e}"));
            cg
        }
    };
    jail.cgroups = cg.enforced.clone();
    jail.cgroup_dirs = cg.dirs.clone();
    jail.not_enforced.extend(cg.not_enforced.iter().cloned());
    let own_net = remote.is_empty();
    // A QEMU installed outside /usr reads its firmware from its own data directories.
    let mut extra_ro_dirs = settings.qemu_data.clone();
    if !own_net {
        jail.not_enforced.push(
            "network namespace: a volume drive (rbd:) reaches its storage over the host network"
                .into(),
        );
        jail.not_enforced.push(
            "own uid: QEMU opens rbd volumes with the host's Ceph keyring (root-only), so it \
             stays uid 0, without capabilities"
                .into(),
        );
        for d in &remote {
            extra_ro_dirs.extend(ceph_conf_dir(d));
        }
        extra_ro_dirs.push("/etc/ceph".into());
    }
    let root = dir.dir.join("vmroot");
    match std::fs::create_dir(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", root.display()), e)),
    }
    let plan = spawn::Plan::new(&spawn::Contents {
        ids: own_net.then_some((jail.uid, jail.gid)),
        extra_ro_dirs,
        lib_dir,
        root: &root,
        qemu,
        kernel: &settings.kernel,
        initrd: &settings.initramfs,
        proc_pids,
        kvm: accel == crate::Accel::Kvm,
        own_net,
        keep,
        cgroups: &cg.procs,
    })?;
    jail.namespaces = plan.namespaces.clone();
    for what in &jail.not_enforced {
        tracing::warn!(what = %what, "jail: not enforced");
    }
    tracing::info!(
        uid = jail.uid,
        namespaces = %jail.namespaces.join(","),
        cgroups = %jail.cgroups.iter().map(|l| format!("{}(v{})", l.limit, l.version)).collect::<Vec<_>>().join(" "),
        "jail ready"
    );
    Ok((plan, cg))
}

/// In the child between fork and exec: installs a clone's memory filter, if any, and sends
/// its listener to the supervisor. Async-signal-safe: system calls only, no allocation.
fn filter_clone_memory(
    f: &Option<(seccompiler::BpfProgram, std::os::unix::net::UnixStream)>,
) -> std::io::Result<()> {
    if let Some((prog, to_parent)) = f {
        let l = crate::jail::seccomp::install_with_listener(prog)?;
        crate::util::send_fd(to_parent, l)?;
        // SAFETY: `l` is the listener just made in this process; the parent has its copy.
        unsafe { libc::close(l) };
    }
    Ok(())
}

/// The directory of the `conf=` file of an `rbd:` drive (QEMU's rbd options are `:`-separated).
fn ceph_conf_dir(drive: &str) -> Option<std::path::PathBuf> {
    let conf = drive
        .split([':', ','])
        .find_map(|o| o.strip_prefix("conf="))?;
    Path::new(conf).parent().map(Path::to_path_buf)
}

/// Gives the guest its interface (found by MAC), address, route, DNS and hostname.
async fn configure_network(agent: &Agent, cfg: h8s_guest::NetworkConfig) -> Result<()> {
    agent
        .request_timeout(GuestRequest::ConfigureNetwork(cfg), Duration::from_secs(30))
        .await
        .map(drop)
}

/// The guest's network configuration: its interface (found by MAC), address, route, DNS and
/// hostname.
fn network_config(
    hostname: &str,
    dns_search: &[String],
    net: &crate::api::NetworkAttachment,
) -> h8s_guest::NetworkConfig {
    h8s_guest::NetworkConfig {
        interfaces: vec![h8s_guest::Interface {
            mac: net.mac.clone(),
            name: Some("eth0".into()),
            addresses: vec![net.address.clone()],
            gateway: net.gateway.clone(),
            mtu: Some(net.mtu),
        }],
        dns_servers: net.dns.clone(),
        dns_search: dns_search.to_vec(),
        hostname: Some(hostname.to_string()),
        cluster_dns: net.cluster_dns.clone(),
    }
}

/// Finds a running pod VM again after the previous supervisor died.
async fn reattach(dir: &PodDir, rec: &mut PodRecord) -> Result<Booted> {
    let q = rec
        .qemu
        .filter(ProcRef::alive)
        .ok_or_else(|| Error::FailedPrecondition("the pod's VM is not running".into()))?;
    let (qmp, qmp_rx, agent, guest_rx, hello) =
        connect_and_hello(dir, Duration::from_secs(20), true).await?;
    tracing::info!(pid = q.pid, "reattached to running VM");
    Ok((Qemu::Adopted(q), qmp, qmp_rx, agent, guest_rx, hello))
}

type Connected = (
    Arc<Qmp>,
    mpsc::UnboundedReceiver<QmpEvent>,
    Arc<Agent>,
    mpsc::UnboundedReceiver<GuestEvent>,
    h8s_guest::Hello,
);

/// Restores a template VM started with `-incoming defer`: loads its device state from
/// `state_fd`, connects the agent port, lets the VM run and makes it the pod's with `info`
/// (one round trip: [`Request::Restored`](h8s_guest::Request::Restored) answers with the
/// agent's `Hello`; a guest that predates that is asked to greet and given its network
/// separately).
async fn connect_and_restore(
    dir: &PodDir,
    timeout: Duration,
    state_fd: std::os::fd::RawFd,
    info: h8s_guest::RestoreInfo,
) -> Result<Connected> {
    let (qmp, qmp_rx) = Qmp::connect(&dir.qmp_sock(), Duration::from_secs(10)).await?;
    mark("qmp_connected");
    qmp.execute("migrate-set-capabilities", ignore_shared())
        .await?;
    // By name, as for the outgoing side (QEMU 7.2 parses numeric `fd:` only on some paths).
    qmp.getfd("state", state_fd).await?;
    qmp.execute("migrate-incoming", serde_json::json!({ "uri": "fd:state" }))
        .await?;
    wait_migration(&qmp, timeout).await?;
    mark("migrated");
    let (agent, guest_rx) = Agent::connect(&dir.agent_sock(), Duration::from_secs(10)).await?;
    mark("agent_connected");
    qmp.execute("cont", serde_json::Value::Null).await?;
    mark("resumed");
    let network = info.network.clone();
    let info = h8s_guest::RestoreInfo {
        realtime_ns: realtime_ns(),
        ..info
    };
    let sent = crate::api::StartMark::now("");
    let reply = agent
        .request_timeout(GuestRequest::Restored(info), timeout)
        .await?;
    let (agent_id, hello, steps) = restored_reply(reply, sent.at_us)?;
    for m in steps {
        mark_at(&m.phase, m.at_us);
    }
    mark("restored");
    if let Some(mut h) = hello {
        h.agent_id = agent_id;
        return Ok((qmp, qmp_rx, agent, guest_rx, h));
    }
    // A guest that predates the Hello in the answer: the template was saved with its builder
    // connected, so it may see no change of host at all; ask for the Hello.
    let greeter = agent.clone();
    tokio::spawn(async move {
        if let Err(e) = greeter.request_timeout(GuestRequest::Greet, timeout).await {
            tracing::warn!(error = %e, "asking the restored guest to greet failed");
        }
    });
    let (qmp, qmp_rx, agent, guest_rx, mut h) =
        wait_hello(dir, timeout, qmp, qmp_rx, agent, guest_rx, true).await?;
    if let Some(net) = network {
        configure_network(&agent, net).await?;
    }
    h.agent_id = agent_id;
    Ok((qmp, qmp_rx, agent, guest_rx, h))
}

/// The guest's answer to `Restored` sent at `sent_at_us`: its new agent id, its `Hello` (a
/// guest that predates it sends none) and its own steps as start marks (`guest_<step>`),
/// placed after the request was sent by the durations the guest measured.
fn restored_reply(
    reply: Reply,
    sent_at_us: u64,
) -> Result<(String, Option<h8s_guest::Hello>, Vec<crate::api::StartMark>)> {
    let Reply::Restored {
        agent_id,
        hello,
        steps_us,
    } = reply
    else {
        return Err(Error::Agent(format!(
            "unexpected answer to Restored: {reply:?}"
        )));
    };
    let mut at = sent_at_us;
    let steps = steps_us
        .iter()
        .map(|(step, us)| {
            at += us;
            crate::api::StartMark {
                phase: format!("guest_{step}"),
                at_us: at,
            }
        })
        .collect();
    Ok((agent_id, hello, steps))
}

/// Connects QMP and the agent port and waits for the guest's `Hello`. A booting guest greets
/// on its own; a running one (`greet`, after the previous supervisor died) is asked to, since
/// it cannot always tell that a new host connected.
async fn connect_and_hello(dir: &PodDir, timeout: Duration, greet: bool) -> Result<Connected> {
    let (qmp, qmp_rx) = Qmp::connect(&dir.qmp_sock(), Duration::from_secs(10)).await?;
    mark("qmp_connected");
    let (agent, guest_rx) = Agent::connect(&dir.agent_sock(), Duration::from_secs(10)).await?;
    mark("agent_connected");
    if greet {
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = agent.request_timeout(GuestRequest::Greet, timeout).await {
                tracing::warn!(error = %e, "asking the guest to greet again failed");
            }
        });
    }
    wait_hello(dir, timeout, qmp, qmp_rx, agent, guest_rx, false).await
}

/// Waits for the guest agent's `Hello`; a guest that stops, panics or shuts down first fails
/// (`restored`: the pause a restore starts in and the `cont` after it are expected).
async fn wait_hello(
    dir: &PodDir,
    timeout: Duration,
    qmp: Arc<Qmp>,
    mut qmp_rx: mpsc::UnboundedReceiver<QmpEvent>,
    agent: Arc<Agent>,
    mut guest_rx: mpsc::UnboundedReceiver<GuestEvent>,
    restored: bool,
) -> Result<Connected> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            ev = guest_rx.recv() => match ev {
                Some(GuestEvent::Hello(h)) => {
                    if h.version != h8s_guest::PROTOCOL_VERSION {
                        return Err(Error::Agent(format!(
                            "guest speaks protocol {}, host {}",
                            h.version,
                            h8s_guest::PROTOCOL_VERSION
                        )));
                    }
                    mark("hello");
                    return Ok((qmp, qmp_rx, agent, guest_rx, h));
                }
                Some(GuestEvent::Closed(why)) | Some(GuestEvent::Event(Event::Log { message: why, .. })) => {
                    tracing::info!(%why, "guest before hello");
                    if guest_rx.is_closed() { return Err(Error::Agent(why)); }
                }
                Some(_) => {}
                None => return Err(Error::Agent("agent channel closed before hello".into())),
            },
            ev = qmp_rx.recv() => {
                if let Some(ev) = ev {
                    if (ev.name == "STOP" && !restored)
                        || matches!(ev.name.as_str(), "GUEST_PANICKED" | "SHUTDOWN")
                    {
                        return Err(Error::Qemu(format!(
                            "guest {} during boot (see {})",
                            ev.name.to_lowercase(),
                            dir.console().display()
                        )));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Err(Error::BootTimeout(timeout)),
        }
    }
}

/// After a reattach, folds what the guest reports into the record.
fn reconcile(shim: &Shim, hello: &h8s_guest::Hello) {
    let mut st = shim.lock();
    let st = &mut *st;
    for info in &hello.containers {
        let Some(c) = st
            .rec
            .containers
            .iter_mut()
            .find(|c| c.config.name == info.id)
        else {
            continue;
        };
        if let Some(p) = info.processes.iter().find(|p| p.id == info.process_id) {
            match p.state {
                ProcessState::Running { .. } => c.state = ContainerState::Running,
                ProcessState::Exited(s) => {
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(s.shell_code());
                    if let Some(pr) = st.procs.get_mut(&info.process_id.0) {
                        pr.exit = Some(s.shell_code());
                    }
                }
                ProcessState::Created => c.state = ContainerState::Created,
            }
        }
    }
    shim.save(st);
}

fn on_guest(shim: &Shim, ev: GuestEvent) {
    match ev {
        GuestEvent::Output {
            process,
            channel,
            data,
        } => {
            let mut st = shim.lock();
            if process.0 == 1 {
                mark_rec(&mut st.rec, "first_output");
            }
            if let Some(p) = st.procs.get_mut(&process.0) {
                let (stream, kind) = match channel {
                    Channel::Stderr => (LogStream::Stderr, Kind::Stderr),
                    _ => (LogStream::Stdout, Kind::Stdout),
                };
                if let Some(log) = &mut p.log {
                    log.write(stream, &data);
                }
                let f = Frame { kind, data };
                // A client this far behind is cut off rather than queued for without
                // bound: the host's memory is not the guest's to fill.
                p.subs.retain(|s| s.try_send(f.clone()).is_ok());
            }
        }
        GuestEvent::Event(Event::Exited { process, status }) => {
            let code = status.shell_code();
            let mut st = shim.lock();
            let st = &mut *st;
            let Some(p) = st.procs.get_mut(&process.0) else {
                return;
            };
            p.exit = Some(code);
            if let Some(log) = &mut p.log {
                log.flush();
            }
            let f = Frame::json(Kind::Exit, &wire::Exit { code });
            for s in p.subs.drain(..) {
                send_exit(s, f.clone());
            }
            if p.main {
                let name = p.container.clone();
                if let Some(c) = st.rec.containers.iter_mut().find(|c| c.config.name == name) {
                    c.state = ContainerState::Exited;
                    c.exit_code = Some(code);
                    c.finished_at = Some(rfc3339_nano(SystemTime::now()));
                }
                tracing::info!(container = %name, code, "container exited");
                mark_rec(&mut st.rec, "container_exited");
                shim.save(st);
                let all_done = st.rec.config.stop_with_containers
                    && !st.stopping
                    && st
                        .rec
                        .containers
                        .iter()
                        .all(|c| c.state == ContainerState::Exited);
                if all_done {
                    if let Some(me) = shim.me.lock().ok().and_then(|m| m.upgrade()) {
                        tokio::spawn(
                            async move {
                                tracing::info!("all containers exited; stopping the pod");
                                if stop_pod(&me, Duration::ZERO).await.is_ok() {
                                    let _ = me.finish.send((SandboxState::Stopped, None));
                                }
                            }
                            .in_current_span(),
                        );
                    }
                }
            } else {
                st.procs.remove(&process.0);
            }
        }
        GuestEvent::Event(Event::Log { level, message }) => {
            tracing::info!(?level, %message, "guest agent");
        }
        GuestEvent::Hello(h) => {
            tracing::info!(kernel = %h.kernel_release, "guest agent said hello again");
        }
        GuestEvent::Closed(_) => {}
    }
}

/// QMP events that end the pod: a paused (QEMU pauses some crashed guests) or panicked VM.
fn on_qmp(shim: &Shim, ev: &QmpEvent) -> Option<(SandboxState, Option<String>)> {
    let stopping = shim.lock().stopping;
    match ev.name.as_str() {
        "STOP" if !stopping => Some((
            SandboxState::Failed,
            Some("VM paused (crashed guest?); stopped by the watchdog".into()),
        )),
        "GUEST_PANICKED" => Some((SandboxState::Failed, Some("guest kernel panicked".into()))),
        "SHUTDOWN" | "CLOSED" => {
            tracing::info!(event = %ev.name, data = %ev.data, "VM shutting down");
            None
        }
        _ => None,
    }
}

async fn watchdog_check(
    shim: Arc<Shim>,
    failures: Arc<std::sync::atomic::AtomicU32>,
    ping_timeout: Duration,
) {
    use std::sync::atomic::Ordering;
    if shim.lock().stopping {
        return;
    }
    let status = tokio::time::timeout(ping_timeout, shim.qmp.status()).await;
    if let Ok(Ok(status)) = status {
        if matches!(
            status.as_str(),
            "paused" | "guest-panicked" | "internal-error" | "io-error"
        ) {
            let _ = shim.finish.send((
                SandboxState::Failed,
                Some(format!("VM {status}; stopped by the watchdog")),
            ));
            return;
        }
    }
    match shim
        .agent
        .request_timeout(GuestRequest::Ping, ping_timeout)
        .await
    {
        Ok(_) => failures.store(0, Ordering::Relaxed),
        Err(e) => {
            let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(error = %e, n, "guest agent did not answer a ping");
            if n >= PING_FAILURES_FATAL {
                let _ = shim.finish.send((
                    SandboxState::Failed,
                    Some("guest agent stopped answering; stopped by the watchdog".into()),
                ));
            }
        }
    }
}

/// Ends the pod: makes sure QEMU is gone, records the final state, removes the sockets.
async fn teardown(shim: &Shim, state: SandboxState, reason: Option<String>) {
    if !*shim.qemu_gone.borrow() {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            shim.qmp.execute("quit", serde_json::Value::Null),
        )
        .await;
        let mut gone = shim.qemu_gone.clone();
        if tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g))
            .await
            .is_err()
        {
            tracing::warn!(pid = shim.qemu.pid, "QEMU ignored quit; killing it");
            shim.qemu.kill(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g)).await;
        }
    }
    let mut st = shim.lock();
    let st = &mut *st;
    for p in st.procs.values_mut() {
        if let Some(log) = &mut p.log {
            log.flush();
        }
        // Dropping the senders ends attached clients' streams without an exit code.
        p.subs.clear();
    }
    for c in &mut st.rec.containers {
        if matches!(c.state, ContainerState::Running | ContainerState::Created) {
            c.state = if state == SandboxState::Stopped && c.state == ContainerState::Created {
                ContainerState::Exited
            } else {
                ContainerState::Unknown
            };
            c.finished_at
                .get_or_insert_with(|| rfc3339_nano(SystemTime::now()));
        }
    }
    if state == SandboxState::Failed {
        tracing::error!(reason = reason.as_deref().unwrap_or(""), "pod failed");
    } else {
        tracing::info!("pod stopped");
    }
    let reason = match (state, oom_reason(&st.rec)) {
        (SandboxState::Failed, Some(why)) => Some(why),
        _ => reason,
    };
    if let Some(j) = &st.rec.jail {
        // QEMU is gone (reaped, or not ours and dead): its cgroups are empty.
        crate::jail::cgroup::remove(&j.cgroup_dirs);
    }
    st.rec.state = state;
    st.rec.reason = reason;
    st.rec.qemu = None;
    st.rec.shim = None;
    shim.save(st);
    remove_sockets(&shim.dir);
}

/// The reason when the kernel's OOM killer ended QEMU inside the pod's memory cgroup.
fn oom_reason(rec: &PodRecord) -> Option<String> {
    let j = rec.jail.as_ref()?;
    if !crate::jail::cgroup::oom_killed(&j.cgroups) {
        return None;
    }
    let limit = j
        .cgroups
        .iter()
        .find(|l| l.controller == "memory")
        .map(|l| l.limit.clone())
        .unwrap_or_default();
    Some(format!(
        "QEMU was killed by the out-of-memory killer: the pod's cgroup memory limit \
         ({limit}: guest RAM {} MiB plus overhead) was exceeded",
        rec.config.memory_mib
    ))
}

fn remove_sockets(dir: &PodDir) {
    for p in [dir.qmp_sock(), dir.agent_sock(), dir.shim_sock()] {
        let _ = std::fs::remove_file(p);
    }
}

/// Serves one client connection.
async fn serve(shim: Arc<Shim>, mut conn: UnixStream) -> Result<()> {
    let Some(first) = wire::read_frame(&mut conn).await? else {
        return Ok(());
    };
    let req: Request = first.parse()?;
    match req {
        Request::Attach { name } => {
            let r = attach_sub(&shim, &name);
            match r {
                Ok((pid, rx)) => {
                    respond(&mut conn, Ok(Response::Ok)).await?;
                    stream(shim, conn, pid, rx).await
                }
                Err(e) => respond(&mut conn, Err(e)).await,
            }
        }
        Request::Exec { container, config } => match start_exec(&shim, &container, config).await {
            Ok((pid, rx)) => {
                respond(&mut conn, Ok(Response::Ok)).await?;
                stream(shim, conn, pid, rx).await
            }
            Err(e) => respond(&mut conn, Err(e)).await,
        },
        Request::PortForward { port } => match start_port_forward(&shim, port).await {
            Ok((pid, rx)) => {
                respond(&mut conn, Ok(Response::Ok)).await?;
                stream(shim, conn, pid, rx).await
            }
            Err(e) => respond(&mut conn, Err(e)).await,
        },
        Request::StopPod { timeout_secs } => {
            let r = stop_pod(&shim, Duration::from_secs(timeout_secs)).await;
            let ok = r.is_ok();
            respond(&mut conn, r.map(|_| Response::Ok)).await?;
            if ok {
                let _ = shim.finish.send((SandboxState::Stopped, None));
            }
            Ok(())
        }
        Request::Assign { config, timeline } => {
            let r = assign(&shim, &conn, *config, timeline).await;
            respond(&mut conn, r.map(|()| Response::Ok)).await
        }
        other => {
            let r = handle(&shim, other).await;
            respond(&mut conn, r).await
        }
    }
}

/// The warm-up container's process id: far above the ids pods get (1, 2, …).
const WARMUP_PROCESS: ProcessId = ProcessId(u32::MAX - 1);

/// Runs one container from the warm-up image (the image placeholder's start) in a warm
/// clone and removes it: create, start, exit and removal run once here, so the clone's pod
/// finds their guest code already translated (TCG translates per process). The process is
/// `/bin/true`, not a shell: the warm-up image's own code is never a pod's (another file),
/// and every translation made here stays resident in the clone's cache. A failure only
/// leaves the clone cold.
async fn warm_up(agent: &Agent) {
    let id = "h8s-warmup".to_string();
    let spec = ContainerSpec {
        id: id.clone(),
        rootfs: BlockDevice::Serial("img0".into()),
        writable: WritableLayer::Default,
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: None,
            user: None,
            tty: false,
            stdin: false,
            tty_size: None,
        },
        process_id: WARMUP_PROCESS,
        hostname: None,
        mounts: Vec::new(),
        read_only_root: false,
    };
    let t = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let ran = async {
        agent
            .request_timeout(GuestRequest::CreateContainer(spec), t)
            .await?;
        agent
            .request_timeout(
                GuestRequest::StartContainer {
                    container: id.clone(),
                },
                t,
            )
            .await?;
        agent
            .request_timeout(
                GuestRequest::Wait {
                    process: WARMUP_PROCESS,
                },
                t,
            )
            .await
    }
    .await;
    let removed = agent
        .request_timeout(GuestRequest::RemoveContainer { container: id }, t)
        .await;
    match ran.and(removed) {
        Ok(_) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "warm-up container ran"
        ),
        Err(e) => tracing::warn!(error = %e, "the warm-up container failed; the clone stays cold"),
    }
}

/// The network part of a warm clone's warm-up: its NIC configured as `eth0` and up (no
/// address; the tap behind it is on no bridge), and the in-pod Service proxy's namespace and
/// veth pair made by an empty Service table — what a pod's network configuration and first
/// Service table then find done or translated. The guest takes the NIC down again when the pod
/// gives it its MAC (`Restored`), so it comes up under the pod's MAC.
async fn warm_up_network(agent: &Agent) {
    let t = Duration::from_secs(30);
    let nic = h8s_guest::NetworkConfig {
        interfaces: vec![h8s_guest::Interface {
            mac: super::qemu::TEMPLATE_MAC.into(),
            name: Some("eth0".into()),
            addresses: Vec::new(),
            gateway: None,
            mtu: Some(1500),
        }],
        dns_servers: Vec::new(),
        dns_search: Vec::new(),
        hostname: None,
        cluster_dns: None,
    };
    let services = h8s_guest::ServiceUpdate {
        version: h8s_guest::SERVICES_VERSION,
        generation: 0,
        full: true,
        services: Vec::new(),
        removed: Vec::new(),
        pods: Vec::new(),
        removed_pods: Vec::new(),
    };
    let started = std::time::Instant::now();
    let r = async {
        agent
            .request_timeout(GuestRequest::ConfigureNetwork(nic), t)
            .await?;
        agent
            .request_timeout(GuestRequest::UpdateServices(services), t)
            .await
    }
    .await;
    match r {
        Ok(_) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "network warmed up"
        ),
        Err(e) => tracing::warn!(error = %e, "the network warm-up failed"),
    }
}

/// Makes this warm clone the pod `config`: the pod's image files (attached to the byte that
/// follows the request on `conn`) go behind the image disks (`add-fd`, a new file node,
/// `blockdev-reopen` of the disk's format node onto it: the device, its throttling and the
/// guest's view stay), then the guest gets fresh entropy, the clock, the pod's MAC and network
/// and drops its image disks' cached blocks (`Restored` again). The record becomes the pod's.
async fn assign(
    shim: &Shim,
    conn: &UnixStream,
    config: crate::SandboxConfig,
    mut timeline: Vec<crate::api::StartMark>,
) -> Result<()> {
    timeline.push(crate::api::StartMark::now("assign"));
    let files = loop {
        conn.readable()
            .await
            .map_err(|e| Error::io("waiting for the pod's image files", e))?;
        match crate::util::recv_fds(conn.as_raw_fd()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => break r.map_err(|e| Error::io("receiving the pod's image files", e))?,
        }
    };
    {
        let st = shim.lock();
        let cur = &st.rec.config;
        if st.rec.pool.is_none() {
            return Err(Error::FailedPrecondition("not a warm clone".into()));
        }
        if files.len() != config.images.len()
            || config.images.len() != cur.images.len()
            || config.network.is_some() != cur.network.is_some()
            || !config.volumes.is_empty()
            || (config.memory_mib, config.cpus) != (cur.memory_mib, cur.cpus)
        {
            return Err(Error::InvalidArgument(format!(
                "pod {:?} does not fit this warm clone ({} image files sent)",
                config.name,
                files.len()
            )));
        }
    }
    for (i, f) in files.iter().enumerate() {
        let set = shim.qmp.add_fd(f.as_raw_fd()).await?;
        let node = format!("img{i}-pod");
        shim.qmp
            .execute(
                "blockdev-add",
                serde_json::json!({
                    "driver": "file", "node-name": node,
                    "filename": format!("/dev/fdset/{set}"), "read-only": true,
                }),
            )
            .await?;
        shim.qmp
            .execute(
                "blockdev-reopen",
                serde_json::json!({ "options": [{
                    "driver": "raw", "node-name": format!("img{i}-fmt"),
                    "file": node, "read-only": true,
                }]}),
            )
            .await?;
    }
    timeline.push(crate::api::StartMark::now("images_swapped"));
    let info = h8s_guest::RestoreInfo {
        flush_images: true,
        // Bound at the clone's restore; a second rescan would unbind and bind them all.
        rescan_disks: false,
        realtime_ns: realtime_ns(),
        ..restore_info(&config, true)?
    };
    let sent = crate::api::StartMark::now("");
    let reply = shim
        .agent
        .request_timeout(GuestRequest::Restored(info), Duration::from_secs(30))
        .await?;
    let (agent_id, _, steps) = restored_reply(reply, sent.at_us)?;
    timeline.extend(steps);
    timeline.push(crate::api::StartMark::now("ready"));
    timeline.truncate(MAX_START_MARKS);
    let mut st = shim.lock();
    tracing::info!(pod = %config.name, "warm clone assigned");
    st.rec.config = config;
    st.rec.created_at = rfc3339_nano(SystemTime::now());
    st.rec.pool = None;
    st.rec.boot = Some("warm clone".into());
    st.rec.guest_agent_id = Some(agent_id);
    st.rec.start_timeline = timeline;
    shim.save(&st);
    Ok(())
}

async fn respond(conn: &mut UnixStream, r: Result<Response>) -> Result<()> {
    let resp = match r {
        Ok(r) => r,
        Err(e) => Response::Err(e.to_wire()),
    };
    wire::write_frame(conn, &Frame::json(Kind::Response, &resp)).await
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        kind: "container",
        id: name.to_string(),
    }
}

async fn handle(shim: &Shim, req: Request) -> Result<Response> {
    match req {
        Request::Status => Ok(Response::Status(Box::new(shim.lock().rec.status()))),
        Request::CreateContainer { config } => create_container(shim, config).await,
        Request::StartContainer { name } => start_container(shim, &name).await,
        Request::StopContainer { name, timeout_secs } => {
            let pid = main_pid(shim, &name)?;
            stop_process(shim, pid, Duration::from_secs(timeout_secs)).await;
            Ok(Response::Ok)
        }
        Request::RemoveContainer { name } => {
            let pid = main_pid(shim, &name)?;
            {
                let st = shim.lock();
                let c = st.rec.containers.iter().find(|c| c.config.name == name);
                if c.is_some_and(|c| c.state == ContainerState::Running) {
                    return Err(Error::FailedPrecondition(format!(
                        "container {name:?} is running; stop it first"
                    )));
                }
            }
            shim.agent
                .request_timeout(
                    GuestRequest::RemoveContainer {
                        container: name.clone(),
                    },
                    Duration::from_secs(30),
                )
                .await?;
            let mut st = shim.lock();
            st.procs.remove(&pid);
            st.rec.containers.retain(|c| c.config.name != name);
            st.rec.process_ids.remove(&name);
            shim.save(&st);
            crate::logs::remove_log(&shim.dir.log_path(&name));
            Ok(Response::Ok)
        }
        Request::Probe { spec } => {
            let limit = Duration::from_millis(spec.timeout_ms) + Duration::from_secs(10);
            shim.agent
                .request_timeout(GuestRequest::Probe(spec), limit)
                .await?;
            Ok(Response::Ok)
        }
        Request::WriteVolume { content } => {
            shim.agent
                .request_timeout(GuestRequest::WriteVolume(content), Duration::from_secs(30))
                .await?;
            Ok(Response::Ok)
        }
        Request::UpdateServices { update } => {
            shim.agent
                .request_timeout(
                    GuestRequest::UpdateServices(update),
                    Duration::from_secs(30),
                )
                .await?;
            Ok(Response::Ok)
        }
        Request::StorageUsage => {
            match shim
                .agent
                .request_timeout(GuestRequest::StorageUsage, Duration::from_secs(30))
                .await?
            {
                Reply::StorageUsage(u) => Ok(Response::StorageUsage(u)),
                other => Err(Error::Agent(format!(
                    "unexpected answer to a storage usage request: {other:?}"
                ))),
            }
        }
        Request::Attach { .. }
        | Request::Exec { .. }
        | Request::PortForward { .. }
        | Request::Assign { .. }
        | Request::StopPod { .. } => Err(Error::InvalidArgument(
            "streaming request on a plain call".into(),
        )),
    }
}

fn main_pid(shim: &Shim, name: &str) -> Result<u32> {
    shim.lock()
        .rec
        .process_ids
        .get(name)
        .copied()
        .ok_or_else(|| not_found(name))
}

/// `uid[:gid]` or `name[:group]` to the protocol's user.
fn parse_user(s: &str) -> User {
    let id_or_name = |x: &str| match x.parse::<u32>() {
        Ok(n) => IdOrName::Id(n),
        Err(_) => IdOrName::Name(x.to_string()),
    };
    let mut it = s.splitn(2, ':');
    User {
        user: id_or_name(it.next().unwrap_or("0")),
        group: it.next().map(id_or_name),
        additional_gids: Vec::new(),
    }
}

async fn create_container(shim: &Shim, config: ContainerConfig) -> Result<Response> {
    let (pid, spec, log_path) = {
        let mut st = shim.lock();
        if st.stopping {
            return Err(Error::FailedPrecondition("pod is stopping".into()));
        }
        config.validate(&st.rec.config)?;
        if st.rec.process_ids.contains_key(&config.name) {
            return Err(Error::AlreadyExists {
                kind: "container",
                id: config.name.clone(),
            });
        }
        let disk = st
            .rec
            .config
            .images
            .iter()
            .position(|i| i.name == config.image)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("image {:?} not attached", config.image))
            })?;
        let pid = st.next_pid;
        st.next_pid += 1;
        let spec = ContainerSpec {
            id: config.name.clone(),
            rootfs: BlockDevice::Serial(format!("img{disk}")),
            writable: match config.writable_limit_bytes {
                Some(n) => WritableLayer::Tmpfs {
                    size_bytes: Some(n),
                },
                None => WritableLayer::Default,
            },
            process: ProcessSpec {
                args: config.command.clone(),
                env: config.env.clone(),
                working_dir: config.working_dir.clone(),
                user: config.user.as_deref().map(parse_user),
                tty: config.tty,
                stdin: config.stdin,
                tty_size: config.tty_size,
            },
            process_id: ProcessId(pid),
            hostname: Some(
                st.rec
                    .config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| st.rec.config.name.clone()),
            ),
            mounts: config.mounts.clone(),
            read_only_root: config.read_only_root,
        };
        // Reserve the name while the guest works on it.
        st.rec.process_ids.insert(config.name.clone(), pid);
        (pid, spec, shim.dir.log_path(&config.name))
    };
    let r = shim
        .agent
        .request_timeout(GuestRequest::CreateContainer(spec), Duration::from_secs(60))
        .await;
    let mut st = shim.lock();
    if let Err(e) = r {
        st.rec.process_ids.remove(&config.name);
        return Err(e);
    }
    let log = LogWriter::open(&log_path, st.rec.vm.log_limits)?;
    st.procs.insert(
        pid,
        Proc {
            container: config.name.clone(),
            main: true,
            log: Some(log),
            subs: Vec::new(),
            exit: None,
        },
    );
    tracing::info!(container = %config.name, "container created");
    mark_rec(&mut st.rec, "container_created");
    st.rec.containers.push(ContainerStatus {
        config,
        state: ContainerState::Created,
        exit_code: None,
        created_at: rfc3339_nano(SystemTime::now()),
        started_at: None,
        finished_at: None,
        reason: None,
        log_path,
    });
    shim.save(&st);
    Ok(Response::Ok)
}

async fn start_container(shim: &Shim, name: &str) -> Result<Response> {
    {
        let st = shim.lock();
        let c = st
            .rec
            .containers
            .iter()
            .find(|c| c.config.name == name)
            .ok_or_else(|| not_found(name))?;
        if c.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {name:?} was already started"
            )));
        }
    }
    let r = shim
        .agent
        .request_timeout(
            GuestRequest::StartContainer {
                container: name.to_string(),
            },
            Duration::from_secs(60),
        )
        .await;
    let mut st = shim.lock();
    let st = &mut *st;
    let Some(c) = st.rec.containers.iter_mut().find(|c| c.config.name == name) else {
        return Err(not_found(name));
    };
    let now = rfc3339_nano(SystemTime::now());
    match r {
        Ok(_) => {
            // The process may already have exited (its event came first): keep that.
            if c.state == ContainerState::Created {
                c.state = ContainerState::Running;
            }
            c.started_at = Some(now);
            tracing::info!(container = %name, "container started");
            mark_rec(&mut st.rec, "container_started");
            shim.save(st);
            Ok(Response::Ok)
        }
        Err(e) => {
            let code = match &e {
                Error::CommandNotFound(_) => 127,
                Error::CommandNotExecutable(_) => 126,
                _ => 128,
            };
            c.state = ContainerState::Exited;
            c.exit_code = Some(code);
            c.finished_at = Some(now);
            c.reason = Some(e.to_string());
            if let Some(pid) = st.rec.process_ids.get(name) {
                if let Some(p) = st.procs.get_mut(pid) {
                    p.exit = Some(code);
                    let f = Frame::json(Kind::Exit, &wire::Exit { code });
                    for s in p.subs.drain(..) {
                        send_exit(s, f.clone());
                    }
                }
            }
            shim.save(st);
            Err(e)
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`, as Kubernetes stops a container.
async fn stop_process(shim: &Shim, pid: u32, grace: Duration) {
    let exited = |shim: &Shim| shim.lock().procs.get(&pid).is_none_or(|p| p.exit.is_some());
    for (sig, wait) in [
        (libc::SIGTERM, grace),
        (libc::SIGKILL, Duration::from_secs(5)),
    ] {
        if exited(shim) {
            return;
        }
        let _ = shim
            .agent
            .request_timeout(
                GuestRequest::Signal {
                    process: ProcessId(pid),
                    signal: sig,
                },
                Duration::from_secs(10),
            )
            .await;
        let deadline = tokio::time::Instant::now() + wait;
        while !exited(shim) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn stop_pod(shim: &Shim, grace: Duration) -> Result<()> {
    let running: Option<Vec<u32>> = {
        let mut st = shim.lock();
        if st.stopping {
            None
        } else {
            st.stopping = true;
            Some(
                st.procs
                    .iter()
                    .filter(|(_, p)| p.main && p.exit.is_none())
                    .map(|(id, _)| *id)
                    .collect(),
            )
        }
    };
    let Some(running) = running else {
        // Someone else is stopping it: just wait for the VM to go.
        let mut gone = shim.qemu_gone.clone();
        let _ = tokio::time::timeout(Duration::from_secs(30), gone.wait_for(|g| *g)).await;
        return Ok(());
    };
    tracing::info!(containers = running.len(), "stopping pod");
    let stops = running.iter().map(|&pid| stop_process(shim, pid, grace));
    futures::future::join_all(stops).await;
    let mut gone = shim.qemu_gone.clone();
    if !has_writable_disk(&shim.lock().rec.config) {
        // Nothing in the VM outlives it (images are read-only, the containers' writable
        // layers and volumes written by the agent live in guest memory): QEMU is killed at
        // once instead of the guest shutting down, whose code a template's clone would
        // translate for the first time (and QMP's `quit` took 10-35 ms more: QEMU reads a
        // command a byte per main-loop turn).
        shim.qemu.kill(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g)).await;
        return Ok(());
    }
    // A writable disk: the guest syncs and unmounts it before it powers off.
    let _ = shim
        .agent
        .request_timeout(GuestRequest::Shutdown, Duration::from_secs(5))
        .await;
    if tokio::time::timeout(Duration::from_secs(10), gone.wait_for(|g| *g))
        .await
        .is_err()
    {
        tracing::warn!("guest did not power off; quitting QEMU");
        let _ = shim.qmp.execute("quit", serde_json::Value::Null).await;
        if tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g))
            .await
            .is_err()
        {
            shim.qemu.kill(libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g)).await;
        }
    }
    Ok(())
}

/// Whether the pod has a disk the guest writes to (a volume not attached read-only; a drive
/// QEMU opens itself, such as `rbd:`, counts as writable).
fn has_writable_disk(cfg: &crate::SandboxConfig) -> bool {
    cfg.volumes
        .iter()
        .any(|v| drive_local_file(&v.drive).is_none_or(|(_, ro)| !ro))
}

type Sub = (u32, mpsc::Receiver<Frame>);

/// Frames queued per attached client (each at most 64 KiB of output): past this the client
/// is cut off. The guest protocol has no per-process flow control yet, so a slow client
/// cannot slow the guest down without stalling the VM's other streams.
const SUB_QUEUE: usize = 1024;

/// Hands a client the exit frame, waiting a while if its queue is full.
fn send_exit(s: mpsc::Sender<Frame>, f: Frame) {
    if let Err(mpsc::error::TrySendError::Full(f)) = s.try_send(f) {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), s.send(f)).await;
        });
    }
}

fn attach_sub(shim: &Shim, name: &str) -> Result<Sub> {
    let mut st = shim.lock();
    let pid = *st
        .rec
        .process_ids
        .get(name)
        .ok_or_else(|| not_found(name))?;
    let p = st.procs.get_mut(&pid).ok_or_else(|| not_found(name))?;
    let (tx, rx) = mpsc::channel(SUB_QUEUE);
    if let Some(code) = p.exit {
        let _ = tx.try_send(Frame::json(Kind::Exit, &wire::Exit { code }));
    } else {
        p.subs.push(tx);
    }
    Ok((pid, rx))
}

async fn start_exec(shim: &Shim, container: &str, config: ExecConfig) -> Result<Sub> {
    if config.command.is_empty() || config.command[0].is_empty() {
        return Err(Error::InvalidArgument("exec needs a command".into()));
    }
    let (pid, rx, env) = {
        let mut st = shim.lock();
        let c = st
            .rec
            .containers
            .iter()
            .find(|c| c.config.name == container)
            .ok_or_else(|| not_found(container))?;
        if c.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {container:?} is not running"
            )));
        }
        let mut env = c.config.env.clone();
        env.extend(config.env.iter().cloned());
        let pid = st.next_pid;
        st.next_pid += 1;
        let (tx, rx) = mpsc::channel(SUB_QUEUE);
        st.procs.insert(
            pid,
            Proc {
                container: container.to_string(),
                main: false,
                log: None,
                subs: vec![tx],
                exit: None,
            },
        );
        (pid, rx, env)
    };
    let (workdir, user) = {
        let st = shim.lock();
        let c = st
            .rec
            .containers
            .iter()
            .find(|c| c.config.name == container);
        (
            c.and_then(|c| c.config.working_dir.clone()),
            c.and_then(|c| c.config.user.clone()),
        )
    };
    let spec = ExecSpec {
        container: container.to_string(),
        process_id: ProcessId(pid),
        process: ProcessSpec {
            args: config.command,
            env,
            working_dir: workdir,
            user: user.as_deref().map(parse_user),
            tty: config.tty,
            stdin: config.stdin,
            tty_size: config.size,
        },
    };
    match shim
        .agent
        .request_timeout(GuestRequest::Exec(spec), Duration::from_secs(60))
        .await
    {
        Ok(Reply::Started { .. }) | Ok(_) => Ok((pid, rx)),
        Err(e) => {
            shim.lock().procs.remove(&pid);
            Err(e)
        }
    }
}

/// Opens a connection to a port inside the VM; it streams like an exec session whose
/// stdin goes to the port and whose stdout comes from it.
async fn start_port_forward(shim: &Shim, port: u16) -> Result<Sub> {
    if port == 0 {
        return Err(Error::InvalidArgument("port 0".into()));
    }
    let (pid, rx) = {
        let mut st = shim.lock();
        let pid = st.next_pid;
        st.next_pid += 1;
        let (tx, rx) = mpsc::channel(SUB_QUEUE);
        st.procs.insert(
            pid,
            Proc {
                container: String::new(),
                main: false,
                log: None,
                subs: vec![tx],
                exit: None,
            },
        );
        (pid, rx)
    };
    match shim
        .agent
        .request_timeout(
            GuestRequest::PortForward {
                process_id: ProcessId(pid),
                port,
            },
            Duration::from_secs(30),
        )
        .await
    {
        Ok(_) => Ok((pid, rx)),
        Err(e) => {
            shim.lock().procs.remove(&pid);
            Err(e)
        }
    }
}

/// Pumps one attach/exec stream: process output to the client, client input to the guest.
async fn stream(
    shim: Arc<Shim>,
    conn: UnixStream,
    pid: u32,
    mut rx: mpsc::Receiver<Frame>,
) -> Result<()> {
    let (mut rd, mut wr) = conn.into_split();
    let out = async move {
        while let Some(f) = rx.recv().await {
            let last = f.kind == Kind::Exit;
            wire::write_frame(&mut wr, &f).await?;
            if last {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let process = ProcessId(pid);
    let agent = shim.agent.clone();
    let input = async move {
        while let Some(f) = wire::read_frame(&mut rd).await? {
            let r = match f.kind {
                Kind::Stdin => agent.stdin(process, &f.data).await,
                Kind::StdinClose => agent
                    .request_timeout(
                        GuestRequest::CloseStdin { process },
                        Duration::from_secs(10),
                    )
                    .await
                    .map(drop),
                Kind::Resize => {
                    let r: wire::Resize = f.parse()?;
                    agent
                        .request_timeout(
                            GuestRequest::ResizeTty {
                                process,
                                rows: r.rows,
                                cols: r.cols,
                            },
                            Duration::from_secs(10),
                        )
                        .await
                        .map(drop)
                }
                Kind::Signal => {
                    let s: wire::SignalMsg = f.parse()?;
                    agent
                        .request_timeout(
                            GuestRequest::Signal {
                                process,
                                signal: s.signal,
                            },
                            Duration::from_secs(10),
                        )
                        .await
                        .map(drop)
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "forwarding client input");
            }
        }
        Ok::<(), Error>(())
    };
    tokio::select! {
        r = out => r,
        // The client went away; the process keeps running (like a detached docker exec).
        _ = input => Ok(()),
    }
}
