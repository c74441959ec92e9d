//! `GET /healthz` (the process answers) and `GET /readyz` (the gateway can do its work), for
//! load balancers, orchestrators and monitors.
//!
//! Ready means every one of these holds, and the body names each one that does not:
//! - the database opens and passes SQLite's quick check (linear in its size, so run at most
//!   every [`QUICK_CHECK_EVERY`] and remembered meanwhile);
//! - the holiday calendars cover today and, from October, next year (a deadline reaching into a
//!   year without a calendar cannot be computed), read from the mapping files in force now, so a
//!   file removed from the configured directory shows at once;
//! - the last sync pass ended less than `ready_max_pass_age` ago (a loop that stopped passing is
//!   not ready even if the process answers);
//! - the approval platform's quota or maintenance gate is open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shuiwu_approval::ApprovalClient;

use super::HttpState;

/// How long a quick check's result stands.
pub const QUICK_CHECK_EVERY: Duration = Duration::from_secs(600);

/// What readiness is judged with, beside the store.
pub struct Readiness {
    /// The configured mappings directory (calendars are read from it on every probe).
    pub mappings_dir: Option<PathBuf>,
    /// The approval client, whose quota and maintenance gates the sync obeys.
    pub approval: Arc<ApprovalClient>,
    /// The oldest a last pass may be.
    pub max_pass_age: chrono::Duration,
    quick_check: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Readiness {
    pub fn new(
        mappings_dir: Option<PathBuf>,
        approval: Arc<ApprovalClient>,
        max_pass_age: chrono::Duration,
    ) -> Self {
        Readiness {
            mappings_dir,
            approval,
            max_pass_age,
            quick_check: Mutex::new(None),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ready: bool,
    /// Why not, one line per failed check.
    reasons: Vec<String>,
    /// What is worth knowing although it does not make the gateway unready.
    warnings: Vec<String>,
    last_pass: Option<String>,
}

pub async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": "alive" })),
    )
        .into_response()
}

pub async fn readyz(State(state): State<HttpState>) -> Response {
    let Some(readiness) = state.readiness.clone() else {
        return (StatusCode::NOT_FOUND, "readiness is not configured").into_response();
    };
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let now = state.clock.now();

    // The database, checked now and then.
    let cached = readiness
        .quick_check
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .filter(|(at, _)| at.elapsed() < QUICK_CHECK_EVERY);
    let problems = match cached {
        Some((_, p)) => Ok(p),
        None => match state.store.call(|s| s.quick_check()).await {
            Ok(p) => {
                *readiness.quick_check.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), p.clone()));
                Ok(p)
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match problems {
        Ok(p) if p.is_empty() => {}
        Ok(p) => reasons.push(format!(
            "database damaged (PRAGMA quick_check): {}",
            p.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        )),
        Err(e) => reasons.push(format!("database: {e}")),
    }

    // The holiday calendars, as the files in force now give them.
    let today = crate::worktime::date_of(now);
    match crate::calendar::Calendar::load(readiness.mappings_dir.as_deref()) {
        Ok(c) => {
            if let Some(w) = c.coverage_warning(today) {
                reasons.push(w);
            }
        }
        Err(e) => reasons.push(format!("holiday calendars: {e}")),
    }

    // The last pass.
    let last_pass = match state.store.call(|s| s.last_run()).await {
        Ok(Some(run)) => {
            match run.finished_at {
                Some(t) if now - t > readiness.max_pass_age => reasons.push(format!(
                    "the last pass ended {} ago, more than {} s",
                    humantime(now - t),
                    readiness.max_pass_age.num_seconds()
                )),
                Some(_) => {}
                None if run.outcome == "running" => {}
                None => reasons.push(format!("the last pass ({}) did not finish", run.id)),
            }
            if let Some(error) = run.error.clone().filter(|_| run.outcome == "failed") {
                warnings.push(format!("the last pass failed: {error}"));
            }
            Some(format!("{} {}", run.id, run.outcome))
        }
        Ok(None) => {
            reasons.push("no sync pass has run yet".into());
            None
        }
        Err(e) => {
            reasons.push(format!("database: {e}"));
            None
        }
    };

    // The platform's gates.
    if let Some((gate, until)) = readiness.approval.gate() {
        reasons.push(format!(
            "the approval platform's {gate} gate is shut until {}",
            shuiwu_wire::format_beijing(until)
        ));
    }

    let report = Report {
        ready: reasons.is_empty(),
        reasons,
        warnings,
        last_pass,
    };
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

fn humantime(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}
