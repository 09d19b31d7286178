//! The static table of every resource h8s serves, with what discovery and the
//! registry need to know about each: names, scope, verbs, subresources, scale
//! paths and the fields a field selector may use.
//!
//! The table is data: the API server walks it to build discovery documents and
//! route requests, so adding a kind here is most of the work of serving it.

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The verbs of an ordinary, fully served resource, in discovery's order.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Review kinds are create-only, never stored.
const CREATE_ONLY: &[&str] = &["create"];

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// A subresource such as `pods/status` or `deployments/scale`, as discovery
/// shows it: the kind it takes and returns, and its verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// The part after the slash: `status`, `scale`, `log`, `exec`…
    pub name: &'static str,
    /// Group of the kind the subresource speaks (`autoscaling` for scale).
    pub group: &'static str,
    /// Version of that kind.
    pub version: &'static str,
    /// Kind of the request and response (`Scale`, `PodExecOptions`…).
    pub kind: &'static str,
    /// Verbs in discovery's order.
    pub verbs: &'static [&'static str],
}

impl Subresource {
    /// What this subresource is for, so the server can route by meaning
    /// rather than by string.
    pub fn role(&self) -> SubresourceRole {
        match self.name {
            "status" => SubresourceRole::Status,
            "scale" => SubresourceRole::Scale,
            "log" => SubresourceRole::Log,
            "exec" | "attach" | "portforward" => SubresourceRole::Stream,
            "proxy" => SubresourceRole::Proxy,
            "binding" => SubresourceRole::Binding,
            "eviction" => SubresourceRole::Eviction,
            "ephemeralcontainers" | "resize" => SubresourceRole::SpecPart,
            "finalize" => SubresourceRole::Finalize,
            "token" => SubresourceRole::Token,
            _ => SubresourceRole::Other,
        }
    }
}

/// The broad class of a subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubresourceRole {
    /// `status`: writes change only `.status`.
    Status,
    /// `scale`: an `autoscaling/v1 Scale` view of replicas.
    Scale,
    /// `pods/log`: text.
    Log,
    /// `exec`, `attach`, `portforward`: upgraded streams.
    Stream,
    /// `proxy`: HTTP proxied to the object.
    Proxy,
    /// `pods/binding`: the scheduler's bind.
    Binding,
    /// `pods/eviction`.
    Eviction,
    /// `pods/ephemeralcontainers`, `pods/resize`: writes to part of the spec.
    SpecPart,
    /// `namespaces/finalize`: writes `.spec.finalizers`.
    Finalize,
    /// `serviceaccounts/token`.
    Token,
    /// Anything else.
    Other,
}

/// Where a scalable kind keeps the numbers the `scale` subresource shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePaths {
    /// Dotted path of the desired replica count (`spec.replicas`).
    pub spec_replicas: &'static str,
    /// Dotted path of the observed replica count (`status.replicas`).
    pub status_replicas: &'static str,
    /// Dotted path of the selector that `Scale.status.selector` renders.
    pub selector: &'static str,
    /// True when the selector is a plain label map (ReplicationController),
    /// false when it is a `LabelSelector` with matchLabels/matchExpressions.
    pub selector_is_map: bool,
}

const SCALE_APPS: ScalePaths = ScalePaths {
    spec_replicas: "spec.replicas",
    status_replicas: "status.replicas",
    selector: "spec.selector",
    selector_is_map: false,
};
const SCALE_RC: ScalePaths = ScalePaths {
    selector_is_map: true,
    ..SCALE_APPS
};

/// One served resource: a plural name in a group and version, with its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group, `""` for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Kind of a list of them (`PodList`).
    pub list_kind: &'static str,
    /// Plural resource name, the URL segment.
    pub plural: &'static str,
    /// Singular name (`kubectl get pod`).
    pub singular: &'static str,
    /// True when objects live in a namespace.
    pub namespaced: bool,
    /// Short names (`po`, `deploy`).
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Verbs on the resource itself, in discovery's order.
    pub verbs: &'static [&'static str],
    /// Subresources as Kubernetes has them.
    pub subresources: &'static [Subresource],
    /// True when the kind has a `.status` that the main resource's writes
    /// leave alone (the status subresource owns it).
    pub has_status: bool,
    /// Scale paths for kinds with a `scale` subresource.
    pub scale: Option<ScalePaths>,
    /// Group, version and kind objects are stored as; `None` for kinds that
    /// are never stored (reviews), which then have no storage version hash.
    pub storage: Option<(&'static str, &'static str, &'static str)>,
    /// Fields a field selector may name, beyond `metadata.name` (and
    /// `metadata.namespace` for namespaced kinds).
    pub extra_selectable_fields: &'static [&'static str],
    /// True for kinds that h8s adds to the Kubernetes API (Network).
    pub h8s_kind: bool,
}

