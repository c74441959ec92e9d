//! The console against the real daemon over HTTP: an account made by `gateway
//! console-account`, a wrong password and a forged form refused, a session cookie that scripts
//! and other sites cannot use, the overview with what the sync did, the deadlines board with an
//! overdue stage highlighted, the timeliness report with its chart and CSV download, and a
//! sign-out that ends the session. The password never reaches the log.
#![cfg(feature = "simulators")]

mod common;

use common::console::{
    AUDITOR_PASSWORD, PASSWORD, VIEWER_PASSWORD, csrf, overdue_stage, query, request, set_cookie, sign_in,
    sign_in_form, start,
};
use common::daemon::{simulator, stop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_see_the_overview_and_sign_out() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, port, mut child) = tokio::task::block_in_place(|| start(dir.path(), &server));
    let log = dir.path().join("daemon.log");
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
        let timed = overdue_stage(&config, &db);
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
        let (viewer_session, viewer_page) = sign_in(port, "李工", VIEWER_PASSWORD);
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

/// The value of an `href` that follows `marker` in a page.
fn href_after(page: &str, marker: &str) -> String {
    let at = page.find(marker).unwrap_or_else(|| panic!("{marker} missing"));
    let rest = &page[at..];
    let start = rest.find("href=\"").unwrap() + "href=\"".len();
    rest[start..start + rest[start..].find('"').unwrap()].replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_to_its_raw_bytes_with_reveal_export_events_and_bulk_replay_audited() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let (_config, port, mut child) = tokio::task::block_in_place(|| start(dir.path(), &server));
    let db = dir.path().join("console.db");
    let audited = |actor: &str, action: &str| -> i64 {
        query(
            &db,
            &format!("SELECT count(*) FROM audit_log WHERE actor = '{actor}' AND action = '{action}'"),
        )
    };

    tokio::task::block_in_place(|| {
        // A record with a contact phone, found by its code's prefix.
        let (id, phone): (String, String) = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT r.id, json_extract(v.content, '$.contact.phone') FROM records r
                 JOIN record_versions v ON v.record_id = r.id AND v.version = r.current_version
                 WHERE r.source = 'approval' AND json_extract(v.content, '$.contact.phone') IS NOT NULL
                 ORDER BY r.id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(phone.len() >= 11, "{phone}");
        let (session, _) = sign_in(port, "王工", PASSWORD);
        let (status, _, found) = request(
            port,
            "GET",
            &format!("/console/records?q={}", &id[..14]),
            &[&session],
            &[],
        );
        assert_eq!(status, 200);
        assert!(
            found.contains(&format!("href=\"/console/records/{id}\"")),
            "{found}"
        );

        // The record page: masked, fields × versions, decisions with their rules, both
        // utilities' statuses; an operator has the stage event form and no reveal form.
        let path = format!("/console/records/{id}");
        let (status, _, page) = request(port, "GET", &path, &[&session], &[]);
        assert_eq!(status, 200);
        for expected in [
            "id=\"fields\"",
            "id=\"decisions\"",
            "<code>decisions.category</code>",
            "rules checked in order",
            "id=\"water-state\"",
            "id=\"power-state\"",
            "id=\"masked\"",
            "id=\"event-form\"",
            "<code>contact.phone</code>",
        ] {
            assert!(page.contains(expected), "{expected} missing from the record page");
        }
        assert!(!page.contains(&phone), "the phone is masked");
        // The state is the record's as stored (a withdrawn record stays withdrawn whatever its
        // later versions say).
        let stored: String = query(&db, &format!("SELECT state FROM records WHERE id = '{id}'"));
        assert!(
            page.contains(&format!("<code id=\"record-state\">{stored}</code>")),
            "{stored}"
        );
        assert!(!page.contains("id=\"reveal\""), "an operator cannot reveal");
        let token = csrf(&page);

        // A stage event from the page, audited with the operator's name.
        let (status, _, _) = request(
            port,
            "POST",
            &format!("{path}/events"),
            &[&session],
            &[("csrf", &token), ("kind", "paused")],
        );
        assert_eq!(status, 400, "a pause needs its reason");
        let (status, head, _) = request(
            port,
            "POST",
            &format!("{path}/events"),
            &[&session],
            &[
                ("csrf", &token),
                ("kind", "accepted"),
                ("override_reason", "现场核实"),
            ],
        );
        assert_eq!(status, 303, "{head}");
        let by: String = query(
            &db,
            &format!("SELECT by FROM operator_actions WHERE record_id = '{id}' ORDER BY id DESC LIMIT 1"),
        );
        assert_eq!(by, "王工");
        assert_eq!(audited("王工", "accepted"), 1);
        let (_, _, page) = request(port, "GET", &path, &[&session], &[]);
        assert!(
            page.contains("id=\"actions\"") && page.contains("&#34;accepted&#34;"),
            "{page}"
        );
        // A paused clock, from the page's form, shows on the board with its note.
        let (status, head, body) = request(
            port,
            "POST",
            &format!("{path}/events"),
            &[&session],
            &[
                ("csrf", &token),
                ("kind", "paused"),
                ("pause_reason", "road_excavation_permit"),
            ],
        );
        assert_eq!(status, 303, "{head}{body}");
        let (_, _, board) = request(port, "GET", "/console/deadlines", &[&session], &[]);
        let row = board
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{id} is not on the board"));
        assert!(row.contains("the clock is paused"), "{row}");

        // A field down to its bytes: the lineage page, then the document it names.
        let field = format!("{path}/field?name=contact.phone");
        assert!(
            page.contains(&format!("href=\"{field}\"")),
            "the field links to its lineage"
        );
        let (status, _, lineage) = request(port, "GET", &field, &[&session], &[]);
        assert_eq!(status, 200);
        assert!(
            lineage.contains("id=\"path\"") && lineage.contains("id=\"fetches\""),
            "{lineage}"
        );
        assert!(!lineage.contains(&phone), "the raw text is masked too");
        let document = href_after(&lineage, "id=\"document\"");
        let sha = document
            .trim_start_matches("/console/documents/")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let (status, _, shown) = request(port, "GET", &document, &[&session], &[]);
        assert_eq!(status, 200);
        assert!(
            shown.contains(&sha) && shown.contains("stored bytes hash to this name"),
            "{shown}"
        );
        assert!(shown.contains("id=\"at-path\""), "the pointer's value is shown");
        assert!(!shown.contains(&phone), "the document is masked");
        let (_, _, decision) = request(
            port,
            "GET",
            &format!("{path}/field?name=decisions.category"),
            &[&session],
            &[],
        );
        assert!(
            decision.contains("id=\"rule\"") && decision.contains("policy/2022.toml"),
            "{decision}"
        );

        // An operator may not reveal; an auditor may, with a reason, and it is audited.
        let (status, _, _) = request(
            port,
            "POST",
            &format!("{path}/reveal"),
            &[&session],
            &[("csrf", &token), ("reason", "x")],
        );
        assert_eq!(status, 403);
        let (auditor, overview) = sign_in(port, "审计员", AUDITOR_PASSWORD);
        let audit_token = csrf(&overview);
        let (status, _, _) = request(
            port,
            "POST",
            &format!("{path}/reveal"),
            &[&auditor],
            &[("csrf", &audit_token), ("reason", " ")],
        );
        assert_eq!(status, 400, "a reveal needs a reason");
        assert_eq!(audited("审计员", "personal_data_revealed"), 0);
        let (status, _, revealed) = request(
            port,
            "POST",
            &format!("{path}/reveal"),
            &[&auditor],
            &[("csrf", &audit_token), ("reason", "投诉核查 2026-118")],
        );
        assert_eq!(status, 200);
        assert!(revealed.contains(&phone) && revealed.contains("id=\"revealed\""));
        assert_eq!(audited("审计员", "personal_data_revealed"), 1);
        let detail: String = query(
            &db,
            "SELECT detail FROM audit_log WHERE action = 'personal_data_revealed'",
        );
        assert!(detail.contains("投诉核查 2026-118"), "{detail}");

        // The export: every version, masked unless asked, audited.
        let (status, head, body) = request(
            port,
            "POST",
            &format!("{path}/export"),
            &[&auditor],
            &[("csrf", &audit_token), ("reason", "年度审计")],
        );
        assert_eq!(status, 200);
        assert!(
            head.to_lowercase().contains("content-disposition: attachment"),
            "{head}"
        );
        let exported: serde_json::Value = serde_json::from_str(&body).unwrap();
        let versions: i64 = query(
            &db,
            &format!("SELECT count(*) FROM record_versions WHERE record_id = '{id}'"),
        );
        assert_eq!(exported["versions"].as_array().unwrap().len() as i64, versions);
        assert!(!body.contains(&phone), "masked unless asked");
        assert_eq!(audited("审计员", "record_exported"), 1);

        // The exact bytes, for an auditor with a reason; their hash is the document's name.
        let (status, _, _) = request(
            port,
            "POST",
            &format!("/console/documents/{sha}/raw"),
            &[&session],
            &[("csrf", &token), ("reason", "x")],
        );
        assert_eq!(status, 403, "an operator cannot take the raw bytes");
        let raw = raw_request(
            port,
            &format!("/console/documents/{sha}/raw"),
            &auditor,
            &audit_token,
            "原始报文核对",
        );
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&raw)), sha);
        assert_eq!(audited("审计员", "raw_document_exported"), 1);

        // Bulk replay by category: the preview first (writes nothing), then the replay.
        let (_, _, queue) = request(port, "GET", "/console/failures", &[&session], &[]);
        let preview = href_after(&queue, "id=\"categories\"");
        let category = url::form_urlencoded::parse(preview.split('?').nth(1).unwrap().as_bytes())
            .find(|(k, _)| k == "category")
            .unwrap()
            .1
            .to_string();
        let held: i64 = query(
            &db,
            &format!("SELECT count(*) FROM failures WHERE state = 'held' AND category = '{category}'"),
        );
        assert!(held > 0, "{category}");
        let entries: i64 = query(&db, "SELECT count(*) FROM audit_log");
        let (status, _, dry) = request(port, "GET", &preview, &[&session], &[]);
        assert_eq!(status, 200);
        assert_eq!(
            dry.matches("<tr><td><a href=\"/console/failures/").count() as i64,
            held,
            "{dry}"
        );
        assert!(dry.contains("id=\"bulk-replay\""));
        assert_eq!(
            query::<i64>(&db, "SELECT count(*) FROM audit_log"),
            entries,
            "a preview writes nothing"
        );
        let (viewer, viewer_page) = sign_in(port, "李工", VIEWER_PASSWORD);
        let (status, _, _) = request(
            port,
            "POST",
            "/console/failures/bulk",
            &[&viewer],
            &[("csrf", &csrf(&viewer_page)), ("category", &category)],
        );
        assert_eq!(status, 403, "a viewer cannot replay");
        let (status, _, done) = request(
            port,
            "POST",
            "/console/failures/bulk",
            &[&session],
            &[("csrf", &token), ("category", &category)],
        );
        assert_eq!(status, 200);
        assert!(done.contains("已执行"));
        assert_eq!(
            done.matches("<tr><td><a href=\"/console/failures/").count() as i64,
            held
        );

        // The report is computed once and kept while nothing it counts changes; a committed
        // change (a record's new version, as its report line has it) shows in the next answer.
        let csv_of = || {
            let (status, _, csv) = request(port, "GET", "/console/reports.csv", &[&session], &[]);
            assert_eq!(status, 200);
            csv
        };
        let (first, again) = (csv_of(), csv_of());
        assert_eq!(first, again);
        assert!(!first.contains("测试分公司"));
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE report_lines SET company = '测试分公司', version = version + 1 WHERE record_id = ?1",
                [&id],
            )
            .unwrap();
        assert!(
            csv_of().contains("company,测试分公司,1,"),
            "the change is counted"
        );

        // The report by customer manager.
        let (status, _, by_manager) = request(port, "GET", "/console/reports?by=manager", &[&session], &[]);
        assert_eq!(status, 200);
        assert!(by_manager.contains("<td>manager</td>") && !by_manager.contains("<td>company</td>"));
        assert!(by_manager.contains("<svg id=\"chart\""));
    });

    tokio::task::block_in_place(|| stop(&mut child));
    let logged = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(
        logged.contains("personal data revealed in the console"),
        "{logged}"
    );
}

