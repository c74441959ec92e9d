//! The real binary and the power side. Killed with SIGKILL at random moments while it delivers
//! joint applications and water statuses (to a power side that loses some answers after
//! applying the change), it ends with exactly one application per project, no key reused,
//! every status applied once, and the records and outbox of an uninterrupted run. As a daemon,
//! it delivers beside the sync, keeps the power side's webhooks, and stops on SIGTERM.
#![cfg(feature = "simulators")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{gateway, listen_on_free_port, rows, simulator, wait_for, write_config};
use gateway::store::Store;
use rand::Rng;
use shuiwu_power::sim::{PowerSim, PowerSimConfig, PowerSimServer};
use shuiwu_wire::SystemClock;

async fn power_side() -> PowerSimServer {
    let cfg = PowerSimConfig {
        rate_limit_per_sec: None,
        // One change in eight loses its answer after it was made: a reset, a 504 or a hang
        // past the client's timeout.
        random_after_fault_per_mille: 125,
        hang_secs: 2,
        ..PowerSimConfig::contract_defaults(3)
    };
    PowerSim::new(cfg, Arc::new(SystemClock))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The approval-only configuration `name.toml`, and `name-power.toml` with `[power]` added.
fn configs(
    dir: &Path,
    name: &str,
    approval: &shuiwu_approval::sim::SimServer,
    power: &PowerSimServer,
) -> (PathBuf, PathBuf) {
    let plain = write_config(dir, name, approval, 60);
    let text = std::fs::read_to_string(&plain).unwrap();
    let with_power = dir.join(format!("{name}-power.toml"));
    std::fs::write(
        &with_power,
        format!(
            "{text}\n[power]\nbase_url = \"{}\"\nclient_id = \"{}\"\nrate_per_second = 20\ntimeout_secs = 1\nmin_delay_ms = 20\nmax_retries = 2\n",
            power.base_url(),
            power.sim.config().client_id
        ),
    )
    .unwrap();
    (plain, with_power)
}

fn run(config: &Path, args: &[&str], secret: &str) -> std::process::Output {
    gateway(config, args)
        .env("GATEWAY_POWER_CLIENT_SECRET", secret)
        .output()
        .unwrap()
}

/// Runs `f` on a thread of its own, outside the runtime (the store refuses calls from async
/// tasks), while the runtime's other worker serves the simulators.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    tokio::task::block_in_place(|| std::thread::scope(|s| s.spawn(f).join().unwrap()))
}

