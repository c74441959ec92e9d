//! The joint applications as the gateway last saw them: written from every answer and listing
//! page of the power side, never back to an older version, tied to the water record they
//! belong to.

use serde::Serialize;
use shuiwu_power::{Application, WaterStatus};

use super::commit::insert_document;
use super::*;

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
     record_id, document_sha256, submitted_at, updated_at";

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
}

/// Lands one (application, version) once: the application as it shows, and what a
/// power-origin one means for the water side.
fn land_one(
    tx: &rusqlite::Transaction<'_>,
    app: &Application,
    sha: &str,
    now_text: &str,
    landed: &mut PageLanded,
) -> Result<()> {
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
    upsert_application(tx, app, Some(sha), None, now_text)?;
    let outcome = if app.origin == shuiwu_power::Origin::Power {
        super::outbox::plan_for_power_origin(tx, app, sha, now_text, landed)?
    } else {
        "landed"
    };
    tx.prepare_cached(
        "INSERT INTO source_versions (source, key, version, outcome, document_sha256, processed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![key.source, key.key, key.version, outcome, sha, now_text])?;
    Ok(())
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
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
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
            land_one(&tx, app, &sha, &now_text, &mut PageLanded::default())?;
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
        page: &RawDocument,
        watermark: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<PageLanded> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let now_text = ts(now);
        let sha = sha256_hex(&page.bytes);
        insert_document(&tx, &sha, page, None, &now_text)?;
        let mut landed = PageLanded::default();
        for app in apps {
            land_one(&tx, app, &sha, &now_text, &mut landed)?;
        }
        if let Some(w) = watermark {
            tx.execute(
                "INSERT INTO cursors (source, watermark, updated_at) VALUES ('power', ?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET watermark = excluded.watermark, updated_at = excluded.updated_at
                 WHERE excluded.watermark > cursors.watermark",
                params![ts(w), now_text],
            )?;
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
