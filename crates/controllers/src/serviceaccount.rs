//! The ServiceAccount controllers of kube-controller-manager:
//!
//! * `serviceaccount`: a `default` ServiceAccount in every active namespace, created again
//!   if deleted.
//! * `root-ca-cert-publisher`: the ConfigMap `kube-root-ca.crt` with `ca.crt` = the cluster
//!   CA in every active namespace, restored if edited or deleted.
//! * `serviceaccount-token` (legacy tokens): a Secret of type
//!   `kubernetes.io/service-account-token` naming a ServiceAccount in its
//!   `kubernetes.io/service-account.name` annotation gets `token`, `ca.crt` and `namespace`
//!   and the `kubernetes.io/service-account.uid` annotation; the Secret is deleted when its
//!   ServiceAccount does not exist (or is another one of the same name). The token comes
//!   from the API's TokenRequest, bound to the Secret (so deleting the Secret revokes it);
//!   unlike kube's legacy tokens it expires, at the longest lifetime the server grants, and
//!   is renewed a day before.
//!
//! Terminating namespaces are left alone (the namespace controller empties them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::cluster;
use crate::{Context, Error};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap carrying the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Its key.
pub const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
/// The Secret type the token controller fills.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation of a token Secret naming its ServiceAccount.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Annotation of a token Secret with its ServiceAccount's uid.
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// How long a token Secret's token is asked to last (the server cuts it to its maximum).
const TOKEN_LIFETIME_SECS: i64 = 365 * 24 * 3600;
/// A token is renewed when it has less than this left.
const TOKEN_RENEW_BEFORE: i64 = 24 * 3600;

/// Runs the three controllers until the process ends.
pub async fn run(ctx: Context) -> Result<(), Error> {
    let state = Arc::new(State {
        client: ctx.client.clone(),
        root_ca: ctx.root_ca_pem.clone(),
    });
    tokio::join!(namespaces(state.clone()), tokens(state));
    Err(Error::Stopped {
        name: "serviceaccount",
    })
}

struct State {
    client: kube::Client,
    root_ca: String,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("API request failed")]
    Kube(#[from] kube::Error),
    #[error("serializing a TokenRequest")]
    Json(#[from] serde_json::Error),
}

/// `default` ServiceAccount and `kube-root-ca.crt` per namespace: one reconcile per
/// namespace, triggered by the namespace and by changes to either object in it.
async fn namespaces(state: Arc<State>) {
    let client = state.client.clone();
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let to_ns = |ns: Option<String>| ns.map(|n| ObjectRef::<Namespace>::new(&n));
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        by_name(DEFAULT_SERVICE_ACCOUNT),
        move |sa| to_ns(sa.namespace()),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        by_name(ROOT_CA_CONFIGMAP),
        move |cm| to_ns(cm.namespace()),
    )
    .run(reconcile_namespace, error_policy, state)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "serviceaccount controller");
        }
    })
    .await;
}

fn error_policy<K>(_o: Arc<K>, e: &ReconcileError, _s: Arc<State>) -> Action {
    tracing::debug!(error = %e, "serviceaccount reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether a namespace is being deleted (nothing new may be created in it).
fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether an error says the object is there already, or the namespace is going away
/// (NamespaceLifecycle's 403): nothing to do either way.
fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || (s.code == 403 && s.message.contains("terminat")))
}

