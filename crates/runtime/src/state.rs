//! On-disk pod state: one directory per pod under `<root>/pods/<id>/` holding the pod record
//! (`pod.json`), the sockets of QEMU and the pod supervisor, the VM console and CRI logs.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{Accel, ContainerStatus, SandboxConfig, SandboxState, SandboxStatus};
use crate::util;
use crate::{Error, Result};

/// A process named by PID and start time (so a reused PID is never mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcRef {
    pub pid: u32,
    pub start: u64,
}

impl ProcRef {
    pub fn of(pid: u32) -> Option<ProcRef> {
        util::process_start_time(pid).map(|start| ProcRef { pid, start })
    }
    pub fn alive(&self) -> bool {
        util::process_alive(self.pid, self.start)
    }
    pub fn kill(&self, sig: i32) -> bool {
        util::kill_checked(self.pid, self.start, sig)
    }
}

/// Everything the runtime remembers about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    pub id: String,
    pub config: SandboxConfig,
    pub created_at: String,
    pub state: SandboxState,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub accel: Option<Accel>,
    #[serde(default)]
    pub accel_reason: Option<String>,
    #[serde(default)]
    pub guest_kernel: Option<String>,
    #[serde(default)]
    pub guest_boot_ms: Option<u64>,
    #[serde(default)]
    pub shim: Option<ProcRef>,
    #[serde(default)]
    pub qemu: Option<ProcRef>,
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
    /// Guest process id of each container's main process (stable across supervisor restarts).
    #[serde(default)]
    pub process_ids: std::collections::BTreeMap<String, u32>,
    /// The VM settings the pod was started with.
    pub vm: crate::VmSettings,
    /// The pod's jail (uid from the start, the rest once QEMU runs); `None`: not jailed.
    #[serde(default)]
    pub jail: Option<crate::JailStatus>,
    /// The VM template run_sandbox chose for this pod (its directory name), if any.
    #[serde(default)]
    pub template: Option<String>,
    /// How the VM started (`template` or `cold`), and why a chosen template was not used.
    #[serde(default)]
    pub boot: Option<String>,
    /// See [`SandboxStatus::guest_agent_id`].
    #[serde(default)]
    pub guest_agent_id: Option<String>,
    /// See [`SandboxStatus::start_timeline`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_timeline: Vec<crate::api::StartMark>,
    /// While this VM is a warm clone waiting for a pod: the shape it serves (its directory
    /// under `<root>/pool/`); `None` for a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The process whose exit ends this warm clone while it waits (the node agent, as
    /// `ProcessRef`'s text), so no idle clone outlives its agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_owner: Option<String>,
}

impl PodRecord {
    /// The record of pod `id` about to start (`Creating`, created now) with `config` and `vm`.
    pub fn new(id: &str, config: SandboxConfig, vm: crate::VmSettings) -> PodRecord {
        PodRecord {
            id: id.to_string(),
            config,
            created_at: crate::util::rfc3339_nano(std::time::SystemTime::now()),
            state: SandboxState::Creating,
            reason: None,
            accel: None,
            accel_reason: None,
            guest_kernel: None,
            guest_boot_ms: None,
            shim: None,
            qemu: None,
            containers: Vec::new(),
            process_ids: Default::default(),
            vm,
            jail: None,
            template: None,
            boot: None,
            guest_agent_id: None,
            start_timeline: Vec::new(),
            pool: None,
            pool_owner: None,
        }
    }

    pub fn status(&self) -> SandboxStatus {
        SandboxStatus {
            id: self.id.clone(),
            config: self.config.clone(),
            state: self.state,
            reason: self.reason.clone(),
            accel: self.accel,
            guest_kernel: self.guest_kernel.clone(),
            guest_boot_ms: self.guest_boot_ms,
            qemu_pid: self.qemu.filter(ProcRef::alive).map(|p| p.pid),
            shim_pid: self.shim.filter(ProcRef::alive).map(|p| p.pid),
            created_at: self.created_at.clone(),
            containers: self.containers.clone(),
            jail: self.jail.clone(),
            boot: self.boot.clone(),
            guest_agent_id: self.guest_agent_id.clone(),
            start_timeline: self.start_timeline.clone(),
        }
    }
}

/// The directory of one pod.
#[derive(Debug, Clone)]
pub(crate) struct PodDir {
    pub dir: PathBuf,
}

