//! The pod VM jail's flags, shared by `h8s run`, `h8s agent` and `h8s server`
//! (`docs/runtime.md`, "Jail").

use h8s_runtime::{UidRange, VmSettings};

/// How pod VMs are confined.
#[derive(clap::Args, Clone, Debug)]
pub struct JailArgs {
    /// Run pod VMs without the jail (QEMU as the caller, no own uid, namespaces, cgroups or
    /// supervisor seccomp filter; QEMU's -sandbox stays): for debugging only.
    #[arg(long = "no-jail")]
    pub no_jail: bool,
    /// Host uids handed to pod VMs, one per pod (gid = uid), `FIRST-LAST`. One range per
    /// state root: two h8s instances on a host need disjoint ranges.
    #[arg(long = "jail-uid-range", default_value = "200000-265535")]
    pub uid_range: UidRange,
    /// Memory a pod's cgroup allows beyond its guest RAM, MiB (default: 64, plus the TCG
    /// translation cache under TCG).
    #[arg(long = "jail-memory-overhead")]
    pub memory_overhead_mib: Option<u32>,
}

impl JailArgs {
    /// Applies the flags to the VM settings (the jail is on by default when running as root).
    pub fn apply(&self, vm: &mut VmSettings) {
        if self.no_jail {
            if vm.jail.enabled {
                tracing::warn!("--no-jail: pod VMs run unconfined (QEMU as root under TCG)");
            }
            vm.jail.enabled = false;
        } else if !vm.jail.enabled {
            tracing::warn!("pod VM jail unavailable: it needs root; QEMU runs as this user");
        }
        vm.jail.uid_range = self.uid_range;
        vm.jail.memory_overhead_mib = self.memory_overhead_mib;
    }
}
