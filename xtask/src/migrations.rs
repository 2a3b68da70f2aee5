//! The schema's compatibility gate. A rolling deploy runs the base
//! version's binary against the schema the new version migrated, so:
//! - every migration added since the base is linted with squawk (PyPI, in
//!   the tools' virtualenv) for locks and rewrites that would stall a live
//!   table, as sqlx runs it (in a transaction);
//! - the base version's binary, built from a worktree of its commit,
//!   serves its own `openapi.json` contract (schemathesis) against a
//!   database the new binary migrated.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use testkit::api_server::ApiServer;
use testkit::moto::tools_python;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::{status, step};

use crate::cargo::{cargo, debug_api};
use crate::compat;

/// The PostgreSQL major RDS runs, for squawk's rules.
const PG_VERSION: &str = "16";

/// Examples per operation and phase for the base binary's contract.
const EXAMPLES: &str = "50";

/// Both gates, on `cluster`.
pub(crate) fn check(cluster: &Cluster) -> anyhow::Result<()> {
    let (base, why) = compat::base()?;
    let named = format!("{base} ({why})");
    step(&format!(
        "linting the migrations added since {named} (squawk)"
    ));
    lint(&base)?;
    step(&format!(
        "the binary of {named} against the schema this version migrates"
    ));
    old_binary_on_new_schema(cluster, &base, &named)
}

/// squawk over the migrations added since `base`.
fn lint(base: &str) -> anyhow::Result<()> {
    let added = git_lines(&[
        "diff",
        "--name-only",
        "--diff-filter=A",
        base,
        "--",
        "migrations/*.sql",
    ])?;
    if added.is_empty() {
        status("no migration added: nothing to lint");
        return Ok(());
    }
    let squawk = tools_python()?.with_file_name("squawk");
    run(Command::new(squawk)
        .args(["--assume-in-transaction", "--pg-version", PG_VERSION])
        .args(&added)
        .current_dir(project_root())
        .env("NO_COLOR", "1"))
    .with_context(|| {
        format!(
            "squawk found a migration that would stall a live table or break the release \
             before it ({}); see migrations/README.md",
            added.join(", ")
        )
    })
}

/// The base's binary, built from a worktree of its commit, serving its own
/// contract against a database this version's binary migrated.
fn old_binary_on_new_schema(cluster: &Cluster, base: &str, named: &str) -> anyhow::Result<()> {
    let worktree = target_dir().join("compat/base-src");
    let _ = Command::new("git")
        .args(["worktree", "remove", "--force"])
        .arg(&worktree)
        .current_dir(project_root())
        .output();
    if worktree.exists() {
        std::fs::remove_dir_all(&worktree)?;
    }
    run(Command::new("git")
        .args(["worktree", "add", "--detach", "--quiet"])
        .arg(&worktree)
        .arg(base)
        .current_dir(project_root()))?;
    let built = build_old(&worktree);
    let _ = Command::new("git")
        .args(["worktree", "remove", "--force"])
        .arg(&worktree)
        .current_dir(project_root())
        .output();
    let (old, document) = built?;

    let database = format!("compat_{}", std::process::id());
    cluster.create_database(&database)?;
    let url = cluster.url(&database);
    run(Command::new(debug_api()?)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .env("APP_PROFILE", "test"))?;
    let out = target_dir().join("compat");
    let api = ApiServer::test_profile(&old, &url, &out.join("base-api.log"), &[])
        .with_context(|| format!("the binary of {named} did not start on the migrated schema"))?;
    let schemathesis = tools_python()?.with_file_name("schemathesis");
    run(Command::new(schemathesis)
        .arg("run")
        .arg(&document)
        .args([
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--seed",
            "20261126",
        ])
        .args(["--url", &format!("http://127.0.0.1:{}", api.port())])
        .current_dir(project_root())
        .env("NO_COLOR", "1"))
    .with_context(|| {
        format!("the binary of {named} failed its own contract on the migrated schema")
    })
}

/// Builds the `api` of the worktree (without the AWS SDK, into a target
/// folder of its own so this version's binary is untouched) and keeps it
/// and its `openapi.json` under `target/compat/`.
fn build_old(worktree: &Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let target = target_dir().join("compat/target");
    run(cargo()
        .args(["build", "--package", "api", "--locked", "--quiet"])
        .args(["--no-default-features"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(worktree)
        .env_remove("CARGO_TARGET_DIR")
        .env("SQLX_OFFLINE", "true"))
    .context("building the base version's api")?;
    let out = target_dir().join("compat");
    let binary = out.join("base-api");
    std::fs::copy(target.join("debug/api"), &binary)?;
    let document = out.join("base-openapi.json");
    std::fs::copy(worktree.join("openapi.json"), &document)?;
    Ok((binary, document))
}

/// The lines `git args` prints.
fn git_lines(args: &[&str]) -> anyhow::Result<Vec<String>> {
    let output = Command::new("git")
        .args(args)
        .current_dir(project_root())
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}
