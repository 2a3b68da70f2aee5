//! The data store: a few long-lived connections, each owned by a task that
//! serves requests in batches. Handlers never hold a connection.
//!
//! A handler puts its request on a bounded queue and awaits the answer. A
//! task that is free takes everything waiting (up to [`MAX_BATCH`]) and
//! serves each kind with one statement: inserts as one multi-row `INSERT …
//! SELECT … FROM UNNEST`, lists as one `SELECT … LIMIT <largest n>`, reads
//! by id as one `WHERE id = ANY(…)`. Nothing waits for company: alone, a
//! request is one round trip; under load one round trip serves many.
//!
//! What it keeps:
//! - a row is acknowledged only after its statement committed, and each
//!   request gets exactly its own row (ids in arrival order);
//! - a request is never added to a statement that already started; one
//!   whose handler gave up (its client went away, or it waited longer than
//!   the acquire timeout) before a task took it is never run;
//! - a request cancelled after a task took it leaves the statement to
//!   finish on the task, so no connection is left mid-protocol and none
//!   needs a ping after use;
//! - at most `database.max_connections` server backends, whatever the
//!   database does: every statement runs under `statement_timeout` and
//!   `lock_timeout`, and a statement the server does not answer in time is
//!   abandoned with its connection;
//! - a connection idle for longer than [`VALIDATE_AFTER`] is checked
//!   before a batch uses it and replaced (with the current credentials)
//!   when dead, so a restarted or failed-over database fails no request
//!   once it answers again; a read is retried once on a fresh connection;
//!   a write is never retried once sent;
//! - a batch of inserts that fails on one row's data is split until the
//!   row is alone, so its batch-mates are stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use domain::{DataRecord, NewData};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most requests one statement serves.
pub const MAX_BATCH: usize = 512;

/// A connection unused for longer than this is checked before use
/// (HikariCP's rule: busy connections are never pinged, stale ones are).
pub const VALIDATE_AFTER: Duration = Duration::from_millis(500);

/// A connection this old is replaced: server-side state does not grow
/// forever, and connections move to a new server after a failover.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How long past `statement_timeout` the task waits for the server's
/// answer before it gives the connection up (the server normally cancels
/// the statement itself; this bounds a server that stopped answering).
const STATEMENT_GRACE: Duration = Duration::from_secs(1);

/// What the store is told at start.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Connections (and tasks) it holds.
    pub connections: usize,
    /// Longest a request waits for a task, and a task for a connection.
    pub acquire_timeout: Duration,
    /// Server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// Server-side `lock_timeout` of every connection.
    pub lock_timeout: Duration,
    /// Requests that may wait at once; more are refused at once.
    pub queue_capacity: usize,
}

/// Why a request got no answer from the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The queue is full: the database is slower than the requests.
    #[error("{capacity} requests are already waiting for the database")]
    Busy {
        /// The queue's capacity.
        capacity: usize,
    },
    /// No task took the request in time (every connection is busy or
    /// stuck).
    #[error("no database connection was free within {0:?}")]
    Timeout(Duration),
    /// The database cannot serve now (unreachable, restarting, out of
    /// connections or disk, credentials refused, a statement or lock
    /// timeout).
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
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

    fn from_sqlx(error: sqlx::Error) -> StoreError {
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

/// The store's handle; cheap to clone. The tasks stop, closing their
/// connections, when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    sender: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: StoreSettings,
    /// Options for new connections (kept current under IAM auth).
    options: RwLock<PgConnectOptions>,
    /// Statements run, for figures.
    statements: AtomicU64,
    /// Requests answered by them.
    requests: AtomicU64,
}

/// The newest entries a list request asked for: a prefix of what its
/// batch's statement read.
#[derive(Debug, Clone)]
pub struct Listing {
    records: Arc<[DataRecord]>,
    shown: usize,
}

impl Listing {
    /// The entries, newest first.
    pub fn records(&self) -> &[DataRecord] {
        &self.records[..self.shown]
    }
}

/// How many statements served how many requests so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Statements sent to the database.
    pub statements: u64,
    /// Requests they answered.
    pub requests: u64,
}

/// A request's claim: taken by a task, or given up by its handler first.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

#[derive(Debug)]
enum Request {
    Insert(NewData),
    List(u32),
    Get(i64),
    Ping,
}

#[derive(Debug)]
enum Answer {
    Stored(DataRecord),
    Listed(Listing),
    Found(Option<DataRecord>),
    Pong,
}

