//! The utility's service policy as versioned data (`mappings/policy/YYYY.toml`): categories,
//! time-limit tables, the "11000" mode, zero fees, materials, districts and customer managers.
//!
//! A policy file is validated completely at load — a category without a table row, two rows
//! for one case, an empty diameter range, a district without a company — and refused with the
//! file and line. [`PolicySet::for_date`] picks the version in force on a record's creation day.

mod decide;
mod decisions;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

pub use decide::decide;
pub use decisions::{
    Answer, AnswerOutcome, CategoryDecision, DecisionTrace, Decisions, FeeDecision, Inputs, ManagerDecision,
    Outcome, StageLimit, StagesDecision,
};

/// A policy that cannot be used, or no policy for a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("no policy is in force on {0}: the earliest takes effect later")]
    NoneInForce(NaiveDate),
    #[error("{0}")]
    Read(String),
}

/// Which table of time limits applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum Table {
    /// Without data obtained in advance.
    A,
    /// With data obtained in advance from the government platforms.
    B,
}

/// Whether a limit row is for connections with external works, without, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Works {
    None,
    Yes,
    Any,
}

/// Who applies: a project (with a project code) or a household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applicant {
    Project,
    Household,
}

/// One category rule; a condition that is `None` does not constrain.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryRule {
    pub id: String,
    pub name: String,
    pub applicant: Applicant,
    pub residential: Option<bool>,
    pub natures: Option<Vec<String>>,
    pub building_uses: Option<Vec<String>>,
    pub max_floor_area_m2: Option<Decimal>,
    pub max_height_m: Option<Decimal>,
    pub hazardous_goods: Option<bool>,
    /// The diameter must be above this (以上 excluded: "above DN40").
    pub min_diameter_dn_above: Option<i64>,
    pub min_diameter_dn: Option<i64>,
    pub max_diameter_dn: Option<i64>,
    pub max_external_pipe_m: Option<Decimal>,
    pub line: usize,
}

/// One row of a time-limit table.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    pub table: Table,
    pub category: String,
    pub works: Works,
    /// `None`: the stage is not timed (table B's survey before acceptance).
    pub survey: Option<u32>,
    pub connection: Option<u32>,
    /// No limit set by this plan: standard service terms.
    pub standard_terms: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Company {
    pub id: String,
    pub name: String,
    pub managers: Vec<String>,
}

/// One policy version.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub version: String,
    pub effective: NaiveDate,
    pub title: String,
    pub file: String,
    pub sha256: String,
    /// The file's text, kept so that the store can keep every version that decided a record.
    #[serde(skip)]
    pub content: String,
    /// Warn when `numerator / denominator` or less of a stage's working time is left.
    pub warning_left: (u32, u32),
    pub categories: Vec<CategoryRule>,
    pub limits: Vec<Limit>,
    pub mode_11000: (String, Table, Works),
    pub fee_max_diameter_dn: i64,
    pub fee_max_external_pipe_m: Decimal,
    pub materials: BTreeMap<String, Vec<String>>,
    pub zero_materials_promised: Vec<String>,
    pub districts: BTreeMap<String, String>,
    pub companies: BTreeMap<String, Company>,
}

impl Policy {
    pub fn category(&self, id: &str) -> Option<&CategoryRule> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// The limit row for a category, table and external works.
    pub fn limit(&self, table: Table, category: &str, works: bool) -> Option<&Limit> {
        let wanted = if works { Works::Yes } else { Works::None };
        self.limits.iter().find(|l| {
            l.table == table && l.category == category && (l.works == wanted || l.works == Works::Any)
        })
    }
}

/// Everything that decides a record besides its facts: the policy versions and the holiday
/// calendars their deadlines are counted on.
#[derive(Debug, Clone)]
pub struct Rules {
    pub policies: PolicySet,
    pub calendar: crate::calendar::Calendar,
}

impl Rules {
    /// The embedded policy files and calendars, overridden and extended from `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Rules, String> {
        Ok(Rules {
            policies: PolicySet::load(dir).map_err(|e| e.to_string())?,
            calendar: crate::calendar::Calendar::load(dir).map_err(|e| e.to_string())?,
        })
    }
}

/// Every policy version, oldest first.
#[derive(Debug, Clone)]
pub struct PolicySet {
    versions: Vec<Policy>,
}

impl PolicySet {
    /// The embedded policy files, overridden and extended from `dir`.
    pub fn load(dir: Option<&Path>) -> Result<PolicySet, PolicyError> {
        let files = crate::datafiles::load(dir).map_err(|e| PolicyError::Read(e.to_string()))?;
        let mut versions = Vec::new();
        for (file, content) in files.iter().filter(|(f, _)| f.starts_with("policy/")) {
            versions.push(spec::compile(file, content)?);
        }
        PolicySet::new(versions)
    }

    pub fn new(mut versions: Vec<Policy>) -> Result<PolicySet, PolicyError> {
        versions.sort_by_key(|p| p.effective);
        for pair in versions.windows(2) {
            if pair[0].effective == pair[1].effective || pair[0].version == pair[1].version {
                return Err(PolicyError::Invalid {
                    file: pair[1].file.clone(),
                    line: 1,
                    message: format!("same version or effective date as {}", pair[0].file),
                });
            }
        }
        Ok(PolicySet { versions })
    }

    /// The version in force on `date`: the newest effective on or before it.
    pub fn for_date(&self, date: NaiveDate) -> Result<&Policy, PolicyError> {
        self.versions
            .iter()
            .rev()
            .find(|p| p.effective <= date)
            .ok_or(PolicyError::NoneInForce(date))
    }

    pub fn versions(&self) -> &[Policy] {
        &self.versions
    }
}
