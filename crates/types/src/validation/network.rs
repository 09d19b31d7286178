//! Validation of the h8s `Network` kind: CIDRs parse, gateways sit inside
//! their subnet, and subnets of one Network don't overlap.

use super::{names, FieldError, FieldErrors};
use crate::network::{self, NetworkPhase};
use serde_json::Value;
use std::net::IpAddr;

/// Kubernetes' wording for a bad CIDR.
pub(super) const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// A parsed CIDR: address (host bits as written) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address as written.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    fn bits(&self) -> u32 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }
    fn as_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }
    fn mask(&self) -> u128 {
        let host = self.bits() - u32::from(self.prefix);
        let all = if self.bits() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host) - 1)
        }
    }
    /// The network address (host bits cleared).
    pub fn network(&self) -> u128 {
        Self::as_u128(self.addr) & self.mask()
    }
    /// True when the address has no host bits set.
    pub fn is_canonical(&self) -> bool {
        Self::as_u128(self.addr) == self.network()
    }
    /// True when `ip` is inside this CIDR (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && Self::as_u128(ip) & self.mask() == self.network()
    }
    /// True when the two CIDRs share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return false;
        }
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.addr)
    }
    /// The last address of the range (IPv4 broadcast).
    pub fn last(&self) -> u128 {
        let all = if self.bits() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        self.network() | (all & !self.mask())
    }
}

/// Parses `a.b.c.d/n` or `v6/n`.
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (a, p) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
        return None;
    }
    let prefix: u8 = p.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some(Cidr { addr, prefix })
}

pub(super) fn validate(obj: &Value, old: Option<&Value>, e: &mut FieldErrors) {
    let tenant = obj
        .pointer("/spec/tenantID")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Default Networks' names belong to their tenant (namespaces without `spec.network`
    // join them by name), so no one else can pre-empt them.
    if old.is_none() && name == network::SYSTEM_PODS_NETWORK && tenant.is_some() {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "is reserved for the cluster's system Network (spec.tenantID must be empty)",
        ));
    }
    if old.is_none()
        && (name == network::SYSTEM_NETWORK || name.starts_with(network::TENANT_NETWORK_PREFIX))
        && network::default_network_name(tenant) != name
    {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            &format!(
                "is reserved for the default network of {}",
                if name == network::SYSTEM_NETWORK {
                    "namespaces without a tenant (spec.tenantID must be empty)".to_string()
                } else {
                    "another tenant".to_string()
                }
            ),
        ));
    }
    if let Some(p) = obj.pointer("/spec/providerNetworkID") {
        match p.as_str() {
            None if !p.is_null() => e.push(FieldError::invalid(
                "spec.providerNetworkID",
                p.clone(),
                "must be a string",
            )),
            Some(s) if !s.is_empty() && network::segment_id(s).is_none() => {
                e.push(FieldError::invalid(
                    "spec.providerNetworkID",
                    s,
                    "must be a segment id: a decimal number 1-16777215 without leading zeros",
                ))
            }
            _ => {}
        }
    }
    if let Some(t) = obj.pointer("/spec/tenantID") {
        if !t.is_string() && !t.is_null() {
            e.push(FieldError::invalid(
                "spec.tenantID",
                t.clone(),
                "must be a string",
            ));
        }
    }
    let subnets = obj.pointer("/spec/subnets").and_then(Value::as_object);
    let Some(subnets) = subnets.filter(|m| !m.is_empty()) else {
        e.push(FieldError::required(
            "spec.subnets",
            "a network needs at least one subnet",
        ));
        return;
    };
    let mut parsed: Vec<(&str, Cidr)> = Vec::new();
    for (name, sn) in subnets {
        let p = format!("spec.subnets[{name}]");
        for m in names::dns1123_label(name) {
            e.push(FieldError::invalid(&p, name.as_str(), &m));
        }
        let cidr_s = sn.get("cidr").and_then(Value::as_str).unwrap_or_default();
        if cidr_s.is_empty() {
            e.push(FieldError::required(format!("{p}.cidr"), ""));
            continue;
        }
        let Some(cidr) = parse_cidr(cidr_s) else {
            e.push(FieldError::invalid(format!("{p}.cidr"), cidr_s, CIDR_MSG));
            continue;
        };
        if !cidr.is_canonical() {
            e.push(FieldError::invalid(
                format!("{p}.cidr"),
                cidr_s,
                "must be a network address: the bits after the prefix must be zero",
            ));
        }
        let usable = if cidr.addr.is_ipv4() {
            cidr.prefix <= 30
        } else {
            cidr.prefix <= 126
        };
        if !usable {
            e.push(FieldError::invalid(
                format!("{p}.cidr"),
                cidr_s,
                "is too small: a subnet needs room for a gateway and pods",
            ));
        }
        if let Some(gw) = sn
            .get("gateway")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            match gw.parse::<IpAddr>() {
                Err(_) => e.push(FieldError::invalid(format!("{p}.gateway"), gw, IP_MSG)),
                Ok(ip) if !cidr.contains(ip) => e.push(FieldError::invalid(
                    format!("{p}.gateway"),
                    gw,
                    &format!("must be inside the subnet's cidr {cidr_s}"),
                )),
                Ok(ip) => {
                    let n = Cidr::as_u128(ip);
                    if n == cidr.network() || (ip.is_ipv4() && n == cidr.last()) {
                        e.push(FieldError::invalid(
                            format!("{p}.gateway"),
                            gw,
                            "must not be the network or broadcast address of the subnet",
                        ));
                    }
                }
            }
        }
        for (other, oc) in &parsed {
            if oc.overlaps(&cidr) {
                e.push(FieldError::invalid(
                    format!("{p}.cidr"),
                    cidr_s,
                    &format!("overlaps subnet {other:?} of the same network"),
                ));
            }
        }
        parsed.push((name, cidr));
    }
    if let Some(old) = old {
        // The tenant and the provider's id never change once set; existing
        // subnets are in use by pods and cannot be re-addressed.
        for (ptr, path) in [
            ("/spec/tenantID", "spec.tenantID"),
            ("/spec/providerNetworkID", "spec.providerNetworkID"),
        ] {
            let o = old.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
            if !o.is_empty() && old.pointer(ptr) != obj.pointer(ptr) {
                e.push(FieldError::immutable(
                    path,
                    obj.pointer(ptr).cloned().unwrap_or(Value::Null),
                ));
            }
        }
        if let Some(old_subnets) = old.pointer("/spec/subnets").and_then(Value::as_object) {
            for (name, osn) in old_subnets {
                if let Some(nsn) = subnets.get(name) {
                    if nsn != osn {
                        e.push(FieldError::immutable(
                            format!("spec.subnets[{name}]"),
                            nsn.clone(),
                        ));
                    }
                }
            }
        }
    }
    validate_status(obj, e);
}

