//! The Endpoints and EndpointSlice controllers (kube-controller-manager's `endpoints` and
//! `endpointslice` controllers), as one reconcile per Service.
//!
//! For every Service with a selector, the pods of its namespace that match it and have an
//! IP become its endpoints: each service port resolves to the pod's port (a `targetPort`
//! number, or the container port of that name and protocol); a pod whose port does not
//! resolve is left out of that port.
//!
//! * `Endpoints` (same name as the Service, the Service's labels): ready pods in `addresses`,
//!   the others in `notReadyAddresses` (all ready with `publishNotReadyAddresses`);
//!   terminating pods and pods that finished for good are left out; subsets grouped by
//!   identical port sets; more than 1000 addresses are truncated with the
//!   `endpoints.kubernetes.io/over-capacity: truncated` annotation. The Endpoints of a
//!   deleted Service are deleted.
//! * `EndpointSlice`s (`discovery.k8s.io/v1`): per address type and port set, at most 100
//!   endpoints a slice, each with `ready`/`serving`/`terminating` conditions, `nodeName`,
//!   `zone` (the node's `topology.kubernetes.io/zone`), `targetRef`; labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, owned by the Service (the garbage collector removes
//!   them with it).
//!
//! Services without a selector (the `kubernetes` Service, whose endpoints are the API
//! server's, and user-managed ones) are not touched.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::cluster;
use crate::{Context, Error};

/// Label of a slice naming its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label of a slice naming the controller that manages it.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// kube's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// kube's cap on the addresses of one Endpoints object.
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;
const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// Runs the controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    let cfg = watcher::Config::default();

    // Pods and Endpoints: one watch each, caching and triggering (the controller polls them).
    let informer = ctx.informers.pods(&client);
    let (pods, pod_events) = (informer.store(), informer.touched());
    let (endpoints, endpoint_events) =
        cluster::reflect_stream(Api::<Endpoints>::all(client.clone()), cfg.clone());
    // The task ends with this future (a named binding: `_` would drop it at once).
    let (nodes, _nodes_task) =
        cluster::reflect(Api::<Node>::all(client.clone()), cfg.clone(), None);

    let controller = Controller::new(Api::<Service>::all(client.clone()), cfg.clone());
    let services = controller.store();
    let by_ns = services.clone();
    let resync = ctx.timers.resync;
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(resync).await;
        Some(((), ()))
    });
    let state = Arc::new(State {
        client: client.clone(),
        pods,
        nodes,
    });
    // Endpoints of deleted Services go, as in kube (also those left while we were down).
    let _sweeper = cluster::Task::spawn(orphan_sweeper(
        client.clone(),
        services.clone(),
        endpoints,
        resync,
    ));
    controller
        .reconcile_on(pod_events.flat_map(move |pod| {
            let ns = pod.namespace();
            futures::stream::iter(
                by_ns
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == ns && selector(s).is_some())
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>(),
            )
        }))
        .watches_stream(endpoint_events, |ep: Endpoints| {
            Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        })
        .owns(Api::<discovery::EndpointSlice>::all(client), cfg)
        .reconcile_all_on(ticks)
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "endpoints controller");
            }
        })
        .await;
    Err(Error::Stopped { name: "endpoints" })
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
}

