//! The agent's state and request handling: containers, processes, stdio streams, exits.
//!
//! Threads: the main thread reads frames from the port and handles requests (including every
//! clone, so per-thread namespace switches stay on one thread); one reaper thread turns
//! `SIGCHLD` into exit records; one relay thread ([`crate::relay`]) sends every process's
//! output and fires the output grace timers; per process with stdin, one thread for it.
//! All writes to the port go through one mutex, a whole frame at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use h8s_guest::{
    read_frame, write_frame, Channel, ContainerInfo, ContainerSpec, ErrorCode, Event, ExecSpec,
    ExitStatus, Frame, Hello, LogLevel, Message, ProcessId, ProcessInfo, ProcessSpec, ProcessState,
    ProtoError, Reply, Request, RequestId, MAX_DATA_LEN, PROTOCOL_VERSION,
};

use crate::container::{self, NetFiles, Rootfs};
use crate::relay::Relay;
use crate::spawn::{self, Stage};
use crate::sys;

/// How long output of an exited process may still arrive (from children that inherited its
/// stdout) before the exit is reported and later output dropped.
const OUTPUT_GRACE: Duration = Duration::from_millis(300);

/// Agent log lines sent to the host per second, at most.
const LOG_EVENTS_PER_SEC: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq)]
enum PState {
    Created,
    Starting,
    Running,
    Exited,
}

struct Proc {
    pid: Option<i32>,
    state: PState,
    exit: Option<ExitStatus>,
    open_outputs: u8,
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    tty: Option<Arc<File>>,
    waiters: Vec<RequestId>,
}

impl Proc {
    fn new(state: PState) -> Proc {
        Proc {
            pid: None,
            state,
            exit: None,
            open_outputs: 0,
            stdin: None,
            tty: None,
            waiters: Vec::new(),
        }
    }

    fn info_state(&self) -> ProcessState {
        match (self.state, self.exit, self.pid) {
            (PState::Exited, Some(s), _) => ProcessState::Exited(s),
            (PState::Created, _, _) => ProcessState::Created,
            (_, _, Some(pid)) => ProcessState::Running { pid: pid as u32 },
            _ => ProcessState::Created,
        }
    }
}

struct Container {
    rootfs: Rootfs,
    spec: ContainerSpec,
    /// Namespaces of the running main process, for exec: mount and (optional) UTS.
    enter: Vec<(File, libc::c_int)>,
    pidns: Option<File>,
    execs: Vec<ProcessId>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    procs: HashMap<ProcessId, Proc>,
    by_pid: HashMap<i32, ProcessId>,
    /// Exits reaped before their pid was registered (a clone that exited at once).
    unclaimed: HashMap<i32, ExitStatus>,
}

/// The guest agent.
pub struct Agent {
    out: Mutex<File>,
    state: Mutex<State>,
    net: Mutex<NetFiles>,
    own_pidns: File,
    kernel_release: String,
    boot_time_ms: u64,
    log_budget: Mutex<(Instant, u32)>,
    reboot_to_power_off: bool,
    /// See [`Hello::agent_id`]: drawn at start, again after a restore.
    agent_id: Mutex<String>,
    relay: Relay,
}

type Outcome = Option<Result<Reply, ProtoError>>;

fn err(code: ErrorCode, msg: impl Into<String>) -> ProtoError {
    ProtoError::new(code, msg)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves consistent-enough data (all updates are single assignments);
    // PID 1 must keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode_wait_status(st: i32) -> ExitStatus {
    if libc::WIFSIGNALED(st) {
        ExitStatus::Signal(libc::WTERMSIG(st))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(st))
    }
}

