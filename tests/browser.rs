//! The console in a real browser: Debian's Chromium driven over WebDriver (chromedriver, with
//! the `fantoccini` client) against the real daemon. An operator signs in, opens an overdue
//! stage from the deadlines board, follows a field to the raw bytes it came from, replays a
//! held failure after seeing its diff, and downloads the report's CSV. Every page visited is
//! saved as a screenshot under `target/tmp/console-screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them).
#![cfg(feature = "simulators")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console::{PASSWORD, configure, overdue_stage, query, run};
use common::daemon::{simulator, stop};
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port; killed when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "the browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver(child, port)
}

/// A headless Chromium session that downloads into `downloads`. The flags keep Chromium
/// off the network (this machine has none) and let it run as root in a container.
async fn browser(driver: &Driver, profile: &Path, downloads: &Path) -> Client {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session with Chromium")
}

/// Saves what the browser shows as `NN-name.png`.
async fn screenshot(c: &Client, dir: &Path, n: &mut u32, name: &str) {
    *n += 1;
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = dir.join(format!("{n:02}-{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot {}", path.display());
}

/// The element `css` names, waiting up to ten seconds for the page that has it.
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let page = c.source().await.unwrap_or_default();
            panic!("{css} not found on {url}: {e}\n{page}")
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

/// Clicks `css` and waits until the page it was on has been replaced: a click that navigates
/// returns before the next page is there, and an element found meanwhile would be the old
/// page's.
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    find(c, css).await.click().await.unwrap();
    let started = Instant::now();
    while old.tag_name().await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{css} did not lead to another page"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The approval mapping with the builder's credit-code check and the floor area's sign check
/// taken out, as an operator would after the platform confirmed such values: the held
/// failures of those categories now map.
fn relaxed_mappings(dir: &Path) -> PathBuf {
    let maps = dir.join("maps");
    std::fs::create_dir_all(maps.join("approval")).unwrap();
    let fixed = include_str!("../mappings/approval/project.toml")
        .replace(
            "transforms = [\"trim\", \"credit_code\"]",
            "transforms = [\"trim\"]",
        )
        .replacen(
            "transforms = [\"trim\", \"decimal\", \"non_negative\"]",
            "transforms = [\"trim\", \"decimal\"]",
            1,
        );
    std::fs::write(maps.join("approval/project.toml"), fixed).unwrap();
    maps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_in_chromium() {
    let server = simulator(300).await;
    let dir = tempfile::tempdir().unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let db = dir.path().join("console.db");

    // A first run holds failures; the daemon then restarts with a mapping fix in force.
    let (config, port) = configure(dir.path(), &server);
    let mut child = tokio::task::block_in_place(|| run(dir.path(), &config, port));
    tokio::task::block_in_place(|| stop(&mut child));
    let maps = relaxed_mappings(dir.path());
    let text_of = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text_of}\n[mappings]\ndir = \"{}\"\n", maps.display()),
    )
    .unwrap();
    let mut child = tokio::task::block_in_place(|| run(dir.path(), &config, port));

    // A stage accepted a month ago: overdue now.
    let overdue = overdue_stage(&config, &db);
    let candidates: Vec<i64> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare(
            "SELECT id FROM failures WHERE state = 'held' AND category IN
                  ('builder.credit_code: credit_code', 'building.floor_area_m2: non_negative') ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!candidates.is_empty());

    let driver = tokio::task::block_in_place(chromedriver);
    let c = browser(&driver, &dir.path().join("profile"), &downloads).await;
    let base = format!("http://localhost:{port}");
    let mut n = 0;

    // Sign in.
    c.goto(&format!("{base}/console")).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/sign-in")
    );
    screenshot(&c, &shots, &mut n, "sign-in").await;
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("王工")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "#sign-in").await;
    assert_eq!(text(&c, "#who").await, "王工 · operator");
    screenshot(&c, &shots, &mut n, "overview").await;

    // The deadlines board: the overdue stage highlighted; open it.
    click(&c, "#nav-deadlines").await;
    let row = c
        .find(Locator::XPath(&format!("//tr[td/a/code[text()='{overdue}']]")))
        .await
        .unwrap();
    assert_eq!(row.attr("class").await.unwrap().as_deref(), Some("overdue"));
    let colour = row.css_value("background-color").await.unwrap();
    assert_ne!(colour, "rgba(0, 0, 0, 0)", "an overdue row is coloured");
    screenshot(&c, &shots, &mut n, "deadlines").await;
    click(&c, &format!("a[href='/console/records/{overdue}']")).await;
    assert!(c.current_url().await.unwrap().path().ends_with(&overdue));
    let stages = text(&c, "#stages").await;
    assert!(stages.contains("site_survey"), "{stages}");
    screenshot(&c, &shots, &mut n, "record").await;

    // A field to its raw bytes: the lineage, then the document, whose stored bytes hash to
    // the name the lineage gives.
    click(&c, "a.field[href$='field?name=project.code']").await;
    let path = text(&c, "#path").await;
    assert!(path.starts_with('/'), "a JSON Pointer: {path}");
    screenshot(&c, &shots, &mut n, "lineage").await;
    let named = text(&c, "#document code").await;
    click(&c, "#document").await;
    assert_eq!(text(&c, "#sha256").await, named);
    assert!(
        text(&c, "#intact")
            .await
            .contains("stored bytes hash to this name")
    );
    let at_path = text(&c, "#at-path").await;
    let code: String = query(
        &db,
        &format!("SELECT source_key FROM records WHERE id = '{overdue}'"),
    );
    assert!(at_path.contains(&code), "{at_path} is the project code {code}");
    screenshot(&c, &shots, &mut n, "document").await;

    // A held failure: its diff first, then the replay.
    click(&c, "#nav-failures").await;
    screenshot(&c, &shots, &mut n, "failures").await;
    // The first of them whose site is in Kunming (the others are now skipped, not created).
    let mut held = None;
    for id in &candidates {
        click(&c, &format!("a[href='/console/failures/{id}']")).await;
        let outcome = text(&c, "#replay-outcome").await;
        println!("failure {id}: {outcome}");
        if outcome.contains("create") {
            held = Some(*id);
            break;
        }
        let old = c.find(Locator::Css("html")).await.unwrap();
        c.back().await.unwrap();
        while old.tag_name().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let held = held.expect("a held failure that the fix turns into a record");
    let diff = c.find_all(Locator::Css("#diff tr")).await.unwrap();
    assert!(diff.len() > 2, "the diff is shown before the replay");
    screenshot(&c, &shots, &mut n, "failure-diff").await;
    click(&c, "#replay").await;
    assert_eq!(text(&c, "#state").await, "replayed");
    screenshot(&c, &shots, &mut n, "failure-replayed").await;
    let state: String = query(
        &db,
        &format!("SELECT state || ' by ' || resolved_by FROM failures WHERE id = {held}"),
    );
    assert_eq!(state, "replayed by 王工");

    // The report, and its CSV downloaded by the browser.
    click(&c, "#nav-reports").await;
    c.find(Locator::Css("svg#chart")).await.unwrap();
    screenshot(&c, &shots, &mut n, "reports").await;
    find(&c, "#csv").await.click().await.unwrap();
    let started = Instant::now();
    let csv = loop {
        let done: Vec<_> = std::fs::read_dir(&downloads)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        if let Some(p) = done.first() {
            break std::fs::read_to_string(p).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no CSV downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(csv.starts_with("dimension,group,applications,"), "{csv}");
    let records: i64 = query(&db, "SELECT count(*) FROM records");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("total,all,{records},"))),
        "{csv}"
    );

    c.close().await.unwrap();
    drop(driver);
    tokio::task::block_in_place(|| stop(&mut child));
    assert_eq!(n, 10, "a screenshot of each page");
}
