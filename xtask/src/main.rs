//! Project tasks behind one entry point: `cargo xtask <task>`.
//!
//! Each task installs or starts what it needs and, when something cannot be
//! installed from here (PostgreSQL server binaries), says exactly what to
//! install.

mod bench;
mod browser;
mod bundle;
mod cargo;
mod clients;
mod compat;
mod contract;
mod dashboard;
mod deploy;
mod dev;
mod lint;
mod migrations;
mod openapi;
mod sqlx_data;
mod test;
mod web;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::status;

use crate::cargo::cargo;

/// Project tasks: run the app, run every test, regenerate committed files.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the app on http://127.0.0.1:5000. Without DATABASE_URL, starts a
    /// private PostgreSQL (data kept in target/postgres/local) first.
    Run,
    /// The api and the web client with live reload: the client on
    /// http://127.0.0.1:8080 (trunk serve), rebuilt and reloaded on every
    /// change; the api on :5000, rebuilt and restarted on every change.
    Dev,
    /// Run every test: Rust tests, the browser journeys in Chromium,
    /// WebKit and Firefox, the scenarios, the rehearsal and the linters.
    /// Without DATABASE_URL, starts a throwaway PostgreSQL.
    ///
    /// Arguments after `--` go to `cargo test`, e.g. `cargo xtask test
    /// --only rust -- store` runs the Rust tests whose names contain
    /// `store`.
    Test {
        /// The engines the browser journeys run in.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = browser::Engine::ALL.to_vec())]
        browsers: Vec<browser::Engine>,
        /// Run only these parts of the suite (all when not given).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<test::Part>,
        /// Arguments for `cargo test`.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Run only the browser journeys (on a throwaway PostgreSQL).
    Browsers {
        /// The engines to run them in.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = browser::Engine::ALL.to_vec())]
        browsers: Vec<browser::Engine>,
    },
    /// Build the web client (release, precompressed) into web/dist.
    Web {
        /// Rebuild even when web/dist looks up to date.
        #[arg(long)]
        force: bool,
    },
    /// Benchmark the release binary against pgbench; prints a table and
    /// writes target/bench/latest.json.
    Bench(bench::Options),
    /// Draw docs/dashboard.png: infra/app.yaml's CloudWatch dashboard from
    /// its definition, with the api's metrics under a local scenario.
    Dashboard,
    /// Build the Elastic Beanstalk bundle into target/bundle/ and check it.
    Bundle,
    /// Do with the bundle what Elastic Beanstalk does, behind real nginx,
    /// with a rolling redeploy under load; part of `test`.
    Rehearse,
    /// Stop PostgreSQL and send SIGTERM under write load; part of `test`.
    Reliability,
    /// Build the bundle and deploy it to Elastic Beanstalk (the steps of
    /// deploy.yml). Arguments after `--` go to the deploy program, e.g.
    /// `cargo xtask deploy -- --bucket my-bundles --dry-run`; see
    /// `cargo run -p deploy -- --help`.
    Deploy {
        /// Arguments for the deploy program.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Rewrite openapi.json from the code.
    Openapi,
    /// Rewrite .sqlx/ (the query metadata that lets builds skip the database).
    SqlxPrepare,
}

fn main() -> std::process::ExitCode {
    match Cli::parse().task.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Task {
    fn run(self) -> anyhow::Result<()> {
        // A Ctrl-C reaches the child processes too; xtask itself stays to
        // stop its PostgreSQL and clean up.
        ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
        if let Err(error) = dotenvy::dotenv()
            && !error.not_found()
        {
            return Err(error).context("reading .env failed");
        }
        match self {
            Task::Run => run_app(),
            Task::Dev => dev::run_dev(),
            Task::Test {
                browsers,
                only,
                cargo_test_args,
            } => test::run_suite(&browsers, &only, &cargo_test_args),
            Task::Browsers { browsers } => browsers_only(&browsers),
            Task::Web { force } => web::build(force),
            Task::Reliability => test::reliability(),
            Task::Bundle => bundle::build().map(|_| ()),
            Task::Dashboard => dashboard::run_dashboard(),
            Task::Rehearse => test::rehearse(),
            Task::Deploy { args } => deploy::deploy(&args),
            Task::Bench(options) => bench::run_bench(&options),
            Task::Openapi => openapi::write(),
            Task::SqlxPrepare => sqlx_data::prepare(),
        }
    }
}

/// Builds the web client and runs the api on :5000, on DATABASE_URL or on
/// the persistent local cluster.
fn run_app() -> anyhow::Result<()> {
    // Build first: a failed or interrupted build leaves no database running.
    web::build(false)?;
    let mut serve = cargo();
    serve.args(["run", "--package", "api", "--", "serve"]);
    let cluster = Cluster::local_unless_database_url()?;
    if let Some(cluster) = &cluster {
        serve.env("DATABASE_URL", cluster.url("postgres"));
    }
    status("building and starting the api on http://127.0.0.1:5000 (Ctrl-C stops it)");
    let served = run(&mut serve);
    if let Some(cluster) = cluster {
        cluster.stop_if_started_here()?;
    }
    served
}

/// Only the browser journeys, in `engines`, on a throwaway cluster.
fn browsers_only(engines: &[browser::Engine]) -> anyhow::Result<()> {
    let cluster = Cluster::throwaway("browsers")?;
    web::build(false)?;
    browser::test(&cluster, engines)
}