/// Error from a field selector naming a field the kind cannot select on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// The field is not selectable for this kind (Kubernetes' wording).
    #[error("field label not supported: {0}")]
    Unsupported(String),
}

impl Resource {
    /// `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// True when the resource is stored (reviews are not: they are create-only
    /// and answered on the spot).
    pub fn is_stored(&self) -> bool {
        self.storage.is_some()
    }

    /// Looks a subresource up by name.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// True when the resource supports `verb`.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The storage version hash discovery publishes, as kube-apiserver
    /// computes it: base64 of the first 8 bytes of SHA-256 over
    /// `group/version/kind` of the storage version.
    pub fn storage_version_hash(&self) -> Option<String> {
        let (g, v, k) = self.storage?;
        let digest = Sha256::digest(format!("{g}/{v}/{k}").as_bytes());
        Some(base64::engine::general_purpose::STANDARD.encode(&digest[..8]))
    }

    /// Every field a field selector may name for this kind, sorted.
    pub fn selectable_fields(&self) -> Vec<&'static str> {
        let mut out = vec!["metadata.name"];
        if self.namespaced {
            out.push("metadata.namespace");
        }
        out.extend_from_slice(self.extra_selectable_fields);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The value of a selectable field for `obj` (the object's JSON form),
    /// rendered as Kubernetes renders it for field selectors: missing strings
    /// are `""`, booleans `true`/`false`, counts in decimal.
    pub fn field_value(&self, obj: &Value, field: &str) -> Result<String, FieldSelectorError> {
        let supported = field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.extra_selectable_fields.contains(&field);
        if !supported {
            return Err(FieldSelectorError::Unsupported(field.to_string()));
        }
        Ok(match (self.kind, field) {
            // Pods without a security context still select as hostNetwork=false.
            ("Pod", "spec.hostNetwork") => bool_at(obj, "spec.hostNetwork"),
            // The first of podIPs wins, as in kube-apiserver.
            ("Pod", "status.podIP") => {
                let first = obj
                    .pointer("/status/podIPs/0/ip")
                    .and_then(Value::as_str)
                    .or_else(|| obj.pointer("/status/podIP").and_then(Value::as_str));
                first.unwrap_or_default().to_string()
            }
            ("Node", "spec.unschedulable") => bool_at(obj, "spec.unschedulable"),
            ("Event", "source") => string_at(obj, "source.component"),
            ("Job", "status.successful") => int_at(obj, "status.succeeded"),
            (_, "status.replicas") => int_at(obj, "status.replicas"),
            _ => string_at(obj, field),
        })
    }
}

fn lookup<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, seg| v.get(seg))
}

fn string_at(obj: &Value, dotted: &str) -> String {
    match lookup(obj, dotted) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn bool_at(obj: &Value, dotted: &str) -> String {
    lookup(obj, dotted)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, dotted: &str) -> String {
    lookup(obj, dotted)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// `v1` for the core group, `group/version` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an apiVersion into group and version (`apps/v1` → `("apps","v1")`,
/// `v1` → `("","v1")`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

const fn sub(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        group,
        version,
        kind,
        verbs,
    }
}

const GPU: &[&str] = &["get", "patch", "update"];
const CG: &[&str] = &["create", "get"];
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

macro_rules! status_sub {
    ($g:expr, $v:expr, $k:expr) => {
        sub("status", $g, $v, $k, GPU)
    };
}
const SCALE_SUB: Subresource = sub("scale", "autoscaling", "v1", "Scale", GPU);

const POD_SUBS: &[Subresource] = &[
    sub("attach", "", "v1", "PodAttachOptions", CG),
    sub("binding", "", "v1", "Binding", CREATE_ONLY),
    sub("ephemeralcontainers", "", "v1", "Pod", GPU),
    sub("eviction", "policy", "v1", "Eviction", CREATE_ONLY),
    sub("exec", "", "v1", "PodExecOptions", CG),
    sub("log", "", "v1", "Pod", &["get"]),
    sub("portforward", "", "v1", "PodPortForwardOptions", CG),
    sub("proxy", "", "v1", "PodProxyOptions", PROXY_VERBS),
    sub("resize", "", "v1", "Pod", GPU),
    status_sub!("", "v1", "Pod"),
];

/// The fields an Event selects on (both groups: one storage, the core fields).
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.resourceVersion",
    "involvedObject.uid",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// A resource with the defaults most entries share; the table overrides
/// fields with struct update syntax.
const fn base(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        list_kind,
        plural,
        singular,
        namespaced,
        short_names: NONE,
        categories: NONE,
        verbs: STANDARD_VERBS,
        subresources: &[],
        has_status: false,
        scale: None,
        storage: Some((group, version, kind)),
        extra_selectable_fields: &[],
        h8s_kind: false,
    }
}

