//! The pure part of the PersistentVolume controller: which volume a claim binds to, what a
//! volume's phase is, and whether a pod still uses a claim. No I/O; unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A storage quantity (`1Gi`, `500M`, `1e9`, `1.5Gi`) in bytes, rounded up.
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let v = (n * mult).ceil();
    (v >= 0.0 && v.is_finite()).then_some(v as u64)
}

/// The claim's storage request in bytes.
pub fn request(pvc: &PersistentVolumeClaim) -> u64 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| bytes(&q.0))
        .unwrap_or(0)
}

/// The volume's capacity in bytes.
pub fn capacity(pv: &PersistentVolume) -> u64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| bytes(&q.0))
        .unwrap_or(0)
}

fn pv_class(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The claim's class (`""`: none).
pub fn pvc_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

fn mode_of(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

/// Whether `sel` matches `labels` (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let me = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    ml && me
}

/// The tenant an object belongs to: its `tenancy.h8s.io/tenant` label.
pub fn tenant(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("tenancy.h8s.io/tenant"))
        .map(String::as_str)
        .filter(|t| !t.is_empty())
}

/// Whether the volume's claimRef names this claim (by namespace/name, and uid when set).
pub fn claimed_by(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.namespace == pvc.metadata.namespace
        && r.name == pvc.metadata.name
        && (r.uid.is_none() || r.uid == pvc.metadata.uid)
}

/// Whether the volume fits the claim: class, volume mode, access modes, size, selector.
pub fn fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(ps), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if pv_class(pv) != pvc_class(pvc) {
        return false;
    }
    if mode_of(ps.volume_mode.as_ref()) != mode_of(cs.volume_mode.as_ref()) {
        return false;
    }
    let have = ps.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    if capacity(pv) < request(pvc) {
        return false;
    }
    if let Some(sel) = &cs.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !selector_matches(sel, &labels) {
            return false;
        }
    }
    true
}

/// The volume a pending claim binds to: the one it names (`spec.volumeName`), else a volume
/// pre-bound to it (`claimRef`), else the smallest free volume that fits.
pub fn find<'a>(
    pvc: &PersistentVolumeClaim,
    pvs: &'a [std::sync::Arc<PersistentVolume>],
) -> Option<&'a PersistentVolume> {
    let usable = |pv: &PersistentVolume| pv.metadata.deletion_timestamp.is_none();
    let free = |pv: &PersistentVolume| {
        pv.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
    };
    if let Some(name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        return pvs
            .iter()
            .map(|p| p.as_ref())
            .find(|pv| pv.metadata.name.as_deref() == Some(name))
            .filter(|pv| usable(pv) && (free(pv) || claimed_by(pv, pvc)));
    }
    if let Some(pv) = pvs
        .iter()
        .map(|p| p.as_ref())
        .find(|pv| usable(pv) && claimed_by(pv, pvc) && fits(pv, pvc))
    {
        return Some(pv);
    }
    pvs.iter()
        .map(|p| p.as_ref())
        .filter(|pv| usable(pv) && free(pv) && phase(pv) == "Available" && fits(pv, pvc))
        .min_by_key(|pv| (capacity(pv), pv.metadata.name.clone()))
}

/// The volume's status phase (`Pending` when unset).
pub fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether a pod that is not finished uses the claim `name`.
pub fn pod_uses(pod: &Pod, name: &str) -> bool {
    let done = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| matches!(p, "Succeeded" | "Failed"));
    !done
        && pod.spec.as_ref().is_some_and(|s| {
            s.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == name)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pv(
        name: &str,
        size: &str,
        class: &str,
        modes: &[&str],
        labels: serde_json::Value,
    ) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"capacity": {"storage": size}, "storageClassName": class,
                         "accessModes": modes, "csi": {"driver": "local.volumes.h8s.io", "volumeHandle": name}},
                "status": {"phase": "Available"}
            }))
            .unwrap(),
        )
    }

    fn pvc(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("500M"), Some(500_000_000));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("12"), Some(12));
        assert_eq!(bytes("x"), None);
    }

    #[test]
    fn static_binding_picks_the_smallest_fitting_volume() {
        let pvs = vec![
            pv("big", "10Gi", "slow", &["ReadWriteOnce"], json!({})),
            pv(
                "small",
                "2Gi",
                "slow",
                &["ReadWriteOnce", "ReadOnlyMany"],
                json!({"tier": "a"}),
            ),
            pv("tiny", "512Mi", "slow", &["ReadWriteOnce"], json!({})),
            pv("other", "2Gi", "fast", &["ReadWriteOnce"], json!({})),
        ];
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert_eq!(
            find(&c, &pvs).unwrap().metadata.name.as_deref(),
            Some("small")
        );
        // Access modes: ReadOnlyMany only on "small".
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadOnlyMany"],
                           "resources": {"requests": {"storage": "1Mi"}}}),
        );
        assert_eq!(
            find(&c, &pvs).unwrap().metadata.name.as_deref(),
            Some("small")
        );
        // Selector.
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"],
                           "selector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
                           "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert_eq!(
            find(&c, &pvs).unwrap().metadata.name.as_deref(),
            Some("big")
        );
        // Volume mode must match.
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                           "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert!(find(&c, &pvs).is_none());
        // Too large for any.
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "20Gi"}}}),
        );
        assert!(find(&c, &pvs).is_none());
        // No class binds only class-less volumes.
        let c = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert!(find(&c, &pvs).is_none());
    }

    #[test]
    fn named_and_prebound_volumes_win_and_claimed_ones_are_skipped() {
        let mut taken = (*pv("taken", "5Gi", "slow", &["ReadWriteOnce"], json!({}))).clone();
        taken.spec.as_mut().unwrap().claim_ref =
            Some(k8s_openapi::api::core::v1::ObjectReference {
                namespace: Some("ns".into()),
                name: Some("someone-else".into()),
                ..Default::default()
            });
        let mut mine = (*pv("mine", "8Gi", "slow", &["ReadWriteOnce"], json!({}))).clone();
        mine.spec.as_mut().unwrap().claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            namespace: Some("ns".into()),
            name: Some("c".into()),
            uid: Some("u1".into()),
            ..Default::default()
        });
        let pvs = vec![
            Arc::new(taken),
            Arc::new(mine),
            pv("free", "1Gi", "slow", &["ReadWriteOnce"], json!({})),
        ];
        let c = pvc(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"],
                           "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert_eq!(
            find(&c, &pvs).unwrap().metadata.name.as_deref(),
            Some("mine")
        );
        let c = pvc(json!({"storageClassName": "slow", "volumeName": "taken",
                           "resources": {"requests": {"storage": "1Gi"}}}));
        assert!(
            find(&c, &pvs).is_none(),
            "a volume claimed by another claim is not taken"
        );
        let c = pvc(json!({"storageClassName": "slow", "volumeName": "free",
                           "resources": {"requests": {"storage": "1Gi"}}}));
        assert_eq!(
            find(&c, &pvs).unwrap().metadata.name.as_deref(),
            Some("free")
        );
    }
}
