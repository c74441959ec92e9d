//! The console against the real daemon over HTTP: an account made by `gateway
//! console-account`, a wrong password and a forged form refused, a session cookie that scripts
//! and other sites cannot use, the overview with what the sync did, the deadlines board with an
//! overdue stage highlighted, the timeliness report with its chart and CSV download, and a
//! sign-out that ends the session. The password never reaches the log.
#![cfg(feature = "simulators")]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::daemon::{gateway, http, listen_on_free_port, simulator, stop, wait_for, write_config};

const PASSWORD: &str = "水务-correct-horse-42";

/// One HTTP/1.0 request: status, the response's head and its body.
fn request(
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
fn set_cookie(head: &str, name: &str) -> Option<(String, String)> {
    head.lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .find(|l| l.starts_with(&format!("{name}=")))
        .map(|l| (l.split(';').next().unwrap().to_string(), l.to_string()))
}

/// The hidden CSRF field of a page's form.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    body[at..at + 64].to_string()
}

fn sign_in_form(port: u16) -> (String, String) {
    let (status, head, body) = request(port, "GET", "/console/sign-in", &[], &[]);
    assert_eq!(status, 200);
    let (cookie, _) = set_cookie(&head, "gw_sign_in").expect("the sign-in form's cookie");
    (cookie, csrf(&body))
}

