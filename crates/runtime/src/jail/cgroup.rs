//! Per-pod cgroups, v1 or v2: whichever hierarchy delegates a controller to us.
//!
//! The pod's cgroup is `<our cgroup>/h8s/<pod id>` in each hierarchy that has one of the
//! controllers we limit (memory, cpu, pids, io — v1's `blkio`), where "our cgroup" is the supervisor's (so pods
//! nest under whatever cgroup the node agent was given). QEMU joins it between fork and exec;
//! the supervisor removes it when QEMU is gone.

use std::path::{Path, PathBuf};

use super::CgroupLimit;
use crate::{Error, Result};

/// The controllers a pod is limited by (v2 names; v1 calls `io` `blkio`).
pub(crate) const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];

/// A controller's name in cgroup v1.
fn v1_name(ctrl: &str) -> &str {
    if ctrl == "io" {
        "blkio"
    } else {
        ctrl
    }
}

/// The controller a cgroup v1 mount option names, if we limit it (by its v2 name).
fn from_v1(opt: &str) -> Option<&'static str> {
    CONTROLLERS.into_iter().find(|c| v1_name(c) == opt)
}

/// The most tasks (QEMU's threads) a pod's cgroup allows: vCPU threads, the main loop, RCU,
/// and the block layer's worker pool (up to 64).
pub(crate) const PIDS_MAX: u32 = 256;

/// CFS period used for the CPU quota.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// One mounted cgroup hierarchy as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub version: u8,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// Controllers it offers to our cgroup.
    pub controllers: Vec<String>,
    /// Our cgroup inside it, relative to the mount.
    pub own: PathBuf,
}

impl Hierarchy {
    /// The pod's cgroup directory in this hierarchy.
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.mount.join(&self.own).join("h8s").join(id)
    }
}

/// The hierarchies from `/proc/self/mountinfo` and `/proc/self/cgroup` (v2 controllers are
/// read from `cgroup.controllers` by `v2_controllers`).
pub(crate) fn parse_hierarchies(
    mountinfo: &str,
    self_cgroup: &str,
    v2_controllers: impl Fn(&Path) -> Vec<String>,
) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint opts [optional…] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (mroot, mount) = (l[3], unescape(l[4]));
        match r[0] {
            "cgroup" => {
                // v1 names, as mount options and /proc/self/cgroup spell them.
                let ctrls: Vec<String> = r[2]
                    .split(',')
                    .filter(|o| from_v1(o).is_some() || *o == "cpuacct")
                    .map(str::to_string)
                    .collect();
                if ctrls.is_empty() {
                    continue;
                }
                // Our line in /proc/self/cgroup names the same controller set.
                let own = self_cgroup.lines().find_map(|cl| {
                    let mut it = cl.splitn(3, ':');
                    let (_, names, path) = (it.next()?, it.next()?, it.next()?);
                    let names: Vec<&str> = names.split(',').collect();
                    ctrls
                        .iter()
                        .all(|c| names.contains(&c.as_str()))
                        .then(|| path.to_string())
                });
                let Some(own) = own else { continue };
                let Some(rel) = relative(&own, mroot) else {
                    continue;
                };
                out.push(Hierarchy {
                    version: 1,
                    mount: PathBuf::from(mount),
                    controllers: ctrls
                        .iter()
                        .filter_map(|c| from_v1(c))
                        .map(str::to_string)
                        .collect(),
                    own: rel,
                });
            }
            "cgroup2" => {
                let own = self_cgroup
                    .lines()
                    .find_map(|cl| cl.strip_prefix("0::").map(str::to_string));
                let Some(own) = own else { continue };
                let Some(rel) = relative(&own, mroot) else {
                    continue;
                };
                let mount = PathBuf::from(mount);
                let controllers = v2_controllers(&mount.join(&rel))
                    .into_iter()
                    .filter(|c| CONTROLLERS.contains(&c.as_str()))
                    .collect();
                out.push(Hierarchy {
                    version: 2,
                    mount,
                    controllers,
                    own: rel,
                });
            }
            _ => {}
        }
    }
    out
}

