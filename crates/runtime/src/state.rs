//! On-disk pod state: one directory per pod under `<root>/pods/<id>/` holding the pod record
//! (`pod.json`), the sockets of QEMU and the pod supervisor, the VM console and CRI logs.

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
}

impl PodRecord {
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
        let data = std::fs::read(&path).map_err(|e| {
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
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, self.record()))
            .map_err(|e| Error::io(format!("writing {}", self.record().display()), e))
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
