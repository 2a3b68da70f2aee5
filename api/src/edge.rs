//! What every request and response gets on the way in and out, in one
//! layer: a request id (the client's `x-request-id`, or a new UUID),
//! echoed on the response; a trace id ([`crate::trace`]: the client's
//! `traceparent`, else the load balancer's `X-Amzn-Trace-Id`, else a new
//! one), answered in `x-trace-id`; the security headers every response carries
//! (`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, unless
//! the handler chose its own), and `Strict-Transport-Security` when the
//! request reached the load balancer over HTTPS (its `X-Forwarded-Proto`,
//! which the platform's nginx passes through); the request's method, path,
//! request id and trace id lent to the thread while it serves the request
//! ([`crate::telemetry::request`]), so each line logged meanwhile (a
//! database error, a 503's cause) carries them, and with the pretty format
//! a `request` span with the same fields; one log line per request with
//! method, path, status,
//! latency, request id and trace id (with `log.requests = "failures"`,
//! only for failed or slow requests); every answer counted for the metrics.
//!
//! One hand-written layer rather than tower-http's request-id and
//! set-header layers plus a logging middleware: each layer's future embeds
//! the next and every request builds and moves them all, which on the
//! cheapest request (`GET /health`) costs about as much as the request
//! itself (docs/performance.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};
use tracing::Span;

use crate::config::RequestLines;
use crate::metrics::{Requests, Route, Unavailable};
use crate::telemetry::request::{self, RequestFields};
use crate::trace::{TRACE_ID, Trace};

/// The header carrying the request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The scheme the client used to reach the load balancer.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers every response carries unless the handler set its own.
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
];

/// Sent on responses to requests that came over HTTPS: browsers then use
/// HTTPS only for this host for a year (RFC 6797). Not `includeSubDomains`
/// or `preload`: those bind names this service does not own. Browsers
/// ignore it on plain HTTP, so a client forging `X-Forwarded-Proto` on an
/// HTTP connection changes nothing.
const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// The layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    /// Where every answer is counted.
    requests: Arc<Requests>,
    /// Which answers get a `request` line.
    lines: LinePolicy,
    /// Whether each request gets a `request` span too (for the pretty
    /// format, which shows spans; the JSON lines read the lent fields).
    spans: bool,
}

impl Default for EdgeLayer {
    fn default() -> EdgeLayer {
        EdgeLayer::new(Arc::default(), RequestLines::All, Duration::MAX)
    }
}

impl EdgeLayer {
    /// The layer, counting answers into `requests` and writing a request
    /// line for those `lines` says (with `slow`, the least latency that
    /// counts as slow).
    pub fn new(requests: Arc<Requests>, lines: RequestLines, slow: Duration) -> EdgeLayer {
        EdgeLayer {
            requests,
            lines: LinePolicy { lines, slow },
            spans: false,
        }
    }

    /// The layer, also entering a `request` span around each request when
    /// `spans` is true.
    pub fn with_spans(self, spans: bool) -> EdgeLayer {
        EdgeLayer { spans, ..self }
    }
}

/// Which answers get a `request` line.
#[derive(Debug, Clone, Copy)]
struct LinePolicy {
    lines: RequestLines,
    slow: Duration,
}

