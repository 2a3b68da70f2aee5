//! The data store: sqlx's connection pool, and over it batchers that serve
//! many waiting requests of one kind with one statement.
//!
//! Two ways to reach the database, both bounded the same way and failing
//! with the same [`StoreError`] (a 503 when the database cannot serve):
//! - [`Store::batch`] for a statement many requests run at once: a type
//!   that implements [`Batched`] (the insert, the newest entries and the
//!   read by id, each in the file of its route). A task that is free takes
//!   everything of that kind that waits (up to [`MAX_BATCH`]) and serves it
//!   with one statement: alone, a request is one round trip; under load one
//!   round trip serves many.
//! - [`Store::run`] for any other statement: an ordinary sqlx query on a
//!   connection from the pool.
//!
//! What both keep:
//! - at most `database.max_connections` server backends, whatever the
//!   database does, and statements in flight within a limit chosen from
//!   the wait requests see (`limit`, `database.adaptive_concurrency`): every statement runs under `statement_timeout` and
//!   `lock_timeout`, and one the server does not answer in time is
//!   abandoned with its connection;
//! - a request waits at most `database.acquire_timeout_secs` for a
//!   connection, then answers 503;
//! - a statement runs on a task of its own, so a request cancelled while it
//!   runs (its client went away) leaves it to finish, and no connection is
//!   returned mid-protocol;
//! - a connection idle for longer than [`VALIDATE_AFTER`], or opened before
//!   another connection was found lost, is checked before use and replaced
//!   (with the current credentials) when dead, so a restarted or failed-over
//!   database fails no request once it answers again.

mod batch;
mod limit;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};

pub use batch::{Batched, MAX_BATCH, Receipt, Recovered};

use crate::config::DatabaseSettings;
use crate::metrics::{StoreMetrics, Unavailable};

/// A connection unused for longer than this is checked before use
/// (HikariCP's rule: busy connections are never pinged, stale ones are).
pub const VALIDATE_AFTER: Duration = Duration::from_millis(500);

/// A connection this old is replaced: server-side state does not grow
/// forever, and connections move to a new server after a failover.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How long past `statement_timeout` a statement's answer is awaited
/// before its connection is given up (the server normally cancels the
/// statement itself; this bounds a server that stopped answering).
const STATEMENT_GRACE: Duration = Duration::from_secs(1);

/// A statement for [`Store::run`]: an async block over a borrowed
/// connection, boxed (`Box::pin(async move { … })`).
pub type Statement<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Why a request got no answer from the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Too many requests of this kind wait already: the database is
    /// slower than the requests.
    #[error("{capacity} requests are already waiting for the database")]
    Busy {
        /// The queue's capacity.
        capacity: usize,
    },
    /// No connection was free in time (every connection is busy or stuck,
    /// or none could be opened).
    #[error("no database connection was free within {0:?}")]
    Timeout(Duration),
    /// The database cannot serve now (unreachable, restarting, out of
    /// connections or disk, credentials refused, a statement or lock
    /// timeout).
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    /// A write was sent and its connection lost before the answer came:
    /// it may or may not have committed, and nothing could tell which.
    #[error("a write was sent but its outcome is unknown: {0}")]
    Unknown(Arc<sqlx::Error>),
    /// The statement failed for another reason (a bug, or data the
    /// database refused).
    #[error("the statement failed: {0}")]
    Failed(Arc<sqlx::Error>),
    /// The store was shut down.
    #[error("the store has stopped")]
    Stopped,
}

impl StoreError {
    /// Whether a retry later may succeed (an answer of 503, not 500).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, StoreError::Failed(_))
    }

    /// The cause a 503 answering this error is counted under.
    pub fn metric_cause(&self) -> Unavailable {
        match self {
            StoreError::Busy { .. } => Unavailable::QueueFull,
            StoreError::Timeout(_) => Unavailable::NoConnection,
            StoreError::Unknown(_) => Unavailable::OutcomeUnknown,
            StoreError::Unavailable(_) | StoreError::Failed(_) | StoreError::Stopped => {
                Unavailable::Database
            }
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        if is_unavailable(&error) {
            StoreError::Unavailable(Arc::new(error))
        } else {
            StoreError::Failed(Arc::new(error))
        }
    }
}

