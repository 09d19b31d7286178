//! Type checking of `x-kubernetes-validations` rules against their schema, as
//! kube-apiserver's CEL compiler does when a CustomResourceDefinition is written: the
//! `cel` crate parses but does not check, so this walks the parsed expression with the
//! type `self` (and `oldSelf`) has at the rule's node.
//!
//! What it finds (cel-go's wording): a field the schema does not declare
//! (`undefined field 'foo'`), a field selected on a scalar (`type 'string' does not
//! support field selection`), and operators applied to mismatched types
//! (`found no matching overload for '_==_' applied to '(int, string)'`; ordering
//! compares numbers across int/uint/double, as cel-go does). What it cannot know is
//! `dyn` and passes: nodes that preserve unknown fields, int-or-string, and the results
//! of functions it does not model.

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};
use h8s_types::crd::schema::Additional;
use h8s_types::crd::Schema;

/// A CEL type, as far as the checker follows it.
#[derive(Debug, Clone)]
enum T<'s> {
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    List(Box<T<'s>>),
    Map(Box<T<'s>>),
    /// An object of the schema; `root` adds `apiVersion`, `kind`, `metadata`.
    Object(&'s Schema, bool),
}

impl T<'_> {
    fn name(&self) -> String {
        match self {
            T::Dyn => "dyn".into(),
            T::Null => "null_type".into(),
            T::Bool => "bool".into(),
            T::Int => "int".into(),
            T::Uint => "uint".into(),
            T::Double => "double".into(),
            T::String => "string".into(),
            T::Bytes => "bytes".into(),
            T::Duration => "google.protobuf.Duration".into(),
            T::Timestamp => "google.protobuf.Timestamp".into(),
            T::List(e) => format!("list({})", e.name()),
            T::Map(v) => format!("map(string, {})", v.name()),
            T::Object(..) => "object".into(),
        }
    }

    fn known(&self) -> bool {
        !matches!(self, T::Dyn | T::Null)
    }

    fn numeric(&self) -> bool {
        matches!(self, T::Int | T::Uint | T::Double)
    }

    /// The same kind of type (element types are not compared).
    fn same(&self, o: &T) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(o)
    }
}

/// The type of a value of schema `s` (`root`: the object at the top, or an embedded
/// resource).
fn of_schema(s: &Schema, root: bool) -> T<'_> {
    let root = root || s.embedded;
    if s.int_or_string {
        return T::Dyn;
    }
    match s.ty.as_str() {
        "object" => match &s.additional {
            Additional::Schema(v) if s.properties.is_empty() => {
                T::Map(Box::new(of_schema(v, false)))
            }
            Additional::Bool(true) if s.properties.is_empty() => T::Map(Box::new(T::Dyn)),
            _ => T::Object(s, root),
        },
        "array" => T::List(Box::new(
            s.items.as_deref().map_or(T::Dyn, |i| of_schema(i, false)),
        )),
        "string" => match s.format.as_str() {
            "byte" => T::Bytes,
            "duration" => T::Duration,
            "date" | "date-time" => T::Timestamp,
            _ => T::String,
        },
        "integer" => T::Int,
        "number" => T::Double,
        "boolean" => T::Bool,
        _ => T::Dyn,
    }
}

struct Checker<'s> {
    vars: Vec<(String, T<'s>)>,
    errors: Vec<String>,
}

