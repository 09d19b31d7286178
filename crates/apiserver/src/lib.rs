//! The Kubernetes API server of h8s.
//!
//! A request goes through one chain: TLS → authentication ([`Authenticator`]) →
//! authorization ([`Authorizer`]) → admission ([`Admission`]) → the generic registry
//! (kinds are data: `h8s_types::resources`) → the store (`h8s_store::Store`). Every
//! error is a Kubernetes `v1 Status`.
#![forbid(unsafe_code)]

mod admission;
mod aggregator;
mod api;
mod apiservice;
mod audit;
mod auth;
mod body;
mod bootstrap;
pub mod cel;
mod cidr;
mod crd;
mod csr;
mod ctx;
mod discovery;
mod error;
mod eviction;
mod filter;
mod flow;
mod gc;
mod hooks;
mod identity;
mod ipaddr;
mod kinds;
mod metrics;
pub mod metrics_api;
mod nodeproxy;
mod ns;
mod obj;
mod openapi;
mod patch;
mod pki;
mod proto;
mod quota;
mod rbac;
mod response;
mod rest;
mod review;
mod route;
mod sa_token;
mod seams;
mod server;
mod state;
mod strategy;
mod stream;
mod svc;
mod tenancy;
mod util;
mod watch;
mod webhook;

pub use admission::{
    Admission, LimitRangeHook, NamespaceLifecycle, Operation, PluginConfig as AdmissionConfig,
    QuotaHook, Request as AdmissionRequest, Tenancy as TenancyAdmission, TOKEN_MOUNT_PATH,
    TOKEN_VOLUME_PREFIX,
};
pub use aggregator::{AggregatorConfig, FRONT_PROXY_CLIENT_CN};
pub use api::{BuildInfo, GIT_VERSION, KUBE_MINOR};
pub use audit::{AuditConfig, AuditError, AuditLog, Level as AuditLevel, Policy as AuditPolicy};
pub use auth::{
    AllowAuthenticated, Attributes, Authenticator, Authn, AuthnChain, Authorizer, BootstrapGuard,
    BootstrapTokenAuthenticator, ClientCertAuthenticator, ConnInfo, Decision, FnFilter, JoinToken,
    ObjectFilter, RequestInfo, TokenAuthenticator, UserInfo, AUTHENTICATED_GROUP,
    BOOTSTRAPPERS_GROUP, TENANT_GROUP_PREFIX,
};
pub use csr::{
    ClusterCaSigner, CsrApproverConfig, KUBELET_SERVING, KUBE_APISERVER_CLIENT,
    KUBE_APISERVER_CLIENT_KUBELET,
};
pub use error::{ApiError, Cause, Details, Error, Result};
pub use flow::LimitsConfig;
pub use identity::external::{
    KeystoneConfig, MAX_CACHE as KEYSTONE_MAX_CACHE, PROJECT_ID_ANNOTATION, ROLE_GROUP_PREFIX,
    USER_ID_ANNOTATION,
};
pub use identity::{
    Identity, IdentityAuthenticator, IdentityConfig, ADMIN_PASSWORD_FILE, BOOTSTRAP_ADMIN,
};
pub use nodeproxy::{NodeProxy, KUBELET_CLIENT_CN};
pub use pki::{
    kubeconfig, kubeconfig_with_cert, needs_renewal, random_token, Pki, CLIENT_CERT_LIFETIME,
    SERVING_CERT_LIFETIME,
};
pub use rbac::node::{NodeAuthorizer, NodeRestriction};
pub use rbac::{RbacAuthorizer, Union};
pub use response::Body;
pub use sa_token::{
    Claims as ServiceAccountClaims, ObjectRef, ServiceAccountAuthenticator, ServiceAccountConfig,
    ServiceAccountTokens, TokenError, TokenSpec,
};
pub use seams::{CsrSigner, Reviewer};
pub use server::{Config, Server};
pub use state::Api;
pub use stream::{SubresourceHandler, SubresourceRequest};
pub use svc::{DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR};
pub use tenancy::{
    confined_tenant, label_tenant, Owned, TenantGuard, TenantIndex, MASTERS_GROUP, TENANT_LABEL,
};

#[cfg(test)]
mod fuzz_tests;
