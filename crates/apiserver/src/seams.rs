//! Seams other parts of h8s plug into the registry, set in [`crate::Config`]:
//!
//! - [`CsrSigner`]: signs a CertificateSigningRequest when it is approved (the cluster
//!   CA's signer is the authentication work's).
//! - [`Reviewer`]: answers a create-only review kind (`authentication.k8s.io` TokenReview)
//!   that the registry itself cannot answer.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::ApiError;

/// Signs approved CertificateSigningRequests.
///
/// The registry calls [`CsrSigner::sign`] in the write that adds the `Approved` condition
/// (through `certificatesigningrequests/approval`), and again on any later write of an
/// approved CSR that has no certificate yet. The answer is stored in `status.certificate`
/// in the same write.
pub trait CsrSigner: Send + Sync {
    /// `csr` is the object about to be stored (approved, `status.certificate` empty).
    /// Returns the PEM certificate chain, `Ok(None)` when the CSR's `spec.signerName` is
    /// not this signer's (the CSR stays approved and unsigned), or an error: a 4xx
    /// [`ApiError`] refuses the approval, anything else fails it with that status.
    fn sign<'a>(&'a self, csr: &'a Value) -> BoxFuture<'a, Result<Option<Vec<u8>>, ApiError>>;
}

/// Answers a create-only review kind.
pub trait Reviewer: Send + Sync {
    /// `review` is the request body with `apiVersion`/`kind` checked; the answer is the
    /// object with its `status` filled, sent back with 201.
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        review: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>>;
}
