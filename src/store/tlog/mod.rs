//! The transparency log as stored: every change to a row of the gateway's tables becomes an
//! entry of one Merkle log (`crate::tlog`), in the transaction that makes the change.
//!
//! Capture does not rely on each write remembering to log itself: SQLite's pre-update hook
//! (`capture.rs`) writes down every row any statement inserts, updates or deletes, in every
//! table. [`seal`] runs as the last step of every write transaction: it appends an entry for
//! each row changed (`entry.rs`), extends the tree's right edge by their leaves, writes the
//! head, and signs a checkpoint of the new size when the store has a key.
//!
//! The tree is never stored node by node: each entry keeps its leaf hash, and `tlog_head` the
//! log's size, tree hash and right edge ([`Frontier`]), which is all an append and a root need.

use rusqlite::{Connection, OptionalExtension, params};

mod capture;
mod entry;
mod evidence;
mod verify;
pub use capture::{Captured, Change, install as install_capture};
pub use entry::{INLINE, register, step_of};
pub use evidence::{Evidence, ProvedEntry};
pub use verify::{Finding, Verification, verify};

use super::{Result, StoreError};
use crate::tlog::checkpoint::{Checkpoint, Signer};
use crate::tlog::tree::{Frontier, TreeHash};

/// Tables that are the log itself, and SQLite's own: not logged.
fn is_logged(table: &str) -> bool {
    !table.starts_with("tlog_") && !table.starts_with("sqlite_")
}

/// A row's key text as serde_json writes it: the form every key is compared in (SQLite's
/// `json_array` and the capture may differ in how they escape).
pub(crate) fn normal_key(key: &str) -> String {
    serde_json::from_str::<serde_json::Value>(key)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| key.to_string())
}

/// A logged table: its name and its primary key's columns (the key an entry names a row by).
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub key: Vec<String>,
    /// Every column, in the schema's order.
    pub columns: Vec<String>,
}

/// Every logged table of the database, from its schema.
pub fn tables(conn: &Connection) -> Result<Vec<Table>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| is_logged(n)) {
        out.push(table(conn, &name)?);
    }
    Ok(out)
}

fn table(conn: &Connection, name: &str) -> Result<Table> {
    let mut columns: Vec<(i64, String, i64)> = conn
        .prepare("SELECT cid, name, pk FROM pragma_table_info(?1)")?
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<std::result::Result<_, _>>()?;
    columns.sort();
    let mut key: Vec<(i64, String)> = columns
        .iter()
        .filter(|c| c.2 > 0)
        .map(|c| (c.2, c.1.clone()))
        .collect();
    key.sort();
    if key.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "table {name} has no primary key: the audit log names rows by it"
        )));
    }
    Ok(Table {
        name: name.to_string(),
        key: key.into_iter().map(|(_, n)| n).collect(),
        columns: columns.into_iter().map(|c| c.1).collect(),
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Table {
    /// The SQL expression of a row's key text (`json_array` of its key columns) over `alias`.
    fn key_expr(&self, alias: &str) -> String {
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|c| format!("{alias}.{}", quoted(c)))
            .collect();
        format!("json_array({})", cols.join(", "))
    }

    /// The SQL expression of a row's entry text over `alias` (`NEW`, `OLD`, a table alias), or
    /// of its deletion.
    fn entry_expr(&self, alias: &str, deleted: bool) -> String {
        self.call("tlog_entry", alias, deleted)
    }

    /// `function(table, key, [column, value]…)` over `alias`.
    fn call(&self, function: &str, alias: &str, deleted: bool) -> String {
        let mut args = vec![literal(&self.name), self.key_expr(alias)];
        if !deleted {
            for c in &self.columns {
                args.push(literal(c));
                args.push(format!("{alias}.{}", quoted(c)));
            }
        }
        format!("{function}({})", args.join(", "))
    }

    /// The statement that reads `expr` (over the alias `t`) of the row whose key text is `?1`.
    fn select_by_key(&self, expr: &str) -> String {
        let conds: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t.{} = json_extract(?1, '$[{i}]')", quoted(c)))
            .collect();
        format!(
            "SELECT {expr} FROM {} AS t WHERE {}",
            quoted(&self.name),
            conds.join(" AND ")
        )
    }

    /// The statement that reads every row as its key text and its text now.
    pub(crate) fn select_rows(&self) -> String {
        format!(
            "SELECT {}, {} FROM {} AS t",
            self.key_expr("t"),
            self.call("tlog_row", "t", false),
            quoted(&self.name)
        )
    }
}

/// The log's head: its size, tree hash and right edge.
pub struct Head {
    pub tree: TreeHash,
    pub frontier: Frontier,
}

impl Head {
    pub fn read(conn: &Connection) -> Result<Head> {
        let (size, tree, edge): (i64, String, Vec<u8>) = conn.query_row(
            "SELECT size, tree_hash, frontier FROM tlog_head WHERE one = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let tree = TreeHash::from_name(&tree)
            .ok_or_else(|| StoreError::Corrupt(format!("the audit log's tree hash {tree:?} is unknown")))?;
        let frontier = u64::try_from(size)
            .ok()
            .and_then(|s| Frontier::from_bytes(s, &edge))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the audit log's head (size {size}) does not hold its right edge"
                ))
            })?;
        Ok(Head { tree, frontier })
    }

    fn write(&self, conn: &Connection) -> Result<()> {
        conn.execute(
            "UPDATE tlog_head SET size = ?1, tree_hash = ?2, frontier = ?3 WHERE one = 1",
            params![
                self.frontier.size() as i64,
                self.tree.name(),
                self.frontier.to_bytes()
            ],
        )?;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }
}

