//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply.

use std::sync::Arc;

use bytes::Bytes;
use h8s_machinery::{PatchType, Schema};
use http::Response;
use serde_json::Value;

use crate::body::{parse_yaml, Media};
use crate::ctx::Ctx;
use crate::error::{from_machinery, ApiError};
use crate::response::{json_response, Body};
use crate::route::Target;
use crate::state::Api;

/// Applies a JSON, merge or strategic patch to `obj` (no managed fields involved).
pub(crate) fn apply_simple(
    media: Media,
    group: &str,
    kind: &str,
    obj: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    let schema = Schema::for_kind(group, kind);
    let pt = match media {
        Media::JsonPatch => PatchType::Json,
        Media::MergePatch => PatchType::Merge,
        Media::StrategicMergePatch => PatchType::Strategic,
        Media::ApplyPatch => {
            return Err(ApiError::bad_request(
                "apply patches go through server-side apply",
            ))
        }
        _ => {
            return Err(ApiError::unsupported_media(
                "a PATCH needs application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml",
            ))
        }
    };
    if pt == PatchType::Json {
        // Malformed JSON is a 400 whatever the machinery calls it.
        crate::body::parse_json(body)?;
    }
    h8s_machinery::apply_patch(pt, obj, body, schema).map_err(from_machinery)
}

impl Api {
    pub(crate) async fn patch(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let ct = cx.content_type().unwrap_or("");
        let media = Media::parse(Some(ct)).and_then(|m| {
            if m.is_patch() {
                Ok(m)
            } else {
                Err(ApiError::unsupported_media(ct))
            }
        })?;
        if media == Media::StrategicMergePatch && !t.strategy().strategic_merge_patch() {
            return Err(ApiError::unsupported_patch(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]));
        }
        let name = t.name.clone().unwrap_or_default();
        let mode = cx.field_validation()?;
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
        let res = t.res;
        // Unknown fields the patch introduces (not those already stored).
        let found: std::sync::Mutex<Vec<String>> = Default::default();
        let strict = |old: Option<&Value>, new: &Value| -> Result<(), ApiError> {
            if mode == "Ignore" || t2.sub.is_some() {
                return Ok(());
            }
            let strategy = t2.strategy();
            let unknown = |v: &Value| strategy.unknown_fields(res, v);
            let before = old.map(unknown).unwrap_or_default();
            let new_unknown: Vec<String> = unknown(new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if new_unknown.is_empty() {
                return Ok(());
            }
            let errs = h8s_types::strict::StrictErrors {
                duplicate: vec![],
                unknown: new_unknown,
            };
            if mode == "Strict" {
                let st = errs.to_status(res.kind, &res.api_version());
                return Err(ApiError::bad_request(
                    st["message"]
                        .as_str()
                        .unwrap_or("strict decoding error")
                        .to_string(),
                ));
            }
            if let Ok(mut f) = found.lock() {
                *f = errs.messages();
            }
            Ok(())
        };
        cx.applying = apply;
        let force = cx.query.flag("force");
        let manager = cx.manager_name();
        let sub = t.sub.clone().unwrap_or_default();
        let av = res.api_version();
        let config = applied.clone().map(|mut c| {
            // Status is not applied through the main resource (and vice versa).
            if let Some(m) = c.as_object_mut() {
                if res.has_status && sub.is_empty() {
                    m.remove("status");
                }
            }
            c
        });
        let ssa = |live: Option<&Value>| -> Result<Value, ApiError> {
            let time = crate::util::now_rfc3339();
            let m = h8s_machinery::Manager {
                name: &manager,
                api_version: &av,
                subresource: &sub,
                time: &time,
            };
            let schema = t2.strategy().patch_schema(res);
            h8s_machinery::apply(
                schema,
                live,
                config.as_ref().unwrap_or(&Value::Null),
                &m,
                force,
            )
            .map_err(from_machinery)
        };
        let (o, created) = self
            .guaranteed_update(cx, t, &name, apply && t.sub.is_none(), |old| match old {
                Some(old) => {
                    let mut new = if apply {
                        ssa(Some(old))?
                    } else {
                        let mut new = apply_simple(media, t2.res.group, t2.res.kind, old, &body)?;
                        // A patch is a precondition only when it names another
                        // resourceVersion; else it is retried on races, as in Kubernetes.
                        if crate::obj::resource_version(&new) == crate::obj::resource_version(old) {
                            crate::obj::meta_mut(&mut new).remove("resourceVersion");
                        }
                        new
                    };
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
                    strict(Some(old), &new)?;
                    Ok(new)
                }
                None => {
                    let mut new = ssa(None)?;
                    crate::obj::check_type_meta(t2.res, &mut new)?;
                    strict(None, &new)?;
                    Ok(new)
                }
            })
            .await
            .map_err(|e| {
                if e.code == 404 && !apply {
                    ApiError::not_found(&t.subject(&name))
                } else {
                    e
                }
            })?;
        cx.warnings.extend(found.into_inner().unwrap_or_default());
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
            "",
            "ConfigMap",
            &o,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let j = apply_simple(
            Media::JsonPatch,
            "",
            "ConfigMap",
            &o,
            br#"[{"op":"add","path":"/spec/x/-","value":3},{"op":"replace","path":"/metadata/labels/a","value":"9"},{"op":"remove","path":"/metadata/labels/b"}]"#,
        )
        .unwrap();
        assert_eq!(j["spec"]["x"], json!([1, 2, 3]));
        assert_eq!(j["metadata"]["labels"], json!({"a": "9"}));
        let e = apply_simple(
            Media::JsonPatch,
            "",
            "ConfigMap",
            &o,
            br#"[{"op":"test","path":"/spec/x/0","value":5}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            apply_simple(Media::JsonPatch, "", "ConfigMap", &o, b"{")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            apply_simple(
                Media::JsonPatch,
                "",
                "ConfigMap",
                &o,
                br#"[{"op":"bogus","path":"/a"}]"#
            )
            .unwrap_err()
            .code,
            400
        );
    }
}
