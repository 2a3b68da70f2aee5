//! The PostgreSQL connection pool and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tracing::log::LevelFilter;

use crate::config::DatabaseSettings;

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

/// Reads the connection options from the settings.
pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let url = settings.url.as_ref().context(
        "database.url is not set: set DATABASE_URL (or APP_DATABASE__URL), \
         or use `cargo xtask run`, which starts a local PostgreSQL",
    )?;
    // The URL holds the password: never echo it, only say it is malformed.
    let options = PgConnectOptions::from_str(url.expose_secret())
        .map_err(|error| anyhow::anyhow!("database.url is not a valid PostgreSQL URL: {error}"))?;
    Ok(options
        .application_name("api")
        .log_statements(LevelFilter::Debug)
        .log_slow_statements(LevelFilter::Warn, SLOW_STATEMENT))
}

/// Builds the pool without connecting: the service starts (and answers
/// `/health`) even while the database is down, and connects on demand.
pub fn pool(settings: &DatabaseSettings, options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        // sqlx already pings every connection when it returns to the pool
        // and drops broken ones; a second ping before each use doubled the
        // database round trips per request (see the README's Performance
        // section). A connection that broke while idle fails one request
        // with a 503 and is dropped.
        .test_before_acquire(false)
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout())
        .connect_lazy_with(options)
}

/// Applies pending migrations. Safe to run from several instances at once:
/// sqlx holds a PostgreSQL advisory lock while it migrates.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations failed")
}
