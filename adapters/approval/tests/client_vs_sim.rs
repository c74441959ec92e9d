//! The client against the simulator, over real HTTP on loopback: every fault of the contract.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use shuiwu_approval::sim::{Fault, Injection, SimConfig, SimServer, Simulator, Target};
use shuiwu_approval::{ApprovalClient, ApprovalError, ClientConfig, RetryPolicy, SignMethod};
use shuiwu_wire::{FaultClass, ManualClock, Secret, SystemClock};

fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::contract_defaults(11, 500, Utc::now(), 10);
    cfg.lag = chrono::Duration::zero();
    cfg.rate_limit_per_sec = None;
    cfg
}

async fn start(cfg: SimConfig) -> SimServer {
    Simulator::new(cfg, Arc::new(SystemClock))
        .unwrap()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client_config(server: &SimServer) -> ClientConfig {
    let sim = server.sim.config();
    ClientConfig {
        base_url: server.base_url(),
        app_id: sim.app_id.clone(),
        app_secret: Secret::new(sim.app_secret.clone()),
        sign_method: SignMethod::HmacSha256,
        rate_per_second: 0,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(3),
        max_document_bytes: shuiwu_approval::default_max_document_bytes(),
        daily_quota: None,
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_wait: Duration::from_secs(2),
        },
    }
}

fn client(cfg: ClientConfig) -> ApprovalClient {
    ApprovalClient::new(cfg, Arc::new(SystemClock)).unwrap()
}

fn first_code(server: &SimServer) -> String {
    let g = &server.sim.config().generator;
    (0..g.count)
        .map(|i| g.xmdm(i))
        .find(|x| server.sim.detail_visible(x))
        .unwrap()
}

trait Visible {
    fn detail_visible(&self, xmdm: &str) -> bool;
}
impl Visible for Simulator {
    fn detail_visible(&self, xmdm: &str) -> bool {
        let now = self.now();
        self.visible_in(now - chrono::Duration::days(30), now)
            .iter()
            .any(|(x, _)| x == xmdm)
    }
}

#[tokio::test]
async fn lists_and_fetches_with_both_sign_methods() {
    let server = start(sim_config()).await;
    for method in [SignMethod::HmacSha256, SignMethod::HmacSm3] {
        let mut cfg = client_config(&server);
        cfg.sign_method = method;
        let c = client(cfg);
        let now = Utc::now();
        let (page, raw) = c
            .list_projects(now - chrono::Duration::hours(24), now, 1, 100)
            .await
            .unwrap();
        assert!(page.total > 0 && !page.list.is_empty());
        assert!(raw.meta.request_id.is_some());
        assert!(raw.meta.url.contains("gxsjStart="));
        let xmdm = page.list[0]["XMDM"].as_str().unwrap().to_string();
        let detail = c.project(&xmdm).await.unwrap();
        assert_eq!(detail.data()["XMDM"], xmdm.as_str());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&detail.raw.bytes).unwrap()["data"]["XMDM"],
            xmdm.as_str()
        );
    }
}

#[tokio::test]
async fn wrong_secret_is_permanent() {
    let server = start(sim_config()).await;
    let mut cfg = client_config(&server);
    cfg.app_secret = Secret::new("wrong");
    let err = client(cfg).project("2022-530112-47-01-587143").await.unwrap_err();
    assert!(matches!(err, ApprovalError::BadSignature), "{err}");
    assert_eq!(err.class(), FaultClass::Permanent);
    // No retries for a permanent fault: exactly one request reached the simulator.
    assert_eq!(server.sim.stats().requests, 1);
}

