//! The failure queue: a held version replayed after a mapping fix (dry run first), another
//! dismissed with a reason; both audited.
#![cfg(feature = "simulators")]

mod common;

use common::cli::{gateway, ok};

#[test]
fn replay_after_a_fix_and_dismiss() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 40);
    let db = db.to_str().unwrap();
    let failures: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&gateway(&["--db", db, "failures", "list", "--json"]))).unwrap();
    let fixture = failures
        .iter()
        .find(|f| f["key"] == "2022-530111-47-01-777001")
        .unwrap();
    let id = fixture["id"].to_string();

    // With the rules as they are, the document still fails.
    let out = gateway(&["--db", db, "failures", "replay", &id, "--by", "张工"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still does not map"));

    // An override that accepts this builder's code and area (say the platform confirmed them).
    let maps = dir.path().join("maps/approval");
    std::fs::create_dir_all(&maps).unwrap();
    let fixed = include_str!("../mappings/approval/project.toml")
        .replace(
            "transforms = [\"trim\", \"credit_code\"]",
            "transforms = [\"trim\"]",
        )
        .replacen(
            "transforms = [\"trim\", \"decimal\", \"non_negative\"]",
            "transforms = [\"trim\", \"decimal\"]",
            1,
        );
    std::fs::write(maps.join("project.toml"), fixed).unwrap();
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        format!("[mappings]\ndir = \"{}\"\n", dir.path().join("maps").display()),
    )
    .unwrap();
    let c = config.to_str().unwrap();

    let dry = ok(&gateway(&[
        "--config",
        c,
        "--db",
        db,
        "failures",
        "replay",
        &id,
        "--by",
        "张工",
        "--dry-run",
    ]));
    assert!(dry.contains("would create the record"), "{dry}");
    assert!(!dry.contains("张三"), "personal data stays masked in a dry run");
    let after_dry: Vec<serde_json::Value> = serde_json::from_str(&ok(&gateway(&[
        "--db", db, "failures", "list", "--json", "--state", "held",
    ])))
    .unwrap();
    assert!(
        after_dry.iter().any(|f| f["id"].as_i64() == id.parse().ok()),
        "a dry run changes nothing"
    );

    let done = ok(&gateway(&[
        "--config", c, "--db", db, "failures", "replay", &id, "--by", "张工",
    ]));
    assert!(
        done.contains("replayed: created PE-2022-530111-47-01-777001"),
        "{done}"
    );
    let show = ok(&gateway(&[
        "--db",
        db,
        "records",
        "show",
        "PE-2022-530111-47-01-777001",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["content"]["building"]["floor_area_m2"], "-3500");
    let out = gateway(&[
        "--config", c, "--db", db, "failures", "replay", &id, "--by", "张工",
    ]);
    assert!(!out.status.success(), "a failure is replayed once");

    // Another failure dismissed with a reason.
    let other = failures
        .iter()
        .find(|f| f["key"] != "2022-530111-47-01-777001")
        .unwrap();
    let other_id = other["id"].to_string();
    ok(&gateway(&[
        "--db",
        db,
        "failures",
        "dismiss",
        &other_id,
        "--by",
        "主管",
        "--reason",
        "测试数据，已与审批平台核实",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok(&gateway(&[
        "--db", db, "failures", "list", "--json", "--all",
    ])))
    .unwrap();
    let state =
        |id: &str| rows.iter().find(|f| f["id"].as_i64() == id.parse().ok()).unwrap()["state"].clone();
    assert_eq!(state(&id), "replayed");
    assert_eq!(state(&other_id), "dismissed");

    let audit = ok(&gateway(&["--db", db, "audit", "list", "--json"]));
    assert!(audit.contains("failure_replayed") && audit.contains("failure_dismissed"));
    ok(&gateway(&["--db", db, "audit", "verify"]));
}

#[test]
fn bulk_replay_by_category_with_a_diff_first_audited_as_one_action() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 40);
    let db = db.to_str().unwrap();
    let held: Vec<serde_json::Value> = serde_json::from_str(&ok(&gateway(&[
        "--db", db, "failures", "list", "--all", "--json",
    ])))
    .unwrap();
    let category = "building.floor_area_m2: non_negative";
    let in_category: Vec<i64> = held
        .iter()
        .filter(|f| f["category"] == category && f["state"] == "held")
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert!(!in_category.is_empty(), "{held:?}");

    // Every held failure, dry run: the ones that still fail say why, the power side's
    // probable duplicate is not replayed from a document, nothing changes.
    let out = gateway(&["--db", db, "failures", "replay", "--all", "--dry-run", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["selected"].as_u64().unwrap() as usize, held.len());
    let items = v["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["outcome"] == "not_replayable" && i["step"] == "link"),
        "{v}"
    );
    assert!(
        items
            .iter()
            .filter(|i| i["outcome"] == "still_failing")
            .all(|i| i["reason"].as_str().is_some_and(|r| r.contains("does not map"))),
        "{v}"
    );

    // With the area rule relaxed, the category replays: a diff first, then once, audited once.
    let maps = dir.path().join("maps/approval");
    std::fs::create_dir_all(&maps).unwrap();
    let fixed = include_str!("../mappings/approval/project.toml").replacen(
        "transforms = [\"trim\", \"decimal\", \"non_negative\"]",
        "transforms = [\"trim\", \"decimal\"]",
        1,
    );
    std::fs::write(maps.join("project.toml"), fixed).unwrap();
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        format!("[mappings]\ndir = \"{}\"\n", dir.path().join("maps").display()),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let dry = ok(&gateway(&[
        "--config",
        c,
        "--db",
        db,
        "failures",
        "replay",
        "--category",
        category,
        "--dry-run",
    ]));
    assert!(dry.contains("would create the record PE-"), "{dry}");
    let dry_json: serde_json::Value = serde_json::from_str(&ok(&gateway(&[
        "--config",
        c,
        "--db",
        db,
        "failures",
        "replay",
        "--category",
        category,
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    let changes = dry_json["items"][0]["changes"].as_array().unwrap();
    let area = changes
        .iter()
        .find(|c| c["field"] == "building.floor_area_m2")
        .expect("the diff shows the area");
    assert!(area["after"].as_str().unwrap().starts_with('-'), "{area}");
    assert!(
        changes.iter().any(|c| c["field"] == "decisions.category.state"),
        "{dry_json}"
    );
    assert!(!dry.contains("张三"), "personal data stays masked: {dry}");
    let done: serde_json::Value = serde_json::from_str(&ok(&gateway(&[
        "--config",
        c,
        "--db",
        db,
        "failures",
        "replay",
        "--category",
        category,
        "--by",
        "张工",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        done["summary"]["replayed"].as_u64().unwrap() as usize,
        in_category.len(),
        "{done}"
    );
    assert!(
        done["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["outcome"] == "created"),
        "{done}"
    );
    // Nothing of the category is held any more; a second run selects nothing.
    let again: serde_json::Value = serde_json::from_str(&ok(&gateway(&[
        "--config",
        c,
        "--db",
        db,
        "failures",
        "replay",
        "--category",
        category,
        "--by",
        "张工",
        "--json",
    ])))
    .unwrap();
    assert_eq!(again["summary"]["selected"], 0);
    let audit: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&gateway(&["--db", db, "audit", "list", "--json"]))).unwrap();
    let bulk: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|e| e["action"] == "failures_replayed")
        .collect();
    assert_eq!(bulk.len(), 1, "{audit:?}");
    assert_eq!(bulk[0]["actor"], "张工");
    let detail: serde_json::Value = serde_json::from_str(bulk[0]["detail"].as_str().unwrap()).unwrap();
    let named: Vec<i64> = detail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["failure"].as_i64().unwrap())
        .collect();
    let mut want = in_category.clone();
    want.sort();
    let mut named_sorted = named.clone();
    named_sorted.sort();
    assert_eq!(named_sorted, want);
}
