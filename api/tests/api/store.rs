//! The data store (`api::store`): requests coalesced into batches over a
//! small pool of connections, against real PostgreSQL, and through a proxy
//! that breaks the connection the way restarts, failovers and silent
//! networks do.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::config::{Count, DatabaseSettings, Seconds};
use api::db::Renewal;
use api::routes::data::create::{InsertEntry, Inserted};
use api::routes::data::list::NewestEntries;
use api::store::{Store, StoreError};
use axum::http::StatusCode;
use domain::NewData;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::chaos::{Chaos, Mode};
use crate::helpers::{TestApp, drop_role, named, password_role, test_settings, until};

/// The test profile's database settings with `connections` connections,
/// a 2 s acquire timeout and room for 2048 waiting requests.
fn store_settings(connections: usize) -> DatabaseSettings {
    let mut settings = test_settings().database;
    settings.max_connections = Count::try_from(connections).expect("not zero");
    settings.acquire_timeout_secs = Seconds::try_from(2).expect("not zero");
    settings.queue_capacity = Count::try_from(2048).expect("not zero");
    settings
}

fn entry(notes: &str) -> NewData {
    NewData::parse(Ok(notes.to_owned()), Ok("hi".to_owned())).expect("a valid entry")
}

/// Server backends of `name` in the test database.
async fn backends(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .expect("reads pg_stat_activity")
}

/// 32 writes at once, so that every connection of the store is open.
async fn warm_up(app: &TestApp) {
    let warm: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.store(&format!("warm {i}"), "hi").await })
        })
        .collect();
    for write in warm {
        write.await.expect("warm-up writes succeed");
    }
}

