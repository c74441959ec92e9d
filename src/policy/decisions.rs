//! What the policy decides for a record: the category (or provisional, with each outcome), the
//! stages and their working days, the "11000" mode, the fee, the customer manager, the materials
//! — and, for each, the trace of the rule and inputs that gave it. The types only; `decide.rs`
//! applies a policy.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::{Applicant, Table};

/// What the rules read from a record. `None`: not known yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    pub applicant: Option<Applicant>,
    pub building_use: Option<String>,
    pub nature: Option<String>,
    pub floor_area_m2: Option<Decimal>,
    pub height_m: Option<Decimal>,
    pub hazardous_goods: Option<bool>,
    pub diameter_dn: Option<i64>,
    pub external_pipe_m: Option<Decimal>,
    /// The site's district code, for the customer manager.
    pub district: String,
    /// Whether the record was built from data obtained in advance (table B) or not (A).
    pub table: Option<Table>,
}

/// One possible category of a provisional record, and when it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub category: Option<String>,
    pub when: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CategoryDecision {
    Decided {
        id: String,
        name: String,
    },
    /// A figure the rules need is not known: the category under each outcome.
    Provisional {
        missing: Vec<String>,
        outcomes: Vec<Outcome>,
    },
    /// No rule applies (a non-household application without platform data).
    None {
        reason: String,
    },
}

impl CategoryDecision {
    pub fn decided(&self) -> Option<&str> {
        match self {
            CategoryDecision::Decided { id, .. } => Some(id),
            _ => None,
        }
    }

    /// A short label for summaries: the category id, or `provisional`.
    pub fn label(&self) -> String {
        match self {
            CategoryDecision::Decided { id, .. } => id.clone(),
            CategoryDecision::Provisional { .. } => "provisional".into(),
            CategoryDecision::None { .. } => "none".into(),
        }
    }
}

/// One timed stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageLimit {
    /// `site_survey` (现场踏勘审核) or `connection` (接入通水).
    pub stage: String,
    pub working_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum StagesDecision {
    /// The row of the table: the timed stages and their total.
    Limits {
        stages: Vec<StageLimit>,
        total_working_days: u32,
        untimed_survey: bool,
    },
    /// No limit set by the plan: standard service terms.
    StandardTerms,
    /// Not known until the category or the external works are.
    Provisional { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeeDecision {
    /// `Some(true)`: the external connection is free; `None`: not known yet.
    pub free: Option<bool>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ManagerDecision {
    pub company: String,
    pub company_name: String,
    pub manager: String,
}

/// Everything the policy decided for a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decisions {
    pub policy_version: String,
    pub category: CategoryDecision,
    pub table: Option<Table>,
    /// External works (外线工程): `None` until the pipe length is known.
    pub external_works: Option<bool>,
    pub stages: StagesDecision,
    /// 1 step, 1 working day, 0 materials, 0 fees, 0 trips. Unknown while the category or
    /// the external works are, when the answer depends on them.
    pub mode_11000: Answer,
    pub fee: FeeDecision,
    pub customer_manager: Option<ManagerDecision>,
    pub materials_required: Vec<String>,
    /// Whether the policy promises zero materials for the record's category; unknown while a
    /// provisional category leaves the answer open.
    pub zero_materials_promised: Answer,
}

/// A yes/no decision that may wait for a figure: never a `false` that only means "not known".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Answer {
    Known {
        value: bool,
    },
    /// The answer depends on figures not known yet: which, and the answer under each outcome.
    Unknown {
        waits_for: Vec<String>,
        outcomes: Vec<AnswerOutcome>,
    },
}

/// The answer under one outcome of the missing figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AnswerOutcome {
    pub when: Vec<String>,
    pub value: bool,
}

impl Answer {
    /// `Some` when the answer is known.
    pub fn known(&self) -> Option<bool> {
        match self {
            Answer::Known { value } => Some(*value),
            Answer::Unknown { .. } => None,
        }
    }

    /// Known when every outcome gives the same value; otherwise unknown, waiting for `waits_for`.
    pub(super) fn from_outcomes(waits_for: Vec<String>, outcomes: Vec<AnswerOutcome>) -> Answer {
        match outcomes.first() {
            Some(first) if outcomes.iter().all(|o| o.value == first.value) => {
                Answer::Known { value: first.value }
            }
            None => Answer::Known { value: false },
            Some(_) => Answer::Unknown { waits_for, outcomes },
        }
    }
}

/// How one decision was reached: for `gateway trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DecisionTrace {
    pub policy_version: String,
    pub policy_file: String,
    pub policy_sha256: String,
    pub rule: String,
    pub inputs: BTreeMap<String, String>,
}
