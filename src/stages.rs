//! Stage events — operator actions on a record — and the progress they give: which stage is
//! running since when, paused, due when, done.
//!
//! Events are facts like any other: kept append-only with who and when, and the record is
//! re-evaluated from its platform facts plus all its events. A measured pipe length from the
//! survey settles the category and the external works; pauses move due times by the working
//! time they cover ([`crate::worktime`]).

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shuiwu_wire::format_beijing;

use crate::calendar::Calendar;
use crate::policy::StagesDecision;
use crate::worktime::{self, Pause};

/// Why a stage's clock is paused (计时暂停): the policy's enumerated reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Waiting for the applicant: documents accepted on commitment (容缺) are owed.
    AwaitingApplicantDocuments,
    /// The applicant asked for a later date.
    ApplicantRequestedLaterDate,
    /// Waiting for a third-party permit: road excavation.
    RoadExcavationPermit,
    /// Waiting for a third-party permit: green space.
    GreenSpacePermit,
}

/// What an operator did to a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Accepted,
    SurveyDone {
        #[serde(with = "rust_decimal::serde::str")]
        external_pipe_m: Decimal,
    },
    Connected,
    Paused {
        reason: PauseReason,
    },
    Resumed,
    Rejected {
        reason: String,
    },
    Withdrawn {
        reason: String,
    },
    ManagerReassigned {
        manager: String,
        reason: String,
    },
    /// The applicant commits to deliver these missing items before connection (容缺受理).
    Commitment {
        items: Vec<String>,
    },
    /// Recorded by the gateway, never by an operator: a power-origin record that waited for
    /// platform data continues as the record of the project the data was found for.
    Superseded {
        by_record: String,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Accepted => "accepted",
            Action::SurveyDone { .. } => "survey_done",
            Action::Connected => "connected",
            Action::Paused { .. } => "paused",
            Action::Resumed => "resumed",
            Action::Rejected { .. } => "rejected",
            Action::Withdrawn { .. } => "withdrawn",
            Action::ManagerReassigned { .. } => "manager_reassigned",
            Action::Commitment { .. } => "commitment",
            Action::Superseded { .. } => "superseded",
        }
    }
}

/// An action as recorded: by whom, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub id: i64,
    pub action: Action,
    pub at: DateTime<Utc>,
    pub by: String,
    /// Why the operator let the action through a rule, when one did (kept for audit).
    #[serde(default)]
    pub override_reason: Option<String>,
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not accepted yet: no clock runs.
    Pending,
    InProgress,
    Paused,
    Connected,
    Rejected,
    Withdrawn,
    /// Continued as another record (see [`Action::Superseded`]).
    Superseded,
}

/// One stage's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageProgress {
    pub stage: String,
    /// `None`: not timed by the plan.
    pub working_days: Option<u32>,
    pub started_at: Option<String>,
    pub due_at: Option<String>,
    /// Why there is no due time although the stage is timed and started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_unknown: Option<String>,
    pub paused_working_secs: i64,
    pub completed_at: Option<String>,
}

/// The survey's result, which settles the pipe length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Survey {
    #[serde(with = "rust_decimal::serde::str")]
    pub external_pipe_m: Decimal,
    pub at: String,
    pub by: String,
    pub action_id: i64,
}

/// A record's progress through its stages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub state: State,
    pub stages: Vec<StageProgress>,
    pub pauses: Vec<PauseSpan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PauseSpan {
    pub reason: PauseReason,
    pub from: String,
    pub to: Option<String>,
}

/// The measured pipe length, if a survey was recorded.
pub fn survey(actions: &[OperatorAction]) -> Option<Survey> {
    actions.iter().rev().find_map(|a| match &a.action {
        Action::SurveyDone { external_pipe_m } => Some(Survey {
            external_pipe_m: *external_pipe_m,
            at: format_beijing(a.at),
            by: a.by.clone(),
            action_id: a.id,
        }),
        _ => None,
    })
}

