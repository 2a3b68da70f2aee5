//! Rendering the counts as CloudWatch Embedded Metric Format lines: one
//! JSON object per line, its `_aws` member saying which members are
//! metrics, in which namespace, under which dimension sets. A latency or
//! size distribution is one metric with an array of at most 100 values
//! (EMF's limit) standing for all that were counted ([`spread`]), not one
//! value per request.
//!
//! One line for the store and the process (dimension `Environment`), and
//! one per route that answered anything (dimensions `Environment, Route`,
//! and `Environment` alone for the totals over routes).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{Route, Sources, Unavailable};

/// Most values one EMF metric may carry.
const MAX_VALUES: usize = 100;

/// What every line shares.
pub(super) struct Header<'a> {
    pub(super) namespace: &'a str,
    pub(super) environment: &'a str,
    pub(super) timestamp: SystemTime,
}

/// A line being built: its members, and the metrics its directive names.
struct Line<'a> {
    header: &'a Header<'a>,
    members: Map<String, Value>,
    metrics: Vec<Value>,
}

impl<'a> Line<'a> {
    fn new(header: &'a Header<'a>) -> Line<'a> {
        let mut members = Map::new();
        members.insert("Environment".to_owned(), json!(header.environment));
        Line {
            header,
            members,
            metrics: Vec::new(),
        }
    }

    /// A metric of one value.
    fn value(&mut self, name: &str, unit: &str, value: impl Into<Value>) {
        self.members.insert(name.to_owned(), value.into());
        self.metrics.push(json!({"Name": name, "Unit": unit}));
    }

    /// A distribution, from `(value, count)` pairs, as EMF's array of
    /// values (nothing when empty: an empty array publishes nothing).
    fn distribution(&mut self, name: &str, unit: &str, pairs: &[(f64, u64)], scale: f64) {
        if pairs.is_empty() {
            return;
        }
        // Rounded to a thousandth: microseconds, when the unit is ms.
        let values: Vec<f64> = spread(pairs)
            .into_iter()
            .map(|value| (value * scale * 1000.0).round() / 1000.0)
            .collect();
        self.members.insert(name.to_owned(), json!(values));
        self.metrics.push(json!({"Name": name, "Unit": unit}));
    }

    /// The line's text, with its `_aws` member and a newline.
    fn finish(mut self, dimensions: Value) -> String {
        let timestamp = self
            .header
            .timestamp
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        self.members.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.header.namespace,
                    "Dimensions": dimensions,
                    "Metrics": self.metrics,
                }],
            }),
        );
        let mut text = Value::Object(self.members).to_string();
        text.push('\n');
        text
    }
}

/// At most [`MAX_VALUES`] values standing for the counted ones: each of
/// them when there are that few, else one value per hundredth of them,
/// from the smallest to the largest (the middle of each hundredth), so
/// the percentiles CloudWatch computes from them are those of the counts.
/// (EMF takes an array of at most 100 numbers, without counts.)
fn spread(pairs: &[(f64, u64)]) -> Vec<f64> {
    let total: u64 = pairs.iter().map(|(_, count)| count).sum();
    if total <= MAX_VALUES as u64 {
        return pairs
            .iter()
            .flat_map(|&(value, count)| std::iter::repeat_n(value, count as usize))
            .collect();
    }
    let mut values = Vec::with_capacity(MAX_VALUES);
    let mut pairs = pairs.iter();
    let (mut value, mut seen) = pairs
        .next()
        .map_or((0.0, 0), |&(value, count)| (value, count));
    for hundredth in 0..MAX_VALUES as u64 {
        // The rank at the middle of this hundredth, 1-based.
        let rank = (2 * hundredth + 1) * total / (2 * MAX_VALUES as u64) + 1;
        while seen < rank {
            let Some(&(next, count)) = pairs.next() else {
                break;
            };
            value = next;
            seen += count;
        }
        values.push(value);
    }
    values
}

/// Microseconds to the milliseconds the lines report.
const US_TO_MS: f64 = 0.001;

/// The lines of one report: what `sources` counted since the last (and
/// `dropped` log lines), taking and resetting the counts.
pub(super) fn render(header: &Header<'_>, sources: &Sources, dropped: u64) -> String {
    let mut text = store_line(header, sources, dropped);
    for route in Route::ALL {
        let counts = &sources.requests.routes[route as usize];
        let by_class: Vec<u64> = counts
            .by_class
            .iter()
            .map(|count| count.swap(0, Ordering::Relaxed))
            .collect();
        let latency = counts.latency_us.take();
        let total: u64 = by_class.iter().sum();
        if total == 0 {
            continue;
        }
        let mut line = Line::new(header);
        line.members.insert("Route".to_owned(), json!(route.name()));
        line.value("Requests", "Count", total);
        line.value("Requests.4xx", "Count", by_class[1]);
        line.value("Requests.5xx", "Count", by_class[2]);
        line.distribution("Latency", "Milliseconds", &latency, US_TO_MS);
        text.push_str(&line.finish(json!([["Environment", "Route"], ["Environment"]])));
    }
    text
}

