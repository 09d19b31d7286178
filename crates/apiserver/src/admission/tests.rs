//! The plugins' rules as pure functions, then each plugin over a real embedded store.

use std::sync::Arc;

use serde_json::{json, Value};

use super::pod::{add_default_tolerations, apply_runtime_class, mount_token};
use super::storage::default_class as default_storage_class;
use super::*;
use crate::auth::UserInfo;

fn pod() -> Value {
    json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"initContainers": [{"name": "i", "image": "x"}],
                 "containers": [{"name": "c", "image": "x"},
                                {"name": "own", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}]}})
}

#[test]
fn token_volume_is_mounted_where_nothing_is() {
    let mut p = pod();
    mount_token(&mut p, "abcde");
    let vols = p["spec"]["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0]["name"], "kube-api-access-abcde");
    let sources = vols[0]["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(vols[0]["projected"]["defaultMode"], 420);
    let want =
        json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    assert_eq!(p["spec"]["containers"][0]["volumeMounts"][0], want);
    assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"][0], want);
    // A container with its own mount at the path keeps it.
    assert_eq!(
        p["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Idempotent: the existing volume is reused.
    let before = p.clone();
    mount_token(&mut p, "zzzzz");
    assert_eq!(p, before);
}

#[test]
fn default_tolerations() {
    let mut p = pod();
    add_default_tolerations(&mut p, 300, 200);
    let ts = p["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(
        ts[0],
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    );
    assert_eq!(ts[1]["key"], "node.kubernetes.io/unreachable");
    assert_eq!(ts[1]["tolerationSeconds"], 200);
    // Already tolerated (by key, or by a wildcard toleration): nothing added.
    let mut q = pod();
    q["spec"]["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
    ]);
    add_default_tolerations(&mut q, 300, 300);
    assert_eq!(q["spec"]["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(q["spec"]["tolerations"][0]["tolerationSeconds"], 10);
    let mut w = pod();
    w["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    add_default_tolerations(&mut w, 300, 300);
    assert_eq!(w["spec"]["tolerations"].as_array().unwrap().len(), 1);
}

#[test]
fn runtime_class_overhead_and_scheduling() {
    let class = json!({"metadata": {"name": "vm"}, "handler": "h8s",
        "overhead": {"podFixed": {"memory": "64Mi", "cpu": "100m"}},
        "scheduling": {"nodeSelector": {"h8s.io/vm": "true"},
                       "tolerations": [{"key": "vm", "operator": "Exists"}]}});
    let mut p = pod();
    apply_runtime_class(&mut p, Some(&class)).unwrap();
    assert_eq!(
        p["spec"]["overhead"],
        json!({"memory": "64Mi", "cpu": "100m"})
    );
    assert_eq!(p["spec"]["nodeSelector"]["h8s.io/vm"], "true");
    assert_eq!(p["spec"]["tolerations"][0]["key"], "vm");
    // The same overhead in other units is the same.
    let mut same = pod();
    same["spec"]["overhead"] = json!({"memory": "67108864", "cpu": "0.1"});
    apply_runtime_class(&mut same, Some(&class)).unwrap();
    let mut other = pod();
    other["spec"]["overhead"] = json!({"memory": "1Gi", "cpu": "100m"});
    assert_eq!(
        apply_runtime_class(&mut other, Some(&class)).unwrap_err(),
        "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
    );
    let mut conflict = pod();
    conflict["spec"]["nodeSelector"] = json!({"h8s.io/vm": "false"});
    assert!(apply_runtime_class(&mut conflict, Some(&class))
        .unwrap_err()
        .starts_with("conflict: runtimeClass.scheduling.nodeSelector[h8s.io/vm] = true"));
    let mut stray = pod();
    stray["spec"]["overhead"] = json!({"cpu": "1"});
    assert!(apply_runtime_class(&mut stray, None).is_err());
}

#[test]
fn default_storage_class_is_the_newest_marked() {
    let sc = |name: &str, t: &str, default: bool| {
        json!({"metadata": {"name": name, "creationTimestamp": t,
            "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}}})
    };
    let classes = vec![
        sc("old", "2026-01-01T00:00:00Z", true),
        sc("new", "2026-02-01T00:00:00Z", true),
        sc("plain", "2026-03-01T00:00:00Z", false),
    ];
    assert_eq!(
        crate::obj::name(default_storage_class(&classes).unwrap()),
        "new"
    );
    assert!(default_storage_class(&classes[2..]).is_none());
}

// ---------- the plugins against a store ----------

async fn store() -> (tempfile::TempDir, Arc<dyn h8s_store::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
    (dir, store)
}

async fn put(
    store: &Arc<dyn h8s_store::Store>,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    o: Value,
) {
    let v = h8s_types::resources::groups()
        .iter()
        .find(|g| g.name == group)
        .unwrap()
        .versions[0];
    let r = h8s_types::resources::find(group, v, plural).unwrap();
    let key = crate::obj::key(r, ns, crate::obj::name(&o));
    store.create(&key, crate::obj::encode(&o)).await.unwrap();
}

fn req<'a>(
    plural: &str,
    group: &str,
    op: Operation,
    user: &'a UserInfo,
    old: Option<&'a Value>,
) -> Request<'a> {
    let v = h8s_types::resources::groups()
        .iter()
        .find(|g| g.name == group)
        .unwrap()
        .versions[0];
    Request {
        op,
        res: h8s_types::resources::find(group, v, plural).unwrap(),
        sub: None,
        namespace: "d",
        name: "p",
        user,
        dry_run: false,
        old,
    }
}

#[tokio::test]
async fn service_account_plugin() {
    let (_dir, store) = store().await;
    let lookup = lookup::Lookup::new(store.clone());
    let mut plugin = ServiceAccount::new(lookup, true);
    plugin.default_retries = 2;
    plugin.retry_pause = std::time::Duration::from_millis(1);
    let user = UserInfo::default();
    let r = req("pods", "", Operation::Create, &user, None);
    let mut p = pod();
    let e = plugin.admit(&r, Some(&mut p)).await.unwrap_err();
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "pods \"p\" is forbidden: error looking up service account d/default: serviceaccount \"default\" not found"
    );
    put(&store, "", "serviceaccounts", Some("d"),
        json!({"metadata": {"name": "default", "namespace": "d"}, "imagePullSecrets": [{"name": "reg"}]})).await;
    put(&store, "", "serviceaccounts", Some("d"),
        json!({"metadata": {"name": "quiet", "namespace": "d"}, "automountServiceAccountToken": false})).await;
    let mut p = pod();
    plugin.admit(&r, Some(&mut p)).await.unwrap();
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["serviceAccount"], "default");
    assert!(p["spec"]["volumes"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("kube-api-access-"));
    assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
    let mut q = pod();
    q["spec"]["serviceAccountName"] = json!("quiet");
    plugin.admit(&r, Some(&mut q)).await.unwrap();
    assert!(q["spec"].get("volumes").is_none());
    // The pod's own choice wins over the account's.
    let mut o = pod();
    o["spec"]["serviceAccountName"] = json!("quiet");
    o["spec"]["automountServiceAccountToken"] = json!(true);
    plugin.admit(&r, Some(&mut o)).await.unwrap();
    assert!(o["spec"]["volumes"].is_array());
    let mut missing = pod();
    missing["spec"]["serviceAccountName"] = json!("nope");
    assert_eq!(
        plugin.admit(&r, Some(&mut missing)).await.unwrap_err().code,
        403
    );
    // Updates are not touched.
    let old = pod();
    let u = req("pods", "", Operation::Update, &user, Some(&old));
    let mut same = pod();
    plugin.admit(&u, Some(&mut same)).await.unwrap();
    assert_eq!(same, pod());
}

#[tokio::test]
async fn priority_plugin() {
    let (_dir, store) = store().await;
    let plugin = Priority::new(lookup::Lookup::new(store.clone()));
    let user = UserInfo::default();
    let create = req("pods", "", Operation::Create, &user, None);
    // No classes: priority 0, PreemptLowerPriority.
    let mut p = pod();
    plugin.admit(&create, Some(&mut p)).await.unwrap();
    assert_eq!(p["spec"]["priority"], 0);
    assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    assert!(p["spec"].get("priorityClassName").is_none());
    put(&store, "scheduling.k8s.io", "priorityclasses", None,
        json!({"metadata": {"name": "high", "creationTimestamp": "2026-01-01T00:00:00Z"}, "value": 1000, "preemptionPolicy": "Never"})).await;
    put(&store, "scheduling.k8s.io", "priorityclasses", None,
        json!({"metadata": {"name": "normal", "creationTimestamp": "2026-01-01T00:00:00Z"}, "value": 10, "globalDefault": true, "preemptionPolicy": "PreemptLowerPriority"})).await;
    let mut d = pod();
    plugin.admit(&create, Some(&mut d)).await.unwrap();
    assert_eq!(d["spec"]["priorityClassName"], "normal");
    assert_eq!(d["spec"]["priority"], 10);
    let mut h = pod();
    h["spec"]["priorityClassName"] = json!("high");
    plugin.admit(&create, Some(&mut h)).await.unwrap();
    assert_eq!(
        (
            h["spec"]["priority"].clone(),
            h["spec"]["preemptionPolicy"].clone()
        ),
        (json!(1000), json!("Never"))
    );
    let mut unknown = pod();
    unknown["spec"]["priorityClassName"] = json!("nope");
    let e = plugin.admit(&create, Some(&mut unknown)).await.unwrap_err();
    assert_eq!(e.code, 403);
    assert!(
        e.message
            .ends_with("no PriorityClass with name nope was found"),
        "{}",
        e.message
    );
    let mut forced = pod();
    forced["spec"]["priorityClassName"] = json!("high");
    forced["spec"]["priority"] = json!(5);
    assert!(plugin
        .admit(&create, Some(&mut forced))
        .await
        .unwrap_err()
        .message
        .contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000"));
    // A second global default is refused.
    let pc_create = Request {
        name: "other",
        ..req(
            "priorityclasses",
            "scheduling.k8s.io",
            Operation::Create,
            &user,
            None,
        )
    };
    let mut other = json!({"metadata": {"name": "other"}, "value": 5, "globalDefault": true});
    let e = plugin
        .admit(&pc_create, Some(&mut other))
        .await
        .unwrap_err();
    assert!(
        e.message.ends_with(
            "PriorityClass normal is already marked as default. Only one default can exist"
        ),
        "{}",
        e.message
    );
    // An update keeps the priority set at create.
    let old = h.clone();
    let upd = req("pods", "", Operation::Update, &user, Some(&old));
    let mut new = pod();
    new["spec"]["priorityClassName"] = json!("high");
    plugin.admit(&upd, Some(&mut new)).await.unwrap();
    assert_eq!(new["spec"]["priority"], 1000);
}

#[tokio::test]
async fn runtime_class_and_storage_class_plugins() {
    let (_dir, store) = store().await;
    let lookup = lookup::Lookup::new(store.clone());
    let rc = RuntimeClass::new(lookup.clone());
    let user = UserInfo::default();
    let create = req("pods", "", Operation::Create, &user, None);
    let mut p = pod();
    p["spec"]["runtimeClassName"] = json!("vm");
    let e = rc.admit(&create, Some(&mut p)).await.unwrap_err();
    assert_eq!(
        e.message,
        "pods \"p\" is forbidden: pod rejected: RuntimeClass \"vm\" not found"
    );
    put(&store, "node.k8s.io", "runtimeclasses", None,
        json!({"metadata": {"name": "vm"}, "handler": "h8s", "overhead": {"podFixed": {"memory": "64Mi"}}})).await;
    rc.admit(&create, Some(&mut p)).await.unwrap();
    assert_eq!(p["spec"]["overhead"]["memory"], "64Mi");

    let sc = DefaultStorageClass::new(lookup);
    let pvc_create = req("persistentvolumeclaims", "", Operation::Create, &user, None);
    let mut claim = json!({"metadata": {"name": "c"}, "spec": {}});
    sc.admit(&pvc_create, Some(&mut claim)).await.unwrap();
    assert!(claim["spec"].get("storageClassName").is_none());
    put(&store, "storage.k8s.io", "storageclasses", None,
        json!({"metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "x"})).await;
    sc.admit(&pvc_create, Some(&mut claim)).await.unwrap();
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    let mut none = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": ""}});
    sc.admit(&pvc_create, Some(&mut none)).await.unwrap();
    assert_eq!(none["spec"]["storageClassName"], "");
}

struct DenyAll;
impl QuotaHook for DenyAll {
    fn admit<'a>(
        &'a self,
        _req: &'a Request<'a>,
        _obj: Option<&'a Value>,
        quotas: &'a [Value],
    ) -> futures::future::BoxFuture<'a, Result<(), crate::ApiError>> {
        let n = quotas.len();
        Box::pin(async move { Err(crate::ApiError::forbidden(format!("exceeded quota: {n}"))) })
    }
}

#[tokio::test]
async fn quota_hook_sees_the_namespace_quotas() {
    let (_dir, store) = store().await;
    let lookup = lookup::Lookup::new(store.clone());
    let plugin = ResourceQuota::new(lookup.clone(), Some(Arc::new(DenyAll)));
    let user = UserInfo::default();
    let create = req("configmaps", "", Operation::Create, &user, None);
    let mut cm = json!({"metadata": {"name": "p"}});
    // No quota in the namespace: the hook is asked all the same (a tenant-wide quota may
    // apply), with none.
    assert_eq!(
        plugin
            .admit(&create, Some(&mut cm))
            .await
            .unwrap_err()
            .message,
        "exceeded quota: 0"
    );
    put(
        &store,
        "",
        "resourcequotas",
        Some("d"),
        json!({"metadata": {"name": "q", "namespace": "d"}}),
    )
    .await;
    assert_eq!(
        plugin
            .admit(&create, Some(&mut cm))
            .await
            .unwrap_err()
            .message,
        "exceeded quota: 1"
    );
    // Without a hook the plugin admits everything.
    let open = ResourceQuota::new(lookup, None);
    open.admit(&create, Some(&mut cm)).await.unwrap();
}

#[tokio::test]
async fn namespace_network_plugin() {
    let (_dir, store) = store().await;
    let plugin = NamespaceNetwork::new(lookup::Lookup::new(store.clone()));
    put(
        &store,
        "",
        "networks",
        None,
        json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": "acme-net"},
            "spec": {"tenantID": "acme", "subnets": {"s": {"cidr": "192.168.0.0/24"}}}}),
    )
    .await;
    put(
        &store,
        "",
        "networks",
        None,
        json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": "shared"},
            "spec": {"subnets": {"s": {"cidr": "10.0.0.0/24"}}}}),
    )
    .await;
    let user = UserInfo::default();
    let r = req("namespaces", "", Operation::Create, &user, None);
    let ns = |net: &str, tenant: Option<&str>| {
        let mut v = json!({"metadata": {"name": "p"}, "spec": {"network": net}});
        if let Some(t) = tenant {
            v["metadata"]["labels"] = json!({"tenancy.h8s.io/tenant": t});
        }
        v
    };
    let e = plugin
        .admit(&r, Some(&mut ns("nope", Some("acme"))))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Namespace \"p\" is invalid: spec.network: Invalid value: \"nope\": network \"nope\" not found"
    );
    plugin
        .admit(&r, Some(&mut ns("acme-net", Some("acme"))))
        .await
        .unwrap();
    // A Network of another tenant is refused, as if it did not exist.
    let e = plugin
        .admit(&r, Some(&mut ns("acme-net", Some("other"))))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.ends_with("network \"acme-net\" not found"),
        "{}",
        e.message
    );
    // A namespace of no tenant (a cluster admin's, as in the seeds' own manifests) may join a
    // tenant's Network: the operator's decision.
    plugin
        .admit(&r, Some(&mut ns("acme-net", None)))
        .await
        .unwrap();
    // The caller's tenant stands in when the label is not set yet.
    let acme = UserInfo {
        username: "u".into(),
        groups: vec!["h8s:tenant:acme".into()],
        ..Default::default()
    };
    let r2 = req("namespaces", "", Operation::Create, &acme, None);
    plugin
        .admit(&r2, Some(&mut ns("acme-net", None)))
        .await
        .unwrap();
    // The system Network: a cluster admin's namespace may join it, a tenant's never (by
    // label, or by the caller's tenant before the label is set).
    put(
        &store,
        "",
        "networks",
        None,
        json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": "system"},
            "spec": {"subnets": {"s": {"cidr": "10.87.0.0/16"}}}}),
    )
    .await;
    plugin
        .admit(&r, Some(&mut ns("system", None)))
        .await
        .unwrap();
    for (r, tenant) in [(&r, Some("acme")), (&r2, None)] {
        let e = plugin
            .admit(r, Some(&mut ns("system", tenant)))
            .await
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("cluster's system Network"),
            "{}",
            e.message
        );
    }
    // A Network without tenant is open to every namespace; no spec.network: not checked.
    plugin
        .admit(&r, Some(&mut ns("shared", Some("x"))))
        .await
        .unwrap();
    plugin
        .admit(&r, Some(&mut json!({"metadata": {"name": "p"}})))
        .await
        .unwrap();
    // Updates keeping the Network are not checked again.
    let old = ns("gone", None);
    let u = req("namespaces", "", Operation::Update, &user, Some(&old));
    plugin.admit(&u, Some(&mut ns("gone", None))).await.unwrap();
}

