//! Evidence packages: one file per record that an auditor checks with the public key alone.
//!
//! The file is a signed note (the form of the log's checkpoints) whose text is one line of
//! JSON:
//!
//! ```text
//! {"format":"shuiwu-gateway evidence package 1","record":"PE-…","revealed":false,
//!  "tree_hash":"sha256","checkpoint":"<signed checkpoint>",
//!  "entries":[{"index":12,"text":"<log entry>","proof":["<hex>",…]},…],
//!  "values":{"<sha256>":{"text":"…"}|{"base64":"…"}|{"withheld":"…"},…}}
//!
//! — shuiwu-gateway <signature>
//! ```
//!
//! [`check`] verifies, naming what fails: the checkpoint's signature; that each entry is in
//! the signed tree (its inclusion proof, verified by ct-merkle); that each value has the hash
//! its entry names; that each field of each record version follows from the raw document's
//! bytes by the mapping file its lineage names (the file is in the package, and the gateway's
//! mapping engine is applied to it again); and last, the package's own signature, so that a
//! change to any byte is found even where no value is.
//!
//! Personal data: without `--reveal`, the values that can hold it (record contents, lineage,
//! raw documents, call bodies, failure details) are withheld; the check then says which
//! checks it could not make. With `--reveal`, made only after an audited entry naming who
//! and why, the package holds them all.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::mapping::lineage;
use crate::store::tlog::Evidence;
use crate::tlog::checkpoint::{Signer, Verifier};
use crate::tlog::tree::{Hash, TreeHash, verify_inclusion};

pub const FORMAT: &str = "shuiwu-gateway evidence package 1";

#[derive(Serialize, Deserialize)]
struct Package {
    format: String,
    record: String,
    made_at: String,
    revealed: bool,
    tree_hash: String,
    checkpoint: String,
    entries: Vec<Entry>,
    values: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    index: u64,
    text: String,
    proof: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Value {
    Text(String),
    Base64(String),
    Withheld(String),
}

/// The (table, column) values that hold no personal data: in every package.
const PUBLIC: &[(&str, &str)] = &[
    ("mapping_files", "content"),
    ("materials_checks", "checklist"),
    ("notices", "items"),
    ("notices", "text"),
    ("remaps", "selection"),
    ("remaps", "rules"),
];

/// The table, key and row hash an entry names (`None` for a deleted row's entry).
fn row_of(text: &str) -> Option<(String, serde_json::Value, String)> {
    let body = serde_json::from_str::<serde_json::Value>(text).ok()?;
    Some((
        body["table"].as_str()?.to_string(),
        body["key"].clone(),
        body["row"].as_str()?.to_string(),
    ))
}

/// Each value a row's text names by hash: (hash, column).
fn values_of(row: &serde_json::Value) -> Vec<(String, String)> {
    row.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(col, v)| {
            v.get("sha256")
                .or_else(|| v.get("blob_sha256"))
                .and_then(|h| h.as_str())
                .map(|h| (h.to_string(), col.clone()))
        })
        .collect()
}

/// Tables whose rows may hold a personal value short enough to be written in the row itself
/// (a failure's reason quotes the value it refused).
const PERSONAL_ROWS: &[&str] = &["failures"];

