//! The commands end to end, through the real binary: the demo, inspection, traces, failures,
//! and personal data masked everywhere (command output and logs alike).
#![cfg(feature = "simulators")]

mod common;

use common::cli::{gateway, ok};

use std::path::Path;
use std::process::{Command, Output};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Personal data and the secret of the fixture `contract-example` and the simulator.
const NEVER_SHOWN: [&str; 5] = ["张三", "13800000000", "欧阳娜娜", "13987654321", "sim-secret"];

fn assert_clean(what: &str, s: &str) {
    for secret in NEVER_SHOWN {
        assert!(!s.contains(secret), "{what} shows {secret:?}:\n{s}");
    }
}

fn demo(dir: &Path) -> (String, String) {
    let d = dir.to_str().unwrap();
    let out = gateway(&[
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "demo",
        "--projects",
        "80",
        "--dir",
        d,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn demo_then_inspect_with_personal_data_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, logs) = demo(dir.path());
    for row in ["created", "updated", "withdrawn", "skipped", "held"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "summary lacks {row}:\n{stdout}"
        );
    }
    assert!(stdout.contains("outside Kunming"), "{stdout}");
    assert!(stdout.contains("in 11000 mode"), "{stdout}");
    assert!(stdout.contains("zero materials reached"), "{stdout}");
    assert!(stdout.contains("one-time notices issued"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("low_risk")), "{stdout}");
    assert!(stdout.contains("trace PE-"), "{stdout}");
    assert!(stdout.contains("imported from the power side"), "{stdout}");
    assert_clean("demo output", &stdout);
    assert_clean("debug logs", &logs);
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "JSON logs"
    );

    let db = dir.path().join("gateway.db");
    let db = db.to_str().unwrap();
    let id = "PE-2022-530112-47-01-587143";

    let (list, _) = text(&gateway(&["--db", db, "records", "list", "--limit", "500"]));
    assert!(list.contains(id), "{list}");
    assert_clean("records list", &list);

    let out = gateway(&["--db", db, "records", "show", id, "--json"]);
    let (show, _) = text(&out);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["content"]["contact"]["name"], "张*");
    assert_eq!(v["content"]["contact"]["phone"], "138****0000");
    assert_eq!(v["content"]["water"]["diameter_dn"], 40);
    assert_clean("records show", &show);

    let out = gateway(&["--db", db, "trace", id, "--field", "contact", "--json"]);
    let (trace, _) = text(&out);
    assert!(out.status.success(), "{trace}");
    assert_clean("trace", &trace);
    let v: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let phone = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "contact.phone")
        .unwrap();
    assert_eq!(phone["raw"], "138****0000");
    assert_eq!(phone["path"], "/data/JSDWLXR/LXDH");
    assert_eq!(phone["fetches"][0]["status"], 200);
    assert!(phone["mapping_stored"].as_bool().unwrap());

    // The contract's example project: low-risk with external works, free, decided by 2022.
    let out = gateway(&["--db", db, "trace", id, "--field", "decisions", "--json"]);
    let (trace, _) = text(&out);
    let v: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let decision = |name: &str| {
        v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["field"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(decision("decisions.category")["value"]["id"], "low_risk");
    assert_eq!(decision("decisions.category")["trace"]["policy_version"], "2022");
    assert_eq!(
        decision("decisions.category")["trace"]["inputs"]["water.external_pipe_m"],
        "120"
    );
    assert_eq!(decision("decisions.fee")["value"]["free"], true);
    assert_eq!(
        decision("decisions.mode_11000")["value"],
        serde_json::json!({"state": "known", "value": false})
    );
    assert_eq!(decision("decisions.stages")["value"]["total_working_days"], 2);

    // Zero materials for the contract example, fetched from both simulators.
    let out = gateway(&["--db", db, "notice", id, "--json"]);
    let (notice, _) = text(&out);
    let v: serde_json::Value = serde_json::from_str(&notice).unwrap();
    let checklist = &v["checklist"]["checklist"];
    assert_eq!(checklist["zero_materials"], true, "{notice}");
    assert_eq!(checklist["promised"], true);
    let by = |item: &str| {
        checklist["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == item)
            .unwrap()["by"]
            .clone()
    };
    assert_eq!(by("right_to_build")["reference"], "530112202400123");
    assert_eq!(by("right_to_build")["source"], "licences");
    assert_eq!(by("site_plan")["source"], "approval");
    assert!(v["notice"].is_null(), "no notice when nothing is missing");
    assert_clean("notice", &notice);

    // The migrated fixture's bare "40" traces back to its raw text.
    let (trace, _) = text(&gateway(&[
        "--db",
        db,
        "trace",
        "PE-2021-530181-36-01-004410",
        "--field",
        "water.diameter_dn",
    ]));
    assert!(trace.contains("water.diameter_dn = 40"), "{trace}");
    assert!(
        trace.contains("raw        \"40\" at /data/SZGYBZ/YS/JSKJ"),
        "{trace}"
    );
    assert!(trace.contains("trim → diameter"), "{trace}");

    let (failures, _) = text(&gateway(&["--db", db, "failures", "list", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&failures).unwrap();
    let fixture = rows
        .iter()
        .find(|f| f["key"] == "2022-530111-47-01-777001")
        .expect("the malformed fixture is held");
    assert_eq!(fixture["field"], "builder.credit_code");
    let id = fixture["id"].to_string();
    let (shown, _) = text(&gateway(&["--db", db, "failures", "show", &id]));
    assert!(
        shown.contains("building.floor_area_m2"),
        "every failing field is listed:\n{shown}"
    );
    assert!(
        shown.contains("\"JZMJ\": \"-3500\""),
        "the raw document is shown:\n{shown}"
    );
    assert!(shown.contains("\"LXR\": \"张*\""), "{shown}");
    assert_clean("failures show", &shown);

    // A household that applied on the power side: its record's identity number and name are
    // masked wherever they are shown, and trace to the power side's listing bytes.
    let (list, _) = text(&gateway(&[
        "--db", db, "records", "list", "--limit", "1000", "--json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let household = rows
        .iter()
        .filter(|r| r["category"] == "small_residential")
        .filter_map(|r| r["id"].as_str())
        .find(|id| id.starts_with("PW-"))
        .expect("a household's record imported from the power side");
    let out = gateway(&["--db", db, "trace", household, "--field", "builder", "--json"]);
    let (trace, _) = text(&out);
    assert!(out.status.success(), "{trace}");
    let v: serde_json::Value = serde_json::from_str(&trace).unwrap();
    for f in v["fields"].as_array().unwrap() {
        let raw = f["raw"].as_str().unwrap_or_default();
        assert!(raw.contains('*'), "{f}");
        assert!(f["path"].as_str().unwrap().starts_with("/items/"), "{f}");
        assert_eq!(f["fetches"][0]["method"], "GET", "{f}");
    }
    let (show, _) = text(&gateway(&["--db", db, "records", "show", household, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let id_code = v["content"]["builder"]["credit_code"].as_str().unwrap();
    assert!(id_code.contains("**********"), "{id_code}");
    // Its materials are the applicant's identity card and title, asked of the licence library
    // with the identity number.
    let (notice, _) = text(&gateway(&["--db", db, "notice", household, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&notice).unwrap();
    let items: Vec<(&str, Option<&str>)> = v["checklist"]["checklist"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item"].as_str().unwrap(), i["by"]["source"].as_str()))
        .collect();
    assert_eq!(items[0], ("identity_card", Some("licences")), "{notice}");
    assert_eq!(items[1].0, "premises_right", "{notice}");

    // A project's joint application: its status on the power side traces to the power side's
    // last answer through the power mapping.
    let (apps, _) = text(&gateway(&[
        "--db", db, "power", "list", "--limit", "1000", "--json",
    ]));
    let apps: Vec<serde_json::Value> = serde_json::from_str(&apps).unwrap();
    let joined = apps
        .iter()
        .filter_map(|a| a["record_id"].as_str())
        .find(|r| r.starts_with("PE-"))
        .expect("a project with a joint application");
    let out = gateway(&["--db", db, "trace", joined, "--field", "joint", "--json"]);
    let (trace, _) = text(&out);
    assert!(out.status.success(), "{trace}");
    let v: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let status = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "joint.status")
        .expect("joint.status traced");
    assert!(status["path"].as_str().unwrap().ends_with("/status"), "{status}");
    assert_eq!(status["mapping"], "power/application.toml");
    assert!(status["document_size"].as_u64().unwrap() > 0);

    // A probable duplicate held for an operator shows as held on its application.
    let (failures, _) = text(&gateway(&["--db", db, "failures", "list", "--all", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&failures).unwrap();
    let duplicate = rows
        .iter()
        .find(|f| f["source"] == "power" && f["step"] == "link")
        .expect("the demo holds a probable duplicate");
    let app = duplicate["key"].as_str().unwrap();
    let shown = ok(&gateway(&["--db", db, "power", "show", app]));
    assert!(shown.contains("held: power-origin application"), "{shown}");
    assert!(shown.contains("probable duplicate"), "{shown}");

    let out = gateway(&["--db", db, "records", "show", "PE-nope"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no record PE-nope"));
}

#[test]
fn a_bad_mapping_override_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps/approval");
    std::fs::create_dir_all(&maps).unwrap();
    let text_in = include_str!("../mappings/approval/project.toml").replace("\"diameter\"]", "\"diametre\"]");
    std::fs::write(maps.join("project.toml"), text_in).unwrap();
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[approval]\nbase_url = \"http://127.0.0.1:9\"\napp_id = \"x\"\n[mappings]\ndir = \"{}\"\n",
            dir.path().join("g.db").display(),
            dir.path().join("maps").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "sync", "--once"])
        .env("GATEWAY_APPROVAL_APP_SECRET", "s")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let line = include_str!("../mappings/approval/project.toml")
        .lines()
        .position(|l| l.contains("\"diameter\"]"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "approval/project.toml:{line}: unknown transform \"diametre\""
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_secret_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        "[approval]\nbase_url = \"http://127.0.0.1:9\"\napp_id = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "sync", "--once"])
        .env_remove("GATEWAY_APPROVAL_APP_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).1.contains("GATEWAY_APPROVAL_APP_SECRET"));
}

#[test]
fn calendar_commands_for_people_and_scripts() {
    let (out, _) = text(&gateway(&["calendar", "is-workday", "2024-02-18", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["working"], true, "{out}");
    assert!(v["reason"].as_str().unwrap().contains("调休"));

    let (out, _) = text(&gateway(&[
        "calendar",
        "due",
        "2023-09-28 16:30:00",
        "2",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["due"], "2023-10-09T00:00:00+08:00");
    assert_eq!(v["due_display"], "2023-10-08 24:00");
    // RFC 3339 is read too, whatever its offset; people see Beijing time with its offset.
    let (out, _) = text(&gateway(&["calendar", "due", "2023-09-28T08:30:00Z", "2"]));
    assert!(out.contains("2023-09-28 16:30:00 +08:00"), "{out}");

    let (out, _) = text(&gateway(&[
        "calendar",
        "count",
        "2025-12-30",
        "2026-01-05",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["working_days"], 3);

    let out = gateway(&["calendar", "due", "2026-12-30", "3"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no holiday calendar for 2027"));
}

#[test]
fn the_readme_configuration_example_loads() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let cfg = gateway::config::Config::parse("README.md", text, |name| {
        (name.ends_with("APP_SECRET") || name == "GATEWAY_POWER_CLIENT_SECRET").then(|| "s".to_string())
    })
    .unwrap();
    assert_eq!(cfg.approval.rate_per_second, 8);
    assert_eq!(cfg.licences.unwrap().rate_per_second, 4);
    assert_eq!(cfg.power.map(|p| p.rate_per_second), Some(4));
    assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:8686");
}

#[test]
fn config_check_validates_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let good = "[store]\npath = \"x.db\"\n\n[approval]\nbase_url = \"https://approval.example\"\napp_id = \"kmsw\"\n\n[sync]\nstart = \"2026-10-01 00:00:00\"\n";
    std::fs::write(&path, good).unwrap();
    let check = |env_secret: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.args(["--config", path.to_str().unwrap(), "config", "check"])
            .env_remove("GATEWAY_APPROVAL_APP_SECRET")
            .env_remove("RUST_LOG");
        if env_secret {
            cmd.env("GATEWAY_APPROVAL_APP_SECRET", "s");
        }
        cmd.output().unwrap()
    };
    let out = check(true);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("is valid") && stdout.contains("https://approval.example"),
        "{stdout}"
    );
    assert!(!dir.path().join("x.db").exists(), "a check creates nothing");
    // Without the secret.
    let out = check(false);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("GATEWAY_APPROVAL_APP_SECRET"));
    // A URL that is not one, with its line.
    std::fs::write(&path, good.replace("https://approval.example", "htp:/not a url")).unwrap();
    let out = check(true);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("gateway.toml:5: approval.base_url"),
        "{}",
        text(&out).1
    );
}
