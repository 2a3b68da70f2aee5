//! The Elastic Beanstalk calls: application, version, environment, waiting.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_elasticbeanstalk::Client;
use aws_sdk_elasticbeanstalk::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_elasticbeanstalk::primitives::DateTime;
use aws_sdk_elasticbeanstalk::types::{
    ApplicationVersionStatus, ConfigurationOptionSetting, EnvironmentDescription,
    EnvironmentHealth, EnvironmentStatus, EventDescription, EventSeverity, S3Location,
};

use crate::{Deployer, Progress, Target};

/// Platform picked when none is named: the newest Go platform on Amazon
/// Linux 2023 (it runs the prebuilt binary; see the README).
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
}

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

/// Creates the version from the uploaded bundle with processing (so Elastic
/// Beanstalk validates the bundle and its `.ebextensions`) and waits until
/// it is processed. A version left by an earlier run of the same commit is
/// reused.
pub async fn ensure_version(
    deployer: &Deployer,
    target: &Target,
    label: &str,
    key: &str,
) -> anyhow::Result<()> {
    let client = &deployer.eb;
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
        Ok(_) => deployer.progress.say(&format!(
            "created version {label}; Elastic Beanstalk is validating the bundle"
        )),
        Err(error)
            if error
                .message()
                .is_some_and(|m| m.contains("already exists")) =>
        {
            deployer.progress.say(&format!(
                "version {label} exists (an earlier run); reusing it"
            ))
        }
        Err(error) => return Err(failed("CreateApplicationVersion")(error)),
    }
    let started = Instant::now();
    loop {
        let status = version_status(client, &target.application, label)
            .await?
            .with_context(|| format!("version {label} is missing right after its creation"))?;
        match status {
            ApplicationVersionStatus::Processed => {
                deployer
                    .progress
                    .say(&format!("version {label} is processed"));
                return Ok(());
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
            other if started.elapsed() >= deployer.timing.timeout => bail!(
                "version {label} is still {} after {}s",
                other.as_str(),
                started.elapsed().as_secs()
            ),
            _ => tokio::time::sleep(deployer.timing.poll).await,
        }
    }
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

/// Creates the environment serving `label`.
pub async fn create_environment(
    client: &Client,
    target: &Target,
    label: &str,
    new: &NewEnvironment,
    progress: &Progress,
) -> anyhow::Result<()> {
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
    client
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
    Ok(())
}

/// Points the environment at `label`.
pub async fn update_environment(
    client: &Client,
    target: &Target,
    label: &str,
    progress: &Progress,
) -> anyhow::Result<()> {
    client
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
    Ok(())
}

/// Waits until an operation already running on the environment (a deploy
/// started by hand, a configuration change) has ended, so that ours is not
/// refused; returns the settled description.
pub async fn wait_settled(
    deployer: &Deployer,
    target: &Target,
    mut environment: EnvironmentDescription,
) -> anyhow::Result<EnvironmentDescription> {
    let started = Instant::now();
    loop {
        match environment.status() {
            Some(EnvironmentStatus::Ready) => return Ok(environment),
            Some(status @ (EnvironmentStatus::Terminated | EnvironmentStatus::Terminating)) => {
                bail!("environment {} is {}", target.environment, status.as_str())
            }
            status => {
                let status = status.map_or("unknown", EnvironmentStatus::as_str);
                if started.elapsed() >= deployer.timing.timeout {
                    bail!(
                        "environment {} stayed {status} for {}s; another operation is running",
                        target.environment,
                        started.elapsed().as_secs()
                    );
                }
                deployer.progress.say(&format!(
                    "environment {} is {status}; waiting for the running operation to end",
                    target.environment
                ));
            }
        }
        tokio::time::sleep(deployer.timing.poll).await;
        environment = find_environment(&deployer.eb, target)
            .await?
            .with_context(|| format!("environment {} disappeared", target.environment))?;
    }
}

/// The events of the environment since a time, printed once each, oldest
/// first; remembers the first error.
#[derive(Debug, Default)]
struct EventLog {
    seen: HashSet<(i64, u32, String)>,
    first_error: Option<String>,
}

impl EventLog {
    async fn follow(
        &mut self,
        deployer: &Deployer,
        target: &Target,
        since: DateTime,
    ) -> anyhow::Result<()> {
        let found = deployer
            .eb
            .describe_events()
            .application_name(&target.application)
            .environment_name(&target.environment)
            .start_time(since)
            .send()
            .await
            .map_err(failed("DescribeEvents"))?;
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
            deployer
                .progress
                .say(&format!("event {severity}: {message}"));
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
    deployer: &Deployer,
    target: &Target,
    label: &str,
    since: DateTime,
) -> anyhow::Result<EnvironmentDescription> {
    let started = Instant::now();
    let mut events = EventLog::default();
    let mut last = String::new();
    let mut ready_since: Option<Instant> = None;
    loop {
        events.follow(deployer, target, since).await?;
        let environment = find_environment(&deployer.eb, target)
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
            deployer
                .progress
                .say(&format!("environment {}: {now}", target.environment));
            last = now;
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
                return Ok(environment);
            }
            let ready_for = ready_since.get_or_insert_with(Instant::now).elapsed();
            if ready_for >= deployer.timing.green_grace {
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
        if started.elapsed() >= deployer.timing.timeout {
            bail!(
                "environment {} is not Ready and Green after {}s ({last})",
                target.environment,
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(deployer.timing.poll).await;
    }
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
