//! `GET /healthz` and `GET /readyz` of the real daemon: ready once a pass has run; not ready,
//! with the reason named, when a holiday calendar the deadlines need is removed and while the
//! approval platform is in maintenance; ready again when both are fixed.
#![cfg(feature = "simulators")]

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::Datelike;
use common::daemon::{gateway, http, listen_on_free_port, simulator, stop, wait_for, write_config};
use shuiwu_approval::sim::Fault;

/// GET `path` on the daemon: the status and the JSON body.
fn get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http(port, "GET", path, None, None)?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Years the deadlines need now (this one and, from October, the next) that the embedded
/// calendars lack: the files an operator must put in the mappings directory.
fn needed_years() -> Vec<i32> {
    let today = shuiwu_wire::beijing_today();
    let embedded: Vec<i32> = gateway::calendar::Calendar::load(None).unwrap().years().collect();
    [today.year()]
        .into_iter()
        .chain((today.month() >= 10).then_some(today.year() + 1))
        .filter(|y| !embedded.contains(y))
        .collect()
}

fn calendar_file(dir: &Path, year: i32) -> std::path::PathBuf {
    dir.join("calendars").join(format!("{year}.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_missing_calendar_and_a_maintenance_window() {
    let server = simulator(100).await;
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(maps.join("calendars")).unwrap();
    let years = needed_years();
    for y in &years {
        std::fs::write(calendar_file(&maps, *y), format!("year = {y}\n")).unwrap();
    }
    let config = write_config(dir.path(), "ready", &server, 1);
    let port = listen_on_free_port(&config);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[mappings]\ndir = \"{}\"\n", maps.display()),
    )
    .unwrap();
    let mut child = gateway(&config, &["run"]).spawn().unwrap();
    let ready = |want: u16| move || get(port, "/readyz").is_some_and(|(s, _)| s == want);
    tokio::task::block_in_place(|| {
        wait_for("/healthz", Duration::from_secs(60), Some(&mut child), || {
            get(port, "/healthz").is_some_and(|(s, b)| s == 200 && b["status"] == "alive")
        });
        wait_for("ready", Duration::from_secs(60), Some(&mut child), ready(200));
    });
    let (_, body) = get(port, "/readyz").unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert!(body["last_pass"].is_string(), "{body}");

    // A calendar the deadlines need is removed: not ready, and the body says which.
    if let Some(year) = years.first() {
        let file = calendar_file(&maps, *year);
        std::fs::remove_file(&file).unwrap();
        let (status, body) = get(port, "/readyz").unwrap();
        assert_eq!(status, 503, "{body}");
        let reasons = body["reasons"].to_string();
        assert!(
            reasons.contains(&format!("NO HOLIDAY CALENDAR for {year}")),
            "{body}"
        );
        std::fs::write(&file, format!("year = {year}\n")).unwrap();
        assert_eq!(get(port, "/readyz").unwrap().0, 200);
    }

    // The platform goes into maintenance: the next pass meets it, and readiness says so.
    server.sim.inject_next(Fault::Maintenance { for_secs: 8 });
    tokio::task::block_in_place(|| {
        wait_for(
            "not ready during maintenance",
            Duration::from_secs(30),
            Some(&mut child),
            ready(503),
        );
    });
    let (_, body) = get(port, "/readyz").unwrap();
    assert!(
        body["reasons"].to_string().contains("maintenance gate is shut"),
        "{body}"
    );
    tokio::task::block_in_place(|| {
        wait_for(
            "ready after maintenance",
            Duration::from_secs(60),
            Some(&mut child),
            ready(200),
        );
    });

    tokio::task::block_in_place(|| stop(&mut child));
}
