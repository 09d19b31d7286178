//! CEL (the Common Expression Language) as Kubernetes uses it, on the `cel` crate:
//! one shared environment (the standard library with the strings, lists and math
//! extensions), compilation with kube-apiserver's error wording, evaluation over JSON
//! values with a cost bound, and the `x-kubernetes-validations` rules of a custom
//! resource schema ([`SchemaRules`]).
//!
//! Reusable beyond CRDs (admission policies, webhook match conditions): [`compile`] and
//! [`Program::eval`] take any variables.
//!
//! Bounds: a rule's source is at most [`MAX_RULE_LEN`] bytes and may hold at most
//! [`MAX_COMPREHENSIONS`] comprehension macros (`all`, `exists`, `map`, `filter`…), so
//! its work grows at most polynomially with the (size-limited) object. The `cel` crate
//! cannot interrupt an evaluation, so the time bound is per request: once the rules of
//! one object have used [`EVAL_BUDGET`] of CPU time (the thread's own, so a busy machine
//! does not make a valid object fail), the remaining rules are not run and the write
//! fails, as kube-apiserver does when it runs out of cost budget.

mod check;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use h8s_types::crd::Schema;
use h8s_types::validation::{ErrorType, FieldError};
use serde_json::Value;

/// Longest rule or message expression accepted.
pub const MAX_RULE_LEN: usize = 4096;
/// Most comprehension macros in one expression.
pub const MAX_COMPREHENSIONS: usize = 4;
/// CEL CPU time one object's validation may use.
pub const EVAL_BUDGET: Duration = Duration::from_millis(250);

static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
    let mut env = cel::Env::stdlib();
    for ext in [
        cel::extensions::strings as fn(&mut cel::Env) -> Result<(), _>,
        cel::extensions::lists,
        cel::extensions::math,
    ] {
        if let Err(e) = env.add_extension(ext) {
            tracing::warn!(error = ?e, "CEL extension not available");
        }
    }
    Arc::new(env)
});

/// A compiled expression.
pub struct Program {
    src: String,
    program: cel::Program,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({:?})", self.src)
    }
}

/// Compiles an expression; the error is kube-apiserver's `compilation failed: …` text.
pub fn compile(src: &str) -> Result<Program, String> {
    if src.len() > MAX_RULE_LEN {
        return Err(format!(
            "compilation failed: the expression is longer than {MAX_RULE_LEN} bytes"
        ));
    }
    let comprehensions = [".all(", ".exists(", ".exists_one(", ".map(", ".filter("]
        .iter()
        .map(|m| src.matches(m).count())
        .sum::<usize>();
    if comprehensions > MAX_COMPREHENSIONS {
        return Err(format!(
            "estimated rule cost exceeds budget: more than {MAX_COMPREHENSIONS} comprehensions"
        ));
    }
    match ENV.compile(src) {
        Ok(program) => Ok(Program {
            src: src.to_string(),
            program,
        }),
        Err(e) => Err(format!(
            "compilation failed: ERROR: <input>: {}",
            e.to_string().trim()
        )),
    }
}

/// Converts JSON to a CEL value.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let h: std::collections::HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(h)
        }
    }
}

/// What an evaluation gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Bool(bool),
    String(String),
    Other,
}

impl Program {
    /// The source.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Evaluates with the given variables.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<Outcome, String> {
        let mut ctx = cel::Context::with_env(ENV.clone());
        for (name, v) in vars {
            ctx.add_variable_from_value(*name, to_cel(v));
        }
        match self.program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(Outcome::Bool(b)),
            Ok(cel::Value::String(s)) => Ok(Outcome::String(s.to_string())),
            Ok(_) => Ok(Outcome::Other),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Evaluates with the given variables; the result as JSON (admission policies'
    /// `variables`). Values JSON cannot hold (functions, opaque values) become null.
    pub fn eval_json(&self, vars: &[(&str, &Value)]) -> Result<Value, String> {
        let mut ctx = cel::Context::with_env(ENV.clone());
        for (name, v) in vars {
            ctx.add_variable_from_value(*name, to_cel(v));
        }
        self.program
            .execute(&ctx)
            .map(|v| from_cel(&v))
            .map_err(|e| e.to_string())
    }
}

/// Converts a CEL value to JSON.
pub fn from_cel(v: &cel::Value) -> Value {
    use base64::Engine as _;
    match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Bytes(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&**b))
        }
        cel::Value::List(l) => Value::Array(l.iter().map(from_cel).collect()),
        cel::Value::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                        cel::objects::Key::String(s) => s.to_string(),
                    };
                    (k, from_cel(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// One compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    program: Program,
    message: String,
    message_expression: Option<Program>,
    reason: ErrorType,
    field_path: String,
    transition: bool,
    optional_old_self: bool,
}

/// The rules of a schema, as a tree holding only the nodes that have rules below them.
#[derive(Debug, Default)]
struct Node {
    rules: Vec<Rule>,
    props: Vec<(String, Node)>,
    items: Option<Box<Node>>,
    values: Option<Box<Node>>,
    list_map_keys: Vec<String>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.props.is_empty()
            && self.items.is_none()
            && self.values.is_none()
    }
}