fn error_policy(_svc: Arc<Service>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "endpoints reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

#[tracing::instrument(level = "debug", skip_all, fields(service = %cluster::ns_name(&*svc)))]
async fn reconcile(svc: Arc<Service>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let ns = svc.namespace().unwrap_or_default();
    let Some(sel) = selector(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Every pod and node must be known, not an empty cache at start.
    cluster::ready(&s.pods).await;
    cluster::ready(&s.nodes).await;
    let pods: Vec<Arc<Pod>> = s.pods.state_filter(|p| {
        p.namespace().as_deref() == Some(ns.as_str())
            && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
    });
    let zone = |node: &str| {
        s.nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.labels().get("topology.kubernetes.io/zone").cloned())
    };
    let eps = pod_endpoints(&svc, pods.iter().map(|p| &**p), &zone);

    sync_endpoints(&s.client, &svc, &eps).await?;
    match sync_slices(&s.client, &svc, &eps).await {
        Ok(()) => {}
        // Not served (yet) by this server: Endpoints still work.
        Err(kube::Error::Api(st)) if st.code == 404 => {
            tracing::debug!("EndpointSlices are not served; skipped")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

async fn sync_endpoints(
    client: &kube::Client,
    svc: &Service,
    eps: &[PodEndpoint],
) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let (subsets, truncated) = endpoints_subsets(svc, eps, MAX_ENDPOINTS_ADDRESSES);
    let labels = endpoints_labels(svc);
    let current = api.get_opt(&name).await?;
    let over = |e: &Endpoints| {
        e.annotations()
            .get(ANNOTATION_OVER_CAPACITY)
            .is_some_and(|v| v == "truncated")
    };
    match current {
        Some(cur)
            if cur.subsets.clone().unwrap_or_default() == subsets
                && cur.metadata.labels.clone().unwrap_or_default() == labels
                && over(&cur) == truncated =>
        {
            Ok(())
        }
        Some(mut cur) => {
            cur.subsets = Some(subsets);
            cur.metadata.labels = Some(labels);
            let ann = cur.metadata.annotations.get_or_insert_with(BTreeMap::new);
            if truncated {
                ann.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
            } else {
                ann.remove(ANNOTATION_OVER_CAPACITY);
            }
            api.replace(&name, &PostParams::default(), &cur).await?;
            tracing::debug!(service = %format!("{ns}/{name}"), "endpoints updated");
            Ok(())
        }
        None => {
            let mut annotations = BTreeMap::new();
            if truncated {
                annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
            }
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => Ok(()),
                // Created meanwhile: the watch brings us back.
                Err(kube::Error::Api(st)) if st.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

async fn sync_slices(
    client: &kube::Client,
    svc: &Service,
    eps: &[PodEndpoint],
) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<discovery::EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels(&format!(
        "{LABEL_SERVICE_NAME}={name},{LABEL_MANAGED_BY}={MANAGED_BY}"
    ));
    let existing = api.list(&lp).await?.items;
    let desired = desired_slices(svc, eps, MAX_ENDPOINTS_PER_SLICE);
    let plan = plan_slices(svc, &existing, desired);
    for sl in plan.create {
        api.create(&PostParams::default(), &sl).await?;
    }
    for sl in plan.update {
        api.replace(&sl.name_any(), &PostParams::default(), &sl)
            .await?;
    }
    for n in plan.delete {
        match api.delete(&n, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if cluster::is_stale(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes Endpoints whose Service is gone, whenever the Service store changes size and
/// every resync period.
async fn orphan_sweeper(
    client: kube::Client,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    period: Duration,
) {
    cluster::ready(&services).await;
    cluster::ready(&endpoints).await;
    let mut tick = tokio::time::interval(period.min(Duration::from_secs(5)));
    loop {
        tick.tick().await;
        let live: HashSet<(String, String)> = services
            .state()
            .iter()
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        for ep in endpoints.state() {
            let key = (ep.namespace().unwrap_or_default(), ep.name_any());
            if live.contains(&key) || leader_election_record(&ep) {
                continue;
            }
            // Check the API itself: the store may simply lag behind a new Service.
            let sapi: Api<Service> = Api::namespaced(client.clone(), &key.0);
            if !matches!(sapi.get_opt(&key.1).await, Ok(None)) {
                continue;
            }
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &key.0);
            match api.delete(&key.1, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::debug!(endpoints = %format!("{}/{}", key.0, key.1), "endpoints of a deleted service removed")
                }
                Err(e) if cluster::is_stale(&e) => {}
                Err(e) => tracing::warn!(error = %e, "deleting orphaned endpoints failed"),
            }
        }
    }
}

/// Endpoints used as a leader-election record (old clients) are not a Service's.
fn leader_election_record(ep: &Endpoints) -> bool {
    ep.annotations()
        .contains_key("control-plane.alpha.kubernetes.io/leader")
}

// ---------------------------------------------------------------------------------------
// The pure part.

/// A Service's selector, `None` when it has none (its endpoints are not ours).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// One resolved port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// What one pod contributes to a Service's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    pub ip: String,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub hostname: Option<String>,
    pub target_ref: ObjectReference,
    /// Whether traffic should go to it (`serving` and not terminating, or
    /// `publishNotReadyAddresses`).
    pub ready: bool,
    /// Whether it is ready, terminating or not.
    pub serving: bool,
    pub terminating: bool,
    /// The service ports it resolves, sorted.
    pub ports: Vec<ResolvedPort>,
}

/// The port a pod serves a Service port on (kube's `FindPort`): a number `targetPort` as is
/// (unset: the service port), a name the container port of that name and protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether a pod belongs in a Service's endpoints at all (kube's `ShouldPodBeInEndpoints`,
/// terminating pods included: the callers decide about those).
fn pod_eligible(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    if !has_ip {
        return false;
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or_default();
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
    {
        "Never" => phase != "Failed" && phase != "Succeeded",
        "OnFailure" => phase != "Succeeded",
        _ => true,
    }
}

fn pod_ip(pod: &Pod) -> Option<String> {
    let s = pod.status.as_ref()?;
    s.pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| s.pod_ips.as_ref()?.first().map(|p| p.ip.clone()))
}

/// The endpoints of a Service from the pods that match its selector.
pub fn pod_endpoints<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<PodEndpoint> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let svc_name = svc.name_any();
    let mut out: Vec<PodEndpoint> = pods
        .into_iter()
        .filter(|p| pod_eligible(p))
        .filter_map(|pod| {
            let ip = pod_ip(pod)?;
            let mut ports: Vec<ResolvedPort> = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|sp| {
                    Some(ResolvedPort {
                        name: sp.name.clone().unwrap_or_default(),
                        port: find_port(pod, sp)?,
                        protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            ports.sort();
            let pspec = pod.spec.as_ref();
            let hostname = pspec
                .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
                .and_then(|s| s.hostname.clone());
            let node_name = pspec.and_then(|s| s.node_name.clone());
            let serving = publish || cluster::pod_ready(pod);
            let terminating = cluster::pod_terminating(pod);
            Some(PodEndpoint {
                zone: node_name.as_deref().and_then(zone_of),
                ip,
                node_name,
                hostname,
                target_ref: ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: pod.namespace(),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                    ..Default::default()
                },
                ready: publish || (serving && !terminating),
                serving,
                terminating,
                ports,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.ip.cmp(&b.ip)
            .then(a.target_ref.uid.cmp(&b.target_ref.uid))
    });
    out
}

/// The Endpoints subsets: addresses grouped by identical port sets, ready ones in
/// `addresses`, others in `notReadyAddresses`; terminating pods only with
/// `publishNotReadyAddresses`. A Service with ports lists only pods resolving at least one;
/// a headless one without ports lists every pod. The bool says whether more than `cap`
/// addresses were truncated (ready ones are kept first).
pub fn endpoints_subsets(
    svc: &Service,
    eps: &[PodEndpoint],
    cap: usize,
) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let has_ports = spec.ports.as_ref().is_some_and(|p| !p.is_empty());
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for ep in eps {
        if ep.terminating && !publish {
            continue;
        }
        if has_ports && ep.ports.is_empty() {
            continue;
        }
        let addr = EndpointAddress {
            ip: ep.ip.clone(),
            hostname: ep.hostname.clone(),
            node_name: ep.node_name.clone(),
            target_ref: Some(ep.target_ref.clone()),
        };
        let g = groups.entry(ep.ports.clone()).or_default();
        if ep.serving {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let total: usize = groups.values().map(|(r, n)| r.len() + n.len()).sum();
    let truncated = total > cap;
    if truncated {
        // Ready addresses first, then not-ready ones, until the cap.
        let mut budget = cap;
        for (r, _) in groups.values_mut() {
            r.truncate(budget);
            budget -= r.len();
        }
        for (_, n) in groups.values_mut() {
            n.truncate(budget);
            budget -= n.len();
        }
    }
    let subsets = groups
        .into_iter()
        .filter(|(_, (r, n))| !r.is_empty() || !n.is_empty())
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: (!p.name.is_empty()).then_some(p.name),
                        port: p.port,
                        protocol: Some(p.protocol),
                        app_protocol: p.app_protocol,
                    })
                    .collect()
            }),
        })
        .collect();
    (subsets, truncated)
}

/// The Endpoints' labels: the Service's, plus `service.kubernetes.io/headless` for a
/// headless Service.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        l.insert(LABEL_HEADLESS.into(), String::new());
    }
    l
}

/// The content of one desired slice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceContent {
    pub address_type: String,
    pub ports: Vec<ResolvedPort>,
    pub endpoints: Vec<discovery::Endpoint>,
}

fn address_type(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some("IPv4"),
        IpAddr::V6(_) => Some("IPv6"),
    }
}

