//! `cargo xtask bench`: the release binary under load from `wrk`, against
//! `pgbench` running the same SQL on the same database in the same run,
//! a bare axum handler, and the peer a Rust user would write instead
//! (axum and one sqlx `PgPool`, one statement per request:
//! `api/examples/pool_peer.rs`). PostgreSQL runs with production
//! durability (fsync and synchronous commit on, as on RDS). Prints a table
//! and writes `target/bench/latest.json`. Figures only: nothing here fails
//! on speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use testkit::api_server::{ApiServer, api_serve};
use testkit::paths::target_dir;
use testkit::ports::free_port;
use testkit::process::without_app_settings;

use crate::cargo::cargo;
use crate::web;
use testkit::http::{Terminating, send, wait_healthy};
use testkit::paths::project_root;
use testkit::postgres::Cluster;
use testkit::process::{run, which};
use testkit::progress::{status, step};

/// Rows loaded before measuring.
const ROWS: u32 = 10_000;

/// The statements the API runs, as pgbench scripts.
const INSERT_SQL: &str = "INSERT INTO data (notes, greeting) VALUES ('bench note', 'bench greeting') \
                          RETURNING id, notes, greeting, created_at;\n";
const SELECT_10_SQL: &str =
    "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT 10;\n";
const SELECT_100_SQL: &str =
    "SELECT id, notes, greeting, created_at FROM data ORDER BY id DESC LIMIT 100;\n";

/// The service's own liveness check: HTTP and middleware, no database.
const HEALTH: &str = "GET /health";

/// The same route on a bare axum handler (`api/examples/bare_health.rs`).
const BARE: &str = "GET /health, bare axum";

/// The suffix of the peer's scenarios.
const PEER: &str = ", pool peer";

/// The peer's pool size: sqlx's default.
const PEER_POOL: &str = "10";

/// Benchmark settings, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Concurrent connections (wrk) and clients (pgbench).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Seconds measured per scenario, after the warm-up.
    #[arg(long, default_value_t = 15)]
    seconds: u32,
    /// Seconds of warm-up per scenario.
    #[arg(long, default_value_t = 3)]
    warmup: u32,
    /// Another `api` binary (a build of another commit, say) to measure
    /// against this one on the data scenarios, alternating, instead of the
    /// full run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// With `--baseline`, the `api` binary measured against it instead of
    /// this build: the bundle's static musl build
    /// (`target/x86_64-unknown-linux-musl/release/api`), say.
    #[arg(long, requires = "baseline")]
    candidate: Option<PathBuf>,
    /// Rounds of the comparison with `--baseline` or `--concurrency`.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Concurrency settings to compare on the data scenarios, alternating,
    /// instead of the full run: numbers (a fixed limit, that many
    /// connections) and `adaptive` (the default: the store chooses, up to
    /// `--max-connections`). For example `1,2,4,adaptive`.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<Setting>,
    /// `database.max_connections` of the `adaptive` setting.
    #[arg(long, default_value_t = 4)]
    max_connections: u32,
}

/// A concurrency setting of `--concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Fixed(u32),
    Adaptive,
}

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(text: &str) -> Result<Setting, String> {
        if text == "adaptive" {
            return Ok(Setting::Adaptive);
        }
        match text.parse::<u32>() {
            Ok(connections) if connections > 0 => Ok(Setting::Fixed(connections)),
            _ => Err(format!(
                "`{text}` is neither `adaptive` nor a number of connections (1 or more)"
            )),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Fixed(connections) => write!(f, "fixed {connections}"),
            Setting::Adaptive => f.write_str("adaptive"),
        }
    }
}

/// One measured scenario.
#[derive(Debug, Clone, Default)]
struct Figures {
    requests_per_sec: f64,
    /// Requests completed in the measured window.
    requests: u64,
    /// Requests per statement the database ran (data scenarios).
    batch: Option<f64>,
    /// Server backends the service held (data scenarios).
    backends: Option<u64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The server process's CPU time (user and system, all threads) per
    /// request, in microseconds: steadier than the rate on a machine whose
    /// cores wrk and PostgreSQL share.
    cpu_us: Option<f64>,
    errors: u64,
    peak_rss_mb: Option<f64>,
}

