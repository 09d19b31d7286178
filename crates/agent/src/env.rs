//! A container's environment as kubelet builds it: `envFrom` (ConfigMaps, Secrets, with a
//! prefix), then `env` (values with `$(VAR)` expansion, `valueFrom` fieldRef,
//! resourceFieldRef, configMapKeyRef, secretKeyRef); and `$(VAR)` expansion of command and
//! args. The ConfigMaps and Secrets are fetched first ([`references`]), so resolution itself
//! is pure.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Which ConfigMaps and Secrets a container's environment reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct References {
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
}

/// What was fetched: name → data (`None`: does not exist).
#[derive(Debug, Default, Clone)]
pub(crate) struct Fetched {
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

/// The environment cannot be built (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EnvError(pub String);

/// The pod-level values env can refer to.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub node_name: String,
    /// The pod VM's CPUs, millicores (the limit of a container without one).
    pub vm_cpu_millis: u128,
    /// The pod VM's memory, bytes.
    pub vm_memory_bytes: u128,
    /// The `default/kubernetes` Service (ClusterIP, port), for the `KUBERNETES_SERVICE_*`
    /// variables every container gets (as kubelet sets them; client-go's in-cluster
    /// configuration reads them). `None`: not set (no Service feed on this node).
    pub kubernetes: Option<(String, u16)>,
}

pub(crate) fn references(c: &Container) -> References {
    let mut r = References::default();
    let add = |v: &mut Vec<String>, n: &str| {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    };
    for f in c.env_from.iter().flatten() {
        if let Some(cm) = &f.config_map_ref {
            add(&mut r.config_maps, &cm.name);
        }
        if let Some(s) = &f.secret_ref {
            add(&mut r.secrets, &s.name);
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(vf) = &e.value_from {
            if let Some(k) = &vf.config_map_key_ref {
                add(&mut r.config_maps, &k.name);
            }
            if let Some(k) = &vf.secret_key_ref {
                add(&mut r.secrets, &k.name);
            }
        }
    }
    r
}

/// Replaces `$(VAR)` with the value of `VAR` when defined; `$$` escapes, unknown references
/// stay as written (as Kubernetes does).
pub(crate) fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                        i += 3 + end;
                        continue;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_ref(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, EnvError> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let sub = |p: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(p)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    if let Some(v) = sub("metadata.labels", &m.labels) {
        return Ok(v);
    }
    if let Some(v) = sub("metadata.annotations", &m.annotations) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.clone().unwrap_or(facts.node_name.clone()),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        other => {
            return Err(EnvError(format!(
                "unsupported fieldRef fieldPath {other:?}"
            )))
        }
    })
}

fn resource_ref(
    pod: &Pod,
    this: &Container,
    facts: &PodFacts,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, EnvError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let c = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => this.clone(),
        Some(n) => spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == n)
            .cloned()
            .ok_or_else(|| EnvError(format!("resourceFieldRef names unknown container {n:?}")))?,
    };
    let res = c.resources.clone().unwrap_or_default();
    let (kind, which) = r
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError(format!("unsupported resource {:?}", r.resource)))?;
    let map = match kind {
        "limits" => res.limits,
        "requests" => res.requests,
        _ => return Err(EnvError(format!("unsupported resource {:?}", r.resource))),
    };
    let given = map.as_ref().and_then(|m| m.get(which)).map(|q| q.0.clone());
    let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    let bad = || EnvError(format!("invalid quantity for {:?}", r.resource));
    Ok(match which {
        "cpu" => {
            let v = match given {
                Some(q) => crate::quantity::milli(&q).ok_or_else(bad)?,
                None if kind == "limits" => facts.vm_cpu_millis,
                None => 0,
            };
            let d = crate::quantity::milli(divisor)
                .filter(|d| *d > 0)
                .ok_or_else(bad)?;
            v.div_ceil(d).to_string()
        }
        "memory" | "ephemeral-storage" => {
            let v = match given {
                Some(q) => crate::quantity::units(&q).ok_or_else(bad)?,
                None if kind == "limits" && which == "memory" => facts.vm_memory_bytes,
                None => 0,
            };
            let d = crate::quantity::units(divisor)
                .filter(|d| *d > 0)
                .ok_or_else(bad)?;
            v.div_ceil(d).to_string()
        }
        _ => return Err(EnvError(format!("unsupported resource {:?}", r.resource))),
    })
}

