//! The audit log's signing key: from `GATEWAY_AUDIT_KEY`, else from a file only the gateway's
//! user can read (`[audit] key_file`, by default beside the database), made there at the
//! writer's first start as an SSH host key is. Its public half (`gateway audit key`) is what
//! auditors check checkpoints and evidence packages with.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::AuditConfig;
use crate::tlog::checkpoint::{CheckpointError, Signer};

/// The environment variable that holds the private key text, instead of a file.
pub const KEY_ENV: &str = "GATEWAY_AUDIT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{KEY_ENV}: {0}")]
    Env(CheckpointError),
    #[error("audit key {path}: {why}")]
    File { path: String, why: String },
}

/// The key file of a database when `[audit] key_file` is not set: `<database>.audit-key`.
pub fn default_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".audit-key");
    db.with_file_name(name)
}

/// Where the key is: the environment, or the file.
pub fn location(cfg: &AuditConfig, db: &Path) -> String {
    if std::env::var_os(KEY_ENV).is_some() {
        KEY_ENV.to_string()
    } else {
        key_path(cfg, db).display().to_string()
    }
}

fn key_path(cfg: &AuditConfig, db: &Path) -> PathBuf {
    cfg.key_file.clone().unwrap_or_else(|| default_path(db))
}

/// How [`load`] treats a key file that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Make one (the writer, and `gateway audit key`).
    Create,
    /// Go on without a key (a command run by someone who cannot read it).
    Skip,
}

/// The signing key. With [`Missing::Skip`], a key file that is absent or unreadable gives
/// `None`; a key file that others can read is refused either way.
pub fn load(cfg: &AuditConfig, db: &Path, missing: Missing) -> Result<Option<Signer>, KeyError> {
    if let Ok(text) = std::env::var(KEY_ENV) {
        return Signer::from_private_text(&text).map(Some).map_err(KeyError::Env);
    }
    let path = key_path(cfg, db);
    let err = |why: String| KeyError::File {
        path: path.display().to_string(),
        why,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if crate::store::readable_by_others(&path) {
                return Err(err(
                    "other users can read it: chmod 600 it (and consider the key disclosed)".into(),
                ));
            }
            Signer::from_private_text(&text)
                .map(Some)
                .map_err(|e| err(e.to_string()))
        }
        Err(e) if missing == Missing::Skip => {
            tracing::debug!(path = %path.display(), error = %e, "no audit key: checkpoints are signed by the next writer that has it");
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = Signer::generate(&cfg.origin, cfg.algorithm).map_err(|e| err(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::store::private_dir(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut file =
                crate::store::private_file_options(std::fs::OpenOptions::new().write(true).create_new(true))
                    .open(&path)
                    .map_err(|e| err(e.to_string()))?;
            file.write_all(format!("{}\n", signer.private_text()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            crate::events::InternalEvent::emit(crate::events::AuditKeyMade {
                path: &path,
                public: &signer.verifier().to_text(),
            });
            Ok(Some(signer))
        }
        Err(e) => Err(err(e.to_string())),
    }
}
