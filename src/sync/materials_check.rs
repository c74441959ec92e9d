//! The zero-materials check that ends each pass: licences from the licence library and
//! attachments from the approval platform, evaluated into a checklist and, when items are
//! missing, the record's one notice.

use std::collections::{HashMap, HashSet};

use chrono::Duration;
use shuiwu_approval::ApprovalError;
use shuiwu_licences::LicenceError;
use shuiwu_wire::RawDocument;
use tokio_util::sync::CancellationToken;

use super::{HolderLicences, MaterialsSource, SOURCE, SyncError, Syncer};
use crate::mapping::{self, Context};
use crate::materials::{self, AttachmentCheck};
use crate::store::{Held, sha256_hex};

/// What checking one record gave.
pub(super) enum Checked {
    Done {
        notice_issued: bool,
    },
    /// This record cannot be checked now (e.g. its licence answer was unreadable and held).
    Later,
    /// A platform the check needs is not answering: stop until the next pass.
    SourceDown(String),
}

/// What the zero-materials check of one pass did, and what it left.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MaterialsReport {
    pub checked: u64,
    pub notices_issued: u64,
    /// Records still waiting for a check when the pass ended.
    pub unchecked: u64,
    /// Why the check stopped before every record was checked, if it did.
    pub stopped: Option<String>,
}

/// How far the approval side of the pass is, for the check that runs beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SyncProgress {
    pub commits: u64,
    pub done: bool,
}

