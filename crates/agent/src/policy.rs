//! NetworkPolicy on this node: follows Pods, NetworkPolicies, Namespaces and Networks
//! (watches), compiles the policies of every Network with pods here
//! ([`h8s_net::policy::compile`], pure) and programs the difference into the node's
//! `inet h8s_policy` table ([`h8s_net::Fabric::program_policy`]). A pass runs on every watch
//! event (50 ms debounce) and every second (to see pods attached since).
//!
//! Peers are looked up only among the pods of the same Network (its IPAM allocations name
//! them), so another tenant's pods — which may use the same addresses — never count, and
//! `namespaceSelector` sees only the namespaces of that Network.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use h8s_net::policy::{
    bridge_of, compile, zone_for_vni, NamedPort, PolicyNamespace, PolicyPod, Proto,
};
use h8s_net::{Fabric, PolicyRules};
use h8s_types::network::NetNamespace;
use h8s_types::Network as ApiNetwork;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Api;
use tokio::sync::{watch, Mutex, Notify};

use crate::netapi::{reflect, AbortOnDrop};

/// How often a pass runs without being woken (new local pods show up in the node store, not
/// in a watch).
const RESYNC: Duration = Duration::from_secs(1);

/// The node's NetworkPolicy enforcer.
pub struct PolicyAgent {
    fabric: Fabric,
    pods: Store<Pod>,
    policies: Store<NetworkPolicy>,
    namespaces: Store<NetNamespace>,
    networks: Store<ApiNetwork>,
    wake: Arc<Notify>,
    /// What the table holds (`None`: unknown, the next pass writes it whole).
    applied: Mutex<Option<PolicyRules>>,
    _tasks: Vec<AbortOnDrop>,
}

impl std::fmt::Debug for PolicyAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAgent").finish_non_exhaustive()
    }
}

/// A pod as policies see it, at address `ip` of its Network.
pub(crate) fn policy_pod(pod: &Pod, ip: Ipv4Addr) -> PolicyPod {
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                proto: Proto::from_api(p.protocol.as_deref())?,
                port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    PolicyPod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        ports,
    }
}

/// The rules of one Network (pure): its pods from the IPAM allocations joined with the pods
/// known, its namespaces, their policies.
pub(crate) fn network_rules(
    net: &h8s_net::Network,
    api_net: Option<&ApiNetwork>,
    local: &[Ipv4Addr],
    pods: &Store<Pod>,
    namespaces: &[Arc<NetNamespace>],
    policies: &[Arc<NetworkPolicy>],
) -> PolicyRules {
    let mut members = vec![];
    for (ip, holder) in api_net
        .and_then(|n| n.status.as_ref())
        .map(|s| &s.allocations)
        .into_iter()
        .flatten()
    {
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let Some(pod) = pods.get(&ObjectRef::new(&holder.pod).within(&holder.namespace)) else {
            continue;
        };
        if pod.metadata.uid.as_deref() != Some(holder.pod_uid.as_str()) {
            continue; // a pod of the same name that does not hold this address
        }
        members.push(policy_pod(&pod, ip));
    }
    let nss: Vec<PolicyNamespace> = namespaces
        .iter()
        .filter(|n| n.network() == net.name)
        .map(|n| PolicyNamespace {
            name: n.metadata.name.clone().unwrap_or_default(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    let pols: Vec<NetworkPolicy> = policies
        .iter()
        .filter(|p| {
            nss.iter()
                .any(|n| Some(n.name.as_str()) == p.metadata.namespace.as_deref())
        })
        .map(|p| (**p).clone())
        .collect();
    let bridge = bridge_of(net.vni);
    let mut r = compile(&bridge, local, &members, &nss, &pols);
    r.zones.insert(bridge, zone_for_vni(net.vni));
    r
}

impl PolicyAgent {
    /// Starts following the API for the node whose fabric is `fabric`.
    pub fn start(client: kube::Client, fabric: Fabric) -> Arc<PolicyAgent> {
        let wake = Arc::new(Notify::new());
        let (pods, t1) = reflect(Api::<Pod>::all(client.clone()), wake.clone());
        let (policies, t2) = reflect(Api::<NetworkPolicy>::all(client.clone()), wake.clone());
        let (namespaces, t3) = reflect(Api::<NetNamespace>::all(client.clone()), wake.clone());
        let (networks, t4) = reflect(Api::<ApiNetwork>::all(client), wake.clone());
        Arc::new(PolicyAgent {
            fabric,
            pods,
            policies,
            namespaces,
            networks,
            wake,
            applied: Mutex::new(None),
            _tasks: vec![t1, t2, t3, t4],
        })
    }

    /// Enforces until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.pass().await;
            tokio::select! {
                _ = self.wake.notified() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tokio::time::sleep(RESYNC) => {}
                _ = stop.changed() => return,
            }
        }
    }

    #[tracing::instrument(skip(self), level = "debug")]
    async fn pass(&self) {
        let fabric = self.fabric.clone();
        let local = tokio::task::spawn_blocking(move || -> h8s_net::Result<_> {
            let node = fabric.node().name.clone();
            let mut out = vec![];
            for net in fabric.store().list()? {
                let ips: Vec<Ipv4Addr> = fabric
                    .store()
                    .attachments(&net.name)?
                    .into_iter()
                    .filter(|a| a.node == node)
                    .map(|a| a.ip)
                    .collect();
                if !ips.is_empty() {
                    out.push((net, ips));
                }
            }
            Ok(out)
        })
        .await;
        let local = match local {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the node's networks failed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "network store task failed");
                return;
            }
        };
        let (namespaces, policies) = (self.namespaces.state(), self.policies.state());
        let mut rules = PolicyRules::default();
        for (net, ips) in &local {
            let api_net = self.networks.get(&ObjectRef::new(&net.name));
            rules.extend(network_rules(
                net,
                api_net.as_deref(),
                ips,
                &self.pods,
                &namespaces,
                &policies,
            ));
        }
        let mut applied = self.applied.lock().await;
        if applied.as_ref() == Some(&rules) {
            return;
        }
        let old = applied.take();
        let fabric = self.fabric.clone();
        let t0 = Instant::now();
        let size = rules.len();
        let r = tokio::task::spawn_blocking(move || {
            fabric.program_policy(old.as_ref(), &rules).map(|()| rules)
        })
        .await;
        match r {
            Ok(Ok(rules)) => {
                tracing::debug!(elements = size, took = ?t0.elapsed(), "NetworkPolicy rules programmed");
                *applied = Some(rules);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "programming NetworkPolicy rules failed; rewriting them next pass")
            }
            Err(e) => tracing::warn!(error = %e, "NetworkPolicy task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn pods_named_ports_and_labels() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "a", "name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9090}]}]}
        }))
        .unwrap();
        let p = policy_pod(&pod, "192.168.0.2".parse().unwrap());
        assert_eq!(p.labels, BTreeMap::from([("app".into(), "web".into())]));
        assert_eq!(
            p.ports,
            [
                NamedPort {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 8080
                },
                NamedPort {
                    name: "dns".into(),
                    proto: Proto::Udp,
                    port: 53
                }
            ]
        );
    }
}
