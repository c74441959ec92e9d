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

/// A new record's candidate, built before the commit's transaction (on the task that fetched
/// its detail, in parallel with the other projects of the page), with the policy that decided
/// it. The transaction uses it only if the record is still new and the same policy is in force
/// on the commit's day: a new record has no actions and no manager, so these are all its
/// candidate depends on besides the draft.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub candidate: Candidate,
    pub policy_sha256: String,
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

    /// Prepares the candidate of a record that is not stored yet, as [`Rebuilder::candidate`]
    /// would build it `now`; `None` when no policy is in force (the commit then says why).
    pub fn prepare(&self, draft: &Draft, now: DateTime<Utc>) -> Option<Prepared> {
        let policy = self.rules.policies.for_date(crate::worktime::date_of(now)).ok()?;
        Some(Prepared {
            candidate: draft.decide_new(policy, &self.rules.calendar),
            policy_sha256: policy.sha256.clone(),
        })
    }

    /// The candidate a sync commit writes, inside its transaction: the prepared one when the
    /// record is still new (no stored version, no actions) and the policy in force `now` is
    /// the one that prepared it; otherwise rebuilt from the draft here.
    pub fn commit_candidate(
        &self,
        draft: Draft,
        prepared: Option<Prepared>,
        existing: Option<&Existing>,
        actions: &[OperatorAction],
        now: DateTime<Utc>,
    ) -> Result<Candidate, PolicyError> {
        if let (None, [], Some(p)) = (existing, actions, prepared) {
            let policy = self.rules.policies.for_date(crate::worktime::date_of(now))?;
            if policy.sha256 == p.policy_sha256 {
                return Ok(p.candidate);
            }
        }
        self.candidate(draft, existing, actions, now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Assembled;

    fn draft() -> (Rebuilder, Draft) {
        let text = include_str!("../fixtures/approval/contract-example.json");
        let body = serde_json::json!({"data": serde_json::from_str::<serde_json::Value>(text).unwrap()});
        let mapping = crate::mapping::MappingSet::load(None)
            .unwrap()
            .get(crate::app::PROJECT_MAPPING)
            .unwrap();
        let rebuilder = Rebuilder::new(mapping, Arc::new(Rules::load(None).unwrap()));
        let today = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let Assembled::Record(draft) = rebuilder.assemble(&body, "d", today).unwrap() else {
            panic!("skipped")
        };
        (rebuilder, *draft)
    }

    /// A candidate prepared ahead is exactly the one the transaction would build for a new
    /// record, and is not used for a record that exists by the time of the commit.
    #[test]
    fn a_prepared_candidate_is_the_rebuilt_one_and_only_for_a_new_record() {
        let (rebuilder, draft) = draft();
        let now = Utc::now();
        let prepared = rebuilder.prepare(&draft, now).unwrap();
        let built = rebuilder.candidate(draft.clone(), None, &[], now).unwrap();
        assert_eq!(prepared.candidate.content_json, built.content_json);
        assert_eq!(prepared.candidate.content_sha256, built.content_sha256);
        assert_eq!(prepared.candidate.lineage_json, built.lineage_json);

        // The record exists (created long ago, with a manager): the prepared candidate is not
        // the one to write; the rebuild keeps the stored manager.
        let mut marked = prepared.clone();
        marked.candidate.content_sha256 = "prepared".into();
        let manager = crate::policy::ManagerDecision {
            company: "qingyuan".into(),
            company_name: "清源公司".into(),
            manager: "QY-99 stored manager".into(),
        };
        let existing = Existing {
            created: now - chrono::Duration::days(30),
            manager: Some(manager),
        };
        let written = rebuilder
            .commit_candidate(draft.clone(), Some(marked.clone()), Some(&existing), &[], now)
            .unwrap();
        assert_ne!(written.content_sha256, "prepared");
        assert!(written.content_json.contains("QY-99 stored manager"));
        // Still new: the prepared one is written as it is.
        let written = rebuilder
            .commit_candidate(draft, Some(marked), None, &[], now)
            .unwrap();
        assert_eq!(written.content_sha256, "prepared");
    }
}
