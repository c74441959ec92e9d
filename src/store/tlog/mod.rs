//! The transparency log as stored: every change to a row of the gateway's tables becomes an
//! entry of one Merkle log (`crate::tlog`), in the transaction that makes the change.
//!
//! Capture does not rely on each write remembering to log itself. Triggers on every table
//! (made from the schema by [`install_triggers`], so a table added later is covered by the
//! migration that adds it) note the key of each row inserted, updated or deleted in
//! `tlog_pending`; [`seal`] runs as the last step of every write transaction, reads each noted
//! row as it now is and appends one entry per row:
//!
//! ```json
//! {"step":"fetch","table":"fetches","key":[12],"row":{"fetched_at":"…","id":12,"sha256":"…",…}}
//! ```
//!
//! `row` is `null` for a deleted row. A value longer than [`INLINE`] bytes (a record version's
//! content, a raw document's bytes) is written as `{"sha256": hex, "bytes": n}` (`blob_sha256`
//! for binary values): the entry stays small and still pins the value. `step` names what the
//! table holds in the gateway's flow (see [`step_of`]).
//!
//! The tree is never stored node by node: each entry keeps its leaf hash, and `tlog_head` the
//! log's size, tree hash and right edge ([`Frontier`]), which is all an append and a root need.
//! After the entries, the seal signs a checkpoint of the new size when the store has a key.

use std::collections::{HashMap, HashSet};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

mod evidence;
mod verify;
pub use evidence::{Evidence, ProvedEntry};
pub use verify::{Finding, Verification, verify};

use super::{Result, StoreError};
use crate::tlog::checkpoint::{Checkpoint, Signer};
use crate::tlog::tree::{Frontier, Hash, TreeHash};

/// Values up to this many bytes are written into an entry as they are; longer ones as their
/// SHA-256.
pub const INLINE: usize = 128;

/// Tables that are the log itself, and SQLite's own: not logged.
fn is_logged(table: &str) -> bool {
    !table.starts_with("tlog_") && !table.starts_with("sqlite_")
}

/// The step of the flow a table's rows record, as entries name it.
pub fn step_of(table: &str) -> &'static str {
    match table {
        "raw_documents" | "fetches" | "listing_misses" => "fetch",
        "mapping_files" => "rules",
        "record_versions" => "map and decide",
        "records" | "source_versions" | "cursors" | "runs" | "report_lines" => "commit",
        "failures" => "failure",
        "materials_checks" | "notices" => "materials check",
        "operator_actions" | "deadline_alerts" => "operator action",
        "outbox" | "power_applications" => "outbound call",
        "power_events" => "webhook",
        "remaps" => "remap",
        "coverage_windows" => "coverage",
        "audit_log" | "audit_head" => "audit",
        _ => "other",
    }
}

/// A logged table: its name and its primary key's columns (the key an entry names a row by).
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub key: Vec<String>,
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
    let mut key: Vec<(i64, String)> = conn
        .prepare("SELECT pk, name FROM pragma_table_info(?1) WHERE pk > 0")?
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    key.sort();
    if key.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "table {name} has no primary key: the audit log names rows by it"
        )));
    }
    Ok(Table {
        name: name.to_string(),
        key: key.into_iter().map(|(_, n)| n).collect(),
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

    /// The statement that reads one row by its key text.
    fn select_one(&self) -> String {
        let conds: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = json_extract(?1, '$[{i}]')", quoted(c)))
            .collect();
        format!(
            "SELECT * FROM {} WHERE {}",
            quoted(&self.name),
            conds.join(" AND ")
        )
    }

    /// The statement that reads every row with its key text first.
    pub(crate) fn select_all(&self) -> String {
        format!(
            "SELECT {} AS tlog_key, t.* FROM {} AS t",
            self.key_expr("t"),
            quoted(&self.name)
        )
    }
}

/// (Re)creates the triggers that note every change to a logged table. Run after every
/// migration, so that a table or key a migration adds is logged from then on.
pub fn install_triggers(conn: &Connection) -> Result<()> {
    for t in tables(conn)? {
        let name = quoted(&t.name);
        let lit = t.name.replace('\'', "''");
        let (new, old) = (t.key_expr("NEW"), t.key_expr("OLD"));
        let trigger = |suffix: &str| quoted(&format!("tlog_{}_{suffix}", t.name));
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {i};
             DROP TRIGGER IF EXISTS {u};
             DROP TRIGGER IF EXISTS {d};
             CREATE TRIGGER {i} AFTER INSERT ON {name} BEGIN
                 INSERT INTO tlog_pending (tbl, key) VALUES ('{lit}', {new});
             END;
             CREATE TRIGGER {u} AFTER UPDATE ON {name} BEGIN
                 INSERT INTO tlog_pending (tbl, key) VALUES ('{lit}', {new});
                 INSERT INTO tlog_pending (tbl, key) SELECT '{lit}', {old} WHERE {old} IS NOT {new};
             END;
             CREATE TRIGGER {d} AFTER DELETE ON {name} BEGIN
                 INSERT INTO tlog_pending (tbl, key) VALUES ('{lit}', {old});
             END;",
            i = trigger("insert"),
            u = trigger("update"),
            d = trigger("delete"),
        ))?;
    }
    Ok(())
}

