//! `cargo xtask dashboard`: a picture of the CloudWatch dashboard that
//! `infra/app.yaml` defines, drawn from that definition with local data,
//! for the docs (no AWS account is reachable from where the project is
//! built). The api runs on a throwaway PostgreSQL with its metrics written
//! every second, under a scenario that makes the database the bottleneck
//! for a while; each of the dashboard's minutes is one second here. The
//! widgets' metrics are computed from the api's Embedded Metric Format
//! lines with CloudWatch's statistics (Sum, Average, Maximum, pNN); the
//! AWS/… metrics (enhanced health, RDS) have no local source and say so.
//! Chromium draws the page into `docs/dashboard.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::Value;
use testkit::api_server::ApiServer;
use testkit::emf::Metric;
use testkit::load::Load;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::run;
use testkit::progress::{status, step};

use crate::cargo::debug_api;

/// The values `infra/app.yaml`'s parameters take in the picture.
const PARAMETERS: [(&str, &str); 4] = [
    ("${EnvironmentName}", "local"),
    ("${AWS::Region}", "local"),
    ("${DbInstanceId}", "notes-db"),
    ("${StatementTimeAlarmMilliseconds}", "2500"),
];

/// Pixels of one grid column and one grid row (CloudWatch's grid: 24
/// columns).
const COLUMN: f64 = 60.0;
const ROW: f64 = 34.0;

pub(crate) fn run_dashboard() -> anyhow::Result<()> {
    let definition = definition()?;
    let out = target_dir().join("dashboard");
    std::fs::create_dir_all(&out)?;
    let metrics_file = out.join("metrics.log");
    let _ = std::fs::remove_file(&metrics_file);

    step("running the api under a scenario: steady, the data table locked for 6 s, steady");
    let binary = debug_api()?;
    let cluster = Cluster::throwaway("dashboard")?;
    cluster.create_database("dashboard")?;
    let log = out.join("api.log");
    let metrics_path = metrics_file.to_string_lossy().into_owned();
    let server = ApiServer::test_profile(
        &binary,
        &cluster.url("dashboard"),
        &log,
        &[
            ("APP_LOG__FORMAT", "json"),
            ("APP_METRICS__ENABLED", "true"),
            ("APP_METRICS__INTERVAL_SECS", "1"),
            ("APP_METRICS__FILE", &metrics_path),
            ("APP_METRICS__ENVIRONMENT", "local"),
            ("APP_DATABASE__MAX_CONNECTIONS", "2"),
            ("APP_DATABASE__QUEUE_CAPACITY", "64"),
        ],
    )?;
    scenario(&cluster, &server)?;
    let mut server = server;
    server.terminate()?;
    drop(cluster);

    let text = std::fs::read_to_string(&metrics_file)
        .with_context(|| format!("the api wrote no metrics to {}", metrics_file.display()))?;
    let mut metrics = Vec::new();
    for line in text.lines() {
        metrics
            .extend(testkit::emf::parse(line).map_err(|error| anyhow::anyhow!("{error}: {line}"))?);
    }
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    let html = out.join("dashboard.html");
    std::fs::write(&html, page(&definition, &metrics, &requests)?)?;

    let picture = project_root().join("docs/dashboard.png");
    screenshot(&html, &picture, &definition)?;
    status(&format!(
        "drew {} from {} reports; the page is {}",
        picture.display(),
        text.lines().count(),
        html.display()
    ));
    Ok(())
}

/// The dashboard's JSON from `infra/app.yaml` (the `DashboardBody: !Sub |`
/// block), with the parameters' values.
fn definition() -> anyhow::Result<Value> {
    let template = std::fs::read_to_string(project_root().join("infra/app.yaml"))?;
    let mut lines = template.lines();
    lines
        .by_ref()
        .find(|line| line.trim() == "DashboardBody: !Sub |")
        .context("infra/app.yaml has no `DashboardBody: !Sub |`")?;
    let mut body = String::new();
    for line in lines {
        if !line.is_empty() && !line.starts_with("        ") {
            break;
        }
        body.push_str(line.trim_start_matches("        "));
        body.push('\n');
    }
    for (name, value) in PARAMETERS {
        body = body.replace(name, value);
    }
    ensure!(
        !body.contains("${"),
        "the dashboard uses a parameter this task does not know"
    );
    serde_json::from_str(&body).context("the dashboard's body is not JSON")
}

