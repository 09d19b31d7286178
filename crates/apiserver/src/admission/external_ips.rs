//! ServiceExternalIPs (an h8s plugin; CVE-2020-8554): a Service's `spec.externalIPs` make the
//! nodes answer those addresses and forward them into the Service's Network, so whoever sets
//! one could capture another's traffic. Only a cluster admin (`system:masters`) may add an
//! external IP, and only an address of the operator's LoadBalancer pool (`--lb-pool`; without
//! a pool none is allowed). Addresses a Service already had stay (an update that keeps them is
//! not checked again). A tenant's attempt is 403; an address outside the pool is 422.

use std::net::Ipv4Addr;

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Admission, Operation, Request};
use crate::error::{ApiError, Cause, Subject};

/// The plugin, with the operator's pool as `(network address, prefix length)`.
pub struct ServiceExternalIps {
    pub pool: Option<(Ipv4Addr, u8)>,
}

fn ips(o: Option<&Value>) -> Vec<String> {
    o.and_then(|o| o.pointer("/spec/externalIPs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn in_pool(pool: (Ipv4Addr, u8), ip: &str) -> bool {
    let pool = h8s_types::validation::Cidr {
        addr: pool.0.into(),
        prefix: pool.1,
    };
    ip.parse().is_ok_and(|ip| pool.contains(ip))
}

impl Admission for ServiceExternalIps {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if req.res.plural != "services"
                || !req.res.group.is_empty()
                || req.sub.is_some()
                || req.op == Operation::Delete
            {
                return Ok(());
            }
            let had = ips(req.old);
            let new: Vec<String> = ips(obj.as_deref())
                .into_iter()
                .filter(|ip| !had.contains(ip))
                .collect();
            if new.is_empty() {
                return Ok(());
            }
            if !req
                .user
                .groups
                .iter()
                .any(|g| g == crate::identity::MASTERS_GROUP)
            {
                return Err(ApiError::forbidden_about(
                    &Subject {
                        group: "",
                        resource: "services",
                        name: req.name,
                    },
                    "spec.externalIPs may be set by cluster admins only (the nodes answer \
                     those addresses for the Service)",
                ));
            }
            let outside: Vec<Cause> = new
                .iter()
                .filter(|ip| !self.pool.is_some_and(|p| in_pool(p, ip)))
                .map(|ip| Cause {
                    reason: "FieldValueInvalid".into(),
                    message: match self.pool {
                        Some((a, l)) => format!(
                            "Invalid value: {ip:?}: must be an address of the load balancer pool {a}/{l}"
                        ),
                        None => format!(
                            "Invalid value: {ip:?}: no load balancer pool is configured (--lb-pool)"
                        ),
                    },
                    field: "spec.externalIPs".into(),
                })
                .collect();
            if outside.is_empty() {
                return Ok(());
            }
            Err(ApiError::invalid("Service", "", req.name, outside))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_membership() {
        let p = (Ipv4Addr::new(192, 0, 2, 0), 28);
        assert!(in_pool(p, "192.0.2.15"));
        assert!(!in_pool(p, "192.0.2.16"));
        assert!(!in_pool(p, "2001:db8::1"));
        assert!(in_pool((Ipv4Addr::new(10, 0, 0, 0), 0), "8.8.8.8"));
    }
}