impl PodDir {
    pub fn new(root: &Path, id: &str) -> PodDir {
        PodDir {
            dir: root.join("pods").join(id),
        }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("pod.json")
    }
    pub fn shim_sock(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    pub fn qmp_sock(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn agent_sock(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    /// Creates the directory (failing if it exists) and writes the first record.
    pub fn create(&self, rec: &PodRecord) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        // Root-only (or owner-only): the pod's logs and sockets are nobody else's business,
        // least of all other pods' QEMU uids.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        kind: "pod",
                        id: rec.id.clone(),
                    }
                } else {
                    Error::io(format!("creating {}", self.dir.display()), e)
                }
            })?;
        let logs = self.dir.join("logs");
        std::fs::create_dir(&logs)
            .map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;
        self.save(rec)
    }

    pub fn load(&self) -> Result<PodRecord> {
        let path = self.record();
        let data = read_bounded(&path, MAX_RECORD_BYTES).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    kind: "pod",
                    id: self
                        .dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                }
            } else {
                Error::io(format!("reading {}", path.display()), e)
            }
        })?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::Shim(format!("corrupt record {}: {e}", path.display())))
    }

    /// Writes the record atomically (readers never see half a file).
    pub fn save(&self, rec: &PodRecord) -> Result<()> {
        let tmp = self.dir.join(".pod.json.tmp");
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| Error::Shim(format!("encoding record: {e}")))?;
        // A jailed pod's directory belongs to its uid: a root writer never follows a link
        // its supervisor may have left under the temporary name (unlink, then O_EXCL).
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data))
            .and_then(|_| std::fs::rename(&tmp, self.record()))
            .map_err(|e| Error::io(format!("writing {}", self.record().display()), e))
    }

    /// The uid owning the pod directory: root until a jailed pod's supervisor takes it over
    /// (it then belongs to the pod's uid, which cannot give it back to root).
    pub fn owner(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.dir).ok().map(|m| m.uid())
    }

    /// Sends `sig` to `p`, a process the record names, if it can be pod `id`'s. Once the
    /// directory is the pod uid's the record is that uid's to write, so a root client
    /// signals only processes of that uid, or root processes whose command line names the
    /// pod (its supervisor before it dropped, an rbd pod's QEMU) — never one a compromised
    /// supervisor wrote into the record.
    pub fn kill(&self, id: &str, p: ProcRef, sig: i32) -> bool {
        match self.owner() {
            None | Some(0) => p.kill(sig),
            Some(owner) => {
                let ours = match util::process_uid(p.pid) {
                    Some(u) if u == owner => true,
                    Some(0) => util::process_args(p.pid)
                        .iter()
                        .any(|a| a == id || a.contains(&format!("pods/{id}"))),
                    _ => false,
                };
                if !ours {
                    tracing::warn!(pid = p.pid, pod = %id, "the pod record names a process that is not the pod's; not signalling it");
                    return false;
                }
                p.kill(sig)
            }
        }
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.dir.display()), e)),
        }
    }
}

/// All pod ids under `root`.
pub(crate) fn list_ids(root: &Path) -> Result<Vec<String>> {
    let pods = root.join("pods");
    let rd = match std::fs::read_dir(&pods) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", pods.display()), e)),
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("pod.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The largest pod record a client reads (a record is a few KiB; a jailed pod's uid owns the
/// file, so its size is not ours to trust).
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// Reads a regular file of at most `max` bytes, not following a final symlink and never
/// blocking on a FIFO.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a regular file of at most {max} bytes"),
        ));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    f.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Once a pod directory is not root's, a root client signals only the processes a pod
    /// can have: its uid's, or root's naming the pod. Signal 0 only checks.
    #[test]
    fn a_record_the_pod_writes_cannot_aim_signals_elsewhere() {
        let t = tempfile::tempdir().unwrap();
        let id = "0123456789ab";
        let dir = PodDir::new(t.path(), id);
        std::fs::create_dir_all(&dir.dir).unwrap();
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        let pod_uid = if root {
            4242
        } else {
            // SAFETY: as above.
            unsafe { libc::geteuid() }
        };
        std::os::unix::fs::lchown(&dir.dir, Some(pod_uid), Some(pod_uid)).unwrap();
        let spawn = |uid: Option<u32>, name: &str| {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", "sleep 30", name]);
            if let Some(u) = uid {
                c.uid(u).gid(u);
            }
            let child = c.spawn().unwrap();
            let pid = child.id();
            for _ in 0..100 {
                if util::process_args(pid).iter().any(|a| a == name) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            (child, ProcRef::of(pid).unwrap())
        };
        // PID 1 is nobody's pod.
        let init = ProcRef::of(1).unwrap();
        assert!(!dir.kill(id, init, 0));
        let mut children = Vec::new();
        let (c, p) = spawn(None, &format!("pods/{id}"));
        children.push(c);
        assert!(dir.kill(id, p, 0), "root naming the pod, or the pod's uid");
        if root {
            let (c, p) = spawn(None, "pods/000000000000");
            children.push(c);
            assert!(!dir.kill(id, p, 0), "root naming another pod");
            let (c, p) = spawn(Some(pod_uid), "x");
            children.push(c);
            assert!(dir.kill(id, p, 0), "the pod's uid");
            let (c, p) = spawn(Some(pod_uid + 1), "x");
            children.push(c);
            assert!(!dir.kill(id, p, 0), "another uid");
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn records_are_read_bounded_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        std::fs::write(&big, vec![b' '; 100]).unwrap();
        assert!(read_bounded(&big, 99).is_err());
        assert_eq!(read_bounded(&big, 100).unwrap().len(), 100);
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert!(read_bounded(&link, 1000).is_err());
        let fifo =
            std::ffi::CString::new(t.path().join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(read_bounded(&t.path().join("fifo"), 1000).is_err());
    }
}
