//! Defaulting as kube-apiserver does it for the served kinds, on the JSON
//! form: [`apply`] fills defaults on every write (create, update, patch),
//! [`prepare_for_create`] resets what a create may not set (status) and
//! derives what Kubernetes derives then (pod QoS class, job selectors,
//! the namespace name label).

use crate::resources::Resource;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Fills the defaults of `r`'s kind into `obj`. Idempotent; values already
/// present are kept.
pub fn apply(r: &Resource, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (r.group, r.kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                // A pod's, not a template's (Kubernetes' SetDefaults_Pod).
                if spec.is_object() {
                    set(spec, "enableServiceLinks", json!(true));
                }
                requests_from_limits(spec);
            }
        }
        ("", "LimitRange") => limit_range(obj),
        ("", "Namespace") => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !name.is_empty() {
                // Since Kubernetes 1.21 every namespace carries its name as
                // a label, so selectors can pick namespaces by name.
                let labels = entry(entry(obj, "metadata"), "labels");
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
            if obj.pointer("/spec/finalizers").is_none() {
                entry(obj, "spec")["finalizers"] = json!(["kubernetes"]);
            }
        }
        ("", "Service") => service(obj),
        ("tenancy.h8s.io", kind @ ("Tenant" | "User")) => crate::tenancy::default(kind, obj),
        ("", "Secret") => secret(obj),
        ("", "Endpoints") => {
            if let Some(Value::Array(subsets)) = obj.get_mut("subsets") {
                for s in subsets {
                    ports_protocol(s.get_mut("ports"));
                }
            }
        }
        ("", "PersistentVolume") => {
            let spec = entry(obj, "spec");
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "PersistentVolumeClaim") => {
            set(entry(obj, "spec"), "volumeMode", json!("Filesystem"));
        }
        ("", "ReplicationController") => {
            let spec = entry(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "minReadySeconds", json!(0));
            let tl = spec.pointer("/template/metadata/labels").cloned();
            if let Some(tl) = tl.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
                if spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty)
                {
                    spec["selector"] = tl.clone();
                }
                let meta = entry(obj, "metadata");
                if meta
                    .get("labels")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty)
                {
                    meta["labels"] = tl;
                }
            }
            template(obj);
        }
        ("apps", "Deployment") => {
            let spec = entry(obj, "spec");
            set(spec, "replicas", json!(1));
            let strategy = entry(spec, "strategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = entry(strategy, "rollingUpdate");
                set(ru, "maxUnavailable", json!("25%"));
                set(ru, "maxSurge", json!("25%"));
            }
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            template(obj);
        }
        ("apps", "ReplicaSet") => {
            set(entry(obj, "spec"), "replicas", json!(1));
            template(obj);
        }
        ("apps", "StatefulSet") => {
            let spec = entry(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            let us = entry(spec, "updateStrategy");
            set(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                set(entry(us, "rollingUpdate"), "partition", json!(0));
            }
            let rp = entry(spec, "persistentVolumeClaimRetentionPolicy");
            set(rp, "whenDeleted", json!("Retain"));
            set(rp, "whenScaled", json!("Retain"));
            template(obj);
        }
        ("apps", "DaemonSet") => {
            let spec = entry(obj, "spec");
            set(spec, "revisionHistoryLimit", json!(10));
            let us = entry(spec, "updateStrategy");
            set(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                let ru = entry(us, "rollingUpdate");
                set(ru, "maxUnavailable", json!(1));
                set(ru, "maxSurge", json!(0));
            }
            template(obj);
        }
        ("batch", "Job") => {
            job_spec(entry(obj, "spec"));
            template(obj);
        }
        ("batch", "CronJob") => {
            let spec = entry(obj, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(ps) = spec.pointer_mut("/jobTemplate/spec/template/spec") {
                pod_spec(ps);
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            set(
                entry(obj, "roleRef"),
                "apiGroup",
                json!("rbac.authorization.k8s.io"),
            );
            if let Some(Value::Array(subjects)) = obj.get_mut("subjects") {
                for s in subjects.iter_mut().filter(|s| s.is_object()) {
                    let g = match s.get("kind").and_then(Value::as_str) {
                        Some("ServiceAccount") => "",
                        Some("User" | "Group") => "rbac.authorization.k8s.io",
                        _ => continue,
                    };
                    set(s, "apiGroup", json!(g));
                }
            }
        }
        ("admissionregistration.k8s.io", kind) => admission(kind, obj),
        ("apiregistration.k8s.io", "APIService") => {
            if let Some(svc) = obj.pointer_mut("/spec/service") {
                if svc.is_object() {
                    set(svc, "port", json!(443));
                }
            }
        }
        ("", "PodTemplate") => {
            if let Some(ps) = obj.pointer_mut("/template/spec") {
                pod_spec(ps);
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => match r.version {
            "v1" => crate::autoscaling::default_v1(obj),
            _ => crate::autoscaling::default_v2(obj),
        },
        ("storage.k8s.io", "CSIDriver") => {
            let spec = entry(obj, "spec");
            set(spec, "attachRequired", json!(true));
            set(spec, "podInfoOnMount", json!(false));
            set(spec, "storageCapacity", json!(false));
            set(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            set(spec, "volumeLifecycleModes", json!(["Persistent"]));
            set(spec, "requiresRepublish", json!(false));
            set(spec, "seLinuxMount", json!(false));
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            let spec = entry(obj, "spec");
            if spec
                .get("matchingPrecedence")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
            {
                spec["matchingPrecedence"] = json!(1000);
            }
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            let spec = entry(obj, "spec");
            if let Some(l) = spec.get_mut("limited").filter(|l| l.is_object()) {
                set(l, "nominalConcurrencyShares", json!(30));
                set(l, "lendablePercent", json!(0));
                if let Some(lr) = l
                    .get_mut("limitResponse")
                    .filter(|lr| lr["type"] == "Queuing")
                {
                    let q = entry(lr, "queuing");
                    set(q, "queues", json!(64));
                    set(q, "handSize", json!(8));
                    set(q, "queueLengthLimit", json!(50));
                }
            }
            if let Some(e) = spec.get_mut("exempt").filter(|e| e.is_object()) {
                set(e, "nominalConcurrencyShares", json!(0));
                set(e, "lendablePercent", json!(0));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            if let Some(Value::Array(ports)) = obj.get_mut("ports") {
                for p in ports.iter_mut().filter(|p| p.is_object()) {
                    set(p, "name", json!(""));
                    set(p, "protocol", json!("TCP"));
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            set(obj, "reclaimPolicy", json!("Delete"));
            set(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let spec = entry(obj, "spec");
            set(spec, "podSelector", json!({}));
            if spec.get("policyTypes").is_none_or(Value::is_null) {
                let mut types = vec![json!("Ingress")];
                if spec
                    .get("egress")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    types.push(json!("Egress"));
                }
                spec["policyTypes"] = Value::Array(types);
            }
            for dir in ["ingress", "egress"] {
                if let Some(Value::Array(rules)) = spec.get_mut(dir) {
                    for rule in rules {
                        ports_protocol(rule.get_mut("ports"));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Resets and derives what Kubernetes sets on create: status starts empty
/// (pods `Pending` with their QoS class, namespaces `Active`, Networks and
/// volumes `Pending`), and a Job gets its controller-uid selector and labels
/// (run after the server assigned `metadata.uid`). Call after [`apply`].
pub fn prepare_for_create(r: &Resource, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if r.has_status {
        map.remove("status");
    }
    match (r.group, r.kind) {
        ("", "Pod") => {
            let qos = pod_qos(obj.get("spec").unwrap_or(&Value::Null));
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Namespace") | ("tenancy.h8s.io", "Tenant") => {
            obj["status"] = json!({"phase": "Active"})
        }
        ("", "Network" | "PersistentVolume" | "PersistentVolumeClaim") => {
            obj["status"] = json!({"phase": "Pending"})
        }
        ("batch", "Job") => job_selector(obj),
        _ => {}
    }
}

/// The QoS class of a pod spec: `Guaranteed` when every container sets
/// equal cpu and memory requests and limits, `BestEffort` when none sets
/// any, `Burstable` otherwise.
pub fn pod_qos(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let res =
        |c: &Value, kind: &str, r: &str| c.pointer(&format!("/resources/{kind}/{r}")).cloned();
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c.pointer(&format!("/resources/{k}"))
                .and_then(Value::as_object)
                .is_some_and(|m| m.keys().any(|r| r == "cpu" || r == "memory"))
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = res(c, "limits", r);
            // A request left out defaults to the limit.
            limit.is_some() && res(c, "requests", r).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = json!({});
    }
    let m = v.as_object_mut().expect("made an object above");
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e
}

/// A container's limits stand in for the requests it leaves out (Kubernetes'
/// SetDefaults_Pod, for pods only, not templates).
fn requests_from_limits(spec: &mut Value) {
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(cs)) = spec.get_mut(list) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(Value::Object(limits)) = c.pointer("/resources/limits").cloned() else {
                continue;
            };
            if limits.is_empty() {
                continue;
            }
            let Some(res) = c.get_mut("resources").filter(|r| r.is_object()) else {
                continue;
            };
            let requests = entry(res, "requests");
            for (k, v) in limits {
                set(requests, &k, v);
            }
        }
    }
}

/// A LimitRange's Container items: `default` from `max`, `defaultRequest` from `default`
/// then from `min` (Kubernetes' SetDefaults_LimitRangeItem).
fn limit_range(obj: &mut Value) {
    let Some(Value::Array(items)) = obj.pointer_mut("/spec/limits") else {
        return;
    };
    for item in items.iter_mut() {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let from = |item: &Value, f: &str| item.get(f).and_then(Value::as_object).cloned();
        for (src, dst) in [
            ("max", "default"),
            ("default", "defaultRequest"),
            ("min", "defaultRequest"),
        ] {
            let Some(src) = from(item, src) else {
                continue;
            };
            let d = entry(item, dst);
            for (k, v) in src {
                set(d, &k, v);
            }
        }
    }
}

/// Sets `key` when it is missing or null.
fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        let e = m.entry(key.to_string()).or_insert(Value::Null);
        if e.is_null() {
            *e = value;
        }
    }
}

fn ports_protocol(ports: Option<&mut Value>) {
    if let Some(Value::Array(ports)) = ports {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            set(p, "protocol", json!("TCP"));
        }
    }
}

fn template(obj: &mut Value) {
    if let Some(ps) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(ps);
    }
}

/// The defaults of a PodSpec (pods and every pod template).
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    // The deprecated field mirrored from the current one, as the v1 conversion does.
    // (A pod's service account, priority and preemption policy are admission's: the
    // ServiceAccount and Priority plugins set them on create; templates keep none.)
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string);
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
        spec["serviceAccount"] = json!(sa);
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter(|c| c.is_object()) {
                container(c, host_network);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut() {
            volume(v);
        }
    }
}

fn container(c: &mut Value, host_network: bool) {
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    set(c, "imagePullPolicy", json!(image_pull_policy(image)));
    set(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            set(p, "protocol", json!("TCP"));
            if host_network {
                let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
                set(p, "hostPort", cp);
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
                set(fr, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").filter(|h| h.is_object()) {
                set(h, "scheme", json!("HTTP"));
                set(h, "path", json!("/"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise
/// (digests count as tagged).
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a registry port is
    // before a '/').
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn volume(v: &mut Value) {
    for (src, mode) in [
        ("secret", true),
        ("configMap", true),
        ("downwardAPI", true),
        ("projected", true),
        ("emptyDir", false),
        ("hostPath", false),
    ] {
        if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
            if mode {
                set(s, "defaultMode", json!(420));
            }
            if src == "hostPath" {
                set(s, "type", json!(""));
            }
        }
    }
}

fn service(obj: &mut Value) {
    let spec = entry(obj, "spec");
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || crate::network::load_balancer_type(Some(&ty)) {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            set(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            set(p, "targetPort", port);
        }
    }
}

/// `stringData` is write-only: it is merged into `data` (base64) on write.
fn secret(obj: &mut Value) {
    set(obj, "type", json!("Opaque"));
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let data = entry(obj, "data");
    for (k, v) in sd {
        if let Some(s) = v.as_str() {
            data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

fn job_spec(spec: &mut Value) {
    let has_p = spec.get("parallelism").is_some_and(|v| !v.is_null());
    let has_c = spec.get("completions").is_some_and(|v| !v.is_null());
    if !has_p && !has_c {
        spec["parallelism"] = json!(1);
        spec["completions"] = json!(1);
    } else {
        set(spec, "parallelism", json!(1));
    }
    // kube: MaxInt32 when failures are limited per index instead.
    if spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null())
    {
        set(spec, "backoffLimit", json!(i32::MAX));
    } else {
        set(spec, "backoffLimit", json!(6));
    }
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    } else {
        set(spec, "podReplacementPolicy", json!("Failed"));
    }
}

/// A Job without `manualSelector: true` selects its pods by its uid: the
/// selector and the template labels are generated from it.
fn job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if uid.is_empty() {
        return;
    }
    let spec = entry(obj, "spec");
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let labels = entry(entry(entry(spec, "template"), "metadata"), "labels");
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("job-name", &name),
    ] {
        labels[k] = json!(v);
    }
}

/// `admissionregistration.k8s.io/v1` defaults (kube's `SetDefaults_ValidatingWebhook`,
/// `SetDefaults_MutatingWebhook`, `SetDefaults_Rule`, `SetDefaults_ServiceReference`,
/// `SetDefaults_ValidatingAdmissionPolicySpec`, `SetDefaults_MatchResources`,
/// `SetDefaults_ParamRef`).
fn admission(kind: &str, obj: &mut Value) {
    fn rules(list: Option<&mut Value>) {
        if let Some(Value::Array(rules)) = list {
            for r in rules.iter_mut().filter(|r| r.is_object()) {
                set(r, "scope", json!("*"));
            }
        }
    }
    fn match_resources(m: &mut Value) {
        if !m.is_object() {
            return;
        }
        set(m, "matchPolicy", json!("Equivalent"));
        set(m, "namespaceSelector", json!({}));
        set(m, "objectSelector", json!({}));
        rules(m.get_mut("resourceRules"));
        rules(m.get_mut("excludeResourceRules"));
    }
    match kind {
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            let mutating = kind.starts_with("Mutating");
            if let Some(Value::Array(hooks)) = obj.get_mut("webhooks") {
                for w in hooks.iter_mut().filter(|w| w.is_object()) {
                    set(w, "failurePolicy", json!("Fail"));
                    set(w, "matchPolicy", json!("Equivalent"));
                    set(w, "namespaceSelector", json!({}));
                    set(w, "objectSelector", json!({}));
                    set(w, "timeoutSeconds", json!(10));
                    if mutating {
                        set(w, "reinvocationPolicy", json!("Never"));
                    }
                    rules(w.get_mut("rules"));
                    if let Some(svc) = w.pointer_mut("/clientConfig/service") {
                        if svc.is_object() {
                            set(svc, "port", json!(443));
                        }
                    }
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            let spec = entry(obj, "spec");
            set(spec, "failurePolicy", json!("Fail"));
            if let Some(m) = spec.get_mut("matchConstraints") {
                match_resources(m);
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            let spec = entry(obj, "spec");
            if let Some(m) = spec.get_mut("matchResources") {
                match_resources(m);
            }
            if let Some(p) = spec.get_mut("paramRef") {
                if p.is_object() {
                    set(p, "parameterNotFoundAction", json!("Deny"));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use crate::validation::validate_create;

    #[test]
    fn pod_defaults() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]},
                                    {"name": "d", "image": "reg:5000/x/y:1.2"}]}});
        apply(pods, &mut p);
        prepare_for_create(pods, &mut p);
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        // The ServiceAccount admission plugin's, not a default.
        assert!(s.get("serviceAccountName").is_none());
        let c = &s["containers"][0];
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        let again = p.clone();
        apply(pods, &mut p);
        assert_eq!(p, again, "defaulting is idempotent");
        assert_eq!(validate_create(pods, &p), Ok(()));
    }

    #[test]
    fn image_pull_policies() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn qos() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(pod_qos(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(pod_qos(&b), "Burstable");
    }

    #[test]
    fn deployment_service_namespace_network() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "d", "namespace": "n"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        apply(d, &mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(
            obj["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(obj["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(obj["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(obj["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(validate_create(d, &obj), Ok(()));

        let s = find("", "v1", "services").unwrap();
        let mut svc =
            json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"ports": [{"port": 80}]}});
        apply(s, &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );

        let ns = find("", "v1", "namespaces").unwrap();
        let mut n = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}, "spec": {"network": "net1"}});
        apply(ns, &mut n);
        prepare_for_create(ns, &mut n);
        assert_eq!(
            n["spec"],
            json!({"network": "net1", "finalizers": ["kubernetes"]})
        );
        assert_eq!(n["status"]["phase"], "Active");
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "ns1"
        );

        let nets = find("", "v1", "networks").unwrap();
        let mut net = json!({"metadata": {"name": "n"}, "status": {"phase": "Active"}});
        prepare_for_create(nets, &mut net);
        assert_eq!(net["status"]["phase"], "Pending");
    }

    #[test]
    fn job_cronjob_secret() {
        let j = find("batch", "v1", "jobs").unwrap();
        let mut job = json!({"metadata": {"name": "pi", "namespace": "n", "uid": "u-1"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}});
        apply(j, &mut job);
        prepare_for_create(j, &mut job);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        // Per-index limits leave the Job's own limit at MaxInt32; a podFailurePolicy makes
        // only failed pods be replaced.
        let mut per_index = json!({"spec": {"completionMode": "Indexed", "completions": 2,
            "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": []}}});
        apply(j, &mut per_index);
        assert_eq!(per_index["spec"]["backoffLimit"], i32::MAX);
        assert_eq!(per_index["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(validate_create(j, &job), Ok(()));
        let cj = find("batch", "v1", "cronjobs").unwrap();
        let mut c = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        apply(cj, &mut c);
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(
            c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        let s = find("", "v1", "secrets").unwrap();
        let mut sec = json!({"stringData": {"a": "hello"}, "data": {"b": "eA=="}});
        apply(s, &mut sec);
        assert_eq!(
            sec,
            json!({"type": "Opaque", "data": {"a": "aGVsbG8=", "b": "eA=="}})
        );
    }

    #[test]
    fn requests_from_limits_and_limit_range_items() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]}});
        apply(pods, &mut p);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        let lr = find("", "v1", "limitranges").unwrap();
        let mut l = json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"memory": "256Mi"}},
            {"type": "Pod", "max": {"cpu": "4"}}]}});
        apply(lr, &mut l);
        assert_eq!(
            l["spec"]["limits"][0]["default"],
            json!({"cpu": "2", "memory": "256Mi"})
        );
        assert_eq!(
            l["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "256Mi"})
        );
        assert!(l["spec"]["limits"][1].get("default").is_none());
    }
}
