//! The jail around every pod VM (after Firecracker's `jailer`): under TCG QEMU is no
//! security boundary, so the host is protected by what confines the QEMU process.
//!
//! * **Identity**: each pod gets its own unprivileged uid/gid from a configured range
//!   ([`UidRange`], allocated in [`uids`] and kept in the pod record, so a restarted supervisor
//!   finds the same one). QEMU runs as that uid with no capabilities (bounding set dropped,
//!   `no_new_privs`).
//! * **Files**: QEMU opens nothing by path but the kernel and initramfs: the supervisor hands it
//!   its QMP and agent listening sockets, console log, image and volume files and tap as file
//!   descriptors, so the pod directory stays root-only (0700).
//! * **Namespaces** ([`spawn`]): own mount namespace whose root (`pivot_root` onto a tmpfs)
//!   holds `/usr` read-only, the kernel and initramfs read-only, `/dev/null`, `/dev/zero`,
//!   `/dev/urandom` (and `/dev/kvm` under KVM); own PID, IPC, UTS, cgroup and (unless a volume
//!   needs the host network) network namespaces.
//! * **cgroups** ([`cgroup`]): v1 or v2, whichever delegates the controller: memory
//!   (guest RAM + overhead), CPU quota (the pod's vCPUs), pids, and block I/O on the devices
//!   backing the pod's drives ([`disk`], besides QEMU's own throttling of every drive).
//! * **seccomp** ([`seccomp`]): the supervisor itself runs under an allow-list filter once the
//!   VM is up, besides QEMU's own `-sandbox`.
//!
//! Whatever is unavailable is logged and listed in the pod's [`JailStatus::not_enforced`].

pub(crate) mod cgroup;
#[cfg(test)]
mod cgroup_v2_vm;
pub(crate) mod disk;
pub(crate) mod seccomp;
pub(crate) mod spawn;
pub(crate) mod uids;

use serde::{Deserialize, Serialize};

/// Host-wide jail settings (part of [`crate::VmSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSettings {
    /// Jail new pods (needs root). Off: QEMU runs as the caller, with only `-sandbox`.
    #[serde(default)]
    pub enabled: bool,
    /// Host uids (and gids, the same numbers) handed out to pods, one per pod.
    #[serde(default)]
    pub uid_range: UidRange,
    /// Memory a pod's cgroup allows beyond its guest RAM, MiB (QEMU's heaps, the TCG
    /// translation cache, page cache of its disks). `None`: [`default_overhead_mib`].
    #[serde(default)]
    pub memory_overhead_mib: Option<u32>,
}

/// The cgroup memory overhead when none is configured: 64 MiB plus the TCG translation
/// cache (measured: QEMU's own heaps ~25 MiB, page cache of kernel and initramfs ~17 MiB).
pub fn default_overhead_mib(accel: crate::Accel, tcg_tb_size_mib: u32) -> u32 {
    match accel {
        crate::Accel::Tcg => 64 + tcg_tb_size_mib,
        crate::Accel::Kvm => 64,
    }
}

/// Memory a pod's cgroup allows in addition for each volume QEMU opens through a network
/// block driver (`rbd:`): the Ceph client inside QEMU (librados' messenger threads and
/// buffers, librbd's 32 MiB writeback cache). Without it a pod VM writing to an RBD volume
/// was killed by the cgroup's OOM killer at guest RAM + 80 MiB (bench_volumes, TCG).
pub const REMOTE_DRIVE_OVERHEAD_MIB: u32 = 128;

/// An inclusive range of host uids, written `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidRange {
    /// First uid.
    pub first: u32,
    /// Last uid (inclusive).
    pub last: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange {
            first: 200_000,
            last: 265_535,
        }
    }
}

impl UidRange {
    /// How many uids the range holds.
    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    /// Never true for a parsed range.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

impl std::str::FromStr for UidRange {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = || {
            crate::Error::InvalidArgument(format!(
                "uid range {s:?} is not FIRST-LAST with 1000 <= FIRST <= LAST < 4294967295"
            ))
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u32 = a.trim().parse().map_err(|_| bad())?;
        let last: u32 = b.trim().parse().map_err(|_| bad())?;
        // Below 1000 live the host's system accounts; u32::MAX is "no uid" to the kernel.
        if first < 1000 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange { first, last })
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// What confines one pod's VM, as recorded in its record and reported in its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailStatus {
    /// QEMU's uid.
    pub uid: u32,
    /// QEMU's gid.
    pub gid: u32,
    /// Namespaces QEMU has of its own (`mount`, `pid`, `ipc`, `uts`, `cgroup`, `net`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The cgroup limits in force.
    #[serde(default)]
    pub cgroups: Vec<CgroupLimit>,
    /// The pod's cgroup directories (removed when the VM is gone).
    #[serde(default)]
    pub cgroup_dirs: Vec<std::path::PathBuf>,
    /// The uid the supervisor runs as once the VM is up (the pod's own; `None`: root).
    #[serde(default)]
    pub supervisor_uid: Option<u32>,
    /// Capabilities the supervisor kept once the VM ran: none when it runs as the pod's uid.
    #[serde(default)]
    pub supervisor_caps: Vec<String>,
    /// The supervisor runs under its own seccomp filter.
    #[serde(default)]
    pub supervisor_seccomp: bool,
    /// What could not be enforced, and why.
    #[serde(default)]
    pub not_enforced: Vec<String>,
    /// Each drive's I/O throttling as the running QEMU reports it (`query-block`):
    /// `img0 bps=… iops=… group=pod-io`.
    #[serde(default)]
    pub disk_throttle: Vec<String>,
}

/// One enforced cgroup limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimit {
    /// `memory`, `cpu` or `pids`.
    pub controller: String,
    /// cgroup version, 1 or 2.
    pub version: u8,
    /// The pod's cgroup directory.
    pub path: std::path::PathBuf,
    /// The limit file and value, e.g. `memory.limit_in_bytes=419430400`.
    pub limit: String,
}

/// Frees what a pod's jail holds on the host once its VM is gone: its cgroups and, with
/// `release_uid` (the pod is removed or never started), its uid.
pub(crate) fn release(root: &std::path::Path, id: &str, jail: &JailStatus, release_uid: bool) {
    // The record may have been written by the pod's uid (its supervisor): remove only
    // directories that are this pod's cgroups, never what else a record names.
    cgroup::remove(&cgroup::pod_dirs_only(&jail.cgroup_dirs, id));
    if release_uid {
        uids::release(root, jail.uid, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_parse_and_refuse_nonsense() {
        let r: UidRange = "200000-265535".parse().unwrap();
        assert_eq!(r.len(), 65536);
        assert_eq!(r.to_string(), "200000-265535");
        for bad in [
            "",
            "5",
            "0-10",
            "999-2000",
            "3000-2000",
            "1000-4294967295",
            "a-b",
        ] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }
}