/// Locks `data` in a transaction of its own, then has `store` (connecting as
/// `application`) insert `notes`, and returns once that insert waits on the
/// lock: the transaction (commit it to let the insert go on) and the insert.
async fn insert_held_by_a_lock(
    pool: &PgPool,
    store: &Store,
    application: &str,
    notes: &'static str,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Result<Inserted, StoreError>>,
) {
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("locks");
    let insert = tokio::spawn({
        let store = store.clone();
        async move { store.batch(InsertEntry::new(entry(notes))).await }
    });
    until("the insert waits on the lock", Duration::from_secs(10), async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(pool)
        .await
        .expect("reads pg_stat_activity")
            == 1
    })
    .await;
    (lock, insert)
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_thousand_concurrent_posts_each_get_their_own_row(pool: PgPool) {
    let app = TestApp::new(pool);
    // Collected, so all are spawned before the first is awaited.
    let writes: Vec<_> = (0..1000)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let notes = format!("distinct body {i}");
                let response = app
                    .post_data(
                        json!({ "notes": notes, "greeting": format!("writer {i}") }).to_string(),
                    )
                    .await;
                assert_eq!(response.status, StatusCode::CREATED, "write {i}");
                let record = response.json();
                assert_eq!(
                    record["notes"],
                    notes.as_str(),
                    "write {i} got another's row"
                );
                assert_eq!(record["greeting"], format!("writer {i}").as_str());
                (record["id"].as_i64().expect("an id"), notes)
            })
        })
        .collect();

    let mut acknowledged = Vec::new();
    for write in writes {
        acknowledged.push(write.await.expect("the write task finishes"));
    }

    let ids: BTreeSet<i64> = acknowledged.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1000, "every acknowledged id is distinct");
    let stored: Vec<(i64, String)> = sqlx::query_as("SELECT id, notes::text FROM data ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .expect("reads rows");
    acknowledged.sort();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged rows are stored"
    );
    let stats = app.store.stats();
    assert_eq!(stats.requests, 1000);
    assert!(
        stats.statements < stats.requests,
        "writes waiting together share statements: {stats:?}"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_read_that_starts_after_a_201_sees_its_row(pool: PgPool) {
    let app = TestApp::new(pool);
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                for round in 0..10 {
                    let record = app.store(&format!("writer {i} round {round}"), "hi").await;
                    let id = record["id"].as_i64().expect("an id");
                    let read = app.get(&format!("/data/{id}")).await;
                    assert_eq!(read.status, StatusCode::OK, "{id} after its 201");
                    assert_eq!(read.json()["notes"], record["notes"]);
                    let listed = app.get("/data?n=100").await.json();
                    let newest = listed["items"][0]["id"].as_i64().expect("an item");
                    assert!(newest >= id, "the list's newest ({newest}) predates {id}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("reads saw their writes");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn one_bad_row_does_not_fail_its_batch_mates(pool: PgPool) {
    // A rule the database enforces and the API does not know.
    sqlx::query("ALTER TABLE data ADD CONSTRAINT no_poison CHECK (notes <> 'poison')")
        .execute(&pool)
        .await
        .expect("adds the constraint");
    let store = Store::connect(
        named(&pool, "batch-mates"),
        &DatabaseSettings {
            lock_timeout_secs: Seconds::try_from(30).expect("not zero"),
            statement_timeout_secs: Seconds::try_from(30).expect("not zero"),
            ..store_settings(1)
        },
    );
    // Hold the table so the first insert waits on the lock and the others
    // queue up behind it, to be served together.
    let (lock, first) = insert_held_by_a_lock(&pool, &store, "batch-mates", "first").await;
    let batch: Vec<_> = (0..49)
        .map(|i| {
            let store = store.clone();
            let notes = if i == 24 {
                "poison".to_owned()
            } else {
                format!("mate {i}")
            };
            tokio::spawn(async move {
                (
                    notes.clone(),
                    store.batch(InsertEntry::new(entry(&notes))).await,
                )
            })
        })
        .collect();
    until("the batch is queued", Duration::from_secs(10), async || {
        store.waiting() == 49
    })
    .await;
    lock.commit().await.expect("releases the table");

    first
        .await
        .expect("joins")
        .expect("the first insert is stored");
    let mut stored = 0;
    for request in batch {
        let (notes, outcome) = request.await.expect("joins");
        match outcome {
            Ok(Inserted::Stored(record)) => {
                assert_eq!(record.notes, notes);
                stored += 1;
            }
            Ok(other) => panic!("{notes} was not stored as new: {other:?}"),
            Err(error) => {
                assert_eq!(notes, "poison", "{notes} failed: {error}");
                assert!(
                    !error.is_unavailable(),
                    "a bad row is not an outage: {error}"
                );
            }
        }
    }
    assert_eq!(stored, 48, "every batch-mate of the bad row is stored");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(rows, 49);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_burst_right_after_a_database_restart_gets_no_failure(pool: PgPool) {
    let chaos = Chaos::start(&pool.connect_options()).await;
    let mut settings = test_settings();
    settings.database.max_connections = Count::try_from(4).expect("not zero");
    let app = TestApp::over(
        chaos.options(named(&pool, "restarted")),
        pool.clone(),
        settings,
    );
    warm_up(&app).await;
    assert!(
        backends(&pool, "restarted").await >= 1,
        "the service is warm"
    );

    // Every connection dies; the database is down for a second, as a
    // restart or a failover takes; then it answers again.
    chaos.restart(Duration::from_secs(1)).await;
    let burst: Vec<_> = (0..100)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let response = app
                        .post_data(
                            json!({ "notes": format!("after {i}"), "greeting": "hi" }).to_string(),
                        )
                        .await;
                    (
                        response.status,
                        String::from_utf8_lossy(&response.body).into_owned(),
                    )
                } else {
                    let response = app.get("/data?n=5").await;
                    (
                        response.status,
                        String::from_utf8_lossy(&response.body).into_owned(),
                    )
                }
            })
        })
        .collect();

    for (i, request) in burst.into_iter().enumerate() {
        let (status, body) = request.await.expect("joins");
        assert!(
            status.is_success(),
            "request {i} after the restart: {status} {body}"
        );
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_database_that_stops_answering_gives_503_within_the_acquire_timeout(pool: PgPool) {
    let chaos = Chaos::start(&pool.connect_options()).await;
    let mut settings = test_settings();
    settings.database.max_connections = Count::try_from(2).expect("not zero");
    settings.database.acquire_timeout_secs = Seconds::try_from(1).expect("not zero");
    settings.database.statement_timeout_secs = Seconds::try_from(2).expect("not zero");
    let app = TestApp::over(
        chaos.options(named(&pool, "silent")),
        pool.clone(),
        settings,
    );
    for i in 0..4 {
        app.store(&format!("before {i}"), "hi").await;
    }

    // Packets are dropped from now on: nothing is refused, nothing answers.
    chaos.set(Mode::Drop);
    // Connections idle past the validation window are checked before use;
    // the check goes unanswered and the request is refused in time.
    tokio::time::sleep(api::store::VALIDATE_AFTER).await;
    let started = Instant::now();
    let silent: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let response = if i % 2 == 0 {
                    app.post_data(
                        json!({ "notes": format!("during {i}"), "greeting": "hi" }).to_string(),
                    )
                    .await
                } else {
                    app.get("/data?n=5").await
                };
                (response, started.elapsed())
            })
        })
        .collect();
    for request in silent {
        let (response, took) = request.await.expect("joins");
        response.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.header("retry-after"), Some("5"));
        assert!(
            took < Duration::from_millis(1500),
            "a 503 took {took:?} (acquire timeout 1 s)"
        );
    }
    let ready = app.get("/health/ready").await;
    ready.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(4));

    // Under steady use a connection is not checked, so a statement already
    // sent into the silence is bounded by statement_timeout + 1 s instead.
    chaos.set(Mode::Forward);
    until(
        "the database answers again",
        Duration::from_secs(10),
        async || app.get("/data?n=1").await.status == StatusCode::OK,
    )
    .await;
    chaos.set(Mode::Drop);
    let started = Instant::now();
    let response = app.get("/data?n=1").await;
    response.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    chaos.set(Mode::Forward);
    until(
        "it serves again once the network is back",
        Duration::from_secs(10),
        async || app.get("/data?n=1").await.status == StatusCode::OK,
    )
    .await;
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_locked_table_never_takes_more_backends_than_configured(pool: PgPool) {
    let mut settings = test_settings();
    settings.database.max_connections = Count::try_from(4).expect("not zero");
    settings.database.lock_timeout_secs = Seconds::try_from(2).expect("not zero");
    let app = TestApp::over(named(&pool, "locked-out"), pool.clone(), settings);
    app.store("before the lock", "hi").await;

    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("locks");
    let stop = Arc::new(AtomicBool::new(false));
    let released_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let writers: Vec<_> = (0..40)
        .map(|writer| {
            let (app, stop, released_at) =
                (app.clone(), Arc::clone(&stop), Arc::clone(&released_at));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut first_after_release = None;
                while !stop.load(Ordering::Relaxed) {
                    let response = app
                        .post_data(
                            json!({ "notes": format!("writer {writer}"), "greeting": "hi" })
                                .to_string(),
                        )
                        .await;
                    let released = *released_at.lock().expect("not poisoned");
                    if response.status == StatusCode::CREATED
                        && let Some(released) = released
                        && first_after_release.is_none()
                    {
                        first_after_release = Some(released.elapsed());
                    }
                    seen.push(response.status);
                }
                (seen, first_after_release)
            })
        })
        .collect();
    let mut most = 0;
    let locked = Instant::now();
    while locked.elapsed() < Duration::from_secs(15) {
        most = most.max(backends(&pool, "locked-out").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lock.commit().await.expect("releases the table");
    *released_at.lock().expect("not poisoned") = Some(Instant::now());
    until(
        "a write succeeds after the release",
        Duration::from_secs(10),
        async || {
            app.post_data(json!({ "notes": "after", "greeting": "hi" }).to_string())
                .await
                .status
                == StatusCode::CREATED
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);

    let mut statuses = BTreeSet::new();
    for writer in writers {
        let (seen, _) = writer.await.expect("joins");
        statuses.extend(seen.into_iter().map(|status| status.as_u16()));
    }
    assert!(most <= 4, "{most} backends for a store of 4 connections");
    assert!(
        statuses.iter().all(|status| [201, 503].contains(status)),
        "writers saw {statuses:?}: only 201 or 503 are allowed"
    );
    assert!(
        statuses.contains(&503),
        "the lock made writers wait: {statuses:?}"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
#[ignore = "needs a server that checks passwords of password_login members: `cargo xtask test` starts it and runs this"]
async fn renewed_credentials_reach_a_replaced_connection(pool: PgPool) {
    // The role signs in with a password, which the test server demands of
    // members of password_login (cargo xtask test configures that).
    let suffix = std::process::id();
    let role = format!("rotating_{suffix}");
    password_role(
        &pool,
        &role,
        "first",
        &["SELECT, INSERT ON data, store_receipts, idempotency_keys"],
    )
    .await;
    let options = named(&pool, "rotating").username(&role);
    assert!(
        sqlx::ConnectOptions::connect(&options.clone().password("wrong"))
            .await
            .is_err(),
        "the test server must check passwords of password_login members (pg_hba.conf); run the \
         tests with `cargo xtask test`"
    );
    let store = Store::connect(options.clone().password("first"), &store_settings(1));
    store
        .batch(InsertEntry::new(entry("with the first password")))
        .await
        .expect("writes");

    // The credential changes, the service learns it (as the IAM token
    // renewer tells it), and the open connection is lost.
    sqlx::query(&format!("ALTER ROLE {role} PASSWORD 'second'"))
        .execute(&pool)
        .await
        .expect("rotates");
    let renewals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let renewer = api::db::renew(
        store.clone(),
        options.clone(),
        Renewal {
            every: Duration::from_millis(10),
            password: {
                let renewals = Arc::clone(&renewals);
                Arc::new(move || {
                    renewals.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async { Ok("second".to_owned()) })
                })
            },
        },
    );
    // The second renewal starts only after the first one was applied.
    until("the renewer ran", Duration::from_secs(5), async || {
        renewals.load(Ordering::SeqCst) >= 2
    })
    .await;
    renewer.abort();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .execute(&pool)
        .await
        .expect("terminates the store's connection");

    let listed = store
        .batch(NewestEntries(5))
        .await
        .expect("a read on a fresh connection");
    let stored = store
        .batch(InsertEntry::new(entry("with the second password")))
        .await
        .expect("a write on the renewed credentials")
        .into_record();

    assert_eq!(listed.records().len(), 1);
    assert_eq!(stored.notes, "with the second password");
    assert!(
        sqlx::ConnectOptions::connect(&options.password("first"))
            .await
            .is_err(),
        "the first password no longer works: the store really used the second"
    );
    drop(store);
    drop_role(&pool, &role).await;
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_cancelled_request_leaves_its_statement_to_finish_and_the_next_answer_is_its_own(
    pool: PgPool,
) {
    let store = Store::connect(named(&pool, "cancelled"), &store_settings(1));
    store
        .batch(InsertEntry::new(entry("one")))
        .await
        .expect("writes");

    // The client goes away while its read runs (the table is locked, so it
    // waits); its statement finishes on the store's connection.
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("locks");
    let cancelled =
        tokio::time::timeout(Duration::from_millis(200), store.batch(NewestEntries(10))).await;
    assert!(cancelled.is_err(), "the request was cut short");
    lock.commit().await.expect("releases");

    let stored = store
        .batch(InsertEntry::new(entry("two")))
        .await
        .expect("writes")
        .into_record();
    let listed = store.batch(NewestEntries(10)).await.expect("reads");

    assert_eq!(stored.notes, "two");
    assert_eq!(
        listed
            .records()
            .iter()
            .map(|record| record.notes.as_str())
            .collect::<Vec<_>>(),
        ["two", "one"]
    );
    assert_eq!(
        backends(&pool, "cancelled").await,
        1,
        "still one connection"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_data_error_keeps_its_connection(pool: PgPool) {
    sqlx::query("ALTER TABLE data ADD CONSTRAINT no_poison CHECK (notes <> 'poison')")
        .execute(&pool)
        .await
        .expect("adds the constraint");
    let store = Store::connect(named(&pool, "kept"), &store_settings(1));
    store
        .batch(InsertEntry::new(entry("one")))
        .await
        .expect("writes");
    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT backend_start FROM pg_stat_activity WHERE application_name = 'kept'",
    )
    .fetch_one(&pool)
    .await
    .expect("the connection");

    let refused = store.batch(InsertEntry::new(entry("poison"))).await;
    store
        .batch(InsertEntry::new(entry("two")))
        .await
        .expect("writes again");

    assert!(matches!(refused, Err(StoreError::Failed(_))), "{refused:?}");
    let still: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT backend_start FROM pg_stat_activity WHERE application_name = 'kept'",
    )
    .fetch_one(&pool)
    .await
    .expect("the connection");
    assert_eq!(started, still, "the same server connection served on");
}

#[tokio::test]
async fn an_unreachable_database_fails_within_the_acquire_timeout() {
    let options: PgConnectOptions = "postgres://nobody@127.0.0.1:1/none"
        .parse()
        .expect("parses");
    let store = Store::connect(options, &store_settings(2));

    let started = Instant::now();
    let failed = store.batch(NewestEntries(1)).await;

    let error = failed.expect_err("no server");
    assert!(error.is_unavailable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_full_queue_is_refused_at_once(pool: PgPool) {
    let store = Store::connect(
        named(&pool, "full"),
        &DatabaseSettings {
            queue_capacity: Count::try_from(4).expect("not zero"),
            lock_timeout_secs: Seconds::try_from(30).expect("not zero"),
            statement_timeout_secs: Seconds::try_from(30).expect("not zero"),
            ..store_settings(1)
        },
    );
    // The only connection waits on a lock. Reads queue behind it: the read
    // batcher's task takes the first and waits for the connection, and four
    // more fill the read queue.
    let (lock, blocked) = insert_held_by_a_lock(&pool, &store, "full", "blocked").await;
    let read = || {
        let store = store.clone();
        tokio::spawn(async move { store.batch(NewestEntries(1)).await })
    };
    let mut queued: Vec<_> = (0..4).map(|_| read()).collect();
    until(
        "a task took the first read",
        Duration::from_secs(5),
        async || store.waiting() == 3,
    )
    .await;
    queued.push(read());
    until("the queue is full", Duration::from_secs(5), async || {
        store.waiting() == 4
    })
    .await;

    let started = Instant::now();
    let refused = store.batch(NewestEntries(1)).await;

    assert!(
        matches!(refused, Err(StoreError::Busy { capacity: 4 })),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    lock.commit().await.expect("releases");
    blocked
        .await
        .expect("joins")
        .expect("the blocked insert is stored");
    for request in queued {
        request
            .await
            .expect("joins")
            .expect("the queued reads are answered");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_connection_bounds_its_statements_and_watches_for_a_vanished_client(pool: PgPool) {
    let store = Store::connect(named(&pool, "bounded"), &store_settings(1));

    let settings: Vec<String> = store
        .run(|connection| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "SELECT current_setting(name) FROM unnest(ARRAY['statement_timeout', \
                     'lock_timeout', 'client_connection_check_interval']) AS name",
                )
                .fetch_all(connection)
                .await
            })
        })
        .await
        .expect("reads its settings");

    assert_eq!(settings, ["5s", "2s", "2s"]);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn no_debug_output_holds_the_password(pool: PgPool) {
    let options = named(&pool, "secret").password("hunter2-token");
    let store = Store::connect(options.clone(), &store_settings(1));
    let state = api::state::AppState::new(store.clone(), &test_settings().web).expect("state");
    let connection = api::db::Connection {
        options,
        renewal: None,
    };

    for (what, text) in [
        ("store", format!("{store:?}")),
        ("state", format!("{state:?}")),
        ("connection", format!("{connection:?}")),
        ("connection, pretty", format!("{connection:#?}")),
    ] {
        assert!(!text.contains("hunter2"), "{what}: {text}");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
#[ignore = "needs a server that checks passwords of password_login members: `cargo xtask test` starts it and runs this"]
async fn refused_credentials_are_renewed_at_once_not_on_the_clock(pool: PgPool) {
    let role = format!("expiring_{}", std::process::id());
    password_role(&pool, &role, "current", &["SELECT ON data"]).await;
    let options = named(&pool, "expiring").username(&role);
    // The store starts with a password that has expired, as an IAM token
    // does after 15 minutes; the clock would renew it only in an hour.
    let store = Store::connect(options.clone().password("expired"), &store_settings(1));
    let renewer = api::db::renew(
        store.clone(),
        options,
        Renewal {
            every: Duration::from_secs(3600),
            password: Arc::new(|| Box::pin(async { Ok("current".to_owned()) })),
        },
    );

    let refused = store.batch(NewestEntries(1)).await;
    let started = Instant::now();
    until(
        "a read on renewed credentials",
        api::db::RENEW_AT_MOST_EVERY + Duration::from_secs(5),
        async || store.batch(NewestEntries(1)).await.is_ok(),
    )
    .await;

    assert!(
        refused.as_ref().is_err_and(StoreError::is_unavailable),
        "the expired password is refused, a 503: {refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(11));
    renewer.abort();
    drop(store);
    drop_role(&pool, &role).await;
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn writes_right_after_a_restart_quicker_than_the_validation_window_all_succeed_once(
    pool: PgPool,
) {
    let chaos = Chaos::start(&pool.connect_options()).await;
    let mut settings = test_settings();
    settings.database.max_connections = Count::try_from(4).expect("not zero");
    let app = TestApp::over(chaos.options(named(&pool, "quick")), pool.clone(), settings);
    warm_up(&app).await;
    until(
        "every connection is back in the pool",
        Duration::from_secs(5),
        async || {
            let (open, idle) = app.store.connections();
            open >= 1 && idle == open as usize
        },
    )
    .await;

    // Down for 100 ms: the pooled connections are dead, but idle for less
    // than the validation window, so nothing checks them before use.
    chaos.restart(Duration::from_millis(100)).await;
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let notes = format!("after the restart {i}");
                let response = app
                    .post_data(json!({ "notes": notes, "greeting": "hi" }).to_string())
                    .await;
                (
                    notes,
                    response.status,
                    String::from_utf8_lossy(&response.body).into_owned(),
                )
            })
        })
        .collect();

    for write in burst {
        let (notes, status, body) = write.await.expect("joins");
        assert_eq!(status, StatusCode::CREATED, "{notes}: {body}");
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM data WHERE notes = $1")
            .bind(&notes)
            .fetch_one(&pool)
            .await
            .expect("counts");
        assert_eq!(stored, 1, "{notes} is stored exactly once");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_write_whose_answer_is_lost_after_it_committed_is_answered_from_its_receipt(
    pool: PgPool,
) {
    let chaos = Chaos::start(&pool.connect_options()).await;
    let app = chaos
        .app_on_one_connection(&pool, "receipt", test_settings())
        .await;

    chaos.cut_next_answer();
    let response = app
        .post_data(json!({ "notes": "answer lost", "greeting": "hi" }).to_string())
        .await;

    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let record = response.json();
    let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM data WHERE notes = 'answer lost'")
        .fetch_all(&pool)
        .await
        .expect("reads");
    assert_eq!(stored.len(), 1, "stored once, not sent again: {stored:?}");
    assert_eq!(
        record["id"].as_i64(),
        Some(stored[0]),
        "the answer is the stored row"
    );
}
