//! `gateway simulate`: the approval-platform simulator as a standalone server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Duration, Utc};
use clap::Args;
use shuiwu_approval::sim::{SimConfig, Simulator, fixtures_at};
use shuiwu_wire::SystemClock;
use tokio_util::sync::CancellationToken;

/// Besides the platform's API the simulator answers `POST /__sim/faults` with a JSON body such
/// as `{"fault": {"kind": "maintenance", "for_secs": 600}, "target": "detail", "times": 1}`
/// (kinds: rate_limited, quota_exhausted, maintenance, internal500, internal200, bad_gateway,
/// gateway_timeout, waf_page, cut_off_connection, cut_off_json, reset, hang, unknown_code), and
/// `GET /__sim/stats` with its counters.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (loopback); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Generated projects.
    #[arg(long, default_value_t = 1_000)]
    pub projects: u64,
    /// Spread the projects' update times over this many days before now.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// The newest generated update time is this many minutes before now.
    #[arg(long, default_value_t = 10)]
    pub end_minutes_ago: i64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "kmsw-sim")]
    pub app_id: String,
    /// The simulator's own account secret (a test credential, not a real one).
    #[arg(long, default_value = "sim-secret")]
    pub app_secret: String,
    /// Requests per second per appId; 0 turns the limit off.
    #[arg(long, default_value_t = 10)]
    pub rate_limit: u32,
    /// Calls per day per appId; 0 turns the quota off.
    #[arg(long, default_value_t = 50_000)]
    pub quota: u64,
    /// Longest visibility lag, seconds.
    #[arg(long, default_value_t = 300)]
    pub lag_secs: i64,
    /// Every n-th listing request moves the first project it served to "now".
    #[arg(long)]
    pub drift_every: Option<u64>,
    /// Per-mille of requests answered with a random transient fault.
    #[arg(long, default_value_t = 0)]
    pub fault_per_mille: u64,
    /// Per-mille of requests that hang for 30 s (past the client's read timeout).
    #[arg(long, default_value_t = 0)]
    pub hang_per_mille: u64,
    /// Also serve the fixture projects of fixtures/approval/.
    #[arg(long)]
    pub fixtures: bool,
    /// Also serve the licence library's simulator here (appId wsgs-km-sim, secret
    /// licence-sim-secret); its URL is the second line of stdout.
    #[arg(long)]
    pub licences_listen: Option<SocketAddr>,
    /// Also serve the power utility's simulator here (client kmsw-gateway, secret
    /// power-sim-secret, the interface's 5 calls per second); its URL is the next line of
    /// stdout.
    #[arg(long)]
    pub power_listen: Option<SocketAddr>,
    /// Power-origin applications the power simulator holds from the start: households,
    /// companies naming the approval simulator's projects (or unknown ones, or none), a few
    /// sites outside Kunming.
    #[arg(long, default_value_t = 0, requires = "power_listen")]
    pub power_applications: u64,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let mut cfg = SimConfig::contract_defaults(args.seed, args.projects, now, args.days);
    cfg.generator.end = now - Duration::minutes(args.end_minutes_ago);
    cfg.app_id = args.app_id;
    cfg.app_secret = args.app_secret;
    cfg.rate_limit_per_sec = (args.rate_limit > 0).then_some(args.rate_limit);
    cfg.daily_quota = (args.quota > 0).then_some(args.quota);
    cfg.lag = Duration::seconds(args.lag_secs.max(0));
    cfg.drift_every = args.drift_every;
    cfg.random_fault_per_mille = args.fault_per_mille;
    cfg.random_hang_per_mille = args.hang_per_mille;
    if args.fixtures {
        cfg.fixtures = fixtures_at(now - Duration::days(args.days / 2)).map_err(anyhow::Error::msg)?;
    }
    let server = Simulator::new(cfg, Arc::new(SystemClock))
        .map_err(anyhow::Error::msg)?
        .serve(args.listen)
        .await?;
    // The first line of stdout is the base URL, for scripts and benchmarks to read.
    outln!("{}", server.base_url());
    let licence_server = match args.licences_listen {
        Some(addr) => {
            let l = shuiwu_licences::sim::LicenceSim::new(Default::default(), Arc::new(SystemClock))
                .serve(addr)
                .await?;
            outln!("{}", l.base_url());
            Some(l)
        }
        None => None,
    };
    let power_server = match args.power_listen {
        Some(addr) => {
            let p = shuiwu_power::sim::PowerSim::new(
                shuiwu_power::sim::PowerSimConfig::contract_defaults(args.seed),
                Arc::new(SystemClock),
            )
            .serve(addr)
            .await?;
            let generator = &server.sim.config().generator;
            let known: Vec<String> = (0..generator.count.min(1_000))
                .map(|i| generator.xmdm(i))
                .collect();
            p.sim.insert_batch(shuiwu_power::sim::generate::power_origin(
                args.seed,
                args.power_applications,
                &known,
                now,
                args.days,
            ));
            outln!("{}", p.base_url());
            Some(p)
        }
        None => None,
    };
    tracing::info!(url = %server.base_url(), projects = args.projects, "approval simulator listening");
    let token = CancellationToken::new();
    super::daemon::shutdown_on_signals(token.clone());
    token.cancelled().await;
    drop(licence_server);
    if let Some(p) = power_server {
        tracing::info!(stats = ?p.sim.stats(), "power simulator stopped");
    }
    let stats = server.sim.stats();
    tracing::info!(?stats, "approval simulator stopped");
    Ok(ExitCode::SUCCESS)
}