/// The compiled `x-kubernetes-validations` of one schema.
#[derive(Debug, Default)]
pub struct SchemaRules {
    root: Option<Node>,
}

/// A rule that does not compile: where it is and why.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    /// Path from the schema root, e.g. `properties[spec].x-kubernetes-validations[0].rule`.
    pub path: String,
    pub rule: String,
    pub message: String,
}

fn compile_node(s: &Schema, path: &str, errs: &mut Vec<CompileError>, depth: usize) -> Node {
    let mut n = Node {
        list_map_keys: s.list_map_keys.clone(),
        ..Default::default()
    };
    if depth > 64 {
        return n;
    }
    for (i, r) in s.rules.iter().enumerate() {
        let rp = format!("{path}x-kubernetes-validations[{i}]");
        let program = match compile(&r.rule) {
            Ok(p) => p,
            Err(m) => {
                errs.push(CompileError {
                    path: format!("{rp}.rule"),
                    rule: r.rule.clone(),
                    message: m,
                });
                continue;
            }
        };
        let message_expression = if r.message_expression.is_empty() {
            None
        } else {
            match compile(&r.message_expression) {
                Ok(p) => Some(p),
                Err(m) => {
                    errs.push(CompileError {
                        path: format!("{rp}.messageExpression"),
                        rule: r.message_expression.clone(),
                        message: m
                            .replace("compilation failed", "messageExpression compilation failed"),
                    });
                    continue;
                }
            }
        };
        let reason = match r.reason.as_str() {
            "FieldValueForbidden" => ErrorType::Forbidden,
            "FieldValueRequired" => ErrorType::Required,
            "FieldValueDuplicate" => ErrorType::Duplicate,
            _ => ErrorType::Invalid,
        };
        n.rules.push(Rule {
            program,
            message: r.message.clone(),
            message_expression,
            reason,
            field_path: r.field_path.clone(),
            transition: r.is_transition(),
            optional_old_self: r.optional_old_self,
        });
    }
    for (k, ps) in &s.properties {
        let c = compile_node(ps, &format!("{path}properties[{k}]."), errs, depth + 1);
        if !c.is_empty() {
            n.props.push((k.clone(), c));
        }
    }
    if let Some(is) = &s.items {
        let c = compile_node(is, &format!("{path}items."), errs, depth + 1);
        if !c.is_empty() {
            n.items = Some(Box::new(c));
        }
    }
    if let Some(vs) = s.map_values() {
        let c = compile_node(vs, &format!("{path}additionalProperties."), errs, depth + 1);
        if !c.is_empty() {
            n.values = Some(Box::new(c));
        }
    }
    n
}

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

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

struct Run {
    started: Duration,
    out_of_budget: bool,
}

/// CPU time this thread has used: rules run synchronously on one thread, so the
/// difference of two readings is what they cost, whatever else the machine does.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn type_errors_node(
    s: &Schema,
    path: &str,
    root: bool,
    skip: &dyn Fn(&str) -> bool,
    errs: &mut Vec<CompileError>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    for (i, r) in s.rules.iter().enumerate() {
        if skip(&r.rule) {
            continue;
        }
        for m in check::check(&r.rule, s, root) {
            errs.push(CompileError {
                path: format!("{path}x-kubernetes-validations[{i}].rule"),
                rule: r.rule.clone(),
                message: format!("compilation failed: ERROR: <input>: {m}"),
            });
        }
    }
    for (k, ps) in &s.properties {
        type_errors_node(
            ps,
            &format!("{path}properties[{k}]."),
            false,
            skip,
            errs,
            depth + 1,
        );
    }
    if let Some(is) = &s.items {
        type_errors_node(is, &format!("{path}items."), false, skip, errs, depth + 1);
    }
    if let Some(vs) = s.map_values() {
        type_errors_node(
            vs,
            &format!("{path}additionalProperties."),
            false,
            skip,
            errs,
            depth + 1,
        );
    }
}