/// Appends an entry for each row this transaction changed (the last change of a row
/// stands for all of them), writes the head, then signs a checkpoint of the new size with
/// `signer`, if there is one. The last step of every write transaction.
pub fn seal(conn: &Connection, signer: Option<&Signer>, changes: Vec<Change>) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut head = Head::read(conn)?;
    let next: i64 = conn
        .prepare_cached("SELECT coalesce(max(idx), -1) + 1 FROM tlog_entries")?
        .query_row([], |r| r.get(0))?;
    if next as u64 != head.size() {
        // Entries that do not continue the head: the log was cut or edited behind the
        // gateway's back. Nothing more is committed until `audit verify` is read.
        return Err(StoreError::Corrupt(format!(
            "the audit log holds entries up to {next} but its head names {}: the log was changed outside the gateway; run `gateway audit verify`",
            head.size()
        )));
    }
    // The newest change of each row, in the order of those newest changes.
    let mut seen = std::collections::HashSet::with_capacity(changes.len());
    let mut last: Vec<&Change> = changes
        .iter()
        .rev()
        .filter(|c| seen.insert((c.table.clone(), c.key.as_str())))
        .collect();
    last.reverse();
    let mut insert = conn.prepare_cached("INSERT INTO tlog_entries (idx, body, leaf) VALUES (?1, ?2, ?3)")?;
    for c in last {
        let row = c.row.as_ref().map_err(|e| {
            StoreError::Corrupt(format!(
                "a change to {} could not be read for the audit log: {e}",
                c.table
            ))
        })?;
        let text = entry::entry_text(&c.table, &c.key, row.as_deref());
        let leaf = head.tree.leaf(text.as_bytes());
        insert.execute(params![head.size() as i64, text, leaf.as_slice()])?;
        head.frontier.push(head.tree, leaf);
    }
    head.write(conn)?;
    if let Some(signer) = signer {
        sign(conn, &mut head, signer)?;
    }
    Ok(())
}

/// Extends the head by entries appended in SQL (the adoption of migration 14).
fn extend(conn: &Connection) -> Result<()> {
    let mut head = Head::read(conn)?;
    let new: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT idx, leaf FROM tlog_entries WHERE idx >= ?1 ORDER BY idx")?
        .query_map([head.size() as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (idx, leaf) in new {
        match <[u8; 32]>::try_from(leaf.as_slice()) {
            Ok(leaf) if idx as u64 == head.size() => head.frontier.push(head.tree, leaf),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "audit log entry {idx} does not continue the log"
                )));
            }
        }
    }
    head.write(conn)
}

