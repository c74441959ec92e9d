//! Pre-engagement records (提前介入) and their assembly from mapped facts.
//!
//! A record says everything the utility knows about one project: who builds what where, the
//! building figures, the water and power requests, the approvals issued and the attachments
//! held. Each field's lineage (the fact it came from) is kept beside the record under the same
//! name, so `gateway trace` can walk any field back to the bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shuiwu_wire::ids::KUNMING_DISTRICTS;

use crate::calendar::Calendar;
use crate::mapping::{Code, Facts, Lineage};
use crate::policy::{Applicant, DecisionTrace, Decisions, Inputs, ManagerDecision, Policy, Table};
use crate::stages::{self, OperatorAction, Progress, Survey};

pub mod diff;
mod power;
mod project;

pub use power::{assemble_power, power_record_id};
pub use project::{assemble, record_id};

/// Whether the project still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    Active,
    /// `ZT` = 0: the builder withdrew the project (撤销).
    Withdrawn,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Active => "active",
            RecordState::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// `None` only on a power-origin record whose applicant gave no project code.
    pub code: Option<String>,
    pub name: Option<String>,
    pub kind: Option<Code>,
    pub nature: Option<Code>,
    pub building_use: Option<Code>,
    pub authorisation: Option<Code>,
    pub authority_region: Option<String>,
    pub approval_stage: Option<Code>,
    pub status: RecordState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Site {
    pub region_code: String,
    /// The Kunming district's name, from `contracts/ids.md`.
    pub district: String,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Builder {
    pub name: String,
    pub credit_code: String,
}

/// The builder's contact: personal data, masked in every output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub name: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Building {
    pub floor_area_m2: Option<Decimal>,
    pub height_m: Option<Decimal>,
    pub hazardous_goods: Option<bool>,
    /// The approval system's own 简易低风险 flag; informative only.
    pub platform_low_risk: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaterRequest {
    pub diameter_dn: Option<i64>,
    #[serde(rename = "use")]
    pub use_: Option<Code>,
    pub daily_m3: Option<Decimal>,
    /// From the public main to one metre past the meter; `None` until surveyed.
    pub external_pipe_m: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerRequest {
    pub capacity_kva: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalResult {
    pub title: Option<String>,
    pub document_no: Option<String>,
    pub issued_on: Option<NaiveDate>,
    pub licence_no: Option<String>,
    pub licence_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    pub id: String,
    pub file_name: Option<String>,
    pub kind: Code,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
}

/// The platform version a record version was built from. Not part of the content hash: a
/// new `BBH` that changes nothing the record says makes no new record version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceVersion {
    pub platform: String,
    pub key: String,
    pub version: i64,
    #[serde(with = "beijing")]
    pub updated_at: DateTime<Utc>,
    pub document_sha256: String,
}

impl SourceVersion {
    /// The source version the facts of one document name (`source.version`,
    /// `source.updated_at`), of item `key` on `platform`.
    fn from_facts(
        facts: &Facts,
        platform: &str,
        key: &str,
        document_sha256: &str,
    ) -> Result<Self, AssembleError> {
        Ok(SourceVersion {
            platform: platform.into(),
            key: key.to_string(),
            version: facts
                .integer("source.version")
                .ok_or_else(|| AssembleError::Missing("source.version".into()))?,
            updated_at: facts
                .time("source.updated_at")
                .ok_or_else(|| AssembleError::Missing("source.updated_at".into()))?,
            document_sha256: document_sha256.to_string(),
        })
    }
}

mod beijing {
    use chrono::{DateTime, Utc};
    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&shuiwu_wire::format_beijing(*t))
    }
}

/// What the policy's rules read from a record. Built from the approval platform, the applicant
/// is a project and table B applies (data obtained in advance). Built from an application made
/// on the power side, table A applies, and the applicant is a household when a person asks for
/// DN15–DN20; any other applicant is not known to the rules until the approval platform's data
/// is found, so no category is decided.
fn inputs_of(r: &PreEngagementRecord) -> Inputs {
    let (applicant, table) = match &r.application {
        None => (Some(Applicant::Project), Table::B),
        Some(a) => (
            a.is_household(r.water.as_ref()).then_some(Applicant::Household),
            Table::A,
        ),
    };
    Inputs {
        applicant,
        building_use: r.project.building_use.as_ref().map(|c| c.code.clone()),
        nature: r.project.nature.as_ref().map(|c| c.code.clone()),
        floor_area_m2: r.building.floor_area_m2,
        height_m: r.building.height_m,
        hazardous_goods: r.building.hazardous_goods,
        diameter_dn: r.water.as_ref().and_then(|w| w.diameter_dn),
        // A measured length from the survey settles what the platform said (or did not).
        external_pipe_m: r
            .survey
            .as_ref()
            .map(|s| s.external_pipe_m)
            .or_else(|| r.water.as_ref().and_then(|w| w.external_pipe_m)),
        district: r.site.region_code.clone(),
        table: Some(table),
    }
}

