//! The pod plugins of Kubernetes' default chain: ServiceAccount, Priority,
//! DefaultTolerationSeconds and RuntimeClass, with kube-apiserver's behaviour and
//! wording.

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::lookup::Lookup;
use super::{Admission, Operation, Request};
use crate::error::{ApiError, Subject};
use crate::obj;

/// Where the ServiceAccount plugin mounts the API credentials in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected token volume's name (`kube-api-access-xxxxx`).
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime the token volume asks for (kube-apiserver's warn-only bound token
/// expiration: 1 h + 7 s).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// Whether a request is a write of a pod itself (not a subresource).
fn is_pod(req: &Request<'_>) -> bool {
    req.res.group.is_empty() && req.res.plural == "pods" && req.sub.is_none()
}

fn forbidden(req: &Request<'_>, why: &str) -> ApiError {
    ApiError::forbidden_about(
        &Subject {
            group: req.res.group,
            resource: req.res.plural,
            name: req.name,
        },
        why,
    )
}

fn spec_mut(o: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !o.get("spec").is_some_and(Value::is_object) {
        o["spec"] = json!({});
    }
    o["spec"].as_object_mut().expect("spec is an object")
}

// ---------- ServiceAccount ----------

/// Kubernetes' ServiceAccount plugin: a pod runs as `spec.serviceAccountName`
/// (`default` when unset), which must exist; unless the pod or the account opts out,
/// every container mounts a projected `kube-api-access-xxxxx` volume (a bound token,
/// the cluster CA from `kube-root-ca.crt`, the namespace) at
/// `/var/run/secrets/kubernetes.io/serviceaccount`; the account's image pull secrets
/// are the pod's when it names none.
pub struct ServiceAccount {
    lookup: Lookup,
    /// Refuse pods whose account does not exist (Kubernetes does).
    pub must_exist: bool,
    /// Extra reads of a missing `default` account before refusing (its controller may
    /// be about to create it), and the pause between them.
    pub default_retries: u32,
    pub retry_pause: Duration,
}

impl ServiceAccount {
    pub(crate) fn new(lookup: Lookup, must_exist: bool) -> Self {
        ServiceAccount {
            lookup,
            must_exist,
            default_retries: 10,
            retry_pause: Duration::from_millis(150),
        }
    }

    async fn account(&self, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let attempts = if name == "default" {
            self.default_retries.max(1)
        } else {
            1
        };
        for i in 0..attempts {
            if i > 0 {
                tokio::time::sleep(self.retry_pause).await;
            }
            if let Some(sa) = self
                .lookup
                .get("", "serviceaccounts", Some(ns), name)
                .await?
            {
                return Ok(Some(sa));
            }
        }
        Ok(None)
    }
}

/// Whether the token is mounted: the pod's choice, else the account's, else yes.
fn automount(sa: Option<&Value>, pod: &Value) -> bool {
    if let Some(b) = obj::at(pod, "spec.automountServiceAccountToken").and_then(Value::as_bool) {
        return b;
    }
    sa.and_then(|s| s.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// The projected volume Kubernetes gives every pod for its API credentials.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Mounts the token volume in every container and init container that has nothing at
/// the mount path, adding the volume when one of them needs it (kube-apiserver's
/// `mountServiceAccountToken`).
pub fn mount_token(pod: &mut Value, suffix: &str) {
    let spec = spec_mut(pod);
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
                .map(str::to_string)
        });
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| c.is_object()) {
            let has = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if has {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(ms) = c["volumeMounts"].as_array_mut() {
                ms.push(mount.clone());
            }
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if !vols.is_array() {
            *vols = json!([]);
        }
        if let Some(vs) = vols.as_array_mut() {
            vs.push(token_volume(&name));
        }
    }
}

impl Admission for ServiceAccount {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(pod) = obj else { return Ok(()) };
            if !is_pod(req) || req.op != Operation::Create {
                return Ok(());
            }
            // Mirror pods (static pods of a node) are left as they are.
            if obj::meta(pod)
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("kubernetes.io/config.mirror"))
                .is_some()
            {
                return Ok(());
            }
            let name = obj::at(pod, "spec.serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string();
            let spec = spec_mut(pod);
            spec.insert("serviceAccountName".into(), json!(name));
            spec.insert("serviceAccount".into(), json!(name));
            let sa = self.account(req.namespace, &name).await?;
            if sa.is_none() && self.must_exist {
                return Err(forbidden(
                    req,
                    &format!(
                        "error looking up service account {}/{name}: serviceaccount \"{name}\" not found",
                        req.namespace
                    ),
                ));
            }
            if automount(sa.as_ref(), pod) {
                mount_token(pod, &crate::util::name_suffix());
            }
            let pull = obj::at(pod, "spec.imagePullSecrets")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !pull {
                let from_sa: Vec<Value> = sa
                    .as_ref()
                    .and_then(|s| s.get("imagePullSecrets"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("name").and_then(Value::as_str))
                    .map(|n| json!({"name": n}))
                    .collect();
                if !from_sa.is_empty() {
                    spec_mut(pod).insert("imagePullSecrets".into(), json!(from_sa));
                }
            }
            Ok(())
        })
    }
}

