//! Project tasks behind one entry point: `cargo xtask <task>`.
//!
//! Each task installs or starts what it needs and, when something cannot be
//! installed from here (PostgreSQL server binaries), says exactly what to
//! install.

mod bench;
mod browser;
mod bundle;
mod contract;
mod deploy;
mod dev;
mod ebextensions;
mod lint;
mod load;
mod postgres;
mod rehearse;
mod reliability;
mod service;
mod sqlx_data;
mod tls;
mod web;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::postgres::Cluster;

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
    Test {
        /// The engines the browser journeys run in.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = browser::Engine::ALL.to_vec())]
        browsers: Vec<browser::Engine>,
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
            Task::Test { browsers } => test(&browsers),
            Task::Browsers { browsers } => browsers_only(&browsers),
            Task::Web { force } => web::build(force),
            Task::Reliability => reliability::run(),
            Task::Bundle => bundle::build().map(|_| ()),
            Task::Rehearse => rehearse::run_rehearsal(),
            Task::Deploy { args } => deploy::deploy(&args),
            Task::Bench(options) => bench::run_bench(&options),
            Task::Openapi => openapi(),
            Task::SqlxPrepare => sqlx_data::prepare(),
        }
    }
}

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

/// The cargo-deny release `deny.toml` was written for.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn browsers_only(engines: &[browser::Engine]) -> anyhow::Result<()> {
    let cluster = Cluster::throwaway("browsers")?;
    web::build(false)?;
    browser::test(&cluster, engines)
}

fn test(engines: &[browser::Engine]) -> anyhow::Result<()> {
    // An own throwaway cluster serves the tests unless DATABASE_URL names
    // another server; the .sqlx/ check always uses an own one.
    let given_url = std::env::var("DATABASE_URL").ok();
    let certificates = tls::make()?;
    let cluster = Cluster::throwaway_with("test", Some(&certificates))?;
    let database_url = given_url.unwrap_or_else(|| cluster.url("postgres"));
    let moto = contract::Moto::start()?;
    step("checking that .sqlx/ matches the queries");
    sqlx_data::check(&cluster)?;
    web::build(false)?;
    step("running the workspace's tests");
    // The RDS and deploy tests talk to moto, never to AWS.
    run(moto.aim(
        cargo()
            .args(["test", "--workspace", "--locked"])
            .env("DATABASE_URL", &database_url)
            // The TLS tests: a server certificate for `localhost` from this CA.
            .env("TEST_TLS_CA", &certificates.ca)
            .env("TEST_TLS_OTHER_CA", &certificates.other_ca),
    ))?;
    drop(moto);
    browser::test(&cluster, engines)?;
    step("fuzzing the running service from openapi.json (schemathesis)");
    contract::fuzz(&cluster)?;
    reliability::run()?;
    rehearse::run_rehearsal()?;
    deploy::dry_run_against_moto()?;
    step("linting the workflows (actionlint, zizmor), infra/ (cfn-lint) and buildspec.yml");
    lint::workflows()?;
    lint::infra()?;
    step("checking licenses, bans and sources of the dependencies (cargo deny)");
    web::ensure_cargo_tool(
        "cargo-deny",
        "cargo-deny",
        CARGO_DENY_VERSION,
        &["--locked"],
    )?;
    run(cargo().args([
        "deny",
        "--log-level",
        "error",
        "check",
        "licenses",
        "bans",
        "sources",
    ]))?;
    Ok(())
}

fn openapi() -> anyhow::Result<()> {
    let output = cargo()
        .args(["run", "--quiet", "--package", "api", "--", "openapi"])
        .output()
        .context("running `api openapi`")?;
    if !output.status.success() {
        bail!(
            "`api openapi` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = project_root().join("openapi.json");
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    status(&format!("wrote {}", path.display()));
    Ok(())
}

/// The repository root (the parent of this crate).
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// `cargo`, as the one that runs us, in the repository root.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(project_root());
    // `cargo run` describes xtask's own package in the environment; build
    // scripts that watch those variables (ring's does) would otherwise
    // rebuild on every switch between `cargo xtask` and plain `cargo`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let described = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ];
        if described.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Runs a command to completion; a non-zero exit is an error naming it.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let exit = command
        .status()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if !exit.success() {
        bail!(
            "{:?} {:?} failed ({exit})",
            command.get_program(),
            command.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The first `program` on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// A progress line for the person at the terminal.
fn status(message: &str) {
    eprintln!("xtask: {message}");
}

/// The start of a named step in a long task.
fn step(message: &str) {
    eprintln!("\nxtask: ==> {message}");
}
