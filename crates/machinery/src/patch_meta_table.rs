//! Facts about built-in kinds: the `x-kubernetes-patch-strategy` / `-patch-merge-key` and
//! `x-kubernetes-list-type` / `-list-map-keys` / `-map-type` tags of kubernetes/api v0.33
//! (Kubernetes 1.33). Extracted from the Go struct tags and `+listType` markers of
//! `k8s.io/api/{core,apps,batch,rbac,coordination,storage,networking,autoscaling}/v1`
//! `types.go` and `k8s.io/apimachinery` `meta/v1` `ObjectMeta`.
//!
//! Only fields whose semantics differ from the defaults are listed. The defaults are: objects
//! merge key by key (granular); lists are atomic for apply and replaced by strategic merge
//! patch.
//!
//! Paths are relative to the object root, dot-separated JSON field names, with `[]` after a
//! list field to step into its elements (`spec.containers[].env`).
#![allow(clippy::too_many_lines)]

use super::{FieldMeta, ListType, Table};

const fn f(
    path: &'static str,
    patch_strategy: &'static str,
    patch_merge_key: &'static str,
    list_type: Option<ListType>,
    atomic: bool,
) -> FieldMeta {
    FieldMeta {
        path,
        patch_strategy,
        patch_merge_key,
        list_type,
        atomic,
    }
}