/// Items the applicant committed to deliver (容缺).
pub fn committed(actions: &[OperatorAction]) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for a in actions {
        if let Action::Commitment { items: more } = &a.action {
            for i in more {
                if !items.contains(i) {
                    items.push(i.clone());
                }
            }
        }
    }
    items
}

/// The customer manager an operator assigned last, if any.
pub fn reassigned_manager(actions: &[OperatorAction]) -> Option<String> {
    actions.iter().rev().find_map(|a| match &a.action {
        Action::ManagerReassigned { manager, .. } => Some(manager.clone()),
        _ => None,
    })
}

fn timed_survey(stages: &StagesDecision) -> bool {
    matches!(
        stages,
        StagesDecision::Limits {
            untimed_survey: false,
            ..
        }
    )
}

fn replay(actions: &[OperatorAction]) -> (State, bool, bool) {
    let (mut state, mut accepted, mut surveyed) = (State::Pending, false, false);
    for a in actions {
        match a.action {
            Action::Accepted => {
                accepted = true;
                state = State::InProgress;
            }
            Action::SurveyDone { .. } => surveyed = true,
            Action::Connected => state = State::Connected,
            Action::Paused { .. } => state = State::Paused,
            Action::Resumed => state = State::InProgress,
            Action::Rejected { .. } => state = State::Rejected,
            Action::Withdrawn { .. } => state = State::Withdrawn,
            Action::Superseded { .. } => state = State::Superseded,
            Action::ManagerReassigned { .. } | Action::Commitment { .. } => {}
        }
    }
    (state, accepted, surveyed)
}

/// What an operator action is judged against, read in the action's own transaction.
pub struct ActionContext<'a> {
    /// The record as its current document and actions give it now.
    pub record: &'a crate::record::Candidate,
    pub actions: &'a [OperatorAction],
    /// Items the latest materials check found missing.
    pub owed: &'a [String],
}

/// Whether an action makes sense for the record as it is: stage order, and zero materials —
/// missing items must be committed (容缺) before acceptance and must have arrived before
/// connection, unless an operator overrides with a reason.
pub fn judge(
    ctx: &ActionContext<'_>,
    action: &Action,
    at: DateTime<Utc>,
    override_reason: Option<&str>,
) -> Result<(), String> {
    let stages_decision = ctx
        .record
        .record
        .decisions
        .as_ref()
        .map(|d| d.stages.clone())
        .ok_or_else(|| "the record has no decisions".to_string())?;
    check(ctx.actions, action, at, &stages_decision)?;
    let committed = committed(ctx.actions);
    let blocking: Vec<&String> = match action {
        Action::Accepted => ctx.owed.iter().filter(|i| !committed.contains(i)).collect(),
        Action::Connected => ctx.owed.iter().collect(),
        _ => Vec::new(),
    };
    if !blocking.is_empty() && override_reason.is_none_or(|r| r.trim().is_empty()) {
        let list: Vec<String> = blocking
            .iter()
            .map(|i| format!("{i} ({})", crate::materials::label(i)))
            .collect();
        let what = if matches!(action, Action::Accepted) {
            "missing materials are not committed (容缺): record a commitment first"
        } else {
            "materials are still owed before connection"
        };
        return Err(format!("{what}: {}; or pass --override-reason", list.join(", ")));
    }
    Ok(())
}

