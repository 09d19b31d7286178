//! The QEMU `microvm` command line for one pod, and the accelerator probe.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::api::{Accel, SandboxConfig};

/// How to pick the accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// Hardware KVM if the host has it and the guest kernel can boot on it, else TCG.
    #[default]
    Auto,
    /// Always KVM (fails if unusable).
    Kvm,
    /// Always TCG.
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" | "" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(crate::Error::InvalidArgument(format!(
                "accelerator {s:?} is not auto, kvm or tcg"
            ))),
        }
    }
}

/// What the host offers, probed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostVirt {
    /// `/dev/kvm` opens read-write.
    pub kvm_usable: bool,
    /// The KVM backend is PVM (software paravirtualization; stock kernels cannot boot on it).
    pub pvm: bool,
}

impl HostVirt {
    pub fn probe() -> Self {
        let kvm_usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let pvm = Path::new("/sys/module/kvm_pvm").exists();
        HostVirt { kvm_usable, pvm }
    }

    /// The accelerator for a guest, with the reason (logged and kept in the pod record).
    pub fn choose(self, choice: AccelChoice, pvm_guest_kernel: bool) -> (Accel, &'static str) {
        match choice {
            AccelChoice::Kvm => (Accel::Kvm, "requested"),
            AccelChoice::Tcg => (Accel::Tcg, "requested"),
            AccelChoice::Auto if !self.kvm_usable => (Accel::Tcg, "no usable /dev/kvm"),
            AccelChoice::Auto if self.pvm && !pvm_guest_kernel => (
                Accel::Tcg,
                "/dev/kvm is PVM and the guest kernel is not PVM-capable",
            ),
            AccelChoice::Auto if self.pvm => (Accel::Kvm, "PVM with a PVM guest kernel"),
            AccelChoice::Auto => (Accel::Kvm, "hardware KVM"),
        }
    }
}

/// Host-wide settings of the vm backend.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSettings {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// QEMU's firmware and option ROM directories (`-L`, searched in order before QEMU's
    /// built-in ones; bound read-only into the jail): for a QEMU installed outside `/usr`,
    /// whose built-in paths name the host's `/usr/share/qemu`.
    #[serde(default)]
    pub qemu_data: Vec<PathBuf>,
    /// A directory QEMU's dynamic loader searches first (`LD_LIBRARY_PATH`; bound read-only
    /// into the jail): set-up's stand-ins for libraries Debian's QEMU links but h8s never
    /// calls (`docs/runtime.md`, "QEMU's libraries"). Used only while its `qemu.id` names the
    /// QEMU binary in use and nobody but its owner may change it ([`check_lib_dir`]).
    #[serde(default)]
    pub qemu_lib_dir: Option<PathBuf>,
    /// Guest kernel (bzImage or PVH vmlinux).
    pub kernel: PathBuf,
    /// Guest initramfs holding the agent (PID 1) and modules.
    pub initramfs: PathBuf,
    /// Extra kernel command line, after the runtime's own.
    #[serde(default)]
    pub cmdline_extra: String,
    /// Accelerator choice.
    #[serde(default)]
    pub accel: AccelChoice,
    /// The guest kernel has `CONFIG_PVM_GUEST` (so it may use PVM's `/dev/kvm`).
    #[serde(default)]
    pub pvm_guest_kernel: bool,
    /// Seconds to wait for the guest agent's hello.
    pub boot_timeout_secs: u64,
    /// TCG translation cache size in MiB (QEMU's default, 1 GiB, costs host memory).
    pub tcg_tb_size_mib: u32,
    /// Watchdog period in seconds: the VM is checked this often, a ping may take twice as
    /// long, three missed pings in a row fail the pod.
    #[serde(default = "default_watchdog")]
    pub watchdog_secs: u64,
    /// Add a virtio-balloon with free page reporting to pod VMs (cold and from templates), so
    /// memory the guest frees goes back to the host (needs the guest's `virtio_balloon`
    /// driver; without it the device idles). Part of a template's shape.
    #[serde(default = "default_free_page_reporting")]
    pub free_page_reporting: bool,
    /// Container logs' and the console log's size limits (kubelet's containerLogMaxSize and
    /// containerLogMaxFiles).
    #[serde(default)]
    pub log_limits: crate::logs::LogLimits,
    /// The jail around each pod VM (`docs/runtime.md`, "Jail").
    #[serde(default)]
    pub jail: crate::JailSettings,
    /// Refuse to start a pod whose VM would run under TCG (no hardware virtualization): under
    /// TCG, QEMU is no security boundary of its own.
    #[serde(default)]
    pub require_hardware_virt: bool,
    /// Start pods by restoring a VM template when one is ready for their shape (built in the
    /// background on first use; see `docs/runtime.md`, "VM templates").
    #[serde(default = "default_templates")]
    pub templates: bool,
    /// Retire a template (and build a fresh one, with a new kernel layout and RNG state)
    /// after this many pods were restored from it; 0: never.
    #[serde(default = "default_template_max_uses")]
    pub template_max_uses: u32,
    /// Pods' disk I/O limits (`docs/security.md`, "Limits").
    #[serde(default)]
    pub disk_io: crate::DiskIoSettings,
    /// Warm clones kept per template shape in use: VMs restored from the template ahead of
    /// their pods, their code paths run once, each given to the next pod of that shape
    /// (`docs/runtime.md`, "Warm clones"); 0: none.
    #[serde(default)]
    pub warm_pool: u32,
    /// A small erofs image (a static busybox) written at the start of every template's image
    /// placeholder: a warm clone runs one container from it before it waits for its pod.
    #[serde(default)]
    pub warmup_image: Option<PathBuf>,
}

