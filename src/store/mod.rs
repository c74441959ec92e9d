//! The one embedded store: SQLite in WAL mode. All state lives here and nothing else in the
//! code touches the database.
//!
//! Writes happen in units of work ([`UnitOfWork`]): the raw documents, record versions,
//! lineage, failures and cursor move of one unit are committed in one transaction, so a crash
//! at any instant leaves either all of a unit or none of it. Processing is idempotent on
//! (source, key, version): a unit replayed after a crash changes nothing that is already there.

pub mod audit;
mod blocking;
pub mod lock;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shuiwu_wire::{FetchMeta, RawDocument};

use crate::mapping::MappingSet;
use crate::policy::PolicySet;
use crate::rebuild::{Existing, Rebuilder};
use crate::record::{Draft, RecordState};

/// A store operation failed. Every variant is fatal for the unit at hand (it is not
/// committed) but never for the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database {path} has schema version {found}, newer than this gateway's {known}")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("a store call did not finish: {0}")]
    Unfinished(String),
    /// The record could not be rebuilt with the rules in force (no policy for its day).
    #[error("the record cannot be rebuilt: {0}")]
    Rebuild(String),
    /// An operator action that the record's state at commit time refuses.
    #[error("refused: {0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a shuiwu-gateway database ({why}); refusing to touch it")]
    NotOurs { path: String, why: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub use blocking::{AsyncStore, Pending};

/// Identifies one version of one upstream item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SourceKey {
    pub source: String,
    pub key: String,
    pub version: i64,
}

/// What processing one upstream item version gave, ready to commit.
#[derive(Debug, Clone)]
pub enum Item {
    /// A project version mapped into a draft; the store rebuilds the record from it and the
    /// record's actions inside the commit's transaction.
    Record {
        key: SourceKey,
        document_sha256: String,
        draft: Box<Draft>,
    },
    Skipped {
        key: SourceKey,
        document_sha256: Option<String>,
        reason: String,
    },
    Held(Held),
}

/// A permanent failure for the failure queue.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub source: String,
    pub key: Option<String>,
    pub version: Option<i64>,
    pub step: String,
    pub field: Option<String>,
    pub reason: String,
    /// A short, value-free label of the kind of failure (`building.floor_area_m2:
    /// non_negative`), for counting like failures together in summaries.
    pub category: String,
    /// Structured detail (every failing field, for instance), as JSON.
    pub detail: Option<String>,
    pub document_sha256: Option<String>,
}

/// A cursor to move in the same transaction as the unit's items.
#[derive(Debug, Clone)]
pub struct CursorMove {
    pub source: String,
    pub watermark: DateTime<Utc>,
}

/// Everything one unit of work commits at once.
#[derive(Debug, Default)]
pub struct UnitOfWork {
    pub run_id: Option<i64>,
    pub documents: Vec<(String, RawDocument)>,
    pub items: Vec<Item>,
    pub cursor: Option<CursorMove>,
}

/// What committing one item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Created,
    Updated,
    Withdrawn,
    /// A new source version whose content equals the current record version.
    Unchanged,
    /// Older than the version the record was last built from.
    Stale,
    /// This (source, key, version) was already processed.
    Duplicate,
    Skipped,
    Held,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Updated => "updated",
            Applied::Withdrawn => "withdrawn",
            Applied::Unchanged => "unchanged",
            Applied::Stale => "stale",
            Applied::Duplicate => "duplicate",
            Applied::Skipped => "skipped",
            Applied::Held => "held",
        }
    }
}

/// A record as listed.
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    pub id: String,
    pub source_key: String,
    pub state: String,
    pub current_version: i64,
    pub source_version: i64,
    pub name: String,
    pub district: String,
    /// The category id, `provisional` or `none`.
    pub category: String,
    pub created_at: String,
    pub updated_at: String,
}

/// One stored version of a record.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub version: i64,
    pub change: String,
    pub content: serde_json::Value,
    pub content_sha256: String,
    #[serde(skip)]
    pub lineage: String,
    pub source_version: i64,
    pub document_sha256: String,
    pub created_at: String,
}