/// A pre-engagement record's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreEngagementRecord {
    pub project: Project,
    pub site: Site,
    pub builder: Builder,
    pub contact: Contact,
    pub building: Building,
    /// `None` before the 工程建设许可 stage: no water request yet.
    pub water: Option<WaterRequest>,
    /// `Some` when the builder asks for power too: a joint water+power application.
    pub power: Option<PowerRequest>,
    pub approvals: Vec<ApprovalResult>,
    pub attachments: Vec<Attachment>,
    /// The survey's measured pipe length, once an operator recorded it: it settles the
    /// category and the external works over the platform's figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survey: Option<Survey>,
    /// What the policy decided; `None` only in a draft not yet decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Decisions>,
    /// The stages' timeline from the operators' stage events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The power-side application a power-origin record was made from (用电报装同时申请用水).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<PowerOriginApplication>,
    pub source: SourceVersion,
}

/// A power-origin record's application as the power side showed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerOriginApplication {
    pub id: String,
    /// The power side's progress (`SUBMITTED` … `WITHDRAWN`).
    pub status: Code,
    /// The water side's status as the power side last recorded it.
    pub water_status: Option<Code>,
    #[serde(with = "beijing")]
    pub submitted_at: DateTime<Utc>,
    /// `ORGANISATION` or `PERSON`.
    pub applicant_kind: Code,
}

impl PowerOriginApplication {
    /// A household (零星居民): a person asking for a DN15–DN20 meter. The power platform offers
    /// households new connections only, so no relocation or capacity increase can be asked.
    pub fn is_household(&self, water: Option<&WaterRequest>) -> bool {
        self.applicant_kind.code == "PERSON"
            && water
                .and_then(|w| w.diameter_dn)
                .is_some_and(|dn| (15..=20).contains(&dn))
    }
}

/// What assembling one project version gave.
#[derive(Debug, Clone)]
pub enum Assembled {
    Record(Box<Draft>),
    /// Not this utility's: the reason is recorded, nothing else.
    Skip(String),
}

/// A record assembled from facts, before the policy has decided anything.
#[derive(Debug, Clone)]
pub struct Draft {
    pub id: String,
    pub record: PreEngagementRecord,
    pub lineage: BTreeMap<String, Lineage>,
}

/// A record ready to be committed, serialised once, with its lineage and content hash.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub record: PreEngagementRecord,
    pub content_json: String,
    pub lineage_json: String,
    pub content_sha256: String,
    /// The lineage in memory, for masking what is shown of the record without reading the
    /// JSON back.
    pub lineage: BTreeMap<String, Lineage>,
    /// The files that made it: stored beside the version so that the records a changed
    /// mapping or policy would change are found without reading every lineage.
    pub rules: RulesUsed,
}

/// The SHA-256 of the mapping file a record's facts came from and of the policy file that
/// decided it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulesUsed {
    pub mapping_sha256: Option<String>,
    pub policy_sha256: String,
}

impl Draft {
    /// What the policy's rules read from this record.
    pub fn inputs(&self) -> Inputs {
        inputs_of(&self.record)
    }

    /// Applies the operators' actions and the policy, and seals the record: survey, decisions,
    /// progress, lineage and content hash. `manager` is the customer manager the record already
    /// has, if any: it stays unless an operator reassigned the record.
    pub fn decide(
        self,
        policy: &Policy,
        manager: Option<ManagerDecision>,
        actions: &[OperatorAction],
        calendar: &Calendar,
    ) -> Candidate {
        self.decide_content(policy, manager, actions, calendar).seal()
    }

    /// [`Draft::decide`] up to the content and its hash: the lineage is serialised by
    /// [`Decided::seal`] only for a record that will be written (a remap compares most
    /// records with their stored hash and writes none of them).
    pub fn decide_content(
        self,
        policy: &Policy,
        manager: Option<ManagerDecision>,
        actions: &[OperatorAction],
        calendar: &Calendar,
    ) -> Decided {
        let mut record = self.record;
        record.survey = stages::survey(actions);
        let draft_inputs = inputs_of(&record);
        let manager = match (stages::reassigned_manager(actions), manager) {
            (Some(name), Some(m)) => Some(ManagerDecision { manager: name, ..m }),
            (_, m) => m,
        };
        let (decisions, mut traces): (Decisions, BTreeMap<String, DecisionTrace>) =
            crate::policy::decide(policy, &draft_inputs, &self.id, manager);
        if let Some(s) = &record.survey {
            traces.insert(
                "survey".to_string(),
                DecisionTrace {
                    policy_version: policy.version.clone(),
                    policy_file: policy.file.clone(),
                    policy_sha256: policy.sha256.clone(),
                    rule: format!(
                        "measured on site: operator action {} by {} at {}",
                        s.action_id, s.by, s.at
                    ),
                    inputs: BTreeMap::from([("external_pipe_m".to_string(), s.external_pipe_m.to_string())]),
                },
            );
        }
        record.progress = Some(stages::progress(actions, &decisions.stages, calendar));
        record.decisions = Some(decisions);
        let (content_json, content_sha256) = serialise(&record);
        // Every fact of a record comes from its one source document through one mapping.
        let rules = RulesUsed {
            mapping_sha256: self.lineage.values().next().map(|l| l.mapping_sha256.to_string()),
            policy_sha256: policy.sha256.clone(),
        };
        Decided {
            id: self.id,
            record,
            content_json,
            content_sha256,
            lineage: self.lineage,
            traces,
            rules,
        }
    }
}

