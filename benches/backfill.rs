//! End-to-end backfill benchmarks: listing, detail, mapping and durable commit of generated
//! projects from the simulators on loopback.
//!
//! ```text
//! cargo bench --bench backfill                               # throughput: 10,000 and 100,000
//! cargo bench --bench backfill -- --projects 20000           # other sizes, comma-separated
//! cargo bench --bench backfill -- --mode rate                # rate limit on, moderate faults
//! cargo bench --bench backfill -- --mode licences            # with the zero-materials check
//! cargo bench --bench backfill -- --mode heavy               # … and a licence library in trouble
//! cargo bench --bench backfill -- --mode power               # deliveries to the power side
//! ```
//!
//! * `throughput`: the approval simulator with its rate limit and quota off, as its own
//!   process (`gateway simulate`), so that its memory and CPU are not counted as the
//!   gateway's; the gateway at its default settings. Prints projects/s, CPU per project and
//!   peak RSS.
//! * `rate`: the contract's limits (10 requests/s per appId, the gateway configured for 8)
//!   and moderate faults (2 % of requests answered with a quick transient fault, 0.2 % hanging
//!   past the read timeout). Prints the request rate the simulator saw against the configured
//!   one.
//! * `licences`: the contract's limits, the licence library configured (4 requests/s), the
//!   zero-materials check beside the sync. Prints the approval platform's request rate over
//!   the whole pass (details and attachments) against the configured one, and the elapsed
//!   time against the busier platform's share.
//! * `heavy`: as `licences`, with the licence library under maintenance for 30 s every 3
//!   minutes, every token revoked every 2 minutes and 3 % of its calls failing at random.
//!   Passes run back to back until every record is checked; prints the passes, the faults
//!   met, and the time against what the licence side needs at its rate given that downtime
//!   (the calls it answered at 4/s, plus the maintenance windows).
//!
//! * `power`: the records of a backfill that ask for power, their joint applications
//!   delivered to the power utility's simulator at its contract limit (5 calls/s, the gateway
//!   configured for its default 4/s). Prints the calls the simulator saw per second over the
//!   delivery round against the configured rate, and the 429s.
//!
//! Each size runs in a fresh child process, so the peak RSS reported (`VmHWM`) is that of one
//! backfill alone; the configuration is the embedded defaults wherever a mode does not say
//! otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use gateway::app::Gateway;
use gateway::config::{Config, SyncConfig};
use gateway::mapping::MappingSet;
use gateway::store::Store;
use gateway::sync::Syncer;
use shuiwu_approval::sim::{SimConfig, SimServer, Simulator};
use shuiwu_approval::{ApprovalClient, ClientConfig, RetryPolicy, SignMethod};
use shuiwu_licences::sim::{LicenceSim, LicenceSimConfig, LicenceSimServer};
use shuiwu_power::sim::{PowerSim, PowerSimConfig};
use shuiwu_wire::{Secret, SystemClock, format_beijing};
use tokio_util::sync::CancellationToken;

// The `gateway` binary's allocator and settings: the backfill measured here allocates as the
// shipped daemon does.
gateway::use_jemalloc!();

