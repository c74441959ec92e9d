//! `gateway`: the shuiwu-gateway command line. See `gateway --help`.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{self, Cli};

gateway::use_jemalloc!();

fn main() -> ExitCode {
    let args = Cli::parse();
    // The demo reports retries in its summary; its log shows only errors unless asked.
    #[cfg(feature = "simulators")]
    let demo = matches!(args.command, cli::Command::Demo(_));
    #[cfg(not(feature = "simulators"))]
    let demo = false;
    let quiet_demo = demo && std::env::var_os("RUST_LOG").is_none();
    let level = args
        .log_level
        .clone()
        .or_else(|| quiet_demo.then(|| "error".to_string()));
    if let Err(e) = gateway::logging::init(args.log_format, level.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_for(&e)
        }
    }
}
