//! The outbox of calls to the power side, and the joint applications as last seen.
//!
//! Calls are planned inside the transaction of the change that causes them (a record version,
//! an operator's stage event), keyed by what they mean (`joint::create_key` and the others):
//! planning the same call twice, as a unit replayed after a crash does, writes nothing new.
//! The delivery worker reads what is due and writes each answer back in a transaction of its
//! own: the answer's raw bytes, the application as the answer shows it, and the call's state.

use serde::Serialize;
use shuiwu_power::{Application, WaterStatus, WaterStatusReport};

use super::power::{rfc3339, rfc3339_opt, upsert_application};

use super::commit::{insert_document, insert_failure};
use super::*;
use crate::joint;

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Create,
    Link,
    WaterStatus,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Create => "create",
            CallKind::Link => "link",
            CallKind::WaterStatus => "water_status",
        }
    }

    fn parse(s: &str) -> Result<CallKind> {
        match s {
            "create" => Ok(CallKind::Create),
            "link" => Ok(CallKind::Link),
            "water_status" => Ok(CallKind::WaterStatus),
            other => Err(StoreError::Corrupt(format!("outbox kind {other:?}"))),
        }
    }
}

/// One call of the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxCall {
    pub id: i64,
    pub record_id: String,
    pub kind: CallKind,
    pub idempotency_key: String,
    /// The application it is about (none for a create until it is answered).
    pub application_id: Option<String>,
    /// The request body, exactly as sent every time.
    pub body: String,
    /// `pending`, `done` or `held`.
    pub state: String,
    pub attempts: i64,
    #[serde(serialize_with = "rfc3339")]
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// How it ended: `created`, `replayed`, `adopted`, `linked`, `applied`, `no_op`.
    pub outcome: Option<String>,
    pub answer_sha256: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub done_at: Option<DateTime<Utc>>,
}

const CALL_COLUMNS: &str = "id, record_id, kind, idempotency_key, application_id, body, state, attempts,
     next_attempt_at, last_error, outcome, answer_sha256, created_at, done_at";

fn call_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<[Option<String>; 14]> {
    let mut out: [Option<String>; 14] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => None,
            rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
            v => Some(v.as_str()?.to_string()),
        };
    }
    Ok(out)
}

fn to_call(c: [Option<String>; 14]) -> Result<OutboxCall> {
    let [
        id,
        record_id,
        kind,
        key,
        app,
        body,
        state,
        attempts,
        next,
        error,
        outcome,
        answer,
        created,
        done,
    ] = c;
    let need = |v: Option<String>, what: &str| {
        v.ok_or_else(|| StoreError::Corrupt(format!("outbox {what} missing")))
    };
    let int = |v: Option<String>, what: &str| -> Result<i64> {
        need(v, what)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("outbox {what}")))
    };
    Ok(OutboxCall {
        id: int(id, "id")?,
        record_id: need(record_id, "record_id")?,
        kind: CallKind::parse(&need(kind, "kind")?)?,
        idempotency_key: need(key, "key")?,
        application_id: app,
        body: need(body, "body")?,
        state: need(state, "state")?,
        attempts: int(attempts, "attempts")?,
        next_attempt_at: parse_ts(&need(next, "next_attempt_at")?)?,
        last_error: error,
        outcome,
        answer_sha256: answer,
        created_at: parse_ts(&need(created, "created_at")?)?,
        done_at: done.as_deref().map(parse_ts).transpose()?,
    })
}

