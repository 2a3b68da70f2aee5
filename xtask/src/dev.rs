//! `cargo xtask dev`: the api and the web client with live reload, for
//! people changing them. trunk serves the client on :8080, rebuilds it when
//! `web/` or `domain/` changes and reloads the browser; its proxy sends the
//! API's paths to the api on :5000, which this loop rebuilds and restarts
//! (same database) when `api/`, `domain/` or `migrations/` change.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use testkit::http::{Terminating, wait_healthy};
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::{status, step};

use crate::cargo::cargo;
use crate::web;

/// What the api is built from.
const API_INPUTS: [&str; 5] = [
    "api/src",
    "api/Cargo.toml",
    "api/config",
    "domain/src",
    "migrations",
];

/// How often the loop looks for changes.
const POLL: Duration = Duration::from_millis(300);

/// Runs until trunk stops (Ctrl-C stops both).
pub(crate) fn run_dev() -> anyhow::Result<()> {
    // Its own output folder: `trunk serve` writes a development build with
    // a live-reload script, which `web/dist` (what `run`, the tests and the
    // bundle serve, rebuilt only when older than its sources) must never
    // hold.
    let mut trunk = web::trunk_command(&[
        "serve",
        "--dist",
        "dist-dev",
        "--address",
        "127.0.0.1",
        "--port",
        "8080",
    ])?;
    build_api()?;
    // Without a local cluster the api reads DATABASE_URL itself, as in `run`.
    let cluster = Cluster::local_unless_database_url()?;
    let database_url = cluster.as_ref().map(|cluster| cluster.url("postgres"));
    let mut api = start_api(database_url.as_deref())?;
    step("trunk serve: the web client on http://127.0.0.1:8080 with live reload (Ctrl-C stops)");
    let mut trunk = Terminating(trunk.spawn().context("starting trunk serve")?);
    let mut built_from = newest_api_input()?;
    let outcome = loop {
        std::thread::sleep(POLL);
        if let Ok(Some(exit)) = trunk.0.try_wait() {
            break if exit.success() || exit.code().is_none() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("trunk serve stopped ({exit})"))
            };
        }
        let newest = newest_api_input()?;
        if newest <= built_from {
            continue;
        }
        built_from = newest;
        let edited = Instant::now();
        status("the api's sources changed: rebuilding");
        if let Err(error) = build_api() {
            status(&format!(
                "the build failed; the previous api keeps serving: {error:#}"
            ));
            continue;
        }
        drop(api);
        api = start_api(database_url.as_deref())?;
        status(&format!(
            "api restarted {:.1} s after the change was seen",
            edited.elapsed().as_secs_f64()
        ));
    };
    drop(api);
    if let Some(cluster) = cluster {
        cluster.stop_if_started_here()?;
    }
    outcome
}

fn build_api() -> anyhow::Result<()> {
    run(cargo().args(["build", "--package", "api"]))
}

/// Starts the debug build of `api serve` on :5000 (on `database_url`, when
/// given) and waits until it answers.
fn start_api(database_url: Option<&str>) -> anyhow::Result<Terminating> {
    let binary: PathBuf = target_dir().join("debug/api");
    let mut command = Command::new(&binary);
    command.arg("serve").env("APP_SERVER__PORT", "5000");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let api = Terminating(child);
    wait_healthy(5000, Duration::from_secs(30))?;
    Ok(api)
}

/// The newest modification time among the api's inputs.
fn newest_api_input() -> anyhow::Result<SystemTime> {
    let root = project_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for input in API_INPUTS {
        newest = newest.max(web::newest_in(&root.join(input))?);
    }
    Ok(newest)
}
