//! The power side's change listing, polled: every application of either origin that changed,
//! landed once per (application, version), with the listing's cursor moved in the same
//! transaction as each page.
//!
//! The listing is "strictly after `updatedAfter`", to the millisecond, and one batch of changes
//! can share a millisecond and straddle a page; a poll therefore starts again from the last
//! `updatedAt` landed minus an overlap, and repeats are recognised by (`applicationId`,
//! `version`) and counted, not landed twice. Polling is the reference: webhooks, where they
//! come, only make the water side learn sooner.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shuiwu_power::{PowerClient, PowerError};
use shuiwu_wire::Clock;
use tokio_util::sync::CancellationToken;

use crate::rebuild::Rebuilder;
use crate::store::{AsyncStore, StoreError};

/// Items per listing page (the interface allows 100).
const PAGE: u32 = 100;

/// Pages read in one poll at most, so that a backlog is read over several polls and never
/// holds up the deliveries behind it for long.
const MAX_PAGES: u32 = 200;

/// What one poll read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    pub pages: u64,
    pub new_versions: u64,
    pub repeats: u64,
    pub links_planned: u64,
    pub held_duplicates: u64,
    pub awaiting_import: u64,
    pub imported: u64,
    pub skipped: u64,
    pub held: u64,
    /// The listing was read to its end (not cut short by the page limit or a cancel).
    pub complete: bool,
}

impl PollReport {
    /// Adds another poll's counts to these; complete when the other one was.
    pub fn merge(&mut self, other: &PollReport) {
        self.pages += other.pages;
        self.new_versions += other.new_versions;
        self.repeats += other.repeats;
        self.links_planned += other.links_planned;
        self.held_duplicates += other.held_duplicates;
        self.awaiting_import += other.awaiting_import;
        self.imported += other.imported;
        self.skipped += other.skipped;
        self.held += other.held;
        self.complete = other.complete;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("reading the power side's listing: {0}")]
    Power(#[from] PowerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Poller {
    client: Arc<PowerClient>,
    store: AsyncStore,
    /// Builds the water records of power-origin applications no project record takes.
    rebuilder: Rebuilder,
    clock: Arc<dyn Clock>,
    /// Where a first poll starts.
    since: DateTime<Utc>,
    overlap: chrono::Duration,
}

impl Poller {
    pub fn new(
        client: Arc<PowerClient>,
        store: AsyncStore,
        rebuilder: Rebuilder,
        clock: Arc<dyn Clock>,
        since: DateTime<Utc>,
        overlap: chrono::Duration,
    ) -> Self {
        Poller {
            client,
            store,
            rebuilder,
            clock,
            since,
            overlap,
        }
    }

    /// Reads the listing from the cursor (less the overlap) to its end.
    pub async fn poll(&self, cancel: &CancellationToken) -> Result<PollReport, PollError> {
        let cursor = self.store.call(|s| s.cursor("power")).await?;
        let after = cursor.map_or(self.since, |c| c - self.overlap);
        let mut report = PollReport::default();
        let mut page_cursor: Option<String> = None;
        let mut newest = cursor;
        // Where the listing is read from, for the coverage ledger: the cursor, then each
        // page's newest change.
        let mut read_from = cursor.unwrap_or(self.since);
        while report.pages < u64::from(MAX_PAGES) {
            if cancel.is_cancelled() {
                return Ok(report);
            }
            let page = tokio::select! {
                page = self.client.list(after, PAGE, page_cursor.as_deref()) => page?,
                () = cancel.cancelled() => return Ok(report),
            };
            report.pages += 1;
            let next_cursor = page.value.next_cursor.clone();
            let (items, unreadable) = page.value.split();
            // An unreadable item is held, not waited for: the cursor passes it as it passes the
            // others, so one bad item never stalls the listing.
            newest = items
                .iter()
                .map(|a| a.updated_at)
                .chain(unreadable.iter().filter_map(|u| u.updated_at()))
                .max()
                .max(newest);
            let now = self.clock.now();
            let raw = page.raw;
            let watermark = newest;
            let rebuilder = self.rebuilder.clone();
            let landed = self
                .store
                .call(move |s| {
                    let cursor = crate::store::ListingCursor {
                        watermark,
                        read_from: Some(read_from),
                    };
                    s.land_power_page(&items, &unreadable, &raw, cursor, &rebuilder, now)
                })
                .await?;
            if let Some(w) = watermark {
                read_from = read_from.max(w);
            }
            report.new_versions += landed.new_versions;
            report.repeats += landed.repeats;
            report.links_planned += landed.links_planned;
            report.held_duplicates += landed.held_duplicates;
            report.awaiting_import += landed.awaiting_import;
            report.imported += landed.imported;
            report.skipped += landed.skipped;
            report.held += landed.held;
            match next_cursor {
                Some(c) => page_cursor = Some(c),
                None => {
                    report.complete = true;
                    break;
                }
            }
        }
        Ok(report)
    }
}
