//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding: CEL validations run
//! in the API server, no webhook involved.
//!
//! A binding names a policy; a write is checked when the policy's `matchConstraints`
//! and the binding's `matchResources` (if any) match it and every match condition is
//! true. `variables` are evaluated in order (each sees the ones before it as
//! `variables.<name>`), then each validation; a false one is acted on by the binding's
//! `validationActions`: Deny (the write fails with the validation's reason and message),
//! Warn (a warning header), Audit (logged; h8s has no audit annotations yet). An
//! expression that fails to evaluate follows the policy's `failurePolicy`.
//!
//! `paramKind` with `paramRef.name` (the parameter object read from the store) is
//! supported; `paramRef.selector` is not (such a binding finds no parameter).

use std::collections::HashMap;
use std::sync::Arc;

use h8s_machinery::LabelSelector;
use serde_json::{json, Value};

use super::config::{self, Condition, FailurePolicy, Rule};
use super::Dynamic;
use crate::admission::Request;
use crate::cel::{self, Outcome, Program};
use crate::error::ApiError;

/// `matchConstraints` / `matchResources`.
struct Match {
    rules: Vec<Rule>,
    exclude: Vec<Rule>,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
}

impl Match {
    fn parse(m: &Value) -> Match {
        let rules = |k: &str| {
            m.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Rule::parse)
                .collect()
        };
        Match {
            rules: rules("resourceRules"),
            exclude: rules("excludeResourceRules"),
            namespace_selector: config::selector(m.get("namespaceSelector")),
            object_selector: config::selector(m.get("objectSelector")),
        }
    }

    /// `any_rule`: with no `resourceRules`, a binding's matchResources matches every
    /// resource (the policy's constraints already narrowed it).
    fn matches(&self, req: &Request<'_>, ns: &Value, obj: &Value, any_rule: bool) -> bool {
        let ruled = if self.rules.is_empty() {
            any_rule
        } else {
            self.rules.iter().any(|r| r.matches(req))
        };
        if !ruled || self.exclude.iter().any(|r| r.matches(req)) {
            return false;
        }
        let ns_applies =
            req.res.namespaced || (req.res.group.is_empty() && req.res.plural == "namespaces");
        if ns_applies && !config::selects(&self.namespace_selector, ns) {
            return false;
        }
        config::selects(&self.object_selector, obj)
    }
}

/// One `validations` entry.
struct Validation {
    program: Result<Program, String>,
    expression: String,
    message: String,
    message_expression: Option<Result<Program, String>>,
    reason: String,
}

/// A compiled ValidatingAdmissionPolicy.
pub(crate) struct Policy {
    constraints: Match,
    conditions: Vec<Condition>,
    validations: Vec<Validation>,
    variables: Vec<(String, Result<Program, String>)>,
    failure: FailurePolicy,
    /// `paramKind` as (apiVersion, kind).
    param_kind: Option<(String, String)>,
}