/// Signs a checkpoint of the log as it stands, unless one of this size is kept already.
pub fn sign(conn: &Connection, head: &mut Head, signer: &Signer) -> Result<()> {
    if signer.algorithm().tree_hash() != head.tree {
        return Err(StoreError::Corrupt(format!(
            "the audit log is hashed with {} but the key is {:?}, which signs {} logs",
            head.tree.name(),
            signer.algorithm(),
            signer.algorithm().tree_hash().name()
        )));
    }
    let checkpoint = Checkpoint {
        origin: signer.name().to_string(),
        size: head.size(),
        root: head.frontier.root(head.tree),
        hash: head.tree,
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO tlog_checkpoints (size, note, signed_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![
        head.size() as i64,
        signer.sign(&checkpoint),
        super::ts(chrono::Utc::now())
    ])?;
    Ok(())
}

/// Logs every row the database holds when the log is added to it (migration 14): what came
/// before the log is vouched for from then on, as it then was. Made by the SQL functions over
/// whole tables.
pub fn adopt(conn: &Connection) -> Result<u64> {
    for t in tables(conn)? {
        let next: i64 = conn.query_row("SELECT coalesce(max(idx), -1) + 1 FROM tlog_entries", [], |r| {
            r.get(0)
        })?;
        conn.execute(&append_sql_all(&t), [next])?;
    }
    let before = Head::read(conn)?.size();
    extend(conn)?;
    Ok(Head::read(conn)?.size() - before)
}

/// Appends an entry for every row of a table, in key order.
fn append_sql_all(t: &Table) -> String {
    format!(
        "INSERT INTO tlog_entries (idx, body, leaf)
             SELECT ?1 + row_number() OVER (ORDER BY k) - 1, e, tlog_leaf(h.tree_hash, e)
             FROM (SELECT {} AS k, {} AS e FROM {} AS t) JOIN tlog_head h ON h.one = 1 ORDER BY k;",
        t.key_expr("t"),
        t.entry_expr("t", false),
        quoted(&t.name)
    )
}

/// Makes the log's tree hash the one `tree`, if it can still change: before any checkpoint is
/// signed, the leaves are hashed again (a log adopted at migration under SHA-256, then signed
/// with SM2 for the first time). After one, a different tree hash is refused.
pub fn use_tree_hash(conn: &Connection, tree: TreeHash) -> Result<()> {
    let head = Head::read(conn)?;
    if head.tree == tree {
        return Ok(());
    }
    let signed: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM tlog_checkpoints)", [], |r| r.get(0))?;
    if signed {
        return Err(StoreError::Refused(format!(
            "the audit log has checkpoints under {}; a key that signs {} logs cannot continue it",
            head.tree.name(),
            tree.name()
        )));
    }
    let mut fresh = Head {
        tree,
        frontier: Frontier::default(),
    };
    let bodies: Vec<(i64, String)> = conn
        .prepare("SELECT idx, body FROM tlog_entries ORDER BY idx")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut update = conn.prepare("UPDATE tlog_entries SET leaf = ?2 WHERE idx = ?1")?;
    for (idx, body) in bodies {
        let leaf = tree.leaf(body.as_bytes());
        update.execute(params![idx, leaf.as_slice()])?;
        fresh.frontier.push(tree, leaf);
    }
    fresh.write(conn)
}