impl Syncer {
    /// Evaluates the checklist of the active records whose current version has none yet (and,
    /// a day after a check that missed items, again), beside the approval sync of the same
    /// pass: the two platforms have limits of their own. Records are taken oldest first, at
    /// most `materials_per_pass` of them, so a backlog is worked off over several passes and
    /// the next pass resumes with the records still waiting. A platform that stops answering
    /// is waited out for up to `outage_wait_secs`.
    pub(super) async fn materials_pass(
        &self,
        run_id: i64,
        cancel: &CancellationToken,
        mut progress: tokio::sync::watch::Receiver<SyncProgress>,
    ) -> Result<MaterialsReport, SyncError> {
        let Some(source) = &self.materials else {
            return Ok(MaterialsReport::default());
        };
        let mut round = Round {
            source,
            holders: HashMap::new(),
            held_holders: HashSet::new(),
            run_id,
            cancel,
        };
        let mut skipped: HashSet<String> = HashSet::new();
        let mut report = MaterialsReport::default();
        // A record that missed items is checked again a day later: its licences may have
        // been issued or renewed since.
        let recheck_before = self.clock.now() - Duration::hours(24);
        let bound = self.cfg.materials_per_pass as u64;
        let outage_limit = std::time::Duration::from_secs(self.cfg.outage_wait_secs);
        'pass: while !cancel.is_cancelled() {
            if report.checked >= bound {
                report.stopped = Some(format!(
                    "{bound} records checked, the most one pass checks (sync.materials_per_pass); the next pass goes on"
                ));
                break;
            }
            let limit = 100 + skipped.len();
            let seen = *progress.borrow_and_update();
            let batch: Vec<_> = self
                .store
                .call(move |s| s.records_needing_materials(limit, recheck_before))
                .await?
                .into_iter()
                .filter(|(id, ..)| !skipped.contains(id))
                .collect();
            if batch.is_empty() {
                if seen.done {
                    break;
                }
                // Nothing to check yet: wait for the sync to commit more (or finish).
                tokio::select! {
                    () = cancel.cancelled() => break,
                    changed = progress.changed() => if changed.is_err() { break },
                }
                continue;
            }
            for (id, version, content) in batch {
                let mut outage: Option<(std::time::Instant, u32)> = None;
                loop {
                    if cancel.is_cancelled() || report.checked >= bound {
                        continue 'pass;
                    }
                    match self.check_materials(&mut round, &id, version, &content).await? {
                        Checked::Done { notice_issued } => {
                            report.checked += 1;
                            report.notices_issued += u64::from(notice_issued);
                        }
                        Checked::Later => {
                            skipped.insert(id.clone());
                        }
                        Checked::SourceDown(reason) => {
                            // A short outage (maintenance, a burst of faults) is waited out, as
                            // the approval side waits out its own; a long one ends the check
                            // for this pass.
                            let (since, attempt) = outage.get_or_insert((std::time::Instant::now(), 0));
                            if since.elapsed() >= outage_limit {
                                report.stopped = Some(format!(
                                    "a platform the check needs did not answer for {} s: {reason}",
                                    outage_limit.as_secs()
                                ));
                                break 'pass;
                            }
                            *attempt += 1;
                            let wait = std::time::Duration::from_secs(1 << (*attempt).min(5))
                                .min(outage_limit.saturating_sub(since.elapsed()));
                            tracing::warn!(%reason, wait_secs = wait.as_secs(), "zero-materials check waiting for its platform");
                            tokio::select! {
                                () = cancel.cancelled() => continue 'pass,
                                () = tokio::time::sleep(wait) => {}
                            }
                            continue;
                        }
                    }
                    break;
                }
            }
        }
        if cancel.is_cancelled() && report.stopped.is_none() {
            report.stopped = Some("shutting down".into());
        }
        report.unchecked = self
            .store
            .call(move |s| s.count_records_needing_materials(recheck_before))
            .await?;
        if report.unchecked > 0 && report.stopped.is_none() {
            report.stopped = Some(format!(
                "{} records could not be checked in this pass (held failures or no policy)",
                report.unchecked
            ));
        }
        Ok(report)
    }

    /// One record's checklist; `None` when a source could not answer now.
    async fn check_materials(
        &self,
        round: &mut Round<'_>,
        id: &str,
        version: i64,
        content: &serde_json::Value,
    ) -> Result<Checked, SyncError> {
        let Round {
            source,
            holders,
            held_holders,
            run_id,
            cancel,
        } = round;
        let (source, run_id, cancel) = (*source, *run_id, *cancel);
        let d = &content["decisions"];
        let policy = self
            .rebuilder
            .rules
            .policies
            .versions()
            .iter()
            .find(|p| Some(p.version.as_str()) == d["policy_version"].as_str());
        let Some(policy) = policy else {
            return Ok(Checked::Later);
        };
        // A provisional record is checked for every category it may turn out to be.
        let categories: Vec<String> = match d["category"]["id"].as_str() {
            Some(c) => vec![c.to_string()],
            None => d["category"]["outcomes"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x["category"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut required: Vec<String> = Vec::new();
        for c in &categories {
            for item in policy.materials.get(c).cloned().unwrap_or_default() {
                if !required.contains(&item) {
                    required.push(item);
                }
            }
        }
        let label = d["category"]["id"]
            .as_str()
            .or(d["category"]["state"].as_str())
            .unwrap_or("none")
            .to_string();
        // As the record's decisions say it: unknown while a provisional category leaves it open
        // (a record decided before the answer had three states stored a plain bool).
        let promised = match &d["zero_materials_promised"] {
            serde_json::Value::Bool(b) => Some(*b),
            v => v["value"].as_bool(),
        };
        // One day for the whole check: licence validity and the checklist's date agree.
        let today = self
            .clock
            .now()
            .with_timezone(&shuiwu_wire::beijing())
            .date_naive();
        let code = content["project"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let holder = content["builder"]["credit_code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut documents = Vec::new();

        let needs_licences = required.iter().any(|i| {
            matches!(
                i.as_str(),
                "identity" | "identity_card" | "right_to_build" | "premises_right"
            )
        });
        let (licences, licence_sha, licence_lineage) = if needs_licences {
            if held_holders.contains(&holder) {
                return Ok(Checked::Later);
            }
            if !holders.contains_key(&holder) {
                let answer = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(Checked::SourceDown("shutting down".into())),
                    a = source.licences.query(&holder, None) => a,
                };
                let answer = match answer {
                    Ok(a) => a,
                    // An answer that is there but unusable concerns this holder only: held,
                    // and the other records go on.
                    Err(e @ (LicenceError::BadBody(_) | LicenceError::Xml(_))) => {
                        let held = licence_failure(&code, "licences answer unusable", e.to_string(), None);
                        self.hold_materials_failure(held, None, run_id).await?;
                        held_holders.insert(holder);
                        return Ok(Checked::Later);
                    }
                    Err(e) if e.is_transient() => {
                        return Ok(Checked::SourceDown(format!("licence library: {e}")));
                    }
                    Err(e) => return Err(SyncError::Licences(e)),
                };
                let sha = sha256_hex(&answer.raw.bytes);
                let facts =
                    shuiwu_licences::xml::decode(&answer.raw.bytes, answer.raw.meta.content_type.as_deref())
                        .map_err(|e| e.to_string())
                        .and_then(|t| shuiwu_licences::xml::parse(&t).map_err(|e| e.to_string()))
                        .and_then(|root| {
                            let ctx = Context { today };
                            mapping::apply(&source.mapping, mapping::Document::Xml(&root), &sha, &ctx)
                                .map_err(|e| e.to_string())
                        });
                let facts = match facts {
                    Ok(f) => f,
                    Err(reason) => {
                        let held =
                            licence_failure(&code, "licences answer unreadable", reason, Some(sha.clone()));
                        self.hold_materials_failure(held, Some(answer.raw), run_id)
                            .await?;
                        held_holders.insert(holder);
                        return Ok(Checked::Later);
                    }
                };
                let lineage: std::collections::BTreeMap<String, crate::mapping::Lineage> = facts
                    .fields
                    .iter()
                    .map(|(n, f)| (n.clone(), f.lineage.clone()))
                    .collect();
                let lineage = crate::mapping::lineage::to_json(&lineage, &Default::default());
                holders.insert(
                    holder.clone(),
                    (materials::licences_from(&facts), sha, Some(answer.raw), lineage),
                );
            }
            let (licences, sha, raw, lineage) = holders
                .get_mut(&holder)
                .map(|(l, s, r, g)| (l.clone(), s.clone(), r.take(), g.clone()))
                .unwrap_or_default();
            if let Some(raw) = raw {
                documents.push((sha.clone(), raw));
            }
            (licences, Some(sha), Some(lineage))
        } else {
            (Vec::new(), None, None)
        };

        let mut attachments = Vec::new();
        for (item, kind) in [("site_plan", "ZPMT"), ("plumbing_design", "GPSJ")] {
            if !required.iter().any(|r| r == item) {
                continue;
            }
            let files = content["attachments"].as_array().cloned().unwrap_or_default();
            for f in files.iter().filter(|f| f["kind"]["code"].as_str() == Some(kind)) {
                let (Some(fjid), Some(sha)) = (f["id"].as_str(), f["sha256"].as_str()) else {
                    continue;
                };
                // An attachment stored before (same content, same SHA-256) is not downloaded
                // again: daily re-checks would spend the platform's quota on bytes we have.
                let known = sha.to_ascii_lowercase();
                let probe = known.clone();
                if self.store.call(move |s| s.has_document(&probe)).await? {
                    attachments.push(AttachmentCheck::Fetched {
                        id: fjid.into(),
                        kind: kind.into(),
                        document_sha256: known,
                    });
                    continue;
                }
                let fetched = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(Checked::SourceDown("shutting down".into())),
                    r = self.client.attachment(fjid, sha, f["size_bytes"].as_u64()) => r,
                };
                match fetched {
                    Ok(raw) => {
                        let doc_sha = sha256_hex(&raw.bytes);
                        documents.push((doc_sha.clone(), raw));
                        attachments.push(AttachmentCheck::Fetched {
                            id: fjid.into(),
                            kind: kind.into(),
                            document_sha256: doc_sha,
                        });
                    }
                    Err(e @ ApprovalError::HashMismatch { .. }) => {
                        let held = attachment_failure(
                            &code,
                            content,
                            kind,
                            fjid,
                            "attachment content does not match its hash".into(),
                            &e,
                        );
                        self.hold_materials_failure(held, None, run_id).await?;
                        attachments.push(AttachmentCheck::Mismatch {
                            id: fjid.into(),
                            kind: kind.into(),
                        });
                    }
                    Err(e) if e.is_transient() => {
                        return Ok(Checked::SourceDown(format!("approval platform attachments: {e}")));
                    }
                    Err(e) => {
                        // Refused for good (over its announced size, an unknown code): held
                        // with the reason; the item counts as not found.
                        let category = format!("attachment refused: {}", e.kind());
                        let held = attachment_failure(&code, content, kind, fjid, category, &e);
                        self.hold_materials_failure(held, None, run_id).await?;
                    }
                }
            }
        }

        let checklist = materials::evaluate(
            &required,
            &code,
            &licences,
            licence_sha.as_deref(),
            &attachments,
            today,
            promised,
        );
        let missing: Vec<materials::CheckItem> = checklist.missing().cloned().collect();
        let notice_items = serde_json::to_string(&missing).unwrap_or_default();
        let text = materials::notice_text(
            content["project"]["name"].as_str().unwrap_or_default(),
            &code,
            content["builder"]["name"].as_str().unwrap_or_default(),
            d["customer_manager"]["manager"].as_str().unwrap_or("-"),
            &missing,
            today,
        );
        let notice = (!missing.is_empty()).then_some((notice_items, text));
        let now = self.clock.now();
        let id = id.to_string();
        let issued = self
            .store
            .call(move |s| {
                s.save_materials(
                    &id,
                    version,
                    &checklist,
                    &label,
                    &documents,
                    licence_lineage.as_deref(),
                    notice.as_ref().map(|(i, t)| (i.as_str(), t.as_str())),
                    Some(run_id),
                    now,
                )
            })
            .await?;
        Ok(Checked::Done {
            notice_issued: issued,
        })
    }

    /// Holds a failure of the materials check (with the document it concerns, if any). It is
    /// not tied to a project version: the check is tried again on a later pass.
    async fn hold_materials_failure(
        &self,
        held: Held,
        raw: Option<RawDocument>,
        run_id: i64,
    ) -> Result<(), SyncError> {
        let documents: Vec<_> = raw.map(|r| (sha256_hex(&r.bytes), r)).into_iter().collect();
        let now = self.clock.now();
        self.store
            .call(move |s| s.hold(&held, &documents, Some(run_id), now))
            .await?;
        Ok(())
    }
}

/// One pass's materials check: where it reads, what it read so far, and its shutdown token.
pub(super) struct Round<'a> {
    source: &'a MaterialsSource,
    /// Licence answers by holder, read once per pass.
    holders: HashMap<String, HolderLicences>,
    /// Holders whose answer was unusable and held: not asked again in this pass.
    held_holders: HashSet<String>,
    run_id: i64,
    cancel: &'a CancellationToken,
}

/// A failure of one attachment of a project version (the version the record's content names).
fn attachment_failure(
    code: &str,
    content: &serde_json::Value,
    kind: &str,
    fjid: &str,
    category: String,
    e: &ApprovalError,
) -> Held {
    Held {
        source: SOURCE.into(),
        key: Some(code.to_string()),
        version: content["source"]["version"].as_i64(),
        step: "attachment".into(),
        field: Some(format!("attachments ({kind} {fjid})")),
        category,
        reason: e.to_string(),
        detail: None,
        document_sha256: None,
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
