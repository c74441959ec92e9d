//! The daemon's HTTP server on `[http] listen`: health, readiness and metrics, the admin API
//! when a tokens file is configured, and the power side's webhooks when their key is set.
//!
//! Handlers reach the store through [`AsyncStore`] like every other async code, and the server
//! stops with the daemon's cancellation token, letting a request in hand finish.

pub mod admin;
pub mod health;
pub mod metrics;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use shuiwu_wire::{Clock, Secret};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::AsyncStore;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub store: AsyncStore,
    pub clock: Arc<dyn Clock>,
    /// The power side's webhook key; without it the webhook route is not served.
    pub power_webhook_secret: Option<Secret>,
    /// Builds the water records of power-origin applications an event brings.
    pub rebuilder: crate::rebuild::Rebuilder,
    /// What `/readyz` judges with; without it the route answers 404.
    pub readiness: Option<Arc<health::Readiness>>,
    /// The metrics recorder's handle; without it `/metrics` answers 404.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The admin API's operators; without them `/admin/v1` is not served.
    pub admin_tokens: Option<Arc<tokens::Tokens>>,
    /// The console's accounts and sessions; without them `/console` is not served.
    pub console: Option<Arc<crate::console::pages::Console>>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics));
    if state.admin_tokens.is_some() {
        router = router.merge(admin::routes());
    }
    if state.console.is_some() {
        router = router.merge(crate::console::pages::routes());
    }
    if state.power_webhook_secret.is_some() {
        router = router.route("/webhooks/power", post(webhooks::power));
    }
    router.with_state(state)
}

/// Serves until `token` is cancelled.
pub async fn serve(listener: TcpListener, state: HttpState, token: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}
