//! The data: Networks, their subnets, pod attachments, MAC addresses and device names.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes VXLAN adds to every frame on the underlay: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Highest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// A tenant's isolated layer-2 segment with one or more IPv4 subnets (the seeds' `kind: Network`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Cluster-unique name (a DNS label).
    pub name: String,
    /// The owning tenant (Keystone project id).
    pub tenant: String,
    /// Segment id = VXLAN VNI, 1 ..= 2^24-1, unique per cluster.
    pub vni: u32,
    /// The subnets; pods get addresses from the first one with room.
    pub subnets: Vec<Subnet>,
    /// MTU of every pod interface on this Network (underlay MTU minus [`VXLAN_OVERHEAD`] at most).
    pub mtu: u32,
    /// DNS servers handed to pods; empty means "the first subnet's gateway".
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

/// One IPv4 subnet of a Network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// Name inside the Network (`subnet1` in the seeds).
    pub name: String,
    /// The prefix, e.g. `192.168.0.0/24` (host bits zero).
    pub cidr: Ipv4Net,
    /// The gateway address the Network's gateway answers; inside `cidr`.
    pub gateway: Ipv4Addr,
}

impl Subnet {
    /// A subnet whose gateway is the first host address when `gateway` is `None`.
    pub fn new(name: &str, cidr: &str, gateway: Option<Ipv4Addr>) -> Result<Subnet> {
        let cidr: Ipv4Net = cidr
            .parse()
            .map_err(|_| Error::invalid("subnet", format!("{cidr:?} is not an IPv4 CIDR")))?;
        let gateway = gateway.unwrap_or_else(|| next(cidr.network(), 1));
        let s = Subnet {
            name: name.to_string(),
            cidr,
            gateway,
        };
        s.validate()?;
        Ok(s)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        valid_label("subnet name", &self.name)?;
        if self.cidr.trunc() != self.cidr {
            return Err(Error::invalid(
                "subnet",
                format!(
                    "{} has host bits set (did you mean {}?)",
                    self.cidr,
                    self.cidr.trunc()
                ),
            ));
        }
        if self.cidr.prefix_len() > 30 {
            return Err(Error::invalid(
                "subnet",
                format!(
                    "{} is too small: /30 is the smallest usable prefix",
                    self.cidr
                ),
            ));
        }
        if !self.cidr.contains(&self.gateway)
            || self.gateway == self.cidr.network()
            || self.gateway == self.cidr.broadcast()
        {
            return Err(Error::invalid(
                "gateway",
                format!("{} is not a host address of {}", self.gateway, self.cidr),
            ));
        }
        Ok(())
    }

    /// Addresses pods can get: all hosts except network, broadcast and gateway.
    pub fn capacity(&self) -> u32 {
        let hosts = (1u64 << (32 - self.cidr.prefix_len())) as u32 - 2;
        hosts - 1
    }
}

pub(crate) fn next(a: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a).wrapping_add(n))
}

/// The tenant of Networks the API gives none (the system `default` Network).
pub const SYSTEM_TENANT: &str = "h8s-system";

impl Network {
    /// The fabric's view of the API's `Network` kind — the one place the two meet. The
    /// segment id is the `spec.providerNetworkID` the network controller records (a
    /// Network without one is not ready for the fabric); subnets come in name order (the
    /// first has the gateway MAC and default DNS); `mtu` is the node's choice (its underlay
    /// MTU minus [`VXLAN_OVERHEAD`]). The result is validated.
    pub fn from_api(api: &h8s_types::Network, mtu: u32) -> Result<Network> {
        let name = api.metadata.name.clone().unwrap_or_default();
        let vni = api
            .spec
            .provider_network_id
            .as_deref()
            .and_then(h8s_types::segment_id)
            .ok_or_else(|| {
                Error::invalid(
                    "vni",
                    format!("network {name:?} has no segment id yet (spec.providerNetworkID)"),
                )
            })?;
        let mut subnets = Vec::with_capacity(api.spec.subnets.len());
        for (sname, sn) in &api.spec.subnets {
            let gateway = match sn.gateway.as_str() {
                "" => None,
                g => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                    Error::invalid("gateway", format!("{g:?} is not an IPv4 address"))
                })?),
            };
            subnets.push(Subnet::new(sname, &sn.cidr, gateway)?);
        }
        let net = Network {
            name,
            tenant: api
                .spec
                .tenant_id
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| SYSTEM_TENANT.into()),
            vni,
            subnets,
            mtu,
            dns: vec![],
        };
        net.validate()?;
        Ok(net)
    }

    /// Checks everything that can be checked without the node: names, VNI, subnets, MTU.
    pub fn validate(&self) -> Result<()> {
        valid_label("network name", &self.name)?;
        if self.tenant.is_empty()
            || self.tenant.len() > 64
            || !self
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(
                "tenant",
                format!("{:?}: 1-64 of [A-Za-z0-9_-]", self.tenant),
            ));
        }
        if !(1..=MAX_VNI).contains(&self.vni) {
            return Err(Error::invalid(
                "vni",
                format!("{} is outside 1..={MAX_VNI}", self.vni),
            ));
        }
        if self.subnets.is_empty() {
            return Err(Error::invalid(
                "subnets",
                "a Network needs at least one subnet",
            ));
        }
        for (i, s) in self.subnets.iter().enumerate() {
            s.validate()?;
            for o in &self.subnets[..i] {
                if o.name == s.name {
                    return Err(Error::invalid(
                        "subnets",
                        format!("name {:?} used twice", s.name),
                    ));
                }
                if o.cidr.contains(&s.cidr.network()) || s.cidr.contains(&o.cidr.network()) {
                    return Err(Error::invalid(
                        "subnets",
                        format!("{} overlaps {}", s.cidr, o.cidr),
                    ));
                }
            }
        }
        if !(576..=9000).contains(&self.mtu) {
            return Err(Error::invalid(
                "mtu",
                format!("{} is outside 576..=9000", self.mtu),
            ));
        }
        Ok(())
    }

    /// DNS servers pods get.
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        if self.dns.is_empty() {
            vec![self.subnets[0].gateway]
        } else {
            self.dns.clone()
        }
    }

    /// The subnet holding `ip`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.cidr.contains(&ip))
    }
}