#[derive(Debug)]
struct Job {
    request: Request,
    claim: Arc<AtomicU8>,
    /// When it was queued: a task must have a connection for it by
    /// `queued + acquire_timeout`.
    queued: Instant,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

impl Job {
    fn answer(self, answer: Result<Answer, StoreError>) {
        let _ = self.reply.send(answer);
    }
}

/// Gives a request up when its handler is dropped before a task took it.
struct Abandon(Arc<AtomicU8>);

impl Drop for Abandon {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Store {
    /// Starts the tasks; they connect with `options` when the first
    /// requests arrive, so the service starts while the database is down.
    /// Must be called inside a tokio runtime.
    pub fn start(options: PgConnectOptions, settings: StoreSettings) -> Store {
        let (sender, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            options: RwLock::new(with_timeouts(options, &settings)),
            settings,
            statements: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..shared.settings.connections.max(1) {
            tokio::spawn(work(Arc::clone(&shared), Arc::clone(&receiver)));
        }
        Store { sender, shared }
    }

    /// New connections use `options` from now on (a renewed IAM token);
    /// open ones keep theirs.
    pub fn set_connect_options(&self, options: PgConnectOptions) {
        *self
            .shared
            .options
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            with_timeouts(options, &self.shared.settings);
    }

    /// The options new connections use.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.shared
            .options
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests waiting in the queue for a task right now.
    pub fn waiting(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Statements run and requests served so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            statements: self.shared.statements.load(Ordering::Relaxed),
            requests: self.shared.requests.load(Ordering::Relaxed),
        }
    }

    /// Stores an entry; the answer is its record once committed.
    pub async fn insert(&self, entry: NewData) -> Result<DataRecord, StoreError> {
        match self.call(Request::Insert(entry)).await? {
            Answer::Stored(record) => Ok(record),
            other => unreachable!("an insert answered {other:?}"),
        }
    }

    /// The `n` newest entries, newest first (shared with the requests of
    /// the same batch, not copied for each).
    pub async fn list(&self, n: u32) -> Result<Listing, StoreError> {
        match self.call(Request::List(n)).await? {
            Answer::Listed(records) => Ok(records),
            other => unreachable!("a list answered {other:?}"),
        }
    }

    /// The entry with this id, if any.
    pub async fn get(&self, id: i64) -> Result<Option<DataRecord>, StoreError> {
        match self.call(Request::Get(id)).await? {
            Answer::Found(record) => Ok(record),
            other => unreachable!("a read answered {other:?}"),
        }
    }

    /// Whether the database answers a query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(Request::Ping).await.map(|_| ())
    }

    async fn call(&self, request: Request) -> Result<Answer, StoreError> {
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let (reply, mut answer) = oneshot::channel();
        let job = Job {
            request,
            claim: Arc::clone(&claim),
            queued: Instant::now(),
            reply,
        };
        self.sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy {
                capacity: self.shared.settings.queue_capacity,
            },
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
        })?;
        let _abandon = Abandon(Arc::clone(&claim));
        let timeout = self.shared.settings.acquire_timeout;
        match tokio::time::timeout(timeout, &mut answer).await {
            Ok(answer) => answer.unwrap_or(Err(StoreError::Stopped)),
            Err(_) => {
                if claim
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(StoreError::Timeout(timeout));
                }
                // A task has it: its statement is bounded; wait for it.
                answer.await.unwrap_or(Err(StoreError::Stopped))
            }
        }
    }
}

/// The per-connection settings every connection starts with.
fn with_timeouts(options: PgConnectOptions, settings: &StoreSettings) -> PgConnectOptions {
    options.options([
        (
            "statement_timeout",
            settings.statement_timeout.as_millis().to_string(),
        ),
        (
            "lock_timeout",
            settings.lock_timeout.as_millis().to_string(),
        ),
    ])
}

