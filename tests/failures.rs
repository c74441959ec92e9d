//! The failure queue: a held version replayed after a mapping fix (dry run first), another
//! dismissed with a reason; both audited.
#![cfg(feature = "simulators")]

mod common;

use common::cli::{gateway, ok};

#[test]
fn replay_after_a_fix_and_dismiss() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&gateway(&["demo", "--projects", "40", "--dir", d]));
    let db = dir.path().join("gateway.db");
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
