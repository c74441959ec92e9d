//! The zero-materials check that runs beside each pass's approval sync: licences from the
//! licence library and attachments from the approval platform, evaluated into a checklist
//! and, when items are missing, the record's one notice. Several records are checked at
//! once; a holder's licences are read once per pass and stored as soon as they are read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use shuiwu_approval::ApprovalError;
use shuiwu_licences::LicenceError;
use shuiwu_wire::RawDocument;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{MaterialsSource, SOURCE, SyncError, Syncer};
use crate::mapping::{self, Context};
use crate::materials::{self, AttachmentCheck, LicenceFact};
use crate::store::{Held, StoreError, sha256_hex};

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

/// How one record's check ended, outage waits included.
enum Outcome {
    Done {
        notice_issued: bool,
    },
    /// Not checkable in this pass (held, or no policy for it).
    Later,
    /// A platform stayed down longer than `outage_wait_secs`: the check stops for this pass.
    Stopped(String),
    /// Shutdown.
    Cancelled,
}

/// A holder's licence answer as read in this pass: the facts the checklist uses, the
/// answer's hash (the raw document is already stored) and the facts' lineage.
#[derive(Clone)]
enum HolderAnswer {
    Read {
        licences: Vec<LicenceFact>,
        sha256: String,
        lineage: String,
    },
    /// The answer was unusable and is held: this holder's records wait for a later pass.
    Held,
}

/// Why a holder's licences could not be read now.
enum HolderError {
    Down(String),
    Fatal(SyncError),
}

/// One pass's materials check, shared by the records checked at the same time: where it reads,
/// the licence answers read so far (one query per holder and pass, however many of the
/// holder's records are in flight), and the shutdown token.
#[derive(Clone)]
struct Round {
    source: MaterialsSource,
    holders: Arc<Mutex<HashMap<String, Arc<OnceCell<HolderAnswer>>>>>,
    run_id: i64,
    cancel: CancellationToken,
}

