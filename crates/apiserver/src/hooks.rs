//! What the namespace bootstrap (`ns.rs`) asks of a kind while it writes the default
//! namespaces: the kind's strategy's defaults and create preparation.

use h8s_types::Resource;
use serde_json::Value;

use crate::auth::UserInfo;

/// Fills defaults a new or updated object gets.
pub fn default(res: &Resource, o: &mut Value) {
    crate::strategy::of(res).default(res, o);
}

/// Resets what a create may not set and derives what Kubernetes derives then.
pub fn initial_status(res: &Resource, o: &mut Value) {
    crate::strategy::of(res).prepare_for_create(res, &UserInfo::default(), o);
}
