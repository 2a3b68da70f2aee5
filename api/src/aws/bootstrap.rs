//! `api db bootstrap`: once per database, as the master user, create the
//! role the service logs in as (IAM authentication on RDS) and a schema it
//! may use and create in, where its migrations then create the tables.
//! Idempotent.
//!
//! On RDS the master user is not a superuser: it has `CREATEDB` and
//! `CREATEROLE` and is a member of `rds_superuser`. Every statement here is
//! one such a user may run, on PostgreSQL 15 and 16 alike.

use anyhow::Context as _;
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};

use super::connect::{self, rds_target};
use super::rds;
use crate::config::Settings;
use crate::db;

/// The advisory lock that serializes bootstraps (its key, arbitrary but
/// fixed; sqlx's migrations use another).
const BOOTSTRAP_LOCK: i64 = 0x6e6f_7465_735f_6273;

/// The master credentials RDS keeps in Secrets Manager.
#[derive(Deserialize)]
struct MasterSecret {
    username: String,
    password: String,
}

/// What bootstrapping found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The app role could already sign in and use its schema: nothing was
    /// done, and the master secret was not read.
    pub already_done: bool,
    /// The role was created by this run.
    pub created_role: bool,
    /// `rds_iam` was granted (it exists only on RDS).
    pub granted_rds_iam: bool,
}

/// Connects as the master user: through `database.url` when set (local and
/// simple setups), else to `rds.instance_id` with the password RDS manages.
async fn master_options(settings: &Settings) -> anyhow::Result<PgConnectOptions> {
    if let Some(url) = &settings.database.url {
        return db::options_from_url(url);
    }
    let id = settings
        .rds
        .instance_id
        .as_deref()
        .ok_or(rds::RdsError::NoInstanceId)?;
    let target = rds_target(settings, id).await?;
    let arn = target
        .report
        .master_secret_arn
        .context("the instance has no RDS-managed master secret (ManageMasterUserPassword)")?;
    let secret = aws_sdk_secretsmanager::Client::new(&target.config)
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .map_err(|error| match aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&error) {
            Some("AccessDeniedException") => anyhow::anyhow!(
                "permission denied: the caller may not call secretsmanager:GetSecretValue on {arn}"
            ),
            _ => anyhow::anyhow!(
                "reading the master secret failed: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&error)
            ),
        })?;
    let master: MasterSecret = serde_json::from_str(secret.secret_string().unwrap_or_default())
        .context("the master secret is not the JSON RDS writes")?;
    Ok(target
        .options
        .username(&master.username)
        .password(&master.password))
}

/// Whether the app role signs in (as `serve` does: IAM token, verify-full)
/// and may use and create in its schema. `Ok(false)` only when the server
/// refused it (it cannot sign in: SQLSTATE class 28) or its schema is not
/// there or not its own yet: those are what the master user fixes. Any
/// other failure (the network, the RDS API, a token that could not be
/// made) is an error, so a passing fault never leads to the master secret.
async fn app_role_ready(settings: &Settings) -> anyhow::Result<bool> {
    let check = async {
        let connection = connect::connection(settings)
            .await?
            .context("rds.instance_id is not set")?;
        let mut connection = match connection.options.connect().await {
            Ok(connection) => connection,
            Err(error) if is_sign_in_refused(&error) => {
                tracing::info!(%error, "the app role cannot sign in yet: bootstrapping as the master user");
                return Ok(false);
            }
            Err(error) => return Err(error).context("signing in as the app role"),
        };
        let ready: bool = sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT FROM pg_namespace WHERE nspname = current_user) \
             THEN has_schema_privilege(current_user::text, 'USAGE, CREATE') ELSE false END",
        )
        .fetch_one(&mut connection)
        .await?;
        connection.close().await?;
        anyhow::Ok(ready)
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), check)
        .await
        .context("the app role's sign-in did not finish within 30 s")?
        .context("could not tell whether the app role is ready (the master secret was not read)")
}

/// Whether the server refused to let a role sign in (SQLSTATE class 28:
/// no such role, no `rds_iam`, a wrong password or token).
pub fn is_sign_in_refused(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db
        .code()
        .is_some_and(|code| code.starts_with("28")))
}

/// Creates the application role and its schema when missing. On RDS it
/// first tries the app role itself: when that already signs in and may use
/// its schema, it stops there, without reading the master secret (so an
/// instance role that may no longer read it, after the first deploy, still
/// deploys); only a refusal of the app role leads to the master user.
/// Safe on every instance at once: the work as the master user holds an
/// advisory lock.
pub async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let role = &settings.rds.app_user;
    if settings.database.url.is_none() && app_role_ready(settings).await? {
        return Ok(Outcome {
            already_done: true,
            created_role: false,
            granted_rds_iam: false,
        });
    }
    let options = master_options(settings).await?;
    let mut connection = options
        .connect()
        .await
        .context("connecting as the master user")?;
    let mut transaction = connection.begin().await?;
    // Every instance of a deployment bootstraps: one at a time, each seeing
    // what the one before it committed.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *transaction)
        .await
        .context("waiting for another instance's bootstrap")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(role.as_str())
            .fetch_one(&mut *transaction)
            .await?;
    // Names cannot be parameters in these statements: the role's type
    // quotes it (and admits only plain names in the first place).
    let quoted = role.quoted();
    if !exists {
        transaction
            .execute(format!("CREATE ROLE {quoted} LOGIN").as_str())
            .await
            .with_context(|| format!("creating role {role}"))?;
    }
    let has_rds_iam: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')")
            .fetch_one(&mut *transaction)
            .await?;
    if has_rds_iam {
        transaction
            .execute(format!("GRANT rds_iam TO {quoted}").as_str())
            .await
            .with_context(|| format!("granting rds_iam to {role}"))?;
    }
    // A schema named after the role is first on its default search_path
    // ("$user", public): its migrations and queries land there. The master
    // user owns the schema and lets the role use it and create in it.
    // `CREATE SCHEMA … AUTHORIZATION <role>` would need the right to `SET
    // ROLE` to it, which RDS's master (not a superuser) lacks: PostgreSQL 15
    // answers "must be member of role", 16 "must be able to SET ROLE".
    transaction
        .execute(format!("CREATE SCHEMA IF NOT EXISTS {quoted}").as_str())
        .await
        .with_context(|| format!("creating schema {role}"))?;
    transaction
        .execute(format!("GRANT USAGE, CREATE ON SCHEMA {quoted} TO {quoted}").as_str())
        .await
        .with_context(|| format!("granting USAGE and CREATE on schema {role} to {role}"))?;
    transaction.commit().await?;
    connection.close().await?;
    Ok(Outcome {
        already_done: false,
        created_role: !exists,
        granted_rds_iam: has_rds_iam,
    })
}
