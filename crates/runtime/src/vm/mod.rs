//! The `vm` backend: one QEMU microvm per pod, supervised by a small per-pod process.

mod agent;
mod qemu;
mod qmp;
mod shim;

pub(crate) use qemu::{
    drive_local_file, kernel_cmdline as kernel_cmdline_for, HostVirt, TEMPLATE_MAC,
};
pub use qemu::{AccelChoice, VmSettings, DEFAULT_WARM_POOL};
pub(crate) use shim::build_template;
pub use shim::shim_main;
