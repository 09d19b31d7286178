//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong building or tearing down the fabric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from a user or caller: a name, CIDR, address or option that cannot work.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (`network name`, `subnet`, …).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A Network, attachment or device that does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `network`, `attachment`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Something with that name or id already exists.
    #[error("{kind} {name:?} already exists")]
    Exists {
        /// `network`, `attachment`, `vni`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Every address of every subnet of the Network is in use.
    #[error("network {network:?} has no free address left ({used} in use across {subnets})")]
    Exhausted {
        /// The Network.
        network: String,
        /// Addresses allocated now.
        used: usize,
        /// The subnets searched.
        subnets: String,
    },
    /// The Network still has pods attached.
    #[error("network {network:?} still has {pods} pod(s) attached")]
    InUse {
        /// The Network.
        network: String,
        /// How many attachments remain.
        pods: usize,
    },
    /// A state file could not be read or written.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file is not valid JSON of the expected shape.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// `nft` rejected a rule set or could not run.
    #[error("nft: {0}")]
    Nft(String),
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn nl(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }
}
