//! Building the router, binding the listener, serving and shutting down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{CorsSettings, LogFormat, Settings};
use crate::edge::{EdgeLayer, REQUEST_ID};
use crate::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::metrics::{self, Reporter};
use crate::routes::{self, data};
use crate::state::AppState;
use crate::store::Store;
use crate::trace::{TRACE_ID, TRACEPARENT};
use crate::{db, error, idempotency, openapi, telemetry, web};

/// Where Swagger UI is served.
const DOCS: &str = "/docs";

/// Where the OpenAPI document is served.
const OPENAPI_JSON: &str = "/openapi.json";

/// The Content-Security-Policy of the documentation: Swagger UI's own
/// scripts and styles from this origin, the inline styles and `data:`
/// images it renders with, calls to this origin only, never in a frame.
const DOCS_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                           img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                           object-src 'none'; base-uri 'none'; form-action 'self'; \
                           frame-ancestors 'none'";

/// The complete application: API, documentation and middleware, with the
/// request timeout and CORS origins of `settings`.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let (api, paths) = routes::api_routes().split_for_parts();
    // Unknown paths under the API's own answer a JSON 404, never the page.
    let mut api_prefixes = web::first_segments(&paths);
    api_prefixes.extend([DOCS.to_owned(), OPENAPI_JSON.to_owned()]);
    let fallback = web::Fallback::new(state.web.clone(), api_prefixes);
    let docs = Router::new()
        .merge(SwaggerUi::new(DOCS).url(OPENAPI_JSON, openapi::document_with(paths)))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_POLICY),
        ));
    let cors = cors_layer(&settings.cors);
    let timeout = settings.server.request_timeout();
    let edge = EdgeLayer::new(
        Arc::clone(&state.requests),
        settings.log.requests,
        Duration::from_millis(settings.log.slow_ms),
    )
    .with_spans(settings.log.format == LogFormat::Pretty);
    api.merge(docs)
        .fallback(move |request| fallback.clone().serve(request))
        .layer(DefaultBodyLimit::max(data::create::BODY_LIMIT))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(edge)
                .layer(error::ProblemForBareErrorsLayer)
                .option_layer(cors)
                .layer(CatchPanicLayer::new())
                // 503, not 408: browsers send a request again by themselves
                // on a 408, a POST included.
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                )),
        )
}

/// CORS is off (no headers, browsers refuse cross-origin calls) unless
/// origins are listed in `cors.allowed_origins`.
fn cors_layer(settings: &CorsSettings) -> Option<CorsLayer> {
    if settings.allowed_origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = settings
        .allowed_origins
        .iter()
        .map(|origin| origin.header_value().clone())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                REQUEST_ID,
                IDEMPOTENCY_KEY,
                TRACEPARENT,
            ])
            .expose_headers([
                header::LOCATION,
                REQUEST_ID,
                TRACE_ID,
                IDEMPOTENT_REPLAYED,
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

/// A bound, ready-to-serve instance of the service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// The data store the router serves from.
    store: Store,
    router: Router,
    /// Writes the metrics every interval, and a last time at shutdown.
    reporter: Option<Reporter>,
    grace: Duration,
    header_read_timeout: Duration,
}

impl Application {
    /// Finds the database, migrates when configured to, starts the store
    /// (renewing its password when that expires) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let connection = db::connection(&settings).await?;
        let application =
            Application::build_with_options(settings, connection.options.clone()).await?;
        if let Some(renewal) = connection.renewal {
            db::renew(application.store.clone(), connection.options, renewal);
        }
        Ok(application)
    }

    /// Like [`Application::build`], connecting with `options` (a password
    /// that never expires).
    pub async fn build_with_options(
        settings: Settings,
        options: PgConnectOptions,
    ) -> anyhow::Result<Application> {
        if settings.database.migrate_on_start {
            db::migrate_with(&options).await?;
        }
        let address = SocketAddr::new(settings.server.host, settings.server.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (server.host, server.port)"))?;
        let grace = settings.server.shutdown_grace();
        let header_read_timeout = settings.server.header_read_timeout();
        let store = Store::connect(options, &settings.database);
        store.every(
            idempotency::PRUNE_EVERY,
            "expired Idempotency-Keys",
            |store| async move { idempotency::prune(&store).await },
        );
        let state = AppState::new(store.clone(), &settings.web)?;
        let reporter = Reporter::start(
            &settings.metrics,
            metrics::Sources {
                requests: Arc::clone(&state.requests),
                store: store.metrics(),
                dropped_lines: telemetry::dropped_lines,
            },
        );
        Ok(Application {
            listener,
            store,
            reporter,
            router: router(state, &settings),
            grace,
            header_read_timeout,
        })
    }

    /// The data store it serves from (for its figures).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests
    /// finish for at most the grace period.
    ///
    /// hyper's HTTP/1 connection builder rather than `axum::serve`, which
    /// runs hyper without a timer and so with no header read timeout: here
    /// a client must send a request's headers within
    /// `server.header_read_timeout_secs` from the moment it connects (or
    /// its previous response was sent), which also closes a connection
    /// that sends nothing, or a kept-alive one left idle that long.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut connections = http1::Builder::new();
        connections
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let connections = Arc::new(connections);
        let graceful = GracefulShutdown::new();

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        accept_failed(&error).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Without TCP_NODELAY, a response written in several pieces
            // (static files) waits out the peer's delayed ACK: about 40 ms each.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let service = TowerToHyperService::new(self.router.clone());
            let connections = Arc::clone(&connections);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let connection = connections.serve_connection(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
        // Stop accepting, then let open connections finish what they started.
        drop(self.listener);
        tracing::info!(
            grace_secs = self.grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        tokio::select! {
            () = graceful.shutdown() => {},
            () = tokio::time::sleep(self.grace) => tracing::warn!("grace period over: exiting with requests still in flight"),
        }
        if let Some(reporter) = self.reporter {
            reporter.finish().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// After a failed `accept`: a connection that went away before it was
/// accepted is nothing; anything else (out of file descriptors, say) is
/// logged and waited out for a second rather than retried in a busy loop.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Completes on Ctrl-C or SIGTERM (what Elastic Beanstalk sends on deploys).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