static TABLE: &[Resource] = &[
    // ---- core/v1 ----
    Resource {
        short_names: &["ns"],
        verbs: NAMESPACE_VERBS,
        subresources: &[
            sub("finalize", "", "v1", "Namespace", &["update"]),
            status_sub!("", "v1", "Namespace"),
        ],
        has_status: true,
        extra_selectable_fields: &["status.phase"],
        ..base(
            "",
            "v1",
            "Namespace",
            "NamespaceList",
            "namespaces",
            "namespace",
            false,
        )
    },
    Resource {
        short_names: &["po"],
        categories: ALL,
        subresources: POD_SUBS,
        has_status: true,
        extra_selectable_fields: &[
            "spec.hostNetwork",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.nominatedNodeName",
            "status.phase",
            "status.podIP",
        ],
        ..base("", "v1", "Pod", "PodList", "pods", "pod", true)
    },
    Resource {
        short_names: &["svc"],
        categories: ALL,
        subresources: &[
            sub("proxy", "", "v1", "ServiceProxyOptions", PROXY_VERBS),
            status_sub!("", "v1", "Service"),
        ],
        has_status: true,
        extra_selectable_fields: &["spec.clusterIP", "spec.type"],
        ..base(
            "",
            "v1",
            "Service",
            "ServiceList",
            "services",
            "service",
            true,
        )
    },
    Resource {
        short_names: &["ep"],
        ..base(
            "",
            "v1",
            "Endpoints",
            "EndpointsList",
            "endpoints",
            "endpoints",
            true,
        )
    },
    Resource {
        short_names: &["cm"],
        ..base(
            "",
            "v1",
            "ConfigMap",
            "ConfigMapList",
            "configmaps",
            "configmap",
            true,
        )
    },
    Resource {
        extra_selectable_fields: &["type"],
        ..base("", "v1", "Secret", "SecretList", "secrets", "secret", true)
    },
    Resource {
        short_names: &["sa"],
        subresources: &[sub(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            CREATE_ONLY,
        )],
        ..base(
            "",
            "v1",
            "ServiceAccount",
            "ServiceAccountList",
            "serviceaccounts",
            "serviceaccount",
            true,
        )
    },
    Resource {
        short_names: &["ev"],
        extra_selectable_fields: EVENT_FIELDS,
        ..base("", "v1", "Event", "EventList", "events", "event", true)
    },
    Resource {
        short_names: &["no"],
        subresources: &[
            sub("proxy", "", "v1", "NodeProxyOptions", PROXY_VERBS),
            status_sub!("", "v1", "Node"),
        ],
        has_status: true,
        extra_selectable_fields: &["spec.unschedulable"],
        ..base("", "v1", "Node", "NodeList", "nodes", "node", false)
    },
    Resource {
        short_names: &["pv"],
        subresources: &[status_sub!("", "v1", "PersistentVolume")],
        has_status: true,
        ..base(
            "",
            "v1",
            "PersistentVolume",
            "PersistentVolumeList",
            "persistentvolumes",
            "persistentvolume",
            false,
        )
    },
    Resource {
        short_names: &["pvc"],
        subresources: &[status_sub!("", "v1", "PersistentVolumeClaim")],
        has_status: true,
        ..base(
            "",
            "v1",
            "PersistentVolumeClaim",
            "PersistentVolumeClaimList",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            true,
        )
    },
    Resource {
        short_names: &["quota"],
        subresources: &[status_sub!("", "v1", "ResourceQuota")],
        has_status: true,
        ..base(
            "",
            "v1",
            "ResourceQuota",
            "ResourceQuotaList",
            "resourcequotas",
            "resourcequota",
            true,
        )
    },
    Resource {
        short_names: &["limits"],
        ..base(
            "",
            "v1",
            "LimitRange",
            "LimitRangeList",
            "limitranges",
            "limitrange",
            true,
        )
    },
    Resource {
        short_names: &["rc"],
        categories: ALL,
        subresources: &[SCALE_SUB, status_sub!("", "v1", "ReplicationController")],
        has_status: true,
        scale: Some(SCALE_RC),
        extra_selectable_fields: &["status.replicas"],
        ..base(
            "",
            "v1",
            "ReplicationController",
            "ReplicationControllerList",
            "replicationcontrollers",
            "replicationcontroller",
            true,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base("", "v1", "Binding", "", "bindings", "binding", true)
    },
    // Read-only, computed on request from h8s's own components (not stored).
    Resource {
        short_names: &["cs"],
        verbs: &["get", "list"],
        storage: None,
        ..base(
            "",
            "v1",
            "ComponentStatus",
            "ComponentStatusList",
            "componentstatuses",
            "componentstatus",
            false,
        )
    },
    base(
        "",
        "v1",
        "PodTemplate",
        "PodTemplateList",
        "podtemplates",
        "podtemplate",
        true,
    ),
    // The h8s kind from the seeds: `apiVersion: v1, kind: Network`.
    Resource {
        short_names: &["net"],
        subresources: &[status_sub!("", "v1", "Network")],
        has_status: true,
        extra_selectable_fields: &["spec.tenantID", "status.phase"],
        h8s_kind: true,
        ..base(
            "",
            "v1",
            "Network",
            "NetworkList",
            "networks",
            "network",
            false,
        )
    },
    // ---- apps/v1 ----
    Resource {
        ..base(
            "apps",
            "v1",
            "ControllerRevision",
            "ControllerRevisionList",
            "controllerrevisions",
            "controllerrevision",
            true,
        )
    },
    Resource {
        short_names: &["ds"],
        categories: ALL,
        subresources: &[status_sub!("apps", "v1", "DaemonSet")],
        has_status: true,
        ..base(
            "apps",
            "v1",
            "DaemonSet",
            "DaemonSetList",
            "daemonsets",
            "daemonset",
            true,
        )
    },
    Resource {
        short_names: &["deploy"],
        categories: ALL,
        subresources: &[SCALE_SUB, status_sub!("apps", "v1", "Deployment")],
        has_status: true,
        scale: Some(SCALE_APPS),
        ..base(
            "apps",
            "v1",
            "Deployment",
            "DeploymentList",
            "deployments",
            "deployment",
            true,
        )
    },
    Resource {
        short_names: &["rs"],
        categories: ALL,
        subresources: &[SCALE_SUB, status_sub!("apps", "v1", "ReplicaSet")],
        has_status: true,
        scale: Some(SCALE_APPS),
        extra_selectable_fields: &["status.replicas"],
        ..base(
            "apps",
            "v1",
            "ReplicaSet",
            "ReplicaSetList",
            "replicasets",
            "replicaset",
            true,
        )
    },
    Resource {
        short_names: &["sts"],
        categories: ALL,
        subresources: &[SCALE_SUB, status_sub!("apps", "v1", "StatefulSet")],
        has_status: true,
        scale: Some(SCALE_APPS),
        ..base(
            "apps",
            "v1",
            "StatefulSet",
            "StatefulSetList",
            "statefulsets",
            "statefulset",
            true,
        )
    },
    // ---- authentication.k8s.io ----
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authentication.k8s.io",
            "v1beta1",
            "SelfSubjectReview",
            "",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "",
            "tokenreviews",
            "tokenreview",
            false,
        )
    },
    // ---- authorization.k8s.io ----
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "",
            "subjectaccessreviews",
            "subjectaccessreview",
            false,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            true,
        )
    },
    Resource {
        verbs: CREATE_ONLY,
        storage: None,
        ..base(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            false,
        )
    },
    // ---- autoscaling/v2 and v1: one HorizontalPodAutoscaler, stored as v2 ----
    Resource {
        short_names: &["hpa"],
        categories: ALL,
        subresources: &[status_sub!("autoscaling", "v2", "HorizontalPodAutoscaler")],
        has_status: true,
        ..base(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscalerList",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
        )
    },
    Resource {
        short_names: &["hpa"],
        categories: ALL,
        subresources: &[status_sub!("autoscaling", "v1", "HorizontalPodAutoscaler")],
        has_status: true,
        storage: Some(("autoscaling", "v2", "HorizontalPodAutoscaler")),
        ..base(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscalerList",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
        )
    },
    // ---- batch/v1 ----
    Resource {
        short_names: &["cj"],
        categories: ALL,
        subresources: &[status_sub!("batch", "v1", "CronJob")],
        has_status: true,
        ..base(
            "batch",
            "v1",
            "CronJob",
            "CronJobList",
            "cronjobs",
            "cronjob",
            true,
        )
    },
    Resource {
        categories: ALL,
        subresources: &[status_sub!("batch", "v1", "Job")],
        has_status: true,
        extra_selectable_fields: &["status.successful"],
        ..base("batch", "v1", "Job", "JobList", "jobs", "job", true)
    },
    // ---- certificates.k8s.io/v1 ----
    Resource {
        short_names: &["csr"],
        subresources: &[
            sub(
                "approval",
                "certificates.k8s.io",
                "v1",
                "CertificateSigningRequest",
                GPU,
            ),
            status_sub!("certificates.k8s.io", "v1", "CertificateSigningRequest"),
        ],
        has_status: true,
        extra_selectable_fields: &["spec.signerName"],
        ..base(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "CertificateSigningRequestList",
            "certificatesigningrequests",
            "certificatesigningrequest",
            false,
        )
    },
    // ---- coordination.k8s.io/v1 ----
    base(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "LeaseList",
        "leases",
        "lease",
        true,
    ),
    // ---- discovery.k8s.io/v1 ----
    base(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "EndpointSliceList",
        "endpointslices",
        "endpointslice",
        true,
    ),
    // ---- apiregistration.k8s.io/v1 (kube-aggregator) ----
    Resource {
        categories: &["api-extensions"],
        subresources: &[status_sub!("apiregistration.k8s.io", "v1", "APIService")],
        has_status: true,
        ..base(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
            "APIServiceList",
            "apiservices",
            "apiservice",
            false,
        )
    },
    // ---- admissionregistration.k8s.io/v1 ----
    base(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "MutatingWebhookConfigurationList",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
    ),
    Resource {
        subresources: &[status_sub!(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy"
        )],
        has_status: true,
        ..base(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyList",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            false,
        )
    },
    base(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBindingList",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        false,
    ),
    base(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "ValidatingWebhookConfigurationList",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
    ),
    // ---- apiextensions.k8s.io/v1 ----
    Resource {
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &[status_sub!(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition"
        )],
        has_status: true,
        ..base(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "CustomResourceDefinitionList",
            "customresourcedefinitions",
            "customresourcedefinition",
            false,
        )
    },
    // ---- events.k8s.io/v1: core Events in their newer form, stored as core v1 ----
    Resource {
        short_names: &["ev"],
        storage: Some(("", "v1", "Event")),
        extra_selectable_fields: EVENT_FIELDS,
        ..base(
            "events.k8s.io",
            "v1",
            "Event",
            "EventList",
            "events",
            "event",
            true,
        )
    },
    // ---- networking.k8s.io/v1 ----
    Resource {
        short_names: &["netpol"],
        ..base(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "NetworkPolicyList",
            "networkpolicies",
            "networkpolicy",
            true,
        )
    },
    Resource {
        subresources: &[status_sub!("networking.k8s.io", "v1", "Ingress")],
        has_status: true,
        short_names: &["ing"],
        ..base(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "IngressList",
            "ingresses",
            "ingress",
            true,
        )
    },
    base(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "IngressClassList",
        "ingressclasses",
        "ingressclass",
        false,
    ),
    Resource {
        short_names: &["ip"],
        ..base(
            "networking.k8s.io",
            "v1",
            "IPAddress",
            "IPAddressList",
            "ipaddresses",
            "ipaddress",
            false,
        )
    },
    Resource {
        subresources: &[status_sub!("networking.k8s.io", "v1", "ServiceCIDR")],
        has_status: true,
        ..base(
            "networking.k8s.io",
            "v1",
            "ServiceCIDR",
            "ServiceCIDRList",
            "servicecidrs",
            "servicecidr",
            false,
        )
    },
    // ---- node.k8s.io/v1 ----
    base(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "RuntimeClassList",
        "runtimeclasses",
        "runtimeclass",
        false,
    ),
    // ---- policy/v1 ----
    Resource {
        short_names: &["pdb"],
        subresources: &[status_sub!("policy", "v1", "PodDisruptionBudget")],
        has_status: true,
        ..base(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "PodDisruptionBudgetList",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            true,
        )
    },
    // ---- rbac.authorization.k8s.io/v1 ----
    base(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
    ),
    base(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "ClusterRoleList",
        "clusterroles",
        "clusterrole",
        false,
    ),
    base(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "RoleBindingList",
        "rolebindings",
        "rolebinding",
        true,
    ),
    base(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "RoleList",
        "roles",
        "role",
        true,
    ),
    // ---- scheduling.k8s.io/v1 ----
    Resource {
        short_names: &["pc"],
        ..base(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "PriorityClassList",
            "priorityclasses",
            "priorityclass",
            false,
        )
    },
    // ---- storage.k8s.io/v1 ----
    Resource {
        short_names: &["sc"],
        ..base(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "StorageClassList",
            "storageclasses",
            "storageclass",
            false,
        )
    },
    base(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "CSIDriverList",
        "csidrivers",
        "csidriver",
        false,
    ),
    base(
        "storage.k8s.io",
        "v1",
        "CSINode",
        "CSINodeList",
        "csinodes",
        "csinode",
        false,
    ),
    base(
        "storage.k8s.io",
        "v1",
        "CSIStorageCapacity",
        "CSIStorageCapacityList",
        "csistoragecapacities",
        "csistoragecapacity",
        true,
    ),
    // ---- flowcontrol.apiserver.k8s.io/v1 ----
    Resource {
        subresources: &[status_sub!(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "FlowSchema"
        )],
        has_status: true,
        ..base(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "FlowSchema",
            "FlowSchemaList",
            "flowschemas",
            "flowschema",
            false,
        )
    },
    Resource {
        subresources: &[status_sub!(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "PriorityLevelConfiguration"
        )],
        has_status: true,
        ..base(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "PriorityLevelConfiguration",
            "PriorityLevelConfigurationList",
            "prioritylevelconfigurations",
            "prioritylevelconfiguration",
            false,
        )
    },
    Resource {
        subresources: &[status_sub!("storage.k8s.io", "v1", "VolumeAttachment")],
        has_status: true,
        ..base(
            "storage.k8s.io",
            "v1",
            "VolumeAttachment",
            "VolumeAttachmentList",
            "volumeattachments",
            "volumeattachment",
            false,
        )
    },
    // ---- tenancy.h8s.io/v1 (h8s kinds: Keystone-style tenants and users) ----
    Resource {
        subresources: &[status_sub!("tenancy.h8s.io", "v1", "Tenant")],
        has_status: true,
        h8s_kind: true,
        ..base(
            "tenancy.h8s.io",
            "v1",
            "Tenant",
            "TenantList",
            "tenants",
            "tenant",
            false,
        )
    },
    Resource {
        subresources: &[sub(
            "password",
            "tenancy.h8s.io",
            "v1",
            "UserPassword",
            &["create", "update"],
        )],
        extra_selectable_fields: &["spec.tenant"],
        h8s_kind: true,
        ..base(
            "tenancy.h8s.io",
            "v1",
            "User",
            "UserList",
            "users",
            "user",
            false,
        )
    },
];

