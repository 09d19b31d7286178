//! Service addresses, as kube-apiserver's service registry allocates them: a cluster IP
//! from the service CIDR for every Service that is not headless or ExternalName, and node
//! ports (30000–32767) for NodePort and LoadBalancer Services.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use h8s_store::ListOptions;
use serde_json::{json, Value};

use crate::error::{from_store, ApiError, Cause, Subject};
use crate::obj;
use crate::state::Api;

/// The default service CIDR (kube-apiserver's `--service-cluster-ip-range` default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

pub(crate) use crate::cidr::Cidr;

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
    /// Fills `spec.clusterIP(s)` and node ports of a Service about to be created. The caller
    /// holds `self.svc_lock` until the object is stored.
    pub(crate) async fn allocate_service(&self, o: &mut Value) -> Result<(), ApiError> {
        let name = obj::name(o).to_string();
        let ty = obj::at(o, "spec.type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let res = h8s_types::resources::find("", "v1", "services")
            .ok_or_else(|| ApiError::internal("services are not in the resource table"))?;
        let all = self
            .store
            .list(&obj::prefix(res, None), ListOptions::default())
            .await
            .map_err(|e| from_store(e, &Subject::default()))?;
        let mut used_ips = HashSet::new();
        let mut used_ports = HashSet::new();
        for kv in &all.items {
            let s = obj::decode(kv)?;
            if let Some(ips) = obj::at(&s, "spec.clusterIPs").and_then(Value::as_array) {
                used_ips.extend(ips.iter().filter_map(Value::as_str).map(str::to_string));
            }
            if let Some(ip) = obj::at(&s, "spec.clusterIP").and_then(Value::as_str) {
                used_ips.insert(ip.to_string());
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
        }
        if ty != "ExternalName" {
            let want = obj::at(o, "spec.clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ip = if want == "None" {
                "None".to_string()
            } else if want.is_empty() {
                let n = self.service_cidr.size();
                (2..n.saturating_sub(1))
                    .map(|i| Ipv4Addr::from(self.service_cidr.base + i).to_string())
                    .find(|ip| !used_ips.contains(ip))
                    .ok_or_else(|| {
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
                if used_ips.contains(&want) {
                    return Err(invalid(
                        &name,
                        "spec.clusterIPs",
                        format!("Invalid value: [\"{want}\"]: failed to allocate IP {want}: provided IP is already allocated"),
                    ));
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
        if ty == "NodePort" || ty == "LoadBalancer" {
            let mut next = NODE_PORTS.clone();
            if let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut() {
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(n) if n != 0 => {
                            if !NODE_PORTS.contains(&n) || !used_ports.insert(n) {
                                return Err(invalid(
                                    &name,
                                    "spec.ports[].nodePort",
                                    format!("Invalid value: {n}: provided port is already allocated or not in the valid range 30000-32767"),
                                ));
                            }
                        }
                        _ => {
                            let n = next.find(|n| !used_ports.contains(n)).ok_or_else(|| {
                                invalid(
                                    &name,
                                    "spec.ports[].nodePort",
                                    "Internal error: range is full".into(),
                                )
                            })?;
                            used_ports.insert(n);
                            p["nodePort"] = json!(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// On a Service update that leaves the allocated addresses out (a PUT of an edited
/// manifest), keep them, as kube-apiserver does.
pub fn keep_allocations(old: &Value, new: &mut Value) {
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let path = format!("spec.{f}");
        if obj::at(new, &path).is_none() {
            if let Some(v) = obj::at(old, &path).cloned() {
                obj::set_at(new, &path, v);
            }
        }
    }
    let old_ports: Vec<Value> = obj::at(old, "spec.ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
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
}
