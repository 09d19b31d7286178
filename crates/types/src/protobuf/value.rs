//! A parser for the `Debug` rendering of prost messages: structs
//! (`Name { field: value, .. }`), `Some(..)`/`None`, Rust-escaped strings,
//! numbers, booleans, lists and maps. Errors, never panics, on anything else.

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    None,
    Some(Box<Value>),
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// A bare identifier (unit struct, enum variant, `NaN`, `inf`).
    Ident(String),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Struct(String, Vec<(String, Value)>),
}

impl Value {
    /// `Some(x)` → `x`, anything else unchanged.
    pub(super) fn unwrap_some(&self) -> &Value {
        match self {
            Value::Some(x) => x.unwrap_some(),
            v => v,
        }
    }
    pub(super) fn as_i64(&self) -> Option<i64> {
        match self.unwrap_some() {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
    /// Go's zero value of a scalar: `""`, `0`, `false`.
    pub(super) fn is_zero(&self) -> bool {
        match self.unwrap_some() {
            Value::Str(s) => s.is_empty(),
            Value::Int(i) => *i == 0,
            Value::UInt(u) => *u == 0,
            Value::Float(f) => *f == 0.0,
            Value::Bool(b) => !b,
            _ => false,
        }
    }
    pub(super) fn as_byte(&self) -> Option<u8> {
        self.as_i64().and_then(|i| u8::try_from(i).ok())
    }
}

const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Parses one rendered value; the whole input must be consumed.
pub(super) fn parse(s: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: s.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(format!("trailing input at {}", p.pos));
    }
    Ok(v)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(t.as_bytes()) {
            self.pos += t.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected {t:?} at {}", self.pos))
        }
    }
    fn ident(&mut self) -> String {
        self.ws();
        let start = self.pos;
        // `r#type` is a raw identifier.
        if self.s[self.pos..].starts_with(b"r#") {
            self.pos += 2;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn value(&mut self) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<Value, String> {
        self.ws();
        match self.peek() {
            None => Err("unexpected end".into()),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.eat("]") {
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value()?);
                    if self.eat("]") {
                        return Ok(Value::List(items));
                    }
                    self.expect(",")?;
                    if self.eat("]") {
                        return Ok(Value::List(items));
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                if self.eat("}") {
                    return Ok(Value::Map(entries));
                }
                loop {
                    let k = self.value()?;
                    self.expect(":")?;
                    let v = self.value()?;
                    entries.push((k, v));
                    if self.eat("}") {
                        return Ok(Value::Map(entries));
                    }
                    self.expect(",")?;
                    if self.eat("}") {
                        return Ok(Value::Map(entries));
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.ident();
                match name.as_str() {
                    "None" => return Ok(Value::None),
                    "true" => return Ok(Value::Bool(true)),
                    "false" => return Ok(Value::Bool(false)),
                    "Some" => {
                        self.expect("(")?;
                        let v = self.value()?;
                        self.expect(")")?;
                        return Ok(Value::Some(Box::new(v)));
                    }
                    _ => {}
                }
                if self.eat("{") {
                    let mut fields = Vec::new();
                    if self.eat("}") {
                        return Ok(Value::Struct(name, fields));
                    }
                    loop {
                        let f = self.ident();
                        if f.is_empty() {
                            return Err(format!("expected a field name at {}", self.pos));
                        }
                        self.expect(":")?;
                        fields.push((f, self.value()?));
                        if self.eat("}") {
                            return Ok(Value::Struct(name, fields));
                        }
                        self.expect(",")?;
                        // `..` closes a non-exhaustive struct.
                        if self.eat("..") {
                            self.expect("}")?;
                            return Ok(Value::Struct(name, fields));
                        }
                        if self.eat("}") {
                            return Ok(Value::Struct(name, fields));
                        }
                    }
                }
                if self.eat("(") {
                    // A tuple struct or enum variant with one value.
                    let v = self.value()?;
                    self.expect(")")?;
                    return Ok(Value::Struct(name, vec![("0".into(), v)]));
                }
                Ok(Value::Ident(name))
            }
            Some(c) => Err(format!("unexpected {:?} at {}", c as char, self.pos)),
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            if self.s[self.pos..].starts_with(b"inf") {
                self.pos += 3;
                return Ok(Value::Ident("-inf".into()));
            }
        }
        let mut float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' => {}
                b'.' | b'e' | b'E' => float = true,
                b'+' | b'-' if float => {}
                _ => break,
            }
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).map_err(|e| e.to_string())?;
        if float {
            text.parse::<f64>()
                .map(Value::Float)
                .map_err(|e| format!("bad number {text:?}: {e}"))
        } else if let Ok(i) = text.parse::<i64>() {
            Ok(Value::Int(i))
        } else {
            text.parse::<u64>()
                .map(Value::UInt)
                .map_err(|e| format!("bad number {text:?}: {e}"))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'0' => out.push(0),
                        b'\\' | b'"' | b'\'' => out.push(e),
                        b'u' => {
                            if self.peek() != Some(b'{') {
                                return Err("bad unicode escape".into());
                            }
                            self.pos += 1;
                            let start = self.pos;
                            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                self.pos += 1;
                            }
                            let hex = std::str::from_utf8(&self.s[start..self.pos])
                                .map_err(|e| e.to_string())?;
                            if self.peek() != Some(b'}') {
                                return Err("bad unicode escape".into());
                            }
                            self.pos += 1;
                            let cp = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            let ch = char::from_u32(cp).ok_or("bad code point")?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => return Err(format!("unknown escape \\{}", other as char)),
                    }
                }
                _ => out.push(c),
            }
        }
    }
}
