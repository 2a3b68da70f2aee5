//! The API's error type and its `application/problem+json` rendering (RFC 9457).
//!
//! Every error response the service sends, whether from a handler, an
//! extractor, the router (404, 405) or a middleware (a timeout's 503, 413,
//! panics), leaves
//! as a problem document. 5xx bodies carry no internals; the cause is logged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{self as http, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use domain::{FieldError, Problem};
use tower::{Layer, Service};

use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying when the database is down.
const RETRY_AFTER_SECS: &str = "5";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, not UTF-8, or not a JSON object.
    #[error("{0}")]
    MalformedBody(String),
    /// The body is not declared as JSON.
    #[error("the request body must be sent as application/json")]
    UnsupportedMediaType,
    /// The body is over the size limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Body fields that break the rules of an entry.
    #[error("one or more fields are invalid")]
    InvalidFields(Vec<FieldError>),
    /// No resource at this path (with what was looked for).
    #[error("{0}")]
    NotFound(String),
    /// Query parameters out of range or malformed.
    #[error("one or more query parameters are invalid")]
    InvalidQuery(Vec<FieldError>),
    /// The `Idempotency-Key` header is malformed.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// A request with this `Idempotency-Key` is still being served.
    #[error(
        "a request with this Idempotency-Key is still being served; send it again once that one is answered"
    )]
    IdempotencyKeyInUse,
    /// This `Idempotency-Key` was first sent with a different body.
    #[error(
        "this Idempotency-Key was first sent with a different entry; use a new key for a new entry"
    )]
    IdempotencyKeyReused,
    /// A write was sent to the database and the connection lost before its
    /// answer: it may or may not have been stored.
    #[error("the write's outcome is unknown")]
    OutcomeUnknown(#[source] StoreError),
    /// The database cannot serve now: unreachable, overloaded, refusing
    /// the credentials, or no connection free in time.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] StoreError),
    /// Anything else: a bug or an unexpected database answer.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyInUse => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::DatabaseUnavailable(_) | ApiError::OutcomeUnknown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document for this error.
    fn problem(&self) -> Problem {
        let status = self.status();
        let (kind, title) = match self {
            ApiError::MalformedBody(_) => ("/problems/malformed-body", "Malformed request body"),
            ApiError::UnsupportedMediaType => {
                ("/problems/unsupported-media-type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge { .. } => {
                ("/problems/body-too-large", "Request body too large")
            }
            ApiError::InvalidFields(_) => ("/problems/invalid-fields", "Invalid fields"),
            ApiError::InvalidQuery(_) => ("/problems/invalid-query", "Invalid query parameters"),
            ApiError::NotFound(_) => ("about:blank", "Not Found"),
            ApiError::InvalidIdempotencyKey(_) => (
                "/problems/invalid-idempotency-key",
                "Invalid Idempotency-Key",
            ),
            ApiError::IdempotencyKeyInUse => {
                ("/problems/idempotency-key-in-use", "Idempotency-Key in use")
            }
            ApiError::IdempotencyKeyReused => {
                ("/problems/idempotency-key-reused", "Idempotency-Key reused")
            }
            ApiError::OutcomeUnknown(_) => {
                ("/problems/write-outcome-unknown", "Write outcome unknown")
            }
            ApiError::DatabaseUnavailable(_) => {
                ("/problems/database-unavailable", "Database unavailable")
            }
            ApiError::Internal(_) => ("about:blank", "Internal Server Error"),
        };
        let detail = match self {
            ApiError::DatabaseUnavailable(_) => {
                "The database cannot be reached right now; try again shortly.".to_owned()
            }
            ApiError::OutcomeUnknown(_) => OUTCOME_UNKNOWN.to_owned(),
            ApiError::Internal(_) => "The server failed to handle this request.".to_owned(),
            ApiError::InvalidFields(errors) | ApiError::InvalidQuery(errors) => errors
                .iter()
                .map(|error| format!("{} {}", error.field, error.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::InvalidFields(errors) | ApiError::InvalidQuery(errors) => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(detail),
            errors,
        }
    }
}

/// What a client can do about a write whose outcome is unknown.
const OUTCOME_UNKNOWN: &str = "The connection to the database was lost after the write was sent: it may or may not have been stored. Send it again with the same Idempotency-Key and it is stored exactly once; without a key, look for it with GET /data before sending it again.";

/// What a client can do about a request over the time limit.
const TIMED_OUT: &str = "The request took longer than the server's time limit. A write may still complete: send it again with the same Idempotency-Key and it is stored exactly once.";

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if matches!(error, StoreError::Unknown(_)) {
            ApiError::OutcomeUnknown(error)
        } else if error.is_unavailable() {
            ApiError::DatabaseUnavailable(error)
        } else {
            ApiError::Internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
            }
            ApiError::OutcomeUnknown(cause) => {
                tracing::warn!(error = %cause, "a write's outcome is unknown");
            }
            ApiError::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            _ => {}
        }
        let mut response = problem_response(&self.problem());
        if let ApiError::DatabaseUnavailable(cause) | ApiError::OutcomeUnknown(cause) = &self {
            response.extensions_mut().insert(cause.metric_cause());
        }
        let retry_after = match self {
            ApiError::DatabaseUnavailable(_) | ApiError::OutcomeUnknown(_) => RETRY_AFTER_SECS,
            ApiError::IdempotencyKeyInUse => "1",
            _ => "",
        };
        if !retry_after.is_empty() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
        }
        response
    }
}

