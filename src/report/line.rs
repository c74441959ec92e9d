//! A record's report line: what the timeliness report reads of a record's current version,
//! kept beside the record (`report_lines`) whenever that version changes, so that a report of
//! a quarter reads a hundred bytes per record and parses nothing (1.7 s → well under 200 ms at
//! 100,000 records).
//!
//! A line holds facts of the content and nothing computed from settings: the district company
//! and manager, the category, the fee decision and the rule it came by, and each timed stage's
//! limit and instants. The working days a stage used depend on the holiday calendar, which
//! can change after the line is written, so the report counts them when it runs (with
//! [`crate::worktime::WorkingDays`], in constant time per stage).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One record's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub company: String,
    pub manager: String,
    pub category: String,
    pub free: bool,
    /// The policy's rule that made the connection free or not, without the record's own
    /// figures, so that records count together by rule (see `fee_rule` below).
    pub fee_rule: String,
    /// The stages with a working-day limit.
    pub stages: Vec<Stage>,
}

/// One timed stage; instants in seconds since 1970 (UTC). Its name is owned where a line is
/// made, borrowed from the row where a report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage<S = String> {
    pub stage: S,
    pub limit: f64,
    pub started: Option<i64>,
    pub due: Option<i64>,
    pub completed: Option<i64>,
    pub paused_secs: i64,
}

/// The part of a record's content a line is made of: serde skips the rest of the content
/// without building it, and the leaves stay `Value`s so that a line reads them exactly as the
/// report always has (a missing or mistyped leaf is "none", never an error).
#[derive(Deserialize, Serialize)]
struct Facts {
    #[serde(default)]
    decisions: Option<Decisions>,
    #[serde(default)]
    progress: Option<Progress>,
}

#[derive(Deserialize, Serialize)]
struct Decisions {
    #[serde(default)]
    customer_manager: Value,
    #[serde(default)]
    category: Value,
    #[serde(default)]
    fee: Value,
}

#[derive(Deserialize, Serialize)]
struct Progress {
    #[serde(default)]
    stages: Value,
}

impl Line {
    /// The line of a record's content JSON; `None` when the text is not JSON of an object
    /// (never for content the gateway wrote: it serialises typed records).
    pub fn of_json(content_json: &str) -> Option<Line> {
        let facts: Facts = serde_json::from_str(content_json).ok()?;
        let null = Value::Null;
        let (manager, category, fee) = facts.decisions.as_ref().map_or((&null, &null, &null), |d| {
            (&d.customer_manager, &d.category, &d.fee)
        });
        let text = |v: &Value| v.as_str().unwrap_or("(none)").to_string();
        let (free, fee_rule) = fee_rule(fee);
        Some(Line {
            company: text(&manager["company_name"]),
            manager: text(&manager["manager"]),
            category: category["id"].as_str().unwrap_or("(undecided)").to_string(),
            free,
            fee_rule,
            stages: facts
                .progress
                .as_ref()
                .map(|p| stages_of(&p.stages))
                .unwrap_or_default(),
        })
    }

