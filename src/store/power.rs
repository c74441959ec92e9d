//! The joint applications as the gateway last saw them: written from every answer and listing
//! page of the power side, never back to an older version, tied to the water record they
//! belong to.

use serde::Serialize;
use shuiwu_power::{Application, WaterStatus};

use super::commit::{hold_item, insert_document, mark_processed};
use super::versions::apply_record;
use super::*;
use crate::rebuild::{DraftError, Rebuilder};
use crate::record::Assembled;

/// A joint application as the gateway last saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JointApplication {
    pub application_id: String,
    pub external_id: Option<String>,
    pub origin: String,
    pub status: String,
    pub water_status: Option<String>,
    pub version: i64,
    pub project_code: Option<String>,
    pub record_id: Option<String>,
    /// The water record made from this power-origin application (`PW-…`) when it has one: a
    /// household's (then also `record_id`), or one waiting for platform data, not linked.
    pub own_record: Option<String>,
    pub document_sha256: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub submitted_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl JointApplication {
    pub fn water_status(&self) -> Option<WaterStatus> {
        self.water_status.as_deref().and_then(WaterStatus::parse)
    }
}

const APP_COLUMNS: &str = "application_id, external_id, origin, status, water_status, version, project_code,
     record_id, document_sha256, submitted_at, updated_at,
     (SELECT r.id FROM records r WHERE r.id = 'PW-' || application_id)";

