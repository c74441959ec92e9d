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
    // The head, not the last row: an entry deleted at the tail stays a visible gap.
    let (seq, prev) = match head(tx)? {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_string()),
    };
    let hash = hash_of(&prev, seq, at, actor, action, subject, detail);
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, at, actor, action, subject, detail, prev, hash],
    )?;
    tx.execute(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![seq, hash],
    )?;
    Ok(seq)
}

/// The newest entry's sequence number and hash, as written with it.
pub fn head(conn: &rusqlite::Connection) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row("SELECT seq, hash FROM audit_head WHERE one = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Every entry, in order.
pub fn entries(conn: &rusqlite::Connection) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Entry {
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

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub entries: i64,
    /// The first entry where the chain breaks, and why.
    pub broken_at: Option<(i64, String)>,
}

/// Recomputes the whole chain and checks that it ends at the recorded head.
pub fn verify(entries: &[Entry], head: Option<&(i64, String)>) -> Verification {
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
    let last = entries.last().map(|e| (e.seq, e.hash.as_str()));
    let broken_at = match (head, last) {
        (None, None) => None,
        (Some((seq, hash)), Some((last_seq, last_hash))) if *seq == last_seq && hash == last_hash => None,
        (Some((seq, _)), Some((last_seq, _))) if *seq > last_seq => Some((
            last_seq + 1,
            format!(
                "the log ends at entry {last_seq} but its head names entry {seq}: the last {} entries were deleted",
                seq - last_seq
            ),
        )),
        (Some((seq, _)), None) => Some((
            1,
            format!("the log is empty but its head names entry {seq}: every entry was deleted"),
        )),
        (Some((seq, _)), Some((last_seq, _))) => Some((
            last_seq.min(*seq),
            "the newest entry does not match the log's head (edited or replaced)".to_string(),
        )),
        (None, Some((last_seq, _))) => Some((last_seq, "the log's head is missing".to_string())),
    };
    Verification {
        entries: entries.len() as i64,
        broken_at,
    }
}
