//! `gateway demo`: the whole pipeline on the embedded defaults, against an in-process
//! simulator, in a few seconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{Duration, Utc};
use clap::Args;
use serde_json::Value;
use shuiwu_approval::sim::{SimConfig, Simulator, fixtures_at};
use shuiwu_approval::{ClientConfig, RetryPolicy, SignMethod};
use shuiwu_licences::LicenceConfig;
use shuiwu_licences::sim::{LicenceSim, LicenceSimConfig};
use shuiwu_power::sim::{PowerSim, PowerSimConfig};
use shuiwu_wire::{Secret, SystemClock, format_beijing};
use tokio_util::sync::CancellationToken;

use super::table;
use crate::app::Gateway;
use crate::config::{Config, MappingsConfig, StoreConfig, SyncConfig};
use crate::store::OutcomeCount;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Generated projects on the simulated platform.
    #[arg(long, default_value_t = 300)]
    pub projects: u64,
    /// Directory for the demo database; its previous demo database is replaced.
    #[arg(long, default_value = "gateway-demo")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 2022)]
    pub seed: u64,
    /// Then serve the console on the demo database at this address (127.0.0.1:8600 when
    /// given without one), with demo accounts, until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8600", value_name = "ADDR")]
    pub console: Option<std::net::SocketAddr>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)?;
    let db = args.dir.join("gateway.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }

    // The simulated platform: the contract's behaviour, with a rate limit raised so that the
    // demo takes seconds, a few random transient faults to show the retries, and no
    // visibility lag so that the changes made below show at once.
    let now = Utc::now();
    let mut sim = SimConfig::contract_defaults(args.seed, args.projects, now, 30);
    sim.lag = Duration::zero();
    sim.rate_limit_per_sec = Some(200);
    sim.random_fault_per_mille = 10;
    sim.fixtures = fixtures_at(now - Duration::days(20)).map_err(anyhow::Error::msg)?;
    let server = Simulator::new(sim, Arc::new(SystemClock))
        .map_err(anyhow::Error::msg)?
        .serve("127.0.0.1:0".parse()?)
        .await?;
    let simcfg = server.sim.config().clone();
    let licence_server = LicenceSim::new(LicenceSimConfig::default(), Arc::new(SystemClock))
        .serve("127.0.0.1:0".parse()?)
        .await?;
    let licence_cfg = licence_server.sim.config().clone();
    // The power utility: its rate limit raised so that the demo takes seconds, and one call in
    // twenty losing its answer after the change was made, to show that a repeat is harmless.
    let power_server = PowerSim::new(
        PowerSimConfig {
            rate_limit_per_sec: Some(200),
            random_after_fault_per_mille: 50,
            ..PowerSimConfig::contract_defaults(args.seed)
        },
        Arc::new(SystemClock),
    )
    .serve("127.0.0.1:0".parse()?)
    .await?;
    let mut power = power_server.client_config();
    power.rate_per_second = 150;
    power.min_delay_ms = 50;

    let cfg = Config {
        store: StoreConfig { path: db.clone() },
        approval: ClientConfig {
            base_url: server.base_url(),
            app_id: simcfg.app_id.clone(),
            app_secret: Secret::new(simcfg.app_secret.clone()),
            sign_method: SignMethod::HmacSm3,
            rate_per_second: 150,
            connect_timeout: std::time::Duration::from_secs(2),
            read_timeout: std::time::Duration::from_secs(5),
            total_timeout: std::time::Duration::from_secs(10),
            // Short waits: the demo's faults are one-off, and it should take seconds.
            max_document_bytes: shuiwu_approval::default_max_document_bytes(),
            daily_quota: None,
            retry: RetryPolicy {
                max_retries: 3,
                min_delay: std::time::Duration::from_millis(50),
                max_delay: std::time::Duration::from_millis(500),
                max_wait: std::time::Duration::from_secs(5),
            },
        },
        licences: Some(LicenceConfig {
            base_url: licence_server.base_url(),
            app_id: licence_cfg.app_id.clone(),
            app_secret: Secret::new(licence_cfg.app_secret.clone()),
            rate_per_second: 100,
            timeout_secs: 10,
            max_retries: 4,
            min_delay_ms: 100,
        }),
        power: Some(power),
        http: crate::config::HttpConfig::default(),
        power_webhook_secret: None,
        sync: SyncConfig {
            start: format_beijing(now - Duration::days(31)),
            concurrency: 8,
            ..SyncConfig::default()
        },
        mappings: MappingsConfig::default(),
        audit: crate::config::AuditConfig::default(),
    };
    outln!(
        "demo: simulated approval platform at {} with {} generated and {} fixture projects",
        server.base_url(),
        args.projects,
        shuiwu_approval::sim::FIXTURES.len()
    );
    let gateway = Gateway::open_writer(&cfg, Arc::new(SystemClock))?;
    let token = CancellationToken::new();
    super::daemon::shutdown_on_signals(token.clone());
    let (syncer, bar) = super::daemon::with_progress(gateway.syncer);
    let started = std::time::Instant::now();
    let first = syncer.pass(&token).await?;
    outln!(
        "backfill: {} windows, {} listing and {} detail requests",
        first.windows,
        first.list_requests,
        first.details_fetched
    );

    // Meanwhile applicants applied on the power utility's platform: households, companies
    // naming projects the backfill just read (or codes the approval platform does not know,
    // or none), a site outside Kunming. The first delivery round reads them and sends the
    // joint applications the backfill's records ask for.
    let store = crate::store::AsyncStore::new(gateway.store.clone());
    let mut joint = crate::joint::deliver::DeliveryReport::default();
    if let Some(d) = &gateway.deliverer {
        let known: Vec<String> = store
            .call(|s| s.records_by_source("approval"))
            .await?
            .into_iter()
            .filter_map(|id| id.strip_prefix("PE-").map(str::to_string))
            .collect();
        let mut applications = shuiwu_power::sim::generate::power_origin(
            args.seed,
            DEMO_POWER_APPLICATIONS,
            &known,
            Utc::now(),
            3,
        );
        // A second builder applies for a project someone already applied for: the later one is
        // held for an operator as a probable duplicate.
        if let Some(first) = applications
            .iter()
            .find(|a| a.project_code.as_ref().is_some_and(|c| known.contains(c)))
        {
            let mut again = first.clone();
            again.submitted_at += Duration::hours(1);
            applications.push(again);
        }
        power_server.sim.insert_batch(applications);
        joint.merge(d.round(&token).await?);
    }

    // Upstream activity between two passes: builders revise some projects, withdraw others.
    // From async code the store is reached on the blocking pool, as everywhere else.
    let active = store.call(|s| s.records(Some("active"), 16)).await?;
    for (i, r) in active.iter().filter(|r| r.id.starts_with("PE-")).enumerate() {
        if i < 12 {
            server.sim.change(&r.source_key, |doc| {
                doc["JZMJ"] = Value::from("9800.00");
                doc["SPJD"] = Value::from("3");
            });
        } else {
            server.sim.withdraw(&r.source_key);
        }
    }
    // Versions are stamped to the second; the next listing window must include this one.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let second = syncer.pass(&token).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let runs = [first.run_id, second.run_id];
    let outcomes = store.call(move |s| s.outcomes(&runs)).await?;
    print_summary(&outcomes);
    let zero = store.call(|s| s.zero_materials_counts()).await?;
    let categories = store.call(|s| s.category_counts()).await?;
    outln!();
    table::print(
        &[
            "category (active records)",
            "records",
            "in 11000 mode",
            "zero materials reached",
        ],
        &categories
            .iter()
            .map(|(c, n, m)| {
                let z = zero
                    .iter()
                    .find(|z| &z.0 == c)
                    .map_or("-".to_string(), |z| format!("{} of {}", z.1, z.2));
                vec![c.clone(), n.to_string(), m.to_string(), z]
            })
            .collect::<Vec<_>>(),
    );
    // The second round reports the second pass's changes (withdrawn projects) and repeats
    // the calls whose answers were lost.
    if let Some(d) = &gateway.deliverer {
        joint.merge(d.round(&token).await?);
        let p = power_server.sim.stats();
        let polled = joint.polled.clone().unwrap_or_default();
        let held = store.call(|s| s.failures(Some("held"), 10_000)).await?;
        let duplicates = held
            .iter()
            .filter(|f| f.source == "power" && f.step == "link")
            .count();
        let imported = store.call(|s| s.power_origin_counts()).await?;
        outln!(
            "\njoint water+power applications: {} created on the power side ({} answers lost after the change and repeated as replays), {} power-origin applications linked to their project's record or their own, {} held as probable duplicates, {} calls held; the power side holds {} water-origin applications",
            joint.created + joint.replayed,
            joint.replayed,
            joint.linked,
            duplicates,
            joint.held,
            p.created
        );
        outln!(
            "imported from the power side: {} households (small_residential, table A), {} applications waiting for platform data (no category yet), {} superseded by their project's record; {} skipped (site outside Kunming), {} held",
            imported.households,
            imported.waiting,
            imported.superseded,
            polled.skipped,
            polled.held
        );
    }
    let notices: u64 = first.notices_issued + second.notices_issued;
    outln!("{notices} one-time notices issued (gateway notice ID prints one)");
    let stats = server.sim.stats();
    outln!(
        "\n{} requests in {:.1} s; the simulator injected {} transient faults, all retried; {} answered 429",
        stats.requests,
        elapsed.as_secs_f64(),
        stats.faults_injected,
        stats.rate_limited
    );

    let example = store
        .call(|s| s.records(Some("active"), 1))
        .await?
        .into_iter()
        .next();
    let failure = store
        .call(|s| s.failures(Some("held"), 1))
        .await?
        .into_iter()
        .next();
    let audit = store.call(|s| s.audit_checkpoint()).await?;
    let db = db.display();
    outln!("\ndata: {db} (SQLite; open a copy read-only with any SQLite tool)");
    if let Some((size, _)) = audit {
        outln!(
            "audit log: the newest signed checkpoint covers {size} entries (the key is beside the database)"
        );
    }
    outln!("try:");
    outln!("  cargo run --release -- --db {db} records list");
    if let Some(r) = &example {
        outln!("  cargo run --release -- --db {db} records show {}", r.id);
        outln!("  cargo run --release -- --db {db} trace {} --field water", r.id);
    }
    let household = store
        .call(|s| s.records_by_source("power"))
        .await?
        .into_iter()
        .next();
    if let Some(id) = &household {
        outln!("  cargo run --release -- --db {db} trace {id} --field builder");
    }
    outln!("  cargo run --release -- --db {db} failures list");
    outln!("  cargo run --release -- --db {db} power list");
    outln!("  cargo run --release -- --db {db} outbox list");
    if let Some(f) = &failure {
        outln!("  cargo run --release -- --db {db} failures show {}", f.id);
    }
    outln!("  cargo run --release -- --db {db} audit verify");
    outln!("  cargo run --release -- --db {db} audit coverage");
    if let Some(r) = &example {
        outln!(
            "  cargo run --release -- --db {db} audit package {} --out evidence.pkg   (then audit check-package evidence.pkg --key …)",
            r.id
        );
    }
    match args.console {
        Some(listen) => {
            super::demo_console::serve(listen, &args.dir, store, syncer.rebuilder().clone(), &token).await?;
        }
        None => outln!("  cargo run --release -- demo --console   (the same, then the console in a browser)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// How many applications the demo's applicants make on the power side's platform.
const DEMO_POWER_APPLICATIONS: u64 = 20;

fn print_summary(outcomes: &[OutcomeCount]) {
    let order = ["created", "updated", "withdrawn", "unchanged", "skipped", "held"];
    let mut rows = Vec::new();
    for name in order {
        let o = outcomes.iter().find(|o| o.outcome == name);
        let count = o.map_or(0, |o| o.count);
        let reasons = o
            .map(|o| {
                o.top_reasons
                    .iter()
                    .map(|(r, n)| format!("{n}× {}", table::clip(r, 60)))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        rows.push(vec![name.to_string(), count.to_string(), reasons]);
    }
    outln!();
    table::print(&["outcome", "count", "top reasons"], &rows);
}
