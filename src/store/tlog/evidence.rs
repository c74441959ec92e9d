//! The evidence of one record, as the log proves it: the newest entry of every row that
//! concerns the record (its versions, the documents and files they were made from, the
//! operators' actions, checks, calls and events), each with its inclusion proof against the
//! newest signed checkpoint, and the full values those entries pin by hash.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension};

use super::{Head, normal_key, table};
use crate::store::{Result, StoreError};
use crate::tlog::tree::{FullTree, Hash, TreeHash, consistency_proof, inclusion_proof};

/// One entry with its proof.
#[derive(Debug, Clone)]
pub struct ProvedEntry {
    pub index: u64,
    pub text: String,
    pub proof: Vec<Hash>,
}

/// What [`crate::store::Store::evidence`] gathers.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub record_id: String,
    pub tree: TreeHash,
    /// The signed note the proofs lead to.
    pub checkpoint: String,
    pub size: u64,
    pub entries: Vec<ProvedEntry>,
    /// The values the entries name by SHA-256, by that hash (hex): record contents, lineage,
    /// raw documents' bytes, mapping and policy files, call bodies.
    pub values: BTreeMap<String, Vec<u8>>,
}

/// The hashes of the documents a record was made from, its calls were answered with, its joint
/// application was evented about and its licences were read from (`?1` is the record's id).
macro_rules! documents {
    () => {
        "SELECT document_sha256 FROM record_versions WHERE record_id = ?1
         UNION SELECT answer_sha256 FROM outbox WHERE record_id = ?1
         UNION SELECT document_sha256 FROM power_applications WHERE record_id = ?1
         UNION SELECT e.document_sha256 FROM power_events e JOIN power_applications a ON a.application_id = e.application_id WHERE a.record_id = ?1
         UNION SELECT j.value ->> 'document' FROM materials_checks m, json_each(m.lineage, '$.sources') j WHERE m.record_id = ?1"
    };
}

/// The rows of each table that concern a record, as key texts (`?1` is the record's id).
const ROWS: &[(&str, &str)] = &[
    ("records", "SELECT json_array(id) FROM records WHERE id = ?1"),
    ("record_versions", "SELECT json_array(record_id, version) FROM record_versions WHERE record_id = ?1"),
    ("source_versions", "SELECT json_array(source, key, version) FROM source_versions WHERE record_id = ?1"),
    ("report_lines", "SELECT json_array(created_at, record_id) FROM report_lines WHERE record_id = ?1"),
    ("operator_actions", "SELECT json_array(id) FROM operator_actions WHERE record_id = ?1"),
    ("deadline_alerts", "SELECT json_array(record_id, stage, kind, due_at) FROM deadline_alerts WHERE record_id = ?1"),
    ("materials_checks", "SELECT json_array(id) FROM materials_checks WHERE record_id = ?1"),
    ("notices", "SELECT json_array(record_id) FROM notices WHERE record_id = ?1"),
    ("outbox", "SELECT json_array(id) FROM outbox WHERE record_id = ?1"),
    ("power_applications", "SELECT json_array(application_id) FROM power_applications WHERE record_id = ?1"),
    (
        "power_events",
        "SELECT json_array(e.event_id) FROM power_events e JOIN power_applications a ON a.application_id = e.application_id WHERE a.record_id = ?1",
    ),
    (
        "failures",
        "SELECT json_array(f.id) FROM failures f JOIN records r ON f.source = r.source AND f.key = r.source_key WHERE r.id = ?1",
    ),
    ("audit_log", "SELECT json_array(seq) FROM audit_log WHERE subject = ?1"),
    // The documents the record was made from, answered with, evented about, and its licences
    // were read from; their fetches.
    (
        "raw_documents",
        concat!("SELECT json_array(sha256) FROM raw_documents WHERE sha256 IN (", documents!(), ")"),
    ),
    (
        "fetches",
        concat!("SELECT json_array(id) FROM fetches WHERE sha256 IN (", documents!(), ")"),
    ),
    // The mapping and policy files in force for each version.
    (
        "mapping_files",
        "SELECT json_array(sha256) FROM mapping_files WHERE sha256 IN (
             SELECT mapping_sha256 FROM record_versions WHERE record_id = ?1
             UNION SELECT policy_sha256 FROM record_versions WHERE record_id = ?1
             UNION SELECT j.value ->> 'mapping_sha256' FROM materials_checks m, json_each(m.lineage, '$.sources') j WHERE m.record_id = ?1)",
    ),
];

