//! The network controller (h8s's own, the role Hypernetes gave its network manager): each
//! `Network` gets a cluster-wide segment id (VXLAN VNI), a finalizer and a phase; each
//! Namespace without `spec.network` gets its tenant's default Network.
//!
//! * **Segment ids** are recorded in `spec.providerNetworkID` (decimal, immutable once set,
//!   so a segment never changes under running pods). Left empty, the controller writes the
//!   lowest id from [`FIRST_SEGMENT`] up that no Network uses, with a `PUT` carrying the
//!   Network's `resourceVersion`: a concurrent change makes it a 409 and the next pass
//!   starts over (compare-and-swap). Reconciles run concurrently, so ids handed out and not
//!   yet seen in the cache are reserved in memory. Set by the user, the Network attaches to
//!   that existing segment — refused (`Failed`, `SegmentInUse`) when a Network of another
//!   tenant is on it, so tenants never share a segment.
//! * **Phase**: `Pending` until the segment id is recorded, then `Active`; `Failed` with a
//!   reason when the Network cannot be realised (a segment of another tenant, IPv6 subnets
//!   the fabric does not carry); `Terminating` once deleted while Namespaces still use it.
//! * **Finalizer** [`NETWORK_FINALIZER`]: added to every Network, removed once it is deleted
//!   and no Namespace (terminating ones included: their pods may still run) uses it — by
//!   `spec.network`, or, for a default Network, by being of its tenant without `spec.network`.
//! * **Default Networks**: a Namespace without `spec.network` joins
//!   [`h8s_types::default_network_name`] of its tenant label (`tenant-<tenant>`, or
//!   `default` without a tenant), created here on demand with [`DEFAULT_NETWORK_CIDR`]; so
//!   tenants never share a segment unless they ask for it. `kube-system` joins the system
//!   Network ([`h8s_types::SYSTEM_PODS_NETWORK`], created by the server at start, brought
//!   back here if missing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use h8s_types::network::{
    default_network_name, segment_id, NetworkPhase, DEFAULT_NETWORK_CIDR, NETWORK_FINALIZER,
};
use h8s_types::{Network, NetworkSpec, NetworkStatus, Subnet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use crate::cluster;
use crate::{Context, Error};

/// The first segment id the controller hands out. Lower ids are left to `h8s net` on a
/// single node (it allocates from 100 in its own file store).
pub const FIRST_SEGMENT: u32 = 4096;

/// The highest segment id (24-bit VNI).
pub const LAST_SEGMENT: u32 = (1 << 24) - 1;

/// The field manager of the controller's writes.
const MANAGER: &str = "h8s-network-controller";

pub use h8s_types::network::{NetNamespace, NetNamespaceSpec};

fn deleting(ns: &NetNamespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
}

/// The default Network of `tenant` (`None`: namespaces without a tenant).
pub fn default_network(tenant: Option<&str>) -> Network {
    let mut subnets = BTreeMap::new();
    subnets.insert(
        "default".to_string(),
        Subnet {
            cidr: DEFAULT_NETWORK_CIDR.into(),
            gateway: String::new(),
        },
    );
    Network {
        metadata: ObjectMeta {
            name: Some(default_network_name(tenant)),
            ..Default::default()
        },
        spec: NetworkSpec {
            tenant_id: tenant.map(str::to_string),
            subnets,
            provider_network_id: None,
        },
        status: None,
    }
}

/// The cluster's system Network (`kube-system`'s; the server creates it at start, this
/// brings it back if it is missing).
pub fn system_network() -> Network {
    let mut n = default_network(None);
    n.metadata.name = Some(h8s_types::SYSTEM_PODS_NETWORK.into());
    if let Some(s) = n.spec.subnets.remove("default") {
        n.spec.subnets.insert(
            "system".into(),
            Subnet {
                cidr: h8s_types::SYSTEM_PODS_CIDR.into(),
                ..s
            },
        );
    }
    n
}

/// What a Network should look like next, as the controller decides it from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the finalizer first.
    AddFinalizer,
    /// Record this segment id in `spec.providerNetworkID`.
    Allocate(u32),
    /// Report this phase, reason and message.
    Status(NetworkPhase, Option<&'static str>, String),
    /// Deleted and unused: remove the finalizer.
    Release,
}

/// The segment id of a Network, if it has one.
pub fn segment_of(n: &Network) -> Option<u32> {
    n.spec.provider_network_id.as_deref().and_then(segment_id)
}

fn tenant_of(n: &Network) -> &str {
    n.spec.tenant_id.as_deref().unwrap_or_default()
}

/// The lowest segment id from [`FIRST_SEGMENT`] not in `used`.
pub fn free_segment(used: &BTreeSet<u32>) -> Option<u32> {
    // Ids are dense from FIRST_SEGMENT up: the first gap is found after |used| steps at most.
    (FIRST_SEGMENT..=LAST_SEGMENT).find(|v| !used.contains(v))
}

/// Namespaces (by name) that use the Network `name`.
pub fn users<'a>(
    name: &str,
    namespaces: impl IntoIterator<Item = &'a NetNamespace>,
) -> Vec<String> {
    let mut out: Vec<String> = namespaces
        .into_iter()
        .filter(|ns| ns.network() == name)
        .map(|ns| ns.name_any())
        .collect();
    out.sort();
    out
}

