//! Persistent volumes of pod VMs: PersistentVolumeClaims and the seeds' inline `cinder:`
//! volumes become virtio-blk disks of the pod VM (QEMU opens the backing file or RBD image
//! itself; nothing is mounted on the host), attached when the VM starts.
//!
//! The agent is also the provisioner of its node's local volumes (`volumes.h8s.io/local`,
//! WaitForFirstConsumer): when a pod bound here uses an unbound claim of such a class, it marks
//! the claim with `volume.kubernetes.io/selected-node`, makes the backing file and creates the
//! PersistentVolume (pre-bound to the claim through `claimRef`, node affinity = this node); the
//! volume controller completes the binding. Its reclaim loop deletes the files of Released
//! local volumes with reclaim policy Delete, and grows local volumes whose claim asks for more
//! while no pod VM of this node uses them (offline expansion; the guest grows the filesystem).

use std::sync::Arc;

use h8s_volumes::{local::Local, rbd::Rbd, Backend, Filesystem, VolumeId};
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::events::Kind::{Normal, Warning};
use crate::pods::Ctx;

/// The CSI driver name of PersistentVolumes backed by a node's local files.
pub const LOCAL_DRIVER: &str = "local.volumes.h8s.io";
/// The CSI driver name of PersistentVolumes backed by Ceph RBD images.
pub const RBD_DRIVER: &str = "rbd.volumes.h8s.io";
/// The provisioner of the default StorageClass `h8s-local` (this agent, on its node).
pub const LOCAL_PROVISIONER: &str = "volumes.h8s.io/local";
/// The provisioner of RBD StorageClasses (the volume controller).
pub const RBD_PROVISIONER: &str = "volumes.h8s.io/rbd";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// One volume disk of a pod VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attached {
    /// The pod's volume name.
    pub volume: String,
    /// The disk's serial in the guest.
    pub serial: String,
    /// The PersistentVolume.
    pub pv: String,
    /// `volumeMode: Block`: the raw device goes to `volumeDevices`.
    pub block_mode: bool,
    /// The filesystem type (`ext4`).
    pub fstype: String,
    /// Attached read-only (ReadOnlyMany, or `readOnly` in the pod's volume source).
    pub read_only: bool,
    /// QEMU's `-drive` properties.
    pub drive: String,
}

/// What the pod's persistent volumes allow now.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every disk is known; the VM may start.
    Ready(Vec<Attached>),
    /// Not yet (event reason, message): the pod waits in ContainerCreating.
    Wait(&'static str, String),
}

/// Whether the pod has persistent volumes.
pub(crate) fn has_block(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| {
            v.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.cinder.is_some())
        })
}

fn local_backend(ctx: &Ctx) -> Result<Local, String> {
    Local::new(
        &ctx.cfg.volumes.local_dir,
        &ctx.cfg.node_name,
        ctx.cfg.volumes.local_capacity,
    )
    .map_err(|e| e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> h8s_volumes::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("volume task failed: {e}")),
    }
}

/// The node a local PersistentVolume is pinned to (its required node affinity on
/// `kubernetes.io/hostname`).
pub(crate) fn pv_node(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_expressions.iter().flatten().find_map(|e| {
            (e.key == HOSTNAME_LABEL && e.operator == "In")
                .then(|| e.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

fn modes(pvc: &PersistentVolumeClaim) -> Vec<String> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default()
}

/// Whether `other` keeps `me` from attaching a single-node volume both use: it is not
/// finished and either runs on another node or (ReadWriteOncePod) is any other pod; of two
/// pods starting at once, the older (then the one with the smaller name) goes first, so they
/// never wait for each other.
pub(crate) fn blocks(me: &Pod, other: &Pod, node: &str, once_pod: bool) -> bool {
    if me.metadata.uid == other.metadata.uid {
        return false;
    }
    let st = other.status.as_ref();
    let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return false;
    }
    let Some(on) = other.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return false;
    };
    if on == node && !once_pod {
        return false;
    }
    let running = phase == "Running" || other.metadata.deletion_timestamp.is_some();
    let key = |p: &Pod| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    };
    running || key(other) < key(me)
}

