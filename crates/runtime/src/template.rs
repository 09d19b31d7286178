//! VM templates: start a pod by restoring a saved, paused VM instead of booting one.
//!
//! A template is one VM booted to the point where its guest agent waits for its pod, then
//! paused and saved with QEMU's `x-ignore-shared` migration capability: its device state goes
//! to `state` (some KiB), its RAM stays in `mem`, the file it ran on (mapped shared). A pod
//! restores it with the same machine and devices, its RAM a private copy-on-write mapping of
//! `mem`, so every pod shares each page it has not written (`docs/runtime.md`, "VM templates").
//!
//! One template per shape: QEMU binary, kernel, initramfs and command line, accelerator, guest
//! memory and vCPUs, and the device layout (how many image disks, which volumes read-only,
//! whether a NIC, whether a balloon). The disks and NIC are placeholders whose backends each
//! pod gives; the guest agent then re-probes the disks, takes the pod's MAC, reseeds its RNG
//! and sets its clock (`h8s_guest::Request::Restored`).
//!
//! Files under `<root>/templates/<key>/`: `spec.json` (what to build), `lock` (held while
//! building), `state`, `mem.sock` (the holder's socket), `ready` (written last), `uses` (pods restored so far), `failed`
//! (a build failed: the shape boots cold until templates are rotated).
//!
//! Security: the RAM is a sealed memfd (`F_SEAL_WRITE`, `SHRINK`, `GROW`, `SEAL`): QEMU 7.2
//! opens a memory file read-write even for a private mapping, and the seals make every write
//! through the file fail, so no pod's QEMU can change what the next pod starts from. The
//! builder stays as the memfd's holder and hands it (`SCM_RIGHTS`, same uid only) to each
//! pod's supervisor; QEMU inherits it and opens it as `/proc/self/fd/N` (the jail mounts a
//! process-only procfs for that). Clones share the template's kernel layout
//! (KASLR): templates are retired after `template_max_uses` pods (a successor is built in
//! the shape's other directory, `<key>-b`, before that) and on
//! [`crate::Runtime::rotate_templates`] (the node agent calls it when it starts).

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::api::{Accel, ImageDisk, NetworkAttachment, SandboxConfig, VolumeDisk};
use crate::{Error, Result, VmSettings};

/// The templates' directory under the runtime root.
pub(crate) fn templates_dir(root: &Path) -> PathBuf {
    root.join("templates")
}

/// The capacity of a template's placeholder image disk (a sparse file). The guest keeps its
/// image disks bound across the save, so a clone's image disks keep this capacity (binding
/// them again took ~45 ms under TCG): an upper bound on any image's size, while QEMU bounds
/// every request by the real file's. A larger image boots cold.
pub(crate) const IMAGE_PLACEHOLDER_BYTES: u64 = 1 << 40;

/// What a template is built from (the spawner writes it, the builder reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    pub vm: VmSettings,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub images: usize,
    /// One per volume: read-only?
    pub volumes_read_only: Vec<bool>,
    pub network: bool,
}

/// Identity of a file for the template key: a changed kernel or QEMU binary is a new shape.
fn file_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => format!(
            "{}:{}:{}:{}:{}",
            p.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000
        ),
        Err(_) => format!("{}:missing", p.display()),
    }
}

