//! The auth-controller of the seeds (Hypernetes' `auth-controller`): it keeps the RBAC
//! objects that give tenant users their rights in step with Users, Namespaces, Networks and
//! Tenants, through the API, reconciling (a binding deleted by hand comes back; restarts
//! change nothing that is right).
//!
//! - The `namespace-creater` ClusterRole: create and manage Namespaces, Networks and
//!   PersistentVolumes, read the cluster kinds tenants may read, and list/watch across
//!   namespaces (the tenant guard in the API server narrows all of it to the caller's
//!   tenant: another tenant's objects are never named, listed or written).
//! - Each `tenancy.h8s.io` User: a ClusterRoleBinding `<user>-namespace-creater`. Users get
//!   the finalizer `tenancy.h8s.io/auth-controller`: when a User is deleted every binding
//!   naming it loses that subject (a binding left without subjects is deleted), then the
//!   finalizer goes.
//! - Each tenant Namespace (label `tenancy.h8s.io/tenant`): the RoleBinding
//!   `namespace-binding` giving the group `h8s:tenant:<tenant>` Kubernetes' `admin`
//!   ClusterRole in it, and `default-sa-binding` giving the namespace's `default`
//!   ServiceAccount `view`. Both live in the namespace, so they go with it.
//! - Each Network: a ClusterRole and ClusterRoleBinding `network:<name>` giving its tenant
//!   get/update/patch/delete on that Network (`resourceNames`), owned by the Network (the
//!   garbage collector removes them with it).
//! - Each Tenant gets the finalizer `tenancy.h8s.io/cleanup`: deleting a Tenant deletes its
//!   Users, Namespaces, Networks and PersistentVolumes, then lets the Tenant go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{Context, Error};

/// The ClusterRole every tenant user is bound to (the seeds' spelling).
pub const NAMESPACE_CREATER: &str = "namespace-creater";
/// The label recording a Namespace's (and PersistentVolume's) tenant (set by the server).
pub const TENANT_LABEL: &str = "tenancy.h8s.io/tenant";
/// The group naming a tenant's users.
pub const TENANT_GROUP_PREFIX: &str = "h8s:tenant:";
/// The label on everything this controller makes.
pub const MANAGED_BY: &str = "tenancy.h8s.io/managed-by";
const MANAGER: &str = "auth-controller";
/// The label naming the User a ClusterRoleBinding is for.
const USER_LABEL: &str = "tenancy.h8s.io/user";
/// The label naming the Network a role or binding is for.
const NETWORK_LABEL: &str = "tenancy.h8s.io/network";
/// Held on Users until the bindings naming them are gone.
pub const USER_FINALIZER: &str = "tenancy.h8s.io/auth-controller";
/// Held on Tenants until their users, namespaces, networks and volumes are gone.
pub const TENANT_FINALIZER: &str = "tenancy.h8s.io/cleanup";
/// The RoleBinding of a tenant namespace.
pub const NAMESPACE_BINDING: &str = "namespace-binding";
/// The RoleBinding of a tenant namespace's `default` ServiceAccount.
pub const DEFAULT_SA_BINDING: &str = "default-sa-binding";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn user_ar() -> ApiResource {
    ApiResource {
        group: "tenancy.h8s.io".into(),
        version: "v1".into(),
        api_version: "tenancy.h8s.io/v1".into(),
        kind: "User".into(),
        plural: "users".into(),
    }
}

pub(crate) fn tenant_ar() -> ApiResource {
    ApiResource {
        group: "tenancy.h8s.io".into(),
        version: "v1".into(),
        api_version: "tenancy.h8s.io/v1".into(),
        kind: "Tenant".into(),
        plural: "tenants".into(),
    }
}

fn network_ar() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Network".into(),
        plural: "networks".into(),
    }
}

struct State {
    client: kube::Client,
    resync: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("waiting: {0}")]
    Pending(String),
}

