//! The volume controllers (kube-controller-manager's `persistentvolume-binder`,
//! `persistentvolume-expander` admission side, `pvc-protection` and `pv-protection`), over
//! h8s block volumes (docs/volumes.md):
//!
//! * the default StorageClass `h8s-local` (provisioner `volumes.h8s.io/local`,
//!   WaitForFirstConsumer, reclaim Delete, expansion allowed) is created at start when absent;
//! * claims bind to volumes — named (`spec.volumeName`), pre-bound (`claimRef`), or the
//!   smallest free one that fits class, access modes, size, selector and volume mode
//!   ([`binder`]); binding writes both sides (claimRef, volumeName, phases, capacity,
//!   `pv.kubernetes.io/bind-completed` / `bound-by-controller`);
//! * a claim without a match waits with the events Kubernetes records: `FailedBinding`
//!   (no class), `ProvisioningFailed` (unknown class), `WaitForFirstConsumer`,
//!   `ExternalProvisioning` (local volumes are made by the node agent that runs the first
//!   consumer); RBD classes (`volumes.h8s.io/rbd`) are provisioned here when the controller
//!   has a Ceph configuration (`H8S_RBD_CEPH_CONF`, `H8S_RBD_USER`, `H8S_RBD_POOL`);
//! * a volume whose claim is gone is `Released`; with reclaim policy Delete an RBD image is
//!   removed here (local files by their node's agent), with Retain it stays;
//! * the `kubernetes.io/pvc-protection` finalizer keeps a claim while a pod uses it, and
//!   `kubernetes.io/pv-protection` keeps a volume while it is bound;
//! * tenancy: a claim binds only to a volume of its namespace's tenant (the
//!   `tenancy.h8s.io/tenant` label of both; no label = no tenant) or to one pre-bound to it
//!   (`claimRef`, written by a provisioner or a cluster admin), so a tenant's free volume is
//!   never handed to another tenant's claim;
//! * attach-detach ([`attach`]): VolumeAttachments of RBD volumes to the nodes of their
//!   pods, one node at a time unless the volume is multi-attachable (Multi-Attach events).

pub mod attach;
pub mod binder;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::Api;
use serde_json::json;
use tokio::sync::Notify;

use crate::cluster::{self, Events};
use crate::{Context, Error};

/// The default StorageClass.
pub const DEFAULT_CLASS: &str = "h8s-local";
/// Its provisioner: the node agent of the first consumer's node.
pub const LOCAL_PROVISIONER: &str = "volumes.h8s.io/local";
/// RBD classes' provisioner: this controller.
pub const RBD_PROVISIONER: &str = "volumes.h8s.io/rbd";
/// The CSI driver name of RBD volumes (as the agent reads it).
pub const RBD_DRIVER: &str = "rbd.volumes.h8s.io";
/// Asks a node's agent to grow one of its local volumes to this many bytes.
pub const RESIZE_ANNOTATION: &str = "volumes.h8s.io/resize-to";
const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// Ceph settings for provisioning RBD volumes.
#[derive(Debug, Clone)]
struct RbdSettings {
    conf: std::path::PathBuf,
    user: String,
    pool: String,
}

fn rbd_settings() -> Option<RbdSettings> {
    let conf = std::env::var_os("H8S_RBD_CEPH_CONF")?;
    Some(RbdSettings {
        conf: conf.into(),
        user: std::env::var("H8S_RBD_USER").unwrap_or_else(|_| "admin".into()),
        pool: std::env::var("H8S_RBD_POOL").unwrap_or_else(|_| "h8s".into()),
    })
}

