//! The handlers' connections (`api::lease`): reused only after a statement
//! completed, closed after a failure or a cancellation, bounded in number.

use std::time::Duration;

use api::lease::Connections;
use sqlx::PgPool;

/// The server process behind a connection.
async fn backend(connections: &Connections) -> i32 {
    let mut lease = connections.acquire().await.expect("a connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *lease)
        .await
        .expect("query runs");
    lease.done();
    pid
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_completed_statement_gives_its_connection_back_for_reuse(pool: PgPool) {
    let connections = Connections::new(pool, 4, Duration::from_secs(5));

    let first = backend(&connections).await;
    let second = backend(&connections).await;

    assert_eq!(first, second, "the same server connection served both");
    assert_eq!(connections.idle_count(), 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_failed_statement_closes_its_connection(pool: PgPool) {
    let connections = Connections::new(pool, 4, Duration::from_secs(5));
    let before = backend(&connections).await;

    let mut lease = connections.acquire().await.expect("a connection");
    let failed = sqlx::query("SELECT 1 / 0").execute(&mut *lease).await;
    assert!(failed.is_err());
    drop(lease);

    assert_eq!(
        connections.idle_count(),
        0,
        "the connection was not returned"
    );
    assert_ne!(
        backend(&connections).await,
        before,
        "a new connection was opened"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_cancelled_statement_closes_its_connection(pool: PgPool) {
    let connections = Connections::new(pool.clone(), 4, Duration::from_secs(5));
    let before = backend(&connections).await;

    // A request cancelled while its statement runs (the server's timeout,
    // a client that went away): the lease is dropped mid-statement.
    let cancelled = tokio::time::timeout(Duration::from_millis(200), async {
        let mut lease = connections.acquire().await.expect("a connection");
        sqlx::query("SELECT pg_sleep(5)")
            .execute(&mut *lease)
            .await
            .expect("not reached");
        lease.done();
    })
    .await;
    assert!(cancelled.is_err(), "the statement was cut short");

    assert_eq!(
        connections.idle_count(),
        0,
        "a connection mid-statement is never reused"
    );
    let after = backend(&connections).await;
    assert_ne!(after, before);
    // The next request's answer is its own, not the cancelled statement's.
    let mut lease = connections.acquire().await.expect("a connection");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *lease)
        .await
        .expect("query runs");
    lease.done();
    assert_eq!(one, 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn no_more_than_max_connections_are_lent(pool: PgPool) {
    let connections = Connections::new(pool, 1, Duration::from_millis(300));
    let held = connections.acquire().await.expect("the only connection");

    let second = connections.acquire().await;

    assert!(
        matches!(second, Err(sqlx::Error::PoolTimedOut)),
        "{second:?}"
    );
    drop(held);
    connections
        .acquire()
        .await
        .expect("the permit came back with the dropped lease")
        .done();
}

#[tokio::test]
async fn an_unreachable_database_fails_within_the_acquire_timeout() {
    let options: sqlx::postgres::PgConnectOptions = "postgres://nobody@127.0.0.1:1/none"
        .parse()
        .expect("parses");
    let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy_with(options);
    let connections = Connections::new(pool, 2, Duration::from_secs(2));

    let started = std::time::Instant::now();
    let failed = connections.acquire().await;

    assert!(failed.is_err());
    assert!(api::error::is_unavailable(&failed.expect_err("no server")));
    assert!(started.elapsed() < Duration::from_secs(3));
}
