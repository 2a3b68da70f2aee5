//! The `api` command line: `serve` (the default), `migrate`, `openapi` and
//! `db provision`, `db status` and `db bootstrap`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use domain::progress::Progress;

use crate::config::Settings;
use crate::startup::{Application, shutdown_signal};
use crate::{bootstrap, db, openapi, rds, telemetry};

/// Notes and greetings API: an axum service on PostgreSQL.
///
/// Configuration comes from built-in defaults, an optional TOML file
/// (APP_CONFIG_FILE, default ./App.toml) with per-profile tables, and the
/// environment (APP_PROFILE, APP_<SECTION>__<KEY>, DATABASE_URL, PORT). A
/// `.env` file in the working directory is read when present.
#[derive(Debug, Parser)]
#[command(name = "api", version)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Migrates first when
    /// database.migrate_on_start is true.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document (JSON) and exit.
    Openapi,
    /// The RDS instance: create it, or report on it.
    #[command(subcommand)]
    Db(DbCommand),
}

/// `api db …`.
#[derive(Debug, Subcommand)]
enum DbCommand {
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

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Openapi => {
                print!("{}", openapi::to_pretty_json());
                Ok(())
            }
            Command::Db(command) => run_db(command, load_settings()?).await,
            Command::Migrate => {
                let settings = load_settings()?;
                let _logs = telemetry::init(&settings.log)?;
                let connection = db::connection(&settings).await?;
                db::migrate_with(&connection.options).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Serve => {
                let settings = load_settings()?;
                let _logs = telemetry::init(&settings.log)?;
                if let Err(error) = settings.provisioning() {
                    // Only `api db provision` reads these keys: say so, serve on.
                    tracing::warn!(
                        "{error}; `api db provision` would refuse it, serve does not read it"
                    );
                }
                let profile = settings.profile;
                let application = Application::build(settings).await?;
                let address = application
                    .local_addr()
                    .context("the listener has no address")?;
                tracing::info!(%profile, "listening on http://{address}");
                application.run_until(shutdown_signal()).await
            }
        }
    }
}

/// `api db …`.
async fn run_db(command: DbCommand, settings: Settings) -> anyhow::Result<()> {
    let json = match command {
        DbCommand::Bootstrap => {
            let outcome = bootstrap::run(&settings).await?;
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
            return Ok(());
        }
        DbCommand::Provision { json } | DbCommand::Status { json } => json,
    };
    // Before any AWS call: a mistake in a provisioning key stops here.
    let provisioning = match command {
        DbCommand::Provision { .. } => Some(settings.provisioning()?),
        _ => None,
    };
    let config = rds::sdk_config(&settings.rds).await?;
    let client = aws_sdk_rds::Client::new(&config);
    if let Some(provisioning) = provisioning {
        let progress = Progress::new("rds");
        let report = rds::provision(&client, &settings.rds, &provisioning, &mut |status| {
            progress.say(status)
        })
        .await;
        drop(progress);
        return print_report(&report?, json);
    }
    let id = settings
        .rds
        .instance_id
        .as_deref()
        .ok_or(rds::RdsError::NoInstanceId)?;
    let instance = rds::describe(&client, id)
        .await?
        .map(|instance| rds::report(&instance, false));
    if json {
        // A missing instance is a report (`"exists": false`), not a failure.
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

/// Reads `.env` (when present in the working folder), then the layered
/// settings.
fn load_settings() -> anyhow::Result<Settings> {
    // The working folder only: `dotenvy::dotenv()` also looks in every
    // parent, and a parent the service's user may not enter stopped it
    // ("reading .env failed: Permission denied"), as in the rehearsal when
    // its instances lived under /root.
    if let Err(error) = dotenvy::from_path(".env")
        && !error.not_found()
    {
        return Err(error).context("reading .env failed");
    }
    Ok(Settings::load()?)
}
