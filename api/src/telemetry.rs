//! Logging setup: filters, the JSON line format, a writer thread. The
//! one-line-per-request log is written by `edge`.

pub(crate) mod json;

use std::io::IsTerminal as _;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Keeps the log writer's thread running; dropping it writes out what is
/// still queued. Hold it until the process ends.
#[derive(Debug)]
#[must_use = "logs still queued are lost when this is dropped early"]
pub struct LogGuard(#[allow(dead_code, reason = "held for its Drop")] WorkerGuard);

/// Installs the global subscriber. `RUST_LOG`, when set, beats `log.filter`.
///
/// Lines are written to stdout by a thread of their own, so a request never
/// waits for a write: requests queue their lines (the queue blocks rather
/// than drop a line when full, so every line is kept).
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
    // The writer thread drains every queued line into the buffer, then
    // flushes: under load one write(2) carries many lines.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
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
    Ok(LogGuard(guard))
}