/// Whether a database error means "the database cannot serve now" rather
/// than a bug: those answer 503 so load balancers and clients retry.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 28: credentials refused (an expired
            // IAM token: 28000, a password: 28P01); 53: insufficient
            // resources (too many connections, disk full); 57014: a
            // statement timeout; 57P0x: shutting down or starting up;
            // 55P03: a lock timeout.
            code.starts_with("08")
                || code.starts_with("28")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "57014"
                || code == "55P03"
        }),
        _ => false,
    }
}

/// Whether the server refused to let a connection sign in (SQLSTATE class
/// 28: an expired IAM token is 28000, a wrong password 28P01).
fn is_credentials_refused(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db
        .code()
        .is_some_and(|code| code.starts_with("28")))
}

/// Whether an error means the connection itself is lost or unusable.
fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

/// Whether an error is about a row's data (constraint, value, type): the
/// statement failed, the connection is fine, another batch may succeed.
fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db
        .code()
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23")))
}

/// The store's handle; cheap to clone. The batchers' tasks stop when the
/// last handle is dropped; [`Store::close`] also closes the connections.
#[derive(Debug, Clone)]
pub struct Store {
    core: Arc<Core>,
    /// The batchers, one per [`Batched`] type, started on first use. Only
    /// the handles hold them: their tasks end when the last handle goes.
    batchers: Arc<batch::Batchers>,
}

/// What the handles and the batchers' tasks share.
#[derive(Debug)]
struct Core {
    /// The connections.
    pool: PgPool,
    /// Longest a request waits for a connection.
    acquire_timeout: Duration,
    /// Longest a statement is awaited (the server's `statement_timeout`
    /// plus [`STATEMENT_GRACE`]).
    statement_limit: Duration,
    /// Requests of one kind that may wait at once.
    queue_capacity: usize,
    /// Every connection's `statement_timeout` and `lock_timeout`.
    timeouts: Timeouts,
    /// Tasks per batcher: as many as there are connections.
    connections: usize,
    /// How many statements may run at once.
    limiter: limit::Limiter,
    /// When connections were last found lost, for the pool's check.
    losses: Arc<Losses>,
    /// Statements run and requests they served.
    counts: Counts,
    /// What the metrics report of the store.
    metrics: Arc<StoreMetrics>,
    /// Woken when the server refuses the credentials of a new connection
    /// (an expired IAM token), so they are renewed at once.
    refused: tokio::sync::Notify,
}

/// Statements run and the requests they answered, for figures.
#[derive(Debug, Default)]
struct Counts {
    statements: AtomicU64,
    requests: AtomicU64,
}

/// How many statements served how many requests so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Statements sent to the database.
    pub statements: u64,
    /// Requests they answered.
    pub requests: u64,
}

/// The last time a connection was found lost, as milliseconds since the
/// store started: a connection opened before then is checked before use,
/// since the server that closed one may have closed them all.
#[derive(Debug)]
struct Losses {
    started: Instant,
    last_ms: AtomicU64,
}

impl Losses {
    fn record(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now.max(1), Ordering::Relaxed);
    }

    /// Whether a connection of this age was opened before the last loss.
    fn predates_last(&self, age: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let opened = self.started.elapsed().saturating_sub(age);
        opened.as_millis() <= u128::from(last)
    }
}

