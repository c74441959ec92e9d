//! The three listing hazards of the approval contract — drifting pages, second-precision
//! `GXSJ`, visibility lag — against the real client and store, over HTTP to the simulator.
#![cfg(feature = "simulators")]

mod common;

use chrono::Duration;
use common::*;
use gateway::sync::PassEnd;

#[tokio::test]
async fn backfill_processes_every_visible_project_exactly_once() {
    let start = t0() - Duration::days(3);
    let w = world(
        sim_config(1_200, start, t0() - Duration::hours(1)),
        start - Duration::hours(1),
    )
    .await;
    let report = w.pass().await;
    assert_eq!(report.end, PassEnd::CaughtUp);
    assert!(report.windows >= 3, "{report:?}");
    assert!(w.missing(start).is_empty());
    // Every outcome is accounted for: records, skips and held failures add up to the projects.
    let total: u64 = report.outcomes.values().sum();
    assert_eq!(total, 1_200, "{:?}", report.outcomes);
    assert_eq!(report.outcomes.get("duplicate"), None);
    // Every mapped path found something in a pass this size: no false alarm.
    assert_eq!(report.mapping_warnings, Vec::<String>::new());
    // The cursor stops short of the lag: now − 5 min − 1 min.
    assert_eq!(
        w.store.cursor("approval").unwrap(),
        Some(t0() - Duration::minutes(6))
    );
    // A second pass changes nothing and fetches no detail.
    let again = w.pass().await;
    assert_eq!(again.details_fetched, 0, "{again:?}");
    let g = &w.server.sim.config().generator;
    let malformed = (0..g.count).filter(|&i| g.malformation(i).is_some()).count() as u64;
    assert_eq!(report.outcomes.get("held").copied().unwrap_or(0), malformed);
    assert!(report.outcomes["skipped"] > 0 && report.outcomes["withdrawn"] > 0);
}

#[tokio::test]
async fn late_visible_versions_are_read_on_a_later_pass() {
    // Projects right up to "now": many are not visible yet on the first pass.
    let start = t0() - Duration::hours(2);
    let w = world(sim_config(600, start, t0()), start).await;
    let first = w.pass().await;
    let cursor = w.store.cursor("approval").unwrap().unwrap();
    assert!(
        cursor <= t0() - Duration::minutes(5),
        "cursor {cursor} passed the lag"
    );
    let later_visible = {
        w.clock.advance(Duration::minutes(10));
        w.missing(start).len()
    };
    assert!(
        later_visible > 0,
        "the test needs versions that became visible late"
    );
    let second = w.pass().await;
    assert!(w.missing(start).is_empty(), "{first:?} {second:?}");
}

#[tokio::test]
async fn pages_that_drift_while_read_lose_nothing() {
    // 1,500 projects in one day, and every second listing request moves the first project of
    // the page it served to "now": naive page-number paging skips one project per move.
    let start = t0() - Duration::days(1);
    let mut sim = sim_config(1_500, start, t0() - Duration::hours(1));
    sim.drift_every = Some(2);
    // No lag here: a moved version is visible at once, so the pages shift under the reader.
    sim.lag = Duration::zero();
    let w = world(sim, start).await;
    w.pass().await;
    assert!(w.server.sim.stats().drift_changes > 5);
    // Moved projects carry new versions at "now": they are read once visible and settled.
    for _ in 0..3 {
        w.clock.advance(Duration::minutes(7));
        w.pass().await;
    }
    assert!(w.missing(start).is_empty());
}

#[tokio::test]
async fn many_projects_in_one_second_are_paged_by_number() {
    // 1,000 projects within 4 seconds: full pages that share one GXSJ second, while pages drift.
    let start = t0() - Duration::hours(3);
    let mut sim = sim_config(1_000, start, start + Duration::seconds(4));
    sim.drift_every = Some(3);
    sim.lag = Duration::zero();
    let w = world(sim, start - Duration::minutes(1)).await;
    let report = w.pass().await;
    assert_eq!(report.end, PassEnd::CaughtUp, "{report:?}");
    w.clock.advance(Duration::minutes(7));
    w.pass().await;
    assert!(w.missing(start).is_empty());
}