impl SchemaRules {
    /// The type errors of the rules of `s` (the top-level schema of a custom resource):
    /// fields the schema does not declare, operators on mismatched types (see
    /// `cel/check.rs`). Rules for which `skip` is true (already in the stored
    /// definition: kube-apiserver ratchets) are not checked.
    pub fn type_errors(s: &Schema, skip: &dyn Fn(&str) -> bool) -> Vec<CompileError> {
        let mut errs = Vec::new();
        type_errors_node(s, "", true, skip, &mut errs, 0);
        errs
    }

    /// Compiles every rule of `s`; all failures are reported.
    pub fn compile(s: &Schema) -> Result<SchemaRules, Vec<CompileError>> {
        let mut errs = Vec::new();
        let n = compile_node(s, "", &mut errs, 0);
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(SchemaRules {
            root: (!n.is_empty()).then_some(n),
        })
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Runs the rules on `new` (and transition rules against `old`), appending field
    /// errors worded as kube-apiserver's.
    pub fn check(&self, new: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
        let Some(root) = &self.root else {
            return;
        };
        let mut run = Run {
            started: thread_cpu(),
            out_of_budget: false,
        };
        walk(root, new, old, "", errs, &mut run);
        if run.out_of_budget {
            errs.push(FieldError {
                kind: ErrorType::Invalid,
                field: String::new(),
                bad_value: Some(Value::String("object".into())),
                detail: "validation failed due to running out of cost budget, no further validation rules will be run".into(),
            });
        }
    }
}

fn walk(
    n: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    run: &mut Run,
) {
    if run.out_of_budget {
        return;
    }
    for r in &n.rules {
        if thread_cpu().saturating_sub(run.started) > EVAL_BUDGET {
            run.out_of_budget = true;
            return;
        }
        if r.transition && old.is_none() && !r.optional_old_self {
            continue;
        }
        let null = Value::Null;
        let mut vars: Vec<(&str, &Value)> = vec![("self", v)];
        if r.transition {
            vars.push(("oldSelf", old.unwrap_or(&null)));
        }
        let field = if r.field_path.is_empty() {
            path.to_string()
        } else {
            join(path, r.field_path.trim_start_matches('.'))
        };
        let failed_msg = match r.program.eval(&vars) {
            Ok(Outcome::Bool(true)) => continue,
            Ok(Outcome::Bool(false)) => {
                let from_expr = r
                    .message_expression
                    .as_ref()
                    .and_then(|m| match m.eval(&vars) {
                        Ok(Outcome::String(s)) if !s.trim().is_empty() && !s.contains('\n') => {
                            Some(s)
                        }
                        _ => None,
                    });
                from_expr.unwrap_or_else(|| {
                    if r.message.is_empty() {
                        format!("failed rule: {}", r.program.source())
                    } else {
                        r.message.clone()
                    }
                })
            }
            Ok(_) => "rule did not evaluate to a bool".to_string(),
            Err(e) => format!("rule evaluation error: {e}"),
        };
        errs.push(match r.reason {
            ErrorType::Invalid => FieldError {
                kind: ErrorType::Invalid,
                field,
                bad_value: Some(Value::String(type_name(v).into())),
                detail: failed_msg,
            },
            kind => FieldError {
                kind,
                field,
                bad_value: None,
                detail: failed_msg,
            },
        });
    }
    match v {
        Value::Object(m) => {
            for (k, c) in &n.props {
                if let Some(x) = m.get(k) {
                    let o = old.and_then(|o| o.get(k));
                    walk(c, x, o, &join(path, k), errs, run);
                }
            }
            if let Some(c) = &n.values {
                for (k, x) in m {
                    let o = old.and_then(|o| o.get(k));
                    walk(c, x, o, &format!("{path}[{k}]"), errs, run);
                }
            }
        }
        Value::Array(a) => {
            if let Some(c) = &n.items {
                for (i, x) in a.iter().enumerate() {
                    // Old elements correlate only in map lists, by their keys.
                    let o = if n.list_map_keys.is_empty() {
                        None
                    } else {
                        old.and_then(Value::as_array).and_then(|oa| {
                            oa.iter()
                                .find(|e| n.list_map_keys.iter().all(|k| e.get(k) == x.get(k)))
                        })
                    };
                    walk(c, x, o, &format!("{path}[{i}]"), errs, run);
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

    fn rules(schema: Value) -> SchemaRules {
        SchemaRules::compile(&Schema::parse(&schema)).expect("compiles")
    }

    #[test]
    fn rules_with_messages_and_paths() {
        let r = rules(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.replicas", "message": "replicas must be at least minReplicas"},
                {"rule": "self.replicas < 100", "messageExpression": "'replicas is ' + string(self.replicas) + ', over 99'"},
                {"rule": "self.name.startsWith('w')", "reason": "FieldValueForbidden", "fieldPath": ".name"},
            ],
            "properties": {"replicas": {"type": "integer"}, "minReplicas": {"type": "integer"}, "name": {"type": "string"}}}}}),
        );
        let mut e = Vec::new();
        r.check(
            &json!({"spec": {"replicas": 1, "minReplicas": 2, "name": "w1"}}),
            None,
            &mut e,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "spec: Invalid value: \"object\": replicas must be at least minReplicas"
        );
        let mut e = Vec::new();
        r.check(
            &json!({"spec": {"replicas": 200, "minReplicas": 2, "name": "x"}}),
            None,
            &mut e,
        );
        let m: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            m.contains(&"spec: Invalid value: \"object\": replicas is 200, over 99".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.name: Forbidden: failed rule: self.name.startsWith('w')".to_string()),
            "{m:?}"
        );
    }

