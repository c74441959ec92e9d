//! The admin JSON API of the real daemon: refused without a token or with a wrong one (401),
//! reads and writes with a token from `gateway admin-token`, every write audited with the name
//! the token carries, and the token never in the log.
#![cfg(feature = "simulators")]

mod common;

use std::time::Duration;

use common::daemon::{gateway, http, listen_on_free_port, rows, simulator, stop, wait_for, write_config};

/// One request: the status and the JSON body.
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, body) = http(port, method, path, token, body).expect("the daemon answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_name_the_operator_and_every_write_is_audited_with_it() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    // A token as an operator makes one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["admin-token", "张工"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let token = lines[1].trim().to_string();
    let line = lines.last().unwrap().trim().to_string();
    assert!(
        line.starts_with("张工 sha256:") && !line.contains(&token),
        "{text}"
    );
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, format!("# operators of the admin API\n{line}\n")).unwrap();

    let config = write_config(dir.path(), "admin", &server, 1);
    let port = listen_on_free_port(&config);
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &listen,
        &format!("{listen}\nadmin_tokens_file = \"{}\"", tokens.display()),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("daemon.log");
    let db = dir.path().join("admin.db");
    let mut child = gateway(&config, &["run"])
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(
            "a pass and held failures",
            Duration::from_secs(120),
            Some(&mut child),
            || db.exists() && rows(&db, "runs WHERE outcome IS NOT NULL") > 0,
        )
    });

    // Refused without a token and with a wrong one.
    let (status, _) = call(port, "GET", "/admin/v1/failures?state=held", None, None);
    assert_eq!(status, 401);
    let (status, body) = call(
        port,
        "GET",
        "/admin/v1/failures?state=held",
        Some("not-a-token"),
        None,
    );
    assert_eq!(status, 401, "{body}");
    let (status, _) = call(
        port,
        "POST",
        "/admin/v1/failures/1/dismiss",
        Some("not-a-token"),
        Some(r#"{"reason":"x"}"#),
    );
    assert_eq!(status, 401);

    // Reads.
    let (status, held) = call(port, "GET", "/admin/v1/failures?state=held", Some(&token), None);
    assert_eq!(status, 200, "{held}");
    let held = held.as_array().unwrap().clone();
    assert!(held.len() >= 2, "{held:?}");
    let (status, records) = call(port, "GET", "/admin/v1/records?limit=5", Some(&token), None);
    assert_eq!(status, 200);
    let id = records[0]["id"].as_str().unwrap().to_string();
    let (status, record) = call(
        port,
        "GET",
        &format!("/admin/v1/records/{id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{record}");
    if let Some(phone) = record["content"]["contact"]["phone"].as_str() {
        assert!(phone.contains('*'), "personal data masked: {phone}");
    }
    for path in ["/admin/v1/deadlines", "/admin/v1/runs", "/admin/v1/outbox"] {
        let (status, body) = call(port, "GET", path, Some(&token), None);
        assert_eq!(status, 200, "{path}: {body}");
    }

    // Writes, audited with the token's name.
    let first = held[0]["id"].as_i64().unwrap();
    let (status, body) = call(
        port,
        "POST",
        &format!("/admin/v1/failures/{first}/dismiss"),
        Some(&token),
        Some(r#"{"reason":"与审批平台核实：测试数据"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["by"], "张工");
    let second = held[1]["id"].as_i64().unwrap();
    let (status, body) = call(
        port,
        "POST",
        &format!("/admin/v1/failures/{second}/replay"),
        Some(&token),
        Some(r#"{"dry_run":true}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["selected"], 1, "{body}");
    let (status, body) = call(
        port,
        "POST",
        &format!("/admin/v1/records/{id}/events"),
        Some(&token),
        Some(r#"{"action":{"kind":"manager_reassigned","manager":"TY-09","reason":"轮岗"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    // A bulk replay needs a selection, and is then one audited action naming every item.
    let (status, body) = call(
        port,
        "POST",
        "/admin/v1/failures/replay",
        Some(&token),
        Some("{}"),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        port,
        "POST",
        "/admin/v1/failures/replay",
        Some(&token),
        Some(r#"{"all":true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let summary = &body["summary"];
    assert_eq!(summary["selected"], held.len() as u64 - 1, "{body}");
    let replayed = summary["replayed"].as_u64().unwrap();
    assert_eq!(
        replayed + summary["still_failing"].as_u64().unwrap() + summary["not_replayable"].as_u64().unwrap(),
        held.len() as u64 - 1,
        "{body}"
    );
    let audit = gateway::store::Store::open(&db).unwrap().audit_entries().unwrap();
    let by_api: Vec<_> = audit
        .iter()
        .filter(|e| e.actor == "张工")
        .map(|e| e.action.as_str())
        .collect();
    // A bulk replay that commits nothing (the simulator's malformed projects still do not
    // map) changes nothing and is not an audited write.
    let expected: &[&str] = if replayed > 0 {
        &["failure_dismissed", "manager_reassigned", "failures_replayed"]
    } else {
        &["failure_dismissed", "manager_reassigned"]
    };
    assert_eq!(by_api, expected, "{audit:?}");

    tokio::task::block_in_place(|| stop(&mut child));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(&token), "the token reached the log");
    assert!(logged.contains("unknown bearer token"), "refusals are logged");
}