/// The next step for `net`, given every Network and Namespace the controller sees and the
/// segment ids reserved in memory.
pub fn decide(
    net: &Network,
    networks: &[Arc<Network>],
    namespaces: &[Arc<NetNamespace>],
    reserved: &BTreeMap<u32, String>,
) -> Decision {
    let name = net.name_any();
    let has_finalizer = net.finalizers().iter().any(|f| f == NETWORK_FINALIZER);
    if net.metadata.deletion_timestamp.is_some() {
        let using = users(&name, namespaces.iter().map(|n| n.as_ref()));
        if using.is_empty() {
            return Decision::Release;
        }
        return Decision::Status(
            NetworkPhase::Terminating,
            Some("InUse"),
            format!("still used by namespaces {}", using.join(", ")),
        );
    }
    if !has_finalizer {
        return Decision::AddFinalizer;
    }
    if let Some(cidr) = net
        .spec
        .subnets
        .values()
        .map(|s| s.cidr.as_str())
        .find(|c| c.contains(':'))
    {
        return Decision::Status(
            NetworkPhase::Failed,
            Some("UnsupportedSubnet"),
            format!("subnet {cidr} is IPv6; the fabric carries IPv4 only"),
        );
    }
    let Some(seg) = segment_of(net) else {
        let used: BTreeSet<u32> = networks
            .iter()
            .filter_map(|n| segment_of(n))
            .chain(reserved.keys().copied())
            .collect();
        return match free_segment(&used) {
            Some(v) => Decision::Allocate(v),
            None => Decision::Status(
                NetworkPhase::Failed,
                Some("SegmentsExhausted"),
                "every segment id is in use".into(),
            ),
        };
    };
    // Another tenant's Network on the same segment: refuse, whichever came first. Among
    // Networks of different tenants sharing an id, the oldest keeps it.
    let other = networks
        .iter()
        .filter(|o| o.name_any() != name && segment_of(o) == Some(seg))
        .filter(|o| tenant_of(o) != tenant_of(net))
        .find(|o| older(o, net));
    if let Some(o) = other {
        return Decision::Status(
            NetworkPhase::Failed,
            Some("SegmentInUse"),
            format!(
                "segment {seg} belongs to network {} of another tenant",
                o.name_any()
            ),
        );
    }
    Decision::Status(NetworkPhase::Active, None, format!("segment {seg}"))
}

/// Whether `a` was created before `b` (by creation time, then name).
fn older(a: &Network, b: &Network) -> bool {
    let t = |n: &Network| n.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (t(a), a.name_any()) < (t(b), b.name_any())
}