/// `own` relative to a mount whose root is `mroot` (`None` when the mount does not show it).
fn relative(own: &str, mroot: &str) -> Option<PathBuf> {
    let rel = if mroot == "/" {
        own
    } else {
        own.strip_prefix(mroot)?
    };
    Some(PathBuf::from(rel.trim_start_matches('/')))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The hierarchies of this host, as this process sees them.
pub(crate) fn host_hierarchies() -> Vec<Hierarchy> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let sc = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    parse_hierarchies(&mi, &sc, |dir| {
        std::fs::read_to_string(dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

/// The limits of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    pub memory_bytes: u64,
    pub cpu_quota_us: u64,
    pub pids: u32,
    /// Block I/O: each direction's bytes and operations per second (0: unlimited) on
    /// these devices (`major:minor`, whole disks).
    pub io: super::disk::DiskIo,
    pub io_devices: Vec<(u32, u32)>,
}

impl Limits {
    /// Guest RAM plus `overhead_mib`; one CPU per vCPU; no I/O limit.
    pub fn for_pod(memory_mib: u32, cpus: u32, overhead_mib: u32) -> Limits {
        Limits {
            memory_bytes: (u64::from(memory_mib) + u64::from(overhead_mib)) << 20,
            cpu_quota_us: u64::from(cpus.max(1)) * CPU_PERIOD_US,
            pids: PIDS_MAX,
            io: Default::default(),
            io_devices: Vec::new(),
        }
    }

    /// With block I/O limited to `io` on `devices`.
    pub fn with_io(mut self, io: super::disk::DiskIo, devices: Vec<(u32, u32)>) -> Limits {
        self.io = io;
        self.io_devices = devices;
        self
    }
}

/// One file write of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub controller: &'static str,
    pub version: u8,
    pub dir: PathBuf,
    pub file: &'static str,
    pub value: String,
    /// Part of the limit's report (else a companion write, e.g. the swap limit).
    pub report: bool,
}

/// Which hierarchy serves each controller (v2 first, when it offers it), and the files to
/// write; the controllers nobody offers come back as reasons.
pub(crate) fn plan(hier: &[Hierarchy], id: &str, l: &Limits) -> (Vec<Write>, Vec<String>) {
    let mut writes = Vec::new();
    let mut missing = Vec::new();
    for ctrl in CONTROLLERS {
        if ctrl == "io" && (l.io.is_unlimited() || l.io_devices.is_empty()) {
            if !l.io.is_unlimited() {
                missing.push(
                    "io limit (cgroup): no host block device backs the pod's drives (tmpfs, \
                     network); QEMU's throttling bounds them"
                        .into(),
                );
            }
            continue;
        }
        let pick = |v: u8| {
            hier.iter()
                .find(|h| h.version == v && h.controllers.iter().any(|c| c == ctrl))
        };
        let Some(h) = pick(2).or_else(|| pick(1)) else {
            missing.push(format!(
                "{ctrl} limit: no cgroup v1 or v2 hierarchy offers the {ctrl} controller"
            ));
            continue;
        };
        let dir = h.pod_dir(id);
        let mut w = |file: &'static str, value: String, report: bool| {
            writes.push(Write {
                controller: ctrl,
                version: h.version,
                dir: dir.clone(),
                file,
                value,
                report,
            })
        };
        match (ctrl, h.version) {
            ("memory", 1) => {
                w("memory.limit_in_bytes", l.memory_bytes.to_string(), true);
                // Swap must not lift the limit (the file exists only with swap accounting).
                w(
                    "memory.memsw.limit_in_bytes",
                    l.memory_bytes.to_string(),
                    false,
                );
            }
            ("memory", _) => {
                w("memory.max", l.memory_bytes.to_string(), true);
                w("memory.swap.max", "0".into(), false);
            }
            ("cpu", 1) => {
                w("cpu.cfs_period_us", CPU_PERIOD_US.to_string(), false);
                w("cpu.cfs_quota_us", l.cpu_quota_us.to_string(), true);
            }
            ("cpu", _) => w(
                "cpu.max",
                format!("{} {CPU_PERIOD_US}", l.cpu_quota_us),
                true,
            ),
            ("io", 1) => {
                for (ma, mi) in &l.io_devices {
                    for (file, v) in [
                        ("blkio.throttle.read_bps_device", l.io.bps),
                        ("blkio.throttle.write_bps_device", l.io.bps),
                        ("blkio.throttle.read_iops_device", l.io.iops),
                        ("blkio.throttle.write_iops_device", l.io.iops),
                    ] {
                        if v > 0 {
                            w(file, format!("{ma}:{mi} {v}"), true);
                        }
                    }
                }
            }
            ("io", _) => {
                let n = |v: u64| {
                    if v == 0 {
                        "max".to_string()
                    } else {
                        v.to_string()
                    }
                };
                for (ma, mi) in &l.io_devices {
                    let (b, o) = (n(l.io.bps), n(l.io.iops));
                    w(
                        "io.max",
                        format!("{ma}:{mi} rbps={b} wbps={b} riops={o} wiops={o}"),
                        true,
                    );
                }
            }
            _ => w("pids.max", l.pids.to_string(), true),
        }
    }
    (writes, missing)
}

/// A pod's cgroups once created: their directories and what is enforced.
#[derive(Debug, Default)]
pub(crate) struct PodCgroups {
    /// Directories created (one per hierarchy used).
    pub dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each, opened for QEMU to write itself into.
    pub procs: Vec<std::fs::File>,
    pub enforced: Vec<CgroupLimit>,
    pub not_enforced: Vec<String>,
}

/// Creates the pod's cgroups and sets their limits. Nothing is left behind on error.
pub(crate) fn create(hier: &[Hierarchy], id: &str, l: &Limits) -> Result<PodCgroups> {
    let (writes, missing) = plan(hier, id, l);
    let mut out = PodCgroups {
        not_enforced: missing,
        ..Default::default()
    };
    let r = apply(hier, &writes, &mut out);
    if let Err(e) = r {
        remove(&out.dirs);
        return Err(e);
    }
    Ok(out)
}

fn apply(hier: &[Hierarchy], writes: &[Write], out: &mut PodCgroups) -> Result<()> {
    // v2 controllers an ancestor refused to pass down.
    let mut refused: Vec<&str> = Vec::new();
    for w in writes {
        if !out.dirs.contains(&w.dir) {
            let parent = w.dir.parent().unwrap_or(&w.dir).to_path_buf();
            if w.version == 2 {
                // v2: a controller reaches a child only if every ancestor enables it for its
                // children (here: our cgroup and `h8s`).
                let h = hier.iter().find(|h| h.version == 2);
                if let Some(h) = h {
                    std::fs::create_dir_all(&parent)
                        .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
                    let ctrls: Vec<&str> = writes
                        .iter()
                        .filter(|x| x.version == 2)
                        .map(|x| x.controller)
                        .collect();
                    for d in [h.mount.join(&h.own), parent.clone()] {
                        for c in &ctrls {
                            let f = d.join("cgroup.subtree_control");
                            if let Err(e) = std::fs::write(&f, format!("+{c}")) {
                                if !refused.contains(c) {
                                    refused.push(c);
                                    out.not_enforced.push(format!(
                                        "{c} limit: cannot enable {c} in {} ({e}; cgroup v2 \
                                         needs a delegated parent without processes)",
                                        f.display()
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            std::fs::create_dir_all(&w.dir)
                .map_err(|e| Error::io(format!("creating {}", w.dir.display()), e))?;
            out.dirs.push(w.dir.clone());
            let procs = w.dir.join("cgroup.procs");
            out.procs.push(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map_err(|e| Error::io(format!("opening {}", procs.display()), e))?,
            );
        }
        if refused.contains(&w.controller) {
            continue;
        }
        let path = w.dir.join(w.file);
        match std::fs::write(&path, &w.value) {
            Ok(()) if w.report => out.enforced.push(CgroupLimit {
                controller: w.controller.to_string(),
                version: w.version,
                path: w.dir.clone(),
                limit: format!("{}={}", w.file, w.value),
            }),
            Ok(()) => {}
            Err(e) if !w.report && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if w.report => out.not_enforced.push(format!(
                "{} limit: writing {}: {e}",
                w.controller,
                path.display()
            )),
            Err(e) => out.not_enforced.push(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// Whether the kernel's OOM killer struck in the pod's memory cgroup.
pub(crate) fn oom_killed(enforced: &[CgroupLimit]) -> bool {
    enforced
        .iter()
        .filter(|l| l.controller == "memory")
        .any(|l| {
            let f = if l.version == 1 {
                "memory.oom_control"
            } else {
                "memory.events"
            };
            std::fs::read_to_string(l.path.join(f))
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
        })
}

/// Of `dirs`, those that can be pod `id`'s cgroups: absolute, `…/h8s/<id>` with no `..`,
/// on a cgroup or cgroup2 file system.
pub(crate) fn pod_dirs_only(dirs: &[PathBuf], id: &str) -> Vec<PathBuf> {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    dirs.iter()
        .filter(|d| {
            let named = d.is_absolute()
                && !d
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                && d.file_name().is_some_and(|n| n == id)
                && d.parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == "h8s");
            let Some(parent) = d.parent() else {
                return false;
            };
            let Ok(c) = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: statfs(2) with a NUL-terminated path and a zeroed struct it fills.
            let fs_type = unsafe {
                let mut st: libc::statfs = std::mem::zeroed();
                if libc::statfs(c.as_ptr(), &mut st) != 0 {
                    return false;
                }
                st.f_type as i64
            };
            named && matches!(fs_type, CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC)
        })
        .cloned()
        .collect()
}

/// Removes the pod's cgroup directories (their tasks must be gone; retried briefly, since a
/// just-killed QEMU leaves its cgroup a moment after it is reaped).
pub(crate) fn remove(dirs: &[PathBuf]) {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        // A supervisor that dropped to its pod's uid cannot remove its cgroups (their parent
        // is root's): the root client that stops or removes the pod does.
        return;
    }
    for d in dirs {
        for i in 0..50 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    if i == 49 {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot remove the pod's cgroup");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,name=systemd
";
    const SELF: &str = "\
9:name=systemd:/
4:memory:/agent
3:cpu,cpuacct:/agent
0::/agent
";

    #[test]
    fn v1_controllers_are_used_where_v2_offers_none() {
        let h = parse_hierarchies(MOUNTINFO, SELF, |_| vec!["hugetlb".into()]);
        assert_eq!(h.len(), 3, "{h:?}");
        let l = Limits::for_pod(128, 2, 80);
        assert_eq!(l.memory_bytes, 208 << 20);
        let (w, missing) = plan(&h, "abc", &l);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].starts_with("pids limit"));
        let mem: Vec<_> = w.iter().filter(|w| w.controller == "memory").collect();
        assert_eq!(mem[0].dir, Path::new("/sys/fs/cgroup/memory/agent/h8s/abc"));
        assert_eq!(mem[0].file, "memory.limit_in_bytes");
        assert_eq!(mem[0].value, (208u64 << 20).to_string());
        let cpu: Vec<_> = w.iter().filter(|w| w.controller == "cpu").collect();
        assert_eq!(
            cpu[0].dir,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/agent/h8s/abc")
        );
        assert_eq!(cpu[1].file, "cpu.cfs_quota_us");
        assert_eq!(cpu[1].value, "200000");
    }

    #[test]
    fn v2_wins_when_it_delegates_the_controller() {
        let h = parse_hierarchies(MOUNTINFO, SELF, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified/agent"));
            vec!["cpu".into(), "memory".into(), "pids".into()]
        });
        let (w, missing) = plan(&h, "abc", &Limits::for_pod(256, 1, 64));
        assert!(missing.is_empty());
        assert!(w.iter().all(|w| w.version == 2));
        let files: Vec<String> = w
            .iter()
            .map(|w| format!("{}={}", w.file, w.value))
            .collect();
        assert_eq!(
            files,
            vec![
                format!("memory.max={}", 320u64 << 20),
                "memory.swap.max=0".into(),
                "cpu.max=100000 100000".into(),
                format!("pids.max={PIDS_MAX}"),
            ]
        );
        assert_eq!(w[0].dir, Path::new("/sys/fs/cgroup/unified/agent/h8s/abc"));
    }

    #[test]
    fn block_io_is_limited_per_backing_disk_on_v1_blkio_or_v2_io() {
        use crate::jail::disk::DiskIo;
        let mi = "\
38 31 0:35 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let me = "7:blkio:/\n0::/\n";
        let io = DiskIo {
            bps: 1 << 20,
            iops: 0,
        };
        let l = Limits::for_pod(128, 1, 0).with_io(io, vec![(252, 0), (8, 16)]);
        // v1: blkio (the v2 hierarchy offers no controllers).
        let h = parse_hierarchies(mi, me, |_| vec![]);
        assert_eq!(h[0].controllers, ["io"]);
        let (w, _) = plan(&h, "abc", &l);
        let files: Vec<String> = w
            .iter()
            .filter(|w| w.controller == "io")
            .map(|w| format!("{} {}={}", w.dir.display(), w.file, w.value))
            .collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/blkio/h8s/abc blkio.throttle.read_bps_device=252:0 1048576",
                "/sys/fs/cgroup/blkio/h8s/abc blkio.throttle.write_bps_device=252:0 1048576",
                "/sys/fs/cgroup/blkio/h8s/abc blkio.throttle.read_bps_device=8:16 1048576",
                "/sys/fs/cgroup/blkio/h8s/abc blkio.throttle.write_bps_device=8:16 1048576",
            ]
        );
        // v2 wins when it delegates io; unlimited operations are `max`.
        let h = parse_hierarchies(mi, me, |_| vec!["io".into()]);
        let (w, missing) = plan(&h, "abc", &l);
        let io: Vec<_> = w.iter().filter(|w| w.controller == "io").collect();
        assert!(io.iter().all(|w| w.version == 2 && w.file == "io.max"));
        assert_eq!(
            io[0].value,
            "252:0 rbps=1048576 wbps=1048576 riops=max wiops=max"
        );
        assert_eq!(io.len(), 2);
        assert!(!missing.iter().any(|m| m.starts_with("io")), "{missing:?}");
        // A limit without a known disk is reported, not silently dropped; none: no io.
        let (w, missing) = plan(&h, "abc", &Limits::for_pod(128, 1, 0).with_io(l.io, vec![]));
        assert!(w.iter().all(|w| w.controller != "io"));
        assert!(
            missing.iter().any(|m| m.starts_with("io limit")),
            "{missing:?}"
        );
        let (w, missing) = plan(&h, "abc", &Limits::for_pod(128, 1, 0));
        assert!(w.iter().all(|w| w.controller != "io"));
        assert!(!missing.iter().any(|m| m.starts_with("io")), "{missing:?}");
    }

    #[test]
    fn a_bind_mounted_subtree_is_resolved_relative_to_its_root() {
        let mi = "40 30 0:29 /agent /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let h = parse_hierarchies(mi, "4:memory:/agent/sub\n", |_| vec![]);
        assert_eq!(h[0].own, Path::new("sub"));
        // A cgroup outside the mounted subtree cannot be reached: no hierarchy.
        assert!(parse_hierarchies(mi, "4:memory:/other\n", |_| vec![]).is_empty());
    }
}
