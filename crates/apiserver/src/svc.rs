//! Service addresses, as kube-apiserver's service registry allocates them: a cluster IP
//! from the service CIDR for every Service that is not headless or ExternalName, and node
//! ports (30000–32767) for NodePort and LoadBalancer Services.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use h8s_store::ListOptions;
use serde_json::{json, Value};

use crate::error::{from_store, ApiError, Cause, Subject};
use crate::obj;
use crate::state::Api;

/// The default service CIDR (kube-apiserver's `--service-cluster-ip-range` default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// The default node port range (kube-apiserver's `--service-node-port-range` default).
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

pub(crate) use crate::cidr::Cidr;

/// `FIRST-LAST` (inclusive, within 1–65535, FIRST ≤ LAST).
pub fn parse_port_range(s: &str) -> Option<RangeInclusive<i64>> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && a <= b).then(|| i64::from(a)..=i64::from(b))
}

/// Whether a Service of this spec has node ports: NodePort, and LoadBalancer unless
/// `allocateLoadBalancerNodePorts: false`.
pub(crate) fn needs_node_ports(o: &Value) -> bool {
    match obj::at(o, "spec.type").and_then(Value::as_str) {
        Some("NodePort") => true,
        Some("LoadBalancer") => {
            obj::at(o, "spec.allocateLoadBalancerNodePorts").and_then(Value::as_bool) != Some(false)
        }
        _ => false,
    }
}

/// Whether a Service of this spec gets a `healthCheckNodePort`: a LoadBalancer with
/// `externalTrafficPolicy: Local` (load balancers ask each node whether it has a local
/// endpoint).
pub(crate) fn needs_health_check_port(o: &Value) -> bool {
    obj::at(o, "spec.type").and_then(Value::as_str) == Some("LoadBalancer")
        && obj::at(o, "spec.externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

/// The next free port of `range`, dynamic allocations first from the upper band (as
/// kube-apiserver's `ServiceNodePortStaticSubrange`: the lower band, 1/32 of the range,
/// at least 16 and at most 128 ports, is left for ports users pick).
fn free_port(range: &RangeInclusive<i64>, used: &HashSet<i64>) -> Option<i64> {
    let size = range.end() - range.start() + 1;
    let lower = (size / 32).clamp(16, 128).min(size);
    let split = range.start() + lower;
    (split..=*range.end())
        .chain(*range.start()..split)
        .find(|p| !used.contains(p))
}

/// The first offset of the band dynamic cluster IPs come from first: below it, as kube's
/// `ServiceIPStaticSubrange`, 1/16 of the range (at least 16, at most 256 addresses) is
/// left for addresses users pick (offsets 0 and 1 are the network and the `kubernetes`
/// Service's; the last, the broadcast address, is never handed out).
fn static_band(size: u32) -> u32 {
    (size / 16)
        .clamp(16, 256)
        .min(size.saturating_sub(1))
        .max(2)
}

/// The offsets a dynamic cluster IP is tried at: the upper band from `next` round, then the
/// static band.
fn ip_offsets(size: u32, next: u32) -> impl Iterator<Item = u32> {
    let lower = static_band(size);
    let band = size.saturating_sub(1).saturating_sub(lower);
    let start = if band == 0 {
        0
    } else {
        next.saturating_sub(lower) % band
    };
    (0..band)
        .map(move |i| lower + (start + i) % band)
        .chain(2..lower)
}

/// Where a server's first dynamic pick starts: a random offset in the upper band (kube's
/// allocator starts at a random one), so that a restarted server does not walk over the
/// addresses taken before it.
fn seed_offset(size: u32) -> u32 {
    let lower = static_band(size);
    let band = size.saturating_sub(1).saturating_sub(lower).max(1);
    let mut b = [0u8; 4];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return lower;
    }
    lower + u32::from_le_bytes(b) % band
}

fn invalid(name: &str, field: &str, msg: String) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: msg,
            field: field.into(),
        }],
    )
}

