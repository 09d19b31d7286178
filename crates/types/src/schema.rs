//! The OpenAPI schemas of every served kind, built once: k8s-openapi's
//! schemas (descriptions, types, required fields) plus what they lack and
//! kube-apiserver publishes — `x-kubernetes-group-version-kind` on kinds,
//! the patch strategies and merge keys of strategic merge patch, list types
//! for server-side apply — plus the h8s kinds (`Network`,
//! `Namespace.spec.network`).
//!
//! [`Node`] walks them by field, so the patch code can ask "how does
//! `spec.containers` merge?" and strict decoding "is `spec.foo` a field?".

use crate::resources::{self, Resource};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

const REF_PREFIX: &str = "#/components/schemas/";

/// All definitions, by OpenAPI name (`io.k8s.api.core.v1.Pod`).
pub struct Schemas {
    defs: Map<String, Value>,
    kinds: HashMap<(String, String, String), String>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(build);

/// The schemas, built on first use (a few milliseconds).
pub fn schemas() -> &'static Schemas {
    &SCHEMAS
}

impl Schemas {
    /// Every definition, as `components.schemas` publishes them.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.defs
    }

    /// The definition name of a kind (`apps`, `v1`, `Deployment` →
    /// `io.k8s.api.apps.v1.Deployment`).
    pub fn definition_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(String::as_str)
    }

    /// The root schema of a kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<Node<'_>> {
        let name = self.definition_name(group, version, kind)?;
        self.named(name)
    }

    /// The schema of a served resource's kind.
    pub fn resource(&self, r: &Resource) -> Option<Node<'_>> {
        self.kind(r.group, r.version, r.kind)
    }

    /// A definition by name.
    pub fn named(&self, name: &str) -> Option<Node<'_>> {
        self.defs.get(name).map(|value| Node {
            schemas: self,
            value,
        })
    }
}

/// A schema in the tree, unresolved: the extensions of a field live on the
/// field's own schema, its shape on what that refers to.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    schemas: &'a Schemas,
    value: &'a Value,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.value)
    }
}

impl<'a> Node<'a> {
    /// The raw schema.
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// Follows `$ref` and single-element `allOf` (how k8s-openapi attaches
    /// a description to a reference) to the schema that has the shape.
    pub fn resolved(self) -> Node<'a> {
        let mut cur = self.value;
        for _ in 0..16 {
            if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
                match r
                    .strip_prefix(REF_PREFIX)
                    .and_then(|n| self.schemas.defs.get(n))
                {
                    Some(v) => cur = v,
                    None => break,
                }
            } else if let Some([one]) = cur
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                cur = one;
            } else {
                break;
            }
        }
        Node {
            schemas: self.schemas,
            value: cur,
        }
    }

    /// The definition this schema refers to (`io.k8s.api.core.v1.PodSpec`),
    /// following `$ref` and single-element `allOf`.
    pub fn definition_name(&self) -> Option<&'a str> {
        let mut cur = self.value;
        let mut name = None;
        for _ in 0..16 {
            if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
                let n = r.strip_prefix(REF_PREFIX)?;
                name = Some(n);
                cur = self.schemas.defs.get(n)?;
            } else if let Some([one]) = cur
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                cur = one;
            } else {
                break;
            }
        }
        // The names of a definition's own schema are the map keys; a root
        // Node made by `named`/`kind` carries no $ref, so look it up.
        name.or_else(|| {
            self.schemas
                .defs
                .iter()
                .find(|(_, v)| std::ptr::eq(*v, self.value))
                .map(|(k, _)| k.as_str())
        })
    }

    fn ext(&self, key: &str) -> Option<&'a Value> {
        self.value
            .get(key)
            .or_else(|| self.resolved().value.get(key))
    }

    /// The `type` (`object`, `array`, `string`…), if any.
    pub fn type_name(&self) -> Option<&'a str> {
        self.resolved().value.get("type").and_then(Value::as_str)
    }

    /// A named property of an object schema.
    pub fn property(&self, name: &str) -> Option<Node<'a>> {
        let r = self.resolved();
        r.value
            .get("properties")
            .and_then(|p| p.get(name))
            .map(|value| Node {
                schemas: self.schemas,
                value,
            })
    }

    /// Names of the properties, when the schema lists them.
    pub fn property_names(&self) -> Vec<&'a str> {
        self.resolved()
            .value
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The items of an array schema.
    pub fn items(&self) -> Option<Node<'a>> {
        let r = self.resolved();
        r.value.get("items").map(|value| Node {
            schemas: self.schemas,
            value,
        })
    }

    /// The value schema of a map (`additionalProperties`).
    pub fn additional_properties(&self) -> Option<Node<'a>> {
        let r = self.resolved();
        r.value
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .map(|value| Node {
                schemas: self.schemas,
                value,
            })
    }

    /// True for schemas that accept any object (no properties and no map
    /// values listed: RawExtension, FieldsV1, free-form JSON).
    pub fn is_free_form(&self) -> bool {
        let r = self.resolved().value;
        r.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || (r.get("properties").is_none() && r.get("additionalProperties").is_none())
    }

    /// `x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`).
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-patch-merge-key` (`name` for containers).
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`).
    pub fn list_type(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-list-type").and_then(Value::as_str)
    }

    /// `x-kubernetes-list-map-keys`.
    pub fn list_map_keys(&self) -> Vec<&'a str> {
        self.ext("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `x-kubernetes-map-type` (`atomic`, `granular`).
    pub fn map_type(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str)
    }

    /// Walks a dotted path of property names (`spec.template.spec`).
    pub fn path(&self, dotted: &str) -> Option<Node<'a>> {
        dotted.split('.').try_fold(*self, |n, seg| {
            n.property(seg)
                .or_else(|| n.items().and_then(|i| i.property(seg)))
        })
    }
}

