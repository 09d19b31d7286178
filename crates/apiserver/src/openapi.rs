//! OpenAPI documents, built by `h8s_types::openapi` and served here, with the custom
//! resources' ([`crate::crd::openapi`]) and the aggregated APIs'
//! ([`crate::aggregator::openapi`]) added.

use h8s_types::openapi;
use http::{HeaderValue, Response};

use crate::aggregator::Aggregator;
use crate::crd::Registry;
use crate::error::ApiError;
use crate::response::{full, Body};

fn respond(ct: &str, body: impl Into<bytes::Bytes>, etag: Option<&str>) -> Response<Body> {
    let mut r = Response::new(full(body.into()));
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
pub fn v2(
    path: &str,
    accept: &str,
    crds: &Registry,
    agg: &Aggregator,
) -> Result<Response<Body>, ApiError> {
    let pb = path.ends_with(".pb-v1") || accept.contains("protobuf");
    let merged = agg.merged_v2(crds, || match crds.openapi() {
        Some(docs) => docs.v2(crds).0.clone(),
        None => openapi::v2_json().to_vec(),
    });
    if let Some(d) = merged {
        return Ok(if pb {
            respond("application/octet-stream", d.1.clone(), None)
        } else {
            respond("application/json", d.0.clone(), None)
        });
    }
    if let Some(docs) = crds.openapi() {
        let d = docs.v2(crds);
        return Ok(if pb {
            respond("application/octet-stream", d.1.clone(), None)
        } else {
            respond("application/json", d.0.clone(), None)
        });
    }
    if pb {
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
pub fn v3_index(crds: &Registry, agg: &Aggregator) -> Result<Response<Body>, ApiError> {
    let aggregated = agg.v3_entries();
    if !aggregated.is_empty() {
        let mut extra: Vec<(String, String)> = crds
            .openapi()
            .map(|d| {
                d.v3.iter()
                    .map(|(k, (h, _))| (k.clone(), h.clone()))
                    .collect()
            })
            .unwrap_or_default();
        extra.extend(aggregated);
        return Ok(respond(
            "application/json",
            openapi::v3_index_with(&extra),
            None,
        ));
    }
    if let Some(docs) = crds.openapi() {
        return Ok(respond("application/json", docs.index.clone(), None));
    }
    Ok(respond("application/json", openapi::v3_index(), None))
}

/// `/openapi/v3/<api/v1 | apis/g/v>`.
pub fn v3(path: &str, crds: &Registry, agg: &Aggregator) -> Result<Response<Body>, ApiError> {
    let key = path.trim_start_matches('/').trim_end_matches('/');
    let custom = || {
        crds.openapi()
            .and_then(|docs| docs.v3.get(key).map(|(h, d)| (h.clone(), d.clone())))
    };
    let mut r = match openapi::v3_document(path) {
        Some((hash, doc)) => respond("application/json", doc, Some(hash)),
        None => match custom() {
            Some((hash, doc)) => respond("application/json", doc, Some(&hash)),
            None => {
                let (hash, doc) = agg.v3_document(key).ok_or_else(ApiError::no_route)?;
                respond("application/json", doc, Some(&hash))
            }
        },
    };
    // The index links documents by hash, so a document at a hash never changes.
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    Ok(r)
}
