//! The datapath of one node: per Network a bridge, a unicast VXLAN device and a gateway
//! namespace; per pod a tap (VM) or veth (namespace) port with anti-spoofing rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::expose::{self, ServiceRules, SVC_TABLE};
use crate::link::{create_tap, Nl};
use crate::model::{
    next, port_names, valid_label, Attachment, MacAddr, Network, PortKind, SegmentNames,
    DEVICE_PREFIX, VXLAN_OVERHEAD,
};
use crate::netns::{self, NsRef};
use crate::nft::{self, NodeRules, PortRule};
use crate::policy::PolicyRules;
use crate::store::{NetworkStore, PortRequest};

/// Where and how a node runs its part of the fabric.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name (a DNS label); part of the gateway namespaces' names.
    pub name: String,
    /// The namespace holding the node's devices: [`NsRef::Current`] on a real node, a test's
    /// namespace in the multi-node tests.
    pub netns: NsRef,
    /// The node's underlay address: VXLAN endpoint, what other nodes send to.
    pub underlay_ip: Ipv4Addr,
    /// MTU of the underlay; a Network's MTU plus [`VXLAN_OVERHEAD`] must fit in it.
    pub underlay_mtu: u32,
    /// UDP port of VXLAN (IANA 4789).
    pub vxlan_port: u16,
    /// Range for gateway uplinks: each Network on the node takes a /31 of it.
    pub transit: Ipv4Net,
    /// Ranges tenant egress may never reach (the underlay, node and control-plane addresses).
    pub protected: Vec<Ipv4Net>,
    /// Destinations tenant egress may reach through the gateways' NAT (the operator's
    /// `--egress-allow`); [`NodeConfig::protected`] is refused even inside these. Default:
    /// everything (`0.0.0.0/0`), i.e. the default route's destinations minus the protected
    /// ranges; empty: no egress at all.
    pub egress_allow: Vec<Ipv4Net>,
    /// Host addresses that serve DNS to pods (the one exception to "nothing reaches the host").
    pub host_dns: Vec<Ipv4Addr>,
    /// Turn on IPv4 forwarding in the node namespace so gateways can masquerade egress.
    pub egress: bool,
    /// The node agent's API server relay (a TCP port on the node): each gateway forwards
    /// connections to its gateway addresses' port [`API_GATEWAY_PORT`] there, so pods reach
    /// the API server (`kubernetes.default.svc`) through their Network's gateway and nothing
    /// else of the host. The port is reachable from gateway uplinks only.
    pub api_relay_port: Option<u16>,
}

/// The port of a gateway address that leads to the API server (through the node agent's
/// relay, [`NodeConfig::api_relay_port`]).
pub const API_GATEWAY_PORT: u16 = 443;

/// The device holding the LoadBalancer pool addresses a node announces.
pub const LB_DEVICE: &str = "h8lb0";

/// Ranges no tenant egress reaches by default: cloud metadata and the rest of link-local
/// (169.254.0.0/16), loopback, "this network", the private ranges where a provider's own
/// services and other customers' machines live, shared address space, multicast and reserved.
/// An operator who wants pods to reach a private range edits [`NodeConfig::protected`].
pub const DEFAULT_PROTECTED: &[&str] = &[
    "169.254.0.0/16",
    "127.0.0.0/8",
    "0.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

impl NodeConfig {
    /// Defaults for a node called `name` whose underlay address is `underlay_ip`.
    pub fn new(name: &str, underlay_ip: Ipv4Addr) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            netns: NsRef::Current,
            underlay_ip,
            underlay_mtu: 1500,
            vxlan_port: 4789,
            transit: "100.64.0.0/16".parse().expect("literal"),
            protected: DEFAULT_PROTECTED
                .iter()
                .map(|p| p.parse().expect("literal"))
                .collect(),
            host_dns: vec![],
            egress: true,
            egress_allow: vec![Ipv4Net::default()],
            api_relay_port: None,
        }
    }

    /// A node whose underlay is the interface of the IPv4 default route in `ns`. Every
    /// address of the node (any interface) and every subnet it is connected to are protected
    /// from tenant egress, besides [`DEFAULT_PROTECTED`].
    pub fn detect(name: &str, ns: NsRef) -> Result<NodeConfig> {
        let (found, addrs) = ns.run(|| {
            let nl = Nl::open()?;
            Ok((nl.default_route_source()?, nl.ipv4_addrs()?))
        })?;
        let (ip, prefix, mtu) = found.ok_or_else(|| {
            Error::invalid(
                "underlay",
                "no IPv4 default route to take the node address from; set it explicitly",
            )
        })?;
        let mut c = NodeConfig::new(name, ip);
        c.netns = ns;
        c.underlay_mtu = mtu;
        if let Ok(net) = Ipv4Net::new(ip, prefix) {
            c.protected.push(net.trunc());
        }
        c.protect_host_addresses(&addrs);
        Ok(c)
    }

    /// Protects each of the node's own addresses and the subnets they sit on (other host
    /// interfaces' networks), except the gateways' transit links, which the rules handle.
    pub fn protect_host_addresses(&mut self, addrs: &[(Ipv4Addr, u8)]) {
        for (ip, prefix) in addrs {
            if self.transit.contains(ip) {
                continue;
            }
            self.protected.push(Ipv4Net::from(*ip));
            if let Ok(net) = Ipv4Net::new(*ip, *prefix) {
                self.protected.push(net.trunc());
            }
        }
    }

    /// Name of a Network's gateway namespace on this node.
    pub fn gateway_netns(&self, vni: u32) -> String {
        format!("{}{vni}", self.gateway_netns_prefix())
    }

    fn gateway_netns_prefix(&self) -> String {
        format!("h8s-gw-{}-", self.name)
    }

    /// The transit /31 of uplink number `idx`: (host side, gateway side).
    fn transit_pair(&self, idx: u32) -> (Ipv4Addr, Ipv4Addr) {
        let host = next(self.transit.network(), 2 * idx);
        (host, next(host, 1))
    }
}

