//! Incremental sync of the approval platform: listing windows → details → records.
//!
//! # The cursor
//! The cursor is a *watermark* `W`: every project version whose `GXSJ` is before `W` has been
//! processed. It moves only in the same transaction as the last page of a window that was read
//! completely, and never past `safe = platform now − lag − settle`: a window read at a time when
//! versions in it could still become visible is read again on the next pass (the overlap).
//! Nothing else moves it — in particular not the `GXSJ` of a detail that came back newer than
//! its listing.
//!
//! Inside a window, pages are read by *time keyset*, not by page number: after a full page
//! whose last `GXSJ` is `t`, the next request is `[t, end)` page 1. A project updated while we
//! page leaves the window (its `GXSJ` becomes "now"), which shifts page numbers but cannot hide
//! anything from a keyset read. Items at second `t` are read twice and deduplicated by
//! (`XMDM`, `BBH`). When more than a page shares one second, that second is paged by number
//! and restarted whenever `total` changes between pages.
//!
//! Each page is one unit of work: its raw listing, the raw details, the records, failures and
//! (on the last page) the cursor move commit in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use shuiwu_approval::{ApprovalClient, ApprovalError};
use shuiwu_wire::{Clock, RawDocument, format_rfc3339, parse_beijing};
use tokio_util::sync::CancellationToken;

mod coverage;
mod detail;
mod materials_check;

pub use materials_check::MaterialsReport;
use materials_check::SyncProgress;
mod pipeline;
mod window;

use crate::config::SyncConfig;
use crate::mapping::Mapping;
use crate::policy::Rules;
use crate::rebuild::Rebuilder;
use crate::store::{AsyncStore, Item, Store, StoreError};
use shuiwu_licences::LicenceClient;

const SOURCE: &str = "approval";

/// A sync pass could not go on at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A permanent platform error that concerns every request (bad signature, bad parameter):
    /// configuration or a bug, not data.
    #[error("approval platform refused the account's requests: {0}")]
    Refused(ApprovalError),
    #[error("background task failed: {0}")]
    Join(String),
    /// The licence library refused the account (authentication, parameters).
    #[error("licence library refused the account's requests: {0}")]
    Licences(shuiwu_licences::LicenceError),
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PassEnd {
    /// Every window up to now was read; the cursor is as far as it may go.
    CaughtUp,
    /// Stopped early by a transient condition; the next pass resumes from the cursor.
    Incomplete {
        reason: String,
        not_before: Option<String>,
    },
    /// Stopped by shutdown after finishing the unit in hand.
    Interrupted,
}

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub run_id: i64,
    pub cursor_before: String,
    pub cursor_after: String,
    pub windows: u64,
    pub list_requests: u64,
    pub details_fetched: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Records whose zero-materials checklist was evaluated in this pass.
    pub materials_checked: u64,
    /// One-time notices issued in this pass.
    pub notices_issued: u64,
    /// Records still waiting for their zero-materials check when the pass ended.
    pub materials_unchecked: u64,
    /// Why the zero-materials check stopped before every record was checked, if it did.
    pub materials_stopped: Option<String>,
    /// Mapping paths that matched nothing in any project document of the pass (file:line).
    pub mapping_warnings: Vec<String>,
    pub end: PassEnd,
    /// The calls delivered to the power side after the pass (`sync --once` with `[power]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joint: Option<crate::joint::deliver::DeliveryReport>,
}

/// What the sync reports as it goes, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    Started {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Window {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    Committed {
        items: usize,
        cursor: Option<DateTime<Utc>>,
    },
    /// One record's zero-materials check was stored.
    MaterialsChecked,
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Drives the approval platform's sync. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Syncer {
    client: Arc<ApprovalClient>,
    store: AsyncStore,
    rebuilder: Rebuilder,
    cfg: SyncConfig,
    clock: Arc<dyn Clock>,
    progress: Option<ProgressFn>,
    materials: Option<MaterialsSource>,
}

/// Where the zero-materials check reads licences from, and how it maps them.
#[derive(Clone)]
struct MaterialsSource {
    licences: Arc<LicenceClient>,
    mapping: Arc<Mapping>,
}

/// Why a window could not be finished.
enum Stop {
    /// Try again on a later pass.
    Transient {
        reason: String,
        not_before: Option<DateTime<Utc>>,
    },
    Fatal(SyncError),
}

