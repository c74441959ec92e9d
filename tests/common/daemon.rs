//! The real binary as a daemon: a simulator in this process, a configuration file, commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

[http]
# Any free port: tests run daemons side by side.
listen = "127.0.0.1:0"
"#,
        db = db.display(),
        url = server.base_url(),
        app_id = server.sim.config().app_id,
        start = format_beijing(Utc::now() - chrono::Duration::days(11)),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Gives the daemon of `config` (from [`write_config`]) a free loopback port for its HTTP
/// server, for tests that talk to it; the port.
pub fn listen_on_free_port(config: &Path) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(config, text).unwrap();
    port
}

/// One HTTP/1.0 request to the daemon on `port`: the status and the body, or `None` while it
/// does not answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string(),
    ))
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

/// Polls `ready` every few milliseconds until it holds; fails after `timeout`, or at once if
/// `running` (the process expected to make it true) has exited.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut running: Option<&mut Child>,
    mut ready: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !ready() {
        if let Some(child) = running.as_deref_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            panic!("the process ended ({status}) before {what}");
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How many rows `table` of the database at `db` has (0 while it cannot be read yet).
pub fn rows(db: &Path, table: &str) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_or(0, |n| n as u64)
}

/// Waits for `child` to exit; kills it and fails after `limit`.
pub fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a daemon as systemd does (SIGTERM) and asserts that it exits 0 within 20 seconds.
pub fn stop(child: &mut Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(exit_within(child, Duration::from_secs(20)).code(), Some(0));
}