/// Patch strategies and list types kube-apiserver publishes for the fields
/// of the served kinds: (definition, property, patch strategy, merge key,
/// list type, list map keys).
type PatchMeta = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
);

const M: Option<&str> = Some("merge");
const MAP: Option<&str> = Some("map");
const ATOMIC: Option<&str> = Some("atomic");
const SET: Option<&str> = Some("set");

const PATCH_META: &[PatchMeta] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        Some("merge,retainKeys"),
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        M,
        Some("ip"),
        MAP,
        &["ip"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        M,
        Some("topologyKey"),
        MAP,
        &["topologyKey", "whenUnsatisfiable"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        Some("merge,retainKeys"),
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "tolerations",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        M,
        Some("containerPort"),
        MAP,
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "env",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        M,
        Some("mountPath"),
        MAP,
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        M,
        Some("devicePath"),
        MAP,
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "command",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "args",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        M,
        Some("containerPort"),
        MAP,
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        M,
        Some("mountPath"),
        MAP,
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        M,
        Some("devicePath"),
        MAP,
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        M,
        Some("ip"),
        MAP,
        &["ip"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        M,
        Some("ip"),
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        M,
        Some("port"),
        MAP,
        &["port", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "clusterIPs",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        None,
        None,
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        Some("merge,retainKeys"),
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "succeeded",
        None,
        None,
        SET,
        &[],
    ),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "failed",
        None,
        None,
        SET,
        &[],
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", M, None, SET, &[]),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        M,
        Some("name"),
        MAP,
        &["name"],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        M,
        None,
        SET,
        &[],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        M,
        Some("uid"),
        MAP,
        &["uid"],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        Some("retainKeys"),
        None,
        None,
        &[],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        M,
        Some("type"),
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.batch.v1.CronJobStatus",
        "active",
        None,
        None,
        ATOMIC,
        &[],
    ),
    ("io.k8s.api.rbac.v1.Role", "rules", None, None, ATOMIC, &[]),
    (
        "io.k8s.api.rbac.v1.ClusterRole",
        "rules",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.rbac.v1.RoleBinding",
        "subjects",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        "subjects",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "matchExpressions",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        M,
        Some("type"),
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
        "conditions",
        None,
        None,
        MAP,
        &["type"],
    ),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
        "usages",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.discovery.v1.EndpointSlice",
        "endpoints",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.discovery.v1.EndpointSlice",
        "ports",
        None,
        None,
        ATOMIC,
        &[],
    ),
    (
        "io.k8s.api.node.v1.Scheduling",
        "tolerations",
        None,
        None,
        ATOMIC,
        &[],
    ),
];

