//! Request bodies: media types and decoding into JSON values.

use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted (kube-apiserver's limit for JSON/YAML writes).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The media type of a body, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Yaml,
    Protobuf,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
}

impl Media {
    /// Parses a `Content-Type`; none at all means JSON (the Python client sends none).
    pub fn parse(ct: Option<&str>) -> Result<Media, ApiError> {
        let Some(ct) = ct else {
            return Ok(Media::Json);
        };
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Ok(match base.as_str() {
            "" | "application/json" | "*/*" => Media::Json,
            "application/yaml" | "application/x-yaml" | "text/yaml" => Media::Yaml,
            "application/vnd.kubernetes.protobuf" => Media::Protobuf,
            "application/json-patch+json" => Media::JsonPatch,
            "application/merge-patch+json" => Media::MergePatch,
            "application/strategic-merge-patch+json" => Media::StrategicMergePatch,
            "application/apply-patch+yaml" | "application/apply-patch+json" => Media::ApplyPatch,
            _ => return Err(ApiError::unsupported_media(ct)),
        })
    }

    pub fn is_patch(self) -> bool {
        matches!(
            self,
            Media::JsonPatch | Media::MergePatch | Media::StrategicMergePatch | Media::ApplyPatch
        )
    }
}

/// Parses JSON, reporting Kubernetes-style errors.
pub fn parse_json(b: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(b).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// Parses YAML (one document) into JSON.
pub fn parse_yaml(b: &[u8]) -> Result<Value, ApiError> {
    let s = std::str::from_utf8(b)
        .map_err(|_| ApiError::bad_request("the YAML body is not valid UTF-8"))?;
    // JSON is YAML, and serde_json reports JSON errors better; try it first.
    if let Ok(v) = serde_json::from_str::<Value>(s) {
        return Ok(v);
    }
    serde_saphyr::from_str::<Value>(s)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Decodes a create/update body of `media` into a JSON object.
pub fn decode_object(media: Media, b: &[u8]) -> Result<Value, ApiError> {
    let v = match media {
        Media::Json => parse_json(b)?,
        Media::Yaml => parse_yaml(b)?,
        Media::Protobuf => crate::proto::decode(b)?,
        _ => {
            return Err(ApiError::unsupported_media(
                "a patch media type is only accepted by PATCH",
            ))
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object (a Kubernetes object)",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media() {
        assert_eq!(Media::parse(None).unwrap(), Media::Json);
        assert_eq!(
            Media::parse(Some("application/json; charset=utf-8")).unwrap(),
            Media::Json
        );
        assert_eq!(
            Media::parse(Some("application/apply-patch+yaml")).unwrap(),
            Media::ApplyPatch
        );
        assert_eq!(Media::parse(Some("text/html")).unwrap_err().code, 415);
    }

    #[test]
    fn decode() {
        assert!(decode_object(Media::Json, b"{\"a\":1}").is_ok());
        assert_eq!(decode_object(Media::Json, b"{").unwrap_err().code, 400);
        assert_eq!(decode_object(Media::Json, b"[1]").unwrap_err().code, 400);
        let v = decode_object(
            Media::Yaml,
            b"apiVersion: v1  \nkind: Network  \nmetadata:\n  name: n\n",
        )
        .unwrap();
        assert_eq!(v["kind"], "Network");
        assert_eq!(decode_object(Media::Yaml, b"a: [").unwrap_err().code, 400);
    }
}
