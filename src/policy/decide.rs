//! Applying a policy to one record: category (or provisional), table, stages, the "11000"
//! mode, the fee exemption and the customer manager — each with the rule and inputs it used.
//!
//! A figure the rules need but the platform has not given yet (floor area, pipe length, …) is
//! not guessed: every value range the rules distinguish is tried, and when the ranges lead to
//! different categories the record is *provisional* and lists the category under each outcome.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use sha2::{Digest, Sha256};

use super::decisions::*;
use super::{CategoryRule, Policy, Table, Works};

/// A category the record may turn out to have (`None`: no rule applies), with the conditions
/// that give it.
type PossibleCategory = (Option<String>, Vec<String>);

/// The figures a category waits for, and the categories a record may have: one when decided,
/// one per outcome when provisional.
fn category_outcomes(category: &CategoryDecision) -> (Vec<String>, Vec<PossibleCategory>) {
    match category {
        CategoryDecision::Decided { id, .. } => (Vec::new(), vec![(Some(id.clone()), Vec::new())]),
        CategoryDecision::Provisional { missing, outcomes } => (
            missing.clone(),
            outcomes
                .iter()
                .map(|o| (o.category.clone(), o.when.clone()))
                .collect(),
        ),
        CategoryDecision::None { .. } => (Vec::new(), vec![(None, Vec::new())]),
    }
}

/// The figures the category rules can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    BuildingUse,
    Nature,
    FloorArea,
    Height,
    Hazardous,
    Diameter,
    Pipe,
}

impl Figure {
    const ALL: [Figure; 7] = [
        Figure::BuildingUse,
        Figure::Nature,
        Figure::FloorArea,
        Figure::Height,
        Figure::Hazardous,
        Figure::Diameter,
        Figure::Pipe,
    ];

    fn field(self) -> &'static str {
        match self {
            Figure::BuildingUse => "project.building_use",
            Figure::Nature => "project.nature",
            Figure::FloorArea => "building.floor_area_m2",
            Figure::Height => "building.height_m",
            Figure::Hazardous => "building.hazardous_goods",
            Figure::Diameter => "water.diameter_dn",
            Figure::Pipe => "water.external_pipe_m",
        }
    }

    fn known(self, i: &Inputs) -> bool {
        match self {
            Figure::BuildingUse => i.building_use.is_some(),
            Figure::Nature => i.nature.is_some(),
            Figure::FloorArea => i.floor_area_m2.is_some(),
            Figure::Height => i.height_m.is_some(),
            Figure::Hazardous => i.hazardous_goods.is_some(),
            Figure::Diameter => i.diameter_dn.is_some(),
            Figure::Pipe => i.external_pipe_m.is_some(),
        }
    }

    fn used_by(self, r: &CategoryRule) -> bool {
        match self {
            Figure::BuildingUse => r.building_uses.is_some() || r.residential.is_some(),
            Figure::Nature => r.natures.is_some(),
            Figure::FloorArea => r.max_floor_area_m2.is_some(),
            Figure::Height => r.max_height_m.is_some(),
            Figure::Hazardous => r.hazardous_goods.is_some(),
            Figure::Diameter => {
                r.max_diameter_dn.is_some()
                    || r.min_diameter_dn.is_some()
                    || r.min_diameter_dn_above.is_some()
            }
            Figure::Pipe => r.max_external_pipe_m.is_some(),
        }
    }
}

/// One value a missing figure is tried with, and how the outcome describes it.
#[derive(Debug, Clone)]
struct Candidate {
    set: fn(&mut Inputs, &Candidate),
    text: Option<String>,
    decimal: Option<Decimal>,
    integer: Option<i64>,
    flag: Option<bool>,
    label: String,
}

fn decimal_candidates(
    thresholds: Vec<Decimal>,
    unit: &str,
    set: fn(&mut Inputs, &Candidate),
) -> Vec<Candidate> {
    let mut t = thresholds;
    t.sort();
    t.dedup();
    let mut out = Vec::new();
    for (i, v) in t.iter().enumerate() {
        let label = match i {
            0 => format!("≤ {v} {unit}"),
            _ => format!("> {} and ≤ {v} {unit}", t[i - 1]),
        };
        out.push(Candidate {
            set,
            text: None,
            decimal: Some(*v),
            integer: None,
            flag: None,
            label,
        });
    }
    if let Some(last) = t.last() {
        out.push(Candidate {
            set,
            text: None,
            decimal: Some(*last + Decimal::new(1, 2)),
            integer: None,
            flag: None,
            label: format!("> {last} {unit}"),
        });
    }
    out
}

