//! The RDS API: provisioning the PostgreSQL instance (`api db provision`),
//! reporting on it (`api db status`), describing it, and making IAM
//! authentication tokens.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_rds::Client;
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbInstance, Tag};
use ops::wait::{self, Look, Patience};

pub use ops::db_report::{Endpoint, InstanceReport, StatusReport};

use super::config::{ProvisionSettings, RdsSettings};

/// Tag naming the application on everything this creates.
const APPLICATION_TAG: (&str, &str) = ("application", "notes-api");

/// States that will not turn into `available` without someone acting
/// (the RDS User Guide's "Viewing instance status"): a failure, full
/// storage, a key or capacity problem, an instance stopped or on its way
/// out.
const BAD_STATES: &[&str] = &[
    "failed",
    "storage-full",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "insufficient-capacity",
    "restore-error",
    "stopping",
    "stopped",
    "delete-precheck",
    "deleting",
];

/// What can go wrong talking to RDS, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum RdsError {
    /// No instance configured.
    #[error("rds.instance_id is not set: name the DB instance (APP_RDS__INSTANCE_ID)")]
    NoInstanceId,
    /// No region from settings, environment or profile.
    #[error(
        "no AWS region: set AWS_REGION, rds.region (APP_RDS__REGION) or a region in your AWS profile"
    )]
    NoRegion,
    /// The credential chain found nothing.
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, sign in with `aws sso login` \
         (AWS_PROFILE), or run where an instance or task role applies"
    )]
    NoCredentials,
    /// The caller lacks an IAM permission.
    #[error(
        "permission denied: the caller may not call {action}; grant it (docs/deploy.md#iam-permissions lists the policy)"
    )]
    AccessDenied {
        /// The IAM action that was refused.
        action: &'static str,
    },
    /// The instance does not exist.
    #[error("DB instance {id} does not exist in {region}")]
    NotFound {
        /// The instance identifier.
        id: String,
        /// The region that was asked.
        region: String,
    },
    /// The instance is stuck in a state that needs attention.
    #[error(
        "DB instance {id} is {status}: it needs attention in the RDS console before it can serve"
    )]
    BadState {
        /// The instance identifier.
        id: String,
        /// Its status.
        status: String,
    },
    /// Waiting ran out.
    #[error(
        "DB instance {id} was still {status} after {waited_secs} s: raise rds.wait_timeout_secs or check the RDS console"
    )]
    Timeout {
        /// The instance identifier.
        id: String,
        /// The last status seen.
        status: String,
        /// Seconds waited.
        waited_secs: u64,
    },
    /// The instance has no endpoint yet.
    #[error("DB instance {id} has no endpoint yet (status {status})")]
    NoEndpoint {
        /// The instance identifier.
        id: String,
        /// Its status.
        status: String,
    },
    /// Any other failure of an RDS call.
    #[error("{action} failed: {message}")]
    Api {
        /// The IAM action of the call.
        action: &'static str,
        /// What the service or the SDK said.
        message: String,
    },
    /// Making an IAM authentication token failed.
    #[error("making an RDS IAM authentication token failed: {0}")]
    Token(String),
}

/// Maps an SDK error to one an operator can act on.
fn classify<E, R>(action: &'static str, error: SdkError<E, R>) -> RdsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default().to_owned();
    if matches!(
        code.as_str(),
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "NotAuthorized"
    ) {
        return RdsError::AccessDenied { action };
    }
    let message = match error.message() {
        Some(message) => format!("{code}: {message}"),
        None => DisplayErrorContext(&error).to_string(),
    };
    if message.contains("credentials")
        && (message.contains("no credentials")
            || message.contains("CredentialsNotLoaded")
            || message.contains("failed to load"))
    {
        return RdsError::NoCredentials;
    }
    RdsError::Api { action, message }
}

