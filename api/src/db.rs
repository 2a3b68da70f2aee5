//! Where and how the service connects to PostgreSQL: a URL, or (with the
//! `aws` feature) an RDS instance, whose short-lived passwords are renewed
//! here; and the embedded migrations.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tracing::log::LevelFilter;

use crate::config::Settings;
use crate::store::Store;

/// The migrations in `migrations/`, compiled into the binary.
///
/// `ignore_missing` lets an older binary start against a database that a
/// newer one has already migrated (during a rolling deploy, say): migrations
/// are backward compatible by rule (`migrations/README.md`).
pub static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations")
};

/// Statements slower than this are logged as warnings.
const SLOW_STATEMENT: Duration = Duration::from_millis(500);

/// How the service reaches PostgreSQL. Its `Debug` names the server and
/// the user, never the password (an IAM token is as good as one for 15
/// minutes).
pub struct Connection {
    /// Options for new connections, with the current password.
    pub options: PgConnectOptions,
    /// Set when that password expires (an RDS IAM token): how to make a
    /// fresh one.
    pub renewal: Option<Renewal>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("username", &self.options.get_username())
            .field("renewal", &self.renewal)
            .finish_non_exhaustive()
    }
}

/// A fresh password, made on demand.
pub type Password = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>>;

/// A password that expires, and how to make the next one.
#[derive(Clone)]
pub struct Renewal {
    /// How often a fresh password is made (well within its life).
    pub every: Duration,
    /// Makes one.
    pub password: Arc<dyn Fn() -> Password + Send + Sync>,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Parses `database.url`. The URL holds the password: never echo it, only
/// say it is malformed.
pub fn options_from_url(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url.expose_secret())
        .map_err(|error| anyhow::anyhow!("database.url is not a valid PostgreSQL URL: {error}"))
}

/// Works out where and how to connect: `database.url` when set, else (with
/// the `aws` feature) the RDS instance of `rds.instance_id`.
pub async fn connection(settings: &Settings) -> anyhow::Result<Connection> {
    let database = &settings.database;
    let connection = if let Some(url) = &database.url {
        let options = options_from_url(url)?;
        let options = match &database.ssl_root_cert {
            Some(path) => options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(path),
            None => options,
        };
        Connection {
            options,
            renewal: None,
        }
    } else {
        from_elsewhere(settings).await?
    };
    Ok(Connection {
        options: connection
            .options
            .application_name("api")
            .log_statements(LevelFilter::Debug)
            .log_slow_statements(LevelFilter::Warn, SLOW_STATEMENT),
        ..connection
    })
}

/// Without `database.url`: the RDS instance of `rds.instance_id`.
#[cfg(feature = "aws")]
async fn from_elsewhere(settings: &Settings) -> anyhow::Result<Connection> {
    match crate::aws::connection(settings).await? {
        Some(connection) => Ok(connection),
        None => anyhow::bail!(
            "database.url is not set: set DATABASE_URL (or APP_DATABASE__URL), or rds.instance_id \
             (APP_RDS__INSTANCE_ID) to connect to an RDS instance, or use `cargo xtask run`, which \
             starts a local PostgreSQL"
        ),
    }
}

/// Without `database.url`, in a build without AWS: nothing to go on.
#[cfg(not(feature = "aws"))]
async fn from_elsewhere(_: &Settings) -> anyhow::Result<Connection> {
    anyhow::bail!(
        "database.url is not set: set DATABASE_URL (or APP_DATABASE__URL), or use `cargo xtask \
         run`, which starts a local PostgreSQL (this build has no `aws` feature, so it cannot \
         find an RDS instance)"
    )
}

