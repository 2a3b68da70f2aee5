//! The Elastic Beanstalk calls: application, version, environment, waiting.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_elasticbeanstalk::Client;
use aws_sdk_elasticbeanstalk::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_elasticbeanstalk::operation::RequestId as _;
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::{
    ApplicationVersionStatus, ConfigurationOptionSetting, EnvironmentDescription,
    EnvironmentHealth, EnvironmentStatus, EventDescription, EventSeverity, S3Location,
};

use ops::progress::Progress;
use ops::wait::{self, Look};

use crate::arch::Arch;
use crate::target::Target;
use crate::timing::Timing;

/// Platform picked when none is named: the newest Go platform on Amazon
/// Linux 2023 (it runs the prebuilt binary; see docs/deploy.md).
const PLATFORM_PREFIX: &str = "64bit Amazon Linux 2023 v";
const PLATFORM_SUFFIX: &str = " running Go 1";

/// One option setting of a new environment: `namespace:OptionName=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSetting {
    /// E.g. `aws:autoscaling:launchconfiguration`.
    pub namespace: String,
    /// E.g. `IamInstanceProfile`.
    pub name: String,
    /// The value.
    pub value: String,
}

impl OptionSetting {
    /// A setting from its parts.
    pub fn new(namespace: &str, name: &str, value: impl Into<String>) -> OptionSetting {
        OptionSetting {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            value: value.into(),
        }
    }
}

impl FromStr for OptionSetting {
    type Err = String;

    /// Parses `namespace:OptionName=value`; the namespace holds colons
    /// itself, so the name is what follows the last colon before `=`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "`{text}` is not namespace:OptionName=value \
                 (e.g. aws:ec2:instances:InstanceTypes=t3.small)"
            )
        };
        let (path, value) = text.split_once('=').ok_or_else(invalid)?;
        let (namespace, name) = path.rsplit_once(':').ok_or_else(invalid)?;
        if namespace.is_empty() || name.is_empty() {
            return Err(invalid());
        }
        Ok(OptionSetting::new(namespace, name, value))
    }
}

/// What a new environment is created with (ignored when it exists).
#[derive(Debug, Clone, Default)]
pub struct NewEnvironment {
    /// Solution stack; `None` picks the newest Go platform on Amazon Linux 2023.
    pub solution_stack: Option<String>,
    /// Option settings beyond those the bundle's `.ebextensions` carry.
    pub option_settings: Vec<OptionSetting>,
    /// Subdomain of the environment's URL; `None` lets Elastic Beanstalk choose.
    pub cname_prefix: Option<String>,
    /// The architecture of the bundle's `api`, which every instance type
    /// must have.
    pub arch: Arch,
}