/// Loads the SDK configuration from the default chains (environment,
/// profile and SSO, instance or task role) and checks a region is known.
pub async fn sdk_config(settings: &RdsSettings) -> Result<SdkConfig, RdsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(RdsError::NoRegion);
    }
    Ok(config)
}

/// The report on `instance`; `created` when this run created it.
pub fn report(instance: &DbInstance, created: bool) -> InstanceReport {
    InstanceReport {
        instance_id: instance
            .db_instance_identifier()
            .unwrap_or_default()
            .to_owned(),
        status: instance
            .db_instance_status()
            .unwrap_or("unknown")
            .to_owned(),
        endpoint: instance.endpoint().and_then(|endpoint| {
            Some(Endpoint {
                host: endpoint.address()?.to_owned(),
                port: u16::try_from(endpoint.port()?).ok()?,
            })
        }),
        db_name: instance.db_name().map(str::to_owned),
        created,
        engine_version: instance.engine_version().map(str::to_owned),
        instance_class: instance.db_instance_class().map(str::to_owned),
        iam_auth: instance
            .iam_database_authentication_enabled()
            .unwrap_or(false),
        publicly_accessible: instance.publicly_accessible().unwrap_or(false),
        storage_encrypted: instance.storage_encrypted().unwrap_or(false),
        master_secret_arn: instance
            .master_user_secret()
            .and_then(|secret| secret.secret_arn())
            .map(str::to_owned),
    }
}

/// The instance, or `None` when it does not exist.
pub async fn describe(client: &Client, id: &str) -> Result<Option<DbInstance>, RdsError> {
    match client
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
    {
        Ok(output) => Ok(output.db_instances().first().cloned()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_db_instance_not_found_fault()) =>
        {
            Ok(None)
        }
        Err(error) => Err(classify("rds:DescribeDBInstances", error)),
    }
}

/// The instance, which must exist.
pub async fn existing(client: &Client, id: &str) -> Result<DbInstance, RdsError> {
    describe(client, id)
        .await?
        .ok_or_else(|| not_found(client, id))
}

/// The error for instance `id` missing from `client`'s region.
pub fn not_found(client: &Client, id: &str) -> RdsError {
    RdsError::NotFound {
        id: id.to_owned(),
        region: region_name(client),
    }
}

/// The region `client` asks, for messages and reports.
pub fn region_name(client: &Client) -> String {
    client
        .config()
        .region()
        .map_or_else(|| "the configured region".to_owned(), ToString::to_string)
}

/// Whether `status` is one that will not become `available` on its own.
pub fn is_bad_state(status: &str) -> bool {
    BAD_STATES.contains(&status) || status.starts_with("incompatible-")
}

/// Refuses states that will not become `available` on their own.
pub fn check_state(instance: &DbInstance) -> Result<(), RdsError> {
    let status = instance.db_instance_status().unwrap_or_default();
    if is_bad_state(status) {
        return Err(RdsError::BadState {
            id: instance
                .db_instance_identifier()
                .unwrap_or_default()
                .to_owned(),
            status: status.to_owned(),
        });
    }
    Ok(())
}

/// Creates the instance with the safe defaults of `settings`: private,
/// encrypted, IAM authentication on, master password managed by RDS.
pub async fn create(
    client: &Client,
    id: &str,
    db_name: &str,
    settings: &ProvisionSettings,
) -> Result<DbInstance, RdsError> {
    let tag = Tag::builder()
        .key(APPLICATION_TAG.0)
        .value(APPLICATION_TAG.1)
        .build();
    let mut request = client
        .create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .engine_version(&settings.engine_version)
        .db_instance_class(&settings.instance_class)
        .db_name(db_name)
        .allocated_storage(settings.storage_gib)
        // Storage autoscaling: RDS grows the volume before it fills (a full
        // one stops every write), up to this ceiling.
        .max_allocated_storage(settings.max_storage_gib)
        .storage_type("gp3")
        .storage_encrypted(true)
        .publicly_accessible(false)
        .enable_iam_database_authentication(true)
        .manage_master_user_password(true)
        .master_username(&settings.master_username)
        .backup_retention_period(settings.backup_retention_days)
        .deletion_protection(settings.deletion_protection)
        .copy_tags_to_snapshot(true)
        .auto_minor_version_upgrade(true)
        .tags(tag);
    if !settings.security_group_ids.is_empty() {
        request = request.set_vpc_security_group_ids(Some(settings.security_group_ids.clone()));
    }
    if let Some(group) = &settings.subnet_group {
        request = request.db_subnet_group_name(group);
    }
    let output = request
        .send()
        .await
        .map_err(|error| classify("rds:CreateDBInstance", error))?;
    output.db_instance().cloned().ok_or_else(|| RdsError::Api {
        action: "rds:CreateDBInstance",
        message: "the answer held no instance".to_owned(),
    })
}