/// The store's and the process's line.
fn store_line(header: &Header<'_>, sources: &Sources, dropped: u64) -> String {
    let store = &sources.store;
    let take = |counter: &std::sync::atomic::AtomicU64| counter.swap(0, Ordering::Relaxed);
    let arrivals = take(&store.arrivals);
    let waiting_sum = take(&store.waiting_sum);
    let waiting_max = take(&store.waiting_max);
    let mut line = Line::new(header);
    line.value("Arrivals", "Count", arrivals);
    line.value("QueueDepth.Max", "Count", waiting_max);
    let mean = if arrivals == 0 {
        0.0
    } else {
        waiting_sum as f64 / arrivals as f64
    };
    line.value("QueueDepth.Mean", "Count", mean);
    let sizes = store.batch_sizes.take();
    line.value("Statements", "Count", count_of(&sizes));
    line.value("BatchedRequests", "Count", take(&store.requests));
    line.distribution("BatchSize", "Count", &sizes, 1.0);
    line.distribution(
        "StatementTime",
        "Milliseconds",
        &store.statement_us.take(),
        US_TO_MS,
    );
    line.value("Connections.Opened", "Count", take(&store.opened));
    line.value("Connections.Lost", "Count", take(&store.lost));
    let (least, most) = store.take_limits();
    line.value("ConcurrencyLimit.Min", "Count", least);
    line.value("ConcurrencyLimit.Max", "Count", most);
    for cause in Unavailable::ALL {
        let count = take(&sources.requests.unavailable[cause as usize]);
        line.value(cause.metric(), "Count", count);
    }
    line.value("LogLinesDropped", "Count", dropped);
    line.finish(json!([["Environment"]]))
}

