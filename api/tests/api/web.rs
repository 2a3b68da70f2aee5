//! Serving the built web client: pages, hashed assets, precompressed
//! variants, client-side routes and security headers.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sqlx::PgPool;

use crate::helpers::{TestApp, test_settings};

/// An inline script like the one trunk writes into `index.html`.
const INLINE: &str = "import init from '/web-0123456789abcdef.js'; await init();";

/// A folder laid out like trunk's output, unique to one test.
fn fake_dist(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("api-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the folder");
    let index = format!(
        "<!DOCTYPE html><html><head><script type=\"module\">{INLINE}</script></head><body></body></html>"
    );
    let files: [(&str, &[u8]); 5] = [
        ("index.html", index.as_bytes()),
        (
            "web-0123456789abcdef.js",
            b"export default function init() {}",
        ),
        ("web-0123456789abcdef.js.br", b"brotli bytes"),
        ("web-0123456789abcdef_bg.wasm", b"\0asm\x01\0\0\0"),
        (
            "favicon.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        ),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("writes a file");
    }
    dir
}

fn app_with_web(pool: PgPool, name: &str) -> TestApp {
    let mut settings = test_settings();
    settings.web.dir = fake_dist(name);
    TestApp::with_settings(pool, settings)
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_page_is_served_uncached_with_a_policy_allowing_only_itself(pool: PgPool) {
    let app = app_with_web(pool, "page");

    let response = app.get("/").await;

    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/html"))
    );
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert!(response.header("referrer-policy").is_some());
    let policy = response
        .header("content-security-policy")
        .expect("a policy");
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(INLINE.as_bytes()));
    assert!(policy.contains(&format!("'sha256-{hash}'")), "{policy}");
    assert!(
        policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn hashed_assets_are_immutable_and_served_precompressed(pool: PgPool) {
    let app = app_with_web(pool, "assets");

    let script = app
        .send(
            Request::get("/web-0123456789abcdef.js")
                .header("accept-encoding", "gzip, br")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;
    let wasm = app.get("/web-0123456789abcdef_bg.wasm").await;
    let icon = app.get("/favicon.svg").await;

    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(script.header("content-encoding"), Some("br"));
    assert_eq!(script.body, b"brotli bytes");
    assert_eq!(
        script.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(script.header("vary"), Some("accept-encoding"));
    assert!(
        script
            .header("content-type")
            .is_some_and(|value| value.contains("javascript"))
    );
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert_eq!(
        icon.header("cache-control"),
        Some("no-cache"),
        "unhashed names are revalidated"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_documented_resource_keeps_its_unknown_paths_out_of_the_page(pool: PgPool) {
    let app = app_with_web(pool, "prefixes");
    let document = api::openapi::document();
    let resources: std::collections::BTreeSet<&str> = document
        .paths
        .paths
        .keys()
        .filter_map(|path| path.split('/').nth(1))
        .collect();
    assert!(resources.contains("data") && resources.contains("health"));

    for resource in resources {
        let response = app.get(&format!("/{resource}/no/such/thing")).await;

        response.assert_problem(StatusCode::NOT_FOUND);
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn client_routes_get_the_page_and_api_paths_keep_their_json_404(pool: PgPool) {
    let app = app_with_web(pool, "routes");

    let route = app.get("/entries/recent").await;
    let missing_file = app.get("/missing-0123456789abcdef.js").await;
    let api_path = app.get("/data/unknown").await;
    let docs_path = app.get("/docs/nothing-here").await;
    let post = app
        .send(
            Request::post("/")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;

    assert_eq!(route.status, StatusCode::OK);
    assert!(route.header("content-security-policy").is_some());
    assert!(String::from_utf8_lossy(&route.body).contains(INLINE));
    missing_file.assert_problem(StatusCode::NOT_FOUND);
    api_path.assert_problem(StatusCode::NOT_FOUND);
    docs_path.assert_problem(StatusCode::NOT_FOUND);
    post.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.stored_rows().await, 0);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn no_spelling_of_a_path_escapes_the_policy_or_causes_a_500(pool: PgPool) {
    let app = app_with_web(pool, "spellings");
    let long_name = format!("/{}", "a".repeat(300));

    let encoded = app.get("/index%2Ehtml").await;
    let too_long = app.get(&long_name).await;
    let with_nul = app
        .send(
            Request::head("/a%00b")
                .body(Body::empty())
                .expect("valid request"),
        )
        .await;

    assert_eq!(encoded.status, StatusCode::OK);
    assert!(
        encoded.header("content-security-policy").is_some(),
        "the policy follows the HTML, not the path"
    );
    assert_eq!(
        too_long.status,
        StatusCode::OK,
        "a name the file system refuses is a client route"
    );
    assert!(too_long.header("content-security-policy").is_some());
    assert!(
        with_nul.status.is_success() || with_nul.status == StatusCode::NOT_FOUND,
        "{}",
        with_nul.status
    );
    assert_eq!(encoded.header("x-frame-options"), Some("DENY"));
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn static_serving_refuses_paths_that_climb_out_of_the_web_folder(pool: PgPool) {
    let app = app_with_web(pool, "traversal");
    // A file beside the web folder, which no request may read.
    let secret_name = format!("api-web-secret-{}.txt", std::process::id());
    let secret = std::env::temp_dir().join(&secret_name);
    std::fs::write(&secret, "TOP-SECRET-MARKER").expect("writes the secret");

    for path in [
        format!("/../{secret_name}"),
        format!("/%2e%2e/{secret_name}"),
        format!("/%2E%2E/{secret_name}"),
        format!("/..%2f{secret_name}"),
        format!("/%2e%2e%2f{secret_name}"),
        format!("/x/..%2f..%2f{secret_name}"),
        format!("/..%5c{secret_name}"),
        format!("/x/%2e%2e/%2e%2e/{secret_name}"),
        format!("/web-0123456789abcdef.js/../../{secret_name}"),
    ] {
        let response = app.get(&path).await;

        let body = String::from_utf8_lossy(&response.body);
        assert!(
            !body.contains("TOP-SECRET-MARKER"),
            "{path} served the file outside the web folder"
        );
        assert!(
            response.status == StatusCode::NOT_FOUND
                || response.status == StatusCode::BAD_REQUEST
                || body.contains("<!DOCTYPE html>"),
            "{path}: {} {body}",
            response.status
        );
    }
    let _ = std::fs::remove_file(secret);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn strict_transport_security_is_sent_only_for_requests_that_came_over_https(pool: PgPool) {
    let app = app_with_web(pool, "hsts");
    let over = |proto: &'static str| {
        Request::get("/health")
            .header("x-forwarded-proto", proto)
            .body(Body::empty())
            .expect("valid request")
    };

    let https = app.send(over("https")).await;
    let http = app.send(over("http")).await;
    let direct = app.get("/").await;

    assert_eq!(
        https.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(http.header("strict-transport-security"), None);
    assert_eq!(direct.header("strict-transport-security"), None);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_range_past_the_end_of_a_precompressed_asset_is_a_plain_uncached_problem(pool: PgPool) {
    let app = app_with_web(pool, "range");

    let response = app
        .send(
            Request::get("/web-0123456789abcdef.js")
                .header("accept-encoding", "br")
                .header("range", "bytes=999999-")
                .body(Body::empty())
                .expect("a valid request"),
        )
        .await;

    let problem = response.assert_problem(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(problem["status"], 416);
    assert_eq!(
        response.header("content-encoding"),
        None,
        "the problem body is not brotli"
    );
    assert!(
        response
            .header("cache-control")
            .is_none_or(|value| !value.contains("max-age")),
        "an error is not cached for a year: {:?}",
        response.header("cache-control")
    );
    assert!(response.header("etag").is_none() && response.header("last-modified").is_none());
}
