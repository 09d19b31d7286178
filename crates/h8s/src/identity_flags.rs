//! `h8s server` flags of identity: the built-in identity service (Tenants, Users,
//! Keystone v3 under `/v3`) or an external OpenStack Keystone (`--keystone-url`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// The identity flags.
#[derive(clap::Args, Debug, Clone)]
pub struct IdentityArgs {
    /// How long identity tokens live (Keystone's default: 12h).
    #[arg(long = "token-ttl", default_value = "12h", value_parser = crate::agent::parse_duration)]
    pub token_ttl: Duration,
    /// The tenant (Keystone project) whose users with the `admin` role are cluster
    /// admins (`system:masters`), for the built-in identity and an external Keystone.
    #[arg(long = "cloud-admin-tenant", default_value = "admin")]
    pub cloud_admin_tenant: String,
    /// Turns the built-in identity service off (no `/v3`, no identity tokens).
    #[arg(long = "disable-identity")]
    pub disable_identity: bool,
    /// An external OpenStack Keystone (`http(s)://host:port[/path]/v3`) instead of the
    /// built-in identity: bearer tokens are Keystone tokens, `/v3` is passed to it.
    #[arg(long = "keystone-url", conflicts_with = "disable_identity")]
    pub keystone_url: Option<String>,
    /// The CA certificates (PEM) an `https` Keystone's certificate must chain to.
    #[arg(long = "keystone-ca", requires = "keystone_url")]
    pub keystone_ca: Option<PathBuf>,
    /// The Keystone domain (id) users and projects must be in.
    #[arg(long = "keystone-domain", default_value = "default")]
    pub keystone_domain: String,
    /// How long a validated Keystone token is trusted without asking Keystone again
    /// (a user deleted in Keystone loses access within it; ≤ 30 s is advised).
    #[arg(long = "keystone-cache-ttl", default_value = "30s", value_parser = crate::agent::parse_duration)]
    pub keystone_cache_ttl: Duration,
    /// The longest wait for one answer from Keystone.
    #[arg(long = "keystone-timeout", default_value = "5s", value_parser = crate::agent::parse_duration)]
    pub keystone_timeout: Duration,
}

impl IdentityArgs {
    /// The built-in identity service's setting (off with an external Keystone).
    pub fn config(&self) -> Option<h8s_apiserver::IdentityConfig> {
        (!self.disable_identity && self.keystone_url.is_none()).then(|| {
            h8s_apiserver::IdentityConfig {
                token_ttl: self.token_ttl,
                cloud_admin_tenant: self.cloud_admin_tenant.clone(),
                ..Default::default()
            }
        })
    }

    /// The external Keystone's setting, if one is named.
    pub fn keystone(&self) -> anyhow::Result<Option<h8s_apiserver::KeystoneConfig>> {
        let Some(url) = &self.keystone_url else {
            return Ok(None);
        };
        let ca_pem = match &self.keystone_ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        Ok(Some(h8s_apiserver::KeystoneConfig {
            url: url.clone(),
            ca_pem,
            cloud_admin_project: self.cloud_admin_tenant.clone(),
            domain_id: self.keystone_domain.clone(),
            cache_ttl: self.keystone_cache_ttl,
            timeout: self.keystone_timeout,
        }))
    }
}
