//! The real binary, killed with SIGKILL at random moments during a sync and restarted, ends
//! with exactly the records of an uninterrupted run; `gateway run` stops cleanly on SIGTERM.
#![cfg(feature = "simulators")]

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::daemon::{exit_within, gateway, rows, simulator, wait_for, write_config};
use gateway::store::Store;
use rand::Rng;

fn run_to_end(config: &Path) -> Duration {
    let started = Instant::now();
    let out = gateway(config, &["sync", "--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

type Snapshot = (
    Vec<(String, i64, String, String)>,
    Vec<(String, String, i64, String)>,
    i64,
);

fn snapshot(db: &Path) -> Snapshot {
    let store = Store::open(db).unwrap();
    (
        store.fingerprint().unwrap(),
        store.processed().unwrap(),
        store.failures(None, 100_000).unwrap().len() as i64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let server = simulator(5_000).await;
    let dir = tempfile::tempdir().unwrap();
    let reference = write_config(dir.path(), "reference", &server, 60);
    let crashed = write_config(dir.path(), "crashed", &server, 60);

    let uninterrupted = tokio::task::spawn_blocking({
        let reference = reference.clone();
        move || run_to_end(&reference)
    })
    .await
    .unwrap();

    // Twenty kills, each after a random number of further project versions were committed
    // (between 1/200 and 1/50 of the whole, so that twenty of them, each overshooting by up
    // to a page, still leave work for the last run): the kills follow the sync's progress as the
    // database shows it, not the clock, so they land mid-sync on a fast machine and a slow one.
    let crashed_db = dir.path().join("crashed.db");
    let total = 5_000u64;
    let (fewest, most) = (total / 200, total / 50);
    let processed = |db: &Path| rows(db, "source_versions");
    let mut rng = rand::rng();
    let mut kills_mid_sync = 0;
    while kills_mid_sync < 20 {
        let before = if crashed_db.exists() {
            processed(&crashed_db)
        } else {
            0
        };
        let target = before + rng.random_range(fewest..=most);
        assert!(target < total, "the kills would let the sync finish");
        let mut child: Child = gateway(&crashed, &["sync", "--once"]).spawn().unwrap();
        let what = format!("{target} versions committed");
        // Polling blocks: the simulator's tasks move to the other worker meanwhile.
        tokio::task::block_in_place(|| {
            wait_for(&what, Duration::from_secs(120), Some(&mut child), || {
                processed(&crashed_db) >= target
            })
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills_mid_sync += 1;
    }
    let attempts = kills_mid_sync;
    let after_kills = Store::open(&crashed_db).unwrap().record_count().unwrap();
    tokio::task::spawn_blocking({
        let crashed = crashed.clone();
        move || run_to_end(&crashed)
    })
    .await
    .unwrap();

    eprintln!(
        "uninterrupted {uninterrupted:?}; {kills_mid_sync} kills mid-sync in {attempts} runs; {after_kills} records before the last run"
    );
    let want = snapshot(&dir.path().join("reference.db"));
    let got = snapshot(&crashed_db);
    assert!(
        want.0.len() > 1_000,
        "the reference run made {} record versions",
        want.0.len()
    );
    assert!(
        after_kills < want.0.len() as i64,
        "the kills left nothing for the last run to do"
    );
    assert_eq!(
        got.0, want.0,
        "record versions differ after {kills_mid_sync} kills"
    );
    assert_eq!(got.1, want.1, "processed source versions differ");
    assert_eq!(got.2, want.2, "failure queue differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_unit_in_hand_and_exits_zero() {
    let server = simulator(3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "daemon", &server, 3_600);
    let mut child = gateway(&config, &["run"]).spawn().unwrap();
    // The signal comes once the first records are committed, whatever the machine's speed.
    let db = dir.path().join("daemon.db");
    tokio::task::block_in_place(|| {
        wait_for(
            "the first records",
            Duration::from_secs(60),
            Some(&mut child),
            || rows(&db, "records") > 0,
        )
    });
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::task::block_in_place(|| exit_within(&mut child, Duration::from_secs(20)));
    assert_eq!(status.code(), Some(0));
    // What it committed is consistent: a later sync completes it to the full result.
    let partial = Store::open(&dir.path().join("daemon.db"))
        .unwrap()
        .record_count()
        .unwrap();
    tokio::task::spawn_blocking(move || run_to_end(&config))
        .await
        .unwrap();
    let full = Store::open(&dir.path().join("daemon.db"))
        .unwrap()
        .record_count()
        .unwrap();
    assert!(
        partial < full,
        "SIGTERM came after the sync had finished ({partial} of {full})"
    );
}