fn claim_ref(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: pvc.metadata.name.clone(),
        namespace: pvc.metadata.namespace.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Resolves the pod's persistent volumes to disks; with `provision`, provisions this node's
/// local volumes for unbound claims first.
pub(crate) async fn resolve(ctx: &Arc<Ctx>, pod: &Pod, provision: bool) -> Outcome {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut out = Vec::new();
    let vols = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in vols {
        let serial = format!("vol{}", out.len());
        let (pv, read_only, fstype, single) = if let Some(src) = &v.persistent_volume_claim {
            let claim = match pvcs.get_opt(&src.claim_name).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Outcome::Wait(
                        "FailedMount",
                        format!("persistentvolumeclaim {:?} not found", src.claim_name),
                    )
                }
                Err(e) => return Outcome::Wait("FailedMount", format!("reading claim: {e}")),
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Outcome::Wait(
                    "FailedMount",
                    format!(
                        "persistentvolumeclaim {:?} is being deleted",
                        src.claim_name
                    ),
                );
            }
            let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            let vname = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            if !bound || vname.is_empty() {
                if provision {
                    if let Err(msg) = provision_local(ctx, &claim).await {
                        return Outcome::Wait("FailedMount", msg);
                    }
                }
                return Outcome::Wait(
                    "FailedMount",
                    format!(
                        "persistentvolumeclaim {:?} is not bound yet",
                        src.claim_name
                    ),
                );
            }
            let pv = match pvs.get_opt(&vname).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Outcome::Wait(
                        "FailedMount",
                        format!("persistentvolume {vname:?} not found"),
                    )
                }
                Err(e) => return Outcome::Wait("FailedMount", format!("reading volume: {e}")),
            };
            let m = modes(&claim);
            let ro = src.read_only.unwrap_or(false)
                || (!m.is_empty() && m.iter().all(|m| m == "ReadOnlyMany"));
            let single = if m.iter().any(|m| m == "ReadWriteOncePod") {
                Some(true)
            } else if m.iter().any(|m| m == "ReadWriteOnce") {
                Some(false)
            } else {
                None
            };
            let fstype = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .and_then(|c| c.fs_type.clone())
                .unwrap_or_else(|| "ext4".into());
            (pv, ro, fstype, single)
        } else if let Some(c) = &v.cinder {
            let Ok(id) = VolumeId::new(&c.volume_id) else {
                return Outcome::Wait(
                    "FailedMount",
                    format!("cinder volumeID {:?} is not an h8s volume id", c.volume_id),
                );
            };
            let pv = match pvs.get_opt(id.as_str()).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Outcome::Wait(
                        "FailedMount",
                        format!("volume {:?} not found", id.as_str()),
                    )
                }
                Err(e) => return Outcome::Wait("FailedMount", format!("reading volume: {e}")),
            };
            let fstype = c.fs_type.clone().unwrap_or_else(|| "ext4".into());
            (pv, c.read_only.unwrap_or(false), fstype, Some(false))
        } else {
            continue;
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        if let Some(once_pod) = single.filter(|_| !read_only && provision) {
            if let Some(msg) = multi_attach(ctx, pod, &v, &pv_name, once_pod).await {
                return Outcome::Wait("FailedAttachVolume", msg);
            }
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let rbd = spec.csi.as_ref().is_some_and(|c| c.driver == RBD_DRIVER);
        if rbd && provision {
            if let Some(msg) = unattached(ctx, &v.name, &pv_name).await {
                return Outcome::Wait("FailedMount", msg);
            }
        }
        let block_mode = spec.volume_mode.as_deref() == Some("Block") && v.cinder.is_none();
        let drive = match drive_of(ctx, &pv_name, &spec, pv_node(&pv), read_only).await {
            Ok(d) => d,
            Err(msg) => return Outcome::Wait("FailedMount", msg),
        };
        out.push(Attached {
            volume: v.name.clone(),
            serial,
            pv: pv_name,
            block_mode,
            fstype,
            read_only,
            drive,
        });
    }
    Outcome::Ready(out)
}