pub(crate) fn run_bench(options: &Options) -> anyhow::Result<()> {
    let wrk = which("wrk")
        .context("wrk was not found: install it (Debian/Ubuntu: `sudo apt-get install wrk`)")?;
    step("building the release binary, the bare-handler baseline and the web client");
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "api",
        "--bins",
        "--example",
        "bare_health",
        "--example",
        "pool_peer",
        "--locked",
    ]))?;
    web::build(false)?;
    let bench = Bench::prepare()?;
    if let Some(baseline) = &options.baseline {
        return compare(&bench, &wrk, options, baseline);
    }
    if !options.concurrency.is_empty() {
        return compare_concurrency(&bench, &wrk, options);
    }

    step("cold start: exec to the first 200 from /health, 10 times");
    let cold_start = cold_start(&bench.binary, &bench.url, &bench.out.join("cold-start.log"))?;
    status(&format!(
        "cold start median {:.1} ms",
        cold_start.as_secs_f64() * 1000.0
    ));
    let api_figures = measure_service(&bench, &wrk, options)?;
    let ceilings = measure_pgbench(&bench, options)?;
    print_table(&api_figures, &ceilings, cold_start, options);
    write_json(&bench.out, &api_figures, &ceilings, cold_start, options)
}

/// A database ready to be measured on: a throwaway cluster counting
/// statements, migrated by the release binary and loaded with [`ROWS`].
struct Bench {
    cluster: Cluster,
    url: String,
    /// The release `api`.
    binary: PathBuf,
    /// Where logs, scripts and `latest.json` go.
    out: PathBuf,
}

/// The database the benchmark's cluster holds.
const DATABASE: &str = "bench";

impl Bench {
    fn prepare() -> anyhow::Result<Bench> {
        let out = target_dir().join("bench");
        std::fs::create_dir_all(&out)?;
        let cluster = Cluster::throwaway_with_settings(
            "bench",
            &[
                // Statements per scenario, to tell how many requests each served.
                "shared_preload_libraries=pg_stat_statements",
                // Production durability, as RDS runs (over the throwaway
                // cluster's speed settings): every commit waits for its
                // flush, which is what coalescing writes saves.
                "fsync=on",
                "synchronous_commit=on",
                "full_page_writes=on",
            ],
        )?;
        cluster.create_database(DATABASE)?;
        cluster.psql(DATABASE, &["-c", "CREATE EXTENSION pg_stat_statements"])?;
        let durability = cluster.query(
            DATABASE,
            "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')",
        )?;
        anyhow::ensure!(
            durability.trim() == "on on",
            "the bench's PostgreSQL must be durable, as RDS is: fsync and synchronous_commit are {durability:?}"
        );
        status("PostgreSQL: fsync on, synchronous_commit on (as RDS)");
        let url = cluster.url(DATABASE);
        let binary = target_dir().join("release/api");
        let mut migrate = Command::new(&binary);
        without_app_settings(&mut migrate);
        run(migrate
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("APP_PROFILE", "prod"))?;
        cluster.psql(
            DATABASE,
            &["-c", &format!("INSERT INTO data (notes, greeting) SELECT 'seed ' || i, 'hello' FROM generate_series(1, {ROWS}) AS i")],
        )?;
        Ok(Bench {
            cluster,
            url,
            binary,
            out,
        })
    }

    /// `api serve` from `binary` on the bench database, production profile.
    fn serve(&self, binary: &Path, log: &str) -> anyhow::Result<ApiServer> {
        self.serve_with(binary, log, &[])
    }