impl<'s> Checker<'s> {
    fn var(&self, name: &str) -> T<'s> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(T::Dyn, |(_, t)| t.clone())
    }

    fn select(&mut self, on: T<'s>, field: &str) -> T<'s> {
        match on {
            T::Object(s, root) => match s.properties.get(field) {
                Some(p) => of_schema(p, false),
                None if root && matches!(field, "apiVersion" | "kind") => T::String,
                None if root && field == "metadata" => T::Dyn,
                None if s.preserve_unknown => T::Dyn,
                None => {
                    self.errors.push(format!("undefined field '{field}'"));
                    T::Dyn
                }
            },
            T::Map(v) => *v,
            T::Dyn | T::Null => T::Dyn,
            other => {
                self.errors.push(format!(
                    "type '{}' does not support field selection",
                    other.name()
                ));
                T::Dyn
            }
        }
    }

    fn overload_error(&mut self, op: &str, args: &[T]) {
        let names: Vec<String> = args.iter().map(T::name).collect();
        self.errors.push(format!(
            "found no matching overload for '{op}' applied to '({})'",
            names.join(", ")
        ));
    }

    fn expr(&mut self, e: &IdedExpr) -> T<'s> {
        match &e.expr {
            Expr::Unspecified => T::Dyn,
            Expr::Ident(n) => self.var(n),
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => T::Bool,
                LiteralValue::Bytes(_) => T::Bytes,
                LiteralValue::Double(_) => T::Double,
                LiteralValue::Int(_) => T::Int,
                LiteralValue::Null => T::Null,
                LiteralValue::String(_) => T::String,
                LiteralValue::UInt(_) => T::Uint,
            },
            Expr::List(l) => {
                let ts: Vec<T> = l.elements.iter().map(|x| self.expr(x)).collect();
                let elem = match ts.first() {
                    Some(f) if ts.iter().all(|t| t.same(f)) => f.clone(),
                    _ => T::Dyn,
                };
                T::List(Box::new(elem))
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                        self.expr(&me.key);
                        self.expr(&me.value);
                    }
                }
                T::Map(Box::new(T::Dyn))
            }
            Expr::Struct(_) => T::Dyn,
            Expr::Select(s) => {
                let on = self.expr(&s.operand);
                let t = self.select(on, &s.field);
                if s.test {
                    T::Bool
                } else {
                    t
                }
            }
            Expr::Comprehension(c) => {
                let range = self.expr(&c.iter_range);
                let (v1, v2) = match range {
                    T::List(e) => {
                        if c.iter_var2.is_some() {
                            (T::Int, *e)
                        } else {
                            (*e, T::Dyn)
                        }
                    }
                    T::Map(v) => (T::String, *v),
                    _ => (T::Dyn, T::Dyn),
                };
                let accu = self.expr(&c.accu_init);
                let depth = self.vars.len();
                self.vars.push((c.iter_var.clone(), v1));
                if let Some(v) = &c.iter_var2 {
                    self.vars.push((v.clone(), v2));
                }
                self.vars.push((c.accu_var.clone(), accu));
                self.expr(&c.loop_cond);
                self.expr(&c.loop_step);
                let r = self.expr(&c.result);
                self.vars.truncate(depth);
                r
            }
            Expr::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
        }
    }

    fn call(&mut self, f: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> T<'s> {
        let tt = target.map(|t| self.expr(t));
        let ts: Vec<T<'s>> = args.iter().map(|a| self.expr(a)).collect();
        match (f, ts.as_slice()) {
            (operators::EQUALS | operators::NOT_EQUALS, [a, b]) => {
                if a.known() && b.known() && !a.same(b) {
                    self.overload_error(f, &ts);
                }
                T::Bool
            }
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                [a, b],
            ) => {
                let orderable = |t: &T| {
                    t.numeric()
                        || matches!(
                            t,
                            T::String | T::Bool | T::Bytes | T::Duration | T::Timestamp
                        )
                };
                if a.known()
                    && b.known()
                    && !(a.numeric() && b.numeric())
                    && (!a.same(b) || !orderable(a))
                {
                    self.overload_error(f, &ts);
                }
                T::Bool
            }
            (operators::LOGICAL_AND | operators::LOGICAL_OR, [a, b]) => {
                if (a.known() && !matches!(a, T::Bool)) || (b.known() && !matches!(b, T::Bool)) {
                    self.overload_error(f, &ts);
                }
                T::Bool
            }
            (operators::LOGICAL_NOT, [a]) => {
                if a.known() && !matches!(a, T::Bool) {
                    self.overload_error(f, &ts);
                }
                T::Bool
            }
            (operators::ADD, [a, b]) => {
                let ok = !a.known()
                    || !b.known()
                    || (a.same(b) && !matches!(a, T::Bool | T::Object(..) | T::Map(_)))
                    || matches!(
                        (a, b),
                        (T::Timestamp, T::Duration) | (T::Duration, T::Timestamp)
                    );
                if !ok {
                    self.overload_error(f, &ts);
                    return T::Dyn;
                }
                match (a, b) {
                    (T::Dyn | T::Null, _) => b.clone(),
                    (T::Duration, T::Timestamp) => T::Timestamp,
                    _ => a.clone(),
                }
            }
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO,
                [a, b],
            ) => {
                let ok = !a.known()
                    || !b.known()
                    || (a.same(b) && a.numeric())
                    || (f == operators::SUBSTRACT
                        && matches!(
                            (a, b),
                            (T::Timestamp, T::Timestamp | T::Duration) | (T::Duration, T::Duration)
                        ));
                if !ok {
                    self.overload_error(f, &ts);
                    return T::Dyn;
                }
                match (a, b) {
                    (T::Timestamp, T::Timestamp) => T::Duration,
                    (T::Dyn | T::Null, _) => b.clone(),
                    _ => a.clone(),
                }
            }
            (operators::NEGATE, [a]) => a.clone(),
            (operators::CONDITIONAL, [c, a, b]) => {
                if c.known() && !matches!(c, T::Bool) {
                    self.overload_error(f, &ts);
                }
                if a.known() && b.known() && a.same(b) {
                    a.clone()
                } else {
                    T::Dyn
                }
            }
            (operators::INDEX, [on, _]) => match on {
                T::List(e) => (**e).clone(),
                T::Map(v) => (**v).clone(),
                _ => T::Dyn,
            },
            (operators::IN | operators::NOT_STRICTLY_FALSE, _) => T::Bool,
            ("size", _) => T::Int,
            ("int", _) => T::Int,
            ("uint", _) => T::Uint,
            ("double", _) => T::Double,
            ("string", _) => T::String,
            ("bytes", _) => T::Bytes,
            ("bool", _) => T::Bool,
            ("duration", _) => T::Duration,
            ("timestamp", _) => T::Timestamp,
            ("matches" | "startsWith" | "endsWith" | "contains", _) => {
                if let Some(t) = &tt {
                    if t.known() && !matches!(t, T::String) {
                        self.overload_error(f, std::slice::from_ref(t));
                    }
                }
                T::Bool
            }
            _ => T::Dyn,
        }
    }
}