/// Why an RBD volume cannot be used on this node yet: the attach-detach controller has not
/// attached it here (a `storage.k8s.io/v1` VolumeAttachment of the volume to this node with
/// `attached: true`; for a single-node volume it waits while another node has one, and tells
/// the pod with a Multi-Attach event). `None`: attached.
async fn unattached(ctx: &Arc<Ctx>, volume: &str, pv: &str) -> Option<String> {
    let api: Api<VolumeAttachment> = Api::all(ctx.client.clone());
    let node = ctx.cfg.node_name.as_str();
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => return Some(format!("reading VolumeAttachments: {e}")),
    };
    let attached = list.items.iter().any(|va| {
        va.spec.attacher == RBD_DRIVER
            && va.spec.node_name == node
            && va.spec.source.persistent_volume_name.as_deref() == Some(pv)
            && va.status.as_ref().is_some_and(|s| s.attached)
            && va.metadata.deletion_timestamp.is_none()
    });
    (!attached).then(|| {
        format!(
            "Unable to attach or mount volumes: unattached volumes=[{volume}]: volume {pv:?} is not attached to node {node:?} yet (VolumeAttachment)"
        )
    })
}

/// The Multi-Attach message when another pod holds a single-node volume.
async fn multi_attach(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    v: &k8s_openapi::api::core::v1::Volume,
    pv: &str,
    once_pod: bool,
) -> Option<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let list = pods.list(&ListParams::default()).await.ok()?;
    let uses = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| {
                vs.iter()
                    .any(|o| match (&v.persistent_volume_claim, &v.cinder) {
                        (Some(a), _) => o
                            .persistent_volume_claim
                            .as_ref()
                            .is_some_and(|b| b.claim_name == a.claim_name),
                        (_, Some(a)) => o
                            .cinder
                            .as_ref()
                            .is_some_and(|b| b.volume_id == a.volume_id),
                        _ => false,
                    })
            })
    };
    let holders: Vec<String> = list
        .items
        .iter()
        .filter(|p| uses(p) && blocks(pod, p, &ctx.cfg.node_name, once_pod))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    (!holders.is_empty()).then(|| {
        format!(
            "Multi-Attach error for volume {pv:?} Volume is already used by pod(s) {}",
            holders.join(", ")
        )
    })
}

/// QEMU's drive for a PersistentVolume, after checking its backing store.
async fn drive_of(
    ctx: &Arc<Ctx>,
    name: &str,
    spec: &PersistentVolumeSpec,
    node: Option<String>,
    read_only: bool,
) -> Result<String, String> {
    let Some(csi) = &spec.csi else {
        return Err(format!(
            "persistentvolume {name:?}: only h8s volumes (drivers {LOCAL_DRIVER}, {RBD_DRIVER}) attach to pod VMs"
        ));
    };
    let id = VolumeId::new(&csi.volume_handle).map_err(|e| e.to_string())?;
    match csi.driver.as_str() {
        LOCAL_DRIVER => {
            if node.as_deref() != Some(ctx.cfg.node_name.as_str()) {
                return Err(format!(
                    "volume {name:?} is on node {:?}, not on this node",
                    node.unwrap_or_default()
                ));
            }
            let b = local_backend(ctx)?;
            let b2 = b.clone();
            let i = id.clone();
            blocking(move || b2.inspect(&i))
                .await
                .map_err(|e| format!("volume {name:?}: {e}"))?;
            Ok(b.drive(&id, read_only).spec)
        }
        RBD_DRIVER => {
            let Some(r) = &ctx.cfg.volumes.rbd else {
                return Err(format!(
                    "volume {name:?} is an RBD image, but this node has no Ceph configuration (--rbd-ceph-conf)"
                ));
            };
            let pool = csi
                .volume_attributes
                .as_ref()
                .and_then(|a| a.get("pool").cloned())
                .unwrap_or_else(|| r.pool.clone());
            let b = Rbd::new(&pool, &r.conf, &r.user);
            let b2 = b.clone();
            let i = id.clone();
            blocking(move || b2.inspect(&i))
                .await
                .map_err(|e| format!("volume {name:?}: {e}"))?;
            Ok(b.drive(&id, read_only).spec)
        }
        other => Err(format!(
            "persistentvolume {name:?}: driver {other:?} cannot attach to pod VMs"
        )),
    }
}