impl Agent {
    pub fn new(port: File, boot_time_ms: u64, reboot_to_power_off: bool) -> io::Result<Arc<Agent>> {
        let agent = Arc::new(Agent {
            out: Mutex::new(port),
            state: Mutex::new(State::default()),
            net: Mutex::new(NetFiles::default()),
            own_pidns: File::open("/proc/self/ns/pid")?,
            kernel_release: sys::kernel_release(),
            boot_time_ms,
            log_budget: Mutex::new((Instant::now(), 0)),
            reboot_to_power_off,
            agent_id: Mutex::new(crate::restore::new_agent_id()),
            relay: Relay::new()?,
        });
        let a = Arc::clone(&agent);
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                let me = Arc::clone(&a);
                a.relay.run(me)
            })?;
        Ok(agent)
    }

    fn send(&self, frame: &Frame) {
        let mut out = lock(&self.out);
        if let Err(e) = write_frame(&mut *out, frame) {
            eprintln!("h8s-guest: write to host: {e}");
        }
    }

    fn send_msg(&self, m: Message) {
        self.send(&Frame::Message(m));
    }

    /// Logs to the console and, rate-limited, to the host.
    pub fn log(&self, level: LogLevel, message: String) {
        eprintln!("h8s-guest: {message}");
        let mut b = lock(&self.log_budget);
        if b.0.elapsed() >= Duration::from_secs(1) {
            *b = (Instant::now(), 0);
        }
        if b.1 >= LOG_EVENTS_PER_SEC {
            return;
        }
        b.1 += 1;
        drop(b);
        self.send_msg(Message::Event(Event::Log { level, message }));
    }

    fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: self.kernel_release.clone(),
            boot_time_ms: self.boot_time_ms,
            containers: self.list(),
            agent_id: lock(&self.agent_id).clone(),
        }
    }

    /// Serves the port forever: Hello, then requests until the host disconnects, then waits
    /// for the next connection and greets again.
    pub fn serve(self: &Arc<Self>) -> ! {
        let port = match lock(&self.out).try_clone() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("h8s-guest: cannot duplicate the port: {e}");
                sys::power_off(self.reboot_to_power_off)
            }
        };
        loop {
            self.send_msg(Message::Hello(self.hello()));
            let mut reader = BufReader::with_capacity(MAX_DATA_LEN + 64, &port);
            loop {
                match read_frame(&mut reader) {
                    Ok(Some(frame)) => self.handle_frame(frame),
                    Ok(None) => break,
                    Err(h8s_guest::Error::Json {
                        request_id: Some(id),
                        source,
                    }) => self.send_msg(Message::Response {
                        id,
                        result: Err(err(
                            ErrorCode::Unsupported,
                            format!("request not understood by agent protocol {PROTOCOL_VERSION}: {source}"),
                        )),
                    }),
                    Err(h8s_guest::Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(h8s_guest::Error::Io(e)) => {
                        eprintln!("h8s-guest: read from host: {e}");
                        break;
                    }
                    Err(e) => self.log(LogLevel::Warn, format!("bad frame from host: {e}")),
                }
            }
            wait_for_host(&port);
        }
    }

    fn handle_frame(self: &Arc<Self>, frame: Frame) {
        match frame {
            Frame::Message(Message::Request { id, request }) => {
                let shutdown = matches!(request, Request::Shutdown);
                if let Some(result) = self.handle(id, request) {
                    self.send_msg(Message::Response { id, result });
                }
                if shutdown {
                    self.shutdown();
                }
            }
            Frame::Message(other) => {
                self.log(
                    LogLevel::Warn,
                    format!("unexpected message from host: {}", message_kind(&other)),
                );
            }
            Frame::Data {
                process,
                channel: Channel::Stdin,
                data,
            } => {
                let st = lock(&self.state);
                if let Some(tx) = st.procs.get(&process).and_then(|p| p.stdin.as_ref()) {
                    // A closed receiver means the process is gone: the input is moot.
                    let _ = tx.send(data);
                }
            }
            Frame::Data { .. } => {}
        }
    }

    fn handle(self: &Arc<Self>, id: RequestId, req: Request) -> Outcome {
        match req {
            Request::Ping => Some(Ok(Reply::Pong)),
            Request::CreateContainer(spec) => Some(self.create(spec).map(|()| Reply::Done)),
            Request::StartContainer { container } => Some(self.start(&container)),
            Request::Exec(spec) => Some(self.exec(spec)),
            Request::Signal { process, signal } => Some(self.signal(process, signal)),
            Request::Wait { process } => self.wait(id, process),
            Request::ResizeTty {
                process,
                rows,
                cols,
            } => Some(self.resize(process, rows, cols)),
            Request::CloseStdin { process } => Some(self.close_stdin(process)),
            Request::RemoveContainer { container } => Some(self.remove(&container)),
            Request::ListContainers => Some(Ok(Reply::Containers(self.list()))),
            Request::ConfigureNetwork(cfg) => Some(crate::net::configure(&cfg).map(|files| {
                *lock(&self.net) = files;
                Reply::Done
            })),
            Request::Shutdown => Some(Ok(Reply::Done)),
            Request::PortForward { process_id, port } => Some(self.port_forward(process_id, port)),
            Request::WriteVolume(v) => Some(crate::volume::write(&v).map(|()| Reply::Done)),
            Request::Probe(spec) => {
                // Probes wait on the network: answered from their own thread.
                let this = self.clone();
                std::thread::spawn(move || {
                    let result = crate::probe::run(&spec).map(|()| Reply::Done);
                    this.send_msg(Message::Response { id, result });
                });
                None
            }
            Request::UpdateServices(u) => Some(
                crate::services::get()
                    .and_then(|s| s.update(&u))
                    .map(|()| Reply::Done),
            ),
            Request::Restored(info) => Some(crate::restore::apply(&info).and_then(|mut steps| {
                // After the reseed: the id (and whatever random state follows) is this
                // clone's own.
                let id = crate::restore::new_agent_id();
                *lock(&self.agent_id) = id.clone();
                if let Some(cfg) = &info.network {
                    let t = std::time::Instant::now();
                    *lock(&self.net) = crate::net::configure(cfg)?;
                    steps.push(("network".into(), t.elapsed().as_micros() as u64));
                }
                Ok(Reply::Restored {
                    agent_id: id,
                    hello: Some(self.hello()),
                    steps_us: steps,
                })
            })),
            Request::PrepareTemplate => {
                Some(crate::restore::prepare_template().map(|()| Reply::Done))
            }
            Request::StorageUsage => {
                let dirs: Vec<(String, std::path::PathBuf)> = lock(&self.state)
                    .containers
                    .iter()
                    .map(|(id, c)| (id.clone(), c.rootfs.dir.clone()))
                    .collect();
                // Walking the trees takes a while: answered from its own thread.
                let this = self.clone();
                spawn_thread("usage", move || {
                    let usage = container::storage_usage(&dirs);
                    this.send_msg(Message::Response {
                        id,
                        result: Ok(Reply::StorageUsage(usage)),
                    });
                });
                None
            }
            Request::Greet => {
                self.send_msg(Message::Hello(self.hello()));
                Some(Ok(Reply::Done))
            }
        }
    }

    fn list(&self) -> Vec<ContainerInfo> {
        let st = lock(&self.state);
        st.containers
            .values()
            .map(|c| {
                let ids = std::iter::once(c.spec.process_id).chain(c.execs.iter().copied());
                ContainerInfo {
                    id: c.spec.id.clone(),
                    process_id: c.spec.process_id,
                    processes: ids
                        .filter_map(|id| {
                            st.procs.get(&id).map(|p| ProcessInfo {
                                id,
                                state: p.info_state(),
                            })
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn create(&self, spec: ContainerSpec) -> Result<(), ProtoError> {
        container::validate_name("container id", &spec.id)?;
        {
            let st = lock(&self.state);
            if st.containers.contains_key(&spec.id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("container {} exists", spec.id),
                ));
            }
            if st.procs.contains_key(&spec.process_id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("process id {} is in use", spec.process_id),
                ));
            }
        }
        if spec.process.args.is_empty() {
            return Err(err(
                ErrorCode::InvalidArgument,
                "no command given (args is empty)",
            ));
        }
        let net = lock(&self.net).clone();
        let rootfs = container::create(&spec, &net)?;
        let mut st = lock(&self.state);
        st.procs.insert(spec.process_id, Proc::new(PState::Created));
        st.containers.insert(
            spec.id.clone(),
            Container {
                rootfs,
                spec,
                enter: Vec::new(),
                pidns: None,
                execs: Vec::new(),
            },
        );
        Ok(())
    }

    fn start(self: &Arc<Self>, id: &str) -> Result<Reply, ProtoError> {
        let (root, spec) = {
            let st = lock(&self.state);
            let c = st
                .containers
                .get(id)
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id}")))?;
            let p = &st.procs[&c.spec.process_id];
            if p.state != PState::Created {
                return Err(err(
                    ErrorCode::FailedPrecondition,
                    format!("container {id} was already started"),
                ));
            }
            (c.rootfs.root.clone(), c.spec.clone())
        };
        let mut plan = container::plan(&root, &spec.process)?;
        if let Some(wd) = &spec.process.working_dir {
            // Docker creates a missing working directory of the main process.
            container::safe_join(&root, wd, true, false)?;
        }
        plan.clone_flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID;
        if let Some(h) = &spec.hostname {
            plan.clone_flags |= libc::CLONE_NEWUTS;
            plan.hostname =
                Some(sys::cstr(h).map_err(|_| err(ErrorCode::InvalidArgument, "bad hostname"))?);
        }
        plan.pivot_root = Some(container::c_path(&root)?);
        plan.mount_proc = true;
        let pid = self.launch(spec.process_id, &spec.process, &plan)?;

        // Keep the namespaces for exec sessions (they outlive a quick exit harmlessly).
        let ns = |n: &str| File::open(format!("/proc/{pid}/ns/{n}")).ok();
        let mut enter = Vec::new();
        if let Some(m) = ns("mnt") {
            enter.push((m, libc::CLONE_NEWNS));
        }
        if spec.hostname.is_some() {
            if let Some(u) = ns("uts") {
                enter.push((u, libc::CLONE_NEWUTS));
            }
        }
        let pidns = ns("pid");
        let mut st = lock(&self.state);
        if let Some(c) = st.containers.get_mut(id) {
            c.enter = enter;
            c.pidns = pidns;
        }
        Ok(Reply::Started { pid: pid as u32 })
    }

    fn exec(self: &Arc<Self>, spec: ExecSpec) -> Result<Reply, ProtoError> {
        let (root, enter, pidns) = {
            let mut st = lock(&self.state);
            if st.procs.contains_key(&spec.process_id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("process id {} is in use", spec.process_id),
                ));
            }
            let c = st.containers.get(&spec.container).ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!("no container {}", spec.container),
                )
            })?;
            let main = &st.procs[&c.spec.process_id];
            if main.state != PState::Running || main.exit.is_some() || c.enter.is_empty() {
                return Err(err(
                    ErrorCode::FailedPrecondition,
                    format!("container {} is not running", spec.container),
                ));
            }
            let dup = |f: &File| {
                f.try_clone()
                    .map_err(|e| err(ErrorCode::Internal, format!("duplicate namespace: {e}")))
            };
            let enter = c
                .enter
                .iter()
                .map(|(f, k)| dup(f).map(|f| (f, *k)))
                .collect::<Result<Vec<_>, _>>()?;
            let pidns = c.pidns.as_ref().map(dup).transpose()?;
            let root = c.rootfs.root.clone();
            // Reserve the id so a concurrent duplicate is refused.
            st.procs
                .insert(spec.process_id, Proc::new(PState::Starting));
            (root, enter, pidns)
        };
        let result = (|| {
            let mut plan = container::plan(&root, &spec.process)?;
            plan.enter = enter;
            if let Some(ns) = pidns {
                let own = self
                    .own_pidns
                    .try_clone()
                    .map_err(|e| err(ErrorCode::Internal, format!("duplicate namespace: {e}")))?;
                plan.pidns = Some((ns, own));
            }
            self.launch(spec.process_id, &spec.process, &plan)
        })();
        let mut st = lock(&self.state);
        match result {
            Ok(pid) => {
                if let Some(c) = st.containers.get_mut(&spec.container) {
                    c.execs.push(spec.process_id);
                }
                Ok(Reply::Started { pid: pid as u32 })
            }
            Err(e) => {
                st.procs.remove(&spec.process_id);
                Err(e)
            }
        }
    }

    /// Sets up stdio, clones, and starts the stream threads. Returns the guest pid.
    fn launch(
        self: &Arc<Self>,
        id: ProcessId,
        p: &ProcessSpec,
        plan: &spawn::Plan,
    ) -> Result<i32, ProtoError> {
        let internal = |what: &str, e: io::Error| err(ErrorCode::Internal, format!("{what}: {e}"));
        // Parent-side ends: outputs to read, stdin to write, and the pty master.
        let mut outputs: Vec<(File, Channel)> = Vec::new();
        let mut stdin_w: Option<File> = None;
        let mut tty: Option<Arc<File>> = None;
        // Child-side ends, closed here after the clone.
        let child_fds: Vec<OwnedFd>;
        let stdio: [i32; 3];
        if p.tty {
            let (m, s) = sys::openpty(p.tty_size).map_err(|e| internal("open a terminal", e))?;
            let m = File::from(m);
            outputs.push((
                m.try_clone().map_err(|e| internal("terminal", e))?,
                Channel::Stdout,
            ));
            tty = Some(Arc::new(m));
            stdio = [s.as_raw_fd(); 3];
            child_fds = vec![s];
        } else {
            let stdin_r: OwnedFd = if p.stdin {
                let (r, w) = sys::pipe().map_err(|e| internal("pipe", e))?;
                stdin_w = Some(File::from(w));
                r
            } else {
                File::open("/dev/null")
                    .map_err(|e| internal("open /dev/null", e))?
                    .into()
            };
            let (out_r, out_w) = sys::pipe().map_err(|e| internal("pipe", e))?;
            let (err_r, err_w) = sys::pipe().map_err(|e| internal("pipe", e))?;
            outputs.push((File::from(out_r), Channel::Stdout));
            outputs.push((File::from(err_r), Channel::Stderr));
            stdio = [stdin_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
            child_fds = vec![stdin_r, out_w, err_w];
        }

        let outcome = spawn::spawn(plan, stdio, |pid| {
            let mut st = lock(&self.state);
            st.by_pid.insert(pid, id);
            let early = st.unclaimed.remove(&pid);
            if let Some(proc_) = st.procs.get_mut(&id) {
                proc_.pid = Some(pid);
                proc_.state = PState::Starting;
                proc_.exit = early;
            }
        })
        .map_err(|e| internal("start process", e))?;
        drop(child_fds);

        let pid = match outcome {
            Ok(pid) => pid,
            Err(child) => {
                let mut st = lock(&self.state);
                if let Some(proc_) = st.procs.get_mut(&id) {
                    // The failed start is reported by this error, not by an exit event.
                    proc_.state = PState::Exited;
                    proc_.exit.get_or_insert(ExitStatus::Code(127));
                }
                return Err(child_error(child, p));
            }
        };

        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>();
        let n_out = outputs.len() as u8;
        let exited_early = {
            let mut st = lock(&self.state);
            let proc_ = st.procs.get_mut(&id).expect("registered above");
            proc_.state = PState::Running;
            proc_.open_outputs = n_out;
            proc_.tty = tty.clone();
            if p.stdin {
                proc_.stdin = Some(stdin_tx);
            }
            proc_.exit.is_some()
        };
        for (f, channel) in outputs {
            self.relay.watch(f, id, channel);
        }
        if p.stdin {
            let sink: Box<dyn Write + Send> = match (&tty, stdin_w) {
                (Some(t), _) => Box::new(ArcWriter(Arc::clone(t))),
                (None, Some(w)) => Box::new(w),
                (None, None) => unreachable!("stdin pipe exists when stdin is requested"),
            };
            let is_tty = tty.is_some();
            spawn_thread("stdin", move || pump_stdin(stdin_rx, sink, is_tty));
        }
        if exited_early {
            self.start_grace_timer(id);
        }
        Ok(pid)
    }

    /// Sends output the relay read.
    pub fn send_output(&self, process: ProcessId, channel: Channel, data: Vec<u8>) {
        self.send(&Frame::Data {
            process,
            channel,
            data,
        });
    }

    /// Called by the relay when one output stream of a process ended: the exit is reported
    /// once all its streams ended and it was reaped.
    pub fn output_closed(&self, id: ProcessId) {
        let done = {
            let mut st = lock(&self.state);
            match st.procs.get_mut(&id) {
                Some(p) => {
                    p.open_outputs = p.open_outputs.saturating_sub(1);
                    p.open_outputs == 0 && p.exit.is_some() && p.state == PState::Running
                }
                None => false,
            }
        };
        if done {
            self.finalize(id);
        }
    }

    /// Connects to a port on the VM's loopback (the pod's network namespace) and relays the
    /// connection as a process: stdin data to the socket, the socket's bytes as stdout, an
    /// exit with code 0 when the peer closes. Two threads, and the stdin queue is the
    /// host's pace (the port is read only as fast as the host takes it).
    fn port_forward(self: &Arc<Self>, id: ProcessId, port: u16) -> Result<Reply, ProtoError> {
        use std::net::{Shutdown, SocketAddr, TcpStream};
        {
            let mut st = lock(&self.state);
            if st.procs.contains_key(&id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("process id {id} is in use"),
                ));
            }
            st.procs.insert(id, Proc::new(PState::Starting));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let connected = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).and_then(|s| {
            let r = s.try_clone()?;
            Ok((s, r))
        });
        let (mut sock, rd) = match connected {
            Ok(x) => x,
            Err(e) => {
                lock(&self.state).procs.remove(&id);
                return Err(err(
                    ErrorCode::FailedPrecondition,
                    format!("connecting to port {port}: {e}"),
                ));
            }
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        if let Some(p) = lock(&self.state).procs.get_mut(&id) {
            p.state = PState::Running;
            p.open_outputs = 1;
            p.stdin = Some(tx);
        }
        spawn_thread("forward-in", move || {
            for chunk in rx.iter() {
                if sock.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = sock.shutdown(Shutdown::Write);
        });
        let agent = Arc::clone(self);
        spawn_thread("forward-out", move || {
            let mut f = File::from(OwnedFd::from(rd));
            let mut buf = vec![0u8; MAX_DATA_LEN];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => agent.send(&Frame::Data {
                        process: id,
                        channel: Channel::Stdout,
                        data: buf[..n].to_vec(),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if let Some(p) = lock(&agent.state).procs.get_mut(&id) {
                p.open_outputs = 0;
                p.exit = Some(ExitStatus::Code(0));
                p.state = PState::Running;
            }
            agent.finalize(id);
            // A connection leaves no record behind.
            lock(&agent.state).procs.remove(&id);
        });
        Ok(Reply::Done)
    }

    pub fn is_finalized(&self, id: ProcessId) -> bool {
        lock(&self.state)
            .procs
            .get(&id)
            .is_none_or(|p| p.state == PState::Exited)
    }

    /// Called by the reaper for every reaped child.
    pub fn child_exited(self: &Arc<Self>, pid: i32, raw_status: i32) {
        let status = decode_wait_status(raw_status);
        let mut st = lock(&self.state);
        let Some(id) = st.by_pid.remove(&pid) else {
            // Not (yet) registered: either a clone racing its registration, or an orphan that
            // was re-parented to us. Keep a bounded record for the former.
            if st.unclaimed.len() > 1024 {
                st.unclaimed.clear();
            }
            st.unclaimed.insert(pid, status);
            return;
        };
        let Some(p) = st.procs.get_mut(&id) else {
            return;
        };
        p.exit = Some(status);
        if p.state != PState::Running {
            // Starting: `launch` finishes the bookkeeping.
            return;
        }
        let done = p.open_outputs == 0;
        drop(st);
        if done {
            self.finalize(id);
        } else {
            self.start_grace_timer(id);
        }
    }

    fn start_grace_timer(&self, id: ProcessId) {
        self.relay.timer(id, OUTPUT_GRACE);
    }

    /// Reports an exit once: the event, then the answers to waiters.
    pub fn finalize(&self, id: ProcessId) {
        let (status, waiters) = {
            let mut st = lock(&self.state);
            let Some(p) = st.procs.get_mut(&id) else {
                return;
            };
            let Some(status) = p.exit else {
                return;
            };
            if p.state == PState::Exited {
                return;
            }
            p.state = PState::Exited;
            p.stdin = None;
            p.tty = None;
            (status, std::mem::take(&mut p.waiters))
        };
        self.send_msg(Message::Event(Event::Exited {
            process: id,
            status,
        }));
        for w in waiters {
            self.send_msg(Message::Response {
                id: w,
                result: Ok(Reply::Exited(status)),
            });
        }
    }

    fn with_proc<T>(
        &self,
        id: ProcessId,
        f: impl FnOnce(&mut Proc) -> Result<T, ProtoError>,
    ) -> Result<T, ProtoError> {
        let mut st = lock(&self.state);
        let p = st
            .procs
            .get_mut(&id)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no process {id}")))?;
        f(p)
    }

    fn signal(&self, id: ProcessId, signal: i32) -> Result<Reply, ProtoError> {
        if !(1..=64).contains(&signal) {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("bad signal {signal}"),
            ));
        }
        self.with_proc(id, |p| match (p.state, p.pid, p.exit) {
            (PState::Running, Some(pid), None) => sys::kill(pid, signal)
                .map(|()| Reply::Done)
                .map_err(|e| err(ErrorCode::Internal, format!("signal {id}: {e}"))),
            _ => Err(err(
                ErrorCode::NotRunning,
                format!("process {id} is not running"),
            )),
        })
    }

    fn wait(&self, req: RequestId, id: ProcessId) -> Outcome {
        let r = self.with_proc(id, |p| {
            if p.state == PState::Exited {
                if let Some(s) = p.exit {
                    return Ok(Some(Reply::Exited(s)));
                }
            }
            if p.state == PState::Created {
                return Err(err(
                    ErrorCode::FailedPrecondition,
                    format!("process {id} was not started"),
                ));
            }
            p.waiters.push(req);
            Ok(None)
        });
        match r {
            Ok(Some(reply)) => Some(Ok(reply)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn resize(&self, id: ProcessId, rows: u16, cols: u16) -> Result<Reply, ProtoError> {
        self.with_proc(id, |p| match &p.tty {
            Some(t) => sys::set_winsize(t.as_raw_fd(), rows, cols)
                .map(|()| Reply::Done)
                .map_err(|e| err(ErrorCode::Internal, format!("resize: {e}"))),
            None if p.state == PState::Exited => Err(err(
                ErrorCode::NotRunning,
                format!("process {id} is not running"),
            )),
            None => Err(err(
                ErrorCode::FailedPrecondition,
                format!("process {id} has no terminal"),
            )),
        })
    }

    fn close_stdin(&self, id: ProcessId) -> Result<Reply, ProtoError> {
        self.with_proc(id, |p| {
            // Dropping the sender ends the stdin thread, which closes the pipe (or sends EOF
            // to the terminal).
            p.stdin = None;
            Ok(Reply::Done)
        })
    }

    fn remove(&self, id: &str) -> Result<Reply, ProtoError> {
        let mut st = lock(&self.state);
        let c = st
            .containers
            .get(id)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id}")))?;
        let ids: Vec<ProcessId> = std::iter::once(c.spec.process_id)
            .chain(c.execs.iter().copied())
            .collect();
        if ids.iter().any(|i| {
            st.procs
                .get(i)
                .is_some_and(|p| !matches!(p.state, PState::Created | PState::Exited))
        }) {
            return Err(err(
                ErrorCode::FailedPrecondition,
                format!("container {id} is running"),
            ));
        }
        for i in &ids {
            st.procs.remove(i);
        }
        let mut c = st.containers.remove(id).expect("checked above");
        drop(st);
        c.enter.clear();
        c.pidns = None;
        c.rootfs.remove();
        Ok(Reply::Done)
    }

    /// Kills everything, syncs and powers off. Never returns.
    fn shutdown(&self) -> ! {
        // SAFETY: kill(-1) from PID 1 signals every other process; no memory arguments.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        // Let the kernel tear the processes down before unmounting.
        std::thread::sleep(Duration::from_millis(20));
        let roots: Vec<_> = lock(&self.state)
            .containers
            .values()
            .map(|c| c.rootfs.dir.clone())
            .collect();
        for r in roots {
            let _ = sys::umount_detach(&r.join("root"));
        }
        sys::power_off(self.reboot_to_power_off)
    }
}

/// Starts a thread; a failure (out of memory or pids) is logged, never a panic in PID 1.
pub fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        eprintln!("h8s-guest: cannot start a {name} thread: {e}");
    }
}

fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "hello",
        Message::Request { .. } => "request",
        Message::Response { .. } => "response",
        Message::Event(_) => "event",
    }
}

fn child_error(c: spawn::ChildError, p: &ProcessSpec) -> ProtoError {
    let arg0 = p.args.first().map(String::as_str).unwrap_or("");
    match c.stage {
        Stage::Exec => err(
            ErrorCode::ExecutableNotFound,
            format!("cannot run {arg0:?}: {}", c.error),
        ),
        Stage::WorkingDir => err(
            ErrorCode::InvalidArgument,
            format!(
                "working directory {:?}: {}",
                p.working_dir.as_deref().unwrap_or("/"),
                c.error
            ),
        ),
        Stage::Identity => err(
            ErrorCode::InvalidArgument,
            format!("cannot switch user: {}", c.error),
        ),
        other => err(
            ErrorCode::Internal,
            format!("process set-up failed at {other:?}: {}", c.error),
        ),
    }
}

/// `Write` through a shared file (the pty master is shared with resize and output).
struct ArcWriter(Arc<File>);

impl Write for ArcWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pump_stdin(rx: mpsc::Receiver<Vec<u8>>, mut sink: Box<dyn Write + Send>, tty: bool) {
    for chunk in rx.iter() {
        if sink.write_all(&chunk).is_err() {
            // The reader is gone; drain nothing more.
            return;
        }
    }
    if tty {
        // End of input on a terminal is the EOF character (^D) in canonical mode.
        let _ = sink.write_all(&[4]);
    }
}

