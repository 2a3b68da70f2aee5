//! Cargo as the tasks run it: the cargo that runs xtask, in the repository
//! root, with xtask's own package description removed from its environment;
//! and the debug `api` binary built with it, started on a fresh database.

use std::path::PathBuf;
use std::process::Command;

use testkit::api_server::ApiServer;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;

/// `cargo`, as the one that runs us, in the repository root.
pub(crate) fn cargo() -> Command {
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

/// Builds the debug `api` binary and returns its path.
pub(crate) fn debug_api() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--package", "api", "--locked", "--quiet"]))?;
    Ok(target_dir().join("debug/api"))
}

/// This version's api, serving a fresh database of `cluster` named after
/// `part` (`contract`, `clients`), logging to `target/<part>/api.log`.
pub(crate) fn serve_fresh(cluster: &Cluster, part: &str) -> anyhow::Result<ApiServer> {
    let database = format!("{part}_{}", std::process::id());
    cluster.create_database(&database)?;
    let out = target_dir().join(part);
    std::fs::create_dir_all(&out)?;
    Ok(ApiServer::test_profile(
        &debug_api()?,
        &cluster.url(&database),
        &out.join("api.log"),
        &[],
    )?)
}
