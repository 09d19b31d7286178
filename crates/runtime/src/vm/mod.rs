//! The `vm` backend: one QEMU microvm per pod, supervised by a small per-pod process.

mod agent;
mod qemu;
mod qmp;
mod shim;

pub(crate) use qemu::HostVirt;
pub use qemu::{AccelChoice, VmSettings};
pub use shim::shim_main;
