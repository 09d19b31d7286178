//! Pure API machinery for the h8s API server: selectors, patches, server-side apply and
//! managed fields. No I/O, no async, no clock: everything works on `serde_json::Value`.
//!
//! # Selectors
//! - [`LabelSelector::parse`]: a `labelSelector` query string (`a=b`, `a==b`, `a!=b`,
//!   `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-joined) with Kubernetes'
//!   grammar, validation and error texts; [`LabelSelector::from_json`] for a
//!   `metav1.LabelSelector` (`null` matches nothing, `{}` everything);
//!   [`LabelSelector::matches`] / [`LabelSelector::matches_object`].
//! - [`FieldSelector::parse`]: a `fieldSelector` string (`a=b`, `a==b`, `a!=b`, `\`-escapes);
//!   [`FieldSelector::check_supported`] refuses fields a kind does not index;
//!   [`FieldSelector::matches`] takes the kind's field accessor.
//!
//! # Patches
//! - [`PatchType::from_content_type`] recognises the four PATCH media types.
//! - [`apply_patch`] applies a JSON Patch ([`JsonPatch`], RFC 6902), a JSON merge patch
//!   ([`merge_patch`], RFC 7386) or a strategic merge patch ([`strategic_merge_patch`]) body.
//! - [`Schema::for_kind`] gives the patch/list metadata of a built-in kind: the table of
//!   `x-kubernetes-patch-strategy`/`-patch-merge-key`/`-list-type`/`-list-map-keys`/`-map-type`
//!   facts of Kubernetes 1.33 ([`Schema::fields`] lists them, e.g. for OpenAPI generation).
//!
//! # Server-side apply and managed fields
//! - [`apply`]: merge an applied configuration into the live object (or create), detect
//!   conflicts with other managers, `force`, prune fields no longer applied, and maintain
//!   `metadata.managedFields` (FieldsV1).
//! - [`update_managed_fields`]: record an ordinary create/update/patch by a `fieldManager`.
//! - [`field_set`], [`FieldSet`]: the FieldsV1 set algebra underneath.
//!
//! ```
//! use h8s_machinery::{apply, apply_patch, LabelSelector, Manager, PatchType, Schema};
//! use serde_json::json;
//!
//! let sel = LabelSelector::parse("app=web,tier in (fe,be)").unwrap();
//! assert!(sel.matches_object(&json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}})));
//!
//! let pod = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b"}]}});
//! let body = br#"{"spec":{"containers":[{"name":"a","image":"a:2"}]}}"#;
//! let out = apply_patch(PatchType::Strategic, &pod, body, Schema::for_kind("", "Pod")).unwrap();
//! assert_eq!(out["spec"]["containers"][1]["name"], "b"); // merged by name, not replaced
//!
//! let mgr = Manager { name: "kubectl", api_version: "v1", subresource: "", time: "2024-01-01T00:00:00Z" };
//! let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
//! let created = apply(Schema::for_kind("", "ConfigMap"), None, &cm, &mgr, false).unwrap();
//! assert_eq!(created["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:data": {"f:k": {}}}));
//! ```
//!
//! # Errors → Kubernetes `Status`
//! Every fallible function returns [`Error`]; [`Error::code`] and [`Error::reason`] give the
//! answer kube-apiserver sends for the same input:
//!
//! | variant | code | reason |
//! |---|---|---|
//! | [`Error::InvalidLabelSelector`], [`Error::InvalidFieldSelector`], [`Error::FieldLabelNotSupported`], [`Error::BadPatch`] | 400 | BadRequest |
//! | [`Error::Conflict`] (apply conflicts; [`Conflicts::causes`] gives `details.causes`) | 409 | Conflict |
//! | [`Error::TooLarge`] (over 10,000 JSON Patch operations) | 413 | RequestEntityTooLarge |
//! | [`Error::PatchNotApplicable`], [`Error::Invalid`] | 422 | Invalid |
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

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
pub use patch::{
    apply_patch, merge_patch, JsonPatch, PatchType, MAX_JSON_PATCH_COPY_BYTES,
    MAX_JSON_PATCH_OPERATIONS,
};
pub use patch_meta::{FieldMeta, ListType, Schema};
pub use selector::{
    escape_value, FieldOperator, FieldRequirement, FieldSelector, LabelSelector, Labels, Operator,
    Requirement,
};
pub use strategic::{strategic_merge_patch, strategic_merge_patch_value};
