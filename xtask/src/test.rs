//! `cargo xtask test`: the whole suite in parts (the Rust tests, the
//! browser journeys, the contract, the reliability scenarios, the
//! rehearsal, the deploy's dry run, the linters, cargo deny), each starting
//! what it needs, on one throwaway PostgreSQL shared by the parts that need
//! a database.

use std::process::Command;

use anyhow::{Context as _, bail};
use testkit::moto::Moto;
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::step;
use testkit::tls::TestCertificates;

use crate::cargo::cargo;
use crate::{browser, bundle, clients, compat, contract, deploy, lint, migrations, sqlx_data, web};

/// The cargo-deny release `deny.toml` was written for.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Where the reliability scenarios' test names start
/// (`api/tests/reliability.rs`): the Rust part skips them, their own part
/// runs only them.
const SCENARIOS: &str = "scenarios::";

/// Where the rehearsal's test name starts (`rehearsal/tests/rehearsal.rs`).
const REHEARSAL: &str = "elastic_beanstalk::";

/// A part of `cargo xtask test`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// `.sqlx/` matches the queries.
    Sqlx,
    /// `openapi.json` breaks no client of the base version.
    Compat,
    /// The workspace's Rust tests (`cargo test`), RDS and deploy against moto.
    Rust,
    /// The user journeys in the browsers `--browsers` names.
    Browsers,
    /// schemathesis against the running service, from `openapi.json`.
    Contract,
    /// The TypeScript client: generated types current, type-checked, tested
    /// against the running service.
    Clients,
    /// The migrations added since the base version linted (squawk); the
    /// base version's binary serving its contract on the migrated schema.
    Schema,
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
        Part::Compat,
        Part::Rust,
        Part::Browsers,
        Part::Contract,
        Part::Clients,
        Part::Schema,
        Part::Reliability,
        Part::Rehearsal,
        Part::Deploy,
        Part::Lint,
        Part::Deny,
    ];
}

/// Runs the parts in `only` (the whole suite when it is empty) in their
/// order, the browser journeys in `engines`; `cargo_test_args` go to the
/// Rust part's `cargo test`.
pub(crate) fn run_suite(
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
    if runs(Part::Compat) {
        step("checking that openapi.json breaks no client of the base version");
        compat::check()?;
    }
    if !parts
        .iter()
        .all(|part| matches!(part, Part::Sqlx | Part::Compat | Part::Lint | Part::Deny))
    {
        web::build(false)?;
    }
    if runs(Part::Rust) {
        rust_tests(started(&mut database)?, cargo_test_args)?;
    }
    if runs(Part::Browsers) {
        browser::test(&started(&mut database)?.0, engines)?;
    }
    if runs(Part::Contract) {
        step("fuzzing the running service from openapi.json (schemathesis)");
        contract::fuzz(&started(&mut database)?.0)?;
    }
    if runs(Part::Clients) {
        clients::test(&started(&mut database)?.0)?;
    }
    if runs(Part::Schema) {
        migrations::check(&started(&mut database)?.0)?;
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
        deny()?;
    }
    Ok(())
}

/// The workspace's tests (`cargo test` with `cargo_test_args`) on
/// `database`'s cluster, or on DATABASE_URL when it is given, with moto
/// and the test certificates; the reliability scenarios and the rehearsal
/// are left to their own parts.
fn rust_tests(
    database: &(Cluster, TestCertificates),
    cargo_test_args: &[String],
) -> anyhow::Result<()> {
    let (cluster, certificates) = database;
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| cluster.url("postgres"));
    let moto = Moto::start()?;
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
    step("the api without its aws feature: the tests that need only PostgreSQL");
    run(cargo()
        .args([
            "test",
            "--package",
            "api",
            "--no-default-features",
            "--locked",
        ])
        .args(including_ignored(cargo_test_args))
        .args(["--skip", SCENARIOS])
        .env("DATABASE_URL", &database_url)
        .env("TEST_TLS_CA", &certificates.ca)
        .env("TEST_TLS_OTHER_CA", &certificates.other_ca))
}

/// The dependencies' licenses, bans and sources against `deny.toml`
/// (cargo deny, installed at [`CARGO_DENY_VERSION`] when missing).
fn deny() -> anyhow::Result<()> {
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
    ]))
}

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

/// The reliability scenarios (`api/tests/reliability.rs`), one at a time,
/// with their progress and figures shown.
pub(crate) fn reliability() -> anyhow::Result<()> {
    step(
        "reliability: PostgreSQL stopped and restarted under write load; SIGTERM under write load",
    );
    run(&mut only_ignored(SCENARIOS))
}

/// The Elastic Beanstalk rehearsal (`rehearsal/tests/rehearsal.rs`) on the
/// bundle built here.
pub(crate) fn rehearse() -> anyhow::Result<()> {
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
    // Exactly the Rust part's build, so that nothing is built twice:
    // `--package api` or `--test reliability` resolve features differently
    // (the other crates' dev-dependencies drop out) and so rebuild nearly
    // every crate.
    let filtered = ["--", "--nocapture", "--test-threads", "1", filter].map(str::to_owned);
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--locked"])
        .args(including_ignored(&filtered));
    command
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// The packages `cargo tree` lists for the api's normal dependencies,
    /// with the features `features` adds.
    fn api_dependencies(features: &[&str]) -> Vec<String> {
        let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(testkit::paths::project_root())
            .args(["tree", "--package", "api", "--edges", "normal", "--locked"])
            .args(["--prefix", "none", "--format", "{p}"])
            .args(features)
            .output()
            .expect("cargo tree runs");
        assert!(
            output.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                line.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_api_without_its_aws_feature_depends_on_no_aws_crate() {
        let aws = |packages: Vec<String>| -> Vec<String> {
            let mut found: Vec<String> = packages
                .into_iter()
                .filter(|name| name.starts_with("aws-"))
                .collect();
            found.sort();
            found.dedup();
            found
        };

        let without = aws(api_dependencies(&["--no-default-features"]));
        let with = aws(api_dependencies(&[]));

        assert_eq!(
            without,
            Vec::<String>::new(),
            "AWS crates in a build without `aws`"
        );
        assert!(
            with.iter().any(|name| name == "aws-sdk-rds"),
            "the default build lists the RDS SDK (the check sees what it looks for): {with:?}"
        );
    }

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