#[tracing::instrument(level = "debug", skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile_namespace(ns: Arc<Namespace>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), &name);
    if sas.get_opt(DEFAULT_SERVICE_ACCOUNT).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                namespace: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::debug!(namespace = %name, "default service account created"),
            Err(e) if benign(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &name);
    let current = cms.get_opt(ROOT_CA_CONFIGMAP).await?;
    if let Some(cm) = root_ca_configmap(&name, current.as_ref(), &s.root_ca) {
        let r = if current.is_some() {
            cms.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                .await
        } else {
            cms.create(&PostParams::default(), &cm).await
        };
        match r {
            Ok(_) => tracing::debug!(namespace = %name, "kube-root-ca.crt published"),
            Err(e) if benign(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

/// The `kube-root-ca.crt` ConfigMap to write (create or replace), or `None` when the
/// existing one already carries exactly `ca.crt`. Other data keys are dropped, as kube
/// does; labels and other annotations are kept.
pub fn root_ca_configmap(
    namespace: &str,
    current: Option<&ConfigMap>,
    pem: &str,
) -> Option<ConfigMap> {
    let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), pem.to_string())]);
    match current {
        Some(cm)
            if cm.data.as_ref() == Some(&data)
                && cm.binary_data.as_ref().is_none_or(|b| b.is_empty())
                && cm
                    .annotations()
                    .get(DESCRIPTION_ANNOTATION)
                    .map(String::as_str)
                    == Some(DESCRIPTION) =>
        {
            None
        }
        Some(cm) => {
            let mut cm = cm.clone();
            cm.data = Some(data);
            cm.binary_data = None;
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            Some(cm)
        }
        None => Some(ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIGMAP.into()),
                namespace: Some(namespace.into()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Legacy token Secrets.

async fn tokens(state: Arc<State>) {
    let client = state.client.clone();
    let cfg = watcher::Config::default().fields(&format!("type={TOKEN_SECRET_TYPE}"));
    let secrets = Controller::new(Api::<Secret>::all(client.clone()), cfg);
    let store = secrets.store();
    secrets
        // A ServiceAccount created, replaced or deleted: its token Secrets follow.
        .watches(
            Api::<ServiceAccount>::all(client),
            watcher::Config::default(),
            move |sa| {
                let ns = sa.namespace();
                let name = sa.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|s| {
                        s.namespace() == ns
                            && s.annotations().get(SA_NAME_ANNOTATION) == Some(&name)
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile_secret, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "token controller");
            }
        })
        .await;
}

/// What the token controller does with a token Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenAction {
    /// Not a token Secret this controller handles (no ServiceAccount named, being deleted).
    Ignore,
    /// Its ServiceAccount does not exist (or is another one of that name): delete it.
    Delete,
    /// Populate or renew: token, `ca.crt`, `namespace`, the uid annotation.
    Fill,
    /// Complete; look again in this many seconds (before the token expires).
    Wait(i64),
}

