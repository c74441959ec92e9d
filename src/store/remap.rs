//! Remaps in the store: the records a remap reads in batches (with the raw document each
//! current version names), the new versions it commits with the run that made them, and the
//! run itself (`remaps`), whose last committed record lets a remap stopped by a kill resume.

use std::collections::HashMap;
use std::sync::Arc;

use super::actions::{ActionRow, actions_of};
use super::versions::{current_of, stored_draft};
use super::*;
use crate::record::Candidate;
use crate::stages::OperatorAction;

/// Which records a remap takes: every record, those of one source (`approval`, `power`), or
/// one record (by its id or its source key, e.g. the project code).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RemapSelection {
    pub source: Option<String>,
    pub project: Option<String>,
}

/// A record's current version as a remap reads it.
#[derive(Debug, Clone)]
pub struct RemapInput {
    pub id: String,
    /// The source version and the raw document the current version was made from.
    pub source: SourceKey,
    pub document_sha256: String,
    /// The document's bytes, shared by the records of one batch that name the same document
    /// (a power-side listing page holds many applications).
    pub bytes: Arc<Vec<u8>>,
    /// When it was created; its customer manager is read from `content` where it is examined
    /// (on a worker, not on the thread that reads the batch).
    pub existing: Existing,
    pub actions: Vec<OperatorAction>,
    pub version: i64,
    pub state: String,
    pub content_sha256: String,
    pub content: String,
    pub lineage: String,
}

impl RemapInput {
    /// The newest operator action the input was read with.
    pub fn last_action(&self) -> i64 {
        self.actions.last().map_or(0, |a| a.id)
    }
}

/// A new version a remap commits, as it was decided outside the transaction from `read`.
pub struct Remapped {
    pub id: String,
    /// The version and the newest action it was decided from.
    pub read_version: i64,
    pub read_last_action: i64,
    pub candidate: Candidate,
}

/// A remap run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RemapRun {
    pub id: i64,
    pub started_at: String,
    pub by: String,
    pub state: String,
    /// The last record of the last committed batch: a resumed run goes on after it.
    pub last_record_id: Option<String>,
    pub examined: i64,
    pub changed: i64,
    pub failed: i64,
}

/// How many current record versions one pair of mapping and policy files made (a version
/// written before the hashes were kept names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesInUse {
    pub mapping_sha256: Option<String>,
    pub policy_sha256: Option<String>,
    pub records: i64,
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchCounts {
    pub examined: i64,
    pub changed: i64,
    pub failed: i64,
}

