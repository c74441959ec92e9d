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

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::calendar::Calendar;

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

/// One record as the report reads it from the store.
#[derive(Debug, Clone)]
pub struct RecordRow {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// The current version's content, or its report facts (the same paths).
    pub content: Value,
    /// The deadline alerts raised for it: (stage, `warning` or `alarm`).
    pub alerts: Vec<(String, String)>,
    /// The latest zero-materials check: achieved, and the items it found missing.
    pub materials: Option<(bool, Vec<String>)>,
    /// Its joint applications: (power side's status, water status reported).
    pub joint: Vec<(String, Option<String>)>,
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
    fn finish(mut self) -> Figures {
        self.used.sort_by(f64::total_cmp);
        self.limits.sort_by(f64::total_cmp);
        self.figures.median_working_days_used = nearest_rank(&self.used, 50);
        self.figures.p90_working_days_used = nearest_rank(&self.used, 90);
        self.figures.limit_working_days = nearest_rank(&self.limits, 50);
        self.figures.paused_working_days = round2(self.figures.paused_working_days);
        self.figures
    }
}

/// The nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[f64], percent: u32) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (u64::from(percent) * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted.get(rank - 1).copied()
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

/// One timed stage of a record, as the report reads it.
struct StageFigures {
    stage: String,
    limit: f64,
    completed: bool,
    within: bool,
    used: Option<f64>,
    paused_days: f64,
}

/// What the report reads of a record's content, kept beside the record (`records.report_facts`)
/// whenever its current version changes, so that a report reads a few hundred bytes per record
/// instead of parsing its whole content: the district company and manager, the category, the
/// fee decision and the stages. A report computed from these facts is the report computed
/// from the content (the same paths, nothing else read).
#[derive(serde::Deserialize, Serialize)]
struct Facts {
    #[serde(default)]
    decisions: Option<FactDecisions>,
    #[serde(default)]
    progress: Option<FactProgress>,
}

#[derive(serde::Deserialize, Serialize)]
struct FactDecisions {
    #[serde(default)]
    customer_manager: Value,
    #[serde(default)]
    category: Value,
    #[serde(default)]
    fee: Value,
}

#[derive(serde::Deserialize, Serialize)]
struct FactProgress {
    #[serde(default)]
    stages: Value,
}

/// The report's facts of a record's content JSON (the struct `Facts`); `None` when the content is
/// not JSON of a record (never for content the gateway wrote), and the report then reads the
/// content itself.
pub fn facts(content_json: &str) -> Option<String> {
    let facts: Facts = serde_json::from_str(content_json).ok()?;
    serde_json::to_string(&facts).ok()
}

fn stages_of(content: &Value, calendar: &Calendar) -> Vec<StageFigures> {
    let day = crate::worktime::DAY_SECS as f64;
    let Some(stages) = content["progress"]["stages"].as_array() else {
        return Vec::new();
    };
    stages
        .iter()
        .filter_map(|s| {
            let limit = s["working_days"].as_f64()?;
            let time = |k: &str| s[k].as_str().and_then(shuiwu_wire::parse_beijing);
            let (started, due, completed) = (time("started_at"), time("due_at"), time("completed_at"));
            let paused = s["paused_working_secs"].as_i64().unwrap_or(0);
            let used = match (started, completed) {
                // Counted as the limit is: from 00:00 of the day after the stage started.
                (Some(a), Some(b)) => crate::worktime::clock_start(a)
                    .and_then(|from| crate::worktime::working_seconds(calendar, from, b))
                    .ok()
                    .map(|w| round2((w - paused).max(0) as f64 / day)),
                _ => None,
            };
            Some(StageFigures {
                stage: s["stage"].as_str().unwrap_or("?").to_string(),
                limit,
                completed: completed.is_some(),
                within: matches!((completed, due), (Some(c), Some(d)) if c <= d),
                used,
                paused_days: paused as f64 / day,
            })
        })
        .collect()
}

