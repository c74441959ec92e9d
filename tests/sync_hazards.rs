//! The three listing hazards of the approval contract — drifting pages, second-precision
//! `GXSJ`, visibility lag — against the real client and store, over HTTP to the simulator.

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
    w.pass().await;
    assert!(w.missing(start).is_empty());
}
