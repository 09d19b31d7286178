//! The built-in identity service: `tenancy.h8s.io` Users with Argon2id passwords,
//! random tokens kept hashed in the store, an [`Authenticator`] that accepts them as
//! bearer tokens on the Kubernetes API, and the Keystone v3 API under `/v3` on the
//! API server's port (`keystone.rs`) for the `openstack` CLI and keystoneauth.
//!
//! A token is valid while: its record exists and has not expired; its User exists with
//! the same uid, is enabled and not being deleted; the User's password is still the
//! one the token descends from; the User's Tenant exists, is enabled and not being
//! deleted. Everything is read at each check, so deleting or disabling a user, changing
//! its password or deleting its tenant ends its tokens at once.

pub mod backoff;
pub mod external;
pub mod keystone;
pub mod password;
pub mod tokens;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::auth::{
    Authenticator, Authn, RequestInfo, UserInfo, AUTHENTICATED_GROUP, TENANT_GROUP_PREFIX,
};
use crate::error::{ApiError, Subject};
use crate::obj;

/// The group of cluster admins.
pub const MASTERS_GROUP: &str = "system:masters";
/// The role that makes a cluster admin in the cloud-admin tenant (and only there).
pub const ADMIN_ROLE: &str = "admin";
/// The user the server creates in the cloud-admin tenant on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The file (mode 0600, in the data directory) with that user's first password.
pub const ADMIN_PASSWORD_FILE: &str = "admin.password";

/// Settings of the identity service.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// How long a token lives (Keystone's default: 12 h).
    pub token_ttl: Duration,
    /// The tenant whose `admin`-role users are cluster admins.
    pub cloud_admin_tenant: String,
    /// How often expired tokens and orphaned passwords are swept from the store.
    pub sweep_interval: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            token_ttl: Duration::from_secs(12 * 3600),
            cloud_admin_tenant: "admin".into(),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// The identity service's state.
pub struct Identity {
    pub(crate) store: Arc<dyn h8s_store::Store>,
    pub(crate) cfg: IdentityConfig,
    pub(crate) backoff: backoff::Backoff,
}

/// A valid token and who it stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: tokens::Record,
    pub user: Value,
    pub tenant: String,
    pub roles: Vec<String>,
    pub cloud_admin: bool,
}

/// Why a password check failed.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong name, wrong password, disabled user or tenant: one answer for all.
    Unauthorized,
    /// Too many failures: wait this long.
    Locked(Duration),
    Api(ApiError),
}

impl From<ApiError> for LoginError {
    fn from(e: ApiError) -> Self {
        LoginError::Api(e)
    }
}

pub(crate) fn users() -> &'static h8s_types::Resource {
    h8s_types::resources::find(
        h8s_types::tenancy::GROUP,
        h8s_types::tenancy::VERSION,
        "users",
    )
    .expect("users are in the resource table")
}