/// Whether `next` makes sense after `actions` on a record whose stages are `stages`; the
/// error says why not.
pub fn check(
    actions: &[OperatorAction],
    next: &Action,
    at: DateTime<Utc>,
    stages: &StagesDecision,
) -> Result<(), String> {
    // Stage events happen in order; a reassignment stands apart from the stages.
    let stage_event = |a: &Action| !matches!(a, Action::ManagerReassigned { .. } | Action::Commitment { .. });
    if stage_event(next)
        && let Some(last) = actions.iter().rev().find(|a| stage_event(&a.action))
        && at < last.at
    {
        return Err(format!(
            "the event is dated before the record's last stage event ({})",
            format_beijing(last.at)
        ));
    }
    let (state, accepted, surveyed) = replay(actions);
    let terminal = matches!(
        state,
        State::Connected | State::Rejected | State::Withdrawn | State::Superseded
    );
    if terminal && !matches!(next, Action::ManagerReassigned { .. } | Action::Commitment { .. }) {
        return Err(format!("the record is already {state:?}").to_lowercase());
    }
    match next {
        Action::Accepted if accepted => Err("the record was already accepted".into()),
        Action::SurveyDone { .. } if surveyed => Err("the survey was already recorded".into()),
        Action::SurveyDone { .. } if timed_survey(stages) && !accepted => {
            Err("the survey is a timed stage here: accept the record first".into())
        }
        Action::SurveyDone { external_pipe_m } if external_pipe_m.is_sign_negative() => {
            Err("a pipe length cannot be negative".into())
        }
        Action::Connected if !accepted => Err("cannot connect before the record is accepted".into()),
        Action::Connected if state == State::Paused => Err("the clock is paused: resume it first".into()),
        Action::Connected if !surveyed => {
            Err("record the survey (with the measured pipe length) before connecting".into())
        }
        Action::Paused { .. } if !accepted => Err("nothing to pause: the record is not accepted yet".into()),
        Action::Paused { .. } if state == State::Paused => Err("the clock is already paused".into()),
        Action::Resumed if state != State::Paused => Err("cannot resume: the clock is not paused".into()),
        Action::ManagerReassigned { manager, .. } if manager.trim().is_empty() => {
            Err("name the new customer manager".into())
        }
        _ => Ok(()),
    }
}

