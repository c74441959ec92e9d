//! `GET /metrics` of the real daemon, scraped while it backfills from the simulator and after:
//! the lag falls a window at a time and counters follow the commits; after the sync the numbers
//! are those of what happened (project versions by outcome, held failures by category, records,
//! passes) and the cursor's lag is what the cursor rule leaves.
#![cfg(feature = "simulators")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::daemon::{gateway, http, listen_on_free_port, rows, simulator, stop, wait_for, write_config};
use gateway::store::Store;

/// The scrape: each sample line (`name{labels} value`) by its name with labels.
fn scrape(port: u16) -> Option<BTreeMap<String, f64>> {
    let (status, body) = http(port, "GET", "/metrics", None, None)?;
    if status != 200 {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraped_numbers_are_what_happened() {
    let server = simulator(400).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "metrics", &server, 1);
    let port = listen_on_free_port(&config);
    let db = dir.path().join("metrics.db");
    let mut child = gateway(&config, &["run"]).spawn().unwrap();
    // Two passes have finished: the backfill and one that found nothing new.
    let passes = |m: &BTreeMap<String, f64>| sum(m, "gateway_passes_total{outcome=\"caught_up\"}");
    let (metrics, before, after) = tokio::task::block_in_place(|| {
        let mut last = None;
        let (mut before, mut after) = (0, 0);
        wait_for("two passes", Duration::from_secs(120), Some(&mut child), || {
            before = server.sim.stats().details;
            last = scrape(port).filter(|m| passes(m) >= 2.0);
            after = server.sim.stats().details;
            last.is_some()
        });
        (last.unwrap(), before, after)
    });
    // Every detail request the platform saw is counted, by outcome, with its latency.
    let details = sum(
        &metrics,
        "gateway_requests_total{platform=\"approval\",endpoint=\"detail\"",
    );
    assert!(
        (before as f64 - 8.0..=after as f64).contains(&details),
        "{details} counted; the platform saw {before}..{after}"
    );
    assert!(
        metrics["gateway_request_duration_seconds_count{platform=\"approval\",endpoint=\"detail\"}"]
            >= details - 8.0,
        "{metrics:?}"
    );
    assert!(
        sum(
            &metrics,
            "gateway_requests_total{platform=\"approval\",endpoint=\"list\""
        ) >= 2.0
    );
    // Every answered call counts against the day's quota, as the platform counts it.
    let quota = metrics["gateway_quota_used{platform=\"approval\"}"];
    assert!(
        quota >= details,
        "{quota} counted against the quota, {details} detail calls"
    );
    let store = Store::open(&db).unwrap();
    let processed = rows(&db, "source_versions") as f64;
    assert!(processed > 300.0, "{processed}");
    assert_eq!(
        sum(&metrics, "gateway_project_versions_total{"),
        processed,
        "{metrics:?}"
    );
    let created = store
        .processed()
        .unwrap()
        .iter()
        .filter(|p| p.3 == "created")
        .count() as f64;
    assert_eq!(
        metrics["gateway_project_versions_total{outcome=\"created\"}"],
        created
    );
    let held = store.failures(Some("held"), 10_000).unwrap().len() as f64;
    assert!(held > 0.0, "the simulator's malformed projects are held");
    assert_eq!(sum(&metrics, "gateway_failures_held{"), held, "{metrics:?}");
    assert_eq!(metrics["gateway_records"], store.record_count().unwrap() as f64);
    // Every row the daemon wrote is in the audit log, under a signed checkpoint.
    assert!(
        metrics["gateway_audit_log_entries"] > 5.0 * metrics["gateway_records"],
        "{metrics:?}"
    );
    assert_eq!(metrics["gateway_audit_log_unsigned_entries"], 0.0);
    // The cursor trails now by the platform's visibility lag and the settling time (360 s) and
    // less than one more window.
    let lag = metrics["gateway_cursor_lag_seconds{source=\"approval\"}"];
    assert!((300.0..=86_400.0 + 360.0).contains(&lag), "lag {lag}");
    assert_eq!(metrics["gateway_outbox_pending"], 0.0);

    tokio::task::block_in_place(|| stop(&mut child));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_during_a_backfill_the_lag_falls_and_the_counts_follow_the_commits() {
    // Eleven days of projects behind the cursor's start: the backfill reads a window of a day
    // at a time, and the lag falls by about a day as each window completes.
    let server = simulator(2_500).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "during", &server, 1);
    let port = listen_on_free_port(&config);
    let db = dir.path().join("during.db");
    let mut child = gateway(&config, &["run"]).spawn().unwrap();
    let mut lags: Vec<f64> = Vec::new();
    let mut last_versions = 0.0;
    let mut last_details = 0.0;
    tokio::task::block_in_place(|| {
        wait_for(
            "the backfill to catch up",
            Duration::from_secs(180),
            Some(&mut child),
            || {
                let Some(m) = scrape(port) else { return false };
                let committed_after = rows(&db, "source_versions") as f64;
                let seen_after = server.sim.stats().details as f64;
                // Counters only grow, and never count more than happened.
                let versions = sum(&m, "gateway_project_versions_total{");
                let details = sum(
                    &m,
                    "gateway_requests_total{platform=\"approval\",endpoint=\"detail\"",
                );
                assert!(
                    versions >= last_versions && details >= last_details,
                    "a counter went down"
                );
                assert!(
                    versions <= committed_after,
                    "{versions} counted, {committed_after} committed"
                );
                assert!(
                    details <= seen_after,
                    "{details} counted, the platform saw {seen_after}"
                );
                (last_versions, last_details) = (versions, details);
                if let Some(&lag) = m.get("gateway_cursor_lag_seconds{source=\"approval\"}") {
                    lags.push(lag);
                }
                sum(&m, "gateway_passes_total{outcome=\"caught_up\"}") >= 1.0
            },
        )
    });
    // Sampled while windows completed: the lag went through several values, falling.
    let mut distinct: Vec<f64> = lags.iter().map(|l| (l / 3600.0).round()).collect();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the lag seen: {lags:?}");
    assert!(
        lags.first().unwrap() > &86_400.0,
        "the first lag is days: {lags:?}"
    );
    for pair in lags.windows(2) {
        // The lag grows by the time between two scrapes while no window completes.
        assert!(pair[1] <= pair[0] + 5.0, "the lag rose: {lags:?}");
    }
    // Caught up, the cursor trails now by the visibility lag and the settling time (360 s),
    // plus the time since the last pass (the interval is one second).
    let m = scrape(port).unwrap();
    let lag = m["gateway_cursor_lag_seconds{source=\"approval\"}"];
    assert!((360.0..=400.0).contains(&lag), "caught up, the lag is {lag}");
    assert_eq!(
        sum(&m, "gateway_project_versions_total{"),
        rows(&db, "source_versions") as f64
    );

    tokio::task::block_in_place(|| stop(&mut child));
}