    #[test]
    fn transition_rules_see_old_self() {
        let r = rules(
            json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "mode": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "mode is immutable"}]}}}}}),
        );
        let mut e = Vec::new();
        r.check(&json!({"spec": {"mode": "a"}}), None, &mut e);
        assert!(e.is_empty(), "create skips transition rules");
        r.check(
            &json!({"spec": {"mode": "b"}}),
            Some(&json!({"spec": {"mode": "a"}})),
            &mut e,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "spec.mode: Invalid value: \"string\": mode is immutable"
        );
        let mut e = Vec::new();
        r.check(
            &json!({"spec": {"mode": "a"}}),
            Some(&json!({"spec": {"mode": "a"}})),
            &mut e,
        );
        assert!(e.is_empty());
    }

    #[test]
    fn bad_rules_do_not_compile() {
        let s = Schema::parse(
            &json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.x >"}, {"rule": "self.a.all(x, x.b.all(y, y.c.all(z, z.d.all(w, w.e.all(v, v)))))"}]}}}),
        );
        let errs = SchemaRules::compile(&s).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].path,
            "properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(
            errs[0].message.starts_with("compilation failed"),
            "{}",
            errs[0].message
        );
        assert!(errs[1].message.contains("cost"), "{}", errs[1].message);
    }

    #[test]
    fn list_and_string_functions() {
        let r = rules(
            json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.items.all(i, i.size() <= 3)", "message": "short items"},
                {"rule": "self.items.exists(i, i == 'a')", "message": "needs a"},
                {"rule": "!has(self.forbidden)", "message": "no forbidden"},
                {"rule": "self.host.matches('^[a-z.]+$')", "message": "host"},
            ],
            "properties": {"items": {"type": "array", "items": {"type": "string"}},
                           "forbidden": {"type": "string"}, "host": {"type": "string"}}}}}),
        );
        let mut e = Vec::new();
        r.check(
            &json!({"spec": {"items": ["a", "bb"], "host": "a.b"}}),
            None,
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
        r.check(
            &json!({"spec": {"items": ["b", "long"], "forbidden": "x", "host": "A"}}),
            None,
            &mut e,
        );
        let m: Vec<String> = e.iter().map(|x| x.detail.clone()).collect();
        assert_eq!(m, vec!["short items", "needs a", "no forbidden", "host"]);
    }
}
