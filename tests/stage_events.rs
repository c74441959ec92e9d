//! Stage events through the real binary, and the deadline watch raising each alert once.
#![cfg(feature = "simulators")]

mod common;

use common::cli::{gateway, ok, refused};

use gateway::deadlines::{self, DeadlineState};
use gateway::policy::Rules;
use gateway::store::Store;

#[test]
fn events_reevaluate_the_record_and_nonsense_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 30);
    let db = db.to_str().unwrap();
    // The unsurveyed residential fixture: other_residential; and the contract example.
    let id = "PE-2022-530112-47-01-587143";
    let ev = |args: &[&str]| {
        let mut all = vec!["--db", db, "record", "event", id];
        all.extend_from_slice(args);
        gateway(&all)
    };

    assert!(refused(&ev(&["connected", "--by", "张工"])).contains("before the record is accepted"));
    assert!(refused(&ev(&["resumed", "--by", "张工"])).contains("not paused"));
    assert!(refused(&ev(&["paused", "--by", "张工"])).contains("--pause-reason"));
    ok(&ev(&["accepted", "--by", "张工", "--at", "2026-11-23 09:00:00"]));
    assert!(refused(&ev(&["accepted", "--by", "张工"])).contains("already accepted"));
    ok(&ev(&[
        "paused",
        "--by",
        "张工",
        "--pause-reason",
        "green-space-permit",
        "--at",
        "2026-11-24 12:00:00",
    ]));
    assert!(refused(&ev(&["connected", "--by", "张工", "--at", "2026-11-24 13:00:00"])).contains("paused"));
    ok(&ev(&["resumed", "--by", "张工", "--at", "2026-11-25 12:00:00"]));

    let show = |field: &str| -> serde_json::Value {
        let out = ok(&gateway(&["--db", db, "records", "show", id, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["content"].pointer(field).cloned().unwrap_or_default()
    };
    // Low-risk with 120 m of pipe: 2 working days from Monday 09:00, plus the paused day.
    // Scripts read the content's times in RFC 3339, with the offset.
    assert_eq!(show("/progress/stages/0/due_at"), "2026-11-27T00:00:00+08:00");
    assert_eq!(show("/decisions/mode_11000/value"), false);

    // The survey measures no external pipe at all: external works none → the "11000" mode.
    ok(&ev(&[
        "survey-done",
        "--by",
        "李工",
        "--pipe-length",
        "0",
        "--at",
        "2026-11-26 10:00:00",
    ]));
    assert_eq!(show("/decisions/mode_11000/value"), true);
    assert_eq!(show("/decisions/external_works"), false);
    assert_eq!(show("/survey/by"), "李工");
    let trace = ok(&gateway(&["--db", db, "trace", id, "--field", "survey"]));
    assert!(trace.contains("measured on site: operator action"), "{trace}");

    // Reassignment is an audited action too, and the manager stays through later syncs.
    ok(&gateway(&[
        "--db",
        db,
        "record",
        "reassign",
        id,
        "--manager",
        "TY-09 新经理",
        "--by",
        "主管",
        "--reason",
        "调岗",
    ]));
    assert_eq!(show("/decisions/customer_manager/manager"), "TY-09 新经理");

    // The watch: the stage is overdue now; the alarm is raised once.
    let store = Store::open(std::path::Path::new(db)).unwrap();
    let rules = Rules::load(None).unwrap();
    let now = shuiwu_wire::parse_beijing("2026-11-28 10:00:00").unwrap();
    let current = deadlines::current(&store, &rules, now).unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].state, DeadlineState::Overdue);
    assert_eq!(deadlines::watch(&store, &rules, now).unwrap().len(), 1);
    assert_eq!(
        deadlines::watch(&store, &rules, now).unwrap().len(),
        0,
        "raised once"
    );
    // Earlier, with a third or less of the time left, it was a warning.
    let early = shuiwu_wire::parse_beijing("2026-11-25 17:00:00").unwrap();
    assert_eq!(
        deadlines::current(&store, &rules, early).unwrap()[0].state,
        DeadlineState::Warning
    );

    let out = ok(&gateway(&[
        "--db",
        db,
        "deadlines",
        "--state",
        "overdue",
        "--json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["alert_raised_at"].is_string());
    let out = ok(&gateway(&[
        "--db",
        db,
        "deadlines",
        "--state",
        "warning",
        "--json",
    ]));
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        0
    );

    ok(&ev(&["connected", "--by", "张工", "--at", "2026-11-28 11:00:00"]));
    assert_eq!(show("/progress/state"), "connected");
    assert!(
        refused(&ev(&[
            "paused",
            "--by",
            "张工",
            "--pause-reason",
            "green-space-permit"
        ]))
        .contains("connected")
    );
    assert_eq!(deadlines::current(&store, &rules, now).unwrap().len(), 0);
}

#[test]
fn owed_materials_gate_acceptance_and_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&gateway(&["demo", "--projects", "40", "--dir", d]));
    let db_path = dir.path().join("gateway.db");
    let db = db_path.to_str().unwrap();
    let store = Store::open(&db_path).unwrap();
    let id = store
        .records_with_notices(1)
        .unwrap()
        .pop()
        .expect("some record has missing materials");
    drop(store);

    let out = ok(&gateway(&["--db", db, "notice", &id]));
    assert!(out.starts_with("一次性告知书"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&gateway(&["--db", db, "notice", &id, "--json"]))).unwrap();
    let missing: Vec<String> = v["missing_now"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["item"].as_str().unwrap().to_string())
        .collect();
    assert!(!missing.is_empty());

    let ev = |args: &[&str]| {
        let mut all = vec!["--db", db, "record", "event", id.as_str()];
        all.extend_from_slice(args);
        gateway(&all)
    };
    assert!(refused(&ev(&["accepted", "--by", "张工"])).contains("not committed"));
    ok(&ev(&[
        "commitment",
        "--by",
        "张工",
        "--items",
        &missing.join(","),
    ]));
    ok(&ev(&["accepted", "--by", "张工"]));
    // Survey, if the record needs one before connection.
    let _ = ev(&["survey-done", "--by", "李工", "--pipe-length", "0"]);
    let refusal = refused(&ev(&["connected", "--by", "张工"]));
    assert!(refusal.contains("owed before connection"), "{refusal}");
    ok(&ev(&[
        "connected",
        "--by",
        "主管",
        "--override-reason",
        "材料已现场核验",
    ]));
    let store = Store::open(&db_path).unwrap();
    let actions = store.actions(&id).unwrap();
    let last = actions.last().unwrap();
    assert_eq!(last.override_reason.as_deref(), Some("材料已现场核验"));
    assert_eq!(last.by, "主管");
}