#[tokio::test]
async fn a_detail_newer_than_its_listing_does_not_move_the_cursor() {
    // Every listing request changes the first project it served, and with no lag the detail
    // call already returns that newer version (GXSJ = now).
    let start = t0() - Duration::days(2);
    let mut sim = sim_config(400, start, t0() - Duration::days(1));
    sim.drift_every = Some(1);
    sim.lag = Duration::zero();
    let w = world(sim, start).await;
    let report = w.pass().await;
    assert_eq!(report.end, PassEnd::CaughtUp);
    assert_eq!(
        w.store.cursor("approval").unwrap(),
        Some(t0() - Duration::minutes(6))
    );
    w.clock.advance(Duration::minutes(7));
    let second = w.pass().await;
    // The watermark's promise: every version stamped before the cursor is processed. (This
    // pass's own listing requests change projects too; those are stamped "now", after the
    // cursor, and read by the next pass.)
    let cursor = w.store.cursor("approval").unwrap().unwrap();
    let missing = w.missing_in(start, cursor);
    assert!(missing.is_empty(), "{missing:?} {report:?} {second:?}");
    w.clock.advance(Duration::minutes(7));
    w.pass().await;
    let cursor = w.store.cursor("approval").unwrap().unwrap();
    assert!(w.missing_in(start, cursor).is_empty());
}

#[tokio::test]
async fn naive_page_number_paging_would_lose_projects_here() {
    // The control for `pages_that_drift_while_read_lose_nothing`: the same drift against plain
    // page-number paging skips projects, so that test could fail.
    let start = t0() - Duration::days(1);
    let mut sim = sim_config(1_500, start, t0() - Duration::hours(1));
    sim.drift_every = Some(2);
    sim.lag = Duration::zero();
    let w = world(sim, start).await;
    let end = t0() - Duration::minutes(30);
    let mut seen = std::collections::HashSet::new();
    let mut page_no = 1;
    loop {
        let (page, _) = w.client.list_projects(start, end, page_no, 100).await.unwrap();
        for item in &page.list {
            seen.insert(item["XMDM"].as_str().unwrap().to_string());
        }
        if page.list.len() < 100 {
            break;
        }
        page_no += 1;
    }
    let g = &w.server.sim.config().generator;
    // Projects that drifted out of the window were seen at their old place first; the ones
    // that page shifts skipped were never seen at all.
    let missed = (0..g.count).filter(|&i| !seen.contains(&g.xmdm(i))).count();
    assert!(
        missed > 0,
        "naive paging saw every project; the drift test would prove nothing"
    );
}

#[tokio::test]
async fn quota_exhaustion_stops_the_pass_until_beijing_midnight() {
    use shuiwu_approval::sim::{Fault, Injection, Target};
    let start = t0() - Duration::days(3);
    let w = world(sim_config(900, start, t0() - Duration::hours(1)), start).await;
    w.server.sim.inject(Injection {
        fault: Fault::QuotaExhausted,
        target: Target::Detail,
        times: 1,
    });
    let first = w.pass().await;
    let PassEnd::Incomplete {
        not_before: Some(until),
        ..
    } = &first.end
    else {
        panic!("{first:?}")
    };
    // 2026-11-20 12:00 Beijing: the quota resets at 2026-11-21 00:00.
    assert_eq!(until, "2026-11-21T00:00:00+08:00");
    let cursor = w.store.cursor("approval").unwrap();
    assert!(
        cursor.is_none_or(|c| c < t0() - Duration::days(2)),
        "the cursor passed an unfinished window"
    );
    // Before midnight: no request at all.
    let requests = w.server.sim.stats().requests;
    w.clock.advance(Duration::hours(6));
    let blocked = w.pass().await;
    assert!(matches!(blocked.end, PassEnd::Incomplete { .. }));
    assert_eq!(w.server.sim.stats().requests, requests);
    // After midnight the backfill completes, nothing lost, nothing twice.
    w.clock.advance(Duration::hours(7));
    let done = w.pass().await;
    assert_eq!(done.end, PassEnd::CaughtUp, "{done:?}");
    assert!(w.missing(start).is_empty());
    assert_eq!(done.outcomes.get("duplicate"), None);
}

#[tokio::test]
async fn random_transient_faults_lose_nothing() {
    let start = t0() - Duration::days(2);
    let mut sim = sim_config(800, start, t0() - Duration::hours(1));
    sim.random_fault_per_mille = 60;
    let w = world(sim, start).await;
    for _ in 0..5 {
        if w.pass().await.end == PassEnd::CaughtUp {
            break;
        }
    }
    assert!(w.server.sim.stats().faults_injected > 20);
    assert!(w.missing(start).is_empty());
    let processed = w.store.processed().unwrap();
    assert_eq!(processed.len(), 800);
}

