//! `POST /data` with an `Idempotency-Key`: a write a client can send again.

use std::collections::BTreeMap;
use std::time::Duration;

use api::config::{Count, Seconds};
use api::idempotency;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::chaos::{Chaos, Mode};
use crate::helpers::{TestApp, TestResponse, test_settings, until};

const KEY: &str = "8e03978e-40d5-43e8-bc93-6894a57f9324";

fn entry(notes: &str) -> String {
    json!({ "notes": notes, "greeting": "hi" }).to_string()
}

/// Rows of `data` with these notes.
async fn rows_with(pool: &PgPool, notes: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM data WHERE notes = $1")
        .bind(notes)
        .fetch_one(pool)
        .await
        .expect("counts")
}

/// The app with one connection and time to wait behind a lock the test
/// holds: requests queue up and are served together once it is released.
fn patient(pool: &PgPool) -> TestApp {
    let mut settings = test_settings();
    let long = Seconds::try_from(30).expect("not zero");
    settings.database.max_connections = Count::try_from(1).expect("not zero");
    settings.database.acquire_timeout_secs = long;
    settings.database.lock_timeout_secs = long;
    settings.database.statement_timeout_secs = long;
    settings.server.request_timeout_secs = Seconds::try_from(60).expect("not zero");
    TestApp::with_settings(pool.clone(), settings)
}