const DAYS: i64 = 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Throughput,
    Rate,
    Licences,
    Heavy,
    Power,
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s {
            "throughput" => Mode::Throughput,
            "rate" => Mode::Rate,
            "licences" => Mode::Licences,
            "heavy" => Mode::Heavy,
            "power" => Mode::Power,
            other => panic!("unknown mode {other:?}: throughput, rate, licences, heavy or power"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::Rate => "rate",
            Mode::Licences => "licences",
            Mode::Heavy => "heavy",
            Mode::Power => "power",
        }
    }

    fn default_sizes(self) -> Vec<u64> {
        match self {
            Mode::Throughput => vec![10_000, 100_000],
            Mode::Rate => vec![1_000],
            Mode::Licences => vec![500],
            // Long enough for maintenance and revocations to come back.
            Mode::Heavy => vec![1_000],
            Mode::Power => vec![400],
        }
    }

    fn header(self) -> String {
        match self {
            Mode::Throughput => format!(
                "{:>9}  {:>8}  {:>10}  {:>13}  {:>9}  {:>8}  {:>12}  {:>10}",
                "projects",
                "seconds",
                "projects/s",
                "peak RSS MiB",
                "listings",
                "details",
                "CPU ms/proj",
                "requests/s"
            ),
            Mode::Rate => format!(
                "{:>9}  {:>8}  {:>9}  {:>10}  {:>11}  {:>7}  {:>7}  {:>6}",
                "projects", "seconds", "requests", "requests/s", "of 8/s", "faults", "429s", "hangs"
            ),
            Mode::Licences => format!(
                "{:>9}  {:>8}  {:>9}  {:>10}  {:>8}  {:>9}  {:>9}  {:>12}  {:>10}",
                "projects",
                "seconds",
                "approval",
                "approval/s",
                "of 8/s",
                "licences",
                "checked",
                "bound (s)",
                "of bound"
            ),
            Mode::Power => format!(
                "{:>9}  {:>8}  {:>7}  {:>8}  {:>7}  {:>7}  {:>6}",
                "projects", "creates", "calls", "seconds", "calls/s", "of 4/s", "429s"
            ),
            Mode::Heavy => format!(
                "{:>9}  {:>6}  {:>8}  {:>9}  {:>7}  {:>12}  {:>9}  {:>8}  {:>9}",
                "projects",
                "passes",
                "seconds",
                "licences",
                "faults",
                "maintenance",
                "revoked",
                "checked",
                "of bound"
            ),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mode = value("--mode").map_or(Mode::Throughput, |m| Mode::parse(&m));
    if let Some(n) = value("--one") {
        let n: u64 = n.parse().expect("--one N");
        match mode {
            Mode::Throughput => one(n),
            Mode::Rate => limited(n, false),
            Mode::Licences => limited(n, true),
            Mode::Heavy => heavy(n),
            Mode::Power => power(n),
        }
        return;
    }
    let sizes: Vec<u64> = value("--projects")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| mode.default_sizes());
    println!("{}", mode.header());
    let me = std::env::current_exe().expect("the benchmark's own path");
    for n in sizes {
        let out = Command::new(&me)
            .args(["--mode", mode.name(), "--one", &n.to_string()])
            .output()
            .expect("run one size");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            panic!("backfill of {n} failed");
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!(
        "(machine: {} cores; {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The approval simulator at the contract's rate limit (no quota, no visibility lag), with
/// moderate faults if asked: 2 % quick transient faults and 0.2 % requests hanging for 30 s.
async fn contract_simulator(n: u64, now: chrono::DateTime<Utc>, moderate_faults: bool) -> SimServer {
    let mut sim = SimConfig::contract_defaults(9, n, now, DAYS);
    sim.lag = chrono::Duration::zero();
    sim.daily_quota = None;
    if moderate_faults {
        sim.random_fault_per_mille = 20;
        sim.random_hang_per_mille = 2;
    }
    Simulator::new(sim, Arc::new(SystemClock))
        .expect("simulator")
        .serve("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("serve")
}

/// A backfill against the contract's rate limit: with moderate faults (`rate`) or with the
/// licence library and the zero-materials check (`licences`).
fn limited(n: u64, licences: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime().block_on(async {
        let now = Utc::now();
        let server = contract_simulator(n, now, !licences).await;
        let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(SystemClock))
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve licences");
        let cfg = config(
            dir.path(),
            &server.base_url(),
            licences.then_some(&licence_server),
            now,
        );
        let gateway = Gateway::open_writer(&cfg, Arc::new(SystemClock)).expect("gateway");
        let started = Instant::now();
        let report = gateway
            .syncer
            .pass(&CancellationToken::new())
            .await
            .expect("pass");
        let elapsed = started.elapsed().as_secs_f64();
        let stats = server.sim.stats();
        let processed: u64 = report.outcomes.values().sum();
        assert!(
            processed >= n,
            "every generated project is processed: {:?} ({:?})",
            report.outcomes,
            report.end
        );
        let configured = f64::from(cfg.approval.rate_per_second);
        if licences {
            assert_eq!(report.materials_unchecked, 0, "{:?}", report.materials_stopped);
            let approval = stats.lists + stats.details + stats.attachments;
            let licence_calls = licence_server.sim.stats().requests;
            let licence_rate = f64::from(cfg.licences.as_ref().map_or(4, |l| l.rate_per_second));
            let bound = (stats.requests as f64 / configured).max(licence_calls as f64 / licence_rate);
            println!(
                "{:>9}  {:>8.1}  {:>9}  {:>10.2}  {:>7.0}%  {:>9}  {:>9}  {:>12.1}  {:>9.0}%",
                n,
                elapsed,
                approval,
                approval as f64 / elapsed,
                100.0 * approval as f64 / elapsed / configured,
                licence_calls,
                report.materials_checked,
                bound,
                100.0 * bound / elapsed,
            );
        } else {
            println!(
                "{:>9}  {:>8.1}  {:>9}  {:>10.2}  {:>10.0}%  {:>7}  {:>7}  {:>6}",
                n,
                elapsed,
                stats.requests,
                stats.requests as f64 / elapsed,
                100.0 * stats.requests as f64 / elapsed / configured,
                stats.faults_injected,
                stats.rate_limited,
                stats.hangs,
            );
        }
    });
}

fn one(n: u64) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--log-level",
            "error",
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--quota",
            "0",
        ])
        .args([
            "--lag-secs",
            "0",
            "--seed",
            "9",
            "--days",
            &DAYS.to_string(),
            "--projects",
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the simulator");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("simulator URL");
    let base_url = line.trim().to_string();

    let dir = tempfile::tempdir().expect("temp dir");
    let (elapsed, cpu, report) = runtime().block_on(async {
        let store = Arc::new(Store::open(&dir.path().join("bench.db")).expect("store"));
        let client = ClientConfig {
            base_url,
            app_id: "kmsw-sim".into(),
            app_secret: Secret::new("sim-secret"),
            sign_method: SignMethod::HmacSha256,
            rate_per_second: 0,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(60),
            max_document_bytes: shuiwu_approval::default_max_document_bytes(),
            daily_quota: None,
            retry: RetryPolicy::default(),
        };
        let client = Arc::new(ApprovalClient::new(client, Arc::new(SystemClock)).expect("client"));
        let mapping = MappingSet::load(None)
            .expect("mappings")
            .get("approval.project")
            .expect("mapping");
        // The default settings, as `gateway sync --once` runs them.
        let cfg = SyncConfig {
            start: format_beijing(Utc::now() - chrono::Duration::days(DAYS + 1)),
            ..SyncConfig::default()
        };
        let policies = Arc::new(gateway::policy::Rules::load(None).expect("rules"));
        let syncer = Syncer::new(client, store, mapping, policies, cfg, Arc::new(SystemClock));
        let started = Instant::now();
        let cpu_before = cpu_time();
        let report = syncer.pass(&CancellationToken::new()).await.expect("pass");
        (started.elapsed(), cpu_time() - cpu_before, report)
    });
    let _ = sim.kill();
    let _ = sim.wait();
    let processed: u64 = report.outcomes.values().sum();
    assert_eq!(
        processed, n,
        "every generated project is processed once: {:?}",
        report.outcomes
    );
    let requests = report.list_requests + report.details_fetched;
    println!(
        "{:>9}  {:>8.2}  {:>10.0}  {:>13.1}  {:>9}  {:>8}  {:>12.3}  {:>10.0}",
        n,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        peak_rss_kib() as f64 / 1024.0,
        report.list_requests,
        report.details_fetched,
        cpu.as_secs_f64() * 1000.0 / n as f64,
        requests as f64 / elapsed.as_secs_f64(),
    );
}

/// The embedded defaults (rate 8/s, concurrency 8, …) but for the addresses, the database in
/// `dir` and a start before the simulators' first project; the licence library if given.
fn config(
    dir: &std::path::Path,
    approval: &str,
    licences: Option<&LicenceSimServer>,
    now: chrono::DateTime<Utc>,
) -> Config {
    let licence_section = licences.map_or(String::new(), |l| {
        format!(
            "[licences]\nbase_url = \"{}\"\napp_id = \"{}\"\n",
            l.base_url(),
            l.sim.config().app_id
        )
    });
    let text = format!(
        "[store]\npath = \"{}\"\n[approval]\nbase_url = \"{approval}\"\napp_id = \"kmsw-sim\"\n{licence_section}[sync]\nstart = \"{}\"\n",
        dir.join("bench.db").display(),
        format_beijing(now - chrono::Duration::days(DAYS + 1)),
    );
    let licence_secret = licences.map(|l| l.sim.config().app_secret.clone());
    Config::parse("bench.toml", &text, |name| match name {
        "GATEWAY_APPROVAL_APP_SECRET" => Some("sim-secret".into()),
        "GATEWAY_LICENCES_APP_SECRET" => licence_secret.clone(),
        _ => None,
    })
    .expect("configuration")
}

/// A backfill without limits, then the delivery round of its joint applications against the
/// power simulator at the interface's limit.
fn power(n: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime().block_on(async {
        let now = Utc::now();
        let mut sim = SimConfig::contract_defaults(9, n, now, DAYS);
        sim.lag = chrono::Duration::zero();
        sim.daily_quota = None;
        sim.rate_limit_per_sec = None;
        let server = Simulator::new(sim, Arc::new(SystemClock))
            .expect("simulator")
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve");
        let power = PowerSim::new(PowerSimConfig::contract_defaults(9), Arc::new(SystemClock))
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve the power side");
        let text = format!(
            "[store]\npath = \"{}\"\n[approval]\nbase_url = \"{}\"\napp_id = \"kmsw-sim\"\nrate_per_second = 0\n[power]\nbase_url = \"{}\"\nclient_id = \"{}\"\n[sync]\nstart = \"{}\"\n",
            dir.path().join("bench.db").display(),
            server.base_url(),
            power.base_url(),
            power.sim.config().client_id,
            format_beijing(now - chrono::Duration::days(DAYS + 1)),
        );
        let secret = power.sim.config().client_secret.clone();
        let cfg = Config::parse("bench.toml", &text, |name| match name {
            "GATEWAY_APPROVAL_APP_SECRET" => Some("sim-secret".into()),
            "GATEWAY_POWER_CLIENT_SECRET" => Some(secret.clone()),
            _ => None,
        })
        .expect("configuration");
        let gateway = Gateway::open_writer(&cfg, Arc::new(SystemClock)).expect("gateway");
        gateway.syncer.pass(&CancellationToken::new()).await.expect("pass");
        let deliverer = gateway.deliverer.clone().expect("[power] is configured");
        let started = Instant::now();
        let report = deliverer.round(&CancellationToken::new()).await.expect("round");
        let elapsed = started.elapsed().as_secs_f64();
        let stats = power.sim.stats();
        assert_eq!(report.held + report.retried, 0, "{report:?}");
        let configured = f64::from(cfg.power.as_ref().map_or(4, |p| p.rate_per_second));
        println!(
            "{:>9}  {:>8}  {:>7}  {:>8.1}  {:>7.2}  {:>6.0}%  {:>6}",
            n,
            stats.created,
            stats.requests,
            elapsed,
            stats.requests as f64 / elapsed,
            100.0 * stats.requests as f64 / elapsed / configured,
            stats.rate_limited,
        );
    });
}

/// Backfills with the zero-materials check while the licence library is in trouble, pass after
/// pass until every record is checked.
fn heavy(n: u64) {
    const MAINTENANCE_EVERY: Duration = Duration::from_secs(180);
    const MAINTENANCE_FOR: i64 = 30;
    const REVOKE_EVERY: Duration = Duration::from_secs(120);
    let dir = tempfile::tempdir().expect("temp dir");
    runtime().block_on(async {
        let now = Utc::now();
        let server = contract_simulator(n, now, false).await;
        let licence_cfg = LicenceSimConfig {
            random_fault_per_mille: 30,
            ..LicenceSimConfig::default()
        };
        let licence_server = LicenceSim::new(licence_cfg, Arc::new(SystemClock))
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("serve licences");
        // The trouble, on its own schedule: a maintenance window every three minutes (the
        // first one a minute in) and all tokens revoked every two.
        let troubles = {
            let sim = licence_server.sim.clone();
            tokio::spawn(async move {
                let (mut windows, mut revoked) = (0u64, 0u64);
                let started = tokio::time::Instant::now();
                let mut next_window = started + Duration::from_secs(60);
                let mut next_revoke = started + REVOKE_EVERY;
                loop {
                    tokio::time::sleep_until(next_window.min(next_revoke)).await;
                    let at = tokio::time::Instant::now();
                    if at >= next_window {
                        sim.maintenance_until(Utc::now() + chrono::Duration::seconds(MAINTENANCE_FOR));
                        windows += 1;
                        next_window += MAINTENANCE_EVERY;
                    }
                    if at >= next_revoke {
                        sim.revoke_tokens();
                        revoked += 1;
                        next_revoke += REVOKE_EVERY;
                    }
                    COUNTS.store(windows << 32 | revoked, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let cfg = config(dir.path(), &server.base_url(), Some(&licence_server), now);
        let gateway = Gateway::open_writer(&cfg, Arc::new(SystemClock)).expect("gateway");
        let started = Instant::now();
        let (mut passes, mut checked) = (0u64, 0u64);
        loop {
            let report = gateway
                .syncer
                .pass(&CancellationToken::new())
                .await
                .expect("pass");
            passes += 1;
            checked += report.materials_checked;
            eprintln!(
                "pass {passes}: {} checked, {} left ({:?})",
                report.materials_checked, report.materials_unchecked, report.materials_stopped
            );
            if report.materials_unchecked == 0 || passes >= 10 {
                break;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        troubles.abort();
        let stats = licence_server.sim.stats();
        let counts = COUNTS.load(std::sync::atomic::Ordering::Relaxed);
        let rate = f64::from(cfg.licences.as_ref().map_or(4, |l| l.rate_per_second));
        // What the licence side needs at its rate, given the downtime met: every call that
        // was answered, at the configured rate, plus the maintenance windows.
        let windows = counts >> 32;
        let answered = stats.requests - stats.faults_injected;
        let bound = answered as f64 / rate + (windows as f64) * MAINTENANCE_FOR as f64;
        println!(
            "{:>9}  {:>6}  {:>8.1}  {:>9}  {:>7}  {:>12}  {:>9}  {:>8}  {:>8.0}%",
            n,
            passes,
            elapsed,
            stats.requests,
            stats.faults_injected,
            windows,
            counts & 0xffff_ffff,
            checked,
            100.0 * bound / elapsed,
        );
    });
}

/// Maintenance windows opened (high half) and token revocations (low half) so far.
static COUNTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// CPU time (user + system) this process has used so far, all threads.
fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15 (utime, stime) in clock ticks; the kernel's USER_HZ is
    // 100 on every Linux this runs on.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Peak resident set size of this process (`VmHWM`), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
