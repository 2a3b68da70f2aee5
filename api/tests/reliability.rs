//! Faults survived, proven against the real binary and a real PostgreSQL:
//! the database stopped and restarted under write load, and SIGTERM under
//! write load. Every acknowledged write must be stored. Figures are printed
//! and written to `target/reliability/{outage,shutdown}.json`.
//!
//! Each scenario starts a PostgreSQL cluster of its own (the outage stops
//! it) and runs for up to a minute, so a plain `cargo test` skips them;
//! `cargo xtask test` runs them one at a time, with their output shown
//! (`cargo xtask test --only reliability`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use testkit::api_server::ApiServer;
use testkit::http::Reply;
use testkit::load::{Load, Outcome, check_acknowledged, stored_ids};
use testkit::paths::target_dir;
use testkit::postgres::Cluster;
use testkit::progress::{status, step};

/// Database acquire timeout given to the service in the outage scenario.
const ACQUIRE_TIMEOUT_SECS: u64 = 2;

/// Shutdown grace period given to the service in the shutdown scenario.
const GRACE_SECS: u64 = 10;

/// Writers hammering `POST /data` at once.
const WRITERS: usize = 6;

/// Writes acknowledged before a scenario moves on (before the outage, after
/// the recovery, before SIGTERM), and how long that may take.
const WRITES_PER_PHASE: usize = 200;
const PHASE_WITHIN: Duration = Duration::from_secs(30);

fn is_problem(reply: &Reply) -> bool {
    reply.content_type.as_deref() == Some("application/problem+json")
}

/// The api binary this test target was built with.
fn api_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_api"))
}

/// `target/reliability`, made when missing.
fn out_dir() -> anyhow::Result<PathBuf> {
    let out = target_dir().join("reliability");
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

/// Writes a scenario's figures to `target/reliability/{name}.json`.
fn write_figures(out: &Path, name: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    let path = out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(figures)?)?;
    status(&format!("figures written to {}", path.display()));
    Ok(())
}

/// Named `scenarios::…`, so that the Rust part of `cargo xtask test`, which
/// includes ignored tests, can leave them to a part of their own.
mod scenarios {
    use super::*;

    #[test]
    #[ignore = "starts and stops a PostgreSQL cluster of its own under load: `cargo xtask test` runs it"]
    fn a_database_outage_under_write_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
        let out = out_dir()?;
        let cluster = Cluster::throwaway("reliability-outage")?;
        let figures = outage(&cluster, &out)?;
        write_figures(&out, "outage", &figures)
    }

    #[test]
    #[ignore = "starts a PostgreSQL cluster of its own and writes under load: `cargo xtask test` runs it"]
    fn sigterm_under_write_load_drains_without_losing_an_acknowledged_write() -> anyhow::Result<()>
    {
        let out = out_dir()?;
        let cluster = Cluster::throwaway("reliability-shutdown")?;
        let figures = shutdown(&cluster, &out)?;
        write_figures(&out, "shutdown", &figures)
    }
}