#[tokio::test]
async fn a_long_backfill_while_the_platform_keeps_changing() {
    // Platform time runs fast while the backfill reads (hours pass, as under the real quota),
    // projects keep changing, and new versions appear up to 5 minutes late.
    let start = t0() - Duration::days(4);
    let mut sim = sim_config(2_000, start, t0() - Duration::minutes(2));
    sim.drift_every = Some(5);
    let w = world(sim, start).await;
    // Every request the sync makes lets a minute of platform time pass and changes a project:
    // the churn follows the sync's progress, whatever the machine's speed.
    let clock = w.clock.clone();
    let g = w.server.sim.config().generator.clone();
    let next = std::sync::atomic::AtomicU64::new(0);
    w.server.sim.on_request(move |sim| {
        clock.advance(Duration::minutes(1));
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sim.change(&g.xmdm((i * 7 + 13) % g.count), |doc| {
            doc["JZGD"] = serde_json::Value::from("12")
        });
    });
    let first = w.pass().await;
    w.server.sim.on_request(|_| {});
    assert!(
        w.clock.now_utc() - t0() > Duration::minutes(20),
        "platform time must pass during the backfill"
    );
    // Let everything settle, then one more pass must find every newest version.
    w.clock.advance(Duration::minutes(7));
    let second = w.pass().await;
    assert!(w.missing(start).is_empty(), "{first:?}\n{second:?}");
}

#[tokio::test]
async fn a_project_that_keeps_failing_is_held_and_the_window_moves_on() {
    use shuiwu_approval::sim::Fault;
    let start = t0() - Duration::days(2);
    let w = world(sim_config(300, start, t0() - Duration::hours(1)), start).await;
    let g = w.server.sim.config().generator.clone();
    let stuck = g.xmdm(10);
    w.server.sim.fail_project(&stuck, Some(Fault::Internal200));
    // The first passes leave the window open (the project may recover)…
    let first = w.pass().await;
    assert!(matches!(first.end, PassEnd::Incomplete { .. }), "{first:?}");
    let cursor = w.store.cursor("approval").unwrap();
    // …then it is held, the window completes and the cursor moves past it.
    for _ in 0..5 {
        w.clock.advance(Duration::hours(2));
        w.pass().await;
    }
    let held = w.store.failures(Some("held"), 100).unwrap();
    let f = held
        .iter()
        .find(|f| f.key.as_deref() == Some(stuck.as_str()))
        .expect("held");
    assert!(f.reason.contains("kept failing"), "{}", f.reason);
    assert!(w.store.cursor("approval").unwrap() > cursor);
    assert_eq!(
        w.store.cursor("approval").unwrap(),
        Some(w.clock.now_utc() - Duration::minutes(6))
    );
    assert!(
        w.missing(start).iter().all(|(x, _)| *x == stuck),
        "every other project is in"
    );

    // The platform heals; an operator replays the held version by fetching it again.
    w.server.sim.fail_project(&stuck, None);
    let (item, raw) = w.syncer.refetch(&stuck, f.version.unwrap()).await.unwrap();
    let gateway::store::Item::Record {
        key,
        document_sha256,
        draft,
        ..
    } = item
    else {
        panic!("{item:?}")
    };
    let docs: Vec<_> = raw
        .into_iter()
        .map(|r| (gateway::store::sha256_hex(&r.bytes), r))
        .collect();
    let applied = w
        .store
        .resolve_failure(
            f.id,
            "张工",
            "refetched",
            Some((&key, &document_sha256, *draft, w.syncer.rebuilder())),
            &docs,
            w.clock.now_utc(),
        )
        .unwrap();
    assert_eq!(applied, Some(gateway::store::Applied::Created));
    assert!(w.missing(start).is_empty(), "nothing is missing any more");
    assert!(
        w.store.document(&document_sha256).unwrap().is_some(),
        "the refetched bytes are kept"
    );
}

