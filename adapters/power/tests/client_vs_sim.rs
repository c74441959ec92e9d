//! The client against the simulator, over real HTTP on loopback: every answer of the
//! interface, faults before and after a change included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use shuiwu_power::sim::{Fault, Injection, PowerSim, PowerSimConfig, PowerSimServer, Target, When};
use shuiwu_power::{
    Applicant, ApplicantKind, Application, ClientAuth, CreateApplication, Origin, PowerClient, PowerConfig,
    PowerError, PowerStatus, Site, WaterStatus, WaterStatusReport,
};
use shuiwu_wire::{FaultClass, Secret, SystemClock};

async fn start(cfg: PowerSimConfig) -> PowerSimServer {
    PowerSim::new(cfg, Arc::new(SystemClock))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn unlimited() -> PowerSimConfig {
    PowerSimConfig {
        rate_limit_per_sec: None,
        ..PowerSimConfig::contract_defaults(7)
    }
}

fn config(server: &PowerSimServer) -> PowerConfig {
    let mut cfg = server.client_config();
    cfg.rate_per_second = 0;
    cfg.timeout_secs = 1;
    cfg.min_delay_ms = 10;
    cfg
}

fn client(cfg: PowerConfig) -> PowerClient {
    PowerClient::new(cfg, Arc::new(SystemClock)).unwrap()
}

fn body(external: &str) -> CreateApplication {
    CreateApplication {
        external_id: external.into(),
        origin: Origin::Water,
        project_code: Some("2022-530112-47-01-587143".into()),
        project_name: Some("昆明某科技有限公司标准厂房建设项目".into()),
        applicant: Applicant {
            kind: ApplicantKind::Organisation,
            name: "昆明某科技有限公司".into(),
            credit_code: Some("91530112MA6NXXXX0X".into()),
            contact_name: Some("张三".into()),
            contact_phone: Some("13800000000".into()),
        },
        site: Site {
            region_code: "530112".into(),
            address: Some("昆明市西山区海口街道工业园区3号地块".into()),
        },
        power: None,
        water: None,
        submitted_at: Utc::now(),
    }
}

fn power_origin(project: Option<&str>) -> Application {
    let now = Utc::now();
    Application {
        application_id: String::new(),
        external_id: None,
        origin: Origin::Power,
        status: PowerStatus::Submitted,
        water_status: None,
        version: 1,
        project_code: project.map(str::to_string),
        project_name: None,
        applicant: Applicant {
            kind: ApplicantKind::Person,
            name: "李四".into(),
            credit_code: None,
            contact_name: None,
            contact_phone: None,
        },
        site: Site {
            region_code: "530102".into(),
            address: None,
        },
        power: None,
        water: None,
        submitted_at: now,
        updated_at: now,
    }
}

fn report(w: WaterStatus) -> WaterStatusReport {
    WaterStatusReport {
        water_status: w,
        at: Utc::now(),
        note: None,
    }
}

#[tokio::test]
async fn both_client_authentication_methods_get_a_token_and_wrong_credentials_are_permanent() {
    let server = start(unlimited()).await;
    for auth in [ClientAuth::ClientSecretPost, ClientAuth::ClientSecretBasic] {
        let mut cfg = config(&server);
        cfg.client_auth = auth;
        let created = client(cfg)
            .create(&format!("k-{auth:?}"), &body(&format!("wj-{auth:?}")))
            .await
            .unwrap();
        assert_eq!(created.application.version, 1, "{auth:?}");
    }
    let mut cfg = config(&server);
    cfg.client_secret = Secret::new("wrong");
    let err = client(cfg).get("KMGD2024030500001").await.unwrap_err();
    assert!(matches!(err, PowerError::InvalidClient { .. }), "{err:?}");
    assert_eq!(err.class(), FaultClass::Permanent);
    assert!(
        !err.to_string().contains("wrong"),
        "the secret in an error: {err}"
    );
}

#[tokio::test]
async fn a_create_is_idempotent_and_its_answers_are_kept_raw() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let first = c.create("key-1", &body("wj-1")).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.raw.meta.status, 201);
    assert_eq!(first.raw.meta.source, "power");
    let parsed: serde_json::Value = serde_json::from_slice(&first.raw.bytes).unwrap();
    assert_eq!(parsed["applicationId"], first.application.application_id.as_str());

    // The power side moves on; a replay answers the resource as it is now.
    server
        .sim
        .set_status(&first.application.application_id, PowerStatus::Accepted);
    let mut other = body("wj-1");
    other.submitted_at = first.application.submitted_at + chrono::Duration::seconds(1);
    let again = c.create("key-1", &other).await;
    // `submittedAt` differs (another body): the key was used with another body.
    assert!(matches!(again, Err(PowerError::KeyReused { .. })), "{again:?}");
    let same = first.clone();
    let mut b = body("wj-1");
    b.submitted_at = same.application.submitted_at;
    let replay = c.create("key-1", &b).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.application.version, 2, "the current resource");

    let dup = c.create("key-2", &b).await.unwrap_err();
    match dup {
        PowerError::DuplicateExternalId { existing, raw } => {
            assert_eq!(existing, first.application.application_id);
            assert_eq!(raw.meta.status, 409);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.sim.applications().len(), 1);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_repeated_and_answered_as_a_replay() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    for (n, fault) in [Fault::Reset, Fault::GatewayTimeout, Fault::Hang { secs: 3 }]
        .into_iter()
        .enumerate()
    {
        server.sim.inject(Injection {
            fault,
            target: Target::Create,
            when: When::After,
            times: 1,
        });
        let created = c
            .create(&format!("lost-{n}"), &body(&format!("wj-lost-{n}")))
            .await
            .unwrap();
        assert!(
            created.replayed,
            "{fault:?}: the retry found the application made by the lost call"
        );
    }
    let stats = server.sim.stats();
    assert_eq!((stats.created, stats.replayed, stats.faults_after), (3, 3, 3));
    assert_eq!(
        server.sim.applications().len(),
        3,
        "exactly one application per create"
    );
}

