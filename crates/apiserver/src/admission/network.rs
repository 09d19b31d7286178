//! NamespaceNetwork (an h8s plugin): a Namespace's `spec.network` must name an existing
//! Network of the Namespace's own tenant, so a namespace never joins a segment that does not
//! exist or that another tenant owns. A namespace of no tenant (a cluster admin's, as in the
//! seeds' manifests) may name any Network; a tenant's namespace never names the system
//! Network ([`h8s_types::SYSTEM_PODS_NETWORK`]). Namespaces without `spec.network` use their tenant's
//! default Network, which the network controller creates on demand.

use futures::future::BoxFuture;
use serde_json::Value;

use super::lookup::Lookup;
use super::{Admission, Operation, Request};
use crate::error::{ApiError, Cause};

/// The plugin.
pub struct NamespaceNetwork {
    lookup: Lookup,
}

impl NamespaceNetwork {
    pub(crate) fn new(lookup: Lookup) -> Self {
        NamespaceNetwork { lookup }
    }
}

fn invalid(name: &str, value: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "Namespace",
        "",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value:?}: {why}"),
            field: "spec.network".into(),
        }],
    )
}

impl Admission for NamespaceNetwork {
    fn admit<'a>(
        &'a self,
        req: &'a Request<'a>,
        obj: Option<&'a mut Value>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if req.res.plural != "namespaces"
                || !req.res.group.is_empty()
                || req.sub.is_some()
                || req.op == Operation::Delete
            {
                return Ok(());
            }
            let Some(obj) = obj else { return Ok(()) };
            let Some(net) = h8s_types::network::namespace_network(obj) else {
                return Ok(());
            };
            // An update that keeps the Network it had is not checked again: the Network may
            // be on its way out while the namespace still uses it.
            if req.op == Operation::Update
                && req.old.and_then(h8s_types::network::namespace_network) == Some(net)
            {
                return Ok(());
            }
            let Some(network) = self.lookup.get("", "networks", None, net).await? else {
                return Err(invalid(
                    req.name,
                    net,
                    &format!("network {net:?} not found"),
                ));
            };
            if network.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(invalid(
                    req.name,
                    net,
                    &format!("network {net:?} is being deleted"),
                ));
            }
            // The namespace's tenant: its label (set by the server), else the caller's.
            let ns_tenant = h8s_types::network::namespace_tenant(obj)
                .map(str::to_string)
                .or_else(|| req.user.tenant().map(str::to_string));
            let net_tenant = network
                .pointer("/spec/tenantID")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty());
            // The system Network is the API server's reach into the cluster (webhooks and
            // aggregated servers run there): no tenant's namespace joins it.
            if net == h8s_types::SYSTEM_PODS_NETWORK && ns_tenant.is_some() {
                return Err(invalid(
                    req.name,
                    net,
                    &format!(
                        "network {net:?} is the cluster's system Network; a tenant's namespace \
                         cannot join it"
                    ),
                ));
            }
            // A namespace of no tenant (made by a cluster admin) may join any Network: that
            // is the operator's decision. A tenant's namespace joins only its own, and another
            // tenant's Network is "not found" (its existence is not the caller's business;
            // the tenancy plugin, earlier in the chain, answers the same).
            if let (Some(owner), Some(ns_tenant)) = (net_tenant, ns_tenant.as_deref()) {
                if ns_tenant != owner {
                    return Err(invalid(
                        req.name,
                        net,
                        &format!("network {net:?} not found"),
                    ));
                }
            }
            Ok(())
        })
    }
}
