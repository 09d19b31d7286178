//! JSON Patch (RFC 6902), JSON merge patch (RFC 7386), and the dispatcher over the four
//! Kubernetes patch content types.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::patch_meta::Schema;
use crate::strategic::strategic_merge_patch_value;

/// kube-apiserver refuses JSON Patches with more operations than this (413).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The four PATCH content types of the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (Kubernetes).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply; see [`crate::apply`]).
    Apply,
}

impl PatchType {
    /// Recognises a `Content-Type` header value (parameters such as `; charset=utf-8` are
    /// ignored). `None` means kube-apiserver's 415 UnsupportedMediaType.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    /// The canonical content type.
    pub fn content_type(&self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Applies a JSON, merge or strategic merge patch body to an object, returning the patched
/// object. `schema` is only used by strategic merge patch. [`PatchType::Apply`] needs more
/// context and is refused here with [`Error::BadPatch`]: use [`crate::apply`].
pub fn apply_patch(
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
    schema: Schema,
) -> Result<Value> {
    match patch_type {
        PatchType::Json => {
            let p = JsonPatch::parse(body)?;
            let mut doc = original.clone();
            p.apply(&mut doc)?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch = parse_json(body)?;
            if !patch.is_object() {
                return Err(Error::BadPatch(
                    "a merge patch for an object must be a JSON object".into(),
                ));
            }
            let mut doc = original.clone();
            merge_patch(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic => {
            let patch = parse_json(body)?;
            strategic_merge_patch_value(original, &patch, schema)
        }
        PatchType::Apply => Err(Error::BadPatch(
            "apply patches are handled by server-side apply".into(),
        )),
    }
}

fn parse_json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| Error::BadPatch(format!("invalid JSON: {e}")))
}

/// Applies an RFC 7386 JSON merge patch in place: objects merge recursively, `null` deletes a
/// key, anything else (including arrays) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One RFC 6902 operation.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Add {
        path: Vec<String>,
        value: Value,
    },
    Remove {
        path: Vec<String>,
    },
    Replace {
        path: Vec<String>,
        value: Value,
    },
    Move {
        from: Vec<String>,
        path: Vec<String>,
    },
    Copy {
        from: Vec<String>,
        path: Vec<String>,
    },
    Test {
        path: Vec<String>,
        value: Value,
    },
}

/// A decoded RFC 6902 JSON Patch.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPatch {
    ops: Vec<Op>,
}

impl JsonPatch {
    /// Decodes a patch document: a JSON array of operation objects. Malformed documents are
    /// [`Error::BadPatch`] (400); more than [`MAX_JSON_PATCH_OPERATIONS`] is
    /// [`Error::TooLarge`] (413).
    pub fn parse(body: &[u8]) -> Result<JsonPatch> {
        let v = parse_json(body)?;
        Self::from_value(&v)
    }

