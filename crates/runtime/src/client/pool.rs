//! Warm clones (`docs/runtime.md`, "Warm clones"): per template shape in use, a few VMs
//! restored from the template ahead of their pods, each of which has run one container from
//! the warm-up image, so the guest code a pod start runs is already translated (under TCG a
//! fresh clone translates every code path it runs for the first time). A pod of that shape
//! takes one: the pod's images go behind its image disks, its tap takes the clone's place,
//! and the guest gets fresh entropy, the clock, its MAC and network. A new clone is started
//! for each one taken.
//!
//! `<root>/pool/<shape>/<id>`: an empty file per warm clone (a pod directory `<id>` whose
//! record names the shape in `pool`). Taking a clone is removing its file: one taker wins.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::{detach, Runtime};
use crate::api::{SandboxConfig, SandboxState, StartMark};
use crate::state::{list_ids, PodRecord};
use crate::template::{Spec, TemplateDir};
use crate::util::new_id;
use crate::wire::{self, Frame, Kind, Request, Response};
use crate::{Error, Result};

/// The nice value of a warm clone's supervisor and QEMU until a pod takes it.
const WARM_NICE: libc::c_int = 10;

/// Sets the nice value of every thread of process `pid` (Linux keeps one per thread).
fn renice(pid: u32, nice: libc::c_int) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        if let Ok(tid) = t.file_name().to_string_lossy().parse::<libc::id_t>() {
            // SAFETY: setpriority(2) takes plain integers.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        }
    }
}

/// `<root>/pool/<shape>`.
fn shape_dir(root: &Path, shape: &str) -> PathBuf {
    root.join("pool").join(shape)
}

/// The tap a warm clone's NIC holds until a pod takes it (QEMU's descriptor keeps it; it
/// goes with QEMU).
fn tap_name(id: &str) -> String {
    format!("h8sw{}", &id[..id.len().min(11)])
}

/// An exclusive `flock` on `<root>/pool/.lock`, held until dropped (`None`: no lock to be
/// had; refilling goes on without it).
fn pool_lock(root: &Path) -> Option<std::fs::File> {
    let dir = root.join("pool");
    std::fs::create_dir_all(&dir).ok()?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(".lock"))
        .ok()?;
    // SAFETY: flock(2) on a descriptor we own.
    (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(f)
}

/// The warm clones of `shape`, by id.
fn members(root: &Path, shape: &str) -> Vec<String> {
    std::fs::read_dir(shape_dir(root, shape))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default()
}

impl Runtime {
    /// The template shape of a pod that may take a warm clone: images, no volumes (their
    /// disks are opened by QEMU at start), the node's disk I/O limits, a network only with a
    /// [`TapAdopter`](super::TapAdopter).
    pub(super) fn warm_shape(&self, cfg: &SandboxConfig) -> Option<Spec> {
        let vm = &self.cfg.vm;
        if vm.warm_pool == 0
            || cfg.images.is_empty()
            || !cfg.volumes.is_empty()
            || cfg.disk_bps.is_some()
            || cfg.disk_iops.is_some()
            || (cfg.network.is_some() && self.tap_adopter.is_none())
        {
            return None;
        }
        let (accel, _) = crate::vm::HostVirt::probe().choose(vm.accel, vm.pvm_guest_kernel);
        Spec::for_pod(vm, accel, cfg)
    }