/// How many values a distribution counted.
fn count_of(pairs: &[(f64, u64)]) -> u64 {
    pairs.iter().map(|(_, count)| count).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::*;
    use crate::metrics::{Requests, StoreMetrics};

    fn header() -> Header<'static> {
        Header {
            namespace: "NotesEb",
            environment: "prod-env",
            timestamp: UNIX_EPOCH + Duration::from_secs(1_733_350_000),
        }
    }

    fn sources() -> Sources {
        Sources {
            requests: Arc::new(Requests::default()),
            store: Arc::new(StoreMetrics::default()),
            dropped_lines: || 0,
        }
    }

    /// The metrics of every line of `text`, each line checked against
    /// CloudWatch's specification.
    fn metrics(text: &str) -> Vec<testkit::emf::Metric> {
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .flat_map(|line| {
                testkit::emf::parse(line).unwrap_or_else(|error| panic!("{error}: {line}"))
            })
            .collect()
    }

    fn find<'a>(
        metrics: &'a [testkit::emf::Metric],
        name: &str,
        route: Option<&str>,
    ) -> &'a testkit::emf::Metric {
        metrics
            .iter()
            .find(|metric| metric.name == name && metric.dimension("Route") == route)
            .unwrap_or_else(|| panic!("no {name} for {route:?} in {metrics:#?}"))
    }

    #[test]
    fn a_report_is_valid_emf_with_the_counts_since_the_last() {
        let sources = sources();
        let requests = &sources.requests;
        for status in [200, 201, 201, 404, 503] {
            requests.record(
                Route::CreateData,
                StatusCode::from_u16(status).expect("a status"),
                Duration::from_micros(1_500),
                Some(Unavailable::QueueFull).filter(|_| status == 503),
            );
        }
        requests.record(
            Route::Health,
            StatusCode::OK,
            Duration::from_micros(20),
            None,
        );
        requests.record(
            Route::ListData,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
            None,
        );
        for size in [1, 3, 3, 40] {
            sources.store.statement(size, Duration::from_millis(2));
        }
        sources.store.arrived(0);
        sources.store.arrived(6);
        sources.store.opened();
        for limit in [4, 3, 1, 2] {
            sources.store.limit(limit);
        }

        let text = render(&header(), &sources, 7);
        let metrics = metrics(&text);

        assert_eq!(
            text.lines().count(),
            4,
            "the store's line and three routes'"
        );
        assert_eq!(find(&metrics, "Requests", Some("POST /data")).values, [5.0]);
        assert_eq!(
            find(&metrics, "Requests.4xx", Some("POST /data")).values,
            [1.0]
        );
        assert_eq!(
            find(&metrics, "Requests.5xx", Some("POST /data")).values,
            [1.0]
        );
        let latency = find(&metrics, "Latency", Some("POST /data"));
        assert_eq!(latency.unit, "Milliseconds");
        assert_eq!(latency.values.len(), 5);
        assert!(
            latency
                .values
                .iter()
                .all(|ms| (ms - 1.5).abs() <= 1.5 / 8.0),
            "{latency:?}"
        );
        let route = find(&metrics, "Requests", Some("GET /health"));
        assert_eq!(
            route.dimensions,
            [
                vec![
                    ("Environment".to_owned(), "prod-env".to_owned()),
                    ("Route".to_owned(), "GET /health".to_owned())
                ],
                vec![("Environment".to_owned(), "prod-env".to_owned())],
            ],
            "per route, and the environment's total"
        );
        assert_eq!(find(&metrics, "Statements", None).values, [4.0]);
        assert_eq!(find(&metrics, "BatchedRequests", None).values, [47.0]);
        // 40 is shown as the middle of its bucket, 40 to 47.
        assert_eq!(
            find(&metrics, "BatchSize", None).values,
            [1.0, 3.0, 3.0, 44.0]
        );
        assert_eq!(find(&metrics, "QueueDepth.Max", None).values, [6.0]);
        assert_eq!(find(&metrics, "QueueDepth.Mean", None).values, [3.0]);
        assert_eq!(find(&metrics, "Connections.Opened", None).values, [1.0]);
        assert_eq!(find(&metrics, "Unavailable.QueueFull", None).values, [1.0]);
        assert_eq!(find(&metrics, "Unavailable.TimedOut", None).values, [1.0]);
        assert_eq!(find(&metrics, "Unavailable.Database", None).values, [0.0]);
        assert_eq!(find(&metrics, "LogLinesDropped", None).values, [7.0]);
        assert_eq!(find(&metrics, "ConcurrencyLimit.Min", None).values, [1.0]);
        assert_eq!(find(&metrics, "ConcurrencyLimit.Max", None).values, [4.0]);
        assert!(metrics.iter().all(|metric| metric.namespace == "NotesEb"));

        let next = metrics_of_next(&sources);
        assert_eq!(
            find(&next, "Statements", None).values,
            [0.0],
            "counts restart"
        );
        assert!(next.iter().all(|metric| metric.name != "BatchSize"));
        assert_eq!(
            find(&next, "ConcurrencyLimit.Max", None).values,
            [2.0],
            "the limit range restarts from the limit in force"
        );
    }

    fn metrics_of_next(sources: &Sources) -> Vec<testkit::emf::Metric> {
        let text = render(&header(), sources, 0);
        assert_eq!(
            text.lines().count(),
            1,
            "no route answered: only the store's line"
        );
        metrics(&text)
    }

    #[test]
    fn many_values_are_spread_over_a_hundred_that_keep_their_percentiles() {
        // 900 fast answers and 100 slow ones.
        let pairs = [(1.0, 900), (50.0, 100)];

        let values = spread(&pairs);

        assert_eq!(values.len(), MAX_VALUES);
        assert_eq!(values.iter().filter(|&&value| value == 50.0).count(), 10);
        assert_eq!(values[89], 1.0, "p89 fast");
        assert_eq!(values[90], 50.0, "p90 slow");
        assert_eq!(
            spread(&[(2.0, 3)]),
            [2.0, 2.0, 2.0],
            "few values: each of them"
        );
    }

    #[test]
    fn routes_are_a_fixed_set_whatever_the_paths() {
        use axum::http::Method;
        let cases = [
            (Method::GET, "/health", Route::Health),
            (Method::HEAD, "/health", Route::Health),
            (Method::GET, "/health/ready", Route::Ready),
            (Method::POST, "/data", Route::CreateData),
            (Method::GET, "/data", Route::ListData),
            (Method::GET, "/data/42", Route::ReadData),
            (Method::GET, "/data/42/x", Route::Other),
            (Method::DELETE, "/data/42", Route::Other),
            (Method::POST, "/health", Route::Other),
            (Method::GET, "/", Route::Static),
            (Method::GET, "/docs/index.html", Route::Static),
            (Method::GET, "/random/path/123", Route::Static),
            (Method::PUT, "/random", Route::Other),
        ];
        for (method, path, route) in cases {
            assert_eq!(Route::of(&method, path), route, "{method} {path}");
        }
    }

    /// Every NotesEb metric `infra/app.yaml` names: in its alarms
    /// (`Namespace: NotesEb` then `MetricName: …`) and in its dashboard's
    /// JSON (`"NotesEb",` then the name, one element a line).
    fn named_in_infra() -> Vec<String> {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/app.yaml"),
        )
        .expect("infra/app.yaml is readable");
        let lines: Vec<&str> = template.lines().map(str::trim).collect();
        lines
            .windows(2)
            .filter_map(|pair| match pair {
                ["Namespace: NotesEb", next] => next.strip_prefix("MetricName: "),
                ["\"NotesEb\",", next] => next.strip_prefix('"')?.strip_suffix("\","),
                _ => None,
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_metric_the_dashboard_and_alarms_name_is_one_the_service_writes() {
        let sources = sources();
        for route in Route::ALL {
            sources
                .requests
                .record(route, StatusCode::OK, Duration::from_millis(1), None);
        }
        sources.store.statement(2, Duration::from_millis(1));
        let mut written: Vec<String> = metrics(&render(&header(), &sources, 0))
            .into_iter()
            .map(|metric| metric.name)
            .collect();
        written.sort();
        written.dedup();

        let named = named_in_infra();

        assert!(
            named.len() >= 15,
            "too few found, the scan is broken: {named:?}"
        );
        for name in &named {
            assert!(
                written.contains(name),
                "infra/app.yaml names the metric {name}, which the service never writes \
                 (it writes {written:?})"
            );
        }
    }
}
