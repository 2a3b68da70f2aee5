//! `deploy`: ships the Elastic Beanstalk bundle. See the crate docs and
//! docs/deploy.md ("From a terminal", "The deploy program").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use deploy::arch::Arch;
use deploy::deployer::{Deployed, Deployer};
use deploy::eb::{EnvironmentFlags, NewEnvironment};
use deploy::target::Target;
use deploy::timing::Timing;
use ops::progress::Progress;

/// Deploy the bundle to Elastic Beanstalk: provision RDS, upload, create the
/// version (processed), create or update the environment, wait for Ready and
/// Green, smoke-test, and roll back to the previous version on failure.
///
/// AWS credentials come from the SDK's default chain (in GitHub Actions: the
/// OIDC role that aws-actions/configure-aws-credentials assumed). The RDS
/// instance is described by the `APP_RDS__*` settings `api` reads.
#[derive(Debug, Parser)]
#[command(name = "deploy")]
struct Cli {
    /// The bundle (`cargo xtask bundle` writes target/bundle/notes-api-<version>.zip).
    #[arg(long, env = "DEPLOY_BUNDLE")]
    bundle: PathBuf,
    /// Version label; defaults to the bundle's file name without `.zip`.
    #[arg(long, env = "DEPLOY_VERSION_LABEL")]
    version_label: Option<String>,
    /// Elastic Beanstalk application.
    #[arg(long, env = "DEPLOY_APPLICATION", default_value = "notes")]
    application: String,
    /// Elastic Beanstalk environment.
    #[arg(long, env = "DEPLOY_ENVIRONMENT", default_value = "notes-prod")]
    environment: String,
    /// S3 bucket for bundles (infra/app.yaml's BundleBucket output).
    #[arg(long, env = "DEPLOY_BUCKET", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    bucket: String,
    /// The `api` binary that runs `api db provision --json` (the bundle's own).
    #[arg(
        long,
        env = "DEPLOY_API_BINARY",
        default_value = "target/x86_64-unknown-linux-musl/release/api"
    )]
    api: PathBuf,
    /// Skip the RDS step (the instance is managed elsewhere).
    #[arg(long)]
    skip_provision: bool,
    /// Print what would be done, from read-only calls, and change nothing.
    #[arg(long)]
    dry_run: bool,

    /// What a new environment is created with.
    #[command(flatten)]
    environment_flags: EnvironmentFlags,
    /// Deploy a bundle built from a working tree with uncommitted changes
    /// (its label ends in `-dirty` and does not name one commit).
    #[arg(long)]
    allow_dirty: bool,

    /// Seconds between looks at the environment.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Longest wait for Ready and Green (and for each other wait), in
    /// seconds. deploy.yml's credentials last 2 hours: a deploy's wait, a
    /// rollback's two and the first RDS creation fit in that.
    #[arg(long, default_value_t = 1200)]
    timeout_secs: u64,
    /// How long a Ready environment may stay short of Green, in seconds.
    #[arg(long, default_value_t = 300)]
    green_grace_secs: u64,

    /// The instance role (infra/app.yaml's InstanceRoleName output): once a
    /// deploy is Green, it is tagged so that no instance may read the RDS
    /// master secret any more (bootstrap is done).
    #[arg(long, env = "DEPLOY_INSTANCE_ROLE")]
    instance_role: Option<String>,
    /// A web ACL (infra/app.yaml's WebAclArn output) to keep associated with
    /// the environment's load balancer.
    #[arg(long, env = "DEPLOY_WEB_ACL_ARN")]
    web_acl_arn: Option<String>,
}

