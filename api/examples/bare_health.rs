//! The benchmark's baseline: a bare axum handler for `GET /health` with
//! nothing around it (no middleware, no logging), served like the service
//! (multi-threaded tokio, TCP_NODELAY). `cargo xtask bench` measures the
//! service's own `/health` against it in the same run.
//!
//! Usage: `bare_health <port>`.

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt as _;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|port| port.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let app = Router::new().route(
        "/health",
        get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
    );
    axum::serve(listener, app).await
}
