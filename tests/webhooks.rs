//! `POST /webhooks/power` over a real listener: signed, fresh events are kept before the
//! answer; forged, stale and repeated ones are not acted on; events out of order end in the
//! newest version.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use gateway::http::webhooks::sign;
use gateway::http::{HttpState, serve};
use gateway::store::{AsyncStore, Store};
use shuiwu_wire::{ManualClock, Secret};
use tokio_util::sync::CancellationToken;

const KEY: &str = "webhook-key";

struct Server {
    url: String,
    store: Arc<Store>,
    clock: ManualClock,
    token: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("g.db")).unwrap());
    let clock = ManualClock::new(shuiwu_power::parse_time("2026-11-20T12:00:00+08:00").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/power", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    let state = HttpState {
        store: AsyncStore::new(store.clone()),
        clock: Arc::new(clock.clone()),
        power_webhook_secret: Some(Secret::new(KEY)),
        rebuilder: gateway::rebuild::Rebuilder::from_set(
            &gateway::mapping::MappingSet::load(None).unwrap(),
            Arc::new(gateway::policy::Rules::load(None).unwrap()),
        )
        .unwrap(),
        readiness: None,
        metrics: None,
        admin_tokens: None,
        console: None,
    };
    tokio::spawn(serve(listener, state, token.clone()));
    Server {
        url,
        store,
        clock,
        token,
        _dir: dir,
    }
}

fn event(id: &str, app: &str, version: u64, status: &str, at: DateTime<Utc>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "eventId": id,
        "type": "application.updated",
        "application": {
            "applicationId": app, "origin": "POWER", "status": status, "version": version,
            "applicant": {"kind": "PERSON", "name": "李四"}, "site": {"regionCode": "530102"},
            "submittedAt": "2026-11-19T10:00:00+08:00", "updatedAt": shuiwu_power::format_time(at)
        }
    }))
    .unwrap()
}

/// A plain HTTP client (the provider only has to be there; nothing here uses TLS).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(s: &Server, body: &[u8], timestamp: i64, key: &str) -> u16 {
    let ts = timestamp.to_string();
    http()
        .post(&s.url)
        .header("Content-Type", "application/json")
        .header("X-KMGD-Timestamp", &ts)
        .header("X-KMGD-Signature", sign(key.as_bytes(), &ts, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn signed_fresh_events_are_kept_once_and_in_version_order() {
    let s = start().await;
    let now = shuiwu_wire::Clock::now(&s.clock);
    let t = now.timestamp();
    // Version 3 arrives before version 2.
    assert_eq!(
        post(&s, &event("evt_3", "KMGD1", 3, "ACCEPTED", now), t, KEY).await,
        200
    );
    assert_eq!(
        post(&s, &event("evt_2", "KMGD1", 2, "SUBMITTED", now), t, KEY).await,
        200
    );
    let app = s.store.joint_application("KMGD1").unwrap().unwrap();
    assert_eq!(
        (app.version, app.status.as_str()),
        (3, "ACCEPTED"),
        "the newest version stays"
    );
    // The same event again (a retry of the power side, signed afresh): acknowledged, not acted on.
    assert_eq!(
        post(&s, &event("evt_3", "KMGD1", 3, "ACCEPTED", now), t + 10, KEY).await,
        200
    );
    // The raw bytes of each delivery are kept, the event once.
    let events: i64 = rusqlite_count(&s, "SELECT COUNT(*) FROM power_events");
    assert_eq!(events, 2);
    let fetches: i64 = rusqlite_count(&s, "SELECT COUNT(*) FROM fetches WHERE method = 'WEBHOOK'");
    assert_eq!(fetches, 3);
    s.token.cancel();
}

#[tokio::test]
async fn forged_stale_and_unsigned_events_are_refused_and_change_nothing() {
    let s = start().await;
    let now = shuiwu_wire::Clock::now(&s.clock);
    let t = now.timestamp();
    let body = event("evt_1", "KMGD9", 1, "SUBMITTED", now);
    assert_eq!(post(&s, &body, t, "wrong-key").await, 401, "forged");
    assert_eq!(post(&s, &body, t - 301, KEY).await, 401, "stale");
    assert_eq!(post(&s, &body, t + 301, KEY).await, 401, "from the future");
    let unsigned = http().post(&s.url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    // A valid signature over other bytes.
    let ts = t.to_string();
    let tampered = http()
        .post(&s.url)
        .header("X-KMGD-Timestamp", &ts)
        .header("X-KMGD-Signature", sign(KEY.as_bytes(), &ts, &body))
        .body(event("evt_1", "KMGD9", 1, "WITHDRAWN", now))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status().as_u16(), 401);
    assert!(s.store.joint_application("KMGD9").unwrap().is_none());
    assert_eq!(rusqlite_count(&s, "SELECT COUNT(*) FROM power_events"), 0);
    // Within the tolerance, accepted.
    assert_eq!(post(&s, &body, t - 299, KEY).await, 200);
    s.token.cancel();
}

fn rusqlite_count(s: &Server, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(s.store.path()).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