/// Whether a record's connection is free, and the policy's rule that says so without the
/// record's own figures (`DN15 ≤ DN40 and external pipe 0 m ≤ 200 m` → `DN ≤ DN40 and external
/// pipe ≤ 200 m`), so that records count together by rule.
fn fee_rule(fee: &Value) -> (bool, String) {
    let reason = fee["reason"].as_str().unwrap_or("(no decision)");
    match fee["free"].as_bool() {
        Some(true) => {
            let limits: Vec<String> = reason
                .split(" and ")
                .map(|clause| {
                    match (
                        clause.split_once(|c: char| c.is_ascii_digit()),
                        clause.rsplit_once("≤ "),
                    ) {
                        (Some((what, _)), Some((_, limit))) => format!("{} ≤ {limit}", what.trim_end()),
                        _ => clause.to_string(),
                    }
                })
                .collect();
            (true, limits.join(" and "))
        }
        Some(false) => {
            let rule = [" is above ", " is over "]
                .iter()
                .find_map(|sep| {
                    let (figure, limit) = reason.split_once(sep)?;
                    let what = figure
                        .split_once(|c: char| c.is_ascii_digit())
                        .map_or(figure, |(w, _)| w);
                    Some(format!(
                        "{} {} {limit}",
                        what.trim_end(),
                        sep.trim().trim_start_matches("is ")
                    ))
                })
                .unwrap_or_else(|| reason.to_string());
            (false, rule)
        }
        None => (false, format!("not decided: {reason}")),
    }
}