impl Spec {
    /// The template shape for a pod, or `None` when it must boot cold (asked to, templates
    /// off, or a volume QEMU opens itself, such as `rbd:`).
    pub fn for_pod(vm: &VmSettings, accel: Accel, cfg: &SandboxConfig) -> Option<Spec> {
        if cfg.cold_boot || !vm.templates {
            return None;
        }
        let too_large =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > IMAGE_PLACEHOLDER_BYTES);
        if cfg.images.iter().any(|i| too_large(&i.path)) {
            return None;
        }
        let mut volumes_read_only = Vec::new();
        for v in &cfg.volumes {
            let (_, ro) = super::vm::drive_local_file(&v.drive)?;
            volumes_read_only.push(ro);
        }
        let mut vm = vm.clone();
        // Not part of the shape.
        vm.log_limits = Default::default();
        vm.boot_timeout_secs = vm.boot_timeout_secs.max(60);
        Some(Spec {
            vm,
            accel,
            memory_mib: cfg.memory_mib,
            cpus: cfg.cpus,
            images: cfg.images.len(),
            volumes_read_only,
            network: cfg.network.is_some(),
        })
    }

    /// The template's directory name: a digest of everything the saved VM depends on.
    pub fn key(&self) -> String {
        let qemu = crate::jail::spawn::resolve_program(&self.vm.qemu)
            .unwrap_or_else(|_| self.vm.qemu.clone());
        let desc = format!(
            "h8s-template-v1\nqemu={}\nkernel={}\ninitrd={}\ncmdline={}\naccel={}\ntb={}\n\
             mem={}\ncpus={}\nimages={}\nvolumes={:?}\nnet={}\njail={}\nballoon={}\n{}",
            file_identity(&qemu),
            file_identity(&self.vm.kernel),
            file_identity(&self.vm.initramfs),
            super::vm::kernel_cmdline_for(&self.vm, self.accel),
            self.accel,
            self.vm.tcg_tb_size_mib,
            self.memory_mib,
            self.cpus,
            self.images,
            self.volumes_read_only,
            self.network,
            self.vm.jail.enabled,
            self.vm.free_page_reporting,
            // Firmware directories; nothing for the default (keys of existing templates stay).
            self.vm
                .qemu_data
                .iter()
                .map(|d| format!("data={}\n", d.display()))
                .collect::<String>(),
        );
        let d = ring::digest::digest(&ring::digest::SHA256, desc.as_bytes());
        d.as_ref()[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The sandbox config the template VM boots with: placeholder disks (files in `dir`), a
    /// NIC without a backend.
    pub fn placeholder_config(&self, dir: &Path) -> SandboxConfig {
        let mut cfg = SandboxConfig::new("template");
        cfg.memory_mib = self.memory_mib;
        cfg.cpus = self.cpus;
        for i in 0..self.images {
            cfg.images.push(ImageDisk {
                name: format!("placeholder{i}"),
                path: dir.join("placeholder.img"),
            });
        }
        for (i, ro) in self.volumes_read_only.iter().enumerate() {
            let file = dir.join(format!("placeholder-vol{i}.img"));
            cfg.volumes.push(VolumeDisk {
                serial: format!("placeholder{i}"),
                drive: format!(
                    "file={},format=raw,read-only={}",
                    file.to_string_lossy().replace(',', ",,"),
                    if *ro { "on" } else { "off" }
                ),
            });
        }
        if self.network {
            cfg.network = Some(NetworkAttachment {
                tap: String::new(),
                mac: super::vm::TEMPLATE_MAC.into(),
                address: String::new(),
                gateway: None,
                mtu: 1500,
                dns: vec![],
                cluster_dns: None,
            });
        }
        cfg
    }
}

/// `ready`: written last by a successful build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ready {
    pub created_at: String,
    /// Wall time of the build (boot to saved), ms.
    pub build_ms: u64,
}

/// The stand-in kernel a restored clone's QEMU is given instead of the guest's: 4 KiB of
/// zeros, which QEMU's x86 loader takes as an old-protocol image (no initramfs). A restored
/// guest never reads its kernel or initramfs again (its memory comes from the template, and
/// `-no-reboot` turns a reset into an exit), but QEMU reads both into its own anonymous
/// memory for the VM's whole life — 13.5 MiB for Debian's cloud kernel and 3.8 MiB for the
/// initramfs, per pod. The machine's memory regions (the linuxboot option ROM included) are
/// the same either way, so the template's state still loads.
pub(crate) fn kernel_stub(root: &Path) -> Result<PathBuf> {
    let dir = templates_dir(root);
    let path = dir.join("kernel.stub");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 4096) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let tmp = dir.join(format!(".kernel.stub.{}", std::process::id()));
    std::fs::write(&tmp, [0u8; 4096])
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// One template's directory.
#[derive(Debug, Clone)]
pub(crate) struct TemplateDir {
    pub dir: PathBuf,
}

