//! The LoadBalancer address controller (the seeds' LBaaS role, as MetalLB's controller does
//! it): every `type: LoadBalancer` (or the seeds' `type: NetworkProvider`) Service without a
//! `spec.loadBalancerClass` gets an address
//! from the operator's pool (`h8s server --lb-pool CIDR`) in `status.loadBalancer.ingress`;
//! `spec.loadBalancerIP`, when in the pool and free, is honoured. A Service that stops being
//! a LoadBalancer loses its address (back to the pool), and so does one whose address is
//! outside the pool or held by an older Service. Without a pool, or when it is full,
//! LoadBalancer Services stay pending (no ingress), as on a cluster without a cloud provider.
//!
//! Every change of any Service re-checks them all against one picture of the pool, so two
//! Services never get the same address (the controller manager runs once, leader-elected).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{Context, Error};

/// An IPv4 address pool, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbPool {
    base: u32,
    len: u8,
}

/// Why a pool does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 CIDR (a.b.c.d/len, len 16-32)")]
pub struct BadPool(String);

impl FromStr for LbPool {
    type Err = BadPool;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPool(s.to_string());
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        // At most 65536 addresses: the controller walks the pool.
        if !(16..=32).contains(&len) {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ok(LbPool {
            base: u32::from(ip) & mask,
            len,
        })
    }
}

impl LbPool {
    /// The first and last address handed out: all but the network and broadcast
    /// addresses of a /30 or larger pool.
    fn bounds(&self) -> (u32, u32) {
        let last = self.base | u32::MAX.checked_shr(u32::from(self.len)).unwrap_or(0);
        if self.len <= 30 {
            (self.base + 1, last - 1)
        } else {
            (self.base, last)
        }
    }

    /// The addresses handed out, lowest first.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let (first, last) = self.bounds();
        (first..=last).map(Ipv4Addr::from)
    }

    /// The pool as `(network address, prefix length)`.
    pub fn cidr(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(self.base), self.len)
    }

    /// Whether `ip` is one of [`LbPool::addresses`].
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.bounds();
        (first..=last).contains(&u32::from(ip))
    }
}

/// Whether this controller answers for `svc`.
fn wants_address(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        h8s_types::network::load_balancer_type(s.type_.as_deref())
            && s.load_balancer_class.is_none()
    })
}

fn ingress_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// What to write: (namespace, name) → the address to publish (`None`: clear it).
pub(crate) fn plan(
    pool: Option<&LbPool>,
    services: &[Service],
) -> BTreeMap<(String, String), Option<Ipv4Addr>> {
    let mut out = BTreeMap::new();
    // Oldest first: on a conflict the older Service keeps its address.
    let mut svcs: Vec<&Service> = services.iter().collect();
    svcs.sort_by_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.namespace(),
            s.name_any(),
        )
    });
    let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
    // A Service's `externalIPs` (admitted only from the pool, only for cluster admins) are
    // never handed out as a LoadBalancer address.
    let mut used: BTreeSet<Ipv4Addr> = svcs
        .iter()
        .filter_map(|s| s.spec.as_ref()?.external_ips.as_ref())
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut pending = Vec::new();
    for s in &svcs {
        let have = ingress_ips(s);
        if !wants_address(s) {
            // Not (or no longer) ours: a LoadBalancer of another class keeps what its
            // implementation wrote; any other type loses its address.
            let lb_elsewhere = s
                .spec
                .as_ref()
                .is_some_and(|p| h8s_types::network::load_balancer_type(p.type_.as_deref()));
            if !have.is_empty() && !lb_elsewhere {
                out.insert(key(s), None);
            }
            continue;
        }
        match (pool, have.as_slice()) {
            (Some(p), [ip]) if p.contains(*ip) && used.insert(*ip) => {}
            _ => pending.push(*s),
        }
    }
    for s in pending {
        let had = !ingress_ips(s).is_empty();
        let Some(p) = pool else {
            if had {
                out.insert(key(s), None);
            }
            continue;
        };
        let asked = s
            .spec
            .as_ref()
            .and_then(|p| p.load_balancer_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| p.contains(*ip) && !used.contains(ip));
        let got = asked.or_else(|| p.addresses().find(|ip| !used.contains(ip)));
        match got {
            Some(ip) => {
                used.insert(ip);
                out.insert(key(s), Some(ip));
            }
            None if had => {
                out.insert(key(s), None);
            }
            None => {}
        }
    }
    out
}

