//! Review kinds: create-only, never stored, answered on the spot. A [`Reviewer`]
//! registered for the resource answers (TokenReview); the registry itself answers
//! SelfSubjectReview (the caller's user info) and SelfSubjectAccessReview (the
//! configured authorizer's decision).
//!
//! [`Reviewer`]: crate::seams::Reviewer

use http::Response;
use serde_json::{json, Value};

use crate::auth::{Attributes, Decision};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::obj;
use crate::response::{json_response, Body};
use crate::route::Target;
use crate::state::Api;

/// The reviews the registry answers itself.
enum Builtin {
    SelfSubjectReview,
    SelfSubjectAccessReview,
}

fn builtin(res: &h8s_types::Resource) -> Option<Builtin> {
    match (res.group, res.kind) {
        ("authentication.k8s.io", "SelfSubjectReview") => Some(Builtin::SelfSubjectReview),
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            Some(Builtin::SelfSubjectAccessReview)
        }
        _ => None,
    }
}

/// The attributes a SelfSubjectAccessReview asks about.
pub(crate) fn access_attributes(o: &Value) -> Attributes {
    let ra = obj::at(o, "spec.resourceAttributes").filter(|v| !v.is_null());
    let s = |v: Option<&Value>, k: &str| {
        v.and_then(|x| x.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match ra {
        Some(ra) => Attributes {
            verb: s(Some(ra), "verb"),
            namespace: s(Some(ra), "namespace"),
            group: s(Some(ra), "group"),
            version: s(Some(ra), "version"),
            resource: s(Some(ra), "resource"),
            subresource: s(Some(ra), "subresource"),
            name: s(Some(ra), "name"),
            resource_request: true,
            path: String::new(),
        },
        None => {
            let nra = obj::at(o, "spec.nonResourceAttributes");
            Attributes {
                verb: s(nra, "verb"),
                path: s(nra, "path"),
                ..Default::default()
            }
        }
    }
}

impl Api {
    pub(crate) async fn review(
        &self,
        cx: &mut Ctx,
        t: &Target,
        mut o: Value,
    ) -> Result<Response<Body>, ApiError> {
        let m = o
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        m.insert("apiVersion".into(), json!(t.res.api_version()));
        m.insert("kind".into(), json!(t.res.kind));
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(mm) = meta.as_object_mut() {
            mm.insert("creationTimestamp".into(), Value::Null);
            // rbac: a namespaced review (LocalSubjectAccessReview) is in its URL's namespace.
            if let Some(ns) = &t.ns {
                mm.insert("namespace".into(), json!(ns));
            }
        }
        let name = obj::name(&o).to_string();
        t.strategy()
            .validate_create(t.res, &o)
            .map_err(|e| ApiError::from_field_errors(t.res.kind, t.res.group, &name, &e))?;
        let key = (t.res.group.to_string(), t.res.plural.to_string());
        if let Some(r) = self.reviewers.get(&key) {
            let answered = r.review(&cx.user, o).await?;
            return Ok(json_response(201, &answered));
        }
        match builtin(t.res) {
            Some(Builtin::SelfSubjectReview) => {
                o["status"] = json!({"userInfo": cx.user.to_json()});
            }
            Some(Builtin::SelfSubjectAccessReview) => {
                let attrs = access_attributes(&o);
                o["status"] = match self.authz.authorize(&cx.user, &attrs) {
                    // A filtered allowance is still an allowance.
                    Decision::Allow | Decision::AllowFiltered(_) => json!({"allowed": true}),
                    Decision::Deny(why) => json!({"allowed": false, "reason": why}),
                };
            }
            None => {
                return Err(ApiError::unavailable(format!(
                    "no reviewer answers {}.{} on this server",
                    t.res.plural, t.res.group
                )))
            }
        }
        Ok(json_response(201, &o))
    }
}
