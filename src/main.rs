//! `gateway`: the shuiwu-gateway command line. See `gateway --help`.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    if let Err(e) = gateway::logging::init(args.log_format, args.log_level.as_deref()) {
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
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
