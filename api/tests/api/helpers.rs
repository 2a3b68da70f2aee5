//! A test client over the in-process router, and checks shared by the tests.

use std::sync::Once;
use std::time::{Duration, Instant};

use api::config::{Profile, Settings};
use api::startup::router;
use api::state::AppState;
use api::store::Store;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tower::ServiceExt as _;

/// Settings of the `test` profile from the built-in defaults alone, so the
/// developer's environment or `.env` cannot change what the tests see.
pub(crate) fn test_settings() -> Settings {
    Settings::from_figment(Profile::Test, Settings::defaults_figment()).expect("test settings load")
}

/// Creates `role`, signing in with `password`, a member of
/// `password_login` (whose members the test server asks for a password:
/// `cargo xtask test` configures that), with `grants` (`SELECT ON data`, …)
/// given to it.
pub(crate) async fn password_role(pool: &PgPool, role: &str, password: &str, grants: &[&str]) {
    let statements = [
        "DO $$ BEGIN CREATE ROLE password_login NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$".to_owned(),
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE password_login"),
    ]
    .into_iter()
    .chain(grants.iter().map(|grant| format!("GRANT {grant} TO {role}")));
    for statement in statements {
        sqlx::query(&statement)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// Drops a role [`password_role`] made, with what it owns; a failure is
/// ignored (the test's own database goes with it anyway).
pub(crate) async fn drop_role(pool: &PgPool, role: &str) {
    sqlx::query(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .execute(pool)
        .await
        .ok();
}

/// Logs to the terminal only when `TEST_LOG` is set.
pub(crate) fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some()
            && let Ok(guard) = api::telemetry::init(&test_settings().log)
        {
            // The writer runs as long as the test process.
            std::mem::forget(guard);
        }
    });
}

/// The application's router over a test database.
#[derive(Debug, Clone)]
pub(crate) struct TestApp {
    /// The router under test.
    pub router: Router,
    /// Its data store.
    pub store: Store,
    /// The same database, for checking what was stored.
    pub pool: PgPool,
}

/// A buffered response.
#[derive(Debug)]
pub(crate) struct TestResponse {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body parsed as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, and returns it.
    pub(crate) fn assert_problem(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16());
        assert!(problem["type"].is_string(), "{problem}");
        assert!(problem["title"].is_string(), "{problem}");
        assert!(problem["detail"].is_string(), "{problem}");
        problem
    }
}

impl TestApp {
    /// The app over `pool` with the `test` profile's settings.
    pub(crate) fn new(pool: PgPool) -> TestApp {
        TestApp::with_settings(pool, test_settings())
    }

    /// The app over `pool` with the given settings.
    pub(crate) fn with_settings(pool: PgPool, settings: Settings) -> TestApp {
        let options = (*pool.connect_options()).clone();
        TestApp::over(options, pool, settings)
    }

    /// The app connecting with `options` (a proxy in front of the test
    /// database, say), with `pool` on the test database for checks.
    pub(crate) fn over(options: PgConnectOptions, pool: PgPool, settings: Settings) -> TestApp {
        init_logs();
        let store = Store::connect(options, &settings.database);
        let state = AppState::new(store.clone(), &settings.web).expect("state builds");
        TestApp {
            store,
            router: router(state, &settings),
            pool,
        }
    }

    /// Sends a request and buffers the response.
    pub(crate) async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("body reads")
            .to_bytes()
            .to_vec();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET uri`.
    pub(crate) async fn get(&self, uri: &str) -> TestResponse {
        self.send(
            Request::get(uri)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
    }

    /// `POST /data` with a JSON content type and the given raw body.
    pub(crate) async fn post_data(&self, body: impl Into<Body>) -> TestResponse {
        self.post_data_as(Some("application/json"), body).await
    }

    /// `POST /data` with the given content type (or none) and raw body.
    pub(crate) async fn post_data_as(
        &self,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut request = Request::builder().method(Method::POST).uri("/data");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(body.into()).expect("valid request"))
            .await
    }

    /// `POST /data` of a JSON body with an `Idempotency-Key` header.
    pub(crate) async fn post_data_with_key(
        &self,
        key: &str,
        body: impl Into<Body>,
    ) -> TestResponse {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/data")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(body.into())
            .expect("valid request");
        self.send(request).await
    }

    /// Stores an entry through the API and returns the stored record.
    pub(crate) async fn store(&self, notes: &str, greeting: &str) -> Value {
        let body = serde_json::json!({ "notes": notes, "greeting": greeting }).to_string();
        let response = self.post_data(body).await;
        assert_eq!(response.status, StatusCode::CREATED);
        response.json()
    }

    /// How many rows the `data` table holds.
    pub(crate) async fn stored_rows(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM data")
            .fetch_one(&self.pool)
            .await
            .expect("counting rows")
    }
}

/// The test database's options under an application name of its own, so
/// that its backends can be counted.
pub(crate) fn named(pool: &PgPool, name: &str) -> PgConnectOptions {
    (*pool.connect_options()).clone().application_name(name)
}

/// Waits until `check` holds, polling (for conditions a test observes in
/// another process, the database).
pub(crate) async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
