//! The store's concurrency limit (`database.adaptive_concurrency`) against
//! real PostgreSQL, under a closed load of 64 clients, with statements that
//! cost what batched statements cost: a fixed part and a part per request.
//! On a database that runs them one at a time, fewer in flight is better
//! (larger batches, the same serial server); on one that runs them side by
//! side, more is. One store meets both in turn: its limit must go down to
//! 1, then back up to its maximum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::config::{Count, DatabaseSettings, Seconds};
use api::store::{Batched, Receipt, Store};
use sqlx::PgPool;
use sqlx::postgres::PgConnection;

use crate::helpers::{named, test_settings};

/// Milliseconds a statement takes, plus this per request it serves.
const FIXED_MS: f64 = 2.0;
const PER_REQUEST_MS: f64 = 0.1;

/// One request to a model database; `SERIAL`: its statements take an
/// advisory lock first, so the server runs one at a time (a database with
/// one core, or one the service's own load already saturates).
struct Work<const SERIAL: bool>;

impl<const SERIAL: bool> Batched for Work<SERIAL> {
    type Reply = ();

    const RESEND: bool = true;

    async fn run(
        connection: &mut PgConnection,
        batch: &[Self],
        _: &Receipt,
    ) -> Result<Vec<()>, sqlx::Error> {
        let seconds = (FIXED_MS + PER_REQUEST_MS * batch.len() as f64) / 1000.0;
        let sql = if SERIAL {
            // Held to the end of the statement's own transaction.
            "SELECT pg_advisory_xact_lock(7), pg_sleep($1)"
        } else {
            "SELECT 1, pg_sleep($1)"
        };
        sqlx::query(sql).bind(seconds).execute(connection).await?;
        Ok(batch.iter().map(|_| ()).collect())
    }
}

/// 64 clients sending `Work<SERIAL>` for `seconds`, each pausing 0 to
/// 10 ms (at random) between its requests, as clients of a web service
/// do: without the pauses every client would be answered by the same
/// statement and ask again at once, one batch of 64 forever, whatever the
/// limit. Returns the limits seen every 100 ms.
async fn load<const SERIAL: bool>(store: &Store, seconds: u64) -> Vec<usize> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..64)
        .map(|client: u64| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                // xorshift64: pauses differ per client and per request.
                let mut random = client.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .batch(Work::<SERIAL>)
                        .await
                        .expect("the model database answers");
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    tokio::time::sleep(Duration::from_micros(random % 10_000)).await;
                }
            })
        })
        .collect();
    let mut limits = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        limits.push(store.concurrency_limit());
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client ends");
    }
    limits
}

/// The limit most often seen in the last `tail` samples (a probe moves it
/// by one for a moment now and then).
fn settled(limits: &[usize], tail: usize) -> usize {
    let last = &limits[limits.len().saturating_sub(tail)..];
    (1..=16)
        .max_by_key(|limit| last.iter().filter(|seen| *seen == limit).count())
        .expect("limits")
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_limit_follows_what_the_database_can_run_at_once(pool: PgPool) {
    let store = Store::connect(
        named(&pool, "adaptive"),
        &DatabaseSettings {
            max_connections: Count::try_from(4).expect("not zero"),
            adaptive_concurrency: true,
            acquire_timeout_secs: Seconds::try_from(10).expect("not zero"),
            queue_capacity: Count::try_from(256).expect("not zero"),
            ..test_settings().database
        },
    );
    assert_eq!(
        store.concurrency_limit(),
        4,
        "a new store starts at its maximum"
    );

    let serial = load::<true>(&store, 15).await;
    assert_eq!(
        settled(&serial, 30),
        1,
        "a database running one statement at a time: limits every 100 ms {serial:?}"
    );

    let parallel = load::<false>(&store, 15).await;
    assert_eq!(
        settled(&parallel, 30),
        4,
        "a database running statements side by side: limits every 100 ms {parallel:?}"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_fixed_limit_stays_at_the_maximum(pool: PgPool) {
    let store = Store::connect(
        named(&pool, "fixed"),
        &DatabaseSettings {
            max_connections: Count::try_from(4).expect("not zero"),
            adaptive_concurrency: false,
            acquire_timeout_secs: Seconds::try_from(10).expect("not zero"),
            queue_capacity: Count::try_from(256).expect("not zero"),
            ..test_settings().database
        },
    );
    let serial = load::<true>(&store, 3).await;
    assert!(serial.iter().all(|limit| *limit == 4), "{serial:?}");
}
