//! Label and field selectors, parsed and validated exactly as `k8s.io/apimachinery` does
//! (`labels.Parse`, `metav1.LabelSelectorAsSelector`, `fields.ParseSelector`), with the same
//! error texts.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::validation::{field_invalid, is_qualified_name, is_valid_label_value};

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also matches objects without the label)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also matches objects without the label)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>5` (integer comparison)
    GreaterThan,
    /// `key<5` (integer comparison)
    LessThan,
}

/// One requirement (`key op values`) of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and de-duplicated, as Kubernetes' `sets.String` keeps them.
    values: Vec<String>,
}

impl Requirement {
    /// Builds and validates a requirement like `labels.NewRequirement`.
    pub fn new(key: &str, op: Operator, values: Vec<String>) -> Result<Self> {
        let mut errs = Vec::new();
        let ke = is_qualified_name(key);
        if !ke.is_empty() {
            errs.push(field_invalid("key", key, &ke.join("; ")));
        }
        let n = values.len();
        match op {
            Operator::In | Operator::NotIn if n == 0 => errs.push(format!(
                "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                go_string_slice(&values)
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if n != 1 => {
                errs.push(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    go_string_slice(&values)
                ))
            }
            Operator::Exists | Operator::DoesNotExist if n != 0 => errs.push(format!(
                "values: Invalid value: {}: values set must be empty for exists and does not exist",
                go_string_slice(&values)
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if n != 1 {
                    errs.push(format!(
                        "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        go_string_slice(&values)
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(field_invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let ve = is_valid_label_value(v);
            if !ve.is_empty() {
                errs.push(field_invalid(
                    &format!("values[{i}][{key}]"),
                    v,
                    &ve.join("; "),
                ));
            }
        }
        if !errs.is_empty() {
            return Err(Error::InvalidLabelSelector(aggregate(errs)));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.op
    }

    /// The values (sorted, unique).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        let got = labels.get(&self.key);
        match self.op {
            // `values` is sorted: binary search keeps huge `in (…)` lists cheap.
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                got.is_some_and(|v| self.has_value(v))
            }
            Operator::NotEquals | Operator::NotIn => got.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(want)) = (got, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(want)) = (v.parse::<i64>(), want.parse::<i64>()) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    v > want
                } else {
                    v < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// Something labels can be read from: a `BTreeMap`/`HashMap` of strings, or an object's
/// `metadata.labels` JSON (see [`LabelSelector::matches_object`]).
pub trait Labels {
    /// The value of a label, if set.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for std::collections::HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::HashMap::get(self, key).map(String::as_str)
    }
}

/// A JSON object of string values (`metadata.labels`); non-string values count as absent.
impl Labels for serde_json::Map<String, Value> {
    fn get(&self, key: &str) -> Option<&str> {
        serde_json::Map::get(self, key).and_then(Value::as_str)
    }
}

/// A parsed label selector: the AND of its requirements. `nothing()` (from a null
/// `metav1.LabelSelector`) matches no object; an empty selector matches every object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    /// Sorted by key, as Kubernetes sorts them.
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches nothing (a nil `*metav1.LabelSelector`).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses a `labelSelector` query string (`a=b,c in (x,y),!d`), like `labels.Parse`.
    pub fn parse(s: &str) -> Result<Self> {
        let tokens = lex(s)?;
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` JSON value, like `metav1.LabelSelectorAsSelector`:
    /// `null` → nothing, `{}` → everything.
    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            _ => {
                return Err(Error::InvalidLabelSelector(
                    "a label selector must be an object".into(),
                ))
            }
        };
        let mut reqs = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let Some(v) = v.as_str() else {
                        return Err(Error::InvalidLabelSelector(format!(
                            "matchLabels[{k}]: value must be a string"
                        )));
                    };
                    reqs.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
                }
            }
            Some(_) => {
                return Err(Error::InvalidLabelSelector(
                    "matchLabels must be an object".into(),
                ))
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for e in exprs {
                    let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                    let op_s = e.get("operator").and_then(Value::as_str).unwrap_or("");
                    let op = match op_s {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        other => {
                            return Err(Error::InvalidLabelSelector(format!(
                                "{other:?} is not a valid label selector operator"
                            )))
                        }
                    };
                    let values = match e.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(vs)) => vs
                            .iter()
                            .map(|v| {
                                v.as_str().map(str::to_string).ok_or_else(|| {
                                    Error::InvalidLabelSelector(
                                        "matchExpressions values must be strings".into(),
                                    )
                                })
                            })
                            .collect::<Result<_>>()?,
                        Some(_) => {
                            return Err(Error::InvalidLabelSelector(
                                "matchExpressions values must be a list".into(),
                            ))
                        }
                    };
                    reqs.push(Requirement::new(key, op, values)?);
                }
            }
            Some(_) => {
                return Err(Error::InvalidLabelSelector(
                    "matchExpressions must be a list".into(),
                ))
            }
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements: reqs,
            nothing: false,
        })
    }

    /// Builds a selector from requirements (sorted by key).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True for the selector that matches every object.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &impl Labels) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object (its `metadata.labels`) satisfies the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new));
        self.matches(labels)
    }
}

