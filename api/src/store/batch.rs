//! Batching: one statement for every waiting request of a kind.
//!
//! Each [`Batched`] type has a bounded queue and as many tasks as the pool
//! has connections. A task takes the first waiting request, gets a
//! connection for it, then takes everything else that waits (up to
//! [`MAX_BATCH`]) and runs the type's statement over the lot. A request is
//! never added to a statement that already started; one whose handler gave
//! up before a task took it is never run.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Core, StoreError, is_connection_lost, is_data_error};

/// Most requests one statement serves.
pub const MAX_BATCH: usize = 512;

/// A statement that serves many requests of one kind at once. The type is
/// one request; [`Store::batch`](super::Store::batch) queues it and
/// answers with its own reply.
///
/// The store keeps the rules around it: a batch that fails on one
/// request's data (SQLSTATE class 22 or 23) is halved until that request
/// is alone, so its batch-mates are served; a batch whose connection is
/// lost is sent again on a fresh one when [`Batched::RESEND`] says it may
/// be (reads). A write is never sent twice blindly: when the server closed
/// the connection (it restarted, say) the store asks
/// [`Batched::recover`] whether the batch committed, by the [`Receipt`] the
/// write recorded with its rows, and sends it again only if it did not.
pub trait Batched: Send + Sync + Sized + 'static {
    /// What one request gets back.
    type Reply: Send + 'static;

    /// Whether a batch may be sent a second time, unasked, when its
    /// connection was lost: true for reads; false for writes.
    const RESEND: bool;

    /// Runs the statement for `batch`: one reply per request, in order. A
    /// write records `receipt` in the same statement, a data-modifying
    /// `WITH` around its insert: `receipt AS (INSERT INTO store_receipts
    /// (token, ids) SELECT $n::uuid, array_agg(id) FROM inserted)`; a read
    /// ignores it.
    fn run(
        connection: &mut PgConnection,
        batch: &[Self],
        receipt: &Receipt,
    ) -> impl Future<Output = Result<Vec<Self::Reply>, sqlx::Error>> + Send;

    /// After the server closed the connection under `run`: the batch's
    /// replies if it committed (its `receipt` is there), or that it did not.
    /// The default knows nothing: the batch fails with the error.
    fn recover(
        connection: &mut PgConnection,
        batch: &[Self],
        receipt: &Receipt,
    ) -> impl Future<Output = Result<Recovered<Self::Reply>, sqlx::Error>> + Send {
        let _ = (connection, batch, receipt);
        async { Ok(Recovered::Unknown) }
    }
}

/// What [`Batched::recover`] found.
#[derive(Debug)]
pub enum Recovered<R> {
    /// The batch committed: these are its replies.
    Committed(Vec<R>),
    /// It did not: it may be sent again.
    NotCommitted,
    /// No way to tell.
    Unknown,
}

/// A token a write records with its rows (table `store_receipts`, one row
/// per batch, with the ids it stored), so the store can tell afterwards
/// whether the batch committed. Kept a quarter of an hour.
#[derive(Debug, Clone)]
pub struct Receipt(String);

impl Receipt {
    fn new() -> Receipt {
        Receipt(uuid::Uuid::new_v4().to_string())
    }

    /// The token, to bind as text.
    pub fn token(&self) -> &str {
        &self.0
    }
}

/// A request's claim: taken by a task, or given up by its handler first.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// One waiting request.
struct Job<B: Batched> {
    item: B,
    claim: Arc<AtomicU8>,
    /// When it was queued: a task must have a connection for it by
    /// `queued + acquire_timeout`.
    queued: Instant,
    reply: oneshot::Sender<Result<B::Reply, StoreError>>,
}

