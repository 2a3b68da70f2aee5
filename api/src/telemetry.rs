//! Logging setup: filters, the JSON line format, a writer thread. The
//! one-line-per-request log is written by `edge`.

pub(crate) mod json;
pub mod request;

use std::io::{IsTerminal as _, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Lines that may wait for the writer thread; more are dropped.
const QUEUED_LINES: usize = 128_000;

/// How often dropped lines are reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The installed log's writer, for the metrics reporter ([`write_raw`],
/// [`dropped_lines`]).
static INSTALLED: OnceLock<NonBlocking> = OnceLock::new();

/// Writes `text` (whole lines) to stdout through the log's writer, so it
/// never lands inside a log line; straight to stdout when no log was
/// installed.
pub(crate) fn write_raw(text: &str) -> std::io::Result<()> {
    match INSTALLED.get() {
        Some(writer) => writer.clone().write_all(text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    }
}

/// Log lines dropped so far because stdout was not read fast enough.
pub fn dropped_lines() -> u64 {
    INSTALLED
        .get()
        .map_or(0, |writer| writer.error_counter().dropped_lines() as u64)
}

/// Keeps the log writer's thread running; dropping it writes out what is
/// still queued. Hold it until the process ends.
#[derive(Debug)]
#[must_use = "logs still queued are lost when this is dropped early"]
pub struct LogGuard {
    #[allow(dead_code, reason = "held for its Drop")]
    writer: WorkerGuard,
}

/// Installs the global subscriber. `RUST_LOG`, when set, beats `log.filter`.
///
/// Lines are written to stdout by a thread of their own, so a request never
/// waits for a write, not even when nothing reads stdout: lines then queue
/// up to [`QUEUED_LINES`], the ones after that are dropped and counted, and
/// a warning says how many every [`REPORT_EVERY`] while it goes on.
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
    let (writer, guard) = queued(
        std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        QUEUED_LINES,
    );
    let dropped = writer.error_counter();
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
    let _ = INSTALLED.set(installed_writer);
    report_drops(dropped);
    Ok(LogGuard { writer: guard })
}

/// A writer thread in front of `sink`, queueing at most `limit` lines and
/// dropping (and counting) the rest rather than making the caller wait.
fn queued<W: Write + Send + 'static>(sink: W, limit: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(limit)
        .thread_name("log-writer")
        .finish(sink)
}

/// Warns, from a thread of its own, whenever lines were dropped since the
/// last look.
fn report_drops(dropped: ErrorCounter) {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    /// A sink that blocks every write until the test lets it go: a log
    /// consumer that stopped reading.
    #[derive(Clone)]
    struct Stalled(Arc<Mutex<()>>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _held = self.0.lock().expect("not poisoned");
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_log_consumer_costs_a_writer_nothing_and_the_drops_are_counted() {
        let stall = Arc::new(Mutex::new(()));
        let held = stall.lock().expect("not poisoned");
        let (mut writer, guard) = queued(Stalled(Arc::clone(&stall)), 100);

        let dropped = writer.error_counter();
        let (done, finished) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            for line in 0..10_000 {
                writer
                    .write_all(format!("line {line}\n").as_bytes())
                    .expect("a write never fails");
            }
            let _ = done.send(());
        });

        let wrote = finished.recv_timeout(Duration::from_secs(5));
        drop(held);

        assert!(
            wrote.is_ok(),
            "10,000 lines into a stalled sink were still being written after {:?}: a \
             writer waited for the log",
            started.elapsed()
        );
        let dropped = dropped.dropped_lines();
        assert!(
            (9_000..10_000).contains(&dropped),
            "{dropped} of 10,000 lines dropped with room for 100 queued"
        );
        drop(guard);
    }
}