/// What h8s has made on a node, for leak checks and `h8s net inventory`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Links in the node namespace whose name starts with [`DEVICE_PREFIX`].
    pub links: Vec<String>,
    /// Gateway namespaces of this node.
    pub namespaces: Vec<String>,
    /// nftables tables named `h8s` in the node namespace, as `family name`.
    pub tables: Vec<String>,
}

impl Inventory {
    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.namespaces.is_empty() && self.tables.is_empty()
    }
}

/// One node's share of the fabric, over a [`NetworkStore`].
#[derive(Debug, Clone)]
pub struct Fabric {
    store: NetworkStore,
    node: NodeConfig,
}

impl Fabric {
    /// A node's fabric. Checks the configuration; touches nothing.
    pub fn new(store: NetworkStore, node: NodeConfig) -> Result<Fabric> {
        valid_label("node name", &node.name)?;
        if node.transit.prefix_len() > 30 {
            return Err(Error::invalid(
                "transit range",
                format!("{} is too small", node.transit),
            ));
        }
        if !(576 + VXLAN_OVERHEAD..=65535).contains(&node.underlay_mtu) {
            return Err(Error::invalid(
                "underlay MTU",
                node.underlay_mtu.to_string(),
            ));
        }
        Ok(Fabric { store, node })
    }

    /// Sets the node agent's API server relay port (see [`NodeConfig::api_relay_port`]);
    /// gateways built afterwards forward to it.
    pub fn set_api_relay_port(&mut self, port: Option<u16>) {
        self.node.api_relay_port = port;
    }

    /// The store.
    pub fn store(&self) -> &NetworkStore {
        &self.store
    }

    /// The node's configuration.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// Builds whatever is missing of `network`'s segment on this node (bridge, VXLAN, gateway,
    /// rules, forwarding entries). Idempotent.
    pub fn ensure_network(&self, network: &str) -> Result<()> {
        let net = self.store.get(network)?;
        if net.mtu + VXLAN_OVERHEAD > self.node.underlay_mtu {
            return Err(Error::invalid(
                "mtu",
                format!(
                    "network {} has MTU {} but VXLAN over this node's underlay (MTU {}) carries at most {}",
                    net.name,
                    net.mtu,
                    self.node.underlay_mtu,
                    self.node.underlay_mtu - VXLAN_OVERHEAD
                ),
            ));
        }
        let capacity = (1u64 << (32 - self.node.transit.prefix_len())) / 2;
        let idx = self.store.update_node(&self.node.name, |rec| {
            if let Some(i) = rec.transit.get(&net.name) {
                return Ok(*i);
            }
            let used: BTreeSet<u32> = rec.transit.values().copied().collect();
            let i = (0..capacity as u32)
                .find(|i| !used.contains(i))
                .ok_or_else(|| {
                    Error::invalid("transit range", format!("{} is full", self.node.transit))
                })?;
            rec.transit.insert(net.name.clone(), i);
            Ok(i)
        })?;
        let names = SegmentNames::new(net.vni);
        let gw_ns_name = self.node.gateway_netns(net.vni);
        let (host_t, gw_t) = self.node.transit_pair(idx);
        let node = &self.node;
        let (created, gw_missing) = self.node.netns.run(|| {
            let nl = Nl::open()?;
            let mut created = false;
            if nl.index(&names.bridge)?.is_none() {
                created = true;
                nl.add_bridge(&names.bridge, net.mtu)?;
                no_ipv6(&names.bridge);
                let b = nl.require(&names.bridge)?;
                nl.set_up(b, Some(net.mtu), None)?;
            }
            let br = nl.require(&names.bridge)?;
            if nl.index(&names.vxlan)?.is_none() {
                created = true;
                nl.add_vxlan(
                    &names.vxlan,
                    net.vni,
                    node.underlay_ip,
                    node.vxlan_port,
                    net.mtu,
                )?;
                no_ipv6(&names.vxlan);
                nl.enslave(nl.require(&names.vxlan)?, br, net.mtu)?;
            }
            if node.egress {
                netns::sysctl("net.ipv4.ip_forward", "1")?;
            }
            let complete = nl.index(&names.gw_port)?.is_some()
                && nl.index(&names.uplink)?.is_some()
                && netns::list_named(&gw_ns_name).contains(&gw_ns_name);
            Ok((created, !complete))
        })?;
        if gw_missing {
            self.build_gateway(&net, &names, &gw_ns_name, host_t, gw_t)?;
        }
        // Rules and forwarding entries only change when the segment was (re)built here;
        // `reconcile` is the call that repairs them otherwise.
        if created || gw_missing {
            self.reconcile()?;
        }
        Ok(())
    }

