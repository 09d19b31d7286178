//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use serde_json::{Map, Value};

use crate::api::{json_response, Api, Body, Ctx};
use crate::body::{parse_json, parse_yaml, Media};
use crate::error::ApiError;
use crate::rest::{content_type, subject};
use crate::route::Target;

/// RFC 7386 JSON merge patch.
// TODO(machinery): use h8s_machinery's merge patch once it lands.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Drops strategic-merge-patch `$` directives (fallback: strategic merge as merge).
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for x in m.values_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn pointer_parts(p: &str) -> Result<Vec<String>, ApiError> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    if !p.starts_with('/') {
        return Err(ApiError::bad_request(format!("invalid JSON pointer {p:?}")));
    }
    Ok(p[1..]
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn json_patch_add(doc: &mut Value, path: &str, val: Value, replace: bool) -> Result<(), ApiError> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        *doc = val;
        return Ok(());
    };
    let mut cur = doc;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| unprocessable(format!("doc is missing path: {path}")))?;
    }
    match cur {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(unprocessable(format!("doc is missing key: {path}")));
            }
            m.insert(last.clone(), val);
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(val);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| unprocessable(format!("invalid array index in {path}")))?;
                if replace {
                    *a.get_mut(i)
                        .ok_or_else(|| unprocessable(format!("index out of range: {path}")))? = val;
                } else if i <= a.len() {
                    a.insert(i, val);
                } else {
                    return Err(unprocessable(format!("index out of range: {path}")));
                }
            }
        }
        _ => return Err(unprocessable(format!("doc is missing path: {path}"))),
    }
    Ok(())
}

fn json_patch_remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let parts = pointer_parts(path)?;
    let Some((last, parents)) = parts.split_last() else {
        return Err(unprocessable("cannot remove the whole document"));
    };
    let mut cur = doc;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| unprocessable(format!("doc is missing path: {path}")))?;
    }
    match cur {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| unprocessable(format!("doc is missing key: {path}"))),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| unprocessable(format!("invalid array index in {path}")))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(unprocessable(format!("index out of range: {path}")))
            }
        }
        _ => Err(unprocessable(format!("doc is missing path: {path}"))),
    }
}

fn unprocessable(msg: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

/// RFC 6902 JSON patch.
// TODO(machinery): use h8s_machinery's JSON patch once it lands.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be a JSON array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("json patch operation has no path"))?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("json patch {kind} operation has no value"))
            })
        };
        let from = || {
            op.get("from").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("json patch {kind} operation has no from"))
            })
        };
        match kind {
            "add" => json_patch_add(doc, path, value()?, false)?,
            "replace" => json_patch_add(doc, path, value()?, true)?,
            "remove" => {
                json_patch_remove(doc, path)?;
            }
            "test" => {
                let got = doc.pointer(path);
                if got != Some(&value()?) {
                    return Err(unprocessable(format!("testing value {path} failed")));
                }
            }
            "move" => {
                let v = json_patch_remove(doc, from()?)?;
                json_patch_add(doc, path, v, false)?;
            }
            "copy" => {
                let v = doc.pointer(from()?).cloned().ok_or_else(|| {
                    unprocessable(format!(
                        "doc is missing from path: {}",
                        from().unwrap_or("")
                    ))
                })?;
                json_patch_add(doc, path, v, false)?;
            }
            other => return Err(ApiError::bad_request(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(())
}

/// Applies a JSON, merge or strategic patch to `obj` (no managed fields involved).
pub(crate) fn apply_simple(media: Media, obj: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut out = obj.clone();
    match media {
        Media::JsonPatch => {
            let p = parse_json(body)?;
            json_patch(&mut out, &p)?;
        }
        Media::MergePatch => {
            let p = parse_json(body)?;
            if !p.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            merge_patch(&mut out, &p);
        }
        Media::StrategicMergePatch => {
            let mut p = parse_json(body)?;
            if !p.is_object() {
                return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
            }
            strip_directives(&mut p);
            merge_patch(&mut out, &p);
        }
        Media::ApplyPatch => {
            let p = parse_yaml(body)?;
            merge_patch(&mut out, &p);
        }
        _ => {
            return Err(ApiError::unsupported_media(
                "a PATCH needs application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml",
            ))
        }
    }
    Ok(out)
}

impl Api {
    pub(crate) async fn patch(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let ct = content_type(cx).unwrap_or("");
        let media = Media::parse(Some(ct)).and_then(|m| {
            if m.is_patch() {
                Ok(m)
            } else {
                Err(ApiError::unsupported_media(ct))
            }
        })?;
        let name = t.name.clone().unwrap_or_default();
        self.check_fields(cx, t.res, &body, media)?;
        let apply = media == Media::ApplyPatch;
        if apply && cx.field_manager().is_none() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let applied = if apply {
            Some(parse_yaml(&body)?)
        } else {
            None
        };
        if let Some(a) = &applied {
            if !a.is_object() {
                return Err(ApiError::bad_request("apply patch must be an object"));
            }
            let n = crate::obj::name(a);
            if !n.is_empty() && n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let t2 = t.clone();
        let (o, created) = self
            .guaranteed_update(cx, t, &name, apply && t.sub.is_none(), |old| match old {
                Some(old) => {
                    let mut new = apply_simple(media, old, &body)?;
                    if apply {
                        // Apply carries no precondition unless it names a resourceVersion.
                        let rv =
                            crate::obj::resource_version(applied.as_ref().unwrap_or(&Value::Null))
                                .to_string();
                        let rv = if rv.is_empty() {
                            crate::obj::resource_version(old).to_string()
                        } else {
                            rv
                        };
                        crate::obj::meta_mut(&mut new)
                            .insert("resourceVersion".into(), Value::String(rv));
                    }
                    Ok(new)
                }
                None => {
                    let mut new = applied.clone().unwrap_or(Value::Null);
                    crate::rest::check_type_meta(t2.res, &mut new)?;
                    Ok(new)
                }
            })
            .await
            .map_err(|e| {
                if e.code == 404 && !apply {
                    ApiError::not_found(&subject(t, &name))
                } else {
                    e
                }
            })?;
        Ok(json_response(if created { 201 } else { 200 }, &o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let m = apply_simple(
            Media::MergePatch,
            &o,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let j = apply_simple(
            Media::JsonPatch,
            &o,
            br#"[{"op":"add","path":"/spec/x/-","value":3},{"op":"replace","path":"/metadata/labels/a","value":"9"},{"op":"remove","path":"/metadata/labels/b"}]"#,
        )
        .unwrap();
        assert_eq!(j["spec"]["x"], json!([1, 2, 3]));
        assert_eq!(j["metadata"]["labels"], json!({"a": "9"}));
        let e = apply_simple(
            Media::JsonPatch,
            &o,
            br#"[{"op":"test","path":"/spec/x/0","value":5}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            apply_simple(Media::JsonPatch, &o, b"{").unwrap_err().code,
            400
        );
        assert_eq!(
            apply_simple(Media::JsonPatch, &o, br#"[{"op":"bogus","path":"/a"}]"#)
                .unwrap_err()
                .code,
            400
        );
    }
}
