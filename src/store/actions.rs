//! Operator actions and what follows from them: stage events and reassignments judged and
//! written in one transaction, replays and dismissals of held failures, deadline alerts.

use super::commit::insert_document;
use super::versions::{apply_record, current_of, stored_draft};
use super::*;

impl Store {
    /// Takes a held failure out of the queue, audited: `replayed` with the record the stored
    /// document now gives (committed in the same transaction), or `dismissed` with a reason.
    pub fn resolve_failure(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        replay: Option<(&SourceKey, &str, Draft, &Rebuilder)>,
        documents: &[(String, RawDocument)],
        now: DateTime<Utc>,
    ) -> Result<Option<Applied>> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        for (sha, doc) in documents {
            insert_document(&tx, sha, doc, None, &ts(now))?;
        }
        let applied = resolve_in(&tx, self.joint(), id, by, reason, replay, now)?;
        let detail =
            serde_json::json!({"failure": id, "reason": reason, "outcome": applied.map(Applied::as_str)});
        let action = if applied.is_some() {
            "failure_replayed"
        } else {
            "failure_dismissed"
        };
        audit::append(
            &tx,
            &ts(now),
            by,
            action,
            &format!("failure {id}"),
            &detail.to_string(),
        )?;
        tx.commit()?;
        Ok(applied)
    }

    /// Replays many held failures in one transaction, audited as one operator action naming
    /// every item and its outcome. An item that cannot be decided now (no policy for its day)
    /// stays held and is reported with the reason; the others are committed.
    pub fn replay_failures(
        &self,
        items: Vec<(i64, SourceKey, String, Draft)>,
        by: &str,
        rebuilder: &Rebuilder,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, std::result::Result<Applied, String>)>> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let joint = self.joint();
        let mut done = Vec::with_capacity(items.len());
        for (id, key, sha, draft) in items {
            let outcome = match resolve_in(
                &tx,
                joint,
                id,
                by,
                "replayed with the rules in force (bulk)",
                Some((&key, &sha, draft, rebuilder)),
                now,
            ) {
                Ok(Some(applied)) => Ok(applied),
                Ok(None) => Err("not replayed".to_string()),
                Err(StoreError::Rebuild(why) | StoreError::Refused(why)) => Err(why),
                Err(e) => return Err(e),
            };
            done.push((id, outcome));
        }
        let detail = serde_json::json!({
            "items": done.iter().map(|(id, o)| serde_json::json!({
                "failure": id,
                "outcome": o.as_ref().map_or("still_failing", |a| a.as_str()),
                "reason": o.as_ref().err(),
            })).collect::<Vec<_>>(),
        });
        audit::append(
            &tx,
            &ts(now),
            by,
            "failures_replayed",
            &format!("{} failures", done.len()),
            &detail.to_string(),
        )?;
        tx.commit()?;
        Ok(done)
    }

    /// The operator actions on a record, oldest first.
    pub fn actions(&self, record_id: &str) -> Result<Vec<crate::stages::OperatorAction>> {
        actions_of(&self.read(), record_id)
    }

    /// Records an operator action and, when the rebuilt record differs, its new version, in
    /// one `BEGIN IMMEDIATE` transaction: the current version, its document and the record's
    /// actions are read, `check` judges the action against them (with the record as it is and
    /// the materials owed now), and the record is rebuilt from the same document and every
    /// action. A sync committing a new version at the same moment waits for this transaction
    /// or comes after it, and rebuilds with this action in turn.
    pub fn record_action(
        &self,
        record_id: &str,
        new: NewAction<'_>,
        now: DateTime<Utc>,
        rebuilder: &Rebuilder,
        check: impl FnOnce(&crate::stages::ActionContext<'_>) -> std::result::Result<(), String>,
    ) -> Result<(i64, i64)> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let done = act(&tx, record_id, new, now, rebuilder, check)?;
        tx.commit()?;
        Ok(done)
    }

    /// Records a stage event or reassignment as operators do (the CLI, the admin API): judged
    /// by [`crate::stages::judge`] against the record as it is in the action's transaction.
    pub fn record_stage_event(
        &self,
        record_id: &str,
        new: NewAction<'_>,
        now: DateTime<Utc>,
        rebuilder: &Rebuilder,
    ) -> Result<(i64, i64)> {
        let (action, at, override_reason) = (new.action, new.at, new.override_reason);
        self.record_action(record_id, new, now, rebuilder, |ctx| {
            crate::stages::judge(ctx, action, at, override_reason)
        })
    }

    /// Current contents of the records whose progress has a started, unfinished stage.
    pub fn running_records(&self) -> Result<Vec<(String, serde_json::Value)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            // The running versions from their partial index, then whether each is current:
            // no record's content is read unless one of its versions is running.
            "SELECT r.id, v.content FROM record_versions v INDEXED BY record_versions_running
             CROSS JOIN records r ON r.id = v.record_id AND r.current_version = v.version
             WHERE json_extract(v.content, '$.progress.state') IN ('in_progress', 'paused')
             ORDER BY r.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, content) = row?;
            out.push((id, serde_json::from_str(&content).unwrap_or_default()));
        }
        Ok(out)
    }

    /// Records a deadline alert once; returns whether it is new.
    pub fn raise_alert(
        &self,
        record_id: &str,
        stage: &str,
        kind: &str,
        due_at: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO deadline_alerts (record_id, stage, kind, due_at, raised_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![record_id, stage, kind, due_at, ts(now)],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// When an alert was raised, if it was.
    pub fn alert_raised(
        &self,
        record_id: &str,
        stage: &str,
        kind: &str,
        due_at: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT raised_at FROM deadline_alerts WHERE record_id = ?1 AND stage = ?2 AND kind = ?3 AND due_at = ?4",
                params![record_id, stage, kind, due_at],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// What a stored record keeps through a rebuild (creation time, customer manager).
    pub fn existing(&self, id: &str) -> Result<Option<Existing>> {
        Ok(current_of(&self.read(), id)?.map(|c| c.existing))
    }
}

/// Takes a held failure out of the queue inside the caller's transaction: `replayed` with the
/// record its document now gives, or `dismissed`. Not audited here: the caller audits one entry
/// for the whole operator action.
fn resolve_in(
    tx: &rusqlite::Transaction<'_>,
    joint: bool,
    id: i64,
    by: &str,
    reason: &str,
    replay: Option<(&SourceKey, &str, Draft, &Rebuilder)>,
    now: DateTime<Utc>,
) -> Result<Option<Applied>> {
    let state: Option<String> = tx
        .query_row("SELECT state FROM failures WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    match state.as_deref() {
        None => return Err(StoreError::Refused(format!("no failure {id}"))),
        Some("held") => {}
        Some(other) => return Err(StoreError::Refused(format!("failure {id} is {other}, not held"))),
    }
    let applied = match replay {
        Some((key, document, draft, rebuilder)) => {
            let record = draft.id.clone();
            match apply_record(tx, key, document, draft, rebuilder, None, now)? {
                Ok(applied) => {
                    if joint && changed(applied) {
                        super::outbox::plan_for_record(tx, &record, Some(rebuilder), now)?;
                    }
                    Some(applied)
                }
                Err(e) => return Err(StoreError::Rebuild(e.to_string())),
            }
        }
        None => None,
    };
    let new_state = if applied.is_some() {
        "replayed"
    } else {
        "dismissed"
    };
    tx.execute(
        "UPDATE failures SET state = ?2, resolved_at = ?3, resolved_by = ?4, resolution = ?5 WHERE id = ?1",
        params![id, new_state, ts(now), by, reason],
    )?;
    Ok(applied)
}

/// The operator actions on a record, oldest first.
/// Records an action on a record inside the caller's transaction (see
/// [`Store::record_action`]): judged by `check`, the record rebuilt with it, the status report
/// planned, audited. The gateway's own actions (a withdrawal the power side reported, a record
/// superseded) come here too, named by who they come from.
pub(super) fn act(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    new: NewAction<'_>,
    now: DateTime<Utc>,
    rebuilder: &Rebuilder,
    check: impl FnOnce(&crate::stages::ActionContext<'_>) -> std::result::Result<(), String>,
) -> Result<(i64, i64)> {
    let NewAction {
        action,
        at,
        by,
        override_reason,
    } = new;
    let Some(current) = current_of(tx, record_id)? else {
        return Err(StoreError::Refused(format!(
            "no record {record_id} (see `gateway records list`)"
        )));
    };
    let today = crate::worktime::date_of(now);
    let draft = stored_draft(tx, rebuilder, &current.source, &current.document_sha256, today)?;
    let mut actions = actions_of(tx, record_id)?;
    let before = rebuilder
        .candidate(draft.clone(), Some(&current.existing), &actions, now)
        .map_err(|e| StoreError::Rebuild(e.to_string()))?;
    let owed = latest_missing(tx, record_id)?;
    check(&crate::stages::ActionContext {
        record: &before,
        actions: &actions,
        owed: &owed,
    })
    .map_err(StoreError::Refused)?;
    let action_json = serde_json::to_string(action)
        .map_err(|e| StoreError::Corrupt(format!("action not serialisable: {e}")))?;
    tx.execute(
        "INSERT INTO operator_actions (record_id, action, kind, at, by, created_at, override_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            record_id,
            action_json,
            action.name(),
            ts(at),
            by,
            ts(now),
            override_reason
        ],
    )?;
    let action_id = tx.last_insert_rowid();
    actions.push(crate::stages::OperatorAction {
        id: action_id,
        action: action.clone(),
        at,
        by: by.to_string(),
        override_reason: override_reason.map(str::to_string),
    });
    let candidate = rebuilder
        .candidate(draft, Some(&current.existing), &actions, now)
        .map_err(|e| StoreError::Rebuild(e.to_string()))?;
    let mut version = current.version;
    if current.content_sha256 != candidate.content_sha256 {
        version += 1;
        let now_text = ts(now);
        tx.execute(
            "INSERT INTO record_versions (record_id, version, change, content, content_sha256, lineage,
                 source_version, document_sha256, created_at, run_id, action_id, mapping_sha256, policy_sha256)
             VALUES (?1, ?2, 'updated', ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10, ?11)",
            params![
                record_id,
                version,
                candidate.content_json,
                candidate.content_sha256,
                candidate.lineage_json,
                current.source_version,
                current.document_sha256,
                now_text,
                action_id,
                candidate.rules.mapping_sha256,
                candidate.rules.policy_sha256
            ],
        )?;
        tx.execute(
            "UPDATE records SET current_version = ?2, updated_at = ?3 WHERE id = ?1",
            params![record_id, version, now_text],
        )?;
        super::reports::write_line(tx, record_id, version, &candidate.content_json)?;
    }
    // A record with a joint application (or one on its way) reports the event to the power
    // side, whichever process records it: the outbox says so, not this process's settings.
    super::outbox::plan_for_action(tx, record_id, action, at, now)?;
    let detail = serde_json::json!({
        "action": action, "at": ts(at), "override_reason": override_reason,
        "action_id": action_id, "record_version": version,
    });
    audit::append(tx, &ts(now), by, action.name(), record_id, &detail.to_string())?;
    Ok((action_id, version))
}

pub(super) fn actions_of(conn: &Connection, record_id: &str) -> Result<Vec<crate::stages::OperatorAction>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, action, at, by, override_reason FROM operator_actions WHERE record_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([record_id], ActionRow::read)?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    rows.into_iter().map(ActionRow::decode).collect()
}