    fn build_gateway(
        &self,
        net: &Network,
        names: &SegmentNames,
        gw_ns_name: &str,
        host_t: Ipv4Addr,
        gw_t: Ipv4Addr,
    ) -> Result<()> {
        // Start from nothing: a half-built gateway from a crash is cheaper to redo than to repair.
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            for n in [
                &names.gw_port,
                &names.gw_peer,
                &names.uplink,
                &names.uplink_peer,
            ] {
                nl.del_name(n)?;
            }
            Ok(())
        })?;
        netns::delete_named(gw_ns_name)?;
        let gw_ns = netns::create_named(gw_ns_name)?;
        let gw_file = gw_ns.open()?;
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            let br = nl.require(&names.bridge)?;
            nl.add_veth(&names.gw_port, &names.gw_peer)?;
            nl.add_veth(&names.uplink, &names.uplink_peer)?;
            no_ipv6(&names.gw_port);
            no_ipv6(&names.uplink);
            nl.move_to(nl.require(&names.gw_peer)?, &gw_file)?;
            nl.move_to(nl.require(&names.uplink_peer)?, &gw_file)?;
            nl.enslave(nl.require(&names.gw_port)?, br, net.mtu)?;
            let up = nl.require(&names.uplink)?;
            nl.add_addr(up, host_t, 31)?;
            nl.set_up(up, None, None)
        })?;
        gw_ns.run(|| {
            let nl = Nl::open()?;
            netns::sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            netns::sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            netns::sysctl("net.ipv4.ip_forward", "1")?;
            nl.set_up(nl.require("lo")?, None, None)?;
            let g = nl.require(&names.gw_peer)?;
            nl.rename(g, "gw0")?;
            // One MAC for all gateway addresses of the Network, derived from the first.
            nl.set_up(
                g,
                Some(net.mtu),
                Some(MacAddr::for_ip(net.subnets[0].gateway)),
            )?;
            for s in &net.subnets {
                nl.add_addr(g, s.gateway, s.cidr.prefix_len())?;
            }
            let u = nl.require(&names.uplink_peer)?;
            nl.rename(u, "up0")?;
            nl.set_up(u, None, None)?;
            nl.add_addr(u, gw_t, 31)?;
            nl.add_default_route(host_t)?;
            nft::apply(&nft::gateway_script(
                &net.subnets.iter().map(|s| s.gateway).collect::<Vec<_>>(),
                self.node.api_relay_port.map(|p| (host_t, p)),
            ))
        })
    }

    /// Removes `network`'s segment from this node: devices, gateway namespace, rules. Refuses
    /// while pods of this node are attached.
    pub fn teardown_network(&self, network: &str) -> Result<()> {
        let net = self.store.get(network)?;
        let local = self
            .store
            .attachments(network)?
            .into_iter()
            .filter(|a| a.node == self.node.name)
            .count();
        if local > 0 {
            return Err(Error::InUse {
                network: network.into(),
                pods: local,
            });
        }
        self.remove_segment(&net.name, net.vni)?;
        self.reconcile()
    }

    /// Removes `network` from this node and from the node's store (the store as a cache of
    /// the API: the Network is programmed again when a pod needs it). Refuses while pods of
    /// this node are attached.
    pub fn forget_network(&self, network: &str) -> Result<()> {
        match self.store.get(network) {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.teardown_network(network)?;
        self.store.set_remote(network, &self.node.name, vec![])?;
        self.store.remove(network).map(|_| ())
    }

    fn remove_segment(&self, name: &str, vni: u32) -> Result<()> {
        let names = SegmentNames::new(vni);
        // The gateway's veths first (their other ends go with them, at once), then its
        // namespace: the kernel destroys a namespace asynchronously, and its veths with it.
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            for n in [&names.vxlan, &names.gw_port, &names.uplink, &names.bridge] {
                nl.del_name(n)?;
            }
            Ok(())
        })?;
        netns::delete_named(&self.node.gateway_netns(vni))?;
        self.store.update_node(&self.node.name, |rec| {
            rec.transit.remove(name);
            Ok(())
        })
    }

    /// Attaches pod `pod` (a VM) to `network` through a new tap; QEMU opens the tap by name.
    pub fn attach(&self, network: &str, pod: &str) -> Result<Attachment> {
        self.attach_port(network, pod, None)
    }

    /// Attaches pod `pod` living in network namespace `pod_ns` through a veth whose pod end
    /// becomes `eth0` there, configured with the address, MTU and default route.
    pub fn attach_netns(&self, network: &str, pod: &str, pod_ns: &NsRef) -> Result<Attachment> {
        self.attach_port(network, pod, Some(pod_ns))
    }

    /// Attaches pod VM `pod` to `network` through a new tap with the address `ip` the
    /// cluster's IPAM (the API) gave it.
    pub fn attach_ip(&self, network: &str, pod: &str, ip: Ipv4Addr) -> Result<Attachment> {
        self.attach_port_ip(network, pod, None, Some(ip))
    }

    fn attach_port(&self, network: &str, pod: &str, pod_ns: Option<&NsRef>) -> Result<Attachment> {
        self.attach_port_ip(network, pod, pod_ns, None)
    }

    fn attach_port_ip(
        &self,
        network: &str,
        pod: &str,
        pod_ns: Option<&NsRef>,
        ip: Option<Ipv4Addr>,
    ) -> Result<Attachment> {
        let _span = tracing::info_span!("attach", network, pod).entered();
        self.ensure_network(network)?;
        let kind = if pod_ns.is_some() {
            PortKind::Veth
        } else {
            PortKind::Tap
        };
        let att = self.store.allocate(
            network,
            &PortRequest {
                pod,
                node: &self.node.name,
                node_ip: self.node.underlay_ip,
                kind,
                ip,
            },
        )?;
        match self.plug(&att, pod_ns).and_then(|()| self.reconcile()) {
            Ok(()) => {
                tracing::info!(ip = %att.ip, port = %att.port, "attached");
                Ok(att)
            }
            Err(e) => {
                let _ = self.unplug(&att);
                let _ = self.store.release(network, pod);
                let _ = self.reconcile();
                Err(e)
            }
        }
    }

    fn plug(&self, att: &Attachment, pod_ns: Option<&NsRef>) -> Result<()> {
        let net = self.store.get(&att.network)?;
        let names = SegmentNames::new(net.vni);
        let peer = port_names(att.kind, &att.network, &att.pod).1;
        let pod_file = pod_ns.map(|n| n.open()).transpose()?;
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            let br = nl.require(&names.bridge)?;
            match &pod_file {
                None => create_tap(&att.port)?,
                Some(f) => {
                    nl.add_veth(&att.port, &peer)?;
                    nl.move_to(nl.require(&peer)?, f)?;
                }
            }
            no_ipv6(&att.port);
            let p = nl.require(&att.port)?;
            nl.enslave(p, br, att.mtu)?;
            nl.pod_port_opts(p)?;
            nl.bridge_fdb_add(p, att.mac)
        })?;
        if let Some(ns) = pod_ns {
            ns.run(|| {
                let nl = Nl::open()?;
                nl.set_up(nl.require("lo")?, None, None)?;
                let i = nl.require(&peer)?;
                nl.rename(i, "eth0")?;
                nl.set_up(i, Some(att.mtu), Some(att.mac))?;
                nl.add_addr(i, att.ip, att.prefix_len)?;
                nl.add_default_route(att.gateway)
            })?;
        }
        Ok(())
    }

    /// Puts the tap `warm` (a warm pod VM's: QEMU holds it open, down, on no bridge) in
    /// the place of the tap made for the pod whose port is `port`: that tap makes way under a
    /// retired name (`h8sx…`) and is deleted afterwards, off the caller's path
    /// (deleting a net device waits for RCU grace periods: 17–25 ms here, a rename does not);
    /// `warm` takes its name and is plugged as it was (bridge, MTU, port options, the pod's MAC
    /// in the bridge's table), so the port's rules apply to it unchanged.
    pub fn adopt_tap(&self, warm: &str, port: &str) -> Result<()> {
        let _span = tracing::info_span!("adopt_tap", warm, port).entered();
        let att = self
            .store
            .list()?
            .iter()
            .flat_map(|n| self.store.attachments(&n.name).unwrap_or_default())
            .find(|a| a.port == port && a.node == self.node.name && a.kind == PortKind::Tap)
            .ok_or_else(|| Error::NotFound {
                kind: "tap attachment",
                name: port.to_string(),
            })?;
        let net = self.store.get(&att.network)?;
        let names = SegmentNames::new(net.vni);
        let retired = retired_tap_name(warm);
        let swapped = self.node.netns.run(|| {
            let nl = Nl::open()?;
            let br = nl.require(&names.bridge)?;
            let taken = nl.require(warm).and_then(|w| {
                if let Some(own) = nl.index(&att.port)? {
                    // A link is renamed only while down.
                    nl.set_down(own)?;
                    nl.rename(own, &retired)?;
                }
                nl.rename(w, &att.port)
            });
            if taken.is_err() && nl.index(&att.port)?.is_none() {
                // The pod keeps a tap of its own (it will boot another VM).
                create_tap(&att.port)?;
            }
            let p = nl.require(&att.port)?;
            no_ipv6(&att.port);
            nl.enslave(p, br, att.mtu)?;
            nl.pod_port_opts(p)?;
            nl.bridge_fdb_add(p, att.mac)?;
            taken
        });
        // Whatever happened above, retired taps go (this one and any an earlier adoption left
        // behind when its process ended before deleting its own).
        let netns = self.node.netns.clone();
        std::thread::spawn(move || {
            if let Err(e) = netns.run(|| delete_retired_taps(&Nl::open()?)) {
                tracing::warn!(error = %e, "deleting retired taps");
            }
        });
        swapped?;
        tracing::info!("warm tap adopted");
        Ok(())
    }

    fn unplug(&self, att: &Attachment) -> Result<()> {
        self.node
            .netns
            .run(|| Nl::open()?.del_name(&att.port).map(|_| ()))
    }

    /// Detaches `pod` from `network`: deletes its port, frees its address, drops its rules.
    pub fn detach(&self, network: &str, pod: &str) -> Result<Attachment> {
        let att = self.unplug_and_release(network, pod)?;
        self.reconcile()?;
        Ok(att)
    }

    /// [`Fabric::detach`] without the reconcile of rules and forwarding entries.
    fn unplug_and_release(&self, network: &str, pod: &str) -> Result<Attachment> {
        let _span = tracing::info_span!("detach", network, pod).entered();
        let att = self
            .store
            .attachment(network, pod)?
            .ok_or_else(|| Error::NotFound {
                kind: "attachment",
                name: format!("{network}/{pod}"),
            })?;
        if att.node != self.node.name {
            return Err(Error::invalid(
                "detach",
                format!("{network}/{pod} is attached on node {}", att.node),
            ));
        }
        self.unplug(&att)?;
        self.store.release(network, pod)?;
        Ok(att)
    }

    /// Detaches `pod` from every Network it is attached to on this node (pod removal).
    pub fn detach_pod(&self, pod: &str) -> Result<Vec<Attachment>> {
        self.detach_pods(&[pod])?
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Detaches each of `pods` from every Network it is attached to on this node, then
    /// reconciles rules and forwarding entries once for them all: many pods going at once (a
    /// deleted Deployment) cost one ruleset load, not one each. The outer error is the
    /// reconcile's; each pod's own result is in `pods`' order (a pod whose port cannot be
    /// deleted does not keep the others attached).
    pub fn detach_pods(&self, pods: &[&str]) -> Result<Vec<Result<Vec<Attachment>>>> {
        let mut out: Vec<Result<Vec<Attachment>>> = pods.iter().map(|_| Ok(vec![])).collect();
        let mut changed = false;
        for net in self.store.list()? {
            // This Network's attachments of `pods` here: ports deleted one by one, the store
            // written once.
            let atts = match self.store.attachments(&net.name) {
                Err(Error::NotFound { .. }) => continue, // removed meanwhile
                r => r?,
            };
            let mut here: BTreeMap<String, Attachment> = atts
                .into_iter()
                .filter(|a| a.node == self.node.name && pods.contains(&a.pod.as_str()))
                .map(|a| (a.pod.clone(), a))
                .collect();
            let mut unplugged = vec![];
            for (i, pod) in pods.iter().enumerate() {
                let Some(att) = here.remove(*pod) else {
                    continue;
                };
                if out[i].is_err() {
                    continue;
                }
                let _span = tracing::info_span!("detach", network = %net.name, pod).entered();
                match self.unplug(&att) {
                    Ok(()) => unplugged.push((i, att)),
                    Err(e) => out[i] = Err(e),
                }
            }
            if unplugged.is_empty() {
                continue;
            }
            let names: Vec<&str> = unplugged.iter().map(|(_, a)| a.pod.as_str()).collect();
            match self.store.release_all(&net.name, &names) {
                Err(Error::NotFound { .. }) => {}
                r => r?,
            }
            changed = true;
            for (i, att) in unplugged {
                if let Ok(v) = &mut out[i] {
                    v.push(att);
                }
            }
        }
        if changed {
            self.reconcile()?;
        }
        Ok(out)
    }

    /// Rebuilds whatever is missing of every Network this node had (after a reboot or a
    /// manual deletion), then reconciles rules and forwarding entries.
    pub fn repair(&self) -> Result<()> {
        let local: Vec<String> = self.store.update_node(&self.node.name, |rec| {
            Ok(rec.transit.keys().cloned().collect())
        })?;
        for n in local {
            match self.ensure_network(&n) {
                Ok(()) => {}
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
            // Ports that still exist go back on the (possibly rebuilt) bridge.
            let net = self.store.get(&n)?;
            let br_name = SegmentNames::new(net.vni).bridge;
            for a in self.store.attachments(&n)? {
                if a.node != self.node.name {
                    continue;
                }
                self.node.netns.run(|| {
                    let nl = Nl::open()?;
                    let Some(p) = nl.index(&a.port)? else {
                        tracing::warn!(pod = %a.pod, port = %a.port, "port is gone; detach and attach the pod again");
                        return Ok(());
                    };
                    nl.enslave(p, nl.require(&br_name)?, a.mtu)?;
                    nl.pod_port_opts(p)?;
                    nl.bridge_fdb_add(p, a.mac)
                })?;
            }
        }
        self.reconcile()
    }

    /// Brings the node's rules and every local segment's VXLAN forwarding entries in line with
    /// the store: call it when pods come and go on other nodes.
    pub fn reconcile(&self) -> Result<()> {
        let _node_lock = self.store.node_lock(&self.node.name)?;
        let local: BTreeMap<String, u32> = self
            .store
            .update_node(&self.node.name, |rec| Ok(rec.transit.clone()))?;
        let mut rules = NodeRules {
            ports: vec![],
            gateway_macs: vec![],
            vxlan_peers: vec![],
            vxlan_port: self.node.vxlan_port,
            protected: self.node.protected.clone(),
            egress_allow: self.node.egress_allow.clone(),
            transit: self.node.transit,
            host_dns: self.node.host_dns.clone(),
            api_relay_port: self.node.api_relay_port,
        };
        let mut fdb: Vec<(String, BTreeSet<(MacAddr, Ipv4Addr)>)> = vec![];
        let mut peers = BTreeSet::new();
        for name in local.keys() {
            let net = match self.store.get(name) {
                Ok(n) => n,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let names = SegmentNames::new(net.vni);
            rules
                .gateway_macs
                .push((names.vxlan.clone(), MacAddr::for_ip(net.subnets[0].gateway)));
            let mut want = BTreeSet::new();
            for a in self.store.attachments(name)? {
                if a.node == self.node.name {
                    rules.ports.push(PortRule {
                        port: a.port,
                        mac: a.mac,
                        ip: a.ip,
                    });
                } else {
                    want.insert((a.mac, a.node_ip));
                    want.insert((MacAddr([0; 6]), a.node_ip));
                    peers.insert(a.node_ip);
                }
            }
            fdb.push((names.vxlan, want));
        }
        rules.vxlan_peers = peers.into_iter().collect();
        let script = rules.script();
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            for (dev, want) in &fdb {
                let Some(ix) = nl.index(dev)? else { continue };
                let have: BTreeSet<(MacAddr, Ipv4Addr)> = nl.fdb_list(ix)?.into_iter().collect();
                for (mac, dst) in have.difference(want) {
                    nl.fdb_del(ix, *mac, *dst)?;
                }
                for (mac, dst) in want.difference(&have) {
                    nl.fdb_add(ix, *mac, *dst)?;
                }
            }
            if local.is_empty() {
                nft::delete_tables()
            } else {
                nft::apply(&script)
            }
        })
    }

    /// Programs the node's NetworkPolicy table (`inet h8s_policy`): only the elements that
    /// changed since `old` (what the previous call installed), or the whole table when `old`
    /// is `None` or the incremental update is refused (the table went away with the node's
    /// last Network, say). An empty rule set removes the table. Needs bridged IPv4 to pass the
    /// inet hooks (`br_netfilter`): turns `net.bridge.bridge-nf-call-iptables` on and fails if
    /// the kernel has no such switch.
    pub fn program_policy(&self, old: Option<&PolicyRules>, new: &PolicyRules) -> Result<()> {
        self.node.netns.run(|| {
            if new.is_empty() {
                if old.is_some_and(|o| o.is_empty()) {
                    return Ok(());
                }
                let exists = nft::list_tables()?
                    .iter()
                    .any(|(f, n)| f == "inet" && n == crate::policy::POLICY_TABLE);
                if exists {
                    nft::apply(&format!(
                        "delete table inet {}\n",
                        crate::policy::POLICY_TABLE
                    ))?;
                }
                return Ok(());
            }
            if let Some(old) = old.filter(|o| !o.is_empty()) {
                match new.diff_script(old) {
                    None => return Ok(()),
                    Some(script) => match nft::apply(&script) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            tracing::debug!(error = %e, "incremental policy update refused; rewriting the table")
                        }
                    },
                }
            }
            netns::sysctl("net.bridge.bridge-nf-call-iptables", "1").map_err(|e| {
                Error::Nft(format!(
                    "NetworkPolicy needs bridged IPv4 in the inet hooks (br_netfilter): {e}"
                ))
            })?;
            nft::apply(&new.script())
        })
    }

    /// Programs NodePort and LoadBalancer forwarding ([`crate::expose`]): each local
    /// Network's gateway table, then the node's table, and the pool addresses this node
    /// announces (on [`LB_DEVICE`]; the node answers ARP for them, and broadcasts a gratuitous
    /// ARP on the underlay interface for each newly added one). Empty rules remove all
    /// of it. Turns on IPv4 forwarding in the node namespace (hops to other nodes).
    pub fn program_services(&self, rules: &ServiceRules) -> Result<()> {
        let _span = tracing::debug_span!("program_services", ports = rules.ports.len()).entered();
        let local: BTreeMap<String, u32> = self
            .store
            .update_node(&self.node.name, |rec| Ok(rec.transit.clone()))?;
        let mut uplinks = BTreeMap::new();
        for (name, idx) in &local {
            let net = match self.store.get(name) {
                Ok(n) => n,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let gw_ns = self.node.gateway_netns(net.vni);
            if !netns::list_named(&gw_ns).contains(&gw_ns) {
                continue;
            }
            let script = expose::gateway_script(rules, name);
            NsRef::named(&gw_ns).run(|| nft::apply(&script))?;
            uplinks.insert(name.clone(), self.node.transit_pair(*idx).1);
        }
        let script = expose::node_script(rules, self.node.underlay_ip, &uplinks);
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            if rules.lb_addrs.is_empty() {
                nl.del_name(LB_DEVICE)?;
            } else {
                let ix = match nl.index(LB_DEVICE)? {
                    Some(i) => i,
                    None => {
                        nl.add_holder(LB_DEVICE)?;
                        no_ipv6(LB_DEVICE);
                        nl.require(LB_DEVICE)?
                    }
                };
                let added = nl.sync_host_addrs(ix, &rules.lb_addrs)?;
                // A pool address new on this node may have been another node's a moment
                // ago: tell the underlay now rather than when its neighbour entries expire.
                // Best effort: the address is served either way.
                if !added.is_empty() {
                    match nl.link_of_addr(self.node.underlay_ip)? {
                        Some((uix, mac)) => {
                            if let Err(e) = crate::arp::announce(uix, mac, &added) {
                                tracing::warn!(error = %e, "gratuitous ARP for pool addresses");
                            }
                        }
                        None => tracing::warn!(
                            underlay = %self.node.underlay_ip,
                            "no interface holds the underlay address: no gratuitous ARP"
                        ),
                    }
                }
            }
            if rules.is_empty() {
                let exists = nft::list_tables()?
                    .iter()
                    .any(|(f, n)| f == "ip" && n == SVC_TABLE);
                if exists {
                    nft::apply(&format!("delete table ip {SVC_TABLE}\n"))?;
                }
                return Ok(());
            }
            netns::sysctl("net.ipv4.ip_forward", "1")?;
            nft::apply(&script)
        })
    }

    /// Everything h8s has made on this node.
    pub fn inventory(&self) -> Result<Inventory> {
        let (links, tables) = self.node.netns.run(|| {
            let mut links: Vec<String> = Nl::open()?
                .links()?
                .into_iter()
                .map(|l| l.name)
                .filter(|n| n.starts_with(DEVICE_PREFIX))
                .collect();
            links.sort();
            let tables = nft::list_tables()?
                .into_iter()
                .filter(|(_, n)| {
                    n == nft::TABLE || n == crate::policy::POLICY_TABLE || n == SVC_TABLE
                })
                .map(|(f, n)| format!("{f} {n}"))
                .collect();
            Ok((links, tables))
        })?;
        Ok(Inventory {
            links,
            namespaces: netns::list_named(&self.node.gateway_netns_prefix()),
            tables,
        })
    }

    /// Removes everything this store's Networks have on this node: every pod port, segment
    /// device and gateway namespace, and the node's rules (tests' clean-up, `h8s net reset`).
    /// Attachments recorded for this node are released; the Networks stay in the store.
    /// Devices of another store sharing the namespace are not touched (one store per node).
    pub fn teardown_all(&self) -> Result<()> {
        let mut names: Vec<String> = vec![];
        for net in self.store.list()? {
            for a in self.store.attachments(&net.name)? {
                if a.node == self.node.name {
                    let (port, peer) = port_names(a.kind, &a.network, &a.pod);
                    names.extend([port, peer]);
                    self.store.release(&net.name, &a.pod)?;
                }
            }
            let s = SegmentNames::new(net.vni);
            // Ports first, bridges last; veth peers vanish with their other end.
            names.extend([
                s.vxlan,
                s.gw_port,
                s.gw_peer,
                s.uplink,
                s.uplink_peer,
                s.bridge,
            ]);
        }
        self.node.netns.run(|| {
            let nl = Nl::open()?;
            for n in &names {
                nl.del_name(n)?;
            }
            nl.del_name(LB_DEVICE)?;
            if nft::list_tables()?
                .iter()
                .any(|(f, n)| f == "ip" && n == SVC_TABLE)
            {
                nft::apply(&format!("delete table ip {SVC_TABLE}\n"))?;
            }
            nft::delete_tables()
        })?;
        // Gateway namespaces after their veths (see `remove_segment`).
        for ns in netns::list_named(&self.node.gateway_netns_prefix()) {
            netns::delete_named(&ns)?;
        }
        self.store.update_node(&self.node.name, |rec| {
            rec.transit.clear();
            Ok(())
        })
    }
}