/// Two readers throughout, and writes in three phases of 12 s: 8 writers; 32 writers while a
/// transaction holds the data table for 6 s (statements wait for the lock,
/// the queue fills, lock timeouts answer 503); 8 writers again.
fn scenario(cluster: &Cluster, server: &ApiServer) -> anyhow::Result<()> {
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (port, reading) = (server.port(), std::sync::Arc::clone(&reading));
            std::thread::spawn(move || {
                while reading.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = testkit::http::send(port, "GET", "/data?n=10", None);
                }
            })
        })
        .collect();
    let steady = Load::start(server.port(), 8, "dashboard", false);
    std::thread::sleep(Duration::from_secs(12));
    let burst = Load::start(server.port(), 24, "burst", false);
    let lock = {
        let url = cluster.url("dashboard");
        let psql = cluster.bin_dir().join("psql");
        std::thread::spawn(move || {
            Command::new(psql)
                .args([
                    url.as_str(),
                    "-qc",
                    "BEGIN; LOCK TABLE data IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;",
                ])
                .output()
        })
    };
    std::thread::sleep(Duration::from_secs(12));
    let _ = lock.join();
    burst.finish();
    std::thread::sleep(Duration::from_secs(12));
    steady.finish();
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let _ = reader.join();
    }
    // The last report comes at shutdown; a second more shows the quiet.
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// One line of a widget: a metric and the statistic to draw.
struct Line {
    label: String,
    /// Drawn against the right axis (its own scale).
    right: bool,
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
    stat: String,
}

/// A widget's lines, from its `metrics` rows: `[namespace, name, dimension,
/// value, …, {options}]`.
fn lines_of(properties: &Value) -> Vec<Line> {
    let default_stat = properties["stat"].as_str().unwrap_or("Average");
    let rows = properties["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .filter_map(|row| {
            let row = row.as_array()?;
            let texts: Vec<&str> = row.iter().filter_map(Value::as_str).collect();
            let options = row.iter().find(|item| item.is_object());
            let (namespace, name) = (texts.first()?, texts.get(1)?);
            let dimensions = texts[2..]
                .chunks(2)
                .filter_map(|pair| Some(((*pair.first()?).to_owned(), (*pair.get(1)?).to_owned())))
                .collect();
            let option = |key: &str| options.and_then(|options| options[key].as_str());
            Some(Line {
                label: option("label").unwrap_or(name).to_owned(),
                right: option("yAxis") == Some("right"),
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
                dimensions,
                stat: option("stat").unwrap_or(default_stat).to_owned(),
            })
        })
        .collect()
}

/// The line's statistic at each second that has data.
fn series(line: &Line, metrics: &[Metric]) -> BTreeMap<u64, f64> {
    let mut values: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for metric in metrics {
        let matches = metric.namespace == line.namespace
            && metric.name == line.name
            && metric.dimensions.iter().any(|set| {
                set.len() == line.dimensions.len()
                    && line.dimensions.iter().all(|pair| set.contains(pair))
            });
        if matches {
            values
                .entry(metric.timestamp / 1000)
                .or_default()
                .extend(&metric.values);
        }
    }
    values
        .into_iter()
        .map(|(second, values)| (second, statistic(&line.stat, values)))
        .collect()
}

/// CloudWatch's statistic `stat` of `values`.
fn statistic(stat: &str, mut values: Vec<f64>) -> f64 {
    let count = values.len() as f64;
    match stat {
        "Sum" => values.iter().sum(),
        "Average" => values.iter().sum::<f64>() / count,
        "Maximum" => values.iter().copied().fold(f64::MIN, f64::max),
        "Minimum" => values.iter().copied().fold(f64::MAX, f64::min),
        "SampleCount" => count,
        percentile => {
            let p: f64 = percentile.trim_start_matches('p').parse().unwrap_or(50.0);
            values.sort_by(f64::total_cmp);
            let rank = ((p / 100.0) * count).ceil().max(1.0) as usize;
            values[rank.min(values.len()) - 1]
        }
    }
}

