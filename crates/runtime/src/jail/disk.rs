//! Per-pod disk I/O limits (after Firecracker's rate limiters): a guest must not take the
//! host disk's bandwidth from its neighbours.
//!
//! Two layers:
//! * **QEMU's block throttling**, on every drive of the pod (images and volumes, local or
//!   `rbd:`): all of them join one throttle group, so the pod's drives share one budget of
//!   bytes and operations per second (read and write together). It works on any host,
//!   with or without the jail, and whatever backs the drive.
//! * **The pod's cgroup** (with the jail), as a backstop on the host block devices that
//!   back the pod's local drives: v1 `blkio.throttle.{read,write}_{bps,iops}_device`, v2
//!   `io.max`, each direction bounded by the pod's limit. cgroup v1 throttles only I/O
//!   that reaches the device in the pod's cgroup (reads, and direct writes; page-cache
//!   writeback is the kernel's), v2 all of it.
//!
//! The node's flags set a default and a ceiling; a pod raises (or lowers) its own limits up
//! to the ceiling with the annotations [`BPS_ANNOTATION`] and [`IOPS_ANNOTATION`], as
//! Kubernetes' `kubernetes.io/{ingress,egress}-bandwidth` annotations shape a pod's network.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The pod annotation asking for a disk bandwidth, bytes per second (a quantity: `200Mi`).
pub const BPS_ANNOTATION: &str = "h8s.io/disk-bandwidth";
/// The pod annotation asking for disk operations per second.
pub const IOPS_ANNOTATION: &str = "h8s.io/disk-iops";

/// The name of a pod's throttle group in its QEMU.
pub(crate) const THROTTLE_GROUP: &str = "pod-io";

/// The node's disk I/O limits for pods (part of [`crate::VmSettings`]); 0: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskIoSettings {
    /// Bytes per second (read + write) a pod's drives move together, unless it asks.
    pub bps: u64,
    /// Operations per second (read + write) of a pod's drives together, unless it asks.
    pub iops: u64,
    /// The most bytes per second a pod may ask for.
    pub max_bps: u64,
    /// The most operations per second a pod may ask for.
    pub max_iops: u64,
}

impl Default for DiskIoSettings {
    fn default() -> Self {
        DiskIoSettings {
            bps: 128 << 20,
            iops: 4000,
            max_bps: 1 << 30,
            max_iops: 32_000,
        }
    }
}

/// One pod's disk I/O limits; 0: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIo {
    pub bps: u64,
    pub iops: u64,
}

impl DiskIo {
    pub fn is_unlimited(&self) -> bool {
        self.bps == 0 && self.iops == 0
    }
}

/// `asked` (0: unlimited) if given, else `default`, never above `max` (0: no ceiling).
fn bounded(asked: Option<u64>, default: u64, max: u64) -> u64 {
    let v = asked.unwrap_or(default);
    match (v, max) {
        (_, 0) => v,
        (0, m) => m,
        (v, m) => v.min(m),
    }
}

impl DiskIoSettings {
    /// The limits of a pod asking for `bps` and `iops` (its annotations, if any).
    pub fn for_pod(&self, bps: Option<u64>, iops: Option<u64>) -> DiskIo {
        DiskIo {
            bps: bounded(bps, self.bps, self.max_bps),
            iops: bounded(iops, self.iops, self.max_iops),
        }
    }
}

/// The `-drive` options that put a drive into the pod's throttle group (empty: unlimited).
/// Every drive repeats the same limits, which are the group's.
pub(crate) fn drive_throttling(io: DiskIo) -> String {
    if io.is_unlimited() {
        return String::new();
    }
    let mut s = String::new();
    if io.bps > 0 {
        s.push_str(&format!(",throttling.bps-total={}", io.bps));
    }
    if io.iops > 0 {
        s.push_str(&format!(",throttling.iops-total={}", io.iops));
    }
    s.push_str(&format!(",throttling.group={THROTTLE_GROUP}"));
    s
}

