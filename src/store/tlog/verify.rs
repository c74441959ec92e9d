//! `gateway audit verify`: the log checked against its signed checkpoints, and every row of
//! every table against the log.
//!
//! What is checked, and what a failure means:
//!
//! * each entry's leaf hash is the hash of its text, and entries are numbered without gaps
//!   (an entry edited in place, or removed from the middle);
//! * each checkpoint's signature verifies with the public key, and the tree of the entries
//!   up to its size has its root (an entry edited with its leaf hash recomputed, moved,
//!   inserted or removed: the tree no longer has the root that was signed);
//! * the log is at least as long as its newest checkpoint, or a checkpoint kept outside the
//!   database (`--trusted`) (a truncated tail), and no entry is under no checkpoint;
//! * every row of every table gives, now, the entry text its newest entry holds, no logged row is missing and
//!   no row is unlogged (a row edited, deleted, reordered or added behind the gateway's back).

use std::collections::HashMap;

use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Head, Table, normal_key, tables};
use crate::store::Result;
use crate::tlog::checkpoint::Verifier;
use crate::tlog::tree::{self, FullTree, Hash};

/// One problem found, with the entry, table and row it concerns where there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub entry: Option<u64>,
    pub table: Option<String>,
    pub key: Option<String>,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(e) = self.entry {
            write!(f, "entry {e}: ")?;
        }
        if let (Some(t), Some(k)) = (&self.table, &self.key) {
            write!(f, "{t} {k}: ")?;
        }
        f.write_str(&self.what)
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub tree_hash: String,
    pub entries: u64,
    pub checkpoints: u64,
    /// The size of the newest checkpoint whose signature and root hold.
    pub verified_size: u64,
    pub rows: u64,
    pub findings: Vec<Finding>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

#[derive(serde::Deserialize)]
struct Body {
    table: String,
    key: serde_json::Value,
    /// The SHA-256 (hex) of the row's text, or `None` for a deletion.
    row: Option<String>,
}

fn digest(text: &str) -> Hash {
    Sha256::digest(text.as_bytes()).into()
}

fn finding(entry: Option<u64>, what: String) -> Finding {
    Finding {
        entry,
        table: None,
        key: None,
        what,
    }
}

/// The newest entry of each row: (table, key text) → (entry, hash of the row's text, or
/// `None` for a deleted row).
type Latest = HashMap<(u16, String), (u64, Option<Hash>)>;

