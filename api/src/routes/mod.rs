//! HTTP handlers, one module per resource.

pub mod data;
pub mod health;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The API's routes with their OpenAPI annotations.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(data::create::create_data, data::list::list_data))
        .routes(routes!(data::read::get_data))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
}