/// Writes a record's package, signed by the gateway's key.
pub fn make(evidence: &Evidence, signer: &Signer, reveal: bool, made_at: &str) -> String {
    let mut values = BTreeMap::new();
    let withheld =
        |what: String| Value::Withheld(format!("{what} may hold personal data: made without --reveal"));
    for e in &evidence.entries {
        let Some((table, _, row_hash)) = row_of(&e.text) else {
            continue;
        };
        let Some(row_bytes) = evidence.values.get(&row_hash) else {
            continue;
        };
        let row_text = String::from_utf8_lossy(row_bytes).into_owned();
        let row: serde_json::Value = serde_json::from_str(&row_text).unwrap_or_default();
        values.insert(
            row_hash,
            if reveal || !PERSONAL_ROWS.contains(&table.as_str()) {
                Value::Text(row_text)
            } else {
                withheld(format!("a row of {table}"))
            },
        );
        for (hash, column) in values_of(&row) {
            let Some(bytes) = evidence.values.get(&hash) else {
                continue;
            };
            let value = if reveal || PUBLIC.contains(&(table.as_str(), column.as_str())) {
                match std::str::from_utf8(bytes) {
                    Ok(t) if table != "raw_documents" => Value::Text(t.to_string()),
                    _ => Value::Base64(B64.encode(bytes)),
                }
            } else {
                withheld(format!("{table}.{column}"))
            };
            values.insert(hash, value);
        }
    }
    let package = Package {
        format: FORMAT.into(),
        record: evidence.record_id.clone(),
        made_at: made_at.into(),
        revealed: reveal,
        tree_hash: evidence.tree.name().into(),
        checkpoint: evidence.checkpoint.clone(),
        entries: evidence
            .entries
            .iter()
            .map(|e| Entry {
                index: e.index,
                text: e.text.clone(),
                proof: e.proof.iter().map(hex::encode).collect(),
            })
            .collect(),
        values,
    };
    // One line: serde_json escapes every newline inside strings.
    let text = serde_json::to_string(&package).unwrap_or_default();
    signer.sign_note(&format!("{text}\n"))
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub record: String,
    pub revealed: bool,
    pub checkpoint_size: u64,
    pub entries: usize,
    pub values: usize,
    pub fields: usize,
    pub versions: usize,
    /// Materials checks whose licence facts were mapped again from the licence library's XML.
    pub materials_checks: usize,
    /// What could not be checked, and why.
    pub unchecked: Vec<String>,
    /// What does not hold, each naming the entry, value or field.
    pub problems: Vec<String>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::store::sha256_hex(bytes)
}

/// Checks a package with nothing but its text and the gateway's public key.
pub fn check(file: &str, key: &Verifier) -> Report {
    let mut report = Report::default();
    let text = file.split_once("\n\n").map_or(file, |(t, _)| t);
    let package: Package = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            report.problems.push(format!("not an evidence package: {e}"));
            return report;
        }
    };
    report.record = package.record.clone();
    report.revealed = package.revealed;
    if package.format != FORMAT {
        report
            .problems
            .push(format!("format {:?} is not {FORMAT:?}", package.format));
    }
    let Some(tree) = TreeHash::from_name(&package.tree_hash) else {
        report
            .problems
            .push(format!("tree hash {:?} is unknown", package.tree_hash));
        return report;
    };
    let checkpoint = match key.open(&package.checkpoint) {
        Ok(c) if c.hash == tree => Some(c),
        Ok(c) => {
            report.problems.push(format!(
                "the checkpoint is of a {} tree, the package says {}",
                c.hash.name(),
                tree.name()
            ));
            None
        }
        Err(e) => {
            report.problems.push(format!("the checkpoint: {e}"));
            None
        }
    };
    if let Some(c) = &checkpoint {
        report.checkpoint_size = c.size;
    }

    // Entries: in the signed tree. Each names its row's text by hash.
    let mut rows_named: Vec<(u64, String, serde_json::Value, String)> = Vec::new();
    for e in &package.entries {
        report.entries += 1;
        let proof: Option<Vec<Hash>> = e
            .proof
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
            })
            .collect();
        let label = entry_label(e);
        match (&checkpoint, proof) {
            (Some(c), Some(proof)) => {
                if !verify_inclusion(tree, e.text.as_bytes(), e.index, c.size, &c.root, &proof) {
                    report.problems.push(format!(
                        "entry {} ({label}): not in the signed log: the entry or its proof was altered",
                        e.index
                    ));
                }
            }
            (_, None) => report.problems.push(format!(
                "entry {} ({label}): its proof is not hex hashes",
                e.index
            )),
            (None, _) => {}
        }
        if let Some((table, key, hash)) = row_of(&e.text) {
            rows_named.push((e.index, table, key, hash));
        }
    }

    // Values: each has the hash an entry (a row's text) or a row (a long value) names.
    let value_bytes = |hash: &str, what: &str, report: &mut Report| -> Option<Vec<u8>> {
        let bytes = match package.values.get(hash)? {
            Value::Text(t) => t.as_bytes().to_vec(),
            Value::Base64(b) => match B64.decode(b) {
                Ok(b) => b,
                Err(_) => {
                    report.problems.push(format!("value {hash} ({what}): not base64"));
                    return None;
                }
            },
            Value::Withheld(_) => return None,
        };
        report.values += 1;
        if sha256_hex(&bytes) != hash {
            report.problems.push(format!(
                "value {hash} ({what}): its bytes do not have that hash (altered)"
            ));
            return None;
        }
        Some(bytes)
    };
    let mut named: HashMap<String, String> = HashMap::new();
    let mut bodies: Vec<(u64, serde_json::Value)> = Vec::new();
    let mut bytes_of: HashMap<String, Vec<u8>> = HashMap::new();
    for (index, table, key, hash) in &rows_named {
        let what = format!("the row of entry {index}, {table} {key}");
        named.insert(hash.clone(), what.clone());
        let Some(bytes) = value_bytes(hash, &what, &mut report) else {
            continue;
        };
        let row: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(format!("{what}: not a row: {e}"));
                continue;
            }
        };
        for (h, column) in values_of(&row) {
            named.insert(h, format!("{table}.{column} of entry {index}"));
        }
        bodies.push((
            *index,
            serde_json::json!({"table": table, "key": key, "row": row}),
        ));
    }
    for (hash, what) in &named {
        if rows_named.iter().any(|(_, _, _, h)| h == hash) {
            continue;
        }
        if let Some(bytes) = value_bytes(hash, what, &mut report) {
            bytes_of.insert(hash.clone(), bytes);
        }
    }
    for hash in package.values.keys() {
        if !named.contains_key(hash) {
            report
                .problems
                .push(format!("value {hash}: named by no entry of the package"));
        }
    }
    let withheld = package
        .values
        .values()
        .filter(|v| matches!(v, Value::Withheld(_)))
        .count();
    if withheld > 0 {
        report.unchecked.push(format!(
            "{withheld} values that may hold personal data are withheld (package made without --reveal): their hashes and the mapping of the fields read from them are not checked"
        ));
    }

    check_mappings(&bodies, &bytes_of, &mut report);

    // Last, the package as a whole: a byte changed anywhere, even outside the values.
    if let Err(e) = key.open_note(file) {
        report.problems.push(format!(
            "the package's own signature: {e}: a byte of the file was changed after it was made"
        ));
    }
    report
}

