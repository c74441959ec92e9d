//! Backups through the real binary: taken while a sync commits, checked, refused over an
//! existing file; a restore refused while a gateway writes, and a restored backup that resumes
//! to exactly the records of an uninterrupted run.
#![cfg(feature = "simulators")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::daemon::{gateway, rows, simulator, wait_for, write_config};
use gateway::cli::EXIT_LOCKED;
use gateway::store::Store;

fn at_db(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_mid_sync_restores_and_resumes_with_nothing_lost() {
    let server = simulator(3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let reference = write_config(dir.path(), "reference", &server, 60);
    let live = write_config(dir.path(), "live", &server, 60);
    let out = tokio::task::block_in_place(|| gateway(&reference, &["sync", "--once"]).output().unwrap());
    assert!(out.status.success(), "{}", stderr(&out));

    // The sync is committing when the backup is taken, from another process.
    let live_db = dir.path().join("live.db");
    let copy = dir.path().join("backups").join("live-copy.db");
    let mut sync: Child = gateway(&live, &["sync", "--once"]).spawn().unwrap();
    tokio::task::block_in_place(|| {
        wait_for(
            "500 versions committed",
            Duration::from_secs(120),
            Some(&mut sync),
            || live_db.exists() && rows(&live_db, "source_versions") >= 500,
        )
    });
    let out = tokio::task::block_in_place(|| {
        at_db(
            &live_db,
            &["backup", copy.to_str().unwrap(), "--by", "值班员", "--json"],
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backed_up = checked["records"].as_i64().unwrap();
    assert!(backed_up > 0, "{checked}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup holds personal data: {mode:o}");
    }
    // A backup never overwrites a file.
    let again = at_db(&live_db, &["backup", copy.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    // The sync is stopped hard; the backup goes back in place of what it left.
    sync.kill().unwrap();
    sync.wait().unwrap();
    let finished = Store::open(&live_db).unwrap().record_count().unwrap();
    // A restore while a gateway holds the database is refused, naming the holder.
    let holder = gateway::store::lock::WriterLock::acquire(&live_db, "now").unwrap();
    let out = at_db(&live_db, &["restore", copy.to_str().unwrap(), "--by", "值班员"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_LOCKED)),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("pid"), "{}", stderr(&out));
    assert_eq!(Store::open(&live_db).unwrap().record_count().unwrap(), finished);
    drop(holder);
    let out = at_db(
        &live_db,
        &["restore", copy.to_str().unwrap(), "--by", "值班员", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = restored["previous"]
        .as_str()
        .expect("the replaced database is kept");
    assert!(Path::new(kept).exists());
    assert_eq!(
        Store::open(Path::new(kept)).unwrap().record_count().unwrap(),
        finished
    );
    let store = Store::open(&live_db).unwrap();
    assert_eq!(store.record_count().unwrap(), backed_up);
    let entries = store.audit_entries().unwrap();
    let last = entries.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("值班员", "restored")
    );
    assert!(
        gateway::store::audit::verify(&entries, store.audit_head().unwrap().as_ref())
            .broken_at
            .is_none()
    );
    drop(store);

    // Resumed from the backup, the sync ends with exactly the reference's records.
    let out = tokio::task::block_in_place(|| gateway(&live, &["sync", "--once"]).output().unwrap());
    assert!(out.status.success(), "{}", stderr(&out));
    let want = Store::open(&dir.path().join("reference.db"))
        .unwrap()
        .fingerprint()
        .unwrap();
    let got = Store::open(&live_db).unwrap().fingerprint().unwrap();
    assert!(want.len() > 1_000, "{} record versions", want.len());
    let all = Store::open(&dir.path().join("reference.db"))
        .unwrap()
        .record_count()
        .unwrap();
    assert!(
        backed_up < all,
        "the backup was taken mid-sync: {backed_up} of {all} records"
    );
    assert_eq!(got, want);
}

#[test]
fn a_damaged_or_foreign_file_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    drop(Store::open(&db).unwrap());
    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let out = at_db(&db, &["restore", foreign.to_str().unwrap(), "--by", "值班员"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a usable backup"), "{}", stderr(&out));
    // A backup whose audit log was edited is refused, naming the entry.
    let copy = dir.path().join("copy.db");
    let store = Store::open(&db).unwrap();
    store
        .audit_event("值班员", "test", "s", "{}", chrono::Utc::now())
        .unwrap();
    store
        .audit_event("值班员", "test", "s", "{}", chrono::Utc::now())
        .unwrap();
    drop(store);
    let out = at_db(&db, &["backup", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute("UPDATE audit_log SET detail = '{\"x\":1}' WHERE seq = 1", [])
        .unwrap();
    let out = at_db(&db, &["restore", copy.to_str().unwrap(), "--by", "值班员"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("audit log breaks at entry 1"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("g.db.restoring").exists());
}
