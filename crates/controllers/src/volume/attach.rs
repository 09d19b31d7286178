//! The attach-detach controller (kube-controller-manager's `attachdetach-controller` with the
//! CSI external-attacher's part) for h8s volumes that can reach more than one node: RBD
//! images (CSI driver `rbd.volumes.h8s.io`). Local volumes are pinned to their node by node
//! affinity and never need it.
//!
//! A pod scheduled to a node that uses such a volume (through a bound claim or the seeds'
//! `cinder:` volume id) wants a `storage.k8s.io/v1` VolumeAttachment of that volume to that
//! node; the node's agent starts the pod VM only once the attachment says `attached: true`.
//! For a volume that is not multi-attachable (its access modes hold neither ReadWriteMany nor
//! ReadOnlyMany, Kubernetes' `IsMultiAttachAllowed`), no second node gets an attachment while
//! another one exists: the waiting pods get kube-controller-manager's `FailedAttachVolume`
//! event (`Multi-Attach error for volume "pvc-…" Volume is already used by pod(s) …`). An
//! attachment is removed once no unfinished pod on its node uses the volume, that is after the
//! pod object is gone or the pod finished (its VM is stopped then) — never under a running VM.
//!
//! [`plan`] is the pure part (unit-tested); the controller loop writes what it decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;

/// The attacher (CSI driver name) of the volumes this controller attaches.
pub const ATTACHER: &str = super::RBD_DRIVER;

/// Kubernetes' VolumeAttachment name: `csi-` and the SHA-256 of volume handle, attacher and
/// node name.
pub fn attachment_name(handle: &str, attacher: &str, node: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{handle}{attacher}{node}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// A pod by namespace, name and uid (for events).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// An attachment to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub name: String,
    pub pv: String,
    pub node: String,
}

/// A pod kept waiting by another node's attachment, with the event's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiAttach {
    pub pod: PodKey,
    pub message: String,
}

/// What the controller does next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Attachments to create (then mark attached).
    pub create: Vec<Attach>,
    /// Existing attachments (names) to mark `attached: true`.
    pub mark: Vec<String>,
    /// Attachments (names) no unfinished pod needs any more.
    pub delete: Vec<String>,
    /// Pods that wait for another node to let go of their volume.
    pub multi_attach: Vec<MultiAttach>,
}

fn finished(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| matches!(ph, "Succeeded" | "Failed"))
}

/// The PersistentVolumes (names) the pod uses: bound claims and `cinder:` volume ids.
fn pod_volumes(pod: &Pod, claims: &[Arc<PersistentVolumeClaim>]) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(src) = &v.persistent_volume_claim {
            let bound = claims.iter().find(|c| {
                c.metadata.namespace.as_deref() == Some(ns)
                    && c.metadata.name.as_deref() == Some(src.claim_name.as_str())
            });
            if let Some(pv) = bound
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty())
            {
                out.push(pv);
            }
        } else if let Some(c) = &v.cinder {
            out.push(c.volume_id.clone());
        }
    }
    out
}

/// Kubernetes' `IsMultiAttachAllowed`: no access modes (unknown), ReadWriteMany or
/// ReadOnlyMany.
fn multi_attach_allowed(pv: &PersistentVolume) -> bool {
    let modes = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    modes.is_empty()
        || modes
            .iter()
            .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
}

fn handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == ATTACHER).then_some(csi.volume_handle.as_str())
}

