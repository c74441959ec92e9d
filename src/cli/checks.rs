//! The commands that check before anything runs: `gateway config check` (everything `run`
//! loads) and `gateway health` (whether the gateway can do its work now).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{load_config, mappings_dir_from, open_store};

/// `gateway config check`: everything `gateway run` loads before it starts, without starting.
pub(super) fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load_config(path)?;
    let dir = cfg.mappings.dir.as_deref();
    let mappings = crate::mapping::MappingSet::load(dir).context("loading mapping files")?;
    for name in [crate::app::PROJECT_MAPPING, crate::app::LICENCE_MAPPING] {
        mappings
            .get(name)
            .with_context(|| format!("no mapping file defines {name:?}"))?;
    }
    let policies = crate::policy::PolicySet::load(dir).context("loading the policy")?;
    let calendar = crate::calendar::Calendar::load(dir).context("loading holiday calendars")?;
    outln!("configuration {} is valid", path.display());
    outln!(
        "  approval platform {} as {}",
        cfg.approval.base_url,
        cfg.approval.app_id
    );
    match &cfg.licences {
        Some(l) => outln!("  licence library {} as {}", l.base_url, l.app_id),
        None => outln!("  licence library: not configured (no zero-materials check)"),
    }
    match &cfg.power {
        Some(p) => outln!("  power utility {} as {}", p.base_url, p.client_id),
        None => outln!("  power utility: not configured (nothing sent to or polled from the power side)"),
    }
    outln!("  database {}", cfg.store.path.display());
    outln!(
        "  {} mapping files, policy versions {}, holiday calendars {}",
        mappings.all().count(),
        policies
            .versions()
            .iter()
            .map(|p| p.version.clone())
            .collect::<Vec<_>>()
            .join(", "),
        calendar
            .years()
            .map(|y| y.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(w) = calendar.coverage_warning(shuiwu_wire::beijing_today()) {
        outln!("  warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `gateway health`: exit 0 when the gateway can do its work, 1 with the reasons when not.
pub(super) fn health(config: &Path, db: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let today = shuiwu_wire::beijing_today();
    let calendar = crate::calendar::Calendar::load(mappings_dir_from(config).as_deref());
    let years: Vec<i32> = match &calendar {
        Ok(c) => {
            if let Some(w) = c.coverage_warning(today) {
                problems.push(w);
            }
            c.years().collect()
        }
        Err(e) => {
            problems.push(format!("holiday calendars: {e}"));
            Vec::new()
        }
    };
    let store = open_store(config, db);
    if let Ok(s) = &store {
        match s.quick_check() {
            Ok(found) if found.is_empty() => {}
            Ok(found) => problems.push(format!(
                "database damaged (PRAGMA quick_check): {}",
                found.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            )),
            Err(e) => problems.push(format!("database damaged: {e}")),
        }
    }
    let (records, cursor) = match &store {
        Ok(s) => (
            s.record_count().ok(),
            s.cursor("approval").ok().flatten().map(shuiwu_wire::format_human),
        ),
        Err(e) => {
            problems.push(format!("database: {e:#}"));
            (None, None)
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "healthy": problems.is_empty(), "problems": problems, "calendar_years": years,
                "records": records, "approval_cursor": cursor,
            }))?
        );
    } else {
        outln!(
            "holiday calendars: {}",
            years.iter().map(|y| y.to_string()).collect::<Vec<_>>().join(", ")
        );
        if let Some(n) = records {
            outln!(
                "records: {n}; approval cursor: {}",
                cursor.as_deref().unwrap_or("(none yet)")
            );
        }
        for p in &problems {
            outln!("PROBLEM: {p}");
        }
        outln!(
            "{}",
            if problems.is_empty() {
                "healthy"
            } else {
                "NOT HEALTHY"
            }
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
