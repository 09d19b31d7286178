//! The node's own port on a Network: how the API server's host reaches the cluster's system
//! Network (docs/network.md, "The system Network").
//!
//! A veth pair like a namespace pod's: the bridge end `h8v<hash>` is a pod port with the
//! same anti-spoofing (one MAC, one address), the other end stays in the node's namespace as
//! [`host_device`] `h8y<vni>` with the address the cluster's IPAM gave it and no default
//! route, so the host routes the Network's subnets there and nothing else. Across nodes the
//! address is one more attachment of the Network: other nodes forward its MAC to this node
//! over the segment's VXLAN, so the host reaches the Network's pods on every node.
//!
//! The node's rules (`inet h8s`) let into the host only replies of connections the host
//! opened on such a device, and forward nothing from or to it: pods of the Network never
//! reach the host, its other interfaces, or through it anything else.

use std::net::Ipv4Addr;

use crate::error::Result;
use crate::fabric::{no_ipv6, Fabric};
use crate::link::Nl;
use crate::model::{port_names, Attachment, PortKind, SegmentNames};
use crate::store::PortRequest;

/// Prefix of the host ends of host ports (`h8y<vni>`); the node's rules refuse new
/// connections from them.
pub const HOST_DEVICE_PREFIX: &str = "h8y";

/// The host end of the node's port on the Network with segment id `vni`.
pub fn host_device(vni: u32) -> String {
    format!("{HOST_DEVICE_PREFIX}{vni}")
}

impl Fabric {
    /// Gives the node's own network stack the address `ip` on `network` (recorded as the
    /// attachment `name`): the host then reaches that Network's pods directly, on this and
    /// (through the VXLAN) every other node. Idempotent: an existing attachment of `name`
    /// with this address is kept while its device exists, else plugged again.
    pub fn attach_host(&self, network: &str, name: &str, ip: Ipv4Addr) -> Result<Attachment> {
        let _span = tracing::info_span!("attach_host", network, name).entered();
        if let Some(a) = self.store().attachment(network, name)? {
            if a.node == self.node().name && a.ip == ip && a.kind == PortKind::Veth {
                let present = self
                    .node()
                    .netns
                    .run(|| Ok(Nl::open()?.index(&a.port)?.is_some()))?;
                if present {
                    return Ok(a);
                }
            }
            self.detach(network, name)?;
        }
        self.ensure_network(network)?;
        let att = self.store().allocate(
            network,
            &PortRequest {
                pod: name,
                node: &self.node().name,
                node_ip: self.node().underlay_ip,
                kind: PortKind::Veth,
                ip: Some(ip),
            },
        )?;
        match self.plug_host(&att).and_then(|()| self.reconcile()) {
            Ok(()) => {
                tracing::info!(ip = %att.ip, port = %att.port, "host attached");
                Ok(att)
            }
            Err(e) => {
                let _ = self.detach(network, name);
                Err(e)
            }
        }
    }

    fn plug_host(&self, att: &Attachment) -> Result<()> {
        let net = self.store().get(&att.network)?;
        let names = SegmentNames::new(net.vni);
        let peer = port_names(att.kind, &att.network, &att.pod).1;
        let dev = host_device(net.vni);
        self.node().netns.run(|| {
            let nl = Nl::open()?;
            let br = nl.require(&names.bridge)?;
            nl.del_name(&dev)?;
            nl.add_veth(&att.port, &peer)?;
            no_ipv6(&att.port);
            let p = nl.require(&att.port)?;
            nl.enslave(p, br, att.mtu)?;
            nl.pod_port_opts(p)?;
            nl.bridge_fdb_add(p, att.mac)?;
            let h = nl.require(&peer)?;
            nl.rename(h, &dev)?;
            no_ipv6(&dev);
            nl.set_up(h, Some(att.mtu), Some(att.mac))?;
            nl.add_addr(h, att.ip, att.prefix_len)
        })
    }
}
