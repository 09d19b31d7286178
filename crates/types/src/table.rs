//! `meta.k8s.io/v1 Table` responses: the columns `kubectl get` prints for
//! each kind, computed on the server as kube-apiserver's printers do.
//!
//! Cells are plain strings and numbers; kubectl prints them as given, so
//! ages use Kubernetes' human duration format (`5m10s`, `3d`).

use crate::resources::Resource;
use crate::schema::schemas;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// What each row carries in `object` (`includeObject=` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value; `None` when unknown.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "Metadata" => Some(Self::Metadata),
            "None" => Some(Self::None),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// One column definition.
#[derive(Debug, Clone)]
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: u8,
    description: String,
}

fn doc(def: &str, prop: &str) -> String {
    schemas()
        .named(def)
        .and_then(|d| d.property(prop))
        .and_then(|p| p.value().get("description").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

fn col(name: &'static str, description: impl Into<String>) -> Col {
    Col {
        name,
        ty: "string",
        format: "",
        priority: 0,
        description: description.into(),
    }
}

fn int(name: &'static str, description: impl Into<String>) -> Col {
    Col {
        ty: "integer",
        ..col(name, description)
    }
}

fn wide(mut c: Col) -> Col {
    c.priority = 1;
    c
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn name_col() -> Col {
    Col {
        format: "name",
        ..col("Name", doc(META, "name"))
    }
}

fn age_col() -> Col {
    col("Age", doc(META, "creationTimestamp"))
}

/// Builds the Table for `items` of resource `r`. `list_meta` is the list's
/// metadata (resourceVersion, continue, remainingItemCount); `now` is the
/// time ages are computed against.
pub fn table(
    r: &Resource,
    items: &[Value],
    list_meta: &Value,
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (cols, row): (Vec<Col>, RowFn) = printer(r);
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = match (r.group, r.kind) {
                ("", "Event") => row(o, now),
                // One kind in two groups: the columns are the core kind's.
                ("events.k8s.io", "Event") => row(&crate::events::v1_to_core(o.clone()), now),
                _ => with_name(o, row(o, now)),
            };
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let columns: Vec<Value> = cols
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect();
    let metadata = if list_meta.is_object() {
        list_meta.clone()
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

type RowFn = fn(&Value, i64) -> Vec<Value>;

fn printer(r: &Resource) -> (Vec<Col>, RowFn) {
    let core = |t: &str| format!("io.k8s.api.core.v1.{t}");
    let apps = |t: &str| format!("io.k8s.api.apps.v1.{t}");
    match (r.group, r.kind) {
        ("", "Pod") => (
            vec![
                name_col(),
                col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
                col("Status", "The aggregate status of the containers in this pod."),
                col("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
                age_col(),
                wide(col("IP", doc(&core("PodStatus"), "podIP"))),
                wide(col("Node", doc(&core("PodSpec"), "nodeName"))),
                wide(col("Nominated Node", doc(&core("PodStatus"), "nominatedNodeName"))),
                wide(col("Readiness Gates", doc(&core("PodSpec"), "readinessGates"))),
            ],
            pod_row,
        ),
        ("", "Namespace") => (
            vec![
                name_col(),
                col("Status", "The status of the namespace"),
                age_col(),
            ],
            |o, now| vec![json!(s(o, "/status/phase")), age(o, now)],
        ),
        ("", "Network") => (
            vec![
                name_col(),
                col("Tenant", "The tenant owning the network."),
                col("Subnets", "The subnets' CIDRs."),
                col("Phase", "The phase of the network."),
                age_col(),
                wide(col("Gateways", "The subnets' gateways.")),
                wide(col("Provider ID", "The network's id in its provider.")),
            ],
            network_row,
        ),
        ("tenancy.h8s.io", "Tenant") => (
            vec![
                name_col(),
                col("Display Name", "A human-readable name of the tenant."),
                col("Enabled", "Whether the tenant's users may log in."),
                col("Phase", "Active or Terminating."),
                age_col(),
                wide(col("Quota", "The tenant-wide hard limits.")),
            ],
            tenant_row,
        ),
        ("tenancy.h8s.io", "User") => (
            vec![
                name_col(),
                col("Tenant", "The tenant the user belongs to."),
                col("Display Name", "A human-readable name of the user."),
                col("Roles", "The user's roles in its tenant."),
                col("Enabled", "Whether the user may log in."),
                age_col(),
                wide(col("Email", "The user's e-mail address.")),
                wide(col("Groups", "Extra groups of the user.")),
            ],
            user_row,
        ),
        ("apps", "Deployment") => (
            vec![
                name_col(),
                col("Ready", "Number of the pod with ready state"),
                int("Up-to-date", doc(&apps("DeploymentStatus"), "updatedReplicas")),
                int("Available", doc(&apps("DeploymentStatus"), "availableReplicas")),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
                wide(col("Selector", doc(&apps("DeploymentSpec"), "selector"))),
            ],
            |o, now| {
                let mut cells = vec![
                    json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))),
                    json!(i(o, "/status/updatedReplicas")),
                    json!(i(o, "/status/availableReplicas")),
                    age(o, now),
                ];
                cells.extend(containers_images(o, "/spec/template/spec"));
                cells.push(json!(label_selector(o.pointer("/spec/selector"))));
                cells
            },
        ),
        ("apps", "ReplicaSet") | ("", "ReplicationController") => (
            vec![
                name_col(),
                int("Desired", doc(&apps("ReplicaSetSpec"), "replicas")),
                int("Current", doc(&apps("ReplicaSetStatus"), "replicas")),
                int("Ready", doc(&apps("ReplicaSetStatus"), "readyReplicas")),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
                wide(col("Selector", doc(&apps("ReplicaSetSpec"), "selector"))),
            ],
            |o, now| {
                let mut cells = vec![
                    json!(i(o, "/spec/replicas")),
                    json!(i(o, "/status/replicas")),
                    json!(i(o, "/status/readyReplicas")),
                    age(o, now),
                ];
                cells.extend(containers_images(o, "/spec/template/spec"));
                let sel = o.pointer("/spec/selector");
                cells.push(json!(if sel.is_some_and(|s| s.get("matchLabels").is_some() || s.get("matchExpressions").is_some()) {
                    label_selector(sel)
                } else {
                    map_selector(sel)
                }));
                cells
            },
        ),
        ("apps", "StatefulSet") => (
            vec![
                name_col(),
                col("Ready", "Number of the pod with ready state"),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
            ],
            |o, now| {
                let mut cells = vec![
                    json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))),
                    age(o, now),
                ];
                cells.extend(containers_images(o, "/spec/template/spec"));
                cells
            },
        ),
        ("apps", "DaemonSet") => (
            vec![
                name_col(),
                int("Desired", doc(&apps("DaemonSetStatus"), "desiredNumberScheduled")),
                int("Current", doc(&apps("DaemonSetStatus"), "currentNumberScheduled")),
                int("Ready", doc(&apps("DaemonSetStatus"), "numberReady")),
                int("Up-to-date", doc(&apps("DaemonSetStatus"), "updatedNumberScheduled")),
                int("Available", doc(&apps("DaemonSetStatus"), "numberAvailable")),
                col("Node Selector", doc(&core("PodSpec"), "nodeSelector")),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
                wide(col("Selector", doc(&apps("DaemonSetSpec"), "selector"))),
            ],
            |o, now| {
                let mut cells = vec![
                    json!(i(o, "/status/desiredNumberScheduled")),
                    json!(i(o, "/status/currentNumberScheduled")),
                    json!(i(o, "/status/numberReady")),
                    json!(i(o, "/status/updatedNumberScheduled")),
                    json!(i(o, "/status/numberAvailable")),
                    json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
                    age(o, now),
                ];
                cells.extend(containers_images(o, "/spec/template/spec"));
                cells.push(json!(label_selector(o.pointer("/spec/selector"))));
                cells
            },
        ),
        ("apps", "ControllerRevision") => (
            vec![
                name_col(),
                col("Controller", "Controller of the object"),
                int("Revision", doc(&apps("ControllerRevision"), "revision")),
                age_col(),
            ],
            |o, now| {
                let ctl = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|r| r.get("controller") == Some(&json!(true))))
                    .map(|r| {
                        let (g, _) = crate::resources::split_api_version(r.get("apiVersion").and_then(Value::as_str).unwrap_or_default());
                        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default().to_lowercase();
                        let kind = if g.is_empty() { kind } else { format!("{kind}.{g}") };
                        format!("{kind}/{}", r.get("name").and_then(Value::as_str).unwrap_or_default())
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![json!(ctl), json!(i(o, "/revision")), age(o, now)]
            },
        ),
        ("batch", "Job") => (
            vec![
                name_col(),
                col("Status", "Status of the job."),
                col("Completions", "The completion status of the job."),
                col("Duration", "Time required to complete the job."),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
                wide(col("Selector", doc("io.k8s.api.batch.v1.JobSpec", "selector"))),
            ],
            job_row,
        ),
        ("batch", "CronJob") => (
            vec![
                name_col(),
                col("Schedule", doc("io.k8s.api.batch.v1.CronJobSpec", "schedule")),
                col("Timezone", doc("io.k8s.api.batch.v1.CronJobSpec", "timeZone")),
                col("Suspend", doc("io.k8s.api.batch.v1.CronJobSpec", "suspend")),
                int("Active", doc("io.k8s.api.batch.v1.CronJobStatus", "active")),
                col("Last Schedule", doc("io.k8s.api.batch.v1.CronJobStatus", "lastScheduleTime")),
                age_col(),
                wide(col("Containers", "Names of each container in the template.")),
                wide(col("Images", "Images referenced by each container in the template.")),
                wide(col("Selector", doc("io.k8s.api.batch.v1.JobSpec", "selector"))),
            ],
            |o, now| {
                let last = o
                    .pointer("/status/lastScheduleTime")
                    .and_then(Value::as_str)
                    .map_or_else(|| "<none>".to_string(), |t| since(t, now));
                let mut cells = vec![
                    json!(s(o, "/spec/schedule")),
                    json!(or_none(s(o, "/spec/timeZone"))),
                    json!(if o.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) { "True" } else { "False" }),
                    json!(o.pointer("/status/active").and_then(Value::as_array).map_or(0, Vec::len)),
                    json!(last),
                    age(o, now),
                ];
                cells.extend(containers_images(o, "/spec/jobTemplate/spec/template/spec"));
                cells.push(json!(label_selector(o.pointer("/spec/jobTemplate/spec/selector"))));
                cells
            },
        ),
        ("", "Service") => (
            vec![
                name_col(),
                col("Type", doc(&core("ServiceSpec"), "type")),
                col("Cluster-IP", doc(&core("ServiceSpec"), "clusterIP")),
                col("External-IP", doc(&core("ServiceSpec"), "externalIPs")),
                col("Port(s)", doc(&core("ServiceSpec"), "ports")),
                age_col(),
                wide(col("Selector", doc(&core("ServiceSpec"), "selector"))),
            ],
            service_row,
        ),
        ("", "Endpoints") => (
            vec![
                name_col(),
                col("Endpoints", doc(&core("Endpoints"), "subsets")),
                age_col(),
            ],
            |o, now| vec![json!(endpoints(o)), age(o, now)],
        ),
        ("", "Node") => (
            vec![
                name_col(),
                col("Status", "The status of the node"),
                col("Roles", "The roles of the node"),
                age_col(),
                col("Version", doc(&core("NodeSystemInfo"), "kubeletVersion")),
                wide(col("Internal-IP", doc(&core("NodeStatus"), "addresses"))),
                wide(col("External-IP", doc(&core("NodeStatus"), "addresses"))),
                wide(col("OS-Image", doc(&core("NodeSystemInfo"), "osImage"))),
                wide(col("Kernel-Version", doc(&core("NodeSystemInfo"), "kernelVersion"))),
                wide(col("Container-Runtime", doc(&core("NodeSystemInfo"), "containerRuntimeVersion"))),
            ],
            node_row,
        ),
        ("", "Event") | ("events.k8s.io", "Event") => (
            vec![
                col("Last Seen", doc(&core("Event"), "lastTimestamp")),
                col("Type", doc(&core("Event"), "type")),
                col("Reason", doc(&core("Event"), "reason")),
                col("Object", doc(&core("Event"), "involvedObject")),
                wide(col("Subobject", doc(&core("ObjectReference"), "fieldPath"))),
                wide(col("Source", doc(&core("Event"), "source"))),
                col("Message", doc(&core("Event"), "message")),
                wide(col("First Seen", doc(&core("Event"), "firstTimestamp"))),
                wide(int("Count", doc(&core("Event"), "count"))),
                wide(Col { format: "name", ..col("Name", doc(META, "name")) }),
            ],
            event_row,
        ),
        ("", "ConfigMap") => (
            vec![name_col(), int("Data", doc(&core("ConfigMap"), "data")), age_col()],
            |o, now| {
                let n = obj_len(o, "/data") + obj_len(o, "/binaryData");
                vec![json!(n), age(o, now)]
            },
        ),
        ("", "Secret") => (
            vec![
                name_col(),
                col("Type", doc(&core("Secret"), "type")),
                int("Data", doc(&core("Secret"), "data")),
                age_col(),
            ],
            |o, now| vec![json!(s(o, "/type")), json!(obj_len(o, "/data")), age(o, now)],
        ),
        ("", "ServiceAccount") => (
            vec![name_col(), int("Secrets", doc(&core("ServiceAccount"), "secrets")), age_col()],
            |o, now| {
                vec![
                    json!(o.get("secrets").and_then(Value::as_array).map_or(0, Vec::len)),
                    age(o, now),
                ]
            },
        ),
        ("", "PersistentVolume") => (
            vec![
                name_col(),
                col("Capacity", doc(&core("PersistentVolumeSpec"), "capacity")),
                col("Access Modes", doc(&core("PersistentVolumeSpec"), "accessModes")),
                col("Reclaim Policy", doc(&core("PersistentVolumeSpec"), "persistentVolumeReclaimPolicy")),
                col("Status", doc(&core("PersistentVolumeStatus"), "phase")),
                col("Claim", doc(&core("PersistentVolumeSpec"), "claimRef")),
                col("StorageClass", "StorageClass of the pv"),
                col("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
                col("Reason", doc(&core("PersistentVolumeStatus"), "reason")),
                age_col(),
                wide(col("VolumeMode", doc(&core("PersistentVolumeSpec"), "volumeMode"))),
            ],
            |o, now| {
                let claim = match (s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name")) {
                    (_, "") => String::new(),
                    (ns, n) => format!("{ns}/{n}"),
                };
                vec![
                    json!(s(o, "/spec/capacity/storage")),
                    json!(access_modes(o)),
                    json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                    json!(s(o, "/status/phase")),
                    json!(claim),
                    json!(s(o, "/spec/storageClassName")),
                    json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                    json!(s(o, "/status/reason")),
                    age(o, now),
                    json!(or_unset(s(o, "/spec/volumeMode"))),
                ]
            },
        ),
        ("", "PersistentVolumeClaim") => (
            vec![
                name_col(),
                col("Status", doc(&core("PersistentVolumeClaimStatus"), "phase")),
                col("Volume", doc(&core("PersistentVolumeClaimSpec"), "volumeName")),
                col("Capacity", doc(&core("PersistentVolumeClaimStatus"), "capacity")),
                col("Access Modes", doc(&core("PersistentVolumeClaimStatus"), "accessModes")),
                col("StorageClass", "StorageClass of the pvc"),
                col("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
                age_col(),
                wide(col("VolumeMode", doc(&core("PersistentVolumeClaimSpec"), "volumeMode"))),
            ],
            |o, now| {
                let bound = s(o, "/status/phase") == "Bound";
                vec![
                    json!(s(o, "/status/phase")),
                    json!(s(o, "/spec/volumeName")),
                    json!(if bound { s(o, "/status/capacity/storage") } else { "" }),
                    json!(if bound { access_modes_at(o, "/status/accessModes") } else { String::new() }),
                    json!(s(o, "/spec/storageClassName")),
                    json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                    age(o, now),
                    json!(or_unset(s(o, "/spec/volumeMode"))),
                ]
            },
        ),
        ("", "ResourceQuota") => (
            vec![
                name_col(),
                age_col(),
                col("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
                col("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
            ],
            |o, now| {
                let (mut req, mut lim) = (Vec::new(), Vec::new());
                if let Some(hard) = o.pointer("/status/hard").or_else(|| o.pointer("/spec/hard")).and_then(Value::as_object) {
                    let mut keys: Vec<&String> = hard.keys().collect();
                    keys.sort();
                    for k in keys {
                        let used = o.pointer(&format!("/status/used/{}", k.replace('~', "~0").replace('/', "~1"))).and_then(Value::as_str).unwrap_or("0");
                        let cell = format!("{k}: {used}/{}", hard[k].as_str().unwrap_or_default());
                        if k.starts_with("limits.") { lim.push(cell) } else { req.push(cell) }
                    }
                }
                vec![age(o, now), json!(req.join(", ")), json!(lim.join(", "))]
            },
        ),
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => (
            vec![name_col(), col("Created At", doc(META, "creationTimestamp"))],
            |o, _| vec![json!(s(o, "/metadata/creationTimestamp"))],
        ),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => (
            vec![
                name_col(),
                col("Role", "Role of the binding"),
                age_col(),
                wide(col("Users", "Users of the binding")),
                wide(col("Groups", "Groups of the binding")),
                wide(col("ServiceAccounts", "ServiceAccounts of the binding")),
            ],
            |o, now| {
                let subjects = |kind: &str| {
                    o.get("subjects")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter(|x| x.get("kind").and_then(Value::as_str) == Some(kind))
                                .map(|x| {
                                    let n = x.get("name").and_then(Value::as_str).unwrap_or_default();
                                    match x.get("namespace").and_then(Value::as_str) {
                                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{n}"),
                                        _ => n.to_string(),
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                };
                vec![
                    json!(format!("{}/{}", s(o, "/roleRef/kind"), s(o, "/roleRef/name"))),
                    age(o, now),
                    json!(subjects("User")),
                    json!(subjects("Group")),
                    json!(subjects("ServiceAccount")),
                ]
            },
        ),
        ("coordination.k8s.io", "Lease") => (
            vec![
                name_col(),
                col("Holder", doc("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")),
                age_col(),
            ],
            |o, now| vec![json!(s(o, "/spec/holderIdentity")), age(o, now)],
        ),
        ("storage.k8s.io", "VolumeAttachment") => (
            vec![
                name_col(),
                col("Attacher", doc("io.k8s.api.storage.v1.VolumeAttachmentSpec", "attacher")),
                col("PV", doc("io.k8s.api.storage.v1.VolumeAttachmentSource", "persistentVolumeName")),
                col("Node", doc("io.k8s.api.storage.v1.VolumeAttachmentSpec", "nodeName")),
                Col { ty: "boolean", ..col("Attached", doc("io.k8s.api.storage.v1.VolumeAttachmentStatus", "attached")) },
                age_col(),
            ],
            |o, now| {
                vec![
                    json!(s(o, "/spec/attacher")),
                    json!(s(o, "/spec/source/persistentVolumeName")),
                    json!(s(o, "/spec/nodeName")),
                    json!(o.pointer("/status/attached").and_then(Value::as_bool).unwrap_or(false)),
                    age(o, now),
                ]
            },
        ),
        ("storage.k8s.io", "StorageClass") => (
            vec![
                name_col(),
                col("Provisioner", doc("io.k8s.api.storage.v1.StorageClass", "provisioner")),
                col("ReclaimPolicy", doc("io.k8s.api.storage.v1.StorageClass", "reclaimPolicy")),
                col("VolumeBindingMode", doc("io.k8s.api.storage.v1.StorageClass", "volumeBindingMode")),
                col("AllowVolumeExpansion", doc("io.k8s.api.storage.v1.StorageClass", "allowVolumeExpansion")),
                age_col(),
            ],
            |o, now| {
                vec![
                    json!(s(o, "/provisioner")),
                    json!(or_default(s(o, "/reclaimPolicy"), "Delete")),
                    json!(or_default(s(o, "/volumeBindingMode"), "Immediate")),
                    json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).to_string()),
                    age(o, now),
                ]
            },
        ),
        ("networking.k8s.io", "NetworkPolicy") => (
            vec![
                name_col(),
                col("Pod-Selector", doc("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector")),
                age_col(),
            ],
            |o, now| {
                let sel = label_selector(o.pointer("/spec/podSelector"));
                vec![json!(if sel == "<none>" { String::new() } else { sel }), age(o, now)]
            },
        ),
        ("discovery.k8s.io", "EndpointSlice") => {
            let d = |p: &str| doc("io.k8s.api.discovery.v1.EndpointSlice", p);
            (
                vec![
                    name_col(),
                    col("AddressType", d("addressType")),
                    col("Ports", d("ports")),
                    col("Endpoints", d("endpoints")),
                    age_col(),
                ],
                |o, now| {
                    vec![
                        json!(s(o, "/addressType")),
                        json!(slice_ports(o)),
                        json!(slice_endpoints(o)),
                        age(o, now),
                    ]
                },
            )
        }
        ("node.k8s.io", "RuntimeClass") => (
            vec![
                name_col(),
                col("Handler", "Handler is the name of the underlying runtime and configuration."),
                age_col(),
            ],
            |o, now| vec![json!(s(o, "/handler")), age(o, now)],
        ),
        ("scheduling.k8s.io", "PriorityClass") => {
            let d = |p: &str| doc("io.k8s.api.scheduling.v1.PriorityClass", p);
            (
                vec![
                    name_col(),
                    int("Value", d("value")),
                    Col { ty: "boolean", ..col("Global-Default", d("globalDefault")) },
                    age_col(),
                    col("PreemptionPolicy", d("preemptionPolicy")),
                ],
                |o, now| {
                    vec![
                        json!(i(o, "/value")),
                        json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
                        age(o, now),
                        json!(s(o, "/preemptionPolicy")),
                    ]
                },
            )
        }
        ("policy", "PodDisruptionBudget") => (
            vec![
                name_col(),
                col("Min Available", "The minimum number of pods that must be available."),
                col("Max Unavailable", "The maximum number of pods that may be unavailable."),
                int("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time."),
                age_col(),
            ],
            |o, now| {
                vec![
                    json!(int_or_string(o.pointer("/spec/minAvailable"))),
                    json!(int_or_string(o.pointer("/spec/maxUnavailable"))),
                    json!(i(o, "/status/disruptionsAllowed")),
                    age(o, now),
                ]
            },
        ),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let d = |p: &str| doc("io.k8s.api.certificates.v1.CertificateSigningRequestSpec", p);
            (
                vec![
                    name_col(),
                    age_col(),
                    col("SignerName", d("signerName")),
                    col("Requestor", "Name of the user that created the request"),
                    col("RequestedDuration", d("expirationSeconds")),
                    col("Condition", doc("io.k8s.api.certificates.v1.CertificateSigningRequestStatus", "conditions")),
                ],
                |o, now| {
                    let duration = match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
                        Some(secs) => human_duration(secs),
                        None => "<none>".into(),
                    };
                    vec![
                        age(o, now),
                        json!(or_none(s(o, "/spec/signerName"))),
                        json!(s(o, "/spec/username")),
                        json!(duration),
                        json!(csr_condition(o)),
                    ]
                },
            )
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration") => (
            vec![
                name_col(),
                int("Webhooks", "Webhooks indicates the number of webhooks registered in this configuration."),
                age_col(),
            ],
            |o, now| vec![json!(obj_len(o, "/webhooks")), age(o, now)],
        ),
        ("apiregistration.k8s.io", "APIService") => (
            vec![
                name_col(),
                col("Service", "The reference to the service that hosts this API endpoint."),
                col("Available", "Whether this service is available."),
                age_col(),
            ],
            |o, now| {
                let service = match (s(o, "/spec/service/namespace"), s(o, "/spec/service/name")) {
                    (_, "") => "Local".to_string(),
                    (ns, n) => format!("{ns}/{n}"),
                };
                let cond = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Available"));
                let available = match cond {
                    None => "Unknown".to_string(),
                    Some(c) if c["status"] == "True" => "True".to_string(),
                    Some(c) => format!("{} ({})", s(c, "/status"), s(c, "/reason")),
                };
                vec![json!(service), json!(available), age(o, now)]
            },
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => (
            vec![
                name_col(),
                int("Validations", "Validations indicates the number of validation rules in this policy."),
                col("ParamKind", "ParamKind specifies the kind of resources used to parameterize this policy"),
                age_col(),
            ],
            |o, now| {
                let pk = match (s(o, "/spec/paramKind/apiVersion"), s(o, "/spec/paramKind/kind")) {
                    ("", "") => "<unset>".to_string(),
                    (v, k) => format!("{v}/{k}"),
                };
                vec![json!(obj_len(o, "/spec/validations")), json!(pk), age(o, now)]
            },
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => (
            vec![
                name_col(),
                col("PolicyName", "PolicyName indicates the policy definition which the policy binding binded to."),
                col("ParamRef", "ParamRef indicates the param resource which sets the configration param"),
                age_col(),
            ],
            |o, now| {
                let pr = match (s(o, "/spec/paramRef/namespace"), s(o, "/spec/paramRef/name")) {
                    (_, "") if o.pointer("/spec/paramRef/selector").is_some() => {
                        label_selector(o.pointer("/spec/paramRef/selector"))
                    }
                    (_, "") => "<unset>".to_string(),
                    ("", n) => format!("*/{n}"),
                    (ns, n) => format!("{ns}/{n}"),
                };
                vec![json!(s(o, "/spec/policyName")), json!(pr), age(o, now)]
            },
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => (
            vec![
                name_col(),
                Col {
                    ty: "date",
                    ..col("Created At", doc(META, "creationTimestamp"))
                },
            ],
            |o, _| vec![json!(s(o, "/metadata/creationTimestamp"))],
        ),
        ("", "PodTemplate") => (
            vec![
                name_col(),
                col("Containers", "Names of each container in the template."),
                col("Images", "Images referenced by each container in the template."),
                col("Pod Labels", "The labels for the pod template."),
            ],
            |o, _| {
                let [c, i] = containers_images(o, "/template/spec");
                vec![c, i, json!(labels_string(o.pointer("/template/metadata/labels")))]
            },
        ),
        ("", "ComponentStatus") => (
            vec![
                name_col(),
                col("Status", "Status of the component conditions"),
                col("Message", "Message of the component conditions"),
                col("Error", "Error of the component conditions"),
            ],
            |o, _| {
                let healthy = o
                    .get("conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"));
                let (st, msg, err) = match healthy {
                    Some(c) => (
                        if c["status"] == "True" { "Healthy" } else { "Unhealthy" },
                        s(c, "/message"),
                        s(c, "/error"),
                    ),
                    None => ("Unknown", "", ""),
                };
                vec![json!(st), json!(msg), json!(err)]
            },
        ),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let d = |p: &str| doc("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", p);
            (
                vec![
                    name_col(),
                    col("Reference", d("scaleTargetRef")),
                    col("Targets", d("metrics")),
                    col("MinPods", d("minReplicas")),
                    int("MaxPods", d("maxReplicas")),
                    int("Replicas", doc("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "currentReplicas")),
                    age_col(),
                ],
                |o, now| {
                    let v2 = if s(o, "/apiVersion") == "autoscaling/v1" {
                        crate::autoscaling::v1_to_v2(o.clone())
                    } else {
                        o.clone()
                    };
                    let min = match v2.pointer("/spec/minReplicas").and_then(Value::as_i64) {
                        Some(m) => m.to_string(),
                        None => "<unset>".into(),
                    };
                    vec![
                        json!(format!("{}/{}", s(&v2, "/spec/scaleTargetRef/kind"), s(&v2, "/spec/scaleTargetRef/name"))),
                        json!(hpa_metrics(&v2)),
                        json!(min),
                        json!(i(&v2, "/spec/maxReplicas")),
                        json!(i(&v2, "/status/currentReplicas")),
                        age(o, now),
                    ]
                },
            )
        }
        ("networking.k8s.io", "Ingress") => {
            let d = |p: &str| doc("io.k8s.api.networking.v1.IngressSpec", p);
            (
                vec![
                    name_col(),
                    col("Class", d("ingressClassName")),
                    col("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
                    col("Address", "Address is a list containing ingress points for the load-balancer"),
                    col("Ports", "Ports of TLS configurations that open"),
                    age_col(),
                ],
                |o, now| {
                    let rules = o.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    let hosts: Vec<String> = rules
                        .iter()
                        .map(|r| or_default(s(r, "/host"), "*").to_string())
                        .collect();
                    let n = hosts.len();
                    let hosts = if n == 0 { "*".to_string() } else { list_with_more(hosts, n) };
                    let lbs = o.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    let addrs: Vec<&str> = lbs
                        .iter()
                        .map(|l| or_default(s(l, "/ip"), s(l, "/hostname")))
                        .filter(|a| !a.is_empty())
                        .collect();
                    let tls = o.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
                    vec![
                        json!(or_none(s(o, "/spec/ingressClassName"))),
                        json!(hosts),
                        json!(addrs.join(",")),
                        json!(if tls { "80, 443" } else { "80" }),
                        age(o, now),
                    ]
                },
            )
        }
        ("networking.k8s.io", "IngressClass") => {
            let d = |p: &str| doc("io.k8s.api.networking.v1.IngressClassSpec", p);
            (
                vec![
                    name_col(),
                    col("Controller", d("controller")),
                    col("Parameters", d("parameters")),
                    age_col(),
                ],
                |o, now| {
                    let params = match o.pointer("/spec/parameters").filter(|p| p.is_object()) {
                        None => "<none>".to_string(),
                        Some(p) => {
                            let mut k = s(p, "/kind").to_string();
                            if let Some(g) = p.get("apiGroup").and_then(Value::as_str) {
                                k = format!("{k}.{g}");
                            }
                            format!("{k}/{}", s(p, "/name"))
                        }
                    };
                    vec![json!(s(o, "/spec/controller")), json!(params), age(o, now)]
                },
            )
        }
        ("networking.k8s.io", "ServiceCIDR") => (
            vec![
                name_col(),
                col("CIDRs", doc("io.k8s.api.networking.v1.ServiceCIDRSpec", "cidrs")),
                age_col(),
            ],
            |o, now| vec![json!(joined(o, "/spec/cidrs")), age(o, now)],
        ),
        ("networking.k8s.io", "IPAddress") => (
            vec![
                name_col(),
                col("ParentRef", doc("io.k8s.api.networking.v1.IPAddressSpec", "parentRef")),
                age_col(),
            ],
            |o, now| {
                let parent = match o.pointer("/spec/parentRef").filter(|p| p.is_object()) {
                    None => "<none>".to_string(),
                    Some(p) => {
                        let (g, r) = (s(p, "/group"), s(p, "/resource"));
                        let mut out = if g.is_empty() { r.to_string() } else { format!("{r}.{g}") };
                        out = out.to_lowercase();
                        if !s(p, "/namespace").is_empty() {
                            out = format!("{out}/{}", s(p, "/namespace"));
                        }
                        format!("{out}/{}", s(p, "/name"))
                    }
                };
                vec![json!(parent), age(o, now)]
            },
        ),
        ("storage.k8s.io", "CSIDriver") => {
            let d = |p: &str| doc("io.k8s.api.storage.v1.CSIDriverSpec", p);
            (
                vec![
                    name_col(),
                    col("AttachRequired", d("attachRequired")),
                    col("PodInfoOnMount", d("podInfoOnMount")),
                    col("StorageCapacity", d("storageCapacity")),
                    col("TokenRequests", d("tokenRequests")),
                    col("RequiresRepublish", d("requiresRepublish")),
                    col("Modes", d("volumeLifecycleModes")),
                    age_col(),
                ],
                |o, now| {
                    let b = |f: &str| json!(o.pointer(&format!("/spec/{f}")).and_then(Value::as_bool).unwrap_or(false));
                    let audiences: Vec<&str> = o
                        .pointer("/spec/tokenRequests")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().map(|t| s(t, "/audience")).collect())
                        .unwrap_or_default();
                    vec![
                        b("attachRequired"),
                        b("podInfoOnMount"),
                        b("storageCapacity"),
                        json!(or_unset(&audiences.join(","))),
                        b("requiresRepublish"),
                        json!(or_none(&joined(o, "/spec/volumeLifecycleModes"))),
                        age(o, now),
                    ]
                },
            )
        }
        ("storage.k8s.io", "CSINode") => (
            vec![
                name_col(),
                int("Drivers", "Drivers indicates the number of CSI drivers registered on the node"),
                age_col(),
            ],
            |o, now| {
                let n = o.pointer("/spec/drivers").and_then(Value::as_array).map_or(0, Vec::len);
                vec![json!(n), age(o, now)]
            },
        ),
        ("storage.k8s.io", "CSIStorageCapacity") => {
            let d = |p: &str| doc("io.k8s.api.storage.v1.CSIStorageCapacity", p);
            (
                vec![
                    name_col(),
                    col("StorageClassName", d("storageClassName")),
                    col("Capacity", d("capacity")),
                    age_col(),
                ],
                |o, now| {
                    let cap = o.get("capacity").and_then(Value::as_str).unwrap_or("<unset>");
                    vec![json!(s(o, "/storageClassName")), json!(cap), age(o, now)]
                },
            )
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            let d = |p: &str| doc("io.k8s.api.flowcontrol.v1.FlowSchemaSpec", p);
            (
                vec![
                    name_col(),
                    col("PriorityLevel", d("priorityLevelConfiguration")),
                    int("MatchingPrecedence", d("matchingPrecedence")),
                    col("DistinguisherMethod", d("distinguisherMethod")),
                    age_col(),
                    col("MissingPL", "references a broken or non-existent PriorityLevelConfiguration"),
                ],
                |o, now| {
                    let dm = or_default(s(o, "/spec/distinguisherMethod/type"), "*");
                    let missing = o
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|c| c["type"] == "Dangling"))
                        .map_or("?", |c| s(c, "/status"));
                    vec![
                        json!(s(o, "/spec/priorityLevelConfiguration/name")),
                        json!(i(o, "/spec/matchingPrecedence")),
                        json!(dm),
                        age(o, now),
                        json!(missing),
                    ]
                },
            )
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            let d = |p: &str| doc("io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationSpec", p);
            (
                vec![
                    name_col(),
                    col("Type", d("type")),
                    col("NominalConcurrencyShares", "nominalConcurrencyShares of the priority level"),
                    col("Queues", "queues of the priority level"),
                    col("HandSize", "handSize of the priority level"),
                    col("QueueLengthLimit", "queueLengthLimit of the priority level"),
                    age_col(),
                ],
                |o, now| {
                    let none = || json!("<none>");
                    let (mut ncs, mut q, mut h, mut l) = (none(), none(), none(), none());
                    if s(o, "/spec/type") == "Limited" {
                        if let Some(n) = o.pointer("/spec/limited/nominalConcurrencyShares").and_then(Value::as_i64) {
                            ncs = json!(n.to_string());
                        }
                        if s(o, "/spec/limited/limitResponse/type") == "Queuing" {
                            let qp = |f: &str| json!(i(o, &format!("/spec/limited/limitResponse/queuing/{f}")).to_string());
                            (q, h, l) = (qp("queues"), qp("handSize"), qp("queueLengthLimit"));
                        }
                    }
                    vec![json!(s(o, "/spec/type")), ncs, q, h, l, age(o, now)]
                },
            )
        }
        _ => (vec![name_col(), age_col()], |o, now| vec![age(o, now)]),
    }
}

/// Kubernetes' `formatHPAMetrics`: `name: current/target` per metric, three at most.
fn hpa_metrics(o: &Value) -> String {
    let specs = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let unknown = "<unknown>".to_string();
    let q = |v: &Value, p: &str| {
        v.pointer(p).map(|x| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let st = statuses.get(n);
            match s(m, "/type") {
                t @ ("Resource" | "ContainerResource") => {
                    let key = if t == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let src = &m[key];
                    let cur = st.map(|c| &c[key]).filter(|c| c.is_object());
                    let name = s(src, "/name");
                    let prefix = if t == "Resource" {
                        name.to_string()
                    } else {
                        format!("{name} on {}", s(src, "/container"))
                    };
                    if let Some(av) = q(src, "/target/averageValue") {
                        let c = cur
                            .and_then(|c| q(c, "/current/averageValue"))
                            .unwrap_or_else(|| unknown.clone());
                        format!("{prefix}: {c}/{av}")
                    } else {
                        let c = cur
                            .and_then(|c| {
                                c.pointer("/current/averageUtilization")
                                    .and_then(Value::as_i64)
                            })
                            .map_or_else(|| unknown.clone(), |u| format!("{u}%"));
                        let target = src
                            .pointer("/target/averageUtilization")
                            .and_then(Value::as_i64)
                            .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                        format!("{prefix}: {c}/{target}")
                    }
                }
                t @ ("Pods" | "Object" | "External") => {
                    let key = match t {
                        "Pods" => "pods",
                        "Object" => "object",
                        _ => "external",
                    };
                    let src = &m[key];
                    let cur = st.map(|c| &c[key]).filter(|c| c.is_object());
                    let (tp, cp) = match q(src, "/target/averageValue") {
                        Some(av) => (format!("{av} (avg)"), "/current/averageValue"),
                        None => (
                            q(src, "/target/value").unwrap_or_default(),
                            "/current/value",
                        ),
                    };
                    let c = cur
                        .and_then(|c| q(c, cp))
                        .unwrap_or_else(|| unknown.clone());
                    let c = if tp.ends_with("(avg)") && c != unknown && t != "Pods" {
                        format!("{c} (avg)")
                    } else {
                        c
                    };
                    format!("{c}/{tp}")
                }
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    // Unlike other lists, the metrics are joined with ", ".
    const MAX: usize = 3;
    let n = list.len();
    let shown = list.into_iter().take(MAX).collect::<Vec<_>>().join(", ");
    if n > MAX {
        format!("{shown} + {} more...", n - MAX)
    } else {
        shown
    }
}

/// Labels as `k=v,k2=v2` (sorted), `<none>` when there are none.
fn labels_string(l: Option<&Value>) -> String {
    map_selector(l)
}

/// `IntOrString.String()`, `N/A` when unset (the PodDisruptionBudget columns).
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".into(),
    }
}

/// kubectl's `listWithMoreString`: the first three, then `+ N more...`; `<unset>`
/// when empty.
fn list_with_more(list: Vec<String>, count: usize) -> String {
    const MAX: usize = 3;
    let shown = list.into_iter().take(MAX).collect::<Vec<_>>().join(",");
    if count > MAX {
        format!("{shown} + {} more...", count - MAX)
    } else if shown.is_empty() {
        "<unset>".into()
    } else {
        shown
    }
}

/// An EndpointSlice's ports: the number, else the name, else `*`.
fn slice_ports(o: &Value) -> String {
    let ports = o
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let list = ports
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => match p.get("name").and_then(Value::as_str) {
                Some(n) => n.to_string(),
                None => "*".into(),
            },
        })
        .collect();
    list_with_more(list, ports.len())
}

/// An EndpointSlice's addresses, over all its endpoints.
fn slice_endpoints(o: &Value) -> String {
    let list: Vec<String> = o
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e.get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let n = list.len();
    list_with_more(list, n)
}

/// kubectl's CSR condition: `Approved`, `Denied` or `Pending`, then `,Failed` and
/// `,Issued`.
fn csr_condition(o: &Value) -> String {
    let has = |t: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !s(o, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

/// Row functions leave the name out (every printer but the events' starts
/// with it); this puts it first.
fn with_name(o: &Value, rest: Vec<Value>) -> Vec<Value> {
    let mut v = vec![json!(s(o, "/metadata/name"))];
    v.extend(rest);
    v
}

fn s<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn i(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn obj_len(o: &Value, ptr: &str) -> usize {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn or_none(v: &str) -> &str {
    if v.is_empty() {
        "<none>"
    } else {
        v
    }
}

fn or_unset(v: &str) -> &str {
    if v.is_empty() {
        "<unset>"
    } else {
        v
    }
}

fn or_default<'a>(v: &'a str, d: &'a str) -> &'a str {
    if v.is_empty() {
        d
    } else {
        v
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp.
pub fn parse_time(t: &str) -> Option<i64> {
    t.parse::<Timestamp>().ok().map(|ts| ts.as_second())
}

/// `creationTimestamp` as an age, `<unknown>` when missing.
fn age(o: &Value, now: i64) -> Value {
    json!(since(s(o, "/metadata/creationTimestamp"), now))
}

fn since(t: &str, now: i64) -> String {
    match parse_time(t) {
        Some(ts) => human_duration(now - ts),
        None => "<unknown>".into(),
    }
}

/// Kubernetes' `duration.HumanDuration`: two significant units at most,
/// fewer the older it gets (`45s`, `5m10s`, `3h4m`, `3d2h`, `400d`, `2y3d`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `metav1.FormatLabelSelector`: `app=a,tier in (x,y),!gone`, `<none>` for
/// a missing or empty selector.
pub fn label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut kv: Vec<(&String, &str)> = ml
            .iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
            .collect();
        kv.sort();
        parts.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    for req in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = req.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut vals: Vec<&str> = req
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        vals.sort_unstable();
        let vals = vals.join(",");
        parts.push(
            match req
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => format!("{key} in ({vals})"),
                "NotIn" => format!("{key} notin ({vals})"),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                op => format!("{key} {op} ({vals})"),
            },
        );
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn map_selector(sel: Option<&Value>) -> String {
    let Some(m) = sel.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut kv: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    kv.sort();
    kv.join(",")
}

fn containers_images(o: &Value, spec_ptr: &str) -> [Value; 2] {
    let cs = o
        .pointer(&format!("{spec_ptr}/containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    [json!(names.join(",")), json!(images.join(","))]
}

fn access_modes_at(o: &Value, ptr: &str) -> String {
    let modes: Vec<&str> = o
        .pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out: Vec<&str> = Vec::new();
    for (full, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&full) {
            out.push(short);
        }
    }
    out.join(",")
}

fn access_modes(o: &Value) -> String {
    access_modes_at(o, "/spec/accessModes")
}

fn pod_row(o: &Value, now: i64) -> Vec<Value> {
    let spec_containers = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let init_specs = o
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Restartable init containers (sidecars) count as containers.
    let sidecars: Vec<&str> = init_specs
        .iter()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .map(|c| s(c, "/name"))
        .collect();
    let total = spec_containers + sidecars.len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<i64> = None;
    let mut note_restart = |cs: &Value, restarts: &mut i64| {
        *restarts += cs.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = cs
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(parse_time)
        {
            last_restart = Some(last_restart.map_or(t, |l: i64| l.max(t)));
        }
    };
    let mut reason = s(o, "/status/phase").to_string();
    if !s(o, "/status/reason").is_empty() {
        reason = s(o, "/status/reason").to_string();
    }
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if conditions
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_statuses = o
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut initializing = false;
    for (idx, cs) in init_statuses.iter().enumerate() {
        note_restart(cs, &mut restarts);
        let is_sidecar = sidecars.contains(&s(cs, "/name"));
        if is_sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = cs.pointer("/state/terminated") {
            if t.get("exitCode").and_then(Value::as_i64) == Some(0) {
                continue;
            }
            reason = if !s(t, "/reason").is_empty() {
                format!("Init:{}", s(t, "/reason"))
            } else if let Some(sig) = t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                format!("Init:Signal:{sig}")
            } else {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            };
        } else if !s(cs, "/state/waiting/reason").is_empty()
            && s(cs, "/state/waiting/reason") != "PodInitializing"
        {
            reason = format!("Init:{}", s(cs, "/state/waiting/reason"));
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        let statuses = o
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for cs in statuses.iter().rev() {
            note_restart(cs, &mut restarts);
            if !s(cs, "/state/waiting/reason").is_empty() {
                reason = s(cs, "/state/waiting/reason").to_string();
            } else if let Some(t) = cs.pointer("/state/terminated") {
                reason = if !s(t, "/reason").is_empty() {
                    s(t, "/reason").to_string()
                } else if let Some(sig) =
                    t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0)
                {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(o, "/status/reason") == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let gates = o
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_gates = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(o, now),
        json!(or_none(s(o, "/status/podIP"))),
        json!(or_none(s(o, "/spec/nodeName"))),
        json!(or_none(s(o, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ]
}

fn network_row(o: &Value, now: i64) -> Vec<Value> {
    let subnets = o.pointer("/spec/subnets").and_then(Value::as_object);
    let list = |f: &str| {
        subnets
            .map(|m| {
                m.values()
                    .map(|sn| s(sn, &format!("/{f}")).to_string())
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    vec![
        json!(or_none(s(o, "/spec/tenantID"))),
        json!(or_none(&list("cidr"))),
        json!(or_none(s(o, "/status/phase"))),
        age(o, now),
        json!(or_none(&list("gateway"))),
        json!(or_none(s(o, "/spec/providerNetworkID"))),
    ]
}

fn enabled(o: &Value) -> Value {
    json!(o.pointer("/spec/enabled").and_then(Value::as_bool) != Some(false))
}

fn joined(o: &Value, ptr: &str) -> String {
    arr_strs(o, ptr).join(",")
}

fn arr_strs<'a>(o: &'a Value, ptr: &str) -> Vec<&'a str> {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn tenant_row(o: &Value, now: i64) -> Vec<Value> {
    let quota = o
        .pointer("/spec/quota/hard")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        json!(or_none(s(o, "/spec/displayName"))),
        enabled(o),
        json!(or_none(s(o, "/status/phase"))),
        age(o, now),
        json!(or_none(&quota)),
    ]
}

fn user_row(o: &Value, now: i64) -> Vec<Value> {
    vec![
        json!(s(o, "/spec/tenant")),
        json!(or_none(s(o, "/spec/displayName"))),
        json!(or_none(&joined(o, "/spec/roles"))),
        enabled(o),
        age(o, now),
        json!(or_none(s(o, "/spec/email"))),
        json!(or_none(&joined(o, "/spec/groups"))),
    ]
}

fn job_row(o: &Value, now: i64) -> Vec<Value> {
    let succeeded = i(o, "/status/succeeded");
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let p = o
                .pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if p > 1 {
                format!("{succeeded}/1 of {p}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let cond = |t: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
            })
    };
    let status = if cond("Failed") {
        "Failed"
    } else if cond("Complete") {
        "Complete"
    } else if cond("Suspended") {
        "Suspended"
    } else if cond("FailureTarget") {
        "FailureTarget"
    } else if cond("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let start = o
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let end = o
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(st), None) => human_duration(now - st),
        (Some(st), Some(en)) => human_duration(en - st),
    };
    let mut cells = vec![
        json!(status),
        json!(completions),
        json!(duration),
        age(o, now),
    ];
    cells.extend(containers_images(o, "/spec/template/spec"));
    cells.push(json!(label_selector(o.pointer("/spec/selector"))));
    cells
}

fn service_row(o: &Value, now: i64) -> Vec<Value> {
    let ty = or_default(s(o, "/spec/type"), "ClusterIP");
    let external_ips: Vec<&str> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let lb: Vec<&str> = o
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.get("ip")
                        .or_else(|| x.get("hostname"))
                        .and_then(Value::as_str)
                })
                .collect()
        })
        .unwrap_or_default();
    let external = match ty {
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        "LoadBalancer" | crate::network::NETWORK_PROVIDER => {
            let mut all = lb.clone();
            all.extend(&external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        _ if !external_ips.is_empty() => external_ips.join(","),
        _ => "<none>".to_string(),
    };
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = or_default(s(p, "/protocol"), "TCP");
                    match p
                        .get("nodePort")
                        .and_then(Value::as_i64)
                        .filter(|n| *n != 0)
                    {
                        Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                        None => format!("{}/{proto}", i(p, "/port")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(ty),
        json!(or_none(s(o, "/spec/clusterIP"))),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        age(o, now),
        json!(map_selector(o.pointer("/spec/selector"))),
    ]
}

fn endpoints(o: &Value) -> String {
    let mut list: Vec<String> = Vec::new();
    let mut total = 0;
    for sub in o
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = sub
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| i(p, "/port")).collect())
            .unwrap_or_default();
        for a in sub
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                total += 1;
                if list.len() < 3 {
                    list.push(ip.to_string());
                }
            }
            for p in &ports {
                total += 1;
                if list.len() < 3 {
                    list.push(if ip.contains(':') {
                        format!("[{ip}]:{p}")
                    } else {
                        format!("{ip}:{p}")
                    });
                }
            }
        }
    }
    if list.is_empty() {
        return "<none>".into();
    }
    let mut out = list.join(",");
    if total > list.len() {
        out.push_str(&format!(" + {} more...", total - list.len()));
    }
    out
}

fn node_row(o: &Value, now: i64) -> Vec<Value> {
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut status: Vec<String> = Vec::new();
    for c in conditions {
        if s(c, "/type") == "Ready" {
            status.push(match s(c, "/status") {
                "True" => "Ready".into(),
                "False" => "NotReady".into(),
                _ => "Unknown".into(),
            });
        }
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        (!r.is_empty()).then(|| r.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().filter(|x| !x.is_empty()).map(str::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let addr = |t: &str| {
        o.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
            .map(|x| s(x, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age(o, now),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_unknown(s(o, "/status/nodeInfo/osImage"))),
        json!(or_unknown(s(o, "/status/nodeInfo/kernelVersion"))),
        json!(or_unknown(s(o, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn or_unknown(v: &str) -> &str {
    if v.is_empty() {
        "<unknown>"
    } else {
        v
    }
}

fn event_row(o: &Value, now: i64) -> Vec<Value> {
    let first = o
        .get("firstTimestamp")
        .and_then(Value::as_str)
        .filter(|x| !x.is_empty())
        .or_else(|| o.get("eventTime").and_then(Value::as_str));
    let last = o
        .pointer("/series/lastObservedTime")
        .and_then(Value::as_str)
        .or_else(|| {
            o.get("lastTimestamp")
                .and_then(Value::as_str)
                .filter(|x| !x.is_empty())
        })
        .or(first);
    let source = {
        let comp = or_default(s(o, "/source/component"), s(o, "/reportingComponent"));
        let host = or_default(s(o, "/source/host"), s(o, "/reportingInstance"));
        if host.is_empty() {
            comp.to_string()
        } else {
            format!("{comp}, {host}")
        }
    };
    let count = o
        .pointer("/series/count")
        .and_then(Value::as_i64)
        .or_else(|| o.get("count").and_then(Value::as_i64))
        .unwrap_or(1);
    vec![
        json!(last.map_or_else(|| "<unknown>".to_string(), |t| since(t, now))),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        json!(s(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(o, "/message").trim()),
        json!(first.map_or_else(|| "<unknown>".to_string(), |t| since(t, now))),
        json!(count),
        json!(s(o, "/metadata/name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use std::time::Duration;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    fn t0() -> i64 {
        parse_time(T0).unwrap()
    }

    #[test]
    fn human_durations_match_kubernetes() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (310, "5m10s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 240, "3h4m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (74 * 3600, "3d2h"),
            (8 * 86400, "8d"),
            (400 * 86400, "400d"),
            (730 * 86400, "2y"),
            (733 * 86400, "2y3d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    fn cells(t: &Value) -> Vec<Value> {
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    #[test]
    fn pod_table() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "namespace": "d", "creationTimestamp": T0},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"finishedAt": "2026-01-01T00:01:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table(
            pods,
            &[pod],
            &json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
            at(t0() + 310),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert!(!t["columnDefinitions"][0]["description"]
            .as_str()
            .unwrap()
            .is_empty());
        assert_eq!(
            cells(&t),
            vec![
                json!("p"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (4m10s ago)"),
                json!("5m10s"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "d");
        assert!(t["rows"][0]["object"].get("spec").is_none());
        let pending = json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let t = table(
            pods,
            &[pending],
            &Value::Null,
            IncludeObject::Object,
            at(t0()),
        );
        assert_eq!(
            cells(&t)[1..5],
            [
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>")
            ]
        );
        assert_eq!(t["rows"][0]["object"]["spec"]["containers"][0]["name"], "a");
        let init = json!({"metadata": {"name": "i", "deletionTimestamp": T0}, "spec": {"initContainers": [{"name": "x"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "x", "state": {"running": {}}}]}});
        let t = table(pods, &[init], &Value::Null, IncludeObject::None, at(t0()));
        assert_eq!(cells(&t)[2], "Terminating");
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn workload_and_core_tables() {
        let d = find("apps", "v1", "deployments").unwrap();
        let dep = json!({"metadata": {"name": "web", "creationTimestamp": T0},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(
            d,
            &[dep],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0() + 3 * 86400),
        );
        assert_eq!(
            cells(&t),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d"),
                json!("nginx,side"),
                json!("nginx:1,busybox"),
                json!("app=web,tier in (a,b)")
            ]
        );

        let s = find("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "s", "creationTimestamp": T0}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "x"}}});
        let t = table(
            s,
            &[svc],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0() + 30),
        );
        assert_eq!(
            cells(&t),
            vec![
                json!("s"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("30s"),
                json!("app=x")
            ]
        );

        let ns = find("", "v1", "namespaces").unwrap();
        let t = table(
            ns,
            &[
                json!({"metadata": {"name": "ns1", "creationTimestamp": T0}, "status": {"phase": "Active"}}),
            ],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0() + 7200),
        );
        assert_eq!(
            cells(&t),
            vec![json!("ns1"), json!("Active"), json!("120m")]
        );

        let ev = find("", "v1", "events").unwrap();
        let e = json!({"metadata": {"name": "p.123", "namespace": "d"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "Successfully assigned d/p to n1",
            "source": {"component": "default-scheduler"}, "firstTimestamp": T0, "lastTimestamp": T0, "count": 1});
        let t = table(
            ev,
            &[e],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0() + 65),
        );
        let c = cells(&t);
        assert_eq!(
            c[..4],
            [
                json!("65s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/p")
            ]
        );
        assert_eq!(c[6], "Successfully assigned d/p to n1");
        assert_eq!(t["columnDefinitions"][0]["name"], "Last Seen");

        let n = find("", "v1", "networks").unwrap();
        let net = json!({"metadata": {"name": "net1", "creationTimestamp": T0}, "spec": {"tenantID": "t1",
            "subnets": {"subnet1": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.1"}}}, "status": {"phase": "Active"}});
        let t = table(
            n,
            &[net],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0() + 1),
        );
        assert_eq!(
            cells(&t)[..5],
            [
                json!("net1"),
                json!("t1"),
                json!("192.168.0.0/24"),
                json!("Active"),
                json!("1s")
            ]
        );

        let cm = find("", "v1", "configmaps").unwrap();
        let t = table(
            cm,
            &[
                json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}),
            ],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0()),
        );
        assert_eq!(cells(&t)[1], 3);
        let sec = find("", "v1", "secrets").unwrap();
        let t = table(
            sec,
            &[json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA=="}})],
            &Value::Null,
            IncludeObject::Metadata,
            at(t0()),
        );
        assert_eq!(cells(&t)[1..3], [json!("Opaque"), json!(1)]);
        let node = find("", "v1", "nodes").unwrap();
        let no = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let t = table(node, &[no], &Value::Null, IncludeObject::Metadata, at(t0()));
        assert_eq!(
            cells(&t)[1..3],
            [json!("Ready,SchedulingDisabled"), json!("control-plane")]
        );
        // Every served resource has a printer whose cells match its columns.
        for r in crate::resources::all() {
            let t = table(
                r,
                &[json!({"metadata": {"name": "x"}})],
                &Value::Null,
                IncludeObject::None,
                at(t0()),
            );
            assert_eq!(
                t["columnDefinitions"].as_array().unwrap().len(),
                cells(&t).len(),
                "{}",
                r.plural
            );
        }
    }
}

#[cfg(test)]
mod control_kind_tables {
    use super::*;
    use crate::resources::find;

    fn one(g: &str, v: &str, p: &str, o: Value) -> (Vec<String>, Vec<Value>) {
        let r = find(g, v, p).unwrap();
        let t = table(r, &[o], &Value::Null, IncludeObject::None, UNIX_EPOCH);
        let cols = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        (cols, t["rows"][0]["cells"].as_array().unwrap().clone())
    }

    #[test]
    fn columns_as_kubectl_prints_them() {
        let (c, r) = one(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            json!({"metadata": {"name": "s"}, "addressType": "IPv4",
                "ports": [{"port": 80}, {"name": "dns"}, {}],
                "endpoints": [{"addresses": ["a", "b"]}, {"addresses": ["c", "d", "e"]}]}),
        );
        assert_eq!(c, ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
        assert_eq!(
            r[1..4],
            [json!("IPv4"), json!("80,dns,*"), json!("a,b,c + 2 more...")]
        );
        let (_, r) = one(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            json!({"metadata": {"name": "s"}, "addressType": "IPv4"}),
        );
        assert_eq!(r[2..4], [json!("<unset>"), json!("<unset>")]);
        let (c, r) = one(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            json!({"metadata": {"name": "p"}, "value": 7, "globalDefault": true,
                "preemptionPolicy": "Never"}),
        );
        assert_eq!(
            c,
            ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
        );
        assert_eq!(
            (r[1].clone(), r[2].clone(), r[4].clone()),
            (json!(7), json!(true), json!("Never"))
        );
        let (c, r) = one(
            "policy",
            "v1",
            "poddisruptionbudgets",
            json!({"metadata": {"name": "b"}, "spec": {"maxUnavailable": "25%"},
                "status": {"disruptionsAllowed": 2}}),
        );
        assert_eq!(
            c,
            [
                "Name",
                "Min Available",
                "Max Unavailable",
                "Allowed Disruptions",
                "Age"
            ]
        );
        assert_eq!(r[1..4], [json!("N/A"), json!("25%"), json!(2)]);
        let (c, r) = one(
            "certificates.k8s.io",
            "v1",
            "certificatesigningrequests",
            json!({"metadata": {"name": "c"}, "spec": {"signerName": "x.io/y", "username": "u",
                "expirationSeconds": 3600},
                "status": {"conditions": [{"type": "Approved"}], "certificate": "Zm9v"}}),
        );
        assert_eq!(
            c,
            [
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        assert_eq!(
            r[2..6],
            [
                json!("x.io/y"),
                json!("u"),
                json!("60m"),
                json!("Approved,Issued")
            ]
        );
        let (c, r) = one(
            "node.k8s.io",
            "v1",
            "runtimeclasses",
            json!({"metadata": {"name": "vm"}, "handler": "h8s"}),
        );
        assert_eq!(c, ["Name", "Handler", "Age"]);
        assert_eq!(r[1], json!("h8s"));
        // events.k8s.io: the core columns over the converted object.
        let (c, r) = one(
            "events.k8s.io",
            "v1",
            "events",
            json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "R", "note": "hi",
                "regarding": {"kind": "Pod", "name": "p"}}),
        );
        assert_eq!(c[0..4], ["Last Seen", "Type", "Reason", "Object"]);
        assert_eq!(r[1..4], [json!("Warning"), json!("R"), json!("pod/p")]);
    }

    #[test]
    fn columns_of_the_issue_12_kinds() {
        let (c, r) = one(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            json!({"apiVersion": "autoscaling/v2", "metadata": {"name": "h"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                    "maxReplicas": 5, "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]},
                "status": {"currentReplicas": 2, "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}]}}),
        );
        assert_eq!(
            c,
            [
                "Name",
                "Reference",
                "Targets",
                "MinPods",
                "MaxPods",
                "Replicas",
                "Age"
            ]
        );
        assert_eq!(
            r[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 30%/50%, memory: <unknown>/100Mi"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
        // v1 objects print the same columns.
        let (_, r) = one(
            "autoscaling",
            "v1",
            "horizontalpodautoscalers",
            json!({"apiVersion": "autoscaling/v1", "metadata": {"name": "h"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                    "targetCPUUtilizationPercentage": 80}}),
        );
        assert_eq!(r[2..4], [json!("cpu: <unknown>/80%"), json!("<unset>")]);
        let (c, r) = one(
            "networking.k8s.io",
            "v1",
            "ingresses",
            json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx",
                "rules": [{"host": "a.example.com"}, {}], "tls": [{"hosts": ["a.example.com"]}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}),
        );
        assert_eq!(c, ["Name", "Class", "Hosts", "Address", "Ports", "Age"]);
        assert_eq!(
            r[1..5],
            [
                json!("nginx"),
                json!("a.example.com,*"),
                json!("10.0.0.1"),
                json!("80, 443")
            ]
        );
        let (c, r) = one(
            "networking.k8s.io",
            "v1",
            "ipaddresses",
            json!({"metadata": {"name": "10.96.0.1"}, "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "kubernetes"}}}),
        );
        assert_eq!(c, ["Name", "ParentRef", "Age"]);
        assert_eq!(r[1], json!("services/default/kubernetes"));
        let (c, r) = one(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "prioritylevelconfigurations",
            json!({"metadata": {"name": "workload-low"}, "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 100, "limitResponse": {"type": "Queuing",
                "queuing": {"queues": 128, "handSize": 6, "queueLengthLimit": 50}}}}}),
        );
        assert_eq!(
            c[..6],
            [
                "Name",
                "Type",
                "NominalConcurrencyShares",
                "Queues",
                "HandSize",
                "QueueLengthLimit"
            ]
        );
        assert_eq!(
            r[1..6],
            [
                json!("Limited"),
                json!("100"),
                json!("128"),
                json!("6"),
                json!("50")
            ]
        );
        let (c, r) = one(
            "flowcontrol.apiserver.k8s.io",
            "v1",
            "flowschemas",
            json!({"metadata": {"name": "exempt"}, "spec": {"priorityLevelConfiguration": {"name": "exempt"},
                "matchingPrecedence": 1}, "status": {"conditions": [{"type": "Dangling", "status": "False"}]}}),
        );
        assert_eq!(
            c,
            [
                "Name",
                "PriorityLevel",
                "MatchingPrecedence",
                "DistinguisherMethod",
                "Age",
                "MissingPL"
            ]
        );
        assert_eq!(r[1..4], [json!("exempt"), json!(1), json!("*")]);
        assert_eq!(r[5], json!("False"));
        let (c, r) = one(
            "",
            "v1",
            "componentstatuses",
            json!({"metadata": {"name": "etcd-0"}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]}),
        );
        assert_eq!(c, ["Name", "Status", "Message", "Error"]);
        assert_eq!(r[1..4], [json!("Healthy"), json!("ok"), json!("")]);
        let (c, r) = one(
            "storage.k8s.io",
            "v1",
            "csidrivers",
            json!({"metadata": {"name": "d"}, "spec": {"attachRequired": true, "volumeLifecycleModes": ["Persistent"]}}),
        );
        assert_eq!(c.len(), 8);
        assert_eq!(r[1], json!(true));
        assert_eq!(r[4], json!("<unset>"));
        assert_eq!(r[6], json!("Persistent"));
        let (c, r) = one(
            "",
            "v1",
            "podtemplates",
            json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}),
        );
        assert_eq!(c, ["Name", "Containers", "Images", "Pod Labels"]);
        assert_eq!(r[1..4], [json!("c"), json!("busybox"), json!("app=x")]);
    }
}
