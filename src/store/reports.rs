//! What the reports read: the records created in a period with their report facts, the
//! deadline alerts raised for them, their latest zero-materials check and their joint
//! applications.

use std::collections::HashMap;

use super::*;
use crate::report::RecordRow;

impl Store {
    /// What a report of the records created from `from` to `to` is computed from, in a few
    /// numbers: the records' count, their current versions and last change, and the alerts,
    /// materials checks and joint applications of every record (any change to them changes
    /// this text; see `console::report_cache`).
    pub fn report_fingerprint(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<String> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let records: (i64, f64, Option<String>) = tx.query_row(
            "SELECT count(*), total(current_version), max(updated_at) FROM records
             WHERE created_at >= ?1 AND created_at < ?2",
            params![ts(from), ts(to)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let others: (i64, i64, i64, Option<String>) = tx.query_row(
            "SELECT (SELECT count(*) FROM deadline_alerts), (SELECT coalesce(max(id), 0) FROM materials_checks),
                    (SELECT count(*) FROM power_applications), (SELECT max(updated_at) FROM power_applications)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        Ok(format!("{records:?} {others:?}"))
    }

    /// The records created from `from` (included) to `to` (excluded).
    pub fn report_rows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<RecordRow>> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let (from, to) = (ts(from), ts(to));
        let mut alerts: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for row in tx
            .prepare(
                "SELECT a.record_id, a.stage, a.kind FROM deadline_alerts a JOIN records r ON r.id = a.record_id
                 WHERE r.created_at >= ?1 AND r.created_at < ?2",
            )?
            .query_map(params![from, to], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
        {
            let (id, stage, kind) = row?;
            alerts.entry(id).or_default().push((stage, kind));
        }
        let mut materials: HashMap<String, (bool, Vec<String>)> = HashMap::new();
        for row in tx
            .prepare(
                "SELECT m.record_id, m.zero_materials, m.checklist FROM materials_checks m JOIN records r ON r.id = m.record_id
                 WHERE r.created_at >= ?1 AND r.created_at < ?2
                   AND m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = m.record_id)",
            )?
            .query_map(params![from, to], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })?
        {
            let (id, zero, checklist) = row?;
            let checklist: serde_json::Value = serde_json::from_str(&checklist)
                .map_err(|e| StoreError::Corrupt(format!("materials check of {id}: {e}")))?;
            let missing = checklist["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|i| i["satisfied"].as_bool() == Some(false))
                        .filter_map(|i| i["item"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            materials.insert(id, (zero != 0, missing));
        }
        let mut joint: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
        for row in tx
            .prepare(
                "SELECT p.record_id, p.status, p.water_status FROM power_applications p JOIN records r ON r.id = p.record_id
                 WHERE r.created_at >= ?1 AND r.created_at < ?2",
            )?
            .query_map(params![from, to], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
        {
            let (id, status, water) = row?;
            joint.entry(id).or_default().push((status, water));
        }
        let mut out = Vec::new();
        for row in tx
            .prepare(
                // The record's report facts; its content only when they are missing.
                "SELECT r.id, r.created_at, coalesce(r.report_facts,
                     (SELECT v.content FROM record_versions v WHERE v.record_id = r.id AND v.version = r.current_version))
                 FROM records r WHERE r.created_at >= ?1 AND r.created_at < ?2 ORDER BY r.id",
            )?
            .query_map(params![from, to], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
        {
            let (id, created, content) = row?;
            out.push(RecordRow {
                created_at: parse_ts(&created)?,
                content: serde_json::from_str(&content)
                    .map_err(|e| StoreError::Corrupt(format!("record {id}: {e}")))?,
                alerts: alerts.remove(&id).unwrap_or_default(),
                materials: materials.remove(&id),
                joint: joint.remove(&id).unwrap_or_default(),
                id,
            });
        }
        Ok(out)
    }
}
