//! `gateway run` and `gateway sync --once`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use shuiwu_wire::{SystemClock, format_human, human_from_stored, parse_time};
use tokio_util::sync::CancellationToken;

use crate::app::Gateway;
use crate::config::Config;
use crate::joint::deliver::Deliverer;
use crate::store::AsyncStore;
use crate::sync::{PassEnd, PassReport, Progress, Syncer};

/// How long a graceful shutdown may take before the process stops anyway (exit 1): the
/// requests in flight are cancelled at once, so only a commit can take time.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(9);

/// The first SIGTERM or Ctrl-C cancels `token`: requests in flight, retries and waits stop at
/// once, the units already complete commit, and the command returns (exit 0). A second signal
/// exits at once with 128 + the signal's number, as a shell reports a killed command; a
/// shutdown that takes longer than [`SHUTDOWN_GRACE`] exits 1. Either way the database is
/// consistent: SQLite commits are atomic, and the next pass resumes from the cursor.
pub fn shutdown_on_signals(token: CancellationToken) {
    // Listening starts now, before the first await: a signal from here on is seen.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(
            "{}: stopping; the units already complete are committed",
            first.name()
        );
        token.cancel();
        tokio::select! {
            second = signals.next() => {
                tracing::warn!("{} again: exiting at once", second.name());
                std::process::exit(128 + second.number());
            }
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::error!(grace_secs = SHUTDOWN_GRACE.as_secs(), "shutdown took too long: exiting");
                std::process::exit(1);
            }
        }
    });
}

#[derive(Clone, Copy)]
enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C",
            Signal::Terminate => "SIGTERM",
        }
    }

    fn number(self) -> i32 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
        }
    }
}

/// SIGTERM and SIGINT, listened to from creation on.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .map_err(|e| tracing::warn!("cannot listen for {name}: {e}"))
                    .ok()
            };
            Signals {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.terminate) => Signal::Terminate,
                () = recv(&mut self.interrupt) => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

/// A progress bar over the backfill's time range, shown only on a terminal.
pub fn with_progress(syncer: Syncer) -> (Syncer, Option<ProgressBar>) {
    if !std::io::stderr().is_terminal() {
        return (syncer, None);
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {percent:>3}% {prefix} items, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let origin = std::sync::Mutex::new(None);
    let items = std::sync::atomic::AtomicU64::new(0);
    let syncer = syncer.with_progress(move |p| match p {
        Progress::Started { from, to } => {
            *origin.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
            shown.set_length((to - from).num_seconds().max(1) as u64);
        }
        Progress::Window { start, end } => {
            if let Some(from) = *origin.lock().unwrap_or_else(|e| e.into_inner()) {
                shown.set_position((start - from).num_seconds().max(0) as u64);
            }
            shown.set_message(format!("window {} → {}", format_human(start), format_human(end)));
        }
        Progress::Committed { items: n, cursor } => {
            let total = items.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed) + n as u64;
            if let (Some(c), Some(from)) = (cursor, *origin.lock().unwrap_or_else(|e| e.into_inner())) {
                shown.set_position((c - from).num_seconds().max(0) as u64);
            }
            shown.set_prefix(total.to_string());
        }
        Progress::MaterialsChecked => {}
    });
    (syncer, Some(bar))
}

fn log_report(r: &PassReport, seconds: f64) {
    use crate::events::InternalEvent;
    crate::events::PassFinished { report: r, seconds }.emit();
}