    /// The stages as stored: one stage a line, its fields separated by tabs, `-` for an
    /// instant not reached.
    pub fn stages_text(&self) -> String {
        let instant = |t: Option<i64>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
        self.stages
            .iter()
            .map(|s| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.stage,
                    s.limit,
                    instant(s.started),
                    instant(s.due),
                    instant(s.completed),
                    s.paused_secs
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The stages of [`Line::stages_text`]; `None` when the text is not of that form.
    pub fn parse_stages(text: &str) -> Option<Vec<Stage<&str>>> {
        if text.is_empty() {
            return Some(Vec::new());
        }
        let instant = |t: &str| {
            if t == "-" {
                Some(None)
            } else {
                t.parse().ok().map(Some)
            }
        };
        text.split('\n')
            .map(|line| {
                let mut f = line.split('\t');
                let mut next = || f.next();
                let stage = Stage {
                    stage: next()?,
                    limit: next()?.parse().ok()?,
                    started: instant(next()?)?,
                    due: instant(next()?)?,
                    completed: instant(next()?)?,
                    paused_secs: next()?.parse().ok()?,
                };
                next().is_none().then_some(stage)
            })
            .collect()
    }
}

impl Stage {
    pub fn borrowed(&self) -> Stage<&str> {
        Stage {
            stage: self.stage.as_str(),
            limit: self.limit,
            started: self.started,
            due: self.due,
            completed: self.completed,
            paused_secs: self.paused_secs,
        }
    }
}

/// The stages with a working-day limit, as the report has always read them: a stage without
/// a numeric `working_days` is not timed; an instant that does not parse was not reached.
fn stages_of(stages: &Value) -> Vec<Stage> {
    let Some(stages) = stages.as_array() else {
        return Vec::new();
    };
    stages
        .iter()
        .filter_map(|s| {
            let time = |k: &str| {
                s[k].as_str()
                    .and_then(shuiwu_wire::parse_beijing)
                    .map(|t| t.timestamp())
            };
            Some(Stage {
                limit: s["working_days"].as_f64()?,
                stage: s["stage"].as_str().unwrap_or("?").to_string(),
                started: time("started_at"),
                due: time("due_at"),
                completed: time("completed_at"),
                paused_secs: s["paused_working_secs"].as_i64().unwrap_or(0),
            })
        })
        .collect()
}

/// Whether a record's connection is free, and the policy's rule that says so without the
/// record's own figures (`DN15 ≤ DN40 and external pipe 0 m ≤ 200 m` → `DN ≤ DN40 and external
/// pipe ≤ 200 m`), so that records count together by rule.
pub(super) fn fee_rule(fee: &Value) -> (bool, String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_the_decisions_and_timed_stages_and_nothing_personal() {
        let content = serde_json::json!({
            "project": {"name": "某项目", "code": "2026-530102-47-01-000001"},
            "contact": {"name": "张三", "phone": "13800000000"},
            "decisions": {
                "category": {"state": "decided", "id": "low_risk", "name": "低风险"},
                "customer_manager": {"company_name": "通用水务", "manager": "TY-02 王客户经理"},
                "fee": {"free": true, "reason": "DN25 ≤ DN40 and external pipe 10 m ≤ 200 m"},
            },
            "progress": {"state": "in_progress", "stages": [
                {"stage": "connection", "working_days": 2, "started_at": "2026-07-01 10:00:00",
                 "due_at": "2026-07-06 00:00:00", "completed_at": null, "paused_working_secs": 3600},
                {"stage": "survey", "working_days": null, "started_at": null},
            ]},
        });
        let line = Line::of_json(&content.to_string()).unwrap();
        let at = |s: &str| shuiwu_wire::parse_beijing(s).unwrap().timestamp();
        assert_eq!(
            line,
            Line {
                company: "通用水务".into(),
                manager: "TY-02 王客户经理".into(),
                category: "low_risk".into(),
                free: true,
                fee_rule: "DN ≤ DN40 and external pipe ≤ 200 m".into(),
                stages: vec![Stage {
                    stage: "connection".into(),
                    limit: 2.0,
                    started: Some(at("2026-07-01 10:00:00")),
                    due: Some(at("2026-07-06 00:00:00")),
                    completed: None,
                    paused_secs: 3600,
                }],
            }
        );
        let text = line.stages_text();
        assert!(!text.contains("13800000000") && !text.contains("某项目"));
        assert_eq!(
            Line::parse_stages(&text),
            Some(line.stages.iter().map(Stage::borrowed).collect())
        );
        assert_eq!(Line::parse_stages(""), Some(vec![]));
        assert_eq!(
            Line::parse_stages("connection\t2\t-\t-\t-"),
            None,
            "a field short"
        );
        assert_eq!(Line::parse_stages("connection\tx\t-\t-\t-\t0"), None);
        assert_eq!(Line::parse_stages("connection\t2\t-\t-\t-\t1x"), None);
        assert_eq!(Line::parse_stages("connection\t2\t-\t-\t-\t0\textra"), None);

        let bare = Line::of_json(r#"{"decisions": null}"#).unwrap();
        assert_eq!(
            (
                bare.company.as_str(),
                bare.category.as_str(),
                bare.fee_rule.as_str()
            ),
            ("(none)", "(undecided)", "not decided: (no decision)")
        );
        assert_eq!(Line::of_json("not json"), None);
    }

    #[test]
    fn fee_rules_leave_out_the_records_figures() {
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