/// The auditor's raw-bytes form, answered with the body's exact bytes.
fn raw_request(port: u16, path: &str, session: &str, token: &str, reason: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", token), ("reason", reason)])
        .finish();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nCookie: {session}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(bytes.starts_with(b"HTTP/1.0 200") || bytes.starts_with(b"HTTP/1.1 200"));
    bytes[at + 4..].to_vec()
}

#[test]
fn the_demo_serves_the_console_with_its_own_accounts() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["demo", "--projects", "40", "--console", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut address, mut password) = (None, None);
    while password.is_none() {
        let line = lines.next().expect("the demo printed its console").unwrap();
        if let Some(a) = line.strip_prefix("console: http://") {
            address = Some(a.split('/').next().unwrap().to_string());
        }
        if let Some(p) = line.trim().strip_prefix("password for this run: ") {
            password = Some(p.to_string());
        }
    }
    let address = address.expect("the console's address");
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let (session, overview) = sign_in(port, "demo-operator", &password.unwrap());
    assert!(overview.contains("demo-operator · operator"), "{overview}");
    let (status, _, records) = request(port, "GET", "/console/records", &[&session], &[]);
    assert_eq!(status, 200);
    assert!(
        records.contains("href=\"/console/records/PE-"),
        "the demo's records are listed"
    );
    let accounts = std::fs::read_to_string(dir.path().join("console-accounts")).unwrap();
    assert!(accounts.contains("demo-auditor auditor $argon2id$"));
    // Ctrl-C (SIGINT) stops it cleanly.
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &demo.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(demo.wait().unwrap().success());
    assert!(rest.iter().any(|l| l == "console stopped"), "{rest:?}");
}
