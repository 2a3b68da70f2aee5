//! What every handler can reach: the data store, the built web client and
//! the request counts, in one shared allocation. Settings are not here: the router reads what
//! it needs of them when it is built.

use std::sync::Arc;

use crate::config::WebSettings;
use crate::idempotency::KeysInFlight;
use crate::metrics::Requests;
use crate::store::Store;
use crate::web::WebAssets;

/// What every handler can reach. One shared allocation: axum clones the
/// state for every request, and a single reference count keeps that cheap.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The data store: the connection pool and its batchers.
    pub store: Store,
    /// The built web client, when `web.dir` holds one.
    pub web: Option<Arc<WebAssets>>,
    /// The `Idempotency-Key`s whose first request is being served here.
    pub keys_in_flight: KeysInFlight,
    /// Every answer, counted by the edge layer for the metrics.
    pub requests: Arc<Requests>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state over `store`, loading the web client from `web.dir`.
    pub fn new(store: Store, web: &WebSettings) -> anyhow::Result<AppState> {
        let assets = WebAssets::load(&web.dir)?;
        if assets.is_none() {
            tracing::warn!(
                dir = %web.dir.display(),
                "no web client in web.dir (build it with `cargo xtask web`): serving the API only"
            );
        }
        Ok(AppState(Arc::new(Shared {
            store,
            web: assets.map(Arc::new),
            keys_in_flight: KeysInFlight::default(),
            requests: Arc::default(),
        })))
    }
}
