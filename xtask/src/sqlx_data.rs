//! `.sqlx/`: the query metadata that lets the workspace build without a
//! database. Regenerated and checked here without `sqlx-cli`: the `query!`
//! macros themselves write it when built online with `SQLX_OFFLINE_DIR` set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, bail};

use testkit::paths::project_root;
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::status;

use crate::cargo::cargo;

/// Crates whose sources hold `query!` macros.
const QUERY_CRATES: &[&str] = &["api"];

/// Rewrites `.sqlx/` against a throwaway PostgreSQL.
pub(crate) fn prepare() -> anyhow::Result<()> {
    let cluster = Cluster::throwaway("sqlx")?;
    let fresh = generate(&cluster)?;
    let dir = project_root().join(".sqlx");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    for (name, text) in &fresh {
        std::fs::write(dir.join(name), text)?;
    }
    status(&format!(
        "wrote {} query files to {}",
        fresh.len(),
        dir.display()
    ));
    Ok(())
}

/// Fails when `.sqlx/` differs from what the current queries produce.
pub(crate) fn check(cluster: &Cluster) -> anyhow::Result<()> {
    let fresh = generate(cluster)?;
    let committed = read_dir(&project_root().join(".sqlx"))?;
    let mut differences = Vec::new();
    for name in fresh.keys().chain(committed.keys()) {
        match (fresh.get(name), committed.get(name)) {
            (Some(_), None) => differences.push(format!("missing {name}")),
            (None, Some(_)) => differences.push(format!("unused {name}")),
            (Some(a), Some(b)) if a != b => differences.push(format!("stale {name}")),
            _ => {}
        }
    }
    differences.dedup();
    if !differences.is_empty() {
        bail!(
            ".sqlx/ does not match the queries ({}): run `cargo xtask sqlx-prepare` and commit .sqlx/",
            differences.join(", ")
        );
    }
    status(&format!(".sqlx/ is current ({} queries)", fresh.len()));
    Ok(())
}

/// Builds the query crates online against a freshly migrated database and
/// returns the metadata files the macros wrote, by name.
fn generate(cluster: &Cluster) -> anyhow::Result<BTreeMap<String, String>> {
    let database = format!("sqlx_prepare_{}", std::process::id());
    cluster.create_database(&database)?;
    for migration in migrations()? {
        let path = migration.to_string_lossy();
        cluster.psql(&database, &["-1", "-f", &path])?;
    }
    let out = project_root().join("target/sqlx-prepare");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    // The macros only run again for crates cargo thinks changed.
    for name in QUERY_CRATES {
        touch_sources(&project_root().join(name))?;
    }
    let built = run(cargo()
        .args([
            "check",
            "--workspace",
            "--all-targets",
            "--locked",
            "--quiet",
        ])
        .env("SQLX_OFFLINE", "false")
        .env("SQLX_OFFLINE_DIR", &out)
        .env("DATABASE_URL", cluster.url(&database)));
    cluster.psql("postgres", &["-c", &format!("DROP DATABASE {database}")])?;
    built.context("building against the database failed")?;
    read_dir(&out)
}

/// The migration files in the order sqlx applies them.
fn migrations() -> anyhow::Result<Vec<PathBuf>> {
    let dir = project_root().join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// Sets the modification time of every `.rs` file under `dir` to now.
fn touch_sources(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            touch_sources(&path)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|file| file.set_modified(SystemTime::now()))
                .with_context(|| format!("touching {}", path.display()))?;
        }
    }
    Ok(())
}

/// The `query-*.json` files of a folder, by name (empty when it is missing).
fn read_dir(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(files);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("query-") && name.ends_with(".json") {
            files.insert(name, std::fs::read_to_string(&path)?);
        }
    }
    Ok(files)
}
