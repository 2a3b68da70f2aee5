//! The RDS step: `api db provision --json` (the RDS API only; the database
//! stays private, and migrations run on Elastic Beanstalk's leader).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::Progress;

/// Runs `api db provision --json` with the `APP_RDS__*` settings of this
/// process's environment; its progress goes to our stderr, its report is
/// returned.
pub fn provision(api: &Path, progress: &Progress) -> anyhow::Result<Value> {
    progress.say(&format!(
        "provisioning the database: {} db provision --json",
        api.display()
    ));
    let mut command = Command::new(api);
    command.args(["db", "provision", "--json"]);
    // The profile of a deployed environment unless the caller chose one.
    if std::env::var_os("APP_PROFILE").is_none() {
        command.env("APP_PROFILE", "prod");
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", api.display()))?;
    if !output.status.success() {
        bail!("`api db provision` failed ({})", output.status);
    }
    let report: Value = serde_json::from_slice(&output.stdout)
        .context("`api db provision --json` printed no JSON report")?;
    progress.say(&format!(
        "database {} is {} at {}:{} (created now: {})",
        report["instance_id"].as_str().unwrap_or("?"),
        report["status"].as_str().unwrap_or("?"),
        report["endpoint"]["host"].as_str().unwrap_or("?"),
        report["endpoint"]["port"],
        report["created"]
    ));
    Ok(report)
}

/// The `host:port` of a provisioning report's endpoint, when it has one.
pub fn endpoint(report: &Value) -> Option<String> {
    let host = report["endpoint"]["host"].as_str()?;
    let port = report["endpoint"]["port"].as_u64()?;
    Some(format!("{host}:{port}"))
}

/// For a dry run: `api db status --json`, read-only. `Some(report)` when the
/// instance exists, `None` when it does not (`api` exits with 3); any other
/// failure (credentials, region, permissions) is an error.
pub fn status(api: &Path) -> anyhow::Result<Option<Value>> {
    let output = Command::new(api)
        .args(["db", "status", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", api.display()))?;
    match output.status.code() {
        Some(0) => {}
        Some(3) => return Ok(None),
        _ => bail!("`api db status` failed ({})", output.status),
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .context("`api db status --json` printed no JSON report")
}