    /// Decodes a patch from an already parsed JSON value.
    pub fn from_value(v: &Value) -> Result<JsonPatch> {
        let Value::Array(items) = v else {
            return Err(Error::BadPatch(
                "a JSON patch must be a JSON array of operations".into(),
            ));
        };
        if items.len() > MAX_JSON_PATCH_OPERATIONS {
            return Err(Error::TooLarge(format!(
                "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                items.len()
            )));
        }
        let mut ops = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(o) = item else {
                return Err(Error::BadPatch(format!(
                    "JSON patch operation {i} is not an object"
                )));
            };
            let op = o.get("op").and_then(Value::as_str).ok_or_else(|| {
                Error::BadPatch(format!("JSON patch operation {i} has no \"op\""))
            })?;
            let pointer = |field: &str| -> Result<Vec<String>> {
                let s = o.get(field).and_then(Value::as_str).ok_or_else(|| {
                    Error::BadPatch(format!(
                        "JSON patch operation {i} ({op}) is missing {field:?}"
                    ))
                })?;
                parse_pointer(s)
            };
            let value = || -> Result<Value> {
                o.get("value").cloned().ok_or_else(|| {
                    Error::BadPatch(format!(
                        "JSON patch operation {i} ({op}) is missing \"value\""
                    ))
                })
            };
            ops.push(match op {
                "add" => Op::Add {
                    path: pointer("path")?,
                    value: value()?,
                },
                "remove" => Op::Remove {
                    path: pointer("path")?,
                },
                "replace" => Op::Replace {
                    path: pointer("path")?,
                    value: value()?,
                },
                "move" => Op::Move {
                    from: pointer("from")?,
                    path: pointer("path")?,
                },
                "copy" => Op::Copy {
                    from: pointer("from")?,
                    path: pointer("path")?,
                },
                "test" => Op::Test {
                    path: pointer("path")?,
                    value: value()?,
                },
                other => {
                    return Err(Error::BadPatch(format!(
                        "Unexpected kind: {other} (JSON patch operation {i})"
                    )))
                }
            });
        }
        Ok(JsonPatch { ops })
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the patch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Applies the operations in order. On error `doc` is left unchanged and the error is
    /// [`Error::PatchNotApplicable`] (422), as kube-apiserver answers, or [`Error::TooLarge`]
    /// (413) when `copy` operations would together copy more than
    /// [`MAX_JSON_PATCH_COPY_BYTES`] — the only operation that grows a document beyond what
    /// the (size-limited) request body carries, so the bound is checked before each copy is
    /// made, not after.
    pub fn apply(&self, doc: &mut Value) -> Result<()> {
        let mut work = doc.clone();
        let mut copy_budget = MAX_JSON_PATCH_COPY_BYTES;
        for op in &self.ops {
            if let Op::Copy { from, .. } = op {
                let size = get(&work, from).map_or(Some(0), |v| json_size_within(v, copy_budget));
                match size {
                    Some(n) => copy_budget -= n,
                    None => {
                        return Err(Error::TooLarge(format!(
                            "unable to copy {:?}: the copies of this JSON patch would exceed the \
                             allowed {MAX_JSON_PATCH_COPY_BYTES} bytes",
                            pointer_string(from)
                        )))
                    }
                }
            }
            apply_op(&mut work, op)?;
        }
        *doc = work;
        Ok(())
    }
}

/// How many bytes all `copy` operations of one JSON patch may copy together, as
/// kube-apiserver's `JSONPatchMaxCopyBytes` (3 MiB, its request body limit).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The size of `v` serialised as compact JSON (escapes counted as one byte each, which is a
/// lower bound), or `None` as soon as it exceeds `budget` — so measuring a huge value costs at
/// most `budget` worth of walking.
fn json_size_within(v: &Value, budget: usize) -> Option<usize> {
    fn take(left: &mut usize, n: usize) -> bool {
        match left.checked_sub(n) {
            Some(l) => {
                *left = l;
                true
            }
            None => false,
        }
    }
    fn walk(v: &Value, left: &mut usize) -> bool {
        match v {
            Value::Null => take(left, 4),
            Value::Bool(b) => take(left, if *b { 4 } else { 5 }),
            Value::Number(n) => take(left, n.to_string().len()),
            Value::String(s) => take(left, s.len() + 2),
            Value::Array(a) => {
                take(left, 2 + a.len().saturating_sub(1)) && a.iter().all(|x| walk(x, left))
            }
            Value::Object(m) => {
                take(left, 2 + m.len().saturating_sub(1))
                    && m.iter()
                        .all(|(k, x)| take(left, k.len() + 3) && walk(x, left))
            }
        }
    }
    let mut left = budget;
    walk(v, &mut left).then(|| budget - left)
}

/// Parses an RFC 6901 JSON Pointer into unescaped reference tokens.
fn parse_pointer(s: &str) -> Result<Vec<String>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(Error::BadPatch(format!(
            "JSON pointer {s:?} must be empty or start with '/'"
        )));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(Error::BadPatch(format!(
                                "JSON pointer {s:?} has an invalid '~' escape"
                            )))
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

fn pointer_string(path: &[String]) -> String {
    path.iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn not_applicable(op: &str, path: &[String], why: &str) -> Error {
    Error::PatchNotApplicable(format!(
        "{op} operation does not apply: doc is missing path: {:?}: {why}",
        pointer_string(path)
    ))
}

/// An array index token: decimal digits without leading zeros (also negative, counted from the
/// end, as evanphx/json-patch v4 in kube-apiserver accepts).
fn array_index(tok: &str, len: usize, allow_end: bool) -> Option<usize> {
    if tok == "-" {
        return allow_end.then_some(len);
    }
    let (neg, digits) = match tok.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, tok),
    };
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    let idx = if neg { len.checked_sub(n)? } else { n };
    let max = if allow_end { len } else { len.checked_sub(1)? };
    (idx <= max).then_some(idx)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get(tok)?,
            Value::Array(a) => a.get(array_index(tok, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(tok)?,
            Value::Array(a) => {
                let i = array_index(tok, a.len(), false)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value, op: &str) -> Result<()> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = array_index(last, a.len(), true)
                .ok_or_else(|| not_applicable(op, path, "invalid index"))?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(not_applicable(op, path, "missing value")),
    }
}

