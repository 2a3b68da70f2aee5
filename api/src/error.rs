//! The API's error type and its `application/problem+json` rendering (RFC 9457).
//!
//! Every error response the service sends, whether from a handler, an
//! extractor, the router (404, 405) or a middleware (408, 413, panics), leaves
//! as a problem document. 5xx bodies carry no internals; the cause is logged.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::{FieldError, Problem};

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
    /// The database cannot be reached or has no free connection.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Anything else: a bug or an unexpected database answer.
    #[error("internal error")]
    Internal(#[source] sqlx::Error),
}

impl ApiError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::DatabaseUnavailable(_) => {
                ("/problems/database-unavailable", "Database unavailable")
            }
            ApiError::Internal(_) => ("about:blank", "Internal Server Error"),
        };
        let detail = match self {
            ApiError::DatabaseUnavailable(_) => {
                "The database cannot be reached right now; try again shortly.".to_owned()
            }
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

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            ApiError::DatabaseUnavailable(error)
        } else {
            ApiError::Internal(error)
        }
    }
}

/// Whether a database error means "cannot reach the database" rather than a
/// bug: those answer 503 so load balancers and clients retry.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01..57P03: the server is shutting
        // down or starting up.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
            }
            ApiError::Internal(cause) => tracing::error!(error = %cause, "request failed"),
            _ => {}
        }
        let mut response = problem_response(&self.problem());
        if matches!(self, ApiError::DatabaseUnavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
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

/// Middleware that turns any error response without a problem body (the
/// router's 404 and 405, the timeout's 408, a caught panic's 500) into one,
/// keeping its status and headers such as `Allow`.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    // Kept for the error details; cloning them shares the request's bytes
    // rather than copying the path on every request.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
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
        StatusCode::REQUEST_TIMEOUT => "The request took too long to complete.".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        _ if status.is_server_error() => "The server failed to handle this request.".to_owned(),
        _ => "The request could not be handled.".to_owned(),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = problem_response(&plain_problem(status, detail));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, fresh.into_body())
}