/// Runs the auth-controller until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let s = Arc::new(State {
        client: ctx.client.clone(),
        resync: ctx.timers.resync,
    });
    // The ClusterRole exists from the start, users or not (retried until the API answers).
    let c = s.client.clone();
    tokio::spawn(async move {
        while let Err(e) = ensure_namespace_creater(&c).await {
            tracing::debug!(error = %e, "auth-controller: namespace-creater; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::join!(
        users(s.clone()),
        namespaces(s.clone()),
        networks(s.clone()),
        tenants(s)
    );
    Err(Error::Stopped { name: "tenancy" })
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn managed(extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::from([(MANAGED_BY.to_string(), MANAGER.to_string())]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// The `namespace-creater` ClusterRole.
pub fn namespace_creater() -> ClusterRole {
    const ALL: &[&str] = &[
        "create", "get", "list", "watch", "update", "patch", "delete",
    ];
    const READ: &[&str] = &["get", "list", "watch"];
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(NAMESPACE_CREATER.into()),
            labels: Some(managed(&[])),
            ..Default::default()
        },
        rules: Some(vec![
            rule(&[""], &["namespaces", "networks", "persistentvolumes"], ALL),
            rule(&[""], &["nodes"], READ),
            rule(&["storage.k8s.io"], &["storageclasses", "csidrivers"], READ),
            rule(&["node.k8s.io"], &["runtimeclasses"], READ),
            rule(&["scheduling.k8s.io"], &["priorityclasses"], READ),
            rule(&["tenancy.h8s.io"], &["tenants", "users"], READ),
            // `kubectl get … -A`: the tenant guard filters these to the caller's
            // namespaces and refuses every cluster-admin kind.
            rule(&["*"], &["*"], &["list", "watch"]),
        ]),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
    Subject {
        api_group: (kind != "ServiceAccount").then(|| RBAC_GROUP.to_string()),
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.map(str::to_string),
    }
}

fn owner_ref(ar: &ApiResource, o: &DynamicObject) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
        name: o.name_any(),
        uid: o.metadata.uid.clone()?,
        block_owner_deletion: Some(true),
        controller: Some(true),
    })
}

/// Whether an existing binding already says what `want` says.
fn same_binding(
    have_ref: &RoleRef,
    have_subjects: Option<&Vec<Subject>>,
    want_ref: &RoleRef,
    want_subjects: &[Subject],
) -> bool {
    have_ref == want_ref && have_subjects.map(Vec::as_slice).unwrap_or(&[]) == want_subjects
}

/// Creates or corrects a ClusterRoleBinding (a changed roleRef means delete and create,
/// as roleRef is immutable).
async fn ensure_crb(client: &kube::Client, want: ClusterRoleBinding) -> Result<(), kube::Error> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let name = want.name_any();
    match api.get_opt(&name).await? {
        Some(have)
            if same_binding(
                &have.role_ref,
                have.subjects.as_ref(),
                &want.role_ref,
                want.subjects.as_deref().unwrap_or(&[]),
            ) =>
        {
            Ok(())
        }
        Some(have) => {
            if have.role_ref != want.role_ref {
                api.delete(&name, &DeleteParams::default()).await?;
                create_ok(api.create(&PostParams::default(), &want).await)
            } else {
                let mut fixed = have.clone();
                fixed.subjects = want.subjects;
                api.replace(&name, &PostParams::default(), &fixed)
                    .await
                    .map(|_| ())
            }
        }
        None => create_ok(api.create(&PostParams::default(), &want).await),
    }
}

async fn ensure_rb(client: &kube::Client, ns: &str, want: RoleBinding) -> Result<(), kube::Error> {
    let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let name = want.name_any();
    match api.get_opt(&name).await? {
        Some(have)
            if same_binding(
                &have.role_ref,
                have.subjects.as_ref(),
                &want.role_ref,
                want.subjects.as_deref().unwrap_or(&[]),
            ) =>
        {
            Ok(())
        }
        Some(have) => {
            if have.role_ref != want.role_ref {
                api.delete(&name, &DeleteParams::default()).await?;
                create_ok(api.create(&PostParams::default(), &want).await)
            } else {
                let mut fixed = have.clone();
                fixed.subjects = want.subjects;
                api.replace(&name, &PostParams::default(), &fixed)
                    .await
                    .map(|_| ())
            }
        }
        None => create_ok(api.create(&PostParams::default(), &want).await),
    }
}