#[tokio::test]
async fn cinder_volumes_of_other_tenants_are_refused() {
    let (_dir, store) = store().await;
    let lookup = lookup::Lookup::new(store.clone());
    let plugin = super::storage::CinderVolumeTenant::new(lookup);
    let user = UserInfo::default();
    let create = req("pods", "", Operation::Create, &user, None);
    let with = |id: &str| {
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "v", "cinder": {"volumeID": id, "fsType": "ext4"}}]);
        p
    };
    // The namespace "d" has no tenant yet: the cluster's own namespaces may name any volume.
    plugin.admit(&create, Some(&mut with("any"))).await.unwrap();
    put(
        &store,
        "",
        "namespaces",
        None,
        json!({"metadata": {"name": "d", "labels": {"tenancy.h8s.io/tenant": "acme"}}}),
    )
    .await;
    put(&store, "", "persistentvolumes", None,
        json!({"metadata": {"name": "mine", "labels": {"tenancy.h8s.io/tenant": "acme"}}, "spec": {}})).await;
    put(&store, "", "persistentvolumes", None,
        json!({"metadata": {"name": "theirs", "labels": {"tenancy.h8s.io/tenant": "other"}}, "spec": {}})).await;
    plugin
        .admit(&create, Some(&mut with("mine")))
        .await
        .unwrap();
    for id in ["theirs", "missing"] {
        let e = plugin
            .admit(&create, Some(&mut with(id)))
            .await
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            format!("pods \"p\" is forbidden: cinder volume \"{id}\" is not a volume of tenant \"acme\"")
        );
    }
    // Pods without cinder volumes are not looked at.
    plugin.admit(&create, Some(&mut pod())).await.unwrap();
}