pub(crate) fn tenants() -> &'static h8s_types::Resource {
    h8s_types::resources::find(
        h8s_types::tenancy::GROUP,
        h8s_types::tenancy::VERSION,
        "tenants",
    )
    .expect("tenants are in the resource table")
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn str_list(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A cluster-scoped object of `r` by name, straight from the store.
pub(crate) async fn get_obj(
    store: &dyn h8s_store::Store,
    r: &h8s_types::Resource,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    if name.is_empty() || name.len() > 253 || name.contains('/') {
        return Ok(None);
    }
    let kv = store
        .get(&obj::key(r, None, name))
        .await
        .map_err(|e| crate::error::from_store(e, &Subject::default()))?;
    kv.map(|kv| obj::decode(&kv)).transpose()
}

fn enabled(v: &Value) -> bool {
    v.pointer("/spec/enabled").and_then(Value::as_bool) != Some(false) && !obj::is_deleting(v)
}

impl Identity {
    pub fn new(store: Arc<dyn h8s_store::Store>, cfg: IdentityConfig) -> Self {
        Identity {
            store,
            cfg,
            backoff: Default::default(),
        }
    }

    async fn get_obj(
        &self,
        r: &h8s_types::Resource,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        get_obj(&*self.store, r, name).await
    }

    pub(crate) async fn user(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.get_obj(users(), name).await
    }

    pub(crate) async fn tenant(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.get_obj(tenants(), name).await
    }

    fn is_cloud_admin(&self, tenant: &str, roles: &[String]) -> bool {
        tenant == self.cfg.cloud_admin_tenant && roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// The user and tenant of a token's record, if all still allow it.
    pub async fn validate(&self, token: &str) -> Result<Option<Session>, ApiError> {
        let Some(rec) = tokens::get(&*self.store, token, now()).await? else {
            return Ok(None);
        };
        let Some(user) = self.user(&rec.user).await? else {
            return Ok(None);
        };
        if obj::uid(&user) != rec.user_uid || !enabled(&user) {
            return Ok(None);
        }
        match password::read(&*self.store, &rec.user).await? {
            Some(p) if p.credential_id == rec.credential_id && p.user_uid == rec.user_uid => {}
            _ => return Ok(None),
        }
        let tenant = user
            .pointer("/spec/tenant")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match self.tenant(&tenant).await? {
            Some(t) if enabled(&t) => {}
            _ => return Ok(None),
        }
        if rec.project.as_ref().is_some_and(|p| *p != tenant) {
            return Ok(None);
        }
        let roles = str_list(&user, "/spec/roles");
        Ok(Some(Session {
            cloud_admin: self.is_cloud_admin(&tenant, &roles),
            token: rec,
            user,
            tenant,
            roles,
        }))
    }

    /// Checks a password with back-off; on success returns the User and its password
    /// record's credential id.
    pub async fn check_password(
        &self,
        name: &str,
        pw: &str,
        addr: Option<IpAddr>,
    ) -> Result<(Value, String), LoginError> {
        if let Some(wait) = self.backoff.locked(name, addr) {
            return Err(LoginError::Locked(wait));
        }
        let user = self.user(name).await?;
        let rec = match &user {
            Some(u) => password::read(&*self.store, name)
                .await?
                .filter(|r| r.user_uid == obj::uid(u)),
            None => None,
        };
        let phc = rec.as_ref().map(|r| r.hash.clone());
        let pw = pw.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, phc.as_deref()))
            .await
            .unwrap_or(false);
        let tenant_ok = match &user {
            Some(u) => {
                let t = u
                    .pointer("/spec/tenant")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.tenant(t).await?.is_some_and(|t| enabled(&t))
            }
            None => false,
        };
        match (ok, user, rec) {
            (true, Some(u), Some(r)) if enabled(&u) && tenant_ok => {
                self.backoff.succeed(name, addr);
                Ok((u, r.credential_id))
            }
            _ => {
                self.backoff.fail(name, addr);
                Err(LoginError::Unauthorized)
            }
        }
    }

    /// Issues a token for `user`.
    pub async fn issue(
        &self,
        user: &Value,
        credential_id: String,
        project: Option<String>,
        methods: Vec<String>,
        expires_at: Option<i64>,
        parent_audit: Option<String>,
    ) -> Result<(String, tokens::Record), ApiError> {
        let issued = now();
        let mut audit_ids = vec![tokens::audit_id()];
        audit_ids.extend(parent_audit);
        let rec = tokens::Record {
            user: obj::name(user).to_string(),
            user_uid: obj::uid(user).to_string(),
            credential_id,
            project,
            methods,
            issued_at: issued,
            expires_at: expires_at.unwrap_or(issued + self.cfg.token_ttl.as_secs() as i64),
            audit_ids,
        };
        let token = tokens::new_token();
        tokens::put(&*self.store, &token, &rec).await?;
        Ok((token, rec))
    }

    /// Kubernetes' view of a session.
    pub fn user_info(&self, s: &Session) -> UserInfo {
        let mut groups = Vec::new();
        if s.cloud_admin {
            groups.push(MASTERS_GROUP.to_string());
        } else {
            groups.push(format!("{TENANT_GROUP_PREFIX}{}", s.tenant));
        }
        groups.extend(str_list(&s.user, "/spec/groups"));
        groups.push(AUTHENTICATED_GROUP.to_string());
        UserInfo {
            username: obj::name(&s.user).to_string(),
            uid: obj::uid(&s.user).to_string(),
            groups,
            extra: Default::default(),
        }
    }

    /// Deletes expired tokens and passwords of users that are gone; runs until shutdown.
    pub async fn sweep(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.sweep_interval) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %e.message, "identity sweep failed");
            }
        }
    }

    pub(crate) async fn sweep_once(&self) -> Result<usize, ApiError> {
        let store_err = |e| crate::error::from_store(e, &Subject::default());
        let t = now();
        let mut removed = 0;
        let mut after = None;
        loop {
            let page = self
                .store
                .list(
                    tokens::PREFIX,
                    h8s_store::ListOptions {
                        start_after: after.take(),
                        limit: Some(1000),
                        revision: None,
                    },
                )
                .await
                .map_err(store_err)?;
            for kv in &page.items {
                let expired = serde_json::from_slice::<tokens::Record>(&kv.value)
                    .map(|r| r.expires_at <= t)
                    .unwrap_or(true);
                if expired
                    && self
                        .store
                        .delete(&kv.key, Some(kv.mod_revision))
                        .await
                        .is_ok()
                {
                    removed += 1;
                }
            }
            after = page.items.last().map(|kv| kv.key.clone());
            if !page.more || after.is_none() {
                break;
            }
        }
        let pws = self
            .store
            .list(password::PREFIX, Default::default())
            .await
            .map_err(store_err)?;
        for kv in pws.items {
            let name = kv.key.trim_start_matches(password::PREFIX);
            let uid = serde_json::from_slice::<password::Record>(&kv.value)
                .map(|r| r.user_uid)
                .unwrap_or_default();
            let live = self.user(name).await?.is_some_and(|u| obj::uid(&u) == uid);
            if !live
                && self
                    .store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await
                    .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Accepts identity tokens as `Authorization: Bearer` on the Kubernetes API.
pub struct IdentityAuthenticator(pub Arc<Identity>);

impl Authenticator for IdentityAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        Box::pin(async move {
            let Some(tok) = req.bearer().filter(|t| t.starts_with(tokens::TOKEN_PREFIX)) else {
                return Authn::NoOpinion;
            };
            match self.0.validate(tok).await {
                Ok(Some(s)) => Authn::User(self.0.user_info(&s)),
                Ok(None) => Authn::Denied,
                Err(e) => {
                    tracing::warn!(error = %e.message, "identity token check failed");
                    Authn::Denied
                }
            }
        })
    }
}