/// Colours of a widget's lines, in order (CloudWatch's palette).
const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// The page: every widget where the grid puts it.
fn page(definition: &Value, metrics: &[Metric], requests: &str) -> anyhow::Result<String> {
    let seconds: Vec<u64> = metrics
        .iter()
        .map(|metric| metric.timestamp / 1000)
        .collect();
    let span = (
        seconds.iter().copied().min().unwrap_or(0),
        seconds.iter().copied().max().unwrap_or(1),
    );
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><style>\
         body{margin:0;background:#f2f3f3;font:12px sans-serif;color:#16191f}\
         .w{position:absolute;font-size:11px;background:#fff;border:1px solid #d5dbdb;box-sizing:border-box;padding:6px 8px;overflow:hidden}\
         h3{margin:0 0 4px;font-size:13px}.k{display:inline-block;margin-right:8px}\
         .none{color:#687078;font-style:italic}td{padding:1px 4px;font:10px monospace;white-space:nowrap}\
         </style>",
    );
    let widgets = definition["widgets"].as_array().context("no widgets")?;
    for widget in widgets {
        let number = |key: &str| widget[key].as_f64().unwrap_or(0.0);
        let (left, top) = (number("x") * COLUMN, number("y") * ROW);
        let (width, height) = (number("width") * COLUMN, number("height") * ROW);
        let properties = &widget["properties"];
        write!(
            html,
            "<div class=w style='left:{left}px;top:{top}px;width:{width}px;height:{height}px'>"
        )?;
        match widget["type"].as_str() {
            Some("text") => {
                let markdown = properties["markdown"].as_str().unwrap_or_default();
                for (index, paragraph) in markdown.lines().enumerate() {
                    let text = escape(paragraph.trim_start_matches("## "));
                    if index == 0 {
                        write!(html, "<h3>{text}</h3>")?;
                    } else {
                        write!(html, "<div>{text}</div>")?;
                    }
                }
            }
            Some("log") => {
                write!(
                    html,
                    "<h3>{}</h3>",
                    escape(properties["title"].as_str().unwrap_or(""))
                )?;
                html.push_str(&failed_requests(requests));
            }
            _ => {
                write!(
                    html,
                    "<h3>{}</h3>",
                    escape(properties["title"].as_str().unwrap_or(""))
                )?;
                html.push_str(&chart(
                    &lines_of(properties),
                    metrics,
                    span,
                    width - 16.0,
                    height - 48.0,
                ));
            }
        }
        html.push_str("</div>");
    }
    Ok(html)
}

/// A widget's chart: one polyline a line with local data, a legend, and
/// the lines that have none named as such.
fn chart(lines: &[Line], metrics: &[Metric], span: (u64, u64), width: f64, height: f64) -> String {
    let drawn: Vec<(&Line, BTreeMap<u64, f64>)> = lines
        .iter()
        .map(|line| (line, series(line, metrics)))
        .collect();
    let top = |right: bool| {
        drawn
            .iter()
            .filter(|(line, _)| line.right == right)
            .flat_map(|(_, points)| points.values().copied())
            .fold(0.0_f64, f64::max)
            .max(1e-9)
    };
    let (left_top, right_top) = (top(false), top(true));
    let seconds = (span.1 - span.0).max(1) as f64;
    let mut svg = format!(
        "<svg width={width} height={height}><text x=0 y=10 font-size=10 fill=#687078>{}</text>\
         <line x1=0 y1={height} x2={width} y2={height} stroke=#d5dbdb />",
        format_number(left_top)
    );
    if drawn
        .iter()
        .any(|(line, points)| line.right && !points.is_empty())
    {
        let _ = write!(
            svg,
            "<text x={width} y=10 font-size=10 fill=#687078 text-anchor=end>{}</text>",
            format_number(right_top)
        );
    }
    let mut legend = String::new();
    for (index, (line, points)) in drawn.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        if points.is_empty() {
            let _ = write!(
                legend,
                "<span class='k none'>{} ({}: no local data)</span>",
                escape(&line.label),
                escape(&line.namespace)
            );
            continue;
        }
        let polyline: Vec<String> = points
            .iter()
            .map(|(second, value)| {
                let x = (*second - span.0) as f64 / seconds * width;
                let top = if line.right { right_top } else { left_top };
                let y = height - value / top * (height - 14.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=none stroke='{colour}' stroke-width=1.5 points='{}' />",
            polyline.join(" ")
        );
        let _ = write!(
            legend,
            "<span class=k style='color:{colour}'>&#9632; {} ({}{})</span>",
            escape(&line.label),
            escape(&line.stat),
            if line.right { ", right axis" } else { "" }
        );
    }
    svg.push_str("</svg>");
    format!("{svg}<div>{legend}</div>")
}

/// The latest 5xx request lines of the api's log, as the log widget's
/// query would list them.
fn failed_requests(log: &str) -> String {
    let mut rows: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request" && line["status"].as_u64().is_some_and(|status| status >= 500))
        .map(|line| {
            format!(
                "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{:.1} ms</td><td>trace_id {}</td></tr>",
                escape(line["timestamp"].as_str().unwrap_or("")),
                escape(line["method"].as_str().unwrap_or("")),
                escape(line["path"].as_str().unwrap_or("")),
                line["status"],
                line["latency_ms"].as_f64().unwrap_or(0.0),
                escape(line["trace_id"].as_str().unwrap_or("")),
            )
        })
        .collect();
    rows.reverse();
    rows.truncate(8);
    if rows.is_empty() {
        return "<div class=none>no 5xx answers</div>".to_owned();
    }
    format!("<table>{}</table>", rows.concat())
}

fn format_number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

/// Chromium's picture of `html`, the dashboard's full height.
fn screenshot(html: &Path, picture: &Path, definition: &Value) -> anyhow::Result<()> {
    let rows = definition["widgets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|widget| {
            widget["y"].as_f64().unwrap_or(0.0) + widget["height"].as_f64().unwrap_or(0.0)
        })
        .fold(0.0_f64, f64::max);
    let chromium = crate::browser::chromium()?;
    run(Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--window-size={},{}",
            (24.0 * COLUMN) as u32,
            (rows * ROW) as u32
        ))
        .arg(format!("--screenshot={}", picture.display()))
        .arg(format!("file://{}", html.display()))
        // Its complaints about D-Bus and the like, not ours.
        .stderr(std::process::Stdio::null()))
}