fn candidates(figure: Figure, rules: &[&CategoryRule]) -> Vec<Candidate> {
    match figure {
        Figure::BuildingUse | Figure::Nature => {
            let mut codes: Vec<String> = rules
                .iter()
                .flat_map(|r| {
                    if figure == Figure::Nature {
                        r.natures.clone()
                    } else {
                        r.building_uses.clone()
                    }
                    .unwrap_or_default()
                })
                .collect();
            if figure == Figure::BuildingUse {
                codes.push("0101".into());
            }
            codes.sort();
            codes.dedup();
            let set: fn(&mut Inputs, &Candidate) = if figure == Figure::Nature {
                |i, c| i.nature = c.text.clone()
            } else {
                |i, c| i.building_use = c.text.clone()
            };
            let mut out: Vec<Candidate> = codes
                .iter()
                .map(|c| Candidate {
                    set,
                    text: Some(c.clone()),
                    decimal: None,
                    integer: None,
                    flag: None,
                    label: format!("= {c}"),
                })
                .collect();
            out.push(Candidate {
                set,
                text: Some("(other)".into()),
                decimal: None,
                integer: None,
                flag: None,
                label: format!("not one of {}", codes.join(", ")),
            });
            out
        }
        Figure::FloorArea => decimal_candidates(
            rules.iter().filter_map(|r| r.max_floor_area_m2).collect(),
            "m²",
            |i, c| i.floor_area_m2 = c.decimal,
        ),
        Figure::Height => decimal_candidates(
            rules.iter().filter_map(|r| r.max_height_m).collect(),
            "m",
            |i, c| i.height_m = c.decimal,
        ),
        Figure::Pipe => decimal_candidates(
            rules.iter().filter_map(|r| r.max_external_pipe_m).collect(),
            "m",
            |i, c| i.external_pipe_m = c.decimal,
        ),
        Figure::Hazardous => [false, true]
            .into_iter()
            .map(|b| Candidate {
                set: |i, c| i.hazardous_goods = c.flag,
                text: None,
                decimal: None,
                integer: None,
                flag: Some(b),
                label: if b { "yes".into() } else { "no".into() },
            })
            .collect(),
        Figure::Diameter => {
            let mut t: Vec<i64> = rules
                .iter()
                .flat_map(|r| {
                    [
                        r.max_diameter_dn,
                        r.min_diameter_dn_above,
                        r.min_diameter_dn.map(|d| d - 1),
                    ]
                })
                .flatten()
                .collect();
            t.sort();
            t.dedup();
            let set: fn(&mut Inputs, &Candidate) = |i, c| i.diameter_dn = c.integer;
            let mut out: Vec<Candidate> = t
                .iter()
                .enumerate()
                .map(|(k, v)| Candidate {
                    set,
                    text: None,
                    decimal: None,
                    integer: Some(*v),
                    flag: None,
                    label: if k == 0 {
                        format!("≤ DN{v}")
                    } else {
                        format!("> DN{} and ≤ DN{v}", t[k - 1])
                    },
                })
                .collect();
            if let Some(last) = t.last() {
                out.push(Candidate {
                    set,
                    text: None,
                    decimal: None,
                    integer: Some(last + 1),
                    flag: None,
                    label: format!("> DN{last}"),
                });
            }
            out
        }
    }
}

/// Whether a rule matches inputs whose every figure it reads is known.
fn matches(r: &CategoryRule, i: &Inputs) -> bool {
    let residential = i.building_use.as_deref().map(|u| u == "0101");
    let within = |limit: Option<Decimal>, v: Option<Decimal>| limit.is_none_or(|l| v.is_some_and(|v| v <= l));
    r.residential.is_none_or(|want| residential == Some(want))
        && r.natures
            .as_ref()
            .is_none_or(|n| i.nature.as_ref().is_some_and(|v| n.contains(v)))
        && r.building_uses
            .as_ref()
            .is_none_or(|u| i.building_use.as_ref().is_some_and(|v| u.contains(v)))
        && within(r.max_floor_area_m2, i.floor_area_m2)
        && within(r.max_height_m, i.height_m)
        && r.hazardous_goods.is_none_or(|h| i.hazardous_goods == Some(h))
        && r.min_diameter_dn_above
            .is_none_or(|m| i.diameter_dn.is_some_and(|d| d > m))
        && r.min_diameter_dn
            .is_none_or(|m| i.diameter_dn.is_some_and(|d| d >= m))
        && r.max_diameter_dn
            .is_none_or(|m| i.diameter_dn.is_some_and(|d| d <= m))
        && within(r.max_external_pipe_m, i.external_pipe_m)
}

