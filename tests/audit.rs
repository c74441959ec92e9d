//! The operators' audit log is hash-chained: an edit, a deletion or a reordering is detected.
#![cfg(feature = "simulators")]

mod common;

use common::cli::gateway;

#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(
        gateway(&["demo", "--projects", "20", "--dir", d])
            .status
            .success()
    );
    let db = dir.path().join("gateway.db");
    let dbs = db.to_str().unwrap();
    let id = "PE-2022-530112-47-01-587143";
    assert!(
        gateway(&["--db", dbs, "record", "event", id, "accepted", "--by", "张工"])
            .status
            .success()
    );
    assert!(
        gateway(&[
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
            "调岗"
        ])
        .status
        .success()
    );

    let verify = || {
        let out = gateway(&["--db", dbs, "audit", "verify", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v["operators_chain"].clone())
    };
    let (ok, v) = verify();
    assert!(ok, "{v}");
    assert!(
        v["entries"].as_i64().unwrap() >= 4,
        "two sync passes and two operator actions: {v}"
    );
    let list = String::from_utf8(gateway(&["--db", dbs, "audit", "list"]).stdout).unwrap();
    assert!(
        list.contains("manager_reassigned") && list.contains("sync_pass"),
        "{list}"
    );

    // Each kind of tampering on its own copy of the database, checked with the gateway's key.
    let key = String::from_utf8(gateway(&["--db", dbs, "audit", "key"]).stdout).unwrap();
    let key = key.trim();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    drop(conn);
    let tamper = |sql: &str| -> serde_json::Value {
        let copy = dir.path().join("copy.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", copy.display()));
        }
        std::fs::copy(&db, &copy).unwrap();
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch(sql).unwrap();
        let out = gateway(&[
            "--db",
            copy.to_str().unwrap(),
            "audit",
            "verify",
            "--json",
            "--key",
            key,
        ]);
        assert!(!out.status.success(), "{sql}: tampering went unnoticed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The transparency log names the same change.
        assert!(!v["log"]["findings"].as_array().unwrap().is_empty(), "{v}");
        v["operators_chain"].clone()
    };
    // An edit.
    let v = tamper("UPDATE audit_log SET actor = '某人' WHERE seq = 3;");
    assert_eq!(v["broken_at"][0], 3, "{v}");
    assert!(v["broken_at"][1].as_str().unwrap().contains("edited"));
    // A deletion.
    let v = tamper("DELETE FROM audit_log WHERE seq = 2;");
    assert_eq!(v["broken_at"][0], 3, "{v}");
    // A reordering: two entries swap places.
    let v = tamper(
        "UPDATE audit_log SET seq = -3 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -3;",
    );
    assert_eq!(v["broken_at"][0], 3, "{v}");
    // The newest entry deleted: the log's head still names it.
    let last = v["entries"].as_i64().unwrap();
    let v = tamper(&format!("DELETE FROM audit_log WHERE seq = {last};"));
    assert_eq!(v["broken_at"][0], last, "{v}");
    assert!(v["broken_at"][1].as_str().unwrap().contains("deleted"), "{v}");
    // The original is still intact.
    assert!(verify().0);
}
