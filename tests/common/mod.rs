//! Shared set-up for integration tests: a simulator and a gateway wired to one manual clock.
#![allow(dead_code)]

pub mod cli;
pub mod console;
pub mod daemon;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use gateway::config::SyncConfig;
use gateway::mapping::MappingSet;
use gateway::store::Store;
use gateway::sync::{PassReport, Syncer};
use shuiwu_approval::sim::{Generator, SimConfig, SimServer, Simulator};
use shuiwu_approval::{ApprovalClient, ClientConfig, RetryPolicy, SignMethod};
use shuiwu_wire::{ManualClock, Secret};
use tokio_util::sync::CancellationToken;

/// 2026-11-20 12:00:00 Beijing time.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 4, 0, 0).unwrap()
}

pub struct World {
    pub clock: ManualClock,
    pub server: SimServer,
    pub store: Arc<Store>,
    pub syncer: Syncer,
    pub client: Arc<ApprovalClient>,
    pub dir: tempfile::TempDir,
}

pub fn sim_config(count: u64, start: DateTime<Utc>, end: DateTime<Utc>) -> SimConfig {
    SimConfig {
        app_id: "kmsw-test".into(),
        app_secret: "test-secret".into(),
        generator: Generator {
            seed: 42,
            count,
            start,
            end,
        },
        lag: chrono::Duration::minutes(5),
        rate_limit_per_sec: None,
        daily_quota: None,
        drift_every: None,
        random_fault_per_mille: 0,
        random_hang_per_mille: 0,
        fixtures: vec![],
    }
}

pub fn client_config(server: &SimServer) -> ClientConfig {
    let sim = server.sim.config();
    ClientConfig {
        base_url: server.base_url(),
        app_id: sim.app_id.clone(),
        app_secret: Secret::new(sim.app_secret.clone()),
        sign_method: SignMethod::HmacSm3,
        rate_per_second: 0,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(10),
        max_document_bytes: shuiwu_approval::default_max_document_bytes(),
        daily_quota: None,
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_wait: Duration::from_secs(2),
        },
    }
}

pub async fn world(sim: SimConfig, sync_start: DateTime<Utc>) -> World {
    world_tuned(sim, sync_start, |_| {}).await
}

/// A world whose client configuration `tune` adjusts.
pub async fn world_tuned(
    sim: SimConfig,
    sync_start: DateTime<Utc>,
    tune: impl FnOnce(&mut ClientConfig),
) -> World {
    let clock = ManualClock::new(t0());
    let server = Simulator::new(sim, Arc::new(clock.clone()))
        .unwrap()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("g.db")).unwrap());
    let mut client_cfg = client_config(&server);
    tune(&mut client_cfg);
    let client = Arc::new(ApprovalClient::new(client_cfg, Arc::new(clock.clone())).unwrap());
    let mappings = MappingSet::load(None).unwrap();
    let mapping = mappings.get("approval.project").unwrap();
    let cfg = SyncConfig {
        start: shuiwu_wire::format_beijing(sync_start),
        concurrency: 8,
        ..SyncConfig::default()
    };
    let policies = Arc::new(gateway::policy::Rules::load(None).unwrap());
    let syncer = Syncer::new(
        client.clone(),
        store.clone(),
        mapping,
        policies,
        cfg,
        Arc::new(clock.clone()),
    )
    .with_power_mapping(mappings.get("power.application").unwrap());
    World {
        clock,
        server,
        store,
        syncer,
        client,
        dir,
    }
}

impl World {
    pub async fn pass(&self) -> PassReport {
        self.syncer.pass(&CancellationToken::new()).await.unwrap()
    }

    /// Every (XMDM, BBH) the platform shows now, and whether the store processed exactly
    /// that version (or a newer one).
    pub fn missing(&self, from: DateTime<Utc>) -> Vec<(String, u64)> {
        let now = self.clock.now_utc();
        self.missing_in(from, now + chrono::Duration::days(1))
    }

    /// As [`World::missing`], for the versions whose `GXSJ` is in `[from, to)`.
    pub fn missing_in(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(String, u64)> {
        self.server
            .sim
            .visible_in(from, to)
            .into_iter()
            .filter(|(xmdm, bbh)| {
                self.store
                    .processed_version("approval", xmdm)
                    .unwrap()
                    .is_none_or(|v| v < *bbh as i64)
            })
            .collect()
    }
}

pub trait Now {
    fn now_utc(&self) -> DateTime<Utc>;
}
impl Now for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        shuiwu_wire::Clock::now(self)
    }
}
