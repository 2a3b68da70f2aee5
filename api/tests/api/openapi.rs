//! The OpenAPI document: committed copy, served copy and completeness.

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::TestApp;

const COMMITTED: &str = include_str!("../../../openapi.json");

#[test]
fn the_committed_openapi_json_matches_the_code() {
    let generated = api::openapi::to_pretty_json();

    assert!(
        generated == COMMITTED,
        "openapi.json is out of date with the code: run `cargo xtask openapi` and commit openapi.json"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_served_document_is_the_committed_one(pool: PgPool) {
    let app = TestApp::new(pool);

    let response = app.get("/openapi.json").await;

    assert_eq!(response.status, StatusCode::OK);
    let committed: Value = serde_json::from_str(COMMITTED).expect("committed JSON parses");
    assert_eq!(response.json(), committed);
}

#[test]
fn every_operation_documents_success_client_and_server_errors() {
    let document: Value = serde_json::from_str(COMMITTED).expect("committed JSON parses");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let mut operations = 0;

    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let codes: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            let has = |class: char| codes.iter().any(|code| code.starts_with(class));
            assert!(has('2'), "{method} {path}: {codes:?}");
            if path != "/health" {
                assert!(
                    has('4') || path == "/health/ready",
                    "{method} {path}: {codes:?}"
                );
                assert!(has('5'), "{method} {path}: {codes:?}");
            }
        }
    }
    assert_eq!(
        operations, 5,
        "POST and GET /data, GET /data/{{id}}, /health, /health/ready"
    );
}
