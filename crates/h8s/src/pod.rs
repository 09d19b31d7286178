//! The hyperctl-style pod commands: run, exec, ps, logs, stop, rm (and the hidden pod-shim).
//!
//! Exit codes follow `docker run`: the container's own code; 125 when the runtime fails
//! (bad image, VM does not boot), 126 when the command cannot be executed, 127 when it is
//! not found.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use h8s_runtime::{
    ContainerConfig, Error as RtError, ExecConfig, ImageDisk, Runtime, RuntimeConfig,
    SandboxConfig, SandboxState, SandboxStatus, ShimCommand, VmSettings,
};

#[path = "pod_term.rs"]
mod term;

/// Options every pod command shares.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Runtime state directory (pods, sockets, logs).
    #[arg(long, env = "H8S_ROOT", global = true)]
    root: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum PodCommand {
    /// Run a command in a new pod VM (its own kernel).
    Run(RunArgs),
    /// Run a command in a running pod's container.
    Exec(ExecArgs),
    /// List pods.
    Ps(PsArgs),
    /// Print a pod's container logs.
    Logs(LogsArgs),
    /// Stop pods (containers get SIGTERM, then SIGKILL; the VM powers off).
    Stop(StopArgs),
    /// Remove stopped pods (with -f, running ones too).
    Rm(RmArgs),
    /// The per-pod supervisor (started by `run`; not for direct use).
    #[command(hide = true)]
    PodShim(ShimArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    jail: crate::jail::JailArgs,
    /// Remove the pod when its container exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the pod id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Pod name (default: image name plus a random suffix).
    #[arg(long)]
    name: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Guest memory (e.g. 256M, 1G; plain numbers are MiB).
    #[arg(short = 'm', long, default_value = "256M")]
    memory: String,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Attach the pod to this network (from `h8s net`).
    #[arg(long)]
    network: Option<String>,
    /// Boot the VM from scratch instead of restoring a VM template (the pod then shares no
    /// kernel layout with other pods; slower).
    #[arg(long)]
    cold: bool,
    /// Working directory in the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (uid[:gid] or name) in the container.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// The image: a name in the image store, or a path to an erofs root filesystem file.
    image: String,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    common: Common,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Container (default: the pod's first app container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Pod name or id.
    pod: String,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    common: Common,
    /// Show stopped and failed pods too.
    #[arg(short = 'a', long)]
    all: bool,
    /// Print JSON (the runtime's status objects).
    #[arg(long)]
    json: bool,
    /// Print ids only.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    common: Common,
    /// Keep printing new output until the container exits.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    timestamps: bool,
    /// Container (default: the pod's first app container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pod name or id.
    pod: String,
}

#[derive(clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(short = 't', long, default_value_t = 10)]
    time: u64,
    /// Pod names or ids.
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    common: Common,
    /// Stop running pods first.
    #[arg(short = 'f', long)]
    force: bool,
    /// Pod names or ids.
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(clap::Args)]
pub struct ShimArgs {
    #[arg(long)]
    root: PathBuf,
    /// Reattach to a running VM whose supervisor died.
    #[arg(long)]
    adopt: bool,
    /// Build the VM template named by ID instead (started by `run` in the background).
    #[arg(long)]
    build_template: bool,
    /// With --build-template: the process (`PID:START_TICKS`) whose exit retires the
    /// template and ends its holder (the node agent that asked for it).
    #[arg(long)]
    template_owner: Option<h8s_runtime::ProcessRef>,
    id: String,
}

/// An error with the exit code `h8s` should end with.
#[derive(Debug)]
struct Exit(i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

pub fn run(cmd: PodCommand) -> anyhow::Result<()> {
    if let PodCommand::PodShim(a) = cmd {
        let code = if a.build_template {
            h8s_runtime::template_main(&a.root, &a.id, a.template_owner)
        } else {
            h8s_runtime::shim_main(&a.root, &a.id, a.adopt)
        };
        std::process::exit(code);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = rt.block_on(async {
        let r = match cmd {
            PodCommand::Run(a) => cmd_run(a).await,
            PodCommand::Exec(a) => cmd_exec(a).await,
            PodCommand::Ps(a) => cmd_ps(a).await.map(|_| 0),
            PodCommand::Logs(a) => cmd_logs(a).await.map(|_| 0),
            PodCommand::Stop(a) => cmd_stop(a).await.map(|_| 0),
            PodCommand::Rm(a) => cmd_rm(a).await.map(|_| 0),
            PodCommand::PodShim(_) => Ok(0),
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                    return *code;
                }
                eprintln!("h8s: {e:#}");
                1
            }
        }
    });
    // Leave without waiting for the blocking stdin reader thread.
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn runtime(common: &Common) -> anyhow::Result<Runtime> {
    runtime_jailed(common, None)
}

fn runtime_jailed(
    common: &Common,
    jail: Option<&crate::jail::JailArgs>,
) -> anyhow::Result<Runtime> {
    let root = common
        .root
        .clone()
        .unwrap_or_else(RuntimeConfig::default_root);
    let mut vm = VmSettings::from_env()?;
    if let Some(j) = jail {
        j.apply(&mut vm);
    }
    let program = std::env::current_exe().context("locating the h8s binary")?;
    Ok(Runtime::new(RuntimeConfig {
        root,
        images: None,
        vm,
        shim: ShimCommand::beside(program, "pod-shim"),
    }))
}

/// `256M`, `1G`, `512` (MiB) → MiB.
fn parse_memory(s: &str) -> anyhow::Result<u32> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1.0 / 1024.0),
        Some('M') => (&s[..s.len() - 1], 1.0),
        Some('G') => (&s[..s.len() - 1], 1024.0),
        _ => (s, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("memory {s:?} is not a size like 256M or 1G"))?;
    Ok((n * mult).round() as u32)
}