/// An `operator_actions` row as read, from its columns `id, action, at, by, override_reason`
/// starting at column 0; decoded outside the statement's borrow.
pub(super) struct ActionRow(i64, String, String, String, Option<String>);

impl ActionRow {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
        Self::read_from(r, 0)
    }

    /// The row's columns starting at `first` (a query may select something before them).
    pub(super) fn read_from(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ActionRow> {
        Ok(ActionRow(
            r.get(first)?,
            r.get(first + 1)?,
            r.get(first + 2)?,
            r.get(first + 3)?,
            r.get(first + 4)?,
        ))
    }

    pub(super) fn decode(self) -> Result<crate::stages::OperatorAction> {
        let ActionRow(id, action, at, by, override_reason) = self;
        Ok(crate::stages::OperatorAction {
            id,
            action: serde_json::from_str(&action)
                .map_err(|e| StoreError::Corrupt(format!("operator action {id}: {e}")))?,
            at: parse_ts(&at)?,
            by,
            override_reason,
        })
    }
}

/// The items the latest materials check of a record found missing.
fn latest_missing(conn: &Connection, record_id: &str) -> Result<Vec<String>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT checklist FROM materials_checks WHERE record_id = ?1 ORDER BY id DESC LIMIT 1",
            [record_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let checklist: crate::materials::Checklist = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("materials check of {record_id}: {e}")))?;
    Ok(checklist.missing().map(|i| i.item.clone()).collect())
}
