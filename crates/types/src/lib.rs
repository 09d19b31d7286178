//! API kinds, the resource table and validation: no I/O.
//!
//! - [`resources`]: every served resource with its discovery details and
//!   field-selector support.
//! - [`network`]: the h8s kinds (`Network`, `Namespace.spec.network`).
#![forbid(unsafe_code)]

pub mod network;
pub mod resources;

pub use network::{Network, NetworkList, NetworkPhase, NetworkSpec, NetworkStatus, Subnet};
pub use resources::{Resource, Subresource};