/// The pass report for people.
fn print_report(r: &PassReport) {
    let end = match &r.end {
        PassEnd::CaughtUp => "caught up".to_string(),
        PassEnd::Interrupted => "interrupted by a signal".to_string(),
        PassEnd::Incomplete { reason, not_before } => match not_before {
            Some(t) => format!("stopped early: {reason} (not before {})", human_from_stored(t)),
            None => format!("stopped early: {reason}"),
        },
    };
    outln!("pass {}: {end}", r.run_id);
    outln!(
        "  cursor {} → {}",
        human_from_stored(&r.cursor_before),
        human_from_stored(&r.cursor_after)
    );
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!(
        "  {} listing pages, {} details: {}",
        r.list_requests,
        r.details_fetched,
        if outcomes.is_empty() {
            "nothing new".to_string()
        } else {
            outcomes.join(", ")
        }
    );
    for w in &r.mapping_warnings {
        outln!("  warning: {w}");
    }
    if let Some(j) = &r.joint {
        outln!(
            "  power side: {} calls: {} created, {} replayed, {} adopted, {} linked, {} statuses applied, {} no-op, {} to retry, {} held",
            j.attempted,
            j.created,
            j.replayed,
            j.adopted,
            j.linked,
            j.applied,
            j.no_op,
            j.retried,
            j.held
        );
    }
    if r.materials_checked > 0 || r.materials_unchecked > 0 || r.materials_stopped.is_some() {
        outln!(
            "  zero materials: {} checked, {} notices issued, {} still unchecked",
            r.materials_checked,
            r.notices_issued,
            r.materials_unchecked
        );
        if let Some(why) = &r.materials_stopped {
            outln!("  zero-materials check stopped early: {why}");
        }
    }
}

pub async fn sync_once(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::open_writer(cfg, Arc::new(SystemClock))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let (syncer, bar) = with_progress(gateway.syncer);
    let started = std::time::Instant::now();
    let mut report = syncer.pass(&token).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(d) = &gateway.deliverer {
        report.joint = Some(d.round(&token).await?);
    }
    log_report(&report, started.elapsed().as_secs_f64());
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(match report.end {
        PassEnd::Interrupted => ExitCode::SUCCESS,
        PassEnd::CaughtUp if report.materials_stopped.is_none() => ExitCode::SUCCESS,
        // Stopped early (the approval sync or the zero-materials check): nothing is lost, the
        // next pass resumes; scripts and monitors need to know.
        PassEnd::CaughtUp | PassEnd::Incomplete { .. } => ExitCode::from(3),
    })
}

