//! The runtime's typed errors, and their wire form between `h8s` and a pod's shim.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the runtime API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No pod, container or image by that name or id.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// A name or id is already taken.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// The request itself is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pod or container is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The VM did not report in (guest agent `Hello`) in time.
    #[error("VM did not boot within {0:?}")]
    BootTimeout(Duration),
    /// The command of a container or exec does not exist in the image.
    #[error("command not found: {0}")]
    CommandNotFound(String),
    /// The command exists but cannot be executed (permissions, bad binary).
    #[error("command cannot be executed: {0}")]
    CommandNotExecutable(String),
    /// QEMU failed to start or died.
    #[error("QEMU: {0}")]
    Qemu(String),
    /// The QMP conversation with QEMU failed.
    #[error("QMP: {0}")]
    Qmp(String),
    /// The guest agent failed a request or broke the protocol.
    #[error("guest agent: {0}")]
    Agent(String),
    /// The pod's supervisor (shim) is gone or answered nonsense.
    #[error("pod supervisor: {0}")]
    Shim(String),
    /// The image store failed.
    #[error("image: {0}")]
    Image(String),
    /// An image's registry could not be reached at all (nothing was refused by it).
    #[error("image: {0}")]
    ImageUnreachable(String),
    /// A host I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::image::Error> for Error {
    fn from(e: crate::image::Error) -> Self {
        match e {
            crate::image::Error::NotFound(id) => Error::NotFound { kind: "image", id },
            e @ crate::image::Error::Unreachable { .. } => Error::ImageUnreachable(e.to_string()),
            other => Error::Image(other.to_string()),
        }
    }
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn to_wire(&self) -> WireError {
        let kind = match self {
            Error::NotFound { kind, .. } => format!("not-found:{kind}"),
            Error::AlreadyExists { kind, .. } => format!("exists:{kind}"),
            Error::InvalidArgument(_) => "invalid".into(),
            Error::FailedPrecondition(_) => "precondition".into(),
            Error::BootTimeout(_) => "boot-timeout".into(),
            Error::CommandNotFound(_) => "command-not-found".into(),
            Error::CommandNotExecutable(_) => "command-not-executable".into(),
            Error::Qemu(_) => "qemu".into(),
            Error::Qmp(_) => "qmp".into(),
            Error::Agent(_) => "agent".into(),
            Error::Shim(_) => "shim".into(),
            Error::Image(_) => "image".into(),
            Error::ImageUnreachable(_) => "image-unreachable".into(),
            Error::Io { .. } => "io".into(),
        };
        let message = match self {
            Error::NotFound { id, .. } | Error::AlreadyExists { id, .. } => id.clone(),
            Error::InvalidArgument(m)
            | Error::FailedPrecondition(m)
            | Error::CommandNotFound(m)
            | Error::CommandNotExecutable(m)
            | Error::Qemu(m)
            | Error::Qmp(m)
            | Error::Agent(m)
            | Error::Shim(m)
            | Error::Image(m)
            | Error::ImageUnreachable(m) => m.clone(),
            Error::BootTimeout(d) => d.as_millis().to_string(),
            Error::Io { .. } => self.to_string(),
        };
        WireError { kind, message }
    }
}

/// An [`Error`] as it crosses the shim socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub kind: String,
    pub message: String,
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Self {
        fn static_kind(k: &str) -> &'static str {
            match k {
                "pod" => "pod",
                "container" => "container",
                "exec" => "exec",
                "image" => "image",
                _ => "object",
            }
        }
        let m = w.message;
        match w.kind.as_str() {
            k if k.starts_with("not-found:") => Error::NotFound {
                kind: static_kind(&k["not-found:".len()..]),
                id: m,
            },
            k if k.starts_with("exists:") => Error::AlreadyExists {
                kind: static_kind(&k["exists:".len()..]),
                id: m,
            },
            "invalid" => Error::InvalidArgument(m),
            "precondition" => Error::FailedPrecondition(m),
            "boot-timeout" => Error::BootTimeout(Duration::from_millis(m.parse().unwrap_or(0))),
            "command-not-found" => Error::CommandNotFound(m),
            "command-not-executable" => Error::CommandNotExecutable(m),
            "qemu" => Error::Qemu(m),
            "qmp" => Error::Qmp(m),
            "agent" => Error::Agent(m),
            "image" => Error::Image(m),
            "image-unreachable" => Error::ImageUnreachable(m),
            "io" => Error::Io {
                what: "pod supervisor".into(),
                source: std::io::Error::other(m),
            },
            _ => Error::Shim(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_keeps_the_variant() {
        let cases = [
            Error::NotFound {
                kind: "container",
                id: "app".into(),
            },
            Error::BootTimeout(Duration::from_secs(3)),
            Error::CommandNotFound("nope".into()),
            Error::InvalidArgument("bad".into()),
        ];
        for e in cases {
            let back: Error = e.to_wire().into();
            assert_eq!(back.to_string(), e.to_string());
        }
    }
}
