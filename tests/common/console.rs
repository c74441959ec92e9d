//! The console's test helpers: raw HTTP/1.0 requests with cookies and forms, sign-in, accounts
//! made by `gateway console-account`, and a daemon with a console.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use shuiwu_approval::sim::SimServer;

use super::daemon::{gateway, http, listen_on_free_port, wait_for, write_config};

pub const PASSWORD: &str = "水务-correct-horse-42";
pub const VIEWER_PASSWORD: &str = "只看不改-viewer-2026";
pub const AUDITOR_PASSWORD: &str = "审计-auditor-2026-xyz";

/// One HTTP/1.0 request: status, the response's head and its body.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    cookies: &[&str],
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    if !cookies.is_empty() {
        req.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// `name=value` of the `Set-Cookie` header for `name`, and the whole header line.
pub fn set_cookie(head: &str, name: &str) -> Option<(String, String)> {
    head.lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find(|l| l.starts_with(&format!("{name}=")))
        .map(|l| (l.split(';').next().unwrap().to_string(), l.to_string()))
}

/// The hidden CSRF field of a page's form.
pub fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    body[at..at + 64].to_string()
}

pub fn sign_in_form(port: u16) -> (String, String) {
    let (status, head, body) = request(port, "GET", "/console/sign-in", &[], &[]);
    assert_eq!(status, 200);
    let (cookie, _) = set_cookie(&head, "gw_sign_in").expect("the sign-in form's cookie");
    (cookie, csrf(&body))
}

/// One value from the database.
pub fn query<T: rusqlite::types::FromSql>(db: &std::path::Path, sql: &str) -> T {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Signs in; the session cookie and the overview page.
pub fn sign_in(port: u16, name: &str, password: &str) -> (String, String) {
    let (cookie, token) = sign_in_form(port);
    let (status, head, _) = request(
        port,
        "POST",
        "/console/sign-in",
        &[&cookie],
        &[("name", name), ("password", password), ("csrf", &token)],
    );
    assert_eq!(status, 303, "{head}");
    let (session, _) = set_cookie(&head, "gw_session").expect("a session cookie");
    let (status, _, page) = request(port, "GET", "/console", &[&session], &[]);
    assert_eq!(status, 200);
    (session, page)
}

/// `gateway console-account NAME --role ROLE` with `password` on standard input: the line.
pub fn account(name: &str, role: &str, password: &str) -> String {
    let mut maker = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["console-account", name, "--role", role])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    maker
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = maker.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// A daemon with a console: its accounts (an operator 王工 with [`PASSWORD`], a viewer 李工
/// and an auditor 审计员, passwords [`VIEWER_PASSWORD`] and [`AUDITOR_PASSWORD`]) in a file
/// the configuration names. Returns the configuration, the port, the daemon (its log in
/// `daemon.log` in `dir`) once its first pass has finished.
pub fn start(dir: &Path, server: &SimServer) -> (PathBuf, u16, Child) {
    let (config, port) = configure(dir, server);
    let child = run(dir, &config, port);
    (config, port, child)
}

/// The configuration of a daemon with a console, and its port (see [`start`]).
pub fn configure(dir: &Path, server: &SimServer) -> (PathBuf, u16) {
    let config = write_config(dir, "console", server, 60);
    let port = listen_on_free_port(&config);
    // Accounts as an administrator makes them: the password on standard input.
    let line = account("王工", "operator", PASSWORD);
    assert!(
        line.starts_with("王工 operator $argon2id$") && !line.contains(PASSWORD),
        "{line}"
    );
    let viewer = account("李工", "viewer", VIEWER_PASSWORD);
    let auditor = account("审计员", "auditor", AUDITOR_PASSWORD);
    let accounts = dir.join("console-accounts");
    std::fs::write(
        &accounts,
        format!("# the console's people\n{line}{viewer}{auditor}"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("listen = \"127.0.0.1:{port}\""),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nconsole_accounts_file = \"{}\"",
            accounts.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    (config, port)
}

/// Starts the daemon of `config` (its log appended to `daemon.log` in `dir`) and waits for a
/// finished pass.
pub fn run(dir: &Path, config: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let mut child = gateway(config, &["run"])
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    // `/readyz` is not ready in December without next year's calendar: wait on a finished pass.
    wait_for(
        "a finished pass",
        Duration::from_secs(60),
        Some(&mut child),
        || {
            http(port, "GET", "/metrics", None, None)
                .is_some_and(|(_, body)| body.contains("gateway_passes_total{outcome=\"caught_up\"}"))
        },
    );
    child
}

/// A record whose first stage is the site survey, accepted 30 days ago by 王工 through `gateway
/// record event`: overdue now. Its id.
pub fn overdue_stage(config: &Path, db: &Path) -> String {
    let id: String = query(
        db,
        "SELECT r.id FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
         WHERE json_extract(v.content, '$.decisions.stages.state') = 'limits'
           AND json_extract(v.content, '$.decisions.stages.stages[0].stage') = 'site_survey'
         ORDER BY r.id LIMIT 1",
    );
    let month_ago = shuiwu_wire::format_beijing(chrono::Utc::now() - chrono::Duration::days(30));
    let out = gateway(
        config,
        &[
            "record", "event", &id, "accepted", "--by", "王工", "--at", &month_ago,
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    id
}
