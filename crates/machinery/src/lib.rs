//! Pure API machinery for the h8s API server: selectors, patches, server-side apply and
//! managed fields. No I/O, no async: everything works on `serde_json::Value`.
//!
//! - [`LabelSelector`] / [`FieldSelector`]: `labelSelector` / `fieldSelector` query strings
//!   (and `metav1.LabelSelector` JSON) with Kubernetes' grammar and error texts.
//!
//! Every fallible function returns [`Error`]; [`Error::code`] and [`Error::reason`] give the
//! `Status` code and reason kube-apiserver would answer with (400 BadRequest for malformed
//! selectors and patches, 422 Invalid for patches that do not apply, 409 Conflict for
//! server-side apply conflicts).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod error;
mod fieldset;
mod patch;
mod patch_meta;
mod selector;
mod strategic;
mod validation;

pub use apply::{
    apply, field_set, managed_field_sets, update_managed_fields, Manager, LAST_APPLIED_ANNOTATION,
};
pub use error::{Conflict, Conflicts, Error, Result};
pub use fieldset::{path_string, FieldSet, Path, PathElement};
pub use patch::{apply_patch, merge_patch, JsonPatch, PatchType, MAX_JSON_PATCH_OPERATIONS};
pub use patch_meta::{FieldMeta, ListType, Schema};
pub use selector::{
    escape_value, FieldOperator, FieldRequirement, FieldSelector, LabelSelector, Labels, Operator,
    Requirement,
};
pub use strategic::{strategic_merge_patch, strategic_merge_patch_value};