/// The attach-detach decisions for the cluster's pods, claims, volumes and attachments.
pub fn plan(
    pods: &[Arc<Pod>],
    claims: &[Arc<PersistentVolumeClaim>],
    pvs: &[Arc<PersistentVolume>],
    vas: &[Arc<VolumeAttachment>],
) -> Plan {
    let pv_by_name: BTreeMap<&str, &PersistentVolume> = pvs
        .iter()
        .filter_map(|p| Some((p.metadata.name.as_deref()?, p.as_ref())))
        .collect();
    // (pv, node) → pods (oldest first), for pods scheduled and not finished.
    type Age = (Option<jiff::Timestamp>, PodKey);
    let mut desired: BTreeMap<(String, String), Vec<Age>> = BTreeMap::new();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if finished(p) {
            continue;
        }
        let key = PodKey {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
        };
        let born = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        for pv in pod_volumes(p, claims) {
            let Some(v) = pv_by_name.get(pv.as_str()) else {
                continue;
            };
            if handle(v).is_none() {
                continue;
            }
            desired
                .entry((pv, node.clone()))
                .or_default()
                .push((born, key.clone()));
        }
    }
    for pods in desired.values_mut() {
        pods.sort();
    }
    // Our attachments by (pv, node).
    let mut existing: BTreeMap<(String, String), (&str, bool)> = BTreeMap::new();
    for va in vas {
        let spec = &va.spec;
        if spec.attacher != ATTACHER {
            continue;
        }
        let Some(pv) = spec.source.persistent_volume_name.clone() else {
            continue;
        };
        let attached = va.status.as_ref().is_some_and(|s| s.attached);
        if let Some(name) = va.metadata.name.as_deref() {
            existing.insert((pv, spec.node_name.clone()), (name, attached));
        }
    }
    let mut out = Plan::default();
    for ((pv, node), (name, attached)) in &existing {
        if desired.contains_key(&(pv.clone(), node.clone())) {
            if !attached {
                out.mark.push(name.to_string());
            }
        } else {
            out.delete.push(name.to_string());
        }
    }
    // Nodes that hold each volume: existing attachments count until they are deleted (the
    // next round), so a second node waits for the first one's detach.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (pv, node) in existing.keys() {
        holders
            .entry(pv.as_str())
            .or_default()
            .insert(node.as_str());
    }
    // New attachments, oldest pod first: of two nodes asking at once, one wins.
    let mut asks: Vec<(&Age, &str, &str)> = desired
        .iter()
        .filter(|(k, _)| !existing.contains_key(*k))
        .filter_map(|((pv, node), pods)| Some((pods.first()?, pv.as_str(), node.as_str())))
        .collect();
    asks.sort();
    for (_, pv, node) in asks {
        let Some(v) = pv_by_name.get(pv) else {
            continue;
        };
        let others: Vec<&str> = holders
            .get(pv)
            .map(|h| h.iter().copied().filter(|n| *n != node).collect())
            .unwrap_or_default();
        if !others.is_empty() && !multi_attach_allowed(v) {
            let waiting = &desired[&(pv.to_string(), node.to_string())];
            let users: Vec<&PodKey> = others
                .iter()
                .filter_map(|n| desired.get(&(pv.to_string(), n.to_string())))
                .flatten()
                .map(|(_, k)| k)
                .collect();
            for (_, pod) in waiting {
                out.multi_attach.push(MultiAttach {
                    pod: pod.clone(),
                    message: multi_attach_message(pv, &pod.namespace, &users),
                });
            }
            continue;
        }
        let handle = handle(v).unwrap_or(pv);
        out.create.push(Attach {
            name: attachment_name(handle, ATTACHER, node),
            pv: pv.to_string(),
            node: node.to_string(),
        });
        holders.entry(pv).or_default().insert(node);
    }
    out
}

