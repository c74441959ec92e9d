//! Rebuilding a record from what it derives from: a project document mapped into facts (the
//! draft) and the record's operator actions, under the policy in force on its creation day.
//!
//! This is the only way a record's content is made. The sync, a stage event, a reassignment
//! and a replay all come here, and the store calls [`Rebuilder::candidate`] *inside* the
//! transaction that writes the result, after reading the actions and the current version in
//! that same transaction: an operator action and a sync commit can therefore never overwrite
//! each other, and a version's content always belongs to the document it names.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::mapping::{self, MapError, Mapping};
use crate::policy::{ManagerDecision, PolicyError, Rules};
use crate::record::{
    AssembleError, Assembled, Candidate, Decided, Draft, RecordState, RulesUsed, assemble, assemble_power,
};
use crate::stages::OperatorAction;

/// Why a project document gives no draft.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("the raw document is not JSON: {0}")]
    NotJson(String),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error("no mapping for the power side's applications is loaded")]
    NoPowerMapping,
    #[error("the document holds no application {0}")]
    NoApplication(String),
}

/// What a record already is, as far as a rebuild keeps it: the policy is the one in force on
/// the creation day, and the customer manager, once picked, stays.
#[derive(Debug, Clone)]
pub struct Existing {
    pub created: DateTime<Utc>,
    pub manager: Option<ManagerDecision>,
}

/// A new record's version, decided before the commit's transaction: on the task that fetched
/// its detail, in parallel with the other projects of the page, instead of one after the other
/// on the commit's thread. The transaction writes it only if the record is still not stored
/// and the policy in force on the commit's day is the one that decided it: a record not stored
/// has no actions and no customer manager yet, so these are all its content depends on
/// besides the document. Otherwise the transaction maps the stored document again (on the day
/// it was first mapped) and rebuilds the record there, as for any other version.
///
/// Only the serialised forms are kept, not the draft: they are a third of its size, and a
/// backfill holds several pages of them at once.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub state: RecordState,
    pub content_json: String,
    pub content_sha256: String,
    pub lineage_json: String,
    /// The mapping file that made it and the policy file that decided it.
    pub rules: RulesUsed,
    /// The day the document was mapped, for mapping it again the same way.
    pub mapped_on: NaiveDate,
}

/// The mappings and the rules in force: everything a rebuild needs beside its inputs.
#[derive(Clone)]
pub struct Rebuilder {
    /// The approval platform's project detail.
    pub mapping: Arc<Mapping>,
    /// The power side's application resource, for power-origin records.
    pub power: Option<Arc<Mapping>>,
    pub rules: Arc<Rules>,
}

impl Rebuilder {
    pub fn new(mapping: Arc<Mapping>, rules: Arc<Rules>) -> Self {
        Rebuilder {
            mapping,
            power: None,
            rules,
        }
    }

    /// The same, able to build power-origin records too.
    pub fn with_power(mut self, power: Arc<Mapping>) -> Self {
        self.power = Some(power);
        self
    }

    /// Both mappings from a loaded set: the project mapping is required, the power one is
    /// used where the set has it.
    pub fn from_set(set: &mapping::MappingSet, rules: Arc<Rules>) -> Option<Self> {
        let project = set.get(crate::app::PROJECT_MAPPING)?;
        let rebuilder = Rebuilder::new(project, rules);
        Some(match set.get(crate::app::POWER_MAPPING) {
            Some(power) => rebuilder.with_power(power),
            None => rebuilder,
        })
    }

    /// Maps one power-side application, found at `at` in a document (the whole resource, a
    /// webhook event's `application`, one item of a listing page), into a draft.
    pub fn assemble_power(
        &self,
        document: &serde_json::Value,
        at: &str,
        document_sha256: &str,
        today: NaiveDate,
    ) -> Result<Assembled, DraftError> {
        let mapping = self.power.as_ref().ok_or(DraftError::NoPowerMapping)?;
        let ctx = mapping::Context { today };
        let facts = mapping::apply(
            mapping,
            mapping::Document::JsonAt(document, at),
            document_sha256,
            &ctx,
        )?;
        Ok(assemble_power(facts, document_sha256)?)
    }