    /// [`Bench::serve`] with more environment variables.
    fn serve_with(
        &self,
        binary: &Path,
        log: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<ApiServer> {
        let mut serve = api_serve(binary);
        serve
            .env("DATABASE_URL", &self.url)
            .env("APP_PROFILE", "prod")
            .envs(env.iter().map(|(key, value)| (*key, value)));
        Ok(ApiServer::start(
            &mut serve,
            &self.out.join(log),
            Duration::from_secs(30),
        )?)
    }

    /// The script of `POST /data`'s scenario.
    fn post_script(&self) -> anyhow::Result<PathBuf> {
        let path = self.out.join("post.lua");
        std::fs::write(
            &path,
            "wrk.method = \"POST\"\nwrk.body = '{\"notes\":\"bench note\",\"greeting\":\"bench greeting\"}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n",
        )?;
        Ok(path)
    }
}

/// One load: a name, a URL, a wrk script, and whether to ask for brotli.
struct Scenario {
    name: String,
    target: String,
    script: Option<PathBuf>,
    compressed: bool,
}

impl Scenario {
    fn new(name: &str, target: String) -> Scenario {
        Scenario {
            name: name.to_owned(),
            target,
            script: None,
            compressed: false,
        }
    }

    fn posting(self, script: &Path) -> Scenario {
        Scenario {
            script: Some(script.to_path_buf()),
            ..self
        }
    }

