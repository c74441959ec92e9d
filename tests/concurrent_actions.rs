//! Operator actions and sync commits on the same records at the same time cannot overwrite
//! each other: stage events, reassignments and replays from several threads (each with its own
//! database connection, as separate CLI processes have) run while a sync commits new versions
//! of the same records. Afterwards every action is in the final record and every version's
//! content is what its own document and the actions give.
#![cfg(feature = "simulators")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use common::*;
use gateway::mapping::MappingSet;
use gateway::policy::Rules;
use gateway::rebuild::Rebuilder;
use gateway::record::Assembled;
use gateway::stages::{self, Action, PauseReason};
use gateway::store::{NewAction, SourceKey, Store, StoreError};

/// The project mapping with the floor-area check relaxed: "the mapping fix" that lets held
/// versions with a negative area be replayed.
fn relaxed_rebuilder(dir: &std::path::Path) -> Rebuilder {
    let embedded = include_str!("../mappings/approval/project.toml");
    let strict = "path = \"/JZMJ\"\ntransforms = [\"trim\", \"decimal\", \"non_negative\"]";
    assert!(embedded.contains(strict), "the mapping's JZMJ field changed");
    let relaxed = embedded.replace(strict, "path = \"/JZMJ\"\ntransforms = [\"trim\", \"decimal\"]");
    std::fs::create_dir_all(dir.join("approval")).unwrap();
    std::fs::write(dir.join("approval/project.toml"), relaxed).unwrap();
    let mapping = MappingSet::load(Some(dir))
        .unwrap()
        .get("approval.project")
        .unwrap();
    Rebuilder::new(mapping, Arc::new(Rules::load(None).unwrap()))
}

/// One action an operator thread got recorded: (record, action id, what).
type Done = (String, i64, Action);

