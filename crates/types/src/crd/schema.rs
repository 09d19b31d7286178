//! The structural schema of a custom resource version (`openAPIV3Schema`), parsed once
//! from a CustomResourceDefinition, and the structural checks kube-apiserver applies to
//! it before accepting the definition.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::validation::FieldError;

/// `additionalProperties` of an object node.
#[derive(Debug, Clone, Default)]
pub enum Additional {
    /// Not given.
    #[default]
    Absent,
    /// `true`/`false`.
    Bool(bool),
    /// A schema for every value of the map.
    Schema(Box<Schema>),
}

/// One `x-kubernetes-validations` rule.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The CEL expression.
    pub rule: String,
    /// Fixed message when the rule is false.
    pub message: String,
    /// A CEL expression giving the message.
    pub message_expression: String,
    /// `FieldValueInvalid` (default), `FieldValueForbidden`, `FieldValueRequired`,
    /// `FieldValueDuplicate`.
    pub reason: String,
    /// A relative JSON path (`.spec.x`) the error is reported at.
    pub field_path: String,
    /// Transition rules also run on creates (oldSelf is then null).
    pub optional_old_self: bool,
}

impl Rule {
    /// Whether the rule refers to `oldSelf` (a transition rule: checked only on updates
    /// where the old value exists, unless `optionalOldSelf`).
    pub fn is_transition(&self) -> bool {
        mentions(&self.rule, "oldSelf")
    }
}

/// Whether `ident` appears in a CEL expression as an identifier (not inside a longer one).
pub(crate) fn mentions(expr: &str, ident: &str) -> bool {
    let b = expr.as_bytes();
    let mut from = 0;
    while let Some(i) = expr[from..].find(ident) {
        let s = from + i;
        let e = s + ident.len();
        let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let before = s == 0 || !ok(b[s - 1]);
        let after = e >= b.len() || !ok(b[e]);
        if before && after {
            return true;
        }
        from = e;
    }
    false
}

/// A parsed structural schema node.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// `type`, empty when not given (int-or-string, preserve-unknown nodes).
    pub ty: String,
    pub format: String,
    pub description: String,
    pub properties: BTreeMap<String, Schema>,
    pub items: Option<Box<Schema>>,
    pub additional: Additional,
    pub required: Vec<String>,
    pub enum_values: Vec<Value>,
    pub pattern: Option<(String, Regex)>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded: bool,
    /// `atomic` (default), `set`, `map`.
    pub list_type: String,
    pub list_map_keys: Vec<String>,
    /// `granular` (default) or `atomic`.
    pub map_type: String,
    pub rules: Vec<Rule>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
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

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