/// A name from an image argument: last path or repository component, without tag/extension.
fn base_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split([':', '@']).next().unwrap_or(last);
    let last = last.strip_suffix(".erofs").unwrap_or(last);
    let mut n: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(40);
    let n = n.trim_start_matches(['-', '_', '.']).to_string();
    if n.is_empty() {
        "pod".into()
    } else {
        n
    }
}

/// What the CLI knows about an image before the pod starts.
struct ResolvedImage {
    disk: ImageDisk,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
}

async fn resolve_image(arg: &str) -> anyhow::Result<ResolvedImage> {
    let path = PathBuf::from(arg);
    let looks_like_path = arg.starts_with('/') || arg.starts_with("./") || arg.ends_with(".erofs");
    if looks_like_path && !path.is_file() {
        anyhow::bail!("image file {arg} does not exist");
    }
    if path.is_file() {
        // A bare root filesystem has no config: sensible defaults.
        return Ok(ResolvedImage {
            disk: ImageDisk {
                name: base_name(arg),
                path: std::fs::canonicalize(&path).unwrap_or(path),
            },
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            workdir: None,
            user: None,
        });
    }
    pod_image::resolve(arg).await
}

#[path = "pod_image.rs"]
mod pod_image;

fn rt_exit_code(e: &RtError) -> i32 {
    match e {
        RtError::CommandNotFound(_) => 127,
        RtError::CommandNotExecutable(_) => 126,
        _ => 125,
    }
}