/// Renders a problem document with its status and media type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

/// A problem with `type: about:blank`, whose title is the status phrase.
pub fn plain_problem(status: StatusCode, detail: impl Into<String>) -> Problem {
    Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: Some(detail.into()),
        errors: Vec::new(),
    }
}

/// Layer that turns any error response without a problem body (the
/// router's 404 and 405, the timeout's 503, a caught panic's 500) into one,
/// keeping its status and headers such as `Allow`. A plain tower service
/// (no boxed future per request): it wraps every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemForBareErrorsLayer;

impl<S> Layer<S> for ProblemForBareErrorsLayer {
    type Service = ProblemForBareErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemForBareErrors { inner }
    }
}

/// The service of [`ProblemForBareErrorsLayer`].
#[derive(Debug, Clone)]
pub struct ProblemForBareErrors<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for ProblemForBareErrors<S>
where
    S: Service<Request<B>, Response = http::Response<R>>,
    R: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    R::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ProblemFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Kept for the error details; cloning them shares the request's
        // bytes rather than copying the path.
        ProblemFuture {
            method: request.method().clone(),
            uri: request.uri().clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`ProblemForBareErrors`].
    #[derive(Debug)]
    pub struct ProblemFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        uri: Uri,
    }
}

impl<F, R, E> Future for ProblemFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    R: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    R::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?.map(axum::body::Body::new);
        Poll::Ready(Ok(as_problem(response, this.method, this.uri)))
    }
}

/// `response` itself, or, when it is an error without a problem body, the
/// same status and headers with one.
fn as_problem(response: Response, method: &Method, uri: &Uri) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => format!("No resource at {}.", uri.path()),
        StatusCode::METHOD_NOT_ALLOWED => format!("{} does not accept {method}.", uri.path()),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        _ if status.is_server_error() => "The server failed to handle this request.".to_owned(),
        _ => "The request could not be handled.".to_owned(),
    };
    let (mut parts, _) = response.into_parts();
    // Every 503 of a handler is a problem already: a bare one is the
    // request timeout's.
    let problem = if status == StatusCode::SERVICE_UNAVAILABLE {
        parts.headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
        Problem {
            kind: "/problems/timed-out".to_owned(),
            title: "Request timed out".to_owned(),
            status: status.as_u16(),
            detail: Some(TIMED_OUT.to_owned()),
            errors: Vec::new(),
        }
    } else {
        plain_problem(status, detail)
    };
    let fresh = problem_response(&problem);
    // The headers that described the replaced body describe nothing now
    // (a precompressed file's `Content-Encoding: br`, its validators).
    for stale in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
    ] {
        parts.headers.remove(stale);
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, fresh.into_body())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Unavailable;

    #[test]
    fn a_503_from_the_store_carries_its_cause_for_the_metrics() {
        let lost = || Arc::new(sqlx::Error::PoolClosed);
        let cases = [
            (StoreError::Busy { capacity: 1 }, Unavailable::QueueFull),
            (
                StoreError::Timeout(Duration::from_secs(3)),
                Unavailable::NoConnection,
            ),
            (StoreError::Unavailable(lost()), Unavailable::Database),
            (StoreError::Unknown(lost()), Unavailable::OutcomeUnknown),
        ];
        for (error, cause) in cases {
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.extensions().get::<Unavailable>(), Some(&cause));
        }
        let internal = ApiError::Internal(StoreError::Stopped).into_response();
        assert!(internal.extensions().get::<Unavailable>().is_none());
    }
}
