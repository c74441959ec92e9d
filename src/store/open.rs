//! Opening the database: creating it private, refusing another program's file, migrating the
//! schema once, and the connection settings every later step relies on.

use super::*;

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
        // Only the process that creates the file sets its mode; another one creating it at the
        // same moment finds it there.
        match private_file_options(std::fs::OpenOptions::new().write(true).create_new(true)).open(path) {
            Ok(_) => {
                // The mode given at creation is filtered by the umask; this is not.
                #[cfg(unix)]
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(io_err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        stable_plans(&conn).map_err(open_err)?;
        super::tlog::register(&conn).map_err(open_err)?;
        check_application(&conn, path)?;
        // 8 KiB pages for a new database (an existing one keeps its size; this only takes
        // effect before the first table): a record version with its lineage is about 9 KB,
        // which 4 KiB pages split over a leaf and two overflow pages. In side-by-side runs a
        // backfill used about 7 % less CPU at 10,000 projects and 16 % less at 100,000.
        conn.pragma_update(None, "page_size", 8192).map_err(open_err)?;
        // WAL: readers (CLI commands) never block the daemon's writer, and a commit survives a
        // killed process. synchronous=FULL: it survives a power cut too.
        enable_wal(&conn).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        // Checkpoint every 16 MiB of WAL instead of SQLite's 1,000 pages: a backfill commits
        // megabytes at a time, and each checkpoint copies the hot index pages again and syncs
        // the database file (a tenth of a backfill's CPU at 1,000 pages of 4 KiB). Readers are
        // not slowed: the WAL index stays small at this size.
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", (16 << 20) / page_size.max(512))
            .map_err(open_err)?;
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
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = version(&tx)?;
            if found > known {
                return Err(too_new(found));
            }
            for (i, migration) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.execute_batch(migration)?;
                if i + 1 == schema::REPORT_LINES {
                    super::reports::fill_lines(&tx)?;
                }
                if i + 1 == schema::TLOG {
                    super::tlog::adopt(&tx)?;
                }
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            }
            tx.commit()?;
        }
        let reader = Connection::open(path).map_err(open_err)?;
        reader.pragma_update(None, "query_only", "ON").map_err(open_err)?;
        super::tlog::register(&reader).map_err(open_err)?;
        stable_plans(&reader).map_err(open_err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // A database the power side's listing was ever read into has the joint exchange: record
        // changes plan their calls whichever process makes them (an operator's replay too).
        let joint: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM cursors WHERE source = 'power')",
                [],
                |r| r.get(0),
            )
            .map_err(open_err)?;
        let captured = super::tlog::Captured::default();
        super::tlog::install_capture(&mut conn, captured.clone())?;
        Ok(Store {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
            joint: std::sync::atomic::AtomicBool::new(joint),
            signer: std::sync::OnceLock::new(),
            captured,
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

    pub(super) fn read(&self) -> MutexGuard<'_, Connection> {
        blocking::check_not_async();
        // As for `lock`: a read-only connection stays usable after a panic.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        blocking::check_not_async();
        // A panic while holding the connection leaves no transaction open (rusqlite rolls back
        // on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    // One read transaction: the id, version and schema are read from one state of the file.
    // Read one by one, another process's migration could commit in between, and a database
    // seen with no version but a full schema would look like another program's.
    let tx = conn.unchecked_transaction()?;
    let id: i32 = tx
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(not_ours(format!("its application id is {id:#x}")));
    }
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    let ours: i64 = tx.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('records', 'cursors', 'source_versions')",
        [],
        |r| r.get(0),
    )?;
    match (version, tables) {
        (0, 0) => Ok(()),
        (v, _) if v > 0 && ours == 3 => {
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
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

/// How long a connection waits for another one's lock before it gives up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Switches the database to WAL. Processes opening a new database at the same moment race to
/// write its first page, and SQLite answers the losers `SQLITE_BUSY` at once (the busy handler
/// is not consulted for this switch); the switch is retried for as long as the busy timeout
/// would have waited.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}
