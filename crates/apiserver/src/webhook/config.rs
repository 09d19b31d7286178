//! Webhook configurations in compiled form, and which requests a webhook sees: rules
//! (operations, groups, versions, resources with subresources, scope), the namespace and
//! object selectors, and CEL match conditions.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use h8s_machinery::LabelSelector;
use serde_json::Value;

use super::operation_name;
use crate::admission::Request;
use crate::cel::{self, Outcome, Program};
use crate::error::ApiError;

/// A rule of `rules` / `resourceRules`: what a webhook or policy is about.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    /// `*`, `Cluster` or `Namespaced`.
    scope: String,
    /// For policies: `resourceNames`.
    names: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub(crate) fn parse(r: &Value) -> Rule {
        Rule {
            operations: strings(r.get("operations")),
            groups: strings(r.get("apiGroups")),
            versions: strings(r.get("apiVersions")),
            resources: strings(r.get("resources")),
            scope: r
                .get("scope")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string(),
            names: strings(r.get("resourceNames")),
        }
    }

    /// Whether the rule covers the request (kube's `rules.Matcher`).
    pub(crate) fn matches(&self, req: &Request<'_>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        if !any(&self.operations, operation_name(req.op)) {
            return false;
        }
        if !any(&self.groups, req.res.group) || !any(&self.versions, req.res.version) {
            return false;
        }
        let sub = req.sub.unwrap_or("");
        let resource_ok = self.resources.iter().any(|r| {
            let (main, rsub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            let main_ok = main == "*" || main == req.res.plural;
            // kube's splitResource: `*` matches every resource but no subresource,
            // `pods/*` pods and all their subresources, `*/*` everything.
            let sub_ok = rsub == "*" || rsub == sub;
            main_ok && sub_ok
        });
        if !resource_ok {
            return false;
        }
        let scope_ok = match self.scope.as_str() {
            "Cluster" => !req.res.namespaced,
            "Namespaced" => req.res.namespaced,
            _ => true,
        };
        scope_ok && (self.names.is_empty() || self.names.iter().any(|n| n == req.name))
    }
}

/// A label selector that matches nothing when it cannot be parsed (validation refuses
/// such selectors, so this only guards against objects written before it did).
pub(crate) fn selector(v: Option<&Value>) -> LabelSelector {
    match v {
        None | Some(Value::Null) => LabelSelector::everything(),
        Some(v) => LabelSelector::from_json(v).unwrap_or_else(|_| LabelSelector::nothing()),
    }
}

/// Whether a label selector selects a label map.
pub(crate) fn selects(sel: &LabelSelector, labels: &Value) -> bool {
    if sel.is_everything() {
        return true;
    }
    let wrapped = serde_json::json!({"metadata": {"labels": labels}});
    sel.matches_object(&wrapped)
}

/// A compiled match condition.
pub(crate) struct Condition {
    pub(crate) name: String,
    pub(crate) program: Result<Program, String>,
}

/// Compiles `matchConditions`.
pub(crate) fn conditions(owner: &Value) -> Vec<Condition> {
    owner
        .get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Condition {
            name: c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            program: cel::compile(c.get("expression").and_then(Value::as_str).unwrap_or("")),
        })
        .collect()
}

/// How a failure to call a webhook (or evaluate a policy) is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailurePolicy {
    Fail,
    Ignore,
}

impl FailurePolicy {
    pub(crate) fn parse(v: Option<&Value>) -> FailurePolicy {
        match v.and_then(Value::as_str) {
            Some("Ignore") => FailurePolicy::Ignore,
            _ => FailurePolicy::Fail,
        }
    }
}

/// Where a webhook is called.
pub(crate) enum Endpoint {
    /// `https://host:port/path` with a TLS client that trusts the caBundle, and idle
    /// connections kept for the next call.
    Url {
        url: http::Uri,
        tls: Arc<rustls::ClientConfig>,
        idle: super::call::Pool,
    },
    /// `clientConfig.service`: resolved at each call to a ready endpoint of the Service
    /// (`aggregator::resolve`: pods of the system Network, or addresses the host reaches),
    /// TLS checked for `NAME.NAMESPACE.svc` against the caBundle; idle connections are kept
    /// while the endpoint stays the same.
    Service {
        namespace: String,
        name: String,
        port: u16,
        /// The request path (`/` when unset).
        path: String,
        tls: Arc<rustls::ClientConfig>,
        idle: super::call::Pool,
        /// The endpoint the idle connections go to.
        dialled: std::sync::Mutex<String>,
    },
    /// Not callable from the API server; the text says why.
    Unreachable(String),
}