fn act(
    store: &Store,
    rebuilder: &Rebuilder,
    id: &str,
    action: Action,
    by: &str,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    store
        .record_action(
            id,
            NewAction {
                action: &action,
                at,
                by,
                override_reason: None,
            },
            at,
            rebuilder,
            |ctx| stages::judge(ctx, &action, at, None),
        )
        .map(|(action_id, _)| action_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_and_sync_commits_never_overwrite_each_other() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(150, start, t0() - Duration::hours(1)), start).await;
    w.pass().await;
    let db = w.dir.path().join("g.db");
    let fixes = tempfile::tempdir().unwrap();
    let rebuilder = relaxed_rebuilder(fixes.path());

    // Twelve active records, accepted so that their clocks can be paused and resumed.
    let targets: Vec<(String, String)> = w
        .store
        .records(Some("active"), 1_000)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.source_key))
        .take(12)
        .collect();
    assert_eq!(targets.len(), 12);
    let at = w.clock.now_utc();
    for (id, _) in &targets {
        act(&w.store, &rebuilder, id, Action::Accepted, "受理员", at).unwrap();
    }

    let done: Arc<Mutex<Vec<Done>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // Three operators, each on its own connection, on every target record.
    for t in 0..3 {
        let (db, rebuilder, targets, done, stop) = (
            db.clone(),
            rebuilder.clone(),
            targets.clone(),
            done.clone(),
            stop.clone(),
        );
        let at = at + Duration::minutes(1);
        threads.push(std::thread::spawn(move || {
            let store = Store::open(&db).unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 3_000 {
                let (id, _) = &targets[(n as usize * 7 + t) % targets.len()];
                let action = match (n + t as u32) % 3 {
                    0 => Action::ManagerReassigned {
                        manager: format!("经理{t}-{n}"),
                        reason: "轮岗".into(),
                    },
                    1 => Action::Paused {
                        reason: PauseReason::ApplicantRequestedLaterDate,
                    },
                    _ => Action::Resumed,
                };
                match act(&store, &rebuilder, id, action.clone(), &format!("操作员{t}"), at) {
                    Ok(action_id) => done.lock().unwrap().push((id.clone(), action_id, action)),
                    // Pausing a paused clock, resuming a running one: judged at commit time.
                    Err(StoreError::Refused(_)) => {}
                    Err(e) => panic!("operator {t}: {e}"),
                }
                n += 1;
                // Operators act at human pace compared with a commit; without a gap, three
                // threads in a tight loop could keep SQLite's write lock from the sync for
                // longer than its busy timeout.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            n
        }));
    }
    // A replayer: held versions are replayed with the fixed mapping as soon as they appear.
    let replayed = {
        let (db, rebuilder, stop) = (db.clone(), rebuilder.clone(), stop.clone());
        std::thread::spawn(move || {
            let store = Store::open(&db).unwrap();
            let mut replayed = 0;
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) && rounds < 100_000 {
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
                for f in store.failures(Some("held"), 100).unwrap() {
                    let (Some(key), Some(version), Some(sha)) = (&f.key, f.version, &f.document_sha256)
                    else {
                        continue;
                    };
                    if f.step != "map" {
                        continue;
                    }
                    let (bytes, _) = store.document(sha).unwrap().unwrap();
                    let today = shuiwu_wire::beijing_today();
                    let draft = match rebuilder.assemble_bytes(&bytes, sha, today) {
                        Ok(Assembled::Record(draft)) => draft,
                        other => panic!("failure {} does not map with the fix: {other:?}", f.id),
                    };
                    let source_key = SourceKey {
                        source: f.source.clone(),
                        key: key.clone(),
                        version,
                    };
                    match store.resolve_failure(
                        f.id,
                        "回放员",
                        "mapping fixed",
                        Some((&source_key, sha, *draft, &rebuilder)),
                        &[],
                        Utc::now(),
                    ) {
                        Ok(_) => replayed += 1,
                        // Superseded by a newer version the sync committed meanwhile.
                        Err(StoreError::Refused(why)) if why.contains("not held") => {}
                        Err(e) => panic!("replay: {e}"),
                    }
                }
            }
            replayed
        })
    };

    // Meanwhile the platform changes every target in each round, and every third round gives
    // them a negative floor area that the sync holds (and the replayer replays).
    for round in 0..30 {
        for (_, xmdm) in &targets {
            w.server.sim.change(xmdm, |doc| {
                doc["XMMC"] = serde_json::Value::from(format!("并发测试项目{round}"));
                doc["JZMJ"] = serde_json::Value::from(if round % 3 == 1 && round < 29 {
                    "-5"
                } else {
                    "5000"
                });
            });
        }
        w.clock.advance(Duration::minutes(10));
        w.pass().await;
    }
    stop.store(true, Ordering::Relaxed);
    let ops: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let replayed = replayed.join().unwrap();
    let done = done.lock().unwrap().clone();
    eprintln!(
        "{ops} operator attempts, {} recorded, {replayed} replays",
        done.len()
    );
    assert!(done.len() > 30, "the operators must have acted during the sync");
    assert!(
        replayed > 0,
        "held versions must have been replayed during the sync"
    );

    let store = &w.store;
    for (id, xmdm) in &targets {
        let versions = store.record_versions(id).unwrap();
        let actions = store.actions(id).unwrap();
        // Every action an operator was told is recorded is stored.
        for (_, action_id, _) in done.iter().filter(|d| &d.0 == id) {
            assert!(
                actions.iter().any(|a| a.id == *action_id),
                "action {action_id} of {id} lost"
            );
        }
        // The current version is exactly its own document with every action.
        let current = versions.last().unwrap();
        let (bytes, _) = store.document(&current.document_sha256).unwrap().unwrap();
        let today = shuiwu_wire::beijing_today();
        let Assembled::Record(draft) = rebuilder
            .assemble_bytes(&bytes, &current.document_sha256, today)
            .unwrap()
        else {
            panic!("{id} skipped")
        };
        let existing = store.existing(id).unwrap();
        let want = rebuilder
            .candidate(*draft, existing.as_ref(), &actions, Utc::now())
            .unwrap();
        assert_eq!(
            current.content_sha256, want.content_sha256,
            "{id}: the current version lacks an action or belongs to another document"
        );
        // The last reassignment names the manager.
        if let Some(Action::ManagerReassigned { manager, .. }) = actions
            .iter()
            .rev()
            .map(|a| &a.action)
            .find(|a| matches!(a, Action::ManagerReassigned { .. }))
        {
            assert_eq!(
                current.content["decisions"]["customer_manager"]["manager"],
                serde_json::Value::from(manager.as_str()),
                "{id}"
            );
        }
        // The last platform version reached the record (unless it is held).
        let newest_bbh = w.server.sim.visible_in(start, t0() + Duration::days(1));
        let newest = newest_bbh.iter().find(|(x, _)| x == xmdm).unwrap().1;
        assert_eq!(current.source_version, newest as i64, "{id}");
        // Every version's content is what its own document maps to.
        for v in &versions {
            let (bytes, _) = store.document(&v.document_sha256).unwrap().unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let bbh = &doc["data"]["BBH"];
            let bbh = bbh
                .as_i64()
                .or_else(|| bbh.as_str().and_then(|b| b.trim().parse().ok()));
            assert_eq!(bbh, Some(v.source_version), "{id} v{}: source version", v.version);
            let Assembled::Record(draft) = rebuilder
                .assemble_bytes(&bytes, &v.document_sha256, today)
                .unwrap()
            else {
                panic!("{id} skipped")
            };
            let mut from_document = serde_json::to_value(&draft.record).unwrap();
            let mut stored = v.content.clone();
            for part in ["decisions", "progress", "survey"] {
                from_document.as_object_mut().unwrap().remove(part);
                stored.as_object_mut().unwrap().remove(part);
            }
            assert_eq!(
                stored, from_document,
                "{id} v{}: content does not match its own document",
                v.version
            );
        }
    }
}
