//! Errors: [`Error`] for starting the server, [`ApiError`] for one request. Every
//! [`ApiError`] becomes a `v1 Status` in exactly one place ([`ApiError::to_status`]).

use serde_json::{json, Value};

/// Errors that stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pki: {0}")]
    Pki(String),
    #[error("{0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] h8s_store::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field-level problem of an Invalid (422) error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// A failed API request: an HTTP code, a Kubernetes `StatusReason`, a message and
/// optional details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`, boxed: errors travel through many `Result`s and are rare.
    pub details: Box<Details>,
}

/// `Status.details`.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after: Option<u32>,
}

/// What an error is about, for `Status.details`: the group and the resource (plural,
/// as Kubernetes puts it in `details.kind`) and the object's name.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
}

impl<'a> Subject<'a> {
    /// `pods "x"` or `deployments.apps "x"`, Kubernetes' qualified wording.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            format!("{} \"{}\"", self.resource, self.name)
        } else {
            format!("{}.{} \"{}\"", self.resource, self.group, self.name)
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    pub(crate) fn about(mut self, s: &Subject<'_>) -> Self {
        self.details.name = Some(s.name.to_string());
        self.details.group = Some(s.group.to_string());
        self.details.kind = Some(s.resource.to_string());
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }
    /// 403 about an object: `pods "x" is forbidden: why`.
    pub fn forbidden_about(s: &Subject<'_>, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} is forbidden: {why}", s.qualified()),
        )
        .about(s)
    }
    pub fn not_found(s: &Subject<'_>) -> Self {
        Self::new(404, "NotFound", format!("{} not found", s.qualified())).about(s)
    }
    /// A path no handler serves.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }
    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", msg)
    }
    pub fn already_exists(s: &Subject<'_>) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} already exists", s.qualified()),
        )
        .about(s)
    }
    pub fn conflict(s: &Subject<'_>, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {}: {why}", s.qualified()),
        )
        .about(s)
    }
    /// The stale-resourceVersion conflict of an update.
    pub fn stale(s: &Subject<'_>) -> Self {
        Self::conflict(
            s,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"),
        )
    }
    /// 415 for a patch type the resource does not take (strategic merge patch on custom
    /// resources), worded as kube-apiserver.
    pub fn unsupported_patch(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }
    /// 422 Invalid: `Kind "name" is invalid: field: message, …`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        );
        e.details.name = Some(name.to_string());
        e.details.group = Some(group.to_string());
        e.details.kind = Some(kind.to_string());
        e.details.causes = causes;
        e
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg)
    }
    /// 429 TooManyRequests, as the eviction API answers a disruption budget that
    /// allows no disruption now.
    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", msg)
    }
    /// 422 from the field errors of `h8s_types` validation.
    pub fn from_field_errors(
        kind: &str,
        group: &str,
        name: &str,
        errs: &h8s_types::FieldErrors,
    ) -> Self {
        Self::invalid(kind, group, name, causes(errs))
    }
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", msg);
        e.details.retry_after = Some(1);
        e
    }

    /// The error as a `v1 Status` object.
    pub fn to_status(&self) -> Value {
        let mut st = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        let d = &self.details;
        if let Some(n) = &d.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = d.group.as_ref().filter(|g| !g.is_empty()) {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &d.kind {
            details.insert("kind".into(), json!(k));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), json!(causes));
        }
        if let Some(r) = d.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        if !details.is_empty() {
            st["details"] = Value::Object(details);
        }
        if self.reason.is_empty() {
            st.as_object_mut().map(|m| m.remove("reason"));
        }
        st
    }
}

/// The causes of a 422 from `h8s_types` field errors.
pub fn causes(e: &h8s_types::FieldErrors) -> Vec<Cause> {
    e.iter()
        .map(|f| Cause {
            reason: f.kind.reason().to_string(),
            message: f.body(),
            field: f.field.clone(),
        })
        .collect()
}

/// Maps errors of the patch, selector and apply machinery (422s keep `Invalid`).
pub fn from_machinery(e: h8s_machinery::Error) -> ApiError {
    let mut a = ApiError::new(e.code(), e.reason(), e.to_string());
    if e.code() == 422 {
        a.reason = "Invalid";
    }
    a
}

/// Maps store errors to API errors about `s`.
pub fn from_store(e: h8s_store::Error, s: &Subject<'_>) -> ApiError {
    use h8s_store::Error as E;
    match e {
        E::NotFound(_) => ApiError::not_found(s),
        E::AlreadyExists(_) => ApiError::already_exists(s),
        E::Conflict { .. } => ApiError::stale(s),
        E::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        E::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        E::TooLarge { size, limit } => ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("object of {size} bytes is over the store's limit of {limit}"),
        ),
        E::Unavailable(m) => ApiError::unavailable(format!("storage is unavailable: {m}")),
        other => ApiError::internal(format!("storage error: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shapes() {
        let s = Subject {
            group: "apps",
            resource: "deployments",
            name: "d",
        };
        let st = ApiError::not_found(&s).to_status();
        assert_eq!(st["message"], "deployments.apps \"d\" not found");
        assert_eq!(st["code"], 404);
        assert_eq!(st["details"]["kind"], "deployments");
        assert_eq!(st["details"]["group"], "apps");
        let inv = ApiError::invalid(
            "Pod",
            "",
            "p",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers".into(),
            }],
        )
        .to_status();
        assert_eq!(
            inv["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert_eq!(inv["details"]["causes"][0]["field"], "spec.containers");
    }
}
