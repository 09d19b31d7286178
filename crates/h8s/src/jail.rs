//! The pod VM jail's flags, shared by `h8s run`, `h8s agent` and `h8s server`
//! (`docs/runtime.md`, "Jail").

use h8s_runtime::{DiskIoSettings, UidRange, VmSettings};

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
    /// Disk bytes per second a pod's drives move together (read + write; QEMU's throttling,
    /// and the block cgroup on their host disks), unless its `h8s.io/disk-bandwidth`
    /// annotation asks otherwise; 0: unlimited.
    #[arg(long = "pod-disk-bandwidth", default_value_t = DiskIoSettings::default().bps, value_parser = crate::agent::parse_bytes)]
    pub disk_bps: u64,
    /// Disk operations per second of a pod's drives together, unless its `h8s.io/disk-iops`
    /// annotation asks otherwise; 0: unlimited.
    #[arg(long = "pod-disk-iops", default_value_t = DiskIoSettings::default().iops)]
    pub disk_iops: u64,
    /// The most disk bytes per second a pod's annotation may ask for; 0: no ceiling.
    #[arg(long = "pod-disk-bandwidth-max", default_value_t = DiskIoSettings::default().max_bps, value_parser = crate::agent::parse_bytes)]
    pub disk_max_bps: u64,
    /// The most disk operations per second a pod's annotation may ask for; 0: no ceiling.
    #[arg(long = "pod-disk-iops-max", default_value_t = DiskIoSettings::default().max_iops)]
    pub disk_max_iops: u64,
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
        vm.disk_io = DiskIoSettings {
            bps: self.disk_bps,
            iops: self.disk_iops,
            max_bps: self.disk_max_bps,
            max_iops: self.disk_max_iops,
        };
    }
}
