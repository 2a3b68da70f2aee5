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
mod lint;
mod sqlx_data;
mod web;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use testkit::{project_root, run, status, step, which};

use testkit::postgres::Cluster;
use testkit::tls::TestCertificates;

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
        only: Vec<Part>,
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
            } => test(&browsers, &only, &cargo_test_args),
            Task::Browsers { browsers } => browsers_only(&browsers),
            Task::Web { force } => web::build(force),
            Task::Reliability => reliability(),
            Task::Bundle => bundle::build().map(|_| ()),
            Task::Rehearse => rehearse(),
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

/// A part of `cargo xtask test`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// `.sqlx/` matches the queries.
    Sqlx,
    /// The workspace's Rust tests (`cargo test`), RDS and deploy against moto.
    Rust,
    /// The user journeys in the browsers `--browsers` names.
    Browsers,
    /// schemathesis against the running service, from `openapi.json`.
    Contract,
    /// PostgreSQL stopped under write load; SIGTERM under write load.
    Reliability,
    /// The Elastic Beanstalk rehearsal behind real nginx.
    Rehearsal,
    /// The deploy program's dry run against moto.
    Deploy,
    /// actionlint, zizmor, cfn-lint.
    Lint,
    /// cargo deny: licenses, bans, sources.
    Deny,
}

impl Part {
    /// The whole suite.
    const ALL: &[Part] = &[
        Part::Sqlx,
        Part::Rust,
        Part::Browsers,
        Part::Contract,
        Part::Reliability,
        Part::Rehearsal,
        Part::Deploy,
        Part::Lint,
        Part::Deny,
    ];
}

fn test(
    engines: &[browser::Engine],
    only: &[Part],
    cargo_test_args: &[String],
) -> anyhow::Result<()> {
    let parts = if only.is_empty() { Part::ALL } else { only };
    let runs = |part: Part| parts.contains(&part);
    if !cargo_test_args.is_empty() && !runs(Part::Rust) {
        bail!("arguments after `--` go to `cargo test`, which `--only` leaves out: add `rust`");
    }
    // One throwaway cluster, started when the first part that needs it
    // runs; the Rust tests use DATABASE_URL instead when it is given.
    let mut database = None;
    if runs(Part::Sqlx) {
        step("checking that .sqlx/ matches the queries");
        sqlx_data::check(&started(&mut database)?.0)?;
    }
    if !parts
        .iter()
        .all(|part| matches!(part, Part::Sqlx | Part::Lint | Part::Deny))
    {
        web::build(false)?;
    }
    if runs(Part::Rust) {
        let (cluster, certificates) = started(&mut database)?;
        let database_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| cluster.url("postgres"));
        let moto = testkit::moto::Moto::start()?;
        step("running the workspace's tests");
        // The RDS and deploy tests talk to moto, never to AWS.
        run(moto.aim(
            cargo()
                .args(["test", "--workspace", "--locked"])
                .args(including_ignored(cargo_test_args))
                // The reliability scenarios and the rehearsal are parts of
                // their own.
                .args(["--skip", SCENARIOS, "--skip", REHEARSAL])
                .env("DATABASE_URL", &database_url)
                // The TLS tests: a server certificate for `localhost` from this CA.
                .env("TEST_TLS_CA", &certificates.ca)
                .env("TEST_TLS_OTHER_CA", &certificates.other_ca),
        ))?;
    }
    if runs(Part::Browsers) {
        browser::test(&started(&mut database)?.0, engines)?;
    }
    if runs(Part::Contract) {
        step("fuzzing the running service from openapi.json (schemathesis)");
        contract::fuzz(&started(&mut database)?.0)?;
    }
    if runs(Part::Reliability) {
        reliability()?;
    }
    if runs(Part::Rehearsal) {
        rehearse()?;
    }
    if runs(Part::Deploy) {
        deploy::dry_run_against_moto()?;
    }
    if runs(Part::Lint) {
        step("linting the workflows (actionlint, zizmor), infra/ (cfn-lint) and buildspec.yml");
        lint::workflows()?;
        lint::infra()?;
    }
    if runs(Part::Deny) {
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
    }
    Ok(())
}

