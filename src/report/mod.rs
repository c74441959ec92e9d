//! The timeliness report (工单时限考核): the records applied for in a period, by district
//! company, customer manager, category and stage, against the working-day limits of the
//! policy's tables; zero-materials achieved and the items most often missed; connections free
//! of charge and why; joint applications by their status on both sides.
//!
//! Computed from what the store holds and nothing else, so that every figure can be
//! reproduced from the records: a record belongs to the period of the day it was created
//! (Beijing time); a stage is *within the limit* when it was completed no later than its due
//! time (pauses already move the due time); *working days used* are the working time between
//! a stage's start and its completion less its paused working time, in working days; medians
//! and 90th percentiles are nearest-rank (the smallest value with at least that share of the
//! values at or below it).

mod line;

use std::collections::BTreeMap;

use hashbrown::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use crate::calendar::Calendar;
use crate::worktime::{DAY_SECS, WorkingDays};

pub use line::{Line, Stage};

/// The days a report covers, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    /// `2026Q3` → 1 July to 30 September 2026.
    pub fn quarter(text: &str) -> Result<Period, String> {
        let bad = || format!("{text:?} is not a quarter like 2026Q3");
        let (year, q) = text.split_once(['Q', 'q']).ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let q: u32 = q.parse().map_err(|_| bad())?;
        if !(1..=4).contains(&q) {
            return Err(bad());
        }
        let from = NaiveDate::from_ymd_opt(year, 3 * q - 2, 1).ok_or_else(bad)?;
        Ok(Period {
            from,
            to: last_day(NaiveDate::from_ymd_opt(year, 3 * q, 1).ok_or_else(bad)?),
        })
    }

    /// `2026-09` → 1 to 30 September 2026.
    pub fn month(text: &str) -> Result<Period, String> {
        let from = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
            .map_err(|_| format!("{text:?} is not a month like 2026-09"))?;
        Ok(Period {
            from,
            to: last_day(from),
        })
    }

    pub fn between(from: NaiveDate, to: NaiveDate) -> Result<Period, String> {
        if to < from {
            return Err(format!("the period ends ({to}) before it starts ({from})"));
        }
        Ok(Period { from, to })
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        (self.from..=self.to).contains(&day)
    }
}

fn last_day(first: NaiveDate) -> NaiveDate {
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    // The first of a month in chrono's range always has a successor month in range.
    next.and_then(|d| d.pred_opt()).unwrap_or(first)
}

/// One record as the report reads it, borrowed from the row the store is reading: a report is
/// summed while its rows are read, and nothing of a record is kept.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub company: &'a str,
    pub manager: &'a str,
    pub category: &'a str,
    pub free: bool,
    pub fee_rule: &'a str,
    pub stages: &'a [Stage<&'a str>],
    /// The deadline alerts raised for it: (stage, `warning` or `alarm`).
    pub alerts: &'a [(String, String)],
    /// The latest zero-materials check: achieved, and the items it found missing.
    pub materials: Option<(bool, &'a [String])>,
    /// Its joint applications: (power side's status, water status reported).
    pub joint: &'a [(String, Option<String>)],
}

/// The figures of one group of records (or of one stage).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub applications: u64,
    pub completed: u64,
    pub completed_within_limit: u64,
    pub warnings: u64,
    pub alarms: u64,
    pub paused_working_days: f64,
    pub median_working_days_used: Option<f64>,
    pub p90_working_days_used: Option<f64>,
    /// The limit of the table (the median limit when the group's records have several).
    pub limit_working_days: Option<f64>,
}

/// A group's figures while they are summed.
#[derive(Default)]
struct Tally {
    figures: Figures,
    used: Vec<f64>,
    limits: Vec<f64>,
}

impl Tally {
    fn count(&mut self, c: &Counted) {
        let f = &mut self.figures;
        f.applications += 1;
        f.completed += u64::from(c.completed);
        f.completed_within_limit += u64::from(c.within);
        f.warnings += c.warnings;
        f.alarms += c.alarms;
        f.paused_working_days += c.paused_days;
        self.used.extend(c.used);
        self.limits.extend(c.limit);
    }