struct State {
    client: kube::Client,
    networks: Store<Network>,
    namespaces: Store<NetNamespace>,
    /// Segment ids written and not yet seen in the cache: id → Network name.
    reserved: Mutex<BTreeMap<u32, String>>,
    events: cluster::Events,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default();
    let (namespaces, ns_events) =
        cluster::reflect_stream(Api::<NetNamespace>::all(client.clone()), cfg.clone());
    let controller = Controller::new(Api::<Network>::all(client.clone()), cfg);
    let state = Arc::new(State {
        client: client.clone(),
        networks: controller.store(),
        namespaces,
        reserved: Mutex::new(BTreeMap::new()),
        events: cluster::Events::new(client.clone(), "network-controller"),
    });
    let resync = ctx.timers.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    let defaults = state.clone();
    let ns_events = ns_events.then(move |ev| {
        let s = defaults.clone();
        async move {
            if let Ok(ns) = &ev {
                ensure_default(&s, ns).await;
            }
            ev
        }
    });
    controller
        .watches_stream(ns_events, |ns: NetNamespace| {
            Some(ObjectRef::<Network>::new(&ns.network()))
        })
        .reconcile_all_on(ticks)
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "network controller");
            }
        })
        .await;
    Err(Error::Stopped { name: "network" })
}

