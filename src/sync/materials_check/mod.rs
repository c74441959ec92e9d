//! The zero-materials check that runs beside each pass's approval sync: licences from the
//! licence library and attachments from the approval platform, evaluated into a checklist
//! and, when items are missing, the record's one notice. Several records are checked at
//! once; a holder's licences are read once per pass and stored as soon as they are read.
//!
//! Along the flow: this file schedules the records and waits out outages, `licences.rs`
//! reads a holder's licences, `record.rs` makes one record's checklist and stores it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod licences;
mod record;

use super::{MaterialsSource, SyncError, Syncer};
use licences::HolderAnswer;

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
            // Set when a read of the waiting records found none to start.
            let mut drained = false;
            while tasks.len() < width && report.checked + (tasks.len() as u64) < bound {
                if queue.is_empty() {
                    // Whether the sync had finished *before* the records are read: then a read
                    // that finds nothing means nothing more will come.
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
                            self.report(super::Progress::MaterialsChecked);
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
}