/// A row's values as an entry writes them: columns by name, long values by their hash.
pub(crate) fn row_json(row: &rusqlite::Row<'_>, names: &[String], skip: usize) -> Result<serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (i, name) in names.iter().enumerate().skip(skip) {
        let v = match row.get_ref(i)? {
            ValueRef::Null => serde_json::Value::Null,
            ValueRef::Integer(n) => n.into(),
            ValueRef::Real(f) => f.into(),
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) if t.len() <= INLINE => s.into(),
                _ => serde_json::json!({"sha256": super::sha256_hex(t), "bytes": t.len()}),
            },
            ValueRef::Blob(b) => serde_json::json!({"blob_sha256": super::sha256_hex(b), "bytes": b.len()}),
        };
        map.insert(name.clone(), v);
    }
    Ok(serde_json::Value::Object(map))
}

/// An entry's text: the canonical form that is hashed into the tree. `key` is the key text
/// SQLite's `json_array` wrote; `row` is `None` for a deleted row.
pub fn entry_text(table: &str, key: &str, row: Option<&serde_json::Value>) -> String {
    let row = row.map_or_else(|| "null".to_string(), |r| r.to_string());
    format!(
        "{{\"step\":{},\"table\":{},\"key\":{key},\"row\":{row}}}",
        serde_json::Value::from(step_of(table)),
        serde_json::Value::from(table),
    )
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

/// Reads rows of logged tables by key, each table's statement prepared once per seal.
struct Rows<'c> {
    conn: &'c Connection,
    tables: HashMap<String, (String, Vec<String>)>,
}

impl<'c> Rows<'c> {
    fn new(conn: &'c Connection) -> Rows<'c> {
        Rows {
            conn,
            tables: HashMap::new(),
        }
    }

    fn row(&mut self, name: &str, key: &str) -> Result<Option<serde_json::Value>> {
        if !self.tables.contains_key(name) {
            let t = table(self.conn, name)?;
            let sql = t.select_one();
            let names = self
                .conn
                .prepare_cached(&sql)?
                .column_names()
                .map(str::to_string)
                .collect();
            self.tables.insert(name.to_string(), (sql, names));
        }
        let (sql, names) = &self.tables[name];
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([key])?;
        match rows.next()? {
            Some(row) => Ok(Some(row_json(row, names, 0)?)),
            None => Ok(None),
        }
    }
}

fn append(conn: &Connection, head: &mut Head, text: &str) -> Result<()> {
    let leaf: Hash = head.tree.leaf(text.as_bytes());
    conn.prepare_cached("INSERT INTO tlog_entries (idx, body, leaf) VALUES (?1, ?2, ?3)")?
        .execute(params![head.size() as i64, text, leaf.as_slice()])?;
    head.frontier.push(head.tree, leaf);
    Ok(())
}

/// Appends an entry for each row changed in this transaction, then signs a checkpoint of the
/// new size with `signer`, if there is one. The last step of every write transaction.
pub fn seal(conn: &Connection, signer: Option<&Signer>) -> Result<()> {
    let pending: Vec<(String, String)> = conn
        .prepare_cached("SELECT tbl, key FROM tlog_pending ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut head = Head::read(conn)?;
    let mut rows = Rows::new(conn);
    let mut seen = HashSet::with_capacity(pending.len());
    for (table, key) in &pending {
        // A row changed twice in one transaction is one entry, of its state at the end.
        if !seen.insert((table.as_str(), key.as_str())) {
            continue;
        }
        let row = rows.row(table, key)?;
        append(conn, &mut head, &entry_text(table, key, row.as_ref()))?;
    }
    conn.prepare_cached("DELETE FROM tlog_pending")?.execute([])?;
    head.write(conn)?;
    if let Some(signer) = signer {
        sign(conn, &mut head, signer)?;
    }
    Ok(())
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
/// before the log is vouched for from then on, as it then was.
pub fn adopt(conn: &Connection) -> Result<u64> {
    let mut head = Head::read(conn)?;
    let before = head.size();
    for t in tables(conn)? {
        let mut stmt = conn.prepare(&format!("{} ORDER BY 1", t.select_all()))?;
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let text = entry_text(&t.name, &key, Some(&row_json(row, &names, 1)?));
            append(conn, &mut head, &text)?;
        }
    }
    head.write(conn)?;
    Ok(head.size() - before)
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
    /// Verifies the audit log and every table against it ([`verify`]) on one snapshot of the
    /// database, read beside a running writer.
    pub fn audit_verify(
        &self,
        key: &crate::tlog::checkpoint::Verifier,
        trusted: Option<&str>,
    ) -> Result<Verification> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let v = verify(&tx, key, trusted)?;
        tx.finish()?;
        Ok(v)
    }

    /// A record's evidence ([`Evidence`]) from one snapshot of the database.
    pub fn evidence(&self, record_id: &str) -> Result<Evidence> {
        let conn = self.read();
        let tx = conn.unchecked_transaction()?;
        let e = evidence::gather(&tx, record_id)?;
        tx.finish()?;
        Ok(e)
    }

    /// The newest signed checkpoint: its size and signed note.
    pub fn audit_checkpoint(&self) -> Result<Option<(u64, String)>> {
        latest_checkpoint(&self.read())
    }
}

/// The entry text a row would be logged with now (`None` in `row` when it is gone): what the
/// verification compares with, and what a test that forges the log recomputes.
pub fn entry_now(conn: &Connection, table: &str, key: &str) -> Result<String> {
    let row = Rows::new(conn).row(table, key)?;
    Ok(entry_text(table, key, row.as_ref()))
}