/// The newest signed checkpoint: what proofs lead to.
fn newest(conn: &Connection) -> Result<(u64, String)> {
    super::latest_checkpoint(conn)?
        .ok_or_else(|| StoreError::Refused("no checkpoint of the audit log has been signed yet".into()))
}

/// Gathers a record's evidence from one snapshot of the database.
pub fn gather(conn: &Connection, record_id: &str) -> Result<Evidence> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM records WHERE id = ?1)",
        [record_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::Refused(format!("no record {record_id}")));
    }
    let (size, checkpoint) = newest(conn)?;
    let tree = Head::read(conn)?.tree;

    let mut wanted: HashSet<(String, String)> = HashSet::new();
    for (table, sql) in ROWS {
        let keys: Vec<String> = conn
            .prepare(sql)?
            .query_map([record_id], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        wanted.extend(keys.into_iter().map(|k| (table.to_string(), normal_key(&k))));
    }

    // One pass over the signed entries: every leaf (for the proofs), and the newest entry of
    // each wanted row.
    let mut newest: HashMap<(String, String), u64> = HashMap::new();
    let mut leaves = Vec::with_capacity(size as usize);
    {
        let mut stmt = conn.prepare(
            "SELECT idx, json_extract(body, '$.table'), json_extract(body, '$.key'), leaf FROM tlog_entries WHERE idx < ?1 ORDER BY idx",
        )?;
        let mut rows = stmt.query([size as i64])?;
        while let Some(r) = rows.next()? {
            let idx: i64 = r.get(0)?;
            let table: Option<String> = r.get(1)?;
            let key: Option<String> = r.get(2)?;
            let leaf: Vec<u8> = r.get(3)?;
            if let (Some(t), Some(k)) = (table, key) {
                let id = (t, normal_key(&k));
                if wanted.contains(&id) {
                    newest.insert(id, idx as u64);
                }
            }
            leaves.push(Hash::try_from(leaf.as_slice()).map_err(|_| {
                StoreError::Corrupt(format!("audit log entry {idx}: its leaf hash is not 32 bytes"))
            })?);
        }
    }
    if (leaves.len() as u64) < size {
        return Err(StoreError::Corrupt(format!(
            "the audit log holds {} entries but its newest checkpoint signed {size}",
            leaves.len()
        )));
    }
    let mut full = FullTree::new(tree, leaves);
    let mut chosen: Vec<((String, String), u64)> = newest.into_iter().collect();
    chosen.sort_by_key(|(_, i)| *i);

    let mut entries = Vec::with_capacity(chosen.len());
    let mut values = BTreeMap::new();
    for ((table_name, key), index) in chosen {
        let text: String = conn.query_row(
            "SELECT body FROM tlog_entries WHERE idx = ?1",
            [index as i64],
            |r| r.get(0),
        )?;
        let proof = match inclusion_proof(tree, index, size, &mut full) {
            Ok(p) => p,
            Err(never) => match never {},
        };
        collect_values(conn, &table_name, &key, &text, &mut values)?;
        entries.push(ProvedEntry { index, text, proof });
    }
    Ok(Evidence {
        record_id: record_id.to_string(),
        tree,
        checkpoint,
        size,
        entries,
        values,
    })
}

