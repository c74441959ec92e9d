//! The transparency log against someone with write access to the database file and without
//! the key: for every table, an edited row, a deleted row, two rows swapped, a truncated tail
//! and an edit whose entry and tree hashes were recomputed are each found by `audit verify`,
//! which names the table, the row and the entry.
#![cfg(feature = "simulators")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use common::cli::{gateway, ok};
use gateway::store::Store;
use gateway::store::tlog::{Finding, Verification};
use gateway::tlog::checkpoint::{Signer, Verifier};
use gateway::tlog::tree::{Frontier, TreeHash};
use rusqlite::Connection;
use rusqlite::types::Value;

/// A database in which every table has rows, made by the real gateway (a demo sync, an
/// operator's stage event and reassignment, a remap) and, for what the demo does not reach,
/// by the store's own calls (a listing miss, a deadline alert, a webhook event).
fn full_database(dir: &Path) -> PathBuf {
    let db = common::cli::demo(dir, 20);
    let dbs = db.to_str().unwrap();
    let id = "PE-2022-530112-47-01-587143";
    ok(&gateway(&[
        "--db", dbs, "record", "event", id, "accepted", "--by", "张工",
    ]));
    ok(&gateway(&[
        "--db",
        dbs,
        "record",
        "reassign",
        id,
        "--manager",
        "TY-02",
        "--by",
        "主管",
        "--reason",
        "调岗",
    ]));
    ok(&gateway(&["--db", dbs, "remap", "--by", "审计"]));
    ok(&gateway(&["--db", dbs, "remap", "--by", "审计", "--project", id]));

    let store = Store::open(&db).unwrap();
    let key = std::fs::read_to_string(gateway::audit::key::default_path(&db)).unwrap();
    store
        .set_signer(Signer::from_private_text(&key).unwrap())
        .unwrap();
    let now = Utc::now();
    for (key, version) in [("2026-530102-47-01-000001", 2), ("2026-530102-47-01-000002", 5)] {
        let key = gateway::store::SourceKey {
            source: "approval".into(),
            key: key.into(),
            version,
        };
        // At different times, so that the two rows differ in more than their keys.
        store
            .fetch_miss(&key, now + chrono::Duration::seconds(version))
            .unwrap();
    }
    assert!(
        store
            .raise_alert(id, "design", "warning", "2026-12-01T08:00:00.000Z", now)
            .unwrap()
    );
    let later = now + chrono::Duration::seconds(1);
    assert!(
        store
            .raise_alert(id, "design", "alarm", "2026-12-02T08:00:00.000Z", later)
            .unwrap()
    );
    // A webhook event: the newest version of an application the power side's listing gave.
    let page: Vec<u8> = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT d.bytes FROM raw_documents d JOIN fetches f ON f.sha256 = d.sha256
             WHERE f.source = 'power' AND f.url LIKE '%/applications%' AND d.bytes LIKE '%\"applicationId\"%' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
    let mappings = gateway::mapping::MappingSet::load(None).unwrap();
    let rebuilder = gateway::rebuild::Rebuilder::new(
        mappings.get(gateway::app::PROJECT_MAPPING).unwrap(),
        Arc::new(gateway::policy::Rules::load(None).unwrap()),
    );
    for n in 0..2 {
        let mut app: shuiwu_power::wire::Application =
            serde_json::from_value(page["items"][n].clone()).unwrap();
        app.version += 1;
        let event = format!("ev-audit-{n}");
        let body = serde_json::json!({"eventId": event, "type": "application.updated", "application": app});
        let raw = shuiwu_wire::RawDocument {
            bytes: serde_json::to_vec(&body).unwrap().into(),
            meta: shuiwu_wire::FetchMeta {
                source: "power".into(),
                method: "POST".into(),
                url: "/webhooks/power".into(),
                status: 200,
                request_id: None,
                content_type: Some("application/json".into()),
                fetched_at: now,
            },
        };
        assert!(
            store
                .receive_power_event(&event, "application.updated", &app, &raw, &rebuilder, now)
                .unwrap()
        );
    }
    drop(store);
    // One file, so that a copy is the whole database.
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    db
}

