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
use crate::record::{Assembled, Candidate, Draft, MissingFact, assemble};
use crate::stages::OperatorAction;

/// Why a project document gives no draft.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("the raw document is not JSON: {0}")]
    NotJson(String),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Assemble(#[from] MissingFact),
}

/// What a record already is, as far as a rebuild keeps it: the policy is the one in force on
/// the creation day, and the customer manager, once picked, stays.
#[derive(Debug, Clone)]
pub struct Existing {
    pub created: DateTime<Utc>,
    pub manager: Option<ManagerDecision>,
}

/// The mapping and the rules in force: everything a rebuild needs beside its inputs.
#[derive(Clone)]
pub struct Rebuilder {
    pub mapping: Arc<Mapping>,
    pub rules: Arc<Rules>,
}

impl Rebuilder {
    pub fn new(mapping: Arc<Mapping>, rules: Arc<Rules>) -> Self {
        Rebuilder { mapping, rules }
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

    /// The record a draft and its actions give. `existing` is `None` for a record not stored
    /// yet, which is then decided by the policy in force `now`.
    pub fn candidate(
        &self,
        draft: Draft,
        existing: Option<&Existing>,
        actions: &[OperatorAction],
        now: DateTime<Utc>,
    ) -> Result<Candidate, PolicyError> {
        let created = existing.map_or(now, |e| e.created);
        let policy = self.rules.policies.for_date(crate::worktime::date_of(created))?;
        let manager = existing.and_then(|e| e.manager.clone());
        Ok(draft.decide(policy, manager, actions, &self.rules.calendar))
    }
}