    fn compressed(self) -> Scenario {
        Scenario {
            compressed: true,
            ..self
        }
    }
}

/// The service's scenarios on `base`: health, the data endpoints.
fn data_scenarios(base: &str, post_script: &Path) -> Vec<Scenario> {
    vec![
        Scenario::new(HEALTH, format!("{base}/health")),
        Scenario::new("POST /data", format!("{base}/data")).posting(post_script),
        Scenario::new("GET /data?n=10", format!("{base}/data?n=10")),
        Scenario::new("GET /data?n=100", format!("{base}/data?n=100")),
    ]
}

/// Every scenario on the service (the bare handler first), with its
/// figures.
fn measure_service(
    bench: &Bench,
    wrk: &Path,
    options: &Options,
) -> anyhow::Result<Vec<(String, Figures)>> {
    let api = bench.serve(&bench.binary, "api.log")?;
    let base = format!("http://127.0.0.1:{}", api.port());
    let bare_port = free_port()?;
    let bare = Command::new(target_dir().join("release/examples/bare_health"))
        .arg(bare_port.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the bare-handler baseline")?;
    let bare = Terminating(bare);
    wait_healthy(bare_port, Duration::from_secs(30))?;
    let peer_port = free_port()?;
    let peer = Command::new(target_dir().join("release/examples/pool_peer"))
        .args([&peer_port.to_string(), &bench.url, PEER_POOL])
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the pool peer")?;
    let peer = Terminating(peer);
    wait_healthy(peer_port, Duration::from_secs(30))?;
    let largest = largest_asset(&project_root().join("web/dist"))?;
    let post_script = bench.post_script()?;
    let mut scenarios = vec![Scenario::new(
        BARE,
        format!("http://127.0.0.1:{bare_port}/health"),
    )];
    scenarios.extend(data_scenarios(&base, &post_script));
    for scenario in data_scenarios(&format!("http://127.0.0.1:{peer_port}"), &post_script) {
        if scenario.name != HEALTH {
            scenarios.push(Scenario {
                name: format!("{}{PEER}", scenario.name),
                ..scenario
            });
        }
    }
    scenarios.push(Scenario::new("GET / (br)", format!("{base}/")).compressed());
    scenarios.push(Scenario::new(&largest.0, format!("{base}/{}", largest.1)).compressed());
    let mut figures = Vec::new();
    for scenario in &scenarios {
        let pid = if scenario.name == BARE {
            bare.0.id()
        } else if scenario.name.ends_with(PEER) {
            peer.0.id()
        } else {
            api.pid()
        };
        let measured = measure(bench, wrk, options, scenario, pid)?;
        report(&scenario.name, &measured);
        figures.push((scenario.name.clone(), measured));
    }
    Ok(figures)
}

/// One scenario: a warm-up, then the measured run, with the database's
/// statement count and backends for the data scenarios.
fn measure(
    bench: &Bench,
    wrk: &Path,
    options: &Options,
    scenario: &Scenario,
    pid: u32,
) -> anyhow::Result<Figures> {
    step(&format!("wrk: {}", scenario.name));
    let _ = run_quiet(wrk_command(wrk, options, options.warmup, scenario));
    reset_peak_rss(pid);
    bench
        .cluster
        .query(DATABASE, "SELECT pg_stat_statements_reset()")?;
    let cpu_before = cpu_seconds(pid);
    let output = run_quiet(wrk_command(wrk, options, options.seconds, scenario))?;
    let cpu_after = cpu_seconds(pid);
    let mut figures = parse_wrk(&output)?;
    figures.peak_rss_mb = peak_rss_mb(pid);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after)
        && figures.requests > 0
    {
        figures.cpu_us = Some((after - before) * 1e6 / figures.requests as f64);
    }
    if scenario.name.contains("/data") {
        let statements: u64 = bench
            .cluster
            .query(
                DATABASE,
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ~* '^\\s*(INSERT INTO data|WITH inserted|SELECT id, notes)'",
            )?
            .trim()
            .parse()
            .context("pg_stat_statements' calls")?;
        figures.batch = (statements > 0).then(|| figures.requests as f64 / statements as f64);
        // The service's backends (the peer's pool is its own, not counted).
        figures.backends = bench
            .cluster
            .query(
                DATABASE,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'api'",
            )?
            .trim()
            .parse()
            .ok()
            .filter(|_| !scenario.name.ends_with(PEER));
    }
    Ok(figures)
}

/// A scenario's figures as one line of progress.
fn report(name: &str, figures: &Figures) {
    status(&format!(
        "{name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, peak RSS {:.1} MB, server CPU {:.2} µs/request{}",
        figures.requests_per_sec,
        figures.p50_ms.unwrap_or_default(),
        figures.p99_ms.unwrap_or_default(),
        figures.errors,
        figures.peak_rss_mb.unwrap_or_default(),
        figures.cpu_us.unwrap_or_default(),
        figures.batch.map_or_else(String::new, |batch| format!(
            ", {batch:.1} requests per statement on {} backends",
            figures.backends.unwrap_or_default()
        )),
    ));
}

/// pgbench on the SQL the service runs, one statement per transaction:
/// transactions per second for the insert, the 10 and the 100 newest.
fn measure_pgbench(bench: &Bench, options: &Options) -> anyhow::Result<Vec<f64>> {
    let pgbench_bin = bench.cluster.bin_dir().join("pgbench");
    let mut ceilings = Vec::new();
    for (name, sql) in [
        ("INSERT", INSERT_SQL),
        ("SELECT … LIMIT 10", SELECT_10_SQL),
        ("SELECT … LIMIT 100", SELECT_100_SQL),
    ] {
        step(&format!("pgbench: {name}"));
        let script = bench.out.join(format!("pgbench-{}.sql", ceilings.len()));
        std::fs::write(&script, sql)?;
        let _ = pgbench(&pgbench_bin, bench, &script, options, options.warmup);
        let tps = pgbench(&pgbench_bin, bench, &script, options, options.seconds)?;
        status(&format!("{name}: {tps:.0} transactions/s"));
        ceilings.push(tps);
    }
    Ok(ceilings)
}

/// `target/bench/latest.json`: every figure of the run.
fn write_json(
    out: &Path,
    api_figures: &[(String, Figures)],
    ceilings: &[f64],
    cold_start: Duration,
    options: &Options,
) -> anyhow::Result<()> {
    let health = rate(api_figures, HEALTH);
    let json = json!({
        "machine": machine(),
        "connections": options.connections,
        "seconds": options.seconds,
        "rows_loaded": ROWS,
        "cold_start_ms_median": cold_start.as_secs_f64() * 1000.0,
        "durability": "fsync=on, synchronous_commit=on, full_page_writes=on",
        "health_to_bare_handler": health.zip(rate(api_figures, BARE)).map(|(ours, bare)| ours / bare),
        "peer_pool_size": PEER_POOL,
        "scenarios": api_figures.iter().map(|(name, f)| json!({
            "name": name,
            "requests_per_sec": f.requests_per_sec,
            "p50_ms": f.p50_ms,
            "p99_ms": f.p99_ms,
            "errors": f.errors,
            "peak_rss_mb": f.peak_rss_mb,
            "requests_per_statement": f.batch,
            "server_backends": f.backends,
            "pgbench_tps": ceiling(name, ceilings),
            "ratio_to_pgbench": ceiling(name, ceilings).map(|tps| f.requests_per_sec / tps),
            "ratio_to_health": health.map(|health| f.requests_per_sec / health),
            "ratio_to_peer": rate(api_figures, &format!("{name}{PEER}")).map(|peer| f.requests_per_sec / peer),
        })).collect::<Vec<_>>(),
    });
    let path = out.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    status(&format!("written to {}", path.display()));
    Ok(())
}

/// A scenario's figures for this build and the baseline, round by round.
type Sides = [Vec<f64>; 2];

/// `--baseline`: this build and another `api` binary on the same
/// database, each scenario in turn, alternating which goes first in each
/// round; prints each side's median and their ratio.
fn compare(bench: &Bench, wrk: &Path, options: &Options, baseline: &Path) -> anyhow::Result<()> {
    let sides = [
        (
            "this build",
            options.candidate.clone().unwrap_or(bench.binary.clone()),
        ),
        ("baseline", baseline.to_path_buf()),
    ];
    let post_script = bench.post_script()?;
    // Per scenario: each side's rates and CPU times per request.
    let mut rates: Vec<(String, Sides, Sides)> = Vec::new();
    for round in 0..options.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (label, binary) = &sides[side];
            step(&format!(
                "round {}: {label} ({})",
                round + 1,
                binary.display()
            ));
            let api = bench.serve(binary, &format!("compare-{side}.log"))?;
            let base = format!("http://127.0.0.1:{}", api.port());
            for scenario in data_scenarios(&base, &post_script) {
                let measured = measure(bench, wrk, options, &scenario, api.pid())?;
                report(&format!("{label}: {}", scenario.name), &measured);
                let index = match rates.iter().position(|(name, ..)| *name == scenario.name) {
                    Some(index) => index,
                    None => {
                        rates.push((
                            scenario.name.clone(),
                            Default::default(),
                            Default::default(),
                        ));
                        rates.len() - 1
                    }
                };
                rates[index].1[side].push(measured.requests_per_sec);
                rates[index].2[side].extend(measured.cpu_us);
            }
        }
    }
    println!();
    println!(
        "{} rounds, {} connections, {} s per scenario; {}; this build {}; baseline {}",
        options.rounds,
        options.connections,
        options.seconds,
        machine(),
        sides[0].1.display(),
        baseline.display()
    );
    println!(
        "| {:<18} | {:>12} | {:>12} | {:>7} | {:>15} | {:>7} | rounds (this build / baseline) |",
        "scenario", "this build", "baseline", "ratio", "CPU µs/req", "ratio"
    );
    println!(
        "|{:-<20}|{:->14}|{:->14}|{:->9}|{:->17}|{:->9}|{:-<32}|",
        "", "", "", "", "", "", ""
    );
    for (name, [ours, theirs], [ours_cpu, theirs_cpu]) in &rates {
        let (ours_median, theirs_median) = (median(ours), median(theirs));
        let (ours_cpu, theirs_cpu) = (median(ours_cpu), median(theirs_cpu));
        let each = ours
            .iter()
            .zip(theirs)
            .map(|(ours, theirs)| format!("{ours:.0}/{theirs:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "| {name:<18} | {ours_median:>12.0} | {theirs_median:>12.0} | {:>7.2} | {:>15} | {:>7.2} | {each} |",
            ours_median / theirs_median,
            format!("{ours_cpu:.2} / {theirs_cpu:.2}"),
            ours_cpu / theirs_cpu
        );
    }
    Ok(())
}

