//! The registry strategy of `apiextensions.k8s.io/v1 CustomResourceDefinition`:
//! defaults, validation (names, group, scope, versions, structural schemas, CEL rules
//! that must compile), the cleanup finalizer and the initial status. The definition is
//! served once the [controller](super::controller) sees it and sets its conditions.

use h8s_types::crd::{self as types, CLEANUP_FINALIZER};
use h8s_types::validation::{ErrorType, FieldError};
use h8s_types::{FieldErrors, Resource};
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::obj;
use crate::strategy::{generic_prepare_for_update, Strategy, Sub};

/// The CustomResourceDefinition kind.
pub(crate) struct Crd;

/// Errors of the definition beyond its shape: groups the server serves itself, CEL rules
/// that do not compile.
fn extra_checks(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let group = o
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if h8s_types::resources::groups()
        .iter()
        .any(|g| g.name == group)
    {
        errs.push(FieldError::invalid(
            "spec.group",
            group,
            "is served by the API server itself and cannot be used for custom resources",
        ));
    }
    let versions = o
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, v) in versions.iter().enumerate() {
        let Some(raw) = v.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        let schema = types::Schema::parse(raw);
        let bad = match crate::cel::SchemaRules::compile(&schema) {
            Err(bad) => bad,
            // Compiled: the rules are type-checked against the schema; on an update,
            // rules the stored definition already had are not (kube-apiserver ratchets).
            Ok(_) => {
                let before: Vec<String> = old
                    .map(|o| {
                        let mut out = Vec::new();
                        collect_rules(&o["spec"]["versions"], &mut out);
                        out
                    })
                    .unwrap_or_default();
                crate::cel::SchemaRules::type_errors(&schema, &|r| before.iter().any(|b| b == r))
            }
        };
        for c in bad {
            errs.push(FieldError {
                kind: ErrorType::Invalid,
                field: format!("spec.versions[{i}].schema.openAPIV3Schema.{}", c.path),
                bad_value: Some(Value::String(c.rule)),
                detail: c.message,
            });
        }
    }
}

/// Every `x-kubernetes-validations` rule text under `v` (bounded depth).
fn collect_rules(v: &Value, out: &mut Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>, depth: usize) {
        if depth > 100 {
            return;
        }
        match v {
            Value::Object(m) => {
                if let Some(rs) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                    out.extend(
                        rs.iter()
                            .filter_map(|r| r["rule"].as_str().map(str::to_string)),
                    );
                }
                for x in m.values() {
                    walk(x, out, depth + 1);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out, depth + 1)),
            _ => {}
        }
    }
    walk(v, out, 0);
}

fn result(mut errs: FieldErrors) -> Result<(), FieldErrors> {
    // One message per field and text, as kube-apiserver aggregates them.
    let mut seen = std::collections::HashSet::new();
    errs.0.retain(|e| seen.insert(e.to_string()));
    errs.into_result()
}

impl Strategy for Crd {
    fn default(&self, res: &Resource, o: &mut Value) {
        h8s_types::defaults::apply(res, o);
        types::apply_crd_defaults(o);
    }

    fn prepare_for_create(&self, res: &Resource, _user: &UserInfo, o: &mut Value) {
        h8s_types::defaults::prepare_for_create(res, o);
        let storage: Vec<Value> = o
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        o["status"] = json!({
            "acceptedNames": {"plural": "", "kind": ""},
            "conditions": [],
            "storedVersions": storage,
        });
        let m = obj::meta_mut(o);
        let fins = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(a) = fins.as_array_mut() {
            if !a.iter().any(|f| f == CLEANUP_FINALIZER) {
                a.push(json!(CLEANUP_FINALIZER));
            }
        }
    }

    fn prepare_for_update(&self, res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        generic_prepare_for_update(res, sub, old, new);
        if sub.is_none() {
            // A new storage version joins the stored versions at once.
            let d = types::Definition::parse(new);
            if let Some(sv) = d.storage_version() {
                let stored = new
                    .pointer_mut("/status/storedVersions")
                    .and_then(Value::as_array_mut);
                match stored {
                    Some(a) => {
                        if !a.iter().any(|x| x == sv.name.as_str()) {
                            a.push(json!(sv.name));
                        }
                    }
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            let st = m.entry("status").or_insert_with(|| json!({}));
                            st["storedVersions"] = json!([sv.name]);
                        }
                    }
                }
            }
        }
    }

    fn validate_create(&self, res: &Resource, o: &Value) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        h8s_types::validation::validate_object_meta(res, o, &mut errs);
        errs.0.extend(types::validate_crd(o, None));
        extra_checks(o, None, &mut errs.0);
        result(errs)
    }

    fn validate_update(
        &self,
        res: &Resource,
        sub: Option<Sub>,
        new: &Value,
        old: &Value,
    ) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        h8s_types::validation::validate_object_meta(res, new, &mut errs);
        h8s_types::validation::validate_object_meta_update(new, old, &mut errs);
        if sub.is_none() {
            errs.0.extend(types::validate_crd(new, Some(old)));
            extra_checks(new, Some(old), &mut errs.0);
        }
        result(errs)
    }
}