/// Maps that Kubernetes replaces whole in server-side apply.
const ATOMIC_MAPS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
];

/// Types marked `+structType=atomic`: replaced whole, published with
/// `x-kubernetes-map-type: atomic` on their definition.
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.ScopeSelector",
    "io.k8s.api.rbac.v1.RoleRef",
];

/// Definition names of the kinds h8s adds.
pub const NETWORK_DEF: &str = "io.h8s.api.core.v1.Network";
const NETWORK_LIST_DEF: &str = "io.h8s.api.core.v1.NetworkList";

macro_rules! kinds {
    ($g:ident; $( ($group:expr, $version:expr, $kind:expr, $ty:ty) ),* $(,)?) => {{
        let v: Vec<(&str, &str, &str, schemars::Schema)> =
            vec![$( ($group, $version, $kind, $g.subschema_for::<$ty>()) ),*];
        v
    }};
}

fn build() -> Schemas {
    use k8s_openapi::api::{
        admissionregistration::v1 as admreg, apps::v1 as apps, authentication::v1 as authn,
        authorization::v1 as authz, autoscaling::v1 as autoscaling,
        autoscaling::v2 as autoscaling2, batch::v1 as batch, certificates::v1 as certificates,
        coordination::v1 as coord, core::v1 as core, discovery::v1 as discovery,
        events::v1 as events, flowcontrol::v1 as flowcontrol, networking::v1 as net,
        node::v1 as node, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
        storage::v1 as storage,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    let mut g = SchemaSettings::openapi3().into_generator();
    let roots = kinds!(g;
        ("", "v1", "Namespace", core::Namespace),
        ("", "v1", "Pod", core::Pod),
        ("", "v1", "Service", core::Service),
        ("", "v1", "Endpoints", core::Endpoints),
        ("", "v1", "ConfigMap", core::ConfigMap),
        ("", "v1", "Secret", core::Secret),
        ("", "v1", "ServiceAccount", core::ServiceAccount),
        ("", "v1", "Event", core::Event),
        ("", "v1", "Node", core::Node),
        ("", "v1", "PersistentVolume", core::PersistentVolume),
        ("", "v1", "PersistentVolumeClaim", core::PersistentVolumeClaim),
        ("", "v1", "ResourceQuota", core::ResourceQuota),
        ("", "v1", "LimitRange", core::LimitRange),
        ("", "v1", "ReplicationController", core::ReplicationController),
        ("", "v1", "Binding", core::Binding),
        ("", "v1", "ComponentStatus", core::ComponentStatus),
        ("", "v1", "PodTemplate", core::PodTemplate),
        ("autoscaling", "v1", "HorizontalPodAutoscaler", autoscaling::HorizontalPodAutoscaler),
        ("autoscaling", "v2", "HorizontalPodAutoscaler", autoscaling2::HorizontalPodAutoscaler),
        ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", flowcontrol::FlowSchema),
        ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", flowcontrol::PriorityLevelConfiguration),
        ("networking.k8s.io", "v1", "Ingress", net::Ingress),
        ("networking.k8s.io", "v1", "IngressClass", net::IngressClass),
        ("networking.k8s.io", "v1", "IPAddress", net::IPAddress),
        ("networking.k8s.io", "v1", "ServiceCIDR", net::ServiceCIDR),
        ("storage.k8s.io", "v1", "CSIDriver", storage::CSIDriver),
        ("storage.k8s.io", "v1", "CSINode", storage::CSINode),
        ("storage.k8s.io", "v1", "CSIStorageCapacity", storage::CSIStorageCapacity),
        ("apps", "v1", "ControllerRevision", apps::ControllerRevision),
        ("apps", "v1", "DaemonSet", apps::DaemonSet),
        ("apps", "v1", "Deployment", apps::Deployment),
        ("apps", "v1", "ReplicaSet", apps::ReplicaSet),
        ("apps", "v1", "StatefulSet", apps::StatefulSet),
        ("authentication.k8s.io", "v1", "SelfSubjectReview", authn::SelfSubjectReview),
        ("authentication.k8s.io", "v1", "TokenRequest", authn::TokenRequest),
        ("authentication.k8s.io", "v1", "TokenReview", authn::TokenReview),
        ("certificates.k8s.io", "v1", "CertificateSigningRequest", certificates::CertificateSigningRequest),
        ("discovery.k8s.io", "v1", "EndpointSlice", discovery::EndpointSlice),
        ("events.k8s.io", "v1", "Event", events::Event),
        ("node.k8s.io", "v1", "RuntimeClass", node::RuntimeClass),
        ("policy", "v1", "PodDisruptionBudget", policy::PodDisruptionBudget),
        ("scheduling.k8s.io", "v1", "PriorityClass", scheduling::PriorityClass),
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", admreg::MutatingWebhookConfiguration),
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", admreg::ValidatingWebhookConfiguration),
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", admreg::ValidatingAdmissionPolicy),
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", admreg::ValidatingAdmissionPolicyBinding),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition),
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", authz::SelfSubjectAccessReview),
        ("authorization.k8s.io", "v1", "SubjectAccessReview", authz::SubjectAccessReview),
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", authz::LocalSubjectAccessReview),
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", authz::SelfSubjectRulesReview),
        ("autoscaling", "v1", "Scale", autoscaling::Scale),
        ("batch", "v1", "CronJob", batch::CronJob),
        ("batch", "v1", "Job", batch::Job),
        ("coordination.k8s.io", "v1", "Lease", coord::Lease),
        ("networking.k8s.io", "v1", "NetworkPolicy", net::NetworkPolicy),
        ("policy", "v1", "Eviction", policy::Eviction),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::ClusterRoleBinding),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::ClusterRole),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::RoleBinding),
        ("rbac.authorization.k8s.io", "v1", "Role", rbac::Role),
        ("storage.k8s.io", "v1", "StorageClass", storage::StorageClass),
        ("storage.k8s.io", "v1", "VolumeAttachment", storage::VolumeAttachment),
        ("meta.k8s.io", "v1", "Status", meta::Status),
        ("meta.k8s.io", "v1", "DeleteOptions", meta::DeleteOptions),
        ("meta.k8s.io", "v1", "WatchEvent", meta::WatchEvent<serde_json::Value>),
        ("meta.k8s.io", "v1", "APIResourceList", meta::APIResourceList),
        ("meta.k8s.io", "v1", "ListMeta", meta::ListMeta),
        ("meta.k8s.io", "v1", "Patch", meta::Patch),
    );
    let mut defs: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    let mut kinds = HashMap::new();
    for (group, version, kind, schema) in roots {
        let Some(name) = schema
            .as_value()
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .map(str::to_string)
        else {
            continue;
        };
        // meta.k8s.io kinds are published under the empty group with every
        // version that uses them; the GVK extension keeps kube's shape.
        let gvk = if group == "meta.k8s.io" {
            json!([{"group": "", "version": "v1", "kind": kind}])
        } else {
            json!([{"group": group, "version": version, "kind": kind}])
        };
        let is_kind =
            !(group == "meta.k8s.io" && matches!(kind, "ListMeta" | "APIResourceList" | "Patch"));
        if let Some(Value::Object(d)) = defs.get_mut(&name).filter(|_| is_kind) {
            d.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
        kinds.insert(
            (group.to_string(), version.to_string(), kind.to_string()),
            name,
        );
    }
    // k8s-openapi models lists generically (List<T>) without a schema: build
    // `<Kind>List` definitions next to their kinds, as kube publishes them.
    for r in resources::all()
        .iter()
        .filter(|r| r.is_stored() && !r.h8s_kind)
    {
        let Some(item) = kinds
            .get(&(
                r.group.to_string(),
                r.version.to_string(),
                r.kind.to_string(),
            ))
            .cloned()
        else {
            continue;
        };
        let name = format!("{item}List");
        defs.insert(
            name.clone(),
            list_schema(&item, r.group, r.version, r.list_kind),
        );
        kinds.insert(
            (
                r.group.to_string(),
                r.version.to_string(),
                r.list_kind.to_string(),
            ),
            name,
        );
    }
    // SelfSubjectReview v1beta1 (kubectl 1.27) has v1's shape.
    if let Some(mut d) = defs
        .get("io.k8s.api.authentication.v1.SelfSubjectReview")
        .cloned()
    {
        d["x-kubernetes-group-version-kind"] = json!([{"group": "authentication.k8s.io", "version": "v1beta1", "kind": "SelfSubjectReview"}]);
        let name = "io.k8s.api.authentication.v1beta1.SelfSubjectReview".to_string();
        defs.insert(name.clone(), d);
        kinds.insert(
            (
                "authentication.k8s.io".into(),
                "v1beta1".into(),
                "SelfSubjectReview".into(),
            ),
            name,
        );
    }
    for (def, prop, strategy, key, list_type, map_keys) in PATCH_META {
        if let Some(Value::Object(p)) = defs
            .get_mut(*def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
        {
            if let Some(s) = strategy {
                p.insert("x-kubernetes-patch-strategy".into(), json!(s));
            }
            if let Some(k) = key {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
            }
            if let Some(t) = list_type {
                p.insert("x-kubernetes-list-type".into(), json!(t));
            }
            if !map_keys.is_empty() {
                p.insert("x-kubernetes-list-map-keys".into(), json!(map_keys));
            }
        }
    }
    for (def, prop) in ATOMIC_MAPS {
        if let Some(Value::Object(p)) = defs
            .get_mut(*def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
        {
            p.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    for def in ATOMIC_STRUCTS {
        if let Some(Value::Object(d)) = defs.get_mut(*def) {
            d.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    add_h8s(&mut defs, &mut kinds);
    add_apiregistration(&mut defs, &mut kinds);
    Schemas { defs, kinds }
}

fn list_schema(item: &str, group: &str, version: &str, list_kind: &str) -> Value {
    let kind = list_kind.strip_suffix("List").unwrap_or(list_kind);
    json!({
        "description": format!("{list_kind} is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}], "description": "Standard list metadata.", "default": {}},
            "items": {"description": format!("List of {kind} objects."), "type": "array", "items": {"$ref": format!("{REF_PREFIX}{item}")}},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": list_kind}],
    })
}

fn add_h8s(defs: &mut Map<String, Value>, kinds: &mut HashMap<(String, String, String), String>) {
    if let Some(Value::Object(p)) = defs
        .get_mut("io.k8s.api.core.v1.NamespaceSpec")
        .and_then(|d| d.get_mut("properties"))
    {
        p.insert(
            "network".into(),
            json!({"description": "Network is the name of the h8s Network this namespace's pods attach to. Empty means the default cluster network. Cannot be changed once set.", "type": "string"}),
        );
    }
    let meta = |d: &str| json!({"allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.{d}")}], "description": "Standard object's metadata."});
    let type_meta = json!({
        "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
        "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
    });
    let mut network_props = type_meta.as_object().cloned().unwrap_or_default();
    network_props.insert("metadata".into(), meta("ObjectMeta"));
    network_props.insert("spec".into(), json!({"allOf": [{"$ref": format!("{REF_PREFIX}io.h8s.api.core.v1.NetworkSpec")}], "description": "Spec is the desired state of the network."}));
    network_props.insert("status".into(), json!({"allOf": [{"$ref": format!("{REF_PREFIX}io.h8s.api.core.v1.NetworkStatus")}], "description": "Status is the observed state of the network."}));
    defs.insert(NETWORK_DEF.into(), json!({
        "description": "Network is an isolated tenant network (an h8s kind): one L2 segment with its subnets. Namespaces attach to it through spec.network.",
        "type": "object",
        "properties": network_props,
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Network"}],
    }));
    defs.insert("io.h8s.api.core.v1.NetworkSpec".into(), json!({
        "description": "NetworkSpec is the desired state of a Network.",
        "type": "object",
        "properties": {
            "tenantID": {"description": "TenantID is the tenant (Keystone project) that owns the network. Cannot be changed once set.", "type": "string"},
            "subnets": {"description": "Subnets of the network by name. Subnets of one network may not overlap; existing subnets cannot be changed.", "type": "object",
                "additionalProperties": {"allOf": [{"$ref": format!("{REF_PREFIX}io.h8s.api.core.v1.Subnet")}], "default": {}}},
            "providerNetworkID": {"description": "ProviderNetworkID is the network's segment id (VXLAN VNI, 1-16777215, decimal). Left empty, the network controller allocates one unique in the cluster; set, the network attaches to that existing segment (only a segment of the same tenant). Cannot be changed once set.", "type": "string"},
        },
    }));
    defs.insert("io.h8s.api.core.v1.Subnet".into(), json!({
        "description": "Subnet is one IP subnet of a Network.",
        "type": "object",
        "required": ["cidr"],
        "properties": {
            "cidr": {"description": "CIDR of the subnet, e.g. 192.168.0.0/24.", "type": "string"},
            "gateway": {"description": "Gateway address, inside the CIDR.", "type": "string"},
        },
    }));
    defs.insert("io.h8s.api.core.v1.NetworkStatus".into(), json!({
        "description": "NetworkStatus is the observed state of a Network.",
        "type": "object",
        "properties": {
            "phase": {"description": "Phase is one of Pending, Initializing, Active, Failed, Terminating.", "type": "string"},
            "reason": {"description": "Reason is a CamelCase reason for the phase, set when it is Failed.", "type": "string"},
            "message": {"description": "Message explains the phase in words.", "type": "string"},
            "allocations": {"description": "Allocations are the pod addresses handed out on the network, by address (the cluster-wide IPAM, written by node agents with resourceVersion preconditions).", "type": "object",
                "additionalProperties": {"allOf": [{"$ref": format!("{REF_PREFIX}io.h8s.api.core.v1.IPAllocation")}], "default": {}}},
        },
    }));
    defs.insert(
        "io.h8s.api.core.v1.IPAllocation".into(),
        json!({
            "description": "IPAllocation says who holds one address of a Network.",
            "type": "object",
            "required": ["node", "namespace", "pod", "podUID"],
            "properties": {
                "node": {"description": "Node the pod runs on.", "type": "string"},
                "namespace": {"description": "Namespace of the pod.", "type": "string"},
                "pod": {"description": "Name of the pod.", "type": "string"},
                "podUID": {"description": "UID of the pod.", "type": "string"},
            },
        }),
    );
    let mut list_props = type_meta.as_object().cloned().unwrap_or_default();
    list_props.insert("metadata".into(), meta("ListMeta"));
    list_props.insert("items".into(), json!({"description": "Items is the list of Networks.", "type": "array", "items": {"$ref": format!("{REF_PREFIX}{NETWORK_DEF}")}}));
    defs.insert(NETWORK_LIST_DEF.into(), json!({
        "description": "NetworkList is a list of Networks.",
        "type": "object",
        "required": ["items"],
        "properties": list_props,
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "NetworkList"}],
    }));
    kinds.insert(
        ("".into(), "v1".into(), "Network".into()),
        NETWORK_DEF.into(),
    );
    kinds.insert(
        ("".into(), "v1".into(), "NetworkList".into()),
        NETWORK_LIST_DEF.into(),
    );
    // tenancy.h8s.io/v1: Tenant, User and the users/password request.
    for (name, kind, schema) in crate::tenancy::schemas() {
        if let Some(kind) = kind {
            kinds.insert(
                (
                    crate::tenancy::GROUP.into(),
                    crate::tenancy::VERSION.into(),
                    kind.into(),
                ),
                name.clone(),
            );
        }
        defs.insert(name, schema);
    }
}

/// `apiregistration.k8s.io/v1` APIService (kube-aggregator's types, which k8s-openapi
/// does not carry), as kube-apiserver publishes them.
fn add_apiregistration(
    defs: &mut Map<String, Value>,
    kinds: &mut HashMap<(String, String, String), String>,
) {
    const P: &str = "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1";
    let r = |d: &str| format!("{REF_PREFIX}{P}.{d}");
    let meta = |d: &str| format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.{d}");
    let gvk = |k: &str| json!([{"group": "apiregistration.k8s.io", "version": "v1", "kind": k}]);
    let type_meta = |o: &mut Value| {
        o["properties"]["apiVersion"] = json!({"description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.", "type": "string"});
        o["properties"]["kind"] = json!({"description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase.", "type": "string"});
    };
    let mut svc = json!({
        "description": "APIService represents a server for a particular GroupVersion. Name must be \"version.group\".",
        "type": "object",
        "properties": {
            "metadata": {"allOf": [{"$ref": meta("ObjectMeta")}], "default": {}, "description": "Standard object's metadata."},
            "spec": {"allOf": [{"$ref": r("APIServiceSpec")}], "default": {}, "description": "Spec contains information for locating and communicating with a server"},
            "status": {"allOf": [{"$ref": r("APIServiceStatus")}], "default": {}, "description": "Status contains derived information about an API server"},
        },
        "x-kubernetes-group-version-kind": gvk("APIService"),
    });
    type_meta(&mut svc);
    let mut list = json!({
        "description": "APIServiceList is a list of APIService objects.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "metadata": {"allOf": [{"$ref": meta("ListMeta")}], "default": {}, "description": "Standard list metadata."},
            "items": {"description": "Items is the list of APIService", "type": "array", "items": {"allOf": [{"$ref": r("APIService")}], "default": {}}},
        },
        "x-kubernetes-group-version-kind": gvk("APIServiceList"),
    });
    type_meta(&mut list);
    let spec = json!({
        "description": "APIServiceSpec contains information for locating and communicating with a server. Only https is supported, though you are able to disable certificate verification.",
        "type": "object",
        "required": ["groupPriorityMinimum", "versionPriority"],
        "properties": {
            "service": {"allOf": [{"$ref": r("ServiceReference")}], "description": "Service is a reference to the service for this API server.  It must communicate on port 443. If the Service is nil, that means the handling for the API groupversion is handled locally on this server. The call will simply delegate to the normal handler chain to be fulfilled."},
            "group": {"description": "Group is the API group name this server hosts", "type": "string"},
            "version": {"description": "Version is the API version this server hosts.  For example, \"v1\"", "type": "string"},
            "insecureSkipTLSVerify": {"description": "InsecureSkipTLSVerify disables TLS certificate verification when communicating with this server. This is strongly discouraged.  You should use the CABundle instead.", "type": "boolean"},
            "caBundle": {"description": "CABundle is a PEM encoded CA bundle which will be used to validate an API server's serving certificate. If unspecified, system trust roots on the apiserver are used.", "type": "string", "format": "byte", "x-kubernetes-list-type": "atomic"},
            "groupPriorityMinimum": {"description": "GroupPriorityMinimum is the priority this group should have at least. Higher priority means that the group is preferred by clients over lower priority ones.", "type": "integer", "format": "int32", "default": 0},
            "versionPriority": {"description": "VersionPriority controls the ordering of this API version inside of its group.  Must be greater than zero.", "type": "integer", "format": "int32", "default": 0},
        },
    });
    let service_ref = json!({
        "description": "ServiceReference holds a reference to Service.legacy.k8s.io",
        "type": "object",
        "properties": {
            "namespace": {"description": "Namespace is the namespace of the service", "type": "string"},
            "name": {"description": "Name is the name of the service", "type": "string"},
            "port": {"description": "If specified, the port on the service that hosting webhook. Default to 443 for backward compatibility. `port` should be a valid port number (1-65535, inclusive).", "type": "integer", "format": "int32"},
        },
    });
    let status = json!({
        "description": "APIServiceStatus contains derived information about an API server",
        "type": "object",
        "properties": {
            "conditions": {"description": "Current service state of apiService.", "type": "array", "items": {"allOf": [{"$ref": r("APIServiceCondition")}], "default": {}},
                "x-kubernetes-list-map-keys": ["type"], "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "type", "x-kubernetes-patch-strategy": "merge"},
        },
    });
    let cond = json!({
        "description": "APIServiceCondition describes the state of an APIService at a particular point",
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"description": "Type is the type of the condition.", "type": "string", "default": ""},
            "status": {"description": "Status is the status of the condition. Can be True, False, Unknown.", "type": "string", "default": ""},
            "lastTransitionTime": {"allOf": [{"$ref": meta("Time")}], "description": "Last time the condition transitioned from one status to another."},
            "reason": {"description": "Unique, one-word, CamelCase reason for the condition's last transition.", "type": "string"},
            "message": {"description": "Human-readable message indicating details about last transition.", "type": "string"},
        },
    });
    for (name, d) in [
        ("APIService", svc),
        ("APIServiceList", list),
        ("APIServiceSpec", spec),
        ("ServiceReference", service_ref),
        ("APIServiceStatus", status),
        ("APIServiceCondition", cond),
    ] {
        let full = format!("{P}.{name}");
        if name.starts_with("APIService")
            && !name.contains("Spec")
            && !name.contains("Status")
            && !name.contains("Condition")
        {
            kinds.insert(
                ("apiregistration.k8s.io".into(), "v1".into(), name.into()),
                full.clone(),
            );
        }
        defs.insert(full, d);
    }
}

