//! Routing around the handlers: unknown paths, wrong methods, request ids,
//! health checks and the documentation pages.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn an_unknown_path_is_a_404_problem(pool: PgPool) {
    let app = TestApp::new(pool);

    for path in ["/nope", "/data/1/extra", "/api/data", "/health/"] {
        let problem = app.get(path).await.assert_problem(StatusCode::NOT_FOUND);
        assert_eq!(problem["type"], "about:blank", "{path}");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_wrong_method_is_a_405_problem_naming_the_allowed_ones(pool: PgPool) {
    let app = TestApp::new(pool);

    for (method, path) in [("DELETE", "/data"), ("PUT", "/data"), ("POST", "/health")] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("valid request");
        let response = app.send(request).await;

        response.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.header("allow").is_some(), "{method} {path}");
    }
    assert_eq!(app.stored_rows().await, 0);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_response_carries_a_request_id_and_echoes_the_clients(pool: PgPool) {
    let app = TestApp::new(pool);

    let generated = app.get("/health").await;
    let error = app.get("/nope").await;
    let echoed = app
        .send(
            Request::get("/data")
                .header("x-request-id", "client-chosen-42")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;

    let first = generated.header("x-request-id").expect("generated id");
    let second = error.header("x-request-id").expect("id on errors too");
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_ne!(first, second, "each request gets its own id");
    assert_eq!(echoed.header("x-request-id"), Some("client-chosen-42"));
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn health_and_readiness_answer_200_with_the_database_up(pool: PgPool) {
    let app = TestApp::new(pool);

    let live = app.get("/health").await;
    let ready = app.get("/health/ready").await;

    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json()["status"], "ok");
    assert_eq!(ready.status, StatusCode::OK);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_interactive_docs_are_served_without_a_cdn(pool: PgPool) {
    let app = TestApp::new(pool);

    let redirect = app.get("/docs").await;
    let page = app.get("/docs/").await;
    let script = app.get("/docs/swagger-ui-bundle.js").await;
    let init = app.get("/docs/swagger-initializer.js").await;

    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(!html.contains("https://"), "no external assets: {html}");
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.len() > 100_000, "the bundle itself is served");
    assert!(String::from_utf8_lossy(&init.body).contains("/openapi.json"));
    let policy = page
        .header("content-security-policy")
        .expect("the docs page has a policy");
    assert!(
        policy.contains("script-src 'self';") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-eval"), "{policy}");
}
