//! What the reports read: each record's report line (`report::Line`, kept in `report_lines`
//! whenever the record's current version or its latest materials check changes), the deadline
//! alerts raised for the records and their joint applications.

use hashbrown::HashMap;

use super::*;
use crate::report::{Line, RecordRef};

/// Writes the report line of a record's current version, `version`, from its content; the
/// outcome of its latest materials check stays as the line has it (a new record's line starts
/// with none: its first check comes after it).
pub(super) fn write_line(tx: &Transaction, record_id: &str, version: i64, content_json: &str) -> Result<()> {
    let line = Line::of_json(content_json).ok_or_else(|| {
        StoreError::Corrupt(format!("record {record_id}: its content is not JSON of a record"))
    })?;
    tx.prepare_cached(
        "INSERT INTO report_lines (created_at, record_id, version, company, manager, category, free, fee_rule, stages)
         SELECT r.created_at, r.id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM records r WHERE r.id = ?1
         ON CONFLICT (created_at, record_id) DO UPDATE SET version = excluded.version, company = excluded.company,
             manager = excluded.manager, category = excluded.category, free = excluded.free,
             fee_rule = excluded.fee_rule, stages = excluded.stages",
    )?
    .execute(params![
        record_id,
        version,
        line.company,
        line.manager,
        line.category,
        line.free,
        line.fee_rule,
        line.stages_text()
    ])?;
    Ok(())
}

/// Writes the outcome of a record's latest materials check into its report line: zero
/// materials or not, and the items missing.
pub(super) fn write_materials(
    tx: &Transaction,
    record_id: &str,
    checklist: &crate::materials::Checklist,
) -> Result<()> {
    let missing: Vec<&str> = checklist.missing().map(|i| i.item.as_str()).collect();
    let missing = serde_json::to_string(&missing).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached(
        "UPDATE report_lines SET zero_materials = ?2, missing = ?3
         WHERE created_at = (SELECT created_at FROM records WHERE id = ?1) AND record_id = ?1",
    )?
    .execute(params![record_id, checklist.zero_materials, missing])?;
    Ok(())
}

/// Writes every record's report line from its current content and latest materials check:
/// once, when the lines are introduced (migration 13). Returns the lines written.
pub(super) fn fill_lines(tx: &Transaction) -> Result<usize> {
    let mut written = 0;
    {
        let mut current = tx.prepare(
            "SELECT r.id, r.current_version, v.content FROM records r
             JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version",
        )?;
        let mut rows = current.query([])?;
        while let Some(row) = rows.next()? {
            let (id, version, content): (String, i64, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            write_line(tx, &id, version, &content)?;
            written += 1;
        }
    }
    let mut latest = tx.prepare(
        "SELECT m.record_id, m.checklist FROM materials_checks m
         WHERE m.id IN (SELECT max(id) FROM materials_checks GROUP BY record_id)",
    )?;
    let mut rows = latest.query([])?;
    while let Some(row) = rows.next()? {
        let (id, checklist): (String, String) = (row.get(0)?, row.get(1)?);
        let checklist: crate::materials::Checklist = serde_json::from_str(&checklist)
            .map_err(|e| StoreError::Corrupt(format!("materials check of {id}: {e}")))?;
        write_materials(tx, &id, &checklist)?;
    }
    Ok(written)
}

/// The rows of `sql` (a record's id, then two columns) gathered by record.
fn by_record<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
    tx: &Transaction,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<HashMap<String, Vec<(A, B)>>> {
    let mut out: HashMap<String, Vec<(A, B)>> = HashMap::new();
    let mut stmt = tx.prepare(sql)?;
    let mut rows = stmt.query(args)?;
    while let Some(row) = rows.next()? {
        out.entry(row.get(0)?)
            .or_default()
            .push((row.get(1)?, row.get(2)?));
    }
    Ok(out)
}

impl Store {
    /// What a report of the records created from `from` to `to` is computed from, in a few
    /// numbers: the period's lines and the sum of their versions (versions only grow: any new
    /// version changes it), the last materials check, and the alerts and joint applications
    /// of every record (any change to them changes this text; see `console::report_cache`).
    pub fn report_fingerprint(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<String> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let lines: (i64, f64) = tx.query_row(
            "SELECT count(*), total(version) FROM report_lines WHERE created_at >= ?1 AND created_at < ?2",
            params![ts(from), ts(to)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let others: (i64, i64, i64, Option<String>) = tx.query_row(
            "SELECT (SELECT count(*) FROM deadline_alerts), (SELECT coalesce(max(id), 0) FROM materials_checks),
                    (SELECT count(*) FROM power_applications), (SELECT max(updated_at) FROM power_applications)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        Ok(format!("{lines:?} {others:?}"))
    }

    /// Hands each record created from `from` (included) to `to` (excluded) to `each`, in the
    /// order they were created, borrowed from the row read: a report of a quarter keeps
    /// nothing per record.
    pub fn report_records(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        mut each: impl FnMut(&RecordRef<'_>),
    ) -> Result<()> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let (from, to) = (ts(from), ts(to));
        let alerts: HashMap<String, Vec<(String, String)>> = by_record(
            &tx,
            "SELECT a.record_id, a.stage, a.kind FROM deadline_alerts a JOIN records r ON r.id = a.record_id
             WHERE r.created_at >= ?1 AND r.created_at < ?2",
            (&from, &to),
        )?;
        let joint: HashMap<String, Vec<(String, Option<String>)>> = by_record(
            &tx,
            "SELECT p.record_id, p.status, p.water_status FROM power_applications p JOIN records r ON r.id = p.record_id
             WHERE r.created_at >= ?1 AND r.created_at < ?2",
            (&from, &to),
        )?;
        let mut lines = tx.prepare(
            "SELECT record_id, company, manager, category, free, fee_rule, stages, zero_materials, missing
             FROM report_lines WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at, record_id",
        )?;
        let mut rows = lines.query(params![from, to])?;
        while let Some(row) = rows.next()? {
            let id = row.get_ref(0)?.as_str().unwrap_or("?");
            let corrupt = |what: String| StoreError::Corrupt(format!("report line of {id}: {what}"));
            let text = |i: usize| {
                row.get_ref(i)
                    .map(|v| v.as_str().map_err(|e| corrupt(e.to_string())))
            };
            let stages = Line::parse_stages(text(6)??).ok_or_else(|| corrupt("its stages".into()))?;
            let missing: Vec<String> = match row.get_ref(8)?.as_str_or_null() {
                Ok(Some(json)) => {
                    serde_json::from_str(json).map_err(|e| corrupt(format!("its missing items: {e}")))?
                }
                _ => Vec::new(),
            };
            each(&RecordRef {
                company: text(1)??,
                manager: text(2)??,
                category: text(3)??,
                free: row.get(4)?,
                fee_rule: text(5)??,
                stages: &stages,
                alerts: alerts.get(id).map_or(&[], Vec::as_slice),
                materials: row
                    .get::<_, Option<bool>>(7)?
                    .map(|zero| (zero, missing.as_slice())),
                joint: joint.get(id).map_or(&[], Vec::as_slice),
            });
        }
        Ok(())
    }
}