fn first_match<'a>(rules: &[&'a CategoryRule], i: &Inputs) -> Option<&'a CategoryRule> {
    rules.iter().copied().find(|r| matches(r, i))
}

/// The category, provisional where figures are missing, with the rule that decided it.
fn categorise(policy: &Policy, inputs: &Inputs) -> (CategoryDecision, String) {
    let Some(applicant) = inputs.applicant else {
        return (
            CategoryDecision::None {
                reason: "no platform data yet: without the approval platform's building figures no category rule applies (table A until the data is found)".into(),
            },
            "none".into(),
        );
    };
    let rules: Vec<&CategoryRule> = policy
        .categories
        .iter()
        .filter(|r| r.applicant == applicant)
        .collect();
    let missing: Vec<Figure> = Figure::ALL
        .into_iter()
        .filter(|f| !f.known(inputs) && rules.iter().any(|r| f.used_by(r)))
        .collect();
    let options: Vec<Vec<Candidate>> = missing.iter().map(|f| candidates(*f, &rules)).collect();
    // Every combination of candidate values: (indices, category).
    let mut scenarios: Vec<(Vec<usize>, Option<String>)> = Vec::new();
    let mut idx = vec![0usize; missing.len()];
    loop {
        let mut trial = inputs.clone();
        for (f, &k) in idx.iter().enumerate() {
            let c = &options[f][k];
            (c.set)(&mut trial, c);
        }
        scenarios.push((idx.clone(), first_match(&rules, &trial).map(|r| r.id.clone())));
        // Next combination, odometer style.
        let mut pos = 0;
        loop {
            if pos == idx.len() {
                return finish(policy, &missing, &options, scenarios);
            }
            idx[pos] += 1;
            if idx[pos] < options[pos].len() {
                break;
            }
            idx[pos] = 0;
            pos += 1;
        }
    }
}

/// The decision from every scenario's category: decided when they agree, else provisional.
fn finish(
    policy: &Policy,
    missing: &[Figure],
    options: &[Vec<Candidate>],
    scenarios: Vec<(Vec<usize>, Option<String>)>,
) -> (CategoryDecision, String) {
    let first = scenarios.first().and_then(|s| s.1.clone());
    if scenarios.iter().all(|s| s.1 == first) {
        return match first.and_then(|id| policy.category(&id)) {
            Some(rule) => (
                CategoryDecision::Decided {
                    id: rule.id.clone(),
                    name: rule.name.clone(),
                },
                format!(
                    "category {} (rule at {}:{}; rules checked in order, first match wins)",
                    rule.id, policy.file, rule.line
                ),
            ),
            None => (
                CategoryDecision::None {
                    reason: "no category rule applies".into(),
                },
                format!("no rule of {} applies", policy.file),
            ),
        };
    }
    // Group by category; drop a figure from a group's conditions when every value of it
    // gives that category whatever the others are.
    let mut by_category: BTreeMap<Option<String>, Vec<Vec<usize>>> = BTreeMap::new();
    for (idx, cat) in scenarios {
        by_category.entry(cat).or_default().push(idx);
    }
    let mut outcomes = Vec::new();
    for (category, members) in by_category {
        let mut relevant: Vec<bool> = vec![true; missing.len()];
        for f in 0..missing.len() {
            let all_variants = members.iter().all(|m| {
                (0..options[f].len()).all(|k| {
                    let mut v = m.clone();
                    v[f] = k;
                    members.contains(&v)
                })
            });
            if all_variants {
                relevant[f] = false;
            }
        }
        let mut conditions: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                (0..missing.len())
                    .filter(|&f| relevant[f])
                    .map(|f| format!("{} {}", missing[f].field(), options[f][m[f]].label))
                    .collect()
            })
            .collect();
        conditions.sort();
        conditions.dedup();
        for when in conditions {
            outcomes.push(Outcome {
                category: category.clone(),
                when,
            });
        }
    }
    (
        CategoryDecision::Provisional {
            missing: missing.iter().map(|f| f.field().to_string()).collect(),
            outcomes,
        },
        format!(
            "provisional: rules of {} give different categories for the missing figures",
            policy.file
        ),
    )
}