fn must(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stage events both databases get, at the same recorded time.
fn stage_events(config: &Path, db: &Path, secret: &str, at: &str) {
    let store = Store::open(db).unwrap();
    let asking: Vec<String> = store
        .outbox(Some("pending"), 100_000)
        .unwrap()
        .0
        .into_iter()
        .map(|c| c.record_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(30)
        .collect();
    drop(store);
    assert_eq!(asking.len(), 30);
    for (i, id) in asking.iter().enumerate() {
        must(
            run(
                config,
                &["record", "event", id, "accepted", "--by", "王工", "--at", at],
                secret,
            ),
            "accepted",
        );
        if i % 3 == 0 {
            let survey = [
                "record",
                "event",
                id,
                "survey-done",
                "--pipe-length",
                "12.5",
                "--by",
                "王工",
                "--at",
                at,
            ];
            must(run(config, &survey, secret), "survey done");
            must(
                run(
                    config,
                    &["record", "event", id, "connected", "--by", "王工", "--at", at],
                    secret,
                ),
                "connected",
            );
        }
    }
}

type Outbox = Vec<(String, String, String, String)>;

fn outbox(db: &Path) -> Outbox {
    let store = Store::open(db).unwrap();
    let mut calls: Outbox = store
        .outbox(None, 100_000)
        .unwrap()
        .0
        .into_iter()
        .map(|c| {
            (
                c.record_id,
                c.kind.as_str().to_string(),
                c.idempotency_key,
                c.state,
            )
        })
        .collect();
    calls.sort();
    calls
}

/// The power side's applications linked to a water record, by external id: (count, water
/// status). (Power-origin applications that no water record took, waiting for platform data or
/// held as duplicates, are left out.)
fn held_by(power: &PowerSimServer) -> BTreeMap<String, (usize, Option<shuiwu_power::WaterStatus>)> {
    let mut out: BTreeMap<String, (usize, Option<shuiwu_power::WaterStatus>)> = BTreeMap::new();
    for a in power.sim.applications() {
        let Some(external) = a.external_id.clone() else {
            continue;
        };
        let e = out.entry(external).or_default();
        e.0 += 1;
        e.1 = a.water_status;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_deliveries_makes_every_call_take_effect_exactly_once() {
    let approval = simulator(400).await;
    let reference_power = power_side().await;
    let crashed_power = power_side().await;
    let secret = reference_power.sim.config().client_secret.clone();
    let dir = tempfile::tempdir().unwrap();
    let (reference_plain, reference) = configs(dir.path(), "reference", &approval, &reference_power);
    let (crashed_plain, crashed) = configs(dir.path(), "crashed", &approval, &crashed_power);
    let at = shuiwu_wire::format_beijing(chrono::Utc::now());

    // Both databases: the approval sync first, then the joint applications planned when the
    // power side is configured (`sync --once` with a listing that cannot be read yet would
    // send nothing), then the same stage events.
    let crashed_db = dir.path().join("crashed.db");
    for (plain, with_power, db) in [
        (&reference_plain, &reference, dir.path().join("reference.db")),
        (&crashed_plain, &crashed, crashed_db.clone()),
    ] {
        let (plain, with_power, secret, at) = (plain.clone(), with_power.clone(), secret.clone(), at.clone());
        blocking(move || {
            must(run(&plain, &["sync", "--once"], &secret), "approval sync");
            // Opening as the writer with [power] plans the creates; the config check does not.
            let store = Store::open(&db).unwrap();
            store.set_joint(true);
            store.plan_missing_joint_calls(chrono::Utc::now()).unwrap();
            drop(store);
            stage_events(&with_power, &db, &secret, &at);
        });
    }
    // Applicants applied on the power side too, the same on both: households, companies naming
    // projects the sync read (or codes nobody knows, or none), a site outside Kunming.
    let generator = &approval.sim.config().generator;
    let known: Vec<String> = (0..generator.count).map(|i| generator.xmdm(i)).collect();
    let now = chrono::Utc::now();
    for power in [&reference_power, &crashed_power] {
        power
            .sim
            .insert_batch(shuiwu_power::sim::generate::power_origin(5, 40, &known, now, 3));
    }
    let total = rows(&crashed_db, "outbox");
    assert!(total > 150, "{total} calls to deliver");

    // The reference delivers uninterrupted.
    let reference_cfg = reference.clone();
    let reference_secret = secret.clone();
    blocking(move || {
        must(
            run(&reference_cfg, &["sync", "--once"], &reference_secret),
            "reference",
        )
    });

    // Twenty kills, each after a few more calls were settled: mid-delivery, whatever the
    // machine's speed (the client's 20 calls/s keep a kill from landing many calls late).
    let done = |db: &Path| rows(db, "outbox WHERE state = 'done'");
    let mut rng = rand::rng();
    let (fewest, most) = (total / 80 + 1, total / 30 + 1);
    for _ in 0..20 {
        let target = done(&crashed_db) + rng.random_range(fewest..=most);
        assert!(target < total, "the kills would let the deliveries finish");
        let mut child: Child = gateway(&crashed, &["sync", "--once"])
            .env("GATEWAY_POWER_CLIENT_SECRET", &secret)
            .spawn()
            .unwrap();
        tokio::task::block_in_place(|| {
            wait_for(
                "more calls settled",
                Duration::from_secs(120),
                Some(&mut child),
                || done(&crashed_db) >= target,
            )
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before_last = done(&crashed_db);
    assert!(before_last < total, "the kills left nothing to deliver");
    let crashed_cfg = crashed.clone();
    let crashed_secret = secret.clone();
    blocking(move || {
        must(
            run(&crashed_cfg, &["sync", "--once"], &crashed_secret),
            "last run",
        )
    });

    // Exactly one application per project that asks for power, with the same water statuses
    // as the uninterrupted run's.
    let (reference_db, crashed_db2) = (dir.path().join("reference.db"), crashed_db.clone());
    let (want_records, got_records, want_outbox, got_outbox) = blocking(move || {
        (
            Store::open(&reference_db).unwrap().fingerprint().unwrap(),
            Store::open(&crashed_db2).unwrap().fingerprint().unwrap(),
            outbox(&reference_db),
            outbox(&crashed_db2),
        )
    });
    let want = held_by(&reference_power);
    let got = held_by(&crashed_power);
    assert!(
        got.values().all(|(n, _)| *n == 1),
        "an application twice: {got:?}"
    );
    assert_eq!(got, want);
    let (r, c) = (reference_power.sim.stats(), crashed_power.sim.stats());
    assert_eq!(c.key_reused, 0, "a create answered 422");
    assert_eq!(c.created, r.created, "creates that took effect");
    assert_eq!(
        c.water_status_applied, r.water_status_applied,
        "statuses applied once each"
    );
    assert!(c.faults_after > 0, "answers were lost after changes");
    // The records (those imported from the power side among them) and the outbox are those
    // of the uninterrupted run.
    assert!(
        got_records.iter().filter(|r| r.0.starts_with("PW-")).count() > 10,
        "power-origin records imported"
    );
    assert_eq!(got_records, want_records);
    assert!(want_outbox.iter().all(|c| c.3 == "done"), "{want_outbox:?}");
    assert_eq!(got_outbox, want_outbox);
    eprintln!(
        "{total} calls; {before_last} settled before the last run; power side: {} creates, {} replays, {} statuses applied, {} no-ops, {} answers lost after the change",
        c.created, c.replayed, c.water_status_applied, c.water_status_no_op, c.faults_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_beside_the_sync_takes_webhooks_and_stops_on_sigterm() {
    let approval = simulator(200).await;
    let power = power_side().await;
    let secret = power.sim.config().client_secret.clone();
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = configs(dir.path(), "daemon", &approval, &power);
    // A free port for the daemon's server.
    let port = listen_on_free_port(&config);
    power.sim.push_to(
        format!("http://127.0.0.1:{port}/webhooks/power"),
        "whsec-daemon".into(),
    );
    let mut child = gateway(&config, &["run"])
        .env("GATEWAY_POWER_CLIENT_SECRET", &secret)
        .env("GATEWAY_POWER_WEBHOOK_SECRET", "whsec-daemon")
        .spawn()
        .unwrap();
    let db = dir.path().join("daemon.db");
    // The sync commits records, the delivery worker sends their creates.
    tokio::task::block_in_place(|| {
        wait_for(
            "joint applications delivered",
            Duration::from_secs(60),
            Some(&mut child),
            || {
                let all = rows(&db, "outbox");
                all > 20 && rows(&db, "outbox WHERE state = 'done'") == all
            },
        )
    });
    // Each create the power side made was pushed back to the daemon's webhook and kept.
    tokio::task::block_in_place(|| {
        wait_for(
            "webhook events kept",
            Duration::from_secs(30),
            Some(&mut child),
            || rows(&db, "power_events") >= power.sim.stats().created,
        )
    });
    assert_eq!(power.sim.stats().webhook_failures, 0);
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status =
        tokio::task::block_in_place(|| common::daemon::exit_within(&mut child, Duration::from_secs(10)));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM stops the sync, the deliveries and the server"
    );
}
