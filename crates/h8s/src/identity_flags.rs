//! `h8s server` flags of the built-in identity service (Tenants, Users, Keystone v3
//! under `/v3`).

/// The identity service's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct IdentityArgs {
    /// How long identity tokens live (Keystone's default: 12h).
    #[arg(long = "token-ttl", default_value = "12h", value_parser = crate::agent::parse_duration)]
    pub token_ttl: std::time::Duration,
    /// The tenant whose users with the `admin` role are cluster admins (`system:masters`).
    #[arg(long = "cloud-admin-tenant", default_value = "admin")]
    pub cloud_admin_tenant: String,
    /// Turns the built-in identity service off (no `/v3`, no identity tokens).
    #[arg(long = "disable-identity")]
    pub disable_identity: bool,
}

impl IdentityArgs {
    /// The API server's setting.
    pub fn config(&self) -> Option<h8s_apiserver::IdentityConfig> {
        (!self.disable_identity).then(|| h8s_apiserver::IdentityConfig {
            token_ttl: self.token_ttl,
            cloud_admin_tenant: self.cloud_admin_tenant.clone(),
            ..Default::default()
        })
    }
}
