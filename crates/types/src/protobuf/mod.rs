//! Protobuf request bodies (kubectl ≥ 1.32 sends them for `create
//! namespace|configmap|secret|deployment|…`, `auth can-i`, `auth whoami`):
//! `k8s\0` + `runtime.Unknown{typeMeta, raw}`, where `raw` is the object in
//! Kubernetes' protobuf. [`decode`] returns the JSON the same object has in
//! JSON form, so the rest of the server only ever sees JSON.
//!
//! The object is decoded by k8s-pb's prost types (so the wire format is
//! theirs, field by field), then turned into JSON by walking the decoded
//! value alongside the kind's OpenAPI schema, which names each field as
//! JSON does (`clusterIP`, not `cluster_ip`) and says which byte fields are
//! base64 in JSON. Kubernetes' special types take their JSON forms:
//! Quantity and IntOrString as scalars, Time/MicroTime as RFC 3339,
//! RawExtension and FieldsV1 as embedded JSON.
//!
//! prost gives no reflection, but its derived `Debug` is a faithful,
//! regular rendering of every field; [`value`] parses it.

mod value;

use crate::resources::split_api_version;
use crate::schema::{schemas, Node};
use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use prost::Message;
use serde_json::{Map, Value as Json};
use value::Value;

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be decoded (the server answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body does not start with `k8s\0`.
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    MissingMagic,
    /// The `runtime.Unknown` envelope is malformed.
    #[error("unable to decode the protobuf envelope: {0}")]
    Envelope(String),
    /// The envelope names no apiVersion or kind.
    #[error("object has no apiVersion or kind in its protobuf envelope")]
    MissingTypeMeta,
    /// The envelope's content encoding is not supported (Kubernetes sends none).
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    /// No protobuf form is known for this kind.
    #[error("no kind {kind:?} is registered for version {api_version:?} in protobuf")]
    UnsupportedKind {
        /// apiVersion from the envelope.
        api_version: String,
        /// kind from the envelope.
        kind: String,
    },
    /// The object itself is malformed.
    #[error("unable to decode {kind} from protobuf: {reason}")]
    Object {
        /// Kind being decoded.
        kind: String,
        /// What failed.
        reason: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// apiVersion, kind and raw object bytes from a body's envelope.
pub fn envelope(body: &[u8]) -> Result<(String, String, Vec<u8>)> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(Error::MissingMagic)?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| Error::Envelope(e.to_string()))?;
    if let Some(enc) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(Error::ContentEncoding(enc));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(Error::MissingTypeMeta);
    }
    Ok((api_version, kind, unknown.raw.unwrap_or_default()))
}

/// Decodes a protobuf request body into the object's JSON form, with
/// `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Json> {
    let (api_version, kind, raw) = envelope(body)?;
    decode_object(&api_version, &kind, &raw)
}

macro_rules! dispatch {
    ($gv:expr, $kind:expr, $raw:expr; $( ($g:literal, $v:literal, $k:literal, $ty:ty) ),* $(,)?) => {
        match ($gv.0, $gv.1, $kind) {
            $( ($g, $v, $k) => <$ty>::decode($raw).map(|m| format!("{m:?}")), )*
            _ => return Ok(None),
        }
    };
}