/// The flags (and `DEPLOY_*` variables) a new environment is made from.
/// An empty value counts as unset: an unset GitHub variable arrives as "".
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EnvironmentFlags {
    /// New environment: solution stack (default: the newest "64bit Amazon
    /// Linux 2023 … running Go 1" the region offers).
    #[arg(long, env = "DEPLOY_SOLUTION_STACK")]
    pub solution_stack: Option<String>,
    /// New environment: subdomain of its URL.
    #[arg(long, env = "DEPLOY_CNAME_PREFIX")]
    pub cname_prefix: Option<String>,
    /// New environment: instance profile (infra/app.yaml's InstanceProfile).
    #[arg(long, env = "DEPLOY_INSTANCE_PROFILE")]
    pub instance_profile: Option<String>,
    /// New environment: service role (infra/app.yaml's ServiceRole).
    #[arg(long, env = "DEPLOY_SERVICE_ROLE")]
    pub service_role: Option<String>,
    /// New environment: VPC id.
    #[arg(long, env = "DEPLOY_VPC_ID")]
    pub vpc_id: Option<String>,
    /// New environment: instance subnets, comma-separated.
    #[arg(long, env = "DEPLOY_INSTANCE_SUBNETS")]
    pub instance_subnets: Option<String>,
    /// New environment: load balancer subnets, comma-separated.
    #[arg(long, env = "DEPLOY_ELB_SUBNETS")]
    pub elb_subnets: Option<String>,
    /// New environment: the instances' security group (infra/app.yaml's
    /// InstanceSecurityGroup: the one the database admits).
    #[arg(long, env = "DEPLOY_INSTANCE_SECURITY_GROUP")]
    pub instance_security_group: Option<String>,
    /// New environment: instance type, of the bundle's architecture
    /// (default: t3.small for an x86_64 `api`, t4g.small for an arm64 one).
    #[arg(long, env = "DEPLOY_INSTANCE_TYPE")]
    pub instance_type: Option<String>,
    /// New environment: ACM certificate ARN for an HTTPS listener on 443
    /// (TLS 1.3 policy). Unset: HTTP on 80 only.
    #[arg(long, env = "DEPLOY_CERTIFICATE_ARN")]
    pub certificate_arn: Option<String>,
    /// New environment: the host name the certificate covers; plain HTTP
    /// requests for it are redirected to HTTPS (.ebextensions/07-https.config).
    #[arg(long, env = "DEPLOY_HTTPS_HOST", requires = "certificate_arn")]
    pub https_host: Option<String>,
    /// New environment: the RDS instance the service finds the database by.
    #[arg(long, env = "APP_RDS__INSTANCE_ID")]
    pub rds_instance_id: Option<String>,
    /// New environment: the database endpoint (`host:port`), so that `api
    /// serve` starts without asking the RDS API. Unset: the endpoint the
    /// provisioning step reports.
    #[arg(long, env = "APP_RDS__ENDPOINT")]
    pub rds_endpoint: Option<String>,
    /// New environment: the database role the service signs in as.
    #[arg(long, env = "APP_RDS__APP_USER")]
    pub rds_app_user: Option<String>,
    /// New environment: further settings, `namespace:OptionName=value`,
    /// repeatable; they override the ones above.
    #[arg(long = "option")]
    pub options: Vec<OptionSetting>,
    /// The connections the database takes (its `max_connections`). Unset:
    /// estimated from the RDS instance's class.
    #[arg(long, env = "DEPLOY_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
}

impl NewEnvironment {
    /// A load-balanced environment (application load balancer, 2 to 4
    /// instances, IMDSv2 only) for a bundle of `arch`, with the flags'
    /// settings, then `--option`s.
    pub fn from_flags(flags: &EnvironmentFlags, arch: Arch) -> NewEnvironment {
        let set = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        let instance_type =
            set(&flags.instance_type).unwrap_or_else(|| arch.default_instance_type().to_owned());
        let mut settings = vec![
            OptionSetting::new(ENVIRONMENT, "EnvironmentType", "LoadBalanced"),
            OptionSetting::new(ENVIRONMENT, "LoadBalancerType", "application"),
            OptionSetting::new(INSTANCES, "InstanceTypes", instance_type),
            OptionSetting::new("aws:autoscaling:asg", "MinSize", "2"),
            OptionSetting::new("aws:autoscaling:asg", "MaxSize", "4"),
            // Scale on CPU, which this service spends per request (HTTP,
            // JSON, the store's queue), rather than Elastic Beanstalk's
            // default NetworkOut; MaxSize stays what the database takes
            // (`check_database_capacity`).
            OptionSetting::new(TRIGGER, "MeasureName", "CPUUtilization"),
            OptionSetting::new(TRIGGER, "Statistic", "Average"),
            OptionSetting::new(TRIGGER, "Unit", "Percent"),
            OptionSetting::new(TRIGGER, "UpperThreshold", "70"),
            OptionSetting::new(TRIGGER, "LowerThreshold", "30"),
            OptionSetting::new(LAUNCH, "DisableIMDSv1", "true"),
        ];
        let optional = [
            (LAUNCH, "IamInstanceProfile", &flags.instance_profile),
            (ENVIRONMENT, "ServiceRole", &flags.service_role),
            (VPC, "VPCId", &flags.vpc_id),
            (VPC, "Subnets", &flags.instance_subnets),
            (VPC, "ELBSubnets", &flags.elb_subnets),
            (LAUNCH, "SecurityGroups", &flags.instance_security_group),
            // The bundle's .ebextensions carry defaults for these; values
            // set through the API win over them.
            (PROPERTIES, "APP_RDS__INSTANCE_ID", &flags.rds_instance_id),
            (PROPERTIES, "APP_RDS__APP_USER", &flags.rds_app_user),
            (PROPERTIES, "APP_RDS__ENDPOINT", &flags.rds_endpoint),
            (CUSTOM, "HttpsRedirectHost", &flags.https_host),
        ];
        for (namespace, name, value) in optional {
            if let Some(value) = set(value) {
                settings.push(OptionSetting::new(namespace, name, value));
            }
        }
        if let Some(certificate) = set(&flags.certificate_arn) {
            settings.extend([
                OptionSetting::new(HTTPS_LISTENER, "ListenerEnabled", "true"),
                OptionSetting::new(HTTPS_LISTENER, "Protocol", "HTTPS"),
                OptionSetting::new(HTTPS_LISTENER, "SSLCertificateArns", &certificate),
                OptionSetting::new(HTTPS_LISTENER, "SSLPolicy", TLS_POLICY),
            ]);
        }
        for option in &flags.options {
            settings.retain(|s| (&s.namespace, &s.name) != (&option.namespace, &option.name));
            settings.push(option.clone());
        }
        NewEnvironment {
            solution_stack: set(&flags.solution_stack),
            option_settings: settings,
            cname_prefix: set(&flags.cname_prefix),
            arch,
        }
    }