async fn cmd_run(a: RunArgs) -> anyhow::Result<i32> {
    let runtime = runtime_jailed(&a.common, Some(&a.jail))?;
    let fail = |msg: String, code: i32| -> anyhow::Result<i32> {
        eprintln!("h8s: {msg}");
        Ok(code)
    };
    let img = match resolve_image(&a.image).await {
        Ok(i) => i,
        Err(e) => return fail(format!("{e:#}"), 125),
    };
    let memory_mib = match parse_memory(&a.memory) {
        Ok(m) => m,
        Err(e) => return fail(format!("{e:#}"), 125),
    };
    let base = base_name(&a.image);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", base, &short_rand()));
    let mut sandbox = SandboxConfig::new(name);
    sandbox.memory_mib = memory_mib;
    sandbox.cpus = a.cpus;
    sandbox.images.push(img.disk.clone());
    sandbox.stop_with_containers = true;
    sandbox.cold_boot = a.cold;
    if let Some(net) = &a.network {
        match pod_net::attachment(net, &sandbox.name) {
            Ok(att) => sandbox.network = Some(att),
            Err(e) => {
                pod_net::detach(&sandbox.name);
                return fail(format!("{e:#}"), 125);
            }
        }
    }
    let pod_name = sandbox.name.clone();
    let networked = sandbox.network.is_some();
    let tty = a.tty;
    let size = if tty { term::size() } else { None };
    let container = ContainerConfig {
        name: base.clone(),
        image: img.disk.name.clone(),
        command: a.command.clone(),
        env: a.env.clone(),
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        tty,
        stdin: a.interactive,
        tty_size: size,
        init: false,
        mounts: Vec::new(),
        read_only_root: false,
        writable_limit_bytes: None,
    }
    .with_image_defaults(
        &img.entrypoint,
        &img.cmd,
        !a.command.is_empty(),
        &img.env,
        img.workdir.as_deref(),
        img.user.as_deref(),
    );
    let undo_net = || {
        if networked {
            pod_net::detach(&pod_name);
        }
    };
    if let Err(e) = container.validate(&sandbox) {
        undo_net();
        return fail(e.to_string(), 125);
    }
    // Ctrl-C while the pod starts must not leave a VM behind: note it, finish the step that
    // runs, then remove the pod and exit as an interrupted docker run does (130).
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut int, mut term) = (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        );
        let flag = interrupted.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let was_interrupted = || interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let id = match runtime.run_sandbox(sandbox).await {
        Ok(id) => id,
        Err(e) => {
            undo_net();
            return fail(format!("cannot start pod: {e}"), rt_exit_code(&e));
        }
    };
    // From here on, a failure must not leave the pod behind.
    let cleanup = |runtime: Runtime, id: String| async move {
        let _ = runtime.stop_sandbox(&id, Duration::ZERO).await;
        let _ = runtime.remove_sandbox(&id, true).await;
        undo_net();
    };
    if was_interrupted() {
        cleanup(runtime.clone(), id).await;
        return fail("interrupted; pod removed".into(), 130);
    }
    if let Err(e) = runtime.create_container(&id, container.clone()).await {
        cleanup(runtime.clone(), id).await;
        return fail(format!("cannot create container: {e}"), rt_exit_code(&e));
    }
    if was_interrupted() {
        cleanup(runtime.clone(), id).await;
        return fail("interrupted; pod removed".into(), 130);
    }
    if a.detach {
        if let Err(e) = runtime.start_container(&id, &container.name).await {
            cleanup(runtime.clone(), id).await;
            return fail(format!("cannot start container: {e}"), rt_exit_code(&e));
        }
        println!("{id}");
        return Ok(0);
    }
    // From now on signals go to the container (see `term::pump`).
    watcher.abort();
    let stream = match runtime.attach(&id, &container.name).await {
        Ok(s) => s,
        Err(e) => {
            cleanup(runtime.clone(), id).await;
            return fail(format!("cannot attach: {e}"), 125);
        }
    };
    let raw = if tty { term::RawMode::enter() } else { None };
    if let Err(e) = runtime.start_container(&id, &container.name).await {
        drop(raw);
        cleanup(runtime.clone(), id).await;
        return fail(format!("cannot start container: {e}"), rt_exit_code(&e));
    }
    let code = term::pump(stream, a.interactive, tty).await;
    drop(raw);
    let code = match code {
        Ok(Some(code)) => code,
        Ok(None) | Err(_) => {
            let st = runtime.sandbox_status(&id).await.ok();
            let why = st
                .and_then(|s| s.reason)
                .unwrap_or_else(|| "the pod ended without an exit code".into());
            eprintln!("h8s: {why}");
            125
        }
    };
    let _ = runtime.stop_sandbox(&id, Duration::ZERO).await;
    if a.rm {
        if let Err(e) = runtime.remove_sandbox(&id, true).await {
            eprintln!("h8s: removing pod: {e}");
        }
        undo_net();
    }
    Ok(code)
}