fn replayed(response: &TestResponse) -> bool {
    response.header("idempotent-replayed") == Some("true")
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_repeat_with_the_same_key_and_body_answers_the_first_answer_and_stores_nothing(
    pool: PgPool,
) {
    let app = TestApp::new(pool.clone());

    let first = app.post_data_with_key(KEY, entry("once")).await;
    let again = app.post_data_with_key(KEY, entry("once")).await;
    // The draft's form: a Structured Field string.
    let quoted = app
        .post_data_with_key(&format!("\"{KEY}\""), entry("once"))
        .await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!replayed(&first), "the first answer is not a replay");
    for repeat in [&again, &quoted] {
        assert_eq!(repeat.status, StatusCode::CREATED);
        assert!(replayed(repeat), "{:?}", repeat.headers);
        assert_eq!(repeat.json(), first.json());
        assert_eq!(repeat.header("location"), first.header("location"));
    }
    assert_eq!(rows_with(&pool, "once").await, 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_key_sent_again_with_another_entry_is_refused_and_nothing_is_stored(pool: PgPool) {
    let app = TestApp::new(pool.clone());
    app.post_data_with_key(KEY, entry("the first entry")).await;

    let reused = app.post_data_with_key(KEY, entry("another entry")).await;

    let problem = reused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    assert_eq!(app.stored_rows().await, 1);
    assert_eq!(rows_with(&pool, "another entry").await, 0);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_malformed_key_is_refused_with_the_reason(pool: PgPool) {
    let app = TestApp::new(pool);

    for (key, reason) in [
        ("short", "16 to 255 characters long, not 5"),
        (&"k".repeat(256), "not 256"),
        ("\"an unfinished \\escape here\"", "backslash"),
    ] {
        let response = app.post_data_with_key(key, entry("bad key")).await;
        let problem = response.assert_problem(StatusCode::BAD_REQUEST);
        assert_eq!(problem["type"], "/problems/invalid-idempotency-key");
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(detail.contains(reason), "{key}: {detail}");
    }
    assert_eq!(app.stored_rows().await, 0);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn repeats_new_keys_and_unkeyed_entries_share_one_statement(pool: PgPool) {
    let app = patient(&pool);
    let key = |i: usize| format!("coalesced-key-{i:04}-of-the-test");
    for i in 0..20 {
        let response = app
            .post_data_with_key(&key(i), entry(&format!("keyed {i}")))
            .await;
        assert_eq!(response.status, StatusCode::CREATED);
    }

    // Everything queues behind a lock, then goes as one or two statements:
    // repeats of the 20 keys, 20 new keys and 10 entries without one.
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("locks");
    let before = app.store.stats();
    let send = |i: usize| {
        let app = app.clone();
        tokio::spawn(async move {
            let response = if i < 40 {
                app.post_data_with_key(&key(i), entry(&format!("keyed {i}")))
                    .await
            } else {
                app.post_data(entry(&format!("unkeyed {i}"))).await
            };
            (i, response)
        })
    };
    // The last one first: it takes the connection and waits on the lock;
    // the others wait for it.
    let mut requests = vec![send(49)];
    until(
        "the first waits on the lock",
        Duration::from_secs(10),
        async || lock_waits(&pool).await == 1,
    )
    .await;
    requests.extend((0..49).map(send));
    until(
        "every other request waits",
        Duration::from_secs(10),
        async || app.store.waiting() == 49,
    )
    .await;
    lock.commit().await.expect("releases the table");

    let mut replays = BTreeMap::new();
    for request in requests {
        let (i, response) = request.await.expect("joins");
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{i}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let record: Value = response.json();
        assert!(
            record["notes"]
                .as_str()
                .is_some_and(|notes| notes.ends_with(&format!(" {i}"))),
            "{i} got {record}"
        );
        replays.insert(i, replayed(&response));
    }
    let statements = app.store.stats().statements - before.statements;
    assert!(
        replays.iter().all(|(i, replayed)| *replayed == (*i < 20)),
        "the first 20 are replays, the others new: {replays:?}"
    );
    assert!(statements <= 3, "50 requests took {statements} statements");
    assert_eq!(app.stored_rows().await, 50, "20 + 20 keyed, 10 unkeyed");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_repeat_while_the_first_is_served_here_gets_409(pool: PgPool) {
    let app = patient(&pool);
    let mut lock = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE data IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("locks");
    let first = tokio::spawn({
        let app = app.clone();
        async move { app.post_data_with_key(KEY, entry("in flight")).await }
    });
    until(
        "the first waits on the lock",
        Duration::from_secs(10),
        async || lock_waits(&pool).await == 1,
    )
    .await;

    let repeat = app.post_data_with_key(KEY, entry("in flight")).await;
    lock.commit().await.expect("releases");

    let problem = repeat.assert_problem(StatusCode::CONFLICT);
    assert_eq!(problem["type"], "/problems/idempotency-key-in-use");
    assert_eq!(repeat.header("retry-after"), Some("1"));
    assert_eq!(first.await.expect("joins").status, StatusCode::CREATED);
    let after = app.post_data_with_key(KEY, entry("in flight")).await;
    assert!(
        replayed(&after),
        "once the first is answered, a repeat replays it"
    );
    assert_eq!(rows_with(&pool, "in flight").await, 1);
}

/// Backends of the test database waiting on a lock.
async fn lock_waits(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .expect("reads pg_stat_activity")
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_key_another_instance_is_storing_is_answered_with_its_entry_once_it_commits(
    pool: PgPool,
) {
    let app = patient(&pool);
    // Another instance's statement, not committed yet: its entry and key.
    let mut other = pool.begin().await.expect("a transaction");
    let id: i64 = sqlx::query_scalar(
        "WITH stored AS (INSERT INTO data (notes, greeting) VALUES ('raced', 'hi') RETURNING id)
         INSERT INTO idempotency_keys (key, data_id)
         SELECT sha256(convert_to($1, 'UTF8')), id FROM stored RETURNING data_id",
    )
    .bind(KEY)
    .fetch_one(&mut *other)
    .await
    .expect("stores");
    let here = tokio::spawn({
        let app = app.clone();
        async move { app.post_data_with_key(KEY, entry("raced")).await }
    });
    until(
        "this one waits on the key",
        Duration::from_secs(10),
        async || lock_waits(&pool).await == 1,
    )
    .await;

    other.commit().await.expect("commits");
    let response = here.await.expect("joins");

    assert_eq!(
        response.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(replayed(&response));
    assert_eq!(response.json()["id"].as_i64(), Some(id));
    assert_eq!(rows_with(&pool, "raced").await, 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn keys_older_than_a_day_are_pruned_and_younger_ones_kept(pool: PgPool) {
    let app = TestApp::new(pool.clone());
    app.post_data_with_key("a-key-of-25-hours-ago", entry("old"))
        .await;
    app.post_data_with_key("a-key-of-23-hours-ago", entry("young"))
        .await;
    for (notes, hours) in [("old", 25), ("young", 23)] {
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2)
             WHERE data_id = (SELECT id FROM data WHERE notes = $1)",
        )
        .bind(notes)
        .bind(hours)
        .execute(&pool)
        .await
        .expect("ages the key");
    }

    let removed = idempotency::prune(&app.store).await.expect("prunes");

    assert_eq!(removed, 1);
    let young = app
        .post_data_with_key("a-key-of-23-hours-ago", entry("young"))
        .await;
    assert!(replayed(&young), "a key younger than a day still replays");
    let old = app
        .post_data_with_key("a-key-of-25-hours-ago", entry("old"))
        .await;
    assert!(!replayed(&old), "a pruned key is a new key");
    assert_eq!(rows_with(&pool, "old").await, 2);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_write_whose_answer_never_came_says_so_and_its_repeat_stores_it_once(pool: PgPool) {
    let chaos = Chaos::start(&pool.connect_options()).await;
    let mut settings = test_settings();
    settings.database.statement_timeout_secs = Seconds::try_from(1).expect("not zero");
    let app = chaos
        .app_on_one_connection(&pool, "unknown", settings)
        .await;

    // The network stops carrying anything: the insert is sent, no answer
    // comes, and nothing tells whether it ran.
    chaos.set(Mode::Drop);
    let lost = app.post_data_with_key(KEY, entry("unknown")).await;
    chaos.set(Mode::Forward);

    let problem = lost.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "/problems/write-outcome-unknown");
    assert!(lost.header("retry-after").is_some());
    let again = app.post_data_with_key(KEY, entry("unknown")).await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(rows_with(&pool, "unknown").await, 1);
}
