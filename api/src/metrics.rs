//! The service's own metrics, counted in process and written once an
//! interval (`metrics.interval_secs`, a minute by default) as lines in
//! CloudWatch's Embedded Metric Format (EMF): CloudWatch Logs turns each
//! line into metric values as it receives it, so no agent of ours and no
//! `PutMetricData` call is needed, and a line costs the same whatever the
//! traffic.
//!
//! What is counted:
//! - [`Requests`], by the edge layer: answers by route and status class,
//!   and latency, per route;
//! - [`StoreMetrics`], by the store: how many requests were waiting when
//!   one more arrived (the queue's depth), batch sizes, statement time,
//!   connections opened and lost, the statements it lets run at once;
//! - 503 answers by cause ([`Unavailable`]), which the handler's error puts
//!   on the response and the edge layer counts;
//! - log lines dropped because stdout was not read fast enough.
//!
//! Each count is an atomic add; the reporter takes and resets them. Lines
//! go to `metrics.file` (on Elastic Beanstalk a file the CloudWatch agent
//! streams, `.ebextensions/04-logs.config`) or, without one, to stdout
//! through the log's own writer, whole.

mod emf;
mod histogram;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode};

pub use histogram::Histogram;

use crate::config::MetricsSettings;

/// The routes counted apart; every other path is [`Route::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `GET /health/ready`.
    Ready,
    /// `POST /data`.
    CreateData,
    /// `GET /data`.
    ListData,
    /// `GET /data/{id}`.
    ReadData,
    /// The web client's files, the documentation and the OpenAPI document.
    Static,
    /// Anything else (unknown paths and methods).
    Other,
}

impl Route {
    /// Every route, in the order reports list them.
    pub const ALL: [Route; 7] = [
        Route::Health,
        Route::Ready,
        Route::CreateData,
        Route::ListData,
        Route::ReadData,
        Route::Static,
        Route::Other,
    ];

    /// The route of a request: a fixed, small set, so a client sending
    /// random paths cannot make new metrics (each costs money).
    pub fn of(method: &Method, path: &str) -> Route {
        let get = *method == Method::GET || *method == Method::HEAD;
        match path {
            "/health" if get => Route::Health,
            "/health/ready" if get => Route::Ready,
            "/data" if *method == Method::POST => Route::CreateData,
            "/data" if get => Route::ListData,
            _ if get && is_one_segment_under(path, "/data/") => Route::ReadData,
            "/health" | "/health/ready" | "/data" => Route::Other,
            _ if get && !path.starts_with("/data/") && !path.starts_with("/health/") => {
                Route::Static
            }
            _ => Route::Other,
        }
    }

    /// The route's name, the `Route` dimension's value.
    pub fn name(self) -> &'static str {
        match self {
            Route::Health => "GET /health",
            Route::Ready => "GET /health/ready",
            Route::CreateData => "POST /data",
            Route::ListData => "GET /data",
            Route::ReadData => "GET /data/{id}",
            Route::Static => "GET static",
            Route::Other => "other",
        }
    }
}

/// Whether `path` is `prefix` and one more non-empty segment.
fn is_one_segment_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// Why a 503 was answered, carried on the response for the edge layer to
/// count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Too many requests were already waiting for the database.
    QueueFull,
    /// No connection was free in time.
    NoConnection,
    /// The database could not serve (down, restarting, refusing, a
    /// statement or lock timeout).
    Database,
    /// A write's connection was lost and its outcome is unknown.
    OutcomeUnknown,
    /// The request went over `server.request_timeout_secs` (a 503 with no
    /// other cause on it).
    TimedOut,
}

impl Unavailable {
    /// Every cause, in the order reports list them.
    const ALL: [Unavailable; 5] = [
        Unavailable::QueueFull,
        Unavailable::NoConnection,
        Unavailable::Database,
        Unavailable::OutcomeUnknown,
        Unavailable::TimedOut,
    ];

    /// The metric counting this cause.
    fn metric(self) -> &'static str {
        match self {
            Unavailable::QueueFull => "Unavailable.QueueFull",
            Unavailable::NoConnection => "Unavailable.NoConnection",
            Unavailable::Database => "Unavailable.Database",
            Unavailable::OutcomeUnknown => "Unavailable.OutcomeUnknown",
            Unavailable::TimedOut => "Unavailable.TimedOut",
        }
    }
}

/// One route's counts.
#[derive(Debug, Default)]
struct RouteCounts {
    /// Answers by status class: 1xx-2xx-3xx, 4xx, 5xx.
    by_class: [AtomicU64; 3],
    /// Time from the request's arrival to its answer, in microseconds.
    latency_us: Histogram,
}

/// What the edge layer counts: every answer, by route.
#[derive(Debug)]
pub struct Requests {
    routes: [RouteCounts; Route::ALL.len()],
    /// 503 answers by cause.
    unavailable: [AtomicU64; Unavailable::ALL.len()],
}

