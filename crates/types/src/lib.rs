//! API kinds, the resource table and validation: no I/O.
//!
//! - [`resources`]: every served resource with its discovery details and
//!   field-selector support.
#![forbid(unsafe_code)]

pub mod resources;

pub use resources::{Resource, Subresource};