    /// The value of an option this environment is created with.
    pub fn option(&self, namespace: &str, name: &str) -> Option<&str> {
        self.option_settings
            .iter()
            .rev()
            .find(|s| s.namespace == namespace && s.name == name)
            .map(|s| s.value.as_str())
    }

    /// Refuses an environment whose largest size could open more
    /// connections than the database takes: `MaxSize` instances, each with
    /// `APP_DATABASE__MAX_CONNECTIONS` (the app's default, 4, when unset)
    /// and one to migrate, against `max_connections` (given, else
    /// estimated from `class`). Says what it checked.
    pub fn check_database_capacity(
        &self,
        class: Option<&str>,
        max_connections: Option<u32>,
    ) -> anyhow::Result<String> {
        let number = |namespace: &str, name: &str, default: u32| -> anyhow::Result<u32> {
            self.option(namespace, name).map_or(Ok(default), |value| {
                value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{namespace} {name} = {value:?} is not a number"))
            })
        };
        let instances = number("aws:autoscaling:asg", "MaxSize", 4)?;
        let pool = number(PROPERTIES, "APP_DATABASE__MAX_CONNECTIONS", APP_POOL)?;
        let (max_connections, source) = match (max_connections, class) {
            (Some(given), _) => (given, "--db-max-connections".to_owned()),
            (None, Some(class)) => match ops::capacity::rds_max_connections(class) {
                Some(estimate) => (estimate, format!("estimated for {class}")),
                None => anyhow::bail!(
                    "the database's class {class} is not one whose max_connections this program \
                     knows: give it with --db-max-connections (SHOW max_connections)"
                ),
            },
            (None, None) => {
                return Ok(
                    "database capacity not checked: the database's class is unknown (give \
                     --db-max-connections)"
                        .to_owned(),
                );
            }
        };
        ops::capacity::check(instances, pool, max_connections).map_err(anyhow::Error::msg)?;
        Ok(format!(
            "database capacity: up to {instances} instances x {} connections fit in \
             max_connections {max_connections} ({source})",
            ops::capacity::per_instance(pool)
        ))
    }

    /// Sets the environment property `name` unless a flag or `--option`
    /// already did.
    pub fn default_property(&mut self, name: &str, value: &str) {
        let set = self
            .option_settings
            .iter()
            .any(|s| s.namespace == PROPERTIES && s.name == name);
        if !set {
            self.option_settings
                .push(OptionSetting::new(PROPERTIES, name, value));
        }
    }