/// One webhook of a configuration, compiled.
pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) mutating: bool,
    rules: Vec<Rule>,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    conditions: Vec<Condition>,
    pub(crate) endpoint: Endpoint,
    pub(crate) timeout: Duration,
    pub(crate) failure: FailurePolicy,
    /// `sideEffects: NoneOnDryRun` or `None` (others are refused by validation).
    pub(crate) side_effect_free: bool,
    pub(crate) reinvoke: bool,
}

/// Compiles the webhooks of a configuration.
pub(crate) fn hooks(o: &Value, mutating: bool) -> Vec<Arc<Hook>> {
    o.get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|w| Arc::new(Hook::compile(w, mutating)))
        .collect()
}

impl Hook {
    pub(crate) fn compile(w: &Value, mutating: bool) -> Hook {
        let s = |p: &str| w.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let timeout = w
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 30);
        Hook {
            name: s("/name").to_string(),
            mutating,
            rules: w
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Rule::parse)
                .collect(),
            namespace_selector: selector(w.get("namespaceSelector")),
            object_selector: selector(w.get("objectSelector")),
            conditions: conditions(w),
            endpoint: endpoint(w.get("clientConfig").unwrap_or(&Value::Null)),
            timeout: Duration::from_secs(timeout),
            failure: FailurePolicy::parse(w.get("failurePolicy")),
            side_effect_free: matches!(s("/sideEffects"), "None" | "NoneOnDryRun"),
            reinvoke: s("/reinvocationPolicy") == "IfNeeded",
        }
    }

    /// Whether the webhook is to be called for this request: a rule matches, the
    /// selectors select, and every match condition is true. A match condition that
    /// fails to evaluate follows the failure policy.
    pub(crate) fn matches(
        &self,
        req: &Request<'_>,
        obj: Option<&Value>,
        ns_labels: &Value,
        obj_labels: &Value,
    ) -> Result<bool, ApiError> {
        if !self.rules.iter().any(|r| r.matches(req)) {
            return Ok(false);
        }
        // Cluster-scoped objects (other than namespaces) are not subject to the
        // namespaceSelector.
        let ns_applies =
            req.res.namespaced || (req.res.group.is_empty() && req.res.plural == "namespaces");
        if ns_applies && !selects(&self.namespace_selector, ns_labels) {
            return Ok(false);
        }
        if !selects(&self.object_selector, obj_labels) {
            // kube matches the selector against the old object too (an update that
            // removes a label still reaches the webhook).
            let old_labels = req
                .old
                .and_then(|o| o.pointer("/metadata/labels"))
                .cloned()
                .unwrap_or_default();
            if req.old.is_none() || !selects(&self.object_selector, &old_labels) {
                return Ok(false);
            }
        }
        if self.conditions.is_empty() {
            return Ok(true);
        }
        let vars = cel_vars(req, obj);
        match eval_conditions(&self.conditions, &vars) {
            Ok(b) => Ok(b),
            Err(e) => match self.failure {
                FailurePolicy::Ignore => Ok(false),
                FailurePolicy::Fail => Err(super::call::failed(&self.name, &e)),
            },
        }
    }
}

/// The variables of admission CEL: `object`, `oldObject`, `request` (and, for policies,
/// `params`, `namespaceObject`, `variables`, added by the caller).
pub(crate) fn cel_vars(req: &Request<'_>, obj: Option<&Value>) -> Vec<(&'static str, Value)> {
    let request = serde_json::json!({
        "kind": {"group": req.res.group, "version": req.res.version, "kind": req.res.kind},
        "resource": {"group": req.res.group, "version": req.res.version, "resource": req.res.plural},
        "subResource": req.sub.unwrap_or(""),
        "name": req.name,
        "namespace": req.namespace,
        "operation": operation_name(req.op),
        "userInfo": req.user.to_json(),
        "dryRun": req.dry_run,
    });
    vec![
        ("object", obj.cloned().unwrap_or(Value::Null)),
        ("oldObject", req.old.cloned().unwrap_or(Value::Null)),
        ("request", request),
    ]
}

