//! Zero materials end to end through both simulators: licences (GBK or UTF-8) and attachments
//! (checked against their hash), the checklist, the one-time notice, re-evaluation on change.
#![cfg(feature = "simulators")]

mod common;

use std::sync::Arc;

use chrono::Duration;
use common::*;
use gateway::config::SyncConfig;
use gateway::mapping::MappingSet;
use gateway::sync::Syncer;
use shuiwu_approval::sim::fixtures_at;
use shuiwu_licences::sim::{LicenceSim, LicenceSimConfig};
use shuiwu_licences::{LicenceClient, LicenceConfig};
use shuiwu_wire::Secret;
use tokio_util::sync::CancellationToken;

/// A syncer over the world's approval simulator that also checks materials with `licences`.
fn syncer_with_licences(w: &World, start: chrono::DateTime<chrono::Utc>, licences: LicenceConfig) -> Syncer {
    syncer_tuned(w, start, licences, |_| {})
}

/// As [`syncer_with_licences`], with `tune` adjusting the sync settings.
fn syncer_tuned(
    w: &World,
    start: chrono::DateTime<chrono::Utc>,
    licences: LicenceConfig,
    tune: impl FnOnce(&mut SyncConfig),
) -> Syncer {
    let mappings = MappingSet::load(None).unwrap();
    let mut cfg = SyncConfig {
        start: shuiwu_wire::format_beijing(start),
        concurrency: 4,
        ..SyncConfig::default()
    };
    tune(&mut cfg);
    let client = LicenceClient::new(licences, Arc::new(w.clock.clone())).unwrap();
    Syncer::new(
        w.client.clone(),
        w.store.clone(),
        mappings.get("approval.project").unwrap(),
        Arc::new(gateway::policy::Rules::load(None).unwrap()),
        cfg,
        Arc::new(w.clock.clone()),
    )
    .with_licences(Arc::new(client), mappings.get("licences.query").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checklists_notices_and_hash_mismatches() {
    let start = t0() - Duration::days(2);
    let mut sim = sim_config(60, start, t0() - Duration::hours(1));
    sim.fixtures = fixtures_at(start + Duration::hours(1)).unwrap();
    let w = world(sim, start).await;
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let syncer = syncer_with_licences(&w, start, licence_config(&licence_server));

    // Every attachment transfer is damaged during this pass.
    w.server.sim.corrupt_next_attachments(10_000);
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert!(report.materials_checked > 40, "{report:?}");
    assert!(report.notices_issued > 0);
    let failures = w.store.failures(None, 1000).unwrap();
    assert!(
        failures.iter().any(|f| f.step == "attachment"),
        "hash mismatches are held"
    );
    assert!(
        failures
            .iter()
            .filter(|f| f.step == "attachment")
            .all(|f| f.version.is_some()),
        "an attachment failure names the project version it belongs to"
    );
    let (_, _, example) = w
        .store
        .latest_materials("PE-2022-530112-47-01-587143")
        .unwrap()
        .unwrap();
    let site = example.items.iter().find(|i| i.item == "site_plan").unwrap();
    assert_eq!(site.reason.as_deref(), Some("hash_mismatch"));
    // The licence items are satisfied from the licence library, with the document's hash.
    let rtb = example.items.iter().find(|i| i.item == "right_to_build").unwrap();
    let by = rtb.by.as_ref().unwrap();
    assert_eq!(by.reference, "530112202400123");
    assert!(
        w.store.document(&by.document_sha256).unwrap().is_some(),
        "the licence answer is kept"
    );
    assert!(w.store.notice("PE-2022-530112-47-01-587143").unwrap().is_some());
    // The licence facts keep their lineage down to the raw (GBK or UTF-8) bytes.
    let lineage = w
        .store
        .latest_materials_lineage("PE-2022-530112-47-01-587143")
        .unwrap()
        .unwrap();
    let (fields, _) = gateway::mapping::lineage::from_json(&lineage).unwrap();
    let number = fields
        .values()
        .find(|l| l.raw.as_deref() == Some("530112202400123"))
        .unwrap();
    assert_eq!(*number.document, by.document_sha256);
    assert!(number.path.ends_with("/lic:ZZBH"), "{}", number.path);
    assert!(licence_server.sim.stats().queries > 0);

    // The source changes (a new project version): the record is checked again, transfers are
    // whole now, and the contract example reaches zero materials. The notice stays the one.
    w.server.sim.corrupt_next_attachments(0);
    w.server.sim.change("2022-530112-47-01-587143", |doc| {
        doc["XMMC"] = serde_json::Value::from("昆明某科技有限公司标准厂房建设项目（二期）")
    });
    w.clock.advance(Duration::minutes(10));
    let again = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert!(again.materials_checked >= 1, "{again:?}");
    let (version, _, example) = w
        .store
        .latest_materials("PE-2022-530112-47-01-587143")
        .unwrap()
        .unwrap();
    assert_eq!(version, 2);
    assert!(example.zero_materials, "{example:?}");
    assert_eq!(example.promised, Some(true), "low-risk promises zero materials");
    // One notice, from the first check: never re-issued item by item.
    let (issued_at, _) = w.store.notice("PE-2022-530112-47-01-587143").unwrap().unwrap();
    assert!(!issued_at.is_empty());

    // A day later the records that missed items are checked again (licences may have been
    // issued since); those that reached zero materials are not.
    let (_, checked_at, _) = w
        .store
        .latest_materials("PE-2022-530112-47-01-587143")
        .unwrap()
        .unwrap();
    w.clock.advance(Duration::hours(25));
    let third = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert!(third.materials_checked > 0, "{third:?}");
    assert!(third.materials_checked < report.materials_checked, "{third:?}");
    let (_, again_at, _) = w
        .store
        .latest_materials("PE-2022-530112-47-01-587143")
        .unwrap()
        .unwrap();
    assert_eq!(
        checked_at, again_at,
        "a record at zero materials is not checked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_library_that_does_not_answer_pauses_the_check() {
    let start = t0() - Duration::days(1);
    let w = world(sim_config(30, start, t0() - Duration::hours(1)), start).await;
    let syncer = syncer_tuned(
        &w,
        start,
        LicenceConfig {
            // Nothing listens here.
            base_url: "http://127.0.0.1:9".into(),
            app_id: "x".into(),
            app_secret: Secret::new("y"),
            rate_per_second: 0,
            timeout_secs: 2,
            max_retries: 0,
            min_delay_ms: 1,
        },
        |c| c.outage_wait_secs = 2,
    );
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(
        report.end,
        gateway::sync::PassEnd::CaughtUp,
        "the records themselves are synced"
    );
    assert_eq!(report.materials_checked, 0);
    // The report says the check stopped early, why, and what is left.
    let why = report.materials_stopped.as_deref().unwrap_or_default();
    assert!(why.contains("did not answer for 2 s"), "{report:?}");
    assert!(report.materials_unchecked > 20, "{report:?}");
    assert!(w.store.record_count().unwrap() > 20);
    // Nothing was marked checked: the next pass tries again.
    assert!(!w.store.records_needing_materials(100, t0()).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_licence_answer_is_held_and_the_others_go_on() {
    let start = t0() - Duration::days(1);
    let w = world(sim_config(25, start, t0() - Duration::hours(1)), start).await;
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let syncer = syncer_with_licences(&w, start, licence_config(&licence_server));
    use shuiwu_licences::sim::LicenceFault;
    // GetToken is the first request the syncer's client sends; the next one gets a DTD: a
    // permanent answer for that holder, held once, never asked again in the pass.
    licence_server.sim.inject_after(1, [LicenceFault::Dtd]);
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    let failures = w.store.failures(None, 100).unwrap();
    let held: Vec<_> = failures.iter().filter(|f| f.step == "licences").collect();
    assert_eq!(held.len(), 1, "{failures:?}");
    assert!(held[0].reason.contains("DTD"), "{}", held[0].reason);
    assert!(report.materials_checked >= 15, "{report:?}");
}

fn licence_config(server: &shuiwu_licences::sim::LicenceSimServer) -> LicenceConfig {
    let lcfg = server.sim.config();
    LicenceConfig {
        base_url: server.base_url(),
        app_id: lcfg.app_id.clone(),
        app_secret: Secret::new(lcfg.app_secret.clone()),
        rate_per_second: 0,
        timeout_secs: 10,
        max_retries: 2,
        min_delay_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_checked_over_several_passes_and_attachments_are_fetched_once() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(60, start, t0() - Duration::hours(1)), start).await;
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let syncer = syncer_tuned(&w, start, licence_config(&licence_server), |c| {
        c.materials_per_pass = 15
    });
    let first = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(first.materials_checked, 15, "{first:?}");
    assert!(
        first
            .materials_stopped
            .as_deref()
            .unwrap()
            .contains("materials_per_pass")
    );
    let waiting = first.materials_unchecked;
    assert!(waiting > 15, "{first:?}");
    // The next passes go on with the records still waiting, until none is left.
    let mut passes = 1;
    let mut left = waiting;
    while left > 0 {
        w.clock.advance(Duration::minutes(1));
        let r = syncer.pass(&CancellationToken::new()).await.unwrap();
        assert!(r.materials_checked > 0 && r.materials_unchecked < left, "{r:?}");
        left = r.materials_unchecked;
        passes += 1;
        assert!(passes < 10);
    }
    // A day later the records that missed items are checked again; attachments already stored
    // (same SHA-256) are not downloaded again.
    w.clock.advance(Duration::hours(25));
    let before = w.server.sim.stats().attachments;
    let recheck = syncer_tuned(&w, start, licence_config(&licence_server), |_| {})
        .pass(&CancellationToken::new())
        .await
        .unwrap();
    assert!(recheck.materials_checked > 0, "{recheck:?}");
    assert_eq!(
        w.server.sim.stats().attachments,
        before,
        "stored attachments are not fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_and_revoked_tokens_are_waited_out_in_the_same_pass() {
    let start = t0() - Duration::days(1);
    let w = world(sim_config(30, start, t0() - Duration::hours(1)), start).await;
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    use shuiwu_licences::sim::LicenceFault;
    // After the token, seven maintenance pages in a row (more than one call's retries), a
    // revocation, and more maintenance.
    let mut faults = vec![LicenceFault::MaintenancePage; 7];
    faults.push(LicenceFault::RevokeTokens);
    faults.extend([LicenceFault::MaintenancePage; 3]);
    licence_server.sim.inject_after(1, faults);
    let syncer = syncer_with_licences(&w, start, licence_config(&licence_server));
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.materials_stopped, None, "{report:?}");
    assert_eq!(report.materials_unchecked, 0, "{report:?}");
    assert!(report.materials_checked > 20, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_checked_at_once_share_one_licence_query_per_holder() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(40, start, t0() - Duration::hours(1)), start).await;
    // Every project has the same builder: the records are checked several at a time, and
    // the holder's licences must still be read once.
    for (code, _) in w.server.sim.visible_in(start, t0()) {
        w.server.sim.change(&code, |doc| {
            doc["JSDWDM"] = serde_json::Value::from("91350100M000100Y43");
        });
    }
    w.clock.advance(Duration::minutes(10));
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let syncer = syncer_with_licences(&w, start, licence_config(&licence_server));
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert!(report.materials_checked >= 20, "{report:?}");
    assert_eq!(report.materials_unchecked, 0, "{report:?}");
    assert_eq!(
        licence_server.sim.stats().queries,
        1,
        "one query for the one holder, however many of its records were in flight"
    );
    // Every record names the one stored answer.
    let ids: Vec<String> = w
        .store
        .records(Some("active"), 100)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut answers = std::collections::BTreeSet::new();
    for id in &ids {
        if let Some((_, _, checklist)) = w.store.latest_materials(id).unwrap() {
            for item in checklist.items.iter().filter_map(|i| i.by.as_ref()) {
                if item.source == "licences" {
                    assert!(w.store.document(&item.document_sha256).unwrap().is_some());
                    answers.insert(item.document_sha256.clone());
                }
            }
        }
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
}

/// A household that applied on the power side: its identity card is found, its title to the
/// premises is not, and the one notice names the missing title without showing the applicant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_households_notice_names_the_missing_title_and_masks_the_applicant() {
    let start = t0() - Duration::days(2);
    let w = world(sim_config(3, start, t0() - Duration::hours(1)), start).await;
    let first17 = "53010219900101007";
    let id_number = format!("{first17}{}", shuiwu_wire::ids::id_card_check(first17).unwrap());
    let mut licences = LicenceSimConfig::default();
    licences.fixtures.insert(
        id_number.clone(),
        vec![shuiwu_licences::Licence {
            number: id_number.clone(),
            name: Some("居民身份证".into()),
            type_code: "SFZ".into(),
            holder_name: Some("欧阳娜娜".into()),
            holder_code: Some(id_number.clone()),
            issuer: Some("昆明市公安局五华分局".into()),
            issued_on: Some("2020-01-01".into()),
            valid_until: Some("2040-01-01".into()),
            status: "1".into(),
            project_code: None,
            file_sha256: None,
        }],
    );
    let licence_server = LicenceSim::new(licences, Arc::new(w.clock.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mappings = MappingSet::load(None).unwrap();
    let syncer = syncer_with_licences(&w, start, licence_config(&licence_server))
        .with_power_mapping(mappings.get("power.application").unwrap());
    let now = w.clock.now_utc();
    let app = shuiwu_power::Application {
        application_id: "KMGD2026112000001".into(),
        external_id: None,
        origin: shuiwu_power::Origin::Power,
        status: shuiwu_power::PowerStatus::Submitted,
        water_status: None,
        version: 1,
        project_code: None,
        project_name: None,
        applicant: shuiwu_power::Applicant {
            kind: shuiwu_power::ApplicantKind::Person,
            name: "欧阳娜娜".into(),
            credit_code: Some(id_number.clone()),
            contact_name: None,
            contact_phone: Some("13987654321".into()),
        },
        site: shuiwu_power::Site {
            region_code: "530102".into(),
            address: Some("昆明市五华区某路1号".into()),
        },
        power: None,
        water: Some(shuiwu_power::WaterNeeds {
            diameter_dn: Some(15),
            use_: Some("生活".into()),
            daily_m3: Some(0.3),
        }),
        submitted_at: now,
        updated_at: now,
    };
    let page = shuiwu_wire::RawDocument {
        bytes: Arc::from(
            serde_json::to_vec(&serde_json::json!({"items": [app], "nextCursor": null}))
                .unwrap()
                .as_slice(),
        ),
        meta: shuiwu_wire::FetchMeta {
            source: "power".into(),
            method: "GET".into(),
            url: "http://127.0.0.1/api/joint/v2/applications".into(),
            status: 200,
            request_id: None,
            content_type: Some("application/json".into()),
            fetched_at: now,
        },
    };
    let landed = w
        .store
        .land_power_page(
            &[app],
            &[],
            &page,
            gateway::store::ListingCursor {
                watermark: Some(now),
                read_from: None,
            },
            syncer.rebuilder(),
            now,
        )
        .unwrap();
    assert_eq!(landed.imported, 1, "{landed:?}");
    let report = syncer.pass(&CancellationToken::new()).await.unwrap();
    assert!(report.notices_issued >= 1, "{report:?}");
    let id = "PW-KMGD2026112000001";
    let (_, _, checklist) = w.store.latest_materials(id).unwrap().expect("checked");
    let items: Vec<(&str, bool)> = checklist
        .items
        .iter()
        .map(|i| (i.item.as_str(), i.satisfied))
        .collect();
    assert_eq!(items, [("identity_card", true), ("premises_right", false)]);
    let (_, text) = w
        .store
        .notice(id)
        .unwrap()
        .expect("a notice for the missing title");
    assert!(text.contains("不动产权证书"), "{text}");
    assert!(text.contains("申请人：欧***"), "{text}");
    assert!(!text.contains("欧阳娜娜") && !text.contains(&id_number), "{text}");
}