fn b(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

impl Schema {
    /// Parses a JSONSchemaProps document. Call [`check_structural`] first: parsing is
    /// lenient (a bad pattern is dropped here, reported there).
    pub fn parse(v: &Value) -> Schema {
        let list = |k: &str| -> Vec<Schema> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Schema::parse).collect())
                .unwrap_or_default()
        };
        Schema {
            ty: s(v, "type"),
            format: s(v, "format"),
            description: s(v, "description"),
            properties: v
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, p)| (k.clone(), Schema::parse(p)))
                        .collect()
                })
                .unwrap_or_default(),
            items: v.get("items").map(|i| Box::new(Schema::parse(i))),
            additional: match v.get("additionalProperties") {
                None | Some(Value::Null) => Additional::Absent,
                Some(Value::Bool(x)) => Additional::Bool(*x),
                Some(o) => Additional::Schema(Box::new(Schema::parse(o))),
            },
            required: strs(v.get("required")),
            enum_values: v
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            pattern: v
                .get("pattern")
                .and_then(Value::as_str)
                .and_then(|p| Regex::new(p).ok().map(|r| (p.to_string(), r))),
            minimum: v.get("minimum").and_then(Value::as_f64),
            maximum: v.get("maximum").and_then(Value::as_f64),
            exclusive_minimum: b(v, "exclusiveMinimum"),
            exclusive_maximum: b(v, "exclusiveMaximum"),
            multiple_of: v.get("multipleOf").and_then(Value::as_f64),
            min_length: u(v, "minLength"),
            max_length: u(v, "maxLength"),
            min_items: u(v, "minItems"),
            max_items: u(v, "maxItems"),
            min_properties: u(v, "minProperties"),
            max_properties: u(v, "maxProperties"),
            nullable: b(v, "nullable"),
            default: v.get("default").cloned(),
            preserve_unknown: b(v, "x-kubernetes-preserve-unknown-fields"),
            int_or_string: b(v, "x-kubernetes-int-or-string"),
            embedded: b(v, "x-kubernetes-embedded-resource"),
            list_type: s(v, "x-kubernetes-list-type"),
            list_map_keys: strs(v.get("x-kubernetes-list-map-keys")),
            map_type: s(v, "x-kubernetes-map-type"),
            rules: v
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| Rule {
                            rule: s(r, "rule"),
                            message: s(r, "message"),
                            message_expression: s(r, "messageExpression"),
                            reason: s(r, "reason"),
                            field_path: s(r, "fieldPath"),
                            optional_old_self: b(r, "optionalOldSelf"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            all_of: list("allOf"),
            any_of: list("anyOf"),
            one_of: list("oneOf"),
            not: v.get("not").map(|n| Box::new(Schema::parse(n))),
        }
    }

    /// The schema of a map value, when the node is a map (`additionalProperties`).
    pub fn map_values(&self) -> Option<&Schema> {
        match &self.additional {
            Additional::Schema(s) => Some(s),
            _ => None,
        }
    }

    /// The node at a dotted path of property names (`spec.replicas`).
    pub fn at(&self, dotted: &str) -> Option<&Schema> {
        let mut cur = self;
        for seg in dotted.split('.').filter(|s| !s.is_empty()) {
            cur = cur.properties.get(seg)?;
        }
        Some(cur)
    }

    /// Whether any node of the tree has `x-kubernetes-validations`.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
            || self.properties.values().any(Schema::has_rules)
            || self.items.as_ref().is_some_and(|i| i.has_rules())
            || self.map_values().is_some_and(Schema::has_rules)
    }
}

/// Keywords of JSON Schema that apiextensions.k8s.io/v1 does not allow.
const FORBIDDEN_KEYWORDS: &[(&str, &str)] = &[
    ("$ref", "$ref is not supported"),
    ("$schema", "$schema is not supported"),
    ("id", "id is not supported"),
    ("definitions", "definitions are not supported"),
    ("dependencies", "dependencies are not supported"),
    ("patternProperties", "patternProperties is not supported"),
    ("additionalItems", "additionalItems cannot be set to false"),
];

/// Keywords a node under `allOf`/`anyOf`/`oneOf`/`not` must not carry (they belong to
/// the structural part of the schema).
const JUNCTOR_FORBIDDEN: &[&str] = &[
    "type",
    "default",
    "description",
    "nullable",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// How deep a schema may nest (a guard against hostile definitions).
const MAX_DEPTH: usize = 64;

/// Checks that an `openAPIV3Schema` is structural and uses only what
/// apiextensions.k8s.io/v1 supports, reporting field errors under `path`
/// (`spec.versions[0].schema.openAPIV3Schema`), worded as kube-apiserver.
pub fn check_structural(v: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.type"),
            "must not be empty at the root",
        ));
    } else if ty != "object" {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            ty,
            "must be object at the root",
        ));
    }
    if let Some(meta) = v.pointer("/properties/metadata") {
        check_metadata(meta, &format!("{path}.properties[metadata]"), &mut errs);
    }
    for k in ["x-kubernetes-embedded-resource", "nullable"] {
        if b(v, k) {
            errs.push(FieldError::forbidden(
                format!("{path}.{k}"),
                "must be false at the root",
            ));
        }
    }
    node(v, path, Ctx::Root, 0, &mut errs);
    errs
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Root,
    Property,
    Items,
    Additional,
    Junctor,
}

