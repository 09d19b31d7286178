//! Protobuf request bodies (kubectl ≥ 1.32 sends them from its typed client).

use serde_json::Value;

use crate::error::ApiError;

/// Decodes a `k8s\0`-framed `runtime.Unknown` body into the object's JSON form
/// (`h8s_types::protobuf`); any failure is a 400.
pub fn decode(b: &[u8]) -> Result<Value, ApiError> {
    h8s_types::protobuf::decode(b).map_err(|e| ApiError::bad_request(e.to_string()))
}
