//! The console's boards: running stages against their due times, and the timeliness report
//! with its chart and CSV download.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::pages::{attachment, render, see_other, session};
use crate::http::HttpState;
use crate::report::{Period, Timeliness};

struct DeadlineRow {
    record_id: String,
    stage: String,
    working_days: String,
    started_at: String,
    due_at: String,
    left: String,
    /// `on_time`, `warning`, `overdue` or `unknown` (the row's class).
    state: &'static str,
    manager: String,
    note: String,
}

#[derive(Template)]
#[template(path = "console/deadlines.html")]
struct Deadlines {
    name: String,
    role: &'static str,
    csrf: String,
    rows: Vec<DeadlineRow>,
}

pub(super) async fn deadlines(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let rules = state.rebuilder.rules.clone();
    let found = state
        .store
        .call(move |store| crate::deadlines::current(store, &rules, Utc::now()))
        .await;
    let mut found = match found {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("console deadlines: {e}");
            return (StatusCode::SERVICE_UNAVAILABLE, "the database could not be read").into_response();
        }
    };
    // Soonest due first; stages without a due time (paused, unknown) last.
    found.sort_by(|a, b| (a.due_at.is_none(), &a.due_at).cmp(&(b.due_at.is_none(), &b.due_at)));
    use crate::deadlines::DeadlineState as D;
    let rows = found
        .into_iter()
        .map(|d| DeadlineRow {
            state: match d.state {
                D::OnTime => "on_time",
                D::Warning => "warning",
                D::Overdue => "overdue",
                D::Unknown => "unknown",
            },
            left: d
                .working_secs_left
                .map(|s| format!("{:.2}", s as f64 / crate::worktime::DAY_SECS as f64))
                .unwrap_or_default(),
            working_days: d.working_days.map(|n| n.to_string()).unwrap_or_default(),
            started_at: d.started_at.unwrap_or_default(),
            due_at: d.due_at.unwrap_or_default(),
            manager: d.customer_manager.unwrap_or_default(),
            note: d.note.unwrap_or_default(),
            record_id: d.record_id,
            stage: d.stage,
        })
        .collect();
    render(&Deadlines {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        rows,
    })
}

/// The period asked for: a quarter or a month (the current quarter when neither).
#[derive(Deserialize, Default)]
pub(super) struct ReportQuery {
    #[serde(default)]
    quarter: String,
    #[serde(default)]
    month: String,
    /// The dimension shown in the chart and the table: `company` (district company, the
    /// default), `manager`, `category` or `stage`.
    #[serde(default)]
    by: String,
}

impl ReportQuery {
    fn period(&self) -> Result<Period, String> {
        if !self.quarter.trim().is_empty() {
            Period::quarter(self.quarter.trim())
        } else if !self.month.trim().is_empty() {
            Period::month(self.month.trim())
        } else {
            use chrono::Datelike;
            let today = crate::worktime::date_of(Utc::now());
            Period::quarter(&format!("{}Q{}", today.year(), today.month0() / 3 + 1))
        }
    }

    fn by(&self) -> &'static str {
        match self.by.as_str() {
            "manager" => "manager",
            "category" => "category",
            "stage" => "stage",
            _ => "company",
        }
    }

    fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("quarter", self.quarter.trim())
            .append_pair("month", self.month.trim())
            .append_pair("by", self.by())
            .finish()
    }
}

#[derive(Template)]
#[template(path = "console/reports.html")]
struct Reports {
    name: String,
    role: &'static str,
    csrf: String,
    quarter: String,
    month: String,
    by: &'static str,
    query: String,
    problem: Option<String>,
    report: Option<Arc<Timeliness>>,
    rows: Vec<Vec<String>>,
    chart: String,
}

/// How often the current quarter's report is brought up to date in the background.
const WARM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps the current quarter's report (the report page's default) computed, so that the page
/// finds it kept rather than computing it on a person's request after every change; runs
/// until `token` is cancelled. A report that nothing changed is not computed again.
pub async fn keep_current_quarter(state: HttpState, token: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(WARM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(period) = ReportQuery::default().period() else {
            continue;
        };
        if let Err(e) = compute(&state, period).await {
            tracing::warn!("the current quarter's report was not computed: {e}");
        }
    }
}

