//! The audit log: append-only and hash-chained. Each entry's hash covers its content and the
//! previous entry's hash, so editing, deleting or reordering any entry breaks the chain from
//! there on, and [`verify`] says where.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Result;

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

fn hash_of(prev: &str, seq: i64, at: &str, actor: &str, action: &str, subject: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, actor, action, subject, detail] {
        // Length-prefixed, so no two different entries hash the same text.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends an entry inside the caller's transaction.
pub fn append(
    tx: &Transaction<'_>,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<i64> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let hash = hash_of(&prev, seq, at, actor, action, subject, detail);
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, at, actor, action, subject, detail, prev, hash],
    )?;
    Ok(seq)
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub entries: i64,
    /// The first entry where the chain breaks, and why.
    pub broken_at: Option<(i64, String)>,
}

/// Recomputes the whole chain.
pub fn verify(entries: &[Entry]) -> Verification {
    let mut prev = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        let why = if e.seq != expected_seq {
            Some(format!(
                "sequence {} where {expected_seq} was expected (an entry was deleted or moved)",
                e.seq
            ))
        } else if e.prev_hash != prev {
            Some(
                "its previous hash does not match the entry before it (deleted, moved or edited)".to_string(),
            )
        } else if hash_of(
            &e.prev_hash,
            e.seq,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail,
        ) != e.hash
        {
            Some("its content does not match its hash (edited)".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            return Verification {
                entries: entries.len() as i64,
                broken_at: Some((e.seq, why)),
            };
        }
        prev = e.hash.clone();
    }
    Verification {
        entries: entries.len() as i64,
        broken_at: None,
    }
}