/// `--concurrency`: the service under each setting on the same database,
/// the data scenarios in turn, the order of the settings rotating each
/// round; prints each setting's median, its ratio to the best fixed
/// setting of the scenario and, for `adaptive`, the limits it chose (from
/// its metrics, reported every second).
fn compare_concurrency(bench: &Bench, wrk: &Path, options: &Options) -> anyhow::Result<()> {
    let settings = &options.concurrency;
    let post_script = bench.post_script()?;
    let mut rates: Vec<(String, Vec<Vec<f64>>, Vec<Limits>)> = Vec::new();
    for round in 0..options.rounds as usize {
        for turn in 0..settings.len() {
            let index = (turn + round) % settings.len();
            let setting = settings[index];
            step(&format!("round {}: {setting}", round + 1));
            let metrics = bench.out.join(format!("concurrency-{index}.metrics"));
            let _ = std::fs::remove_file(&metrics);
            let (connections, adaptive) = match setting {
                Setting::Fixed(connections) => (connections, false),
                Setting::Adaptive => (options.max_connections, true),
            };
            let api = bench.serve_with(
                &bench.binary,
                &format!("concurrency-{index}.log"),
                &[
                    ("APP_DATABASE__MAX_CONNECTIONS", connections.to_string()),
                    ("APP_DATABASE__ADAPTIVE_CONCURRENCY", adaptive.to_string()),
                    ("APP_METRICS__ENABLED", "true".to_owned()),
                    ("APP_METRICS__INTERVAL_SECS", "1".to_owned()),
                    ("APP_METRICS__FILE", metrics.display().to_string()),
                ],
            )?;
            let base = format!("http://127.0.0.1:{}", api.port());
            for scenario in data_scenarios(&base, &post_script) {
                if scenario.name == HEALTH {
                    continue;
                }
                let before = std::fs::metadata(&metrics).map_or(0, |file| file.len());
                let measured = measure(bench, wrk, options, &scenario, api.pid())?;
                let limits = limits_reported(&metrics, before);
                report(
                    &format!(
                        "{setting}: {} (limits {}..{})",
                        scenario.name, limits.0, limits.1
                    ),
                    &measured,
                );
                let entry = match rates.iter().position(|(name, ..)| *name == scenario.name) {
                    Some(entry) => entry,
                    None => {
                        rates.push((
                            scenario.name.clone(),
                            vec![Vec::new(); settings.len()],
                            vec![(u64::MAX, 0); settings.len()],
                        ));
                        rates.len() - 1
                    }
                };
                rates[entry].1[index].push(measured.requests_per_sec);
                let seen = &mut rates[entry].2[index];
                *seen = (seen.0.min(limits.0), seen.1.max(limits.1));
            }
        }
    }
    println!();
    println!(
        "{} rounds, {} connections, {} s per scenario; {}",
        options.rounds,
        options.connections,
        options.seconds,
        machine()
    );
    for (name, per_setting, seen) in &rates {
        let medians: Vec<f64> = per_setting.iter().map(|rates| median(rates)).collect();
        let best_fixed = settings
            .iter()
            .zip(&medians)
            .filter(|(setting, _)| matches!(setting, Setting::Fixed(_)))
            .map(|(_, rate)| *rate)
            .fold(f64::NAN, f64::max);
        println!("{name}:");
        for ((setting, rate), (rounds, seen)) in settings
            .iter()
            .zip(&medians)
            .zip(per_setting.iter().zip(seen))
        {
            let each = rounds
                .iter()
                .map(|rate| format!("{rate:.0}"))
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "  {:<12} {rate:>9.0} req/s  {:>5.2} of the best fixed  limits {}..{}  rounds {each}",
                setting.to_string(),
                rate / best_fixed,
                seen.0,
                seen.1,
            );
        }
    }
    Ok(())
}