/// The newest signed checkpoint's note, if one was signed.
pub fn latest_checkpoint(conn: &Connection) -> Result<Option<(u64, String)>> {
    Ok(conn
        .query_row(
            "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .optional()?)
}

impl super::Store {
    /// Runs `read` on one snapshot of the database (a read transaction on the reader's
    /// connection), so that what it reads across statements is one state, beside a writer.
    fn snapshot<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let out = read(&tx)?;
        tx.finish()?;
        Ok(out)
    }

    /// Verifies the audit log and every table against it ([`verify`]) on one snapshot of the
    /// database, read beside a running writer.
    pub fn audit_verify(
        &self,
        key: &crate::tlog::checkpoint::Verifier,
        trusted: Option<&str>,
    ) -> Result<Verification> {
        self.snapshot(|tx| verify(tx, key, trusted))
    }

    /// A record's evidence ([`Evidence`]) from one snapshot of the database.
    pub fn evidence(&self, record_id: &str) -> Result<Evidence> {
        self.snapshot(|tx| evidence::gather(tx, record_id))
    }

    /// The proof that the log of `old_size` entries (a checkpoint an auditor kept) is a prefix
    /// of the log under the newest checkpoint: its size, its note and the proof.
    pub fn consistency_proof(&self, old_size: u64) -> Result<(u64, String, Vec<crate::tlog::tree::Hash>)> {
        self.snapshot(|tx| evidence::consistency(tx, old_size))
    }

    /// Entry `index`, the newest checkpoint's note and the entry's inclusion proof against it.
    pub fn inclusion_proof(&self, index: u64) -> Result<(String, String, Vec<crate::tlog::tree::Hash>)> {
        self.snapshot(|tx| evidence::inclusion(tx, index))
    }

    /// The newest signed checkpoint: its size and signed note.
    pub fn audit_checkpoint(&self) -> Result<Option<(u64, String)>> {
        latest_checkpoint(&self.read())
    }
}

/// The entry text a row would be logged with now (its deletion when it is gone): what the
/// verification compares with, and what a test that forges the log recomputes.
pub fn entry_now(conn: &Connection, table_name: &str, key: &str) -> Result<String> {
    match now(conn, "tlog_entry", table_name, key)? {
        Some(text) => Ok(text),
        None => Ok(conn.query_row("SELECT tlog_entry(?1, ?2)", [table_name, key], |r| r.get(0))?),
    }
}

/// A row's text now (`tlog_row`), if the row is there.
pub fn row_now(conn: &Connection, table_name: &str, key: &str) -> Result<Option<String>> {
    now(conn, "tlog_row", table_name, key)
}

fn now(conn: &Connection, function: &str, table_name: &str, key: &str) -> Result<Option<String>> {
    let t = table(conn, table_name)?;
    let sql = t.select_by_key(&t.call(function, "t", false));
    Ok(conn.query_row(&sql, [key], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::tlog::checkpoint::{Algorithm, Signer};

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    /// Under the national algorithms the log is an SM3 tree signed with SM2: a log begun
    /// before any key (hashed with SHA-256) is hashed again at its first SM2 checkpoint, and
    /// after that an Ed25519 key cannot continue it.
    #[test]
    fn an_sm2_key_makes_an_sm3_log_that_verifies_and_keeps_its_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = Store::open(&path).unwrap();
        store.begin_run(at("2026-11-20T04:00:00Z")).unwrap();
        let signer = Signer::generate("kmsw.example/shuiwu-gateway", Algorithm::Sm2).unwrap();
        let verifier = signer.verifier();
        store.set_signer(signer).unwrap();
        let run = store.begin_run(at("2026-11-20T05:00:00Z")).unwrap();
        store
            .finish_run(run, at("2026-11-20T05:10:00Z"), "caught_up", None)
            .unwrap();
        let v = store.audit_verify(&verifier, None).unwrap();
        assert!(v.intact(), "{:?}", v.findings);
        assert_eq!((v.tree_hash.as_str(), v.verified_size), ("sm3", v.entries));
        assert!(v.entries >= 4, "{v:?}");
        let (_, note) = store.audit_checkpoint().unwrap().unwrap();
        assert!(note.contains("\nhash sm3\n"), "{note}");
        drop(store);

        let again = Store::open(&path).unwrap();
        let ed = Signer::generate("kmsw.example/shuiwu-gateway", Algorithm::Ed25519).unwrap();
        let refused = again.set_signer(ed).unwrap_err().to_string();
        assert!(refused.contains("sm3"), "{refused}");
        // An Ed25519 key's signature is no checkpoint of this log either.
        let v = again
            .audit_verify(
                &Signer::generate("kmsw.example/shuiwu-gateway", Algorithm::Ed25519)
                    .unwrap()
                    .verifier(),
                None,
            )
            .unwrap();
        assert!(!v.intact());
    }
}