/// A group as `/apis` lists it: its versions, preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name, `""` for core.
    pub name: &'static str,
    /// Versions served, the preferred one first.
    pub versions: &'static [&'static str],
}

/// Groups in the order kube-apiserver lists them (core first, then the
/// named groups by its priority), each with its versions, preferred first.
static GROUPS: &[Group] = &[
    Group {
        name: "",
        versions: &["v1"],
    },
    Group {
        name: "apiregistration.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "apps",
        versions: &["v1"],
    },
    Group {
        name: "events.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "authentication.k8s.io",
        versions: &["v1", "v1beta1"],
    },
    Group {
        name: "authorization.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "autoscaling",
        versions: &["v2", "v1"],
    },
    Group {
        name: "batch",
        versions: &["v1"],
    },
    Group {
        name: "certificates.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "networking.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "policy",
        versions: &["v1"],
    },
    Group {
        name: "rbac.authorization.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "storage.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "admissionregistration.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "scheduling.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "coordination.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "node.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "discovery.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "flowcontrol.apiserver.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "apiextensions.k8s.io",
        versions: &["v1"],
    },
    Group {
        name: "tenancy.h8s.io",
        versions: &["v1"],
    },
];

/// Every served resource, grouped by group and version, in discovery order.
pub fn all() -> &'static [Resource] {
    TABLE
}