fn entry_label(e: &Entry) -> String {
    serde_json::from_str::<serde_json::Value>(&e.text)
        .map(|b| format!("{} {}", b["table"].as_str().unwrap_or("?"), b["key"]))
        .unwrap_or_else(|_| "unreadable".into())
}

/// Each record version's fields mapped again from the raw bytes with the mapping file its
/// lineage names: the same path, the same raw text, the same transforms and the same value.
fn check_mappings(
    bodies: &[(u64, serde_json::Value)],
    bytes: &HashMap<String, Vec<u8>>,
    report: &mut Report,
) {
    let text_of = |v: &serde_json::Value| -> Option<String> {
        v.get("sha256")
            .and_then(|h| h.as_str())
            .and_then(|h| bytes.get(h))
            .and_then(|b| String::from_utf8(b.clone()).ok())
            .or_else(|| v.as_str().map(str::to_string))
    };
    // Mapping files by their hash, and raw documents by theirs.
    let mut files: HashMap<String, (String, String)> = HashMap::new();
    let mut documents: HashMap<String, Vec<u8>> = HashMap::new();
    let mut content_types: HashMap<String, String> = HashMap::new();
    for (_, b) in bodies {
        let row = &b["row"];
        match b["table"].as_str() {
            Some("fetches") => {
                if let (Some(sha), Some(ct)) = (row["sha256"].as_str(), row["content_type"].as_str()) {
                    content_types.insert(sha.to_string(), ct.to_string());
                }
            }
            Some("mapping_files") => {
                if let (Some(sha), Some(file), Some(content)) = (
                    row["sha256"].as_str(),
                    row["file"].as_str(),
                    text_of(&row["content"]),
                ) {
                    files.insert(sha.to_string(), (file.to_string(), content));
                }
            }
            Some("raw_documents") => {
                if let (Some(sha), Some(h)) = (row["sha256"].as_str(), row["bytes"]["blob_sha256"].as_str())
                    && let Some(b) = bytes.get(h)
                {
                    documents.insert(sha.to_string(), b.clone());
                }
            }
            _ => {}
        }
    }
    // Each materials check's licence facts, mapped again from the licence library's XML.
    for (index, b) in bodies {
        if b["table"].as_str() != Some("materials_checks") || b["row"]["lineage"].is_null() {
            continue;
        }
        let row = &b["row"];
        let name = format!("materials check {} (entry {index})", b["key"]);
        let Some(lineage_text) = text_of(&row["lineage"]) else {
            report.unchecked.push(format!("{name}: its lineage is withheld"));
            continue;
        };
        let Some(lineage) = read_lineage(&name, &lineage_text, report) else {
            continue;
        };
        let Some(today) = day_of(&row["checked_at"]) else {
            report.problems.push(format!("{name}: no check time"));
            continue;
        };
        report.materials_checks += 1;
        for src in sources(&name, &lineage, &documents, &files, report) {
            let content_type = content_types.get(&src.doc_sha).map(String::as_str);
            match remap_xml(src.file, src.text, src.raw, content_type, &src.doc_sha, today) {
                Ok(facts) => compare_lineage(&name, &src.fields, &facts, report),
                Err(e) => report.problems.push(format!(
                    "{name}: document {} mapped with {}: {e}",
                    src.doc_sha, src.file
                )),
            }
        }
    }
    for (index, b) in bodies {
        if b["table"].as_str() != Some("record_versions") {
            continue;
        }
        let row = &b["row"];
        let name = format!("record version {} (entry {index})", b["key"]);
        let (Some(content), Some(lineage_text)) = (text_of(&row["content"]), text_of(&row["lineage"])) else {
            report
                .unchecked
                .push(format!("{name}: content or lineage withheld"));
            continue;
        };
        report.versions += 1;
        let Ok(content) = serde_json::from_str::<serde_json::Value>(&content) else {
            report.problems.push(format!("{name}: its content is not JSON"));
            continue;
        };
        let Some(lineage) = read_lineage(&name, &lineage_text, report) else {
            continue;
        };
        let Some(today) = day_of(&row["created_at"]) else {
            report.problems.push(format!("{name}: no creation time"));
            continue;
        };
        for src in sources(&name, &lineage, &documents, &files, report) {
            let (facts, assembled) =
                match remap(src.file, src.text, src.raw, &src.doc_sha, &src.fields, today) {
                    Ok(f) => f,
                    Err(e) => {
                        report.problems.push(format!(
                            "{name}: document {} mapped with {}: {e}",
                            src.doc_sha, src.file
                        ));
                        continue;
                    }
                };
            let before = report.problems.len();
            compare_lineage(&name, &src.fields, &facts, report);
            if report.problems.len() > before {
                continue;
            }
            // The values as the record's assembly makes them from the facts (a status code
            // becomes the record's state, for instance).
            for (field, _) in &src.fields {
                if crate::mask::value_at(&content, field) != crate::mask::value_at(&assembled, field) {
                    report.problems.push(format!(
                        "{name}: field {field}: the record's value is not what the mapping gives from the raw bytes"
                    ));
                }
            }
        }
    }
}

