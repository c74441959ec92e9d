//! The daemon as an operator meets it: one writer per database, passes that a kill ended shown
//! as interrupted, a private database, and another program's database left alone.
#![cfg(feature = "simulators")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use shuiwu_approval::sim::{Fault, Injection, Target};

use common::daemon::{exit_within, gateway, simulator, wait_for, write_config};

/// Starts `gateway run` and waits until it holds the writer lock and has created the database
/// (it takes the lock first, so for a moment a new database does not exist yet).
fn start_daemon(config: &Path, db: &Path) -> Child {
    let mut child = gateway(config, &["run"]).spawn().unwrap();
    let lock = gateway::store::lock::WriterLock::path_for(db);
    let pid = format!("pid={}", child.id());
    let timeout = Duration::from_secs(30);
    wait_for("the daemon to take the lock", timeout, Some(&mut child), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid))
    });
    wait_for(
        "the daemon to create the database",
        timeout,
        Some(&mut child),
        || db.exists(),
    );
    child
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_inspection_keeps_working() {
    let server = simulator(2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let db = dir.path().join("g.db");
    let daemon = start_daemon(&config, &db);
    let pid = daemon.id();

    for args in [&["sync", "--once"][..], &["run"][..]] {
        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || gateway(&config, args).output().unwrap()
        })
        .await
        .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(
            err.contains(&format!("pid {pid}")),
            "{args:?} must name the holder: {err}"
        );
        assert!(
            err.contains(&gateway::store::lock::hostname()),
            "{args:?} must name the host: {err}"
        );
    }
    // Inspection reads beside the writer.
    for args in [&["records", "list"][..], &["runs"][..], &["failures", "list"][..]] {
        let out = gateway(&config, args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    stop(daemon);
    // Once the daemon is gone the database is free again.
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_ended_by_a_kill_shows_as_interrupted() {
    let server = simulator(3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let db = dir.path().join("g.db");
    let mut daemon = start_daemon(&config, &db);
    // Wait until the pass has committed something, then kill it mid-pass.
    let store_seen = || {
        gateway::store::Store::open(&db)
            .and_then(|s| s.record_count())
            .is_ok_and(|n| n > 0)
    };
    wait_for("the first records", Duration::from_secs(30), None, store_seen);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let runs = |config: &Path| -> serde_json::Value {
        let out = gateway(config, &["runs", "--json"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(
        runs(&config)[0]["outcome"],
        "running",
        "killed: nobody closed it yet"
    );
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = runs(&config);
    assert_eq!(after[0]["outcome"], "caught_up");
    assert_eq!(after[1]["outcome"], "interrupted", "{after}");
    assert!(after[1]["processed"].as_i64().unwrap() > 0);
    let text = gateway(&config, &["runs"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("interrupted"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let server = simulator(50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    // The store in a directory that does not exist yet.
    let data = dir.path().join("state").join("gateway");
    let db = data.join("g.db");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("path = \"{}\"", dir.path().join("g.db").display()),
        &format!("path = \"{}\"", db.display()),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = gateway(&config, &["sync", "--once"]);
    // The same command, under the most permissive umask.
    let shell = format!(
        "umask 000; exec {} --config {} sync --once",
        env!("CARGO_BIN_EXE_gateway"),
        config.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(shell)
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    let mut checked = 0;
    for suffix in ["-wal", "-shm", ".lock"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let p = std::path::PathBuf::from(name);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "the lock file at least is there");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(data.parent().unwrap()), 0o700);
    // An existing database readable by others is warned about at start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    cmd.env("RUST_LOG", "warn");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("readable by other users"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn another_programs_sqlite_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('keep me');")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let out = gateway_cmd(&["--db", db.to_str().unwrap(), "records", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a shuiwu-gateway database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file must not change");
    let journal: String = rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "the file must not be switched to WAL");
}

fn gateway_cmd(args: &[&str]) -> Output {
    common::cli::gateway(args)
}

/// Starts the daemon, waits for its first records, then makes every detail request hang.
async fn daemon_with_hanging_details(
    server: &shuiwu_approval::sim::SimServer,
    config: &Path,
    db: &Path,
) -> Child {
    let daemon = start_daemon(config, db);
    let db = db.to_path_buf();
    wait_for("the first records", Duration::from_secs(30), None, || {
        gateway::store::Store::open(&db)
            .and_then(|s| s.record_count())
            .is_ok_and(|n| n > 0)
    });
    server.sim.inject(Injection {
        fault: Fault::Hang { secs: 120 },
        target: Target::Detail,
        times: 1_000_000,
    });
    // Requests now hang in flight (the client's read timeout is 20 s).
    let hung = server.sim.stats().faults_injected;
    wait_for("hanging requests", Duration::from_secs(30), None, || {
        server.sim.stats().faults_injected > hung
    });
    daemon
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_within_seconds_while_requests_hang_and_nothing_is_lost() {
    let server = simulator(3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let db = dir.path().join("g.db");
    let mut daemon = daemon_with_hanging_details(&server, &config, &db).await;
    signal(&daemon, "TERM");
    let status = tokio::task::spawn_blocking(move || exit_within(&mut daemon, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    let runs = gateway::store::Store::open(&db).unwrap().runs(10).unwrap();
    assert_eq!(runs[0].outcome, "interrupted", "{runs:?}");

    // The platform answers again; the next pass completes what the stopped one left.
    server.sim.clear_faults();
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = gateway::store::Store::open(&db).unwrap();
    let now = chrono::Utc::now();
    let missing: Vec<_> = server
        .sim
        .visible_in(now - chrono::Duration::days(30), now)
        .into_iter()
        .filter(|(xmdm, bbh)| {
            store
                .processed_version("approval", xmdm)
                .unwrap()
                .is_none_or(|v| v < *bbh as i64)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} projects lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_while_a_commit_waits() {
    let server = simulator(3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let db = dir.path().join("g.db");
    let mut daemon = start_daemon(&config, &db);
    let db2 = db.clone();
    wait_for("the first records", Duration::from_secs(30), None, || {
        gateway::store::Store::open(&db2)
            .and_then(|s| s.record_count())
            .is_ok_and(|n| n > 0)
    });
    // Another connection holds SQLite's write lock: the daemon's next commit waits for it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&daemon, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the first signal waits for the commit in hand"
    );
    signal(&daemon, "TERM");
    let status = tokio::task::spawn_blocking(move || exit_within(&mut daemon, Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "a second signal exits at once, non-zero"
    );
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    // Nothing is damaged: the next pass runs to the end.
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_stops_the_sync_and_fails_the_health_check() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let db = dir.path().join("g.db");
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page: usize = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        conn.pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .unwrap() as usize
    };
    // Garbage over a few b-tree pages in the middle of the file, as a failing disk leaves it.
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / page;
    assert!(pages > 20, "{pages} pages");
    for p in [pages / 2, pages / 2 + 1, pages / 3] {
        bytes[p * page..(p + 1) * page].fill(0xA5);
    }
    std::fs::write(&db, bytes).unwrap();

    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(!out.status.success(), "a damaged database must stop the sync");
    let err = stderr(&out);
    assert!(err.contains("damaged") || err.contains("malformed"), "{err}");
    let health = common::cli::gateway(&["--db", db.to_str().unwrap(), "health", "--json"]);
    assert!(!health.status.success());
    let v: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert!(v["problems"].to_string().contains("database damaged"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_queue_says_how_much_is_shown_and_notice_refuses_an_unchecked_record() {
    let server = simulator(400).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 3_600);
    let out = gateway(&config, &["sync", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list = gateway(&config, &["failures", "list", "--limit", "3"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("3 of ") && text.contains("projects with open failures"),
        "{text}"
    );
    // Times for people: Beijing time with its offset, in every listing.
    for args in [&["records", "list"][..], &["runs"][..], &["audit", "list"][..]] {
        let out = gateway(&config, args).stdout(Stdio::piped()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(" +08:00"), "{args:?}: {text}");
    }
    // No licence library here: no record was checked, so there is no notice to give.
    let db = dir.path().join("g.db");
    let id = gateway::store::Store::open(&db)
        .unwrap()
        .records(Some("active"), 1)
        .unwrap()[0]
        .id
        .clone();
    let out = gateway(&config, &["notice", &id])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a notice of an unchecked record is not a success"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not checked yet"));

    // A malformed project fetched again is still malformed: the replay says so, exits
    // non-zero and leaves the failure held.
    let store = gateway::store::Store::open(&db).unwrap();
    let held = store
        .failures(Some("held"), 1000)
        .unwrap()
        .into_iter()
        .find(|f| f.step == "map")
        .expect("the generator malforms a few projects");
    let out = gateway(
        &config,
        &[
            "failures",
            "replay",
            &held.id.to_string(),
            "--by",
            "tester",
            "--refetch",
        ],
    )
    .stdout(Stdio::piped())
    .output()
    .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("still failing"), "{}", stderr(&out));
    let again = store.failure(held.id).unwrap().unwrap();
    assert_eq!(again.state, "held");
}
