//! Fuzzing the running service from `openapi.json` with schemathesis (from
//! PyPI, in a virtualenv under `target/`): no 5xx, no response outside the
//! documented schemas and status codes.

use std::path::Path;
use std::process::Command;

use testkit::moto::tools_python;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::{status, step};

use crate::cargo::serve_fresh;
use crate::compat;

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "200";

/// A fixed seed keeps CI reproducible; `SCHEMATHESIS_SEED` picks another.
const DEFAULT_SEED: &str = "20261126";

/// Runs every schemathesis check against a freshly started service.
pub(crate) fn fuzz(cluster: &Cluster) -> anyhow::Result<()> {
    let schemathesis = tools_python()?.with_file_name("schemathesis");
    let out = target_dir().join("contract");
    let api = serve_fresh(cluster, "contract")?;
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let url = format!("http://127.0.0.1:{}", api.port());
    let fuzz = |document: &Path, examples: &str| {
        run(Command::new(&schemathesis)
            .arg("run")
            .arg(document)
            .args([
                "--checks",
                "all",
                "--max-examples",
                examples,
                "--seed",
                &seed,
            ])
            .args(["--url", &url])
            .current_dir(project_root())
            .env("NO_COLOR", "1"))
    };
    fuzz(&project_root().join("openapi.json"), MAX_EXAMPLES)?;
    // Old clients against the new binary: the base version's contract.
    let Some((base, named)) = compat::base_document()? else {
        return Ok(());
    };
    let current: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project_root().join("openapi.json"))?)?;
    if base == current {
        status(&format!("the document of {named} is this one: fuzzed once"));
        return Ok(());
    }
    let intended = compat::breaking_changes(&base, &current);
    if !intended.is_empty() {
        status(&format!(
            "not fuzzing with the document of {named}: it breaks on purpose ({})",
            intended.join("; ")
        ));
        return Ok(());
    }
    step(&format!(
        "fuzzing the running service from the openapi.json of {named}"
    ));
    let document = out.join("base-openapi.json");
    std::fs::write(&document, serde_json::to_vec_pretty(&base)?)?;
    fuzz(&document, BASE_EXAMPLES)
}

/// Examples per operation and phase for the base version's document.
const BASE_EXAMPLES: &str = "50";