/// Verifies the log and every table of `conn` with `key`. `trusted` is a signed checkpoint
/// kept outside the database, which the log must still contain.
pub fn verify(conn: &Connection, key: &Verifier, trusted: Option<&str>) -> Result<Verification> {
    let mut findings = Vec::new();
    let head = Head::read(conn)?;
    let tree_hash = head.tree;

    // The entries: their leaves recomputed from their text, the newest entry of every row.
    let shapes = tables(conn)?;
    let mut table_ids: HashMap<String, u16> = shapes
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i as u16))
        .collect();
    let mut latest: Latest = HashMap::new();
    let mut leaves: Vec<Hash> = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT idx, body, leaf FROM tlog_entries ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (idx, body, leaf): (i64, String, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let n = leaves.len() as u64;
            if idx as u64 != n {
                findings.push(finding(
                    Some(n),
                    format!(
                        "missing: the log goes on at entry {idx} (entries {n}..{} were deleted)",
                        idx - 1
                    ),
                ));
                // Later findings are numbered as stored.
            }
            let computed = tree_hash.leaf(body.as_bytes());
            if leaf.as_slice() != computed.as_slice() {
                findings.push(finding(
                    Some(idx as u64),
                    "its text does not match its leaf hash (edited)".into(),
                ));
            }
            leaves.push(computed);
            match serde_json::from_str::<Body>(&body) {
                Ok(b) => {
                    let next = table_ids.len() as u16;
                    let t = *table_ids.entry(b.table).or_insert(next);
                    // A deleted row's entry has no row; a present one names its text's hash,
                    // compared with the text the row gives now.
                    let row = match b.row {
                        None => None,
                        Some(h) => match hex::decode(&h)
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                        {
                            Some(h) => Some(h),
                            None => {
                                findings
                                    .push(finding(Some(idx as u64), "its row hash is not a SHA-256".into()));
                                continue;
                            }
                        },
                    };
                    latest.insert((t, b.key.to_string()), (idx as u64, row));
                }
                Err(e) => findings.push(finding(Some(idx as u64), format!("not an entry: {e}"))),
            }
        }
    }
    let n = leaves.len() as u64;
    let mut full = FullTree::new(tree_hash, leaves);

    // The checkpoints, oldest first: each one signed by the key and the root of its prefix.
    let notes: Vec<(i64, String)> = conn
        .prepare("SELECT size, note FROM tlog_checkpoints ORDER BY size")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut verified = 0u64;
    let check = |note: &str,
                 label: &str,
                 verified: u64,
                 full: &mut FullTree|
     -> std::result::Result<(u64, Hash), Finding> {
        let c = key
            .open(note)
            .map_err(|e| finding(None, format!("{label}: {e}")))?;
        if c.hash != tree_hash {
            return Err(finding(
                None,
                format!(
                    "{label}: signed a {} tree, the log is {}",
                    c.hash.name(),
                    tree_hash.name()
                ),
            ));
        }
        if c.size > n {
            return Err(finding(
                Some(n),
                format!(
                    "{label} signed {} entries but the log holds {n}: entries {n}..{} were deleted (the tail was truncated)",
                    c.size,
                    c.size - 1
                ),
            ));
        }
        let root = match tree::root(tree_hash, c.size, full) {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if root != c.root {
            return Err(finding(
                Some(verified),
                format!(
                    "{label}: the entries up to {} are not those that were signed: one of entries {verified}..{} was edited, moved, inserted or deleted, its hashes recomputed without the key",
                    c.size,
                    c.size.saturating_sub(1)
                ),
            ));
        }
        Ok((c.size, root))
    };
    // The previous good checkpoint, whose tree each next one must extend (proved with a
    // consistency proof, checked by ct-merkle).
    let mut previous: Option<(u64, Hash)> = None;
    for (size, note) in &notes {
        let label = format!("checkpoint {size}");
        match check(note, &label, verified, &mut full) {
            Ok((s, root)) if s == *size as u64 => {
                if let Some((old, old_root)) = previous
                    && old < s
                {
                    let proof = match tree::consistency_proof(tree_hash, old, s, &mut full) {
                        Ok(p) => p,
                        Err(never) => match never {},
                    };
                    if !tree::verify_consistency(tree_hash, old, &old_root, s, &root, &proof) {
                        findings.push(finding(
                            Some(old),
                            format!("{label} does not extend checkpoint {old}"),
                        ));
                    }
                }
                previous = Some((s, root));
                verified = verified.max(s);
            }
            Ok((s, _)) => findings.push(finding(None, format!("{label}: its note is for size {s}"))),
            Err(f) => findings.push(f),
        }
    }
    if let Some(note) = trusted
        && let Err(f) = check(note, "the trusted checkpoint", verified, &mut full)
    {
        findings.push(f);
    }
    if verified < n {
        findings.push(finding(
            Some(verified),
            format!(
                "entries {verified}..{} are under no signed checkpoint (appended without the key)",
                n - 1
            ),
        ));
    }
    if head.size() != n {
        findings.push(finding(
            None,
            format!("the log's head names {} entries, the log holds {n}", head.size()),
        ));
    } else if head.frontier.clone().root(tree_hash)
        != match tree::root(tree_hash, n, &mut full) {
            Ok(r) => r,
            Err(never) => match never {},
        }
    {
        findings.push(finding(None, "the log's head does not end the log's tree".into()));
    }

    let rows = check_rows(conn, &shapes, &table_ids, &mut latest, &mut findings)?;
    let names: HashMap<u16, String> = table_ids.drain().map(|(n, i)| (i, n)).collect();
    let mut gone: Vec<_> = latest
        .into_iter()
        .filter_map(|((t, k), (e, row))| row.map(|_| (e, t, k)))
        .collect();
    gone.sort();
    for (e, t, k) in gone {
        findings.push(Finding {
            entry: Some(e),
            table: names.get(&t).cloned(),
            key: Some(k),
            what: format!("deleted: the row that entry {e} logged is not in the table"),
        });
    }
    Ok(Verification {
        tree_hash: tree_hash.name().to_string(),
        entries: n,
        checkpoints: notes.len() as u64,
        verified_size: verified,
        rows,
        findings,
    })
}

/// Compares every row of every logged table with its newest entry, removing the rows found
/// from `latest`: what is left was logged and is gone.
fn check_rows(
    conn: &Connection,
    shapes: &[Table],
    ids: &HashMap<String, u16>,
    latest: &mut Latest,
    findings: &mut Vec<Finding>,
) -> Result<u64> {
    let mut count = 0;
    for t in shapes {
        let id = ids[&t.name];
        let mut stmt = conn.prepare(&t.select_rows())?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            count += 1;
            let raw: String = r.get(0)?;
            // The key as serde_json writes it, as the entries were read.
            let key = normal_key(&raw);
            let text: String = r.get(1)?;
            let what = match latest.remove(&(id, key.clone())) {
                None => Some((
                    None,
                    "not in the log: added behind the gateway's back".to_string(),
                )),
                Some((e, None)) => Some((Some(e), format!("present, but entry {e} logged its deletion"))),
                Some((e, Some(h))) if h != digest(&text) => Some((
                    Some(e),
                    format!("differs from the row entry {e} logged (edited or moved)"),
                )),
                Some(_) => None,
            };
            if let Some((entry, what)) = what {
                findings.push(Finding {
                    entry,
                    table: Some(t.name.clone()),
                    key: Some(key),
                    what,
                });
            }
        }
    }
    Ok(count)
}
