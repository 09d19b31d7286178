//! Creates with `generateName`: a generated name that is taken is retried with a new
//! suffix, as kube-apiserver ≥ 1.32 does (RetryGenerateName: 8 attempts in all).

use std::future::Future;

use crate::error::ApiError;

/// Attempts of a create with a generated name (kube's `maxNameGenerationCreateAttempts`).
pub(crate) const GENERATE_NAME_ATTEMPTS: usize = 8;

/// Runs `attempt` (which generates a fresh name each time) until it does not fail with
/// AlreadyExists, at most [`GENERATE_NAME_ATTEMPTS`] times; the last answer is returned.
pub(crate) async fn with_generated_name<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.reason == "AlreadyExists" && tries < GENERATE_NAME_ATTEMPTS => {
                tracing::debug!(tries, "generated name taken; retrying with a new one");
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Subject;

    fn taken() -> ApiError {
        ApiError::already_exists(&Subject {
            group: "",
            resource: "configmaps",
            name: "x-abcde",
        })
    }

    #[tokio::test]
    async fn retries_taken_names_until_one_is_free() {
        let mut calls = 0;
        let r = with_generated_name(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(taken())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn gives_up_after_eight_attempts_with_already_exists() {
        let mut calls = 0;
        let r: Result<(), _> = with_generated_name(|| {
            calls += 1;
            async { Err(taken()) }
        })
        .await;
        assert_eq!(calls, GENERATE_NAME_ATTEMPTS);
        let e = r.unwrap_err();
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = with_generated_name(|| {
            calls += 1;
            async { Err(ApiError::forbidden("no")) }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(r.unwrap_err().code, 403);
    }
}
