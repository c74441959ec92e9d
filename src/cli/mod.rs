//! The command line: what operators and auditors type.

/// `println!` for command output: a closed pipe (`gateway records list | head`) ends the
/// process quietly, as it does for any Unix tool, instead of panicking.
macro_rules! outln {
    () => { $crate::cli::emit("\n") };
    ($($arg:tt)*) => { $crate::cli::emit(&format!("{}\n", format_args!($($arg)*))) };
}

mod audit;
mod backup;
mod calendar;
mod checks;
mod daemon;
#[cfg(feature = "simulators")]
mod demo;
#[cfg(feature = "simulators")]
mod demo_console;
mod events;
mod generate;
mod inspect;
pub(crate) mod joint;
mod remap;
pub mod replay;
mod report;
mod service;
#[cfg(feature = "simulators")]
mod simulate;
mod table;
mod times;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::logging::LogFormat;
pub use audit::AuditCommand;

/// shuiwu-gateway: Yunnan approval-platform projects → Kunming water pre-engagement records.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Secrets come from the environment: GATEWAY_APPROVAL_APP_SECRET.
    #[arg(long, global = true, env = "GATEWAY_CONFIG", default_value = "gateway.toml")]
    pub config: PathBuf,
    /// The database, for the inspection commands; overrides the configuration's store.path.
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `gateway=debug` (default: RUST_LOG, else info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: a sync pass every sync.interval_secs until SIGTERM or Ctrl-C, which
    /// let the unit of work in hand finish and then exit 0.
    Run,
    /// Sync once and exit.
    Sync {
        /// One pass from the cursor up to now (the only mode; required for clarity in scripts).
        #[arg(long, required = true)]
        once: bool,
        /// Print the pass report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "simulators")]
    /// Start the approval simulator in-process, sync a few hundred projects into a fresh demo
    /// database, and print a summary.
    Demo(demo::DemoArgs),
    /// Pre-engagement records.
    Records {
        #[command(subcommand)]
        command: RecordsCommand,
    },
    /// Operator actions on one record: stage events and reassignment.
    Record {
        #[command(subcommand)]
        command: events::RecordCommand,
    },
    /// The record's one-time notice (一次性告知) of missing materials, printable, and what is
    /// owed now.
    Notice {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Running stages against their due times: on time, warning, overdue.
    Deadlines {
        #[arg(long, value_parser = ["warning", "overdue"])]
        state: Option<String>,
        /// Only stages due within this long from now, e.g. 36h or 2d.
        #[arg(long)]
        due_within: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Each field of a record with its chain back to the raw bytes.
    Trace {
        id: String,
        /// Only this field, or every field under it (`water` gives water.*).
        #[arg(long)]
        field: Option<String>,
        /// Trace this record version instead of the current one.
        #[arg(long)]
        version: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Calls to the power utility: planned with the record changes that cause them, delivered
    /// in order per record; list them, show one, release a held one.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Joint water+power applications with the power utility, both statuses.
    Power {
        #[command(subcommand)]
        command: PowerCommand,
    },
    /// The failure queue: project versions held for an operator.
    Failures {
        #[command(subcommand)]
        command: FailuresCommand,
    },
    /// Working days, due times and counts from the holiday calendars.
    Calendar {
        #[command(subcommand)]
        command: calendar::CalendarCommand,
    },
    /// The audit log: its public key, its newest signed checkpoint, the entries, and a check
    /// that nothing was edited, deleted, reordered or added.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A consistent copy of the database while the gateway runs, checked (integrity, audit
    /// chain) before it is called good; written to a new file readable by this user only.
    Backup {
        file: PathBuf,
        /// Who takes it, for the audit log (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put a checked backup in place of the database; refused while a gateway writes to it.
    /// The database it replaces is kept beside it, renamed.
    Restore {
        file: PathBuf,
        #[arg(long)]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// A new bearer token for the admin API: prints the token (once; keep it secret) and the
    /// line to add to `[http] admin_tokens_file`, which holds only its salted hash.
    AdminToken {
        /// The operator the token names in the audit log.
        name: String,
    },
    /// Map every stored record's current raw document again with the mapping and policy files
    /// in force (after a mapping fix or a new policy), without fetching: `--dry-run` shows what
    /// would change, per field and per decision, with examples; applied, the changed records
    /// get new versions (audited, resumable after a kill: run it again), unchanged ones none.
    Remap {
        /// Only the records of one source: `approval` (projects) or `power` (power-origin
        /// applications).
        #[arg(long, value_parser = ["approval", "power"])]
        source: Option<String>,
        /// Only one record, by its id (`PE-…`) or its project code.
        #[arg(long)]
        project: Option<String>,
        /// Show what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who remaps, for the audit log (not needed for a dry run).
        #[arg(long, default_value = "")]
        by: String,
        /// Records per transaction.
        #[arg(long, default_value_t = remap::DEFAULT_BATCH)]
        batch: usize,
        /// Everything as JSON, every changed record with all its changes.
        #[arg(long)]
        json: bool,
    },
    /// A console account: reads the password from standard input (one line, at least 12
    /// characters) and prints the line for `[http] console_accounts_file` (its Argon2id hash).
    ConsoleAccount {
        /// The person's name, as the audit log will name them.
        name: String,
        #[arg(long, value_enum)]
        role: crate::console::accounts::Role,
    },
    /// Whether the gateway can do its work: holiday calendars, database, last sync.
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Reports from the records: `timeliness` (工单时限考核) per district company, customer
    /// manager, category and stage.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The man page or shell completions, generated from these definitions (the Debian
    /// package installs them).
    Generate {
        #[arg(value_enum)]
        what: generate::Generated,
    },
    /// Check the configuration and the data files it names, without running anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sync passes, newest first: when, how they ended (`running`, `caught_up`, `incomplete`,
    /// `interrupted`, `failed`) and why.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "simulators")]
    /// Serve the approval-platform simulator on loopback (for benchmarks and trying things).
    Simulate(simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Records, most recently changed first.
    List {
        #[arg(long, value_parser = ["active", "withdrawn"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One record: its current content (personal data masked) and its versions.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Applications, completed within the limit, warnings, alarms, paused time and working days
    /// used against the limit; zero materials achieved, free connections, joint applications.
    Timeliness {
        #[command(flatten)]
        period: report::PeriodArgs,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// One CSV row per group (company, manager, category, stage).
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration (with the environment's secrets), the mapping files, the policy
    /// and the holiday calendars as `gateway run` would; exit 1 with the first error.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Newest first.
    List {
        #[arg(long, value_parser = ["pending", "done", "held"])]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One call: its key, body (personal data masked), attempts, answer.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Release a held call for another delivery (after the cause was fixed), audited.
    Retry {
        id: i64,
        #[arg(long)]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PowerCommand {
    /// Joint applications, newest change first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One application (by its id or its record's id), with the calls made for it.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FailuresCommand {
    /// What needs action: one row per project with open (held) failures, its newest failure
    /// and how many it has, newest first. `--state` or `--all` list single failures instead.
    List {
        #[arg(long, value_parser = ["held", "superseded", "dismissed", "replayed"])]
        state: Option<String>,
        /// Every failure in every state, one row each.
        #[arg(long, conflicts_with = "state")]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One failure with every failing field and its raw document (personal data masked).
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Map the held document again with the rules in force now (after a mapping or policy
    /// fix) and commit the record it gives; `--dry-run` shows it without committing.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all", "category", "step"])))]
    Replay {
        /// One failure.
        id: Option<i64>,
        /// Every held failure.
        #[arg(long)]
        all: bool,
        /// The held failures of one category (as `failures list` shows it).
        #[arg(long)]
        category: Option<String>,
        /// The held failures of one step (`map`, `assemble`, `decide`).
        #[arg(long)]
        step: Option<String>,
        /// Who replays, for the audit log (not needed for a dry run).
        #[arg(long, default_value = "")]
        by: String,
        /// Show, for each item, what the replay would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// For one `detail` failure: fetch the project from the platform again (needs the
        /// configuration and its secrets).
        #[arg(long, requires = "id")]
        refetch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Take a failure out of the queue without a record, with the reason.
    Dismiss {
        id: i64,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run => daemon::run(&load_config(&cli.config)?).await,
        Command::Sync { once: _, json } => daemon::sync_once(&load_config(&cli.config)?, json).await,
        #[cfg(feature = "simulators")]
        Command::Demo(args) => demo::run(args).await,
        #[cfg(feature = "simulators")]
        Command::Simulate(args) => simulate::run(args).await,
        Command::Record { command } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            events::record(&store, mappings_dir_from(&cli.config).as_deref(), command)
        }
        Command::Notice { id, json } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            events::notice(&store, &id, json)
        }
        Command::Deadlines {
            state,
            due_within,
            json,
        } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            let dir = mappings_dir_from(&cli.config);
            events::deadlines(
                &store,
                dir.as_deref(),
                state.as_deref(),
                due_within.as_deref(),
                json,
                chrono::Utc::now(),
            )
        }
        Command::Calendar { command } => {
            let calendar = crate::calendar::Calendar::load(mappings_dir_from(&cli.config).as_deref())?;
            calendar::run(&calendar, command)
        }
        Command::Health { json } => checks::health(&cli.config, cli.db.as_deref(), json),
        Command::ConsoleAccount { name, role } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let line = crate::console::accounts::line(&name, role, password).map_err(anyhow::Error::msg)?;
            outln!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminToken { name } => {
            if name.trim().is_empty() || name.chars().any(char::is_whitespace) {
                anyhow::bail!("the operator's name must be one word, not empty");
            }
            let (token, line) = crate::http::tokens::issue(&name);
            outln!("token for {name} (shown once; give it to {name} and keep it out of logs):\n{token}");
            outln!("\nadd this line to the file named by [http] admin_tokens_file:\n{line}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { file, by, json } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "operator".into());
            backup::backup(&store, &file, &by, json)
        }
        Command::Restore { file, by, json } => {
            if by.trim().is_empty() {
                anyhow::bail!("--by must name who restores");
            }
            backup::restore_into(
                &cli.config,
                &db_path(&cli.config, cli.db.as_deref()),
                &file,
                &by,
                json,
            )
        }
        Command::Audit { command } => audit::run(&cli.config, cli.db.as_deref(), command),
        Command::Config {
            command: ConfigCommand::Check,
        } => checks::config_check(&cli.config),
        Command::Runs { limit, json } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            inspect::runs(&store, limit, json)
        }
        Command::Records { command } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            match command {
                RecordsCommand::List { state, limit, json } => {
                    inspect::records_list(&store, state.as_deref(), limit, json)
                }
                RecordsCommand::Show { id, json } => inspect::records_show(&store, &id, json),
            }
        }
        Command::Trace {
            id,
            field,
            version,
            json,
        } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            inspect::trace(&store, &id, field.as_deref(), version, json)
        }
        Command::Outbox { command } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            match command {
                OutboxCommand::List { state, limit, json } => {
                    joint::outbox_list(&store, state.as_deref(), limit, json)
                }
                OutboxCommand::Show { id, json } => joint::outbox_show(&store, id, json),
                OutboxCommand::Retry { id, by } => joint::outbox_retry(&store, id, &by),
            }
        }
        Command::Power { command } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            match command {
                PowerCommand::List { limit, json } => joint::power_list(&store, limit, json),
                PowerCommand::Show { id, json } => joint::power_show(&store, &id, json),
            }
        }
        Command::Generate { what } => generate::generate(what),
        Command::Report {
            command: ReportCommand::Timeliness { period, json, csv },
        } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            report::timeliness(
                &store,
                mappings_dir_from(&cli.config).as_deref(),
                &period,
                json,
                csv,
            )
        }
        Command::Remap {
            source,
            project,
            dry_run,
            by,
            batch,
            json,
        } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            let request = remap::Request {
                selection: crate::store::RemapSelection { source, project },
                dry_run,
                by,
                batch,
                json,
            };
            remap::remap(
                &store,
                &db_path(&cli.config, cli.db.as_deref()),
                mappings_dir_from(&cli.config).as_deref(),
                &request,
            )
        }
        Command::Failures { command } => {
            let store = open_store(&cli.config, cli.db.as_deref())?;
            match command {
                FailuresCommand::List {
                    state,
                    all,
                    limit,
                    json,
                } => inspect::failures_list(&store, state.as_deref(), all, limit, json),
                FailuresCommand::Show { id, json } => inspect::failures_show(&store, id, json),
                FailuresCommand::Replay {
                    id: Some(id),
                    by,
                    refetch: true,
                    ..
                } => {
                    drop(store);
                    if by.trim().is_empty() {
                        anyhow::bail!("--by must name who replays");
                    }
                    let mut cfg = load_config(&cli.config)?;
                    if let Some(db) = &cli.db {
                        cfg.store.path = db.clone();
                    }
                    events::refetch(&cfg, id, &by).await
                }
                FailuresCommand::Replay {
                    id,
                    all,
                    category,
                    step,
                    by,
                    dry_run,
                    json,
                    ..
                } => replay::replay(
                    &store,
                    mappings_dir_from(&cli.config).as_deref(),
                    &replay::Selection {
                        id,
                        all,
                        category,
                        step,
                    },
                    &by,
                    dry_run,
                    json,
                ),
                FailuresCommand::Dismiss { id, by, reason } => events::dismiss(&store, id, &by, &reason),
            }
        }
    }
}

/// An outbox call as the commands show it (its body's personal data masked), for the admin API.
pub fn outbox_call_json(call: &crate::store::OutboxCall) -> serde_json::Value {
    joint::call_json(call)
}

/// Exit code 4: another gateway holds the database (`run`, `sync --once`); any other error: 1.
pub const EXIT_LOCKED: u8 = 4;

/// The exit code for an error that ended a command.
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<crate::store::lock::LockError>() {
        Some(crate::store::lock::LockError::Held { .. }) => ExitCode::from(EXIT_LOCKED),
        _ => ExitCode::FAILURE,
    }
}

/// Writes command output to stdout; the `outln!` macro of this module calls it.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing output: {e}");
        std::process::exit(1);
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("configuration {}", path.display()))
}

/// The store for read-only commands: `--db`, else `GATEWAY_STORE_PATH`, else the configuration
/// file's `store.path` (read without requiring secrets), else the default path.
/// The database a command acts on: `--db`, else `GATEWAY_STORE_PATH`, else the configuration's.
fn db_path(config: &Path, db: Option<&Path>) -> PathBuf {
    match db {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("GATEWAY_STORE_PATH") {
            Some(p) => PathBuf::from(p),
            None => store_path_from(config).unwrap_or_else(|| crate::config::StoreConfig::default().path),
        },
    }
}

pub(crate) fn open_store(config: &Path, db: Option<&Path>) -> anyhow::Result<crate::store::Store> {
    let path = db_path(config, db);
    if !path.exists() {
        anyhow::bail!(
            "no database at {} (run a sync or `gateway demo` first, or pass --db)",
            path.display()
        );
    }
    let store = crate::store::Store::open(&path)?;
    // A command that changes something (a replay, a dismissal) signs the log's checkpoint
    // when its user can read the key; an auditor's read-only command needs no key.
    let audit = audit_config_from(config).unwrap_or_default();
    if let Some(signer) = crate::audit::key::load(&audit, &path, crate::audit::key::Missing::Skip)? {
        store.set_signer(signer)?;
    }
    Ok(store)
}

/// `[sync] start` of the configuration file, if it has one (read without requiring secrets).
fn sync_start_from(config: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    shuiwu_wire::parse_beijing(value.get("sync")?.get("start")?.as_str()?)
}

/// `[audit]` of the configuration file, if it has one (read without requiring secrets).
fn audit_config_from(config: &Path) -> Option<crate::config::AuditConfig> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value.get("audit")?.clone().try_into().ok()
}

/// `mappings.dir` of the configuration file, if there is one (read without requiring secrets).
fn mappings_dir_from(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value.get("mappings")?.get("dir")?.as_str().map(PathBuf::from)
}

fn store_path_from(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    value.get("store")?.get("path")?.as_str().map(PathBuf::from)
}
