//! Fuzzing the running service from `openapi.json` with schemathesis (from
//! PyPI, in a virtualenv under `target/`): no 5xx, no response outside the
//! documented schemas and status codes.

use std::process::Command;

use testkit::api_server::ApiServer;
use testkit::moto::tools_python;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;

use crate::cargo::debug_api;

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "200";

/// A fixed seed keeps CI reproducible; `SCHEMATHESIS_SEED` picks another.
const DEFAULT_SEED: &str = "20261126";

/// Runs every schemathesis check against a freshly started service.
pub(crate) fn fuzz(cluster: &Cluster) -> anyhow::Result<()> {
    let schemathesis = tools_python()?.with_file_name("schemathesis");
    let database = format!("contract_{}", std::process::id());
    cluster.create_database(&database)?;
    let out = target_dir().join("contract");
    std::fs::create_dir_all(&out)?;
    let api = ApiServer::test_profile(
        &debug_api()?,
        &cluster.url(&database),
        &out.join("api.log"),
        &[],
    )?;
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    run(Command::new(schemathesis)
        .args([
            "run",
            "openapi.json",
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            &seed,
        ])
        .args(["--url", &format!("http://127.0.0.1:{}", api.port())])
        .current_dir(project_root())
        .env("NO_COLOR", "1"))
}