    fn finish(mut self) -> Figures {
        self.figures.median_working_days_used = nearest_rank(&mut self.used, 50);
        self.figures.p90_working_days_used = nearest_rank(&mut self.used, 90);
        self.figures.limit_working_days = nearest_rank(&mut self.limits, 50);
        self.figures.paused_working_days = round2(self.figures.paused_working_days);
        self.figures
    }
}

/// The nearest-rank percentile of `values`: the smallest value with at least `percent` of the
/// values at or below it. Selects it in linear time (reordering `values`) rather than sorting
/// them: a quarter's report takes three percentiles of every group.
pub fn nearest_rank(values: &mut [f64], percent: u32) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = (u64::from(percent) * values.len() as u64).div_ceil(100).max(1) as usize;
    let (_, value, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
    Some(*value)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Timeliness {
    pub period: Period,
    pub total: Figures,
    pub by_company: BTreeMap<String, Figures>,
    pub by_manager: BTreeMap<String, Figures>,
    pub by_category: BTreeMap<String, Figures>,
    pub by_stage: BTreeMap<String, Figures>,
    /// Records checked for materials, those with zero materials, and the rate.
    pub zero_materials: ZeroMaterials,
    /// Connections free of charge, by the policy's rule that made them free, and the others by
    /// why not (or why it is not known yet).
    pub free_of_charge: BTreeMap<String, u64>,
    pub not_free: BTreeMap<String, u64>,
    /// Joint applications by (power side's status, water status).
    pub joint: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ZeroMaterials {
    pub checked: u64,
    pub achieved: u64,
    pub rate: Option<f64>,
    /// Items found missing, most often first.
    pub most_missed: Vec<(String, u64)>,
}

/// One record, or one of its timed stages, as a group counts it.
struct Counted {
    completed: bool,
    within: bool,
    warnings: u64,
    alarms: u64,
    paused_days: f64,
    used: Option<f64>,
    limit: Option<f64>,
}

fn stage_counted(s: &Stage<&str>, days: &WorkingDays, warnings: u64, alarms: u64) -> Counted {
    let day = DAY_SECS as f64;
    let used = match (s.started, s.completed) {
        // Counted as the limit is: from 00:00 of the day after the stage started.
        (Some(a), Some(b)) => days
            .seconds(WorkingDays::clock_start(a), b)
            .map(|w| round2((w - s.paused_secs).max(0) as f64 / day)),
        _ => None,
    };
    Counted {
        completed: s.completed.is_some(),
        within: matches!((s.completed, s.due), (Some(c), Some(d)) if c <= d),
        warnings,
        alarms,
        paused_days: s.paused_secs as f64 / day,
        used,
        limit: Some(s.limit),
    }
}

/// The entry of `name` in a map of groups: a group's name is copied once, when the group is
/// first seen, not for every record counted in it.
fn group<'m, T: Default>(map: &'m mut HashMap<String, T>, name: &str) -> &'m mut T {
    map.entry_ref(name).or_default()
}

fn sorted<T, U>(map: HashMap<String, T>, finish: impl Fn(T) -> U) -> BTreeMap<String, U> {
    map.into_iter().map(|(k, v)| (k, finish(v))).collect()
}

/// A report while it is summed: the records of the period are added one at a time, as the
/// store reads them ([`from_store`]).
pub struct Tallies {
    period: Period,
    days: WorkingDays,
    total: Tally,
    /// By district company, customer manager and category.
    groups: [HashMap<String, Tally>; 3],
    by_stage: HashMap<String, Tally>,
    zero: ZeroMaterials,
    missed: HashMap<String, u64>,
    free: HashMap<String, u64>,
    not_free: HashMap<String, u64>,
    joint: HashMap<String, u64>,
}

impl Tallies {
    pub fn new(period: Period, calendar: &Calendar) -> Tallies {
        Tallies {
            period,
            days: WorkingDays::new(calendar),
            total: Tally::default(),
            groups: Default::default(),
            by_stage: HashMap::new(),
            zero: ZeroMaterials::default(),
            missed: HashMap::new(),
            free: HashMap::new(),
            not_free: HashMap::new(),
            joint: HashMap::new(),
        }
    }

