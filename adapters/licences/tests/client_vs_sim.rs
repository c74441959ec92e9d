//! The licence client against the licence simulator over real HTTP: encodings, prefixes,
//! tokens, and every fault of the contract.

use std::sync::Arc;

use chrono::{Duration, Utc};
use shuiwu_licences::sim::{LicenceFault, LicenceSim, LicenceSimConfig, LicenceSimServer};
use shuiwu_licences::xml::XmlError;
use shuiwu_licences::{LicenceClient, LicenceConfig, LicenceError};
use shuiwu_wire::{Clock, ManualClock, Secret, SystemClock};

async fn start(clock: Arc<dyn Clock>) -> LicenceSimServer {
    LicenceSim::new(LicenceSimConfig::default(), clock)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config(server: &LicenceSimServer) -> LicenceConfig {
    let sim = server.sim.config();
    LicenceConfig {
        base_url: server.base_url(),
        app_id: sim.app_id.clone(),
        app_secret: Secret::new(sim.app_secret.clone()),
        rate_per_second: 0,
        timeout_secs: 10,
        max_retries: 3,
        min_delay_ms: 5,
    }
}

const EXAMPLE: &str = "91350100M000100Y43";

#[tokio::test]
async fn reads_gbk_and_utf8_answers_with_any_prefix() {
    let server = start(Arc::new(SystemClock)).await;
    let client = LicenceClient::new(config(&server), Arc::new(SystemClock)).unwrap();
    for _ in 0..16 {
        let answer = client.query(EXAMPLE, None).await.unwrap();
        assert_eq!(answer.licences.len(), 2);
        let permit = answer
            .licences
            .iter()
            .find(|l| l.type_code == "JSGCGHXKZ")
            .unwrap();
        assert_eq!(permit.name.as_deref(), Some("建设工程规划许可证"));
        assert_eq!(permit.project_code.as_deref(), Some("2022-530112-47-01-587143"));
        assert!(
            answer
                .raw
                .meta
                .content_type
                .as_deref()
                .unwrap()
                .starts_with("text/xml; charset=")
        );
    }
    let stats = server.sim.stats();
    assert!(stats.gbk_answers > 0 && stats.utf8_answers > 0, "{stats:?}");
    assert_eq!(stats.tokens_issued, 1, "the token is cached");
    // The raw document is kept exactly as received: GBK bytes stay GBK bytes.
    let mut gbk = None;
    for _ in 0..20 {
        let a = client.query(EXAMPLE, Some("YYZZ")).await.unwrap();
        if a.raw.meta.content_type.as_deref() == Some("text/xml; charset=GBK") {
            gbk = Some(a);
            break;
        }
    }
    let gbk = gbk.expect("a GBK answer among 20");
    assert!(
        std::str::from_utf8(&gbk.raw.bytes).is_err(),
        "GBK bytes are not UTF-8"
    );
    assert_eq!(gbk.licences[0].name.as_deref(), Some("营业执照"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_revoked_tokens_are_replaced_once() {
    let clock = ManualClock::new(Utc::now());
    let server = start(Arc::new(clock.clone())).await;
    let client = LicenceClient::new(config(&server), Arc::new(clock.clone())).unwrap();
    client.query(EXAMPLE, None).await.unwrap();
    server.sim.inject(LicenceFault::RevokeTokens);
    client.query(EXAMPLE, None).await.unwrap();
    let stats = server.sim.stats();
    assert_eq!((stats.tokens_issued, stats.token_rejections), (2, 1), "{stats:?}");
    // Past its ExpiresIn the client asks for a new token before calling.
    clock.advance(Duration::hours(2));
    client.query(EXAMPLE, None).await.unwrap();
    let stats = server.sim.stats();
    assert_eq!((stats.tokens_issued, stats.token_rejections), (3, 1), "{stats:?}");
}

#[tokio::test]
async fn every_transient_fault_is_retried() {
    let server = start(Arc::new(SystemClock)).await;
    let client = LicenceClient::new(config(&server), Arc::new(SystemClock)).unwrap();
    client.query(EXAMPLE, None).await.unwrap();
    for fault in [
        LicenceFault::ServerFault,
        LicenceFault::MaintenancePage,
        LicenceFault::Truncated,
        LicenceFault::Internal,
    ] {
        server.sim.inject(fault);
        let before = server.sim.stats().requests;
        let answer = client.query(EXAMPLE, None).await;
        assert!(answer.is_ok(), "{fault:?}: {answer:?}");
        assert_eq!(
            server.sim.stats().requests - before,
            2,
            "{fault:?}: one fault, one retry"
        );
    }
}

#[tokio::test]
async fn unsafe_or_oversized_documents_are_permanent_and_asked_once() {
    let server = start(Arc::new(SystemClock)).await;
    let client = LicenceClient::new(config(&server), Arc::new(SystemClock)).unwrap();
    client.query(EXAMPLE, None).await.unwrap();
    for fault in [LicenceFault::Dtd, LicenceFault::Oversize] {
        server.sim.inject(fault);
        let before = server.sim.stats().requests;
        let err = client.query(EXAMPLE, None).await.unwrap_err();
        assert!(!err.is_transient(), "{fault:?}: {err}");
        assert_eq!(server.sim.stats().requests - before, 1, "{fault:?}: no retry");
    }
}

#[tokio::test]
async fn rate_limit_faults_wait_two_seconds() {
    let server = start(Arc::new(SystemClock)).await;
    let client = LicenceClient::new(config(&server), Arc::new(SystemClock)).unwrap();
    client.query(EXAMPLE, None).await.unwrap();
    server.sim.inject(LicenceFault::RateLimit);
    let t = std::time::Instant::now();
    client.query(EXAMPLE, None).await.unwrap();
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1_900),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn hostile_documents_are_refused_unexpanded() {
    let server = start(Arc::new(SystemClock)).await;
    let mut cfg = config(&server);
    cfg.max_retries = 0;
    let client = LicenceClient::new(cfg, Arc::new(SystemClock)).unwrap();
    client.query(EXAMPLE, None).await.unwrap();
    server.sim.inject(LicenceFault::Dtd);
    assert_eq!(
        client.query(EXAMPLE, None).await.unwrap_err(),
        LicenceError::Xml(XmlError::Dtd)
    );
    server.sim.inject(LicenceFault::Oversize);
    assert!(matches!(
        client.query(EXAMPLE, None).await.unwrap_err(),
        LicenceError::Xml(XmlError::TooLarge(_))
    ));
    server.sim.inject(LicenceFault::Truncated);
    assert!(matches!(
        client.query(EXAMPLE, None).await.unwrap_err(),
        LicenceError::Xml(XmlError::Malformed(_))
    ));
    server.sim.inject(LicenceFault::MaintenancePage);
    assert_eq!(
        client.query(EXAMPLE, None).await.unwrap_err(),
        LicenceError::Maintenance
    );
}

#[tokio::test]
async fn answers_and_permanent_errors() {
    let server = start(Arc::new(SystemClock)).await;
    let client = LicenceClient::new(config(&server), Arc::new(SystemClock)).unwrap();
    // A holder without any licence: an empty answer (1001), not an error.
    let nobody = (0..200)
        .map(|i| format!("91530100MA6{i:07}"))
        .find(|h| server.sim.licences_for(h).is_empty())
        .unwrap();
    assert!(client.query(&nobody, None).await.unwrap().licences.is_empty());
    assert!(matches!(
        client.query(EXAMPLE, Some("NOPE")).await,
        Err(LicenceError::BadParameter(_))
    ));
    assert!(
        client
            .query(EXAMPLE, Some("BDCQZS"))
            .await
            .unwrap()
            .licences
            .is_empty()
    );

    let mut cfg = config(&server);
    cfg.app_secret = Secret::new("wrong");
    let err = LicenceClient::new(cfg, Arc::new(SystemClock))
        .unwrap()
        .query(EXAMPLE, None)
        .await
        .unwrap_err();
    assert!(matches!(err, LicenceError::AuthFailed(_)), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn generated_holders_cover_every_case() {
    let server = start(Arc::new(SystemClock)).await;
    let all: Vec<_> = (0..300)
        .flat_map(|i| server.sim.licences_for(&format!("91530100MA6{i:07}")))
        .collect();
    assert!(all.iter().any(|l| l.status == "2"), "revoked");
    assert!(all.iter().any(|l| l.status == "3"), "expired");
    assert!(
        all.iter().any(|l| l.valid_until.as_deref() == Some("2025-06-30")),
        "past its date"
    );
    assert!(all.iter().any(|l| l.project_code.is_some()), "naming a project");
    assert!(all.iter().any(|l| l.type_code == "BDCQZS"));
}