    /// Maps stored raw bytes of a record's source: a project detail, or the power-side
    /// document that holds version `version` of application `key`.
    pub fn assemble_stored(
        &self,
        source: &str,
        key: &str,
        version: i64,
        bytes: &[u8],
        document_sha256: &str,
        today: NaiveDate,
    ) -> Result<Assembled, DraftError> {
        if source != "power" {
            return self.assemble_bytes(bytes, document_sha256, today);
        }
        let body: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DraftError::NotJson(e.to_string()))?;
        let at = application_pointer(&body, key, version)
            .ok_or_else(|| DraftError::NoApplication(key.to_string()))?;
        self.assemble_power(&body, &at, document_sha256, today)
    }

    /// Maps a project detail (as JSON) into a draft, or says why the project is skipped.
    pub fn assemble(
        &self,
        body: &serde_json::Value,
        document_sha256: &str,
        today: NaiveDate,
    ) -> Result<Assembled, DraftError> {
        let ctx = mapping::Context { today };
        let facts = mapping::apply(
            &self.mapping,
            mapping::Document::Json(body),
            document_sha256,
            &ctx,
        )?;
        Ok(assemble(facts, document_sha256)?)
    }

    /// Maps stored raw bytes of a project detail, as [`Rebuilder::assemble`] does.
    pub fn assemble_bytes(
        &self,
        bytes: &[u8],
        document_sha256: &str,
        today: NaiveDate,
    ) -> Result<Assembled, DraftError> {
        let body: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DraftError::NotJson(e.to_string()))?;
        self.assemble(&body, document_sha256, today)
    }

    /// Decides a draft as a new record would be decided `now` (see [`Prepared`]); gives the
    /// draft back when no policy is in force then (the commit holds it and says why).
    pub fn prepare(
        &self,
        draft: Draft,
        mapped_on: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Prepared, Box<Draft>> {
        let Ok(policy) = self.rules.policies.for_date(crate::worktime::date_of(now)) else {
            return Err(Box::new(draft));
        };
        let c = draft.decide(policy, None, &[], &self.rules.calendar);
        Ok(Prepared {
            state: c.record.project.status,
            id: c.id,
            content_json: c.content_json,
            content_sha256: c.content_sha256,
            lineage_json: c.lineage_json,
            rules: c.rules,
            mapped_on,
        })
    }

    /// Whether a prepared version is still the one to write `now` for a record not stored.
    pub fn still_current(&self, prepared: &Prepared, now: DateTime<Utc>) -> bool {
        self.rules
            .policies
            .for_date(crate::worktime::date_of(now))
            .is_ok_and(|p| p.sha256 == prepared.rules.policy_sha256)
    }

    /// The record a draft and its actions give. `existing` is `None` for a record not stored
    /// yet, which is then decided by the policy in force `now`.
    pub fn candidate(
        &self,
        draft: Draft,
        existing: Option<&Existing>,
        actions: &[OperatorAction],
        now: DateTime<Utc>,
    ) -> Result<Candidate, PolicyError> {
        self.decided(draft, existing, actions, now).map(Decided::seal)
    }

    /// [`Rebuilder::candidate`] without its lineage serialised: enough to tell whether the
    /// record changed.
    pub fn decided(
        &self,
        draft: Draft,
        existing: Option<&Existing>,
        actions: &[OperatorAction],
        now: DateTime<Utc>,
    ) -> Result<Decided, PolicyError> {
        let created = existing.map_or(now, |e| e.created);
        let policy = self.rules.policies.for_date(crate::worktime::date_of(created))?;
        let manager = existing.and_then(|e| e.manager.clone());
        Ok(draft.decide_content(policy, manager, actions, &self.rules.calendar))
    }
}

/// Where a power-side document holds version `version` of application `id`: the document
/// itself (a single read or a call's answer), a webhook event's `application`, or one item of
/// a listing page. A version is matched when the document has several items of one
/// application (it never has: a page shows each application once), else the id alone.
pub fn application_pointer(document: &serde_json::Value, id: &str, version: i64) -> Option<String> {
    let is = |v: &serde_json::Value| v["applicationId"].as_str() == Some(id);
    let at_version = |v: &serde_json::Value| v["version"].as_i64() == Some(version);
    if is(document) {
        return Some(String::new());
    }
    if is(&document["application"]) {
        return Some("/application".into());
    }
    let items = document["items"].as_array()?;
    let found = items
        .iter()
        .position(|v| is(v) && at_version(v))
        .or_else(|| items.iter().position(is))?;
    Some(format!("/items/{found}"))
}