/// One task: takes what waits, serves it, and again, until the store is
/// dropped; then closes its connection.
async fn work(shared: Arc<Shared>, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut connection = Slot::default();
    loop {
        let jobs = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                break;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let jobs: Vec<Job> = jobs
            .into_iter()
            .filter(|job| {
                job.claim
                    .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .collect();
        if !jobs.is_empty() {
            serve(&shared, &mut connection, jobs).await;
        }
    }
    if let Some(open) = connection.open.take() {
        let _ = open.connection.close().await;
    }
}

/// Serves a batch: each kind with one statement.
async fn serve(shared: &Shared, slot: &mut Slot, jobs: Vec<Job>) {
    let deadline = jobs
        .iter()
        .map(|job| job.queued)
        .min()
        .unwrap_or_else(Instant::now)
        + shared.settings.acquire_timeout;
    let mut inserts = Vec::new();
    let mut lists = Vec::new();
    let mut gets = Vec::new();
    let mut pings = Vec::new();
    for job in jobs {
        match job.request {
            Request::Insert(_) => inserts.push(job),
            Request::List(_) => lists.push(job),
            Request::Get(_) => gets.push(job),
            Request::Ping => pings.push(job),
        }
    }
    if !inserts.is_empty() {
        serve_inserts(shared, slot, deadline, inserts).await;
    }
    if !lists.is_empty() {
        serve_lists(shared, slot, deadline, lists).await;
    }
    if !gets.is_empty() {
        serve_gets(shared, slot, deadline, gets).await;
    }
    if !pings.is_empty() {
        let answered = read(shared, slot, deadline, |connection| {
            Box::pin(async move {
                sqlx::query("SELECT 1").execute(connection).await?;
                Ok(())
            })
        })
        .await;
        count(shared, pings.len());
        for job in pings {
            job.answer(answered.clone().map(|()| Answer::Pong));
        }
    }
}

fn count(shared: &Shared, requests: usize) {
    shared.statements.fetch_add(1, Ordering::Relaxed);
    shared
        .requests
        .fetch_add(requests as u64, Ordering::Relaxed);
}

type Statement<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// A read on a ready connection, retried once on a fresh connection when
/// the first one turns out to be lost.
async fn read<T>(
    shared: &Shared,
    slot: &mut Slot,
    deadline: Instant,
    statement: impl for<'c> Fn(&'c mut PgConnection) -> Statement<'c, T>,
) -> Result<T, StoreError> {
    let mut retried = false;
    loop {
        let connection = slot.ready(shared, deadline).await?;
        match bounded(shared, statement(connection)).await {
            Ok(value) => {
                slot.used();
                return Ok(value);
            }
            Err(error) if is_connection_lost(&error) => {
                slot.discard();
                if retried {
                    return Err(StoreError::from_sqlx(error));
                }
                tracing::warn!(%error, "a database connection was lost; reading again on a fresh one");
                retried = true;
            }
            Err(error) => {
                slot.used();
                return Err(StoreError::from_sqlx(error));
            }
        }
    }
}

/// A statement with a client-side bound: the server's `statement_timeout`
/// plus a grace. Past it the server is not answering at all.
async fn bounded<T>(
    shared: &Shared,
    statement: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let limit = shared.settings.statement_timeout + STATEMENT_GRACE;
    tokio::time::timeout(limit, statement)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the database did not answer within {limit:?}"),
            )))
        })
}

async fn serve_lists(shared: &Shared, slot: &mut Slot, deadline: Instant, jobs: Vec<Job>) {
    let largest = jobs
        .iter()
        .map(|job| match job.request {
            Request::List(n) => n,
            _ => 0,
        })
        .max()
        .unwrap_or(1);
    let listed: Result<Arc<[DataRecord]>, StoreError> =
        read(shared, slot, deadline, move |connection| {
            Box::pin(async move {
                sqlx::query_as!(
                    DataRecord,
                    "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT $1",
                    i64::from(largest),
                )
                .fetch_all(connection)
                .await
            })
        })
        .await
        .map(Arc::from);
    count(shared, jobs.len());
    for job in jobs {
        let n = match job.request {
            Request::List(n) => n as usize,
            _ => 0,
        };
        let answer = listed
            .as_ref()
            .map(|records| {
                Answer::Listed(Listing {
                    shown: n.min(records.len()),
                    records: Arc::clone(records),
                })
            })
            .map_err(Clone::clone);
        job.answer(answer);
    }
}