/// Host-side devices get no IPv6 (no link-local address, no router solicitations onto a
/// tenant segment). Best effort: a kernel without IPv6 has nothing to turn off.
pub(crate) fn no_ipv6(dev: &str) {
    let _ = netns::sysctl_dev("ipv6", dev, "disable_ipv6", "1");
}

/// The name prefix of a pod's own tap once a warm clone's took its place
/// ([`Fabric::adopt_tap`]): such a link only waits to be deleted.
const RETIRED_TAP_PREFIX: &str = "h8sx";

/// The retired name of the tap that makes way for `warm` (unique while `warm` is).
fn retired_tap_name(warm: &str) -> String {
    let tail = warm.strip_prefix("h8sw").unwrap_or(warm);
    let mut name = format!("{RETIRED_TAP_PREFIX}{tail}");
    name.truncate(libc::IFNAMSIZ - 1);
    name
}

/// Deletes every retired tap in the current network namespace.
fn delete_retired_taps(nl: &Nl) -> Result<()> {
    for l in nl.links()? {
        if l.name.starts_with(RETIRED_TAP_PREFIX) {
            // Another adoption's thread may have deleted it meanwhile.
            if let Err(e) = nl.del(l.index) {
                tracing::debug!(link = %l.name, error = %e, "retired tap not deleted");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_and_their_subnets_are_protected_transit_is_not() {
        let mut c = NodeConfig::new("n1", Ipv4Addr::new(10, 1, 0, 2));
        c.protected.clear();
        c.protect_host_addresses(&[
            (Ipv4Addr::new(203, 0, 113, 7), 24),
            (Ipv4Addr::new(198, 51, 100, 9), 32),
            (Ipv4Addr::new(100, 64, 0, 1), 31),
        ]);
        let got: Vec<String> = c.protected.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "203.0.113.7/32",
                "203.0.113.0/24",
                "198.51.100.9/32",
                "198.51.100.9/32"
            ]
        );
        assert_eq!(c.egress_allow, vec![Ipv4Net::default()]);
        assert_eq!(c.egress_allow[0].to_string(), "0.0.0.0/0");
    }
}
