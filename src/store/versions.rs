//! Record versions, inside the commit's transaction: a record rebuilt from its draft and the
//! actions stored now, or a new record's version decided ahead and still valid; written against
//! the version stored (created, updated, withdrawn, unchanged or stale) with its source version
//! marked processed.

use super::actions::actions_of;
use super::commit::mark_processed;
use super::*;
use crate::record::RulesUsed;
use chrono::NaiveDate;

/// Commits a source version of a record: the record is rebuilt from the draft and the actions
/// stored now, and gets a new version when its content changed; the source version is marked
/// processed (replacing an earlier outcome, as a replay of a held version does). The inner
/// error is a record that cannot be decided (no policy for its day); nothing was written then.
pub(super) fn apply_record(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    document_sha256: &str,
    draft: Draft,
    rebuilder: &Rebuilder,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<std::result::Result<Applied, crate::policy::PolicyError>> {
    let stored = current_of(tx, &draft.id)?;
    let actions = if stored.is_some() {
        actions_of(tx, &draft.id)?
    } else {
        Vec::new()
    };
    let existing = stored.as_ref().map(|c| &c.existing);
    let candidate = match rebuilder.candidate(draft, existing, &actions, now_at) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let sealed = Sealed {
        id: &candidate.id,
        state: candidate.record.project.status,
        content_json: &candidate.content_json,
        content_sha256: &candidate.content_sha256,
        lineage_json: &candidate.lineage_json,
        rules: &candidate.rules,
    };
    write_version(tx, key, document_sha256, &sealed, stored, run_id, now_at).map(Ok)
}

/// Commits a new record's version decided ahead ([`Prepared`]): written as it is while the
/// record is still not stored under the same policy; otherwise the stored document is mapped
/// again, as on the day it was first mapped, and the record rebuilt here like any other.
pub(super) fn apply_prepared(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    document_sha256: &str,
    prepared: Prepared,
    rebuilder: &Rebuilder,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<std::result::Result<Applied, crate::policy::PolicyError>> {
    if rebuilder.still_current(&prepared, now_at) && current_of(tx, &prepared.id)?.is_none() {
        let sealed = Sealed {
            id: &prepared.id,
            state: prepared.state,
            content_json: &prepared.content_json,
            content_sha256: &prepared.content_sha256,
            lineage_json: &prepared.lineage_json,
            rules: &prepared.rules,
        };
        return write_version(tx, key, document_sha256, &sealed, None, run_id, now_at).map(Ok);
    }
    // The unit's documents are inserted before its items: the document is here.
    let draft =
        stored_draft(tx, rebuilder, key, document_sha256, prepared.mapped_on).map_err(|e| match e {
            StoreError::Rebuild(why) => StoreError::Rebuild(format!("{}: {why}", prepared.id)),
            other => other,
        })?;
    apply_record(tx, key, document_sha256, draft, rebuilder, run_id, now_at)
}

/// Maps a stored raw document into a draft again, on `day`, inside the caller's transaction.
/// `key` names what the document is of (a power-side document can hold many applications).
/// It gave a record when it was first mapped (mapping is deterministic), so a skip or a
/// mapping error now is a rebuild error, not a held failure.
pub(super) fn stored_draft(
    conn: &Connection,
    rebuilder: &Rebuilder,
    key: &SourceKey,
    document_sha256: &str,
    day: NaiveDate,
) -> Result<Draft> {
    let bytes: Vec<u8> = conn
        .prepare_cached("SELECT bytes FROM raw_documents WHERE sha256 = ?1")?
        .query_row([document_sha256], |r| r.get(0))?;
    match rebuilder.assemble_stored(&key.source, &key.key, key.version, &bytes, document_sha256, day) {
        Ok(Assembled::Record(d)) => Ok(*d),
        Ok(Assembled::Skip(why)) => Err(StoreError::Rebuild(format!("its document is now skipped: {why}"))),
        Err(e) => Err(StoreError::Rebuild(format!("its document no longer maps: {e}"))),
    }
}

/// A record version ready to write, however it was built.
struct Sealed<'a> {
    id: &'a str,
    state: RecordState,
    content_json: &'a str,
    content_sha256: &'a str,
    lineage_json: &'a str,
    rules: &'a RulesUsed,
}

/// Writes a record's new version (or notes an unchanged or stale one) against what is stored,
/// and marks the source version processed.
fn write_version(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    document_sha256: &str,
    candidate: &Sealed<'_>,
    stored: Option<Current>,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<Applied> {
    let now_text = ts(now_at);
    let now = now_text.as_str();
    let current = stored.map(|c| (c.version, c.source_version, c.content_sha256, c.state));
    let state = candidate.state;
    let outcome = match &current {
        Some((_, source_version, _, _)) if *source_version > key.version => Applied::Stale,
        Some((_, _, sha, _)) if sha == candidate.content_sha256 => Applied::Unchanged,
        Some((_, _, _, old_state)) if state == RecordState::Withdrawn && old_state != "withdrawn" => {
            Applied::Withdrawn
        }
        Some(_) => Applied::Updated,
        None if state == RecordState::Withdrawn => Applied::Withdrawn,
        None => Applied::Created,
    };
    let record_version = match (outcome, &current) {
        (Applied::Stale | Applied::Unchanged, Some((v, ..))) => {
            if outcome == Applied::Unchanged {
                tx.prepare_cached("UPDATE records SET source_version = ?2 WHERE id = ?1")?
                    .execute(params![candidate.id, key.version])?;
            }
            *v
        }
        _ => {
            let version = current.as_ref().map_or(1, |c| c.0 + 1);
            let change = match (outcome, &current) {
                (_, None) => "created",
                (Applied::Withdrawn, _) => "withdrawn",
                _ => "updated",
            };
            tx.prepare_cached(
                        "INSERT INTO records (id, source, source_key, state, current_version, source_version, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                         ON CONFLICT (id) DO UPDATE SET state = excluded.state, current_version = excluded.current_version,
                             source_version = excluded.source_version, updated_at = excluded.updated_at",
                    )?
                    .execute(params![
                        candidate.id,
                        key.source,
                        key.key,
                        state.as_str(),
                        version,
                        key.version,
                        now,
                    ])?;
            super::reports::write_line(tx, candidate.id, version, candidate.content_json)?;
            tx.prepare_cached(
                "INSERT INTO record_versions (record_id, version, change, content, content_sha256, lineage,
                             source_version, document_sha256, created_at, run_id, mapping_sha256, policy_sha256)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                candidate.id,
                version,
                change,
                candidate.content_json,
                candidate.content_sha256,
                candidate.lineage_json,
                key.version,
                document_sha256,
                now,
                run_id,
                candidate.rules.mapping_sha256,
                candidate.rules.policy_sha256
            ])?;
            version
        }
    };
    mark_processed(
        tx,
        key,
        outcome,
        None,
        Some(document_sha256),
        Some((candidate.id, record_version)),
        run_id,
        now,
    )?;
    // A version that maps cleanly supersedes the held failures of older versions.
    tx.prepare_cached(
        "UPDATE failures SET state = 'superseded'
                 WHERE source = ?1 AND key = ?2 AND version < ?3 AND state = 'held'",
    )?
    .execute(params![key.source, key.key, key.version])?;
    Ok(outcome)
}

