//! `gateway report timeliness` through the real binary on records synced from the simulator,
//! with stage events and alerts recorded: every figure checked against what the test computes
//! itself from the database (SQL over the stored records) and from the times it chose.
#![cfg(feature = "simulators")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::daemon::{gateway, simulator, write_config};
use gateway::calendar::Calendar;
use gateway::worktime;

fn run(config: &Path, args: &[&str]) -> Output {
    gateway(config, args)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `SELECT key, count(*) … GROUP BY key` as a map.
fn counts(db: &Path, sql: &str) -> BTreeMap<String, u64> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn beijing(text: &str) -> chrono::DateTime<chrono::Utc> {
    shuiwu_wire::parse_beijing(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeliness_report_is_what_the_records_say() {
    let server = simulator(400).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "r", &server, 60);
    let db = dir.path().join("r.db");
    tokio::task::block_in_place(|| ok(&run(&config, &["sync", "--once"])));

    // Two records with a timed survey: one surveyed within its limit, one far past it.
    let current =
        "FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version";
    let timed: Vec<String> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = c
            .prepare(&format!(
                "SELECT r.id {current} WHERE json_extract(v.content, '$.decisions.stages.state') = 'limits'
                   AND json_extract(v.content, '$.decisions.stages.stages[0].stage') = 'site_survey'
                 ORDER BY r.id LIMIT 2"
            ))
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(timed.len(), 2);
    // Monday 2026-11-02 10:00 accepted; surveyed Tuesday 12:00 (half a working day after the
    // clock started at 00:00 Tuesday), or on 2026-11-30 12:00.
    let accepted = "2026-11-02 10:00:00";
    let surveyed = ["2026-11-03 12:00:00", "2026-11-30 12:00:00"];
    for (id, at) in timed.iter().zip(surveyed) {
        for (event, when) in [("accepted", accepted), ("survey-done", at)] {
            let mut args = vec!["record", "event", id, event, "--by", "测试员", "--at", when];
            if event == "survey-done" {
                args.extend(["--pipe-length", "10"]);
            }
            tokio::task::block_in_place(|| ok(&run(&config, &args)));
        }
    }
    // Alerts as the daemon's watch raises them.
    let store = gateway::store::Store::open(&db).unwrap();
    let now = chrono::Utc::now();
    store
        .raise_alert(&timed[1], "site_survey", "warning", "2026-11-05 00:00:00", now)
        .unwrap();
    store
        .raise_alert(&timed[1], "site_survey", "alarm", "2026-11-05 00:00:00", now)
        .unwrap();
    drop(store);

    let today = worktime::date_of(now).to_string();
    let out = tokio::task::block_in_place(|| {
        ok(&run(
            &config,
            &["report", "timeliness", "--from", &today, "--to", &today, "--json"],
        ))
    });
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();

    // Applications by company, manager and category: the records' own decisions.
    let records = counts(&db, &format!("SELECT 'all', count(*) {current}"))["all"];
    assert_eq!(report["total"]["applications"], records);
    for (dimension, path) in [
        ("by_company", "$.decisions.customer_manager.company_name"),
        ("by_manager", "$.decisions.customer_manager.manager"),
        ("by_category", "$.decisions.category.id"),
    ] {
        let expected = counts(
            &db,
            &format!(
                "SELECT coalesce(json_extract(v.content, '{path}'), '{}'), count(*) {current} GROUP BY 1",
                if dimension == "by_category" {
                    "(undecided)"
                } else {
                    "(none)"
                }
            ),
        );
        let got: BTreeMap<String, u64> = report[dimension]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, f)| (k.clone(), f["applications"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, expected, "{dimension}");
    }

    // The survey stage: two completed, one within the limit; working days used as the test
    // counts them from the clock's start.
    let survey = &report["by_stage"]["site_survey"];
    assert_eq!(survey["completed"], 2, "{survey}");
    assert_eq!(survey["completed_within_limit"], 1, "{survey}");
    assert_eq!(
        (survey["warnings"].as_u64(), survey["alarms"].as_u64()),
        (Some(1), Some(1))
    );
    let cal = Calendar::load(None).unwrap();
    let used = |done: &str| {
        let from = worktime::clock_start(beijing(accepted)).unwrap();
        worktime::working_seconds(&cal, from, beijing(done)).unwrap() as f64 / 86_400.0
    };
    let (fast, slow) = (used(surveyed[0]), used(surveyed[1]));
    assert_eq!(fast, 0.5);
    assert!(slow > 15.0, "{slow}");
    // Nearest rank of two values: the median is the smaller, the 90th percentile the larger.
    assert_eq!(survey["median_working_days_used"].as_f64(), Some(fast));
    assert_eq!(
        survey["p90_working_days_used"].as_f64(),
        Some((slow * 100.0).round() / 100.0)
    );
    let with_survey = counts(
        &db,
        &format!(
            "SELECT 'n', count(*) {current}, json_each(v.content, '$.progress.stages') s
             WHERE json_extract(s.value, '$.stage') = 'site_survey'
               AND json_extract(s.value, '$.working_days') IS NOT NULL"
        ),
    )["n"];
    assert_eq!(survey["applications"], with_survey);
    assert_eq!(report["total"]["warnings"], 1);
    assert_eq!(report["total"]["alarms"], 1);

    // Free connections: every record counted once, the free ones as the decisions say.
    let free: u64 = report["free_of_charge"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let not_free: u64 = report["not_free"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let expected_free = counts(
        &db,
        &format!("SELECT 'n', count(*) {current} WHERE json_extract(v.content, '$.decisions.fee.free') = 1"),
    )["n"];
    assert_eq!(free, expected_free);
    assert_eq!(free + not_free, records);
    assert_eq!(
        report["zero_materials"]["checked"], 0,
        "no licence library in this run"
    );

    // The CSV has the same groups, the same figures.
    let csv_text = tokio::task::block_in_place(|| {
        ok(&run(
            &config,
            &["report", "timeliness", "--from", &today, "--to", &today, "--csv"],
        ))
    });
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let survey_row = rows
        .iter()
        .find(|r| &r[0] == "stage" && &r[1] == "site_survey")
        .unwrap();
    assert_eq!(&survey_row[3], "2");
    assert_eq!(&survey_row[4], "1");
    let total_row = rows.iter().find(|r| &r[0] == "total").unwrap();
    assert_eq!(total_row[2].parse::<u64>().unwrap(), records);

    // A period without records has none; a bad period is refused.
    let out = tokio::task::block_in_place(|| {
        ok(&run(
            &config,
            &["report", "timeliness", "--quarter", "2022Q1", "--json"],
        ))
    });
    let empty: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(empty["total"]["applications"], 0);
    let out = tokio::task::block_in_place(|| run(&config, &["report", "timeliness", "--quarter", "2026Q5"]));
    assert!(!out.status.success());
}

#[test]
fn zero_materials_and_joint_applications_are_those_of_the_stored_checks() {
    // The demo checks materials against the licence library and exchanges joint applications.
    let dir = tempfile::tempdir().unwrap();
    let db = common::cli::demo(dir.path(), 80);
    let today = worktime::date_of(chrono::Utc::now()).to_string();
    // Today's report, as `gateway report timeliness --json` prints it.
    let report_now = || -> serde_json::Value {
        let out = common::cli::ok(&common::cli::gateway(&[
            "--db",
            db.to_str().unwrap(),
            "report",
            "timeliness",
            "--from",
            &today,
            "--to",
            &today,
            "--json",
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let report = report_now();
    let latest = "FROM materials_checks m WHERE m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = m.record_id)";
    let checked = counts(&db, &format!("SELECT 'n', count(*) {latest}"))["n"];
    let achieved = counts(
        &db,
        &format!("SELECT 'n', count(*) {latest} AND m.zero_materials = 1"),
    )["n"];
    assert!(
        checked > 0 && achieved > 0 && achieved < checked,
        "{checked} {achieved}"
    );
    let z = &report["zero_materials"];
    assert_eq!(
        (z["checked"].as_u64(), z["achieved"].as_u64()),
        (Some(checked), Some(achieved))
    );
    let missed = counts(
        &db,
        "SELECT json_extract(i.value, '$.item'), count(*) FROM materials_checks m, json_each(m.checklist, '$.items') i
         WHERE m.id = (SELECT max(id) FROM materials_checks x WHERE x.record_id = m.record_id)
           AND json_extract(i.value, '$.satisfied') = 0 GROUP BY 1",
    );
    let got: BTreeMap<String, u64> = z["most_missed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect();
    assert_eq!(got, missed);
    let most = z["most_missed"].as_array().unwrap();
    assert!(
        most.windows(2).all(|w| w[0][1].as_u64() >= w[1][1].as_u64()),
        "most often first"
    );

    let joint = counts(
        &db,
        "SELECT p.status || ' / ' || coalesce(p.water_status, '-'), count(*) FROM power_applications p
         WHERE p.record_id IS NOT NULL GROUP BY 1",
    );
    assert!(!joint.is_empty());
    let got: BTreeMap<String, u64> = report["joint"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(got, joint);

    // The report lines kept as records changed are the lines of the records' current content
    // and latest materials checks, as migration 13 writes them for an older database, line for
    // line; and so is the report.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let lines = || -> Vec<Vec<String>> {
        conn.prepare("SELECT * FROM report_lines ORDER BY record_id")
            .unwrap()
            .query_map([], |r| {
                (0..11)
                    .map(|i| Ok(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?)))
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let kept = lines();
    assert_eq!(
        kept.len() as u64,
        counts(&db, "SELECT 'all', count(*) FROM records")["all"]
    );
    assert!(
        kept.iter().any(|l| l[9] != "Null"),
        "some lines have a materials check"
    );
    // The database as migration 12 left it (without migration 14's audit log and 15's
    // coverage ledger), opened by this gateway.
    conn.execute_batch(
        "DROP TABLE tlog_entries; DROP TABLE tlog_head; DROP TABLE tlog_checkpoints; DROP TABLE coverage_windows;
         DROP TABLE report_lines; ALTER TABLE records ADD COLUMN report_facts TEXT; PRAGMA user_version = 12;",
    )
    .unwrap();
    drop(gateway::store::Store::open(&db).unwrap());
    assert_eq!(lines(), kept);
    assert_eq!(report_now(), report, "from the migrated lines");
}