/// kube's match-condition semantics: any condition false → no match (even if another
/// errs); else any error → the error; else match.
pub(crate) fn eval_conditions(conds: &[Condition], vars: &[(&str, Value)]) -> Result<bool, String> {
    let refs: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (*k, v)).collect();
    let mut first_err = None;
    for c in conds {
        let r = match &c.program {
            Ok(p) => p.eval(&refs),
            Err(e) => Err(e.clone()),
        };
        match r {
            Ok(Outcome::Bool(false)) => return Ok(false),
            Ok(Outcome::Bool(true)) => {}
            Ok(_) => {
                first_err.get_or_insert(format!(
                    "matchCondition {:?} did not evaluate to a bool",
                    c.name
                ));
            }
            Err(e) => {
                first_err.get_or_insert(format!(
                    "failed evaluating match condition {:?}: {e}",
                    c.name
                ));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Where the webhook is called, from `clientConfig`.
fn endpoint(cc: &Value) -> Endpoint {
    let ca = || {
        cc.get("caBundle")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default()
    };
    if let Some(svc) = cc.get("service").filter(|v| v.is_object()) {
        let s = |k: &str| {
            svc.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // Validation checks the port (1-65535) and path; 443 when unset, as Kubernetes.
        let port = svc
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443);
        let path = match s("path") {
            p if p.is_empty() => "/".to_string(),
            p => p,
        };
        return match super::call::client_tls(&ca()) {
            Ok(tls) => Endpoint::Service {
                namespace: s("namespace"),
                name: s("name"),
                port,
                path,
                tls: Arc::new(tls),
                idle: Default::default(),
                dialled: Default::default(),
            },
            Err(e) => Endpoint::Unreachable(e),
        };
    }
    let Some(url) = cc.get("url").and_then(Value::as_str) else {
        return Endpoint::Unreachable("no clientConfig.url".into());
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return Endpoint::Unreachable(format!("bad URL {url:?}: {e}")),
    };
    if uri.scheme_str() != Some("https") {
        return Endpoint::Unreachable(format!("URL {url:?} is not https"));
    }
    match super::call::client_tls(&ca()) {
        Ok(tls) => Endpoint::Url {
            url: uri,
            tls: Arc::new(tls),
            idle: Default::default(),
        },
        Err(e) => Endpoint::Unreachable(e),
    }
}

/// The field errors of CEL expressions that do not compile in a configuration or policy
/// (kube-apiserver checks them on write: 422).
pub(crate) fn compile_errors(res: &h8s_types::Resource, o: &Value) -> h8s_types::FieldErrors {
    use h8s_types::validation::FieldError;
    let mut errs = h8s_types::FieldErrors::default();
    let mut check = |path: String, src: Option<&str>| {
        if let Some(src) = src.filter(|s| !s.is_empty()) {
            if let Err(e) = cel::compile(src) {
                errs.push(FieldError::invalid(path, src, &e));
            }
        }
    };
    let list = |o: &Value, p: &str| -> Vec<Value> {
        o.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let expr = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match res.kind {
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            for (i, w) in list(o, "/webhooks").iter().enumerate() {
                for (j, c) in list(w, "/matchConditions").iter().enumerate() {
                    check(
                        format!("webhooks[{i}].matchConditions[{j}].expression"),
                        expr(c, "expression").as_deref(),
                    );
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            for (j, c) in list(o, "/spec/matchConditions").iter().enumerate() {
                check(
                    format!("spec.matchConditions[{j}].expression"),
                    expr(c, "expression").as_deref(),
                );
            }
            for (j, v) in list(o, "/spec/validations").iter().enumerate() {
                check(
                    format!("spec.validations[{j}].expression"),
                    expr(v, "expression").as_deref(),
                );
                check(
                    format!("spec.validations[{j}].messageExpression"),
                    expr(v, "messageExpression").as_deref(),
                );
            }
            for (j, v) in list(o, "/spec/variables").iter().enumerate() {
                check(
                    format!("spec.variables[{j}].expression"),
                    expr(v, "expression").as_deref(),
                );
            }
        }
        _ => {}
    }
    errs
}
