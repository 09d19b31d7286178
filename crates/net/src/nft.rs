//! nftables rule sets, generated whole from the desired state and loaded with one `nft -f -`
//! per change (an atomic transaction: the old table is replaced, never half-edited).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::model::MacAddr;

/// Name of every nftables table h8s makes (in the bridge and inet families on a node, in the
/// ip family inside each gateway namespace).
pub const TABLE: &str = "h8s";

/// A pod port as the anti-spoofing rules see it.
pub(crate) struct PortRule {
    pub port: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// Everything the node's rules are made of.
pub(crate) struct NodeRules {
    pub ports: Vec<PortRule>,
    /// `(vxlan device, gateway MAC)`: each node answers its Networks' gateway addresses itself,
    /// so gateway frames never cross the VXLAN.
    pub gateway_macs: Vec<(String, MacAddr)>,
    pub vxlan_peers: Vec<Ipv4Addr>,
    pub vxlan_port: u16,
    pub protected: Vec<Ipv4Net>,
    /// Destinations egress may reach (the protected ranges are refused first).
    pub egress_allow: Vec<Ipv4Net>,
    pub transit: Ipv4Net,
    pub host_dns: Vec<Ipv4Addr>,
    /// The node agent's API relay port: open to gateway uplinks, closed to everyone else.
    pub api_relay_port: Option<u16>,
}

fn elements(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", v.join(", "))
    }
}

impl NodeRules {
    /// The node's two tables: `bridge h8s` (pod port anti-spoofing, no frames from a segment
    /// to the host's own stack, gateway frames kept off the VXLAN) and `inet h8s` (VXLAN only
    /// from known peers; gateway uplinks reach neither the host nor each other nor the
    /// protected ranges; egress masquerade).
    pub fn script(&self) -> String {
        let mut s = String::new();
        let port_mac = elements(
            self.ports
                .iter()
                .map(|p| format!("\"{}\" . {}", p.port, p.mac)),
        );
        let port_ip = elements(
            self.ports
                .iter()
                .map(|p| format!("\"{}\" . {}", p.port, p.ip)),
        );
        let gw_mac = elements(
            self.gateway_macs
                .iter()
                .map(|(d, m)| format!("\"{d}\" . {m}")),
        );
        let peers = elements(self.vxlan_peers.iter().map(|p| p.to_string()));
        // An interval set refuses overlapping elements; CIDRs overlap only by containment, so
        // keep the outermost ones (Ipv4Net::aggregate also merges adjacent ranges).
        let protected = elements(
            Ipv4Net::aggregate(&self.protected)
                .iter()
                .map(|p| p.to_string()),
        );
        let allow = elements(
            Ipv4Net::aggregate(&self.egress_allow)
                .iter()
                .map(|p| p.to_string()),
        );
        let vp = self.vxlan_port;
        let transit = self.transit;
        let _ = write!(
            s,
            r#"table bridge {TABLE}
delete table bridge {TABLE}
table bridge {TABLE} {{
  set port_mac {{ type ifname . ether_addr;{port_mac} }}
  set port_ip {{ type ifname . ipv4_addr;{port_ip} }}
  set gw_mac {{ type ifname . ether_addr;{gw_mac} }}
  chain ingress {{
    type filter hook prerouting priority -200; policy accept;
    iifname "h8t*" jump pod_port
    iifname "h8v*" jump pod_port
    iifname . ether saddr @gw_mac drop
  }}
  chain pod_port {{
    iifname . ether saddr != @port_mac drop
    ether type arp iifname . arp saddr ether != @port_mac drop
    ether type arp iifname . arp saddr ip != @port_ip drop
    ether type ip iifname . ip saddr != @port_ip drop
    ether type != {{ ip, arp }} drop
  }}
  chain egress {{
    type filter hook forward priority -200; policy accept;
    oifname . ether saddr @gw_mac drop
  }}
  chain to_host {{
    type filter hook input priority -200; policy accept;
    iifname "h8*" drop
  }}
}}
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  set vxlan_peers {{ type ipv4_addr;{peers} }}
  set protected {{ type ipv4_addr; flags interval;{protected} }}
  set egress_allow {{ type ipv4_addr; flags interval;{allow} }}
  chain input {{
    type filter hook input priority -10; policy accept;
    udp dport {vp} ip saddr != @vxlan_peers drop
    iifname "h8y*" ct state established,related accept
    iifname "h8y*" drop
    iifname "h8u*" ct state established,related accept
"#
        );
        if !self.host_dns.is_empty() {
            let dns = self
                .host_dns
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(s, "    iifname \"h8u*\" ip daddr {{ {dns} }} meta l4proto {{ tcp, udp }} th dport 53 accept");
        }
        if let Some(p) = self.api_relay_port {
            let _ = writeln!(s, "    iifname \"h8u*\" tcp dport {p} accept");
            let _ = writeln!(s, "    tcp dport {p} drop");
        }
        let _ = write!(
            s,
            r#"    iifname "h8u*" drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "h8y*" drop
    oifname "h8y*" drop
    iifname "h8u*" oifname "h8u*" drop
    iifname "h8u*" ct direction reply ct status dnat accept
    iifname "h8u*" ip daddr @protected drop
    iifname "h8u*" ip daddr != @egress_allow drop
    iifname "h8u*" udp dport {vp} drop
    oifname "h8u*" ct state established,related accept
    oifname "h8u*" ct direction original ct status dnat accept
    oifname "h8u*" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {transit} oifname != "h8u*" masquerade
  }}
}}
"#
        );
        s
    }
}