/// A failure in the queue.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub id: i64,
    pub source: String,
    pub key: Option<String>,
    pub version: Option<i64>,
    pub step: String,
    pub field: Option<String>,
    pub reason: String,
    pub detail: Option<serde_json::Value>,
    pub document_sha256: Option<String>,
    pub state: String,
    pub created_at: String,
}

/// One sync pass as listed. `outcome` is `running` while it runs, `interrupted` when it was
/// stopped (by a signal, or found unfinished after a kill).
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    /// Project versions processed in the pass.
    pub processed: i64,
}

/// Counts of one run (or several), for summaries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutcomeCount {
    pub outcome: String,
    pub count: i64,
    /// The most frequent reasons, most frequent first.
    pub top_reasons: Vec<(String, i64)>,
}

/// An operator action to record: what, when, by whom, and why a rule was overridden.
#[derive(Debug, Clone, Copy)]
pub struct NewAction<'a> {
    pub action: &'a crate::stages::Action,
    pub at: DateTime<Utc>,
    pub by: &'a str,
    pub override_reason: Option<&'a str>,
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
    /// A second connection for the sync's lookups, so that they need not wait for a unit
    /// being committed on the first (WAL lets readers run beside the writer).
    reader: Mutex<Connection>,
    path: PathBuf,
}

/// `PRAGMA application_id` of a gateway database ("SWGW"), so that `--db` pointed at another
/// program's SQLite file is refused instead of being converted.
pub const APPLICATION_ID: i32 = 0x5357_4757;

/// Refuses a database that belongs to another application. An empty file is new; a database
/// from before the application id was set is recognised by its schema version and tables.
fn check_application(conn: &Connection, path: &Path) -> Result<()> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: path.display().to_string(),
        why,
    };
    let id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(not_ours(format!("its application id is {id:#x}")));
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    let ours: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('records', 'cursors', 'source_versions')",
        [],
        |r| r.get(0),
    )?;
    match (version, tables) {
        (0, 0) => Ok(()),
        (v, _) if v > 0 && ours == 3 => {
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
            Ok(())
        }
        _ => Err(not_ours(format!(
            "it has {tables} schema objects of another program"
        ))),
    }
}

