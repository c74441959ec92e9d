//! `gateway calendar …`: working days for people and scripts, from the same data and the same
//! arithmetic as every deadline.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Subcommand;
use serde_json::json;
use shuiwu_wire::{format_human, format_rfc3339};

use crate::calendar::Calendar;
use crate::worktime;

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Whether DATE (yyyy-MM-dd) is a working day, and why.
    IsWorkday {
        date: String,
        #[arg(long)]
        json: bool,
    },
    /// When an N-working-day limit started at START is due (START: "yyyy-MM-dd HH:mm:ss" or
    /// yyyy-MM-dd, Beijing time). The start day does not count; the limit ends at 24:00.
    Due {
        start: String,
        n: u32,
        #[arg(long)]
        json: bool,
    },
    /// Working days after FROM up to and including TO (yyyy-MM-dd).
    Count {
        from: String,
        to: String,
        #[arg(long)]
        json: bool,
    },
}

fn date(text: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .with_context(|| format!("{text:?} is not a date yyyy-MM-dd"))
}

fn instant(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Some(t) = shuiwu_wire::parse_time(text) {
        return Ok(t);
    }
    date(text).map(worktime::midnight).with_context(|| {
        format!("{text:?} is neither RFC 3339, yyyy-MM-dd HH:mm:ss (Beijing time) nor yyyy-MM-dd")
    })
}

/// `yyyy-MM-dd 24:00` for an instant at midnight (how limits are written), else the time.
fn due_text(t: DateTime<Utc>) -> String {
    if t == worktime::midnight(worktime::date_of(t)) {
        let day = worktime::date_of(t - chrono::Duration::seconds(1));
        format!("{day} 24:00")
    } else {
        format_human(t)
    }
}

pub fn run(calendar: &Calendar, command: CalendarCommand) -> anyhow::Result<ExitCode> {
    match command {
        CalendarCommand::IsWorkday { date: d, json } => {
            let day = calendar.day(date(&d)?)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&day)?);
            } else {
                let what = if day.working {
                    "a working day"
                } else {
                    "not a working day"
                };
                outln!("{} is {what}: {}", day.date, day.reason);
            }
        }
        CalendarCommand::Due { start, n, json } => {
            let started = instant(&start)?;
            let due = worktime::due(calendar, started, n)?;
            if json {
                let v = json!({"start": format_rfc3339(started), "working_days": n,
                               "due": format_rfc3339(due), "due_display": due_text(due)});
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                outln!(
                    "a {n}-working-day limit started {} is due {} (Beijing time)",
                    format_human(started),
                    due_text(due)
                );
            }
        }
        CalendarCommand::Count { from, to, json } => {
            let (f, t) = (date(&from)?, date(&to)?);
            let n = worktime::count(calendar, f, t)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"from": f, "to": t, "working_days": n}))?
                );
            } else {
                outln!("{n} working days after {f} up to and including {t}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
