//! The CRI-shaped data types of the runtime API: what a pod, a container and an exec are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The accelerator a pod VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm` (VT-x/SVM, or PVM with a PVM guest kernel).
    Kvm,
    /// QEMU's software emulator (Tiny Code Generator).
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// A root filesystem image to attach to the pod VM as a read-only virtio-blk disk.
///
/// microvm's virtio-mmio transport has no hotplug, so every image the pod's containers use
/// is attached when the VM starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDisk {
    /// The image reference containers use to name it (e.g. `busybox:latest`).
    pub name: String,
    /// The erofs file holding the flattened image.
    pub path: PathBuf,
}

/// A persistent volume attached to the pod VM as a writable (or read-only) virtio-blk disk:
/// QEMU opens the backing store itself (a local file or a Ceph RBD image through QEMU's rbd
/// driver); the host never mounts it. Like images, volumes are attached at VM start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDisk {
    /// The serial the guest finds the disk by (`/sys/block/vdX/serial`, at most 20 bytes).
    pub serial: String,
    /// QEMU `-drive` properties from the volume backend (`h8s_volumes::Drive`), without
    /// `id` and `if`.
    pub drive: String,
}

/// The virtio-mmio transports of QEMU's microvm machine (`VIRTIO_NUM_TRANSPORTS`): every
/// virtio device of a pod VM (agent port, images, volumes, network, balloon) takes one.
pub const VIRTIO_MMIO_SLOTS: usize = 8;

/// A network attachment prepared by the network fabric: the pod VM gets a virtio-net device
/// on `tap` and the guest agent configures the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// Host tap device (already created and attached by the fabric).
    pub tap: String,
    /// Guest MAC address, `02:xx:…`.
    pub mac: String,
    /// Guest address with prefix length, `10.1.0.5/24`.
    pub address: String,
    /// Default gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Interface MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// DNS servers for the pod's `/etc/resolv.conf`.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Cluster DNS served inside the VM (then `dns` are its upstream resolvers).
    #[serde(default)]
    pub cluster_dns: Option<h8s_guest::ClusterDns>,
}

fn default_mtu() -> u32 {
    1500
}

/// What a pod sandbox (one VM) is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Human name, unique among this host's pods.
    pub name: String,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Guest vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Images attached at boot (see [`ImageDisk`]).
    #[serde(default)]
    pub images: Vec<ImageDisk>,
    /// Optional network attachment.
    #[serde(default)]
    pub network: Option<NetworkAttachment>,
    /// Persistent volumes attached at boot (see [`VolumeDisk`]).
    #[serde(default)]
    pub volumes: Vec<VolumeDisk>,
    /// Free-form labels (the node agent keeps the Kubernetes pod's identity here).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Power the VM off once every container has exited (`h8s run`'s one-shot pods; the node
    /// agent leaves this off and decides itself).
    #[serde(default)]
    pub stop_with_containers: bool,
    /// The pod's hostname (default: its name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// DNS search domains for the pod's `resolv.conf`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// Boot the VM from scratch even when a VM template could start it (`h8s run --cold`,
    /// RuntimeClass `h8s-vm-cold`): the pod then shares no kernel layout (KASLR) with others.
    #[serde(default)]
    pub cold_boot: bool,
    /// Disk bytes per second the pod asks for (its drives together; 0: unlimited), within
    /// the node's ceiling ([`crate::DiskIoSettings`]); `None`: the node's default.
    #[serde(default)]
    pub disk_bps: Option<u64>,
    /// Disk operations per second the pod asks for, likewise.
    #[serde(default)]
    pub disk_iops: Option<u64>,
}

/// Guest memory of a pod that asks for none, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

fn default_memory() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_cpus() -> u32 {
    1
}

impl SandboxConfig {
    /// A config with defaults for everything but the name.
    pub fn new(name: impl Into<String>) -> Self {
        SandboxConfig {
            name: name.into(),
            memory_mib: default_memory(),
            cpus: default_cpus(),
            images: Vec::new(),
            network: None,
            volumes: Vec::new(),
            labels: BTreeMap::new(),
            stop_with_containers: false,
            hostname: None,
            dns_search: Vec::new(),
            cold_boot: false,
            disk_bps: None,
            disk_iops: None,
        }
    }