async fn serve_gets(shared: &Shared, slot: &mut Slot, deadline: Instant, jobs: Vec<Job>) {
    let mut ids: Vec<i64> = jobs
        .iter()
        .filter_map(|job| match job.request {
            Request::Get(id) => Some(id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let found = read(shared, slot, deadline, |connection| {
        let ids = ids.clone();
        Box::pin(async move {
            sqlx::query_as!(
                DataRecord,
                "SELECT id, notes, greeting, created_at FROM data WHERE id = ANY($1)",
                &ids[..],
            )
            .fetch_all(connection)
            .await
        })
    })
    .await;
    count(shared, jobs.len());
    let by_id: HashMap<i64, DataRecord> = match &found {
        Ok(records) => records
            .iter()
            .map(|record| (record.id, record.clone()))
            .collect(),
        Err(_) => HashMap::new(),
    };
    for job in jobs {
        let answer = match (&found, &job.request) {
            (Ok(_), Request::Get(id)) => Ok(Answer::Found(by_id.get(id).cloned())),
            (Err(error), _) => Err(error.clone()),
            (Ok(_), _) => Ok(Answer::Found(None)),
        };
        job.answer(answer);
    }
}

/// Inserts, one statement per group; a group that fails on a row's data
/// is halved until the row is alone.
async fn serve_inserts(shared: &Shared, slot: &mut Slot, deadline: Instant, jobs: Vec<Job>) {
    let mut groups = vec![jobs];
    while let Some(mut group) = groups.pop() {
        match insert(shared, slot, deadline, &group).await {
            Ok(records) => {
                for (job, record) in group.into_iter().zip(records) {
                    job.answer(Ok(Answer::Stored(record)));
                }
            }
            Err(StoreError::Failed(error)) if group.len() > 1 && is_data_error(&error) => {
                let second = group.split_off(group.len() / 2);
                groups.push(second);
                groups.push(group);
            }
            Err(error) => {
                for job in group {
                    job.answer(Err(error.clone()));
                }
            }
        }
    }
}

/// One multi-row insert; the records come back in the jobs' order.
async fn insert(
    shared: &Shared,
    slot: &mut Slot,
    deadline: Instant,
    jobs: &[Job],
) -> Result<Vec<DataRecord>, StoreError> {
    let (notes, greetings): (Vec<&str>, Vec<&str>) = jobs
        .iter()
        .filter_map(|job| match &job.request {
            Request::Insert(entry) => Some((entry.notes(), entry.greeting())),
            _ => None,
        })
        .unzip();
    // Getting a connection sends nothing: a failure up to here is safe to
    // answer (and to retry by the client). Once the statement is sent, a
    // lost connection leaves the outcome unknown, so it is never resent.
    let connection = slot.ready(shared, deadline).await?;
    let inserted = bounded(
        shared,
        sqlx::query_as!(
            DataRecord,
            "INSERT INTO data (notes, greeting)
             SELECT entry.notes, entry.greeting
             FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS entry(notes, greeting, position)
             ORDER BY entry.position
             RETURNING id, notes, greeting, created_at",
            &notes[..] as &[&str],
            &greetings[..] as &[&str],
        )
        .fetch_all(connection),
    )
    .await;
    count(shared, jobs.len());
    match inserted {
        Ok(mut records) => {
            slot.used();
            // Identity values are drawn in the order rows are inserted,
            // which `ORDER BY position` fixes: sorted by id, the records
            // line up with the jobs.
            records.sort_unstable_by_key(|record| record.id);
            let lined_up = records.len() == jobs.len()
                && records.iter().zip(notes.iter().zip(&greetings)).all(
                    |(record, (notes, greeting))| {
                        record.notes == *notes && record.greeting == *greeting
                    },
                );
            if !lined_up {
                return Err(StoreError::Failed(Arc::new(sqlx::Error::Protocol(
                    "the inserted rows did not come back in the order they were sent".to_owned(),
                ))));
            }
            Ok(records)
        }
        Err(error) => {
            if is_connection_lost(&error) {
                slot.discard();
            } else {
                slot.used();
            }
            Err(StoreError::from_sqlx(error))
        }
    }
}

/// A task's connection, when it has one.
#[derive(Default)]
struct Slot {
    open: Option<Open>,
}

struct Open {
    connection: PgConnection,
    opened: Instant,
    last_used: Instant,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("open", &self.open.is_some())
            .finish()
    }
}

impl Slot {
    /// A connection fit for a batch by `deadline`: the open one if it is
    /// young and (when idle past [`VALIDATE_AFTER`]) answers a ping, else
    /// a new one made with the current options.
    async fn ready(
        &mut self,
        shared: &Shared,
        deadline: Instant,
    ) -> Result<&mut PgConnection, StoreError> {
        let deadline = tokio::time::Instant::from_std(deadline.max(Instant::now()));
        if let Some(open) = &mut self.open {
            if open.opened.elapsed() >= MAX_LIFETIME {
                if let Some(old) = self.open.take() {
                    tokio::spawn(async move {
                        let _ = old.connection.close().await;
                    });
                }
            } else if open.last_used.elapsed() >= VALIDATE_AFTER {
                let alive = tokio::time::timeout_at(deadline, open.connection.ping()).await;
                if !matches!(alive, Ok(Ok(()))) {
                    tracing::info!("an idle database connection is gone; replacing it");
                    self.open = None;
                }
            }
        }
        if self.open.is_none() {
            let options = shared
                .options
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let connection = tokio::time::timeout_at(deadline, options.connect())
                .await
                .map_err(|_| StoreError::Timeout(shared.settings.acquire_timeout))?
                .map_err(StoreError::from_sqlx)?;
            let now = Instant::now();
            self.open = Some(Open {
                connection,
                opened: now,
                last_used: now,
            });
        }
        match &mut self.open {
            Some(open) => Ok(&mut open.connection),
            None => Err(StoreError::Stopped),
        }
    }

    fn used(&mut self) {
        if let Some(open) = &mut self.open {
            open.last_used = Instant::now();
        }
    }

    /// Drops a connection whose state is unknown (closing its socket).
    fn discard(&mut self) {
        self.open = None;
    }
}
