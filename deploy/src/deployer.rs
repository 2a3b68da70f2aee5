//! The deploy itself: upload, version, environment, wait, smoke test, and
//! rollback on failure after an update; and its dry run's plan.

use anyhow::Context as _;
use aws_sdk_elasticbeanstalk::types::EnvironmentHealth;
use ops::progress::Progress;

use crate::eb::{self, NewEnvironment};
use crate::target::Target;
use crate::timing::Timing;
use crate::{smoke, upload};

/// One line of a dry run's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Something the deploy would do.
    Do(String),
    /// A detail of the step before (an option setting).
    Detail(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Do(step) => write!(f, "would {step}"),
            Step::Detail(detail) => write!(f, "      {detail}"),
        }
    }
}

/// A finished deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The version now serving.
    pub version_label: String,
    /// The environment's URL (its CNAME, over HTTP).
    pub url: String,
    /// Whether this run created the environment.
    pub created: bool,
}

/// Runs the deploy of one uploaded-or-not bundle: upload, version,
/// environment, wait, smoke test, and rollback on failure after an update.
#[derive(Debug)]
pub struct Deployer {
    /// Elastic Beanstalk client.
    pub eb: aws_sdk_elasticbeanstalk::Client,
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
    /// Waiting.
    pub timing: Timing,
    /// Progress lines.
    pub progress: Progress,
}

impl Deployer {
    /// Deploys `bundle` as `label` to `target`; `new_environment` is used
    /// only when the environment does not exist yet.
    pub async fn deploy(
        &self,
        target: &Target,
        bundle: &std::path::Path,
        label: &str,
        new_environment: &NewEnvironment,
    ) -> anyhow::Result<Deployed> {
        let (eb, timing, progress) = (&self.eb, &self.timing, &self.progress);
        eb::ensure_application(eb, &target.application, progress).await?;
        // A version's bundle is never replaced: the version points at the
        // S3 key, and a later rollback to it must deploy what it held.
        if eb::version_status(eb, &target.application, label)
            .await?
            .is_some()
        {
            progress.say(&format!(
                "version {label} exists (an earlier run); deploying it as it is"
            ));
        } else {
            let key = target.key(label);
            upload::put_bundle(&self.s3, &target.bucket, &key, bundle, progress).await?;
            eb::create_version(eb, target, label, &key, progress).await?;
        }
        eb::wait_processed(eb, target, label, timing, progress).await?;

        let (operation, previous, created) = match eb::find_environment(eb, target).await? {
            None => {
                new_environment.check()?;
                let operation =
                    eb::create_environment(eb, target, label, new_environment, progress).await?;
                (operation, None, true)
            }
            Some(environment) => {
                let environment =
                    eb::wait_settled(eb, target, environment, timing, progress).await?;
                if environment.health() != Some(&EnvironmentHealth::Green) {
                    progress.say(&format!(
                        "warning: {} is {} before this deploy; a rollback returns to that",
                        target.environment,
                        environment
                            .health()
                            .map_or("unknown", EnvironmentHealth::as_str)
                    ));
                }
                let previous = environment.version_label().map(str::to_owned);
                let operation = eb::update_environment(eb, target, label, progress).await?;
                (operation, previous, false)
            }
        };

        let rollout = async {
            let environment =
                eb::wait_ready_green(eb, target, label, &operation, timing, progress).await?;
            let url = eb::url(&environment)?;
            smoke::check(&url, label, timing.green_grace, progress).await?;
            anyhow::Ok(url)
        };
        match rollout.await {
            Ok(url) => Ok(Deployed {
                version_label: label.to_owned(),
                url,
                created,
            }),
            Err(failure) => Err(self.roll_back(target, label, previous, failure).await),
        }
    }

    /// What `deploy` would do, from read-only calls only (`--dry-run`).
    pub async fn plan(
        &self,
        target: &Target,
        bundle: &std::path::Path,
        label: &str,
        new_environment: &NewEnvironment,
    ) -> anyhow::Result<Vec<Step>> {
        let mut plan = Vec::new();
        let size = std::fs::metadata(bundle)
            .with_context(|| format!("reading the bundle {}", bundle.display()))?
            .len();
        upload::require_bucket(&self.s3, &target.bucket).await?;
        plan.push(Step::Do(format!(
            "upload {} ({size} bytes) to s3://{}/{}",
            bundle.display(),
            target.bucket,
            target.key(label)
        )));
        let version = if !eb::application_exists(&self.eb, &target.application).await? {
            plan.push(Step::Do(format!(
                "create application {}",
                target.application
            )));
            None
        } else {
            plan.push(Step::Do(format!("use application {}", target.application)));
            eb::version_status(&self.eb, &target.application, label).await?
        };
        plan.push(Step::Do(match version {
            Some(status) => format!("reuse version {label} (exists, {})", status.as_str()),
            None => format!("create version {label} with processing (validates .ebextensions)"),
        }));
        match eb::find_environment(&self.eb, target).await? {
            None => {
                // The deploy itself would stop here: so does its dry run.
                new_environment.check()?;
                let stack =
                    eb::solution_stack(&self.eb, new_environment.solution_stack.as_deref()).await?;
                plan.push(Step::Do(format!(
                    "create environment {} on \"{stack}\" with version {label} and {} option settings:",
                    target.environment,
                    new_environment.option_settings.len()
                )));
                plan.extend(new_environment.option_settings.iter().map(|setting| {
                    Step::Detail(format!(
                        "{}:{}={}",
                        setting.namespace, setting.name, setting.value
                    ))
                }));
                plan.push(Step::Do(
                    "wait until it is Ready and Green, then smoke-test its URL".to_owned(),
                ));
            }
            Some(environment) => {
                let previous = environment.version_label().unwrap_or("none");
                plan.push(Step::Do(format!(
                    "update environment {} ({}, health {}) from version {previous} to {label}",
                    target.environment,
                    environment.status().map_or("unknown", |s| s.as_str()),
                    environment.health().map_or("unknown", |h| h.as_str()),
                )));
                plan.push(Step::Do(format!(
                    "wait until it is Ready and Green, smoke-test {}, and on failure \
                     redeploy {previous}",
                    eb::url(&environment).unwrap_or_else(|_| "its URL".to_owned())
                )));
            }
        }
        Ok(plan)
    }

    /// After a failed rollout: redeploys `previous` (when there is one and
    /// it differs), waits for it, and returns the error to fail with.
    async fn roll_back(
        &self,
        target: &Target,
        label: &str,
        previous: Option<String>,
        failure: anyhow::Error,
    ) -> anyhow::Error {
        let Some(previous) = previous.filter(|previous| previous != label) else {
            return failure.context(format!(
                "deploying {label} failed and there is no previous version to roll back to"
            ));
        };
        self.progress.say(&format!(
            "deploying {label} failed: {failure:#}; rolling back to {previous}"
        ));
        let (eb, timing, progress) = (&self.eb, &self.timing, &self.progress);
        let restored = async {
            let environment = eb::find_environment(eb, target)
                .await?
                .context("the environment disappeared")?;
            eb::wait_settled(eb, target, environment, timing, progress).await?;
            let operation = eb::update_environment(eb, target, &previous, progress).await?;
            eb::wait_ready_green(eb, target, &previous, &operation, timing, progress).await
        };
        match restored.await {
            Ok(_) => failure.context(format!(
                "deploying {label} failed; rolled back to {previous}, which is Ready and Green"
            )),
            Err(rollback) => failure.context(format!(
                "deploying {label} failed, and rolling back to {previous} failed too: {rollback:#}"
            )),
        }
    }
}