/// The container's environment, `KEY=VALUE` in order (later entries win).
pub(crate) fn resolve(
    pod: &Pod,
    c: &Container,
    facts: &PodFacts,
    fetched: &Fetched,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !order.contains(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    // First, so that envFrom and env may override them (kubelet's order).
    if let Some((ip, port)) = &facts.kubernetes {
        let url = format!("tcp://{ip}:{port}");
        let tcp = format!("KUBERNETES_PORT_{port}_TCP");
        for (k, v) in [
            ("KUBERNETES_SERVICE_HOST".to_string(), ip.clone()),
            ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                port.to_string(),
            ),
            ("KUBERNETES_PORT".to_string(), url.clone()),
            (format!("{tcp}_PROTO"), "tcp".to_string()),
            (format!("{tcp}_PORT"), port.to_string()),
            (format!("{tcp}_ADDR"), ip.clone()),
            (tcp, url),
        ] {
            set(&mut vars, k, v);
        }
    }
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (data, name, optional, kind) = if let Some(cm) = &f.config_map_ref {
            (
                fetched.config_maps.get(&cm.name).cloned().flatten(),
                cm.name.clone(),
                cm.optional.unwrap_or(false),
                "configmap",
            )
        } else if let Some(s) = &f.secret_ref {
            (
                fetched.secrets.get(&s.name).cloned().flatten(),
                s.name.clone(),
                s.optional.unwrap_or(false),
                "secret",
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(&mut vars, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(EnvError(format!("{kind} {name:?} not found"))),
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => expand(e.value.as_deref().unwrap_or(""), &vars),
            Some(vf) => {
                if let Some(f) = &vf.field_ref {
                    field_ref(pod, facts, &f.field_path)?
                } else if let Some(r) = &vf.resource_field_ref {
                    resource_ref(pod, c, facts, r)?
                } else if let Some(k) = &vf.config_map_key_ref {
                    let optional = k.optional.unwrap_or(false);
                    match fetched.config_maps.get(&k.name).cloned().flatten() {
                        Some(d) => match d.get(&k.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError(format!(
                                    "couldn't find key {} in ConfigMap {}",
                                    k.key, k.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError(format!("configmap {:?} not found", k.name))),
                    }
                } else if let Some(k) = &vf.secret_key_ref {
                    let optional = k.optional.unwrap_or(false);
                    match fetched.secrets.get(&k.name).cloned().flatten() {
                        Some(d) => match d.get(&k.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError(format!(
                                    "couldn't find key {} in Secret {}",
                                    k.key, k.name
                                )))
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError(format!("secret {:?} not found", k.name))),
                    }
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| (k, v.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }
    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    #[test]
    fn expansion_like_kubernetes() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }

    #[test]
    fn resolves_every_source() {
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                prefix: Some("CM_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                var("PLAIN", "v"),
                var("EXPANDED", "$(PLAIN)-$(CM_k)"),
                from(
                    "NAME",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "LABEL",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "MEM",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.memory".into(),
                            divisor: Some(Quantity("1Mi".into())),
                            container_name: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "CPU",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "requests.cpu".into(),
                            divisor: Some(Quantity("1m".into())),
                            container_name: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "KEY",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "PW",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
            ]),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".to_string(),
                    Quantity("64Mi".into()),
                )])),
                requests: Some(BTreeMap::from([(
                    "cpu".to_string(),
                    Quantity("250m".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c.clone()],
                ..Default::default()
            }),
            status: None,
        };
        let facts = PodFacts {
            pod_ip: Some("10.88.0.2".into()),
            kubernetes: Some(("10.96.0.1".into(), 443)),
            ..Default::default()
        };
        let mut fetched = Fetched::default();
        fetched.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("k".to_string(), "cmv".to_string())])),
        );
        fetched.secrets.insert(
            "s".into(),
            Some(BTreeMap::from([(
                "password".to_string(),
                "hunter2".to_string(),
            )])),
        );
        let env: BTreeMap<_, _> = resolve(&pod, &c, &facts, &fetched)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CM_k"], "cmv");
        assert_eq!(env["EXPANDED"], "v-cmv");
        assert_eq!(env["NAME"], "p");
        assert_eq!(env["LABEL"], "web");
        assert_eq!(env["IP"], "10.88.0.2");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["CPU"], "250");
        assert_eq!(env["KEY"], "cmv");
        assert_eq!(env["PW"], "hunter2");
        // The kubernetes Service, as kubelet sets it for client-go's in-cluster config.
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP"], "tcp://10.96.0.1:443");
        assert_eq!(
            references(&c),
            References {
                config_maps: vec!["cm".into()],
                secrets: vec!["s".into()]
            }
        );
        // A missing, non-optional ConfigMap is the container's config error.
        fetched.config_maps.insert("cm".into(), None);
        let e = resolve(&pod, &c, &facts, &fetched).unwrap_err();
        assert_eq!(e.0, "configmap \"cm\" not found");
    }
}
