//! Remap throughput: a database backfilled from the simulator, then the project mapping
//! changed so that every record's content changes (each project kind relabelled) and the
//! policy's free-connection diameter lowered, and `gateway remap` run on it as an operator
//! runs it (the release binary, its default batch of 1,000 records per transaction).
//!
//! ```text
//! cargo bench --bench remap                        # 20,000 projects
//! cargo bench --bench remap -- --projects 100000
//! cargo bench --bench remap -- --keep /tmp/remap     # keep the database for profiling
//! ```
//!
//! Prints, for the dry run, the applied remap and a dry run after it (which finds every record
//! as the files make it), records examined per second (wall
//! time of the whole command, start-up included), CPU per record (user + system of the
//! command) and the command's peak RSS.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chrono::Utc;
use shuiwu_wire::format_beijing;

mod common;

use common::SECRET;

fn main() {
    let projects = common::projects(20_000);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = common::simulator(&runtime, projects);
    let temp = tempfile::tempdir().expect("a temporary directory");
    // `--keep DIR` leaves the database and configuration there, for profiling a remap.
    let dir = common::keep().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("the benchmark's directory");
    let db = dir.join("bench.db");
    let config = dir.join("bench.toml");
    let mut text = format!(
        "[store]\npath = \"{}\"\n\n[approval]\nbase_url = \"{}\"\napp_id = \"{}\"\nsign_method = \"HMAC-SHA256\"\nrate_per_second = 0\n\n[sync]\nstart = \"{}\"\nconcurrency = 8\n",
        db.display(),
        server.base_url(),
        server.sim.config().app_id,
        format_beijing(Utc::now() - chrono::Duration::days(31)),
    );
    std::fs::write(&config, &text).expect("the configuration");
    let started = Instant::now();
    let (ok, _, _) = gateway(&config, &["sync", "--once"]);
    assert!(ok, "the backfill failed");
    println!(
        "backfilled {projects} projects in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every record changes: each project kind relabelled, fewer connections free.
    let maps = dir.join("maps");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    std::fs::create_dir_all(maps.join("approval")).expect("maps/approval");
    std::fs::create_dir_all(maps.join("policy")).expect("maps/policy");
    let project = std::fs::read_to_string(root.join("approval/project.toml"))
        .expect("the project mapping")
        .replace(r#""01" = "房屋建筑""#, r#""01" = "房屋建筑工程""#)
        .replace(r#""02" = "市政基础设施""#, r#""02" = "市政基础设施工程""#)
        .replace(r#""03" = "交通水利等其他""#, r#""03" = "交通水利等其他工程""#);
    std::fs::write(maps.join("approval/project.toml"), project).expect("write the mapping");
    let policy = std::fs::read_to_string(root.join("policy/2022.toml"))
        .expect("the policy")
        .replace("max_diameter_dn = 40", "max_diameter_dn = 25");
    std::fs::write(maps.join("policy/2022.toml"), policy).expect("write the policy");
    text.push_str(&format!("\n[mappings]\ndir = \"{}\"\n", maps.display()));
    std::fs::write(&config, &text).expect("the configuration");
    let records = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0)))
        .expect("count the records") as f64;

    println!("| remap | records | seconds | records/s | CPU per record | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, args) in [
        ("dry run, every record changes", vec!["remap", "--dry-run"]),
        ("applied, every record changes", vec!["remap", "--by", "bench"]),
        ("dry run again, nothing changes", vec!["remap", "--dry-run"]),
    ] {
        let started = Instant::now();
        let (ok, cpu, rss) = gateway(&config, &args);
        let secs = started.elapsed().as_secs_f64();
        assert!(ok, "{name} failed");
        println!(
            "| {name} | {records:.0} | {secs:.2} | {:.0} | {:.3} ms | {:.1} MiB |",
            records / secs,
            cpu * 1000.0 / records,
            rss as f64 / 1024.0
        );
    }
}

/// Runs the gateway binary; whether it succeeded, its CPU seconds (user + system) and its peak
/// RSS in KiB (`VmHWM`, read while it runs).
fn gateway(config: &Path, args: &[&str]) -> (bool, f64, u64) {
    let before = children_cpu();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("GATEWAY_APPROVAL_APP_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the gateway");
    let mut peak = 0;
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().expect("wait for the gateway") {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (status.success(), children_cpu() - before, peak)
}

/// The CPU seconds (user + system) of every child waited for so far: `cutime` and `cstime`
/// of `/proc/self/stat`, in clock ticks of 1/100 s.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after the last ')';
    // cutime and cstime are the 16th and 17th fields of the line, the 14th and 15th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [13, 14]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