/// The slices a Service should have: per address type (of the Service's IP families) and
/// port set, its endpoints sorted by address in chunks of at most `max`.
pub fn desired_slices(svc: &Service, eps: &[PodEndpoint], max: usize) -> Vec<SliceContent> {
    let families: Option<Vec<String>> = svc.spec.as_ref().and_then(|s| s.ip_families.clone());
    let mut groups: BTreeMap<(String, Vec<ResolvedPort>), Vec<discovery::Endpoint>> =
        BTreeMap::new();
    for ep in eps {
        let Some(at) = address_type(&ep.ip) else {
            continue;
        };
        if families
            .as_ref()
            .is_some_and(|f| !f.is_empty() && !f.iter().any(|f| f == at))
        {
            continue;
        }
        groups
            .entry((at.to_string(), ep.ports.clone()))
            .or_default()
            .push(discovery::Endpoint {
                addresses: vec![ep.ip.clone()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(ep.ready),
                    serving: Some(ep.serving),
                    terminating: Some(ep.terminating),
                }),
                hostname: ep.hostname.clone(),
                node_name: ep.node_name.clone(),
                target_ref: Some(ep.target_ref.clone()),
                zone: ep.zone.clone(),
                ..Default::default()
            });
    }
    let max = max.max(1);
    let mut out = Vec::new();
    for ((address_type, ports), endpoints) in groups {
        for chunk in endpoints.chunks(max) {
            out.push(SliceContent {
                address_type: address_type.clone(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    out
}

/// What to do to the Service's slices.
#[derive(Debug, Default)]
pub struct SlicePlan {
    pub create: Vec<discovery::EndpointSlice>,
    pub update: Vec<discovery::EndpointSlice>,
    pub delete: Vec<String>,
}

fn slice_ports(ports: &[ResolvedPort]) -> Vec<discovery::EndpointPort> {
    ports
        .iter()
        .map(|p| discovery::EndpointPort {
            name: Some(p.name.clone()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

fn owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = endpoints_labels(svc);
    l.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    l
}

/// Matches the desired slices to the existing ones (same address type and ports, in name
/// order), updating those that differ, creating the missing and deleting the rest. A
/// Service without endpoints keeps one empty placeholder slice, as in kube.
pub fn plan_slices(
    svc: &Service,
    existing: &[discovery::EndpointSlice],
    mut desired: Vec<SliceContent>,
) -> SlicePlan {
    let labels = slice_labels(svc);
    let owner = owner_ref(svc);
    if desired.is_empty() {
        let address_type = svc
            .spec
            .as_ref()
            .and_then(|s| s.ip_families.as_ref()?.first().cloned())
            .unwrap_or_else(|| "IPv4".into());
        desired.push(SliceContent {
            address_type,
            ports: vec![],
            endpoints: vec![],
        });
    }
    let mut pool: Vec<&discovery::EndpointSlice> = existing.iter().collect();
    pool.sort_by_key(|s| s.name_any());
    let mut used: HashSet<String> = HashSet::new();
    let mut plan = SlicePlan::default();
    for d in desired {
        let ports = slice_ports(&d.ports);
        let placeholder = d.endpoints.is_empty();
        let reuse = pool.iter().find(|s| {
            !used.contains(&s.name_any())
                && s.address_type == d.address_type
                && (placeholder || s.ports.clone().unwrap_or_default() == ports)
        });
        match reuse {
            Some(cur) => {
                used.insert(cur.name_any());
                let owned = cur
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == owner.uid && o.controller == Some(true));
                if cur.endpoints == d.endpoints
                    && cur.ports.clone().unwrap_or_default() == ports
                    && cur.metadata.labels.as_ref() == Some(&labels)
                    && owned
                {
                    continue;
                }
                let mut s = (*cur).clone();
                s.endpoints = d.endpoints;
                s.ports = Some(ports);
                s.metadata.labels = Some(labels.clone());
                s.metadata.owner_references = Some(vec![owner.clone()]);
                plan.update.push(s);
            }
            None => plan.create.push(discovery::EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{}-", truncate_name(&svc.name_any()))),
                    namespace: svc.namespace(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                address_type: d.address_type,
                endpoints: d.endpoints,
                ports: Some(ports),
            }),
        }
    }
    plan.delete = pool
        .into_iter()
        .map(|s| s.name_any())
        .filter(|n| !used.contains(n))
        .collect();
    plan
}

/// kube keeps generated names within 63 characters: the prefix is cut to leave room for
/// the 5 random characters.
fn truncate_name(name: &str) -> &str {
    match name.char_indices().nth(57) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Pod {
        let mut p = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                let (a, b) = k.split_once('.').unwrap();
                p[a][b] = v;
            }
        }
        serde_json::from_value(p).unwrap()
    }

    fn web() -> Service {
        svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9100}
            ]}
        }))
    }

    fn no_zone(_: &str) -> Option<String> {
        Some("z1".into())
    }

    #[test]
    fn ports_resolve_by_number_and_name() {
        let p = pod("a", "10.0.0.1", true, serde_json::json!({}));
        let sp = |v: serde_json::Value| -> ServicePort { serde_json::from_value(v).unwrap() };
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 80, "targetPort": "http"}))
            ),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &sp(serde_json::json!({"port": 80, "targetPort": 81}))),
            Some(81)
        );
        assert_eq!(
            find_port(&p, &sp(serde_json::json!({"port": 80}))),
            Some(80)
        );
        // Name and protocol must both match.
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 53, "targetPort": "dns"}))
            ),
            None
        );
        assert_eq!(
            find_port(
                &p,
                &sp(serde_json::json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))
            ),
            Some(53)
        );
    }

    #[test]
    fn endpoints_split_ready_and_not_ready() {
        let pods = [
            pod("b", "10.0.0.2", false, serde_json::json!({})),
            pod("a", "10.0.0.1", true, serde_json::json!({})),
            pod("noip", "", true, serde_json::json!({})),
            pod(
                "done",
                "10.0.0.9",
                true,
                serde_json::json!({"spec.restartPolicy": "Never", "status.phase": "Succeeded"}),
            ),
            pod(
                "bye",
                "10.0.0.3",
                true,
                serde_json::json!({"metadata.deletionTimestamp": "2026-01-01T00:00:00Z"}),
            ),
        ];
        let s = web();
        let eps = pod_endpoints(&s, pods.iter(), &no_zone);
        assert_eq!(
            eps.iter().map(|e| e.ip.as_str()).collect::<Vec<_>>(),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        let (subsets, truncated) = endpoints_subsets(&s, &eps, 1000);
        assert!(!truncated);
        assert_eq!(subsets.len(), 1);
        let ss = &subsets[0];
        let ips = |a: &Option<Vec<EndpointAddress>>| {
            a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&ss.addresses), ["10.0.0.1"]);
        assert_eq!(
            ips(&ss.not_ready_addresses),
            ["10.0.0.2"],
            "terminating pod left out"
        );
        let ports = ss.ports.clone().unwrap();
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.clone().unwrap(), p.port))
                .collect::<Vec<_>>(),
            [("http".to_string(), 8080), ("metrics".to_string(), 9100)]
        );
        let a = &ss.addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        assert_eq!(a.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));

        // publishNotReadyAddresses: everything ready, terminating included.
        let mut s2 = s.clone();
        s2.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let eps = pod_endpoints(&s2, pods.iter(), &no_zone);
        let (subsets, _) = endpoints_subsets(&s2, &eps, 1000);
        assert_eq!(
            ips(&subsets[0].addresses),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn endpoints_group_by_port_set_and_truncate() {
        // Pod "x" has no "http" port: it only serves the numeric one.
        let mut x = pod("x", "10.0.0.5", true, serde_json::json!({}));
        x.spec.as_mut().unwrap().containers[0].ports = None;
        let pods = [pod("a", "10.0.0.1", true, serde_json::json!({})), x];
        let s = web();
        let eps = pod_endpoints(&s, pods.iter(), &no_zone);
        let (subsets, _) = endpoints_subsets(&s, &eps, 1000);
        assert_eq!(subsets.len(), 2);
        assert!(subsets
            .iter()
            .any(|ss| ss.ports.as_ref().unwrap().len() == 1
                && ss.addresses.as_ref().unwrap()[0].ip == "10.0.0.5"));
        let (subsets, truncated) = endpoints_subsets(&s, &eps, 1);
        assert!(truncated);
        assert_eq!(
            subsets
                .iter()
                .map(|s| s.addresses.iter().flatten().count())
                .sum::<usize>(),
            1
        );
    }

    #[test]
    fn slices_have_conditions_and_chunks() {
        let mut pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                    i % 2 == 0,
                    serde_json::json!({}),
                )
            })
            .collect();
        pods.push(pod(
            "bye",
            "10.2.0.1",
            true,
            serde_json::json!({"metadata.deletionTimestamp": "2026-01-01T00:00:00Z"}),
        ));
        let s = web();
        let eps = pod_endpoints(&s, pods.iter(), &no_zone);
        let slices = desired_slices(&s, &eps, MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(
            slices.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 51]
        );
        assert!(slices.iter().all(|s| s.address_type == "IPv4"));
        let all: Vec<&discovery::Endpoint> = slices.iter().flat_map(|s| &s.endpoints).collect();
        let bye = all.iter().find(|e| e.addresses[0] == "10.2.0.1").unwrap();
        let c = bye.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        let nr = all
            .iter()
            .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some("p001"))
            .unwrap();
        let c = nr.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(nr.zone.as_deref(), Some("z1"));
        assert_eq!(nr.node_name.as_deref(), Some("n1"));

        // Planning from nothing creates three owned, labelled slices.
        let plan = plan_slices(&s, &[], slices.clone());
        assert_eq!(plan.create.len(), 3);
        let sl = &plan.create[0];
        let l = sl.metadata.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_SERVICE_NAME], "web");
        assert_eq!(l[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(l["tier"], "front");
        let o = &sl.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.uid.as_str(), o.controller),
            ("Service", "svc-uid", Some(true))
        );
        assert_eq!(sl.metadata.generate_name.as_deref(), Some("web-"));

        // Re-planning over what exists changes nothing; a shrink deletes the extra slice.
        let existing: Vec<discovery::EndpointSlice> = plan
            .create
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s.metadata.name = Some(format!("web-{i}"));
                s
            })
            .collect();
        let again = plan_slices(&s, &existing, slices.clone());
        assert!(
            again.create.is_empty() && again.update.is_empty() && again.delete.is_empty(),
            "{again:?}"
        );
        let shrunk = plan_slices(&s, &existing, slices[..2].to_vec());
        assert_eq!(shrunk.delete, ["web-2"]);
        // No endpoints at all: the first slice becomes the empty placeholder.
        let none = plan_slices(&s, &existing, vec![]);
        assert_eq!(none.delete, ["web-1", "web-2"]);
        assert_eq!(none.update.len(), 1);
        assert!(none.update[0].endpoints.is_empty() && none.create.is_empty());
        let fresh = plan_slices(&s, &[], vec![]);
        assert_eq!(fresh.create.len(), 1);
        assert!(fresh.create[0].endpoints.is_empty());
    }

    #[test]
    fn no_selector_is_not_ours() {
        let s = svc(
            serde_json::json!({"metadata": {"name": "kubernetes"}, "spec": {"ports": [{"port": 443}]}}),
        );
        assert!(selector(&s).is_none());
        let s = svc(serde_json::json!({"metadata": {"name": "x"}, "spec": {"selector": {}}}));
        assert!(selector(&s).is_none());
        assert!(selector(&web()).is_some());
    }
}