/// The whole block device (`major:minor`) holding `path`'s data, if it is on one: a
/// partition's disk (the block cgroups take whole disks), nothing for tmpfs, overlay or
/// network file systems (device major 0).
pub(crate) fn backing_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return None;
    }
    let sys = Path::new("/sys/dev/block").join(format!("{major}:{minor}"));
    if !sys.exists() {
        return None;
    }
    if sys.join("partition").exists() {
        // /sys/dev/block/M:m → …/block/sda/sda1: the disk is the parent directory.
        let disk = std::fs::read_to_string(sys.join("../dev")).ok()?;
        let (ma, mi) = disk.trim().split_once(':')?;
        return Some((ma.parse().ok()?, mi.parse().ok()?));
    }
    Some((major, minor))
}

/// The distinct block devices backing `paths`.
pub(crate) fn backing_devices<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for p in paths {
        if let Some(d) = backing_device(p) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Each drive's throttling from QEMU's `query-block` answer: `DEVICE bps=N iops=N group=G`
/// (`DEVICE unthrottled` for a drive outside any group).
pub(crate) fn throttles_of(query_block: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for d in query_block.as_array().into_iter().flatten() {
        let name = d["device"].as_str().unwrap_or("?");
        let Some(ins) = d.get("inserted") else {
            continue;
        };
        match ins["group"].as_str() {
            Some(g) => out.push(format!(
                "{name} bps={} iops={} group={g}",
                ins["bps"].as_u64().unwrap_or(0),
                ins["iops"].as_u64().unwrap_or(0)
            )),
            None => out.push(format!("{name} unthrottled")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_asks_within_the_nodes_ceiling() {
        let s = DiskIoSettings {
            bps: 100,
            iops: 10,
            max_bps: 1000,
            max_iops: 0,
        };
        assert_eq!(s.for_pod(None, None), DiskIo { bps: 100, iops: 10 });
        // Raised, capped at the ceiling; lowered; unlimited only where there is no ceiling.
        assert_eq!(
            s.for_pod(Some(5000), Some(50)),
            DiskIo {
                bps: 1000,
                iops: 50
            }
        );
        assert_eq!(s.for_pod(Some(7), None).bps, 7);
        assert_eq!(s.for_pod(Some(0), Some(0)), DiskIo { bps: 1000, iops: 0 });
    }

    #[test]
    fn every_drive_joins_the_pods_group() {
        assert_eq!(drive_throttling(DiskIo::default()), "");
        assert_eq!(
            drive_throttling(DiskIo {
                bps: 1 << 20,
                iops: 0
            }),
            ",throttling.bps-total=1048576,throttling.group=pod-io"
        );
        assert_eq!(
            drive_throttling(DiskIo { bps: 5, iops: 6 }),
            ",throttling.bps-total=5,throttling.iops-total=6,throttling.group=pod-io"
        );
    }

    #[test]
    fn query_block_answers_are_summarised_per_drive() {
        let v = serde_json::json!([
            {"device": "img0", "inserted": {"bps": 5, "iops": 6, "group": "pod-io"}},
            {"device": "vol0", "inserted": {"bps": 0, "iops": 0}},
            {"device": "cd", "removable": true},
        ]);
        assert_eq!(
            throttles_of(&v),
            ["img0 bps=5 iops=6 group=pod-io", "vol0 unthrottled"]
        );
    }

    #[test]
    fn backing_devices_are_whole_disks_or_nothing() {
        // /proc is no block device.
        assert_eq!(backing_device(Path::new("/proc/self/status")), None);
        assert_eq!(backing_device(Path::new("/nonexistent")), None);
        // A file on a disk: a whole disk (no `partition` attribute), as /sys lists it.
        let exe = std::env::current_exe().unwrap();
        if let Some((ma, mi)) = backing_device(&exe) {
            let sys = Path::new("/sys/dev/block").join(format!("{ma}:{mi}"));
            assert!(sys.exists() && !sys.join("partition").exists());
        }
        let twice = backing_devices([exe.as_path(), exe.as_path()]);
        assert!(twice.len() <= 1);
    }
}