/// A record's current version as a rebuild needs it.
pub(super) struct Current {
    pub(super) version: i64,
    pub(super) source_version: i64,
    pub(super) content_sha256: String,
    pub(super) document_sha256: String,
    pub(super) state: String,
    pub(super) existing: Existing,
    /// What the record is built from: `approval` and the project code, or `power` and the
    /// application id, with the source version of the current record version.
    pub(super) source: SourceKey,
}

pub(super) fn current_of(conn: &Connection, id: &str) -> Result<Option<Current>> {
    let row = conn
        .prepare_cached(
            "SELECT r.current_version, r.source_version, v.content_sha256, v.document_sha256, r.state, r.created_at,
                    json_extract(v.content, '$.decisions.customer_manager'), r.source, r.source_key, v.source_version
             FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE r.id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                SourceKey {
                    source: r.get(7)?,
                    key: r.get(8)?,
                    version: r.get(9)?,
                },
            ))
        })
        .optional()?;
    let Some((version, source_version, content_sha256, document_sha256, state, created, manager, source)) =
        row
    else {
        return Ok(None);
    };
    Ok(Some(Current {
        version,
        source_version,
        content_sha256,
        document_sha256,
        state,
        existing: Existing {
            created: parse_ts(&created)?,
            manager: manager.and_then(|m| serde_json::from_str(&m).ok()),
        },
        source,
    }))
}