/// A create that lost a race with another writer (409) or hit a terminating namespace is
/// not an error: the next reconcile looks again.
fn create_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s))
            if s.code == 409 || (s.code == 403 && s.message.contains("terminat")) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn not_found_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn ensure_namespace_creater(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let want = namespace_creater();
    match api.get_opt(NAMESPACE_CREATER).await? {
        Some(have) if have.rules == want.rules => Ok(()),
        Some(mut have) => {
            have.rules = want.rules;
            api.replace(NAMESPACE_CREATER, &PostParams::default(), &have)
                .await
                .map(|_| ())
        }
        None => create_ok(api.create(&PostParams::default(), &want).await),
    }
}

fn error_policy<K>(_o: Arc<K>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "auth-controller reconcile; retrying");
    Action::requeue(Duration::from_secs(1))
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|v| v.iter().any(|x| x == f))
}

/// Adds or removes a finalizer with a JSON patch guarded by the object's resourceVersion.
async fn set_finalizer(
    api: &Api<DynamicObject>,
    o: &DynamicObject,
    f: &str,
    present: bool,
) -> Result<(), kube::Error> {
    let mut fins: Vec<String> = o.metadata.finalizers.clone().unwrap_or_default();
    fins.retain(|x| x != f);
    if present {
        fins.push(f.to_string());
    }
    let patch =
        json!({"metadata": {"finalizers": fins, "resourceVersion": o.metadata.resource_version}});
    not_found_ok(
        api.patch(
            &o.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await,
    )
}

// ---- Users ----

async fn users(s: Arc<State>) {
    let ar = user_ar();
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &ar);
    let ar2 = ar.clone();
    Controller::new_with(api, watcher::Config::default(), ar.clone())
        .watches(
            Api::<ClusterRoleBinding>::all(s.client.clone()),
            watcher::Config::default().labels(USER_LABEL),
            move |crb| {
                crb.labels()
                    .get(USER_LABEL)
                    .map(|u| ObjectRef::new_with(u, ar2.clone()))
            },
        )
        .run(reconcile_user, error_policy, s)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "auth-controller (users)");
            }
        })
        .await;
}

async fn reconcile_user(u: Arc<DynamicObject>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let ar = user_ar();
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &ar);
    let name = u.name_any();
    if u.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&u.metadata, USER_FINALIZER) {
            remove_subject_everywhere(&s.client, &name).await?;
            set_finalizer(&api, &u, USER_FINALIZER, false).await?;
            tracing::info!(user = %name, "user deleted: bindings naming it removed");
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(&u.metadata, USER_FINALIZER) {
        set_finalizer(&api, &u, USER_FINALIZER, true).await?;
    }
    ensure_namespace_creater(&s.client).await?;
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{NAMESPACE_CREATER}")),
            labels: Some(managed(&[(USER_LABEL, &name)])),
            owner_references: owner_ref(&ar, &u).map(|o| vec![o]),
            ..Default::default()
        },
        role_ref: role_ref("ClusterRole", NAMESPACE_CREATER),
        subjects: Some(vec![subject("User", &name, None)]),
    };
    ensure_crb(&s.client, crb).await?;
    Ok(Action::requeue(s.resync))
}

/// Removes `User <name>` from every ClusterRoleBinding and RoleBinding; a binding left
/// without subjects is deleted.
async fn remove_subject_everywhere(client: &kube::Client, user: &str) -> Result<(), kube::Error> {
    let names_user = |s: &Subject| s.kind == "User" && s.name == user;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    for b in crbs.list(&ListParams::default()).await?.items {
        let subs = b.subjects.clone().unwrap_or_default();
        if !subs.iter().any(names_user) {
            continue;
        }
        let left: Vec<Subject> = subs.into_iter().filter(|s| !names_user(s)).collect();
        if left.is_empty() {
            not_found_ok(crbs.delete(&b.name_any(), &DeleteParams::default()).await)?;
        } else {
            let mut b = b.clone();
            b.subjects = Some(left);
            not_found_ok(
                crbs.replace(&b.name_any(), &PostParams::default(), &b)
                    .await,
            )?;
        }
    }
    let rbs: Api<RoleBinding> = Api::all(client.clone());
    for b in rbs.list(&ListParams::default()).await?.items {
        let subs = b.subjects.clone().unwrap_or_default();
        if !subs.iter().any(names_user) {
            continue;
        }
        let ns = b.namespace().unwrap_or_default();
        let api: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        let left: Vec<Subject> = subs.into_iter().filter(|s| !names_user(s)).collect();
        if left.is_empty() {
            not_found_ok(api.delete(&b.name_any(), &DeleteParams::default()).await)?;
        } else {
            let mut b = b.clone();
            b.subjects = Some(left);
            not_found_ok(api.replace(&b.name_any(), &PostParams::default(), &b).await)?;
        }
    }
    Ok(())
}

