//! Response helpers: a leaf module every handler uses and that uses nothing above it.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::error::ApiError;

/// A response body: a whole buffer or a stream (watches).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A whole-buffer body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A JSON response with the given HTTP code, fields in kube-apiserver's order
/// (`h8s_types::wire`).
pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = h8s_types::wire::to_vec(v);
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The `Status` of an error, with `Retry-After` when the error carries one.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.details.retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// A `v1 Status` of success with an HTTP code (binding and eviction answer with it).
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// kube-apiserver's budget for `Warning` headers: 4 Ki runes in all; past it every warning is
/// cut to 256 runes and, once the budget is spent again, the rest are dropped.
const WARNING_TOTAL_RUNES: usize = 4 * 1024;
const WARNING_ITEM_RUNES: usize = 256;
/// Besides kube-apiserver's rune budget, a cap on the number of headers: many short warnings
/// (one per unknown field of a fuzzed body) would otherwise pass 100 headers, more than
/// common HTTP clients (Python's `http.client`) accept in one response.
const WARNING_MAX_HEADERS: usize = 64;

/// `299 - "…"` header values for `warnings`: deduplicated, in order, within kube-apiserver's
/// budget (see `WARNING_TOTAL_RUNES`) and `WARNING_MAX_HEADERS`.
pub fn warning_headers<'a>(warnings: impl IntoIterator<Item = &'a String>) -> Vec<HeaderValue> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&str> = warnings
        .into_iter()
        .map(String::as_str)
        .filter(|w| seen.insert(*w))
        .collect();
    let total: usize = unique.iter().map(|w| w.chars().count()).sum();
    let truncating = total > WARNING_TOTAL_RUNES;
    let mut written = 0;
    let mut out = Vec::new();
    for w in unique {
        if out.len() == WARNING_MAX_HEADERS || (truncating && written >= WARNING_TOTAL_RUNES) {
            break;
        }
        let text: String = if truncating {
            w.chars().take(WARNING_ITEM_RUNES).collect()
        } else {
            w.to_owned()
        };
        written += text.chars().count();
        let v = format!(
            "299 - \"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(h) = HeaderValue::from_str(&v) {
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_deduplicated_and_bounded() {
        let w = |s: &str| s.to_owned();
        let few = [w("a \"b\""), w("c"), w("a \"b\"")];
        let h = warning_headers(&few);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0], "299 - \"a \\\"b\\\"\"");
        // Long warnings: cut to 256 runes each once the 4 Ki budget is passed, then dropped.
        let long: Vec<String> = (0..40)
            .map(|i| format!("{i:03}{}", "x".repeat(1000)))
            .collect();
        let h = warning_headers(&long);
        assert_eq!(h.len(), 16, "4096 runes / 256 per warning");
        assert!(h.iter().all(|v| v.len() <= 256 + 8));
        // Many short ones: at most WARNING_MAX_HEADERS headers.
        let short: Vec<String> = (0..1000)
            .map(|i| format!("unknown field \"f{i}\""))
            .collect();
        assert_eq!(warning_headers(&short).len(), WARNING_MAX_HEADERS);
        // Control characters cannot go into a header: that warning is left out, not a 500.
        assert_eq!(warning_headers(&[w("bad\nline"), w("ok")]).len(), 1);
    }
}
