//! The RDS step: `api db provision --json` (the RDS API only; the database
//! stays private, and migrations run on Elastic Beanstalk's leader).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use ops::db_report::{InstanceReport, StatusReport};
use ops::progress::Progress;

/// Runs `api db provision --json` with the `APP_RDS__*` settings of this
/// process's environment; its progress goes to our stderr, its report is
/// returned.
pub fn provision(api: &Path, progress: &Progress) -> anyhow::Result<InstanceReport> {
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
    // Its own progress (lines, and a spinner on a terminal) replaces ours
    // while it runs.
    let output = progress
        .suspend(|| {
            command
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
        })
        .with_context(|| format!("starting {}", api.display()))?;
    if !output.status.success() {
        bail!("`api db provision` failed ({})", output.status);
    }
    let report: InstanceReport = serde_json::from_slice(&output.stdout)
        .context("`api db provision --json` printed no instance report")?;
    progress.say(&format!(
        "database {} is {} at {} (created now: {})",
        report.instance_id,
        report.status,
        report
            .endpoint
            .as_ref()
            .map_or_else(|| "no endpoint yet".to_owned(), ToString::to_string),
        report.created
    ));
    Ok(report)
}

/// For a dry run: `api db status --json`, read-only. `Some(report)` when the
/// instance exists, `None` when the report says it does not; a failure to
/// look (credentials, region, permissions) is an error.
pub fn status(api: &Path) -> anyhow::Result<Option<InstanceReport>> {
    let output = Command::new(api)
        .args(["db", "status", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", api.display()))?;
    if !output.status.success() {
        bail!("`api db status` failed ({})", output.status);
    }
    let report: StatusReport = serde_json::from_slice(&output.stdout)
        .context("`api db status --json` printed no status report")?;
    match (report.exists, report.instance) {
        (true, Some(instance)) => Ok(Some(instance)),
        (false, None) => Ok(None),
        (exists, instance) => bail!(
            "`api db status --json` contradicts itself: exists is {exists} but the instance is {}",
            if instance.is_some() {
                "there"
            } else {
                "missing"
            }
        ),
    }
}