fn default_free_page_reporting() -> bool {
    true
}

fn default_templates() -> bool {
    true
}

fn default_template_max_uses() -> u32 {
    100
}

impl VmSettings {
    /// Defaults from the environment: `$H8S_CACHE/guest/{vmlinuz,initramfs.img}`,
    /// `H8S_ACCEL`, `H8S_BOOT_TIMEOUT`, `H8S_QEMU`, `H8S_QEMU_DATA` (`:`-separated),
    /// `H8S_GUEST_CMDLINE`, `H8S_PVM_GUEST`, `H8S_FREE_PAGE_REPORTING` (`0`: off),
    /// `H8S_QEMU_LIBS` (`0`: QEMU loads the system's libraries only, not `$H8S_CACHE/qemu-lib`).
    pub fn from_env() -> crate::Result<Self> {
        let cache = std::env::var_os("H8S_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/h8s")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/h8s"));
        let guest = cache.join("guest");
        let accel = std::env::var("H8S_ACCEL").unwrap_or_default().parse()?;
        let boot_timeout_secs = match std::env::var("H8S_BOOT_TIMEOUT") {
            Ok(s) => s.parse().map_err(|_| {
                crate::Error::InvalidArgument(format!("H8S_BOOT_TIMEOUT {s:?} is not seconds"))
            })?,
            Err(_) => 60,
        };
        let qemu_data: Vec<PathBuf> = std::env::var_os("H8S_QEMU_DATA")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = qemu_data.iter().find(|p| !p.is_absolute()) {
            return Err(crate::Error::InvalidArgument(format!(
                "H8S_QEMU_DATA: {} is not an absolute path",
                p.display()
            )));
        }
        Ok(VmSettings {
            qemu: std::env::var_os("H8S_QEMU")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
            qemu_data,
            qemu_lib_dir: Some(cache.join("qemu-lib"))
                .filter(|_| std::env::var("H8S_QEMU_LIBS").map_or(true, |v| v != "0"))
                .filter(|p| p.is_dir()),
            kernel: guest.join("vmlinuz"),
            initramfs: guest.join("initramfs.img"),
            cmdline_extra: std::env::var("H8S_GUEST_CMDLINE").unwrap_or_default(),
            accel,
            pvm_guest_kernel: std::env::var("H8S_PVM_GUEST").is_ok_and(|v| v == "1"),
            boot_timeout_secs,
            tcg_tb_size_mib: std::env::var("H8S_TCG_TB_MIB")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_TCG_TB_MIB),
            watchdog_secs: std::env::var("H8S_WATCHDOG_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&s| s > 0)
                .unwrap_or_else(default_watchdog),
            free_page_reporting: std::env::var("H8S_FREE_PAGE_REPORTING")
                .map_or(true, |v| v != "0"),
            log_limits: Default::default(),
            // On where it can work: the jail needs root.
            jail: crate::JailSettings {
                // SAFETY: geteuid(2) cannot fail and touches no memory.
                enabled: unsafe { libc::geteuid() } == 0,
                ..Default::default()
            },
            require_hardware_virt: false,
            templates: std::env::var("H8S_TEMPLATES").map_or(true, |v| v != "0"),
            template_max_uses: std::env::var("H8S_TEMPLATE_MAX_USES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(default_template_max_uses),
            disk_io: Default::default(),
            warm_pool: std::env::var("H8S_WARM_POOL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_WARM_POOL),
            warmup_image: Some(guest.join("warmup.erofs")).filter(|p| p.is_file()),
        })
    }

    /// Checks that the guest kernel and initramfs exist.
    pub fn validate(&self) -> crate::Result<()> {
        for (what, p) in [
            ("guest kernel", &self.kernel),
            ("guest initramfs", &self.initramfs),
        ] {
            if !p.is_file() {
                return Err(crate::Error::NotFound {
                    kind: if what == "guest kernel" {
                        "guest kernel"
                    } else {
                        "guest initramfs"
                    },
                    id: format!("{} (run scripts/setup)", p.display()),
                });
            }
        }
        Ok(())
    }
}

/// The TCG translation cache (MiB) unless `H8S_TCG_TB_MIB` says otherwise: a pod start
/// translates ~17 MiB of guest code, and a warm clone's pod finds its warm-up's translations
/// only if they were not flushed to make room (16 MiB: flushed; 32: kept; BENCHMARKS.md).
pub const DEFAULT_TCG_TB_MIB: u32 = 32;

/// Warm clones per shape in use unless `H8S_WARM_POOL` says otherwise.
pub const DEFAULT_WARM_POOL: u32 = 2;

fn default_watchdog() -> u64 {
    10
}

/// The host TSC frequency in kHz, for the guest's `tsc_early_khz` (without it, TSC
/// calibration under TCG sometimes fails and the boot hangs; see GUEST-KERNEL.md).
pub(crate) fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

/// Under TCG, keeps transparent huge pages away from QEMU: the flag (`PR_SET_THP_DISABLE`)
/// is set on the calling supervisor and inherited by the QEMU it spawns, across `execve`.
/// QEMU asks for huge pages for its anonymous RAM blocks and its translation cache, so the
/// ACPI tables' ROM (2 MiB reserved, 4 KiB used) took a whole huge page in every pod, and the
/// cache was resident in 2 MiB steps (measured: 2 MiB less PSS per idle template pod). Under
/// KVM there is no translation cache and a cold pod's guest RAM gains from huge pages, so
/// nothing changes there. (A template clone's RAM is a private file mapping, which never gets
/// huge pages.)
pub(crate) fn without_huge_pages(accel: Accel) {
    if accel != Accel::Tcg {
        return;
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers and changes only this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } < 0 {
        // Kernels before 3.15: the pods keep huge pages (more memory, same behaviour).
        tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE failed");
    }
}

/// The guest kernel command line.
pub(crate) fn kernel_cmdline(settings: &VmSettings, accel: Accel) -> String {
    // `random.trust_cpu=on`: seed the kernel RNG from RDRAND at boot (the minimal kernel is
    // built without RANDOM_TRUST_CPU), or the agent's first getrandom(2) waits 0.6-0.9 s for
    // jitter entropy under TCG (whose RDRAND is the host's getrandom). A template's clones
    // are reseeded from host entropy after the restore all the same (`RestoreInfo`).
    let mut c =
        String::from("console=ttyS0 reboot=t panic=-1 quiet loglevel=4 random.trust_cpu=on");
    if accel == Accel::Tcg {
        if let Some(khz) = host_tsc_khz() {
            c.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    if !settings.cmdline_extra.is_empty() {
        c.push(' ');
        c.push_str(&settings.cmdline_extra);
    }
    c
}

/// How one pod VM reaches the host: the kernel and initramfs by path (as QEMU sees them,
/// inside its jail or not), everything else as descriptors the supervisor opened and QEMU
/// inherits, so QEMU needs no access to the pod directory, the image store or `/dev/net/tun`.
pub(crate) struct VmEndpoints {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Listening socket for QMP (`qmp.sock`).
    pub qmp_fd: RawFd,
    /// Listening socket for the guest agent port (`agent.sock`).
    pub agent_fd: RawFd,
    /// `console.log`, opened write-only with `O_APPEND`.
    pub console_fd: RawFd,
    /// Each image, read-only.
    pub image_fds: Vec<RawFd>,
    /// Each volume's local file, as the descriptors of one fd set (a writable volume needs
    /// a read-write and a read-only one: QEMU's block layer opens it both ways); empty: the
    /// drive opens itself (e.g. `rbd:`).
    pub volume_fds: Vec<Vec<RawFd>>,
    /// The tap, attached (`TUNSETIFF`) by the supervisor.
    pub tap_fd: Option<RawFd>,
    /// The pod directory, named in QEMU's command line only (`-add-fd …,opaque=`), so
    /// operators and test harnesses can tell whose QEMU a process is.
    pub pod_dir: PathBuf,
    /// Cold boot, template build or restore.
    pub mode: LaunchMode,
}

/// The MAC a template's NIC has; a restored guest changes it to the pod's.
pub(crate) const TEMPLATE_MAC: &str = "02:68:38:73:00:01";

/// How QEMU starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LaunchMode {
    /// Boot the kernel.
    Cold,
    /// Boot a template VM: guest RAM in `mem` (as QEMU sees it), mapped shared, so what
    /// the guest writes lands in the file; the NIC has [`TEMPLATE_MAC`] and no backend.
    Template { mem: PathBuf },
    /// Restore a template: the same machine, guest RAM a private (copy-on-write) mapping of
    /// the template's `mem`, waiting for its device state (`-incoming defer`).
    Restore { mem: PathBuf },
}

/// The full argv (after the program) for one pod VM.
///
/// Least privilege: QEMU's seccomp sandbox with everything denied that a running VM does not
/// need, no defaults or user config, no shared host paths; the only devices are the agent's
/// virtio-serial port, the images as read-only virtio-blk disks and an optional tap.
pub(crate) fn qemu_args(
    settings: &VmSettings,
    accel: Accel,
    id: &str,
    cfg: &SandboxConfig,
    ep: &VmEndpoints,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-name", &format!("h8s-{id}")]);
    for d in &settings.qemu_data {
        push(&["-L", &d.to_string_lossy()]);
    }
    let mem = match &ep.mode {
        LaunchMode::Cold => None,
        LaunchMode::Template { mem } => Some((mem, "on")),
        LaunchMode::Restore { mem } => Some((mem, "off")),
    };
    match mem {
        None => push(&["-machine", "microvm,rtc=on,acpi=on"]),
        Some((path, share)) => push(&[
            "-machine",
            "microvm,rtc=on,acpi=on,memory-backend=mem",
            "-object",
            &format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share={share}",
                cfg.memory_mib,
                qemu_escape(&path.to_string_lossy())
            ),
        ]),
    }
    match accel {
        Accel::Tcg => {
            let tcg = format!("tcg,thread=multi,tb-size={}", settings.tcg_tb_size_mib);
            push(&["-accel", &tcg, "-cpu", "max"]);
        }
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
    }
    if !matches!(ep.mode, LaunchMode::Restore { .. }) {
        // A restored clone gets a stand-in kernel and no initramfs (template::kernel_stub).
        push(&["-initrd", &ep.initrd.to_string_lossy()]);
    }
    // A descriptor for QEMU's file opens: fd set N holds fd N.
    let fdset = |fd: RawFd| format!("fd={fd},set={fd}");
    push(&[
        "-smp",
        &cfg.cpus.to_string(),
        "-m",
        &format!("{}M", cfg.memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-kernel",
        &ep.kernel.to_string_lossy(),
        "-append",
        &kernel_cmdline(settings, accel),
        "-add-fd",
        &format!(
            "{},opaque={}",
            fdset(ep.console_fd),
            qemu_escape(&ep.pod_dir.to_string_lossy())
        ),
        "-chardev",
        &format!("file,id=con,path=/dev/fdset/{},append=on", ep.console_fd),
        "-serial",
        "chardev:con",
        "-chardev",
        &format!("socket,id=qmp,fd={},server=on,wait=off", ep.qmp_fd),
        "-mon",
        "chardev=qmp,mode=control",
        "-device",
        "virtio-serial-device",
        "-chardev",
        &format!("socket,id=agent,fd={},server=on,wait=off", ep.agent_fd),
        "-device",
        "virtserialport,chardev=agent,name=h8s.agent",
    ]);
    // Every drive in the pod's throttle group: one disk I/O budget for the pod.
    let throttle =
        crate::jail::disk::drive_throttling(settings.disk_io.for_pod(cfg.disk_bps, cfg.disk_iops));
    for (i, (_, fd)) in cfg.images.iter().zip(&ep.image_fds).enumerate() {
        // The serial names the disk inside the guest (/sys/block/vdX/serial).
        push(&[
            "-add-fd",
            &fdset(*fd),
            "-drive",
            &format!(
                "id=img{i},file=/dev/fdset/{fd},format=raw,if=none,read-only=on,\
                 node-name=img{i}-fmt{throttle}"
            ),
            "-device",
            &format!("virtio-blk-device,drive=img{i},serial=img{i}"),
        ]);
    }
    for (i, v) in cfg.volumes.iter().enumerate() {
        // Writable volumes: the backend's drive (file or rbd:), named by serial in the guest.
        let drive = match ep.volume_fds.get(i).map(Vec::as_slice) {
            Some(fds @ [set, ..]) => {
                for fd in fds {
                    push(&["-add-fd", &format!("fd={fd},set={set}")]);
                }
                drive_with_file(&v.drive, &format!("/dev/fdset/{set}"))
            }
            _ => v.drive.clone(),
        };
        push(&[
            "-drive",
            &format!("id=vol{i},if=none,{drive}{throttle}"),
            "-device",
            &format!("virtio-blk-device,drive=vol{i},serial={}", v.serial),
        ]);
    }
    // The balloon (free page reporting) while a transport is left (volumes and images come
    // first). A template clone's QEMU discards reported pages with the template file's hole
    // turned into a no-op by its seccomp filter (`jail::seccomp::clone_memory_filter`), so
    // only the clone's own copies go and the pages read as the template's again. Hence
    // `page-poison=off`: a guest that relies on freed pages reading as zero (`init_on_free`)
    // or poisoned does not report at all.
    if has_balloon(settings, cfg) {
        push(&[
            "-device",
            "virtio-balloon-device,free-page-reporting=on,page-poison=off",
        ]);
    }
    match (&cfg.network, ep.tap_fd, &ep.mode) {
        (Some(n), Some(fd), LaunchMode::Cold) => push(&[
            "-netdev",
            &format!("tap,id=net0,fd={fd},vhost=off"),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={}", n.mac),
        ]),
        (Some(_), Some(fd), LaunchMode::Restore { .. }) => push(&[
            "-netdev",
            &format!("tap,id=net0,fd={fd},vhost=off"),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={TEMPLATE_MAC}"),
        ]),
        (Some(_), _, LaunchMode::Template { .. }) => {
            push(&["-device", &format!("virtio-net-device,mac={TEMPLATE_MAC}")])
        }
        _ => {}
    }
    if let LaunchMode::Restore { .. } = ep.mode {
        push(&["-incoming", "defer"]);
    }
    a
}

/// Whether QEMU may load the libraries in `dir` ([`VmSettings::qemu_lib_dir`]): its
/// `qemu.id` (`SIZE MTIME PATH`, written by set-up once QEMU had started with them) still names
/// `qemu` as it is, and nobody but root or this process's user may change the directory or a
/// file in it. A QEMU upgraded since set-up loads the system's libraries until set-up runs
/// again. The error says why not, for the log.
pub(crate) fn check_lib_dir(dir: &Path, qemu: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let guarded = |p: &Path| -> std::result::Result<(), String> {
        let m = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if m.file_type().is_symlink() || (m.uid() != 0 && m.uid() != euid) || m.mode() & 0o022 != 0
        {
            return Err(format!(
                "{} may be changed by others (owner {}, mode {:o})",
                p.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
        Ok(())
    };
    guarded(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        guarded(&entry.map_err(|e| format!("{}: {e}", dir.display()))?.path())?;
    }
    let id_file = dir.join("qemu.id");
    let mut id = String::new();
    std::fs::File::open(&id_file)
        .and_then(|f| f.take(4096).read_to_string(&mut id))
        .map_err(|e| format!("{}: {e}", id_file.display()))?;
    let qemu = std::fs::canonicalize(qemu).map_err(|e| format!("{}: {e}", qemu.display()))?;
    let m = std::fs::metadata(&qemu).map_err(|e| format!("{}: {e}", qemu.display()))?;
    let now = format!("{} {} {}", m.len(), m.mtime(), qemu.display());
    if id.trim_end() != now {
        return Err(format!(
            "{} names {:?}, not this QEMU ({now:?}): run scripts/setup",
            id_file.display(),
            id.trim_end()
        ));
    }
    Ok(())
}

/// Whether a pod VM gets the balloon: free page reporting on and a transport left for it.
pub(crate) fn has_balloon(settings: &VmSettings, cfg: &SandboxConfig) -> bool {
    settings.free_page_reporting && cfg.mmio_devices(true) <= crate::api::VIRTIO_MMIO_SLOTS
}

/// Splits QEMU `key=value,…` options (`,,` is a literal comma).
fn split_opts(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == ',' {
            if it.peek() == Some(&',') {
                it.next();
                if let Some(o) = out.last_mut() {
                    o.push(',');
                }
            } else {
                out.push(String::new());
            }
        } else if let Some(o) = out.last_mut() {
            o.push(c);
        }
    }
    out
}

/// The local file a volume drive opens (`file=/path`) and whether read-only; `None` for
/// protocol drives such as `rbd:`.
pub(crate) fn drive_local_file(drive: &str) -> Option<(PathBuf, bool)> {
    let opts = split_opts(drive);
    let file = opts.iter().find_map(|o| o.strip_prefix("file="))?;
    if !file.starts_with('/') {
        return None;
    }
    let ro = opts
        .iter()
        .any(|o| matches!(o.as_str(), "read-only=on" | "readonly=on"));
    Some((PathBuf::from(file), ro))
}

/// `drive` with its `file=` replaced by `file`.
fn drive_with_file(drive: &str, file: &str) -> String {
    split_opts(drive)
        .into_iter()
        .map(|o| {
            if o.starts_with("file=") {
                format!("file={}", qemu_escape(file))
            } else {
                qemu_escape(&o)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// QEMU option values use `,,` for a literal comma.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageDisk, NetworkAttachment};

    fn settings() -> VmSettings {
        VmSettings {
            qemu: "qemu-system-x86_64".into(),
            qemu_data: Vec::new(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline_extra: "h8s.debug=1".into(),
            accel: AccelChoice::Auto,
            pvm_guest_kernel: false,
            boot_timeout_secs: 5,
            tcg_tb_size_mib: 32,
            watchdog_secs: 10,
            free_page_reporting: true,
            log_limits: Default::default(),
            jail: Default::default(),
            require_hardware_virt: false,
            templates: true,
            template_max_uses: 100,
            disk_io: crate::DiskIoSettings {
                bps: 1000,
                iops: 10,
                max_bps: 5000,
                max_iops: 100,
            },
            warm_pool: 0,
            warmup_image: None,
            qemu_lib_dir: None,
        }
    }

    #[test]
    fn pvm_without_pvm_guest_kernel_means_tcg() {
        let pvm = HostVirt {
            kvm_usable: true,
            pvm: true,
        };
        assert_eq!(pvm.choose(AccelChoice::Auto, false).0, Accel::Tcg);
        assert_eq!(pvm.choose(AccelChoice::Auto, true).0, Accel::Kvm);
        let hw = HostVirt {
            kvm_usable: true,
            pvm: false,
        };
        assert_eq!(hw.choose(AccelChoice::Auto, false).0, Accel::Kvm);
        let none = HostVirt {
            kvm_usable: false,
            pvm: false,
        };
        assert_eq!(none.choose(AccelChoice::Auto, false).0, Accel::Tcg);
        assert_eq!(none.choose(AccelChoice::Kvm, false).0, Accel::Kvm);
    }

    #[test]
    fn args_are_least_privilege_and_name_every_device() {
        let mut cfg = SandboxConfig::new("p");
        cfg.images.push(ImageDisk {
            name: "busybox".into(),
            path: "/c/a,b.erofs".into(),
        });
        cfg.network = Some(NetworkAttachment {
            tap: "tap0".into(),
            mac: "02:00:00:00:00:01".into(),
            address: "10.0.0.2/24".into(),
            gateway: None,
            mtu: 1500,
            dns: vec![],
            cluster_dns: None,
        });
        let p = VmEndpoints {
            kernel: "/vm/kernel".into(),
            initrd: "/vm/initrd".into(),
            qmp_fd: 3,
            agent_fd: 4,
            console_fd: 5,
            image_fds: vec![6],
            volume_fds: vec![vec![7, 9]],
            tap_fd: Some(8),
            pod_dir: "/r/pods/abc".into(),
            mode: LaunchMode::Cold,
        };
        cfg.volumes.push(crate::api::VolumeDisk {
            serial: "vol-data".into(),
            drive: "file=/v/pv1.raw,format=raw,read-only=off".into(),
        });
        let a = qemu_args(&settings(), Accel::Tcg, "abc", &cfg, &p).join(" ");
        assert!(a.contains(
            "-add-fd fd=7,set=7 -add-fd fd=9,set=7 -drive id=vol0,if=none,file=/dev/fdset/7,format=raw,read-only=off,throttling.bps-total=1000,throttling.iops-total=10,throttling.group=pod-io -device virtio-blk-device,drive=vol0,serial=vol-data"
        ), "{a}");
        assert!(a.contains(
            "-chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control"
        ));
        assert!(a.contains("-chardev socket,id=agent,fd=4,server=on"));
        assert!(a.contains(
            "-add-fd fd=5,set=5,opaque=/r/pods/abc -chardev file,id=con,path=/dev/fdset/5,append=on"
        ));
        assert!(a.contains("-netdev tap,id=net0,fd=8,vhost=off"));
        assert!(a.contains("-kernel /vm/kernel -append"));
        assert!(a.contains("-initrd /vm/initrd"));
        // agent port + image + volume + net + balloon = 5 of 8 slots.
        assert!(a.contains("virtio-balloon-device"));
        assert!(
            !a.contains("-L "),
            "no firmware directory unless configured: {a}"
        );
        // A template clone has the balloon too (its seccomp filter makes discards work).
        let clone = VmEndpoints {
            mode: LaunchMode::Restore {
                mem: "/proc/self/fd/10".into(),
            },
            kernel: p.kernel.clone(),
            initrd: p.initrd.clone(),
            image_fds: p.image_fds.clone(),
            volume_fds: p.volume_fds.clone(),
            pod_dir: p.pod_dir.clone(),
            ..p
        };
        let mut s = settings();
        s.qemu_data = vec![
            "/opt/qemu/share/qemu".into(),
            "/opt/qemu/share/seabios".into(),
        ];
        let c = qemu_args(&s, Accel::Tcg, "abc", &cfg, &clone).join(" ");
        assert!(
            c.contains("virtio-balloon-device,free-page-reporting=on,page-poison=off"),
            "{c}"
        );
        assert!(
            c.starts_with(
                "-name h8s-abc -L /opt/qemu/share/qemu -L /opt/qemu/share/seabios -machine"
            ),
            "{c}"
        );
        assert!(a.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ));
        assert!(a.contains("-nodefaults -no-user-config"));
        assert!(a.contains(
            "-add-fd fd=6,set=6 -drive id=img0,file=/dev/fdset/6,format=raw,if=none,read-only=on,node-name=img0-fmt,throttling.bps-total=1000,throttling.iops-total=10,throttling.group=pod-io -device"
        ), "{a}");
        // Every drive shares the pod's one throttle group; a pod asks for more, up to the
        // node's ceiling.
        assert_eq!(a.matches("throttling.group=pod-io").count(), 2, "{a}");
        let mut more = cfg.clone();
        (more.disk_bps, more.disk_iops) = (Some(1 << 40), Some(50));
        let m = qemu_args(&settings(), Accel::Tcg, "abc", &more, &p).join(" ");
        assert_eq!(
            m.matches("throttling.bps-total=5000,throttling.iops-total=50,")
                .count(),
            2,
            "{m}"
        );
        assert!(a.contains("h8s.debug=1"));
        assert!(a.contains("-accel tcg,thread=multi"));
        assert!(!a.contains("virtfs") && !a.contains("9p") && !a.contains("vhost-user"));
        assert!(
            !a.contains("/r/q") && !a.contains("ifname"),
            "no host path but the kernel's: {a}"
        );
        // A restored clone: the template's memory, no initramfs, the state comes later.
        let mut p = p;
        p.mode = LaunchMode::Restore {
            mem: "/proc/self/fd/10".into(),
        };
        let a = qemu_args(&settings(), Accel::Tcg, "abc", &cfg, &p).join(" ");
        assert!(a.contains("-kernel /vm/kernel -append"));
        assert!(!a.contains("-initrd"), "{a}");
        assert!(a.contains("mem-path=/proc/self/fd/10,share=off"), "{a}");
        assert!(a.ends_with("-incoming defer"), "{a}");
    }

    #[test]
    fn volume_drives_name_their_local_file() {
        assert_eq!(
            drive_local_file("file=/v/a,,b.raw,format=raw,read-only=on"),
            Some((PathBuf::from("/v/a,b.raw"), true))
        );
        assert_eq!(
            drive_local_file("file=/v/p.raw,format=raw,read-only=off"),
            Some((PathBuf::from("/v/p.raw"), false))
        );
        assert_eq!(
            drive_local_file("file=rbd:h8s/pv-1:id=admin:conf=/etc/ceph/ceph.conf,format=raw"),
            None
        );
        assert_eq!(
            drive_with_file("file=/v/a,,b.raw,format=raw,discard=unmap", "/dev/fdset/9"),
            "file=/dev/fdset/9,format=raw,discard=unmap"
        );
    }

    #[test]
    fn a_library_dir_is_used_only_for_the_qemu_it_names_and_only_while_guarded() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let t = tempfile::tempdir().unwrap();
        let qemu = t.path().join("qemu");
        std::fs::write(&qemu, b"\x7fELF").unwrap();
        let dir = t.path().join("lib");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("libcapstone.so.4"), b"").unwrap();
        let m = std::fs::metadata(&qemu).unwrap();
        let qemu = std::fs::canonicalize(&qemu).unwrap();
        let id = format!("{} {} {}\n", m.len(), m.mtime(), qemu.display());
        // No qemu.id: not for any QEMU.
        assert!(check_lib_dir(&dir, &qemu).unwrap_err().contains("qemu.id"));
        std::fs::write(dir.join("qemu.id"), &id).unwrap();
        assert_eq!(check_lib_dir(&dir, &qemu), Ok(()));
        // A file others may write.
        let lib = dir.join("libcapstone.so.4");
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check_lib_dir(&dir, &qemu)
            .unwrap_err()
            .contains("changed by others"));
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Another QEMU binary (as after an upgrade: another size).
        std::fs::write(&qemu, b"\x7fELF, upgraded").unwrap();
        assert!(check_lib_dir(&dir, &qemu)
            .unwrap_err()
            .contains("not this QEMU"));
    }
}
