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

/// How the service reaches PostgreSQL.
#[derive(Debug)]
pub struct Connection {
    /// Options for new connections, with the current password.
    pub options: PgConnectOptions,
    /// Set when that password expires (an RDS IAM token): how to make a
    /// fresh one.
    pub renewal: Option<Renewal>,
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
/// `renewal.every`, which the store's new connections use; open ones (and
/// the work on them) are untouched. A failure is retried in 30 s.
pub fn renew(
    store: Store,
    options: PgConnectOptions,
    renewal: Renewal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = renewal.every;
        loop {
            tokio::time::sleep(wait).await;
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

/// Applies pending migrations. Safe to run from several instances at once:
/// sqlx holds a PostgreSQL advisory lock while it migrates.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations failed")
}

/// Opens one connection with `options`, migrates and closes it.
pub async fn migrate_with(options: &PgConnectOptions) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .context("connecting to the database to migrate")?;
    let migrated = migrate(&pool).await;
    pool.close().await;
    migrated
}