fn outage(cluster: &Cluster, out: &Path) -> anyhow::Result<serde_json::Value> {
    step("reliability: PostgreSQL stopped and restarted under write load");
    let database = "reliability_outage";
    cluster.create_database(database)?;
    let timeout = ACQUIRE_TIMEOUT_SECS.to_string();
    let api = ApiServer::test_profile(
        api_binary(),
        &cluster.url(database),
        &out.join("outage-api.log"),
        &[("APP_DATABASE__ACQUIRE_TIMEOUT_SECS", &timeout)],
    )?;
    let load = Load::start(api.port(), WRITERS, "writer", false);
    load.wait_for_acknowledged(WRITES_PER_PHASE, PHASE_WITHIN)?;

    load.set_phase(1);
    cluster.stop()?;
    let mut probes = Vec::new();
    let outage_started = Instant::now();
    while outage_started.elapsed() < Duration::from_secs(6) {
        let live = api
            .send("GET", "/health", None)
            .ok()
            .map(|reply| reply.status);
        let ready = api
            .send("GET", "/health/ready", None)
            .ok()
            .map(|reply| reply.status);
        probes.push((live, ready));
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.launch()?;
    load.set_phase(2);
    let recovered_after = testkit::wait::wait_until(
        "the service to recover (a 200 from GET /health/ready)",
        Duration::from_secs(30),
        || {
            Ok::<_, std::io::Error>(
                api.send("GET", "/health/ready", None)
                    .is_ok_and(|reply| reply.status == 200),
            )
        },
    )?;
    load.wait_for_acknowledged(load.acknowledged() + WRITES_PER_PHASE, PHASE_WITHIN)?;
    let outcomes = load.finish();
    drop(api);

    let in_phase = |phase: u8| {
        outcomes
            .iter()
            .filter(move |outcome| outcome.phase == phase)
    };
    let unexpected: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| {
            !matches!(outcome.status(), Some(201))
                && !outcome
                    .reply
                    .as_ref()
                    .is_ok_and(|reply| reply.status == 503 && is_problem(reply))
        })
        .collect();
    ensure!(
        unexpected.is_empty(),
        "answers other than 201 or a 503 problem: {:?}",
        &unexpected[..unexpected.len().min(3)]
    );
    let unavailable: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.status() == Some(503))
        .collect();
    ensure!(
        !unavailable.is_empty(),
        "the outage produced no 503: the scenario did not exercise it"
    );
    let slowest_503 = unavailable
        .iter()
        .map(|outcome| outcome.latency)
        .max()
        .unwrap_or_default();
    // A hang would show as a request running into the 10 s request timeout
    // or beyond; this bound is about hanging, not speed.
    ensure!(
        slowest_503 < Duration::from_secs(8),
        "a 503 took {slowest_503:?}: requests hang during the outage"
    );
    ensure!(
        probes.iter().all(|(live, _)| *live == Some(200)),
        "/health failed during the outage: {probes:?}"
    );
    ensure!(
        probes.len() >= 3 && probes.iter().all(|(_, ready)| *ready == Some(503)),
        "/health/ready did not answer 503 throughout the outage: {probes:?}"
    );
    ensure!(
        in_phase(2).any(|outcome| outcome.status() == Some(201)),
        "no write succeeded after the restart"
    );
    let stored = stored_ids(cluster, database, "data")?;
    let acknowledged = check_acknowledged(&outcomes, &stored)?;
    let acked_in = |phase: u8| {
        in_phase(phase)
            .filter(|outcome| outcome.status() == Some(201))
            .count()
    };
    status(&format!(
        "outage: {} writes sent, {acknowledged} acknowledged ({} before, {} during, {} after), {} answered 503 \
         (slowest {:.2} s, acquire timeout {ACQUIRE_TIMEOUT_SECS} s), /health 200 and /health/ready 503 throughout, \
         recovered {:.2} s after the restart without restarting the service, acknowledged writes lost: 0",
        outcomes.len(),
        acked_in(0),
        acked_in(1),
        acked_in(2),
        unavailable.len(),
        slowest_503.as_secs_f64(),
        recovered_after.as_secs_f64(),
    ));
    Ok(serde_json::json!({
        "writes_sent": outcomes.len(),
        "writes_acknowledged": acknowledged,
        "answered_503": unavailable.len(),
        "slowest_503_seconds": slowest_503.as_secs_f64(),
        "recovered_seconds_after_restart": recovered_after.as_secs_f64(),
        "acknowledged_writes_lost": 0,
    }))
}

fn shutdown(cluster: &Cluster, out: &Path) -> anyhow::Result<serde_json::Value> {
    step("reliability: SIGTERM under write load");
    let database = "reliability_shutdown";
    cluster.create_database(database)?;
    let grace = GRACE_SECS.to_string();
    let mut api = ApiServer::test_profile(
        api_binary(),
        &cluster.url(database),
        &out.join("shutdown-api.log"),
        &[("APP_SERVER__SHUTDOWN_GRACE_SECS", &grace)],
    )?;
    let load = Load::start(api.port(), WRITERS, "writer", true);
    // SIGTERM once writes are under way, so that some are in flight.
    load.wait_for_acknowledged(WRITES_PER_PHASE, PHASE_WITHIN)?;
    let sigterm = Instant::now();
    let exit = api.terminate()?;
    let took = sigterm.elapsed();
    let outcomes = load.finish();

    ensure!(
        exit.success(),
        "the service exited with {exit} after SIGTERM"
    );
    ensure!(
        took < Duration::from_secs(GRACE_SECS + 2),
        "exit took {took:?}, over the {GRACE_SECS} s grace period"
    );
    let server_errors: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.status().is_some_and(|status| status >= 500))
        .collect();
    if !server_errors.is_empty() {
        bail!(
            "5xx during shutdown: {:?}",
            &server_errors[..server_errors.len().min(3)]
        );
    }
    let stored = stored_ids(cluster, database, "data")?;
    let acknowledged = check_acknowledged(&outcomes, &stored)?;
    ensure!(
        acknowledged > 0,
        "no write was acknowledged before the shutdown"
    );
    status(&format!(
        "shutdown: {acknowledged} writes acknowledged, 0 answered 5xx, exited {:.2} s after SIGTERM \
         (grace {GRACE_SECS} s) with {exit}, acknowledged writes lost: 0",
        took.as_secs_f64()
    ));
    Ok(serde_json::json!({
        "writes_acknowledged": acknowledged,
        "server_errors": 0,
        "exit_seconds_after_sigterm": took.as_secs_f64(),
        "acknowledged_writes_lost": 0,
    }))
}
