//! `gateway`: the shuiwu-gateway command line. See `gateway --help`.

use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{self, Cli};

/// jemalloc instead of the C library's allocator: a backfill allocates and frees some fifty
/// small values per project on several threads, and glibc's malloc spent about a sixth of the
/// gateway's CPU doing so (`README.md`, Performance). jemalloc's thread caches cut the whole
/// pass's CPU by about a quarter.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its start (the `malloc_conf` symbol of its API, prefixed
/// as the crate builds it). One arena: the gateway has a handful of threads, and one arena
/// keeps the memory of a long backfill flat (the default is four per core); the thread caches
/// still serve nearly every allocation without a lock. `_RJEM_MALLOC_CONF` in the environment
/// overrides it.
#[unsafe(export_name = "_rjem_malloc_conf")]
#[allow(non_upper_case_globals)]
pub static malloc_conf: &[u8; 10] = b"narenas:1\0";

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