/// One value from the database.
fn query<T: rusqlite::types::FromSql>(db: &std::path::Path, sql: &str) -> T {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Signs in; the session cookie and the overview page.
fn sign_in(port: u16, name: &str, password: &str) -> (String, String) {
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
fn account(name: &str, role: &str, password: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_see_the_overview_and_sign_out() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "console", &server, 60);
    let port = listen_on_free_port(&config);
    // Accounts as an administrator makes them: the password on standard input.
    let line = account("王工", "operator", PASSWORD);
    assert!(
        line.starts_with("王工 operator $argon2id$") && !line.contains(PASSWORD),
        "{line}"
    );
    let viewer = account("李工", "viewer", "只看不改-viewer-2026");
    let accounts = dir.path().join("console-accounts");
    std::fs::write(&accounts, format!("# the console's people\n{line}{viewer}")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("listen = \"127.0.0.1:{port}\""),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nconsole_accounts_file = \"{}\"",
            accounts.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = gateway(&config, &["run"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for(
            "a finished pass",
            Duration::from_secs(60),
            Some(&mut child),
            || {
                http(port, "GET", "/metrics", None, None)
                    .is_some_and(|(_, body)| body.contains("gateway_passes_total{outcome=\"caught_up\"}"))
            },
        )
    });

    tokio::task::block_in_place(|| {
        // Without a session every page sends the browser to the sign-in form.
        let (status, head, _) = request(port, "GET", "/console", &[], &[]);
        assert_eq!(status, 303);
        assert!(
            head.to_lowercase().contains("location: /console/sign-in"),
            "{head}"
        );

        // A wrong password, and a form whose token is not the one the form was given.
        let (cookie, token) = sign_in_form(port);
        let (status, _, body) = request(
            port,
            "POST",
            "/console/sign-in",
            &[&cookie],
            &[
                ("name", "王工"),
                ("password", "wrong password!!"),
                ("csrf", &token),
            ],
        );
        assert_eq!(status, 401);
        assert!(body.contains("用户名或密码错误"));
        let (cookie, _) = sign_in_form(port);
        let forged = "0".repeat(64);
        let (status, _, _) = request(
            port,
            "POST",
            "/console/sign-in",
            &[&cookie],
            &[("name", "王工"), ("password", PASSWORD), ("csrf", &forged)],
        );
        assert_eq!(status, 403, "a forged sign-in form is refused");

        // Signed in: a session cookie scripts cannot read and other sites do not send.
        let (cookie, token) = sign_in_form(port);
        let (status, head, _) = request(
            port,
            "POST",
            "/console/sign-in",
            &[&cookie],
            &[("name", "王工"), ("password", PASSWORD), ("csrf", &token)],
        );
        assert_eq!(status, 303, "{head}");
        let (session, whole) = set_cookie(&head, "gw_session").expect("a session cookie");
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(whole.contains(attribute), "{whole}");
        }

        // The overview: who, the cursor's lag, the passes, the queues.
        let (status, _, page) = request(port, "GET", "/console", &[&session], &[]);
        assert_eq!(status, 200);
        for expected in [
            "概览",
            "王工 · operator",
            "id=\"lag\"",
            "<code>approval</code>",
            "caught_up",
            "id=\"failures\"",
        ] {
            assert!(page.contains(expected), "{expected} missing from the overview");
        }

        // The deadlines board: a stage accepted a month ago is overdue, and highlighted.
        let db = dir.path().join("console.db");
        let timed: String = query(
            &db,
            "SELECT r.id FROM records r JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
             WHERE json_extract(v.content, '$.decisions.stages.state') = 'limits'
               AND json_extract(v.content, '$.decisions.stages.stages[0].stage') = 'site_survey'
             ORDER BY r.id LIMIT 1",
        );
        let month_ago = shuiwu_wire::format_beijing(chrono::Utc::now() - chrono::Duration::days(30));
        let out = gateway(
            &config,
            &[
                "record", "event", &timed, "accepted", "--by", "王工", "--at", &month_ago,
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (status, _, board) = request(port, "GET", "/console/deadlines", &[&session], &[]);
        assert_eq!(status, 200);
        let row = board
            .lines()
            .find(|l| l.contains(&timed))
            .unwrap_or_else(|| panic!("{timed} is not on the board"));
        assert!(row.starts_with("<tr class=\"overdue\">"), "{row}");

        // The timeliness report of this quarter, its chart, and its CSV as a download.
        use chrono::Datelike;
        let today = gateway::worktime::date_of(chrono::Utc::now());
        let quarter = format!("{}Q{}", today.year(), today.month0() / 3 + 1);
        let (status, _, reports) = request(
            port,
            "GET",
            &format!("/console/reports?quarter={quarter}"),
            &[&session],
            &[],
        );
        assert_eq!(status, 200);
        assert!(
            reports.contains("<svg id=\"chart\"") && reports.contains("id=\"groups\""),
            "{reports}"
        );
        let records: i64 = query(&db, "SELECT count(*) FROM records");
        let (status, head, csv) = request(
            port,
            "GET",
            &format!("/console/reports.csv?quarter={quarter}&month="),
            &[&session],
            &[],
        );
        assert_eq!(status, 200);
        let head = head.to_lowercase();
        assert!(
            head.contains("content-type: text/csv") && head.contains("content-disposition: attachment"),
            "{head}"
        );
        assert!(csv.starts_with("dimension,group,applications,"), "{csv}");
        assert!(
            csv.lines()
                .any(|l| l.starts_with(&format!("total,all,{records},"))),
            "{csv}"
        );
        let (status, _, refused) = request(port, "GET", "/console/reports?quarter=2026Q5", &[&session], &[]);
        assert_eq!(status, 200);
        assert!(refused.contains("2026Q5"), "the bad period is named");

        // The failure queue: a held failure with its reason, raw document and replay preview;
        // dismissed by the operator with a reason, audited with the operator's name.
        let held: i64 = query(
            &db,
            "SELECT id FROM failures WHERE state = 'held' ORDER BY id LIMIT 1",
        );
        let (status, _, queue) = request(port, "GET", "/console/failures", &[&session], &[]);
        assert_eq!(status, 200);
        assert!(
            queue.contains(&format!("href=\"/console/failures/{held}\"")),
            "{queue}"
        );
        let item = format!("/console/failures/{held}");
        let (status, _, shown) = request(port, "GET", &item, &[&session], &[]);
        assert_eq!(status, 200);
        for expected in [
            "id=\"reason\"",
            "id=\"replay-outcome\"",
            "<pre id=\"raw\">",
            "id=\"dismiss\"",
        ] {
            assert!(
                shown.contains(expected),
                "{expected} missing from the failure page"
            );
        }
        let dismiss = format!("{item}/dismiss");
        let (status, _, _) = request(
            port,
            "POST",
            &dismiss,
            &[&session],
            &[("csrf", &forged), ("reason", "x")],
        );
        assert_eq!(status, 403, "a forged form");
        let (status, _, _) = request(
            port,
            "POST",
            &dismiss,
            &[&session],
            &[("csrf", &csrf(&shown)), ("reason", " ")],
        );
        assert_eq!(status, 400, "dismissing needs a reason");
        // A viewer sees the failure but has no form, and a write is refused.
        let (viewer_session, viewer_page) = sign_in(port, "李工", "只看不改-viewer-2026");
        let (_, _, viewer_shown) = request(port, "GET", &item, &[&viewer_session], &[]);
        assert!(viewer_shown.contains("id=\"reason\"") && !viewer_shown.contains("id=\"dismiss\""));
        let (status, _, _) = request(
            port,
            "POST",
            &dismiss,
            &[&viewer_session],
            &[("csrf", &csrf(&viewer_page)), ("reason", "看看")],
        );
        assert_eq!(status, 403, "a viewer cannot dismiss");
        let (status, _, _) = request(
            port,
            "POST",
            &dismiss,
            &[&session],
            &[("csrf", &csrf(&shown)), ("reason", "与审批平台核实：测试数据")],
        );
        assert_eq!(status, 303);
        let state: String = query(
            &db,
            &format!("SELECT state || ' by ' || resolved_by FROM failures WHERE id = {held}"),
        );
        assert_eq!(state, "dismissed by 王工");
        let audited: i64 = query(
            &db,
            "SELECT count(*) FROM audit_log WHERE actor = '王工' AND action = 'failure_dismissed'",
        );
        assert_eq!(audited, 1);

        // Signing out needs the session's token, then ends the session.
        let (status, _, _) = request(
            port,
            "POST",
            "/console/sign-out",
            &[&session],
            &[("csrf", &forged)],
        );
        assert_eq!(status, 403);
        let (status, _, _) = request(
            port,
            "POST",
            "/console/sign-out",
            &[&session],
            &[("csrf", &csrf(&page))],
        );
        assert_eq!(status, 303);
        let (status, _, _) = request(port, "GET", "/console", &[&session], &[]);
        assert_eq!(status, 303, "the session ended");
        for page in [
            "/console/deadlines",
            "/console/reports",
            "/console/reports.csv",
            "/console/failures",
        ] {
            let (status, _, _) = request(port, "GET", page, &[&session], &[]);
            assert_eq!(status, 303, "{page} without a session");
        }
    });

    tokio::task::block_in_place(|| stop(&mut child));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(PASSWORD), "the password reached the log");
    assert!(
        logged.contains("console sign-in refused") && logged.contains("console sign-in"),
        "{logged}"
    );
}
