//! The ClusterIP repair loop (kube-apiserver's `RepairIPAddress`, the
//! `ipallocator-repair-controller`): every cluster IP a Service holds has its
//! `networking.k8s.io/v1` IPAddress naming that Service, and every IPAddress the allocator
//! wrote (`ipaddress.kubernetes.io/managed-by: ipallocator.k8s.io`) belongs to a Service that
//! holds its address. The API server's allocator writes and deletes them as it hands out and
//! takes back addresses (`h8s-apiserver`'s `ipaddr`); this loop repairs what a crash, an
//! upgrade from a server that did not write them, or a hand edit left behind:
//!
//! - a Service's address without an IPAddress: created (Warning `ClusterIPNotAllocated` on
//!   the Service);
//! - an IPAddress naming something else than this Service: recreated (`ClusterIPNotAllocated`,
//!   "has a wrong reference"), unless the Service it names holds the address too (two
//!   Services on one address: Warning `ClusterIPAlreadyAllocated`, nothing changed);
//! - an IPAddress without the allocator's labels: recreated;
//! - a Service's address inside no ServiceCIDR (`networking.k8s.io/v1`; the server writes the
//!   `kubernetes` one from `--service-cluster-ip-range`): Warning `ClusterIPOutOfRange` on the
//!   Service, once, and nothing else (kube's "please recreate service"); with no ServiceCIDR
//!   object at all, nothing is out of range (kube would call every address out of range);
//! - a managed IPAddress that names no Service, or a Service that does not hold its address:
//!   deleted (Warning `IPAddressNotAllocated` / `IPAddressWrongReference` on the IPAddress) once
//!   it is older than the grace period (`--ipaddress-leak-grace-period`, kube's fixed 60 s), so
//!   an allocation whose Service is still being written is left alone.
//!
//! It passes over everything after each burst of changes and every few seconds (the grace
//! period's end).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use h8s_types::validation::{parse_cidr, Cidr};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{IPAddress, IPAddressSpec, ParentReference, ServiceCIDR};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;

use crate::cluster::{self, Events};
use crate::{Context, Error};

const CONTROLLER: &str = "ipallocator-repair-controller";
/// The allocator's name (kube's `ipallocator.ControllerName`).
pub const MANAGED_BY: &str = "ipallocator.k8s.io";
const LABEL_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";
const LABEL_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";

fn family(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The cluster IPs a Service holds.
fn cluster_ips(svc: &Service) -> Vec<String> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if let Some(ip) = &spec.cluster_ip {
        if !ips.contains(ip) {
            ips.push(ip.clone());
        }
    }
    ips.retain(|ip| !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_ok());
    ips
}

