//! Capturing row changes as they happen: SQLite's pre-update hook on the writer's connection
//! sees every row each statement inserts, updates or deletes, in every table, with its values.
//! The hook writes down the table, the key and the SHA-256 of the row's text; the commit
//! (`seal`) turns them into entries. Nothing is read back from the tables, and no trigger
//! makes every statement keep a statement journal (with triggers the backfill was 45 % slower).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::hooks::PreUpdateCase;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::entry::{key_text, row_text};
use super::{Table, tables};
use crate::store::Result;

/// One row changed: its table, key text, and its text's SHA-256 (hex) or `None` when it was
/// deleted. `Err` when its values could not be read: the transaction is refused.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<str>,
    pub key: String,
    pub row: std::result::Result<Option<String>, String>,
}

/// The changes of the transaction in progress, shared by the hook and the store.
pub type Captured = Arc<Mutex<Vec<Change>>>;

struct Shape {
    name: Arc<str>,
    columns: Vec<String>,
    /// Positions of the key's columns.
    key: Vec<i32>,
}

impl Shape {
    fn of(t: &Table) -> Shape {
        Shape {
            name: t.name.as_str().into(),
            key: t
                .key
                .iter()
                .filter_map(|k| t.columns.iter().position(|c| c == k).map(|i| i as i32))
                .collect(),
            columns: t.columns.clone(),
        }
    }

    fn change<'a>(&self, value: impl Fn(i32) -> rusqlite::Result<ValueRef<'a>>, deleted: bool) -> Change {
        let read = || -> rusqlite::Result<(String, Option<String>)> {
            let key = self
                .key
                .iter()
                .map(|&i| value(i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let key = key_text(key.into_iter());
            if deleted {
                return Ok((key, None));
            }
            let values = (0..self.columns.len() as i32)
                .map(&value)
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let row = row_text(self.columns.iter().map(String::as_str).zip(values));
            Ok((key, Some(hex::encode(Sha256::digest(row.as_bytes())))))
        };
        match read() {
            Ok((key, row)) => Change {
                table: self.name.clone(),
                key,
                row: Ok(row),
            },
            Err(e) => Change {
                table: self.name.clone(),
                key: String::new(),
                row: Err(e.to_string()),
            },
        }
    }
}

/// Installs the hook on the writer's connection; the schema must be migrated already (the
/// hook knows each table's columns as they are now).
pub fn install(conn: &mut Connection, captured: Captured) -> Result<()> {
    let shapes: HashMap<String, Shape> = tables(conn)?
        .iter()
        .map(|t| (t.name.clone(), Shape::of(t)))
        .collect();
    conn.preupdate_hook(Some(
        move |_action, db: &str, table: &str, case: &PreUpdateCase| {
            if db != "main" {
                return;
            }
            // The log's own tables, SQLite's, and any table not in the schema at start.
            let Some(shape) = shapes.get(table) else {
                return;
            };
            let mut changes = captured.lock().unwrap_or_else(|e| e.into_inner());
            match case {
                PreUpdateCase::Insert(new) => {
                    changes.push(shape.change(|i| new.get_new_column_value(i), false));
                }
                PreUpdateCase::Delete(old) => {
                    changes.push(shape.change(|i| old.get_old_column_value(i), true));
                }
                PreUpdateCase::Update {
                    old_value_accessor: old,
                    new_value_accessor: new,
                } => {
                    let gone = shape.change(|i| old.get_old_column_value(i), true);
                    let now = shape.change(|i| new.get_new_column_value(i), false);
                    // A changed key: the row under the old key is gone.
                    if gone.key != now.key {
                        changes.push(gone);
                    }
                    changes.push(now);
                }
                PreUpdateCase::Unknown => changes.push(Change {
                    table: shape.name.clone(),
                    key: String::new(),
                    row: Err("a change SQLite did not describe".into()),
                }),
            }
        },
    ))?;
    Ok(())
}
