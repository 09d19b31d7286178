//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) as data: the definition parsed
//! into what the server needs to serve its versions, the definition's own validation and
//! defaults (names, group, versions, scope, subresources, printer columns, structural
//! schemas), and what a version's schema does to custom objects ([`value`]).
//!
//! CEL rules (`x-kubernetes-validations`) are parsed here but compiled and run by the API
//! server.

pub mod jsonpath;
pub mod schema;
pub mod value;

use serde_json::{json, Value};

pub use schema::{check_structural, Rule, Schema};

use crate::validation::names;
use crate::validation::FieldError;

/// The finalizer that keeps a definition until its objects are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The names of a definition (`spec.names`, or `status.acceptedNames`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

impl Names {
    fn parse(v: &Value) -> Names {
        let kind = str_at(v, "kind");
        Names {
            plural: str_at(v, "plural"),
            singular: match str_at(v, "singular") {
                s if s.is_empty() => kind.to_ascii_lowercase(),
                s => s,
            },
            list_kind: match str_at(v, "listKind") {
                s if s.is_empty() && !kind.is_empty() => format!("{kind}List"),
                s => s,
            },
            kind,
            short_names: strs(v.get("shortNames")),
            categories: strs(v.get("categories")),
        }
    }

    /// As `status.acceptedNames` shows them.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "plural": self.plural,
            "singular": self.singular,
            "kind": self.kind,
            "listKind": self.list_kind,
        });
        if !self.short_names.is_empty() {
            v["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            v["categories"] = json!(self.categories);
        }
        v
    }
}

/// An `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// The `scale` subresource's paths, without their leading dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One version of a definition.
#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub deprecated: bool,
    pub deprecation_warning: Option<String>,
    /// The parsed `openAPIV3Schema` (an empty schema that preserves everything when the
    /// definition has none, which v1 does not allow anyway).
    pub schema: Schema,
    /// The schema as written, for OpenAPI publication.
    pub raw_schema: Value,
    pub status: bool,
    pub scale: Option<ScaleSpec>,
    pub columns: Vec<Column>,
    /// `selectableFields` (1.30+): extra field-selector paths, without the leading dot.
    pub selectable_fields: Vec<String>,
}

/// A CustomResourceDefinition, parsed.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub uid: String,
    pub group: String,
    pub namespaced: bool,
    pub names: Names,
    pub versions: Vec<Version>,
    /// `None` or `Webhook`.
    pub conversion: String,
    /// `spec.conversion.webhook.clientConfig` as written (`Webhook` conversion).
    pub conversion_client_config: Option<Value>,
    /// The definition is being deleted.
    pub terminating: bool,
}

fn str_at(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn strip_dot(s: &str) -> String {
    s.strip_prefix('.').unwrap_or(s).to_string()
}

impl Definition {
    /// Parses a (validated) definition object.
    pub fn parse(o: &Value) -> Definition {
        let spec = o.get("spec").cloned().unwrap_or(Value::Null);
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(parse_version).collect())
            .unwrap_or_default();
        Definition {
            name: o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            uid: o
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            group: str_at(&spec, "group"),
            namespaced: str_at(&spec, "scope") != "Cluster",
            names: Names::parse(spec.get("names").unwrap_or(&Value::Null)),
            versions,
            conversion: spec
                .pointer("/conversion/strategy")
                .and_then(Value::as_str)
                .unwrap_or("None")
                .to_string(),
            conversion_client_config: spec.pointer("/conversion/webhook/clientConfig").cloned(),
            terminating: o.pointer("/metadata/deletionTimestamp").is_some(),
        }
    }

    /// The version objects are stored in.
    pub fn storage_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.storage)
    }

    /// Served versions, in Kubernetes' version priority order (GA > beta > alpha, higher
    /// numbers first, others alphabetically last), the preferred first.
    pub fn served_versions(&self) -> Vec<&Version> {
        let mut v: Vec<&Version> = self.versions.iter().filter(|v| v.served).collect();
        v.sort_by_key(|a| version_priority(&a.name));
        v
    }
}

