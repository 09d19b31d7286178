//! The h8s kinds from the seeds: `Network` (core `v1`, cluster-scoped) and the
//! `network` field h8s adds to `Namespace.spec`.
//!
//! The seeds' manifests apply verbatim:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Network
//! metadata: {name: net1}
//! spec:
//!   tenantID: 065f210a2ca9442aad898ab129426350
//!   subnets:
//!     subnet1: {cidr: 192.168.0.0/24, gateway: 192.168.0.1}
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// A tenant's isolated network: one L2 segment with its subnets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    /// Standard object metadata (cluster-scoped: no namespace).
    pub metadata: ObjectMeta,
    /// What the tenant asked for.
    pub spec: NetworkSpec,
    /// What the network controller made of it.
    pub status: Option<NetworkStatus>,
}

/// The desired state of a [`Network`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The tenant (Keystone project) owning the network.
    #[serde(rename = "tenantID", default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Subnets by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subnets: BTreeMap<String, Subnet>,
    /// The network's id in the provider that realises it (set by the
    /// controller when the user leaves it empty).
    #[serde(
        rename = "providerNetworkID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_network_id: Option<String>,
}

/// One subnet of a [`Network`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// The subnet in CIDR notation, e.g. `192.168.0.0/24`.
    pub cidr: String,
    /// The gateway address, inside `cidr`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

/// The observed state of a [`Network`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// One of [`NetworkPhase`]'s names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// A CamelCase reason for the phase (set when `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The cluster-wide IPAM of the Network: every pod address handed out, by address.
    /// Node agents add and remove entries with compare-and-swap writes of the status
    /// (`resourceVersion` preconditions), so an address is unique within the Network
    /// across nodes and concurrent starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocations: BTreeMap<String, IpAllocation>,
}

/// Who holds one address of a Network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAllocation {
    /// The node the pod runs on (its agent programs the address's forwarding entries).
    pub node: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid (a new pod of the same name gets a new address).
    #[serde(rename = "podUID")]
    pub pod_uid: String,
}

/// A Namespace as the network controller and node agents read it: metadata and the
/// `spec.network` h8s adds (k8s-openapi's `Namespace` drops that field).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetNamespace {
    /// Standard metadata.
    pub metadata: ObjectMeta,
    /// `spec`, with `network`.
    #[serde(default)]
    pub spec: NetNamespaceSpec,
}

/// The part of a Namespace's spec networks read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetNamespaceSpec {
    /// The Network its pods join; empty means the tenant's default Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl k8s_openapi::Resource for NetNamespace {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Namespace";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "namespaces";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NetNamespace {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl NetNamespace {
    /// Its tenant (the [`TENANT_LABEL`]).
    pub fn tenant(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TENANT_LABEL))
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }

    /// The Network its pods join: `spec.network`, else [`SYSTEM_PODS_NETWORK`] for
    /// [`SYSTEM_PODS_NAMESPACE`], else its tenant's default Network.
    pub fn network(&self) -> String {
        match self.spec.network.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => implicit_network(self.metadata.name.as_deref(), self.tenant()),
        }
    }
}

/// The phases a Network goes through, as Hypernetes named them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPhase {
    /// Accepted, not yet realised.
    Pending,
    /// Being set up by the provider.
    Initializing,
    /// Usable.
    Active,
    /// The provider failed to set it up.
    Failed,
    /// Being deleted.
    Terminating,
}

impl NetworkPhase {
    /// Every phase.
    pub const ALL: [NetworkPhase; 5] = [
        Self::Pending,
        Self::Initializing,
        Self::Active,
        Self::Failed,
        Self::Terminating,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Initializing => "Initializing",
            Self::Active => "Active",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A list of Networks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkList {
    /// List metadata.
    pub metadata: ListMeta,
    /// The networks.
    pub items: Vec<Network>,
}

// Written by hand so that apiVersion and kind are always on the wire and
// checked on the way in, as k8s-openapi does for its own kinds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkWire {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: NetworkSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<NetworkStatus>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkListWire {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Network>,
}

fn check_type<E: serde::de::Error>(
    api_version: Option<&str>,
    kind: Option<&str>,
    want_kind: &str,
) -> Result<(), E> {
    if let Some(v) = api_version {
        if v != "v1" {
            return Err(E::custom(format!("expected apiVersion \"v1\", got {v:?}")));
        }
    }
    if let Some(k) = kind {
        if k != want_kind {
            return Err(E::custom(format!("expected kind {want_kind:?}, got {k:?}")));
        }
    }
    Ok(())
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        NetworkWire {
            api_version: Some("v1".into()),
            kind: Some("Network".into()),
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = NetworkWire::deserialize(d)?;
        check_type(w.api_version.as_deref(), w.kind.as_deref(), "Network")?;
        Ok(Network {
            metadata: w.metadata,
            spec: w.spec,
            status: w.status,
        })
    }
}

impl Serialize for NetworkList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        NetworkListWire {
            api_version: Some("v1".into()),
            kind: Some("NetworkList".into()),
            metadata: self.metadata.clone(),
            items: self.items.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NetworkList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = NetworkListWire::deserialize(d)?;
        check_type(w.api_version.as_deref(), w.kind.as_deref(), "NetworkList")?;
        Ok(NetworkList {
            metadata: w.metadata,
            items: w.items,
        })
    }
}

