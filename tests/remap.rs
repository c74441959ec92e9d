//! `gateway remap` through the real binary on a database synced from the simulator: a changed
//! mapping and policy shown by a dry run that writes nothing, applied as new versions of the
//! changed records only (same raw documents, the new mapping's hash, audited), nothing the
//! second time, and a remap killed between batches resumed to the same result.
#![cfg(feature = "simulators")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::daemon::{gateway, simulator, wait_for, write_config};
use sha2::Digest;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(config: &Path, args: &[&str]) -> Output {
    gateway(config, args)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap()
}

fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A mapping directory whose project mapping names the project kinds differently (`labels`
/// of the `XMLX` table rewritten) and, with `policy`, a policy that frees fewer connections.
fn changed_rules(dir: &Path, labels: &[(&str, &str)], policy: bool) -> (PathBuf, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let maps = dir.join("maps");
    std::fs::create_dir_all(maps.join("approval")).unwrap();
    let mut project = std::fs::read_to_string(root.join("approval/project.toml")).unwrap();
    for (from, to) in labels {
        assert!(project.contains(from), "{from}");
        project = project.replace(from, to);
    }
    std::fs::write(maps.join("approval/project.toml"), &project).unwrap();
    if policy {
        std::fs::create_dir_all(maps.join("policy")).unwrap();
        let text = std::fs::read_to_string(root.join("policy/2022.toml"))
            .unwrap()
            .replace("max_diameter_dn = 40", "max_diameter_dn = 25");
        std::fs::write(maps.join("policy/2022.toml"), text).unwrap();
    }
    (maps, hex::encode(sha2::Sha256::digest(project.as_bytes())))
}

fn with_mappings(config: &Path, maps: &Path) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!("\n[mappings]\ndir = \"{}\"\n", maps.display()));
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_what_changes_and_a_remap_commits_only_that() {
    let server = simulator(600).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 60);
    let db = dir.path().join("g.db");
    let out = tokio::task::block_in_place(|| run(&config, &["sync", "--once"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let records: i64 = query(&db, "SELECT count(*) FROM records");
    let versions: i64 = query(&db, "SELECT count(*) FROM record_versions");
    let buildings: i64 = query(
        &db,
        "SELECT count(*) FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
         WHERE json_extract(v.content, '$.project.kind.code') = '01'",
    );
    assert!(
        records > 300 && buildings > 0 && buildings < records,
        "{records} {buildings}"
    );

    let (maps, new_sha) = changed_rules(
        dir.path(),
        &[(r#""01" = "房屋建筑""#, r#""01" = "房屋建筑工程""#)],
        true,
    );
    with_mappings(&config, &maps);

    // The writer says that the stored records were made with other files.
    let out = tokio::task::block_in_place(|| run(&config, &["sync", "--once"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not in force"), "{}", stderr(&out));

    let out = tokio::task::block_in_place(|| run(&config, &["remap", "--dry-run", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &dry["summary"];
    assert_eq!(s["examined"], records);
    assert_eq!(s["fields"]["project.kind.label"]["records"], buildings, "{s}");
    assert_eq!(s["fields"]["project.kind.label"]["kind"], "field");
    let example = &s["fields"]["project.kind.label"]["examples"][0];
    assert_eq!(example["before"], "房屋建筑");
    assert_eq!(example["after"], "房屋建筑工程");
    let decisions: Vec<&String> = s["fields"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, f)| f["kind"] == "decision")
        .map(|(k, _)| k)
        .collect();
    assert!(
        !decisions.is_empty(),
        "the smaller free diameter changes decisions: {s}"
    );
    let changed = s["changed"].as_i64().unwrap();
    assert!(changed >= buildings && changed < records, "{s}");
    assert_eq!(s["records"].as_array().unwrap().len() as i64, changed);
    assert_eq!(
        query::<i64>(&db, "SELECT count(*) FROM record_versions"),
        versions,
        "a dry run writes nothing"
    );

    let out = tokio::task::block_in_place(|| run(&config, &["remap", "--by", "运维-李", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(applied["summary"]["changed"], changed);
    assert_eq!(applied["remap"]["changed"], changed);
    assert_eq!(
        query::<i64>(&db, "SELECT count(*) FROM record_versions"),
        versions + changed
    );
    // Each new version names the document of the version before it and the new mapping file.
    let mismatched: i64 = query(
        &db,
        "SELECT count(*) FROM record_versions n JOIN record_versions o
             ON o.record_id = n.record_id AND o.version = n.version - 1
         WHERE n.remap_id IS NOT NULL AND (n.document_sha256 != o.document_sha256
             OR n.source_version != o.source_version)",
    );
    assert_eq!(mismatched, 0);
    let by_new_mapping: i64 = query(
        &db,
        &format!(
            "SELECT count(*) FROM record_versions WHERE remap_id IS NOT NULL AND mapping_sha256 = '{new_sha}'
               AND json_extract(lineage, '$.sources[0].mapping_sha256') = '{new_sha}'"
        ),
    );
    assert_eq!(by_new_mapping, changed);
    let untouched: i64 = query(
        &db,
        "SELECT count(*) FROM records r WHERE NOT EXISTS
             (SELECT 1 FROM record_versions v WHERE v.record_id = r.id AND v.remap_id IS NOT NULL)",
    );
    assert_eq!(
        untouched,
        records - changed,
        "an unchanged record gets no version"
    );
    let audit = tokio::task::block_in_place(|| run(&config, &["audit", "list", "--json"]));
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("remap_started") && audit.contains("remap_finished") && audit.contains("运维-李"));

    // Nothing left to change; and the writer no longer warns.
    let out = tokio::task::block_in_place(|| run(&config, &["remap", "--by", "运维-李", "--json"]));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["summary"]["changed"], 0);
    assert_eq!(again["summary"]["unchanged"], records);
    let out = tokio::task::block_in_place(|| run(&config, &["sync", "--once"]));
    assert!(!stderr(&out).contains("not in force"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_remap_resumes_after_its_last_batch() {
    let server = simulator(2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "g", &server, 60);
    let db = dir.path().join("g.db");
    let out = tokio::task::block_in_place(|| run(&config, &["sync", "--once"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let records: i64 = query(&db, "SELECT count(*) FROM records WHERE source = 'approval'");
    let (maps, _) = changed_rules(
        dir.path(),
        &[
            (r#""01" = "房屋建筑""#, r#""01" = "房屋建筑工程""#),
            (r#""02" = "市政基础设施""#, r#""02" = "市政基础设施工程""#),
            (r#""03" = "交通水利等其他""#, r#""03" = "交通水利等其他工程""#),
        ],
        false,
    );
    with_mappings(&config, &maps);

    let mut remap = gateway(&config, &["remap", "--by", "ops", "--batch", "5"])
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(
            "a few batches committed",
            Duration::from_secs(120),
            Some(&mut remap),
            || {
                rusqlite::Connection::open(&db)
                    .and_then(|c| {
                        c.query_row("SELECT changed FROM remaps WHERE id = 1", [], |r| {
                            r.get::<_, i64>(0)
                        })
                    })
                    .is_ok_and(|n| n >= 50)
            },
        )
    });
    remap.kill().unwrap();
    remap.wait().unwrap();
    let done: i64 = query(&db, "SELECT changed FROM remaps WHERE id = 1");
    assert!(done < records, "killed before the end ({done} of {records})");
    assert_eq!(
        query::<String>(&db, "SELECT state FROM remaps WHERE id = 1"),
        "running"
    );

    let out = tokio::task::block_in_place(|| run(&config, &["remap", "--by", "ops"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("remap 1 resumed"), "{text}");
    assert_eq!(
        query::<String>(&db, "SELECT state FROM remaps WHERE id = 1"),
        "finished"
    );
    assert_eq!(
        query::<i64>(&db, "SELECT changed FROM remaps WHERE id = 1"),
        records
    );
    // Every record exactly once, with the new label.
    let once: i64 = query(
        &db,
        "SELECT count(*) FROM (SELECT record_id FROM record_versions WHERE remap_id = 1
                               GROUP BY record_id HAVING count(*) = 1)",
    );
    assert_eq!(once, records);
    let relabelled: i64 = query(
        &db,
        "SELECT count(*) FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
         WHERE json_extract(v.content, '$.project.kind.label') LIKE '%工程'",
    );
    assert_eq!(relabelled, records);
}
