//! The `api` command line: `serve` (the default), `migrate`, `openapi`, and
//! with the `aws` feature `db provision`, `db status` and `db bootstrap`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::{Application, shutdown_signal};
use crate::{db, openapi, telemetry};

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
    /// The RDS instance: create it, report on it, or prepare it for the
    /// service.
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Db(crate::aws::cli::DbCommand),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Openapi => {
                print!("{}", openapi::to_pretty_json());
                Ok(())
            }
            #[cfg(feature = "aws")]
            Command::Db(command) => command.run(load_settings()?).await,
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
                #[cfg(feature = "aws")]
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
