//! What the benchmarks that sync from the approval simulator share: their command-line values
//! and the simulator they sync from.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use shuiwu_approval::sim::{SimConfig, SimServer, Simulator};
use shuiwu_wire::SystemClock;

/// The application secret the simulator and the gateway share.
pub const SECRET: &str = "bench-secret";

/// The value after `name` on the benchmark's command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--projects N`, or `default`.
pub fn projects(default: u64) -> u64 {
    arg("--projects").map_or(default, |n| n.parse().expect("--projects N"))
}

/// `--keep DIR`: where to leave the database and configuration (for profiling), if asked.
pub fn keep() -> Option<PathBuf> {
    arg("--keep").map(PathBuf::from)
}

/// The approval simulator serving `projects` generated projects (seed 11, created over the 30
/// days up to ten minutes ago) on loopback, without rate limit or daily quota.
pub fn simulator(runtime: &tokio::runtime::Runtime, projects: u64) -> SimServer {
    let mut cfg = SimConfig::contract_defaults(11, projects, Utc::now(), 30);
    cfg.generator.end = Utc::now() - chrono::Duration::minutes(10);
    cfg.app_secret = SECRET.into();
    cfg.rate_limit_per_sec = None;
    cfg.daily_quota = None;
    runtime
        .block_on(
            Simulator::new(cfg, Arc::new(SystemClock))
                .expect("a simulator")
                .serve("127.0.0.1:0".parse().expect("an address")),
        )
        .expect("the simulator serving")
}
