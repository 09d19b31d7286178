//! Swagger 2.0 JSON → gnostic's `openapi_v2.Document` protobuf, the form
//! `/openapi/v2` must take for kubectl (it refuses JSON there).
//!
//! A small hand encoder: the field numbers are those of gnostic's
//! `OpenAPIv2.proto`; vendor extensions travel as YAML text (JSON is YAML)
//! in `Any.yaml`, as kube-apiserver sends them.

use serde_json::{Map, Value};

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    /// A string field; proto3 leaves empty strings out.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.tag(field, 0);
            self.varint(1);
        }
    }
    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.tag(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `repeated NamedAny vendor_extension` from the `x-` keys of `v`.
fn extensions(m: &mut Msg, field: u32, v: &Value) {
    let Some(obj) = v.as_object() else { return };
    for (k, x) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut any = Msg::default();
        any.string(2, &x.to_string());
        let mut named = Msg::default();
        named.string(1, k);
        named.msg(2, any);
        m.msg(field, named);
    }
}

/// Encodes a Swagger 2.0 document.
pub(super) fn encode_document(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string(1, s(doc, "swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, s(info, "title"));
        i.string(2, s(info, "version"));
        i.string(3, s(info, "description"));
        m.msg(2, i);
    }
    m.string(3, s(doc, "host"));
    m.string(4, s(doc, "basePath"));
    m.strings(5, doc.get("schemes"));
    m.strings(6, doc.get("consumes"));
    m.strings(7, doc.get("produces"));
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, item) in paths {
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, path_item(item));
            p.msg(2, named);
        }
        m.msg(8, p);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, schema_v) in defs {
            d.msg(1, named_schema(name, schema_v));
        }
        m.msg(9, d);
    }
    for req in doc
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut r = Msg::default();
        for (name, scopes) in req.as_object().into_iter().flatten() {
            let mut arr = Msg::default();
            arr.strings(1, Some(scopes));
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, arr);
            r.msg(1, named);
        }
        m.msg(12, r);
    }
    if let Some(sd) = doc.get("securityDefinitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, def) in sd {
            let mut api_key = Msg::default();
            api_key.string(1, s(def, "type"));
            api_key.string(2, s(def, "name"));
            api_key.string(3, s(def, "in"));
            api_key.string(4, s(def, "description"));
            let mut item = Msg::default();
            item.msg(2, api_key);
            let mut named = Msg::default();
            named.string(1, name);
            named.msg(2, item);
            d.msg(1, named);
        }
        m.msg(13, d);
    }
    extensions(&mut m, 16, doc);
    m.0
}

fn named_schema(name: &str, v: &Value) -> Msg {
    let mut named = Msg::default();
    named.string(1, name);
    named.msg(2, schema(v));
    named
}

/// `openapi_v2.Schema`.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, s(v, "$ref"));
    m.string(2, s(v, "format"));
    m.string(3, s(v, "title"));
    m.string(4, s(v, "description"));
    if let Some(x) = v.get("maximum").and_then(Value::as_f64) {
        m.double(7, x);
    }
    if let Some(x) = v.get("minimum").and_then(Value::as_f64) {
        m.double(9, x);
    }
    m.strings(19, v.get("required"));
    match v.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.tag(2, 0);
            a.varint(u64::from(*b));
            m.msg(21, a);
        }
        Some(ap @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.msg(1, schema(ap));
            m.msg(21, a);
        }
        _ => {}
    }
    match v.get("type") {
        Some(Value::String(t)) => {
            let mut ty = Msg::default();
            ty.string(1, t);
            m.msg(22, ty);
        }
        Some(ts @ Value::Array(_)) => {
            let mut ty = Msg::default();
            ty.strings(1, Some(ts));
            m.msg(22, ty);
        }
        _ => {}
    }
    match v.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Msg::default();
            for x in items {
                it.msg(1, schema(x));
            }
            m.msg(23, it);
        }
        Some(x @ Value::Object(_)) => {
            let mut it = Msg::default();
            it.msg(1, schema(x));
            m.msg(23, it);
        }
        _ => {}
    }
    for x in v
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(24, schema(x));
    }
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, x) in props {
            p.msg(1, named_schema(name, x));
        }
        m.msg(25, p);
    }
    extensions(&mut m, 31, v);
    m
}

fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, s(item, "$ref"));
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(method) {
            m.msg(field, operation(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(9, parameters_item(p));
    }
    extensions(&mut m, 10, item);
    m
}

fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    m.strings(1, op.get("tags"));
    m.string(2, s(op, "summary"));
    m.string(3, s(op, "description"));
    m.string(5, s(op, "operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.msg(8, parameters_item(p));
    }
    if let Some(resps) = op.get("responses").and_then(Value::as_object) {
        m.msg(9, responses(resps));
    }
    m.strings(10, op.get("schemes"));
    m.boolean(
        11,
        op.get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    );
    extensions(&mut m, 13, op);
    m
}

fn responses(resps: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (code, r) in resps {
        let mut resp = Msg::default();
        resp.string(1, s(r, "description"));
        if let Some(sch) = r.get("schema") {
            let mut item = Msg::default();
            item.msg(1, schema(sch));
            resp.msg(2, item);
        }
        extensions(&mut resp, 5, r);
        let mut value = Msg::default();
        value.msg(1, resp);
        let mut named = Msg::default();
        named.string(1, code);
        named.msg(2, value);
        m.msg(1, named);
    }
    m
}

/// `ParametersItem { Parameter { BodyParameter | NonBodyParameter } }`.
fn parameters_item(p: &Value) -> Msg {
    let mut param = Msg::default();
    if s(p, "in") == "body" {
        let mut b = Msg::default();
        b.string(1, s(p, "description"));
        b.string(2, s(p, "name"));
        b.string(3, "body");
        b.boolean(
            4,
            p.get("required").and_then(Value::as_bool).unwrap_or(false),
        );
        if let Some(sch) = p.get("schema") {
            b.msg(5, schema(sch));
        }
        extensions(&mut b, 6, p);
        param.msg(1, b);
    } else {
        // Query and path sub-schemas share their first fields' meaning but
        // not all numbers: query has allow_empty_value at 5 and type at 6,
        // path has type at 5.
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        let mut sub = Msg::default();
        sub.boolean(1, required);
        sub.string(2, s(p, "in"));
        sub.string(3, s(p, "description"));
        sub.string(4, s(p, "name"));
        let (field, type_field, unique_field, ext_field) = match s(p, "in") {
            "path" => (4, 5, 19, 22),
            "header" => (1, 5, 19, 22),
            "formData" => (2, 6, 20, 23),
            _ => (3, 6, 20, 23),
        };
        sub.string(type_field, s(p, "type"));
        sub.boolean(
            unique_field,
            p.get("uniqueItems")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        );
        extensions(&mut sub, ext_field, p);
        let mut non_body = Msg::default();
        non_body.msg(field, sub);
        param.msg(2, non_body);
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

#[cfg(test)]
pub(super) mod decode {
    //! A minimal protobuf reader for tests: walks fields by number.

    /// One field: number and payload (varint value or bytes).
    #[derive(Debug)]
    pub enum Field<'a> {
        Bytes(u32, &'a [u8]),
        Scalar,
    }

    pub fn fields(mut b: &[u8]) -> Result<Vec<Field<'_>>, String> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| -> Result<u64, String> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
                *b = rest;
                v |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err("varint too long".into())
        };
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let num = (key >> 3) as u32;
            match key & 7 {
                0 => {
                    varint(&mut b)?;
                    out.push(Field::Scalar);
                }
                1 => {
                    let (x, rest) = b.split_at_checked(8).ok_or("truncated fixed64")?;
                    let _ = x;
                    out.push(Field::Scalar);
                    b = rest;
                }
                2 => {
                    let len = varint(&mut b)? as usize;
                    let (x, rest) = b.split_at_checked(len).ok_or("truncated bytes")?;
                    out.push(Field::Bytes(num, x));
                    b = rest;
                }
                w => return Err(format!("wire type {w}")),
            }
        }
        Ok(out)
    }

    pub fn bytes_of(b: &[u8], num: u32) -> Vec<&[u8]> {
        fields(b)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| match f {
                Field::Bytes(n, x) if n == num => Some(x),
                _ => None,
            })
            .collect()
    }

    pub fn string_of(b: &[u8], num: u32) -> String {
        bytes_of(b, num)
            .first()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .unwrap_or_default()
    }
}