impl TemplateDir {
    pub fn new(root: &Path, key: &str) -> TemplateDir {
        TemplateDir {
            dir: templates_dir(root).join(key),
        }
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The holder's socket, handing out the template's memory (a sealed memfd).
    pub fn mem(&self) -> PathBuf {
        self.dir.join("mem.sock")
    }
    pub fn ready(&self) -> PathBuf {
        self.dir.join("ready")
    }
    pub fn failed(&self) -> PathBuf {
        self.dir.join("failed")
    }
    fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    fn uses(&self) -> PathBuf {
        self.dir.join("uses")
    }

    pub fn is_ready(&self) -> bool {
        self.ready().is_file()
    }

    /// Pods restored from it so far.
    pub fn uses_count(&self) -> u64 {
        std::fs::read_to_string(self.uses())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Counts one more pod (under the lock of the counter file).
    pub fn count_use(&self) {
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.uses())
        else {
            return;
        };
        // SAFETY: flock on a descriptor we own; released when `f` closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
            return;
        }
        let n = self.uses_count() + 1;
        let _ = f.set_len(0);
        let _ = (&f).write_all(n.to_string().as_bytes());
    }

    /// Holds the build lock, or `None` when another process builds.
    fn try_lock(&self) -> Result<Option<std::fs::File>> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.lock())
            .map_err(|e| Error::io(format!("opening {}", self.lock().display()), e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
            return Ok(None);
        }
        Ok(Some(f))
    }

    fn building(&self) -> bool {
        match std::fs::OpenOptions::new().write(true).open(self.lock()) {
            // SAFETY: flock on a descriptor we own; a lock we get is released on close.
            Ok(f) => (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) < 0,
            Err(_) => false,
        }
    }
}

/// What `run_sandbox` decided for a new pod.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Restore the ready template `key`; `build`: start building that successor in the
    /// background (the template is near its last use).
    Use { key: String, build: Option<String> },
    /// Boot cold; `Some(key)`: start building that template in the background.
    Cold(Option<String>),
}

/// The two directories a shape's templates alternate between: while one serves pods, its
/// successor is built in the other, so retiring a template after `template_max_uses` pods
/// does not leave the pods that follow to boot cold while a new one builds.
fn slots(key: &str) -> [String; 2] {
    [key.to_string(), format!("{key}-b")]
}

/// A ready template of `spec`'s shape whose holder serves its memory (the more used one
/// first), without retiring or building anything: what a warm clone restores.
pub(crate) fn choose_ready(root: &Path, spec: &Spec) -> Option<String> {
    let mut ready: Vec<(u64, String)> = slots(&spec.key())
        .into_iter()
        .map(|k| (TemplateDir::new(root, &k), k))
        .filter(|(t, _)| t.is_ready() && UnixStream::connect(t.mem()).is_ok())
        .map(|(t, k)| (t.uses_count(), k))
        .collect();
    ready.sort();
    ready.pop().map(|(_, k)| k)
}

/// Picks the template for a pod: a ready one, else cold boot (and a build to start unless one
/// runs or failed). A template used `max_uses` times (or whose holder is gone) is retired
/// first; once one has served three quarters of them, its successor starts building.
pub(crate) fn choose(root: &Path, vm: &VmSettings, cfg: &SandboxConfig) -> Result<Choice> {
    let (accel, _) = super::vm::HostVirt::probe().choose(vm.accel, vm.pvm_guest_kernel);
    let Some(spec) = Spec::for_pod(vm, accel, cfg) else {
        return Ok(Choice::Cold(None));
    };
    let max = u64::from(vm.template_max_uses);
    let slots = slots(&spec.key());
    let mut ready = Vec::new();
    for key in &slots {
        let t = TemplateDir::new(root, key);
        if !t.is_ready() {
            continue;
        }
        let uses = t.uses_count();
        if UnixStream::connect(t.mem()).is_err() {
            tracing::info!(template = %key, "VM template's holder is gone; rebuilding it");
            retire(root, key);
        } else if max > 0 && uses >= max {
            tracing::info!(template = %key, uses, "retiring VM template");
            retire(root, key);
        } else {
            ready.push((uses, key.clone()));
        }
    }
    // The most used one first: it is the older, so it retires on time.
    ready.sort();
    if let Some((uses, key)) = ready.pop() {
        let mut build = None;
        if max > 0 && uses >= max * 3 / 4 && ready.is_empty() {
            let other = slots.iter().find(|k| **k != key).expect("two slots");
            build = prepare(root, &spec, other)?.then(|| other.clone());
        }
        return Ok(Choice::Use { key, build });
    }
    // None ready: one build at a time, in a slot whose last build did not fail.
    if slots.iter().any(|k| TemplateDir::new(root, k).building()) {
        return Ok(Choice::Cold(None));
    }
    for key in &slots {
        if prepare(root, &spec, key)? {
            return Ok(Choice::Cold(Some(key.clone())));
        }
    }
    Ok(Choice::Cold(None))
}