/// How a pod's interface reaches its segment's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A tap device a pod VM's virtio-net opens (QEMU `-netdev tap,ifname=…`).
    Tap,
    /// A veth pair whose other end is `eth0` in the pod's network namespace.
    Veth,
}

/// A pod's place on a Network: what the runtime and the guest agent need to plug it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The pod (runtime's sandbox name).
    pub pod: String,
    /// The Network.
    pub network: String,
    /// The node the pod runs on.
    pub node: String,
    /// That node's underlay (VXLAN endpoint) address.
    pub node_ip: Ipv4Addr,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Prefix length of its subnet.
    pub prefix_len: u8,
    /// Default gateway (the subnet's gateway).
    pub gateway: Ipv4Addr,
    /// The pod interface's MAC: the only source MAC its port lets through.
    pub mac: MacAddr,
    /// Interface MTU.
    pub mtu: u32,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Host-side device on the segment bridge (`h8t…` tap or `h8v…` veth).
    pub port: String,
    /// Tap or veth.
    pub kind: PortKind,
}

impl Attachment {
    /// `ip/prefix`, as the guest agent wants it.
    pub fn address_cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The MAC h8s gives an address: locally administered `0a:58:` + the four IPv4 bytes, so it
    /// is unique within a Network exactly as the address is (the same scheme as OVN-Kubernetes).
    pub fn for_ip(ip: Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<MacAddr> {
        let bad = || Error::invalid("MAC address", format!("{s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub(crate) fn valid_label(what: &'static str, s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("{s:?}: lower-case letters, digits and '-', 1-63 long"),
        ))
    }
}

/// Pod names: `[A-Za-z0-9][A-Za-z0-9_.-]{0,252}`.
pub(crate) fn valid_pod(s: &str) -> Result<()> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("pod name", format!("{s:?}")))
    }
}

/// Every device h8s creates starts with this (kernel names are at most 15 bytes).
pub const DEVICE_PREFIX: &str = "h8";

/// Device names of a Network segment on a node. All start with [`DEVICE_PREFIX`].
pub(crate) struct SegmentNames {
    pub bridge: String,
    pub vxlan: String,
    /// Host end of the gateway's veth (a bridge port).
    pub gw_port: String,
    /// Temporary name of the gateway's end before it moves into the gateway namespace.
    pub gw_peer: String,
    /// Host end of the gateway's uplink veth (routed, no bridge).
    pub uplink: String,
    pub uplink_peer: String,
}

impl SegmentNames {
    pub fn new(vni: u32) -> SegmentNames {
        SegmentNames {
            bridge: format!("h8b{vni}"),
            vxlan: format!("h8x{vni}"),
            gw_port: format!("h8g{vni}"),
            gw_peer: format!("h8gp{vni}"),
            uplink: format!("h8u{vni}"),
            uplink_peer: format!("h8up{vni}"),
        }
    }
}