    /// How many virtio-mmio transports the VM takes: the agent's virtio-serial port, one per
    /// image and volume, the network, and the balloon when the host adds one.
    pub fn mmio_devices(&self, balloon: bool) -> usize {
        1 + self.images.len()
            + self.volumes.len()
            + usize::from(self.network.is_some())
            + usize::from(balloon)
    }

    /// Checks what can be checked before anything is started.
    pub fn validate(&self) -> Result<()> {
        valid_name("pod", &self.name)?;
        if !(64..=65_536).contains(&self.memory_mib) {
            return Err(Error::InvalidArgument(format!(
                "memory must be 64–65536 MiB, not {}",
                self.memory_mib
            )));
        }
        if !(1..=64).contains(&self.cpus) {
            return Err(Error::InvalidArgument(format!(
                "cpus must be 1–64, not {}",
                self.cpus
            )));
        }
        for (i, img) in self.images.iter().enumerate() {
            if self.images[..i].iter().any(|o| o.name == img.name) {
                return Err(Error::InvalidArgument(format!(
                    "image {:?} attached twice",
                    img.name
                )));
            }
            if !img.path.is_file() {
                return Err(Error::NotFound {
                    kind: "image",
                    id: img.path.display().to_string(),
                });
            }
        }
        for (i, v) in self.volumes.iter().enumerate() {
            let serial_ok = !v.serial.is_empty()
                && v.serial.len() <= 20
                && v.serial
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-');
            if !serial_ok || self.volumes[..i].iter().any(|o| o.serial == v.serial) {
                return Err(Error::InvalidArgument(format!(
                    "volume serial {:?} is not 1-20 letters, digits or '-', or is used twice",
                    v.serial
                )));
            }
            if v.drive
                .split(',')
                .any(|p| p.starts_with("id=") || p.starts_with("if="))
            {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: the drive properties must not set id or if",
                    v.serial
                )));
            }
        }
        let slots = self.mmio_devices(false);
        if slots > VIRTIO_MMIO_SLOTS {
            return Err(Error::InvalidArgument(format!(
                "the pod needs {slots} virtio-mmio devices (the agent port, {} image(s), {} volume(s){}), but a pod VM has {VIRTIO_MMIO_SLOTS}",
                self.images.len(),
                self.volumes.len(),
                if self.network.is_some() { ", the network" } else { "" }
            )));
        }
        if let Some(n) = &self.network {
            valid_name("tap", &n.tap)?;
            let mac_ok = n.mac.len() == 17
                && n.mac.split(':').count() == 6
                && n.mac
                    .split(':')
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
            if !mac_ok {
                return Err(Error::InvalidArgument(format!("bad MAC {:?}", n.mac)));
            }
        }
        Ok(())
    }
}

/// Names of pods, containers and taps: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub(crate) fn valid_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name {name:?} must be 1–63 of [A-Za-z0-9_.-], starting alphanumeric"
        )))
    }
}

/// A container inside a pod. Image config (entrypoint, cmd, env, workdir, user) is merged in
/// by the caller, as the kubelet does; see [`ContainerConfig::with_image_defaults`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Unique within the pod.
    pub name: String,
    /// The [`ImageDisk::name`] whose root filesystem the container runs on.
    pub image: String,
    /// argv: program and arguments (non-empty).
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (default `/`).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a user name from the image's `/etc/passwd`.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a terminal for the container's stdio.
    #[serde(default)]
    pub tty: bool,
    /// Keep the container's stdin open for attach.
    #[serde(default)]
    pub stdin: bool,
    /// Initial terminal size `(rows, cols)` with `tty`.
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
    /// An init container: runs to completion, in order, before app containers.
    #[serde(default)]
    pub init: bool,
    /// Volumes mounted into the container (pod directories, tmpfs, block devices).
    #[serde(default)]
    pub mounts: Vec<h8s_guest::Mount>,
    /// Mount the container's root filesystem read-only (`readOnlyRootFilesystem`): writes
    /// outside its volumes fail with `EROFS`.
    #[serde(default)]
    pub read_only_root: bool,
    /// Bytes the container's writable layer (guest RAM) may hold; unlimited when absent
    /// (the guest's memory bounds it).
    #[serde(default)]
    pub writable_limit_bytes: Option<u64>,
}

