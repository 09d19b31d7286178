//! Strict field validation, as kube-apiserver does it for
//! `fieldValidation=Strict|Warn|Ignore`: fields the kind's schema does not
//! have (`unknown field "spec.foo"`) and keys repeated in one JSON or YAML
//! object (`duplicate field "spec.replicas"`). Also the checks Go's decoder
//! makes whatever the mode ([`decode_error`]): JSON types, quantities,
//! base64 and times.

use crate::schema::{schemas, Node};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// The problems strict decoding found, in the order met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrictErrors {
    /// Paths of keys repeated in one object.
    pub duplicate: Vec<String>,
    /// Paths of fields the schema does not have.
    pub unknown: Vec<String>,
}

impl StrictErrors {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.duplicate.is_empty() && self.unknown.is_empty()
    }

    /// One message per problem (`unknown field "spec.foo"`): the text of
    /// the `Warning` headers under `fieldValidation=Warn`.
    pub fn messages(&self) -> Vec<String> {
        self.duplicate
            .iter()
            .map(|p| format!("duplicate field {}", quote(p)))
            .chain(
                self.unknown
                    .iter()
                    .map(|p| format!("unknown field {}", quote(p))),
            )
            .collect()
    }

    /// `strict decoding error: unknown field "spec.foo", …`.
    pub fn message(&self) -> String {
        format!("strict decoding error: {}", self.messages().join(", "))
    }

    /// The 400 `Status` kube-apiserver answers under `fieldValidation=Strict`:
    /// `Pod in version "v1" cannot be handled as a Pod: strict decoding error: …`.
    pub fn to_status(&self, kind: &str, version: &str) -> Value {
        let message = format!(
            "{kind} in version {} cannot be handled as a {kind}: {}",
            quote(version),
            self.message()
        );
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "BadRequest", "code": 400,
        })
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Parses JSON keeping the last of repeated keys (as Go does) and noting
/// their paths.
pub fn parse_json(raw: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let out = parse_with(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Parses any serde format (JSON, YAML through a serde YAML crate) into a
/// JSON value while noting repeated keys.
pub fn parse_with<'de, D: Deserializer<'de>>(d: D) -> Result<(Value, Vec<String>), D::Error> {
    let dups = RefCell::new(Vec::new());
    let v = Seed {
        path: String::new(),
        dups: &dups,
    }
    .deserialize(d)?;
    Ok((v, dups.into_inner()))
}

struct Seed<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("NaN or infinite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed {
            path: format!("{}[{}]", self.path, out.len()),
            dups: self.dups,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<KeyString>()? {
            let k = k.0;
            let path = join(&self.path, &k);
            let v = map.next_value_seed(Seed {
                path: path.clone(),
                dups: self.dups,
            })?;
            if out.insert(k, v).is_some() {
                self.dups.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// A map key: strings, and the scalars YAML allows as keys rendered as
/// text (`1: x` in YAML is the key "1" in JSON).
struct KeyString(String);

impl<'de> serde::Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyString, E> {
                Ok(KeyString(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Paths of the fields of `obj` that the schema of `group/version/kind`
/// does not have. `None` when the kind has no schema.
pub fn unknown_fields(group: &str, version: &str, kind: &str, obj: &Value) -> Option<Vec<String>> {
    let root = schemas().kind(group, version, kind)?;
    let mut out = Vec::new();
    walk(root, obj, "", &mut out);
    Some(out)
}

/// Both checks at once, from the raw JSON body: duplicates while parsing,
/// then unknown fields against the kind's schema.
pub fn check_json(
    group: &str,
    version: &str,
    kind: &str,
    raw: &[u8],
) -> Result<(Value, StrictErrors), serde_json::Error> {
    let (v, duplicate) = parse_json(raw)?;
    let unknown = unknown_fields(group, version, kind, &v).unwrap_or_default();
    Ok((v, StrictErrors { duplicate, unknown }))
}

fn walk(node: Node<'_>, v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if node.is_free_form() {
                return;
            }
            let props = node.property_names();
            if !props.is_empty() {
                for (k, val) in m {
                    match node.property(k) {
                        Some(child) => walk(child, val, &join(path, k), out),
                        None => out.push(join(path, k)),
                    }
                }
            } else if let Some(values) = node.additional_properties() {
                for (k, val) in m {
                    walk(values, val, &join(path, k), out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = node.items() {
                for (i, val) in a.iter().enumerate() {
                    walk(items, val, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// A value Go's decoder would refuse for its field: wrong JSON type, a bad
/// quantity, base64 or time. kube-apiserver answers these with 400 before
/// any validation; the server must too, or it would store what typed
/// clients then cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Path of the field (`spec.replicas`).
    pub path: String,
    /// Go's text for the failure.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl DecodeError {
    /// The 400 `Status`: `Deployment in version "v1" cannot be handled as
    /// a Deployment: json: cannot unmarshal string into Go struct field
    /// DeploymentSpec.spec.replicas of type int32`.
    pub fn to_status(&self, kind: &str, version: &str) -> Value {
        let message = format!(
            "{kind} in version {} cannot be handled as a {kind}: {}",
            quote(version),
            self.message
        );
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "BadRequest", "code": 400,
        })
    }
}

/// The first value in `obj` that Go's decoder would refuse for the kind
/// `group/version/kind`, if any (`None` also when the kind has no schema).
pub fn decode_error(group: &str, version: &str, kind: &str, obj: &Value) -> Option<DecodeError> {
    let root = schemas().kind(group, version, kind)?;
    let owner = short_def(root.definition_name().unwrap_or(kind));
    check_types(root, obj, "", &owner).err()
}

fn short_def(def: &str) -> String {
    def.rsplit('.').next().unwrap_or(def).to_string()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's name for the type a schema decodes into (approximate for maps
/// and lists, exact for scalars and structs).
fn go_type(node: Node<'_>) -> String {
    let r = node.resolved();
    if let Some(def) = node.definition_name() {
        let mut parts = def.rsplit('.');
        let name = parts.next().unwrap_or(def);
        let pkg = parts.next().unwrap_or("v1");
        return match name {
            "Quantity" => "resource.Quantity".into(),
            "IntOrString" => "intstr.IntOrString".into(),
            "Time" | "MicroTime" => format!("v1.{name}"),
            _ => format!("{pkg}.{name}"),
        };
    }
    let format = r.value().get("format").and_then(Value::as_str);
    match (r.type_name(), format) {
        (Some("integer"), Some("int32")) => "int32".into(),
        (Some("integer"), _) => "int64".into(),
        (Some("number"), _) => "float64".into(),
        (Some("boolean"), _) => "bool".into(),
        (Some("string"), Some("byte")) => "[]uint8".into(),
        (Some("string"), _) => "string".into(),
        (Some("array"), _) => format!("[]{}", node.items().map_or("interface {}".into(), go_type)),
        (Some("object"), _) => match node.additional_properties() {
            Some(v) => format!("map[string]{}", go_type(v)),
            None => "map[string]interface {}".into(),
        },
        _ => "interface {}".into(),
    }
}

fn check_types(node: Node<'_>, v: &Value, path: &str, owner: &str) -> Result<(), DecodeError> {
    if v.is_null() {
        return Ok(());
    }
    let mismatch = |v: &Value| {
        let got = match v {
            Value::Number(n) => format!("number {n}"),
            other => json_type(other).to_string(),
        };
        let field = if path.is_empty() {
            format!("Go value of type {}", go_type(node))
        } else {
            format!("Go struct field {owner}.{path} of type {}", go_type(node))
        };
        Err(DecodeError {
            path: path.to_string(),
            message: format!("json: cannot unmarshal {got} into {field}"),
        })
    };
    let r = node.resolved();
    let def = node.definition_name().unwrap_or_default();
    if def.ends_with(".Quantity") {
        return match v {
            Value::Number(_) => Ok(()),
            Value::String(s) if crate::quantity::Quantity::parse(s).is_ok() => Ok(()),
            Value::String(_) => Err(DecodeError {
                path: path.to_string(),
                message: crate::quantity::QUANTITY_MSG.to_string(),
            }),
            _ => mismatch(v),
        };
    }
    if r.value().get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return match v {
            Value::String(_) => Ok(()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            _ => mismatch(v),
        };
    }
    let format = r.value().get("format").and_then(Value::as_str);
    match (r.type_name(), v) {
        (Some("string"), Value::String(s)) => match format {
            Some("byte") => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(drop)
                    .map_err(|e| DecodeError {
                        path: path.to_string(),
                        message: format!("illegal base64 data: {e}"),
                    })
            }
            Some("date-time") if s.parse::<k8s_openapi::jiff::Timestamp>().is_err() => {
                Err(DecodeError {
                    path: path.to_string(),
                    message: format!("parsing time {}: not an RFC 3339 time", quote(s)),
                })
            }
            _ => Ok(()),
        },
        (Some("string"), _) => mismatch(v),
        (Some("integer"), Value::Number(n)) => {
            let fits = match format {
                Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                _ => n.is_i64() || n.is_u64(),
            };
            if fits {
                Ok(())
            } else {
                mismatch(v)
            }
        }
        (Some("integer"), _) => mismatch(v),
        (Some("number"), Value::Number(_)) => Ok(()),
        (Some("number"), _) => mismatch(v),
        (Some("boolean"), Value::Bool(_)) => Ok(()),
        (Some("boolean"), _) => mismatch(v),
        (Some("array"), Value::Array(items)) => {
            if let Some(item) = node.items() {
                for (i, x) in items.iter().enumerate() {
                    check_types(item, x, &format!("{path}[{i}]"), owner)?;
                }
            }
            Ok(())
        }
        (Some("array"), _) => mismatch(v),
        (Some("object") | None, Value::Object(m)) => {
            if node.is_free_form() {
                return Ok(());
            }
            let here = node.definition_name().map(short_def);
            let owner = here.as_deref().unwrap_or(owner);
            if let Some(values) = node.additional_properties() {
                for (k, x) in m {
                    check_types(values, x, &join(path, k), owner)?;
                }
            } else {
                for (k, x) in m {
                    if let Some(child) = node.property(k) {
                        check_types(child, x, &join(path, k), owner)?;
                    }
                }
            }
            Ok(())
        }
        (Some("object"), _) => mismatch(v),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_with_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "x", "resources": {"limits": {"cpu": "1"}},
                "ports": [{"containerPort": 80, "targetPort": 1}]}], "foo": {}},
            "status": {}});
        let u = unknown_fields("", "v1", "Pod", &pod).unwrap();
        assert_eq!(
            u,
            vec![
                "metadata.bogus",
                "spec.containers[0].imagee",
                "spec.containers[0].ports[0].targetPort",
                "spec.foo"
            ]
        );
        let errs = StrictErrors {
            duplicate: vec![],
            unknown: u,
        };
        assert_eq!(errs.messages()[0], "unknown field \"metadata.bogus\"");
        assert!(errs.to_status("Pod", "v1")["message"].as_str().unwrap().starts_with(
            "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"metadata.bogus\", unknown field"));
    }

    #[test]
    fn seeds_and_free_form_fields_pass() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}, "spec": {"network": "net1"}});
        assert_eq!(unknown_fields("", "v1", "Namespace", &ns), Some(vec![]));
        let net = json!({"apiVersion": "v1", "kind": "Network", "metadata": {"name": "net1"},
            "spec": {"tenantID": "t", "subnets": {"subnet1": {"cidr": "192.168.0.0/24", "gateway": "192.168.0.1", "vlan": 3}}}});
        assert_eq!(
            unknown_fields("", "v1", "Network", &net),
            Some(vec!["spec.subnets.subnet1.vlan".to_string()])
        );
        let pod = json!({"spec": {"volumes": [{"name": "v", "cinder": {"volumeID": "x", "fsType": "ext4"}}],
            "containers": [{"name": "c", "image": "i"}]},
            "metadata": {"managedFields": [{"fieldsV1": {"f:metadata": {}}}]}});
        assert_eq!(unknown_fields("", "v1", "Pod", &pod), Some(vec![]));
        let d = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%"}}, "template": {"spec": {"containers": [{"nam": "x"}]}}}});
        assert_eq!(
            unknown_fields("apps", "v1", "Deployment", &d),
            Some(vec!["spec.template.spec.containers[0].nam".to_string()])
        );
        assert_eq!(unknown_fields("nope", "v1", "X", &d), None);
    }

    #[test]
    fn go_decode_errors() {
        let d = json!({"spec": {"replicas": "3"}});
        let e = decode_error("apps", "v1", "Deployment", &d).unwrap();
        assert_eq!(e.message, "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32");
        assert_eq!(
            e.to_status("Deployment", "v1")["message"],
            "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
        let p = json!({"spec": {"containers": [{"name": "c", "image": 5}]}});
        let e = decode_error("", "v1", "Pod", &p).unwrap();
        assert_eq!(e.message, "json: cannot unmarshal number 5 into Go struct field Container.spec.containers[0].image of type string");
        let p = json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "lots"}}}]}});
        assert!(decode_error("", "v1", "Pod", &p)
            .unwrap()
            .message
            .starts_with("quantities must match"));
        let s = json!({"data": {"a": "not base64!"}});
        assert!(decode_error("", "v1", "Secret", &s)
            .unwrap()
            .message
            .starts_with("illegal base64 data"));
        let ok = json!({"metadata": {"name": "x", "labels": {"a": "b"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 2, "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}}}});
        assert_eq!(decode_error("apps", "v1", "Deployment", &ok), None);
        let t = json!({"metadata": {"creationTimestamp": "yesterday"}});
        assert!(decode_error("", "v1", "ConfigMap", &t).is_some());
        let arr = json!({"spec": {"containers": {"name": "c"}}});
        assert_eq!(decode_error("", "v1", "Pod", &arr).unwrap().message,
            "json: cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container");
        let big = json!({"spec": {"replicas": 5_000_000_000i64}});
        assert!(decode_error("apps", "v1", "Deployment", &big).is_some());
        assert_eq!(decode_error("", "v1", "Pod", &json!({"spec": null})), None);
    }

    #[test]
    fn duplicates_in_json() {
        let raw = br#"{"kind":"Pod","spec":{"a":1,"a":2,"list":[{"x":1,"x":1}]},"kind":"Pod"}"#;
        let (v, d) = parse_json(raw).unwrap();
        assert_eq!(d, vec!["spec.a", "spec.list[0].x", "kind"]);
        assert_eq!(v["spec"]["a"], 2, "last value wins, as in Go");
        let (_, errs) = check_json(
            "",
            "v1",
            "ConfigMap",
            br#"{"data":{"k":"v"},"data":{},"foo":1}"#,
        )
        .unwrap();
        assert_eq!(
            errs.messages(),
            vec!["duplicate field \"data\"", "unknown field \"foo\""]
        );
        assert!(parse_json(b"{\"a\":").is_err());
        assert!(parse_json(b"{} x").is_err());
    }
}
