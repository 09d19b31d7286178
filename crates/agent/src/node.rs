//! The Node object of this machine: what it has (capacity, allocatable), what it is (nodeInfo,
//! addresses, labels), how it is (conditions); its registration, the Lease heartbeat in
//! `kube-node-lease` and the periodic status write. Hollow nodes use the same code.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::{api_err, Config, NodeTimers, Result};

/// The kubelet version nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-h8s";
/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The label naming the node's accelerator (`kvm` or `tcg`).
pub const ACCELERATOR_LABEL: &str = "h8s.io/accelerator";
/// The label marking hollow nodes.
pub const HOLLOW_LABEL: &str = "h8s.io/hollow";
/// The RuntimeClass pod VMs run under.
pub const RUNTIME_CLASS: &str = "h8s-vm";
/// The RuntimeClass of pods whose VM boots cold instead of restoring a VM template (a kernel
/// layout of its own; `docs/runtime.md`, "VM templates").
pub const RUNTIME_CLASS_COLD: &str = "h8s-vm-cold";

/// What the node is made of, measured once at start.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// CPUs.
    pub cpus: u64,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// The data directory's filesystem, bytes.
    pub storage_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// `/etc/os-release` `PRETTY_NAME`.
    pub os_image: String,
    /// GOARCH-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// `h8s-vm://0.1.0 (tcg)`-like.
    pub container_runtime_version: String,
    /// `kvm` or `tcg`; `hollow` for hollow nodes.
    pub accelerator: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// The host name.
    pub hostname: String,
    /// Hollow (fake) node.
    pub hollow: bool,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal`/`MemAvailable` of `/proc/meminfo`, bytes.
pub(crate) fn meminfo(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Total and available bytes of the filesystem holding `path`.
pub(crate) fn disk(path: &std::path::Path) -> Option<(u64, u64)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return None;
        }
    }
    let v = rustix::fs::statvfs(&p).ok()?;
    Some((v.f_blocks * v.f_frsize, v.f_bavail * v.f_frsize))
}

/// Go's name for this architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl NodeFacts {
    /// Measures this machine.
    pub fn probe(cfg: &Config, info: &h8s_runtime::RuntimeInfo) -> NodeFacts {
        let uname = rustix::system::uname();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        NodeFacts {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes: meminfo("MemTotal").unwrap_or(0),
            storage_bytes: disk(&cfg.data_dir).map(|d| d.0).unwrap_or(0),
            kernel_version: uname.release().to_string_lossy().into_owned(),
            os_image,
            architecture: go_arch().into(),
            container_runtime_version: format!("{}://{}", info.name, info.version),
            accelerator: info.accel.to_string(),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            hostname: uname.nodename().to_string_lossy().into_owned(),
            hollow: false,
        }
    }
}

fn q(s: String) -> Quantity {
    Quantity(s)
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Kubelet's four conditions, healthy, with `since` as their transition time.
pub(crate) fn conditions(since: &Time, pressure: crate::pressure::Pressure) -> Vec<NodeCondition> {
    let memory_pressure = pressure.memory;
    let disk_pressure = pressure.disk;
    let c = |type_: &str, ok: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(since.clone()),
    };
    vec![
        if memory_pressure {
            c(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            c(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if disk_pressure {
            c(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            c(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if pressure.pid {
            c(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            c(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
        c(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The Node object `name` registers as.
pub fn build_node(name: &str, cfg: &Config, facts: &NodeFacts) -> Node {
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".into(), name.to_string()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), facts.architecture.clone()),
        ("beta.kubernetes.io/os".into(), "linux".into()),
        ("beta.kubernetes.io/arch".into(), facts.architecture.clone()),
        (ACCELERATOR_LABEL.into(), facts.accelerator.clone()),
    ]);
    if facts.hollow {
        labels.insert(HOLLOW_LABEL.into(), "true".into());
    }
    labels.extend(cfg.labels.clone());
    let cpu_m = facts.cpus * 1000;
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(facts.cpus.to_string())),
        (
            "memory".to_string(),
            q(format!("{}Ki", facts.memory_bytes / 1024)),
        ),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", facts.storage_bytes / 1024)),
        ),
    ]);
    let allocatable = BTreeMap::from([
        (
            "cpu".to_string(),
            q(format!(
                "{}m",
                cpu_m.saturating_sub(cfg.reserved_cpu_millis)
            )),
        ),
        (
            "memory".to_string(),
            q(format!(
                "{}Ki",
                facts.memory_bytes.saturating_sub(cfg.reserved_memory_bytes) / 1024
            )),
        ),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", facts.storage_bytes / 1024 * 9 / 10)),
        ),
    ]);
    let mut addresses = Vec::new();
    if let Some(ip) = cfg.node_ip {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: if facts.hollow {
            name.to_string()
        } else {
            facts.hostname.clone()
        },
    });
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "h8s.io/accelerator".to_string(),
                facts.accelerator.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            addresses: Some(addresses),
            conditions: Some(conditions(&now(), Default::default())),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(cfg.streaming_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: facts.architecture.clone(),
                boot_id: facts.boot_id.clone(),
                container_runtime_version: if facts.hollow {
                    format!("hollow://{}", env!("CARGO_PKG_VERSION"))
                } else {
                    format!(
                        "{} ({})",
                        facts.container_runtime_version, facts.accelerator
                    )
                },
                kernel_version: facts.kernel_version.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.into(),
                machine_id: facts.machine_id.clone(),
                operating_system: "linux".into(),
                os_image: facts.os_image.clone(),
                system_uuid: facts.machine_id.clone(),
                swap: None,
            }),
            ..Default::default()
        }),
    }
}

/// Creates the Node, or takes over the existing one (labels and status refreshed).
pub async fn register(client: &kube::Client, node: &Node) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.create(&PostParams::default(), node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": node.metadata.labels}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("updating node {name}")))?;
        }
        Err(e) => return Err(api_err(format!("registering node {name}"))(e)),
    }
    let status = json!({"status": node.status});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(api_err(format!("writing node {name}'s status")))?;
    Ok(())
}

/// Renews one Lease (creating it when missing).
async fn renew(client: &kube::Client, name: &str, timers: &NodeTimers) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"renewTime": renew, "holderIdentity": name,
        "leaseDurationSeconds": timers.lease_duration_secs}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let owner = Api::<Node>::all(client.clone())
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid)
                .map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.to_string(),
                        uid,
                        ..Default::default()
                    }]
                });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_string()),
                    lease_duration_seconds: Some(timers.lease_duration_secs),
                    renew_time: Some(renew),
                    ..Default::default()
                }),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(api_err(format!("creating lease {name}"))(e)),
            }
        }
        Err(e) => Err(api_err(format!("renewing lease {name}"))(e)),
    }
}

/// Renews the Leases of `names` every `lease_renew_interval` until `stop`.
pub async fn heartbeat(
    client: kube::Client,
    names: Vec<String>,
    timers: NodeTimers,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(timers.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        futures::stream::iter(names.iter())
            .for_each_concurrent(16, |name| {
                let (client, timers) = (&client, &timers);
                async move {
                    if let Err(e) = renew(client, name, timers).await {
                        tracing::warn!(node = %name, error = %e, "lease renewal failed");
                    }
                }
            })
            .await;
    }
}

/// Writes the nodes' conditions (with fresh heartbeat times) every
/// `node_status_update_frequency`; re-registers a node someone deleted.
pub async fn status_loop(
    client: kube::Client,
    nodes: Vec<(String, Node)>,
    timers: NodeTimers,
    pressure: Option<std::sync::Arc<crate::pressure::PressureFlags>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let since = now();
    let api: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(timers.node_status_update_frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        futures::stream::iter(nodes.iter())
            .for_each_concurrent(16, |(name, node)| {
                let (api, client, since, pressure) = (&api, &client, &since, &pressure);
                async move {
                    let hollow = node
                        .metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key(HOLLOW_LABEL));
                    let now_pressure = match &pressure {
                        Some(p) if !hollow => p.get(),
                        _ => Default::default(),
                    };
                    let patch = json!({"status": {"conditions": conditions(since, now_pressure)}});
                    match api
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {
                            tracing::warn!(node = %name, "node object gone; registering again");
                            if let Err(e) = register(client, node).await {
                                tracing::warn!(node = %name, error = %e, "re-registration failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(node = %name, error = %e, "node status update failed")
                        }
                    }
                }
            })
            .await;
    }
}

/// Creates the `h8s-vm` and `h8s-vm-cold` RuntimeClasses (handler = name, with the VM's
/// overhead) unless they exist. The kind may not be served yet: then it retries in the
/// background.
pub async fn ensure_runtime_class(client: &kube::Client, info: &h8s_runtime::RuntimeInfo) {
    for class in [RUNTIME_CLASS, RUNTIME_CLASS_COLD] {
        ensure_one_runtime_class(client, info, class).await;
    }
}

async fn ensure_one_runtime_class(
    client: &kube::Client,
    info: &h8s_runtime::RuntimeInfo,
    class: &'static str,
) {
    let body = json!({
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": class, "labels": {"h8s.io/runtime": info.name}},
        "handler": class,
        "overhead": {"podFixed": {
            "memory": format!("{}Mi", info.overhead_memory_mib),
            "cpu": "100m",
        }},
    });
    let client = client.clone();
    let attempt = move || {
        let client = client.clone();
        let body = body.clone();
        async move {
            let gvk = kube::api::GroupVersionKind::gvk("node.k8s.io", "v1", "RuntimeClass");
            let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "runtimeclasses");
            let api: Api<kube::api::DynamicObject> = Api::all_with(client, &ar);
            let obj: kube::api::DynamicObject = match serde_json::from_value(body) {
                Ok(o) => o,
                Err(_) => return true,
            };
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    tracing::info!("created RuntimeClass {class}");
                    true
                }
                Err(kube::Error::Api(s)) if s.code == 409 => true,
                Err(e) => {
                    tracing::debug!(error = %e, "RuntimeClass not created yet");
                    false
                }
            }
        }
    };
    if attempt().await {
        return;
    }
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            if attempt().await {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_object_has_what_kubelet_reports() {
        let mut cfg = Config::new("n1", "/".into());
        cfg.node_ip = Some("10.0.0.5".parse().unwrap());
        cfg.reserved_memory_bytes = 1 << 30;
        let facts = NodeFacts {
            cpus: 2,
            memory_bytes: 4 << 30,
            storage_bytes: 100 << 30,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
            container_runtime_version: "h8s-vm://0.1.0".into(),
            accelerator: "tcg".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            hostname: "host".into(),
            hollow: false,
        };
        let n = build_node("n1", &cfg, &facts);
        let st = n.status.unwrap();
        assert_eq!(st.capacity.as_ref().unwrap()["cpu"].0, "2");
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"].0, "3145728Ki");
        assert_eq!(st.allocatable.as_ref().unwrap()["cpu"].0, "2000m");
        let info = st.node_info.unwrap();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert!(info.container_runtime_version.starts_with("h8s-vm://"));
        assert_eq!(
            n.metadata.labels.unwrap()[ACCELERATOR_LABEL],
            "tcg".to_string()
        );
        let conds = st.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(st.addresses.unwrap()[0].type_, "InternalIP");
        assert_eq!(
            st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
    }
}
