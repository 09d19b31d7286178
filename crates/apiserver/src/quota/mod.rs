//! Enforcement of LimitRanges, ResourceQuotas and Tenant quotas at admission: h8s's
//! implementations of the [`crate::admission::LimitRangeHook`] and
//! [`crate::admission::QuotaHook`] seams, plugged in by default.
//!
//! - [`LimitRanges`]: Kubernetes' LimitRanger (defaults, min/max, ratio; 403 in its words).
//! - [`Quotas`]: Kubernetes' ResourceQuota admission over the namespace's ResourceQuotas
//!   and its tenant's `spec.quota`, charged with compare-and-swap writes of `status.used`.
//!
//! What a write uses is computed by `h8s_types::quota`, which the status controllers
//! share, so charging at admission and recounting afterwards agree.

mod limitrange;
mod resourcequota;
mod tenant;

use std::sync::Arc;

pub use limitrange::LimitRanges;
pub use resourcequota::Quotas;

use crate::admission::{Lookup, PluginConfig};
use crate::tenancy::TenantIndex;

/// Fills the hooks `cfg` leaves empty with h8s's enforcement. The tenant quota follows
/// Tenants with a watch that ends when `shutdown` turns true.
pub(crate) fn install(
    cfg: &mut PluginConfig,
    store: Arc<dyn h8s_store::Store>,
    index: Arc<TenantIndex>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if cfg.limit_ranges.is_none() {
        cfg.limit_ranges = Some(Arc::new(LimitRanges));
    }
    if cfg.quota.is_none() {
        let lookup = Lookup::following(
            store.clone(),
            shutdown,
            &[(h8s_types::tenancy::GROUP, "tenants")],
        );
        cfg.quota = Some(Arc::new(Quotas::new(store, index, lookup)));
    }
}