/// The least and most concurrency limit seen, per scenario and setting
/// (the rates of its rounds are beside it).
type Limits = (u64, u64);

/// The least and most `ConcurrencyLimit` the service reported in
/// `metrics` past byte `from`.
fn limits_reported(metrics: &Path, from: u64) -> Limits {
    let text = std::fs::read(metrics).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    let mut seen = (u64::MAX, 0);
    for line in String::from_utf8_lossy(&text[from..]).lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(least), Some(most)) = (
            value["ConcurrencyLimit.Min"].as_u64(),
            value["ConcurrencyLimit.Max"].as_u64(),
        ) {
            seen = (seen.0.min(least), seen.1.max(most));
        }
    }
    seen
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn wrk_command(wrk: &Path, options: &Options, seconds: u32, scenario: &Scenario) -> Command {
    let mut command = Command::new(wrk);
    command.args([
        "--latency",
        "-t2",
        &format!("-c{}", options.connections),
        &format!("-d{seconds}s"),
        "--timeout",
        "5s",
    ]);
    if let Some(script) = &scenario.script {
        command.arg("-s").arg(script);
    }
    if scenario.compressed {
        command.args(["-H", "Accept-Encoding: br, gzip"]);
    }
    command.arg(&scenario.target);
    command
}

fn pgbench(
    bin: &Path,
    bench: &Bench,
    script: &Path,
    options: &Options,
    seconds: u32,
) -> anyhow::Result<f64> {
    let mut command = Command::new(bin);
    command
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg(format!("-c{}", options.connections))
        .arg(format!("-T{seconds}"))
        .arg("-f")
        .arg(script)
        .arg(&bench.url);
    let output = run_quiet(command)?;
    output
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .context("pgbench printed no tps")
}

