//! Node-pressure eviction, as kubelet's eviction manager does it: eviction signals
//! (`memory.available`, `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`,
//! `imagefs.inodesFree`, `pid.available`) observed every monitoring
//! period against hard thresholds (`--eviction-hard`, met at once) and soft ones
//! (`--eviction-soft`, met once they have held for their `--eviction-soft-grace-period`),
//! `--eviction-minimum-reclaim` added to a met threshold, the node conditions MemoryPressure,
//! DiskPressure and PIDPressure held for `--eviction-pressure-transition-period` after the
//! last time a threshold was met (the node lifecycle controller turns them into the
//! `node.kubernetes.io/memory-pressure` / `disk-pressure` / `pid-pressure` taints), and pods
//! ranked for eviction as kubelet ranks them: first those using more than they request, then
//! lower priority, then the largest use above request (so BestEffort pods, requesting
//! nothing, go first); for PIDs and inodes, which pods cannot request, lower priority then the
//! largest use. One pod is evicted per period, phase Failed, reason `Evicted`, kubelet's
//! message.
//!
//! For a pod VM, a pod's memory use is its VM's (QEMU's resident memory), its disk use its
//! local storage inside the VM plus its logs on the host, its PIDs the host threads of its
//! QEMU and supervisor, and its inodes the files of its logs on the host (the guest's own
//! files are guest memory, not host inodes). Everything here is pure; the agent's loop feeds
//! in observations and pods.

use std::time::{Duration, Instant};

use crate::quantity;

/// An eviction signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Node memory available (`MemAvailable`).
    MemoryAvailable,
    /// The node's data filesystem, free bytes.
    NodefsAvailable,
    /// The image store's filesystem, free bytes.
    ImagefsAvailable,
    /// The node's data filesystem, free inodes.
    NodefsInodesFree,
    /// The image store's filesystem, free inodes.
    ImagefsInodesFree,
    /// Process ids left (`pid_max`, capped by `threads-max`, minus the tasks running).
    PidAvailable,
}

impl Signal {
    /// kubelet's name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// Whether the signal counts things (inodes, PIDs) rather than bytes.
    pub fn counts(self) -> bool {
        matches!(
            self,
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree | Signal::PidAvailable
        )
    }

    fn parse(s: &str) -> Result<Signal, String> {
        match s.trim() {
            "memory.available" => Ok(Signal::MemoryAvailable),
            "nodefs.available" => Ok(Signal::NodefsAvailable),
            "imagefs.available" => Ok(Signal::ImagefsAvailable),
            "nodefs.inodesFree" => Ok(Signal::NodefsInodesFree),
            "imagefs.inodesFree" => Ok(Signal::ImagefsInodesFree),
            "pid.available" => Ok(Signal::PidAvailable),
            other => Err(format!(
                "unsupported eviction signal {other:?} (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)"
            )),
        }
    }

    /// The resource starved when this signal's threshold is met (kubelet's message word).
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// The node condition it sets.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::NodefsAvailable
            | Signal::ImagefsAvailable
            | Signal::NodefsInodesFree
            | Signal::ImagefsInodesFree => "DiskPressure",
            Signal::PidAvailable => "PIDPressure",
        }
    }
}

/// A threshold's quantity: bytes (or inodes, PIDs) or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Percent(f64),
}

impl Amount {
    fn parse(s: &str) -> Result<Amount, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?} is not a percentage from 0 to 100"));
            }
            return Ok(Amount::Percent(v));
        }
        quantity::units(s)
            .map(|n| Amount::Bytes(u64::try_from(n).unwrap_or(u64::MAX)))
            .ok_or_else(|| format!("{s:?} is not a quantity like 100Mi or 10%"))
    }

    /// Bytes for a resource of `capacity` bytes.
    pub fn bytes(self, capacity: u64) -> u64 {
        match self {
            Amount::Bytes(n) => n,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }
}

/// One eviction threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    /// Met when the signal is below this.
    pub value: Amount,
    /// Soft thresholds: how long it must hold before it counts; `None`: hard.
    pub grace: Option<Duration>,
    /// What to reclaim beyond the threshold once met.
    pub min_reclaim: Option<Amount>,
    /// The quantity as written (for messages).
    pub text: String,
}

