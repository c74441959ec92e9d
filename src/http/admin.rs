//! The admin JSON API under `/admin/v1`: the operator commands of the CLI over HTTP, for the
//! utility's own tools. Every call needs `Authorization: Bearer <token>` from the tokens file
//! (`[http] admin_tokens_file`, see `tokens.rs`); the token names the operator, and every write
//! is audited with that name, exactly as the CLI's `--by`. Tokens never reach a log. Personal
//! data is masked as in the CLI's output.
//!
//! Reads: `GET records`, `records/{id}`, `failures`, `failures/{id}`, `deadlines`, `runs`,
//! `outbox`. Writes: `POST failures/{id}/replay` (`{"dry_run": bool}`), `failures/replay`
//! (`{"all": true}` or `{"category": "…"}` or `{"step": "…"}`, and `"dry_run"`: a bulk replay
//! audited as one action naming every item), `failures/{id}/dismiss`
//! (`{"reason": "…"}`), `outbox/{id}/retry`, `records/{id}/events` (`{"action": {"kind": …},
//! "at": "RFC 3339", "override_reason": "…"}`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use crate::store::{Store, StoreError};

/// An answer that is not a success: its status and why.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(why) => ApiError(StatusCode::CONFLICT, why),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::CONFLICT, format!("{e:#}"))
    }
}

type Answer = Result<Json<Value>, ApiError>;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/admin/v1/records", get(records))
        .route("/admin/v1/records/{id}", get(record))
        .route("/admin/v1/records/{id}/events", post(record_event))
        .route("/admin/v1/failures", get(failures))
        .route("/admin/v1/failures/replay", post(replay_many))
        .route("/admin/v1/failures/{id}", get(failure))
        .route("/admin/v1/failures/{id}/replay", post(replay))
        .route("/admin/v1/failures/{id}/dismiss", post(dismiss))
        .route("/admin/v1/deadlines", get(deadlines))
        .route("/admin/v1/runs", get(runs))
        .route("/admin/v1/outbox", get(outbox))
        .route("/admin/v1/outbox/{id}/retry", post(retry))
}

/// The operator the request's bearer token names.
fn operator(state: &HttpState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorised = || {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        )
    };
    let tokens = state.admin_tokens.as_ref().ok_or_else(unauthorised)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorised)?;
    match tokens.operator(token) {
        Some(name) => Ok(name.to_string()),
        None => {
            tracing::warn!("admin API: a request with an unknown bearer token was refused");
            Err(unauthorised())
        }
    }
}