impl<B: Batched> Job<B> {
    /// Claims the job for a task; false when its handler gave up first.
    fn take(&self) -> bool {
        self.claim
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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

/// The queue of one [`Batched`] type; its tasks hold the receiving end.
struct Batcher<B: Batched> {
    sender: mpsc::Sender<Job<B>>,
}

/// What the store keeps of a batcher without knowing its type.
trait Queue: Any + Send + Sync {
    fn waiting(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
}

impl<B: Batched> Queue for Batcher<B> {
    fn waiting(&self) -> usize {
        queued(&self.sender)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Requests in `sender`'s queue, a just-sent one included.
fn queued<T>(sender: &mpsc::Sender<T>) -> usize {
    sender.max_capacity() - sender.capacity()
}

/// The batchers, one per [`Batched`] type, started on first use.
#[derive(Default)]
pub(super) struct Batchers(RwLock<HashMap<TypeId, Box<dyn Queue>>>);

impl std::fmt::Debug for Batchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batchers")
            .field("kinds", &self.read().len())
            .finish()
    }
}

impl Batchers {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TypeId, Box<dyn Queue>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests waiting for a connection, of every kind.
    pub(super) fn waiting(&self) -> usize {
        self.read().values().map(|queue| queue.waiting()).sum()
    }

    /// Queues `item` on `B`'s batcher (started on first use) and awaits its
    /// reply.
    pub(super) async fn call<B: Batched>(
        &self,
        core: &Arc<Core>,
        item: B,
    ) -> Result<B::Reply, StoreError> {
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let (reply, mut answer) = oneshot::channel();
        let job = Job {
            item,
            claim: Arc::clone(&claim),
            queued: Instant::now(),
            reply,
        };
        let sent = {
            let batchers = self.read();
            match batchers
                .get(&TypeId::of::<B>())
                .and_then(|queue| queue.as_any().downcast_ref::<Batcher<B>>())
            {
                Some(batcher) => batcher
                    .sender
                    .try_send(job)
                    .map(|()| queued(&batcher.sender)),
                None => {
                    drop(batchers);
                    let sender = self.start::<B>(core);
                    sender.try_send(job).map(|()| queued(&sender))
                }
            }
        };
        let queued = sent.map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy {
                capacity: core.queue_capacity,
            },
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
        })?;
        core.metrics.arrived(queued.saturating_sub(1));
        let _abandon = Abandon(Arc::clone(&claim));
        let timeout = core.acquire_timeout;
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

    /// Starts the batcher of `B` (unless another call just did) and
    /// returns a sender to its queue.
    fn start<B: Batched>(&self, core: &Arc<Core>) -> mpsc::Sender<Job<B>> {
        let mut batchers = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let queue = batchers.entry(TypeId::of::<B>()).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel::<Job<B>>(core.queue_capacity.max(1));
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..core.connections.max(1) {
                tokio::spawn(work::<B>(Arc::clone(core), Arc::clone(&receiver)));
            }
            Box::new(Batcher { sender })
        });
        queue
            .as_any()
            .downcast_ref::<Batcher<B>>()
            .map(|batcher| batcher.sender.clone())
            .expect("the batcher under B's TypeId is B's")
    }
}