/// Plans the calls a new version of `record_id` means: the one create of a record that asks
/// for power (or the link of a power-origin application that already names its project), and
/// a `WITHDRAWN` report when the record was withdrawn after its application was made. Called
/// in the transaction that wrote the version.
pub(super) fn plan_for_record(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    rebuilder: Option<&Rebuilder>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some((state, created_at, content)) = tx
        .prepare_cached(
            "SELECT r.state, r.created_at, v.content FROM records r
             JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE r.id = ?1",
        )?
        .query_row([record_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(());
    };
    let joined = tx
        .prepare_cached("SELECT 1 FROM outbox WHERE record_id = ?1 AND kind IN ('create', 'link') LIMIT 1")?
        .exists([record_id])?
        || tx
            .prepare_cached("SELECT 1 FROM power_applications WHERE record_id = ?1 LIMIT 1")?
            .exists([record_id])?;
    if joined {
        if state == "withdrawn" {
            let report = WaterStatusReport {
                water_status: WaterStatus::Withdrawn,
                at: now,
                note: Some("项目已撤回".into()),
            };
            enqueue_status(tx, record_id, &report, now)?;
        }
        return Ok(());
    }
    if state != "active" {
        return Ok(());
    }
    let content: serde_json::Value = serde_json::from_str(&content)
        .map_err(|e| StoreError::Corrupt(format!("record {record_id}: {e}")))?;
    if let Some(application) = content["application"]["id"].as_str() {
        return plan_for_imported(tx, record_id, application, &content, now);
    }
    // A power-origin application already naming the project is linked instead of creating a
    // second one; where several do, the earliest submitted. It asks for power itself, so it is
    // linked whether or not the project's record does.
    let project = content["project"]["code"].as_str().unwrap_or_default();
    let existing: Option<String> = tx
        .prepare_cached(
            "SELECT application_id FROM power_applications
             WHERE origin = 'POWER' AND project_code = ?1 AND record_id IS NULL AND project_code <> ''
             ORDER BY submitted_at, application_id LIMIT 1",
        )?
        .query_row([project], |r| r.get(0))
        .optional()?;
    if existing.is_none() && content["power"].is_null() {
        return Ok(());
    }
    let now_text = ts(now);
    match existing {
        Some(app) => {
            if let Some(rebuilder) = rebuilder {
                supersede_imported(tx, &app, record_id, rebuilder, now)?;
            }
            let body = serde_json::json!({ "externalId": record_id }).to_string();
            enqueue(
                tx,
                record_id,
                CallKind::Link,
                &joint::link_key(&app, record_id),
                Some(&app),
                &body,
                &now_text,
            )?;
            report_earlier_events(tx, record_id, now)
        }
        None => {
            let submitted = parse_ts(&created_at)?;
            let body = match joint::create_body(record_id, &content, submitted) {
                Ok(b) => b,
                Err(why) => {
                    // Nothing the power side would accept: held for an operator, not sent.
                    let held = Held {
                        source: "power".into(),
                        key: Some(record_id.to_string()),
                        version: None,
                        step: "plan:create".into(),
                        field: None,
                        reason: format!("no joint application can be created: {why}"),
                        category: "power: create not possible".into(),
                        detail: None,
                        document_sha256: None,
                    };
                    return insert_failure(tx, &held, None, &now_text);
                }
            };
            let body = serde_json::to_string(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            enqueue(
                tx,
                record_id,
                CallKind::Create,
                &joint::create_key(record_id),
                None,
                &body,
                &now_text,
            )?;
            report_earlier_events(tx, record_id, now)
        }
    }
}

/// Plans the calls of a power-origin record (`PW-…`): a household's record links its own
/// application; one waiting for platform data links nothing yet, since the record of the
/// project, once found, will (the application then has one water record, and its external id
/// never has to change).
fn plan_for_imported(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    application: &str,
    content: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    if content["decisions"]["category"]["id"].as_str() != Some("small_residential") {
        return Ok(());
    }
    let body = serde_json::json!({ "externalId": record_id }).to_string();
    enqueue(
        tx,
        record_id,
        CallKind::Link,
        &joint::link_key(application, record_id),
        Some(application),
        &body,
        &ts(now),
    )?;
    report_earlier_events(tx, record_id, now)
}

/// Closes the power-origin record of `application` (if it has one, waiting for platform data)
/// now that the record of its project links the application: it continues there.
fn supersede_imported(
    tx: &rusqlite::Transaction<'_>,
    application: &str,
    by_record: &str,
    rebuilder: &Rebuilder,
    now: DateTime<Utc>,
) -> Result<()> {
    let own = crate::record::power_record_id(application);
    let exists = tx
        .prepare_cached("SELECT 1 FROM records WHERE id = ?1")?
        .exists([&own])?;
    if !exists {
        return Ok(());
    }
    let action = crate::stages::Action::Superseded {
        by_record: by_record.to_string(),
    };
    let new = NewAction {
        action: &action,
        at: now,
        by: "gateway",
        override_reason: None,
    };
    let check = |ctx: &crate::stages::ActionContext<'_>| {
        let closed = ctx.actions.iter().any(|a| {
            matches!(
                a.action,
                crate::stages::Action::Superseded { .. } | crate::stages::Action::Withdrawn { .. }
            )
        });
        if closed {
            Err("closed already".to_string())
        } else {
            Ok(())
        }
    };
    match super::actions::act(tx, &own, new, now, rebuilder, check) {
        Err(StoreError::Refused(_)) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// What a power-origin application means for the water side, in the transaction that lands
/// it: linked to the record of the project it names when that record has no joint
/// application yet (a create not yet sent becomes this link at delivery); held as a probable
/// duplicate when the record already has one; otherwise it waits to be imported. Returns the
/// outcome recorded for its version.
pub(super) fn plan_for_power_origin(
    tx: &rusqlite::Transaction<'_>,
    app: &Application,
    document: &str,
    now: &str,
    landed: &mut super::power::PageLanded,
) -> Result<&'static str> {
    let project = app.project_code.as_deref().unwrap_or_default().trim();
    let record: Option<String> = if project.is_empty() {
        None
    } else {
        tx.prepare_cached("SELECT id FROM records WHERE source = 'approval' AND source_key = ?1")?
            .query_row([project], |r| r.get(0))
            .optional()?
    };
    let Some(record) = record else {
        landed.awaiting_import += 1;
        return Ok("awaiting_import");
    };
    if app.external_id.as_deref() == Some(record.as_str()) {
        tx.prepare_cached(
            "UPDATE power_applications SET record_id = ?2 WHERE application_id = ?1 AND record_id IS NULL",
        )?
        .execute(params![app.application_id, record])?;
        return Ok("linked");
    }
    if app.external_id.is_some() {
        // Linked to another water record by now: not ours to change.
        return Ok("linked_elsewhere");
    }
    let has_application = tx
        .prepare_cached(
            "SELECT 1 FROM power_applications WHERE record_id = ?1 AND application_id <> ?2 LIMIT 1",
        )?
        .exists(params![record, app.application_id])?;
    let planned: Option<(String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT kind, state, application_id FROM outbox WHERE record_id = ?1 AND kind IN ('create', 'link')
             ORDER BY id LIMIT 1",
        )?
        .query_row([&record], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let sent = planned.as_ref().is_some_and(|(kind, state, target)| {
        state != "pending" || (kind == "link" && target.as_deref() != Some(app.application_id.as_str()))
    });
    if has_application || sent {
        let held = duplicate(&app.application_id, project, &record, Some(document.to_string()));
        insert_failure(tx, &held, None, now)?;
        landed.held_duplicates += 1;
        return Ok("held_duplicate");
    }
    if planned.is_none() {
        let body = serde_json::json!({ "externalId": record }).to_string();
        enqueue(
            tx,
            &record,
            CallKind::Link,
            &joint::link_key(&app.application_id, &record),
            Some(&app.application_id),
            &body,
            now,
        )?;
        landed.links_planned += 1;
    }
    // A create still pending becomes the link of the earliest such application when it is
    // delivered.
    Ok("link_planned")
}

/// Holds, as probable duplicates, the power-origin applications that name the project of
/// `record_id` and are linked to no record, now that `linked` is its joint application.
fn hold_other_applications(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    linked: &str,
    now: &str,
) -> Result<()> {
    let others: Vec<(String, Option<String>, String)> = tx
        .prepare_cached(
            "SELECT p.application_id, p.document_sha256, r.source_key FROM power_applications p
             JOIN records r ON r.id = ?1 AND r.source = 'approval'
             WHERE p.origin = 'POWER' AND p.project_code = r.source_key AND p.record_id IS NULL
               AND p.external_id IS NULL AND p.application_id <> ?2",
        )?
        .query_map(params![record_id, linked], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<std::result::Result<_, _>>()?;
    for (app, document, project) in others {
        insert_failure(tx, &duplicate(&app, &project, record_id, document), None, now)?;
    }
    Ok(())
}

/// The failure-queue entry of a probable duplicate.
fn duplicate(app: &str, project: &str, record: &str, document: Option<String>) -> Held {
    Held {
        source: "power".into(),
        key: Some(app.to_string()),
        version: None,
        step: "link".into(),
        field: None,
        reason: format!(
            "power-origin application {app} names project {project}, whose record {record} already has its joint application: a probable duplicate"
        ),
        category: "power: probable duplicate".into(),
        detail: Some(serde_json::json!({ "record_id": record }).to_string()),
        document_sha256: document,
    }
}

/// A record that gets its joint application after stage events were recorded (the power side
/// was configured later) reports them too, in their order, right after the create or link.
fn report_earlier_events(tx: &rusqlite::Transaction<'_>, record_id: &str, now: DateTime<Utc>) -> Result<()> {
    for a in super::actions::actions_of(tx, record_id)? {
        if let Some(status) = joint::water_status_of(&a.action) {
            let report = WaterStatusReport {
                water_status: status,
                at: a.at,
                note: None,
            };
            enqueue_status(tx, record_id, &report, now)?;
        }
    }
    Ok(())
}

/// Plans the water-status report an operator's stage event means, when the record has a joint
/// application (or one on its way). Called in the transaction that recorded the action.
pub(super) fn plan_for_action(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    action: &crate::stages::Action,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(status) = joint::water_status_of(action) else {
        return Ok(());
    };
    let joined = tx
        .prepare_cached("SELECT 1 FROM outbox WHERE record_id = ?1 AND kind IN ('create', 'link') LIMIT 1")?
        .exists([record_id])?;
    if !joined {
        return Ok(());
    }
    let report = WaterStatusReport {
        water_status: status,
        at,
        note: None,
    };
    enqueue_status(tx, record_id, &report, now)
}

fn enqueue_status(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    report: &WaterStatusReport,
    now: DateTime<Utc>,
) -> Result<()> {
    let body = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    enqueue(
        tx,
        record_id,
        CallKind::WaterStatus,
        &joint::status_key(record_id, report.water_status),
        None,
        &body,
        &ts(now),
    )
}

fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    record_id: &str,
    kind: CallKind,
    key: &str,
    application_id: Option<&str>,
    body: &str,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (record_id, kind, idempotency_key, application_id, body, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
    )?
    .execute(params![record_id, kind.as_str(), key, application_id, body, now])?;
    Ok(())
}

/// How a delivery attempt ended, to write back.
#[derive(Debug)]
pub enum DeliveryResult<'a> {
    /// The call took effect (or had already): `outcome` names how; the application as the
    /// answer showed it.
    Done {
        outcome: &'a str,
        application: Option<&'a Application>,
        answer: Option<&'a RawDocument>,
    },
    /// A transient failure: tried again at `next_attempt_at`.
    Retry {
        error: &'a str,
        next_attempt_at: DateTime<Utc>,
        application: Option<&'a Application>,
        answer: Option<&'a RawDocument>,
    },
    /// A permanent answer: held for an operator with the reason and the raw answer.
    Held {
        reason: &'a str,
        category: &'a str,
        application: Option<&'a Application>,
        answer: Option<&'a RawDocument>,
    },
    /// Not sent: not possible yet; looked at again at `next_attempt_at`, not an attempt.
    Wait {
        why: &'a str,
        next_attempt_at: DateTime<Utc>,
    },
    /// A create, not sent, that becomes the link of a power-origin application naming the
    /// same project.
    ReplacedByLink { application_id: &'a str },
}

impl Store {
    /// Plans, for every active record that asks for power and has no joint application yet,
    /// its create (or link): for records stored before the power side was configured. The
    /// number of calls planned.
    pub fn plan_missing_joint_calls(&self, now: DateTime<Utc>) -> Result<usize> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let ids: Vec<String> = tx
            .prepare(
                "SELECT r.id FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                 WHERE r.state = 'active' AND json_extract(v.content, '$.power') IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.record_id = r.id AND o.kind IN ('create', 'link'))
                   AND NOT EXISTS (SELECT 1 FROM power_applications p WHERE p.record_id = r.id)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        for id in &ids {
            plan_for_record(&tx, id, None, now)?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// The calls due now: of each record, its oldest pending call (a later call of a record
    /// waits for the earlier ones), oldest first.
    pub fn due_calls(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxCall>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CALL_COLUMNS} FROM outbox o
             WHERE o.state = 'pending' AND o.next_attempt_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.record_id = o.record_id AND p.state = 'pending' AND p.id < o.id)
             ORDER BY o.id LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![ts(now), limit as i64], call_of)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.into_iter().map(to_call).collect()
    }

    /// The earliest time a pending call is due, if any is pending.
    pub fn next_call_due(&self) -> Result<Option<DateTime<Utc>>> {
        let conn = self.read();
        let next: Option<String> = conn
            .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")?
            .query_row([], |r| r.get(0))?;
        next.as_deref().map(parse_ts).transpose()
    }

    /// Writes back how a delivery attempt of call `id` ended.
    pub fn call_result(&self, id: i64, result: DeliveryResult<'_>, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        let record_id: String = tx
            .prepare_cached("SELECT record_id FROM outbox WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let land = |answer: Option<&RawDocument>| -> Result<Option<String>> {
            answer
                .map(|doc| {
                    let sha = sha256_hex(&doc.bytes);
                    insert_document(&tx, &sha, doc, None, &now_text).map(|()| sha)
                })
                .transpose()
        };
        let tie = |app: Option<&Application>, sha: Option<&str>, tied: bool| -> Result<()> {
            match app {
                Some(a) => upsert_application(&tx, a, sha, tied.then_some(record_id.as_str()), &now_text),
                None => Ok(()),
            }
        };
        match result {
            DeliveryResult::Done {
                outcome,
                application,
                answer,
            } => {
                let sha = land(answer)?;
                tie(application, sha.as_deref(), true)?;
                tx.prepare_cached(
                    "UPDATE outbox SET state = 'done', outcome = ?2, answer_sha256 = COALESCE(?3, answer_sha256),
                         application_id = COALESCE(?4, application_id), attempts = attempts + 1, done_at = ?5, last_error = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id, outcome, sha, application.map(|a| a.application_id.as_str()), now_text])?;
                // The record has its joint application now: any other power-origin application
                // naming its project is a probable duplicate, held for an operator.
                if let Some(a) = application {
                    hold_other_applications(&tx, &record_id, &a.application_id, &now_text)?;
                }
                // The record's later calls about this application know which one it is.
                if let Some(a) = application {
                    tx.prepare_cached(
                        "UPDATE outbox SET application_id = ?2 WHERE record_id = ?1 AND state = 'pending' AND application_id IS NULL",
                    )?
                    .execute(params![record_id, a.application_id])?;
                }
            }
            DeliveryResult::Retry {
                error,
                next_attempt_at,
                application,
                answer,
            } => {
                let sha = land(answer)?;
                tie(application, sha.as_deref(), false)?;
                tx.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, error, ts(next_attempt_at)])?;
            }
            DeliveryResult::Held {
                reason,
                category,
                application,
                answer,
            } => {
                let sha = land(answer)?;
                tie(application, sha.as_deref(), false)?;
                let kind: String = tx
                    .prepare_cached("SELECT kind FROM outbox WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))?;
                tx.prepare_cached(
                    "UPDATE outbox SET state = 'held', attempts = attempts + 1, last_error = ?2,
                         answer_sha256 = COALESCE(?3, answer_sha256) WHERE id = ?1",
                )?
                .execute(params![id, reason, sha])?;
                let held = Held {
                    source: "power".into(),
                    key: Some(record_id.clone()),
                    version: None,
                    step: format!("deliver:{kind}"),
                    field: None,
                    reason: reason.to_string(),
                    category: category.to_string(),
                    detail: Some(serde_json::json!({ "outbox_id": id }).to_string()),
                    document_sha256: sha,
                };
                insert_failure(&tx, &held, None, &now_text)?;
            }
            DeliveryResult::Wait { why, next_attempt_at } => {
                tx.prepare_cached("UPDATE outbox SET last_error = ?2, next_attempt_at = ?3 WHERE id = ?1")?
                    .execute(params![id, why, ts(next_attempt_at)])?;
            }
            DeliveryResult::ReplacedByLink { application_id } => {
                // In place, so that the record's later calls still come after it. No create
                // was sent under the old key: nothing on the power side knows it.
                let body = serde_json::json!({ "externalId": record_id }).to_string();
                tx.prepare_cached(
                    "UPDATE outbox SET kind = 'link', idempotency_key = ?2, application_id = ?3, body = ?4,
                         outcome = NULL, last_error = 'replaced by the link of a power-origin application', next_attempt_at = ?5
                     WHERE id = ?1 AND kind = 'create'",
                )?
                .execute(params![id, joint::link_key(application_id, &record_id), application_id, body, now_text])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The outbox, newest first; only calls in `state` when given.
    pub fn outbox(&self, state: Option<&str>, limit: usize) -> Result<(Vec<OutboxCall>, i64)> {
        let conn = self.read();
        let total: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM outbox WHERE ?1 IS NULL OR state = ?1")?
            .query_row([state], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CALL_COLUMNS} FROM outbox WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![state, limit as i64], call_of)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((rows.into_iter().map(to_call).collect::<Result<_>>()?, total))
    }

    pub fn outbox_call(&self, id: i64) -> Result<Option<OutboxCall>> {
        let conn = self.read();
        let row = conn
            .prepare_cached(&format!("SELECT {CALL_COLUMNS} FROM outbox WHERE id = ?1"))?
            .query_row([id], call_of)
            .optional()?;
        row.map(to_call).transpose()
    }

    /// Releases a held call for another delivery, as `by`; its failure-queue entry is marked
    /// replayed. Audited.
    pub fn retry_call(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        let state: Option<String> = tx
            .prepare_cached("SELECT state FROM outbox WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        match state.as_deref() {
            None => return Err(StoreError::Refused(format!("no outbox call {id}"))),
            Some("held") => {}
            Some(other) => {
                return Err(StoreError::Refused(format!(
                    "outbox call {id} is {other}, not held"
                )));
            }
        }
        tx.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2 WHERE id = ?1",
            params![id, now_text],
        )?;
        tx.execute(
            "UPDATE failures SET state = 'replayed', resolved_at = ?2, resolved_by = ?3, resolution = 'released for delivery'
             WHERE source = 'power' AND state = 'held' AND json_extract(detail, '$.outbox_id') = ?1",
            params![id, now_text, by],
        )?;
        let detail = serde_json::json!({ "outbox_id": id }).to_string();
        audit::append(
            &tx,
            &now_text,
            by,
            "outbox_retry",
            &format!("outbox {id}"),
            &detail,
        )?;
        tx.commit()?;
        Ok(())
    }
}
