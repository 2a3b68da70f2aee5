//! `api db …`: the RDS instance's commands.

use clap::Subcommand;
use ops::progress::Progress;

use super::{bootstrap, rds};
use crate::config::Settings;

/// `api db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the RDS instance of the `rds` settings unless it exists, wait
    /// until it is available, and print its endpoint. Idempotent.
    Provision {
        /// Print the result as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Once per database, as the master user (password from the secret RDS
    /// manages, or database.url): create the role the service logs in as,
    /// with rds_iam, and a schema it may use and create in. Idempotent; run
    /// it from inside the VPC (an Elastic Beanstalk leader-only container
    /// command).
    Bootstrap,
    /// Report on the RDS instance without changing anything. Without
    /// `--json`, a missing instance is an error; with it, a report saying
    /// `"exists": false`.
    Status {
        /// Print the result as JSON on stdout: `exists`, and `instance` when
        /// it does.
        #[arg(long)]
        json: bool,
    },
}

impl DbCommand {
    /// Runs the command with `settings`.
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        match self {
            DbCommand::Bootstrap => run_bootstrap(&settings).await,
            DbCommand::Provision { json } => {
                // Before any AWS call: a mistake in a provisioning key stops here.
                let provisioning = settings.provisioning()?;
                let client = client(&settings).await?;
                let progress = Progress::new("rds");
                let report = rds::provision(&client, &settings.rds, &provisioning, &mut |status| {
                    progress.say(status);
                })
                .await;
                drop(progress);
                print_report(&report?, json)
            }
            DbCommand::Status { json } => run_status(&settings, json).await,
        }
    }
}

/// The RDS client of the `rds` settings.
async fn client(settings: &Settings) -> anyhow::Result<aws_sdk_rds::Client> {
    let config = rds::sdk_config(&settings.rds).await?;
    Ok(aws_sdk_rds::Client::new(&config))
}

/// `api db bootstrap`, saying what it found and did.
async fn run_bootstrap(settings: &Settings) -> anyhow::Result<()> {
    let outcome = bootstrap::run(settings).await?;
    let role = &settings.rds.app_user;
    if outcome.already_done {
        println!(
            "bootstrap: role {role} already signs in and may use and create in schema \
             {role}: nothing to do (the master secret was not read)"
        );
        return Ok(());
    }
    println!(
        "bootstrap: role {role} {}; rds_iam {}; schema {role} (the master user's) open to \
         it for use and creation",
        if outcome.created_role {
            "created"
        } else {
            "already there"
        },
        if outcome.granted_rds_iam {
            "granted"
        } else {
            "not present (not RDS): skipped"
        }
    );
    Ok(())
}

/// `api db status`: with `--json` a missing instance is a report saying
/// `"exists": false`, without it an error.
async fn run_status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let client = client(settings).await?;
    let id = settings
        .rds
        .instance_id
        .as_deref()
        .ok_or(rds::RdsError::NoInstanceId)?;
    let instance = rds::describe(&client, id)
        .await?
        .map(|instance| rds::report(&instance, false));
    if json {
        let report = rds::StatusReport::new(id, &rds::region_name(&client), instance);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match instance {
        Some(report) => print_report(&report, false),
        None => Err(rds::not_found(&client, id).into()),
    }
}

/// Prints an instance report for people, or as JSON for pipelines.
fn print_report(report: &rds::InstanceReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let endpoint = report.endpoint.as_ref().map_or_else(
        || "(none yet)".to_owned(),
        |endpoint| format!("{}:{}", endpoint.host, endpoint.port),
    );
    println!("instance   {}", report.instance_id);
    println!("status     {}", report.status);
    println!("endpoint   {endpoint}");
    println!("database   {}", report.db_name.as_deref().unwrap_or("-"));
    println!(
        "created    {}",
        if report.created {
            "yes, by this run"
        } else {
            "no, it existed"
        }
    );
    println!(
        "security   IAM auth {}, public {}, encrypted {}, master secret {}",
        report.iam_auth,
        report.publicly_accessible,
        report.storage_encrypted,
        report.master_secret_arn.as_deref().unwrap_or("-")
    );
    Ok(())
}