impl Policy {
    pub(crate) fn compile(o: &Value) -> Policy {
        let spec = o.get("spec").cloned().unwrap_or(Value::Null);
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let list = |k: &str| {
            spec.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Policy {
            constraints: Match::parse(spec.get("matchConstraints").unwrap_or(&Value::Null)),
            conditions: config::conditions(&spec),
            validations: list("validations")
                .iter()
                .map(|v| Validation {
                    program: cel::compile(&s(v, "expression")),
                    expression: s(v, "expression"),
                    message: s(v, "message"),
                    message_expression: v
                        .get("messageExpression")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(cel::compile),
                    reason: s(v, "reason"),
                })
                .collect(),
            variables: list("variables")
                .iter()
                .map(|v| (s(v, "name"), cel::compile(&s(v, "expression"))))
                .collect(),
            failure: FailurePolicy::parse(spec.get("failurePolicy")),
            param_kind: spec
                .get("paramKind")
                .filter(|p| p.is_object())
                .map(|p| (s(p, "apiVersion"), s(p, "kind"))),
        }
    }
}

/// A compiled ValidatingAdmissionPolicyBinding.
pub(crate) struct Binding {
    name: String,
    policy: String,
    deny: bool,
    warn: bool,
    audit: bool,
    resources: Option<Match>,
    /// `paramRef`: (name, namespace, deny when missing); `None` name: a selector.
    param_ref: Option<(Option<String>, String, bool)>,
}

impl Binding {
    pub(crate) fn compile(o: &Value) -> Binding {
        let spec = o.get("spec").cloned().unwrap_or(Value::Null);
        let actions: Vec<&str> = spec
            .get("validationActions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        Binding {
            name: crate::obj::name(o).to_string(),
            policy: spec
                .get("policyName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            deny: actions.contains(&"Deny"),
            warn: actions.contains(&"Warn"),
            audit: actions.contains(&"Audit"),
            resources: spec
                .get("matchResources")
                .filter(|m| m.is_object())
                .map(Match::parse),
            param_ref: spec.get("paramRef").filter(|p| p.is_object()).map(|p| {
                let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (
                    Some(s("name")).filter(|n| !n.is_empty()),
                    s("namespace"),
                    s("parameterNotFoundAction") != "Allow",
                )
            }),
        }
    }
}

/// The HTTP code of a validation's `reason`.
fn reason_status(reason: &str) -> (u16, &'static str) {
    match reason {
        "Unauthorized" => (401, "Unauthorized"),
        "Forbidden" => (403, "Forbidden"),
        "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    }
}

/// Checks the write against every binding (in name order) whose policy matches it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    policies: &HashMap<String, Arc<Policy>>,
    bindings: &[Arc<Binding>],
    d: &Dynamic,
    req: &Request<'_>,
    options: &Value,
    obj: Option<&Value>,
    ns_labels: &Value,
    obj_labels: &Value,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    for b in bindings {
        let Some(p) = policies.get(&b.policy) else {
            continue;
        };
        if !p.constraints.matches(req, ns_labels, obj_labels, false) {
            continue;
        }
        if let Some(m) = &b.resources {
            if !m.matches(req, ns_labels, obj_labels, true) {
                continue;
            }
        }
        let head = format!(
            "ValidatingAdmissionPolicy '{}' with binding '{}'",
            b.policy, b.name
        );
        let fail = |why: String| -> Result<(), ApiError> {
            match p.failure {
                FailurePolicy::Ignore => {
                    tracing::warn!(policy = %b.policy, binding = %b.name, error = %why, "policy failed; failurePolicy Ignore admits");
                    Ok(())
                }
                FailurePolicy::Fail => Err(ApiError::new(
                    422,
                    "Invalid",
                    format!("{head} denied request: {why}"),
                )),
            }
        };
        // The parameter object.
        let params = match (&p.param_kind, &b.param_ref) {
            (Some((av, kind)), Some((name, ns, deny_missing))) => {
                let found = match (h8s_types::resources::find_api_version_kind(av, kind), name) {
                    (Some(res), Some(name)) => {
                        let ns = if !res.namespaced {
                            None
                        } else if !ns.is_empty() {
                            Some(ns.as_str())
                        } else {
                            Some(req.namespace).filter(|n| !n.is_empty())
                        };
                        d.read_param(res, ns, name).await?
                    }
                    _ => None,
                };
                match found {
                    Some(v) => v,
                    None if *deny_missing => {
                        fail("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".to_string())?;
                        continue;
                    }
                    None => continue,
                }
            }
            (Some(_), None) => {
                fail(
                    "failed to configure binding: paramRef is required when paramKind is set"
                        .into(),
                )?;
                continue;
            }
            _ => Value::Null,
        };
        let mut vars = config::cel_vars(req, obj);
        vars.push(("params", params));
        vars.push((
            "namespaceObject",
            if req.namespace.is_empty() {
                Value::Null
            } else {
                json!({"metadata": {"name": req.namespace, "labels": ns_labels}})
            },
        ));
        let _ = options;
        match config::eval_conditions(&p.conditions, &vars) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                fail(e)?;
                continue;
            }
        }
        // Variables, in order.
        let mut variables = serde_json::Map::new();
        let mut var_err = None;
        for (name, prog) in &p.variables {
            vars.retain(|(k, _)| *k != "variables");
            vars.push(("variables", Value::Object(variables.clone())));
            let refs: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (*k, v)).collect();
            match prog
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| p.eval_json(&refs))
            {
                Ok(v) => {
                    variables.insert(name.clone(), v);
                }
                Err(e) => {
                    var_err = Some(format!("variable '{name}' resulted in error: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = var_err {
            fail(e)?;
            continue;
        }
        vars.retain(|(k, _)| *k != "variables");
        vars.push(("variables", Value::Object(variables)));
        let refs: Vec<(&str, &Value)> = vars.iter().map(|(k, v)| (*k, v)).collect();
        for v in &p.validations {
            let outcome = v
                .program
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|prog| prog.eval(&refs));
            let ok = match outcome {
                Ok(Outcome::Bool(b)) => b,
                Ok(_) => {
                    fail(format!(
                        "expression '{}' resulted in error: the expression did not evaluate to a bool",
                        v.expression
                    ))?;
                    continue;
                }
                Err(e) => {
                    fail(format!(
                        "expression '{}' resulted in error: {e}",
                        v.expression
                    ))?;
                    continue;
                }
            };
            if ok {
                continue;
            }
            let message = match &v.message_expression {
                Some(Ok(m)) => match m.eval(&refs) {
                    Ok(Outcome::String(s)) if !s.trim().is_empty() => s.replace('\n', " "),
                    _ => default_message(v),
                },
                _ => default_message(v),
            };
            if b.audit {
                tracing::info!(policy = %b.policy, binding = %b.name, %message, "admission policy audit");
            }
            if b.warn {
                warnings.push(format!("Validation failed for {head}: {message}"));
            }
            if b.deny {
                let (code, reason) = reason_status(&v.reason);
                return Err(ApiError::new(
                    code,
                    reason,
                    format!("{head} denied request: {message}"),
                ));
            }
        }
    }
    Ok(())
}

fn default_message(v: &Validation) -> String {
    if v.message.is_empty() {
        format!("failed expression: {}", v.expression)
    } else {
        v.message.clone()
    }
}
