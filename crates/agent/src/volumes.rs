//! Pod volumes that need no block device, built inside the pod VM from content the agent
//! sends over the guest channel (no host path ever enters a VM): `emptyDir` (a directory in
//! guest RAM shared by the pod's containers), `configMap`, `secret`, `downwardAPI` and
//! `projected` (including the service account token). Their files are computed here (pure,
//! from fetched objects) and written into the VM atomically; a changed ConfigMap or Secret is
//! written again within the refresh period, as kubelet does.

use std::collections::{BTreeMap, HashMap};

use h8s_guest::{Mount, MountSource, VolumeFile};
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::env::{EnvError, PodFacts};

/// What a volume is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A shared directory the containers fill themselves.
    Empty,
    /// Files the agent writes.
    Content,
    /// A persistent volume: a disk of the pod VM (`persistentVolumeClaim`, `cinder`).
    Disk,
}

/// The objects volumes read: name → data (`None`: does not exist).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Service account tokens by (audience, expiration seconds).
    pub token: Option<String>,
}

/// Which ConfigMaps and Secrets the pod's volumes read, and whether a token is wanted.
pub(crate) fn references(pod: &Pod) -> (Vec<String>, Vec<String>, bool) {
    let (mut cms, mut secrets, mut token) = (Vec::new(), Vec::new(), false);
    let add = |v: &mut Vec<String>, n: &str| {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    };
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(c) = &v.config_map {
            add(&mut cms, &c.name);
        }
        if let Some(s) = &v.secret {
            if let Some(n) = &s.secret_name {
                add(&mut secrets, n);
            }
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    add(&mut cms, &c.name);
                }
                if let Some(s) = &src.secret {
                    add(&mut secrets, &s.name);
                }
                if src.service_account_token.is_some() {
                    token = true;
                }
            }
        }
    }
    (cms, secrets, token)
}

/// The kind of a volume, or why the VM pod cannot have it.
pub(crate) fn kind(v: &Volume) -> Result<Kind, EnvError> {
    if v.empty_dir.is_some() {
        return Ok(Kind::Empty);
    }
    if v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
    {
        return Ok(Kind::Content);
    }
    if v.persistent_volume_claim.is_some() || v.cinder.is_some() {
        return Ok(Kind::Disk);
    }
    if v.host_path.is_some() {
        return Err(EnvError(format!(
            "volume {:?}: hostPath volumes are not available to VM pods (no host path enters a pod VM)",
            v.name
        )));
    }
    Err(EnvError(format!(
        "volume {:?}: only emptyDir, configMap, secret, downwardAPI, projected, persistentVolumeClaim and cinder volumes are supported",
        v.name
    )))
}