#[tokio::test]
async fn transient_faults_before_a_change_are_retried() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    for fault in [
        Fault::Internal,
        Fault::Unavailable,
        Fault::GatewayTimeout,
        Fault::Reset,
        Fault::Hang { secs: 3 },
    ] {
        server.sim.inject(Injection {
            fault,
            target: Target::Any,
            when: When::Before,
            times: 1,
        });
        let page = c.list(Utc::now() - chrono::Duration::days(1), 10, None).await;
        assert!(page.is_ok(), "{fault:?}: {page:?}");
    }
    // More failures than retries: a transient error, reported.
    server.sim.inject(Injection {
        fault: Fault::Unavailable,
        target: Target::Get,
        when: When::Before,
        times: 10,
    });
    let err = c.get("KMGD2024030500001").await.unwrap_err();
    assert!(matches!(err, PowerError::Server { status: 503, .. }), "{err:?}");
    assert!(err.is_transient());
    server.sim.clear_faults();
}

#[tokio::test]
async fn a_revoked_token_is_renewed_and_the_call_repeated_once() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let id = c
        .create("k", &body("wj-1"))
        .await
        .unwrap()
        .application
        .application_id;
    server.sim.revoke_tokens();
    assert_eq!(c.get(&id).await.unwrap().value.application_id, id);
    server.sim.inject(Injection {
        fault: Fault::TokenRevoked,
        target: Target::Get,
        when: When::Before,
        times: 1,
    });
    c.get(&id).await.unwrap();
    let stats = server.sim.stats();
    assert_eq!(stats.tokens_issued, 3, "one token, then one per revocation");
}