    /// Takes a ready warm clone of `shape` and makes it the pod `config`; `None` when there
    /// is none (or every one failed: those are removed).
    pub(super) async fn take_warm_clone(
        &self,
        shape: &str,
        config: &SandboxConfig,
        requested: &StartMark,
    ) -> Option<String> {
        for id in members(&self.cfg.root, shape) {
            let marker = shape_dir(&self.cfg.root, shape).join(&id);
            let rec = match self.dir(&id).load() {
                // Still warming up (a supervisor that died meanwhile is removed below).
                Ok(r) if r.state == SandboxState::Creating && r.shim.is_none_or(|s| s.alive()) => {
                    continue
                }
                Ok(r) => r,
                Err(_) => {
                    let _ = std::fs::remove_file(&marker);
                    continue;
                }
            };
            let usable = rec.state == SandboxState::Ready
                && rec.pool.as_deref() == Some(shape)
                && rec.shim.is_some_and(|s| s.alive());
            if std::fs::remove_file(&marker).is_err() {
                continue; // another pod took it
            }
            if !usable {
                tracing::info!(clone = %id, state = ?rec.state, "removing a dead warm clone");
                let _ = self.remove_sandbox(&id, true).await;
                continue;
            }
            match self.assign_clone(&id, &rec, config, requested).await {
                Ok(()) => {
                    for p in [rec.qemu, rec.shim]
                        .into_iter()
                        .flatten()
                        .filter(|p| p.alive())
                    {
                        renice(p.pid, 0);
                    }
                    tracing::info!(pod = %config.name, id = %id, "pod took a warm clone");
                    return Some(id);
                }
                Err(e) => {
                    tracing::warn!(clone = %id, error = %e, "a warm clone failed to take its pod");
                    let _ = self.remove_sandbox(&id, true).await;
                }
            }
        }
        None
    }