/// Renews the password in the background: a fresh one every
/// `renewal.every`, and at once when the server refuses a new connection's
/// credentials (at most every [`RENEW_AT_MOST_EVERY`]); the store's new
/// connections use it, open ones (and the work on them) are untouched. A
/// failure is retried in 30 s.
pub fn renew(
    store: Store,
    options: PgConnectOptions,
    renewal: Renewal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = renewal.every;
        loop {
            let renewed = tokio::time::Instant::now();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = store.credentials_refused() => {
                    tracing::info!("the database refused the credentials; renewing them now");
                    tokio::time::sleep_until(renewed + RENEW_AT_MOST_EVERY).await;
                }
            }
            match (renewal.password)().await {
                Ok(password) => {
                    store.set_connect_options(options.clone().password(&password));
                    tracing::debug!("renewed the database credentials");
                    wait = renewal.every;
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "renewing the database credentials failed; retrying in 30 s");
                    wait = Duration::from_secs(30);
                }
            }
        }
    })
}

/// The shortest time between two renewals a refusal asks for: a password
/// that is refused at once again is not asked for in a loop.
pub const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(5);

/// How long a migration waits for a lock before it gives up: the longest
/// it holds up the statements queued behind it (an `ALTER TABLE` waiting
/// for a long transaction blocks every read of the table that comes after
/// it). Then it tries again, up to [`MIGRATION_ATTEMPTS`] times.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries a migration makes when locks keep it waiting (about three minutes
/// with the lock timeout and the pause between).
pub const MIGRATION_ATTEMPTS: u32 = 30;

/// The pause before a migration tries again.
const MIGRATION_PAUSE: Duration = Duration::from_secs(1);

/// Applies pending migrations to the database of `pool`. Safe to run
/// from several instances at once: sqlx holds a PostgreSQL advisory lock
/// while it migrates, and an instance that waits for it (or any lock)
/// longer than [`MIGRATION_LOCK_TIMEOUT`] tries again later.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    migrate_with(&pool.connect_options()).await
}

/// Opens one connection with `options`, migrates and closes it.
pub async fn migrate_with(options: &PgConnectOptions) -> anyhow::Result<()> {
    migrate_patiently(
        &MIGRATOR,
        options,
        MIGRATION_LOCK_TIMEOUT,
        MIGRATION_ATTEMPTS,
    )
    .await
}

/// Runs `migrator` on one connection made with `options` and
/// `lock_timeout`, trying again (`attempts` in all) while it gives up
/// waiting for a lock.
pub async fn migrate_patiently(
    migrator: &Migrator,
    options: &PgConnectOptions,
    lock_timeout: Duration,
    attempts: u32,
) -> anyhow::Result<()> {
    let options = options
        .clone()
        .options([("lock_timeout", lock_timeout.as_millis())]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("connecting to the database to migrate")?;
    let mut attempt = 1;
    let migrated = loop {
        match migrator.run(&pool).await {
            Ok(()) => break Ok(()),
            Err(error) if is_lock_timeout(&error) && attempt < attempts => {
                tracing::warn!(
                    attempt,
                    attempts,
                    "a migration waited longer than {lock_timeout:?} for a lock; trying again in \
                     {MIGRATION_PAUSE:?}"
                );
                attempt += 1;
                tokio::time::sleep(MIGRATION_PAUSE).await;
            }
            Err(error) => {
                let context = if is_lock_timeout(&error) {
                    format!(
                        "applying database migrations failed: still waiting for a lock after \
                         {attempts} tries (a long transaction holds the table?)"
                    )
                } else {
                    "applying database migrations failed".to_owned()
                };
                break Err(anyhow::Error::new(error).context(context));
            }
        }
    };
    pool.close().await;
    migrated
}

/// Whether a migration failed waiting for a lock (SQLSTATE 55P03).
fn is_lock_timeout(error: &sqlx::migrate::MigrateError) -> bool {
    is_lock_timeout_chain(error)
}

/// Whether an error, or any error it was caused by, is a lock timeout.
fn is_lock_timeout_chain(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(sqlx::Error::Database(db)) = error.downcast_ref::<sqlx::Error>()
            && db.code().as_deref() == Some("55P03")
        {
            return true;
        }
        cause = error.source();
    }
    false
}