#[tokio::test]
async fn retry_after_is_honoured_in_both_forms() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    c.list(Utc::now(), 1, None).await.unwrap();
    for as_date in [false, true] {
        server.sim.inject(Injection {
            fault: Fault::RateLimited { secs: 1, as_date },
            target: Target::List,
            when: When::Before,
            times: 1,
        });
        let started = Instant::now();
        c.list(Utc::now(), 1, None).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "as_date {as_date}: retried before Retry-After ({:?})",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn water_status_answers_no_op_conflict_and_invalid_transition() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let app = c.create("k", &body("wj-1")).await.unwrap().application;
    let id = app.application_id.as_str();
    let moved = c
        .water_status(id, &report(WaterStatus::Surveyed), 1)
        .await
        .unwrap()
        .value;
    assert_eq!(
        (moved.version, moved.water_status),
        (2, Some(WaterStatus::Surveyed))
    );
    // The status it already has, with a stale version: a no-op.
    let same = c
        .water_status(id, &report(WaterStatus::Surveyed), 1)
        .await
        .unwrap()
        .value;
    assert_eq!(same.version, 2);
    match c
        .water_status(id, &report(WaterStatus::Connected), 1)
        .await
        .unwrap_err()
    {
        PowerError::VersionMismatch { current, raw } => {
            assert_eq!(current.version, 2);
            assert_eq!(raw.meta.status, 412);
        }
        other => panic!("{other:?}"),
    }
    let back = c
        .water_status(id, &report(WaterStatus::Accepted), 2)
        .await
        .unwrap_err();
    assert_eq!(back.code(), Some("invalid_transition"));
    assert_eq!(back.class(), FaultClass::Permanent);
    assert!(back.raw().is_some(), "the refusal is kept raw");
    let stats = server.sim.stats();
    assert_eq!((stats.water_status_applied, stats.water_status_no_op), (1, 1));
}

#[tokio::test]
async fn a_status_report_whose_answer_was_lost_is_applied_once() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let id = c
        .create("k", &body("wj-1"))
        .await
        .unwrap()
        .application
        .application_id;
    server.sim.inject(Injection {
        fault: Fault::Reset,
        target: Target::WaterStatus,
        when: When::After,
        times: 1,
    });
    // The retry carries the old version, but the status is the one the application now has.
    let app = c
        .water_status(&id, &report(WaterStatus::Accepted), 1)
        .await
        .unwrap()
        .value;
    assert_eq!((app.version, app.water_status), (2, Some(WaterStatus::Accepted)));
    let stats = server.sim.stats();
    assert_eq!((stats.water_status_applied, stats.water_status_no_op), (1, 1));
}

#[tokio::test]
async fn linking_a_power_origin_application() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let pid = server.sim.insert(power_origin(Some("2022-530112-47-01-587143")));
    let linked = c.link(&pid, "wj-7", 1).await.unwrap().value;
    assert_eq!((linked.external_id.as_deref(), linked.version), (Some("wj-7"), 2));
    assert_eq!(
        c.link(&pid, "wj-7", 1).await.unwrap().value.version,
        2,
        "the same link: a no-op"
    );
    let other = c.link(&pid, "wj-8", 2).await.unwrap_err();
    assert_eq!(other.code(), Some("already_linked"));
}

#[tokio::test]
async fn the_listing_pages_through_a_batch_that_shares_a_millisecond() {
    let server = start(unlimited()).await;
    let c = client(config(&server));
    let before = Utc::now() - chrono::Duration::seconds(1);
    let ids = server
        .sim
        .insert_batch((0..23).map(|_| power_origin(None)).collect());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = c.list(before, 5, cursor.as_deref()).await.unwrap();
        // The request went out with the offset's `+` as `%2B`.
        assert!(page.raw.meta.url.contains("%2B08%3A00"), "{}", page.raw.meta.url);
        let next_cursor = page.value.next_cursor.clone();
        seen.extend(page.value.split().0.into_iter().map(|a| a.application_id));
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every application once, in order");
}

#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    let server = start(unlimited()).await;
    let mut cfg = config(&server);
    cfg.max_body_bytes = 200;
    let c = client(cfg);
    let err = c.create("k", &body("wj-1")).await.unwrap_err();
    assert!(matches!(err, PowerError::TooLarge { limit: 200, .. }), "{err:?}");
    assert_eq!(err.class(), FaultClass::Permanent);
}

#[tokio::test]
async fn the_client_limiter_keeps_under_the_partners_rate() {
    let server = start(PowerSimConfig::contract_defaults(3)).await;
    let mut cfg = config(&server);
    cfg.rate_per_second = 4;
    let c = client(cfg);
    for i in 0..10 {
        c.create(&format!("k{i}"), &body(&format!("wj-{i}")))
            .await
            .unwrap();
    }
    let stats = server.sim.stats();
    // Eleven calls (a token and ten creates) in well under two seconds without the limiter:
    // the simulator's 5 per second would have answered some of them 429.
    assert_eq!(stats.rate_limited, 0, "a 429 under the client's limiter");
    assert_eq!(stats.created, 10);
}
