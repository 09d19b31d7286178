//! Strict field validation, as kube-apiserver does it for
//! `fieldValidation=Strict|Warn|Ignore`: fields the kind's schema does not
//! have (`unknown field "spec.foo"`) and keys repeated in one JSON or YAML
//! object (`duplicate field "spec.replicas"`).

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
