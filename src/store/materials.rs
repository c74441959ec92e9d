//! The zero-materials check's state: which records wait for a check, the checks and their
//! lineage, the one notice per record.

use super::commit::insert_document;
use super::*;

impl Store {
    /// Active records whose current version has no materials check yet, or whose latest
    /// check missed items and is older than `recheck_before` (licences change on their own
    /// platform), oldest first.
    pub fn records_needing_materials(
        &self,
        limit: usize,
        recheck_before: DateTime<Utc>,
    ) -> Result<Vec<(String, i64, serde_json::Value)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.id, r.current_version, v.content FROM records r
             JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE {NEEDS_MATERIALS} ORDER BY r.created_at, r.id LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit as i64, ts(recheck_before)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, version, content) = row?;
            out.push((id, version, serde_json::from_str(&content).unwrap_or_default()));
        }
        Ok(out)
    }

    /// How many records [`Store::records_needing_materials`] would give without a limit.
    pub fn count_records_needing_materials(&self, recheck_before: DateTime<Utc>) -> Result<u64> {
        let n: i64 = self.lock().query_row(
            // ?1 is the other query's limit, unused here.
            &format!("SELECT count(*) FROM records r WHERE {NEEDS_MATERIALS}"),
            params![Option::<i64>::None, ts(recheck_before)],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Whether a raw document with these bytes is stored.
    pub fn has_document(&self, sha256: &str) -> Result<bool> {
        Ok(self
            .read()
            .prepare_cached("SELECT 1 FROM raw_documents WHERE sha256 = ?1")?
            .query_row([sha256], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores a materials check with the documents it read and, the first time items are
    /// missing, the record's one notice — in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn save_materials(
        &self,
        record_id: &str,
        record_version: i64,
        checklist: &crate::materials::Checklist,
        category: &str,
        documents: &[(String, RawDocument)],
        lineage: Option<&str>,
        notice: Option<(&str, &str)>,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        for (sha, doc) in documents {
            insert_document(&tx, sha, doc, run_id, &now_text)?;
        }
        let json = serde_json::to_string(checklist).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO materials_checks (record_id, record_version, checked_at, checklist, zero_materials, category, lineage, run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![record_id, record_version, now_text, json, checklist.zero_materials, category, lineage, run_id],
        )?;
        super::reports::write_materials(&tx, record_id, checklist)?;
        let mut issued = false;
        if let Some((items, text)) = notice {
            issued = tx.execute(
                "INSERT OR IGNORE INTO notices (record_id, issued_at, items, text) VALUES (?1, ?2, ?3, ?4)",
                params![record_id, now_text, items, text],
            )? == 1;
        }
        tx.commit()?;
        Ok(issued)
    }

    /// The latest materials check of a record: (record version, checked at, checklist).
    pub fn latest_materials(
        &self,
        record_id: &str,
    ) -> Result<Option<(i64, String, crate::materials::Checklist)>> {
        let row: Option<(i64, String, String)> = self
            .lock()
            .query_row(
                "SELECT record_version, checked_at, checklist FROM materials_checks WHERE record_id = ?1 ORDER BY id DESC LIMIT 1",
                [record_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(v, at, json)| {
            let c = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("materials check of {record_id}: {e}")))?;
            Ok((v, at, c))
        })
        .transpose()
    }

    /// Records that have a one-time notice, oldest notice first.
    pub fn records_with_notices(&self, limit: usize) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT record_id FROM notices ORDER BY issued_at, record_id LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The lineage of the licence facts the latest check of a record read, as stored.
    pub fn latest_materials_lineage(&self, record_id: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT lineage FROM materials_checks WHERE record_id = ?1 ORDER BY id DESC LIMIT 1",
                [record_id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// A record's one-time notice: (issued at, text).
    pub fn notice(&self, record_id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT issued_at, text FROM notices WHERE record_id = ?1",
                [record_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Per category: active records whose latest check reached zero materials, of those checked.
    pub fn zero_materials_counts(&self) -> Result<Vec<(String, i64, i64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT m.category, sum(m.zero_materials), count(*) FROM materials_checks m
             JOIN records r ON r.id = m.record_id AND r.state = 'active'
             WHERE m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = m.record_id)
             GROUP BY m.category ORDER BY count(*) DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// Active records whose current version has no materials check, or whose latest check
/// missed items before `?2`; not a record with no category (one waiting for platform data),
/// which requires nothing yet. (Last, so that the content is read for the few candidates only.)
const NEEDS_MATERIALS: &str = "r.state = 'active' AND (
    NOT EXISTS (SELECT 1 FROM materials_checks m
                WHERE m.record_id = r.id AND m.record_version = r.current_version)
    OR EXISTS (SELECT 1 FROM materials_checks m
               WHERE m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = r.id)
                 AND m.zero_materials = 0 AND m.checked_at < ?2))
    AND NOT EXISTS (SELECT 1 FROM record_versions c INDEXED BY record_versions_no_category
                    WHERE c.record_id = r.id AND c.version = r.current_version
                    AND json_extract(c.content, '$.decisions.category.state') = 'none')";