/// Decodes one object's protobuf (`raw` of the envelope) as prost renders
/// it, or `None` when the kind has no protobuf form here.
fn debug_render(
    api_version: &str,
    kind: &str,
    raw: &[u8],
) -> Result<Option<String>, prost::DecodeError> {
    use k8s_pb::api::{
        admissionregistration::v1 as admreg, apps::v1 as apps, authentication::v1 as authn,
        authentication::v1beta1 as authn_b1, authorization::v1 as authz,
        autoscaling::v1 as autoscaling, autoscaling::v2 as autoscaling2, batch::v1 as batch,
        certificates::v1 as certificates, coordination::v1 as coord, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, flowcontrol::v1 as flowcontrol,
        networking::v1 as net, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as scheduling, storage::v1 as storage,
    };
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    let gv = split_api_version(api_version);
    let out = dispatch!(gv, kind, raw;
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
        ("apps", "v1", "Deployment", apps::Deployment),
        ("apps", "v1", "ReplicaSet", apps::ReplicaSet),
        ("apps", "v1", "StatefulSet", apps::StatefulSet),
        ("apps", "v1", "DaemonSet", apps::DaemonSet),
        ("apps", "v1", "ControllerRevision", apps::ControllerRevision),
        ("batch", "v1", "Job", batch::Job),
        ("batch", "v1", "CronJob", batch::CronJob),
        ("rbac.authorization.k8s.io", "v1", "Role", rbac::Role),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::RoleBinding),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::ClusterRole),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::ClusterRoleBinding),
        ("coordination.k8s.io", "v1", "Lease", coord::Lease),
        ("storage.k8s.io", "v1", "StorageClass", storage::StorageClass),
        ("storage.k8s.io", "v1", "VolumeAttachment", storage::VolumeAttachment),
        ("networking.k8s.io", "v1", "NetworkPolicy", net::NetworkPolicy),
        ("authentication.k8s.io", "v1", "SelfSubjectReview", authn::SelfSubjectReview),
        ("authentication.k8s.io", "v1", "TokenRequest", authn::TokenRequest),
        ("authentication.k8s.io", "v1beta1", "SelfSubjectReview", authn_b1::SelfSubjectReview),
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", authz::SelfSubjectAccessReview),
        ("authorization.k8s.io", "v1", "SubjectAccessReview", authz::SubjectAccessReview),
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview", authz::LocalSubjectAccessReview),
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", authz::SelfSubjectRulesReview),
        ("autoscaling", "v1", "Scale", autoscaling::Scale),
        ("policy", "v1", "Eviction", policy::Eviction),
        ("policy", "v1", "PodDisruptionBudget", policy::PodDisruptionBudget),
        ("authentication.k8s.io", "v1", "TokenReview", authn::TokenReview),
        ("certificates.k8s.io", "v1", "CertificateSigningRequest", certificates::CertificateSigningRequest),
        ("discovery.k8s.io", "v1", "EndpointSlice", discovery::EndpointSlice),
        ("events.k8s.io", "v1", "Event", events::Event),
        ("node.k8s.io", "v1", "RuntimeClass", node::RuntimeClass),
        ("scheduling.k8s.io", "v1", "PriorityClass", scheduling::PriorityClass),
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", admreg::MutatingWebhookConfiguration),
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", admreg::ValidatingWebhookConfiguration),
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", admreg::ValidatingAdmissionPolicy),
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", admreg::ValidatingAdmissionPolicyBinding),
        ("meta.k8s.io", "v1", "DeleteOptions", meta::DeleteOptions),
        ("", "v1", "DeleteOptions", meta::DeleteOptions),
    );
    out.map(Some)
}