pub(super) static OBJECT_META: Table = Table {
    fields: &[
        f("finalizers", "merge", "", Some(ListType::Set), false),
        f(
            "ownerReferences",
            "merge",
            "uid",
            Some(ListType::Map(&["uid"])),
            true,
        ),
    ],
    includes: &[],
};
pub(super) static POD_SPEC: Table = Table {
    fields: &[
        f(
            "volumes",
            "merge,retainKeys",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f("volumes[].iscsi.secretRef", "", "", None, true),
        f("volumes[].rbd.secretRef", "", "", None, true),
        f("volumes[].flexVolume.secretRef", "", "", None, true),
        f("volumes[].cinder.secretRef", "", "", None, true),
        f("volumes[].cephfs.secretRef", "", "", None, true),
        f("volumes[].scaleIO.secretRef", "", "", None, true),
        f("volumes[].storageos.secretRef", "", "", None, true),
        f("volumes[].csi.nodePublishSecretRef", "", "", None, true),
        f(
            "volumes[].ephemeral.volumeClaimTemplate.spec.selector",
            "",
            "",
            None,
            true,
        ),
        f(
            "volumes[].ephemeral.volumeClaimTemplate.spec.dataSource",
            "",
            "",
            None,
            true,
        ),
        f(
            "initContainers",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "initContainers[].ports",
            "merge",
            "containerPort",
            Some(ListType::Map(&["containerPort", "protocol"])),
            false,
        ),
        f(
            "initContainers[].env",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "initContainers[].env[].valueFrom.fieldRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "initContainers[].env[].valueFrom.resourceFieldRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "initContainers[].env[].valueFrom.configMapKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "initContainers[].env[].valueFrom.secretKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "initContainers[].resources.claims",
            "",
            "",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "initContainers[].volumeMounts",
            "merge",
            "mountPath",
            Some(ListType::Map(&["mountPath"])),
            false,
        ),
        f(
            "initContainers[].volumeDevices",
            "merge",
            "devicePath",
            Some(ListType::Map(&["devicePath"])),
            false,
        ),
        f(
            "containers",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "containers[].ports",
            "merge",
            "containerPort",
            Some(ListType::Map(&["containerPort", "protocol"])),
            false,
        ),
        f(
            "containers[].env",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f("containers[].env[].valueFrom.fieldRef", "", "", None, true),
        f(
            "containers[].env[].valueFrom.resourceFieldRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "containers[].env[].valueFrom.configMapKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "containers[].env[].valueFrom.secretKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "containers[].resources.claims",
            "",
            "",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "containers[].volumeMounts",
            "merge",
            "mountPath",
            Some(ListType::Map(&["mountPath"])),
            false,
        ),
        f(
            "containers[].volumeDevices",
            "merge",
            "devicePath",
            Some(ListType::Map(&["devicePath"])),
            false,
        ),
        f(
            "ephemeralContainers",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "ephemeralContainers[].ports",
            "merge",
            "containerPort",
            Some(ListType::Map(&["containerPort", "protocol"])),
            false,
        ),
        f(
            "ephemeralContainers[].env",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "ephemeralContainers[].env[].valueFrom.fieldRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "ephemeralContainers[].env[].valueFrom.resourceFieldRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "ephemeralContainers[].env[].valueFrom.configMapKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "ephemeralContainers[].env[].valueFrom.secretKeyRef",
            "",
            "",
            None,
            true,
        ),
        f(
            "ephemeralContainers[].resources.claims",
            "",
            "",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "ephemeralContainers[].volumeMounts",
            "merge",
            "mountPath",
            Some(ListType::Map(&["mountPath"])),
            false,
        ),
        f(
            "ephemeralContainers[].volumeDevices",
            "merge",
            "devicePath",
            Some(ListType::Map(&["devicePath"])),
            false,
        ),
        f("nodeSelector", "", "", None, true),
        f(
            "imagePullSecrets",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            true,
        ),
        f(
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
            "",
            "",
            None,
            true,
        ),
        f(
            "hostAliases",
            "merge",
            "ip",
            Some(ListType::Map(&["ip"])),
            false,
        ),
        f(
            "topologySpreadConstraints",
            "merge",
            "topologyKey",
            Some(ListType::Map(&["topologyKey", "whenUnsatisfiable"])),
            false,
        ),
        f(
            "topologySpreadConstraints[].labelSelector",
            "",
            "",
            None,
            true,
        ),
        f(
            "schedulingGates",
            "merge",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "resourceClaims",
            "merge,retainKeys",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
        f(
            "resources.claims",
            "",
            "",
            Some(ListType::Map(&["name"])),
            false,
        ),
    ],
    includes: &[(
        "volumes[].ephemeral.volumeClaimTemplate.metadata",
        &OBJECT_META,
    )],
};
pub(super) static POD: Table = Table {
    fields: &[
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
        f(
            "status.hostIPs",
            "merge",
            "ip",
            Some(ListType::Atomic),
            false,
        ),
        f(
            "status.podIPs",
            "merge",
            "ip",
            Some(ListType::Map(&["ip"])),
            false,
        ),
        f(
            "status.resourceClaimStatuses",
            "merge,retainKeys",
            "name",
            Some(ListType::Map(&["name"])),
            false,
        ),
    ],
    includes: &[("metadata", &OBJECT_META), ("spec", &POD_SPEC)],
};
pub(super) static POD_TEMPLATE: Table = Table {
    fields: &[],
    includes: &[
        ("metadata", &OBJECT_META),
        ("template.metadata", &OBJECT_META),
        ("template.spec", &POD_SPEC),
    ],
};
pub(super) static REPLICATION_CONTROLLER: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static SERVICE: Table = Table {
    fields: &[
        f(
            "spec.ports",
            "merge",
            "port",
            Some(ListType::Map(&["port", "protocol"])),
            false,
        ),
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static ENDPOINTS: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static NODE: Table = Table {
    fields: &[
        f("spec.podCIDRs", "merge", "", Some(ListType::Set), false),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
        f(
            "status.addresses",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static NAMESPACE: Table = Table {
    fields: &[f(
        "status.conditions",
        "merge",
        "type",
        Some(ListType::Map(&["type"])),
        false,
    )],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static PERSISTENT_VOLUME: Table = Table {
    fields: &[
        f("spec.rbd.secretRef", "", "", None, true),
        f("spec.iscsi.secretRef", "", "", None, true),
        f("spec.cinder.secretRef", "", "", None, true),
        f("spec.cephfs.secretRef", "", "", None, true),
        f("spec.flexVolume.secretRef", "", "", None, true),
        f("spec.scaleIO.secretRef", "", "", None, true),
        f("spec.storageos.secretRef", "", "", None, true),
        f("spec.csi.controllerPublishSecretRef", "", "", None, true),
        f("spec.csi.nodeStageSecretRef", "", "", None, true),
        f("spec.csi.nodePublishSecretRef", "", "", None, true),
        f("spec.csi.controllerExpandSecretRef", "", "", None, true),
        f("spec.csi.nodeExpandSecretRef", "", "", None, true),
        f("spec.claimRef", "", "", None, true),
        f("spec.nodeAffinity.required", "", "", None, true),
    ],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static PERSISTENT_VOLUME_CLAIM: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f("spec.dataSource", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static CONFIG_MAP: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static SECRET: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static SERVICE_ACCOUNT: Table = Table {
    fields: &[f(
        "secrets",
        "merge",
        "name",
        Some(ListType::Map(&["name"])),
        true,
    )],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static EVENT: Table = Table {
    fields: &[
        f("involvedObject", "", "", None, true),
        f("related", "", "", None, true),
    ],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static RESOURCE_QUOTA: Table = Table {
    fields: &[f("spec.scopeSelector", "", "", None, true)],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static LIMIT_RANGE: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static DEPLOYMENT: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f("spec.strategy", "retainKeys", "", None, false),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static REPLICA_SET: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static STATEFUL_SET: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static DAEMON_SET: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Map(&["type"])),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static JOB: Table = Table {
    fields: &[
        f("spec.selector", "", "", None, true),
        f(
            "status.conditions",
            "merge",
            "type",
            Some(ListType::Atomic),
            false,
        ),
        f(
            "status.uncountedTerminatedPods.succeeded",
            "",
            "",
            Some(ListType::Set),
            false,
        ),
        f(
            "status.uncountedTerminatedPods.failed",
            "",
            "",
            Some(ListType::Set),
            false,
        ),
    ],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.template.metadata", &OBJECT_META),
        ("spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static CRON_JOB: Table = Table {
    fields: &[f("spec.jobTemplate.spec.selector", "", "", None, true)],
    includes: &[
        ("metadata", &OBJECT_META),
        ("spec.jobTemplate.metadata", &OBJECT_META),
        ("spec.jobTemplate.spec.template.metadata", &OBJECT_META),
        ("spec.jobTemplate.spec.template.spec", &POD_SPEC),
    ],
};
pub(super) static ROLE: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static CLUSTER_ROLE: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static ROLE_BINDING: Table = Table {
    fields: &[f("roleRef", "", "", None, true)],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static CLUSTER_ROLE_BINDING: Table = Table {
    fields: &[f("roleRef", "", "", None, true)],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static LEASE: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static STORAGE_CLASS: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static NETWORK_POLICY: Table = Table {
    fields: &[f("spec.podSelector", "", "", None, true)],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static SCALE: Table = Table {
    fields: &[],
    includes: &[("metadata", &OBJECT_META)],
};
pub(super) static KINDS: &[(&str, &str, &Table)] = &[
    ("", "Pod", &POD),
    ("", "PodTemplate", &POD_TEMPLATE),
    ("", "ReplicationController", &REPLICATION_CONTROLLER),
    ("", "Service", &SERVICE),
    ("", "Endpoints", &ENDPOINTS),
    ("", "Node", &NODE),
    ("", "Namespace", &NAMESPACE),
    ("", "PersistentVolume", &PERSISTENT_VOLUME),
    ("", "PersistentVolumeClaim", &PERSISTENT_VOLUME_CLAIM),
    ("", "ConfigMap", &CONFIG_MAP),
    ("", "Secret", &SECRET),
    ("", "ServiceAccount", &SERVICE_ACCOUNT),
    ("", "Event", &EVENT),
    ("", "ResourceQuota", &RESOURCE_QUOTA),
    ("", "LimitRange", &LIMIT_RANGE),
    ("apps", "Deployment", &DEPLOYMENT),
    ("apps", "ReplicaSet", &REPLICA_SET),
    ("apps", "StatefulSet", &STATEFUL_SET),
    ("apps", "DaemonSet", &DAEMON_SET),
    ("batch", "Job", &JOB),
    ("batch", "CronJob", &CRON_JOB),
    ("rbac.authorization.k8s.io", "Role", &ROLE),
    ("rbac.authorization.k8s.io", "ClusterRole", &CLUSTER_ROLE),
    ("rbac.authorization.k8s.io", "RoleBinding", &ROLE_BINDING),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        &CLUSTER_ROLE_BINDING,
    ),
    ("coordination.k8s.io", "Lease", &LEASE),
    ("storage.k8s.io", "StorageClass", &STORAGE_CLASS),
    ("networking.k8s.io", "NetworkPolicy", &NETWORK_POLICY),
    ("autoscaling", "Scale", &SCALE),
];