/// The eviction configuration (kubelet's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition stays after its last threshold was met.
    pub transition_period: Duration,
    /// How often signals are observed (kubelet: 10 s).
    pub monitoring_period: Duration,
    /// Grace period of soft evictions (kubelet's `--eviction-max-pod-grace-period`); hard
    /// evictions kill at once.
    pub max_pod_grace: Duration,
}

/// The default `--eviction-hard`. kubelet's is `memory.available<100Mi,nodefs.available<10%,
/// imagefs.available<15%,nodefs.inodesFree<5%`, for a node whose nodefs and imagefs hold
/// little else; an h8s data directory usually shares the host's root filesystem with
/// everything on it, so the disk space signals default to 5 %.
pub const DEFAULT_HARD: &str =
    "memory.available<100Mi,nodefs.available<5%,imagefs.available<5%,nodefs.inodesFree<5%";

fn pairs(s: &str, sep: char) -> Result<Vec<(Signal, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once(sep)
            .ok_or_else(|| format!("{item:?} is not signal{sep}value"))?;
        out.push((Signal::parse(k)?, v.trim().to_string()))
    }
    Ok(out)
}

impl EvictionConfig {
    /// Parses kubelet's flag values: `--eviction-hard` and `--eviction-soft`
    /// (`signal<quantity,…`), `--eviction-soft-grace-period` (`signal=duration,…`, required
    /// for each soft signal) and `--eviction-minimum-reclaim` (`signal=quantity,…`).
    pub fn parse(
        hard: &str,
        soft: &str,
        soft_grace: &str,
        min_reclaim: &str,
        parse_duration: impl Fn(&str) -> Result<Duration, String>,
    ) -> Result<EvictionConfig, String> {
        let reclaim = pairs(min_reclaim, '=')?
            .into_iter()
            .map(|(s, v)| Amount::parse(&v).map(|a| (s, a)))
            .collect::<Result<Vec<_>, _>>()?;
        let reclaim_of = |s: Signal| reclaim.iter().find(|(x, _)| *x == s).map(|(_, a)| *a);
        let graces = pairs(soft_grace, '=')?
            .into_iter()
            .map(|(s, v)| parse_duration(&v).map(|d| (s, d)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut thresholds = Vec::new();
        for (list, soft) in [(hard, false), (soft, true)] {
            for (signal, v) in pairs(list, '<')? {
                let grace = if soft {
                    Some(
                        graces
                            .iter()
                            .find(|(s, _)| *s == signal)
                            .map(|(_, d)| *d)
                            .ok_or_else(|| {
                                format!(
                                    "soft eviction threshold {} has no grace period (--eviction-soft-grace-period)",
                                    signal.name()
                                )
                            })?,
                    )
                } else {
                    None
                };
                if thresholds
                    .iter()
                    .any(|t: &Threshold| t.signal == signal && t.grace.is_some() == soft)
                {
                    return Err(format!("threshold {} given twice", signal.name()));
                }
                thresholds.push(Threshold {
                    signal,
                    value: Amount::parse(&v)?,
                    grace,
                    min_reclaim: reclaim_of(signal),
                    text: v,
                });
            }
        }
        Ok(EvictionConfig {
            thresholds,
            transition_period: Duration::from_secs(300),
            monitoring_period: Duration::from_secs(10),
            max_pod_grace: Duration::ZERO,
        })
    }
}

/// One observation of a signal: available and capacity (bytes, inodes or PIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// What the node's signals look like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations(pub Vec<(Signal, Observation)>);

impl Observations {
    fn get(&self, s: Signal) -> Option<Observation> {
        self.0.iter().find(|(x, _)| *x == s).map(|(_, o)| *o)
    }
}

/// A threshold met now, and how much is to be reclaimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Met {
    pub threshold: Threshold,
    pub observed: Observation,
    /// Bytes to free to get back above the threshold plus its minimum reclaim.
    pub to_reclaim: u64,
}

/// The eviction manager's memory between observations.
#[derive(Debug, Default)]
pub struct State {
    /// Soft thresholds first seen met (their grace runs from then).
    soft_since: Vec<(Signal, Instant)>,
    /// When each condition was last due to a met threshold.
    last_met: Vec<(&'static str, Instant)>,
}

/// The outcome of one observation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Thresholds met now (soft ones only past their grace), hard first.
    pub met: Vec<Met>,
    /// MemoryPressure, DiskPressure and PIDPressure (held for the transition period).
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
}

impl State {
    /// kubelet's `synchronize` step: which thresholds are met at `now` and which pressure
    /// conditions the node reports.
    pub fn observe(&mut self, cfg: &EvictionConfig, obs: &Observations, now: Instant) -> Verdict {
        let mut met = Vec::new();
        let mut still_soft = Vec::new();
        for t in &cfg.thresholds {
            let Some(o) = obs.get(t.signal) else {
                continue;
            };
            let limit = t.value.bytes(o.capacity);
            if o.available >= limit {
                continue;
            }
            if let Some(grace) = t.grace {
                let since = self
                    .soft_since
                    .iter()
                    .find(|(s, _)| *s == t.signal)
                    .map(|(_, i)| *i)
                    .unwrap_or(now);
                still_soft.push((t.signal, since));
                if now.duration_since(since) < grace {
                    continue;
                }
            }
            let reclaim = t.min_reclaim.map(|a| a.bytes(o.capacity)).unwrap_or(0);
            met.push(Met {
                threshold: t.clone(),
                observed: o,
                to_reclaim: (limit - o.available).saturating_add(reclaim),
            });
        }
        self.soft_since = still_soft;
        met.sort_by_key(|m| m.threshold.grace.is_some());
        for m in &met {
            let c = m.threshold.signal.condition();
            self.last_met.retain(|(x, _)| *x != c);
            self.last_met.push((c, now));
        }
        let held = |c: &str| {
            self.last_met
                .iter()
                .any(|(x, t)| *x == c && now.duration_since(*t) < cfg.transition_period)
                || met.iter().any(|m| m.threshold.signal.condition() == c)
        };
        Verdict {
            memory_pressure: held("MemoryPressure"),
            disk_pressure: held("DiskPressure"),
            pid_pressure: held("PIDPressure"),
            met,
        }
    }
}

/// A pod as eviction ranking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUse {
    /// `namespace/name`.
    pub key: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Memory in use, bytes.
    pub memory: u64,
    /// Sum of the containers' memory requests.
    pub memory_request: u64,
    /// Local storage in use (writable layers, emptyDirs, logs), bytes.
    pub storage: u64,
    /// Sum of the containers' ephemeral-storage requests.
    pub storage_request: u64,
    /// Host inodes it holds (its log files).
    pub inodes: u64,
    /// Host PIDs it holds (its QEMU's and supervisor's threads).
    pub pids: u64,
    /// The node's own critical pods are never evicted (kubelet: static and mirror pods,
    /// `system-node-critical`).
    pub critical: bool,
}