#[tokio::test]
async fn a_short_fault_is_not_held() {
    use shuiwu_approval::sim::Fault;
    let start = t0() - Duration::days(1);
    let w = world(sim_config(100, start, t0() - Duration::hours(1)), start).await;
    let stuck = w.server.sim.config().generator.xmdm(5);
    w.server.sim.fail_project(&stuck, Some(Fault::BadGateway));
    // Many quick passes, but within an hour: not yet a lasting fault.
    for _ in 0..8 {
        w.clock.advance(Duration::minutes(5));
        w.pass().await;
    }
    assert!(
        w.store
            .failures(Some("held"), 100)
            .unwrap()
            .iter()
            .all(|f| f.key.as_deref() != Some(stuck.as_str()))
    );
    w.server.sim.fail_project(&stuck, None);
    w.clock.advance(Duration::minutes(5));
    let healed = w.pass().await;
    assert_eq!(healed.end, PassEnd::CaughtUp);
    assert!(w.missing(start).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_does_not_stall_the_others() {
    // The very first detail request hangs for longer than the client waits (5 s, then a
    // retry). Meanwhile the other pages keep fetching: the simulator counts what it answered
    // while the hang was holding.
    let start = t0() - Duration::days(3);
    let w = world(sim_config(1_500, start, t0() - Duration::hours(1)), start).await;
    w.server.sim.inject(shuiwu_approval::sim::Injection {
        fault: shuiwu_approval::sim::Fault::Hang { secs: 60 },
        target: shuiwu_approval::sim::Target::Detail,
        times: 1,
    });
    let report = w.pass().await;
    assert_eq!(report.end, PassEnd::CaughtUp, "{report:?}");
    assert!(w.missing(start).is_empty(), "the hung project was fetched again");
    let during = w.server.sim.stats().answered_during_hang;
    // Eight concurrent requests with one hung would leave seven: the pages behind it go on.
    assert!(
        during >= 300,
        "only {during} requests were answered while one hung"
    );
}

#[tokio::test]
async fn a_detail_over_the_size_limit_is_held_and_the_others_go_on() {
    let start = t0() - Duration::days(2);
    let w = world_tuned(sim_config(200, start, t0() - Duration::days(1)), start, |c| {
        c.max_document_bytes = 64 * 1024;
    })
    .await;
    let big = w.server.sim.visible_in(start, t0())[0].0.clone();
    w.clock.advance(Duration::minutes(1));
    w.server.sim.change(&big, |doc| {
        doc["JSDD"] = serde_json::Value::from("大".repeat(100_000));
    });
    w.clock.advance(Duration::minutes(10));
    let report = w.pass().await;
    assert_eq!(report.end, PassEnd::CaughtUp, "{report:?}");
    let held: Vec<_> = w
        .store
        .failures(Some("held"), 1_000)
        .unwrap()
        .into_iter()
        .filter(|f| f.key.as_deref() == Some(big.as_str()))
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0].reason.contains("larger than the 65536 bytes"),
        "{}",
        held[0].reason
    );
    assert_eq!(held[0].step, "detail");
    let missing = w.missing(start);
    assert!(missing.iter().all(|(x, _)| *x == big), "{missing:?}");
}

#[tokio::test]
async fn a_mapping_path_that_matches_nothing_is_reported_with_file_and_line() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(300, start, t0() - Duration::days(1)), start).await;
    let dir = tempfile::tempdir().unwrap();
    let embedded = include_str!("../mappings/approval/project.toml");
    std::fs::create_dir_all(dir.path().join("approval")).unwrap();
    std::fs::write(
        dir.path().join("approval/project.toml"),
        embedded.replace("path = \"/JZMJ\"", "path = \"/JZMJ_NOPE\""),
    )
    .unwrap();
    let mapping = gateway::mapping::MappingSet::load(Some(dir.path()))
        .unwrap()
        .get("approval.project")
        .unwrap();
    let syncer = gateway::sync::Syncer::new(
        w.client.clone(),
        w.store.clone(),
        mapping,
        std::sync::Arc::new(gateway::policy::Rules::load(None).unwrap()),
        gateway::config::SyncConfig {
            start: shuiwu_wire::format_beijing(start),
            ..Default::default()
        },
        std::sync::Arc::new(w.clock.clone()),
    );
    let report = syncer
        .pass(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let line = embedded.lines().position(|l| l == "path = \"/JZMJ\"").unwrap() + 1;
    assert_eq!(report.mapping_warnings.len(), 1, "{:?}", report.mapping_warnings);
    let warning = &report.mapping_warnings[0];
    assert!(
        warning.starts_with(&format!(
            "approval/project.toml:{line}: the path /JZMJ_NOPE of building.floor_area_m2"
        )),
        "{warning}"
    );
}

#[tokio::test]
async fn a_held_version_is_superseded_by_a_newer_one_even_when_that_is_held_too() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(50, start, t0() - Duration::days(1)), start).await;
    w.pass().await;
    let xmdm = w.server.sim.visible_in(start, t0())[0].0.clone();
    let mut held = Vec::new();
    for round in 0..2 {
        w.clock.advance(Duration::minutes(1));
        let bbh = w
            .server
            .sim
            .change(&xmdm, |doc| doc["JZMJ"] = serde_json::Value::from("-5"))
            .unwrap();
        held.push(bbh as i64);
        w.clock.advance(Duration::minutes(10));
        let r = w.pass().await;
        assert_eq!(r.outcomes.get("held"), Some(&1), "round {round}: {r:?}");
    }
    let failures = w.store.failures(None, 100).unwrap();
    let of = |v: i64| {
        failures
            .iter()
            .find(|f| f.key.as_deref() == Some(xmdm.as_str()) && f.version == Some(v))
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(of(held[0]), "superseded");
    assert_eq!(of(held[1]), "held");
    // What needs action: one row for the project, its newest failure.
    let (open, total) = w.store.open_failures_by_project(100).unwrap();
    let mine: Vec<_> = open
        .iter()
        .filter(|(f, _)| f.key.as_deref() == Some(xmdm.as_str()))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].0.version, mine[0].1), (Some(held[1]), 1));
    assert_eq!(total as usize, open.len());
}