fn run_quiet(mut command: Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads wrk's `--latency` report.
fn parse_wrk(output: &str) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    for line in output.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ")
            && rest.contains(',')
        {
            figures.requests = count.trim().parse().unwrap_or(0);
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            figures.requests_per_sec = rate.trim().parse().context("wrk's Requests/sec")?;
        } else if let Some(latency) = line.strip_prefix("50%") {
            figures.p50_ms = parse_duration_ms(latency.trim());
        } else if let Some(latency) = line.strip_prefix("99%") {
            figures.p99_ms = parse_duration_ms(latency.trim());
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.errors += count.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            figures.errors += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if figures.requests_per_sec == 0.0 {
        bail!("wrk printed no rate:\n{output}");
    }
    Ok(figures)
}

/// `812.00us`, `1.23ms`, `2.00s` as milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// The largest precompressed-capable file of the client, as a scenario.
fn largest_asset(dist: &Path) -> anyhow::Result<(String, String)> {
    let mut largest: Option<(u64, String)> = None;
    for entry in std::fs::read_dir(dist).with_context(|| format!("reading {}", dist.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".br") || name.ends_with(".gz") {
            continue;
        }
        let size = entry.metadata()?.len();
        if largest.as_ref().is_none_or(|(biggest, _)| size > *biggest) {
            largest = Some((size, name));
        }
    }
    let (_, name) = largest.context("web/dist is empty")?;
    Ok((format!("GET /{} (br)", short_name(&name)), name))
}

fn short_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((_, ext)) => format!("largest asset .{ext}"),
        None => name.to_owned(),
    }
}