impl LinePolicy {
    /// Whether an answer with `status` after `latency` gets its line.
    fn logs(self, status: StatusCode, latency: Duration) -> bool {
        match self.lines {
            RequestLines::All => true,
            RequestLines::Failures => {
                !(status.is_success() || status.is_redirection()) || latency >= self.slow
            }
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            requests: Arc::clone(&self.requests),
            lines: self.lines,
            spans: self.spans,
        }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    requests: Arc<Requests>,
    lines: LinePolicy,
    spans: bool,
}

impl<S, B, R> Service<Request<B>> for Edge<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = match request.headers().get(REQUEST_ID) {
            Some(given) if is_acceptable_id(given) => given.clone(),
            _ => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let over_https = request
            .headers()
            .get(X_FORWARDED_PROTO)
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
        let fields = RequestFields {
            method: request.method().clone(),
            uri: request.uri().clone(),
            request_id,
            trace: Trace::of(request.headers()),
        };
        let span = if self.spans {
            tracing::info_span!(
                target: "api::request",
                "request",
                method = fields.method.as_str(),
                path = fields.uri.path(),
                request_id = fields.request_id(),
                trace_id = fields.trace.id.as_str(),
                lb_trace_id = fields.trace.load_balancer.as_ref().map(|id| id.as_str()),
            )
        } else {
            Span::none()
        };
        let mut fields = Some(fields);
        let inner = request::within(&mut fields, || span.in_scope(|| self.inner.call(request)));
        EdgeFuture {
            started,
            requests: Arc::clone(&self.requests),
            lines: self.lines,
            over_https,
            fields,
            span,
            inner,
        }
    }
}

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// Whether a client's request id is one to echo and log: 1 to
/// [`MAX_REQUEST_ID`] characters of `A-Z a-z 0-9 . _ -`. Anything else is
/// replaced, so a client cannot fill log lines or forge their structure.
fn is_acceptable_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=MAX_REQUEST_ID).contains(&bytes.len())
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// A fresh UUID v4 (from a generator seeded by the OS).
fn new_request_id() -> HeaderValue {
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(id).expect("a hyphenated UUID is a valid header value")
}

pin_project_lite::pin_project! {
    /// The response of [`Edge`].
    #[derive(Debug)]
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        requests: Arc<Requests>,
        lines: LinePolicy,
        over_https: bool,
        // Lent to the thread while the inner service runs; the request
        // line itself is written outside, with the same fields of its own.
        fields: Option<RequestFields>,
        // With the pretty format, entered while the inner service runs;
        // otherwise `Span::none()`.
        span: Span,
    }
}