    /// Counts one record created in the period.
    pub fn add(&mut self, r: &RecordRef<'_>) {
        // The alerts of the record, or of one of its stages.
        let alerts = |stage: Option<&str>, kind: &str| {
            r.alerts
                .iter()
                .filter(|(s, k)| k == kind && stage.is_none_or(|stage| s == stage))
                .count() as u64
        };
        let timed = !r.stages.is_empty();
        // A record is completed (within its limit) when every one of its timed stages is; it
        // used the sum of its stages' working days and had the sum of their limits.
        let mut record = Counted {
            completed: timed,
            within: true,
            warnings: alerts(None, "warning"),
            alarms: alerts(None, "alarm"),
            paused_days: 0.0,
            used: Some(0.0),
            limit: timed.then_some(0.0),
        };
        for s in r.stages {
            let stage = stage_counted(
                s,
                &self.days,
                alerts(Some(s.stage), "warning"),
                alerts(Some(s.stage), "alarm"),
            );
            record.completed &= stage.completed;
            record.within &= stage.within;
            record.used = record.used.zip(stage.used).map(|(a, b)| a + b);
            record.limit = record.limit.map(|l| l + s.limit);
            record.paused_days += stage.paused_days;
            group(&mut self.by_stage, s.stage).count(&stage);
        }
        record.within &= record.completed;
        if !record.completed {
            record.used = None;
        }
        let [companies, managers, categories] = &mut self.groups;
        for t in [
            &mut self.total,
            group(companies, r.company),
            group(managers, r.manager),
            group(categories, r.category),
        ] {
            t.count(&record);
        }
        if let Some((achieved, missing)) = r.materials {
            self.zero.checked += 1;
            self.zero.achieved += u64::from(achieved);
            for m in missing {
                *group(&mut self.missed, m) += 1;
            }
        }
        *group(
            if r.free {
                &mut self.free
            } else {
                &mut self.not_free
            },
            r.fee_rule,
        ) += 1;
        for (status, water) in r.joint {
            let key = format!("{status} / {}", water.as_deref().unwrap_or("-"));
            *group(&mut self.joint, &key) += 1;
        }
    }

    pub fn finish(self) -> Timeliness {
        let mut zero = self.zero;
        zero.rate = (zero.checked > 0).then(|| round2(zero.achieved as f64 / zero.checked as f64));
        let mut most: Vec<(String, u64)> = self.missed.into_iter().collect();
        most.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        zero.most_missed = most;
        let [by_company, by_manager, by_category] = self.groups;
        Timeliness {
            period: self.period,
            total: self.total.finish(),
            by_company: sorted(by_company, Tally::finish),
            by_manager: sorted(by_manager, Tally::finish),
            by_category: sorted(by_category, Tally::finish),
            by_stage: sorted(self.by_stage, Tally::finish),
            zero_materials: zero,
            free_of_charge: sorted(self.free, |n| n),
            not_free: sorted(self.not_free, |n| n),
            joint: sorted(self.joint, |n| n),
        }
    }
}

/// The groups of a report, each with its dimension's name: `total`, `company`, `manager`,
/// `category`, `stage`.
pub fn groups(r: &Timeliness) -> Vec<(&'static str, &str, &Figures)> {
    let mut out = vec![("total", "all", &r.total)];
    for (dimension, map) in [
        ("company", &r.by_company),
        ("manager", &r.by_manager),
        ("category", &r.by_category),
        ("stage", &r.by_stage),
    ] {
        out.extend(map.iter().map(|(k, f)| (dimension, k.as_str(), f)));
    }
    out
}

pub const COLUMNS: [&str; 11] = [
    "dimension",
    "group",
    "applications",
    "completed",
    "within_limit",
    "warnings",
    "alarms",
    "paused_working_days",
    "median_working_days_used",
    "p90_working_days_used",
    "limit_working_days",
];

pub fn cells(dimension: &str, group: &str, f: &Figures) -> Vec<String> {
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    vec![
        dimension.to_string(),
        group.to_string(),
        f.applications.to_string(),
        f.completed.to_string(),
        f.completed_within_limit.to_string(),
        f.warnings.to_string(),
        f.alarms.to_string(),
        f.paused_working_days.to_string(),
        opt(f.median_working_days_used),
        opt(f.p90_working_days_used),
        opt(f.limit_working_days),
    ]
}