impl Syncer {
    /// Evaluates the checklist of the active records whose current version has none yet (and,
    /// a day after a check that missed items, again), beside the approval sync of the same
    /// pass: the two platforms have limits of their own. Records are taken oldest first, at
    /// most `materials_per_pass` of them, so a backlog is worked off over several passes and
    /// the next pass resumes with the records still waiting. Up to twice `concurrency` records
    /// are checked at once, so that each platform's limiter, not one record's round trips, sets
    /// the pace. A platform that stops answering is waited out for up to `outage_wait_secs`.
    pub(super) async fn materials_pass(
        &self,
        run_id: i64,
        cancel: &CancellationToken,
        mut progress: tokio::sync::watch::Receiver<SyncProgress>,
    ) -> Result<MaterialsReport, SyncError> {
        let Some(source) = &self.materials else {
            return Ok(MaterialsReport::default());
        };
        let round = Round {
            source: source.clone(),
            holders: Arc::default(),
            run_id,
            cancel: cancel.clone(),
        };
        let mut skipped: HashSet<String> = HashSet::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<(String, i64, serde_json::Value)> = VecDeque::new();
        let mut tasks: JoinSet<(String, Result<Outcome, SyncError>)> = JoinSet::new();
        let mut report = MaterialsReport::default();
        // A record that missed items is checked again a day later: its licences may have
        // been issued or renewed since.
        let recheck_before = self.clock.now() - Duration::hours(24);
        let bound = self.cfg.materials_per_pass as u64;
        // A record's check waits on two limiters in turn (licences, then attachments): twice
        // the detail concurrency keeps both platforms busy (4 in flight left the licence
        // library idle about a sixth of the time while attachments waited).
        let width = 2 * self.cfg.concurrency.max(1);
        let outage_limit = std::time::Duration::from_secs(self.cfg.outage_wait_secs);
        let mut sync_done = false;
        let result = loop {
            if cancel.is_cancelled() || report.stopped.is_some() {
                break Ok(());
            }
            // Whether the sync had finished *before* the records were read: then a read that
            // finds nothing means nothing more will come.
            let mut drained = false;
            while tasks.len() < width && report.checked + (tasks.len() as u64) < bound {
                if queue.is_empty() {
                    sync_done |= progress.borrow_and_update().done;
                    let limit = 100 + skipped.len() + in_flight.len();
                    let batch = self
                        .store
                        .call(move |s| s.records_needing_materials(limit, recheck_before))
                        .await?;
                    queue.extend(
                        batch
                            .into_iter()
                            .filter(|(id, ..)| !skipped.contains(id) && !in_flight.contains(id)),
                    );
                    if queue.is_empty() {
                        drained = true;
                        break;
                    }
                }
                let Some((id, version, content)) = queue.pop_front() else {
                    break;
                };
                in_flight.insert(id.clone());
                let (this, round) = (self.clone(), round.clone());
                tasks.spawn(async move {
                    let outcome = this
                        .check_until_done(&round, &id, version, &content, outage_limit)
                        .await;
                    (id, outcome)
                });
            }
            if tasks.is_empty() {
                if report.checked >= bound {
                    report.stopped = Some(format!(
                        "{bound} records checked, the most one pass checks (sync.materials_per_pass); the next pass goes on"
                    ));
                    break Ok(());
                }
                if drained && sync_done {
                    break Ok(());
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (id, outcome) = match joined {
                        Ok(j) => j,
                        Err(e) => break Err(SyncError::Join(e.to_string())),
                    };
                    in_flight.remove(&id);
                    match outcome {
                        Ok(Outcome::Done { notice_issued }) => {
                            report.checked += 1;
                            report.notices_issued += u64::from(notice_issued);
                        }
                        Ok(Outcome::Later) => {
                            skipped.insert(id);
                        }
                        Ok(Outcome::Stopped(reason)) => report.stopped = Some(reason),
                        Ok(Outcome::Cancelled) => {}
                        Err(e) => break Err(e),
                    }
                }
                // New commits, when the check has run out of records to start.
                changed = progress.changed(), if drained && !sync_done => {
                    if changed.is_err() {
                        sync_done = true;
                    }
                }
            }
        };
        // Records still in flight stop at their next step; what they committed stays.
        tasks.shutdown().await;
        result?;
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

    /// One record's check, waiting out a short outage (maintenance, a burst of faults) as the
    /// approval side waits out its own; a long one ends the check for this pass.
    async fn check_until_done(
        &self,
        round: &Round,
        id: &str,
        version: i64,
        content: &serde_json::Value,
        outage_limit: std::time::Duration,
    ) -> Result<Outcome, SyncError> {
        let mut outage: Option<(std::time::Instant, u32)> = None;
        loop {
            if round.cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            match self.check_materials(round, id, version, content).await? {
                Checked::Done { notice_issued } => return Ok(Outcome::Done { notice_issued }),
                Checked::Later => return Ok(Outcome::Later),
                Checked::SourceDown(reason) => {
                    let (since, attempt) = outage.get_or_insert((std::time::Instant::now(), 0));
                    if since.elapsed() >= outage_limit {
                        return Ok(Outcome::Stopped(format!(
                            "a platform the check needs did not answer for {} s: {reason}",
                            outage_limit.as_secs()
                        )));
                    }
                    *attempt += 1;
                    let wait = std::time::Duration::from_secs(1 << (*attempt).min(5))
                        .min(outage_limit.saturating_sub(since.elapsed()));
                    tracing::warn!(%reason, wait_secs = wait.as_secs(), "zero-materials check waiting for its platform");
                    tokio::select! {
                        () = round.cancel.cancelled() => return Ok(Outcome::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// The licences of a holder, read once per pass: the first record of the holder queries
    /// and the others in flight wait for its answer. The raw answer is stored as soon as it
    /// is read, so every record that uses it can name it.
    async fn holder_answer(
        &self,
        round: &Round,
        holder: &str,
        code: &str,
    ) -> Result<HolderAnswer, HolderError> {
        let cell = round
            .holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(holder.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.read_holder(round, holder, code))
            .await
            .cloned()
    }

    async fn read_holder(
        &self,
        round: &Round,
        holder: &str,
        code: &str,
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
        let today = self
            .clock
            .now()
            .with_timezone(&shuiwu_wire::beijing())
            .date_naive();
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

    /// One record's checklist; `SourceDown` when a platform could not answer now.
    async fn check_materials(
        &self,
        round: &Round,
        id: &str,
        version: i64,
        content: &serde_json::Value,
    ) -> Result<Checked, SyncError> {
        let (run_id, cancel) = (round.run_id, &round.cancel);
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
            match self.holder_answer(round, &holder, &code).await {
                Ok(HolderAnswer::Read {
                    licences,
                    sha256,
                    lineage,
                }) => (licences, Some(sha256), Some(lineage)),
                Ok(HolderAnswer::Held) => return Ok(Checked::Later),
                Err(HolderError::Down(reason)) => return Ok(Checked::SourceDown(reason)),
                Err(HolderError::Fatal(e)) => return Err(e),
            }
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
