//! The pod network glue the node agent and `h8s run` share: the network fabric
//! (`h8s_net`, blocking netlink and file-locked IPAM) makes a tap on a Network's segment for a
//! pod and hands out its address; the pod VM gets the tap as a [`NetworkAttachment`] and the
//! guest agent configures the interface.
//!
//! [`PodNetwork`] is the async face of one node's [`Fabric`]: every call runs on the calling
//! tokio runtime's blocking pool (the fabric opens its namespace-bound netlink sockets on the
//! thread it runs on), so async code never blocks a worker thread and never builds a runtime
//! of its own.

use std::sync::Arc;

use h8s_net::{Attachment, Fabric, Network};

use crate::api::NetworkAttachment;

/// Why a network call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The fabric refused or failed.
    #[error("network fabric")]
    Fabric(#[from] h8s_net::Error),
    /// The blocking task running the fabric call died.
    #[error("network fabric task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The runtime's view of a fabric attachment (what QEMU and the guest agent need).
pub fn attachment(a: &Attachment) -> NetworkAttachment {
    NetworkAttachment {
        tap: a.port.clone(),
        mac: a.mac.to_string(),
        address: a.address_cidr(),
        gateway: Some(a.gateway.to_string()),
        mtu: a.mtu,
        dns: a.dns.iter().map(|d| d.to_string()).collect(),
        cluster_dns: None,
    }
}

/// One node's fabric, callable from async code.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    fabric: Arc<Fabric>,
}

impl PodNetwork {
    /// Wraps a node's fabric.
    pub fn new(fabric: Fabric) -> PodNetwork {
        PodNetwork {
            fabric: Arc::new(fabric),
        }
    }

    /// The fabric itself (for blocking callers).
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Fabric) -> h8s_net::Result<T> + Send + 'static,
    ) -> Result<T, NetError> {
        let fabric = self.fabric.clone();
        tokio::task::spawn_blocking(move || f(&fabric))
            .await
            .map_err(NetError::Task)?
            .map_err(NetError::Fabric)
    }

    /// Creates `network` in the store unless a Network of that name exists (a `vni` of 0
    /// takes the lowest free one), then builds its segment on this node. Returns the stored
    /// Network.
    pub async fn ensure(&self, mut network: Network) -> Result<Network, NetError> {
        self.blocking(move |f| {
            let net = match f.store().get(&network.name) {
                Ok(n) => n,
                Err(h8s_net::Error::NotFound { .. }) => {
                    if network.vni == 0 {
                        network.vni = f.store().free_vni()?;
                    }
                    match f.store().create(&network) {
                        Ok(())
                        | Err(h8s_net::Error::Exists {
                            kind: "network", ..
                        }) => {}
                        Err(e) => return Err(e),
                    }
                    f.store().get(&network.name)?
                }
                Err(e) => return Err(e),
            };
            f.ensure_network(&net.name)?;
            Ok(net)
        })
        .await
    }

    /// A tap on `network` for pod VM `pod`, or the one it already has.
    pub async fn attach(&self, network: &str, pod: &str) -> Result<Attachment, NetError> {
        let (network, pod) = (network.to_string(), pod.to_string());
        self.blocking(move |f| match f.store().attachment(&network, &pod)? {
            Some(a) if a.node == f.node().name => Ok(a),
            _ => f.attach(&network, &pod),
        })
        .await
    }

    /// Releases `pod`'s taps and addresses on this node (fine if it has none).
    pub async fn detach_pod(&self, pod: &str) -> Result<(), NetError> {
        let pod = pod.to_string();
        self.blocking(move |f| f.detach_pod(&pod).map(|_| ())).await
    }

    /// Pods attached on this node, as `(network, pod)`.
    pub async fn attached_pods(&self) -> Result<Vec<(String, String)>, NetError> {
        self.blocking(|f| {
            let mut out = Vec::new();
            for net in f.store().list()? {
                for a in f.store().attachments(&net.name)? {
                    if a.node == f.node().name {
                        out.push((net.name.clone(), a.pod));
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
