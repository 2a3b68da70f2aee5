//! The service over real TCP and in trouble: an unreachable database, slow
//! clients, shutdown, and migrations racing or meeting a newer schema.

use std::time::Duration;

use api::config::Seconds;
use api::startup::Application;
use axum::http::StatusCode;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, test_settings};

/// Safety net so a hang fails the test instead of stalling the suite; not a
/// performance assertion.
const HANG: Duration = Duration::from_secs(30);

/// A pool whose server never answers: nothing listens on port 1.
fn unreachable_pool() -> PgPool {
    let options = "postgres://app@127.0.0.1:1/app".parse().expect("valid URL");
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options)
}

#[tokio::test]
async fn without_a_database_liveness_holds_and_data_endpoints_answer_503() {
    let app = TestApp::new(unreachable_pool());

    let live = tokio::time::timeout(HANG, app.get("/health"))
        .await
        .expect("no hang");
    let ready = tokio::time::timeout(HANG, app.get("/health/ready"))
        .await
        .expect("no hang");
    let list = tokio::time::timeout(HANG, app.get("/data"))
        .await
        .expect("no hang");
    let store = tokio::time::timeout(HANG, app.post_data(r#"{"notes":"n","greeting":"g"}"#))
        .await
        .expect("no hang");

    assert_eq!(live.status, StatusCode::OK);
    for response in [&ready, &list, &store] {
        let problem = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem["type"], "/problems/database-unavailable");
        assert_eq!(response.header("retry-after"), Some("5"));
        let text = problem.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("os error"),
            "no internals: {text}"
        );
    }
}

/// Starts the service on a free port and returns its address and a handle
/// whose send stops it.
async fn serve(
    pool: PgPool,
    configure: impl FnOnce(&mut api::config::Settings),
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    crate::helpers::init_logs();
    let mut settings = test_settings();
    settings.server.port = 0;
    configure(&mut settings);
    let app = Application::build_with_options(settings, (*pool.connect_options()).clone())
        .await
        .expect("app builds");
    let address = app.local_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    (address, stop, server)
}

