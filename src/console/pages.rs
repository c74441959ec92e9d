//! The console's routes and pages: sign-in and sign-out, and the overview. Every page needs a
//! session (else it sends the browser to the sign-in page), and every form carries the
//! session's CSRF token (the sign-in form, a token of its own in a cookie).

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::accounts::Accounts;
use super::session::{self, Session, Sessions};
use crate::http::HttpState;

/// The console's people and their sessions.
pub struct Console {
    pub accounts: Accounts,
    pub sessions: Sessions,
    /// The mapping files in force, for masking the raw documents shown.
    pub mappings: crate::mapping::MappingSet,
    /// Reports computed recently, with what they were computed from.
    pub reports: super::report_cache::ReportCache,
}

/// How long a session lasts without a request.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/deadlines", get(super::boards::deadlines))
        .route("/console/reports", get(super::boards::reports))
        .route("/console/reports.csv", get(super::boards::reports_csv))
        .route("/console/failures", get(super::queue::list))
        .route(
            "/console/failures/bulk",
            get(super::queue::bulk_preview).post(super::queue::bulk_replay),
        )
        .route("/console/failures/{id}", get(super::queue::item))
        .route("/console/failures/{id}/replay", post(super::queue::replay))
        .route("/console/failures/{id}/dismiss", post(super::queue::dismiss))
        .route("/console/records", get(super::records::list))
        .route("/console/records/{id}", get(super::records::record))
        .route("/console/records/{id}/reveal", post(super::records::reveal))
        .route("/console/records/{id}/export", post(super::records::export))
        .route("/console/records/{id}/events", post(super::records::event))
        .route("/console/records/{id}/field", get(super::lineage::field))
        .route("/console/documents/{sha}", get(super::lineage::document))
        .route("/console/documents/{sha}/raw", post(super::lineage::raw))
        .route("/console/mappings/{sha}", get(super::lineage::mapping))
}

pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("console page not rendered: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

pub(super) fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_string())]).into_response()
}

/// Runs `f` on the store's blocking pool with the errors of the commands it reuses.
pub(super) async fn with_store<T: Send + 'static>(
    state: &HttpState,
    f: impl FnOnce(&crate::store::Store) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    state
        .store
        .call(move |s| Ok::<_, crate::store::StoreError>(f(s)))
        .await?
}

/// The answer when the database cannot be read; the cause goes to the log only.
pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!("console {what}: {e}");
    (StatusCode::SERVICE_UNAVAILABLE, "the database could not be read").into_response()
}

/// A form that carries the session's CSRF token and a reason (replay, dismiss, reveal, the
/// exact bytes of a document); the reason may be empty where none is needed.
#[derive(Deserialize)]
pub(super) struct ReasonForm {
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) reason: String,
}

/// A download: `body` of `content_type`, offered to be saved as `filename` (quotes,
/// backslashes and control characters dropped from the name).
pub(super) fn attachment(content_type: &str, filename: &str, body: impl IntoResponse) -> Response {
    let name: String = filename
        .chars()
        .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
        .collect();
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// What a write needs beyond a session.
#[derive(Clone, Copy)]
pub(super) enum Needs {
    /// Replay, dismiss, stage events.
    Operator,
    /// Reveal personal data, export.
    Auditor,
}

/// The session of a write: signed in, the form's CSRF token, the role the write needs. A
/// refusal is logged with the person's name.
pub(super) fn writer(
    state: &HttpState,
    headers: &HeaderMap,
    csrf: &str,
    needs: Needs,
) -> Result<Session, Box<Response>> {
    let Some((_, s)) = session(state, headers) else {
        return Err(Box::new(see_other("/console/sign-in")));
    };
    if !session::same(&s.csrf, csrf) {
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "the form's CSRF token does not match").into_response(),
        ));
    }
    let (allowed, what) = match needs {
        Needs::Operator => (s.role.may_operate(), "only an operator may do this"),
        Needs::Auditor => (s.role.may_reveal(), "only an auditor may do this"),
    };
    if !allowed {
        tracing::warn!(name = %s.name, role = s.role.as_str(), "console write refused: {what}");
        return Err(Box::new((StatusCode::FORBIDDEN, what).into_response()));
    }
    Ok(s)
}

fn console(state: &HttpState) -> Option<&Arc<Console>> {
    state.console.as_ref()
}