/// Runs until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let api: Api<Service> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    let mut ready = false;
    loop {
        // Coalesce a burst of changes into one pass.
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        match next {
            Ok(Some(_)) => {
                ready = true;
                continue;
            }
            Ok(None) => break,
            Err(_) if !ready => continue,
            Err(_) => {}
        }
        ready = false;
        let services: Vec<Service> = store.state().iter().map(|s| (**s).clone()).collect();
        for ((ns, name), ip) in plan(ctx.lb_pool.as_ref(), &services) {
            let lb = match ip {
                Some(ip) => json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}),
                None => json!({"ingress": null}),
            };
            let patch = json!({"status": {"loadBalancer": lb}});
            let r = Api::<Service>::namespaced(ctx.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            match r {
                Ok(_) => {
                    tracing::info!(namespace = %ns, service = %name, ?ip, "LoadBalancer address")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, service = %name, error = %e, "publishing the LoadBalancer address failed");
                    ready = true;
                }
            }
        }
    }
    Err(Error::Stopped { name: "service-lb" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ty: &str, t: i64, lb_ip: Option<&str>, have: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns",
                "creationTimestamp": format!("2026-01-01T00:00:{t:02}Z")},
            "spec": {"type": ty, "loadBalancerIP": lb_ip},
            "status": {"loadBalancer": {"ingress": have.map(|ip| vec![json!({"ip": ip})])}},
        }))
        .unwrap()
    }

    fn k(n: &str) -> (String, String) {
        ("ns".into(), n.into())
    }

    #[test]
    fn pools_parse() {
        let p: LbPool = "192.0.2.9/30".parse().unwrap();
        assert_eq!(
            p.addresses().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 9), Ipv4Addr::new(192, 0, 2, 10)]
        );
        assert!(p.contains(Ipv4Addr::new(192, 0, 2, 10)));
        assert!(!p.contains(Ipv4Addr::new(192, 0, 2, 11)), "broadcast");
        assert!(!p.contains(Ipv4Addr::new(192, 0, 2, 12)));
        let one: LbPool = "192.0.2.7/32".parse().unwrap();
        assert_eq!(one.addresses().count(), 1);
        for bad in ["192.0.2.0", "192.0.2.0/8", "x/24", "192.0.2.0/33"] {
            assert!(bad.parse::<LbPool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_unique_asked_for_and_released() {
        let pool: LbPool = "192.0.2.0/30".parse().unwrap(); // .1 and .2
        let a = svc("a", "LoadBalancer", 1, None, None);
        let b = svc("b", "LoadBalancer", 2, Some("192.0.2.2"), None);
        let c = svc("c", "LoadBalancer", 3, None, None);
        let p = plan(Some(&pool), &[c.clone(), b.clone(), a.clone()]);
        assert_eq!(p[&k("a")], Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(p[&k("b")], Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(
            !p.contains_key(&k("c")),
            "the pool is full: c stays pending"
        );
        // Published addresses are kept (nothing to write); a type change releases, and
        // the pending Service gets the freed address.
        let a1 = svc("a", "ClusterIP", 1, None, Some("192.0.2.1"));
        let b1 = svc("b", "LoadBalancer", 2, None, Some("192.0.2.2"));
        let p = plan(Some(&pool), &[a1, b1.clone(), c.clone()]);
        assert_eq!(p[&k("a")], None);
        assert_eq!(p[&k("c")], Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!p.contains_key(&k("b")));
        // A duplicate (two controllers once) goes to the older Service only; an address
        // outside the pool is replaced.
        let d = svc("d", "LoadBalancer", 4, None, Some("192.0.2.2"));
        let e = svc("e", "LoadBalancer", 5, None, Some("203.0.113.1"));
        let p = plan(Some(&pool), &[b1, d, e]);
        assert_eq!(p[&k("d")], Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(p[&k("e")], None);
        // No pool: nothing assigned.
        assert!(plan(None, &[a, c]).is_empty());
    }

    #[test]
    fn network_provider_services_get_addresses_and_external_ips_are_never_handed_out() {
        let pool: LbPool = "192.0.2.0/30".parse().unwrap(); // .1 and .2
        let np = svc("np", "NetworkProvider", 1, None, None);
        let mut ext = svc("ext", "ClusterIP", 2, None, None);
        ext.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.1".into()]);
        // An older LoadBalancer holding what is now an external IP is moved off it.
        let lb = svc("lb", "LoadBalancer", 0, None, Some("192.0.2.1"));
        let p = plan(Some(&pool), &[np, ext, lb]);
        assert_eq!(p[&k("lb")], Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(!p.contains_key(&k("ext")), "{p:?}");
        assert!(!p.contains_key(&k("np")), "pool full after the move: {p:?}");
        let np = svc("np", "NetworkProvider", 1, None, None);
        let p = plan(Some(&"192.0.2.8/29".parse().unwrap()), &[np]);
        assert_eq!(p[&k("np")], Some(Ipv4Addr::new(192, 0, 2, 9)));
    }
}