/// Writes `spec` into template directory `key` for a build, unless one runs there or failed
/// (a failed shape boots cold until templates are rotated). Whether a build is to start.
fn prepare(root: &Path, spec: &Spec, key: &str) -> Result<bool> {
    let t = TemplateDir::new(root, key);
    if t.is_ready() || t.failed().exists() || t.building() {
        return Ok(false);
    }
    std::fs::create_dir_all(&t.dir)
        .map_err(|e| Error::io(format!("creating {}", t.dir.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(templates_dir(root), std::fs::Permissions::from_mode(0o700));
    let json = serde_json::to_vec_pretty(spec).map_err(|e| Error::Shim(e.to_string()))?;
    std::fs::write(t.spec(), json)
        .map_err(|e| Error::io(format!("writing {}", t.spec().display()), e))?;
    Ok(true)
}

/// Takes a template out of use: new pods no longer find it; running ones keep their
/// mappings of its memory. A build in progress is left alone.
pub(crate) fn retire(root: &Path, key: &str) {
    let t = TemplateDir::new(root, key);
    let gone = templates_dir(root).join(format!(".retired-{key}-{}", crate::util::new_id()));
    if std::fs::rename(&t.dir, &gone).is_err() {
        return;
    }
    // Its holder notices (no `ready` at the old path) and exits.
    let _ = std::fs::remove_dir_all(&gone);
}

/// Retires every template (a new kernel layout and RNG state for the pods that follow).
pub(crate) fn retire_all(root: &Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(templates_dir(root)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = e.file_type().is_ok_and(|t| t.is_dir());
            if name.starts_with(".retired-") {
                // Directories; earlier versions also renamed the stand-in kernel file here.
                let _ = if dir {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
                continue;
            }
            // Templates are directories; `kernel.stub` (a file) is shared by all of them.
            if dir && !TemplateDir::new(root, &name).building() {
                retire(root, &name);
                n += 1;
            }
        }
    }
    n
}

/// A memfd for a template's RAM, sealable once the template VM is gone.
pub(crate) fn memfd(size: u64) -> Result<std::fs::File> {
    // SAFETY: memfd_create with a static C string; the descriptor returned is ours.
    let fd = unsafe {
        libc::memfd_create(
            c"h8s-template".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(size)
        .map_err(|e| Error::io("sizing the template memory", e))?;
    Ok(f)
}

/// Seals the template's memory against every change: no write(2), no shared writable
/// mapping, no resize, no further seal changes; private (copy-on-write) mappings still work.
pub(crate) fn seal(mem: &std::fs::File) -> Result<()> {
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(F_ADD_SEALS) on a memfd we own.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Error::io(
            "sealing the template memory",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The uid of the process at the other end of `sock`.
fn peer_uid(sock: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// The template's memory from its holder (the builder, which stays to keep the sealed memfd
/// alive and hand it out).
pub(crate) fn fetch_memory(t: &TemplateDir) -> Result<std::fs::File> {
    let sock = UnixStream::connect(t.mem())
        .map_err(|e| Error::io(format!("connecting to {}", t.mem().display()), e))?;
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    crate::util::recv_fd(&sock).map_err(|e| Error::io("receiving the template memory", e))
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRef {
    /// Its pid.
    pub pid: u32,
    /// Its start time, clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl ProcessRef {
    /// The process `pid`, if it runs.
    pub fn of(pid: u32) -> Option<ProcessRef> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command (which may hold spaces and parentheses): state is 3rd,
        // starttime the 22nd.
        let rest = stat.rsplit_once(')')?.1;
        let mut f = rest.split_whitespace();
        let state = f.next()?;
        if state == "Z" || state == "X" {
            return None;
        }
        let start_ticks = f.nth(18)?.parse().ok()?;
        Some(ProcessRef { pid, start_ticks })
    }

    /// This process.
    pub fn current() -> Option<ProcessRef> {
        ProcessRef::of(std::process::id())
    }

    /// Whether it still runs (the pid not reused by another process since).
    pub fn alive(&self) -> bool {
        ProcessRef::of(self.pid).is_some_and(|p| p.start_ticks == self.start_ticks)
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pid, self.start_ticks)
    }
}

impl std::str::FromStr for ProcessRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ProcessRef> {
        let bad = || Error::InvalidArgument(format!("{s:?} is not PID:START_TICKS"));
        let (p, t) = s.split_once(':').ok_or_else(bad)?;
        Ok(ProcessRef {
            pid: p.parse().map_err(|_| bad())?,
            start_ticks: t.parse().map_err(|_| bad())?,
        })
    }
}

/// Hands `mem` to every client of the same uid (the directory is root's, 0700) until the
/// template is retired (its directory renamed away) or its `owner` (the node agent that had it
/// built) is gone: then it retires the template itself, so no holder outlives its agent
/// (pods restored from it keep their own mapping of the memory).
fn hold(
    root: &Path,
    key: &str,
    t: &TemplateDir,
    listener: UnixListener,
    mem: std::fs::File,
    owner: Option<ProcessRef>,
) {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    let _ = listener.set_nonblocking(true);
    let mut checked = Instant::now();
    loop {
        if checked.elapsed() >= std::time::Duration::from_millis(500) {
            checked = Instant::now();
            if owner.is_some_and(|o| !o.alive()) {
                tracing::info!("the VM template's agent is gone; its holder retires it and exits");
                retire(root, key);
                return;
            }
        }
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                // A liveness probe (`choose`) hangs up at once: EPIPE is no news.
                if peer_uid(&conn) == Some(me) {
                    if let Err(e) = crate::util::send_fd(&conn, mem.as_raw_fd()) {
                        tracing::debug!(error = %e, "handing out the template memory");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !t.is_ready() {
                    tracing::info!("VM template retired; its holder exits");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => {
                tracing::warn!(error = %e, "template holder: accept");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Entry point of the background builder (`h8s pod-shim --build-template KEY`): builds
/// template `key` from its `spec.json` unless another process does, then holds its memory
/// until the template is retired or `owner` exits. Returns the exit code.
pub fn template_main(root: &Path, key: &str, owner: Option<ProcessRef>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the builder's runtime");
            return 1;
        }
    };
    let t = TemplateDir::new(root, key);
    let span = tracing::info_span!("template", key = %key);
    let _g = span.enter();
    let lock = match t.try_lock() {
        Ok(Some(l)) => l,
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!(error = %e, "template build lock");
            return 1;
        }
    };
    if t.is_ready() {
        return 0;
    }
    let started = Instant::now();
    let built = rt
        .block_on(super::vm::build_template(root, &t))
        .and_then(|mem| {
            let _ = std::fs::remove_file(t.mem());
            let l = UnixListener::bind(t.mem())
                .map_err(|e| Error::io(format!("binding {}", t.mem().display()), e))?;
            Ok((mem, l))
        });
    match built {
        Ok((mem, listener)) => {
            drop(rt);
            let ready = Ready {
                created_at: crate::util::rfc3339_nano(SystemTime::now()),
                build_ms: started.elapsed().as_millis() as u64,
            };
            let tmp = t.dir.join("ready.tmp");
            let ok = serde_json::to_vec(&ready)
                .ok()
                .and_then(|j| std::fs::write(&tmp, j).ok())
                .and_then(|()| std::fs::rename(&tmp, t.ready()).ok());
            drop(lock);
            if ok.is_none() {
                tracing::error!("writing the ready marker failed");
                return 1;
            }
            tracing::info!(build_ms = ready.build_ms, "VM template ready");
            hold(root, key, &t, listener, mem, owner);
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "VM template build failed; this shape boots cold");
            let _ = std::fs::write(t.failed(), e.to_string());
            drop(lock);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmSettings {
        let mut v = VmSettings::from_env().unwrap();
        v.templates = true;
        v
    }

    #[test]
    fn process_refs_tell_a_reused_pid_apart() {
        let me = ProcessRef::current().unwrap();
        assert!(me.alive());
        assert_eq!(me.to_string().parse::<ProcessRef>().unwrap(), me);
        assert!("12".parse::<ProcessRef>().is_err());
        let other = ProcessRef {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!other.alive(), "same pid, another start time");
    }

    #[test]
    fn a_holder_retires_its_template_when_its_owner_exits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let key = "k1";
        let t = TemplateDir::new(&root, key);
        std::fs::create_dir_all(&t.dir).unwrap();
        std::fs::write(t.ready(), b"{}").unwrap();
        let listener = UnixListener::bind(t.mem()).unwrap();
        let mem = memfd(4096).unwrap();
        let mut owner = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let o = ProcessRef::of(owner.id()).unwrap();
        let holder = {
            let root = root.clone();
            std::thread::spawn(move || {
                let t = TemplateDir::new(&root, key);
                hold(&root, key, &t, listener, mem, Some(o));
            })
        };
        // It hands out the memory while its owner runs.
        let got = fetch_memory(&t).unwrap();
        assert_eq!(got.metadata().unwrap().len(), 4096);
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert!(!holder.is_finished());
        owner.kill().unwrap();
        owner.wait().unwrap();
        let t0 = Instant::now();
        while !holder.is_finished() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "the holder outlived its owner"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        holder.join().unwrap();
        assert!(!t.dir.exists(), "the template was retired");
    }

    /// Marks template `key` ready with a live holder socket (returned: keep it) and `uses`.
    fn ready_slot(root: &Path, key: &str, uses: u64) -> UnixListener {
        let t = TemplateDir::new(root, key);
        std::fs::create_dir_all(&t.dir).unwrap();
        std::fs::write(t.ready(), b"{}").unwrap();
        std::fs::write(t.uses(), uses.to_string()).unwrap();
        let _ = std::fs::remove_file(t.mem());
        UnixListener::bind(t.mem()).unwrap()
    }

    #[test]
    fn a_successor_is_built_before_a_template_retires() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut vm = vm();
        vm.template_max_uses = 8;
        let cfg = SandboxConfig::new("a");
        let (accel, _) = super::super::vm::HostVirt::probe().choose(vm.accel, vm.pvm_guest_kernel);
        let [a, b] = slots(&Spec::for_pod(&vm, accel, &cfg).unwrap().key());
        // Nothing ready: boot cold and build the first slot.
        assert_eq!(
            choose(root, &vm, &cfg).unwrap(),
            Choice::Cold(Some(a.clone()))
        );
        // Ready and young: used, nothing built.
        let _ha = ready_slot(root, &a, 5);
        let used = |build| Choice::Use {
            key: a.clone(),
            build,
        };
        assert_eq!(choose(root, &vm, &cfg).unwrap(), used(None));
        // Three quarters used: its successor starts building in the other slot, once.
        std::fs::write(TemplateDir::new(root, &a).uses(), "6").unwrap();
        assert_eq!(choose(root, &vm, &cfg).unwrap(), used(Some(b.clone())));
        let tb = TemplateDir::new(root, &b);
        let lock = tb.try_lock().unwrap().expect("the build lock");
        assert_eq!(choose(root, &vm, &cfg).unwrap(), used(None));
        drop(lock);
        // The successor is ready: the older one still serves until its last use...
        let _hb = ready_slot(root, &b, 0);
        assert_eq!(choose(root, &vm, &cfg).unwrap(), used(None));
        // ...then retires, and the successor takes over without a cold boot.
        std::fs::write(TemplateDir::new(root, &a).uses(), "8").unwrap();
        assert_eq!(
            choose(root, &vm, &cfg).unwrap(),
            Choice::Use {
                key: b.clone(),
                build: None
            }
        );
        assert!(!TemplateDir::new(root, &a).dir.exists(), "retired");
        // A failed slot is skipped; with both failed, pods boot cold.
        std::fs::write(TemplateDir::new(root, &b).uses(), "8").unwrap();
        std::fs::create_dir_all(TemplateDir::new(root, &a).dir.clone()).unwrap();
        std::fs::write(TemplateDir::new(root, &a).failed(), "boom").unwrap();
        assert_eq!(
            choose(root, &vm, &cfg).unwrap(),
            Choice::Cold(Some(b.clone()))
        );
        std::fs::write(tb.failed(), "boom").unwrap();
        assert_eq!(choose(root, &vm, &cfg).unwrap(), Choice::Cold(None));
    }

    #[test]
    fn rotation_retires_templates_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let _held = ready_slot(root, "k1", 0);
        let stub = kernel_stub(root).unwrap();
        std::fs::write(templates_dir(root).join(".retired-kernel.stub-old"), b"x").unwrap();
        assert_eq!(retire_all(root), 1, "one template, the stub is none");
        assert!(stub.is_file(), "the stand-in kernel stays");
        assert!(!TemplateDir::new(root, "k1").dir.exists());
        let left: Vec<_> = std::fs::read_dir(templates_dir(root))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["kernel.stub"], "nothing retired is left behind");
    }

    #[test]
    fn shape_decides_the_key() {
        let mut cfg = SandboxConfig::new("a");
        cfg.images.push(ImageDisk {
            name: "busybox".into(),
            path: "/x/busybox.erofs".into(),
        });
        let a = Spec::for_pod(&vm(), Accel::Tcg, &cfg).unwrap();
        // Another image of the same shape: the same template.
        cfg.images[0].path = "/y/alpine.erofs".into();
        let b = Spec::for_pod(&vm(), Accel::Tcg, &cfg).unwrap();
        assert_eq!(a.key(), b.key());
        cfg.memory_mib = 512;
        assert_ne!(
            Spec::for_pod(&vm(), Accel::Tcg, &cfg).unwrap().key(),
            a.key()
        );
        cfg.memory_mib = 256;
        cfg.volumes.push(VolumeDisk {
            serial: "v".into(),
            drive: "file=/v/1.raw,format=raw,read-only=on".into(),
        });
        assert_ne!(
            Spec::for_pod(&vm(), Accel::Tcg, &cfg).unwrap().key(),
            a.key()
        );
        // rbd volumes and --cold boot cold.
        cfg.volumes[0].drive = "file=rbd:h8s/x,format=raw".into();
        assert!(Spec::for_pod(&vm(), Accel::Tcg, &cfg).is_none());
        cfg.volumes.clear();
        cfg.cold_boot = true;
        assert!(Spec::for_pod(&vm(), Accel::Tcg, &cfg).is_none());
    }

    #[test]
    fn an_image_larger_than_the_placeholder_boots_cold() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SandboxConfig::new("a");
        cfg.images.push(ImageDisk {
            name: "huge".into(),
            path: dir.path().join("huge.erofs"),
        });
        // Sparse files: nothing is written.
        let f = std::fs::File::create(&cfg.images[0].path).unwrap();
        f.set_len(IMAGE_PLACEHOLDER_BYTES).unwrap();
        assert!(Spec::for_pod(&vm(), Accel::Tcg, &cfg).is_some());
        f.set_len(IMAGE_PLACEHOLDER_BYTES + 4096).unwrap();
        assert!(Spec::for_pod(&vm(), Accel::Tcg, &cfg).is_none());
    }

    #[test]
    fn placeholders_keep_the_layout() {
        let s = Spec {
            vm: vm(),
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            images: 2,
            volumes_read_only: vec![false, true],
            network: true,
        };
        let c = s.placeholder_config(Path::new("/t/k"));
        assert_eq!(c.images.len(), 2);
        assert_eq!(c.volumes.len(), 2);
        assert!(c.volumes[0].drive.ends_with("read-only=off"));
        assert!(c.volumes[1].drive.ends_with("read-only=on"));
        assert_eq!(
            c.network.as_ref().map(|n| n.mac.as_str()),
            Some(super::super::vm::TEMPLATE_MAC)
        );
    }

    #[test]
    fn sealed_memory_refuses_writes_but_not_private_mappings() {
        let f = memfd(1 << 20).unwrap();
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on our memfd.
        assert!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0);
        assert!((&f).write_all(b"x").is_err(), "write through the fd");
        assert!(f.set_len(1).is_err(), "shrink");
        // SAFETY: mapping our memfd privately and writing one byte of the mapping.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u8) = 1;
            libc::munmap(p, 1 << 20);
            let shared = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_eq!(shared, libc::MAP_FAILED, "a shared writable mapping");
        }
        let mut b = [9u8; 1];
        use std::io::Read;
        (&f).read_exact(&mut b).unwrap();
        assert_eq!(b[0], 0, "the private write did not reach the file");
    }
}