/// True when every served resource has a schema (checked in tests; the
/// server may also assert it at start).
pub fn covers_all_resources() -> Vec<&'static Resource> {
    resources::all()
        .iter()
        .filter(|r| schemas().resource(r).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_a_schema_with_gvk() {
        assert!(
            covers_all_resources().is_empty(),
            "{:?}",
            covers_all_resources()
        );
        for r in resources::all() {
            let n = schemas().resource(r).unwrap();
            let gvk = &n.value()["x-kubernetes-group-version-kind"][0];
            assert_eq!(gvk["kind"], r.kind, "{}", r.plural);
            assert_eq!(gvk["group"], r.group);
            assert_eq!(gvk["version"], r.version);
            if r.is_stored() {
                assert!(
                    schemas().kind(r.group, r.version, r.list_kind).is_some(),
                    "{}",
                    r.list_kind
                );
            }
        }
    }

    #[test]
    fn patch_meta_is_attached() {
        for (def, prop, ..) in PATCH_META {
            assert!(
                schemas()
                    .named(def)
                    .and_then(|d| d.property(prop))
                    .is_some(),
                "{def}.{prop} missing"
            );
        }
        let pod = schemas().kind("", "v1", "Pod").unwrap();
        let containers = pod.path("spec.containers").unwrap();
        assert_eq!(containers.patch_strategy(), Some("merge"));
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert_eq!(containers.list_map_keys(), vec!["name"]);
        let ports = pod.path("spec.containers.ports").unwrap();
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        let d = schemas().kind("apps", "v1", "Deployment").unwrap();
        assert_eq!(
            d.path("spec.strategy").unwrap().patch_strategy(),
            Some("retainKeys")
        );
        assert_eq!(
            d.path("spec.template.spec.volumes")
                .unwrap()
                .patch_merge_key(),
            Some("name")
        );
        assert_eq!(
            d.path("metadata.finalizers").unwrap().list_type(),
            Some("set")
        );
        assert!(d.path("spec.nonexistent").is_none());
        assert_eq!(d.path("spec.selector").unwrap().map_type(), Some("atomic"));
        for def in ATOMIC_STRUCTS {
            assert_eq!(
                schemas().named(def).and_then(|n| n.map_type()),
                Some("atomic"),
                "{def}"
            );
        }
        for (def, prop) in ATOMIC_MAPS {
            assert_eq!(
                schemas()
                    .named(def)
                    .and_then(|d| d.property(prop))
                    .and_then(|p| p.map_type()),
                Some("atomic"),
                "{def}.{prop}"
            );
        }
    }

    #[test]
    fn h8s_kinds_are_described() {
        let ns = schemas().kind("", "v1", "Namespace").unwrap();
        assert_eq!(ns.path("spec.network").unwrap().type_name(), Some("string"));
        let net = schemas().kind("", "v1", "Network").unwrap();
        let subnet = net
            .path("spec.subnets")
            .unwrap()
            .additional_properties()
            .unwrap();
        assert_eq!(subnet.property_names().len(), 2);
        assert!(net.path("status.phase").is_some());
        assert!(schemas()
            .named("io.k8s.apimachinery.pkg.runtime.RawExtension")
            .is_none_or(|n| n.is_free_form()));
    }
}