/// The IPAddress the allocator writes for `ip` held by `svc`.
fn new_ip_address(ip: &str, svc: &Service) -> IPAddress {
    IPAddress {
        metadata: ObjectMeta {
            name: Some(ip.to_string()),
            labels: Some(
                [
                    (LABEL_FAMILY.to_string(), family(ip).to_string()),
                    (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(IPAddressSpec {
            parent_ref: ParentReference {
                group: Some(String::new()),
                resource: "services".into(),
                namespace: svc.namespace(),
                name: svc.name_any(),
            },
        }),
    }
}

fn parent(ip: &IPAddress) -> Option<&ParentReference> {
    ip.spec.as_ref().map(|s| &s.parent_ref)
}

fn refs_a_service(r: Option<&ParentReference>) -> bool {
    r.is_some_and(|r| r.group.as_deref().unwrap_or("").is_empty() && r.resource == "services")
}

fn managed(ip: &IPAddress) -> bool {
    ip.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
}

fn labels_ok(ip: &IPAddress) -> bool {
    managed(ip) && ip.labels().get(LABEL_FAMILY).map(String::as_str) == Some(family(&ip.name_any()))
}

/// What one pass does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Create (after deleting the one there, when `replace`) the IPAddress of `ip` for
    /// Service `(ns, name)`; the event goes on the Service once written.
    Create {
        ip: String,
        svc: (String, String),
        replace: bool,
        event: Option<(&'static str, String)>,
    },
    /// Only tell the Service.
    Warn {
        svc: (String, String),
        reason: &'static str,
        note: String,
    },
    /// Delete the IPAddress (uid precondition), with an event on it.
    Delete {
        ip: String,
        reason: &'static str,
        note: String,
    },
}

/// The ranges of every ServiceCIDR (unparsable entries skipped: validation rejects them).
fn ranges(cidrs: &[ServiceCIDR]) -> Vec<Cidr> {
    cidrs
        .iter()
        .filter_map(|c| c.spec.as_ref()?.cidrs.as_ref())
        .flatten()
        .filter_map(|c| parse_cidr(c))
        .collect()
}

/// One pass: what to repair, given every Service, IPAddress and ServiceCIDR range, the
/// current time and the grace period (seconds since the epoch).
pub(crate) fn plan(
    services: &[Service],
    addrs: &[IPAddress],
    ranges: &[Cidr],
    now: i64,
    grace: i64,
) -> Vec<Action> {
    let by_name: BTreeMap<String, &IPAddress> = addrs.iter().map(|a| (a.name_any(), a)).collect();
    let svcs: BTreeMap<(String, String), &Service> = services
        .iter()
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    let mut out = Vec::new();
    for (key, svc) in &svcs {
        let (ns, name) = key;
        for ip in cluster_ips(svc) {
            let fam = family(&ip);
            let create = |replace, event| Action::Create {
                ip: ip.clone(),
                svc: key.clone(),
                replace,
                event,
            };
            let in_range = |ip: &str| {
                ip.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ranges.iter().any(|r| r.contains(ip)))
            };
            if !ranges.is_empty() && !in_range(&ip) {
                out.push(Action::Warn {
                    svc: key.clone(),
                    reason: "ClusterIPOutOfRange",
                    note: format!("Cluster IP [{fam}]: {ip} is not within any configured Service CIDR; please recreate service"),
                });
                continue;
            }
            let Some(a) = by_name.get(&ip) else {
                out.push(create(
                    false,
                    Some((
                        "ClusterIPNotAllocated",
                        format!("Cluster IP [{fam}]: {ip} is not allocated; repairing"),
                    )),
                ));
                continue;
            };
            let wrong = || {
                Some((
                    "ClusterIPNotAllocated",
                    format!("the ClusterIP [{fam}]: {ip} for Service {ns}/{name} has a wrong reference; repairing"),
                ))
            };
            let r = parent(a);
            if !refs_a_service(r) {
                out.push(create(true, wrong()));
                continue;
            }
            let r = r.expect("checked");
            let rkey = (r.namespace.clone().unwrap_or_default(), r.name.clone());
            if &rkey != key {
                match svcs.get(&rkey) {
                    Some(other) if cluster_ips(other).contains(&ip) => out.push(Action::Warn {
                        svc: key.clone(),
                        reason: "ClusterIPAlreadyAllocated",
                        note: format!("Cluster IP [{fam}]:{ip} was assigned to multiple services; please recreate service"),
                    }),
                    _ => out.push(create(true, wrong())),
                }
                continue;
            }
            if !labels_ok(a) {
                out.push(create(true, None));
            }
        }
    }
    for a in addrs.iter().filter(|a| managed(a)) {
        let ip = a.name_any();
        let age = now
            - a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(now);
        let r = parent(a);
        if !refs_a_service(r) {
            let r = r
                .map(|r| {
                    format!(
                        "{}/{}/{}",
                        r.resource,
                        r.namespace.as_deref().unwrap_or(""),
                        r.name
                    )
                })
                .unwrap_or_default();
            out.push(Action::Delete {
                ip: ip.clone(),
                reason: "IPAddressNotAllocated",
                note: format!("IPAddress {ip} appears to have been modified, not referencing a Service {r}: cleaning up"),
            });
            continue;
        }
        let r = r.expect("checked");
        let rns = r.namespace.clone().unwrap_or_default();
        let rkey = (rns.clone(), r.name.clone());
        if age <= grace {
            // Its Service may still be being written (or the write being undone).
            continue;
        }
        match svcs.get(&rkey) {
            None => out.push(Action::Delete {
                ip: ip.clone(),
                reason: "IPAddressNotAllocated",
                note: format!(
                    "IPAddress: {ip} for Service {rns}/{} appears to have leaked: cleaning up",
                    r.name
                ),
            }),
            Some(s) if !cluster_ips(s).contains(&ip) => out.push(Action::Delete {
                ip: ip.clone(),
                reason: "IPAddressWrongReference",
                note: format!(
                    "IPAddress: {ip} for Service {rns}/{} has a wrong reference; cleaning up",
                    r.name
                ),
            }),
            Some(_) => {}
        }
    }
    out
}

struct Repair {
    client: kube::Client,
    events: Events,
    /// Services already told they share an address (told once, not every pass).
    warned: std::sync::Mutex<std::collections::HashSet<(String, String, String)>>,
}

impl Repair {
    async fn apply(&self, a: Action, services: &[Service], addrs: &[IPAddress]) {
        let ips: Api<IPAddress> = Api::all(self.client.clone());
        match a {
            Action::Create {
                ip,
                svc,
                replace,
                event,
            } => {
                let Some(s) = services
                    .iter()
                    .find(|s| s.namespace().unwrap_or_default() == svc.0 && s.name_any() == svc.1)
                else {
                    return;
                };
                if replace {
                    let uid = addrs
                        .iter()
                        .find(|a| a.name_any() == ip)
                        .and_then(|a| a.uid());
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid,
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = ips.delete(&ip, &dp).await {
                        if !cluster::is_stale(&e) {
                            tracing::warn!(%ip, error = %e, "deleting a wrong IPAddress failed");
                            return;
                        }
                    }
                }
                match ips
                    .create(&PostParams::default(), &new_ip_address(&ip, s))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(%ip, namespace = %svc.0, service = %svc.1, "repaired a cluster IP's IPAddress");
                        if let Some((reason, note)) = event {
                            self.events
                                .publish(
                                    &s.object_ref(&()),
                                    EventType::Warning,
                                    reason,
                                    "ClusterIPAllocation",
                                    note,
                                )
                                .await;
                        }
                    }
                    // Written meanwhile (the allocator, or a view of ours that lagged).
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => tracing::warn!(%ip, error = %e, "creating an IPAddress failed"),
                }
            }
            Action::Warn { svc, reason, note } => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((svc.0.clone(), svc.1.clone(), note.clone()));
                if !first {
                    return;
                }
                if let Some(s) = services
                    .iter()
                    .find(|s| s.namespace().unwrap_or_default() == svc.0 && s.name_any() == svc.1)
                {
                    self.events
                        .publish(
                            &s.object_ref(&()),
                            EventType::Warning,
                            reason,
                            "ClusterIPAllocation",
                            note,
                        )
                        .await;
                }
            }
            Action::Delete { ip, reason, note } => {
                let Some(a) = addrs.iter().find(|a| a.name_any() == ip) else {
                    return;
                };
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: a.uid(),
                        resource_version: a.resource_version(),
                    }),
                    ..Default::default()
                };
                match ips.delete(&ip, &dp).await {
                    Ok(_) => {
                        tracing::info!(%ip, reason, "removed a leaked IPAddress");
                        self.events
                            .publish(
                                &a.object_ref(&()),
                                EventType::Warning,
                                reason,
                                "IPAddressAllocation",
                                note,
                            )
                            .await;
                    }
                    Err(e) if cluster::is_stale(&e) => {}
                    Err(e) => tracing::warn!(%ip, error = %e, "deleting a leaked IPAddress failed"),
                }
            }
        }
    }
}

