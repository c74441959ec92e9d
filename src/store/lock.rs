//! One writer per database: `gateway run` and `gateway sync --once` hold an exclusive lock on
//! `<database>.lock` for as long as they run.
//!
//! The lock is the operating system's (`flock` through [`std::fs::File::try_lock`]), not the
//! file's existence: a process that dies, however it dies, releases it, so a crash never leaves
//! a stale lock behind. The file's content (pid, host, since when) only tells a refused second
//! writer who holds it. Inspection commands do not take the lock: SQLite's WAL lets them read
//! beside the writer, and their own writes (operator actions) are short transactions.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Who holds the writer lock, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub host: Option<String>,
    pub since: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.pid.map_or("unknown".to_string(), |p| p.to_string());
        let host = self.host.as_deref().unwrap_or("unknown");
        write!(f, "pid {pid} on host {host}")?;
        if let Some(since) = &self.since {
            write!(f, ", since {since}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another gateway is writing to {db}: {holder} (stop it, or point this one at another database)")]
    Held { db: String, holder: Holder },
    #[error("lock file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The exclusive right to write a database; released when dropped or when the process ends.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// The lock file that guards `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock or says who holds it. Never waits.
    pub fn acquire(db: &Path, now: &str) -> Result<WriterLock, LockError> {
        Self::acquire_file(Self::path_for(db), db, now)
    }

    /// Takes a lock of its own for one kind of long job on `db` (`<db>.<job>.lock`), which
    /// must not run twice at once but may run beside the writer: a remap.
    pub fn acquire_job(db: &Path, job: &str, now: &str) -> Result<WriterLock, LockError> {
        let mut name = db.as_os_str().to_owned();
        name.push(format!(".{job}.lock"));
        Self::acquire_file(PathBuf::from(name), db, now)
    }

    fn acquire_file(path: PathBuf, db: &Path, now: &str) -> Result<WriterLock, LockError> {
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::private_dir(dir).map_err(io)?;
        }
        let mut file = super::private_file_options(OpenOptions::new().read(true).write(true).create(true))
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be writing its line right now; an unreadable content only
                // means the message names less.
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    db: db.display().to_string(),
                    holder: parse_holder(&text),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let line = format!("pid={} host={} since={now}\n", std::process::id(), hostname());
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(WriterLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse_holder(text: &str) -> Holder {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    Holder {
        pid: field("pid").and_then(|p| p.parse().ok()),
        host: field("host"),
        since: field("since"),
    }
}

/// This machine's name, for telling an operator where the other writer runs.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_and_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let first = WriterLock::acquire(&db, "2026-12-01T12:00:00+08:00").unwrap();
        match WriterLock::acquire(&db, "later") {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert_eq!(holder.host.as_deref(), Some(hostname().as_str()));
                assert_eq!(holder.since.as_deref(), Some("2026-12-01T12:00:00+08:00"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        WriterLock::acquire(&db, "later").unwrap();
    }

    #[test]
    fn holder_text_that_is_damaged_still_gives_a_message() {
        let h = parse_holder("garbage");
        assert_eq!(h.pid, None);
        assert_eq!(h.to_string(), "pid unknown on host unknown");
    }
}