impl Store {
    /// Up to `limit` records of the selection after `after` (in id order), each with its current
    /// version, document and actions.
    pub fn remap_batch(
        &self,
        selection: &RemapSelection,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RemapInput>> {
        let conn = self.read();
        let after = after.unwrap_or("");
        let rows = conn
            .prepare_cached(
                "SELECT r.id, r.source, r.source_key, v.source_version, v.document_sha256, r.created_at,
                        r.current_version, r.state, v.content_sha256, v.content, v.lineage, d.bytes
                 FROM records r
                 JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                 JOIN raw_documents d ON d.sha256 = v.document_sha256
                 WHERE r.id > ?1 AND (?2 IS NULL OR r.source = ?2)
                   AND (?3 IS NULL OR r.id = ?3 OR r.source_key = ?3)
                 ORDER BY r.id LIMIT ?4",
            )?
            .query_map(
                params![after, selection.source, selection.project, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        SourceKey {
                            source: r.get(1)?,
                            key: r.get(2)?,
                            version: r.get(3)?,
                        },
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, String>(9)?,
                        r.get::<_, String>(10)?,
                        r.get::<_, Vec<u8>>(11)?,
                    ))
                },
            )?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let Some(last) = rows.last().map(|r| r.0.clone()) else {
            return Ok(Vec::new());
        };
        // The batch's actions in one read, by record.
        let mut actions: HashMap<String, Vec<OperatorAction>> = HashMap::new();
        for (record, action) in actions_between(&conn, after, &last)? {
            actions.entry(record).or_default().push(action);
        }
        let mut documents: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for (id, source, document_sha256, created, version, state, content_sha256, content, lineage, bytes) in
            rows
        {
            // A power-side page holds many applications: its bytes are kept once.
            let bytes = documents
                .entry(document_sha256.clone())
                .or_insert_with(|| Arc::new(bytes))
                .clone();
            out.push(RemapInput {
                existing: Existing {
                    created: parse_ts(&created)?,
                    manager: None,
                },
                actions: actions.remove(&id).unwrap_or_default(),
                id,
                source,
                document_sha256,
                bytes,
                version,
                state,
                content_sha256,
                content,
                lineage,
            });
        }
        Ok(out)
    }

    /// Starts a remap run, audited, or resumes the one a stopped remap left `running` when it
    /// took the same records with the same files; any other unfinished run is marked
    /// `interrupted`. `rules` names the mapping and policy files in force with their hashes.
    pub fn begin_remap(
        &self,
        by: &str,
        selection: &RemapSelection,
        rules: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(RemapRun, bool)> {
        let selection_json = serde_json::to_string(selection)
            .map_err(|e| StoreError::Corrupt(format!("selection not serialisable: {e}")))?;
        let rules_json = rules.to_string();
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let resumable: Option<i64> = tx
            .query_row(
                "SELECT id FROM remaps WHERE state = 'running' AND selection = ?1 AND rules = ?2
                 ORDER BY id DESC LIMIT 1",
                params![selection_json, rules_json],
                |r| r.get(0),
            )
            .optional()?;
        let interrupted = tx.execute(
            "UPDATE remaps SET state = 'interrupted', finished_at = ?2
             WHERE state = 'running' AND id IS NOT ?1",
            params![resumable, ts(now)],
        )?;
        let (id, resumed) = match resumable {
            Some(id) => (id, true),
            None => {
                tx.execute(
                    "INSERT INTO remaps (started_at, by, state, selection, rules) VALUES (?1, ?2, 'running', ?3, ?4)",
                    params![ts(now), by, selection_json, rules_json],
                )?;
                (tx.last_insert_rowid(), false)
            }
        };
        let detail = serde_json::json!({
            "remap": id, "resumed": resumed, "selection": selection, "rules": rules,
            "interrupted_runs": interrupted,
        });
        let action = if resumed { "remap_resumed" } else { "remap_started" };
        audit::append(
            &tx,
            &ts(now),
            by,
            action,
            &format!("remap {id}"),
            &detail.to_string(),
        )?;
        let run = remap_run(&tx, id)?;
        tx.commit()?;
        Ok((run, resumed))
    }

    /// Commits one batch of a remap in one transaction: each new version (unless the record
    /// changed since it was read and, rebuilt now, is unchanged), the power side's calls it
    /// means, and the run's progress up to `last`. A record that a sync or an operator changed
    /// after it was read is rebuilt here from what is stored now, so nothing is overwritten.
    pub fn commit_remap(
        &self,
        run: i64,
        versions: Vec<Remapped>,
        last: &str,
        read: BatchCounts,
        rebuilder: &Rebuilder,
        now: DateTime<Utc>,
    ) -> Result<BatchCounts> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        let joint = self.joint();
        let mut counts = BatchCounts {
            examined: read.examined,
            changed: 0,
            failed: read.failed,
        };
        for r in versions {
            // What the record is now, read cheaply: most records did not change since the
            // batch was read, and their candidate is written as it is.
            let Some(now_is) = tx
                .prepare_cached(
                    "SELECT r.current_version, v.content_sha256, r.state, v.source_version, v.document_sha256,
                            (SELECT max(id) FROM operator_actions a WHERE a.record_id = r.id)
                     FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                     WHERE r.id = ?1",
                )?
                .query_row([&r.id], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    ))
                })
                .optional()?
            else {
                continue;
            };
            let (
                version,
                mut content_sha256,
                mut state_was,
                mut source_version,
                mut document_sha256,
                last_action,
            ) = now_is;
            let candidate = if version == r.read_version && last_action == r.read_last_action {
                r.candidate
            } else {
                // Changed since it was read: rebuilt from what is stored now.
                let Some(current) = current_of(&tx, &r.id)? else {
                    continue;
                };
                let actions = actions_of(&tx, &r.id)?;
                let today = crate::worktime::date_of(now);
                let rebuilt = stored_draft(&tx, rebuilder, &current.source, &current.document_sha256, today)
                    .and_then(|draft| {
                        rebuilder
                            .candidate(draft, Some(&current.existing), &actions, now)
                            .map_err(|e| StoreError::Rebuild(e.to_string()))
                    });
                (content_sha256, state_was, source_version, document_sha256) = (
                    current.content_sha256,
                    current.state,
                    current.source.version,
                    current.document_sha256,
                );
                match rebuilt {
                    Ok(c) => c,
                    Err(StoreError::Rebuild(_)) => {
                        counts.failed += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if candidate.content_sha256 == content_sha256 {
                continue;
            }
            let state = candidate.record.project.status;
            let change = if state == RecordState::Withdrawn && state_was != "withdrawn" {
                "withdrawn"
            } else {
                "updated"
            };
            let version = version + 1;
            tx.prepare_cached(
                "INSERT INTO record_versions (record_id, version, change, content, content_sha256, lineage,
                     source_version, document_sha256, created_at, run_id, action_id, mapping_sha256,
                     policy_sha256, remap_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10, ?11, ?12)",
            )?
            .execute(params![
                r.id,
                version,
                change,
                candidate.content_json,
                candidate.content_sha256,
                candidate.lineage_json,
                source_version,
                document_sha256,
                now_text,
                candidate.rules.mapping_sha256,
                candidate.rules.policy_sha256,
                run
            ])?;
            tx.prepare_cached(
                "UPDATE records SET state = ?2, current_version = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![r.id, state.as_str(), version, now_text])?;
            super::reports::write_line(&tx, &r.id, version, &candidate.content_json)?;
            if joint {
                super::outbox::plan_for_record(&tx, &r.id, Some(rebuilder), now)?;
            }
            counts.changed += 1;
        }
        tx.execute(
            "UPDATE remaps SET last_record_id = ?2, examined = examined + ?3, changed = changed + ?4,
                 failed = failed + ?5
             WHERE id = ?1",
            params![run, last, counts.examined, counts.changed, counts.failed],
        )?;
        tx.commit()?;
        Ok(counts)
    }

    /// Closes a remap run, audited with what it did.
    pub fn finish_remap(&self, run: i64, now: DateTime<Utc>) -> Result<RemapRun> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        tx.execute(
            "UPDATE remaps SET state = 'finished', finished_at = ?2 WHERE id = ?1",
            params![run, ts(now)],
        )?;
        let done = remap_run(&tx, run)?;
        let detail = serde_json::json!({
            "remap": run, "examined": done.examined, "changed": done.changed, "failed": done.failed,
        });
        audit::append(
            &tx,
            &ts(now),
            &done.by,
            "remap_finished",
            &format!("remap {run}"),
            &detail.to_string(),
        )?;
        tx.commit()?;
        Ok(done)
    }

    /// The last finished remap of every record with exactly these files (`rules` as
    /// [`crate::remap::rules_json`] gives them): the records it left unchanged are as these
    /// files make them, whatever files made their versions.
    pub fn remapped_with(&self, rules: &serde_json::Value) -> Result<Option<RemapRun>> {
        let conn = self.read();
        let all = serde_json::to_string(&RemapSelection::default())
            .map_err(|e| StoreError::Corrupt(format!("selection not serialisable: {e}")))?;
        let id: Option<i64> = conn
            .query_row(
                "SELECT id FROM remaps WHERE state = 'finished' AND selection = ?1 AND rules = ?2
                 ORDER BY id DESC LIMIT 1",
                params![all, rules.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        id.map(|id| remap_run(&conn, id)).transpose()
    }

    /// Remap runs a stopped remap left unfinished.
    pub fn unfinished_remaps(&self) -> Result<Vec<RemapRun>> {
        let conn = self.read();
        let ids = conn
            .prepare("SELECT id FROM remaps WHERE state = 'running' ORDER BY id")?
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        ids.into_iter().map(|id| remap_run(&conn, id)).collect()
    }

    /// How many current record versions each (mapping file, policy file) pair made, by hash:
    /// what the files in force are compared with.
    pub fn rules_in_use(&self) -> Result<Vec<RulesInUse>> {
        let conn = self.read();
        let rows = conn
            .prepare(
                "SELECT v.mapping_sha256, v.policy_sha256, count(*)
                 FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                 GROUP BY 1, 2 ORDER BY 3 DESC",
            )?
            .query_map([], |r| {
                Ok(RulesInUse {
                    mapping_sha256: r.get(0)?,
                    policy_sha256: r.get(1)?,
                    records: r.get(2)?,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// The operator actions on the records with ids in `(after, last]`, by record, oldest first.
fn actions_between(conn: &Connection, after: &str, last: &str) -> Result<Vec<(String, OperatorAction)>> {
    let rows = conn
        .prepare_cached(
            "SELECT record_id, id, action, at, by, override_reason FROM operator_actions
             WHERE record_id > ?1 AND record_id <= ?2 ORDER BY record_id, id",
        )?
        .query_map(params![after, last], |r| {
            Ok((r.get::<_, String>(0)?, ActionRow::read_from(r, 1)?))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(record, row)| Ok((record, row.decode()?)))
        .collect()
}

fn remap_run(conn: &Connection, id: i64) -> Result<RemapRun> {
    Ok(conn.query_row(
        "SELECT id, started_at, by, state, last_record_id, examined, changed, failed FROM remaps WHERE id = ?1",
        [id],
        |r| {
            Ok(RemapRun {
                id: r.get(0)?,
                started_at: r.get(1)?,
                by: r.get(2)?,
                state: r.get(3)?,
                last_record_id: r.get(4)?,
                examined: r.get(5)?,
                changed: r.get(6)?,
                failed: r.get(7)?,
            })
        },
    )?)
}
