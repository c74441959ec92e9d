//! An entry's text and a row's text: made from the values SQLite's pre-update hook hands over
//! (`capture.rs`), and made again inside SQL by the functions `tlog_row`, `tlog_entry` and
//! `tlog_leaf`, which `audit verify` and the adoption of old rows call over whole tables. Both
//! go through [`row_text`] and [`entry_text`], so what is compared is made by the same code.
//!
//! ```json
//! {"step":"fetch","table":"fetches","key":[12],"row":"<SHA-256 of the row's text>"}
//! ```
//!
//! `row` is `null` for a deleted row. The row's text (`tlog_row`, kept in evidence packages
//! beside the entry) is its columns by name, in the schema's order:
//!
//! ```json
//! {"id":12,"sha256":"3f…","source":"approval","method":"POST",…,"run_id":3}
//! ```
//!
//! A value longer than [`INLINE`] bytes (a record version's content, a raw document's bytes)
//! is written there as `{"sha256": hex, "bytes": n}` (`blob_sha256` for binary values). An
//! entry is about a hundred bytes whatever the row, and still pins every byte of it.

use std::io::Write as _;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Error};
use sha2::{Digest, Sha256};

use crate::tlog::tree::TreeHash;

/// Values up to this many bytes are written into an entry as they are; longer ones as their
/// SHA-256.
pub const INLINE: usize = 128;

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

fn user_error(why: &str) -> Error {
    Error::UserFunctionError(why.to_string().into())
}

fn text<'a>(ctx: &'a Context<'_>, i: usize, what: &str) -> rusqlite::Result<&'a str> {
    match ctx.get_raw(i) {
        ValueRef::Text(t) => std::str::from_utf8(t).map_err(|_| user_error(what)),
        _ => Err(user_error(what)),
    }
}

/// Writes a JSON string (serde_json's escaping).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn digest(out: &mut Vec<u8>, field: &str, bytes: &[u8]) {
    let _ = write!(
        out,
        "{{\"{field}\":\"{}\",\"bytes\":{}}}",
        hex::encode(Sha256::digest(bytes)),
        bytes.len()
    );
}

/// Checks the arguments of `tlog_entry` and `tlog_row`: (table, key_json [, column, value]…).
fn arguments<'a>(ctx: &'a Context<'_>, name: &str) -> rusqlite::Result<(&'a str, &'a str)> {
    if ctx.len() < 2 || !ctx.len().is_multiple_of(2) {
        return Err(user_error(&format!("{name}(table, key, [column, value]…)")));
    }
    Ok((
        text(ctx, 0, "the table is not text")?,
        text(ctx, 1, "the key is not JSON text")?,
    ))
}

/// Writes one value as a row's text holds it.
fn write_value(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(v) => {
            let _ = write!(out, "{v}");
        }
        ValueRef::Real(v) => {
            let _ = serde_json::to_writer(&mut *out, &v);
        }
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if t.len() <= INLINE => json_str(out, s),
            _ => digest(out, "sha256", t),
        },
        ValueRef::Blob(b) => digest(out, "blob_sha256", b),
    }
}

/// A row's text: its columns by name, in order.
pub fn row_text<'v>(columns: impl Iterator<Item = (&'v str, ValueRef<'v>)>) -> String {
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    for (n, (name, value)) in columns.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        json_str(&mut out, name);
        out.push(b':');
        write_value(&mut out, value);
    }
    out.push(b'}');
    // Only valid UTF-8 was written: JSON text, escaped strings and ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// A key's text: the JSON array of its values.
pub fn key_text<'v>(values: impl Iterator<Item = ValueRef<'v>>) -> String {
    let mut out = Vec::with_capacity(48);
    out.push(b'[');
    for (n, v) in values.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        // Keys are short: written as they are, never as a hash.
        match v {
            ValueRef::Text(t) => json_str(&mut out, &String::from_utf8_lossy(t)),
            other => write_value(&mut out, other),
        }
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

/// An entry's text: the row's table, key and the SHA-256 (hex) of its text, or `None` for a
/// deleted row.
pub fn entry_text(table: &str, key: &str, row_sha256: Option<&str>) -> String {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"step\":");
    json_str(&mut out, step_of(table));
    out.extend_from_slice(b",\"table\":");
    json_str(&mut out, table);
    out.extend_from_slice(b",\"key\":");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b",\"row\":");
    match row_sha256 {
        Some(h) => {
            let _ = write!(out, "\"{h}\"}}");
        }
        None => out.extend_from_slice(b"null}"),
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The (column, value) arguments of the SQL functions.
fn columns<'a>(ctx: &'a Context<'_>) -> rusqlite::Result<Vec<(&'a str, ValueRef<'a>)>> {
    (2..ctx.len())
        .step_by(2)
        .map(|i| Ok((text(ctx, i, "a column name is not text")?, ctx.get_raw(i + 1))))
        .collect()
}

/// `tlog_row(table, key_json, [column, value]…)`: a row's text.
fn row(ctx: &Context<'_>) -> rusqlite::Result<String> {
    arguments(ctx, "tlog_row")?;
    Ok(row_text(columns(ctx)?.into_iter()))
}

/// `tlog_entry(table, key_json [, column, value]…)`: the entry of a row as it is, or of its
/// deletion when no columns are given.
fn entry(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let (table, key) = arguments(ctx, "tlog_entry")?;
    if ctx.len() == 2 {
        return Ok(entry_text(table, key, None));
    }
    let row = row_text(columns(ctx)?.into_iter());
    Ok(entry_text(
        table,
        key,
        Some(&hex::encode(Sha256::digest(row.as_bytes()))),
    ))
}

/// `tlog_leaf(tree_hash, entry)`: the entry's RFC 9162 leaf hash.
fn leaf(ctx: &Context<'_>) -> rusqlite::Result<Vec<u8>> {
    let tree = TreeHash::from_name(text(ctx, 0, "tlog_leaf: the tree hash is not text")?)
        .ok_or_else(|| user_error("tlog_leaf: unknown tree hash"))?;
    let body = match ctx.get_raw(1) {
        ValueRef::Text(t) => t,
        _ => return Err(user_error("tlog_leaf: the entry is not text")),
    };
    Ok(tree.leaf(body).to_vec())
}

/// Makes `tlog_entry`, `tlog_row` and `tlog_leaf` known to a connection (every connection the
/// store opens has them).
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tlog_entry", -1, flags, |ctx| entry(ctx))?;
    conn.create_scalar_function("tlog_leaf", 2, flags, |ctx| leaf(ctx))?;
    conn.create_scalar_function("tlog_row", -1, flags, |ctx| row(ctx))?;
    Ok(())
}