impl k8s_openapi::Resource for Network {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Network";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "networks";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::ListableResource for Network {
    const LIST_KIND: &'static str = "NetworkList";
}

impl k8s_openapi::Metadata for Network {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The seeds' Service type for "a load balancer made by the network provider" (Hypernetes'
/// Neutron LBaaS): in h8s a pool address answered by the nodes and forwarded into the
/// Service's Network like a LoadBalancer's, without node ports.
pub const NETWORK_PROVIDER: &str = "NetworkProvider";

/// Whether a Service of type `ty` gets a load balancer address: `LoadBalancer` and the
/// seeds' [`NETWORK_PROVIDER`].
pub fn load_balancer_type(ty: Option<&str>) -> bool {
    matches!(ty, Some("LoadBalancer") | Some(NETWORK_PROVIDER))
}

/// The Network a Namespace is attached to (`spec.network`, the field h8s
/// adds to Namespace), from the Namespace's JSON form. `None` when the
/// Namespace uses its tenant's default Network ([`effective_network`]).
pub fn namespace_network(namespace: &serde_json::Value) -> Option<&str> {
    namespace
        .pointer("/spec/network")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The label carrying a Namespace's tenant (set only by the server).
pub const TENANT_LABEL: &str = "tenancy.h8s.io/tenant";

/// The finalizer the network controller puts on every Network: it stays until no
/// Namespace uses the Network.
pub const NETWORK_FINALIZER: &str = "networks.h8s.io/namespaces";

/// Name of the default Network of namespaces without a tenant.
pub const SYSTEM_NETWORK: &str = "default";

/// The cluster's system Network: where the system pods (webhooks, aggregated API servers,
/// metrics) run, and the one Network the API server's host reaches (docs/network.md,
/// "The system Network"). The server creates it at start; no tenant owns or joins it.
pub const SYSTEM_PODS_NETWORK: &str = "system";

/// The subnet the server gives [`SYSTEM_PODS_NETWORK`] when it creates it (apart from
/// [`DEFAULT_NETWORK_CIDR`]: the host routes this one).
pub const SYSTEM_PODS_CIDR: &str = "10.87.0.0/16";

/// The namespace whose pods join [`SYSTEM_PODS_NETWORK`] without `spec.network`.
pub const SYSTEM_PODS_NAMESPACE: &str = "kube-system";

/// The Network of a namespace without `spec.network`: [`SYSTEM_PODS_NETWORK`] for
/// [`SYSTEM_PODS_NAMESPACE`] (when it has no tenant), else its tenant's default Network.
pub fn implicit_network(namespace: Option<&str>, tenant: Option<&str>) -> String {
    let tenant = tenant.filter(|t| !t.is_empty());
    if namespace == Some(SYSTEM_PODS_NAMESPACE) && tenant.is_none() {
        return SYSTEM_PODS_NETWORK.into();
    }
    default_network_name(tenant)
}

/// Prefix of the names of tenants' default Networks.
pub const TENANT_NETWORK_PREFIX: &str = "tenant-";

/// The subnet of every default Network (tenants' default Networks overlap freely: each is
/// its own segment).
pub const DEFAULT_NETWORK_CIDR: &str = "10.88.0.0/16";

/// The name of the default Network of `tenant` (`None`: namespaces without a tenant):
/// `default`, or `tenant-<tenant>` when that is a DNS label, else `tenant-` and a stable
/// hash of the tenant. Validation reserves these names for their tenant.
pub fn default_network_name(tenant: Option<&str>) -> String {
    let Some(t) = tenant.filter(|t| !t.is_empty()) else {
        return SYSTEM_NETWORK.into();
    };
    let plain = format!("{TENANT_NETWORK_PREFIX}{t}");
    let label_ok = plain.len() <= 63
        && plain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !plain.ends_with('-');
    if label_ok {
        return plain;
    }
    // FNV-1a: stable across processes and releases.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in t.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{TENANT_NETWORK_PREFIX}h{h:016x}")
}

/// A Namespace's tenant (its [`TENANT_LABEL`]), from its JSON form.
pub fn namespace_tenant(namespace: &serde_json::Value) -> Option<&str> {
    namespace
        .pointer("/metadata/labels")
        .and_then(|l| l.get(TENANT_LABEL))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The Network a Namespace's pods join: `spec.network`, else [`implicit_network`].
pub fn effective_network(namespace: &serde_json::Value) -> String {
    match namespace_network(namespace) {
        Some(n) => n.to_string(),
        None => implicit_network(
            namespace
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str),
            namespace_tenant(namespace),
        ),
    }
}

/// The segment id (VXLAN VNI) a Network's `spec.providerNetworkID` names, if it is one:
/// a decimal 1 ..= 2^24-1.
pub fn segment_id(provider_network_id: &str) -> Option<u32> {
    if provider_network_id.is_empty()
        || provider_network_id.starts_with('0')
        || provider_network_id.len() > 8
        || !provider_network_id.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let v: u32 = provider_network_id.parse().ok()?;
    (1..(1 << 24)).contains(&v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_manifest_round_trips() {
        let seed = json!({
            "apiVersion": "v1", "kind": "Network",
            "metadata": {"name": "net1"},
            "spec": {"tenantID": "065f210a2ca9442aad898ab129426350",
                     "subnets": {"subnet1": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.1"}}}
        });
        let n: Network = serde_json::from_value(seed.clone()).unwrap();
        assert_eq!(n.metadata.name.as_deref(), Some("net1"));
        assert_eq!(
            n.spec.tenant_id.as_deref(),
            Some("065f210a2ca9442aad898ab129426350")
        );
        assert_eq!(n.spec.subnets["subnet1"].gateway, "192.168.0.1");
        assert_eq!(serde_json::to_value(&n).unwrap(), seed);
    }

    #[test]
    fn wrong_kind_is_refused() {
        let err = serde_json::from_value::<Network>(json!({"apiVersion": "v1", "kind": "Pod"}))
            .unwrap_err();
        assert!(err.to_string().contains("expected kind"), "{err}");
        assert!(serde_json::from_value::<Network>(json!({"apiVersion": "apps/v1"})).is_err());
    }

    #[test]
    fn list_and_phases() {
        let l = NetworkList {
            items: vec![Network::default()],
            ..Default::default()
        };
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["kind"], "NetworkList");
        assert_eq!(v["items"][0]["kind"], "Network");
        for p in NetworkPhase::ALL {
            assert_eq!(NetworkPhase::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn default_networks_and_segment_ids() {
        assert_eq!(default_network_name(None), "default");
        assert_eq!(default_network_name(Some("")), "default");
        assert_eq!(default_network_name(Some("acme")), "tenant-acme");
        let odd = default_network_name(Some("Acme_Corp"));
        assert!(odd.starts_with("tenant-h") && odd.len() == 24, "{odd}");
        assert_eq!(odd, default_network_name(Some("Acme_Corp")));
        assert_ne!(odd, default_network_name(Some("Acme_Corq")));
        let long = "a".repeat(63);
        assert!(default_network_name(Some(&long)).len() <= 63);
        let ns = json!({"metadata": {"name": "a", "labels": {TENANT_LABEL: "acme"}}, "spec": {}});
        assert_eq!(effective_network(&ns), "tenant-acme");
        let ns = json!({"metadata": {"name": "a", "labels": {TENANT_LABEL: "acme"}}, "spec": {"network": "n1"}});
        assert_eq!(effective_network(&ns), "n1");
        assert_eq!(
            effective_network(&json!({"metadata": {"name": "a"}})),
            "default"
        );
        assert_eq!(segment_id("100"), Some(100));
        assert_eq!(segment_id("16777215"), Some(16777215));
        for bad in ["", "0", "16777216", "-1", "1e3", "abc", "00000001"] {
            assert_eq!(segment_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn kube_system_joins_the_system_network_unless_it_names_one() {
        let ks = json!({"metadata": {"name": "kube-system"}});
        assert_eq!(effective_network(&ks), SYSTEM_PODS_NETWORK);
        let named = json!({"metadata": {"name": "kube-system"}, "spec": {"network": "n1"}});
        assert_eq!(effective_network(&named), "n1");
        // A tenant's namespace of that name (not possible through the guard) stays its own.
        let t = json!({"metadata": {"name": "kube-system", "labels": {TENANT_LABEL: "acme"}}});
        assert_eq!(effective_network(&t), "tenant-acme");
        assert_eq!(
            effective_network(&json!({"metadata": {"name": "x"}})),
            "default"
        );
        assert_eq!(implicit_network(Some("kube-system"), None), "system");
    }

    #[test]
    fn namespace_network_field() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ns1"}, "spec": {"network": "net1"}});
        assert_eq!(namespace_network(&ns), Some("net1"));
        assert_eq!(namespace_network(&json!({"spec": {}})), None);
        // k8s-openapi's Namespace ignores the extra field, so typed code that
        // round-trips a Namespace must keep the JSON, not the typed value.
        let typed: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(ns).unwrap();
        assert_eq!(typed.metadata.name.as_deref(), Some("ns1"));
    }
}