/// Runs the volume controllers until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let client = ctx.client.clone();
    ensure_default_class(&client).await;
    let wake = Arc::new(Notify::new());
    let cfg = watcher::Config::default();
    let (pvcs, _t1) = cluster::reflect(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg.clone(),
        Some(wake.clone()),
    );
    let (pvs, _t2) = cluster::reflect(
        Api::<PersistentVolume>::all(client.clone()),
        cfg.clone(),
        Some(wake.clone()),
    );
    let (classes, _t3) = cluster::reflect(
        Api::<StorageClass>::all(client.clone()),
        cfg.clone(),
        Some(wake.clone()),
    );
    let informer = ctx.informers.pods(&client);
    let (pods, _t4) = (informer.store(), informer.waking(wake.clone()));
    let (namespaces, _t5) = cluster::reflect(
        Api::<Namespace>::all(client.clone()),
        cfg.clone(),
        Some(wake.clone()),
    );
    let (attachments, _t6) = cluster::reflect(
        Api::<VolumeAttachment>::all(client.clone()),
        cfg,
        Some(wake.clone()),
    );
    cluster::ready(&pvcs).await;
    cluster::ready(&pvs).await;
    cluster::ready(&classes).await;
    cluster::ready(&pods).await;
    cluster::ready(&namespaces).await;
    cluster::ready(&attachments).await;
    let mut c = Ctl {
        client: client.clone(),
        events: Events::new(client.clone(), "persistentvolume-controller"),
        attach_events: Events::new(client, "attachdetach-controller"),
        told: HashSet::new(),
        rbd: rbd_settings(),
    };
    loop {
        let snap = Snapshot {
            pvcs: pvcs.state(),
            pvs: pvs.state(),
            classes: classes.state(),
            pods: pods.state(),
            namespaces: namespaces.state(),
            attachments: attachments.state(),
        };
        c.sync(&snap).await;
        // Changes wake the loop; the resync also retries failed writes.
        let _ = tokio::time::timeout(
            ctx.timers.resync.min(Duration::from_secs(5)),
            wake.notified(),
        )
        .await;
    }
}

async fn ensure_default_class(client: &kube::Client) {
    let api: Api<StorageClass> = Api::all(client.clone());
    if let Ok(Some(_)) = api.get_opt(DEFAULT_CLASS).await {
        return;
    }
    let any_default = api.list(&Default::default()).await.is_ok_and(|l| {
        l.items.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
    });
    let sc: Result<StorageClass, _> = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_CLASS,
            "annotations": if any_default { json!({}) } else { json!({DEFAULT_ANNOTATION: "true"}) },
        },
        "provisioner": LOCAL_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    }));
    if let Ok(sc) = sc {
        match api.create(&PostParams::default(), &sc).await {
            Ok(_) => tracing::info!(class = DEFAULT_CLASS, "default StorageClass created"),
            Err(e) => tracing::debug!(error = %e, "default StorageClass not created"),
        }
    }
}

struct Snapshot {
    pvcs: Vec<Arc<PersistentVolumeClaim>>,
    pvs: Vec<Arc<PersistentVolume>>,
    classes: Vec<Arc<StorageClass>>,
    pods: Vec<Arc<Pod>>,
    namespaces: Vec<Arc<Namespace>>,
    attachments: Vec<Arc<VolumeAttachment>>,
}

impl Snapshot {
    /// The tenant of the namespace `ns` (its `tenancy.h8s.io/tenant` label).
    fn namespace_tenant(&self, ns: &str) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .and_then(|n| binder::tenant(&n.metadata))
    }
}

struct Ctl {
    client: kube::Client,
    events: Events,
    attach_events: Events,
    /// (uid, reason) of events already recorded: a waiting claim is told once.
    told: HashSet<(String, String)>,
    rbd: Option<RbdSettings>,
}

fn reference(pvc: &PersistentVolumeClaim) -> ObjectReference {
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

fn pv_reference(pv: &PersistentVolume) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolume".into()),
        name: pv.metadata.name.clone(),
        uid: pv.metadata.uid.clone(),
        ..Default::default()
    }
}

fn finalizers(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.finalizers.clone().unwrap_or_default()
}

impl Ctl {
    async fn tell(&mut self, r: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let key = (
            r.uid.clone().unwrap_or_default(),
            format!("{reason}:{note}"),
        );
        if self.told.len() > 10_000 {
            self.told.clear();
        }
        if self.told.insert(key) {
            self.events.publish(r, type_, reason, "Binding", note).await;
        }
    }

