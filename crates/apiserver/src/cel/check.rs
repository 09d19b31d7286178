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
            // `strings.quote(x)`, `sets.contains(a, b)`: a namespaced function, not a
            // call on a value.
            _ if target.is_some_and(
                |t| matches!(&t.expr, Expr::Ident(n) if !self.vars.iter().any(|(v, _)| v == n)),
            ) =>
            {
                T::Dyn
            }
            _ => self.function(f, tt, &ts),
        }
    }
}

impl<'s> Checker<'s> {
    /// A call of a named function (global `f(a)` or on a receiver `r.f(a)`), checked
    /// against its overloads in [`FUNCTIONS`] as cel-go's checker does: no overload taking
    /// the argument types is `found no matching overload for 'f' applied to 'r.(a)'`.
    /// A function not in the table is not checked (its result is `dyn`); an argument of
    /// type `dyn` matches any parameter.
    fn function(&mut self, f: &str, recv: Option<T<'s>>, args: &[T<'s>]) -> T<'s> {
        let mut known_fn = false;
        let mut result: Option<T<'s>> = None;
        let mut ambiguous = false;
        for o in FUNCTIONS.iter().filter(|o| o.name == f) {
            known_fn = true;
            let fits = match (&o.recv, &recv) {
                (None, None) => true,
                (Some(p), Some(t)) => p.admits(t),
                _ => false,
            } && o.args.len() == args.len()
                && o.args.iter().zip(args).all(|(p, t)| p.admits(t));
            if !fits {
                continue;
            }
            let r = o.result.of(recv.as_ref(), args);
            match &result {
                None => result = Some(r),
                Some(prev) if !prev.same(&r) => ambiguous = true,
                Some(_) => {}
            }
        }
        match result {
            Some(_) if ambiguous => T::Dyn,
            Some(r) => r,
            None if known_fn => {
                let names: Vec<String> = args.iter().map(T::name).collect();
                let recv = recv.map(|r| format!("{}.", r.name())).unwrap_or_default();
                self.errors.push(format!(
                    "found no matching overload for '{f}' applied to '{recv}({})'",
                    names.join(", ")
                ));
                T::Dyn
            }
            None => T::Dyn,
        }
    }
}

/// A parameter type of an overload.
#[derive(Debug, Clone, Copy)]
enum P {
    Any,
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Duration,
    Timestamp,
    List,
    /// A list of strings.
    ListStr,
    Map,
    /// Any scalar (what `string()` converts).
    Scalar,
}

impl P {
    fn admits(self, t: &T) -> bool {
        if !t.known() {
            return true;
        }
        match self {
            P::Any => true,
            P::Bool => matches!(t, T::Bool),
            P::Int => matches!(t, T::Int),
            P::Uint => matches!(t, T::Uint),
            P::Double => matches!(t, T::Double),
            P::Str => matches!(t, T::String),
            P::Bytes => matches!(t, T::Bytes),
            P::Duration => matches!(t, T::Duration),
            P::Timestamp => matches!(t, T::Timestamp),
            P::List => matches!(t, T::List(_)),
            P::ListStr => match t {
                T::List(e) => !e.known() || matches!(**e, T::String),
                _ => false,
            },
            // Objects of the schema are maps to the checker's functions (`size`).
            P::Map => matches!(t, T::Map(_) | T::Object(..)),
            P::Scalar => !matches!(t, T::List(_) | T::Map(_) | T::Object(..)),
        }
    }
}

/// What an overload returns.
#[derive(Debug, Clone, Copy)]
enum R {
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Duration,
    Timestamp,
    ListStr,
    /// The receiver's element type (`[1, 2].sum()`).
    Elem,
}