impl Stop {
    fn shutting_down() -> Stop {
        Stop::Transient {
            reason: "shutting down".into(),
            not_before: None,
        }
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Fatal(SyncError::Store(e))
    }
}

/// One listed item after its detail was dealt with.
enum Handled {
    Item(Box<Item>, Option<RawDocument>),
    /// Not done; the window stays open.
    Pending(String),
}

impl Syncer {
    pub fn new(
        client: Arc<ApprovalClient>,
        store: Arc<Store>,
        mapping: Arc<Mapping>,
        rules: Arc<Rules>,
        cfg: SyncConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Syncer {
            client,
            store: AsyncStore::new(store),
            rebuilder: Rebuilder::new(mapping, rules),
            cfg,
            clock,
            progress: None,
            materials: None,
        }
    }

    /// Checks every record's required materials against the licence library and the
    /// approval platform's attachments after each pass.
    pub fn with_licences(mut self, licences: Arc<LicenceClient>, mapping: Arc<Mapping>) -> Self {
        self.materials = Some(MaterialsSource { licences, mapping });
        self
    }

    /// Builds power-origin records too (with the power side's application mapping).
    pub fn with_power_mapping(mut self, mapping: Arc<Mapping>) -> Self {
        self.rebuilder = self.rebuilder.with_power(mapping);
        self
    }

    /// The approval platform's client (its quota and maintenance gates, for readiness).
    pub fn approval_client(&self) -> &Arc<ApprovalClient> {
        &self.client
    }

    /// The mapping and rules this syncer rebuilds records with.
    pub fn rebuilder(&self) -> &Rebuilder {
        &self.rebuilder
    }