/// kube-controller-manager's `reportMultiAttachError` text for a pod of namespace `ns`: the
/// names of the pods in its own namespace that use the volume on other nodes, and only a
/// count of those in other namespaces.
fn multi_attach_message(pv: &str, ns: &str, users: &[&PodKey]) -> String {
    let local: Vec<&str> = users
        .iter()
        .filter(|p| p.namespace == ns)
        .map(|p| p.name.as_str())
        .collect();
    let other = users.len() - local.len();
    let tail = if users.is_empty() {
        "Volume is already exclusively attached to one node and can't be attached to another"
            .to_string()
    } else if local.is_empty() {
        format!("Volume is already used by {other} pod(s) in different namespaces")
    } else if other > 0 {
        format!(
            "Volume is already used by pod(s) {} and {other} pod(s) in different namespaces",
            local.join(", ")
        )
    } else {
        format!("Volume is already used by pod(s) {}", local.join(", "))
    };
    format!("Multi-Attach error for volume {pv:?} {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: Option<&str>, claim: &str, born: &str) -> Arc<Pod> {
        let mut p = json!({
            "metadata": {"namespace": ns, "name": name, "uid": format!("u-{name}"), "creationTimestamp": born},
            "spec": {"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": "Pending"},
        });
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn claim(ns: &str, name: &str, pv: &str) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"volumeName": pv},
            }))
            .unwrap(),
        )
    }

    fn pv(name: &str, driver: &str, modes: &[&str]) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"accessModes": modes, "csi": {"driver": driver, "volumeHandle": name}},
            }))
            .unwrap(),
        )
    }

    fn va(pv: &str, node: &str, attached: bool) -> Arc<VolumeAttachment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": attachment_name(pv, ATTACHER, node)},
                "spec": {"attacher": ATTACHER, "nodeName": node, "source": {"persistentVolumeName": pv}},
                "status": {"attached": attached},
            }))
            .unwrap(),
        )
    }

    const T1: &str = "2026-01-01T00:00:01Z";
    const T2: &str = "2026-01-01T00:00:02Z";

    #[test]
    fn names_are_kubernetes_csi_attachment_names() {
        let n = attachment_name("pvc-1", ATTACHER, "n1");
        assert!(n.starts_with("csi-") && n.len() == 68, "{n}");
        assert_ne!(n, attachment_name("pvc-1", ATTACHER, "n2"));
    }

    #[test]
    fn scheduled_pods_get_attachments_and_unscheduled_or_local_ones_do_not() {
        let claims = [claim("a", "data", "pvc-1"), claim("a", "loc", "pvc-l")];
        let pvs = [
            pv("pvc-1", ATTACHER, &["ReadWriteOnce"]),
            pv("pvc-l", "local.volumes.h8s.io", &["ReadWriteOnce"]),
        ];
        let pods = [
            pod("a", "p", Some("n1"), "data", T1),
            pod("a", "q", None, "data", T2),
            pod("a", "l", Some("n1"), "loc", T1),
        ];
        let p = plan(&pods, &claims, &pvs, &[]);
        assert_eq!(
            p.create,
            vec![Attach {
                name: attachment_name("pvc-1", ATTACHER, "n1"),
                pv: "pvc-1".into(),
                node: "n1".into(),
            }]
        );
        assert!(p.delete.is_empty() && p.multi_attach.is_empty());
        // Created but not marked yet: marked attached next round.
        let p = plan(&pods, &claims, &pvs, &[va("pvc-1", "n1", false)]);
        assert!(p.create.is_empty());
        assert_eq!(p.mark, vec![attachment_name("pvc-1", ATTACHER, "n1")]);
        let p = plan(&pods, &claims, &pvs, &[va("pvc-1", "n1", true)]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn read_write_once_waits_for_the_other_node_to_let_go() {
        let claims = [claim("a", "data", "pvc-1")];
        let pvs = [pv("pvc-1", ATTACHER, &["ReadWriteOnce"])];
        let old = pod("a", "old", Some("n1"), "data", T1);
        let new = pod("a", "new", Some("n2"), "data", T2);
        let attached = [va("pvc-1", "n1", true)];
        let p = plan(&[old.clone(), new.clone()], &claims, &pvs, &attached);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(
            p.multi_attach,
            vec![MultiAttach {
                pod: PodKey {
                    namespace: "a".into(),
                    name: "new".into(),
                    uid: "u-new".into()
                },
                message:
                    "Multi-Attach error for volume \"pvc-1\" Volume is already used by pod(s) old"
                        .into(),
            }]
        );
        // Pods of other namespaces are counted, not named.
        let mut other = (*old).clone();
        other.metadata.namespace = Some("b".into());
        let claims2 = [claim("a", "data", "pvc-1"), claim("b", "data", "pvc-1")];
        let p = plan(&[Arc::new(other), new.clone()], &claims2, &pvs, &attached);
        assert_eq!(
            p.multi_attach[0].message,
            "Multi-Attach error for volume \"pvc-1\" Volume is already used by 1 pod(s) in different namespaces"
        );
        // The first pod finished: its attachment goes; only then the second node gets one.
        let mut done = (*old).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let p = plan(&[Arc::new(done), new.clone()], &claims, &pvs, &attached);
        assert_eq!(p.delete, vec![attachment_name("pvc-1", ATTACHER, "n1")]);
        assert!(p.create.is_empty(), "not while n1's attachment exists");
        assert_eq!(
            p.multi_attach[0].message,
            "Multi-Attach error for volume \"pvc-1\" Volume is already exclusively attached to one node and can't be attached to another"
        );
        let p = plan(std::slice::from_ref(&new), &claims, &pvs, &[]);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].node, "n2");
    }

    #[test]
    fn two_nodes_asking_at_once_the_older_pod_wins() {
        let claims = [claim("a", "data", "pvc-1")];
        let pvs = [pv("pvc-1", ATTACHER, &["ReadWriteOncePod"])];
        let pods = [
            pod("a", "young", Some("n1"), "data", T2),
            pod("a", "old", Some("n2"), "data", T1),
        ];
        let p = plan(&pods, &claims, &pvs, &[]);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].node, "n2");
        assert_eq!(p.multi_attach.len(), 1);
        assert_eq!(p.multi_attach[0].pod.name, "young");
    }

    #[test]
    fn multi_attachable_volumes_and_same_node_pods_share_one_attachment() {
        let claims = [claim("a", "data", "pvc-1")];
        let rox = [pv("pvc-1", ATTACHER, &["ReadOnlyMany"])];
        let pods = [
            pod("a", "x", Some("n1"), "data", T1),
            pod("a", "y", Some("n2"), "data", T2),
            pod("a", "z", Some("n2"), "data", T2),
        ];
        let p = plan(&pods, &claims, &rox, &[va("pvc-1", "n1", true)]);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].node, "n2");
        assert!(p.multi_attach.is_empty());
        // Same node, RWO: the attachment is the node's, shared by its pods.
        let rwo = [pv("pvc-1", ATTACHER, &["ReadWriteOnce"])];
        let same = [
            pod("a", "x", Some("n1"), "data", T1),
            pod("a", "w", Some("n1"), "data", T2),
        ];
        assert_eq!(
            plan(&same, &claims, &rwo, &[va("pvc-1", "n1", true)]),
            Plan::default()
        );
    }

    #[test]
    fn cinder_volumes_name_the_volume_directly() {
        let pvs = [pv("vol-7", ATTACHER, &["ReadWriteOnce"])];
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "a", "name": "c", "uid": "u"},
            "spec": {"nodeName": "n1", "containers": [], "volumes": [{"name": "d", "cinder": {"volumeID": "vol-7"}}]},
        }))
        .unwrap();
        let plan = plan(&[Arc::new(p)], &[], &pvs, &[]);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].pv, "vol-7");
    }
}