/// Port names of a pod: `h8t`/`h8v` + 12 hex digits of a hash of (network, pod), and the
/// temporary name of a veth's pod end.
pub(crate) fn port_names(kind: PortKind, network: &str, pod: &str) -> (String, String) {
    // FNV-1a: stable across releases and processes (std's hasher is neither).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in network.bytes().chain([0u8]).chain(pod.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let id = format!("{:012x}", h & 0xffff_ffff_ffff);
    let p = match kind {
        PortKind::Tap => "h8t",
        PortKind::Veth => "h8v",
    };
    (format!("{p}{id}"), format!("h8p{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network {
            name: "net1".into(),
            tenant: "065f210a2ca9442aad898ab129426350".into(),
            vni: 42,
            subnets: vec![Subnet::new("subnet1", "192.168.0.0/24", None).unwrap()],
            mtu: 1350,
            dns: vec![],
        }
    }

    #[test]
    fn the_apis_network_converts_in_one_place() {
        let api: h8s_types::Network = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Network", "metadata": {"name": "net1"},
            "spec": {"tenantID": "acme", "providerNetworkID": "4097",
                "subnets": {"b": {"cidr": "10.1.0.0/24"},
                            "a": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.254"}}}}))
        .unwrap();
        let n = Network::from_api(&api, 1350).unwrap();
        assert_eq!(
            (n.name.as_str(), n.tenant.as_str(), n.vni, n.mtu),
            ("net1", "acme", 4097, 1350)
        );
        assert_eq!(n.subnets[0].name, "a");
        assert_eq!(n.subnets[0].gateway, Ipv4Addr::new(192, 168, 0, 254));
        assert_eq!(n.subnets[1].gateway, Ipv4Addr::new(10, 1, 0, 1));
        let mut sys = api.clone();
        sys.spec.tenant_id = None;
        assert_eq!(Network::from_api(&sys, 1350).unwrap().tenant, SYSTEM_TENANT);
        let mut pending = api.clone();
        pending.spec.provider_network_id = None;
        assert!(matches!(
            Network::from_api(&pending, 1350),
            Err(Error::Invalid { what: "vni", .. })
        ));
        let mut v6 = api.clone();
        v6.spec.subnets.get_mut("b").unwrap().cidr = "fd00::/64".into();
        assert!(Network::from_api(&v6, 1350).is_err());
        let mut bad_gw = api;
        bad_gw.spec.subnets.get_mut("a").unwrap().gateway = "fd00::1".into();
        assert!(matches!(
            Network::from_api(&bad_gw, 1350),
            Err(Error::Invalid {
                what: "gateway",
                ..
            })
        ));
    }

    #[test]
    fn seeds_network_is_valid() {
        let n = net();
        n.validate().unwrap();
        assert_eq!(n.subnets[0].gateway, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(n.subnets[0].capacity(), 253);
        assert_eq!(n.dns_servers(), vec![Ipv4Addr::new(192, 168, 0, 1)]);
    }

    #[test]
    fn bad_networks_are_rejected_with_reasons() {
        type Case = (fn(&mut Network), &'static str);
        let cases: Vec<Case> = vec![
            (|n| n.name = "Net_1".into(), "network name"),
            (|n| n.name = String::new(), "network name"),
            (|n| n.tenant = "a b".into(), "tenant"),
            (|n| n.vni = 0, "vni"),
            (|n| n.vni = MAX_VNI + 1, "vni"),
            (|n| n.subnets.clear(), "subnets"),
            (|n| n.mtu = 100, "mtu"),
            (
                |n| {
                    let s = n.subnets[0].clone();
                    n.subnets.push(Subnet {
                        name: "b".into(),
                        ..s
                    })
                },
                "subnets",
            ),
            (
                |n| n.subnets[0].gateway = Ipv4Addr::new(192, 168, 0, 255),
                "gateway",
            ),
            (
                |n| n.subnets[0].gateway = Ipv4Addr::new(10, 0, 0, 1),
                "gateway",
            ),
        ];
        for (f, what) in cases {
            let mut n = net();
            f(&mut n);
            match n.validate() {
                Err(Error::Invalid { what: w, .. }) => assert_eq!(w, what),
                other => panic!("expected invalid {what}, got {other:?}"),
            }
        }
        assert!(Subnet::new("s", "10.0.0.1/24", None).is_err());
        assert!(Subnet::new("s", "10.0.0.0/31", None).is_err());
        assert!(Subnet::new("s", "nonsense", None).is_err());
        assert!(Subnet::new("s", "10.0.0.0/30", None).is_ok());
    }

    #[test]
    fn mac_round_trips_and_derives_from_ip() {
        let m = MacAddr::for_ip(Ipv4Addr::new(192, 168, 0, 5));
        assert_eq!(m.to_string(), "0a:58:c0:a8:00:05");
        assert_eq!("0a:58:c0:a8:00:05".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "0a:58:c0:a8:00",
            "0a:58:c0:a8:00:05:01",
            "zz:58:c0:a8:00:05",
            "0a:58:c0:a8:0:05",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(m.0[0] & 0x01, 0, "unicast");
        assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn device_names_fit_the_kernel_limit() {
        let s = SegmentNames::new(MAX_VNI);
        for n in [
            &s.bridge,
            &s.vxlan,
            &s.gw_port,
            &s.gw_peer,
            &s.uplink,
            &s.uplink_peer,
        ] {
            assert!(n.len() <= 15 && n.starts_with(DEVICE_PREFIX), "{n}");
        }
        let (a, b) = port_names(PortKind::Tap, "net1", "a-very-long-pod-name-that-goes-on");
        assert_eq!(a.len(), 15);
        assert_eq!(b.len(), 15);
        assert_ne!(
            port_names(PortKind::Tap, "net1", "p").0,
            port_names(PortKind::Tap, "net2", "p").0
        );
        assert_eq!(
            port_names(PortKind::Veth, "n", "p").0,
            port_names(PortKind::Veth, "n", "p").0
        );
    }
}
