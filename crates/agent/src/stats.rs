//! Resource usage of the node and of its pod VMs, served on the streaming server as
//! kubelet's `/stats/summary` (the Summary API, `stats/v1alpha1`) for the API server's
//! `metrics.k8s.io` (`kubectl top`, the HPA).
//!
//! What is measured, and from where:
//! * the node: CPU from `/proc/stat` (every CPU's busy time: all but idle and iowait), memory
//!   working set = `MemTotal - MemAvailable` from `/proc/meminfo`;
//! * a pod: its VM's host processes — QEMU and the pod supervisor: CPU = their `utime +
//!   stime` (`/proc/<pid>/stat`), memory working set = their proportional set size
//!   (`Pss` of `/proc/<pid>/smaps_rollup`, else `VmRSS`), i.e. the guest RAM the guest has
//!   touched plus QEMU's own heaps, each page shared with another process counted by share.
//!
//! Per-container figures are not measured: the guest agent reports no cgroup statistics yet,
//! so the pod VM's total is reported under the pod's first running app container and the
//! others show zero. A pod's total (what `kubectl top pod` prints) is right; `kubectl top pod
//! --containers` is not split. CPU rates are the difference of two samples taken
//! `interval` apart by [`Stats::run`] (the first pair one second apart).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use h8s_runtime::{ContainerState, PodRuntime, SandboxState, SandboxStatus};
use serde_json::{json, Value};

use crate::pods::{LABEL_NAME, LABEL_NAMESPACE, LABEL_OWNER, LABEL_UID};

/// One reading of cumulative CPU time and current memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// Cumulative CPU time, core-nanoseconds.
    cpu_ns: u64,
    /// Working set, bytes.
    memory: u64,
}

/// The last two readings of one thing, and when they were taken.
#[derive(Debug, Clone, Default)]
struct Window {
    prev: Option<(Instant, Reading)>,
    last: Option<(Instant, Reading, jiff::Timestamp)>,
}

impl Window {
    fn push(&mut self, at: Instant, wall: jiff::Timestamp, r: Reading) {
        self.prev = self.last.map(|(i, r, _)| (i, r));
        self.last = Some((at, r, wall));
    }

    /// `(time, usageNanoCores, usageCoreNanoSeconds, window, working set)` once two readings
    /// exist; a counter that went backwards (a new process) gives no rate.
    fn usage(&self) -> Option<Usage> {
        let (t1, r1, wall) = self.last?;
        let (t0, r0) = self.prev?;
        let dt = t1.duration_since(t0);
        if dt.is_zero() || r1.cpu_ns < r0.cpu_ns {
            return None;
        }
        let nano_cores = (u128::from(r1.cpu_ns - r0.cpu_ns) * 1_000_000_000 / dt.as_nanos()) as u64;
        Some(Usage {
            time: wall,
            nano_cores,
            core_ns: r1.cpu_ns,
            window: dt,
            working_set: r1.memory,
        })
    }
}

/// What a window says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    time: jiff::Timestamp,
    nano_cores: u64,
    core_ns: u64,
    window: Duration,
    working_set: u64,
}

impl Usage {
    fn cpu_json(&self) -> Value {
        json!({
            "time": self.time.to_string(),
            "usageNanoCores": self.nano_cores,
            "usageCoreNanoSeconds": self.core_ns,
            // Not in kubelet's Summary: the sampling window the rate covers.
            "windowSeconds": self.window.as_secs_f64(),
        })
    }
    fn memory_json(&self, available: Option<u64>) -> Value {
        let mut m = json!({
            "time": self.time.to_string(),
            "usageBytes": self.working_set,
            "workingSetBytes": self.working_set,
        });
        if let Some(a) = available {
            m["availableBytes"] = json!(a);
        }
        m
    }
    fn zero(&self) -> Usage {
        Usage {
            nano_cores: 0,
            core_ns: 0,
            working_set: 0,
            ..*self
        }
    }
}

/// A pod VM as last sampled.
#[derive(Debug, Clone)]
struct PodSample {
    namespace: String,
    name: String,
    uid: String,
    start_time: String,
    /// Running app containers (Kubernetes names), first created first.
    containers: Vec<(String, Option<String>)>,
    /// The QEMU pid the window belongs to (a new VM starts a new window).
    qemu_pid: u32,
    window: Window,
}

#[derive(Default)]
struct State {
    node: Window,
    node_available: u64,
    pods: HashMap<String, PodSample>,
}

/// Samples and serves the node's and its pods' usage. Cheap to share.
pub struct Stats {
    node_name: String,
    owner: String,
    runtime: Arc<dyn PodRuntime>,
    proc_root: std::path::PathBuf,
    ticks_per_sec: u64,
    state: Mutex<State>,
}

