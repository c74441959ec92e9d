//! Several listing pages in flight, committed in order.
//!
//! Each listed page becomes a job: its new project versions are fetched by tasks of their own
//! (at most `concurrency` requests at once, shared by every page), while the next pages are
//! listed. Jobs commit strictly in listing order, one unit of work per page, so the cursor rule
//! is the one of a sequential read: the job that closes a window moves the cursor only when
//! every page of that window was complete, and once a window is incomplete no later window
//! moves it in this pass. A request that hangs holds back the commits behind it, never the
//! other requests: up to `pages_in_flight` pages keep fetching meanwhile.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use shuiwu_approval::{ListPage, Summary};
use shuiwu_wire::RawDocument;
use tokio::task::JoinHandle;

use super::{Handled, PassState, Progress, SOURCE, Stop, Syncer};
use crate::config::SyncConfig;
use crate::store::{Applied, CoveredWindow, CursorMove, Held, Item, Pending, UnitOfWork, sha256_hex};

/// A detail request and what its answer became (an item to commit, or why not), on a task of
/// its own; `None` when shutdown dropped it.
type DetailTask = JoinHandle<Option<Result<Handled, Stop>>>;

/// One listed page on its way to the store.
pub(super) struct PageJob {
    /// The page's raw listing and its unreadable entries, held.
    unit: UnitOfWork,
    details: Vec<(Summary, DetailTask)>,
    /// Project versions this page fetches, released once its unit is committed.
    claims: Vec<(String, i64)>,
    /// `Some` on the job that closes a window: where the window began, and where the cursor
    /// goes if the window is complete.
    closes: Option<Closes>,
    /// The listing page's hash and the total the platform gave with it (none for a job that
    /// only closes a window).
    page: Option<(String, u64)>,
}

/// The window a job closes: `[start, target)` is read completely if every page was.
type Closes = (DateTime<Utc>, Option<DateTime<Utc>>);

impl PageJob {
    fn ready(&self) -> bool {
        self.details.iter().all(|(_, t)| t.is_finished())
    }
}

/// The unit being committed in the background while the next pages are fetched.
pub(super) struct PendingCommit {
    handle: Pending<Vec<Applied>>,
    items: usize,
    cursor: Option<DateTime<Utc>>,
    claims: Vec<(String, i64)>,
}

/// Pages whose answers are all in, waiting for the commit before them to finish: they go to
/// the store together, as one transaction. While the store is the slower side, each commit
/// takes every page that became ready meanwhile, so the index pages that every project
/// touches are written to the WAL once per group rather than once per page.
#[derive(Default)]
struct Staged {
    unit: UnitOfWork,
    pages: usize,
    claims: Vec<(String, i64)>,
}

/// The committing side's state within one pass.
#[derive(Default)]
pub(super) struct Pipeline {
    jobs: std::collections::VecDeque<PageJob>,
    staged: Staged,
    pending: Option<PendingCommit>,
    /// Project versions listed and being fetched or committed: done as far as a later page's
    /// listing is concerned, though not yet visible in the store.
    claimed: HashMap<String, i64>,
    /// Every page of the window being committed was complete so far.
    window_complete: bool,
    /// The pages of the window being committed so far: hash and listing total, for the
    /// coverage ledger.
    window_pages: Vec<(String, u64)>,
    /// Why the cursor may not move any more in this pass (a window was not complete).
    pub(super) cursor_held: Option<String>,
    /// The cursor as committed by this pass.
    pub(super) cursor: Option<DateTime<Utc>>,
}

/// Listing pages in the pipeline at most, as a multiple of `pages_in_flight`, however few new
/// versions they list (a page of versions already processed holds only its raw listing).
const MAX_PAGES_FACTOR: usize = 4;

impl Pipeline {
    /// Whether the pipeline holds all it may: `pages_in_flight` full pages' worth of listed
    /// versions being fetched, mapped or waiting to commit (staged ones included), or four
    /// times as many pages. Counted in versions rather than pages: a backfill spread thin
    /// lists windows of a few dozen projects, and four of them did not keep the requests going
    /// while one request hung for the whole read timeout (the rate benchmark idled 5 %).
    fn full(&self, cfg: &SyncConfig) -> bool {
        let versions: usize =
            self.jobs.iter().map(|j| j.details.len()).sum::<usize>() + self.staged.unit.items.len();
        versions >= cfg.pages_in_flight * cfg.page_size as usize
            || self.jobs.len() + self.staged.pages >= MAX_PAGES_FACTOR * cfg.pages_in_flight
    }

