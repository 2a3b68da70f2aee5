//! The TypeScript client in `clients/typescript`: its types generated from
//! `openapi.json` (openapi-typescript), compared with the committed ones,
//! type-checked (tsc), and its tests run with Node's own runner against
//! the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::{npm_ci_in, run};
use testkit::progress::{status, step};

use crate::cargo::serve_fresh;

/// The client's package, from the repository root.
const PACKAGE: &str = "clients/typescript";

/// The generated types, in the package.
const SCHEMA: &str = "src/schema.d.ts";

fn package() -> PathBuf {
    project_root().join(PACKAGE)
}

/// A tool of the package (after `npm ci`).
fn tool(name: &str) -> Command {
    let mut command = Command::new(package().join("node_modules/.bin").join(name));
    command.current_dir(package());
    command
}

/// The package's npm packages, installed unless they already are.
fn install() -> anyhow::Result<()> {
    let installed = package().join("node_modules/.package-lock.json");
    let lock = package().join("package-lock.json");
    let fresh = match (installed.metadata(), lock.metadata()) {
        (Ok(installed), Ok(lock)) => installed.modified()? >= lock.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    npm_ci_in(&package())
}

/// Writes the types generated from `openapi.json` to `out`.
fn generate(out: &Path) -> anyhow::Result<()> {
    run(tool("openapi-typescript")
        .arg(project_root().join("openapi.json"))
        .arg("--output")
        .arg(out))
}

/// Rewrites the committed types from `openapi.json` (`cargo xtask openapi`).
pub(crate) fn regenerate() -> anyhow::Result<()> {
    install()?;
    let schema = package().join(SCHEMA);
    generate(&schema)?;
    status(&format!("wrote {}", schema.display()));
    Ok(())
}

/// Fails when the committed types differ from those `openapi.json` gives.
fn check_drift() -> anyhow::Result<()> {
    let out = target_dir().join("clients");
    std::fs::create_dir_all(&out)?;
    let fresh = out.join("schema.d.ts");
    generate(&fresh)?;
    let committed = package().join(SCHEMA);
    let same = std::fs::read(&fresh).context("reading the generated types")?
        == std::fs::read(&committed).with_context(|| format!("reading {}", committed.display()))?;
    if !same {
        bail!(
            "{PACKAGE}/{SCHEMA} does not match openapi.json (compare with {}): run `cargo xtask openapi` and commit it",
            fresh.display()
        );
    }
    Ok(())
}

/// The drift check, the type check and the client's tests against a
/// freshly started service on `cluster`.
pub(crate) fn test(cluster: &Cluster) -> anyhow::Result<()> {
    step("the TypeScript client: generated types, type check, tests against the service");
    install()?;
    check_drift()?;
    run(tool("tsc").arg("--noEmit"))?;
    let api = serve_fresh(cluster, "clients")?;
    run(Command::new("node")
        .args(["--test", "test/"])
        .current_dir(package())
        .env("BASE_URL", format!("http://127.0.0.1:{}", api.port())))
}