/// The session a request belongs to, with its token.
pub(super) fn session(state: &HttpState, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = session::cookie(headers, session::COOKIE)?;
    let s = console(state)?.sessions.get(token)?;
    Some((token.to_string(), s))
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignIn {
    csrf: String,
    problem: Option<String>,
}

fn sign_in_page(status: StatusCode, problem: Option<String>) -> Response {
    let csrf = session::random_token();
    let mut response = render(&SignIn {
        csrf: csrf.clone(),
        problem,
    });
    *response.status_mut() = status;
    if let Ok(v) = session::set_cookie(session::SIGN_IN_COOKIE, &csrf, 600).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn sign_in_form() -> Response {
    sign_in_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct SignInForm {
    name: String,
    password: String,
    csrf: String,
}

async fn sign_in(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let Some(console) = console(&state).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let expected = session::cookie(&headers, session::SIGN_IN_COOKIE).unwrap_or("");
    if expected.is_empty() || !session::same(expected, &form.csrf) {
        tracing::warn!("console sign-in refused: the form's CSRF token does not match");
        return sign_in_page(StatusCode::FORBIDDEN, Some("表单已过期，请重新登录".into()));
    }
    let name = form.name.trim().to_string();
    let checked = {
        let console = console.clone();
        let name = name.clone();
        // Argon2 is slow on purpose: off the async threads.
        tokio::task::spawn_blocking(move || console.accounts.verify(&name, &form.password)).await
    };
    let Ok(Some(role)) = checked else {
        tracing::warn!(name = %name, "console sign-in refused: unknown name or wrong password");
        return sign_in_page(StatusCode::UNAUTHORIZED, Some("用户名或密码错误".into()));
    };
    let token = console.sessions.create(&name, role);
    tracing::info!(name = %name, role = role.as_str(), "console sign-in");
    let mut response = see_other("/console");
    for cookie in [
        session::set_cookie(session::COOKIE, &token, IDLE.as_secs()),
        session::set_cookie(session::SIGN_IN_COOKIE, "", 0),
    ] {
        if let Ok(v) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn sign_out(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((token, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    if !session::same(&s.csrf, &form.csrf) {
        return (StatusCode::FORBIDDEN, "the form's CSRF token does not match").into_response();
    }
    if let Some(c) = console(&state) {
        c.sessions.end(&token);
    }
    tracing::info!(name = %s.name, "console sign-out");
    let mut response = see_other("/console/sign-in");
    if let Ok(v) = session::set_cookie(session::COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    name: String,
    role: &'static str,
    csrf: String,
    lags: Vec<(String, String)>,
    runs: Vec<RunLine>,
    /// Warning, overdue, unknown, on time.
    deadlines: (usize, usize, usize, usize),
    failures: Vec<(String, i64)>,
    outbox_pending: i64,
    outbox_oldest: String,
    records: i64,
    materials_backlog: u64,
}

struct RunLine {
    id: i64,
    started_at: String,
    finished_at: String,
    outcome: String,
    processed: i64,
}

/// A duration in seconds as people read it.
pub(super) fn span(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    match s {
        0..=119 => format!("{s} 秒"),
        120..=7199 => format!("{} 分钟", s / 60),
        7200..=172_799 => format!("{} 小时", s / 3600),
        _ => format!("{} 天", s / 86_400),
    }
}

async fn overview(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let rules = state.rebuilder.rules.clone();
    let data = state
        .store
        .call(move |store| {
            let now = Utc::now();
            let sample = store.sample(now, now - Duration::hours(24))?;
            let runs = store.runs(5)?;
            let deadlines = crate::deadlines::current(store, &rules, now)?;
            Ok::<_, crate::store::StoreError>((sample, runs, deadlines))
        })
        .await;
    let (sample, runs, deadlines) = match data {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("console overview: {e}");
            return (StatusCode::SERVICE_UNAVAILABLE, "the database could not be read").into_response();
        }
    };
    use crate::deadlines::DeadlineState as D;
    let count = |st: D| deadlines.iter().filter(|d| d.state == st).count();
    render(&Overview {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        lags: sample
            .cursor_lag_seconds
            .iter()
            .map(|(k, v)| (k.clone(), span(*v)))
            .collect(),
        runs: runs
            .into_iter()
            .map(|r| RunLine {
                id: r.id,
                started_at: r.started_at,
                finished_at: r.finished_at.unwrap_or_default(),
                outcome: r.outcome,
                processed: r.processed,
            })
            .collect(),
        deadlines: (
            count(D::Warning),
            count(D::Overdue),
            count(D::Unknown),
            count(D::OnTime),
        ),
        failures: sample.failures_held.into_iter().collect(),
        outbox_pending: sample.outbox_pending,
        outbox_oldest: span(sample.outbox_oldest_age_seconds),
        records: sample.records,
        materials_backlog: sample.materials_backlog,
    })
}
