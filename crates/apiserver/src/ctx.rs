//! One request's context, handed down the chain.

use http::{HeaderMap, Method};

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::util::Query;

/// One request's context.
pub struct Ctx {
    pub user: UserInfo,
    pub query: Query,
    pub headers: HeaderMap,
    pub method: Method,
    /// The client accepts a `meta.k8s.io Table`.
    pub as_table: bool,
    /// `includeObject` for Tables: `Metadata` (default), `Object` or `None`.
    pub include_object: String,
    /// Warnings to send back as `Warning: 299` headers.
    pub warnings: Vec<String>,
    /// Warnings added where the context is shared (admission webhooks and policies).
    pub late_warnings: std::sync::Mutex<Vec<String>>,
    /// The Kubernetes verb, for metrics and authorization.
    pub verb: &'static str,
    /// The write is a server-side apply (managed fields are computed by apply).
    pub applying: bool,
    /// The request's parts, for subresources delegated to a [`crate::SubresourceHandler`].
    pub parts: Option<http::request::Parts>,
    /// (auth) What the authorizer lets this caller see, when it answered
    /// `Decision::AllowFiltered`: lists and watches return only what it allows.
    pub authz_filter: Option<std::sync::Arc<dyn crate::auth::ObjectFilter>>,
}

impl Ctx {
    /// A context for work the server does on its own behalf (bootstrap objects).
    pub fn internal(user: UserInfo) -> Ctx {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("h8s-apiserver"),
        );
        Ctx {
            user,
            query: Query::parse(None),
            headers,
            method: Method::POST,
            as_table: false,
            include_object: String::new(),
            warnings: Vec::new(),
            late_warnings: Default::default(),
            verb: "create",
            applying: false,
            parts: None,
            authz_filter: None,
        }
    }

    pub fn dry_run(&self) -> bool {
        self.query.all("dryRun").iter().any(|v| v == "All")
    }
    pub fn field_manager(&self) -> Option<&str> {
        self.query.get("fieldManager").filter(|s| !s.is_empty())
    }
    /// The manager of a write: `fieldManager`, else the User-Agent's program name, as
    /// kube-apiserver derives it.
    pub fn manager_name(&self) -> String {
        if let Some(m) = self.field_manager() {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let prog = ua.split('/').next().unwrap_or("").trim();
        if prog.is_empty() {
            "unknown".into()
        } else {
            prog.chars().take(128).collect()
        }
    }

    /// The request's `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// The `fieldValidation` mode of a write; kube-apiserver's default is Warn.
    pub fn field_validation(&self) -> Result<&'static str, ApiError> {
        match self.query.get("fieldValidation").unwrap_or("") {
            "Strict" => Ok("Strict"),
            "Warn" | "" => Ok("Warn"),
            "Ignore" => Ok("Ignore"),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}"
            ))),
        }
    }
}
