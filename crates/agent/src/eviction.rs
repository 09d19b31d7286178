//! Local ephemeral storage limits, as kubelet's eviction manager enforces them
//! (`localStorageEviction`): a pod whose emptyDir outgrows its `sizeLimit`, whose local
//! storage outgrows the sum of its containers' `ephemeral-storage` limits, or whose container's
//! writable layer outgrows that container's limit is evicted — phase Failed, reason `Evicted`,
//! kubelet's message.
//!
//! In a pod VM that storage is guest memory: each container's writable layer is a tmpfs and
//! each emptyDir a directory (its own tmpfs when it has a `sizeLimit`). The agent sizes those
//! tmpfs a little above the limit ([`hard_cap`]) so a runaway writer gets `ENOSPC` there while
//! usage beyond the limit stays visible, and evicts the pod at its next check. Container logs
//! live on the host (capped by `--container-log-max-size`/`--container-log-max-files`) and
//! count in their container's usage, as kubelet counts them ([`log_files`]).
//!
//! Everything here is pure: the worker feeds in the spec and what the guest reports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::quantity;

/// The pod condition reason and the pod status reason kubelet uses.
pub(crate) const REASON: &str = "Evicted";

/// A container's `ephemeral-storage` limit: its bytes and the quantity as written.
pub(crate) fn container_limit(c: &Container) -> Option<(u64, String)> {
    let q = c
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("ephemeral-storage")?;
    let n = quantity::units(&q.0)?;
    Some((u64::try_from(n).unwrap_or(u64::MAX), q.0.clone()))
}

/// The size a limited tmpfs gets: the limit plus an eighth (at least 1 MiB), so usage past the
/// limit is seen and evicted while the writer is still bounded.
pub(crate) fn hard_cap(limit: u64) -> u64 {
    limit.saturating_add((limit / 8).max(1 << 20))
}

/// An emptyDir's `sizeLimit` in bytes and as written; whether it is memory-backed.
pub(crate) fn empty_dir_limit(spec: &PodSpec, volume: &str) -> Option<(u64, String, bool)> {
    let v = spec.volumes.iter().flatten().find(|v| v.name == volume)?;
    let e = v.empty_dir.as_ref()?;
    let q = e.size_limit.as_ref()?;
    let n = quantity::units(&q.0)?;
    let memory = e.medium.as_deref() == Some("Memory");
    Some((u64::try_from(n).unwrap_or(u64::MAX), q.0.clone(), memory))
}

/// The tmpfs size of an emptyDir in the guest: memory-backed ones exactly their `sizeLimit`
/// (as kubelet sizes its tmpfs), disk-backed ones [`hard_cap`] of it; `None` without a limit.
pub(crate) fn empty_dir_size(spec: &PodSpec, volume: &str) -> Option<u64> {
    let (n, _, memory) = empty_dir_limit(spec, volume)?;
    Some(if memory { n } else { hard_cap(n) })
}

/// What a pod's local storage holds, by spec container name (every instance of it summed for
/// the pod total, the current one for the container check) and by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StorageUse {
    /// Current instance of each container: bytes in its writable layer.
    pub current: BTreeMap<String, u64>,
    /// Every instance still in the VM (restarted containers' layers stay until removed).
    pub all_containers: u64,
    /// Pod volume directories.
    pub volumes: BTreeMap<String, u64>,
}

/// Sums `ephemeral-storage` limits the way kubelet's `PodLimits` does: app containers add up,
/// an init container's limit counts when larger. `None` when no container has one.
fn pod_limit(spec: &PodSpec) -> Option<u64> {
    let apps: Vec<u64> = spec
        .containers
        .iter()
        .filter_map(container_limit)
        .map(|l| l.0)
        .collect();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(container_limit)
        .map(|l| l.0)
        .max();
    if apps.is_empty() && init.is_none() {
        return None;
    }
    let sum = apps.iter().fold(0u64, |a, b| a.saturating_add(*b));
    Some(sum.max(init.unwrap_or(0)))
}

/// A byte count as a Kubernetes quantity in its canonical binary form (`3Mi`, `1536Ki`).
pub(crate) fn format_bytes(n: u64) -> String {
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// Why kubelet would evict this pod for its local storage (the eviction message), in
/// kubelet's order: emptyDir limits, the pod's total, each container's own limit.
pub(crate) fn local_storage_violation(spec: &PodSpec, used: &StorageUse) -> Option<String> {
    for v in spec.volumes.iter().flatten() {
        if let Some((limit, q, _)) = empty_dir_limit(spec, &v.name) {
            if used.volumes.get(&v.name).is_some_and(|u| *u > limit) {
                return Some(format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {q:?}. ",
                    v.name
                ));
            }
        }
    }
    if let Some(limit) = pod_limit(spec) {
        // Disk-backed emptyDirs count towards the pod; memory-backed ones are memory.
        let volumes: u64 = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| {
                v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
            })
            .filter_map(|v| used.volumes.get(&v.name))
            .sum();
        if used.all_containers.saturating_add(volumes) > limit {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                format_bytes(limit)
            ));
        }
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        if let Some((limit, q)) = container_limit(c) {
            if used.current.get(&c.name).is_some_and(|u| *u > limit) {
                return Some(format!(
                    "Container {} exceeded its local ephemeral storage limit {q:?}. ",
                    c.name
                ));
            }
        }
    }
    None
}

