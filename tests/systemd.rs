//! `gateway run` under the service manager's protocol, through a real `NOTIFY_SOCKET`: `READY=1`
//! only once the HTTP server accepts connections, `WATCHDOG=1` while the sync loop lives,
//! `STOPPING=1` on SIGTERM, and a clean exit.
#![cfg(all(feature = "simulators", unix))]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shuiwu_power::sim::{PowerSim, PowerSimConfig};
use shuiwu_wire::SystemClock;

use common::daemon::{exit_within, gateway, listen_on_free_port, simulator, write_config};

/// The next notification, or `None` after `limit`.
fn next(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Notifications until one contains `wanted` (returned with those before it).
fn until(socket: &UnixDatagram, wanted: &str, limit: Duration) -> Vec<String> {
    until_or(socket, wanted, limit, String::new)
}

/// As [`until`]; `why` adds to the failure's message (the daemon's log).
fn until_or(socket: &UnixDatagram, wanted: &str, limit: Duration, why: impl Fn() -> String) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < limit {
        if let Some(m) = next(socket, limit.saturating_sub(started.elapsed())) {
            let done = m.lines().any(|l| l == wanted);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted} within {limit:?}; got {seen:?}\n{}", why());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_and_stopping_through_a_real_notify_socket() {
    let server = simulator(200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "svc", &server, 1);
    let port = listen_on_free_port(&config);
    // The power side too: its webhooks are what the server is for.
    let power = PowerSim::new(PowerSimConfig::contract_defaults(1), Arc::new(SystemClock))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[power]\nbase_url = \"{}\"\nclient_id = \"{}\"\n",
        power.base_url(),
        power.sim.config().client_id
    ));
    std::fs::write(&config, text).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let mut child = gateway(&config, &["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .env("GATEWAY_POWER_WEBHOOK_SECRET", "whsec-test")
        .env("GATEWAY_POWER_CLIENT_SECRET", &power.sim.config().client_secret)
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let socket = tokio::task::block_in_place(|| {
        let log = dir.path().join("stderr.log");
        let before = until_or(&socket, "READY=1", Duration::from_secs(60), || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        assert!(
            before.iter().all(|m| !m.contains("WATCHDOG=1")),
            "the watchdog is fed only once ready: {before:?}"
        );
        // Ready means the server listens.
        std::net::TcpStream::connect(("127.0.0.1", port))
            .expect("the HTTP server accepts connections when READY=1 is sent");
        // Fed every half interval while the loop lives, across passes and the waits between them.
        let started = Instant::now();
        let mut feeds = 0;
        while feeds < 6 {
            let m = next(&socket, Duration::from_secs(5)).expect("the watchdog is fed");
            if m.lines().any(|l| l == "WATCHDOG=1") {
                feeds += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        socket
    });
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::block_in_place(|| {
        until(&socket, "STOPPING=1", Duration::from_secs(10));
        let status = exit_within(&mut child, Duration::from_secs(20));
        assert_eq!(status.code(), Some(0));
    });
}