fn storage_request(pvc: &PersistentVolumeClaim) -> Option<u64> {
    let q = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    crate::quantity::units(&q.0).and_then(|v| u64::try_from(v).ok())
}

/// Provisions this node's local volume for an unbound claim of a `volumes.h8s.io/local`
/// class. `Err` carries why the pod cannot go on (also recorded on the claim).
async fn provision_local(ctx: &Arc<Ctx>, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let node = ctx.cfg.node_name.clone();
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let cname = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return Ok(());
    }
    let Some(class) = spec.storage_class_name.clone().filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    let scs: Api<StorageClass> = Api::all(ctx.client.clone());
    let Ok(Some(sc)) = scs.get_opt(&class).await else {
        return Ok(());
    };
    if sc.provisioner != LOCAL_PROVISIONER {
        return Ok(());
    }
    let ann = claim.metadata.annotations.clone().unwrap_or_default();
    match ann.get(SELECTED_NODE) {
        Some(n) if *n != node => {
            return Err(format!(
                "persistentvolumeclaim {cname:?} is provisioned on node {n:?}"
            ))
        }
        Some(_) => {}
        None => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"metadata": {"annotations": {
                SELECTED_NODE: node,
                "volume.kubernetes.io/storage-provisioner": LOCAL_PROVISIONER,
                "volume.beta.kubernetes.io/storage-provisioner": LOCAL_PROVISIONER,
            }}});
            if let Err(e) = pvcs
                .patch(&cname, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Err(format!("selecting this node for the claim: {e}"));
            }
        }
    }
    let pv_name = format!("pvc-{uid}");
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Ok(Some(_)) = pvs.get_opt(&pv_name).await {
        return Ok(());
    }
    let involved = claim_ref(claim);
    let ev = |kind, reason: &'static str, msg: String| {
        let involved = involved.clone();
        let rec = ctx.recorder.clone();
        async move {
            rec.object_event(involved, LOCAL_PROVISIONER, kind, reason, msg)
                .await
        }
    };
    let Some(size) = storage_request(claim) else {
        let msg = "the claim has no spec.resources.requests.storage".to_string();
        ev(Warning, "ProvisioningFailed", msg.clone()).await;
        return Err(msg);
    };
    let block = spec.volume_mode.as_deref() == Some("Block");
    ev(
        Normal,
        "Provisioning",
        format!("External provisioner is provisioning volume for claim \"{ns}/{cname}\""),
    )
    .await;
    let id = VolumeId::new(&pv_name).map_err(|e| e.to_string())?;
    let b = local_backend(ctx)?;
    let (b2, i) = (b.clone(), id.clone());
    let fs = (!block).then_some(Filesystem::Ext4);
    let info = match blocking(move || b2.create(&i, size, fs)).await {
        Ok(i) => i,
        Err(e) => {
            let msg = format!("failed to provision volume with StorageClass \"{class}\": {e}");
            ev(Warning, "ProvisioningFailed", msg.clone()).await;
            return Err(msg);
        }
    };
    let reclaim = sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
    let pv: PersistentVolume = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name,
            "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PROVISIONER},
            "finalizers": ["kubernetes.io/pv-protection"],
        },
        "spec": {
            "capacity": {"storage": info.size.to_string()},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "volumeMode": if block { "Block" } else { "Filesystem" },
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class,
            "claimRef": involved,
            "csi": {
                "driver": LOCAL_DRIVER,
                "volumeHandle": pv_name,
                "fsType": if block { None } else { Some("ext4") },
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
            ]}]}},
        },
    })) {
        Ok(p) => p,
        Err(e) => return Err(format!("building the volume: {e}")),
    };
    if let Err(e) = pvs.create(&PostParams::default(), &pv).await {
        let (b3, i) = (b.clone(), id.clone());
        let _ = blocking(move || b3.delete(&i)).await;
        let msg = format!("failed to provision volume with StorageClass \"{class}\": {e}");
        ev(Warning, "ProvisioningFailed", msg.clone()).await;
        return Err(msg);
    }
    ev(
        Normal,
        "ProvisioningSucceeded",
        format!("Successfully provisioned volume {pv_name}"),
    )
    .await;
    Ok(())
}

