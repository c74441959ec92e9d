//! The deadline watch: which running stages are on time, in warning (预警: a third or less of
//! their working time left, per the policy's threshold) or overdue (报警), and raising each
//! warning and alarm once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use shuiwu_wire::parse_beijing;

use crate::policy::Rules;
use crate::store::{Store, StoreError};
use crate::worktime::{self, DAY_SECS};

/// Where a running stage stands against its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineState {
    OnTime,
    Warning,
    Overdue,
    /// The clock is paused, or the due time cannot be computed (the reason says why).
    Unknown,
}

/// One running stage.
#[derive(Debug, Clone, Serialize)]
pub struct Deadline {
    pub record_id: String,
    pub stage: String,
    pub working_days: Option<u32>,
    pub started_at: Option<String>,
    pub due_at: Option<String>,
    /// Working seconds left until the due time (0 when overdue).
    pub working_secs_left: Option<i64>,
    pub state: DeadlineState,
    pub note: Option<String>,
    pub customer_manager: Option<String>,
    pub alert_raised_at: Option<String>,
}

/// Every started, unfinished stage, as of `now`.
pub fn current(store: &Store, rules: &Rules, now: DateTime<Utc>) -> Result<Vec<Deadline>, StoreError> {
    let mut out = Vec::new();
    for (id, content) in store.running_records()? {
        let version = content["decisions"]["policy_version"]
            .as_str()
            .unwrap_or_default();
        let policy = rules.policies.versions().iter().find(|p| p.version == version);
        let (num, den) = policy.map_or((1, 3), |p| p.warning_left);
        let manager = content["decisions"]["customer_manager"]["manager"]
            .as_str()
            .map(str::to_string);
        let Some(stages) = content["progress"]["stages"].as_array() else {
            continue;
        };
        for s in stages {
            if s["started_at"].is_null() || !s["completed_at"].is_null() {
                continue;
            }
            let days = s["working_days"].as_u64().map(|d| d as u32);
            let due = s["due_at"].as_str().and_then(parse_beijing);
            let (state, left, note) = match (due, days) {
                (Some(due), Some(days)) => match worktime::working_seconds(&rules.calendar, now, due) {
                    Ok(left) => {
                        let total = i64::from(days) * DAY_SECS;
                        let state = if now >= due {
                            DeadlineState::Overdue
                        } else if left * i64::from(den) <= total * i64::from(num) {
                            DeadlineState::Warning
                        } else {
                            DeadlineState::OnTime
                        };
                        (state, Some(left), None)
                    }
                    Err(e) => (DeadlineState::Unknown, None, Some(e.to_string())),
                },
                _ => (
                    DeadlineState::Unknown,
                    None,
                    s["due_unknown"].as_str().map(str::to_string),
                ),
            };
            let stage = s["stage"].as_str().unwrap_or_default().to_string();
            let due_at = s["due_at"].as_str().map(str::to_string);
            let kind = match state {
                DeadlineState::Warning => Some("warning"),
                DeadlineState::Overdue => Some("alarm"),
                _ => None,
            };
            let alert_raised_at = match (kind, &due_at) {
                (Some(k), Some(d)) => store.alert_raised(&id, &stage, k, d)?,
                _ => None,
            };
            out.push(Deadline {
                record_id: id.clone(),
                stage,
                working_days: days,
                started_at: s["started_at"].as_str().map(str::to_string),
                due_at,
                working_secs_left: left,
                state,
                note,
                customer_manager: manager.clone(),
                alert_raised_at,
            });
        }
    }
    Ok(out)
}

/// Raises every warning and alarm that is due and not raised yet; returns the new ones.
pub fn watch(store: &Store, rules: &Rules, now: DateTime<Utc>) -> Result<Vec<Deadline>, StoreError> {
    let mut raised = Vec::new();
    for d in current(store, rules, now)? {
        let kind = match d.state {
            DeadlineState::Warning => "warning",
            DeadlineState::Overdue => "alarm",
            _ => continue,
        };
        let Some(due) = &d.due_at else { continue };
        if store.raise_alert(&d.record_id, &d.stage, kind, due, now)? {
            crate::events::InternalEvent::emit(crate::events::DeadlineAlertRaised {
                record_id: &d.record_id,
                stage: &d.stage,
                kind,
                due,
                manager: d.customer_manager.as_deref().unwrap_or("-"),
            });
            raised.push(d);
        }
    }
    Ok(raised)
}
