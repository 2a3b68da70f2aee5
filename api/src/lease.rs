//! The connections the request handlers run their statements on.
//!
//! sqlx's pool pings every connection when it comes back (a database round
//! trip per request), because a statement cancelled half-way can leave a
//! connection mid-protocol. Here a connection goes back only when the
//! handler says its statement completed ([`Lease::done`]); a lease dropped
//! any other way (an error, a timeout or a client that went away cancelling
//! the request) closes its connection instead. So no ping is needed, and a
//! request costs the database one round trip, as `pgbench`'s does.
//!
//! New connections use the pool's current connect options, so a renewed
//! RDS IAM token (`db::refresh_tokens`) applies to them as it does to the
//! pool's own.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection is closed instead of reused once it is this old (sqlx's
/// default too): server-side state and memory do not grow forever, and
/// connections move to a replacement server after a failover.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// An idle connection unused this long is closed (sqlx's default too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// An open connection and when it was opened and last returned.
#[derive(Debug)]
struct Idle {
    connection: PgConnection,
    opened: Instant,
    returned: Instant,
}

/// Connections for the request handlers: at most `max` open, each handed
/// to one request at a time.
#[derive(Debug)]
pub struct Connections {
    /// Source of the connect options (kept current under IAM auth).
    pool: PgPool,
    /// Connections waiting for a request, most recently returned last.
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection that may be open.
    permits: Arc<Semaphore>,
    /// Longest wait for a permit and a connection together.
    acquire_timeout: Duration,
}

impl Connections {
    /// Up to `max` connections made with `pool`'s connect options; an
    /// acquire gives up after `acquire_timeout` with `PoolTimedOut`.
    pub fn new(pool: PgPool, max: u32, acquire_timeout: Duration) -> Connections {
        Connections {
            pool,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max as usize)),
            acquire_timeout,
        }
    }

    /// A connection for one statement (or a few): an idle one, or a new
    /// one when none is idle. Fails with `PoolTimedOut` when none frees up
    /// and none can be opened in time, or with the connect error.
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let reused = self.take_idle();
        let (connection, opened) = match reused {
            Some(idle) => (idle.connection, idle.opened),
            None => {
                let options = self.pool.connect_options();
                let connection = tokio::time::timeout_at(deadline, options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                (connection, Instant::now())
            }
        };
        Ok(Lease {
            connection: Some(connection),
            opened,
            home: self,
            _permit: permit,
        })
    }

    /// The most recently returned idle connection that is young enough;
    /// older ones found on the way are closed.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(candidate) = idle.pop() {
            if candidate.returned.elapsed() < IDLE_TIMEOUT
                && candidate.opened.elapsed() < MAX_LIFETIME
            {
                return Some(candidate);
            }
            close(candidate.connection);
        }
        None
    }

    /// Connections currently idle (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Closes a connection politely in the background (a Terminate message,
/// so the server does not log an unexpected disconnect).
fn close(connection: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = connection.close().await;
        });
    }
}

/// One connection lent to one request. Dereferences to the connection;
/// [`Lease::done`] gives it back for reuse, dropping the lease closes it.
#[derive(Debug)]
pub struct Lease<'a> {
    /// Always `Some` until `done` or drop.
    connection: Option<PgConnection>,
    opened: Instant,
    home: &'a Connections,
    _permit: OwnedSemaphorePermit,
}

impl Lease<'_> {
    /// The statement completed and its whole answer was read: the
    /// connection goes back for the next request (unless it is too old).
    pub fn done(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.opened.elapsed() >= MAX_LIFETIME {
            close(connection);
            return;
        }
        self.home
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Idle {
                connection,
                opened: self.opened,
                returned: Instant::now(),
            });
    }
}

impl Drop for Lease<'_> {
    /// Not `done`: the statement failed or was cancelled mid-way, so the
    /// connection's state is unknown. It is dropped, closing the socket.
    fn drop(&mut self) {
        drop(self.connection.take());
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection
            .as_ref()
            .expect("a lease holds its connection until done or dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection
            .as_mut()
            .expect("a lease holds its connection until done or dropped")
    }
}
