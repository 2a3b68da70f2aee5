//! Where and how to connect to PostgreSQL (a URL, or an RDS instance with
//! IAM tokens), renewing those tokens, and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tracing::log::LevelFilter;

use crate::config::{DatabaseAuth, Settings};
use crate::rds::{self, Endpoint, InstanceReport};
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
    /// Options for new connections (with the current token, under IAM).
    pub options: PgConnectOptions,
    /// Set when the password is an IAM token that must be renewed.
    pub iam: Option<IamAuth>,
}

/// What renewing an IAM token needs.
#[derive(Debug, Clone)]
pub struct IamAuth {
    /// Credentials and region.
    config: aws_config::SdkConfig,
    /// The instance's endpoint.
    endpoint: Endpoint,
    /// The database user.
    user: String,
}

impl IamAuth {
    /// Token material for `user` at `endpoint`, signed with `config`.
    pub fn new(config: aws_config::SdkConfig, endpoint: Endpoint, user: String) -> IamAuth {
        IamAuth {
            config,
            endpoint,
            user,
        }
    }
}

/// Tokens live 15 minutes; renewing every 10 leaves room for retries.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(10 * 60);

/// Parses `database.url`. The URL holds the password: never echo it, only
/// say it is malformed.
pub fn options_from_url(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url.expose_secret())
        .map_err(|error| anyhow::anyhow!("database.url is not a valid PostgreSQL URL: {error}"))
}

/// An RDS instance ready to be connected to, by the service or as its master
/// user: its SDK configuration, its report, and options holding its endpoint,
/// database and verify-full TLS against `database.ssl_root_cert` (but no user).
#[derive(Debug)]
pub struct RdsTarget {
    /// Credentials and region the instance was found with.
    pub config: aws_config::SdkConfig,
    /// What `DescribeDBInstances` said of it.
    pub report: InstanceReport,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Host, port, database and TLS; the caller adds user and password.
    pub options: PgConnectOptions,
}

/// Describes instance `id` and checks it can be connected to: a usable
/// state, an endpoint, and a CA bundle to verify it with.
pub async fn rds_target(settings: &Settings, id: &str) -> anyhow::Result<RdsTarget> {
    let (config, report, endpoint) = describe_target(settings, id).await?;
    if rds::is_bad_state(&report.status) {
        return Err(rds::RdsError::BadState {
            id: id.to_owned(),
            status: report.status.clone(),
        }
        .into());
    }
    let database = report.db_name.as_deref().unwrap_or(&settings.rds.db_name);
    let options = verify_full(settings, &endpoint, database)?;
    Ok(RdsTarget {
        config,
        report,
        endpoint,
        options,
    })
}

/// Describes instance `id`: the SDK configuration it was found with, its
/// report, and its endpoint (an error when it has none yet).
async fn describe_target(
    settings: &Settings,
    id: &str,
) -> anyhow::Result<(aws_config::SdkConfig, InstanceReport, Endpoint)> {
    let config = rds::sdk_config(&settings.rds).await?;
    let instance = rds::existing(&aws_sdk_rds::Client::new(&config), id).await?;
    let report = rds::report(&instance, false);
    let endpoint = report
        .endpoint
        .clone()
        .ok_or_else(|| rds::RdsError::NoEndpoint {
            id: id.to_owned(),
            status: report.status.clone(),
        })?;
    Ok((config, report, endpoint))
}

/// Options for `endpoint` and `database`, TLS verified against
/// `database.ssl_root_cert` (required: never an unverified connection to
/// RDS).
fn verify_full(
    settings: &Settings,
    endpoint: &Endpoint,
    database: &str,
) -> anyhow::Result<PgConnectOptions> {
    let Some(ca) = &settings.database.ssl_root_cert else {
        anyhow::bail!(
            "database.ssl_root_cert is not set: point it (APP_DATABASE__SSL_ROOT_CERT) at the RDS CA \
             bundle, so the connection to {} is verified",
            endpoint.host
        );
    };
    Ok(PgConnectOptions::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .database(database)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca))
}