#[tokio::test]
async fn every_transient_fault_is_retried_until_success() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    let c = client(client_config(&server));
    for fault in Fault::ALL_TRANSIENT {
        let fault = match fault {
            Fault::Hang { .. } => Fault::Hang { secs: 10 },
            other => other,
        };
        server.sim.inject(Injection {
            fault,
            target: Target::Detail,
            times: 1,
        });
        let before = server.sim.stats().requests;
        let got = c.project(&xmdm).await;
        assert!(got.is_ok(), "{fault:?}: {:?}", got.err());
        assert_eq!(
            server.sim.stats().requests - before,
            2,
            "{fault:?}: one failure, one retry"
        );
    }
}

#[tokio::test]
async fn persistent_faults_end_as_transient_errors_without_panics() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    let c = client(client_config(&server));
    for fault in [
        Fault::CutOffJson,
        Fault::CutOffConnection,
        Fault::WafPage,
        Fault::BadGateway,
        Fault::Reset,
    ] {
        // One attempt and three retries, all faulty.
        server.sim.inject(Injection {
            fault,
            target: Target::Any,
            times: 4,
        });
        let err = c.project(&xmdm).await.unwrap_err();
        assert_eq!(err.class(), FaultClass::Transient, "{fault:?}: {err}");
        c.project(&xmdm).await.unwrap();
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    let c = client(client_config(&server));
    server.sim.inject_next(Fault::RateLimited { retry_after_secs: 1 });
    let t = std::time::Instant::now();
    c.project(&xmdm).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn quota_gate_stops_calls_until_beijing_midnight() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    // 2024-03-05 23:10 Beijing time.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 3, 5, 15, 10, 0).unwrap());
    let c = ApprovalClient::new(client_config(&server), Arc::new(clock.clone())).unwrap();
    server.sim.inject_next(Fault::QuotaExhausted);
    let err = c.project(&xmdm).await.unwrap_err();
    let ApprovalError::QuotaExhausted { until } = err else {
        panic!("{err}")
    };
    assert_eq!(until, Utc.with_ymd_and_hms(2024, 3, 5, 16, 0, 0).unwrap());
    let requests = server.sim.stats().requests;
    // Before midnight no request leaves the client at all.
    clock.advance(chrono::Duration::minutes(49));
    assert!(matches!(
        c.project(&xmdm).await,
        Err(ApprovalError::QuotaExhausted { .. })
    ));
    assert_eq!(server.sim.stats().requests, requests);
    assert!(c.blocked_until().is_some());
    clock.advance(chrono::Duration::minutes(2));
    assert!(c.blocked_until().is_none());
}

#[tokio::test]
async fn maintenance_gate_honours_resume_at() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    let c = client(client_config(&server));
    server.sim.inject_next(Fault::Maintenance { for_secs: 3600 });
    let err = c.project(&xmdm).await.unwrap_err();
    let ApprovalError::Maintenance { until: Some(until) } = err else {
        panic!("{err}")
    };
    let ahead = until - Utc::now();
    assert!(ahead > chrono::Duration::minutes(59) && ahead <= chrono::Duration::minutes(60));
    assert_eq!(
        server.sim.stats().requests,
        1,
        "a wait past max_wait is not slept through"
    );
    assert!(matches!(
        c.project(&xmdm).await,
        Err(ApprovalError::Maintenance { .. })
    ));
    assert_eq!(
        server.sim.stats().requests,
        1,
        "the gate holds calls back locally"
    );
}

#[tokio::test]
async fn clock_skew_is_learnt_from_the_date_header() {
    // The platform's clock runs 10 minutes ahead of ours.
    let platform = ManualClock::new(Utc::now() + chrono::Duration::minutes(10));
    let cfg = sim_config();
    let server = Simulator::new(cfg, Arc::new(platform))
        .unwrap()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = client(client_config(&server));
    let now = Utc::now();
    c.list_projects(now - chrono::Duration::hours(1), now, 1, 10)
        .await
        .unwrap();
    assert_eq!(
        server.sim.stats().auth_rejected,
        1,
        "one 4011, then a re-signed success"
    );
    let skew = c.platform_now() - Utc::now();
    assert!(
        (skew - chrono::Duration::minutes(10)).num_seconds().abs() <= 2,
        "{skew}"
    );
}