/// On start: the cloud-admin tenant and its `admin` user, with a random password in
/// `DATA_DIR/admin.password` (0600) the first time.
pub(crate) async fn bootstrap(
    api: &Arc<crate::api::Api>,
    id: &Identity,
    data_dir: &Path,
) -> Result<(), ApiError> {
    let cx = crate::ctx::Ctx::internal(UserInfo {
        username: "system:apiserver".into(),
        groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
        ..Default::default()
    });
    let t = &id.cfg.cloud_admin_tenant;
    if id.tenant(t).await?.is_none() {
        let o = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "Tenant",
            "metadata": {"name": t}, "spec": {"displayName": "Cloud administrators"}});
        match api
            .create_object(&cx, &keystone::target(tenants(), None), o)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let user = match id.user(BOOTSTRAP_ADMIN).await? {
        Some(u) => u,
        None => {
            let o = json!({"apiVersion": h8s_types::tenancy::API_VERSION, "kind": "User",
                "metadata": {"name": BOOTSTRAP_ADMIN},
                "spec": {"tenant": t, "displayName": "Cloud administrator", "roles": [ADMIN_ROLE]}});
            match api
                .create_object(&cx, &keystone::target(users(), None), o)
                .await
            {
                Ok(u) => u,
                Err(e) if e.code == 409 => id
                    .user(BOOTSTRAP_ADMIN)
                    .await?
                    .ok_or_else(|| ApiError::internal("the admin user vanished"))?,
                Err(e) => return Err(e),
            }
        }
    };
    let has_pw = password::read(&*id.store, BOOTSTRAP_ADMIN)
        .await?
        .is_some_and(|r| r.user_uid == obj::uid(&user));
    let path = data_dir.join(ADMIN_PASSWORD_FILE);
    if !has_pw {
        let pw = tokens::audit_id();
        password::set(&*id.store, BOOTSTRAP_ADMIN, obj::uid(&user), pw.clone()).await?;
        write_secret(&path, &pw)
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}

fn write_secret(path: &Path, s: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{s}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