/// Reads a whole HTTP/1.1 response (the server closes or sends it all).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("no hang");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buffer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|value| value.trim().parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_client_that_never_finishes_its_body_gets_a_503_that_browsers_do_not_resend(
    pool: PgPool,
) {
    let (address, _stop, _server) = serve(pool.clone(), |settings| {
        settings.server.request_timeout_secs = Seconds::try_from(1).expect("not zero");
    })
    .await;
    let mut stream = TcpStream::connect(address).await.expect("connects");

    stream
        .write_all(b"POST /data HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"notes\":")
        .await
        .expect("writes");
    let response = read_response(&mut stream).await;

    // Not 408: browsers send a request again by themselves on a 408.
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("/problems/timed-out"), "{response}");
    assert!(response.contains("Idempotency-Key"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 5"),
        "{response}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_content_length_over_the_limit_is_refused_before_the_body_arrives(pool: PgPool) {
    let (address, _stop, _server) = serve(pool.clone(), |_| {}).await;
    let mut stream = TcpStream::connect(address).await.expect("connects");

    stream
        .write_all(b"POST /data HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{}")
        .await
        .expect("writes");
    let response = read_response(&mut stream).await;

    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("/problems/body-too-large"), "{response}");
    let health = reqwest_like_get(address, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "still serving: {health}"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn shutdown_lets_an_in_flight_request_finish(pool: PgPool) {
    let (address, stop, server) = serve(pool.clone(), |_| {}).await;
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let body = br#"{"notes":"in flight","greeting":"still stored"}"#;
    let head = format!(
        "POST /data HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("writes head");
    stream
        .write_all(&body[..10])
        .await
        .expect("writes part of the body");
    // Let the server take the request in before it is told to stop.
    let health = reqwest_like_get(address, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    stop.send(()).expect("server still running");
    stream
        .write_all(&body[10..])
        .await
        .expect("writes the rest");
    let response = read_response(&mut stream).await;

    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let finished = tokio::time::timeout(HANG, server)
        .await
        .expect("server stops");
    finished.expect("joins").expect("serves cleanly");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(rows, 1);
}

/// A one-shot `GET` over a fresh connection.
async fn reqwest_like_get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writes");
    read_response(&mut stream).await
}

#[sqlx::test(migrations = false)]
async fn instances_migrating_at_once_apply_the_schema_once(pool: PgPool) {
    // Collected, so all start before the first is awaited.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { api::db::migrate(&pool).await })
        })
        .collect();

    for run in runs {
        run.await
            .expect("joins")
            .expect("every instance migrates without error");
    }

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(applied, api::db::MIGRATOR.iter().count() as i64);
    let app = TestApp::new(pool);
    app.store("after", "migration").await;
}

#[sqlx::test(migrations = false)]
async fn three_instances_starting_together_migrate_once_and_all_serve(pool: PgPool) {
    // Each builds as `serve` does: migrate on start, then listen.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                serve(pool, |settings| settings.database.migrate_on_start = true).await
            })
        })
        .collect();
    let mut instances = Vec::new();
    for start in starts {
        instances.push(start.await.expect("an instance starts"));
    }

    for (address, _, _) in &instances {
        let listed = reqwest_like_get(*address, "/data").await;
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(
        applied,
        api::db::MIGRATOR.iter().count() as i64,
        "each migration applied once"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn an_older_binary_starts_against_a_newer_schema(pool: PgPool) {
    // A migration this binary does not know, as a newer release would leave.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from a newer release', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .expect("records a future migration");

    api::db::migrate(&pool)
        .await
        .expect("an older binary still migrates and starts");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_client_sending_headers_a_byte_at_a_time_is_cut_off(pool: PgPool) {
    let (address, stop, server) = serve(pool, |settings| {
        settings.server.header_read_timeout_secs = Seconds::try_from(1).expect("not zero")
    })
    .await;
    let request =
        b"GET /health HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut stream = TcpStream::connect(address).await.expect("connects");

    // A byte every 200 ms: the whole head would take about 17 s.
    let mut sent = 0;
    let mut closed = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut probe = [0_u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            // hyper may say why before it closes.
            Ok(Ok(n)) => {
                let answer = String::from_utf8_lossy(&probe[..n]);
                assert!(
                    answer.starts_with("HTTP/1.1 408"),
                    "no header read timeout: the server waited while {sent} of {} bytes of \
                     the head trickled in, then answered {:?}",
                    request.len(),
                    answer.lines().next().unwrap_or_default()
                );
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }

    assert!(
        closed,
        "the server kept the connection while the whole head trickled in"
    );
    assert!(
        sent < request.len(),
        "closed only after the head was complete"
    );
    // A well-behaved client is still served.
    let mut client = TcpStream::connect(address).await.expect("connects");
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("sends");
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 200"));
    let _ = stop.send(());
    server.await.expect("joins").expect("stops cleanly");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_connection_that_sends_nothing_or_half_a_preface_is_closed(pool: PgPool) {
    let (address, stop, server) = serve(pool, |settings| {
        settings.server.header_read_timeout_secs = Seconds::try_from(1).expect("not zero")
    })
    .await;
    // Nothing at all; the start of HTTP/2's preface; the start of an
    // HTTP/1 request line.
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n", b"GET /hea"] {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream.write_all(sent).await.expect("sends");
        let started = std::time::Instant::now();

        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;

        assert!(
            read.is_ok(),
            "a connection that sent {:?} was still open after 5 s (header read timeout 1 s)",
            String::from_utf8_lossy(sent)
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}: closed after {:?}",
            String::from_utf8_lossy(sent),
            started.elapsed()
        );
    }
    let _ = stop.send(());
    server.await.expect("joins").expect("stops cleanly");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_migration_held_up_by_a_lock_lets_reads_through_and_applies_once_it_is_free(
    pool: PgPool,
) {
    let folder = std::env::temp_dir().join(format!("api-migration-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a folder");
    std::fs::write(
        folder.join("20991231000000_waited.sql"),
        "ALTER TABLE data ADD COLUMN waited boolean;",
    )
    .expect("a migration");
    let mut later = sqlx::migrate::Migrator::new(folder.as_path())
        .await
        .expect("reads the migration");
    later.set_ignore_missing(true);
    // A long transaction reading the table holds the lock ALTER TABLE needs.
    let mut reader = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN ACCESS SHARE MODE")
        .execute(&mut *reader)
        .await
        .expect("locks");

    let migrating = tokio::spawn({
        let pool = pool.clone();
        async move {
            let options = pool.connect_options();
            api::db::migrate_patiently(&later, &options, Duration::from_millis(300), 60).await
        }
    });
    let mut slowest = Duration::ZERO;
    let watching = std::time::Instant::now();
    while watching.elapsed() < Duration::from_secs(3) {
        let started = std::time::Instant::now();
        sqlx::query("SELECT count(*) FROM data")
            .execute(&pool)
            .await
            .expect("reads");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.commit().await.expect("ends the transaction");
    let migrated = tokio::time::timeout(Duration::from_secs(10), migrating)
        .await
        .expect("the migration ends once the lock is free")
        .expect("joins");

    migrated.expect("the migration applies");
    assert!(
        slowest < Duration::from_millis(1500),
        "a read waited {slowest:?} behind the migration's lock request (lock timeout 300 ms)"
    );
    let column: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'data' AND column_name = 'waited'",
    )
    .fetch_one(&pool)
    .await
    .expect("reads the catalog");
    assert_eq!(column, 1);
    let _ = std::fs::remove_dir_all(&folder);
}