pub(super) fn validate_status(obj: &Value, e: &mut FieldErrors) {
    if let Some(p) = obj.pointer("/status/phase").and_then(Value::as_str) {
        if NetworkPhase::parse(p).is_none() {
            let all: Vec<&str> = NetworkPhase::ALL.iter().map(|p| p.as_str()).collect();
            e.push(FieldError::not_supported("status.phase", p, &all));
        }
    }
    let Some(allocs) = obj
        .pointer("/status/allocations")
        .and_then(Value::as_object)
    else {
        return;
    };
    let subnets: Vec<(Cidr, Option<IpAddr>)> = obj
        .pointer("/spec/subnets")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|sn| {
            let c = parse_cidr(sn.get("cidr")?.as_str()?)?;
            let gw = sn
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok());
            Some((c, gw))
        })
        .collect();
    for (ip, holder) in allocs {
        let p = format!("status.allocations[{ip}]");
        let Ok(addr) = ip.parse::<IpAddr>() else {
            e.push(FieldError::invalid(&p, ip.as_str(), IP_MSG));
            continue;
        };
        let usable = subnets.iter().any(|(c, gw)| {
            let n = Cidr::as_u128(addr);
            let gw = gw.map(Cidr::as_u128).unwrap_or(c.network() + 1);
            c.contains(addr) && n != c.network() && n != c.last() && n != gw
        });
        if !usable {
            e.push(FieldError::invalid(
                &p,
                ip.as_str(),
                "must be a host address of one of the network's subnets, not its gateway",
            ));
        }
        for f in ["node", "namespace", "pod", "podUID"] {
            if holder
                .get(f)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                e.push(FieldError::required(format!("{p}.{f}"), ""));
            }
        }
    }
}
