//! The one error type of this crate, with its mapping to Kubernetes `Status` codes.

use std::fmt;

/// Everything that can go wrong in the machinery. Each variant maps to exactly one HTTP
/// status (see [`Error::code`]) and `Status.reason` (see [`Error::reason`]), chosen to match
/// what kube-apiserver answers for the same input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A `labelSelector` string or `metav1.LabelSelector` that does not parse or validate.
    /// The message is Kubernetes' own (e.g. `unable to parse requirement: …`). → 400 BadRequest.
    #[error("{0}")]
    InvalidLabelSelector(String),
    /// A `fieldSelector` string that does not parse (e.g. `invalid selector: 'x'; can't
    /// understand 'x'`). → 400 BadRequest.
    #[error("{0}")]
    InvalidFieldSelector(String),
    /// A field selector names a field the kind does not index (`field label not supported:
    /// spec.foo`). → 400 BadRequest.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    /// The patch document itself is malformed: not JSON, wrong shape, bad JSON Pointer, unknown
    /// op, malformed `$`-directive. → 400 BadRequest.
    #[error("{0}")]
    BadPatch(String),
    /// A well-formed patch could not be applied to this object (a JSON Patch `test` failed, a
    /// path is missing, a strategic directive does not fit the data). → 422 Invalid, as
    /// kube-apiserver answers for JSON Patch application errors.
    #[error("{0}")]
    PatchNotApplicable(String),
    /// The request is over a size limit (e.g. more than 10,000 JSON Patch operations).
    /// → 413 RequestEntityTooLarge.
    #[error("{0}")]
    TooLarge(String),
    /// Server-side apply found fields owned by other managers with different values, and
    /// `force` was not set. → 409 Conflict.
    #[error("{0}")]
    Conflict(Conflicts),
    /// The applied configuration or object is structurally unusable for apply / managed
    /// fields (e.g. not an object, duplicate keys in an associative list, `managedFields`
    /// malformed). → 422 Invalid.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The HTTP status code kube-apiserver would answer with.
    pub fn code(&self) -> u16 {
        match self {
            Error::InvalidLabelSelector(_)
            | Error::InvalidFieldSelector(_)
            | Error::FieldLabelNotSupported(_)
            | Error::BadPatch(_) => 400,
            Error::Conflict(_) => 409,
            Error::TooLarge(_) => 413,
            Error::PatchNotApplicable(_) | Error::Invalid(_) => 422,
        }
    }

    /// The `Status.reason` to send with [`Error::code`].
    pub fn reason(&self) -> &'static str {
        match self.code() {
            400 => "BadRequest",
            409 => "Conflict",
            413 => "RequestEntityTooLarge",
            _ => "Invalid",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field that another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`fieldManager`).
    pub manager: String,
    /// `true` when the other manager's entry is an `Update` (not `Apply`) entry; Kubernetes
    /// then names its apiVersion too (`"kube-controller-manager" using apps/v1`).
    pub update_api_version: Option<String>,
    /// The other manager's subresource (`status`, `scale`), when not empty.
    pub subresource: Option<String>,
    /// The field, in Kubernetes' path notation: `.spec.replicas`,
    /// `.spec.containers[name="nginx"].image`.
    pub field: String,
}

impl Conflict {
    /// The manager as kube-apiserver prints it in conflict messages.
    pub fn manager_display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s = format!("{s} with subresource {sub:?}");
        }
        if let Some(v) = &self.update_api_version {
            s = format!("{s} using {v}");
        }
        s
    }
}

/// The conflicts of one apply request, rendered like kube-apiserver's message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conflicts(pub Vec<Conflict>);

impl fmt::Display for Conflicts {
    /// `Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas`, or for several
    /// `Apply failed with 2 conflicts: conflicts with "a":\n- .spec.x\n- .spec.y` — the text
    /// kube-apiserver builds and kubectl prints verbatim.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() == 1 {
            let c = &self.0[0];
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager_display(),
                c.field
            );
        }
        let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for c in &self.0 {
            by_manager
                .entry(c.manager_display())
                .or_default()
                .push(&c.field);
        }
        let mut lines = Vec::new();
        for (m, fields) in by_manager {
            lines.push(format!("conflicts with {m}:"));
            for p in fields {
                lines.push(format!("- {p}"));
            }
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

impl Conflicts {
    /// `Status.details.causes` entries as kube-apiserver sends them
    /// (`{"type":"FieldManagerConflict","message":"conflict with \"m\"","field":".spec.x"}`).
    pub fn causes(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.0
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "type": "FieldManagerConflict",
                        "message": format!("conflict with {}", c.manager_display()),
                        "field": c.field,
                    })
                })
                .collect(),
        )
    }
}
