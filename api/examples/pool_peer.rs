//! The benchmark's peer: what a Rust user would write instead of this
//! service, axum with one sqlx `PgPool` and one statement per request, on
//! the same table and SQL (`POST /data`, `GET /data?n=`), with no
//! middleware. `cargo xtask bench` measures it beside the service and
//! pgbench in the same run.
//!
//! Usage: `pool_peer <port> <database url> <pool size>`.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// One entry, as the service answers it.
#[derive(serde::Serialize, sqlx::FromRow)]
struct Entry {
    id: i64,
    notes: String,
    greeting: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// A new entry.
#[derive(serde::Deserialize)]
struct NewEntry {
    notes: String,
    greeting: String,
}

/// `?n=`.
#[derive(serde::Deserialize)]
struct Newest {
    n: Option<i64>,
}

async fn create(
    State(pool): State<PgPool>,
    Json(entry): Json<NewEntry>,
) -> Result<(axum::http::StatusCode, Json<Entry>), axum::http::StatusCode> {
    sqlx::query_as::<_, Entry>(
        "INSERT INTO data (notes, greeting) VALUES ($1, $2) RETURNING id, notes, greeting, created_at",
    )
    .bind(entry.notes)
    .bind(entry.greeting)
    .fetch_one(&pool)
    .await
    .map(|entry| (axum::http::StatusCode::CREATED, Json(entry)))
    .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)
}

async fn list(
    State(pool): State<PgPool>,
    Query(newest): Query<Newest>,
) -> Result<Json<Vec<Entry>>, axum::http::StatusCode> {
    sqlx::query_as::<_, Entry>(
        "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT $1",
    )
    .bind(newest.n.unwrap_or(10).clamp(1, 100))
    .fetch_all(&pool)
    .await
    .map(Json)
    .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|port| port.parse().ok()).unwrap_or(0);
    let url = args.next().unwrap_or_default();
    let size: u32 = args.next().and_then(|size| size.parse().ok()).unwrap_or(10);
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .connect(&url)
        .await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let app = Router::new()
        .route("/data", get(list).post(create))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .with_state(pool);
    axum::serve(listener, app).await?;
    Ok(())
}