/// The type errors of `src` when `self` (and `oldSelf`) is a value of `s` (`root`: the
/// custom resource's top-level schema). Parse errors are [`super::compile`]'s to report.
pub(crate) fn check(src: &str, s: &Schema, root: bool) -> Vec<String> {
    let Ok(ast) = super::ENV.parser().parse(src) else {
        return Vec::new();
    };
    let t = of_schema(s, root);
    let mut c = Checker {
        vars: vec![("self".into(), t.clone()), ("oldSelf".into(), t)],
        errors: Vec::new(),
    };
    c.expr(&ast);
    c.errors.dedup();
    c.errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "replicas": {"type": "integer"},
                "name": {"type": "string"},
                "ratio": {"type": "number"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "object",
                    "properties": {"port": {"type": "integer"}, "name": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "ios": {"x-kubernetes-int-or-string": true},
                "when": {"type": "string", "format": "date-time"},
            }
        }))
    }

    #[test]
    fn fields_and_types() {
        let s = schema();
        let ok = [
            "self.replicas >= 0",
            "self.replicas < self.ratio",
            "self.name.startsWith('a') && size(self.name) < 10",
            "self.labels.all(k, self.labels[k] != '')",
            "self.ports.all(p, p.port > 0 && p.name != '')",
            "self.free.anything.goes == 1",
            "self.ios == 'x' || self.ios == 1",
            "has(self.name) ? self.name == 'a' : true",
            "self.replicas == oldSelf.replicas",
            "self.when < timestamp('2030-01-01T00:00:00Z')",
            "self.ports.map(p, p.port).all(x, x > 0)",
            "self.name == null || self.replicas + 1 > 2",
        ];
        for r in ok {
            assert_eq!(check(r, &s, false), Vec::<String>::new(), "{r}");
        }
        let bad = [
            ("self.nope == 1", "undefined field 'nope'"),
            ("has(self.nope)", "undefined field 'nope'"),
            ("self.ports.all(p, p.nope > 0)", "undefined field 'nope'"),
            (
                "self.name.first == 'a'",
                "type 'string' does not support field selection",
            ),
            (
                "self.replicas == 'three'",
                "found no matching overload for '_==_' applied to '(int, string)'",
            ),
            (
                "self.name > 1",
                "found no matching overload for '_>_' applied to '(string, int)'",
            ),
            (
                "self.replicas && true",
                "found no matching overload for '_&&_' applied to '(int, bool)'",
            ),
            (
                "self.name + 1 == 'x'",
                "found no matching overload for '_+_' applied to '(string, int)'",
            ),
        ];
        for (r, want) in bad {
            assert_eq!(check(r, &s, false), vec![want.to_string()], "{r}");
        }
        // The top-level object also has apiVersion, kind and metadata.
        assert!(check("self.metadata.name == 'x' && self.kind == 'K'", &s, true).is_empty());
        assert_eq!(
            check("self.metadata == 1", &s, false),
            ["undefined field 'metadata'"]
        );
    }
}
