//! `gateway backup FILE` and `gateway restore FILE`: a consistent copy taken while the daemon
//! runs, checked before it is called good; put back only while no gateway writes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;

use crate::store::Store;
use crate::store::backup::{BackupCheck, check_backup, restore};
use crate::store::lock::WriterLock;

fn describe(c: &BackupCheck) -> String {
    format!(
        "{} ({} bytes, sha256:{}): schema {}, {} records in {} versions, {} raw documents, audit log intact ({} entries)",
        c.file,
        c.bytes,
        c.sha256,
        c.schema_version,
        c.records,
        c.record_versions,
        c.raw_documents,
        c.audit_entries
    )
}

/// `gateway backup FILE`: the copy, its check, and an audit entry in the database it was taken
/// from.
pub fn backup(store: &Store, file: &Path, by: &str, json: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let checked = store
        .backup(file)
        .with_context(|| format!("backing up {} to {}", store.path().display(), file.display()))?;
    let detail = serde_json::json!({
        "file": checked.file, "sha256": checked.sha256, "bytes": checked.bytes,
        "records": checked.records, "audit_entries": checked.audit_entries,
    });
    store.audit_event(by, "backup_taken", &checked.file, &detail.to_string(), Utc::now())?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&checked)?);
    } else {
        outln!(
            "backup written and checked in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            describe(&checked)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `gateway restore FILE`: refused while a gateway holds the database; the database replaced
/// is kept beside it.
pub fn restore_into(config: &Path, db: &Path, file: &Path, by: &str, json: bool) -> anyhow::Result<ExitCode> {
    // Checked before the lock is even asked for: a bad backup is refused whatever runs.
    check_backup(file)?;
    let now = Utc::now();
    let lock = WriterLock::acquire(db, &shuiwu_wire::format_beijing(now))?;
    let suffix = now.format("%Y%m%dT%H%M%SZ").to_string();
    let restored = restore(file, db, &suffix)?;
    // Opened as the gateway opens it: a backup from an older gateway is migrated now.
    let store = super::open_store(config, Some(db))?;
    let detail = serde_json::json!({
        "file": restored.backup.file, "sha256": restored.backup.sha256,
        "previous": restored.previous,
    });
    store.audit_event(
        by,
        "restored",
        &db.display().to_string(),
        &detail.to_string(),
        Utc::now(),
    )?;
    drop(lock);
    if json {
        outln!("{}", serde_json::to_string_pretty(&restored)?);
    } else {
        outln!("restored {}", describe(&restored.backup));
        match &restored.previous {
            Some(p) => outln!("the database it replaced is kept as {p} (with its -wal and -shm, if any)"),
            None => outln!("(there was no database at {} before)", db.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