impl Api {
    /// Fills `spec.clusterIP(s)` and node ports of a Service about to be created (`old`:
    /// `None`) or updated. The caller holds `self.svc_lock` until the object is stored, so
    /// two Services never get the same address or port.
    /// Unless `dry_run`, a new cluster IP is reserved as its IPAddress object (see
    /// [`crate::ipaddr`]); what was reserved is returned, for the caller to settle once the
    /// Service is written.
    /// `cursor` (held under the lock) is where the next dynamic cluster IP is tried.
    pub(crate) async fn allocate_service(
        self: &Arc<Self>,
        o: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
        cursor: &mut u32,
    ) -> Result<Vec<String>, ApiError> {
        let name = obj::name(o).to_string();
        let namespace = obj::namespace(o).to_string();
        let ty = obj::at(o, "spec.type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        // Node ports are found free by a scan of the Services, so only a Service that
        // needs them pays for the list; cluster IPs need none (their IPAddress objects
        // are the reservations).
        let mut used_ports = HashSet::new();
        if needs_node_ports(o) || needs_health_check_port(o) {
            let res = h8s_types::resources::find("", "v1", "services")
                .ok_or_else(|| ApiError::internal("services are not in the resource table"))?;
            let all = self
                .store
                .list(&obj::prefix(res, None), ListOptions::default())
                .await
                .map_err(|e| from_store(e, &Subject::default()))?;
            for kv in &all.items {
                let s = obj::decode(kv)?;
                if old.is_some() && obj::name(&s) == name && obj::namespace(&s) == namespace {
                    // The Service being updated: its own ports are not in another's way.
                    continue;
                }
                for p in obj::at(&s, "spec.ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                        used_ports.insert(n);
                    }
                }
                if let Some(n) = obj::at(&s, "spec.healthCheckNodePort").and_then(Value::as_i64) {
                    used_ports.insert(n);
                }
            }
        }
        let old_ip = old
            .and_then(|o| obj::at(o, "spec.clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let want = obj::at(o, "spec.clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut reserved = Vec::new();
        if ty != "ExternalName" && !(old.is_some() && !want.is_empty() && want == old_ip) {
            let ip = if want == "None" {
                "None".to_string()
            } else if want.is_empty() {
                // As kube's IPAddress allocator: a candidate, then its IPAddress created —
                // AlreadyExists means taken, try the next. No list: the cost does not grow
                // with the number of Services.
                let size = self.service_cidr.size();
                if *cursor == 0 {
                    *cursor = seed_offset(size);
                }
                let mut picked = None;
                for off in ip_offsets(size, *cursor) {
                    let ip = Ipv4Addr::from(self.service_cidr.base + off).to_string();
                    let free = if dry_run {
                        self.cluster_ip_free(&ip, &namespace, &name).await?
                    } else {
                        self.reserve_cluster_ip(&ip, &namespace, &name).await?
                    };
                    if free {
                        if !dry_run {
                            reserved.push(ip.clone());
                            *cursor = off + 1;
                        }
                        picked = Some(ip);
                        break;
                    }
                }
                picked.ok_or_else(|| {
                    invalid(
                        &name,
                        "spec.clusterIP",
                        "Internal error: range is full".into(),
                    )
                })?
            } else {
                let parsed: Ipv4Addr = want.parse().map_err(|_| {
                    invalid(&name, "spec.clusterIP", format!("Invalid value: \"{want}\": must be empty, 'None', or a valid IP address"))
                })?;
                if !self.service_cidr.contains(parsed) {
                    return Err(invalid(
                        &name,
                        "spec.clusterIPs",
                        format!("Invalid value: [\"{want}\"]: failed to allocate IP {want}: the provided IP ({want}) is not in the valid range"),
                    ));
                }
                let taken = || {
                    invalid(
                        &name,
                        "spec.clusterIPs",
                        format!("Invalid value: [\"{want}\"]: failed to allocate IP {want}: provided IP is already allocated"),
                    )
                };
                if !dry_run {
                    if !self.reserve_cluster_ip(&want, &namespace, &name).await? {
                        return Err(taken());
                    }
                    reserved.push(want.clone());
                } else if !self.cluster_ip_free(&want, &namespace, &name).await? {
                    return Err(taken());
                }
                want
            };
            obj::set_at(o, "spec.clusterIP", json!(ip));
            obj::set_at(o, "spec.clusterIPs", json!([ip]));
            if ip != "None" || obj::at(o, "spec.ipFamilies").is_none() {
                obj::set_at(o, "spec.ipFamilies", json!(["IPv4"]));
                obj::set_at(o, "spec.ipFamilyPolicy", json!("SingleStack"));
            }
        }
        if needs_node_ports(o) {
            // The ports this Service already holds stay its own.
            let held: HashSet<i64> = old
                .and_then(|o| obj::at(o, "spec.ports"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                .collect();
            let range = self.node_ports.clone();
            let (first, last) = (*range.start(), *range.end());
            let mut mine: HashSet<i64> = HashSet::new();
            if let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                // Ports given first, so that a dynamic pick never takes one of them.
                for (i, p) in ports.iter().enumerate() {
                    let Some(n) = p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .filter(|n| *n != 0)
                    else {
                        continue;
                    };
                    let field = format!("spec.ports[{i}].nodePort");
                    if held.contains(&n) {
                        mine.insert(n);
                        continue;
                    }
                    if !range.contains(&n) {
                        return Err(invalid(&name, &field, format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {first}-{last}")));
                    }
                    if used_ports.contains(&n) {
                        return Err(invalid(
                            &name,
                            &field,
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                    mine.insert(n);
                }
                for p in ports.iter_mut() {
                    if p.get("nodePort")
                        .and_then(Value::as_i64)
                        .is_some_and(|n| n != 0)
                    {
                        continue;
                    }
                    let mut taken = used_ports.clone();
                    taken.extend(mine.iter().copied());
                    let n = free_port(&range, &taken).ok_or_else(|| {
                        invalid(
                            &name,
                            "spec.ports[].nodePort",
                            format!("Internal error: range is full ({first}-{last})"),
                        )
                    })?;
                    mine.insert(n);
                    p["nodePort"] = json!(n);
                }
            }
        }
        self.allocate_health_check_port(o, old, &used_ports)?;
        Ok(reserved)
    }

    /// `spec.healthCheckNodePort`: kept, checked when given (in the node port range, not
    /// another Service's or one of this Service's node ports), else picked like a node port,
    /// for a LoadBalancer with `externalTrafficPolicy: Local`; refused on other Services.
    fn allocate_health_check_port(
        &self,
        o: &mut Value,
        old: Option<&Value>,
        used: &HashSet<i64>,
    ) -> Result<(), ApiError> {
        const FIELD: &str = "spec.healthCheckNodePort";
        let name = obj::name(o).to_string();
        let given = obj::at(o, FIELD)
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        let held = old.and_then(|o| obj::at(o, FIELD)).and_then(Value::as_i64);
        if !needs_health_check_port(o) {
            return match given {
                None => Ok(()),
                Some(n) => Err(invalid(
                    &name,
                    FIELD,
                    format!("Invalid value: {n}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
                )),
            };
        }
        let mut taken = used.clone();
        taken.extend(
            obj::at(o, "spec.ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64)),
        );
        let range = &self.node_ports;
        let (first, last) = (*range.start(), *range.end());
        let n = match given {
            Some(n) if held == Some(n) => n,
            Some(n) if !range.contains(&n) => {
                return Err(invalid(&name, FIELD, format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {first}-{last}")));
            }
            Some(n) if taken.contains(&n) => {
                return Err(invalid(
                    &name,
                    FIELD,
                    format!("Invalid value: {n}: provided port is already allocated"),
                ));
            }
            Some(n) => n,
            None => free_port(range, &taken).ok_or_else(|| {
                invalid(
                    &name,
                    FIELD,
                    format!("Internal error: range is full ({first}-{last})"),
                )
            })?,
        };
        obj::set_at(o, FIELD, json!(n));
        Ok(())
    }
}

/// On a Service update that leaves the allocated addresses out (a PUT of an edited
/// manifest), keep them, as kube-apiserver does.
pub fn keep_allocations(old: &Value, new: &mut Value) {
    const IP_FIELDS: [&str; 4] = ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"];
    let external = obj::at(new, "spec.type").and_then(Value::as_str) == Some("ExternalName");
    if !external {
        for f in IP_FIELDS {
            let path = format!("spec.{f}");
            if obj::at(new, &path).is_none() {
                if let Some(v) = obj::at(old, &path).cloned() {
                    obj::set_at(new, &path, v);
                }
            }
        }
    } else if obj::at(new, "spec.clusterIP") == obj::at(old, "spec.clusterIP") {
        // A switch to ExternalName drops the cluster IP the user left as it was.
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for f in IP_FIELDS {
                spec.remove(f);
            }
        }
    }
    let old_ports: Vec<Value> = obj::at(old, "spec.ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // The health check port goes with the LoadBalancer-Local combination, as the node
    // ports go with their types; an edit that leaves it out keeps it.
    let hc = obj::at(old, "spec.healthCheckNodePort").cloned();
    if needs_health_check_port(new) {
        if obj::at(new, "spec.healthCheckNodePort").is_none() {
            if let Some(n) = hc {
                obj::set_at(new, "spec.healthCheckNodePort", n);
            }
        }
    } else if hc.is_some() && obj::at(new, "spec.healthCheckNodePort") == hc.as_ref() {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("healthCheckNodePort");
        }
    }
    let keep = needs_node_ports(new);
    let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    for p in ports.iter_mut() {
        if !keep {
            // A switch to a type without node ports drops those the user left as they
            // were (kube-apiserver's dropTypeDependentFields); changed ones are the user's
            // and fail validation.
            let n = p.get("nodePort").cloned();
            if n.is_some() && old_ports.iter().any(|op| op.get("nodePort") == n.as_ref()) {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
            continue;
        }
        if p.get("nodePort").is_some() {
            continue;
        }
        let same = old_ports.iter().find(|op| {
            op.get("port") == p.get("port")
                && op.get("protocol").unwrap_or(&json!("TCP"))
                    == p.get("protocol").unwrap_or(&json!("TCP"))
        });
        if let Some(n) = same.and_then(|op| op.get("nodePort")) {
            p["nodePort"] = n.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_cluster_ips_walk_the_upper_band_then_the_static_one() {
        // 10.96.0.0/12: the static band is the first 256 addresses.
        let size = 1 << 20;
        assert_eq!(static_band(size), 256);
        let first: Vec<u32> = ip_offsets(size, 1000).take(3).collect();
        assert_eq!(first, vec![1000, 1001, 1002]);
        // From the last address of the upper band round to its first, then the static band.
        let all: Vec<u32> = ip_offsets(size, size - 2).collect();
        assert_eq!(all.len() as u32, size - 3);
        assert_eq!(&all[..2], &[size - 2, 256]);
        assert_eq!(all[(size - 257) as usize], 2);
        assert!(!all.contains(&0) && !all.contains(&1) && !all.contains(&(size - 1)));
        // A start below the band (not chosen yet) is the band's first.
        assert_eq!(ip_offsets(size, 0).next(), Some(256));
        // A /28: all of it is the static band: 2..=14.
        assert_eq!(
            ip_offsets(16, 5).collect::<Vec<_>>(),
            (2..15).collect::<Vec<_>>()
        );
        assert_eq!(ip_offsets(4, 0).collect::<Vec<_>>(), vec![2]);
        let seed = seed_offset(size);
        assert!((256..size - 1).contains(&seed), "{seed}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("30000-32767"), Some(30000..=32767));
        assert_eq!(parse_port_range(" 80 - 80 "), Some(80..=80));
        for bad in ["", "30000", "0-10", "20-10", "1-70000", "a-b"] {
            assert_eq!(parse_port_range(bad), None, "{bad}");
        }
    }

    /// Dynamic picks come from the upper band first, then the lower (static) band, and
    /// never a used port.
    #[test]
    fn free_ports_prefer_the_upper_band() {
        let r = 30000..=32767;
        let mut used = HashSet::new();
        assert_eq!(free_port(&r, &used), Some(30086)); // 2768/32 = 86 ports kept low
        used.extend(30086..=32767);
        assert_eq!(free_port(&r, &used), Some(30000));
        used.extend(30000..30086);
        assert_eq!(free_port(&r, &used), None);
        // A small range keeps at least 16 (or all) ports for static picks.
        assert_eq!(free_port(&(100..=109), &HashSet::new()), Some(100));
        assert_eq!(free_port(&(100..=199), &HashSet::new()), Some(116));
    }
}