#[tokio::test]
async fn external_ips_only_from_cluster_admins_and_only_in_the_pool() {
    let plugin = ServiceExternalIps {
        pool: Some(("192.0.2.0".parse().unwrap(), 28)),
    };
    let tenant = UserInfo {
        username: "u".into(),
        groups: vec!["h8s:tenant:acme".into()],
        ..Default::default()
    };
    let admin = UserInfo {
        username: "admin".into(),
        groups: vec!["system:masters".into()],
        ..Default::default()
    };
    let svc = |ips: &[&str]| json!({"metadata": {"name": "p"}, "spec": {"externalIPs": ips}});
    // A tenant: 403, even for a pool address.
    let r = req("services", "", Operation::Create, &tenant, None);
    let e = plugin
        .admit(&r, Some(&mut svc(&["192.0.2.5"])))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
    // No external IPs: nothing to check.
    plugin
        .admit(&r, Some(&mut json!({"spec": {}})))
        .await
        .unwrap();
    // An admin: pool addresses yes, others 422.
    let r = req("services", "", Operation::Create, &admin, None);
    plugin
        .admit(&r, Some(&mut svc(&["192.0.2.5"])))
        .await
        .unwrap();
    let e = plugin
        .admit(&r, Some(&mut svc(&["192.0.2.5", "8.8.8.8"])))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    // A tenant's update keeping what an admin set passes; adding one does not.
    let old = svc(&["192.0.2.5"]);
    let r = req("services", "", Operation::Update, &tenant, Some(&old));
    plugin
        .admit(&r, Some(&mut svc(&["192.0.2.5"])))
        .await
        .unwrap();
    let e = plugin
        .admit(&r, Some(&mut svc(&["192.0.2.5", "192.0.2.6"])))
        .await
        .unwrap_err();
    assert_eq!(e.code, 403);
    // Without a pool, none at all.
    let none = ServiceExternalIps { pool: None };
    let r = req("services", "", Operation::Create, &admin, None);
    let e = none
        .admit(&r, Some(&mut svc(&["192.0.2.5"])))
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
}