impl PodUse {
    fn usage(&self, s: Signal) -> (u64, u64) {
        match s {
            Signal::MemoryAvailable => (self.memory, self.memory_request),
            Signal::NodefsAvailable | Signal::ImagefsAvailable => {
                (self.storage, self.storage_request)
            }
            // Nothing requests inodes or PIDs: ranked by priority, then use.
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => (self.inodes, 0),
            Signal::PidAvailable => (self.pids, 0),
        }
    }
}

/// kubelet's ranking for `signal`: pods using more than they request first, then lower
/// priority first, then the largest use above request first. Returns indexes into `pods`,
/// critical pods left out.
pub fn rank(pods: &[PodUse], signal: Signal) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pods.len()).filter(|i| !pods[*i].critical).collect();
    idx.sort_by(|a, b| {
        let (pa, pb) = (&pods[*a], &pods[*b]);
        let (ua, ra) = pa.usage(signal);
        let (ub, rb) = pb.usage(signal);
        let requestable = !signal.counts();
        let exceeds_a = requestable && ua > ra;
        let exceeds_b = requestable && ub > rb;
        let over_a = i128::from(ua) - i128::from(ra);
        let over_b = i128::from(ub) - i128::from(rb);
        exceeds_b
            .cmp(&exceeds_a)
            .then(pa.priority.cmp(&pb.priority))
            .then(over_b.cmp(&over_a))
            .then(pa.key.cmp(&pb.key))
    });
    idx
}