impl fmt::Display for LabelSelector {
    /// Kubernetes' canonical form (`labels.Selector.String()`); re-parses to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// ---- lexer and parser (the grammar of k8s.io/apimachinery/pkg/labels/selector.go) ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    Identifier,
    In,
    NotIn,
    Bang,
    NotEquals,
    OpenPar,
    ClosedPar,
    Comma,
    Equals,
    DoubleEquals,
    Gt,
    Lt,
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn special_token(s: &str) -> Option<Tok> {
    Some(match s {
        "!" => Tok::Bang,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "=" => Tok::Equals,
        "==" => Tok::DoubleEquals,
        ">" => Tok::Gt,
        "<" => Tok::Lt,
        _ => return None,
    })
}

fn lex(s: &str) -> Result<Vec<(Tok, String)>> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        // Like Go's lexer, a NUL byte reads as the end of the string.
        if pos >= b.len() || b[pos] == 0 {
            out.push((Tok::End, String::new()));
            return Ok(out);
        }
        let start = pos;
        if is_special(b[pos]) {
            // Greedy: extend while the buffer is still a known token.
            let mut end = pos + 1;
            while end < b.len() && is_special(b[end]) && special_token(&s[start..=end]).is_some() {
                end += 1;
            }
            let lit = &s[start..end];
            match special_token(lit) {
                Some(t) => out.push((t, lit.to_string())),
                None => {
                    return Err(Error::InvalidLabelSelector(format!(
                        "error expected: keyword found '{lit}'"
                    )))
                }
            }
            pos = end;
        } else {
            while pos < b.len() && b[pos] != 0 && !is_whitespace(b[pos]) && !is_special(b[pos]) {
                pos += 1;
            }
            // Only ASCII bytes end an identifier, so the slice is on char boundaries.
            let lit = &s[start..pos];
            let t = match lit {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            };
            out.push((t, lit.to_string()));
        }
    }
}

struct Parser {
    tokens: Vec<(Tok, String)>,
    pos: usize,
}

/// In "values" context the keywords `in`/`notin` are ordinary identifiers.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

