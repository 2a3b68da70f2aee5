//! The OpenAPI document, generated from the handlers' annotations.
//!
//! The committed `openapi.json` at the repository root is this document;
//! `cargo xtask openapi` rewrites it and a test fails when the two differ.

use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

use crate::routes::api_routes;

/// Top-level information; the paths come from [`api_routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Notes and greetings API",
        description = "Stores a note and a greeting per entry in PostgreSQL and lists the newest \
                       entries. Errors are `application/problem+json` (RFC 9457); every response \
                       carries an `x-request-id` header, echoed when the client sends one."
    ),
    tags(
        (name = "data", description = "Store and list entries"),
        (name = "health", description = "Liveness and readiness checks")
    )
)]
struct ApiDoc;

/// The complete document: information, paths and schemas.
pub fn document() -> Document {
    let (_, paths) = api_routes().split_for_parts();
    document_with(paths)
}

/// The document over `paths`, the part [`api_routes`] describes (the router
/// splits its routes once and passes the paths here).
pub fn document_with(paths: Document) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    doc
}

/// The document as the pretty JSON committed in `openapi.json`, with a
/// trailing newline.
pub fn to_pretty_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .expect("an OpenAPI document always serialises");
    json.push('\n');
    json
}