/// kubelet's eviction message for a pod evicted for `m` (`evictionMessage`, pod-level: a VM
/// pod's usage is its VM's).
pub fn message(m: &Met, pod: &PodUse) -> String {
    let (used, request) = pod.usage(m.threshold.signal);
    let q = |n: u64| {
        if m.threshold.signal.counts() {
            n.to_string()
        } else {
            format!("{}Ki", n / 1024)
        }
    };
    format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. Pod {} was using {}, request is {}. ",
        m.threshold.signal.resource(),
        m.threshold.text,
        q(m.observed.available),
        pod.key,
        q(used),
        q(request),
    )
}

/// The node's pressure conditions as the last observation left them (read by the Node
/// status loop).
#[derive(Debug, Default)]
pub struct PressureFlags {
    memory: std::sync::atomic::AtomicBool,
    disk: std::sync::atomic::AtomicBool,
    pid: std::sync::atomic::AtomicBool,
}

/// The node's pressure conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl PressureFlags {
    /// The conditions now.
    pub fn get(&self) -> Pressure {
        use std::sync::atomic::Ordering::Relaxed;
        Pressure {
            memory: self.memory.load(Relaxed),
            disk: self.disk.load(Relaxed),
            pid: self.pid.load(Relaxed),
        }
    }

    fn set(&self, v: &Verdict) {
        use std::sync::atomic::Ordering::Relaxed;
        self.memory.store(v.memory_pressure, Relaxed);
        self.disk.store(v.disk_pressure, Relaxed);
        self.pid.store(v.pid_pressure, Relaxed);
    }
}

/// kubelet's `SystemCriticalPriority`: pods at or above it are never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// Observes the signals of this node: memory from `/proc/meminfo`, nodefs from the data
/// directory's filesystem, imagefs from the image store's (bytes and inodes), PIDs from
/// `pid_max`/`threads-max` and the tasks running.
fn observe_node(cfg: &crate::Config) -> Observations {
    let mut out = Vec::new();
    if let (Some(total), Some(avail)) = (
        crate::node::meminfo("MemTotal"),
        crate::node::meminfo("MemAvailable"),
    ) {
        out.push((
            Signal::MemoryAvailable,
            Observation {
                available: avail,
                capacity: total,
            },
        ));
    }
    for (s, dir) in [
        (Signal::NodefsAvailable, &cfg.data_dir),
        (Signal::ImagefsAvailable, &cfg.image_gc.images_dir),
    ] {
        if let Some((capacity, available)) = crate::node::disk(dir) {
            out.push((
                s,
                Observation {
                    available,
                    capacity,
                },
            ));
        }
    }
    for (s, dir) in [
        (Signal::NodefsInodesFree, &cfg.data_dir),
        (Signal::ImagefsInodesFree, &cfg.image_gc.images_dir),
    ] {
        if let Some(o) = inodes(dir) {
            out.push((s, o));
        }
    }
    if let Some(o) = pids() {
        out.push((Signal::PidAvailable, o));
    }
    Observations(out)
}

/// Free and total inodes of the filesystem holding `dir` (the nearest existing ancestor);
/// `None` for filesystems without inode counts (0 total).
fn inodes(dir: &std::path::Path) -> Option<Observation> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent()?;
    }
    let st = rustix::fs::statvfs(d).ok()?;
    (st.f_files > 0).then_some(Observation {
        available: st.f_favail.min(st.f_files),
        capacity: st.f_files,
    })
}

/// PIDs: the limit is `pid_max`, capped by `threads-max` (kubelet's `getMaxPid`); in use, the
/// tasks the kernel counts (`sysinfo`'s procs).
fn pids() -> Option<Observation> {
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let max = read("/proc/sys/kernel/pid_max")?;
    let max = read("/proc/sys/kernel/threads-max").map_or(max, |t| t.min(max));
    let procs = u64::from(rustix::system::sysinfo().procs);
    Some(Observation {
        available: max.saturating_sub(procs),
        capacity: max,
    })
}

/// Threads of process `pid` (its `Threads:`), 0 when gone.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A pod VM's resident memory (its QEMU's `VmRSS`), bytes.
fn vm_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn requests(pod: &k8s_openapi::api::core::v1::Pod, resource: &str) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .filter_map(|q| quantity::units(&q.0))
        .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add)
}

