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