/// The day an instant fell on, Beijing time: the `today` a mapping ran with.
fn day_of(v: &serde_json::Value) -> Option<chrono::NaiveDate> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| crate::worktime::date_of(t.with_timezone(&chrono::Utc)))
}

type Fields<'l> = Vec<(&'l String, &'l crate::mapping::Lineage)>;

/// A stored lineage read back, or the problem named.
fn read_lineage(
    name: &str,
    text: &str,
    report: &mut Report,
) -> Option<BTreeMap<String, crate::mapping::Lineage>> {
    match lineage::from_json(text) {
        Ok((lineage, _)) => Some(lineage),
        Err(e) => {
            report
                .problems
                .push(format!("{name}: its lineage is unreadable: {e}"));
            None
        }
    }
}

/// The fields of a lineage read from one document with one mapping file, both from the
/// package.
struct Source<'a> {
    doc_sha: String,
    raw: &'a [u8],
    file: &'a str,
    text: &'a str,
    fields: Fields<'a>,
}

/// A lineage's fields grouped by the (document, mapping file) they were read with, where both
/// are in the package. A withheld document is named as not checked; a mapping file the
/// lineage names and the package lacks is a problem.
fn sources<'a>(
    name: &str,
    lineage: &'a BTreeMap<String, crate::mapping::Lineage>,
    documents: &'a HashMap<String, Vec<u8>>,
    files: &'a HashMap<String, (String, String)>,
    report: &mut Report,
) -> Vec<Source<'a>> {
    let mut groups: BTreeMap<(String, String), Fields<'a>> = BTreeMap::new();
    for (field, l) in lineage {
        groups
            .entry((l.document.to_string(), l.mapping_sha256.to_string()))
            .or_default()
            .push((field, l));
    }
    let mut out = Vec::new();
    for ((doc_sha, mapping_sha), fields) in groups {
        let Some(raw) = documents.get(&doc_sha) else {
            report.unchecked.push(format!(
                "{name}: {} fields read from document {doc_sha}, withheld or not in the package",
                fields.len()
            ));
            continue;
        };
        let Some((file, text)) = files.get(&mapping_sha) else {
            report.problems.push(format!(
                "{name}: the mapping file {mapping_sha} its lineage names is not in the package"
            ));
            continue;
        };
        out.push(Source {
            doc_sha,
            raw,
            file,
            text,
            fields,
        });
    }
    out
}