fn check_metadata(meta: &Value, path: &str, errs: &mut Vec<FieldError>) {
    // Only name and generateName may be restricted (as strings); everything else about
    // metadata is the server's.
    let ok_keys = ["type", "properties", "description"];
    let other = meta
        .as_object()
        .map(|m| m.keys().any(|k| !ok_keys.contains(&k.as_str())))
        .unwrap_or(false);
    let props_ok = meta
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(|p| p.keys().all(|k| k == "name" || k == "generateName"));
    if other || !props_ok {
        errs.push(FieldError::forbidden(
            path,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

fn node(v: &Value, path: &str, ctx: Ctx, depth: usize, errs: &mut Vec<FieldError>) {
    let Some(m) = v.as_object() else {
        errs.push(FieldError::invalid(
            path,
            v.clone(),
            "must be a schema object",
        ));
        return;
    };
    if depth > MAX_DEPTH {
        errs.push(FieldError::forbidden(path, "schema is nested too deeply"));
        return;
    }
    let junctor = ctx == Ctx::Junctor;
    for (k, why) in FORBIDDEN_KEYWORDS {
        if m.contains_key(*k) {
            errs.push(FieldError::forbidden(format!("{path}.{k}"), why));
        }
    }
    if b(v, "uniqueItems") {
        errs.push(FieldError::forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            false,
            "must be true or undefined",
        ));
    }
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
    let int_or_string = b(v, "x-kubernetes-int-or-string");
    let preserve = b(v, "x-kubernetes-preserve-unknown-fields");
    if junctor {
        for k in JUNCTOR_FORBIDDEN {
            if m.contains_key(*k) {
                errs.push(FieldError::forbidden(
                    format!("{path}.{k}"),
                    "must be empty to be structural",
                ));
            }
        }
    } else {
        if !ty.is_empty() && !TYPES.contains(&ty) {
            errs.push(FieldError::not_supported(format!("{path}.type"), ty, TYPES));
        }
        if ty.is_empty() && !int_or_string && !preserve && ctx != Ctx::Root {
            let detail = match ctx {
                Ctx::Items => "must not be empty for specified array items",
                Ctx::Additional => "must not be empty for specified map values",
                _ => "must not be empty for specified object fields",
            };
            errs.push(FieldError::required(format!("{path}.type"), detail));
        }
        if int_or_string && !ty.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.type"),
                ty,
                "must be empty if x-kubernetes-int-or-string is true",
            ));
        }
        if ty == "array" && !m.contains_key("items") {
            errs.push(FieldError::required(
                format!("{path}.items"),
                "must be specified",
            ));
        }
        if b(v, "x-kubernetes-embedded-resource") && ty != "object" {
            errs.push(FieldError::invalid(
                format!("{path}.type"),
                ty,
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        errs.push(FieldError::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        if Regex::new(p).is_err() {
            errs.push(FieldError::invalid(
                format!("{path}.pattern"),
                p,
                "must be a valid regular expression",
            ));
        }
    }
    let lt = v
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !lt.is_empty() {
        if !["atomic", "set", "map"].contains(&lt) {
            errs.push(FieldError::not_supported(
                format!("{path}.x-kubernetes-list-type"),
                lt,
                &["atomic", "set", "map"],
            ));
        } else if ty != "array" && !junctor {
            errs.push(FieldError::invalid(
                format!("{path}.type"),
                ty,
                "must be array if x-kubernetes-list-type is specified",
            ));
        }
        let item_ty = v
            .pointer("/items/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if lt == "set" && item_ty == "object" {
            errs.push(FieldError::invalid(
                format!("{path}.items.type"),
                item_ty,
                "must be a scalar type if x-kubernetes-list-type is set",
            ));
        }
        if lt == "map" {
            let keys = strs(v.get("x-kubernetes-list-map-keys"));
            if keys.is_empty() {
                errs.push(FieldError::required(
                    format!("{path}.x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            if item_ty != "object" {
                errs.push(FieldError::invalid(
                    format!("{path}.items.type"),
                    item_ty,
                    "must be object if parent array's x-kubernetes-list-type is map",
                ));
            } else {
                let req = strs(v.pointer("/items/required"));
                for k in &keys {
                    let prop = v.pointer(&format!(
                        "/items/properties/{}",
                        k.replace('~', "~0").replace('/', "~1")
                    ));
                    match prop {
                        None => errs.push(FieldError::required(
                            format!("{path}.items.properties[{k}]"),
                            "entries of x-kubernetes-list-map-keys must be specified as properties of the items",
                        )),
                        Some(p) => {
                            let pt = p.get("type").and_then(Value::as_str).unwrap_or("");
                            if !["string", "integer", "number", "boolean"].contains(&pt) {
                                errs.push(FieldError::invalid(
                                    format!("{path}.items.properties[{k}].type"),
                                    pt,
                                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                ));
                            }
                            if !req.contains(k) && p.get("default").is_none() {
                                errs.push(FieldError::required(
                                    format!("{path}.items.required"),
                                    &format!("all map keys must be required or have a default value (\"{k}\" is neither)"),
                                ));
                            }
                        }
                    }
                }
            }
        } else if m.contains_key("x-kubernetes-list-map-keys") {
            errs.push(FieldError::forbidden(
                format!("{path}.x-kubernetes-list-map-keys"),
                "must be empty if x-kubernetes-list-type is not map",
            ));
        }
    }
    if let Some(mt) = v.get("x-kubernetes-map-type").and_then(Value::as_str) {
        if !["granular", "atomic"].contains(&mt) {
            errs.push(FieldError::not_supported(
                format!("{path}.x-kubernetes-map-type"),
                mt,
                &["granular", "atomic"],
            ));
        }
    }
    if let Some(rules) = m.get("x-kubernetes-validations") {
        match rules.as_array() {
            Some(a) => {
                for (i, r) in a.iter().enumerate() {
                    if r.get("rule")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        errs.push(FieldError::required(
                            format!("{path}.x-kubernetes-validations[{i}].rule"),
                            "",
                        ));
                    }
                    let reason = s(r, "reason");
                    const REASONS: &[&str] = &[
                        "FieldValueDuplicate",
                        "FieldValueForbidden",
                        "FieldValueInvalid",
                        "FieldValueRequired",
                    ];
                    if !reason.is_empty() && !REASONS.contains(&reason.as_str()) {
                        errs.push(FieldError::not_supported(
                            format!("{path}.x-kubernetes-validations[{i}].reason"),
                            reason.as_str(),
                            REASONS,
                        ));
                    }
                }
            }
            None => errs.push(FieldError::invalid(
                format!("{path}.x-kubernetes-validations"),
                rules.clone(),
                "must be a list",
            )),
        }
    }
    if let Some(p) = m.get("properties").and_then(Value::as_object) {
        for (k, sub) in p {
            node(
                sub,
                &format!("{path}.properties[{k}]"),
                if junctor { Ctx::Junctor } else { Ctx::Property },
                depth + 1,
                errs,
            );
        }
    }
    if let Some(i) = m.get("items") {
        if i.is_array() {
            errs.push(FieldError::forbidden(
                format!("{path}.items"),
                "items must be a schema object and not an array",
            ));
        } else {
            node(
                i,
                &format!("{path}.items"),
                if junctor { Ctx::Junctor } else { Ctx::Items },
                depth + 1,
                errs,
            );
        }
    }
    if let Some(a) = m.get("additionalProperties").filter(|a| a.is_object()) {
        node(
            a,
            &format!("{path}.additionalProperties"),
            if junctor {
                Ctx::Junctor
            } else {
                Ctx::Additional
            },
            depth + 1,
            errs,
        );
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        if let Some(a) = m.get(j).and_then(Value::as_array) {
            for (i, sub) in a.iter().enumerate() {
                node(
                    sub,
                    &format!("{path}.{j}[{i}]"),
                    Ctx::Junctor,
                    depth + 1,
                    errs,
                );
            }
        }
    }
    if let Some(n) = m.get("not") {
        node(n, &format!("{path}.not"), Ctx::Junctor, depth + 1, errs);
    }
}
