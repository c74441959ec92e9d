//! Joint water+power applications end to end: the approval simulator, the gateway, its outbox
//! and delivery worker, and the power simulator, over loopback, faults after a change
//! included.
#![cfg(feature = "simulators")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use common::*;
use gateway::joint::deliver::{Deliverer, DeliveryReport};
use gateway::joint::poll::Poller;
use gateway::stages::Action;
use gateway::store::{AsyncStore, NewAction};
use shuiwu_power::sim::{Fault, Injection, PowerSim, PowerSimConfig, PowerSimServer, Target, When};
use shuiwu_power::{Application, Origin, PowerClient, PowerStatus, WaterStatus};
use tokio_util::sync::CancellationToken;

async fn power(w: &World, cfg: PowerSimConfig) -> (PowerSimServer, Deliverer, Arc<PowerClient>) {
    power_polled(w, cfg, true).await
}

/// As [`power`]; without `poll`, the deliverer never reads the power side's listing, so
/// that what it knows of an application is what its own calls' answers told it.
async fn power_polled(
    w: &World,
    cfg: PowerSimConfig,
    poll: bool,
) -> (PowerSimServer, Deliverer, Arc<PowerClient>) {
    let server = PowerSim::new(cfg, Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client_cfg = server.client_config();
    client_cfg.rate_per_second = 0;
    client_cfg.timeout_secs = 2;
    client_cfg.min_delay_ms = 5;
    let client = Arc::new(PowerClient::new(client_cfg, Arc::new(w.clock.clone())).unwrap());
    w.store.set_joint(true);
    let poller = Poller::new(
        client.clone(),
        AsyncStore::new(w.store.clone()),
        w.syncer.rebuilder().clone(),
        Arc::new(w.clock.clone()),
        t0() - Duration::days(30),
        Duration::seconds(60),
    );
    let deliverer = Deliverer::new(
        client.clone(),
        AsyncStore::new(w.store.clone()),
        Arc::new(w.clock.clone()),
        4,
    );
    let deliverer = if poll {
        deliverer.with_poller(poller)
    } else {
        deliverer
    };
    (server, deliverer, client)
}

fn no_limit() -> PowerSimConfig {
    PowerSimConfig {
        rate_limit_per_sec: None,
        ..PowerSimConfig::contract_defaults(5)
    }
}

/// Delivery rounds until nothing is pending, moving the clock past every retry's wait.
async fn deliver_all(w: &World, d: &Deliverer) -> DeliveryReport {
    let mut total = DeliveryReport::default();
    for _ in 0..50 {
        let r = d.round(&CancellationToken::new()).await.unwrap();
        total.attempted += r.attempted;
        total.created += r.created;
        total.replayed += r.replayed;
        total.adopted += r.adopted;
        total.linked += r.linked;
        total.applied += r.applied;
        total.no_op += r.no_op;
        total.retried += r.retried;
        total.held += r.held;
        total.replaced_by_link += r.replaced_by_link;
        total.waiting += r.waiting;
        if let (Some(p), Some(t)) = (r.polled.clone(), total.polled.as_mut()) {
            t.pages += p.pages;
            t.new_versions += p.new_versions;
            t.repeats += p.repeats;
            t.links_planned += p.links_planned;
            t.held_duplicates += p.held_duplicates;
            t.awaiting_import += p.awaiting_import;
        } else if total.polled.is_none() {
            total.polled = r.polled;
        }
        match w.store.next_call_due().unwrap() {
            Some(t) => w.clock.set(t.max(w.clock.now_utc()) + Duration::seconds(1)),
            None => return total,
        }
    }
    panic!("calls still pending after 50 rounds: {total:?}");
}

/// The records that ask for power, by id, with their project codes.
fn asking_for_power(w: &World) -> BTreeMap<String, String> {
    w.store
        .records(None, 100_000)
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let v = w.store.record_versions(&r.id).unwrap().pop()?;
            (!v.content["power"].is_null() && r.state == "active").then(|| {
                (
                    r.id.clone(),
                    v.content["project"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
        })
        .collect()
}

fn by_external(apps: &[Application]) -> BTreeMap<String, Vec<&Application>> {
    let mut out: BTreeMap<String, Vec<&Application>> = BTreeMap::new();
    for a in apps {
        if let Some(e) = &a.external_id {
            out.entry(e.clone()).or_default().push(a);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_per_project_that_asks_for_power_despite_lost_answers() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(80, start, t0() - Duration::hours(1)), start).await;
    // A fifth of the creates are applied on the power side and their answers lost.
    let (server, d, _) = power(
        &w,
        PowerSimConfig {
            random_after_fault_per_mille: 200,
            random_fault_per_mille: 50,
            hang_secs: 3,
            ..no_limit()
        },
    )
    .await;
    w.pass().await;
    let wanted = asking_for_power(&w);
    assert!(
        wanted.len() > 10,
        "the generator asks for power in about 40 % of projects"
    );
    // Heavier still: tokens revoked, a 429 with an HTTP-date, a hang past the client's timeout;
    // and, besides the random ones, answers lost after the change for certain: a reset, a 504
    // and a hang.
    for (fault, when, times) in [
        (Fault::TokenRevoked, When::Before, 3),
        (
            Fault::RateLimited {
                secs: 1,
                as_date: true,
            },
            When::Before,
            1,
        ),
        (Fault::Hang { secs: 3 }, When::Before, 1),
        (Fault::Reset, When::After, 1),
        (Fault::GatewayTimeout, When::After, 1),
        (Fault::Hang { secs: 3 }, When::After, 1),
    ] {
        server.sim.inject(Injection {
            fault,
            target: Target::Create,
            when,
            times,
        });
    }
    let report = deliver_all(&w, &d).await;
    let apps = server.sim.applications();
    let joined = by_external(&apps);
    for id in wanted.keys() {
        assert_eq!(
            joined.get(id).map(Vec::len),
            Some(1),
            "{id}: exactly one application"
        );
    }
    assert_eq!(
        joined.len(),
        wanted.len(),
        "no application for a record that does not ask"
    );
    let stats = server.sim.stats();
    assert_eq!(stats.key_reused, 0, "a key reused with another body");
    assert_eq!(stats.created as usize, wanted.len());
    assert!(
        stats.faults_after >= 3,
        "the faults after a change were exercised"
    );
    assert!(
        stats.tokens_issued >= 4,
        "every revocation was met with a new token"
    );
    assert_eq!(
        report.created + report.replayed + report.adopted,
        wanted.len() as u64,
        "{report:?}"
    );
    // Every create is done, with the answer it was settled by kept.
    let (calls, total) = w.store.outbox(None, 10_000).unwrap();
    assert_eq!(total as usize, wanted.len());
    assert!(
        calls
            .iter()
            .all(|c| c.state == "done" && c.answer_sha256.is_some()),
        "{calls:?}"
    );
    // A second pass and round plan and send nothing new.
    w.clock.advance(Duration::minutes(10));
    w.pass().await;
    let again = deliver_all(&w, &d).await;
    assert_eq!(again.attempted, 0, "{again:?}");
    assert_eq!(server.sim.applications().len(), apps.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_events_are_reported_as_water_statuses_once() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(40, start, t0() - Duration::hours(1)), start).await;
    // No poll: the power side's own change is met as a version conflict, not read ahead.
    let (server, d, _) = power_polled(&w, no_limit(), false).await;
    w.pass().await;
    deliver_all(&w, &d).await;
    let id = asking_for_power(&w).into_keys().next().unwrap();
    let act = |action: Action| {
        w.store
            .record_action(
                &id,
                NewAction {
                    action: &action,
                    at: w.clock.now_utc(),
                    by: "王工",
                    override_reason: None,
                },
                w.clock.now_utc(),
                w.syncer.rebuilder(),
                |_| Ok(()),
            )
            .unwrap()
    };
    act(Action::Accepted);
    // The report's answer is lost after the power side applied it.
    server.sim.inject(Injection {
        fault: Fault::Reset,
        target: Target::WaterStatus,
        when: When::After,
        times: 1,
    });
    let r = deliver_all(&w, &d).await;
    assert_eq!(r.applied + r.no_op, 1, "{r:?}");
    // The power side moves on meanwhile: the next report meets a newer version (412) and
    // goes through after re-reading.
    let app = w.store.joint_application_of(&id).unwrap().unwrap();
    server.sim.set_status(&app.application_id, PowerStatus::Accepted);
    act(Action::SurveyDone {
        external_pipe_m: rust_decimal::Decimal::new(150, 1),
    });
    act(Action::Connected);
    deliver_all(&w, &d).await;
    let now = server.sim.application(&app.application_id).unwrap();
    assert_eq!(now.water_status, Some(WaterStatus::Connected));
    let stats = server.sim.stats();
    assert_eq!(stats.water_status_applied, 3, "each status applied once");
    assert!(
        stats.version_mismatch >= 1,
        "the re-read after a conflict was exercised"
    );
    let stored = w.store.joint_application_of(&id).unwrap().unwrap();
    assert_eq!(
        (stored.version as u64, stored.water_status()),
        (now.version, Some(WaterStatus::Connected))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_origin_application_naming_the_project_is_linked_not_duplicated() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(40, start, t0() - Duration::hours(1)), start).await;
    let (server, d, _) = power(&w, no_limit()).await;
    w.pass().await;
    let wanted = asking_for_power(&w);
    let (record, project) = wanted.iter().next().map(|(a, b)| (a.clone(), b.clone())).unwrap();
    // Two power-origin applications name that project; the earlier submitted is linked.
    let template = |submitted_hours_ago: i64| Application {
        application_id: String::new(),
        external_id: None,
        origin: Origin::Power,
        status: PowerStatus::Submitted,
        water_status: None,
        version: 1,
        project_code: Some(project.clone()),
        project_name: None,
        applicant: shuiwu_power::Applicant {
            kind: shuiwu_power::ApplicantKind::Organisation,
            name: "某公司".into(),
            credit_code: None,
            contact_name: None,
            contact_phone: None,
        },
        site: shuiwu_power::Site {
            region_code: "530102".into(),
            address: None,
        },
        power: None,
        water: None,
        submitted_at: w.clock.now_utc() - Duration::hours(submitted_hours_ago),
        updated_at: w.clock.now_utc(),
    };
    let later = server.sim.insert(template(1));
    let earlier = server.sim.insert(template(5));
    // The round's poll finds both before the record's create goes out.
    let report = deliver_all(&w, &d).await;
    assert_eq!(report.replaced_by_link, 1, "{report:?}");
    assert_eq!(report.linked, 1, "{report:?}");
    let linked = server.sim.application(&earlier).unwrap();
    assert_eq!(linked.external_id.as_deref(), Some(record.as_str()));
    assert_eq!(
        server.sim.application(&later).unwrap().external_id,
        None,
        "never linked twice"
    );
    let apps = server.sim.applications();
    assert!(
        !apps
            .iter()
            .any(|a| a.origin == Origin::Water && a.project_code.as_deref() == Some(&project)),
        "no second application for the project"
    );
    assert_eq!(by_external(&apps).len(), wanted.len());
    // The later one is held for an operator as a probable duplicate once the link is made:
    // never silently dropped. A third one naming the project meets the same fate.
    let third = server.sim.insert(template(0));
    w.clock.advance(Duration::seconds(10));
    let report = deliver_all(&w, &d).await;
    assert_eq!(
        report.polled.as_ref().map(|p| p.held_duplicates),
        Some(1),
        "{report:?}"
    );
    let held: Vec<_> = w
        .store
        .failures(Some("held"), 100)
        .unwrap()
        .into_iter()
        .filter(|f| f.source == "power")
        .collect();
    let keys: Vec<_> = held.iter().filter_map(|f| f.key.clone()).collect();
    assert!(keys.contains(&later) && keys.contains(&third), "{held:?}");
    assert_eq!(server.sim.application(&third).unwrap().external_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_is_landed_once_per_version_across_pages_and_polls() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(5, start, t0() - Duration::hours(1)), start).await;
    let (server, d, _) = power(&w, no_limit()).await;
    // 250 changes in one millisecond: three pages, and a batch straddling each boundary. The
    // applicants are people asking for DN25: not households, so their records wait for
    // platform data and nothing is sent back that would change the applications.
    let household = |i: usize| Application {
        applicant: shuiwu_power::Applicant {
            name: format!("住户{i}"),
            ..person(i)
        },
        water: Some(shuiwu_power::WaterNeeds {
            diameter_dn: Some(25),
            use_: Some("生活".into()),
            daily_m3: Some(1.0),
        }),
        ..power_origin(&w, None)
    };
    let ids = server.sim.insert_batch((0..250).map(household).collect());
    let first = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!(
        (first.pages, first.new_versions, first.repeats),
        (3, 250, 0),
        "{first:?}"
    );
    assert!(first.complete);
    assert_eq!(
        (first.imported, first.awaiting_import, first.held),
        (250, 0, 0),
        "{first:?}"
    );
    // Again: the overlap reads the batch a second time; nothing is landed twice.
    w.clock.advance(Duration::seconds(1));
    let again = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!((again.new_versions, again.repeats), (0, 250), "{again:?}");
    // Changes on the power side come again with their new versions, and only they.
    for id in ids.iter().take(7) {
        server.sim.set_status(id, PowerStatus::Accepted);
    }
    w.clock.advance(Duration::minutes(5));
    let changed = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!((changed.new_versions, changed.imported), (7, 7), "{changed:?}");
    // One water record per application, each at the version its latest change made.
    let records = w.store.records_by_source("power").unwrap();
    assert_eq!(records.len(), 250);
    let stored = w.store.joint_applications(1000).unwrap();
    assert_eq!(stored.len(), 250);
    assert_eq!(
        stored
            .iter()
            .filter(|a| a.version == 2 && a.status == "ACCEPTED")
            .count(),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_wait_for_a_poll_of_the_power_side() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(30, start, t0() - Duration::hours(1)), start).await;
    let (server, d, _) = power(&w, no_limit()).await;
    // The listing cannot be read: no create goes out, nothing is lost.
    server.sim.inject(Injection {
        fault: Fault::Unavailable,
        target: Target::List,
        when: When::Before,
        times: 100,
    });
    w.pass().await;
    let r = d.round(&CancellationToken::new()).await.unwrap();
    assert!(r.waiting > 0 && r.created == 0, "{r:?}");
    assert_eq!(server.sim.stats().created, 0);
    server.sim.clear_faults();
    w.clock.advance(Duration::seconds(10));
    let r = deliver_all(&w, &d).await;
    assert_eq!(r.created as usize, asking_for_power(&w).len(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_bring_the_changes_sooner_and_the_poll_finds_nothing_new() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(5, start, t0() - Duration::hours(1)), start).await;
    let (server, d, _) = power(&w, no_limit()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/power", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let state = gateway::http::HttpState {
        store: AsyncStore::new(w.store.clone()),
        clock: Arc::new(w.clock.clone()),
        power_webhook_secret: Some(shuiwu_wire::Secret::new("whsec-test")),
        rebuilder: w.syncer.rebuilder().clone(),
        readiness: None,
        metrics: None,
        admin_tokens: None,
        console: None,
    };
    tokio::spawn(gateway::http::serve(listener, state, token.clone()));
    server.sim.push_to(url, "whsec-test".into());
    // Twelve households apply on the power side.
    let ids = server.sim.insert_batch(
        (0..12)
            .map(|i| Application {
                applicant: person(i),
                ..power_origin(&w, None)
            })
            .collect(),
    );
    for id in ids.iter().take(4) {
        server.sim.set_status(id, PowerStatus::Accepted);
    }
    // Sixteen events, pushed in order and each kept before it is acknowledged (waited for up to
    // 30 s: each is a durable commit, and a loaded machine fsyncs slowly).
    let store = AsyncStore::new(w.store.clone());
    for _ in 0..3000 {
        if server.sim.stats().webhooks_delivered == 16 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.sim.stats().webhooks_delivered, 16);
    let known = store.call(|s| s.joint_applications(100)).await.unwrap();
    let truth: BTreeMap<String, u64> = server
        .sim
        .applications()
        .into_iter()
        .map(|a| (a.application_id, a.version))
        .collect();
    let seen: BTreeMap<String, u64> = known
        .iter()
        .map(|a| (a.application_id.clone(), a.version as u64))
        .collect();
    assert_eq!(seen, truth, "the water side knows every change before any poll");
    // Each became a water record whose fields trace into the event's bytes.
    let records = store.call(|s| s.records_by_source("power")).await.unwrap();
    assert_eq!(records.len(), 12);
    let versions = w.store.record_versions(&records[0]).unwrap();
    let (lineage, _) = gateway::mapping::lineage::from_json(&versions.last().unwrap().lineage).unwrap();
    assert_eq!(
        lineage["builder.credit_code"].path,
        "/application/applicant/creditCode"
    );
    // The poll, the reference, finds the same and lands nothing new.
    let polled = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!((polled.new_versions, polled.repeats), (0, 12), "{polled:?}");
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_events_recorded_before_the_power_side_was_configured_are_reported_too() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(40, start, t0() - Duration::hours(1)), start).await;
    // No [power] yet: the records are made, stage events recorded, nothing planned.
    w.pass().await;
    let id = asking_for_power(&w).into_keys().next().unwrap();
    for action in [
        Action::Accepted,
        Action::SurveyDone {
            external_pipe_m: rust_decimal::Decimal::new(80, 1),
        },
        Action::Connected,
    ] {
        w.store
            .record_action(
                &id,
                NewAction {
                    action: &action,
                    at: w.clock.now_utc(),
                    by: "王工",
                    override_reason: None,
                },
                w.clock.now_utc(),
                w.syncer.rebuilder(),
                |_| Ok(()),
            )
            .unwrap();
    }
    assert_eq!(
        w.store.outbox(None, 10).unwrap().1,
        0,
        "nothing planned without [power]"
    );
    // Configured now: the create, then the events in their order.
    let (server, d, _) = power(&w, no_limit()).await;
    w.store.plan_missing_joint_calls(w.clock.now_utc()).unwrap();
    deliver_all(&w, &d).await;
    let app = w.store.joint_application_of(&id).unwrap().unwrap();
    let there = server.sim.application(&app.application_id).unwrap();
    assert_eq!(there.water_status, Some(WaterStatus::Connected));
    assert_eq!(
        server.sim.stats().water_status_applied,
        3,
        "accepted, surveyed, connected, in order"
    );
}

/// A valid resident identity number (GB 11643) for test person `i`, born 1990 in 五华区.
fn id_number(i: usize) -> String {
    let first17 = format!("53010219900101{:03}", i % 1000);
    let check = shuiwu_wire::ids::id_card_check(&first17).unwrap();
    format!("{first17}{check}")
}

fn person(i: usize) -> shuiwu_power::Applicant {
    shuiwu_power::Applicant {
        kind: shuiwu_power::ApplicantKind::Person,
        name: "李四".into(),
        credit_code: Some(id_number(i)),
        contact_name: Some("李四".into()),
        contact_phone: Some("13800000000".into()),
    }
}

/// A power-origin application as the power side's form makes it, submitted now.
fn power_origin(w: &World, project: Option<&str>) -> Application {
    Application {
        application_id: String::new(),
        external_id: None,
        origin: Origin::Power,
        status: PowerStatus::Submitted,
        water_status: None,
        version: 1,
        project_code: project.map(str::to_string),
        project_name: None,
        applicant: person(0),
        site: shuiwu_power::Site {
            region_code: "530102".into(),
            address: Some("昆明市五华区某街道1号".into()),
        },
        power: Some(shuiwu_power::PowerNeeds {
            capacity_kva: Some(8.0),
        }),
        water: Some(shuiwu_power::WaterNeeds {
            diameter_dn: Some(20),
            use_: Some("生活".into()),
            daily_m3: Some(0.5),
        }),
        submitted_at: w.clock.now_utc(),
        updated_at: w.clock.now_utc(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_origin_applications_become_water_records() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(20, start, t0() - Duration::hours(1)), start).await;
    w.pass().await;
    let (server, d, _) = power(&w, no_limit()).await;
    let known = w
        .store
        .records_by_source("approval")
        .unwrap()
        .into_iter()
        .next()
        .expect("a project record");
    let known_code = known.trim_start_matches("PE-").to_string();
    let company = |code: Option<&str>| Application {
        applicant: shuiwu_power::Applicant {
            kind: shuiwu_power::ApplicantKind::Organisation,
            name: "昆明某餐饮有限公司".into(),
            credit_code: Some({
                let first17 = "91530102MA6K00001";
                format!(
                    "{first17}{}",
                    shuiwu_wire::ids::credit_code_check(first17).unwrap()
                )
            }),
            contact_name: Some("王五".into()),
            contact_phone: Some("13900000000".into()),
        },
        water: Some(shuiwu_power::WaterNeeds {
            diameter_dn: Some(50),
            use_: Some("生产".into()),
            daily_m3: Some(20.0),
        }),
        ..power_origin(&w, code)
    };
    let household = server.sim.insert(power_origin(&w, None));
    // A household naming a project code the approval platform does not know is still one.
    let household_unknown_code = server.sim.insert(Application {
        applicant: person(1),
        ..power_origin(&w, Some("2026-530102-47-01-999999"))
    });
    // Its project is registered on the approval platform only later.
    let later_code = "2022-530112-47-01-587143";
    let waiting = server.sim.insert(company(Some(later_code)));
    let joins = server.sim.insert(company(Some(&known_code)));
    let outside = server.sim.insert(Application {
        site: shuiwu_power::Site {
            region_code: "530302".into(),
            address: Some("曲靖市麒麟区".into()),
        },
        applicant: person(2),
        ..power_origin(&w, None)
    });
    let bad_id = server.sim.insert(Application {
        applicant: shuiwu_power::Applicant {
            credit_code: Some("530102199001010000".into()),
            ..person(3)
        },
        ..power_origin(&w, None)
    });
    w.clock.advance(Duration::seconds(5));
    let r = deliver_all(&w, &d).await;
    let polled = r.polled.clone().unwrap();
    let held = w.store.failures(Some("held"), 100).unwrap();
    assert_eq!(
        (polled.imported, polled.skipped, polled.held, polled.links_planned),
        (3, 1, 1, 1),
        "{r:?} {held:?}"
    );
    let content = |id: &str| -> serde_json::Value {
        let v = w.store.record_versions(id).unwrap();
        v.last().expect("a version").content.clone()
    };
    // The household: small residential, table A, its identity and premises as materials, and
    // linked to its own application on the power side.
    let h = content(&format!("PW-{household}"));
    assert_eq!(h["decisions"]["category"]["id"], "small_residential", "{h}");
    assert_eq!(h["decisions"]["table"], "A", "{h}");
    let materials: Vec<&str> = h["decisions"]["materials_required"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(materials, ["identity_card", "premises_right"], "{h}");
    assert_eq!(h["application"]["applicant_kind"]["code"], "PERSON");
    assert_eq!(h["source"]["platform"], "power");
    assert_eq!(
        server.sim.application(&household).unwrap().external_id.as_deref(),
        Some(format!("PW-{household}").as_str())
    );
    let h2 = content(&format!("PW-{household_unknown_code}"));
    assert_eq!(h2["decisions"]["category"]["id"], "small_residential");
    // The company without platform data: no category, table A, not linked yet.
    let c = content(&format!("PW-{waiting}"));
    assert_eq!(c["decisions"]["category"]["state"], "none", "{c}");
    assert_eq!(c["decisions"]["table"], "A", "{c}");
    assert_eq!(server.sim.application(&waiting).unwrap().external_id, None);
    // The company naming a known project joins that project's record.
    assert_eq!(
        server.sim.application(&joins).unwrap().external_id.as_deref(),
        Some(known.as_str())
    );
    assert!(
        w.store
            .record_versions(&format!("PW-{joins}"))
            .unwrap()
            .is_empty()
    );
    // Outside Kunming: skipped with the reason; an identity number that is not one: held.
    assert!(
        w.store
            .record_versions(&format!("PW-{outside}"))
            .unwrap()
            .is_empty()
    );
    let held = w.store.failures(Some("held"), 100).unwrap();
    let bad = held
        .iter()
        .find(|f| f.key.as_deref() == Some(bad_id.as_str()))
        .expect("the bad identity number is held");
    assert_eq!(bad.field.as_deref(), Some("builder.credit_code"), "{bad:?}");
    assert!(bad.document_sha256.is_some());
    // Every field keeps its lineage to the power side's bytes.
    let versions = w.store.record_versions(&format!("PW-{household}")).unwrap();
    let (lineage, _) = gateway::mapping::lineage::from_json(&versions[0].lineage).unwrap();
    let l = &lineage["builder.credit_code"];
    let (bytes, _) = w.store.document(&l.document).unwrap().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        doc.pointer(&l.path).and_then(|v| v.as_str()),
        Some(id_number(0).as_str())
    );
    assert!(l.path.starts_with("/items/"), "{}", l.path);

    // The power side withdraws the household: the water record is closed as withdrawn by the
    // applicant, and the water side reports it.
    server.sim.set_status(&household, PowerStatus::Withdrawn);
    w.clock.advance(Duration::minutes(2));
    deliver_all(&w, &d).await;
    let h = content(&format!("PW-{household}"));
    assert_eq!(h["progress"]["state"], "withdrawn", "{h}");
    assert_eq!(
        server.sim.application(&household).unwrap().water_status,
        Some(WaterStatus::Withdrawn)
    );
    let actions = w.store.actions(&format!("PW-{household}")).unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].by, "power-utility");

    // Platform data found for the waiting company's project: the project's record links the
    // application and the waiting record is superseded by it.
    let mut doc: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/approval/contract-example.json")).unwrap();
    doc["GXSJ"] = shuiwu_wire::format_beijing(w.clock.now_utc() - Duration::minutes(1)).into();
    w.server.sim.insert(doc).unwrap();
    w.clock.advance(Duration::minutes(10));
    w.pass().await;
    deliver_all(&w, &d).await;
    let project = format!("PE-{later_code}");
    assert_eq!(
        server.sim.application(&waiting).unwrap().external_id.as_deref(),
        Some(project.as_str())
    );
    let c = content(&format!("PW-{waiting}"));
    assert_eq!(c["progress"]["state"], "superseded", "{c}");
    assert_eq!(content(&project)["decisions"]["table"], "B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_listing_item_is_held_and_the_others_are_read() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(5, start, t0() - Duration::hours(1)), start).await;
    let (server, d, _) = power(&w, no_limit()).await;
    let ids: Vec<String> = (0..5)
        .map(|i| {
            server.sim.insert(Application {
                applicant: person(i),
                ..power_origin(&w, None)
            })
        })
        .collect();
    server.sim.malform_in_listing(&ids[2]);
    w.clock.advance(Duration::seconds(5));
    let polled = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!((polled.imported, polled.held), (4, 1), "{polled:?}");
    assert!(polled.complete);
    let held = w.store.failures(Some("held"), 100).unwrap();
    let bad = held
        .iter()
        .find(|f| f.key.as_deref() == Some(ids[2].as_str()))
        .expect("the unreadable item is held");
    assert_eq!(bad.step, "decode");
    assert!(bad.reason.contains("applicant"), "{}", bad.reason);
    let (bytes, _) = w
        .store
        .document(bad.document_sha256.as_ref().unwrap())
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains(&ids[2]));
    // The listing moves on: the next poll (reading the households' links back as new
    // versions) holds nothing twice.
    w.clock.advance(Duration::seconds(5));
    let again = d.round(&CancellationToken::new()).await.unwrap().polled.unwrap();
    assert_eq!((again.new_versions, again.held), (4, 0), "{again:?}");
    assert_eq!(w.store.failures(Some("held"), 100).unwrap().len(), held.len());
}