// ---------- Priority ----------

/// Kubernetes' Priority plugin: a pod's `spec.priority` (and preemption policy) come
/// from its `priorityClassName`, else from the `globalDefault` class, else 0; a pod may
/// not name a missing class nor set a different priority itself; only one class may be
/// the global default.
pub struct Priority {
    lookup: Lookup,
}

impl Priority {
    pub(crate) fn new(lookup: Lookup) -> Self {
        Priority { lookup }
    }

    /// The global default class, if any (the newest wins when several slipped in).
    async fn default_class(&self) -> Result<Option<Value>, ApiError> {
        let all = self
            .lookup
            .list("scheduling.k8s.io", "priorityclasses", None)
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .max_by(|a, b| {
                obj::meta_str(a, "creationTimestamp").cmp(obj::meta_str(b, "creationTimestamp"))
            }))
    }

    async fn admit_pod(&self, req: &Request<'_>, pod: &mut Value) -> Result<(), ApiError> {
        if req.op == Operation::Update {
            // Priority was set at create; an update that leaves it out keeps it.
            if let Some(old) = req.old {
                for f in ["priority", "preemptionPolicy"] {
                    let path = format!("spec.{f}");
                    if obj::at(pod, &path).is_none() {
                        if let Some(v) = obj::at(old, &path).cloned() {
                            spec_mut(pod).insert(f.into(), v);
                        }
                    }
                }
            }
            return Ok(());
        }
        let class_name = obj::at(pod, "spec.priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (name, value, policy) = if class_name.is_empty() {
            match self.default_class().await? {
                Some(c) => (
                    obj::name(&c).to_string(),
                    c.get("value").and_then(Value::as_i64).unwrap_or(0),
                    c.get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                ),
                None => (String::new(), 0, Some("PreemptLowerPriority".to_string())),
            }
        } else {
            match self
                .lookup
                .get("scheduling.k8s.io", "priorityclasses", None, &class_name)
                .await?
            {
                Some(c) => (
                    class_name.clone(),
                    c.get("value").and_then(Value::as_i64).unwrap_or(0),
                    c.get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                ),
                None => {
                    return Err(forbidden(
                        req,
                        &format!("no PriorityClass with name {class_name} was found"),
                    ))
                }
            }
        };
        if let Some(given) = obj::at(pod, "spec.priority").and_then(Value::as_i64) {
            if given != value {
                return Err(forbidden(
                    req,
                    &format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"),
                ));
            }
        }
        let spec = spec_mut(pod);
        if !name.is_empty() {
            spec.insert("priorityClassName".into(), json!(name));
        }
        spec.insert("priority".into(), json!(value));
        if let Some(policy) = policy {
            if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
                if given != policy {
                    return Err(forbidden(
                        req,
                        &format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
                    ));
                }
            }
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
        Ok(())
    }

    async fn admit_class(&self, req: &Request<'_>, pc: &Value) -> Result<(), ApiError> {
        if pc.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        if let Some(d) = self.default_class().await? {
            if req.op == Operation::Create || obj::name(&d) != obj::name(pc) {
                return Err(forbidden(
                    req,
                    &format!(
                        "PriorityClass {} is already marked as default. Only one default can exist",
                        obj::name(&d)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Admission for Priority {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(o) = obj else { return Ok(()) };
            if is_pod(req) {
                return self.admit_pod(req, o).await;
            }
            if req.res.group == "scheduling.k8s.io"
                && req.res.plural == "priorityclasses"
                && req.sub.is_none()
                && req.op != Operation::Delete
            {
                return self.admit_class(req, o).await;
            }
            Ok(())
        })
    }
}

// ---------- DefaultTolerationSeconds ----------

/// Kubernetes' DefaultTolerationSeconds plugin: pods that do not tolerate
/// `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` NoExecute taints
/// tolerate them for a while (300 s by default), so a short node outage does not evict
/// them at once.
pub struct DefaultTolerationSeconds {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

/// Whether a toleration covers a NoExecute taint of `key`.
fn tolerates(t: &Value, key: &str) -> bool {
    let k = t.get("key").and_then(Value::as_str).unwrap_or("");
    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
    (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
}

/// Adds the default NoExecute tolerations `pod` lacks.
pub fn add_default_tolerations(pod: &mut Value, not_ready: i64, unreachable: i64) {
    let spec = spec_mut(pod);
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let Some(ts) = list.as_array_mut() else {
        return;
    };
    for (key, secs) in [
        ("node.kubernetes.io/not-ready", not_ready),
        ("node.kubernetes.io/unreachable", unreachable),
    ] {
        if !ts.iter().any(|t| tolerates(t, key)) {
            ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
}

impl Admission for DefaultTolerationSeconds {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if let Some(pod) = obj {
                if is_pod(req) && req.op != Operation::Delete {
                    add_default_tolerations(pod, self.not_ready_seconds, self.unreachable_seconds);
                }
            }
            Ok(())
        })
    }
}

// ---------- RuntimeClass ----------

/// Kubernetes' RuntimeClass plugin: a pod naming a `runtimeClassName` gets the class's
/// `overhead.podFixed` as `spec.overhead` (an h8s pod VM's own cost) and its scheduling
/// constraints merged into its nodeSelector and tolerations; a missing class, a
/// conflicting overhead or node selector refuses the pod.
pub struct RuntimeClass {
    lookup: Lookup,
}

impl RuntimeClass {
    pub(crate) fn new(lookup: Lookup) -> Self {
        RuntimeClass { lookup }
    }
}

/// Applies a RuntimeClass to a pod: overhead, node selector and tolerations. The error
/// is the reason for refusing (a 403).
pub fn apply_runtime_class(pod: &mut Value, class: Option<&Value>) -> Result<(), String> {
    let overhead = class.and_then(|c| obj::at(c, "overhead.podFixed")).cloned();
    let pod_overhead = obj::at(pod, "spec.overhead")
        .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    match (&overhead, &pod_overhead) {
        (Some(want), Some(have)) if !same_quantities(want, have) => {
            return Err(
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into(),
            )
        }
        (None, Some(_)) => return Err(
            "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"
                .into(),
        ),
        (Some(want), _) => {
            spec_mut(pod).insert("overhead".into(), want.clone());
        }
        (None, None) => {}
    }
    let Some(sched) = class.and_then(|c| c.get("scheduling")) else {
        return Ok(());
    };
    if let Some(sel) = sched.get("nodeSelector").and_then(Value::as_object) {
        let spec = spec_mut(pod);
        let ns = spec.entry("nodeSelector").or_insert_with(|| json!({}));
        if !ns.is_object() {
            *ns = json!({});
        }
        let m = ns.as_object_mut().expect("nodeSelector is an object");
        for (k, v) in sel {
            match m.get(k) {
                Some(have) if have != v => {
                    return Err(format!(
                        "conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                        v.as_str().unwrap_or_default(),
                        have.as_str().unwrap_or_default()
                    ))
                }
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(ts) = sched.get("tolerations").and_then(Value::as_array) {
        let spec = spec_mut(pod);
        let list = spec.entry("tolerations").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        if let Some(have) = list.as_array_mut() {
            for t in ts {
                if !have.contains(t) {
                    have.push(t.clone());
                }
            }
        }
    }
    Ok(())
}

/// Whether two resource lists hold the same quantities (`1000m` = `1`).
fn same_quantities(a: &Value, b: &Value) -> bool {
    use h8s_types::quantity::Quantity;
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let q = |v: &Value| match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    };
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| q(v).is_some() && q(v) == q(w)))
}

impl Admission for RuntimeClass {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(pod) = obj else { return Ok(()) };
            if !is_pod(req) || req.op != Operation::Create {
                return Ok(());
            }
            let name = obj::at(pod, "spec.runtimeClassName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let class = if name.is_empty() {
                None
            } else {
                match self
                    .lookup
                    .get("node.k8s.io", "runtimeclasses", None, &name)
                    .await?
                {
                    Some(c) => Some(c),
                    None => {
                        return Err(forbidden(
                            req,
                            &format!("pod rejected: RuntimeClass \"{name}\" not found"),
                        ))
                    }
                }
            };
            apply_runtime_class(pod, class.as_ref()).map_err(|why| forbidden(req, &why))
        })
    }
}
