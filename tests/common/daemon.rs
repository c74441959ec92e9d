//! The real binary as a daemon: a simulator in this process, a configuration file, commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::Utc;
use shuiwu_approval::sim::{SimConfig, SimServer, Simulator};
use shuiwu_wire::{SystemClock, format_beijing};

pub const SECRET: &str = "crash-test-secret";

pub async fn simulator(projects: u64) -> SimServer {
    let mut cfg = SimConfig::contract_defaults(7, projects, Utc::now(), 10);
    cfg.generator.end = Utc::now() - chrono::Duration::minutes(10);
    cfg.app_secret = SECRET.into();
    cfg.rate_limit_per_sec = None;
    cfg.daily_quota = None;
    Simulator::new(cfg, Arc::new(SystemClock))
        .unwrap()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn write_config(dir: &Path, name: &str, server: &SimServer, interval_secs: u64) -> PathBuf {
    let db = dir.join(format!("{name}.db"));
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
[store]
path = "{db}"

[approval]
base_url = "{url}"
app_id = "{app_id}"
sign_method = "HMAC-SHA256"
rate_per_second = 0

[sync]
start = "{start}"
interval_secs = {interval_secs}
concurrency = 4
"#,
        db = db.display(),
        url = server.base_url(),
        app_id = server.sim.config().app_id,
        start = format_beijing(Utc::now() - chrono::Duration::days(11)),
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn gateway(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("GATEWAY_APPROVAL_APP_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}
