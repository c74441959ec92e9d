//! `POST /webhooks/power`: events the power side pushes.
//!
//! An event is authenticated before anything is read from it: `X-KMGD-Signature: v1=<hex>`
//! is HMAC-SHA256 over `timestamp + "." + raw body` with the shared key, compared in constant
//! time, and `X-KMGD-Timestamp` (seconds) must be within 300 s of the gateway's clock, so a
//! captured event cannot be replayed later. It is then kept, with its raw bytes, before the
//! 2xx: a repeated `eventId` is acknowledged without acting twice, and an older version
//! arriving late never overwrites a newer one. The power side retries anything not
//! acknowledged for 24 h; polling the listing stays the reference either way.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shuiwu_power::Application;
use shuiwu_wire::{FetchMeta, RawDocument};

use super::HttpState;

/// How far an event's timestamp may be from the gateway's clock.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    application: Application,
}

/// Why an event was refused; the message is safe to answer and to log.
fn refuse(status: StatusCode, why: &str) -> Response {
    tracing::warn!(status = status.as_u16(), "power webhook refused: {why}");
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

pub use shuiwu_power::webhook::{sign, verify};

pub async fn power(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = state.power_webhook_secret.as_ref() else {
        return refuse(StatusCode::NOT_FOUND, "webhooks are not configured");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (header("x-kmgd-timestamp"), header("x-kmgd-signature")) else {
        return refuse(StatusCode::UNAUTHORIZED, "missing signature headers");
    };
    let now = state.clock.now();
    match timestamp.trim().parse::<i64>() {
        Ok(t) if (now.timestamp() - t).abs() <= TOLERANCE_SECS => {}
        Ok(_) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "timestamp too far from the gateway's clock",
            );
        }
        Err(_) => return refuse(StatusCode::UNAUTHORIZED, "timestamp is not a number of seconds"),
    }
    if !verify(key.expose().as_bytes(), timestamp.trim(), &body, signature) {
        return refuse(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let event: Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        // Authentic but unreadable: a 2xx would lose it, a 5xx has it sent again for 24 h;
        // polling brings the change anyway.
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("not an event: {e}")),
    };
    let raw = RawDocument {
        bytes: std::sync::Arc::from(&body[..]),
        meta: FetchMeta {
            source: "power".into(),
            method: "WEBHOOK".into(),
            url: "/webhooks/power".into(),
            status: 200,
            request_id: Some(event.event_id.clone()),
            content_type: header("content-type").map(str::to_string),
            fetched_at: now,
        },
    };
    let Event {
        event_id,
        kind,
        application,
    } = event;
    let id = event_id.clone();
    let rebuilder = state.rebuilder.clone();
    let stored = state
        .store
        .call(move |s| s.receive_power_event(&id, &kind, &application, &raw, &rebuilder, now))
        .await;
    match stored {
        Ok(new) => {
            tracing::info!(event = %event_id, duplicate = !new, "power webhook event kept");
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({ "accepted": true, "duplicate": !new })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(event = %event_id, "power webhook event not kept: {e}");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be kept; send it again",
            )
        }
    }
}
