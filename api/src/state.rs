//! What every handler can reach: the data store, the configuration and the
//! built web client, in one shared allocation.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;

use crate::config::Settings;
use crate::store::Store;
use crate::web::WebAssets;

/// What every handler can reach. One shared allocation: axum clones the
/// state for every request, and a single reference count keeps that cheap.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The data store: a few connections serving requests in batches.
    pub store: Store,
    /// The configuration the service started with.
    pub settings: Settings,
    /// The built web client, when `web.dir` holds one.
    pub web: Option<Arc<WebAssets>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state over a store connecting with `options`, loading the web
    /// client from `web.dir`. Must be called inside a tokio runtime.
    pub fn new(options: PgConnectOptions, settings: Settings) -> anyhow::Result<AppState> {
        let web = WebAssets::load(&settings.web.dir)?;
        if web.is_none() {
            tracing::warn!(
                dir = %settings.web.dir.display(),
                "no web client in web.dir (build it with `cargo xtask web`): serving the API only"
            );
        }
        let store = Store::start(options, settings.database.store());
        Ok(AppState(Arc::new(Shared {
            store,
            settings,
            web: web.map(Arc::new),
        })))
    }
}