impl Stats {
    /// Usage of `node_name` and of the pod VMs labelled with `owner` in `runtime`.
    pub fn new(node_name: &str, owner: &str, runtime: Arc<dyn PodRuntime>) -> Stats {
        Stats {
            node_name: node_name.to_string(),
            owner: owner.to_string(),
            runtime,
            proc_root: "/proc".into(),
            ticks_per_sec: rustix::param::clock_ticks_per_second().max(1),
            state: Mutex::default(),
        }
    }

    /// Samples now, after one second, then every `interval` until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut next = Duration::from_secs(1).min(interval);
        loop {
            self.sample().await;
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            next = interval;
        }
    }

    /// Takes one sample of the node and of every running pod VM of this agent.
    pub async fn sample(&self) {
        let sandboxes = match self.runtime.list_sandboxes().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "listing pod VMs for stats");
                Vec::new()
            }
        };
        let at = Instant::now();
        let wall = jiff::Timestamp::now();
        let node = read_node(&self.proc_root, self.ticks_per_sec);
        let mut pods = Vec::new();
        for s in sandboxes.iter().filter(|s| self.mine(s)) {
            let Some(qemu) = s.qemu_pid else { continue };
            let mut r = match read_process(&self.proc_root, qemu, self.ticks_per_sec) {
                Some(r) => r,
                None => continue,
            };
            if let Some(shim) = s
                .shim_pid
                .and_then(|p| read_process(&self.proc_root, p, self.ticks_per_sec))
            {
                r.cpu_ns += shim.cpu_ns;
                r.memory += shim.memory;
            }
            pods.push((s, qemu, r));
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if let Some((r, available)) = node {
            st.node.push(at, wall, r);
            st.node_available = available;
        }
        let mut seen = std::collections::HashSet::new();
        for (s, qemu, r) in pods {
            seen.insert(s.id.clone());
            let label = |k: &str| s.config.labels.get(k).cloned().unwrap_or_default();
            let entry = st.pods.entry(s.id.clone()).or_insert_with(|| PodSample {
                namespace: String::new(),
                name: String::new(),
                uid: String::new(),
                start_time: String::new(),
                containers: Vec::new(),
                qemu_pid: qemu,
                window: Window::default(),
            });
            if entry.qemu_pid != qemu {
                entry.window = Window::default();
                entry.qemu_pid = qemu;
            }
            entry.namespace = label(LABEL_NAMESPACE);
            entry.name = label(LABEL_NAME);
            entry.uid = label(LABEL_UID);
            entry.start_time = s.created_at.clone();
            entry.containers = running_app_containers(s);
            entry.window.push(at, wall, r);
        }
        st.pods.retain(|id, _| seen.contains(id));
    }

    fn mine(&self, s: &SandboxStatus) -> bool {
        s.state == SandboxState::Ready
            && s.config.labels.get(LABEL_OWNER).map(String::as_str) == Some(self.owner.as_str())
            && s.config.labels.contains_key(LABEL_UID)
    }

    /// kubelet's Summary (`/stats/summary`) from the last two samples: the node, and every
    /// pod with a rate (a pod sampled once is left out until its second sample).
    pub fn summary(&self) -> Value {
        let Ok(st) = self.state.lock() else {
            return json!({"node": {"nodeName": self.node_name}, "pods": []});
        };
        let mut node = json!({"nodeName": self.node_name});
        if let Some(u) = st.node.usage() {
            node["cpu"] = u.cpu_json();
            node["memory"] = u.memory_json(Some(st.node_available));
        }
        let mut pods: Vec<Value> = st
            .pods
            .values()
            .filter_map(|p| {
                let u = p.window.usage()?;
                let containers: Vec<Value> = p
                    .containers
                    .iter()
                    .enumerate()
                    .map(|(i, (name, started))| {
                        let cu = if i == 0 { u } else { u.zero() };
                        json!({
                            "name": name,
                            "startTime": started.clone().unwrap_or_else(|| p.start_time.clone()),
                            "cpu": cu.cpu_json(),
                            "memory": cu.memory_json(None),
                        })
                    })
                    .collect();
                Some(json!({
                    "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                    "startTime": p.start_time,
                    "cpu": u.cpu_json(),
                    "memory": u.memory_json(None),
                    "containers": containers,
                }))
            })
            .collect();
        pods.sort_by(|a, b| {
            (
                a["podRef"]["namespace"].as_str(),
                a["podRef"]["name"].as_str(),
            )
                .cmp(&(
                    b["podRef"]["namespace"].as_str(),
                    b["podRef"]["name"].as_str(),
                ))
        });
        json!({"node": node, "pods": pods})
    }
}

/// The Kubernetes names of a pod VM's running app containers (runtime names are
/// `<name>.<restart count>`), in creation order, with their start times.
fn running_app_containers(s: &SandboxStatus) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for c in &s.containers {
        if c.config.init || c.state != ContainerState::Running {
            continue;
        }
        let name = kube_name(&c.config.name).to_string();
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, c.started_at.clone()));
        }
    }
    out
}