impl Store {
    /// The store over `options` with the limits of `settings`. Connections
    /// are opened when the first requests arrive, so the service starts
    /// while the database is down. Must be called inside a tokio runtime.
    pub fn connect(options: PgConnectOptions, settings: &DatabaseSettings) -> Store {
        let timeouts = Timeouts {
            statement: settings.statement_timeout_secs.get(),
            lock: settings.lock_timeout_secs.get(),
        };
        let losses = Arc::new(Losses {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let checked = Arc::clone(&losses);
        let metrics = Arc::new(StoreMetrics::default());
        let limiter = limit::Limiter::new(
            settings.max_connections.get(),
            settings.adaptive_concurrency,
            Arc::clone(&metrics),
        );
        let opened = Arc::clone(&metrics);
        let pool = PgPoolOptions::new()
            .max_connections(u32::try_from(settings.max_connections.get()).unwrap_or(u32::MAX))
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout_secs.get())
            .max_lifetime(MAX_LIFETIME)
            // Replaced by the check below: only connections idle for a
            // while (or older than a loss) are pinged, never busy ones.
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                let check = meta.idle_for >= VALIDATE_AFTER || checked.predates_last(meta.age);
                Box::pin(async move {
                    if check {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            // No statement here: counting costs a new connection no
            // round trip.
            .after_connect(move |_connection, _meta| {
                opened.opened();
                Box::pin(async { Ok(()) })
            })
            .connect_lazy_with(with_timeouts(options, timeouts));
        let core = Arc::new(Core {
            pool,
            acquire_timeout: settings.acquire_timeout_secs.get(),
            statement_limit: timeouts.statement + STATEMENT_GRACE,
            queue_capacity: settings.queue_capacity.get(),
            timeouts,
            connections: settings.max_connections.get(),
            limiter,
            losses,
            counts: Counts::default(),
            metrics,
            refused: tokio::sync::Notify::new(),
        });
        let store = Store {
            core,
            batchers: Arc::default(),
        };
        store.every(PRUNE_EVERY, "the store's old receipts", prune_receipts);
        store
    }

    /// Runs `job` with the store every `period` (the first time one period
    /// from now) until the last handle is dropped: housekeeping, such as
    /// removing expired rows. It holds the store only while it runs. A
    /// failure is logged and the job tried again next time.
    pub fn every<F, J>(&self, period: Duration, what: &'static str, job: F)
    where
        F: Fn(Store) -> J + Send + 'static,
        J: Future<Output = Result<u64, StoreError>> + Send,
    {
        let core = Arc::downgrade(&self.core);
        let batchers = Arc::downgrade(&self.batchers);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let (Some(core), Some(batchers)) = (core.upgrade(), batchers.upgrade()) else {
                    return;
                };
                match job(Store { core, batchers }).await {
                    Ok(rows) => tracing::debug!(rows, "removed {what}"),
                    Err(error) => {
                        tracing::debug!(%error, "removing {what} failed; trying again later");
                    }
                }
            }
        });
    }

    /// Serves `item` in a batch with every other waiting request of its
    /// type: the reply is its own.
    pub async fn batch<B: Batched>(&self, item: B) -> Result<B::Reply, StoreError> {
        self.batchers.call(&self.core, item).await
    }

    /// Runs `statement` on a connection from the pool, on a task of its
    /// own, within the statement limit; a connection that is lost or does
    /// not answer in time is closed. Never retried: the statement may have
    /// run. For example:
    ///
    /// ```ignore
    /// let rows = store
    ///     .run(move |connection| Box::pin(async move {
    ///         sqlx::query_as!(DataRecord, "SELECT …", before).fetch_all(connection).await
    ///     }))
    ///     .await?;
    /// ```
    pub async fn run<T, F>(&self, statement: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> Statement<'c, T> + Send + 'static,
    {
        let core = Arc::clone(&self.core);
        let called = Instant::now();
        let deadline = called + core.acquire_timeout;
        tokio::spawn(async move {
            let _slot = core.slot(deadline).await?;
            let mut connection = core.acquire(deadline).await?;
            let started = Instant::now();
            let outcome = core.bounded(statement(&mut connection)).await;
            core.count(1, started);
            drop(core.keep(connection, outcome.as_ref().err()));
            core.limiter.answered(1, called.elapsed());
            Ok(outcome?)
        })
        .await
        .unwrap_or(Err(StoreError::Stopped))
    }

    /// Whether the database answers (readiness): a round trip on a
    /// connection from the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|connection| Box::pin(connection.ping())).await
    }

    /// New connections use `options` from now on (a renewed IAM token);
    /// open ones keep theirs.
    pub fn set_connect_options(&self, options: PgConnectOptions) {
        let options = with_timeouts(options, self.core.timeouts);
        self.core.pool.set_connect_options(options);
    }

    /// Completes when the server next refuses a new connection's
    /// credentials.
    pub async fn credentials_refused(&self) {
        self.core.refused.notified().await;
    }

    /// The options new connections use.
    pub fn connect_options(&self) -> Arc<PgConnectOptions> {
        self.core.pool.connect_options()
    }

    /// Requests waiting for a connection right now, of every kind.
    pub fn waiting(&self) -> usize {
        self.batchers.waiting()
    }

    /// Connections open now, and of them idle in the pool (not in use, not
    /// being checked or given back).
    pub fn connections(&self) -> (u32, usize) {
        (self.core.pool.size(), self.core.pool.num_idle())
    }

    /// How many statements may run at once now (between 1 and
    /// `database.max_connections`).
    pub fn concurrency_limit(&self) -> usize {
        self.core.limiter.limit()
    }

    /// Statements run and requests served so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            statements: self.core.counts.statements.load(Ordering::Relaxed),
            requests: self.core.counts.requests.load(Ordering::Relaxed),
        }
    }

