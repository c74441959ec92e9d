//! `gateway report timeliness`: the timeliness report of a quarter, a month or any days, as a
//! table, JSON (`--json`, everything) or CSV (`--csv`, one row per group and stage).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::NaiveDate;

use super::table;
use crate::report::{COLUMNS, Period, Timeliness, cells, groups, to_csv};
use crate::store::Store;

/// Which days a report covers, as asked on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeriodArgs {
    /// A quarter, e.g. 2026Q3.
    #[arg(long, conflicts_with_all = ["month", "from", "to"])]
    pub quarter: Option<String>,
    /// A month, e.g. 2026-09.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub month: Option<String>,
    /// The first day (Beijing), with --to.
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    /// The last day, included.
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
}

impl PeriodArgs {
    pub fn period(&self) -> anyhow::Result<Period> {
        let p = match (&self.quarter, &self.month, self.from, self.to) {
            (Some(q), ..) => Period::quarter(q),
            (_, Some(m), ..) => Period::month(m),
            (_, _, Some(from), Some(to)) => Period::between(from, to),
            _ => bail!("say which days: --quarter 2026Q3, --month 2026-09 or --from DAY --to DAY"),
        };
        p.map_err(anyhow::Error::msg)
    }
}

/// Computes the report from the store.
pub fn compute(store: &Store, mappings_dir: Option<&Path>, period: Period) -> anyhow::Result<Timeliness> {
    let calendar = crate::calendar::Calendar::load(mappings_dir).context("loading holiday calendars")?;
    Ok(crate::report::from_store(store, &calendar, period)?)
}

/// `gateway report timeliness`.
pub fn timeliness(
    store: &Store,
    mappings_dir: Option<&Path>,
    args: &PeriodArgs,
    json: bool,
    csv: bool,
) -> anyhow::Result<ExitCode> {
    let report = compute(store, mappings_dir, args.period()?)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if csv {
        outln!("{}", to_csv(&report)?);
    } else {
        print(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print(r: &Timeliness) {
    outln!(
        "timeliness report {} to {} (records by the day they were created)",
        r.period.from,
        r.period.to
    );
    let rows: Vec<Vec<String>> = groups(r).into_iter().map(|(d, g, f)| cells(d, g, f)).collect();
    table::print(&COLUMNS, &rows);
    let z = &r.zero_materials;
    outln!(
        "zero materials: {} of {} checked records{}",
        z.achieved,
        z.checked,
        z.rate
            .map_or_else(String::new, |rate| format!(" ({:.0} %)", rate * 100.0))
    );
    for (item, n) in z.most_missed.iter().take(5) {
        outln!("  missing {item}: {n} records");
    }
    outln!(
        "free of charge: {} records",
        r.free_of_charge.values().sum::<u64>()
    );
    for (why, n) in &r.free_of_charge {
        outln!("  {n} × {why}");
    }
    outln!("not free: {} records", r.not_free.values().sum::<u64>());
    for (why, n) in &r.not_free {
        outln!("  {n} × {why}");
    }
    if !r.joint.is_empty() {
        outln!("joint applications (power side / water status):");
        for (status, n) in &r.joint {
            outln!("  {status}: {n}");
        }
    }
}