/// The eviction manager: every monitoring period, observe the signals, publish the pressure
/// conditions and, while a threshold is met, ask the worker of the first-ranked pod to evict
/// it (`evictions`, by pod uid: the message and the grace period).
pub(crate) async fn run(
    ctx: std::sync::Arc<crate::pods::Ctx>,
    flags: std::sync::Arc<PressureFlags>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = ctx.cfg.eviction.clone();
    let mut state = State::default();
    loop {
        let verdict = state.observe(&cfg, &observe_node(&ctx.cfg), Instant::now());
        flags.set(&verdict);
        if let Some(m) = verdict.met.first() {
            if let Err(e) = evict_one(&ctx, &cfg, m).await {
                tracing::warn!(error = %e, "node-pressure eviction failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.monitoring_period) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn evict_one(ctx: &crate::pods::Ctx, cfg: &EvictionConfig, m: &Met) -> Result<(), String> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::all(ctx.client.clone());
    let list = pods
        .list(
            &kube::api::ListParams::default()
                .fields(&format!("spec.nodeName={}", ctx.cfg.node_name)),
        )
        .await
        .map_err(|e| format!("listing this node's pods: {e}"))?;
    let sandboxes = ctx
        .runtime
        .list_sandboxes()
        .await
        .map_err(|e| format!("listing pod VMs: {e}"))?;
    let mut candidates = Vec::new();
    let mut uids = Vec::new();
    for pod in &list.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if ctx
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&uid)
        {
            // One at a time: the last one is still being carried out.
            return Ok(());
        }
        let Some(sb) = sandboxes.iter().find(|s| {
            s.config.labels.get(crate::pods::LABEL_UID) == Some(&uid)
                && s.state == h8s_runtime::SandboxState::Ready
        }) else {
            continue;
        };
        let signal = m.threshold.signal;
        // Its logs on the host: bytes count as its local storage, files as its inodes.
        let (log_files, log_bytes) = sb
            .containers
            .iter()
            .map(|c| crate::eviction::log_files(&c.log_path))
            .fold((0u64, 0u64), |(f, b), (f2, b2)| {
                (f.saturating_add(f2), b.saturating_add(b2))
            });
        let storage = if matches!(signal, Signal::NodefsAvailable | Signal::ImagefsAvailable) {
            let inside: u64 = ctx
                .runtime
                .storage_usage(&sb.id)
                .await
                .map(|u| {
                    u.containers
                        .iter()
                        .chain(u.volumes.iter())
                        .map(|(_, b)| *b)
                        .sum()
                })
                .unwrap_or(0);
            inside.saturating_add(log_bytes)
        } else {
            0
        };
        let pids = [sb.qemu_pid, sb.shim_pid]
            .into_iter()
            .flatten()
            .map(threads)
            .sum();
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        candidates.push(PodUse {
            key: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            priority,
            memory: sb.qemu_pid.map(vm_rss).unwrap_or(0),
            memory_request: requests(pod, "memory"),
            storage,
            storage_request: requests(pod, "ephemeral-storage"),
            inodes: log_files,
            pids,
            critical: priority >= CRITICAL_PRIORITY,
        });
        uids.push(uid);
    }
    let Some(&first) = rank(&candidates, m.threshold.signal).first() else {
        tracing::warn!(
            signal = m.threshold.signal.name(),
            "threshold met but no pod can be evicted"
        );
        return Ok(());
    };
    let msg = message(m, &candidates[first]);
    let grace = if m.threshold.grace.is_some() {
        cfg.max_pod_grace
    } else {
        Duration::ZERO
    };
    tracing::warn!(pod = %candidates[first].key, signal = m.threshold.signal.name(), "evicting a pod for node pressure");
    ctx.evictions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uids[first].clone(), (msg, grace));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        let n: u64 = s
            .trim_end_matches('s')
            .parse()
            .map_err(|_| format!("bad {s}"))?;
        Ok(Duration::from_secs(n))
    }

    fn cfg(hard: &str, soft: &str, grace: &str, reclaim: &str) -> EvictionConfig {
        EvictionConfig::parse(hard, soft, grace, reclaim, dur).unwrap()
    }

    fn obs(mem: u64, fs: u64) -> Observations {
        Observations(vec![
            (
                Signal::MemoryAvailable,
                Observation {
                    available: mem,
                    capacity: 1000 << 20,
                },
            ),
            (
                Signal::NodefsAvailable,
                Observation {
                    available: fs,
                    capacity: 1000 << 20,
                },
            ),
        ])
    }

    #[test]
    fn parses_kubelet_flags() {
        assert_eq!(cfg(DEFAULT_HARD, "", "", "").thresholds.len(), 4);
        let c = cfg(
            "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%",
            "memory.available<300Mi",
            "memory.available=30s",
            "memory.available=50Mi,nodefs.available=1%",
        );
        assert_eq!(c.thresholds.len(), 4);
        assert_eq!(c.thresholds[0].value, Amount::Bytes(100 << 20));
        assert_eq!(c.thresholds[0].min_reclaim, Some(Amount::Bytes(50 << 20)));
        assert_eq!(c.thresholds[1].value, Amount::Percent(10.0));
        assert_eq!(c.thresholds[3].grace, Some(Duration::from_secs(30)));
        let err = |h: &str, s: &str, g: &str| EvictionConfig::parse(h, s, g, "", dur).unwrap_err();
        assert!(err("memory.available<1Mi", "nodefs.available<5%", "").contains("no grace"));
        assert!(err("pids.available<10", "", "").contains("unsupported"));
        let c = cfg(
            "nodefs.inodesFree<5%,imagefs.inodesFree<1k,pid.available<10%",
            "",
            "",
            "",
        );
        assert_eq!(c.thresholds[1].value, Amount::Bytes(1000));
        assert_eq!(c.thresholds[2].signal, Signal::PidAvailable);
        assert!(err("memory.available=1Mi", "", "").contains("signal<value"));
        assert!(err("nodefs.available<120%", "", "").contains("percentage"));
        assert!(err("memory.available<1Mi,memory.available<2Mi", "", "").contains("twice"));
        assert!(cfg("", "", "", "").thresholds.is_empty());
    }

    #[test]
    fn hard_thresholds_meet_at_once_with_minimum_reclaim() {
        let c = cfg(
            "memory.available<100Mi,nodefs.available<10%",
            "",
            "",
            "memory.available=20Mi",
        );
        let mut st = State::default();
        let t0 = Instant::now();
        let v = st.observe(&c, &obs(500 << 20, 500 << 20), t0);
        assert!(v.met.is_empty() && !v.memory_pressure && !v.disk_pressure);
        let v = st.observe(&c, &obs(80 << 20, 50 << 20), t0);
        assert_eq!(v.met.len(), 2);
        assert_eq!(v.met[0].to_reclaim, 40 << 20);
        assert_eq!(v.met[1].to_reclaim, 50 << 20);
        assert!(v.memory_pressure && v.disk_pressure);
    }

    #[test]
    fn soft_thresholds_wait_for_their_grace_and_conditions_for_the_transition_period() {
        let mut c = cfg("", "memory.available<200Mi", "memory.available=30s", "");
        c.transition_period = Duration::from_secs(60);
        let mut st = State::default();
        let t0 = Instant::now();
        let low = obs(150 << 20, 900 << 20);
        assert!(st.observe(&c, &low, t0).met.is_empty());
        let v = st.observe(&c, &low, t0 + Duration::from_secs(20));
        assert!(v.met.is_empty() && !v.memory_pressure);
        let v = st.observe(&c, &low, t0 + Duration::from_secs(31));
        assert_eq!(v.met.len(), 1);
        assert!(v.memory_pressure);
        // Recovered: the condition stays for the transition period, then clears.
        let ok = obs(500 << 20, 900 << 20);
        let v = st.observe(&c, &ok, t0 + Duration::from_secs(40));
        assert!(v.met.is_empty() && v.memory_pressure);
        assert!(
            !st.observe(&c, &ok, t0 + Duration::from_secs(95))
                .memory_pressure
        );
        // A dip shorter than the grace restarts the clock.
        st.observe(&c, &low, t0 + Duration::from_secs(100));
        st.observe(&c, &ok, t0 + Duration::from_secs(110));
        assert!(st
            .observe(&c, &low, t0 + Duration::from_secs(135))
            .met
            .is_empty());
    }

    fn p(key: &str, priority: i32, mem: u64, req: u64) -> PodUse {
        PodUse {
            key: key.into(),
            priority,
            memory: mem,
            memory_request: req,
            storage: 0,
            storage_request: 0,
            inodes: 0,
            pids: 0,
            critical: false,
        }
    }

    #[test]
    fn inodes_and_pids_set_disk_and_pid_pressure_with_their_own_messages() {
        let mut c = cfg(
            "",
            "nodefs.inodesFree<10%,pid.available<1000",
            "nodefs.inodesFree=10s,pid.available=10s",
            "",
        );
        c.transition_period = Duration::from_secs(30);
        let o = |inodes: u64, pids: u64| {
            Observations(vec![
                (
                    Signal::NodefsInodesFree,
                    Observation {
                        available: inodes,
                        capacity: 10_000,
                    },
                ),
                (
                    Signal::PidAvailable,
                    Observation {
                        available: pids,
                        capacity: 4_194_304,
                    },
                ),
            ])
        };
        let mut st = State::default();
        let t0 = Instant::now();
        let v = st.observe(&c, &o(500, 900), t0);
        assert!(
            v.met.is_empty() && !v.disk_pressure && !v.pid_pressure,
            "grace"
        );
        let v = st.observe(&c, &o(500, 900), t0 + Duration::from_secs(11));
        assert!(v.disk_pressure && v.pid_pressure && !v.memory_pressure);
        assert_eq!(v.met.len(), 2);
        let forky = PodUse {
            pids: 700,
            ..p("ns/forky", 0, 0, 0)
        };
        let pid_met = v
            .met
            .iter()
            .find(|m| m.threshold.signal == Signal::PidAvailable)
            .unwrap();
        assert_eq!(
            message(pid_met, &forky),
            "The node was low on resource: pids. Threshold quantity: 1000, available: 900. Pod ns/forky was using 700, request is 0. "
        );
        // PIDs cannot be requested: priority first, then the most threads.
        let pods = vec![
            forky,
            PodUse {
                pids: 10,
                ..p("ns/low", -5, 0, 0)
            },
            PodUse {
                pids: 900,
                ..p("ns/high", 100, 0, 0)
            },
            PodUse {
                pids: 30,
                ..p("ns/small", 0, 0, 0)
            },
        ];
        let order: Vec<&str> = rank(&pods, Signal::PidAvailable)
            .into_iter()
            .map(|i| pods[i].key.as_str())
            .collect();
        assert_eq!(order, ["ns/low", "ns/forky", "ns/small", "ns/high"]);
        // Recovered: held for the transition period, then cleared.
        let v = st.observe(&c, &o(5000, 100_000), t0 + Duration::from_secs(20));
        assert!(v.met.is_empty() && v.disk_pressure && v.pid_pressure);
        let v = st.observe(&c, &o(5000, 100_000), t0 + Duration::from_secs(45));
        assert!(!v.disk_pressure && !v.pid_pressure);
    }

    #[test]
    fn this_host_has_inode_and_pid_signals() {
        let dir = tempfile::tempdir().unwrap();
        let pids = pids().expect("pid_max is readable");
        assert!(
            pids.available > 0 && pids.available < pids.capacity,
            "{pids:?}"
        );
        // A path not created yet is measured on its nearest existing ancestor.
        if let Some(i) = inodes(&dir.path().join("not/yet")) {
            assert!(i.available <= i.capacity, "{i:?}");
        }
    }

    #[test]
    fn ranks_like_kubelet() {
        let pods = vec![
            p("ns/guaranteed", 0, 90, 100),
            p("ns/besteffort-small", 0, 10, 0),
            p("ns/burstable-over", 0, 350, 100),
            p("ns/besteffort-big", 0, 200, 0),
            p("ns/important", 1000, 500, 0),
            PodUse {
                critical: true,
                ..p("kube-system/node-critical", 0, 900, 0)
            },
        ];
        let order: Vec<&str> = rank(&pods, Signal::MemoryAvailable)
            .into_iter()
            .map(|i| pods[i].key.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "ns/burstable-over",
                "ns/besteffort-big",
                "ns/besteffort-small",
                "ns/important",
                "ns/guaranteed",
            ]
        );
    }

    #[test]
    fn eviction_message() {
        let c = cfg("memory.available<100Mi", "", "", "");
        let mut st = State::default();
        let v = st.observe(&c, &obs(50 << 20, 900 << 20), Instant::now());
        assert_eq!(
            message(&v.met[0], &p("ns/web", 0, 300 << 20, 0)),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Pod ns/web was using 307200Ki, request is 0Ki. "
        );
    }
}
