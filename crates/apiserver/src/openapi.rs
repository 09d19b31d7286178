//! OpenAPI documents, served from `h8s_types`.

use http::Response;

use crate::api::Body;
use crate::error::ApiError;

// TODO(types): serve h8s_types::openapi once it lands.
pub fn v2(_accept: &str) -> Result<Response<Body>, ApiError> {
    Err(ApiError::no_route())
}

pub fn v3_index() -> Result<Response<Body>, ApiError> {
    Err(ApiError::no_route())
}

pub fn v3(_path: &str) -> Result<Response<Body>, ApiError> {
    Err(ApiError::no_route())
}
