//! Connecting to an RDS instance: finding its endpoint (from `rds.endpoint`
//! or the RDS API), verify-full TLS against the RDS CA bundle, and a
//! password that is an IAM token (renewed) or a fixed one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_config::SdkConfig;
use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::config::DatabaseAuth;
use super::rds::{self, Endpoint, InstanceReport};
use crate::config::Settings;
use crate::db::{Connection, Renewal};

/// Tokens live 15 minutes; renewing every 10 leaves room for retries.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(10 * 60);

/// An RDS instance ready to be connected to, by the service or as its master
/// user: its SDK configuration, its report, and options holding its endpoint,
/// database and verify-full TLS against `database.ssl_root_cert` (but no user).
#[derive(Debug)]
pub struct RdsTarget {
    /// Credentials and region the instance was found with.
    pub config: SdkConfig,
    /// What `DescribeDBInstances` said of it.
    pub report: InstanceReport,
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
        options,
    })
}

/// Describes instance `id`: the SDK configuration it was found with, its
/// report, and its endpoint (an error when it has none yet).
async fn describe_target(
    settings: &Settings,
    id: &str,
) -> anyhow::Result<(SdkConfig, InstanceReport, Endpoint)> {
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
) -> anyhow::Result<(SdkConfig, Endpoint, PgConnectOptions)> {
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

/// How the service connects to the instance of `rds.instance_id` (`None`
/// when it is not set): as `rds.app_user`, with an IAM token renewed every
/// [`TOKEN_REFRESH`], or with `rds.password`.
pub async fn connection(settings: &Settings) -> anyhow::Result<Option<Connection>> {
    let Some(id) = &settings.rds.instance_id else {
        return Ok(None);
    };
    let (config, endpoint, options) = serving_target(settings, id).await?;
    let user = settings.rds.app_user.as_str().to_owned();
    let options = options.username(&user);
    let connection = match settings.rds.auth {
        DatabaseAuth::Iam => {
            let token = rds::auth_token(&config, &endpoint, &user).await?;
            Connection {
                options: options.password(&token),
                renewal: Some(iam_renewal(config, endpoint, user, TOKEN_REFRESH)),
            }
        }
        DatabaseAuth::Password => {
            let password = settings.rds.password.as_ref().context(
                "rds.auth is \"password\" but rds.password (APP_RDS__PASSWORD) is not set",
            )?;
            Connection {
                options: options.password(password.expose_secret()),
                renewal: None,
            }
        }
    };
    Ok(Some(connection))
}

/// Fresh IAM tokens for `user` at `endpoint`, signed with `config`'s
/// credentials, every `every`.
pub fn iam_renewal(
    config: SdkConfig,
    endpoint: Endpoint,
    user: String,
    every: Duration,
) -> Renewal {
    let signing = Arc::new((config, endpoint, user));
    Renewal {
        every,
        password: Arc::new(move || {
            let signing = Arc::clone(&signing);
            Box::pin(async move {
                let (config, endpoint, user) = &*signing;
                Ok(rds::auth_token(config, endpoint, user).await?)
            })
        }),
    }
}
