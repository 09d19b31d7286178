//! Pod runtime: a CRI-shaped API over the `vm` backend (one QEMU microvm per pod, with the
//! h8s guest agent as PID 1), container logs in the CRI format, and images.
//!
//! Shape: [`Runtime`] is the seam the node agent and the CLI use. Every pod has a supervisor
//! process ([`shim_main`], started by [`Runtime::run_sandbox`]) that owns the VM; the API talks
//! to it over the pod's unix socket, so pods outlive the process that started them.

mod api;
mod client;
mod error;
pub mod image;
mod jail;
mod logs;
pub mod network;
mod service;
mod state;
mod template;
pub mod testing;
mod util;
mod vm;
mod wire;

pub use api::{
    Accel, ContainerConfig, ContainerState, ContainerStatus, ExecConfig, ImageDisk,
    NetworkAttachment, SandboxConfig, SandboxState, SandboxStatus, StreamEvent, VolumeDisk,
    DEFAULT_MEMORY_MIB, VIRTIO_MMIO_SLOTS,
};
pub use client::{
    Runtime, RuntimeConfig, ShimCommand, Stream, StreamInput, StreamOutput, TapAdopter, BUILD_ID,
};
pub use error::{Error, Result};
pub use jail::disk::{
    DiskIo, DiskIoSettings, BPS_ANNOTATION as DISK_BPS_ANNOTATION,
    IOPS_ANNOTATION as DISK_IOPS_ANNOTATION,
};
pub use jail::{CgroupLimit, JailSettings, JailStatus, UidRange};
pub use logs::{open_log_file, LogEntry, LogLimits, LogStream};
pub use service::{
    BoxFuture, ContainerService, ImageService, PodRuntime, RuntimeInfo, SandboxService,
    RUNTIME_NAME,
};
pub use template::{template_main, ProcessRef};
pub use util::rfc3339_nano;
pub use vm::{shim_main, AccelChoice, VmSettings, DEFAULT_WARM_POOL};

/// The accelerator new pods would get on this host with `settings`, and why.
pub fn probe_accel(settings: &VmSettings) -> (Accel, &'static str) {
    vm::HostVirt::probe().choose(settings.accel, settings.pvm_guest_kernel)
}