    pub(super) fn new() -> Self {
        Pipeline {
            window_complete: true,
            ..Pipeline::default()
        }
    }
}

impl Syncer {
    /// Hands a listed page to the pipeline: its new versions start fetching at once. Commits
    /// the jobs at the front that are ready, and waits for the front one while the pipeline is
    /// full.
    pub(super) async fn enqueue_page(
        &self,
        page: &ListPage,
        raw: RawDocument,
        closes: Option<Closes>,
        state: &mut PassState,
    ) -> Result<(), Stop> {
        let page_sha = sha256_hex(&raw.bytes);
        let page_total = (page_sha.clone(), page.total);
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
        // One store call for the page: which listed versions are new. The claims are read after
        // it (no commit settles in between), so a version committed meanwhile is either visible
        // to the query or still claimed.
        let keys: Vec<String> = listed.iter().map(|s| s.xmdm.clone()).collect();
        let processed: HashMap<String, i64> = self
            .store
            .call(move |st| {
                let mut done = HashMap::new();
                for k in keys {
                    if let Some(v) = st.processed_version(SOURCE, &k)? {
                        done.insert(k, v);
                    }
                }
                Ok(done)
            })
            .await?;
        let mut job = PageJob {
            unit,
            details: Vec::new(),
            claims: Vec::new(),
            closes,
            page: Some(page_total),
        };
        for s in listed {
            let bbh = s.bbh as i64;
            let done = state
                .pipeline
                .claimed
                .get(&s.xmdm)
                .into_iter()
                .chain(processed.get(&s.xmdm))
                .max();
            if done.is_some_and(|v| *v >= bbh) {
                continue;
            }
            state.pipeline.claimed.insert(s.xmdm.clone(), bbh);
            job.claims.push((s.xmdm.clone(), bbh));
            let task = self.spawn_detail(&s, state);
            job.details.push((s, task));
        }
        state.details += job.details.len() as u64;
        state.pipeline.jobs.push_back(job);
        self.advance(state).await
    }

    /// Closes a window with no page of its own (its end was read second by second).
    pub(super) async fn enqueue_close(
        &self,
        start: DateTime<Utc>,
        target: Option<DateTime<Utc>>,
        state: &mut PassState,
    ) -> Result<(), Stop> {
        state.pipeline.jobs.push_back(PageJob {
            unit: UnitOfWork {
                run_id: Some(state.run_id),
                ..Default::default()
            },
            details: Vec::new(),
            claims: Vec::new(),
            closes: Some((start, target)),
            page: None,
        });
        self.advance(state).await
    }