/// Polls until the instance is `available` with an endpoint, calling
/// `progress` with each new status; fails on a bad state or the timeout.
pub async fn wait_available(
    client: &Client,
    id: &str,
    timeout: Duration,
    poll: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<DbInstance, RdsError> {
    let mut last = String::new();
    let patience = Patience {
        timeout,
        every: poll,
    };
    wait::until(
        patience,
        async || {
            let instance = existing(client, id).await?;
            let status = instance
                .db_instance_status()
                .unwrap_or("unknown")
                .to_owned();
            if status != last {
                progress(&status);
                last.clone_from(&status);
            }
            check_state(&instance)?;
            Ok(if is_ready(&instance) {
                Look::Done(instance)
            } else {
                Look::NotYet(status)
            })
        },
        |timed_out| RdsError::Timeout {
            id: id.to_owned(),
            status: timed_out.last,
            waited_secs: timed_out.waited.as_secs(),
        },
    )
    .await
}

/// `api db provision`: describe; create when missing; then, new or not,
/// wait until it is `available` with an endpoint, with the same progress
/// either way. An existing instance is never changed; one still being
/// created (an earlier run was cancelled or gave up waiting) is waited
/// for, since RDS may show no endpoint until then.
pub async fn provision(
    client: &Client,
    settings: &RdsSettings,
    provisioning: &ProvisionSettings,
    progress: &mut dyn FnMut(&str),
) -> Result<InstanceReport, RdsError> {
    let id = settings
        .instance_id
        .as_deref()
        .ok_or(RdsError::NoInstanceId)?;
    let created = match describe(client, id).await? {
        Some(instance) => {
            check_state(&instance)?;
            if is_ready(&instance) {
                return Ok(report(&instance, false));
            }
            false
        }
        None => {
            create(client, id, &settings.db_name, provisioning).await?;
            true
        }
    };
    let timeout = Duration::from_secs(provisioning.wait_timeout_secs);
    let poll = Duration::from_secs(provisioning.poll_interval_secs);
    let instance = wait_available(client, id, timeout, poll, progress).await?;
    Ok(report(&instance, created))
}

/// Whether an instance can be connected to now: `available`, with an
/// endpoint.
fn is_ready(instance: &DbInstance) -> bool {
    instance.db_instance_status() == Some("available")
        && instance
            .endpoint()
            .is_some_and(|endpoint| endpoint.address().is_some())
}

/// An IAM authentication token for `user` at `endpoint` (valid 15 minutes).
pub async fn auth_token(
    config: &SdkConfig,
    endpoint: &Endpoint,
    user: &str,
) -> Result<String, RdsError> {
    let generator_config = aws_sdk_rds::auth_token::Config::builder()
        .hostname(&endpoint.host)
        .port(u64::from(endpoint.port))
        .username(user)
        .build()
        .map_err(|error| RdsError::Token(error.to_string()))?;
    let token = aws_sdk_rds::auth_token::AuthTokenGenerator::new(generator_config)
        .auth_token(config)
        .await
        .map_err(|error| RdsError::Token(error.to_string()))?;
    Ok(token.as_str().to_owned())
}