/// Every served group, core (`""`) first, in kube-apiserver's order.
pub fn groups() -> &'static [Group] {
    GROUPS
}

/// The resources of one group version, in the table's order.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    TABLE
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    TABLE
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by group, version and kind.
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static Resource> {
    TABLE
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Finds a resource by apiVersion (`apps/v1`, `v1`) and kind.
pub fn find_api_version_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (g, v) = split_api_version(api_version);
    find_kind(g, v, kind)
}

/// Whether a group version is served.
pub fn serves_group_version(group: &str, version: &str) -> bool {
    GROUPS
        .iter()
        .any(|g| g.name == group && g.versions.contains(&version))
}

/// Discovery's `APIResource` entries for one resource: the resource itself,
/// then one per subresource (`pods/log`…), as in `/api/v1`.
pub fn api_resources(r: &Resource) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        main["categories"] = json!(r.categories);
    }
    if let Some(h) = r.storage_version_hash() {
        main["storageVersionHash"] = json!(h);
    }
    let mut out = vec![main];
    for s in r.subresources {
        let mut e = json!({
            "name": format!("{}/{}", r.plural, s.name),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": s.kind,
            "verbs": s.verbs,
        });
        // Discovery names the subresource's group/version only when it
        // differs from the parent's (e.g. deployments/scale → autoscaling/v1).
        if s.group != r.group || s.version != r.version {
            e["group"] = json!(s.group);
            e["version"] = json!(s.version);
        }
        out.push(e);
    }
    out
}