impl Parser {
    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        let (mut t, lit) = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        if ctx == Ctx::Values && matches!(t, Tok::In | Tok::NotIn) {
            t = Tok::Identifier;
        }
        (t, lit)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let r = self.lookahead(ctx);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Ctx::Values);
            match t {
                Tok::Identifier | Tok::Bang => {
                    let r = self.parse_requirement().map_err(|e| {
                        Error::InvalidLabelSelector(format!("unable to parse requirement: {e}"))
                    })?;
                    reqs.push(r);
                    let (t, lit) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::Bang {
                                return Err(Error::InvalidLabelSelector(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(Error::InvalidLabelSelector(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(Error::InvalidLabelSelector(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    /// Errors here are bare messages; `parse` prefixes "unable to parse requirement: ".
    fn parse_requirement(&mut self) -> std::result::Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.to_string());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values).map_err(|e| e.to_string())
    }

    fn parse_key_and_infer_operator(
        &mut self,
    ) -> std::result::Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut t, mut lit) = self.consume(Ctx::Values);
        if t == Tok::Bang {
            op = Some(Operator::DoesNotExist);
            (t, lit) = self.consume(Ctx::Values);
        }
        if t != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = is_qualified_name(&lit);
        if !errs.is_empty() {
            // Kubernetes validates the key against a nil field path, printed as `<nil>`.
            return Err(field_invalid("<nil>", &lit, &errs.join("; ")));
        }
        let (t, _) = self.lookahead(Ctx::Values);
        if (t == Tok::End || t == Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> std::result::Result<Operator, String> {
        let (t, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match t {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    fn parse_values(&mut self) -> std::result::Result<Vec<String>, String> {
        let (t, lit) = self.consume(Ctx::Values);
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(Ctx::Values);
        match t {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> std::result::Result<Vec<String>, String> {
        // Kubernetes collects a set; `sorted_set` sorts and de-duplicates at the end.
        let mut s: Vec<String> = Vec::new();
        let insert = |s: &mut Vec<String>, v: String| s.push(v);
        loop {
            let (t, lit) = self.consume(Ctx::Values);
            match t {
                Tok::Identifier => {
                    insert(&mut s, lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(sorted_set(s)),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        insert(&mut s, String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        insert(&mut s, String::new());
                        return Ok(sorted_set(s));
                    }
                    if t2 == Tok::Comma {
                        self.consume(Ctx::Values);
                        insert(&mut s, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> std::result::Result<Vec<String>, String> {
        let (t, _) = self.lookahead(Ctx::Values);
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(Ctx::Values);
        if t == Tok::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// A `sets.String`'s `List()`: sorted, unique.
fn sorted_set(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Go's `%#v` of a `[]string`, as `field.Invalid` prints it: `[]string{"a", "b"}`, and
/// `[]string(nil)` when empty (Kubernetes copies the values with `append([]string(nil), …)`).
fn go_string_slice(v: &[String]) -> String {
    if v.is_empty() {
        return "[]string(nil)".to_string();
    }
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// `utilerrors.Aggregate.Error()`: one message as is, several as `[a, b]`.
fn aggregate(errs: Vec<String>) -> String {
    if errs.len() == 1 {
        errs.into_iter().next().unwrap_or_default()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

// ---- field selectors (k8s.io/apimachinery/pkg/fields) ----

/// A field selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value`
    Equals,
    /// `field==value`
    DoubleEquals,
    /// `field!=value`
    NotEquals,
}

/// One `field op value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field path, e.g. `metadata.name`, `spec.nodeName`, `involvedObject.uid`.
    pub field: String,
    /// The operator.
    pub op: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector: the AND of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    /// Sorted by their source text, as Kubernetes sorts the terms.
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses a `fieldSelector` query string like `fields.ParseSelector`: terms split on
    /// unescaped `,`; values unescape `\\`, `\,` and `\=`.
    pub fn parse(selector: &str) -> Result<Self> {
        let mut parts = split_terms(selector);
        parts.sort();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(Error::InvalidFieldSelector(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs)?;
            requirements.push(FieldRequirement {
                field: lhs.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when there are no terms.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value this selector requires for `field` via `=`/`==`, if any (lets a server use an
    /// index, e.g. `metadata.name` → a single get, `spec.nodeName` → a node's pods).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op != FieldOperator::NotEquals)
            .map(|r| r.value.as_str())
    }

    /// Rejects terms on fields the kind does not support, with Kubernetes' message
    /// (`field label not supported: spec.foo`).
    pub fn check_supported(&self, supported: impl Fn(&str) -> bool) -> Result<()> {
        match self.requirements.iter().find(|r| !supported(&r.field)) {
            Some(r) => Err(Error::FieldLabelNotSupported(r.field.clone())),
            None => Ok(()),
        }
    }

    /// Whether an object matches. `field` returns the object's value for a field path, or
    /// `None` when the object has no such value (which compares as the empty string, as
    /// Kubernetes' `fields.Set` does).
    pub fn matches<F>(&self, field: F) -> bool
    where
        F: Fn(&str) -> Option<String>,
    {
        self.requirements.iter().all(|r| {
            let got = field(&r.field).unwrap_or_default();
            match r.op {
                FieldOperator::Equals | FieldOperator::DoubleEquals => got == r.value,
                FieldOperator::NotEquals => got != r.value,
            }
        })
    }
}

impl fmt::Display for FieldSelector {
    /// Canonical form, values escaped; re-parses to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOperator::Equals => "=",
                FieldOperator::DoubleEquals => "==",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Escapes `\`, `,` and `=` in a field selector value (`fields.EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op_s, op) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::DoubleEquals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op_s) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if matches!(c, '\\' | ',' | '=') {
                out.push(c);
            } else {
                return Err(Error::InvalidFieldSelector(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(Error::InvalidFieldSelector(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(Error::InvalidFieldSelector(
            "invalid field selector: invalid escape sequence: \\".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse(
            "app=web, tier==fe,env!=prod,zone in (a, b),x notin (y),has,!gone,n>5,m<3",
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env!=prod,!gone,has,m<3,n>5,tier==fe,x notin (y),zone in (a,b)"
        );
        let l = labels(&[
            ("app", "web"),
            ("tier", "fe"),
            ("env", "dev"),
            ("zone", "b"),
            ("has", ""),
            ("n", "6"),
            ("m", "-1"),
        ]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("gone".into(), "x".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("n".into(), "5".into());
        assert!(!s.matches(&l3));
    }

    #[test]
    fn negative_operators_match_missing_labels() {
        let s = LabelSelector::parse("env!=prod,x notin (y)").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn empty_and_nothing() {
        assert!(LabelSelector::parse("").unwrap().is_everything());
        assert!(LabelSelector::parse("  ").unwrap().matches(&labels(&[])));
        assert!(!LabelSelector::nothing().matches(&labels(&[])));
        assert!(!LabelSelector::from_json(&Value::Null)
            .unwrap()
            .matches(&labels(&[])));
        assert!(LabelSelector::from_json(&serde_json::json!({}))
            .unwrap()
            .is_everything());
    }

    #[test]
    fn keywords_are_identifiers_in_value_position() {
        let s = LabelSelector::parse("a=in,b in (notin,in)").unwrap();
        assert_eq!(s.to_string(), "a=in,b in (in,notin)");
        // `in` as a key: in Values context the keyword is an identifier.
        let s = LabelSelector::parse("in=x").unwrap();
        assert_eq!(s.to_string(), "in=x");
    }

    #[test]
    fn empty_values() {
        assert_eq!(LabelSelector::parse("a=").unwrap().to_string(), "a=");
        assert_eq!(
            LabelSelector::parse("a in ()").unwrap().to_string(),
            "a in ()"
        );
        assert_eq!(
            LabelSelector::parse("a in (,b)").unwrap().requirements()[0].values(),
            &["".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn kubernetes_error_messages() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err().to_string();
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("a,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("a=>b"),
            "unable to parse requirement: found '>', expected: identifier"
        );
        assert_eq!(
            err("a>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert!(err("a=b@c").starts_with(
            "unable to parse requirement: values[0][a]: Invalid value: \"b@c\": a valid label must be"
        ));
        assert!(err("-a=b").starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must"
        ));
    }

    #[test]
    fn from_metav1_label_selector() {
        let s = LabelSelector::from_json(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,!canary,env notin (prod),tier in (be,fe),zone"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "be"), ("zone", "z")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
        let bad = LabelSelector::from_json(&serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
        let bad = LabelSelector::from_json(&serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
        }))
        .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(bad.code(), 400);
        let bad = LabelSelector::from_json(&serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]
        }))
        .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
    }

    #[test]
    fn matches_object_labels() {
        let s = LabelSelector::parse("app=web").unwrap();
        assert!(s.matches_object(&serde_json::json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&serde_json::json!({"metadata": {}})));
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse(
            "involvedObject.name=p,involvedObject.namespace=default,involvedObject.uid=u-1",
        )
        .unwrap();
        let get = |f: &str| -> Option<String> {
            match f {
                "involvedObject.name" => Some("p".into()),
                "involvedObject.namespace" => Some("default".into()),
                "involvedObject.uid" => Some("u-1".into()),
                _ => None,
            }
        };
        assert!(s.matches(get));
        let s = FieldSelector::parse("spec.nodeName!=,status.phase==Running").unwrap();
        assert!(!s.matches(|_| None));
        assert!(s.matches(|f| Some(
            if f == "spec.nodeName" {
                "n1"
            } else {
                "Running"
            }
            .into()
        )));
        assert_eq!(s.required_value("status.phase"), Some("Running"));
        assert_eq!(s.required_value("spec.nodeName"), None);
        assert!(FieldSelector::parse("").unwrap().is_everything());
    }

    #[test]
    fn field_selector_escaping_and_errors() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        let err = |x: &str| FieldSelector::parse(x).unwrap_err().to_string();
        assert_eq!(
            err("abc"),
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        let s = FieldSelector::parse("spec.foo=x").unwrap();
        assert_eq!(
            s.check_supported(|f| f == "metadata.name")
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
    }
}