    /// Fetches one project's detail in a task of its own, within the shared concurrency limit,
    /// and turns the answer into an item there: the projects of a page are mapped in parallel
    /// rather than one after the other on the pass's task. Shutdown drops the request, its
    /// retries and their waits.
    fn spawn_detail(&self, summary: &Summary, state: &PassState) -> DetailTask {
        let this = self.clone();
        let permits = state.permits.clone();
        let cancel = state.cancel.clone();
        let summary = summary.clone();
        let coverage = state.coverage.clone();
        tokio::spawn(async move {
            let fetched = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                r = async {
                    // The semaphore is never closed, so a permit always comes.
                    let _permit = permits.acquire().await.ok();
                    this.client.project(&summary.xmdm).await
                } => Some(r),
            }?;
            // One instant for mapping and deciding: the day a prepared version was mapped on
            // is the day it is mapped on again if it must be rebuilt.
            let now = this.clock.now();
            Some(
                this.handle(&summary, fetched, now)
                    .await
                    .map(|handled| match handled {
                        Handled::Item(item, doc) => Handled::Item(this.prepare(item, now, &coverage), doc),
                        other => other,
                    }),
            )
        })
    }

    /// Counts a mapped document's paths for the pass's coverage and decides it as a new
    /// record here, on the detail's task (see [`crate::rebuild::Prepared`]).
    fn prepare(
        &self,
        item: Box<Item>,
        now: DateTime<Utc>,
        coverage: &std::sync::Mutex<super::coverage::Coverage>,
    ) -> Box<Item> {
        let Item::Record {
            key,
            document_sha256,
            draft,
        } = *item
        else {
            return item;
        };
        coverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&draft.lineage);
        Box::new(
            match self.rebuilder.prepare(*draft, crate::worktime::date_of(now), now) {
                Ok(prepared) => Item::Prepared {
                    key,
                    document_sha256,
                    prepared: Box::new(prepared),
                },
                Err(draft) => Item::Record {
                    key,
                    document_sha256,
                    draft,
                },
            },
        )
    }

    /// Commits the ready jobs at the front, then the front one while the pipeline is full.
    async fn advance(&self, state: &mut PassState) -> Result<(), Stop> {
        while let Some(front) = state.pipeline.jobs.front() {
            let full = state.pipeline.full(&self.cfg);
            if !(full || front.ready()) {
                break;
            }
            self.commit_front(state).await?;
        }
        Ok(())
    }

    /// Commits every job still in the pipeline, in order, and waits for the last commit.
    /// After a stop the jobs' requests end quickly (a shut gate answers at once, shutdown
    /// cancels them); what completed is committed, the rest is read again next pass.
    pub(super) async fn drain(&self, state: &mut PassState) -> Result<(), Stop> {
        let mut first_stop = None;
        while !state.pipeline.jobs.is_empty() {
            match self.commit_front(state).await {
                Ok(()) => {}
                Err(Stop::Fatal(e)) => {
                    self.abandon(state);
                    return Err(Stop::Fatal(e));
                }
                Err(stop) => {
                    first_stop.get_or_insert(stop);
                }
            }
        }
        self.settle(state).await?;
        first_stop.map_or(Ok(()), Err)
    }

    /// Stops every request of the jobs not committed (a fatal error ends the pass).
    pub(super) fn abandon(&self, state: &mut PassState) {
        for job in state.pipeline.jobs.drain(..) {
            for (_, task) in job.details {
                task.abort();
            }
        }
    }

    /// Turns the front job's answers into items and commits its unit (in the background:
    /// the previous unit is awaited first, so units commit one after the other, in order).
    async fn commit_front(&self, state: &mut PassState) -> Result<(), Stop> {
        let Some(job) = state.pipeline.jobs.pop_front() else {
            return Ok(());
        };
        let PageJob {
            mut unit,
            details,
            claims,
            closes,
            page,
        } = job;
        let mut complete = true;
        let mut stop = None;
        for (summary, task) in details {
            let handled = match task.await {
                Ok(Some(h)) => h,
                // Cancelled by shutdown (or aborted): not done in this pass.
                Ok(None) | Err(_) => {
                    complete = false;
                    continue;
                }
            };
            match handled {
                Ok(Handled::Item(item, doc)) => {
                    if let Some(doc) = doc {
                        unit.documents.push((sha256_hex(&doc.bytes), doc));
                    }
                    unit.items.push(*item);
                }
                Ok(Handled::Pending(reason)) => {
                    complete = false;
                    tracing::info!(xmdm = %summary.xmdm, bbh = summary.bbh, %reason, "project not done; the window stays open");
                }
                Err(Stop::Fatal(e)) => {
                    self.abandon(state);
                    return Err(Stop::Fatal(e));
                }
                Err(other) => {
                    complete = false;
                    stop.get_or_insert(other);
                }
            }
            if stop.is_none() {
                stop = self.take_gate();
            }
        }
        let p = &mut state.pipeline;
        p.window_complete &= complete;
        p.window_pages.extend(page);
        if let Some((start, target)) = closes {
            if !p.window_complete && p.cursor_held.is_none() {
                p.cursor_held = Some("some projects of a window are not done yet".into());
            }
            let pages = std::mem::take(&mut p.window_pages);
            if p.cursor_held.is_none()
                && let Some(watermark) = target
            {
                unit.cursor = Some(CursorMove {
                    source: SOURCE.into(),
                    watermark,
                });
                // The coverage ledger: this window was read completely, in the cursor's
                // transaction.
                unit.covered.push(CoveredWindow {
                    source: SOURCE.into(),
                    start,
                    end: watermark,
                    pages,
                });
            }
            p.window_complete = true;
        }
        self.commit(unit, claims, state).await?;
        if stop.is_none() && state.cancel.is_cancelled() {
            stop = Some(Stop::shutting_down());
        }
        stop.map_or(Ok(()), Err)
    }

    /// Stages a page's unit; hands the staged units to the store at once unless the previous
    /// commit is still running (then they join the next one). A stage holds at most half the
    /// pages in flight, and two pages whatever the setting (with one, nothing would group).
    async fn commit(
        &self,
        unit: UnitOfWork,
        claims: Vec<(String, i64)>,
        state: &mut PassState,
    ) -> Result<(), Stop> {
        let staged = &mut state.pipeline.staged;
        staged.unit.append(unit);
        staged.pages += 1;
        staged.claims.extend(claims);
        let busy = state
            .pipeline
            .pending
            .as_ref()
            .is_some_and(|p| !p.handle.is_finished());
        if busy && state.pipeline.staged.pages < (self.cfg.pages_in_flight / 2).max(2) {
            return Ok(());
        }
        self.flush(state).await
    }

    /// Waits for the commit running, then hands the staged pages to the store as one unit.
    async fn flush(&self, state: &mut PassState) -> Result<(), Stop> {
        self.settle_pending(state).await?;
        let Staged { unit, pages, claims } = std::mem::take(&mut state.pipeline.staged);
        if pages == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let cursor = unit.cursor.as_ref().map(|c| c.watermark);
        let items = unit.items.len();
        let rebuilder = self.rebuilder.clone();
        let handle = self.store.spawn(move |s| s.commit(unit, now, &rebuilder));
        state.pipeline.pending = Some(PendingCommit {
            handle,
            items,
            cursor,
            claims,
        });
        Ok(())
    }

    /// Commits what is staged and waits until the store has it all.
    pub(super) async fn settle(&self, state: &mut PassState) -> Result<(), Stop> {
        self.flush(state).await?;
        self.settle_pending(state).await
    }

    /// Waits for the unit being committed, if any, counts its outcomes and releases its claims.
    async fn settle_pending(&self, state: &mut PassState) -> Result<(), Stop> {
        let Some(p) = state.pipeline.pending.take() else {
            return Ok(());
        };
        let applied = p.handle.await??;
        for a in applied {
            *state.outcomes.entry(a.as_str()).or_default() += 1;
        }
        for (key, version) in p.claims {
            if state.pipeline.claimed.get(&key) == Some(&version) {
                state.pipeline.claimed.remove(&key);
            }
        }
        if p.cursor.is_some() {
            state.pipeline.cursor = p.cursor;
        }
        state.progress.send_modify(|p| p.commits += 1);
        self.report(Progress::Committed {
            items: p.items,
            cursor: p.cursor,
        });
        Ok(())
    }
}