/// The record's progress: each stage's start, due time (pauses applied), completion.
pub fn progress(actions: &[OperatorAction], stages: &StagesDecision, calendar: &Calendar) -> Progress {
    let (state, _, _) = replay(actions);
    let at = |pred: &dyn Fn(&Action) -> bool| actions.iter().find(|a| pred(&a.action)).map(|a| a.at);
    let accepted = at(&|a| matches!(a, Action::Accepted));
    let surveyed = at(&|a| matches!(a, Action::SurveyDone { .. }));
    let connected = at(&|a| matches!(a, Action::Connected));

    let mut pauses = Vec::new();
    let mut spans = Vec::new();
    let mut open: Option<(DateTime<Utc>, PauseReason)> = None;
    for a in actions {
        match (&a.action, open) {
            (Action::Paused { reason }, None) => open = Some((a.at, *reason)),
            (Action::Resumed, Some((from, reason))) => {
                pauses.push(Pause { from, to: a.at });
                spans.push(PauseSpan {
                    reason,
                    from: format_beijing(from),
                    to: Some(format_beijing(a.at)),
                });
                open = None;
            }
            _ => {}
        }
    }
    if let Some((from, reason)) = open {
        spans.push(PauseSpan {
            reason,
            from: format_beijing(from),
            to: None,
        });
    }

    let (survey_days, connection_days) = match stages {
        StagesDecision::Limits { stages, .. } => (
            stages
                .iter()
                .find(|s| s.stage == "site_survey")
                .map(|s| s.working_days),
            stages
                .iter()
                .find(|s| s.stage == "connection")
                .map(|s| s.working_days),
        ),
        _ => (None, None),
    };
    let limits_known = matches!(stages, StagesDecision::Limits { .. });
    let mut out = Vec::new();
    let mut timeline =
        |stage: &str, days: Option<u32>, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>| {
            // Pauses belong to the stage they fall in.
            let mine: Vec<Pause> = pauses
                .iter()
                .copied()
                .filter(|p| start.is_some_and(|s| p.from >= s) && end.is_none_or(|e| p.from < e))
                .collect();
            let open_here = open.is_some_and(|(from, _)| start.is_some_and(|s| from >= s) && end.is_none());
            let (due_at, due_unknown, paused) = match (days, start) {
                (Some(n), Some(s)) if !open_here => match worktime::due_with_pauses(calendar, s, n, &mine) {
                    Ok(due) => {
                        let paused = mine
                            .iter()
                            .map(|p| worktime::pause_effect(calendar, s, *p).unwrap_or(0))
                            .sum();
                        (Some(format_beijing(due)), None, paused)
                    }
                    Err(e) => (None, Some(e.to_string()), 0),
                },
                (Some(_), Some(_)) => (None, Some("the clock is paused".into()), 0),
                (None, Some(_)) if !limits_known => (
                    None,
                    Some("no limit until the category and external works are settled".into()),
                    0,
                ),
                _ => (None, None, 0),
            };
            out.push(StageProgress {
                stage: stage.into(),
                working_days: days,
                started_at: start.map(format_beijing),
                due_at,
                due_unknown,
                paused_working_secs: paused,
                completed_at: end.map(format_beijing),
            });
        };
    if survey_days.is_some() {
        timeline("site_survey", survey_days, accepted, surveyed);
        timeline("connection", connection_days, surveyed, connected);
    } else {
        timeline("connection", connection_days, accepted, connected);
    }
    Progress {
        state,
        stages: out,
        pauses: spans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::StageLimit;

    fn bj(s: &str) -> DateTime<Utc> {
        shuiwu_wire::parse_beijing(s).unwrap()
    }

    fn act(id: i64, action: Action, at: &str) -> OperatorAction {
        OperatorAction {
            id,
            action,
            at: bj(at),
            by: "张工".into(),
            override_reason: None,
        }
    }

    fn other_nr() -> StagesDecision {
        StagesDecision::Limits {
            stages: vec![
                StageLimit {
                    stage: "site_survey".into(),
                    working_days: 2,
                },
                StageLimit {
                    stage: "connection".into(),
                    working_days: 2,
                },
            ],
            total_working_days: 4,
            untimed_survey: false,
        }
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let s = other_nr();
        let t = bj("2026-11-23 09:00:00");
        assert!(
            check(&[], &Action::Resumed, t, &s)
                .unwrap_err()
                .contains("not paused")
        );
        assert!(
            check(&[], &Action::Connected, t, &s)
                .unwrap_err()
                .contains("before the record is accepted")
        );
        assert!(
            check(
                &[],
                &Action::SurveyDone {
                    external_pipe_m: Decimal::ONE
                },
                t,
                &s
            )
            .is_err()
        );
        let accepted = [act(1, Action::Accepted, "2026-11-23 09:00:00")];
        assert!(check(&accepted, &Action::Accepted, t, &s).is_err());
        assert!(
            check(
                &accepted,
                &Action::Paused {
                    reason: PauseReason::GreenSpacePermit
                },
                t,
                &s
            )
            .is_ok()
        );
        assert!(
            check(&accepted, &Action::Accepted, bj("2026-11-22 09:00:00"), &s)
                .unwrap_err()
                .contains("dated before")
        );
        let done = [act(
            1,
            Action::Withdrawn { reason: "x".into() },
            "2026-11-23 09:00:00",
        )];
        assert!(
            check(&done, &Action::Accepted, t, &s)
                .unwrap_err()
                .contains("withdrawn")
        );
    }

    #[test]
    fn a_pause_moves_the_due_time() {
        let cal = Calendar::load(None).unwrap();
        let actions = [
            act(1, Action::Accepted, "2026-11-23 09:00:00"),
            act(
                2,
                Action::Paused {
                    reason: PauseReason::RoadExcavationPermit,
                },
                "2026-11-24 12:00:00",
            ),
            act(3, Action::Resumed, "2026-11-25 12:00:00"),
        ];
        let p = progress(&actions, &other_nr(), &cal);
        assert_eq!(p.state, State::InProgress);
        assert_eq!(
            p.stages[0].due_at.as_deref(),
            Some("2026-11-27 00:00:00"),
            "{p:?}"
        );
        assert_eq!(p.stages[0].paused_working_secs, 86_400);
        assert_eq!(p.stages[1].started_at, None);
        let paused = progress(&actions[..2], &other_nr(), &cal);
        assert_eq!(paused.state, State::Paused);
        assert_eq!(
            paused.stages[0].due_unknown.as_deref(),
            Some("the clock is paused")
        );
    }
}