pub async fn run(cfg: &Config) -> anyhow::Result<ExitCode> {
    let service = super::service::Service::from_env();
    let gateway = Gateway::open_writer(cfg, Arc::new(SystemClock))?;
    let token = CancellationToken::new();
    shutdown_on_signals(token.clone());
    let interval = cfg.sync.interval();
    tracing::info!(db = %gateway.store.path().display(), interval_secs = interval.as_secs(), "gateway running");
    // Every committed unit is a sign of life for the watchdog.
    let syncer = {
        let service = service.clone();
        gateway.syncer.with_progress(move |_| service.beat())
    };
    let store = AsyncStore::new(gateway.store.clone());
    // The HTTP server: health and readiness always, the power side's webhooks with their key.
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("[http] listen {}: {e}", cfg.http.listen))?;
    let listening = listener.local_addr()?;
    tracing::info!(
        listen = %listening,
        webhooks = cfg.power_webhook_secret.is_some(),
        "serving GET /healthz, GET /readyz, GET /metrics{}{}{}",
        if cfg.http.admin_tokens_file.is_some() { ", /admin/v1" } else { "" },
        if cfg.http.console_accounts_file.is_some() { ", /console" } else { "" },
        if cfg.power_webhook_secret.is_some() { ", POST /webhooks/power" } else { "" }
    );
    let intervals = i32::try_from(cfg.http.ready_max_pass_age_intervals.max(1)).unwrap_or(i32::MAX);
    let max_pass_age = chrono::Duration::from_std(interval)
        .unwrap_or(chrono::Duration::MAX)
        .checked_mul(intervals)
        .unwrap_or(chrono::Duration::MAX);
    // The process's one metrics recorder: the internal events record into it, `/metrics`
    // renders it. Installed once; a second install (never in `run`) would be refused.
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("metrics recorder not installed: {e}");
            None
        }
    };
    let admin_tokens = match &cfg.http.admin_tokens_file {
        Some(path) => {
            let tokens = crate::http::tokens::Tokens::load(path)?;
            if tokens.is_empty() {
                tracing::warn!(file = %path.display(), "the admin tokens file names no operator: /admin/v1 refuses every call");
            }
            Some(Arc::new(tokens))
        }
        None => None,
    };
    let console = match &cfg.http.console_accounts_file {
        Some(path) => {
            let accounts = crate::console::accounts::Accounts::load(path)?;
            if accounts.is_empty() {
                tracing::warn!(file = %path.display(), "the console accounts file names no one: nobody can sign in");
            }
            Some(Arc::new(crate::console::pages::Console {
                accounts,
                sessions: crate::console::session::Sessions::new(crate::console::pages::IDLE),
                mappings: crate::mapping::MappingSet::load(cfg.mappings.dir.as_deref())?,
                reports: Default::default(),
            }))
        }
        None => None,
    };
    let state = crate::http::HttpState {
        console,
        admin_tokens,
        metrics,
        store: store.clone(),
        clock: Arc::new(SystemClock),
        power_webhook_secret: cfg.power_webhook_secret.clone(),
        rebuilder: syncer.rebuilder().clone(),
        readiness: Some(Arc::new(crate::http::health::Readiness::new(
            cfg.mappings.dir.clone(),
            syncer.approval_client().clone(),
            max_pass_age,
        ))),
    };
    if state.console.is_some() {
        tokio::spawn(crate::console::boards::keep_current_quarter(
            state.clone(),
            token.clone(),
        ));
    }
    let http = Some(tokio::spawn(crate::http::serve(listener, state, token.clone())));
    // Calls to the power side go out beside the sync, on their own schedule.
    let delivery = gateway
        .deliverer
        .clone()
        .map(|d| tokio::spawn(deliver_until_cancelled(d, store.clone(), token.clone())));
    // The database is open and the server listens: ready.
    service.beat();
    service.ready(&format!("syncing into {}", gateway.store.path().display()));
    service.spawn_watchdog(token.clone());
    {
        // The manager hears of the stop when the signal comes, not when the loop has ended.
        let (service, token) = (service.clone(), token.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            service.stopping();
        });
    }
    while !token.is_cancelled() {
        service.beat();
        let started = std::time::Instant::now();
        let wait = match syncer.pass(&token).await {
            Ok(report) => {
                log_report(&report, started.elapsed().as_secs_f64());
                // Warnings and alarms are raised once each, when due, and recorded.
                let rules = gateway.rules.clone();
                let watched = store
                    .call(move |s| crate::deadlines::watch(s, &rules, Utc::now()))
                    .await;
                if let Err(e) = watched {
                    tracing::error!("deadline watch failed: {e}");
                }
                match &report.end {
                    PassEnd::Incomplete {
                        not_before: Some(t), ..
                    } => parse_time(t)
                        .and_then(|t| (t - Utc::now()).to_std().ok())
                        .map_or(interval, |d| d.max(interval)),
                    _ => interval,
                }
            }
            Err(e) => {
                // A refused account or a database error: say it loudly, keep the daemon alive,
                // and try again later; nothing was committed for the failed unit.
                crate::events::InternalEvent::emit(crate::events::PassFailed {
                    error: &e.to_string(),
                });
                interval.max(Duration::from_secs(60))
            }
        };
        service.status(&format!(
            "last pass ended {}; next in {} s",
            shuiwu_wire::format_human(Utc::now()),
            wait.as_secs()
        ));
        service.sleep(wait, &token).await;
    }
    if let Some(d) = delivery
        && let Err(e) = d.await
    {
        tracing::error!("the delivery worker ended abnormally: {e}");
    }
    if let Some(h) = http {
        match h.await {
            Ok(Err(e)) => tracing::error!("the HTTP server failed: {e}"),
            Err(e) => tracing::error!("the HTTP server ended abnormally: {e}"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// Delivery rounds until `token` fires: a round whenever a call is due, and at least every
/// few seconds to see calls the sync and operators planned meanwhile.
async fn deliver_until_cancelled(deliverer: Arc<Deliverer>, store: AsyncStore, token: CancellationToken) {
    const LOOK_EVERY: Duration = Duration::from_secs(5);
    while !token.is_cancelled() {
        match deliverer.round(&token).await {
            Ok(r) => crate::events::InternalEvent::emit(crate::events::CallsDelivered { report: &r }),
            Err(e) => tracing::error!("delivering calls to the power side failed: {e}"),
        }
        let wait = match store.call(|s| s.next_call_due()).await {
            Ok(Some(t)) => (t - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(LOOK_EVERY),
            _ => LOOK_EVERY,
        };
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
        }
    }
}
