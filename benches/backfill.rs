//! End-to-end backfill benchmark: listing, detail, mapping and durable commit of generated
//! projects from the approval simulator on loopback (its rate limit and quota off).
//!
//! ```text
//! cargo bench --bench backfill                      # 10,000 and 100,000 projects
//! cargo bench --bench backfill -- --projects 20000  # other sizes, comma-separated
//! ```
//!
//! Each size runs in a fresh child process, so the peak RSS reported (`VmHWM`) is that of one
//! backfill alone. The simulator runs as another process (`gateway simulate`), so its memory
//! and CPU are not counted as the gateway's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use gateway::config::SyncConfig;
use gateway::mapping::MappingSet;
use gateway::store::Store;
use gateway::sync::Syncer;
use shuiwu_approval::{ApprovalClient, ClientConfig, RetryPolicy, SignMethod};
use shuiwu_wire::{Secret, SystemClock, format_beijing};
use tokio_util::sync::CancellationToken;

const DAYS: i64 = 30;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let n: u64 = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--one N");
        one(n);
        return;
    }
    let sizes: Vec<u64> = args
        .iter()
        .position(|a| a == "--projects")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    println!(
        "{:>9}  {:>8}  {:>10}  {:>13}  {:>9}  {:>8}  {:>12}  {:>10}",
        "projects",
        "seconds",
        "projects/s",
        "peak RSS MiB",
        "listings",
        "details",
        "CPU ms/proj",
        "requests/s"
    );
    let me = std::env::current_exe().expect("the benchmark's own path");
    for n in sizes {
        let out = Command::new(&me)
            .arg("--one")
            .arg(n.to_string())
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (elapsed, cpu, report) = runtime.block_on(async {
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
