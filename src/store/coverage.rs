//! The coverage ledger: every listing window read completely, written in the transaction that
//! moves the source's cursor past it (so the ledger and the cursor never disagree), and the
//! check that the windows tile the time from the configured start to the cursor.

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use serde::Serialize;

use super::{CoveredWindow, Result, Store, StoreError, parse_ts, ts};

/// Adds a window read completely.
pub(super) fn record(tx: &Transaction<'_>, w: &CoveredWindow, run_id: Option<i64>, now: &str) -> Result<()> {
    let pages: Vec<serde_json::Value> = w
        .pages
        .iter()
        .map(|(sha, total)| serde_json::json!({"sha256": sha, "total": total}))
        .collect();
    // A window read again from the same start (after a restore put the cursor back) replaces
    // the row; the log keeps both.
    tx.prepare_cached(
        "INSERT INTO coverage_windows (source, start, end, pages, run_id, committed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, start) DO UPDATE SET end = excluded.end, pages = excluded.pages,
             run_id = excluded.run_id, committed_at = excluded.committed_at",
    )?
    .execute(params![
        w.source,
        ts(w.start),
        ts(w.end),
        serde_json::Value::from(pages).to_string(),
        run_id,
        now
    ])?;
    Ok(())
}

/// One window as the ledger holds it. `start` is `None` for what was read before the ledger
/// existed (from the configured start up to the cursor then).
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub pages: Option<usize>,
    pub listed: Option<u64>,
    pub run_id: Option<i64>,
}

/// What is wrong with the ledger: time not read, or read twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Flaw {
    Gap { from: DateTime<Utc>, to: DateTime<Utc> },
    Overlap { from: DateTime<Utc>, to: DateTime<Utc> },
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = |t: &DateTime<Utc>| shuiwu_wire::format_beijing(*t);
        match self {
            Flaw::Gap { from, to } => write!(f, "never read: [{}, {}) Beijing time", b(from), b(to)),
            Flaw::Overlap { from, to } => {
                write!(f, "read by two windows: [{}, {}) Beijing time", b(from), b(to))
            }
        }
    }
}

/// The ledger of one source checked over `[from, to)`.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub source: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The source's cursor: everything before it is claimed read.
    pub watermark: Option<DateTime<Utc>>,
    pub windows: Vec<Window>,
    pub flaws: Vec<Flaw>,
}

impl Coverage {
    pub fn complete(&self) -> bool {
        self.flaws.is_empty()
    }
}

impl Store {
    /// Checks that the windows of `source` cover `[from, to)` exactly once; `to` defaults to
    /// the source's cursor, and must not be past it. `start` is the configured start, where
    /// the ledger's first window (one adopted at migration, with no start of its own) begins.
    pub fn coverage(
        &self,
        source: &str,
        start: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Coverage> {
        let conn = self.read();
        let watermark = conn
            .query_row("SELECT watermark FROM cursors WHERE source = ?1", [source], |r| {
                r.get::<_, String>(0)
            })
            .ok()
            .map(|t| parse_ts(&t))
            .transpose()?;
        let mut windows = Vec::new();
        let mut stmt = conn.prepare(
            "SELECT start, end, pages, run_id FROM coverage_windows WHERE source = ?1 ORDER BY start",
        )?;
        let mut rows = stmt.query([source])?;
        while let Some(r) = rows.next()? {
            let (s, e, pages, run_id): (String, String, Option<String>, Option<i64>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let pages: Option<Vec<serde_json::Value>> =
                pages
                    .map(|p| serde_json::from_str(&p))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("coverage window {s}: {e}")))?;
            windows.push(Window {
                start: (!s.is_empty()).then(|| parse_ts(&s)).transpose()?,
                end: parse_ts(&e)?,
                listed: pages
                    .as_ref()
                    .map(|p| p.iter().filter_map(|x| x["total"].as_u64()).max().unwrap_or(0)),
                pages: pages.map(|p| p.len()),
                run_id,
            });
        }
        let from = from.unwrap_or(start);
        let to = to.or(watermark).unwrap_or(from);
        let mut flaws = Vec::new();
        // Walk the windows in order: `reached` is how far the time from `from` is read.
        let mut reached = from;
        for w in &windows {
            let s = w.start.unwrap_or(start);
            if w.end <= from || s >= to {
                continue;
            }
            if s > reached {
                flaws.push(Flaw::Gap {
                    from: reached,
                    to: s.min(to),
                });
            } else if s < reached && s >= from {
                flaws.push(Flaw::Overlap {
                    from: s,
                    to: reached.min(w.end),
                });
            }
            reached = reached.max(w.end);
        }
        if reached < to {
            flaws.push(Flaw::Gap { from: reached, to });
        }
        Ok(Coverage {
            source: source.to_string(),
            from,
            to,
            watermark,
            windows: windows
                .into_iter()
                .filter(|w| w.end > from && w.start.unwrap_or(start) < to)
                .collect(),
            flaws,
        })
    }
}