/// The legacy discovery document (`APIResourceList`) of one group version,
/// or `None` when the group version is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    if !serves_group_version(group, version) {
        return None;
    }
    let resources: Vec<Value> = in_group_version(group, version)
        .flat_map(api_resources)
        .collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

/// Sorted, de-duplicated index from every name kubectl may type (plural,
/// singular, short name, kind in lower case) to the resource; used by tools
/// that resolve `kubectl get <name>` style input without discovery.
pub fn resolve(name: &str) -> Option<&'static Resource> {
    static PREFERRED: LazyLock<Vec<&'static Resource>> = LazyLock::new(|| {
        // Preferred versions only, so `selfsubjectreviews` maps to v1.
        TABLE
            .iter()
            .filter(|r| {
                GROUPS
                    .iter()
                    .any(|g| g.name == r.group && g.versions.first() == Some(&r.version))
            })
            .collect()
    });
    let lower = name.to_ascii_lowercase();
    let (res, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    PREFERRED.iter().copied().find(|r| {
        group.as_deref().is_none_or(|g| g == r.group)
            && (r.plural == res
                || r.singular == res
                || r.short_names.contains(&res.as_str())
                || r.kind.eq_ignore_ascii_case(&res))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issue_resource_is_served() {
        let want = [
            ("", "namespaces"),
            ("", "pods"),
            ("", "services"),
            ("", "endpoints"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("", "events"),
            ("", "nodes"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("", "resourcequotas"),
            ("", "limitranges"),
            ("", "replicationcontrollers"),
            ("", "networks"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            ("coordination.k8s.io", "leases"),
            ("storage.k8s.io", "storageclasses"),
            ("storage.k8s.io", "volumeattachments"),
            ("networking.k8s.io", "networkpolicies"),
            ("authentication.k8s.io", "selfsubjectreviews"),
            ("authorization.k8s.io", "selfsubjectaccessreviews"),
            ("authorization.k8s.io", "subjectaccessreviews"),
            ("authorization.k8s.io", "localsubjectaccessreviews"),
            ("authorization.k8s.io", "selfsubjectrulesreviews"),
            ("authentication.k8s.io", "tokenreviews"),
            ("discovery.k8s.io", "endpointslices"),
            ("node.k8s.io", "runtimeclasses"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("policy", "poddisruptionbudgets"),
            ("certificates.k8s.io", "certificatesigningrequests"),
            ("events.k8s.io", "events"),
            ("tenancy.h8s.io", "tenants"),
            ("tenancy.h8s.io", "users"),
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
            (
                "admissionregistration.k8s.io",
                "validatingadmissionpolicies",
            ),
            (
                "admissionregistration.k8s.io",
                "validatingadmissionpolicybindings",
            ),
            ("apiregistration.k8s.io", "apiservices"),
        ];
        for (g, p) in want {
            let v = groups().iter().find(|x| x.name == g).unwrap().versions[0];
            let r = find(g, v, p).unwrap_or_else(|| panic!("{g}/{p} missing"));
            assert_eq!(find_kind(g, v, r.kind), Some(r));
        }
        assert!(find("authentication.k8s.io", "v1beta1", "selfsubjectreviews").is_some());
        assert!(find("", "v1", "bogus").is_none());
    }

    #[test]
    fn table_is_consistent() {
        for r in all() {
            assert!(
                serves_group_version(r.group, r.version),
                "{}: group not listed",
                r.plural
            );
            assert_eq!(
                r.has_status,
                r.subresource("status").is_some(),
                "{}",
                r.plural
            );
            assert_eq!(
                r.scale.is_some(),
                r.subresource("scale").is_some(),
                "{}",
                r.plural
            );
            // ComponentStatuses are listed but computed, never stored.
            assert_eq!(
                r.is_stored() || r.kind == "ComponentStatus",
                !r.list_kind.is_empty(),
                "{}",
                r.plural
            );
            assert_eq!(r.plural, r.plural.to_ascii_lowercase());
            // No two resources in a group version share a plural or kind.
            let same: Vec<_> = in_group_version(r.group, r.version)
                .filter(|o| o.plural == r.plural || o.kind == r.kind)
                .collect();
            assert_eq!(same.len(), 1, "{}", r.plural);
        }
    }

    #[test]
    fn storage_version_hash_matches_kube_apiserver() {
        // Values published by a real kube-apiserver.
        assert_eq!(
            find("", "v1", "pods")
                .unwrap()
                .storage_version_hash()
                .as_deref(),
            Some("xPOwRZ+Yhw8=")
        );
        assert_eq!(
            find("apps", "v1", "deployments")
                .unwrap()
                .storage_version_hash()
                .as_deref(),
            Some("8aSe+NMegvE=")
        );
        let ssar = find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap();
        assert_eq!(ssar.storage_version_hash(), None);
    }

    #[test]
    fn discovery_lists_subresources_with_foreign_kinds() {
        let list = api_resource_list("apps", "v1").unwrap();
        let res = list["resources"].as_array().unwrap();
        let scale = res
            .iter()
            .find(|e| e["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        let deploy = res.iter().find(|e| e["name"] == "deployments").unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        let core = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        for n in [
            "pods/log",
            "pods/exec",
            "pods/portforward",
            "namespaces/finalize",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let ns = &core["resources"][0];
        assert_eq!(ns["verbs"].as_array().unwrap().len(), 7);
        assert!(api_resource_list("apps", "v2").is_none());
    }

    #[test]
    fn field_values_follow_kubernetes() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.2"}], "podIP": "10.0.0.9"}});
        assert_eq!(pods.field_value(&pod, "metadata.name").unwrap(), "p");
        assert_eq!(pods.field_value(&pod, "spec.nodeName").unwrap(), "n1");
        assert_eq!(pods.field_value(&pod, "status.podIP").unwrap(), "10.0.0.2");
        assert_eq!(pods.field_value(&pod, "spec.hostNetwork").unwrap(), "false");
        assert_eq!(pods.field_value(&pod, "spec.schedulerName").unwrap(), "");
        assert_eq!(
            pods.field_value(&pod, "spec.foo").unwrap_err().to_string(),
            "field label not supported: spec.foo"
        );
        let ev = find("", "v1", "events").unwrap();
        let e = json!({"involvedObject": {"kind": "Pod", "uid": "u"}, "source": {"component": "kubelet"}});
        assert_eq!(ev.field_value(&e, "involvedObject.uid").unwrap(), "u");
        assert_eq!(ev.field_value(&e, "source").unwrap(), "kubelet");
        assert_eq!(ev.field_value(&e, "involvedObject.name").unwrap(), "");
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(nodes.field_value(&json!({}), "metadata.namespace").is_err());
        assert_eq!(
            nodes
                .field_value(
                    &json!({"spec": {"unschedulable": true}}),
                    "spec.unschedulable"
                )
                .unwrap(),
            "true"
        );
        let jobs = find("batch", "v1", "jobs").unwrap();
        assert_eq!(
            jobs.field_value(&json!({}), "status.successful").unwrap(),
            "0"
        );
        let secrets = find("", "v1", "secrets").unwrap();
        assert_eq!(
            secrets.selectable_fields(),
            vec!["metadata.name", "metadata.namespace", "type"]
        );
    }

    #[test]
    fn resolve_names_like_kubectl() {
        assert_eq!(resolve("po").unwrap().plural, "pods");
        assert_eq!(resolve("Deployment").unwrap().plural, "deployments");
        assert_eq!(resolve("deploy.apps").unwrap().plural, "deployments");
        assert_eq!(resolve("net").unwrap().kind, "Network");
        assert_eq!(resolve("selfsubjectreviews").unwrap().version, "v1");
        assert!(resolve("deploy.batch").is_none());
    }
}