    /// What the store counts for the metrics reports.
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        Arc::clone(&self.core.metrics)
    }

    /// Closes every connection, waiting for those in use to come back.
    pub async fn close(&self) {
        self.core.pool.close().await;
    }
}

impl Core {
    /// A slot for one statement under the concurrency limit, by `deadline`.
    async fn slot(&self, deadline: Instant) -> Result<limit::Slot<'_>, StoreError> {
        let deadline = tokio::time::Instant::from_std(deadline.max(Instant::now()));
        self.limiter
            .slot(deadline)
            .await
            .map_err(|limit::NoSlot| StoreError::Timeout(self.acquire_timeout))
    }

    /// A connection from the pool by `deadline`.
    async fn acquire(&self, deadline: Instant) -> Result<PoolConnection<Postgres>, StoreError> {
        let deadline = tokio::time::Instant::from_std(deadline.max(Instant::now()));
        match tokio::time::timeout_at(deadline, self.pool.acquire()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                Err(StoreError::Timeout(self.acquire_timeout))
            }
            Ok(Err(error)) => {
                if is_credentials_refused(&error) {
                    self.refused.notify_one();
                }
                Err(error.into())
            }
        }
    }

    /// A statement with a client-side bound: past it the server is not
    /// answering at all.
    async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let limit = self.statement_limit;
        tokio::time::timeout(limit, statement)
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the database did not answer within {limit:?}"),
                )))
            })
    }

    /// A used connection, to use again or give back to the pool; `None`
    /// when `failure` says it is lost (its state unknown): then it is
    /// taken out of the pool at once, so a replacement may open, and
    /// closed without a goodbye to a server that may not answer.
    fn keep(
        &self,
        connection: PoolConnection<Postgres>,
        failure: Option<&sqlx::Error>,
    ) -> Option<PoolConnection<Postgres>> {
        if failure.is_some_and(is_connection_lost) {
            self.losses.record();
            self.metrics.lost();
            drop(connection.detach());
            return None;
        }
        Some(connection)
    }

    /// Counts a statement serving `requests` requests, sent at `started`.
    fn count(&self, requests: usize, started: Instant) {
        self.metrics.statement(requests, started.elapsed());
        self.counts.statements.fetch_add(1, Ordering::Relaxed);
        self.counts
            .requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }
}

/// How long a write's receipt is kept: far longer than any statement runs.
const RECEIPTS_KEPT: Duration = Duration::from_secs(15 * 60);

/// How often old receipts are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Removes receipts older than [`RECEIPTS_KEPT`]: a `DELETE` by age on an
/// index of its own, which no write waits for.
async fn prune_receipts(store: Store) -> Result<u64, StoreError> {
    store
        .run(|connection| {
            Box::pin(async move {
                sqlx::query(
                    "DELETE FROM store_receipts WHERE created_at < now() - make_interval(secs => $1)",
                )
                .bind(RECEIPTS_KEPT.as_secs_f64())
                .execute(connection)
                .await
                .map(|done| done.rows_affected())
            })
        })
        .await
}

/// The server-side timeouts every connection starts with.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    statement: Duration,
    lock: Duration,
}

/// How often the server checks, while a statement runs, whether its client
/// is still there: a statement whose client went away stops then rather
/// than at its timeout, so a replaced connection never leaves a second
/// backend behind for long (PostgreSQL 14 or newer).
const CLIENT_CHECK: Duration = Duration::from_secs(2);

/// `options` with the timeouts as startup parameters (no round trip).
fn with_timeouts(options: PgConnectOptions, timeouts: Timeouts) -> PgConnectOptions {
    options.options([
        ("statement_timeout", timeouts.statement.as_millis()),
        ("lock_timeout", timeouts.lock.as_millis()),
        ("client_connection_check_interval", CLIENT_CHECK.as_millis()),
    ])
}
