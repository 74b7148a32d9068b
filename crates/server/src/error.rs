//! The one error type of the API: every refusal is an
//! `application/problem+json` body with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use locksmith_core::store::AcquireError;
use locksmith_core::wire::Problem;
use locksmith_core::{Code, StoreError};

/// A refusal or failure, as the client will read it.
#[derive(Debug)]
pub struct ApiError {
    /// The body.
    pub problem: Box<Problem>,
    /// Seconds for `Retry-After`, when trying again later can help.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error of `code`.
    pub fn new(code: Code, detail: impl Into<String>) -> ApiError {
        ApiError::from(Problem::new(code, detail))
    }
    /// Sets `Retry-After`, in seconds.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }
    /// Adds a fact to the body.
    pub fn with(mut self, name: &str, value: impl serde::Serialize) -> ApiError {
        self.problem = Box::new(self.problem.with(name, value));
        self
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> ApiError {
        let retry_after = (problem.status == 503).then_some(1);
        ApiError {
            problem: Box::new(problem),
            retry_after,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if matches!(e.code(), Code::StoreError | Code::Corrupt | Code::Unusable) {
            tracing::error!(event = "store_failed", code = %e.code(), error = %e, "store failed");
        }
        ApiError::from(Problem::from_store(&e))
    }
}

impl From<AcquireError> for ApiError {
    fn from(e: AcquireError) -> ApiError {
        match e {
            AcquireError::Busy(b) => ApiError::new(
                Code::Busy,
                "the lock is held; wait (wait_ms) or try again later",
            )
            .with("blocked", b),
            AcquireError::TimedOut(b) => ApiError::new(
                Code::WaitTimedOut,
                "the wait ended before the lock was granted",
            )
            .with("blocked", b),
            AcquireError::Cancelled => ApiError::new(
                Code::Unavailable,
                "the server is stopping; the request left the queue, try again",
            ),
            AcquireError::Store(e) => ApiError::from(e),
            other => ApiError::new(Code::StoreError, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
