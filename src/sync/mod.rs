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
use futures::StreamExt;
use serde::Serialize;
use shuiwu_approval::{ApprovalClient, ApprovalError, Fetched, ListPage, Summary};
use shuiwu_wire::{Clock, FaultClass, RawDocument, format_beijing, parse_beijing};
use tokio_util::sync::CancellationToken;

mod materials_check;

use crate::config::SyncConfig;
use crate::mapping::Mapping;
use crate::materials::LicenceFact;
use crate::policy::Rules;
use crate::rebuild::{DraftError, Rebuilder};
use crate::record::Assembled;
use crate::store::{
    Applied, AsyncStore, CursorMove, Held, Item, Pending, SourceKey, Store, StoreError, UnitOfWork,
    sha256_hex,
};
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
    pub end: PassEnd,
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
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Drives the approval platform's sync. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Syncer {
    client: Arc<ApprovalClient>,
    store: AsyncStore,
    rebuilder: Rebuilder,
    rules: Arc<Rules>,
    cfg: SyncConfig,
    clock: Arc<dyn Clock>,
    progress: Option<ProgressFn>,
    materials: Option<MaterialsSource>,
}

/// A holder's licences as read in this pass: the facts the checklist uses, the answer's hash,
/// its raw document (until stored once), and the facts' lineage.
type HolderLicences = (Vec<LicenceFact>, String, Option<RawDocument>, String);

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
            rebuilder: Rebuilder::new(mapping, rules.clone()),
            rules,
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
        let mut state = PassState {
            cancel: cancel.clone(),
            run_id,
            list_requests: 0,
            details: 0,
            outcomes: BTreeMap::new(),
            pending: None,
            in_flight: Default::default(),
        };
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
            match self
                .read_window(cursor, window_end, target, &mut state, cancel)
                .await
            {
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
                    break if cancel.is_cancelled() {
                        PassEnd::Interrupted
                    } else {
                        PassEnd::Incomplete {
                            reason,
                            not_before: not_before.map(format_beijing),
                        }
                    };
                }
                Err(Stop::Fatal(e)) => {
                    // What was handed to the store still commits (or fails) on its own.
                    let _ = self.settle(&mut state).await;
                    self.finish_run(run_id, "failed", Some(e.to_string())).await?;
                    return Err(e);
                }
            }
        };
        if let Err(Stop::Fatal(e)) = self.settle(&mut state).await {
            self.finish_run(run_id, "failed", Some(e.to_string())).await?;
            return Err(e);
        }
        let (materials_checked, notices_issued) = if end == PassEnd::Interrupted {
            (0, 0)
        } else {
            match self.materials_pass(run_id, cancel).await {
                Ok(counts) => counts,
                Err(e) => {
                    tracing::error!("zero-materials check stopped: {e}");
                    (0, 0)
                }
            }
        };
        let (outcome, error) = match &end {
            PassEnd::CaughtUp => ("caught_up", None),
            PassEnd::Incomplete { reason, .. } => ("incomplete", Some(reason.clone())),
            PassEnd::Interrupted => ("interrupted", None),
        };
        self.finish_run(run_id, outcome, error).await?;
        Ok(PassReport {
            run_id,
            cursor_before: format_beijing(start),
            cursor_after: format_beijing(cursor),
            windows,
            list_requests: state.list_requests,
            details_fetched: state.details,
            outcomes: state.outcomes,
            materials_checked,
            notices_issued,
            end,
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

    /// Reads `[start, end)` completely; on success the cursor was moved to `target` with the
    /// last page.
    async fn read_window(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        target: Option<DateTime<Utc>>,
        state: &mut PassState,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let size = self.cfg.page_size;
        let mut from = start;
        let mut complete = true;
        loop {
            if cancel.is_cancelled() {
                return Err(Stop::Transient {
                    reason: "shutting down".into(),
                    not_before: None,
                });
            }
            let (page, raw) = self.list(from, end, 1, state).await?;
            let last = page.list.len() < size as usize;
            let latest = page
                .list
                .iter()
                .filter_map(|item| item.get("GXSJ").and_then(|v| v.as_str()).and_then(parse_beijing))
                .max();
            let cursor = (last && complete).then_some(target).flatten();
            complete &= self.process_page(&page, raw, cursor, state).await?;
            if last {
                return if complete {
                    Ok(())
                } else {
                    Err(Stop::Transient {
                        reason: "some projects of the window are not done yet".into(),
                        not_before: None,
                    })
                };
            }
            let Some(latest) = latest else {
                return Err(Stop::Transient {
                    reason: "a full listing page without a readable GXSJ".into(),
                    not_before: None,
                });
            };
            if latest > from {
                from = latest;
            } else {
                // A whole page within one second: page that second by number.
                complete &= self.read_second(from, end, state).await?;
                from += Duration::seconds(1);
                if from >= end {
                    // The second-by-number read was the window's end; move the cursor now.
                    if complete && let Some(t) = target {
                        let unit = UnitOfWork {
                            run_id: Some(state.run_id),
                            cursor: Some(CursorMove {
                                source: SOURCE.into(),
                                watermark: t,
                            }),
                            ..Default::default()
                        };
                        self.commit(unit, state).await?;
                        return Ok(());
                    }
                    return Err(Stop::Transient {
                        reason: "some projects of the window are not done yet".into(),
                        not_before: None,
                    });
                }
            }
        }
    }

    /// Pages `[second, second + 1 s)` by page number. When `total` shrinks between pages,
    /// projects before our position moved away and later ones slid up: step back as many pages
    /// as moved, so none slides past unread (re-reads are deduplicated).
    async fn read_second(
        &self,
        second: DateTime<Utc>,
        end: DateTime<Utc>,
        state: &mut PassState,
    ) -> Result<bool, Stop> {
        let size = u64::from(self.cfg.page_size);
        let until = (second + Duration::seconds(1)).min(end);
        let mut complete = true;
        let mut total: Option<u64> = None;
        let mut page_no: u64 = 1;
        let mut steps_back = 0;
        loop {
            let (page, raw) = self.list(second, until, page_no as u32, state).await?;
            if let Some(before) = total
                && page.total != before
            {
                let moved = before.abs_diff(page.total);
                tracing::info!(second = %format_beijing(second), moved, "listing total changed while paging; stepping back");
                steps_back += 1;
                if steps_back > 100 {
                    return Err(Stop::Transient {
                        reason: "listing kept drifting while paging one second".into(),
                        not_before: None,
                    });
                }
                page_no = page_no.saturating_sub(moved.div_ceil(size)).max(1);
                total = Some(page.total);
                continue;
            }
            total = Some(page.total);
            complete &= self.process_page(&page, raw, None, state).await?;
            if page_no * size >= page.total || page.list.is_empty() {
                return Ok(complete);
            }
            page_no += 1;
        }
    }

    async fn list(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page_no: u32,
        state: &mut PassState,
    ) -> Result<(ListPage, RawDocument), Stop> {
        state.list_requests += 1;
        tokio::select! {
            biased;
            () = state.cancel.cancelled() => Err(Stop::shutting_down()),
            r = self.client.list_projects(start, end, page_no, self.cfg.page_size) => r.map_err(|e| self.stop_for(e)),
        }
    }

    fn stop_for(&self, e: ApprovalError) -> Stop {
        match e.class() {
            FaultClass::Transient => Stop::Transient {
                not_before: e.not_before(self.clock.now()),
                reason: e.to_string(),
            },
            FaultClass::Permanent => Stop::Fatal(SyncError::Refused(e)),
        }
    }

    /// Fetches, maps and commits the new items of one listing page. Returns whether every item
    /// of the page is done.
    async fn process_page(
        &self,
        page: &ListPage,
        raw: RawDocument,
        cursor: Option<DateTime<Utc>>,
        state: &mut PassState,
    ) -> Result<bool, Stop> {
        let page_sha = sha256_hex(&raw.bytes);
        let mut unit = UnitOfWork {
            run_id: Some(state.run_id),
            ..Default::default()
        };
        unit.documents.push((page_sha.clone(), raw));
        let mut listed = Vec::new();
        for item in &page.list {
            match Summary::from_value(item) {
                Ok(s) => listed.push(s),
                Err(reason) => unit.items.push(Item::Held(Held {
                    source: SOURCE.into(),
                    key: item.get("XMDM").and_then(|v| v.as_str()).map(str::to_string),
                    version: None,
                    step: "listing".into(),
                    field: None,
                    category: "listing item unreadable".into(),
                    reason,
                    detail: Some(item.to_string()),
                    document_sha256: Some(page_sha.clone()),
                })),
            }
        }
        // One store call for the page: which listed versions are new.
        let keys: Vec<String> = listed
            .iter()
            .filter(|s| !state.in_flight.contains_key(&s.xmdm))
            .map(|s| s.xmdm.clone())
            .collect();
        let processed: std::collections::HashMap<String, i64> = self
            .store
            .call(move |st| {
                let mut done = std::collections::HashMap::new();
                for k in keys {
                    if let Some(v) = st.processed_version(SOURCE, &k)? {
                        done.insert(k, v);
                    }
                }
                Ok(done)
            })
            .await?;
        let wanted: Vec<Summary> = listed
            .into_iter()
            .filter(|s| {
                let done = state.in_flight.get(&s.xmdm).or(processed.get(&s.xmdm));
                done.is_none_or(|v| *v < s.bbh as i64)
            })
            .collect();
        let fetched: Vec<(Summary, Option<Result<Fetched, ApprovalError>>)> = futures::stream::iter(wanted)
            .map(|s| {
                let cancel = state.cancel.clone();
                async move {
                    // Shutdown drops the request, its retries and their waits; the project is
                    // simply not done in this pass.
                    let r = tokio::select! {
                        biased;
                        () = cancel.cancelled() => None,
                        r = self.client.project(&s.xmdm) => Some(r),
                    };
                    (s, r)
                }
            })
            .buffered(self.cfg.concurrency)
            .collect()
            .await;
        state.details += fetched.len() as u64;
        let mut complete = true;
        let mut stop = None;
        for (summary, result) in fetched {
            let Some(result) = result else {
                complete = false;
                continue;
            };
            match self.handle(&summary, result).await? {
                Handled::Item(item, doc) => {
                    if let Some(doc) = doc {
                        unit.documents.push((sha256_hex(&doc.bytes), doc));
                    }
                    unit.items.push(*item);
                }
                Handled::Pending(reason) => {
                    complete = false;
                    tracing::info!(xmdm = %summary.xmdm, bbh = summary.bbh, %reason, "project not done; the window stays open");
                }
            }
            if stop.is_none() {
                stop = self.take_gate();
            }
        }
        if stop.is_none() && state.cancel.is_cancelled() {
            stop = Some(Stop::shutting_down());
        }
        if complete {
            unit.cursor = cursor.map(|watermark| CursorMove {
                source: SOURCE.into(),
                watermark,
            });
        }
        self.commit(unit, state).await?;
        if let Some(s) = stop {
            return Err(s);
        }
        Ok(complete)
    }

    /// A shut quota or maintenance gate ends the pass after the unit in hand.
    fn take_gate(&self) -> Option<Stop> {
        self.client.blocked_until().map(|until| Stop::Transient {
            reason: format!("the platform accepts no call before {}", format_beijing(until)),
            not_before: Some(until),
        })
    }

    /// Commits a unit in the background while the next page is fetched. Units still commit
    /// one after the other, in order: the previous one is awaited first.
    async fn commit(&self, unit: UnitOfWork, state: &mut PassState) -> Result<(), Stop> {
        self.settle(state).await?;
        state.in_flight = unit
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Record { key, .. } | Item::Skipped { key, .. } => Some((key.key.clone(), key.version)),
                Item::Held(h) => Some((h.key.clone()?, h.version?)),
            })
            .collect();
        let now = self.clock.now();
        let cursor = unit.cursor.as_ref().map(|c| c.watermark);
        let items = unit.items.len();
        let rebuilder = self.rebuilder.clone();
        let handle = self.store.spawn(move |s| s.commit(&unit, now, &rebuilder));
        state.pending = Some(PendingCommit {
            handle,
            items,
            cursor,
        });
        Ok(())
    }

    /// Waits for the unit being committed, if any, and counts its outcomes.
    async fn settle(&self, state: &mut PassState) -> Result<(), Stop> {
        if let Some(p) = state.pending.take() {
            let applied = p.handle.await??;
            for a in applied {
                *state.outcomes.entry(a.as_str()).or_default() += 1;
            }
            self.report(Progress::Committed {
                items: p.items,
                cursor: p.cursor,
            });
        }
        state.in_flight.clear();
        Ok(())
    }

    /// Fetches one project's detail now and turns it into an item, as a pass would: for an
    /// operator replaying a held `detail` failure. `Err(reason)` when it is not done.
    pub async fn refetch(
        &self,
        xmdm: &str,
        listed_version: i64,
    ) -> Result<(Item, Option<RawDocument>), String> {
        let summary = Summary {
            xmdm: xmdm.to_string(),
            bbh: listed_version.max(0) as u64,
            gxsj: String::new(),
            zt: String::new(),
        };
        let result = self.client.project(xmdm).await;
        match self.handle(&summary, result).await {
            Ok(Handled::Item(item, raw)) => Ok((*item, raw)),
            Ok(Handled::Pending(reason)) => Err(reason),
            Err(Stop::Transient { reason, .. }) => Err(reason),
            Err(Stop::Fatal(e)) => Err(e.to_string()),
        }
    }

    /// Turns one detail answer into an item to commit, or says why it is not done.
    async fn handle(
        &self,
        summary: &Summary,
        result: Result<Fetched, ApprovalError>,
    ) -> Result<Handled, Stop> {
        let listed = SourceKey {
            source: SOURCE.into(),
            key: summary.xmdm.clone(),
            version: summary.bbh as i64,
        };
        let fetched = match result {
            Ok(f) => f,
            Err(ApprovalError::NotFound { raw }) => {
                let now = self.clock.now();
                let key = listed.clone();
                let attempts = self.store.call(move |s| s.listing_miss(&key, now)).await?;
                if attempts < self.cfg.not_found_limit {
                    return Ok(Handled::Pending(format!(
                        "detail answers 4040 (not visible yet?), attempt {attempts}"
                    )));
                }
                return Ok(held(
                    summary,
                    Hold {
                        version: listed.version,
                        step: "detail",
                        reason: format!("listed, but the detail call answered 4040 on {attempts} passes"),
                        category: Some("listed but never found (4040)".into()),
                        ..Hold::default()
                    },
                    Some(*raw),
                ));
            }
            Err(ApprovalError::OutsideServiceArea { raw }) => {
                let sha = sha256_hex(&raw.bytes);
                return Ok(Handled::Item(
                    Box::new(Item::Skipped {
                        key: listed,
                        document_sha256: Some(sha),
                        reason: "outside the account's service area (4030)".into(),
                    }),
                    Some(*raw),
                ));
            }
            Err(e @ (ApprovalError::BadSignature | ApprovalError::BadParameter { .. })) => {
                return Err(Stop::Fatal(SyncError::Refused(e)));
            }
            Err(e) if e.is_transient() => {
                // A project whose detail keeps failing would hold its window open for ever, and
                // every later window with it; after `not_found_limit` passes spread over at
                // least `stuck_after_hours` it is held instead (quota and maintenance gates,
                // which end the pass anyway, are not counted).
                let gated = matches!(
                    e,
                    ApprovalError::QuotaExhausted { .. } | ApprovalError::Maintenance { .. }
                );
                if gated {
                    return Ok(Handled::Pending(e.to_string()));
                }
                let now = self.clock.now();
                let key = listed.clone();
                let (attempts, since) = self.store.call(move |s| s.fetch_miss(&key, now)).await?;
                let lasting = now - since >= Duration::hours(self.cfg.stuck_after_hours as i64);
                if attempts < self.cfg.not_found_limit || !lasting {
                    return Ok(Handled::Pending(format!("{e} (attempt {attempts})")));
                }
                let hold = Hold {
                    version: listed.version,
                    step: "detail",
                    reason: format!(
                        "the detail call kept failing ({attempts} passes since {}): {e}",
                        format_beijing(since)
                    ),
                    category: Some(format!("detail kept failing: {}", e.kind())),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, None));
            }
            Err(e) => {
                let category = Some(format!("detail refused: {}", e.kind()));
                let hold = Hold {
                    version: listed.version,
                    step: "detail",
                    reason: e.to_string(),
                    category,
                    ..Hold::default()
                };
                return Ok(held(summary, hold, None));
            }
        };
        let sha = sha256_hex(&fetched.raw.bytes);
        let data = fetched.data();
        if data.get("XMDM").and_then(|v| v.as_str()).map(str::trim) != Some(summary.xmdm.as_str()) {
            let hold = Hold {
                version: listed.version,
                step: "detail",
                field: Some("project.code"),
                reason: "the detail answered for another project code".into(),
                ..Hold::default()
            };
            return Ok(held(summary, hold, Some(fetched.raw)));
        }
        let detail_version = data
            .get("BBH")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()));
        let Some(version) = detail_version else {
            let hold = Hold {
                version: listed.version,
                step: "map",
                field: Some("source.version"),
                reason: "the detail has no usable BBH".into(),
                ..Hold::default()
            };
            return Ok(held(summary, hold, Some(fetched.raw)));
        };
        if version < listed.version {
            return Ok(Handled::Pending(format!(
                "detail still shows BBH {version}, listing showed {}",
                listed.version
            )));
        }
        let today = self
            .clock
            .now()
            .with_timezone(&shuiwu_wire::beijing())
            .date_naive();
        let key = SourceKey {
            source: SOURCE.into(),
            key: summary.xmdm.clone(),
            version,
        };
        // The record itself is rebuilt from this draft and its actions in the commit's
        // transaction (`crate::rebuild`).
        let item = match self.rebuilder.assemble(&fetched.body, &sha, today) {
            Ok(Assembled::Record(draft)) => Item::Record {
                key,
                document_sha256: sha,
                draft,
            },
            Ok(Assembled::Skip(reason)) => Item::Skipped {
                key,
                document_sha256: Some(sha),
                reason,
            },
            Err(DraftError::Map(e)) => {
                let field = e.errors.first().map(|f| f.field.clone());
                let hold = Hold {
                    version,
                    step: "map",
                    field: field.as_deref(),
                    reason: e.to_string(),
                    detail: serde_json::to_string(&e.errors).ok(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
            Err(DraftError::Assemble(e)) => {
                let hold = Hold {
                    version,
                    step: "assemble",
                    field: Some(&e.0),
                    reason: e.to_string(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
            Err(e @ DraftError::NotJson(_)) => {
                let hold = Hold {
                    version,
                    step: "map",
                    reason: e.to_string(),
                    ..Hold::default()
                };
                return Ok(held(summary, hold, Some(fetched.raw)));
            }
        };
        Ok(Handled::Item(Box::new(item), Some(fetched.raw)))
    }
}

/// What to hold a project version for.
#[derive(Default)]
struct Hold<'a> {
    version: i64,
    step: &'a str,
    field: Option<&'a str>,
    reason: String,
    /// Summary label; derived from the field and the failed check when not given.
    category: Option<String>,
    detail: Option<String>,
}

/// A held failure of one listed project, with the raw document it concerns, if any.
fn held(summary: &Summary, hold: Hold<'_>, raw: Option<RawDocument>) -> Handled {
    let category = hold.category.unwrap_or_else(|| {
        let check = detail_check(&hold.reason);
        format!("{}: {check}", hold.field.unwrap_or(hold.step))
    });
    Handled::Item(
        Box::new(Item::Held(Held {
            source: SOURCE.into(),
            key: Some(summary.xmdm.clone()),
            version: Some(hold.version),
            step: hold.step.into(),
            field: hold.field.map(str::to_string),
            category,
            reason: hold.reason,
            detail: hold.detail,
            document_sha256: raw.as_ref().map(|r| sha256_hex(&r.bytes)),
        })),
        raw,
    )
}

/// The check that failed, from a reason such as `water.diameter_dn: diameter: "DN四十" is not a
/// diameter`: the part naming the transform, without the value.
fn detail_check(reason: &str) -> String {
    let mut parts = reason.splitn(3, ": ");
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_field), Some(check), Some(_)) => check.to_string(),
        _ => reason.chars().take(60).collect(),
    }
}

struct PassState {
    /// Shutdown: cancels the requests in flight, their retries and their waits.
    cancel: CancellationToken,
    run_id: i64,
    list_requests: u64,
    details: u64,
    outcomes: BTreeMap<&'static str, u64>,
    /// The unit being committed in the background.
    pending: Option<PendingCommit>,
    /// Project versions of that unit: done, though not yet visible in the store.
    in_flight: std::collections::HashMap<String, i64>,
}

struct PendingCommit {
    handle: Pending<Vec<Applied>>,
    items: usize,
    cursor: Option<DateTime<Utc>>,
}