/// The `exp` claim of a JWT (unverified: the server verifies; this only schedules renewal).
pub fn jwt_expiry(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// The token controller's decision for `secret`, given its ServiceAccount (as read from the
/// API), the CA and the time now (Unix seconds).
pub fn token_action(
    secret: &Secret,
    sa: Option<&ServiceAccount>,
    ca: &str,
    now: i64,
) -> TokenAction {
    if secret.type_.as_deref() != Some(TOKEN_SECRET_TYPE)
        || secret.metadata.deletion_timestamp.is_some()
    {
        return TokenAction::Ignore;
    }
    let Some(sa_name) = secret.annotations().get(SA_NAME_ANNOTATION) else {
        return TokenAction::Ignore;
    };
    let Some(sa) = sa.filter(|sa| &sa.name_any() == sa_name) else {
        return TokenAction::Delete;
    };
    let sa_uid = sa.uid().unwrap_or_default();
    if let Some(uid) = secret.annotations().get(SA_UID_ANNOTATION) {
        if !uid.is_empty() && *uid != sa_uid {
            return TokenAction::Delete;
        }
    }
    let data = secret.data.clone().unwrap_or_default();
    let get = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let complete = get("ca.crt").as_deref() == Some(ca)
        && get("namespace") == secret.namespace()
        && secret.annotations().get(SA_UID_ANNOTATION) == Some(&sa_uid);
    match get("token").as_deref().and_then(jwt_expiry) {
        Some(exp) if complete && exp.saturating_sub(now) > TOKEN_RENEW_BEFORE => {
            TokenAction::Wait(exp.saturating_sub(now) - TOKEN_RENEW_BEFORE)
        }
        _ => TokenAction::Fill,
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(secret = %cluster::ns_name(&*secret)))]
async fn reconcile_secret(secret: Arc<Secret>, s: Arc<State>) -> Result<Action, ReconcileError> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let Some(sa_name) = secret.annotations().get(SA_NAME_ANNOTATION).cloned() else {
        return Ok(Action::await_change());
    };
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), &ns);
    let sa = sas.get_opt(&sa_name).await?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &ns);
    match token_action(&secret, sa.as_ref(), &s.root_ca, now) {
        TokenAction::Ignore => Ok(Action::await_change()),
        TokenAction::Wait(secs) => Ok(Action::requeue(Duration::from_secs(secs.max(1) as u64))),
        TokenAction::Delete => {
            tracing::info!(secret = %format!("{ns}/{name}"), "token secret of a missing service account deleted");
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if cluster::is_stale(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
        TokenAction::Fill => {
            let Some(sa) = sa else {
                return Ok(Action::await_change());
            };
            let req = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Secret".into()),
                        name: Some(name.clone()),
                        uid: secret.uid(),
                    }),
                    expiration_seconds: Some(TOKEN_LIFETIME_SECS),
                },
                ..Default::default()
            };
            let tr: TokenRequest = sas
                .create_subresource("token", &sa_name, &PostParams::default(), &req)
                .await?;
            let token = tr.status.map(|s| s.token).unwrap_or_default();
            let mut out = (*secret).clone();
            let data = out.data.get_or_insert_with(BTreeMap::new);
            data.insert("token".into(), ByteString(token.into_bytes()));
            data.insert("ca.crt".into(), ByteString(s.root_ca.clone().into_bytes()));
            data.insert("namespace".into(), ByteString(ns.clone().into_bytes()));
            out.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(SA_UID_ANNOTATION.into(), sa.uid().unwrap_or_default());
            match secrets.replace(&name, &PostParams::default(), &out).await {
                Ok(_) => tracing::debug!(secret = %format!("{ns}/{name}"), "token secret filled"),
                Err(e) if cluster::is_stale(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(v: serde_json::Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn root_ca_created_restored_or_left() {
        let pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";
        let new = root_ca_configmap("ns", None, pem).unwrap();
        assert_eq!(new.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(new.data.as_ref().unwrap()["ca.crt"], pem);
        assert!(
            root_ca_configmap("ns", Some(&new), pem).is_none(),
            "already right"
        );
        let mut edited = new.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("ca.crt".into(), "forged".into());
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        edited.metadata.labels = Some(BTreeMap::from([("keep".into(), "me".into())]));
        let fixed = root_ca_configmap("ns", Some(&edited), pem).unwrap();
        assert_eq!(fixed.data, new.data);
        assert_eq!(fixed.labels()["keep"], "me");
        let other = cm(
            serde_json::json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "old"}}),
        );
        assert!(
            root_ca_configmap("ns", Some(&other), pem).is_some(),
            "a rotated CA is published"
        );
    }

    fn jwt(exp: i64) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"ES256"}"#),
            e.encode(serde_json::json!({"exp": exp, "sub": "x"}).to_string())
        )
    }

    #[test]
    fn token_secrets() {
        let sa: ServiceAccount = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "builder", "namespace": "ns", "uid": "sa-uid"}}),
        )
        .unwrap();
        let secret = |ann: serde_json::Value, data: serde_json::Value| -> Secret {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "tok", "namespace": "ns", "annotations": ann},
                "type": TOKEN_SECRET_TYPE, "data": data}))
            .unwrap()
        };
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let now = 1_000_000;
        let fresh = secret(
            serde_json::json!({SA_NAME_ANNOTATION: "builder"}),
            serde_json::json!({}),
        );
        assert_eq!(
            token_action(&fresh, Some(&sa), "CA", now),
            TokenAction::Fill
        );
        assert_eq!(token_action(&fresh, None, "CA", now), TokenAction::Delete);
        let full = |exp: i64, uid: &str| {
            secret(
                serde_json::json!({SA_NAME_ANNOTATION: "builder", SA_UID_ANNOTATION: uid}),
                serde_json::json!({"token": b64(&jwt(exp)), "ca.crt": b64("CA"), "namespace": b64("ns")}),
            )
        };
        let year = 365 * 24 * 3600;
        assert_eq!(
            token_action(&full(now + year, "sa-uid"), Some(&sa), "CA", now),
            TokenAction::Wait(year - TOKEN_RENEW_BEFORE)
        );
        // Expiring within a day, or a CA rotated: filled again.
        assert_eq!(
            token_action(&full(now + 3600, "sa-uid"), Some(&sa), "CA", now),
            TokenAction::Fill
        );
        assert_eq!(
            token_action(&full(now + year, "sa-uid"), Some(&sa), "CA2", now),
            TokenAction::Fill
        );
        // The ServiceAccount was recreated (another uid): the old token secret goes.
        assert_eq!(
            token_action(&full(now + year, "old-uid"), Some(&sa), "CA", now),
            TokenAction::Delete
        );
        // Not naming a service account: not ours.
        let plain = secret(serde_json::json!({}), serde_json::json!({}));
        assert_eq!(
            token_action(&plain, Some(&sa), "CA", now),
            TokenAction::Ignore
        );
    }

    #[test]
    fn jwt_expiry_reads_the_claim() {
        assert_eq!(jwt_expiry(&jwt(42)), Some(42));
        assert_eq!(jwt_expiry("not a jwt"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }
}
