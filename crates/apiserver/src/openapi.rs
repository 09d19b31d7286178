//! OpenAPI documents, built by `h8s_types::openapi` and served here.

use h8s_types::openapi;
use http::{HeaderValue, Response};

use crate::error::ApiError;
use crate::response::{full, Body};

fn respond(ct: &str, body: &'static [u8], etag: Option<&str>) -> Response<Body> {
    let mut r = Response::new(full(bytes::Bytes::from_static(body)));
    if let Ok(h) = HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, h);
    }
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&format!("\"{e}\"")).ok()) {
        r.headers_mut().insert(http::header::ETAG, e);
    }
    r.headers_mut()
        .insert(http::header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// `/openapi/v2`: protobuf when asked for (kubectl 1.27/1.28 must get it), else JSON.
/// `/swagger-2.0.0.pb-v1` is always protobuf.
pub fn v2(path: &str, accept: &str) -> Result<Response<Body>, ApiError> {
    if path.ends_with(".pb-v1") || accept.contains("protobuf") {
        // kube-apiserver labels the protobuf document application/octet-stream: Go's
        // mime parser (in client-go) rejects the '@' of the proto-openapi media type.
        return Ok(respond(
            "application/octet-stream",
            openapi::v2_protobuf(),
            None,
        ));
    }
    Ok(respond("application/json", openapi::v2_json(), None))
}

/// Builds the documents ahead of the first request (they are built lazily, once).
pub fn warm_up() {
    let _ = openapi::v3_index();
}

/// `/openapi/v3`: the index of group-version documents.
pub fn v3_index() -> Result<Response<Body>, ApiError> {
    Ok(respond("application/json", openapi::v3_index(), None))
}

/// `/openapi/v3/<api/v1 | apis/g/v>`.
pub fn v3(path: &str) -> Result<Response<Body>, ApiError> {
    let (hash, doc) = openapi::v3_document(path).ok_or_else(ApiError::no_route)?;
    let mut r = respond("application/json", doc, Some(hash));
    // The index links documents by hash, so a document at a hash never changes.
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    Ok(r)
}
