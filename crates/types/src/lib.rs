//! API kinds, the resource table and validation: no I/O.
//!
//! - [`openapi`]: `/openapi/v3` documents and `/openapi/v2` (JSON and protobuf).
//! - [`protobuf`]: protobuf request bodies (kubectl ≥ 1.32) decoded to JSON.
//! - [`quantity`]: resource quantities (`500m`, `1Gi`).
//! - [`quota`]: quota usage and checks, as kube's quota evaluators compute them.
//! - [`resources`]: every served resource with its discovery details and
//!   field-selector support.
//! - [`network`]: the h8s kinds (`Network`, `Namespace.spec.network`).
//! - [`tenancy`]: `tenancy.h8s.io/v1` `Tenant` and `User`.
//! - [`crd`]: CustomResourceDefinitions: their validation, structural schemas,
//!   and what a schema does to custom objects (defaults, pruning, validation).
//! - [`defaults`]: defaulting on every write, and what a create resets.
//! - [`autoscaling`]: HorizontalPodAutoscaler `v2` ↔ `v1` conversion and defaults.
//! - [`events`]: `events.k8s.io/v1` Event ↔ core `v1` Event conversion.
//! - [`schema`]: OpenAPI schemas of every kind with patch strategies and
//!   merge keys, walkable by field.
//! - [`strict`]: unknown and duplicate fields for `fieldValidation`.
//! - [`table`]: `meta.k8s.io/v1 Table` with kubectl's columns per kind.
//! - [`wire`]: JSON in kube-apiserver's field order (Go struct order).
//! - [`validation`]: create/update validation with Kubernetes' field errors
//!   and the 422 `Status` built from them.
#![forbid(unsafe_code)]

pub mod autoscaling;
pub mod crd;
pub mod defaults;
pub mod events;
pub mod network;
pub mod openapi;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod schema;
pub mod strict;
pub mod table;
pub mod tenancy;
pub mod validation;
pub mod wire;

pub use network::{
    default_network_name, effective_network, implicit_network, namespace_tenant, segment_id,
    NETWORK_FINALIZER, SYSTEM_PODS_CIDR, SYSTEM_PODS_NAMESPACE, SYSTEM_PODS_NETWORK, TENANT_LABEL,
};
pub use network::{Network, NetworkList, NetworkPhase, NetworkSpec, NetworkStatus, Subnet};
pub use resources::{Resource, Subresource};
pub use validation::{FieldError, FieldErrors};

#[cfg(test)]
mod fuzz_tests;