fn short_rand() -> String {
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The container a command means: the named one, or the pod's first app container.
fn pick_container(st: &SandboxStatus, want: Option<&str>) -> anyhow::Result<String> {
    if let Some(w) = want {
        return Ok(w.to_string());
    }
    st.containers
        .iter()
        .find(|c| !c.config.init)
        .or(st.containers.first())
        .map(|c| c.config.name.clone())
        .ok_or_else(|| anyhow::anyhow!("pod {} has no containers", st.config.name))
}

async fn cmd_exec(a: ExecArgs) -> anyhow::Result<i32> {
    let runtime = runtime(&a.common)?;
    let id = runtime.resolve(&a.pod)?;
    let _ = runtime.recover(&id).await;
    let st = runtime.sandbox_status(&id).await?;
    let container = pick_container(&st, a.container.as_deref())?;
    let cfg = ExecConfig {
        command: a.command.clone(),
        env: a.env.clone(),
        tty: a.tty,
        stdin: a.interactive,
        size: if a.tty { term::size() } else { None },
    };
    let stream = match runtime.exec(&id, &container, cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("h8s: exec failed: {e}");
            return Ok(match e {
                RtError::CommandNotFound(_) => 127,
                RtError::CommandNotExecutable(_) => 126,
                _ => 1,
            });
        }
    };
    let raw = if a.tty { term::RawMode::enter() } else { None };
    let code = term::pump(stream, a.interactive, a.tty).await;
    drop(raw);
    match code {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            eprintln!("h8s: the pod ended during exec");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

fn state_text(s: &SandboxStatus) -> String {
    match s.state {
        SandboxState::Creating => "Creating".into(),
        SandboxState::Ready => {
            let running = s
                .containers
                .iter()
                .filter(|c| c.state == h8s_runtime::ContainerState::Running)
                .count();
            format!("Running ({running}/{} containers)", s.containers.len())
        }
        SandboxState::Stopped => {
            let code = s
                .containers
                .iter()
                .find(|c| !c.config.init)
                .and_then(|c| c.exit_code);
            match code {
                Some(c) => format!("Exited ({c})"),
                None => "Stopped".into(),
            }
        }
        SandboxState::Failed => format!("Failed: {}", s.reason.as_deref().unwrap_or("unknown")),
    }
}

async fn cmd_ps(a: PsArgs) -> anyhow::Result<()> {
    let runtime = runtime(&a.common)?;
    let mut pods = runtime.list_sandboxes().await?;
    // Pods whose supervisor died but whose VM runs are taken over again.
    let mut recovered = false;
    for p in &pods {
        if p.state == SandboxState::Failed && p.qemu_pid.is_some() && p.shim_pid.is_none() {
            recovered |= runtime.recover(&p.id).await.unwrap_or(false);
        }
    }
    if recovered {
        pods = runtime.list_sandboxes().await?;
    }
    let pods: Vec<_> = pods
        .into_iter()
        .filter(|p| a.all || matches!(p.state, SandboxState::Ready | SandboxState::Creating))
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&pods)?);
        return Ok(());
    }
    if a.quiet {
        for p in &pods {
            println!("{}", p.id);
        }
        return Ok(());
    }
    println!(
        "{:<12}  {:<20}  {:<16}  {:<5}  {:<26}  {:<19}  COMMAND",
        "POD ID", "NAME", "IMAGE", "ACCEL", "STATUS", "CREATED"
    );
    for p in &pods {
        let c = p.containers.iter().find(|c| !c.config.init);
        let image = c
            .map(|c| c.config.image.clone())
            .or_else(|| p.config.images.first().map(|i| i.name.clone()))
            .unwrap_or_default();
        let mut command = c.map(|c| c.config.command.join(" ")).unwrap_or_default();
        if command.chars().count() > 40 {
            command = command.chars().take(37).collect::<String>() + "...";
        }
        println!(
            "{:<12}  {:<20}  {:<16}  {:<5}  {:<26}  {:<19}  {}",
            p.id,
            p.config.name,
            image,
            p.accel.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            state_text(p),
            p.created_at
                .get(..19)
                .unwrap_or(&p.created_at)
                .replace('T', " "),
            command
        );
    }
    Ok(())
}

