//! Health checks for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// Body of a passing health check.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: answers while the process serves, without touching the database.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The process is serving", body = HealthStatus))
)]
pub async fn health() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: also checks that the database answers a query.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "The process serves and the database answers", body = HealthStatus),
        (status = 500, description = "Unexpected server failure", body = domain::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable or refuses the service", body = domain::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    // Any database failure (unreachable, refused credentials, missing
    // database) means "not ready": a 503 the orchestrator understands.
    state
        .store
        .ping()
        .await
        .map_err(ApiError::DatabaseUnavailable)?;
    Ok(Json(HealthStatus { status: "ok" }))
}