/// A record decided, its content serialised and hashed, its lineage not yet.
#[derive(Debug, Clone)]
pub struct Decided {
    pub id: String,
    pub record: PreEngagementRecord,
    pub content_json: String,
    pub content_sha256: String,
    pub lineage: BTreeMap<String, Lineage>,
    traces: BTreeMap<String, DecisionTrace>,
    pub rules: RulesUsed,
}

impl Decided {
    /// The record ready to be committed, its lineage (facts and decisions) serialised.
    pub fn seal(self) -> Candidate {
        let lineage_json = crate::mapping::lineage::to_json(&self.lineage, &self.traces);
        Candidate {
            id: self.id,
            record: self.record,
            content_json: self.content_json,
            lineage_json,
            content_sha256: self.content_sha256,
            lineage: self.lineage,
            rules: self.rules,
        }
    }
}

/// Why facts could not be assembled into a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AssembleError {
    /// A fact the mapping marks required is missing: only a broken mapping override can
    /// cause this.
    #[error("fact {0} is missing: the mapping must provide it")]
    Missing(String),
    /// A value is well formed on its own but wrong beside another (an identity number given
    /// for a company, a credit code for a person).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl AssembleError {
    /// The record field it concerns.
    pub fn field(&self) -> &str {
        match self {
            AssembleError::Missing(f) => f,
            AssembleError::Invalid { field, .. } => field,
        }
    }
}

/// The Kunming district a site's division code names, or why the site is not this utility's.
fn district_of(region: &str) -> Result<&'static str, String> {
    KUNMING_DISTRICTS
        .iter()
        .find(|(c, _)| *c == region)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("site in division {region}, outside Kunming"))
}

/// The facts' lineage, moved into the draft: nothing is copied.
fn lineage_of(facts: Facts) -> BTreeMap<String, Lineage> {
    facts
        .fields
        .into_iter()
        .map(|(name, fact)| (name, fact.lineage))
        .collect()
}

/// The record as JSON, and the SHA-256 of that JSON without its `source` part.
fn serialise(record: &PreEngagementRecord) -> (String, String) {
    // A record's JSON is a few kilobytes: written into one buffer of that size rather than
    // grown from nothing. Serialising plain structs of strings, numbers and options cannot
    // fail, and serde_json writes UTF-8 only.
    let mut buffer = Vec::with_capacity(4096);
    let json = serde_json::to_writer(&mut buffer, record)
        .ok()
        .and_then(|()| String::from_utf8(buffer).ok())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    match source_start(&json) {
        Some(i) => {
            hasher.update(&json.as_bytes()[..i]);
            hasher.update(b"}");
        }
        None => hasher.update(json.as_bytes()),
    }
    (json, hex::encode(hasher.finalize()))
}

/// Where the record's `source` part starts in its JSON: the content hash covers the bytes
/// before it and a closing brace. `source` is the record's last field and holds no object
/// with a `source` key, so the last `,"source":` of the text is where it starts (a quote
/// inside a string value is always escaped).
fn source_start(json: &str) -> Option<usize> {
    json.rfind(",\"source\":")
}

/// The record's JSON without its `source` part, the bytes its content hash covers.
#[cfg(test)]
fn without_source(json: &str) -> String {
    match source_start(json) {
        Some(i) => format!("{}}}", &json[..i]),
        None => json.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash covers exactly what it covered when it was computed from a JSON value with
    /// `source` removed: a record that did not change keeps its hash across this code.
    #[test]
    fn the_content_hash_covers_the_record_without_its_source() {
        let text = include_str!("../../fixtures/approval/contract-example.json");
        let body = serde_json::json!({"data": serde_json::from_str::<serde_json::Value>(text).unwrap()});
        let mapping = crate::mapping::MappingSet::load(None)
            .unwrap()
            .get(crate::app::PROJECT_MAPPING)
            .unwrap();
        let ctx = crate::mapping::Context {
            today: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
        };
        let facts =
            crate::mapping::apply(&mapping, crate::mapping::Document::Json(&body), "d", &ctx).unwrap();
        let Assembled::Record(draft) = assemble(facts, "d").unwrap() else {
            panic!("skipped")
        };
        let rules = crate::policy::Rules::load(None).unwrap();
        let policy = rules.policies.versions().last().unwrap();
        let candidate = draft.decide(policy, None, &[], &rules.calendar);
        let mut value = serde_json::to_value(&candidate.record).unwrap();
        value.as_object_mut().unwrap().remove("source");
        assert!(candidate.content_json.contains("\"source\":{"));
        assert_eq!(without_source(&candidate.content_json), value.to_string());
        assert_eq!(
            candidate.content_sha256,
            hex::encode(Sha256::digest(value.to_string().as_bytes()))
        );
    }
}
