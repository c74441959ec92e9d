//! Console page times with a large store: a database backfilled from the simulator (100,000
//! generated projects by default), a few hundred stages started a month ago through the admin
//! API (so the deadlines board has running, overdue stages, and the report completed ones),
//! then every console page requested over loopback from the running daemon (the release
//! binary), signed in as an operator; last, the report requested 20 times, each after a
//! record changed (so that it is computed again every time).
//!
//! ```text
//! cargo bench --bench console                         # 100,000 projects
//! cargo bench --bench console -- --projects 20000
//! cargo bench --bench console -- --keep /tmp/console   # keep the database for profiling
//! ```
//!
//! Prints, per page, the answer's size, the first request's time (the report's first request
//! computes it; the others find it kept while nothing changed) and the median, 95th
//! percentile and slowest of 20 requests, or of those that fit in 10 seconds for a slow page
//! (wall time from connecting to the last byte read).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use shuiwu_wire::format_beijing;

mod common;

use common::SECRET;

const PASSWORD: &str = "bench-console-password";
/// Stages started a month ago, through the admin API.
const STARTED: usize = 400;
const REPEATS: usize = 20;

fn main() {
    let projects = common::projects(100_000);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = common::simulator(&runtime, projects);
    let temp = tempfile::tempdir().expect("a temporary directory");
    // `--keep DIR` leaves the database and configuration there.
    let keep = common::keep();
    let dir = keep.as_deref().unwrap_or(temp.path());
    std::fs::create_dir_all(dir).expect("the benchmark's directory");
    let db = dir.join("bench.db");
    let config = dir.join("bench.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let accounts = dir.join("console-accounts");
    let tokens = dir.join("admin-tokens");
    let line = output(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["console-account", "bench", "--role", "operator"])
            .stdin(Stdio::piped()),
        PASSWORD,
    );
    std::fs::write(&accounts, line).expect("the accounts file");
    let made = output(
        Command::new(env!("CARGO_BIN_EXE_gateway")).args(["admin-token", "bench"]),
        "",
    );
    let token = made.lines().nth(1).expect("the token").trim().to_string();
    let token_line = made
        .lines()
        .find(|l| l.starts_with("bench sha256:"))
        .expect("the line");
    std::fs::write(&tokens, format!("{token_line}\n")).expect("the tokens file");
    let text = format!(
        "[store]\npath = \"{}\"\n\n[approval]\nbase_url = \"{}\"\napp_id = \"{}\"\nsign_method = \"HMAC-SHA256\"\nrate_per_second = 0\n\n[sync]\nstart = \"{}\"\nconcurrency = 8\ninterval_secs = 3600\n\n[http]\nlisten = \"127.0.0.1:{port}\"\nconsole_accounts_file = \"{}\"\nadmin_tokens_file = \"{}\"\n",
        db.display(),
        server.base_url(),
        server.sim.config().app_id,
        format_beijing(Utc::now() - chrono::Duration::days(31)),
        accounts.display(),
        tokens.display(),
    );
    std::fs::write(&config, &text).expect("the configuration");

    let started = Instant::now();
    let status = gateway(&config, &["sync", "--once"])
        .status()
        .expect("the backfill");
    assert!(status.success(), "the backfill failed");
    let records: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT count(*) FROM records", [], |r| r.get(0)))
        .expect("count the records");
    println!(
        "backfilled {projects} projects into {records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut daemon = Daemon(gateway(&config, &["run"]).spawn().expect("the daemon"));
    let ready = Instant::now();
    while get(port, "/healthz", "").0 != 200 {
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "the daemon did not answer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stages started a month ago: the board has overdue stages, the records new versions.
    let timed: Vec<String> = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.prepare(&format!(
                "SELECT r.id FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                 WHERE json_extract(v.content, '$.decisions.stages.state') = 'limits' ORDER BY r.id LIMIT {}",
                STARTED + REPEATS
            ))?
            .query_map([], |r| r.get(0))?
            .collect()
        })
        .expect("records with time limits");
    // The first STARTED accepted a month ago, half of them surveyed since (the report counts
    // their working days); the others are accepted one before each request of "report after
    // a change".
    let (timed, fresh) = timed.split_at(STARTED.min(timed.len()));
    let ago = |days: i64| (Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    for (i, id) in timed.iter().enumerate() {
        event(port, &token, id, r#"{"kind": "accepted"}"#, &ago(30));
        if i % 2 == 0 {
            event(
                port,
                &token,
                id,
                r#"{"kind": "survey_done", "external_pipe_m": "10"}"#,
                &ago(25),
            );
        }
    }
    println!(
        "{} stages started a month ago, half of them surveyed",
        timed.len()
    );

    let session = sign_in(port);
    let record = timed.first().cloned().expect("a record");
    let (document, failure): (String, i64) = rusqlite::Connection::open(&db)
        .and_then(|c| {
            Ok((
                c.query_row(
                    "SELECT document_sha256 FROM record_versions WHERE record_id = ?1 ORDER BY version DESC LIMIT 1",
                    [&record],
                    |r| r.get(0),
                )?,
                c.query_row("SELECT coalesce(max(id), 0) FROM failures WHERE state = 'held'", [], |r| r.get(0))?,
            ))
        })
        .expect("a document and a failure");
    use chrono::Datelike;
    let today = Utc::now().date_naive();
    let quarter = format!("{}Q{}", today.year(), today.month0() / 3 + 1);
    let pages = [
        ("overview", "/console".to_string()),
        ("deadlines board", "/console/deadlines".to_string()),
        ("records, latest 200", "/console/records".to_string()),
        (
            "records, search by prefix",
            format!("/console/records?q={}", &record[..12]),
        ),
        ("record page", format!("/console/records/{record}")),
        (
            "field lineage",
            format!("/console/records/{record}/field?name=project.code"),
        ),
        (
            "decision",
            format!("/console/records/{record}/field?name=decisions.category"),
        ),
        (
            "raw document",
            format!("/console/documents/{document}?path=/data/XMDM"),
        ),
        ("failure queue", "/console/failures".to_string()),
        (
            "failure with replay preview",
            format!("/console/failures/{failure}"),
        ),
        (
            "report, this quarter",
            format!("/console/reports?quarter={quarter}"),
        ),
        (
            "report by manager",
            format!("/console/reports?quarter={quarter}&by=manager"),
        ),
        ("report CSV", format!("/console/reports.csv?quarter={quarter}")),
    ];
    println!("\n| page | bytes | requests | first | median | p95 | slowest |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, path) in pages {
        let mut times = Vec::with_capacity(REPEATS);
        let mut bytes = 0;
        let page_started = Instant::now();
        // 20 requests, or as many as fit in 10 seconds (at least 3) for a slow page.
        while times.len() < REPEATS && (times.len() < 3 || page_started.elapsed() < Duration::from_secs(10)) {
            let started = Instant::now();
            let (status, body) = get(port, &path, &session);
            times.push(started.elapsed());
            assert_eq!(status, 200, "{path}: {body}");
            bytes = body.len();
        }
        row(name, bytes, times);
    }
    // A report computed again: a record accepted (a new version) before each request.
    let path = format!("/console/reports?quarter={quarter}");
    let mut times = Vec::with_capacity(fresh.len());
    let mut bytes = 0;
    for id in fresh {
        event(
            port,
            &token,
            id,
            r#"{"kind": "accepted"}"#,
            &Utc::now().to_rfc3339(),
        );
        let started = Instant::now();
        let (status, body) = get(port, &path, &session);
        times.push(started.elapsed());
        assert_eq!(status, 200, "{path}: {body}");
        bytes = body.len();
    }
    if !times.is_empty() {
        row("report after a change", bytes, times);
    }
    daemon.stop();
}

/// One table row: the first request's time, then the median, 95th percentile and slowest.
fn row(name: &str, bytes: usize, mut times: Vec<Duration>) {
    let first = times[0];
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = times.len();
    println!(
        "| {name} | {bytes} | {n} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(first),
        ms(times[n / 2]),
        ms(times[(n * 95).div_ceil(100) - 1]),
        ms(times[n - 1])
    );
}

/// A stage event through the admin API, at `at`.
fn event(port: u16, token: &str, id: &str, action: &str, at: &str) {
    let body = format!("{{\"action\": {action}, \"at\": \"{at}\", \"override_reason\": \"bench\"}}");
    let (status, answer) = send(
        port,
        &format!(
            "POST /admin/v1/records/{id}/events HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{id}: {answer}");
}

/// The daemon; stopped (SIGTERM) when the benchmark ends or fails.
struct Daemon(Child);

impl Daemon {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn gateway(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gateway"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("GATEWAY_APPROVAL_APP_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    c
}

/// A command's standard output, `input` written to its standard input.
fn output(command: &mut Command, input: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the gateway");
    child
        .stdin
        .take()
        .expect("its input")
        .write_all(format!("{input}\n").as_bytes())
        .expect("write its input");
    let out = child.wait_with_output().expect("its output");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// One raw HTTP/1.0 exchange: the status and everything after the head.
fn send(port: u16, request: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn get(port: u16, path: &str, cookie: &str) -> (u16, String) {
    send(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"),
    )
}

/// Signs in as the bench operator; the session cookie.
fn sign_in(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /console/sign-in HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let sign_in_cookie = cookie(&text, "gw_sign_in");
    let at = text.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    let csrf = &text[at..at + 64];
    let body = format!("name=bench&password={PASSWORD}&csrf={csrf}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "POST /console/sign-in HTTP/1.0\r\nHost: localhost\r\nCookie: {sign_in_cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    cookie(&text, "gw_session")
}

/// `name=value` of a `Set-Cookie` header.
fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find(|l| l.starts_with(&format!("{name}=")))
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_string()
}
