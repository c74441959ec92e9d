//! Backups and restores of the database, safe while the daemon runs.
//!
//! A backup is SQLite's `VACUUM INTO`, read in one transaction of its own: a consistent copy of
//! the database as of one moment, whatever the daemon commits meanwhile (a file copy of a
//! database in WAL mode is not one: the WAL holds what the main file does not). The copy is then
//! checked as a restore would check it — SQLite's full integrity check, the gateway's
//! application id, a schema this gateway knows, and the audit chain verified to its head — so a
//! backup that is reported good can be restored.
//!
//! A restore needs the writer lock: it is refused while a gateway writes to the database. The
//! database it replaces (with its `-wal` and `-shm` files) is kept beside it, renamed, never
//! deleted; the backup is copied in under a temporary name and renamed into place, so the
//! database path never holds half a file.

use std::path::{Path, PathBuf};

use rusqlite::OpenFlags;

use super::*;

/// What checking a backup found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupCheck {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub schema_version: i64,
    pub records: i64,
    pub record_versions: i64,
    pub raw_documents: i64,
    pub audit_entries: i64,
}

impl Store {
    /// Writes a consistent copy of the database to `dest` (a new file, private to the gateway's
    /// user) and checks it.
    pub fn backup(&self, dest: &Path) -> Result<BackupCheck> {
        let io = |e: std::io::Error| StoreError::Io {
            path: dest.display().to_string(),
            source: e,
        };
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(io)?;
        }
        // Created empty and private first: VACUUM INTO fills an empty file, and would create a
        // missing one with the umask's permissions — a copy of personal data readable by all.
        match private_file_options(std::fs::OpenOptions::new().write(true).create_new(true)).open(dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Refused(format!(
                    "{} exists: a backup is written to a new file",
                    dest.display()
                )));
            }
            Err(e) => return Err(io(e)),
        }
        let target = dest
            .to_str()
            .ok_or_else(|| StoreError::Refused(format!("{} is not a UTF-8 path", dest.display())))?;
        // A connection of its own (the store's reader is query-only, which VACUUM INTO's
        // output counts against); it reads the source in one transaction and writes nothing to
        // it.
        let written = Connection::open(&self.path).and_then(|c| {
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.execute("VACUUM INTO ?1", [target])
        });
        if let Err(e) = written {
            // Nothing half-written is left behind to be mistaken for a backup.
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        check_backup(dest)
    }
}

/// Checks a backup file as a restore needs it: readable, sound, the gateway's, a schema this
/// gateway knows, its audit chain intact to its head. Opened read-only: checking changes
/// nothing in it.
pub fn check_backup(path: &Path) -> Result<BackupCheck> {
    let bad = |why: String| StoreError::Refused(format!("{} is not a usable backup: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| StoreError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(e.to_string()))?;
    let id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if id != APPLICATION_ID {
        return Err(bad(format!(
            "its application id is {id:#x}, not a gateway database"
        )));
    }
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<Vec<String>, _>>()?
        .into_iter()
        .filter(|p| p != "ok")
        .collect();
    if !problems.is_empty() {
        return Err(bad(format!(
            "PRAGMA integrity_check: {}",
            problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        )));
    }
    let schema_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = schema::MIGRATIONS.len() as i64;
    if schema_version > known {
        return Err(bad(format!(
            "it was written by a newer gateway (schema {schema_version}; this one knows {known})"
        )));
    }
    let verification = audit::verify(&audit::entries(&conn)?, audit::head(&conn)?.as_ref());
    if let Some((seq, why)) = verification.broken_at {
        return Err(bad(format!("its audit log breaks at entry {seq}: {why}")));
    }
    let count = |table: &str| -> Result<i64> {
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    Ok(BackupCheck {
        file: path.display().to_string(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        schema_version,
        records: count("records")?,
        record_versions: count("record_versions")?,
        raw_documents: count("raw_documents")?,
        audit_entries: verification.entries,
    })
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub backup: BackupCheck,
    /// Where the database that was replaced is kept (with its `-wal` and `-shm`), if there was
    /// one.
    pub previous: Option<String>,
}

/// Puts a checked backup in place of the database at `db`. The caller holds the writer lock.
/// `suffix` names the kept previous files (`<db>.before-restore-<suffix>`).
pub fn restore(backup: &Path, db: &Path, suffix: &str) -> Result<Restored> {
    let checked = check_backup(backup)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| StoreError::Io { path, source: e }
    };
    let with_suffix = |p: &Path, s: &str| {
        let mut name = p.as_os_str().to_owned();
        name.push(s);
        PathBuf::from(name)
    };
    // The backup's bytes under a temporary name beside the database, private, synced.
    let incoming = with_suffix(db, ".restoring");
    let _ = std::fs::remove_file(&incoming);
    {
        use std::io::Write;
        let mut file = private_file_options(std::fs::OpenOptions::new().write(true).create_new(true))
            .open(&incoming)
            .map_err(io(&incoming))?;
        let bytes = std::fs::read(backup).map_err(io(backup))?;
        if sha256_hex(&bytes) != checked.sha256 {
            let _ = std::fs::remove_file(&incoming);
            return Err(StoreError::Refused(format!(
                "{} changed while it was being restored",
                backup.display()
            )));
        }
        file.write_all(&bytes).map_err(io(&incoming))?;
        file.sync_all().map_err(io(&incoming))?;
    }
    // The database being replaced, its WAL and shared memory moved aside together: a WAL left
    // beside the restored file would be replayed into it.
    let previous = if db.exists() {
        let kept = with_suffix(db, &format!(".before-restore-{suffix}"));
        for part in ["", "-wal", "-shm"] {
            let from = with_suffix(db, part);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&kept, part)).map_err(io(&from))?;
            }
        }
        Some(kept.display().to_string())
    } else {
        None
    };
    std::fs::rename(&incoming, db).map_err(io(db))?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        // The renames themselves survive a power cut.
        let _ = d.sync_all();
    }
    Ok(Restored {
        backup: checked,
        previous,
    })
}