    /// Refuses to create an environment without what keeps it working and
    /// in the right network: the instance profile and service role (else
    /// Elastic Beanstalk fails late or falls back to default roles this
    /// project never grants), and the VPC, the instance and load balancer
    /// subnets and the instances' security group (else the environment lands
    /// in the default VPC, or outside the group the database admits, and
    /// `api db bootstrap` times out on the first instance).
    pub fn check(&self) -> anyhow::Result<()> {
        let has = |namespace: &str, name: &str| {
            self.option_settings
                .iter()
                .any(|s| s.namespace == namespace && s.name == name && !s.value.is_empty())
        };
        let required = [
            (
                LAUNCH,
                "IamInstanceProfile",
                "--instance-profile (DEPLOY_INSTANCE_PROFILE)",
            ),
            (
                ENVIRONMENT,
                "ServiceRole",
                "--service-role (DEPLOY_SERVICE_ROLE)",
            ),
            (VPC, "VPCId", "--vpc-id (DEPLOY_VPC_ID)"),
            (
                VPC,
                "Subnets",
                "--instance-subnets (DEPLOY_INSTANCE_SUBNETS)",
            ),
            (VPC, "ELBSubnets", "--elb-subnets (DEPLOY_ELB_SUBNETS)"),
            (
                LAUNCH,
                "SecurityGroups",
                "--instance-security-group (DEPLOY_INSTANCE_SECURITY_GROUP)",
            ),
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|(namespace, name, _)| !has(namespace, name))
            .map(|(_, _, flag)| *flag)
            .collect();
        if !missing.is_empty() {
            bail!(
                "creating the environment needs {}: infra/app.yaml's outputs and parameters \
                 (without them it would land in the default VPC, or outside the security group \
                 the database admits)",
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Refuses instance types that cannot run the bundle's `api`: Elastic
    /// Beanstalk would create the environment and fail on its first
    /// instance, and an environment's architecture cannot be changed
    /// after it is created. The deploy program calls it before any AWS
    /// call, so that a wrong type leaves no new database behind.
    pub fn check_architecture(&self) -> anyhow::Result<()> {
        let types = self.option(INSTANCES, "InstanceTypes").unwrap_or_default();
        let wrong: Vec<String> = types
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .filter_map(|name| {
                let arch = Arch::of_instance_type(name);
                (arch != self.arch).then(|| format!("{name} ({arch})"))
            })
            .collect();
        if !wrong.is_empty() {
            bail!(
                "the bundle's `api` is built for {}, and {} would not run it: give \
                 --instance-type an {} type such as {}",
                self.arch,
                wrong.join(", "),
                self.arch,
                self.arch.default_instance_type()
            );
        }
        Ok(())
    }
}

/// Option namespaces.
const INSTANCES: &str = "aws:ec2:instances";
const LAUNCH: &str = "aws:autoscaling:launchconfiguration";
const ENVIRONMENT: &str = "aws:elasticbeanstalk:environment";
const VPC: &str = "aws:ec2:vpc";
const PROPERTIES: &str = "aws:elasticbeanstalk:application:environment";

/// The app's `database.max_connections` default (api/config/defaults.toml).
const APP_POOL: u32 = 4;

/// The auto scaling trigger's namespace.
const TRIGGER: &str = "aws:autoscaling:trigger";
const CUSTOM: &str = "aws:elasticbeanstalk:customoption";
const HTTPS_LISTENER: &str = "aws:elbv2:listener:443";

/// The HTTPS listener's security policy, as infra/app.yaml sets it: TLS 1.3
/// and 1.2 (the policy AWS recommends). Without it, a listener Elastic
/// Beanstalk makes gets ELBSecurityPolicy-2016-08, with TLS 1.0 and 1.1.
const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09";

/// Now, as the SDK's time.
pub fn now() -> DateTime {
    DateTime::from(std::time::SystemTime::now())
}

/// An SDK error with its action and the service's own words.
fn failed<E>(action: &str) -> impl FnOnce(E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let action = action.to_owned();
    move |error| {
        anyhow!(
            "elasticbeanstalk:{action} failed: {}",
            DisplayErrorContext(&error)
        )
    }
}

/// Whether the application exists.
pub async fn application_exists(client: &Client, application: &str) -> anyhow::Result<bool> {
    let found = client
        .describe_applications()
        .application_names(application)
        .send()
        .await
        .map_err(failed("DescribeApplications"))?;
    Ok(found
        .applications()
        .iter()
        .any(|app| app.application_name() == Some(application)))
}

/// Creates the application unless it exists.
pub async fn ensure_application(
    client: &Client,
    application: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    if application_exists(client, application).await? {
        progress.say(&format!("application {application} exists"));
        return Ok(());
    }
    client
        .create_application()
        .application_name(application)
        .description("Notes and greetings (Rust, axum, PostgreSQL)")
        .send()
        .await
        .map_err(failed("CreateApplication"))?;
    progress.say(&format!("created application {application}"));
    Ok(())
}

/// The status of a version, `None` when there is no such version.
pub async fn version_status(
    client: &Client,
    application: &str,
    label: &str,
) -> anyhow::Result<Option<ApplicationVersionStatus>> {
    let found = client
        .describe_application_versions()
        .application_name(application)
        .version_labels(label)
        .send()
        .await
        .map_err(failed("DescribeApplicationVersions"))?;
    Ok(found
        .application_versions()
        .iter()
        .find(|version| version.version_label() == Some(label))
        .map(|version| {
            version
                .status()
                .cloned()
                .unwrap_or(ApplicationVersionStatus::Unprocessed)
        }))
}

/// Creates the version from the uploaded bundle with processing, so that
/// Elastic Beanstalk validates the bundle and its `.ebextensions` before
/// any instance sees them. A version created meanwhile by another run of
/// the same commit is accepted.
pub async fn create_version(
    client: &Client,
    target: &Target,
    label: &str,
    key: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    let created = client
        .create_application_version()
        .application_name(&target.application)
        .version_label(label)
        .description(format!("bundle s3://{}/{key}", target.bucket))
        .source_bundle(
            S3Location::builder()
                .s3_bucket(&target.bucket)
                .s3_key(key)
                .build(),
        )
        .process(true)
        .send()
        .await;
    match created {
        Ok(_) => progress.say(&format!(
            "created version {label}; Elastic Beanstalk is validating the bundle"
        )),
        Err(error)
            if error
                .message()
                .is_some_and(|m| m.contains("already exists")) =>
        {
            progress.say(&format!("version {label} was created meanwhile; using it"));
        }
        Err(error) => return Err(failed("CreateApplicationVersion")(error)),
    }
    Ok(())
}

/// Waits until the version is processed; a version Elastic Beanstalk
/// refused fails with its reasons (the error events).
pub async fn wait_processed(
    client: &Client,
    target: &Target,
    label: &str,
    timing: &Timing,
    progress: &Progress,
) -> anyhow::Result<()> {
    wait::until(
        timing.patience(),
        async || {
            let status = version_status(client, &target.application, label)
                .await?
                .with_context(|| format!("version {label} is missing right after its creation"))?;
            match status {
                ApplicationVersionStatus::Processed => {
                    progress.say(&format!("version {label} is processed"));
                    Ok(Look::Done(()))
                }
                ApplicationVersionStatus::Failed => {
                    let reasons = error_events(client, &target.application, Some(label)).await;
                    bail!(
                        "Elastic Beanstalk refused the bundle of version {label}{}",
                        reasons
                            .map(|reasons| format!(": {reasons}"))
                            .unwrap_or_default()
                    );
                }
                other => Ok(Look::NotYet(other.as_str().to_owned())),
            }
        },
        |timed_out| {
            anyhow!(
                "version {label} is still {} after {}s",
                timed_out.last,
                timed_out.waited.as_secs()
            )
        },
    )
    .await
}

/// The error events of an application (or one of its versions), newest
/// first, joined; `None` when there are none or they cannot be read.
async fn error_events(client: &Client, application: &str, label: Option<&str>) -> Option<String> {
    let found = client
        .describe_events()
        .application_name(application)
        .set_version_label(label.map(str::to_owned))
        .severity(EventSeverity::Error)
        .max_records(5)
        .send()
        .await
        .ok()?;
    let messages: Vec<&str> = found
        .events()
        .iter()
        .filter_map(EventDescription::message)
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// The environment when it exists and is not terminated or terminating.
pub async fn find_environment(
    client: &Client,
    target: &Target,
) -> anyhow::Result<Option<EnvironmentDescription>> {
    let found = client
        .describe_environments()
        .application_name(&target.application)
        .environment_names(&target.environment)
        .include_deleted(false)
        .send()
        .await
        .map_err(failed("DescribeEnvironments"))?;
    Ok(found
        .environments()
        .iter()
        .find(|environment| {
            environment.environment_name() == Some(target.environment.as_str())
                && environment.application_name() == Some(target.application.as_str())
                && !matches!(
                    environment.status(),
                    Some(EnvironmentStatus::Terminated | EnvironmentStatus::Terminating)
                )
        })
        .cloned())
}

/// The named solution stack, or the newest Go platform on Amazon Linux 2023
/// that the region offers.
pub async fn solution_stack(client: &Client, wanted: Option<&str>) -> anyhow::Result<String> {
    if let Some(wanted) = wanted {
        return Ok(wanted.to_owned());
    }
    let stacks = client
        .list_available_solution_stacks()
        .send()
        .await
        .map_err(failed("ListAvailableSolutionStacks"))?;
    newest_go_platform(stacks.solution_stacks()).with_context(|| {
        format!(
            "the region offers no `{PLATFORM_PREFIX}… {PLATFORM_SUFFIX}` solution stack; \
             name one with --solution-stack"
        )
    })
}

/// The newest `64bit Amazon Linux 2023 vX.Y.Z running Go 1` in `stacks`.
pub fn newest_go_platform(stacks: &[String]) -> Option<String> {
    stacks
        .iter()
        .filter_map(|stack| {
            let version = stack
                .strip_prefix(PLATFORM_PREFIX)?
                .strip_suffix(PLATFORM_SUFFIX)?;
            let parts: Vec<u32> = version
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((parts, stack))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, stack)| stack.clone())
}

/// An environment operation that was started: its events are those with its
/// request id (Elastic Beanstalk's, so no clock of ours is involved); when
/// the answer carried none, those after `since`.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The request id of the `CreateEnvironment` or `UpdateEnvironment` call.
    pub request_id: Option<String>,
    /// Local time just before the call.
    pub since: DateTime,
}

/// Creates the environment serving `label`.
pub async fn create_environment(
    client: &Client,
    target: &Target,
    label: &str,
    new: &NewEnvironment,
    progress: &Progress,
) -> anyhow::Result<Operation> {
    let since = now();
    let stack = solution_stack(client, new.solution_stack.as_deref()).await?;
    let settings = new
        .option_settings
        .iter()
        .map(|setting| {
            ConfigurationOptionSetting::builder()
                .namespace(&setting.namespace)
                .option_name(&setting.name)
                .value(&setting.value)
                .build()
        })
        .collect();
    let created = client
        .create_environment()
        .application_name(&target.application)
        .environment_name(&target.environment)
        .version_label(label)
        .solution_stack_name(&stack)
        .set_cname_prefix(new.cname_prefix.clone())
        .set_option_settings(Some(settings))
        .send()
        .await
        .map_err(failed("CreateEnvironment"))?;
    progress.say(&format!(
        "creating environment {} on {stack} with version {label} \
         (a first launch takes 5 to 15 minutes)",
        target.environment
    ));
    Ok(Operation {
        request_id: created.request_id().map(str::to_owned),
        since,
    })
}

/// Points the environment at `label`.
pub async fn update_environment(
    client: &Client,
    target: &Target,
    label: &str,
    progress: &Progress,
) -> anyhow::Result<Operation> {
    let since = now();
    let updated = client
        .update_environment()
        .application_name(&target.application)
        .environment_name(&target.environment)
        .version_label(label)
        .send()
        .await
        .map_err(failed("UpdateEnvironment"))?;
    progress.say(&format!(
        "deploying version {label} to {}",
        target.environment
    ));
    Ok(Operation {
        request_id: updated.request_id().map(str::to_owned),
        since,
    })
}

/// Waits until an operation already running on the environment (a deploy
/// started by hand, a configuration change) has ended, so that ours is not
/// refused; returns the settled description.
pub async fn wait_settled(
    client: &Client,
    target: &Target,
    environment: EnvironmentDescription,
    timing: &Timing,
    progress: &Progress,
) -> anyhow::Result<EnvironmentDescription> {
    let mut given = Some(environment);
    wait::until(
        timing.patience(),
        async || {
            let environment = match given.take() {
                Some(environment) => environment,
                None => find_environment(client, target)
                    .await?
                    .with_context(|| format!("environment {} disappeared", target.environment))?,
            };
            match environment.status() {
                Some(EnvironmentStatus::Ready) => Ok(Look::Done(environment)),
                Some(status @ (EnvironmentStatus::Terminated | EnvironmentStatus::Terminating)) => {
                    bail!("environment {} is {}", target.environment, status.as_str())
                }
                status => {
                    let status = status.map_or("unknown", EnvironmentStatus::as_str);
                    progress.say(&format!(
                        "environment {} is {status}; waiting for the running operation to end",
                        target.environment
                    ));
                    Ok(Look::NotYet(status.to_owned()))
                }
            }
        },
        |timed_out| {
            anyhow!(
                "environment {} stayed {} for {}s; another operation is running",
                target.environment,
                timed_out.last,
                timed_out.waited.as_secs()
            )
        },
    )
    .await
}

/// The events of the environment since a time, printed once each, oldest
/// first; remembers the first error.
#[derive(Debug, Default)]
struct EventLog {
    /// Events printed already: time and message.
    seen: HashSet<(i64, u32, String)>,
    /// The first ERROR or FATAL event's message.
    first_error: Option<String>,
}

impl EventLog {
    /// Prints the operation's events not printed yet.
    async fn follow(
        &mut self,
        client: &Client,
        target: &Target,
        operation: &Operation,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let request = client
            .describe_events()
            .application_name(&target.application)
            .environment_name(&target.environment);
        let request = match &operation.request_id {
            Some(id) => request.request_id(id),
            None => request.start_time(operation.since),
        };
        let found = request.send().await.map_err(failed("DescribeEvents"))?;
        // Newest first on the wire.
        for event in found.events().iter().rev() {
            let message = event.message().unwrap_or_default().to_owned();
            let at = event
                .event_date()
                .map_or((0, 0), |date| (date.secs(), date.subsec_nanos()));
            if !self.seen.insert((at.0, at.1, message.clone())) {
                continue;
            }
            let severity = event.severity().map_or("INFO", EventSeverity::as_str);
            progress.say(&format!("event {severity}: {message}"));
            let is_error = matches!(
                event.severity(),
                Some(EventSeverity::Error | EventSeverity::Fatal)
            );
            if is_error && self.first_error.is_none() {
                self.first_error = Some(message);
            }
        }
        Ok(())
    }
}

/// Waits until the environment is Ready and Green on `label`, printing its
/// events and status changes; fails on an error event, on Elastic Beanstalk
/// having kept or restored another version, on a Ready environment that is
/// not Green within the grace period, or on the timeout.
pub async fn wait_ready_green(
    client: &Client,
    target: &Target,
    label: &str,
    operation: &Operation,
    timing: &Timing,
    progress: &Progress,
) -> anyhow::Result<EnvironmentDescription> {
    let mut events = EventLog::default();
    let mut last = String::new();
    let mut ready_since: Option<Instant> = None;
    wait::until(
        timing.patience(),
        async || {
            events.follow(client, target, operation, progress).await?;
            let environment = find_environment(client, target)
                .await?
                .with_context(|| format!("environment {} was terminated", target.environment))?;
            let status = environment.status().cloned();
            let health = environment.health().cloned();
            let now = format!(
                "{} / health {} / version {}",
                status.as_ref().map_or("unknown", EnvironmentStatus::as_str),
                health.as_ref().map_or("unknown", EnvironmentHealth::as_str),
                environment.version_label().unwrap_or("none")
            );
            if now != last {
                progress.say(&format!("environment {}: {now}", target.environment));
                last.clone_from(&now);
            }
            if status == Some(EnvironmentStatus::Ready) {
                if let Some(error) = &events.first_error {
                    bail!("Elastic Beanstalk reported an error: {error}");
                }
                if environment.version_label() != Some(label) {
                    bail!(
                        "environment {} is Ready on version {}, not {label}",
                        target.environment,
                        environment.version_label().unwrap_or("none")
                    );
                }
                if health == Some(EnvironmentHealth::Green) {
                    return Ok(Look::Done(environment));
                }
                let ready_for = ready_since.get_or_insert_with(Instant::now).elapsed();
                if ready_for >= timing.green_grace {
                    bail!(
                        "environment {} is Ready but its health is {} after {}s \
                         (see `eb health` or the console's Health page)",
                        target.environment,
                        health.as_ref().map_or("unknown", EnvironmentHealth::as_str),
                        ready_for.as_secs()
                    );
                }
            } else {
                ready_since = None;
            }
            Ok(Look::NotYet(now))
        },
        |timed_out| {
            anyhow!(
                "environment {} is not Ready and Green after {}s ({})",
                target.environment,
                timed_out.waited.as_secs(),
                timed_out.last
            )
        },
    )
    .await
}

/// The environment's URL: its CNAME over HTTP (the load balancer's default
/// listener).
pub fn url(environment: &EnvironmentDescription) -> anyhow::Result<String> {
    let cname = environment
        .cname()
        .filter(|cname| !cname.is_empty())
        .context("the environment has no CNAME")?;
    Ok(format!("http://{cname}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_options(options: &[(&str, &str, &str)]) -> NewEnvironment {
        NewEnvironment::from_flags(
            &EnvironmentFlags {
                options: options
                    .iter()
                    .map(|&(namespace, name, value)| OptionSetting::new(namespace, name, value))
                    .collect(),
                ..EnvironmentFlags::default()
            },
            Arch::X86_64,
        )
    }

    #[test]
    fn instance_types_follow_the_bundle_and_a_mismatch_is_refused() {
        let for_arch = |arch: Arch, instance_type: Option<&str>, options: &[&str]| {
            NewEnvironment::from_flags(
                &EnvironmentFlags {
                    instance_type: instance_type.map(str::to_owned),
                    options: options.iter().map(|o| o.parse().expect("parses")).collect(),
                    ..EnvironmentFlags::default()
                },
                arch,
            )
        };
        let x86 = for_arch(Arch::X86_64, None, &[]);
        assert_eq!(x86.option(INSTANCES, "InstanceTypes"), Some("t3.small"));
        x86.check_architecture().expect("the default fits");
        let arm = for_arch(Arch::Arm64, Some(""), &[]);
        assert_eq!(arm.option(INSTANCES, "InstanceTypes"), Some("t4g.small"));
        arm.check_architecture().expect("the default fits");

        let refused = for_arch(Arch::X86_64, Some("t4g.small"), &[])
            .check_architecture()
            .expect_err("a Graviton type for an x86_64 binary")
            .to_string();
        assert!(
            refused.contains("built for x86_64, and t4g.small (arm64) would not run it"),
            "{refused}"
        );
        assert!(refused.contains("such as t3.small"), "{refused}");
        let refused = for_arch(
            Arch::Arm64,
            None,
            &["aws:ec2:instances:InstanceTypes=t4g.small, m7i.large"],
        )
        .check_architecture()
        .expect_err("one x86_64 type in the list")
        .to_string();
        assert!(refused.contains("m7i.large (x86_64)"), "{refused}");
        assert!(!refused.contains("t4g.small ("), "{refused}");
    }

    #[test]
    fn a_new_environment_scales_on_cpu_up_to_what_the_smallest_database_takes() {
        let environment = with_options(&[]);

        assert_eq!(
            environment.option(TRIGGER, "MeasureName"),
            Some("CPUUtilization")
        );
        let checked = environment
            .check_database_capacity(Some("db.t4g.micro"), None)
            .expect("4 instances of 4 connections fit in a db.t4g.micro");
        assert!(checked.contains("4 instances x 5 connections"), "{checked}");
    }

    #[test]
    fn more_instances_than_the_database_takes_are_refused_before_deploying() {
        let environment = with_options(&[
            ("aws:autoscaling:asg", "MaxSize", "10"),
            (PROPERTIES, "APP_DATABASE__MAX_CONNECTIONS", "8"),
        ]);

        let refused = environment
            .check_database_capacity(Some("db.t4g.micro"), None)
            .expect_err("10 x 9 = 90 connections");
        assert!(
            refused.to_string().contains("may open 90 connections"),
            "{refused}"
        );

        let given = environment.check_database_capacity(None, Some(200));
        assert!(given.is_ok(), "a larger database, named by flag: {given:?}");
        let unknown = environment
            .check_database_capacity(Some("db.x2g.large"), None)
            .expect_err("an unknown class needs the figure");
        assert!(
            unknown.to_string().contains("--db-max-connections"),
            "{unknown}"
        );
    }
}