/// After a disconnect, waits until the host side of the port is open again (poll reports
/// POLLHUP while it is closed).
fn wait_for_host(port: &File) {
    loop {
        let mut pfd = libc::pollfd {
            fd: port.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n >= 0 && pfd.revents & libc::POLLHUP == 0 {
            return;
        }
        // Short: a VM restored from a template waits here for its supervisor to connect,
        // and every millisecond counts towards its start.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The reaper: PID 1 reaps every child, tracked or orphaned.
pub fn reap_forever(agent: Arc<Agent>) -> ! {
    loop {
        sys::wait_sigchld();
        while let Some((pid, status)) = sys::reap_one() {
            agent.child_exited(pid, status);
        }
    }
}

/// Finds the virtio-serial port by name (`/sys/class/virtio-ports/*/name`) and opens it,
/// creating the device node from sysfs if devtmpfs has not yet.
pub fn open_port(name: &str, timeout: Duration) -> io::Result<File> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() != name {
                    continue;
                }
                let dev = Path::new("/dev").join(e.file_name());
                if !dev.exists() {
                    let mm = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default();
                    if let Some((ma, mi)) = mm.trim().split_once(':') {
                        if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                            let _ = sys::mknod_char(&dev, 0o600, ma, mi);
                        }
                    }
                }
                return std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&dev);
            }
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {name}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