/// The report of `period`: the one computed before when nothing it counts has changed since,
/// else computed now and kept.
async fn compute(state: &HttpState, period: Period) -> Result<Arc<Timeliness>, String> {
    let calendar = state.rebuilder.rules.calendar.clone();
    let console = state.console.clone();
    state
        .store
        .call(move |store| {
            let (from, to) = crate::report::bounds(period);
            let fingerprint = store.report_fingerprint(from, to)?;
            if let Some(kept) = console.as_ref().and_then(|c| c.reports.get(period, &fingerprint)) {
                return Ok(kept);
            }
            let report = Arc::new(crate::report::from_store(store, &calendar, period)?);
            if let Some(c) = &console {
                c.reports.put(period, fingerprint, report.clone());
            }
            Ok::<_, crate::store::StoreError>(report)
        })
        .await
        .map_err(|e| e.to_string())
}

pub(super) async fn reports(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    let Some((_, s)) = session(&state, &headers) else {
        return see_other("/console/sign-in");
    };
    let (report, problem) = match q.period() {
        Ok(p) => match compute(&state, p).await {
            Ok(r) => (Some(r), None),
            Err(e) => {
                tracing::error!("console report: {e}");
                (None, Some("报表暂时无法生成".to_string()))
            }
        },
        Err(e) => (None, Some(e)),
    };
    let by = q.by();
    let rows = report.as_ref().map_or_else(Vec::new, |r| {
        crate::report::groups(r.as_ref())
            .into_iter()
            .filter(|(d, ..)| *d == "total" || *d == by)
            .map(|(d, g, f)| crate::report::cells(d, g, f))
            .collect()
    });
    let chart = report.as_deref().map(|r| chart(r, by)).unwrap_or_default();
    render(&Reports {
        name: s.name,
        role: s.role.as_str(),
        csrf: s.csrf,
        query: q.encoded(),
        by,
        quarter: q.quarter,
        month: q.month,
        problem,
        report,
        rows,
        chart,
    })
}

pub(super) async fn reports_csv(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    if session(&state, &headers).is_none() {
        return see_other("/console/sign-in");
    }
    let period = match q.period() {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let csv = compute(&state, period)
        .await
        .and_then(|r| crate::report::to_csv(&r).map_err(|e| e.to_string()));
    match csv {
        Ok(text) => attachment(
            "text/csv; charset=utf-8",
            &format!("timeliness-{}-{}.csv", period.from, period.to),
            text,
        ),
        Err(e) => {
            tracing::error!("console report CSV: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "the report could not be made").into_response()
        }
    }
}

/// Text for SVG and HTML: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An inline SVG bar chart: per group of one dimension (district company, manager, category
/// or stage), applications and those completed within the limit. Drawn here, no chart service.
fn chart(r: &Timeliness, by: &str) -> String {
    let groups = match by {
        "manager" => &r.by_manager,
        "category" => &r.by_category,
        "stage" => &r.by_stage,
        _ => &r.by_company,
    };
    const ROW: usize = 28;
    const WIDTH: f64 = 420.0;
    let max = groups.values().map(|f| f.applications).max().unwrap_or(0).max(1) as f64;
    let height = ROW * groups.len() + 24;
    let mut svg = format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"{height}\" role=\"img\" aria-label=\"受理与按时完成 {by}\">"
    );
    for (i, (company, f)) in groups.iter().enumerate() {
        let y = i * ROW + 4;
        let all = WIDTH * f.applications as f64 / max;
        let within = WIDTH * f.completed_within_limit as f64 / max;
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>\
             <rect x=\"120\" y=\"{y}\" width=\"{all:.1}\" height=\"10\" fill=\"#9dc3e6\"><title>受理 {}</title></rect>\
             <rect x=\"120\" y=\"{}\" width=\"{within:.1}\" height=\"10\" fill=\"#1f4e79\"><title>按时完成 {}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{} / {}</text>",
            y + 14,
            escape(company),
            f.applications,
            y + 11,
            f.completed_within_limit,
            126.0 + all,
            y + 10,
            f.completed_within_limit,
            f.applications,
        ));
    }
    svg.push_str(&format!(
        "<text x=\"0\" y=\"{}\" font-size=\"11\">浅色：受理 applications；深色：按时完成 within_limit</text></svg>",
        height - 4
    ));
    svg
}