/// A container's log on the host: how many files (the log and its rotated
/// `<file>.<time>` siblings) and their bytes.
pub(crate) fn log_files(path: &std::path::Path) -> (u64, u64) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return (0, 0);
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let rotated = format!("{name}.");
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n == name || n.starts_with(&rotated))
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(f, b), m| (f + 1, b + m.len()))
}

/// Whether the pod has any local storage limit worth measuring.
pub(crate) fn has_storage_limits(spec: &PodSpec) -> bool {
    pod_limit(spec).is_some()
        || spec
            .volumes
            .iter()
            .flatten()
            .any(|v| empty_dir_limit(spec, &v.name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn pod() -> PodSpec {
        spec(serde_json::json!({
            "containers": [
                {"name": "app", "resources": {"limits": {"ephemeral-storage": "2Mi"}}},
                {"name": "side", "resources": {"limits": {"ephemeral-storage": "1Mi"}}},
                {"name": "free"},
            ],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "small", "emptyDir": {"sizeLimit": "512Ki"}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            ],
        }))
    }

    fn used(current: &[(&str, u64)], volumes: &[(&str, u64)]) -> StorageUse {
        StorageUse {
            current: current.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            all_containers: current.iter().map(|(_, v)| v).sum(),
            volumes: volumes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn within_limits_is_no_violation() {
        let u = used(&[("app", 1 << 20), ("side", 512 << 10)], &[("small", 4096)]);
        assert_eq!(local_storage_violation(&pod(), &u), None);
        assert!(has_storage_limits(&pod()));
        assert!(!has_storage_limits(&spec(
            serde_json::json!({"containers": [{"name": "a"}]})
        )));
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_comes_first() {
        let u = used(&[("side", 3 << 20)], &[("small", 600 << 10)]);
        assert_eq!(
            local_storage_violation(&pod(), &u).as_deref(),
            Some("Usage of EmptyDir volume \"small\" exceeds the limit \"512Ki\". ")
        );
    }

    #[test]
    fn the_pod_total_counts_disk_empty_dirs_but_not_memory_ones() {
        // 3 MiB of limits: 1 MiB in app, 2.5 MiB in the plain emptyDir.
        let u = used(
            &[("app", 1 << 20)],
            &[("scratch", 5 << 19), ("ram", 1 << 20)],
        );
        assert_eq!(
            local_storage_violation(&pod(), &u).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 3Mi. ")
        );
        // Containers at their limits (3 MiB together) plus a full memory-backed volume: the
        // volume is memory, not local storage.
        let u = used(&[("app", 2 << 20), ("side", 1 << 20)], &[("ram", 1 << 20)]);
        assert_eq!(local_storage_violation(&pod(), &u), None);
    }

    #[test]
    fn a_container_over_its_own_limit() {
        let u = used(&[("side", (1 << 20) + 1)], &[]);
        assert_eq!(
            local_storage_violation(&pod(), &u).as_deref(),
            Some("Container side exceeded its local ephemeral storage limit \"1Mi\". ")
        );
    }

    #[test]
    fn init_containers_count_by_their_largest_limit() {
        let s = spec(serde_json::json!({
            "initContainers": [{"name": "i", "resources": {"limits": {"ephemeral-storage": "8Mi"}}}],
            "containers": [{"name": "a", "resources": {"limits": {"ephemeral-storage": "1Mi"}}}],
        }));
        assert_eq!(pod_limit(&s), Some(8 << 20));
    }

    #[test]
    fn caps_and_sizes() {
        assert_eq!(hard_cap(1 << 20), 2 << 20);
        assert_eq!(hard_cap(64 << 20), 72 << 20);
        assert_eq!(empty_dir_size(&pod(), "ram"), Some(1 << 20));
        assert_eq!(
            empty_dir_size(&pod(), "small"),
            Some((512 << 10) + (1 << 20))
        );
        assert_eq!(empty_dir_size(&pod(), "scratch"), None);
        assert_eq!(format_bytes(3 << 20), "3Mi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1000), "1000");
    }
}
