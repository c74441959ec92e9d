//! The console's failure queue: held failures, one with its reason, its raw document (masked)
//! and what replaying it would change, shown before anything changes; replay and dismiss for
//! the operator role, each form with the session's CSRF token, audited with the person's name.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::pages::{Needs, ReasonForm, render, see_other, session, unavailable, with_store, writer};
use super::session::Session;
use crate::http::HttpState;

/// Failures listed at most.
const LISTED: usize = 500;

struct Row {
    id: i64,
    category: String,
    step: String,
    key: String,
    reason: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/failures.html")]
struct Queue {
    name: String,
    role: &'static str,
    csrf: String,
    rows: Vec<Row>,
    /// Held failures by category.
    categories: Vec<(String, i64)>,
}

pub(super) async fn list(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let found = with_store(&state, |store| {
        Ok((store.failures(Some("held"), LISTED)?, store.held_by_category()?))
    })
    .await;
    let (held, categories) = match found {
        Ok(f) => f,
        Err(e) => return unavailable("failures", e),
    };
    render(&Queue {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        categories: categories.into_iter().collect(),
        rows: held
            .into_iter()
            .map(|f| Row {
                id: f.id,
                category: f.category,
                step: f.step,
                key: f.key.unwrap_or_default(),
                reason: f.reason,
                created_at: f.created_at,
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "console/failure.html")]
struct Item {
    name: String,
    role: &'static str,
    csrf: String,
    may_operate: bool,
    id: i64,
    state: String,
    category: String,
    step: String,
    key: String,
    reason: String,
    problem: Option<String>,
    replay_outcome: String,
    replay_reason: String,
    changes: Vec<(String, String, String)>,
    raw: String,
}

async fn item_page(
    state: &HttpState,
    s: Session,
    id: i64,
    problem: Option<String>,
    status: StatusCode,
) -> Response {
    let rebuilder = state.rebuilder.clone();
    let mappings = state.console.as_ref().map(|c| c.mappings.clone());
    let found = with_store(state, move |store| {
        let Some(f) = store.failure(id)? else {
            return Ok(None);
        };
        let raw = match &f.document_sha256 {
            Some(sha) => store.document(sha)?.map(|(bytes, _)| {
                match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Ok(mut v) => {
                        if let Some(m) = &mappings {
                            crate::mask::raw_document(&mut v, m);
                        }
                        serde_json::to_string_pretty(&v).unwrap_or_default()
                    }
                    Err(_) => format!("({} bytes, not JSON)", bytes.len()),
                }
            }),
            None => None,
        };
        // The replay's diff before anything changes (a dry run writes nothing).
        let preview = if f.state == "held" {
            let selection = crate::cli::replay::Selection {
                id: Some(id),
                ..Default::default()
            };
            crate::cli::replay::run(store, &rebuilder, &selection, "", true)
                .ok()
                .and_then(|(items, _)| items.into_iter().next())
        } else {
            None
        };
        Ok(Some((f, raw, preview)))
    })
    .await;
    let (f, raw, preview) = match found {
        Ok(Some(x)) => x,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no failure {id}")).into_response(),
        Err(e) => return unavailable("failure", e),
    };
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    };
    let mut response = render(&Item {
        may_operate: s.role.may_operate(),
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        id,
        state: f.state,
        category: f.category,
        step: f.step,
        key: f.key.unwrap_or_default(),
        reason: f.reason,
        problem,
        replay_outcome: preview.as_ref().map(|p| p.outcome.clone()).unwrap_or_default(),
        replay_reason: preview
            .as_ref()
            .and_then(|p| p.reason.clone())
            .unwrap_or_default(),
        changes: preview
            .map(|p| {
                p.changes
                    .iter()
                    .map(|c| (c.field.clone(), show(&c.before), show(&c.after)))
                    .collect()
            })
            .unwrap_or_default(),
        raw: raw.unwrap_or_else(|| "(none)".into()),
    });
    *response.status_mut() = status;
    response
}

pub(super) async fn item(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    item_page(&state, s, id, None, StatusCode::OK).await
}

pub(super) async fn replay(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Operator) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let rebuilder = state.rebuilder.clone();
    let by = s.name.clone();
    let done = with_store(&state, move |store| {
        let selection = crate::cli::replay::Selection {
            id: Some(id),
            ..Default::default()
        };
        crate::cli::replay::run(store, &rebuilder, &selection, &by, false)
    })
    .await;
    match done {
        Ok((items, _)) => match items
            .first()
            .filter(|i| matches!(i.outcome.as_str(), "still_failing" | "not_replayable"))
        {
            Some(i) => {
                let why = format!("没有重放：{}", i.reason.clone().unwrap_or_default());
                item_page(&state, s, id, Some(why), StatusCode::CONFLICT).await
            }
            None => see_other(&format!("/console/failures/{id}")),
        },
        Err(e) => item_page(&state, s, id, Some(e.to_string()), StatusCode::CONFLICT).await,
    }
}

pub(super) async fn dismiss(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Operator) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if form.reason.trim().is_empty() {
        return item_page(
            &state,
            s,
            id,
            Some("关闭需要原因".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let by = s.name.clone();
    let reason = form.reason.trim().to_string();
    let done = state
        .store
        .call(move |store| store.resolve_failure(id, &by, &reason, None, &[], Utc::now()))
        .await;
    match done {
        Ok(_) => see_other(&format!("/console/failures/{id}")),
        Err(e) => item_page(&state, s, id, Some(e.to_string()), StatusCode::CONFLICT).await,
    }
}

#[derive(Deserialize)]
pub(super) struct CategoryQuery {
    category: String,
}

struct BulkRow {
    failure: i64,
    key: String,
    outcome: String,
    reason: String,
    changes: usize,
}

#[derive(Template)]
#[template(path = "console/bulk.html")]
struct Bulk {
    name: String,
    role: &'static str,
    csrf: String,
    may_operate: bool,
    category: String,
    /// Whether the rows are what a replay did (else what it would do).
    applied: bool,
    rows: Vec<BulkRow>,
    summary: Vec<(String, String)>,
}

fn bulk_page(
    s: Session,
    category: String,
    applied: bool,
    items: Vec<crate::cli::replay::Item>,
    summary: serde_json::Value,
) -> Response {
    render(&Bulk {
        may_operate: s.role.may_operate(),
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        category,
        applied,
        rows: items
            .into_iter()
            .map(|i| BulkRow {
                failure: i.failure,
                key: i.key.unwrap_or_default(),
                outcome: i.outcome,
                reason: i.reason.unwrap_or_default(),
                changes: i.changes.len(),
            })
            .collect(),
        summary: summary
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default(),
    })
}

/// `GET /console/failures/bulk?category=C`: what replaying every held failure of a category
/// would do, before anything changes (a dry run), with the operator's confirm form.
pub(super) async fn bulk_preview(
    State(state): State<HttpState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<CategoryQuery>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let rebuilder = state.rebuilder.clone();
    let category = q.category.clone();
    let done = with_store(&state, move |store| {
        let selection = crate::cli::replay::Selection {
            category: Some(category),
            ..Default::default()
        };
        crate::cli::replay::run(store, &rebuilder, &selection, "", true)
    })
    .await;
    match done {
        Ok((items, summary)) => bulk_page(s, q.category, false, items, summary),
        Err(e) => unavailable("bulk replay preview", e),
    }
}

#[derive(Deserialize)]
pub(super) struct BulkForm {
    csrf: String,
    category: String,
}

/// `POST /console/failures/bulk`: replays every held failure of a category, by an operator,
/// audited with their name; shows what happened to each.
pub(super) async fn bulk_replay(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(form): Form<BulkForm>,
) -> Response {
    let s = match writer(&state, &headers, &form.csrf, Needs::Operator) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let rebuilder = state.rebuilder.clone();
    let (by, category) = (s.name.clone(), form.category.clone());
    let done = with_store(&state, move |store| {
        let selection = crate::cli::replay::Selection {
            category: Some(category),
            ..Default::default()
        };
        crate::cli::replay::run(store, &rebuilder, &selection, &by, false)
    })
    .await;
    match done {
        Ok((items, summary)) => {
            tracing::info!(name = %s.name, category = %form.category, "bulk replay from the console");
            bulk_page(s, form.category, true, items, summary)
        }
        Err(e) => unavailable("bulk replay", e),
    }
}