impl<F, R, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (span, inner) = (this.span, this.inner);
        let polled = request::within(this.fields, || span.in_scope(|| inner.poll(cx)));
        let mut response = ready!(polled)?;
        let fields = this
            .fields
            .as_ref()
            .expect("the fields are given back after every poll");
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID, fields.request_id.clone());
        headers.insert(TRACE_ID, fields.trace.id.header_value());
        for (name, value) in SECURITY_HEADERS {
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
        if *this.over_https {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
        }
        let latency = this.started.elapsed();
        this.requests.record(
            Route::of(&fields.method, fields.uri.path()),
            response.status(),
            latency,
            response.extensions().get::<Unavailable>().copied(),
        );
        if !this.lines.logs(response.status(), latency) {
            return Poll::Ready(Ok(response));
        }
        // The fields are plain strings and numbers (no `Display` into
        // temporary strings): this line may be written for every request.
        tracing::info!(
            target: "api::request",
            method = fields.method.as_str(),
            path = fields.uri.path(),
            status = response.status().as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            request_id = fields.request_id(),
            trace_id = fields.trace.id.as_str(),
            lb_trace_id = fields.trace.load_balancer.as_ref().map(|id| id.as_str()),
            "request"
        );
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;
    use crate::telemetry::json::capture::Buffer;

    /// `request` through the layer around a handler that logs `message`
    /// (when given) and answers 200: the response, and the lines logged.
    /// Each call has a subscriber of its own: tracing caches whether a call
    /// site is enabled, and a test without one running beside another
    /// could leave the request line's call site switched off.
    async fn through_edge(
        request: Request<()>,
        message: Option<&'static str>,
    ) -> (Response<()>, String) {
        let buffer = Buffer::default();
        let _default = tracing::subscriber::set_default(buffer.subscriber());
        let handler = tower::service_fn(move |_request: Request<()>| async move {
            if let Some(message) = message {
                tracing::error!(code = "57P01", "{message}");
            }
            Ok::<_, Infallible>(Response::new(()))
        });
        let response = EdgeLayer::default()
            .layer(handler)
            .oneshot(request)
            .await
            .expect("infallible");
        (response, buffer.text())
    }

    /// The request id the layer answered for a request carrying `given`.
    async fn answered_id(given: &[u8]) -> String {
        let request = Request::get("/health")
            .header(
                REQUEST_ID,
                HeaderValue::from_bytes(given).expect("a header value"),
            )
            .body(())
            .expect("a valid request");
        let (response, _) = through_edge(request, None).await;
        response.headers()[REQUEST_ID]
            .to_str()
            .expect("text")
            .to_owned()
    }

    #[tokio::test]
    async fn a_plain_short_request_id_is_echoed_and_any_other_replaced() {
        for kept in ["given-id", "a.b_C-9", &"x".repeat(64)] {
            assert_eq!(answered_id(kept.as_bytes()).await, kept);
        }
        for replaced in [
            "x".repeat(65).into_bytes(),
            b"has space".to_vec(),
            b"quote\"".to_vec(),
            b"caf\xc3\xa9".to_vec(),
            b"new\tline".to_vec(),
        ] {
            let answered = answered_id(&replaced).await;
            assert!(
                uuid::Uuid::parse_str(&answered).is_ok(),
                "{:?} was answered {answered:?}, not a fresh id",
                String::from_utf8_lossy(&replaced)
            );
        }
    }

    #[tokio::test]
    async fn lines_logged_while_serving_carry_the_request_and_the_request_line_is_written_once() {
        let request = Request::post("/data?n=1")
            .header(REQUEST_ID, "given-id")
            .header(
                crate::trace::X_AMZN_TRACE_ID,
                "Root=1-67891233-abcdef012345678912345678",
            )
            .body(())
            .expect("a valid request");

        let (response, text) = through_edge(request, Some("the database went away")).await;

        let trace = "67891233abcdef012345678912345678";
        assert_eq!(response.headers()[TRACE_ID], trace);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "the database went away");
        assert_eq!(lines[0]["request_id"], "given-id");
        assert_eq!(lines[0]["method"], "POST");
        assert_eq!(lines[0]["path"], "/data");
        assert_eq!(lines[1]["message"], "request");
        assert_eq!(lines[1]["request_id"], "given-id");
        assert_eq!(lines[1]["status"], 200);
        for line in text.lines() {
            assert_eq!(line.matches("\"request_id\"").count(), 1, "{line}");
        }
        for line in &lines {
            assert_eq!(line["trace_id"], trace, "{line}");
            assert!(line.get("lb_trace_id").is_none(), "{line}");
        }
    }

    #[tokio::test]
    async fn with_spans_the_pretty_format_shows_the_request_on_lines_logged_inside() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .compact()
            .with_ansi(false)
            .with_writer(buffer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let handler = tower::service_fn(|_request: Request<()>| async {
            tracing::warn!("inside the handler");
            Ok::<_, Infallible>(Response::new(()))
        });
        let request = Request::get("/data")
            .header(REQUEST_ID, "given-id")
            .body(())
            .expect("a valid request");

        EdgeLayer::default()
            .with_spans(true)
            .layer(handler)
            .oneshot(request)
            .await
            .expect("infallible");

        let text = buffer.text();
        let inside = text
            .lines()
            .find(|line| line.contains("inside the handler"))
            .unwrap_or_else(|| panic!("no line from the handler in {text:?}"));
        assert!(
            inside.contains("request_id=")
                && inside.contains("given-id")
                && inside.contains("path="),
            "{inside}"
        );
    }

    #[tokio::test]
    async fn a_clients_traceparent_is_the_trace_id_and_the_load_balancers_root_stays_beside_it() {
        let request = Request::get("/data")
            .header(
                crate::trace::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header(
                crate::trace::X_AMZN_TRACE_ID,
                "Root=1-67891233-abcdef012345678912345678",
            )
            .body(())
            .expect("a valid request");

        let (response, text) = through_edge(request, Some("inside the handler")).await;

        assert_eq!(
            response.headers()[TRACE_ID],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(
                line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
                "{line}"
            );
            assert_eq!(
                line["lb_trace_id"], "67891233abcdef012345678912345678",
                "{line}"
            );
        }
    }

    #[tokio::test]
    async fn each_answer_is_counted_with_its_route_and_a_503_with_its_cause() {
        let requests = Arc::new(Requests::default());
        let layer = EdgeLayer::new(Arc::clone(&requests), RequestLines::All, Duration::MAX);
        let handler = tower::service_fn(|request: Request<()>| async move {
            let mut response = Response::new(());
            if request.uri().path() == "/data" {
                *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                response.extensions_mut().insert(Unavailable::QueueFull);
            }
            Ok::<_, Infallible>(response)
        });
        let service = layer.layer(handler);
        for (method, path) in [("POST", "/data"), ("GET", "/health"), ("GET", "/health")] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .expect("a valid request");
            service.clone().oneshot(request).await.expect("infallible");
        }

        let sources = crate::metrics::Sources {
            requests,
            store: Arc::default(),
            dropped_lines: || 0,
        };
        let text = crate::metrics::render_for_test(&sources);
        let metrics: Vec<_> = text
            .lines()
            .flat_map(|line| testkit::emf::parse(line).expect("valid EMF"))
            .collect();
        let value = |name: &str, route: Option<&str>| {
            metrics
                .iter()
                .find(|metric| metric.name == name && metric.dimension("Route") == route)
                .map(|metric| metric.values.clone())
        };
        assert_eq!(value("Requests", Some("GET /health")), Some(vec![2.0]));
        assert_eq!(value("Requests.5xx", Some("POST /data")), Some(vec![1.0]));
        assert_eq!(value("Unavailable.QueueFull", None), Some(vec![1.0]));
        assert_eq!(value("Unavailable.TimedOut", None), Some(vec![0.0]));
    }

    #[tokio::test]
    async fn with_failures_only_a_failed_or_slow_answer_gets_its_line_and_every_one_is_counted() {
        let buffer = Buffer::default();
        let _default = tracing::subscriber::set_default(buffer.subscriber());
        let requests = Arc::new(Requests::default());
        let layer = EdgeLayer::new(
            Arc::clone(&requests),
            RequestLines::Failures,
            Duration::from_millis(50),
        );
        let handler = tower::service_fn(|request: Request<()>| async move {
            let mut response = Response::new(());
            match request.uri().path() {
                "/missing" => *response.status_mut() = StatusCode::NOT_FOUND,
                "/slow" => tokio::time::sleep(Duration::from_millis(60)).await,
                _ => {}
            }
            Ok::<_, Infallible>(response)
        });
        let service = layer.layer(handler);
        for path in ["/ok", "/missing", "/slow", "/ok"] {
            let request = Request::get(path).body(()).expect("a valid request");
            service.clone().oneshot(request).await.expect("infallible");
        }

        let logged: Vec<serde_json::Value> = buffer
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect();
        let paths: Vec<&str> = logged
            .iter()
            .filter(|line| line["message"] == "request")
            .filter_map(|line| line["path"].as_str())
            .collect();
        assert_eq!(paths, ["/missing", "/slow"]);
        let sources = crate::metrics::Sources {
            requests,
            store: Arc::default(),
            dropped_lines: || 0,
        };
        let counted: f64 = crate::metrics::render_for_test(&sources)
            .lines()
            .flat_map(|line| testkit::emf::parse(line).expect("valid EMF"))
            .filter(|metric| metric.name == "Requests" && metric.dimension("Route").is_some())
            .flat_map(|metric| metric.values)
            .sum();
        assert_eq!(counted, 4.0, "every answer is counted");
    }
}