impl Default for Requests {
    fn default() -> Requests {
        Requests {
            routes: std::array::from_fn(|_| RouteCounts::default()),
            unavailable: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Requests {
    /// Counts one answer of `route` with `status`, `latency` after the
    /// request arrived; `cause` says why, when it is a 503.
    pub fn record(
        &self,
        route: Route,
        status: StatusCode,
        latency: Duration,
        cause: Option<Unavailable>,
    ) {
        let counts = &self.routes[route as usize];
        let class = match status.as_u16() {
            500.. => 2,
            400..500 => 1,
            _ => 0,
        };
        counts.by_class[class].fetch_add(1, Ordering::Relaxed);
        counts
            .latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let cause = cause.unwrap_or(Unavailable::TimedOut);
            self.unavailable[cause as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the store counts.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Requests that arrived at a batcher's queue.
    arrivals: AtomicU64,
    /// The sum over arrivals of the requests already waiting.
    waiting_sum: AtomicU64,
    /// The most requests found waiting by one arrival.
    waiting_max: AtomicU64,
    /// Requests per statement.
    batch_sizes: Histogram,
    /// Requests served by statements (the sum of the batch sizes).
    requests: AtomicU64,
    /// Statement time, in microseconds.
    statement_us: Histogram,
    /// Connections opened.
    opened: AtomicU64,
    /// Connections found lost (and so replaced when next needed).
    lost: AtomicU64,
    /// The store's concurrency limit now, and the least and most it was
    /// since the last report (0: none set yet).
    limit: AtomicU64,
    limit_min: AtomicU64,
    limit_max: AtomicU64,
}

impl StoreMetrics {
    /// A request arrived with `waiting` others already queued.
    pub fn arrived(&self, waiting: usize) {
        let waiting = waiting as u64;
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        self.waiting_sum.fetch_add(waiting, Ordering::Relaxed);
        self.waiting_max.fetch_max(waiting, Ordering::Relaxed);
    }

    /// A statement served `requests` requests in `took`.
    pub fn statement(&self, requests: usize, took: Duration) {
        self.batch_sizes.record(requests as u64);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.statement_us
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// A connection was opened.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was found lost.
    pub fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// The store's concurrency limit is `limit` from now on.
    pub fn limit(&self, limit: usize) {
        let limit = limit as u64;
        self.limit.store(limit, Ordering::Relaxed);
        self.limit_max.fetch_max(limit, Ordering::Relaxed);
        let _ = self
            .limit_min
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |min| {
                (min == 0 || limit < min).then_some(limit)
            });
    }

    /// The least and the most the limit was since the last call; both
    /// start again from the limit now.
    fn take_limits(&self) -> (u64, u64) {
        let now = self.limit.load(Ordering::Relaxed);
        let min = self.limit_min.swap(now, Ordering::Relaxed);
        let max = self.limit_max.swap(now, Ordering::Relaxed);
        (min, max)
    }
}

/// Where the counts come from, for the reporter.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The edge layer's counts.
    pub requests: Arc<Requests>,
    /// The store's counts.
    pub store: Arc<StoreMetrics>,
    /// Log lines dropped so far (a running total).
    pub dropped_lines: fn() -> u64,
}

/// Writes a report every interval, and a last one when
/// [`Reporter::finish`] is called (at shutdown, so the last minute before
/// a deploy is not lost).
#[derive(Debug)]
pub struct Reporter {
    /// Asks the task for a last report, and waits for it.
    finish: tokio::sync::mpsc::Sender<Done>,
}

/// Told when the last report is written.
type Done = tokio::sync::oneshot::Sender<()>;

impl Reporter {
    /// Starts reporting `sources` as `settings` say; `None` when
    /// `metrics.enabled` is false.
    pub fn start(settings: &MetricsSettings, sources: Sources) -> Option<Reporter> {
        if !settings.enabled {
            return None;
        }
        let (finish, mut finishing) = tokio::sync::mpsc::channel::<Done>(1);
        let mut report = Report::new(settings, sources);
        let interval = settings.interval_secs.get();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => report.write().await,
                    done = finishing.recv() => {
                        report.write().await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
            }
        });
        Some(Reporter { finish })
    }

    /// Writes what was counted since the last report, and stops.
    pub async fn finish(self) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.finish.send(done).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// The reporter's state between reports.
struct Report {
    sources: Sources,
    namespace: String,
    environment: String,
    file: Option<PathBuf>,
    /// Dropped log lines at the last report.
    dropped_before: u64,
    /// Whether a failed write was already logged (once, not every minute).
    failing: bool,
}

impl Report {
    fn new(settings: &MetricsSettings, sources: Sources) -> Report {
        Report {
            dropped_before: (sources.dropped_lines)(),
            sources,
            namespace: settings.namespace.clone(),
            environment: settings.environment.clone(),
            file: settings.file.clone(),
            failing: false,
        }
    }

    /// Takes the counts and writes them as EMF lines.
    async fn write(&mut self) {
        let dropped = (self.sources.dropped_lines)();
        let text = emf::render(
            &emf::Header {
                namespace: &self.namespace,
                environment: &self.environment,
                timestamp: SystemTime::now(),
            },
            &self.sources,
            dropped.saturating_sub(self.dropped_before),
        );
        self.dropped_before = dropped;
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || write_lines(file.as_ref(), &text))
            .await
            .unwrap_or_else(|error| Err(std::io::Error::other(error)));
        match written {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                let to = self
                    .file
                    .as_ref()
                    .map_or_else(|| "stdout".to_owned(), |file| file.display().to_string());
                tracing::warn!(%error, to, "writing the metrics failed; trying again next interval");
            }
            Err(_) => {}
        }
    }
}

/// One report of `sources`, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn render_for_test(sources: &Sources) -> String {
    emf::render(
        &emf::Header {
            namespace: "NotesEb",
            environment: "test",
            timestamp: SystemTime::now(),
        },
        sources,
        0,
    )
}

/// Appends `text` (whole lines) to `file`, or to stdout through the log's
/// writer when there is none.
fn write_lines(file: Option<&PathBuf>, text: &str) -> std::io::Result<()> {
    match file {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(text.as_bytes()),
        None => crate::telemetry::write_raw(text),
    }
}
