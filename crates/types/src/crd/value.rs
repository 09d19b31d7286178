//! What a structural schema does to a custom object: defaulting, pruning of unknown
//! fields, and validation with kube-apiserver's field errors.

use std::collections::HashSet;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::schema::{Additional, Schema};
use crate::validation::{ErrorType, FieldError};

/// Fields at the root (and of embedded resources) that the schema never prunes.
const ROOT_KEPT: &[&str] = &["apiVersion", "kind", "metadata"];

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---- defaulting ----

/// Fills `default`s of missing (or null, when not nullable) fields, in place, as the
/// structural defaulting of kube-apiserver does on writes and on reads from storage.
pub fn apply_defaults(s: &Schema, v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, ps) in &s.properties {
                let missing = match m.get(k) {
                    None => true,
                    Some(Value::Null) => !ps.nullable,
                    Some(_) => false,
                };
                if missing {
                    if let Some(d) = &ps.default {
                        m.insert(k.clone(), d.clone());
                    }
                }
                if let Some(x) = m.get_mut(k) {
                    apply_defaults(ps, x);
                }
            }
            if let Some(vs) = s.map_values() {
                for x in m.values_mut() {
                    apply_defaults(vs, x);
                }
            }
        }
        Value::Array(a) => {
            if let Some(is) = &s.items {
                for x in a.iter_mut() {
                    apply_defaults(is, x);
                }
            }
        }
        _ => {}
    }
}

// ---- pruning ----

/// Removes fields the schema does not specify (unless `x-kubernetes-preserve-unknown-fields`),
/// returning their paths (`spec.foo`) for `fieldValidation`. `apiVersion`, `kind` and
/// `metadata` stay at the root and in embedded resources.
pub fn prune(s: &Schema, v: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_node(s, v, "", true, &mut out);
    out
}

fn prune_node(s: &Schema, v: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let keep_meta = root || s.embedded;
            if !s.properties.is_empty() || !s.preserve_unknown {
                let vs = s.map_values();
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if keep_meta && ROOT_KEPT.contains(&k.as_str()) {
                        continue;
                    }
                    if let Some(ps) = s.properties.get(&k) {
                        if let Some(x) = m.get_mut(&k) {
                            prune_node(ps, x, &child(path, &k), false, out);
                        }
                    } else if let Some(vs) = vs {
                        if let Some(x) = m.get_mut(&k) {
                            prune_node(vs, x, &child(path, &k), false, out);
                        }
                    } else if matches!(s.additional, Additional::Bool(true)) || s.preserve_unknown {
                        // kept as it is
                    } else {
                        m.remove(&k);
                        out.push(child(path, &k));
                    }
                }
            } else {
                // preserve-unknown without properties: only known children are walked.
                for (k, ps) in &s.properties {
                    if let Some(x) = m.get_mut(k) {
                        prune_node(ps, x, &child(path, k), false, out);
                    }
                }
            }
            if keep_meta && !root {
                prune_embedded_meta(m);
            }
        }
        Value::Array(a) => {
            if let Some(is) = &s.items {
                for (i, x) in a.iter_mut().enumerate() {
                    prune_node(is, x, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// An embedded resource's metadata keeps the ObjectMeta fields a client may set.
fn prune_embedded_meta(m: &mut Map<String, Value>) {
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
    ];
    if let Some(Value::Object(md)) = m.get_mut("metadata") {
        md.retain(|k, _| META.contains(&k.as_str()));
    }
}

// ---- validation ----

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, want: &str, v: &Value) -> FieldError {
    let got = type_name(v);
    FieldError {
        kind: ErrorType::TypeInvalid,
        field: path.to_string(),
        bad_value: Some(Value::String(got.into())),
        detail: format!("{path} in body must be of type {want}: \"{got}\""),
    }
}

fn invalid(path: &str, v: &Value, detail: String) -> FieldError {
    FieldError {
        kind: ErrorType::Invalid,
        field: path.to_string(),
        bad_value: Some(v.clone()),
        detail,
    }
}

/// Whether a string is valid for an OpenAPI `format` kube-apiserver checks.
pub fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "date" => jiff_date(s),
        "date-time" | "datetime" => s.parse::<jiff_like::Ts>().is_ok(),
        "duration" => go_duration(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => crate::validation::parse_cidr(s).is_some(),
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            (parts.len() == 6 || parts.len() == 8)
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let groups: Vec<&str> = s.split('-').collect();
            groups.len() == 5
                && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups
                    .iter()
                    .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.starts_with('.')),
        "uri" => s.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }),
        _ => true,
    }
}