/// Sort key of Kubernetes' version priority (`v1` > `v1beta2` > `v1beta1` > `v1alpha1` >
/// others by name).
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = |s: &str| -> Option<(u8, i64, i64)> {
        let rest = s.strip_prefix('v')?;
        let n = rest.chars().take_while(char::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let major: i64 = rest[..n].parse().ok()?;
        let tail = &rest[n..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (i, pre) in ["beta", "alpha"].iter().enumerate() {
            if let Some(x) = tail.strip_prefix(pre) {
                if !x.is_empty() && x.chars().all(|c| c.is_ascii_digit()) {
                    return Some((1 + i as u8, -major, -x.parse::<i64>().ok()?));
                }
            }
        }
        None
    };
    match parse(v) {
        Some((c, a, b)) => (c, a, b, String::new()),
        None => (9, 0, 0, v.to_string()),
    }
}

fn parse_version(v: &Value) -> Version {
    let raw_schema = v
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let scale = v.pointer("/subresources/scale").map(|s| ScaleSpec {
        spec_replicas: strip_dot(&str_at(s, "specReplicasPath")),
        status_replicas: strip_dot(&str_at(s, "statusReplicasPath")),
        label_selector: s
            .get("labelSelectorPath")
            .and_then(Value::as_str)
            .map(strip_dot),
    });
    Version {
        name: str_at(v, "name"),
        served: v.get("served").and_then(Value::as_bool).unwrap_or(false),
        storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
        deprecated: v
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        deprecation_warning: v
            .get("deprecationWarning")
            .and_then(Value::as_str)
            .map(str::to_string),
        schema: Schema::parse(&raw_schema),
        raw_schema,
        status: v.pointer("/subresources/status").is_some(),
        scale,
        columns: v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| Column {
                        name: str_at(c, "name"),
                        ty: str_at(c, "type"),
                        format: str_at(c, "format"),
                        description: str_at(c, "description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: str_at(c, "jsonPath"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        selectable_fields: v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(strip_dot)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Defaults of a definition, as kube-apiserver's: conversion `None`, names' singular
/// and listKind, `status` with empty accepted names and stored versions.
pub fn apply_crd_defaults(o: &mut Value) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let conv = spec
        .entry("conversion")
        .or_insert_with(|| json!({"strategy": "None"}));
    if let Some(c) = conv.as_object_mut() {
        c.entry("strategy").or_insert(json!("None"));
    }
    if let Some(n) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = n
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !kind.is_empty() {
            n.entry("singular")
                .or_insert_with(|| json!(kind.to_ascii_lowercase()));
            n.entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
        }
    }
    if let Some(vs) = spec.get_mut("versions").and_then(Value::as_array_mut) {
        for v in vs {
            if let Some(cols) = v
                .get_mut("additionalPrinterColumns")
                .and_then(Value::as_array_mut)
            {
                for c in cols {
                    if let Some(m) = c.as_object_mut() {
                        m.entry("priority").or_insert(json!(0));
                    }
                }
            }
        }
    }
}

const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
const SCOPES: &[&str] = &["Cluster", "Namespaced"];

/// Validates a definition (create when `old` is `None`), with kube-apiserver's paths and
/// wording. CEL rules are compiled by the caller.
pub fn validate_crd(o: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut e = Vec::new();
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    let group = str_at(&spec, "group");
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let plural = str_at(&names, "plural");
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{plural}.{group}") {
        e.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        e.push(FieldError::required("spec.group", ""));
    } else {
        for m in names::dns1123_subdomain(&group) {
            e.push(FieldError::invalid("spec.group", group.as_str(), &m));
        }
        if !group.contains('.') {
            e.push(FieldError::invalid(
                "spec.group",
                group.as_str(),
                "should be a domain with at least one dot",
            ));
        }
    }
    let scope = str_at(&spec, "scope");
    if scope.is_empty() {
        e.push(FieldError::required("spec.scope", ""));
    } else if !SCOPES.contains(&scope.as_str()) {
        e.push(FieldError::not_supported(
            "spec.scope",
            scope.as_str(),
            SCOPES,
        ));
    }
    validate_names(&names, &mut e);
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        e.push(FieldError::invalid(
            "spec.versions",
            json!([]),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        e.push(FieldError::invalid(
            "spec.versions",
            json!(versions
                .iter()
                .map(|v| str_at(v, "name"))
                .collect::<Vec<_>>()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.is_empty()
        && !versions
            .iter()
            .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        e.push(FieldError::invalid(
            "spec.versions",
            json!(versions
                .iter()
                .map(|v| str_at(v, "name"))
                .collect::<Vec<_>>()),
            "must have at least one served version",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let p = format!("spec.versions[{i}]");
        let vn = str_at(v, "name");
        if vn.is_empty() {
            e.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            for m in names::dns1035_label(&vn) {
                e.push(FieldError::invalid(format!("{p}.name"), vn.as_str(), &m));
            }
            if !seen.insert(vn.clone()) {
                e.push(FieldError::duplicate(format!("{p}.name"), vn.as_str()));
            }
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => e.push(FieldError::required(
                format!("{p}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => {
                let sp = format!("{p}.schema.openAPIV3Schema");
                e.extend(check_structural(s, &sp));
                check_defaults(s, &sp, &mut e);
            }
        }
        if let Some(sc) = v.pointer("/subresources/scale") {
            let sp = format!("{p}.subresources.scale");
            let spec_path = str_at(sc, "specReplicasPath");
            if spec_path.is_empty() {
                e.push(FieldError::required(format!("{sp}.specReplicasPath"), ""));
            } else if !spec_path.starts_with(".spec.") {
                e.push(FieldError::invalid(
                    format!("{sp}.specReplicasPath"),
                    spec_path.as_str(),
                    "should be a json path under .spec",
                ));
            }
            let st = str_at(sc, "statusReplicasPath");
            if st.is_empty() {
                e.push(FieldError::required(format!("{sp}.statusReplicasPath"), ""));
            } else if !st.starts_with(".status.") {
                e.push(FieldError::invalid(
                    format!("{sp}.statusReplicasPath"),
                    st.as_str(),
                    "should be a json path under .status",
                ));
            }
            if let Some(ls) = sc.get("labelSelectorPath").and_then(Value::as_str) {
                if !(ls.starts_with(".spec.") || ls.starts_with(".status.")) {
                    e.push(FieldError::invalid(
                        format!("{sp}.labelSelectorPath"),
                        ls,
                        "should be a json path under either .spec or .status",
                    ));
                }
            }
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, c) in cols.iter().enumerate() {
                let cp = format!("{p}.additionalPrinterColumns[{j}]");
                if str_at(c, "name").is_empty() {
                    e.push(FieldError::required(format!("{cp}.name"), ""));
                }
                let t = str_at(c, "type");
                if !COLUMN_TYPES.contains(&t.as_str()) {
                    e.push(FieldError::not_supported(
                        format!("{cp}.type"),
                        t.as_str(),
                        COLUMN_TYPES,
                    ));
                }
                let jp = str_at(c, "jsonPath");
                if jp.is_empty() {
                    e.push(FieldError::required(format!("{cp}.jsonPath"), ""));
                } else if let Err(m) = jsonpath::parse(&jp) {
                    e.push(FieldError::invalid(
                        format!("{cp}.jsonPath"),
                        jp.as_str(),
                        &m,
                    ));
                }
            }
        }
    }
    let conv = spec
        .pointer("/conversion/strategy")
        .and_then(Value::as_str)
        .unwrap_or("None");
    match conv {
        "None" => {
            if spec.pointer("/conversion/webhook").is_some() {
                e.push(FieldError::forbidden(
                    "spec.conversion.webhook",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        "Webhook" => {
            if spec.pointer("/conversion/webhook/clientConfig").is_none() {
                e.push(FieldError::required(
                    "spec.conversion.webhook",
                    "required when strategy is set to Webhook",
                ));
            }
        }
        other => e.push(FieldError::not_supported(
            "spec.conversion.strategy",
            other,
            &["None", "Webhook"],
        )),
    }
    if let Some(old) = old {
        let old_scope = old
            .pointer("/spec/scope")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if old_scope != scope {
            e.push(FieldError::immutable("spec.scope", scope.as_str()));
        }
        let old_group = old
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if old_group != group {
            e.push(FieldError::immutable("spec.group", group.as_str()));
        }
        // Stored versions may not disappear while objects may still be stored in them.
        let stored = strs(old.pointer("/status/storedVersions"));
        for s in stored {
            if !versions.iter().any(|v| str_at(v, "name") == s) {
                e.push(FieldError::invalid(
                    "status.storedVersions",
                    json!(s),
                    "must appear in spec.versions",
                ));
            }
        }
    }
    e
}

fn validate_names(n: &Value, e: &mut Vec<FieldError>) {
    let lower_label = |path: &str, v: &str, e: &mut Vec<FieldError>| {
        for m in names::dns1035_label(v) {
            e.push(FieldError::invalid(path, v, &m));
        }
    };
    let plural = str_at(n, "plural");
    if plural.is_empty() {
        e.push(FieldError::required("spec.names.plural", ""));
    } else {
        lower_label("spec.names.plural", &plural, e);
    }
    let singular = str_at(n, "singular");
    if !singular.is_empty() {
        lower_label("spec.names.singular", &singular, e);
    }
    let kind = str_at(n, "kind");
    if kind.is_empty() {
        e.push(FieldError::required("spec.names.kind", ""));
    } else if !kind.chars().all(|c| c.is_ascii_alphanumeric())
        || kind.chars().next().is_some_and(|c| c.is_ascii_digit())
    {
        e.push(FieldError::invalid(
            "spec.names.kind",
            kind.as_str(),
            "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    let list_kind = str_at(n, "listKind");
    if !list_kind.is_empty() && list_kind == kind {
        e.push(FieldError::invalid(
            "spec.names.listKind",
            list_kind.as_str(),
            "kind and listKind may not be the same",
        ));
    }
    for (i, s) in strs(n.get("shortNames")).iter().enumerate() {
        lower_label(&format!("spec.names.shortNames[{i}]"), s, e);
    }
    for (i, c) in strs(n.get("categories")).iter().enumerate() {
        lower_label(&format!("spec.names.categories[{i}]"), c, e);
    }
}

/// Defaults must be valid against their own schema (after pruning), and must not sit
/// under `metadata` (other than name/generateName, which kube also refuses).
fn check_defaults(raw: &Value, path: &str, e: &mut Vec<FieldError>) {
    fn walk(raw: &Value, path: &str, e: &mut Vec<FieldError>, depth: usize) {
        if depth > 64 {
            return;
        }
        if let Some(d) = raw.get("default") {
            let s = Schema::parse(raw);
            let mut pruned = d.clone();
            let unknown = value::prune(&s, &mut pruned);
            if !unknown.is_empty() {
                e.push(FieldError::invalid(
                    format!("{path}.default"),
                    d.clone(),
                    &format!("must not have unknown fields: {}", unknown.join(", ")),
                ));
            }
            let mut errs = Vec::new();
            value::validate(&s, d, &format!("{path}.default"), &mut errs);
            e.extend(errs);
        }
        if let Some(p) = raw.get("properties").and_then(Value::as_object) {
            for (k, sub) in p {
                walk(sub, &format!("{path}.properties[{k}]"), e, depth + 1);
            }
        }
        if let Some(i) = raw.get("items").filter(|i| i.is_object()) {
            walk(i, &format!("{path}.items"), e, depth + 1);
        }
        if let Some(a) = raw.get("additionalProperties").filter(|a| a.is_object()) {
            walk(a, &format!("{path}.additionalProperties"), e, depth + 1);
        }
    }
    walk(raw, path, e, 0);
}

#[cfg(test)]
mod tests;