#[tokio::test]
async fn hang_hits_the_timeout() {
    let server = start(sim_config()).await;
    let xmdm = first_code(&server);
    let mut cfg = client_config(&server);
    cfg.retry.max_retries = 0;
    cfg.read_timeout = Duration::from_millis(300);
    let c = client(cfg);
    server.sim.inject_next(Fault::Hang { secs: 30 });
    let t = std::time::Instant::now();
    let err = c.project(&xmdm).await.unwrap_err();
    assert!(matches!(err, ApprovalError::Transport(_)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_limiter_keeps_under_the_platform_rate() {
    let mut sim = sim_config();
    sim.rate_limit_per_sec = Some(10);
    let server = start(sim).await;
    let mut cfg = client_config(&server);
    // A margin under the platform's 10/s, as the default (8/s) has: arrivals jitter on any network.
    cfg.rate_per_second = 9;
    let c = Arc::new(client(cfg));
    let now = Utc::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..6 {
                c.list_projects(now - chrono::Duration::hours(1), now, 1, 5)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.sim.stats().rate_limited, 0);
    assert_eq!(server.sim.stats().lists, 24);
}

#[tokio::test]
async fn bad_parameters_are_permanent() {
    let server = start(sim_config()).await;
    let c = client(client_config(&server));
    let now = Utc::now();
    let err = c
        .list_projects(now - chrono::Duration::hours(25), now, 1, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApprovalError::BadParameter { msg } if msg.contains("24")),
        "{err}"
    );
    let err = c.project("2022-530302-47-01-000001").await.unwrap_err();
    assert!(matches!(err, ApprovalError::NotFound { .. }));
}

#[tokio::test]
async fn faults_can_be_injected_over_http() {
    let server = start(sim_config()).await;
    // The gateway's client installs the TLS crypto provider that reqwest needs.
    let c = client(client_config(&server));
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/__sim/faults", server.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"fault": {"kind": "maintenance", "for_secs": 600}, "target": "list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let now = Utc::now();
    let err = c
        .list_projects(now - chrono::Duration::hours(1), now, 1, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApprovalError::Maintenance { until: Some(_) }),
        "{err}"
    );
    let stats: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{}/__sim/stats", server.base_url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["faults_injected"], 1);
}

#[tokio::test]
async fn attachments_are_checked_against_their_hash() {
    let server = start(sim_config()).await;
    let c = client(client_config(&server));
    let fjid = "00000000000000aa0000000000000001";
    let content = shuiwu_approval::sim::attachment_content(fjid);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&content))
    };
    let raw = c
        .attachment(fjid, &sha, Some(content.len() as u64))
        .await
        .unwrap();
    assert_eq!(&raw.bytes[..], &content[..]);
    // One damaged transfer: retried, then right.
    server.sim.corrupt_next_attachments(1);
    assert!(c.attachment(fjid, &sha, Some(content.len() as u64)).await.is_ok());
    // Damaged every time: an error after the retries.
    server.sim.corrupt_next_attachments(10);
    let err = c
        .attachment(fjid, &sha, Some(content.len() as u64))
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::HashMismatch { .. }), "{err}");
}

#[tokio::test]
async fn an_answer_over_the_limit_is_refused_unread_and_not_retried() {
    let server = start(sim_config()).await;
    let mut cfg = client_config(&server);
    cfg.max_document_bytes = 512;
    let c = client(cfg);
    let before = server.sim.stats().requests;
    let now = server.sim.now();
    let err = c
        .list_projects(now - chrono::Duration::hours(23), now, 1, 100)
        .await
        .unwrap_err();
    assert!(matches!(err, ApprovalError::TooLarge { limit: 512, .. }), "{err}");
    assert!(!err.is_transient(), "a permanent answer: never a retry loop");
    assert_eq!(server.sim.stats().requests, before + 1, "asked once");
}