/// One pass of the local volumes' housekeeping: Delete reclaim and offline expansion (asked
/// for by the volume controller; the agent touches only its own node's volumes).
pub(crate) async fn housekeeping(ctx: &Arc<Ctx>) {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let Ok(list) = pvs.list(&ListParams::default()).await else {
        return;
    };
    let Ok(b) = local_backend(ctx) else {
        return;
    };
    for pv in list.items {
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(csi) = &spec.csi else { continue };
        if csi.driver != LOCAL_DRIVER || pv_node(&pv).as_deref() != Some(&ctx.cfg.node_name) {
            continue;
        }
        let Ok(id) = VolumeId::new(&csi.volume_handle) else {
            continue;
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
        let policy = spec
            .persistent_volume_reclaim_policy
            .clone()
            .unwrap_or_default();
        if phase.as_deref() == Some("Released") && policy == "Delete" {
            let (b2, i) = (b.clone(), id.clone());
            match blocking(move || b2.delete(&i)).await {
                Ok(()) => {
                    tracing::info!(pv = %name, "released local volume deleted");
                    let _ = pvs.delete(&name, &DeleteParams::default()).await;
                }
                Err(e) => tracing::warn!(pv = %name, error = %e, "deleting a released volume"),
            }
            continue;
        }
        if phase.as_deref() == Some("Bound") {
            expand(ctx, &b, &pv, &id).await;
        }
    }
}

/// The annotation with which the volume controller asks a node to grow a local volume
/// (bytes), once no pod uses its claim (offline expansion).
pub const RESIZE_ANNOTATION: &str = "volumes.h8s.io/resize-to";

/// Grows a local volume the controller asked to grow; writes the new capacity to the
/// PersistentVolume (the controller copies it to the claim).
async fn expand(ctx: &Arc<Ctx>, b: &Local, pv: &PersistentVolume, id: &VolumeId) {
    let Some(want) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESIZE_ANNOTATION))
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let name = pv.metadata.name.clone().unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let (b2, i) = (b.clone(), id.clone());
    match blocking(move || b2.resize(&i, want)).await {
        Ok(info) => {
            let patch = json!({
                "metadata": {"annotations": {RESIZE_ANNOTATION: null}},
                "spec": {"capacity": {"storage": Quantity(info.size.to_string())}},
            });
            match pvs
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(pv = %name, bytes = info.size, "local volume grown"),
                Err(e) => tracing::warn!(pv = %name, error = %e, "recording a grown volume"),
            }
        }
        Err(e) => tracing::warn!(pv = %name, error = %e, "growing a local volume failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: Option<&str>, phase: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn single_node_volumes_wait_for_holders_on_other_nodes() {
        let me = pod("b", Some("n1"), "Pending", 20);
        // Running on another node: Multi-Attach.
        assert!(blocks(
            &me,
            &pod("a", Some("n2"), "Running", 30),
            "n1",
            false
        ));
        // Same node, ReadWriteOnce: allowed; ReadWriteOncePod: not.
        assert!(!blocks(
            &me,
            &pod("a", Some("n1"), "Running", 10),
            "n1",
            false
        ));
        assert!(blocks(
            &me,
            &pod("a", Some("n1"), "Running", 10),
            "n1",
            true
        ));
        // Finished or unscheduled pods hold nothing.
        assert!(!blocks(
            &me,
            &pod("a", Some("n2"), "Succeeded", 10),
            "n1",
            false
        ));
        assert!(!blocks(&me, &pod("a", None, "Pending", 10), "n1", false));
        // Two pending pods: the older goes first, never both waiting.
        let older = pod("a", Some("n2"), "Pending", 10);
        assert!(blocks(&me, &older, "n1", false));
        assert!(!blocks(&older, &me, "n2", false));
        assert!(!blocks(&me, &me, "n1", true));
    }

    #[test]
    fn local_volume_node_comes_from_node_affinity() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n7"]}
            ]}]}}}
        }))
        .unwrap();
        assert_eq!(pv_node(&pv).as_deref(), Some("n7"));
        assert_eq!(pv_node(&PersistentVolume::default()), None);
    }
}