/// Computes the report for the records created in `period` (the caller reads them; rows of
/// other days are passed over).
pub fn timeliness(period: Period, rows: &[RecordRow], calendar: &Calendar) -> Timeliness {
    let mut total = Tally::default();
    let mut groups: [BTreeMap<String, Tally>; 3] = Default::default();
    let mut by_stage: BTreeMap<String, Tally> = BTreeMap::new();
    let mut zero = ZeroMaterials::default();
    let mut missed: BTreeMap<String, u64> = BTreeMap::new();
    let mut free: BTreeMap<String, u64> = BTreeMap::new();
    let mut not_free: BTreeMap<String, u64> = BTreeMap::new();
    let mut joint: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| period.contains(crate::worktime::date_of(r.created_at)))
    {
        let c = &r.content;
        let d = &c["decisions"];
        let text = |v: &Value| v.as_str().unwrap_or("(none)").to_string();
        let keys = [
            text(&d["customer_manager"]["company_name"]),
            text(&d["customer_manager"]["manager"]),
            d["category"]["id"].as_str().unwrap_or("(undecided)").to_string(),
        ];
        let stages = stages_of(c, calendar);
        let timed = !stages.is_empty();
        let completed = timed && stages.iter().all(|s| s.completed);
        let within = completed && stages.iter().all(|s| s.within);
        let used: Option<f64> = completed
            .then(|| stages.iter().map(|s| s.used).sum::<Option<f64>>())
            .flatten();
        let limit = timed.then(|| stages.iter().map(|s| s.limit).sum::<f64>());
        let paused: f64 = stages.iter().map(|s| s.paused_days).sum();
        let warnings = r.alerts.iter().filter(|(_, k)| k == "warning").count() as u64;
        let alarms = r.alerts.iter().filter(|(_, k)| k == "alarm").count() as u64;
        let tallies = std::iter::once(&mut total).chain(
            groups
                .iter_mut()
                .zip(&keys)
                .map(|(g, k)| g.entry(k.clone()).or_default()),
        );
        for t in tallies {
            let f = &mut t.figures;
            f.applications += 1;
            f.completed += u64::from(completed);
            f.completed_within_limit += u64::from(within);
            f.warnings += warnings;
            f.alarms += alarms;
            f.paused_working_days += paused;
            t.used.extend(used);
            t.limits.extend(limit);
        }
        for s in &stages {
            let t = by_stage.entry(s.stage.clone()).or_default();
            let f = &mut t.figures;
            f.applications += 1;
            f.completed += u64::from(s.completed);
            f.completed_within_limit += u64::from(s.within);
            f.warnings += r
                .alerts
                .iter()
                .filter(|(st, k)| st == &s.stage && k == "warning")
                .count() as u64;
            f.alarms += r
                .alerts
                .iter()
                .filter(|(st, k)| st == &s.stage && k == "alarm")
                .count() as u64;
            f.paused_working_days += s.paused_days;
            t.used.extend(s.used);
            t.limits.push(s.limit);
        }
        if let Some((achieved, missing)) = &r.materials {
            zero.checked += 1;
            zero.achieved += u64::from(*achieved);
            for m in missing {
                *missed.entry(m.clone()).or_default() += 1;
            }
        }
        let (is_free, rule) = fee_rule(&d["fee"]);
        *if is_free { &mut free } else { &mut not_free }
            .entry(rule)
            .or_default() += 1;
        for (status, water) in &r.joint {
            let key = format!("{status} / {}", water.as_deref().unwrap_or("-"));
            *joint.entry(key).or_default() += 1;
        }
    }
    zero.rate = (zero.checked > 0).then(|| round2(zero.achieved as f64 / zero.checked as f64));
    let mut most: Vec<(String, u64)> = missed.into_iter().collect();
    most.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    zero.most_missed = most;
    let finish = |m: BTreeMap<String, Tally>| m.into_iter().map(|(k, t)| (k, t.finish())).collect();
    let [by_company, by_manager, by_category] = groups;
    Timeliness {
        period,
        total: total.finish(),
        by_company: finish(by_company),
        by_manager: finish(by_manager),
        by_category: finish(by_category),
        by_stage: finish(by_stage),
        zero_materials: zero,
        free_of_charge: free,
        not_free,
        joint,
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

/// The report of the records created in `period`, read from the store.
pub fn from_store(
    store: &crate::store::Store,
    calendar: &Calendar,
    period: Period,
) -> Result<Timeliness, crate::store::StoreError> {
    let (from, to) = bounds(period);
    let rows = store.report_rows(from, to)?;
    Ok(timeliness(period, &rows, calendar))
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
    fn a_report_from_the_facts_is_the_report_from_the_content() {
        let content = serde_json::json!({
            "project": {"name": "某项目", "code": "2026-530102-47-01-000001"},
            "contact": {"name": "张三", "phone": "13800000000"},
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
        let text = content.to_string();
        let kept = facts(&text).unwrap();
        assert!(
            !kept.contains("13800000000") && !kept.contains("某项目"),
            "{kept}"
        );
        let row = |content: Value| RecordRow {
            id: "PE-1".into(),
            created_at: shuiwu_wire::parse_beijing("2026-07-01 09:00:00").unwrap(),
            content,
            alerts: vec![],
            materials: None,
            joint: vec![],
        };
        let cal = crate::calendar::Calendar::load(None).unwrap();
        let q = Period::quarter("2026Q3").unwrap();
        let from_content = timeliness(q, &[row(content)], &cal);
        let from_facts = timeliness(q, &[row(serde_json::from_str(&kept).unwrap())], &cal);
        assert_eq!(
            serde_json::to_value(&from_content).unwrap(),
            serde_json::to_value(&from_facts).unwrap()
        );
        assert_eq!(from_facts.total.completed_within_limit, 1);
        assert_eq!(
            facts(&serde_json::json!({"decisions": null}).to_string()).as_deref(),
            Some(r#"{"decisions":null,"progress":null}"#)
        );
        assert_eq!(facts("not json"), None);
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
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(nearest_rank(&v, 50), Some(5.0));
        assert_eq!(nearest_rank(&v, 90), Some(9.0));
        assert_eq!(nearest_rank(&[4.0], 90), Some(4.0));
        assert_eq!(nearest_rank(&[], 50), None);
        let rule =
            |free: Option<bool>, reason: &str| fee_rule(&serde_json::json!({"free": free, "reason": reason}));
        assert_eq!(
            rule(Some(true), "DN15 ≤ DN40 and external pipe 120 m ≤ 200 m"),
            (true, "DN ≤ DN40 and external pipe ≤ 200 m".to_string())
        );
        assert_eq!(
            rule(Some(false), "DN50 is above DN40: standard terms"),
            (false, "DN above DN40: standard terms".to_string())
        );
        assert_eq!(
            rule(Some(false), "external pipe 250 m is over 200 m: standard terms"),
            (false, "external pipe over 200 m: standard terms".to_string())
        );
        assert_eq!(
            rule(None, "connection diameter not known yet").1,
            "not decided: connection diameter not known yet"
        );
    }
}