impl ContainerConfig {
    /// Applies OCI image defaults the way Kubernetes does: `command` replaces the entrypoint,
    /// explicit args replace the image's cmd, image env comes first and is overridden.
    #[allow(clippy::too_many_arguments)]
    pub fn with_image_defaults(
        mut self,
        entrypoint: &[String],
        cmd: &[String],
        args_given: bool,
        image_env: &[String],
        workdir: Option<&str>,
        user: Option<&str>,
    ) -> Self {
        if !args_given {
            self.command = entrypoint.iter().chain(cmd).cloned().collect();
        } else if !entrypoint.is_empty() && self.command.is_empty() {
            self.command = entrypoint.to_vec();
        }
        let mut env: Vec<String> = image_env.to_vec();
        for kv in std::mem::take(&mut self.env) {
            let key = kv.split('=').next().unwrap_or("").to_string();
            env.retain(|e| e.split('=').next() != Some(key.as_str()));
            env.push(kv);
        }
        self.env = env;
        if self.working_dir.is_none() {
            self.working_dir = workdir.filter(|w| !w.is_empty()).map(str::to_string);
        }
        if self.user.is_none() {
            self.user = user.filter(|u| !u.is_empty()).map(str::to_string);
        }
        self
    }

    /// Checks the config against its pod.
    pub fn validate(&self, sandbox: &SandboxConfig) -> Result<()> {
        valid_name("container", &self.name)?;
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(Error::InvalidArgument(format!(
                "container {:?} has no command (and its image none)",
                self.name
            )));
        }
        if !sandbox.images.iter().any(|i| i.name == self.image) {
            return Err(Error::InvalidArgument(format!(
                "image {:?} is not attached to pod {:?} (microvm has no disk hotplug: list it in the sandbox config)",
                self.image, sandbox.name
            )));
        }
        for kv in &self.env {
            if !kv.contains('=') || kv.starts_with('=') {
                return Err(Error::InvalidArgument(format!(
                    "env {kv:?} is not KEY=VALUE"
                )));
            }
        }
        Ok(())
    }
}

/// A process to run inside a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// argv (non-empty).
    pub command: Vec<String>,
    /// Extra `KEY=VALUE` pairs on top of the container's.
    #[serde(default)]
    pub env: Vec<String>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Forward stdin.
    #[serde(default)]
    pub stdin: bool,
    /// Initial terminal size (rows, cols) when `tty`.
    #[serde(default)]
    pub size: Option<(u16, u16)>,
}

/// Pod state, as CRI has it plus the reason for failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Being started.
    Creating,
    /// VM running, guest agent answering.
    Ready,
    /// Stopped on request; the record and logs remain until removed.
    Stopped,
    /// Died, hung or failed to start; see `reason`.
    Failed,
}

/// Container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created in the guest, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process exited (see `exit_code`).
    Exited,
    /// The pod died with the container in an unknown state.
    Unknown,
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The container's config.
    pub config: ContainerConfig,
    /// Its state.
    pub state: ContainerState,
    /// Exit code (128+N for signal N) once exited.
    pub exit_code: Option<i32>,
    /// RFC 3339 times.
    pub created_at: String,
    /// Set once started.
    pub started_at: Option<String>,
    /// Set once exited.
    pub finished_at: Option<String>,
    /// Why it failed to start or stopped, when known.
    pub reason: Option<String>,
    /// CRI-format log file.
    pub log_path: PathBuf,
}

/// A pod as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// Pod id (12 hex digits).
    pub id: String,
    /// The config it was started with.
    pub config: SandboxConfig,
    /// Its state.
    pub state: SandboxState,
    /// Why it is failed or stopped.
    pub reason: Option<String>,
    /// The accelerator its VM runs on.
    pub accel: Option<Accel>,
    /// Guest kernel release reported by the guest agent.
    pub guest_kernel: Option<String>,
    /// The guest's own boot time (its `CLOCK_BOOTTIME` when the agent became ready), in ms.
    #[serde(default)]
    pub guest_boot_ms: Option<u64>,
    /// QEMU's PID while it runs.
    pub qemu_pid: Option<u32>,
    /// The pod supervisor's PID while it runs.
    pub shim_pid: Option<u32>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Containers in creation order.
    pub containers: Vec<ContainerStatus>,
    /// What confines the pod's VM (uid, namespaces, cgroup limits, what is not enforced);
    /// `None` when it runs without the jail.
    #[serde(default)]
    pub jail: Option<crate::JailStatus>,
    /// How the VM started: `template` (restored from a VM template) or `cold` (booted).
    #[serde(default)]
    pub boot: Option<String>,
    /// The guest agent's random id (drawn again after a restore, so clones differ).
    #[serde(default)]
    pub guest_agent_id: Option<String>,
    /// When each step of the pod's start happened (the runtime's request, the supervisor,
    /// QEMU, the restore or boot, the guest agent, the first container's create, start,
    /// output and exit), in order; see `docs/runtime.md`, "Start timeline".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_timeline: Vec<StartMark>,
}

