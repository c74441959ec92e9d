//! Timeliness reports kept in memory, each with the fingerprint of what it was computed from,
//! so that the report page and its CSV answer at once while nothing it counts has changed. The
//! fingerprint (`Store::report_fingerprint`) changes with any new record version in the
//! period, any alert, materials check or joint application; a report is served only under
//! the fingerprint read *before* it was computed, so a change that lands meanwhile makes the
//! next request compute it again: never stale, at worst computed twice.

use std::sync::{Arc, Mutex};

use crate::report::{Period, Timeliness};

/// Reports kept at most (periods asked for recently); the oldest is dropped first.
const KEPT: usize = 16;

#[derive(Default)]
pub struct ReportCache {
    entries: Mutex<Vec<(Period, String, Arc<Timeliness>)>>,
}

impl ReportCache {
    /// The report of `period` if it was computed under `fingerprint`.
    pub fn get(&self, period: Period, fingerprint: &str) -> Option<Arc<Timeliness>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|(p, f, _)| *p == period && f == fingerprint)
            .map(|(.., r)| r.clone())
    }

    /// Keeps `report` of `period`, computed under `fingerprint`, in place of an older one.
    pub fn put(&self, period: Period, fingerprint: String, report: Arc<Timeliness>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(p, ..)| *p != period);
        if entries.len() >= KEPT {
            entries.remove(0);
        }
        entries.push((period, fingerprint, report));
    }
}