fn jiff_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s[..4].chars().all(|c| c.is_ascii_digit())
        && s[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
        && s[8..10].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
}

/// RFC 3339 timestamps, as Go's `strfmt.DateTime` accepts them.
mod jiff_like {
    pub struct Ts;
    impl std::str::FromStr for Ts {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            if s.len() < 20 || !super::jiff_date(&s[..10]) {
                return Err(());
            }
            let rest = &s[10..];
            let rest = rest.strip_prefix(['T', 't', ' ']).ok_or(())?;
            let b = rest.as_bytes();
            if b.len() < 9 || b[2] != b':' || b[5] != b':' {
                return Err(());
            }
            let hh: u8 = rest[..2].parse().map_err(|_| ())?;
            let mm: u8 = rest[3..5].parse().map_err(|_| ())?;
            let ss: u8 = rest[6..8].parse().map_err(|_| ())?;
            if hh > 23 || mm > 59 || ss > 60 {
                return Err(());
            }
            let mut tail = &rest[8..];
            if let Some(f) = tail.strip_prefix('.') {
                let n = f.chars().take_while(char::is_ascii_digit).count();
                if n == 0 {
                    return Err(());
                }
                tail = &f[n..];
            }
            match tail {
                "Z" | "z" => Ok(Ts),
                t if t.len() == 6
                    && (t.starts_with('+') || t.starts_with('-'))
                    && t.as_bytes()[3] == b':' =>
                {
                    Ok(Ts)
                }
                _ => Err(()),
            }
        }
    }
}

/// Go's `time.ParseDuration` syntax (`1h30m`, `-1.5s`, `300ms`).
pub fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        if n == 0 || rest[..n].chars().filter(|c| *c == '.').count() > 1 || &rest[..n] == "." {
            return false;
        }
        rest = &rest[n..];
        let unit = rest
            .chars()
            .take_while(|c| c.is_alphabetic() || *c == 'µ')
            .count();
        let u: String = rest.chars().take(unit).collect();
        if !["ns", "us", "µs", "ms", "s", "m", "h"].contains(&u.as_str()) {
            return false;
        }
        rest = &rest[u.len()..];
    }
    true
}