impl R {
    fn of<'s>(self, recv: Option<&T<'s>>, _args: &[T<'s>]) -> T<'s> {
        match self {
            R::Dyn => T::Dyn,
            R::Bool => T::Bool,
            R::Int => T::Int,
            R::Uint => T::Uint,
            R::Double => T::Double,
            R::Str => T::String,
            R::Bytes => T::Bytes,
            R::Duration => T::Duration,
            R::Timestamp => T::Timestamp,
            R::ListStr => T::List(Box::new(T::String)),
            R::Elem => match recv {
                Some(T::List(e)) => (**e).clone(),
                _ => T::Dyn,
            },
        }
    }
}

/// One overload: name, receiver (member calls), parameters, result.
struct Overload {
    name: &'static str,
    recv: Option<P>,
    args: &'static [P],
    result: R,
}

const fn g(name: &'static str, args: &'static [P], result: R) -> Overload {
    Overload {
        name,
        recv: None,
        args,
        result,
    }
}

const fn m(name: &'static str, recv: P, args: &'static [P], result: R) -> Overload {
    Overload {
        name,
        recv: Some(recv),
        args,
        result,
    }
}

/// The functions whose overloads the checker knows: CEL's standard ones and the
/// Kubernetes libraries (lists, strings, regex, URLs, IPs and CIDRs, quantities,
/// semver, format) kube-apiserver declares for `x-kubernetes-validations`, with every
/// form each takes. Functions not listed are not checked.
static FUNCTIONS: &[Overload] = &[
    // Standard: size, conversions, string tests, time accessors.
    g("size", &[P::Str], R::Int),
    g("size", &[P::Bytes], R::Int),
    g("size", &[P::List], R::Int),
    g("size", &[P::Map], R::Int),
    m("size", P::Str, &[], R::Int),
    m("size", P::Bytes, &[], R::Int),
    m("size", P::List, &[], R::Int),
    m("size", P::Map, &[], R::Int),
    g("int", &[P::Int], R::Int),
    g("int", &[P::Uint], R::Int),
    g("int", &[P::Double], R::Int),
    g("int", &[P::Str], R::Int),
    g("int", &[P::Timestamp], R::Int),
    g("int", &[P::Duration], R::Int),
    g("uint", &[P::Int], R::Uint),
    g("uint", &[P::Uint], R::Uint),
    g("uint", &[P::Double], R::Uint),
    g("uint", &[P::Str], R::Uint),
    g("double", &[P::Int], R::Double),
    g("double", &[P::Uint], R::Double),
    g("double", &[P::Double], R::Double),
    g("double", &[P::Str], R::Double),
    g("string", &[P::Scalar], R::Str),
    g("bytes", &[P::Str], R::Bytes),
    g("bytes", &[P::Bytes], R::Bytes),
    g("bool", &[P::Bool], R::Bool),
    g("bool", &[P::Str], R::Bool),
    g("duration", &[P::Str], R::Duration),
    g("duration", &[P::Duration], R::Duration),
    g("timestamp", &[P::Str], R::Timestamp),
    g("timestamp", &[P::Timestamp], R::Timestamp),
    g("timestamp", &[P::Int], R::Timestamp),
    m("contains", P::Str, &[P::Str], R::Bool),
    m("startsWith", P::Str, &[P::Str], R::Bool),
    m("endsWith", P::Str, &[P::Str], R::Bool),
    m("matches", P::Str, &[P::Str], R::Bool),
    g("matches", &[P::Str, P::Str], R::Bool),
    m("getFullYear", P::Timestamp, &[], R::Int),
    m("getFullYear", P::Timestamp, &[P::Str], R::Int),
    m("getMonth", P::Timestamp, &[], R::Int),
    m("getMonth", P::Timestamp, &[P::Str], R::Int),
    m("getDayOfYear", P::Timestamp, &[], R::Int),
    m("getDayOfYear", P::Timestamp, &[P::Str], R::Int),
    m("getDayOfMonth", P::Timestamp, &[], R::Int),
    m("getDayOfMonth", P::Timestamp, &[P::Str], R::Int),
    m("getDate", P::Timestamp, &[], R::Int),
    m("getDate", P::Timestamp, &[P::Str], R::Int),
    m("getDayOfWeek", P::Timestamp, &[], R::Int),
    m("getDayOfWeek", P::Timestamp, &[P::Str], R::Int),
    m("getHours", P::Timestamp, &[], R::Int),
    m("getHours", P::Timestamp, &[P::Str], R::Int),
    m("getHours", P::Duration, &[], R::Int),
    m("getMinutes", P::Timestamp, &[], R::Int),
    m("getMinutes", P::Timestamp, &[P::Str], R::Int),
    m("getMinutes", P::Duration, &[], R::Int),
    m("getSeconds", P::Timestamp, &[], R::Int),
    m("getSeconds", P::Timestamp, &[P::Str], R::Int),
    m("getSeconds", P::Duration, &[], R::Int),
    m("getMilliseconds", P::Timestamp, &[], R::Int),
    m("getMilliseconds", P::Timestamp, &[P::Str], R::Int),
    m("getMilliseconds", P::Duration, &[], R::Int),
    // Kubernetes lists library.
    m("isSorted", P::List, &[], R::Bool),
    m("sum", P::List, &[], R::Elem),
    m("min", P::List, &[], R::Elem),
    m("max", P::List, &[], R::Elem),
    m("indexOf", P::List, &[P::Any], R::Int),
    m("lastIndexOf", P::List, &[P::Any], R::Int),
    // Strings extension (the version Kubernetes declares).
    m("charAt", P::Str, &[P::Int], R::Str),
    m("indexOf", P::Str, &[P::Str], R::Int),
    m("indexOf", P::Str, &[P::Str, P::Int], R::Int),
    m("lastIndexOf", P::Str, &[P::Str], R::Int),
    m("lastIndexOf", P::Str, &[P::Str, P::Int], R::Int),
    m("lowerAscii", P::Str, &[], R::Str),
    m("upperAscii", P::Str, &[], R::Str),
    m("replace", P::Str, &[P::Str, P::Str], R::Str),
    m("replace", P::Str, &[P::Str, P::Str, P::Int], R::Str),
    m("split", P::Str, &[P::Str], R::ListStr),
    m("split", P::Str, &[P::Str, P::Int], R::ListStr),
    m("substring", P::Str, &[P::Int], R::Str),
    m("substring", P::Str, &[P::Int, P::Int], R::Str),
    m("trim", P::Str, &[], R::Str),
    m("join", P::ListStr, &[], R::Str),
    m("join", P::ListStr, &[P::Str], R::Str),
    m("reverse", P::Str, &[], R::Str),
    m("format", P::Str, &[P::List], R::Str),
    // Regex library.
    m("find", P::Str, &[P::Str], R::Str),
    m("findAll", P::Str, &[P::Str], R::ListStr),
    m("findAll", P::Str, &[P::Str, P::Int], R::ListStr),
    // URLs, IPs, CIDRs, quantities, semver: constructors and tests take strings.
    g("url", &[P::Str], R::Dyn),
    g("isURL", &[P::Str], R::Bool),
    g("ip", &[P::Str], R::Dyn),
    g("isIP", &[P::Str], R::Bool),
    g("cidr", &[P::Str], R::Dyn),
    g("isCIDR", &[P::Str], R::Bool),
    g("quantity", &[P::Str], R::Dyn),
    g("isQuantity", &[P::Str], R::Bool),
    g("semver", &[P::Str], R::Dyn),
    g("semver", &[P::Str, P::Bool], R::Dyn),
    g("isSemver", &[P::Str], R::Bool),
    g("isSemver", &[P::Str, P::Bool], R::Bool),
];

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
        // Function arguments: every form of a function is tried; none fitting is an error
        // in cel-go's words (receiver first for member calls).
        let ok = [
            "size(self.name) > 0 && self.name.size() > 0 && size(self.ports) > 0",
            "self.name.indexOf('a') >= 0 && self.ports.indexOf(self.ports[0]) == 0",
            "self.name.split(',').join('-') == 'a' && self.name.substring(1, 2) == 'b'",
            "self.name.lowerAscii().startsWith('a') && isURL(self.name)",
            "self.when.getHours() < 3 && duration('1h').getMinutes() == 60",
            "self.ports.map(p, p.port).sum() > 1 && [1, 2].max() == 2",
            "strings.quote(self.name) != '' && sets.contains([1], [1])",
            "string(self.replicas) == '1' && int(self.ratio) == 1",
            "self.free.x.startsWith('a') || self.ios.size() == 1",
            "self.labels.all(k, k.matches('^a'))",
        ];
        for r in ok {
            assert_eq!(check(r, &s, false), Vec::<String>::new(), "{r}");
        }
        let bad = [
            (
                "self.name.startsWith(1)",
                "found no matching overload for 'startsWith' applied to 'string.(int)'",
            ),
            (
                "self.replicas.startsWith('a')",
                "found no matching overload for 'startsWith' applied to 'int.(string)'",
            ),
            (
                "size(self.replicas) > 0",
                "found no matching overload for 'size' applied to '(int)'",
            ),
            (
                "self.name.substring('a') == ''",
                "found no matching overload for 'substring' applied to 'string.(string)'",
            ),
            (
                "self.ports.join(',') == ''",
                "found no matching overload for 'join' applied to 'list(object).(string)'",
            ),
            (
                "isIP(self.replicas)",
                "found no matching overload for 'isIP' applied to '(int)'",
            ),
            (
                "self.when.getHours(1) == 0",
                "found no matching overload for 'getHours' applied to 'google.protobuf.Timestamp.(int)'",
            ),
            (
                "string(self.ports) == ''",
                "found no matching overload for 'string' applied to '(list(object))'",
            ),
            // The result type flows on: charAt gives a string.
            (
                "self.name.charAt(0) == 1",
                "found no matching overload for '_==_' applied to '(string, int)'",
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