// ---- Namespaces ----

async fn namespaces(s: Arc<State>) {
    Controller::new(
        Api::<Namespace>::all(s.client.clone()),
        watcher::Config::default().labels(TENANT_LABEL),
    )
    .watches(
        Api::<RoleBinding>::all(s.client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}")),
        |rb| rb.namespace().map(|n| ObjectRef::<Namespace>::new(&n)),
    )
    .run(reconcile_namespace, error_policy, s)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "auth-controller (namespaces)");
        }
    })
    .await;
}

/// The two RoleBindings of a tenant namespace.
pub fn namespace_bindings(ns: &str, tenant: &str) -> [RoleBinding; 2] {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(managed(&[(TENANT_LABEL, tenant)])),
        ..Default::default()
    };
    [
        RoleBinding {
            metadata: meta(NAMESPACE_BINDING),
            role_ref: role_ref("ClusterRole", "admin"),
            subjects: Some(vec![subject(
                "Group",
                &format!("{TENANT_GROUP_PREFIX}{tenant}"),
                None,
            )]),
        },
        RoleBinding {
            metadata: meta(DEFAULT_SA_BINDING),
            role_ref: role_ref("ClusterRole", "view"),
            subjects: Some(vec![subject("ServiceAccount", "default", Some(ns))]),
        },
    ]
}

async fn reconcile_namespace(ns: Arc<Namespace>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let name = ns.name_any();
    let Some(tenant) = ns
        .labels()
        .get(TENANT_LABEL)
        .filter(|t| !t.is_empty())
        .cloned()
    else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_some() {
        // Its bindings go with its content.
        return Ok(Action::await_change());
    }
    for rb in namespace_bindings(&name, &tenant) {
        ensure_rb(&s.client, &name, rb).await?;
    }
    Ok(Action::requeue(s.resync))
}

// ---- Networks ----

async fn networks(s: Arc<State>) {
    let ar = network_ar();
    let ar2 = ar.clone();
    let ar3 = ar.clone();
    Controller::new_with(
        Api::<DynamicObject>::all_with(s.client.clone(), &ar),
        watcher::Config::default(),
        ar.clone(),
    )
    .watches(
        Api::<ClusterRoleBinding>::all(s.client.clone()),
        watcher::Config::default().labels(NETWORK_LABEL),
        move |b| {
            b.labels()
                .get(NETWORK_LABEL)
                .map(|n| ObjectRef::new_with(n, ar2.clone()))
        },
    )
    .watches(
        Api::<ClusterRole>::all(s.client.clone()),
        watcher::Config::default().labels(NETWORK_LABEL),
        move |b| {
            b.labels()
                .get(NETWORK_LABEL)
                .map(|n| ObjectRef::new_with(n, ar3.clone()))
        },
    )
    .run(reconcile_network, error_policy, s)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "auth-controller (networks)");
        }
    })
    .await;
}

async fn reconcile_network(n: Arc<DynamicObject>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let name = n.name_any();
    let tenant = n.data["spec"]["tenantID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if tenant.is_empty() || n.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ar = network_ar();
    let role_name = format!("network:{name}");
    let meta = ObjectMeta {
        name: Some(role_name.clone()),
        labels: Some(managed(&[(NETWORK_LABEL, &name), (TENANT_LABEL, &tenant)])),
        owner_references: owner_ref(&ar, &n).map(|o| vec![o]),
        ..Default::default()
    };
    let want = ClusterRole {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["networks".into()]),
            resource_names: Some(vec![name.clone()]),
            verbs: ["get", "update", "patch", "delete"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let roles: Api<ClusterRole> = Api::all(s.client.clone());
    match roles.get_opt(&role_name).await? {
        Some(have) if have.rules == want.rules => {}
        Some(mut have) => {
            have.rules = want.rules;
            roles
                .replace(&role_name, &PostParams::default(), &have)
                .await?;
        }
        None => create_ok(roles.create(&PostParams::default(), &want).await)?,
    }
    ensure_crb(
        &s.client,
        ClusterRoleBinding {
            metadata: meta,
            role_ref: role_ref("ClusterRole", &role_name),
            subjects: Some(vec![subject(
                "Group",
                &format!("{TENANT_GROUP_PREFIX}{tenant}"),
                None,
            )]),
        },
    )
    .await?;
    Ok(Action::requeue(s.resync))
}

// ---- Tenants ----

async fn tenants(s: Arc<State>) {
    let ar = tenant_ar();
    Controller::new_with(
        Api::<DynamicObject>::all_with(s.client.clone(), &ar),
        watcher::Config::default(),
        ar,
    )
    .run(reconcile_tenant, error_policy, s)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "auth-controller (tenants)");
        }
    })
    .await;
}