/// The query planner stability guarantee: a cached statement keeps its plan whatever its
/// parameters. Without it, the bundled SQLite (built with STAT4) re-prepares the record
/// lookups on every binding — measured at 7 % of a backfill's CPU.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Creates a directory (and its parents) readable by the gateway's user only, whatever the umask.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Open options that create a file readable and writable by the gateway's user only.
pub(crate) fn private_file_options(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Whether an existing database file can be read by other users (group or others bits).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

/// A write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`): what it
/// reads cannot be changed by another writer before it commits, and it waits (busy timeout)
/// instead of failing when another writer holds the lock.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// SHA-256 of raw bytes, lower-case hex: the address of a raw document.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    ///
    /// A new database (and the directory it is created in) is private to the gateway's user:
    /// it holds personal data. SQLite gives its `-wal` and `-shm` files the database file's
    /// permissions. A file that is some other application's SQLite database is refused, never
    /// converted.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let io_err = |e: std::io::Error| StoreError::Io {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(io_err)?;
        }
        if !path.exists() {
            private_file_options(std::fs::OpenOptions::new().write(true).create_new(true))
                .open(path)
                .map_err(io_err)?;
            // The mode given at creation is filtered by the umask; this is not.
            #[cfg(unix)]
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io_err)?;
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        stable_plans(&conn).map_err(open_err)?;
        check_application(&conn, path)?;
        // WAL: readers (CLI commands) never block the daemon's writer, and a commit survives a
        // killed process. synchronous=FULL: it survives a power cut too.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        // The schema version is read inside the write transaction that migrates: two
        // processes opening a new database at once (the daemon and an inspection command)
        // migrate it once, one after the other.
        let known = schema::MIGRATIONS.len() as i64;
        let version = |c: &Connection| -> Result<i64> {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(open_err)
        };
        let too_new = |found: i64| StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        };
        let current = version(&conn)?;
        if current > known {
            return Err(too_new(current));
        }
        // Up to date (the common case): no write lock is taken.
        if current < known {
            let tx = write_tx(&mut conn)?;
            let found = version(&tx)?;
            if found > known {
                return Err(too_new(found));
            }
            for (i, migration) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.execute_batch(migration)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            }
            tx.commit()?;
        }
        let reader = Connection::open(path).map_err(open_err)?;
        reader.pragma_update(None, "query_only", "ON").map_err(open_err)?;
        stable_plans(&reader).map_err(open_err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA quick_check`: the problems it finds (damaged pages, broken b-trees),
    /// none when the database is sound. Linear in the database's size.
    pub fn quick_check(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        blocking::check_not_async();
        // As for `lock`: a read-only connection stays usable after a panic.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        blocking::check_not_async();
        // A panic while holding the connection leaves no transaction open (rusqlite rolls back
        // on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps every mapping and policy file in force, so that the hashes in lineage and in
    /// decision traces always resolve to the rules that were applied.
    pub fn save_rules(&self, mappings: &MappingSet, policies: &PolicySet, now: DateTime<Utc>) -> Result<()> {
        let conn = self.lock();
        let files = mappings.all().map(|m| (&m.sha256, &m.file, &m.content)).chain(
            policies
                .versions()
                .iter()
                .map(|p| (&p.sha256, &p.file, &p.content)),
        );
        for (sha, file, content) in files {
            conn.execute(
                "INSERT OR IGNORE INTO mapping_files (sha256, file, content, first_used) VALUES (?1, ?2, ?3, ?4)",
                params![sha, file, content, ts(now)],
            )?;
        }
        Ok(())
    }

    pub fn mapping_file(&self, sha256: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT file, content FROM mapping_files WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn begin_run(&self, now: DateTime<Utc>) -> Result<i64> {
        let conn = self.lock();
        conn.execute("INSERT INTO runs (started_at) VALUES (?1)", [ts(now)])?;
        Ok(conn.last_insert_rowid())
    }

    /// Marks the passes that never finished as interrupted: only the holder of the writer lock
    /// calls this, so no other pass can be running. Returns how many were closed.
    pub fn close_abandoned_runs(&self, now: DateTime<Utc>) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE runs SET finished_at = ?1, outcome = 'interrupted',
                 error = 'the gateway stopped before the pass finished (killed or crashed)'
             WHERE finished_at IS NULL",
            [ts(now)],
        )?)
    }

    /// The newest passes, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, started_at, finished_at, outcome, error,
                    (SELECT count(*) FROM source_versions s WHERE s.run_id = runs.id)
             FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                started_at: r.get(1)?,
                finished_at: r.get(2)?,
                outcome: r.get::<_, Option<String>>(3)?.unwrap_or_else(|| "running".into()),
                error: r.get(4)?,
                processed: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn finish_run(&self, run: i64, now: DateTime<Utc>, outcome: &str, error: Option<&str>) -> Result<()> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
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
        let tx = write_tx(&mut conn)?;
        for (sha, doc) in documents {
            insert_document(&tx, sha, doc, None, &ts(now))?;
        }
        let state: Option<String> = tx
            .query_row("SELECT state FROM failures WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match state.as_deref() {
            None => return Err(StoreError::Refused(format!("no failure {id}"))),
            Some("held") => {}
            Some(other) => return Err(StoreError::Refused(format!("failure {id} is {other}, not held"))),
        }
        let now_text = ts(now);
        let applied = match replay {
            Some((key, document, draft, rebuilder)) => {
                match apply_record(&tx, key, document, draft, rebuilder, None, now)? {
                    Ok(applied) => Some(applied),
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
            params![id, new_state, now_text, by, reason],
        )?;
        let detail =
            serde_json::json!({"failure": id, "reason": reason, "outcome": applied.map(Applied::as_str)});
        let action = if applied.is_some() {
            "failure_replayed"
        } else {
            "failure_dismissed"
        };
        audit::append(
            &tx,
            &now_text,
            by,
            action,
            &format!("failure {id}"),
            &detail.to_string(),
        )?;
        tx.commit()?;
        Ok(applied)
    }

    /// The audit log's head: the newest entry's sequence number and hash, as written with it.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        audit::head(&self.lock())
    }

    /// Every audit log entry, in order.
    pub fn audit_entries(&self) -> Result<Vec<audit::Entry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(audit::Entry {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: r.get(5)?,
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn cursor(&self, source: &str) -> Result<Option<DateTime<Utc>>> {
        let text: Option<String> = self
            .lock()
            .query_row("SELECT watermark FROM cursors WHERE source = ?1", [source], |r| {
                r.get(0)
            })
            .optional()?;
        text.map(|t| parse_ts(&t)).transpose()
    }

    /// The newest version of an item already processed, whatever the outcome.
    pub fn processed_version(&self, source: &str, key: &str) -> Result<Option<i64>> {
        Ok(self
            .read()
            .prepare_cached("SELECT max(version) FROM source_versions WHERE source = ?1 AND key = ?2")?
            .query_row(params![source, key], |r| r.get(0))?)
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
        let NewAction {
            action,
            at,
            by,
            override_reason,
        } = new;
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let Some(current) = current_of(&tx, record_id)? else {
            return Err(StoreError::Refused(format!(
                "no record {record_id} (see `gateway records list`)"
            )));
        };
        let bytes: Vec<u8> = tx.query_row(
            "SELECT bytes FROM raw_documents WHERE sha256 = ?1",
            [&current.document_sha256],
            |r| r.get(0),
        )?;
        let today = crate::worktime::date_of(now);
        let draft = match rebuilder.assemble_bytes(&bytes, &current.document_sha256, today) {
            Ok(crate::record::Assembled::Record(d)) => *d,
            Ok(crate::record::Assembled::Skip(why)) => {
                return Err(StoreError::Rebuild(format!("its document is now skipped: {why}")));
            }
            Err(e) => return Err(StoreError::Rebuild(format!("its document no longer maps: {e}"))),
        };
        let mut actions = actions_of(&tx, record_id)?;
        let before = rebuilder
            .candidate(draft.clone(), Some(&current.existing), &actions, now)
            .map_err(|e| StoreError::Rebuild(e.to_string()))?;
        let owed = latest_missing(&tx, record_id)?;
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
                     source_version, document_sha256, created_at, run_id, action_id)
                 VALUES (?1, ?2, 'updated', ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
                params![
                    record_id,
                    version,
                    candidate.content_json,
                    candidate.content_sha256,
                    candidate.lineage_json,
                    current.source_version,
                    current.document_sha256,
                    now_text,
                    action_id
                ],
            )?;
            tx.execute(
                "UPDATE records SET current_version = ?2, updated_at = ?3 WHERE id = ?1",
                params![record_id, version, now_text],
            )?;
        }
        let detail = serde_json::json!({
            "action": action, "at": ts(at), "override_reason": override_reason,
            "action_id": action_id, "record_version": version,
        });
        audit::append(&tx, &ts(now), by, action.name(), record_id, &detail.to_string())?;
        tx.commit()?;
        Ok((action_id, version))
    }

    /// Current contents of the records whose progress has a started, unfinished stage.
    pub fn running_records(&self) -> Result<Vec<(String, serde_json::Value)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT r.id, v.content FROM records r
             JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
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
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO deadline_alerts (record_id, stage, kind, due_at, raised_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![record_id, stage, kind, due_at, ts(now)],
        )?;
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
        let tx = write_tx(&mut conn)?;
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

    /// What a stored record keeps through a rebuild (creation time, customer manager).
    pub fn existing(&self, id: &str) -> Result<Option<Existing>> {
        Ok(current_of(&self.read(), id)?.map(|c| c.existing))
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
        let mut conn = self.lock();
        let tx = write_tx(&mut conn)?;
        let now_text = ts(now);
        for (sha, doc) in documents {
            insert_document(&tx, sha, doc, run_id, &now_text)?;
        }
        insert_failure(&tx, held, run_id, &now_text)?;
        tx.commit()?;
        Ok(())
    }

    /// Active records by category label (a category id, `provisional` or `none`) with how
    /// many of them are in the "11000" mode.
    pub fn category_counts(&self) -> Result<Vec<(String, i64, i64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT coalesce(json_extract(v.content, '$.decisions.category.id'),
                             json_extract(v.content, '$.decisions.category.state'), 'undecided') AS label,
                    count(*), coalesce(sum(coalesce(json_extract(v.content, '$.decisions.mode_11000.value'),
                        json_type(v.content, '$.decisions.mode_11000') = 'true')), 0)
             FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE r.state = 'active' GROUP BY label ORDER BY count(*) DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Counts one more "listed, but the detail says 4040" for an item version; returns the
    /// count so far.
    pub fn listing_miss(&self, key: &SourceKey, now: DateTime<Utc>) -> Result<i64> {
        Ok(self.fetch_miss(key, now)?.0)
    }

    /// Counts one more failed fetch of a listed item version; returns how many so far and
    /// when the first was.
    pub fn fetch_miss(&self, key: &SourceKey, now: DateTime<Utc>) -> Result<(i64, DateTime<Utc>)> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO listing_misses (source, key, version, attempts, last_seen, first_seen) VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (source, key, version) DO UPDATE SET attempts = attempts + 1, last_seen = excluded.last_seen,
                 first_seen = coalesce(first_seen, excluded.first_seen)",
            params![key.source, key.key, key.version, ts(now)],
        )?;
        let (attempts, first): (i64, String) = conn.query_row(
            "SELECT attempts, first_seen FROM listing_misses WHERE source = ?1 AND key = ?2 AND version = ?3",
            params![key.source, key.key, key.version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
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
        let tx = write_tx(&mut conn)?;
        let now_text = ts(now);
        for (sha, doc) in &unit.documents {
            insert_document(&tx, sha, doc, unit.run_id, &now_text)?;
        }
        let mut applied = Vec::with_capacity(unit.items.len());
        for item in unit.items {
            applied.push(apply_item(&tx, item, rebuilder, unit.run_id, now)?);
        }
        if let Some(c) = &unit.cursor {
            tx.execute(
                "INSERT INTO cursors (source, watermark, updated_at, run_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source) DO UPDATE SET watermark = excluded.watermark,
                     updated_at = excluded.updated_at, run_id = excluded.run_id",
                params![c.source, ts(c.watermark), now_text, unit.run_id],
            )?;
        }
        tx.commit()?;
        Ok(applied)
    }

    pub fn records(&self, state: Option<&str>, limit: usize) -> Result<Vec<RecordRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT r.id, r.source_key, r.state, r.current_version, r.source_version, v.content, r.created_at, r.updated_at
             FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE ?1 IS NULL OR r.state = ?1
             ORDER BY r.updated_at DESC, r.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![state, limit as i64], |r| {
            let content: String = r.get(5)?;
            let value: serde_json::Value = serde_json::from_str(&content).unwrap_or_default();
            Ok(RecordRow {
                id: r.get(0)?,
                source_key: r.get(1)?,
                state: r.get(2)?,
                current_version: r.get(3)?,
                source_version: r.get(4)?,
                name: value["project"]["name"].as_str().unwrap_or_default().to_string(),
                district: value["site"]["district"].as_str().unwrap_or_default().to_string(),
                category: value["decisions"]["category"]["id"]
                    .as_str()
                    .or(value["decisions"]["category"]["state"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                created_at: r.get(6)?,
                updated_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn record_count(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))?)
    }

    /// A record's versions, oldest first; empty when there is no such record.
    pub fn record_versions(&self, id: &str) -> Result<Vec<VersionRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT version, change, content, content_sha256, lineage, source_version, document_sha256, created_at
             FROM record_versions WHERE record_id = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([id], |r| {
            let content: String = r.get(2)?;
            Ok(VersionRow {
                version: r.get(0)?,
                change: r.get(1)?,
                content: serde_json::from_str(&content).unwrap_or_default(),
                content_sha256: r.get(3)?,
                lineage: r.get(4)?,
                source_version: r.get(5)?,
                document_sha256: r.get(6)?,
                created_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every (record, version, content hash) in the store, for comparing two stores.
    pub fn fingerprint(&self) -> Result<Vec<(String, i64, String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT v.record_id, v.version, v.content_sha256, r.state FROM record_versions v
             JOIN records r ON r.id = v.record_id ORDER BY v.record_id, v.version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Every processed (source, key, version) with its outcome, for comparing two stores.
    pub fn processed(&self) -> Result<Vec<(String, String, i64, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, key, version, outcome FROM source_versions ORDER BY source, key, version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// A raw document's bytes and every fetch that returned them.
    pub fn document(&self, sha256: &str) -> Result<Option<(Vec<u8>, Vec<FetchMeta>)>> {
        let conn = self.lock();
        let Some(bytes) = conn
            .query_row(
                "SELECT bytes FROM raw_documents WHERE sha256 = ?1",
                [sha256],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT source, method, url, status, request_id, content_type, fetched_at FROM fetches
             WHERE sha256 = ?1 ORDER BY id",
        )?;
        let fetches = stmt
            .query_map([sha256], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let fetches = fetches
            .into_iter()
            .map(
                |(source, method, url, status, request_id, content_type, fetched_at)| {
                    Ok(FetchMeta {
                        source,
                        method,
                        url,
                        status: status as u16,
                        request_id,
                        content_type,
                        fetched_at: parse_ts(&fetched_at)?,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((bytes, fetches)))
    }

    pub fn failures(&self, state: Option<&str>, limit: usize) -> Result<Vec<FailureRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {FAILURE_COLUMNS} FROM failures WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![state, limit as i64], failure_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Open (held) failures, one per project: its newest failure and how many it has, newest
    /// first; and how many projects have open failures in all.
    pub fn open_failures_by_project(&self, limit: usize) -> Result<(Vec<(FailureRow, i64)>, i64)> {
        let conn = self.lock();
        let columns = FAILURE_COLUMNS
            .split(", ")
            .map(|c| format!("f.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn.prepare(&format!(
            "SELECT {columns}, c.n FROM failures f
             JOIN (SELECT max(id) AS id, count(*) AS n FROM failures WHERE state = 'held'
                   GROUP BY source, coalesce(key, '')) c ON c.id = f.id
             ORDER BY f.id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], |r| Ok((failure_row(r)?, r.get::<_, i64>(11)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM (SELECT 1 FROM failures WHERE state = 'held' GROUP BY source, coalesce(key, ''))",
            [],
            |r| r.get(0),
        )?;
        Ok((rows, total))
    }

    /// How many failures there are in a state (all states when `None`).
    pub fn failure_count(&self, state: Option<&str>) -> Result<i64> {
        Ok(self.lock().query_row(
            "SELECT count(*) FROM failures WHERE ?1 IS NULL OR state = ?1",
            [state],
            |r| r.get(0),
        )?)
    }

    pub fn failure(&self, id: i64) -> Result<Option<FailureRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id = ?1"),
                [id],
                failure_row,
            )
            .optional()?)
    }

    /// Outcome counts with their top reasons, over the given runs (all runs when empty).
    pub fn outcomes(&self, runs: &[i64]) -> Result<Vec<OutcomeCount>> {
        let conn = self.lock();
        let filter = if runs.is_empty() {
            String::new()
        } else {
            format!(
                "WHERE run_id IN ({})",
                runs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
            )
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT outcome, coalesce(detail, ''), count(*) FROM source_versions {filter}
             GROUP BY outcome, coalesce(detail, '') ORDER BY outcome, count(*) DESC"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out: Vec<OutcomeCount> = Vec::new();
        for (outcome, reason, count) in rows {
            if out.last().is_none_or(|o| o.outcome != outcome) {
                out.push(OutcomeCount {
                    outcome: outcome.clone(),
                    ..Default::default()
                });
            }
            if let Some(o) = out.last_mut() {
                o.count += count;
                if !reason.is_empty() && o.top_reasons.len() < 3 {
                    o.top_reasons.push((reason, count));
                }
            }
        }
        Ok(out)
    }
}

/// Active records whose current version has no materials check, or whose latest check
/// missed items before `?2`.
const NEEDS_MATERIALS: &str = "r.state = 'active' AND (
    NOT EXISTS (SELECT 1 FROM materials_checks m
                WHERE m.record_id = r.id AND m.record_version = r.current_version)
    OR EXISTS (SELECT 1 FROM materials_checks m
               WHERE m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = r.id)
                 AND m.zero_materials = 0 AND m.checked_at < ?2))";

const FAILURE_COLUMNS: &str =
    "id, source, key, version, step, field, reason, detail, document_sha256, state, created_at";

fn failure_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FailureRow> {
    let detail: Option<String> = r.get(7)?;
    Ok(FailureRow {
        id: r.get(0)?,
        source: r.get(1)?,
        key: r.get(2)?,
        version: r.get(3)?,
        step: r.get(4)?,
        field: r.get(5)?,
        reason: r.get(6)?,
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        document_sha256: r.get(8)?,
        state: r.get(9)?,
        created_at: r.get(10)?,
    })
}

fn insert_document(
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
fn mark_processed(
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
        Item::Held(held) => {
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
            insert_failure(tx, &held, run_id, now)?;
            Ok(Applied::Held)
        }
        Item::Record {
            key,
            document_sha256,
            draft,
        } => {
            if already_processed(tx, &key)? {
                return Ok(Applied::Duplicate);
            }
            match apply_record(tx, &key, &document_sha256, *draft, rebuilder, run_id, now_at)? {
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
                        document_sha256: Some(document_sha256.clone()),
                    };
                    mark_processed(
                        tx,
                        &key,
                        Applied::Held,
                        Some(&held.category),
                        Some(&document_sha256),
                        None,
                        run_id,
                        now,
                    )?;
                    insert_failure(tx, &held, run_id, now)?;
                    Ok(Applied::Held)
                }
            }
        }
    }
}

/// Commits a source version of a record: the record is rebuilt from the draft and the actions
/// stored now, and gets a new version when its content changed; the source version is marked
/// processed (replacing an earlier outcome, as a replay of a held version does). The inner
/// error is a record that cannot be decided (no policy for its day); nothing was written then.
fn apply_record(
    tx: &rusqlite::Transaction<'_>,
    key: &SourceKey,
    document_sha256: &str,
    draft: Draft,
    rebuilder: &Rebuilder,
    run_id: Option<i64>,
    now_at: DateTime<Utc>,
) -> Result<std::result::Result<Applied, crate::policy::PolicyError>> {
    let now_text = ts(now_at);
    let now = now_text.as_str();
    let stored = current_of(tx, &draft.id)?;
    let actions = if stored.is_some() {
        actions_of(tx, &draft.id)?
    } else {
        Vec::new()
    };
    let candidate = match rebuilder.candidate(draft, stored.as_ref().map(|c| &c.existing), &actions, now_at) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let current = stored.map(|c| (c.version, c.source_version, c.content_sha256, c.state));
    let state = candidate.record.project.status;
    let outcome = match &current {
        Some((_, source_version, _, _)) if *source_version > key.version => Applied::Stale,
        Some((_, _, sha, _)) if *sha == candidate.content_sha256 => Applied::Unchanged,
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
                    .execute(params![candidate.id, key.source, key.key, state.as_str(), version, key.version, now])?;
            tx.prepare_cached(
                "INSERT INTO record_versions (record_id, version, change, content, content_sha256, lineage,
                             source_version, document_sha256, created_at, run_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                run_id
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
        Some((&candidate.id, record_version)),
        run_id,
        now,
    )?;
    // A version that maps cleanly supersedes the held failures of older versions.
    tx.prepare_cached(
        "UPDATE failures SET state = 'superseded'
                 WHERE source = ?1 AND key = ?2 AND version < ?3 AND state = 'held'",
    )?
    .execute(params![key.source, key.key, key.version])?;
    Ok(Ok(outcome))
}

/// A record's current version as a rebuild needs it.
struct Current {
    version: i64,
    source_version: i64,
    content_sha256: String,
    document_sha256: String,
    state: String,
    existing: Existing,
}

fn current_of(conn: &Connection, id: &str) -> Result<Option<Current>> {
    let row = conn
        .prepare_cached(
            "SELECT r.current_version, r.source_version, v.content_sha256, v.document_sha256, r.state, r.created_at,
                    json_extract(v.content, '$.decisions.customer_manager')
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
            ))
        })
        .optional()?;
    let Some((version, source_version, content_sha256, document_sha256, state, created, manager)) = row
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
    }))
}

/// The operator actions on a record, oldest first.
fn actions_of(conn: &Connection, record_id: &str) -> Result<Vec<crate::stages::OperatorAction>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, action, at, by, override_reason FROM operator_actions WHERE record_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([record_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, action, at, by, override_reason)| {
            Ok(crate::stages::OperatorAction {
                id,
                action: serde_json::from_str(&action)
                    .map_err(|e| StoreError::Corrupt(format!("operator action {id}: {e}")))?,
                at: parse_ts(&at)?,
                by,
                override_reason,
            })
        })
        .collect()
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

fn insert_failure(tx: &rusqlite::Transaction<'_>, held: &Held, run_id: Option<i64>, now: &str) -> Result<()> {
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
        "INSERT OR IGNORE INTO failures (fingerprint, source, key, version, step, field, reason, detail, document_sha256, run_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
        now
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        (dir, store)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn many_processes_opening_a_new_database_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Store::open(&path).map(|s| s.record_count()))
            })
            .collect();
        for o in opened {
            assert_eq!(o.join().unwrap().unwrap().unwrap(), 0);
        }
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_database_from_a_newer_gateway_is_refused() {
        let (dir, store) = new_store();
        drop(store);
        let path = dir.path().join("g.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }

    #[test]
    fn a_unit_replayed_changes_nothing_and_a_held_item_is_held_once() {
        let (_dir, store) = new_store();
        let rebuilder = Rebuilder::new(
            crate::mapping::MappingSet::load(None)
                .unwrap()
                .get(crate::app::PROJECT_MAPPING)
                .unwrap(),
            std::sync::Arc::new(crate::policy::Rules::load(None).unwrap()),
        );
        let held = |version| Held {
            source: "approval".into(),
            key: Some("P-1".into()),
            version: Some(version),
            step: "map".into(),
            field: Some("building.floor_area_m2".into()),
            reason: "non_negative: -5 is negative".into(),
            category: "building.floor_area_m2: non_negative".into(),
            detail: None,
            document_sha256: None,
        };
        let unit = |version| UnitOfWork {
            run_id: None,
            documents: Vec::new(),
            items: vec![Item::Held(held(version))],
            cursor: Some(CursorMove {
                source: "approval".into(),
                watermark: at("2026-11-20T04:00:00Z"),
            }),
        };
        let now = at("2026-11-20T05:00:00Z");
        assert_eq!(store.commit(unit(3), now, &rebuilder).unwrap(), [Applied::Held]);
        assert_eq!(
            store.commit(unit(3), now, &rebuilder).unwrap(),
            [Applied::Duplicate]
        );
        assert_eq!(store.failure_count(Some("held")).unwrap(), 1);
        assert_eq!(
            store.cursor("approval").unwrap(),
            Some(at("2026-11-20T04:00:00Z"))
        );
        // A newer version, held too, supersedes the older one.
        store.commit(unit(4), now, &rebuilder).unwrap();
        let f = store.failures(None, 10).unwrap();
        let state = |v| f.iter().find(|x| x.version == Some(v)).unwrap().state.clone();
        assert_eq!((state(3).as_str(), state(4).as_str()), ("superseded", "held"));
        let (open, total) = store.open_failures_by_project(10).unwrap();
        assert_eq!((open.len(), total, open[0].1), (1, 1, 1));
    }

    #[test]
    fn passes_left_running_are_closed_as_interrupted() {
        let (_dir, store) = new_store();
        let run = store.begin_run(at("2026-11-20T04:00:00Z")).unwrap();
        assert_eq!(store.runs(1).unwrap()[0].outcome, "running");
        assert_eq!(store.close_abandoned_runs(at("2026-11-20T05:00:00Z")).unwrap(), 1);
        let row = &store.runs(1).unwrap()[0];
        assert_eq!((row.id, row.outcome.as_str()), (run, "interrupted"));
        assert_eq!(store.close_abandoned_runs(at("2026-11-20T06:00:00Z")).unwrap(), 0);
    }
}