/// Each stored field's lineage against what the mapping reads from the document now: the same
/// path, raw text and transforms.
fn compare_lineage(name: &str, fields: &Fields<'_>, facts: &crate::mapping::Facts, report: &mut Report) {
    for (field, stored) in fields {
        report.fields += 1;
        match facts.fields.get(field.as_str()) {
            None => report.problems.push(format!(
                "{name}: field {field}: the mapping does not produce it from the document"
            )),
            Some(fact) => {
                let l = &fact.lineage;
                if l.path != stored.path || l.raw != stored.raw || l.transforms != stored.transforms {
                    report.problems.push(format!(
                        "{name}: field {field}: its lineage ({}) is not what the mapping reads from the document ({})",
                        stored.path, l.path
                    ));
                }
            }
        }
    }
}

/// Maps a licence library answer again: its bytes decoded as the client decodes them (GBK or
/// UTF-8, by its content type and declaration), parsed, and mapped with the file's text.
fn remap_xml(
    file: &str,
    text: &str,
    raw: &[u8],
    content_type: Option<&str>,
    doc_sha: &str,
    today: chrono::NaiveDate,
) -> Result<crate::mapping::Facts, String> {
    let mapping = crate::mapping::compile(file, text).map_err(|e| e.to_string())?;
    let decoded = shuiwu_licences::xml::decode(raw, content_type).map_err(|e| e.to_string())?;
    let root = shuiwu_licences::xml::parse(&decoded).map_err(|e| e.to_string())?;
    let ctx = crate::mapping::Context { today };
    crate::mapping::apply(&mapping, crate::mapping::Document::Xml(&root), doc_sha, &ctx)
        .map_err(|e| e.to_string())
}

/// Maps a raw document again with a mapping file's text. A document whose mapped object sat
/// at a place known only when it was read (a listing item, a webhook's application) is mapped
/// from that place, which the stored paths begin with.
fn remap(
    file: &str,
    text: &str,
    raw: &[u8],
    doc_sha: &str,
    fields: &[(&String, &crate::mapping::Lineage)],
    today: chrono::NaiveDate,
) -> Result<(crate::mapping::Facts, serde_json::Value), String> {
    let mapping = crate::mapping::compile(file, text).map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let ctx = crate::mapping::Context { today };
    // Where the mapped object is: the stored path of a top-level field, less the field's path.
    let at = fields.iter().find_map(|(name, l)| {
        mapping
            .fields
            .iter()
            .find(|f| &f.name == *name)
            .and_then(|f| l.path.strip_suffix(f.path.as_str()))
            .map(str::to_string)
    });
    let at = at.filter(|at| *at != mapping.root);
    let document = match &at {
        Some(at) => crate::mapping::Document::JsonAt(&doc, at),
        None => crate::mapping::Document::Json(&doc),
    };
    let facts = crate::mapping::apply(&mapping, document, doc_sha, &ctx).map_err(|e| e.to_string())?;
    // A project is read from the whole document; a power-side application from its place.
    let assembled = match at {
        None => crate::record::assemble(facts.clone(), doc_sha),
        Some(_) => crate::record::assemble_power(facts.clone(), doc_sha),
    }
    .map_err(|e| e.to_string())?;
    let record = match assembled {
        crate::record::Assembled::Record(draft) => {
            serde_json::to_value(&draft.record).map_err(|e| e.to_string())?
        }
        crate::record::Assembled::Skip(why) => return Err(format!("the mapping skips the document: {why}")),
    };
    Ok((facts, record))
}
