//! `GET /metrics`: the Prometheus text format, rendered by the `metrics` crate's Prometheus
//! exporter from the internal events (`crate::events`). The store's gauges (cursor lag, queues,
//! backlogs) are sampled at each scrape, so they are as fresh as the scrape.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;

use super::HttpState;
use crate::events::{InternalEvent, StoreSampled};

pub async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(handle) = state.metrics.clone() else {
        return (StatusCode::NOT_FOUND, "metrics are not configured").into_response();
    };
    let now = state.clock.now();
    // Records whose check missed items are checked again a day later (as the sync does).
    let recheck_before = now - Duration::hours(24);
    match state.store.call(move |s| s.sample(now, recheck_before)).await {
        Ok(sample) => StoreSampled { sample: &sample }.emit(),
        // The rest still renders; the sample's absence shows as stale gauges and in the log.
        Err(e) => tracing::error!("sampling the store for metrics failed: {e}"),
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