fn tables(conn: &Connection) -> Vec<(String, Vec<String>, Vec<String>)> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'tlog_%' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
        .into_iter()
        .map(|t| {
            let mut cols: Vec<(i64, String, i64)> = conn
                .prepare("SELECT cid, name, pk FROM pragma_table_info(?1)")
                .unwrap()
                .query_map([&t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            cols.sort();
            let mut key: Vec<(i64, String)> = cols
                .iter()
                .filter(|c| c.2 > 0)
                .map(|c| (c.2, c.1.clone()))
                .collect();
            key.sort();
            let all = cols.into_iter().map(|c| c.1).collect();
            (t, key.into_iter().map(|k| k.1).collect(), all)
        })
        .collect()
}

/// A row: its key text as the log writes it, and every column's value.
fn rows(conn: &Connection, table: &str, key: &[String], cols: &[String]) -> Vec<(String, Vec<Value>)> {
    let key_expr = format!(
        "json_array({})",
        key.iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stmt = conn
        .prepare(&format!("SELECT {key_expr}, * FROM \"{table}\" ORDER BY 1"))
        .unwrap();
    stmt.query_map([], |r| {
        let k: String = r.get(0)?;
        let values = (0..cols.len())
            .map(|i| r.get::<_, Value>(i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            serde_json::from_str::<serde_json::Value>(&k).unwrap().to_string(),
            values,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn where_key(key: &[String]) -> String {
    key.iter()
        .enumerate()
        .map(|(i, k)| format!("\"{k}\" = json_extract(?1, '$[{i}]')"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Changes one value of the row that is not part of its key, trying columns until the
/// table's constraints accept the change.
fn edit(conn: &Connection, table: &str, key: &[String], cols: &[String], row: &(String, Vec<Value>)) {
    for (c, v) in cols.iter().zip(&row.1) {
        if key.contains(c) {
            continue;
        }
        let changed = match v {
            Value::Integer(n) => Value::Integer(n + 1),
            Value::Text(t) => Value::Text(format!("{t}x")),
            Value::Blob(b) => Value::Blob([b.as_slice(), b"x"].concat()),
            Value::Null => Value::Text("x".into()),
            Value::Real(f) => Value::Real(f + 1.0),
        };
        let sql = format!("UPDATE \"{table}\" SET \"{c}\" = ?2 WHERE {}", where_key(key));
        if conn.execute(&sql, rusqlite::params![row.0, changed]).is_ok() {
            return;
        }
    }
    panic!("no column of {table} {} could be edited", row.0);
}

/// A copy of the database opened as someone with the file and the `sqlite3` tool would open
/// it: without the gateway's capture of row changes, and without foreign-key checks.
fn tamperable_copy(db: &Path, copy: &Path) -> Connection {
    std::fs::copy(db, copy).unwrap();
    let conn = Connection::open(copy).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    conn
}

struct Case {
    dir: tempfile::TempDir,
    db: PathBuf,
    verifier: Verifier,
    trusted: String,
}

impl Case {
    /// A [`tamperable_copy`] beside the database.
    fn copy(&self, name: &str) -> (PathBuf, Connection) {
        let copy = self.dir.path().join(format!("{name}.db"));
        let conn = tamperable_copy(&self.db, &copy);
        (copy, conn)
    }

    fn verify(&self, db: &Path) -> Verification {
        let v = Store::open(db)
            .unwrap()
            .audit_verify(&self.verifier, Some(&self.trusted))
            .unwrap();
        assert!(!v.intact(), "{}: the change went unnoticed", db.display());
        v
    }
}

fn names(v: &Verification, table: &str, key: &str, what: &str) -> bool {
    v.findings.iter().any(|f| {
        f.table.as_deref() == Some(table)
            && f.key.as_deref() == Some(key)
            && f.what.contains(what)
            && f.entry.is_some()
    })
}

fn show(v: &Verification) -> String {
    v.findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites the log's head from the entries as they are: size and right edge.
fn recompute_head(conn: &Connection, tree: TreeHash) {
    let leaves: Vec<Vec<u8>> = conn
        .prepare("SELECT leaf FROM tlog_entries ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut edge = Frontier::default();
    for l in &leaves {
        edge.push(tree, l.as_slice().try_into().unwrap());
    }
    conn.execute(
        "UPDATE tlog_head SET size = ?1, frontier = ?2",
        rusqlite::params![leaves.len() as i64, edge.to_bytes()],
    )
    .unwrap();
}

/// The newest entry that logged a row.
fn entry_of(conn: &Connection, table: &str, key: &str) -> i64 {
    conn.query_row(
        "SELECT max(idx) FROM tlog_entries WHERE json_extract(body, '$.table') = ?1 AND json(json_extract(body, '$.key')) = json(?2)",
        [table, key],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn every_kind_of_tampering_with_every_table_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = full_database(dir.path());
    let dbs = db.to_str().unwrap();
    let verify_cli = gateway(&["--db", dbs, "audit", "verify"]);
    let text = ok(&verify_cli);
    assert!(text.contains("audit log intact"), "{text}");
    let public = ok(&gateway(&["--db", dbs, "audit", "key"])).trim().to_string();
    let trusted = ok(&gateway(&["--db", dbs, "audit", "checkpoint"]));
    let case = Case {
        verifier: Verifier::parse(&public).unwrap(),
        trusted,
        db: db.clone(),
        dir,
    };
    let conn = Connection::open(&db).unwrap();
    let tree = TreeHash::Sha256;
    let all = tables(&conn);
    assert!(all.len() >= 21, "{all:?}");
    let mut swapped = Vec::new();
    for (table, key, cols) in &all {
        let rows = rows(&conn, table, key, cols);
        assert!(
            !rows.is_empty(),
            "{table} has no rows: the test database does not reach it"
        );
        let last = rows.last().unwrap();

        // An edited value.
        let (copy, c) = case.copy(&format!("{table}-edit"));
        edit(&c, table, key, cols, last);
        drop(c);
        let v = case.verify(&copy);
        assert!(
            names(&v, table, &last.0, "differs"),
            "edit of {table} {}:\n{}",
            last.0,
            show(&v)
        );

        // A deleted row.
        let (copy, c) = case.copy(&format!("{table}-delete"));
        c.execute(
            &format!("DELETE FROM \"{table}\" WHERE {}", where_key(key)),
            [&last.0],
        )
        .unwrap();
        drop(c);
        let v = case.verify(&copy);
        assert!(
            names(&v, table, &last.0, "deleted"),
            "deletion from {table} {}:\n{}",
            last.0,
            show(&v)
        );

        // Two rows swapped: each key now holds the other's values.
        if let Some(other) = rows.iter().rev().skip(1).find(|r| {
            r.1.iter()
                .zip(&last.1)
                .zip(cols)
                .any(|((a, b), c)| !key.contains(c) && a != b)
        }) {
            let (copy, c) = case.copy(&format!("{table}-swap"));
            let placeholders = (1..=cols.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let insert = format!("INSERT INTO \"{table}\" VALUES ({placeholders})");
            for r in [last, other] {
                c.execute(
                    &format!("DELETE FROM \"{table}\" WHERE {}", where_key(key)),
                    [&r.0],
                )
                .unwrap();
            }
            for (keep, take) in [(last, other), (other, last)] {
                let values: Vec<Value> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, col)| {
                        if key.contains(col) {
                            keep.1[i].clone()
                        } else {
                            take.1[i].clone()
                        }
                    })
                    .collect();
                c.execute(&insert, rusqlite::params_from_iter(values)).unwrap();
            }
            drop(c);
            let v = case.verify(&copy);
            swapped.push(table.clone());
            assert!(
                names(&v, table, &last.0, "differs") && names(&v, table, &other.0, "differs"),
                "swap in {table} of {} and {}:\n{}",
                last.0,
                other.0,
                show(&v)
            );
        }

        // A truncated tail: the row, its entry and every entry and checkpoint after it
        // deleted, the head rewritten to match. Only a checkpoint kept elsewhere shows it.
        let at = entry_of(&conn, table, &last.0);
        let (copy, c) = case.copy(&format!("{table}-truncate"));
        c.execute(
            &format!("DELETE FROM \"{table}\" WHERE {}", where_key(key)),
            [&last.0],
        )
        .unwrap();
        c.execute("DELETE FROM tlog_entries WHERE idx >= ?1", [at])
            .unwrap();
        c.execute("DELETE FROM tlog_checkpoints WHERE size > ?1", [at])
            .unwrap();
        recompute_head(&c, tree);
        drop(c);
        let v = case.verify(&copy);
        assert!(
            v.findings.iter().any(|f| f.entry == Some(at as u64)
                && f.what.contains("trusted checkpoint")
                && f.what.contains("truncated")),
            "truncation of {table} at entry {at}:\n{}",
            show(&v)
        );

        // An edit whose entry, leaf and head were recomputed: only the signature is missing.
        let (copy, c) = case.copy(&format!("{table}-forged"));
        // The forger has the gateway's code, so the entry functions too.
        gateway::store::tlog::register(&c).unwrap();
        edit(&c, table, key, cols, last);
        let forged = gateway::store::tlog::entry_now(&c, table, &last.0).unwrap();
        c.execute(
            "UPDATE tlog_entries SET body = ?2, leaf = ?3 WHERE idx = ?1",
            rusqlite::params![at, forged, tree.leaf(forged.as_bytes()).to_vec()],
        )
        .unwrap();
        recompute_head(&c, tree);
        drop(c);
        let v = case.verify(&copy);
        assert!(
            !names(&v, table, &last.0, "differs"),
            "the forged entry matches its row, so the row check alone passes:\n{}",
            show(&v)
        );
        assert!(
            v.findings
                .iter()
                .any(|f| f.what.contains("recomputed without the key")
                    && f.entry.is_some_and(|e| e <= at as u64)),
            "forged entry {at} for {table}:\n{}",
            show(&v)
        );
    }

    // Every table but the chain's head, which has one row, had two rows swapped.
    assert_eq!(swapped.len() + 1, all.len(), "swapped only in {swapped:?}");

    // The command line names the same: exit 1 and the row.
    let (copy, c) = case.copy("cli");
    c.execute(
        "UPDATE fetches SET status = 500 WHERE id = (SELECT max(id) FROM fetches)",
        [],
    )
    .unwrap();
    drop(c);
    let out = gateway(&[
        "--db",
        copy.to_str().unwrap(),
        "audit",
        "verify",
        "--key",
        &public,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AUDIT LOG BROKEN") && text.contains("fetches ["),
        "{text}"
    );
}

/// The coverage ledger proves the listings were read without a gap; a window deleted from it
/// (or stretched over its neighbour) is named, and `audit verify` names the row too.
#[test]
fn the_coverage_ledger_names_a_gap_and_an_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 30);
    let dbs = db.to_str().unwrap();
    let text = ok(&gateway(&["--db", dbs, "audit", "coverage"]));
    assert!(
        text.contains("approval: [") && text.contains("read completely, once"),
        "{text}"
    );
    assert!(text.contains("power: ["), "{text}");
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let windows: Vec<(String, String)> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT start, end FROM coverage_windows WHERE source = 'approval' ORDER BY start")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(windows.len() > 20, "a month of day windows: {windows:?}");
    let beijing = |t: &str| {
        shuiwu_wire::format_beijing(
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&Utc),
        )
    };
    let key = ok(&gateway(&["--db", dbs, "audit", "key"])).trim().to_string();
    // `audit coverage` of the approval listing on a copy, over `[from, to)` when given.
    let coverage = |db: &Path, range: Option<(&str, &str)>| {
        let (from, to) = range.map(|(f, t)| (beijing(f), beijing(t))).unzip();
        let mut args = vec![
            "--db",
            db.to_str().unwrap(),
            "audit",
            "coverage",
            "--source",
            "approval",
        ];
        if let (Some(f), Some(t)) = (&from, &to) {
            args.extend(["--from", f.as_str(), "--to", t.as_str()]);
        }
        gateway(&args)
    };

    // A window in the middle deleted: its day is named as never read, here and by verify.
    let (start, end) = &windows[10];
    let copy = dir.path().join("gap.db");
    tamperable_copy(&db, &copy)
        .execute(
            "DELETE FROM coverage_windows WHERE source = 'approval' AND start = ?1",
            [start],
        )
        .unwrap();
    let c = copy.to_str().unwrap();
    let out = coverage(&copy, None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("never read: [{}, {})", beijing(start), beijing(end))),
        "{text}"
    );
    // The question for that day, and for a day elsewhere.
    let out = coverage(&copy, Some((start, end)));
    assert_eq!(out.status.code(), Some(1));
    let (other, other_end) = &windows[3];
    let out = coverage(&copy, Some((other, other_end)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = gateway(&["--db", c, "audit", "verify", "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("coverage_windows [\"approval\"") && text.contains("deleted"),
        "{text}"
    );

    // A window that starts an hour before the previous one ended: an overlap, named.
    let (start, _) = &windows[5];
    let earlier = (chrono::DateTime::parse_from_rfc3339(start).unwrap() - chrono::Duration::hours(1))
        .with_timezone(&Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let copy = dir.path().join("overlap.db");
    tamperable_copy(&db, &copy)
        .execute(
            "UPDATE coverage_windows SET start = ?2 WHERE source = 'approval' AND start = ?1",
            [start, &earlier],
        )
        .unwrap();
    let out = coverage(&copy, None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "read by two windows: [{}, {})",
            beijing(&earlier),
            beijing(start)
        )),
        "{text}"
    );
}

/// An auditor who kept a checkpoint checks, offline, that the log signed later still contains
/// it unchanged; a log rewritten behind the gateway's back does not prove so.
#[test]
fn a_kept_checkpoint_is_proved_contained_in_the_newest_or_the_rewrite_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 20);
    let dbs = db.to_str().unwrap();
    let public = ok(&gateway(&["--db", dbs, "audit", "key"])).trim().to_string();
    let kept = dir.path().join("kept.checkpoint");
    std::fs::write(&kept, ok(&gateway(&["--db", dbs, "audit", "checkpoint"]))).unwrap();
    let id = "PE-2022-530112-47-01-587143";
    ok(&gateway(&[
        "--db", dbs, "record", "event", id, "accepted", "--by", "张工",
    ]));

    let proof = dir.path().join("proof");
    let prove = |db: &Path| {
        ok(&gateway(&[
            "--db",
            db.to_str().unwrap(),
            "audit",
            "consistency",
            "--from",
            kept.to_str().unwrap(),
            "--out",
            proof.to_str().unwrap(),
        ]))
    };
    prove(&db);
    // Checked in an empty directory with the proof, the kept checkpoint and the key.
    let fresh = tempfile::tempdir().unwrap();
    let check = |proof_text: &str| {
        std::fs::write(fresh.path().join("proof"), proof_text).unwrap();
        std::fs::copy(&kept, fresh.path().join("kept")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .current_dir(fresh.path())
            .env_clear()
            .args([
                "audit",
                "check-consistency",
                "proof",
                "--trusted",
                "kept",
                "--key",
                &public,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let text = std::fs::read_to_string(&proof).unwrap();
    let (good, said) = check(&text);
    assert!(good && said.starts_with("consistent"), "{said}");

    // One entry's proof in the C2SP tlog-proof format, checked offline; its entry altered, not.
    let entry_proof = fresh.path().join("entry.tlog-proof");
    ok(&gateway(&[
        "--db",
        dbs,
        "audit",
        "proof",
        "7",
        "--out",
        entry_proof.to_str().unwrap(),
    ]));
    let check_entry = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .current_dir(fresh.path())
            .env_clear()
            .args(["audit", "check-proof", "entry.tlog-proof", "--key", &public])
            .output()
            .unwrap()
    };
    let said = ok(&check_entry());
    assert!(said.starts_with("entry 7 is in the log"), "{said}");
    let tlog_proof = std::fs::read_to_string(&entry_proof).unwrap();
    assert!(
        tlog_proof.starts_with("c2sp.org/tlog-proof@v1\nextra "),
        "{tlog_proof}"
    );
    let extra = tlog_proof.lines().nth(1).unwrap().to_string();
    let altered = extra.replacen("extra e", "extra f", 1);
    std::fs::write(&entry_proof, tlog_proof.replacen(&extra, &altered, 1)).unwrap();
    let out = check_entry();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // A hash of the proof changed.
    let lines: Vec<&str> = text.lines().collect();
    let flipped = lines[3].replacen(
        &lines[3][..1],
        if lines[3].starts_with('A') { "B" } else { "A" },
        1,
    );
    let (good, said) = check(&text.replacen(lines[3], &flipped, 1));
    assert!(!good && said.contains("NOT CONSISTENT"), "{said}");

    // The first entry rewritten, with its leaf and the log's head recomputed: the newest
    // checkpoint (signed before) no longer proves the kept one.
    let copy = dir.path().join("rewritten.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let c = tamperable_copy(&db, &copy);
    let body: String = c
        .query_row("SELECT body FROM tlog_entries WHERE idx = 0", [], |r| r.get(0))
        .unwrap();
    let forged = body.replacen("\"row\":\"", "\"row\":\"0", 1);
    c.execute(
        "UPDATE tlog_entries SET body = ?1, leaf = ?2 WHERE idx = 0",
        rusqlite::params![forged, TreeHash::Sha256.leaf(forged.as_bytes()).to_vec()],
    )
    .unwrap();
    recompute_head(&c, TreeHash::Sha256);
    drop(c);
    prove(&copy);
    let (good, said) = check(&std::fs::read_to_string(&proof).unwrap());
    assert!(!good && said.contains("is not an extension"), "{said}");
}