/// Runs until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let wake = Arc::new(Notify::new());
    let (services, _st) = cluster::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        Some(wake.clone()),
    );
    let (addrs, _at) = cluster::reflect(
        Api::<IPAddress>::all(client.clone()),
        watcher::Config::default(),
        Some(wake.clone()),
    );
    let (cidrs, _ct) = cluster::reflect(
        Api::<ServiceCIDR>::all(client.clone()),
        watcher::Config::default(),
        Some(wake.clone()),
    );
    cluster::ready(&services).await;
    cluster::ready(&addrs).await;
    cluster::ready(&cidrs).await;
    let repair = Repair {
        events: Events::new(client.clone(), CONTROLLER),
        client,
        warned: Default::default(),
    };
    let grace = ctx.timers.ipaddress_leak_grace_period;
    // Leaked addresses are looked at again when their grace period may have ended.
    let tick = (grace / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        // Coalesce a burst of changes into one pass.
        let _ = tokio::time::timeout(tick, wake.notified()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let ips: Vec<IPAddress> = addrs.state().iter().map(|a| (**a).clone()).collect();
        let cs: Vec<ServiceCIDR> = cidrs.state().iter().map(|c| (**c).clone()).collect();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        for a in plan(&svcs, &ips, &ranges(&cs), now, grace.as_secs() as i64) {
            repair.apply(a, &svcs, &ips).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pass with the default range (10.96.0.0/12).
    fn plan_in(services: &[Service], addrs: &[IPAddress], now: i64, grace: i64) -> Vec<Action> {
        plan(
            services,
            addrs,
            &[parse_cidr("10.96.0.0/12").unwrap()],
            now,
            grace,
        )
    }

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip]}}))
        .unwrap()
    }

    fn addr(ip: &str, ns: &str, name: &str, managed: bool, created: i64) -> IPAddress {
        let mut a = new_ip_address(ip, &svc(ns, name, ip));
        if !managed {
            a.metadata.labels = None;
        }
        a.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        a
    }

    #[test]
    fn repairs_as_kube_does() {
        let now = 1_000;
        let s = [
            svc("a", "web", "10.96.0.10"),
            svc("a", "db", "10.96.0.11"),
            svc("b", "x", "None"),
        ];
        // In order: nothing to do.
        let ok = [
            addr("10.96.0.10", "a", "web", true, 0),
            addr("10.96.0.11", "a", "db", true, 0),
        ];
        assert!(plan_in(&s, &ok, now, 60).is_empty());
        // Missing: created, with kube's event.
        let p = plan_in(&s, &ok[..1], now, 60);
        assert_eq!(
            p,
            vec![Action::Create {
                ip: "10.96.0.11".into(),
                svc: ("a".into(), "db".into()),
                replace: false,
                event: Some((
                    "ClusterIPNotAllocated",
                    "Cluster IP [IPv4]: 10.96.0.11 is not allocated; repairing".into()
                )),
            }]
        );
        // Labels gone: recreated quietly (and no longer the allocator's to delete).
        let p = plan_in(
            &s,
            &[ok[0].clone(), addr("10.96.0.11", "a", "db", false, 0)],
            now,
            60,
        );
        assert!(
            matches!(
                &p[..],
                [Action::Create {
                    replace: true,
                    event: None,
                    ..
                }]
            ),
            "{p:?}"
        );
        // Naming a Service that is gone: recreated for the holder.
        let p = plan_in(
            &s,
            &[ok[0].clone(), addr("10.96.0.11", "a", "gone", true, 0)],
            now,
            60,
        );
        assert!(
            matches!(&p[0], Action::Create { replace: true, event: Some(("ClusterIPNotAllocated", n)), .. } if n.contains("wrong reference")),
            "{p:?}"
        );
        // Two Services on one address: told, not changed.
        let dup = [
            svc("a", "web", "10.96.0.10"),
            svc("a", "web2", "10.96.0.10"),
        ];
        let p = plan_in(&dup, &ok[..1], now, 60);
        assert!(
            matches!(
                &p[..],
                [Action::Warn {
                    reason: "ClusterIPAlreadyAllocated",
                    ..
                }]
            ),
            "{p:?}"
        );
        // Leaked: deleted after the grace period only; unmanaged ones are left alone.
        let leaked = [
            ok[0].clone(),
            ok[1].clone(),
            addr("10.96.0.12", "a", "old", true, 950),
        ];
        assert_eq!(
            plan_in(&s, &leaked, now, 60).len(),
            0,
            "within the grace period"
        );
        let p = plan_in(&s, &leaked, now, 40);
        assert_eq!(
            p,
            vec![Action::Delete {
                ip: "10.96.0.12".into(),
                reason: "IPAddressNotAllocated",
                note: "IPAddress: 10.96.0.12 for Service a/old appears to have leaked: cleaning up"
                    .into(),
            }]
        );
        let mine = [
            ok[0].clone(),
            ok[1].clone(),
            addr("10.96.0.12", "a", "old", false, 0),
        ];
        assert!(plan_in(&s, &mine, now, 60).is_empty());
        // An address its Service no longer holds.
        let p = plan_in(
            &s,
            &[
                ok[0].clone(),
                ok[1].clone(),
                addr("10.96.0.13", "a", "web", true, 0),
            ],
            now,
            60,
        );
        assert!(
            matches!(
                &p[..],
                [Action::Delete {
                    reason: "IPAddressWrongReference",
                    ..
                }]
            ),
            "{p:?}"
        );
    }

    #[test]
    fn addresses_outside_every_service_cidr_are_reported_not_repaired() {
        let s = [svc("a", "web", "10.96.0.10"), svc("a", "old", "10.0.0.10")];
        let cidrs: Vec<ServiceCIDR> = vec![serde_json::from_value(json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.0/12", "fd00:10:96::/112"]}}))
        .unwrap()];
        let r = ranges(&cidrs);
        assert_eq!(r.len(), 2);
        // Neither has an IPAddress: the one in range gets one, the other only a warning.
        let p = plan(&s, &[], &r, 1_000, 60);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.contains(&Action::Warn {
            svc: ("a".into(), "old".into()),
            reason: "ClusterIPOutOfRange",
            note: "Cluster IP [IPv4]: 10.0.0.10 is not within any configured Service CIDR; please recreate service".into(),
        }));
        assert!(
            matches!(&p[..], [Action::Create { ip, .. }, _] | [_, Action::Create { ip, .. }] if ip == "10.96.0.10")
        );
        // Its IPAddress (written before the range changed) is left alone, as in kube.
        let p = plan(
            &s,
            &[
                addr("10.96.0.10", "a", "web", true, 0),
                addr("10.0.0.10", "a", "old", true, 0),
            ],
            &r,
            1_000,
            60,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(matches!(
            &p[0],
            Action::Warn {
                reason: "ClusterIPOutOfRange",
                ..
            }
        ));
        // A second ServiceCIDR covering it: in range again.
        let mut r2 = r.clone();
        r2.push(parse_cidr("10.0.0.0/24").unwrap());
        assert_eq!(
            plan(
                &s,
                &[
                    addr("10.96.0.10", "a", "web", true, 0),
                    addr("10.0.0.10", "a", "old", true, 0)
                ],
                &r2,
                1_000,
                60
            ),
            vec![]
        );
        // No ServiceCIDR object at all: nothing is called out of range.
        assert_eq!(plan(&s, &[], &[], 1_000, 60).len(), 2);
        assert!(plan(&s, &[], &[], 1_000, 60)
            .iter()
            .all(|a| matches!(a, Action::Create { .. })));
    }
}