/// The report's groups as CSV (RFC 4180), one row per group.
pub fn to_csv(r: &Timeliness) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for (dimension, group, f) in groups(r) {
        w.write_record(cells(dimension, group, f))?;
    }
    let bytes = w.into_inner().map_err(|e| csv::Error::from(e.into_error()))?;
    // Every field written is a Rust string: the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The report of the records created in `period`, summed while the store reads them.
pub fn from_store(
    store: &crate::store::Store,
    calendar: &Calendar,
    period: Period,
) -> Result<Timeliness, crate::store::StoreError> {
    let (from, to) = bounds(period);
    let mut tallies = Tallies::new(period, calendar);
    store.report_records(from, to, |r| tallies.add(r))?;
    Ok(tallies.finish())
}

/// The instants a period's records are created between: from 00:00 Beijing time of its first
/// day (included) to 00:00 of the day after its last (excluded).
pub fn bounds(period: Period) -> (DateTime<Utc>, DateTime<Utc>) {
    // The day after a period that ends at chrono's last day does not exist; nothing is
    // created then either.
    let next = period.to.succ_opt().unwrap_or(period.to);
    (
        crate::worktime::midnight(period.from),
        crate::worktime::midnight(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_stages_against_their_limits() {
        let content = serde_json::json!({
            "decisions": {
                "category": {"state": "decided", "id": "low_risk", "name": "低风险"},
                "customer_manager": {"company_name": "通用水务", "manager": "TY-02 王客户经理"},
                "fee": {"free": true, "reason": "DN25 ≤ DN40 and external pipe 10 m ≤ 200 m"},
                "stages": {"state": "limits"},
            },
            "progress": {"state": "completed", "stages": [
                {"stage": "connection", "working_days": 2, "started_at": "2026-07-01 10:00:00",
                 "due_at": "2026-07-06 00:00:00", "completed_at": "2026-07-03 12:00:00", "paused_working_secs": 0}
            ]},
        });
        let line = Line::of_json(&content.to_string()).unwrap();
        let stages: Vec<Stage<&str>> = line.stages.iter().map(Stage::borrowed).collect();
        let (alerts, missing) = (
            [("connection".to_string(), "warning".to_string())],
            ["planning_permit".to_string()],
        );
        let row = RecordRef {
            company: &line.company,
            manager: &line.manager,
            category: &line.category,
            free: line.free,
            fee_rule: &line.fee_rule,
            stages: &stages,
            alerts: &alerts,
            materials: Some((false, &missing)),
            joint: &[],
        };
        let cal = crate::calendar::Calendar::load(None).unwrap();
        let mut tallies = Tallies::new(Period::quarter("2026Q3").unwrap(), &cal);
        tallies.add(&row);
        let r = tallies.finish();
        assert_eq!((r.total.completed_within_limit, r.total.warnings), (1, 1));
        assert_eq!(r.by_stage["connection"].warnings, 1);
        // Thursday 2 July 00:00 to Friday 3 July 12:00: one and a half working days.
        assert_eq!(r.by_stage["connection"].median_working_days_used, Some(1.5));
        assert_eq!(r.by_company["通用水务"].limit_working_days, Some(2.0));
        assert_eq!(r.free_of_charge["DN ≤ DN40 and external pipe ≤ 200 m"], 1);
        assert_eq!(
            r.zero_materials.most_missed,
            vec![("planning_permit".to_string(), 1)]
        );
        assert_eq!(r.zero_materials.rate, Some(0.0));
    }

    #[test]
    fn periods_and_percentiles() {
        let q = Period::quarter("2026Q3").unwrap();
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2026-07-01".into(), "2026-09-30".into())
        );
        assert_eq!(Period::quarter("2026Q4").unwrap().to.to_string(), "2026-12-31");
        assert_eq!(Period::month("2024-02").unwrap().to.to_string(), "2024-02-29");
        assert!(Period::quarter("2026Q5").is_err());
        let mut v = [7.0, 2.0, 10.0, 4.0, 5.0, 6.0, 1.0, 8.0, 9.0, 3.0];
        assert_eq!(nearest_rank(&mut v, 50), Some(5.0));
        assert_eq!(nearest_rank(&mut v, 90), Some(9.0));
        assert_eq!(nearest_rank(&mut v, 100), Some(10.0));
        assert_eq!(nearest_rank(&mut [4.0], 90), Some(4.0));
        assert_eq!(nearest_rank(&mut [], 50), None);
    }
}
