//! The one embedded store: SQLite in WAL mode. All state lives here and nothing else in the
//! code touches the database.
//!
//! Writes happen in units of work ([`UnitOfWork`]): the raw documents, record versions,
//! lineage, failures and cursor move of one unit are committed in one transaction, so a crash
//! at any instant leaves either all of a unit or none of it. Processing is idempotent on
//! (source, key, version): a unit replayed after a crash changes nothing that is already there.
//!
//! Along the flow: `open.rs` (creating, checking and migrating the database), `commit.rs` (what
//! the sync commits), `versions.rs` (record versions rebuilt or decided ahead, written against
//! the one stored), `actions.rs` (operator actions, replays, alerts), `materials.rs` (the
//! zero-materials check's state), `queries.rs` (reads), `audit.rs` (the hash-chained log),
//! `lock.rs` (one writer per database), `blocking.rs` (the way in from async code).

mod actions;
pub mod audit;
pub mod backup;
mod blocking;
mod commit;
pub mod coverage;
pub mod lock;
mod materials;
mod open;
mod outbox;
mod power;
mod queries;
mod remap;
mod reports;
pub mod schema;
pub mod tlog;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shuiwu_wire::{FetchMeta, RawDocument};

use crate::mapping::MappingSet;
use crate::policy::PolicySet;
use crate::rebuild::{Existing, Prepared, Rebuilder};
use crate::record::{Assembled, Draft, RecordState};

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
pub use open::{APPLICATION_ID, readable_by_others};
pub(crate) use open::{private_dir, private_file_options};
pub use outbox::{CallKind, DeliveryResult, OutboxCall};
pub use power::{JointApplication, ListingCursor};
pub use queries::{LastRun, PowerOriginCounts, Sample};
pub use remap::{BatchCounts, RemapInput, RemapRun, RemapSelection, Remapped, RulesInUse};

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
    /// A new project's record version decided ahead ([`Prepared`]); rebuilt in the
    /// transaction instead if the record is stored by then.
    Prepared {
        key: SourceKey,
        document_sha256: String,
        prepared: Box<Prepared>,
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

/// A listing window read completely, for the coverage ledger: `[start, end)`, and each page
/// read with the listing total the platform gave with it.
#[derive(Debug, Clone)]
pub struct CoveredWindow {
    pub source: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub pages: Vec<(String, u64)>,
}

/// Everything one unit of work commits at once.
#[derive(Debug, Default)]
pub struct UnitOfWork {
    pub run_id: Option<i64>,
    pub documents: Vec<(String, RawDocument)>,
    pub items: Vec<Item>,
    pub cursor: Option<CursorMove>,
    /// The windows whose last page this unit holds and that were read completely.
    pub covered: Vec<CoveredWindow>,
}

impl UnitOfWork {
    /// Appends a later unit of the same run: its documents and items after these, and its
    /// cursor move, if it has one, in place of this one's (a later move is never behind an
    /// earlier one). Committing the joined unit is committing both, in order, at once.
    pub fn append(&mut self, later: UnitOfWork) {
        self.documents.extend(later.documents);
        self.items.extend(later.items);
        self.covered.extend(later.covered);
        if later.cursor.is_some() {
            self.cursor = later.cursor;
        }
        if self.run_id.is_none() {
            self.run_id = later.run_id;
        }
    }
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
    /// What kind of problem (`building.floor_area_m2: non_negative`, `power: probable
    /// duplicate`): what bulk replays and counts go by.
    pub category: String,
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
    /// The joint exchange with the power side is configured: record changes plan their calls
    /// into the outbox.
    joint: std::sync::atomic::AtomicBool,
    /// The key checkpoints of the audit log are signed with at the end of each write
    /// transaction; without one, entries are logged and the next signed commit covers them.
    signer: std::sync::OnceLock<crate::tlog::checkpoint::Signer>,
    /// The rows the writer's connection changed in the transaction in progress, written down
    /// by SQLite's pre-update hook (`tlog::capture`).
    captured: tlog::Captured,
}

impl Store {
    /// Turns on the planning of calls to the power side (a `[power]` section is configured).
    /// Off, nothing is written to the outbox and nothing is ever sent.
    pub fn set_joint(&self, on: bool) {
        self.joint.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn joint(&self) -> bool {
        self.joint.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether an item is a record's version, and which record's.
fn record_of(item: &Item) -> Option<&str> {
    match item {
        Item::Record { draft, .. } => Some(&draft.id),
        Item::Prepared { prepared, .. } => Some(&prepared.id),
        Item::Skipped { .. } | Item::Held(_) => None,
    }
}

/// A record has a new version: what it means for the power side is planned in the same
/// transaction.
fn changed(applied: Applied) -> bool {
    matches!(applied, Applied::Created | Applied::Updated | Applied::Withdrawn)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An instant as the store writes it (RFC 3339, milliseconds, UTC).
pub fn ts_text(t: DateTime<Utc>) -> String {
    ts(t)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

/// A write transaction whose commit first logs every row it changed (`tlog::seal`) and signs
/// a checkpoint: no change is committed without its audit log entries.
pub(crate) struct WriteTx<'a> {
    tx: Transaction<'a>,
    signer: Option<&'a crate::tlog::checkpoint::Signer>,
    captured: &'a tlog::Captured,
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl WriteTx<'_> {
    pub(crate) fn commit(self) -> Result<()> {
        let changes = std::mem::take(&mut *self.captured.lock().unwrap_or_else(|e| e.into_inner()));
        tlog::seal(&self.tx, self.signer, changes)?;
        self.tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// A write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`): what it
    /// reads cannot be changed by another writer before it commits, and it waits (busy timeout)
    /// instead of failing when another writer holds the lock.
    fn write_tx<'a>(&'a self, conn: &'a mut Connection) -> Result<WriteTx<'a>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // What a transaction that failed before its commit captured was rolled back with it.
        self.captured.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(WriteTx {
            tx,
            signer: self.signer.get(),
            captured: &self.captured,
        })
    }

    /// Signs the audit log's checkpoints with `signer` from now on, and signs one of the log
    /// as it stands. The log's tree hash becomes the key's (SM3 for SM2) if no checkpoint was
    /// signed yet; after one, a key of the other kind is refused. A store has one key for its
    /// life.
    pub fn set_signer(&self, signer: crate::tlog::checkpoint::Signer) -> Result<()> {
        let mut conn = self.lock();
        // Every command that can read the key opens the store with it: when the log is
        // hashed as the key signs and signed to its end, there is nothing to write.
        let head = tlog::Head::read(&conn)?;
        let signed = tlog::latest_checkpoint(&conn)?.map(|(size, _)| size);
        if head.tree != signer.algorithm().tree_hash() || signed != Some(head.size()) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tlog::use_tree_hash(&tx, signer.algorithm().tree_hash())?;
            let mut head = tlog::Head::read(&tx)?;
            tlog::sign(&tx, &mut head, &signer)?;
            tx.commit()?;
        }
        drop(conn);
        self.signer
            .set(signer)
            .map_err(|_| StoreError::Refused("the store has a signing key already".into()))
    }
}

/// SHA-256 of raw bytes, lower-case hex: the address of a raw document.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
        (dir, store)
    }

    /// The embedded project mapping and rules.
    fn embedded_rebuilder() -> Rebuilder {
        Rebuilder::new(
            crate::mapping::MappingSet::load(None)
                .unwrap()
                .get(crate::app::PROJECT_MAPPING)
                .unwrap(),
            std::sync::Arc::new(crate::policy::Rules::load(None).unwrap()),
        )
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
        let rebuilder = embedded_rebuilder();
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
            covered: Vec::new(),
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

    /// A version decided ahead on a detail task is written as it is only for a record still
    /// not stored under the policy that decided it; otherwise the transaction maps the stored
    /// document again and rebuilds the record, as for any version.
    #[test]
    fn a_database_that_read_the_power_side_plans_joint_calls_in_every_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = Store::open(&path).unwrap();
        assert!(!store.joint(), "a new database plans nothing");
        let now = at("2026-11-20T05:00:00Z");
        let page = RawDocument {
            bytes: br#"{"items":[],"nextCursor":null}"#.as_slice().into(),
            meta: FetchMeta {
                source: "power".into(),
                method: "GET".into(),
                url: "http://127.0.0.1/api/joint/v2/applications".into(),
                status: 200,
                request_id: None,
                content_type: Some("application/json".into()),
                fetched_at: now,
            },
        };
        store
            .land_power_page(
                &[],
                &[],
                &page,
                ListingCursor {
                    watermark: Some(now),
                    read_from: None,
                },
                &embedded_rebuilder(),
                now,
            )
            .unwrap();
        drop(store);
        // An operator's command opens it without the configuration: the flag is in the data.
        assert!(Store::open(&path).unwrap().joint());
    }

    #[test]
    fn a_version_decided_ahead_is_rebuilt_when_its_assumptions_no_longer_hold() {
        let (_dir, store) = new_store();
        let rebuilder = embedded_rebuilder();
        let text = include_str!("../../fixtures/approval/contract-example.json");
        let body = format!("{{\"data\": {text}}}");
        let now = at("2026-11-20T05:00:00Z");
        let sha = sha256_hex(body.as_bytes());
        let doc = RawDocument {
            bytes: body.as_bytes().into(),
            meta: FetchMeta {
                source: "approval".into(),
                method: "POST".into(),
                url: "http://127.0.0.1/detail".into(),
                status: 200,
                request_id: None,
                content_type: Some("application/json".into()),
                fetched_at: now,
            },
        };
        let today = crate::worktime::date_of(now);
        let draft = || match rebuilder.assemble_bytes(body.as_bytes(), &sha, today).unwrap() {
            Assembled::Record(d) => d,
            Assembled::Skip(why) => panic!("skipped: {why}"),
        };
        let id = draft().id.clone();
        // Marked, so that the test sees whether the prepared form was written.
        let marked = || {
            let mut p = rebuilder.prepare(*draft(), today, now).unwrap();
            p.content_sha256 = "decided-ahead".into();
            p
        };
        let key = |version| SourceKey {
            source: "approval".into(),
            key: format!("K-{version}"),
            version,
        };
        let unit = |version, prepared: Prepared| UnitOfWork {
            run_id: None,
            documents: vec![(sha.clone(), doc.clone())],
            items: vec![Item::Prepared {
                key: key(version),
                document_sha256: sha.clone(),
                prepared: Box::new(prepared),
            }],
            cursor: None,
            covered: Vec::new(),
        };
        let stored_sha = |s: &Store| -> String {
            s.lock()
                .query_row(
                    "SELECT v.content_sha256 FROM records r JOIN record_versions v
                     ON v.record_id = r.id AND v.version = r.current_version WHERE r.id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .unwrap()
        };

        // Decided under another policy than the one in force at the commit: rebuilt.
        let mut other_policy = marked();
        other_policy.rules.policy_sha256 = "another policy".into();
        assert_eq!(
            store.commit(unit(1, other_policy), now, &rebuilder).unwrap(),
            [Applied::Created]
        );
        let built = stored_sha(&store);
        assert_ne!(built, "decided-ahead");
        assert_eq!(
            built,
            rebuilder.prepare(*draft(), today, now).unwrap().content_sha256
        );

        // The record is stored by now: the version is rebuilt against it (same document,
        // same content: unchanged), never written as a new record's.
        assert_eq!(
            store.commit(unit(2, marked()), now, &rebuilder).unwrap(),
            [Applied::Unchanged]
        );
        assert_eq!(stored_sha(&store), built);

        // Still new and the same policy: written as decided (the marked hash shows it).
        store
            .lock()
            .execute_batch("DELETE FROM source_versions; DELETE FROM record_versions; DELETE FROM report_lines; DELETE FROM records;")
            .unwrap();
        assert_eq!(
            store.commit(unit(3, marked()), now, &rebuilder).unwrap(),
            [Applied::Created]
        );
        assert_eq!(stored_sha(&store), "decided-ahead");
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