    /// Gives warm clone `id` the pod `config` (see [`Request::Assign`]).
    async fn assign_clone(
        &self,
        id: &str,
        rec: &PodRecord,
        config: &SandboxConfig,
        requested: &StartMark,
    ) -> Result<()> {
        let files = config
            .images
            .iter()
            .map(|i| {
                std::fs::File::open(&i.path)
                    .map_err(|e| Error::io(format!("opening image {}", i.path.display()), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let fds: Vec<_> = files.iter().map(|f| f.as_raw_fd()).collect();
        let dir = self.dir(id);
        let mut conn = UnixStream::connect(dir.shim_sock())
            .await
            .map_err(|e| Error::Shim(format!("warm clone {id} unreachable: {e}")))?;
        let req = Request::Assign {
            config: Box::new(config.clone()),
            timeline: vec![requested.clone()],
        };
        wire::write_frame(&mut conn, &Frame::json(Kind::Request, &req)).await?;
        loop {
            conn.writable()
                .await
                .map_err(|e| Error::io("sending the image files", e))?;
            match crate::util::send_with_fds(conn.as_raw_fd(), &[0], &fds) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => {
                    r.map_err(|e| Error::io("sending the image files", e))?;
                    break;
                }
            }
        }
        let f = wire::read_frame(&mut conn)
            .await?
            .ok_or_else(|| Error::Shim("the warm clone's supervisor closed".into()))?;
        match f.parse::<Response>()? {
            Response::Ok => {}
            Response::Err(e) => return Err(e.into()),
            other => return Err(Error::Shim(format!("unexpected answer {other:?}"))),
        }
        // Last: should it fail, the fabric leaves the pod a tap of its own for a cold start.
        if let Some(net) = &config.network {
            let adopt = self
                .tap_adopter
                .clone()
                .map(|a| a.0)
                .ok_or_else(|| Error::FailedPrecondition("no tap adopter".into()))?;
            let warm = rec
                .config
                .network
                .as_ref()
                .map(|n| n.tap.clone())
                .ok_or_else(|| Error::FailedPrecondition("the warm clone has no NIC".into()))?;
            let net = net.clone();
            tokio::task::spawn_blocking(move || adopt(&warm, &net))
                .await
                .map_err(|e| Error::Shim(format!("moving the warm clone's tap: {e}")))?
                .map_err(|e| Error::Shim(format!("moving the warm clone's tap: {e}")))?;
        }
        Ok(())
    }

    /// Starts warm clones of `spec` (shape `shape`) until there are `warm_pool` of them, in
    /// the background, restored from the shape's ready template.
    pub(super) fn refill_pool(&self, spec: &Spec, shape: &str) {
        let want = self.cfg.vm.warm_pool as usize;
        // One refill at a time per state root (a pod's and `fill_pool_when_ready`'s).
        let _lock = pool_lock(&self.cfg.root);
        let have = members(&self.cfg.root, shape).len();
        if have >= want {
            return;
        }
        let slot = match crate::template::choose_ready(&self.cfg.root, spec) {
            Some(s) => s,
            None => return,
        };
        for _ in have..want {
            if let Err(e) = self.start_warm_clone(spec, shape, &slot) {
                tracing::warn!(error = %e, "cannot start a warm clone");
                return;
            }
        }
    }

    /// Fills the pool of `spec`'s shape once its template is ready (waiting up to `limit`).
    pub(super) fn fill_pool_when_ready(&self, spec: &Spec, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if crate::template::choose_ready(&self.cfg.root, spec).is_some() {
                self.refill_pool(spec, &spec.key());
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    fn start_warm_clone(&self, spec: &Spec, shape: &str, slot: &str) -> Result<()> {
        let id = new_id();
        let t = TemplateDir::new(&self.cfg.root, slot);
        let mut config = spec.placeholder_config(&t.dir);
        config.name = format!("h8s-warm-{id}");
        if let Some(n) = config.network.as_mut() {
            n.tap = tap_name(&id);
        }
        let rec = PodRecord {
            template: Some(slot.to_string()),
            pool: Some(shape.to_string()),
            pool_owner: self.template_owner.map(|o| o.to_string()),
            ..PodRecord::new(&id, config, spec.vm.clone())
        };
        let dir = self.dir(&id);
        dir.create(&rec)?;
        if let Err(e) = self.assign_jail(&dir, rec) {
            let _ = dir.remove();
            return Err(e);
        }
        let pool = shape_dir(&self.cfg.root, shape);
        let marked = std::fs::create_dir_all(&pool)
            .and_then(|()| std::fs::File::create(pool.join(&id)).map(drop));
        if let Err(e) = marked {
            self.release_new(&id);
            return Err(Error::io(
                format!("marking warm clone in {}", pool.display()),
                e,
            ));
        }
        let log = match std::fs::File::create(dir.shim_log()) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(pool.join(&id));
                self.release_new(&id);
                return Err(Error::io(
                    format!("creating {}", dir.shim_log().display()),
                    e,
                ));
            }
        };
        let mut cmd = self.background_shim(log);
        cmd.arg(&id);
        use std::os::unix::process::CommandExt;
        // SAFETY: `detach` and setpriority(2) are async-signal-safe system calls; the
        // supervisor outlives this process.
        unsafe {
            cmd.pre_exec(|| {
                detach()?;
                // Background work: a clone warms up beside the pod that took its predecessor.
                if libc::setpriority(libc::PRIO_PROCESS, 0, WARM_NICE) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(clone = %id, pid = child.id(), "starting a warm clone");
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(pool.join(&id));
                self.release_new(&id);
                Err(Error::Shim(format!("cannot start a warm clone: {e}")))
            }
        }
    }

    /// Drops a warm clone that never ran: its directory and jail uid.
    fn release_new(&self, id: &str) {
        let dir = self.dir(id);
        if let Ok(rec) = dir.load() {
            if let Some(j) = &rec.jail {
                crate::jail::release(&self.cfg.root, id, j, true);
            }
        }
        let _ = dir.remove();
    }

    /// Stops and removes every warm clone (they are clones of templates being retired);
    /// returns how many.
    pub async fn drain_pool(&self) -> usize {
        let mut n = 0;
        for id in list_ids(&self.cfg.root).unwrap_or_default() {
            let Ok(rec) = self.dir(&id).load() else {
                continue;
            };
            let Some(shape) = &rec.pool else { continue };
            let _ = std::fs::remove_file(shape_dir(&self.cfg.root, shape).join(&id));
            if self.remove_sandbox(&id, true).await.is_ok() {
                n += 1;
            }
        }
        n
    }
}
