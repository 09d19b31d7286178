//! Hollow nodes (kubemark's idea): `h8s agent --hollow N` registers N Nodes
//! (`hollow-node-0` … `hollow-node-{N-1}`) that renew their Leases and report every pod bound
//! to them Running and Ready, with a fake IP, without starting anything. They are marked
//! (`h8s.io/hollow=true`, nodeInfo `containerRuntimeVersion: hollow://…`) and exist for
//! benchmarks and scale tests of the control plane only.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::Api;
use serde_json::{json, Value};

use crate::node::{self, NodeFacts};
use crate::{Config, Result};

/// What hollow nodes look like.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many.
    pub count: usize,
    /// Name prefix; nodes are `<prefix><i>`.
    pub prefix: String,
    /// CPUs each reports.
    pub cpus: u64,
    /// Memory each reports, bytes.
    pub memory_bytes: u64,
    /// Common settings (max pods, timers, labels; node name and data dir unused).
    pub base: Config,
}

impl HollowConfig {
    /// `count` nodes of 4 CPUs and 16 GiB, 110 pods each.
    pub fn new(count: usize, base: Config) -> HollowConfig {
        HollowConfig {
            count,
            prefix: "hollow-node-".into(),
            cpus: 4,
            memory_bytes: 16 << 30,
            base,
        }
    }

    /// The nodes' names.
    pub fn names(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| format!("{}{i}", self.prefix))
            .collect()
    }
}

/// Running hollow nodes.
pub struct Hollow {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hollow {
    /// Registers the nodes and starts their heartbeats and the pod reporter.
    pub async fn start(client: kube::Client, cfg: HollowConfig) -> Result<Hollow> {
        let facts = NodeFacts {
            cpus: cfg.cpus,
            memory_bytes: cfg.memory_bytes,
            storage_bytes: 100 << 30,
            kernel_version: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            os_image: "h8s hollow node".into(),
            architecture: node::go_arch().into(),
            container_runtime_version: format!("hollow://{}", env!("CARGO_PKG_VERSION")),
            accelerator: "hollow".into(),
            machine_id: String::new(),
            boot_id: String::new(),
            hostname: String::new(),
            hollow: true,
        };
        let names = cfg.names();
        let nodes: Vec<_> = names
            .iter()
            .map(|n| (n.clone(), node::build_node(n, &cfg.base, &facts)))
            .collect();
        let registered = futures::stream::iter(nodes.iter())
            .map(|(_, n)| node::register(&client, n))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await;
        registered?;
        tracing::info!(count = cfg.count, "hollow nodes registered");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(node::heartbeat(
                client.clone(),
                names.clone(),
                cfg.base.node_timers.clone(),
                stopped.clone(),
            )),
            tokio::spawn(node::status_loop(
                client.clone(),
                nodes,
                cfg.base.node_timers.clone(),
                None,
                stopped.clone(),
            )),
            tokio::spawn(report_pods(client, names.into_iter().collect(), stopped)),
        ];
        Ok(Hollow { stop, tasks })
    }

    /// Stops heartbeats and reporting (the Node objects stay, and go NotReady).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

/// How often a hollow node tries to report one pod's status before it waits for the pod's
/// next change.
const STATUS_ATTEMPTS: u32 = 8;

/// Watches every pod; those bound to a hollow node are reported Running, and deleted ones
/// are finished off (grace 0), as a kubelet would after stopping them.
async fn report_pods(
    client: kube::Client,
    names: HashSet<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let next_ip = Arc::new(AtomicU32::new(1));
    let done = Arc::new(tokio::sync::Mutex::new(HashSet::<String>::new()));
    let stream = watcher(pods.clone(), watcher::Config::default().any_semantic());
    let mut stream = std::pin::pin!(stream);
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = stop.changed() => return,
        };
        let pod = match ev {
            Some(Ok(watcher::Event::Apply(p))) | Some(Ok(watcher::Event::InitApply(p))) => p,
            Some(Ok(watcher::Event::Delete(p))) => {
                if let Some(uid) = p.metadata.uid {
                    done.lock().await.remove(&uid);
                }
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "hollow pod watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            None => return,
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !names.contains(&node) {
            continue;
        }
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.metadata.uid.clone(),
        ) else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            tokio::spawn(async move {
                if let Err(e) = api.delete(&name, &dp).await {
                    tracing::debug!(pod = %name, error = %e, "hollow pod delete");
                }
            });
            continue;
        }
        let running = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Running");
        if running || !done.lock().await.insert(uid.clone()) {
            continue;
        }
        let n = next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n);
        let status = running_status(&pod, ip);
        let done = done.clone();
        tokio::spawn(async move {
            let patch = json!({ "status": status });
            // A failed report is retried with back-off, as kubelet's status manager keeps
            // syncing until the server has the status; a pod that is gone is not.
            let mut backoff = std::time::Duration::from_millis(100);
            for attempt in 1..=STATUS_ATTEMPTS {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.code == 404 => break,
                    Err(e) => {
                        tracing::debug!(pod = %name, attempt, error = %e, "hollow pod status");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
            done.lock().await.remove(&uid);
        });
    }
}

/// A pod status as kubelet reports a healthy running pod.
fn running_status(pod: &Pod, ip: Ipv4Addr) -> Value {
    let now = Time(jiff::Timestamp::now());
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let cs = |c: &k8s_openapi::api::core::v1::Container, init: bool| {
        let state = if init {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}})
        } else {
            json!({"running": {"startedAt": now}})
        };
        json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": format!("hollow://{}", c.image.clone().unwrap_or_default()),
            "containerID": format!("hollow://{uid}/{}", c.name),
            "ready": !init,
            "started": !init,
            "restartCount": 0,
            "state": state,
        })
    };
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let host_ip = "127.0.0.1";
    let mut status = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
            cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": now,
        "qosClass": crate::status::qos_class(&spec),
        "containerStatuses": spec.containers.iter().map(|c| cs(c, false)).collect::<Vec<_>>(),
    });
    let inits: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| cs(c, true))
        .collect();
    if !inits.is_empty() {
        status["initContainerStatuses"] = Value::Array(inits);
    }
    status
}
