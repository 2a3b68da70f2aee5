//! Logging setup: filters, the JSON line format, a writer thread. The
//! one-line-per-request log is written by `edge`.

pub(crate) mod json;
pub mod request;
mod writer;

use std::io::{IsTerminal as _, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use writer::{LineWriter, WriterGuard};

/// Lines that may wait for the writer thread; more are dropped.
const QUEUED_LINES: usize = 128_000;

/// How often dropped lines are reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The installed log's writer, for the metrics reporter ([`write_raw`],
/// [`dropped_lines`]).
static INSTALLED: OnceLock<LineWriter> = OnceLock::new();

/// Writes `text` (whole lines) to stdout through the log's writer, so it
/// never lands inside a log line; straight to stdout when no log was
/// installed.
pub(crate) fn write_raw(text: &str) -> std::io::Result<()> {
    match INSTALLED.get() {
        Some(mut writer) => writer.write_all(text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    }
}

/// Log lines dropped so far because stdout was not read fast enough.
pub fn dropped_lines() -> u64 {
    INSTALLED.get().map_or(0, LineWriter::dropped_lines)
}

/// Keeps the log writer's thread running; dropping it writes out what is
/// still queued. Hold it until the process ends.
#[derive(Debug)]
#[must_use = "logs still queued are lost when this is dropped early"]
pub struct LogGuard {
    #[allow(dead_code, reason = "held for its Drop")]
    writer: WriterGuard,
}

/// Installs the global subscriber. `RUST_LOG`, when set, beats `log.filter`.
///
/// Lines are written to stdout by a thread of their own, in batches
/// ([`writer`]), so a request never waits for a write, not even when
/// nothing reads stdout: lines then queue up to [`QUEUED_LINES`], the ones
/// after that are dropped and counted, and a warning says how many every
/// [`REPORT_EVERY`] while it goes on.
pub fn init(settings: &LogSettings) -> anyhow::Result<LogGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).map_err(|error| {
            anyhow::anyhow!("RUST_LOG={directives:?} is not a valid filter: {error}")
        })?,
        Err(_) => EnvFilter::try_new(&settings.filter).map_err(|error| {
            anyhow::anyhow!(
                "log.filter={:?} is not a valid filter: {error}",
                settings.filter
            )
        })?,
    };
    let (writer, guard) = LineWriter::start(std::io::stdout(), QUEUED_LINES)
        .map_err(|error| anyhow::anyhow!("cannot start the log's writer thread: {error}"))?;
    let installed_writer = writer.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stdout().is_terminal());
    let installed = match settings.format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder
            .fmt_fields(json::JsonFields)
            .event_format(json::JsonLines)
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the logger failed: {error}"))?;
    let _ = INSTALLED.set(installed_writer.clone());
    report_drops(installed_writer);
    Ok(LogGuard { writer: guard })
}

/// Warns, from a thread of its own, whenever lines were dropped since the
/// last look.
fn report_drops(dropped: LineWriter) {
    let spawned = std::thread::Builder::new()
        .name("log-drops".to_owned())
        .spawn(move || {
            let mut reported = 0;
            loop {
                std::thread::sleep(REPORT_EVERY);
                let now = dropped.dropped_lines();
                if now > reported {
                    tracing::warn!(
                        dropped = now - reported,
                        total = now,
                        "log lines were dropped: stdout is not read as fast as lines are written"
                    );
                    reported = now;
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the thread that reports dropped log lines");
    }
}