/// The gateway namespace's table: answers pings and DNS on the gateway addresses, routes
/// between the Network's own subnets, masquerades egress out of `up0`, lets nothing in.
///
/// With `relay` (the uplink's host address and the node agent's API relay port), TCP to the
/// gateway addresses' [`crate::fabric::API_GATEWAY_PORT`] is forwarded there.
pub(crate) fn gateway_script(gateways: &[Ipv4Addr], relay: Option<(Ipv4Addr, u16)>) -> String {
    let gw = gateways
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dnat = match relay {
        Some((host, port)) => format!(
            r#"  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    iifname "gw0" ip daddr {{ {gw} }} tcp dport {} dnat to {host}:{port}
  }}
"#,
            crate::fabric::API_GATEWAY_PORT
        ),
        None => String::new(),
    };
    format!(
        r#"table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
  chain input {{
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
    iifname "gw0" ip daddr {{ {gw} }} icmp type echo-request accept
    iifname "gw0" ip daddr {{ {gw} }} meta l4proto {{ tcp, udp }} th dport 53 accept
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    iifname "gw0" oifname "gw0" accept
    iifname "gw0" oifname "up0" accept
    iifname "up0" oifname "gw0" ct status dnat accept
    iifname "up0" oifname "gw0" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    oifname "up0" masquerade
  }}
{dnat}}}
"#
    )
}