/// `web.3` → `web`.
fn kube_name(runtime_name: &str) -> &str {
    match runtime_name.rsplit_once('.') {
        Some((n, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => runtime_name,
    }
}

fn read_node(proc_root: &Path, ticks: u64) -> Option<(Reading, u64)> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let mem = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let busy = parse_proc_stat_busy(&stat)?;
    let (total, available) = parse_meminfo(&mem)?;
    Some((
        Reading {
            cpu_ns: ticks_to_ns(busy, ticks),
            memory: total.saturating_sub(available),
        },
        available,
    ))
}

fn read_process(proc_root: &Path, pid: u32, ticks: u64) -> Option<Reading> {
    let dir = proc_root.join(pid.to_string());
    let cpu = parse_pid_stat_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let memory = std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|s| kib_field(&s, "Pss:"))
        .or_else(|| {
            std::fs::read_to_string(dir.join("status"))
                .ok()
                .and_then(|s| kib_field(&s, "VmRSS:"))
        })?;
    Some(Reading {
        cpu_ns: ticks_to_ns(cpu, ticks),
        memory,
    })
}

fn ticks_to_ns(t: u64, per_sec: u64) -> u64 {
    (u128::from(t) * 1_000_000_000 / u128::from(per_sec.max(1))) as u64
}

/// Busy clock ticks of all CPUs: the `cpu` line of `/proc/stat` minus idle and iowait
/// (guest time is already inside user time).
fn parse_proc_stat_busy(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if f.len() < 8 {
        return None;
    }
    Some(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// `(MemTotal, MemAvailable)` in bytes.
fn parse_meminfo(s: &str) -> Option<(u64, u64)> {
    Some((kib_field(s, "MemTotal:")?, kib_field(s, "MemAvailable:")?))
}

/// A `Name:   123 kB` field in bytes.
fn kib_field(s: &str, name: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `/proc/<pid>/stat`, in clock ticks (the command name may hold spaces
/// and parentheses: fields are counted after the last `)`).
fn parse_pid_stat_ticks(s: &str) -> Option<u64> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid … utime(14) stime(15), 1-based over the whole line.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat_busy(stat), Some(161));
        assert_eq!(parse_proc_stat_busy("cpu0 1 2 3\n"), None);
        assert_eq!(parse_proc_stat_busy("cpu  1 x 3 4 5 6 7 8\n"), None);
        let mem = "MemTotal:       16000 kB\nMemFree:  100 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(parse_meminfo(mem), Some((16000 * 1024, 4000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let pid = "4242 (qemu (a) b) S 1 2 3 4 5 6 7 8 9 10 300 45 0 0 20 0 3 0 99";
        assert_eq!(parse_pid_stat_ticks(pid), Some(345));
        assert_eq!(parse_pid_stat_ticks("1 (x) S 1"), None);
        let rollup = "00400000-7ffd [rollup]\nRss:  2048 kB\nPss:   1500 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), Some(1500 * 1024));
        assert_eq!(ticks_to_ns(250, 100), 2_500_000_000);
    }

    #[test]
    fn rates_come_from_two_samples() {
        let t0 = Instant::now();
        let wall = jiff::Timestamp::now();
        let mut w = Window::default();
        assert!(w.usage().is_none());
        w.push(
            t0,
            wall,
            Reading {
                cpu_ns: 1_000_000_000,
                memory: 10,
            },
        );
        assert!(w.usage().is_none(), "one sample has no rate");
        // Half a core over two seconds.
        w.push(
            t0 + Duration::from_secs(2),
            wall,
            Reading {
                cpu_ns: 2_000_000_000,
                memory: 20,
            },
        );
        let u = w.usage().unwrap();
        assert_eq!(u.nano_cores, 500_000_000);
        assert_eq!(u.core_ns, 2_000_000_000);
        assert_eq!(u.working_set, 20);
        assert_eq!(u.window, Duration::from_secs(2));
        // A counter that went backwards (another process) gives no rate.
        w.push(
            t0 + Duration::from_secs(4),
            wall,
            Reading {
                cpu_ns: 5,
                memory: 20,
            },
        );
        assert!(w.usage().is_none());
    }

    #[test]
    fn container_names() {
        assert_eq!(kube_name("web.3"), "web");
        assert_eq!(kube_name("a.b.0"), "a.b");
        assert_eq!(kube_name("web"), "web");
        assert_eq!(kube_name("web.x"), "web.x");
    }

    #[test]
    fn this_host_is_readable() {
        let (node, avail) = read_node(Path::new("/proc"), 100).expect("/proc/stat and meminfo");
        assert!(node.cpu_ns > 0 && node.memory > 0 && avail > 0);
        let me = read_process(Path::new("/proc"), std::process::id(), 100).expect("own process");
        assert!(me.memory > 0);
    }
}