/// One task of `B`'s batcher: takes the first waiting request, gets a
/// connection by its deadline, takes what else waits and serves the lot;
/// again, until the store is dropped.
async fn work<B: Batched>(core: Arc<Core>, queue: Arc<Mutex<mpsc::Receiver<Job<B>>>>) {
    loop {
        let (jobs, deadline, slot, connection) = {
            // Held until the batch is formed: one task at a time gathers.
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                break;
            };
            if !first.take() {
                continue;
            }
            let deadline = first.queued + core.acquire_timeout;
            // A slot under the concurrency limit, then a connection; the
            // batch grows while the task waits for either.
            let slot = core.slot(deadline).await;
            let connection = match &slot {
                Ok(_) => core.acquire(deadline).await,
                Err(error) => Err(error.clone()),
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) if job.take() => jobs.push(job),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (jobs, deadline, slot, connection)
        };
        match connection {
            Ok(connection) => serve(&core, connection, deadline, jobs).await,
            Err(error) => {
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
        drop(slot);
    }
}

/// Serves a batch on `connection`: the statement over all of it; a part
/// that fails on a request's data is halved until that request is alone.
async fn serve<B: Batched>(
    core: &Core,
    connection: PoolConnection<Postgres>,
    deadline: Instant,
    jobs: Vec<Job<B>>,
) {
    let queued: Vec<Instant> = jobs.iter().map(|job| job.queued).collect();
    let (items, replies): (Vec<B>, Vec<_>) =
        jobs.into_iter().map(|job| (job.item, job.reply)).unzip();
    let mut replies: Vec<Option<oneshot::Sender<_>>> = replies.into_iter().map(Some).collect();
    let mut connection = Some(connection);
    // Parts of the batch still to run, as ranges of `items`.
    let mut parts: Vec<Range<usize>> = Vec::new();
    parts.push(0..items.len());
    while let Some(part) = parts.pop() {
        let outcome = run(core, &mut connection, deadline, &items[part.clone()]).await;
        match outcome {
            Err(StoreError::Failed(error)) if part.len() > 1 && is_data_error(&error) => {
                let middle = part.start + part.len() / 2;
                parts.push(middle..part.end);
                parts.push(part.start..middle);
            }
            Ok(answers) => {
                for (reply, answer) in replies[part].iter_mut().zip(answers) {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(answer));
                    }
                }
            }
            Err(error) => {
                for reply in replies[part].iter_mut().filter_map(Option::take) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
    let answered = Instant::now();
    let waited = queued.iter().map(|queued| answered - *queued).sum();
    core.limiter.answered(queued.len(), waited);
}

/// Runs `B`'s statement over `batch` on the connection (another one, by
/// the batch's `deadline`, when it was lost), and sends it again on another
/// connection when that one turns out lost and `B` may be resent.
async fn run<B: Batched>(
    core: &Core,
    connection: &mut Option<PoolConnection<Postgres>>,
    deadline: Instant,
    batch: &[B],
) -> Result<Vec<B::Reply>, StoreError> {
    let mut resent = false;
    loop {
        let mut open = match connection.take() {
            Some(open) => open,
            None => core.acquire(deadline).await?,
        };
        let receipt = Receipt::new();
        let started = Instant::now();
        let outcome = core.bounded(B::run(&mut open, batch, &receipt)).await;
        core.count(batch.len(), started);
        let lost = outcome.as_ref().err().is_some_and(is_connection_lost);
        *connection = core.keep(open, outcome.as_ref().err());
        let error = match outcome {
            Ok(replies) => return lined_up(batch, replies),
            Err(error) if lost && !resent => error,
            Err(error) if lost && !B::RESEND => return Err(unknown(error)),
            Err(error) => return Err(error.into()),
        };
        resent = true;
        if B::RESEND {
            tracing::warn!(%error, "a database connection was lost; sending the statement again on a fresh one");
            continue;
        }
        if !is_closed_by_server(&error) {
            // The statement may still run on the server: nothing to ask yet.
            return Err(unknown(error));
        }
        let Ok(mut fresh) = core.acquire(deadline).await else {
            return Err(unknown(error));
        };
        let recovered = core.bounded(B::recover(&mut fresh, batch, &receipt)).await;
        *connection = core.keep(fresh, recovered.as_ref().err());
        match recovered {
            Ok(Recovered::Committed(replies)) => {
                tracing::info!(%error, "a database connection was lost after a write committed; answering from its receipt");
                return lined_up(batch, replies);
            }
            Ok(Recovered::NotCommitted) => {
                tracing::warn!(%error, "a database connection was lost before a write committed; sending it again on a fresh one");
            }
            Ok(Recovered::Unknown) => return Err(unknown(error)),
            Err(lookup) => {
                tracing::warn!(error = %lookup, "looking up a lost write's receipt failed");
                return Err(unknown(error));
            }
        }
    }
}

/// A write's connection lost under it, with no way to tell whether it
/// committed.
fn unknown(error: sqlx::Error) -> StoreError {
    tracing::warn!(%error, "a write's connection was lost before its answer; its outcome is unknown");
    StoreError::Unknown(Arc::new(error))
}

/// `replies`, when there is one for each request of `batch`.
fn lined_up<B: Batched>(batch: &[B], replies: Vec<B::Reply>) -> Result<Vec<B::Reply>, StoreError> {
    if replies.len() == batch.len() {
        return Ok(replies);
    }
    Err(StoreError::Failed(Arc::new(sqlx::Error::Protocol(
        format!("{} requests got {} replies", batch.len(), replies.len()),
    ))))
}

/// Whether the server itself ended the connection: it said it is
/// terminating (SQLSTATE 57P01 to 57P03), or closed or reset the socket.
/// Its backend is gone then, and with it any statement in flight, which
/// committed or never will. A timeout proves nothing of the kind.
fn is_closed_by_server(error: &sqlx::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "57P01" | "57P02" | "57P03")),
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::UnexpectedEof
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}
