//! The JSONPath subset printer columns and scale selectors use (`.spec.replicas`,
//! `.status.conditions[?(@.type=="Ready")].status`, `.items[0]`, `.items[*].name`).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `[n]` (negative counts from the end).
    Index(i64),
    /// `[*]` or `.*`.
    All,
    /// `[?(@.a.b=="v")]` (also `!=`); the value compared as text.
    Filter(Vec<String>, bool, String),
}

/// How long a path may be (printer columns are short).
const MAX_LEN: usize = 512;

/// Parses a path; the leading `{…}` kubectl allows is accepted.
pub fn parse(p: &str) -> Result<Vec<Step>, String> {
    if p.len() > MAX_LEN {
        return Err("is too long".into());
    }
    let p = p.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    if !p.starts_with('.') && !p.starts_with('[') {
        return Err("must be a simple json path starting with .".into());
    }
    let b = p.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                let name = &p[start..i];
                if name.is_empty() {
                    return Err("has an empty field name".into());
                }
                out.push(if name == "*" {
                    Step::All
                } else {
                    Step::Field(name.to_string())
                });
            }
            b'[' => {
                let end = p[i..].find(']').ok_or("has an unclosed [")? + i;
                // A filter may itself contain ']' only inside quotes; keep it simple.
                let inner = p[i + 1..end].trim();
                i = end + 1;
                if inner == "*" {
                    out.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
                    let (lhs, neg, rhs) = if let Some((l, r)) = f.split_once("!=") {
                        (l, true, r)
                    } else if let Some((l, r)) = f.split_once("==") {
                        (l, false, r)
                    } else {
                        return Err("has an unsupported filter".into());
                    };
                    let lhs = lhs
                        .trim()
                        .strip_prefix("@.")
                        .ok_or("has an unsupported filter")?;
                    let rhs = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
                    out.push(Step::Filter(
                        lhs.split('.').map(str::to_string).collect(),
                        neg,
                        rhs.to_string(),
                    ));
                } else if (inner.starts_with('\'') && inner.ends_with('\'') && inner.len() >= 2)
                    || (inner.starts_with('"') && inner.ends_with('"') && inner.len() >= 2)
                {
                    out.push(Step::Field(inner[1..inner.len() - 1].to_string()));
                } else {
                    let n: i64 = inner
                        .parse()
                        .map_err(|_| "has an unsupported index".to_string())?;
                    out.push(Step::Index(n));
                }
            }
            _ => return Err("is not a valid json path".into()),
        }
    }
    Ok(out)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value the path selects in `v`.
pub fn select(steps: &[Step], v: &Value) -> Vec<Value> {
    let mut cur = vec![v.clone()];
    for s in steps {
        let mut next = Vec::new();
        for x in cur {
            match s {
                Step::Field(f) => {
                    if let Some(y) = x.get(f) {
                        next.push(y.clone());
                    }
                }
                Step::Index(n) => {
                    if let Some(a) = x.as_array() {
                        let i = if *n < 0 { a.len() as i64 + n } else { *n };
                        if let Some(y) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                            next.push(y.clone());
                        }
                    }
                }
                Step::All => match x {
                    Value::Array(a) => next.extend(a),
                    Value::Object(m) => next.extend(m.into_iter().map(|(_, y)| y)),
                    _ => {}
                },
                Step::Filter(path, neg, want) => {
                    if let Some(a) = x.as_array() {
                        for y in a {
                            let got = path.iter().try_fold(y, |c, k| c.get(k)).map(text);
                            let hit = got.as_deref() == Some(want.as_str());
                            if hit != *neg {
                                next.push(y.clone());
                            }
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// The first value a path selects, if the path parses and selects anything.
pub fn first(path: &str, v: &Value) -> Option<Value> {
    let steps = parse(path).ok()?;
    select(&steps, v).into_iter().next()
}