async fn reconcile_tenant(t: Arc<DynamicObject>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &tenant_ar());
    let name = t.name_any();
    if t.metadata.deletion_timestamp.is_none() {
        if !has_finalizer(&t.metadata, TENANT_FINALIZER) {
            set_finalizer(&api, &t, TENANT_FINALIZER, true).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(&t.metadata, TENANT_FINALIZER) {
        return Ok(Action::await_change());
    }
    let left = delete_tenant_content(&s.client, &name).await?;
    if left > 0 {
        return Err(ReconcileError::Pending(format!(
            "tenant {name}: {left} objects still being deleted"
        )));
    }
    set_finalizer(&api, &t, TENANT_FINALIZER, false).await?;
    tracing::info!(tenant = %name, "tenant deleted with its users, namespaces, networks and volumes");
    Ok(Action::await_change())
}

/// Deletes a tenant's Users, Namespaces, Networks and PersistentVolumes; returns how many
/// still exist.
async fn delete_tenant_content(client: &kube::Client, tenant: &str) -> Result<usize, kube::Error> {
    let dp = DeleteParams::default();
    let mut left = 0;
    let users: Api<DynamicObject> = Api::all_with(client.clone(), &user_ar());
    for u in users.list(&ListParams::default()).await?.items {
        if u.data["spec"]["tenant"].as_str() == Some(tenant) {
            left += 1;
            if u.metadata.deletion_timestamp.is_none() {
                not_found_ok(users.delete(&u.name_any(), &dp).await)?;
            }
        }
    }
    let by_label = ListParams::default().labels(&format!("{TENANT_LABEL}={tenant}"));
    let nss: Api<Namespace> = Api::all(client.clone());
    for n in nss.list(&by_label).await?.items {
        left += 1;
        if n.metadata.deletion_timestamp.is_none() {
            not_found_ok(nss.delete(&n.name_any(), &dp).await)?;
        }
    }
    let nets: Api<DynamicObject> = Api::all_with(client.clone(), &network_ar());
    for n in nets
        .list(&ListParams::default().fields(&format!("spec.tenantID={tenant}")))
        .await?
        .items
    {
        left += 1;
        if n.metadata.deletion_timestamp.is_none() {
            not_found_ok(nets.delete(&n.name_any(), &dp).await)?;
        }
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for p in pvs.list(&by_label).await?.items {
        left += 1;
        if p.metadata.deletion_timestamp.is_none() {
            not_found_ok(pvs.delete(&p.name_any(), &dp).await)?;
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_bindings() {
        let r = namespace_creater();
        let rules = r.rules.unwrap();
        assert!(rules[0].verbs.contains(&"create".to_string()));
        assert!(rules[0]
            .resources
            .as_ref()
            .unwrap()
            .contains(&"namespaces".to_string()));
        let [admin, sa] = namespace_bindings("acme-dev", "acme");
        assert_eq!(admin.role_ref.name, "admin");
        assert_eq!(admin.subjects.as_ref().unwrap()[0].name, "h8s:tenant:acme");
        assert_eq!(sa.subjects.as_ref().unwrap()[0].kind, "ServiceAccount");
        assert_eq!(sa.subjects.as_ref().unwrap()[0].api_group, None);
        assert!(same_binding(
            &admin.role_ref,
            admin.subjects.as_ref(),
            &role_ref("ClusterRole", "admin"),
            &[subject("Group", "h8s:tenant:acme", None)]
        ));
        assert!(!same_binding(
            &admin.role_ref,
            admin.subjects.as_ref(),
            &role_ref("ClusterRole", "edit"),
            &[subject("Group", "h8s:tenant:acme", None)]
        ));
    }
}
