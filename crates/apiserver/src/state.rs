//! The server state every request handler works on. It sits below the handlers
//! (`rest`, `watch`, `patch`, `svc`) and the dispatcher (`api`), so none of them imports
//! the one above it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::admission::Admission;
use crate::auth::{Authenticator, Authorizer};
use crate::metrics::Metrics;
use crate::seams::{CsrSigner, Reviewer};
use crate::stream::SubresourceHandler;

/// The server state behind every request.
pub struct Api {
    pub(crate) store: Arc<dyn h8s_store::Store>,
    pub(crate) authn: Arc<dyn Authenticator>,
    pub(crate) authz: Arc<dyn Authorizer>,
    pub(crate) admission: Vec<Arc<dyn Admission>>,
    pub(crate) metrics: Metrics,
    pub(crate) ready: std::sync::atomic::AtomicBool,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
    pub(crate) service_cidr: crate::cidr::Cidr,
    /// The node ports Services are given (`--service-node-port-range`).
    pub(crate) node_ports: std::ops::RangeInclusive<i64>,
    /// Serialises Service address allocation with the write that records it; holds the
    /// offset in the service CIDR the next dynamic cluster IP is tried at (0: not chosen yet).
    pub(crate) svc_lock: tokio::sync::Mutex<u32>,
    /// Delegated subresources by (resource, subresource).
    pub(crate) streams: HashMap<(String, String), Arc<dyn SubresourceHandler>>,
    /// Signs approved CertificateSigningRequests (`None`: they stay approved, unsigned).
    pub(crate) csr_signer: Option<Arc<dyn CsrSigner>>,
    /// (auth) The ServiceAccount token issuer, for OIDC discovery
    /// (`/.well-known/openid-configuration`, `/openid/v1/jwks`).
    pub(crate) openid: Option<Arc<crate::sa_token::ServiceAccountTokens>>,
    /// Answers create-only review kinds (TokenReview…) by (group, resource).
    pub(crate) reviewers: HashMap<(String, String), Arc<dyn Reviewer>>,
    /// (audit) The audit log, when `--audit-log-path` is set.
    pub(crate) audit: Option<Arc<crate::audit::AuditLog>>,
    /// (identity) The built-in identity service answering `/v3` (Keystone v3).
    pub(crate) identity: Option<Arc<crate::identity::Identity>>,
    /// (identity) An external Keystone answering `/v3` and checking its tokens.
    pub(crate) keystone: Option<Arc<crate::identity::external::External>>,
    /// What `/version` reports about the build.
    pub(crate) build: crate::api::BuildInfo,
    /// (rbac) The RBAC index, which a write of an RBAC object waits for.
    pub(crate) rbac: Option<Arc<crate::rbac::RbacAuthorizer>>,
    /// `metrics.k8s.io`, scraped from node agents.
    pub(crate) metrics_api: Option<Arc<crate::metrics_api::MetricsApi>>,
    /// The custom resources served now (kept by `crd::controller`).
    pub(crate) crds: crate::crd::Registry,
    /// (webhooks) Admission webhooks and ValidatingAdmissionPolicies, from watches.
    pub(crate) dynamic: Option<Arc<crate::webhook::Dynamic>>,
    /// (limits) Priority and fairness, connection and watch limits.
    pub(crate) flow: Arc<crate::flow::Flow>,
    /// (aggregation) The service-backed APIServices requests are proxied to.
    pub(crate) aggregator: Arc<crate::aggregator::Aggregator>,
    /// Watch events encoded once for every watch that sends the same bytes.
    pub(crate) watch_encodings: crate::watch::SharedEncodings,
    /// The watch cache in front of the store (its size is in `/metrics`).
    pub(crate) watch_cache: Option<Arc<h8s_store::WatchCache>>,
}