    pub fn with_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// One pass: every window from the cursor up to now. The pass runs as a task of its own on
    /// the runtime's workers, whatever task awaits it.
    pub async fn pass(&self, cancel: &CancellationToken) -> Result<PassReport, SyncError> {
        let this = self.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { this.run_pass(&cancel).await })
            .await
            .map_err(|e| SyncError::Join(e.to_string()))?
    }

    async fn run_pass(&self, cancel: &CancellationToken) -> Result<PassReport, SyncError> {
        let started = self.clock.now();
        let run_id = self.store.call(move |s| s.begin_run(started)).await?;
        let start = match self.store.call(|s| s.cursor(SOURCE)).await? {
            Some(c) => c,
            None => parse_beijing(&self.cfg.start).unwrap_or(started),
        };
        // The zero-materials check runs beside the approval sync, on records as they commit;
        // it stops with the pass, however the pass ends.
        let (progress, progress_rx) = tokio::sync::watch::channel(SyncProgress::default());
        let materials_cancel = cancel.child_token();
        let _stop_materials = materials_cancel.clone().drop_guard();
        let materials = self.materials.is_some().then(|| {
            let this = self.clone();
            let cancel = materials_cancel.clone();
            tokio::spawn(async move { this.materials_pass(run_id, &cancel, progress_rx).await })
        });
        let mut state = PassState {
            cancel: cancel.clone(),
            run_id,
            list_requests: 0,
            details: 0,
            outcomes: BTreeMap::new(),
            pipeline: pipeline::Pipeline::new(),
            permits: pipeline::permits(self.cfg.concurrency),
            progress,
            coverage: Arc::default(),
        };
        // Where the next window starts: windows are read one after the other while earlier
        // ones are still committing; the cursor itself moves only as they commit complete.
        let mut cursor = start;
        let mut windows = 0;
        self.report(Progress::Started {
            from: start,
            to: self.client.platform_now(),
        });
        let end = loop {
            if cancel.is_cancelled() {
                break PassEnd::Interrupted;
            }
            let platform_now = self.client.platform_now();
            if cursor >= platform_now {
                break PassEnd::CaughtUp;
            }
            let safe = platform_now
                - Duration::seconds(self.cfg.lag_secs as i64)
                - Duration::seconds(self.cfg.settle_secs as i64);
            let window_end = (cursor + Duration::hours(self.cfg.window_hours as i64)).min(platform_now);
            // How far this window, read completely now, lets the cursor go.
            let target = window_end.min(safe);
            let target = (target > cursor).then_some(target);
            self.report(Progress::Window {
                start: cursor,
                end: window_end,
            });
            match self.read_window(cursor, window_end, target, &mut state).await {
                Ok(()) => {
                    windows += 1;
                    if let Some(t) = target {
                        cursor = t;
                    }
                    if window_end >= platform_now || target != Some(window_end) {
                        break PassEnd::CaughtUp;
                    }
                }
                Err(Stop::Transient { reason, not_before }) => {
                    break PassEnd::Incomplete {
                        reason,
                        not_before: not_before.map(format_rfc3339),
                    };
                }
                Err(Stop::Fatal(e)) => {
                    // What was handed to the store still commits (or fails) on its own.
                    self.abandon(&mut state);
                    let _ = self.settle(&mut state).await;
                    self.finish_run(run_id, "failed", Some(e.to_string())).await?;
                    return Err(e);
                }
            }
        };
        // Everything listed is committed now, in order; a stop met while committing ends the
        // pass like one met while listing.
        let end = match (self.drain(&mut state).await, end) {
            (Err(Stop::Fatal(e)), _) => {
                self.finish_run(run_id, "failed", Some(e.to_string())).await?;
                return Err(e);
            }
            (_, end @ PassEnd::Incomplete { .. }) => end,
            (Err(Stop::Transient { reason, not_before }), _) => PassEnd::Incomplete {
                reason,
                not_before: not_before.map(format_rfc3339),
            },
            (Ok(()), end) => match state.pipeline.cursor_held.clone() {
                Some(reason) if end == PassEnd::CaughtUp => PassEnd::Incomplete {
                    reason,
                    not_before: None,
                },
                _ => end,
            },
        };
        let end = if cancel.is_cancelled() {
            PassEnd::Interrupted
        } else {
            end
        };
        state.progress.send_modify(|p| p.done = true);
        let mapping_warnings = state
            .coverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .warnings(&self.rebuilder.mapping);
        for w in &mapping_warnings {
            tracing::warn!("{w}");
        }
        let materials = match materials {
            None => MaterialsReport::default(),
            Some(task) => match task.await {
                Ok(Ok(report)) => report,
                Ok(Err(e)) => {
                    tracing::error!("zero-materials check stopped: {e}");
                    MaterialsReport {
                        stopped: Some(e.to_string()),
                        ..MaterialsReport::default()
                    }
                }
                Err(e) => MaterialsReport {
                    stopped: Some(format!("the check did not finish: {e}")),
                    ..MaterialsReport::default()
                },
            },
        };
        if let Some(why) = &materials.stopped {
            tracing::warn!(unchecked = materials.unchecked, reason = %why, "zero-materials check stopped early");
        }
        let (outcome, error) = match &end {
            PassEnd::CaughtUp => ("caught_up", None),
            PassEnd::Incomplete { reason, .. } => ("incomplete", Some(reason.clone())),
            PassEnd::Interrupted => ("interrupted", None),
        };
        self.finish_run(run_id, outcome, error).await?;
        Ok(PassReport {
            run_id,
            cursor_before: format_rfc3339(start),
            cursor_after: format_rfc3339(state.pipeline.cursor.unwrap_or(start)),
            windows,
            list_requests: state.list_requests,
            details_fetched: state.details,
            outcomes: state.outcomes,
            materials_checked: materials.checked,
            notices_issued: materials.notices_issued,
            materials_unchecked: materials.unchecked,
            materials_stopped: materials.stopped,
            mapping_warnings,
            end,
            joint: None,
        })
    }

    async fn finish_run(
        &self,
        run: i64,
        outcome: &'static str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.store
            .call(move |s| s.finish_run(run, now, outcome, error.as_deref()))
            .await
    }
}

struct PassState {
    /// Shutdown: cancels the requests in flight, their retries and their waits.
    cancel: CancellationToken,
    run_id: i64,
    list_requests: u64,
    details: u64,
    outcomes: BTreeMap<&'static str, u64>,
    pipeline: pipeline::Pipeline,
    /// Detail requests in flight, across every page.
    permits: Arc<tokio::sync::Semaphore>,
    /// Commits so far, for the zero-materials check that runs beside the sync.
    progress: tokio::sync::watch::Sender<SyncProgress>,
    /// Which mapped paths found anything in this pass (observed on the detail tasks).
    coverage: Arc<std::sync::Mutex<coverage::Coverage>>,
}
