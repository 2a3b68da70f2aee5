//! The `api` command line: `serve` (the default), `migrate` and `openapi`.

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
}

impl Cli {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Openapi => {
                print!("{}", openapi::to_pretty_json());
                Ok(())
            }
            Command::Migrate => {
                let settings = load_settings()?;
                telemetry::init(&settings.log)?;
                let options = db::connect_options(&settings.database)?;
                let pool = db::pool(&settings.database, options);
                db::migrate(&pool).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Serve => {
                let settings = load_settings()?;
                telemetry::init(&settings.log)?;
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

/// Reads `.env` (when present), then the layered settings.
fn load_settings() -> anyhow::Result<Settings> {
    if let Err(error) = dotenvy::dotenv()
        && !error.not_found()
    {
        return Err(error).context("reading .env failed");
    }
    Ok(Settings::load()?)
}
