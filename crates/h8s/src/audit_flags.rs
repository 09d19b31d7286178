//! `h8s server` flags of the audit log (kube-apiserver's names).

use anyhow::Context;

/// The audit log's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Write one JSON line per request (an `audit.k8s.io/v1` Event) to this file; `-` for
    /// standard output. Unset: no audit log.
    #[arg(long = "audit-log-path")]
    pub audit_log_path: Option<std::path::PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long = "audit-log-maxsize", default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs to keep (0: all).
    #[arg(long = "audit-log-maxbackup", default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// An `audit.k8s.io/v1 Policy` (YAML or JSON) choosing the level (None, Metadata) per
    /// request; unset: every request at Metadata.
    #[arg(long = "audit-policy-file")]
    pub audit_policy_file: Option<std::path::PathBuf>,
}

impl AuditArgs {
    /// The API server's setting.
    pub fn config(&self) -> anyhow::Result<Option<h8s_apiserver::AuditConfig>> {
        let Some(path) = &self.audit_log_path else {
            return Ok(None);
        };
        let mut cfg = h8s_apiserver::AuditConfig::new(path.clone());
        cfg.max_size = self.audit_log_maxsize.saturating_mul(1024 * 1024);
        cfg.max_backups = self.audit_log_maxbackup;
        if let Some(p) = &self.audit_policy_file {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the audit policy {}", p.display()))?;
            cfg.policy = h8s_apiserver::AuditPolicy::parse(&text)?;
        }
        Ok(Some(cfg))
    }
}