impl Cli {
    fn label(&self) -> anyhow::Result<String> {
        match &self.version_label {
            Some(label) => Ok(label.clone()),
            None => self
                .bundle
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .context("the bundle path has no file name; pass --version-label"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("deploy: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let label = cli.label()?;
    let target = Target {
        application: cli.application.clone(),
        environment: cli.environment.clone(),
        bucket: cli.bucket.clone(),
    };
    // Read before any AWS call: a bundle that is not one, or instance
    // types that cannot run it, stop here.
    let arch = Arch::of_bundle(&cli.bundle)?;
    let mut new_environment = NewEnvironment::from_flags(&cli.environment_flags, arch);
    new_environment.check_architecture()?;
    let (eb, s3) = deploy::clients::aws_clients().await?;
    let deployer = Deployer {
        eb,
        s3,
        timing: Timing {
            poll: Duration::from_secs(cli.poll_secs),
            timeout: Duration::from_secs(cli.timeout_secs),
            green_grace: Duration::from_secs(cli.green_grace_secs),
        },
        progress: Progress::new("deploy"),
    };

    if cli.dry_run {
        deployer.progress.say(&format!(
            "dry run: nothing is changed; version {label}, for {arch} instances"
        ));
        if !cli.skip_provision {
            match deploy::provision::status(&cli.api)? {
                Some(report) => {
                    println!(
                        "would use database {} ({})",
                        report.instance_id, report.status
                    );
                    println!(
                        "{}",
                        new_environment.check_database_capacity(
                            report.instance_class.as_deref(),
                            cli.environment_flags.db_max_connections,
                        )?
                    );
                }
                None => println!("would create the database (api db provision)"),
            }
        }
        for step in deployer
            .plan(&target, &cli.bundle, &label, &new_environment)
            .await?
        {
            println!("{step}");
        }
        return Ok(());
    }

    anyhow::ensure!(
        cli.allow_dirty || !label.ends_with("-dirty"),
        "version {label} was built from uncommitted changes and names no commit; commit \
         first, or pass --allow-dirty"
    );
    // The cheap checks first: a wrong bucket must not leave a new database.
    deploy::upload::require_bucket(&deployer.s3, &target.bucket).await?;
    if !cli.skip_provision {
        let report = deploy::provision::provision(&cli.api, &deployer.progress)?;
        // A new environment's instances find the database without asking
        // the RDS API at start (which may be slow, throttled or down).
        if let Some(endpoint) = &report.endpoint {
            new_environment.default_property("APP_RDS__ENDPOINT", &endpoint.to_string());
        }
        let checked = new_environment.check_database_capacity(
            report.instance_class.as_deref(),
            cli.environment_flags.db_max_connections,
        )?;
        deployer.progress.say(&checked);
    }
    // The metrics' Environment dimension (.ebextensions cannot name the
    // environment in a property): the dashboard and alarms select by it.
    new_environment.default_property("APP_METRICS__ENVIRONMENT", &target.environment);
    let deployed = deployer
        .deploy(&target, &cli.bundle, &label, &new_environment)
        .await?;
    deployer.progress.say(&format!(
        "{} {} serves {} at {}",
        if deployed.created {
            "created"
        } else {
            "updated"
        },
        target.environment,
        deployed.version_label,
        deployed.url
    ));
    afterwards(&cli, &target, &deployer).await?;
    report_to_github(&deployed)?;
    Ok(())
}

/// Once the environment is Green on the new version: the master secret
/// taken away from the instances, the web ACL kept on the load balancer.
async fn afterwards(cli: &Cli, target: &Target, deployer: &Deployer) -> anyhow::Result<()> {
    // A workflow passes unset variables as empty strings.
    let given = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
    let (instance_role, web_acl_arn) = (given(&cli.instance_role), given(&cli.web_acl_arn));
    if instance_role.is_none() && web_acl_arn.is_none() {
        return Ok(());
    }
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    if let Some(role) = &instance_role {
        let iam = aws_sdk_iam::Client::new(&config);
        deploy::afterwards::withdraw_master_secret(&iam, role, &deployer.progress).await?;
    }
    if let Some(web_acl) = &web_acl_arn {
        let waf = aws_sdk_wafv2::Client::new(&config);
        deploy::afterwards::keep_web_acl(&deployer.eb, &waf, target, web_acl, &deployer.progress)
            .await?;
    }
    Ok(())
}

/// In GitHub Actions: the URL as a step output and a line in the job summary.
fn report_to_github(deployed: &Deployed) -> anyhow::Result<()> {
    use std::io::Write as _;
    let append = |variable: &str, text: String| -> anyhow::Result<()> {
        if let Some(path) = std::env::var_os(variable) {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .with_context(|| format!("opening {variable}"))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("writing {variable}"))?;
        }
        Ok(())
    };
    append("GITHUB_OUTPUT", format!("url={}\n", deployed.url))?;
    append(
        "GITHUB_STEP_SUMMARY",
        format!(
            "Deployed **{}** to {} ({}): Ready, Green, smoke test passed.\n",
            deployed.version_label,
            deployed.url,
            if deployed.created {
                "new environment"
            } else {
                "update"
            }
        ),
    )
}