/// Decodes one object given its apiVersion and kind (the envelope's).
pub fn decode_object(api_version: &str, kind: &str, raw: &[u8]) -> Result<Json> {
    let rendered = debug_render(api_version, kind, raw)
        .map_err(|e| Error::Object {
            kind: kind.to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| Error::UnsupportedKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    let parsed = value::parse(&rendered).map_err(|reason| Error::Object {
        kind: kind.to_string(),
        reason,
    })?;
    let (g, v) = split_api_version(api_version);
    // DeleteOptions is published under meta.k8s.io whatever group sent it.
    let node = if kind == "DeleteOptions" {
        schemas().kind("meta.k8s.io", "v1", kind)
    } else {
        schemas().kind(g, v, kind)
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Json::String(api_version.to_string()));
    out.insert("kind".into(), Json::String(kind.to_string()));
    if let Json::Object(m) = to_json(&parsed, node) {
        for (k, v) in m {
            out.entry(k).or_insert(v);
        }
    }
    Ok(Json::Object(out))
}

fn normalize(s: &str) -> String {
    s.trim_start_matches("r#")
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The JSON name of a prost field: the schema's property whose name
/// matches once case and underscores are ignored, else lowerCamelCase.
fn json_name(node: Option<Node<'_>>, rust: &str) -> String {
    let want = normalize(rust);
    if let Some(n) = node {
        if let Some(p) = n
            .property_names()
            .into_iter()
            .find(|p| normalize(p) == want)
        {
            return p.to_string();
        }
    }
    let mut out = String::new();
    let mut upper = false;
    for c in rust.trim_start_matches("r#").chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn is_bytes_schema(node: Option<Node<'_>>) -> bool {
    node.is_some_and(|n| n.resolved().value().get("format").and_then(Json::as_str) == Some("byte"))
}

fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .map(Value::unwrap_some)
        .filter(|v| !matches!(v, Value::None))
}

fn format_time(seconds: i64, nanos: i64, micro: bool) -> Json {
    let ts = Timestamp::new(seconds, if micro { nanos as i32 } else { 0 })
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let s = if micro {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    Json::String(s)
}

/// Go's `time.Duration.String()` for whole and fractional seconds.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let (h, rem) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let (s, frac) = (rem / 1_000_000_000, rem % 1_000_000_000);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let f = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

fn bytes_json(bytes: &[u8], node: Option<Node<'_>>) -> Json {
    // Embedded JSON (RawExtension, FieldsV1) stays JSON; other byte
    // fields are base64 as encoding/json renders []byte.
    if !is_bytes_schema(node) {
        if let Ok(v) = serde_json::from_slice::<Json>(bytes) {
            return v;
        }
    }
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Converts a rendered prost value to JSON, guided by `node`'s schema.
fn to_json(v: &Value, node: Option<Node<'_>>) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Some(inner) => to_json(inner, node),
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Ident(_) => Json::Null,
        Value::List(items) => {
            if is_bytes_schema(node) {
                let bytes: Vec<u8> = items.iter().filter_map(Value::as_byte).collect();
                return Json::String(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            let item = node.and_then(|n| n.items());
            Json::Array(items.iter().map(|x| to_json(x, item)).collect())
        }
        Value::Map(entries) => {
            let values = node.and_then(|n| n.additional_properties());
            let mut m = Map::new();
            for (k, x) in entries {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    other => to_json(other, None).to_string(),
                };
                m.insert(key, to_json(x, values));
            }
            Json::Object(m)
        }
        Value::Struct(name, fields) => struct_json(name, fields, node),
    }
}

/// A message: Kubernetes' special types take their JSON forms, others
/// become objects named by the schema.
fn struct_json(struct_name: &str, fields: &[(String, Value)], node: Option<Node<'_>>) -> Json {
    match struct_name {
        "Quantity" => field(fields, "string").map_or(Json::Null, |s| to_json(s, None)),
        "IntOrString" => {
            let ty = field(fields, "r#type").and_then(Value::as_i64).unwrap_or(0);
            if ty == 1 {
                field(fields, "str_val").map_or(Json::String(String::new()), |s| to_json(s, None))
            } else {
                Json::from(
                    field(fields, "int_val")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                )
            }
        }
        "Time" | "MicroTime" => {
            let s = field(fields, "seconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let n = field(fields, "nanos").and_then(Value::as_i64).unwrap_or(0);
            if s == 0 && n == 0 {
                // Go's zero time is `null` in JSON.
                return Json::Null;
            }
            format_time(s, n, struct_name == "MicroTime")
        }
        "Duration" if fields.len() == 1 => Json::String(go_duration(
            field(fields, "duration")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        )),
        "RawExtension" | "FieldsV1" => match field(fields, "raw") {
            Some(Value::List(b)) => {
                let bytes: Vec<u8> = b.iter().filter_map(Value::as_byte).collect();
                bytes_json(&bytes, None)
            }
            _ => Json::Object(Map::new()),
        },
        _ => {
            let required: Vec<&str> = node
                .and_then(|n| n.resolved().value().get("required"))
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let mut m = Map::new();
            for (k, x) in fields {
                let x = x.unwrap_some();
                // proto2 optional fields left unset, and empty
                // repeated or map fields, are absent in JSON too.
                let empty = match x {
                    Value::None => true,
                    Value::List(l) => l.is_empty(),
                    Value::Map(e) => e.is_empty(),
                    _ => false,
                };
                if empty {
                    continue;
                }
                let name = json_name(node, k);
                // Go writes its non-pointer fields even when zero; JSON
                // omits them (omitempty). Pointers are sent only when
                // set, and then a zero means something (`replicas: 0`).
                if x.is_zero()
                    && !required.contains(&name.as_str())
                    && !is_pointer(struct_name, &name)
                {
                    continue;
                }
                let child = node.and_then(|n| n.property(&name));
                let j = to_json(x, child);
                if !j.is_null() {
                    m.insert(name, j);
                }
            }
            Json::Object(m)
        }
    }
}

/// Scalar fields that are Go pointers in Kubernetes' types (by message and
/// JSON name): sent on the wire only when set, so a zero is meaningful and
/// kept. Every other zero scalar is a non-pointer Go field that JSON omits.
const POINTER_FIELDS: &[(&str, &[&str])] = &[
    ("ObjectMeta", &["deletionGracePeriodSeconds"]),
    ("OwnerReference", &["controller", "blockOwnerDeletion"]),
    (
        "DeleteOptions",
        &[
            "gracePeriodSeconds",
            "orphanDependents",
            "propagationPolicy",
            "ignoreStoreReadErrorWithClusterBreakingPotential",
        ],
    ),
    ("Preconditions", &["uid", "resourceVersion"]),
    (
        "PodSpec",
        &[
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "shareProcessNamespace",
            "priority",
            "enableServiceLinks",
            "preemptionPolicy",
            "runtimeClassName",
            "setHostnameAsFQDN",
            "hostUsers",
        ],
    ),
    ("Container", &["restartPolicy"]),
    ("EphemeralContainer", &["restartPolicy"]),
    (
        "SecurityContext",
        &[
            "privileged",
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "procMount",
        ],
    ),
    (
        "PodSecurityContext",
        &[
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "fsGroup",
            "fsGroupChangePolicy",
            "supplementalGroupsPolicy",
            "seLinuxChangePolicy",
        ],
    ),
    ("Probe", &["terminationGracePeriodSeconds"]),
    ("Toleration", &["tolerationSeconds"]),
    ("SecretVolumeSource", &["defaultMode", "optional"]),
    ("ConfigMapVolumeSource", &["defaultMode", "optional"]),
    ("ProjectedVolumeSource", &["defaultMode"]),
    ("DownwardAPIVolumeSource", &["defaultMode"]),
    ("DownwardAPIVolumeFile", &["mode"]),
    ("KeyToPath", &["mode"]),
    ("HostPathVolumeSource", &["type"]),
    ("CSIVolumeSource", &["readOnly", "fsType"]),
    ("ServiceAccountTokenProjection", &["expirationSeconds"]),
    ("ConfigMapKeySelector", &["optional"]),
    ("SecretKeySelector", &["optional"]),
    ("ConfigMapEnvSource", &["optional"]),
    ("SecretEnvSource", &["optional"]),
    ("ConfigMapProjection", &["optional"]),
    ("SecretProjection", &["optional"]),
    (
        "PersistentVolumeClaimSpec",
        &[
            "storageClassName",
            "volumeMode",
            "volumeAttributesClassName",
        ],
    ),
    (
        "PersistentVolumeSpec",
        &["volumeMode", "volumeAttributesClassName"],
    ),
    (
        "DeploymentSpec",
        &[
            "replicas",
            "revisionHistoryLimit",
            "progressDeadlineSeconds",
        ],
    ),
    ("ReplicaSetSpec", &["replicas"]),
    ("ReplicationControllerSpec", &["replicas"]),
    ("StatefulSetSpec", &["replicas", "revisionHistoryLimit"]),
    ("RollingUpdateStatefulSetStrategy", &["partition"]),
    ("DaemonSetSpec", &["revisionHistoryLimit"]),
    (
        "JobSpec",
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "ttlSecondsAfterFinished",
            "completionMode",
            "suspend",
            "manualSelector",
            "podReplacementPolicy",
            "managedBy",
        ],
    ),
    (
        "CronJobSpec",
        &[
            "startingDeadlineSeconds",
            "suspend",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
            "timeZone",
        ],
    ),
    (
        "ServiceSpec",
        &[
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
            "internalTrafficPolicy",
            "ipFamilyPolicy",
            "trafficDistribution",
        ],
    ),
    ("ServicePort", &["appProtocol"]),
    ("ClientIPConfig", &["timeoutSeconds"]),
    ("Secret", &["immutable"]),
    ("ConfigMap", &["immutable"]),
    ("ServiceAccount", &["automountServiceAccountToken"]),
    (
        "LeaseSpec",
        &[
            "holderIdentity",
            "leaseDurationSeconds",
            "leaseTransitions",
            "strategy",
            "preferredHolder",
        ],
    ),
    (
        "StorageClass",
        &["reclaimPolicy", "allowVolumeExpansion", "volumeBindingMode"],
    ),
    ("NetworkPolicyPort", &["protocol", "endPort"]),
    ("TokenRequestSpec", &["expirationSeconds"]),
    ("PodDNSConfigOption", &["value"]),
];

fn is_pointer(message: &str, field: &str) -> bool {
    POINTER_FIELDS
        .iter()
        .any(|(m, fs)| *m == message && fs.contains(&field))
}

#[cfg(test)]
mod tests;