/// Where `serve` and `migrate` connect for RDS instance `id`: the endpoint
/// `rds.endpoint` names, asking the RDS API nothing (so a service starts
/// whatever the control plane says, or whether it answers at all); else the
/// instance's described endpoint, where a state such as `storage-full` is
/// only a warning: the database may still answer, and reads go on.
async fn serving_target(
    settings: &Settings,
    id: &str,
) -> anyhow::Result<(aws_config::SdkConfig, Endpoint, PgConnectOptions)> {
    if let Some(text) = &settings.rds.endpoint {
        let endpoint = Endpoint::parse(text).map_err(|why| {
            anyhow::anyhow!("rds.endpoint (APP_RDS__ENDPOINT) {why}: expected host:port")
        })?;
        let config = rds::sdk_config(&settings.rds).await?;
        let options = verify_full(settings, &endpoint, &settings.rds.db_name)?;
        return Ok((config, endpoint, options));
    }
    let (config, report, endpoint) = describe_target(settings, id).await.map_err(|error| {
        error.context(
            "finding the database through the RDS API failed (set rds.endpoint, \
             APP_RDS__ENDPOINT, to start without it)",
        )
    })?;
    if report.status != "available" {
        tracing::warn!(
            instance = id,
            status = %report.status,
            "the RDS instance is not available; connecting to its endpoint anyway"
        );
    }
    let database = report.db_name.as_deref().unwrap_or(&settings.rds.db_name);
    let options = verify_full(settings, &endpoint, database)?;
    Ok((config, endpoint, options))
}

/// Works out where and how to connect: `database.url` when set, else the
/// endpoint of `rds.instance_id` with an IAM token (or a password).
pub async fn connection(settings: &Settings) -> anyhow::Result<Connection> {
    let database = &settings.database;
    let (options, iam) = if let Some(url) = &database.url {
        let options = options_from_url(url)?;
        let options = match &database.ssl_root_cert {
            Some(path) => options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(path),
            None => options,
        };
        (options, None)
    } else if let Some(id) = &settings.rds.instance_id {
        let (config, endpoint, options) = serving_target(settings, id).await?;
        let user = settings.rds.app_user.as_str().to_owned();
        let base = options.username(&user);
        match database.auth {
            DatabaseAuth::Iam => {
                let token = rds::auth_token(&config, &endpoint, &user).await?;
                let iam = IamAuth::new(config, endpoint, user);
                (base.password(&token), Some(iam))
            }
            DatabaseAuth::Password => {
                let password = database.password.as_ref().context(
                    "database.auth is \"password\" but database.password (APP_DATABASE__PASSWORD) is not set",
                )?;
                (base.password(password.expose_secret()), None)
            }
        }
    } else {
        anyhow::bail!(
            "database.url is not set: set DATABASE_URL (or APP_DATABASE__URL), or rds.instance_id \
             (APP_RDS__INSTANCE_ID) to connect to an RDS instance, or use `cargo xtask run`, which \
             starts a local PostgreSQL"
        );
    };
    Ok(Connection {
        options: options
            .application_name("api")
            .log_statements(LevelFilter::Debug)
            .log_slow_statements(LevelFilter::Warn, SLOW_STATEMENT),
        iam,
    })
}

/// Renews the password (an IAM token) in the background: `token` makes a
/// fresh one every `every`, and the store's new connections use it; open
/// ones (and the work on them) are untouched.
pub fn refresh_credentials<F, Fut>(
    store: Store,
    options: PgConnectOptions,
    token: F,
    every: Duration,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<String>> + Send,
{
    tokio::spawn(async move {
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            match token().await {
                Ok(token) => {
                    store.set_connect_options(options.clone().password(&token));
                    tracing::debug!("renewed the database credentials");
                    wait = every;
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "renewing the database credentials failed; retrying in 30 s");
                    wait = Duration::from_secs(30);
                }
            }
        }
    })
}

/// Renews the RDS IAM token for `store` every `every` (the service uses
/// [`TOKEN_REFRESH`]).
pub fn refresh_tokens(
    store: Store,
    options: PgConnectOptions,
    iam: IamAuth,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    refresh_credentials(
        store,
        options,
        move || {
            let iam = iam.clone();
            async move { Ok(rds::auth_token(&iam.config, &iam.endpoint, &iam.user).await?) }
        },
        every,
    )
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