/// Median time from exec of `api serve` to its first 200 from `/health`
/// (asked once it says where it listens).
fn cold_start(binary: &Path, url: &str, log: &Path) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let mut command = api_serve(binary);
        command.env("DATABASE_URL", url).env("APP_PROFILE", "prod");
        let mut api = ApiServer::start(&mut command, log, Duration::from_secs(30))?;
        let health = send(api.port(), "GET", "/health", None)?;
        if health.status != 200 {
            bail!(
                "a fresh api answered /health with {}: {}",
                health.status,
                health.body
            );
        }
        times.push(started.elapsed());
        api.terminate()?;
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Resets the kernel's peak-RSS counter of a process (Linux).
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The CPU time a process has used so far (user and system, every
/// thread), in seconds (Linux: `/proc/<pid>/stat` counts in USER_HZ
/// ticks, 100 a second on every architecture Linux runs this on).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// The peak resident set size since the last reset, in MB (Linux).
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The pgbench ceiling of a data scenario: the same SQL, one statement
/// per request.
fn ceiling(name: &str, ceilings: &[f64]) -> Option<f64> {
    let index = match name.trim_end_matches(PEER) {
        "POST /data" => 0,
        "GET /data?n=10" => 1,
        "GET /data?n=100" => 2,
        _ => return None,
    };
    ceilings.get(index).copied()
}

/// The measured rate of a scenario.
fn rate(figures: &[(String, Figures)], name: &str) -> Option<f64> {
    figures
        .iter()
        .find(|(scenario, _)| scenario == name)
        .map(|(_, figures)| figures.requests_per_sec)
}

fn print_table(
    api: &[(String, Figures)],
    ceilings: &[f64],
    cold_start: Duration,
    options: &Options,
) {
    let health = rate(api, HEALTH);
    println!();
    println!(
        "{} connections, {} s per scenario, {ROWS} rows loaded; {}",
        options.connections,
        options.seconds,
        machine()
    );
    println!(
        "| {:<30} | {:>9} | {:>8} | {:>8} | {:>6} | {:>8} | {:>7} | {:>9} | {:>9} | {:>8} | {:>7} | {:>8} |",
        "scenario",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "RSS MB",
        "CPU µs",
        "pgbench/s",
        "API÷pgb",
        "÷/health",
        "per stmt",
        "backends"
    );
    println!(
        "|{:-<32}|{:->11}|{:->10}|{:->10}|{:->8}|{:->10}|{:->9}|{:->11}|{:->11}|{:->10}|{:->9}|{:->10}|",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    let or_blank = |value: Option<String>| value.unwrap_or_default();
    for (name, f) in api {
        let tps = ceiling(name, ceilings);
        println!(
            "| {:<30} | {:>9.0} | {:>8.2} | {:>8.2} | {:>6} | {:>8.1} | {:>7} | {:>9} | {:>9} | {:>8} | {:>7} | {:>8} |",
            name,
            f.requests_per_sec,
            f.p50_ms.unwrap_or_default(),
            f.p99_ms.unwrap_or_default(),
            f.errors,
            f.peak_rss_mb.unwrap_or_default(),
            or_blank(f.cpu_us.map(|cpu| format!("{cpu:.2}"))),
            or_blank(tps.map(|tps| format!("{tps:.0}"))),
            or_blank(tps.map(|tps| format!("{:.2}", f.requests_per_sec / tps))),
            or_blank(health.map(|health| format!("{:.2}", f.requests_per_sec / health))),
            or_blank(f.batch.map(|batch| format!("{batch:.1}"))),
            or_blank(f.backends.map(|backends| backends.to_string())),
        );
    }
    if let (Some(ours), Some(bare)) = (health, rate(api, BARE)) {
        println!(
            "GET /health: the service serves {:.2} of a bare axum handler's rate",
            ours / bare
        );
    }
    let cpu = |name: &str| {
        api.iter()
            .find(|(scenario, _)| scenario == name)
            .and_then(|(_, figures)| figures.cpu_us)
    };
    if let (Some(ours), Some(bare)) = (cpu(HEALTH), cpu(BARE)) {
        println!(
            "GET /health: the service spends {ours:.2} µs of CPU a request, {:.2}x a bare axum handler's {bare:.2}",
            ours / bare
        );
    }
    for name in ["POST /data", "GET /data?n=10", "GET /data?n=100"] {
        if let (Some(ours), Some(peer)) = (rate(api, name), rate(api, &format!("{name}{PEER}"))) {
            println!(
                "{name}: the service serves {:.2}x the pool peer (axum + PgPool of {PEER_POOL}, one statement per request)",
                ours / peer
            );
        }
    }
    println!(
        "cold start (exec to first 200 from /health, median of 10): {:.1} ms",
        cold_start.as_secs_f64() * 1000.0
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} cores, {cpu}")
}