/// Runs `f` on the store off the async workers.
async fn with_store<T: Send + 'static>(
    state: &HttpState,
    f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match state.store.call(move |s| Ok::<_, StoreError>(f(s))).await {
        Ok(r) => r,
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn records(State(state): State<HttpState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Answer {
    operator(&state, &headers)?;
    let rows = with_store(&state, move |s| {
        Ok(s.records(q.state.as_deref(), q.limit.unwrap_or(50))?)
    })
    .await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

async fn record(State(state): State<HttpState>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    operator(&state, &headers)?;
    with_store(&state, move |s| {
        let versions = s.record_versions(&id)?;
        let Some(current) = versions.last() else {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no record {id}")));
        };
        let mut content = current.content.clone();
        let (lineage, _) = crate::mapping::lineage::from_json(&current.lineage)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        crate::mask::record_json(&mut content, &lineage);
        Ok(Json(json!({
            "id": id,
            "version": current.version,
            "content": content,
            "versions": versions.iter().map(|v| json!({"version": v.version, "change": v.change,
                "source_version": v.source_version, "document_sha256": v.document_sha256,
                "content_sha256": v.content_sha256, "created_at": v.created_at})).collect::<Vec<_>>(),
            "actions": s.actions(&id)?,
            "joint_application": s.joint_application_of(&id)?,
        })))
    })
    .await
}

async fn failures(State(state): State<HttpState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Answer {
    operator(&state, &headers)?;
    let rows = with_store(&state, move |s| {
        Ok(s.failures(q.state.as_deref(), q.limit.unwrap_or(50))?)
    })
    .await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

async fn failure(State(state): State<HttpState>, headers: HeaderMap, Path(id): Path<i64>) -> Answer {
    operator(&state, &headers)?;
    with_store(&state, move |s| match s.failure(id)? {
        Some(f) => Ok(Json(serde_json::to_value(f).unwrap_or_default())),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no failure {id}"))),
    })
    .await
}

#[derive(Deserialize, Default)]
struct ReplayBody {
    #[serde(default)]
    dry_run: bool,
}

async fn replay(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<ReplayBody>>,
) -> Answer {
    let by = operator(&state, &headers)?;
    let dry_run = body.map(|b| b.dry_run).unwrap_or(false);
    let rebuilder = state.rebuilder.clone();
    with_store(&state, move |s| {
        let selection = crate::cli::replay::Selection {
            id: Some(id),
            ..Default::default()
        };
        let (items, summary) = crate::cli::replay::run(s, &rebuilder, &selection, &by, dry_run)?;
        Ok(Json(json!({ "summary": summary, "items": items })))
    })
    .await
}

/// Which held failures a bulk replay takes: every one, or those of a category or a step
/// (as `gateway failures replay --all | --category C | --step S`).
#[derive(Deserialize, Default)]
struct ReplayManyBody {
    #[serde(default)]
    all: bool,
    category: Option<String>,
    step: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

async fn replay_many(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Json(body): Json<ReplayManyBody>,
) -> Answer {
    let by = operator(&state, &headers)?;
    if !body.all && body.category.is_none() && body.step.is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "say which failures: \"all\": true, \"category\" or \"step\"".into(),
        ));
    }
    let rebuilder = state.rebuilder.clone();
    with_store(&state, move |s| {
        let selection = crate::cli::replay::Selection {
            id: None,
            all: body.all,
            category: body.category,
            step: body.step,
        };
        let (items, summary) = crate::cli::replay::run(s, &rebuilder, &selection, &by, body.dry_run)?;
        Ok(Json(json!({ "summary": summary, "items": items })))
    })
    .await
}

#[derive(Deserialize)]
struct DismissBody {
    reason: String,
}

async fn dismiss(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(body): Json<DismissBody>,
) -> Answer {
    let by = operator(&state, &headers)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "dismissing needs a reason".into(),
        ));
    }
    with_store(&state, move |s| {
        s.resolve_failure(id, &by, &body.reason, None, &[], Utc::now())?;
        Ok(Json(json!({ "failure": id, "state": "dismissed", "by": by })))
    })
    .await
}

async fn deadlines(State(state): State<HttpState>, headers: HeaderMap) -> Answer {
    operator(&state, &headers)?;
    let rules = state.rebuilder.rules.clone();
    let rows = with_store(&state, move |s| {
        Ok(crate::deadlines::current(s, &rules, Utc::now())?)
    })
    .await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

async fn runs(State(state): State<HttpState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Answer {
    operator(&state, &headers)?;
    let rows = with_store(&state, move |s| Ok(s.runs(q.limit.unwrap_or(20))?)).await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

async fn outbox(State(state): State<HttpState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Answer {
    operator(&state, &headers)?;
    let (calls, total) = with_store(&state, move |s| {
        Ok(s.outbox(q.state.as_deref(), q.limit.unwrap_or(50))?)
    })
    .await?;
    // Bodies carry the applicant's data: as the CLI shows them, masked.
    let calls: Vec<Value> = calls.iter().map(crate::cli::outbox_call_json).collect();
    Ok(Json(json!({ "calls": calls, "total": total })))
}

async fn retry(State(state): State<HttpState>, headers: HeaderMap, Path(id): Path<i64>) -> Answer {
    let by = operator(&state, &headers)?;
    with_store(&state, move |s| {
        s.retry_call(id, &by, Utc::now())?;
        Ok(Json(json!({ "call": id, "state": "pending", "by": by })))
    })
    .await
}

#[derive(Deserialize)]
struct EventBody {
    action: crate::stages::Action,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    override_reason: Option<String>,
}

async fn record_event(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<EventBody>,
) -> Answer {
    let by = operator(&state, &headers)?;
    if matches!(body.action, crate::stages::Action::Superseded { .. }) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a record is superseded by the gateway only".into(),
        ));
    }
    let now = Utc::now();
    let at = match &body.at {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("at: {e}")))?
            .with_timezone(&Utc),
        None => now,
    };
    let rebuilder = state.rebuilder.clone();
    with_store(&state, move |s| {
        let action = body.action;
        let override_reason = body.override_reason;
        let (action_id, version) = s.record_stage_event(
            &id,
            crate::store::NewAction {
                action: &action,
                at,
                by: &by,
                override_reason: override_reason.as_deref(),
            },
            now,
            &rebuilder,
        )?;
        Ok(Json(
            json!({ "record": id, "action_id": action_id, "record_version": version, "by": by }),
        ))
    })
    .await
}
