//! Reading one listing window: time-keyset paging, one-second pile-ups paged by number, and
//! the page that closes the window (it carries where the cursor may go).
//!
//! Pages are handed to the pipeline (`pipeline.rs`) as soon as they are listed; whether the
//! window was read completely is known only when its pages commit, in order, and the cursor
//! moves then (or not at all).

use chrono::{DateTime, Duration, Utc};
use shuiwu_approval::{ApprovalError, ListPage};
use shuiwu_wire::{FaultClass, RawDocument, format_beijing, parse_beijing};

use super::{PassState, Stop, SyncError, Syncer};

impl Syncer {
    /// Lists `[start, end)` to its end. The job that closes the window carries `target`: the
    /// cursor goes there when every page of the window turns out complete.
    pub(super) async fn read_window(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        target: Option<DateTime<Utc>>,
        state: &mut PassState,
    ) -> Result<(), Stop> {
        let size = self.cfg.page_size;
        let mut from = start;
        loop {
            if state.cancel.is_cancelled() {
                return Err(Stop::shutting_down());
            }
            let (page, raw) = self.list(from, end, 1, state).await?;
            let last = page.list.len() < size as usize;
            let latest = page
                .list
                .iter()
                .filter_map(|item| item.get("GXSJ").and_then(|v| v.as_str()).and_then(parse_beijing))
                .max();
            self.enqueue_page(&page, raw, last.then_some((start, target)), state)
                .await?;
            if last {
                return Ok(());
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
                self.read_second(from, end, state).await?;
                from += Duration::seconds(1);
                if from >= end {
                    // The second-by-number read was the window's end.
                    return self.enqueue_close(start, target, state).await;
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
    ) -> Result<(), Stop> {
        let size = u64::from(self.cfg.page_size);
        let until = (second + Duration::seconds(1)).min(end);
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
            let done = page_no * size >= page.total || page.list.is_empty();
            self.enqueue_page(&page, raw, None, state).await?;
            if done {
                return Ok(());
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

    /// A shut quota or maintenance gate ends the pass after the unit in hand.
    pub(super) fn take_gate(&self) -> Option<Stop> {
        self.client.blocked_until().map(|until| Stop::Transient {
            reason: format!("the platform accepts no call before {}", format_beijing(until)),
            not_before: Some(until),
        })
    }
}
