//! Committing what the sync produced: units of work (raw documents, record versions — written
//! by `versions.rs` — skips, held failures, the cursor), passes, and the counters of listed
//! projects that are not done yet.

use super::versions::{apply_prepared, apply_record};
use super::*;

impl Store {
    /// Keeps every mapping and policy file in force, so that the hashes in lineage and in
    /// decision traces always resolve to the rules that were applied.
    pub fn save_rules(&self, mappings: &MappingSet, policies: &PolicySet, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let files = mappings.all().map(|m| (&m.sha256, &m.file, &m.content)).chain(
            policies
                .versions()
                .iter()
                .map(|p| (&p.sha256, &p.file, &p.content)),
        );
        for (sha, file, content) in files {
            tx.execute(
                "INSERT OR IGNORE INTO mapping_files (sha256, file, content, first_used) VALUES (?1, ?2, ?3, ?4)",
                params![sha, file, content, ts(now)],
            )?;
        }
        tx.commit()
    }

    pub fn begin_run(&self, now: DateTime<Utc>) -> Result<i64> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        tx.execute("INSERT INTO runs (started_at) VALUES (?1)", [ts(now)])?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Marks the passes that never finished as interrupted: only the holder of the writer lock
    /// calls this, so no other pass can be running. Returns how many were closed.
    pub fn close_abandoned_runs(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let n = tx.execute(
            "UPDATE runs SET finished_at = ?1, outcome = 'interrupted',
                 error = 'the gateway stopped before the pass finished (killed or crashed)'
             WHERE finished_at IS NULL",
            [ts(now)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    pub fn finish_run(&self, run: i64, now: DateTime<Utc>, outcome: &str, error: Option<&str>) -> Result<()> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        tx.execute(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, error = ?4 WHERE id = ?1",
            params![run, ts(now), outcome, error],
        )?;
        let counts: Vec<(String, i64)> = tx
            .prepare("SELECT outcome, count(*) FROM source_versions WHERE run_id = ?1 GROUP BY outcome")?
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let detail = serde_json::json!({"outcome": outcome, "error": error, "processed": counts.into_iter().collect::<std::collections::BTreeMap<_, _>>()});
        audit::append(
            &tx,
            &ts(now),
            "gateway",
            "sync_pass",
            &format!("run {run}"),
            &detail.to_string(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Holds a failure that belongs to no record version (a materials check's), with the
    /// document it concerns.
    pub fn hold(
        &self,
        held: &Held,
        documents: &[(String, RawDocument)],
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.land_with(documents, Some(held), run_id, now)
    }

    /// Stores raw documents as read, with their fetch metadata, before anything is made of
    /// them (a licence answer that several records' checks will name).
    pub fn land(
        &self,
        documents: &[(String, RawDocument)],
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.land_with(documents, None, run_id, now)
    }

    /// Stores documents, and a failure that concerns them if there is one, in one transaction.
    fn land_with(
        &self,
        documents: &[(String, RawDocument)],
        held: Option<&Held>,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        for (sha, doc) in documents {
            insert_document(&tx, sha, doc, run_id, &now_text)?;
        }
        if let Some(held) = held {
            insert_failure(&tx, held, run_id, &now_text)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts one more "listed, but the detail says 4040" for an item version; returns the
    /// count so far.
    pub fn listing_miss(&self, key: &SourceKey, now: DateTime<Utc>) -> Result<i64> {
        Ok(self.fetch_miss(key, now)?.0)
    }

    /// Counts one more failed fetch of a listed item version; returns how many so far and
    /// when the first was.
    pub fn fetch_miss(&self, key: &SourceKey, now: DateTime<Utc>) -> Result<(i64, DateTime<Utc>)> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        tx.execute(
            "INSERT INTO listing_misses (source, key, version, attempts, last_seen, first_seen) VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (source, key, version) DO UPDATE SET attempts = attempts + 1, last_seen = excluded.last_seen,
                 first_seen = coalesce(first_seen, excluded.first_seen)",
            params![key.source, key.key, key.version, ts(now)],
        )?;
        let (attempts, first): (i64, String) = tx.query_row(
            "SELECT attempts, first_seen FROM listing_misses WHERE source = ?1 AND key = ?2 AND version = ?3",
            params![key.source, key.key, key.version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.commit()?;
        Ok((attempts, parse_ts(&first)?))
    }

    /// Commits one unit of work in one transaction; records are rebuilt inside it from their
    /// drafts and the actions stored at that moment.
    pub fn commit(
        &self,
        unit: UnitOfWork,
        now: DateTime<Utc>,
        rebuilder: &Rebuilder,
    ) -> Result<Vec<Applied>> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        for (sha, doc) in &unit.documents {
            insert_document(&tx, sha, doc, unit.run_id, &now_text)?;
        }
        let mut applied = Vec::with_capacity(unit.items.len());
        let joint = self.joint();
        for item in unit.items {
            let record = joint.then(|| record_of(&item).map(str::to_string)).flatten();
            let a = apply_item(&tx, item, rebuilder, unit.run_id, now)?;
            if let Some(id) = record
                && changed(a)
            {
                super::outbox::plan_for_record(&tx, &id, Some(rebuilder), now)?;
            }
            applied.push(a);
        }
        if let Some(c) = &unit.cursor {
            tx.execute(
                "INSERT INTO cursors (source, watermark, updated_at, run_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source) DO UPDATE SET watermark = excluded.watermark,
                     updated_at = excluded.updated_at, run_id = excluded.run_id",
                params![c.source, ts(c.watermark), now_text, unit.run_id],
            )?;
        }
        for w in &unit.covered {
            super::coverage::record(&tx, w, unit.run_id, &now_text)?;
        }
        tx.commit()?;
        Ok(applied)
    }
}

pub(super) fn insert_document(
    tx: &rusqlite::Transaction<'_>,
    sha: &str,
    doc: &RawDocument,
    run_id: Option<i64>,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO raw_documents (sha256, bytes, size, first_seen) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![sha, &doc.bytes[..], doc.bytes.len() as i64, now])?;
    let m = &doc.meta;
    tx.prepare_cached(
        "INSERT INTO fetches (sha256, source, method, url, status, request_id, content_type, fetched_at, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        sha,
        m.source,
        m.method,
        m.url,
        m.status as i64,
        m.request_id,
        m.content_type,
        ts(m.fetched_at),
        run_id
    ])?;
    Ok(())
}

fn already_processed(tx: &rusqlite::Transaction<'_>, key: &SourceKey) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM source_versions WHERE source = ?1 AND key = ?2 AND version = ?3")?
        .query_row(params![key.source, key.key, key.version], |_| Ok(()))
        .optional()?
        .is_some())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn mark_processed(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    outcome: Applied,
    detail: Option<&str>,
    document: Option<&str>,
    record: Option<(&str, i64)>,
    run_id: Option<i64>,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO source_versions (source, key, version, outcome, detail, document_sha256, record_id, record_version, run_id, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (source, key, version) DO UPDATE SET outcome = excluded.outcome, detail = excluded.detail,
             document_sha256 = excluded.document_sha256, record_id = excluded.record_id,
             record_version = excluded.record_version, run_id = excluded.run_id, processed_at = excluded.processed_at",
    )?
    .execute(params![
        key.source,
        key.key,
        key.version,
        outcome.as_str(),
        detail,
        document,
        record.map(|r| r.0),
        record.map(|r| r.1),
        run_id,
        now
    ])?;
    Ok(())
}

fn apply_item(
    tx: &rusqlite::Transaction<'_>,
    item: Item,
    rebuilder: &Rebuilder,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<Applied> {
    let now_text = ts(now_at);
    let now = now_text.as_str();
    match item {
        Item::Skipped {
            key,
            document_sha256,
            reason,
        } => {
            if already_processed(tx, &key)? {
                return Ok(Applied::Duplicate);
            }
            mark_processed(
                tx,
                &key,
                Applied::Skipped,
                Some(&reason),
                document_sha256.as_deref(),
                None,
                run_id,
                now,
            )?;
            Ok(Applied::Skipped)
        }
        Item::Held(held) => hold_item(tx, &held, run_id, now),
        Item::Record {
            key,
            document_sha256,
            draft,
        } => commit_record(tx, key, document_sha256, Ok(draft), rebuilder, run_id, now_at),
        Item::Prepared {
            key,
            document_sha256,
            prepared,
        } => commit_record(tx, key, document_sha256, Err(prepared), rebuilder, run_id, now_at),
    }
}

/// Commits a record version given as a draft (`Ok`) or decided ahead (`Err`), once.
fn commit_record(
    tx: &rusqlite::Transaction<'_>,
    key: SourceKey,
    document_sha256: String,
    built: std::result::Result<Box<Draft>, Box<Prepared>>,
    rebuilder: &Rebuilder,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<Applied> {
    if already_processed(tx, &key)? {
        return Ok(Applied::Duplicate);
    }
    let applied = match built {
        Ok(draft) => apply_record(tx, &key, &document_sha256, *draft, rebuilder, run_id, now_at)?,
        Err(prepared) => apply_prepared(tx, &key, &document_sha256, *prepared, rebuilder, run_id, now_at)?,
    };
    match applied {
        Ok(applied) => Ok(applied),
        Err(e) => {
            // No policy for the record's day: held, like any version that cannot be
            // decided, with the document to replay once the policy file is there.
            let held = Held {
                source: key.source.clone(),
                key: Some(key.key.clone()),
                version: Some(key.version),
                step: "decide".into(),
                field: None,
                category: "decide: no policy".into(),
                reason: e.to_string(),
                detail: None,
                document_sha256: Some(document_sha256),
            };
            hold_item(tx, &held, run_id, &ts(now_at))
        }
    }
}

/// Holds a failure; one that names a project version also marks that version processed (held),
/// once: a unit replayed after a crash holds nothing twice.
pub(super) fn hold_item(
    tx: &rusqlite::Transaction<'_>,
    held: &Held,
    run_id: Option<i64>,
    now: &str,
) -> Result<Applied> {
    if let (Some(k), Some(v)) = (&held.key, held.version) {
        let key = SourceKey {
            source: held.source.clone(),
            key: k.clone(),
            version: v,
        };
        if already_processed(tx, &key)? {
            return Ok(Applied::Duplicate);
        }
        mark_processed(
            tx,
            &key,
            Applied::Held,
            Some(&held.category),
            held.document_sha256.as_deref(),
            None,
            run_id,
            now,
        )?;
    }
    insert_failure(tx, held, run_id, now)?;
    Ok(Applied::Held)
}

pub(super) fn insert_failure(
    tx: &rusqlite::Transaction<'_>,
    held: &Held,
    run_id: Option<i64>,
    now: &str,
) -> Result<()> {
    // A newer version of the project, held or not, makes the older held versions moot: what
    // needs action is the newest one.
    if let (Some(key), Some(version)) = (&held.key, held.version) {
        tx.prepare_cached(
            "UPDATE failures SET state = 'superseded'
             WHERE source = ?1 AND key = ?2 AND version < ?3 AND state = 'held'",
        )?
        .execute(params![held.source, key, version])?;
    }
    let fingerprint = sha256_hex(
        format!(
            "{}\u{1f}{:?}\u{1f}{:?}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{:?}",
            held.source, held.key, held.version, held.step, held.field, held.reason, held.document_sha256
        )
        .as_bytes(),
    );
    tx.prepare_cached(
        "INSERT OR IGNORE INTO failures (fingerprint, source, key, version, step, field, reason, detail, document_sha256, run_id, created_at, category)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        fingerprint,
        held.source,
        held.key,
        held.version,
        held.step,
        held.field,
        held.reason,
        held.detail,
        held.document_sha256,
        run_id,
        now,
        held.category
    ])?;
    Ok(())
}