fn remove(doc: &mut Value, path: &[String], op: &str) -> Result<Value> {
    let Some((last, parent)) = path.split_last() else {
        return Err(not_applicable(op, path, "cannot remove the whole document"));
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => m
            .remove(last)
            .ok_or_else(|| not_applicable(op, path, "missing value")),
        Some(Value::Array(a)) => {
            let i = array_index(last, a.len(), false)
                .ok_or_else(|| not_applicable(op, path, "invalid index"))?;
            Ok(a.remove(i))
        }
        _ => Err(not_applicable(op, path, "missing value")),
    }
}

fn apply_op(doc: &mut Value, op: &Op) -> Result<()> {
    match op {
        Op::Add { path, value } => add(doc, path, value.clone(), "add"),
        Op::Remove { path } => remove(doc, path, "remove").map(|_| ()),
        Op::Replace { path, value } => match get_mut(doc, path) {
            Some(slot) => {
                *slot = value.clone();
                Ok(())
            }
            None => Err(not_applicable("replace", path, "missing value")),
        },
        Op::Move { from, path } => {
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err(Error::PatchNotApplicable(format!(
                    "move operation does not apply: {:?} is a child of {:?}",
                    pointer_string(path),
                    pointer_string(from)
                )));
            }
            let v = remove(doc, from, "move")?;
            add(doc, path, v, "move")
        }
        Op::Copy { from, path } => {
            let v = get(doc, from)
                .cloned()
                .ok_or_else(|| not_applicable("copy", from, "missing value"))?;
            add(doc, path, v, "copy")
        }
        Op::Test { path, value } => {
            let got = get(doc, path);
            let ok = match got {
                Some(v) => v == value,
                None => value.is_null(),
            };
            if ok {
                Ok(())
            } else {
                Err(Error::PatchNotApplicable(format!(
                    "testing value {} failed: test failed",
                    pointer_string(path)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jp(doc: Value, patch: Value) -> Result<Value> {
        let p = JsonPatch::from_value(&patch)?;
        let mut d = doc;
        p.apply(&mut d)?;
        Ok(d)
    }

    #[test]
    fn rfc6902_examples() {
        // A.1–A.10 of RFC 6902.
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}])
            )
            .unwrap(),
            json!({"baz":"qux","foo":"bar"})
        );
        assert_eq!(
            jp(
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}])
            )
            .unwrap(),
            json!({"foo":["bar","qux","baz"]})
        );
        assert_eq!(
            jp(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}])
            )
            .unwrap(),
            json!({"foo":"bar"})
        );
        assert_eq!(
            jp(
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}])
            )
            .unwrap(),
            json!({"foo":["bar","baz"]})
        );
        assert_eq!(
            jp(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}])
            )
            .unwrap(),
            json!({"baz":"boo","foo":"bar"})
        );
        assert_eq!(
            jp(
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])
            )
            .unwrap(),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})
        );
        assert_eq!(
            jp(
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}])
            )
            .unwrap(),
            json!({"foo":["all","cows","eat","grass"]})
        );
        assert!(jp(
            json!({"baz":"qux","foo":["a",2,"c"]}),
            json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}])
        )
        .is_ok());
        let e = jp(
            json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}]),
        )
        .unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}])
            )
            .unwrap(),
            json!({"foo":"bar","child":{"grandchild":{}}})
        );
        assert_eq!(
            jp(
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}])
            )
            .unwrap(),
            json!({"foo":["bar",["abc","def"]]})
        );
        // Escapes.
        assert_eq!(
            jp(
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10},{"op":"remove","path":"/~1"}])
            )
            .unwrap(),
            json!({"~1":10})
        );
    }

    #[test]
    fn failures_leave_doc_unchanged_and_map_to_codes() {
        let mut doc = json!({"metadata":{"labels":{"a":"b"}}});
        let p = JsonPatch::from_value(&json!([
            {"op":"add","path":"/metadata/labels/c","value":"d"},
            {"op":"remove","path":"/spec/x"}
        ]))
        .unwrap();
        let e = p.apply(&mut doc).unwrap_err();
        assert_eq!(e.code(), 422);
        assert_eq!(doc, json!({"metadata":{"labels":{"a":"b"}}}));
        for bad in [
            json!({}),
            json!([{"path":"/a"}]),
            json!([{"op":"frob","path":"/a"}]),
            json!([{"op":"add","path":"a","value":1}]),
            json!([{"op":"add","path":"/a"}]),
            json!([{"op":"move","path":"/a"}]),
            json!([{"op":"remove","path":"/a~2"}]),
            json!([1]),
        ] {
            assert_eq!(
                JsonPatch::from_value(&bad).unwrap_err().code(),
                400,
                "{bad}"
            );
        }
        assert_eq!(JsonPatch::parse(b"{nope").unwrap_err().code(), 400);
        let many = Value::Array(vec![json!({"op":"test","path":"","value":null}); 10_001]);
        assert_eq!(JsonPatch::from_value(&many).unwrap_err().code(), 413);
        // Index rules.
        assert!(jp(
            json!({"a":[1]}),
            json!([{"op":"add","path":"/a/2","value":0}])
        )
        .is_err());
        assert!(jp(
            json!({"a":[1]}),
            json!([{"op":"add","path":"/a/01","value":0}])
        )
        .is_err());
        assert!(jp(
            json!({"a":[1]}),
            json!([{"op":"replace","path":"/a/1","value":0}])
        )
        .is_err());
        assert_eq!(
            jp(json!({"a":[1,2]}), json!([{"op":"remove","path":"/a/-1"}])).unwrap(),
            json!({"a":[1]})
        );
        // A move into its own child.
        assert!(jp(
            json!({"a":{"b":1}}),
            json!([{"op":"move","from":"/a","path":"/a/b/c"}])
        )
        .is_err());
    }

    #[test]
    fn copy_amplification_is_refused_before_it_is_built() {
        // The attack of issue 8: each copy doubles a value; 20 of them would copy 1 GiB.
        let mut doc = json!({"metadata":{"annotations":{"a": "x".repeat(1024)}}});
        let mut ops = vec![json!({"op":"add","path":"/data","value":{"v0":"x".repeat(1024)}})];
        for i in 0..20 {
            ops.push(json!({"op":"add","path":format!("/data/v{}", i + 1),"value":{}}));
            ops.push(json!({"op":"copy","from":format!("/data/v{i}"),"path":format!("/data/v{}/a", i + 1)}));
            ops.push(json!({"op":"copy","from":format!("/data/v{i}"),"path":format!("/data/v{}/b", i + 1)}));
        }
        let before = doc.clone();
        let e = JsonPatch::from_value(&Value::Array(ops))
            .unwrap()
            .apply(&mut doc)
            .unwrap_err();
        assert_eq!(e.code(), 413, "{e}");
        assert_eq!(doc, before, "a refused patch leaves the object unchanged");
        // Copies within the budget still work.
        assert_eq!(
            jp(
                json!({"a":{"b":[1,2]}}),
                json!([{"op":"copy","from":"/a","path":"/c"}])
            )
            .unwrap(),
            json!({"a":{"b":[1,2]},"c":{"b":[1,2]}})
        );
    }

    #[test]
    fn json_size_matches_serialisation_and_stops_at_the_budget() {
        let v = json!({"a":[1,true,null,"xy"],"bb":{"c":-1.5}});
        let n = serde_json::to_string(&v).unwrap().len();
        assert_eq!(json_size_within(&v, 1 << 20), Some(n));
        assert_eq!(json_size_within(&v, n), Some(n));
        assert_eq!(json_size_within(&v, n - 1), None);
    }

    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            let mut d = doc.clone();
            merge_patch(&mut d, &patch);
            assert_eq!(d, want, "{doc} + {patch}");
        }
        let s = Schema::metadata_only();
        assert_eq!(
            apply_patch(PatchType::Merge, &json!({"a":1}), b"[1]", s)
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            apply_patch(
                PatchType::Merge,
                &json!({"spec":{"replicas":1}}),
                br#"{"spec":{"replicas":2}}"#,
                s
            )
            .unwrap(),
            json!({"spec":{"replicas":2}})
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        for t in [
            PatchType::Json,
            PatchType::Merge,
            PatchType::Strategic,
            PatchType::Apply,
        ] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }
}
