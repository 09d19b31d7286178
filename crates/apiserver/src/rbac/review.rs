//! The access reviews of `authorization.k8s.io/v1` the registry does not answer itself:
//! SubjectAccessReview and LocalSubjectAccessReview (the configured authorizer's decision
//! for any user), and SelfSubjectRulesReview (the caller's rules in a namespace, what
//! `kubectl auth can-i --list` prints).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use super::rule::full_authority;
use super::{is_master, node, RbacAuthorizer};
use crate::auth::{Authorizer, Decision, UserInfo};
use crate::error::ApiError;
use crate::seams::Reviewer;

/// The user a SubjectAccessReview asks about.
fn subject_of(spec: &Value) -> UserInfo {
    let s = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    UserInfo {
        username: s("user"),
        uid: s("uid"),
        groups: spec.get("groups").map(strings).unwrap_or_default(),
        extra: spec
            .get("extra")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
            .unwrap_or_default(),
    }
}

/// SubjectAccessReview (`namespaced: false`) and LocalSubjectAccessReview.
pub struct AccessReviewer {
    authz: Arc<dyn Authorizer>,
    local: bool,
}

impl AccessReviewer {
    pub fn new(authz: Arc<dyn Authorizer>, local: bool) -> Self {
        AccessReviewer { authz, local }
    }

    fn answer(&self, mut review: Value) -> Result<Value, ApiError> {
        let spec = review.get("spec").cloned().unwrap_or_default();
        if self.local {
            let ns = review
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ns.is_empty() {
                return Err(ApiError::bad_request("namespace is required on this type"));
            }
            let ra_ns = spec
                .pointer("/resourceAttributes/namespace")
                .and_then(Value::as_str);
            if spec
                .pointer("/resourceAttributes")
                .is_some_and(|v| !v.is_null())
                && ra_ns.unwrap_or("") != ns
            {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {ns}"
                )));
            }
        }
        let user = subject_of(&spec);
        let attrs = crate::review::access_attributes(&review);
        review["status"] = match self.authz.authorize(&user, &attrs) {
            Decision::Allow | Decision::AllowFiltered(_) => json!({"allowed": true}),
            Decision::Deny(why) if why.is_empty() => json!({"allowed": false}),
            Decision::Deny(why) => json!({"allowed": false, "reason": why}),
        };
        Ok(review)
    }
}

impl Reviewer for AccessReviewer {
    fn review<'a>(
        &'a self,
        _user: &'a UserInfo,
        review: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(std::future::ready(self.answer(review)))
    }
}

/// SelfSubjectRulesReview, from RBAC's rules for the caller.
pub struct RulesReviewer {
    rbac: Arc<RbacAuthorizer>,
}

impl RulesReviewer {
    pub fn new(rbac: Arc<RbacAuthorizer>) -> Self {
        RulesReviewer { rbac }
    }

    fn answer(&self, user: &UserInfo, mut review: Value) -> Value {
        let ns = review
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (rules, errors) = if is_master(user) {
            (full_authority(), Vec::new())
        } else {
            self.rbac.read().rules_for(user, &ns)
        };
        let mut resource_rules = Vec::new();
        let mut non_resource_rules = Vec::new();
        for r in &rules {
            if !r.resources.is_empty() || !r.api_groups.is_empty() {
                let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups,
                                   "resources": r.resources});
                if !r.resource_names.is_empty() {
                    v["resourceNames"] = json!(r.resource_names);
                }
                resource_rules.push(v);
            }
            if !r.non_resource_urls.is_empty() {
                non_resource_rules
                    .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
            }
        }
        // A node's permissions come from the Node authorizer, which cannot list them.
        let incomplete = node::node_name(user).is_some();
        let mut status = json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": incomplete,
        });
        if !errors.is_empty() {
            status["evaluationError"] = json!(errors.join(", "));
        } else if incomplete {
            status["evaluationError"] =
                json!("node authorizer does not support user rule resolution");
        }
        review["status"] = status;
        review
    }
}

impl Reviewer for RulesReviewer {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        review: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(std::future::ready(Ok(self.answer(user, review))))
    }
}