/// Applies `policy` to a record's inputs. `manager` is the customer manager the record already
/// has: it stays. A new record gets one from its district's company roster.
pub fn decide(
    policy: &Policy,
    inputs: &Inputs,
    record_id: &str,
    manager: Option<ManagerDecision>,
) -> (Decisions, BTreeMap<String, DecisionTrace>) {
    let mut traces = BTreeMap::new();
    let trace = |rule: String, fields: &[(&str, String)]| DecisionTrace {
        policy_version: policy.version.clone(),
        policy_file: policy.file.clone(),
        policy_sha256: policy.sha256.clone(),
        rule,
        inputs: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    };
    let show = |v: Option<String>| v.unwrap_or_else(|| "(not known)".into());
    let figures = [
        ("project.building_use", show(inputs.building_use.clone())),
        ("project.nature", show(inputs.nature.clone())),
        (
            "building.floor_area_m2",
            show(inputs.floor_area_m2.map(|d| d.to_string())),
        ),
        ("building.height_m", show(inputs.height_m.map(|d| d.to_string()))),
        (
            "building.hazardous_goods",
            show(inputs.hazardous_goods.map(|b| b.to_string())),
        ),
        (
            "water.diameter_dn",
            show(inputs.diameter_dn.map(|d| d.to_string())),
        ),
        (
            "water.external_pipe_m",
            show(inputs.external_pipe_m.map(|d| d.to_string())),
        ),
    ];

    let (category, rule) = categorise(policy, inputs);
    traces.insert("decisions.category".to_string(), trace(rule, &figures));

    let works = inputs.external_pipe_m.map(|m| m > Decimal::ZERO);
    let works_text = (
        "water.external_pipe_m",
        show(inputs.external_pipe_m.map(|d| d.to_string())),
    );
    traces.insert(
        "decisions.external_works".to_string(),
        trace(
            "external works: pipe length above 0; 0 none; empty unknown".into(),
            std::slice::from_ref(&works_text),
        ),
    );

    // A row for either case of external works (a household's) needs no pipe length.
    let either = |table: Table, id: &str| {
        let (yes, no) = (policy.limit(table, id, true), policy.limit(table, id, false));
        match (yes, no) {
            (Some(a), Some(b)) if std::ptr::eq(a, b) => Some(true),
            _ => None,
        }
    };
    let works_for_table = match (category.decided(), inputs.table) {
        (Some(id), Some(table)) => works.or_else(|| either(table, id)),
        _ => works,
    };
    let stages = match (category.decided(), inputs.table, works_for_table) {
        (Some(id), Some(table), Some(works)) => match policy.limit(table, id, works) {
            Some(l) if l.standard_terms => StagesDecision::StandardTerms,
            Some(l) => {
                let mut stages = Vec::new();
                if let Some(s) = l.survey {
                    stages.push(StageLimit {
                        stage: "site_survey".into(),
                        working_days: s,
                    });
                }
                let connection = l.connection.unwrap_or(0);
                stages.push(StageLimit {
                    stage: "connection".into(),
                    working_days: connection,
                });
                StagesDecision::Limits {
                    total_working_days: l.survey.unwrap_or(0) + connection,
                    stages,
                    untimed_survey: l.survey.is_none(),
                }
            }
            None => StagesDecision::Provisional {
                reason: format!("no table {table:?} row for {id}"),
            },
        },
        (None, _, _) => StagesDecision::Provisional {
            reason: "the category is not decided yet".into(),
        },
        (_, None, _) => StagesDecision::Provisional {
            reason: "no table applies without platform data".into(),
        },
        (_, _, None) => StagesDecision::Provisional {
            reason: "external works are not known until the pipe length is".into(),
        },
    };
    let works_label = match works {
        Some(true) => "yes",
        Some(false) => "none",
        None => "unknown",
    };
    traces.insert(
        "decisions.stages".to_string(),
        trace(
            format!(
                "table {:?}, category {}, external works {works_label}",
                inputs.table.unwrap_or(Table::A),
                category.label()
            ),
            std::slice::from_ref(&works_text),
        ),
    );

    let (mode_cat, mode_table, mode_works) = &policy.mode_11000;
    let (mut waits_for, categories) = category_outcomes(&category);
    // External works unknown: both possibilities, named by the figure they wait for.
    let works_outcomes: Vec<(Option<bool>, Vec<String>)> = match works {
        Some(w) => vec![(Some(w), Vec::new())],
        None => {
            waits_for.push("water.external_pipe_m".into());
            vec![
                (Some(false), vec!["water.external_pipe_m = 0".into()]),
                (Some(true), vec!["water.external_pipe_m > 0".into()]),
            ]
        }
    };
    let mut mode_outcomes = Vec::new();
    for (cat, cat_when) in &categories {
        for (w, works_when) in &works_outcomes {
            let value = cat.as_deref() == Some(mode_cat.as_str())
                && inputs.table == Some(*mode_table)
                && w.is_some_and(|w| if *mode_works == Works::Yes { w } else { !w });
            mode_outcomes.push(AnswerOutcome {
                when: cat_when.iter().chain(works_when).cloned().collect(),
                value,
            });
        }
    }
    let mode_11000 = Answer::from_outcomes(waits_for, mode_outcomes);
    traces.insert(
        "decisions.mode_11000".to_string(),
        trace(
            format!(
                "11000 mode: category {mode_cat}, table {mode_table:?}, external works {}",
                if *mode_works == Works::Yes { "yes" } else { "none" }
            ),
            &[("category", category.label()), works_text.clone()],
        ),
    );

    let fee = fee(policy, inputs);
    traces.insert(
        "decisions.fee".to_string(),
        trace(
            format!(
                "free when ≤ DN{} and external pipe ≤ {} m",
                policy.fee_max_diameter_dn, policy.fee_max_external_pipe_m
            ),
            &[
                (
                    "water.diameter_dn",
                    show(inputs.diameter_dn.map(|d| d.to_string())),
                ),
                works_text,
            ],
        ),
    );

    let customer_manager = manager.or_else(|| {
        let company = policy.companies.get(policy.districts.get(&inputs.district)?)?;
        let h = Sha256::digest(record_id.as_bytes());
        let n = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let manager = company
            .managers
            .get((n % company.managers.len() as u64) as usize)?;
        Some(ManagerDecision {
            company: company.id.clone(),
            company_name: company.name.clone(),
            manager: manager.clone(),
        })
    });
    traces.insert(
        "decisions.customer_manager".to_string(),
        trace(
            "district → company (policy districts); one manager per record from the company's roster, kept for life".into(),
            &[("site.region_code", inputs.district.clone())],
        ),
    );

    let materials_required = category
        .decided()
        .and_then(|c| policy.materials.get(c))
        .cloned()
        .unwrap_or_default();
    let (waits_for, categories) = category_outcomes(&category);
    let zero_materials_promised = Answer::from_outcomes(
        waits_for,
        categories
            .into_iter()
            .map(|(cat, when)| AnswerOutcome {
                when,
                value: cat.is_some_and(|c| policy.zero_materials_promised.contains(&c)),
            })
            .collect(),
    );

    (
        Decisions {
            policy_version: policy.version.clone(),
            category,
            table: inputs.table,
            external_works: works,
            stages,
            mode_11000,
            fee,
            customer_manager,
            materials_required,
            zero_materials_promised,
        },
        traces,
    )
}

fn fee(policy: &Policy, i: &Inputs) -> FeeDecision {
    let (max_dn, max_pipe) = (policy.fee_max_diameter_dn, policy.fee_max_external_pipe_m);
    match (i.diameter_dn, i.external_pipe_m) {
        (Some(d), _) if d > max_dn => FeeDecision {
            free: Some(false),
            reason: format!("DN{d} is above DN{max_dn}: standard terms"),
        },
        (_, Some(p)) if p > max_pipe => FeeDecision {
            free: Some(false),
            reason: format!("external pipe {p} m is over {max_pipe} m: standard terms"),
        },
        (Some(d), Some(p)) => FeeDecision {
            free: Some(true),
            reason: format!("DN{d} ≤ DN{max_dn} and external pipe {p} m ≤ {max_pipe} m"),
        },
        (None, _) => FeeDecision {
            free: None,
            reason: "connection diameter not known yet".into(),
        },
        (_, None) => FeeDecision {
            free: None,
            reason: "external pipe length not known until the survey".into(),
        },
    }
}