/// Loads a script with `nft -f -` in the calling thread's namespace.
pub(crate) fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft (package nftables): {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Deletes the h8s tables (and the NetworkPolicy table) of the calling thread's namespace, if
/// present.
pub(crate) fn delete_tables() -> Result<()> {
    let mut script = String::new();
    for (fam, name) in list_tables()? {
        if name == TABLE || (fam == "inet" && name == crate::policy::POLICY_TABLE) {
            let _ = writeln!(script, "delete table {fam} {name}");
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    apply(&script)
}

/// `(family, name)` of every table in the calling thread's namespace.
pub(crate) fn list_tables() -> Result<Vec<(String, String)>> {
    let out = Command::new("nft")
        .args(["-j", "list", "tables"])
        .output()
        .map_err(|e| Error::Nft(format!("cannot run nft (package nftables): {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Nft(format!("unreadable `nft -j` output: {e}")))?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("table"))
        .filter_map(|t| {
            Some((
                t["family"].as_str()?.to_string(),
                t["name"].as_str()?.to_string(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_full_scripts_have_balanced_braces_and_no_empty_element_lists() {
        let mut r = NodeRules {
            ports: vec![],
            gateway_macs: vec![],
            vxlan_peers: vec![],
            vxlan_port: 4789,
            protected: vec![],
            egress_allow: vec![],
            transit: "100.64.0.0/16".parse().unwrap(),
            host_dns: vec![],
            api_relay_port: None,
        };
        for _ in 0..2 {
            let s = r.script();
            assert_eq!(s.matches('{').count(), s.matches('}').count(), "{s}");
            assert!(!s.contains("elements = {  }"), "{s}");
            r.ports.push(PortRule {
                port: "h8tabc".into(),
                mac: MacAddr::for_ip(Ipv4Addr::new(10, 0, 0, 2)),
                ip: Ipv4Addr::new(10, 0, 0, 2),
            });
            r.vxlan_peers.push(Ipv4Addr::new(10, 1, 0, 2));
            r.host_dns.push(Ipv4Addr::new(10, 1, 0, 53));
        }
        let s = r.script();
        assert!(s.contains(r#""h8tabc" . 0a:58:0a:00:00:02"#), "{s}");
        assert!(s.contains("th dport 53 accept"), "{s}");
    }

    #[test]
    fn overlapping_protected_ranges_are_merged_for_the_interval_set() {
        let r = NodeRules {
            ports: vec![],
            gateway_macs: vec![],
            vxlan_peers: vec![],
            vxlan_port: 4789,
            // The detected underlay subnet inside a default private range.
            protected: ["10.0.0.0/8", "10.77.0.0/24", "169.254.0.0/16"]
                .iter()
                .map(|p| p.parse().unwrap())
                .collect(),
            egress_allow: ["0.0.0.0/0", "8.8.8.0/24"]
                .iter()
                .map(|p| p.parse().unwrap())
                .collect(),
            transit: "100.64.0.0/16".parse().unwrap(),
            host_dns: vec![],
            api_relay_port: None,
        };
        let s = r.script();
        assert!(
            s.contains("elements = { 10.0.0.0/8, 169.254.0.0/16 }"),
            "{s}"
        );
        assert!(
            s.contains(
                "set egress_allow { type ipv4_addr; flags interval; elements = { 0.0.0.0/0 }; }"
            ),
            "{s}"
        );
        // Protected first, then anything not allowed: order matters.
        let p = s.find("ip daddr @protected drop").unwrap();
        let a = s.find("ip daddr != @egress_allow drop").unwrap();
        assert!(p < a, "{s}");
    }

    #[test]
    fn api_relay_is_open_to_uplinks_only_and_gateways_forward_to_it() {
        let r = NodeRules {
            ports: vec![],
            gateway_macs: vec![],
            vxlan_peers: vec![],
            vxlan_port: 4789,
            protected: vec![],
            egress_allow: vec![],
            transit: "100.64.0.0/16".parse().unwrap(),
            host_dns: vec![],
            api_relay_port: Some(6444),
        };
        let s = r.script();
        let open = s.find("iifname \"h8u*\" tcp dport 6444 accept").unwrap();
        let closed = s.find("    tcp dport 6444 drop").unwrap();
        let rest = s.find("    iifname \"h8u*\" drop").unwrap();
        assert!(open < closed && closed < rest, "{s}");
        let g = gateway_script(
            &[Ipv4Addr::new(192, 168, 0, 1)],
            Some((Ipv4Addr::new(100, 64, 0, 0), 6444)),
        );
        assert!(
            g.contains("ip daddr { 192.168.0.1 } tcp dport 443 dnat to 100.64.0.0:6444"),
            "{g}"
        );
        assert_eq!(g.matches('{').count(), g.matches('}').count(), "{g}");
        assert!(!gateway_script(&[Ipv4Addr::new(192, 168, 0, 1)], None).contains("dnat to"));
    }
}