/// One step of a pod's start ([`SandboxStatus::start_timeline`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartMark {
    /// What happened (`supervisor`, `qemu_spawned`, `migrated`, `resumed`, `hello`, …).
    pub phase: String,
    /// When: the host's `CLOCK_REALTIME` in microseconds since the epoch.
    pub at_us: u64,
}

impl StartMark {
    /// A mark for `phase`, now.
    pub fn now(phase: &str) -> StartMark {
        StartMark {
            phase: phase.to_string(),
            at_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
        }
    }
}

/// Output and end of an attach or exec stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Bytes on the process's stdout (or its terminal).
    Stdout(Vec<u8>),
    /// Bytes on its stderr.
    Stderr(Vec<u8>),
    /// The process ended with this code (128+N for signal N).
    Exit(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_count_against_the_eight_mmio_slots() {
        let mut cfg = SandboxConfig::new("p");
        for i in 0..7 {
            cfg.volumes.push(VolumeDisk {
                serial: format!("vol{i}"),
                drive: "file=/v/x.raw,format=raw".into(),
            });
        }
        // agent port + 7 volumes = 8: fits.
        assert!(cfg.validate().is_ok());
        cfg.volumes.push(VolumeDisk {
            serial: "vol7".into(),
            drive: "file=/v/y.raw,format=raw".into(),
        });
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("needs 9 virtio-mmio devices") && e.contains("has 8"),
            "{e}"
        );
        cfg.volumes.truncate(1);
        cfg.volumes.push(VolumeDisk {
            serial: "vol0".into(),
            drive: "file=/v/z.raw,format=raw".into(),
        });
        assert!(cfg.validate().is_err(), "serials are unique");
        cfg.volumes[1] = VolumeDisk {
            serial: "vol1".into(),
            drive: "file=/v/z.raw,if=ide".into(),
        };
        assert!(cfg.validate().is_err(), "the runtime sets if=");
    }

    #[test]
    fn image_defaults_merge_like_kubernetes() {
        let c = ContainerConfig {
            name: "c".into(),
            image: "i".into(),
            command: vec![],
            env: vec!["A=override".into()],
            working_dir: None,
            user: None,
            tty: false,
            stdin: false,
            tty_size: None,
            init: false,
            mounts: vec![],
            read_only_root: false,
            writable_limit_bytes: None,
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = c.clone().with_image_defaults(
            &s(&["/bin/sh", "-c"]),
            &s(&["echo hi"]),
            false,
            &s(&["A=img", "PATH=/bin"]),
            Some("/w"),
            None,
        );
        assert_eq!(m.command, s(&["/bin/sh", "-c", "echo hi"]));
        assert_eq!(m.env, s(&["PATH=/bin", "A=override"]));
        assert_eq!(m.working_dir.as_deref(), Some("/w"));
        let mut given = c;
        given.command = s(&["uname", "-r"]);
        let m = given.with_image_defaults(&[], &s(&["sh"]), true, &[], None, None);
        assert_eq!(m.command, s(&["uname", "-r"]));
    }

    #[test]
    fn bad_configs_are_rejected_with_reasons() {
        let mut s = SandboxConfig::new("ok-pod");
        s.validate().unwrap();
        s.name = "-bad".into();
        assert!(matches!(s.validate(), Err(Error::InvalidArgument(_))));
        s.name = "ok".into();
        s.memory_mib = 1;
        assert!(s.validate().is_err());
        s.memory_mib = 128;
        s.images.push(ImageDisk {
            name: "x".into(),
            path: "/nonexistent/x.erofs".into(),
        });
        assert!(matches!(s.validate(), Err(Error::NotFound { .. })));
    }
}