fn app_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JointApplication, String, String)> {
    Ok((
        JointApplication {
            application_id: r.get(0)?,
            external_id: r.get(1)?,
            origin: r.get(2)?,
            status: r.get(3)?,
            water_status: r.get(4)?,
            version: r.get(5)?,
            project_code: r.get(6)?,
            record_id: r.get(7)?,
            own_record: r.get(11)?,
            document_sha256: r.get(8)?,
            submitted_at: DateTime::<Utc>::MIN_UTC,
            updated_at: DateTime::<Utc>::MIN_UTC,
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

fn finish_app((mut a, submitted, updated): (JointApplication, String, String)) -> Result<JointApplication> {
    a.submitted_at = parse_ts(&submitted)?;
    a.updated_at = parse_ts(&updated)?;
    Ok(a)
}

/// Writes an application as an answer showed it, never over a newer version, and ties it to
/// `record_id` when given.
pub(super) fn upsert_application(
    tx: &rusqlite::Transaction<'_>,
    app: &Application,
    document_sha256: Option<&str>,
    record_id: Option<&str>,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO power_applications (application_id, external_id, origin, status, water_status, version,
             project_code, record_id, document_sha256, submitted_at, updated_at, seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (application_id) DO UPDATE SET external_id = excluded.external_id, status = excluded.status,
             water_status = excluded.water_status, version = excluded.version, project_code = excluded.project_code,
             document_sha256 = COALESCE(excluded.document_sha256, power_applications.document_sha256),
             updated_at = excluded.updated_at, seen_at = excluded.seen_at
         WHERE excluded.version >= power_applications.version",
    )?
    .execute(params![
        app.application_id,
        app.external_id,
        match app.origin {
            shuiwu_power::Origin::Water => "WATER",
            shuiwu_power::Origin::Power => "POWER",
        },
        app.status.as_str(),
        app.water_status.map(WaterStatus::as_str),
        app.version as i64,
        app.project_code,
        record_id,
        document_sha256,
        ts(app.submitted_at),
        ts(app.updated_at),
        now
    ])?;
    if let Some(r) = record_id {
        tx.prepare_cached(
            "UPDATE power_applications SET record_id = ?2 WHERE application_id = ?1 AND record_id IS NULL",
        )?
        .execute(params![app.application_id, r])?;
    }
    Ok(())
}

/// What landing one listing page of the power side did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageLanded {
    /// (application, version) pairs not seen before.
    pub new_versions: u64,
    /// Pairs already landed (the overlap of polls, a batch read twice).
    pub repeats: u64,
    /// Power-origin applications naming a project the water side has a record of, planned
    /// to be linked to it.
    pub links_planned: u64,
    /// Power-origin applications naming a project whose record already has its joint
    /// application: held for an operator as probable duplicates.
    pub held_duplicates: u64,
    /// Power-origin applications that no water record takes yet.
    pub awaiting_import: u64,
    /// Versions of power-origin applications made into (or updating) a water record of their
    /// own (`PW-…`): households, and applications waiting for platform data.
    pub imported: u64,
    /// Power-origin applications that are not this utility's (a site outside Kunming).
    pub skipped: u64,
    /// Versions held for an operator: they do not map, or cannot be decided.
    pub held: u64,
}

/// One application as it came: the document holding it (a listing page, a webhook event)
/// parsed, and where in it the application is.
pub(super) struct Landing<'a> {
    pub document: &'a serde_json::Value,
    pub sha: &'a str,
    pub at: String,
}

/// Lands one (application, version) once: the application as it shows, and what a
/// power-origin one means for the water side — the link to its project's record, a probable
/// duplicate held, or a water record of its own — and a withdrawal on the power side, which
/// closes the water record it belongs to.
fn land_one(
    tx: &rusqlite::Transaction<'_>,
    app: &Application,
    landing: &Landing<'_>,
    rebuilder: &Rebuilder,
    now: DateTime<Utc>,
    landed: &mut PageLanded,
) -> Result<()> {
    let now_text = ts(now);
    let key = SourceKey {
        source: "power".into(),
        key: app.application_id.clone(),
        version: app.version as i64,
    };
    let seen = tx
        .prepare_cached("SELECT 1 FROM source_versions WHERE source = ?1 AND key = ?2 AND version = ?3")?
        .exists(params![key.source, key.key, key.version])?;
    if seen {
        landed.repeats += 1;
        return Ok(());
    }
    landed.new_versions += 1;
    upsert_application(tx, app, Some(landing.sha), None, &now_text)?;
    if app.origin != shuiwu_power::Origin::Power {
        mark_landed(tx, &key, "landed", landing.sha, &now_text)?;
    } else {
        let own = crate::record::power_record_id(&app.application_id);
        let imported = tx
            .prepare_cached("SELECT 1 FROM records WHERE id = ?1")?
            .exists([&own])?;
        // An application with a record of its own keeps it: later versions update it.
        let outcome = if imported {
            "import"
        } else {
            super::outbox::plan_for_power_origin(tx, app, landing.sha, &now_text, landed)?
        };
        if outcome == "awaiting_import" || outcome == "import" {
            if outcome == "awaiting_import" {
                landed.awaiting_import -= 1;
            }
            import(tx, &key, landing, rebuilder, now, landed)?;
        } else {
            mark_landed(tx, &key, outcome, landing.sha, &now_text)?;
        }
    }
    if app.status == shuiwu_power::PowerStatus::Withdrawn {
        withdraw(tx, app, rebuilder, now)?;
    }
    Ok(())
}

fn mark_landed(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    outcome: &str,
    sha: &str,
    now: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO source_versions (source, key, version, outcome, document_sha256, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![key.source, key.key, key.version, outcome, sha, now])?;
    Ok(())
}

/// Makes (or updates) the water record of a power-origin application that no project record
/// takes, exactly as a project version is committed: mapped with lineage into the power
/// side's bytes, decided, versioned, its source version marked processed. What does not map
/// is held with the document; a site outside Kunming is skipped with the reason. A household's
/// record takes the application as its joint application at once (the link is planned), so
/// that a project record made later never links it too.
fn import(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    landing: &Landing<'_>,
    rebuilder: &Rebuilder,
    now: DateTime<Utc>,
    landed: &mut PageLanded,
) -> Result<()> {
    let now_text = ts(now);
    let today = crate::worktime::date_of(now);
    let held = |step: &str, field: Option<String>, reason: String, detail: Option<String>| Held {
        source: key.source.clone(),
        key: Some(key.key.clone()),
        version: Some(key.version),
        step: step.into(),
        category: match &field {
            Some(f) => format!("power: {step} {f}"),
            None => format!("power: {step}"),
        },
        field,
        reason,
        detail,
        document_sha256: Some(landing.sha.to_string()),
    };
    let draft = match rebuilder.assemble_power(landing.document, &landing.at, landing.sha, today) {
        Ok(Assembled::Record(draft)) => draft,
        Ok(Assembled::Skip(reason)) => {
            mark_processed(
                tx,
                key,
                Applied::Skipped,
                Some(&reason),
                Some(landing.sha),
                None,
                None,
                &now_text,
            )?;
            landed.skipped += 1;
            return Ok(());
        }
        Err(DraftError::Map(e)) => {
            let field = e.errors.first().map(|f| f.field.clone());
            let detail = serde_json::to_string(&e.errors).ok();
            hold_item(tx, &held("map", field, e.to_string(), detail), None, &now_text)?;
            landed.held += 1;
            return Ok(());
        }
        Err(DraftError::Assemble(e)) => {
            let field = Some(e.field().to_string());
            hold_item(tx, &held("assemble", field, e.to_string(), None), None, &now_text)?;
            landed.held += 1;
            return Ok(());
        }
        Err(e) => {
            hold_item(tx, &held("map", None, e.to_string(), None), None, &now_text)?;
            landed.held += 1;
            return Ok(());
        }
    };
    let id = draft.id.clone();
    let household = draft
        .record
        .application
        .as_ref()
        .is_some_and(|a| a.is_household(draft.record.water.as_ref()));
    match apply_record(tx, key, landing.sha, *draft, rebuilder, None, now)? {
        Ok(applied) => {
            landed.imported += 1;
            if super::changed(applied) {
                super::outbox::plan_for_record(tx, &id, Some(rebuilder), now)?;
            }
            // After the plan, which would take a record already holding it as joined.
            if household {
                tx.prepare_cached(
                    "UPDATE power_applications SET record_id = ?2 WHERE application_id = ?1 AND record_id IS NULL",
                )?
                .execute(params![key.key, id])?;
            }
        }
        Err(e) => {
            let h = Held {
                category: "decide: no policy".into(),
                ..held("decide", None, e.to_string(), None)
            };
            hold_item(tx, &h, None, &now_text)?;
            landed.held += 1;
        }
    }
    Ok(())
}

/// The applicant withdrew on the power side, which withdraws both (联合报装一并撤回): the water
/// record the application belongs to — its own, or its project's — gets a withdrawal recorded
/// by the power utility, unless the record is already closed (connected, rejected, withdrawn).
fn withdraw(
    tx: &rusqlite::Transaction<'_>,
    app: &Application,
    rebuilder: &Rebuilder,
    now: DateTime<Utc>,
) -> Result<()> {
    let own = crate::record::power_record_id(&app.application_id);
    let record: Option<String> = tx
        .prepare_cached(
            "SELECT COALESCE(p.record_id,
                    (SELECT o.record_id FROM outbox o WHERE o.kind = 'link' AND o.application_id = p.application_id
                     ORDER BY o.id LIMIT 1),
                    r.id)
             FROM power_applications p LEFT JOIN records r ON r.id = ?2
             WHERE p.application_id = ?1",
        )?
        .query_row(params![app.application_id, own], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(record) = record else {
        return Ok(());
    };
    let action = crate::stages::Action::Withdrawn {
        reason: format!(
            "申请人已在供电侧撤回联合报装（申请 {}，版本 {}，{}）",
            app.application_id,
            app.version,
            shuiwu_power::format_time(app.updated_at)
        ),
    };
    let new = NewAction {
        action: &action,
        at: now,
        by: POWER_UTILITY,
        override_reason: None,
    };
    let check = |ctx: &crate::stages::ActionContext<'_>| {
        let stages = ctx
            .record
            .record
            .decisions
            .as_ref()
            .map(|d| d.stages.clone())
            .ok_or_else(|| "the record has no decisions".to_string())?;
        crate::stages::check(ctx.actions, &action, now, &stages)
    };
    match super::actions::act(tx, &record, new, now, rebuilder, check) {
        // Closed already: nothing to withdraw.
        Err(StoreError::Refused(_)) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Who the gateway's own actions on behalf of the power side are recorded as.
pub const POWER_UTILITY: &str = "power-utility";

/// Where the power side's listing cursor goes with a page (the newest change it holds), and
/// where the reading of the listing that reached this page began, for the coverage ledger
/// (`None`: not recorded).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListingCursor {
    pub watermark: Option<DateTime<Utc>>,
    pub read_from: Option<DateTime<Utc>>,
}

impl Store {
    /// Keeps an event the power side pushed, with its raw bytes, and lands its application as
    /// a listing would (once per version, never over a newer one: events out of order end in
    /// the newest version). The listing's cursor does not move: polling stays the reference.
    /// `false`: the event id was seen before, and nothing was done again.
    pub fn receive_power_event(
        &self,
        event_id: &str,
        kind: &str,
        app: &Application,
        raw: &RawDocument,
        rebuilder: &Rebuilder,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        let sha = sha256_hex(&raw.bytes);
        insert_document(&tx, &sha, raw, None, &now_text)?;
        let new = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO power_events (event_id, type, application_id, version, document_sha256, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![event_id, kind, app.application_id, app.version as i64, sha, now_text])?
            == 1;
        if new {
            let document: serde_json::Value = serde_json::from_slice(&raw.bytes)
                .map_err(|e| StoreError::Corrupt(format!("event {event_id}: {e}")))?;
            let landing = Landing {
                document: &document,
                sha: &sha,
                at: "/application".into(),
            };
            land_one(&tx, app, &landing, rebuilder, now, &mut PageLanded::default())?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Lands one page of the power side's change listing in one transaction: its raw bytes,
    /// each (application, version) once, the link or duplicate hold a power-origin application
    /// naming a known project means, and the listing's cursor moved to `watermark`.
    pub fn land_power_page(
        &self,
        apps: &[Application],
        unreadable: &[shuiwu_power::Unreadable],
        page: &RawDocument,
        cursor: ListingCursor,
        rebuilder: &Rebuilder,
        now: DateTime<Utc>,
    ) -> Result<PageLanded> {
        let ListingCursor { watermark, read_from } = cursor;
        // Parsed once for the page's applications, outside the write lock.
        let document: serde_json::Value = serde_json::from_slice(&page.bytes).unwrap_or_default();
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now_text = ts(now);
        let sha = sha256_hex(&page.bytes);
        insert_document(&tx, &sha, page, None, &now_text)?;
        let mut landed = PageLanded::default();
        for app in apps {
            let at = crate::rebuild::application_pointer(&document, &app.application_id, app.version as i64)
                .unwrap_or_default();
            let landing = Landing {
                document: &document,
                sha: &sha,
                at,
            };
            land_one(&tx, app, &landing, rebuilder, now, &mut landed)?;
        }
        for item in unreadable {
            let held = Held {
                source: "power".into(),
                key: item.application_id().map(str::to_string),
                version: item.version(),
                step: "decode".into(),
                field: None,
                reason: format!("a listing item is not an application: {}", item.reason),
                category: "power: unreadable application".into(),
                detail: Some(item.value.to_string()),
                document_sha256: Some(sha.clone()),
            };
            if hold_item(&tx, &held, None, &now_text)? == Applied::Held {
                landed.held += 1;
            } else {
                landed.repeats += 1;
            }
        }
        if let Some(w) = watermark {
            tx.execute(
                "INSERT INTO cursors (source, watermark, updated_at) VALUES ('power', ?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET watermark = excluded.watermark, updated_at = excluded.updated_at
                 WHERE excluded.watermark > cursors.watermark",
                params![ts(w), now_text],
            )?;
            // The coverage ledger: the listing was read from `read_from` to this page's newest
            // change.
            if let Some(from) = read_from.filter(|f| w > *f) {
                let window = super::CoveredWindow {
                    source: "power".into(),
                    start: from,
                    end: w,
                    pages: vec![(sha.clone(), (apps.len() + unreadable.len()) as u64)],
                };
                super::coverage::record(&tx, &window, None, &now_text)?;
            }
        }
        tx.commit()?;
        Ok(landed)
    }

    /// The joint application of a record (created or linked by the gateway), if it has one.
    pub fn joint_application_of(&self, record_id: &str) -> Result<Option<JointApplication>> {
        let conn = self.read();
        conn.prepare_cached(&format!(
            "SELECT {APP_COLUMNS} FROM power_applications WHERE record_id = ?1 ORDER BY submitted_at LIMIT 1"
        ))?
        .query_row([record_id], app_of)
        .optional()?
        .map(finish_app)
        .transpose()
    }

    /// One joint application as last seen.
    pub fn joint_application(&self, application_id: &str) -> Result<Option<JointApplication>> {
        let conn = self.read();
        conn.prepare_cached(&format!(
            "SELECT {APP_COLUMNS} FROM power_applications WHERE application_id = ?1"
        ))?
        .query_row([application_id], app_of)
        .optional()?
        .map(finish_app)
        .transpose()
    }

    /// A power-origin application not linked to any record that names `project_code`, the
    /// earliest submitted.
    pub fn unlinked_power_application(&self, project_code: &str) -> Result<Option<JointApplication>> {
        let conn = self.read();
        conn.prepare_cached(&format!(
            "SELECT {APP_COLUMNS} FROM power_applications
             WHERE origin = 'POWER' AND project_code = ?1 AND record_id IS NULL
             ORDER BY submitted_at, application_id LIMIT 1"
        ))?
        .query_row([project_code], app_of)
        .optional()?
        .map(finish_app)
        .transpose()
    }

    /// Every joint application, newest change first.
    pub fn joint_applications(&self, limit: usize) -> Result<Vec<JointApplication>> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {APP_COLUMNS} FROM power_applications ORDER BY updated_at DESC, application_id LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], app_of)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_app).collect()
    }
}

/// JSON times carry Beijing time's offset, as everywhere in the gateway's output.
pub(super) fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&shuiwu_wire::format_rfc3339(*t))
}

pub(super) fn rfc3339_opt<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