async fn cmd_logs(a: LogsArgs) -> anyhow::Result<()> {
    let runtime = runtime(&a.common)?;
    let id = runtime.resolve(&a.pod)?;
    let st = runtime.sandbox_status(&id).await?;
    let container = pick_container(&st, a.container.as_deref())?;
    let path = runtime.log_path(&id, &container);
    let mut file = h8s_runtime::open_log_file(&path)
        .with_context(|| format!("container {container:?} has no log ({})", path.display()))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        use std::io::Read;
        let n = file.read(&mut buf)?;
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if let Some(e) = h8s_runtime::LogEntry::parse(&line[..line.len() - 1]) {
                    let mut out: Box<dyn Write> = match e.stream {
                        h8s_runtime::LogStream::Stdout => Box::new(std::io::stdout().lock()),
                        h8s_runtime::LogStream::Stderr => Box::new(std::io::stderr().lock()),
                    };
                    if a.timestamps {
                        out.write_all(e.time.as_bytes())?;
                        out.write_all(b" ")?;
                    }
                    out.write_all(&e.raw())?;
                    out.flush()?;
                }
            }
            continue;
        }
        if !a.follow {
            return Ok(());
        }
        // At the end of the file: stop once the container can write no more.
        let st = runtime.sandbox_status(&id).await?;
        let running = st.state == SandboxState::Ready
            && st.containers.iter().any(|c| {
                c.config.name == container
                    && matches!(
                        c.state,
                        h8s_runtime::ContainerState::Running | h8s_runtime::ContainerState::Created
                    )
            });
        if !running {
            // One last read: output written just before the exit.
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cmd_stop(a: StopArgs) -> anyhow::Result<()> {
    let runtime = runtime(&a.common)?;
    let mut failed = false;
    for p in &a.pods {
        match runtime.resolve(p) {
            Ok(id) => match runtime.stop_sandbox(&id, Duration::from_secs(a.time)).await {
                Ok(()) => println!("{p}"),
                Err(e) => {
                    eprintln!("h8s: stopping {p}: {e}");
                    failed = true;
                }
            },
            Err(e) => {
                eprintln!("h8s: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit(1).into());
    }
    Ok(())
}

async fn cmd_rm(a: RmArgs) -> anyhow::Result<()> {
    let runtime = runtime(&a.common)?;
    let mut failed = false;
    for p in &a.pods {
        let r = match runtime.resolve(p) {
            Ok(id) => {
                let st = runtime.sandbox_status(&id).await;
                let r = runtime.remove_sandbox(&id, a.force).await;
                if let (Ok(()), Ok(st)) = (&r, st) {
                    if st.config.network.is_some() {
                        pod_net::detach(&st.config.name);
                    }
                }
                r
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => println!("{p}"),
            Err(e) => {
                eprintln!("h8s: removing {p}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit(1).into());
    }
    Ok(())
}

#[path = "pod_net.rs"]
mod pod_net;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_and_names() {
        assert_eq!(parse_memory("256M").unwrap(), 256);
        assert_eq!(parse_memory("1g").unwrap(), 1024);
        assert_eq!(parse_memory("300").unwrap(), 300);
        assert!(parse_memory("lots").is_err());
        assert_eq!(base_name("/x/busybox.erofs"), "busybox");
        assert_eq!(base_name("localhost:5000/lib/alpine:3.19"), "alpine");
        assert_eq!(base_name("nginx@sha256:abc"), "nginx");
    }
}
