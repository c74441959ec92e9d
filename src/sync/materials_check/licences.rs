//! One holder's licences for the zero-materials check: read once per pass from the licence
//! library, stored as soon as they are read, mapped into facts, or held when unusable.

use chrono::NaiveDate;
use shuiwu_licences::LicenceError;

use super::Round;
use crate::mapping::{self, Context};
use crate::materials::{self, LicenceFact};
use crate::store::{Held, StoreError, sha256_hex};
use crate::sync::{SyncError, Syncer};

/// A holder's licence answer as read in this pass: the facts the checklist uses, the
/// answer's hash (the raw document is already stored) and the facts' lineage.
#[derive(Clone)]
pub(super) enum HolderAnswer {
    Read {
        licences: Vec<LicenceFact>,
        sha256: String,
        lineage: String,
    },
    /// The answer was unusable and is held: this holder's records wait for a later pass.
    Held,
}

/// Why a holder's licences could not be read now.
pub(super) enum HolderError {
    Down(String),
    Fatal(SyncError),
}

impl Syncer {
    /// The licences of a holder, read once per pass: the first record of the holder queries
    /// and the others in flight wait for its answer. The raw answer is stored as soon as it
    /// is read, so every record that uses it can name it. `today` is the check's day, which
    /// the licence facts are mapped on (validity and the checklist agree).
    pub(super) async fn holder_answer(
        &self,
        round: &Round,
        holder: &str,
        code: &str,
        today: NaiveDate,
    ) -> Result<HolderAnswer, HolderError> {
        let cell = round
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(holder.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.read_holder(round, holder, code, today))
            .await
            .cloned()
    }

    async fn read_holder(
        &self,
        round: &Round,
        holder: &str,
        code: &str,
        today: NaiveDate,
    ) -> Result<HolderAnswer, HolderError> {
        let fatal = |e: StoreError| HolderError::Fatal(e.into());
        let answer = tokio::select! {
            biased;
            () = round.cancel.cancelled() => return Err(HolderError::Down("shutting down".into())),
            a = round.source.licences.query(holder, None) => a,
        };
        let answer = match answer {
            Ok(a) => a,
            // An answer that is there but unusable concerns this holder only: held, and the
            // other records go on.
            Err(e @ (LicenceError::BadBody(_) | LicenceError::Xml(_))) => {
                let held = licence_failure(code, "licences answer unusable", e.to_string(), None);
                self.hold_materials_failure(held, None, round.run_id)
                    .await
                    .map_err(HolderError::Fatal)?;
                return Ok(HolderAnswer::Held);
            }
            Err(e) if e.is_transient() => return Err(HolderError::Down(format!("licence library: {e}"))),
            Err(e) => return Err(HolderError::Fatal(SyncError::Licences(e))),
        };
        let sha = sha256_hex(&answer.raw.bytes);
        let facts = shuiwu_licences::xml::decode(&answer.raw.bytes, answer.raw.meta.content_type.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|t| shuiwu_licences::xml::parse(&t).map_err(|e| e.to_string()))
            .and_then(|root| {
                let ctx = Context { today };
                mapping::apply(&round.source.mapping, mapping::Document::Xml(&root), &sha, &ctx)
                    .map_err(|e| e.to_string())
            });
        let facts = match facts {
            Ok(f) => f,
            Err(reason) => {
                let held = licence_failure(code, "licences answer unreadable", reason, Some(sha.clone()));
                self.hold_materials_failure(held, Some(answer.raw), round.run_id)
                    .await
                    .map_err(HolderError::Fatal)?;
                return Ok(HolderAnswer::Held);
            }
        };
        let now = self.clock.now();
        let (run_id, documents) = (round.run_id, vec![(sha.clone(), answer.raw)]);
        self.store
            .call(move |s| s.land(&documents, Some(run_id), now))
            .await
            .map_err(fatal)?;
        let lineage: std::collections::BTreeMap<String, crate::mapping::Lineage> = facts
            .fields
            .iter()
            .map(|(n, f)| (n.clone(), f.lineage.clone()))
            .collect();
        Ok(HolderAnswer::Read {
            licences: materials::licences_from(&facts),
            sha256: sha,
            lineage: crate::mapping::lineage::to_json(&lineage, &Default::default()),
        })
    }
}

/// A failure of the licence side of the check, for one project's builder.
fn licence_failure(code: &str, category: &str, reason: String, document_sha256: Option<String>) -> Held {
    Held {
        source: "licences".into(),
        key: Some(code.to_string()),
        version: None,
        step: "licences".into(),
        field: None,
        category: category.into(),
        reason,
        detail: None,
        document_sha256,
    }
}