/// Adds the row's text an entry names by hash, and the full values the row names by hash,
/// read from the row as it is now (a row or value that no longer has that hash is left out:
/// `audit verify` names that row).
fn collect_values(
    conn: &Connection,
    table_name: &str,
    key: &str,
    text: &str,
    values: &mut BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let body: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("audit log entry: {e}")))?;
    let Some(row_hash) = body.get("row").and_then(|r| r.as_str()) else {
        return Ok(());
    };
    let Some(row_text) =
        super::row_now(conn, table_name, key)?.filter(|r| crate::store::sha256_hex(r.as_bytes()) == row_hash)
    else {
        return Ok(());
    };
    let row: serde_json::Value =
        serde_json::from_str(&row_text).map_err(|e| StoreError::Corrupt(format!("a row's text: {e}")))?;
    values.insert(row_hash.to_string(), row_text.into_bytes());
    let Some(row) = row.as_object() else {
        return Ok(());
    };
    let t = table(conn, table_name)?;
    for (column, v) in row {
        let Some(hash) = v
            .get("sha256")
            .or_else(|| v.get("blob_sha256"))
            .and_then(|h| h.as_str())
        else {
            continue;
        };
        let sql = t.select_by_key(&format!("t.{}", super::quoted(column)));
        let bytes: Option<Vec<u8>> = conn
            .query_row(&sql, [key], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Some(t.to_vec())
                    }
                    _ => None,
                })
            })
            .optional()?
            .flatten();
        if let Some(bytes) = bytes.filter(|b| crate::store::sha256_hex(b) == hash) {
            values.insert(hash.to_string(), bytes);
        }
    }
    Ok(())
}

/// The proof that the log of `old_size` entries is a prefix of the log under the newest signed
/// checkpoint: that checkpoint's size, its note, and the proof.
pub fn consistency(conn: &Connection, old_size: u64) -> Result<(u64, String, Vec<Hash>)> {
    let (size, note) = newest(conn)?;
    if old_size == 0 || old_size > size {
        return Err(StoreError::Refused(format!(
            "a checkpoint of {old_size} entries cannot be proved against the newest, of {size}"
        )));
    }
    let tree = Head::read(conn)?.tree;
    let mut full = whole_tree(conn, tree, size)?;
    let proof = match consistency_proof(tree, old_size, size, &mut full) {
        Ok(p) => p,
        Err(never) => match never {},
    };
    Ok((size, note, proof))
}

/// Entry `index` with its inclusion proof against the newest signed checkpoint: the entry's
/// text, the checkpoint's note and the proof.
pub fn inclusion(conn: &Connection, index: u64) -> Result<(String, String, Vec<Hash>)> {
    let (size, note) = newest(conn)?;
    if index >= size {
        return Err(StoreError::Refused(format!(
            "entry {index} is not under the newest checkpoint ({size} entries)"
        )));
    }
    let text: String = conn.query_row(
        "SELECT body FROM tlog_entries WHERE idx = ?1",
        [index as i64],
        |r| r.get(0),
    )?;
    let tree = Head::read(conn)?.tree;
    let mut full = whole_tree(conn, tree, size)?;
    let proof = match inclusion_proof(tree, index, size, &mut full) {
        Ok(p) => p,
        Err(never) => match never {},
    };
    Ok((text, note, proof))
}

/// The tree of the first `size` entries, from their stored leaf hashes.
fn whole_tree(conn: &Connection, tree: TreeHash, size: u64) -> Result<FullTree> {
    let leaves: Vec<Hash> = conn
        .prepare("SELECT leaf FROM tlog_entries WHERE idx < ?1 ORDER BY idx")?
        .query_map([size as i64], |r| r.get::<_, Vec<u8>>(0))?
        .map(|l| {
            l.map_err(StoreError::from).and_then(|l| {
                Hash::try_from(l.as_slice())
                    .map_err(|_| StoreError::Corrupt("an audit log leaf hash is not 32 bytes".into()))
            })
        })
        .collect::<Result<_>>()?;
    Ok(FullTree::new(tree, leaves))
}
