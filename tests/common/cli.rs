//! Running the real `gateway` binary from integration tests.

use std::process::{Command, Output};

/// Runs `gateway` with `args`, without the caller's log filter or store path.
pub fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("GATEWAY_STORE_PATH")
        .output()
        .unwrap()
}

/// Asserts success; the standard output.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure; the standard error.
pub fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A demo database of `projects` generated projects in `dir` (the real `gateway demo`): its
/// path.
pub fn demo(dir: &std::path::Path, projects: u32) -> std::path::PathBuf {
    let n = projects.to_string();
    ok(&gateway(&[
        "demo",
        "--projects",
        &n,
        "--dir",
        dir.to_str().unwrap(),
    ]));
    dir.join("gateway.db")
}