/// Where the reliability scenarios' test names start
/// (`api/tests/reliability.rs`): the Rust part skips them, their own part
/// runs only them.
const SCENARIOS: &str = "scenarios::";

/// Where the rehearsal's test name starts (`rehearsal/tests/rehearsal.rs`).
const REHEARSAL: &str = "elastic_beanstalk::";

/// `cargo test`'s arguments with `--include-ignored` added for the test
/// binaries: the tests that need moto, TLS or password checks are
/// `#[ignore]`d so that a plain `cargo test` skips them, naming this command;
/// here their services run.
fn including_ignored(cargo_test_args: &[String]) -> Vec<String> {
    let mut args = cargo_test_args.to_vec();
    match args.iter().position(|arg| arg == "--") {
        Some(separator) => args.insert(separator + 1, "--include-ignored".to_owned()),
        None => args.extend(["--".to_owned(), "--include-ignored".to_owned()]),
    }
    args
}

/// The test suite's throwaway cluster, which accepts TLS with a certificate
/// from the test CA; started on first use.
fn started(
    database: &mut Option<(Cluster, TestCertificates)>,
) -> anyhow::Result<&(Cluster, TestCertificates)> {
    let running = match database.take() {
        Some(running) => running,
        None => {
            let certificates = testkit::tls::make()?;
            (
                Cluster::throwaway_with("test", Some(&certificates))?,
                certificates,
            )
        }
    };
    Ok(database.insert(running))
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

/// The reliability scenarios (`api/tests/reliability.rs`), one at a time,
/// with their progress and figures shown.
fn reliability() -> anyhow::Result<()> {
    step(
        "reliability: PostgreSQL stopped and restarted under write load; SIGTERM under write load",
    );
    run(&mut only_ignored(SCENARIOS))
}

/// The Elastic Beanstalk rehearsal (`rehearsal/tests/rehearsal.rs`) on the
/// bundle built here.
fn rehearse() -> anyhow::Result<()> {
    let bundle = bundle::build()?;
    step(
        "the Elastic Beanstalk rehearsal: the bundle on the model of the platform, the load balancer and RDS",
    );
    // Absolute: the test runs in its crate's folder.
    let bundle = std::path::absolute(&bundle).context("the bundle's path")?;
    run(only_ignored(REHEARSAL).env("REHEARSAL_BUNDLE", &bundle))
}

/// The Rust part's `cargo test`, running only the tests under `filter`,
/// ignored ones included, one at a time, with their progress shown.
fn only_ignored(filter: &str) -> Command {
    // Exactly the Rust part's build: `--package api` or `--test reliability`
    // resolve features differently (the other crates' dev-dependencies drop
    // out) and rebuilt nearly everything (2 min 12 s and 3 min 28 s here).
    let filtered = ["--", "--nocapture", "--test-threads", "1", filter].map(str::to_owned);
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--locked"])
        .args(including_ignored(&filtered));
    command
}

/// Builds the debug `api` binary and returns its path.
fn debug_api() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--package", "api", "--locked", "--quiet"]))?;
    Ok(testkit::target_dir().join("debug/api"))
}

#[cfg(test)]
mod tests {
    use super::including_ignored;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|&arg| arg.to_owned()).collect()
    }

    #[test]
    fn ignored_tests_are_included_wherever_the_test_binaries_arguments_start() {
        assert_eq!(including_ignored(&[]), args(&["--", "--include-ignored"]));
        assert_eq!(
            including_ignored(&args(&["store"])),
            args(&["store", "--", "--include-ignored"])
        );
        assert_eq!(
            including_ignored(&args(&["-p", "api", "--", "rds", "tls"])),
            args(&["-p", "api", "--", "--include-ignored", "rds", "tls"])
        );
    }
}
