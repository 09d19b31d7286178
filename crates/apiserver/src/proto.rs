//! Protobuf request bodies (kubectl ≥ 1.32 sends them from its typed client).

use serde_json::Value;

use crate::error::ApiError;

/// Decodes a `k8s\0`-framed `runtime.Unknown` body into the object's JSON form.
// TODO(types): switch to h8s_types' protobuf decoder when it lands.
pub fn decode(b: &[u8]) -> Result<Value, ApiError> {
    if !b.starts_with(b"k8s\0") {
        return Err(ApiError::bad_request(
            "protobuf body does not start with the k8s\\0 envelope",
        ));
    }
    Err(ApiError::unsupported_media(
        "application/vnd.kubernetes.protobuf",
    ))
}