/// The shared limit on detail requests in flight.
pub(super) fn permits(concurrency: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(concurrency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(versions: usize) -> PageJob {
        let details = (0..versions)
            .map(|i| {
                let summary = Summary {
                    xmdm: format!("P-{i}"),
                    bbh: 1,
                    gxsj: String::new(),
                    zt: String::new(),
                };
                let task: DetailTask = tokio::spawn(async { None });
                (summary, task)
            })
            .collect();
        PageJob {
            unit: UnitOfWork::default(),
            details,
            claims: Vec::new(),
            closes: None,
            page: None,
        }
    }

    /// The bound counts listed versions, not pages: small pages (a backfill spread thin lists
    /// windows of a few dozen projects) keep coming until full pages' worth are held, and pages
    /// with nothing new are capped by count.
    #[tokio::test]
    async fn the_pipeline_is_full_by_versions_held_or_by_a_page_cap() {
        let cfg = SyncConfig {
            pages_in_flight: 3,
            page_size: 100,
            ..SyncConfig::default()
        };
        let mut p = Pipeline::new();
        for _ in 0..9 {
            p.jobs.push_back(job(30));
        }
        assert!(!p.full(&cfg), "270 versions in 9 small pages leave room");
        p.jobs.push_back(job(30));
        assert!(p.full(&cfg), "300 versions fill it");

        // Staged pages still hold their versions.
        let mut p = Pipeline::new();
        p.jobs.push_back(job(100));
        p.staged.pages = 2;
        p.staged.unit.items = (0..200)
            .map(|i| Item::Skipped {
                key: crate::store::SourceKey {
                    source: SOURCE.into(),
                    key: format!("S-{i}"),
                    version: 1,
                },
                document_sha256: None,
                reason: "test".into(),
            })
            .collect();
        assert!(p.full(&cfg));

        let mut p = Pipeline::new();
        for _ in 0..11 {
            p.jobs.push_back(job(0));
        }
        assert!(!p.full(&cfg));
        p.jobs.push_back(job(0));
        assert!(p.full(&cfg), "at most four times pages_in_flight pages");
    }
}
