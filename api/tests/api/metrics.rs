//! The metrics reports of a running service: under a known load, the
//! counts in its Embedded Metric Format lines are the requests the load
//! sent, and the store's batch figures are its own counters.

use std::collections::BTreeMap;
use std::time::Duration;

use api::config::Seconds;
use api::startup::Application;
use sqlx::PgPool;

use crate::helpers::{init_logs, test_settings};

/// Every metric value in `text`'s lines (each checked against CloudWatch's
/// specification), summed over reports, by (name, route).
fn totals(text: &str) -> BTreeMap<(String, String), Vec<f64>> {
    let mut totals: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in text.lines() {
        let metrics = testkit::emf::parse(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        for metric in metrics {
            assert_eq!(metric.namespace, "NotesEb");
            let route = metric.dimension("Route").unwrap_or_default().to_owned();
            totals
                .entry((metric.name, route))
                .or_default()
                .extend(metric.values);
        }
    }
    totals
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_reports_count_every_request_of_a_known_load_and_every_statement_of_the_store(
    pool: PgPool,
) {
    init_logs();
    let folder = std::env::temp_dir().join(format!("api-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a folder");
    let file = folder.join(format!("{}.log", uuid::Uuid::new_v4()));
    let mut settings = test_settings();
    settings.server.port = 0;
    settings.metrics.enabled = true;
    settings.metrics.file = Some(file.clone());
    settings.metrics.interval_secs = Seconds::try_from(1).expect("not zero");
    settings.metrics.environment = "test-env".to_owned();
    let app = Application::build_with_options(settings, (*pool.connect_options()).clone())
        .await
        .expect("app builds");
    let port = app.local_addr().expect("bound").port();
    let store = app.store().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    // 8 clients x 25 writes at once (so statements serve batches), then
    // reads, health checks, unknown paths and refused writes.
    let writers: Vec<_> = (0..8)
        .map(|client| {
            tokio::task::spawn_blocking(move || {
                for write in 0..25 {
                    let body = format!(r#"{{"notes":"n{client}-{write}","greeting":"g"}}"#);
                    let reply =
                        testkit::http::send(port, "POST", "/data", Some(&body)).expect("answered");
                    assert_eq!(reply.status, 201, "{}", reply.body);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("the writer finished");
    }
    let others = tokio::task::spawn_blocking(move || {
        let mut statuses = Vec::new();
        for (method, path, body, times) in [
            ("GET", "/data?n=5", None, 30),
            ("GET", "/health", None, 20),
            ("GET", "/data/1/2", None, 3),
            ("POST", "/data", Some(r#"{"notes":""}"#), 2),
        ] {
            for _ in 0..times {
                let reply = testkit::http::send(port, method, path, body).expect("answered");
                statuses.push(reply.status);
            }
        }
        statuses
    })
    .await
    .expect("the reads finished");
    // Reports of at least two intervals, then the last one at shutdown.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.send(()).expect("the server runs");
    server.await.expect("joined").expect("served");

    let text = std::fs::read_to_string(&file).expect("the reports were written");
    let _ = std::fs::remove_dir_all(&folder);
    let totals = totals(&text);
    let sum = |name: &str, route: &str| -> f64 {
        totals
            .get(&(name.to_owned(), route.to_owned()))
            .map_or(0.0, |values| values.iter().sum())
    };
    let count = |name: &str, route: &str| -> usize {
        totals
            .get(&(name.to_owned(), route.to_owned()))
            .map_or(0, Vec::len)
    };
    assert!(
        text.lines().count() >= 3,
        "several reports over the test's seconds:\n{text}"
    );
    assert_eq!(sum("Requests", "POST /data"), 202.0, "{text}");
    assert_eq!(sum("Requests.4xx", "POST /data"), 2.0);
    assert_eq!(sum("Requests.5xx", "POST /data"), 0.0);
    assert_eq!(sum("Requests", "GET /data"), 30.0);
    assert_eq!(sum("Requests", "GET /health"), 20.0);
    assert_eq!(sum("Requests", "other"), 3.0);
    assert_eq!(sum("Requests.4xx", "other"), 3.0, "{others:?}");
    assert_eq!(
        count("Latency", "GET /health"),
        20,
        "under 100 a report: one latency value each"
    );

    let stats = store.stats();
    assert_eq!(sum("Statements", "") as u64, stats.statements, "{text}");
    assert_eq!(sum("BatchedRequests", "") as u64, stats.requests);
    assert_eq!(count("BatchSize", "") as u64, stats.statements);
    assert_eq!(count("StatementTime", "") as u64, stats.statements);
    assert!(
        stats.statements < stats.requests,
        "the concurrent writes shared statements: {stats:?}"
    );
    // Batch sizes above 7 are shown as their bucket's middle: within 1/8.
    let sizes = sum("BatchSize", "");
    let requests = stats.requests as f64;
    assert!(
        (sizes - requests).abs() <= requests / 8.0,
        "the batch sizes add up to {sizes}, the store served {requests} requests"
    );
    assert!(sum("Connections.Opened", "") >= 1.0);
    assert_eq!(sum("Unavailable.QueueFull", ""), 0.0);
}
