//! `deploy`: ships the Elastic Beanstalk bundle. See the crate docs and the
//! README's "Deploy" section.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use deploy::{Deployer, NewEnvironment, OptionSetting, Progress, Target, Timing};

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

    /// New environment: solution stack (default: the newest "64bit Amazon
    /// Linux 2023 … running Go 1" the region offers).
    #[arg(long, env = "DEPLOY_SOLUTION_STACK")]
    solution_stack: Option<String>,
    /// New environment: subdomain of its URL.
    #[arg(long, env = "DEPLOY_CNAME_PREFIX")]
    cname_prefix: Option<String>,
    /// New environment: instance profile (infra/app.yaml's InstanceProfile).
    #[arg(long, env = "DEPLOY_INSTANCE_PROFILE")]
    instance_profile: Option<String>,
    /// New environment: service role (infra/app.yaml's ServiceRole).
    #[arg(long, env = "DEPLOY_SERVICE_ROLE")]
    service_role: Option<String>,
    /// New environment: VPC id.
    #[arg(long, env = "DEPLOY_VPC_ID")]
    vpc_id: Option<String>,
    /// New environment: instance subnets, comma-separated.
    #[arg(long, env = "DEPLOY_INSTANCE_SUBNETS")]
    instance_subnets: Option<String>,
    /// New environment: load balancer subnets, comma-separated.
    #[arg(long, env = "DEPLOY_ELB_SUBNETS")]
    elb_subnets: Option<String>,
    /// New environment: the instances' security group (infra/app.yaml's
    /// InstanceSecurityGroup: the one the database admits).
    #[arg(long, env = "DEPLOY_INSTANCE_SECURITY_GROUP")]
    instance_security_group: Option<String>,
    /// New environment: instance type (x86_64: the binary is x86_64).
    #[arg(long, env = "DEPLOY_INSTANCE_TYPE", default_value = "t3.small")]
    instance_type: String,
    /// New environment: further settings, `namespace:OptionName=value`, repeatable.
    #[arg(long = "option")]
    options: Vec<OptionSetting>,

    /// Seconds between looks at the environment.
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Longest wait for Ready and Green, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// How long a Ready environment may stay short of Green, in seconds.
    #[arg(long, default_value_t = 300)]
    green_grace_secs: u64,
}

impl Cli {
    /// The option settings of a new environment: the flags' settings, the
    /// database's instance id for the service, then `--option`s (which win).
    fn new_environment(&self) -> NewEnvironment {
        let launch = "aws:autoscaling:launchconfiguration";
        let environment = "aws:elasticbeanstalk:environment";
        let vpc = "aws:ec2:vpc";
        let mut settings = vec![
            OptionSetting::new(environment, "EnvironmentType", "LoadBalanced"),
            OptionSetting::new(environment, "LoadBalancerType", "application"),
            OptionSetting::new("aws:ec2:instances", "InstanceTypes", &self.instance_type),
            OptionSetting::new("aws:autoscaling:asg", "MinSize", "2"),
            OptionSetting::new("aws:autoscaling:asg", "MaxSize", "4"),
            OptionSetting::new(launch, "DisableIMDSv1", "true"),
        ];
        let optional = [
            (launch, "IamInstanceProfile", &self.instance_profile),
            (environment, "ServiceRole", &self.service_role),
            (vpc, "VPCId", &self.vpc_id),
            (vpc, "Subnets", &self.instance_subnets),
            (vpc, "ELBSubnets", &self.elb_subnets),
            (launch, "SecurityGroups", &self.instance_security_group),
        ];
        // An unset GitHub variable arrives as an empty string: unset here too.
        for (namespace, name, value) in optional {
            if let Some(value) = value.as_deref().filter(|value| !value.is_empty()) {
                settings.push(OptionSetting::new(namespace, name, value));
            }
        }
        // The service finds the database by this id; the bundle's
        // .ebextensions carry a default that the API-set value overrides.
        if let Ok(id) = std::env::var("APP_RDS__INSTANCE_ID")
            && !id.is_empty()
        {
            settings.push(OptionSetting::new(
                "aws:elasticbeanstalk:application:environment",
                "APP_RDS__INSTANCE_ID",
                id,
            ));
        }
        for option in &self.options {
            settings.retain(|s| (&s.namespace, &s.name) != (&option.namespace, &option.name));
            settings.push(option.clone());
        }
        NewEnvironment {
            solution_stack: self
                .solution_stack
                .clone()
                .filter(|stack| !stack.is_empty()),
            option_settings: settings,
            cname_prefix: self
                .cname_prefix
                .clone()
                .filter(|prefix| !prefix.is_empty()),
        }
    }

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
    let new_environment = cli.new_environment();
    let (eb, s3) = deploy::aws_clients().await?;
    let deployer = Deployer {
        eb,
        s3,
        timing: Timing {
            poll: Duration::from_secs(cli.poll_secs),
            timeout: Duration::from_secs(cli.timeout_secs),
            green_grace: Duration::from_secs(cli.green_grace_secs),
        },
        progress: Progress::new(),
    };

    if cli.dry_run {
        deployer
            .progress
            .say(&format!("dry run: nothing is changed; version {label}"));
        if !cli.skip_provision {
            match deploy::provision::status(&cli.api)? {
                Some(report) => println!(
                    "would use database {} ({})",
                    report["instance_id"].as_str().unwrap_or("?"),
                    report["status"].as_str().unwrap_or("?")
                ),
                None => println!("would create the database (api db provision)"),
            }
        }
        for step in deployer
            .plan(&target, &cli.bundle, &label, &new_environment)
            .await?
        {
            match step.strip_prefix("  ") {
                Some(detail) => println!("      {detail}"),
                None => println!("would {step}"),
            }
        }
        return Ok(());
    }

    if !cli.skip_provision {
        deploy::provision::provision(&cli.api, &deployer.progress)?;
    }
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
    report_to_github(&deployed)?;
    Ok(())
}

/// In GitHub Actions: the URL as a step output and a line in the job summary.
fn report_to_github(deployed: &deploy::Deployed) -> anyhow::Result<()> {
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
