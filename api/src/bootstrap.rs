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

use crate::config::Settings;
use crate::{db, rds};

/// The master credentials RDS keeps in Secrets Manager.
#[derive(Deserialize)]
struct MasterSecret {
    username: String,
    password: String,
}

/// What bootstrapping found and did.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
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
    let target = db::rds_target(settings, id).await?;
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

/// Creates the application role and its schema when missing.
pub async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let role = &settings.rds.app_user;
    let options = master_options(settings).await?;
    let mut connection = options
        .connect()
        .await
        .context("connecting as the master user")?;
    let mut transaction = connection.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *transaction)
            .await?;
    // `role` is checked to be a plain identifier when the settings load, so
    // quoting it is enough.
    if !exists {
        transaction
            .execute(format!("CREATE ROLE \"{role}\" LOGIN").as_str())
            .await
            .with_context(|| format!("creating role {role}"))?;
    }
    let has_rds_iam: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')")
            .fetch_one(&mut *transaction)
            .await?;
    if has_rds_iam {
        transaction
            .execute(format!("GRANT rds_iam TO \"{role}\"").as_str())
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
        .execute(format!("CREATE SCHEMA IF NOT EXISTS \"{role}\"").as_str())
        .await
        .with_context(|| format!("creating schema {role}"))?;
    transaction
        .execute(format!("GRANT USAGE, CREATE ON SCHEMA \"{role}\" TO \"{role}\"").as_str())
        .await
        .with_context(|| format!("granting USAGE and CREATE on schema {role} to {role}"))?;
    transaction.commit().await?;
    connection.close().await?;
    Ok(Outcome {
        created_role: !exists,
        granted_rds_iam: has_rds_iam,
    })
}