fn items(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
    optional: bool,
) -> Result<Vec<VolumeFile>, EnvError> {
    let mode = |m: Option<i32>| m.or(default_mode).map(|m| m as u32);
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| VolumeFile {
                path: k.clone(),
                data: v.clone(),
                mode: mode(None),
            })
            .collect()),
        Some(list) => {
            let mut out = Vec::new();
            for it in list {
                match data.get(&it.key) {
                    Some(v) => out.push(VolumeFile {
                        path: it.path.clone(),
                        data: v.clone(),
                        mode: mode(it.mode),
                    }),
                    None if optional => {}
                    None => {
                        return Err(EnvError(format!(
                            "configmap or secret {what:?} has no key {:?}",
                            it.key
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn downward(
    pod: &Pod,
    facts: &PodFacts,
    files: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Vec<VolumeFile>, EnvError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for f in files {
        let value = if let Some(fr) = &f.field_ref {
            match fr.field_path.as_str() {
                "metadata.labels" | "metadata.annotations" => {
                    let m = if fr.field_path == "metadata.labels" {
                        pod.metadata.labels.clone()
                    } else {
                        pod.metadata.annotations.clone()
                    };
                    m.unwrap_or_default()
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"\n", v.replace('"', "\\\"")))
                        .collect::<String>()
                }
                _ => {
                    let c = Container::default();
                    let e = k8s_openapi::api::core::v1::EnvVar {
                        name: "X".into(),
                        value: None,
                        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                            field_ref: Some(fr.clone()),
                            ..Default::default()
                        }),
                    };
                    let c = Container {
                        env: Some(vec![e]),
                        ..c
                    };
                    crate::env::resolve(pod, &c, facts, &Default::default())?
                        .pop()
                        .map(|(_, v)| v)
                        .unwrap_or_default()
                }
            }
        } else if let Some(rf) = &f.resource_field_ref {
            let c = spec
                .containers
                .iter()
                .find(|c| Some(&c.name) == rf.container_name.as_ref())
                .cloned()
                .unwrap_or_default();
            let e = k8s_openapi::api::core::v1::EnvVar {
                name: "X".into(),
                value: None,
                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                    resource_field_ref: Some(rf.clone()),
                    ..Default::default()
                }),
            };
            let c = Container {
                env: Some(vec![e]),
                ..c
            };
            crate::env::resolve(pod, &c, facts, &Default::default())?
                .pop()
                .map(|(_, v)| v)
                .unwrap_or_default()
        } else {
            continue;
        };
        out.push(VolumeFile {
            path: f.path.clone(),
            data: value.into_bytes(),
            mode: f.mode.or(default_mode).map(|m| m as u32),
        });
    }
    Ok(out)
}

/// The files of a content volume.
pub(crate) fn files(
    pod: &Pod,
    v: &Volume,
    facts: &PodFacts,
    src: &Sources,
) -> Result<Vec<VolumeFile>, EnvError> {
    let missing = |kind: &str, n: &str| EnvError(format!("{kind} {n:?} not found"));
    if let Some(c) = &v.config_map {
        let optional = c.optional.unwrap_or(false);
        return match src.config_maps.get(&c.name).cloned().flatten() {
            Some(d) => items(&d, c.items.as_ref(), c.default_mode, &c.name, optional),
            None if optional => Ok(vec![]),
            None => Err(missing("configmap", &c.name)),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        return match src.secrets.get(&name).cloned().flatten() {
            Some(d) => items(&d, s.items.as_ref(), s.default_mode, &name, optional),
            None if optional => Ok(vec![]),
            None => Err(missing("secret", &name)),
        };
    }
    if let Some(d) = &v.downward_api {
        return downward(
            pod,
            facts,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode,
        );
    }
    if let Some(p) = &v.projected {
        let mut out = Vec::new();
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                let optional = c.optional.unwrap_or(false);
                match src.config_maps.get(&c.name).cloned().flatten() {
                    Some(d) => out.extend(items(
                        &d,
                        c.items.as_ref(),
                        p.default_mode,
                        &c.name,
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(missing("configmap", &c.name)),
                }
            }
            if let Some(sec) = &s.secret {
                let optional = sec.optional.unwrap_or(false);
                match src.secrets.get(&sec.name).cloned().flatten() {
                    Some(d) => out.extend(items(
                        &d,
                        sec.items.as_ref(),
                        p.default_mode,
                        &sec.name,
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(missing("secret", &sec.name)),
                }
            }
            if let Some(d) = &s.downward_api {
                out.extend(downward(
                    pod,
                    facts,
                    d.items.as_deref().unwrap_or(&[]),
                    p.default_mode,
                )?);
            }
            if let Some(t) = &s.service_account_token {
                if let Some(tok) = &src.token {
                    out.push(VolumeFile {
                        path: t.path.clone(),
                        data: tok.clone().into_bytes(),
                        mode: p.default_mode.map(|m| m as u32),
                    });
                }
            }
        }
        return Ok(out);
    }
    Ok(vec![])
}

/// The guest mounts of a container's volumeMounts and volumeDevices. Content volumes are
/// always read-only (as in Kubernetes); persistent volumes come from `disks` (the pod VM's
/// volume disks) with subPath, readOnly and the pod's fsGroup.
pub(crate) fn mounts(
    pod: &Pod,
    c: &Container,
    disks: &[crate::pvc::Attached],
) -> Result<Vec<Mount>, EnvError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let vols: Vec<Volume> = spec.volumes.clone().unwrap_or_default();
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let disk = |name: &str| {
        disks
            .iter()
            .find(|d| d.volume == name)
            .ok_or_else(|| EnvError(format!("volume {name:?}: the pod VM has no disk for it")))
    };
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = vols.iter().find(|v| v.name == m.name).ok_or_else(|| {
            EnvError(format!(
                "volumeMount {:?} names no volume of the pod",
                m.name
            ))
        })?;
        let k = kind(v)?;
        let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
            || (sub_path.is_some() && k != Kind::Disk)
        {
            return Err(EnvError(format!(
                "volumeMount {:?}: subPath is supported on persistent volumes only (subPathExpr not at all) on VM pods",
                m.name
            )));
        }
        if let Some(sp) = &sub_path {
            let p = std::path::Path::new(sp);
            if p.is_absolute()
                || p.components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(EnvError(format!(
                    "volumeMount {:?}: subPath {sp:?} must be a relative path without '..'",
                    m.name
                )));
            }
        }
        let read_only = m.read_only.unwrap_or(false) || k == Kind::Content;
        let source = if k == Kind::Disk {
            let d = disk(&v.name)?;
            if d.block_mode {
                return Err(EnvError(format!(
                    "volume {:?} has volumeMode Block: use volumeDevices, not volumeMounts",
                    v.name
                )));
            }
            MountSource::Volume {
                device: h8s_guest::BlockDevice::Serial(d.serial.clone()),
                fstype: d.fstype.clone(),
                sub_path,
                fs_group,
                device_read_only: d.read_only,
            }
        } else {
            MountSource::PodDir {
                name: v.name.clone(),
                size_bytes: crate::eviction::empty_dir_size(&spec, &v.name),
            }
        };
        out.push(Mount {
            target: m.mount_path.clone(),
            source,
            read_only,
        });
    }
    for dv in c.volume_devices.iter().flatten() {
        let d = disk(&dv.name)?;
        if !d.block_mode {
            return Err(EnvError(format!(
                "volume {:?} has volumeMode Filesystem: use volumeMounts, not volumeDevices",
                dv.name
            )));
        }
        out.push(Mount {
            target: dv.device_path.clone(),
            source: MountSource::Device {
                device: h8s_guest::BlockDevice::Serial(d.serial.clone()),
            },
            read_only: d.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, DownwardAPIVolumeSource, ObjectFieldSelector, PodSpec, VolumeMount,
    };

    #[test]
    fn configmap_items_downward_and_mounts() {
        let vols = vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cm".into(),
                    items: Some(vec![KeyToPath {
                        key: "a".into(),
                        path: "dir/a.txt".into(),
                        mode: Some(0o600),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "info".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "name".into(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "host".into(),
                host_path: Some(Default::default()),
                ..Default::default()
            },
        ];
        let c = Container {
            name: "c".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "cfg".into(),
                mount_path: "/etc/cfg".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c.clone()],
                volumes: Some(vols.clone()),
                ..Default::default()
            }),
            status: None,
        };
        let mut src = Sources::default();
        src.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("a".to_string(), b"x".to_vec())])),
        );
        let f = files(&pod, &vols[0], &PodFacts::default(), &src).unwrap();
        assert_eq!(f[0].path, "dir/a.txt");
        assert_eq!(f[0].mode, Some(0o600));
        let d = files(&pod, &vols[1], &PodFacts::default(), &src).unwrap();
        assert_eq!(d[0].data, b"p");
        assert!(kind(&vols[2]).unwrap_err().0.contains("hostPath"));
        let m = mounts(&pod, &c, &[]).unwrap();
        assert!(m[0].read_only);
        assert_eq!(references(&pod).0, vec!["cm".to_string()]);
        src.config_maps.insert("cm".into(), None);
        assert!(files(&pod, &vols[0], &PodFacts::default(), &src).is_err());
    }
}