    async fn sync(&mut self, s: &Snapshot) {
        for pvc in &s.pvcs {
            if let Err(e) = self.claim(s, pvc).await {
                tracing::debug!(claim = ?pvc.metadata.name, error = %e, "claim sync failed");
            }
        }
        for pv in &s.pvs {
            if let Err(e) = self.volume(s, pv).await {
                tracing::debug!(volume = ?pv.metadata.name, error = %e, "volume sync failed");
            }
        }
        self.attach_detach(s).await;
    }

    /// Carries out [`attach::plan`]: creates, marks and deletes VolumeAttachments and tells
    /// waiting pods why (once per pod and message).
    async fn attach_detach(&mut self, s: &Snapshot) {
        let plan = attach::plan(&s.pods, &s.pvcs, &s.pvs, &s.attachments);
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let attached = json!({"status": {"attached": true}});
        for a in &plan.create {
            let va: Result<VolumeAttachment, _> = serde_json::from_value(json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "VolumeAttachment",
                "metadata": {"name": a.name},
                "spec": {
                    "attacher": attach::ATTACHER,
                    "nodeName": a.node,
                    "source": {"persistentVolumeName": a.pv},
                },
            }));
            let Ok(va) = va else { continue };
            match api.create(&PostParams::default(), &va).await {
                Ok(_) => {}
                Err(kube::Error::Api(st)) if st.code == 409 => {}
                Err(e) => {
                    tracing::warn!(volume = %a.pv, node = %a.node, error = %e, "creating a VolumeAttachment failed");
                    continue;
                }
            }
            // h8s' attacher has nothing to do outside the node: QEMU opens the image itself.
            match api
                .patch_status(&a.name, &PatchParams::default(), &Patch::Merge(&attached))
                .await
            {
                Ok(_) => tracing::info!(volume = %a.pv, node = %a.node, "volume attached"),
                Err(e) => {
                    tracing::warn!(volume = %a.pv, error = %e, "marking a VolumeAttachment failed")
                }
            }
        }
        for name in &plan.mark {
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&attached))
                .await
            {
                tracing::warn!(attachment = %name, error = %e, "marking a VolumeAttachment failed");
            }
        }
        for name in &plan.delete {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(attachment = %name, "volume detached"),
                Err(kube::Error::Api(st)) if st.code == 404 => {}
                Err(e) => {
                    tracing::warn!(attachment = %name, error = %e, "deleting a VolumeAttachment failed")
                }
            }
        }
        for m in plan.multi_attach {
            let key = (
                m.pod.uid.clone(),
                format!("FailedAttachVolume:{}", m.message),
            );
            if self.told.len() > 10_000 {
                self.told.clear();
            }
            if !self.told.insert(key) {
                continue;
            }
            let r = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(m.pod.name),
                namespace: Some(m.pod.namespace),
                uid: Some(m.pod.uid),
                ..Default::default()
            };
            self.attach_events
                .publish(
                    &r,
                    EventType::Warning,
                    "FailedAttachVolume",
                    "Attach",
                    m.message,
                )
                .await;
        }
    }

    async fn claim(
        &mut self,
        s: &Snapshot,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), kube::Error> {
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let fins = finalizers(&pvc.metadata);
        if pvc.metadata.deletion_timestamp.is_some() {
            let used = s.pods.iter().any(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str()) && binder::pod_uses(p, &name)
            });
            if !used && fins.iter().any(|f| f == PVC_PROTECTION) {
                let rest: Vec<&String> = fins.iter().filter(|f| *f != PVC_PROTECTION).collect();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"finalizers": rest, "resourceVersion": pvc.metadata.resource_version}})),
                )
                .await?;
            }
            return Ok(());
        }
        if !fins.iter().any(|f| f == PVC_PROTECTION) {
            let mut all = fins.clone();
            all.push(PVC_PROTECTION.into());
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": all, "resourceVersion": pvc.metadata.resource_version}})),
            )
            .await?;
            return Ok(());
        }
        let phase = pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let vname = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if phase == "Bound" && !vname.is_empty() {
            let pv = s
                .pvs
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(vname.as_str()));
            if let Some(pv) = pv {
                return self.expand(s, pvc, pv).await;
            }
            {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"phase": "Lost"}})),
                )
                .await?;
                self.tell(&reference(pvc), EventType::Warning, "ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!".to_string()).await;
            }
            return Ok(());
        }
        if phase == "Lost" {
            return Ok(());
        }
        if phase != "Pending" || pvc.status.is_none() {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Pending"}})),
            )
            .await?;
        }
        let tenant = s.namespace_tenant(&ns);
        let candidates: Vec<Arc<PersistentVolume>> = s
            .pvs
            .iter()
            .filter(|pv| binder::tenant(&pv.metadata) == tenant || binder::claimed_by(pv, pvc))
            .cloned()
            .collect();
        if let Some(pv) = binder::find(pvc, &candidates) {
            return self.bind(pv, pvc).await;
        }
        let r = reference(pvc);
        let class = binder::pvc_class(pvc).to_string();
        if class.is_empty() {
            self.tell(
                &r,
                EventType::Normal,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            )
            .await;
            return Ok(());
        }
        let Some(sc) = s
            .classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class.as_str()))
        else {
            self.tell(
                &r,
                EventType::Warning,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class}\" not found"),
            )
            .await;
            return Ok(());
        };
        let wffc = sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        let consumer = s.pods.iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str()) && binder::pod_uses(p, &name)
        });
        if wffc && !consumer {
            self.tell(
                &r,
                EventType::Normal,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".into(),
            )
            .await;
            return Ok(());
        }
        if sc.provisioner == RBD_PROVISIONER && self.rbd.is_some() {
            return self.provision_rbd(sc, pvc).await;
        }
        self.tell(&r, EventType::Normal, "ExternalProvisioning", format!("Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", sc.provisioner)).await;
        Ok(())
    }

    /// Offline expansion: a bound claim asking for more than its volume has. Local volumes
    /// are grown by their node's agent (asked through the volume's
    /// `volumes.h8s.io/resize-to` annotation), RBD images here; both only while no
    /// unfinished pod uses the claim. The grown size is then copied to the claim's status.
    async fn expand(
        &mut self,
        s: &Snapshot,
        pvc: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> Result<(), kube::Error> {
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let vname = pv.metadata.name.clone().unwrap_or_default();
        let want = binder::request(pvc);
        let have = binder::capacity(pv);
        let r = reference(pvc);
        let status_cap = pvc
            .status
            .as_ref()
            .and_then(|st| st.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .and_then(|q| binder::bytes(&q.0))
            .unwrap_or(0);
        if want <= have {
            if status_cap < have && status_cap > 0 {
                let cap = pv.spec.as_ref().and_then(|sp| sp.capacity.clone());
                Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"capacity": cap}})),
                    )
                    .await?;
                self.tell(
                    &r,
                    EventType::Normal,
                    "VolumeResizeSuccessful",
                    format!("resize volume \"{vname}\" succeeded; the filesystem grows when a pod mounts it"),
                )
                .await;
            }
            return Ok(());
        }
        let class = binder::pvc_class(pvc).to_string();
        let allowed = s
            .classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class.as_str()))
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !allowed {
            self.tell(
                &r,
                EventType::Warning,
                "VolumeResizeFailed",
                format!("storageclass \"{class}\" does not allow volume expansion"),
            )
            .await;
            return Ok(());
        }
        let used = s.pods.iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str()) && binder::pod_uses(p, &name)
        });
        if used {
            self.tell(
                &r,
                EventType::Warning,
                "VolumeResizeFailed",
                "waiting for the claim's pods to stop: h8s expands volumes offline".into(),
            )
            .await;
            return Ok(());
        }
        let driver = pv
            .spec
            .as_ref()
            .and_then(|sp| sp.csi.as_ref())
            .map(|c| c.driver.clone())
            .unwrap_or_default();
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        if driver == RBD_DRIVER {
            use h8s_volumes::Backend;
            let csi = pv
                .spec
                .as_ref()
                .and_then(|sp| sp.csi.clone())
                .unwrap_or_default();
            let pool = csi
                .volume_attributes
                .as_ref()
                .and_then(|a| a.get("pool").cloned());
            let (Some(b), Ok(id)) = (
                self.rbd_backend(pool),
                h8s_volumes::VolumeId::new(&csi.volume_handle),
            ) else {
                return Ok(());
            };
            match tokio::task::spawn_blocking(move || b.resize(&id, want)).await {
                Ok(Ok(info)) => {
                    pvs.patch(
                        &vname,
                        &PatchParams::default(),
                        &Patch::Merge(
                            &json!({"spec": {"capacity": {"storage": info.size.to_string()}}}),
                        ),
                    )
                    .await?;
                }
                Ok(Err(e)) => {
                    self.tell(&r, EventType::Warning, "VolumeResizeFailed", e.to_string())
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "rbd resize task failed"),
            }
            return Ok(());
        }
        let asked = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESIZE_ANNOTATION))
            .cloned();
        if asked.as_deref() != Some(want.to_string().as_str()) {
            pvs.patch(
                &vname,
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"metadata": {"annotations": {RESIZE_ANNOTATION: want.to_string()}}}),
                ),
            )
            .await?;
            self.tell(
                &r,
                EventType::Normal,
                "Resizing",
                format!("External resizer is resizing volume {vname}"),
            )
            .await;
        }
        Ok(())
    }

    async fn bind(
        &mut self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), kube::Error> {
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let cname = pvc.metadata.name.clone().unwrap_or_default();
        let vname = pv.metadata.name.clone().unwrap_or_default();
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        if !binder::claimed_by(pv, pvc)
            || pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.uid.as_ref())
                .is_none()
        {
            pvs.patch(
                &vname,
                &PatchParams::default(),
                &Patch::Merge(&json!({
                    "metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}, "resourceVersion": pv.metadata.resource_version},
                    "spec": {"claimRef": reference(pvc)},
                })),
            )
            .await?;
        }
        if binder::phase(pv) != "Bound" {
            pvs.patch_status(
                &vname,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        }
        let spec = pv.spec.clone().unwrap_or_default();
        if pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(vname.as_str()) {
            pvcs.patch(
                &cname,
                &PatchParams::default(),
                &Patch::Merge(&json!({
                    "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
                    "spec": {"volumeName": vname},
                })),
            )
            .await?;
        }
        pvcs.patch_status(
            &cname,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "phase": "Bound",
                "accessModes": spec.access_modes,
                "capacity": spec.capacity,
            }})),
        )
        .await?;
        tracing::info!(claim = %format!("{ns}/{cname}"), volume = %vname, "bound");
        Ok(())
    }

    async fn volume(&mut self, s: &Snapshot, pv: &PersistentVolume) -> Result<(), kube::Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let fins = finalizers(&pv.metadata);
        let spec = pv.spec.clone().unwrap_or_default();
        let claim = spec.claim_ref.as_ref().and_then(|r| {
            s.pvcs.iter().find(|c| {
                c.metadata.namespace == r.namespace
                    && c.metadata.name == r.name
                    && (r.uid.is_none() || c.metadata.uid == r.uid)
            })
        });
        if pv.metadata.deletion_timestamp.is_some() {
            let bound = binder::phase(pv) == "Bound" && claim.is_some();
            if !bound && fins.iter().any(|f| f == PV_PROTECTION) {
                let rest: Vec<&String> = fins.iter().filter(|f| *f != PV_PROTECTION).collect();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": rest, "resourceVersion": pv.metadata.resource_version}}))).await?;
            }
            return Ok(());
        }
        if !fins.iter().any(|f| f == PV_PROTECTION) {
            let mut all = fins.clone();
            all.push(PV_PROTECTION.into());
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": all, "resourceVersion": pv.metadata.resource_version}}))).await?;
            return Ok(());
        }
        let want = match (&spec.claim_ref, claim) {
            (None, _) => "Available",
            (Some(r), None) if r.uid.is_none() => "Available",
            (Some(_), None) => "Released",
            (Some(_), Some(c)) => {
                let bound_here =
                    c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str());
                if !bound_here {
                    // Pre-bound (a provisioner's volume, or an admin's claimRef): finish it.
                    if c.metadata.deletion_timestamp.is_none() && binder::fits(pv, c) {
                        return self.bind(pv, c).await;
                    }
                    return Ok(());
                }
                "Bound"
            }
        };
        if binder::phase(pv) != want && binder::phase(pv) != "Failed" {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": want}})),
            )
            .await?;
            return Ok(());
        }
        if want == "Released"
            && spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete")
            && spec.csi.as_ref().is_some_and(|c| c.driver == RBD_DRIVER)
        {
            self.delete_rbd(pv).await?;
        }
        Ok(())
    }

    fn rbd_backend(&self, pool: Option<String>) -> Option<h8s_volumes::rbd::Rbd> {
        let r = self.rbd.as_ref()?;
        Some(h8s_volumes::rbd::Rbd::new(
            &pool.unwrap_or_else(|| r.pool.clone()),
            &r.conf,
            &r.user,
        ))
    }

    async fn delete_rbd(&mut self, pv: &PersistentVolume) -> Result<(), kube::Error> {
        use h8s_volumes::Backend;
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(csi) = spec.csi else { return Ok(()) };
        let pool = csi
            .volume_attributes
            .as_ref()
            .and_then(|a| a.get("pool").cloned());
        let Some(b) = self.rbd_backend(pool) else {
            return Ok(());
        };
        let Ok(id) = h8s_volumes::VolumeId::new(&csi.volume_handle) else {
            return Ok(());
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        match tokio::task::spawn_blocking(move || b.delete(&id)).await {
            Ok(Ok(())) => {
                Api::<PersistentVolume>::all(self.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await?;
            }
            Ok(Err(e)) => {
                self.tell(
                    &pv_reference(pv),
                    EventType::Warning,
                    "VolumeFailedDelete",
                    e.to_string(),
                )
                .await;
            }
            Err(e) => tracing::warn!(error = %e, "rbd delete task failed"),
        }
        Ok(())
    }

    async fn provision_rbd(
        &mut self,
        sc: &StorageClass,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), kube::Error> {
        use h8s_volumes::Backend;
        let r = reference(pvc);
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        let pv_name = format!("pvc-{uid}");
        let pool = sc.parameters.as_ref().and_then(|p| p.get("pool").cloned());
        let Some(b) = self.rbd_backend(pool.clone()) else {
            return Ok(());
        };
        let pool = b.pool().to_string();
        let Ok(id) = h8s_volumes::VolumeId::new(&pv_name) else {
            return Ok(());
        };
        let spec = pvc.spec.clone().unwrap_or_default();
        let block = spec.volume_mode.as_deref() == Some("Block");
        let size = binder::request(pvc);
        let class = sc.metadata.name.clone().unwrap_or_default();
        self.tell(
            &r,
            EventType::Normal,
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim \"{}/{}\"",
                pvc.metadata.namespace.clone().unwrap_or_default(),
                pvc.metadata.name.clone().unwrap_or_default()
            ),
        )
        .await;
        let fs = (!block).then_some(h8s_volumes::Filesystem::Ext4);
        let made = tokio::task::spawn_blocking(move || match b.create(&id, size, fs) {
            Err(h8s_volumes::Error::AlreadyExists(_)) => b.inspect(&id),
            other => other,
        })
        .await;
        let info = match made {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                self.tell(
                    &r,
                    EventType::Warning,
                    "ProvisioningFailed",
                    format!("failed to provision volume with StorageClass \"{class}\": {e}"),
                )
                .await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "rbd provisioning task failed");
                return Ok(());
            }
        };
        let pv: Result<PersistentVolume, _> = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": RBD_PROVISIONER},
                "finalizers": [PV_PROTECTION],
            },
            "spec": {
                "capacity": {"storage": info.size.to_string()},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "volumeMode": if block { "Block" } else { "Filesystem" },
                "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class,
                "claimRef": r,
                "csi": {
                    "driver": RBD_DRIVER,
                    "volumeHandle": pv_name,
                    "fsType": if block { None } else { Some("ext4") },
                    "volumeAttributes": {"pool": pool},
                },
            },
        }));
        let Ok(pv) = pv else { return Ok(()) };
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
        {
            Ok(_) => {
                self.tell(
                    &r,
                    EventType::Normal,
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {pv_name}"),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(st)) if st.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