/// Validates `v` against `s`, appending kube-apiserver's field errors at `path`.
pub fn validate(s: &Schema, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if s.nullable || (s.ty.is_empty() && !s.int_or_string) {
            return;
        }
        if !s.ty.is_empty() {
            errs.push(type_error(path, &s.ty, v));
        } else if s.int_or_string {
            errs.push(type_error(path, "integer or string", v));
        }
        return;
    }
    if s.int_or_string {
        if !matches!(v, Value::String(_)) && type_name(v) != "integer" {
            errs.push(type_error(path, "integer or string", v));
            return;
        }
    } else if !s.ty.is_empty() {
        let got = type_name(v);
        let ok = got == s.ty || (s.ty == "number" && got == "integer");
        if !ok {
            errs.push(type_error(path, &s.ty, v));
            return;
        }
    }
    if !s.enum_values.is_empty() && !s.enum_values.contains(v) {
        let vals: Vec<String> = s
            .enum_values
            .iter()
            .map(|e| match e {
                Value::String(x) => Value::String(x.clone()).to_string(),
                o => o.to_string(),
            })
            .collect();
        errs.push(FieldError {
            kind: ErrorType::NotSupported,
            field: path.to_string(),
            bad_value: Some(v.clone()),
            detail: format!("supported values: {}", vals.join(", ")),
        });
    }
    match v {
        Value::String(x) => {
            let len = x.chars().count() as u64;
            if let Some(max) = s.max_length {
                if len > max {
                    errs.push(FieldError {
                        kind: ErrorType::TooLong,
                        field: path.to_string(),
                        bad_value: None,
                        detail: format!("may not be more than {max} bytes"),
                    });
                }
            }
            if let Some(min) = s.min_length {
                if len < min {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some((p, re)) = &s.pattern {
                if !re.is_match(x) {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should match '{p}'"),
                    ));
                }
            }
            if !s.format.is_empty() && !format_ok(&s.format, x) {
                errs.push(invalid(
                    path,
                    v,
                    format!("{path} in body must be of type {}: \"{x}\"", s.format),
                ));
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some(min) = s.minimum {
                if (s.exclusive_minimum && f <= min) || f < min {
                    let rel = if s.exclusive_minimum {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", num(min)),
                    ));
                }
            }
            if let Some(max) = s.maximum {
                if (s.exclusive_maximum && f >= max) || f > max {
                    let rel = if s.exclusive_maximum {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", num(max)),
                    ));
                }
            }
            if let Some(m) = s.multiple_of.filter(|m| *m > 0.0) {
                let q = f / m;
                if (q - q.round()).abs() > 1e-9 {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should be a multiple of {}", num(m)),
                    ));
                }
            }
        }
        Value::Array(a) => {
            if let Some(max) = s.max_items {
                if a.len() as u64 > max {
                    errs.push(FieldError::too_many(path, a.len(), max as usize));
                }
            }
            if let Some(min) = s.min_items {
                if (a.len() as u64) < min {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            match s.list_type.as_str() {
                "set" => {
                    let mut seen = HashSet::new();
                    for (i, x) in a.iter().enumerate() {
                        if !seen.insert(x.to_string()) {
                            errs.push(FieldError::duplicate(format!("{path}[{i}]"), x.clone()));
                        }
                    }
                }
                "map" => {
                    let mut seen = HashSet::new();
                    for (i, x) in a.iter().enumerate() {
                        let key: Vec<(String, Value)> = s
                            .list_map_keys
                            .iter()
                            .map(|k| (k.clone(), x.get(k).cloned().unwrap_or(Value::Null)))
                            .collect();
                        let rendered = Value::Object(key.iter().cloned().collect());
                        if !seen.insert(rendered.to_string()) {
                            errs.push(FieldError::duplicate(format!("{path}[{i}]"), rendered));
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = &s.items {
                for (i, x) in a.iter().enumerate() {
                    validate(is, x, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(m) => {
            for r in &s.required {
                if !m.contains_key(r) {
                    errs.push(FieldError::required(child(path, r), ""));
                }
            }
            if let Some(max) = s.max_properties {
                if m.len() as u64 > max {
                    errs.push(FieldError::too_many(path, m.len(), max as usize));
                }
            }
            if let Some(min) = s.min_properties {
                if (m.len() as u64) < min {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{path} in body should have at least {min} properties"),
                    ));
                }
            }
            if s.embedded {
                for k in ["apiVersion", "kind"] {
                    if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push(FieldError::required(child(path, k), "must not be empty"));
                    }
                }
            }
            for (k, x) in m {
                if let Some(ps) = s.properties.get(k) {
                    validate(ps, x, &child(path, k), errs);
                } else if let Some(vs) = s.map_values() {
                    validate(vs, x, &format!("{path}[{k}]"), errs);
                }
            }
        }
        _ => {}
    }
    // Value validations in junctors (types and structure are the main schema's).
    for j in &s.all_of {
        validate(j, v, path, errs);
    }
    if !s.any_of.is_empty() && !s.any_of.iter().any(|j| ok(j, v, path)) {
        errs.push(invalid(
            path,
            v,
            format!("{path} in body must match at least one schema in anyOf"),
        ));
    }
    if !s.one_of.is_empty() && s.one_of.iter().filter(|j| ok(j, v, path)).count() != 1 {
        errs.push(invalid(
            path,
            v,
            format!("{path} in body must match exactly one schema in oneOf"),
        ));
    }
    if let Some(n) = &s.not {
        if ok(n, v, path) {
            errs.push(invalid(
                path,
                v,
                format!("{path} in body must not match the schema in not"),
            ));
        }
    }
}

fn ok(s: &Schema, v: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    validate(s, v, path, &mut e);
    e.is_empty()
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}