/// Creates the default Network a Namespace without `spec.network` joins, unless it exists.
async fn ensure_default(s: &State, ns: &NetNamespace) {
    if deleting(ns) || ns.spec.network.as_deref().is_some_and(|n| !n.is_empty()) {
        return;
    }
    let name = ns.network();
    if s.networks.get(&ObjectRef::new(&name)).is_some() {
        return;
    }
    let api: Api<Network> = Api::all(s.client.clone());
    let net = if name == h8s_types::SYSTEM_PODS_NETWORK {
        system_network()
    } else {
        default_network(ns.tenant())
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    // A few tries: nothing else brings a missing default Network back until the next event
    // of one of its namespaces.
    for attempt in 0..5u32 {
        match api.create(&pp, &net).await {
            Ok(_) => {
                tracing::info!(network = %name, namespace = %ns.name_any(), "default network created");
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) => {
                tracing::warn!(network = %name, error = %e, "creating a default network failed");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

fn error_policy(_n: Arc<Network>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "network reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(level = "debug", skip_all, fields(network = %net.name_any()))]
async fn reconcile(net: Arc<Network>, s: Arc<State>) -> Result<Action, ReconcileError> {
    cluster::ready(&s.namespaces).await;
    let name = net.name_any();
    let api: Api<Network> = Api::all(s.client.clone());
    let networks = s.networks.state();
    let decision = {
        let mut reserved = s.reserved.lock().unwrap_or_else(|e| e.into_inner());
        // Forget reservations the cache has caught up with, or whose Network is gone.
        reserved.retain(|_, owner| {
            networks
                .iter()
                .find(|n| n.name_any() == *owner)
                .is_some_and(|n| segment_of(n).is_none())
        });
        let d = decide(&net, &networks, &s.namespaces.state(), &reserved);
        if let Decision::Allocate(v) = d {
            reserved.insert(v, name.clone());
        }
        d
    };
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match decision {
        Decision::AddFinalizer => {
            let mut n = (*net).clone();
            n.metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(NETWORK_FINALIZER.into());
            let added = write(api.replace(&name, &pp, &n).await)?;
            if added && net.status.is_none() {
                let msg = "waiting for a segment id".to_string();
                set_status(&api, &name, None, NetworkPhase::Pending, None, msg).await?;
            }
        }
        Decision::Release => {
            let mut n = (*net).clone();
            if let Some(f) = n.metadata.finalizers.as_mut() {
                f.retain(|f| f != NETWORK_FINALIZER);
            }
            if write(api.replace(&name, &pp, &n).await)? {
                tracing::info!(network = %name, "network released");
            }
        }
        Decision::Allocate(v) => {
            let mut n = (*net).clone();
            n.spec.provider_network_id = Some(v.to_string());
            let r = api.replace(&name, &pp, &n).await;
            if r.is_err() {
                s.reserved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&v);
            }
            if write(r)? {
                tracing::info!(network = %name, segment = v, "segment allocated");
            }
        }
        Decision::Status(phase, reason, message) => {
            let changed = set_status(
                &api,
                &name,
                net.status.as_ref(),
                phase,
                reason,
                message.clone(),
            )
            .await?;
            if changed && phase == NetworkPhase::Failed {
                s.events
                    .publish(
                        &net.object_ref(&()),
                        kube::runtime::events::EventType::Warning,
                        reason.unwrap_or("Failed"),
                        "Realize",
                        message,
                    )
                    .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// A write's result (true when it was made): a stale resourceVersion (409) or a vanished
/// object (404) is not an error, the watch brings the new state and the next pass decides
/// again.
fn write(r: Result<Network, kube::Error>) -> Result<bool, ReconcileError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if cluster::is_stale(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes the status unless it already says this; true when it wrote.
async fn set_status(
    api: &Api<Network>,
    name: &str,
    current: Option<&NetworkStatus>,
    phase: NetworkPhase,
    reason: Option<&str>,
    message: String,
) -> Result<bool, ReconcileError> {
    let want = NetworkStatus {
        phase: Some(phase.as_str().into()),
        reason: reason.map(str::to_string),
        message: Some(message),
        ..Default::default()
    };
    // Allocations are the node agents' part of the status, never compared or written here.
    if current.is_some_and(|c| {
        (&c.phase, &c.reason, &c.message) == (&want.phase, &want.reason, &want.message)
    }) {
        return Ok(false);
    }
    // A merge patch replaces the fields it names; null clears a stale reason.
    let patch = serde_json::json!({"status": {
        "phase": want.phase, "reason": want.reason, "message": want.message,
    }});
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match api.patch_status(name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(e) if cluster::is_stale(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h8s_types::network::TENANT_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn net(name: &str, tenant: &str, seg: Option<u32>, age: i64) -> Arc<Network> {
        let mut n = default_network(Some(tenant));
        n.metadata.name = Some(name.into());
        n.metadata.finalizers = Some(vec![NETWORK_FINALIZER.into()]);
        n.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap(),
        ));
        n.spec.provider_network_id = seg.map(|s| s.to_string());
        Arc::new(n)
    }

    fn ns(name: &str, tenant: Option<&str>, network: Option<&str>) -> Arc<NetNamespace> {
        let mut n = NetNamespace::default();
        n.metadata.name = Some(name.into());
        if let Some(t) = tenant {
            n.metadata.labels = Some(BTreeMap::from([(TENANT_LABEL.into(), t.into())]));
        }
        n.spec.network = network.map(str::to_string);
        Arc::new(n)
    }

    #[test]
    fn namespaces_join_their_tenants_default_network() {
        assert_eq!(ns("a", Some("acme"), None).network(), "tenant-acme");
        assert_eq!(ns("a", None, None).network(), "default");
        assert_eq!(ns("a", Some("acme"), Some("n1")).network(), "n1");
        assert_eq!(ns("a", Some("acme"), Some("")).network(), "tenant-acme");
        let d = default_network(Some("acme"));
        assert_eq!(d.metadata.name.as_deref(), Some("tenant-acme"));
        assert_eq!(d.spec.tenant_id.as_deref(), Some("acme"));
        assert_eq!(d.spec.subnets["default"].cidr, DEFAULT_NETWORK_CIDR);
        // The server's validation accepts what the controller creates.
        let v = serde_json::to_value(&d).unwrap();
        let r = h8s_types::resources::find("", "v1", "networks").unwrap();
        assert_eq!(h8s_types::validation::validate_create(r, &v), Ok(()));
        let v = serde_json::to_value(default_network(None)).unwrap();
        assert_eq!(h8s_types::validation::validate_create(r, &v), Ok(()));
        let v = serde_json::to_value(system_network()).unwrap();
        assert_eq!(h8s_types::validation::validate_create(r, &v), Ok(()));
        assert_eq!(ns("kube-system", None, None).network(), "system");
    }

    #[test]
    fn segments_are_allocated_lowest_free_and_never_twice() {
        let nets = vec![
            net("a", "t1", Some(FIRST_SEGMENT), 0),
            net("b", "t2", Some(FIRST_SEGMENT + 2), 1),
            net("c", "t3", None, 2),
            net("d", "t3", None, 3),
        ];
        let mut reserved = BTreeMap::new();
        let d = decide(&nets[2], &nets, &[], &reserved);
        assert_eq!(d, Decision::Allocate(FIRST_SEGMENT + 1));
        reserved.insert(FIRST_SEGMENT + 1, "c".to_string());
        // A concurrent reconcile of another Network skips the reserved id.
        assert_eq!(
            decide(&nets[3], &nets, &[], &reserved),
            Decision::Allocate(FIRST_SEGMENT + 3)
        );
        let used: BTreeSet<u32> = (FIRST_SEGMENT..=LAST_SEGMENT).collect();
        assert_eq!(free_segment(&used), None);
    }

    #[test]
    fn phases_finalizer_and_failures() {
        let mut fresh = (*net("a", "t1", None, 0)).clone();
        fresh.metadata.finalizers = None;
        assert_eq!(
            decide(&fresh, &[], &[], &BTreeMap::new()),
            Decision::AddFinalizer
        );
        let a = net("a", "t1", Some(5000), 0);
        assert_eq!(
            decide(&a, std::slice::from_ref(&a), &[], &BTreeMap::new()),
            Decision::Status(NetworkPhase::Active, None, "segment 5000".into())
        );
        // Another tenant attaching to a's segment fails; a keeps it.
        let b = net("b", "t2", Some(5000), 1);
        let all = vec![a.clone(), b.clone()];
        assert_eq!(
            decide(&b, &all, &[], &BTreeMap::new()),
            Decision::Status(
                NetworkPhase::Failed,
                Some("SegmentInUse"),
                "segment 5000 belongs to network a of another tenant".into()
            )
        );
        assert!(matches!(
            decide(&a, &all, &[], &BTreeMap::new()),
            Decision::Status(NetworkPhase::Active, ..)
        ));
        // The same tenant may attach a second Network to its own segment.
        let c = net("c", "t1", Some(5000), 2);
        assert!(matches!(
            decide(&c, &[a.clone(), c.clone()], &[], &BTreeMap::new()),
            Decision::Status(NetworkPhase::Active, ..)
        ));
        let mut v6 = (*net("v6", "t1", None, 0)).clone();
        v6.spec.subnets.insert(
            "six".into(),
            Subnet {
                cidr: "fd00::/64".into(),
                gateway: String::new(),
            },
        );
        assert!(matches!(
            decide(&v6, &[], &[], &BTreeMap::new()),
            Decision::Status(NetworkPhase::Failed, Some("UnsupportedSubnet"), _)
        ));
    }

    #[test]
    fn a_used_network_is_kept_until_its_last_namespace_goes() {
        let mut gone = (*net("tenant-acme", "acme", Some(5000), 0)).clone();
        gone.metadata.deletion_timestamp = Some(cluster::now());
        let namespaces = vec![
            ns("x", Some("acme"), None),
            ns("y", Some("acme"), Some("other")),
            ns("z", Some("beta"), None),
        ];
        assert_eq!(
            decide(&gone, &[], &namespaces, &BTreeMap::new()),
            Decision::Status(
                NetworkPhase::Terminating,
                Some("InUse"),
                "still used by namespaces x".into()
            )
        );
        assert_eq!(
            decide(&gone, &[], &namespaces[1..], &BTreeMap::new()),
            Decision::Release
        );
    }
}
